//! Coordination: a sharded index from link keys (shared template, client IP, /24 network,
//! operator metadata, synchronized activity) to the accounts that carry them, and union-find
//! clustering over it. Registration happens on the request path only when an account shows a new
//! IP, a template becomes heavy or a synchronized pair crosses its thresholds (see
//! [`crate::sync`]), so the index is touched rarely.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lock;
use crate::sketch::{combine, hash_bytes};

const SHARDS: usize = 16;

/// Why two accounts are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// The same prompt template (skeleton SimHash) carries a large share of both accounts' traffic.
    /// Clusters on its own only between accounts in which it carries at least half of the
    /// requests (a campaign's wrapper); otherwise it is the content evidence of a shared address
    /// pool (see [`crate::pool`]): popular templates — a public benchmark's word problems, a
    /// common question form — are shared by strangers as a part of their traffic.
    Template,
    /// The same client IP address: reported, not enough to cluster on its own.
    Ip,
    /// The same /24 (IPv4) or /48 (IPv6) network: reported, not enough to cluster on its own.
    Network,
    /// Operator-supplied metadata (payment or signup fingerprint).
    Metadata,
    /// Bursts of activity that start in the same minutes, many times, while both accounts are
    /// otherwise quiet (see [`crate::sync`]). One entry per linked pair. Clusters only together
    /// with a shared address of the same two accounts.
    Sync,
    /// The same prompt wrapper (first or last eight words) in a fifth or more of both
    /// accounts' prompts: reported, not enough to cluster on its own (see [`crate::pool`]).
    Wrapper,
    /// Two accounts sharing an address pool (several client IPs) corroborated by a shared
    /// wrapper or activity in the same 10-minute slots (see [`crate::pool`]). One entry per
    /// pair; clusters.
    Pool,
}

impl LinkKind {
    /// Whether this kind of link alone merges two accounts into one cluster. Addresses (IP and
    /// network) do not: unrelated customers share them behind NAT, VPN and cloud egress, and every
    /// account shares the load balancer's address when `trusted_proxies` is not set. They are
    /// reported as links in evidence; clusters need a shared template or operator metadata.
    /// A synchronized-activity link does not merge on its own either (see [`clusters`]): it
    /// merges two accounts only when they also share a client IP or network.
    pub fn clusters(self) -> bool {
        matches!(self, LinkKind::Metadata | LinkKind::Pool)
    }

    /// Whether this kind of link is a shared address (IP or network).
    pub fn is_address(self) -> bool {
        matches!(self, LinkKind::Ip | LinkKind::Network)
    }
}

/// Accounts sharing one link key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkEntry {
    pub kind: LinkKind,
    pub label: String,
    pub orgs: Vec<String>,
    /// More accounts than the fan-out limit share this key: too common to mean anything.
    pub overflow: bool,
}

/// Key of a link value.
pub fn link_key(kind: LinkKind, value: &[u8]) -> u64 {
    combine(kind as u64 + 1, hash_bytes(value))
}

/// Sharded link index.
pub struct CoordIndex {
    shards: Vec<Mutex<HashMap<u64, LinkEntry>>>,
    fanout: usize,
}

impl CoordIndex {
    pub fn new(fanout: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            fanout: fanout.max(2),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, LinkEntry>> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Record that `org` carries `key`. Returns true when the org was newly added.
    pub fn register(
        &self,
        key: u64,
        kind: LinkKind,
        label: &dyn Fn() -> String,
        org: &str,
    ) -> bool {
        let mut s = lock(self.shard(key));
        let e = s.entry(key).or_insert_with(|| LinkEntry {
            kind,
            label: label(),
            orgs: Vec::new(),
            overflow: false,
        });
        if e.orgs.iter().any(|o| o == org) {
            return false;
        }
        if e.orgs.len() >= self.fanout {
            e.overflow = true;
            return false;
        }
        e.orgs.push(org.to_owned());
        true
    }

    pub fn get(&self, key: u64) -> Option<LinkEntry> {
        lock(self.shard(key)).get(&key).cloned()
    }

    /// All entries (for clustering and snapshots).
    pub fn entries(&self) -> Vec<(u64, LinkEntry)> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(lock(s).iter().map(|(k, v)| (*k, v.clone())));
        }
        out.sort_by_key(|(k, _)| *k);
        out
    }

    pub fn insert_entry(&self, key: u64, e: LinkEntry) {
        lock(self.shard(key)).insert(key, e);
    }
}

/// Union-find over string ids.
#[derive(Default)]
pub struct UnionFind {
    ids: HashMap<String, usize>,
    names: Vec<String>,
    parent: Vec<usize>,
}

impl UnionFind {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len();
        self.ids.insert(name.to_owned(), i);
        self.names.push(name.to_owned());
        self.parent.push(i);
        i
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    pub fn union(&mut self, a: &str, b: &str) {
        let (a, b) = (self.id(a), self.id(b));
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Smaller index becomes root: deterministic.
            let (r, c) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[c] = r;
        }
    }
    /// Groups with at least two members, each sorted, ordered by first member.
    pub fn groups(&mut self) -> Vec<Vec<String>> {
        let mut by_root: HashMap<usize, Vec<String>> = HashMap::new();
        for i in 0..self.names.len() {
            let r = self.find(i);
            by_root.entry(r).or_default().push(self.names[i].clone());
        }
        let mut out: Vec<Vec<String>> = by_root.into_values().filter(|g| g.len() >= 2).collect();
        for g in &mut out {
            g.sort();
        }
        out.sort();
        out
    }
}

/// Clusters from the link entries: union-find over shared templates and operator metadata, and
/// over synchronized-activity pairs corroborated by a shared address.
///
/// Why a synchronized link alone does not merge: each weak link has a benign explanation —
/// strangers share egress addresses (NAT, VPN, cloud), and strangers' jobs can fire in the same
/// minutes (a shared upstream trigger, a platform's batch scheduler) — and a cluster flag touches
/// every member, so a benign account wrongly merged with a harvester would be flagged with it.
/// The conjunction for the same two accounts (bursts starting together many times *and* the same
/// IP or /24) is what a scheduler-driven campaign on shared infrastructure shows, and is far
/// rarer between strangers. Uncorroborated synchronized links are reported in the evidence.
pub fn clusters(entries: &[(u64, LinkEntry)]) -> Vec<Vec<String>> {
    clusters_of(entries.iter().map(|(k, e)| (*k, e)), &HashSet::new()).groups
}

fn usable(e: &LinkEntry) -> bool {
    !e.overflow && e.orgs.len() >= 2
}

/// Result of clustering.
pub struct Clustering {
    pub groups: Vec<Vec<String>>,
    /// Synchronized pairs `(a, b)` that also share an address (and so merge), sorted.
    pub corroborated: Vec<(String, String)>,
}

/// `dominant`: (organization, template link key) of templates that carry at least half of the
/// organization's requests; a template link merges only such organizations.
fn clusters_of<'a, I>(entries: I, dominant: &HashSet<(String, u64)>) -> Clustering
where
    I: Iterator<Item = (u64, &'a LinkEntry)> + Clone,
{
    let mut uf = UnionFind::default();
    // Address entries each organization is in.
    let mut addresses: HashMap<&str, Vec<u64>> = HashMap::new();
    for (k, e) in entries.clone() {
        if e.kind.is_address() && usable(e) {
            for o in &e.orgs {
                addresses.entry(o.as_str()).or_default().push(k);
            }
        }
    }
    let share_address = |a: &str, b: &str| match (addresses.get(a), addresses.get(b)) {
        (Some(x), Some(y)) => x.iter().any(|k| y.contains(k)),
        _ => false,
    };
    let mut corroborated = Vec::new();
    for (k, e) in entries {
        if !usable(e) {
            continue;
        }
        if e.kind == LinkKind::Template {
            let members: Vec<&String> = e
                .orgs
                .iter()
                .filter(|o| dominant.contains(&((*o).clone(), k)))
                .collect();
            for o in members.iter().skip(1) {
                uf.union(members[0], o);
            }
        } else if e.kind.clusters() {
            for o in &e.orgs[1..] {
                uf.union(&e.orgs[0], o);
            }
        } else if e.kind == LinkKind::Sync
            && !addresses.is_empty()
            && share_address(&e.orgs[0], &e.orgs[1])
        {
            uf.union(&e.orgs[0], &e.orgs[1]);
            corroborated.push((e.orgs[0].clone(), e.orgs[1].clone()));
        }
    }
    corroborated.sort();
    Clustering {
        groups: uf.groups(),
        corroborated,
    }
}

impl CoordIndex {
    /// Clusters computed in place (all shards locked in order for the duration; only names of
    /// clustered accounts are copied).
    pub fn cluster(&self, dominant: &HashSet<(String, u64)>) -> Clustering {
        let guards: Vec<_> = self.shards.iter().map(|s| lock(s)).collect();
        clusters_of(
            guards.iter().flat_map(|g| g.iter().map(|(k, e)| (*k, e))),
            dominant,
        )
    }
}

/// Stable cluster id from its smallest member.
pub fn cluster_id(members: &[String]) -> String {
    let first = members.first().map(String::as_str).unwrap_or("");
    format!("cluster-{:08x}", hash_bytes(first.as_bytes()) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_clusters_by_strong_links_only() {
        let idx = CoordIndex::new(10);
        let ip = link_key(LinkKind::Ip, b"10.0.0.1");
        let net = link_key(LinkKind::Network, b"10.0.0.0/24");
        let meta = link_key(LinkKind::Metadata, b"payment=card-1");
        for o in ["a", "b"] {
            idx.register(ip, LinkKind::Ip, &|| "ip".into(), o);
        }
        for o in ["b", "c"] {
            idx.register(meta, LinkKind::Metadata, &|| "meta".into(), o);
        }
        for o in ["c", "d", "e"] {
            idx.register(net, LinkKind::Network, &|| "net".into(), o);
        }
        // Shared addresses alone (a–b by IP, c–d–e by network) do not merge accounts.
        let g = clusters(&idx.entries());
        assert_eq!(g, vec![vec!["b".to_string(), "c".into()]]);
        assert_eq!(cluster_id(&g[0]), cluster_id(&["b".to_string()]));
    }

    #[test]
    fn synchronized_links_cluster_only_with_a_shared_address() {
        let idx = CoordIndex::new(10);
        let sync = |a: &str, b: &str| {
            let k = link_key(LinkKind::Sync, format!("{a}\n{b}").as_bytes());
            for o in [a, b] {
                idx.register(k, LinkKind::Sync, &|| "sync".into(), o);
            }
        };
        sync("s1", "s2");
        sync("s2", "s3");
        sync("s4", "s5");
        // s1, s2, s3 share a /24; s4 and s5 share nothing else; s5 and s6 share a network but
        // no synchronized activity.
        let net = link_key(LinkKind::Network, b"198.18.0.0/24");
        for o in ["s1", "s2", "s3"] {
            idx.register(net, LinkKind::Network, &|| "net".into(), o);
        }
        let net2 = link_key(LinkKind::Network, b"198.18.1.0/24");
        for o in ["s5", "s6"] {
            idx.register(net2, LinkKind::Network, &|| "net".into(), o);
        }
        let g = clusters(&idx.entries());
        assert_eq!(
            g,
            vec![vec!["s1".to_string(), "s2".into(), "s3".into()]],
            "sync + address merges; sync alone or address alone does not"
        );
    }

    #[test]
    fn fanout_limit_marks_overflow() {
        let idx = CoordIndex::new(3);
        let k = link_key(LinkKind::Template, b"t");
        for o in ["a", "b", "c", "d"] {
            idx.register(k, LinkKind::Template, &|| "t".into(), o);
        }
        let e = idx.get(k).unwrap();
        assert!(e.overflow);
        assert_eq!(e.orgs.len(), 3);
        assert!(clusters(&idx.entries()).is_empty());
    }
}
