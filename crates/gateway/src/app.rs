//! The application state shared by every handler, and the router.
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
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{delete, get, post, put};
use time::OffsetDateTime;
use tollgate_billing::Catalogue;
use tollgate_config::Config;
use tollgate_store::{Ledger, PriceRow, Store, UsageRecord};

use crate::budget::Budgets;
use crate::front::detach::Background;
use crate::upstream::{ModelEntry, build_models};
use crate::{admin, billing_admin, front, tenancy::Tenancy};

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
    pub sync: crate::sync::SyncState,
    /// Signed-in sessions of the web console.
    pub console: crate::console::Sessions,
    /// Tasks finishing requests whose clients left (shutdown waits for them).
    pub background: Arc<Background>,
    /// Responses API: which provider and organization created each stored response.
    pub stored_responses: crate::dialect::StoredResponses,
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
    /// Opens storage, loads tenancy into memory, seeds config prices, and builds the routes.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let admin_token = config
            .server
            .admin_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                StartError::Setup(
                    "no admin token: set server.admin_token or TOLLGATE_ADMIN_TOKEN".into(),
                )
            })?;
        let (store, ledger) = crate::sync::open_storage(&config).await?;
        let limits = crate::ratelimit::Limits::new(&config).map_err(StartError::Setup)?;
        // The change-feed position before loading: changes made meanwhile are applied by sync.
        let change_seq = store.last_change().await?;
        let tenancy = Tenancy::default();
        tenancy.load(
            store.organizations().await?,
            store.projects(None).await?,
            store.active_keys().await?,
        );
        // Config prices are each model's first catalogue entry.
        for m in &config.models {
            if let (Some(input), Some(output)) = (m.input_price, m.output_price) {
                store
                    .put_price(PriceRow {
                        model: m.name.clone(),
                        input_price: input.to_string(),
                        cached_input_price: m.cached_input_price.map(|p| p.to_string()),
                        output_price: output.to_string(),
                        cache_write_price: m.cache_write_price.map(|p| p.to_string()),
                        effective_from: OffsetDateTime::UNIX_EPOCH,
                    })
                    .await?;
            }
        }
        let entries = build_models(&config).map_err(StartError::Setup)?;
        let model_order = entries.iter().map(|m| m.name.clone()).collect();
        let models = entries
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        let guard = crate::enforce::Guard::load(&config, &store)
            .await
            .map_err(StartError::Setup)?;
        guard.spawn_snapshots(store.clone());
        let app = Arc::new(App {
            config,
            models,
            model_order,
            tenancy,
            store,
            ledger,
            admin_token,
            started_at: OffsetDateTime::now_utc(),
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
            budgets: Budgets::default(),
            guard,
            limits,
            sync: crate::sync::SyncState::default(),
            console: crate::console::Sessions::default(),
            background: Arc::new(Background::default()),
            stored_responses: crate::dialect::StoredResponses::new(100_000),
        });
        app.reload_prices()
            .await
            .map_err(|e| StartError::Setup(e.message.clone()))?;
        app.budgets
            .load(&app)
            .await
            .map_err(|e| StartError::Setup(e.message.clone()))?;
        crate::sync::spawn(app.clone(), change_seq);
        Ok(app)
    }

    /// The current price catalogue.
    pub fn prices(&self) -> Arc<Catalogue> {
        self.catalogue.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Reloads the price catalogue from the store.
    pub async fn reload_prices(&self) -> Result<(), crate::error::ApiError> {
        let c = crate::pricing::load_catalogue(&self.store).await?;
        if let Ok(mut slot) = self.catalogue.write() {
            *slot = Arc::new(c);
        }
        Ok(())
    }

    /// Hook called with every usage record before it is written (budgets, detectors).
    pub fn after_usage(&self, record: &UsageRecord) {
        crate::enforce::completed(self, record);
    }
}

/// The full router: front door, Azure shape, admin API, health.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(front::ready))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/chat/completions", post(front::inference))
        .route("/v1/completions", post(front::inference))
        .route("/v1/embeddings", post(front::inference))
        .route("/v1/models", get(front::list_models))
        .route("/v1/models/{id}", get(front::get_model))
        .route("/v1/responses", post(crate::apis::create_response))
        .route("/openai/responses", post(crate::apis::create_response))
        .route("/openai/v1/responses", post(crate::apis::create_response))
        .route(
            "/v1/responses/{id}",
            get(crate::apis::get_response).delete(crate::apis::delete_response),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(crate::apis::response_input_items),
        )
        .route("/v1/messages", post(crate::apis::create_message))
        .route("/v1/messages/count_tokens", post(crate::apis::count_tokens))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(front::inference),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(front::inference),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(front::inference),
        )
        .route(
            "/admin/v1/organizations",
            post(admin::create_organization).get(admin::list_organizations),
        )
        .route(
            "/admin/v1/organizations/{org}",
            get(admin::get_organization),
        )
        .route(
            "/admin/v1/organizations/{org}/projects",
            post(admin::create_project).get(admin::list_projects),
        )
        .route(
            "/admin/v1/projects/{project}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/admin/v1/keys/{key}", delete(admin::revoke_key))
        .route("/admin/v1/usage", get(admin::usage))
        .route(
            "/admin/v1/prices",
            post(billing_admin::create_price).get(billing_admin::list_prices),
        )
        .route(
            "/admin/v1/organizations/{org}/contract",
            put(billing_admin::put_contract),
        )
        .route(
            "/admin/v1/organizations/{org}/budget",
            put(billing_admin::put_budget).get(billing_admin::get_budget),
        )
        .route("/admin/v1/budget-events", get(billing_admin::budget_events))
        // Reads its own body up to `billing_admin::MAX_IMPORT_BODY_BYTES` (64 MiB).
        .route("/admin/v1/usage/events", post(billing_admin::import_usage))
        .route(
            "/admin/v1/invoices/{org}/{month}",
            get(billing_admin::get_invoice),
        )
        .route(
            "/admin/v1/reports/revenue",
            get(billing_admin::revenue_report),
        )
        .route(
            "/admin/v1/reports/quarterly",
            get(billing_admin::quarterly_report),
        )
        .route(
            "/admin/v1/organizations/{org}/reader-keys",
            post(billing_admin::create_reader_key),
        )
        .route(
            "/admin/v1/organizations/{org}/risk",
            get(crate::guard_admin::risk),
        )
        .route(
            "/admin/v1/organizations/{org}/review",
            post(crate::guard_admin::review),
        )
        .route(
            "/admin/v1/organizations/{org}/reinstate",
            post(crate::guard_admin::reinstate),
        )
        .route(
            "/admin/v1/organizations/{org}/terminate",
            post(crate::guard_admin::terminate),
        )
        .route(
            "/admin/v1/organizations/{org}/evidence",
            get(crate::guard_admin::evidence),
        )
        .route("/admin/v1/flags", get(crate::guard_admin::flags))
        .route("/admin/v1/policies", get(crate::guard_admin::policies))
        .route("/admin/v1/audit", get(crate::guard_admin::audit_log))
        .route(
            "/admin/v1/owners/{owner}/keys",
            post(crate::guard_admin::create_owner_key),
        )
        .route(
            "/admin/v1/owners/{owner}/keys/{id}",
            delete(crate::guard_admin::revoke_owner_key),
        )
        .route(
            "/admin/v1/owners/{owner}/reports",
            post(crate::guard_admin::create_report).get(crate::guard_admin::list_reports),
        )
        .route(
            "/admin/v1/owners/{owner}/evidence/{org}",
            get(crate::guard_admin::owner_evidence),
        )
        .merge(crate::console::routes())
        .fallback(front::not_found)
        .with_state(app)
}
