//! `GET /metrics`: Prometheus text format. Ledger and spool depth, store commit latency (and a
//! live round trip), change-feed progress, shared-limit health, and request counters.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::app::App;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// The metrics page.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let began = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
    let ping_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    let store_up = matches!(ping, Ok(Ok(())));
    let s = app.ledger.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    metric(
        &mut out,
        "tollgate_ledger_records_total",
        "counter",
        "Usage records committed to the store.",
        load(&s.records),
    );
    metric(
        &mut out,
        "tollgate_ledger_duplicates_total",
        "counter",
        "Records ignored because their id was already stored.",
        load(&s.duplicates),
    );
    metric(
        &mut out,
        "tollgate_ledger_failures_total",
        "counter",
        "Records that could not be made durable (the request got 503).",
        load(&s.failures),
    );
    metric(
        &mut out,
        "tollgate_ledger_batches_total",
        "counter",
        "Group commits.",
        load(&s.batches),
    );
    metric(
        &mut out,
        "tollgate_ledger_queued",
        "gauge",
        "Commands waiting for the ledger writer.",
        load(&s.queued),
    );
    metric(
        &mut out,
        "tollgate_spool_records",
        "gauge",
        "Usage records waiting in the local spool for the store.",
        load(&s.spooled),
    );
    metric(
        &mut out,
        "tollgate_spool_bytes",
        "gauge",
        "Size of the local spool file.",
        load(&s.spool_bytes),
    );
    metric(
        &mut out,
        "tollgate_spool_full",
        "gauge",
        "1 while the spool is full and new requests are refused.",
        u8::from(s.spool_full.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "tollgate_spool_written_total",
        "counter",
        "Records written to the spool.",
        load(&s.spooled_total),
    );
    metric(
        &mut out,
        "tollgate_spool_drained_total",
        "counter",
        "Records drained from the spool into the store.",
        load(&s.drained_total),
    );
    metric(
        &mut out,
        "tollgate_store_commit_seconds_last",
        "gauge",
        "Duration of the last ledger commit.",
        secs(load(&s.last_commit_us)),
    );
    metric(
        &mut out,
        "tollgate_store_commit_seconds_sum",
        "counter",
        "Total time spent in ledger commits (divide by batches_total).",
        secs(load(&s.commit_us_total)),
    );
    metric(
        &mut out,
        "tollgate_store_ping_seconds",
        "gauge",
        "Round trip of a trivial query, measured for this scrape.",
        secs(ping_us),
    );
    metric(
        &mut out,
        "tollgate_store_up",
        "gauge",
        "1 when the store answered this scrape's query.",
        u8::from(store_up),
    );
    metric(
        &mut out,
        "tollgate_sync_last_seq",
        "gauge",
        "Last change-feed entry applied.",
        app.sync.last_seq.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "tollgate_sync_applied_total",
        "counter",
        "Change-feed entries applied.",
        load(&app.sync.applied),
    );
    metric(
        &mut out,
        "tollgate_sync_errors_total",
        "counter",
        "Failed change-feed polls.",
        load(&app.sync.errors),
    );
    metric(
        &mut out,
        "tollgate_ratelimit_refused_total",
        "counter",
        "Requests refused by rate limits (429, or 503 in closed mode).",
        load(&app.limits.refused),
    );
    metric(
        &mut out,
        "tollgate_ratelimit_redis_errors_total",
        "counter",
        "Failed calls to the shared-limit Redis.",
        load(&app.limits.redis_errors),
    );
    metric(
        &mut out,
        "tollgate_ratelimit_fallbacks_total",
        "counter",
        "Requests limited locally because Redis failed (on_redis_failure = open).",
        load(&app.limits.fallbacks),
    );
    metric(
        &mut out,
        "tollgate_keys",
        "gauge",
        "Keys held in memory.",
        app.tenancy.key_count(),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
