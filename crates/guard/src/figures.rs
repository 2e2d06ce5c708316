//! Figures and table layout shared by the evaluation reports ([`crate::eval`] over the labelled
//! corpus, [`crate::lofo`] over the family corpus).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// `part` over `whole`, the latter taken as at least 1 (so 0 of none is 0).
pub(crate) fn share(part: usize, whole: usize) -> f64 {
    part as f64 / whole.max(1) as f64
}

/// Items grouped by the key `key` gives them (items without one are left out).
pub(crate) fn group<K: Ord, T>(items: &[T], key: impl Fn(&T) -> Option<K>) -> BTreeMap<K, Vec<&T>> {
    let mut groups: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for item in items {
        if let Some(k) = key(item) {
            groups.entry(k).or_default().push(item);
        }
    }
    groups
}

/// The median (the upper one for an even count) of the values present.
pub(crate) fn median(values: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    let mut v: Vec<u64> = values.into_iter().flatten().collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Threshold that keeps the share of benign `scores` above it at or below `fpr`.
pub(crate) fn threshold_at_fpr(mut scores: Vec<f64>, fpr: f64) -> f64 {
    scores.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * scores.len() as f64).floor() as usize;
    scores.get(allowed).copied().unwrap_or(0.0)
}

/// How many of the accounts share the most common cluster (accounts without one count for none).
pub(crate) fn largest_cluster<'a>(clusters: impl IntoIterator<Item = Option<&'a str>>) -> usize {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for c in clusters.into_iter().flatten() {
        *ids.entry(c).or_default() += 1;
    }
    ids.values().copied().max().unwrap_or(0)
}

/// A count, or "-" for none.
pub(crate) fn or_dash(n: Option<u64>) -> String {
    n.map_or("-".into(), |n| n.to_string())
}

/// `names` joined by ", " between `open` and `close`; nothing when there are none.
pub(crate) fn name_list(names: &[String], open: &str, close: &str) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("{open}{}{close}", names.join(", "))
    }
}

/// One per-kind table: column titles and widths (the first column left-aligned, the others
/// right-aligned, one space apart). A row is its cells and a note written after the last one.
pub(crate) struct Table<'a> {
    pub titles: &'a [&'a str],
    pub widths: &'a [usize],
}

impl Table<'_> {
    /// The title row, then one line per row.
    pub fn write(&self, out: &mut String, rows: impl IntoIterator<Item = (Vec<String>, String)>) {
        let titles = self.titles.iter().map(|t| (*t).to_owned()).collect();
        for (cells, note) in std::iter::once((titles, String::new())).chain(rows) {
            for (i, (cell, width)) in cells.iter().zip(self.widths).enumerate() {
                let _ = match i {
                    0 => write!(out, "{cell:<width$}"),
                    _ => write!(out, " {cell:>width$}"),
                };
            }
            let _ = writeln!(out, "{note}");
        }
    }
}

/// The cells both per-kind tables open with: kind, harvesting, accounts, requests, flagged and
/// the flag rate.
pub(crate) fn kind_cells(
    kind: &str,
    harvesting: bool,
    (accounts, requests, flagged): (usize, u64, usize),
    flag_rate: f64,
) -> Vec<String> {
    vec![
        kind.to_owned(),
        if harvesting { "yes" } else { "no" }.to_owned(),
        accounts.to_string(),
        requests.to_string(),
        flagged.to_string(),
        percent(flag_rate),
    ]
}

/// A rate as a whole percentage ("35%").
pub(crate) fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// "  `label` 35%" for a rate, nothing for none.
pub(crate) fn percent_note(label: &str, rate: Option<f64>) -> String {
    rate.map_or(String::new(), |r| format!("  {label} {}", percent(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_pads_like_the_format_strings_it_replaces() {
        let mut out = String::new();
        Table {
            titles: &["kind", "harv", "rate", "n"],
            widths: &[6, 4, 6, 3],
        }
        .write(
            &mut out,
            [(
                vec!["a".into(), "yes".into(), percent(0.354), or_dash(None)],
                percent_note("recall", Some(1.0)),
            )],
        );
        assert_eq!(
            out,
            format!(
                "{:<6} {:>4} {:>6} {:>3}\n{:<6} {:>4} {:>5.0}% {:>3}  recall 100%\n",
                "kind", "harv", "rate", "n", "a", "yes", 35.4, "-"
            )
        );
    }

    #[test]
    fn figures() {
        assert_eq!(share(0, 0), 0.0);
        assert_eq!(share(1, 4), 0.25);
        assert_eq!(median([Some(3), None, Some(1), Some(2), Some(9)]), Some(3));
        assert_eq!(median([None]), None);
        assert_eq!(threshold_at_fpr(vec![0.1, 0.9, 0.5], 0.34), 0.5);
        assert_eq!(largest_cluster([Some("a"), None, Some("b"), Some("a")]), 2);
        assert_eq!(name_list(&[], "[", "]"), "");
        assert_eq!(name_list(&["x".into(), "y".into()], ": ", ""), ": x, y");
    }
}
