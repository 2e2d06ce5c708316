//! Ledger batch write: one group commit of N usage records into SQLite with strict durability
//! (fsynced before the call returns), the way the writer thread commits a batch.
//!
//! `cargo bench -p tollgate-store --bench ledger`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use tollgate_store::{Ledger, UsageRecord};

static NEXT: AtomicU64 = AtomicU64::new(0);

fn record(now: OffsetDateTime) -> UsageRecord {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    UsageRecord {
        id: format!("req_bench_{i:012}"),
        time: now,
        organization: format!("org_{}", i % 8),
        project: Some(format!("proj_{}", i % 16)),
        key: Some(format!("key_{}", i % 64)),
        model: ["gpt-4o-mini", "gpt-4o"][(i % 2) as usize].into(),
        provider: "sim".into(),
        upstream_model: "gpt-4o-mini".into(),
        input_tokens: 100 + i % 50,
        cached_input_tokens: 10,
        cache_write_input_tokens: 0,
        output_tokens: 16,
        reasoning_tokens: 0,
        status: 200,
        latency_ms: 20,
        streamed: false,
        estimated: false,
        source: "gateway".into(),
    }
}

fn batch_write(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let ledger = Ledger::open(path.to_str().unwrap(), true, 8192).unwrap();
    let mut group = c.benchmark_group("ledger_batch_write_strict");
    for n in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n}_records"), |b| {
            b.iter_batched(
                || {
                    let now = OffsetDateTime::now_utc();
                    (0..n).map(|_| record(now)).collect::<Vec<_>>()
                },
                |batch| {
                    let news = rt.block_on(ledger.import(batch)).unwrap();
                    assert!(news.iter().all(|n| *n));
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, batch_write);
criterion_main!(benches);
