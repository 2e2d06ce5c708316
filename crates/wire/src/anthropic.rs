//! Anthropic's Messages API (`POST /v1/messages`): the request head, translations to and from Chat
//! Completions (requests, plain responses and streams, both ways), usage in both conventions, and
//! Anthropic's error body.
//!
//! Shapes follow Anthropic's API reference. A message is `{"id":"msg_…","type":"message",
//! "role":"assistant","model":…,"content":[{"type":"text","text":…}|{"type":"tool_use","id","name",
//! "input"}],"stop_reason":"end_turn"|"max_tokens"|"stop_sequence"|"tool_use"|…,"stop_sequence":…,
//! "usage":{"input_tokens","cache_creation_input_tokens","cache_read_input_tokens","output_tokens"}}`.
//! A stream is `message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta` (stop reason and cumulative usage), `message_stop`.
//!
//! Usage mapping. Anthropic's `input_tokens` counts only the prompt tokens that were neither read
//! from nor written to the cache; OpenAI's `prompt_tokens` counts every prompt token. So
//! `prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`,
//! `cached_tokens = cache_read_input_tokens`, the cache writes travel as
//! `prompt_tokens_details.cache_write_tokens`, and `completion_tokens = output_tokens`; the reverse
//! subtracts them again.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::out::{
    ChunkStream, chat_usage_json, choices, json_text, nonempty_str, push_data_event, push_done,
    push_named_event, str_of,
};
use crate::request::RequestError;
use crate::usage::Usage;

/// The `anthropic-version` header sent when the provider sets none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// `max_tokens` sent to an Anthropic upstream when a chat request gives none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic's usage object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl AnthropicUsage {
    /// In OpenAI's convention (see the module docs).
    pub fn to_usage(self) -> Usage {
        let prompt = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens);
        Usage::new(
            prompt,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.output_tokens,
            0,
        )
    }

    /// From OpenAI's convention (see the module docs).
    pub fn from_usage(u: &Usage) -> AnthropicUsage {
        let cached = u.cached_tokens();
        let written = u.cache_write_tokens();
        AnthropicUsage {
            input_tokens: u.prompt_tokens - cached - written,
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: written,
            cache_read_input_tokens: cached,
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        })
    }
}

/// Chat `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason_of(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` → chat `finish_reason`.
pub fn finish_reason_of(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// What the gateway reads of a Messages request before routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesHead {
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// Bytes of `messages` plus `system`: a cheap size estimate before tokenizing.
    pub prompt_bytes: usize,
}

fn invalid(message: impl Into<String>, param: &'static str) -> RequestError {
    RequestError::new(message, Some(param))
}

/// Parses and checks a Messages request (`count_tokens` requests need no `max_tokens`).
pub fn parse_head(body: &[u8], count_tokens: bool) -> Result<(MessagesHead, Value), RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::new(format!("The request body is not valid JSON: {e}"), None))?;
    let Some(obj) = value.as_object() else {
        return Err(RequestError::new(
            "The request body must be a JSON object.",
            None,
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(invalid("model: Field required", "model")),
        Some(_) => return Err(invalid("model: Input should be a valid string", "model")),
    };
    let max_tokens =
        match obj.get("max_tokens") {
            None | Some(Value::Null) if count_tokens => None,
            None | Some(Value::Null) => {
                return Err(invalid("max_tokens: Field required", "max_tokens"));
            }
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid("max_tokens: Input should be a valid integer", "max_tokens")
            })?),
        };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean", "stream")),
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(invalid(
            "messages: Field required (a list of messages)",
            "messages",
        ));
    };
    for (i, m) in messages.iter().enumerate() {
        match str_of(m, "role") {
            "user" | "assistant" => {}
            other => {
                return Err(invalid(
                    format!(
                        "messages.{i}.role: Input should be 'user' or 'assistant', not '{other}'"
                    ),
                    "messages",
                ));
            }
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => {
                return Err(invalid(
                    format!(
                        "messages.{i}.content: Input should be a string or a list of content blocks"
                    ),
                    "messages",
                ));
            }
        }
    }
    let mut prompt_bytes = json_text(&obj["messages"]).len();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(v @ (Value::String(_) | Value::Array(_))) => prompt_bytes += json_text(v).len(),
        Some(_) => {
            return Err(invalid(
                "system: Input should be a string or a list of text blocks",
                "system",
            ));
        }
    }
    Ok((
        MessagesHead {
            model,
            stream,
            max_tokens,
            prompt_bytes,
        },
        value,
    ))
}

/// The text of a `system` field or of a content list's text blocks.
fn blocks_text(v: &Value, sep: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| str_of(b, "type") == "text")
            .map(|b| str_of(b, "text"))
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

fn unsupported(param: &'static str, what: &str) -> RequestError {
    RequestError::new(
        format!("{what} cannot be sent to this model: its provider serves Chat Completions only."),
        Some(param),
    )
}

/// Translates a Messages request (as parsed by [`parse_head`]) into a Chat Completions request for
/// `model`. Streams ask for the usage chunk.
pub fn to_chat_request(request: &Value, model: &str) -> Result<Vec<u8>, RequestError> {
    let empty = Map::new();
    let obj = request.as_object().unwrap_or(&empty);
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = obj.get("system").filter(|v| !v.is_null()) {
        messages.push(json!({"role": "system", "content": blocks_text(system, "\n")}));
    }
    for m in obj
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = str_of(m, "role");
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks = match content {
            Value::String(s) => {
                messages.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => continue,
        };
        if role == "assistant" {
            let mut text = String::new();
            let mut calls = Vec::new();
            for b in blocks {
                match str_of(b, "type") {
                    "text" => text.push_str(str_of(b, "text")),
                    "tool_use" | "server_tool_use" => calls.push(json!({
                        "id": str_of(b, "id"),
                        "type": "function",
                        "function": {
                            "name": str_of(b, "name"),
                            "arguments": json_text(b.get("input").unwrap_or(&json!({}))),
                        }
                    })),
                    // Thinking blocks are the upstream's; a chat provider cannot use them.
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(unsupported("messages", &format!("A '{other}' block")));
                    }
                }
            }
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
            continue;
        }
        // A user turn: tool results become tool messages (first), the rest one user message.
        let mut parts = Vec::new();
        for b in blocks {
            match str_of(b, "type") {
                "text" => parts.push(json!({"type": "text", "text": str_of(b, "text")})),
                "image" => {
                    let source = b.get("source").unwrap_or(&Value::Null);
                    let url = match str_of(source, "type") {
                        "base64" => format!(
                            "data:{};base64,{}",
                            str_of(source, "media_type"),
                            str_of(source, "data")
                        ),
                        "url" => str_of(source, "url").to_owned(),
                        _ => return Err(unsupported("messages", "An image of this source type")),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                "tool_result" => {
                    let text = b
                        .get("content")
                        .map_or_else(String::new, |c| blocks_text(c, "\n"));
                    messages.push(json!({
                        "role": "tool",
                        "tool_call_id": str_of(b, "tool_use_id"),
                        "content": text,
                    }));
                }
                other => return Err(unsupported("messages", &format!("A '{other}' block"))),
            }
        }
        if !parts.is_empty() {
            let all_text = parts.iter().all(|p| p["type"] == "text");
            let content = if all_text {
                json!(parts.iter().map(|p| str_of(p, "text")).collect::<String>())
            } else {
                Value::Array(parts)
            };
            messages.push(json!({"role": "user", "content": content}));
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(v) = obj.get("max_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), v.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Array(stops)) = obj.get("stop_sequences")
        && !stops.is_empty()
    {
        chat.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(user) = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.insert("user".into(), json!(user));
    }
    if let Some(Value::Array(tools)) = obj.get("tools") {
        let mut out = Vec::new();
        for t in tools {
            if t.get("input_schema").is_none() {
                return Err(unsupported(
                    "tools",
                    &format!("The server tool '{}'", str_of(t, "name")),
                ));
            }
            let mut f = json!({"name": str_of(t, "name"), "parameters": t["input_schema"]});
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f["description"] = json!(d);
            }
            out.push(json!({"type": "function", "function": f}));
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| v.is_object()) {
        let mapped = match str_of(choice, "type") {
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => json!({"type": "function", "function": {"name": str_of(choice, "name")}}),
            _ => json!("auto"),
        };
        chat.insert("tool_choice".into(), mapped);
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(chat))
        .map_err(|e| RequestError::new(format!("Could not build the request: {e}"), None))
}

/// An image part of a chat message as an Anthropic image block.
fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// Anthropic content blocks of a chat message's content (a string or content parts).
fn content_blocks(content: &Value) -> Result<Vec<Value>, RequestError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match str_of(p, "type") {
                    "text" => out.push(json!({"type": "text", "text": str_of(p, "text")})),
                    "image_url" => {
                        let url = p
                            .get("image_url")
                            .map(|i| str_of(i, "url"))
                            .unwrap_or_default();
                        out.push(image_block(url));
                    }
                    other => {
                        return Err(RequestError::new(
                            format!(
                                "Content parts of type '{other}' cannot be sent to an Anthropic model."
                            ),
                            Some("messages"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(RequestError::new(
            "Invalid type for 'messages.content'.",
            Some("messages"),
        )),
    }
}

/// Translates a Chat Completions request body into a Messages request for `model` (an `anthropic`
/// upstream). System and developer messages become `system`; tool results become `tool_result`
/// blocks of a user turn; `stop` becomes `stop_sequences`.
pub fn from_chat_request(body: &[u8], model: &str) -> Result<Vec<u8>, RequestError> {
    let chat: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::new(format!("The request body is not valid JSON: {e}"), None))?;
    let empty = Map::new();
    let obj = chat.as_object().unwrap_or(&empty);
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(invalid(
            "Anthropic models return one choice: n must be 1.",
            "n",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in obj
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let content = m.get("content").unwrap_or(&Value::Null);
        match str_of(m, "role") {
            "system" | "developer" => system.push(blocks_text(content, "\n")),
            "user" => {
                let blocks = content_blocks(content)?;
                match content {
                    Value::String(s) => messages.push(json!({"role": "user", "content": s})),
                    _ => messages.push(json!({"role": "user", "content": blocks})),
                }
            }
            "assistant" => {
                let mut blocks = content_blocks(content)?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let input: Value = serde_json::from_str(str_of(f, "arguments"))
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": str_of(call, "id"),
                        "name": str_of(f, "name"),
                        "input": input,
                    }));
                }
                match content {
                    Value::String(s) if m.get("tool_calls").is_none() => {
                        messages.push(json!({"role": "assistant", "content": s}));
                    }
                    _ => messages.push(json!({"role": "assistant", "content": blocks})),
                }
            }
            "tool" => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": str_of(m, "tool_call_id"),
                    "content": blocks_text(content, "\n"),
                });
                // Consecutive tool results answer one assistant turn: one user turn holds them.
                match messages.last_mut() {
                    Some(last)
                        if last["role"] == "user"
                            && last["content"]
                                .as_array()
                                .is_some_and(|b| b.iter().all(|b| b["type"] == "tool_result")) =>
                    {
                        if let Some(Value::Array(b)) = last.get_mut("content") {
                            b.push(result);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [result]})),
                }
            }
            other => {
                return Err(invalid(
                    format!("Messages with role '{other}' cannot be sent to an Anthropic model."),
                    "messages",
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let max = obj
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| obj.get("max_tokens").and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(v) = obj.get("top_p").filter(|v| !v.is_null()) {
        out.insert("top_p".into(), v.clone());
    }
    match obj.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(Value::Array(tools)) = obj.get("tools") {
        let mut list = Vec::new();
        for t in tools {
            let f = t.get("function").unwrap_or(&Value::Null);
            let mut tool = json!({
                "name": str_of(f, "name"),
                "input_schema": f.get("parameters").filter(|p| p.is_object()).cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                tool["description"] = json!(d);
            }
            list.push(tool);
        }
        if !list.is_empty() {
            out.insert("tools".into(), Value::Array(list));
        }
    }
    let mut choice = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(v @ Value::Object(_)) => {
            let name = v
                .get("function")
                .map(|f| str_of(f, "name"))
                .unwrap_or_default();
            Some(json!({"type": "tool", "name": name}))
        }
        _ => None,
    };
    if obj.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false)
        && out.contains_key("tools")
    {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| RequestError::new(format!("Could not build the request: {e}"), None))
}

/// Identity of a message the gateway builds from a chat completion.
#[derive(Debug, Clone)]
pub struct MessageContext {
    /// `msg_…`, made by the gateway.
    pub id: String,
    /// The model the client asked for.
    pub model: String,
    /// The request's `stop_sequences`, to tell a stop sequence from a natural end where the
    /// upstream says which stop string matched.
    pub stop_sequences: Vec<String>,
    /// The usage to announce in `message_start` before the upstream reports its own (the
    /// gateway's count of the prompt); the final usage is in `message_delta`.
    pub start_usage: Option<Usage>,
}

impl MessageContext {
    /// The stop reason and stop sequence of a chat choice.
    fn stop(&self, choice: &Value) -> (Value, Value) {
        let finish = choice.get("finish_reason").and_then(Value::as_str);
        // vLLM-style servers say which stop string matched in `stop_reason`.
        if finish == Some("stop")
            && let Some(seq) = choice.get("stop_reason").and_then(Value::as_str)
            && self.stop_sequences.iter().any(|s| s == seq)
        {
            return (json!("stop_sequence"), json!(seq));
        }
        (
            finish.map_or(json!("end_turn"), |f| json!(stop_reason_of(f))),
            Value::Null,
        )
    }
}

/// Builds a Message from a plain chat completion body. Returns its JSON bytes and the upstream's
/// usage (None when it reported none; the message then says zero).
pub fn from_chat_completion(
    body: &[u8],
    ctx: &MessageContext,
) -> Result<(Vec<u8>, Option<Usage>), RequestError> {
    let c = crate::out::ChatCompletion::read(body)?;
    let choice = c.choices.first().cloned().unwrap_or(Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = message
        .get("content")
        .map_or_else(String::new, |c| blocks_text(c, ""));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function").unwrap_or(&Value::Null);
        let input: Value =
            serde_json::from_str(str_of(f, "arguments")).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": str_of(call, "id"), "name": str_of(f, "name"), "input": input}));
    }
    let (stop_reason, stop_sequence) = ctx.stop(&choice);
    let usage = c
        .usage
        .map(|u| AnthropicUsage::from_usage(&u))
        .unwrap_or_default();
    let obj = json!({
        "id": ctx.id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage.to_json(),
    });
    Ok((serde_json::to_vec(&obj).unwrap_or_default(), c.usage))
}

/// Identity of a chat completion the gateway builds from an Anthropic message.
#[derive(Debug, Clone)]
pub struct ChatContext {
    /// `chatcmpl-…`, made by the gateway.
    pub id: String,
    pub created: i64,
    /// The model the client asked for.
    pub model: String,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// The usage of a plain Message body, in OpenAI's convention.
pub fn usage_of_message(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    }
    Some(serde_json::from_slice::<Msg>(body).ok()?.usage?.to_usage())
}

/// The text of a plain Message body's text blocks.
pub fn text_of_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("content").map(|c| blocks_text(c, "")))
        .unwrap_or_default()
}

/// Builds a chat completion from a plain Message body (an `anthropic` upstream's answer to a chat
/// client). Returns its JSON bytes and the upstream's usage in OpenAI's convention.
pub fn to_chat_completion(
    body: &[u8],
    ctx: &ChatContext,
) -> Result<(Vec<u8>, Option<Usage>), RequestError> {
    let msg: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(format!("The upstream's message is not valid: {e}"), None)
    })?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in msg
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_of(b, "type") {
            "text" => text.push_str(str_of(b, "text")),
            "tool_use" => calls.push(json!({
                "id": str_of(b, "id"),
                "type": "function",
                "function": {"name": str_of(b, "name"), "arguments": json_text(b.get("input").unwrap_or(&json!({})))},
            })),
            _ => {}
        }
    }
    let usage = usage_of_message(body);
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = finish_reason_of(str_of(&msg, "stop_reason"));
    let mut obj = json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        obj["usage"] = chat_usage_json(u);
    }
    Ok((serde_json::to_vec(&obj).unwrap_or_default(), usage))
}

/// Accumulates the usage of an Anthropic event stream: `message_start.message.usage`, then every
/// field present in `message_delta.usage` (cumulative counts) replaces the one before.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamUsage {
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize, Default)]
struct PartialUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl StreamUsage {
    /// Reads one event's data (any event; only `message_start` and `message_delta` count).
    pub fn observe(&mut self, data: &[u8]) {
        #[derive(Deserialize)]
        struct Event {
            #[serde(default, rename = "type")]
            kind: String,
            #[serde(default)]
            message: Option<Msg>,
            #[serde(default)]
            usage: Option<PartialUsage>,
        }
        #[derive(Deserialize)]
        struct Msg {
            #[serde(default)]
            usage: Option<PartialUsage>,
        }
        let Ok(e) = serde_json::from_slice::<Event>(data) else {
            return;
        };
        let partial = match e.kind.as_str() {
            "message_start" => e.message.and_then(|m| m.usage),
            "message_delta" => e.usage,
            _ => None,
        };
        self.apply(partial);
    }

    fn apply(&mut self, partial: Option<PartialUsage>) {
        let Some(p) = partial else { return };
        let u = self.usage.get_or_insert_with(AnthropicUsage::default);
        if let Some(v) = p.input_tokens {
            u.input_tokens = v;
        }
        if let Some(v) = p.output_tokens {
            u.output_tokens = v;
        }
        if let Some(v) = p.cache_creation_input_tokens {
            u.cache_creation_input_tokens = v;
        }
        if let Some(v) = p.cache_read_input_tokens {
            u.cache_read_input_tokens = v;
        }
    }

    /// Anthropic's counts so far.
    pub fn anthropic(&self) -> Option<AnthropicUsage> {
        self.usage
    }

    /// The counts so far in OpenAI's convention.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthropicUsage::to_usage)
    }
}

/// The text of a `content_block_delta` event's `text_delta`.
pub fn text_of_event(data: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let d = v.get("delta")?;
    (str_of(&v, "type") == "content_block_delta" && str_of(d, "type") == "text_delta")
        .then(|| str_of(d, "text").to_owned())
}

/// The kind of content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call: its chat `index`.
    Tool(u64),
}

/// Turns a Chat Completions stream (fed one chunk's `data` at a time) into Anthropic's events.
#[derive(Debug)]
pub struct ChatToMessagesStream {
    ctx: MessageContext,
    stream: ChunkStream,
    /// The open block and its index.
    block: Option<(usize, Block)>,
    next_block: usize,
    /// Stop reason and stop sequence, once the upstream's finish chunk arrived.
    stop: Option<(Value, Value)>,
}

impl ChatToMessagesStream {
    pub fn new(ctx: MessageContext) -> Self {
        ChatToMessagesStream {
            ctx,
            stream: ChunkStream::default(),
            block: None,
            next_block: 0,
            stop: None,
        }
    }

    /// The upstream's usage, once its usage chunk has arrived.
    pub fn usage(&self) -> Option<Usage> {
        self.stream.usage
    }

    /// Whether `message_stop` has been written.
    pub fn is_finished(&self) -> bool {
        self.stream.is_finished()
    }

    /// Writes `message_start` and a `ping` (once).
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.stream.begin() {
            return;
        }
        let usage = self
            .ctx
            .start_usage
            .map(|u| {
                let mut a = AnthropicUsage::from_usage(&u);
                a.output_tokens = 0;
                a
            })
            .unwrap_or_default();
        push_named_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.ctx.id, "type": "message", "role": "assistant", "model": self.ctx.model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage.to_json(),
            }}),
        );
        push_named_event(out, "ping", &json!({"type": "ping"}));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.block.take() {
            push_named_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, kind: Block, start: Value) -> usize {
        if let Some((index, open)) = self.block
            && open == kind
        {
            return index;
        }
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        push_named_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        self.block = Some((index, kind));
        index
    }

    /// Feeds one chat chunk's `data` (not `[DONE]`); appends the client's events to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.start(out);
        let Some(chunk) = self.stream.chunk(data) else {
            return;
        };
        let Some(choice) = choices(&chunk).first() else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = nonempty_str(delta, "content") {
            let index = self.open_block(out, Block::Text, json!({"type": "text", "text": ""}));
            push_named_event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = call.get("function").unwrap_or(&Value::Null);
            let start = json!({"type": "tool_use", "id": str_of(call, "id"), "name": str_of(f, "name"), "input": {}});
            let index = self.open_block(out, Block::Tool(chat_index), start);
            if let Some(args) = nonempty_str(f, "arguments") {
                push_named_event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
            self.stop = Some(self.ctx.stop(choice));
            self.close_block(out);
        }
    }

    /// The upstream stream broke before its end: writes Anthropic's `error` event (once, unless the
    /// message already finished).
    pub fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.start(out);
        if !self.stream.end() {
            return;
        }
        push_named_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
    }

    /// At the end of the upstream stream: closes the open block and writes `message_delta` (stop
    /// reason and the upstream's usage, all four counts) and `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        if !self.stream.end() {
            return;
        }
        self.close_block(out);
        let (stop_reason, stop_sequence) = self
            .stop
            .clone()
            .unwrap_or((json!("end_turn"), Value::Null));
        let usage = self
            .stream
            .usage
            .or(self.ctx.start_usage)
            .map(|u| AnthropicUsage::from_usage(&u))
            .unwrap_or_default();
        push_named_event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage.to_json()}),
        );
        push_named_event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

/// Turns an Anthropic event stream (fed one event's `data` at a time) into Chat Completions
/// chunks, ending with the usage chunk (when the client asked for it) and `[DONE]`.
#[derive(Debug)]
pub struct MessagesToChatStream {
    ctx: ChatContext,
    usage: StreamUsage,
    finished: bool,
    /// Anthropic block index → chat tool call index.
    tools: Vec<(u64, u64)>,
    finish_reason: Option<&'static str>,
}

impl MessagesToChatStream {
    pub fn new(ctx: ChatContext) -> Self {
        MessagesToChatStream {
            ctx,
            usage: StreamUsage::default(),
            finished: false,
            tools: Vec::new(),
            finish_reason: None,
        }
    }

    /// The upstream's usage so far, in OpenAI's convention.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    /// Whether `[DONE]` has been written.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let mut c = json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.ctx.include_usage {
            c["usage"] = Value::Null;
        }
        push_data_event(out, &c);
    }

    /// Feeds one Anthropic event's `data`; appends chat chunks to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.usage.observe(data);
        if self.finished {
            return;
        }
        let Ok(e) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match str_of(&e, "type") {
            "message_start" => {
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let block = e.get("content_block").unwrap_or(&Value::Null);
                let index = e.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_of(block, "type") {
                    "tool_use" => {
                        let tool_index = self.tools.len() as u64;
                        self.tools.push((index, tool_index));
                        self.chunk(
                            out,
                            json!({"tool_calls": [{"index": tool_index, "id": str_of(block, "id"), "type": "function",
                                "function": {"name": str_of(block, "name"), "arguments": ""}}]}),
                            None,
                        );
                    }
                    "text" if !str_of(block, "text").is_empty() => {
                        self.chunk(out, json!({"content": str_of(block, "text")}), None);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = e.get("delta").unwrap_or(&Value::Null);
                let index = e.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_of(d, "type") {
                    "text_delta" => self.chunk(out, json!({"content": str_of(d, "text")}), None),
                    "input_json_delta" => {
                        if let Some((_, tool_index)) = self.tools.iter().find(|(b, _)| *b == index)
                        {
                            self.chunk(
                                out,
                                json!({"tool_calls": [{"index": tool_index, "function": {"arguments": str_of(d, "partial_json")}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = e
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    let finish = finish_reason_of(reason);
                    self.finish_reason = Some(finish);
                    self.chunk(out, json!({}), Some(finish));
                }
            }
            "message_stop" => self.finish(out),
            "error" => {
                let err = e.get("error").unwrap_or(&Value::Null);
                push_data_event(
                    out,
                    &json!({"error": {"message": str_of(err, "message"), "type": openai_error_type(str_of(err, "type")), "param": null, "code": null}}),
                );
                self.finish(out);
            }
            _ => {}
        }
    }

    /// At the end of the upstream stream: the usage chunk (when asked for) and `[DONE]`, once.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.ctx.include_usage
            && let Some(u) = self.usage.usage()
        {
            push_data_event(
                out,
                &json!({
                    "id": self.ctx.id, "object": "chat.completion.chunk", "created": self.ctx.created,
                    "model": self.ctx.model, "choices": [], "usage": chat_usage_json(&u),
                }),
            );
        }
        push_done(out);
    }
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// OpenAI's error type for an Anthropic error type.
fn openai_error_type(anthropic: &str) -> &'static str {
    match anthropic {
        "authentication_error"
        | "invalid_request_error"
        | "not_found_error"
        | "request_too_large" => "invalid_request_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// Anthropic's error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap_or_default()
}

/// Anthropic's error body for an OpenAI-shaped error (`{"error":{"message","type","code"}}`) with
/// `status`: the type follows the status, and OpenAI's `code` (Tollgate's `account_under_review`,
/// `insufficient_quota`, …) leads the message. A body that is not OpenAI-shaped is carried as text.
pub fn error_from_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&Value::Null);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned);
    let message = match err.get("code").and_then(Value::as_str) {
        Some(code) => format!("{code}: {message}"),
        None => message,
    };
    error_body(error_type(status), &message)
}

/// OpenAI's error body for an Anthropic error body from an `anthropic` upstream (for chat clients).
pub fn openai_error_from(status: u16, body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&Value::Null);
    let kind = err
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_else(|| error_type(status));
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned);
    serde_json::to_vec(&json!({"error": {"message": message, "type": openai_error_type(kind), "param": null, "code": kind}}))
        .unwrap_or_default()
}

/// The body of a `count_tokens` answer.
pub fn count_tokens_body(input_tokens: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({ "input_tokens": input_tokens })).unwrap_or_default()
}
