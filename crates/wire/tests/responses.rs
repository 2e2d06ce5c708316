//! The Responses API view and translators: requests to Chat Completions, chat completions to
//! Responses objects, chat chunks to the typed event stream, and usage extraction, checked against
//! the shapes of OpenAI's API reference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chunk, named_events as events, text_chunks, tool_chunk};
use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_testkit::sse::{assert_names, assert_responses_events};
use tollgate_wire::responses::{
    ChatToResponsesStream, ResponseContext, from_chat_completion, output_text_of_object,
    parse_head, text_of_event, to_chat_request, usage_of_event, usage_of_object,
};

fn ctx(request: Value) -> ResponseContext {
    ResponseContext {
        id: "resp_abc".into(),
        created_at: 1_700_000_000,
        model: "gpt-4o-mini".into(),
        request,
    }
}

fn chat_of(request: Value) -> Value {
    let (_, v) = parse_head(&serde_json::to_vec(&request).unwrap()).unwrap();
    serde_json::from_slice(&to_chat_request(&v, "up-model").unwrap()).unwrap()
}

fn usage_chunk(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": reasoning}}}))
    .unwrap()
}

#[test]
fn head_reads_fields_and_rejects_bad_types() {
    let (h, _) = parse_head(
        br#"{"model":"m","input":"hi","instructions":"be brief","stream":true,"max_output_tokens":9}"#,
    )
    .unwrap();
    assert_eq!(h.model.as_deref(), Some("m"));
    assert!(h.stream);
    assert_eq!(h.max_tokens, Some(9));
    assert_eq!(h.prompt_bytes, "\"hi\"".len() + "be brief".len());
    for (body, param) in [
        (r#"{"model":"m"}"#, Some("input")),
        (r#"{"model":1,"input":"x"}"#, Some("model")),
        (r#"{"model":"m","input":5}"#, Some("input")),
        (
            r#"{"model":"m","input":"x","stream":"yes"}"#,
            Some("stream"),
        ),
        (
            r#"{"model":"m","input":"x","max_output_tokens":-3}"#,
            Some("max_output_tokens"),
        ),
        (r#"[1]"#, None),
        (r#"{nope"#, None),
    ] {
        assert_eq!(
            parse_head(body.as_bytes()).unwrap_err().param,
            param,
            "{body}"
        );
    }
}

#[test]
fn request_with_instructions_and_string_input() {
    let chat = chat_of(
        json!({"model": "gpt-4o-mini", "instructions": "Be terse.", "input": "Hello!",
        "max_output_tokens": 50, "temperature": 0.2, "stream": true, "store": true}),
    );
    assert_eq!(
        chat,
        json!({"model": "up-model", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hello!"}],
            "max_tokens": 50, "temperature": 0.2, "stream": true,
            "stream_options": {"include_usage": true}})
    );
}

#[test]
fn request_with_items_tools_and_formats() {
    let chat = chat_of(json!({"model": "m", "input": [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "input_text", "text": "look: "},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {"type": "function_call_output", "call_id": "call_2", "output": "two"},
        {"type": "reasoning", "id": "rs_1", "summary": []}],
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low"}}));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "text", "text": "look: "},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
            {"role": "assistant", "content": "calling"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"}
        ])
    );
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(chat["reasoning_effort"], "low");
    assert!(chat.get("stream").is_none());
}

#[test]
fn request_features_a_chat_provider_lacks_are_refused() {
    for (req, param) in [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
            "input",
        ),
        (
            json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}),
            "input",
        ),
    ] {
        let (_, v) = parse_head(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(to_chat_request(&v, "m").unwrap_err().param, Some(param));
    }
}

#[test]
fn plain_completion_becomes_a_response_object() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
    let (out, usage) = from_chat_completion(
        body,
        &ctx(json!({"instructions": "Be terse.", "temperature": 0.5})),
    )
    .unwrap();
    let usage = usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.cached_tokens()), (12, 4));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], "resp_abc");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["instructions"], "Be terse.");
    assert_eq!(v["temperature"], 0.5);
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(
        v["output"],
        json!([{"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}]}])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 19})
    );
    assert_eq!(output_text_of_object(&out), "Hi there");
    assert_eq!(usage_of_object(&out), Some(usage));
}

#[test]
fn truncated_and_tool_completions() {
    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"cut"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
    let v: Value =
        serde_json::from_slice(&from_chat_completion(body, &ctx(json!({}))).unwrap().0).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );

    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{\"x\":2}"}}]},"finish_reason":"tool_calls"}]}"#;
    let (out, usage) = from_chat_completion(body, &ctx(json!({}))).unwrap();
    assert_eq!(usage, None);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"],
        json!([{"id": "fc_abc", "type": "function_call", "status": "completed", "call_id": "call_9",
            "name": "f", "arguments": "{\"x\":2}"}])
    );
    assert_eq!(v["usage"], Value::Null);
}

#[test]
fn text_stream_emits_the_typed_events_in_order() {
    let mut t = ChatToResponsesStream::new(ctx(json!({})));
    let mut out = Vec::new();
    for c in text_chunks(&["Hel", "lo"]) {
        t.push(&c, &mut out);
    }
    t.push(&chunk(json!({}), Some("stop")), &mut out);
    assert!(!t.is_finished(), "waits for the usage chunk");
    t.push(&usage_chunk(10, 3, 2, 0), &mut out);
    t.finish(&mut out);
    t.finish(&mut out);
    let ev = events(&out);
    assert_responses_events(
        &ev,
        "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed",
    );
    assert_eq!(ev[0].1["response"]["status"], "in_progress");
    assert_eq!(ev[0].1["response"]["output"], json!([]));
    assert_eq!(ev[2].1["item"]["status"], "in_progress");
    assert_eq!(ev[3].1["part"]["type"], "output_text");
    assert_eq!(
        (
            &ev[4].1["item_id"],
            &ev[4].1["output_index"],
            &ev[4].1["content_index"],
            &ev[4].1["delta"]
        ),
        (&json!("msg_abc"), &json!(0), &json!(0), &json!("Hel"))
    );
    assert_eq!(ev[6].1["text"], "Hello");
    assert_eq!(ev[8].1["item"]["content"][0]["text"], "Hello");
    let done = &ev[9].1;
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["response"]["usage"]["input_tokens"], 10);
    assert_eq!(
        done["response"]["usage"]["input_tokens_details"]["cached_tokens"],
        3
    );
    assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    let data = serde_json::to_vec(done).unwrap();
    let u = usage_of_event(&data).unwrap();
    assert_eq!(
        (u.prompt_tokens, u.cached_tokens(), u.completion_tokens),
        (10, 3, 2)
    );
    assert_eq!(t.usage(), Some(u));
    assert_eq!(
        text_of_event(&serde_json::to_vec(&ev[4].1).unwrap()).as_deref(),
        Some("Hel")
    );
    assert_eq!(usage_of_event(&serde_json::to_vec(&ev[4].1).unwrap()), None);
}

#[test]
fn tool_call_stream_and_length_cut() {
    let mut t = ChatToResponsesStream::new(ctx(json!({})));
    let mut out = Vec::new();
    t.push(&chunk(json!({"content": "Let me check."}), None), &mut out);
    t.push(&tool_chunk(0, Some(("call_1", "f")), ""), &mut out);
    t.push(&tool_chunk(0, None, "{\"a\":"), &mut out);
    t.push(&tool_chunk(0, None, "1}"), &mut out);
    t.push(&chunk(json!({}), Some("tool_calls")), &mut out);
    t.finish(&mut out);
    let ev = events(&out);
    assert_names(
        &ev,
        "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.output_item.added response.function_call_arguments.delta response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed",
    );
    assert_eq!(ev[8].1["output_index"], 1);
    assert_eq!(ev[8].1["item"]["call_id"], "call_1");
    assert_eq!(ev[11].1["arguments"], "{\"a\":1}");
    let output = &ev[13].1["response"]["output"];
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["arguments"], "{\"a\":1}");
    assert_eq!(ev[13].1["response"]["usage"], Value::Null);

    let mut t = ChatToResponsesStream::new(ctx(json!({"max_output_tokens": 1})));
    let mut out = Vec::new();
    t.push(&chunk(json!({"content": "x"}), Some("length")), &mut out);
    t.push(&usage_chunk(1, 0, 1, 0), &mut out);
    t.push(b"[DONE]", &mut out);
    t.finish(&mut out);
    let ev = events(&out);
    let last = ev.last().unwrap();
    assert_eq!(last.0, "response.incomplete");
    assert_eq!(
        last.1["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last.1["response"]["max_output_tokens"], 1);
    assert_eq!(
        usage_of_event(&serde_json::to_vec(&last.1).unwrap()).map(|u| u.completion_tokens),
        Some(1)
    );
}

#[test]
fn an_empty_stream_still_completes_with_one_message() {
    let mut t = ChatToResponsesStream::new(ctx(json!({})));
    let mut out = Vec::new();
    t.finish(&mut out);
    let ev = events(&out);
    assert_eq!(ev.last().unwrap().0, "response.completed");
    assert_eq!(
        ev.last().unwrap().1["response"]["output"][0]["content"][0]["text"],
        ""
    );
}

#[test]
fn usage_of_native_objects_and_events() {
    let obj = br#"{"id":"resp_1","object":"response","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":8},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":123}}"#;
    let u = usage_of_object(obj).unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cached_tokens(),
            u.completion_tokens,
            u.reasoning_tokens(),
            u.cache_write_tokens()
        ),
        (36, 8, 87, 5, 0)
    );
    let ev = br#"{"type":"response.completed","sequence_number":9,"response":{"usage":{"input_tokens":3,"output_tokens":4}}}"#;
    assert_eq!(
        usage_of_event(ev).map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((3, 4))
    );
    assert_eq!(
        usage_of_event(br#"{"type":"response.created","response":{"usage":null}}"#),
        None
    );
    assert_eq!(usage_of_object(b"nope"), None);
}

proptest! {
    /// Whatever the chunking of the text and the reported usage, the deltas rebuild the text, the
    /// sequence numbers count up from zero, and `response.completed` carries the usage unchanged.
    #[test]
    fn stream_rebuilds_text_and_carries_usage(
        pieces in proptest::collection::vec("[a-z é\"\\\\]{0,6}", 0..12),
        prompt in 0u64..1_000_000, cached_frac in 0u64..=100, completion in 0u64..100_000,
    ) {
        let cached = prompt * cached_frac / 100;
        let mut t = ChatToResponsesStream::new(ctx(json!({})));
        let mut out = Vec::new();
        for p in &pieces {
            t.push(&chunk(json!({"content": p}), None), &mut out);
        }
        t.push(&chunk(json!({}), Some("stop")), &mut out);
        t.push(&usage_chunk(prompt, cached, completion, 0), &mut out);
        t.finish(&mut out);
        let ev = events(&out);
        let text: String = pieces.concat();
        let deltas: String = ev.iter().filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap().to_owned()).collect();
        prop_assert_eq!(&deltas, &text);
        for (i, (_, d)) in ev.iter().enumerate() {
            prop_assert_eq!(d["sequence_number"].as_u64(), Some(i as u64));
        }
        let completed: Vec<_> = ev.iter().filter(|(n, _)| n == "response.completed").collect();
        prop_assert_eq!(completed.len(), 1);
        let u = usage_of_event(&serde_json::to_vec(&completed[0].1).unwrap()).unwrap();
        prop_assert_eq!((u.prompt_tokens, u.cached_tokens(), u.completion_tokens), (prompt, cached, completion));
        prop_assert_eq!(completed[0].1["response"]["output"][0]["content"][0]["text"].as_str(), Some(text.as_str()));
    }
}
