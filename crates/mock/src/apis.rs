//! OpenAI's Responses API and Anthropic's Messages API, as the mock serves them.
//!
//! - `POST /v1/responses` (also `/openai/responses` and `/openai/v1/responses`, Azure's shapes):
//!   a Responses object, or with `stream: true` the typed events from `response.created` to
//!   `response.completed` (`response.incomplete` when `max_output_tokens` cut the answer). Usage:
//!   `input_tokens` is the prompt's word count (input items and `instructions`),
//!   `input_tokens_details.cached_tokens` is [`MockConfig::cached_tokens`](crate::MockConfig)
//!   (at most the input), output and reasoning as for chat.
//! - Stored responses (unless `store: false`): `GET` and `DELETE /v1/responses/{id}` and
//!   `GET /v1/responses/{id}/input_items`.
//! - `POST /v1/messages`: a Message, or Anthropic's SSE events with `stream: true`. Usage follows
//!   Anthropic's convention: of the prompt's word count `P`, `cache_read_input_tokens` is
//!   `cached_tokens` and `cache_creation_input_tokens` is `cache_write_tokens` (each clamped), and
//!   `input_tokens` is the rest, so `input + cache_read + cache_creation = P`.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": P}`.
//!
//! The answer has `min(response_tokens, max tokens asked for)` tokens; when the limit cut it, the
//! stop reason says so (`max_tokens`, or status `incomplete`). Errors on the Messages routes have
//! Anthropic's shape. This rendering is written from the two APIs' references on its own, so that
//! tests of the gateway's translators compare against an independent implementation.

use bytes::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::{EventsBody, MockBody};
use crate::parse::{ParsedRequest, parse_request};
use crate::{Behavior, Shared, State, UsageMode};

/// The routes of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiRoute<'a> {
    CreateResponse,
    GetResponse(&'a str),
    DeleteResponse(&'a str),
    InputItems(&'a str),
    Messages,
    CountTokens,
}

/// Maps a method and path to a route of this module.
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Option<ApiRoute<'a>> {
    if path == "/v1/messages" {
        return Some(ApiRoute::Messages);
    }
    if path == "/v1/messages/count_tokens" {
        return Some(ApiRoute::CountTokens);
    }
    if matches!(
        path,
        "/v1/responses" | "/openai/responses" | "/openai/v1/responses"
    ) {
        return Some(ApiRoute::CreateResponse);
    }
    let rest = path
        .strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/openai/v1/responses/"))
        .or_else(|| path.strip_prefix("/openai/responses/"))?;
    if let Some(id) = rest.strip_suffix("/input_items") {
        return (!id.is_empty() && !id.contains('/')).then_some(ApiRoute::InputItems(id));
    }
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some(if method == Method::DELETE {
        ApiRoute::DeleteResponse(rest)
    } else {
        ApiRoute::GetResponse(rest)
    })
}

impl ApiRoute<'_> {
    /// Whether errors on this route use Anthropic's shape.
    pub(crate) fn anthropic(&self) -> bool {
        matches!(self, ApiRoute::Messages | ApiRoute::CountTokens)
    }

    fn method(&self) -> Method {
        match self {
            ApiRoute::GetResponse(_) | ApiRoute::InputItems(_) => Method::GET,
            ApiRoute::DeleteResponse(_) => Method::DELETE,
            _ => Method::POST,
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(MockBody::full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Anthropic's error type for a status.
fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error in Anthropic's shape: `{"type":"error","error":{"type":…,"message":…}}`.
pub(crate) fn anthropic_error(status: u16, message: &str) -> Response<MockBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        &json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}),
    )
}

fn openai_error(status: u16, message: &str) -> Response<MockBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

fn sse(events: Vec<Bytes>, state: &State) -> Response<MockBody> {
    let cfg = &state.config;
    let body = EventsBody::new(
        events,
        cfg.chunk_gap,
        cfg.behavior == Behavior::CloseMidStream,
    );
    let mut resp = Response::new(MockBody::Events(Box::new(body)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn named(name: &str, data: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut buf, data);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// The answer's token count and whether a limit cut it.
fn answer_tokens(state: &State, limit: Option<u64>) -> (u64, bool) {
    let want = u64::from(state.config.response_tokens);
    match limit {
        Some(l) if l < want => (l, true),
        _ => (want, false),
    }
}

/// The answer's text split into the configured number of stream chunks.
fn pieces(state: &State, tokens: u64) -> Vec<String> {
    let chunks = state.config.stream_chunks.map_or(tokens, u64::from).max(1);
    let base = tokens / chunks;
    let rest = tokens % chunks;
    (0..chunks)
        .map(|i| "tok ".repeat(usize::try_from(base + u64::from(i < rest)).unwrap_or(0)))
        .collect()
}

/// Serves a route of this module.
pub(crate) fn respond(
    shared: &Shared,
    state: &State,
    seq: u64,
    method: &Method,
    route: &ApiRoute<'_>,
    body: &[u8],
) -> Response<MockBody> {
    let created = crate::server::now_secs();
    let anthropic = route.anthropic();
    let fail = |status: u16, message: &str| {
        if anthropic {
            anthropic_error(status, message)
        } else {
            openai_error(status, message)
        }
    };
    if *method != route.method() {
        return fail(405, "tollgate-mock: method not allowed");
    }
    match route {
        ApiRoute::GetResponse(id) => {
            return match shared.stored(id) {
                Some((resp, _)) => json_response(StatusCode::OK, &resp),
                None => fail(404, &format!("No response found with id '{id}'.")),
            };
        }
        ApiRoute::DeleteResponse(id) => {
            return match shared.unstore(id) {
                true => json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": "response", "deleted": true}),
                ),
                false => fail(404, &format!("No response found with id '{id}'.")),
            };
        }
        ApiRoute::InputItems(id) => {
            return match shared.stored(id) {
                Some((_, items)) => {
                    let first = items
                        .first()
                        .map(|i| i["id"].clone())
                        .unwrap_or(Value::Null);
                    let last = items.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
                    json_response(
                        StatusCode::OK,
                        &json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": false}),
                    )
                }
                None => fail(404, &format!("No response found with id '{id}'.")),
            };
        }
        _ => {}
    }
    let parsed = match parse_request(body) {
        Ok(p) => p,
        Err(e) => return fail(400, &e.to_string()),
    };
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return fail(400, "model: Field required");
    };
    match route {
        ApiRoute::CountTokens => json_response(
            StatusCode::OK,
            &json!({"input_tokens": parsed.prompt_tokens}),
        ),
        ApiRoute::Messages => {
            if request.get("max_tokens").and_then(Value::as_u64).is_none() {
                return fail(400, "max_tokens: Field required");
            }
            messages(state, seq, model, &request, &parsed)
        }
        _ => responses(shared, state, seq, created, model, &request, &parsed),
    }
}

/// Anthropic usage for a prompt of `prompt` words: cache reads and writes first, the rest input.
fn anthropic_usage(state: &State, prompt: u64, output: u64) -> Value {
    let read = u64::from(state.config.cached_tokens).min(prompt);
    let write = u64::from(state.config.cache_write_tokens).min(prompt - read);
    json!({
        "input_tokens": prompt - read - write,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    })
}

fn messages(
    state: &State,
    seq: u64,
    model: &str,
    request: &Value,
    parsed: &ParsedRequest,
) -> Response<MockBody> {
    let limit = request.get("max_tokens").and_then(Value::as_u64);
    let (tokens, cut) = answer_tokens(state, limit);
    let stop_reason = if cut { "max_tokens" } else { "end_turn" };
    let id = format!("msg_mock{seq:016x}");
    let with_usage = state.config.usage != UsageMode::Never;
    let usage = anthropic_usage(state, parsed.prompt_tokens, tokens);
    if !parsed.stream {
        let text = "tok ".repeat(usize::try_from(tokens).unwrap_or(0));
        let mut msg = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason, "stop_sequence": null,
        });
        if with_usage {
            msg["usage"] = usage;
        }
        return json_response(StatusCode::OK, &msg);
    }
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut message = json!({
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
    });
    if with_usage {
        message["usage"] = start_usage;
    }
    let mut events = vec![
        named(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        ),
        named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        named("ping", &json!({"type": "ping"})),
    ];
    for p in pieces(state, tokens) {
        events.push(named(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(named(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}});
    if with_usage {
        delta["usage"] = json!({"output_tokens": tokens});
    }
    events.push(named("message_delta", &delta));
    events.push(named("message_stop", &json!({"type": "message_stop"})));
    sse(events, state)
}

/// The input items a stored response lists: a string input is one user message.
fn input_items(request: &Value, id_tail: &str) -> Vec<Value> {
    let items = match request.get("input") {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}]})],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if item.get("id").is_none() {
                item["id"] = json!(format!("msg_in{id_tail}_{i}"));
            }
            if item.get("type").is_none() {
                item["type"] = json!("message");
            }
            item
        })
        .collect()
}

fn responses(
    shared: &Shared,
    state: &State,
    seq: u64,
    created: u64,
    model: &str,
    request: &Value,
    parsed: &ParsedRequest,
) -> Response<MockBody> {
    let cfg = &state.config;
    let limit = request.get("max_output_tokens").and_then(Value::as_u64);
    let (tokens, cut) = answer_tokens(state, limit);
    let tail = format!("mock{seq:016x}");
    let id = format!("resp_{tail}");
    let item_id = format!("msg_{tail}");
    let prompt = parsed.prompt_tokens;
    let reasoning = u64::from(cfg.reasoning_tokens);
    let usage = json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": u64::from(cfg.cached_tokens).min(prompt)},
        "output_tokens": tokens + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + tokens + reasoning,
    });
    let store = request.get("store").and_then(Value::as_bool) != Some(false);
    let text = "tok ".repeat(usize::try_from(tokens).unwrap_or(0));
    let object = |status: &str, output: Value, usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": created, "status": status,
            "error": null,
            "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": limit, "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": request.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "reasoning": {"effort": null, "summary": null}, "store": store,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage,
            "user": null, "metadata": {},
        })
    };
    let status = if cut { "incomplete" } else { "completed" };
    let part = json!({"type": "output_text", "text": text, "annotations": []});
    let item = json!({"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]});
    let with_usage = cfg.usage != UsageMode::Never;
    let final_usage = if with_usage { usage } else { Value::Null };
    let done = object(status, json!([item]), final_usage);
    if store {
        shared.store(&id, done.clone(), input_items(request, &tail));
    }
    if !parsed.stream {
        return json_response(StatusCode::OK, &done);
    }
    let mut n = 0u64;
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(n);
        n += 1;
        named(kind, &data)
    };
    let mut events = vec![
        ev(
            "response.created",
            json!({"response": object("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.in_progress",
            json!({"response": object("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    for p in pieces(state, tokens) {
        events.push(ev(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
        ));
    }
    events.push(ev(
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
    ));
    events.push(ev(
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
    ));
    events.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ));
    let last = if cut {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(ev(last, json!({ "response": done })));
    sse(events, state)
}
