//! PostgreSQL backend of [`crate::Store`]: the same control data and queries as SQLite, over a
//! pool of connections. Every value is a bound parameter.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::StoreError;
use crate::types::*;

const HOUR_US: i64 = 3_600_000_000;
/// Longest wait for a pooled connection or one statement before the store counts as failing.
pub(crate) const PG_TIMEOUT: Duration = Duration::from_secs(5);

type Param = Box<dyn ToSql + Sync + Send>;

/// Opens a pool for `url` (`postgres://user:pass@host:port/db`).
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut cfg =
        tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Pg(e.to_string()))?;
    cfg.connect_timeout(Duration::from_secs(3));
    cfg.application_name("tollgate");
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(PG_TIMEOUT))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()
        .map_err(|e| StoreError::Pg(e.to_string()))
}

/// A pooled connection, within [`PG_TIMEOUT`].
pub(crate) async fn conn(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| StoreError::Pg(e.to_string()))
}

/// PostgreSQL handle to control data; cheap to clone.
#[derive(Clone)]
pub(crate) struct PgStore {
    pool: Pool,
    /// The runtime that opened the store. Connections are made there: each one's driver task
    /// is spawned on the runtime that makes it, and a request-serving runtime busy with its
    /// own requests would hold up the statements of every other thread using that connection.
    home: Option<tokio::runtime::Handle>,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn oi(v: Option<u64>) -> Option<i64> {
    v.map(i)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn ou(v: Option<i64>) -> Option<u64> {
    v.map(u)
}

const KEY_SELECT: &str = "SELECT id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at FROM api_keys";
const RECORD_SELECT: &str = "SELECT id, time, org_id, project_id, key_id, model, provider, upstream_model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, status, latency_ms, streamed, estimated, source, seq, cache_write_input_tokens FROM usage";

fn org_row(r: &Row) -> Organization {
    Organization {
        id: r.get(0),
        name: r.get(1),
        parent: r.get(2),
        state: AccountState::parse(r.get(3)),
        created_at: from_micros(r.get(4)),
    }
}

fn project_row(r: &Row) -> Project {
    Project {
        id: r.get(0),
        organization: r.get(1),
        name: r.get(2),
        rpm: ou(r.get(3)),
        tpm: ou(r.get(4)),
        created_at: from_micros(r.get(5)),
    }
}

fn key_row(r: &Row) -> ApiKey {
    let hash_vec: Vec<u8> = r.get(5);
    let mut hash = [0u8; 32];
    if hash_vec.len() == 32 {
        hash.copy_from_slice(&hash_vec);
    }
    let models: Option<String> = r.get(7);
    ApiKey {
        id: r.get(0),
        organization: r.get(1),
        project: r.get(2),
        name: r.get(3),
        prefix: r.get(4),
        hash,
        role: KeyRole::parse(r.get::<_, &str>(6)),
        models: models.and_then(|m| serde_json::from_str(&m).ok()),
        rpm: ou(r.get(8)),
        tpm: ou(r.get(9)),
        expires_at: r.get::<_, Option<i64>>(10).map(from_micros),
        revoked_at: r.get::<_, Option<i64>>(11).map(from_micros),
        created_at: from_micros(r.get(12)),
    }
}

pub(crate) fn record_row(r: &Row) -> UsageRecord {
    UsageRecord {
        id: r.get(0),
        time: from_micros(r.get(1)),
        organization: r.get(2),
        project: r.get(3),
        key: r.get(4),
        model: r.get(5),
        provider: r.get(6),
        upstream_model: r.get(7),
        input_tokens: u(r.get(8)),
        cached_input_tokens: u(r.get(9)),
        output_tokens: u(r.get(10)),
        reasoning_tokens: u(r.get(11)),
        status: u16::try_from(r.get::<_, i32>(12)).unwrap_or(0),
        latency_ms: u(r.get(13)),
        streamed: r.get(14),
        estimated: r.get(15),
        source: r.get(16),
        cache_write_input_tokens: u(r.get(18)),
    }
}

fn models_json(k: &ApiKey) -> Option<String> {
    k.models
        .as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_default())
}

async fn change(
    tx: &deadpool_postgres::Transaction<'_>,
    kind: ChangeKind,
    id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO changes (kind, id) VALUES ($1, $2)",
        &[&kind.as_str(), &id],
    )
    .await?;
    Ok(())
}

const OWNER_KEY_SELECT: &str =
    "SELECT id, owner, prefix, hash, created_at, revoked_at FROM owner_keys";

fn owner_key_row(r: &Row) -> OwnerKey {
    let hash_vec: Vec<u8> = r.get(3);
    // A stored hash of the wrong length matches no key (all zeros is no SHA-256 of a key).
    let mut hash = [0u8; 32];
    if hash_vec.len() == 32 {
        hash.copy_from_slice(&hash_vec);
    }
    OwnerKey {
        id: r.get(0),
        owner: r.get(1),
        prefix: r.get(2),
        hash,
        created_at: from_micros(r.get(4)),
        revoked_at: r.get::<_, Option<i64>>(5).map(from_micros),
    }
}

/// `ON CONFLICT DO NOTHING` when `keep` (imports): a row that exists is kept.
fn on_conflict(keep: bool) -> &'static str {
    if keep { " ON CONFLICT DO NOTHING" } else { "" }
}

pub(crate) async fn insert_owner_key_row(
    tx: &deadpool_postgres::Transaction<'_>,
    k: &OwnerKey,
    keep: bool,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            &format!(
                "INSERT INTO owner_keys (id, owner, prefix, hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6){}",
                on_conflict(keep)
            ),
            &[
                &k.id,
                &k.owner,
                &k.prefix,
                &&k.hash[..],
                &to_micros(k.created_at),
                &k.revoked_at.map(to_micros),
            ],
        )
        .await?)
}

pub(crate) async fn insert_report_row(
    tx: &deadpool_postgres::Transaction<'_>,
    r: &OwnerReport,
    keep: bool,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            &format!(
                "INSERT INTO owner_reports (id, time, owner, org_id, reason) VALUES ($1, $2, $3, $4, $5){}",
                on_conflict(keep)
            ),
            &[&r.id, &to_micros(r.time), &r.owner, &r.organization, &r.reason],
        )
        .await?)
}

/// Inserts a review; an existing review of the same organization and owner is kept when
/// `keep`, replaced otherwise. Returns whether this review is now stored.
pub(crate) async fn insert_review_row(
    tx: &deadpool_postgres::Transaction<'_>,
    r: &OwnerReview,
    keep: bool,
) -> Result<bool, StoreError> {
    let conflict = if keep {
        "ON CONFLICT (org_id, owner) DO NOTHING"
    } else {
        "ON CONFLICT (org_id, owner) DO UPDATE SET state = excluded.state, since = excluded.since, reason = excluded.reason"
    };
    let n = tx
        .execute(
            &format!(
                "INSERT INTO owner_reviews (org_id, owner, state, since, reason) VALUES ($1, $2, $3, $4, $5) {conflict}"
            ),
            &[
                &r.organization,
                &r.owner,
                &r.state.as_str(),
                &to_micros(r.since),
                &r.reason,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(crate) async fn insert_exemption_row(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &GuardExemption,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "INSERT INTO guard_exemptions (org_id, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&e.organization, &e.owner.as_deref().unwrap_or_default()],
        )
        .await?)
}

pub(crate) async fn insert_action_row(
    tx: &deadpool_postgres::Transaction<'_>,
    a: &PolicyAction,
    keep: bool,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            &format!(
                "INSERT INTO guard_actions (id, org_id, policy, action, score, threshold, time) VALUES ($1, $2, $3, $4, $5, $6, $7){}",
                on_conflict(keep)
            ),
            &[
                &a.id,
                &a.organization,
                &a.policy,
                &a.action,
                &a.score,
                &a.threshold,
                &to_micros(a.time),
            ],
        )
        .await?)
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `WHERE` conditions over raw records (or rollups) of a filter, with `$n` placeholders.
fn conditions(
    f: &UsageFilter,
    time_col: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = vec![Box::new(f.organizations.clone())];
    let mut cond = "org_id = ANY($1)".to_owned();
    if let Some(p) = &f.project {
        params.push(Box::new(p.clone()));
        cond.push_str(&format!(" AND project_id = ${}", params.len()));
    }
    if let Some(v) = from {
        params.push(Box::new(v));
        cond.push_str(&format!(" AND {time_col} >= ${}", params.len()));
    }
    if let Some(v) = to {
        params.push(Box::new(v));
        cond.push_str(&format!(" AND {time_col} < ${}", params.len()));
    }
    (cond, params)
}

impl PgStore {
    /// Connects, applies pending migrations, and keeps a pool of `size` connections.
    pub async fn open(url: &str, size: usize) -> Result<PgStore, StoreError> {
        let pool = pool(url, size)?;
        let mut c = conn(&pool).await?;
        crate::pg_schema::migrate(&mut c).await?;
        Ok(PgStore {
            pool,
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    async fn c(&self) -> Result<Object, StoreError> {
        match &self.home {
            Some(home) => {
                let pool = self.pool.clone();
                home.spawn(async move { conn(&pool).await })
                    .await
                    .map_err(|e| StoreError::Pg(format!("connection task: {e}")))?
            }
            None => conn(&self.pool).await,
        }
    }

    pub async fn insert_organization(&self, org: Organization) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO organizations (id, name, parent_id, state, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&org.id, &org.name, &org.parent, &org.state.as_str(), &to_micros(org.created_at)],
        )
        .await?;
        change(&tx, ChangeKind::Organization, &org.id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        let row = self
            .c()
            .await?
            .query_opt(
                "SELECT id, name, parent_id, state, created_at FROM organizations WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(org_row))
    }

    pub async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT id, name, parent_id, state, created_at FROM organizations ORDER BY created_at, id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(org_row).collect())
    }

    pub async fn subtree(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "WITH RECURSIVE t(id) AS (SELECT id FROM organizations WHERE id = $1 UNION SELECT o.id FROM organizations o JOIN t ON o.parent_id = t.id) SELECT id FROM t",
                &[&id],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn set_organization_state(
        &self,
        id: &str,
        state: AccountState,
    ) -> Result<bool, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE organizations SET state = $2 WHERE id = $1",
                &[&id, &state.as_str()],
            )
            .await?;
        change(&tx, ChangeKind::Organization, id).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn insert_project(&self, p: Project) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO projects (id, org_id, name, rpm, tpm, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&p.id, &p.organization, &p.name, &oi(p.rpm), &oi(p.tpm), &to_micros(p.created_at)],
        )
        .await?;
        change(&tx, ChangeKind::Project, &p.id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let row = self
            .c()
            .await?
            .query_opt(
                "SELECT id, org_id, name, rpm, tpm, created_at FROM projects WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(project_row))
    }

    pub async fn projects(&self, org: Option<&str>) -> Result<Vec<Project>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT id, org_id, name, rpm, tpm, created_at FROM projects WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY created_at, id",
                &[&org],
            )
            .await?;
        Ok(rows.iter().map(project_row).collect())
    }

    pub async fn insert_key(&self, k: ApiKey) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO api_keys (id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &k.id,
                &k.organization,
                &k.project,
                &k.name,
                &k.prefix,
                &&k.hash[..],
                &k.role.as_str(),
                &models_json(&k),
                &oi(k.rpm),
                &oi(k.tpm),
                &k.expires_at.map(to_micros),
                &k.revoked_at.map(to_micros),
                &to_micros(k.created_at),
            ],
        )
        .await?;
        change(&tx, ChangeKind::Key, &k.id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn keys(
        &self,
        project: Option<&str>,
        org: Option<&str>,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                &format!("{KEY_SELECT} WHERE ($1::TEXT IS NULL OR project_id = $1) AND ($2::TEXT IS NULL OR org_id = $2) ORDER BY created_at, id"),
                &[&project, &org],
            )
            .await?;
        Ok(rows.iter().map(key_row).collect())
    }

    pub async fn key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = self
            .c()
            .await?
            .query_opt(&format!("{KEY_SELECT} WHERE id = $1"), &[&id])
            .await?;
        Ok(row.as_ref().map(key_row))
    }

    pub async fn revoke_key(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &to_micros(at)],
        )
        .await?;
        change(&tx, ChangeKind::Key, id).await?;
        let row = tx
            .query_opt(&format!("{KEY_SELECT} WHERE id = $1"), &[&id])
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(key_row))
    }

    pub async fn active_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(&format!("{KEY_SELECT} WHERE revoked_at IS NULL"), &[])
            .await?;
        Ok(rows.iter().map(key_row).collect())
    }

    pub async fn usage(&self, f: UsageFilter) -> Result<Vec<UsageAggregate>, StoreError> {
        let c = self.c().await?;
        let mut out: BTreeMap<String, UsageAggregate> = BTreeMap::new();
        let mut add = |r: &Row| {
            let model: String = r.get(0);
            let e = out.entry(model.clone()).or_insert_with(|| UsageAggregate {
                model,
                ..UsageAggregate::default()
            });
            e.requests = e.requests.saturating_add(u(r.get(1)));
            e.input_tokens = e.input_tokens.saturating_add(u(r.get(2)));
            e.cached_input_tokens = e.cached_input_tokens.saturating_add(u(r.get(3)));
            e.cache_write_input_tokens = e.cache_write_input_tokens.saturating_add(u(r.get(6)));
            e.output_tokens = e.output_tokens.saturating_add(u(r.get(4)));
            e.reasoning_tokens = e.reasoning_tokens.saturating_add(u(r.get(5)));
        };
        let from_us = f.from.map(to_micros);
        let to_us = f.to.map(to_micros);
        let lo = from_us.map(|v| (v + HOUR_US - 1).div_euclid(HOUR_US) * HOUR_US);
        let hi = to_us.map(|v| v.div_euclid(HOUR_US) * HOUR_US);
        let whole_hours = match (lo, hi) {
            (Some(l), Some(h)) => l < h,
            _ => true,
        };
        // Sums saturate at i64::MAX instead of failing the cast (reports never break on data).
        const SUMS: &str = "LEAST(SUM(input_tokens), 9223372036854775807)::BIGINT, LEAST(SUM(cached_input_tokens), 9223372036854775807)::BIGINT, LEAST(SUM(output_tokens), 9223372036854775807)::BIGINT, LEAST(SUM(reasoning_tokens), 9223372036854775807)::BIGINT, LEAST(SUM(cache_write_input_tokens), 9223372036854775807)::BIGINT";
        let mut ranges: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        if whole_hours {
            let (cond, params) = conditions(&f, "hour", lo, hi);
            let sql = format!(
                "SELECT model, SUM(requests)::BIGINT, {SUMS} FROM usage_hourly WHERE {cond} GROUP BY model"
            );
            for r in c.query(&sql, &refs(&params)).await? {
                add(&r);
            }
            for (a, b) in [(from_us, lo), (hi, to_us)] {
                if let (Some(a), Some(b)) = (a, b)
                    && a < b
                {
                    ranges.push((Some(a), Some(b)));
                }
            }
        } else {
            ranges.push((from_us, to_us));
        }
        for (a, b) in ranges {
            let (cond, params) = conditions(&f, "time", a, b);
            let sql = format!(
                "SELECT model, COUNT(*)::BIGINT, {SUMS} FROM usage WHERE {cond} GROUP BY model"
            );
            for r in c.query(&sql, &refs(&params)).await? {
                add(&r);
            }
        }
        Ok(out.into_values().collect())
    }

    pub async fn records(
        &self,
        f: UsageFilter,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let (cond, mut params) = conditions(&f, "time", f.from.map(to_micros), f.to.map(to_micros));
        params.push(Box::new(i(limit as u64)));
        let sql = format!(
            "{RECORD_SELECT} WHERE {cond} ORDER BY time, seq LIMIT ${}",
            params.len()
        );
        let rows = self.c().await?.query(&sql, &refs(&params)).await?;
        Ok(rows.iter().map(record_row).collect())
    }

    pub async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<UsageRecord>, i64), StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                &format!("{RECORD_SELECT} WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &i(limit as u64)],
            )
            .await?;
        let last = rows.last().map(|r| r.get::<_, i64>(17)).unwrap_or(after);
        Ok((rows.iter().map(record_row).collect(), last))
    }

    pub async fn ledger_totals(&self) -> Result<(u64, u64, u64), StoreError> {
        let r = self
            .c()
            .await?
            .query_one(
                "SELECT COUNT(*)::BIGINT, LEAST(COALESCE(SUM(input_tokens), 0), 9223372036854775807)::BIGINT, LEAST(COALESCE(SUM(output_tokens), 0), 9223372036854775807)::BIGINT FROM usage",
                &[],
            )
            .await?;
        Ok((u(r.get(0)), u(r.get(1)), u(r.get(2))))
    }

    pub async fn existing_ids(&self, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let rows = self
            .c()
            .await?
            .query("SELECT id FROM usage WHERE id = ANY($1)", &[&ids])
            .await?;
        let found: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(ids.into_iter().filter(|i| found.contains(i)).collect())
    }

    pub async fn put_price(&self, p: PriceRow) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO prices (model, effective_from, input_price, cached_input_price, output_price, cache_write_price) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (model, effective_from) DO UPDATE SET input_price = excluded.input_price, cached_input_price = excluded.cached_input_price, output_price = excluded.output_price, cache_write_price = excluded.cache_write_price",
            &[&p.model, &to_micros(p.effective_from), &p.input_price, &p.cached_input_price, &p.output_price, &p.cache_write_price],
        )
        .await?;
        change(&tx, ChangeKind::Price, &p.model).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT model, input_price, cached_input_price, output_price, effective_from, cache_write_price FROM prices ORDER BY model, effective_from",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PriceRow {
                model: r.get(0),
                input_price: r.get(1),
                cached_input_price: r.get(2),
                output_price: r.get(3),
                effective_from: from_micros(r.get(4)),
                cache_write_price: r.get(5),
            })
            .collect())
    }

    pub async fn put_contract(&self, k: ContractRow) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO contracts (org_id, effective_from, discount_percent, monthly_commitment) VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, effective_from) DO UPDATE SET discount_percent = excluded.discount_percent, monthly_commitment = excluded.monthly_commitment",
            &[&k.organization, &to_micros(k.effective_from), &k.discount_percent, &k.monthly_commitment],
        )
        .await?;
        change(&tx, ChangeKind::Contract, &k.organization).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn contracts(&self, org: Option<&str>) -> Result<Vec<ContractRow>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT org_id, discount_percent, monthly_commitment, effective_from FROM contracts WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY org_id, effective_from",
                &[&org],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ContractRow {
                organization: r.get(0),
                discount_percent: r.get(1),
                monthly_commitment: r.get(2),
                effective_from: from_micros(r.get(3)),
            })
            .collect())
    }

    pub async fn put_budget(&self, b: BudgetRow) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO budgets (org_id, project_id, monthly_limit) VALUES ($1, $2, $3) ON CONFLICT (org_id, project_id) DO UPDATE SET monthly_limit = excluded.monthly_limit",
            &[&b.organization, &b.project.clone().unwrap_or_default(), &b.monthly_limit],
        )
        .await?;
        change(&tx, ChangeKind::Budget, &b.organization).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT org_id, project_id, monthly_limit FROM budgets ORDER BY org_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let project: String = r.get(1);
                BudgetRow {
                    organization: r.get(0),
                    project: (!project.is_empty()).then_some(project),
                    monthly_limit: r.get(2),
                }
            })
            .collect())
    }

    pub async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.c()
            .await?
            .execute(
                "INSERT INTO audit_log (time, actor, action, org_id, reason) VALUES ($1, $2, $3, $4, $5)",
                &[&to_micros(e.time), &e.actor, &e.action, &e.organization, &e.reason],
            )
            .await?;
        Ok(())
    }

    pub async fn audit(&self, org: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT time, actor, action, org_id, reason FROM audit_log WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY seq",
                &[&org],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                time: from_micros(r.get(0)),
                actor: r.get(1),
                action: r.get(2),
                organization: r.get(3),
                reason: r.get(4),
            })
            .collect())
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .c()
            .await?
            .query_opt("SELECT value FROM kv WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_value(&self, key: &str, value: String) -> Result<(), StoreError> {
        self.c()
            .await?
            .execute(
                "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    pub async fn values(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .c()
            .await?
            .query("SELECT key, value FROM kv ORDER BY key", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn insert_owner_key(&self, k: OwnerKey) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        insert_owner_key_row(&tx, &k, false).await?;
        change(&tx, ChangeKind::OwnerKey, &k.id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn owner_key(&self, id: &str) -> Result<Option<OwnerKey>, StoreError> {
        let row = self
            .c()
            .await?
            .query_opt(&format!("{OWNER_KEY_SELECT} WHERE id = $1"), &[&id])
            .await?;
        Ok(row.as_ref().map(owner_key_row))
    }

    pub async fn owner_keys(&self) -> Result<Vec<OwnerKey>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(&format!("{OWNER_KEY_SELECT} ORDER BY created_at, id"), &[])
            .await?;
        Ok(rows.iter().map(owner_key_row).collect())
    }

    pub async fn revoke_owner_key(
        &self,
        owner: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE owner_keys SET revoked_at = $3 WHERE id = $1 AND owner = $2 AND revoked_at IS NULL",
                &[&id, &owner, &to_micros(at)],
            )
            .await?;
        if n == 1 {
            change(&tx, ChangeKind::OwnerKey, id).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn insert_owner_report(&self, r: OwnerReport) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        insert_report_row(&tx, &r, false).await?;
        change(&tx, ChangeKind::OwnerReport, &r.id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn owner_reports(&self, owner: Option<&str>) -> Result<Vec<OwnerReport>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT id, time, owner, org_id, reason FROM owner_reports WHERE $1::TEXT IS NULL OR owner = $1 ORDER BY seq",
                &[&owner],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| OwnerReport {
                id: r.get(0),
                time: from_micros(r.get(1)),
                owner: r.get(2),
                organization: r.get(3),
                reason: r.get(4),
            })
            .collect())
    }

    pub async fn put_owner_review(
        &self,
        r: OwnerReview,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        let stored = insert_review_row(&tx, &r, !replace).await?;
        change(&tx, ChangeKind::OwnerReview, &r.organization).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn delete_owner_reviews(
        &self,
        org: &str,
        owner: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM owner_reviews WHERE org_id = $1 AND ($2::TEXT IS NULL OR owner = $2)",
                &[&org, &owner],
            )
            .await?;
        change(&tx, ChangeKind::OwnerReview, org).await?;
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub async fn owner_reviews(&self, org: Option<&str>) -> Result<Vec<OwnerReview>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT org_id, owner, state, since, reason FROM owner_reviews WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY org_id, owner",
                &[&org],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| OwnerReview {
                organization: r.get(0),
                owner: r.get(1),
                state: OwnerReviewState::parse(r.get(2)),
                since: from_micros(r.get(3)),
                reason: r.get(4),
            })
            .collect())
    }

    pub async fn set_guard_exemption(
        &self,
        e: GuardExemption,
        exempt: bool,
    ) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        if exempt {
            insert_exemption_row(&tx, &e).await?;
        } else {
            tx.execute(
                "DELETE FROM guard_exemptions WHERE org_id = $1 AND owner = $2",
                &[&e.organization, &e.owner.as_deref().unwrap_or_default()],
            )
            .await?;
        }
        change(&tx, ChangeKind::GuardExemption, &e.organization).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn guard_exemptions(
        &self,
        org: Option<&str>,
    ) -> Result<Vec<GuardExemption>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT org_id, owner FROM guard_exemptions WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY org_id, owner",
                &[&org],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let owner: String = r.get(1);
                GuardExemption {
                    organization: r.get(0),
                    owner: (!owner.is_empty()).then_some(owner),
                }
            })
            .collect())
    }

    pub async fn insert_guard_action(&self, a: PolicyAction) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        insert_action_row(&tx, &a, false).await?;
        change(&tx, ChangeKind::GuardAction, &a.organization).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear_guard_actions(&self, org: &str) -> Result<usize, StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute("DELETE FROM guard_actions WHERE org_id = $1", &[&org])
            .await?;
        change(&tx, ChangeKind::GuardAction, org).await?;
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub async fn guard_actions(&self, org: Option<&str>) -> Result<Vec<PolicyAction>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT id, org_id, policy, action, score, threshold, time FROM guard_actions WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY seq",
                &[&org],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PolicyAction {
                id: r.get(0),
                organization: r.get(1),
                policy: r.get(2),
                action: r.get(3),
                score: r.get(4),
                threshold: r.get(5),
                time: from_micros(r.get(6)),
            })
            .collect())
    }

    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        self.c()
            .await?
            .execute("DELETE FROM kv WHERE key = $1", &[&key])
            .await?;
        Ok(())
    }

    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let rows = self
            .c()
            .await?
            .query(
                "SELECT seq, kind, id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &i(limit as u64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Change {
                seq: r.get(0),
                kind: ChangeKind::parse(r.get(1)),
                id: r.get(2),
            })
            .collect())
    }

    pub async fn last_change(&self) -> Result<i64, StoreError> {
        let r = self
            .c()
            .await?
            .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM changes", &[])
            .await?;
        Ok(r.get(0))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.c().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    pub async fn import_control(&self, d: ControlDump) -> Result<(), StoreError> {
        let mut c = self.c().await?;
        let tx = c.transaction().await?;
        for o in &d.organizations {
            tx.execute(
                "INSERT INTO organizations (id, name, parent_id, state, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&o.id, &o.name, &o.parent, &o.state.as_str(), &to_micros(o.created_at)],
            )
            .await?;
        }
        for p in &d.projects {
            tx.execute(
                "INSERT INTO projects (id, org_id, name, rpm, tpm, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&p.id, &p.organization, &p.name, &oi(p.rpm), &oi(p.tpm), &to_micros(p.created_at)],
            )
            .await?;
        }
        for k in &d.keys {
            tx.execute(
                "INSERT INTO api_keys (id, org_id, project_id, name, prefix, hash, role, models, rpm, tpm, expires_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
                &[&k.id, &k.organization, &k.project, &k.name, &k.prefix, &&k.hash[..], &k.role.as_str(), &models_json(k), &oi(k.rpm), &oi(k.tpm), &k.expires_at.map(to_micros), &k.revoked_at.map(to_micros), &to_micros(k.created_at)],
            )
            .await?;
        }
        for p in &d.prices {
            tx.execute(
                "INSERT INTO prices (model, effective_from, input_price, cached_input_price, output_price, cache_write_price) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&p.model, &to_micros(p.effective_from), &p.input_price, &p.cached_input_price, &p.output_price, &p.cache_write_price],
            )
            .await?;
        }
        for k in &d.contracts {
            tx.execute(
                "INSERT INTO contracts (org_id, effective_from, discount_percent, monthly_commitment) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&k.organization, &to_micros(k.effective_from), &k.discount_percent, &k.monthly_commitment],
            )
            .await?;
        }
        for b in &d.budgets {
            tx.execute(
                "INSERT INTO budgets (org_id, project_id, monthly_limit) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&b.organization, &b.project.clone().unwrap_or_default(), &b.monthly_limit],
            )
            .await?;
        }
        let audit_rows: i64 = tx
            .query_one("SELECT COUNT(*)::BIGINT FROM audit_log", &[])
            .await?
            .get(0);
        if audit_rows == 0 {
            for e in &d.audit {
                tx.execute(
                    "INSERT INTO audit_log (time, actor, action, org_id, reason) VALUES ($1, $2, $3, $4, $5)",
                    &[&to_micros(e.time), &e.actor, &e.action, &e.organization, &e.reason],
                )
                .await?;
            }
        }
        for (k, v) in &d.values {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[k, v],
            )
            .await?;
        }
        for k in &d.owner_keys {
            insert_owner_key_row(&tx, k, true).await?;
        }
        for r in &d.owner_reports {
            insert_report_row(&tx, r, true).await?;
        }
        for r in &d.owner_reviews {
            insert_review_row(&tx, r, true).await?;
        }
        for e in &d.guard_exemptions {
            insert_exemption_row(&tx, e).await?;
        }
        for a in &d.guard_actions {
            insert_action_row(&tx, a, true).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
