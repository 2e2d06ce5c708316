//! Small writers shared by the translators: SSE events, chat chunks and the OpenAI `usage` object.

use serde_json::{Value, json};

use crate::usage::Usage;

/// Appends one named server-sent event: `event: NAME\ndata: JSON\n\n`.
pub fn push_named_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// Appends one unnamed event: `data: JSON\n\n` (the shape of Chat Completions streams).
pub fn push_data_event(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// Appends `data: [DONE]\n\n`.
pub fn push_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// The OpenAI `usage` object of a chat completion. `prompt_tokens_details.cache_write_tokens` is
/// written only when some prompt tokens were written to a cache (an Anthropic upstream reports
/// them; OpenAI's own API has no such field).
pub fn chat_usage_json(u: &Usage) -> Value {
    let mut details = json!({ "cached_tokens": u.cached_tokens() });
    if u.cache_write_tokens() > 0 {
        details["cache_write_tokens"] = json!(u.cache_write_tokens());
    }
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
        "prompt_tokens_details": details,
        "completion_tokens_details": { "reasoning_tokens": u.reasoning_tokens() },
    })
}

/// The Responses API `usage` object (`input_tokens_details.cache_write_tokens` only when some
/// prompt tokens were written to a cache).
pub fn responses_usage_json(u: &Usage) -> Value {
    let mut details = json!({ "cached_tokens": u.cached_tokens() });
    if u.cache_write_tokens() > 0 {
        details["cache_write_tokens"] = json!(u.cache_write_tokens());
    }
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": details,
        "output_tokens": u.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": u.reasoning_tokens() },
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// A string field of a JSON object, or `""`.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The JSON text of a value (arguments of tool calls travel as strings in OpenAI's APIs).
pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A chat stream chunk's JSON (`None` when the data is not JSON), its `usage` (when given)
/// stored in `usage`: the first step of every translator fed chat chunks.
fn chat_chunk(data: &[u8], usage: &mut Option<Usage>) -> Option<Value> {
    let chunk = serde_json::from_slice::<Value>(data).ok()?;
    if let Some(u) = chunk.get("usage").filter(|u| !u.is_null())
        && let Ok(u) = serde_json::from_value::<Usage>(u.clone())
    {
        *usage = Some(u);
    }
    Some(chunk)
}

/// What every translator fed chat chunks keeps: whether its opening events and its end have been
/// written, and the upstream's usage once a chunk carried it.
#[derive(Debug, Default)]
pub(crate) struct ChunkStream {
    started: bool,
    finished: bool,
    pub usage: Option<Usage>,
}

impl ChunkStream {
    /// True the first time only: the caller writes its opening events.
    pub fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.started, true)
    }

    /// True the first time only: the caller writes its last events.
    pub fn end(&mut self) -> bool {
        !std::mem::replace(&mut self.finished, true)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// One chunk's JSON ([`chat_chunk`], which keeps its usage), unless the stream has ended.
    pub fn chunk(&mut self, data: &[u8]) -> Option<Value> {
        let chunk = chat_chunk(data, &mut self.usage)?;
        (!self.finished).then_some(chunk)
    }
}

/// The choices of a chat chunk (none when it has no `choices` array).
pub(crate) fn choices(chunk: &Value) -> &[Value] {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A string field of a JSON object when it is there and not empty (the text or the arguments a
/// chunk's delta adds).
pub(crate) fn nonempty_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The parts of a plain chat completion the translators read.
#[derive(serde::Deserialize)]
pub(crate) struct ChatCompletion {
    #[serde(default)]
    pub choices: Vec<Value>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    /// Reads an upstream's chat completion body.
    pub fn read(body: &[u8]) -> Result<Self, crate::request::RequestError> {
        serde_json::from_slice(body).map_err(|e| {
            crate::request::RequestError::new(
                format!("The upstream's chat completion is not valid: {e}"),
                None,
            )
        })
    }
}
