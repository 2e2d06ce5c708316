//! PostgreSQL schema migrations, applied in order at start under an advisory lock (so instances
//! starting together do not race); `schema_migrations` holds the versions applied.

use std::collections::HashMap;

use deadpool_postgres::{Object, Transaction};

use crate::StoreError;
use crate::ddl;
use crate::guard_import::{LEGACY_FLAGS_MARKER, LEGACY_KEYS};

/// Same tables as SQLite's, in PostgreSQL types: times are BIGINT unix microseconds, money and
/// prices are decimal strings, hashes are BYTEA.
const FIRST_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent_id TEXT REFERENCES organizations(id),
    state TEXT NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL
);
CREATE INDEX organizations_parent ON organizations(parent_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    rpm BIGINT,
    tpm BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX projects_org ON projects(org_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    project_id TEXT REFERENCES projects(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash BYTEA NOT NULL UNIQUE,
    role TEXT NOT NULL,
    models TEXT,
    rpm BIGINT,
    tpm BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_project ON api_keys(project_id);

CREATE TABLE usage (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT,
    key_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    status INTEGER NOT NULL,
    latency_ms BIGINT NOT NULL,
    streamed BOOLEAN NOT NULL,
    estimated BOOLEAN NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX usage_org_time ON usage(org_id, time);

CREATE TABLE usage_hourly (
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    model TEXT NOT NULL,
    hour BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    PRIMARY KEY (org_id, hour, project_id, model)
);

CREATE TABLE prices (
    model TEXT NOT NULL,
    effective_from BIGINT NOT NULL,
    input_price TEXT NOT NULL,
    cached_input_price TEXT,
    output_price TEXT NOT NULL,
    PRIMARY KEY (model, effective_from)
);

CREATE TABLE contracts (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    effective_from BIGINT NOT NULL,
    discount_percent TEXT,
    monthly_commitment TEXT,
    PRIMARY KEY (org_id, effective_from)
);

CREATE TABLE budgets (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    project_id TEXT NOT NULL DEFAULT '',
    monthly_limit TEXT NOT NULL,
    PRIMARY KEY (org_id, project_id)
);

CREATE TABLE audit_log (
    seq BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    org_id TEXT,
    reason TEXT
);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE changes (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    id TEXT NOT NULL
);
"#];

/// Every migration, in order: the first ones, then those shared with the other dialect
/// ([`crate::ddl`]).
fn migrations() -> Vec<String> {
    let mut all: Vec<String> = FIRST_MIGRATIONS.iter().map(|m| (*m).to_owned()).collect();
    all.push(ddl::guard_state(&ddl::POSTGRES));
    all.push(ddl::cache_writes(&ddl::POSTGRES));
    all
}

/// The migration (1-based) that creates the guard state tables; the kv blobs are imported in it.
const GUARD_STATE: usize = 2;

/// An arbitrary constant: the advisory lock that serialises migrations across instances.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// Applies every migration not yet applied, each in its own transaction; returns how many ran.
pub(crate) async fn migrate(client: &mut Object) -> Result<usize, StoreError> {
    let mut applied = 0;
    for (i, sql) in migrations().iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            if i + 1 == GUARD_STATE {
                import_guard_kv(&tx).await?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            applied += 1;
        }
        tx.commit().await?;
    }
    Ok(applied)
}

/// Moves the guard state kept as kv JSON blobs into its tables (once, in the migration's
/// transaction) and deletes the blobs.
async fn import_guard_kv(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let values: HashMap<String, String> = tx
        .query("SELECT key, value FROM kv WHERE key LIKE 'guard.%'", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let s = crate::guard_import::read(&values)?;
    for k in &s.owner_keys {
        crate::pg::insert_owner_key_row(tx, k, true).await?;
    }
    for r in &s.reports {
        crate::pg::insert_report_row(tx, r, true).await?;
    }
    for r in &s.reviews {
        crate::pg::insert_review_row(tx, r, true).await?;
    }
    for e in &s.exemptions {
        crate::pg::insert_exemption_row(tx, e).await?;
    }
    for a in &s.actions {
        crate::pg::insert_action_row(tx, a, true).await?;
    }
    if s.flags_marker {
        tx.execute(
            "INSERT INTO kv (key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&LEGACY_FLAGS_MARKER],
        )
        .await?;
    }
    for k in LEGACY_KEYS {
        tx.execute("DELETE FROM kv WHERE key = $1", &[k]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration that shipped never changes: databases that ran it are not migrated again.
    #[test]
    fn shipped_migrations_keep_their_bytes() {
        let pinned: [u64; 3] = [
            0xc4e4_6055_c3ff_587e,
            0x821e_6748_1a0f_fd66,
            0xc449_53e6_cf6a_5fc0,
        ];
        let all = migrations();
        assert_eq!(all.len(), pinned.len(), "a new migration: pin it here");
        for (i, (sql, want)) in all.iter().zip(pinned).enumerate() {
            assert_eq!(ddl::fingerprint(sql), want, "migration {} changed", i + 1);
        }
    }
}
