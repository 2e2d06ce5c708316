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
//! - `max_requests_per_connection`: the last response says `Connection: close`.
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

/// The timeouts and the request cap of every client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub keep_alive: Duration,
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
            max_requests: server.max_requests_per_connection,
        }
    }
}

/// Serves one accepted connection until it closes, or, once `stop` turns true, until its
/// request in flight is answered.
pub async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(Watched::new(tcp, state.clone(), limits));
    let service = ConnService {
        router,
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

/// The per-connection service: the router, with the peer address, the body deadline, the
/// request cap, and the final shaping of the response.
#[derive(Clone)]
struct ConnService {
    router: Router,
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
        parts.extensions.insert(ConnectInfo(self.peer));
        let method = parts.method.clone();
        let uri = parts.uri.clone();
        let body = Body::new(TimedBody::new(incoming, self.limits.body_read));
        let call = self
            .router
            .clone()
            .oneshot(Request::from_parts(parts, body));
        Box::pin(async move {
            let Ok(res) = call.await;
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
