//! Segments inside an account: the traffic of one API key, one client address, one /24 (IPv6
//! /48) network or one end user (the request's `user` field), each counted and scored like a
//! small account, so harvesting confined to one key or one backend of a genuine product is not
//! diluted by the product's traffic. The account is judged on its worst segment (see
//! [`crate::account::Account::own_score`]) and the evidence names it.
//!
//! Bounded: at most [`SegDim::capacity`] segments per dimension ([`TOTAL`] in all). When a
//! dimension is full, a new segment takes the slot of the one with the lowest rank and starts
//! its counters from zero; its rank starts from the replaced segment's (space-saving), so the
//! next newcomer replaces another slot instead of it. Before, a new segment started at rank 0
//! and was the next one replaced: two keys sharing the last slot evicted each other on every
//! switch and neither was ever scored. Template use is counted per account template slot, so
//! whether a segment's traffic is explained by a narrow product template (or lies in a broad,
//! long-form one) is decided with the account's templates at scoring time, retroactively, as for
//! the account itself.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::account::{Counters, MAX_NAME_BYTES, MAX_SHAPES, MAX_TEMPLATES};
use crate::features::{NO_TOPIC, RequestFeatures, TOPICS};
use crate::sketch::{SmallHll, combine, hash_bytes};

/// Segments kept per account, over all dimensions (see [`SegDim::capacity`]).
pub const TOTAL: usize = 12;

/// The counters a segment needs for its score (a slim [`Counters`]: no tokens, timing or
/// descriptive histograms).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SegCounters {
    pub requests: u32,
    pub reasoning: u32,
    pub rubric: u32,
    pub reveal: u32,
    pub elicit: u32,
    pub out_dist: u32,
    pub max_high: u32,
    pub single_turn: u32,
    pub bench: u32,
    pub harvest: u32,
    pub active_hours: u32,
    pub temps: u32,
    #[serde(deserialize_with = "fixed")]
    pub harvest_topics: [u16; TOPICS],
    #[serde(deserialize_with = "fixed")]
    pub hours: [u16; 24],
    /// Output tokens and completions of the segment's requests (for the answer length the
    /// segment gets against the rest of its account; 0 in older snapshots).
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub completions: u32,
}

impl SegCounters {
    /// As account counters (for the score).
    pub fn to_counters(&self) -> Counters {
        let mut c = Counters {
            requests: u64::from(self.requests),
            reasoning: u64::from(self.reasoning),
            rubric: u64::from(self.rubric),
            reveal: u64::from(self.reveal),
            elicit: u64::from(self.elicit),
            out_dist: u64::from(self.out_dist),
            max_high: u64::from(self.max_high),
            single_turn: u64::from(self.single_turn),
            bench: u64::from(self.bench),
            harvest: u64::from(self.harvest),
            active_hours: u64::from(self.active_hours),
            temps: self.temps,
            output_tokens: self.output_tokens,
            completions: u64::from(self.completions),
            ..Default::default()
        };
        for (d, s) in c.harvest_topics.iter_mut().zip(&self.harvest_topics) {
            *d = u32::from(*s);
        }
        for (d, s) in c.hours.iter_mut().zip(&self.hours) {
            *d = u32::from(*s);
        }
        c
    }
}

/// A fixed-size histogram from a snapshot sequence of any length (older snapshots stored these
/// as vectors; a shorter one is padded with zeros, a longer one truncated).
fn fixed<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default + Copy,
{
    let v: Vec<T> = Vec::deserialize(d)?;
    let mut a = [T::default(); N];
    for (x, y) in a.iter_mut().zip(v) {
        *x = y;
    }
    Ok(a)
}

/// What a segment groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegDim {
    Key,
    ClientIp,
    Network,
    User,
}

impl SegDim {
    /// Segments kept in this dimension. Keys and backend addresses get four each: a product
    /// commonly has web, iOS and Android keys (or three or four backends), and a fourth key or
    /// address, the one a harvest confined to one key or backend uses, needs a slot of its own
    /// (with three, it shared the last slot with the product's smallest key and was never
    /// scored). Networks and end users get two: an account's traffic rarely spans more than
    /// two /24s, and end users churn (a chat app has hundreds), so only the heaviest can hold
    /// a slot whatever its size.
    pub const fn capacity(self) -> usize {
        match self {
            SegDim::Key | SegDim::ClientIp => 4,
            SegDim::Network | SegDim::User => 2,
        }
    }

    fn word(self) -> &'static str {
        match self {
            SegDim::Key => "key",
            SegDim::ClientIp => "client IP",
            SegDim::Network => "network",
            SegDim::User => "end user",
        }
    }
}

/// One segment's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Segment {
    pub dim: SegDim,
    pub id: u64,
    pub name: String,
    pub counters: SegCounters,
    /// Requests per account template slot (reset when the account's slot is reused).
    #[serde(deserialize_with = "fixed")]
    pub tpl: [u32; MAX_TEMPLATES],
    #[serde(deserialize_with = "fixed")]
    pub tpl_harvest: [u32; MAX_TEMPLATES],
    /// Requests (and harvesting requests) per account shape slot.
    #[serde(deserialize_with = "fixed")]
    pub shp: [u32; MAX_SHAPES],
    #[serde(deserialize_with = "fixed")]
    pub shp_harvest: [u32; MAX_SHAPES],
    pub last_hour: Option<i64>,
    /// Score at the last evaluation.
    pub score: f64,
    /// Distinct prompts of the segment (for its novelty, counted like the account's).
    #[serde(default)]
    pub distinct: SmallHll,
    /// Requests counted before `distinct` started (novelty is distinct prompts over the
    /// requests since): 0 for a segment that had its sketch from its first request, the
    /// segment's request count for one restored from a snapshot written before segments had
    /// sketches ([`NOVELTY_UNSET`] until then), or after the word hashes changed.
    #[serde(default = "novelty_unset")]
    pub novelty_base: u32,
    /// Requests counted plus the rank inherited from the segment it replaced (space-saving):
    /// the slot with the lowest rank is replaced next. Older snapshots: 0, then the requests.
    #[serde(default)]
    pub rank: u32,
    /// Of a key's segment: the slots of the client IP and network segments of the key's latest
    /// request ([`NO_SLOT`] for none), which its completion is attributed to as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_addr: Option<[u8; 2]>,
}

/// No segment slot (see [`Segment::last_addr`]).
pub const NO_SLOT: u8 = u8::MAX;

/// `novelty_base` of a segment read from a snapshot without segment sketches, replaced by its
/// request count when restored ([`Segments::start_novelty`]).
pub const NOVELTY_UNSET: u32 = u32::MAX;

fn novelty_unset() -> u32 {
    NOVELTY_UNSET
}

impl Segment {
    /// Human-readable name, e.g. `key batch-export` or `client IP 10.0.0.7`.
    pub fn label(&self) -> String {
        format!("{} {}", self.dim.word(), self.name)
    }

    /// Estimated distinct prompts and the requests they are counted over.
    pub fn novelty_counts(&self) -> (f64, u32) {
        let base = if self.novelty_base == NOVELTY_UNSET {
            self.counters.requests
        } else {
            self.novelty_base
        };
        (
            self.distinct.estimate(),
            self.counters.requests.saturating_sub(base),
        )
    }
}

/// An account's segments.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Segments {
    pub list: Vec<Segment>,
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The /24 (IPv4) or /48 (IPv6) network of an address.
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The identity of the segment of `value` in dimension `dim`.
fn seg_id(dim: SegDim, value: &[u8]) -> u64 {
    combine(dim as u64 + 101, hash_bytes(value))
}

/// An address's bytes (4 for IPv4, 16 for IPv6) and their count.
fn ip_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            (buf, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// What one request contributes to its segments.
pub struct SegRequest<'a> {
    pub f: &'a RequestFeatures,
    pub bench_hit: bool,
    pub harvesting: bool,
    pub max_tokens_high: u64,
    pub hour: i64,
    pub hour_of_day: usize,
    pub template: Option<usize>,
    /// Shape slots of the request (head, tail).
    pub shapes: [Option<usize>; 2],
}

impl Segments {
    /// Count one request in the segments of its key, address, network and end user.
    pub fn observe(&mut self, key: &str, ip: Option<IpAddr>, user: Option<&[u8]>, r: &SegRequest) {
        let key_slot = self.bump(SegDim::Key, key.as_bytes(), &|| key.to_owned(), r);
        let mut addr = [NO_SLOT; 2];
        if let Some(ip) = ip {
            let (buf, len) = ip_bytes(ip);
            let net = if ip.is_ipv4() { 3 } else { 6 };
            let slot = |i: Option<usize>| i.and_then(|i| u8::try_from(i).ok()).unwrap_or(NO_SLOT);
            addr[0] = slot(self.bump(SegDim::ClientIp, &buf[..len], &|| ip.to_string(), r));
            addr[1] = slot(self.bump(SegDim::Network, &buf[..net], &|| network(ip), r));
        }
        if let Some(s) = key_slot.and_then(|i| self.list.get_mut(i)) {
            s.last_addr = Some(addr);
        }
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            self.bump(
                SegDim::User,
                u,
                &|| String::from_utf8_lossy(u).into_owned(),
                r,
            );
        }
    }

    /// Count a completion of `key`'s latest request in the segments of that key and of the
    /// address and network it came from (end users are not known at completion and get none).
    pub fn complete(&mut self, key: &str, output_tokens: u64) {
        let id = seg_id(SegDim::Key, key.as_bytes());
        let Some(i) = self.list.iter().position(|s| s.id == id) else {
            return;
        };
        let addr = self.list[i].last_addr.unwrap_or([NO_SLOT; 2]);
        for (j, want) in [
            (i, SegDim::Key),
            (usize::from(addr[0]), SegDim::ClientIp),
            (usize::from(addr[1]), SegDim::Network),
        ] {
            if let Some(s) = self.list.get_mut(j).filter(|s| s.dim == want) {
                let c = &mut s.counters;
                c.output_tokens = c.output_tokens.saturating_add(output_tokens);
                c.completions = c.completions.saturating_add(1);
            }
        }
    }

    fn bump(
        &mut self,
        dim: SegDim,
        value: &[u8],
        name: &dyn Fn() -> String,
        r: &SegRequest,
    ) -> Option<usize> {
        let id = seg_id(dim, value);
        let i = match self.list.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                let fresh = Segment {
                    dim,
                    id,
                    name: truncate(&name()),
                    counters: SegCounters::default(),
                    tpl: [0; MAX_TEMPLATES],
                    tpl_harvest: [0; MAX_TEMPLATES],
                    shp: [0; MAX_SHAPES],
                    shp_harvest: [0; MAX_SHAPES],
                    last_hour: None,
                    score: 0.0,
                    distinct: SmallHll::default(),
                    novelty_base: 0,
                    rank: 0,
                    last_addr: None,
                };
                let same = self.list.iter().filter(|s| s.dim == dim).count();
                if same < dim.capacity() {
                    self.list.push(fresh);
                    self.list.len() - 1
                } else {
                    let (i, _) = self
                        .list
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.dim == dim)
                        .min_by_key(|(_, s)| s.rank.max(s.counters.requests))?;
                    let inherited = self.list[i].rank.max(self.list[i].counters.requests);
                    self.list[i] = Segment {
                        rank: inherited,
                        ..fresh
                    };
                    i
                }
            }
        };
        let s = self.list.get_mut(i)?;
        let f = r.f;
        s.rank = s.rank.max(s.counters.requests).saturating_add(1);
        let c = &mut s.counters;
        let add = |x: &mut u32, v: bool| *x = x.saturating_add(u32::from(v));
        add(&mut c.requests, true);
        add(&mut c.reasoning, f.reasoning);
        add(&mut c.rubric, f.rubric);
        add(&mut c.reveal, f.reveal);
        add(&mut c.elicit, f.reasoning || f.rubric);
        add(&mut c.out_dist, f.harvest_params());
        add(
            &mut c.max_high,
            f.max_tokens.is_some_and(|m| m >= r.max_tokens_high),
        );
        add(&mut c.single_turn, !f.multi_turn());
        add(&mut c.bench, r.bench_hit);
        add(&mut c.harvest, r.harvesting);
        if let Some(t) = f.temperature {
            c.temps |= 1 << t.min(31);
        }
        if r.harvesting && f.topic != NO_TOPIC {
            let t = usize::from(f.topic) % TOPICS;
            if let Some(x) = c.harvest_topics.get_mut(t) {
                *x = x.saturating_add(1);
            }
        }
        if f.parsed {
            s.distinct.insert(f.prompt_hash);
        }
        if let Some(x) = c.hours.get_mut(r.hour_of_day % 24) {
            *x = x.saturating_add(1);
        }
        if s.last_hour.is_none_or(|h| r.hour > h) {
            c.active_hours += 1;
            s.last_hour = Some(r.hour);
        }
        let bump = |v: &mut [u32], i: usize, by: bool| {
            if let Some(x) = v.get_mut(i) {
                *x = x.saturating_add(u32::from(by));
            }
        };
        for i in r.shapes.into_iter().flatten() {
            bump(&mut s.shp, i, true);
            bump(&mut s.shp_harvest, i, r.harvesting);
        }
        if let Some(t) = r.template {
            bump(&mut s.tpl, t, true);
            bump(&mut s.tpl_harvest, t, r.harvesting);
        }
        Some(i)
    }

    /// Start every segment's distinct-prompt count afresh from here (the word hashes changed)
    /// or, with `only_unset`, only the segments restored without one.
    pub fn start_novelty(&mut self, only_unset: bool) {
        for s in &mut self.list {
            if !only_unset || s.novelty_base == NOVELTY_UNSET {
                s.distinct = SmallHll::default();
                s.novelty_base = s.counters.requests;
            }
        }
    }

    /// The account reused template slot `slot` for another template.
    pub fn reset_template(&mut self, slot: usize) {
        for s in &mut self.list {
            if let Some(x) = s.tpl.get_mut(slot) {
                *x = 0;
            }
            if let Some(x) = s.tpl_harvest.get_mut(slot) {
                *x = 0;
            }
        }
    }

    /// The account reused shape slot `slot` for another shape.
    pub fn reset_shape(&mut self, slot: usize) {
        for s in &mut self.list {
            if let Some(x) = s.shp.get_mut(slot) {
                *x = 0;
            }
            if let Some(x) = s.shp_harvest.get_mut(slot) {
                *x = 0;
            }
        }
    }

    /// Bytes one account's segments can hold (for [`crate::account::memory_bound`]): the
    /// histograms and the distinct-prompt sketch are inline, so a segment is its struct and its
    /// name.
    pub fn memory_bound() -> usize {
        use std::mem::size_of;
        TOTAL * (size_of::<Segment>() + MAX_NAME_BYTES)
    }
}

const _: () = assert!(
    SegDim::Key.capacity()
        + SegDim::ClientIp.capacity()
        + SegDim::Network.capacity()
        + SegDim::User.capacity()
        == TOTAL
);
