//! OpenTelemetry traces (`[telemetry]`, off unless `otlp_endpoint` is set): one `SERVER` span per
//! inference request with a child span per phase of the request path (authenticate, read, parse,
//! route, enforce, admit, dispatch, respond, meter), with the GenAI semantic conventions
//! (`gen_ai.*`) and the request's `http.*` attributes, continuing an incoming W3C `traceparent`.
//!
//! Cost: with telemetry off a request carries `None` and pays a branch per phase. With it on, a
//! request records one `Instant` per phase in a [`RequestTrace`] (boxed, moved into the
//! `Admission` once admitted); the spans are built when it is dropped — after the usage record,
//! or at the refusal — and handed to the SDK's batch processor, whose own thread exports them
//! over OTLP/HTTP (protobuf). The export's HTTP request runs on the runtime that started the app
//! (never a serving thread); a full queue drops spans and a down collector only fails exports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::Span as _;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use tollgate_config::Config;
use tollgate_wire::Endpoint;

use crate::conn::Connector;

/// The phases of the request path, in order: each has a child span of the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Authenticate,
    Read,
    Parse,
    Route,
    Enforce,
    Admit,
    Dispatch,
    Respond,
    Meter,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Authenticate,
        Phase::Read,
        Phase::Parse,
        Phase::Route,
        Phase::Enforce,
        Phase::Admit,
        Phase::Dispatch,
        Phase::Respond,
        Phase::Meter,
    ];

    /// The span name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Authenticate => "authenticate",
            Phase::Read => "read",
            Phase::Parse => "parse",
            Phase::Route => "route",
            Phase::Enforce => "enforce",
            Phase::Admit => "admit",
            Phase::Dispatch => "dispatch",
            Phase::Respond => "respond",
            Phase::Meter => "meter",
        }
    }
}

/// The tracer and its provider (which owns the batch processor's thread).
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telemetry")
    }
}

/// The OTLP exporter's HTTP client: hyper on the runtime that started the app, so the batch
/// processor's thread (which is not a tokio thread) only waits for the result.
#[derive(Debug, Clone)]
struct Exporter {
    client: Client<Connector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

/// Most bytes of a collector's answer that are read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

impl Exporter {
    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let (parts, body) = request.into_parts();
        let work = async move {
            let exchange = async {
                let res = client
                    .request(Request::from_parts(parts, Full::new(body)))
                    .await
                    .map_err(|e| -> HttpError { Box::new(e) })?;
                let (parts, body) = res.into_parts();
                let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| -> HttpError { e })?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err("export timed out".into()),
            }
        };
        match self.runtime.spawn(work).await {
            Ok(r) => r,
            Err(e) => Err(Box::new(e)),
        }
    }
}

impl HttpClient for Exporter {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(self.send(request))
    }
}

impl Telemetry {
    /// The tracer for `[telemetry]`, or `None` when traces are off. Call within a tokio runtime
    /// that outlives serving (exports run on it).
    pub fn start(config: &Config) -> Result<Option<Telemetry>, String> {
        let t = &config.telemetry;
        let Some(base) = t.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "telemetry: no tokio runtime to export from".to_owned())?;
        let timeout = Duration::from_millis(t.export_timeout_ms);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(crate::upstream::build_connector(config)?);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Exporter {
                client,
                runtime,
                timeout,
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
            .with_timeout(timeout)
            .build()
            .map_err(|e| format!("telemetry: {e}"))?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(8192)
                    .with_max_export_batch_size(512)
                    .with_scheduled_delay(Duration::from_millis(1000))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                t.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(t.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Some(Telemetry { provider, tracer }))
    }

    /// Exports every span ended so far (blocks: call off the serving threads).
    pub fn flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }

    /// Exports what is left and stops the exporter (blocks: call off the serving threads).
    pub fn shutdown(&self) -> Result<(), String> {
        self.provider.shutdown().map_err(|e| e.to_string())
    }

    /// Starts the trace of a request that arrived now.
    pub fn begin(
        &self,
        headers: &HeaderMap,
        route: &'static str,
        endpoint: Endpoint,
    ) -> Box<RequestTrace> {
        Box::new(RequestTrace {
            tracer: self.tracer.clone(),
            parent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_traceparent),
            wall: SystemTime::now(),
            began: Instant::now(),
            marks: [None; Phase::ALL.len()],
            route,
            endpoint,
            status: None,
            request_id: None,
            model: None,
            provider: None,
            response_model: None,
            usage: None,
            stream: false,
        })
    }
}

/// A W3C `traceparent` (`00-{trace id}-{parent id}-{flags}`), as a remote span context.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags & 1),
        true,
        TraceState::default(),
    ))
}

/// Token counts for `gen_ai.usage.*`.
#[derive(Debug, Clone, Copy)]
pub struct TraceUsage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
}

/// One request's trace while it runs: when each phase ended and what the request was. Dropped,
/// it builds and ends the spans (the phase in progress then ends at that moment).
pub struct RequestTrace {
    tracer: SdkTracer,
    parent: Option<SpanContext>,
    wall: SystemTime,
    began: Instant,
    marks: [Option<Instant>; Phase::ALL.len()],
    route: &'static str,
    endpoint: Endpoint,
    status: Option<u16>,
    request_id: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    response_model: Option<String>,
    usage: Option<TraceUsage>,
    stream: bool,
}

impl fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTrace")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// Marks the end of `phase` on a trace, if the request has one (a branch when traces are off).
#[inline]
pub fn mark(trace: &mut Option<Box<RequestTrace>>, phase: Phase) {
    if let Some(t) = trace {
        t.mark(phase);
    }
}

impl RequestTrace {
    pub fn mark(&mut self, phase: Phase) {
        self.marks[phase as usize] = Some(Instant::now());
    }

    /// The status answered (or billed).
    pub fn status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// The routed model and whether the client asked for a stream.
    pub fn model(&mut self, model: &str, stream: bool) {
        self.model = Some(model.to_owned());
        self.stream = stream;
    }

    pub fn request_id(&mut self, id: &str) {
        self.request_id = Some(id.to_owned());
    }

    /// What the usage record says: the provider and upstream model, and the tokens.
    pub fn metered(&mut self, provider: &str, upstream_model: &str, usage: TraceUsage) {
        if !provider.is_empty() {
            self.provider = Some(provider.to_owned());
            self.response_model = Some(upstream_model.to_owned());
        }
        self.usage = Some(usage);
    }

    fn time(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.began)
    }

    fn operation(&self) -> &'static str {
        match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => "chat",
            Endpoint::Completions => "text_completion",
            Endpoint::Embeddings => "embeddings",
        }
    }

    fn gen_ai(&self, attributes: &mut Vec<KeyValue>) {
        attributes.push(KeyValue::new("gen_ai.operation.name", self.operation()));
        if let Some(m) = &self.model {
            attributes.push(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        if let Some(p) = &self.provider {
            attributes.push(KeyValue::new("gen_ai.provider.name", p.clone()));
            attributes.push(KeyValue::new("gen_ai.system", p.clone()));
        }
        if let Some(m) = &self.response_model {
            attributes.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        if let Some(u) = self.usage {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            attributes.push(KeyValue::new("gen_ai.usage.input_tokens", n(u.input)));
            attributes.push(KeyValue::new("gen_ai.usage.output_tokens", n(u.output)));
            attributes.push(KeyValue::new(
                "gen_ai.usage.cache_read.input_tokens",
                n(u.cached_input),
            ));
        }
    }

    fn emit(&mut self) {
        let now = Instant::now();
        let status = self.status.unwrap_or(499);
        let parent = match &self.parent {
            Some(sc) => Context::new().with_remote_span_context(sc.clone()),
            None => Context::new(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", self.route),
            KeyValue::new("url.path", self.route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        if let Some(id) = &self.request_id {
            attributes.push(KeyValue::new("tollgate.request.id", id.clone()));
        }
        if self.model.is_some() {
            attributes.push(KeyValue::new("tollgate.stream", self.stream));
        }
        self.gen_ai(&mut attributes);
        let mut request = self.tracer.build_with_context(
            SpanBuilder::from_name(format!("POST {}", self.route))
                .with_kind(SpanKind::Server)
                .with_start_time(self.wall)
                .with_attributes(attributes),
            &parent,
        );
        if !request.span_context().is_sampled() {
            return;
        }
        if status >= 500 {
            request.set_status(Status::error(format!("status {status}")));
        }
        let cx = Context::new().with_remote_span_context(request.span_context().clone());
        let mut start = self.began;
        for phase in Phase::ALL {
            let (end, finished) = match self.marks[phase as usize] {
                Some(end) => (end, true),
                // The record is durable when the trace is dropped.
                None => (now, phase == Phase::Meter),
            };
            let mut attributes = Vec::new();
            let kind = if phase == Phase::Dispatch {
                self.gen_ai(&mut attributes);
                SpanKind::Client
            } else {
                SpanKind::Internal
            };
            let mut span = self.tracer.build_with_context(
                SpanBuilder::from_name(phase.name())
                    .with_kind(kind)
                    .with_start_time(self.time(start))
                    .with_attributes(attributes),
                &cx,
            );
            if !finished && status >= 400 {
                span.set_status(Status::error(format!("status {status}")));
            }
            span.end_with_timestamp(self.time(end));
            if !finished {
                break;
            }
            start = end;
        }
        request.end_with_timestamp(self.time(now));
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        self.emit();
    }
}
