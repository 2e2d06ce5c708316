//! Detector behaviour through the public API: flagging, evidence (owner filter, links, sample
//! retention by event time), snapshots, memory bound, concurrency.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::net::IpAddr;

use time::{Duration, OffsetDateTime, macros::datetime};
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation, memory_bound};

fn body(user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": user}], "max_tokens": 4096})).unwrap()
}

const TOPICS: &[&str] = &[
    "photosynthesis in desert plants",
    "the fall of the roman empire",
    "compound interest on mortgages",
    "quantum tunneling in diodes",
    "sourdough fermentation chemistry",
    "contract law consideration",
    "plate tectonics and earthquakes",
    "jazz improvisation scales",
    "marathon pacing strategy",
    "unreliable narrators in fiction",
    "garbage collection in runtimes",
    "antibiotic resistance mechanisms",
];

fn harvest(d: &Detector, org: &str, owner: &str, ip: &str, n: usize, start: OffsetDateTime) {
    for i in 0..n {
        let b = body(&format!(
            "Explain {} number {i} in depth. Think step by step and show your reasoning.",
            TOPICS[i % TOPICS.len()]
        ));
        d.observe(&Observation {
            time: start + Duration::minutes(i as i64),
            organization: org,
            key: "k1",
            client_ip: Some(ip.parse::<IpAddr>().unwrap()),
            endpoint: Endpoint::Chat,
            body: &b,
            model_owner: Some(owner),
        });
        d.record_completion(org, "k1", start + Duration::minutes(i as i64), 500, false);
    }
}

/// A chat request without a client address.
fn plain<'a>(
    time: OffsetDateTime,
    organization: &'a str,
    key: &'a str,
    body: &'a [u8],
    model_owner: Option<&'a str>,
) -> Observation<'a> {
    Observation {
        time,
        organization,
        key,
        client_ip: None,
        endpoint: Endpoint::Chat,
        body,
        model_owner,
    }
}

fn settings() -> DetectorSettings {
    DetectorSettings {
        min_requests: 30,
        sample_size: 10,
        sample_retention_days: 2,
        cluster_interval: 0,
        ..Default::default()
    }
}

#[test]
fn harvester_is_flagged_with_evidence_and_benign_is_not() {
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    harvest(&d, "bad", "acme", "192.0.2.10", 80, t0);
    let benign = body("Write alt text for product 123 from Acme in category Shoes. Be concise.");
    for i in 0..200 {
        d.observe(&plain(
            t0 + Duration::minutes(i),
            "good",
            "svc",
            &benign,
            Some("acme"),
        ));
    }
    let a = d.assessment("bad").unwrap();
    assert!(a.flagged && a.score >= 0.8, "{a:?}");
    assert!(a.requests_until_flagged.unwrap() >= 30);
    let g = d.assessment("good").unwrap();
    assert!(!g.flagged && g.score < 0.5, "{g:?}");
    assert!(d.assessment("nobody").is_none());
    let flags = d.flags();
    assert_eq!(
        flags
            .iter()
            .map(|f| f.organization.as_str())
            .collect::<Vec<_>>(),
        vec!["bad"]
    );

    let now = t0 + Duration::hours(2);
    let ev = d.evidence("bad", None, now).unwrap();
    assert!(!ev.sample.is_empty() && ev.sample.len() <= 10);
    assert!(
        ev.sample
            .iter()
            .all(|s| s.harvesting && s.time >= a.flagged_at.unwrap())
    );
    assert_eq!(ev.extent.overall.requests, 80);
    assert_eq!(ev.extent.overall.harvesting_requests, 80);
    assert!((ev.extent.overall.harvesting_token_share - 1.0).abs() < 1e-9);
    assert_eq!(ev.by_owner_names(), vec!["acme"]);
    assert!(!ev.timeline.is_empty() && ev.timeline.iter().map(|b| b.requests).sum::<u32>() == 80);
    assert!(
        ev.top_templates
            .iter()
            .any(|t| t.skeleton.starts_with("explain"))
    );
    let json = serde_json::to_value(&ev).unwrap();
    assert!(json["signals"].as_array().unwrap().len() > 5);
    // Unflagged accounts never retain prompts.
    assert!(d.evidence("good", None, now).unwrap().sample.is_empty());
    // Filtering to another owner removes extent and sample.
    let other = d.evidence("bad", Some("northwind"), now).unwrap();
    assert!(other.extent.by_owner.is_empty() && other.sample.is_empty());
    // Retention is by event time.
    let later = d.evidence("bad", None, t0 + Duration::days(3)).unwrap();
    assert!(later.sample.is_empty());
}

trait OwnerNames {
    fn by_owner_names(&self) -> Vec<&str>;
}
impl OwnerNames for tollgate_guard::Evidence {
    fn by_owner_names(&self) -> Vec<&str> {
        self.extent
            .by_owner
            .iter()
            .map(|o| o.owner.as_str())
            .collect()
    }
}

#[test]
fn linked_small_accounts_form_a_flagged_cluster() {
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    for (i, org) in ["h1", "h2", "h3", "h4"].iter().enumerate() {
        let ip = if i < 2 { "203.0.113.5" } else { "203.0.113.77" };
        harvest(
            &d,
            org,
            "acme",
            ip,
            12,
            t0 + Duration::minutes(i as i64 * 7),
        );
    }
    // A shared client IP is reported as a link but does not merge accounts on its own
    // (unrelated customers share addresses behind NAT and proxies): h1..h4 are joined by
    // operator metadata.
    d.flags();
    assert!(
        d.assessment("h1").unwrap().cluster.is_none(),
        "a shared IP alone must not cluster"
    );
    d.link_metadata("h1", "signup", "device-a");
    d.link_metadata("h2", "signup", "device-a");
    d.link_metadata("h2", "payment", "card-9");
    d.link_metadata("h3", "payment", "card-9");
    d.link_metadata("h3", "signup", "device-b");
    d.link_metadata("h4", "signup", "device-b");
    d.flags();
    let a: Vec<_> = ["h1", "h2", "h3", "h4"]
        .iter()
        .map(|o| d.assessment(o).unwrap())
        .collect();
    let c = a[0].cluster.clone().unwrap();
    assert!(
        a.iter().all(|x| x.cluster.as_deref() == Some(c.as_str())),
        "{a:?}"
    );
    assert!(
        a.iter().all(|x| x.flagged),
        "each account is below min_requests but the cluster is not"
    );
    let ev = d.evidence("h2", None, t0 + Duration::hours(1)).unwrap();
    let names: Vec<&str> = ev
        .linked_accounts
        .iter()
        .map(|l| l.organization.as_str())
        .collect();
    assert!(names.contains(&"h1") && names.contains(&"h3"), "{names:?}");
    let h3 = ev
        .linked_accounts
        .iter()
        .find(|l| l.organization == "h3")
        .unwrap();
    assert!(h3.reasons.iter().any(|r| r.contains("payment")));
}

#[test]
fn snapshot_restore_round_trip() {
    let d = Detector::new(settings()).unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    harvest(&d, "bad", "acme", "192.0.2.10", 60, t0);
    d.flags();
    let snap = d.snapshot();
    let text = serde_json::to_string(&snap).unwrap();
    let r = Detector::restore(settings(), serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(r.assessment("bad"), d.assessment("bad"));
    assert_eq!(r.flags(), d.flags());
    // State keeps evolving identically after restore.
    harvest(&d, "bad", "acme", "192.0.2.10", 5, t0 + Duration::hours(3));
    harvest(&r, "bad", "acme", "192.0.2.10", 5, t0 + Duration::hours(3));
    assert_eq!(r.assessment("bad"), d.assessment("bad"));
    assert!(Detector::restore(settings(), serde_json::json!({"version": 9})).is_err());
}

#[test]
fn settings_reject_unknown_fields_and_bad_values() {
    assert!(
        serde_json::from_str::<DetectorSettings>(r#"{"flag_threshold": 0.9, "bogus": 1}"#).is_err()
    );
    let s: DetectorSettings =
        serde_json::from_str(r#"{"flag_threshold": 0.9, "weights": {"reveal": 3.0}}"#).unwrap();
    assert_eq!(s.min_requests, DetectorSettings::default().min_requests);
    assert_eq!(s.weights.reveal, 3.0);
    assert!(
        Detector::new(DetectorSettings {
            flag_threshold: 1.5,
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn memory_per_account_is_bounded() {
    // Unflagged account: sketches and bounded evidence only.
    let unflagged = memory_bound(0);
    assert!(unflagged < 64 * 1024, "bound {unflagged}");
    // A flagged account adds at most sample_size prompts of bounded size.
    let flagged = memory_bound(50);
    eprintln!(
        "memory bound per account: {unflagged} bytes unflagged, {flagged} bytes flagged with 50 samples"
    );
    assert!(
        flagged > unflagged && flagged < 160 * 1024,
        "bound {flagged}"
    );
    // The bound holds for an account that saw many keys, owners, IPs and templates.
    let d = Detector::new(DetectorSettings {
        cluster_interval: 0,
        ..Default::default()
    })
    .unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    for i in 0..3000i64 {
        let b = body(&format!(
            "unique prompt {i} about {} with words w{i} x{i} y{i}",
            TOPICS[(i % 12) as usize]
        ));
        let key = format!("key-{i}");
        let owner = format!("owner-{}", i % 40);
        let ip: IpAddr = format!("10.{}.{}.{}", i % 200, i % 7, i % 250)
            .parse()
            .unwrap();
        d.observe(&Observation {
            time: t0 + Duration::minutes(i * 7),
            organization: "wide",
            key: &key,
            client_ip: Some(ip),
            endpoint: Endpoint::Chat,
            body: &b,
            model_owner: Some(&owner),
        });
    }
    let snap = d.snapshot();
    let acc = &snap["accounts"]["wide"];
    assert!(acc["keys"].as_array().unwrap().len() <= 64);
    assert!(acc["owners"].as_array().unwrap().len() <= 16);
    assert!(acc["timeline"].as_array().unwrap().len() <= 168);
    assert!(acc["templates"].as_array().unwrap().len() <= 32);
    assert!(acc["ips"].as_array().unwrap().len() <= 16);
}

#[test]
fn concurrent_observers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Detector>();
    let d = std::sync::Arc::new(
        Detector::new(DetectorSettings {
            cluster_interval: 100,
            ..Default::default()
        })
        .unwrap(),
    );
    let t0 = datetime!(2025-03-03 00:00 UTC);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                let b = body("Think step by step: what is the capital of France?");
                for i in 0..500 {
                    let org = format!("org-{}", (i + t) % 10);
                    d.observe(&Observation {
                        time: t0 + Duration::seconds(i),
                        organization: &org,
                        key: "k",
                        client_ip: None,
                        endpoint: Endpoint::Chat,
                        body: &b,
                        model_owner: None,
                    });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total: u64 = (0..10)
        .map(|i| d.assessment(&format!("org-{i}")).unwrap().requests)
        .sum();
    assert_eq!(total, 2000);
}

/// h1..h4 joined by operator metadata (h1–h2 signup, h2–h3 payment, h3–h4 signup), 12
/// harvesting requests each: every account is under `min_requests` alone.
fn metadata_campaign(d: &Detector, t0: OffsetDateTime) {
    for (a, b, kind, value) in [
        ("h1", "h2", "signup", "device-a"),
        ("h2", "h3", "payment", "card-9"),
        ("h3", "h4", "signup", "device-b"),
    ] {
        d.link_metadata(a, kind, value);
        d.link_metadata(b, kind, value);
    }
    for (i, org) in ["h1", "h2", "h3", "h4"].iter().enumerate() {
        let ip = format!("203.0.113.{}", 10 + i);
        harvest(
            d,
            org,
            "acme",
            &ip,
            12,
            t0 + Duration::minutes(i as i64 * 7),
        );
    }
}

#[test]
fn observe_never_reclusters_inline() {
    let d = Detector::new(DetectorSettings {
        cluster_interval: 10,
        ..settings()
    })
    .unwrap();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    metadata_campaign(&d, t0);
    // 48 observations, 4 times the interval: no run, no cluster, and the run is due.
    assert_eq!(d.recluster_runs(), 0);
    assert_eq!(d.pending_observations(), 48);
    assert!(d.recluster_due());
    for org in ["h1", "h2", "h3", "h4"] {
        let a = d.assessment(org).unwrap();
        assert!(a.cluster.is_none() && !a.flagged, "{a:?}");
    }
    d.recluster();
    assert_eq!((d.recluster_runs(), d.pending_observations()), (1, 0));
    assert!(!d.recluster_due());
    assert!(d.assessment("h1").unwrap().cluster.is_some());

    // The offline schedule re-clusters inline at every multiple of the interval.
    let offline = Detector::new(DetectorSettings {
        cluster_interval: 10,
        ..settings()
    })
    .unwrap();
    let b = body("Explain tides. Think step by step.");
    for i in 0..25 {
        offline.observe_and_recluster(&plain(t0 + Duration::minutes(i), "o", "k", &b, None));
    }
    assert_eq!(offline.recluster_runs(), 2);
    assert_eq!(offline.pending_observations(), 5);
}

#[test]
fn a_background_driver_links_and_flags_the_cluster() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Arc::new(
        Detector::new(DetectorSettings {
            cluster_interval: 10,
            ..settings()
        })
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // The driver re-clusters whenever a run is due, as the gateway's background task does.
    let driver = {
        let (d, stop) = (d.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if d.recluster_due() {
                    d.recluster();
                    runs += 1;
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            runs
        })
    };
    let t0 = datetime!(2025-03-03 00:00 UTC);
    metadata_campaign(&d, t0);
    let linked = || {
        let a: Vec<_> = ["h1", "h2", "h3", "h4"]
            .iter()
            .map(|o| d.assessment(o).unwrap())
            .collect();
        a[0].cluster.is_some()
            && a.iter().all(|x| x.cluster == a[0].cluster && x.flagged)
            && !d.recluster_due()
    };
    for _ in 0..30_000 {
        if linked() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stop.store(true, Ordering::SeqCst);
    let runs = driver.join().unwrap();
    assert!(linked(), "{:?}", d.assessment("h1"));
    // Every run was the driver's: observing never ran one.
    assert!(runs >= 1);
    assert_eq!(d.recluster_runs(), runs);
}
