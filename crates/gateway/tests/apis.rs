//! The Responses API and Messages API front doors against mock upstreams: shapes, streams,
//! errors in each API's shape, and one ledger record per request with the upstream's own usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_mock::{MockConfig, MockUpstream};

/// A gateway whose `gpt-4o-mini` is served by a chat-only OpenAI-compatible mock.
async fn chat_only(cfg: MockConfig) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start(cfg).await.unwrap();
    let toml = openai_models(&[mock.base_url()]).replace(
        "api_key = \"sk-upstream-0\"\n",
        "api_key = \"sk-upstream-0\"\nresponses_api = false\n",
    );
    let gw = start(&toml).await;
    (mock, gw)
}

async fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    gw.call(Method::POST, path, &h, body.to_string()).await
}

/// Named SSE events: (event, data).
fn named(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("unnamed event: {e}"))
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn responses_on_a_chat_only_provider_plain_and_streamed() {
    let (mock, gw) = chat_only(MockConfig {
        response_tokens: 5,
        cached_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let auth = format!("Bearer {key}");
    let body =
        json!({"model": "gpt-4o-mini", "instructions": "be brief", "input": "one two three"});
    let r = post(&gw, "/v1/responses", &[("authorization", &auth)], &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["instructions"], "be brief");
    assert_eq!(v["output"][0]["content"][0]["text"], "tok ".repeat(5));
    // The mock counts words: "be brief" + "one two three".
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], 5);
    let up = mock.requests()[0].json().unwrap();
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
    assert_eq!(
        up["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}])
    );

    let mut body = body;
    body["stream"] = json!(true);
    let r = post(&gw, "/v1/responses", &[("authorization", &auth)], &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = named(&r.text());
    assert_eq!(ev[0].0, "response.created");
    let (last, data) = ev.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(data["response"]["usage"]["input_tokens"], 5);
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "tok ".repeat(5));

    let recs = gw.records().await;
    assert_eq!(recs.len(), 2, "one record per request");
    for rec in &recs {
        assert_eq!(
            (
                rec.input_tokens,
                rec.cached_input_tokens,
                rec.output_tokens,
                rec.estimated
            ),
            (5, 2, 5, false)
        );
    }
    assert!(recs[1].streamed);
}

#[tokio::test]
async fn azure_responses_paths_accept_the_api_key_header() {
    let (_mock, gw) = chat_only(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": "hi"}]});
    for path in [
        "/openai/responses?api-version=2025-04-01-preview",
        "/openai/v1/responses",
    ] {
        let r = post(&gw, path, &[("api-key", &key)], &body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.json()["object"], "response");
    }
    let r = post(&gw, "/v1/responses", &[("api-key", "tg-wrong")], &body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = post(
        &gw,
        "/v1/responses",
        &[("api-key", &key)],
        &json!({"model": "gpt-4o-mini"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "input");
}

#[tokio::test]
async fn messages_on_an_openai_provider_map_usage_exactly() {
    let (mock, gw) = chat_only(MockConfig {
        response_tokens: 3,
        cached_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50, "system": "be kind",
        "messages": [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"},
                     {"role": "user", "content": [{"type": "text", "text": "e f"}]}]});
    // The official SDK sends a Bearer token; other clients send x-api-key.
    let r = post(
        &gw,
        "/v1/messages",
        &[("x-api-key", &key), ("anthropic-version", "2023-06-01")],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], "tok tok tok ");
    // 8 prompt words, 2 of them cached: Anthropic's input_tokens excludes cache reads.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 3})
    );
    let up = mock.requests()[0].json().unwrap();
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": "be kind"})
    );
    assert_eq!(up["max_tokens"], 50);

    let mut body = body;
    body["stream"] = json!(true);
    let auth = format!("Bearer {key}");
    let r = post(&gw, "/v1/messages", &[("authorization", &auth)], &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ev = named(&r.text());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["type"], "message_delta");
    assert_eq!(delta["usage"]["input_tokens"], 6);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(delta["usage"]["output_tokens"], 3);

    let recs = gw.records().await;
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert_eq!(
            (rec.input_tokens, rec.cached_input_tokens, rec.output_tokens),
            (8, 2, 3)
        );
    }
}

#[tokio::test]
async fn messages_errors_have_anthropic_shape() {
    let (_mock, gw) = chat_only(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({"models": ["gpt-4o-mini"]})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = post(&gw, "/v1/messages", &[("x-api-key", "tg-nope")], &body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid_api_key: ")
    );
    let mut other = body.clone();
    other["model"] = json!("claude-nope");
    let r = post(&gw, "/v1/messages", &[("x-api-key", &key)], &other).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = post(
        &gw,
        "/v1/messages",
        &[("x-api-key", &key)],
        &json!({"model": "gpt-4o-mini", "messages": []}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        gw.records().await.is_empty(),
        "nothing dispatched, nothing metered"
    );
}

#[tokio::test]
async fn count_tokens_counts_with_the_models_tokenizer_and_bills_nothing() {
    let (mock, gw) = chat_only(MockConfig::default()).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there, world"}]});
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &[("x-api-key", &key)],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!(n > 3 && n < 20, "{n}");
    assert_eq!(mock.request_count(), 0);
    assert!(gw.records().await.is_empty());
    let r = post(&gw, "/v1/messages/count_tokens", &[], &body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
}
