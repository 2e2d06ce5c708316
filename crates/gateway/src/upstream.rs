//! Upstream providers: routes per model, the pooled HTTP client, and one attempt at one upstream.
//!
//! A model has an ordered list of routes (its `[[models]]` entries); each route is an
//! OpenAI-compatible server, an Azure OpenAI deployment, or the built-in simulator. The URIs and
//! the upstream credential header of each route are built once at start. The client's Tollgate key
//! is never copied into an upstream request: only the route's own credential is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::mpsc;
use tollgate_config::{Config, ProviderKind};
use tollgate_wire::Endpoint;

use crate::conn::{ConnPool, Connector, PooledBody};
use crate::meters::{ModelMetrics, RouteMetrics};
use crate::tokens::Encoding;

/// Builds the upstream connector (TCP_NODELAY, keep-alive, connect timeout, TLS with embedded
/// roots); each provider's [`ConnPool`] dials through it.
pub(crate) fn build_connector(config: &Config) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_millis(
        config.server.connect_timeout_ms,
    )));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Settings of a simulated provider (see [`crate::sim`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub ttft: Duration,
    pub tokens_per_second: u64,
    pub output_tokens: u64,
}

/// Where one route sends requests.
#[derive(Debug)]
pub enum Target {
    Http {
        /// The provider's connections.
        pool: Arc<ConnPool>,
        /// Origin-form URIs (path and query) per endpoint: chat completions, completions,
        /// embeddings.
        paths: Box<[Uri; 3]>,
        auth: Option<(HeaderName, HeaderValue)>,
    },
    Simulated(SimConfig),
}

/// Which APIs a route's upstream speaks, and where: what the Responses and Messages front doors
/// need beside `Target` (which carries the pool and the credential).
#[derive(Debug)]
pub enum Dialect {
    /// The built-in simulator: Chat Completions only.
    Simulated,
    /// An OpenAI-compatible server (`openai`, `azure`), with its Responses API when it has one.
    OpenAi { responses: Option<ResponsesApi> },
    /// Anthropic's Messages API. The route's `Target::Http` carries the pool and `x-api-key`.
    Anthropic {
        /// `…/v1/messages` (origin form).
        messages: Uri,
        /// `…/v1/messages/count_tokens` (origin form).
        count_tokens: Uri,
        /// `anthropic-version`.
        version: (HeaderName, HeaderValue),
    },
}

/// Where an upstream's Responses API is.
#[derive(Debug)]
pub struct ResponsesApi {
    /// `POST` here creates a response (origin form).
    pub create: Uri,
    /// The path of `create`, to which `/{id}` and `/{id}/input_items` are appended.
    prefix: String,
    /// The query of `create` (Azure's `api-version`), kept on every URI.
    query: Option<String>,
}

impl ResponsesApi {
    fn new(create: Uri) -> ResponsesApi {
        ResponsesApi {
            prefix: create.path().to_owned(),
            query: create.query().map(str::to_owned),
            create,
        }
    }

    /// The URI of a stored response (`…/responses/{id}`), or of its input items. `id` must be a
    /// response id as the upstream made it (letters, digits, `_` and `-`).
    pub fn stored(&self, id: &str, input_items: bool) -> Option<Uri> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return None;
        }
        let mut text = format!("{}/{id}", self.prefix);
        if input_items {
            text.push_str("/input_items");
        }
        if let Some(q) = &self.query {
            text.push('?');
            text.push_str(q);
        }
        Uri::try_from(text).ok()
    }
}

/// One way to serve a model.
#[derive(Debug)]
pub struct Route {
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
    pub target: Target,
    /// The APIs the upstream speaks beside Chat Completions.
    pub dialect: Dialect,
    /// Passive health: a circuit breaker over consecutive retryable failures.
    pub health: Health,
    /// Its metric handles (upstream latency), resolved at start.
    pub metrics: RouteMetrics,
}

/// Milliseconds since the process started (a cheap monotonic clock for breakers).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A circuit breaker: after `trip_after` consecutive retryable failures the route is skipped
/// (while another route of the model is healthy) until `cool_down` has passed; then one request
/// probes it, and one more failure trips it again at once.
#[derive(Debug)]
pub struct Health {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    trip_after: u32,
    cool_down_ms: u64,
}

impl Health {
    pub fn new(trip_after: u32, cool_down_ms: u64) -> Health {
        Health {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            trip_after,
            cool_down_ms,
        }
    }

    /// Whether requests should go to this route now.
    pub fn available(&self, now_ms: u64) -> bool {
        self.trip_after == 0 || now_ms >= self.open_until_ms.load(Ordering::Relaxed)
    }

    /// The upstream answered (any non-retryable outcome).
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.open_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// The breaker as an operator sees it — `closed`, `open` (skipped until the cool-down
    /// ends) or `half-open` (the next request probes) — and the retryable failures in a row.
    pub fn state(&self, now_ms: u64) -> (&'static str, u32) {
        let failures = self.failures.load(Ordering::Relaxed);
        let state = if self.trip_after == 0 || failures < self.trip_after {
            "closed"
        } else if now_ms < self.open_until_ms.load(Ordering::Relaxed) {
            "open"
        } else {
            "half-open"
        };
        (state, failures)
    }

    /// A retryable failure.
    pub fn failure(&self, now_ms: u64) {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if self.trip_after > 0 && n >= self.trip_after {
            self.open_until_ms
                .store(now_ms.saturating_add(self.cool_down_ms), Ordering::Relaxed);
        }
    }
}

/// A public model and its routes, in fallback order.
#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub routes: Vec<Route>,
    pub owner: Option<String>,
    pub encoding: Encoding,
    /// Tokens the model accepts; longer prompts are refused before dispatch.
    pub context_window: Option<u64>,
    pub created: i64,
    /// Its metric handles (duration, tokens), resolved at start.
    pub metrics: ModelMetrics,
}

fn endpoint_index(e: Endpoint) -> usize {
    match e {
        // Responses and Messages requests are sent by the dialect's URIs, never these.
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
    }
}

/// Builds every model's routes from the configuration.
pub fn build_models(config: &Config) -> Result<Vec<ModelEntry>, String> {
    let connector = build_connector(config)?;
    // One pool per provider, shared by every model it serves.
    let mut pools: Vec<(String, Arc<ConnPool>)> = Vec::new();
    let mut out: Vec<ModelEntry> = Vec::new();
    for m in &config.models {
        let p = config
            .providers
            .iter()
            .find(|p| p.name == m.provider)
            .ok_or_else(|| format!("model {}: unknown provider {}", m.name, m.provider))?;
        let upstream_model = m.upstream_model();
        let mut dialect = Dialect::Simulated;
        let target = match p.kind {
            ProviderKind::Simulated => Target::Simulated(SimConfig {
                ttft: Duration::from_millis(p.ttft_ms),
                tokens_per_second: p.tokens_per_second,
                output_tokens: p.output_tokens,
            }),
            ProviderKind::Anthropic => {
                let (target, d) = anthropic_route(config, &connector, &mut pools, p)?;
                dialect = d;
                target
            }
            ProviderKind::Openai | ProviderKind::Azure => {
                let base = p
                    .base_url
                    .as_deref()
                    .unwrap_or_default()
                    .trim_end_matches('/');
                let key = p.resolved_api_key();
                let endpoints = [
                    Endpoint::ChatCompletions,
                    Endpoint::Completions,
                    Endpoint::Embeddings,
                ];
                let mut uris: Vec<Uri> = Vec::with_capacity(3);
                for e in endpoints {
                    let text = if p.kind == ProviderKind::Azure {
                        format!(
                            "{base}/openai/deployments/{upstream_model}{}?api-version={}",
                            e.path(),
                            p.api_version.as_deref().unwrap_or_default()
                        )
                    } else {
                        format!("{base}{}", e.path())
                    };
                    let uri: Uri = text
                        .parse()
                        .map_err(|err| format!("provider {}: bad URL {text}: {err}", p.name))?;
                    uris.push(uri);
                }
                let pool = provider_pool(config, &connector, &mut pools, &p.name, &uris[0])?;
                let mut paths = Vec::with_capacity(3);
                for uri in &uris {
                    let path = uri
                        .path_and_query()
                        .map_or("/", http::uri::PathAndQuery::as_str);
                    paths.push(
                        Uri::try_from(path)
                            .map_err(|err| format!("provider {}: bad URL {uri}: {err}", p.name))?,
                    );
                }
                let [a, b, c]: [Uri; 3] = paths
                    .try_into()
                    .map_err(|_| "internal: wrong number of URIs".to_owned())?;
                if p.responses_api != Some(false) {
                    // Azure's v1 API takes the deployment as the body's `model`.
                    let text = if p.kind == ProviderKind::Azure {
                        format!("{base}/openai/v1/responses")
                    } else {
                        format!("{base}/responses")
                    };
                    let create = origin_form(&text, &p.name)?;
                    dialect = Dialect::OpenAi {
                        responses: Some(ResponsesApi::new(create)),
                    };
                } else {
                    dialect = Dialect::OpenAi { responses: None };
                }
                let auth = match key {
                    None => None,
                    Some(k) => {
                        let (name, value) = if p.kind == ProviderKind::Azure {
                            (HeaderName::from_static("api-key"), k)
                        } else {
                            (AUTHORIZATION, format!("Bearer {k}"))
                        };
                        let mut v = HeaderValue::from_str(&value).map_err(|_| {
                            format!(
                                "provider {}: the API key is not a valid header value",
                                p.name
                            )
                        })?;
                        v.set_sensitive(true);
                        Some((name, v))
                    }
                };
                Target::Http {
                    pool,
                    paths: Box::new([a, b, c]),
                    auth,
                }
            }
        };
        let provider: Arc<str> = p.name.as_str().into();
        let route = Route {
            metrics: RouteMetrics::detached(&provider),
            provider,
            upstream_model: upstream_model.into(),
            target,
            dialect,
            health: Health::new(
                config.server.breaker_failures,
                config.server.breaker_cooldown_ms,
            ),
        };
        match out.iter_mut().find(|e| e.name == m.name) {
            Some(entry) => entry.routes.push(route),
            None => out.push(ModelEntry {
                name: m.name.clone(),
                routes: vec![route],
                owner: m.owner.clone(),
                encoding: Encoding::for_model(upstream_model, m.tokenizer.as_deref()),
                context_window: m.context_window,
                created: 1_700_000_000,
                metrics: ModelMetrics::detached(&m.name),
            }),
        }
    }
    Ok(out)
}

/// The connection pool of `provider` (one per provider, to the origin of `uri`), made on first
/// use.
fn provider_pool(
    config: &Config,
    connector: &Connector,
    pools: &mut Vec<(String, Arc<ConnPool>)>,
    provider: &str,
    uri: &Uri,
) -> Result<Arc<ConnPool>, String> {
    if let Some((_, pool)) = pools.iter().find(|(name, _)| name == provider) {
        return Ok(pool.clone());
    }
    let pool = Arc::new(
        ConnPool::new(
            connector.clone(),
            uri,
            config.server.pool_max_idle_per_host,
            Duration::from_secs(90),
            config.server.serving_threads() + 1,
        )
        .map_err(|e| format!("provider {provider}: {e}"))?,
    );
    pools.push((provider.to_owned(), pool.clone()));
    Ok(pool)
}

/// The origin-form URI (path and query) of a URL.
fn origin_form(text: &str, provider: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|err| format!("provider {provider}: bad URL {text}: {err}"))?;
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    Uri::try_from(path).map_err(|err| format!("provider {provider}: bad URL {text}: {err}"))
}

fn sensitive_header(value: &str, provider: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("provider {provider}: the API key is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// An `anthropic` provider's route: the pool of its origin, `x-api-key`, and its Messages URIs
/// (`{base_url}/v1/messages`, like the official SDK's `base_url`).
fn anthropic_route(
    config: &Config,
    connector: &Connector,
    pools: &mut Vec<(String, Arc<ConnPool>)>,
    p: &tollgate_config::ProviderConfig,
) -> Result<(Target, Dialect), String> {
    let base = p
        .base_url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    let full = format!("{base}/v1/messages");
    let uri: Uri = full
        .parse()
        .map_err(|err| format!("provider {}: bad URL {full}: {err}", p.name))?;
    let pool = provider_pool(config, connector, pools, &p.name, &uri)?;
    let messages = origin_form(&full, &p.name)?;
    let count_tokens = origin_form(&format!("{full}/count_tokens"), &p.name)?;
    let auth = match p.resolved_api_key() {
        Some(k) => Some((
            HeaderName::from_static("x-api-key"),
            sensitive_header(&k, &p.name)?,
        )),
        None => None,
    };
    let version = HeaderValue::from_str(p.anthropic_version()).map_err(|_| {
        format!(
            "provider {}: anthropic_version is not a valid header value",
            p.name
        )
    })?;
    let target = Target::Http {
        pool,
        // Chat Completions never reach these: requests for an anthropic route are translated
        // and sent to `messages`.
        paths: Box::new([messages.clone(), messages.clone(), messages.clone()]),
        auth,
    };
    let dialect = Dialect::Anthropic {
        messages,
        count_tokens,
        version: (HeaderName::from_static("anthropic-version"), version),
    };
    Ok((target, dialect))
}

/// A response body from an upstream, read chunk by chunk.
pub enum UpstreamBody {
    Http(PooledBody),
    Chunks(mpsc::Receiver<Bytes>),
    Full(Option<Bytes>),
    /// An upstream body read through a translation (an `anthropic` upstream's event stream read
    /// as chat chunks: `dialect::AnthropicUpstream`).
    Translated(Box<dyn TranslatedBody>),
}

/// A body that reads another upstream body and hands on its translation.
pub trait TranslatedBody: Send {
    /// The next translated piece; `None` at the end.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>>;
}

impl UpstreamBody {
    /// The next piece of the body; `None` at the end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        match self {
            UpstreamBody::Http(b) => b.poll_chunk(cx),
            UpstreamBody::Chunks(rx) => rx.poll_recv(cx).map(|o| o.map(Ok)),
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(Ok)),
            UpstreamBody::Translated(a) => a.poll_next(cx),
        }
    }

    /// The next piece of the body; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The whole body, up to `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, String> {
        if let UpstreamBody::Full(Some(b)) = &mut self {
            return Ok(std::mem::take(b));
        }
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        while let Some(piece) = self.next().await {
            let piece = piece?;
            match &first {
                None => first = Some(piece),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&piece);
                }
            }
            let len = if rest.is_empty() {
                first.as_ref().map_or(0, Bytes::len)
            } else {
                rest.len()
            };
            if len > limit {
                return Err(format!("upstream response exceeds {limit} bytes"));
            }
        }
        Ok(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            Bytes::from(rest)
        })
    }
}

/// A successful (2xx) upstream response whose body is not yet read.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: UpstreamBody,
}

/// Why one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made, or it broke before a response.
    Connect(String),
    /// No response headers within the upstream timeout.
    Timeout,
    /// The upstream answered an error status.
    Status {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
        content_type: Option<HeaderValue>,
    },
}

impl Failure {
    /// Whether another attempt may succeed: connect errors, timeouts, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::Timeout => true,
            Failure::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
        }
    }
}

/// Sends one request over HTTP to a route.
pub async fn send_http(
    pool: &Arc<ConnPool>,
    paths: &[Uri; 3],
    auth: Option<&(HeaderName, HeaderValue)>,
    endpoint: Endpoint,
    body: Bytes,
    timeout: Duration,
) -> Result<UpstreamResponse, Failure> {
    send_to(
        pool,
        Method::POST,
        &paths[endpoint_index(endpoint)],
        &[auth],
        Some(body),
        timeout,
    )
    .await
}

/// Sends one request to `uri` (origin form) on a provider's pool, with the given headers (the
/// route's credential and, for Anthropic, its version) and, when `body` is given, a JSON body.
pub async fn send_to(
    pool: &Arc<ConnPool>,
    method: Method,
    uri: &Uri,
    headers: &[Option<&(HeaderName, HeaderValue)>],
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<UpstreamResponse, Failure> {
    // Built in place (a `request::Builder` is moved whole at every `.header(…)`).
    let json = body.is_some();
    let mut req = Request::new(Full::new(body.unwrap_or_default()));
    *req.method_mut() = method;
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    h.insert(HOST, pool.host.clone());
    if json {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for (name, value) in headers.iter().flatten() {
        h.append(name.clone(), value.clone());
    }
    let res = match tokio::time::timeout(timeout, pool.send(req)).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(e)) => return Err(Failure::Connect(e.0)),
        Ok(Ok(res)) => res,
    };
    let status = res.status();
    let content_type = res.headers().get(CONTENT_TYPE).cloned();
    if status.is_success() {
        return Ok(UpstreamResponse {
            status,
            content_type,
            body: UpstreamBody::Http(res.into_body()),
        });
    }
    let retry_after = res.headers().get(RETRY_AFTER).cloned();
    let body = tokio::time::timeout(
        timeout,
        UpstreamBody::Http(res.into_body()).collect(1 << 20),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    Err(Failure::Status {
        status,
        body,
        retry_after,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_response_uris_keep_the_query_and_refuse_odd_ids() {
        let api = ResponsesApi::new(Uri::from_static("/openai/v1/responses?api-version=v1"));
        assert_eq!(
            api.stored("resp_1-a", false).unwrap(),
            "/openai/v1/responses/resp_1-a?api-version=v1"
        );
        assert_eq!(
            api.stored("resp_1", true).unwrap(),
            "/openai/v1/responses/resp_1/input_items?api-version=v1"
        );
        let api = ResponsesApi::new(Uri::from_static("/v1/responses"));
        assert_eq!(api.stored("r", false).unwrap(), "/v1/responses/r");
        for bad in ["", "../x", "a/b", "a?b", "a b"] {
            assert!(api.stored(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn anthropic_provider_routes_to_messages_with_its_headers() {
        let config = Config::from_toml(
            r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "https://api.anthropic.com/"
api_key = "sk-ant-secret"

[[providers]]
name = "oa"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "az"
kind = "azure"
base_url = "http://127.0.0.1:9"
api_version = "2024-10-21"

[[providers]]
name = "chatonly"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
responses_api = false

[[models]]
name = "claude-x"
provider = "claude"
upstream_model = "claude-up"

[[models]]
name = "o"
provider = "oa"

[[models]]
name = "a"
provider = "az"

[[models]]
name = "c"
provider = "chatonly"
"#,
        )
        .unwrap();
        let models = build_models(&config).unwrap();
        let claude = &models[0].routes[0];
        assert_eq!(&*claude.upstream_model, "claude-up");
        let Dialect::Anthropic {
            messages,
            count_tokens,
            version,
        } = &claude.dialect
        else {
            panic!("not anthropic: {:?}", claude.dialect);
        };
        assert_eq!(messages, "/v1/messages");
        assert_eq!(count_tokens, "/v1/messages/count_tokens");
        assert_eq!(version.0, "anthropic-version");
        assert_eq!(version.1, "2023-06-01");
        let Target::Http { pool, auth, .. } = &claude.target else {
            panic!("not http");
        };
        assert_eq!(pool.host, "api.anthropic.com");
        let (name, value) = auth.as_ref().unwrap();
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "sk-ant-secret");
        assert!(value.is_sensitive());

        let responses = |i: usize| match &models[i].routes[0].dialect {
            Dialect::OpenAi { responses } => responses.as_ref().map(|r| r.create.to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(responses(1).as_deref(), Some("/v1/responses"));
        assert_eq!(responses(2).as_deref(), Some("/openai/v1/responses"));
        assert_eq!(responses(3), None);
    }

    #[test]
    fn breaker_trips_cools_down_and_resets() {
        let h = Health::new(3, 1000);
        assert!(h.available(0));
        h.failure(0);
        h.failure(0);
        assert!(h.available(0), "two failures do not trip");
        h.failure(10);
        assert!(!h.available(10) && !h.available(1009));
        assert!(h.available(1010), "probe after the cool-down");
        h.failure(1010);
        assert!(!h.available(1011), "a failed probe trips again at once");
        h.success();
        assert!(h.available(1011));
        let never = Health::new(0, 1000);
        for _ in 0..10 {
            never.failure(0);
        }
        assert!(never.available(0));
    }
}
