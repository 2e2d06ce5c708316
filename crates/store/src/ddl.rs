//! Migrations that are the same in SQLite and PostgreSQL but for column types: one text, with
//! each dialect's types put in. What a migration writes must never change once it shipped (a
//! database that ran it is not migrated again); the tests pin every migration's bytes.

/// The column types of one SQL dialect.
pub(crate) struct Types {
    /// Integers (times in unix microseconds, token counts).
    pub int: &'static str,
    pub real: &'static str,
    pub blob: &'static str,
    /// An integer primary key that numbers rows in insertion order.
    pub serial: &'static str,
}

pub(crate) const SQLITE: Types = Types {
    int: "INTEGER",
    real: "REAL",
    blob: "BLOB",
    serial: "INTEGER",
};

pub(crate) const POSTGRES: Types = Types {
    int: "BIGINT",
    real: "DOUBLE PRECISION",
    blob: "BYTEA",
    serial: "BIGSERIAL",
};

/// The guard's state as tables (it was JSON blobs in kv; the migration imports them).
pub(crate) fn guard_state(t: &Types) -> String {
    format!(
        r#"
CREATE TABLE owner_keys (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash {blob} NOT NULL UNIQUE,
    created_at {int} NOT NULL,
    revoked_at {int}
);

CREATE TABLE owner_reports (
    seq {serial} PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time {int} NOT NULL,
    owner TEXT NOT NULL,
    org_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX owner_reports_owner ON owner_reports(owner);

CREATE TABLE owner_reviews (
    org_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    since {int} NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (org_id, owner)
);

CREATE TABLE guard_exemptions (
    org_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (org_id, owner)
);

CREATE TABLE guard_actions (
    seq {serial} PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    action TEXT NOT NULL,
    score {real} NOT NULL,
    threshold {real} NOT NULL,
    time {int} NOT NULL
);
CREATE INDEX guard_actions_org ON guard_actions(org_id);
"#,
        int = t.int,
        real = t.real,
        blob = t.blob,
        serial = t.serial,
    )
}

/// Prompt-cache writes: a token lane and a price of their own.
pub(crate) fn cache_writes(t: &Types) -> String {
    format!(
        r#"
ALTER TABLE usage ADD COLUMN cache_write_input_tokens {int} NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cache_write_input_tokens {int} NOT NULL DEFAULT 0;
ALTER TABLE prices ADD COLUMN cache_write_price TEXT;
"#,
        int = t.int
    )
}

/// FNV-1a (64 bits) of a migration's text: what the tests pin.
#[cfg(test)]
pub(crate) fn fingerprint(sql: &str) -> u64 {
    sql.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
