//! Tollgate configuration: the TOML schema, environment overrides, defaults and validation.
//!
//! Loading is three steps: parse the file (unknown keys are errors), apply environment overrides
//! (`TOLLGATE_ADMIN_TOKEN`, `TOLLGATE_LISTEN`, `TOLLGATE_STORAGE_URL`, `TOLLGATE_REDIS_URL`), then
//! [`Config::validate`], which reports every problem with the key that holds it.

pub mod cidr;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// Every problem found: the first with its place in the file, then one per other section
    /// (or entry of an array of tables) that does not parse.
    #[error("invalid config file {path}:\n  - {}", .problems.join("\n  - "))]
    Parse { path: String, problems: Vec<String> },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Adds the fix to a message about an unquoted decimal (`input_price = 0.6`).
fn with_hint(message: &str) -> String {
    if message.contains("floating point") && message.contains("Decimal") {
        format!(
            "{} (quote it: money and shares are exact decimal strings, e.g. \"0.6\")",
            message.trim_end()
        )
    } else {
        message.trim_end().to_owned()
    }
}

/// Every problem of a TOML text that does not deserialize: the first error as TOML reports it
/// (with its line), then each other top-level section, and each entry of an array of tables,
/// checked on its own, so that one mistake does not hide the next. A syntax error stops there.
fn toml_problems(text: &str, first: &toml::de::Error) -> Vec<String> {
    let mut problems = vec![with_hint(&first.to_string())];
    let mut seen_first = false;
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return problems;
    };
    for (key, value) in table {
        let parts: Vec<(String, toml::Value)> = match &value {
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{key}[{i}]"), toml::Value::Array(vec![v.clone()])))
                .collect(),
            _ => vec![(key.clone(), value.clone())],
        };
        for (at, part) in parts {
            let mut one = toml::Table::new();
            one.insert(key.clone(), part);
            if let Err(e) = toml::Value::Table(one).try_into::<Config>() {
                if !seen_first && e.message() == first.message() {
                    seen_first = true;
                    continue;
                }
                problems.push(format!("{at}: {}", with_hint(e.message())));
            }
        }
    }
    problems
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub owners: Vec<OwnerConfig>,
    #[serde(default)]
    pub metering: MeteringConfig,
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the front door and admin API listen on.
    pub listen: String,
    /// Bearer token of the admin API (or `TOLLGATE_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time allowed to an upstream to send response headers, in milliseconds; then 504.
    pub upstream_timeout_ms: u64,
    /// Time allowed to connect to an upstream, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Attempts per request over a model's providers (connect errors, 5xx and 429 are retried while
    /// no byte has reached the client). At least the number of providers of the model.
    pub max_attempts: u32,
    /// Idle keep-alive connections kept per upstream host and serving thread.
    pub pool_max_idle_per_host: usize,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Request-serving threads, each running its own single-threaded runtime that accepts from
    /// the listening socket and keeps its own idle upstream connections; 0 = one per CPU core.
    pub threads: usize,
    /// Consecutive retryable failures (connect error, timeout, 429, 5xx) after which a provider
    /// of a model is skipped while its other providers are healthy (0 = never skip).
    pub breaker_failures: u32,
    /// How long a tripped provider is skipped before one request probes it again.
    pub breaker_cooldown_ms: u64,
    /// Longest a client may take to send a request's headers, from their first byte (or from
    /// the connection's opening, for its first request), in milliseconds; then the connection
    /// is closed.
    pub header_read_timeout_ms: u64,
    /// Longest a client may pause while sending a request body (the idle time between two
    /// chunks), in milliseconds; then the request fails and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// How long a keep-alive connection may stay idle between requests, in milliseconds.
    pub keep_alive_timeout_ms: u64,
    /// Longest a write to a client may wait for the client to read (a stream's reader that
    /// stopped reading), in milliseconds; then the connection is closed.
    pub write_timeout_ms: u64,
    /// Most client connections open at once over all serving threads; more are accepted and
    /// closed at once. Kept below the process's file-descriptor limit (half of it, less 256
    /// descriptors for storage and upstreams), whatever is configured.
    pub max_connections: usize,
    /// Most requests served on one connection; the last one's response says
    /// `Connection: close` (0 = no limit).
    pub max_requests_per_connection: u64,
}

impl ServerConfig {
    /// How many request-serving threads run: `threads`, or one per CPU core when it is 0.
    pub fn serving_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_token: None,
            max_body_bytes: 8 * 1024 * 1024,
            upstream_timeout_ms: 600_000,
            connect_timeout_ms: 5_000,
            max_attempts: 2,
            pool_max_idle_per_host: 256,
            shutdown_grace_secs: 30,
            threads: 0,
            breaker_failures: 3,
            breaker_cooldown_ms: 5_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            keep_alive_timeout_ms: 75_000,
            write_timeout_ms: 60_000,
            max_connections: 16_384,
            max_requests_per_connection: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite:///absolute/path.db`, `sqlite://relative.db`, or `postgres://…`.
    pub url: String,
    /// `strict` (default): a response's last byte is sent only after its usage record is durable.
    /// `relaxed`: records are committed in the background (a crash may lose the last instants).
    pub durability: Durability,
    /// Most records written in one group commit.
    pub batch_max: usize,
    /// SQLite: longest a group commit waits for more records, in microseconds, and only while
    /// records arrive fast enough for the wait to gather at least 8 more (one fsync then covers
    /// more records; one request in flight is never delayed). 0 commits at once.
    pub commit_delay_us: u64,
    /// PostgreSQL: directory of the local spool that keeps usage records while the database is
    /// unreachable or slow (one per instance; default `tollgate-data/spool`).
    pub spool_dir: Option<String>,
    /// PostgreSQL: largest spool; when full, new requests get 503 and `/readyz` answers 503.
    pub spool_max_bytes: u64,
    /// PostgreSQL: connections in the pool of control data and queries.
    pub pool_size: usize,
    /// Milliseconds between polls of the change feed (keys, organizations, projects, prices…
    /// changed by other instances).
    pub sync_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://tollgate-data/ledger.db".into(),
            durability: Durability::Strict,
            batch_max: 8192,
            commit_delay_us: 1000,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            pool_size: 16,
            sync_interval_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Strict,
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Azure,
    Simulated,
    /// Anthropic's Messages API (`base_url` like `https://api.anthropic.com`; the gateway appends
    /// `/v1/messages`).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `https://api.openai.com/v1` for `openai`; `https://NAME.openai.azure.com` for `azure`.
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// Environment variable holding the upstream key.
    pub api_key_env: Option<String>,
    /// Azure `api-version` query parameter.
    pub api_version: Option<String>,
    /// Anthropic: the `anthropic-version` header (default `2023-06-01`).
    pub anthropic_version: Option<String>,
    /// OpenAI and Azure: whether the upstream serves the Responses API at `/responses` (default
    /// true). When false, Responses requests are translated to Chat Completions for it.
    pub responses_api: Option<bool>,
    /// Simulated: milliseconds before the first token.
    #[serde(default)]
    pub ttft_ms: u64,
    /// Simulated: tokens per second of streams (0 = as fast as possible).
    #[serde(default)]
    pub tokens_per_second: u64,
    /// Simulated: completion tokens when the request sets no `max_tokens`.
    #[serde(default = "default_sim_tokens")]
    pub output_tokens: u64,
}

fn default_sim_tokens() -> u64 {
    16
}

impl ProviderConfig {
    /// The `anthropic-version` header an `anthropic` provider sends.
    pub fn anthropic_version(&self) -> &str {
        self.anthropic_version.as_deref().unwrap_or("2023-06-01")
    }

    /// The upstream key: `api_key`, else the variable named by `api_key_env`.
    pub fn resolved_api_key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| {
            self.api_key_env
                .as_ref()
                .and_then(|name| std::env::var(name).ok())
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public name; also the Azure deployment name on the front door. Several entries with the
    /// same name form a fallback chain, tried in order.
    pub name: String,
    pub provider: String,
    /// Name of the model at the upstream (defaults to `name`).
    pub upstream_model: Option<String>,
    /// USD per million input tokens (decimal string).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub input_price: Option<Decimal>,
    /// USD per million cached input tokens; the input price where unset.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cached_input_price: Option<Decimal>,
    /// USD per million output tokens.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub output_price: Option<Decimal>,
    /// USD per million input tokens written to the provider's prompt cache; the input price
    /// where unset.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_write_price: Option<Decimal>,
    /// The model's owner (an `[[owners]]` name).
    pub owner: Option<String>,
    /// Tokenizer used where the upstream reports no usage: `o200k_base` or `cl100k_base`
    /// (default: by model name).
    pub tokenizer: Option<String>,
    /// The model's context window in tokens. A request whose prompt alone is longer is refused
    /// with 400 `context_length_exceeded` before it is dispatched (unset: not checked).
    pub context_window: Option<u64>,
}

impl ModelConfig {
    pub fn upstream_model(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    pub name: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub revenue_share_percent: Decimal,
    /// The owner's usage terms, shown in evidence (e.g. "No training of competing models.").
    pub policy: Option<String>,
    /// `[owners.enforcement]`: this owner's own enforcement policy, acting on its models only.
    /// Unset fields take `[guard]`'s values. Without the table, the owner's models are under
    /// `[guard]` itself.
    #[serde(default)]
    pub enforcement: Option<OwnerEnforcement>,
}

/// An owner's enforcement settings (`[owners.enforcement]`); every field is optional and
/// defaults to the `[guard]` value of the same name (`flag_threshold`: `[guard.detector]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OwnerEnforcement {
    /// `record`, `flag`, or `review` (an automatic review of this owner's models only).
    pub action: Option<GuardAction>,
    /// Requests per minute allowed to a flagged organization on this owner's models.
    pub throttle_rpm: Option<u64>,
    /// Remove `logprobs`/`top_logprobs` from flagged organizations' requests to these models.
    pub strip_logprobs: Option<bool>,
    /// Cap `n` (and `best_of`) of flagged organizations' requests to these models.
    pub max_n: Option<u64>,
    /// Score (0..1) at or above which an organization counts as flagged under this policy
    /// (after the detector's `min_requests`); unset: the detector's own flag.
    pub flag_threshold: Option<f64>,
}

/// The enforcement settings in force on some models, with everything inherited resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// The owner whose own policy this is (`[owners.enforcement]`); `None` for `[guard]`, which
    /// covers models without an owner and owners without an enforcement table.
    pub owner: Option<String>,
    pub action: GuardAction,
    /// The owner's own flag threshold; `None`: the detector's flag
    /// (`[guard.detector] flag_threshold`).
    pub flag_threshold: Option<f64>,
    pub throttle_rpm: Option<u64>,
    pub strip_logprobs: bool,
    pub max_n: Option<u64>,
}

impl EffectivePolicy {
    /// The score at or above which this policy considers an organization flagged.
    pub fn threshold(&self, detector_threshold: f64) -> f64 {
        self.flag_threshold.unwrap_or(detector_threshold)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// What happens when a client disconnects mid-stream: `drain` (default) reads the upstream to
    /// its own usage report, within `drain_timeout_ms`; `cancel` stops the upstream at once and
    /// bills the tokens generated so far, counted with the tokenizer and marked estimated.
    pub on_client_disconnect: DisconnectPolicy,
    pub drain_timeout_ms: u64,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            on_client_disconnect: DisconnectPolicy::Drain,
            drain_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisconnectPolicy {
    Drain,
    Cancel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Shared limits across instances (`redis://host:port`); local limits when unset.
    pub redis_url: Option<String>,
    /// When Redis is unreachable or slower than `redis_timeout_ms`: `open` (default) falls back to
    /// this instance's local limiter; `closed` refuses limited requests with 503.
    pub on_redis_failure: RedisFailure,
    /// Longest wait for one Redis call, in milliseconds.
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_redis_failure: RedisFailure::Open,
            redis_timeout_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    Open,
    Closed,
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP (protobuf) off the serving
/// threads. Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); spans go to
    /// `{otlp_endpoint}/v1/traces`. Unset: no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1; a request whose `traceparent` says sampled (or not)
    /// follows its parent.
    pub sample_ratio: f64,
    /// Longest wait for one export, in milliseconds (spans are dropped past it, never waited on).
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "tollgate".into(),
            sample_ratio: 1.0,
            export_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    pub enabled: bool,
    /// `record`, `flag`, or `review` (place under review automatically when flagged).
    pub action: GuardAction,
    /// Peers whose `X-Forwarded-For` is trusted for the client IP (CIDR).
    pub trusted_proxies: Vec<String>,
    /// Requests per minute allowed to a flagged organization (429 above it); unset: no throttle.
    pub throttle_rpm: Option<u64>,
    /// Remove `logprobs`/`top_logprobs` from the requests of flagged organizations.
    pub strip_logprobs: bool,
    /// Cap `n` (and `best_of`) of flagged organizations' requests at this value.
    pub max_n: Option<u64>,
    /// Seconds between snapshots of the detector state to the store (0: only at shutdown).
    pub snapshot_interval_secs: u64,
    /// Detector settings: thresholds, prompt sample size and retention days, weights.
    pub detector: tollgate_guard::DetectorSettings,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            action: GuardAction::Flag,
            trusted_proxies: Vec::new(),
            throttle_rpm: None,
            strip_logprobs: false,
            max_n: None,
            snapshot_interval_secs: 300,
            detector: tollgate_guard::DetectorSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    Record,
    Flag,
    Review,
}

impl GuardAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardAction::Record => "record",
            GuardAction::Flag => "flag",
            GuardAction::Review => "review",
        }
    }
}

impl Config {
    /// Reads, overrides from the environment, and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let mut config = Config::from_toml(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            problems: toml_problems(&text, &e),
        })?;
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no environment, no validation).
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The embedded default: simulated models only, everything under `data_dir`.
    pub fn embedded(data_dir: &Path) -> Config {
        let text = format!(
            r#"
[storage]
url = "sqlite://{}/ledger.db"

[[providers]]
name = "sim"
kind = "simulated"
ttft_ms = 20
tokens_per_second = 200

[[owners]]
name = "openai"
revenue_share_percent = "20"
policy = "Outputs may not be used to develop models that compete with OpenAI."

[[models]]
name = "gpt-4o-mini"
provider = "sim"
input_price = "0.15"
cached_input_price = "0.075"
output_price = "0.60"
owner = "openai"
context_window = 128000

[[models]]
name = "gpt-4o"
provider = "sim"
input_price = "2.50"
cached_input_price = "1.25"
output_price = "10.00"
owner = "openai"
context_window = 128000

[[models]]
name = "text-embedding-3-small"
provider = "sim"
input_price = "0.02"
output_price = "0"
owner = "openai"
"#,
            data_dir.display()
        );
        // The embedded text is a constant shape; a failure here would be a bug caught by tests.
        toml::from_str(&text).unwrap_or_else(|_| Config::empty())
    }

    fn empty() -> Config {
        Config {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            providers: Vec::new(),
            models: Vec::new(),
            owners: Vec::new(),
            metering: MeteringConfig::default(),
            ratelimit: RateLimitConfig::default(),
            guard: GuardConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }

    /// The `[guard]` policy: models without an owner, and owners without `[owners.enforcement]`.
    pub fn default_policy(&self) -> EffectivePolicy {
        let g = &self.guard;
        EffectivePolicy {
            owner: None,
            action: g.action,
            flag_threshold: None,
            throttle_rpm: g.throttle_rpm,
            strip_logprobs: g.strip_logprobs,
            max_n: g.max_n,
        }
    }

    /// The policy in force on the models of `owner` (`None`: a model without an owner): the
    /// owner's `[owners.enforcement]` over `[guard]`, or `[guard]` itself without that table.
    pub fn policy_for(&self, owner: Option<&str>) -> EffectivePolicy {
        let base = self.default_policy();
        let Some(o) = owner.and_then(|name| self.owners.iter().find(|o| o.name == name)) else {
            return base;
        };
        let Some(e) = &o.enforcement else {
            return base;
        };
        EffectivePolicy {
            owner: Some(o.name.clone()),
            action: e.action.unwrap_or(base.action),
            flag_threshold: e.flag_threshold,
            throttle_rpm: e.throttle_rpm.or(base.throttle_rpm),
            strip_logprobs: e.strip_logprobs.unwrap_or(base.strip_logprobs),
            max_n: e.max_n.or(base.max_n),
        }
    }

    /// Applies environment overrides through `get` (so tests need not touch the process env).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = get("TOLLGATE_ADMIN_TOKEN") {
            self.server.admin_token = Some(v);
        }
        if let Some(v) = get("TOLLGATE_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("TOLLGATE_STORAGE_URL") {
            self.storage.url = v;
        }
        if let Some(v) = get("TOLLGATE_REDIS_URL") {
            self.ratelimit.redis_url = Some(v);
        }
        if let Some(v) = get("TOLLGATE_OTLP_ENDPOINT") {
            self.telemetry.otlp_endpoint = Some(v);
        }
    }

    /// Checks everything that parsing cannot, and lists every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "server.listen: '{}' is not an address like 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if self.server.max_body_bytes == 0 {
            errors.push("server.max_body_bytes must be greater than 0".into());
        }
        if self.server.max_attempts == 0 {
            errors.push("server.max_attempts must be at least 1".into());
        }
        if self.server.threads > 1024 {
            errors.push("server.threads must be at most 1024 (0 = one per CPU core)".into());
        }
        for (name, ms) in [
            ("header_read_timeout_ms", self.server.header_read_timeout_ms),
            ("body_read_timeout_ms", self.server.body_read_timeout_ms),
            ("keep_alive_timeout_ms", self.server.keep_alive_timeout_ms),
            ("write_timeout_ms", self.server.write_timeout_ms),
        ] {
            if ms == 0 || ms > 86_400_000 {
                errors.push(format!(
                    "server.{name} must be between 1 and 86400000 (one day), got {ms}"
                ));
            }
        }
        if self.server.max_connections == 0 {
            errors.push("server.max_connections must be at least 1".into());
        }
        if self.storage.batch_max == 0 {
            errors.push("storage.batch_max must be at least 1".into());
        }
        if self.storage.commit_delay_us > 100_000 {
            errors.push("storage.commit_delay_us must be at most 100000 (0.1 s)".into());
        }
        if !(self.storage.url.starts_with("sqlite://")
            || self.storage.url.starts_with("postgres://")
            || self.storage.url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "storage.url: '{}' must start with sqlite:// or postgres://",
                self.storage.url
            ));
        }
        if let Some(url) = &self.ratelimit.redis_url
            && !url.starts_with("redis://")
        {
            errors.push(format!(
                "ratelimit.redis_url: '{url}' must start with redis://"
            ));
        }
        let t = &self.telemetry;
        if let Some(url) = &t.otlp_endpoint
            && !url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .and_then(|rest| rest.split(['/', ':', '?']).next())
                .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
        {
            errors.push(format!(
                "telemetry.otlp_endpoint: '{url}' must be an http:// or https:// URL"
            ));
        }
        if t.service_name.trim().is_empty() {
            errors.push("telemetry.service_name must not be empty".into());
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            errors.push(format!(
                "telemetry.sample_ratio must be between 0 and 1, got {}",
                t.sample_ratio
            ));
        }
        if t.export_timeout_ms == 0 || t.export_timeout_ms > 60_000 {
            errors.push(format!(
                "telemetry.export_timeout_ms must be between 1 and 60000, got {}",
                t.export_timeout_ms
            ));
        }
        let mut providers: HashMap<&str, &ProviderConfig> = HashMap::new();
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() {
                errors.push(format!("providers[{i}].name must not be empty"));
            }
            if providers.insert(p.name.as_str(), p).is_some() {
                errors.push(format!(
                    "providers[{i}]: duplicate provider name '{}'",
                    p.name
                ));
            }
            match p.kind {
                ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Anthropic => match &p.base_url {
                    None => errors.push(format!(
                        "providers[{i}] '{}': base_url is required for kind {:?}",
                        p.name, p.kind
                    )),
                    Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => errors
                        .push(format!(
                            "providers[{i}] '{}': base_url '{u}' must start with http:// or https://",
                            p.name
                        )),
                    Some(_) => {}
                },
                ProviderKind::Simulated => {}
            }
            if p.anthropic_version.is_some() && p.kind != ProviderKind::Anthropic {
                errors.push(format!(
                    "providers[{i}] '{}': anthropic_version applies only to kind \"anthropic\"",
                    p.name
                ));
            }
            if p.responses_api.is_some()
                && !matches!(p.kind, ProviderKind::Openai | ProviderKind::Azure)
            {
                errors.push(format!(
                    "providers[{i}] '{}': responses_api applies only to kinds \"openai\" and \"azure\"",
                    p.name
                ));
            }
            if p.kind == ProviderKind::Azure && p.api_version.is_none() {
                errors.push(format!(
                    "providers[{i}] '{}': api_version is required for azure",
                    p.name
                ));
            }
            if let Some(env) = &p.api_key_env
                && p.api_key.is_none()
                && std::env::var(env).is_err()
            {
                errors.push(format!(
                    "providers[{i}] '{}': environment variable {env} (api_key_env) is not set",
                    p.name
                ));
            }
        }
        for (i, p) in self.guard.trusted_proxies.iter().enumerate() {
            if let Err(e) = cidr::Cidr::parse(p) {
                errors.push(format!("guard.trusted_proxies[{i}]: {e}"));
            }
        }
        if self.guard.throttle_rpm == Some(0) {
            errors.push("guard.throttle_rpm must be at least 1 (omit it for no throttle)".into());
        }
        if self.guard.max_n == Some(0) {
            errors.push("guard.max_n must be at least 1 (omit it for no cap)".into());
        }
        if !(0.0..=1.0).contains(&self.guard.detector.flag_threshold) {
            errors.push("guard.detector.flag_threshold must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.guard.detector.template_narrow_entropy) {
            errors.push("guard.detector.template_narrow_entropy must be between 0 and 1".into());
        }
        // The detector's own bounds (`DetectorSettings::validate`), reported here with the
        // other problems instead of failing later when the detector is built: one coincident
        // burst start is chance, and a Jaccard similarity of 0 would link any tracked pair.
        let sync_bursts = self.guard.detector.sync_min_bursts;
        if sync_bursts < 2 {
            errors.push(format!(
                "guard.detector.sync_min_bursts must be at least 2 (got {sync_bursts})"
            ));
        }
        let jaccard = self.guard.detector.sync_min_jaccard;
        if !(jaccard > 0.0 && jaccard <= 1.0) {
            errors.push(format!(
                "guard.detector.sync_min_jaccard must be greater than 0 and at most 1 (got {jaccard})"
            ));
        }
        let owners: HashMap<&str, &OwnerConfig> =
            self.owners.iter().map(|o| (o.name.as_str(), o)).collect();
        for (i, o) in self.owners.iter().enumerate() {
            if self.owners[..i].iter().any(|p| p.name == o.name) {
                errors.push(format!("owners[{i}]: duplicate owner name '{}'", o.name));
            }
            if let Some(e) = &o.enforcement {
                let at = format!("owners[{i}] '{}': enforcement", o.name);
                if e.throttle_rpm == Some(0) {
                    errors.push(format!(
                        "{at}.throttle_rpm must be at least 1 (omit it to use guard.throttle_rpm)"
                    ));
                }
                if e.max_n == Some(0) {
                    errors.push(format!(
                        "{at}.max_n must be at least 1 (omit it to use guard.max_n)"
                    ));
                }
                if let Some(t) = e.flag_threshold
                    && !(0.0..=1.0).contains(&t)
                {
                    errors.push(format!(
                        "{at}.flag_threshold must be between 0 and 1 (got {t})"
                    ));
                }
            }
            if o.revenue_share_percent < Decimal::ZERO
                || o.revenue_share_percent > Decimal::ONE_HUNDRED
            {
                errors.push(format!(
                    "owners[{i}] '{}': revenue_share_percent must be between 0 and 100",
                    o.name
                ));
            }
        }
        let mut first_of: HashMap<&str, &ModelConfig> = HashMap::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}] '{}'", m.name);
            if m.name.is_empty() || m.name.contains('/') && m.name.starts_with('/') {
                errors.push(format!("{at}: name must not be empty"));
            }
            if !providers.contains_key(m.provider.as_str()) {
                errors.push(format!("{at}: unknown provider '{}'", m.provider));
            }
            if let Some(owner) = &m.owner
                && !owners.contains_key(owner.as_str())
            {
                errors.push(format!(
                    "{at}: unknown owner '{owner}' (declare it in [[owners]])"
                ));
            }
            if let Some(t) = &m.tokenizer
                && t != "o200k_base"
                && t != "cl100k_base"
            {
                errors.push(format!("{at}: tokenizer must be o200k_base or cl100k_base"));
            }
            if m.context_window == Some(0) {
                errors.push(format!("{at}: context_window must be at least 1 token"));
            }
            for (field, price) in [
                ("input_price", m.input_price),
                ("cached_input_price", m.cached_input_price),
                ("output_price", m.output_price),
                ("cache_write_price", m.cache_write_price),
            ] {
                if let Some(p) = price
                    && let Err(reason) = tollgate_billing::check_price(p)
                {
                    errors.push(format!("{at}: {field} {reason}"));
                }
            }
            match first_of.get(m.name.as_str()) {
                None => {
                    if m.input_price.is_none() || m.output_price.is_none() {
                        errors.push(format!(
                            "{at}: input_price and output_price are required (USD per million tokens, as decimal strings)"
                        ));
                    }
                    first_of.insert(m.name.as_str(), m);
                }
                Some(first) => {
                    let differs = |a: Option<Decimal>, b: Option<Decimal>| a.is_some() && a != b;
                    if differs(m.input_price, first.input_price)
                        || differs(m.output_price, first.output_price)
                        || differs(m.cached_input_price, first.cached_input_price)
                        || differs(m.cache_write_price, first.cache_write_price)
                    {
                        errors.push(format!(
                            "{at}: a fallback entry must not set prices different from the first entry of the model"
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Path of the SQLite database when storage is SQLite.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.storage.url.strip_prefix("sqlite://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_token = "secret"

[storage]
url = "sqlite:///var/lib/tollgate/ledger.db"

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-x"

[[providers]]
name = "contoso"
kind = "azure"
base_url = "https://contoso.openai.azure.com"
api_key = "k"
api_version = "2024-10-21"

[[providers]]
name = "sim"
kind = "simulated"

[[models]]
name = "gpt-4o-mini"
provider = "openai"
upstream_model = "gpt-4o-mini"
input_price = "0.15"
cached_input_price = "0.075"
cache_write_price = "0.1875"
output_price = "0.60"
"#;

    #[test]
    fn contract_example_loads() {
        let c = Config::from_toml(CONTRACT).unwrap();
        c.validate().unwrap();
        assert_eq!(c.providers.len(), 3);
        assert_eq!(c.models[0].input_price, Some(Decimal::new(15, 2)));
        assert_eq!(c.models[0].cached_input_price, Some(Decimal::new(75, 3)));
        assert_eq!(c.models[0].cache_write_price, Some(Decimal::new(1875, 4)));
        assert_eq!(c.sqlite_path(), Some("/var/lib/tollgate/ledger.db"));
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_keys_are_validated() {
        let c = Config::from_toml(CONTRACT).unwrap();
        assert!(c.telemetry.otlp_endpoint.is_none());
        assert_eq!(c.telemetry.service_name, "tollgate");
        let on = Config::from_toml(&format!(
            "{CONTRACT}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"gw-1\"\nsample_ratio = 0.25\n"
        ))
        .unwrap();
        on.validate().unwrap();
        assert_eq!(on.telemetry.sample_ratio, 0.25);
        let bad = Config::from_toml(&format!(
            "{CONTRACT}\n[telemetry]\notlp_endpoint = \"collector:4318\"\nservice_name = \" \"\nsample_ratio = 1.5\nexport_timeout_ms = 0\n"
        ))
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        for key in [
            "telemetry.otlp_endpoint",
            "telemetry.service_name",
            "telemetry.sample_ratio",
            "telemetry.export_timeout_ms",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
        assert!(
            Config::from_toml(&format!("{CONTRACT}\n[telemetry]\nendpoint = \"x\"\n")).is_err()
        );
        let mut env = Config::from_toml(CONTRACT).unwrap();
        env.apply_env(|k| (k == "TOLLGATE_OTLP_ENDPOINT").then(|| "http://otel:4318".to_owned()));
        assert_eq!(
            env.telemetry.otlp_endpoint.as_deref(),
            Some("http://otel:4318")
        );
    }

    #[test]
    fn anthropic_provider_loads_and_is_validated() {
        let c = Config::from_toml(
            r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "https://api.anthropic.com"
api_key = "sk-ant-x"

[[providers]]
name = "claude-beta"
kind = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "TOLLGATE_TEST_NO_SUCH_VARIABLE"
anthropic_version = "2023-01-01"

[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
responses_api = false

[[models]]
name = "claude-sonnet"
provider = "claude"
"#,
        )
        .unwrap();
        assert_eq!(c.providers[0].kind, ProviderKind::Anthropic);
        assert_eq!(c.providers[0].anthropic_version(), "2023-06-01");
        assert_eq!(c.providers[1].anthropic_version(), "2023-01-01");
        assert_eq!(c.providers[2].responses_api, Some(false));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("TOLLGATE_TEST_NO_SUCH_VARIABLE"), "{err}");

        let bad = Config::from_toml(
            r#"
[[providers]]
name = "a"
kind = "anthropic"
[[providers]]
name = "o"
kind = "openai"
base_url = "https://x/v1"
anthropic_version = "2023-06-01"
[[providers]]
name = "s"
kind = "simulated"
responses_api = true
"#,
        )
        .unwrap();
        let err = bad.validate().unwrap_err().to_string();
        for needle in [
            "'a': base_url is required for kind Anthropic",
            "'o': anthropic_version applies only to kind \"anthropic\"",
            "'s': responses_api applies only to kinds",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let text = r#"
[server]
listen = "nowhere"
threads = 5000
[[providers]]
name = "a"
kind = "azure"
base_url = "ftp://x"
[[models]]
name = "m"
provider = "b"
input_price = "-1"
"#;
        let err = Config::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "server.listen",
            "server.threads must be at most 1024",
            "base_url 'ftp://x'",
            "api_version is required",
            "unknown provider 'b'",
            "input_price must not be negative",
            "input_price and output_price are required",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn serving_threads_default_to_one_per_core() {
        let mut c = Config::from_toml(CONTRACT).unwrap();
        c.server.threads = 0;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.server.serving_threads(), cores);
        c.server.threads = 3;
        assert_eq!(c.server.serving_threads(), 3);
    }

    #[test]
    fn server_timeouts_and_limits_have_defaults_and_are_checked() {
        let c = Config::from_toml(CONTRACT).unwrap();
        assert_eq!(c.server.header_read_timeout_ms, 10_000);
        assert_eq!(c.server.body_read_timeout_ms, 30_000);
        assert_eq!(c.server.keep_alive_timeout_ms, 75_000);
        assert_eq!(c.server.write_timeout_ms, 60_000);
        assert_eq!(c.server.max_connections, 16_384);
        assert_eq!(c.server.max_requests_per_connection, 1_000);
        let text = CONTRACT.replace(
            "admin_token = \"secret\"",
            "admin_token = \"secret\"\nheader_read_timeout_ms = 0\nbody_read_timeout_ms = 0\nkeep_alive_timeout_ms = 90000000\nwrite_timeout_ms = 0\nmax_connections = 0\nmax_requests_per_connection = 0",
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.server.max_requests_per_connection, 0);
        let err = c.validate().unwrap_err().to_string();
        for needle in [
            "server.header_read_timeout_ms",
            "server.body_read_timeout_ms",
            "server.keep_alive_timeout_ms",
            "server.write_timeout_ms",
            "server.max_connections",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        assert!(!err.contains("max_requests_per_connection"), "{err}");
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = Config::from_toml(CONTRACT).unwrap();
        c.apply_env(|k| (k == "TOLLGATE_ADMIN_TOKEN").then(|| "from-env".to_owned()));
        assert_eq!(c.server.admin_token.as_deref(), Some("from-env"));
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded(Path::new("/tmp/tg"));
        c.validate().unwrap();
        assert!(c.models.len() >= 3);
        assert_eq!(c.sqlite_path(), Some("/tmp/tg/ledger.db"));
    }

    const OWNER_POLICIES: &str = r#"
[guard]
action = "flag"
throttle_rpm = 120
max_n = 2

[[owners]]
name = "openai"
revenue_share_percent = "20"
policy = "Outputs may not be used to develop models that compete with OpenAI."
[owners.enforcement]
action = "review"
throttle_rpm = 60
strip_logprobs = true
flag_threshold = 0.6

[[owners]]
name = "northwind"
revenue_share_percent = "30"
[owners.enforcement]
action = "record"

[[owners]]
name = "globex"
revenue_share_percent = "10"
"#;

    #[test]
    fn owner_policies_inherit_guard_settings() {
        let c = Config::from_toml(OWNER_POLICIES).unwrap();
        c.validate().unwrap();
        let openai = c.policy_for(Some("openai"));
        assert_eq!(
            openai,
            EffectivePolicy {
                owner: Some("openai".into()),
                action: GuardAction::Review,
                flag_threshold: Some(0.6),
                throttle_rpm: Some(60),
                strip_logprobs: true,
                max_n: Some(2),
            }
        );
        assert_eq!(openai.threshold(0.8), 0.6);
        let northwind = c.policy_for(Some("northwind"));
        assert_eq!(northwind.owner.as_deref(), Some("northwind"));
        assert_eq!(northwind.action, GuardAction::Record);
        assert_eq!(northwind.throttle_rpm, Some(120));
        assert!(!northwind.strip_logprobs);
        assert_eq!(northwind.threshold(0.8), 0.8);
        // No table, unknown owner, no owner: [guard] itself.
        let guard = c.default_policy();
        assert_eq!(guard.owner, None);
        assert_eq!(guard.action, GuardAction::Flag);
        assert_eq!(c.policy_for(Some("globex")), guard);
        assert_eq!(c.policy_for(Some("nobody")), guard);
        assert_eq!(c.policy_for(None), guard);
        // Without any table, nothing changes from before.
        let plain = Config::from_toml(CONTRACT).unwrap();
        assert_eq!(plain.default_policy().action, GuardAction::Flag);
        assert_eq!(plain.default_policy().throttle_rpm, None);
    }

    #[test]
    fn owner_policy_values_are_validated_with_their_keys() {
        let bad = OWNER_POLICIES
            .replace("throttle_rpm = 60", "throttle_rpm = 0\nmax_n = 0")
            .replace("flag_threshold = 0.6", "flag_threshold = 1.5");
        let err = Config::from_toml(&bad)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "owners[0] 'openai': enforcement.throttle_rpm must be at least 1",
            "owners[0] 'openai': enforcement.max_n must be at least 1",
            "owners[0] 'openai': enforcement.flag_threshold must be between 0 and 1",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        assert!(!err.contains("northwind"), "{err}");
        let negative = OWNER_POLICIES.replace("flag_threshold = 0.6", "flag_threshold = -0.1");
        let err = Config::from_toml(&negative)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("enforcement.flag_threshold"), "{err}");
        let dup = format!(
            "{OWNER_POLICIES}\n[[owners]]\nname = \"openai\"\nrevenue_share_percent = \"5\"\n"
        );
        let err = Config::from_toml(&dup)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("owners[3]: duplicate owner name 'openai'"),
            "{err}"
        );
    }

    #[test]
    fn owner_policy_keys_and_values_are_typed() {
        let unknown = OWNER_POLICIES.replace("strip_logprobs = true", "strip_logprob = true");
        let err = Config::from_toml(&unknown).unwrap_err().to_string();
        assert!(err.contains("strip_logprob"), "{err}");
        let action = OWNER_POLICIES.replace("action = \"review\"", "action = \"suspend\"");
        assert!(Config::from_toml(&action).is_err());
        let threshold = OWNER_POLICIES.replace("flag_threshold = 0.6", "flag_threshold = \"high\"");
        assert!(Config::from_toml(&threshold).is_err());
        // An integer threshold is a number too.
        let one = OWNER_POLICIES.replace("flag_threshold = 0.6", "flag_threshold = 1");
        let c = Config::from_toml(&one).unwrap();
        c.validate().unwrap();
        assert_eq!(c.policy_for(Some("openai")).flag_threshold, Some(1.0));
    }

    #[test]
    fn synchronized_activity_settings_are_validated() {
        let with = |extra: &str| {
            Config::from_toml(&format!("{CONTRACT}\n[guard.detector]\n{extra}\n"))
                .unwrap()
                .validate()
        };
        with("sync_min_bursts = 2\nsync_min_jaccard = 1.0").unwrap();
        with("sync_min_bursts = 10\nsync_min_jaccard = 0.5").unwrap();
        for (extra, needle) in [
            (
                "sync_min_bursts = 0",
                "guard.detector.sync_min_bursts must be at least 2 (got 0)",
            ),
            (
                "sync_min_bursts = 1",
                "guard.detector.sync_min_bursts must be at least 2 (got 1)",
            ),
            (
                "sync_min_jaccard = 0.0",
                "guard.detector.sync_min_jaccard must be greater than 0",
            ),
            (
                "sync_min_jaccard = 1.5",
                "guard.detector.sync_min_jaccard must be greater than 0",
            ),
            ("sync_min_jaccard = -0.2", "(got -0.2)"),
        ] {
            let err = with(extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: missing {needle:?} in {err}");
        }
        // Every value the configuration accepts, the detector accepts too.
        let c = Config::from_toml(&format!(
            "{CONTRACT}\n[guard.detector]\nsync_min_bursts = 2\nsync_min_jaccard = 0.01\n"
        ))
        .unwrap();
        c.validate().unwrap();
        tollgate_guard::Detector::new(c.guard.detector.clone()).unwrap();
        let both = with("sync_min_bursts = 1\nsync_min_jaccard = 2.0")
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("sync_min_bursts") && both.contains("sync_min_jaccard"),
            "{both}"
        );
    }

    #[test]
    fn prices_must_be_strings_of_decimals() {
        let bad = CONTRACT.replace("\"0.60\"", "\"sixty\"");
        assert!(Config::from_toml(&bad).is_err());
    }

    #[test]
    fn prices_are_bounded() {
        for (price, why) in [
            ("79228162514264337593543950335", "at most 100000"),
            ("100000.5", "at most 100000"),
            ("0.00001", "4 decimal places"),
        ] {
            let c =
                Config::from_toml(&CONTRACT.replace("\"0.60\"", &format!("\"{price}\""))).unwrap();
            let Err(ConfigError::Invalid(errors)) = c.validate() else {
                panic!("{price} accepted");
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("output_price") && e.contains(why)),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn every_parse_problem_is_listed_once_with_the_fix_for_unquoted_prices() {
        let text = r#"
[[providers]]
name = "sim"
kind = "simulated"
bogus = 1

[[models]]
name = "a"
provider = "sim"
input_price = 0.6
output_price = "1"

[[models]]
name = "b"
provider = "sim"
input_price = "1"
output_price = 2.5
"#;
        let path =
            std::env::temp_dir().join(format!("tollgate-config-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        let ConfigError::Parse { problems, .. } = &err else {
            panic!("not a parse error: {err}");
        };
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems.iter().any(|p| p.contains("bogus")),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("models[0]") || p.contains("0.6"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("models[1]") && p.contains("quote it"))
        );
        assert_eq!(err.to_string().matches("2.5").count(), 1, "{err}");
    }
}
