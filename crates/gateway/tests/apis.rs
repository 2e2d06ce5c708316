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

/// [`chat_only`] whose mock answers `response_tokens` tokens, `cached_tokens` of the prompt
/// cached, and the inference key of a new organization "acme".
async fn acme_on_chat_only(
    response_tokens: u32,
    cached_tokens: u32,
) -> (MockUpstream, Gateway, String) {
    let (mock, gw) = chat_only(MockConfig {
        response_tokens,
        cached_tokens,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    (mock, gw, key)
}

/// [`anthropic_gateway`] whose mock answers `response_tokens` tokens with `cached_tokens` of the
/// prompt read from and `cache_write_tokens` written to its cache, and the inference key of a new
/// organization "acme".
async fn acme_on_anthropic(
    response_tokens: u32,
    cached_tokens: u32,
    cache_write_tokens: u32,
) -> (MockUpstream, Gateway, String) {
    let (mock, gw) = anthropic_gateway(MockConfig {
        response_tokens,
        cached_tokens,
        cache_write_tokens,
        ..MockConfig::default()
    })
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    (mock, gw, key)
}

/// A request sent with `key` as a Bearer token, answered 200.
async fn bearer_ok(gw: &Gateway, key: &str, path: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {key}");
    let r = post(gw, path, &[("authorization", &auth)], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r
}

/// A usage record's (input, cached input, output) tokens and whether they were estimated.
fn counts(rec: &tollgate_store::UsageRecord) -> (u64, u64, u64, bool) {
    (
        rec.input_tokens,
        rec.cached_input_tokens,
        rec.output_tokens,
        rec.estimated,
    )
}

/// A Messages request sent as Anthropic's SDK sends it (`x-api-key`), answered 200; its body.
async fn messages_ok(gw: &Gateway, key: &str, body: &Value) -> Value {
    let r = post(
        gw,
        "/v1/messages",
        &[("x-api-key", key), ("anthropic-version", "2023-06-01")],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
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
    let (mock, gw, key) = acme_on_chat_only(5, 2).await;
    let body =
        json!({"model": "gpt-4o-mini", "instructions": "be brief", "input": "one two three"});
    let r = bearer_ok(&gw, &key, "/v1/responses", &body).await;
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
    let r = bearer_ok(&gw, &key, "/v1/responses", &body).await;
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
        assert_eq!(counts(rec), (5, 2, 5, false));
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
    let (mock, gw, key) = acme_on_chat_only(3, 2).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50, "system": "be kind",
        "messages": [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"},
                     {"role": "user", "content": [{"type": "text", "text": "e f"}]}]});
    // The official SDK sends a Bearer token; other clients send x-api-key.
    let v = messages_ok(&gw, &key, &body).await;
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
    let r = bearer_ok(&gw, &key, "/v1/messages", &body).await;
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

/// A gateway whose `claude-test` is served by an `anthropic` provider on the mock.
async fn anthropic_gateway(cfg: MockConfig) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start(cfg).await.unwrap();
    let toml = format!(
        "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-upstream\"\n\n[[models]]\nname = \"claude-test\"\nprovider = \"claude\"\nupstream_model = \"claude-up\"\ninput_price = \"3\"\noutput_price = \"15\"\n",
        mock.origin()
    );
    let gw = start(&toml).await;
    (mock, gw)
}

#[tokio::test]
async fn responses_go_natively_to_openai_upstreams_and_stored_ones_are_reachable() {
    let mock = MockUpstream::start(MockConfig {
        response_tokens: 4,
        cached_tokens: 1,
        reasoning_tokens: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&openai_models(&[mock.base_url()])).await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let (_, _, _, other) = gw.tenant("rival", json!({})).await;
    let auth = format!("Bearer {key}");
    let raw = r#"{"model":"gpt-4o-mini","input":"one two three","tools":[{"type":"web_search"}],"metadata":{"x":"1.50"}}"#;
    let r = gw.post_as("/v1/responses", &auth, &[], raw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert!(
        v["id"].as_str().unwrap().starts_with("resp_mock"),
        "the upstream's own object"
    );
    assert_eq!(v["usage"]["output_tokens"], 6);
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-upstream-0"));
    assert_eq!(
        String::from_utf8(seen.body.to_vec()).unwrap(),
        raw.replace("\"gpt-4o-mini\"", "\"up-mini\""),
        "byte for byte but the model"
    );

    let mut body: Value = serde_json::from_str(raw).unwrap();
    body["stream"] = json!(true);
    let r = bearer_ok(&gw, &key, "/v1/responses", &body).await;
    let ev = named(&r.text());
    assert_eq!(ev.last().unwrap().0, "response.completed");
    let streamed_id = ev[0].1["response"]["id"].as_str().unwrap().to_owned();

    let recs = gw.records().await;
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert_eq!(
            (
                rec.input_tokens,
                rec.cached_input_tokens,
                rec.output_tokens,
                rec.reasoning_tokens,
                rec.estimated
            ),
            (3, 1, 6, 2, false)
        );
    }

    // Stored responses: reachable by their organization through the provider that made them.
    let id = v["id"].as_str().unwrap();
    let get = |k: String, path: String| {
        let gw = &gw;
        async move {
            let auth = format!("Bearer {k}");
            gw.call(Method::GET, &path, &[("authorization", &auth)], "")
                .await
        }
    };
    let r = get(key.clone(), format!("/v1/responses/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], id);
    let r = get(
        key.clone(),
        format!("/v1/responses/{streamed_id}/input_items"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["object"], "list");
    let r = get(other.clone(), format!("/v1/responses/{id}")).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another organization cannot read it"
    );
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/responses/{id}"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["deleted"], true);
    let r = get(key.clone(), format!("/v1/responses/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gw.records().await.len(),
        2,
        "reading stored responses is not metered"
    );
}

#[tokio::test]
async fn messages_go_natively_to_anthropic_upstreams_with_only_the_configured_key() {
    let (mock, gw, key) = acme_on_anthropic(3, 4, 2).await;
    let body = json!({"model": "claude-test", "max_tokens": 20, "system": "a b",
        "messages": [{"role": "user", "content": "c d e f g h i j"}]});
    let v = messages_ok(&gw, &key, &body).await;
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 4, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 4, "output_tokens": 3})
    );
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the client's key never goes upstream"
    );
    assert_eq!(seen.json().unwrap()["model"], "claude-up");

    let mut body = body;
    body["stream"] = json!(true);
    let r = bearer_ok(&gw, &key, "/v1/messages", &body).await;
    let ev = named(&r.text());
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");

    let recs = gw.records().await;
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        // OpenAI's convention: every prompt token (4 plain + 4 read + 2 written), reads cached.
        assert_eq!(counts(rec), (10, 4, 3, false));
        assert_eq!(
            rec.cache_write_input_tokens, 2,
            "cache writes have their own lane"
        );
    }

    // count_tokens is the gateway's; errors from the path keep Anthropic's shape.
    let r = post(&gw, "/v1/messages", &[("x-api-key", &key)], &json!({"model": "claude-test", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn chat_completions_reach_anthropic_upstreams_translated() {
    let (mock, gw, key) = acme_on_anthropic(2, 3, 1).await;
    let r = gw
        .chat(&key, json!({"model": "claude-test", "messages": [{"role": "system", "content": "s t"}, {"role": "user", "content": "u v w x"}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "tok tok ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 3, "cache_write_tokens": 1})
    );
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    let up = mock.requests()[0].json().unwrap();
    assert_eq!(up["system"], "s t");
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": "u v w x"}])
    );
    assert_eq!(up["max_tokens"], 4096);

    let r = gw
        .chat(&key, json!({"model": "claude-test", "stream": true, "stream_options": {"include_usage": true}, "messages": user("a b c")}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(sse_content(&r.text()), "tok tok ");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    let r = gw
        .chat(
            &key,
            json!({"model": "claude-test", "stream": true, "messages": user("a b c")}),
        )
        .await;
    assert!(
        !r.text().contains("\"usage\":{"),
        "no usage chunk unless asked: {}",
        r.text()
    );

    let recs = gw.records().await;
    assert_eq!(recs.len(), 3);
    assert_eq!(
        (
            recs[0].input_tokens,
            recs[0].cached_input_tokens,
            recs[0].output_tokens
        ),
        (6, 3, 2)
    );
    assert_eq!(
        (
            recs[0].cache_write_input_tokens,
            recs[1].cache_write_input_tokens
        ),
        (1, 0),
        "the mock writes at most the prompt less its reads"
    );
    assert_eq!(
        (
            recs[1].input_tokens,
            recs[1].cached_input_tokens,
            recs[1].output_tokens
        ),
        (3, 3, 2)
    );
    assert!(recs.iter().all(|r| !r.estimated));
}
