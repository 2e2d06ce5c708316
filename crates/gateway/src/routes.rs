//! Every route of the server: the front doors (OpenAI, Azure, Responses, Messages), the admin
//! API, the console, health and metrics; and the front doors' requests that are served without
//! the router ([`direct`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use http::{HeaderMap, Method};

use crate::app::App;
use crate::{admin, apis, billing_admin, front};

/// A front-door request served straight by its handler, past the router (the gateway's hot
/// path: no route match, no request extensions, no boxed handler future). The router has the
/// same routes, for the other methods' 405 and for what [`direct`] leaves to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Direct {
    /// `POST` to an inference path: OpenAI's `/v1/{chat/completions,completions,embeddings}`,
    /// or Azure's `/openai/deployments/{deployment}/` with the same endpoints. A deployment that
    /// is percent-encoded is left to the router, whose extractor decodes it.
    Inference { deployment: Option<String> },
    /// `POST /v1/responses` (and Azure's `/openai/responses`, `/openai/v1/responses`).
    Responses,
    /// `POST /v1/messages`.
    Messages,
}

/// Whether the request is served without the router (see [`Direct`]).
pub fn direct(method: &Method, path: &str) -> Option<Direct> {
    const ENDPOINTS: [&str; 3] = ["/chat/completions", "/completions", "/embeddings"];
    if method != Method::POST {
        return None;
    }
    match path {
        "/v1/responses" | "/openai/responses" | "/openai/v1/responses" => {
            return Some(Direct::Responses);
        }
        "/v1/messages" => return Some(Direct::Messages),
        _ => {}
    }
    if let Some(endpoint) = path.strip_prefix("/v1") {
        return ENDPOINTS
            .contains(&endpoint)
            .then_some(Direct::Inference { deployment: None });
    }
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (deployment, endpoint) = rest.split_at(rest.find('/')?);
    let plain = !deployment.is_empty() && !deployment.contains('%');
    (plain && ENDPOINTS.contains(&endpoint)).then(|| Direct::Inference {
        deployment: Some(deployment.to_owned()),
    })
}

/// Serves a [`Direct`] request with the handler its route has.
pub async fn serve_direct(
    app: Arc<App>,
    direct: Direct,
    peer: SocketAddr,
    path: &str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match direct {
        Direct::Inference { deployment } => {
            front::serve(app, deployment, peer, path, headers, body).await
        }
        Direct::Responses => {
            apis::create_response(State(app), ConnectInfo(peer), headers, body).await
        }
        Direct::Messages => {
            apis::create_message(State(app), ConnectInfo(peer), headers, body).await
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_posts_to_the_front_doors_skip_the_router() {
        let openai = Some(Direct::Inference { deployment: None });
        for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
            assert_eq!(direct(&Method::POST, path), openai, "{path}");
            // Other methods get the router's 405.
            assert_eq!(direct(&Method::GET, path), None, "{path}");
            assert_eq!(direct(&Method::PUT, path), None, "{path}");
        }
        for path in [
            "/openai/deployments/gpt-4o/chat/completions",
            "/openai/deployments/gpt-4o/completions",
            "/openai/deployments/gpt-4o/embeddings",
        ] {
            let azure = Some(Direct::Inference {
                deployment: Some("gpt-4o".into()),
            });
            assert_eq!(direct(&Method::POST, path), azure, "{path}");
            assert_eq!(direct(&Method::GET, path), None, "{path}");
        }
        for path in ["/v1/responses", "/openai/responses", "/openai/v1/responses"] {
            assert_eq!(
                direct(&Method::POST, path),
                Some(Direct::Responses),
                "{path}"
            );
            // Stored responses are read through the router.
            assert_eq!(direct(&Method::GET, path), None, "{path}");
        }
        assert_eq!(
            direct(&Method::POST, "/v1/messages"),
            Some(Direct::Messages)
        );
        for path in [
            "/v1/chat/completions/",
            "/v1/chat/completion",
            "/V1/chat/completions",
            "/v1",
            "/v1/responses/resp_1",
            "/v1/responses/",
            "/v1/messages/count_tokens",
            "/v1/models",
            // Percent-encoded deployments are decoded by the router's extractor.
            "/openai/deployments/gpt%2D4o/chat/completions",
            "/openai/deployments//chat/completions",
            "/openai/deployments/gpt-4o",
            "/openai/deployments/gpt-4o/",
            "/openai/deployments/gpt-4o/chat/completions/",
            "/openai/deployments/a/b/chat/completions",
            "/openai/deployments/gpt-4o/responses",
            "",
        ] {
            assert_eq!(direct(&Method::POST, path), None, "{path}");
        }
    }
}
