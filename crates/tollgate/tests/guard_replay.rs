//! `tollgate guard replay` over the guard crate's checked-in sample: the contract JSON and the table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guard/testdata/sample.jsonl")
}

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["guard", "replay", "--input"])
        .arg(sample())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn replay_json_prints_the_contract_shape() {
    let out = replay(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = v.as_object().unwrap();
    assert_eq!(top.keys().collect::<Vec<_>>(), vec!["organizations"]);
    let orgs = top["organizations"].as_array().unwrap();
    assert!(orgs.len() >= 10);
    let mut flagged = 0;
    let mut benign_flagged = 0;
    for o in orgs {
        let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "cluster",
                "first_flagged_at",
                "flagged",
                "organization",
                "requests_until_flagged",
                "score",
                "segment",
                "segment_signals",
                "signals"
            ]
        );
        let name = o["organization"].as_str().unwrap();
        let score = o["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(o["cluster"].is_null() || o["cluster"].is_string());
        for s in o["signals"].as_array().unwrap() {
            assert!(
                s["name"].is_string() && s["value"].is_number() && s["explanation"].is_string()
            );
        }
        if o["flagged"] == true {
            flagged += 1;
            let at = o["first_flagged_at"].as_str().unwrap();
            assert!(at.len() >= 20 && at.as_bytes()[10] == b'T', "{at}");
            assert!(o["requests_until_flagged"].as_u64().unwrap() >= 1);
            // Corpus org names carry the kind; benign kinds must not be flagged.
            let benign = [
                "consumer_chat",
                "product_templated",
                "rag_qa",
                "coding_assistant",
                "benchmark_eval",
            ];
            if benign.iter().any(|b| name.starts_with(b)) {
                benign_flagged += 1;
            }
        } else {
            assert!(o["first_flagged_at"].is_null() && o["requests_until_flagged"].is_null());
        }
    }
    assert!(flagged >= 1, "nothing flagged in the sample");
    assert_eq!(benign_flagged, 0);
}

#[test]
fn replay_prints_a_table_and_rejects_missing_input() {
    let out = replay(&["--min-requests", "20"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("self_instruct-0"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "guard",
            "replay",
            "--input",
            "/nonexistent/file.jsonl",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.jsonl"));
}
