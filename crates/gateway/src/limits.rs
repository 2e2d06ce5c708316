//! Requests-per-minute and tokens-per-minute limits as token buckets, reserve-then-settle.
//!
//! A bucket holds up to `limit` units and refills continuously at `limit` per minute. A request
//! reserves one request unit and its estimated tokens (prompt estimate + `max_tokens`) before it is
//! dispatched; when its real usage is known the token reservation is settled to the real count
//! (the bucket may go into debt, which later requests wait out). Each entity (key, project) has its
//! own small mutex: there is no global lock on the request path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// Milli-units per unit, so slow refill rates stay exact enough.
const MILLI: i128 = 1000;

#[derive(Debug)]
struct Bucket {
    limit: u64,
    /// Current level in milli-units; negative when in debt.
    level: i128,
}

impl Bucket {
    fn new(limit: u64) -> Self {
        Bucket {
            limit,
            level: i128::from(limit) * MILLI,
        }
    }

    fn capacity(&self) -> i128 {
        i128::from(self.limit) * MILLI
    }

    fn refill(&mut self, elapsed: Duration) {
        let add = elapsed.as_nanos() as i128 * i128::from(self.limit) * MILLI / 60_000_000_000;
        self.level = (self.level + add).min(self.capacity());
    }

    /// Time until the level reaches `need` milli-units.
    fn wait_for(&self, need: i128) -> Duration {
        if self.level >= need || self.limit == 0 {
            return Duration::ZERO;
        }
        let missing = need - self.level;
        let nanos = missing * 60_000_000_000 / (i128::from(self.limit) * MILLI);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn remaining(&self) -> u64 {
        u64::try_from((self.level / MILLI).max(0)).unwrap_or(0)
    }

    fn reset(&self) -> Duration {
        self.wait_for(self.capacity())
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    last: Instant,
}

/// The limits of one key or project.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

/// What a limiter reports for response headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub limit_requests: Option<u64>,
    pub remaining_requests: u64,
    pub reset_requests: Duration,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: u64,
    pub reset_tokens: Duration,
}

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone, Copy)]
pub struct Exceeded {
    pub tokens: bool,
    pub limit: u64,
    pub retry_after: Duration,
    pub snapshot: Snapshot,
}

impl Limiter {
    /// A limiter, or None when neither limit is set.
    pub fn new(rpm: Option<u64>, tpm: Option<u64>) -> Option<Limiter> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        Some(Limiter {
            state: Mutex::new(State {
                requests: rpm.map(Bucket::new),
                tokens: tpm.map(Bucket::new),
                last: Instant::now(),
            }),
        })
    }

    /// Reserves one request and `tokens` tokens, or refuses without reserving anything.
    pub fn reserve(&self, now: Instant, tokens: u64) -> Result<Snapshot, Exceeded> {
        let Ok(mut s) = self.state.lock() else {
            return Ok(Snapshot::default());
        };
        let elapsed = now.saturating_duration_since(s.last);
        s.last = s.last.max(now);
        if let Some(b) = &mut s.requests {
            b.refill(elapsed);
        }
        if let Some(b) = &mut s.tokens {
            b.refill(elapsed);
        }
        if let Some(b) = &s.requests
            && b.level < MILLI
        {
            return Err(Exceeded {
                tokens: false,
                limit: b.limit,
                retry_after: b.wait_for(MILLI),
                snapshot: snapshot(&s),
            });
        }
        // A request larger than the whole bucket is admitted when the bucket is full, so a limit
        // below one request's size throttles instead of refusing forever.
        let need = i128::from(tokens) * MILLI;
        if let Some(b) = &s.tokens {
            let need_now = need.min(b.capacity());
            if b.level < need_now {
                return Err(Exceeded {
                    tokens: true,
                    limit: b.limit,
                    retry_after: b.wait_for(need_now),
                    snapshot: snapshot(&s),
                });
            }
        }
        if let Some(b) = &mut s.requests {
            b.level -= MILLI;
        }
        if let Some(b) = &mut s.tokens {
            b.level -= need;
        }
        Ok(snapshot(&s))
    }

    /// The configured (requests, tokens) per minute.
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        match self.state.lock() {
            Ok(s) => (
                s.requests.as_ref().map(|b| b.limit),
                s.tokens.as_ref().map(|b| b.limit),
            ),
            Err(_) => (None, None),
        }
    }

    /// Returns a reservation that was not used (the request was refused further on).
    pub fn release(&self, tokens: u64) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(b) = &mut s.requests {
                b.level = (b.level + MILLI).min(b.capacity());
            }
            if let Some(b) = &mut s.tokens {
                b.level = (b.level + i128::from(tokens) * MILLI).min(b.capacity());
            }
        }
    }

    /// Settles a token reservation to the real count.
    pub fn settle(&self, reserved: u64, actual: u64) {
        if reserved == actual {
            return;
        }
        if let Ok(mut s) = self.state.lock()
            && let Some(b) = &mut s.tokens
        {
            let delta = (i128::from(reserved) - i128::from(actual)) * MILLI;
            b.level = (b.level + delta).min(b.capacity());
        }
    }
}

fn snapshot(s: &State) -> Snapshot {
    let mut snap = Snapshot::default();
    if let Some(b) = &s.requests {
        snap.limit_requests = Some(b.limit);
        snap.remaining_requests = b.remaining();
        snap.reset_requests = b.reset();
    }
    if let Some(b) = &s.tokens {
        snap.limit_tokens = Some(b.limit);
        snap.remaining_tokens = b.remaining();
        snap.reset_tokens = b.reset();
    }
    snap
}

/// OpenAI's duration format for reset headers: `1s`, `6m0s`, `20ms`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let s = (secs * 1000.0).round() / 1000.0;
        return format!("{s}s");
    }
    let total = d.as_secs();
    format!("{}m{}s", total / 60, total % 60)
}

impl Snapshot {
    /// The `x-ratelimit-*` headers for this snapshot (made on the stack: a request without
    /// limits allocates nothing for them).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, HeaderValue)> + use<> {
        fn lane(
            [limit_name, remaining_name, reset_name]: [&'static str; 3],
            limit: Option<u64>,
            remaining: u64,
            reset: Duration,
        ) -> Option<[Option<(&'static str, HeaderValue)>; 3]> {
            let limit = limit?;
            Some([
                Some((limit_name, HeaderValue::from(limit))),
                Some((remaining_name, HeaderValue::from(remaining))),
                HeaderValue::from_str(&format_reset(reset))
                    .ok()
                    .map(|v| (reset_name, v)),
            ])
        }
        let requests = lane(
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            self.limit_requests,
            self.remaining_requests,
            self.reset_requests,
        );
        let tokens = lane(
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
            self.limit_tokens,
            self.remaining_tokens,
            self.reset_tokens,
        );
        requests.into_iter().chain(tokens).flatten().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_each_configured_limit_in_openais_order() {
        let mut s = Snapshot {
            limit_requests: None,
            remaining_requests: 0,
            reset_requests: Duration::ZERO,
            limit_tokens: None,
            remaining_tokens: 0,
            reset_tokens: Duration::ZERO,
        };
        assert_eq!(s.headers().count(), 0);
        s.limit_tokens = Some(1000);
        s.remaining_tokens = 250;
        s.reset_tokens = Duration::from_millis(45_000);
        let tokens: Vec<_> = s.headers().collect();
        assert_eq!(
            tokens,
            [
                ("x-ratelimit-limit-tokens", HeaderValue::from(1000u64)),
                ("x-ratelimit-remaining-tokens", HeaderValue::from(250u64)),
                ("x-ratelimit-reset-tokens", HeaderValue::from_static("45s")),
            ]
        );
        s.limit_requests = Some(60);
        s.remaining_requests = 59;
        s.reset_requests = Duration::from_millis(20);
        let names: Vec<_> = s.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ]
        );
        assert_eq!(
            s.headers().nth(2).map(|(_, v)| v),
            Some(HeaderValue::from_static("20ms"))
        );
    }

    #[test]
    fn admits_up_to_rpm_then_refuses_with_retry_after() {
        let l = Limiter::new(Some(3), None).unwrap();
        let t = Instant::now();
        for left in [2, 1, 0] {
            assert_eq!(l.reserve(t, 0).unwrap().remaining_requests, left);
        }
        let e = l.reserve(t, 0).unwrap_err();
        assert!(!e.tokens);
        assert_eq!(e.retry_after, Duration::from_secs(20));
        // After 20 s one request has refilled.
        assert!(l.reserve(t + Duration::from_secs(20), 0).is_ok());
        assert!(l.reserve(t + Duration::from_secs(20), 0).is_err());
    }

    #[test]
    fn token_reservations_settle_to_actual() {
        let l = Limiter::new(None, Some(1000)).unwrap();
        let t = Instant::now();
        assert_eq!(l.reserve(t, 600).unwrap().remaining_tokens, 400);
        assert!(l.reserve(t, 500).unwrap_err().tokens);
        l.settle(600, 100);
        assert_eq!(l.reserve(t, 500).unwrap().remaining_tokens, 400);
        // Going into debt delays the next request.
        l.settle(500, 1500);
        let e = l.reserve(t, 1).unwrap_err();
        assert!(e.retry_after > Duration::from_secs(35));
    }

    #[test]
    fn refusal_reserves_nothing_and_release_returns() {
        let l = Limiter::new(Some(10), Some(100)).unwrap();
        let t = Instant::now();
        assert!(
            l.reserve(t, 200).is_ok(),
            "an oversized request passes a full bucket"
        );
        assert!(l.reserve(t, 1).is_err());
        let l = Limiter::new(Some(1), Some(100)).unwrap();
        l.reserve(t, 10).unwrap();
        l.release(10);
        assert_eq!(l.reserve(t, 10).unwrap().remaining_tokens, 90);
    }

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }
}
