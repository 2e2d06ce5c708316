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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use tollgate_config::{Config, RedisFailure};
use tollgate_sharedlimit::{Bucket, Reserve, SharedLimits};

use crate::app::App;
use crate::budget::Hold;
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
}

/// What one request reserved; given back with [`Limits::release`] when it is not dispatched.
pub struct Reservation {
    key: Arc<KeyEntry>,
    pub tokens: u64,
    shared: bool,
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
        })
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
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
                return Ok((self.reservation(key, tokens, false), Snapshot::default()));
            }
            match shared.reserve(&buckets, tokens).await {
                Ok(answer) => {
                    return shared_answer(self.reservation(key, tokens, true), &buckets, answer);
                }
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
        local_reserve(key, tokens).map(|s| (self.reservation(key, tokens, false), s))
    }

    fn reservation(&self, key: &Arc<KeyEntry>, tokens: u64, shared: bool) -> Reservation {
        Reservation {
            key: key.clone(),
            tokens,
            shared,
        }
    }

    /// Gives back a reservation whose request was not dispatched.
    pub async fn release(&self, r: &Reservation) {
        if r.shared
            && let Some(shared) = &self.shared
        {
            if let Err(error) = shared.release(&buckets(&r.key), r.tokens).await {
                self.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "Could not release a shared reservation.");
            }
            return;
        }
        if let Some(l) = &r.key.limiter {
            l.release(r.tokens);
        }
        if let Some(l) = &r.key.project_limiter {
            l.release(r.tokens);
        }
    }

    /// Settles a token reservation to the real count: in Redis in the background (the response
    /// does not wait), locally at once.
    pub fn settle(&self, key: &Arc<KeyEntry>, reserved: u64, actual: u64) {
        if reserved == actual {
            return;
        }
        if let Some(shared) = &self.shared {
            let buckets = buckets(key);
            if buckets.is_empty() {
                return;
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(error) = shared.settle(&buckets, reserved, actual).await {
                    tracing::warn!(%error, "Could not settle a shared reservation.");
                }
            });
            return;
        }
        if let Some(l) = &key.limiter {
            l.settle(reserved, actual);
        }
        if let Some(l) = &key.project_limiter {
            l.settle(reserved, actual);
        }
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

impl Limits {
    /// Reserves a budget hold on the shared counters too (no-op without Redis or without a hold).
    /// Refused: the local hold is given back and the client gets 429 `insufficient_quota`.
    pub async fn reserve_budget(
        &self,
        app: &App,
        hold: Option<Hold>,
    ) -> Result<Option<Hold>, ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(hold);
        };
        let Some(mut hold) = hold else {
            return Ok(None);
        };
        let counters = app.budgets.shared_counters(&hold);
        match shared
            .reserve_budget(&counters, nano_usd(hold.amount()))
            .await
        {
            Ok(None) => {
                hold.shared = true;
                Ok(Some(hold))
            }
            Ok(Some(i)) => {
                app.budgets.release(hold);
                self.refused.fetch_add(1, Ordering::Relaxed);
                let scope = counters.get(i).map(|c| c.id.clone()).unwrap_or_default();
                Err(ApiError::insufficient_quota(format!(
                    "You exceeded your current quota: the monthly budget ({scope}) has been reached."
                )))
            }
            Err(error) => {
                self.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "Shared budgets unavailable.");
                if self.on_failure == RedisFailure::Closed {
                    app.budgets.release(hold);
                    return Err(ApiError::unavailable(
                        "Budgets cannot be checked right now, so the request is refused. Retry shortly.",
                    ));
                }
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(Some(hold))
            }
        }
    }

    /// Settles a shared budget reservation to the real cost, in the background.
    pub fn settle_budget(&self, ids: Vec<String>, reserved: Decimal, actual: Decimal) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let delta = nano_usd(actual).saturating_sub(nano_usd(reserved));
        if delta == 0 {
            return;
        }
        tokio::spawn(async move {
            if let Err(error) = shared.adjust_budget(&ids, delta).await {
                tracing::warn!(%error, "Could not settle a shared budget reservation.");
            }
        });
    }
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
