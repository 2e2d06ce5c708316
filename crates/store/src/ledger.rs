//! The durable usage ledger: one writer thread, group commit, idempotent by record id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Statement, params};
use tokio::sync::{mpsc, oneshot};

use crate::types::{UsageRecord, to_micros};
use crate::{StoreError, open_connection};

const HOUR_US: i64 = 3_600_000_000;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, String>>;

pub(crate) enum Command {
    /// One record; the reply says whether it was new (false: its id was already recorded).
    Append(Box<UsageRecord>, Option<Reply<bool>>),
    /// A batch that is stored whole or not at all; the reply gives, per record, whether it was new.
    Import(Vec<UsageRecord>, Reply<Vec<bool>>),
    /// Answers once everything sent before it is durable.
    Flush(Reply<()>),
}

/// Counters of the writer, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct LedgerStats {
    pub records: AtomicU64,
    pub duplicates: AtomicU64,
    pub batches: AtomicU64,
    pub queued: AtomicU64,
    pub failures: AtomicU64,
    /// Records waiting in the local spool (PostgreSQL unreachable or slow).
    pub spooled: AtomicU64,
    /// Bytes of the local spool file.
    pub spool_bytes: AtomicU64,
    /// Records written to the spool since start, and drained from it into the store.
    pub spooled_total: AtomicU64,
    pub drained_total: AtomicU64,
    /// The spool reached `spool_max_bytes`: new requests are refused until it drains.
    pub spool_full: AtomicBool,
    /// Duration of the last store commit, in microseconds, and the sum and count of all.
    pub last_commit_us: AtomicU64,
    pub commit_us_total: AtomicU64,
}

/// Handle to the ledger writer; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    stats: Arc<LedgerStats>,
}

impl Ledger {
    /// Opens the ledger at `path` and starts its writer thread. `strict` makes each commit durable
    /// (fsync) before callers are told; `batch_max` bounds one group commit. Commits are paced
    /// with the default [`DEFAULT_COMMIT_DELAY`].
    pub fn open(path: &str, strict: bool, batch_max: usize) -> Result<Ledger, StoreError> {
        Ledger::open_paced(path, strict, batch_max, DEFAULT_COMMIT_DELAY)
    }

    /// As [`Ledger::open`], with the longest a group commit may wait for more records while
    /// records arrive fast (zero: commit as soon as the writer is free).
    pub fn open_paced(
        path: &str,
        strict: bool,
        batch_max: usize,
        commit_delay: Duration,
    ) -> Result<Ledger, StoreError> {
        let mut conn = open_connection(path, strict)?;
        crate::schema::migrate(&mut conn)?;
        // The writer's statements must compile against this schema: refuse to start otherwise.
        drop(Statements::prepare(&conn)?);
        let (tx, rx) = mpsc::channel(batch_max.max(1) * 4);
        let stats = Arc::new(LedgerStats::default());
        let writer_stats = stats.clone();
        let pacer = Pacer::new(commit_delay, batch_max.max(1));
        std::thread::Builder::new()
            .name("tollgate-ledger".into())
            .spawn(move || writer_loop(conn, rx, pacer, &writer_stats))?;
        Ok(Ledger { tx, stats })
    }

    /// Appends one record and waits until it is durable. Returns false when a record with the
    /// same id was already recorded (nothing changes then).
    pub async fn append(&self, record: UsageRecord) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(Box::new(record), Some(reply)))
            .await?;
        rx.await
            .map_err(|_| StoreError::LedgerClosed)?
            .map_err(StoreError::Task)
    }

    /// Appends one record without waiting for it to be written (relaxed durability).
    pub async fn append_background(&self, record: UsageRecord) -> Result<(), StoreError> {
        self.send(Command::Append(Box::new(record), None)).await
    }

    /// Stores a batch atomically; per record, whether it was new (false = duplicate id).
    pub async fn import(&self, records: Vec<UsageRecord>) -> Result<Vec<bool>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Import(records, reply)).await?;
        rx.await
            .map_err(|_| StoreError::LedgerClosed)?
            .map_err(StoreError::Task)
    }

    /// Waits until everything appended before is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush(reply)).await?;
        rx.await
            .map_err(|_| StoreError::LedgerClosed)?
            .map_err(StoreError::Task)
    }

    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// False while the spool is full: new requests must be refused (they could not be billed).
    pub fn accepting(&self) -> bool {
        !self.stats.spool_full.load(Ordering::Relaxed)
    }

    pub(crate) fn from_parts(tx: mpsc::Sender<Command>, stats: Arc<LedgerStats>) -> Ledger {
        Ledger { tx, stats }
    }

    async fn send(&self, cmd: Command) -> Result<(), StoreError> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(cmd).await.map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            StoreError::LedgerClosed
        })
    }
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

/// The default longest wait of a group commit for more records (see [`Pacer`]).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(1000);

/// Fewest records a wait must be expected to add before the writer waits at all: below it (one
/// request in flight, moderate rates) every commit starts at once and adds no latency.
const PACE_MIN_GAIN: f64 = 8.0;

/// Time constant of the arrival-rate average.
const PACE_MEMORY: Duration = Duration::from_millis(20);

/// Group-commit pacing. Each commit costs a fixed fsync and WAL frame writes whatever its size,
/// so at high arrival rates a short wait for more records saves more CPU than it costs latency
/// (PostgreSQL's `commit_delay`/`commit_siblings` rule, driven by the measured arrival rate
/// instead of a count of open transactions). The wait only happens when `rate × delay` promises
/// at least [`PACE_MIN_GAIN`] more records, and ends as soon as that many have come.
struct Pacer {
    delay: Duration,
    batch_max: usize,
    /// Records per second, an exponentially weighted average over recent batches.
    rate: f64,
    last_batch: Instant,
}

impl Pacer {
    fn new(delay: Duration, batch_max: usize) -> Pacer {
        Pacer {
            delay,
            batch_max,
            rate: 0.0,
            last_batch: Instant::now(),
        }
    }

    /// Records the arrival of a batch of `n` records collected at `now`. The average forgets
    /// with time, not with batches: after a pause of a few [`PACE_MEMORY`]s the old rate is gone,
    /// so the first requests after a burst are not held back by it.
    fn observe(&mut self, n: usize, now: Instant) {
        let dt = now.duration_since(self.last_batch).as_secs_f64().max(1e-6);
        self.last_batch = now;
        let rate = n as f64 / dt;
        let keep = (-dt / PACE_MEMORY.as_secs_f64()).exp();
        self.rate = keep * self.rate + (1.0 - keep) * rate;
    }

    /// How many records the batch should reach before committing, or `None` to commit now.
    fn target(&self, have: usize) -> Option<usize> {
        if self.delay.is_zero() {
            return None;
        }
        let gain = self.rate * self.delay.as_secs_f64();
        if gain < PACE_MIN_GAIN {
            return None;
        }
        let want = (have as f64 + gain).min(self.batch_max as f64) as usize;
        (want > have).then_some(want)
    }
}

fn drain_into(rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

/// Collects one batch: what is queued now, then, when the pacer asks for it, what arrives within
/// its delay.
fn collect(
    rx: &mut mpsc::Receiver<Command>,
    first: Command,
    batch: &mut Vec<Command>,
    pacer: &mut Pacer,
) {
    let opened = Instant::now();
    batch.push(first);
    drain_into(rx, batch, pacer.batch_max);
    if let Some(want) = pacer.target(batch.len()) {
        // Wait in quarter steps; a step that brings nothing means the flow has stopped.
        let deadline = opened + pacer.delay;
        let step = pacer.delay / 4;
        while batch.len() < want {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(step.min(deadline - now));
            let had = batch.len();
            drain_into(rx, batch, want);
            if batch.len() == had {
                break;
            }
        }
    }
    pacer.observe(batch.len(), opened);
}

/// The writer's statements, prepared once for the life of its connection. (A cached statement
/// is found by hashing its SQL text at every use, and the rollup's text is ~900 bytes: holding
/// them saves that, and the cache's bookkeeping, at every commit.)
struct Statements<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    insert: Statement<'c>,
    rollup_add: Statement<'c>,
    rollup_new: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection) -> Result<Statements<'c>, rusqlite::Error> {
        Ok(Statements {
            begin: conn.prepare("BEGIN")?,
            commit: conn.prepare("COMMIT")?,
            insert: conn.prepare(INSERT_SQL)?,
            rollup_add: conn.prepare(ROLLUP_ADD_SQL)?,
            rollup_new: conn.prepare(ROLLUP_NEW_SQL)?,
        })
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    mut pacer: Pacer,
    stats: &LedgerStats,
) {
    let mut statements = match Statements::prepare(&conn) {
        Ok(s) => Some(s),
        Err(error) => {
            // Checked at open, so only a schema changed under the running writer gets here:
            // every command is answered with the error.
            tracing::error!(%error, "The ledger's statements could not be prepared.");
            None
        }
    };
    let mut batch: Vec<Command> = Vec::with_capacity(pacer.batch_max);
    while let Some(first) = rx.blocking_recv() {
        collect(&mut rx, first, &mut batch, &mut pacer);
        let n = batch.len() as u64;
        let began = std::time::Instant::now();
        let outcome = match &mut statements {
            Some(statements) => write_batch(&conn, statements, &batch),
            None => Err(StoreError::Task(
                "the ledger's statements could not be prepared".into(),
            )),
        };
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.last_commit_us.store(took, Ordering::Relaxed);
        stats.commit_us_total.fetch_add(took, Ordering::Relaxed);
        stats.queued.fetch_sub(n, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(results) => {
                for (cmd, result) in batch.drain(..).zip(results) {
                    match (cmd, result) {
                        (Command::Append(_, reply), BatchResult::One(new)) => {
                            if new {
                                stats.records.fetch_add(1, Ordering::Relaxed);
                            } else {
                                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(new));
                            }
                        }
                        (Command::Import(_, reply), BatchResult::Many(news)) => {
                            let added = news.iter().filter(|n| **n).count() as u64;
                            stats.records.fetch_add(added, Ordering::Relaxed);
                            stats
                                .duplicates
                                .fetch_add(news.len() as u64 - added, Ordering::Relaxed);
                            let _ = reply.send(Ok(news));
                        }
                        (Command::Import(_, reply), BatchResult::Failed(e)) => {
                            let _ = reply.send(Err(e));
                        }
                        (Command::Flush(reply), _) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Command::Append(_, reply), _) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err("internal batch mismatch".into()));
                            }
                        }
                        (Command::Import(_, reply), _) => {
                            let _ = reply.send(Err("internal batch mismatch".into()));
                        }
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, records = n, "Ledger commit failed.");
                stats.failures.fetch_add(n, Ordering::Relaxed);
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Append(_, Some(reply)) => {
                            let _ = reply.send(Err(msg.clone()));
                        }
                        Command::Append(_, None) => {}
                        Command::Import(_, reply) => {
                            let _ = reply.send(Err(msg.clone()));
                        }
                        Command::Flush(reply) => {
                            let _ = reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        }
    }
}

enum BatchResult {
    One(bool),
    Many(Vec<bool>),
    Failed(String),
    None,
}

/// One batch, one transaction (`BEGIN` and `COMMIT` are prepared statements too: rusqlite's
/// `Transaction` runs them through `execute_batch`, which parses both again for every commit).
/// On any error the transaction is rolled back, so a failed batch leaves nothing behind.
fn write_batch(
    conn: &Connection,
    statements: &mut Statements<'_>,
    batch: &[Command],
) -> Result<Vec<BatchResult>, StoreError> {
    statements.begin.execute([])?;
    let written = write_rows(conn, statements, batch).and_then(|results| {
        statements.commit.execute([])?;
        Ok(results)
    });
    if written.is_err()
        && !conn.is_autocommit()
        && let Err(error) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(%error, "Ledger rollback failed.");
    }
    written
}

fn write_rows(
    tx: &Connection,
    statements: &mut Statements<'_>,
    batch: &[Command],
) -> Result<Vec<BatchResult>, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    let mut rollup: Rollup<'_> = Rollup::default();
    {
        let insert = &mut statements.insert;
        for cmd in batch {
            match cmd {
                Command::Append(record, _) => {
                    let new = insert_record(insert, record)?;
                    if new {
                        add_rollup(&mut rollup, record);
                    }
                    results.push(BatchResult::One(new));
                }
                Command::Import(records, _) => {
                    tx.execute_batch("SAVEPOINT import")?;
                    let mut news = Vec::with_capacity(records.len());
                    let mut failed = None;
                    for r in records {
                        match insert_record(insert, r) {
                            Ok(new) => news.push(new),
                            Err(e) => {
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    match failed {
                        None => {
                            tx.execute_batch("RELEASE import")?;
                            for (r, new) in records.iter().zip(&news) {
                                if *new {
                                    add_rollup(&mut rollup, r);
                                }
                            }
                            results.push(BatchResult::Many(news));
                        }
                        Some(e) => {
                            tx.execute_batch("ROLLBACK TO import; RELEASE import")?;
                            results.push(BatchResult::Failed(e));
                        }
                    }
                }
                Command::Flush(_) => results.push(BatchResult::None),
            }
        }
        for ((org, project, model, hour), s) in &rollup {
            let row = params![
                org,
                project,
                model,
                hour,
                s.requests,
                s.input,
                s.cached,
                s.output,
                s.reasoning,
                s.cache_write
            ];
            // The hour's row usually exists: one keyed update, and an insert only for the first
            // records of an hour (an upsert tries the insert first, every time).
            if statements.rollup_add.execute(row)? == 0 {
                statements.rollup_new.execute(row)?;
            }
        }
    }
    Ok(results)
}

const INSERT_SQL: &str = "INSERT OR IGNORE INTO usage (id, time, org_id, project_id, key_id, model, provider, upstream_model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, status, latency_ms, streamed, estimated, source, cache_write_input_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// Adds a batch's sums to an existing hourly rollup row; token sums saturate at `i64::MAX`
/// instead of overflowing (SQLite would turn an overflowing sum into a REAL that no later read
/// accepts). Parameters as in [`ROLLUP_NEW_SQL`].
const ROLLUP_ADD_SQL: &str = "UPDATE usage_hourly SET requests = requests + ?5, input_tokens = MIN(input_tokens, 9223372036854775807 - ?6) + ?6, cached_input_tokens = MIN(cached_input_tokens, 9223372036854775807 - ?7) + ?7, output_tokens = MIN(output_tokens, 9223372036854775807 - ?8) + ?8, reasoning_tokens = MIN(reasoning_tokens, 9223372036854775807 - ?9) + ?9, cache_write_input_tokens = MIN(cache_write_input_tokens, 9223372036854775807 - ?10) + ?10 WHERE org_id = ?1 AND hour = ?4 AND project_id = ?2 AND model = ?3";

/// The first sums of an hour (no row yet, see [`ROLLUP_ADD_SQL`]).
const ROLLUP_NEW_SQL: &str = "INSERT INTO usage_hourly (org_id, project_id, model, hour, requests, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cache_write_input_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert_record(stmt: &mut Statement<'_>, r: &UsageRecord) -> Result<bool, rusqlite::Error> {
    let changed = stmt.execute(params![
        r.id,
        to_micros(r.time),
        r.organization,
        r.project,
        r.key,
        r.model,
        r.provider,
        r.upstream_model,
        sat(r.input_tokens),
        sat(r.cached_input_tokens),
        sat(r.output_tokens),
        sat(r.reasoning_tokens),
        r.status,
        sat(r.latency_ms),
        r.streamed,
        r.estimated,
        r.source,
        sat(r.cache_write_input_tokens),
    ])?;
    Ok(changed == 1)
}

/// A batch's hourly sums by (organization, project, model, hour).
type Rollup<'a> = HashMap<(&'a str, &'a str, &'a str, i64), Sums, foldhash::fast::RandomState>;

fn add_rollup<'a>(rollup: &mut Rollup<'a>, r: &'a UsageRecord) {
    let hour = to_micros(r.time).div_euclid(HOUR_US) * HOUR_US;
    let key = (
        r.organization.as_str(),
        r.project.as_deref().unwrap_or(""),
        r.model.as_str(),
        hour,
    );
    let s = rollup.entry(key).or_default();
    s.requests += 1;
    s.input = s.input.saturating_add(sat(r.input_tokens));
    s.cached = s.cached.saturating_add(sat(r.cached_input_tokens));
    s.cache_write = s
        .cache_write
        .saturating_add(sat(r.cache_write_input_tokens));
    s.output = s.output.saturating_add(sat(r.output_tokens));
    s.reasoning = s.reasoning.saturating_add(sat(r.reasoning_tokens));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(rate: f64, delay_us: u64, batch_max: usize) -> Pacer {
        let mut p = Pacer::new(Duration::from_micros(delay_us), batch_max);
        p.rate = rate;
        p
    }

    #[test]
    fn slow_arrivals_commit_at_once() {
        // One request in flight (≈ 2,000 records/s) or a fixed 2,000 req/s: a 1 ms wait would
        // gather about two more records, not worth the latency.
        assert_eq!(paced(2_000.0, 1000, 8192).target(1), None);
        assert_eq!(paced(7_000.0, 1000, 8192).target(3), None);
    }

    #[test]
    fn fast_arrivals_wait_for_what_the_delay_brings() {
        assert_eq!(paced(20_000.0, 1000, 8192).target(5), Some(25));
        // Never beyond one batch.
        assert_eq!(paced(1e6, 1000, 64).target(10), Some(64));
        assert_eq!(paced(1e6, 1000, 64).target(64), None);
    }

    #[test]
    fn zero_delay_turns_pacing_off() {
        assert_eq!(paced(1e6, 0, 8192).target(1), None);
    }

    #[test]
    fn the_rate_follows_batches_and_is_forgotten_after_a_pause() {
        let mut p = Pacer::new(Duration::from_millis(1), 8192);
        let mut t = Instant::now();
        p.last_batch = t;
        // A steady 20 records per millisecond: the estimate converges to 20,000/s and pacing
        // starts.
        for _ in 0..200 {
            t += Duration::from_millis(1);
            p.observe(20, t);
        }
        assert!((p.rate - 20_000.0).abs() < 100.0, "{}", p.rate);
        assert!(matches!(p.target(1), Some(20 | 21)), "{:?}", p.target(1));
        // After a pause of 200 ms, the next lone request is committed at once.
        t += Duration::from_millis(200);
        p.observe(1, t);
        assert!(p.rate < 10.0, "{}", p.rate);
        assert_eq!(p.target(1), None);
    }
}
