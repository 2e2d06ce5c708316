//! The Responses API and Messages API front doors.
//!
//! - `POST /v1/responses` (and Azure's `POST /openai/responses?api-version=…`,
//!   `POST /openai/v1/responses`), plain or streamed;
//! - `GET` / `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, answered by the
//!   provider that created the response, for the organization that created it;
//! - `POST /v1/messages`, plain or streamed, and `POST /v1/messages/count_tokens`, with the key as
//!   `x-api-key` or `Authorization: Bearer`, and errors in Anthropic's shape.
//!
//! A request whose provider speaks only Chat Completions is translated (see `tollgate-wire`'s
//! `responses` and `anthropic` modules) and goes through the chat request path — authentication,
//! allow-lists, guard, limits and budgets, dispatch with fallback, metering of the upstream's own
//! usage — and its answer is translated back (`dialect::ClientApi`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use time::OffsetDateTime;
use tollgate_wire::anthropic::{self, MessageContext};
use tollgate_wire::responses::{self, ResponseContext};
use tollgate_wire::{ApiRequest, Endpoint};

use crate::app::App;
use crate::dialect::{ClientApi, anthropic_error};
use crate::error::ApiError;

type AppState = State<Arc<App>>;

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

/// Sends a translated Chat Completions body through the chat request path.
async fn chat_path(
    app: Arc<App>,
    peer: SocketAddr,
    mut headers: HeaderMap,
    chat: Vec<u8>,
) -> Response {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(chat.len()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::front::inference(
        State(app),
        None,
        ConnectInfo(peer),
        Uri::from_static("/v1/chat/completions"),
        headers,
        Body::from(chat),
    )
    .await
}

/// `POST /v1/responses`, `POST /openai/responses`, `POST /openai/v1/responses`.
pub async fn create_response(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (head, request) = match responses::parse_head(&raw) {
        Ok(x) => x,
        Err(e) => return ApiError::bad_request(e.message, e.param).into_response(),
    };
    let Some(model) = head.model.clone() else {
        return ApiError::bad_request("you must provide a model parameter", Some("model"))
            .into_response();
    };
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

/// `GET /v1/responses/{id}`: a response stored by the provider that created it.
pub async fn get_response(
    State(app): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    stored(&app, &id, &headers).await
}

/// `GET /v1/responses/{id}/input_items`.
pub async fn response_input_items(
    State(app): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    stored(&app, &id, &headers).await
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete_response(
    State(app): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    stored(&app, &id, &headers).await
}

/// Stored responses: only responses the gateway saw a provider create can be read, and only by
/// their organization; responses answered through translation are not stored anywhere.
async fn stored(app: &App, id: &str, headers: &HeaderMap) -> Response {
    if let Err(e) = crate::front::authenticate(app, headers) {
        return e.into_response();
    }
    ApiError::not_found(format!("No response found with id '{id}'.")).into_response()
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
pub async fn create_message(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return anthropic_error(e).await,
    };
    let (head, request) = match anthropic::parse_head(&raw, false) {
        Ok(x) => x,
        Err(e) => return anthropic_error(ApiError::bad_request(e.message, e.param)).await,
    };
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
    let res = chat_path(app, peer, with_bearer(headers), chat).await;
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
