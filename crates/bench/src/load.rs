//! The load generator: hyper HTTP/1.1 keep-alive connections on tokio, closed-loop
//! (C connections as fast as possible), open-loop (fixed rate, latency measured from each
//! request's intended send time, so there is no coordinated omission) and burst (N
//! concurrent one-shot requests, e.g. slow streams), with HDR histograms.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out")]
    Timeout,
    #[error("histogram: {0}")]
    Histogram(String),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub addr: SocketAddr,
    pub path: String,
    pub auth: Option<HeaderValue>,
    pub body: Bytes,
    /// Which HTTP statuses count as success (200; a rejection for the invalid-key flood).
    pub expect: fn(u16) -> bool,
    /// Per-request timeout (connect + whole response).
    pub timeout: Duration,
}

/// How to send it.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `connections` connections, each sending back-to-back for `duration`.
    Closed {
        connections: usize,
        duration: Duration,
    },
    /// `rate` requests per second for `duration`, over at most `connections` connections.
    Open {
        rate: u64,
        duration: Duration,
        connections: usize,
    },
    /// `count` one-shot requests on their own connections, started at a steady
    /// `connects_per_second`, all allowed to be in flight together.
    Burst {
        count: usize,
        connects_per_second: u64,
    },
}

/// Counters and histograms of one run. Latencies are in microseconds.
pub struct LoadResult {
    pub ok: u64,
    pub bad_status: u64,
    pub io_errors: u64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed: Duration,
    /// Whole response, from send (or intended send, open-loop) to the last byte.
    pub latency: Histogram<u64>,
    /// From send to the first body byte.
    pub ttfb: Histogram<u64>,
    /// Between successive body frames of one response.
    pub gaps: Histogram<u64>,
    /// Most requests seen in flight at once (burst mode).
    pub max_in_flight: u64,
}

fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| LoadError::Histogram(e.to_string()))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl LoadResult {
    fn empty() -> Result<Self, LoadError> {
        Ok(LoadResult {
            ok: 0,
            bad_status: 0,
            io_errors: 0,
            statuses: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: histogram()?,
            ttfb: histogram()?,
            gaps: histogram()?,
            max_in_flight: 0,
        })
    }

    fn merge(&mut self, other: &LoadResult) {
        self.ok += other.ok;
        self.bad_status += other.bad_status;
        self.io_errors += other.io_errors;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.ttfb.add(&other.ttfb);
        let _ = self.gaps.add(&other.gaps);
    }

    /// Adds a later run of the same load (a round of an interleaved measurement): counts and
    /// histograms add up, and so does the time.
    pub fn add_round(&mut self, other: &LoadResult) {
        self.merge(other);
        self.elapsed += other.elapsed;
        self.max_in_flight = self.max_in_flight.max(other.max_in_flight);
    }

    /// Responses received (any status).
    pub fn responses(&self) -> u64 {
        self.ok + self.bad_status
    }

    /// Successful responses per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

/// A keep-alive connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Result<Conn, LoadError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| LoadError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

/// Outcome of one request.
struct Outcome {
    status: u16,
    ttfb: Option<Duration>,
}

/// Where one request's measurements go.
trait Sink: Send {
    /// Time between two body frames of a response.
    fn gap(&mut self, us: u64);
    /// A complete response.
    fn done(&mut self, latency_us: u64, ttfb_us: Option<u64>, status: u16, ok: bool);
    /// A connection failure or timeout.
    fn io_error(&mut self);
}

impl Sink for LoadResult {
    fn gap(&mut self, us: u64) {
        self.gaps.saturating_record(us);
    }
    fn done(&mut self, latency_us: u64, ttfb_us: Option<u64>, status: u16, ok: bool) {
        self.latency.saturating_record(latency_us);
        if let Some(t) = ttfb_us {
            self.ttfb.saturating_record(t);
        }
        *self.statuses.entry(status).or_insert(0) += 1;
        if ok {
            self.ok += 1;
        } else {
            self.bad_status += 1;
        }
    }
    fn io_error(&mut self) {
        self.io_errors += 1;
    }
}

/// Raw samples of one request (burst tasks: a histogram per task would cost ~0.5 MB each).
#[derive(Default)]
struct Samples {
    gaps: Vec<u64>,
    done: Option<(u64, Option<u64>, u16, bool)>,
    io_errors: u64,
}

impl Sink for Samples {
    fn gap(&mut self, us: u64) {
        self.gaps.push(us);
    }
    fn done(&mut self, latency_us: u64, ttfb_us: Option<u64>, status: u16, ok: bool) {
        self.done = Some((latency_us, ttfb_us, status, ok));
    }
    fn io_error(&mut self) {
        self.io_errors += 1;
    }
}

impl LoadResult {
    fn absorb(&mut self, s: &Samples) {
        for &g in &s.gaps {
            self.gap(g);
        }
        if let Some((latency, ttfb, status, ok)) = s.done {
            self.done(latency, ttfb, status, ok);
        }
        self.io_errors += s.io_errors;
    }
}

/// Sends one request on `conn` and reads the whole response, recording frame gaps.
async fn exchange(
    conn: &mut Conn,
    spec: &RequestSpec,
    sink: &mut dyn Sink,
) -> Result<Outcome, LoadError> {
    conn.sender.ready().await?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(spec.path.as_str())
        .header(HOST, spec.addr.to_string())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(auth) = &spec.auth {
        builder = builder.header(AUTHORIZATION, auth.clone());
    }
    let req = builder.body(Full::new(spec.body.clone()))?;
    let sent = Instant::now();
    let resp = conn.sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut first: Option<Duration> = None;
    let mut last = sent;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if frame.is_data() {
            let now = Instant::now();
            if first.is_none() {
                first = Some(now - sent);
            } else {
                sink.gap(micros(now - last));
            }
            last = now;
        }
    }
    Ok(Outcome {
        status,
        ttfb: first,
    })
}

/// One request with connection (re)establishment and the timeout; records into `sink`.
/// Returns the connection if it can be reused.
async fn one(
    conn: Option<Conn>,
    spec: &RequestSpec,
    start: Instant,
    sink: &mut dyn Sink,
) -> Option<Conn> {
    let outcome = {
        let sink = &mut *sink;
        let work = async move {
            let mut conn = match conn {
                Some(c) if !c.sender.is_closed() => c,
                _ => connect(spec.addr).await?,
            };
            let out = exchange(&mut conn, spec, sink).await?;
            Ok::<_, LoadError>((conn, out))
        };
        tokio::time::timeout(spec.timeout, work).await
    };
    match outcome {
        Ok(Ok((conn, out))) => {
            let ok = (spec.expect)(out.status);
            sink.done(
                micros(start.elapsed()),
                out.ttfb.map(micros),
                out.status,
                ok,
            );
            Some(conn)
        }
        Ok(Err(_)) | Err(_) => {
            sink.io_error();
            None
        }
    }
}

/// Opens `n` connections before the clock starts (failed ones are retried by the workers).
async fn preconnect(spec: &RequestSpec, n: usize) -> Vec<Option<Conn>> {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (addr, timeout) = (spec.addr, spec.timeout);
        handles.push(tokio::spawn(async move {
            tokio::time::timeout(timeout, connect(addr))
                .await
                .ok()?
                .ok()
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for h in handles {
        conns.push(h.await.ok().flatten());
    }
    conns
}

/// Runs `mode` against `spec`.
pub async fn run(spec: &RequestSpec, mode: Mode) -> Result<LoadResult, LoadError> {
    let spec = Arc::new(spec.clone());
    let mut conns = match mode {
        Mode::Closed { connections, .. } | Mode::Open { connections, .. } => {
            preconnect(&spec, connections.max(1)).await
        }
        Mode::Burst { .. } => Vec::new(),
    };
    let started = Instant::now();
    let mut total = LoadResult::empty()?;
    let mut handles = Vec::new();
    match mode {
        Mode::Closed {
            connections,
            duration,
        } => {
            let deadline = started + duration;
            for _ in 0..connections.max(1) {
                let spec = Arc::clone(&spec);
                let mut conn = conns.pop().flatten();
                handles.push(tokio::spawn(async move {
                    let mut res = LoadResult::empty()?;
                    while Instant::now() < deadline {
                        let had = conn.is_some();
                        conn = one(conn, &spec, Instant::now(), &mut res).await;
                        if conn.is_none() && !had {
                            // Could not even connect: do not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Ok::<_, LoadError>(res)
                }));
            }
        }
        Mode::Open {
            rate,
            duration,
            connections,
        } => {
            let rate = rate.max(1);
            let slots = rate.saturating_mul(duration.as_secs().max(1));
            let next = Arc::new(AtomicU64::new(0));
            let hard_deadline = started + duration + spec.timeout;
            for _ in 0..connections.max(1) {
                let spec = Arc::clone(&spec);
                let next = Arc::clone(&next);
                let mut conn = conns.pop().flatten();
                handles.push(tokio::spawn(async move {
                    let mut res = LoadResult::empty()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= slots || Instant::now() >= hard_deadline {
                            break;
                        }
                        let intended =
                            started + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
                        tokio::time::sleep_until(intended.into()).await;
                        // Latency counts from the intended send time.
                        conn = one(conn, &spec, intended, &mut res).await;
                    }
                    Ok::<_, LoadError>(res)
                }));
            }
        }
        Mode::Burst {
            count,
            connects_per_second,
        } => {
            let rate = connects_per_second.max(1);
            let mut burst = Vec::with_capacity(count);
            let in_flight = Arc::new(AtomicU64::new(0));
            let peak = Arc::new(AtomicU64::new(0));
            for i in 0..count as u64 {
                let spec = Arc::clone(&spec);
                let in_flight = Arc::clone(&in_flight);
                let peak = Arc::clone(&peak);
                burst.push(tokio::spawn(async move {
                    let mut res = Samples::default();
                    // Request i starts at start + i/rate; its latency counts from then and
                    // includes the connect, so a server slow to accept shows.
                    let t0 = started + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
                    tokio::time::sleep_until(t0.into()).await;
                    let conn = tokio::time::timeout(spec.timeout, connect(spec.addr)).await;
                    let conn = match conn {
                        Ok(Ok(c)) => c,
                        _ => {
                            res.io_errors += 1;
                            return res;
                        }
                    };
                    let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                    peak.fetch_max(now, Ordering::Relaxed);
                    one(Some(conn), &spec, t0, &mut res).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    res
                }));
            }
            for h in burst {
                match h.await {
                    Ok(samples) => total.absorb(&samples),
                    Err(_) => total.io_errors += 1,
                }
            }
            total.elapsed = started.elapsed();
            total.max_in_flight = peak.load(Ordering::Relaxed);
            return Ok(total);
        }
    }
    let results = collect(handles, &mut total).await;
    total.elapsed = started.elapsed();
    results?;
    Ok(total)
}

async fn collect(
    handles: Vec<tokio::task::JoinHandle<Result<LoadResult, LoadError>>>,
    total: &mut LoadResult,
) -> Result<(), LoadError> {
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(r)) => total.merge(&r),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => total.io_errors += 1,
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// One simple JSON request, for set-up calls (admin API, health checks).
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Bytes), LoadError> {
    let work = async {
        let mut conn = connect(addr).await?;
        conn.sender.ready().await?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            builder = builder.header(AUTHORIZATION, format!("Bearer {a}"));
        }
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = conn
            .sender
            .send_request(builder.body(Full::new(payload))?)
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok::<_, LoadError>((status, bytes))
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| LoadError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_mock::{Behavior, MockConfig, MockUpstream};

    fn spec(addr: SocketAddr, stream: bool) -> RequestSpec {
        let body = serde_json::json!({
            "model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "hello world"}]
        });
        RequestSpec {
            addr,
            path: "/v1/chat/completions".into(),
            auth: None,
            body: Bytes::from(body.to_string()),
            expect: |s| s == 200,
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_every_request_the_mock_saw() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let r = run(
            &spec(mock.addr(), false),
            Mode::Closed {
                connections: 4,
                duration: Duration::from_millis(300),
            },
        )
        .await
        .unwrap();
        assert!(r.ok > 0);
        assert_eq!(r.bad_status + r.io_errors, 0);
        assert_eq!(r.ok, mock.request_count());
        assert_eq!(r.latency.len(), r.ok);
    }

    #[tokio::test]
    async fn rounds_add_up_counts_histograms_and_time() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let mode = Mode::Closed {
            connections: 2,
            duration: Duration::from_millis(200),
        };
        let mut total = run(&spec(mock.addr(), false), mode).await.unwrap();
        let second = run(&spec(mock.addr(), false), mode).await.unwrap();
        let (first_ok, first_elapsed) = (total.ok, total.elapsed);
        total.add_round(&second);
        assert_eq!(total.ok, first_ok + second.ok);
        assert_eq!(total.ok, mock.request_count());
        assert_eq!(total.latency.len(), total.ok);
        assert_eq!(total.elapsed, first_elapsed + second.elapsed);
        let rate = total.ok as f64 / (first_elapsed + second.elapsed).as_secs_f64();
        assert!((total.throughput() - rate).abs() < 1e-6);
    }

    #[tokio::test]
    async fn open_loop_sends_exactly_rate_times_duration() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let r = run(
            &spec(mock.addr(), false),
            Mode::Open {
                rate: 200,
                duration: Duration::from_secs(1),
                connections: 8,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.ok, 200);
        assert_eq!(mock.request_count(), 200);
    }

    #[tokio::test]
    async fn failures_and_unexpected_statuses_are_errors() {
        let mock = MockUpstream::start(MockConfig {
            behavior: Behavior::Status(503),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let r = run(
            &spec(mock.addr(), false),
            Mode::Burst {
                count: 5,
                connects_per_second: 1000,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.ok, 0);
        assert_eq!(r.bad_status, 5);
        let mut s = spec(mock.addr(), false);
        s.expect = |s| s == 503;
        let r = run(
            &s,
            Mode::Burst {
                count: 3,
                connects_per_second: 1000,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.ok, 3);
        assert_eq!(r.statuses.get(&503), Some(&3));

        let closed = MockUpstream::start(MockConfig {
            behavior: Behavior::CloseMidStream,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let r = run(
            &spec(closed.addr(), true),
            Mode::Burst {
                count: 4,
                connects_per_second: 1000,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.io_errors, 4);
    }

    #[tokio::test]
    async fn burst_streams_record_ttfb_and_gaps() {
        let mock = MockUpstream::start(MockConfig {
            response_tokens: 5,
            chunk_gap: Duration::from_millis(2),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let r = run(
            &spec(mock.addr(), true),
            Mode::Burst {
                count: 10,
                connects_per_second: 1000,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.ok, 10);
        assert_eq!(r.ttfb.len(), 10);
        assert!(r.gaps.len() >= 10, "each stream has several frames");
        assert!(r.max_in_flight >= 1 && r.max_in_flight <= 10);
    }
}
