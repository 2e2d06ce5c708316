//! The front door against mock upstreams: wire compatibility, streaming, metering, errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_mock::{Behavior, MockConfig, MockUpstream, UsageMode};

/// One gateway attempt per request and a short upstream timeout: a closed connection the pool
/// fails to recognise shows up as an error (or a hang cut short), not as a second attempt that
/// hides it.
async fn without_retries(gw: Gateway) -> Gateway {
    restart_with(gw, |c| {
        c.server.max_attempts = 1;
        c.server.upstream_timeout_ms = 2000;
    })
    .await
}

async fn one_mock(cfg: MockConfig) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start(cfg).await.unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    (mock, gw)
}

#[tokio::test]
async fn plain_chat_passes_fields_through_and_meters_upstream_usage() {
    let (mock, gw) = one_mock(MockConfig {
        cached_tokens: 2,
        reasoning_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let (org, _, key_id, key) = gw.tenant("acme", json!({})).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": user("one two three four"),
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "seed": 7, "logprobs": true
    });
    let r = gw.chat(&key, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));

    // What the upstream saw: the upstream model, untouched extra fields, its own key only.
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let up = seen[0].json().unwrap();
    assert_eq!(up["model"], "up-mini");
    for f in ["tools", "response_format", "seed", "logprobs", "messages"] {
        assert_eq!(up[f], body[f], "{f}");
    }
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-upstream-0")
    );
    assert!(
        !seen[0].headers.values().any(|v| v.contains(&key)),
        "client key leaked upstream"
    );

    // The ledger holds the upstream's own counts.
    let recs = gw.records().await;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    let usage = &v["usage"];
    assert_eq!(rec.input_tokens, usage["prompt_tokens"].as_u64().unwrap());
    assert_eq!(
        rec.output_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!((rec.cached_input_tokens, rec.reasoning_tokens), (2, 3));
    assert_eq!(rec.organization, org);
    assert_eq!(rec.key.as_deref(), Some(key_id.as_str()));
    assert_eq!(
        (
            rec.model.as_str(),
            rec.provider.as_str(),
            rec.upstream_model.as_str()
        ),
        ("gpt-4o-mini", "p0", "up-mini")
    );
    assert_eq!(
        (rec.status, rec.streamed, rec.estimated),
        (200, false, false)
    );
    assert_eq!(rec.id, r.header("x-request-id").unwrap());

    // Usage endpoint: one row, exact cost = (in-cached)*0.15 + cached*0.075 + out*0.60 per million.
    let u = gw.usage(&org).await;
    let row = &u["data"][0];
    assert_eq!(row["model"], "gpt-4o-mini");
    assert_eq!(row["requests"], 1);
    assert_eq!(row["input_tokens"].as_u64(), Some(rec.input_tokens));
    assert_eq!(row["cached_input_tokens"], 2);
    assert_eq!(row["cost"], "0.00");
    let exact: rust_decimal::Decimal = row["exact_cost"].as_str().unwrap().parse().unwrap();
    let expect = rust_decimal::Decimal::from(rec.input_tokens - 2)
        * rust_decimal::Decimal::new(15, 2)
        + rust_decimal::Decimal::from(2u64) * rust_decimal::Decimal::new(75, 3)
        + rust_decimal::Decimal::from(rec.output_tokens) * rust_decimal::Decimal::new(60, 2);
    assert_eq!(exact, expect / rust_decimal::Decimal::from(1_000_000u64));
}

#[tokio::test]
async fn stream_strips_usage_chunk_unless_asked_and_bills_it() {
    let (mock, gw) = one_mock(MockConfig {
        response_tokens: 5,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;

    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("a b c"), "stream": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    assert!(!text.contains("\"usage\":{"), "usage chunk leaked: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(sse_content(&text), "tok ".repeat(5));
    // The gateway asked the upstream for usage on the client's behalf.
    let up = mock.requests()[0].json().unwrap();
    assert_eq!(up["stream_options"]["include_usage"], true);

    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("a b c"), "stream": true, "stream_options": {"include_usage": true}}))
        .await;
    let data = sse_data(&r.text());
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);

    let recs = gw.records().await;
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert_eq!(
            (
                rec.input_tokens,
                rec.output_tokens,
                rec.streamed,
                rec.estimated
            ),
            (3, 5, true, false)
        );
    }
}

#[tokio::test]
async fn split_reads_keepalives_and_continuous_usage_reassemble() {
    let cfg = MockConfig {
        response_tokens: 7,
        split_writes: true,
        keepalive_comments: true,
        usage: UsageMode::EveryChunk,
        ..MockConfig::default()
    };
    let (_mock, gw) = one_mock(cfg).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("x y"), "stream": true}),
        )
        .await;
    let text = r.text();
    assert_eq!(sse_content(&text), "tok ".repeat(7));
    for d in sse_data(&text) {
        assert!(!d.contains("\"usage\":{"), "usage not stripped from {d}");
    }
    let rec = &gw.records().await[0];
    assert_eq!(
        (rec.input_tokens, rec.output_tokens, rec.estimated),
        (2, 7, false)
    );
}

#[tokio::test]
async fn upstream_without_usage_is_counted_with_the_tokenizer() {
    let (_mock, gw) = one_mock(MockConfig {
        usage: UsageMode::Never,
        response_tokens: 4,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hello world")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hello world"), "stream": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let recs = gw.records().await;
    assert_eq!(recs.len(), 2);
    for rec in recs {
        // "hello world" = 2 tokens + 3 per message + 3 priming; "tok tok tok tok " = 8 tokens in o200k.
        let expect_out = tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(&"tok ".repeat(4))
            .len() as u64;
        assert_eq!(
            (rec.input_tokens, rec.output_tokens, rec.estimated),
            (8, expect_out, true)
        );
    }
}

#[tokio::test]
async fn falls_back_to_the_next_provider_and_fails_cleanly() {
    let bad = MockUpstream::start(MockConfig {
        behavior: Behavior::Status(500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let good = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&openai_models(&[bad.base_url(), good.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((bad.request_count(), good.request_count()), (1, 1));
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().ends_with("data: [DONE]\n\n"));

    // All providers failing: 502 in OpenAI's shape, one record with the failure, nothing billed.
    good.set_config(MockConfig {
        behavior: Behavior::Status(503),
        ..MockConfig::default()
    });
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    let recs = gw.records().await;
    assert_eq!(recs.len(), 3);
    let failed = recs.iter().find(|r| r.status == 502).unwrap();
    assert_eq!((failed.input_tokens, failed.output_tokens), (0, 0));

    // A client error from the upstream is not retried and passes through as it is.
    good.set_config(MockConfig {
        behavior: Behavior::Status(400),
        ..MockConfig::default()
    });
    bad.set_config(MockConfig {
        behavior: Behavior::Status(400),
        ..MockConfig::default()
    });
    let before = bad.request_count() + good.request_count();
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(bad.request_count() + good.request_count(), before + 1);
}

#[tokio::test]
async fn connect_errors_retry_and_timeouts_answer_504() {
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let good = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&openai_models(&[dead.clone(), good.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let hang = MockUpstream::start(MockConfig {
        behavior: Behavior::Hang,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&openai_models(&[hang.base_url()])).await;
    let gw = restart_with(gw, |c| {
        c.server.upstream_timeout_ms = 300;
        c.server.max_attempts = 1;
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    let _ = dead;
}

#[tokio::test]
async fn a_stream_whose_upstream_falls_silent_ends_without_done_and_is_billed_as_failed() {
    let (_mock, gw) = one_mock(MockConfig {
        response_tokens: 10,
        chunk_gap: Duration::from_millis(400),
        ..MockConfig::default()
    })
    .await;
    let gw = restart_with(gw, |c| c.server.upstream_timeout_ms = 150).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.text();
    assert!(body.starts_with("data: "), "{body}");
    assert!(
        !body.contains("[DONE]"),
        "a broken stream must not look complete: {body}"
    );
    let records = gw.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, 502);
    assert!(
        records[0].estimated,
        "no upstream usage arrived, so the count is estimated"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_errors_and_changes_nothing() {
    let (mock, gw) = one_mock(MockConfig::default()).await;
    let (_, _, key_id, key) = gw.tenant("acme", json!({})).await;
    let auth = format!("Bearer {key}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let r = gw
        .call(Method::POST, "/v1/chat/completions", &h, "{not json")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code")
    );

    for (body, param) in [
        (
            json!({"model": "gpt-4o-mini", "messages": "hi"}),
            "messages",
        ),
        (json!({"model": 5, "messages": user("x")}), "model"),
        (
            json!({"model": "gpt-4o-mini", "messages": user("x"), "max_tokens": "many"}),
            "max_tokens",
        ),
        (
            json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": "yes"}),
            "stream",
        ),
    ] {
        let r = gw.chat(&key, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"]["param"], param);
    }

    let r = gw
        .chat(&key, json!({"model": "gpt-5-ultra", "messages": user("x")}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "model_not_found");

    let big = format!(
        "{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(9 << 20)
    );
    let r = gw.call(Method::POST, "/v1/chat/completions", &h, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    for bad in ["Bearer tg-nope", "Bearer ", "Basic abc"] {
        let r = gw
            .call(
                Method::POST,
                "/v1/chat/completions",
                &[("authorization", bad)],
                json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    }
    let r = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[],
            json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Nothing reached the upstream and nothing was recorded.
    assert_eq!(mock.request_count(), 0);
    assert!(gw.records().await.is_empty());

    // Revocation takes effect at once.
    assert_eq!(
        gw.chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
            .status,
        StatusCode::OK
    );
    let r = gw
        .admin(
            Method::DELETE,
            &format!("/admin/v1/keys/{key_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = gw
        .admin(Method::DELETE, "/admin/v1/keys/key_missing", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keys_expire_and_are_limited_to_their_models() {
    let (_mock, gw) = one_mock(MockConfig::default()).await;
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, _, _, key) = gw
        .tenant(
            "acme",
            json!({"expires_at": soon, "models": ["gpt-4o-mini"]}),
        )
        .await;
    let r = gw
        .call(
            Method::GET,
            "/v1/models",
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await;
    let ids: Vec<_> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["gpt-4o-mini"]);
    assert_eq!(
        gw.chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        gw.chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let bad = gw
        .admin(Method::POST, "/admin/v1/organizations", json!({"name": ""}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let past = gw.tenant("x", json!({})).await;
    let r = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/projects/{}/keys", past.1),
            json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/projects/{}/keys", past.1),
            json!({"name": "k", "models": ["nope"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rate_limits_answer_429_with_openai_headers() {
    let (mock, gw) = one_mock(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({"rpm": 2, "tpm": 100000})).await;
    for left in ["1", "0"] {
        let r = gw
            .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(left));
        assert!(r.header("x-ratelimit-reset-requests").is_some());
        assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("100000"));
    }
    let r = gw
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry));
    assert_eq!(mock.request_count(), 2);

    // Tokens per minute: max_tokens counts against the limit before dispatch.
    let (_, _, _, key) = gw.tenant("small", json!({"tpm": 50})).await;
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("x"), "max_tokens": 40}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": user("x"), "max_tokens": 40}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["type"], "tokens");

    // Project limits hold across the project's keys.
    let org = gw
        .admin(
            Method::POST,
            "/admin/v1/organizations",
            json!({"name": "p"}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/organizations/{org}/projects"),
            json!({"name": "lim", "rpm": 1}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let k1 = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/projects/{p}/keys"),
            json!({"name": "a"}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let k2 = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/projects/{p}/keys"),
            json!({"name": "b"}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.chat(&k1, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        gw.chat(&k2, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn tenants_are_isolated_and_usage_rolls_up_the_tree() {
    let (_mock, gw) = one_mock(MockConfig::default()).await;
    let (a, _, _, ka) = gw.tenant("bytedance", json!({})).await;
    let child = gw
        .admin(
            Method::POST,
            "/admin/v1/organizations",
            json!({"name": "tiktok", "parent": a}),
        )
        .await;
    assert_eq!(child.status, StatusCode::CREATED);
    let child = child.json()["id"].as_str().unwrap().to_owned();
    let (_, _, _, kc) = gw.tenant_in(&child, json!({})).await;
    let (b, _, _, kb) = gw.tenant("other", json!({})).await;
    for k in [&ka, &kc, &kc, &kb] {
        assert_eq!(
            gw.chat(k, json!({"model": "gpt-4o-mini", "messages": user("x")}))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(gw.usage(&a).await["data"][0]["requests"], 3);
    assert_eq!(gw.usage(&child).await["data"][0]["requests"], 2);
    assert_eq!(gw.usage(&b).await["data"][0]["requests"], 1);

    // The admin API needs the admin token; an inference key is not one.
    let r = gw
        .call(
            Method::GET,
            &format!("/admin/v1/usage?organization={a}"),
            &[("authorization", &format!("Bearer {kb}"))],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = gw
        .call(Method::GET, "/admin/v1/organizations", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = gw
        .admin(
            Method::POST,
            "/admin/v1/organizations",
            json!({"name": "x", "parent": "org_missing"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn azure_front_door_and_azure_upstream() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let cfg = format!(
        "[[providers]]\nname = \"contoso\"\nkind = \"azure\"\nbase_url = \"{}\"\napi_key = \"azure-secret\"\napi_version = \"2024-10-21\"\n\n[[models]]\nname = \"gpt-4o\"\nprovider = \"contoso\"\nupstream_model = \"my-deployment\"\ninput_price = \"2.5\"\noutput_price = \"10\"\n",
        mock.origin()
    );
    let gw = start(&cfg).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let r = gw
        .call(
            Method::POST,
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            &[
                ("api-key", key.as_str()),
                ("content-type", "application/json"),
            ],
            json!({"messages": user("a b")}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = &mock.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some("azure-secret"));
    assert_eq!(seen.header("authorization"), None);
    // Bearer works on Azure routes too; embeddings through the Azure shape.
    let r = gw
        .call(
            Method::POST,
            "/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21",
            &[
                ("authorization", &format!("Bearer {key}")),
                ("content-type", "application/json"),
            ],
            json!({"input": ["a b c", "d"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    // A percent-encoded deployment takes the router, whose extractor decodes it: the same model.
    let api_key = [
        ("api-key", key.as_str()),
        ("content-type", "application/json"),
    ];
    let r = gw
        .call(
            Method::POST,
            "/openai/deployments/gpt%2D4o/chat/completions?api-version=2024-10-21",
            &api_key,
            json!({"messages": user("a b")}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // An unknown deployment gets the same answer either way.
    for path in [
        "/openai/deployments/nope/chat/completions",
        "/openai/deployments/n%6Fpe/chat/completions",
    ] {
        let r = gw
            .call(
                Method::POST,
                path,
                &api_key,
                json!({"messages": user("a b")}).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "model_not_found", "{path}");
        assert!(r.text().contains("nope"), "{path}: {}", r.text());
    }
    let recs = gw.records().await;
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].input_tokens, 4);
    assert!(recs.iter().all(|r| r.model == "gpt-4o"));
}

#[tokio::test]
async fn completions_and_embeddings_are_metered() {
    let (_mock, gw) = one_mock(MockConfig {
        response_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let auth = format!("Bearer {key}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = gw
        .call(
            Method::POST,
            "/v1/completions",
            &h,
            json!({"model": "gpt-4o-mini", "prompt": "once upon a time"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["object"], "text_completion");
    let r = gw
        .call(
            Method::POST,
            "/v1/completions",
            &h,
            json!({"model": "gpt-4o-mini", "prompt": "once upon", "stream": true}).to_string(),
        )
        .await;
    assert_eq!(sse_content(&r.text()), "tok ".repeat(3));
    let r = gw
        .call(
            Method::POST,
            "/v1/embeddings",
            &h,
            json!({"model": "gpt-4o-mini", "input": "a b c"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let recs = gw.records().await;
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.input_tokens, r.output_tokens))
        .collect();
    assert_eq!(got, vec![(4, 3), (2, 3), (3, 0)]);
}

#[tokio::test]
async fn reused_connections_do_not_stall() {
    // With Nagle's algorithm and delayed ACKs, small writes on a reused connection wait ~40 ms.
    // TCP_NODELAY on the accepted socket and on the upstream socket keeps the median far below.
    let (_mock, gw) = one_mock(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let mut times = Vec::new();
    for i in 0..40 {
        let t = std::time::Instant::now();
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": i % 2 == 0}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(25),
        "median {median:?}: a Nagle/delayed-ACK stall"
    );
}

#[tokio::test]
async fn one_upstream_connection_serves_sequential_requests_of_every_kind() {
    let (mock, gw) = one_mock(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    for i in 0..12 {
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": i % 3 == 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        if i % 3 == 1 {
            assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
        }
    }
    // An upstream error's body is read to its end, so its connection is reused too.
    mock.set_config(MockConfig {
        behavior: Behavior::Status(400),
        ..MockConfig::default()
    });
    for _ in 0..3 {
        let r = gw
            .chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }
    assert_eq!(mock.request_count(), 15);
    assert_eq!(
        mock.connection_count(),
        1,
        "every request reused the first connection"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closes_after_its_response_is_not_reused() {
    let (mock, gw) = one_mock(MockConfig {
        close_connections: true,
        ..MockConfig::default()
    })
    .await;
    let gw = without_retries(gw).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    for i in 0..6 {
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": i % 2 == 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(mock.request_count(), 6);
    assert_eq!(
        mock.connection_count(),
        6,
        "one connection per answer, none reused"
    );
    assert_eq!(gw.records().await.len(), 6);
}

#[tokio::test]
async fn an_upstream_that_closed_its_idle_connections_is_redialled() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let addr = mock.addr();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    let gw = without_retries(gw).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let ask = || async {
        gw.chat(&key, json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await
    };
    assert_eq!(ask().await.status, StatusCode::OK);
    // The upstream restarts: the gateway's pooled connection is now closed by its peer.
    drop(mock);
    let mut restarted = None;
    for _ in 0..200 {
        // The old listener closes once its accept loop sees the shutdown.
        match MockUpstream::start_on(addr, MockConfig::default()).await {
            Ok(m) => {
                restarted = Some(m);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let mock = restarted.expect("the port was freed");
    for _ in 0..3 {
        let r = ask().await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.connection_count(), 1);
}

#[tokio::test]
async fn a_failing_provider_is_skipped_until_its_cool_down() {
    let bad = MockUpstream::start(MockConfig {
        behavior: Behavior::Status(500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let good = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&openai_models(&[bad.base_url(), good.base_url()])).await;
    let gw = restart_with(gw, |c| {
        c.server.breaker_failures = 3;
        c.server.breaker_cooldown_ms = 60_000;
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    for _ in 0..10 {
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": user("hi")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Three failures trip the breaker; the other seven requests go straight to the healthy one.
    assert_eq!(bad.request_count(), 3);
    assert_eq!(good.request_count(), 10);
}

/// The serving threads share the listening port through SO_REUSEPORT; another process's
/// listener on the port, or a second gateway, gets "address in use" instead of a share of it.
#[tokio::test]
async fn the_port_is_shared_by_the_serving_threads_and_no_one_else() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = tollgate_gateway::server::listen(held.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let ours = tollgate_gateway::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = tollgate_gateway::server::listen(ours.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    drop(ours);

    // Three serving threads: concurrent requests over several connections are all served and
    // each is metered once.
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    let gw = restart_with(gw, |c| c.server.threads = 3).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let gw = std::sync::Arc::new(gw);
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let (gw, key) = (gw.clone(), key.clone());
            tokio::spawn(async move {
                gw.chat(
                    &key,
                    json!({"model": "gpt-4o-mini", "messages": user(&format!("hi {i}"))}),
                )
                .await
                .status
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    gw.app.ledger.flush().await.unwrap();
    let (records, _, _) = gw.app.store.ledger_totals().await.unwrap();
    assert_eq!(records, 24);
    assert_eq!(mock.request_count(), 24);
}
