//! The traffic behind `testdata/snapshot_v1.json`: a templated product customer whose
//! moderation template asks to "explain your reasoning" (harvesting-looking traffic that only its
//! heavy, narrow templates explain), two harvesters linked by a payment fingerprint and an
//! address (flagged, one cluster, a retained sample) and a small consumer. The fixture is this
//! scenario run by the format-1 detector (the commit before snapshot format 2) and snapshotted;
//! `tests/snapshot_migration.rs` runs it again on the current detector to compare.

use std::net::IpAddr;

use time::{Duration, OffsetDateTime, macros::datetime};
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation};

pub const T0: OffsetDateTime = datetime!(2025-03-03 00:00 UTC);

pub fn settings() -> DetectorSettings {
    DetectorSettings {
        min_requests: 30,
        sample_size: 5,
        sample_retention_days: 30,
        cluster_interval: 0,
        ..Default::default()
    }
}

fn chat(system: Option<&str>, user: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    messages.push(serde_json::json!({"role": "user", "content": user}));
    let mut body = serde_json::json!({"model": "m", "messages": messages});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    serde_json::to_vec(&body).unwrap_or_default()
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
];

const BRANDS: &[&str] = &["Acme", "Globex", "Initech", "Umbrella"];
const CATEGORIES: &[&str] = &["Shoes", "Hats", "Lamps", "Chairs", "Kettles"];

/// Run the scenario on `d`; returns the time of the last request.
pub fn run(d: &Detector) -> OffsetDateTime {
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    let mut last = T0;
    for i in 0..240i64 {
        let t = T0 + Duration::seconds(45 * i);
        let k = i as usize;
        let body = if i % 3 == 0 {
            chat(
                Some("You are a content moderator for a marketplace."),
                &format!(
                    "Is this listing allowed: used {} number {i} from {}? Explain your reasoning.",
                    CATEGORIES[k % CATEGORIES.len()].to_lowercase(),
                    BRANDS[k % BRANDS.len()]
                ),
                serde_json::json!({"temperature": 0}),
            )
        } else {
            chat(
                None,
                &format!(
                    "Write alt text for product {} from {} in category {}.",
                    1000 + i,
                    BRANDS[k % BRANDS.len()],
                    CATEGORIES[k % CATEGORIES.len()]
                ),
                serde_json::json!({"max_tokens": 60}),
            )
        };
        d.observe(&Observation {
            time: t,
            organization: "product-co",
            key: "svc",
            client_ip: ip("198.51.100.7"),
            endpoint: Endpoint::Chat,
            body: &body,
            model_owner: Some("acme-labs"),
        });
        d.record_completion("product-co", "svc", t, 40, false);
        last = last.max(t);
    }
    for (org, addr) in [("harvest-a", "192.0.2.10"), ("harvest-b", "192.0.2.11")] {
        d.link_metadata(org, "payment", "card-9");
        for i in 0..60i64 {
            let t = T0 + Duration::minutes(3 * i + 1);
            let body = chat(
                None,
                &format!(
                    "Explain {} (case {i}) in depth. Think step by step and show your reasoning.",
                    TOPICS[i as usize % TOPICS.len()]
                ),
                serde_json::json!({"logprobs": true, "top_logprobs": 5, "n": 4}),
            );
            d.observe(&Observation {
                time: t,
                organization: org,
                key: "k1",
                client_ip: ip(addr),
                endpoint: Endpoint::Chat,
                body: &body,
                model_owner: Some("acme-labs"),
            });
            d.record_completion(org, "k1", t, 700, false);
            last = last.max(t);
        }
    }
    for i in 0..12i64 {
        let t = T0 + Duration::minutes(17 * i + 5);
        let body = chat(
            None,
            &format!(
                "What should I cook tonight with {} eggs and some spinach?",
                i + 2
            ),
            serde_json::json!({}),
        );
        d.observe(&Observation {
            time: t,
            organization: "consumer",
            key: "app",
            client_ip: ip("203.0.113.40"),
            endpoint: Endpoint::Chat,
            body: &body,
            model_owner: Some("acme-labs"),
        });
        last = last.max(t);
    }
    d.recluster();
    last
}
