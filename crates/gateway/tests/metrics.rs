//! `GET /metrics` after real traffic: requests by route, model, provider and status (answered,
//! unauthenticated, rate-limited, over budget, upstream failure), tokens by lane, latency
//! histograms, refusal counters, breakers, and the names kept from earlier versions; and the
//! page parses as the Prometheus text format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use tollgate_mock::{MockConfig, MockUpstream};

/// One sample line: the series (name and labels as written) and its value.
type Samples = HashMap<String, f64>;

/// Parses the Prometheus text format (0.0.4) strictly enough to catch a malformed page: every
/// line is `# HELP name …`, `# TYPE name kind`, or `name{label="value",…} number`, every sample
/// belongs to a family declared by a `# TYPE` line before it, and no family is declared twice.
fn parse_exposition(text: &str) -> Samples {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad HELP line: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(valid_name(name), "bad TYPE line: {line}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad sample name: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(valid_name(k), "bad label name in: {line}");
                assert!(v.starts_with('"'), "unquoted label value in: {line}");
            }
        }
        let family = types.keys().find(|f| {
            name == f.as_str()
                || (types[f.as_str()] == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{f}{s}")))
        });
        assert!(family.is_some(), "sample without a TYPE line: {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn get(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

const CHAT: &str = "/v1/chat/completions";

fn requests(model: &str, provider: &str, status: u16) -> String {
    format!(
        "tollgate_requests_total{{route=\"{CHAT}\",model=\"{model}\",provider=\"{provider}\",status=\"{status}\"}}"
    )
}

#[tokio::test]
async fn metrics_count_requests_tokens_latency_and_refusals_by_label() {
    let mock = MockUpstream::start(MockConfig {
        response_tokens: 16,
        cached_tokens: 4,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    let before = parse_exposition(&gw.call(Method::GET, "/metrics", &[], "").await.text());
    // Configured models have their series from the start, at zero.
    assert_eq!(
        get(
            &before,
            "tollgate_tokens_total{model=\"gpt-4o-mini\",lane=\"input\"}"
        ),
        0.0
    );

    // Answered: two plain and one streamed.
    let (_, _, _, key) = gw.tenant("acme", json!({"rpm": 4})).await;
    let msg = json!([{"role": "user", "content": "hello there"}]);
    for _ in 0..2 {
        let r = gw
            .chat(&key, json!({"model": "gpt-4o-mini", "messages": msg}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": msg, "stream": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("[DONE]"));
    // A fourth passes the limit of 4 a minute; the fifth is refused (rate limit).
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    // Unauthenticated, and an unknown model.
    let r = gw
        .chat(
            "tg-not-a-key",
            json!({"model": "gpt-4o-mini", "messages": msg}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (acme2, _, _, key2) = gw.tenant("budgeted", json!({})).await;
    let r = gw
        .chat(&key2, json!({"model": "no-such-model", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Over budget: the first request spends past the tiny limit, the second is refused.
    gw.admin_ok(
        Method::PUT,
        &format!("/admin/v1/organizations/{acme2}/budget"),
        json!({"monthly_limit": "0.000001"}),
    )
    .await;
    let r = gw
        .chat(&key2, json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = gw
        .chat(&key2, json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "insufficient_quota");

    // The upstream fails every attempt: 502, billed with no tokens.
    mock.set_config(MockConfig {
        fail_first: 1000,
        fail_status: 500,
        ..mock.config()
    });
    let (_, _, _, key3) = gw.tenant("unlucky", json!({})).await;
    let r = gw
        .chat(&key3, json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    let page = gw.call(Method::GET, "/metrics", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    assert!(page.text().contains("\ntollgate_spool_records 0\n"));
    let m = parse_exposition(&page.text());
    assert_eq!(get(&m, &requests("gpt-4o-mini", "p0", 200)), 5.0);
    assert_eq!(get(&m, &requests("gpt-4o-mini", "p0", 502)), 1.0);
    assert_eq!(get(&m, &requests("gpt-4o-mini", "none", 429)), 2.0);
    assert_eq!(get(&m, &requests("other", "none", 401)), 1.0);
    assert_eq!(get(&m, &requests("other", "none", 404)), 1.0);
    assert_eq!(get(&m, "tollgate_ratelimit_refused_total"), 1.0);
    assert_eq!(get(&m, "tollgate_budget_refused_total"), 1.0);

    // Tokens by lane equal the ledger's records.
    let records = gw.records().await;
    assert_eq!(records.len(), 6);
    let sum =
        |f: fn(&tollgate_store::UsageRecord) -> u64| records.iter().map(f).sum::<u64>() as f64;
    let tokens = |lane: &str| {
        get(
            &m,
            &format!("tollgate_tokens_total{{model=\"gpt-4o-mini\",lane=\"{lane}\"}}"),
        )
    };
    assert!(tokens("input") > 0.0);
    assert_eq!(tokens("input"), sum(|r| r.input_tokens));
    assert_eq!(tokens("cached_input"), sum(|r| r.cached_input_tokens));
    assert!(tokens("cached_input") > 0.0);
    assert_eq!(tokens("output"), sum(|r| r.output_tokens));
    assert_eq!(tokens("output"), 80.0);
    assert_eq!(tokens("cache_write"), 0.0);

    // Histograms: one duration and one overhead per dispatched request, one upstream head per
    // attempt (the failed request made two).
    assert_eq!(
        get(
            &m,
            "tollgate_request_duration_seconds_count{model=\"gpt-4o-mini\"}"
        ),
        6.0
    );
    assert_eq!(
        get(
            &m,
            "tollgate_request_duration_seconds_bucket{model=\"gpt-4o-mini\",le=\"+Inf\"}"
        ),
        6.0
    );
    assert_eq!(get(&m, "tollgate_gateway_overhead_seconds_count"), 6.0);
    assert_eq!(
        get(
            &m,
            "tollgate_upstream_ttfb_seconds_count{model=\"gpt-4o-mini\",provider=\"p0\"}"
        ),
        7.0
    );
    assert!(
        get(
            &m,
            "tollgate_request_duration_seconds_sum{model=\"gpt-4o-mini\"}"
        ) > 0.0
    );

    // The breaker of the one route, and the guard's (idle) counters.
    let states: f64 = ["closed", "open", "half-open"]
        .iter()
        .map(|s| {
            get(
                &m,
                &format!(
                    "tollgate_breaker_state{{model=\"gpt-4o-mini\",provider=\"p0\",state=\"{s}\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(states, 1.0, "exactly one state is current");
    assert_eq!(
        get(&m, "tollgate_guard_actions_total{action=\"flag\"}"),
        0.0
    );

    // Names kept from earlier versions.
    assert_eq!(get(&m, "tollgate_ledger_records_total"), 6.0);
    for name in [
        "tollgate_ledger_queued",
        "tollgate_spool_bytes",
        "tollgate_spool_records",
        "tollgate_store_commit_seconds_last",
        "tollgate_store_commit_seconds_sum",
        "tollgate_store_up",
        "tollgate_sync_last_seq",
        "tollgate_ratelimit_redis_errors_total",
        "tollgate_keys",
    ] {
        get(&m, name);
    }
    gw.stop().await;
}
