//! Usage-policy enforcement on the request path: the distillation detector's hooks.
//!
//! The pipeline calls [`check_access`] once the model is known (account and owner-scoped reviews),
//! [`observe`] before limits (signals, and the configured action: record, flag, throttle, strip,
//! review), and [`completed`] with every usage record.
//!
//! [`Guard`] holds the detector and everything enforcement keeps in memory: the action settings,
//! trusted proxy blocks, the owners' policy texts, owner-scoped reviews, owner keys (hashed),
//! owner reports, and the organizations exempt from automatic review after an operator reinstated
//! them. The request path never awaits and never touches the store: state changes it decides
//! (an automatic review, audit entries) are applied in memory at once and written by a background
//! task fed through a channel. The detector state is snapshotted to the store's kv table
//! periodically and at shutdown, and restored at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_config::cidr::Cidr;
use tollgate_config::{Config, GuardAction};
use tollgate_guard::{Detector, Observation};
use tollgate_store::{AccountState, AuditEntry, Store, UsageRecord};
use tollgate_wire::Endpoint;

use crate::app::App;
use crate::error::ApiError;
use crate::limits::Limiter;
use crate::tenancy::KeyEntry;
use crate::upstream::ModelEntry;

/// kv key of the detector snapshot.
pub const KV_DETECTOR: &str = "guard.detector";
/// kv key of the owner-scoped reviews.
pub const KV_OWNER_REVIEWS: &str = "guard.owner_reviews";
/// kv key of the owner keys (hashes only).
pub const KV_OWNER_KEYS: &str = "guard.owner_keys";
/// kv key of owner reports.
pub const KV_REPORTS: &str = "guard.reports";
/// kv key of the organizations exempt from automatic review.
pub const KV_EXEMPT: &str = "guard.exempt";

/// What enforcement decided for one request.
pub enum Verdict {
    /// Go on with the request as it is.
    Pass,
    /// Go on with this body instead (e.g. logprobs stripped, `n` capped).
    Rewrite(Bytes),
}

/// A review limited to one model owner's models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OwnerReview {
    pub organization: String,
    pub owner: String,
    pub state: OwnerState,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub reason: String,
}

/// State of an owner-scoped review.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OwnerState {
    UnderReview,
    Terminated,
}

impl OwnerState {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerState::UnderReview => "under_review",
            OwnerState::Terminated => "terminated",
        }
    }
}

/// A model owner's API key (only its SHA-256 is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerKey {
    pub id: String,
    pub owner: String,
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A model owner's report of a suspected customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerReport {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub owner: String,
    pub organization: String,
    pub reason: String,
}

/// Work for the background writer: store I/O decided on the request path.
enum Event {
    Audit(AuditEntry),
    State(String, AccountState),
    /// Answered once every earlier event is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The detector and enforcement state shared by the request path and the admin API.
pub struct Guard {
    pub detector: Detector,
    pub enabled: bool,
    pub action: GuardAction,
    trusted: Vec<Cidr>,
    throttle_rpm: Option<u64>,
    throttles: DashMap<String, Option<Limiter>>,
    strip_logprobs: bool,
    max_n: Option<u64>,
    snapshot_interval: Duration,
    /// Owner name → policy text.
    pub policies: BTreeMap<String, String>,
    /// Organization → its owner-scoped reviews.
    pub owner_reviews: DashMap<String, Vec<OwnerReview>>,
    /// SHA-256 of an owner key → the key.
    pub owner_keys: DashMap<[u8; 32], OwnerKey>,
    pub reports: std::sync::Mutex<Vec<OwnerReport>>,
    /// Organizations whose flag was acted on (audited, reviewed).
    handled: DashMap<String, ()>,
    /// Organizations an operator reinstated: no automatic review until the next manual review.
    pub exempt: DashMap<String, ()>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn endpoint_of(e: Endpoint) -> tollgate_guard::Endpoint {
    match e {
        Endpoint::ChatCompletions => tollgate_guard::Endpoint::Chat,
        Endpoint::Completions => tollgate_guard::Endpoint::Completions,
        Endpoint::Embeddings => tollgate_guard::Endpoint::Embeddings,
    }
}

async fn kv_json<T: serde::de::DeserializeOwned>(store: &Store, key: &str) -> Option<T> {
    match store.get_value(key).await {
        Ok(Some(text)) => match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(error) => {
                tracing::warn!(%error, key, "Ignoring an unreadable guard state entry.");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, key, "Cannot read guard state.");
            None
        }
    }
}

impl Guard {
    /// Builds the guard from the configuration and the state persisted in the store, and
    /// starts its background writer.
    pub async fn load(config: &Config, store: &Store) -> Result<Arc<Guard>, String> {
        let g = &config.guard;
        let trusted = g
            .trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("guard.trusted_proxies: {e}"))?;
        let settings = g.detector.clone();
        let detector = match kv_json::<serde_json::Value>(store, KV_DETECTOR).await {
            Some(snap) => match Detector::restore(settings.clone(), snap) {
                Ok(d) => d,
                Err(error) => {
                    tracing::warn!(%error, "Detector snapshot not restored; starting fresh.");
                    Detector::new(settings).map_err(|e| format!("guard.detector: {e}"))?
                }
            },
            None => Detector::new(settings).map_err(|e| format!("guard.detector: {e}"))?,
        };
        let handled = DashMap::new();
        for f in detector.flags() {
            handled.insert(f.organization, ());
        }
        let owner_reviews: DashMap<String, Vec<OwnerReview>> = DashMap::new();
        for r in kv_json::<Vec<OwnerReview>>(store, KV_OWNER_REVIEWS)
            .await
            .unwrap_or_default()
        {
            owner_reviews
                .entry(r.organization.clone())
                .or_default()
                .push(r);
        }
        let owner_keys = DashMap::new();
        for k in kv_json::<Vec<OwnerKey>>(store, KV_OWNER_KEYS)
            .await
            .unwrap_or_default()
        {
            let mut hash = [0u8; 32];
            let ok = k.hash.len() == 64
                && (0..32).all(|i| {
                    u8::from_str_radix(&k.hash[2 * i..2 * i + 2], 16)
                        .map(|b| hash[i] = b)
                        .is_ok()
                });
            if ok {
                owner_keys.insert(hash, k);
            }
        }
        let exempt = DashMap::new();
        for o in kv_json::<Vec<String>>(store, KV_EXEMPT)
            .await
            .unwrap_or_default()
        {
            exempt.insert(o, ());
        }
        let reports = kv_json::<Vec<OwnerReport>>(store, KV_REPORTS)
            .await
            .unwrap_or_default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Audit(entry) => {
                        if let Err(error) = writer.append_audit(entry).await {
                            tracing::error!(%error, "Guard audit write failed.");
                        }
                    }
                    Event::State(org, state) => {
                        if let Err(error) = writer.set_organization_state(&org, state).await {
                            tracing::error!(%error, organization = %org, "Guard state write failed.");
                        }
                    }
                    Event::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Ok(Arc::new(Guard {
            detector,
            enabled: g.enabled,
            action: g.action,
            trusted,
            throttle_rpm: g.throttle_rpm,
            throttles: DashMap::new(),
            strip_logprobs: g.strip_logprobs,
            max_n: g.max_n,
            snapshot_interval: Duration::from_secs(g.snapshot_interval_secs),
            policies: config
                .owners
                .iter()
                .filter_map(|o| o.policy.clone().map(|p| (o.name.clone(), p)))
                .collect(),
            owner_reviews,
            owner_keys,
            reports: std::sync::Mutex::new(reports),
            handled,
            exempt,
            events: tx,
        }))
    }

    /// The client address: the socket peer, or — when the peer is a trusted proxy — the nearest
    /// untrusted address of `X-Forwarded-For` (read right to left, skipping trusted proxies).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let mut ip = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(s) = value.to_str() else { return ip };
            for part in s.rsplit(',') {
                let Ok(hop) = part.trim().parse::<IpAddr>() else {
                    return ip;
                };
                ip = hop;
                if !trusted(hop) {
                    return hop;
                }
            }
        }
        ip
    }

    fn audit(&self, actor: &str, action: &str, organization: &str, reason: String) {
        let _ = self.events.send(Event::Audit(AuditEntry {
            time: OffsetDateTime::now_utc(),
            actor: actor.into(),
            action: action.into(),
            organization: Some(organization.to_owned()),
            reason: Some(reason),
        }));
    }

    /// Acts on a flag once: audits it and, with `action = "review"`, places the organization
    /// under review (in memory at once, in the store by the writer). Returns whether the
    /// organization is now suspended by this call.
    pub fn on_flag(&self, app: &App, organization: &str, score: f64) -> bool {
        if self.action == GuardAction::Record || self.handled.contains_key(organization) {
            return false;
        }
        self.handled.insert(organization.to_owned(), ());
        let summary = self
            .detector
            .assessment(organization)
            .map(|a| {
                a.signals
                    .iter()
                    .take(3)
                    .map(|s| s.explanation.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let threshold = self.detector.settings().flag_threshold;
        self.audit(
            "guard",
            "flag",
            organization,
            format!("score {score:.2} ≥ {threshold:.2}: {summary}"),
        );
        let exempt = self.exempt.contains_key(organization);
        if self.action == GuardAction::Review
            && !exempt
            && app
                .tenancy
                .org(organization)
                .is_some_and(|o| o.state == AccountState::Active)
        {
            app.tenancy
                .set_state(organization, AccountState::UnderReview);
            let _ = self.events.send(Event::State(
                organization.to_owned(),
                AccountState::UnderReview,
            ));
            self.audit(
                "guard",
                "review",
                organization,
                format!("automatic review: flagged with score {score:.2}"),
            );
            return true;
        }
        false
    }

    /// Waits until every state change and audit entry decided on the request path so far is
    /// written, so an operator's decision is never overwritten by an older automatic one.
    pub async fn settle(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.events.send(Event::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Forgets that a flag was acted on (after a reinstatement), so a new flag is acted on again.
    pub fn reset_flag(&self, organization: &str) {
        self.handled.remove(organization);
        self.throttles.remove(organization);
        self.detector.clear_flag(organization);
    }

    /// The owner-scoped review state of an organization (or an ancestor) for one owner.
    pub fn owner_state(&self, app: &App, organization: &str, owner: &str) -> Option<OwnerState> {
        if self.owner_reviews.is_empty() {
            return None;
        }
        let mut strictest = None;
        let mut cur = Some(organization.to_owned());
        for _ in 0..64 {
            let Some(id) = cur else { break };
            if let Some(list) = self.owner_reviews.get(&id) {
                for r in list.iter().filter(|r| r.owner == owner) {
                    match r.state {
                        OwnerState::Terminated => return Some(OwnerState::Terminated),
                        OwnerState::UnderReview => strictest = Some(OwnerState::UnderReview),
                    }
                }
            }
            cur = app
                .tenancy
                .org(&id)
                .and_then(|o| o.parent.map(|p| p.to_string()));
        }
        strictest
    }

    /// Every owner-scoped review, for persistence.
    pub fn all_owner_reviews(&self) -> Vec<OwnerReview> {
        let mut v: Vec<OwnerReview> = self
            .owner_reviews
            .iter()
            .flat_map(|e| e.value().clone())
            .collect();
        v.sort_by(|a, b| {
            (a.organization.as_str(), a.owner.as_str())
                .cmp(&(b.organization.as_str(), b.owner.as_str()))
        });
        v
    }

    /// Writes the detector snapshot to the store.
    pub async fn persist(self: &Arc<Self>, store: &Store) {
        let g = self.clone();
        let text =
            match tokio::task::spawn_blocking(move || g.detector.snapshot().to_string()).await {
                Ok(t) => t,
                Err(error) => {
                    tracing::error!(%error, "Detector snapshot failed.");
                    return;
                }
            };
        if let Err(error) = store.set_value(KV_DETECTOR, text).await {
            tracing::error!(%error, "Detector snapshot write failed.");
        }
    }

    /// Starts the periodic snapshot task (ends when the guard is dropped).
    pub fn spawn_snapshots(self: &Arc<Self>, store: Store) {
        if self.snapshot_interval.is_zero() {
            return;
        }
        let weak: Weak<Guard> = Arc::downgrade(self);
        let every = self.snapshot_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(g) = weak.upgrade() else { break };
                g.persist(&store).await;
            }
        });
    }
}

/// Refuses requests of organizations (or one owner's models) under review or terminated.
/// Account-wide states are checked in `authenticate`; this checks owner-scoped reviews.
pub fn check_access(app: &App, key: &KeyEntry, model: &ModelEntry) -> Result<(), ApiError> {
    let Some(owner) = model.owner.as_deref() else {
        return Ok(());
    };
    match app.guard.owner_state(app, &key.organization, owner) {
        None => Ok(()),
        Some(OwnerState::UnderReview) => Err(ApiError::forbidden(
            "account_under_review",
            format!(
                "This account is under review for a possible violation of the usage policies of {owner}; its models are suspended pending investigation."
            ),
        )),
        Some(OwnerState::Terminated) => Err(ApiError::forbidden(
            "account_terminated",
            format!(
                "This account's access to the models of {owner} has been terminated for violating their usage policies."
            ),
        )),
    }
}

/// Feeds the detector and applies the configured action.
pub fn observe(
    app: &App,
    key: &KeyEntry,
    model: &ModelEntry,
    endpoint: Endpoint,
    body: &Bytes,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Verdict, ApiError> {
    let guard = &app.guard;
    if !guard.enabled {
        return Ok(Verdict::Pass);
    }
    let outcome = guard.detector.observe(&Observation {
        time: OffsetDateTime::now_utc(),
        organization: &key.organization,
        key: &key.id,
        client_ip: Some(guard.client_ip(peer.ip().to_canonical(), headers)),
        endpoint: endpoint_of(endpoint),
        body,
        model_owner: model.owner.as_deref(),
    });
    if !outcome.flagged || guard.action == GuardAction::Record {
        return Ok(Verdict::Pass);
    }
    if guard.on_flag(app, &key.organization, outcome.score) {
        return Err(ApiError::forbidden(
            "account_under_review",
            "This account is under review for a possible violation of the usage policies and is suspended pending investigation.",
        ));
    }
    if guard.exempt.contains_key(&*key.organization) {
        return Ok(Verdict::Pass);
    }
    if let Some(rpm) = guard.throttle_rpm {
        let limiter = guard
            .throttles
            .entry(key.organization.to_string())
            .or_insert_with(|| Limiter::new(Some(rpm), None));
        if let Some(Err(e)) = limiter.as_ref().map(|l| l.reserve(Instant::now(), 0)) {
            let secs = e.retry_after.as_secs() + u64::from(e.retry_after.subsec_nanos() > 0);
            return Err(ApiError::rate_limited(
                format!(
                    "Rate limit reached for requests per minute on this organization: limit {rpm}. Please try again in {}.",
                    crate::limits::format_reset(e.retry_after)
                ),
                secs,
            ));
        }
    }
    if (guard.strip_logprobs || guard.max_n.is_some())
        && let Some(b) = restrict(body, guard.strip_logprobs, guard.max_n)
    {
        return Ok(Verdict::Rewrite(b));
    }
    Ok(Verdict::Pass)
}

/// The body without `logprobs`/`top_logprobs` (when `strip`) and with `n`/`best_of` capped;
/// `None` when nothing changes.
pub fn restrict(body: &[u8], strip: bool, max_n: Option<u64>) -> Option<Bytes> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    if strip {
        for f in ["logprobs", "top_logprobs"] {
            changed |= map.remove(f).is_some();
        }
    }
    if let Some(cap) = max_n {
        for f in ["n", "best_of"] {
            if let Some(v) = map.get_mut(f)
                && v.as_u64().is_some_and(|n| n > cap)
            {
                *v = serde_json::Value::from(cap);
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&map).ok().map(Bytes::from)
}

/// Called with every usage record before it is written.
pub fn completed(app: &App, record: &UsageRecord) {
    if !app.guard.enabled {
        return;
    }
    if let Some(key) = &record.key {
        app.guard.detector.record_completion(
            &record.organization,
            key,
            record.time,
            record.output_tokens,
            record.status == 499,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_strips_logprobs_and_caps_n() {
        let body = br#"{"model":"m","logprobs":true,"top_logprobs":5,"n":8,"messages":[]}"#;
        let out = restrict(body, true, Some(1)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("logprobs").is_none() && v.get("top_logprobs").is_none());
        assert_eq!(v["n"], 1);
        assert_eq!(v["model"], "m");
        assert!(restrict(br#"{"model":"m","n":1}"#, true, Some(1)).is_none());
    }
}
