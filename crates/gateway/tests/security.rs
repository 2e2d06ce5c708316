//! The security suite: what a hostile or careless client can and cannot do to the gateway.
//!
//! - slow and idle clients (slowloris): headers trickled, a body that stops, idle keep-alive
//!   connections, the connection cap and the per-connection request cap;
//! - the authorization table: every admin, reader and model-owner route × every kind of
//!   credential → the expected status, each refusal in OpenAI's error shape;
//! - hostile bodies (deep nesting, huge strings, invalid UTF-8, duplicate keys, wrong types)
//!   and framework rejections (query strings, paths, methods), all answered as OpenAI errors
//!   with an `x-request-id`.
//!
//! SECURITY.md lists what each test covers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_config::Config;
use tollgate_mock::{MockConfig, MockUpstream};

// ----- helpers -----

/// A gateway with extra `[server]` keys and the rest of the config after `[storage]`.
async fn start_server(server: &str, rest: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n{server}\n[storage]\nurl = \"sqlite://{}/ledger.db\"\n{rest}",
        dir.path().display(),
    );
    start_with(Config::from_toml(&text).unwrap(), dir).await
}

async fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: tollgate\r\n\r\n")
}

/// One response read off a raw connection.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn has_header(&self, name: &str, value: &str) -> bool {
        self.head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    }
}

/// Reads one response with a `content-length` body; `None` when the connection closes (or
/// resets) first. Gives up after 5 s.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawResponse> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Some(RawResponse { status, head, body });
            }
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response and no close within 5 s"),
        }
    }
}

/// Whether the server closes the connection within `limit` (reading and dropping anything it
/// sends first).
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// `/healthz` on a new connection answers 200.
async fn healthy(gw: &Gateway) -> bool {
    let mut s = connect(gw).await;
    if s.write_all(get_request("/healthz").as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    read_response(&mut s, &mut Vec::new())
        .await
        .is_some_and(|r| r.status == 200)
}

/// Asserts OpenAI's error shape: `{"error": {"message": str, "type": str, "param", "code"}}`.
fn assert_openai_error(body: &[u8], context: &str) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{context}: not JSON: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    });
    let e = &v["error"];
    assert!(e["message"].is_string(), "{context}: no message in {v}");
    assert!(
        !e["message"].as_str().unwrap().is_empty(),
        "{context}: empty message"
    );
    assert!(e["type"].is_string(), "{context}: no type in {v}");
    assert!(e.get("param").is_some(), "{context}: no param in {v}");
    assert!(e.get("code").is_some(), "{context}: no code in {v}");
    v
}

/// Asserts an error reply is OpenAI-shaped, JSON-typed and carries a request id.
fn assert_error_reply(r: &Reply, context: &str) -> Value {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{context}: content-type {:?}",
        r.header("content-type")
    );
    assert!(
        r.header("x-request-id")
            .is_some_and(|id| id.starts_with("req_")),
        "{context}: no x-request-id"
    );
    assert_openai_error(&r.body, context)
}

// ----- slow and idle clients -----

#[tokio::test]
async fn headers_sent_one_byte_at_a_time_are_cut_at_the_header_timeout() {
    let gw = start_server("header_read_timeout_ms = 600", "").await;
    let s = connect(&gw).await;
    let (mut rd, mut wr) = s.into_split();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in get_request("/healthz").bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The whole request would take 200 ms × ~40 bytes; the server closes after ~0.6 s.
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), rd.read_to_end(&mut seen)).await;
    assert!(closed.is_ok(), "the trickling client was not closed");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"));
    trickle.abort();

    // A connection that sends nothing at all is closed as well.
    let mut silent = connect(&gw).await;
    assert!(closes_within(&mut silent, Duration::from_secs(3)).await);
    // The server still answers.
    assert!(healthy(&gw).await);
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_midway_is_cut_at_the_body_timeout() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start_server(
        "body_read_timeout_ms = 500\nheader_read_timeout_ms = 10000",
        &openai_models(&[mock.base_url()]),
    )
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    for (path, auth) in [
        ("/v1/chat/completions", key.clone()),
        ("/admin/v1/organizations", ADMIN.to_owned()),
    ] {
        let mut s = connect(&gw).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{{\"model\": \"gpt-4o-mini\", "
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let start = Instant::now();
        let r = read_response(&mut s, &mut Vec::new())
            .await
            .unwrap_or_else(|| panic!("{path}: closed without an answer"));
        assert_eq!(r.status, 400, "{path}");
        assert_openai_error(&r.body, path);
        assert!(
            closes_within(&mut s, Duration::from_secs(2)).await,
            "{path}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path}: closed after {:?}",
            start.elapsed()
        );
    }
    assert!(mock.requests().is_empty());
    assert!(healthy(&gw).await);
    gw.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_slow_answers_are_not_cut() {
    let mock = MockUpstream::start(MockConfig {
        ttft: Duration::from_millis(1200),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start_server(
        "keep_alive_timeout_ms = 400\nheader_read_timeout_ms = 400",
        &openai_models(&[mock.base_url()]),
    )
    .await;
    let mut s = connect(&gw).await;
    let mut buf = Vec::new();
    s.write_all(get_request("/healthz").as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf).await.unwrap();
    assert_eq!(r.status, 200);
    // Kept alive for a second request within the timeout…
    s.write_all(get_request("/healthz").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf).await.unwrap().status, 200);
    // …then closed once idle.
    let idle = Instant::now();
    assert!(closes_within(&mut s, Duration::from_secs(3)).await);
    assert!(idle.elapsed() >= Duration::from_millis(300));

    // An upstream slower than every timeout still gets its answer through.
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("slow one")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.stop().await;
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees_up() {
    let gw = start_server("max_connections = 3\nthreads = 2", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&gw).await;
        s.write_all(get_request("/healthz").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut s, &mut Vec::new()).await.unwrap().status,
            200
        );
        held.push(s);
    }
    // The excess is accepted and closed at once, without an answer.
    for _ in 0..5 {
        let mut extra = connect(&gw).await;
        let _ = extra.write_all(get_request("/healthz").as_bytes()).await;
        assert!(read_response(&mut extra, &mut Vec::new()).await.is_none());
    }
    // Once a held connection goes away, a new one is served.
    drop(held.pop());
    let mut answered = false;
    for _ in 0..50 {
        if healthy(&gw).await {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(answered, "/healthz not served after a slot was freed");
    assert_eq!(gw.app.config.server.max_connections, 3);
    gw.stop().await;
}

#[tokio::test]
async fn requests_per_connection_are_capped() {
    let gw = start_server("max_requests_per_connection = 3", "").await;
    let mut s = connect(&gw).await;
    let mut buf = Vec::new();
    for i in 1..=3 {
        s.write_all(get_request("/healthz").as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut s, &mut buf).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.has_header("connection", "close"), i == 3, "request {i}");
    }
    assert!(closes_within(&mut s, Duration::from_secs(2)).await);
    gw.stop().await;
}
