//! Synchronized activity: accounts whose bursts of activity start in the same minutes, again and
//! again, while each of them is otherwise quiet — the signature of a campaign split over many
//! small accounts and driven by one scheduler.
//!
//! **Burst starts.** A request is a *burst start* when its account made no request in the
//! [`QUIET_MINUTES`] minutes before it (event time; decided on the request path in O(1) from the
//! account's last active minute). Only burst starts reach this module, so it runs at most once
//! per minute slot per account, and usually far less often. Starts keep their second.
//!
//! **Per-account state** ([`SyncRecord`], bounded): the last [`RING`] burst starts, the account's
//! current LSH band keys and at most [`MAX_PARTNERS`] tracked pairs.
//!
//! **Which starts count.** Only starts of accounts that are *bursty* (active in at most a quarter
//! of the minutes of their lifetime, decided by the caller) and *sparse* (the remembered starts
//! are on average at least [`SPARSE_GAP_MINUTES`] apart): coincidences of busy accounts are
//! chance. A start is *periodic* when at least [`PERIODIC_REPEATS`] earlier starts of the same
//! account within a day lie a whole number of hours before it (±[`MATCH_SECONDS`]): cron jobs at
//! `:00` or `:30` are shared by strangers and prove nothing, so periodic starts are neither
//! compared nor counted.
//!
//! **Finding candidates without comparing everyone.** At each counted start, a MinHash signature
//! of the account's recent non-periodic starts (2-minute slots, [`BANDS`] bands of [`ROWS`]
//! values) replaces the account's previous band keys in a sharded index. Accounts that share a
//! band key (their recent burst starts largely coincide) become tracked partners.
//!
//! **Honest counting.** A tracked pair counts, from then on, every start of either account made
//! while both accounts are bursty, sparse and live (a start within [`LIVE_MINUTES`]); a start is
//! *matched* when the other account has a start within ±[`MATCH_SECONDS`]. The pair is linked once it has
//! at least `min_bursts` matched starts and a Jaccard similarity (matched / distinct starts) of at
//! least `min_jaccard`. Nothing counted before the pair was tracked (the evidence that selected
//! it) enters the figures. Pairs that prove unsynchronized are dropped to free the slot.
//!
//! Whether a synchronized link merges accounts into a cluster is decided in
//! [`crate::coord::clusters`]: only together with a shared address.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lock;
use crate::sketch::{combine, hash_bytes};

/// Minutes without a request before a request counts as a burst start.
pub const QUIET_MINUTES: i64 = 5;
/// Burst starts remembered per account.
pub const RING: usize = 16;
/// Remembered starts must be at least this many minutes apart on average.
pub const SPARSE_GAP_MINUTES: i64 = 30;
/// Latest starts whose spacing is checked on its own.
pub const RECENT_STARTS: usize = 4;
/// A pair's starts count only while the other account had a start this recently.
pub const LIVE_MINUTES: i64 = 360;
/// Two starts closer than this (seconds) coincide.
pub const MATCH_SECONDS: i64 = 60;
/// Earlier starts a whole number of hours before (within a day) that make a start periodic.
pub const PERIODIC_REPEATS: usize = 2;
/// Largest share of active minutes over an account's lifetime for it to count as bursty.
pub const MAX_DUTY_CYCLE: f64 = 0.25;
/// MinHash bands and rows per band.
pub const BANDS: usize = 4;
pub const ROWS: usize = 2;
/// Non-periodic starts within a day needed for a signature.
pub const MIN_SIGNATURE_STARTS: usize = 4;
/// Accounts remembered per band key (the oldest is dropped when full).
pub const BAND_FANOUT: usize = 32;
/// New candidates (accounts sharing a band key, newest first) examined per start.
pub const MAX_CANDIDATES: usize = 8;
/// Tracked (not yet linked) pairs per account.
pub const MAX_PARTNERS: usize = 16;
/// Linked pairs per account. A linked pair leaves the tracked list, so an account of a large
/// campaign keeps meeting new partners (the links of a campaign stay connected instead of
/// forming separate cliques) until it has this many links.
pub const MAX_LINKED: u32 = 32;
/// A tracked pair (not linked) without events for this long is dropped.
pub const STALE_MINUTES: i64 = 7 * DAY_MINUTES;
const DAY_MINUTES: i64 = 1440;
const SHARDS: usize = 16;
const SEED: u64 = 0x5e1c_0a11_7e11_b0b5;

/// One burst start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Unix time (seconds) of the request that started the burst.
    pub time: i64,
    /// A whole number of hours after earlier starts: not evidence of coordination.
    pub periodic: bool,
}

/// Bounded per-account state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub starts: VecDeque<Start>,
    /// Whether the account was bursty at its latest start.
    pub bursty: bool,
    pub bands: Vec<u64>,
    /// The tracked pairs (not yet linked).
    pub partners: Vec<Partner>,
    /// Pairs of this account that are linked.
    #[serde(default)]
    pub linked: u32,
}

impl SyncRecord {
    /// Remembered starts at least [`SPARSE_GAP_MINUTES`] apart on average, and the latest
    /// [`RECENT_STARTS`] at least two thirds of that (a busy spell is not sparse).
    fn sparse(&self) -> bool {
        let n = self.starts.len();
        let span = |k: usize| match (self.starts.get(n - k), self.starts.back()) {
            (Some(f), Some(b)) => b.time - f.time,
            _ => 0,
        };
        let gap = 60 * SPARSE_GAP_MINUTES;
        (n < 2 || span(n) >= gap * (n as i64 - 1))
            && (n < RECENT_STARTS
                || 3 * span(RECENT_STARTS) >= 2 * gap * (RECENT_STARTS as i64 - 1))
    }
    /// Whether this account's starts count around `time`, and whether one matches it.
    fn compare(&self, time: i64) -> (bool, bool) {
        let counted = |s: &&Start| !s.periodic && s.time <= time + MATCH_SECONDS;
        let live = self.bursty
            && self.sparse()
            && self
                .starts
                .iter()
                .filter(counted)
                .any(|s| s.time >= time - 60 * LIVE_MINUTES);
        let matched = self
            .starts
            .iter()
            .filter(counted)
            .any(|s| (s.time - time).abs() <= MATCH_SECONDS);
        (live, matched)
    }
}

/// A tracked pair as seen from one of its accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// Key of the pair.
    pub key: u64,
    /// The other account.
    pub org: String,
}

/// A tracked pair of accounts (`a < b`) and what was counted since it was tracked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncPair {
    pub a: String,
    pub b: String,
    /// Counted starts of each account.
    pub starts_a: u32,
    pub starts_b: u32,
    /// Starts within ±[`MATCH_SECONDS`] of a start of the other account (each coincidence once).
    pub matched: u32,
    /// Unix times of the first and the latest start counted.
    pub first_time: i64,
    pub last_time: i64,
    pub linked: bool,
}

impl SyncPair {
    /// Distinct counted starts of the two accounts (a coincidence counts once).
    pub fn distinct(&self) -> u32 {
        (self.starts_a + self.starts_b)
            .saturating_sub(self.matched)
            .max(self.matched)
    }
    /// Jaccard similarity of the two accounts' counted burst starts.
    pub fn jaccard(&self) -> f64 {
        f64::from(self.matched) / f64::from(self.distinct().max(1))
    }
    /// Words for the evidence.
    pub fn label(&self) -> String {
        format!(
            "synchronized activity: {} of {} burst starts within a minute of each other (Jaccard {:.2}) over {:.0} hours",
            self.matched,
            self.distinct(),
            self.jaccard(),
            (self.last_time - self.first_time) as f64 / 3600.0
        )
    }
}

/// Link thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub min_bursts: u32,
    pub min_jaccard: f64,
}

/// Serializable state of the index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSnapshot {
    pub records: Vec<(String, SyncRecord)>,
    pub bands: Vec<(u64, Vec<String>)>,
    pub pairs: Vec<(u64, SyncPair)>,
}

type Shards<T> = Vec<Mutex<HashMap<T, Vec<String>>>>;

/// Sharded synchronized-activity index. Every method takes one lock at a time.
pub struct SyncIndex {
    records: Vec<Mutex<HashMap<String, SyncRecord>>>,
    bands: Shards<u64>,
    pairs: Vec<Mutex<HashMap<u64, SyncPair>>>,
}

impl Default for SyncIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn pair_key(a: &str, b: &str) -> u64 {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    combine(hash_bytes(x.as_bytes()), hash_bytes(y.as_bytes()))
}

/// MinHash band keys of the non-periodic starts of the last day (2-minute slots).
fn signature(starts: &VecDeque<Start>, now: i64) -> Vec<u64> {
    let slots: Vec<u64> = starts
        .iter()
        .filter(|s| !s.periodic && now - s.time < 60 * DAY_MINUTES)
        .map(|s| s.time.div_euclid(120) as u64)
        .collect();
    if slots.len() < MIN_SIGNATURE_STARTS {
        return Vec::new();
    }
    (0..BANDS as u64)
        .map(|b| {
            (0..ROWS as u64).fold(combine(SEED, b), |key, r| {
                let f = combine(SEED ^ r, b);
                let min = slots.iter().map(|&s| combine(f, s)).min().unwrap_or(0);
                combine(key, min)
            })
        })
        .collect()
}

impl SyncIndex {
    pub fn new() -> Self {
        Self {
            records: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            bands: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pairs: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn record_shard(&self, org: &str) -> &Mutex<HashMap<String, SyncRecord>> {
        &self.records[(hash_bytes(org.as_bytes()) as usize) % SHARDS]
    }
    fn band_shard(&self, key: u64) -> &Mutex<HashMap<u64, Vec<String>>> {
        &self.bands[(key as usize) % SHARDS]
    }
    fn pair_shard(&self, key: u64) -> &Mutex<HashMap<u64, SyncPair>> {
        &self.pairs[(key as usize) % SHARDS]
    }

    /// A burst start of `org` at unix time `time` (seconds); `bursty` tells whether the account is
    /// active in at most [`MAX_DUTY_CYCLE`] of its minutes. Returns the pairs that became linked.
    pub fn burst_start(&self, org: &str, time: i64, bursty: bool, th: Thresholds) -> Vec<SyncPair> {
        let (old_bands, new_bands, mut partners) = {
            let mut shard = lock(self.record_shard(org));
            let rec = match shard.get_mut(org) {
                Some(r) => r,
                None => shard.entry(org.to_owned()).or_default(),
            };
            if rec.starts.back().is_some_and(|s| s.time >= time) {
                return Vec::new(); // out of order
            }
            let periodic = rec
                .starts
                .iter()
                .filter(|s| {
                    let d = time - s.time;
                    let r = d.rem_euclid(3600);
                    d <= 60 * DAY_MINUTES && (r <= MATCH_SECONDS || r >= 3600 - MATCH_SECONDS)
                })
                .count()
                >= PERIODIC_REPEATS;
            if rec.starts.len() >= RING {
                rec.starts.pop_front();
            }
            rec.starts.push_back(Start { time, periodic });
            rec.bursty = bursty;
            if periodic || !bursty || !rec.sparse() {
                return Vec::new();
            }
            let sig = if rec.linked < MAX_LINKED {
                signature(&rec.starts, time)
            } else {
                Vec::new()
            };
            let old = std::mem::replace(&mut rec.bands, sig.clone());
            (old, sig, rec.partners.clone())
        };

        // Band index: replace the account's keys; accounts sharing a key are candidates (only
        // looked at while there is room for another tracked pair).
        let room = MAX_PARTNERS
            .saturating_sub(partners.len())
            .min(MAX_CANDIDATES);
        let mut candidates: Vec<String> = Vec::new();
        for k in old_bands.iter().filter(|k| !new_bands.contains(k)) {
            let mut s = lock(self.band_shard(*k));
            if let Some(list) = s.get_mut(k) {
                list.retain(|o| o != org);
                if list.is_empty() {
                    s.remove(k);
                }
            }
        }
        for k in &new_bands {
            let mut s = lock(self.band_shard(*k));
            let list = s.entry(*k).or_default();
            for o in list.iter().rev() {
                if candidates.len() >= room {
                    break;
                }
                if o != org && !candidates.contains(o) && !partners.iter().any(|p| &p.org == o) {
                    candidates.push(o.clone());
                }
            }
            if !list.iter().any(|o| o == org) {
                if list.len() >= BAND_FANOUT {
                    list.remove(0);
                }
                list.push(org.to_owned());
            }
        }
        for c in candidates {
            if partners.len() >= MAX_PARTNERS {
                break;
            }
            let key = pair_key(org, &c);
            if lock(self.pair_shard(key)).contains_key(&key) {
                continue; // tracked, or linked already
            }
            if !self.add_partner(&c, key, org) {
                continue;
            }
            if !self.add_partner(org, key, &c) {
                self.remove_partner(&c, key);
                continue;
            }
            let partner = Partner {
                key,
                org: c.clone(),
            };
            let (a, b) = if org < c.as_str() {
                (org.to_owned(), c)
            } else {
                (c, org.to_owned())
            };
            lock(self.pair_shard(key))
                .entry(key)
                .or_insert_with(|| SyncPair {
                    a,
                    b,
                    starts_a: 0,
                    starts_b: 0,
                    matched: 0,
                    first_time: time,
                    last_time: time,
                    linked: false,
                });
            partners.push(partner);
        }

        // Count this start for every tracked pair whose other account is live.
        let mut linked = Vec::new();
        for Partner { key, org: other } in partners {
            let (live, matched) = lock(self.record_shard(&other))
                .get(&other)
                .map_or((false, false), |r| r.compare(time));
            let remove = {
                let mut s = lock(self.pair_shard(key));
                let Some(p) = s.get_mut(&key) else {
                    drop(s);
                    self.remove_partner(org, key);
                    continue;
                };
                let remove = if live {
                    if p.a == org {
                        p.starts_a += 1;
                    } else {
                        p.starts_b += 1;
                    }
                    p.matched += u32::from(matched);
                    p.last_time = time;
                    if !p.linked && p.matched >= th.min_bursts && p.jaccard() >= th.min_jaccard {
                        p.linked = true;
                        linked.push(p.clone());
                    }
                    // Proven unsynchronized: free the slot for another candidate.
                    !p.linked
                        && p.starts_a + p.starts_b >= 4 * th.min_bursts.max(1)
                        && p.jaccard() < th.min_jaccard / 2.0
                } else {
                    !p.linked && time - p.last_time > 60 * STALE_MINUTES
                };
                if remove {
                    s.remove(&key);
                }
                remove
            };
            if remove {
                self.remove_partner(org, key);
                self.remove_partner(&other, key);
            }
        }
        // A linked pair frees its tracking slot in both accounts.
        for p in &linked {
            let key = pair_key(&p.a, &p.b);
            for o in [&p.a, &p.b] {
                if let Some(r) = lock(self.record_shard(o)).get_mut(o.as_str()) {
                    r.partners.retain(|p| p.key != key);
                    r.linked += 1;
                }
            }
        }
        linked
    }

    fn add_partner(&self, org: &str, key: u64, other: &str) -> bool {
        let mut shard = lock(self.record_shard(org));
        match shard.get_mut(org) {
            Some(r) if r.partners.iter().any(|p| p.key == key) => true,
            Some(r) if r.partners.len() < MAX_PARTNERS && r.linked < MAX_LINKED => {
                r.partners.push(Partner {
                    key,
                    org: other.to_owned(),
                });
                true
            }
            _ => false,
        }
    }

    fn remove_partner(&self, org: &str, key: u64) {
        if let Some(r) = lock(self.record_shard(org)).get_mut(org) {
            r.partners.retain(|p| p.key != key);
        }
    }

    /// Number of linked pairs per account (accounts with none are left out).
    pub fn linked_counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for s in &self.records {
            for (org, r) in lock(s).iter().filter(|(_, r)| r.linked > 0) {
                out.insert(org.clone(), r.linked as usize);
            }
        }
        out
    }

    /// Linked pairs, sorted.
    pub fn linked_pairs(&self) -> Vec<SyncPair> {
        let mut out: Vec<SyncPair> = Vec::new();
        for s in &self.pairs {
            out.extend(lock(s).values().filter(|p| p.linked).cloned());
        }
        out.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        out
    }

    /// Every tracked pair (linked or not), sorted.
    pub fn pairs(&self) -> Vec<SyncPair> {
        let mut out: Vec<SyncPair> = Vec::new();
        for s in &self.pairs {
            out.extend(lock(s).values().cloned());
        }
        out.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        out
    }

    pub fn snapshot(&self) -> SyncSnapshot {
        let mut snap = SyncSnapshot::default();
        for s in &self.records {
            snap.records
                .extend(lock(s).iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for s in &self.bands {
            snap.bands
                .extend(lock(s).iter().map(|(k, v)| (*k, v.clone())));
        }
        for s in &self.pairs {
            snap.pairs
                .extend(lock(s).iter().map(|(k, v)| (*k, v.clone())));
        }
        snap.records.sort_by(|x, y| x.0.cmp(&y.0));
        snap.bands.sort_by_key(|x| x.0);
        snap.pairs.sort_by_key(|x| x.0);
        snap
    }

    pub fn restore(&self, snap: SyncSnapshot) {
        for (org, mut r) in snap.records {
            while r.starts.len() > RING {
                r.starts.pop_front();
            }
            r.partners.truncate(MAX_PARTNERS);
            r.bands.truncate(BANDS);
            lock(self.record_shard(&org)).insert(org, r);
        }
        for (k, mut v) in snap.bands {
            v.truncate(BAND_FANOUT);
            lock(self.band_shard(k)).insert(k, v);
        }
        for (k, p) in snap.pairs {
            lock(self.pair_shard(k)).insert(k, p);
        }
    }
}

/// Upper bound of the index memory attributable to one account (excluding allocator overhead),
/// with organization names counted at `name_bytes`: its record, its band-index entries and its
/// share of its tracked pairs.
pub fn memory_per_account(name_bytes: usize) -> usize {
    use std::mem::size_of;
    let record = size_of::<SyncRecord>()
        + name_bytes
        + RING * size_of::<Start>()
        + BANDS * size_of::<u64>()
        + MAX_PARTNERS * (size_of::<Partner>() + name_bytes);
    let bands =
        BANDS * (size_of::<u64>() + size_of::<Vec<String>>() + size_of::<String>() + name_bytes);
    let pairs = (MAX_PARTNERS + MAX_LINKED as usize)
        * (size_of::<u64>() + size_of::<SyncPair>() + 2 * name_bytes)
        / 2;
    record + bands + pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        min_bursts: 10,
        min_jaccard: 0.5,
    };

    /// Deterministic pseudo-random gaps of 40..160 minutes (unix seconds).
    fn schedule(seed: u64, n: usize) -> Vec<i64> {
        let mut r = crate::sketch::SplitMix::new(seed);
        let mut t = 1_741_000_000;
        (0..n)
            .map(|_| {
                t += 60 * (40 + r.below(120) as i64) + r.below(60) as i64;
                t
            })
            .collect()
    }

    #[test]
    fn scheduler_driven_accounts_link_and_independent_ones_do_not() {
        let idx = SyncIndex::new();
        let bursts = schedule(1, 60);
        let mut links = Vec::new();
        for (i, &m) in bursts.iter().enumerate() {
            // Three accounts driven by one scheduler (one of them a minute late now and then,
            // each skipping some bursts), one independent account with the same cadence.
            if i % 5 != 1 {
                links.extend(idx.burst_start("camp-a", m, true, TH));
            }
            if i % 4 != 2 {
                links.extend(idx.burst_start("camp-b", m + 50 * i64::from(i % 3 == 0), true, TH));
            }
            if i % 6 != 3 {
                links.extend(idx.burst_start("camp-c", m, true, TH));
            }
        }
        for &m in &schedule(2, 40) {
            links.extend(idx.burst_start("loner", m, true, TH));
        }
        let names: Vec<(String, String)> =
            links.iter().map(|p| (p.a.clone(), p.b.clone())).collect();
        assert!(
            names.contains(&("camp-a".into(), "camp-b".into())),
            "{names:?} {:?}",
            idx.pairs()
        );
        assert!(
            names.contains(&("camp-a".into(), "camp-c".into())),
            "{names:?}"
        );
        assert!(
            names.iter().all(|(a, b)| a != "loner" && b != "loner"),
            "{names:?}"
        );
        let p = &idx.linked_pairs()[0];
        assert!(p.matched >= 10 && p.jaccard() >= 0.5, "{p:?}");
        assert!(
            p.label().starts_with("synchronized activity: "),
            "{}",
            p.label()
        );
        // The link is reported once.
        assert_eq!(links.len(), idx.linked_pairs().len());
    }

    #[test]
    fn cron_jobs_on_the_hour_are_periodic_and_never_link() {
        let idx = SyncIndex::new();
        let t0 = 1_741_003_200; // on the hour
        let mut r = crate::sketch::SplitMix::new(5);
        let mut links = Vec::new();
        for h in 0..72 {
            for org in ["batch-1", "batch-2", "batch-3"] {
                // Each run starts within 40 seconds of :00 and :30.
                let j = r.below(40) as i64;
                links.extend(idx.burst_start(org, t0 + 3600 * h + j, true, TH));
                let j = r.below(40) as i64;
                links.extend(idx.burst_start(org, t0 + 3600 * h + 1800 + j, true, TH));
            }
        }
        assert!(links.is_empty(), "{links:?}");
        let snap = idx.snapshot();
        let rec = &snap.records[0].1;
        assert!(rec.starts.iter().rev().take(10).all(|s| s.periodic));
        // The first few starts (before the period shows) are all the pair ever counted.
        assert!(idx.pairs().iter().all(|p| p.matched < TH.min_bursts));
    }

    #[test]
    fn busy_or_dense_accounts_are_not_compared() {
        let idx = SyncIndex::new();
        let mut links = Vec::new();
        // Starts every 10 minutes: not sparse. Not bursty: never compared.
        let t0 = 1_741_000_000;
        for i in 0..200 {
            links.extend(idx.burst_start("busy-1", t0 + 600 * i, true, TH));
            links.extend(idx.burst_start("busy-2", t0 + 600 * i, true, TH));
            links.extend(idx.burst_start("dense-1", t0 + 77 * 60 * i, false, TH));
            links.extend(idx.burst_start("dense-2", t0 + 77 * 60 * i, false, TH));
        }
        assert!(links.is_empty());
        assert!(idx.pairs().is_empty());
    }

    #[test]
    fn chance_pairs_are_counted_honestly_and_dropped() {
        // Two independent sparse accounts whose starts coincide now and then.
        let idx = SyncIndex::new();
        let a = schedule(7, 400);
        let b = schedule(8, 400);
        let mut links = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
                links.extend(idx.burst_start("x", a[i], true, TH));
                i += 1;
            } else {
                links.extend(idx.burst_start("y", b[j], true, TH));
                j += 1;
            }
        }
        assert!(links.is_empty());
        assert!(idx.pairs().iter().all(|p| p.jaccard() < TH.min_jaccard));
    }

    #[test]
    fn snapshot_round_trip_and_memory_bound() {
        let idx = SyncIndex::new();
        for &m in &schedule(3, 30) {
            idx.burst_start("a", m, true, TH);
            idx.burst_start("b", m, true, TH);
        }
        let snap = idx.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let r = SyncIndex::new();
        r.restore(serde_json::from_str(&json).unwrap());
        assert_eq!(r.snapshot(), snap);
        assert!(snap.records.iter().all(|(_, r)| r.starts.len() <= RING
            && r.partners.len() <= MAX_PARTNERS
            && r.bands.len() <= BANDS));
        assert!(memory_per_account(64) < 8 * 1024);
    }
}
