//! The application state shared by every handler: the services, each narrow, and the config.
//! It imports no handler; the router is in `routes`, the assembly at start in `start`.
//!
//! The inference request path runs these phases, in order (see [`crate::front`]; each may answer
//! early with an OpenAI error):
//! 1. `authenticate`: the key from `Authorization: Bearer` or `api-key`, looked up in memory; the
//!    organization's review state (403 when under review or terminated);
//! 2. `read` the body under the size limit (413) and `parse` it once (400);
//! 3. `route`: the public model (body `model` or Azure deployment) and the key's allowlist (404);
//! 4. `enforce`: owner-scoped reviews; the distillation detector observes the request, the policy
//!    may refuse or restrict it;
//! 5. `admit`: the context window (400), key and project RPM/TPM reservations (429 with
//!    `Retry-After`), budget holds (429 `insufficient_quota`), all in one `Admission`;
//! 6. `dispatch`: routes in fallback order while no byte has reached the client;
//! 7. `respond`: the plain body, or the relayed stream;
//! 8. `meter`: one usage record per dispatched request, durable before the last byte is sent,
//!    reservations settled to it — or, when the client left, finished by the `Admission`'s drop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use tollgate_billing::Catalogue;
use tollgate_config::Config;
use tollgate_store::{Ledger, Store, UsageRecord};

use crate::budget::Budgets;
use crate::front::detach::Background;
use crate::tenancy::Tenancy;
use crate::upstream::ModelEntry;

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    pub models: HashMap<String, Arc<ModelEntry>>,
    pub model_order: Vec<String>,
    pub tenancy: Tenancy,
    pub store: Store,
    pub ledger: Ledger,
    pub admin_token: String,
    pub started_at: OffsetDateTime,
    /// The price catalogue (config entries first, then admin API entries).
    pub catalogue: RwLock<Arc<Catalogue>>,
    /// Monthly budgets with their running spend.
    pub budgets: Budgets,
    /// Usage-policy enforcement: the distillation detector and review state.
    pub guard: Arc<crate::enforce::Guard>,
    /// Rate limits: local buckets, or shared through Redis (`[ratelimit] redis_url`).
    pub limits: crate::ratelimit::Limits,
    /// Progress of the change feed that keeps instances in step.
    pub sync: SyncState,
    /// The router, as the assembler provides it, for handlers that call the API in process (the
    /// console); set by [`crate::routes::router`].
    pub api: std::sync::OnceLock<fn(Arc<App>) -> axum::Router>,
    /// Signed-in sessions of the web console.
    pub console: crate::console::session::Sessions,
    /// Tasks finishing requests whose clients left (shutdown waits for them).
    pub background: Arc<Background>,
    /// Responses API: which provider and organization created each stored response.
    pub stored_responses: crate::dialect::StoredResponses,
    /// The request path's metrics (`/metrics`), each model's handles resolved in its entry.
    pub metrics: crate::meters::Metrics,
    /// OpenTelemetry traces (`[telemetry]`); `None` when off.
    pub telemetry: Option<crate::telemetry::Telemetry>,
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Store(#[from] tollgate_store::StoreError),
    #[error("{0}")]
    Setup(String),
}

impl App {
    /// The current price catalogue.
    pub fn prices(&self) -> Arc<Catalogue> {
        self.catalogue.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Hook called with every usage record before it is written (budgets, detectors).
    pub fn after_usage(&self, record: &UsageRecord) {
        crate::enforce::completed(&self.guard, record);
    }
}

/// Progress of the change feed that keeps instances in step (see `sync`), for metrics.
#[derive(Debug, Default)]
pub struct SyncState {
    pub last_seq: AtomicI64,
    pub applied: AtomicU64,
    pub errors: AtomicU64,
}
