//! Cancel safety of the request path: wherever the client leaves, a dispatched request is billed
//! exactly once and every reservation (rate limit, budget hold) is settled or given back.
//!
//! One table, one row per phase the client can leave in, run under both disconnect policies.
//! Each row checks the books afterwards: records in the ledger, reservations outstanding, the
//! budget's held amount, and that the next ordinary request of a $0.01-budget organization passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Method;
use rust_decimal::Decimal;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_config::DisconnectPolicy;
use tollgate_gateway::App;
use tollgate_mock::{Behavior, MockConfig, MockUpstream};
use tollgate_store::UsageRecord;

/// Where the client leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Halfway through sending its body.
    WhileBodyIsRead,
    /// A plain request, while the upstream works (before the response head).
    PlainBeforeHead,
    /// A stream, before the response head arrives.
    StreamBeforeHead,
    /// A stream, after some events arrived.
    StreamAfterHead,
    /// While the first route failed and the second is working on it.
    DuringFallback,
}

/// What the books must show after the client left.
struct Expect {
    records: usize,
    /// The record was estimated by the tokenizer (the upstream's usage never arrived).
    estimated: bool,
}

fn expect(leave: Leave, policy: DisconnectPolicy) -> Expect {
    let drain = policy == DisconnectPolicy::Drain;
    match leave {
        Leave::WhileBodyIsRead => Expect {
            records: 0,
            estimated: false,
        },
        Leave::PlainBeforeHead | Leave::StreamBeforeHead | Leave::DuringFallback => Expect {
            records: 1,
            estimated: !drain,
        },
        Leave::StreamAfterHead => Expect {
            records: 1,
            estimated: !drain,
        },
    }
}

struct Setup {
    _mocks: Vec<MockUpstream>,
    gw: Gateway,
    org: String,
    key: String,
}

async fn setup(policy: DisconnectPolicy, fallback: bool) -> Setup {
    let slow = MockConfig {
        ttft: Duration::from_millis(400),
        chunk_gap: Duration::from_millis(20),
        response_tokens: 30,
        ..MockConfig::default()
    };
    let mut mocks = Vec::new();
    if fallback {
        // The first route fails (500) after a while; the second is slow.
        mocks.push(
            MockUpstream::start(MockConfig {
                ttft: Duration::from_millis(200),
                fail_first: 1000,
                fail_status: 500,
                ..MockConfig::default()
            })
            .await
            .unwrap(),
        );
    }
    mocks.push(MockUpstream::start(slow).await.unwrap());
    let bases: Vec<String> = mocks.iter().map(MockUpstream::base_url).collect();
    let gw = start(&openai_models(&bases)).await;
    let gw = restart_with(gw, |c| {
        c.metering.on_client_disconnect = policy;
        c.metering.drain_timeout_ms = 5_000;
        c.server.threads = 1;
    })
    .await;
    // The price of the first route's model applies to the model (config prices).
    let (org, _, _, key) = gw
        .tenant("acme", json!({"rpm": 100_000, "tpm": 100_000_000}))
        .await;
    let b = gw.put_budget(&org, json!({"monthly_limit": "0.01"})).await;
    assert!(b.status.is_success(), "{}", b.text());
    Setup {
        _mocks: mocks,
        gw,
        org,
        key,
    }
}

fn raw_request(addr: &str, key: &str, stream: bool, declared_len: Option<usize>) -> Vec<u8> {
    let body = json!({"model": "gpt-4o-mini", "messages": user("one two three four"), "stream": stream, "max_tokens": 50})
        .to_string();
    let len = declared_len.unwrap_or(body.len());
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    match declared_len {
        Some(_) => req.extend_from_slice(&body.as_bytes()[..body.len() / 2]),
        None => req.extend_from_slice(body.as_bytes()),
    }
    req
}

/// Sends a request over a raw socket and leaves at the row's phase.
async fn leave_at(gw: &Gateway, key: &str, leave: Leave) {
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    match leave {
        Leave::WhileBodyIsRead => {
            sock.write_all(&raw_request(&addr, key, false, Some(4096)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Leave::PlainBeforeHead | Leave::StreamBeforeHead => {
            let stream = matches!(leave, Leave::StreamBeforeHead);
            sock.write_all(&raw_request(&addr, key, stream, None))
                .await
                .unwrap();
            // The upstream answers after 400 ms.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Leave::DuringFallback => {
            sock.write_all(&raw_request(&addr, key, false, None))
                .await
                .unwrap();
            // The first route fails at 200 ms; the second answers at 600 ms.
            tokio::time::sleep(Duration::from_millis(350)).await;
        }
        Leave::StreamAfterHead => {
            sock.write_all(&raw_request(&addr, key, true, None))
                .await
                .unwrap();
            read_at_least(&mut sock, 400).await;
        }
    }
    drop(sock);
}

impl Setup {
    /// The key is still served (nothing left held), then the gateway stops.
    async fn still_serves_and_stops(self, context: &str) {
        self.gw.serves_then_stops(&self.key, "x", context).await;
    }
}

/// Reads at least `bytes` bytes of the answer (a stream that ends before is a failure).
async fn read_at_least(sock: &mut TcpStream, bytes: usize) {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < bytes {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        got += n;
    }
}

/// Waits until no reservation is outstanding and no request is being finished.
async fn settled(app: &Arc<App>) {
    for _ in 0..400 {
        if app.limits.outstanding() == 0 && app.background.running() == 0 {
            app.ledger.flush().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "books not settled: {} reservations, {} tasks",
        app.limits.outstanding(),
        app.background.running()
    );
}

async fn run_row(leave: Leave, policy: DisconnectPolicy) {
    let s = setup(policy, matches!(leave, Leave::DuringFallback)).await;
    let want = expect(leave, policy);
    leave_at(&s.gw, &s.key, leave).await;
    // Long enough for any upstream answer (600 ms at most) and the drain.
    tokio::time::sleep(Duration::from_millis(900)).await;
    settled(&s.gw.app).await;
    let records = s.gw.records().await;
    let row = format!("{leave:?} under {policy:?}");
    assert_eq!(records.len(), want.records, "{row}: records {records:?}");
    if let Some(r) = records.first() {
        assert_eq!(r.status, 499, "{row}: {r:?}");
        assert_eq!(r.estimated, want.estimated, "{row}: {r:?}");
        assert!(r.input_tokens > 0, "{row}: the prompt is billed: {r:?}");
        if !want.estimated {
            assert_eq!(
                r.output_tokens, 30,
                "{row}: the upstream's own usage: {r:?}"
            );
        }
        if matches!(leave, Leave::DuringFallback) {
            assert_eq!(
                r.provider, "p1",
                "{row}: billed to the route that served it"
            );
        }
    }
    assert_eq!(s.gw.app.limits.outstanding(), 0, "{row}: reservations held");
    assert_eq!(
        s.gw.app.budgets.reserved(&s.org, None),
        Some(Decimal::ZERO),
        "{row}: budget hold left"
    );
    // The budget's spend equals the priced ledger, and an ordinary request still passes.
    let usage = s.gw.usage(&s.org).await;
    let budget =
        s.gw.admin(
            Method::GET,
            &format!("/admin/v1/organizations/{}/budget", s.org),
            serde_json::Value::Null,
        )
        .await
        .json();
    let priced: Decimal = usage["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r["exact_cost"]
                        .as_str()
                        .unwrap()
                        .parse::<Decimal>()
                        .unwrap()
                })
                .sum()
        })
        .unwrap_or_default();
    let spent: Decimal = budget["budgets"][0]["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        spent,
        tollgate_billing::round_cents(priced),
        "{row}: {budget}"
    );
    s.still_serves_and_stops(&row).await;
}

macro_rules! rows {
    ($($name:ident: $leave:expr, $policy:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_row($leave, $policy).await;
        }
    )*};
}

rows! {
    body_read_drain: Leave::WhileBodyIsRead, DisconnectPolicy::Drain;
    body_read_cancel: Leave::WhileBodyIsRead, DisconnectPolicy::Cancel;
    plain_before_head_drain: Leave::PlainBeforeHead, DisconnectPolicy::Drain;
    plain_before_head_cancel: Leave::PlainBeforeHead, DisconnectPolicy::Cancel;
    stream_before_head_drain: Leave::StreamBeforeHead, DisconnectPolicy::Drain;
    stream_before_head_cancel: Leave::StreamBeforeHead, DisconnectPolicy::Cancel;
    stream_after_head_drain: Leave::StreamAfterHead, DisconnectPolicy::Drain;
    stream_after_head_cancel: Leave::StreamAfterHead, DisconnectPolicy::Cancel;
    fallback_drain: Leave::DuringFallback, DisconnectPolicy::Drain;
    fallback_cancel: Leave::DuringFallback, DisconnectPolicy::Cancel;
}

/// The case: ten plain requests abandoned while a slow upstream works, on an organization
/// with a $0.01 hard budget, must not lock it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_abandoned_requests_do_not_exhaust_a_small_budget() {
    for policy in [DisconnectPolicy::Drain, DisconnectPolicy::Cancel] {
        let s = setup(policy, false).await;
        for _ in 0..10 {
            leave_at(&s.gw, &s.key, Leave::PlainBeforeHead).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        settled(&s.gw.app).await;
        assert_eq!(
            s.gw.records().await.len(),
            10,
            "{policy:?}: one record each"
        );
        assert_eq!(s.gw.app.budgets.reserved(&s.org, None), Some(Decimal::ZERO));
        s.still_serves_and_stops(&format!("{policy:?}")).await;
    }
}

/// A request cut off by shutdown (no grace) is still billed before `serve` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_shutdown_is_billed_before_serve_returns() {
    for policy in [DisconnectPolicy::Drain, DisconnectPolicy::Cancel] {
        let s = setup(policy, false).await;
        let gw = restart_with(s.gw, |c| c.server.shutdown_grace_secs = 0).await;
        let (org, _, _, key) = gw.tenant("late", json!({"rpm": 1000})).await;
        let addr = gw.base.trim_start_matches("http://").to_owned();
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        sock.write_all(&raw_request(&addr, &key, false, None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let app = gw.app.clone();
        gw.stop().await;
        // serve has returned: the record is durable and nothing is held.
        let records = app
            .store
            .records(
                tollgate_store::UsageFilter {
                    organizations: vec![org],
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{policy:?}: {records:?}");
        assert_eq!(app.limits.outstanding(), 0);
        drop(sock);
    }
}

/// A failing upstream is recorded once with no tokens, and every reservation is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_failing_records_once_and_releases() {
    let mock = MockUpstream::start(MockConfig {
        behavior: Behavior::Ok,
        fail_first: 1000,
        fail_status: 503,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({"rpm": 1000})).await;
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status, http::StatusCode::BAD_GATEWAY, "{}", r.text());
    settled(&gw.app).await;
    let records = gw.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (0, 0));
    assert_eq!(gw.app.limits.outstanding(), 0);
}

/// Sends `body` to `path` as a stream over a raw socket, reads the first events, then leaves.
async fn abandon_stream(gw: &Gateway, key: &str, path: &str, body: serde_json::Value) {
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    read_at_least(&mut sock, 300).await;
    drop(sock);
}

/// A one-thread gateway on `toml` where a new organization's client left a stream of `body` to
/// `path` midway; returns it, once settled, with the one record the stream left (a 499).
async fn abandoned_once(toml: &str, path: &str, body: serde_json::Value) -> (Gateway, UsageRecord) {
    let gw = start(toml).await;
    let gw = restart_with(gw, |c| c.server.threads = 1).await;
    let (_, _, _, key) = gw.tenant("acme", json!({"rpm": 1000})).await;
    abandon_stream(&gw, &key, path, body).await;
    settled(&gw.app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    settled(&gw.app).await;
    let mut records = gw.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].status, 499);
    (gw, records.remove(0))
}

/// Native Responses and Messages streams whose client leaves mid-stream are billed once, with
/// the upstream's own usage under `drain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_responses_and_messages_streams_left_midway_are_billed_once() {
    let cfg = MockConfig {
        response_tokens: 40,
        chunk_gap: Duration::from_millis(15),
        ..MockConfig::default()
    };
    // Responses natively to an openai-kind upstream.
    let mock = MockUpstream::start(cfg.clone()).await.unwrap();
    let (gw, record) = abandoned_once(
        &openai_models(&[mock.base_url()]),
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "one two three", "stream": true}),
    )
    .await;
    assert!(
        !record.estimated,
        "drained to the upstream's usage: {record:?}"
    );
    assert_eq!(record.output_tokens, 40);
    assert_eq!(gw.app.limits.outstanding(), 0);
    gw.stop().await;

    // Messages natively to an anthropic-kind upstream.
    let mock = MockUpstream::start(cfg).await.unwrap();
    let toml = format!(
        "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-upstream\"\n\n[[models]]\nname = \"claude-x\"\nprovider = \"claude\"\ninput_price = \"3\"\noutput_price = \"15\"\n",
        mock.origin()
    );
    let (gw, record) = abandoned_once(
        &toml,
        "/v1/messages",
        json!({"model": "claude-x", "max_tokens": 100, "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert!(!record.estimated, "{record:?}");
    assert_eq!(gw.app.limits.outstanding(), 0);
    gw.stop().await;
}
