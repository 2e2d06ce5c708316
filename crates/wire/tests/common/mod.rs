//! Helpers shared by the translator tests.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use tollgate_wire::SseSplitter;

/// A chat stream chunk with one choice: `delta` and `finish_reason`.
pub fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
    )
    .unwrap()
}

/// The first chunks of a streamed chat answer: the assistant's role, then one chunk per piece of
/// text.
pub fn text_chunks(pieces: &[&str]) -> Vec<Vec<u8>> {
    let role = chunk(json!({"role": "assistant", "content": ""}), None);
    let text = pieces.iter().map(|p| chunk(json!({ "content": p }), None));
    std::iter::once(role).chain(text).collect()
}

/// A chat stream chunk adding `arguments` to the tool call at `index`; the call's first chunk
/// also names it: `start` is its (id, function name).
pub fn tool_chunk(index: u64, start: Option<(&str, &str)>, arguments: &str) -> Vec<u8> {
    let call = match start {
        Some((id, name)) => {
            json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        }
        None => json!({"index": index, "function": {"arguments": arguments}}),
    };
    chunk(json!({ "tool_calls": [call] }), None)
}

/// SSE bytes as (event name or "", data) pairs: a named event's data has that `type`, and
/// `[DONE]` stands as the JSON string "[DONE]". The bytes end on an event boundary.
pub fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut s = SseSplitter::new();
    s.push(bytes);
    let mut out = Vec::new();
    while let Some(e) = s.next_event() {
        let raw = String::from_utf8(e.raw.to_vec()).unwrap();
        let name = raw
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("")
            .to_owned();
        let data = e.data.unwrap();
        let data: Value = if &data[..] == b"[DONE]" {
            json!("[DONE]")
        } else {
            serde_json::from_slice(&data).unwrap()
        };
        if !name.is_empty() {
            assert_eq!(data["type"], name.as_str(), "event name equals data.type");
        }
        out.push((name, data));
    }
    assert_eq!(s.pending(), 0);
    out
}

/// [`events`] where every event is named (the Responses API's streams).
#[allow(dead_code)]
pub fn named_events(bytes: &[u8]) -> Vec<(String, Value)> {
    let ev = events(bytes);
    assert!(ev.iter().all(|(n, _)| !n.is_empty()), "named event");
    ev
}
