//! Cross-account linking by a shared address pool, corroborated by content or timing.
//!
//! A campaign spread over many small accounts typically runs from a *pool* of proxy addresses:
//! each account uses a few of them, and any two accounts share several. A school, office or
//! carrier NAT puts many unrelated accounts behind *one* address instead. So:
//!
//! - **pool**: two accounts share a client IP, and each of them uses at least
//!   [`MIN_SHARED_ADDRESSES`] addresses that other accounts use too (addresses shared by more
//!   than [`MAX_POOL_FANOUT`] accounts — a cloud egress used by everyone — are no evidence);
//! - **content**: the two accounts send prompts in the same wrapper — the first or last eight
//!   words repeated in at least a fifth of each account's prompts (shingles hashed on the
//!   request path, registered as `wrapper` links, see [`crate::features::RequestFeatures`]);
//! - **timing**: the two accounts are active in the same 10-minute slots (±1 slot) far more
//!   often than chance: loosely synchronized bursts of one scheduler, spread over minutes.
//!
//! **Guard against false merges: a pair merges only on a pool *and* content or timing.** Each
//! kind alone has a benign explanation (a NAT or shared egress; a popular prompt template; class
//! or office hours), and a cluster flag touches every member. Accounts behind one NAT share one
//! address, never a pool; strangers sharing a pool *and* a wrapper or a schedule is what a
//! campaign does. A merged pair is registered as a `pool` link naming its evidence, which every
//! member's evidence lists.
//!
//! Cost: on the request path, a bit set in the account's 10-minute activity ring and two
//! shingle lookups in an 8-entry table. The pair search runs in [`crate::Detector::recluster`]
//! over the address entries of the link index (bounded by their fan-out).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Shared client IPs each account of a pool pair must use.
pub const MIN_SHARED_ADDRESSES: usize = 2;
/// An address shared by more accounts than this is ignored for pools.
pub const MAX_POOL_FANOUT: usize = 64;
/// Seconds per activity slot.
pub const SLOT_SECONDS: i64 = 600;
/// Slots in the activity ring (about 7 days).
pub const SLOTS: usize = 1024;
const WORDS: usize = SLOTS / 64;
/// Timing corroboration: coincident active slots (±1) at least this many …
pub const MIN_COINCIDENT_SLOTS: u32 = 8;
/// … and at least this many times what independent activity would give.
pub const MIN_LIFT: f64 = 3.0;
/// Accounts active in more than this share of the slots are not bursty: their coincidences
/// are chance.
pub const MAX_ACTIVE_SHARE: f64 = 0.5;

/// Activity of an account in 10-minute slots over the last [`SLOTS`] slots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    pub bits: Vec<u64>,
    pub last: Option<i64>,
    pub first: Option<i64>,
}

impl Activity {
    /// Mark the slot of `ts` (Unix seconds) active.
    pub fn touch(&mut self, ts: i64) {
        let slot = ts.div_euclid(SLOT_SECONDS);
        if self.bits.len() != WORDS {
            self.bits = vec![0; WORDS];
        }
        match self.last {
            Some(last) if slot > last => {
                if slot - last >= SLOTS as i64 {
                    self.bits.iter_mut().for_each(|w| *w = 0);
                } else {
                    for s in last + 1..=slot {
                        self.clear(s);
                    }
                }
                self.last = Some(slot);
            }
            Some(last) if last - slot >= SLOTS as i64 => return,
            Some(_) => {}
            None => self.last = Some(slot),
        }
        if self.first.is_none() {
            self.first = Some(slot);
        }
        let i = slot.rem_euclid(SLOTS as i64) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, slot: i64) {
        let i = slot.rem_euclid(SLOTS as i64) as usize;
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    fn count(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// Bytes held.
    pub fn memory_bound() -> usize {
        WORDS * 8
    }
}

/// Slots active in both (`b` dilated by one slot each side), the lift over independent
/// activity, and whether both are bursty enough to judge.
pub fn coincidence(a: &Activity, b: &Activity) -> Option<(u32, f64)> {
    let (la, lb) = (a.last?, b.last?);
    if a.bits.len() != WORDS || b.bits.len() != WORDS || (la - lb).abs() >= SLOTS as i64 / 2 {
        return None;
    }
    // Slots both rings cover.
    let from = a.first?.max(b.first?).max(la.max(lb) - SLOTS as i64 + 1);
    let to = la.min(lb);
    if to <= from {
        return None;
    }
    let span = (to - from + 1) as f64;
    let (na, nb) = (a.count(), b.count());
    if f64::from(na) > MAX_ACTIVE_SHARE * span || f64::from(nb) > MAX_ACTIVE_SHARE * span {
        return None;
    }
    let dilate = |i: usize| {
        let w = b.bits[i];
        let prev = b.bits[(i + WORDS - 1) % WORDS];
        let next = b.bits[(i + 1) % WORDS];
        w | (w << 1) | (prev >> 63) | (w >> 1) | (next << 63)
    };
    let both: u32 = (0..WORDS)
        .map(|i| (a.bits[i] & dilate(i)).count_ones())
        .sum();
    let expected = f64::from(na) * (3.0 * f64::from(nb)).min(span) / span;
    Some((both, f64::from(both) / expected.max(1e-9)))
}

/// Pairs of accounts in one address pool, with the number of addresses they share, from the
/// address entries (`orgs` of each client IP): they share at least one IP and each uses at
/// least [`MIN_SHARED_ADDRESSES`] IPs shared with other accounts (2..=[`MAX_POOL_FANOUT`]
/// accounts per IP).
pub fn pool_pairs<'a, I>(ip_entries: I) -> HashMap<(String, String), usize>
where
    I: Iterator<Item = &'a [String]> + Clone,
{
    let mut per_account: HashMap<&str, usize> = HashMap::new();
    for orgs in ip_entries.clone() {
        if orgs.len() < 2 || orgs.len() > MAX_POOL_FANOUT {
            continue;
        }
        for o in orgs {
            *per_account.entry(o.as_str()).or_default() += 1;
        }
    }
    let pooled = |o: &str| {
        per_account
            .get(o)
            .is_some_and(|&n| n >= MIN_SHARED_ADDRESSES)
    };
    let mut shared: HashMap<(String, String), usize> = HashMap::new();
    for orgs in ip_entries {
        if orgs.len() < 2 || orgs.len() > MAX_POOL_FANOUT {
            continue;
        }
        for (i, a) in orgs.iter().enumerate() {
            if !pooled(a) {
                continue;
            }
            for b in orgs[i + 1..].iter().filter(|b| pooled(b)) {
                let k = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                *shared.entry(k).or_default() += 1;
            }
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coincident_bursts_have_lift_and_busy_accounts_are_not_judged() {
        let mut a = Activity::default();
        let mut b = Activity::default();
        let mut c = Activity::default();
        let t0 = 1_700_000_000i64;
        for k in 0..40i64 {
            let tick = t0 + k * 10_800;
            a.touch(tick);
            b.touch(tick + 420); // same tick, 7 minutes later
            c.touch(tick + 5400); // half-way between ticks
        }
        let (both, lift) = coincidence(&a, &b).unwrap();
        assert!(both >= 35 && lift >= MIN_LIFT, "{both} {lift}");
        let (both, _) = coincidence(&a, &c).unwrap();
        assert_eq!(both, 0);
        let mut busy = Activity::default();
        for k in 0..400i64 {
            busy.touch(t0 + k * 600);
        }
        assert!(coincidence(&a, &busy).is_none());
    }

    #[test]
    fn one_nat_is_not_a_pool() {
        // Students s1..s3 behind one NAT; h1..h3 rotate over a pool of three addresses, each
        // using two of them (h1 and h3 share one).
        let nat = vec!["s1".to_string(), "s2".into(), "s3".into()];
        let p1 = vec!["h1".to_string(), "h2".into()];
        let p2 = vec!["h2".to_string(), "h3".into()];
        let p3 = vec!["h1".to_string(), "h3".into()];
        let pairs =
            pool_pairs([nat.as_slice(), p1.as_slice(), p2.as_slice(), p3.as_slice()].into_iter());
        assert_eq!(pairs.len(), 3, "{pairs:?}");
        assert_eq!(pairs.get(&("h1".into(), "h2".into())), Some(&1));
        assert!(!pairs.keys().any(|(a, _)| a.starts_with('s')));
    }
}
