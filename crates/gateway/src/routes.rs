//! Every route of the server: the front doors (OpenAI, Azure, Responses, Messages), the admin
//! API, the console, health and metrics.

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::app::App;
use crate::{admin, billing_admin, front};

/// The full router: front door, Azure shape, admin API, health.
pub fn router(app: Arc<App>) -> Router {
    // Handlers that call the API in process (the console) reach it through the app.
    let _ = app.api.set(router);
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
