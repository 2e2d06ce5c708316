//! The front door: OpenAI- and Azure-shaped inference routes, models, and health.
//!
//! An inference request runs these phases, in this order (each may answer early with an OpenAI
//! error, and each hands the next a narrower value):
//!
//! ```text
//! authenticate → read and parse → route → enforce → admit → dispatch → respond (→ meter)
//!   KeyEntry       ApiRequest       Model   Restrict   Admission  UpstreamResponse  Response
//! ```
//!
//! Whatever admission takes (rate-limit reservation, budget hold) and the usage record owed once
//! dispatched live in one [`admit::Admission`], finished exactly once on every path: by its
//! commit, or by its `Drop` when the client leaves at any `.await` (see `admit`). Under
//! `[metering] on_client_disconnect = "drain"` the whole request is [`detach::Detach`]ed: a client
//! that leaves does not cancel it, and the upstream's own usage is billed; under `"cancel"` the
//! request is dropped with the client and its admission bills the tokenizer's estimate.

pub mod admit;
pub mod detach;
mod dispatch;
pub mod relay;
mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use time::OffsetDateTime;
use tollgate_config::DisconnectPolicy;
use tollgate_store::{AccountState, KeyRole};
use tollgate_wire::{ApiRequest, Endpoint, Restrict};

use crate::app::App;
use crate::enforce;
use crate::error::ApiError;
use crate::telemetry::{Phase, RequestTrace, mark};
use crate::tenancy::KeyEntry;
use crate::upstream::ModelEntry;
use admit::CLIENT_LEFT;
use detach::{Client, Detach};

type AppState = State<Arc<App>>;

/// A request as the phases after parsing see it: the body, its one parsed view, the endpoint,
/// when it arrived, and (after enforcement) the restrictions the usage policy put on it.
pub struct Parsed<'a> {
    pub body: &'a Bytes,
    pub view: ApiRequest<'a>,
    pub endpoint: Endpoint,
    pub started: Instant,
    pub restrict: Restrict,
    /// The route template (the `route` label of metrics and the trace's `http.route`).
    pub route: &'static str,
}

impl Parsed<'_> {
    /// The field that carries the prompt (`messages`, `prompt` or `input`).
    pub fn endpoint_prompt_field(&self) -> &'static str {
        match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        }
    }
}

/// Which front door a request came through: the endpoint, and Azure's deployment (the model named
/// in the path).
#[derive(Debug, Clone)]
pub struct Front {
    pub endpoint: Endpoint,
    pub deployment: Option<String>,
}

/// Every inference route, OpenAI's (`/v1/…`) and Azure's (`/openai/deployments/{deployment}/…`):
/// the endpoint is the path's last segment(s), the model the deployment or the body's `model`.
pub async fn inference(
    State(app): AppState,
    deployment: Option<Path<String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    // The request is taken whole: its headers move into the request path instead of being
    // copied out of it, as a `HeaderMap` extractor would.
    let (parts, body) = request.into_parts();
    let deployment = deployment.map(|Path(d)| d);
    serve(app, deployment, peer, parts.uri.path(), parts.headers, body).await
}

/// The request path for a request to `path` (its endpoint), with `deployment` from an Azure URL.
pub async fn serve(
    app: Arc<App>,
    deployment: Option<String>,
    peer: SocketAddr,
    path: &str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let endpoint = if path.ends_with("/chat/completions") {
        Endpoint::ChatCompletions
    } else if path.ends_with("/responses") {
        // The Responses and Messages front doors (`apis`) send natively served requests here.
        Endpoint::Responses
    } else if path.ends_with("/messages") {
        Endpoint::Messages
    } else if path.ends_with("/completions") {
        Endpoint::Completions
    } else {
        Endpoint::Embeddings
    };
    let front = Front {
        endpoint,
        deployment,
    };
    let client = Client::default();
    // The request's future is large (every phase's state): it goes into its box once, and the
    // futures around it (this one, the router's, hyper's) stay small when they are moved.
    let request = Box::pin(handle(
        app.clone(),
        front,
        peer,
        headers,
        body,
        client.clone(),
    ));
    // Past the shutdown grace period the serving thread drops its connections, and with them
    // this future, as if every client had left: what a request owes is finished by tasks that
    // shutdown waits for (see `server`).
    let answer = match app.config.metering.on_client_disconnect {
        // The client may leave at any await: the request goes on without it.
        DisconnectPolicy::Drain => Detach::boxed(app.background.clone(), client, request)
            .await
            .unwrap_or_else(|| Err(ApiError::client_left())),
        DisconnectPolicy::Cancel => request.await,
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// What the phases learnt about a request that ended before dispatch, for its metrics (a
/// dispatched request is counted with its usage record, see `admit`).
#[derive(Default)]
struct Seen {
    model: Option<Arc<ModelEntry>>,
    dispatched: bool,
}

/// The request path; a refusal before dispatch is counted here.
async fn handle(
    app: Arc<App>,
    front: Front,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
    client: Client,
) -> Result<Response, ApiError> {
    let route = crate::meters::route_template(front.endpoint, front.deployment.is_some());
    let mut seen = Seen::default();
    // Traces (off: `None`, and a branch per phase). Once admitted, the admission carries it.
    let mut trace = app
        .telemetry
        .as_ref()
        .map(|t| t.begin(&headers, route, front.endpoint));
    let result = phases(
        &app, front, peer, headers, body, client, &mut seen, &mut trace,
    )
    .await;
    if let Err(e) = &result
        && !seen.dispatched
    {
        let model = seen.model.as_ref().map(|m| &m.metrics);
        app.metrics.count(route, model, e.status.as_u16());
    }
    if let Some(t) = &mut trace {
        t.status(match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status.as_u16(),
        });
    }
    result
}

/// The request path, phase by phase.
#[allow(clippy::too_many_arguments)]
async fn phases(
    app: &Arc<App>,
    front: Front,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
    client: Client,
    seen: &mut Seen,
    trace: &mut Option<Box<RequestTrace>>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let key = authenticate(app, &headers)?;
    mark(trace, Phase::Authenticate);
    if !app.ledger.accepting() {
        // The local spool is full while the store is down: serving would go unbilled.
        return Err(ApiError::unavailable(
            "Usage cannot be recorded right now, so new requests are refused. Retry later.",
        ));
    }
    let body = read_body(app, &headers, body).await?;
    mark(trace, Phase::Read);
    let mut request = parse(&body, &front, started)?;
    mark(trace, Phase::Parse);
    let model = route(app, &key, &request, &front)?;
    if let Some(t) = trace {
        t.mark(Phase::Route);
        t.model(&model.name, request.view.stream);
    }
    seen.model = Some(model.clone());
    request.restrict = enforce(app, &key, &model, &request, peer, &headers)?;
    mark(trace, Phase::Enforce);
    let mut admission = admit::admit(app, key, model, &request).await?;
    mark(trace, Phase::Admit);
    admission.traced(trace.take());
    if client.gone() {
        // Nothing was sent: the admission gives everything back.
        return Err(ApiError::client_left());
    }
    let timeout = Duration::from_millis(app.config.server.upstream_timeout_ms);
    seen.dispatched = true;
    let dispatched = dispatch::dispatch(app, &mut admission, &request).await;
    admission.mark(Phase::Dispatch);
    match dispatched {
        Ok(upstream) => respond::respond(admission, upstream, &request, timeout, &client).await,
        Err(failure) => {
            // Every attempt failed: bill nothing, record the failure once, answer an error.
            let (status, response) = dispatch::failure_response(failure);
            let status = if client.gone() {
                CLIENT_LEFT
            } else {
                status.as_u16()
            };
            admission.fail(status).await?;
            Ok(response)
        }
    }
}

/// The presented key: `Authorization: Bearer …` or Azure's `api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION)
        && let Ok(s) = v.to_str()
    {
        let s = s.trim();
        if let Some(k) = s
            .strip_prefix("Bearer ")
            .or_else(|| s.strip_prefix("bearer "))
        {
            return Some(k.trim());
        }
    }
    headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Phase 1, authenticate: an inference key, and its organization may make requests (403 when it
/// or an ancestor is under review or terminated).
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ApiError> {
    let secret = presented_key(headers).ok_or_else(ApiError::missing_api_key)?;
    let key = app
        .tenancy
        .key(secret)
        .ok_or_else(ApiError::invalid_api_key)?;
    if key.expired(OffsetDateTime::now_utc()) {
        return Err(ApiError::invalid_api_key());
    }
    match key.role {
        KeyRole::Inference => {}
        KeyRole::Reader => {
            return Err(ApiError::forbidden(
                "permission_denied",
                "This key may only read usage and invoices; it cannot call models.",
            ));
        }
        KeyRole::Disabled => {
            return Err(ApiError::forbidden(
                "permission_denied",
                "This key is disabled.",
            ));
        }
    }
    match app.tenancy.effective_state(&key.organization) {
        AccountState::Active => Ok(key),
        AccountState::UnderReview => Err(ApiError::forbidden(
            "account_under_review",
            "This account is under review for a possible violation of the usage policies and is suspended pending investigation.",
        )),
        AccountState::Terminated => Err(ApiError::forbidden(
            "account_terminated",
            "This account has been terminated for violating the usage policies.",
        )),
    }
}

/// Phase 2a, read: the body under the size limit (413).
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.config.server.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        discard(body).await;
        return Err(ApiError::payload_too_large(limit));
    }
    // One frame (the usual case) is kept as it is; more are joined.
    let mut body = body;
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::bad_request(
                "The request body could not be read.",
                None,
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            discard(body).await;
            return Err(ApiError::payload_too_large(limit));
        }
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut all = BytesMut::with_capacity(total.max(first.len() * 2));
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// Most of an over-long body that is read and dropped before the 413 goes out.
const DISCARD_MAX_BYTES: usize = 64 << 20;

/// Reads and drops the rest of a body that will not be used (up to [`DISCARD_MAX_BYTES`] and
/// 10 s), so a client still writing it gets to read the error: a server that answers and closes
/// while the client writes makes the client see a broken pipe instead of the answer.
async fn discard(mut body: Body) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DISCARD_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
}

/// Phase 2b, parse: the one parse of the body (400). Every later phase reads this view.
fn parse<'a>(body: &'a Bytes, front: &Front, started: Instant) -> Result<Parsed<'a>, ApiError> {
    let view = ApiRequest::parse(body, front.endpoint, front.deployment.is_some())
        .map_err(|e| ApiError::bad_request(e.message, e.param))?;
    Ok(Parsed {
        body,
        view,
        endpoint: front.endpoint,
        started,
        restrict: Restrict::NONE,
        route: crate::meters::route_template(front.endpoint, front.deployment.is_some()),
    })
}

/// Phase 3, route: the public model (Azure deployment, else the body's `model`) and the key's
/// allowlist (404 `model_not_found`).
fn route(
    app: &App,
    key: &KeyEntry,
    request: &Parsed<'_>,
    front: &Front,
) -> Result<Arc<ModelEntry>, ApiError> {
    let name: &str = match (&front.deployment, &request.view.model) {
        (Some(d), _) => d,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(ApiError::bad_request(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
    };
    app.models
        .get(name)
        .filter(|_| key.may_use(name))
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(name))
}

/// Phase 4, enforce: owner-scoped reviews (403), then the detector observes the request and the
/// policy in force may refuse it (403, 429) or restrict it (no logprobs, fewer choices).
#[allow(clippy::too_many_arguments)]
fn enforce(
    app: &App,
    key: &KeyEntry,
    model: &ModelEntry,
    request: &Parsed<'_>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Restrict, ApiError> {
    enforce::check_access(&app.guard, &app.tenancy, key, model)?;
    enforce::observe(
        &app.guard,
        &app.tenancy,
        key,
        model,
        &request.view,
        peer,
        headers,
    )
}

/// `GET /v1/models`: the models this key may use.
pub async fn list_models(State(app): AppState, headers: HeaderMap) -> Response {
    let key = match authenticate(&app, &headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let data: Vec<_> = app
        .model_order
        .iter()
        .filter(|m| key.may_use(m))
        .filter_map(|m| app.models.get(m))
        .map(|m| model_json(&m.name, m.created, m.owner.as_deref()))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(app): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = match authenticate(&app, &headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match app.models.get(&id).filter(|_| key.may_use(&id)) {
        Some(m) => axum::Json(model_json(&m.name, m.created, m.owner.as_deref())).into_response(),
        None => ApiError::model_not_found(&id).into_response(),
    }
}

fn model_json(name: &str, created: i64, owner: Option<&str>) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": owner.unwrap_or("tollgate")})
}

/// `GET /readyz`: 200 when the ledger accepts writes (into the store, or into the local spool
/// while PostgreSQL is away); 503 while the spool is full.
pub async fn ready(State(app): AppState) -> Response {
    if !app.ledger.accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, "usage spool full").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), app.ledger.flush()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "ledger not ready").into_response(),
    }
}

/// Any other path.
pub async fn not_found(uri: http::Uri) -> Response {
    ApiError::not_found(format!("Invalid URL ({})", uri.path())).into_response()
}
