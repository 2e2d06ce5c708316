//! Schema migrations, applied in order at start; `PRAGMA user_version` holds how many have run.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
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
    // Prompt-cache writes: a token lane and a price of their own.
    r#"
ALTER TABLE usage ADD COLUMN cache_write_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cache_write_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE prices ADD COLUMN cache_write_price TEXT;
"#,
];

/// Applies every migration not yet applied, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}
