//! Schema migrations, applied in order at start; `PRAGMA user_version` holds how many have run.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use crate::StoreError;
use crate::ddl;
use crate::guard_import::{LEGACY_FLAGS_MARKER, LEGACY_KEYS};

const FIRST_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent_id TEXT REFERENCES organizations(id),
    state TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL
);
CREATE INDEX organizations_parent ON organizations(parent_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX projects_org ON projects(org_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    project_id TEXT REFERENCES projects(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    role TEXT NOT NULL,
    models TEXT,
    rpm INTEGER,
    tpm INTEGER,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_project ON api_keys(project_id);

CREATE TABLE usage (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT,
    key_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX usage_org_time ON usage(org_id, time);

CREATE TABLE usage_hourly (
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    model TEXT NOT NULL,
    hour INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    PRIMARY KEY (org_id, hour, project_id, model)
) WITHOUT ROWID;

CREATE TABLE prices (
    model TEXT NOT NULL,
    effective_from INTEGER NOT NULL,
    input_price TEXT NOT NULL,
    cached_input_price TEXT,
    output_price TEXT NOT NULL,
    PRIMARY KEY (model, effective_from)
);

CREATE TABLE contracts (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    effective_from INTEGER NOT NULL,
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
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    org_id TEXT,
    reason TEXT
);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL
);
"#,
];

/// Every migration, in order: the first ones, then those shared with the other dialect
/// ([`crate::ddl`]).
fn migrations() -> Vec<String> {
    let mut all: Vec<String> = FIRST_MIGRATIONS.iter().map(|m| (*m).to_owned()).collect();
    all.push(ddl::guard_state(&ddl::SQLITE));
    all.push(ddl::cache_writes(&ddl::SQLITE));
    all
}

/// The migration (1-based) that creates the guard state tables; the kv blobs are imported in it.
const GUARD_STATE: usize = 3;

/// Applies every migration not yet applied, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut applied = 0;
    for (i, sql) in migrations().iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i + 1 == GUARD_STATE {
            import_guard_kv(&tx)?;
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

/// Moves the guard state kept as kv JSON blobs into its tables (once, in the migration's
/// transaction) and deletes the blobs.
fn import_guard_kv(tx: &Connection) -> Result<(), StoreError> {
    let mut values = HashMap::new();
    {
        let mut stmt = tx.prepare("SELECT key, value FROM kv WHERE key LIKE 'guard.%'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (k, v) = row?;
            values.insert(k, v);
        }
    }
    let s = crate::guard_import::read(&values)?;
    for k in &s.owner_keys {
        crate::store::insert_owner_key_row(tx, k, true)?;
    }
    for r in &s.reports {
        crate::store::insert_report_row(tx, r, true)?;
    }
    for r in &s.reviews {
        crate::store::insert_review_row(tx, r, true)?;
    }
    for e in &s.exemptions {
        crate::store::insert_exemption_row(tx, e)?;
    }
    for a in &s.actions {
        crate::store::insert_action_row(tx, a, true)?;
    }
    if s.flags_marker {
        tx.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, '1')",
            [LEGACY_FLAGS_MARKER],
        )?;
    }
    for k in LEGACY_KEYS {
        tx.execute("DELETE FROM kv WHERE key = ?1", params![k])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration that shipped never changes: databases that ran it are not migrated again.
    #[test]
    fn shipped_migrations_keep_their_bytes() {
        let pinned: [u64; 4] = [
            0xb186_82a9_e1e5_4a6f,
            0xded8_45cb_eed7_2ffd,
            0xd962_c3d7_89fe_f25f,
            0x6ee1_6ef5_beb8_2748,
        ];
        let all = migrations();
        assert_eq!(all.len(), pinned.len(), "a new migration: pin it here");
        for (i, (sql, want)) in all.iter().zip(pinned).enumerate() {
            assert_eq!(ddl::fingerprint(sql), want, "migration {} changed", i + 1);
        }
    }
}
