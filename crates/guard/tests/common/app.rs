//! The chat app of the segment tests: its keys and backends, a detector, and one request of
//! organization `app` with its completion.

use std::net::IpAddr;

use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation};

/// The chat app's three product keys and four backends.
pub const KEYS: [&str; 3] = ["app-web", "app-ios", "app-android"];
pub const BACKENDS: [&str; 4] = ["10.1.2.11", "10.1.2.12", "10.1.2.13", "10.1.2.14"];

/// A detector with the default settings, re-clustering only when a test asks.
pub fn detector() -> Detector {
    Detector::new(DetectorSettings {
        cluster_interval: 0,
        ..Default::default()
    })
    .unwrap()
}

/// Observe a chat request of organization `app` with `key` from `ip`, and complete it with
/// `out` output tokens.
pub fn send(
    d: &Detector,
    t: time::OffsetDateTime,
    key: &str,
    ip: &str,
    body: serde_json::Value,
    out: u64,
) {
    let body = serde_json::to_vec(&body).unwrap();
    d.observe(&Observation {
        time: t,
        organization: "app",
        key,
        client_ip: Some(ip.parse::<IpAddr>().unwrap()),
        endpoint: Endpoint::Chat,
        body: &body,
        model_owner: None,
    });
    d.record_completion("app", key, t, out, false);
}
