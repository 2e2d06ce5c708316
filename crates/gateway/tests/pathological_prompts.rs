//! Prompts built to make the tokenizer slow or crash: counting stays off the serving thread and
//! bounded, every such request gets an answer and is billed once, and a prompt longer than the
//! model's context window is refused before dispatch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// Two models on a fast simulated provider, one with a context window of 1000 tokens.
async fn gateway() -> Gateway {
    let gw = start(&simulated(
        "ttft_ms = 1\ntokens_per_second = 100000",
        &[
            ("open-window", "1", "1", ""),
            ("small-window", "1", "1", "context_window = 1000"),
        ],
    ))
    .await;
    // One serving thread: a stalled thread would stall every other connection.
    restart_with(gw, |c| {
        c.server.threads = 1;
        c.server.max_body_bytes = 4 << 20;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_character_repeated_a_million_times_is_answered_and_never_stalls_the_thread() {
    let gw = Arc::new(gateway().await);
    let (org, _, _, key) = gw.tenant("acme", json!({"tpm": 100_000_000})).await;
    let b = gw.put_budget(&org, json!({"monthly_limit": "100"})).await;
    assert!(b.status.is_success(), "{}", b.text());
    let prompt = "a".repeat(1_500_000);
    let auth = format!("Bearer {key}");
    let body =
        json!({"model": "open-window", "messages": user(&prompt), "max_tokens": 5}).to_string();
    let big = tokio::spawn({
        let gw = gw.clone();
        async move {
            let r = gw.post_as("/v1/chat/completions", &auth, &[], body).await;
            (r.status, r.body)
        }
    });
    // While the big prompt is counted, the same serving thread keeps answering.
    let mut slowest = Duration::ZERO;
    while !big.is_finished() {
        let t = Instant::now();
        let r = gw.call(Method::GET, "/healthz", &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Generous for a shared, noisy machine; a stalled thread takes seconds.
    assert!(
        slowest < Duration::from_millis(500),
        "healthz took {slowest:?}"
    );
    let (status, body) = big.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 1000, "{prompt_tokens}");
    let records = gw.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].input_tokens, prompt_tokens);
    assert_eq!(gw.app.limits.outstanding(), 0);
    assert_eq!(
        gw.app.budgets.reserved(&org, None),
        Some(rust_decimal::Decimal::ZERO)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_the_context_window_is_refused_before_dispatch() {
    let gw = gateway().await;
    let (_, _, _, key) = gw.tenant("acme", json!({"rpm": 100})).await;
    let long = "word ".repeat(3000);
    let r = gw
        .chat(
            &key,
            json!({"model": "small-window", "messages": user(&long)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    assert_eq!(e["error"]["param"], "messages");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 1000 tokens")
    );
    // Nothing was dispatched, billed or held.
    assert!(gw.records().await.is_empty());
    assert_eq!(gw.app.limits.outstanding(), 0);
    // A prompt that fits passes, even when its bytes exceed the window.
    let fits = "hello ".repeat(150);
    let r = gw
        .chat(
            &key,
            json!({"model": "small-window", "messages": user(&fits)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
