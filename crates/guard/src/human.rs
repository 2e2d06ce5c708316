//! Real human-written prompt text for the evaluation corpus (`guard-eval --human-prompts FILE`).
//!
//! The file is JSON Lines, one prompt per line: `{"source", "id", "category", "turns": [first
//! turn, follow-up?]}`, as written by `scripts/fetch_prompts.sh` (MT-Bench questions and
//! HumanEval problems, both shipped inside PyPI packages) or the checked-in sample
//! `testdata/human_prompts/sample.jsonl`.
//!
//! The prompts are split in two halves by a hash of their first turn: the *public* half plays the
//! public prompt set (what evaluators run once, what public-set harvesters replay, and what the
//! operator loads as benchmark files); the *private* half stands in for what customers type
//! themselves (consumer chat: non-coding prompts with their follow-up turn; coding assistants:
//! coding prompts). Both sources are public benchmarks in reality; the split keeps a consumer's
//! text out of the benchmark filter, as a customer's own prompts would be.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::GuardError;
use crate::sketch::hash_bytes;

/// One prompt with its optional follow-up turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanPrompt {
    pub source: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub category: String,
    pub turns: Vec<String>,
}

impl HumanPrompt {
    /// The first turn.
    pub fn first(&self) -> &str {
        self.turns.first().map_or("", String::as_str)
    }
    /// Whether this is a programming prompt.
    pub fn coding(&self) -> bool {
        self.category == "coding"
    }
}

/// Human prompts split by role in the corpus.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HumanPrompts {
    /// Public half: the public prompt set (benchmark evaluations, public-set replay, the
    /// benchmark filter).
    pub public: Vec<HumanPrompt>,
    /// Private non-coding prompts: consumer chat.
    pub chat: Vec<HumanPrompt>,
    /// Private coding prompts: coding assistants.
    pub coding: Vec<HumanPrompt>,
}

impl HumanPrompts {
    /// Parse JSON Lines (blank lines are skipped; prompts with an empty first turn are dropped).
    pub fn parse(text: &str) -> Result<HumanPrompts, GuardError> {
        let mut out = HumanPrompts::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let p: HumanPrompt =
                serde_json::from_str(line).map_err(|e| GuardError::InvalidLine {
                    line: i as u64 + 1,
                    message: e.to_string(),
                })?;
            if p.first().trim().is_empty() {
                continue;
            }
            if hash_bytes(p.first().as_bytes()) % 2 == 0 {
                out.public.push(p);
            } else if p.coding() {
                out.coding.push(p);
            } else {
                out.chat.push(p);
            }
        }
        Ok(out)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<HumanPrompts, GuardError> {
        let text = std::fs::read_to_string(path).map_err(|source| GuardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.public.len() + self.chat.len() + self.coding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// First turns of the public half: the public prompt set.
    pub fn public_texts(&self) -> Vec<String> {
        self.public.iter().map(|p| p.first().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_by_role_and_reports_bad_lines() {
        let text = (0..40)
            .map(|i| {
                let cat = if i % 4 == 0 { "coding" } else { "writing" };
                format!(
                    r#"{{"source": "t", "id": "{i}", "category": "{cat}", "turns": ["prompt number {i}", "and then?"]}}"#
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let p = HumanPrompts::parse(&format!("{text}\n\n")).unwrap();
        assert_eq!(p.len(), 40);
        assert!(!p.public.is_empty() && !p.chat.is_empty() && !p.coding.is_empty());
        assert!(p.coding.iter().all(HumanPrompt::coding));
        assert!(p.chat.iter().all(|x| !x.coding()));
        // Deterministic.
        assert_eq!(HumanPrompts::parse(&text).unwrap(), p);
        assert_eq!(p.public_texts().len(), p.public.len());
        let err = HumanPrompts::parse(&format!("{text}\nnot json")).unwrap_err();
        assert!(err.to_string().starts_with("line 41:"), "{err}");
    }
}
