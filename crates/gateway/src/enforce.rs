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
//! The rest of the state is data in the store, shared by every instance: owner keys, owner
//! reports, owner-scoped reviews, exemptions and the actions taken are tables, each write with
//! a change-feed row in its transaction. The change-feed poller (`sync`) hands the rows it
//! reloads to the `apply_*` methods, so a key, review or action made on one instance holds on
//! all within `storage.sync_interval_ms`. Reports are read from the store when listed.
//!
//! A request is judged under the policy of its model's owner: the owner's own policy when it
//! has an `[owners.enforcement]` table (its `review` is an owner-scoped review: the customer
//! keeps the other owners' models), else `[guard]` (whose `review` covers the whole account).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderMap;
use time::OffsetDateTime;
use tollgate_config::cidr::Cidr;
use tollgate_config::{Config, EffectivePolicy, GuardAction};
use tollgate_guard::{Detector, Observation, Outcome};
use tollgate_store::{AccountState, AuditEntry, GuardExemption, Store, StoreError, UsageRecord};
pub use tollgate_store::{OwnerKey, OwnerReview, OwnerReviewState as OwnerState, PolicyAction};
use tollgate_wire::{ApiRequest, Endpoint, Restrict};

use crate::error::ApiError;
use crate::limits::Limiter;
use crate::tenancy::{KeyEntry, Tenancy};
use crate::upstream::ModelEntry;

/// kv key of the detector snapshot.
pub const KV_DETECTOR: &str = "guard.detector";

/// Name of the `[guard]` policy in views, records and audit reasons.
pub const GUARD_POLICY: &str = "[guard]";

/// The name of a policy: its owner, or [`GUARD_POLICY`].
pub fn policy_name(p: &EffectivePolicy) -> &str {
    p.owner.as_deref().unwrap_or(GUARD_POLICY)
}

/// Work for the background writer: store I/O decided on the request path.
enum Event {
    Audit(AuditEntry),
    State(String, AccountState),
    /// An automatic owner-scoped review: stored unless the pair already has one.
    OwnerReview(OwnerReview),
    /// An automatic action taken.
    Action(PolicyAction),
    /// Answered once every earlier event is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// State decided on the request path and applied in memory before the writer stores it.
/// Key: `a:{action id}` or `r:{organization}/{owner}`; value: when its write committed (None:
/// not yet). A reload from the store keeps such an entry in memory unless the reload's read
/// began after the commit (so the row, if still stored, is in what it read).
type Pending = Arc<std::sync::Mutex<HashMap<String, Option<Instant>>>>;

fn review_tag(organization: &str, owner: &str) -> String {
    format!("r:{organization}/{owner}")
}

fn action_tag(id: &str) -> String {
    format!("a:{id}")
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
    pub owner_reviews: DashMap<String, Vec<OwnerReview>>,
    /// SHA-256 of an owner key → the key (keys not revoked).
    pub owner_keys: DashMap<[u8; 32], OwnerKey>,
    /// Serialises changes of `handled` and `taken` (flags acted on; reloads from the store).
    actions_lock: std::sync::Mutex<()>,
    pending: Pending,
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
    /// Wakes the background re-clustering (see [`Guard::spawn_reclustering`]).
    recluster_wake: Arc<tokio::sync::Notify>,
    /// Flags and actions decided on the request path (for `/metrics`).
    pub counters: GuardCounters,
}

/// Counts of the guard's decisions on the request path, for `/metrics`.
#[derive(Debug, Default)]
pub struct GuardCounters {
    flag: AtomicU64,
    review: AtomicU64,
    review_owner_scope: AtomicU64,
    throttle: AtomicU64,
    restrict: AtomicU64,
}

impl GuardCounters {
    /// Each action's name and count.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("flag", n(&self.flag)),
            ("review", n(&self.review)),
            ("review_owner_scope", n(&self.review_owner_scope)),
            ("throttle", n(&self.throttle)),
            ("restrict", n(&self.restrict)),
        ]
    }

    fn add(&self, action: &str) {
        let counter = match action {
            "flag" => &self.flag,
            "review" => &self.review,
            "review_owner_scope" => &self.review_owner_scope,
            "throttle" => &self.throttle,
            "restrict" => &self.restrict,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The background re-clustering runs at least this often while new requests arrive, however
/// few (and sooner, every `cluster_interval` requests).
const RECLUSTER_PERIOD: Duration = Duration::from_secs(60);

/// Feeds the detector the request's wire view. A Responses request is read as the chat request
/// it translates to (its `input` items become messages, `instructions` the system prompt), parsed
/// into a view of its own; a body that does not translate is read as it is. Other shapes are read
/// from the view the gateway parsed (a Messages body carries `messages` as chat does).
fn observe_view(detector: &Detector, obs: &Observation<'_>, request: &ApiRequest<'_>) -> Outcome {
    if request.endpoint() == Endpoint::Responses
        && let Some(chat) = translated(request)
        && let Ok(view) = ApiRequest::read(&chat, Endpoint::ChatCompletions)
    {
        return detector.observe_request(obs, &view);
    }
    detector.observe_request(obs, request)
}

/// The chat request a Responses request translates to.
fn translated(request: &ApiRequest<'_>) -> Option<Vec<u8>> {
    let mut object = serde_json::Map::new();
    for (name, raw) in request.fields() {
        object.insert(name.to_owned(), serde_json::from_str(raw.get()).ok()?);
    }
    tollgate_wire::responses::to_chat_request(&serde_json::Value::Object(object), "observed").ok()
}

fn endpoint_of(e: Endpoint) -> tollgate_guard::Endpoint {
    match e {
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
        let failed = |what: &str, e: StoreError| format!("cannot load the guard's {what}: {e}");
        // The actions taken say which policies acted on which flags. A store from before
        // per-policy actions had only the detector's flags, all acted on under [guard]: the
        // migration left a marker, and those flags are recorded as actions once.
        let mut actions = store
            .guard_actions(None)
            .await
            .map_err(|e| failed("actions", e))?;
        let legacy = store
            .get_value(tollgate_store::LEGACY_FLAGS_MARKER)
            .await
            .map_err(|e| failed("actions", e))?;
        if legacy.as_deref() == Some("1") {
            for f in detector.flags() {
                let a = PolicyAction {
                    id: crate::tenancy::new_id("act_"),
                    organization: f.organization,
                    policy: GUARD_POLICY.to_owned(),
                    action: "flag".into(),
                    score: f.score,
                    threshold: settings.flag_threshold,
                    time: f.flagged_at,
                };
                store
                    .insert_guard_action(a.clone())
                    .await
                    .map_err(|e| failed("actions", e))?;
                actions.push(a);
            }
            store
                .delete_value(tollgate_store::LEGACY_FLAGS_MARKER)
                .await
                .map_err(|e| failed("actions", e))?;
        }
        let handled: DashMap<String, Vec<String>> = DashMap::new();
        let taken: DashMap<String, Vec<PolicyAction>> = DashMap::new();
        for a in actions {
            let mut h = handled.entry(a.organization.clone()).or_default();
            if !h.contains(&a.policy) {
                h.push(a.policy.clone());
            }
            drop(h);
            taken.entry(a.organization.clone()).or_default().push(a);
        }
        let exempt = DashMap::new();
        let owner_exempt: DashMap<String, Vec<String>> = DashMap::new();
        for e in store
            .guard_exemptions(None)
            .await
            .map_err(|e| failed("exemptions", e))?
        {
            match e.owner {
                None => {
                    exempt.insert(e.organization, ());
                }
                Some(owner) => owner_exempt.entry(e.organization).or_default().push(owner),
            }
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
        let owner_reviews: DashMap<String, Vec<OwnerReview>> = DashMap::new();
        for r in store
            .owner_reviews(None)
            .await
            .map_err(|e| failed("owner reviews", e))?
        {
            owner_reviews
                .entry(r.organization.clone())
                .or_default()
                .push(r);
        }
        let owner_keys = DashMap::new();
        for k in store
            .owner_keys()
            .await
            .map_err(|e| failed("owner keys", e))?
        {
            if k.revoked_at.is_none() {
                owner_keys.insert(k.hash, k);
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let writer = store.clone();
        let pending: Pending = Arc::default();
        let written = pending.clone();
        // Marks a pending entry committed (or forgets it when its write failed: memory then
        // follows the store at the next reload).
        let settle_pending = move |tag: String, ok: bool| {
            let mut p = written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if ok {
                if let Some(at) = p.get_mut(&tag) {
                    *at = Some(Instant::now());
                }
            } else {
                p.remove(&tag);
            }
        };
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
                    Event::OwnerReview(review) => {
                        let tag = review_tag(&review.organization, &review.owner);
                        let result = writer.put_owner_review(review, false).await;
                        if let Err(error) = &result {
                            tracing::error!(%error, "Guard owner review write failed.");
                        }
                        settle_pending(tag, result.is_ok());
                    }
                    Event::Action(action) => {
                        let tag = action_tag(&action.id);
                        let result = writer.insert_guard_action(action).await;
                        if let Err(error) = &result {
                            tracing::error!(%error, "Guard action write failed.");
                        }
                        settle_pending(tag, result.is_ok());
                    }
                    Event::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        let guard = Arc::new(Guard {
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
            actions_lock: std::sync::Mutex::new(()),
            pending,
            handled,
            taken,
            exempt,
            owner_exempt,
            events: tx,
            recluster_wake: Arc::new(tokio::sync::Notify::new()),
            counters: GuardCounters::default(),
        });
        guard.spawn_reclustering();
        Ok(guard)
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

    /// Records an automatic action in memory (the caller holds `actions_lock`) and has the
    /// writer store it.
    fn record(&self, organization: &str, policy: &str, action: &str, score: f64, threshold: f64) {
        self.counters.add(action);
        let a = PolicyAction {
            id: crate::tenancy::new_id("act_"),
            organization: organization.to_owned(),
            policy: policy.to_owned(),
            action: action.to_owned(),
            score,
            threshold,
            time: OffsetDateTime::now_utc(),
        };
        self.mark_pending(action_tag(&a.id));
        self.taken
            .entry(organization.to_owned())
            .or_default()
            .push(a.clone());
        let _ = self.events.send(Event::Action(a));
    }

    fn mark_pending(&self, tag: String) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tag, None);
    }

    /// A row decided here was read back from the store: nothing to keep for it.
    fn forget_pending(&self, tag: &str) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(tag);
    }

    /// Whether a row decided here must stay in memory although a reload that began at `read_at`
    /// did not return it (its write had not committed before that read). Entries settled before
    /// the read are forgotten.
    fn keep_pending(&self, tag: &str, read_at: Instant) -> bool {
        let mut p = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match p.get(tag) {
            None => false,
            Some(None) => true,
            Some(Some(at)) if *at >= read_at => true,
            Some(Some(_)) => {
                p.remove(tag);
                false
            }
        }
    }

    /// Acts on a flag once per policy: audits it (naming the policy) and, with
    /// `action = "review"`, places the organization under review — the whole account under
    /// `[guard]`, only the owner's models under an owner's own policy — in memory at once, in
    /// the store by the writer. Returns the refusal when this call suspended the request's
    /// access.
    pub fn on_flag(
        &self,
        tenancy: &Tenancy,
        organization: &str,
        score: f64,
        policy: &EffectivePolicy,
    ) -> Option<ApiError> {
        let name = policy_name(policy);
        if policy.action == GuardAction::Record || self.handled(organization, name) {
            return None;
        }
        // Held to the end: the flag and the actions it leads to are recorded as one step.
        let _actions = self
            .actions_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            || !tenancy
                .org(organization)
                .is_some_and(|o| o.state == AccountState::Active)
        {
            return None;
        }
        match &policy.owner {
            None => {
                tenancy.set_state(organization, AccountState::UnderReview);
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
                    let review = OwnerReview {
                        organization: organization.to_owned(),
                        owner: owner.clone(),
                        state: OwnerState::UnderReview,
                        since: OffsetDateTime::now_utc(),
                        reason: reason.clone(),
                    };
                    self.mark_pending(review_tag(organization, owner));
                    list.push(review.clone());
                    let _ = self.events.send(Event::OwnerReview(review));
                }
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
        {
            let _actions = self
                .actions_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.handled.remove(organization);
            self.taken.remove(organization);
        }
        self.throttles.remove(organization);
        self.detector.clear_flag(organization);
    }

    // ----- state reloaded from the store (the change feed) -----

    /// An owner key as stored now (`None`: gone); a revoked key stops working.
    pub fn apply_owner_key(&self, id: &str, key: Option<OwnerKey>) {
        self.owner_keys.retain(|_, k| k.id != id);
        if let Some(k) = key.filter(|k| k.revoked_at.is_none()) {
            self.owner_keys.insert(k.hash, k);
        }
    }

    /// The owner-scoped reviews of `organization` as read from the store at `read_at`. An
    /// automatic review decided here whose write had not committed by then stays.
    pub fn apply_owner_reviews(
        &self,
        organization: &str,
        rows: Vec<OwnerReview>,
        read_at: Instant,
    ) {
        let mut list = self
            .owner_reviews
            .entry(organization.to_owned())
            .or_default();
        let kept: Vec<OwnerReview> = list
            .iter()
            .filter(|r| {
                let tag = review_tag(organization, &r.owner);
                if rows.iter().any(|s| s.owner == r.owner) {
                    self.forget_pending(&tag);
                    return false;
                }
                self.keep_pending(&tag, read_at)
            })
            .cloned()
            .collect();
        *list = rows;
        list.extend(kept);
        let empty = list.is_empty();
        drop(list);
        if empty {
            self.owner_reviews
                .remove_if(organization, |_, l| l.is_empty());
        }
    }

    /// The exemptions of `organization` as stored now. An exemption that appears (an operator
    /// reinstated the account or a scope, perhaps on another instance) ends this instance's
    /// throttles there, and for the whole account its detector flag, as on the instance that
    /// decided.
    pub fn apply_exemptions(&self, organization: &str, rows: Vec<GuardExemption>) {
        let account = rows.iter().any(|e| e.owner.is_none());
        let owners: Vec<String> = rows.into_iter().filter_map(|e| e.owner).collect();
        if account {
            if self.exempt.insert(organization.to_owned(), ()).is_none() {
                self.throttles.remove(organization);
                self.detector.clear_flag(organization);
            }
        } else {
            self.exempt.remove(organization);
        }
        let before = self
            .owner_exempt
            .get(organization)
            .map(|l| l.clone())
            .unwrap_or_default();
        if let Some(mut t) = self.throttles.get_mut(organization) {
            for o in owners.iter().filter(|o| !before.contains(o)) {
                t.remove(o.as_str());
            }
        }
        if owners.is_empty() {
            self.owner_exempt.remove(organization);
        } else {
            self.owner_exempt.insert(organization.to_owned(), owners);
        }
    }

    /// The automatic actions taken on `organization` as read from the store at `read_at`
    /// (empty after a reinstatement); actions recorded here whose write had not committed by
    /// then stay. The policies that acted follow.
    pub fn apply_actions(&self, organization: &str, rows: Vec<PolicyAction>, read_at: Instant) {
        let _actions = self
            .actions_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept: Vec<PolicyAction> = self
            .taken
            .get(organization)
            .map(|l| {
                l.iter()
                    .filter(|a| {
                        let tag = action_tag(&a.id);
                        if rows.iter().any(|r| r.id == a.id) {
                            self.forget_pending(&tag);
                            return false;
                        }
                        self.keep_pending(&tag, read_at)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut all = rows;
        all.extend(kept);
        if all.is_empty() {
            self.taken.remove(organization);
            self.handled.remove(organization);
            return;
        }
        let mut policies: Vec<String> = Vec::new();
        for a in &all {
            if !policies.contains(&a.policy) {
                policies.push(a.policy.clone());
            }
        }
        self.handled.insert(organization.to_owned(), policies);
        self.taken.insert(organization.to_owned(), all);
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

    /// The owner-scoped review state of an organization (or an ancestor) for one owner.
    pub fn owner_state(
        &self,
        tenancy: &Tenancy,
        organization: &str,
        owner: &str,
    ) -> Option<OwnerState> {
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
            cur = tenancy
                .org(&id)
                .and_then(|o| o.parent.map(|p| p.to_string()));
        }
        strictest
    }

    /// Writes the detector snapshot to the store (the rest of the guard's state is written
    /// as it changes).
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

    /// Starts the detector's re-clustering, off the request path (ends when the guard is
    /// dropped; none with `cluster_interval = 0`, where clusters are recomputed only when flags
    /// are listed). The request path only checks two counters and wakes this task once
    /// `cluster_interval` requests arrived since the last run; the task also runs every
    /// [`RECLUSTER_PERIOD`] when any request arrived. A run goes to the blocking pool, one at a
    /// time (wake-ups during a run coalesce into one, nothing queues), and applies its result to
    /// every account at once.
    fn spawn_reclustering(self: &Arc<Self>) {
        if !self.enabled || self.detector.settings().cluster_interval == 0 {
            return;
        }
        let weak: Weak<Guard> = Arc::downgrade(self);
        let wake = self.recluster_wake.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(RECLUSTER_PERIOD) => {}
                }
                let Some(g) = weak.upgrade() else { break };
                if g.detector.pending_observations() == 0 {
                    continue;
                }
                if let Err(error) =
                    tokio::task::spawn_blocking(move || g.detector.recluster()).await
                {
                    tracing::error!(%error, "Detector re-clustering failed.");
                }
            }
        });
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
pub fn check_access(
    guard: &Guard,
    tenancy: &Tenancy,
    key: &KeyEntry,
    model: &ModelEntry,
) -> Result<(), ApiError> {
    let Some(owner) = model.owner.as_deref() else {
        return Ok(());
    };
    match guard.owner_state(tenancy, &key.organization, owner) {
        None => Ok(()),
        Some(state) => Err(owner_refusal(owner, state)),
    }
}

/// Feeds the detector and applies the action of the policy in force on the model (its owner's
/// own policy, else `[guard]`): refuse, throttle, or restrict the request (returned, applied by
/// the upstream rewrite).
#[allow(clippy::too_many_arguments)]
pub fn observe(
    guard: &Guard,
    tenancy: &Tenancy,
    key: &KeyEntry,
    model: &ModelEntry,
    request: &ApiRequest<'_>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Restrict, ApiError> {
    if !guard.enabled {
        return Ok(Restrict::NONE);
    }
    let obs = Observation {
        time: OffsetDateTime::now_utc(),
        organization: &key.organization,
        key: &key.id,
        client_ip: Some(guard.client_ip(peer.ip().to_canonical(), headers)),
        endpoint: endpoint_of(request.endpoint()),
        // Not read: the detector reads `request`.
        body: b"",
        model_owner: model.owner.as_deref(),
    };
    let outcome = observe_view(&guard.detector, &obs, request);
    if guard.detector.recluster_due() {
        guard.recluster_wake.notify_one();
    }
    let policy = guard.policy_for(model.owner.as_deref());
    if policy.action == GuardAction::Record
        || !guard.flagged_under(policy, &key.organization, outcome.score, outcome.flagged)
    {
        return Ok(Restrict::NONE);
    }
    if let Some(refusal) = guard.on_flag(tenancy, &key.organization, outcome.score, policy) {
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
            guard.counters.add("throttle");
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
    let restrict = Restrict {
        strip_logprobs: policy.strip_logprobs,
        max_n: policy.max_n,
    };
    if restrict.strip_logprobs || restrict.max_n.is_some() {
        guard.counters.add("restrict");
    }
    Ok(restrict)
}

/// Called with every usage record before it is written.
pub fn completed(guard: &Guard, record: &UsageRecord) {
    if !guard.enabled {
        return;
    }
    if let Some(key) = &record.key {
        guard.detector.record_completion(
            &record.organization,
            key,
            record.time,
            record.output_tokens,
            record.status == 499,
        );
    }
}

#[cfg(test)]
mod observed {
    use super::*;

    #[test]
    fn a_responses_body_is_observed_with_its_input_text_as_chat_messages() {
        let body = br#"{"model":"m","instructions":"be brief","input":[{"role":"user","content":"explain photosynthesis step by step"}]}"#;
        let view = ApiRequest::parse(body, Endpoint::Responses, false).unwrap();
        let chat = translated(&view).unwrap();
        let chat = ApiRequest::read(&chat, Endpoint::ChatCompletions).unwrap();
        let (f, texts) = tollgate_guard::features::extract_request(&chat, 4000, false);
        let texts = texts.unwrap();
        assert_eq!(texts.user_text(), "explain photosynthesis step by step");
        assert_eq!(texts.system_text(), "be brief");
        assert!(f.parsed && f.reasoning);
        // A body that does not translate is read as it is.
        let body = br#"{"model":"m","previous_response_id":"r","input":"x"}"#;
        let view = ApiRequest::parse(body, Endpoint::Responses, false).unwrap();
        assert!(translated(&view).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str, policy: &str) -> PolicyAction {
        PolicyAction {
            id: id.into(),
            organization: "org".into(),
            policy: policy.into(),
            action: "flag".into(),
            score: 0.9,
            threshold: 0.8,
            time: OffsetDateTime::now_utc(),
        }
    }

    /// A reload keeps a local row whose write had not committed before the reload's read (the
    /// read could not see it), drops it once a later read did not return it (another instance
    /// cleared it), and the policies that acted follow the rows.
    #[tokio::test]
    async fn reloads_keep_uncommitted_local_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("t.db").to_str().unwrap()).unwrap();
        let config = Config::from_toml("").unwrap();
        let guard = Guard::load(&config, &store).await.unwrap();

        // Decided here, not yet written: a reload that does not return it keeps it.
        let local = action("act_local", "openai");
        guard.mark_pending(action_tag(&local.id));
        guard.taken.insert("org".into(), vec![local.clone()]);
        let before_commit = Instant::now();
        let other = action("act_other", GUARD_POLICY);
        guard.apply_actions("org", vec![other.clone()], before_commit);
        assert!(guard.handled("org", "openai") && guard.handled("org", GUARD_POLICY));
        assert_eq!(guard.taken.get("org").map(|l| l.len()), Some(2));

        // Written after that read began: still kept by a reload whose read began earlier.
        guard
            .pending
            .lock()
            .unwrap()
            .insert(action_tag(&local.id), Some(Instant::now()));
        guard.apply_actions("org", vec![other.clone()], before_commit);
        assert!(guard.handled("org", "openai"));

        // A read that began after the commit and did not return it: gone (cleared elsewhere).
        guard.apply_actions("org", vec![], Instant::now());
        assert!(!guard.handled("org", "openai") && !guard.handled("org", GUARD_POLICY));
        assert!(guard.taken.get("org").is_none());
        assert!(guard.pending.lock().unwrap().is_empty());

        // Owner reviews: the same rule, and a stored review of the pair replaces the local one.
        let review = |state| OwnerReview {
            organization: "org".into(),
            owner: "openai".into(),
            state,
            since: OffsetDateTime::now_utc(),
            reason: "r".into(),
        };
        guard.mark_pending(review_tag("org", "openai"));
        guard
            .owner_reviews
            .insert("org".into(), vec![review(OwnerState::UnderReview)]);
        guard.apply_owner_reviews("org", vec![], Instant::now());
        assert_eq!(guard.owner_reviews.get("org").map(|l| l.len()), Some(1));
        guard.apply_owner_reviews("org", vec![review(OwnerState::Terminated)], Instant::now());
        let states: Vec<OwnerState> = guard
            .owner_reviews
            .get("org")
            .map(|l| l.iter().map(|r| r.state).collect())
            .unwrap_or_default();
        assert_eq!(states, vec![OwnerState::Terminated]);
        assert!(guard.pending.lock().unwrap().is_empty());
        guard.apply_owner_reviews("org", vec![], Instant::now());
        assert!(guard.owner_reviews.get("org").is_none());

        // Exemptions: the account's appears and goes; an owner scope's list follows the rows.
        guard.apply_exemptions(
            "org",
            vec![
                GuardExemption {
                    organization: "org".into(),
                    owner: None,
                },
                GuardExemption {
                    organization: "org".into(),
                    owner: Some("openai".into()),
                },
            ],
        );
        assert!(guard.exempt.contains_key("org"));
        assert_eq!(
            guard.owner_exempt.get("org").map(|l| l.clone()),
            Some(vec!["openai".to_owned()])
        );
        guard.apply_exemptions("org", vec![]);
        assert!(!guard.exempt.contains_key("org") && guard.owner_exempt.get("org").is_none());
    }
}
