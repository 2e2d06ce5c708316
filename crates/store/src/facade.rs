//! [`Store`]: one handle over either backend. Each method behaves the same on SQLite and
//! PostgreSQL (the store tests run against both).

use time::OffsetDateTime;

use crate::pg::PgStore;
use crate::store::SqliteStore;
use crate::types::*;
use crate::{StoreError, is_postgres, sqlite_path};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Inner {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

/// Handle to control data and queries; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

macro_rules! dispatch {
    ($self:ident . $m:ident ( $($a:expr),* )) => {
        match &$self.inner {
            Inner::Sqlite(s) => s.$m($($a),*).await,
            Inner::Pg(p) => p.$m($($a),*).await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations.
    pub fn open(path: &str) -> Result<Store, StoreError> {
        Ok(Store {
            inner: Inner::Sqlite(SqliteStore::open(path)?),
        })
    }

    /// Opens `sqlite://PATH` or `postgres://…` (pool of `pool_size` connections) and applies
    /// pending migrations.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Store, StoreError> {
        if is_postgres(url) {
            Ok(Store {
                inner: Inner::Pg(PgStore::open(url, pool_size.max(1)).await?),
            })
        } else {
            Store::open(sqlite_path(url)?)
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Pg(_) => Backend::Postgres,
        }
    }

    pub async fn insert_organization(&self, org: Organization) -> Result<(), StoreError> {
        dispatch!(self.insert_organization(org))
    }
    pub async fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        dispatch!(self.organization(id))
    }
    pub async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        dispatch!(self.organizations())
    }
    /// The organization and all its descendants, by id.
    pub async fn subtree(&self, id: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self.subtree(id))
    }
    pub async fn set_organization_state(
        &self,
        id: &str,
        state: AccountState,
    ) -> Result<bool, StoreError> {
        dispatch!(self.set_organization_state(id, state))
    }
    pub async fn insert_project(&self, p: Project) -> Result<(), StoreError> {
        dispatch!(self.insert_project(p))
    }
    pub async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        dispatch!(self.project(id))
    }
    pub async fn projects(&self, org: Option<&str>) -> Result<Vec<Project>, StoreError> {
        dispatch!(self.projects(org))
    }
    pub async fn insert_key(&self, k: ApiKey) -> Result<(), StoreError> {
        dispatch!(self.insert_key(k))
    }
    /// Keys of a project (or of an organization when `project` is None and `org` set; all when both are None).
    pub async fn keys(
        &self,
        project: Option<&str>,
        org: Option<&str>,
    ) -> Result<Vec<ApiKey>, StoreError> {
        dispatch!(self.keys(project, org))
    }
    pub async fn key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        dispatch!(self.key(id))
    }
    /// Marks a key revoked (idempotent); returns the key, or None when no such key exists.
    pub async fn revoke_key(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        dispatch!(self.revoke_key(id, at))
    }
    /// Every key not revoked, for the in-memory key cache.
    pub async fn active_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        dispatch!(self.active_keys())
    }
    /// Token sums per model over a filter: whole hours from the hourly rollup, partial hours at
    /// the edges of the range from raw records.
    pub async fn usage(&self, filter: UsageFilter) -> Result<Vec<UsageAggregate>, StoreError> {
        dispatch!(self.usage(filter))
    }
    /// Raw records of an organization set in a range, oldest first (for exports and tests).
    pub async fn records(
        &self,
        filter: UsageFilter,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        dispatch!(self.records(filter, limit))
    }
    /// Records in insertion order after the cursor `after` (0 = from the start), and the new cursor.
    pub async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<UsageRecord>, i64), StoreError> {
        dispatch!(self.records_after(after, limit))
    }
    /// Number of records and sums of input and output tokens in the whole ledger.
    pub async fn ledger_totals(&self) -> Result<(u64, u64, u64), StoreError> {
        dispatch!(self.ledger_totals())
    }
    /// Which of these ids are already recorded.
    pub async fn existing_ids(&self, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        dispatch!(self.existing_ids(ids))
    }
    /// Adds a price entry; an entry for the same model and time is replaced.
    pub async fn put_price(&self, p: PriceRow) -> Result<(), StoreError> {
        dispatch!(self.put_price(p))
    }
    pub async fn prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        dispatch!(self.prices())
    }
    pub async fn put_contract(&self, k: ContractRow) -> Result<(), StoreError> {
        dispatch!(self.put_contract(k))
    }
    pub async fn contracts(&self, org: Option<&str>) -> Result<Vec<ContractRow>, StoreError> {
        dispatch!(self.contracts(org))
    }
    pub async fn put_budget(&self, b: BudgetRow) -> Result<(), StoreError> {
        dispatch!(self.put_budget(b))
    }
    pub async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        dispatch!(self.budgets())
    }
    pub async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.append_audit(e))
    }
    pub async fn audit(&self, org: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self.audit(org))
    }
    pub async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self.get_value(key))
    }
    pub async fn set_value(&self, key: &str, value: String) -> Result<(), StoreError> {
        dispatch!(self.set_value(key, value))
    }
    pub async fn values(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self.values())
    }
    /// Deletes a small value (idempotent).
    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self.delete_value(key))
    }

    // ----- enforcement (guard) state; every write adds a change row in its transaction -----

    /// Adds a model owner's key (its hash only).
    pub async fn insert_owner_key(&self, k: OwnerKey) -> Result<(), StoreError> {
        dispatch!(self.insert_owner_key(k))
    }
    /// An owner key by id, revoked or not.
    pub async fn owner_key(&self, id: &str) -> Result<Option<OwnerKey>, StoreError> {
        dispatch!(self.owner_key(id))
    }
    /// Every owner key, revoked ones included (with `revoked_at`).
    pub async fn owner_keys(&self) -> Result<Vec<OwnerKey>, StoreError> {
        dispatch!(self.owner_keys())
    }
    /// Revokes `owner`'s key `id`; false when it has no such key not yet revoked.
    pub async fn revoke_owner_key(
        &self,
        owner: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self.revoke_owner_key(owner, id, at))
    }
    /// Appends an owner's report.
    pub async fn insert_owner_report(&self, r: OwnerReport) -> Result<(), StoreError> {
        dispatch!(self.insert_owner_report(r))
    }
    /// Reports (of one owner, or all), oldest first.
    pub async fn owner_reports(&self, owner: Option<&str>) -> Result<Vec<OwnerReport>, StoreError> {
        dispatch!(self.owner_reports(owner))
    }
    /// Stores an owner-scoped review. With `replace` (an operator's decision) it replaces the
    /// pair's review; without (an automatic review) an existing one is kept. Returns whether
    /// this review is now the stored one.
    pub async fn put_owner_review(
        &self,
        r: OwnerReview,
        replace: bool,
    ) -> Result<bool, StoreError> {
        dispatch!(self.put_owner_review(r, replace))
    }
    /// Deletes the owner-scoped reviews of `org` (of one owner, or all); returns how many.
    pub async fn delete_owner_reviews(
        &self,
        org: &str,
        owner: Option<&str>,
    ) -> Result<usize, StoreError> {
        dispatch!(self.delete_owner_reviews(org, owner))
    }
    /// Owner-scoped reviews (of one organization, or all) by organization and owner.
    pub async fn owner_reviews(&self, org: Option<&str>) -> Result<Vec<OwnerReview>, StoreError> {
        dispatch!(self.owner_reviews(org))
    }
    /// Adds (`exempt`) or removes an exemption from automatic actions.
    pub async fn set_guard_exemption(
        &self,
        e: GuardExemption,
        exempt: bool,
    ) -> Result<(), StoreError> {
        dispatch!(self.set_guard_exemption(e, exempt))
    }
    /// Exemptions (of one organization, or all).
    pub async fn guard_exemptions(
        &self,
        org: Option<&str>,
    ) -> Result<Vec<GuardExemption>, StoreError> {
        dispatch!(self.guard_exemptions(org))
    }
    /// Records an automatic action.
    pub async fn insert_guard_action(&self, a: PolicyAction) -> Result<(), StoreError> {
        dispatch!(self.insert_guard_action(a))
    }
    /// Forgets the automatic actions taken on `org` (a reinstatement); returns how many.
    pub async fn clear_guard_actions(&self, org: &str) -> Result<usize, StoreError> {
        dispatch!(self.clear_guard_actions(org))
    }
    /// Automatic actions (on one organization, or all), in the order they were recorded.
    pub async fn guard_actions(&self, org: Option<&str>) -> Result<Vec<PolicyAction>, StoreError> {
        dispatch!(self.guard_actions(org))
    }
    /// Control changes after `seq`, oldest first (at most `limit`).
    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        dispatch!(self.changes_since(seq, limit))
    }
    /// The newest change's sequence number (0 when none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        dispatch!(self.last_change())
    }
    /// A trivial round trip, for readiness and latency metrics.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping())
    }

    /// Every piece of control data, for copying to another store.
    pub async fn export_control(&self) -> Result<ControlDump, StoreError> {
        Ok(ControlDump {
            organizations: parents_first(self.organizations().await?),
            projects: self.projects(None).await?,
            keys: self.keys(None, None).await?,
            prices: self.prices().await?,
            contracts: self.contracts(None).await?,
            budgets: self.budgets().await?,
            audit: self.audit(None).await?,
            values: self.values().await?,
            owner_keys: self.owner_keys().await?,
            owner_reports: self.owner_reports(None).await?,
            owner_reviews: self.owner_reviews(None).await?,
            guard_exemptions: self.guard_exemptions(None).await?,
            guard_actions: self.guard_actions(None).await?,
        })
    }

    /// Copies control data in; rows that already exist are kept as they are (reruns are safe).
    pub async fn import_control(&self, dump: ControlDump) -> Result<(), StoreError> {
        dispatch!(self.import_control(dump))
    }
}

/// Orders organizations so every parent comes before its children.
fn parents_first(mut orgs: Vec<Organization>) -> Vec<Organization> {
    let mut out: Vec<Organization> = Vec::with_capacity(orgs.len());
    let mut placed = std::collections::HashSet::new();
    while !orgs.is_empty() {
        let before = orgs.len();
        let (ready, rest): (Vec<_>, Vec<_>) = orgs.into_iter().partition(|o| {
            o.parent
                .as_ref()
                .is_none_or(|p| placed.contains(p.as_str()))
        });
        for o in ready {
            placed.insert(o.id.clone());
            out.push(o);
        }
        orgs = rest;
        if orgs.len() == before {
            // A cycle or a missing parent: keep the rest in their order.
            out.append(&mut orgs);
        }
    }
    out
}
