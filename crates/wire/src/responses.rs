//! OpenAI's Responses API (`POST /v1/responses`): the request head, the translation of a request to
//! Chat Completions for providers that only speak chat, the Responses object built from a chat
//! completion, the typed event stream built from chat chunks, and usage from `response.completed`.
//!
//! Shapes follow OpenAI's API reference: a response is
//! `{"id":"resp_…","object":"response","created_at":…,"status":"completed"|"incomplete",
//! "output":[{"type":"message","id":"msg_…","status":"completed","role":"assistant",
//! "content":[{"type":"output_text","text":…,"annotations":[]}]}, {"type":"function_call",…}],
//! "usage":{"input_tokens","input_tokens_details":{"cached_tokens"},"output_tokens",
//! "output_tokens_details":{"reasoning_tokens"},"total_tokens"},…}`; a stream is a sequence of
//! `event: TYPE` / `data: {"type":TYPE,…,"sequence_number":N}` events from `response.created` to
//! `response.completed` (or `response.incomplete`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::out::{
    ChunkStream, choices, json_text, nonempty_str, push_named_event, responses_usage_json, str_of,
};
use crate::request::RequestError;
use crate::usage::Usage;

/// What the gateway reads of a Responses request before routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsesHead {
    pub model: Option<String>,
    pub stream: bool,
    /// `max_output_tokens`.
    pub max_tokens: Option<u64>,
    /// Bytes of `input` plus `instructions`: a cheap size estimate before tokenizing.
    pub prompt_bytes: usize,
    /// `previous_response_id`, which only a provider that stores responses can honour.
    pub previous_response_id: Option<String>,
}

fn type_error(param: &'static str, expected: &str) -> RequestError {
    RequestError::new(
        format!("Invalid type for '{param}': expected {expected}."),
        Some(param),
    )
}

/// Parses and checks a Responses request body (a JSON object with `model` and `input`).
pub fn parse_head(body: &[u8]) -> Result<(ResponsesHead, Value), RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(
            format!("We could not parse the JSON body of your request. Detail: {e}"),
            None,
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(RequestError::new(
            "The request body must be a JSON object.",
            None,
        ));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(type_error("model", "a string")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(type_error("stream", "a boolean")),
    };
    let max_tokens = match obj.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| type_error("max_output_tokens", "a non-negative integer"))?,
        ),
    };
    let mut prompt_bytes = 0;
    match obj.get("input") {
        None | Some(Value::Null) => {
            return Err(RequestError::new(
                "Missing required parameter: 'input'.",
                Some("input"),
            ));
        }
        Some(v @ (Value::String(_) | Value::Array(_))) => prompt_bytes += json_text(v).len(),
        Some(_) => return Err(type_error("input", "a string or an array of input items")),
    }
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => prompt_bytes += s.len(),
        Some(_) => return Err(type_error("instructions", "a string")),
    }
    let previous_response_id = match obj.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(type_error("previous_response_id", "a string")),
    };
    let head = ResponsesHead {
        model,
        stream,
        max_tokens,
        prompt_bytes,
        previous_response_id,
    };
    Ok((head, value))
}

fn unsupported(param: &'static str, what: &str) -> RequestError {
    RequestError::new(
        format!(
            "{what} is not supported for this model: its provider serves Chat Completions only."
        ),
        Some(param),
    )
}

/// Text of a content part list (`input_text`, `output_text`, `text`), or of a string.
fn parts_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    s.push_str(t);
                }
            }
            Some(s)
        }
        _ => None,
    }
}

/// Chat content parts of a Responses message's content.
fn chat_content(content: &Value) -> Result<Value, RequestError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match str_of(p, "type") {
                    "input_text" | "output_text" | "text" => {
                        out.push(json!({"type": "text", "text": str_of(p, "text")}));
                    }
                    "input_image" => {
                        let url = p
                            .get("image_url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| unsupported("input", "An image given by file_id"))?;
                        let mut image = json!({ "url": url });
                        if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                            image["detail"] = d.clone();
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    other => {
                        return Err(unsupported(
                            "input",
                            &format!("Input content of type '{other}'"),
                        ));
                    }
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(type_error(
            "input",
            "message content as a string or an array",
        )),
    }
}

/// Translates a Responses request (as parsed by [`parse_head`]) into a Chat Completions request
/// body for `model`. Streams ask for the usage chunk (`stream_options.include_usage`).
pub fn to_chat_request(request: &Value, model: &str) -> Result<Vec<u8>, RequestError> {
    let empty = Map::new();
    let obj = request.as_object().unwrap_or(&empty);
    if obj
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(unsupported("previous_response_id", "previous_response_id"));
    }
    let mut messages: Vec<Value> = Vec::new();
    if let Some(Value::String(s)) = obj.get("instructions") {
        messages.push(json!({"role": "system", "content": s}));
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                let kind = match item.get("type").and_then(Value::as_str) {
                    Some(k) => k,
                    None if item.get("role").is_some() => "message",
                    None => "",
                };
                match kind {
                    "message" => {
                        let role = match str_of(item, "role") {
                            r @ ("user" | "system" | "developer") => r,
                            "assistant" => "assistant",
                            other => {
                                return Err(RequestError::new(
                                    format!("Invalid value for 'input.role': '{other}'."),
                                    Some("input"),
                                ));
                            }
                        };
                        let content = item.get("content").unwrap_or(&Value::Null);
                        let content = if role == "assistant" {
                            Value::String(parts_text(content).unwrap_or_default())
                        } else {
                            chat_content(content)?
                        };
                        messages.push(json!({"role": role, "content": content}));
                    }
                    "function_call" => {
                        let call = json!({
                            "id": str_of(item, "call_id"),
                            "type": "function",
                            "function": {
                                "name": str_of(item, "name"),
                                "arguments": str_of(item, "arguments"),
                            }
                        });
                        // Consecutive calls belong to one assistant turn.
                        match messages.last_mut() {
                            Some(last)
                                if last["role"] == "assistant"
                                    && last.get("tool_calls").is_some() =>
                            {
                                if let Some(Value::Array(calls)) = last.get_mut("tool_calls") {
                                    calls.push(call);
                                }
                            }
                            _ => messages.push(json!({
                                "role": "assistant",
                                "content": null,
                                "tool_calls": [call],
                            })),
                        }
                    }
                    "function_call_output" => {
                        let output = match item.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => parts_text(v).unwrap_or_else(|| json_text(v)),
                            None => String::new(),
                        };
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": str_of(item, "call_id"),
                            "content": output,
                        }));
                    }
                    // Reasoning items carry no text the chat API could use.
                    "reasoning" => {}
                    other => {
                        return Err(unsupported("input", &format!("Input item '{other}'")));
                    }
                }
            }
        }
        _ => return Err(type_error("input", "a string or an array of input items")),
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages));
    for key in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "top_logprobs",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    ] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = obj.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), v.clone());
    }
    if let Some(Value::Array(tools)) = obj.get("tools") {
        let mut out = Vec::with_capacity(tools.len());
        for t in tools {
            if str_of(t, "type") != "function" {
                return Err(unsupported(
                    "tools",
                    &format!("The built-in tool '{}'", str_of(t, "type")),
                ));
            }
            let mut f = Map::new();
            for key in ["name", "description", "parameters", "strict"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    f.insert(key.into(), v.clone());
                }
            }
            out.push(json!({"type": "function", "function": f}));
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    match obj.get("tool_choice") {
        Some(Value::String(s)) => {
            chat.insert("tool_choice".into(), json!(s));
        }
        Some(v @ Value::Object(_)) if str_of(v, "type") == "function" => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": str_of(v, "name")}}),
            );
        }
        _ => {}
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")) {
        match str_of(format, "type") {
            "json_object" => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            "json_schema" => {
                let mut schema = Map::new();
                for key in ["name", "description", "schema", "strict"] {
                    if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            _ => {}
        }
    }
    if let Some(effort) = obj
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| !v.is_null())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(chat))
        .map_err(|e| RequestError::new(format!("Could not build the request: {e}"), None))
}

/// Which fields of the request a response echoes, and its identity.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// `resp_…`, made by the gateway.
    pub id: String,
    pub created_at: i64,
    /// The model name the client asked for.
    pub model: String,
    /// The client's request (fields such as `instructions`, `tools`, `temperature` are echoed).
    pub request: Value,
}

impl ResponseContext {
    fn item_id(&self, prefix: &str, i: usize) -> String {
        let tail = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        if i == 0 {
            format!("{prefix}_{tail}")
        } else {
            format!("{prefix}_{tail}_{i}")
        }
    }

    fn echo(&self, key: &str, default: Value) -> Value {
        self.request
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    }

    /// The response object with the given status, output and usage.
    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        finish: Option<&str>,
        usage: Option<&Usage>,
    ) -> Value {
        let incomplete = match (status, finish) {
            ("incomplete", Some("content_filter")) => json!({"reason": "content_filter"}),
            ("incomplete", _) => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.echo("instructions", Value::Null),
            "max_output_tokens": self.echo("max_output_tokens", Value::Null),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": self.echo("parallel_tool_calls", json!(true)),
            "previous_response_id": null,
            "reasoning": self.echo("reasoning", json!({"effort": null, "summary": null})),
            "service_tier": self.echo("service_tier", json!("default")),
            "store": false,
            "temperature": self.echo("temperature", json!(1.0)),
            "text": self.echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": self.echo("tool_choice", json!("auto")),
            "tools": self.echo("tools", json!([])),
            "top_p": self.echo("top_p", json!(1.0)),
            "truncation": "disabled",
            "usage": usage.map_or(Value::Null, responses_usage_json),
            "user": self.echo("user", Value::Null),
            "metadata": self.echo("metadata", json!({})),
        })
    }
}

/// The status of a response whose chat completion ended with `finish_reason`.
fn status_of(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length" | "content_filter") => "incomplete",
        _ => "completed",
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn function_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

/// Builds the Responses object from a plain chat completion body. Returns the object's JSON bytes
/// and the upstream's usage (None when it reported none).
pub fn from_chat_completion(
    body: &[u8],
    ctx: &ResponseContext,
) -> Result<(Vec<u8>, Option<Usage>), RequestError> {
    let c = crate::out::ChatCompletion::read(body)?;
    let mut output = Vec::new();
    let choice = c.choices.first().cloned().unwrap_or(Value::Null);
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let text = message
        .get("content")
        .and_then(parts_text)
        .unwrap_or_default();
    let refusal = message.get("refusal").and_then(Value::as_str);
    if let Some(refusal) = refusal.filter(|r| !r.is_empty()) {
        output.push(json!({
            "id": ctx.item_id("msg", 0),
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": refusal}],
        }));
    } else if !text.is_empty() || message.get("tool_calls").is_none() {
        output.push(message_item(&ctx.item_id("msg", 0), &text, "completed"));
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        for (i, call) in calls.iter().enumerate() {
            let f = call.get("function").unwrap_or(&Value::Null);
            output.push(function_item(
                &ctx.item_id("fc", i),
                str_of(call, "id"),
                str_of(f, "name"),
                str_of(f, "arguments"),
                "completed",
            ));
        }
    }
    let obj = ctx.object(status_of(finish), output, finish, c.usage.as_ref());
    Ok((serde_json::to_vec(&obj).unwrap_or_default(), c.usage))
}

/// One function call being streamed.
#[derive(Debug)]
struct OpenCall {
    output_index: usize,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Turns a Chat Completions stream (fed one chunk's `data` at a time) into the Responses API's
/// typed event stream.
#[derive(Debug)]
pub struct ChatToResponsesStream {
    ctx: ResponseContext,
    sequence: u64,
    stream: ChunkStream,
    /// Finished output items, in order.
    output: Vec<Value>,
    /// The text message being streamed: its output index, id and text so far.
    message: Option<(usize, String, String)>,
    /// Function calls by their chat `index`.
    calls: Vec<(u64, OpenCall)>,
    messages_made: usize,
    finish_reason: Option<String>,
}

impl ChatToResponsesStream {
    pub fn new(ctx: ResponseContext) -> Self {
        ChatToResponsesStream {
            ctx,
            sequence: 0,
            stream: ChunkStream::default(),
            output: Vec::new(),
            message: None,
            calls: Vec::new(),
            messages_made: 0,
            finish_reason: None,
        }
    }

    /// The upstream's usage, once its usage chunk has arrived.
    pub fn usage(&self) -> Option<Usage> {
        self.stream.usage
    }

    /// Whether `response.completed` (or `response.incomplete`) has been written.
    pub fn is_finished(&self) -> bool {
        self.stream.is_finished()
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        push_named_event(out, kind, &data);
    }

    fn next_index(&self) -> usize {
        self.output.len() + usize::from(self.message.is_some()) + self.calls.len()
    }

    /// Writes `response.created` and `response.in_progress` (once).
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.stream.begin() {
            return;
        }
        let response = self.ctx.object("in_progress", Vec::new(), None, None);
        self.emit(out, "response.created", json!({ "response": response }));
        let response = self.ctx.object("in_progress", Vec::new(), None, None);
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn open_message(&mut self, out: &mut Vec<u8>) {
        if self.message.is_some() {
            return;
        }
        let index = self.next_index();
        let id = self.ctx.item_id("msg", self.messages_made);
        self.messages_made += 1;
        let mut item = message_item(&id, "", "in_progress");
        item["content"] = json!([]);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.emit(
            out,
            "response.content_part.added",
            json!({
                "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            }),
        );
        self.message = Some((index, id, String::new()));
    }

    fn close_message(&mut self, out: &mut Vec<u8>) {
        let Some((index, id, text)) = self.message.take() else {
            return;
        };
        self.emit(
            out,
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            out,
            "response.content_part.done",
            json!({
                "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []},
            }),
        );
        let item = message_item(&id, &text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        );
        self.output.push(item);
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        for (_, call) in std::mem::take(&mut self.calls) {
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({
                    "item_id": call.item_id, "output_index": call.output_index,
                    "name": call.name, "arguments": call.arguments,
                }),
            );
            let item = function_item(
                &call.item_id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item.clone()}),
            );
            self.output.push(item);
        }
    }

    /// Feeds one chat chunk's `data` (not `[DONE]`); appends the client's events to `out`.
    /// Data that is not a chat chunk is ignored.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.start(out);
        let Some(chunk) = self.stream.chunk(data) else {
            return;
        };
        let Some(choice) = choices(&chunk)
            .iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = nonempty_str(delta, "content") {
            if !self.calls.is_empty() {
                self.close_calls(out);
            }
            self.open_message(out);
            if let Some((index, id, acc)) = self.message.as_mut() {
                acc.push_str(text);
                let (index, id) = (*index, id.clone());
                self.emit(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
                );
            }
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for call in calls {
                let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let f = call.get("function").unwrap_or(&Value::Null);
                if !self.calls.iter().any(|(i, _)| *i == chat_index) {
                    self.close_message(out);
                    let output_index = self.next_index();
                    let item_id = self.ctx.item_id("fc", output_index);
                    let call_id = str_of(call, "id").to_owned();
                    let name = str_of(f, "name").to_owned();
                    let item = function_item(&item_id, &call_id, &name, "", "in_progress");
                    self.emit(
                        out,
                        "response.output_item.added",
                        json!({"output_index": output_index, "item": item}),
                    );
                    self.calls.push((
                        chat_index,
                        OpenCall {
                            output_index,
                            item_id,
                            call_id,
                            name,
                            arguments: String::new(),
                        },
                    ));
                }
                if let Some(args) = nonempty_str(f, "arguments")
                    && let Some((_, open)) = self.calls.iter_mut().find(|(i, _)| *i == chat_index)
                {
                    open.arguments.push_str(args);
                    let (item_id, output_index) = (open.item_id.clone(), open.output_index);
                    self.emit(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": output_index, "delta": args}),
                    );
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            self.close_message(out);
            self.close_calls(out);
        }
    }

    /// The upstream stream broke before its end: writes `response.failed` with the output so far
    /// and the error (once, unless the response already finished).
    pub fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.start(out);
        if !self.stream.end() {
            return;
        }
        let mut response = self.ctx.object(
            "failed",
            self.output.clone(),
            None,
            self.stream.usage.as_ref(),
        );
        response["error"] = json!({"code": "server_error", "message": message});
        self.emit(out, "response.failed", json!({ "response": response }));
    }

    /// At the end of the upstream stream (`[DONE]` or end of body): closes open items and writes
    /// `response.completed` (or `response.incomplete` when the output was cut at its limit), with
    /// the upstream's usage.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        if !self.stream.end() {
            return;
        }
        self.close_message(out);
        self.close_calls(out);
        if self.output.is_empty() {
            // A response always has its message, even an empty one.
            self.open_message(out);
            self.close_message(out);
        }
        let finish = self.finish_reason.clone();
        let status = status_of(finish.as_deref());
        let response = self.ctx.object(
            status,
            self.output.clone(),
            finish.as_deref(),
            self.stream.usage.as_ref(),
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({ "response": response }));
    }
}

/// The `usage` of a Responses object (a plain `/responses` body or a stored response), as OpenAI
/// chat usage: `input_tokens` → prompt, `input_tokens_details.cached_tokens` → cached,
/// `output_tokens` → completion, `output_tokens_details.reasoning_tokens` → reasoning.
pub fn usage_of_object(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Obj {
        #[serde(default)]
        usage: Option<ResponsesUsage>,
    }
    serde_json::from_slice::<Obj>(body)
        .ok()?
        .usage
        .map(|u| u.to_usage())
}

/// The usage carried by one stream event: `response.completed`, `response.incomplete` and
/// `response.failed` carry the final response with its usage; other events carry none.
pub fn usage_of_event(data: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        response: Option<Obj>,
    }
    #[derive(Deserialize)]
    struct Obj {
        #[serde(default)]
        usage: Option<ResponsesUsage>,
    }
    let e: Event = serde_json::from_slice(data).ok()?;
    match e.kind.as_str() {
        "response.completed" | "response.incomplete" | "response.failed" => {
            e.response?.usage.map(|u| u.to_usage())
        }
        _ => None,
    }
}

/// The text of a Responses object's output messages.
pub fn output_text_of_object(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let mut s = String::new();
    for item in v
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for part in item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if str_of(part, "type") == "output_text" {
                s.push_str(str_of(part, "text"));
            }
        }
    }
    s
}

/// The text delta of a `response.output_text.delta` event.
pub fn text_of_event(data: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(data).ok()?;
    (str_of(&v, "type") == "response.output_text.delta").then(|| str_of(&v, "delta").to_owned())
}

/// The Responses API's usage object.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl ResponsesUsage {
    fn to_usage(self) -> Usage {
        let cached = self
            .input_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        let written = self
            .input_tokens_details
            .and_then(|d| d.cache_write_tokens)
            .unwrap_or(0);
        let reasoning = self
            .output_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0);
        let written = written.min(self.input_tokens.saturating_sub(cached));
        Usage::new(
            self.input_tokens,
            cached,
            written,
            self.output_tokens,
            reasoning,
        )
    }
}
