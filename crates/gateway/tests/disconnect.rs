//! A client that goes away mid-stream is still billed, exactly once, under either policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_config::DisconnectPolicy;
use tollgate_mock::{MockConfig, MockUpstream};

async fn gateway(policy: DisconnectPolicy) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start(MockConfig {
        response_tokens: 40,
        chunk_gap: Duration::from_millis(15),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    // One serving thread: each thread keeps its own idle upstream connections, and these tests
    // follow the connection of an abandoned stream to the next request, which arrives on a new
    // client connection (on another thread, were there several).
    let gw = restart_with(gw, |c| {
        c.metering.on_client_disconnect = policy;
        c.server.threads = 1;
    })
    .await;
    (mock, gw)
}

/// Starts a stream over a raw socket, reads its first bytes, then drops the connection.
async fn start_and_abandon(gw: &Gateway, key: &str) {
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body =
        json!({"model": "gpt-4o-mini", "messages": user("a b c"), "stream": true}).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < 600 {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        got += n;
    }
    drop(sock);
}

async fn wait_for_record(gw: &Gateway) -> tollgate_store::UsageRecord {
    for _ in 0..200 {
        let recs = gw.records().await;
        if let Some(r) = recs.into_iter().next() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no usage record after the client left");
}

#[tokio::test]
async fn drain_bills_the_upstreams_own_usage() {
    let (_mock, gw) = gateway(DisconnectPolicy::Drain).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    start_and_abandon(&gw, &key).await;
    let rec = wait_for_record(&gw).await;
    assert_eq!(
        (
            rec.status,
            rec.input_tokens,
            rec.output_tokens,
            rec.estimated
        ),
        (499, 3, 40, false)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.records().await.len(), 1, "billed more than once");
}

#[tokio::test]
async fn cancel_bills_what_was_generated_as_estimated() {
    let (mock, gw) = gateway(DisconnectPolicy::Cancel).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    start_and_abandon(&gw, &key).await;
    let rec = wait_for_record(&gw).await;
    assert_eq!(rec.status, 499);
    assert!(rec.estimated);
    // Some tokens were generated and counted, fewer than the full answer's 40 words ("tok " is
    // two tokens in o200k, so the full answer would count 80).
    assert!(
        rec.output_tokens > 0 && rec.output_tokens < 80,
        "{}",
        rec.output_tokens
    );
    assert!(rec.input_tokens > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.records().await.len(), 1);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_cancelled_streams_upstream_connection_is_closed_not_reused() {
    let (mock, gw) = gateway(DisconnectPolicy::Cancel).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    start_and_abandon(&gw, &key).await;
    wait_for_record(&gw).await;
    // The half-read stream's connection is gone; the next request dials a new one and gets a
    // whole answer of its own.
    mock.set_config(MockConfig::default());
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(mock.connection_count(), 2);
    // A drained stream, by contrast, leaves its connection for the next request.
    let (mock, gw) = gateway(DisconnectPolicy::Drain).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    start_and_abandon(&gw, &key).await;
    wait_for_record(&gw).await;
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    assert_eq!(mock.connection_count(), 1);
}
