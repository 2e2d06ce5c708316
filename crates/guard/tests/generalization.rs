//! Detection that does not depend on one corpus: harvesting confined to a segment of a genuine
//! account, combinatorial synthetic-data generation, campaigns on an address pool (and
//! classrooms behind one NAT, which must not be merged), and the leave-one-family-out protocol.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::net::IpAddr;

use time::{Duration, OffsetDateTime, macros::datetime};
use tollgate_guard::families::{FAMILIES, FamilyConfig};
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation, lofo};

#[path = "common/topics.rs"]
mod topics;
use topics::TOPICS;

const FORMS: &[&str] = &["poem", "essay", "short story", "lesson plan", "dialogue"];
const READERS: &[&str] = &["child", "graduate student", "retiree", "engineer"];

/// A question from the public prompt set (every domain: content words dominate the prompt, as
/// in real harvesting traffic).
fn question(i: usize) -> String {
    static SET: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(tollgate_guard::corpus::public_prompts);
    set[(i * 37) % set.len()].clone()
}

fn settings() -> DetectorSettings {
    DetectorSettings {
        cluster_interval: 0,
        ..Default::default()
    }
}

struct Req<'a> {
    org: &'a str,
    key: &'a str,
    ip: &'a str,
    body: serde_json::Value,
    out: u64,
}

fn send(d: &Detector, t: OffsetDateTime, r: Req<'_>) {
    let body = serde_json::to_vec(&r.body).unwrap();
    d.observe(&Observation {
        time: t,
        organization: r.org,
        key: r.key,
        client_ip: Some(r.ip.parse::<IpAddr>().unwrap()),
        endpoint: Endpoint::Chat,
        body: &body,
        model_owner: None,
    });
    d.record_completion(r.org, r.key, t, r.out, false);
}

fn chat(user: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut b = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": user}]});
    if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    b
}

#[test]
fn harvesting_on_one_key_of_a_genuine_app_is_judged_on_that_segment() {
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 08:00 UTC);
    // A consumer app: people in conversations (named end users), four turns out of five
    // follow-ups, from the app's backend; one batch key on another backend address harvests
    // step-by-step answers over every topic, a fifth of the traffic.
    for i in 0..600i64 {
        let t = t0 + Duration::minutes(i);
        let topic = TOPICS[(i as usize * 7) % TOPICS.len()];
        let user = format!("u{}", i % 40);
        let body = serde_json::json!({"model": "m", "user": user, "temperature": 0.7, "messages": [
            {"role": "system", "content": "You are a friendly assistant."},
            {"role": "user", "content": format!("what do you know about {topic}?")},
            {"role": "assistant", "content": "Quite a bit."},
            {"role": "user", "content": "nice, can you give me an example?"}]});
        send(
            &d,
            t,
            Req {
                org: "app",
                key: "app-key",
                ip: "10.0.0.1",
                body,
                out: 150,
            },
        );
        if i % 4 == 0 {
            let q = format!(
                "{}\nThink step by step and show your reasoning.",
                question(i as usize)
            );
            send(
                &d,
                t + Duration::seconds(20),
                Req {
                    org: "app",
                    key: "batch-export",
                    ip: "10.0.0.200",
                    body: chat(&q, serde_json::json!({"max_tokens": 4096})),
                    out: 1500,
                },
            );
        }
    }
    d.flags();
    let a = d.assessment("app").unwrap();
    assert!(a.flagged, "{a:?}");
    let segment = a.segment.clone().unwrap();
    assert!(
        segment == "key batch-export" || segment == "client IP 10.0.0.200",
        "{segment}"
    );
    let ev = d.evidence("app", None, t0 + Duration::days(1)).unwrap();
    let worst = &ev.segments[0];
    assert!(worst.score >= 0.8 && worst.share < 0.25, "{worst:?}");
    assert!(
        worst
            .signals
            .iter()
            .any(|s| s.name == "unexplained_harvest"),
        "{worst:?}"
    );
    // The segments of the genuine traffic score low.
    let app_key = ev
        .segments
        .iter()
        .find(|s| s.segment == "key app-key")
        .unwrap();
    assert!(app_key.score < 0.2, "{app_key:?}");
    assert!(
        ev.segments
            .iter()
            .any(|s| s.segment.starts_with("end user u"))
    );
}

#[test]
fn broad_long_form_template_is_flagged_and_a_translation_pipeline_is_not() {
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    for i in 0..400usize {
        let t = t0 + Duration::seconds(90 * i as i64);
        // No reasoning request, one temperature, no `n`: only the template, its topics and the
        // length of the answers.
        let p = format!(
            "Write a {} about {} for a {}.",
            FORMS[i % FORMS.len()],
            TOPICS[(i * 5) % TOPICS.len()],
            READERS[(i / 3) % READERS.len()]
        );
        send(
            &d,
            t,
            Req {
                org: "generator",
                key: "gen",
                ip: "198.18.0.7",
                body: chat(
                    &p,
                    serde_json::json!({"temperature": 0.9, "max_tokens": 2048}),
                ),
                out: 1400,
            },
        );
        let s = format!(
            "Translate the following text into French:\nOur latest report on {} found mixed results.",
            TOPICS[(i * 3) % TOPICS.len()]
        );
        send(
            &d,
            t,
            Req {
                org: "translator",
                key: "tr",
                ip: "10.9.0.4",
                body: chat(
                    &s,
                    serde_json::json!({"temperature": 0.1, "max_tokens": 1024}),
                ),
                out: 30,
            },
        );
    }
    let g = d.assessment("generator").unwrap();
    assert!(g.flagged, "{g:?}");
    assert_eq!(g.signals[0].name, "broad_template", "{:?}", g.signals);
    assert!(g.signals[0].explanation.contains("unrelated domains"));
    let t = d.assessment("translator").unwrap();
    assert!(!t.flagged && t.score < 0.2, "{t:?}");
}

#[test]
fn an_address_pool_with_a_shared_wrapper_clusters_and_a_class_behind_one_nat_is_not_merged_with_it()
{
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    let pool = [
        "203.0.113.20",
        "203.0.113.21",
        "203.0.114.22",
        "203.0.115.23",
    ];
    let camp: Vec<String> = (0..10).map(|i| format!("camp-{i}")).collect();
    let students: Vec<String> = (0..10).map(|i| format!("student-{i}")).collect();
    for round in 0..45usize {
        let tick = t0 + Duration::minutes(97 * round as i64);
        for (i, org) in camp.iter().enumerate() {
            let q = question(i * 31 + round);
            let p =
                format!("{q}\n\nRespond as an expert. Reason it out fully before you conclude.");
            send(
                &d,
                tick + Duration::seconds(37 * i as i64),
                Req {
                    org,
                    key: "main",
                    ip: pool[(i + round) % 3 + usize::from(i % 2 == 1)],
                    body: chat(&p, serde_json::json!({"max_tokens": 4096})),
                    out: 1200,
                },
            );
        }
        // A class behind the school's one NAT address, at the same times, with the same
        // closing words.
        for (i, org) in students.iter().enumerate() {
            let q = format!(
                "{} Explain it to me please.",
                question(7 * i + 3 * round + 1)
            );
            send(
                &d,
                tick + Duration::seconds(41 * i as i64),
                Req {
                    org,
                    key: "student",
                    ip: "100.64.44.1",
                    body: chat(&q, serde_json::json!({"temperature": 0.7})),
                    out: 300,
                },
            );
        }
    }
    d.flags();
    let cluster = d.assessment("camp-0").unwrap().cluster.unwrap();
    for org in &camp {
        let a = d.assessment(org).unwrap();
        assert_eq!(a.cluster.as_deref(), Some(cluster.as_str()), "{a:?}");
        // 45 requests each, under `min_requests`: judged as one account with the others, on
        // the campaign's aggregate traffic.
        assert!(a.requests < 50, "{a:?}");
        assert!(a.cluster_score.unwrap() > a.own_score, "{a:?}");
    }
    let ev = d.evidence("camp-3", None, t0 + Duration::days(3)).unwrap();
    assert!(
        ev.linked_accounts
            .iter()
            .flat_map(|l| &l.reasons)
            .any(|r| r.contains("shared address pool")),
        "{:?}",
        ev.linked_accounts
    );
    // The class is never merged with the campaign and never flagged. (Its bursts start
    // together from one address, which the older synchronized-activity rule accepts as
    // corroboration: the students may form a cluster of their own, judged on benign traffic.)
    for org in &students {
        let a = d.assessment(org).unwrap();
        assert!(!a.flagged, "{a:?}");
        assert_ne!(a.cluster.as_deref(), Some(cluster.as_str()), "{a:?}");
    }
}

#[test]
fn leave_one_family_out_reports_each_family_once_under_a_threshold_fitted_without_it() {
    let cfg = FamilyConfig {
        seed: 5,
        days: 2,
        scale: 0.05,
    };
    let r = lofo::evaluate(&cfg, &DetectorSettings::default(), 0.01).unwrap();
    assert_eq!(r.folds.len(), FAMILIES as usize);
    for (k, f) in r.folds.iter().enumerate() {
        assert_eq!(f.held_out_family, k as u32);
        assert!(lofo::THRESHOLDS.contains(&f.threshold));
    }
    // Every account appears once, from the fold that held its family out.
    let mut names: Vec<&str> = r
        .accounts_detail
        .iter()
        .map(|a| a.organization.as_str())
        .collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n);
    assert!(r.kinds.iter().any(|k| k.kind == "hydra_campaign"));
    assert!(r.heavy_accounts > 0 && r.benign_accounts > r.heavy_accounts);
    assert!(lofo::render(&r).contains("leave-one-family-out"));
}
