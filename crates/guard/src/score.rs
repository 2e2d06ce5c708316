//! The scoring model: signal values in 0..1 computed from an account's counters, combined by a
//! logistic function with weights stated here (with their rationale), and explained in words.

use serde::{Deserialize, Serialize};

/// Logistic weights over signal values (each value lies in 0..1, so a weight is the most that
/// signal can move the log-odds). Defaults were set by reasoning about the traffic kinds, then
/// checked on a tuning corpus (seed 1); evaluation figures come from a different seed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Log-odds with no signal at all: an account is benign until shown otherwise.
    pub bias: f64,
    /// Share of *unexplained* traffic (not inside a heavy, topically narrow template) that asks for
    /// reasoning, rubrics, the system prompt or output distributions. The core harvesting signal:
    /// product customers' traffic is explained by their templates, harvesters' is not.
    pub unexplained_harvest: f64,
    /// Share of traffic in heavy templates whose slots range over unrelated topics and whose
    /// answers are long-form (shrunk by +10): combinatorial synthetic-data generation, which
    /// needs none of the other tells (no reasoning request, one temperature, no `n`). A product
    /// template's slots stay in one domain; translation and labelling answer briefly.
    pub broad_template: f64,
    /// Topic breadth of the harvesting requests: distillation wants coverage of many topics.
    pub harvest_breadth: f64,
    /// Raw share of reasoning/rubric elicitation over all traffic.
    pub elicitation: f64,
    /// Share requesting logprobs/top_logprobs/logit_bias/n>1: output distributions are what a
    /// student model trains on best; ordinary products rarely need them.
    pub output_distribution: f64,
    /// System-prompt reveal attempts.
    pub reveal: f64,
    /// Overlap with public instruction sets/benchmarks, scaled by persistence (one-off evals are not
    /// penalized).
    pub benchmark_overlap: f64,
    /// Share of single-turn requests (harvesting is single-shot; people converse).
    pub single_turn: f64,
    /// Share of distinct prompts.
    pub novelty: f64,
    /// Temperature sweeps (many distinct temperatures).
    pub temperature_sweep: f64,
    /// max_tokens near the maximum.
    pub max_tokens_high: f64,
    /// Human diurnal rhythm (a quiet night trough): negative, people sleep, scripts do not.
    pub diurnal: f64,
    /// Cancellations of streams: negative, humans stop generations, harvesters keep everything.
    pub cancellations: f64,
    /// A short burst that is mostly public benchmark prompts: negative (one-off evaluation), until
    /// it persists beyond a few active hours.
    pub one_off_benchmark: f64,
    /// Topic drift against the account's own history (a product account turning to harvesting).
    pub topic_drift: f64,
    /// A segment (one key, address or network) that departs from the rest of its own account
    /// toward machine harvesting: single-turn where the rest converses, machine-paced where the
    /// rest follows a day, answers at least twice as long, in traffic no narrow template
    /// explains (see [`crate::account::contrast`]). Harvesting hidden in one key or backend
    /// of a genuine product needs none of the other tells; at full strength it flags on its
    /// own, as `broad_template` does. 0 for an account as a whole.
    pub segment_contrast: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            bias: -6.5,
            unexplained_harvest: 6.0,
            broad_template: 7.0,
            harvest_breadth: 1.5,
            elicitation: 1.5,
            output_distribution: 2.5,
            reveal: 2.0,
            benchmark_overlap: 1.5,
            single_turn: 1.0,
            novelty: 0.5,
            temperature_sweep: 1.0,
            max_tokens_high: 0.5,
            diurnal: -2.5,
            cancellations: -2.0,
            one_off_benchmark: -5.0,
            topic_drift: 1.0,
            segment_contrast: 7.0,
        }
    }
}

/// One signal with its value (0..1 unless stated) and an explanation in words.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Signal {
    pub name: String,
    pub value: f64,
    pub explanation: String,
}

/// Signal values of an account or a cluster, computed from counters.
#[derive(Clone, Debug, Default)]
pub struct SignalValues {
    pub requests: u64,
    pub unexplained_harvest: f64,
    pub broad_template: f64,
    pub unexplained_share: f64,
    pub harvest_share: f64,
    pub harvest_breadth: f64,
    pub elicitation: f64,
    pub reasoning: f64,
    pub rubric: f64,
    pub output_distribution: f64,
    pub reveal: f64,
    pub benchmark_overlap: f64,
    pub persistence: f64,
    pub single_turn: f64,
    pub novelty: f64,
    pub topic_breadth: f64,
    pub topic_drift: f64,
    pub template_concentration: f64,
    pub temperature_sweep: f64,
    pub distinct_temperatures: u32,
    pub fixed_seed: f64,
    pub max_tokens_high: f64,
    pub diurnal: f64,
    pub regularity: f64,
    pub burstiness: f64,
    pub cancellations: f64,
    pub one_off_benchmark: f64,
    pub active_hours: u64,
    pub linked_accounts: usize,
    /// Accounts linked by synchronized activity (descriptive; part of `linked_accounts` only when
    /// they also share an address).
    pub synchronized_accounts: usize,
    /// A segment's departure from the rest of its account (0 for an account or a cluster).
    pub contrast: Contrast,
}

/// How a segment departs from the rest of its account (see [`crate::account::contrast`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Contrast {
    /// 0..1: the product of the three departures and the segment's unexplained share.
    pub value: f64,
    pub single_turn: f64,
    pub rest_single_turn: f64,
    pub rhythm: f64,
    pub rest_rhythm: f64,
    /// Mean answer length of the segment over the rest's.
    pub answer_ratio: f64,
}

/// Logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

impl SignalValues {
    /// (name, value, weight) of every term of the logistic combination.
    fn terms(&self, w: &Weights) -> [(&'static str, f64, f64); 16] {
        [
            (
                "unexplained_harvest",
                self.unexplained_harvest,
                w.unexplained_harvest,
            ),
            ("broad_template", self.broad_template, w.broad_template),
            ("harvest_breadth", self.harvest_breadth, w.harvest_breadth),
            ("elicitation", self.elicitation, w.elicitation),
            (
                "output_distribution",
                self.output_distribution,
                w.output_distribution,
            ),
            ("reveal", self.reveal, w.reveal),
            (
                "benchmark_overlap",
                self.benchmark_overlap * self.persistence,
                w.benchmark_overlap,
            ),
            ("single_turn", self.single_turn, w.single_turn),
            ("novelty", self.novelty, w.novelty),
            (
                "temperature_sweep",
                self.temperature_sweep,
                w.temperature_sweep,
            ),
            ("max_tokens_high", self.max_tokens_high, w.max_tokens_high),
            ("diurnal", self.diurnal, w.diurnal),
            ("cancellations", self.cancellations, w.cancellations),
            (
                "one_off_benchmark",
                self.one_off_benchmark,
                w.one_off_benchmark,
            ),
            ("topic_drift", self.topic_drift, w.topic_drift),
            ("segment_contrast", self.contrast.value, w.segment_contrast),
        ]
    }

    /// Score in 0..1.
    pub fn score(&self, w: &Weights) -> f64 {
        let z = self
            .terms(w)
            .iter()
            .fold(w.bias, |z, (_, v, wt)| z + v * wt);
        sigmoid(z)
    }

    /// Signals with explanations, strongest contribution to the log-odds first. Descriptive
    /// signals that carry no weight follow.
    pub fn explain(&self, w: &Weights) -> Vec<Signal> {
        let mut scored: Vec<(f64, Signal)> = self
            .terms(w)
            .iter()
            .map(|&(name, v, wt)| {
                let c = v * wt;
                (
                    c,
                    Signal {
                        name: name.to_owned(),
                        value: round4(v),
                        explanation: format!("{} ({:+.2} to the log-odds)", self.words(name), c),
                    },
                )
            })
            .collect();
        scored.sort_by(|a, b| {
            b.0.abs()
                .total_cmp(&a.0.abs())
                .then_with(|| a.1.name.cmp(&b.1.name))
        });
        let mut out: Vec<Signal> = scored.into_iter().map(|(_, s)| s).collect();
        for (name, v) in [
            ("topic_breadth", self.topic_breadth),
            ("template_concentration", self.template_concentration),
            ("fixed_seed", self.fixed_seed),
            ("regularity", self.regularity),
            ("burstiness", self.burstiness),
            ("linked_accounts", self.linked_accounts as f64),
        ] {
            out.push(Signal {
                name: name.to_owned(),
                value: round4(v),
                explanation: format!("{} (descriptive)", self.words(name)),
            });
        }
        out
    }

    fn words(&self, name: &str) -> String {
        match name {
            "unexplained_harvest" => format!(
                "{} of the traffic not explained by a narrow product template carries harvesting requests ({} of all traffic is unexplained)",
                pct(self.unexplained_harvest),
                pct(self.unexplained_share)
            ),
            "broad_template" => format!(
                "{} of requests fill a fixed template with topics from unrelated domains and get long-form answers (synthetic-data generation)",
                pct(self.broad_template)
            ),
            "harvest_breadth" => format!(
                "harvesting requests spread over topics with normalized entropy {:.2}",
                self.harvest_breadth
            ),
            "elicitation" => format!(
                "{} of prompts ask for step-by-step reasoning, {} for rubric grading",
                pct(self.reasoning),
                pct(self.rubric)
            ),
            "output_distribution" => format!(
                "{} of requests ask for logprobs, logit_bias or several samples",
                pct(self.output_distribution)
            ),
            "reveal" => format!(
                "{} of prompts try to reveal the system prompt",
                pct(self.reveal)
            ),
            "benchmark_overlap" => format!(
                "{} of prompts match public instruction sets or benchmarks (persistence {:.2})",
                pct(self.benchmark_overlap),
                self.persistence
            ),
            "single_turn" => format!("{} of requests are single-turn", pct(self.single_turn)),
            "novelty" => format!("{} of prompts are distinct", pct(self.novelty)),
            "temperature_sweep" => {
                format!("{} distinct temperatures used", self.distinct_temperatures)
            }
            "max_tokens_high" => format!(
                "{} of requests ask for max_tokens near the maximum",
                pct(self.max_tokens_high)
            ),
            "diurnal" => format!("human day/night rhythm strength {:.2}", self.diurnal),
            "cancellations" => format!(
                "{} of completions were cancelled by the client",
                pct(self.cancellations)
            ),
            "one_off_benchmark" => format!(
                "one-off benchmark burst indicator {:.2} ({} active hours)",
                self.one_off_benchmark, self.active_hours
            ),
            "topic_drift" => format!(
                "recent topics differ from the account's history by {:.2} (total variation)",
                self.topic_drift
            ),
            "segment_contrast" => {
                let c = &self.contrast;
                format!(
                    "departure from the rest of the account {:.2}: {} single-turn against {}, day/night rhythm {:.2} against {:.2}, answers {:.1}× as long",
                    c.value,
                    pct(c.single_turn),
                    pct(c.rest_single_turn),
                    c.rhythm,
                    c.rest_rhythm,
                    c.answer_ratio
                )
            }
            "topic_breadth" => format!(
                "all prompts spread over topics with normalized entropy {:.2}",
                self.topic_breadth
            ),
            "template_concentration" => format!(
                "{} of requests fall in the five largest templates",
                pct(self.template_concentration)
            ),
            "fixed_seed" => format!(
                "{} of requests reuse the previous seed",
                pct(self.fixed_seed)
            ),
            "regularity" => format!(
                "inter-arrival regularity {:.2} (1 = metronomic)",
                self.regularity
            ),
            "burstiness" => format!(
                "busiest minute is {:.1}× the average active minute",
                self.burstiness
            ),
            "linked_accounts" => {
                let sync = match self.synchronized_accounts {
                    0 => String::new(),
                    k => format!(
                        "; synchronized activity with {k} account{}: their bursts start in the same minutes (clustered only where they also share an address)",
                        if k == 1 { "" } else { "s" }
                    ),
                };
                format!("{} linked accounts{sync}", self.linked_accounts)
            }
            _ => String::new(),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Normalized Shannon entropy (0..1) of a histogram.
pub fn entropy<T: Copy + Into<f64>>(hist: &[T]) -> f64 {
    let total: f64 = hist.iter().map(|&c| c.into()).sum();
    if total <= 0.0 || hist.len() < 2 {
        return 0.0;
    }
    let h: f64 = hist
        .iter()
        .map(|&c| c.into() / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    h / (hist.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_bounds() {
        assert!((entropy(&[5u32; 32]) - 1.0).abs() < 1e-9);
        assert_eq!(entropy(&[0u32, 7, 0, 0]), 0.0);
        assert_eq!(entropy::<u32>(&[0, 0]), 0.0);
    }

    #[test]
    fn score_is_monotone_in_harvest_signals_and_explained() {
        let w = Weights::default();
        let benign = SignalValues {
            single_turn: 0.4,
            novelty: 0.6,
            diurnal: 0.8,
            ..Default::default()
        };
        let harvest = SignalValues {
            unexplained_harvest: 0.95,
            harvest_breadth: 0.9,
            elicitation: 0.9,
            reasoning: 0.9,
            single_turn: 1.0,
            novelty: 1.0,
            ..Default::default()
        };
        assert!(benign.score(&w) < 0.05);
        assert!(harvest.score(&w) > 0.9);
        let s = harvest.explain(&w);
        assert_eq!(s[0].name, "unexplained_harvest");
        assert!(s[0].explanation.starts_with("95% of the traffic"));
        assert!(s.iter().any(|x| {
            x.name == "elicitation"
                && x.explanation
                    .contains("90% of prompts ask for step-by-step reasoning")
        }));
    }
}
