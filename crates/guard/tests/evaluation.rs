//! Evaluation on the checked-in sample and on a freshly generated corpus (a seed never used for
//! tuning): the large templated product customer is never flagged, blatant harvesters are.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::PathBuf;

use tollgate_guard::corpus::{CorpusConfig, Kind, generate, public_prompts};
use tollgate_guard::eval::{EvalReport, evaluate};
use tollgate_guard::{Detector, DetectorSettings};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn kind(r: &EvalReport, k: Kind) -> &tollgate_guard::eval::KindSummary {
    r.kinds.iter().find(|s| s.kind == k.name()).unwrap()
}

#[test]
fn sample_corpus_product_not_flagged_harvesters_flagged() {
    let settings = DetectorSettings {
        min_requests: 20,
        benchmark_files: vec![testdata("public_prompts.txt")],
        ..Default::default()
    };
    let d = Detector::new(settings).unwrap();
    assert_eq!(d.benchmark_prompts(), 300);
    let f = std::fs::File::open(testdata("sample.jsonl")).unwrap();
    let r = evaluate(&d, std::io::BufReader::new(f), 0.01).unwrap();
    assert!(
        r.false_positives.is_empty(),
        "false positives: {:?}",
        r.false_positives
    );
    let product = r
        .accounts_detail
        .iter()
        .find(|a| a.kind == "product_templated")
        .unwrap();
    assert!(
        !product.flagged && product.score < 0.2,
        "product: {product:?}"
    );
    for k in [
        Kind::PublicReplay,
        Kind::SelfInstruct,
        Kind::CotRubric,
        Kind::LogprobHarvest,
        Kind::HydraCampaign,
    ] {
        let s = kind(&r, k);
        assert_eq!(s.flagged, s.accounts, "{k:?} not all flagged: {s:?}");
    }
    assert_eq!(kind(&r, Kind::HydraCampaign).cluster_recall, Some(1.0));
    // The report names the reasons.
    let a = d.assessment("public_replay-0").unwrap();
    assert!(a.signals.iter().any(|s| {
        s.name == "elicitation"
            && s.explanation
                .contains("of prompts ask for step-by-step reasoning")
    }));
}

#[test]
fn generated_corpus_on_unseen_seed() {
    let cfg = CorpusConfig {
        seed: 11,
        days: 2,
        scale: 0.25,
        small: false,
        human: None,
    };
    let corpus = generate(&cfg);
    // Deterministic.
    assert_eq!(generate(&cfg).lines, corpus.lines);
    let d =
        Detector::with_benchmark_prompts(DetectorSettings::default(), &public_prompts()).unwrap();
    let text = corpus.lines.join("\n");
    let r = evaluate(&d, text.as_bytes(), 0.01).unwrap();
    for k in [
        Kind::ProductTemplated,
        Kind::ConsumerChat,
        Kind::RagQa,
        Kind::CodingAssistant,
    ] {
        assert_eq!(kind(&r, k).flagged, 0, "{k:?} flagged");
    }
    for k in [Kind::PublicReplay, Kind::LogprobHarvest, Kind::CotRubric] {
        let s = kind(&r, k);
        assert_eq!(s.flagged, s.accounts, "{k:?}: {s:?}");
    }
    // The scheduler-driven campaign spread over many networks (`synced_campaign-1`) is linked
    // by synchronized activity but, by design, not clustered on it alone (see
    // tests/synchronized.rs): its small accounts are flagged only on their own merits.
    let harvesting: Vec<_> = r
        .accounts_detail
        .iter()
        .filter(|a| a.harvesting && !a.organization.starts_with("synced_campaign-1-"))
        .collect();
    let flagged = harvesting.iter().filter(|a| a.flagged).count();
    assert!(
        flagged as f64 > 0.8 * harvesting.len() as f64,
        "{}",
        tollgate_guard::eval::render(&r)
    );
}
