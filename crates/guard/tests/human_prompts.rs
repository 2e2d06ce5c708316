//! The evaluation corpus with real human prompt text: the checked-in sample
//! (`testdata/human_prompts/sample.jsonl`: MT-Bench questions and HumanEval problems, see the
//! README next to it) loads, the generator puts it into consumer chat, coding assistants,
//! benchmark evaluations and public-set replay, and the detector keeps benign accounts unflagged
//! on it — including an evaluation that wraps multi-line benchmark items in scaffolding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use tollgate_guard::corpus::{CorpusConfig, Kind, generate, public_set};
use tollgate_guard::eval::evaluate;
use tollgate_guard::human::HumanPrompts;
use tollgate_guard::{Detector, DetectorSettings};

fn sample() -> HumanPrompts {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/human_prompts/sample.jsonl");
    HumanPrompts::load(&path).unwrap()
}

/// User texts of the requests of one kind in a corpus.
fn user_texts(lines: &[String], kind: Kind) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if Kind::from_org(v["organization"].as_str().unwrap()) != Some(kind) {
            continue;
        }
        let body = &v["body"];
        if let Some(p) = body["prompt"].as_str() {
            out.push(p.to_owned());
        }
        for m in body["messages"].as_array().into_iter().flatten() {
            if m["role"] == "user" {
                out.push(m["content"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

#[test]
fn checked_in_sample_loads_and_splits_by_role() {
    let h = sample();
    assert_eq!(h.len(), 36);
    let all: Vec<_> = h.public.iter().chain(&h.chat).chain(&h.coding).collect();
    assert_eq!(all.iter().filter(|p| p.source == "mt_bench").count(), 24);
    assert_eq!(all.iter().filter(|p| p.source == "humaneval").count(), 12);
    assert!(
        all.iter()
            .all(|p| !p.id.is_empty() && !p.first().is_empty())
    );
    assert!(!h.public.is_empty() && !h.chat.is_empty() && !h.coding.is_empty());
    assert!(h.coding.iter().all(|p| p.coding()) && h.chat.iter().all(|p| !p.coding()));
    // MT-Bench questions come with their follow-up turn.
    assert!(h.chat.iter().all(|p| p.turns.len() == 2));
}

#[test]
fn corpus_draws_benign_and_public_text_from_the_human_prompts() {
    let h = sample();
    let cfg = CorpusConfig {
        seed: 19,
        days: 2,
        scale: 0.25,
        small: false,
        human: Some(h.clone()),
    };
    let corpus = generate(&cfg);
    assert_eq!(generate(&cfg).lines, corpus.lines, "deterministic");
    let public = public_set(&cfg);
    assert_eq!(public, h.public_texts());

    // Consumer chat: real first turns and their real follow-ups.
    let chat = user_texts(&corpus.lines, Kind::ConsumerChat);
    for p in &h.chat {
        assert!(
            chat.iter().any(|t| t == p.first()),
            "{:?} unused",
            p.first()
        );
    }
    assert!(
        chat.iter()
            .any(|t| h.chat.iter().any(|p| p.turns.get(1) == Some(t)))
    );
    // Coding assistants: the real programming prompts (HumanEval stubs inside a request).
    let coding = user_texts(&corpus.lines, Kind::CodingAssistant);
    for p in &h.coding {
        assert!(coding.iter().any(|t| t.contains(p.first())), "{:?}", p.id);
    }
    // Benchmark evaluations and public-set replay use the public half, never the private one.
    let bench = user_texts(&corpus.lines, Kind::BenchmarkEval);
    assert!(
        public
            .iter()
            .all(|p| bench.iter().any(|t| t.contains(p.as_str())))
    );
    let replay = user_texts(&corpus.lines, Kind::PublicReplay);
    assert!(
        replay
            .iter()
            .any(|t| public.iter().any(|p| t.contains(p.as_str())))
    );
    for p in h.chat.iter().chain(&h.coding) {
        assert!(!bench.iter().any(|t| t.contains(p.first())));
    }

    // The detector on it. A low min_requests lets the sample's short benchmark evaluations
    // (one request per public item) be judged: the chain-of-thought evaluation must be
    // recognized as a one-off run over public items, multi-line HumanEval problems included.
    let settings = DetectorSettings {
        min_requests: 10,
        ..Default::default()
    };
    let d = Detector::with_benchmark_prompts(settings, &public).unwrap();
    assert_eq!(d.benchmark_prompts(), public.len());
    let r = evaluate(&d, corpus.lines.join("\n").as_bytes(), 0.01).unwrap();
    let render = tollgate_guard::eval::render(&r);
    assert!(r.false_positives.is_empty(), "{render}");
    let product = r
        .accounts_detail
        .iter()
        .find(|a| a.organization == "product_templated-0")
        .unwrap();
    assert!(product.score < 0.2, "{product:?}");
    for k in [Kind::PublicReplay, Kind::CotRubric, Kind::LogprobHarvest] {
        let s = r.kinds.iter().find(|s| s.kind == k.name()).unwrap();
        assert_eq!(s.flagged, s.accounts, "{k:?}\n{render}");
    }
    let cot_eval = d.assessment("benchmark_eval-1").unwrap();
    let one_off = cot_eval
        .signals
        .iter()
        .find(|s| s.name == "one_off_benchmark")
        .unwrap();
    assert!(
        !cot_eval.flagged && one_off.value > 0.5,
        "{cot_eval:?}\n{render}"
    );
    assert!(
        public.iter().any(|p| p.contains('\n')),
        "sample has multi-line items"
    );
}

#[test]
fn public_half_as_a_benchmark_file() {
    let h = sample();
    let dir = std::env::temp_dir().join(format!("guard-human-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("public.jsonl");
    // What `guard-eval --generate … --public FILE --human-prompts …` writes.
    let text: String = h
        .public_texts()
        .iter()
        .map(|p| serde_json::json!({ "prompt": p }).to_string() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let d = Detector::new(DetectorSettings {
        benchmark_files: vec![path],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(d.benchmark_prompts(), h.public.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
