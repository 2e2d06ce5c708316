//! The local spool: an append-only file of usage records (JSON lines) written when the store is
//! unreachable or slow. A record is acknowledged only after its line is written (and, in strict
//! durability, fsynced). The ledger writer drains the spool into the store in order when the
//! store returns; ids make a replay after a crash mid-drain idempotent.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::UsageRecord;

/// Why a spool append failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({0} bytes): refusing unbilled work")]
    Full(u64),
    #[error("spool i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

pub(crate) struct Spool {
    path: PathBuf,
    file: File,
    pub bytes: u64,
    pub records: u64,
    max_bytes: u64,
    fsync: bool,
}

impl Spool {
    /// Opens (creating) `dir/ledger.spool`, counting what an earlier run left in it.
    pub fn open(dir: &Path, max_bytes: u64, fsync: bool) -> Result<Spool, SpoolError> {
        crate::private::create_dir(dir)?;
        let path = dir.join("ledger.spool");
        let file = crate::private::open_append(&path)?;
        let mut spool = Spool {
            path,
            file,
            bytes: 0,
            records: 0,
            max_bytes,
            fsync,
        };
        spool.bytes = spool.file.metadata()?.len();
        spool.records = spool.read_all()?.len() as u64;
        Ok(spool)
    }

    /// Appends records; all or none become durable before this returns.
    pub fn append(&mut self, records: &[&UsageRecord]) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(records.len() * 300);
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let len = buf.len() as u64;
        if self.bytes + len > self.max_bytes {
            return Err(SpoolError::Full(self.max_bytes));
        }
        self.file.write_all(&buf)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.bytes += len;
        self.records += records.len() as u64;
        Ok(())
    }

    /// Every record in the spool, in order. A torn last line (a crash mid-write, never
    /// acknowledged) is skipped.
    pub fn read_all(&self) -> Result<Vec<UsageRecord>, SpoolError> {
        let reader = BufReader::new(File::open(&self.path)?);
        let mut out = Vec::new();
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<UsageRecord>(&line) {
                Ok(r) => out.push(r),
                Err(error) => tracing::warn!(%error, "Skipping a torn spool line."),
            }
        }
        Ok(out)
    }

    /// Empties the spool once everything in it is in the store.
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.bytes = 0;
        self.records = 0;
        Ok(())
    }

    pub fn pending(&self) -> bool {
        self.records > 0
    }

    pub fn is_full(&self) -> bool {
        // Full when not even a small record fits any more.
        self.bytes + 1024 > self.max_bytes
    }
}
