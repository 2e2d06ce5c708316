//! The PostgreSQL ledger writer: one thread with its own small runtime, group commit of
//! everything queued meanwhile as one transaction (a multi-row `INSERT … SELECT FROM UNNEST` with
//! `ON CONFLICT (id) DO NOTHING`, then the hourly rollups), idempotent by record id.
//!
//! When PostgreSQL fails or is slower than [`crate::pg::PG_TIMEOUT`], records go to the local
//! [`Spool`] instead (acknowledged once written there) and the writer keeps the spool's order:
//! while the spool holds records, new records are appended behind them, and every 500 ms the
//! writer tries to drain the whole spool into PostgreSQL, emptying it only after that commit.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::StoreError;
use crate::ledger::{Command, Ledger, LedgerStats};
use crate::pg::{PG_TIMEOUT, conn, pool};
use crate::spool::Spool;
use crate::types::{UsageRecord, to_micros};

const HOUR_US: i64 = 3_600_000_000;
const DRAIN_EVERY: Duration = Duration::from_millis(500);

/// Where the writer spools when the store fails.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl Ledger {
    /// Starts a PostgreSQL ledger writer for `url`. With `spool`, records are kept locally while
    /// the database is unreachable and drained when it returns; without, commits fail then.
    pub fn open_postgres(
        url: &str,
        strict: bool,
        batch_max: usize,
        spool: Option<SpoolConfig>,
    ) -> Result<Ledger, StoreError> {
        let pool = pool(url, 2)?;
        let spool = match spool {
            Some(s) => Some(
                Spool::open(&s.dir, s.max_bytes, strict)
                    .map_err(|e| StoreError::Task(e.to_string()))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(batch_max.max(1) * 4);
        let stats = Arc::new(LedgerStats::default());
        let writer_stats = stats.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tollgate-ledger".into())
            .spawn(move || {
                runtime.block_on(writer_loop(
                    pool,
                    rx,
                    batch_max.max(1),
                    strict,
                    spool,
                    &writer_stats,
                ))
            })?;
        Ok(Ledger::from_parts(tx, stats))
    }
}

fn publish(stats: &LedgerStats, spool: &Option<Spool>) {
    if let Some(s) = spool {
        stats.spooled.store(s.records, Ordering::Relaxed);
        stats.spool_bytes.store(s.bytes, Ordering::Relaxed);
        stats.spool_full.store(s.is_full(), Ordering::Relaxed);
    }
}

async fn writer_loop(
    pool: Pool,
    mut rx: mpsc::Receiver<Command>,
    batch_max: usize,
    strict: bool,
    mut spool: Option<Spool>,
    stats: &LedgerStats,
) {
    let mut batch: Vec<Command> = Vec::with_capacity(batch_max);
    let mut next_drain = Instant::now();
    publish(stats, &spool);
    loop {
        let pending = spool.as_ref().is_some_and(Spool::pending);
        let first = if pending {
            tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep_until(next_drain.into()) => {
                    drain(&pool, batch_max, strict, &mut spool, stats).await;
                    next_drain = Instant::now() + DRAIN_EVERY;
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        stats.queued.fetch_sub(n, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        handle_batch(&pool, strict, &mut spool, stats, &mut batch).await;
        publish(stats, &spool);
    }
    // Senders gone (shutdown): one last attempt to empty the spool.
    drain(&pool, batch_max, strict, &mut spool, stats).await;
}

async fn handle_batch(
    pool: &Pool,
    strict: bool,
    spool: &mut Option<Spool>,
    stats: &LedgerStats,
    batch: &mut Vec<Command>,
) {
    let appends: Vec<&UsageRecord> = batch
        .iter()
        .filter_map(|c| match c {
            Command::Append(r, _) => Some(&**r),
            _ => None,
        })
        .collect();
    let spooling = spool.as_ref().is_some_and(Spool::pending);
    // Outcome of the appends: Ok(new ids) from the store, Ok(None) when spooled, or an error.
    let outcome: Result<Option<HashSet<String>>, String> = if spooling {
        Err(String::new())
    } else {
        let began = Instant::now();
        let r = tokio::time::timeout(PG_TIMEOUT, write(pool, strict, &appends)).await;
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.last_commit_us.store(took, Ordering::Relaxed);
        stats.commit_us_total.fetch_add(took, Ordering::Relaxed);
        match r {
            Ok(Ok(new)) => Ok(Some(new)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the store did not commit within {PG_TIMEOUT:?}")),
        }
    };
    let outcome = match (outcome, spool.as_mut()) {
        (Ok(v), _) => Ok(v),
        (Err(e), Some(s)) => {
            if !e.is_empty() {
                tracing::warn!(error = %e, records = appends.len(), "Store commit failed; spooling usage records locally.");
            }
            match s.append(&appends) {
                Ok(()) => {
                    stats
                        .spooled_total
                        .fetch_add(appends.len() as u64, Ordering::Relaxed);
                    Ok(None)
                }
                Err(se) => Err(format!("{se} (store: {e})")),
            }
        }
        (Err(e), None) => Err(e),
    };
    // Spool depth is visible before anyone is told their record is durable.
    publish(stats, spool);
    let mut new_ids = match &outcome {
        Ok(Some(set)) => set.clone(),
        _ => HashSet::new(),
    };
    for cmd in batch.drain(..) {
        match cmd {
            Command::Append(r, reply) => {
                let result = match &outcome {
                    Ok(Some(_)) => {
                        let new = new_ids.remove(&r.id);
                        if new {
                            stats.records.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(new)
                    }
                    Ok(None) => Ok(true),
                    Err(e) => {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        Err(e.clone())
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Flush(reply) => {
                let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
            }
            Command::Import(records, reply) => {
                // Imports are all-or-nothing in the store itself; they are never spooled.
                let refs: Vec<&UsageRecord> = records.iter().collect();
                let r = match tokio::time::timeout(PG_TIMEOUT, write(pool, strict, &refs)).await {
                    Ok(Ok(new)) => {
                        let mut new = new;
                        let flags: Vec<bool> = records.iter().map(|r| new.remove(&r.id)).collect();
                        let added = flags.iter().filter(|f| **f).count() as u64;
                        stats.records.fetch_add(added, Ordering::Relaxed);
                        stats
                            .duplicates
                            .fetch_add(flags.len() as u64 - added, Ordering::Relaxed);
                        Ok(flags)
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the store did not commit in time".into()),
                };
                let _ = reply.send(r);
            }
        }
    }
}

/// Tries to move the whole spool into the store; empties it only after the commit.
async fn drain(
    pool: &Pool,
    batch_max: usize,
    strict: bool,
    spool: &mut Option<Spool>,
    stats: &LedgerStats,
) {
    let Some(s) = spool.as_mut() else { return };
    if !s.pending() {
        return;
    }
    let records = match s.read_all() {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "Cannot read the spool.");
            return;
        }
    };
    for chunk in records.chunks(batch_max) {
        let refs: Vec<&UsageRecord> = chunk.iter().collect();
        match tokio::time::timeout(PG_TIMEOUT, write(pool, strict, &refs)).await {
            Ok(Ok(new)) => {
                stats.records.fetch_add(new.len() as u64, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add((chunk.len() - new.len()) as u64, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "Spool drain: the store is still failing.");
                return;
            }
            Err(_) => return,
        }
    }
    match s.clear() {
        Ok(()) => {
            stats
                .drained_total
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::info!(records = records.len(), "Spool drained into the store.");
        }
        Err(error) => tracing::error!(%error, "Cannot empty the drained spool."),
    }
    publish(stats, spool);
}

#[derive(Default, Clone, Copy)]
struct Sums {
    requests: i64,
    input: i64,
    cached: i64,
    cache_write: i64,
    output: i64,
    reasoning: i64,
}

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One transaction: insert the records (skipping known ids) and add the new ones to the hourly
/// rollups. Returns the ids that were new.
async fn write(
    pool: &Pool,
    strict: bool,
    records: &[&UsageRecord],
) -> Result<HashSet<String>, StoreError> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let mut c = conn(pool).await?;
    let tx = c.transaction().await?;
    if !strict {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
    }
    let n = records.len();
    let mut ids = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut orgs = Vec::with_capacity(n);
    let mut projects: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut keys: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut providers = Vec::with_capacity(n);
    let mut upstreams = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    let mut cached = Vec::with_capacity(n);
    let mut cache_write = Vec::with_capacity(n);
    let mut output = Vec::with_capacity(n);
    let mut reasoning = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut latency = Vec::with_capacity(n);
    let mut streamed = Vec::with_capacity(n);
    let mut estimated = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    for r in records {
        ids.push(r.id.as_str());
        times.push(to_micros(r.time));
        orgs.push(r.organization.as_str());
        projects.push(r.project.as_deref());
        keys.push(r.key.as_deref());
        models.push(r.model.as_str());
        providers.push(r.provider.as_str());
        upstreams.push(r.upstream_model.as_str());
        input.push(sat(r.input_tokens));
        cached.push(sat(r.cached_input_tokens));
        cache_write.push(sat(r.cache_write_input_tokens));
        output.push(sat(r.output_tokens));
        reasoning.push(sat(r.reasoning_tokens));
        status.push(i32::from(r.status));
        latency.push(sat(r.latency_ms));
        streamed.push(r.streamed);
        estimated.push(r.estimated);
        source.push(r.source.as_str());
    }
    let rows = tx
        .query(
            "INSERT INTO usage (id, time, org_id, project_id, key_id, model, provider, upstream_model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, status, latency_ms, streamed, estimated, source, cache_write_input_tokens) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[], $13::INTEGER[], $14::BIGINT[], $15::BOOLEAN[], $16::BOOLEAN[], $17::TEXT[], $18::BIGINT[]) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
            &[
                &ids, &times, &orgs, &projects, &keys, &models, &providers, &upstreams, &input,
                &cached, &output, &reasoning, &status, &latency, &streamed, &estimated, &source,
                &cache_write,
            ],
        )
        .await?;
    let new: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    // Rollups of the new records, sorted so concurrent instances lock rows in the same order.
    let mut rollup: BTreeMap<(&str, &str, &str, i64), Sums> = BTreeMap::new();
    let mut seen = HashSet::new();
    for r in records {
        if !new.contains(&r.id) || !seen.insert(r.id.as_str()) {
            continue;
        }
        let hour = to_micros(r.time).div_euclid(HOUR_US) * HOUR_US;
        let s = rollup
            .entry((
                r.organization.as_str(),
                r.project.as_deref().unwrap_or(""),
                r.model.as_str(),
                hour,
            ))
            .or_default();
        s.requests += 1;
        s.input = s.input.saturating_add(sat(r.input_tokens));
        s.cached = s.cached.saturating_add(sat(r.cached_input_tokens));
        s.cache_write = s
            .cache_write
            .saturating_add(sat(r.cache_write_input_tokens));
        s.output = s.output.saturating_add(sat(r.output_tokens));
        s.reasoning = s.reasoning.saturating_add(sat(r.reasoning_tokens));
    }
    if !rollup.is_empty() {
        let mut o = Vec::new();
        let mut p = Vec::new();
        let mut m = Vec::new();
        let mut h = Vec::new();
        let (mut rq, mut i, mut c, mut out, mut re, mut cw) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((org, project, model, hour), s) in &rollup {
            o.push(*org);
            p.push(*project);
            m.push(*model);
            h.push(*hour);
            rq.push(s.requests);
            i.push(s.input);
            c.push(s.cached);
            out.push(s.output);
            re.push(s.reasoning);
            cw.push(s.cache_write);
        }
        tx.execute(
            "INSERT INTO usage_hourly AS u (org_id, project_id, model, hour, requests, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cache_write_input_tokens) \
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[]) \
             ON CONFLICT (org_id, hour, project_id, model) DO UPDATE SET requests = u.requests + excluded.requests, input_tokens = LEAST(u.input_tokens, 9223372036854775807 - excluded.input_tokens) + excluded.input_tokens, cached_input_tokens = LEAST(u.cached_input_tokens, 9223372036854775807 - excluded.cached_input_tokens) + excluded.cached_input_tokens, output_tokens = LEAST(u.output_tokens, 9223372036854775807 - excluded.output_tokens) + excluded.output_tokens, reasoning_tokens = LEAST(u.reasoning_tokens, 9223372036854775807 - excluded.reasoning_tokens) + excluded.reasoning_tokens, cache_write_input_tokens = LEAST(u.cache_write_input_tokens, 9223372036854775807 - excluded.cache_write_input_tokens) + excluded.cache_write_input_tokens",
            &[&o, &p, &m, &h, &rq, &i, &c, &out, &re, &cw],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(new)
}
