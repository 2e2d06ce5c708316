//! Token counting with tiktoken encodings embedded in the binary, for upstreams that report no usage.
//!
//! Counting is bounded in time and memory whatever the input: text is cut into pieces of at most
//! [`PIECE_BYTES`] (at whitespace where there is any) before the BPE sees it, because the BPE's
//! cost grows with the square of a piece's length and its pre-tokenizer recurses on long runs (one
//! character repeated a million times took minutes, then overflowed the stack). Past
//! [`EXACT_BYTES`] of one prompt the rest is estimated at [`BYTES_PER_TOKEN`]. Large prompts are
//! counted on the blocking pool ([`Encoding::count_prompt_async`]), never on a serving thread.

use tiktoken_rs::CoreBPE;

/// Longest piece of text given to the BPE at once.
pub const PIECE_BYTES: usize = 512;
/// Bytes of one prompt counted exactly; beyond them tokens are estimated.
pub const EXACT_BYTES: usize = 1 << 20;
/// The estimate beyond [`EXACT_BYTES`]: one token per this many bytes (OpenAI's rule of thumb).
pub const BYTES_PER_TOKEN: usize = 4;
/// Prompts up to this size are counted where they are (microseconds); larger ones on the
/// blocking pool.
pub const INLINE_BYTES: usize = 8 << 10;

/// The encodings Tollgate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
}

impl Encoding {
    /// By explicit name, else by model family: GPT-4o, o-series and GPT-4.1+ use o200k_base,
    /// older GPT-4/3.5 and embeddings use cl100k_base.
    pub fn for_model(model: &str, explicit: Option<&str>) -> Encoding {
        match explicit {
            Some("cl100k_base") => return Encoding::Cl100k,
            Some("o200k_base") => return Encoding::O200k,
            _ => {}
        }
        let m = model.to_ascii_lowercase();
        if m.starts_with("gpt-3.5")
            || (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.1"))
            || m.starts_with("text-embedding")
        {
            Encoding::Cl100k
        } else {
            Encoding::O200k
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Tokens in `text` (exact up to [`EXACT_BYTES`], estimated beyond).
    pub fn count(self, text: &str) -> u64 {
        let mut budget = EXACT_BYTES;
        self.count_within(text, &mut budget)
    }

    /// Counts `text` exactly while `budget` bytes remain, and estimates the rest.
    fn count_within(self, text: &str, budget: &mut usize) -> u64 {
        let bpe = self.bpe();
        let mut tokens = 0u64;
        let mut rest = text;
        while !rest.is_empty() {
            if *budget == 0 {
                return tokens + rest.len().div_ceil(BYTES_PER_TOKEN) as u64;
            }
            let piece = piece_of(rest);
            tokens += bpe.encode_ordinary(piece).len() as u64;
            *budget = budget.saturating_sub(piece.len());
            rest = &rest[piece.len()..];
        }
        tokens
    }

    /// Tokens of a prompt: its texts, plus OpenAI's per-message framing for chat (3 per message
    /// and 3 to prime the reply).
    pub fn count_prompt(self, texts: &[String], messages: usize) -> u64 {
        let mut budget = EXACT_BYTES;
        let text: u64 = texts
            .iter()
            .map(|t| self.count_within(t, &mut budget))
            .sum();
        if messages > 0 {
            text + 3 * messages as u64 + 3
        } else {
            text
        }
    }

    /// [`Encoding::count_prompt`] off the serving thread when the prompt is large. A counting
    /// failure falls back to the byte estimate.
    pub async fn count_prompt_async(self, texts: Vec<String>, messages: usize) -> u64 {
        let bytes: usize = texts.iter().map(String::len).sum();
        if bytes <= INLINE_BYTES {
            return self.count_prompt(&texts, messages);
        }
        let estimate = (bytes.div_ceil(BYTES_PER_TOKEN) + 3 * messages) as u64;
        tokio::task::spawn_blocking(move || self.count_prompt(&texts, messages))
            .await
            .unwrap_or(estimate)
    }

    /// [`Encoding::count`] off the serving thread when the text is large.
    pub async fn count_async(self, text: String) -> u64 {
        if text.len() <= INLINE_BYTES {
            return self.count(&text);
        }
        let estimate = text.len().div_ceil(BYTES_PER_TOKEN) as u64;
        tokio::task::spawn_blocking(move || self.count(&text))
            .await
            .unwrap_or(estimate)
    }
}

/// The next piece of `text` to encode: all of it when short, else up to [`PIECE_BYTES`] ending
/// before a whitespace character where there is one in the second half (so words stay whole and
/// the count matches the unsplit text), else at a character boundary.
fn piece_of(text: &str) -> &str {
    if text.len() <= PIECE_BYTES {
        return text;
    }
    let mut end = PIECE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let window = &text[..end];
    match window.rfind(|c: char| c.is_whitespace()) {
        // Cut before the last run of whitespace, keeping it with the next word as the BPE's
        // pre-tokenizer does (" word").
        Some(i) if i >= PIECE_BYTES / 2 => {
            let run_start = window[..i]
                .rfind(|c: char| !c.is_whitespace())
                .map_or(0, |j| {
                    j + window[j..].chars().next().map_or(1, char::len_utf8)
                });
            if run_start >= PIECE_BYTES / 4 {
                &text[..run_start]
            } else {
                window
            }
        }
        _ => window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_encodings_by_family() {
        assert_eq!(Encoding::for_model("gpt-4o-mini", None), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4-turbo", None), Encoding::Cl100k);
        assert_eq!(
            Encoding::for_model("text-embedding-3-small", None),
            Encoding::Cl100k
        );
        assert_eq!(
            Encoding::for_model("llama", Some("cl100k_base")),
            Encoding::Cl100k
        );
    }

    #[test]
    fn pieces_keep_ordinary_text_counts_exact() {
        let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(400);
        let whole = Encoding::O200k.bpe().encode_ordinary(&text).len() as u64;
        assert_eq!(Encoding::O200k.count(&text), whole);
        let spaced = "word  with   odd    spacing\n\nand lines ".repeat(300);
        let whole = Encoding::Cl100k.bpe().encode_ordinary(&spaced).len() as u64;
        assert_eq!(Encoding::Cl100k.count(&spaced), whole);
    }

    #[test]
    fn pathological_text_is_bounded_and_never_overflows() {
        // One character repeated: minutes and a stack overflow when given to the BPE whole.
        let text = "a".repeat(2 << 20);
        let n = Encoding::O200k.count(&text);
        // The first EXACT_BYTES are counted, the rest estimated at 4 bytes a token.
        let estimated = ((2 << 20) - EXACT_BYTES).div_ceil(BYTES_PER_TOKEN) as u64;
        assert!(n > estimated && n < (2 << 20) as u64, "{n}");
        // Multi-byte characters are cut at character boundaries.
        let text = "é".repeat(100_000);
        assert!(Encoding::Cl100k.count(&text) > 0);
    }

    #[test]
    fn counts_known_strings() {
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::O200k.count(""), 0);
        assert_eq!(
            Encoding::O200k.count_prompt(&["hello world".into()], 1),
            2 + 3 + 3
        );
    }
}
