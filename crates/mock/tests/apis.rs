//! The mock's Responses API and Messages API routes over loopback: shapes, streams, usage with
//! cache lanes, stored responses, count_tokens, and errors in each API's shape.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{HttpClient, client, request, start};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_mock::{MockConfig, MockUpstream, UsageMode};
use tollgate_testkit::sse::{assert_names, assert_responses_events};

/// Sends `body` (none: an empty body) with Anthropic's headers; (status, content type, body).
async fn send(
    c: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> (StatusCode, String, Bytes) {
    let headers = [
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
    ];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let a = request(c, method, url, &headers, body).await;
    (a.status, a.content_type, a.body)
}

/// POSTs `body` to `path` below the mock's base URL.
async fn post(mock: &MockUpstream, path: &str, body: &Value) -> (StatusCode, String, Bytes) {
    let url = format!("{}{path}", mock.base_url());
    send(&client(), Method::POST, &url, Some(body)).await
}

/// Named events: (event line, data JSON); the event line must equal `data.type`.
fn named_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"));
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

fn responses_body(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "instructions": "be brief", "input": [
        {"role": "user", "content": "one two three"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "four five"}]}],
        "stream": stream})
}

#[tokio::test]
async fn plain_response_with_cached_usage_is_stored() {
    let mock = start(MockConfig {
        response_tokens: 4,
        cached_tokens: 3,
        reasoning_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let base = mock.base_url();
    let (status, ct, body) = send(
        &c,
        Method::POST,
        &format!("{base}/responses"),
        Some(&responses_body(false)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "tok tok tok tok ");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 13})
    );
    let id = v["id"].as_str().unwrap();
    let (status, _, got) = send(&c, Method::GET, &format!("{base}/responses/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&got).unwrap(), v);
    let (status, _, items) = send(
        &c,
        Method::GET,
        &format!("{base}/responses/{id}/input_items"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items: Value = serde_json::from_slice(&items).unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"].as_array().unwrap().len(), 2);
    assert_eq!(items["data"][0]["type"], "message");
    let (status, _, del) = send(&c, Method::DELETE, &format!("{base}/responses/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&del).unwrap(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let (status, _, _) = send(&c, Method::GET, &format!("{base}/responses/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // store: false keeps nothing.
    let mut b = responses_body(false);
    b["store"] = json!(false);
    let (_, _, body) = send(&c, Method::POST, &format!("{base}/responses"), Some(&b)).await;
    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = send(&c, Method::GET, &format!("{base}/responses/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streamed_response_has_the_typed_events() {
    let mock = start(MockConfig {
        response_tokens: 5,
        stream_chunks: Some(2),
        cached_tokens: 1,
        ..MockConfig::default()
    })
    .await;
    let (status, ct, body) = post(&mock, "/responses", &responses_body(true)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "text/event-stream");
    let ev = named_events(&body);
    assert_responses_events(
        &ev,
        "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed",
    );
    let deltas: String = ev.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
    assert_eq!(deltas, "tok ".repeat(5));
    let done = &ev[9].1["response"];
    assert_eq!(done["usage"]["input_tokens"], 7);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 1);
    assert_eq!(done["usage"]["output_tokens"], 5);

    // A limit below the answer: cut, and `response.incomplete`.
    let mut b = responses_body(true);
    b["max_output_tokens"] = json!(2);
    let (_, _, body) = post(&mock, "/responses", &b).await;
    let ev = named_events(&body);
    let last = ev.last().unwrap();
    assert_eq!(last.0, "response.incomplete");
    assert_eq!(
        last.1["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last.1["response"]["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn azure_responses_paths_and_usage_never() {
    let mock = start(MockConfig {
        usage: UsageMode::Never,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    for path in [
        "/openai/responses?api-version=2025-04-01-preview",
        "/openai/v1/responses",
    ] {
        let (status, _, body) = send(
            &c,
            Method::POST,
            &format!("{}{path}", mock.origin()),
            Some(&responses_body(false)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["usage"], Value::Null);
    }
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].path,
        "/openai/responses?api-version=2025-04-01-preview"
    );
}

fn messages_body(stream: bool) -> Value {
    json!({"model": "claude-test", "max_tokens": 100, "system": [{"type": "text", "text": "be kind"}],
        "messages": [{"role": "user", "content": "a b c d e f g h i j"},
                     {"role": "assistant", "content": [{"type": "text", "text": "k"}]},
                     {"role": "user", "content": "l"}],
        "stream": stream})
}

#[tokio::test]
async fn plain_message_with_cache_usage() {
    let mock = start(MockConfig {
        response_tokens: 3,
        cached_tokens: 5,
        cache_write_tokens: 4,
        ..MockConfig::default()
    })
    .await;
    let (status, _, body) = post(&mock, "/messages", &messages_body(false)).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok tok tok "}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    // 14 prompt words: 5 read, 4 written, 5 plain.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 5, "output_tokens": 3})
    );
    let req = &mock.requests()[0];
    assert_eq!(req.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));

    let (status, _, body) = post(
        &mock,
        "/messages/count_tokens",
        &json!({"model": "c", "messages": [{"role": "user", "content": "x y z"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"input_tokens": 3})
    );
}

#[tokio::test]
async fn streamed_message_has_anthropic_events() {
    let mock = start(MockConfig {
        response_tokens: 4,
        stream_chunks: Some(2),
        cached_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let mut b = messages_body(true);
    b["max_tokens"] = json!(3);
    let (status, ct, body) = post(&mock, "/messages", &b).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "text/event-stream");
    let ev = named_events(&body);
    assert_names(
        &ev,
        "message_start content_block_start ping content_block_delta content_block_delta content_block_stop message_delta message_stop",
    );
    assert_eq!(
        ev[0].1["message"]["usage"],
        json!({"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 1})
    );
    let text: String = ev
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "tok tok tok ");
    assert_eq!(
        ev[6].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 3}})
    );
}

#[tokio::test]
async fn errors_on_messages_routes_have_anthropic_shape() {
    let mock = start(MockConfig {
        fail_first: 1,
        fail_status: 529,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/messages", mock.base_url());
    let (status, _, body) = send(&c, Method::POST, &url, Some(&messages_body(false))).await;
    assert_eq!(status.as_u16(), 529);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let mut b = messages_body(false);
    b.as_object_mut().unwrap().remove("max_tokens");
    let (status, _, body) = send(&c, Method::POST, &url, Some(&b)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let (status, _, body) = send(&c, Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["type"],
        "error"
    );
    // The Responses routes keep OpenAI's shape.
    let (status, _, body) = send(
        &c,
        Method::GET,
        &format!("{}/responses/resp_nope", mock.base_url()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"].is_string());
}
