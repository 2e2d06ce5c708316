//! Synchronized-activity links: accounts whose bursts start in the same minutes, many times,
//! while each is otherwise quiet. A campaign split over small accounts and driven by one scheduler
//! is linked (and clustered when the accounts also share a network); benign accounts — including
//! cron jobs that all fire on the hour from one cloud network — are not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime, macros::datetime};
use tollgate_guard::corpus::{CorpusConfig, Kind, generate, public_prompts};
use tollgate_guard::eval::evaluate;
use tollgate_guard::sketch::SplitMix;
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation};

const WORDS: &[&str] = &[
    "photosynthesis",
    "rome",
    "interest",
    "tunneling",
    "tectonics",
    "jazz",
    "contracts",
    "collectors",
    "glaciers",
    "vaccines",
    "sonnets",
    "bridges",
    "volcanoes",
    "markets",
    "enzymes",
    "satellites",
    "dialects",
    "orbits",
    "tariffs",
    "reefs",
    "alloys",
    "proteins",
    "monsoons",
    "algorithms",
];

/// A harvesting-style request whose opening words vary (so no template is shared).
fn observe(d: &Detector, org: &str, ip: &str, t: OffsetDateTime, i: usize) {
    let mut r = SplitMix::new(i as u64 + 1);
    let head: Vec<&str> = (0..4).map(|_| *r.pick(WORDS)).collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": format!(
            "{} and {} versus {} in {}: explain in depth. Think step by step and show your reasoning.",
            head[0], head[1], head[2], head[3]
        )}],
        "max_tokens": 4096
    }))
    .unwrap();
    d.observe(&Observation {
        time: t,
        organization: org,
        key: "k",
        client_ip: Some(ip.parse::<IpAddr>().unwrap()),
        endpoint: Endpoint::Chat,
        body: &body,
        model_owner: Some("acme"),
    });
}

/// Bursts of one scheduler: random gaps of 40–160 minutes over two days.
fn bursts(seed: u64) -> Vec<OffsetDateTime> {
    let mut r = SplitMix::new(seed);
    let mut t = datetime!(2025-03-03 00:07:13 UTC);
    let mut out = Vec::new();
    while t < datetime!(2025-03-05 00:00 UTC) {
        t += Duration::minutes(40 + r.below(120) as i64) + Duration::seconds(r.below(60) as i64);
        out.push(t);
    }
    out
}

fn settings() -> DetectorSettings {
    DetectorSettings {
        cluster_interval: 0,
        ..Default::default()
    }
}

#[test]
fn synchronized_accounts_link_and_cluster_only_with_a_shared_network() {
    let d = Detector::new(settings()).unwrap();
    let mut r = SplitMix::new(9);
    // Two scheduler-driven groups of four small accounts: "near" accounts share a /24 (one
    // address each), "far" accounts use unrelated networks. Each account joins most bursts,
    // within 20 seconds. A "solo" account harvests on its own schedule from the near network.
    let near: Vec<String> = (0..4).map(|i| format!("near-{i}")).collect();
    let far: Vec<String> = (0..4).map(|i| format!("far-{i}")).collect();
    let mut events: Vec<(OffsetDateTime, String, String)> = Vec::new();
    for (group, seed) in [(&near, 1), (&far, 2)] {
        for t in bursts(seed) {
            for (i, org) in group.iter().enumerate() {
                if r.chance(0.8) {
                    let ip = if org.starts_with("near") {
                        format!("198.18.0.{}", 10 + i)
                    } else {
                        format!("100.{}.{}.9", 64 + i, r.below(250))
                    };
                    let t = t + Duration::seconds(r.below(20) as i64);
                    events.push((t, org.clone(), ip));
                }
            }
        }
    }
    for t in bursts(3) {
        events.push((t, "solo".into(), "198.18.0.99".into()));
    }
    events.sort();
    for (i, (t, org, ip)) in events.iter().enumerate() {
        observe(&d, org, ip, *t, i);
    }
    d.flags();

    let links = d.sync_links();
    let pairs: HashSet<(String, String)> =
        links.iter().map(|l| (l.a.clone(), l.b.clone())).collect();
    for group in [&near, &far] {
        for a in group.iter() {
            assert!(
                pairs.iter().any(|(x, y)| x == a || y == a),
                "{a} has no synchronized link: {links:?}"
            );
        }
    }
    assert!(
        links.iter().all(|l| l.a != "solo" && l.b != "solo"),
        "an account on its own schedule is not synchronized: {links:?}"
    );
    assert!(
        links
            .iter()
            .all(|l| l.coincident_bursts >= 10 && l.jaccard >= 0.5),
        "{links:?}"
    );
    // Synchronized + same /24 merges; synchronized alone is reported, not clustered.
    let near_cluster = d.assessment("near-0").unwrap().cluster.unwrap();
    for org in &near {
        let a = d.assessment(org).unwrap();
        assert_eq!(a.cluster.as_deref(), Some(near_cluster.as_str()), "{a:?}");
    }
    assert!(d.assessment("solo").unwrap().cluster.is_none());
    for org in &far {
        assert!(d.assessment(org).unwrap().cluster.is_none(), "{org}");
    }
    assert!(
        links
            .iter()
            .all(|l| l.clusters == (l.a.starts_with("near") && l.b.starts_with("near")))
    );

    // The explanation says why.
    let a = d.assessment("far-1").unwrap();
    let linked = a
        .signals
        .iter()
        .find(|s| s.name == "linked_accounts")
        .unwrap();
    assert!(
        linked.explanation.contains("synchronized activity with")
            && linked
                .explanation
                .contains("bursts start in the same minutes"),
        "{}",
        linked.explanation
    );
    let ev = d
        .evidence("near-2", None, datetime!(2025-03-05 00:00 UTC))
        .unwrap();
    let reasons: Vec<&String> = ev
        .linked_accounts
        .iter()
        .flat_map(|l| l.reasons.iter())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("synchronized activity: ")
                && r.contains("burst starts within a minute of each other")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("same network")),
        "{reasons:?}"
    );
}

#[test]
fn split_campaign_linked_by_synchronized_activity_and_benign_accounts_not() {
    // A seed never used for tuning, three days, a quarter of the rates (fast).
    let cfg = CorpusConfig {
        seed: 13,
        days: 3,
        scale: 0.25,
        small: false,
        human: None,
    };
    let corpus = generate(&cfg);
    let d =
        Detector::with_benchmark_prompts(DetectorSettings::default(), &public_prompts()).unwrap();
    let r = evaluate(&d, corpus.lines.join("\n").as_bytes(), 0.01).unwrap();
    let render = tollgate_guard::eval::render(&r);

    // No benign account — the 24/7 product customer, consumer apps, cron jobs on the hour from
    // one cloud network — is linked by synchronized activity, and none is flagged.
    for a in r.accounts_detail.iter().filter(|a| !a.harvesting) {
        assert!(
            a.synchronized_with.is_empty(),
            "{} linked to {:?}\n{render}",
            a.organization,
            a.synchronized_with
        );
        assert!(!a.flagged, "{}\n{render}", a.organization);
    }
    // Only the scheduler-driven campaigns form synchronized links, and only within a campaign.
    for l in &r.sync_links {
        let (ca, cb) = (
            tollgate_guard::corpus::campaign_of(&l.a),
            tollgate_guard::corpus::campaign_of(&l.b),
        );
        assert!(
            ca.is_some() && ca == cb && l.a.starts_with(Kind::SyncedCampaign.name()),
            "{l:?}"
        );
    }
    let campaign = |c: u64| -> Vec<&tollgate_guard::eval::AccountResult> {
        let prefix = format!("{}-{c}-", Kind::SyncedCampaign.name());
        r.accounts_detail
            .iter()
            .filter(|a| a.organization.starts_with(&prefix))
            .collect()
    };
    let (c0, c1) = (campaign(0), campaign(1));
    assert_eq!((c0.len(), c1.len()), (30, 30));
    for c in [&c0, &c1] {
        let linked = c.iter().filter(|a| !a.synchronized_with.is_empty()).count();
        assert!(linked >= 27, "{linked} of 30 linked\n{render}");
    }
    // Campaign 0 shares a /24: synchronized + shared network merge it into one flagged cluster,
    // and its accounts are flagged by the cluster before they have made enough requests
    // (min_requests = 50) to be flagged one by one.
    let cluster = c0[0].cluster.clone().expect("campaign 0 clustered");
    assert!(
        c0.iter()
            .all(|a| a.cluster.as_ref() == Some(&cluster) && a.flagged),
        "{render}"
    );
    let early = c0
        .iter()
        .filter(|a| a.requests_until_flagged.is_some_and(|n| n < 50))
        .count();
    assert!(
        early >= 20,
        "only {early} flagged before min_requests\n{render}"
    );
    // Campaign 1 spreads over unrelated networks: linked, reported, not clustered.
    assert!(c1.iter().all(|a| a.cluster.is_none()), "{render}");

    // The evidence and the signals say why.
    let org = &c1[0].organization;
    let ev = d
        .evidence(org, None, datetime!(2025-03-05 00:00 UTC))
        .unwrap();
    assert!(
        ev.linked_accounts.iter().any(|l| l
            .reasons
            .iter()
            .any(|r| r.starts_with("synchronized activity"))),
        "{:?}",
        ev.linked_accounts
    );
    let s = ev
        .signals
        .iter()
        .find(|s| s.name == "linked_accounts")
        .unwrap();
    assert!(
        s.explanation.contains("synchronized activity with"),
        "{}",
        s.explanation
    );
}

#[test]
fn synchronized_state_survives_a_snapshot() {
    let run = |d: &Detector, from: usize, to: usize, events: &[(OffsetDateTime, String)]| {
        for (i, (t, org)) in events.iter().enumerate().take(to).skip(from) {
            observe(d, org, "198.18.0.1", *t, i);
        }
    };
    let mut r = SplitMix::new(4);
    let mut events = Vec::new();
    for t in bursts(5) {
        for org in ["s-a", "s-b", "s-c"] {
            if r.chance(0.85) {
                events.push((t + Duration::seconds(r.below(15) as i64), org.to_string()));
            }
        }
    }
    events.sort();
    let half = events.len() / 2;
    let d = Detector::new(settings()).unwrap();
    run(&d, 0, half, &events);
    let restored = Detector::restore(settings(), d.snapshot()).unwrap();
    run(&d, half, events.len(), &events);
    run(&restored, half, events.len(), &events);
    assert!(!d.sync_links().is_empty());
    assert_eq!(d.sync_links(), restored.sync_links());
    assert_eq!(d.sync_pairs(), restored.sync_pairs());
    assert_eq!(d.flags(), restored.flags());
}
