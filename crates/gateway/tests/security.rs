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
use tollgate_testkit::catalogue::NORTHWIND_MODEL;

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

/// A gateway with `server` settings in front of a default mock, and the inference key of a new
/// organization "acme".
async fn acme_behind_mock(server: &str) -> (MockUpstream, Gateway, String) {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start_server(server, &openai_models(&[mock.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    (mock, gw, key)
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
    let (mock, gw, key) =
        acme_behind_mock("body_read_timeout_ms = 500\nheader_read_timeout_ms = 10000").await;
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
    gw.serves_then_stops(&key, "slow one", "").await;
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

#[tokio::test]
async fn bytes_that_are_not_http_get_an_openai_error() {
    let gw = start_server("", "").await;
    let mut many_headers = String::from("GET /healthz HTTP/1.1\r\nHost: tollgate\r\n");
    for i in 0..200 {
        many_headers.push_str(&format!("x-h{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a TLS handshake on the plain port",
            vec![
                0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
            ],
            400,
        ),
        ("garbage", b"GARBAGE GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "a header line without a colon",
            b"GET /healthz HTTP/1.1\r\nHost tollgate\r\n\r\n".to_vec(),
            400,
        ),
        ("too many headers", many_headers.into_bytes(), 431),
    ];
    for (what, bytes, status) in cases {
        let mut s = connect(&gw).await;
        s.write_all(&bytes).await.unwrap();
        let r = read_response(&mut s, &mut Vec::new())
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.status, status, "{what}: {}", r.head);
        assert!(
            r.has_header("content-type", "application/json"),
            "{what}: {}",
            r.head
        );
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("\r\nx-request-id: req_"),
            "{what}: {}",
            r.head
        );
        assert_openai_error(&r.body, what);
        assert!(
            closes_within(&mut s, Duration::from_secs(2)).await,
            "{what}"
        );
    }
    assert!(healthy(&gw).await);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_is_cut_at_the_write_timeout() {
    // A stream far larger than the socket buffers: the gateway's writes must wait for a reader.
    let mock = MockUpstream::start(MockConfig {
        response_tokens: 400_000,
        stream_chunks: Some(400_000),
        record_requests: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start_server("write_timeout_ms = 400", &openai_models(&[mock.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let body =
        json!({"model": "gpt-4o-mini", "stream": true, "messages": user("a long one")}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = connect(&gw).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading well past the write timeout, then take what was sent: the connection ends
    // before the stream does.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was not closed");
    assert!(
        !seen.windows(6).any(|w| w == b"[DONE]"),
        "the whole stream was sent ({} bytes)",
        seen.len()
    );
    // The stream is billed once, as any request whose client left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = gw.records().await;
        if records.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "records: {}", records.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy(&gw).await);
    gw.stop().await;
}

// ----- the authorization table -----

/// Two owners with one simulated model each ([`OPENAI_OWNED_MODEL`] and the owner "northwind"
/// of [`NORTHWIND_MODEL`]); the table runs on it.
fn owned_models() -> String {
    format!(
        r#"{OPENAI_OWNED_MODEL}
[[owners]]
name = "northwind"
revenue_share_percent = "30"
policy = "No training of other models."
{NORTHWIND_MODEL}"#
    )
}

/// The kinds of credential a caller can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    None,
    Invalid,
    Inference,
    ReaderOwnOrg,
    ReaderOtherOrg,
    Owner,
    WrongOwner,
    Admin,
}

const CREDS: [Cred; 8] = [
    Cred::None,
    Cred::Invalid,
    Cred::Inference,
    Cred::ReaderOwnOrg,
    Cred::ReaderOtherOrg,
    Cred::Owner,
    Cred::WrongOwner,
    Cred::Admin,
];

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
enum Access {
    /// The admin token only.
    Admin,
    /// The admin token, or a reader key of the organization (or an ancestor).
    Reader,
    /// The admin token, or an owner key of the owner in the path (`openai`).
    Owner,
    /// An inference key.
    Inference,
}

/// The status `cred` gets on a route of `access` whose successful answer is `ok`.
fn expected(access: Access, cred: Cred, ok: u16) -> u16 {
    use Cred::*;
    match (access, cred) {
        (_, None | Invalid) => 401,
        (Access::Inference, Inference) => ok,
        (Access::Inference, ReaderOwnOrg | ReaderOtherOrg) => 403,
        (Access::Inference, _) => 401,
        (_, Admin) => ok,
        (_, Inference) => 401,
        (Access::Reader, ReaderOwnOrg) => ok,
        // Another organization's existence is not revealed.
        (Access::Reader, ReaderOtherOrg) => 404,
        (Access::Admin | Access::Owner, ReaderOwnOrg | ReaderOtherOrg) => 403,
        (Access::Owner, Owner) => ok,
        (Access::Owner, WrongOwner) => 403,
        (Access::Admin | Access::Reader, Owner | WrongOwner) => 401,
    }
}

async fn reader_key(gw: &Gateway, org: &str) -> String {
    let path = format!("/admin/v1/organizations/{org}/reader-keys");
    let r = gw.admin(Method::POST, &path, json!({"name": "r"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_owned()
}

/// A new owner key of `owner`: (secret, id).
async fn owner_key(gw: &Gateway, owner: &str) -> (String, String) {
    let path = format!("/admin/v1/owners/{owner}/keys");
    let r = gw.admin(Method::POST, &path, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn authorization_table_every_route_by_every_credential() {
    let gw = start_server("", &owned_models()).await;
    // Organization A (the caller's own), B (another), V (a victim of review decisions).
    let (a, project, _, inference) = gw.tenant("alpha", json!({})).await;
    let (b, _, _, _) = gw.tenant("beta", json!({})).await;
    let (v, _, victim_key, _) = gw.tenant("victim", json!({})).await;
    let reader_a = reader_key(&gw, &a).await;
    let reader_b = reader_key(&gw, &b).await;
    let (openai_key, _) = owner_key(&gw, "openai").await;
    let (northwind_key, _) = owner_key(&gw, "northwind").await;
    let (_, spare_owner_key_id) = owner_key(&gw, "openai").await;
    // Traffic of A on the owner's model, so that the owner has evidence to read.
    let r = gw
        .chat(
            &inference,
            json!({"model": "gpt-4o-mini", "messages": user("hello")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let secret = |cred: Cred| -> Option<String> {
        match cred {
            Cred::None => None,
            Cred::Invalid => Some("sk-tg-not-a-real-key".into()),
            Cred::Inference => Some(inference.clone()),
            Cred::ReaderOwnOrg => Some(reader_a.clone()),
            Cred::ReaderOtherOrg => Some(reader_b.clone()),
            Cred::Owner => Some(openai_key.clone()),
            Cred::WrongOwner => Some(northwind_key.clone()),
            Cred::Admin => Some(ADMIN.into()),
        }
    };

    let month = "2026-12";
    // (method, path, body, who may call, status of a successful call). Routes that change
    // state come after those that read it; the admin runs each route last.
    #[rustfmt::skip]
    let routes: Vec<(Method, String, Value, Access, u16)> = vec![
        (Method::GET, "/v1/models".into(), Value::Null, Access::Inference, 200),
        (Method::GET, "/v1/models/gpt-4o-mini".into(), Value::Null, Access::Inference, 200),
        (Method::GET, format!("/admin/v1/usage?organization={a}"), Value::Null, Access::Reader, 200),
        (Method::GET, format!("/admin/v1/invoices/{a}/{month}"), Value::Null, Access::Reader, 200),
        (Method::GET, "/admin/v1/organizations".into(), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/organizations/{a}"), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/organizations/{a}/projects"), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/projects/{project}/keys"), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/prices".into(), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/organizations/{a}/budget"), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/budget-events".into(), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/reports/revenue?from={month}&to={month}"), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/reports/quarterly?from={month}&to={month}"), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/organizations/{a}/risk"), Value::Null, Access::Admin, 200),
        (Method::GET, format!("/admin/v1/organizations/{a}/evidence"), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/flags".into(), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/policies".into(), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/audit".into(), Value::Null, Access::Admin, 200),
        (Method::GET, "/admin/v1/owners/openai/reports".into(), Value::Null, Access::Owner, 200),
        (Method::GET, format!("/admin/v1/owners/openai/evidence/{a}"), Value::Null, Access::Owner, 200),
        (Method::POST, "/admin/v1/owners/openai/reports".into(), json!({"organization": a, "reason": "table"}), Access::Owner, 201),
        (Method::POST, "/admin/v1/organizations".into(), json!({"name": "made-by-table"}), Access::Admin, 201),
        (Method::POST, format!("/admin/v1/organizations/{a}/projects"), json!({"name": "p2"}), Access::Admin, 201),
        (Method::POST, format!("/admin/v1/projects/{project}/keys"), json!({"name": "k2"}), Access::Admin, 201),
        (Method::POST, "/admin/v1/prices".into(), json!({"model": "gpt-4o-mini", "input_price": "0.20", "output_price": "0.80", "effective_from": "2027-01-01T00:00:00Z"}), Access::Admin, 201),
        (Method::PUT, format!("/admin/v1/organizations/{a}/contract"), json!({"discount_percent": "10"}), Access::Admin, 200),
        (Method::PUT, format!("/admin/v1/organizations/{a}/budget"), json!({"monthly_limit": "100"}), Access::Admin, 200),
        (Method::POST, "/admin/v1/usage/events".into(), json!({"events": []}), Access::Admin, 200),
        (Method::POST, format!("/admin/v1/organizations/{a}/reader-keys"), json!({"name": "r2"}), Access::Admin, 201),
        (Method::POST, "/admin/v1/owners/northwind/keys".into(), json!({}), Access::Admin, 201),
        (Method::DELETE, format!("/admin/v1/owners/openai/keys/{spare_owner_key_id}"), Value::Null, Access::Admin, 200),
        (Method::POST, format!("/admin/v1/organizations/{v}/review"), json!({"reason": "table"}), Access::Admin, 200),
        (Method::POST, format!("/admin/v1/organizations/{v}/reinstate"), json!({"reason": "table"}), Access::Admin, 200),
        (Method::POST, format!("/admin/v1/organizations/{v}/terminate"), json!({"reason": "table"}), Access::Admin, 200),
        (Method::DELETE, format!("/admin/v1/keys/{victim_key}"), Value::Null, Access::Admin, 200),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, access, ok) in &routes {
        for cred in CREDS {
            let auth = secret(cred).map(|s| format!("Bearer {s}"));
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = &auth {
                headers.push(("authorization", a.as_str()));
            }
            let bytes = if body.is_null() {
                String::new()
            } else {
                body.to_string()
            };
            let r = gw.call(method.clone(), path, &headers, bytes).await;
            let want = expected(*access, cred, *ok);
            let context = format!("{method} {path} as {cred:?}");
            if r.status.as_u16() != want {
                wrong.push(format!(
                    "{context}: {} (want {want}) {}",
                    r.status,
                    r.text()
                ));
            } else if want >= 400 {
                assert_error_reply(&r, &context);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    gw.stop().await;
}

// ----- hostile bodies and framework rejections -----

#[tokio::test]
async fn hostile_inference_bodies_get_openai_errors_and_reach_no_upstream() {
    let (mock, gw, key) = acme_behind_mock("max_body_bytes = 1048576").await;
    let msgs = r#"[{"role":"user","content":"hi"}]"#;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("deeply nested body", deep(100_000).into_bytes(), 400, None),
        (
            "huge model name",
            format!(r#"{{"model":"{}","messages":{msgs}}}"#, "m".repeat(900_000)).into_bytes(),
            404,
            Some("model"),
        ),
        (
            "body over the limit",
            format!(
                r#"{{"model":"gpt-4o-mini","messages":{msgs},"pad":"{}"}}"#,
                "x".repeat(1_100_000)
            )
            .into_bytes(),
            413,
            None,
        ),
        (
            "invalid UTF-8",
            [
                br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.as_slice(),
                &[0xff, 0xfe],
                br#""}]}"#,
            ]
            .concat(),
            400,
            None,
        ),
        (
            "duplicate model",
            format!(r#"{{"model":"gpt-4o-mini","messages":{msgs},"model":"other"}}"#).into_bytes(),
            400,
            None,
        ),
        ("not an object", b"[1,2,3]".to_vec(), 400, None),
        ("empty body", Vec::new(), 400, None),
        (
            "stream not a boolean",
            format!(r#"{{"model":"gpt-4o-mini","messages":{msgs},"stream":"yes"}}"#).into_bytes(),
            400,
            Some("stream"),
        ),
        (
            "messages not an array",
            r#"{"model":"gpt-4o-mini","messages":5}"#.as_bytes().to_vec(),
            400,
            Some("messages"),
        ),
        (
            "negative max_tokens",
            format!(r#"{{"model":"gpt-4o-mini","messages":{msgs},"max_tokens":-1}}"#).into_bytes(),
            400,
            Some("max_tokens"),
        ),
        (
            "n as a string",
            format!(r#"{{"model":"gpt-4o-mini","messages":{msgs},"n":"2"}}"#).into_bytes(),
            400,
            Some("n"),
        ),
        (
            "model as an object",
            format!(r#"{{"model":{{"$gt":""}},"messages":{msgs}}}"#).into_bytes(),
            400,
            Some("model"),
        ),
    ];
    let auth = format!("Bearer {key}");
    for (name, body, status, param) in cases {
        let r = gw.post_as("/v1/chat/completions", &auth, &[], body).await;
        assert_eq!(r.status.as_u16(), status, "{name}: {}", r.text());
        let v = assert_error_reply(&r, name);
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{name}");
        }
        if name == "duplicate model" {
            let m = v["error"]["message"].as_str().unwrap();
            assert!(m.contains("'model'"), "{m}");
        }
    }
    let reached: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned())
        .collect();
    assert!(
        reached.is_empty(),
        "a hostile body reached the upstream: {reached:?}"
    );
    // A field the gateway does not interpret passes byte for byte, however deep (its nesting
    // is skipped without recursion): no crash, and the upstream decides.
    let nested = deep(50_000);
    let r = gw
        .post_as(
            "/v1/chat/completions",
            &auth,
            &[],
            format!(r#"{{"model":"gpt-4o-mini","messages":{msgs},"metadata":{nested}}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let sent = String::from_utf8_lossy(&seen[0].body).into_owned();
    assert!(sent.contains(&nested));
    // So does a message's content: the upstream's answer (here the mock's 400) comes back.
    let r = gw
        .post_as(
            "/v1/chat/completions",
            &auth,
            &[],
            format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":{nested}}}]}}"#
            ),
        )
        .await;
    assert!(r.status.as_u16() < 500, "{}: {}", r.status, r.text());
    // The server is still up and serving.
    gw.serves_then_stops(&key, "still here", "").await;
}

#[tokio::test]
async fn hostile_admin_bodies_get_openai_errors() {
    let gw = start_server("max_body_bytes = 1048576", "").await;
    let auth = format!("Bearer {ADMIN}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "deeply nested",
            format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes(),
        ),
        (
            "invalid UTF-8",
            [br#"{"name":""#.as_slice(), &[0xc3, 0x28], br#""}"#].concat(),
        ),
        ("truncated", br#"{"name":"#.to_vec()),
        ("wrong type", br#"{"name":42}"#.to_vec()),
        ("not an object", br#""acme""#.to_vec()),
    ];
    for (name, body) in cases {
        let r = gw
            .post_as("/admin/v1/organizations", &auth, &[], body)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.text());
        assert_error_reply(&r, name);
    }
    assert!(healthy(&gw).await);
    gw.stop().await;
}

/// (name, method, path, headers, body, expected status).
type RejectionCase<'a> = (
    &'a str,
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn framework_rejections_and_every_error_are_openai_shaped_with_a_request_id() {
    let gw = start_server("max_body_bytes = 1024", &owned_models()).await;
    let (org, _, _, key) = gw.tenant("acme", json!({})).await;
    let admin = format!("Bearer {ADMIN}");
    let bearer = format!("Bearer {key}");
    let cases: Vec<RejectionCase> = vec![
        (
            "GET on a POST route",
            Method::GET,
            "/v1/chat/completions".into(),
            vec![],
            vec![],
            405,
        ),
        (
            "GET on an Azure POST route",
            Method::GET,
            "/openai/deployments/gpt-4o-mini/chat/completions".into(),
            vec![],
            vec![],
            405,
        ),
        (
            "PUT on the Responses route",
            Method::PUT,
            "/v1/responses".into(),
            vec![],
            vec![],
            405,
        ),
        (
            "GET on the Messages route",
            Method::GET,
            "/v1/messages".into(),
            vec![],
            vec![],
            405,
        ),
        (
            "DELETE on a GET route",
            Method::DELETE,
            "/admin/v1/flags".into(),
            vec![("authorization", &admin)],
            vec![],
            405,
        ),
        (
            "unknown path",
            Method::GET,
            "/v2/nothing".into(),
            vec![],
            vec![],
            404,
        ),
        (
            "bad query string",
            Method::GET,
            "/admin/v1/audit?organization=a&organization=b".into(),
            vec![("authorization", &admin)],
            vec![],
            400,
        ),
        (
            "path parameter not UTF-8",
            Method::GET,
            "/v1/models/%FF%FE".into(),
            vec![("authorization", &bearer)],
            vec![],
            400,
        ),
        (
            "admin path parameter not UTF-8",
            Method::GET,
            "/admin/v1/organizations/%C3%28".into(),
            vec![("authorization", &admin)],
            vec![],
            400,
        ),
        (
            "no key",
            Method::POST,
            "/v1/chat/completions".into(),
            vec![],
            b"{}".to_vec(),
            401,
        ),
        (
            "no admin token",
            Method::GET,
            "/admin/v1/flags".into(),
            vec![],
            vec![],
            401,
        ),
        (
            "body too large",
            Method::POST,
            "/v1/chat/completions".into(),
            vec![("authorization", &bearer)],
            vec![b'x'; 4096],
            413,
        ),
        (
            "unknown organization",
            Method::GET,
            "/admin/v1/organizations/org_nope".into(),
            vec![("authorization", &admin)],
            vec![],
            404,
        ),
        (
            "unknown model",
            Method::POST,
            "/v1/chat/completions".into(),
            vec![("authorization", &bearer)],
            br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            404,
        ),
    ];
    for (name, method, path, headers, body, status) in cases {
        let r = gw.call(method, &path, &headers, body).await;
        assert_eq!(r.status.as_u16(), status, "{name}: {}", r.text());
        let v = assert_error_reply(&r, name);
        if status == 405 {
            assert_eq!(v["error"]["code"], "method_not_allowed", "{name}");
            assert!(r.header("allow").is_some(), "{name}: no Allow header");
        }
    }
    // A rate-limited request (429) carries a request id and the OpenAI shape too.
    let (_, _, _, limited) = gw.tenant_in(&org, json!({"rpm": 1})).await;
    let first = gw
        .chat(
            &limited,
            json!({"model": "gpt-4o-mini", "messages": user("one")}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = gw
        .chat(
            &limited,
            json!({"model": "gpt-4o-mini", "messages": user("two")}),
        )
        .await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text()
    );
    assert_error_reply(&second, "429");
    gw.stop().await;
}
