//! Replay/backtest: run the detector in event time over JSON Lines of requests and report, per
//! organization, whether and when it was flagged, with the signals that drove the score.
//!
//! Input line: `{"time", "organization", "key", "client_ip", "endpoint", "body", "output_tokens"?}`
//! plus the optional extensions `"model_owner"`, `"cancelled"` and `"links"` (an object of
//! operator metadata such as `{"payment": "card-123"}`, applied via `link_metadata`).

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::score::Signal;
use crate::{Detector, DetectorSettings, Endpoint, GuardError, Observation, Outcome};

/// One replay input line.
#[derive(Deserialize)]
pub struct ReplayLine<'a> {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub organization: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub client_ip: Option<String>,
    pub endpoint: String,
    #[serde(borrow)]
    pub body: &'a RawValue,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub model_owner: Option<String>,
    #[serde(default)]
    pub cancelled: Option<bool>,
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

/// Per-organization result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OrgReport {
    pub organization: String,
    pub flagged: bool,
    pub score: f64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_flagged_at: Option<OffsetDateTime>,
    pub requests_until_flagged: Option<u64>,
    pub cluster: Option<String>,
    pub signals: Vec<Signal>,
    /// The segment (key, client IP, network or end user) the organization is judged on, when
    /// one scored higher than its traffic as a whole, and that segment's signals.
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub segment_signals: Vec<Signal>,
}

/// Replay result, sorted by organization.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplayReport {
    pub organizations: Vec<OrgReport>,
}

/// Feed one parsed line to the detector.
pub fn observe_line(
    detector: &Detector,
    line: &ReplayLine<'_>,
    linked: &mut HashSet<(String, String, String)>,
) -> Result<Outcome, String> {
    let endpoint = Endpoint::from_path(&line.endpoint)
        .ok_or_else(|| format!("unknown endpoint {:?}", line.endpoint))?;
    let client_ip = match line.client_ip.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|e| format!("client_ip {s:?}: {e}"))?,
        ),
    };
    for (kind, value) in &line.links {
        if linked.insert((line.organization.clone(), kind.clone(), value.clone())) {
            detector.link_metadata(&line.organization, kind, value);
        }
    }
    let outcome = detector.observe_and_recluster(&Observation {
        time: line.time,
        organization: &line.organization,
        key: &line.key,
        client_ip,
        endpoint,
        body: line.body.get().as_bytes(),
        model_owner: line.model_owner.as_deref(),
    });
    if line.output_tokens.is_some() || line.cancelled.is_some() {
        detector.record_completion(
            &line.organization,
            &line.key,
            line.time,
            line.output_tokens.unwrap_or(0),
            line.cancelled.unwrap_or(false),
        );
    }
    Ok(outcome)
}

/// Replay JSON Lines through a fresh detector using event time.
pub fn replay<R: BufRead>(
    input: R,
    settings: &DetectorSettings,
) -> Result<ReplayReport, GuardError> {
    let detector = Detector::new(settings.clone())?;
    replay_into(&detector, input)?;
    Ok(report(&detector))
}

/// Replay into an existing detector (blank lines are skipped).
pub fn replay_into<R: BufRead>(detector: &Detector, mut input: R) -> Result<u64, GuardError> {
    let mut buf = String::new();
    let mut n = 0u64;
    let mut linked = HashSet::new();
    loop {
        buf.clear();
        if input.read_line(&mut buf).map_err(GuardError::ReadInput)? == 0 {
            break;
        }
        n += 1;
        if buf.trim().is_empty() {
            continue;
        }
        let line: ReplayLine<'_> =
            serde_json::from_str(&buf).map_err(|e| GuardError::InvalidLine {
                line: n,
                message: e.to_string(),
            })?;
        observe_line(detector, &line, &mut linked)
            .map_err(|message| GuardError::InvalidLine { line: n, message })?;
    }
    Ok(n)
}

/// Report of the detector's current state (re-clusters first).
pub fn report(detector: &Detector) -> ReplayReport {
    detector.recluster();
    let organizations = detector
        .assessments()
        .into_iter()
        .map(|a| OrgReport {
            organization: a.organization,
            flagged: a.flagged,
            score: (a.score * 10_000.0).round() / 10_000.0,
            first_flagged_at: a.flagged_at,
            requests_until_flagged: a.requests_until_flagged,
            cluster: a.cluster,
            signals: a.signals,
            segment: a.segment,
            segment_signals: a.segment_signals,
        })
        .collect();
    ReplayReport { organizations }
}

/// Human-readable table: one row per organization with its top three reasons.
pub fn render_table(report: &ReplayReport) -> String {
    use std::fmt::Write;
    let w = report
        .organizations
        .iter()
        .map(|o| o.organization.chars().count())
        .max()
        .unwrap_or(12)
        .max(12);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$}  {:>5}  {:<7}  {:<20}  {:>8}  {:<16}  top signals",
        "organization", "score", "flagged", "first flagged", "requests", "cluster"
    );
    for o in &report.organizations {
        let at = o
            .first_flagged_at
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "-".into());
        let top: Vec<String> = o
            .signals
            .iter()
            .take(3)
            .map(|s| format!("{}={:.2}", s.name, s.value))
            .collect();
        let _ = writeln!(
            out,
            "{:<w$}  {:>5.2}  {:<7}  {:<20}  {:>8}  {:<16}  {}",
            o.organization,
            o.score,
            if o.flagged { "yes" } else { "no" },
            at,
            o.requests_until_flagged
                .map_or("-".into(), |n| n.to_string()),
            o.cluster.as_deref().unwrap_or("-"),
            top.join(", ")
        );
    }
    out
}
