//! The Responses API and Messages API front doors.
//!
//! - `POST /v1/responses` (and Azure's `POST /openai/responses?api-version=…`,
//!   `POST /openai/v1/responses`), plain or streamed;
//! - `GET` / `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, answered by the
//!   provider that created the response, for the organization that created it;
//! - `POST /v1/messages`, plain or streamed, and `POST /v1/messages/count_tokens`, with the key as
//!   `x-api-key` or `Authorization: Bearer`, and errors in Anthropic's shape.
//!
//! A request goes through the request path (`front`) — authentication, allow-lists, guard,
//! limits and budgets, dispatch with fallback, metering of the upstream's own usage. When every
//! route of the model serves the client's API (Responses: `openai`/`azure` upstreams with
//! `/responses`; Messages: `anthropic` upstreams) the body goes to them natively, byte for byte
//! but for the model name. Otherwise it is translated to Chat Completions (see `tollgate-wire`'s
//! `responses` and `anthropic` modules) and its answer translated back (`dialect::ClientApi`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tollgate_wire::anthropic::{self, MessageContext};
use tollgate_wire::responses::{self, ResponseContext};
use tollgate_wire::{ApiRequest, Endpoint};

use crate::app::App;
use crate::dialect::{ClientApi, StoredResponse, anthropic_error, response_id};
use crate::error::ApiError;
use crate::upstream::{Dialect, Failure, Target, send_to};

type AppState = State<Arc<App>>;
type Peer = ConnectInfo<SocketAddr>;

/// A random id with the given prefix (`resp_…`, `msg_…`).
fn new_id(prefix: &str) -> String {
    let a: u64 = rand::random();
    let b: u32 = rand::random();
    format!("{prefix}{a:016x}{b:08x}")
}

/// Reads the client's body up to the configured limit.
async fn read_body(app: &App, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.config.server.max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))
}

/// Reads the client's body ([`read_body`]) and parses its head with `parse` (a body it refuses is
/// a 400): the raw bytes and what `parse` made of them.
async fn read_request<T>(
    app: &App,
    body: Body,
    parse: impl FnOnce(&[u8]) -> Result<T, tollgate_wire::RequestError>,
) -> Result<(Bytes, T), ApiError> {
    let raw = read_body(app, body).await?;
    let parsed = parse(&raw).map_err(|e| ApiError::bad_request(e.message, e.param))?;
    Ok((raw, parsed))
}

/// Sends a body through the request path as `path`'s endpoint (`/v1/chat/completions` for a
/// translated body, `/v1/responses` or `/v1/messages` for a native one).
async fn request_path(
    app: Arc<App>,
    peer: SocketAddr,
    mut headers: HeaderMap,
    path: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let body: Bytes = body.into();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::front::serve(app, None, peer, path, headers, Body::from(body)).await
}

async fn chat_path(app: Arc<App>, peer: SocketAddr, headers: HeaderMap, chat: Vec<u8>) -> Response {
    request_path(app, peer, headers, "/v1/chat/completions", chat).await
}

/// Whether every route of `model` serves `endpoint`'s API itself.
fn native(app: &App, model: &str, endpoint: Endpoint) -> bool {
    app.models.get(model).is_some_and(|m| {
        m.routes.iter().all(|r| match (&r.dialect, endpoint) {
            (Dialect::OpenAi { responses }, Endpoint::Responses) => responses.is_some(),
            (Dialect::Anthropic { .. }, Endpoint::Messages) => true,
            _ => false,
        })
    })
}

/// `POST /v1/responses`, `POST /openai/responses`, `POST /openai/v1/responses`.
pub async fn create_response(
    app: AppState,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (State(app), ConnectInfo(peer)) = (app, peer);
    let (raw, (head, request)) = match read_request(&app, body, responses::parse_head).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Some(model) = head.model.clone() else {
        return ApiError::bad_request("you must provide a model parameter", Some("model"))
            .into_response();
    };
    if native(&app, &model, Endpoint::Responses) {
        let organization = crate::front::authenticate(&app, &headers)
            .map(|k| k.organization.clone())
            .ok();
        let res = request_path(app.clone(), peer, headers, "/v1/responses", raw).await;
        return match organization {
            Some(org) if res.status().is_success() => {
                remember(app, res, org.to_string(), model).await
            }
            _ => res,
        };
    }
    let chat = match responses::to_chat_request(&request, &model) {
        Ok(c) => c,
        Err(e) => return ApiError::bad_request(e.message, e.param).into_response(),
    };
    let api = ClientApi::Responses(ResponseContext {
        id: new_id("resp_"),
        created_at: OffsetDateTime::now_utc().unix_timestamp(),
        model,
        request,
    });
    let res = chat_path(app, peer, headers, chat).await;
    api.respond(res).await
}

/// Remembers which provider (the model's route that answered) and organization created a
/// natively served response: a plain body's `id`, or a stream's `response.created`.
async fn remember(app: Arc<App>, res: Response, organization: String, model: String) -> Response {
    let provider: Option<Arc<str>> = app
        .models
        .get(&model)
        .and_then(|m| m.routes.first())
        .map(|r| r.provider.clone());
    let Some(provider) = provider else {
        return res;
    };
    let entry = StoredResponse {
        provider,
        organization,
        model,
    };
    let is_stream = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (parts, body) = res.into_parts();
    if is_stream {
        let watch = WatchCreated {
            inner: body,
            splitter: tollgate_wire::SseSplitter::new(),
            app,
            entry: Some(entry),
        };
        return Response::from_parts(parts, Body::new(watch));
    }
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if let Some(id) = response_id(&bytes) {
        app.stored_responses.remember(&id, entry);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A streamed Responses body passed on unchanged; the id in its `response.created` is remembered.
struct WatchCreated {
    inner: Body,
    splitter: tollgate_wire::SseSplitter,
    app: Arc<App>,
    entry: Option<StoredResponse>,
}

impl http_body::Body for WatchCreated {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if this.entry.is_some()
            && let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.splitter.push(data);
            while let Some(event) = this.splitter.next_event() {
                if let Some(id) = event.data.as_deref().and_then(response_id)
                    && let Some(entry) = this.entry.take()
                {
                    this.app.stored_responses.remember(&id, entry);
                    this.splitter = tollgate_wire::SseSplitter::new();
                    break;
                }
            }
        }
        polled
    }
}

/// `GET /v1/responses/{id}`: a response stored by the provider that created it.
pub async fn get_response(app: AppState, id: Path<String>, headers: HeaderMap) -> Response {
    stored(&app.0, &id.0, &headers, Method::GET, false).await
}

/// `GET /v1/responses/{id}/input_items`.
pub async fn response_input_items(app: AppState, id: Path<String>, headers: HeaderMap) -> Response {
    stored(&app.0, &id.0, &headers, Method::GET, true).await
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete_response(app: AppState, id: Path<String>, headers: HeaderMap) -> Response {
    stored(&app.0, &id.0, &headers, Method::DELETE, false).await
}

/// Stored responses: only responses the gateway saw a provider create can be reached, and only
/// by their organization (another organization's id reads as unknown); they are asked of the
/// provider that created them with its own credential. Responses answered through translation
/// are not stored anywhere. Reading is not metered.
async fn stored(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    method: Method,
    input_items: bool,
) -> Response {
    let key = match crate::front::authenticate(app, headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let not_found =
        || ApiError::not_found(format!("No response found with id '{id}'.")).into_response();
    let Some(entry) = app.stored_responses.lookup(id, &key.organization) else {
        return not_found();
    };
    let route = app
        .models
        .get(&entry.model)
        .and_then(|m| m.routes.iter().find(|r| r.provider == entry.provider));
    let Some(route) = route else {
        return not_found();
    };
    let (
        Target::Http { pool, auth, .. },
        Dialect::OpenAi {
            responses: Some(api),
        },
    ) = (&route.target, &route.dialect)
    else {
        return not_found();
    };
    let Some(uri) = api.stored(id, input_items) else {
        return not_found();
    };
    let timeout = std::time::Duration::from_millis(app.config.server.upstream_timeout_ms);
    let delete = method == Method::DELETE;
    let (status, content_type, body) =
        match send_to(pool, method, &uri, &[auth.as_ref()], None, timeout).await {
            Ok(res) => match tokio::time::timeout(timeout, res.body.collect(64 << 20)).await {
                Ok(Ok(b)) => (res.status, res.content_type, b),
                _ => {
                    return ApiError::upstream(
                        StatusCode::BAD_GATEWAY,
                        "The upstream response broke off.",
                    )
                    .into_response();
                }
            },
            Err(Failure::Status {
                status,
                body,
                content_type,
                ..
            }) if status.is_client_error() => (status, content_type, body),
            Err(_) => {
                return ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "The upstream provider could not be reached.",
                )
                .into_response();
            }
        };
    if delete && status.is_success() {
        app.stored_responses.forget(id);
    }
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    res
}

/// The Messages routes take the key as `x-api-key` too: it is presented as a Bearer token to
/// the chat path's authentication.
fn with_bearer(mut headers: HeaderMap) -> HeaderMap {
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
    {
        headers.insert(header::AUTHORIZATION, v);
    }
    headers
}

/// `POST /v1/messages`.
pub async fn create_message(app: AppState, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    let (State(app), ConnectInfo(peer)) = (app, peer);
    let parse = |raw: &[u8]| anthropic::parse_head(raw, false);
    let (raw, (head, request)) = match read_request(&app, body, parse).await {
        Ok(x) => x,
        Err(e) => return anthropic_error(e).await,
    };
    let headers = with_bearer(headers);
    if native(&app, &head.model, Endpoint::Messages) {
        let res = request_path(app, peer, headers, "/v1/messages", raw).await;
        if res.status().is_success() {
            return res;
        }
        return crate::dialect::anthropic_error_response(res).await;
    }
    let chat = match anthropic::to_chat_request(&request, &head.model) {
        Ok(c) => c,
        Err(e) => return anthropic_error(ApiError::bad_request(e.message, e.param)).await,
    };
    let stop_sequences = request
        .get("stop_sequences")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let api = ClientApi::Messages(MessageContext {
        id: new_id("msg_"),
        model: head.model.clone(),
        stop_sequences,
        start_usage: None,
    });
    let res = chat_path(app, peer, headers, chat).await;
    api.respond(res).await
}

/// `POST /v1/messages/count_tokens`: the model's tokenizer's count of the prompt (as the
/// gateway counts prompts it meters). Not metered: counting is free.
pub async fn count_tokens(State(app): AppState, headers: HeaderMap, body: Body) -> Response {
    match count(&app, &with_bearer(headers), body).await {
        Ok(n) => {
            let mut res = (StatusCode::OK, anthropic::count_tokens_body(n)).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => anthropic_error(e).await,
    }
}

async fn count(app: &App, headers: &HeaderMap, body: Body) -> Result<u64, ApiError> {
    let key = crate::front::authenticate(app, headers)?;
    let raw = read_body(app, body).await?;
    let (head, request) =
        anthropic::parse_head(&raw, true).map_err(|e| ApiError::bad_request(e.message, e.param))?;
    let model = app
        .models
        .get(&head.model)
        .filter(|_| key.may_use(&head.model))
        .ok_or_else(|| ApiError::model_not_found(&head.model))?;
    let chat = anthropic::to_chat_request(&request, &head.model)
        .map_err(|e| ApiError::bad_request(e.message, e.param))?;
    let parsed = ApiRequest::parse(&chat, Endpoint::ChatCompletions, false)
        .map_err(|e| ApiError::bad_request(e.message, e.param))?;
    let (texts, messages) = parsed.prompt_texts(Endpoint::ChatCompletions);
    Ok(model.encoding.count_prompt(&texts, messages))
}
