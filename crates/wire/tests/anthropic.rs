//! The Messages API view and translators, both ways: Messages requests to Chat Completions and
//! back, plain answers both ways, streams both ways, the usage mapping, and Anthropic's error body,
//! checked against the shapes of Anthropic's and OpenAI's API references.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chunk, events, text_chunks, tool_chunk};
use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_testkit::sse::assert_names;
use tollgate_wire::anthropic::{
    AnthropicUsage, ChatContext, ChatToMessagesStream, MessageContext, MessagesToChatStream,
    StreamUsage, error_body, error_from_openai, finish_reason_of, from_chat_completion,
    from_chat_request, openai_error_from, parse_head, stop_reason_of, text_of_event,
    to_chat_completion, to_chat_request, usage_of_message,
};
use tollgate_wire::usage::Usage;

fn msg_ctx() -> MessageContext {
    MessageContext {
        id: "msg_1".into(),
        model: "claude-x".into(),
        stop_sequences: vec!["END".into()],
        start_usage: None,
    }
}

fn chat_ctx(include_usage: bool) -> ChatContext {
    ChatContext {
        id: "chatcmpl-1".into(),
        created: 7,
        model: "claude-x".into(),
        include_usage,
    }
}

fn to_chat(req: Value) -> Value {
    let (_, v) = parse_head(&serde_json::to_vec(&req).unwrap(), false).unwrap();
    serde_json::from_slice(&to_chat_request(&v, "up").unwrap()).unwrap()
}

fn from_chat(req: Value) -> Value {
    serde_json::from_slice(
        &from_chat_request(&serde_json::to_vec(&req).unwrap(), "claude-up").unwrap(),
    )
    .unwrap()
}

#[test]
fn head_requires_model_max_tokens_and_messages() {
    let (h, _) = parse_head(
        br#"{"model":"claude","max_tokens":64,"system":"s","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        false,
    )
    .unwrap();
    assert_eq!(
        (h.model.as_str(), h.max_tokens, h.stream),
        ("claude", Some(64), true)
    );
    assert!(h.prompt_bytes > 0);
    let (h, _) = parse_head(br#"{"model":"c","messages":[]}"#, true).unwrap();
    assert_eq!(h.max_tokens, None, "count_tokens needs no max_tokens");
    for (body, param) in [
        (r#"{"max_tokens":1,"messages":[]}"#, "model"),
        (r#"{"model":"c","messages":[]}"#, "max_tokens"),
        (r#"{"model":"c","max_tokens":1}"#, "messages"),
        (
            r#"{"model":"c","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#,
            "messages",
        ),
        (
            r#"{"model":"c","max_tokens":1,"messages":[{"role":"user","content":5}]}"#,
            "messages",
        ),
        (
            r#"{"model":"c","max_tokens":1,"messages":[],"system":5}"#,
            "system",
        ),
        (
            r#"{"model":"c","max_tokens":1,"messages":[],"stream":1}"#,
            "stream",
        ),
    ] {
        assert_eq!(
            parse_head(body.as_bytes(), false).unwrap_err().param,
            Some(param),
            "{body}"
        );
    }
}

#[test]
fn messages_request_to_chat() {
    let chat = to_chat(json!({
        "model": "claude", "max_tokens": 100, "temperature": 0.3, "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in English."}],
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 2}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4"}]},
                {"type": "text", "text": "Thanks"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]}],
        "tools": [{"name": "add", "description": "adds", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stream": true}));
    assert_eq!(
        chat,
        json!({"model": "up", "messages": [
            {"role": "system", "content": "You are terse.\nAnswer in English."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "Let me add.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]}],
            "max_tokens": 100, "temperature": 0.3, "stop": ["END"], "user": "u1",
            "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}, "description": "adds"}}],
            "tool_choice": "required", "parallel_tool_calls": false,
            "stream": true, "stream_options": {"include_usage": true}})
    );
}

#[test]
fn chat_request_to_messages() {
    let m = from_chat(json!({
        "model": "gpt", "max_completion_tokens": 77, "temperature": 1.6, "stop": "END", "user": "u9",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
            {"role": "tool", "tool_call_id": "call_2", "content": "warm"},
            {"role": "assistant", "content": "Oslo is cold."},
            {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "image_url", "image_url": {"url": "https://x/i.png"}}]}],
        "tools": [{"type": "function", "function": {"name": "w", "description": "weather", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto", "parallel_tool_calls": false, "stream": true,
        "stream_options": {"include_usage": true}}));
    assert_eq!(
        m,
        json!({"model": "claude-up", "max_tokens": 77, "system": "Be brief.\n\nNo lists.",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "call_2", "name": "w", "input": {"city": "Rome"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "cold"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "warm"}]},
                {"role": "assistant", "content": "Oslo is cold."},
                {"role": "user", "content": [{"type": "text", "text": "and"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]}],
            "temperature": 1.0, "stop_sequences": ["END"], "metadata": {"user_id": "u9"},
            "tools": [{"name": "w", "input_schema": {"type": "object", "properties": {}}, "description": "weather"}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "stream": true})
    );
    let m = from_chat(json!({"model": "g", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(m["max_tokens"], 4096, "Anthropic requires max_tokens");
    let err = from_chat_request(
        br#"{"model":"g","n":2,"messages":[{"role":"user","content":"x"}]}"#,
        "c",
    )
    .unwrap_err();
    assert_eq!(err.param, Some("n"));
}

#[test]
fn stop_reasons_map_both_ways() {
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        assert_eq!(stop_reason_of(finish), stop);
        assert_eq!(finish_reason_of(stop), finish);
    }
    assert_eq!(finish_reason_of("stop_sequence"), "stop");
    assert_eq!(finish_reason_of("pause_turn"), "stop");
}

#[test]
fn usage_mapping_is_exact() {
    let a = AnthropicUsage {
        input_tokens: 10,
        output_tokens: 5,
        cache_creation_input_tokens: 200,
        cache_read_input_tokens: 3000,
    };
    let u = a.to_usage();
    assert_eq!(u.prompt_tokens, 3210);
    assert_eq!(u.cached_tokens(), 3000);
    assert_eq!(u.cache_write_tokens(), 200);
    assert_eq!(u.completion_tokens, 5);
    assert_eq!(AnthropicUsage::from_usage(&u), a);
    // An OpenAI upstream's usage, seen by a Messages client.
    let openai = Usage::new(100, 40, 0, 9, 2);
    assert_eq!(
        AnthropicUsage::from_usage(&openai),
        AnthropicUsage {
            input_tokens: 60,
            output_tokens: 9,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 40
        }
    );
}

#[test]
fn chat_completion_to_message_and_back() {
    let body = br#"{"id":"x","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Four.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":10}}}"#;
    let (out, usage) = from_chat_completion(body, &msg_ctx()).unwrap();
    assert_eq!(usage.unwrap().prompt_tokens, 30);
    let m: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        m,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Four."}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 4}})
    );
    // And back: the usage returns to OpenAI's convention exactly.
    let (chat, u) = to_chat_completion(&out, &chat_ctx(false)).unwrap();
    let c: Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c["choices"][0]["message"]["content"], "Four.");
    assert_eq!(
        c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(
        c["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34,
            "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(u.unwrap().cached_tokens(), 10);
}

#[test]
fn stop_sequence_is_recognised_when_the_upstream_names_it() {
    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop","stop_reason":"END"}]}"#;
    let m: Value =
        serde_json::from_slice(&from_chat_completion(body, &msg_ctx()).unwrap().0).unwrap();
    assert_eq!(
        (&m["stop_reason"], &m["stop_sequence"]),
        (&json!("stop_sequence"), &json!("END"))
    );
    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"length"}]}"#;
    let m: Value =
        serde_json::from_slice(&from_chat_completion(body, &msg_ctx()).unwrap().0).unwrap();
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(
        m["usage"]["input_tokens"], 0,
        "no upstream usage: zeros, and None returned"
    );
}

#[test]
fn anthropic_message_with_cache_usage_to_chat() {
    let msg = br#"{"id":"msg_u","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":7,"cache_read_input_tokens":11,"output_tokens":3}}"#;
    let u = usage_of_message(msg).unwrap();
    assert_eq!(
        (u.prompt_tokens, u.cached_tokens(), u.cache_write_tokens()),
        (23, 11, 7)
    );
    let (chat, _) = to_chat_completion(msg, &chat_ctx(false)).unwrap();
    let c: Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(
        c["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 11, "cache_write_tokens": 7})
    );
    // The gateway reads the translated usage back with the ordinary chat reader.
    let back = tollgate_wire::usage::usage_of_response(&chat).unwrap();
    assert_eq!(back, u);
}

#[test]
fn chat_stream_to_anthropic_events() {
    let mut ctx = msg_ctx();
    ctx.start_usage = Some(Usage::new(12, 0, 0, 0, 0));
    let mut t = ChatToMessagesStream::new(ctx);
    let mut out = Vec::new();
    for c in text_chunks(&["Hel", "lo"]) {
        t.push(&c, &mut out);
    }
    t.push(&tool_chunk(0, Some(("call_1", "f")), "{\"a\""), &mut out);
    t.push(&tool_chunk(0, None, ":1}"), &mut out);
    t.push(&chunk(json!({}), Some("tool_calls")), &mut out);
    t.push(br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":6,"prompt_tokens_details":{"cached_tokens":2}}}"#, &mut out);
    t.finish(&mut out);
    t.finish(&mut out);
    assert!(t.is_finished());
    let ev = events(&out);
    assert_names(
        &ev,
        "message_start ping content_block_start content_block_delta content_block_delta content_block_stop content_block_start content_block_delta content_block_delta content_block_stop message_delta message_stop",
    );
    assert_eq!(
        ev[0].1["message"],
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}})
    );
    assert_eq!(
        ev[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        ev[3].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(
        text_of_event(&serde_json::to_vec(&ev[4].1).unwrap()).as_deref(),
        Some("lo")
    );
    assert_eq!(
        ev[6].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
    );
    assert_eq!(ev[6].1["index"], 1);
    assert_eq!(
        ev[7].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"a\""})
    );
    assert_eq!(
        ev[10].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 6}})
    );
    // The accumulated usage of the emitted events is the upstream's, in both conventions.
    let mut acc = StreamUsage::default();
    for (_, d) in &ev {
        acc.observe(&serde_json::to_vec(d).unwrap());
    }
    assert_eq!(acc.usage().map(counts), t.usage().map(counts));
    assert_eq!(counts(t.usage().unwrap()), (12, 2, 0, 6));
}

/// Prompt, cache reads, cache writes, completion.
fn counts(u: Usage) -> (u64, u64, u64, u64) {
    (
        u.prompt_tokens,
        u.cached_tokens(),
        u.cache_write_tokens(),
        u.completion_tokens,
    )
}

/// A stream as Anthropic sends it, with prompt caching.
fn anthropic_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_9", "type": "message", "role": "assistant", "content": [], "model": "claude", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "2}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn anthropic_stream_to_chat_chunks_with_usage() {
    let mut t = MessagesToChatStream::new(chat_ctx(true));
    let mut out = Vec::new();
    for e in anthropic_stream() {
        t.push(&serde_json::to_vec(&e).unwrap(), &mut out);
    }
    t.finish(&mut out);
    assert!(t.is_finished());
    let ev = events(&out);
    assert!(
        ev.iter().all(|(n, _)| n.is_empty()),
        "chat chunks are unnamed events"
    );
    let data: Vec<&Value> = ev.iter().map(|(_, d)| d).collect();
    assert_eq!(data.last().unwrap(), &&json!("[DONE]"));
    assert_eq!(
        data[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(data[0]["object"], "chat.completion.chunk");
    assert_eq!(data[0]["usage"], Value::Null);
    let text: String = data
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    let args: String = data
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"q\":2}");
    let starts: Vec<&Value> = data
        .iter()
        .filter(|d| d["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .copied()
        .collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "f"
    );
    let finishes: Vec<&str> = data
        .iter()
        .filter_map(|d| d["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, ["tool_calls"]);
    let usage_chunk = data[data.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 1125, "completion_tokens": 15, "total_tokens": 1140,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    let u = t.usage().unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cached_tokens(),
            u.cache_write_tokens(),
            u.completion_tokens
        ),
        (1125, 1000, 100, 15)
    );

    // Without include_usage: no usage chunk, no usage member, same usage for the meter.
    let mut t = MessagesToChatStream::new(chat_ctx(false));
    let mut out = Vec::new();
    for e in anthropic_stream() {
        t.push(&serde_json::to_vec(&e).unwrap(), &mut out);
    }
    let ev = events(&out);
    assert!(ev.iter().all(|(_, d)| d.get("usage").is_none()));
    assert_eq!(ev.iter().filter(|(_, d)| *d == json!("[DONE]")).count(), 1);
    assert_eq!(t.usage(), Some(u));
}

#[test]
fn stream_usage_takes_message_delta_fields_over_message_start() {
    let mut s = StreamUsage::default();
    s.observe(
        br#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
    );
    s.observe(
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
    );
    s.observe(br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9,"cache_read_input_tokens":4,"input_tokens":6}}"#);
    assert_eq!(
        s.anthropic(),
        Some(AnthropicUsage {
            input_tokens: 6,
            output_tokens: 9,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 4
        })
    );
    s.observe(b"not json");
    assert_eq!(s.usage().unwrap().prompt_tokens, 10);
    assert_eq!(StreamUsage::default().usage(), None);
}

#[test]
fn upstream_error_event_ends_the_chat_stream() {
    let mut t = MessagesToChatStream::new(chat_ctx(false));
    let mut out = Vec::new();
    t.push(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        &mut out,
    );
    let ev = events(&out);
    assert_eq!(ev[0].1["error"]["message"], "Overloaded");
    assert_eq!(ev[0].1["error"]["type"], "server_error");
    assert_eq!(ev[1].1, json!("[DONE]"));
}

#[test]
fn error_bodies() {
    let b: Value = serde_json::from_slice(&error_body("not_found_error", "no such model")).unwrap();
    assert_eq!(
        b,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "no such model"}})
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (529, "overloaded_error"),
    ] {
        let b: Value = serde_json::from_slice(&error_from_openai(
            status,
            br#"{"error":{"message":"m","type":"t","param":null,"code":"insufficient_quota"}}"#,
        ))
        .unwrap();
        assert_eq!(b["error"]["type"], kind);
        assert_eq!(b["error"]["message"], "insufficient_quota: m");
        assert_eq!(b["type"], "error");
    }
    let b: Value = serde_json::from_slice(&error_from_openai(502, b"plain text")).unwrap();
    assert_eq!(b["error"]["message"], "plain text");
    let o: Value = serde_json::from_slice(&openai_error_from(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
    ))
    .unwrap();
    assert_eq!(o["error"]["message"], "slow");
    assert_eq!(o["error"]["type"], "rate_limit_error");
}

proptest! {
    /// Anthropic → OpenAI → Anthropic usage is the identity, and OpenAI's prompt is the sum.
    #[test]
    fn usage_round_trip(i in 0u64..1u64<<40, o in 0u64..1u64<<40, w in 0u64..1u64<<40, r in 0u64..1u64<<40) {
        let a = AnthropicUsage { input_tokens: i, output_tokens: o, cache_creation_input_tokens: w, cache_read_input_tokens: r };
        let u = a.to_usage();
        prop_assert_eq!(u.prompt_tokens, i + w + r);
        prop_assert_eq!(u.cached_tokens(), r);
        prop_assert_eq!(u.cache_write_tokens(), w);
        prop_assert_eq!(AnthropicUsage::from_usage(&u), a);
    }

    /// A text conversation survives Chat → Messages → Chat: roles, order and texts.
    #[test]
    fn text_conversation_round_trip(
        system in proptest::option::of("[a-zA-Z .]{1,20}"),
        turns in proptest::collection::vec("[a-zA-Z0-9 ,.?é]{1,30}", 1..8),
        max_tokens in 1u64..10_000,
    ) {
        let mut messages = Vec::new();
        if let Some(s) = &system {
            messages.push(json!({"role": "system", "content": s}));
        }
        for (i, t) in turns.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            messages.push(json!({"role": role, "content": t}));
        }
        let chat = json!({"model": "g", "max_tokens": max_tokens, "messages": messages});
        let m = from_chat_request(&serde_json::to_vec(&chat).unwrap(), "c").unwrap();
        let (head, v) = parse_head(&m, false).unwrap();
        prop_assert_eq!(head.max_tokens, Some(max_tokens));
        let back: Value = serde_json::from_slice(&to_chat_request(&v, "g").unwrap()).unwrap();
        prop_assert_eq!(back, chat);
    }

    /// However the chat text is chunked, the Anthropic text deltas rebuild it, blocks open and
    /// close in pairs, and message_stop comes last.
    #[test]
    fn chat_stream_text_is_preserved(pieces in proptest::collection::vec("[a-z \"\\\\é]{0,5}", 0..10)) {
        let mut t = ChatToMessagesStream::new(msg_ctx());
        let mut out = Vec::new();
        for p in &pieces {
            t.push(&chunk(json!({"content": p}), None), &mut out);
        }
        t.push(&chunk(json!({}), Some("stop")), &mut out);
        t.finish(&mut out);
        let ev = events(&out);
        let text: String = ev.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
        prop_assert_eq!(text, pieces.concat());
        let starts = ev.iter().filter(|(n, _)| n == "content_block_start").count();
        let stops = ev.iter().filter(|(n, _)| n == "content_block_stop").count();
        prop_assert_eq!(starts, stops);
        prop_assert_eq!(ev.last().map(|(n, _)| n.as_str()), Some("message_stop"));
        prop_assert_eq!(&ev[ev.len() - 2].1["delta"]["stop_reason"], &json!("end_turn"));
    }
}
