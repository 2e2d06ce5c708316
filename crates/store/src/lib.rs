//! Storage: control data (organizations, projects, keys, prices, contracts, audit, the guard's
//! enforcement state) and the durable usage ledger. This is the only crate that speaks SQL.
//!
//! Two backends with the same behaviour: SQLite (`sqlite://PATH`, one machine) and PostgreSQL
//! (`postgres://…`, many gateway instances on one database). Both apply schema migrations at
//! open, write a `changes` row in the same transaction as every control change (instances poll it
//! to refresh their in-memory state), keep hourly rollups in the ledger transaction, and are
//! idempotent by record id. The PostgreSQL ledger spools to a local file while the database is
//! unreachable or slow ([`SpoolConfig`]).
//!
//! Two handles share one database:
//! - [`Store`] for control data and queries, used through `spawn_blocking` off the async runtime;
//! - [`Ledger`], a dedicated writer thread that appends usage records with group commit: each
//!   batch is one transaction, so one fsync covers every record that arrived while the previous
//!   batch was committing. A caller waits for its record to be durable, never for other work.
//!
//! Records are stored as given; ids and timestamps are made by the caller. Every inserted record
//! also adds to an hourly rollup in the same transaction, so month-scale queries read rollups and
//! only the partial hours at a range's edges from raw records.

mod ddl;
mod facade;
mod guard_import;
mod ledger;
mod migrate;
mod pg;
mod pg_ledger;
mod pg_schema;
pub mod private;
mod schema;
mod spool;
mod store;
mod types;

pub use facade::{Backend, Store};
pub use guard_import::LEGACY_FLAGS_MARKER;
pub use ledger::{Ledger, LedgerStats};
pub use migrate::{MigrationReport, copy_store, copy_store_with_progress};
pub use pg_ledger::SpoolConfig;
pub use spool::SpoolError;
pub use types::*;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Pg(String),
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("the ledger writer has stopped")]
    LedgerClosed,
    #[error("{0}")]
    Conflict(String),
    #[error("unsupported storage url '{0}' (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("cannot create directory for the database: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the SQLite file at `path` with the pragmas Tollgate relies on, creating its directory.
pub(crate) fn open_connection(
    path: &str,
    durability_full: bool,
) -> Result<rusqlite::Connection, StoreError> {
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        private::create_dir(dir)?;
    }
    // Owner-only: SQLite gives the -wal and -shm files the mode of the database file.
    if path != ":memory:" {
        private::ensure_file(std::path::Path::new(path))?;
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    for companion in ["-wal", "-shm"] {
        private::restrict(std::path::Path::new(&format!("{path}{companion}")))?;
    }
    conn.pragma_update(
        None,
        "synchronous",
        if durability_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Turns `sqlite://PATH` into the file path.
pub fn sqlite_path(url: &str) -> Result<&str, StoreError> {
    url.strip_prefix("sqlite://")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The source carries the server's message (e.g. a constraint name); `Display` alone
        // says only "db error".
        match e.as_db_error() {
            Some(db) => StoreError::Pg(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Pg(e.to_string()),
        }
    }
}

/// Whether a storage URL names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
