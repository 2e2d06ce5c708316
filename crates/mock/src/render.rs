//! Wire rendering: byte-exact OpenAI JSON bodies and SSE events, written straight into
//! byte buffers (no intermediate `serde_json::Value`).

use bytes::Bytes;
use std::io::Write as _;

/// Which OpenAI API a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/chat/completions`.
    Chat,
    /// Legacy `/completions`.
    Text,
}

/// Token counts reported in a `usage` object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub reasoning: u64,
}

/// Appends a decimal integer.
pub(crate) fn push_u64(buf: &mut Vec<u8>, v: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{v}");
}

/// Appends the OpenAI `usage` object.
pub(crate) fn push_usage(buf: &mut Vec<u8>, u: &Usage) {
    buf.extend_from_slice(b"{\"prompt_tokens\":");
    push_u64(buf, u.prompt);
    buf.extend_from_slice(b",\"completion_tokens\":");
    push_u64(buf, u.completion);
    buf.extend_from_slice(b",\"total_tokens\":");
    push_u64(buf, u.prompt + u.completion);
    buf.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
    push_u64(buf, u.cached);
    buf.extend_from_slice(b"},\"completion_tokens_details\":{\"reasoning_tokens\":");
    push_u64(buf, u.reasoning);
    buf.extend_from_slice(b"}}");
}

/// Appends `"id":"<prefix><hex>","object":"<object>","created":N,"model":M` (no braces).
pub(crate) fn push_head(
    buf: &mut Vec<u8>,
    api: Api,
    stream: bool,
    seq: u64,
    created: u64,
    model_json: &str,
) {
    let (id_prefix, object) = match (api, stream) {
        (Api::Chat, false) => ("chatcmpl-mock", "chat.completion"),
        (Api::Chat, true) => ("chatcmpl-mock", "chat.completion.chunk"),
        (Api::Text, _) => ("cmpl-mock", "text_completion"),
    };
    let _ = write!(
        buf,
        "\"id\":\"{id_prefix}{seq:016x}\",\"object\":\"{object}\",\"created\":{created},\"model\":{model_json}"
    );
}

/// A complete non-streaming completion body.
pub(crate) fn plain_completion(
    api: Api,
    seq: u64,
    created: u64,
    model_json: &str,
    n: u32,
    content: &str,
    usage: Option<&Usage>,
) -> Bytes {
    let mut buf = Vec::with_capacity(256 + (content.len() + 96) * n as usize);
    buf.push(b'{');
    push_head(&mut buf, api, false, seq, created, model_json);
    buf.extend_from_slice(b",\"choices\":[");
    for i in 0..n {
        if i > 0 {
            buf.push(b',');
        }
        match api {
            Api::Chat => {
                buf.extend_from_slice(b"{\"index\":");
                push_u64(&mut buf, u64::from(i));
                buf.extend_from_slice(b",\"message\":{\"role\":\"assistant\",\"content\":\"");
                buf.extend_from_slice(content.as_bytes());
                buf.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":\"stop\"}");
            }
            Api::Text => {
                buf.extend_from_slice(b"{\"text\":\"");
                buf.extend_from_slice(content.as_bytes());
                buf.extend_from_slice(b"\",\"index\":");
                push_u64(&mut buf, u64::from(i));
                buf.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":\"stop\"}");
            }
        }
    }
    buf.push(b']');
    if let Some(u) = usage {
        buf.extend_from_slice(b",\"usage\":");
        push_usage(&mut buf, u);
    }
    buf.push(b'}');
    Bytes::from(buf)
}

/// An embeddings response: one 8-float vector per input.
pub(crate) fn embeddings(
    model_json: &str,
    inputs: u64,
    prompt_tokens: u64,
    with_usage: bool,
) -> Bytes {
    const VECTOR: &[u8] = b"[0.125,-0.25,0.375,-0.5,0.0625,0.75,-0.875,1.0]";
    let mut buf = Vec::with_capacity(128 + (VECTOR.len() + 48) * inputs as usize);
    buf.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for i in 0..inputs {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
        push_u64(&mut buf, i);
        buf.extend_from_slice(b",\"embedding\":");
        buf.extend_from_slice(VECTOR);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"],\"model\":");
    buf.extend_from_slice(model_json.as_bytes());
    if with_usage {
        buf.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
        push_u64(&mut buf, prompt_tokens);
        buf.extend_from_slice(b",\"total_tokens\":");
        push_u64(&mut buf, prompt_tokens);
        buf.push(b'}');
    }
    buf.push(b'}');
    Bytes::from(buf)
}

/// `GET /v1/models` body.
pub(crate) fn models(names: &[String], created: u64) -> Bytes {
    let mut buf = Vec::with_capacity(64 + names.len() * 96);
    buf.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut buf, name);
        buf.extend_from_slice(b",\"object\":\"model\",\"created\":");
        push_u64(&mut buf, created);
        buf.extend_from_slice(b",\"owned_by\":\"tollgate-mock\"}");
    }
    buf.extend_from_slice(b"]}");
    Bytes::from(buf)
}

/// The OpenAI error type and code for an HTTP status.
fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "null"),
        401 => ("invalid_request_error", "\"invalid_api_key\""),
        403 => ("permission_error", "null"),
        404 => ("invalid_request_error", "\"not_found\""),
        405 => ("invalid_request_error", "\"method_not_allowed\""),
        429 => ("requests", "\"rate_limit_exceeded\""),
        500..=599 => ("server_error", "null"),
        _ => ("invalid_request_error", "null"),
    }
}

/// An OpenAI error body: `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
pub(crate) fn error_body(status: u16, message: &str) -> Bytes {
    let (kind, code) = error_kind(status);
    let mut buf = Vec::with_capacity(128 + message.len());
    buf.extend_from_slice(b"{\"error\":{\"message\":");
    let _ = serde_json::to_writer(&mut buf, message);
    let _ = write!(
        buf,
        ",\"type\":\"{kind}\",\"param\":null,\"code\":{code}}}}}"
    );
    Bytes::from(buf)
}

/// The visible answer: `tokens` times `"tok "`.
pub(crate) fn content_of(tokens: u64) -> String {
    "tok ".repeat(usize::try_from(tokens).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_valid_openai_json() {
        let b = error_body(429, "slow \"down\"");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["message"], "slow \"down\"");
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn usage_totals_add_up() {
        let mut buf = Vec::new();
        push_usage(
            &mut buf,
            &Usage {
                prompt: 7,
                completion: 5,
                cached: 2,
                reasoning: 1,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["total_tokens"], 12);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(v["completion_tokens_details"]["reasoning_tokens"], 1);
    }
}
