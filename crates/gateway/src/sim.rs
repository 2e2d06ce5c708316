//! The built-in simulated provider: deterministic text, configurable time to first token and
//! tokens per second, and exact usage. It needs no network, so demos, tests and benchmarks run
//! anywhere. Every generated word is exactly one token in o200k_base and cl100k_base, so the usage it
//! reports equals what a tokenizer counts.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tollgate_wire::Endpoint;

use crate::upstream::{SimConfig, UpstreamBody, UpstreamResponse};

/// What the simulator needs to know of a request.
pub struct SimRequest<'a> {
    pub endpoint: Endpoint,
    pub model: &'a str,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub n: u64,
    pub prompt_tokens: u64,
    pub inputs: usize,
    pub seed_text: &'a [u8],
}

/// Words that are one token each (with their leading space) in both encodings.
pub const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " with", " was",
    " on", " be", " by", " this", " are", " or", " from", " at", " an", " which", " not", " have",
    " they", " one", " you", " all", " can", " more", " time", " people", " work", " model",
    " data", " system", " water", " light", " world", " day",
];

const MAX_SIM_TOKENS: u64 = 8192;

fn seed_of(text: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn word(seed: u64, i: u64) -> &'static str {
    let idx = seed.wrapping_add(i.wrapping_mul(7919)) % WORDS.len() as u64;
    WORDS[usize::try_from(idx).unwrap_or(0)]
}

/// The deterministic text of `tokens` tokens for a seed.
pub fn text(seed: u64, tokens: u64) -> String {
    let mut s = String::with_capacity(usize::try_from(tokens).unwrap_or(0) * 6);
    for i in 0..tokens {
        s.push_str(word(seed, i));
    }
    s
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn usage_json(prompt: u64, completion: u64) -> serde_json::Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

/// Answers a request as an upstream would.
pub fn respond(cfg: &SimConfig, req: &SimRequest<'_>) -> UpstreamResponse {
    let seed = seed_of(req.seed_text);
    let per_choice = req
        .max_tokens
        .unwrap_or(cfg.output_tokens)
        .min(MAX_SIM_TOKENS);
    let n = req.n.clamp(1, 16);
    let id = format!("sim-{seed:016x}");
    let created = now_secs();
    if req.endpoint == Endpoint::Embeddings {
        let data: Vec<serde_json::Value> = (0..req.inputs.max(1))
            .map(|i| {
                let v: Vec<f64> = (0..16u64)
                    .map(|d| {
                        let x = seed.wrapping_add((i as u64) * 131 + d * 31) % 2001;
                        (x as f64 - 1000.0) / 1000.0
                    })
                    .collect();
                json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        let body = json!({
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens}
        });
        return full(body);
    }
    let chat = req.endpoint == Endpoint::ChatCompletions;
    if !req.stream {
        let choices: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let t = text(seed.wrapping_add(i), per_choice);
                if chat {
                    json!({"index": i, "message": {"role": "assistant", "content": t, "refusal": null}, "logprobs": null, "finish_reason": finish(per_choice, req.max_tokens)})
                } else {
                    json!({"index": i, "text": t, "logprobs": null, "finish_reason": finish(per_choice, req.max_tokens)})
                }
            })
            .collect();
        let body = json!({
            "id": if chat { format!("chatcmpl-{id}") } else { format!("cmpl-{id}") },
            "object": if chat { "chat.completion" } else { "text_completion" },
            "created": created,
            "model": req.model,
            "choices": choices,
            "usage": usage_json(req.prompt_tokens, per_choice * n),
            "system_fingerprint": "tollgate-sim"
        });
        return full(body);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let cfg = cfg.clone();
    let model = req.model.to_owned();
    let prompt_tokens = req.prompt_tokens;
    let include_usage = req.include_usage;
    let max_tokens = req.max_tokens;
    tokio::spawn(async move {
        let gap = (cfg.tokens_per_second > 0)
            .then(|| Duration::from_nanos(1_000_000_000 / cfg.tokens_per_second));
        if !cfg.ttft.is_zero() {
            tokio::time::sleep(cfg.ttft).await;
        }
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let id = if chat {
            format!("chatcmpl-{id}")
        } else {
            format!("cmpl-{id}")
        };
        let chunk = |choices: serde_json::Value| {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "system_fingerprint": "tollgate-sim", "choices": choices});
            Bytes::from(format!("data: {v}\n\n"))
        };
        if chat {
            let first: Vec<_> = (0..n)
                .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect();
            if tx.send(chunk(json!(first))).await.is_err() {
                return;
            }
        }
        for t in 0..per_choice {
            if let Some(gap) = gap
                && t > 0
            {
                tokio::time::sleep(gap).await;
            }
            let choices: Vec<_> = (0..n)
                .map(|i| {
                    let w = word(seed.wrapping_add(i), t);
                    if chat {
                        json!({"index": i, "delta": {"content": w}, "logprobs": null, "finish_reason": null})
                    } else {
                        json!({"index": i, "text": w, "logprobs": null, "finish_reason": null})
                    }
                })
                .collect();
            if tx.send(chunk(json!(choices))).await.is_err() {
                return;
            }
        }
        let fin = finish(per_choice, max_tokens);
        let last: Vec<_> = (0..n)
            .map(|i| {
                if chat {
                    json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": fin})
                } else {
                    json!({"index": i, "text": "", "logprobs": null, "finish_reason": fin})
                }
            })
            .collect();
        if tx.send(chunk(json!(last))).await.is_err() {
            return;
        }
        if include_usage {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage_json(prompt_tokens, per_choice * n)});
            if tx
                .send(Bytes::from(format!("data: {v}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    UpstreamResponse {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("text/event-stream")),
        body: UpstreamBody::Chunks(rx),
    }
}

fn finish(tokens: u64, max_tokens: Option<u64>) -> &'static str {
    if max_tokens == Some(tokens) && tokens < MAX_SIM_TOKENS {
        "length"
    } else {
        "stop"
    }
}

fn full(body: serde_json::Value) -> UpstreamResponse {
    UpstreamResponse {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: UpstreamBody::Full(Some(Bytes::from(body.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Encoding;

    #[test]
    fn every_word_is_one_token_in_both_encodings() {
        for w in WORDS {
            assert_eq!(Encoding::O200k.count(w), 1, "{w:?}");
            assert_eq!(Encoding::Cl100k.count(w), 1, "{w:?}");
        }
        let t = text(42, 100);
        assert_eq!(Encoding::O200k.count(&t), 100);
        assert_eq!(Encoding::Cl100k.count(&t), 100);
    }

    #[test]
    fn text_is_deterministic() {
        assert_eq!(text(7, 20), text(7, 20));
        assert_ne!(text(7, 20), text(8, 20));
    }
}
