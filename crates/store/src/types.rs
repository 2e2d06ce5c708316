//! Rows as the rest of Tollgate sees them. Times are UTC `OffsetDateTime`s (stored as unix microseconds).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Review state of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Active,
    UnderReview,
    Terminated,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::UnderReview => "under_review",
            AccountState::Terminated => "terminated",
        }
    }

    /// A stored state. Fails closed: a state this version does not know is `Terminated` (the
    /// strictest), never `Active`.
    pub fn parse(s: &str) -> AccountState {
        match s {
            "active" => AccountState::Active,
            "under_review" => AccountState::UnderReview,
            _ => AccountState::Terminated,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub state: AccountState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: String,
    pub organization: String,
    pub name: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a key may do: call models (`inference`) or read its organization's usage and invoices
/// (`reader`). A stored role this version does not know is `Disabled`: the key can do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    Inference,
    Reader,
    Disabled,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Inference => "inference",
            KeyRole::Reader => "reader",
            KeyRole::Disabled => "disabled",
        }
    }

    /// A stored role; fails closed (unknown → [`KeyRole::Disabled`]).
    pub fn parse(s: &str) -> KeyRole {
        match s {
            "inference" => KeyRole::Inference,
            "reader" => KeyRole::Reader,
            _ => KeyRole::Disabled,
        }
    }
}

#[cfg(test)]
mod fail_closed {
    use super::*;

    #[test]
    fn unknown_stored_states_are_the_strictest() {
        assert_eq!(AccountState::parse("active"), AccountState::Active);
        assert_eq!(
            AccountState::parse("under_review"),
            AccountState::UnderReview
        );
        assert_eq!(AccountState::parse("Active"), AccountState::Terminated);
        assert_eq!(AccountState::parse(""), AccountState::Terminated);
        assert_eq!(AccountState::parse("suspended"), AccountState::Terminated);
        assert_eq!(KeyRole::parse("reader"), KeyRole::Reader);
        assert_eq!(KeyRole::parse("inference"), KeyRole::Inference);
        assert_eq!(KeyRole::parse("admin"), KeyRole::Disabled);
        assert_eq!(KeyRole::parse(""), KeyRole::Disabled);
        for s in [
            AccountState::Active,
            AccountState::UnderReview,
            AccountState::Terminated,
        ] {
            assert_eq!(AccountState::parse(s.as_str()), s);
        }
    }
}

/// An API key. The secret itself is never stored: only its SHA-256 `hash` and a display `prefix`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub organization: String,
    pub project: Option<String>,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: [u8; 32],
    pub role: KeyRole,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One metered request (or one imported event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub organization: String,
    pub project: Option<String>,
    pub key: Option<String>,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (a part of `input_tokens`).
    #[serde(default)]
    pub cache_write_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub status: u16,
    pub latency_ms: u64,
    pub streamed: bool,
    /// Counts come from the tokenizer rather than the upstream's `usage`.
    pub estimated: bool,
    /// `gateway` or `import`.
    pub source: String,
}

/// Which records a usage query covers. Times are a half-open range `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub organizations: Vec<String>,
    pub project: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Token sums of one model over a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageAggregate {
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

impl UsageAggregate {
    /// Adds `other`'s counts to these (saturating; the model is kept).
    pub fn add_counts(&mut self, other: &UsageAggregate) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cache_write_input_tokens = self
            .cache_write_input_tokens
            .saturating_add(other.cache_write_input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

/// A price catalogue entry (USD per million tokens, exact decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceRow {
    pub model: String,
    pub input_price: String,
    pub cached_input_price: Option<String>,
    pub output_price: String,
    /// USD per million input tokens written to the prompt cache (the input price where unset).
    pub cache_write_price: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
}

/// A contract of a top-level organization (decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractRow {
    pub organization: String,
    pub discount_percent: Option<String>,
    pub monthly_commitment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
}

/// A monthly budget of an organization or one of its projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetRow {
    pub organization: String,
    pub project: Option<String>,
    pub monthly_limit: String,
}

/// One line of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub organization: Option<String>,
    pub reason: Option<String>,
}

/// What a control change touched; instances poll the change feed and reload that row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Organization,
    Project,
    Key,
    Price,
    Contract,
    Budget,
    /// A model owner's key (id: the key's id).
    OwnerKey,
    /// A model owner's report (id: the report's id).
    OwnerReport,
    /// The owner-scoped reviews of an organization (id: the organization).
    OwnerReview,
    /// The exemptions from automatic actions of an organization (id: the organization).
    GuardExemption,
    /// The automatic actions taken on an organization (id: the organization).
    GuardAction,
    /// A kind written by a newer version; instances ignore it.
    Other,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Organization => "organization",
            ChangeKind::Project => "project",
            ChangeKind::Key => "key",
            ChangeKind::Price => "price",
            ChangeKind::Contract => "contract",
            ChangeKind::Budget => "budget",
            ChangeKind::OwnerKey => "owner_key",
            ChangeKind::OwnerReport => "owner_report",
            ChangeKind::OwnerReview => "owner_review",
            ChangeKind::GuardExemption => "guard_exemption",
            ChangeKind::GuardAction => "guard_action",
            ChangeKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> ChangeKind {
        match s {
            "organization" => ChangeKind::Organization,
            "project" => ChangeKind::Project,
            "key" => ChangeKind::Key,
            "price" => ChangeKind::Price,
            "contract" => ChangeKind::Contract,
            "budget" => ChangeKind::Budget,
            "owner_key" => ChangeKind::OwnerKey,
            "owner_report" => ChangeKind::OwnerReport,
            "owner_review" => ChangeKind::OwnerReview,
            "guard_exemption" => ChangeKind::GuardExemption,
            "guard_action" => ChangeKind::GuardAction,
            _ => ChangeKind::Other,
        }
    }
}

/// One entry of the change feed, written in the same transaction as the change itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    /// Id of the changed row (organization, project, key, model or organization of a contract/budget).
    pub id: String,
}

/// All control data of a store, for `tollgate migrate --from … --to …`.
#[derive(Debug, Clone, Default)]
pub struct ControlDump {
    pub organizations: Vec<Organization>,
    pub projects: Vec<Project>,
    pub keys: Vec<ApiKey>,
    pub prices: Vec<PriceRow>,
    pub contracts: Vec<ContractRow>,
    pub budgets: Vec<BudgetRow>,
    pub audit: Vec<AuditEntry>,
    pub values: Vec<(String, String)>,
    pub owner_keys: Vec<OwnerKey>,
    pub owner_reports: Vec<OwnerReport>,
    pub owner_reviews: Vec<OwnerReview>,
    pub guard_exemptions: Vec<GuardExemption>,
    pub guard_actions: Vec<PolicyAction>,
}

// ----- enforcement (guard) state -----

/// A model owner's API key. Only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKey {
    pub id: String,
    pub owner: String,
    pub prefix: String,
    pub hash: [u8; 32],
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A model owner's report of a suspected customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerReport {
    pub id: String,
    pub time: OffsetDateTime,
    pub owner: String,
    pub organization: String,
    pub reason: String,
}

/// State of a review limited to one model owner's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerReviewState {
    UnderReview,
    Terminated,
}

impl OwnerReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerReviewState::UnderReview => "under_review",
            OwnerReviewState::Terminated => "terminated",
        }
    }

    /// Fails closed: a state this version does not know is read as `terminated`, the strictest.
    pub fn parse(s: &str) -> OwnerReviewState {
        match s {
            "under_review" => OwnerReviewState::UnderReview,
            _ => OwnerReviewState::Terminated,
        }
    }
}

/// A review of an organization limited to one model owner's models (at most one per pair).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerReview {
    pub organization: String,
    pub owner: String,
    pub state: OwnerReviewState,
    pub since: OffsetDateTime,
    pub reason: String,
}

/// An organization exempt from automatic review (`owner: None`), or one owner scope of it exempt
/// from automatic actions under that owner's policy: an operator reinstated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardExemption {
    pub organization: String,
    pub owner: Option<String>,
}

/// An automatic action taken on an organization under one enforcement policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAction {
    pub id: String,
    pub organization: String,
    /// The policy that acted: an owner's name, or `[guard]`.
    pub policy: String,
    /// `flag`, `review` (the whole account) or `review_owner_scope` (the owner's models).
    pub action: String,
    pub score: f64,
    pub threshold: f64,
    pub time: OffsetDateTime,
}

pub(crate) fn to_micros(t: OffsetDateTime) -> i64 {
    let micros = t.unix_timestamp_nanos() / 1_000;
    i64::try_from(micros).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
