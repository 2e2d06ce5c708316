//! The Responses API and Messages API front doors' adapters around the chat request path.
//!
//! The request path speaks Chat Completions: it dispatches chat bodies, relays chat chunks and
//! meters chat usage. The other APIs join it at its two ends:
//! - **client side** ([`ClientApi`]): a Responses or Messages request is translated to chat when
//!   its provider speaks only chat; the chat answer is turned back into the client's API — a plain
//!   body by [`ClientApi::translate_plain`], a stream by [`ClientStream`], a body that reads the
//!   relayed chat chunks (the usage chunk included, the relay holding `[DONE]` until the usage
//!   record is durable) and writes the client's events;
//! - **upstream side** ([`AnthropicUpstream`]): an `anthropic` upstream's Messages answer is turned
//!   into chat (a plain body by [`chat_from_message`], a stream chunk by chunk, with the usage
//!   chunk), so that relaying and metering stay the chat path's;
//! - **native streams** ([`StreamDialect`]): where the client's API is the upstream's own (Responses
//!   to `openai`/`azure`, Messages to `anthropic`), events pass unchanged and the usage is read
//!   from `response.completed` or from `message_start` + `message_delta`.
//!
//! Errors on the Messages routes take Anthropic's shape ([`anthropic_error`]), with Tollgate's
//! code (`account_under_review`, `insufficient_quota`, …) leading the message. Stored responses
//! ([`StoredResponses`]) remember which provider and organization made each response.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tollgate_wire::anthropic::{
    self, ChatContext, ChatToMessagesStream, MessageContext, MessagesToChatStream, StreamUsage,
};
use tollgate_wire::responses::{self, ChatToResponsesStream, ResponseContext};
use tollgate_wire::{SseSplitter, Usage};

use crate::upstream::{Failure, UpstreamBody, UpstreamResponse, send_to};

/// The API a client spoke, when it is not Chat Completions, with what its answer needs.
#[derive(Debug, Clone)]
pub enum ClientApi {
    Responses(ResponseContext),
    Messages(MessageContext),
}

impl ClientApi {
    /// The client's plain answer built from a chat completion body.
    pub fn translate_plain(&self, chat: &[u8]) -> Result<Vec<u8>, String> {
        let out = match self {
            ClientApi::Responses(ctx) => responses::from_chat_completion(chat, ctx),
            ClientApi::Messages(ctx) => anthropic::from_chat_completion(chat, ctx),
        };
        out.map(|(body, _)| body).map_err(|e| e.message)
    }

    fn translator(&self) -> Translator {
        match self {
            ClientApi::Responses(ctx) => {
                Translator::Responses(Box::new(ChatToResponsesStream::new(ctx.clone())))
            }
            ClientApi::Messages(ctx) => {
                Translator::Messages(Box::new(ChatToMessagesStream::new(ctx.clone())))
            }
        }
    }

    /// The client's answer from the chat path's answer: a success is translated (plain or
    /// stream, by its content type); an error keeps OpenAI's shape for Responses clients and
    /// takes Anthropic's for Messages clients.
    pub async fn respond(&self, chat: Response) -> Response {
        let status = chat.status();
        if !status.is_success() {
            return match self {
                ClientApi::Responses(_) => chat,
                ClientApi::Messages(_) => anthropic_error_response(chat).await,
            };
        }
        let is_stream = chat
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (mut parts, body) = chat.into_parts();
        if is_stream {
            let body = Body::new(ClientStream::new(body, self.translator()));
            return Response::from_parts(parts, body);
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        match self.translate_plain(&bytes) {
            Ok(out) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Body::from(out))
            }
            Err(e) => self.error(StatusCode::BAD_GATEWAY, "upstream_error", &e),
        }
    }

    /// An error in the client API's shape.
    pub fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = match self {
            ClientApi::Responses(_) => serde_json::to_vec(&serde_json::json!({
                "error": {"message": message, "type": "api_error", "param": null, "code": code}
            }))
            .unwrap_or_default(),
            ClientApi::Messages(_) => anthropic::error_body(
                anthropic::error_type(status.as_u16()),
                &format!("{code}: {message}"),
            ),
        };
        json_response(status, body)
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An OpenAI-shaped error response (every error the gateway makes) in Anthropic's shape, with
/// the same status and headers (`retry-after`, rate-limit headers, …).
pub async fn anthropic_error_response(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let out = anthropic::error_from_openai(parts.status.as_u16(), &bytes);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(out))
}

/// An [`ApiError`](crate::error::ApiError) in Anthropic's shape.
pub async fn anthropic_error(e: crate::error::ApiError) -> Response {
    anthropic_error_response(e.into_response()).await
}

/// A chat-to-client stream translator.
#[derive(Debug)]
enum Translator {
    Responses(Box<ChatToResponsesStream>),
    Messages(Box<ChatToMessagesStream>),
}

impl Translator {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Translator::Responses(t) => t.push(data, out),
            Translator::Messages(t) => t.push(data, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Translator::Responses(t) => t.finish(out),
            Translator::Messages(t) => t.finish(out),
        }
    }
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        match self {
            Translator::Responses(t) => t.fail(message, out),
            Translator::Messages(t) => t.fail(message, out),
        }
    }
}

/// A client's streamed body in its own API, read from the chat path's streamed body (chat
/// chunks with the usage chunk, then `[DONE]` once the usage record is durable).
pub struct ClientStream<B> {
    inner: B,
    splitter: SseSplitter,
    translator: Translator,
    ended: bool,
}

impl<B> ClientStream<B> {
    fn new(inner: B, translator: Translator) -> Self {
        ClientStream {
            inner,
            splitter: SseSplitter::new(),
            translator,
            ended: false,
        }
    }

    fn feed(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        self.splitter.push(piece);
        while let Some(event) = self.splitter.next_event() {
            self.event(event, out);
        }
    }

    fn event(&mut self, event: tollgate_wire::SseEvent, out: &mut Vec<u8>) {
        if event.is_done() {
            self.translator.finish(out);
        } else if let Some(data) = &event.data {
            if data.starts_with(b"{\"error\"") {
                let message = serde_json::from_slice::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "The upstream stream failed.".to_owned());
                self.translator.fail(&message, out);
            } else {
                self.translator.push(data, out);
            }
        }
    }
}

impl<B> http_body::Body for ClientStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.feed(&data, &mut out);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.translator.fail(&e.to_string(), &mut out);
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Some(event) = this.splitter.finish() {
                        this.event(event, &mut out);
                    }
                    // A stream that ended without `[DONE]` did not complete.
                    this.translator
                        .fail("The upstream stream ended early.", &mut out);
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}

/// A chat completion body from an `anthropic` upstream's plain Message.
pub fn chat_from_message(body: &[u8], ctx: &ChatContext) -> Result<Bytes, String> {
    anthropic::to_chat_completion(body, ctx)
        .map(|(b, _)| Bytes::from(b))
        .map_err(|e| e.message)
}

/// An `anthropic` upstream's event stream read as chat chunks (with the usage chunk and
/// `[DONE]`), so the chat path relays and meters it.
pub struct AnthropicUpstream {
    inner: UpstreamBody,
    splitter: SseSplitter,
    translator: MessagesToChatStream,
    ended: bool,
}

impl AnthropicUpstream {
    /// Wraps an upstream body; `ctx.include_usage` should be true (the relay strips the usage
    /// chunk when the client did not ask for it).
    pub fn new(inner: UpstreamBody, ctx: ChatContext) -> Self {
        AnthropicUpstream {
            inner,
            splitter: SseSplitter::new(),
            translator: MessagesToChatStream::new(ctx),
            ended: false,
        }
    }
}

impl crate::upstream::TranslatedBody for AnthropicUpstream {
    /// The next piece of the translated body; `None` at the end.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match self.inner.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(piece))) => {
                    self.splitter.push(&piece);
                    while let Some(event) = self.splitter.next_event() {
                        if let Some(data) = &event.data {
                            self.translator.push(data, &mut out);
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if let Some(event) = self.splitter.finish()
                        && let Some(data) = &event.data
                    {
                        self.translator.push(data, &mut out);
                    }
                    // No `[DONE]` unless the upstream finished its message: an unfinished
                    // stream must read as one to the relay.
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

/// Sends a Chat Completions body to an `anthropic` route: translated to a Messages request for
/// `upstream_model`, answered as chat (a plain completion, or chunks ending with the usage chunk
/// and `[DONE]`). An upstream error comes back in OpenAI's shape; a request Anthropic cannot take
/// (`n > 1`, unknown content parts) is a 400 that is not retried.
#[allow(clippy::too_many_arguments)]
pub async fn send_chat_to_anthropic(
    pool: &Arc<crate::conn::ConnPool>,
    auth: Option<&(http::HeaderName, HeaderValue)>,
    messages: &http::Uri,
    version: &(http::HeaderName, HeaderValue),
    chat: &[u8],
    upstream_model: &str,
    ctx: ChatContext,
    timeout: std::time::Duration,
) -> Result<UpstreamResponse, Failure> {
    let json = HeaderValue::from_static("application/json");
    let body = anthropic::from_chat_request(chat, upstream_model).map_err(|e| Failure::Status {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::from(
            tollgate_wire::ErrorBody {
                error: tollgate_wire::ErrorDetail {
                    message: &e.message,
                    kind: "invalid_request_error",
                    param: e.param,
                    code: None,
                },
            }
            .to_vec(),
        ),
        retry_after: None,
        content_type: Some(json.clone()),
    })?;
    let stream = serde_json::from_slice::<serde_json::Value>(chat)
        .ok()
        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let res = send_to(
        pool,
        http::Method::POST,
        messages,
        &[auth, Some(version)],
        Some(Bytes::from(body)),
        timeout,
    )
    .await;
    let res = match res {
        Ok(r) => r,
        Err(Failure::Status {
            status,
            body,
            retry_after,
            ..
        }) => {
            return Err(Failure::Status {
                status,
                body: Bytes::from(anthropic::openai_error_from(status.as_u16(), &body)),
                retry_after,
                content_type: Some(json),
            });
        }
        Err(other) => return Err(other),
    };
    if stream {
        return Ok(UpstreamResponse {
            status: res.status,
            content_type: Some(HeaderValue::from_static("text/event-stream")),
            body: UpstreamBody::Translated(Box::new(AnthropicUpstream::new(res.body, ctx))),
        });
    }
    let bytes = match tokio::time::timeout(timeout, res.body.collect(64 << 20)).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(e)) => return Err(Failure::Connect(e)),
        Ok(Ok(b)) => b,
    };
    let chat = chat_from_message(&bytes, &ctx).map_err(Failure::Connect)?;
    Ok(UpstreamResponse {
        status: res.status,
        content_type: Some(json),
        body: UpstreamBody::Full(Some(chat)),
    })
}

/// Sends one attempt of a request to an HTTP route in the route's own API: Chat Completions,
/// legacy completions and embeddings as before; chat to an `anthropic` route translated; a
/// Responses or Messages request natively to the upstream that serves that API. A request the
/// route cannot serve is a 400 that is not retried.
#[allow(clippy::too_many_arguments)]
pub async fn send_http_route(
    dialect: &crate::upstream::Dialect,
    pool: &Arc<crate::conn::ConnPool>,
    paths: &[http::Uri; 3],
    auth: Option<&(http::HeaderName, HeaderValue)>,
    endpoint: tollgate_wire::Endpoint,
    body: Bytes,
    chat: impl FnOnce() -> ChatContext,
    timeout: std::time::Duration,
) -> Result<UpstreamResponse, Failure> {
    use crate::upstream::Dialect;
    use tollgate_wire::Endpoint;
    match (dialect, endpoint) {
        (
            Dialect::Anthropic {
                messages, version, ..
            },
            Endpoint::ChatCompletions,
        ) => {
            let chat = chat();
            let model = chat.model.clone();
            // Boxed: the translating future is large, and an OpenAI route should not carry
            // its size in every request's future.
            Box::pin(send_chat_to_anthropic(
                pool, auth, messages, version, &body, &model, chat, timeout,
            ))
            .await
        }
        (
            Dialect::Anthropic {
                messages, version, ..
            },
            Endpoint::Messages,
        ) => {
            send_to(
                pool,
                http::Method::POST,
                messages,
                &[auth, Some(version)],
                Some(body),
                timeout,
            )
            .await
        }
        (
            Dialect::OpenAi {
                responses: Some(api),
            },
            Endpoint::Responses,
        ) => {
            send_to(
                pool,
                http::Method::POST,
                &api.create,
                &[auth],
                Some(body),
                timeout,
            )
            .await
        }
        (Dialect::Anthropic { .. }, _) | (_, Endpoint::Responses | Endpoint::Messages) => {
            Err(unservable(endpoint))
        }
        _ => crate::upstream::send_http(pool, paths, auth, endpoint, body, timeout).await,
    }
}

/// The failure of a request its route cannot serve (a 400 that is not retried).
pub fn unservable(endpoint: tollgate_wire::Endpoint) -> Failure {
    let message = format!(
        "This model's provider does not serve {}.",
        endpoint.public_path()
    );
    Failure::Status {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::from(
            tollgate_wire::ErrorBody {
                error: tollgate_wire::ErrorDetail {
                    message: &message,
                    kind: "invalid_request_error",
                    param: None,
                    code: Some("unsupported_endpoint"),
                },
            }
            .to_vec(),
        ),
        retry_after: None,
        content_type: Some(HeaderValue::from_static("application/json")),
    }
}

/// The usage of a plain answer in the endpoint's API.
pub fn plain_usage(endpoint: tollgate_wire::Endpoint, body: &[u8]) -> Option<Usage> {
    match endpoint {
        tollgate_wire::Endpoint::Responses => responses::usage_of_object(body),
        tollgate_wire::Endpoint::Messages => anthropic::usage_of_message(body),
        _ => tollgate_wire::usage::usage_of_response(body),
    }
}

/// The generated text of a plain answer in the endpoint's API (for the estimate when the
/// upstream reports no usage).
pub fn plain_text(endpoint: tollgate_wire::Endpoint, body: &[u8]) -> String {
    match endpoint {
        tollgate_wire::Endpoint::Responses => responses::output_text_of_object(body),
        tollgate_wire::Endpoint::Messages => anthropic::text_of_message(body),
        tollgate_wire::Endpoint::Embeddings => String::new(),
        _ => tollgate_wire::usage::response_text(body),
    }
}

/// How the usage of a stream relayed unchanged is read.
#[derive(Debug, Clone, Copy)]
pub enum StreamDialect {
    /// Chat Completions and legacy completions: the usage chunk.
    Chat,
    /// The Responses API: `response.completed` (or `.incomplete`, `.failed`).
    Responses,
    /// Anthropic's Messages API: `message_start`, then `message_delta`.
    Anthropic(StreamUsage),
}

impl StreamDialect {
    /// The reader for an endpoint's streams; `None` for the chat path's own (usage chunk).
    pub fn of(endpoint: tollgate_wire::Endpoint) -> Option<StreamDialect> {
        match endpoint {
            tollgate_wire::Endpoint::Responses => Some(StreamDialect::Responses),
            tollgate_wire::Endpoint::Messages => {
                Some(StreamDialect::Anthropic(StreamUsage::default()))
            }
            _ => None,
        }
    }

    /// Whether this event ends the stream (`response.completed`, `.incomplete`, `.failed`;
    /// `message_stop`): the relay holds it back until the usage record is durable.
    pub fn is_final(&self, data: &[u8]) -> bool {
        let kind = serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
            .unwrap_or_default();
        match self {
            StreamDialect::Chat => false,
            StreamDialect::Responses => matches!(
                kind.as_str(),
                "response.completed" | "response.incomplete" | "response.failed"
            ),
            StreamDialect::Anthropic(_) => kind == "message_stop",
        }
    }

    /// Reads one event's data: appends generated text to `text`; returns the usage reported so
    /// far when this event carried some.
    pub fn observe(&mut self, data: &[u8], text: &mut String) -> Option<Usage> {
        match self {
            StreamDialect::Chat => tollgate_wire::usage::read_chunk(data, text)?.usage,
            StreamDialect::Responses => {
                if let Some(t) = responses::text_of_event(data) {
                    text.push_str(&t);
                    return None;
                }
                responses::usage_of_event(data)
            }
            StreamDialect::Anthropic(acc) => {
                if let Some(t) = anthropic::text_of_event(data) {
                    text.push_str(&t);
                    return None;
                }
                let before = acc.anthropic();
                acc.observe(data);
                (acc.anthropic() != before).then(|| acc.usage()).flatten()
            }
        }
    }
}

/// Who made a stored response: the provider that holds it, and the organization whose key
/// created it (only that organization may read or delete it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub provider: Arc<str>,
    pub organization: String,
    /// The public model name it was made with (its routes lead to the provider).
    pub model: String,
}

/// Response ids the gateway has seen created, newest last, bounded in number.
#[derive(Debug)]
pub struct StoredResponses {
    inner: Mutex<(HashMap<String, StoredResponse>, VecDeque<String>)>,
    capacity: usize,
}

impl StoredResponses {
    pub fn new(capacity: usize) -> Self {
        StoredResponses {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Remembers a response id; the oldest is forgotten beyond the capacity.
    pub fn remember(&self, id: &str, entry: StoredResponse) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(id.to_owned(), entry).is_none() {
            order.push_back(id.to_owned());
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// The response's maker, if `organization` made it (another organization's id reads as
    /// unknown, so ids cannot be probed).
    pub fn lookup(&self, id: &str, organization: &str) -> Option<StoredResponse> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(id)
            .filter(|e| e.organization == organization)
            .cloned()
    }

    /// Forgets a deleted response.
    pub fn forget(&self, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.remove(id).is_some() {
            order.retain(|k| k != id);
        }
    }
}

/// The id of a Responses object (plain body or a `response.created` event's data).
pub fn response_id(data: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let id = v
        .get("response")
        .and_then(|r| r.get("id"))
        .or_else(|| v.get("id"))?;
    id.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn messages_ctx() -> MessageContext {
        MessageContext {
            id: "msg_t".into(),
            model: "claude".into(),
            stop_sequences: Vec::new(),
            start_usage: None,
        }
    }

    fn responses_ctx() -> ResponseContext {
        ResponseContext {
            id: "resp_t".into(),
            created_at: 1,
            model: "m".into(),
            request: json!({}),
        }
    }

    async fn body_text(res: Response) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn sse_response(body: &'static str) -> Response {
        let mut res = Response::new(Body::from(body));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        res
    }

    const CHAT_STREAM: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n",
        "data: [DONE]\n\n"
    );

    #[tokio::test]
    async fn chat_stream_becomes_a_messages_stream() {
        let res = ClientApi::Messages(messages_ctx())
            .respond(sse_response(CHAT_STREAM))
            .await;
        let text = body_text(res).await;
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.contains("\"text\":\"Hi\""));
        assert!(text.contains("\"cache_read_input_tokens\":2"));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(!text.contains("[DONE]"));
    }

    #[tokio::test]
    async fn chat_stream_becomes_a_responses_stream_and_a_cut_stream_fails() {
        let res = ClientApi::Responses(responses_ctx())
            .respond(sse_response(CHAT_STREAM))
            .await;
        let text = body_text(res).await;
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: response.completed\n"), "{last}");
        assert!(last.contains("\"input_tokens\":4"));

        let cut = &CHAT_STREAM[..CHAT_STREAM
            .find("data: {\"choices\":[{\"index\":0,\"delta\":{},")
            .unwrap()];
        let cut: &'static str = Box::leak(cut.to_owned().into_boxed_str());
        let text = body_text(
            ClientApi::Responses(responses_ctx())
                .respond(sse_response(cut))
                .await,
        )
        .await;
        assert!(text.contains("event: response.failed\n"), "{text}");
        assert!(!text.contains("response.completed"));
    }

    #[tokio::test]
    async fn plain_answers_and_errors_take_the_client_shape() {
        let chat = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let res = ClientApi::Messages(messages_ctx())
            .respond(Response::new(Body::from(&chat[..])))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["usage"]["input_tokens"], 3);

        let err = crate::error::ApiError::insufficient_quota("Budget exhausted.");
        let res = ClientApi::Messages(messages_ctx())
            .respond(err.into_response())
            .await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let v: Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "insufficient_quota: Budget exhausted."}})
        );
        let res = anthropic_error(crate::error::ApiError::forbidden(
            "account_under_review",
            "Suspended.",
        ))
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let v: Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["message"], "account_under_review: Suspended.");

        // Responses clients keep OpenAI's error shape.
        let res = ClientApi::Responses(responses_ctx())
            .respond(crate::error::ApiError::model_not_found("x").into_response())
            .await;
        let v: Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
    }

    #[tokio::test]
    async fn anthropic_upstream_stream_reads_as_chat() {
        let events = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"yo\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let ctx = ChatContext {
            id: "chatcmpl-t".into(),
            created: 1,
            model: "claude".into(),
            include_usage: true,
        };
        let mut up = AnthropicUpstream::new(
            UpstreamBody::Full(Some(Bytes::from_static(events.as_bytes()))),
            ctx,
        );
        let mut out = Vec::new();
        while let Some(piece) =
            std::future::poll_fn(|cx| crate::upstream::TranslatedBody::poll_next(&mut up, cx)).await
        {
            out.extend_from_slice(&piece.unwrap());
        }
        let mut split = SseSplitter::new();
        split.push(&out);
        let mut text = String::new();
        let mut usage = None;
        let mut dialect = StreamDialect::Chat;
        let mut done = false;
        while let Some(e) = split.next_event() {
            if e.is_done() {
                done = true;
            } else if let Some(u) = dialect.observe(&e.data.unwrap(), &mut text) {
                usage = Some(u);
            }
        }
        assert!(done);
        assert_eq!(text, "yo");
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens(), u.completion_tokens),
            (7, 4, 2)
        );
    }

    #[test]
    fn native_stream_dialects_read_usage_and_text() {
        let mut text = String::new();
        let mut d = StreamDialect::Responses;
        assert_eq!(
            d.observe(
                br#"{"type":"response.output_text.delta","delta":"ab"}"#,
                &mut text
            ),
            None
        );
        let u = d
            .observe(br#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens":2}}}"#, &mut text)
            .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens(), u.completion_tokens),
            (5, 1, 2)
        );
        let mut d = StreamDialect::Anthropic(StreamUsage::default());
        let u = d
            .observe(br#"{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_creation_input_tokens":6,"output_tokens":1}}}"#, &mut text)
            .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cache_write_tokens(), u.completion_tokens),
            (11, 6, 1)
        );
        assert_eq!(d.observe(br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cd"}}"#, &mut text), None);
        let u = d
            .observe(
                br#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
                &mut text,
            )
            .unwrap();
        assert_eq!(u.completion_tokens, 9);
        assert_eq!(text, "abcd");
    }

    #[test]
    fn stored_responses_belong_to_their_organization_and_are_bounded() {
        let s = StoredResponses::new(2);
        let entry = |org: &str| StoredResponse {
            provider: "p".into(),
            organization: org.into(),
            model: "m".into(),
        };
        s.remember("resp_1", entry("org_a"));
        assert_eq!(s.lookup("resp_1", "org_a"), Some(entry("org_a")));
        assert_eq!(s.lookup("resp_1", "org_b"), None);
        s.remember("resp_2", entry("org_a"));
        s.remember("resp_3", entry("org_b"));
        assert_eq!(s.lookup("resp_1", "org_a"), None, "the oldest is forgotten");
        s.forget("resp_3");
        assert_eq!(s.lookup("resp_3", "org_b"), None);
        assert_eq!(
            s.lookup("resp_2", "org_a").map(|e| e.model),
            Some("m".into())
        );
        assert_eq!(
            response_id(br#"{"type":"response.created","response":{"id":"resp_9"}}"#).as_deref(),
            Some("resp_9")
        );
        assert_eq!(
            response_id(br#"{"id":"resp_8","object":"response"}"#).as_deref(),
            Some("resp_8")
        );
    }
}
