//! The detector: sharded per-account state updated on the request path, clustering run apart
//! from it (a background task in the gateway, inline at fixed counts in the offline tools),
//! assessments, flags, investigator evidence and snapshots.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::account::{Account, Counters, DayBucket, HourBucket, MAX_LINK_KEYS, SamplePrompt};
use crate::coord::{CoordIndex, LinkEntry, LinkKind, cluster_id, link_key};
use crate::features::{self, RequestFeatures};
use crate::score::Signal;
use crate::sketch::{Bloom, Hll, hamming, hash_bytes};
use crate::sync::{SyncIndex, SyncPair, SyncSnapshot, Thresholds};
use crate::{DetectorSettings, GuardError, Observation, lock};

const SHARDS: usize = 64;
const BENCH_RADIUS: u32 = 3;

/// What `observe` tells the gateway about one request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Current score of the organization (max of its own and its cluster's).
    pub score: f64,
    pub flagged: bool,
    /// This request made the organization flagged.
    pub newly_flagged: bool,
    /// This request itself asks for reasoning, rubrics, the system prompt or output distributions.
    pub harvesting_signals: bool,
}

/// Current assessment of an organization.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Assessment {
    pub organization: String,
    pub score: f64,
    pub own_score: f64,
    pub flagged: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub flagged_at: Option<OffsetDateTime>,
    pub requests_until_flagged: Option<u64>,
    pub requests: u64,
    pub cluster: Option<String>,
    pub cluster_score: Option<f64>,
    /// The segment (key, client IP, network or end user) whose score set `own_score`, when a
    /// segment scored higher than the account's traffic as a whole.
    pub segment: Option<String>,
    pub signals: Vec<Signal>,
    /// The signals of `segment` (empty when the account is judged on its whole traffic): the
    /// account's `signals` are those of all its traffic, in which the segment is diluted.
    pub segment_signals: Vec<Signal>,
    /// The distribution test's request profile (windowed mean of hashed request features).
    #[serde(skip)]
    pub profile: Vec<f32>,
}

/// A flagged organization.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlagSummary {
    pub organization: String,
    pub score: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub flagged_at: OffsetDateTime,
    pub cluster: Option<String>,
}

/// A template in the evidence.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TemplateEvidence {
    pub skeleton: String,
    pub count: u32,
    pub harvesting: u32,
    /// Heavy and topically narrow: treated as product traffic.
    pub explains_traffic: bool,
    /// Other accounts whose heavy traffic uses the same template.
    pub shared_with: usize,
    /// Counted before the detector's word hashes changed (restored from an older snapshot):
    /// history only, new requests with this skeleton count in another template. Absent when
    /// false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

/// Per-key figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeyEvidence {
    pub key: String,
    pub requests: u64,
    pub harvesting_share: f64,
    pub elicitation_share: f64,
    pub output_distribution_share: f64,
    pub benchmark_share: f64,
    pub tokens: u64,
    pub harvesting_tokens: u64,
}

/// One segment of an account (key, client IP, network or end user) in the evidence.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SegmentEvidence {
    /// E.g. `key batch-export`, `client IP 10.0.0.7`, `network 10.0.0.0/24`, `end user u17`.
    pub segment: String,
    pub requests: u64,
    /// Share of the account's requests.
    pub share: f64,
    /// Score at the last evaluation (0 below `min_requests` or when it is the whole account).
    pub score: f64,
    /// The three strongest signals of the segment.
    pub signals: Vec<Signal>,
}

/// A linked account and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LinkedAccount {
    pub organization: String,
    pub reasons: Vec<String>,
}

/// Requests and tokens, with the part carrying harvesting signals.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ExtentTotals {
    pub requests: u64,
    pub harvesting_requests: u64,
    pub harvesting_request_share: f64,
    pub tokens: u64,
    pub harvesting_tokens: u64,
    pub harvesting_token_share: f64,
}

impl ExtentTotals {
    fn new(requests: u64, harvesting_requests: u64, tokens: u64, harvesting_tokens: u64) -> Self {
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Self {
            requests,
            harvesting_requests,
            harvesting_request_share: share(harvesting_requests, requests),
            tokens,
            harvesting_tokens,
            harvesting_token_share: share(harvesting_tokens, tokens),
        }
    }
}

/// Extent for one model owner, with daily buckets.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OwnerEvidence {
    pub owner: String,
    pub totals: ExtentTotals,
    pub days: Vec<DayBucket>,
}

/// How much of the traffic carries harvesting signals, overall and per model owner.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Extent {
    pub overall: ExtentTotals,
    pub by_owner: Vec<OwnerEvidence>,
}

/// Evidence for an investigator.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evidence {
    pub organization: String,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The model owner the evidence is filtered to (extent and sample), if any.
    pub model_owner: Option<String>,
    pub score: f64,
    pub flagged: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub flagged_at: Option<OffsetDateTime>,
    pub cluster: Option<String>,
    pub signals: Vec<Signal>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_seen: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Hourly signal timeline (last 7 days of activity), all owners.
    pub timeline: Vec<HourBucket>,
    pub top_templates: Vec<TemplateEvidence>,
    pub keys: Vec<KeyEvidence>,
    /// Segments, worst score first (the account is judged on its worst segment).
    pub segments: Vec<SegmentEvidence>,
    pub linked_accounts: Vec<LinkedAccount>,
    pub extent: Extent,
    /// Retained prompts: flagged accounts only, within the retention period.
    pub sample: Vec<SamplePrompt>,
}

/// Public benchmark filter: exact (Bloom over normalized hashes) plus near-duplicate (SimHash
/// with 4 × 16-bit LSH bands).
struct BenchFilter {
    bloom: Bloom,
    bands: HashMap<u64, Vec<u64>>,
    prompts: usize,
}

impl BenchFilter {
    fn load(files: &[std::path::PathBuf]) -> Result<Option<BenchFilter>, GuardError> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut hashes = Vec::new();
        for path in files {
            let file = std::fs::File::open(path).map_err(|source| GuardError::Io {
                path: path.clone(),
                source,
            })?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|source| GuardError::Io {
                    path: path.clone(),
                    source,
                })?;
                if let Some(text) = benchmark_prompt(&line) {
                    hashes.push(features::normalized_hash(&text));
                }
            }
        }
        Ok(Some(BenchFilter::from_hashes(&hashes)))
    }

    fn from_hashes(hashes: &[(u64, u64)]) -> BenchFilter {
        let mut bloom = Bloom::with_capacity(hashes.len(), 0.001);
        let mut bands: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(h, sim) in hashes {
            bloom.insert(h);
            for b in 0..4u64 {
                bands.entry(band_key(sim, b)).or_default().push(sim);
            }
        }
        BenchFilter {
            bloom,
            bands,
            prompts: hashes.len(),
        }
    }

    fn hit(&self, f: &RequestFeatures) -> bool {
        if f.words < 3 {
            return false;
        }
        if self.bloom.contains(f.prompt_hash)
            || f.line_hashes.iter().any(|&h| self.bloom.contains(h))
        {
            return true;
        }
        (0..4u64).any(|b| {
            self.bands
                .get(&band_key(f.skeleton_simhash, b))
                .is_some_and(|c| {
                    c.iter()
                        .any(|&s| hamming(s, f.skeleton_simhash) <= BENCH_RADIUS)
                })
        })
    }
}

fn band_key(sim: u64, band: u64) -> u64 {
    ((sim >> (band * 16)) & 0xffff) | (band << 16)
}

/// The prompt of one benchmark line: a JSON object's prompt-like field, or the text itself.
fn benchmark_prompt(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() {
        return None;
    }
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        for k in ["prompt", "instruction", "question", "input", "text"] {
            if let Some(s) = v.get(k).and_then(|x| x.as_str())
                && !s.trim().is_empty()
            {
                return Some(s.to_owned());
            }
        }
        return None;
    }
    Some(t.to_owned())
}

/// The distillation detector. `Send + Sync`; per-account state lives in 64 mutex-guarded shards
/// chosen by organization hash, so concurrent requests of different accounts rarely contend.
pub struct Detector {
    settings: DetectorSettings,
    bench: Option<BenchFilter>,
    shards: Vec<Mutex<HashMap<String, Account>>>,
    coord: CoordIndex,
    sync: SyncIndex,
    observed: AtomicU64,
    /// `observed` when the last re-clustering started.
    clustered_at: AtomicU64,
    /// Re-clustering runs (any caller): for tests and diagnostics.
    recluster_runs: AtomicU64,
    recluster: Mutex<()>,
}

/// Format of [`Detector::snapshot`]. 2: word hashes eight bytes at a time and the polynomial
/// word-sequence fold (prompt, line, template and topic hashes all differ from format 1).
pub const SNAPSHOT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    observed: u64,
    accounts: BTreeMap<String, Account>,
    links: Vec<(u64, LinkEntry)>,
    #[serde(default)]
    sync: SyncSnapshot,
}

/// What [`Detector::restore_migrating`] changed to restore a snapshot of an older format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotMigration {
    pub from_version: u32,
    pub to_version: u32,
    /// Accounts whose distinct-prompt sketch and topic histograms were emptied.
    pub accounts: usize,
    /// Templates kept frozen (still explaining the requests they counted, never matched again).
    pub templates_frozen: usize,
    /// Shared-template link entries kept under their old keys (they still link the accounts
    /// that shared the template; accounts register the template again under its new key).
    pub template_links_kept: usize,
}

impl std::fmt::Display for SnapshotMigration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "detector snapshot format {} restored as format {}: word hashes changed, so for {} \
             accounts the distinct-prompt sketches were emptied (novelty counts requests from now \
             on) and the topic histograms reset (topic drift and harvest breadth rebuild from \
             new requests); {} templates were kept frozen (they still explain the traffic they \
             counted; new requests build new templates) and {} shared-template links kept under \
             their old keys; counters, timelines, extents, flags, clusters, links and samples are \
             unchanged",
            self.from_version,
            self.to_version,
            self.accounts,
            self.templates_frozen,
            self.template_links_kept
        )
    }
}

/// Two accounts linked by synchronized activity, with what was counted.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SyncLink {
    pub a: String,
    pub b: String,
    /// Burst starts within a minute of a burst start of the other account.
    pub coincident_bursts: u32,
    /// Distinct burst starts of the two accounts while both were bursty.
    pub bursts: u32,
    pub jaccard: f64,
    /// Whether the two accounts also share a client IP or network, so the link merges them into
    /// one cluster.
    pub clusters: bool,
}

impl Detector {
    /// Build a detector; loads the benchmark files.
    pub fn new(settings: DetectorSettings) -> Result<Detector, GuardError> {
        settings.validate()?;
        let bench = BenchFilter::load(&settings.benchmark_files)?;
        let coord = CoordIndex::new(settings.max_link_fanout);
        Ok(Detector {
            settings,
            bench,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            coord,
            sync: SyncIndex::new(),
            observed: AtomicU64::new(0),
            clustered_at: AtomicU64::new(0),
            recluster_runs: AtomicU64::new(0),
            recluster: Mutex::new(()),
        })
    }

    /// Build a detector whose benchmark filter also holds `prompts` (in addition to the
    /// configured files); used by the evaluation harness and tests.
    pub fn with_benchmark_prompts(
        settings: DetectorSettings,
        prompts: &[String],
    ) -> Result<Detector, GuardError> {
        let mut d = Detector::new(settings.clone())?;
        let mut hashes: Vec<(u64, u64)> = Vec::new();
        for path in &settings.benchmark_files {
            let text = std::fs::read_to_string(path).map_err(|source| GuardError::Io {
                path: path.clone(),
                source,
            })?;
            hashes.extend(
                text.lines()
                    .filter_map(benchmark_prompt)
                    .map(|p| features::normalized_hash(&p)),
            );
        }
        hashes.extend(
            prompts
                .iter()
                .filter_map(|p| benchmark_prompt(p))
                .map(|p| features::normalized_hash(&p)),
        );
        d.bench = if hashes.is_empty() {
            None
        } else {
            Some(BenchFilter::from_hashes(&hashes))
        };
        Ok(d)
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Number of prompts in the benchmark filter (0 when overlap detection is off).
    pub fn benchmark_prompts(&self) -> usize {
        self.bench.as_ref().map_or(0, |b| b.prompts)
    }

    fn shard(&self, org: &str) -> &Mutex<HashMap<String, Account>> {
        &self.shards[(hash_bytes(org.as_bytes()) as usize) % SHARDS]
    }

    /// Fold one request into the organization's state and score it.
    pub fn observe(&self, obs: &Observation<'_>) -> Outcome {
        let (f, texts) = features::extract_with(
            obs.endpoint,
            obs.body,
            self.settings.max_tokens_high,
            self.bench.is_some(),
        );
        self.observe_features(obs, f, texts)
    }

    /// [`Detector::observe`] of a request the gateway has parsed into the wire view: the
    /// features are read from `request`, and `obs.body` and `obs.endpoint` are not read again.
    pub fn observe_request(
        &self,
        obs: &Observation<'_>,
        request: &tollgate_wire::ApiRequest<'_>,
    ) -> Outcome {
        let (f, texts) =
            features::extract_request(request, self.settings.max_tokens_high, self.bench.is_some());
        self.observe_features(obs, f, texts)
    }

    fn observe_features(
        &self,
        obs: &Observation<'_>,
        f: features::RequestFeatures,
        texts: Option<features::Texts<'_>>,
    ) -> Outcome {
        let bench_hit = self.bench.as_ref().is_some_and(|b| b.hit(&f));
        let skeleton = || {
            texts
                .as_ref()
                .map(|t| features::skeleton_text(&t.system_text(), &t.user_text()))
                .unwrap_or_default()
        };
        let s = &self.settings;
        let mut burst = None;
        let outcome = {
            let mut shard = lock(self.shard(obs.organization));
            let acc = match shard.get_mut(obs.organization) {
                Some(a) => a,
                None => shard.entry(obs.organization.to_owned()).or_default(),
            };
            let up = acc.update(
                &f,
                bench_hit,
                obs.time,
                obs.key,
                obs.client_ip,
                obs.model_owner,
                s.max_tokens_high,
                texts.as_ref().and_then(|t| t.end_user.as_deref()),
                &skeleton,
            );
            if s.sync_links {
                burst = up.burst_start.map(|m| (m, up.bursty));
            }
            let n = acc.counters.requests;
            if n <= 64 || n % 8 == 0 {
                acc.refresh_templates(s.template_narrow_entropy);
                self.judge_segments(acc);
            }
            let whole = acc.own_score(&s.weights);
            acc.whole_score = whole;
            let own = whole.max(acc.segment_score);
            acc.own_score = own;
            acc.score = if acc.cluster.is_some() {
                own.max(acc.cluster_score)
            } else {
                own
            };
            let mut newly = false;
            if !acc.flagged
                && ((n >= s.min_requests && own >= s.flag_threshold) || acc.cluster_flagged)
            {
                acc.flagged = true;
                acc.flagged_at = Some(obs.time);
                acc.requests_until_flagged = Some(n);
                newly = true;
            }
            if acc.flagged && up.harvesting {
                let text = texts
                    .as_ref()
                    .map(|t| t.user_text().into_owned())
                    .unwrap_or_default();
                acc.retain_sample(
                    SamplePrompt {
                        time: obs.time,
                        key: obs.key.to_owned(),
                        model_owner: obs.model_owner.map(str::to_owned),
                        harvesting: true,
                        text,
                    },
                    s.sample_size,
                    s.sample_retention_days,
                );
            }
            if let Some(sim) = up.register_template {
                let label = || format!("shared template: {}", acc_skeleton(&acc.templates, sim));
                let label_text = label();
                self.link(
                    acc,
                    obs.organization,
                    LinkKind::Template,
                    &sim.to_le_bytes(),
                    &|| label_text.clone(),
                );
            }
            if let Some((h, head)) = up.register_wrapper {
                let label = texts
                    .as_ref()
                    .map(|t| wrapper_label(&t.user_text(), head))
                    .unwrap_or_default();
                self.link(
                    acc,
                    obs.organization,
                    LinkKind::Wrapper,
                    &h.to_le_bytes(),
                    &|| label.clone(),
                );
            }
            if up.new_ip
                && let Some(ip) = obs.client_ip
            {
                self.link(
                    acc,
                    obs.organization,
                    LinkKind::Ip,
                    ip.to_string().as_bytes(),
                    &|| format!("same client IP {ip}"),
                );
                let net = crate::segment::network(ip);
                self.link(
                    acc,
                    obs.organization,
                    LinkKind::Network,
                    net.as_bytes(),
                    &|| format!("same network {net}"),
                );
            }
            Outcome {
                score: acc.score,
                flagged: acc.flagged,
                newly_flagged: newly,
                harvesting_signals: up.harvesting,
            }
        };
        if let Some((start, bursty)) = burst {
            let th = Thresholds {
                min_bursts: s.sync_min_bursts,
                min_jaccard: s.sync_min_jaccard,
            };
            for pair in self.sync.burst_start(obs.organization, start, bursty, th) {
                self.link_sync(&pair);
            }
        }
        self.observed.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// [`Detector::observe`], then re-clusters inline when the number of observations reaches a
    /// multiple of `cluster_interval`: the deterministic schedule of the offline tools (`guard
    /// replay`, `guard-eval`), whose figures depend on where re-clustering happens. A server
    /// calls `observe` and re-clusters on a background task instead (see
    /// [`Detector::recluster_due`]).
    pub fn observe_and_recluster(&self, obs: &Observation<'_>) -> Outcome {
        let outcome = self.observe(obs);
        let seen = self.observed.load(Ordering::Relaxed);
        if self.settings.cluster_interval > 0 && seen % self.settings.cluster_interval == 0 {
            self.recluster();
        }
        outcome
    }

    /// Observations since the last re-clustering started.
    pub fn pending_observations(&self) -> u64 {
        self.observed
            .load(Ordering::Relaxed)
            .saturating_sub(self.clustered_at.load(Ordering::Relaxed))
    }

    /// At least `cluster_interval` observations arrived since the last re-clustering started
    /// (never with `cluster_interval = 0`): two atomic loads, for the request path to decide
    /// whether to wake the background re-clustering.
    pub fn recluster_due(&self) -> bool {
        let every = self.settings.cluster_interval;
        every > 0 && self.pending_observations() >= every
    }

    /// Re-clustering runs so far, by any caller (`observe` never runs one).
    pub fn recluster_runs(&self) -> u64 {
        self.recluster_runs.load(Ordering::Relaxed)
    }

    fn link(
        &self,
        acc: &mut Account,
        org: &str,
        kind: LinkKind,
        value: &[u8],
        label: &dyn Fn() -> String,
    ) {
        let key = link_key(kind, value);
        if self.coord.register(key, kind, label, org) && acc.link_keys.len() < MAX_LINK_KEYS {
            acc.link_keys.push(key);
        }
    }

    /// Register a synchronized pair in the link index and in both accounts' link keys.
    fn link_sync(&self, pair: &SyncPair) {
        self.link_pair(LinkKind::Sync, &pair.a, &pair.b, &pair.label());
    }

    /// Register a link between two accounts (a pair-keyed entry) in the link index and in both
    /// accounts' link keys, one shard lock at a time.
    fn link_pair(&self, kind: LinkKind, a: &str, b: &str, label: &str) {
        let key = link_key(kind, format!("{a}\n{b}").as_bytes());
        for org in [a, b] {
            self.coord.register(key, kind, &|| label.to_owned(), org);
            if let Some(acc) = lock(self.shard(org)).get_mut(org)
                && acc.link_keys.len() < MAX_LINK_KEYS
                && !acc.link_keys.contains(&key)
            {
                acc.link_keys.push(key);
            }
        }
    }

    /// (organization, template link key) of every template that carries at least half of its
    /// account's requests.
    fn dominant_templates(&self) -> std::collections::HashSet<(String, u64)> {
        let mut out = std::collections::HashSet::new();
        for shard in &self.shards {
            for (org, acc) in lock(shard).iter() {
                for k in acc.dominant_template_keys() {
                    out.insert((org.clone(), k));
                }
            }
        }
        out
    }

    /// Find pairs of accounts sharing an address pool, and link those whose pool is
    /// corroborated by a shared prompt wrapper or by activity in the same 10-minute slots (see
    /// [`crate::pool`]). Runs with re-clustering, off the per-request work.
    fn link_pools(&self) {
        let entries = self.coord.entries();
        let ips = entries
            .iter()
            .filter(|(_, e)| e.kind == LinkKind::Ip && !e.overflow)
            .map(|(_, e)| e.orgs.as_slice());
        let pairs = crate::pool::pool_pairs(ips);
        if pairs.is_empty() {
            return;
        }
        let mut wrappers: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut linked: std::collections::HashSet<(&str, &str)> = Default::default();
        for (k, e) in &entries {
            if e.overflow {
                continue;
            }
            if matches!(e.kind, LinkKind::Wrapper | LinkKind::Template) {
                for o in &e.orgs {
                    wrappers.entry(o.as_str()).or_default().push(*k);
                }
            }
            if e.kind == LinkKind::Pool && e.orgs.len() == 2 {
                linked.insert((e.orgs[0].as_str(), e.orgs[1].as_str()));
            }
        }
        let mut sorted: Vec<_> = pairs.into_iter().collect();
        sorted.sort();
        for ((a, b), shared) in sorted {
            if linked.contains(&(a.as_str(), b.as_str())) {
                continue;
            }
            let wrapper = match (wrappers.get(a.as_str()), wrappers.get(b.as_str())) {
                (Some(x), Some(y)) => x.iter().any(|k| y.contains(k)),
                _ => false,
            };
            let activity = |o: &str| lock(self.shard(o)).get(o).map(|acc| acc.activity.clone());
            let timing = match (activity(&a), activity(&b)) {
                (Some(x), Some(y)) => crate::pool::coincidence(&x, &y).filter(|(both, lift)| {
                    *both >= crate::pool::MIN_COINCIDENT_SLOTS && *lift >= crate::pool::MIN_LIFT
                }),
                _ => None,
            };
            if !wrapper && timing.is_none() {
                continue;
            }
            let mut why = vec![format!(
                "shared address pool ({shared} client IP{} in common, several addresses each)",
                if shared == 1 { "" } else { "s" }
            )];
            if wrapper {
                why.push("the same prompt template or wrapper".to_owned());
            }
            if let Some((both, lift)) = timing {
                why.push(format!(
                    "active in the same 10-minute slots {both} times ({lift:.1}× chance)"
                ));
            }
            self.link_pair(LinkKind::Pool, &a, &b, &why.join(" and "));
        }
    }

    /// Score the account's segments and keep the worst one (see [`crate::segment`]).
    fn judge_segments(&self, acc: &mut Account) {
        let s = &self.settings;
        match acc.score_segments(&s.weights, s.min_requests, s.template_narrow_entropy) {
            Some((score, label)) => {
                acc.segment_score = score;
                acc.worst_segment = Some(label);
            }
            None => {
                acc.segment_score = 0.0;
                acc.worst_segment = None;
            }
        }
    }

    /// Pairs of accounts linked by synchronized activity, sorted.
    pub fn sync_links(&self) -> Vec<SyncLink> {
        let corroborated = self.coord.cluster(&self.dominant_templates()).corroborated;
        self.sync
            .linked_pairs()
            .into_iter()
            .map(|p| SyncLink {
                clusters: corroborated
                    .binary_search_by(|(a, b)| (a.as_str(), b.as_str()).cmp(&(&p.a, &p.b)))
                    .is_ok(),
                coincident_bursts: p.matched,
                bursts: p.distinct(),
                jaccard: (p.jaccard() * 10_000.0).round() / 10_000.0,
                a: p.a,
                b: p.b,
            })
            .collect()
    }

    /// Every pair tracked for synchronized activity (linked or not) with its counts: for
    /// diagnostics and tests.
    pub fn sync_pairs(&self) -> Vec<SyncPair> {
        self.sync.pairs()
    }

    /// Record the end of a completion for the key's latest request.
    pub fn record_completion(
        &self,
        organization: &str,
        key: &str,
        time: OffsetDateTime,
        output_tokens: u64,
        cancelled: bool,
    ) {
        let mut shard = lock(self.shard(organization));
        if let Some(acc) = shard.get_mut(organization) {
            acc.complete(key, time, output_tokens, cancelled);
        }
    }

    /// Operator-supplied metadata (payment or signup fingerprint) linking accounts.
    pub fn link_metadata(&self, organization: &str, kind: &str, value: &str) {
        let mut shard = lock(self.shard(organization));
        let acc = match shard.get_mut(organization) {
            Some(a) => a,
            None => shard.entry(organization.to_owned()).or_default(),
        };
        let v = format!("{kind}={value}");
        self.link(acc, organization, LinkKind::Metadata, v.as_bytes(), &|| {
            format!("same {kind} fingerprint")
        });
    }

    /// Recompute clusters (union-find over strong links) and cluster scores; flags the members
    /// of clusters whose aggregate traffic scores at or above the threshold. Costly (pool pair
    /// search over the link index: hundreds of milliseconds with thousands of accounts on shared
    /// addresses), so never run by `observe`: a server runs it on a background task when
    /// [`Detector::recluster_due`]; the offline tools through
    /// [`Detector::observe_and_recluster`]. One run at a time (a call during a run returns at
    /// once); its working set is a copy of the link index, the candidate pool pairs and one
    /// membership row per clustered account.
    pub fn recluster(&self) {
        let Ok(_guard) = self.recluster.try_lock() else {
            return;
        };
        self.clustered_at
            .store(self.observed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.recluster_runs.fetch_add(1, Ordering::Relaxed);
        self.link_pools();
        let groups = self.coord.cluster(&self.dominant_templates()).groups;
        let synced = self.sync.linked_counts();
        let mut membership: HashMap<String, (String, f64, bool, usize)> = HashMap::new();
        for g in &groups {
            let mut counters = Counters::default();
            let mut hll = Hll::new(crate::account::HLL_PRECISION);
            for org in g {
                let shard = lock(self.shard(org));
                if let Some(a) = shard.get(org) {
                    counters.add(&a.counters);
                    hll.merge(&a.distinct);
                }
            }
            let mut v = counters.values(hll.estimate());
            v.linked_accounts = g.len() - 1;
            let score = v.score(&self.settings.weights);
            let flagged = counters.requests >= self.settings.min_requests
                && score >= self.settings.flag_threshold;
            let id = cluster_id(g);
            for org in g {
                membership.insert(org.clone(), (id.clone(), score, flagged, g.len() - 1));
            }
        }
        // Applied atomically: every shard is locked (in index order, the only place that holds
        // more than one) before any account changes, so no reader sees part of the accounts
        // under the new clustering and part under the old one.
        let mut shards: Vec<_> = self.shards.iter().map(lock).collect();
        for shard in &mut shards {
            for (org, acc) in shard.iter_mut() {
                acc.sync_linked = synced.get(org).copied().unwrap_or(0);
                match membership.get(org) {
                    Some((id, score, flagged, linked)) => {
                        acc.cluster = Some(id.clone());
                        acc.cluster_score = *score;
                        acc.cluster_flagged = *flagged;
                        acc.linked = *linked;
                        acc.score = acc.own_score.max(*score);
                        if *flagged && !acc.flagged {
                            acc.flagged = true;
                            acc.flagged_at = acc.last_seen;
                            acc.requests_until_flagged = Some(acc.counters.requests);
                        }
                    }
                    None => {
                        acc.cluster = None;
                        acc.cluster_score = 0.0;
                        acc.cluster_flagged = false;
                        acc.linked = 0;
                        acc.score = acc.own_score;
                    }
                }
            }
        }
    }

    /// Current assessment of an organization.
    pub fn assessment(&self, organization: &str) -> Option<Assessment> {
        let shard = lock(self.shard(organization));
        let acc = shard.get(organization)?;
        Some(self.assess(organization, acc))
    }

    fn assess(&self, organization: &str, acc: &Account) -> Assessment {
        let segment = (acc.segment_score > acc.whole_score)
            .then(|| acc.worst_segment.clone())
            .flatten();
        let segment_signals = segment
            .as_ref()
            .and_then(|label| acc.segments.list.iter().find(|s| &s.label() == label))
            .map(|sg| {
                acc.segment_values(sg, self.settings.template_narrow_entropy)
                    .explain(&self.settings.weights)
            })
            .unwrap_or_default();
        Assessment {
            organization: organization.to_owned(),
            score: acc.score,
            own_score: acc.own_score,
            flagged: acc.flagged,
            flagged_at: acc.flagged_at,
            requests_until_flagged: acc.requests_until_flagged,
            requests: acc.counters.requests,
            cluster: acc.cluster.clone(),
            cluster_score: acc.cluster.as_ref().map(|_| acc.cluster_score),
            segment,
            signals: acc.values().explain(&self.settings.weights),
            segment_signals,
            profile: acc.profile.clone(),
        }
    }

    /// Assessments of every organization, sorted by name.
    pub fn assessments(&self) -> Vec<Assessment> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            out.extend(shard.iter().map(|(o, a)| self.assess(o, a)));
        }
        out.sort_by(|a, b| a.organization.cmp(&b.organization));
        out
    }

    /// Flagged organizations (re-clusters first), highest score first.
    pub fn flags(&self) -> Vec<FlagSummary> {
        self.recluster();
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            for (org, a) in shard.iter() {
                if let (true, Some(at)) = (a.flagged, a.flagged_at) {
                    out.push(FlagSummary {
                        organization: org.clone(),
                        score: a.score,
                        flagged_at: at,
                        cluster: a.cluster.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.organization.cmp(&b.organization))
        });
        out
    }

    /// Clear a flag after review (the account keeps its history and can be flagged again).
    pub fn clear_flag(&self, organization: &str) -> bool {
        let mut shard = lock(self.shard(organization));
        match shard.get_mut(organization) {
            Some(a) if a.flagged => {
                a.flagged = false;
                a.flagged_at = None;
                a.requests_until_flagged = None;
                a.sample.clear();
                true
            }
            _ => false,
        }
    }

    /// Evidence for an investigator, optionally filtered to one model owner (extent and sample).
    /// Samples older than the retention period relative to `now` are pruned.
    pub fn evidence(
        &self,
        organization: &str,
        owner: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<Evidence> {
        let (ev_base, link_keys) = {
            let mut shard = lock(self.shard(organization));
            let acc = shard.get_mut(organization)?;
            acc.prune_sample(now, self.settings.sample_retention_days);
            let a = self.assess(organization, acc);
            let requests = acc.counters.requests;
            let mut templates: Vec<&crate::account::Template> =
                acc.templates.iter().filter(|t| t.count > t.err).collect();
            templates.sort_by_key(|t| std::cmp::Reverse(t.count - t.err));
            let top_templates: Vec<TemplateEvidence> = templates
                .iter()
                .take(10)
                .map(|t| TemplateEvidence {
                    skeleton: if t.skeleton.is_empty() {
                        "(fewer than 3 requests)".into()
                    } else {
                        t.skeleton.clone()
                    },
                    count: t.count - t.err,
                    harvesting: t.harvest,
                    explains_traffic: t.explains(requests, self.settings.template_narrow_entropy),
                    shared_with: 0,
                    frozen: t.frozen,
                })
                .collect();
            let keys = acc
                .keys
                .iter()
                .map(|k| {
                    let s = |x: u64| {
                        if k.requests == 0 {
                            0.0
                        } else {
                            x as f64 / k.requests as f64
                        }
                    };
                    KeyEvidence {
                        key: k.key.clone(),
                        requests: k.requests,
                        harvesting_share: s(k.harvesting),
                        elicitation_share: s(k.elicitation),
                        output_distribution_share: s(k.output_distribution),
                        benchmark_share: s(k.benchmark),
                        tokens: k.tokens,
                        harvesting_tokens: k.harvesting_tokens,
                    }
                })
                .collect();
            let mut segments: Vec<SegmentEvidence> = acc
                .segments
                .list
                .iter()
                .map(|sg| {
                    let mut signals = acc
                        .segment_values(sg, self.settings.template_narrow_entropy)
                        .explain(&self.settings.weights);
                    signals.truncate(3);
                    SegmentEvidence {
                        segment: sg.label(),
                        requests: u64::from(sg.counters.requests),
                        share: f64::from(sg.counters.requests) / requests.max(1) as f64,
                        score: sg.score,
                        signals,
                    }
                })
                .collect();
            segments.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| b.requests.cmp(&a.requests))
            });
            let c = &acc.counters;
            let tokens = c.input_tokens + c.output_tokens;
            let by_owner = acc
                .owners
                .iter()
                .filter(|o| owner.is_none_or(|w| w == o.owner))
                .map(|o| {
                    let (r, h, t, ht) =
                        o.days
                            .iter()
                            .fold((0u64, 0u64, 0u64, 0u64), |(r, h, t, ht), d| {
                                (
                                    r + u64::from(d.requests),
                                    h + u64::from(d.harvesting),
                                    t + d.tokens,
                                    ht + d.harvesting_tokens,
                                )
                            });
                    OwnerEvidence {
                        owner: o.owner.clone(),
                        totals: ExtentTotals::new(r, h, t, ht),
                        days: o.days.iter().cloned().collect(),
                    }
                })
                .collect();
            let sample = acc
                .sample
                .iter()
                .filter(|s| owner.is_none_or(|w| s.model_owner.as_deref() == Some(w)))
                .cloned()
                .collect();
            let ev = Evidence {
                organization: organization.to_owned(),
                generated_at: now,
                model_owner: owner.map(str::to_owned),
                score: a.score,
                flagged: a.flagged,
                flagged_at: a.flagged_at,
                cluster: a.cluster,
                signals: a.signals,
                first_seen: acc.first_seen,
                last_seen: acc.last_seen,
                timeline: acc.timeline.iter().cloned().collect(),
                top_templates,
                keys,
                segments,
                linked_accounts: Vec::new(),
                extent: Extent {
                    overall: ExtentTotals::new(c.requests, c.harvest, tokens, c.harvest_tokens),
                    by_owner,
                },
                sample,
            };
            (ev, acc.link_keys.clone())
        };
        let mut ev = ev_base;
        let mut linked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in link_keys {
            let Some(e) = self.coord.get(key) else {
                continue;
            };
            if e.kind == LinkKind::Template
                && let Some(t) = ev
                    .top_templates
                    .iter_mut()
                    .find(|t| e.label.ends_with(&t.skeleton))
            {
                t.shared_with = e.orgs.len().saturating_sub(1);
            }
            if e.overflow {
                continue;
            }
            for o in e.orgs.iter().filter(|o| *o != organization) {
                // The same template can be linked under its key before and after a change of
                // the word hashes: one reason is enough.
                let reasons = linked.entry(o.clone()).or_default();
                if !reasons.contains(&e.label) {
                    reasons.push(e.label.clone());
                }
            }
        }
        ev.linked_accounts = linked
            .into_iter()
            .map(|(organization, reasons)| LinkedAccount {
                organization,
                reasons,
            })
            .collect();
        Some(ev)
    }

    /// Serializable state, so the gateway can persist it across restarts.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut accounts = BTreeMap::new();
        for shard in &self.shards {
            let shard = lock(shard);
            for (o, a) in shard.iter() {
                accounts.insert(o.clone(), a.clone());
            }
        }
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            observed: self.observed.load(Ordering::Relaxed),
            accounts,
            links: self.coord.entries(),
            sync: self.sync.snapshot(),
        };
        serde_json::to_value(snap).unwrap_or(serde_json::Value::Null)
    }

    /// Rebuild a detector from [`Detector::snapshot`] output (benchmark files are reloaded).
    /// A snapshot of an older format is migrated; see [`Detector::restore_migrating`], which
    /// also says what was reset.
    pub fn restore(
        settings: DetectorSettings,
        snapshot: serde_json::Value,
    ) -> Result<Detector, GuardError> {
        Detector::restore_migrating(settings, snapshot).map(|(d, _)| d)
    }

    /// [`Detector::restore`], with what the migration of an older snapshot format changed
    /// (`None` for a current one). Format 1 (word hashes before `SNAPSHOT_VERSION` 2): every
    /// account keeps what does not depend on word hashes and resets what does
    /// ([`crate::account::Account::reset_word_hashes`]); the benchmark filter is rebuilt from
    /// the files at start anyway.
    pub fn restore_migrating(
        settings: DetectorSettings,
        snapshot: serde_json::Value,
    ) -> Result<(Detector, Option<SnapshotMigration>), GuardError> {
        let snap: Snapshot =
            serde_json::from_value(snapshot).map_err(|e| GuardError::Snapshot(e.to_string()))?;
        if !(1..=SNAPSHOT_VERSION).contains(&snap.version) {
            return Err(GuardError::Snapshot(format!(
                "unsupported version {}",
                snap.version
            )));
        }
        let mut migration = (snap.version < SNAPSHOT_VERSION).then_some(SnapshotMigration {
            from_version: snap.version,
            to_version: SNAPSHOT_VERSION,
            accounts: 0,
            templates_frozen: 0,
            template_links_kept: 0,
        });
        let d = Detector::new(settings)?;
        d.observed.store(snap.observed, Ordering::Relaxed);
        d.clustered_at.store(snap.observed, Ordering::Relaxed);
        for (org, mut acc) in snap.accounts {
            if let Some(m) = migration.as_mut() {
                m.accounts += 1;
                m.templates_frozen += acc.reset_word_hashes();
            }
            acc.distinct.repair();
            acc.segments.start_novelty(true);
            for t in &mut acc.templates {
                t.topics.resize(crate::features::TOPICS, 0);
            }
            lock(d.shard(&org)).insert(org, acc);
        }
        for (k, e) in snap.links {
            if let Some(m) = migration.as_mut() {
                m.template_links_kept += usize::from(e.kind == LinkKind::Template);
            }
            d.coord.insert_entry(k, e);
        }
        d.sync.restore(snap.sync);
        Ok((d, migration))
    }
}

/// The first or last eight words of a prompt (the label of a shared-wrapper link).
fn wrapper_label(text: &str, head: bool) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = crate::features::WRAPPER_WORDS.min(words.len());
    let part = if head {
        words[..n].join(" ")
    } else {
        words[words.len() - n..].join(" ")
    };
    format!(
        "shared prompt wrapper ({} words: \"{part}\")",
        if head { "first" } else { "last" }
    )
}

fn acc_skeleton(templates: &[crate::account::Template], sim: u64) -> String {
    templates
        .iter()
        .find(|t| t.simhash == sim)
        .map(|t| t.skeleton.clone())
        .unwrap_or_default()
}
