//! Billing through the admin API: prices, contracts, import, invoices, reports, budgets, readers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const CATALOGUE: &str = r#"
[[providers]]
name = "sim"
kind = "simulated"
output_tokens = 10

[[owners]]
name = "labs"
revenue_share_percent = "20"

[[models]]
name = "atlas-large"
provider = "sim"
input_price = "3.00"
cached_input_price = "1.50"
output_price = "15.00"
owner = "labs"

[[models]]
name = "atlas-mini"
provider = "sim"
input_price = "0.15"
output_price = "0.60"

[[models]]
name = "m"
provider = "sim"
input_price = "1.00"
output_price = "0"
owner = "labs"

[[models]]
name = "metered"
provider = "sim"
input_price = "0"
output_price = "1000"
"#;

async fn org(gw: &Gateway, name: &str, parent: Option<&str>) -> String {
    let mut body = json!({"name": name});
    if let Some(p) = parent {
        body["parent"] = json!(p);
    }
    let r = gw
        .admin(Method::POST, "/admin/v1/organizations", body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn event(
    id: &str,
    ts: &str,
    org: &str,
    model: &str,
    input: u64,
    cached: u64,
    output: u64,
) -> Value {
    json!({"id": id, "timestamp": ts, "organization": org, "model": model,
           "input_tokens": input, "cached_input_tokens": cached, "output_tokens": output})
}

/// The status of one request for 10 output tokens of the `metered` model.
async fn metered(gw: &Gateway, key: &str) -> StatusCode {
    let body = json!({"model": "metered", "max_tokens": 10, "messages": user("x")});
    gw.chat(key, body).await.status
}

/// `org`'s invoice for `month` as CSV.
async fn invoice_csv(gw: &Gateway, org: &str, month: &str) -> common::Reply {
    let auth = format!("Bearer {ADMIN}");
    let headers = [("authorization", auth.as_str()), ("accept", "text/csv")];
    gw.call(
        Method::GET,
        &format!("/admin/v1/invoices/{org}/{month}"),
        &headers,
        "",
    )
    .await
}

async fn import(gw: &Gateway, events: Vec<Value>) -> common::Reply {
    gw.admin(
        Method::POST,
        "/admin/v1/usage/events",
        json!({"events": events}),
    )
    .await
}

#[tokio::test]
async fn invoice_matches_the_worked_example() {
    let gw = start(CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    let sub = org(&gw, "acme-eu", Some(&acme)).await;
    let r = gw
        .admin(Method::POST, "/admin/v1/prices", json!({"model": "atlas-large", "input_price": "2.00",
            "cached_input_price": "0.50", "output_price": "10.00", "effective_from": "2025-03-16T00:00:00Z"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for (body, status) in [
        (
            json!({"discount_percent": "10", "monthly_commitment": "500", "effective_from": "2025-01-01T00:00:00Z"}),
            StatusCode::OK,
        ),
        (
            json!({"discount_percent": "50", "effective_from": "2025-03-15T09:30:00Z"}),
            StatusCode::OK,
        ),
        (json!({"discount_percent": "150"}), StatusCode::BAD_REQUEST),
    ] {
        let r = gw
            .admin(
                Method::PUT,
                &format!("/admin/v1/organizations/{acme}/contract"),
                body,
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    // A child organization's usage rolls up to its top-level parent.
    #[rustfmt::skip]
    let events = vec![
        event("e1", "2025-03-05T10:00:00Z", &acme, "atlas-large", 30_000_000, 10_000_000, 8_000_000),
        event("e2", "2025-03-06T10:00:00Z", &sub, "atlas-large", 10_000_000, 0, 0),
        event("e3", "2025-03-20T10:00:00Z", &acme, "atlas-large", 20_000_000, 5_000_000, 4_000_000),
        event("e4", "2025-03-10T10:00:00Z", &sub, "atlas-mini", 123_456_789, 23_456_789, 9_876_543),
        event("e5", "2025-04-01T00:00:00Z", &acme, "atlas-mini", 1_000_000, 0, 0),
    ];
    let r = import(&gw, events).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"accepted": 5, "duplicates": 0}));

    let inv = gw
        .admin_ok(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/2025-03"),
            Value::Null,
        )
        .await;
    assert_eq!(inv["organization"], acme.as_str());
    assert_eq!(inv["month"], "2025-03");
    assert_eq!(inv["status"], "final");
    let lines: Vec<(String, String)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["model"].as_str().unwrap().to_owned(),
                l["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("atlas-large".to_owned(), "225.00".to_owned()),
            ("atlas-large".to_owned(), "72.50".to_owned()),
            ("atlas-mini".to_owned(), "24.44".to_owned()),
        ]
    );
    assert_eq!(inv["lines"][0]["input_tokens"], 40_000_000);
    assert_eq!(inv["lines"][0]["cached_input_tokens"], 10_000_000);
    for (k, v) in [
        ("subtotal", "321.94"),
        ("discount", "32.19"),
        ("net", "289.75"),
        ("commitment_shortfall", "210.25"),
        ("total", "500.00"),
    ] {
        assert_eq!(inv[k], v, "{k}");
    }
    let csv = invoice_csv(&gw, &acme, "2025-03").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    assert!(text.starts_with("organization,month,status,model"));
    assert!(text.contains("225.00") && text.contains("500.00"));

    // April: the 50 % contract governs; no commitment any more. The open month is a draft.
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/2025-04"),
            Value::Null,
        )
        .await
        .json();
    assert_eq!(
        (
            inv["subtotal"].as_str(),
            inv["discount"].as_str(),
            inv["total"].as_str()
        ),
        (Some("0.15"), Some("0.08"), Some("0.07"))
    );
    let now = time::OffsetDateTime::now_utc();
    let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/{month}"),
            Value::Null,
        )
        .await
        .json();
    assert_eq!(inv["status"], "draft");

    // Child organizations are not invoiced on their own; bad months are refused.
    assert_eq!(
        gw.admin(
            Method::GET,
            &format!("/admin/v1/invoices/{sub}/2025-03"),
            Value::Null
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        gw.admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/2025-13"),
            Value::Null
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn imports_are_atomic_and_idempotent() {
    let gw = start(CATALOGUE).await;
    let a = org(&gw, "a", None).await;
    let bad = vec![
        event("ok-1", "2025-05-01T00:00:00Z", &a, "m", 10, 0, 1),
        event("x-1", "2025-05-01T00:00:00Z", "org_nope", "m", 10, 0, 1),
        event("x-2", "2025-05-01T00:00:00Z", &a, "no-such-model", 10, 0, 1),
        json!({"id": "x-3", "timestamp": "2025-05-01T00:00:00Z", "organization": a, "model": "m", "input_tokens": -5, "output_tokens": 1}),
        json!({"id": "x-4", "timestamp": "2025-05-01T00:00:00Z", "organization": a, "model": "m", "input_tokens": 1.5, "output_tokens": 1}),
        event("x-5", "2025-05-01T00:00:00Z", &a, "m", 10, 11, 1),
        event("x-6", "yesterday", &a, "m", 10, 0, 1),
        json!({"id": "x-7", "timestamp": "2025-05-01T00:00:00Z", "organization": a, "model": "m", "input_tokens": "10", "output_tokens": 1}),
    ];
    let r = import(&gw, bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let errs = r.json()["error"]["events"].as_array().unwrap().clone();
    let idx: Vec<u64> = errs.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, vec![1, 2, 3, 4, 5, 6, 7]);
    assert!(
        errs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown organization")
    );
    assert!(
        errs[1]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown model")
    );
    assert!(errs[4]["reason"].as_str().unwrap().contains("exceeds"));
    assert!(
        gw.records().await.is_empty(),
        "a rejected batch changed the ledger"
    );

    let good = vec![
        event("b-1", "2025-05-01T00:00:00Z", &a, "m", 1_000_000, 0, 0),
        event("b-2", "2025-05-02T00:00:00Z", &a, "m", 2_000_000, 0, 0),
        event("b-3", "2025-05-03T00:00:00Z", &a, "m", 3_000_000, 0, 0),
    ];
    assert_eq!(
        import(&gw, good.clone()).await.json(),
        json!({"accepted": 3, "duplicates": 0})
    );
    assert_eq!(
        import(&gw, good.clone()).await.json(),
        json!({"accepted": 0, "duplicates": 3})
    );
    let mut mixed = good;
    mixed.push(event(
        "b-4",
        "2025-05-04T00:00:00Z",
        &a,
        "m",
        4_000_000,
        0,
        0,
    ));
    assert_eq!(
        import(&gw, mixed).await.json(),
        json!({"accepted": 1, "duplicates": 3})
    );
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{a}/2025-05"),
            Value::Null,
        )
        .await
        .json();
    assert_eq!(inv["total"], "10.00");
    // Ids repeated inside one batch are refused too.
    let r = import(
        &gw,
        vec![
            event("d", "2025-05-01T00:00:00Z", &a, "m", 1, 0, 0),
            event("d", "2025-05-01T00:00:00Z", &a, "m", 1, 0, 0),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn revenue_report_shares_growth_and_owner_payouts() {
    let gw = start(CATALOGUE).await;
    let a = org(&gw, "alpha", None).await;
    let b = org(&gw, "beta", None).await;
    let r = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/organizations/{b}/contract"),
            json!({"discount_percent": "10", "effective_from": "2025-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = import(
        &gw,
        vec![
            event("a-jan", "2025-01-15T00:00:00Z", &a, "m", 100_000_000, 0, 0),
            event("a-feb", "2025-02-15T00:00:00Z", &a, "m", 150_000_000, 0, 0),
            event("b-feb", "2025-02-20T00:00:00Z", &b, "m", 50_000_000, 0, 0),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let rep = gw
        .admin(
            Method::GET,
            "/admin/v1/reports/revenue?from=2025-01&to=2025-02",
            Value::Null,
        )
        .await;
    assert_eq!(rep.status, StatusCode::OK, "{}", rep.text());
    let rep = rep.json();
    let jan = &rep["months"][0];
    let feb = &rep["months"][1];
    assert_eq!(
        (jan["month"].as_str(), jan["revenue"].as_str()),
        (Some("2025-01"), Some("100.00"))
    );
    assert_eq!(jan["growth_mom_percent"], Value::Null);
    assert_eq!(jan["growth_yoy_percent"], Value::Null);
    assert_eq!(feb["revenue"], "195.00");
    assert_eq!(feb["run_rate"], "2340.00");
    assert_eq!(feb["growth_mom_percent"], "95.0");
    let shares: Vec<(String, String, String)> = feb["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["organization"].as_str().unwrap().to_owned(),
                c["revenue"].as_str().unwrap().to_owned(),
                c["share_percent"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        vec![
            (a.clone(), "150.00".into(), "76.9".into()),
            (b.clone(), "45.00".into(), "23.1".into())
        ]
    );
    let payout = feb["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["owner"] == "labs")
        .unwrap();
    assert_eq!(payout["payout"], "39.00");
    assert_eq!(jan["owners"][0]["payout"], "20.00");

    let q = gw
        .admin(
            Method::GET,
            "/admin/v1/reports/quarterly?from=2025-01&to=2025-03",
            Value::Null,
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    assert!(q.json()["quarters"].as_array().is_some());
    let bad = gw
        .admin(
            Method::GET,
            "/admin/v1/reports/revenue?from=2025-03&to=2025-01",
            Value::Null,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn hard_budgets_hold_under_concurrent_load() {
    let gw = Arc::new(start(CATALOGUE).await);
    let (acme, _, _, key) = gw.tenant("acme", json!({})).await;
    // Each request: 10 output tokens at $1000/M = $0.01 exactly; max_tokens makes the estimate exact.
    gw.admin_ok(
        Method::PUT,
        &format!("/admin/v1/organizations/{acme}/budget"),
        json!({"monthly_limit": "0.20"}),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let gw = gw.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"model": "metered", "max_tokens": 10, "messages": user("x")}).to_string();
            let auth = format!("Bearer {key}");
            let headers = [("authorization", auth.as_str())];
            let r = gw
                .call(Method::POST, "/v1/chat/completions", &headers, body)
                .await;
            (r.status, r.body)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["code"], "insufficient_quota");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 20, "exactly the budget's worth of requests may pass");
    let u = gw.usage(&acme).await;
    assert_eq!(u["data"][0]["cost"], "0.20");
    let b = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/organizations/{acme}/budget"),
            Value::Null,
        )
        .await
        .json();
    assert_eq!(b["budgets"][0]["spent"], "0.20");
    assert_eq!(b["budgets"][0]["exhausted"], true);
    let thresholds: Vec<u64> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["threshold_percent"].as_u64().unwrap())
        .collect();
    assert_eq!(thresholds, vec![50, 80, 100]);
    // Raising the budget lets requests through again at once.
    gw.put_budget(&acme, json!({"monthly_limit": "1.00"})).await;
    assert_eq!(metered(&gw, &key).await, StatusCode::OK);
    // Bad budgets change nothing.
    let r = gw.put_budget(&acme, json!({"monthly_limit": "-1"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = gw.put_budget(&acme, json!({"monthly_limit": 1.5})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn project_budgets_cover_only_their_project() {
    let gw = start(CATALOGUE).await;
    let (acme, project, _, key) = gw.tenant("acme", json!({})).await;
    let (_, _, _, other_key) = gw.tenant_in(&acme, json!({})).await;
    gw.admin_ok(
        Method::PUT,
        &format!("/admin/v1/organizations/{acme}/budget"),
        json!({"monthly_limit": "0.02", "project": project}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(metered(&gw, &key).await, StatusCode::OK);
    }
    assert_eq!(metered(&gw, &key).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(metered(&gw, &other_key).await, StatusCode::OK);
}

#[tokio::test]
async fn reader_keys_see_only_their_own_organization() {
    let gw = start(CATALOGUE).await;
    let a = org(&gw, "a", None).await;
    let child = org(&gw, "a-child", Some(&a)).await;
    let b = org(&gw, "b", None).await;
    import(
        &gw,
        vec![
            event("1", "2025-05-01T00:00:00Z", &a, "m", 1_000_000, 0, 0),
            event("2", "2025-05-01T00:00:00Z", &child, "m", 1_000_000, 0, 0),
            event("3", "2025-05-01T00:00:00Z", &b, "m", 7_000_000, 0, 0),
        ],
    )
    .await;
    let r = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/organizations/{a}/reader-keys"),
            json!({"name": "finance"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let reader = r.json()["key"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {reader}");
    let get = |path: String| {
        let auth = auth.clone();
        let gw = &gw;
        async move {
            gw.call(Method::GET, &path, &[("authorization", &auth)], "")
                .await
        }
    };
    let r = get(format!("/admin/v1/usage?organization={a}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"][0]["requests"], 2);
    assert_eq!(
        get(format!("/admin/v1/usage?organization={child}"))
            .await
            .status,
        StatusCode::OK
    );
    let inv = get(format!("/admin/v1/invoices/{a}/2025-05")).await;
    assert_eq!(inv.status, StatusCode::OK);
    assert_eq!(inv.json()["total"], "2.00");
    // Nothing of any other organization, and no other admin route.
    assert_eq!(
        get(format!("/admin/v1/usage?organization={b}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("/admin/v1/invoices/{b}/2025-05")).await.status,
        StatusCode::NOT_FOUND
    );
    for path in [
        "/admin/v1/organizations".to_owned(),
        format!("/admin/v1/organizations/{a}/projects"),
        "/admin/v1/reports/revenue?from=2025-05&to=2025-05".to_owned(),
        "/admin/v1/prices".to_owned(),
    ] {
        assert_eq!(
            get(path.clone()).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let r = gw
        .call(
            Method::POST,
            "/admin/v1/organizations",
            &[("authorization", &auth)],
            json!({"name": "x"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = gw
        .chat(&reader, json!({"model": "m", "messages": user("x")}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

const CACHE_CATALOGUE: &str = r#"
[[providers]]
name = "sim"
kind = "simulated"
output_tokens = 10

[[models]]
name = "claude"
provider = "sim"
input_price = "3.00"
cached_input_price = "0.30"
cache_write_price = "3.75"
output_price = "15.00"

[[models]]
name = "plain"
provider = "sim"
input_price = "1.00"
output_price = "2.00"
"#;

#[tokio::test]
async fn cache_writes_are_a_price_lane_everywhere() {
    let gw = start(CACHE_CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    // The prices API takes and lists the cache-write price, with effective dates.
    let r = gw
        .admin(
            Method::POST,
            "/admin/v1/prices",
            json!({"model": "claude", "input_price": "2.00",
            "cached_input_price": "0.20", "cache_write_price": "2.50", "output_price": "10.00",
            "effective_from": "2025-03-16T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["cache_write_price"], "2.5");
    let prices = gw
        .admin(Method::GET, "/admin/v1/prices", Value::Null)
        .await
        .json();
    let claude: Vec<&Value> = prices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["model"] == "claude")
        .collect();
    assert_eq!(claude.len(), 2);
    assert_eq!(claude[0]["cache_write_price"], "3.75");
    assert_eq!(claude[1]["cache_write_price"], "2.5");

    // 10M prompt tokens: 2M cache reads, 4M cache writes, 4M plain; 1M output.
    let cache_event = |id: &str, ts: &str| {
        let mut e = event(id, ts, &acme, "claude", 10_000_000, 2_000_000, 1_000_000);
        e["cache_write_input_tokens"] = json!(4_000_000);
        e
    };
    let early = cache_event("c1", "2025-03-05T10:00:00Z");
    let late = cache_event("c2", "2025-03-20T10:00:00Z");
    // A model without a cache-write price: writes pay the input price.
    let mut plain = event(
        "p1",
        "2025-03-05T10:00:00Z",
        &acme,
        "plain",
        2_000_000,
        0,
        0,
    );
    plain["cache_write_input_tokens"] = json!(1_000_000);
    let r = import(&gw, vec![early, late, plain]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Reads and writes together cannot exceed the prompt.
    let mut bad = event("x", "2025-03-05T10:00:00Z", &acme, "claude", 10, 6, 0);
    bad["cache_write_input_tokens"] = json!(5);
    let r = import(&gw, vec![bad]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(
        r.text().contains("cache_write_input_tokens"),
        "{}",
        r.text()
    );

    // Usage rows show the lane; exact_cost prices each lane at its own price.
    let r = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/usage?organization={acme}&from=2025-03-01T00:00:00Z&to=2025-04-01T00:00:00Z"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let usage = r.json();
    let row = |m: &str| {
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .unwrap()
            .clone()
    };
    let c = row("claude");
    assert_eq!(c["input_tokens"], 20_000_000);
    assert_eq!(c["cached_input_tokens"], 4_000_000);
    assert_eq!(c["cache_write_input_tokens"], 8_000_000);
    // Before 03-16: 4 × 3 + 2 × 0.3 + 4 × 3.75 + 1 × 15 = 42.6;
    // after: 4 × 2 + 2 × 0.2 + 4 × 2.5 + 1 × 10 = 28.4.
    assert_eq!(c["exact_cost"], "71");
    let p = row("plain");
    assert_eq!(p["cache_write_input_tokens"], 1_000_000);
    assert_eq!(p["exact_cost"], "2");

    // Invoices price every lane; JSON and CSV carry the cache-write price and tokens.
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/2025-03"),
            Value::Null,
        )
        .await
        .json();
    let amounts: Vec<(&str, &str, &str)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["model"].as_str().unwrap(),
                l["cache_write_price"].as_str().unwrap(),
                l["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            ("claude", "3.75", "42.60"),
            ("claude", "2.5", "28.40"),
            ("plain", "1", "2.00")
        ]
    );
    assert_eq!(inv["lines"][0]["cache_write_input_tokens"], 4_000_000);
    let csv = invoice_csv(&gw, &acme, "2025-03").await.text();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains("cache_write_input_tokens,output_tokens,input_price,cached_input_price,cache_write_price"),
        "{csv}"
    );
    assert!(
        csv.contains(",10000000,2000000,4000000,1000000,3,0.3,3.75,15,42.60"),
        "{csv}"
    );
}

/// Issue #14: a price that overflowed every report ("79228162514264337593543950335") and one in
/// scientific notation ("1e5") were accepted; now both are refused naming the field and the bound,
/// and a bad price already in the store (written by an older version) can break neither a report
/// nor the next start.
#[tokio::test]
async fn hostile_prices_are_refused_and_stored_ones_break_nothing() {
    let mut gw = start(CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    for (price, why) in [
        ("79228162514264337593543950335", "at most 100000"),
        ("1e5", "plain decimal string"),
        ("-1", "plain decimal string"),
        ("0.00001", "at most 4 decimal places"),
        ("100000.01", "at most 100000"),
    ] {
        let r = gw
            .admin(
                Method::POST,
                "/admin/v1/prices",
                json!({"model": "m", "input_price": price,
                "output_price": "1", "effective_from": "2025-03-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{price}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["param"], "input_price", "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("input_price") && msg.contains(why),
            "{price}: {msg}"
        );
    }
    // The largest price, on the largest tokens an event may carry, prices exactly.
    let r = gw
        .admin(
            Method::POST,
            "/admin/v1/prices",
            json!({"model": "m", "input_price": "100000",
            "cached_input_price": "99999.9999", "output_price": "100000",
            "effective_from": "2025-02-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    gw.admin_ok(
        Method::PUT,
        &format!("/admin/v1/organizations/{acme}/budget"),
        json!({"monthly_limit": "1000000000"}),
    )
    .await;
    let big = 1_000_000_000_000;
    let r = import(
        &gw,
        vec![event(
            "big",
            "2025-02-03T00:00:00Z",
            &acme,
            "m",
            big,
            big / 2,
            big,
        )],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // What an older version let in: an overflowing price straight in the store.
    gw.app
        .store
        .put_price(tollgate_store::PriceRow {
            model: "m".into(),
            input_price: "79228162514264337593543950335".into(),
            cached_input_price: None,
            output_price: "79228162514264337593543950335".into(),
            cache_write_price: None,
            effective_from: time::macros::datetime!(2025-02-02 00:00 UTC),
        })
        .await
        .unwrap();
    gw.app.reload_prices().await.unwrap();
    let reports = |acme: &str| {
        [
            format!("/admin/v1/usage?organization={acme}"),
            format!("/admin/v1/invoices/{acme}/2025-02"),
            "/admin/v1/reports/revenue?from=2025-01&to=2025-03".to_owned(),
            "/admin/v1/reports/quarterly?from=2025-01&to=2025-03".to_owned(),
        ]
    };
    for path in reports(&acme) {
        let r = gw.admin(Method::GET, &path, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    // 10^12 × 50,000 + 5 × 10^11 × 99,999.9999 + 10^12 × 100,000 per million tokens.
    let inv = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/invoices/{acme}/2025-02"),
            Value::Null,
        )
        .await
        .json();
    assert_eq!(inv["lines"][0]["exact_cost"], "199999999950");

    // The next start on the same data works (it exited with `Cost: arithmetic overflow`).
    let config = gw.app.config.clone();
    let kept = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
    gw.stop().await;
    let gw = start_with(config, kept).await;
    for path in reports(&acme) {
        let r = gw.admin(Method::GET, &path, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
}

/// Issue #14: imported token counts near u64::MAX were stored as i64::MAX, and a second such
/// event in the same hour made usage, invoices and revenue answer 500 for good. Imports are now
/// bounded per event, and even such counts in the ledger (as an upstream might report) leave
/// every report working.
#[tokio::test]
async fn huge_token_counts_are_refused_or_saturate() {
    let gw = start(CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    let huge = u64::MAX - 1;
    for id in ["h1", "h2"] {
        let r = import(
            &gw,
            vec![event(
                id,
                "2025-03-05T10:00:00Z",
                &acme,
                "metered",
                huge,
                0,
                huge,
            )],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert!(
            r.text()
                .contains("exceeds the limit of 1000000000000 tokens per event"),
            "{}",
            r.text()
        );
    }
    // Twice in one hour, straight into the ledger.
    for (id, minute) in [("l1", 5), ("l2", 35)] {
        let record = tollgate_store::UsageRecord {
            id: id.into(),
            time: time::macros::datetime!(2025-03-05 10:00 UTC) + time::Duration::minutes(minute),
            organization: acme.clone(),
            project: None,
            key: None,
            model: "metered".into(),
            provider: "sim".into(),
            upstream_model: "metered".into(),
            input_tokens: huge,
            cached_input_tokens: 0,
            cache_write_input_tokens: 0,
            output_tokens: huge,
            reasoning_tokens: huge,
            status: 200,
            latency_ms: 1,
            streamed: false,
            estimated: false,
            source: "gateway".into(),
        };
        assert!(gw.app.ledger.append(record).await.unwrap());
    }
    for path in [
        format!("/admin/v1/usage?organization={acme}"),
        format!("/admin/v1/invoices/{acme}/2025-03"),
        "/admin/v1/reports/revenue?from=2025-01&to=2025-03".to_owned(),
    ] {
        let r = gw.admin(Method::GET, &path, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    let usage = gw.usage(&acme).await;
    assert!(usage["data"][0]["output_tokens"].as_u64().unwrap() >= i64::MAX as u64);
}

/// Issue #14: admin bodies reject unknown fields (by name), duplicate keys and oversized
/// strings; money values are bounded; unknown organizations are 404 on every {org} route.
#[tokio::test]
async fn admin_bodies_are_strict() {
    let gw = start(CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    // `{"discount": "10"}` created an empty contract effective now.
    let r = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/organizations/{acme}/contract"),
            json!({"discount": "10"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "discount");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'discount'")
    );
    assert!(
        gw.app
            .store
            .contracts(Some(&acme))
            .await
            .unwrap()
            .is_empty(),
        "a refused body changed the store"
    );
    #[rustfmt::skip]
    let cases = [
        ("/admin/v1/organizations".to_owned(), r#"{"name": "a", "name": "b"}"#, "name"),
        ("/admin/v1/prices".to_owned(), r#"{"model": "m", "input_price": "1", "input_price": "2", "output_price": "1", "effective_from": "2025-01-01T00:00:00Z"}"#, "input_price"),
        (format!("/admin/v1/organizations/{acme}/reader-keys"), r#"{"name": "r", "role": "admin"}"#, "role"),
    ];
    for (path, body, param) in cases {
        let r = gw.call(Method::POST, &path, &headers, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{path}: {}", r.text());
    }
    // Duplicate keys in a PUT body too.
    let r = gw
        .call(
            Method::PUT,
            &format!("/admin/v1/organizations/{acme}/budget"),
            &headers,
            r#"{"monthly_limit": "1", "monthly_limit": "1000"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // A 1 MB name is refused for reader keys, key names and owner keys.
    let long = "k".repeat(1 << 20);
    let r = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/organizations/{acme}/reader-keys"),
            json!({"name": long}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "name");
    let r = gw
        .admin(
            Method::POST,
            "/admin/v1/owners/labs/keys",
            json!({"name": long}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().len() < 2000, "the error echoes the whole name");
    // Money and limits are bounded where they enter.
    #[rustfmt::skip]
    let cases = [
        (format!("/admin/v1/organizations/{acme}/budget"), json!({"monthly_limit": "1e5"}), "monthly_limit"),
        (format!("/admin/v1/organizations/{acme}/budget"), json!({"monthly_limit": "1000000000.01"}), "monthly_limit"),
        (format!("/admin/v1/organizations/{acme}/contract"), json!({"discount_percent": "100.5"}), "discount_percent"),
        (format!("/admin/v1/organizations/{acme}/contract"), json!({"monthly_commitment": "79228162514264337593543950335"}), "monthly_commitment"),
        (format!("/admin/v1/organizations/{acme}/projects"), json!({"name": "p", "tpm": u64::MAX}), "tpm"),
    ];
    for (path, body, param) in cases {
        let method = if path.ends_with("projects") {
            Method::POST
        } else {
            Method::PUT
        };
        let r = gw.admin(method, &path, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}");
    }
    // Unknown organizations are 404 on the {org} routes.
    for (method, path) in [
        (Method::GET, "/admin/v1/organizations/org_nope/budget"),
        (Method::GET, "/admin/v1/organizations/org_nope/projects"),
        (Method::GET, "/admin/v1/organizations/org_nope"),
        (Method::GET, "/admin/v1/organizations/org_nope/risk"),
        (Method::GET, "/admin/v1/invoices/org_nope/2025-03"),
    ] {
        let r = gw.admin(method, path, Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}");
    }
}

/// Issue #14: a 100,000-event import (the stated limit) failed with a broken pipe at the 2 MiB
/// default body limit. The route now takes bodies up to 64 MiB, and says so when exceeded.
#[tokio::test]
async fn bulk_import_takes_100000_events_and_states_its_limit() {
    let gw = start(CATALOGUE).await;
    let acme = org(&gw, "acme", None).await;
    let events: Vec<Value> = (0..100_000)
        .map(|i| {
            event(
                &format!("bulk-{i:06}"),
                "2025-03-05T10:00:00Z",
                &acme,
                "m",
                1000,
                0,
                10,
            )
        })
        .collect();
    let r = import(&gw, events).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"accepted": 100_000, "duplicates": 0}));
    let usage = gw.usage(&acme).await;
    assert_eq!(usage["data"][0]["requests"], 100_000);
    assert_eq!(usage["data"][0]["input_tokens"], 100_000_000);

    let auth = format!("Bearer {ADMIN}");
    let mut body = br#"{"events": []"#.to_vec();
    body.resize(64 * 1024 * 1024 + 1, b' ');
    body.push(b'}');
    let r = gw
        .call(
            Method::POST,
            "/admin/v1/usage/events",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("64 MiB") && msg.contains("100000 events"),
        "{msg}"
    );
}
