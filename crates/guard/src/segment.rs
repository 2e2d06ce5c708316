//! Segments inside an account: the traffic of one API key, one client address, one /24 (IPv6
//! /48) network or one end user (the request's `user` field), each counted and scored like a
//! small account, so harvesting confined to one key or one backend of a genuine product is not
//! diluted by the product's traffic. The account is judged on its worst segment (see
//! [`crate::account::Account::own_score`]) and the evidence names it.
//!
//! Bounded: at most [`PER_DIM`] segments per dimension, replaced by the least-used one when full
//! (a replaced segment starts from zero). Template use is counted per account template slot, so
//! whether a segment's traffic is explained by a narrow product template (or lies in a broad,
//! long-form one) is decided with the account's templates at scoring time, retroactively, as for
//! the account itself.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::account::{Counters, MAX_NAME_BYTES, MAX_SHAPES, MAX_TEMPLATES};
use crate::features::{NO_TOPIC, RequestFeatures, TOPICS};
use crate::sketch::{combine, hash_bytes};

/// Segments kept per dimension.
pub const PER_DIM: usize = 6;

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
    pub counters: Counters,
    /// Requests per account template slot (reset when the account's slot is reused).
    pub tpl: Vec<u32>,
    pub tpl_harvest: Vec<u32>,
    /// Requests (and harvesting requests) per account shape slot.
    #[serde(default)]
    pub shp: Vec<u32>,
    #[serde(default)]
    pub shp_harvest: Vec<u32>,
    pub last_hour: Option<i64>,
    /// Score at the last evaluation.
    pub score: f64,
}

impl Segment {
    /// Human-readable name, e.g. `key batch-export` or `client IP 10.0.0.7`.
    pub fn label(&self) -> String {
        format!("{} {}", self.dim.word(), self.name)
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
        self.bump(SegDim::Key, key.as_bytes(), &|| key.to_owned(), r);
        if let Some(ip) = ip {
            let mut buf = [0u8; 16];
            let bytes: &[u8] = match ip {
                IpAddr::V4(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    &buf[..4]
                }
                IpAddr::V6(v6) => {
                    buf.copy_from_slice(&v6.octets());
                    &buf[..]
                }
            };
            self.bump(SegDim::ClientIp, bytes, &|| ip.to_string(), r);
            let net_len = if ip.is_ipv4() { 3 } else { 6 };
            self.bump(SegDim::Network, &bytes[..net_len], &|| network(ip), r);
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

    fn bump(&mut self, dim: SegDim, value: &[u8], name: &dyn Fn() -> String, r: &SegRequest) {
        let id = combine(dim as u64 + 101, hash_bytes(value));
        let i = match self.list.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                let fresh = Segment {
                    dim,
                    id,
                    name: truncate(&name()),
                    counters: Counters::default(),
                    tpl: vec![0; MAX_TEMPLATES],
                    tpl_harvest: vec![0; MAX_TEMPLATES],
                    shp: vec![0; MAX_SHAPES],
                    shp_harvest: vec![0; MAX_SHAPES],
                    last_hour: None,
                    score: 0.0,
                };
                let same = self.list.iter().filter(|s| s.dim == dim).count();
                if same < PER_DIM {
                    self.list.push(fresh);
                    self.list.len() - 1
                } else {
                    let Some((i, _)) = self
                        .list
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.dim == dim)
                        .min_by_key(|(_, s)| s.counters.requests)
                    else {
                        return;
                    };
                    self.list[i] = fresh;
                    i
                }
            }
        };
        let Some(s) = self.list.get_mut(i) else {
            return;
        };
        let f = r.f;
        let c = &mut s.counters;
        c.requests += 1;
        c.reasoning += u64::from(f.reasoning);
        c.rubric += u64::from(f.rubric);
        c.reveal += u64::from(f.reveal);
        c.elicit += u64::from(f.reasoning || f.rubric);
        c.out_dist += u64::from(f.harvest_params());
        c.max_high += u64::from(f.max_tokens.is_some_and(|m| m >= r.max_tokens_high));
        c.single_turn += u64::from(!f.multi_turn());
        c.bench += u64::from(r.bench_hit);
        c.harvest += u64::from(r.harvesting);
        if let Some(t) = f.temperature {
            c.temps |= 1 << t.min(31);
        }
        if f.topic != NO_TOPIC {
            let t = usize::from(f.topic) % TOPICS;
            c.topics[t] += 1;
            if r.harvesting {
                c.harvest_topics[t] += 1;
            }
        }
        c.hours[r.hour_of_day % 24] += 1;
        if s.last_hour.is_none_or(|h| r.hour > h) {
            c.active_hours += 1;
            s.last_hour = Some(r.hour);
        }
        for i in r.shapes.into_iter().flatten() {
            if let Some(x) = s.shp.get_mut(i) {
                *x += 1;
            }
            if let Some(x) = s.shp_harvest.get_mut(i) {
                *x += u32::from(r.harvesting);
            }
        }
        if let Some(t) = r.template {
            if let Some(x) = s.tpl.get_mut(t) {
                *x += 1;
            }
            if let Some(x) = s.tpl_harvest.get_mut(t) {
                *x += u32::from(r.harvesting);
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

    /// Bytes one account's segments can hold (for [`crate::account::memory_bound`]).
    pub fn memory_bound() -> usize {
        use std::mem::size_of;
        4 * PER_DIM * (size_of::<Segment>() + MAX_NAME_BYTES + 4 * (2 * MAX_TEMPLATES + 2 * MAX_SHAPES))
    }
}
