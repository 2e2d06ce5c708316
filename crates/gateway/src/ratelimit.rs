//! Where rate limits are kept: this instance's token buckets ([`crate::limits`]) or, with
//! `[ratelimit] redis_url`, buckets shared by every instance in Redis
//! ([`tollgate_sharedlimit`]), so N instances never admit N times a limit.
//!
//! When Redis is unreachable or slower than `redis_timeout_ms`, `on_redis_failure` decides:
//! `open` falls back to the local per-instance buckets (each instance then admits up to the full
//! limit on its own), `closed` refuses requests that have limits with 503. Keys and projects
//! without limits never touch Redis.
//!
//! Hard budgets ([`crate::budget`]) are shared the same way: besides this instance's own
//! accounting, a request reserves its estimated cost on one Redis counter per covering budget and
//! month (`spent + outstanding reservations`, in integer nano-USD, started from the ledger's
//! month-to-date spend), all or none, and settles it to the real cost after. Costs are rounded up
//! to the nano-dollar for this enforcement only; invoices use the exact decimals of the ledger.
//!
//! A [`Reservation`] is an obligation: dropped unsettled, it gives itself back. A Redis call whose
//! caller went away while it was in flight is finished by a task that gives back what it took.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use tollgate_config::{Config, RedisFailure};
use tollgate_sharedlimit::{Bucket, Reserve, SharedLimits};

use crate::error::ApiError;
use crate::limits::{Exceeded, Limiter, Snapshot};
use crate::tenancy::KeyEntry;

/// The limits backend of an instance.
pub struct Limits {
    shared: Option<Arc<SharedLimits>>,
    on_failure: RedisFailure,
    /// Redis calls that failed, and requests admitted by the local fallback meanwhile.
    pub redis_errors: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Requests refused with 429.
    pub refused: AtomicU64,
    /// Reservations taken and not yet settled or given back.
    outstanding: Arc<AtomicI64>,
}

/// What one request reserved: settled to the real count with [`Reservation::settle`], or given
/// back when dropped unsettled (the request was refused further on, or never dispatched).
pub struct Reservation {
    key: Arc<KeyEntry>,
    pub tokens: u64,
    shared: Option<Arc<SharedLimits>>,
    settled: bool,
    outstanding: Arc<AtomicI64>,
}

impl Reservation {
    /// Settles the token reservation to the real count (the request unit stays spent): in Redis
    /// in the background (the response does not wait), locally at once.
    pub fn settle(mut self, actual: u64) {
        self.settled = true;
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        let reserved = self.tokens;
        if reserved == actual {
            return;
        }
        if let Some(shared) = self.shared.take() {
            let buckets = buckets(&self.key);
            if buckets.is_empty() {
                return;
            }
            spawn_redis(async move {
                if let Err(error) = shared.settle(&buckets, reserved, actual).await {
                    tracing::warn!(%error, "Could not settle a shared reservation.");
                }
            });
            return;
        }
        if let Some(l) = &self.key.limiter {
            l.settle(reserved, actual);
        }
        if let Some(l) = &self.key.project_limiter {
            l.settle(reserved, actual);
        }
    }
}

impl Reservation {
    /// Drops a reservation that holds nothing (the shared buckets refused it).
    fn forget(mut self) {
        self.settled = true;
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if let Some(shared) = self.shared.take() {
            let buckets = buckets(&self.key);
            let tokens = self.tokens;
            spawn_redis(async move {
                if let Err(error) = shared.release(&buckets, tokens).await {
                    tracing::warn!(%error, "Could not release a shared reservation.");
                }
            });
            return;
        }
        if let Some(l) = &self.key.limiter {
            l.release(self.tokens);
        }
        if let Some(l) = &self.key.project_limiter {
            l.release(self.tokens);
        }
    }
}

/// Runs a Redis call that nobody waits for (settling, giving back).
fn spawn_redis(call: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(call);
        }
        Err(_) => tracing::error!("A shared reservation could not be settled: no runtime."),
    }
}

/// Runs `call` as a task and waits for its answer; when the waiter is dropped first, the answer
/// is dropped in the task, so whatever it holds (a reservation, a hold) gives itself back.
pub async fn finished_even_if_dropped<T: Send + 'static>(
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(call.await);
    });
    rx.await.ok()
}

fn buckets(key: &KeyEntry) -> Vec<Bucket> {
    let mut out = Vec::with_capacity(4);
    let mut add = |entity: String, l: &Limiter| {
        let (rpm, tpm) = l.limits();
        if let Some(limit) = rpm {
            out.push(Bucket {
                entity: entity.clone(),
                tokens: false,
                limit,
            });
        }
        if let Some(limit) = tpm {
            out.push(Bucket {
                entity,
                tokens: true,
                limit,
            });
        }
    };
    if let Some(l) = &key.limiter {
        add(format!("key:{}", key.id), l);
    }
    if let (Some(l), Some(p)) = (&key.project_limiter, &key.project) {
        add(format!("project:{p}"), l);
    }
    out
}

impl Limits {
    pub fn new(config: &Config) -> Result<Limits, String> {
        let shared = match &config.ratelimit.redis_url {
            Some(url) => Some(Arc::new(
                SharedLimits::new(
                    url,
                    Duration::from_millis(config.ratelimit.redis_timeout_ms.max(1)),
                )
                .map_err(|e| format!("ratelimit.redis_url: {e}"))?,
            )),
            None => None,
        };
        Ok(Limits {
            shared,
            on_failure: config.ratelimit.on_redis_failure,
            redis_errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            outstanding: Arc::new(AtomicI64::new(0)),
        })
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared buckets and counters (Redis), when configured.
    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.as_ref()
    }

    /// Whether a Redis failure refuses requests (`closed`) rather than falling back (`open`).
    pub fn fails_closed(&self) -> bool {
        self.on_failure == RedisFailure::Closed
    }

    /// Reservations taken and not yet settled or given back (0 when every request is finished).
    pub fn outstanding(&self) -> i64 {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Reserves one request and `tokens` estimated tokens against the key's and its project's
    /// limits, or refuses (429 with `Retry-After`; 503 when Redis fails in `closed` mode).
    pub async fn reserve(
        &self,
        key: &Arc<KeyEntry>,
        tokens: u64,
    ) -> Result<(Reservation, Snapshot), ApiError> {
        let result = self.reserve_inner(key, tokens).await;
        if result.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn reserve_inner(
        &self,
        key: &Arc<KeyEntry>,
        tokens: u64,
    ) -> Result<(Reservation, Snapshot), ApiError> {
        if let Some(shared) = &self.shared {
            let buckets = buckets(key);
            if buckets.is_empty() {
                return Ok((self.reservation(key, tokens, None), Snapshot::default()));
            }
            let (shared, key2, count) = (shared.clone(), key.clone(), self.outstanding.clone());
            let call = async move {
                let answer = shared.reserve(&buckets, tokens).await?;
                Ok(shared_answer(
                    reservation(&key2, tokens, Some(shared), count),
                    &buckets,
                    answer,
                ))
            };
            let answer: Result<_, tollgate_sharedlimit::SharedLimitError> =
                finished_even_if_dropped(call)
                    .await
                    .unwrap_or(Err(tollgate_sharedlimit::SharedLimitError::Down));
            match answer {
                Ok(result) => return result,
                Err(error) => {
                    self.redis_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "Shared rate limits unavailable.");
                    if self.on_failure == RedisFailure::Closed {
                        return Err(ApiError::unavailable(
                            "Rate limits cannot be checked right now, so the request is refused. Retry shortly.",
                        ));
                    }
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        local_reserve(key, tokens).map(|s| (self.reservation(key, tokens, None), s))
    }

    fn reservation(
        &self,
        key: &Arc<KeyEntry>,
        tokens: u64,
        shared: Option<Arc<SharedLimits>>,
    ) -> Reservation {
        reservation(key, tokens, shared, self.outstanding.clone())
    }
}

fn reservation(
    key: &Arc<KeyEntry>,
    tokens: u64,
    shared: Option<Arc<SharedLimits>>,
    outstanding: Arc<AtomicI64>,
) -> Reservation {
    outstanding.fetch_add(1, Ordering::AcqRel);
    Reservation {
        key: key.clone(),
        tokens,
        shared,
        settled: false,
        outstanding,
    }
}

/// USD as integer nano-dollars, rounded up (saturating).
pub fn nano_usd(d: Decimal) -> i64 {
    (d * Decimal::from(1_000_000_000u64))
        .ceil()
        .to_i64()
        .unwrap_or(if d.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// Moves shared budget counters by `delta` nano-USD in the background.
pub fn adjust_shared_budget(shared: Arc<SharedLimits>, ids: Vec<String>, delta: i64) {
    if delta == 0 {
        return;
    }
    spawn_redis(async move {
        if let Err(error) = shared.adjust_budget(&ids, delta).await {
            tracing::warn!(%error, "Could not settle a shared budget reservation.");
        }
    });
}

fn shared_answer(
    reservation: Reservation,
    buckets: &[Bucket],
    answer: Reserve,
) -> Result<(Reservation, Snapshot), ApiError> {
    // Headers show the key's buckets when it has limits, else the project's.
    let shown = buckets
        .first()
        .map(|b| b.entity.clone())
        .unwrap_or_default();
    let snapshot_of = |levels: &[tollgate_sharedlimit::Level]| {
        let mut s = Snapshot::default();
        for (b, l) in buckets.iter().zip(levels) {
            if b.entity != shown {
                continue;
            }
            if b.tokens {
                s.limit_tokens = Some(b.limit);
                s.remaining_tokens = l.remaining;
                s.reset_tokens = l.reset;
            } else {
                s.limit_requests = Some(b.limit);
                s.remaining_requests = l.remaining;
                s.reset_requests = l.reset;
            }
        }
        s
    };
    match answer {
        Reserve::Admitted(levels) => Ok((reservation, snapshot_of(&levels))),
        Reserve::Refused {
            index,
            retry_after,
            levels,
        } => {
            // Redis took nothing: there is nothing to give back.
            reservation.forget();
            let b = &buckets[index.min(buckets.len().saturating_sub(1))];
            let scope = if b.entity.starts_with("key:") {
                "key"
            } else {
                "project"
            };
            Err(limit_error(
                Exceeded {
                    tokens: b.tokens,
                    limit: b.limit,
                    retry_after,
                    snapshot: snapshot_of(&levels),
                },
                scope,
            ))
        }
    }
}

fn local_reserve(key: &KeyEntry, tokens: u64) -> Result<Snapshot, ApiError> {
    let now = Instant::now();
    let mut shown = Snapshot::default();
    if let Some(l) = &key.limiter {
        shown = l.reserve(now, tokens).map_err(|e| limit_error(e, "key"))?;
    }
    if let Some(l) = &key.project_limiter {
        match l.reserve(now, tokens) {
            Ok(s) => {
                if key.limiter.is_none() {
                    shown = s;
                }
            }
            Err(e) => {
                if let Some(k) = &key.limiter {
                    k.release(tokens);
                }
                return Err(limit_error(e, "project"));
            }
        }
    }
    Ok(shown)
}

/// The 429 of a refused reservation, with `Retry-After` and the `x-ratelimit-*` headers.
pub fn limit_error(e: Exceeded, scope: &str) -> ApiError {
    let what = if e.tokens { "tokens" } else { "requests" };
    let secs = e.retry_after.as_secs() + u64::from(e.retry_after.subsec_nanos() > 0);
    let mut err = ApiError::rate_limited(
        format!(
            "Rate limit reached for {what} per minute on this {scope}: limit {}. Please try again in {}.",
            e.limit,
            crate::limits::format_reset(e.retry_after)
        ),
        secs.max(1),
    );
    if e.tokens {
        err.kind = "tokens";
    }
    for (name, value) in e.snapshot.headers() {
        err = err.with_header(name, value);
    }
    err
}
