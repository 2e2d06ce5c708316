//! The application state shared by every handler, and the router.
//!
//! Request path (front door), in order — each step may answer early with an OpenAI error:
//! 1. `auth`: the key from `Authorization: Bearer` or `api-key`, looked up in memory;
//!    the organization's review state (403 when under review or terminated);
//! 2. `read body` under the size limit (413), `parse` the request head (400);
//! 3. `route`: the public model (body `model` or Azure deployment) and the key's allowlist (404);
//! 4. `limits`: key and project RPM/TPM reservations (429 with `Retry-After`), budgets;
//! 5. `guard`: the distillation detector observes the request and may act;
//! 6. `dispatch`: routes in fallback order while no byte has reached the client;
//! 7. `meter`: one usage record per dispatched request, durable before the last byte is sent.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use time::OffsetDateTime;
use tollgate_config::Config;
use tollgate_store::{Ledger, PriceRow, Store, UsageRecord};

use crate::upstream::{HttpClient, ModelEntry, build_client, build_models};
use crate::{admin, proxy, tenancy::Tenancy};

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    pub models: HashMap<String, Arc<ModelEntry>>,
    pub model_order: Vec<String>,
    pub tenancy: Tenancy,
    pub store: Store,
    pub ledger: Ledger,
    pub client: HttpClient,
    pub admin_token: String,
    pub started_at: OffsetDateTime,
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
        let path = tollgate_store::sqlite_path(&config.storage.url)?.to_owned();
        let store = Store::open(&path)?;
        let ledger = Ledger::open(
            &path,
            config.storage.durability == tollgate_config::Durability::Strict,
            config.storage.batch_max,
        )?;
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
        let client = build_client(&config).map_err(StartError::Setup)?;
        Ok(Arc::new(App {
            config,
            models,
            model_order,
            tenancy,
            store,
            ledger,
            client,
            admin_token,
            started_at: OffsetDateTime::now_utc(),
        }))
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
        .route("/readyz", get(proxy::ready))
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/models", get(proxy::list_models))
        .route("/v1/models/{id}", get(proxy::get_model))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(proxy::azure_chat_completions),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(proxy::azure_completions),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(proxy::azure_embeddings),
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
        .fallback(proxy::not_found)
        .with_state(app)
}
