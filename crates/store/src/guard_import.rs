//! The one-time import of the guard state that older versions kept as JSON blobs in the kv
//! table (owner keys, reports, owner-scoped reviews, exemptions, actions taken) into its tables.
//! Both backends run it in the migration that creates those tables, in the same transaction,
//! then delete the blobs. A blob that cannot be read fails the migration (and the start) with
//! its key named: dropping a review or an exemption silently would fail open.

use std::collections::HashMap;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::StoreError;
use crate::types::{
    GuardExemption, OwnerKey, OwnerReport, OwnerReview, OwnerReviewState, PolicyAction,
};

/// kv keys of the blobs imported (and then deleted).
pub(crate) const LEGACY_KEYS: &[&str] = &[
    "guard.owner_keys",
    "guard.reports",
    "guard.owner_reviews",
    "guard.exempt",
    "guard.owner_exempt",
    "guard.actions",
];

/// kv key set when a detector snapshot exists but no actions were saved (a store from before
/// per-policy actions): the gateway then counts the detector's flags as acted on under `[guard]`.
pub const LEGACY_FLAGS_MARKER: &str = "guard.actions_from_flags";

#[derive(Deserialize)]
struct LegacyKey {
    id: String,
    owner: String,
    prefix: String,
    hash: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

#[derive(Deserialize)]
struct LegacyReport {
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    owner: String,
    organization: String,
    reason: String,
}

#[derive(Deserialize)]
struct LegacyReview {
    organization: String,
    owner: String,
    state: String,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    reason: String,
}

#[derive(Deserialize)]
struct LegacyOwnerExempt {
    organization: String,
    owner: String,
}

#[derive(Deserialize)]
struct LegacyAction {
    organization: String,
    policy: String,
    action: String,
    score: f64,
    threshold: f64,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
}

/// The rows read from the legacy blobs.
#[derive(Debug, Default)]
pub(crate) struct LegacyGuardState {
    pub owner_keys: Vec<OwnerKey>,
    pub reports: Vec<OwnerReport>,
    pub reviews: Vec<OwnerReview>,
    pub exemptions: Vec<GuardExemption>,
    pub actions: Vec<PolicyAction>,
    /// Whether to set [`LEGACY_FLAGS_MARKER`].
    pub flags_marker: bool,
}

fn parse<T: serde::de::DeserializeOwned>(
    values: &HashMap<String, String>,
    key: &str,
) -> Result<Vec<T>, StoreError> {
    match values.get(key) {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Conflict(format!(
                "cannot import the guard state kept under kv '{key}': {e}"
            ))
        }),
    }
}

/// 64 hex digits to 32 bytes.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Reads the legacy blobs among `values` (kv key → text).
pub(crate) fn read(values: &HashMap<String, String>) -> Result<LegacyGuardState, StoreError> {
    let mut s = LegacyGuardState::default();
    for k in parse::<LegacyKey>(values, "guard.owner_keys")? {
        // A hash that is not 64 hex digits never matched a key: the key stays unusable.
        if let Some(hash) = unhex32(&k.hash) {
            s.owner_keys.push(OwnerKey {
                id: k.id,
                owner: k.owner,
                prefix: k.prefix,
                hash,
                created_at: k.created_at,
                revoked_at: None,
            });
        }
    }
    for (i, r) in parse::<LegacyReport>(values, "guard.reports")?
        .into_iter()
        .enumerate()
    {
        s.reports.push(OwnerReport {
            id: format!("orep_imported_{i}"),
            time: r.time,
            owner: r.owner,
            organization: r.organization,
            reason: r.reason,
        });
    }
    for r in parse::<LegacyReview>(values, "guard.owner_reviews")? {
        s.reviews.push(OwnerReview {
            organization: r.organization,
            owner: r.owner,
            state: OwnerReviewState::parse(&r.state),
            since: r.since,
            reason: r.reason,
        });
    }
    for org in parse::<String>(values, "guard.exempt")? {
        s.exemptions.push(GuardExemption {
            organization: org,
            owner: None,
        });
    }
    for e in parse::<LegacyOwnerExempt>(values, "guard.owner_exempt")? {
        s.exemptions.push(GuardExemption {
            organization: e.organization,
            owner: Some(e.owner),
        });
    }
    for (i, a) in parse::<LegacyAction>(values, "guard.actions")?
        .into_iter()
        .enumerate()
    {
        s.actions.push(PolicyAction {
            id: format!("act_imported_{i}"),
            organization: a.organization,
            policy: a.policy,
            action: a.action,
            score: a.score,
            threshold: a.threshold,
            time: a.time,
        });
    }
    s.flags_marker = values.contains_key("guard.detector") && !values.contains_key("guard.actions");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_review_states_import_as_terminated_and_bad_blobs_fail() {
        let mut v = HashMap::new();
        v.insert(
            "guard.owner_reviews".to_owned(),
            r#"[{"organization":"o","owner":"w","state":"paused","since":"2026-01-01T00:00:00Z","reason":"r"}]"#
                .to_owned(),
        );
        let s = read(&v).unwrap_or_default();
        assert_eq!(s.reviews[0].state, OwnerReviewState::Terminated);
        v.insert("guard.exempt".to_owned(), "{not json".to_owned());
        let err = read(&v).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("guard.exempt"), "{err}");
        assert_eq!(unhex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(unhex32("abc"), None);
    }
}
