//! Usage-policy enforcement on the request path: the distillation detector's hooks.
//!
//! The pipeline calls [`check_access`] once the model is known (account and owner-scoped reviews),
//! [`observe`] before limits (signals, and the configured action: record, flag, throttle, strip,
//! review), and [`completed`] with every usage record.
//!
//! [`Guard`] holds the detector and everything enforcement keeps in memory: the enforcement
//! policies (`[guard]`, and each owner's `[owners.enforcement]` over it), trusted proxy blocks, the
//! owners' policy texts, owner-scoped reviews, owner keys (hashed), owner reports, the automatic
//! actions taken per organization and policy, and the organizations (or owner scopes) exempt
//! from automatic review after an operator reinstated them. The request path never awaits and
//! never touches the store: state changes it decides (an automatic review, audit entries) are
//! applied in memory at once and written by a background task fed through a channel. The
//! detector state is snapshotted to the store's kv table periodically and at shutdown, and
//! restored at start.
//!
//! A request is judged under the policy of its model's owner: the owner's own policy when it
//! has an `[owners.enforcement]` table (its `review` is an owner-scoped review: the customer
//! keeps the other owners' models), else `[guard]` (whose `review` covers the whole account).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_config::cidr::Cidr;
use tollgate_config::{Config, EffectivePolicy, GuardAction};
use tollgate_guard::{Detector, Observation};
use tollgate_store::{AccountState, AuditEntry, Store, UsageRecord};
use tollgate_wire::{Endpoint, Restrict};

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
/// kv key of the owner scopes exempt from automatic actions (an operator reinstated them).
pub const KV_OWNER_EXEMPT: &str = "guard.owner_exempt";
/// kv key of the automatic actions taken per organization and policy.
pub const KV_ACTIONS: &str = "guard.actions";

/// Name of the `[guard]` policy in views, records and audit reasons.
pub const GUARD_POLICY: &str = "[guard]";

/// The name of a policy: its owner, or [`GUARD_POLICY`].
pub fn policy_name(p: &EffectivePolicy) -> &str {
    p.owner.as_deref().unwrap_or(GUARD_POLICY)
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

/// An automatic action taken on an organization under one policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyAction {
    pub organization: String,
    /// The policy that acted: an owner's name, or `[guard]`.
    pub policy: String,
    /// `flag`, `review` (the whole account) or `review_owner_scope` (the owner's models).
    pub action: String,
    pub score: f64,
    pub threshold: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
}

/// An owner scope of an organization exempt from automatic actions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OwnerExempt {
    pub organization: String,
    pub owner: String,
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
    /// Write the owner-scoped reviews as they are in memory when written.
    OwnerReviews,
    /// Answered once every earlier event is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The detector and enforcement state shared by the request path and the admin API.
pub struct Guard {
    pub detector: Detector,
    pub enabled: bool,
    /// The `[guard]` policy: models without an owner and owners without their own policy.
    pub default_policy: EffectivePolicy,
    /// Owner name → its own policy (`[owners.enforcement]` over `[guard]`).
    pub owner_policies: HashMap<String, EffectivePolicy>,
    trusted: Vec<Cidr>,
    /// Organization → policy name → its throttle.
    throttles: DashMap<String, HashMap<String, Option<Limiter>>>,
    snapshot_interval: Duration,
    /// Owner name → policy text.
    pub policies: BTreeMap<String, String>,
    /// Organization → its owner-scoped reviews.
    pub owner_reviews: Arc<DashMap<String, Vec<OwnerReview>>>,
    /// SHA-256 of an owner key → the key.
    pub owner_keys: DashMap<[u8; 32], OwnerKey>,
    pub reports: std::sync::Mutex<Vec<OwnerReport>>,
    /// Organization → the policies whose flag was acted on (audited, reviewed).
    handled: DashMap<String, Vec<String>>,
    /// Organization → the automatic actions taken on it, per policy (since its last
    /// reinstatement).
    pub taken: DashMap<String, Vec<PolicyAction>>,
    /// Organizations an operator reinstated: no automatic review until the next manual review.
    pub exempt: DashMap<String, ()>,
    /// Organization → owners whose scope an operator reinstated: no automatic action under those
    /// owners' policies until the next manual review of that scope.
    pub owner_exempt: DashMap<String, Vec<String>>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn endpoint_of(e: Endpoint) -> tollgate_guard::Endpoint {
    match e {
        // Messages bodies carry `messages` as chat does; a Responses body is observed as chat
        // (its `input` items are not read for text).
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => {
            tollgate_guard::Endpoint::Chat
        }
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
            Some(snap) => match Detector::restore_migrating(settings.clone(), snap) {
                Ok((d, migration)) => {
                    if let Some(m) = migration {
                        tracing::warn!(
                            from_version = m.from_version,
                            to_version = m.to_version,
                            accounts = m.accounts,
                            templates_frozen = m.templates_frozen,
                            "{m}"
                        );
                    }
                    d
                }
                Err(error) => {
                    tracing::warn!(%error, "Detector snapshot not restored; starting fresh.");
                    Detector::new(settings.clone()).map_err(|e| format!("guard.detector: {e}"))?
                }
            },
            None => Detector::new(settings.clone()).map_err(|e| format!("guard.detector: {e}"))?,
        };
        // The actions taken (saved with each detector snapshot) say which policies acted on
        // which flags; a store from before per-policy actions has only the detector's flags,
        // all acted on under [guard].
        let handled: DashMap<String, Vec<String>> = DashMap::new();
        let taken: DashMap<String, Vec<PolicyAction>> = DashMap::new();
        let actions = kv_json::<Vec<PolicyAction>>(store, KV_ACTIONS).await;
        if actions.is_none() {
            for f in detector.flags() {
                handled.insert(f.organization, vec![GUARD_POLICY.to_owned()]);
            }
        }
        for a in actions.unwrap_or_default() {
            let mut h = handled.entry(a.organization.clone()).or_default();
            if !h.contains(&a.policy) {
                h.push(a.policy.clone());
            }
            drop(h);
            taken.entry(a.organization.clone()).or_default().push(a);
        }
        let owner_exempt: DashMap<String, Vec<String>> = DashMap::new();
        for e in kv_json::<Vec<OwnerExempt>>(store, KV_OWNER_EXEMPT)
            .await
            .unwrap_or_default()
        {
            owner_exempt
                .entry(e.organization)
                .or_default()
                .push(e.owner);
        }
        let default_policy = config.default_policy();
        let owner_policies: HashMap<String, EffectivePolicy> = config
            .owners
            .iter()
            .filter(|o| o.enforcement.is_some())
            .map(|o| (o.name.clone(), config.policy_for(Some(&o.name))))
            .collect();
        for p in std::iter::once(&default_policy).chain(owner_policies.values()) {
            tracing::info!(
                policy = policy_name(p),
                action = p.action.as_str(),
                flag_threshold = p.threshold(settings.flag_threshold),
                throttle_rpm = ?p.throttle_rpm,
                strip_logprobs = p.strip_logprobs,
                max_n = ?p.max_n,
                "Enforcement policy."
            );
        }
        let owner_reviews: Arc<DashMap<String, Vec<OwnerReview>>> = Arc::default();
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
        let reviews = owner_reviews.clone();
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
                    Event::OwnerReviews => {
                        let text = match serde_json::to_string(&sorted_reviews(&reviews)) {
                            Ok(t) => t,
                            Err(error) => {
                                tracing::error!(%error, "Cannot encode owner reviews.");
                                continue;
                            }
                        };
                        if let Err(error) = writer.set_value(KV_OWNER_REVIEWS, text).await {
                            tracing::error!(%error, "Guard owner review write failed.");
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
            default_policy,
            owner_policies,
            trusted,
            throttles: DashMap::new(),
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
            taken,
            exempt,
            owner_exempt,
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

    /// The policy in force on the models of `owner` (`None`: a model without an owner).
    pub fn policy_for(&self, owner: Option<&str>) -> &EffectivePolicy {
        match owner {
            Some(o) if !self.owner_policies.is_empty() => {
                self.owner_policies.get(o).unwrap_or(&self.default_policy)
            }
            _ => &self.default_policy,
        }
    }

    /// Every policy: `[guard]` first, then the owners' own policies by name.
    pub fn all_policies(&self) -> Vec<&EffectivePolicy> {
        let mut owners: Vec<&EffectivePolicy> = self.owner_policies.values().collect();
        owners.sort_by(|a, b| a.owner.cmp(&b.owner));
        std::iter::once(&self.default_policy)
            .chain(owners)
            .collect()
    }

    /// The score at or above which `policy` counts an organization as flagged.
    pub fn threshold(&self, policy: &EffectivePolicy) -> f64 {
        policy.threshold(self.detector.settings().flag_threshold)
    }

    /// Whether a flag of `organization` was acted on under the policy named `policy`.
    pub fn handled(&self, organization: &str, policy: &str) -> bool {
        self.handled
            .get(organization)
            .is_some_and(|h| h.iter().any(|p| p == policy))
    }

    /// Whether `organization` counts as flagged under `policy`, given its current score and the
    /// detector's flag: the detector's flag, or — with the owner's own `flag_threshold` — a
    /// score at or above it once the detector's `min_requests` are reached (or the detector
    /// flagged it); flags acted on stay until a reinstatement.
    pub fn flagged_under(
        &self,
        policy: &EffectivePolicy,
        organization: &str,
        score: f64,
        detector_flag: bool,
    ) -> bool {
        let Some(t) = policy.flag_threshold else {
            return detector_flag;
        };
        if self.handled(organization, policy_name(policy)) {
            return true;
        }
        score >= t
            && (detector_flag
                || self
                    .detector
                    .assessment(organization)
                    .is_some_and(|a| a.requests >= self.detector.settings().min_requests))
    }

    /// Whether automatic actions under `policy` are off for `organization` (an operator
    /// reinstated the account, or this owner's scope of it).
    pub fn is_exempt(&self, organization: &str, policy: &EffectivePolicy) -> bool {
        self.exempt.contains_key(organization)
            || policy.owner.as_deref().is_some_and(|owner| {
                self.owner_exempt
                    .get(organization)
                    .is_some_and(|l| l.iter().any(|o| o == owner))
            })
    }

    fn record(&self, organization: &str, policy: &str, action: &str, score: f64, threshold: f64) {
        self.taken
            .entry(organization.to_owned())
            .or_default()
            .push(PolicyAction {
                organization: organization.to_owned(),
                policy: policy.to_owned(),
                action: action.to_owned(),
                score,
                threshold,
                time: OffsetDateTime::now_utc(),
            });
    }

    /// Acts on a flag once per policy: audits it (naming the policy) and, with
    /// `action = "review"`, places the organization under review — the whole account under
    /// `[guard]`, only the owner's models under an owner's own policy — in memory at once, in
    /// the store by the writer. Returns the refusal when this call suspended the request's
    /// access.
    pub fn on_flag(
        &self,
        app: &App,
        organization: &str,
        score: f64,
        policy: &EffectivePolicy,
    ) -> Option<ApiError> {
        let name = policy_name(policy);
        if policy.action == GuardAction::Record || self.handled(organization, name) {
            return None;
        }
        {
            let mut h = self.handled.entry(organization.to_owned()).or_default();
            if h.iter().any(|p| p == name) {
                return None;
            }
            h.push(name.to_owned());
        }
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
        let threshold = self.threshold(policy);
        let label = match &policy.owner {
            None => format!("{GUARD_POLICY} policy"),
            Some(owner) => format!("[{owner}] policy of {owner}"),
        };
        self.audit(
            "guard",
            "flag",
            organization,
            format!("{label}: score {score:.2} ≥ {threshold:.2}: {summary}"),
        );
        self.record(organization, name, "flag", score, threshold);
        if policy.action != GuardAction::Review
            || self.is_exempt(organization, policy)
            || !app
                .tenancy
                .org(organization)
                .is_some_and(|o| o.state == AccountState::Active)
        {
            return None;
        }
        match &policy.owner {
            None => {
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
                    format!(
                        "automatic review of the whole account under the {label}: flagged with score {score:.2}"
                    ),
                );
                self.record(organization, name, "review", score, threshold);
                Some(ApiError::forbidden(
                    "account_under_review",
                    "This account is under review for a possible violation of the usage policies and is suspended pending investigation.",
                ))
            }
            Some(owner) => {
                let terms = self
                    .policies
                    .get(owner)
                    .map(|t| format!(" (\"{t}\")"))
                    .unwrap_or_default();
                let reason = format!(
                    "automatic review of the models of {owner} under its policy{terms}: flagged with score {score:.2} ≥ {threshold:.2}"
                );
                {
                    let mut list = self
                        .owner_reviews
                        .entry(organization.to_owned())
                        .or_default();
                    if list.iter().any(|r| &r.owner == owner) {
                        return None;
                    }
                    list.push(OwnerReview {
                        organization: organization.to_owned(),
                        owner: owner.clone(),
                        state: OwnerState::UnderReview,
                        since: OffsetDateTime::now_utc(),
                        reason: reason.clone(),
                    });
                }
                let _ = self.events.send(Event::OwnerReviews);
                self.audit(
                    "guard",
                    "review_owner_scope",
                    organization,
                    format!("[{owner}] {reason}"),
                );
                self.record(organization, name, "review_owner_scope", score, threshold);
                Some(owner_refusal(owner, OwnerState::UnderReview))
            }
        }
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
        self.taken.remove(organization);
        self.throttles.remove(organization);
        self.detector.clear_flag(organization);
    }

    /// An operator reinstated one owner's scope of an organization: no automatic action under
    /// that owner's policy until the next manual review of the scope.
    pub fn exempt_owner_scope(&self, organization: &str, owner: &str) {
        let mut list = self
            .owner_exempt
            .entry(organization.to_owned())
            .or_default();
        if !list.iter().any(|o| o == owner) {
            list.push(owner.to_owned());
        }
        drop(list);
        if let Some(mut t) = self.throttles.get_mut(organization) {
            t.remove(owner);
        }
    }

    /// An operator reviewed or terminated one owner's scope: automatic actions apply again.
    pub fn unexempt_owner_scope(&self, organization: &str, owner: &str) {
        if let Some(mut list) = self.owner_exempt.get_mut(organization) {
            list.retain(|o| o != owner);
        }
        self.owner_exempt
            .remove_if(organization, |_, l| l.is_empty());
    }

    /// Every owner-scope exemption, for persistence.
    pub fn all_owner_exempt(&self) -> Vec<OwnerExempt> {
        let mut v: Vec<OwnerExempt> = self
            .owner_exempt
            .iter()
            .flat_map(|e| {
                let org = e.key().clone();
                e.value()
                    .iter()
                    .map(|owner| OwnerExempt {
                        organization: org.clone(),
                        owner: owner.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| {
            (a.organization.as_str(), a.owner.as_str())
                .cmp(&(b.organization.as_str(), b.owner.as_str()))
        });
        v
    }

    /// Every automatic action taken since the organizations' last reinstatement, for persistence.
    pub fn all_taken(&self) -> Vec<PolicyAction> {
        let mut v: Vec<PolicyAction> = self.taken.iter().flat_map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| (a.organization.as_str(), a.time).cmp(&(b.organization.as_str(), b.time)));
        v
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
        sorted_reviews(&self.owner_reviews)
    }

    /// Writes the detector snapshot and the automatic actions taken to the store.
    pub async fn persist(self: &Arc<Self>, store: &Store) {
        match serde_json::to_string(&self.all_taken()) {
            Ok(text) => {
                if let Err(error) = store.set_value(KV_ACTIONS, text).await {
                    tracing::error!(%error, "Guard actions write failed.");
                }
            }
            Err(error) => tracing::error!(%error, "Cannot encode guard actions."),
        }
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

fn sorted_reviews(map: &DashMap<String, Vec<OwnerReview>>) -> Vec<OwnerReview> {
    let mut v: Vec<OwnerReview> = map.iter().flat_map(|e| e.value().clone()).collect();
    v.sort_by(|a, b| {
        (a.organization.as_str(), a.owner.as_str())
            .cmp(&(b.organization.as_str(), b.owner.as_str()))
    });
    v
}

/// The 403 of a request to the models of `owner` while that scope is under review or terminated.
fn owner_refusal(owner: &str, state: OwnerState) -> ApiError {
    match state {
        OwnerState::UnderReview => ApiError::forbidden(
            "account_under_review",
            format!(
                "This account is under review for a possible violation of the usage policies of {owner}; its models are suspended pending investigation."
            ),
        ),
        OwnerState::Terminated => ApiError::forbidden(
            "account_terminated",
            format!(
                "This account's access to the models of {owner} has been terminated for violating their usage policies."
            ),
        ),
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
        Some(state) => Err(owner_refusal(owner, state)),
    }
}

/// Feeds the detector and applies the action of the policy in force on the model (its owner's
/// own policy, else `[guard]`): refuse, throttle, or restrict the request (returned, applied by
/// the upstream rewrite).
#[allow(clippy::too_many_arguments)]
pub fn observe(
    app: &App,
    key: &KeyEntry,
    model: &ModelEntry,
    endpoint: Endpoint,
    body: &[u8],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Restrict, ApiError> {
    let guard = &app.guard;
    if !guard.enabled {
        return Ok(Restrict::NONE);
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
    let policy = guard.policy_for(model.owner.as_deref());
    if policy.action == GuardAction::Record
        || !guard.flagged_under(policy, &key.organization, outcome.score, outcome.flagged)
    {
        return Ok(Restrict::NONE);
    }
    if let Some(refusal) = guard.on_flag(app, &key.organization, outcome.score, policy) {
        return Err(refusal);
    }
    if guard.is_exempt(&key.organization, policy) {
        return Ok(Restrict::NONE);
    }
    if let Some(rpm) = policy.throttle_rpm {
        let mut throttles = guard
            .throttles
            .entry(key.organization.to_string())
            .or_default();
        let name = policy_name(policy);
        if !throttles.contains_key(name) {
            throttles.insert(name.to_owned(), Limiter::new(Some(rpm), None));
        }
        if let Some(Err(e)) = throttles
            .get(name)
            .and_then(|l| l.as_ref())
            .map(|l| l.reserve(Instant::now(), 0))
        {
            let secs = e.retry_after.as_secs() + u64::from(e.retry_after.subsec_nanos() > 0);
            let scope = match &policy.owner {
                Some(owner) => format!(" for the models of {owner}"),
                None => String::new(),
            };
            return Err(ApiError::rate_limited(
                format!(
                    "Rate limit reached for requests per minute on this organization{scope}: limit {rpm}. Please try again in {}.",
                    crate::limits::format_reset(e.retry_after)
                ),
                secs,
            ));
        }
    }
    Ok(Restrict {
        strip_logprobs: policy.strip_logprobs,
        max_n: policy.max_n,
    })
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
