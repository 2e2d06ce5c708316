//! The `usage` object that upstreams report, in plain responses and in stream chunks.

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Token counts as OpenAI reports them. `prompt_tokens` includes cached tokens.
///
/// `prompt_tokens` is required (embeddings report no `completion_tokens`): a `usage` without it
/// (`{}`, `[]`, another vendor's field names) is no usage, so the request is counted by the
/// gateway's estimate instead of being recorded as zero tokens (found by the fuzzer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic's `cache_creation_input_tokens`,
    /// carried in translated chat usage; OpenAI reports none). A part of `prompt_tokens`.
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Cached prompt tokens (a part of `prompt_tokens`, never more than it).
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(self.prompt_tokens)
    }

    /// Prompt tokens written to a cache (a part of `prompt_tokens`, never more than it less the
    /// cache reads).
    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cache_write_tokens)
            .unwrap_or(0)
            .min(self.prompt_tokens - self.cached_tokens())
    }

    /// A usage of these counts: `prompt` includes `cached` and `cache_write`; `completion`
    /// includes `reasoning`.
    pub fn new(
        prompt: u64,
        cached: u64,
        cache_write: u64,
        completion: u64,
        reasoning: u64,
    ) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(cached),
                cache_write_tokens: (cache_write > 0).then_some(cache_write),
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(reasoning),
            }),
        }
    }

    /// Reasoning tokens, where the upstream reports them (a part of `completion_tokens`).
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Reads the `usage` of a plain (non-streamed) response body; `None` when absent or not JSON.
pub fn usage_of_response(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

/// What the gateway needs from one stream chunk's JSON.
#[derive(Debug, Default)]
pub struct ChunkView {
    /// The chunk's `usage`, when present and not null.
    pub usage: Option<Usage>,
    /// Whether the chunk has no choices (`"choices": []`): the dedicated usage chunk.
    pub choices_empty: bool,
    /// The text this chunk adds (`delta.content` of chat, `text` of completions), all choices.
    pub text_len: usize,
}

#[derive(Deserialize)]
struct ChunkJson<'a> {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceJson<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceJson<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaJson<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    index: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct DeltaJson<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// Parses one stream chunk's data, appending its generated text to `text`.
/// Returns `None` when the data is not a JSON object of the expected shape.
pub fn read_chunk(data: &[u8], text: &mut String) -> Option<ChunkView> {
    let chunk: ChunkJson<'_> = serde_json::from_slice(data).ok()?;
    let mut view = ChunkView {
        usage: chunk.usage,
        ..ChunkView::default()
    };
    match chunk.choices {
        Some(choices) => {
            view.choices_empty = choices.is_empty();
            for choice in choices {
                let piece = choice.delta.and_then(|d| d.content).or(choice.text);
                if let Some(piece) = piece {
                    view.text_len += piece.len();
                    text.push_str(&piece);
                }
            }
        }
        None => view.choices_empty = true,
    }
    Some(view)
}

/// Text generated in a plain response: every choice's `message.content` (chat) or `text` (completions).
pub fn response_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Resp<'a> {
        #[serde(default, borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        message: Option<Message<'a>>,
        #[serde(default, borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(default, borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
    }
    let mut out = String::new();
    if let Ok(resp) = serde_json::from_slice::<Resp<'_>>(body) {
        for choice in resp.choices {
            if let Some(t) = choice.message.and_then(|m| m.content).or(choice.text) {
                out.push_str(&t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_without_a_prompt_count_is_no_usage() {
        for body in [
            r#"{"usage":{}}"#,
            r#"{"usage":[]}"#,
            r#"{"usage":{"input_tokens":10,"output_tokens":5}}"#,
        ] {
            assert_eq!(usage_of_response(body.as_bytes()), None, "{body}");
        }
        let u = usage_of_response(br#"{"usage":{"prompt_tokens":7,"total_tokens":7}}"#).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 0));
    }

    #[test]
    fn reads_usage_with_details() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let u = usage_of_response(body).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 5));
        assert_eq!((u.cached_tokens(), u.reasoning_tokens()), (4, 2));
    }

    #[test]
    fn missing_or_null_usage_is_none() {
        assert_eq!(usage_of_response(br#"{"id":"x"}"#), None);
        assert_eq!(usage_of_response(br#"{"usage":null}"#), None);
        assert_eq!(usage_of_response(b"not json"), None);
    }

    #[test]
    fn cached_never_exceeds_prompt() {
        let u = usage_of_response(
            br#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":9}}}"#,
        )
        .unwrap();
        assert_eq!(u.cached_tokens(), 3);
    }

    #[test]
    fn chunk_text_and_usage() {
        let mut text = String::new();
        let v = read_chunk(
            br#"{"choices":[{"index":0,"delta":{"content":"he\"llo"}}]}"#,
            &mut text,
        )
        .unwrap();
        assert!(!v.choices_empty && v.usage.is_none());
        let v = read_chunk(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            &mut text,
        )
        .unwrap();
        assert!(v.choices_empty);
        assert_eq!(v.usage.unwrap().completion_tokens, 2);
        let _ = read_chunk(br#"{"choices":[{"index":0,"text":" world"}]}"#, &mut text).unwrap();
        assert_eq!(text, "he\"llo world");
    }

    #[test]
    fn response_text_of_chat_and_completion() {
        assert_eq!(
            response_text(
                br#"{"choices":[{"message":{"role":"assistant","content":"hi there"}}]}"#
            ),
            "hi there"
        );
        assert_eq!(response_text(br#"{"choices":[{"text":"abc"}]}"#), "abc");
    }
}
