//! One client connection: HTTP/1.1 served by hyper with the server's timeouts and limits, and
//! the last word on every response (errors in OpenAI's shape, `x-request-id`).
//!
//! What bounds a connection (`[server]` keys):
//! - `header_read_timeout_ms`: from a request's first byte (or the connection's opening, for
//!   its first request) to its last header byte; then the connection is closed;
//! - `body_read_timeout_ms`: the longest pause while the handler reads a request body; then
//!   the body read fails (the handler answers 400) and the connection is closed;
//! - `keep_alive_timeout_ms`: the longest idle time between a response's end and the next
//!   request's first byte; then the connection is closed;
//! - `write_timeout_ms`: the longest a write may wait for a client that does not read (a
//!   stream's reader that stopped, a response nobody takes); then the connection is closed;
//! - `max_requests_per_connection`: the last response says `Connection: close`.
//!
//! Bytes that are not HTTP/1.1 (a TLS handshake, garbage, headers hyper refuses) get hyper's
//! own bare error response; [`Watched`] writes the OpenAI-shaped error in its place (see
//! [`own_error_status`]).
//!
//! The read deadlines live in [`Watched`], the socket wrapper hyper reads from: it knows
//! whether a request is in the handler ([`ConnState::busy`]), so a long response (a stream of
//! minutes) is never cut, while a socket that idles or trickles outside a request is. The body
//! deadline lives in [`TimedBody`], which only runs while the handler waits for the body.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use tollgate_config::ServerConfig;

use crate::app::App;
use crate::routes;

/// The timeouts and the request cap of every client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub keep_alive: Duration,
    /// Longest a write to the client may wait for the client to read.
    pub write: Duration,
    /// 0 = no limit.
    pub max_requests: u64,
}

impl Limits {
    /// The limits configured in `[server]`.
    pub fn of(server: &ServerConfig) -> Self {
        Self {
            header_read: Duration::from_millis(server.header_read_timeout_ms),
            body_read: Duration::from_millis(server.body_read_timeout_ms),
            keep_alive: Duration::from_millis(server.keep_alive_timeout_ms),
            write: Duration::from_millis(server.write_timeout_ms),
            max_requests: server.max_requests_per_connection,
        }
    }
}

/// What answers a connection's requests: the front doors' requests straight through their
/// handlers ([`routes::direct`]), everything else through the router.
#[derive(Clone)]
pub struct Handlers {
    pub app: Arc<App>,
    pub router: Router,
}

/// Serves one accepted connection until it closes, or, once `stop` turns true, until its
/// request in flight is answered.
pub async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    handlers: Handlers,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(Watched::new(tcp, state.clone(), limits));
    let service = ConnService {
        handlers,
        peer,
        state,
        limits,
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "Client connection ended with an error.");
    }
}

/// What the service and the socket wrapper of one connection share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests in the handler or whose response is still being sent.
    busy: AtomicUsize,
    /// Requests received so far.
    requests: AtomicU64,
    /// The connection task, when its read waits without a deadline for a request to finish:
    /// woken when none is left, so the keep-alive deadline starts.
    reader: Mutex<Option<Waker>>,
}

/// Marks a request as in flight until dropped (with its response body, or with the handler
/// when the client leaves first).
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Self {
        state.busy.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut reader) = self.0.reader.lock()
            && let Some(waker) = reader.take()
        {
            waker.wake();
        }
    }
}

/// The per-connection service: the handlers, with the peer address, the body deadline, the
/// request cap, and the final shaping of the response.
#[derive(Clone)]
struct ConnService {
    handlers: Handlers,
    peer: SocketAddr,
    state: Arc<ConnState>,
    limits: Limits,
}

type ServedFuture = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = ServedFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.state.clone());
        let n = self.state.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let last = self.limits.max_requests != 0 && n >= self.limits.max_requests;
        let (mut parts, incoming) = req.into_parts();
        let method = parts.method.clone();
        let uri = parts.uri.clone();
        let body = Body::new(TimedBody::new(incoming, self.limits.body_read));
        let peer = self.peer;
        let handlers = self.handlers.clone();
        Box::pin(async move {
            let res = if let Some(direct) = routes::direct(&parts.method, parts.uri.path()) {
                // The hot path: the handler the router has for these routes, without the
                // routing, its extensions and its boxed futures.
                routes::serve_direct(
                    handlers.app,
                    direct,
                    peer,
                    parts.uri.path(),
                    parts.headers,
                    body,
                )
                .await
            } else {
                parts.extensions.insert(ConnectInfo(peer));
                let Ok(res) = handlers
                    .router
                    .oneshot(Request::from_parts(parts, body))
                    .await;
                res
            };
            let mut res = crate::shape::finish(&method, &uri, res).await;
            if last {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(res.map(|inner| Tracked { inner, _busy: busy }))
        })
    }
}

/// A response body that keeps its request marked busy until it is sent or dropped.
pub struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error of a body read that waited longer than `body_read_timeout_ms` for the next chunk.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of the request body for {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body whose reader gets an error once the client pauses longer than `idle`
/// between two chunks. The clock runs only while someone waits for the body.
pub struct TimedBody {
    inner: Incoming,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    expired: bool,
}

impl TimedBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            sleep: None,
            armed: false,
            expired: false,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let idle = this.idle;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if !this.armed {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                if sleep.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a connection's reads stand, for the deadline that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadPhase {
    /// Between requests: the keep-alive deadline.
    Idle,
    /// A request's head is arriving: the header deadline.
    Head,
    /// A request is in the handler: no deadline here (the body has its own).
    Busy,
}

/// The client socket with read deadlines that depend on the connection's phase.
pub struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    limits: Limits,
    phase: ReadPhase,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The write deadline, armed while a write waits for the client.
    write_sleep: Option<Pin<Box<Sleep>>>,
    write_armed: bool,
    /// An OpenAI-shaped error being written in place of hyper's own, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl Watched {
    fn new(inner: TcpStream, state: Arc<ConnState>, limits: Limits) -> Self {
        Self {
            inner,
            state,
            limits,
            // The first request's headers are due within the header timeout of the opening.
            phase: ReadPhase::Head,
            deadline: Instant::now() + limits.header_read,
            sleep: None,
            write_sleep: None,
            write_armed: false,
            replacement: None,
        }
    }

    /// A write made progress: the write deadline starts again at the next wait.
    fn wrote(&mut self) {
        self.write_armed = false;
    }

    /// A write waits for the client: pending until the write deadline, then an error.
    fn write_waits(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = Instant::now() + self.limits.write;
        let sleep = match &mut self.write_sleep {
            Some(sleep) => {
                if !self.write_armed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .write_sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.write_armed = true;
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its response in time",
            )));
        }
        Poll::Pending
    }

    /// Writes what is left of the replacement error; `Ready(Ok(()))` once all of it is out.
    fn write_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some((bytes, sent)) = &self.replacement else {
                return Poll::Ready(Ok(()));
            };
            if *sent == bytes.len() {
                self.replacement = None;
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    if let Some((_, sent)) = &mut self.replacement {
                        *sent += n;
                    }
                    self.wrote();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.write_waits(cx).map_ok(|_| ()),
            }
        }
    }

    /// When `head` is hyper's own error response (no request reached the service, so it has no
    /// `x-request-id`), starts writing the OpenAI-shaped one instead; true when it did.
    fn replace_own_error(&mut self, head: &[u8]) -> bool {
        if self.replacement.is_some() || self.state.busy.load(Ordering::Acquire) > 0 {
            return self.replacement.is_some();
        }
        match own_error_status(head) {
            Some(status) => {
                self.replacement = Some((shaped_error(status), 0));
                true
            }
            None => false,
        }
    }

    /// Moves to the phase the service's state implies.
    fn update_phase(&mut self) {
        if self.state.busy.load(Ordering::Acquire) > 0 {
            self.phase = ReadPhase::Busy;
        } else if self.phase == ReadPhase::Busy {
            self.phase = ReadPhase::Idle;
            self.deadline = Instant::now() + self.limits.keep_alive;
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.update_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase == ReadPhase::Idle {
                    this.phase = ReadPhase::Head;
                    this.deadline = Instant::now() + this.limits.header_read;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase == ReadPhase::Busy {
                    if let Ok(mut reader) = this.state.reader.lock() {
                        reader.replace(cx.waker().clone());
                    }
                    // The request may have finished meanwhile: look again.
                    if this.state.busy.load(Ordering::Acquire) > 0 {
                        return Poll::Pending;
                    }
                    this.update_phase();
                }
                let deadline = this.deadline;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if sleep.deadline() != deadline {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.phase {
                    // An idle keep-alive connection ends as if the client had closed it.
                    ReadPhase::Idle => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request headers not received in time",
                    ))),
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replace_own_error(buf) {
            // hyper's bytes count as written once the replacement is out.
            return this.write_replacement(cx).map_ok(|()| buf.len());
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(done) => {
                this.wrote();
                Poll::Ready(done)
            }
            Poll::Pending => this.write_waits(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.replace_own_error(first)
        {
            let all = bufs.iter().map(|b| b.len()).sum();
            return this.write_replacement(cx).map_ok(|()| all);
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(done) => {
                this.wrote();
                Poll::Ready(done)
            }
            Poll::Pending => this.write_waits(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.write_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            waiting_or_failed => waiting_or_failed,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.write_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            waiting_or_failed => waiting_or_failed,
        }
    }
}

/// The status of `head` when it is a whole error response head written by hyper itself: it
/// starts with `HTTP/1.1 4xx` or `5xx`, ends within the buffer, and has no `x-request-id`
/// (every response of the service has one, see [`crate::shape`]).
fn own_error_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let code = rest.get(..3)?;
    if !matches!(code[0], b'4' | b'5') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let has_id = head[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 13 && line[..13].eq_ignore_ascii_case(b"x-request-id:"));
    if has_id {
        return None;
    }
    Some(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// The response written instead of hyper's own error: the same status, OpenAI's error object,
/// an `x-request-id`, and `Connection: close` (hyper closes the connection after it).
fn shaped_error(status: u16) -> Vec<u8> {
    let message = match status {
        414 => "The request URI is too long.",
        431 => "The request's header fields are too large.",
        505 => "The HTTP version is not supported: send HTTP/1.1.",
        _ => "The request is not valid HTTP/1.1: its request line or headers could not be parsed.",
    };
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": null,
        "code": "bad_request",
    }})
    .to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let id = crate::front::admit::new_request_id(time::OffsetDateTime::now_utc());
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_heads_without_a_request_id_are_hyper_s_own() {
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(own_error_status(own), Some(400));
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n";
        assert_eq!(own_error_status(big), Some(431));
        let ours = b"HTTP/1.1 400 Bad Request\r\nX-Request-Id: req_1\r\n\r\n{}";
        assert_eq!(own_error_status(ours), None);
        assert_eq!(own_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(own_error_status(b"HTTP/1.1 400 Bad"), None);
        assert_eq!(own_error_status(b"data: HTTP/1.1 400\r\n\r\n"), None);
    }

    #[test]
    fn the_replacement_is_an_openai_error() {
        let bytes = shaped_error(400);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nx-request-id: "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
