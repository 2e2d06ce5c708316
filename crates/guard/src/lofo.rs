//! Leave-one-family-out evaluation over the family corpus ([`crate::families`]).
//!
//! Protocol: the whole corpus is replayed once per candidate flag threshold (the detector's
//! state per account does not depend on the threshold; only flags do). For each fold `k`, the
//! threshold is chosen on the accounts of every family but `k` (training): the candidate with
//! the highest share of harvesting accounts flagged among those that flag no heavy customer and
//! at most [`TRAIN_MAX_FPR`] of the benign accounts, the higher threshold on ties. Figures are
//! then read from the accounts of family `k` alone (held out) under that threshold, and summed
//! over the folds, so every family is reported exactly once, by a threshold that never saw it.
//! The distribution test's threshold is fitted the same way, on the training families' benign
//! accounts only, for a stated false-positive rate.
//!
//! Accounts of all families share one detector, so cross-account links may join accounts of
//! different families (a false merge across families would show up as a benign account
//! flagged with a cluster).

use serde::Serialize;

use crate::families::{FAMILIES, FamKind, FamilyConfig, generate, label};
use crate::figures::{
    Table, group, kind_cells, largest_cluster, median, name_list, or_dash, percent_note, share,
    threshold_at_fpr,
};
use crate::{Detector, DetectorSettings, GuardError};

/// Candidate flag thresholds.
pub const THRESHOLDS: [f64; 4] = [0.6, 0.7, 0.8, 0.9];
/// Highest benign flag rate allowed on the training families when fitting the threshold.
pub const TRAIN_MAX_FPR: f64 = 0.02;
/// Candidate family margins of the distribution test (factors on its fitted threshold).
pub const FAMILY_MARGINS: [f64; 6] = [1.0, 1.25, 1.5, 2.0, 3.0, 4.0];

/// One account under one candidate threshold.
#[derive(Clone, Debug, Serialize)]
pub struct AccountOutcome {
    pub organization: String,
    pub kind: String,
    pub family: u32,
    pub harvesting: bool,
    pub heavy: bool,
    pub requests: u64,
    pub score: f64,
    pub flagged: bool,
    pub requests_until_flagged: Option<u64>,
    pub cluster: Option<String>,
    /// The segment the account was judged on, when a segment scored higher than the account.
    pub segment: Option<String>,
    /// Distribution test statistic against the training benign accounts (0 below
    /// `min_requests`), set per fold.
    pub distribution: f64,
    /// Whether the statistic exceeds the fold's fitted threshold.
    pub distribution_positive: bool,
    /// Whether it exceeds the fold's threshold times its family margin.
    pub distribution_positive_margin: bool,
    #[serde(skip)]
    pub profile: Vec<f32>,
}

/// Figures of one kind on its held-out families.
#[derive(Clone, Debug, Serialize)]
pub struct KindFigures {
    pub kind: String,
    pub harvesting: bool,
    pub accounts: usize,
    pub requests: u64,
    pub flagged: usize,
    pub flag_rate: f64,
    /// Held-out families (of [`FAMILIES`]) in which at least 80% of the kind's accounts were
    /// flagged (for the hydra campaign: flagged *and* in the campaign's largest cluster).
    pub families_caught: u32,
    pub median_requests_until_flagged: Option<u64>,
    /// Hydra: share of the campaign's accounts that are flagged and in its largest cluster.
    pub cluster_recall: Option<f64>,
    /// Accounts over the distribution test's threshold (fitted on training benign accounts).
    pub distribution_positive: usize,
    /// Accounts over that threshold times the fold's family margin.
    pub distribution_positive_margin: usize,
}

/// One held-out family of the hidden-segment kind.
#[derive(Clone, Debug, Serialize)]
pub struct ShareFigures {
    pub family: u32,
    pub attacker_share: f64,
    pub accounts: usize,
    pub flagged: usize,
    pub distribution_positive: usize,
    pub distribution_positive_margin: usize,
}

/// Per fold: the fitted threshold and the training figures it was chosen on.
#[derive(Clone, Debug, Serialize)]
pub struct Fold {
    pub held_out_family: u32,
    pub threshold: f64,
    pub train_benign_fpr: f64,
    pub train_harvest_recall: f64,
    pub distribution_threshold: f64,
    /// A new family's benign positive rate at that threshold, estimated on the training
    /// families alone (each training family in turn measured against a threshold fitted on the
    /// others; mean over them).
    pub distribution_new_family_fpr: f64,
    /// The smallest of [`FAMILY_MARGINS`] whose estimated new-family rate meets the target (the
    /// largest when none does), and that estimate.
    pub distribution_margin: f64,
    pub distribution_margin_new_family_fpr: f64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct LofoReport {
    pub requests: u64,
    pub accounts: usize,
    pub benign_accounts: usize,
    pub heavy_accounts: usize,
    pub folds: Vec<Fold>,
    pub kinds: Vec<KindFigures>,
    pub benign_flagged: Vec<String>,
    pub benign_fpr: f64,
    pub heavy_flagged: usize,
    /// Harvesting kinds (hydra counted as one) caught in at least 3 of the 4 held-out families.
    pub kinds_caught: usize,
    pub harvesting_kinds: usize,
    pub blatant_median_requests_to_flag: Option<u64>,
    pub distribution_fpr_target: f64,
    pub distribution_benign_fpr: f64,
    /// Held-out benign positive rate with each fold's family margin.
    pub distribution_benign_fpr_margin: f64,
    /// Harvesting confined to one key of a genuine app, per held-out family: the attacker's
    /// share of the account's traffic, accounts flagged and over the distribution threshold.
    pub by_attacker_share: Vec<ShareFigures>,
    pub accounts_detail: Vec<AccountOutcome>,
}

/// Replay the corpus under one threshold.
fn run(
    lines: &[String],
    settings: &DetectorSettings,
    public: &[String],
) -> Result<Vec<AccountOutcome>, GuardError> {
    let d = Detector::with_benchmark_prompts(settings.clone(), public)?;
    let text = lines.join("\n");
    crate::replay::replay_into(&d, text.as_bytes())?;
    d.recluster();
    let mut out = Vec::new();
    for a in d.assessments() {
        let Some(l) = label(&a.organization) else {
            continue;
        };
        out.push(AccountOutcome {
            kind: l.kind.name().to_owned(),
            family: l.family,
            harvesting: l.kind.harvesting(),
            heavy: l.heavy,
            requests: a.requests,
            score: a.score,
            flagged: a.flagged,
            requests_until_flagged: a.requests_until_flagged,
            cluster: a.cluster.clone(),
            segment: a.segment.clone(),
            distribution: 0.0,
            distribution_positive: false,
            distribution_positive_margin: false,
            profile: if a.requests >= settings.min_requests {
                a.profile.clone()
            } else {
                Vec::new()
            },
            organization: a.organization,
        });
    }
    Ok(out)
}

fn fpr_recall(accts: &[&AccountOutcome]) -> (f64, f64, usize) {
    let benign: Vec<_> = accts.iter().filter(|a| !a.harvesting).collect();
    let harvest: Vec<_> = accts.iter().filter(|a| a.harvesting).collect();
    let fp = benign.iter().filter(|a| a.flagged).count();
    let heavy = benign.iter().filter(|a| a.flagged && a.heavy).count();
    let tp = harvest.iter().filter(|a| a.flagged).count();
    (share(fp, benign.len()), share(tp, harvest.len()), heavy)
}

/// Squared distance between two profiles (the MMD² of a linear kernel over the hashed
/// features).
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y) * f64::from(x - y))
        .sum()
}

/// Distance to the nearest reference profile.
fn nearest(p: &[f32], refs: &[&[f32]]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    refs.iter()
        .map(|r| dist2(p, r))
        .fold(f64::INFINITY, f64::min)
        .min(16.0)
}

/// The distribution statistic's null sample on the training families: each training benign
/// account against the benign accounts of the *other* training families (leave one family out
/// inside the training set). A held-out account is measured against references none of which
/// come from its family; leaving out only the account itself (its family siblings stay in the
/// references) understates that distance, and a threshold calibrated on it gave 2.5 % held-out
/// benign positives against a 1 % target.
fn family_null(refs: &[&AccountOutcome]) -> Vec<f64> {
    refs.iter()
        .map(|a| {
            let others: Vec<&[f32]> = refs
                .iter()
                .filter(|r| r.family != a.family)
                .map(|r| r.profile.as_slice())
                .collect();
            nearest(&a.profile, &others)
        })
        .collect()
}

/// A new family's benign positive rate at the threshold fitted for `fpr` times `margin`,
/// estimated on the training null alone: each training family in turn is measured against the
/// threshold fitted on the other training families' null values (the mean over them). The
/// others' values were measured against references that include the family left out, which
/// can only lower the threshold and raise the estimate.
fn new_family_fpr(refs: &[&AccountOutcome], null: &[f64], fpr: f64, margin: f64) -> f64 {
    let mut families: Vec<u32> = refs.iter().map(|a| a.family).collect();
    families.sort_unstable();
    families.dedup();
    if families.len() < 2 {
        return 0.0;
    }
    let mut sum = 0.0;
    for &j in &families {
        let others: Vec<f64> = refs
            .iter()
            .zip(null)
            .filter(|(a, _)| a.family != j)
            .map(|(_, v)| *v)
            .collect();
        let t = threshold_at_fpr(others, fpr) * margin;
        let own: Vec<f64> = refs
            .iter()
            .zip(null)
            .filter(|(a, _)| a.family == j)
            .map(|(_, v)| *v)
            .collect();
        sum += share(own.iter().filter(|v| **v > t).count(), own.len());
    }
    sum / families.len() as f64
}

/// Largest cluster's flagged members over the campaign's size.
fn cluster_recall(members: &[&AccountOutcome]) -> f64 {
    let flagged = members.iter().filter(|m| m.flagged);
    share(
        largest_cluster(flagged.map(|m| m.cluster.as_deref())),
        members.len(),
    )
}

/// Run the leave-one-family-out evaluation.
pub fn evaluate(
    cfg: &FamilyConfig,
    base: &DetectorSettings,
    distribution_fpr: f64,
) -> Result<LofoReport, GuardError> {
    let corpus = generate(cfg);
    let public = crate::corpus::public_prompts();
    let mut runs = Vec::new();
    for &t in &THRESHOLDS {
        let mut s = base.clone();
        s.flag_threshold = t;
        runs.push(run(&corpus.lines, &s, &public)?);
    }
    let mut folds = Vec::new();
    let mut held: Vec<AccountOutcome> = Vec::new();
    for k in 0..FAMILIES {
        let mut best: Option<(usize, f64, f64)> = None;
        for (i, r) in runs.iter().enumerate() {
            let train: Vec<&AccountOutcome> = r.iter().filter(|a| a.family != k).collect();
            let (fpr, recall, heavy) = fpr_recall(&train);
            if heavy > 0 || fpr > TRAIN_MAX_FPR {
                continue;
            }
            if best.is_none_or(|(_, _, r0)| recall >= r0) {
                best = Some((i, fpr, recall));
            }
        }
        // No candidate meets the constraints: take the strictest one.
        let (i, fpr, recall) = best.unwrap_or_else(|| {
            let last = runs.len() - 1;
            let train: Vec<&AccountOutcome> = runs[last].iter().filter(|a| a.family != k).collect();
            let (f, r, _) = fpr_recall(&train);
            (last, f, r)
        });
        // The benign reference: training benign accounts with a profile.
        let refs: Vec<&AccountOutcome> = runs[i]
            .iter()
            .filter(|a| a.family != k && !a.harvesting && !a.profile.is_empty())
            .collect();
        let ref_profiles: Vec<&[f32]> = refs.iter().map(|a| a.profile.as_slice()).collect();
        let null = family_null(&refs);
        let dist_threshold = threshold_at_fpr(null.clone(), distribution_fpr);
        let estimate = |m: f64| new_family_fpr(&refs, &null, distribution_fpr, m);
        let (margin, margin_fpr) = FAMILY_MARGINS
            .iter()
            .map(|&m| (m, estimate(m)))
            .find(|(_, e)| *e <= distribution_fpr)
            .unwrap_or_else(|| {
                let m = FAMILY_MARGINS[FAMILY_MARGINS.len() - 1];
                (m, estimate(m))
            });
        folds.push(Fold {
            held_out_family: k,
            threshold: THRESHOLDS[i],
            train_benign_fpr: fpr,
            train_harvest_recall: recall,
            distribution_threshold: dist_threshold,
            distribution_new_family_fpr: estimate(1.0),
            distribution_margin: margin,
            distribution_margin_new_family_fpr: margin_fpr,
        });
        held.extend(runs[i].iter().filter(|a| a.family == k).map(|a| {
            let mut a = a.clone();
            a.distribution = nearest(&a.profile, &ref_profiles);
            a.distribution_positive = !a.profile.is_empty() && a.distribution > dist_threshold;
            a.distribution_positive_margin =
                !a.profile.is_empty() && a.distribution > dist_threshold * margin;
            a
        }));
    }
    let mut kinds = Vec::new();
    let mut kinds_caught = 0;
    for (k, list) in &group(&held, |a| label(&a.organization).map(|l| l.kind)) {
        let flagged = list.iter().filter(|a| a.flagged).count();
        let mut caught = 0;
        let mut recall_sum = 0.0;
        for f in 0..FAMILIES {
            let fam: Vec<&AccountOutcome> =
                list.iter().copied().filter(|a| a.family == f).collect();
            if fam.is_empty() {
                continue;
            }
            let share = if *k == FamKind::Hydra {
                let r = cluster_recall(&fam);
                recall_sum += r;
                r
            } else {
                fam.iter().filter(|a| a.flagged).count() as f64 / fam.len() as f64
            };
            caught += u32::from(share >= 0.8);
        }
        if k.harvesting() && caught >= 3 {
            kinds_caught += 1;
        }
        kinds.push(KindFigures {
            kind: k.name().to_owned(),
            harvesting: k.harvesting(),
            accounts: list.len(),
            requests: list.iter().map(|a| a.requests).sum(),
            flagged,
            flag_rate: share(flagged, list.len()),
            families_caught: caught,
            median_requests_until_flagged: median(list.iter().map(|a| a.requests_until_flagged)),
            cluster_recall: (*k == FamKind::Hydra).then(|| recall_sum / f64::from(FAMILIES)),
            distribution_positive: list.iter().filter(|a| a.distribution_positive).count(),
            distribution_positive_margin: list
                .iter()
                .filter(|a| a.distribution_positive_margin)
                .count(),
        });
    }
    let benign: Vec<&AccountOutcome> = held.iter().filter(|a| !a.harvesting).collect();
    let benign_flagged: Vec<String> = benign
        .iter()
        .filter(|a| a.flagged)
        .map(|a| a.organization.clone())
        .collect();
    let blatant = held
        .iter()
        .filter(|a| label(&a.organization).is_some_and(|l| l.kind.blatant()));
    let by_attacker_share = (0..FAMILIES)
        .map(|f| {
            let fam: Vec<&AccountOutcome> = held
                .iter()
                .filter(|a| a.family == f)
                .filter(|a| {
                    label(&a.organization).is_some_and(|l| l.kind == FamKind::HiddenSegment)
                })
                .collect();
            ShareFigures {
                family: f,
                attacker_share: crate::families::attacker_share(f),
                accounts: fam.len(),
                flagged: fam.iter().filter(|a| a.flagged).count(),
                distribution_positive: fam.iter().filter(|a| a.distribution_positive).count(),
                distribution_positive_margin: fam
                    .iter()
                    .filter(|a| a.distribution_positive_margin)
                    .count(),
            }
        })
        .collect();
    Ok(LofoReport {
        by_attacker_share,
        requests: corpus.lines.len() as u64,
        accounts: held.len(),
        benign_accounts: benign.len(),
        heavy_accounts: benign.iter().filter(|a| a.heavy).count(),
        folds,
        benign_fpr: share(benign_flagged.len(), benign.len()),
        heavy_flagged: benign.iter().filter(|a| a.heavy && a.flagged).count(),
        benign_flagged,
        kinds_caught,
        harvesting_kinds: FamKind::ALL.iter().filter(|k| k.harvesting()).count(),
        blatant_median_requests_to_flag: median(blatant.map(|a| a.requests_until_flagged)),
        distribution_fpr_target: distribution_fpr,
        distribution_benign_fpr: share(
            benign.iter().filter(|a| a.distribution_positive).count(),
            benign.len(),
        ),
        distribution_benign_fpr_margin: share(
            benign
                .iter()
                .filter(|a| a.distribution_positive_margin)
                .count(),
            benign.len(),
        ),
        kinds,
        accounts_detail: held,
    })
}

/// Human-readable rendering.
pub fn render(r: &LofoReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} requests, {} accounts ({} benign of which {} heavy); leave-one-family-out over {} families",
        r.requests, r.accounts, r.benign_accounts, r.heavy_accounts, FAMILIES
    );
    for f in &r.folds {
        let _ = writeln!(
            out,
            "fold: family {} held out → threshold {:.2} (training: benign FPR {:.1}%, harvesting flagged {:.1}%), distribution threshold {:.4} (new family, estimated on training: {:.1}%; family margin ×{} → {:.1}%)",
            f.held_out_family,
            f.threshold,
            f.train_benign_fpr * 100.0,
            f.train_harvest_recall * 100.0,
            f.distribution_threshold,
            f.distribution_new_family_fpr * 100.0,
            f.distribution_margin,
            f.distribution_margin_new_family_fpr * 100.0
        );
    }
    let table = Table {
        titles: &[
            "kind (held out)",
            "harv",
            "accounts",
            "requests",
            "flagged",
            "rate",
            "fam≥80%",
            "req→flag",
            "dist+",
            "dist+m",
        ],
        widths: &[21, 4, 8, 8, 7, 6, 8, 8, 6, 6],
    };
    table.write(
        &mut out,
        r.kinds.iter().map(|k| {
            let counts = (k.accounts, k.requests, k.flagged);
            let mut cells = kind_cells(&k.kind, k.harvesting, counts, k.flag_rate);
            cells.push(format!("{}/{FAMILIES}", k.families_caught));
            cells.push(or_dash(k.median_requests_until_flagged));
            cells.push(k.distribution_positive.to_string());
            cells.push(k.distribution_positive_margin.to_string());
            (cells, percent_note("flagged+clustered", k.cluster_recall))
        }),
    );
    let _ = writeln!(
        out,
        "benign flagged: {} of {} ({:.1}%){}; heavy customers flagged: {} of {}",
        r.benign_flagged.len(),
        r.benign_accounts,
        r.benign_fpr * 100.0,
        name_list(&r.benign_flagged, " [", "]"),
        r.heavy_flagged,
        r.heavy_accounts
    );
    let _ = writeln!(
        out,
        "harvesting kinds caught (≥80% in ≥3 of {} held-out families; hydra flagged and clustered): {} of {}",
        FAMILIES, r.kinds_caught, r.harvesting_kinds
    );
    let _ = writeln!(
        out,
        "median requests to flag a blatant harvester (public replay, CoT/rubric, logprobs): {}",
        or_dash(r.blatant_median_requests_to_flag)
    );
    let _ = writeln!(
        out,
        "distribution test: target benign FPR {:.1}%, held-out benign FPR {:.1}% (with the family margin: {:.1}%)",
        r.distribution_fpr_target * 100.0,
        r.distribution_benign_fpr * 100.0,
        r.distribution_benign_fpr_margin * 100.0
    );
    let shares: Vec<String> = r
        .by_attacker_share
        .iter()
        .map(|s| {
            format!(
                "{:.0}% (family {}): flagged {}/{}, dist+ {}/{}, dist+m {}/{}",
                s.attacker_share * 100.0,
                s.family,
                s.flagged,
                s.accounts,
                s.distribution_positive,
                s.accounts,
                s.distribution_positive_margin,
                s.accounts
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "hidden segment by attacker share: {}",
        shares.join("; ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(family: u32) -> AccountOutcome {
        AccountOutcome {
            organization: format!("a{family}"),
            kind: "consumer_chat".into(),
            family,
            harvesting: false,
            heavy: false,
            requests: 100,
            score: 0.0,
            flagged: false,
            requests_until_flagged: None,
            cluster: None,
            segment: None,
            distribution: 0.0,
            distribution_positive: false,
            distribution_positive_margin: false,
            profile: vec![0.0],
        }
    }

    #[test]
    fn new_family_fpr_measures_each_family_against_the_others_threshold() {
        // Families 0 and 1 look alike; one account of family 2 is far from both.
        let refs: Vec<AccountOutcome> = [0, 0, 1, 1, 2, 2].into_iter().map(outcome).collect();
        let refs: Vec<&AccountOutcome> = refs.iter().collect();
        let null = [0.1, 0.2, 0.1, 0.3, 0.1, 2.0];
        // Family 2 against max(0.1, 0.2, 0.1, 0.3): 1 of 2 over; families 0 and 1 against a
        // threshold that includes 2.0: none over. Mean over families: 1/6.
        let e = new_family_fpr(&refs, &null, 0.01, 1.0);
        assert!((e - 1.0 / 6.0).abs() < 1e-12, "{e}");
        // A margin that lifts 0.3 over 2.0 removes it; one that does not, does not.
        assert_eq!(new_family_fpr(&refs, &null, 0.01, 7.0), 0.0);
        assert!((new_family_fpr(&refs, &null, 0.01, 6.0) - 1.0 / 6.0).abs() < 1e-12);
        // One family alone has nothing to be measured against.
        assert_eq!(new_family_fpr(&refs[..2], &null[..2], 0.01, 1.0), 0.0);
    }
}
