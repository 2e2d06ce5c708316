//! Fuzzing of the parsers that read client and upstream bytes: the request view
//! (`ApiRequest::parse` and `rewrite`), the SSE splitter, and usage extraction.
//!
//! Property tests on arbitrary inputs: they run in the normal suite with a few hundred cases
//! each, and as the long fuzz run with many more (`TOLLGATE_FUZZ_CASES=200000 cargo test
//! --release -p tollgate-wire --test fuzz`; see SECURITY.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::Value;
use tollgate_wire::sse::{SseEvent, SseSplitter};
use tollgate_wire::usage::{read_chunk, response_text, usage_of_response};
use tollgate_wire::{ApiRequest, Endpoint, Restrict};

/// Cases per property: `TOLLGATE_FUZZ_CASES`, else 256.
fn config() -> ProptestConfig {
    tollgate_testkit::fuzz::config(256)
}

const ENDPOINTS: [Endpoint; 3] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
];

/// Keys the gateway interprets, mixed with arbitrary ones.
fn key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => prop::sample::select(vec![
            "model", "stream", "stream_options", "messages", "prompt", "input", "max_tokens",
            "max_completion_tokens", "n", "temperature", "top_p", "tools", "logprobs",
            "include_usage", "role", "content", "mod\\u0065l",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// Arbitrary JSON, biased towards the shapes of request bodies.
fn json_value() -> impl Strategy<Value = Value> {
    tollgate_testkit::fuzz::json(
        vec!["user", "system", "assistant", "wizard", "gpt-4o-mini"],
        key(),
        tollgate_testkit::fuzz::Nesting {
            depth: 4,
            size: 32,
            branch: 6,
            arrays: 6,
            objects: 6,
        },
    )
}

/// A JSON object body written field by field, so that keys may repeat.
fn body_text() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), json_value()), 0..10).prop_map(|fields| {
        let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(","))
    })
}

/// A plausible chat body with extra fields, so that parsing often succeeds.
fn chat_body() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), json_value()), 0..6),
        any::<bool>(),
        "\\PC{0,20}",
    )
        .prop_map(|(extra, stream, model)| {
            let mut fields = vec![
                format!("\"model\":{}", Value::from(model)),
                r#""messages":[{"role":"user","content":"hi"}]"#.to_owned(),
                format!("\"stream\":{stream}"),
            ];
            fields.extend(extra.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            format!("{{{}}}", fields.join(","))
        })
}

/// The raw JSON of each top-level field of `text`, in order, duplicates kept.
fn top_fields(text: &str) -> Vec<(String, String)> {
    struct Fields(Vec<(String, String)>);
    impl<'de> serde::Deserialize<'de> for Fields {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Fields, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) =
                        map.next_entry::<String, Box<serde_json::value::RawValue>>()?
                    {
                        out.push((k, v.get().to_owned()));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Fields>(text).unwrap().0
}

/// Checks what holds for every body the view accepts.
fn check_accepted(text: &str, endpoint: Endpoint, req: &ApiRequest<'_>) {
    let fields = top_fields(text);
    // No key twice: the gateway and the upstream cannot read different values.
    for (i, (k, _)) in fields.iter().enumerate() {
        assert!(
            fields[..i].iter().all(|(seen, _)| seen != k),
            "duplicate key {k:?} accepted in {text}"
        );
    }
    let out = req.rewrite("upstream-model", Restrict::NONE);
    let out_text = std::str::from_utf8(&out).expect("rewrite is UTF-8");
    let rewritten = top_fields(out_text);
    let get = |name: &str| rewritten.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    assert_eq!(get("model").map(String::as_str), Some("\"upstream-model\""));
    if req.stream {
        let opts: Value = serde_json::from_str(get("stream_options").unwrap()).unwrap();
        assert_eq!(opts["include_usage"], Value::Bool(true), "{out_text}");
    }
    // Every other field goes upstream byte for byte, in order.
    let kept: Vec<_> = fields
        .iter()
        .filter(|(k, _)| k != "model" && !(req.stream && k == "stream_options"))
        .collect();
    let sent: Vec<_> = rewritten
        .iter()
        .filter(|(k, _)| k != "model" && !(req.stream && k == "stream_options"))
        .collect();
    assert_eq!(kept, sent, "fields changed: {text} -> {out_text}");
    // The rewrite is itself a body the view accepts, with the same reading.
    let again = ApiRequest::parse(&out, endpoint, false).expect("rewrite parses");
    assert_eq!(again.model.as_deref(), Some("upstream-model"));
    assert_eq!(again.stream, req.stream);
    assert_eq!((again.max_tokens, again.n), (req.max_tokens, req.n));
    // Under the guard's restrictions: no logprobs, at most one choice, the rest unchanged.
    let strict = Restrict {
        strip_logprobs: true,
        max_n: Some(1),
    };
    let out = req.rewrite("upstream-model", strict);
    let restricted = ApiRequest::parse(&out, endpoint, false).expect("restricted rewrite parses");
    assert!(
        !restricted.asks_logprobs,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(restricted.n.is_none_or(|n| n <= 1));
    assert_eq!(restricted.choices(Restrict::NONE), req.choices(strict));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_view_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for endpoint in ENDPOINTS {
            for in_path in [false, true] {
                if let Ok(req) = ApiRequest::parse(&bytes, endpoint, in_path) {
                    let _ = req.rewrite("m", Restrict::NONE);
                    let _ = req.prompt_texts(endpoint);
                }
            }
        }
    }

    #[test]
    fn request_view_on_json_objects(text in body_text()) {
        for endpoint in ENDPOINTS {
            if let Ok(req) = ApiRequest::parse(text.as_bytes(), endpoint, true) {
                let _ = req.prompt_texts(endpoint);
                check_accepted(&text, endpoint, &req);
            }
        }
    }

    #[test]
    fn request_view_on_chat_bodies(text in chat_body()) {
        if let Ok(req) = ApiRequest::parse(text.as_bytes(), Endpoint::ChatCompletions, false) {
            check_accepted(&text, Endpoint::ChatCompletions, &req);
        }
    }

    #[test]
    fn sse_splitting_is_lossless_and_independent_of_read_sizes(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"data: {}[DONE]\r\n:x".to_vec()),
                1 => any::<u8>(),
            ],
            0..400,
        ),
        cuts in prop::collection::vec(0usize..400, 0..20),
    ) {
        // All at once.
        let mut whole = SseSplitter::new();
        whole.push(&bytes);
        let mut expected: Vec<SseEvent> = std::iter::from_fn(|| whole.next_event()).collect();
        let rest = whole.finish();
        // In pieces cut at arbitrary points.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut pieces = SseSplitter::new();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[at..cut]);
            at = cut;
            got.extend(std::iter::from_fn(|| pieces.next_event()));
        }
        prop_assert_eq!(pieces.finish(), rest.clone());
        prop_assert_eq!(&got, &expected);
        // Nothing is lost but trailing whitespace.
        if let Some(r) = rest {
            expected.push(r);
        }
        let joined: Vec<u8> = expected.iter().flat_map(|e| e.raw.to_vec()).collect();
        prop_assert!(bytes.starts_with(&joined));
        prop_assert!(bytes[joined.len()..].iter().all(u8::is_ascii_whitespace));
    }

    #[test]
    fn usage_extraction_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = usage_of_response(&bytes);
        let _ = response_text(&bytes);
        let mut text = String::new();
        let _ = read_chunk(&bytes, &mut text);
    }

    #[test]
    fn usage_extraction_on_json(usage in json_value(), choices in json_value()) {
        let body = serde_json::json!({"object": "chat.completion", "usage": usage, "choices": choices});
        let bytes = serde_json::to_vec(&body).unwrap();
        let got = usage_of_response(&bytes);
        // Counts are read exactly as reported; a usage without a prompt count is no usage (the
        // gateway then estimates), never zero tokens.
        if let Some(u) = &got {
            prop_assert_eq!(Some(u.prompt_tokens), usage["prompt_tokens"].as_u64().or_else(|| usage[0].as_u64()));
            if let Some(c) = usage["completion_tokens"].as_u64() {
                prop_assert_eq!(u.completion_tokens, c);
            }
        }
        if usage.is_object() && usage.get("prompt_tokens").is_none() {
            prop_assert!(got.is_none(), "{}", body);
        }
        let _ = response_text(&bytes);
        let mut text = String::new();
        let _ = read_chunk(&bytes, &mut text);
    }
}
