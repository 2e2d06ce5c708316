//! Micro-benchmarks of the request path's hot functions: request parse and rewrite, SSE parsing
//! with usage extraction, token counting, key lookup, the rate-limit check, the metrics one
//! request updates, and the parse plus the detector's features.
//!
//! `cargo bench -p tollgate-gateway --bench hot_path`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use tollgate_gateway::limits::Limiter;
use tollgate_gateway::meters::Metrics;
use tollgate_gateway::tenancy::{KEY_PREFIX, Tenancy, generate_key};
use tollgate_gateway::tokens::Encoding;
use tollgate_store::{ApiKey, KeyRole};
use tollgate_wire::usage::{read_chunk, usage_of_response};
use tollgate_wire::{ApiRequest, Endpoint, SseSplitter};

fn chat_body(bytes: usize) -> Vec<u8> {
    let words = "the quick brown fox jumps over the lazy dog and explains every step ";
    let text: String = words.repeat(bytes / words.len() + 1)[..bytes].to_owned();
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}],
        "temperature": 0.7, "max_tokens": 256, "stream": true,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    }))
    .unwrap()
}

fn stream_body(chunks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..chunks {
        out.extend_from_slice(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"finish_reason\":null}}]}}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":200,\"total_tokens\":210}}\n\ndata: [DONE]\n\n");
    out
}

fn bench(c: &mut Criterion) {
    let body = chat_body(1024);
    c.bench_function("request_parse_1kb", |b| {
        b.iter(|| ApiRequest::parse(black_box(&body), Endpoint::ChatCompletions, false).unwrap())
    });
    // The gateway's per-request parse work for the detector: the view, then the features read
    // from it (without benchmark overlap, the default). Before the one-parse change the detector
    // parsed the body again (`features::extract_with` on the bytes).
    c.bench_function("parse_and_guard_features_1kb", |b| {
        b.iter(|| {
            let r = ApiRequest::parse(black_box(&body), Endpoint::ChatCompletions, false).unwrap();
            let f = tollgate_guard::features::extract_request(&r, 4000, false);
            black_box(f)
        })
    });
    let req = ApiRequest::parse(&body, Endpoint::ChatCompletions, false).unwrap();
    c.bench_function("request_rewrite_1kb", |b| {
        b.iter(|| black_box(req.rewrite("upstream-model", tollgate_wire::Restrict::NONE)))
    });

    let stream = stream_body(200);
    c.bench_function("sse_split_and_usage_200_chunks", |b| {
        b.iter(|| {
            let mut s = SseSplitter::new();
            let mut text = String::new();
            let mut usage = None;
            for piece in black_box(&stream).chunks(512) {
                s.push(piece);
                while let Some(ev) = s.next_event() {
                    if let Some(d) = &ev.data
                        && let Some(v) = read_chunk(d, &mut text)
                        && v.usage.is_some()
                    {
                        usage = v.usage;
                    }
                }
            }
            usage.unwrap()
        })
    });
    let plain = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello there, how are you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    c.bench_function("usage_of_plain_response", |b| {
        b.iter(|| usage_of_response(black_box(plain)).unwrap())
    });

    let text = String::from_utf8(chat_body(1024)).unwrap();
    let _ = Encoding::O200k.count("warm up");
    c.bench_function("token_count_o200k_1kb", |b| {
        b.iter(|| Encoding::O200k.count(black_box(&text)))
    });

    let tenancy = Tenancy::default();
    let mut secrets = Vec::new();
    for i in 0..10_000 {
        let (secret, hash, prefix) = generate_key(KEY_PREFIX);
        tenancy.put_key(&ApiKey {
            id: format!("key_{i}"),
            organization: "org".into(),
            project: None,
            name: "k".into(),
            prefix,
            hash,
            role: KeyRole::Inference,
            models: None,
            rpm: Some(1_000_000),
            tpm: None,
            expires_at: None,
            revoked_at: None,
            created_at: OffsetDateTime::now_utc(),
        });
        secrets.push(secret);
    }
    c.bench_function("key_lookup_hit_10k_keys", |b| {
        b.iter(|| tenancy.key(black_box(&secrets[4242])).unwrap())
    });
    let (unknown, _, _) = generate_key(KEY_PREFIX);
    c.bench_function("key_lookup_miss_10k_keys", |b| {
        b.iter(|| tenancy.key(black_box(&unknown)).is_none())
    });

    // What one dispatched request adds to the metrics: the overhead and upstream histograms, then
    // its record (request counter in its route's cell, duration histogram, four token lanes).
    let metrics = Metrics::new();
    let model = metrics.model("gpt-4o-mini");
    let provider: std::sync::Arc<str> = "openai".into();
    let route = metrics.route(&model, &provider);
    c.bench_function("metrics_per_request_update", |b| {
        b.iter(|| {
            metrics.overhead.observe(black_box(0.000_08));
            route.upstream.observe(black_box(0.21));
            metrics.completed(
                "/v1/chat/completions",
                &model,
                Some(&route),
                black_box(200),
                black_box([310, 128, 0, 200]),
                std::time::Duration::from_millis(480),
            );
        })
    });

    let limiter = Limiter::new(Some(u64::MAX / 4_000_000), Some(u64::MAX / 4_000_000)).unwrap();
    c.bench_function("rate_limit_reserve_and_settle", |b| {
        b.iter(|| {
            let snap = limiter.reserve(Instant::now(), black_box(300)).unwrap();
            limiter.settle(300, 250);
            snap
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
