//! Rate limits shared by every gateway instance through Redis.
//!
//! Each limit is a token bucket stored in a Redis hash (`l`: level in milli-units, `t`: last
//! refill in microseconds of Redis's own clock, so instance clocks do not matter). Reserving
//! runs one Lua script that refills every bucket of the request (key and project, requests and
//! tokens), checks them all, and takes from all of them or from none: N instances can never admit
//! N times a limit. Settling and releasing run a second script that adds back (or takes more)
//! tokens. Scripts are versioned (`-- tollgate ratelimit vN` and the `tg:rl:vN:` key prefix),
//! loaded with `SCRIPT LOAD` at connect and run with `EVALSHA` (reloaded on `NOSCRIPT`).
//!
//! Every call has a timeout; a failure (Redis unreachable, slow, or erroring) is returned as
//! [`SharedLimitError`] and the caller applies its configured failure mode.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// Version of the scripts and of the key layout.
pub const VERSION: u32 = 1;
/// Prefix of every key this crate writes.
pub const KEY_PREFIX: &str = "tg:rl:v1:";

const RESERVE: &str = r#"-- tollgate ratelimit v1: reserve
-- KEYS: bucket keys. ARGV[1]: tokens requested; ARGV[1+i]: limit of KEYS[i] per minute;
-- ARGV[1+n+i]: 'r' (one request) or 't' (tokens). Takes from every bucket or from none.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tokens = tonumber(ARGV[1])
local n = #KEYS
local levels = {}
local out = {1, 0, 0}
for i = 1, n do
  local limit = tonumber(ARGV[1 + i])
  local cap = limit * 1000
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local l = tonumber(v[1])
  local ts = tonumber(v[2])
  if l == nil or ts == nil then l = cap; ts = now end
  if now > ts and limit > 0 then
    l = math.min(cap, l + math.floor((now - ts) * limit / 60000))
  end
  levels[i] = l
  local need = 1000
  if ARGV[1 + n + i] == 't' then need = math.min(tokens * 1000, cap) end
  if l < need and out[1] == 1 then
    out[1] = 0
    out[2] = i
    if limit > 0 then out[3] = math.ceil((need - l) * 60 / limit) else out[3] = 60000 end
  end
end
for i = 1, n do
  local limit = tonumber(ARGV[1 + i])
  local l = levels[i]
  if out[1] == 1 then
    if ARGV[1 + n + i] == 't' then l = l - tokens * 1000 else l = l - 1000 end
    redis.call('HSET', KEYS[i], 'l', string.format('%.0f', l), 't', string.format('%.0f', now))
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
  local remaining = math.max(0, math.floor(l / 1000))
  local reset = 0
  if limit > 0 and l < limit * 1000 then reset = math.ceil((limit * 1000 - l) * 60 / limit) end
  table.insert(out, remaining)
  table.insert(out, reset)
end
return out
"#;

const ADJUST: &str = r#"-- tollgate ratelimit v1: adjust
-- KEYS: bucket keys. ARGV[i]: limit of KEYS[i]; ARGV[n+i]: milli-units to add (negative: take).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[i])
  local cap = limit * 1000
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local l = tonumber(v[1])
  local ts = tonumber(v[2])
  if l == nil or ts == nil then l = cap; ts = now end
  if now > ts and limit > 0 then
    l = math.min(cap, l + math.floor((now - ts) * limit / 60000))
  end
  l = math.min(cap, l + tonumber(ARGV[n + i]))
  redis.call('HSET', KEYS[i], 'l', string.format('%.0f', l), 't', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[i], 120000)
end
return n
"#;

const BUDGET_RESERVE: &str = r#"-- tollgate budget v1: reserve
-- KEYS: monthly counters (spent + outstanding reservations, integer nano-USD).
-- ARGV[1]: amount; ARGV[1+i]: limit of KEYS[i]; ARGV[1+n+i]: value to start KEYS[i] from when it
-- is missing (the ledger's month-to-date spend); ARGV[2+2n]: TTL in ms. All or nothing.
local n = #KEYS
local amount = ARGV[1]
local ttl = ARGV[2 + 2 * n]
local out = {1, 0}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SET', KEYS[i], ARGV[1 + n + i], 'PX', ttl)
  end
  local used = tonumber(redis.call('GET', KEYS[i]))
  table.insert(out, used)
  if used >= tonumber(ARGV[1 + i]) and out[1] == 1 then
    out[1] = 0
    out[2] = i
  end
end
if out[1] == 1 then
  for i = 1, n do redis.call('INCRBY', KEYS[i], amount) end
end
return out
"#;

const BUDGET_ADJUST: &str = r#"-- tollgate budget v1: adjust
-- KEYS: monthly counters; ARGV[1]: integer nano-USD to add (negative gives back). A missing
-- counter (Redis restarted) is left missing: the next reservation starts it from the ledger.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return #KEYS
"#;

/// Prefix of the budget counters.
pub const BUDGET_PREFIX: &str = "tg:bg:v1:";

/// One monthly budget counter, in integer nano-USD (spent plus outstanding reservations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounter {
    /// `{organization}:{project or empty}:{YYYY-MM}`.
    pub id: String,
    pub limit: i64,
    /// Where the counter starts when Redis does not have it (month-to-date spend from the ledger).
    pub start: i64,
}

/// Why a shared-limit call failed; the caller falls back or refuses.
#[derive(Debug, thiserror::Error)]
pub enum SharedLimitError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is unreachable (next attempt in a moment)")]
    Down,
    #[error("unexpected script answer")]
    Protocol,
}

/// One bucket: a key's or project's requests or tokens per minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Entity, e.g. `key:key_ab12` or `project:proj_cd34`.
    pub entity: String,
    pub tokens: bool,
    pub limit: u64,
}

impl Bucket {
    fn redis_key(&self) -> String {
        format!(
            "{KEY_PREFIX}{}:{}",
            self.entity,
            if self.tokens { "t" } else { "r" }
        )
    }
}

/// The state of one bucket after a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Taken from every bucket; levels in bucket order.
    Admitted(Vec<Level>),
    /// Nothing taken: bucket `index` is short; retry after `retry_after`.
    Refused {
        index: usize,
        retry_after: Duration,
        levels: Vec<Level>,
    },
}

/// A connection to the shared limit store; cheap to share behind an `Arc`.
///
/// Every Redis call runs on the runtime that created the limits (its `home`): the connection's
/// driver task, and a reconnect's, is spawned on the runtime that makes the call, and a
/// request-serving runtime that happened to host it would delay every other thread's calls
/// while it serves its own requests.
pub struct SharedLimits {
    inner: Arc<Inner>,
    home: Option<tokio::runtime::Handle>,
}

/// Which script a call runs.
#[derive(Clone, Copy)]
enum Which {
    Reserve,
    Adjust,
    BudgetReserve,
    BudgetAdjust,
}

struct Inner {
    client: redis::Client,
    conn: tokio::sync::RwLock<Option<ConnectionManager>>,
    last_attempt: Mutex<Option<Instant>>,
    timeout: Duration,
    reserve: redis::Script,
    adjust: redis::Script,
    budget_reserve: redis::Script,
    budget_adjust: redis::Script,
}

impl SharedLimits {
    /// Prepares a client for `url` (`redis://host:port`); connects lazily, so an instance starts
    /// even while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<SharedLimits, SharedLimitError> {
        let inner = Inner {
            client: redis::Client::open(url)?,
            conn: tokio::sync::RwLock::new(None),
            last_attempt: Mutex::new(None),
            timeout,
            reserve: redis::Script::new(RESERVE),
            adjust: redis::Script::new(ADJUST),
            budget_reserve: redis::Script::new(BUDGET_RESERVE),
            budget_adjust: redis::Script::new(BUDGET_ADJUST),
        };
        Ok(SharedLimits {
            inner: Arc::new(inner),
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Runs `script` with `keys` and `args` on the home runtime.
    async fn call<T: redis::FromRedisValue + Send + 'static>(
        &self,
        which: Which,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, SharedLimitError> {
        let inner = Arc::clone(&self.inner);
        let call = async move { inner.run(which, &keys, &args).await };
        match &self.home {
            Some(home) => home
                .spawn(call)
                .await
                .unwrap_or(Err(SharedLimitError::Down)),
            None => call.await,
        }
    }

    /// Reserves one request and `tokens` tokens from every bucket, or from none.
    pub async fn reserve(
        &self,
        buckets: &[Bucket],
        tokens: u64,
    ) -> Result<Reserve, SharedLimitError> {
        if buckets.is_empty() {
            return Ok(Reserve::Admitted(Vec::new()));
        }
        let keys = buckets.iter().map(Bucket::redis_key).collect();
        let mut args = vec![tokens.to_string()];
        args.extend(buckets.iter().map(|b| b.limit.to_string()));
        args.extend(
            buckets
                .iter()
                .map(|b| (if b.tokens { "t" } else { "r" }).to_owned()),
        );
        let out: Vec<i64> = self.call(Which::Reserve, keys, args).await?;
        if out.len() != 3 + 2 * buckets.len() {
            return Err(SharedLimitError::Protocol);
        }
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let levels = out[3..]
            .chunks(2)
            .map(|c| Level {
                remaining: to_u64(c[0]),
                reset: Duration::from_millis(to_u64(c[1])),
            })
            .collect();
        if out[0] == 1 {
            Ok(Reserve::Admitted(levels))
        } else {
            Ok(Reserve::Refused {
                index: usize::try_from(out[1] - 1).unwrap_or(0),
                retry_after: Duration::from_millis(to_u64(out[2])),
                levels,
            })
        }
    }

    /// Adds `units` to each bucket (negative takes), capped at the bucket's limit.
    pub async fn adjust(&self, changes: &[(Bucket, i64)]) -> Result<(), SharedLimitError> {
        if changes.is_empty() {
            return Ok(());
        }
        let keys = changes.iter().map(|(b, _)| b.redis_key()).collect();
        let mut args: Vec<String> = changes.iter().map(|(b, _)| b.limit.to_string()).collect();
        args.extend(
            changes
                .iter()
                .map(|(_, units)| units.saturating_mul(1000).to_string()),
        );
        let _: i64 = self.call(Which::Adjust, keys, args).await?;
        Ok(())
    }

    /// Gives back an unused reservation (one request and `tokens` tokens).
    pub async fn release(&self, buckets: &[Bucket], tokens: u64) -> Result<(), SharedLimitError> {
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let changes: Vec<(Bucket, i64)> = buckets
            .iter()
            .map(|b| (b.clone(), if b.tokens { tokens } else { 1 }))
            .collect();
        self.adjust(&changes).await
    }

    /// Settles token buckets from `reserved` to the `actual` count.
    pub async fn settle(
        &self,
        buckets: &[Bucket],
        reserved: u64,
        actual: u64,
    ) -> Result<(), SharedLimitError> {
        let delta = i64::try_from(i128::from(reserved) - i128::from(actual)).unwrap_or(0);
        if delta == 0 {
            return Ok(());
        }
        let changes: Vec<(Bucket, i64)> = buckets
            .iter()
            .filter(|b| b.tokens)
            .map(|b| (b.clone(), delta))
            .collect();
        self.adjust(&changes).await
    }

    /// Reserves `amount` nano-USD on every counter, or on none when one has reached its limit:
    /// `Ok(None)` when admitted, `Ok(Some(i))` when counter `i` is spent.
    pub async fn reserve_budget(
        &self,
        counters: &[BudgetCounter],
        amount: i64,
    ) -> Result<Option<usize>, SharedLimitError> {
        if counters.is_empty() {
            return Ok(None);
        }
        let keys = counters
            .iter()
            .map(|c| format!("{BUDGET_PREFIX}{}", c.id))
            .collect();
        let mut args = vec![amount.to_string()];
        args.extend(counters.iter().map(|c| c.limit.to_string()));
        args.extend(counters.iter().map(|c| c.start.to_string()));
        // Counters outlive their month by a few days, then expire.
        args.push((35u64 * 24 * 3_600_000).to_string());
        let out: Vec<i64> = self.call(Which::BudgetReserve, keys, args).await?;
        match out.first() {
            Some(1) => Ok(None),
            Some(0) => Ok(Some(
                usize::try_from(out.get(1).copied().unwrap_or(1) - 1).unwrap_or(0),
            )),
            _ => Err(SharedLimitError::Protocol),
        }
    }

    /// Adds `delta` nano-USD to each counter (settling a reservation to the real cost).
    pub async fn adjust_budget(&self, ids: &[String], delta: i64) -> Result<(), SharedLimitError> {
        if ids.is_empty() || delta == 0 {
            return Ok(());
        }
        let keys = ids
            .iter()
            .map(|id| format!("{BUDGET_PREFIX}{id}"))
            .collect();
        let _: i64 = self
            .call(Which::BudgetAdjust, keys, vec![delta.to_string()])
            .await?;
        Ok(())
    }
}

impl Inner {
    async fn connection(&self) -> Result<ConnectionManager, SharedLimitError> {
        if let Some(c) = self.conn.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.conn.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // While Redis is down, try to connect at most every 500 ms instead of on every request.
        {
            let mut last = self
                .last_attempt
                .lock()
                .map_err(|_| SharedLimitError::Down)?;
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
                return Err(SharedLimitError::Down);
            }
            *last = Some(Instant::now());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let mut conn = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| SharedLimitError::Timeout(self.timeout))??;
        for script in [
            &self.reserve,
            &self.adjust,
            &self.budget_reserve,
            &self.budget_adjust,
        ] {
            tokio::time::timeout(self.timeout, script.prepare_invoke().load_async(&mut conn))
                .await
                .map_err(|_| SharedLimitError::Timeout(self.timeout))??;
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        which: Which,
        keys: &[String],
        args: &[String],
    ) -> Result<T, SharedLimitError> {
        let script = match which {
            Which::Reserve => &self.reserve,
            Which::Adjust => &self.adjust,
            Which::BudgetReserve => &self.budget_reserve,
            Which::BudgetAdjust => &self.budget_adjust,
        };
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(SharedLimitError::Timeout(self.timeout)),
        }
    }
}
