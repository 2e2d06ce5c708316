//! Moving up from one machine: copy everything from one store to another (typically
//! `sqlite://…` to `postgres://…`), then verify. Safe to rerun: control rows that exist are kept,
//! and usage records are idempotent by id, so a second run copies nothing new and verifies again.

use crate::types::{UsageAggregate, UsageFilter};
use crate::{Ledger, SpoolConfig, Store, StoreError, is_postgres, sqlite_path};

/// What a copy did and what it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub organizations: usize,
    pub projects: usize,
    pub keys: usize,
    pub prices: usize,
    /// Usage records read from the source, and how many were new in the target.
    pub records: u64,
    pub records_new: u64,
    /// (records, input tokens, output tokens) of the source and of the target after the copy.
    pub source_totals: (u64, u64, u64),
    pub target_totals: (u64, u64, u64),
}

async fn open_ledger(url: &str) -> Result<Ledger, StoreError> {
    if is_postgres(url) {
        Ledger::open_postgres(url, true, 5000, None::<SpoolConfig>)
    } else {
        Ledger::open(sqlite_path(url)?, true, 5000)
    }
}

/// Copies control data and every usage record from `from` to `to` and verifies that every
/// source record is in the target and that per-model sums over the source's organizations match.
pub async fn copy_store(from: &str, to: &str) -> Result<MigrationReport, StoreError> {
    copy_store_with_progress(from, to, |_, _| {}).await
}

/// [`copy_store`], calling `progress(records copied, records in the source)` after each batch.
pub async fn copy_store_with_progress(
    from: &str,
    to: &str,
    progress: impl Fn(u64, u64),
) -> Result<MigrationReport, StoreError> {
    let src = Store::connect(from, 2).await?;
    let dst = Store::connect(to, 2).await?;
    let dump = src.export_control().await?;
    let mut report = MigrationReport {
        organizations: dump.organizations.len(),
        projects: dump.projects.len(),
        keys: dump.keys.len(),
        prices: dump.prices.len(),
        ..MigrationReport::default()
    };
    let orgs: Vec<String> = dump.organizations.iter().map(|o| o.id.clone()).collect();
    dst.import_control(dump).await?;

    let ledger = open_ledger(to).await?;
    let total = src.ledger_totals().await?.0;
    progress(0, total);
    let mut cursor = 0;
    loop {
        let (records, next) = src.records_after(cursor, 5000).await?;
        if records.is_empty() {
            break;
        }
        cursor = next;
        report.records += records.len() as u64;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let news = ledger.import(records).await?;
        report.records_new += news.iter().filter(|n| **n).count() as u64;
        let found = dst.existing_ids(ids.clone()).await?;
        if found.len() != ids.len() {
            return Err(StoreError::Conflict(format!(
                "verification failed: {} of {} copied records are missing in the target",
                ids.len() - found.len(),
                ids.len()
            )));
        }
        progress(report.records, total.max(report.records));
    }
    ledger.flush().await?;
    report.source_totals = src.ledger_totals().await?;
    report.target_totals = dst.ledger_totals().await?;
    if report.records != report.source_totals.0 {
        return Err(StoreError::Conflict(format!(
            "verification failed: read {} records but the source holds {}",
            report.records, report.source_totals.0
        )));
    }
    if !orgs.is_empty() {
        let filter = UsageFilter {
            organizations: orgs,
            ..UsageFilter::default()
        };
        let a: Vec<UsageAggregate> = src.usage(filter.clone()).await?;
        let b: Vec<UsageAggregate> = dst.usage(filter).await?;
        if a != b {
            return Err(StoreError::Conflict(format!(
                "verification failed: usage sums differ (source {a:?}, target {b:?})"
            )));
        }
    }
    Ok(report)
}
