//! Control data and queries on a shared connection, run off the async runtime.

use std::sync::{Arc, Mutex};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use time::OffsetDateTime;

use crate::types::*;
use crate::{StoreError, open_connection};

const HOUR_US: i64 = 3_600_000_000;

/// SQLite handle to control data; cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let mut conn = open_connection(path, true)?;
        crate::schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Task("store connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `write` in a transaction that also records a change of `kind` to `id` (for the
    /// change feed), and commits.
    async fn write_changed<T, F>(
        &self,
        kind: ChangeKind,
        id: String,
        write: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |c| {
            let tx = c.transaction()?;
            let out = write(&tx)?;
            change(&tx, kind, &id)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// The rows `sql` selects with `params`, each read by `row`.
    async fn rows<T, P>(
        &self,
        sql: &'static str,
        params: P,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        P: rusqlite::Params + Send + 'static,
    {
        self.call(move |c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt
                .query_map(params, row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    // ----- organizations -----

    pub async fn insert_organization(&self, org: Organization) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::Organization, org.id.clone(), move |tx| {
            tx.execute(
                "INSERT INTO organizations (id, name, parent_id, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org.id, org.name, org.parent, org.state.as_str(), to_micros(org.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, name, parent_id, state, created_at FROM organizations WHERE id = ?1",
                [id],
                org_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        self.rows(
            "SELECT id, name, parent_id, state, created_at FROM organizations ORDER BY created_at, id",
            [],
            org_row,
        )
        .await
    }

    /// The organization and all its descendants, by id.
    pub async fn subtree(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        self.rows(
            "WITH RECURSIVE t(id) AS (SELECT id FROM organizations WHERE id = ?1 UNION SELECT o.id FROM organizations o JOIN t ON o.parent_id = t.id) SELECT id FROM t",
            [id],
            |r| r.get::<_, String>(0),
        )
        .await
    }

    pub async fn set_organization_state(
        &self,
        id: &str,
        state: AccountState,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write_changed(ChangeKind::Organization, id.clone(), move |tx| {
            let n = tx.execute(
                "UPDATE organizations SET state = ?2 WHERE id = ?1",
                params![id, state.as_str()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    // ----- projects -----

    pub async fn insert_project(&self, p: Project) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::Project, p.id.clone(), move |tx| {
            tx.execute(
                "INSERT INTO projects (id, org_id, name, rpm, tpm, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.id, p.organization, p.name, opt_i64(p.rpm), opt_i64(p.tpm), to_micros(p.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, org_id, name, rpm, tpm, created_at FROM projects WHERE id = ?1",
                [id],
                project_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn projects(&self, org: Option<&str>) -> Result<Vec<Project>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT id, org_id, name, rpm, tpm, created_at FROM projects WHERE ?1 IS NULL OR org_id = ?1 ORDER BY created_at, id",
            [org],
            project_row,
        )
        .await
    }

    // ----- keys -----

    pub async fn insert_key(&self, k: ApiKey) -> Result<(), StoreError> {
        self.call(move |c| {
            let models = k
                .models
                .as_ref()
                .map(|m| serde_json::to_string(m).unwrap_or_default());
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO api_keys (id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    k.id,
                    k.organization,
                    k.project,
                    k.name,
                    k.prefix,
                    &k.hash[..],
                    k.role.as_str(),
                    models,
                    opt_i64(k.rpm),
                    opt_i64(k.tpm),
                    k.expires_at.map(to_micros),
                    k.revoked_at.map(to_micros),
                    to_micros(k.created_at)
                ],
            )?;
            change(&tx, ChangeKind::Key, &k.id)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Keys of a project (or of an organization's reader keys when `project` is None and `org` set).
    pub async fn keys(
        &self,
        project: Option<&str>,
        org: Option<&str>,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let project = project.map(str::to_owned);
        let org = org.map(str::to_owned);
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{KEY_SELECT} WHERE (?1 IS NULL OR project_id = ?1) AND (?2 IS NULL OR org_id = ?2) ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map(params![project, org], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(
                c.query_row(&format!("{KEY_SELECT} WHERE id = ?1"), [id], key_row)
                    .optional()?,
            )
        })
        .await
    }

    /// Marks a key revoked (idempotent); returns the key, or None when no such key exists.
    pub async fn revoke_key(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2), updated_seq = (SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM api_keys) WHERE id = ?1",
                params![id, to_micros(at)],
            )?;
            change(&tx, ChangeKind::Key, &id)?;
            let key = tx
                .query_row(&format!("{KEY_SELECT} WHERE id = ?1"), [&id], key_row)
                .optional()?;
            tx.commit()?;
            Ok(key)
        })
        .await
    }

    /// Every key not revoked, for the in-memory key cache.
    pub async fn active_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(&format!("{KEY_SELECT} WHERE revoked_at IS NULL"))?;
            let rows = stmt
                .query_map([], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    // ----- usage -----

    /// Token sums per model over a filter: whole hours from the hourly rollup, partial hours at
    /// the edges of the range from raw records.
    pub async fn usage(&self, filter: UsageFilter) -> Result<Vec<UsageAggregate>, StoreError> {
        self.call(move |c| usage_query(c, &filter)).await
    }

    /// Raw records of an organization set in a range, oldest first (for exports and tests).
    pub async fn records(
        &self,
        filter: UsageFilter,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.call(move |c| {
            let (cond, mut args) = raw_conditions(&filter, filter.from, filter.to);
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            let sql = format!(
                "SELECT id, time, org_id, project_id, key_id, model, provider, upstream_model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, status, latency_ms, streamed, estimated, source, cache_write_input_tokens FROM usage WHERE {cond} ORDER BY time, seq LIMIT ?"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args), record_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Number of records and sums of tokens in the whole ledger (for checks and migrations).
    pub async fn ledger_totals(&self) -> Result<(u64, u64, u64), StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens >> 32), 0), COALESCE(SUM(input_tokens & 4294967295), 0), COALESCE(SUM(output_tokens >> 32), 0), COALESCE(SUM(output_tokens & 4294967295), 0) FROM usage",
                [],
                |r| Ok((u64_of(r, 0)?, halves_of(r, 1)?, halves_of(r, 3)?)),
            )?)
        })
        .await
    }

    /// Which of these ids are already recorded.
    pub async fn existing_ids(&self, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM usage WHERE id = ?1")?;
            let mut found = Vec::new();
            for id in ids {
                if stmt.exists([&id])? {
                    found.push(id);
                }
            }
            Ok(found)
        })
        .await
    }

    // ----- prices, contracts, budgets -----

    /// Adds a price entry; an entry for the same model and time is replaced.
    pub async fn put_price(&self, p: PriceRow) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::Price, p.model.clone(), move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO prices (model, effective_from, input_price, cached_input_price, output_price, cache_write_price) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.model, to_micros(p.effective_from), p.input_price, p.cached_input_price, p.output_price, p.cache_write_price],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        self.rows(
            "SELECT model, input_price, cached_input_price, output_price, effective_from, cache_write_price FROM prices ORDER BY model, effective_from",
            [],
            |r| {
            Ok(PriceRow {
                model: r.get(0)?,
                input_price: r.get(1)?,
                cached_input_price: r.get(2)?,
                output_price: r.get(3)?,
                effective_from: from_micros(r.get(4)?),
                cache_write_price: r.get(5)?,
            })
        },
        )
        .await
    }

    pub async fn put_contract(&self, k: ContractRow) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::Contract, k.organization.clone(), move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO contracts (org_id, effective_from, discount_percent, monthly_commitment) VALUES (?1, ?2, ?3, ?4)",
                params![k.organization, to_micros(k.effective_from), k.discount_percent, k.monthly_commitment],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn contracts(&self, org: Option<&str>) -> Result<Vec<ContractRow>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT org_id, discount_percent, monthly_commitment, effective_from FROM contracts WHERE ?1 IS NULL OR org_id = ?1 ORDER BY org_id, effective_from",
            [org],
            |r| {
            Ok(ContractRow {
                organization: r.get(0)?,
                discount_percent: r.get(1)?,
                monthly_commitment: r.get(2)?,
                effective_from: from_micros(r.get(3)?),
            })
        },
        )
        .await
    }

    pub async fn put_budget(&self, b: BudgetRow) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::Budget, b.organization.clone(), move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO budgets (org_id, project_id, monthly_limit) VALUES (?1, ?2, ?3)",
                params![b.organization, b.project.unwrap_or_default(), b.monthly_limit],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        self.rows(
            "SELECT org_id, project_id, monthly_limit FROM budgets ORDER BY org_id",
            [],
            |r| {
                let project: String = r.get(1)?;
                Ok(BudgetRow {
                    organization: r.get(0)?,
                    project: (!project.is_empty()).then_some(project),
                    monthly_limit: r.get(2)?,
                })
            },
        )
        .await
    }

    // ----- audit log and small values -----

    pub async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit_log (time, actor, action, org_id, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![to_micros(e.time), e.actor, e.action, e.organization, e.reason],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn audit(&self, org: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT time, actor, action, org_id, reason FROM audit_log WHERE ?1 IS NULL OR org_id = ?1 ORDER BY seq",
            [org],
            |r| {
            Ok(AuditEntry {
                time: from_micros(r.get(0)?),
                actor: r.get(1)?,
                action: r.get(2)?,
                organization: r.get(3)?,
                reason: r.get(4)?,
            })
        },
        )
        .await
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            Ok(
                c.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    pub async fn set_value(&self, key: &str, value: String) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }

    // ----- enforcement (guard) state -----

    pub async fn insert_owner_key(&self, k: OwnerKey) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::OwnerKey, k.id.clone(), move |tx| {
            insert_owner_key_row(tx, &k, false)?;
            Ok(())
        })
        .await
    }

    pub async fn owner_key(&self, id: &str) -> Result<Option<OwnerKey>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                &format!("{OWNER_KEY_SELECT} WHERE id = ?1"),
                [id],
                owner_key_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn owner_keys(&self) -> Result<Vec<OwnerKey>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(&format!("{OWNER_KEY_SELECT} ORDER BY created_at, id"))?;
            let rows = stmt
                .query_map([], owner_key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn revoke_owner_key(
        &self,
        owner: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE owner_keys SET revoked_at = ?3 WHERE id = ?1 AND owner = ?2 AND revoked_at IS NULL",
                params![id, owner, to_micros(at)],
            )?;
            if n == 1 {
                change(&tx, ChangeKind::OwnerKey, &id)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn insert_owner_report(&self, r: OwnerReport) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::OwnerReport, r.id.clone(), move |tx| {
            insert_report_row(tx, &r, false)?;
            Ok(())
        })
        .await
    }

    pub async fn owner_reports(&self, owner: Option<&str>) -> Result<Vec<OwnerReport>, StoreError> {
        let owner = owner.map(str::to_owned);
        self.rows(
            "SELECT id, time, owner, org_id, reason FROM owner_reports WHERE ?1 IS NULL OR owner = ?1 ORDER BY seq",
            [owner],
            |r| {
            Ok(OwnerReport {
                id: r.get(0)?,
                time: from_micros(r.get(1)?),
                owner: r.get(2)?,
                organization: r.get(3)?,
                reason: r.get(4)?,
            })
        },
        )
        .await
    }

    pub async fn put_owner_review(
        &self,
        r: OwnerReview,
        replace: bool,
    ) -> Result<bool, StoreError> {
        self.write_changed(ChangeKind::OwnerReview, r.organization.clone(), move |tx| {
            let stored = insert_review_row(tx, &r, !replace)?;
            Ok(stored)
        })
        .await
    }

    pub async fn delete_owner_reviews(
        &self,
        org: &str,
        owner: Option<&str>,
    ) -> Result<usize, StoreError> {
        let (org, owner) = (org.to_owned(), owner.map(str::to_owned));
        self.write_changed(ChangeKind::OwnerReview, org.clone(), move |tx| {
            let n = tx.execute(
                "DELETE FROM owner_reviews WHERE org_id = ?1 AND (?2 IS NULL OR owner = ?2)",
                params![org, owner],
            )?;
            Ok(n)
        })
        .await
    }

    pub async fn owner_reviews(&self, org: Option<&str>) -> Result<Vec<OwnerReview>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT org_id, owner, state, since, reason FROM owner_reviews WHERE ?1 IS NULL OR org_id = ?1 ORDER BY org_id, owner",
            [org],
            |r| {
            Ok(OwnerReview {
                organization: r.get(0)?,
                owner: r.get(1)?,
                state: OwnerReviewState::parse(&r.get::<_, String>(2)?),
                since: from_micros(r.get(3)?),
                reason: r.get(4)?,
            })
        },
        )
        .await
    }

    pub async fn set_guard_exemption(
        &self,
        e: GuardExemption,
        exempt: bool,
    ) -> Result<(), StoreError> {
        self.write_changed(
            ChangeKind::GuardExemption,
            e.organization.clone(),
            move |tx| {
                if exempt {
                    insert_exemption_row(tx, &e)?;
                } else {
                    tx.execute(
                        "DELETE FROM guard_exemptions WHERE org_id = ?1 AND owner = ?2",
                        params![e.organization, e.owner.as_deref().unwrap_or_default()],
                    )?;
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn guard_exemptions(
        &self,
        org: Option<&str>,
    ) -> Result<Vec<GuardExemption>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT org_id, owner FROM guard_exemptions WHERE ?1 IS NULL OR org_id = ?1 ORDER BY org_id, owner",
            [org],
            |r| {
            let owner: String = r.get(1)?;
            Ok(GuardExemption {
                organization: r.get(0)?,
                owner: (!owner.is_empty()).then_some(owner),
            })
        },
        )
        .await
    }

    pub async fn insert_guard_action(&self, a: PolicyAction) -> Result<(), StoreError> {
        self.write_changed(ChangeKind::GuardAction, a.organization.clone(), move |tx| {
            insert_action_row(tx, &a, false)?;
            Ok(())
        })
        .await
    }

    pub async fn clear_guard_actions(&self, org: &str) -> Result<usize, StoreError> {
        let org = org.to_owned();
        self.write_changed(ChangeKind::GuardAction, org.clone(), move |tx| {
            let n = tx.execute("DELETE FROM guard_actions WHERE org_id = ?1", [&org])?;
            Ok(n)
        })
        .await
    }

    pub async fn guard_actions(&self, org: Option<&str>) -> Result<Vec<PolicyAction>, StoreError> {
        let org = org.map(str::to_owned);
        self.rows(
            "SELECT id, org_id, policy, action, score, threshold, time FROM guard_actions WHERE ?1 IS NULL OR org_id = ?1 ORDER BY seq",
            [org],
            |r| {
            Ok(PolicyAction {
                id: r.get(0)?,
                organization: r.get(1)?,
                policy: r.get(2)?,
                action: r.get(3)?,
                score: r.get(4)?,
                threshold: r.get(5)?,
                time: from_micros(r.get(6)?),
            })
        },
        )
        .await
    }

    /// Deletes a small value (idempotent).
    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM kv WHERE key = ?1", [key])?;
            Ok(())
        })
        .await
    }

    // ----- change feed, health, migration -----

    /// Control changes after `seq`, oldest first (at most `limit`).
    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(
                    params![seq, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok(Change {
                            seq: r.get(0)?,
                            kind: ChangeKind::parse(&r.get::<_, String>(1)?),
                            id: r.get(2)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The newest change's sequence number (0 when none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    /// A trivial round trip, for readiness and latency.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    /// Every small value (for migrations).
    pub async fn values(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.rows("SELECT key, value FROM kv ORDER BY key", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    /// Raw records with `seq` above `after`, oldest first, and the last seq returned (for
    /// migrations: a stable cursor over the whole ledger).
    pub async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<UsageRecord>, i64), StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, time, org_id, project_id, key_id, model, provider, upstream_model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, status, latency_ms, streamed, estimated, source, cache_write_input_tokens, seq FROM usage WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut last = after;
            let mut out = Vec::new();
            let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])?;
            while let Some(r) = rows.next()? {
                out.push(record_row(r)?);
                last = r.get(18)?;
            }
            Ok((out, last))
        })
        .await
    }

    /// Copies control rows in, keeping rows that already exist (reruns are safe).
    pub async fn import_control(&self, d: ControlDump) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            for o in &d.organizations {
                tx.execute(
                    "INSERT OR IGNORE INTO organizations (id, name, parent_id, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![o.id, o.name, o.parent, o.state.as_str(), to_micros(o.created_at)],
                )?;
            }
            for p in &d.projects {
                tx.execute(
                    "INSERT OR IGNORE INTO projects (id, org_id, name, rpm, tpm, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![p.id, p.organization, p.name, opt_i64(p.rpm), opt_i64(p.tpm), to_micros(p.created_at)],
                )?;
            }
            for k in &d.keys {
                let models = k.models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default());
                tx.execute(
                    "INSERT OR IGNORE INTO api_keys (id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![k.id, k.organization, k.project, k.name, k.prefix, &k.hash[..], k.role.as_str(), models, opt_i64(k.rpm), opt_i64(k.tpm), k.expires_at.map(to_micros), k.revoked_at.map(to_micros), to_micros(k.created_at)],
                )?;
            }
            for p in &d.prices {
                tx.execute(
                    "INSERT OR IGNORE INTO prices (model, effective_from, input_price, cached_input_price, output_price, cache_write_price) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![p.model, to_micros(p.effective_from), p.input_price, p.cached_input_price, p.output_price, p.cache_write_price],
                )?;
            }
            for k in &d.contracts {
                tx.execute(
                    "INSERT OR IGNORE INTO contracts (org_id, effective_from, discount_percent, monthly_commitment) VALUES (?1, ?2, ?3, ?4)",
                    params![k.organization, to_micros(k.effective_from), k.discount_percent, k.monthly_commitment],
                )?;
            }
            for b in &d.budgets {
                tx.execute(
                    "INSERT OR IGNORE INTO budgets (org_id, project_id, monthly_limit) VALUES (?1, ?2, ?3)",
                    params![b.organization, b.project.clone().unwrap_or_default(), b.monthly_limit],
                )?;
            }
            let audit_rows: i64 = tx.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))?;
            if audit_rows == 0 {
                for e in &d.audit {
                    tx.execute(
                        "INSERT INTO audit_log (time, actor, action, org_id, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![to_micros(e.time), e.actor, e.action, e.organization, e.reason],
                    )?;
                }
            }
            for (k, v) in &d.values {
                tx.execute("INSERT OR IGNORE INTO kv (key, value) VALUES (?1, ?2)", params![k, v])?;
            }
            for k in &d.owner_keys {
                insert_owner_key_row(&tx, k, true)?;
            }
            for r in &d.owner_reports {
                insert_report_row(&tx, r, true)?;
            }
            for r in &d.owner_reviews {
                insert_review_row(&tx, r, true)?;
            }
            for e in &d.guard_exemptions {
                insert_exemption_row(&tx, e)?;
            }
            for a in &d.guard_actions {
                insert_action_row(&tx, a, true)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn change(c: &Connection, kind: ChangeKind, id: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO changes (kind, id) VALUES (?1, ?2)",
        params![kind.as_str(), id],
    )?;
    Ok(())
}

const OWNER_KEY_SELECT: &str =
    "SELECT id, owner, prefix, hash, created_at, revoked_at FROM owner_keys";

fn owner_key_row(r: &Row<'_>) -> rusqlite::Result<OwnerKey> {
    let hash_vec: Vec<u8> = r.get(3)?;
    // A stored hash of the wrong length matches no key (all zeros is no SHA-256 of a key).
    let mut hash = [0u8; 32];
    if hash_vec.len() == 32 {
        hash.copy_from_slice(&hash_vec);
    }
    Ok(OwnerKey {
        id: r.get(0)?,
        owner: r.get(1)?,
        prefix: r.get(2)?,
        hash,
        created_at: from_micros(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(from_micros),
    })
}

/// `OR IGNORE` when `keep` (imports): a row that exists is kept.
fn or_ignore(keep: bool) -> &'static str {
    if keep { "OR IGNORE " } else { "" }
}

pub(crate) fn insert_owner_key_row(
    c: &Connection,
    k: &OwnerKey,
    keep: bool,
) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT {}INTO owner_keys (id, owner, prefix, hash, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            or_ignore(keep)
        ),
        params![
            k.id,
            k.owner,
            k.prefix,
            &k.hash[..],
            to_micros(k.created_at),
            k.revoked_at.map(to_micros)
        ],
    )
}

pub(crate) fn insert_report_row(
    c: &Connection,
    r: &OwnerReport,
    keep: bool,
) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT {}INTO owner_reports (id, time, owner, org_id, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            or_ignore(keep)
        ),
        params![r.id, to_micros(r.time), r.owner, r.organization, r.reason],
    )
}

/// Inserts a review; an existing review of the same organization and owner is kept when
/// `keep`, replaced otherwise. Returns whether this review is now stored.
pub(crate) fn insert_review_row(
    c: &Connection,
    r: &OwnerReview,
    keep: bool,
) -> rusqlite::Result<bool> {
    let verb = if keep { "OR IGNORE " } else { "OR REPLACE " };
    let n = c.execute(
        &format!(
            "INSERT {verb}INTO owner_reviews (org_id, owner, state, since, reason) VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        params![
            r.organization,
            r.owner,
            r.state.as_str(),
            to_micros(r.since),
            r.reason
        ],
    )?;
    Ok(n == 1)
}

pub(crate) fn insert_exemption_row(c: &Connection, e: &GuardExemption) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT OR IGNORE INTO guard_exemptions (org_id, owner) VALUES (?1, ?2)",
        params![e.organization, e.owner.as_deref().unwrap_or_default()],
    )
}

pub(crate) fn insert_action_row(
    c: &Connection,
    a: &PolicyAction,
    keep: bool,
) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT {}INTO guard_actions (id, org_id, policy, action, score, threshold, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            or_ignore(keep)
        ),
        params![
            a.id,
            a.organization,
            a.policy,
            a.action,
            a.score,
            a.threshold,
            to_micros(a.time)
        ],
    )
}

const KEY_SELECT: &str = "SELECT id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at FROM api_keys";

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn u64_of(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
}

/// Token sums, each column summed in two 32-bit halves: SQLite's `SUM` fails once a 64-bit sum
/// overflows, while the halves of 2^31 rows cannot. [`halves_of`] joins them (saturating).
const TOKEN_SUMS: &str = "SUM(input_tokens >> 32), SUM(input_tokens & 4294967295), SUM(cached_input_tokens >> 32), SUM(cached_input_tokens & 4294967295), SUM(output_tokens >> 32), SUM(output_tokens & 4294967295), SUM(reasoning_tokens >> 32), SUM(reasoning_tokens & 4294967295), SUM(cache_write_input_tokens >> 32), SUM(cache_write_input_tokens & 4294967295)";

/// The sum whose high and low 32-bit halves are in columns `i` and `i + 1`, saturated to `u64`.
fn halves_of(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let hi = i128::from(r.get::<_, Option<i64>>(i)?.unwrap_or(0));
    let lo = i128::from(r.get::<_, Option<i64>>(i + 1)?.unwrap_or(0));
    let sum = hi.saturating_mul(1 << 32).saturating_add(lo);
    Ok(u64::try_from(sum.max(0)).unwrap_or(u64::MAX))
}

fn opt_u64(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?
        .map(|v| u64::try_from(v).unwrap_or(0)))
}

fn org_row(r: &Row<'_>) -> rusqlite::Result<Organization> {
    Ok(Organization {
        id: r.get(0)?,
        name: r.get(1)?,
        parent: r.get(2)?,
        state: AccountState::parse(&r.get::<_, String>(3)?),
        created_at: from_micros(r.get(4)?),
    })
}

fn project_row(r: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        organization: r.get(1)?,
        name: r.get(2)?,
        rpm: opt_u64(r, 3)?,
        tpm: opt_u64(r, 4)?,
        created_at: from_micros(r.get(5)?),
    })
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let hash_vec: Vec<u8> = r.get(5)?;
    let mut hash = [0u8; 32];
    if hash_vec.len() == 32 {
        hash.copy_from_slice(&hash_vec);
    }
    let models: Option<String> = r.get(7)?;
    Ok(ApiKey {
        id: r.get(0)?,
        organization: r.get(1)?,
        project: r.get(2)?,
        name: r.get(3)?,
        prefix: r.get(4)?,
        hash,
        role: KeyRole::parse(&r.get::<_, String>(6)?),
        models: models.and_then(|m| serde_json::from_str(&m).ok()),
        rpm: opt_u64(r, 8)?,
        tpm: opt_u64(r, 9)?,
        expires_at: r.get::<_, Option<i64>>(10)?.map(from_micros),
        revoked_at: r.get::<_, Option<i64>>(11)?.map(from_micros),
        created_at: from_micros(r.get(12)?),
    })
}

fn record_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        id: r.get(0)?,
        time: from_micros(r.get(1)?),
        organization: r.get(2)?,
        project: r.get(3)?,
        key: r.get(4)?,
        model: r.get(5)?,
        provider: r.get(6)?,
        upstream_model: r.get(7)?,
        input_tokens: u64_of(r, 8)?,
        cached_input_tokens: u64_of(r, 9)?,
        output_tokens: u64_of(r, 10)?,
        reasoning_tokens: u64_of(r, 11)?,
        status: u16::try_from(r.get::<_, i64>(12)?).unwrap_or(0),
        latency_ms: u64_of(r, 13)?,
        streamed: r.get(14)?,
        estimated: r.get(15)?,
        source: r.get(16)?,
        cache_write_input_tokens: u64_of(r, 17)?,
    })
}

/// `WHERE` conditions over raw records for the organizations and project of a filter in `[from, to)`.
fn raw_conditions(
    f: &UsageFilter,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = Vec::new();
    let placeholders = vec!["?"; f.organizations.len().max(1)].join(",");
    let mut cond = format!("org_id IN ({placeholders})");
    if f.organizations.is_empty() {
        args.push(Value::Null);
    }
    args.extend(f.organizations.iter().cloned().map(Value::Text));
    if let Some(p) = &f.project {
        cond.push_str(" AND project_id = ?");
        args.push(Value::Text(p.clone()));
    }
    if let Some(from) = from {
        cond.push_str(" AND time >= ?");
        args.push(Value::Integer(to_micros(from)));
    }
    if let Some(to) = to {
        cond.push_str(" AND time < ?");
        args.push(Value::Integer(to_micros(to)));
    }
    (cond, args)
}

fn usage_query(c: &Connection, f: &UsageFilter) -> Result<Vec<UsageAggregate>, StoreError> {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<String, UsageAggregate> = BTreeMap::new();
    let mut add = |row: UsageAggregate| {
        let e = out
            .entry(row.model.clone())
            .or_insert_with(|| UsageAggregate {
                model: row.model.clone(),
                ..UsageAggregate::default()
            });
        e.add_counts(&row);
    };
    let from_us = f.from.map(to_micros);
    let to_us = f.to.map(to_micros);
    // Whole hours: [ceil(from), floor(to)).
    let lo = from_us.map(|v| (v + HOUR_US - 1).div_euclid(HOUR_US) * HOUR_US);
    let hi = to_us.map(|v| v.div_euclid(HOUR_US) * HOUR_US);
    let whole_hours = match (lo, hi) {
        (Some(l), Some(h)) => l < h,
        _ => true,
    };
    let agg = |r: &Row<'_>| -> rusqlite::Result<UsageAggregate> {
        Ok(UsageAggregate {
            model: r.get(0)?,
            requests: u64_of(r, 1)?,
            input_tokens: halves_of(r, 2)?,
            cached_input_tokens: halves_of(r, 4)?,
            output_tokens: halves_of(r, 6)?,
            reasoning_tokens: halves_of(r, 8)?,
            cache_write_input_tokens: halves_of(r, 10)?,
        })
    };
    if whole_hours {
        let (mut cond, mut args) = raw_conditions(
            &UsageFilter {
                from: None,
                to: None,
                ..f.clone()
            },
            None,
            None,
        );
        if let Some(l) = lo {
            cond.push_str(" AND hour >= ?");
            args.push(Value::Integer(l));
        }
        if let Some(h) = hi {
            cond.push_str(" AND hour < ?");
            args.push(Value::Integer(h));
        }
        let sql = format!(
            "SELECT model, SUM(requests), {TOKEN_SUMS} FROM usage_hourly WHERE {cond} GROUP BY model"
        );
        let mut stmt = c.prepare(&sql)?;
        for row in stmt.query_map(params_from_iter(args), agg)? {
            add(row?);
        }
        let edges = [(f.from, lo.map(from_micros)), (hi.map(from_micros), f.to)];
        for (a, b) in edges {
            if a.is_some() && b.is_some() && a < b {
                raw_sum(c, f, a, b, &agg, &mut add)?;
            }
        }
    } else {
        raw_sum(c, f, f.from, f.to, &agg, &mut add)?;
    }
    Ok(out.into_values().collect())
}

fn raw_sum(
    c: &Connection,
    f: &UsageFilter,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    agg: &dyn Fn(&Row<'_>) -> rusqlite::Result<UsageAggregate>,
    add: &mut dyn FnMut(UsageAggregate),
) -> Result<(), StoreError> {
    let (cond, args) = raw_conditions(f, from, to);
    let sql =
        format!("SELECT model, COUNT(*), {TOKEN_SUMS} FROM usage WHERE {cond} GROUP BY model");
    let mut stmt = c.prepare(&sql)?;
    for row in stmt.query_map(params_from_iter(args), |r| agg(r))? {
        add(row?);
    }
    Ok(())
}
