//! Restoring a snapshot of format 1 (word hashes before snapshot format 2): the fixture
//! `testdata/snapshot_v1.json` is `common/migration_scenario.rs` run by the format-1 detector.
//! What does not depend on word hashes is kept exactly, what does is reset as documented in
//! `Account::reset_word_hashes`, and detection carries on: the product customer whose
//! harvesting-looking traffic only its templates explain is not flagged, the flagged cluster
//! stays flagged.

#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "common/migration_scenario.rs"]
mod scenario;

use serde_json::Value;
use time::Duration;
use tollgate_guard::{Detector, Endpoint, Observation, SNAPSHOT_VERSION};

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/snapshot_v1.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Counters without the fields the migration resets.
fn kept_counters(account: &Value) -> Value {
    let mut c = account["counters"].clone();
    let c = c.as_object_mut().unwrap();
    for k in ["topics", "harvest_topics", "recent_topics", "novelty_base"] {
        c.remove(k);
    }
    Value::Object(c.clone())
}

#[test]
fn format_1_snapshot_keeps_history_and_resets_hash_derived_state() {
    let old = fixture();
    assert_eq!(old["version"], 1);
    let (d, migration) = Detector::restore_migrating(scenario::settings(), old.clone()).unwrap();
    let m = migration.expect("format 1 is migrated");
    let templates: usize = old["accounts"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["templates"].as_array().unwrap().len())
        .sum();
    let template_links = old["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l[1]["kind"] == "template")
        .count();
    assert_eq!(
        (
            m.from_version,
            m.to_version,
            m.accounts,
            m.templates_frozen,
            m.template_links_kept
        ),
        (1, SNAPSHOT_VERSION, 4, templates, template_links)
    );
    let text = m.to_string();
    for needle in [
        "format 1 restored as format 2",
        "distinct-prompt sketches were emptied",
        "topic histograms reset",
        "templates were kept frozen",
        "flags, clusters, links and samples are unchanged",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }

    let new = d.snapshot();
    assert_eq!(new["version"], SNAPSHOT_VERSION);
    assert_eq!(new["observed"], old["observed"]);
    assert_eq!(new["links"], old["links"]);
    assert_eq!(new["sync"], old["sync"]);
    for (org, was) in old["accounts"].as_object().unwrap() {
        let now = &new["accounts"][org];
        // Kept exactly: counters, timeline, extents, keys, addresses, link keys, flags,
        // cluster, samples and everything else outside the reset.
        assert_eq!(kept_counters(now), kept_counters(was), "{org}");
        for field in [
            "timeline",
            "owners",
            "keys",
            "ips",
            "link_keys",
            "sample",
            "last_seed",
            "last_time",
            "first_seen",
            "last_seen",
            "flagged",
            "flagged_at",
            "requests_until_flagged",
            "cluster",
            "cluster_score",
            "cluster_flagged",
            "score",
            "own_score",
        ] {
            assert_eq!(now[field], was[field], "{org}.{field}");
        }
        // Reset: the distinct-prompt sketch (novelty counts from here on) and the topic
        // histograms.
        let c = &now["counters"];
        assert_eq!(c["novelty_base"], was["counters"]["requests"], "{org}");
        for k in ["topics", "harvest_topics", "recent_topics"] {
            assert!(c[k].as_array().unwrap().iter().all(|x| x == 0), "{org}.{k}");
        }
        assert!(
            now["distinct"]["regs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r == 0),
            "{org}"
        );
        // Templates kept frozen, counts intact.
        let (tw, tn) = (
            was["templates"].as_array().unwrap(),
            now["templates"].as_array().unwrap(),
        );
        assert_eq!(tw.len(), tn.len(), "{org}");
        for (a, b) in tw.iter().zip(tn) {
            assert_eq!(b["frozen"], true);
            for k in ["simhash", "count", "err", "harvest", "topics", "skeleton"] {
                assert_eq!(a[k], b[k], "{org} template {k}");
            }
        }
    }
    // What investigators see is unchanged apart from the frozen marks.
    let harvester = d
        .evidence("harvest-a", None, scenario::T0 + Duration::days(1))
        .unwrap();
    assert!(harvester.flagged && harvester.cluster.is_some());
    assert_eq!(harvester.sample.len(), 5);
    assert_eq!(
        harvester.linked_accounts[0].organization, "harvest-b",
        "{harvester:?}"
    );
    let product = d
        .evidence("product-co", None, scenario::T0 + Duration::days(1))
        .unwrap();
    assert!(product.top_templates.iter().all(|t| t.frozen));
    assert!(
        serde_json::to_string(&product)
            .unwrap()
            .contains("\"frozen\":true")
    );

    // A current snapshot restores without migration, identically.
    let (again, none) = Detector::restore_migrating(scenario::settings(), new.clone()).unwrap();
    assert!(none.is_none());
    assert_eq!(again.snapshot(), new);
}

#[test]
fn detection_carries_on_after_the_migration() {
    let (d, _) = Detector::restore_migrating(scenario::settings(), fixture()).unwrap();
    let before = d.assessment("product-co").unwrap();
    // The same product traffic continues for another day: its frozen templates still explain
    // the requests they counted, new templates the new ones.
    let fresh = Detector::new(scenario::settings()).unwrap();
    let last = scenario::run(&fresh);
    let explained_before = d.snapshot()["accounts"]["product-co"]["counters"]["explained"]
        .as_u64()
        .unwrap();
    for day in 1..=2 {
        let shift = Duration::days(day);
        for i in 0..240i64 {
            let t = scenario::T0 + shift + Duration::seconds(45 * i);
            let body = if i % 3 == 0 {
                format!(
                    r#"{{"model":"m","messages":[{{"role":"system","content":"You are a content moderator for a marketplace."}},{{"role":"user","content":"Is this listing allowed: used lamps number {i} from Acme? Explain your reasoning."}}],"temperature":0}}"#
                )
            } else {
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"Write alt text for product {} from Acme in category Shoes."}}],"max_tokens":60}}"#,
                    5000 + i
                )
            };
            d.observe(&Observation {
                time: t,
                organization: "product-co",
                key: "svc",
                client_ip: "198.51.100.7".parse().ok(),
                endpoint: Endpoint::Chat,
                body: body.as_bytes(),
                model_owner: Some("acme-labs"),
            });
        }
    }
    let after = d.assessment("product-co").unwrap();
    assert!(!after.flagged, "{after:?}");
    assert!(after.score < 0.5, "{before:?} → {after:?}");
    let snap = d.snapshot();
    let acc = &snap["accounts"]["product-co"];
    let templates = acc["templates"].as_array().unwrap();
    assert!(templates.iter().any(|t| t["frozen"] == true));
    assert!(templates.iter().any(|t| t["frozen"] == false));
    assert!(acc["counters"]["explained"].as_u64().unwrap() > explained_before);
    // Novelty counts the requests since the migration only.
    let novelty = after
        .signals
        .iter()
        .find(|s| s.name == "novelty")
        .map_or(0.0, |s| s.value);
    assert!(novelty > 0.3, "{novelty}");

    // The flagged cluster stays flagged; the consumer stays clean.
    d.recluster();
    for org in ["harvest-a", "harvest-b"] {
        let a = d.assessment(org).unwrap();
        assert!(a.flagged && a.cluster.is_some(), "{a:?}");
        assert_eq!(a.cluster, fresh.assessment(org).unwrap().cluster);
    }
    assert!(!d.assessment("consumer").unwrap().flagged);
    // The same scenario on the current detector agrees on everything outside the reset.
    for org in ["harvest-a", "harvest-b", "consumer"] {
        let (m, f) = (
            d.evidence(org, None, last).unwrap(),
            fresh.evidence(org, None, last).unwrap(),
        );
        assert_eq!(
            (
                m.flagged,
                m.flagged_at,
                &m.timeline,
                &m.keys,
                &m.extent,
                &m.sample
            ),
            (
                f.flagged,
                f.flagged_at,
                &f.timeline,
                &f.keys,
                &f.extent,
                &f.sample
            ),
            "{org}"
        );
    }
}
