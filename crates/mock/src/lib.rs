//! `tollgate-mock`: a fast mock OpenAI-compatible upstream for tests and load benchmarks.
//!
//! It serves `POST /v1/chat/completions` (plain and SSE), `POST /v1/completions` (legacy,
//! plain and SSE), `POST /v1/embeddings`, `GET /v1/models`, and the Azure shapes
//! `POST /openai/deployments/{dep}/{chat/completions|completions|embeddings}?api-version=..`;
//! and OpenAI's Responses API and Anthropic's Messages API (see the `apis` module:
//! `POST /v1/responses` with stored responses, `POST /v1/messages`, `/v1/messages/count_tokens`).
//! Behaviour (latency, failures, usage reporting, stream shape) is set by [`MockConfig`] and can
//! be changed at run time with [`MockUpstream::set_config`].
//!
//! Token accounting is deterministic so tests can compare a gateway's ledger with what the
//! mock reported: `prompt_tokens` is the number of whitespace-separated words in the prompt
//! (see [`count_prompt_tokens`] and the [`parse`] module docs); `completion_tokens` is
//! `n * response_tokens + reasoning_tokens`; `total_tokens` is their sum.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_mock::{MockConfig, MockUpstream};
//! let mock = MockUpstream::start(MockConfig::default()).await?;
//! let base = mock.base_url(); // "http://127.0.0.1:PORT/v1"
//! # let _ = base; Ok(()) }
//! ```

mod apis;
mod body;
pub mod parse;
mod render;
mod server;

pub use parse::{ParsedRequest, RequestError, count_prompt_tokens, count_words, parse_request};

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// How many recent requests [`MockUpstream::requests`] keeps.
pub const RECORDED_REQUESTS: usize = 1000;

/// What the mock does with each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Behavior {
    /// Answer normally.
    #[default]
    Ok,
    /// Always answer this HTTP status with an OpenAI error body.
    Status(u16),
    /// Accept the request and never answer (until the mock is dropped).
    Hang,
    /// Send half of the response (half the SSE events, or half the bytes of a plain body)
    /// then drop the connection.
    CloseMidStream,
}

/// How the mock reports `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageMode {
    /// Like OpenAI: always in plain responses; in streams only when the request sets
    /// `stream_options.include_usage = true` (then a final `"choices":[]` chunk carries it and
    /// the other chunks carry `"usage":null`).
    #[default]
    Always,
    /// Never report usage, plain or stream (the `usage` member is absent).
    Never,
    /// vLLM-style continuous usage: every stream chunk carries the running usage, and a final
    /// `"choices":[]` usage chunk is always sent. Plain responses carry usage as usual.
    EveryChunk,
}

/// Mock behaviour. All fields are public; start from [`MockConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// What to do with each request (default [`Behavior::Ok`]).
    pub behavior: Behavior,
    /// Completion tokens per choice; the content is that many `"tok "` (default 16).
    pub response_tokens: u32,
    /// Content chunks per stream choice (default: `response_tokens`, one token per chunk).
    /// Tokens are spread as evenly as possible; extra chunks carry empty content.
    pub stream_chunks: Option<u32>,
    /// Delay before the response headers (default 0).
    pub ttft: Duration,
    /// Delay between stream events (default 0).
    pub chunk_gap: Duration,
    /// How usage is reported (default [`UsageMode::Always`]).
    pub usage: UsageMode,
    /// Streams: write each SSE event in several small pieces, each flushed on its own.
    pub split_writes: bool,
    /// Streams: send a `: keep-alive` comment between events.
    pub keepalive_comments: bool,
    /// The first N requests (counted from start or the last [`MockUpstream::set_config`])
    /// answer `fail_status` with an OpenAI error body.
    pub fail_first: u32,
    /// Status used by `fail_first` (default 500).
    pub fail_status: u16,
    /// Reported as `usage.prompt_tokens_details.cached_tokens` (default 0).
    pub cached_tokens: u32,
    /// Anthropic `POST /v1/messages`: reported as `cache_creation_input_tokens` (at most the
    /// prompt less the cache reads; default 0).
    pub cache_write_tokens: u32,
    /// Reported as `usage.completion_tokens_details.reasoning_tokens`, and included in
    /// `completion_tokens` as OpenAI does (default 0).
    pub reasoning_tokens: u32,
    /// Model ids listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Keep the last [`RECORDED_REQUESTS`] requests for [`MockUpstream::requests`]
    /// (default true; turn off for load tests).
    pub record_requests: bool,
    /// Answer with `Connection: close` and close each connection after its response, as a
    /// server does at the end of its keep-alive allowance (default false).
    pub close_connections: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            behavior: Behavior::Ok,
            response_tokens: 16,
            stream_chunks: None,
            ttft: Duration::ZERO,
            chunk_gap: Duration::ZERO,
            usage: UsageMode::Always,
            split_writes: false,
            keepalive_comments: false,
            fail_first: 0,
            fail_status: 500,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            models: vec![
                "gpt-4o-mini".to_owned(),
                "gpt-4o".to_owned(),
                "text-embedding-3-small".to_owned(),
            ],
            record_requests: true,
            close_connections: false,
        }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Path and query, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// Headers: lowercase name -> value (repeated headers joined with `", "`).
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Configuration plus what is pre-rendered from it.
pub(crate) struct State {
    pub config: MockConfig,
    /// `"tok "` times `response_tokens`.
    pub content: String,
    /// `GET /v1/models` body.
    pub models_body: Bytes,
}

impl State {
    fn new(config: MockConfig) -> Self {
        let content = render::content_of(u64::from(config.response_tokens));
        let models_body = render::models(&config.models, server::now_secs());
        State {
            config,
            content,
            models_body,
        }
    }
}

/// State shared by the handle and the server tasks.
pub(crate) struct Shared {
    state: RwLock<Arc<State>>,
    count: AtomicU64,
    /// Connections accepted so far.
    pub(crate) connections: AtomicU64,
    fail_seen: AtomicU64,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    /// Stored responses (Responses API): id → (response object, input items).
    responses: Mutex<HashMap<String, StoredResponse>>,
}

type StoredResponse = (serde_json::Value, Vec<serde_json::Value>);

impl Shared {
    pub(crate) fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Counts a request and returns its sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.count.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this request is one of the first `fail_first`.
    pub(crate) fn take_failure(&self, fail_first: u32) -> bool {
        fail_first > 0 && self.fail_seen.fetch_add(1, Ordering::Relaxed) < u64::from(fail_first)
    }

    pub(crate) fn store(
        &self,
        id: &str,
        response: serde_json::Value,
        items: Vec<serde_json::Value>,
    ) {
        let mut m = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(id.to_owned(), (response, items));
    }

    pub(crate) fn stored(&self, id: &str) -> Option<StoredResponse> {
        let m = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).cloned()
    }

    pub(crate) fn unstore(&self, id: &str) -> bool {
        let mut m = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(id).is_some()
    }

    pub(crate) fn record(&self, req: RecordedRequest) {
        let mut q = match self.recorded.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if q.len() >= RECORDED_REQUESTS {
            q.pop_front();
        }
        q.push_back(req);
    }
}

/// Listen backlog: large, so thousands of simultaneous connects are not dropped
/// (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 8192;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A running mock upstream. Dropping it stops the server and closes its connections.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish()
    }
}

impl MockUpstream {
    /// Starts on `127.0.0.1` with an ephemeral port, on the current tokio runtime.
    pub async fn start(config: MockConfig) -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts on `addr` (port 0 = ephemeral), on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockUpstream> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(State::new(config))),
            count: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            fail_seen: AtomicU64::new(0),
            recorded: Mutex::new(VecDeque::new()),
            responses: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = watch::channel(());
        tokio::spawn(server::serve(listener, Arc::clone(&shared), rx));
        Ok(MockUpstream {
            addr,
            shared,
            _shutdown: tx,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"http://127.0.0.1:PORT/v1"`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `"http://127.0.0.1:PORT"` (for Azure-style paths).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far, on any route.
    pub fn request_count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The last [`RECORDED_REQUESTS`] requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        match self.shared.recorded.lock() {
            Ok(g) => g.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    /// Forgets the recorded requests (the request count is kept).
    pub fn clear_requests(&self) {
        match self.shared.recorded.lock() {
            Ok(mut g) => g.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> MockConfig {
        self.shared.state().config.clone()
    }

    /// Replaces the configuration; applies to requests arriving from now on.
    /// The `fail_first` counter restarts.
    pub fn set_config(&self, config: MockConfig) {
        let new = Arc::new(State::new(config));
        match self.shared.state.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        self.shared.fail_seen.store(0, Ordering::Relaxed);
    }
}
