//! Usage-policy enforcement end to end: detection on the request path, automatic review,
//! operator decisions with the audit log, risk/flags/evidence shapes, owner-scoped reviews and
//! owner evidence, trusted-proxy client addresses, and a benign product workload left alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_mock::{MockConfig, MockUpstream};

const TOPICS: &[&str] = &[
    "photosynthesis",
    "the French revolution",
    "quantum tunneling",
    "compound interest",
    "plate tectonics",
    "the immune system",
    "public key cryptography",
    "supply and demand",
    "black holes",
    "the Krebs cycle",
    "Byzantine fault tolerance",
    "Roman aqueducts",
    "game theory",
    "protein folding",
    "monetary policy",
    "the water cycle",
    "sorting algorithms",
    "impressionist painting",
    "volcanic eruptions",
    "Bayesian statistics",
];
const ASKS: &[&str] = &[
    "Explain {t} to a graduate student.",
    "What are the main open problems about {t}?",
    "Write a detailed exam question about {t} and answer it.",
    "Compare {t} with a related idea and give examples.",
    "Derive the key result behind {t}.",
];
const ELICIT: &[&str] = &[
    "Think step by step.",
    "Explain every step of your reasoning.",
    "Show your reasoning before giving the final answer.",
    "Give a detailed chain of thought, then the final answer.",
];

/// Harvesting request `i`: broad topics, elicited reasoning, output distributions.
fn harvest_body(model: &str, i: usize) -> Value {
    let t = TOPICS[(i * 7 + i / 3) % TOPICS.len()];
    let ask = ASKS[(i * 3 + i / 5) % ASKS.len()].replace("{t}", t);
    let e = ELICIT[i % ELICIT.len()];
    let temperature = [0.2, 0.5, 0.8, 1.0, 1.2][i % 5];
    json!({
        "model": model,
        "messages": user(&format!("{ask} {e} (variant {i})")),
        "logprobs": true, "top_logprobs": 5, "n": 4,
        "temperature": temperature,
        "max_tokens": 4000
    })
}

const BRANDS: &[&str] = &[
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Hooli",
    "Vandelay",
];
const PRODUCTS: &[&str] = &[
    "running shoes",
    "leather handbag",
    "wireless earbuds",
    "ceramic mug",
    "desk lamp",
];
const COLORS: &[&str] = &["red", "navy", "olive", "charcoal", "white"];

/// A templated product workload: alt text for product photos.
fn product_body(i: usize) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": user(&format!(
            "Write a one-sentence alt text for a product photo. Product: {} {} in {}, SKU {}. Style: concise, factual.",
            BRANDS[i % BRANDS.len()], PRODUCTS[(i / 2) % PRODUCTS.len()], COLORS[(i / 3) % COLORS.len()], 10_000 + i * 37
        )),
        "max_tokens": 200, "temperature": 0.2, "seed": 7
    })
}

/// Two owners, each with one model on the mock upstream.
fn config(mock: &str, guard: &str) -> String {
    config_with_policies(mock, guard, "", "")
}

/// [`config`] with each owner's `[owners.enforcement]` table (none where empty).
fn config_with_policies(mock: &str, guard: &str, openai: &str, northwind: &str) -> String {
    let table = |t: &str| {
        if t.is_empty() {
            String::new()
        } else {
            format!("[owners.enforcement]\n{t}\n")
        }
    };
    let (openai, northwind) = (table(openai), table(northwind));
    format!(
        r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "{mock}"
api_key = "sk-up"

[[owners]]
name = "openai"
revenue_share_percent = "20"
policy = "Outputs may not be used to develop models that compete with OpenAI."
{openai}
[[owners]]
name = "northwind"
revenue_share_percent = "30"
policy = "No use of outputs to train other models."
{northwind}
[[models]]
name = "gpt-4o-mini"
provider = "up"
input_price = "0.15"
output_price = "0.60"
owner = "openai"

[[models]]
name = "northwind-7b"
provider = "up"
input_price = "0.10"
output_price = "0.40"
owner = "northwind"

[guard]
{guard}

[guard.detector]
min_requests = 30
cluster_interval = 0
"#
    )
}

async fn setup(guard: &str) -> (MockUpstream, Gateway) {
    setup_with_policies(guard, "", "").await
}

/// A mock and the config where `[guard]` flags and owner `openai` reviews automatically.
async fn openai_reviews() -> (MockUpstream, String) {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let cfg = config_with_policies(
        &mock.base_url(),
        r#"action = "flag""#,
        r#"action = "review""#,
        "",
    );
    (mock, cfg)
}

/// A gateway whose owners `openai` and `northwind` have these `[owners.enforcement]` tables.
async fn setup_with_policies(
    guard: &str,
    openai: &str,
    northwind: &str,
) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&config_with_policies(
        &mock.base_url(),
        guard,
        openai,
        northwind,
    ))
    .await;
    (mock, gw)
}

/// A chat request as forwarded by the trusted loopback proxy for client `ip`.
async fn chat_from(gw: &Gateway, key: &str, ip: &str, body: Value) -> Reply {
    let auth = format!("Bearer {key}");
    gw.post_as(
        "/v1/chat/completions",
        &auth,
        &[("x-forwarded-for", ip)],
        body.to_string(),
    )
    .await
}

async fn post(gw: &Gateway, path: &str, body: Value) -> Reply {
    gw.admin(Method::POST, path, body).await
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let r = gw.admin(Method::GET, path, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    r.json()
}

/// Sends harvesting requests until one is refused; returns how many were sent and the refusal.
async fn harvest_until_refused(gw: &Gateway, key: &str, model: &str, max: usize) -> (usize, Reply) {
    for i in 0..max {
        let r = gw.chat(key, harvest_body(model, i)).await;
        if r.status != StatusCode::OK {
            return (i + 1, r);
        }
    }
    panic!("not refused after {max} harvesting requests");
}

/// Polls the audit log until `pred` holds (the guard writes it in the background).
async fn audit_until(gw: &Gateway, org: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let v = get(gw, &format!("/admin/v1/audit?organization={org}")).await;
        let data = v["data"].as_array().unwrap().clone();
        if pred(&data) {
            return data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("audit condition never held");
}

fn has(data: &[Value], actor: &str, action: &str) -> bool {
    data.iter()
        .any(|e| e["actor"] == actor && e["action"] == action)
}

#[tokio::test]
async fn harvesting_is_flagged_suspended_reinstated_and_terminated_with_an_audit_trail() {
    let (_mock, gw) = setup(r#"action = "review""#).await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;

    let (sent, refused) = harvest_until_refused(&gw, &key, "gpt-4o-mini", 300).await;
    assert!(sent >= 30, "flagged before min_requests: {sent}");
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    assert_eq!(refused.json()["error"]["type"], "invalid_request_error");
    // Still refused on the next request (state, not a one-off).
    let again = gw.chat(&key, harvest_body("gpt-4o-mini", 1)).await;
    assert_eq!(again.json()["error"]["code"], "account_under_review");

    // Risk: the contract shape with reasons.
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["organization"], org.as_str());
    assert_eq!(risk["state"], "under_review");
    assert_eq!(risk["flagged"], true);
    let score = risk["score"].as_f64().unwrap();
    assert!((0.8..=1.0).contains(&score), "score {score}");
    assert!(risk["cluster"].is_null() || risk["cluster"].is_string());
    let signals = risk["signals"].as_array().unwrap();
    assert!(!signals.is_empty());
    for s in signals {
        assert!(s["name"].is_string() && s["value"].is_number() && s["explanation"].is_string());
    }
    assert!(
        signals
            .iter()
            .any(|s| s["name"] == "elicitation" || s["name"] == "output_distribution")
    );

    // Flags list it.
    let flags = get(&gw, "/admin/v1/flags").await;
    let f = flags["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["organization"] == org.as_str())
        .expect("flag listed")
        .clone();
    assert!(f["score"].as_f64().unwrap() >= 0.8);
    assert!(f["flagged_at"].as_str().unwrap().contains('T'));
    assert!(f.get("cluster").is_some());

    // The guard audited the flag and the automatic review.
    let audit = audit_until(&gw, &org, |d| has(d, "guard", "review")).await;
    assert!(has(&audit, "guard", "flag"));
    for e in audit.iter().filter(|e| e["actor"] == "guard") {
        assert!(e["time"].as_str().unwrap().contains('T'));
        assert!(!e["reason"].as_str().unwrap().is_empty(), "{e}");
    }
    // And the store holds the state (survives a restart).
    for _ in 0..100 {
        if gw
            .app
            .store
            .organization(&org)
            .await
            .unwrap()
            .unwrap()
            .state
            == tollgate_store::AccountState::UnderReview
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.app
            .store
            .organization(&org)
            .await
            .unwrap()
            .unwrap()
            .state,
        tollgate_store::AccountState::UnderReview
    );

    // A reason is required.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/reinstate"),
        json!({"reason": " "}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Reinstate: works again at once, and is not re-suspended automatically.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/reinstate"),
        json!({"reason": "research lab with a signed evaluation agreement"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for i in 0..5 {
        let ok = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["state"], "active");

    // Manual review, then terminate.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/review"),
        json!({"reason": "second look"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refused = gw.chat(&key, product_body(1)).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/terminate"),
        json!({"reason": "confirmed distillation"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refused = gw.chat(&key, product_body(1)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"]["code"], "account_terminated");
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["state"], "terminated");

    // Every admin action is in the log with who, when and why, in order.
    let audit = get(&gw, &format!("/admin/v1/audit?organization={org}")).await;
    let actions: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "admin" && e["action"] != "create_organization")
        .filter(|e| e["action"] != "create_project" && e["action"] != "create_key")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                "admin".into(),
                "reinstate".into(),
                "research lab with a signed evaluation agreement".into()
            ),
            ("admin".into(), "review".into(), "second look".into()),
            (
                "admin".into(),
                "terminate".into(),
                "confirmed distillation".into()
            ),
        ]
    );
    let all = get(&gw, "/admin/v1/audit").await;
    for e in all["data"].as_array().unwrap() {
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        for k in ["time", "actor", "action", "organization", "reason"] {
            assert!(keys.iter().any(|x| x.as_str() == k), "{k} missing in {e}");
        }
    }
}

#[tokio::test]
async fn flag_action_flags_without_suspending_and_evidence_samples_only_flagged_accounts() {
    // Distinct client addresses (through the trusted loopback proxy): a shared IP would link
    // the two accounts into one cluster.
    let (_mock, gw) = setup(
        r#"action = "flag"
trusted_proxies = ["127.0.0.1/32"]"#,
    )
    .await;
    let (bad, _, _, bad_key) = gw.tenant("harvester", json!({})).await;
    let (good, _, _, good_key) = gw.tenant("shop", json!({})).await;
    for i in 0..120 {
        let r = chat_from(
            &gw,
            &bad_key,
            "198.51.100.9",
            harvest_body("gpt-4o-mini", i),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "flag must not suspend: {}",
            r.text()
        );
        let r = chat_from(&gw, &good_key, "203.0.113.50", product_body(i)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{bad}/risk")).await;
    assert_eq!(risk["flagged"], true);
    assert_eq!(risk["state"], "active");
    audit_until(&gw, &bad, |d| has(d, "guard", "flag")).await;

    // The benign templated product workload is not flagged.
    let risk = get(&gw, &format!("/admin/v1/organizations/{good}/risk")).await;
    assert_eq!(risk["flagged"], false, "{risk}");
    assert!(risk["score"].as_f64().unwrap() < 0.5, "{risk}");
    let flags = get(&gw, "/admin/v1/flags").await;
    let flagged: Vec<&str> = flags["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["organization"].as_str().unwrap())
        .collect();
    assert!(
        flagged.contains(&bad.as_str()) && !flagged.contains(&good.as_str()),
        "{flags} bad={bad} good={good}"
    );

    // Evidence of the flagged account: timelines, templates, extent, policies, a bounded sample.
    let ev = get(&gw, &format!("/admin/v1/organizations/{bad}/evidence")).await;
    for k in [
        "organization",
        "score",
        "flagged",
        "signals",
        "timeline",
        "top_templates",
        "keys",
        "linked_accounts",
        "extent",
        "sample",
        "policies",
        "audit",
        "state",
    ] {
        assert!(ev.get(k).is_some(), "evidence lacks {k}");
    }
    assert_eq!(ev["flagged"], true);
    let sample = ev["sample"].as_array().unwrap();
    assert!(!sample.is_empty() && sample.len() <= 50);
    assert!(sample[0]["text"].as_str().unwrap().len() <= 1024);
    assert!(!ev["timeline"].as_array().unwrap().is_empty());
    assert!(!ev["top_templates"].as_array().unwrap().is_empty());
    let overall = &ev["extent"]["overall"];
    assert_eq!(overall["requests"], 120);
    assert!(overall["harvesting_request_share"].as_f64().unwrap() > 0.9);
    assert!(overall["harvesting_tokens"].as_u64().unwrap() > 0);
    let policies = ev["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "only the owner whose models were used");
    assert_eq!(policies[0]["owner"], "openai");
    assert!(policies[0]["policy"].as_str().unwrap().contains("compete"));

    // The benign account's evidence holds no prompts.
    let ev = get(&gw, &format!("/admin/v1/organizations/{good}/evidence")).await;
    assert_eq!(ev["flagged"], false);
    assert!(ev["sample"].as_array().unwrap().is_empty());
    assert_eq!(ev["extent"]["overall"]["requests"], 120);
    // Unknown organizations are 404.
    let r = gw
        .admin(
            Method::GET,
            "/admin/v1/organizations/org_nope/evidence",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn owner_scoped_review_keeps_other_owners_models_and_owners_see_only_their_evidence() {
    let (_mock, gw) = setup(r#"action = "flag""#).await;
    let (org, _, _, key) = gw.tenant("mixed", json!({})).await;
    // Harvest on both owners' models (and some plain product use).
    for i in 0..80 {
        let model = if i % 2 == 0 {
            "gpt-4o-mini"
        } else {
            "northwind-7b"
        };
        let r = gw.chat(&key, harvest_body(model, i)).await;
        assert_eq!(r.status, StatusCode::OK);
    }

    // Owner keys: created by the admin, shown once, stored hashed.
    let r = post(&gw, "/admin/v1/owners/northwind/keys", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let nw_key = r.json()["key"].as_str().unwrap().to_owned();
    assert!(nw_key.starts_with("tgo-"));
    let stored = gw.app.store.owner_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].owner, "northwind");
    assert!(nw_key.starts_with(stored[0].prefix.trim_end_matches('…')));
    assert_eq!(
        stored[0].hash,
        tollgate_gateway::tenancy::hash_key(&nw_key),
        "only the owner key's SHA-256 is stored"
    );
    let r = post(&gw, "/admin/v1/owners/openai/keys", json!({})).await;
    let oa_key = r.json()["key"].as_str().unwrap().to_owned();
    let r = post(&gw, "/admin/v1/owners/nobody/keys", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let as_owner = |k: &str| format!("Bearer {k}");
    // Northwind reports the customer.
    let r = gw
        .call(
            Method::POST,
            "/admin/v1/owners/northwind/reports",
            &[
                ("authorization", &as_owner(&nw_key)),
                ("content-type", "application/json"),
            ],
            json!({"organization": org, "reason": "outputs seen in a competitor's training set"})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let audit = audit_until(&gw, &org, |d| has(d, "northwind", "owner_report")).await;
    assert!(audit.iter().any(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("competitor"))
    }));
    // An owner key cannot act for another owner, nor use the admin API.
    let r = gw
        .call(
            Method::POST,
            "/admin/v1/owners/openai/reports",
            &[("authorization", &as_owner(&nw_key))],
            json!({"organization": org, "reason": "x"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = gw
        .call(
            Method::GET,
            &format!("/admin/v1/organizations/{org}/evidence"),
            &[("authorization", &as_owner(&nw_key))],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Northwind's evidence: only its own models' extent and prompts.
    let r = gw
        .call(
            Method::GET,
            &format!("/admin/v1/owners/northwind/evidence/{org}"),
            &[("authorization", &as_owner(&nw_key))],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ev = r.json();
    assert_eq!(ev["model_owner"], "northwind");
    assert_eq!(ev["extent"]["owner"], "northwind");
    assert_eq!(ev["extent"]["totals"]["requests"], 40);
    assert!(
        ev["extent"]["totals"]["harvesting_request_share"]
            .as_f64()
            .unwrap()
            > 0.9
    );
    assert!(!ev["extent"]["days"].as_array().unwrap().is_empty());
    assert!(ev["policy"].as_str().unwrap().contains("train"));
    let text = ev.to_string();
    assert!(!text.contains("openai"), "other owner leaked: {text}");
    for k in [
        "signals",
        "top_templates",
        "keys",
        "linked_accounts",
        "timeline",
    ] {
        assert!(ev.get(k).is_none(), "{k} spans other owners");
    }
    for s in ev["sample"].as_array().unwrap() {
        assert_eq!(s["model_owner"], "northwind");
    }
    let r = gw
        .call(
            Method::GET,
            &format!("/admin/v1/owners/openai/evidence/{org}"),
            &[("authorization", &as_owner(&oa_key))],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["extent"]["totals"]["requests"], 40);
    assert!(!r.text().contains("northwind"));

    // Owner-scoped review (admin): northwind's models refuse, openai's keep working.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/review"),
        json!({"reason": "northwind report", "owner": "northwind"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refused = gw.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let ok = gw.chat(&key, product_body_for("gpt-4o-mini")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["state"], "active");
    assert_eq!(risk["owner_reviews"][0]["owner"], "northwind");
    // Persisted in the store.
    let stored = gw.app.store.owner_reviews(Some(&org)).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].owner, "northwind");

    // Owner-scoped termination, then reinstatement of that scope.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/terminate"),
        json!({"reason": "confirmed", "owner": "northwind"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let refused = gw.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(refused.json()["error"]["code"], "account_terminated");
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/reinstate"),
        json!({"reason": "settled", "owner": "northwind"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let ok = gw.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let audit = get(&gw, &format!("/admin/v1/audit?organization={org}")).await;
    let scoped: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "admin")
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.ends_with("_owner_scope"))
        .collect();
    assert_eq!(
        scoped,
        vec![
            "review_owner_scope",
            "terminate_owner_scope",
            "reinstate_owner_scope"
        ]
    );
}

fn product_body_for(model: &str) -> Value {
    let mut b = product_body(3);
    b["model"] = json!(model);
    b
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    // Loopback is the test client's peer: trusted in one gateway, not in the other.
    for (trusted, want) in [(true, "203.0.113.7"), (false, "127.0.0.1")] {
        let guard = if trusted {
            r#"action = "flag"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]"#
        } else {
            r#"action = "flag"
trusted_proxies = ["10.0.0.0/8"]"#
        };
        let (_mock, gw) = setup(guard).await;
        let (org, _, _, key) = gw.tenant("behind-proxy", json!({})).await;
        let auth = format!("Bearer {key}");
        // Client, then an internal proxy hop (trusted and skipped), then the peer.
        let r = gw
            .post_as(
                "/v1/chat/completions",
                &auth,
                &[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.1.2.3")],
                product_body(1).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let ev = get(&gw, &format!("/admin/v1/organizations/{org}/evidence")).await;
        let snap = gw.app.guard.detector.snapshot().to_string();
        assert!(
            snap.contains(want),
            "trusted={trusted}: want client {want} in {}",
            &ev["organization"]
        );
        let other = if trusted { "127.0.0.1" } else { "203.0.113.7" };
        assert!(
            !snap.contains(&format!("\"{other}\"")) && !snap.contains(&format!("IP {other}")),
            "trusted={trusted}: {other} must not be recorded"
        );
        assert!(
            !snap.contains("198.51.100.1"),
            "spoofable left-most hop used"
        );
    }
}

#[tokio::test]
async fn throttle_and_strip_apply_to_flagged_accounts_only() {
    let (mock, gw) = setup(
        r#"action = "flag"
strip_logprobs = true
max_n = 1
throttle_rpm = 1000
trusted_proxies = ["127.0.0.1/32"]"#,
    )
    .await;
    let (_org, _, _, key) = gw.tenant("harvester", json!({})).await;
    let (_good, _, _, good_key) = gw.tenant("shop", json!({})).await;
    let mut good = product_body(1);
    good["logprobs"] = json!(true);
    good["n"] = json!(3);
    let r = chat_from(&gw, &good_key, "203.0.113.50", good.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    for i in 0..100 {
        let r = chat_from(&gw, &key, "198.51.100.9", harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let seen = mock.requests();
    let first = seen[0].json().unwrap();
    assert_eq!(first["logprobs"], true, "unflagged requests are untouched");
    assert_eq!(first["n"], 3);
    let last = seen.last().unwrap().json().unwrap();
    assert!(last.get("logprobs").is_none() && last.get("top_logprobs").is_none());
    assert_eq!(last["n"], 1);
    assert!(last["messages"].is_array());
}

#[tokio::test]
async fn throttle_refuses_flagged_accounts_above_the_rpm() {
    let (_mock, gw) = setup(
        r#"action = "flag"
throttle_rpm = 2"#,
    )
    .await;
    let (_org, _, _, key) = gw.tenant("harvester", json!({})).await;
    let mut limited = None;
    for i in 0..200 {
        let r = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = limited.expect("throttled once flagged");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn record_only_never_acts() {
    let (_mock, gw) = setup(r#"action = "record""#).await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    for i in 0..100 {
        let r = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert!(risk["score"].as_f64().unwrap() >= 0.8, "{risk}");
    assert_eq!(risk["state"], "active");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let audit = get(&gw, &format!("/admin/v1/audit?organization={org}")).await;
    assert!(!has(audit["data"].as_array().unwrap(), "guard", "flag"));
}

#[tokio::test]
async fn detector_state_and_reviews_survive_a_restart() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let cfg = config(&mock.base_url(), r#"action = "flag""#);
    let gw = start(&cfg).await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    for i in 0..60 {
        gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
    }
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/review"),
        json!({"reason": "scoped", "owner": "northwind"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let before = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(before["flagged"], true);
    // Stop (snapshot at shutdown), then start a new gateway on the same database.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("{}/ledger.db", gw.dir.path().display());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n[storage]\nurl = \"sqlite://{db}\"\n{cfg}"
    );
    let keep = gw.app.clone();
    // Persist exactly as shutdown does, then drop the first gateway.
    keep.guard.persist(&keep.store).await;
    keep.ledger.flush().await.unwrap();
    let gw2 = start_with(tollgate_config::Config::from_toml(&text).unwrap(), dir).await;
    let after = get(&gw2, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(after["flagged"], true);
    assert_eq!(after["requests"], before["requests"]);
    assert_eq!(after["owner_reviews"][0]["owner"], "northwind");
    let refused = gw2.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    gw2.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_resellers_owner_scoped_review_covers_its_customers() {
    let (_mock, gw) = setup(r#"action = "flag""#).await;
    let r = post(&gw, "/admin/v1/organizations", json!({"name": "reseller"})).await;
    let reseller = r.json()["id"].as_str().unwrap().to_owned();
    let r = post(
        &gw,
        "/admin/v1/organizations",
        json!({"name": "customer", "parent": reseller}),
    )
    .await;
    let customer = r.json()["id"].as_str().unwrap().to_owned();
    let (_, _, _, key) = gw.tenant_in(&customer, json!({})).await;
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{reseller}/review"),
        json!({"reason": "reseller under investigation by northwind", "owner": "northwind"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refused = gw.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let ok = gw.chat(&key, product_body_for("gpt-4o-mini")).await;
    assert_eq!(ok.status, StatusCode::OK);
    // Unknown owners and organizations are refused.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{customer}/review"),
        json!({"reason": "x", "owner": "nobody"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(
        &gw,
        "/admin/v1/organizations/org_missing/terminate",
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// The view of one policy in a risk answer.
fn policy_in(risk: &Value, policy: &str) -> Value {
    risk["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == policy)
        .unwrap_or_else(|| panic!("no policy {policy} in {risk}"))
        .clone()
}

#[tokio::test]
async fn an_owners_review_policy_reviews_only_its_models_and_a_record_policy_never_acts() {
    // [guard] only flags; openai's policy reviews; northwind's only records.
    let (mock, gw) = setup_with_policies(
        r#"action = "flag"
trusted_proxies = ["127.0.0.1/32"]"#,
        r#"action = "review""#,
        r#"action = "record""#,
    )
    .await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;

    // Harvesting openai's model: refused once flagged, for openai's models only.
    let mut refused = None;
    for i in 0..300 {
        let r = chat_from(&gw, &key, "198.51.100.9", harvest_body("gpt-4o-mini", i)).await;
        if r.status != StatusCode::OK {
            refused = Some((i + 1, r));
            break;
        }
    }
    let (sent, refused) = refused.expect("refused under openai's policy");
    assert!(sent >= 30, "acted before min_requests: {sent}");
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai")
    );
    let again = chat_from(&gw, &key, "198.51.100.9", product_body_for("gpt-4o-mini")).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert_eq!(again.json()["error"]["code"], "account_under_review");
    // Northwind's models keep working, and northwind's record policy does not touch them.
    let before = mock.requests().len();
    for i in 0..20 {
        let r = chat_from(&gw, &key, "198.51.100.9", harvest_body("northwind-7b", i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let seen = mock.requests();
    let last = seen.last().unwrap().json().unwrap();
    assert!(seen.len() > before);
    assert_eq!(last["model"], "northwind-7b");
    assert_eq!(last["logprobs"], true);
    assert_eq!(last["n"], 4);

    // The account stays active: the review covers openai's models only.
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["state"], "active");
    assert_eq!(risk["flagged"], true);
    assert_eq!(risk["owner_reviews"][0]["owner"], "openai");
    assert_eq!(risk["owner_reviews"][0]["state"], "under_review");
    let openai = policy_in(&risk, "openai");
    assert_eq!(openai["scope"], "owner");
    assert_eq!(openai["action"], "review");
    assert_eq!(openai["flagged"], true);
    assert!(openai["terms"].as_str().unwrap().contains("compete"));
    let taken: Vec<&str> = openai["actions_taken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(taken, vec!["flag", "review_owner_scope"]);
    let northwind = policy_in(&risk, "northwind");
    assert_eq!(northwind["action"], "record");
    assert_eq!(northwind["flagged"], false);
    assert!(northwind["actions_taken"].as_array().unwrap().is_empty());
    let guard = policy_in(&risk, "[guard]");
    assert_eq!(guard["scope"], "account");
    assert_eq!(guard["action"], "flag");
    assert!(guard["actions_taken"].as_array().unwrap().is_empty());

    // The audit log names openai's policy; nothing is audited under northwind's.
    let audit = audit_until(&gw, &org, |d| has(d, "guard", "review_owner_scope")).await;
    let review = audit
        .iter()
        .find(|e| e["action"] == "review_owner_scope")
        .unwrap();
    assert_eq!(review["actor"], "guard");
    let why = review["reason"].as_str().unwrap();
    assert!(why.starts_with("[openai]"), "{why}");
    assert!(why.contains("policy") && why.contains("compete"), "{why}");
    let guard_entries: Vec<&Value> = audit.iter().filter(|e| e["actor"] == "guard").collect();
    assert_eq!(guard_entries.len(), 2, "{audit:?}");
    assert!(
        guard_entries
            .iter()
            .all(|e| e["reason"].as_str().unwrap().starts_with("[openai]")),
        "{audit:?}"
    );
    assert!(!has(&audit, "guard", "review"), "whole account reviewed");
    // The scoped review is persisted.
    gw.app.guard.settle().await;
    let stored = gw.app.store.owner_reviews(Some(&org)).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (stored[0].owner.as_str(), stored[0].state.as_str()),
        ("openai", "under_review")
    );

    // Evidence shows each used owner's terms with the policy in force and what it did.
    let ev = get(&gw, &format!("/admin/v1/organizations/{org}/evidence")).await;
    let policies = ev["policies"].as_array().unwrap();
    let oa = policies.iter().find(|p| p["owner"] == "openai").unwrap();
    assert_eq!(oa["enforcement"]["action"], "review");
    assert_eq!(
        oa["enforcement"]["actions_taken"][1]["action"],
        "review_owner_scope"
    );
    let nw = policies.iter().find(|p| p["owner"] == "northwind").unwrap();
    assert_eq!(nw["enforcement"]["action"], "record");
    assert_eq!(ev["enforcement"].as_array().unwrap().len(), 3);

    // Reinstating openai's scope: works at once, and openai's policy does not act again.
    let r = post(
        &gw,
        &format!("/admin/v1/organizations/{org}/reinstate"),
        json!({"reason": "evaluation contract", "owner": "openai"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for i in 0..10 {
        let r = chat_from(&gw, &key, "198.51.100.9", harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(policy_in(&risk, "openai")["exempt"], true);

    // Another organization harvesting only northwind's models: scored, never acted on.
    let (other, _, _, other_key) = gw.tenant("northwind-harvester", json!({})).await;
    for i in 0..100 {
        let r = chat_from(
            &gw,
            &other_key,
            "203.0.113.77",
            harvest_body("northwind-7b", i),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{other}/risk")).await;
    assert_eq!(
        risk["flagged"], true,
        "the detector still scores it: {risk}"
    );
    assert_eq!(risk["state"], "active");
    assert!(risk["owner_reviews"].as_array().unwrap().is_empty());
    assert_eq!(policy_in(&risk, "northwind")["flagged"], false);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gw.app.guard.settle().await;
    let audit = get(&gw, &format!("/admin/v1/audit?organization={other}")).await;
    assert!(
        !audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "guard"),
        "{audit}"
    );
}

#[tokio::test]
async fn an_owners_automatic_review_and_its_record_survive_a_restart() {
    let (_mock, cfg) = openai_reviews().await;
    let gw = start(&cfg).await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    let (_, refused) = harvest_until_refused(&gw, &key, "gpt-4o-mini", 300).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    // Persist exactly as shutdown does (the writer has the scoped review), then restart.
    gw.app.guard.settle().await;
    gw.app.guard.persist(&gw.app.store).await;
    gw.app.ledger.flush().await.unwrap();
    let db = format!("{}/ledger.db", gw.dir.path().display());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n[storage]\nurl = \"sqlite://{db}\"\n{cfg}"
    );
    let gw2 = start_with(
        tollgate_config::Config::from_toml(&text).unwrap(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let refused = gw2.chat(&key, product_body_for("gpt-4o-mini")).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let ok = gw2.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let risk = get(&gw2, &format!("/admin/v1/organizations/{org}/risk")).await;
    let openai = policy_in(&risk, "openai");
    assert_eq!(openai["flagged"], true);
    assert_eq!(openai["actions_taken"][1]["action"], "review_owner_scope");
    // Acted on once: the restart does not audit the flag again.
    for i in 0..5 {
        gw2.chat(&key, harvest_body("northwind-7b", i)).await;
    }
    gw2.app.guard.settle().await;
    let audit = get(&gw2, &format!("/admin/v1/audit?organization={org}")).await;
    let flags = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "guard" && e["action"] == "flag")
        .count();
    assert_eq!(
        flags, 2,
        "one flag per policy ([openai], then [guard] on northwind): {audit}"
    );
    gw2.stop().await;
    gw.stop().await;
}

/// Polls a chat on `gw` until it answers `want` (and, for a refusal, `code`).
async fn chat_until(gw: &Gateway, key: &str, model: &str, want: StatusCode, code: &str) {
    for _ in 0..1500 {
        let r = gw.chat(key, product_body_for(model)).await;
        if r.status == want && (code.is_empty() || r.json()["error"]["code"] == code) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{model} never answered {want} {code}");
}

/// Two instances on one database: an automatic owner-scoped review and the actions taken on
/// one instance (decided on its request path, written by its background writer) reach the
/// other through the change feed, and an operator's reinstatement on the other comes back.
#[tokio::test]
async fn automatic_reviews_and_actions_reach_another_instance() {
    let (_mock, cfg) = openai_reviews().await;
    let a = start(&cfg).await;
    let db = format!("{}/ledger.db", a.dir.path().display());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n[storage]\nurl = \"sqlite://{db}\"\nsync_interval_ms = 50\n{cfg}"
    );
    let b = start_with(
        tollgate_config::Config::from_toml(&text).unwrap(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let (org, _, _, key) = a.tenant("harvester", json!({})).await;
    chat_until(&b, &key, "northwind-7b", StatusCode::OK, "").await;

    let (_, refused) = harvest_until_refused(&a, &key, "gpt-4o-mini", 300).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    chat_until(
        &b,
        &key,
        "gpt-4o-mini",
        StatusCode::FORBIDDEN,
        "account_under_review",
    )
    .await;
    let ok = b.chat(&key, product_body_for("northwind-7b")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let mut actions = Value::Null;
    // Generous on a loaded machine: the other instance applies the change feed every 50 ms.
    for _ in 0..1500 {
        let risk = get(&b, &format!("/admin/v1/organizations/{org}/risk")).await;
        actions = policy_in(&risk, "openai")["actions_taken"].clone();
        if actions.as_array().is_some_and(|l| l.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["flag", "review_owner_scope"]);

    // Reinstated on B: A serves the owner's models again and the scope is exempt there.
    let r = post(
        &b,
        &format!("/admin/v1/organizations/{org}/reinstate"),
        json!({"reason": "cleared", "owner": "openai"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    chat_until(&a, &key, "gpt-4o-mini", StatusCode::OK, "").await;
    let risk = get(&a, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(policy_in(&risk, "openai")["exempt"], true);
    assert!(risk["owner_reviews"].as_array().unwrap().is_empty());
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn without_an_owner_table_guard_review_still_covers_the_whole_account() {
    // openai has its own (flag-only) policy; northwind follows [guard], which reviews.
    let (_mock, gw) = setup_with_policies(r#"action = "review""#, r#"action = "flag""#, "").await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    for i in 0..120 {
        let r = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "openai's policy only flags: {}",
            r.text()
        );
    }
    let (_, refused) = harvest_until_refused(&gw, &key, "northwind-7b", 10).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["state"], "under_review");
    let guard = policy_in(&risk, "[guard]");
    assert_eq!(guard["owners"], json!(["northwind"]));
    assert_eq!(guard["models_without_owner"], true);
    let refused = gw.chat(&key, product_body_for("gpt-4o-mini")).await;
    assert_eq!(refused.json()["error"]["code"], "account_under_review");
    let audit = audit_until(&gw, &org, |d| has(d, "guard", "review")).await;
    let review = audit.iter().find(|e| e["action"] == "review").unwrap();
    assert!(
        review["reason"].as_str().unwrap().contains("[guard]"),
        "{review}"
    );
    let flag = audit
        .iter()
        .find(|e| e["action"] == "flag" && e["reason"].as_str().unwrap().starts_with("[openai]"));
    assert!(flag.is_some(), "{audit:?}");
}

#[tokio::test]
async fn owner_throttle_strip_and_cap_apply_only_to_that_owners_models() {
    let (mock, gw) = setup_with_policies(
        r#"action = "flag""#,
        "strip_logprobs = true\nmax_n = 1",
        "throttle_rpm = 2",
    )
    .await;
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    let mut throttled = None;
    for i in 0..200 {
        let r = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "openai's policy has no throttle: {}",
            r.text()
        );
        let r = gw.chat(&key, harvest_body("northwind-7b", i)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = throttled.expect("northwind's models throttled once flagged");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("northwind")
    );
    assert!(r.header("retry-after").is_some());
    // openai's model is still served (no throttle in its policy), stripped and capped.
    for i in 0..5 {
        let r = gw.chat(&key, harvest_body("gpt-4o-mini", i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let seen: Vec<Value> = mock.requests().iter().map(|r| r.json().unwrap()).collect();
    let last_openai = seen
        .iter()
        .rev()
        .find(|b| b["model"] == "gpt-4o-mini")
        .unwrap();
    assert!(last_openai.get("logprobs").is_none() && last_openai.get("top_logprobs").is_none());
    assert_eq!(last_openai["n"], 1);
    let last_northwind = seen
        .iter()
        .rev()
        .find(|b| b["model"] == "northwind-7b")
        .unwrap();
    assert_eq!(
        last_northwind["logprobs"], true,
        "northwind's policy does not strip"
    );
    assert_eq!(last_northwind["n"], 4);
    // Before the flag, openai's requests went through untouched.
    assert_eq!(seen[0]["logprobs"], true);
    assert_eq!(seen[0]["n"], 4);

    // Each policy audited its flag once, naming itself; the settings are visible.
    let audit = audit_until(&gw, &org, |d| {
        d.iter().filter(|e| e["actor"] == "guard").count() >= 2
    })
    .await;
    let reasons: Vec<&str> = audit
        .iter()
        .filter(|e| e["actor"] == "guard" && e["action"] == "flag")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("[openai]")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("[northwind]")),
        "{reasons:?}"
    );
    let policies = get(&gw, "/admin/v1/policies").await;
    let by_name = |n: &str| {
        policies["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == n)
            .unwrap()
            .clone()
    };
    let oa = by_name("openai");
    assert_eq!(oa["action"], "flag", "inherited from [guard]");
    assert_eq!(oa["strip_logprobs"], true);
    assert_eq!(oa["max_n"], 1);
    assert_eq!(oa["throttle_rpm"], Value::Null);
    let nw = by_name("northwind");
    assert_eq!(nw["throttle_rpm"], 2);
    assert_eq!(nw["strip_logprobs"], false);
    let g = by_name("[guard]");
    assert_eq!(g["owners"], json!([]));
}

#[tokio::test]
async fn an_owners_flag_threshold_is_its_own() {
    // openai flags everything past min_requests; northwind reviews only at a perfect score.
    let (_mock, gw) = setup_with_policies(
        r#"action = "flag""#,
        "flag_threshold = 0.0",
        "action = \"review\"\nflag_threshold = 1.0",
    )
    .await;
    let (shop, _, _, shop_key) = gw.tenant("shop", json!({})).await;
    for i in 0..29 {
        let r = gw.chat(&shop_key, product_body(i)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{shop}/risk")).await;
    assert_eq!(
        policy_in(&risk, "openai")["flagged"],
        false,
        "before min_requests"
    );
    let r = gw.chat(&shop_key, product_body(29)).await;
    assert_eq!(r.status, StatusCode::OK);
    let risk = get(&gw, &format!("/admin/v1/organizations/{shop}/risk")).await;
    assert_eq!(
        risk["flagged"], false,
        "not flagged by the detector: {risk}"
    );
    let openai = policy_in(&risk, "openai");
    assert_eq!(openai["flagged"], true, "{risk}");
    assert_eq!(openai["flag_threshold"], 0.0);
    assert_eq!(openai["own_flag_threshold"], true);
    let audit = audit_until(&gw, &shop, |d| has(d, "guard", "flag")).await;
    assert!(audit.iter().any(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("[openai]"))
    }));

    // Flagged by the detector, but below northwind's own threshold: not reviewed.
    let (org, _, _, key) = gw.tenant("harvester", json!({})).await;
    for i in 0..120 {
        let r = gw.chat(&key, harvest_body("northwind-7b", i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let risk = get(&gw, &format!("/admin/v1/organizations/{org}/risk")).await;
    assert_eq!(risk["flagged"], true);
    assert!(risk["score"].as_f64().unwrap() < 1.0, "{risk}");
    assert_eq!(policy_in(&risk, "northwind")["flagged"], false);
    assert!(risk["owner_reviews"].as_array().unwrap().is_empty());
}

#[test]
fn invalid_guard_settings_are_reported_with_their_keys() {
    let text = r#"
[storage]
url = "sqlite://x.db"
[guard]
trusted_proxies = ["10.0.0.0/8", "not-an-ip"]
throttle_rpm = 0
[guard.detector]
flag_threshold = 1.5
"#;
    let err = tollgate_config::Config::from_toml(text)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("guard.trusted_proxies[1]"), "{err}");
    assert!(!err.contains("guard.trusted_proxies[0]"), "{err}");
    assert!(err.contains("guard.throttle_rpm"), "{err}");
    assert!(err.contains("guard.detector.flag_threshold"), "{err}");
    let unknown = tollgate_config::Config::from_toml("[guard.detector]\nnope = 1\n");
    assert!(unknown.is_err());
    let owner = r#"
[[owners]]
name = "northwind"
revenue_share_percent = "30"
[owners.enforcement]
throttle_rpm = 0
"#;
    let err = tollgate_config::Config::from_toml(owner)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("owners[0] 'northwind': enforcement.throttle_rpm"),
        "{err}"
    );
    let unknown = owner.replace("throttle_rpm = 0", "throttle = 5");
    assert!(tollgate_config::Config::from_toml(&unknown).is_err());
}

#[tokio::test]
async fn background_reclustering_links_accounts_without_the_request_path_clustering() {
    // Two accounts on one pool of two addresses sending prompts with the same wrapper: an
    // address pool corroborated by a shared wrapper merges them. Requests never re-cluster; the
    // guard's background task does, woken every `cluster_interval` requests. Nothing here
    // lists flags (which would re-cluster on demand).
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let text = config(
        &mock.base_url(),
        r#"action = "record"
trusted_proxies = ["127.0.0.1/32"]"#,
    )
    .replace("cluster_interval = 0", "cluster_interval = 10");
    let gw = start(&text).await;
    let (a, _, _, a_key) = gw.tenant("shop-a", json!({})).await;
    let (b, _, _, b_key) = gw.tenant("shop-b", json!({})).await;
    for i in 0..30 {
        let ip = ["203.0.113.10", "198.51.100.20"][i % 2];
        let r = chat_from(&gw, &a_key, ip, product_body(i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = chat_from(&gw, &b_key, ip, product_body(i + 100)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    for _ in 0..1500 {
        let ra = get(&gw, &format!("/admin/v1/organizations/{a}/risk")).await;
        let rb = get(&gw, &format!("/admin/v1/organizations/{b}/risk")).await;
        if ra["cluster"].is_string() && ra["cluster"] == rb["cluster"] {
            assert_eq!(ra["flagged"], false, "{ra}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the background re-clustering never linked {a} and {b}");
}
