//! Integration tests: start the mock, talk to it over loopback with a hyper client, and check
//! the wire format of each route and each behaviour.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Answer, HttpClient, client, request, start};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_mock::{Behavior, MockConfig, UsageMode, count_prompt_tokens};

impl Answer {
    /// SSE `data:` payloads in order (comments skipped).
    fn events(&self) -> Vec<String> {
        sse_events(&self.body)
    }
    /// Parsed JSON events (everything but `[DONE]`).
    fn chunks(&self) -> Vec<Value> {
        self.events()
            .iter()
            .filter(|e| e.as_str() != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }
}

fn sse_events(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "stream must end with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

async fn send(c: &HttpClient, method: Method, url: &str, body: &str) -> Answer {
    let auth = [("Authorization", "Bearer sk-test")];
    request(
        c,
        method,
        url,
        &auth,
        Bytes::copy_from_slice(body.as_bytes()),
    )
    .await
}

async fn post(c: &HttpClient, url: &str, body: &Value) -> Answer {
    send(c, Method::POST, url, &body.to_string()).await
}

fn chat_body(stream: bool, include_usage: bool) -> Value {
    let mut b = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there mock upstream"}
        ]
    });
    if stream {
        b["stream"] = json!(true);
    }
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

/// Removes the per-response fields (`id`, `created`) so two streams can be compared.
fn normalized(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let obj = c.as_object_mut().unwrap();
            obj.remove("id");
            obj.remove("created");
            c
        })
        .collect()
}

fn concat_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().clone())
        .filter_map(|ch| ch["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn plain_chat_has_the_openai_shape_and_consistent_usage() {
    let mock = start(MockConfig {
        cached_tokens: 2,
        reasoning_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let body = chat_body(false, false);
    let a = post(&c, &format!("{}/chat/completions", mock.base_url()), &body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    let v = a.json();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    let created = v["created"].as_u64().unwrap();
    assert!(created > 1_600_000_000);
    let prompt = count_prompt_tokens(body.to_string().as_bytes()).unwrap();
    // Byte-exact OpenAI layout, field order included.
    let expected = format!(
        concat!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"gpt-4o-mini","#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},"#,
            r#""completion_tokens":{c},"total_tokens":{t},"prompt_tokens_details":{{"cached_tokens":2}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":3}}}}}}"#
        ),
        id = id,
        created = created,
        content = "tok ".repeat(16),
        p = prompt,
        c = 16 + 3,
        t = prompt + 16 + 3,
    );
    assert_eq!(std::str::from_utf8(&a.body).unwrap(), expected);
    let prompt = count_prompt_tokens(body.to_string().as_bytes()).unwrap();
    assert_eq!(prompt, 6);
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": 16 + 3,
            "total_tokens": prompt + 16 + 3,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3}
        })
    );
}

#[tokio::test]
async fn plain_chat_with_n_choices() {
    let mock = start(MockConfig {
        response_tokens: 4,
        ..MockConfig::default()
    })
    .await;
    let mut body = chat_body(false, false);
    body["n"] = json!(3);
    let v = post(
        &client(),
        &format!("{}/chat/completions", mock.base_url()),
        &body,
    )
    .await
    .json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i);
        assert_eq!(ch["message"]["content"], "tok tok tok tok ");
    }
    assert_eq!(v["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_chunk() {
    let mock = start(MockConfig::default()).await;
    let a = post(
        &client(),
        &format!("{}/chat/completions", mock.base_url()),
        &chat_body(true, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "text/event-stream");
    let events = a.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = a.chunks();
    // role chunk + 16 content chunks + finish chunk
    assert_eq!(chunks.len(), 18);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o-mini");
        assert!(c.get("usage").is_none());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
    for c in &chunks[1..17] {
        assert_eq!(c["choices"][0]["delta"], json!({"content": "tok "}));
    }
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[17]["choices"][0]["delta"], json!({}));
    assert_eq!(concat_content(&chunks), "tok ".repeat(16));
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = start(MockConfig {
        response_tokens: 5,
        ..MockConfig::default()
    })
    .await;
    let body = chat_body(true, true);
    let a = post(
        &client(),
        &format!("{}/chat/completions", mock.base_url()),
        &body,
    )
    .await;
    let chunks = a.chunks();
    assert_eq!(chunks.len(), 1 + 5 + 1 + 1);
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null());
        assert!(
            c.get("usage").is_some(),
            "OpenAI sends usage:null on other chunks"
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let prompt = count_prompt_tokens(body.to_string().as_bytes()).unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], prompt);
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["total_tokens"], prompt + 5);
    assert!(a.body.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test]
async fn usage_never_omits_usage_everywhere() {
    let mock = start(MockConfig {
        usage: UsageMode::Never,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", mock.base_url());
    let v = post(&c, &url, &chat_body(false, false)).await.json();
    assert!(v.get("usage").is_none());
    assert_eq!(v["choices"][0]["message"]["content"], "tok ".repeat(16));
    let chunks = post(&c, &url, &chat_body(true, true)).await.chunks();
    assert_eq!(chunks.len(), 18);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let e = post(
        &c,
        &format!("{}/embeddings", mock.base_url()),
        &json!({"model": "e", "input": "a b"}),
    )
    .await
    .json();
    assert!(e.get("usage").is_none());
}

#[tokio::test]
async fn usage_every_chunk_is_cumulative() {
    let mock = start(MockConfig {
        usage: UsageMode::EveryChunk,
        response_tokens: 6,
        stream_chunks: Some(3),
        reasoning_tokens: 1,
        ..MockConfig::default()
    })
    .await;
    let body = chat_body(true, false);
    let chunks = post(
        &client(),
        &format!("{}/chat/completions", mock.base_url()),
        &body,
    )
    .await
    .chunks();
    // role + 3 content + finish + usage
    assert_eq!(chunks.len(), 6);
    let prompt = count_prompt_tokens(body.to_string().as_bytes()).unwrap();
    let completions: Vec<u64> = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["usage"]["prompt_tokens"], prompt);
            c["usage"]["completion_tokens"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(completions, [1, 3, 5, 7, 7, 7]);
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(concat_content(&chunks), "tok ".repeat(6));
}

#[tokio::test]
async fn stream_chunks_spread_tokens() {
    let mock = start(MockConfig {
        response_tokens: 10,
        stream_chunks: Some(4),
        ..MockConfig::default()
    })
    .await;
    let chunks = post(
        &client(),
        &format!("{}/chat/completions", mock.base_url()),
        &chat_body(true, false),
    )
    .await
    .chunks();
    let contents: Vec<&str> = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["tok tok tok ", "tok tok tok ", "tok tok ", "tok tok "]
    );
}

#[tokio::test]
async fn legacy_completions_plain_and_stream() {
    let mock = start(MockConfig {
        response_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/completions", mock.base_url());
    let v = post(
        &c,
        &url,
        &json!({"model": "davinci", "prompt": "say this please"}),
    )
    .await
    .json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "davinci");
    assert_eq!(v["choices"][0]["text"], "tok tok tok ");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 6);

    let a = post(
        &c,
        &url,
        &json!({"model": "davinci", "prompt": ["a b", "c"], "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(a.content_type, "text/event-stream");
    let chunks = a.chunks();
    // 3 content chunks + finish + usage
    assert_eq!(chunks.len(), 5);
    let text: String = chunks[..4]
        .iter()
        .map(|c| {
            assert_eq!(c["object"], "text_completion");
            c["choices"][0]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "tok tok tok ");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[2]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 3);
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert_eq!(a.events().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn embeddings_one_vector_per_input() {
    let mock = start(MockConfig::default()).await;
    let c = client();
    let url = format!("{}/embeddings", mock.base_url());
    let v = post(
        &c,
        &url,
        &json!({"model": "text-embedding-3-small", "input": "one two three"}),
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let v = post(
        &c,
        &url,
        &json!({"model": "e", "input": ["a", "b c", "d e f"]}),
    )
    .await
    .json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert!(d["embedding"].as_array().unwrap().iter().all(Value::is_f64));
    }
    assert_eq!(v["usage"]["prompt_tokens"], 6);
}

#[tokio::test]
async fn models_lists_configured_models() {
    let mock = start(MockConfig {
        models: vec!["m-one".into(), "m-two".into()],
        ..MockConfig::default()
    })
    .await;
    let a = send(
        &client(),
        Method::GET,
        &format!("{}/models", mock.base_url()),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["m-one", "m-two"]);
}

#[tokio::test]
async fn azure_paths_use_the_deployment_and_keep_the_query() {
    let mock = start(MockConfig::default()).await;
    let c = client();
    let url = format!(
        "{}/openai/deployments/my-dep/chat/completions?api-version=2024-10-21",
        mock.origin()
    );
    let v = post(
        &c,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .json();
    assert_eq!(v["model"], "my-dep");
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    let emb = post(
        &c,
        &format!(
            "{}/openai/deployments/emb/embeddings?api-version=1",
            mock.origin()
        ),
        &json!({"input": ["x", "y"]}),
    )
    .await
    .json();
    assert_eq!(emb["data"].as_array().unwrap().len(), 2);
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].path,
        "/openai/deployments/my-dep/chat/completions?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn errors_for_bad_requests_routes_and_methods() {
    let mock = start(MockConfig::default()).await;
    let c = client();
    let a = send(
        &c,
        Method::POST,
        &format!("{}/chat/completions", mock.base_url()),
        "{oops",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    let a = post(
        &c,
        &format!("{}/chat/completions", mock.base_url()),
        &json!({"messages": []}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(&c, Method::GET, &format!("{}/nope", mock.base_url()), "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"]["message"].is_string());
    let a = send(
        &c,
        Method::GET,
        &format!("{}/chat/completions", mock.base_url()),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(mock.request_count(), 4);
}

#[tokio::test]
async fn fail_first_then_recover_and_set_config_restarts_the_count() {
    let mock = start(MockConfig {
        fail_first: 2,
        fail_status: 503,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", mock.base_url());
    for _ in 0..2 {
        let a = post(&c, &url, &chat_body(false, false)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        let e = a.json();
        assert_eq!(e["error"]["type"], "server_error");
        assert!(e["error"]["message"].is_string());
        assert!(e["error"]["param"].is_null());
    }
    assert_eq!(
        post(&c, &url, &chat_body(false, false)).await.status,
        StatusCode::OK
    );

    mock.set_config(MockConfig {
        fail_first: 1,
        ..MockConfig::default()
    });
    assert_eq!(
        post(&c, &url, &chat_body(false, false)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        post(&c, &url, &chat_body(false, false)).await.status,
        StatusCode::OK
    );
    assert_eq!(mock.request_count(), 5);
}

#[tokio::test]
async fn status_behavior_always_fails() {
    let mock = start(MockConfig {
        behavior: Behavior::Status(429),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    for _ in 0..3 {
        let a = post(
            &c,
            &format!("{}/chat/completions", mock.base_url()),
            &chat_body(true, true),
        )
        .await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    }
}

#[tokio::test]
async fn hang_never_answers_until_the_mock_is_dropped() {
    let mock = start(MockConfig {
        behavior: Behavior::Hang,
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/chat/completions", mock.base_url());
    let c = client();
    let pending = tokio::spawn(async move {
        let req = Request::post(url)
            .body(Full::new(Bytes::from(chat_body(false, false).to_string())))
            .unwrap();
        c.request(req).await.map(|r| r.status())
    });
    for _ in 0..500 {
        if mock.request_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests().len(), 1);
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "a hanging mock must not answer");
    drop(mock);
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_err(), "the connection closes without an answer");
}

/// Reads a body frame by frame until it ends or fails; returns the bytes and whether it failed.
async fn read_until_error(resp: hyper::Response<hyper::body::Incoming>) -> (Vec<u8>, bool) {
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    got.extend_from_slice(d);
                }
            }
            Some(Err(_)) => return (got, true),
            None => return (got, false),
        }
    }
}

#[tokio::test]
async fn close_mid_stream_drops_the_connection_half_way() {
    let mock = start(MockConfig {
        behavior: Behavior::CloseMidStream,
        response_tokens: 8,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", mock.base_url());
    let req = Request::post(&url)
        .body(Full::new(Bytes::from(chat_body(true, true).to_string())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (got, failed) = read_until_error(resp).await;
    assert!(failed, "the stream must end in an error");
    // 1 role + 8 content + 1 finish + 1 usage + [DONE] = 12 events, half of them are sent.
    let events = sse_events(&got);
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e != "[DONE]"));

    let req = Request::post(&url)
        .body(Full::new(Bytes::from(chat_body(false, false).to_string())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let full_len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (got, failed) = read_until_error(resp).await;
    assert!(failed);
    assert!(got.len() < full_len);
    assert!(serde_json::from_slice::<Value>(&got).is_err());
}

#[tokio::test]
async fn split_writes_and_keepalive_comments_reassemble_to_the_same_stream() {
    let plain_cfg = MockConfig {
        response_tokens: 7,
        ..MockConfig::default()
    };
    let mock = start(plain_cfg.clone()).await;
    let c = client();
    let url = format!("{}/chat/completions", mock.base_url());
    let reference = post(&c, &url, &chat_body(true, true)).await;
    assert!(!reference.body.starts_with(b": keep-alive"));

    mock.set_config(MockConfig {
        split_writes: true,
        keepalive_comments: true,
        chunk_gap: Duration::from_millis(1),
        ..plain_cfg
    });
    let split = post(&c, &url, &chat_body(true, true)).await;
    let text = std::str::from_utf8(&split.body).unwrap();
    // One comment between each pair of events.
    assert_eq!(
        text.matches(": keep-alive\n\n").count(),
        reference.events().len() - 1
    );
    assert_eq!(split.events().last().unwrap(), "[DONE]");
    assert_eq!(normalized(&split.chunks()), normalized(&reference.chunks()));
}

#[tokio::test]
async fn records_requests_and_keeps_the_connection_alive() {
    let mock = start(MockConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::post(format!("/v1/chat/completions?try={i}"))
            .header("host", mock.addr().to_string())
            .header("X-Custom", "Value-1")
            .header("authorization", "Bearer sk-upstream")
            .body(Full::new(Bytes::from(chat_body(false, false).to_string())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(mock.request_count(), 3);
    assert_eq!(reqs[2].method, "POST");
    assert_eq!(reqs[2].path, "/v1/chat/completions?try=2");
    assert_eq!(reqs[2].header("x-custom"), Some("Value-1"));
    assert_eq!(reqs[2].headers.get("x-custom").unwrap(), "Value-1");
    assert_eq!(reqs[2].header("Authorization"), Some("Bearer sk-upstream"));
    assert_eq!(reqs[2].json().unwrap(), chat_body(false, false));
    assert_eq!(
        reqs[2].body,
        Bytes::from(chat_body(false, false).to_string())
    );
    mock.clear_requests();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn keeps_only_the_last_thousand_requests() {
    let mock = start(MockConfig::default()).await;
    let c = client();
    for i in 0..1005 {
        let a = send(
            &c,
            Method::GET,
            &format!("{}/models?i={i}", mock.base_url()),
            "",
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1000);
    assert_eq!(reqs[0].path, "/v1/models?i=5");
    assert_eq!(reqs[999].path, "/v1/models?i=1004");
    assert_eq!(mock.request_count(), 1005);
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let mock = start(MockConfig {
        record_requests: false,
        ..MockConfig::default()
    })
    .await;
    let a = send(
        &client(),
        Method::GET,
        &format!("{}/models", mock.base_url()),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(mock.request_count(), 1);
    assert!(mock.requests().is_empty());
}
