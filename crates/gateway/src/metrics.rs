//! `GET /metrics`: the request path's metrics ([`crate::meters::Metrics`]) and the gauges read at
//! scrape time (ledger and spool, store latency, change feed, limits, breakers, guard actions), in
//! the Prometheus text format (0.0.4), encoded by `prometheus-client`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::app::App;
use crate::meters::Name;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn gauge_f(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    model: Name,
    provider: Name,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

/// The scrape-time values: ledger, spool, store, change feed, limits, breakers, guard.
fn scraped(app: &App, store_up: bool, ping: Duration) -> Registry {
    let mut r = Registry::default();
    let s = app.ledger.stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // Names kept from earlier versions (outside checks read them): counters are registered
    // without `_total`, which the encoder adds.
    counter(
        &mut r,
        "tollgate_ledger_records",
        "Usage records committed to the store.",
        load(&s.records),
    );
    counter(
        &mut r,
        "tollgate_ledger_duplicates",
        "Records ignored because their id was already stored.",
        load(&s.duplicates),
    );
    counter(
        &mut r,
        "tollgate_ledger_failures",
        "Records that could not be made durable (the request got 503).",
        load(&s.failures),
    );
    counter(
        &mut r,
        "tollgate_ledger_batches",
        "Group commits.",
        load(&s.batches),
    );
    gauge(
        &mut r,
        "tollgate_ledger_queued",
        "Commands waiting for the ledger writer.",
        int(load(&s.queued)),
    );
    gauge(
        &mut r,
        "tollgate_spool_records",
        "Usage records waiting in the local spool for the store.",
        int(load(&s.spooled)),
    );
    gauge(
        &mut r,
        "tollgate_spool_bytes",
        "Size of the local spool file.",
        int(load(&s.spool_bytes)),
    );
    gauge(
        &mut r,
        "tollgate_spool_full",
        "1 while the spool is full and new requests are refused.",
        i64::from(s.spool_full.load(Ordering::Relaxed)),
    );
    counter(
        &mut r,
        "tollgate_spool_written",
        "Records written to the spool.",
        load(&s.spooled_total),
    );
    counter(
        &mut r,
        "tollgate_spool_drained",
        "Records drained from the spool into the store.",
        load(&s.drained_total),
    );
    let us = |v: u64| Duration::from_micros(v).as_secs_f64();
    gauge_f(
        &mut r,
        "tollgate_store_commit_seconds_last",
        "Duration of the last ledger commit.",
        us(load(&s.last_commit_us)),
    );
    gauge_f(
        &mut r,
        "tollgate_store_commit_seconds_sum",
        "Total time spent in ledger commits (divide by tollgate_ledger_batches_total for the mean).",
        us(load(&s.commit_us_total)),
    );
    gauge_f(
        &mut r,
        "tollgate_store_ping_seconds",
        "Round trip of a trivial query, measured for this scrape.",
        ping.as_secs_f64(),
    );
    gauge(
        &mut r,
        "tollgate_store_up",
        "1 when the store answered this scrape's query.",
        i64::from(store_up),
    );
    gauge(
        &mut r,
        "tollgate_sync_last_seq",
        "Last change-feed entry applied.",
        app.sync.last_seq.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "tollgate_sync_applied",
        "Change-feed entries applied.",
        load(&app.sync.applied),
    );
    counter(
        &mut r,
        "tollgate_sync_errors",
        "Failed change-feed polls.",
        load(&app.sync.errors),
    );
    counter(
        &mut r,
        "tollgate_ratelimit_refused",
        "Requests refused by rate limits (429, or 503 in closed mode).",
        load(&app.limits.refused),
    );
    counter(
        &mut r,
        "tollgate_ratelimit_redis_errors",
        "Failed calls to the shared-limit Redis.",
        load(&app.limits.redis_errors),
    );
    counter(
        &mut r,
        "tollgate_ratelimit_fallbacks",
        "Requests limited locally because Redis failed (on_redis_failure = open).",
        load(&app.limits.fallbacks),
    );
    gauge(
        &mut r,
        "tollgate_keys",
        "Keys held in memory.",
        int(app.tenancy.key_count() as u64),
    );
    let breakers = Family::<BreakerLabels, Gauge>::default();
    let now = crate::upstream::now_ms();
    for name in &app.model_order {
        let Some(m) = app.models.get(name) else {
            continue;
        };
        for route in &m.routes {
            let (state, _) = route.health.state(now);
            for s in ["closed", "open", "half-open"] {
                breakers
                    .get_or_create(&BreakerLabels {
                        model: m.metrics.label.clone(),
                        provider: route.metrics.provider.clone(),
                        state: s,
                    })
                    .set(i64::from(s == state));
            }
        }
    }
    r.register(
        "tollgate_breaker_state",
        "Circuit breaker of each route (model, provider): 1 for its current state.",
        breakers,
    );
    let actions = Family::<ActionLabels, Counter>::default();
    for (action, n) in app.guard.counters.snapshot() {
        actions.get_or_create(&ActionLabels { action }).inc_by(n);
    }
    r.register(
        "tollgate_guard_actions",
        "Usage-policy enforcement: flags raised and the actions taken on the request path.",
        actions,
    );
    r
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let began = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
    let ping_time = began.elapsed();
    let store_up = matches!(ping, Ok(Ok(())));
    let mut out = String::with_capacity(16 << 10);
    let live = scraped(&app, store_up, ping_time);
    let encoded =
        prometheus_client::encoding::prometheus_text::encode(&mut out, &live).and_then(|()| {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &app.metrics.registry)
        });
    if encoded.is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
