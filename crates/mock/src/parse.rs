//! Minimal request parsing: pulls only the fields the mock needs out of a JSON body
//! (`model`, `stream`, `stream_options.include_usage`, `n`) and counts prompt "tokens"
//! without allocating for the text it walks over.
//!
//! # Prompt token count
//! The mock's prompt token count is the number of whitespace-separated words
//! ([`str::split_whitespace`]) found in:
//! - chat: every message's `content` (a string, or the `text` of each content part);
//! - legacy completions: `prompt` (a string or an array of strings);
//! - embeddings: `input` (a string or an array of strings);
//! - Responses API: `input` (a string, or items whose `content` and `text` count) and
//!   `instructions`;
//! - Anthropic Messages API: `messages` as for chat, and `system` (a string or text blocks).
//!
//! Integers in `prompt`/`input` (pre-tokenised input) count one token each.
//! Nothing else (roles, names, tools, images) is counted.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Why a request body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body is not the JSON object the route expects.
    #[error("invalid JSON body: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// The body has no `model` (and the route has no deployment to stand in for it).
    #[error("you must provide a model parameter")]
    MissingModel,
    /// `model` is present but is not a JSON string.
    #[error("model must be a string")]
    ModelNotString,
}

/// What the mock needs from a request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedRequest {
    /// The request's `model`, as its JSON text (quoted and escaped), ready to splice into output.
    pub model_json: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    pub include_usage: bool,
    /// `n` (number of choices), at least 1.
    pub n: u32,
    /// The word count described in the module docs.
    pub prompt_tokens: u64,
    /// Embeddings: how many inputs `input` holds (a string or one token array is one input).
    pub inputs: u64,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    messages: Option<Words>,
    #[serde(default)]
    prompt: Option<Input>,
    #[serde(default)]
    input: Option<Input>,
    /// Responses API: counted like a message.
    #[serde(default)]
    instructions: Option<Words>,
    /// Anthropic Messages API: a string or text blocks, counted like a message.
    #[serde(default)]
    system: Option<Words>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Parses a request body. An empty body parses as an empty request.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParsedRequest {
            n: 1,
            ..ParsedRequest::default()
        });
    }
    let wire: Wire<'_> = serde_json::from_slice(body)?;
    let model_json = match wire.model {
        Some(raw) if raw.get().starts_with('"') => Some(raw.get().to_owned()),
        Some(raw) if raw.get() == "null" => None,
        Some(_) => return Err(RequestError::ModelNotString),
        None => None,
    };
    let messages = wire.messages.map_or(0, |w| w.0);
    let prompt = wire.prompt.unwrap_or_default();
    let input = wire.input.unwrap_or_default();
    Ok(ParsedRequest {
        model_json,
        stream: wire.stream.unwrap_or(false),
        include_usage: wire
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        n: wire.n.unwrap_or(1).max(1),
        prompt_tokens: messages
            + prompt.words
            + input.words
            + wire.instructions.map_or(0, |w| w.0)
            + wire.system.map_or(0, |w| w.0),
        inputs: input.inputs,
    })
}

/// Counts the prompt tokens of a request body the way the mock reports them
/// (see the module docs). Useful in tests to predict `usage.prompt_tokens`.
pub fn count_prompt_tokens(body: &[u8]) -> Result<u64, RequestError> {
    parse_request(body).map(|p| p.prompt_tokens)
}

/// Number of whitespace-separated words in `text`.
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Word count of any JSON value: strings count their words, integers count one,
/// arrays sum their elements, objects count only their `content` and `text` members.
#[derive(Default)]
struct Words(u64);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordsVisitor).map(Words)
    }
}

struct WordsVisitor;

impl<'de> Visitor<'de> for WordsVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Ok(count_words(v))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        while let Some(Words(n)) = seq.next_element()? {
            total += n;
        }
        Ok(total)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        while let Some(key) = map.next_key::<Key>()? {
            if key.counted {
                total += map.next_value::<Words>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(total)
    }
}

/// A map key, remembering only whether it is `content` or `text`.
struct Key {
    counted: bool,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key {
                    counted: v == "content" || v == "text",
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `prompt` / `input`: words and number of inputs.
#[derive(Default)]
struct Input {
    words: u64,
    inputs: u64,
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = Input;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Input, E> {
                Ok(Input {
                    words: count_words(v),
                    inputs: 1,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Input, E> {
                Ok(Input::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
                let mut words = 0u64;
                let mut elements = 0u64;
                let mut all_ints = true;
                while let Some(el) = seq.next_element::<Element>()? {
                    words += el.words;
                    elements += 1;
                    all_ints &= el.is_int;
                }
                // A flat array of token ids is one input; otherwise one input per element.
                let inputs = if all_ints && elements > 0 {
                    1
                } else {
                    elements
                };
                Ok(Input { words, inputs })
            }
        }
        d.deserialize_any(InputVisitor)
    }
}

/// One element of a `prompt`/`input` array.
struct Element {
    words: u64,
    is_int: bool,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or an array of integers")
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
                Ok(Element {
                    words: 1,
                    is_int: true,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                Ok(Element {
                    words: 1,
                    is_int: true,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element {
                    words: count_words(v),
                    is_int: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
                let words = WordsVisitor.visit_seq(seq)?;
                Ok(Element {
                    words,
                    is_int: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
                let words = WordsVisitor.visit_map(map)?;
                Ok(Element {
                    words,
                    is_int: false,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element {
                    words: 0,
                    is_int: false,
                })
            }
        }
        d.deserialize_any(ElementVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_counts_message_contents_and_text_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"you are  helpful"},
            {"role":"user","content":[{"type":"text","text":"two words"},{"type":"image_url","image_url":{"url":"a b c"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"x"}]}
        ],"stream":true,"stream_options":{"include_usage":true},"n":3}"#;
        let p = parse_request(body).unwrap();
        assert_eq!(p.prompt_tokens, 5);
        assert_eq!(p.model_json.as_deref(), Some("\"m\""));
        assert!(p.stream);
        assert!(p.include_usage);
        assert_eq!(p.n, 3);
    }

    #[test]
    fn escaped_strings_are_counted_after_unescaping() {
        let body = br#"{"model":"a\"b","messages":[{"role":"user","content":"one\ntwo\tthree"}]}"#;
        let p = parse_request(body).unwrap();
        assert_eq!(p.prompt_tokens, 3);
        assert_eq!(p.model_json.as_deref(), Some(r#""a\"b""#));
        assert!(!p.stream);
        assert_eq!(p.n, 1);
    }

    #[test]
    fn prompts_and_inputs() {
        let p = parse_request(br#"{"model":"m","prompt":"a b c"}"#).unwrap();
        assert_eq!(
            (p.prompt_tokens, p.inputs),
            (3, 0),
            "inputs counts `input` only"
        );
        let p = parse_request(br#"{"model":"m","input":["a b","c"]}"#).unwrap();
        assert_eq!((p.prompt_tokens, p.inputs), (3, 2));
        let p = parse_request(br#"{"model":"m","input":[1,2,3,4]}"#).unwrap();
        assert_eq!((p.prompt_tokens, p.inputs), (4, 1));
        let p = parse_request(br#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!((p.prompt_tokens, p.inputs), (3, 2));
    }

    #[test]
    fn bad_bodies_are_rejected() {
        assert!(matches!(
            parse_request(b"{not json"),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_request(br#"{"model":5}"#),
            Err(RequestError::ModelNotString)
        ));
        let p = parse_request(b"").unwrap();
        assert_eq!(p.model_json, None);
        assert_eq!(p.n, 1);
    }
}
