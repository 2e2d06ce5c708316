//! Replay contract: the JSON shape of `ReplayReport` on the checked-in sample, and the table.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::PathBuf;

use serde_json::Value;
use tollgate_guard::{DetectorSettings, render_table, replay};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn sample_settings() -> DetectorSettings {
    DetectorSettings {
        min_requests: 20,
        benchmark_files: vec![testdata("public_prompts.txt")],
        ..Default::default()
    }
}

#[test]
fn replay_report_has_the_exact_contract_shape() {
    let f = std::fs::File::open(testdata("sample.jsonl")).unwrap();
    let report = replay(std::io::BufReader::new(f), &sample_settings()).unwrap();
    let v = serde_json::to_value(&report).unwrap();
    let top = v.as_object().unwrap();
    assert_eq!(top.keys().collect::<Vec<_>>(), vec!["organizations"]);
    let orgs = top["organizations"].as_array().unwrap();
    assert!(orgs.len() >= 10, "sample has {} organizations", orgs.len());
    let names: Vec<&str> = orgs
        .iter()
        .map(|o| o["organization"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "organizations must be sorted");
    let mut flagged = 0;
    for o in orgs {
        let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        let mut want = vec![
            "cluster",
            "first_flagged_at",
            "flagged",
            "organization",
            "requests_until_flagged",
            "score",
            "segment",
            "segment_signals",
            "signals",
        ];
        want.sort();
        let mut got: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        got.sort();
        assert_eq!(got, want);
        let score = o["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        match o["flagged"].as_bool().unwrap() {
            true => {
                flagged += 1;
                let at = o["first_flagged_at"].as_str().unwrap();
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap();
                assert!(o["requests_until_flagged"].as_u64().unwrap() >= 1);
            }
            false => {
                assert_eq!(o["first_flagged_at"], Value::Null);
                assert_eq!(o["requests_until_flagged"], Value::Null);
            }
        }
        assert!(o["cluster"].is_null() || o["cluster"].as_str().unwrap().starts_with("cluster-"));
        let signals = o["signals"].as_array().unwrap();
        assert!(!signals.is_empty());
        for s in signals {
            let mut k: Vec<&String> = s.as_object().unwrap().keys().collect();
            k.sort();
            assert_eq!(k, vec!["explanation", "name", "value"]);
            assert!(s["value"].is_number());
            assert!(!s["explanation"].as_str().unwrap().is_empty());
        }
    }
    assert!(flagged > 0);
    // Round trip through the public type.
    let back: tollgate_guard::ReplayReport = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back, report);

    let table = render_table(&report);
    assert!(table.starts_with("organization"));
    for n in names {
        assert!(table.contains(n));
    }
}

#[test]
fn replay_is_deterministic_and_rejects_bad_lines() {
    let text = std::fs::read_to_string(testdata("sample.jsonl")).unwrap();
    let a = replay(text.as_bytes(), &sample_settings()).unwrap();
    let b = replay(text.as_bytes(), &sample_settings()).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );

    let bad = "{\"time\":\"2025-03-03T00:00:00Z\",\"organization\":\"o\",\"key\":\"k\",\"client_ip\":\"1.2.3.4\",\"endpoint\":\"/v1/other\",\"body\":{}}\n";
    let err = replay(bad.as_bytes(), &DetectorSettings::default()).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    let bad_time = "{\"time\":\"yesterday\",\"organization\":\"o\",\"endpoint\":\"/v1/embeddings\",\"body\":{}}\n";
    assert!(replay(bad_time.as_bytes(), &DetectorSettings::default()).is_err());
}

#[test]
fn missing_benchmark_file_is_an_error() {
    let s = DetectorSettings {
        benchmark_files: vec![testdata("does-not-exist.txt")],
        ..Default::default()
    };
    assert!(matches!(
        tollgate_guard::Detector::new(s),
        Err(tollgate_guard::GuardError::Io { .. })
    ));
}
