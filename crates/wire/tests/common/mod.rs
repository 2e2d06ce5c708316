//! Helpers shared by the translator tests.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

/// A chat stream chunk with one choice: `delta` and `finish_reason`.
pub fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
    )
    .unwrap()
}
