//! One request of organization `app` and its completion, for the segment tests.

use std::net::IpAddr;

use tollgate_guard::{Detector, Endpoint, Observation};

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
