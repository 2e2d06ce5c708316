//! Distillation detection for Tollgate: compact per-account sketches updated on the request path,
//! signals with explanations, a calibrated score, coordination clusters, investigator evidence and
//! an event-time replay for backtests. Pure and synchronous: no I/O except reading the operator's
//! benchmark files and the replay input.

pub mod account;
pub mod coord;
pub mod corpus;
mod detector;
pub mod eval;
pub mod families;
pub mod features;
mod figures;
pub mod human;
pub mod lofo;
pub mod pool;
pub mod replay;
pub mod score;
pub mod segment;
pub mod sketch;
pub mod sync;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use account::{DayBucket, HourBucket, SamplePrompt, memory_bound};
pub use coord::LinkKind;
pub use detector::{
    Assessment, Detector, Evidence, Extent, ExtentTotals, FlagSummary, KeyEvidence, LinkedAccount,
    Outcome, OwnerEvidence, SNAPSHOT_VERSION, SegmentEvidence, SnapshotMigration, SyncLink,
    TemplateEvidence,
};
pub use replay::{OrgReport, ReplayReport, render_table, replay};
pub use score::{Signal, Weights};

/// Errors of the detector.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replay input: {0}")]
    ReadInput(#[source] std::io::Error),
    #[error("line {line}: {message}")]
    InvalidLine { line: u64, message: String },
    #[error("invalid snapshot: {0}")]
    Snapshot(String),
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// Detector settings (deserialized from the gateway's configuration).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    /// Score at or above which an account is flagged (0..1).
    pub flag_threshold: f64,
    /// Requests an account (or cluster) must have made before it can be flagged.
    pub min_requests: u64,
    /// Prompts retained per flagged account (none for unflagged accounts).
    pub sample_size: usize,
    /// Days a retained prompt is kept (by event time).
    pub sample_retention_days: u32,
    /// Public instruction sets/benchmarks: JSONL (`prompt`/`instruction`/`question`/`input`/`text`
    /// field) or plain text, one prompt per line. Overlap detection is off when empty.
    pub benchmark_files: Vec<PathBuf>,
    /// `max_tokens` at or above this counts as "near the maximum".
    pub max_tokens_high: u64,
    /// Observations between re-clustering runs. `observe` never re-clusters: the gateway runs
    /// it on a background task (also at least once a minute while requests arrive), the offline
    /// tools inline at every multiple of this count. 0: only when flags are listed.
    pub cluster_interval: u64,
    /// A link key shared by more accounts than this is too common to cluster on.
    pub max_link_fanout: usize,
    /// A heavy template explains traffic only if its topic entropy is at most this (0..1).
    pub template_narrow_entropy: f64,
    /// Link accounts whose bursts of activity start in the same minutes (synchronized activity,
    /// see the README). Such a link merges two accounts into a cluster only when they also share
    /// a client IP or network.
    pub sync_links: bool,
    /// Burst starts within a minute of each other a pair needs before it is linked.
    pub sync_min_bursts: u32,
    /// Jaccard similarity (coincident / distinct burst starts, 0..1) a pair needs to be linked.
    pub sync_min_jaccard: f64,
    /// Logistic weights.
    pub weights: Weights,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            flag_threshold: 0.8,
            min_requests: 50,
            sample_size: 50,
            sample_retention_days: 30,
            benchmark_files: Vec::new(),
            max_tokens_high: 4000,
            cluster_interval: 1000,
            max_link_fanout: 256,
            template_narrow_entropy: 0.6,
            sync_links: true,
            sync_min_bursts: 10,
            sync_min_jaccard: 0.5,
            weights: Weights::default(),
        }
    }
}

impl DetectorSettings {
    fn validate(&self) -> Result<(), GuardError> {
        if !(0.0..=1.0).contains(&self.flag_threshold) {
            return Err(GuardError::Settings(format!(
                "flag_threshold {} is outside 0..1",
                self.flag_threshold
            )));
        }
        if !(0.0..=1.0).contains(&self.template_narrow_entropy) {
            return Err(GuardError::Settings(
                "template_narrow_entropy must be in 0..1".into(),
            ));
        }
        if !(self.sync_min_jaccard > 0.0 && self.sync_min_jaccard <= 1.0) {
            return Err(GuardError::Settings(
                "sync_min_jaccard must be in (0, 1]".into(),
            ));
        }
        if self.sync_min_bursts < 2 {
            return Err(GuardError::Settings(
                "sync_min_bursts must be at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// API endpoint of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// From a request path such as `/v1/chat/completions`.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" | "/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" | "/completions" => Some(Endpoint::Completions),
            "/v1/embeddings" | "/embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }
}

/// One request as seen by the gateway.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub time: OffsetDateTime,
    pub organization: &'a str,
    pub key: &'a str,
    pub client_ip: Option<IpAddr>,
    pub endpoint: Endpoint,
    /// Raw request JSON as the client sent it.
    pub body: &'a [u8],
    pub model_owner: Option<&'a str>,
}

/// Lock a mutex, recovering from poisoning (the state is counters; a panic mid-update cannot
/// leave it unusable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
