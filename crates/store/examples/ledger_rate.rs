//! Ledger insert rate with strict durability: concurrent appenders (like request handlers) each
//! waiting for their record to be durable, against SQLite and a throwaway PostgreSQL.
//!
//! `cargo run --release -p tollgate-store --example ledger_rate -- [records] [appenders]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Instant;

use time::OffsetDateTime;
use tollgate_store::{Ledger, Store, UsageRecord};

fn record(i: u64, tag: &str) -> UsageRecord {
    UsageRecord {
        id: format!("req_{tag}_{i:010}"),
        time: OffsetDateTime::now_utc(),
        organization: format!("org_{}", i % 50),
        project: Some(format!("proj_{}", i % 200)),
        key: Some(format!("key_{}", i % 1000)),
        model: ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"][(i % 3) as usize].into(),
        provider: "sim".into(),
        upstream_model: "gpt-4o-mini".into(),
        input_tokens: 100 + i % 50,
        cached_input_tokens: 10,
        cache_write_input_tokens: 0,
        output_tokens: 16,
        reasoning_tokens: 0,
        status: 200,
        latency_ms: 20,
        streamed: i % 2 == 0,
        estimated: false,
        source: "gateway".into(),
    }
}

async fn run(name: &str, ledger: Ledger, total: u64, appenders: u64, tag: &str) {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let ledger = ledger.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = a;
            while i < total {
                ledger.append(record(i, &tag)).await.unwrap();
                i += appenders;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = began.elapsed().as_secs_f64();
    let batches = ledger
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{name:<28} {total} records, {appenders} appenders: {:>8.0} records/s ({batches} group commits, {:.1} records each)",
        total as f64 / secs,
        total as f64 / batches.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(100_000);
    let appenders = args.get(1).copied().unwrap_or(256);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let path = path.to_str().unwrap();
    Store::open(path).unwrap();
    run(
        "sqlite (strict)",
        Ledger::open(path, true, 8192).unwrap(),
        total,
        appenders,
        "s",
    )
    .await;

    let pg = tollgate_testkit::Postgres::start().unwrap();
    let url = pg.database("bench").unwrap();
    Store::connect(&url, 1).await.unwrap();
    run(
        "postgres (strict)",
        Ledger::open_postgres(&url, true, 8192, None).unwrap(),
        total,
        appenders,
        "p",
    )
    .await;
    run(
        "postgres (relaxed)",
        Ledger::open_postgres(&url, false, 8192, None).unwrap(),
        total,
        appenders,
        "r",
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    pg.stop().unwrap();
    run(
        "postgres down: spool (fsync)",
        Ledger::open_postgres(
            &url,
            true,
            8192,
            Some(tollgate_store::SpoolConfig {
                dir: spool.path().to_path_buf(),
                max_bytes: 1 << 34,
            }),
        )
        .unwrap(),
        total / 4,
        appenders,
        "d",
    )
    .await;
}
