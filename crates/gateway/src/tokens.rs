//! Token counting with tiktoken encodings embedded in the binary, for upstreams that report no usage.

use tiktoken_rs::CoreBPE;

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

    /// Tokens in `text`.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().encode_ordinary(text).len() as u64
    }

    /// Tokens of a prompt: its texts, plus OpenAI's per-message framing for chat (3 per message
    /// and 3 to prime the reply).
    pub fn count_prompt(self, texts: &[String], messages: usize) -> u64 {
        let text: u64 = texts.iter().map(|t| self.count(t)).sum();
        if messages > 0 {
            text + 3 * messages as u64 + 3
        } else {
            text
        }
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
