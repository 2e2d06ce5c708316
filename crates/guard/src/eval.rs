//! Evaluation harness: replay a labelled corpus (organization names carry the kind, see
//! [`crate::corpus`]) and report, per kind, detection at the configured threshold and at a fixed
//! false-positive rate, false positives on benign accounts, requests until detection and cluster
//! recall for coordinated campaigns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;

use serde::Serialize;

use crate::corpus::{Kind, campaign_of};
use crate::replay::{ReplayLine, observe_line};
use crate::{Detector, GuardError};

/// One account's result.
#[derive(Clone, Debug, Serialize)]
pub struct AccountResult {
    pub organization: String,
    pub kind: String,
    pub harvesting: bool,
    pub requests: u64,
    pub score: f64,
    pub flagged: bool,
    pub requests_until_flagged: Option<u64>,
    pub cluster: Option<String>,
    /// Accounts this one is linked to by synchronized activity.
    pub synchronized_with: Vec<String>,
}

/// Figures for one kind of traffic.
#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub kind: String,
    pub harvesting: bool,
    pub accounts: usize,
    pub requests: u64,
    /// Accounts flagged at the configured threshold (for benign kinds: false positives).
    pub flagged: usize,
    pub flagged_rate: f64,
    /// Share of accounts whose final score exceeds the threshold that keeps the benign
    /// false-positive rate at or below `fixed_fpr`.
    pub detected_at_fixed_fpr: f64,
    pub median_requests_until_flagged: Option<u64>,
    /// For coordinated campaigns: share of accounts placed in the campaign's main cluster.
    pub cluster_recall: Option<f64>,
    /// Accounts with at least one synchronized-activity link.
    pub synchronized: usize,
}

/// The evaluation report.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub requests: u64,
    pub accounts: usize,
    pub benign_accounts: usize,
    pub harvesting_accounts: usize,
    pub flag_threshold: f64,
    pub min_requests: u64,
    pub false_positives: Vec<String>,
    pub false_positive_rate: f64,
    pub harvesting_flagged_rate: f64,
    pub fixed_fpr: f64,
    pub threshold_at_fixed_fpr: f64,
    pub harvesting_detected_at_fixed_fpr: f64,
    pub kinds: Vec<KindSummary>,
    /// Pairs linked by synchronized activity (and whether the link merges them into a cluster).
    pub sync_links: Vec<crate::SyncLink>,
    pub accounts_detail: Vec<AccountResult>,
}

/// Replay `input` through `detector` and evaluate against the labels in organization names.
pub fn evaluate<R: BufRead>(
    detector: &Detector,
    mut input: R,
    fixed_fpr: f64,
) -> Result<EvalReport, GuardError> {
    let mut buf = String::new();
    let mut n = 0u64;
    let mut linked = HashSet::new();
    loop {
        buf.clear();
        if input.read_line(&mut buf).map_err(GuardError::ReadInput)? == 0 {
            break;
        }
        if buf.trim().is_empty() {
            continue;
        }
        n += 1;
        let line: ReplayLine<'_> =
            serde_json::from_str(&buf).map_err(|e| GuardError::InvalidLine {
                line: n,
                message: e.to_string(),
            })?;
        observe_line(detector, &line, &mut linked)
            .map_err(|message| GuardError::InvalidLine { line: n, message })?;
    }
    detector.recluster();
    let settings = detector.settings();
    let sync_links = detector.sync_links();
    let mut synced: HashMap<&str, Vec<String>> = HashMap::new();
    for l in &sync_links {
        synced.entry(l.a.as_str()).or_default().push(l.b.clone());
        synced.entry(l.b.as_str()).or_default().push(l.a.clone());
    }
    let accounts: Vec<AccountResult> = detector
        .assessments()
        .into_iter()
        .filter_map(|a| {
            let kind = Kind::from_org(&a.organization)?;
            Some(AccountResult {
                kind: kind.name().to_owned(),
                harvesting: kind.harvesting(),
                requests: a.requests,
                score: a.score,
                flagged: a.flagged,
                requests_until_flagged: a.requests_until_flagged,
                cluster: a.cluster,
                synchronized_with: synced
                    .get(a.organization.as_str())
                    .cloned()
                    .unwrap_or_default(),
                organization: a.organization,
            })
        })
        .collect();
    let mut benign_scores: Vec<f64> = accounts
        .iter()
        .filter(|a| !a.harvesting)
        .map(|a| a.score)
        .collect();
    benign_scores.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fixed_fpr * benign_scores.len() as f64).floor() as usize;
    let threshold = benign_scores.get(allowed).copied().unwrap_or(0.0);
    let detected = |a: &AccountResult| a.score > threshold;

    let mut by_kind: BTreeMap<Kind, Vec<&AccountResult>> = BTreeMap::new();
    for a in &accounts {
        if let Some(k) = Kind::from_org(&a.organization) {
            by_kind.entry(k).or_default().push(a);
        }
    }
    let kinds = by_kind
        .iter()
        .map(|(k, list)| {
            let flagged = list.iter().filter(|a| a.flagged).count();
            let mut until: Vec<u64> = list
                .iter()
                .filter_map(|a| a.requests_until_flagged)
                .collect();
            until.sort_unstable();
            let cluster_recall = k.campaign().then(|| {
                let mut camps: HashMap<String, Vec<&AccountResult>> = HashMap::new();
                for a in list {
                    if let Some(c) = campaign_of(&a.organization) {
                        camps.entry(c).or_default().push(a);
                    }
                }
                let mut hit = 0usize;
                for members in camps.values() {
                    let mut ids: HashMap<&str, usize> = HashMap::new();
                    for m in members {
                        if let Some(c) = &m.cluster {
                            *ids.entry(c.as_str()).or_default() += 1;
                        }
                    }
                    hit += ids.values().copied().max().unwrap_or(0);
                }
                hit as f64 / list.len().max(1) as f64
            });
            KindSummary {
                kind: k.name().to_owned(),
                harvesting: k.harvesting(),
                accounts: list.len(),
                requests: list.iter().map(|a| a.requests).sum(),
                flagged,
                flagged_rate: flagged as f64 / list.len().max(1) as f64,
                detected_at_fixed_fpr: list.iter().filter(|a| detected(a)).count() as f64
                    / list.len().max(1) as f64,
                median_requests_until_flagged: until.get(until.len() / 2).copied(),
                cluster_recall,
                synchronized: list
                    .iter()
                    .filter(|a| !a.synchronized_with.is_empty())
                    .count(),
            }
        })
        .collect();
    let benign: Vec<&AccountResult> = accounts.iter().filter(|a| !a.harvesting).collect();
    let harvest: Vec<&AccountResult> = accounts.iter().filter(|a| a.harvesting).collect();
    let false_positives: Vec<String> = benign
        .iter()
        .filter(|a| a.flagged)
        .map(|a| a.organization.clone())
        .collect();
    Ok(EvalReport {
        requests: n,
        accounts: accounts.len(),
        benign_accounts: benign.len(),
        harvesting_accounts: harvest.len(),
        flag_threshold: settings.flag_threshold,
        min_requests: settings.min_requests,
        false_positive_rate: false_positives.len() as f64 / benign.len().max(1) as f64,
        false_positives,
        harvesting_flagged_rate: harvest.iter().filter(|a| a.flagged).count() as f64
            / harvest.len().max(1) as f64,
        fixed_fpr,
        threshold_at_fixed_fpr: threshold,
        harvesting_detected_at_fixed_fpr: harvest.iter().filter(|a| detected(a)).count() as f64
            / harvest.len().max(1) as f64,
        kinds,
        sync_links,
        accounts_detail: accounts,
    })
}

/// Human-readable rendering of an evaluation report.
pub fn render(report: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} requests, {} accounts ({} benign, {} harvesting); flag threshold {:.2}, min requests {}",
        report.requests,
        report.accounts,
        report.benign_accounts,
        report.harvesting_accounts,
        report.flag_threshold,
        report.min_requests
    );
    let _ = writeln!(
        out,
        "{:<18} {:>4} {:>9} {:>8} {:>8} {:>12} {:>14} {:>8} {:>5}",
        "kind",
        "harv",
        "accounts",
        "requests",
        "flagged",
        "flag rate",
        "det@fpr",
        "req→flag",
        "sync"
    );
    for k in &report.kinds {
        let _ = writeln!(
            out,
            "{:<18} {:>4} {:>9} {:>8} {:>8} {:>11.0}% {:>13.0}% {:>8} {:>5}{}",
            k.kind,
            if k.harvesting { "yes" } else { "no" },
            k.accounts,
            k.requests,
            k.flagged,
            k.flagged_rate * 100.0,
            k.detected_at_fixed_fpr * 100.0,
            k.median_requests_until_flagged
                .map_or("-".into(), |n| n.to_string()),
            k.synchronized,
            k.cluster_recall.map_or(String::new(), |r| format!(
                "  cluster recall {:.0}%",
                r * 100.0
            )),
        );
    }
    let _ = writeln!(
        out,
        "false positives at threshold: {} of {} benign ({:.1}%){}",
        report.false_positives.len(),
        report.benign_accounts,
        report.false_positive_rate * 100.0,
        if report.false_positives.is_empty() {
            String::new()
        } else {
            format!(": {}", report.false_positives.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "harvesting accounts flagged at threshold: {:.1}%",
        report.harvesting_flagged_rate * 100.0
    );
    let _ = writeln!(
        out,
        "at fixed FPR {:.1}% (score > {:.3}): {:.1}% of harvesting accounts detected",
        report.fixed_fpr * 100.0,
        report.threshold_at_fixed_fpr,
        report.harvesting_detected_at_fixed_fpr * 100.0
    );
    out
}
