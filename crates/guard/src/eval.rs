//! Evaluation harness: replay a labelled corpus (organization names carry the kind, see
//! [`crate::corpus`]) and report, per kind, detection at the configured threshold and at a fixed
//! false-positive rate, false positives on benign accounts, requests until detection and cluster
//! recall for coordinated campaigns.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use serde::Serialize;

use crate::corpus::{Kind, campaign_of};
use crate::figures::{
    Table, group, kind_cells, largest_cluster, median, name_list, or_dash, percent, percent_note,
    share, threshold_at_fpr,
};
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
    let threshold = threshold_at_fpr(
        accounts
            .iter()
            .filter(|a| !a.harvesting)
            .map(|a| a.score)
            .collect(),
        fixed_fpr,
    );
    let detected = |a: &AccountResult| a.score > threshold;

    let kinds = group(&accounts, |a| Kind::from_org(&a.organization))
        .iter()
        .map(|(k, list)| {
            let flagged = list.iter().filter(|a| a.flagged).count();
            let cluster_recall = k.campaign().then(|| {
                let hit: usize = group(list, |a| campaign_of(&a.organization))
                    .values()
                    .map(|members| largest_cluster(members.iter().map(|m| m.cluster.as_deref())))
                    .sum();
                share(hit, list.len())
            });
            KindSummary {
                kind: k.name().to_owned(),
                harvesting: k.harvesting(),
                accounts: list.len(),
                requests: list.iter().map(|a| a.requests).sum(),
                flagged,
                flagged_rate: share(flagged, list.len()),
                detected_at_fixed_fpr: share(
                    list.iter().filter(|a| detected(a)).count(),
                    list.len(),
                ),
                median_requests_until_flagged: median(
                    list.iter().map(|a| a.requests_until_flagged),
                ),
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
        false_positive_rate: share(false_positives.len(), benign.len()),
        false_positives,
        harvesting_flagged_rate: share(harvest.iter().filter(|a| a.flagged).count(), harvest.len()),
        fixed_fpr,
        threshold_at_fixed_fpr: threshold,
        harvesting_detected_at_fixed_fpr: share(
            harvest.iter().filter(|a| detected(a)).count(),
            harvest.len(),
        ),
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
    let table = Table {
        titles: &[
            "kind",
            "harv",
            "accounts",
            "requests",
            "flagged",
            "flag rate",
            "det@fpr",
            "req→flag",
            "sync",
        ],
        widths: &[18, 4, 9, 8, 8, 12, 14, 8, 5],
    };
    table.write(
        &mut out,
        report.kinds.iter().map(|k| {
            let counts = (k.accounts, k.requests, k.flagged);
            let mut cells = kind_cells(&k.kind, k.harvesting, counts, k.flagged_rate);
            cells.push(percent(k.detected_at_fixed_fpr));
            cells.push(or_dash(k.median_requests_until_flagged));
            cells.push(k.synchronized.to_string());
            (cells, percent_note("cluster recall", k.cluster_recall))
        }),
    );
    let _ = writeln!(
        out,
        "false positives at threshold: {} of {} benign ({:.1}%){}",
        report.false_positives.len(),
        report.benign_accounts,
        report.false_positive_rate * 100.0,
        name_list(&report.false_positives, ": ", "")
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
