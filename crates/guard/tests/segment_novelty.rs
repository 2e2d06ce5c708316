//! Per-segment novelty: every segment counts its distinct prompts in its own small sketch, so a
//! key that sends a new prompt every time shows it even when the account's other keys repeat
//! themselves; a snapshot written before segments had sketches is restored with the segment's
//! novelty counted from the restore on (never from requests the sketch did not see), and one
//! written before shape candidates loads with none.

#![allow(clippy::unwrap_used)] // tests may unwrap

use serde_json::Value;
use time::{Duration, macros::datetime};
use tollgate_guard::segment::{NOVELTY_UNSET, Segment};
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation};

fn body(user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": user}]
    }))
    .unwrap()
}

/// `n` requests on key `unique` (a new prompt each) and `n` on key `same` (one of 5 prompts).
fn traffic(d: &Detector, from: i64, n: i64) {
    let t0 = datetime!(2025-03-03 00:00 UTC);
    for i in from..from + n {
        for (key, text) in [
            (
                "unique",
                format!("describe the history of place number {i} in detail"),
            ),
            ("same", format!("what is the status of order {}", i % 5)),
        ] {
            d.observe(&Observation {
                time: t0 + Duration::seconds(i * 30),
                organization: "org",
                key,
                client_ip: None,
                endpoint: Endpoint::Chat,
                body: &body(&text),
                model_owner: None,
            });
        }
    }
}

fn segments(snapshot: &Value) -> Vec<Segment> {
    serde_json::from_value(snapshot["accounts"]["org"]["segments"]["list"].clone()).unwrap()
}

fn key_segment<'a>(list: &'a [Segment], key: &str) -> &'a Segment {
    list.iter().find(|s| s.name == key).unwrap()
}

/// Distinct prompts over the requests the sketch counted.
fn novelty(s: &Segment) -> f64 {
    let (distinct, since) = s.novelty_counts();
    distinct / f64::from(since.max(1))
}

#[test]
fn each_segment_counts_its_own_distinct_prompts() {
    let d = Detector::new(DetectorSettings::default()).unwrap();
    traffic(&d, 0, 400);
    let list = segments(&d.snapshot());
    let unique = key_segment(&list, "unique");
    let same = key_segment(&list, "same");
    assert_eq!((unique.novelty_base, same.novelty_base), (0, 0));
    assert_eq!(unique.counters.requests, 400);
    // 400 distinct prompts, estimated within ~3 standard errors of a 128-register sketch.
    let (distinct, since) = unique.novelty_counts();
    assert_eq!(since, 400);
    assert!((distinct - 400.0).abs() < 0.3 * 400.0, "{distinct}");
    // 5 distinct prompts in 400 requests.
    let (distinct, _) = same.novelty_counts();
    assert!((distinct - 5.0).abs() < 1.0, "{distinct}");
    assert!(novelty(unique) > 0.7 && novelty(same) < 0.05);
}

#[test]
fn snapshot_without_segment_sketches_counts_novelty_from_the_restore() {
    let d = Detector::new(DetectorSettings::default()).unwrap();
    traffic(&d, 0, 200);
    let current = d.snapshot();
    // A current snapshot keeps the sketches exactly.
    let (back, migration) =
        Detector::restore_migrating(DetectorSettings::default(), current.clone()).unwrap();
    assert!(migration.is_none());
    assert_eq!(
        segments(&back.snapshot())[0].distinct,
        segments(&current)[0].distinct
    );
    // The same snapshot as written before segments had sketches.
    let mut old = current.clone();
    for s in old["accounts"]["org"]["segments"]["list"]
        .as_array_mut()
        .unwrap()
    {
        let s = s.as_object_mut().unwrap();
        assert!(s.remove("distinct").is_some() && s.remove("novelty_base").is_some());
    }
    // Nor shape candidates, nor the shapes' inherited counts.
    let acc = old["accounts"]["org"].as_object_mut().unwrap();
    assert!(acc.remove("shape_candidates").is_some());
    for sh in acc["shapes"].as_array_mut().unwrap() {
        assert!(sh.as_object_mut().unwrap().remove("err").is_some());
    }
    let read: Vec<Segment> =
        serde_json::from_value(old["accounts"]["org"]["segments"]["list"].clone()).unwrap();
    assert!(read.iter().all(|s| s.novelty_base == NOVELTY_UNSET));
    // Read directly, such a segment counts no requests for novelty (never a ratio over
    // requests its sketch did not see).
    assert!(read.iter().all(|s| s.novelty_counts().1 == 0));
    let (restored, _) = Detector::restore_migrating(DetectorSettings::default(), old).unwrap();
    let list = segments(&restored.snapshot());
    for s in &list {
        assert_eq!(s.novelty_base, 200, "{}", s.name);
        assert!(s.distinct.is_empty());
    }
    // Counted from here on: 200 more requests per key.
    traffic(&restored, 200, 200);
    let list = segments(&restored.snapshot());
    let unique = key_segment(&list, "unique");
    assert_eq!(unique.counters.requests, 400);
    assert_eq!(unique.novelty_counts().1, 200);
    assert!(novelty(unique) > 0.7, "{}", novelty(unique));
    assert!(novelty(key_segment(&list, "same")) < 0.05);
}
