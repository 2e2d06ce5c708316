//! The front door: OpenAI- and Azure-shaped inference routes, models, and health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use time::OffsetDateTime;
use tollgate_store::{AccountState, KeyRole};
use tollgate_wire::usage::{response_text, usage_of_response};
use tollgate_wire::{ApiRequest, Endpoint};

use crate::app::App;
use crate::enforce::{self, Verdict};
use crate::error::ApiError;
use crate::limits::Snapshot;
use crate::meter::{Counts, Meter, new_request_id};
use crate::sim::{self, SimRequest};
use crate::tenancy::KeyEntry;
use crate::upstream::{Failure, Target, UpstreamResponse, send_http};

type AppState = State<Arc<App>>;

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

/// Authenticates an inference key and checks its organization may make requests.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ApiError> {
    let secret = presented_key(headers).ok_or_else(ApiError::missing_api_key)?;
    let key = app
        .tenancy
        .key(secret)
        .ok_or_else(ApiError::invalid_api_key)?;
    if key.expired(OffsetDateTime::now_utc()) {
        return Err(ApiError::invalid_api_key());
    }
    if key.role != KeyRole::Inference {
        return Err(ApiError::forbidden(
            "permission_denied",
            "This key may only read usage and invoices; it cannot call models.",
        ));
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

/// Every inference route, OpenAI's (`/v1/…`) and Azure's (`/openai/deployments/{deployment}/…`):
/// the endpoint is the path's last segment(s), the model the deployment or the body's `model`.
pub async fn inference(
    State(app): AppState,
    deployment: Option<Path<String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    let endpoint = if path.ends_with("/chat/completions") {
        Endpoint::ChatCompletions
    } else if path.ends_with("/completions") {
        Endpoint::Completions
    } else {
        Endpoint::Embeddings
    };
    let deployment = deployment.map(|Path(d)| d);
    handle(app, endpoint, deployment, peer, headers, body).await
}

async fn handle(
    app: Arc<App>,
    endpoint: Endpoint,
    deployment: Option<String>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match pipeline(app, endpoint, deployment, peer, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn pipeline(
    app: Arc<App>,
    endpoint: Endpoint,
    deployment: Option<String>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let key = authenticate(&app, &headers)?;
    if !app.ledger.accepting() {
        // The local spool is full while the store is down: serving would go unbilled.
        return Err(ApiError::unavailable(
            "Usage cannot be recorded right now, so new requests are refused. Retry later.",
        ));
    }
    let original = read_body(&app, &headers, body).await?;
    let head = ApiRequest::parse(&original, endpoint, deployment.is_some())
        .map_err(|e| ApiError::bad_request(e.message, e.param))?;
    let name: &str = match (&deployment, &head.model) {
        (Some(d), _) => d,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(ApiError::bad_request(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
    };
    let model = app
        .models
        .get(name)
        .filter(|_| key.may_use(name))
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(name))?;
    enforce::check_access(&app, &key, &model)?;
    let rewritten = match enforce::observe(&app, &key, &model, endpoint, &original, peer, &headers)?
    {
        Verdict::Rewrite(b) => Some(b),
        Verdict::Pass => None,
    };
    let (bytes, req) = match &rewritten {
        Some(b) => (
            b.clone(),
            ApiRequest::parse(b, endpoint, deployment.is_some())
                .map_err(|e| ApiError::bad_request(e.message, e.param))?,
        ),
        None => (original.clone(), head),
    };
    let n = req.n.unwrap_or(1);
    let estimate =
        (req.prompt_bytes as u64 / 4).saturating_add(req.max_tokens.unwrap_or(0).saturating_mul(n));
    let (reservation, snapshot) = app.limits.reserve(&key, estimate).await?;
    let budget = match app.budgets.reserve(
        &app,
        &key,
        &model.name,
        req.prompt_bytes as u64 / 4,
        req.max_tokens.unwrap_or(0).saturating_mul(n),
    ) {
        Ok(hold) => hold,
        Err(e) => {
            app.limits.release(&reservation).await;
            return Err(e);
        }
    };
    // With Redis, the budget is also reserved on the counters every instance shares.
    let mut budget = match app
        .limits
        .reserve_budget(&app, Some(budget).flatten())
        .await
    {
        Ok(b) => b,
        Err(e) => {
            app.limits.release(&reservation).await;
            return Err(e);
        }
    };

    let now = OffsetDateTime::now_utc();
    let id = new_request_id(now);
    let routes = &model.routes;
    let attempts = (app.config.server.max_attempts as usize).max(routes.len());
    let timeout = Duration::from_millis(app.config.server.upstream_timeout_ms);
    let mut rewritten: Option<(Arc<str>, Bytes)> = None;
    let mut last_failure = None;
    let mut last_route = &routes[0];
    // Providers whose breaker is open are skipped while another is healthy.
    let now_ms = crate::upstream::now_ms();
    let healthy = routes.iter().filter(|r| r.health.available(now_ms)).count();
    for attempt in 0..attempts {
        let route = if healthy == 0 || healthy == routes.len() {
            &routes[attempt % routes.len()]
        } else {
            routes
                .iter()
                .filter(|r| r.health.available(now_ms))
                .nth(attempt % healthy)
                .unwrap_or(&routes[0])
        };
        last_route = route;
        let result = match &route.target {
            Target::Http { pool, paths, auth } => {
                let upstream_body = if req.needs_rewrite(&route.upstream_model) {
                    match &rewritten {
                        Some((m, b)) if *m == route.upstream_model => b.clone(),
                        _ => {
                            let b = Bytes::from(req.rewrite(&route.upstream_model));
                            rewritten = Some((route.upstream_model.clone(), b.clone()));
                            b
                        }
                    }
                } else {
                    bytes.clone()
                };
                send_http(pool, paths, auth.as_ref(), endpoint, upstream_body, timeout).await
            }
            Target::Simulated(cfg) => {
                let (texts, messages) = req.prompt_texts(endpoint);
                let prompt_tokens = model.encoding.count_prompt(&texts, messages);
                Ok(sim::respond(
                    cfg,
                    &SimRequest {
                        endpoint,
                        model: &model.name,
                        stream: req.stream,
                        include_usage: true,
                        max_tokens: req.max_tokens,
                        n,
                        prompt_tokens,
                        inputs: texts.len(),
                        seed_text: &bytes,
                    },
                ))
            }
        };
        match &result {
            Err(f) if f.retryable() => route.health.failure(crate::upstream::now_ms()),
            _ => route.health.success(),
        }
        match result {
            Ok(resp) => {
                let meter = Meter {
                    app: app.clone(),
                    id,
                    time: now,
                    started,
                    key: key.clone(),
                    model: model.clone(),
                    endpoint,
                    provider: route.provider.clone(),
                    upstream_model: route.upstream_model.clone(),
                    reserved_tokens: reservation.tokens,
                    body: bytes.clone(),
                    budget: budget.take(),
                };
                return respond(
                    meter,
                    resp,
                    req.stream,
                    req.include_usage,
                    snapshot,
                    timeout,
                )
                .await;
            }
            Err(f) => {
                let retry = f.retryable() && attempt + 1 < attempts;
                tracing::warn!(
                    request = %id,
                    provider = %route.provider,
                    attempt,
                    retry,
                    failure = ?failure_label(&f),
                    "Upstream attempt failed."
                );
                last_failure = Some(f);
                if !retry {
                    break;
                }
            }
        }
    }
    // Every attempt failed: bill nothing, record the failure once, answer an error.
    let failure = last_failure.unwrap_or(Failure::Connect("no route".into()));
    let (status, response) = failure_response(failure);
    app.limits.release(&reservation).await;
    let mut meter = Meter {
        app: app.clone(),
        id,
        time: now,
        started,
        key: key.clone(),
        model: model.clone(),
        endpoint,
        provider: last_route.provider.clone(),
        upstream_model: last_route.upstream_model.clone(),
        reserved_tokens: 0,
        body: Bytes::new(),
        budget,
    };
    meter
        .commit(status.as_u16(), Counts::default(), req.stream)
        .await?;
    Ok(response)
}

fn failure_label(f: &Failure) -> String {
    match f {
        Failure::Connect(e) => format!("connect: {e}"),
        Failure::Timeout => "timeout".into(),
        Failure::Status { status, .. } => format!("status {status}"),
    }
}

fn failure_response(f: Failure) -> (StatusCode, Response) {
    match f {
        Failure::Connect(_) => {
            let e = ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream provider could not be reached.",
            );
            (e.status, e.into_response())
        }
        Failure::Timeout => {
            let e = ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream provider did not answer in time.",
            );
            (e.status, e.into_response())
        }
        Failure::Status {
            status,
            body,
            retry_after,
            content_type,
        } => {
            if status.is_server_error() {
                let e = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "The upstream provider failed with status {}.",
                        status.as_u16()
                    ),
                );
                return (e.status, e.into_response());
            }
            // Client errors (and an upstream's 429) pass through as the upstream shaped them.
            let mut res = (status, body).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            if let Some(r) = retry_after {
                h.insert(header::RETRY_AFTER, r);
            }
            (status, res)
        }
    }
}

async fn respond(
    mut meter: Meter,
    resp: UpstreamResponse,
    stream: bool,
    client_wants_usage: bool,
    snapshot: Snapshot,
    timeout: Duration,
) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&meter.id) {
        headers.insert("x-request-id", v);
    }
    for (name, value) in snapshot.headers() {
        headers.insert(name, value);
    }
    if stream {
        headers.insert(
            header::CONTENT_TYPE,
            resp.content_type
                .unwrap_or(HeaderValue::from_static("text/event-stream")),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let body = crate::relay::start(meter, resp.body, client_wants_usage);
        let mut res = Response::new(Body::new(body));
        *res.status_mut() = resp.status;
        *res.headers_mut() = headers;
        return Ok(res);
    }
    let collected = tokio::time::timeout(timeout, resp.body.collect(64 << 20)).await;
    let bytes = match collected {
        Ok(Ok(b)) => b,
        Ok(Err(error)) => {
            tracing::warn!(%error, request = %meter.id, "Upstream body failed.");
            meter.commit(502, Counts::default(), false).await?;
            return Err(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream response broke off.",
            ));
        }
        Err(_) => {
            meter.commit(504, Counts::default(), false).await?;
            return Err(ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream provider did not finish in time.",
            ));
        }
    };
    let counts = match usage_of_response(&bytes) {
        Some(u) => Counts::from_usage(&u),
        None => {
            let text = if meter.endpoint == Endpoint::Embeddings {
                String::new()
            } else {
                response_text(&bytes)
            };
            meter.estimate(&text)
        }
    };
    meter.commit(resp.status.as_u16(), counts, false).await?;
    headers.insert(
        header::CONTENT_TYPE,
        resp.content_type
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = resp.status;
    *res.headers_mut() = headers;
    Ok(res)
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
