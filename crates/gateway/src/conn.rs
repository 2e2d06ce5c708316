//! Upstream HTTP/1.1 connections, driven by the request that uses them.
//!
//! A pooled client in the usual shape (hyper-util's) runs every connection as a task of its own:
//! the request task hands its request to the connection task through a channel, and the response
//! head and each body chunk come back the same way, so one request costs several cross-task
//! wake-ups, each a trip through the scheduler and often a futex wake of the other worker. Here a
//! request checks a connection out of its provider's [`ConnPool`] and drives the connection
//! itself, in its own task, while it waits for the head and reads the body: reading the socket
//! and reading the body happen in the same poll. When the body has been read to its end the
//! connection goes back to the pool; a body dropped half-read closes its connection, which is
//! also how HTTP/1 cancels a request.
//!
//! An idle connection is not polled. It is checked when it is taken: one whose peer has closed it
//! (or that sat idle longer than the idle timeout) is dropped, and a request that a reused
//! connection refused before sending anything is sent once more on a new connection.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The connector: TCP (TCP_NODELAY, keep-alive, connect timeout), then TLS for `https`.
pub type Connector = HttpsConnector<HttpConnector>;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// One HTTP/1.1 connection: the sending half and the connection future that does its I/O.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    io: Pin<Box<Connection<Io, Full<Bytes>>>>,
    /// The connection future has finished (closed or failed); it must not be polled again.
    ended: bool,
    reused: bool,
}

impl Conn {
    /// Does the connection's pending I/O. Returns whether the connection is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && self.io.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        !self.ended
    }

    /// Whether the connection can take the next request right now.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx) && self.tx.is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one provider (one scheme, host and port).
pub struct ConnPool {
    connector: Connector,
    /// `scheme://authority/`: what the connector dials.
    origin: Uri,
    /// The `Host` header sent with every request.
    pub host: HeaderValue,
    /// One list per serving runtime (see [`set_pool_shard`]), so a connection is only ever
    /// driven by the runtime whose reactor it is registered with.
    idle: Vec<Mutex<Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("origin", &self.origin)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendError(pub String);

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread use idle list `i` of every pool: each serving thread sets its own at start
/// (1, 2, …); every other thread uses 0.
pub fn set_pool_shard(i: usize) {
    SHARD.with(|s| s.set(i));
}

impl ConnPool {
    fn shard(&self) -> &Mutex<Vec<Idle>> {
        let i = SHARD.with(std::cell::Cell::get);
        &self.idle[i % self.idle.len()]
    }

    /// A pool for the origin of `uri`.
    pub fn new(
        connector: Connector,
        uri: &Uri,
        max_idle: usize,
        idle_timeout: Duration,
        shards: usize,
    ) -> Result<ConnPool, String> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("{uri} has no scheme or host"));
        };
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("{uri}: {e}"))?;
        let secure = scheme.as_str() == "https";
        let host = match authority.port_u16() {
            Some(443) if secure => authority.host().to_owned(),
            Some(80) if !secure => authority.host().to_owned(),
            Some(p) => format!("{}:{p}", authority.host()),
            None => authority.host().to_owned(),
        };
        let host = HeaderValue::from_str(&host).map_err(|e| format!("{uri}: {e}"))?;
        Ok(ConnPool {
            connector,
            origin,
            host,
            idle: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
            idle_timeout,
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the response head, driving the
    /// connection meanwhile. The returned body keeps the connection.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let mut conn = match self.take() {
                Some(c) => c,
                None => self.connect().await?,
            };
            let result = {
                let mut response = std::pin::pin!(conn.tx.try_send_request(req));
                poll_fn(|cx| {
                    conn.drive(cx);
                    response.as_mut().poll(cx)
                })
                .await
            };
            match result {
                Ok(res) => {
                    let (parts, body) = res.into_parts();
                    let body = PooledBody {
                        body,
                        conn: Some(conn),
                        pool: Arc::clone(self),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // A reused connection closed before the request went out: try a new one.
                    Some(unsent) if conn.reused => req = unsent,
                    _ => return Err(SendError(error_chain(&e.into_error()))),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and ready.
    fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut entry) = idle.pop() {
            if now.duration_since(entry.since) < self.idle_timeout && entry.conn.reusable() {
                entry.conn.reused = true;
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        // The oldest connections are at the front; those past the idle timeout are closed.
        let expired = idle
            .iter()
            .take_while(|e| now.duration_since(e.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| SendError(error_chain(e.as_ref())))?;
        let (mut tx, io) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError(error_chain(&e)))?;
        let mut io = Box::pin(io);
        let mut ended = false;
        // The first poll makes the connection ask for a request.
        poll_fn(|cx| {
            if !ended && io.as_mut().poll(cx).is_ready() {
                ended = true;
            }
            match tx.poll_ready(cx) {
                Poll::Pending if !ended => Poll::Pending,
                Poll::Pending => Poll::Ready(Err(SendError("connection closed".into()))),
                Poll::Ready(r) => Poll::Ready(r.map_err(|e| SendError(error_chain(&e)))),
            }
        })
        .await?;
        Ok(Conn {
            tx,
            io,
            ended,
            reused: false,
        })
    }
}

/// A response body that drives its connection and returns it to the pool at the end.
pub struct PooledBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<ConnPool>,
}

impl PooledBody {
    /// The next data chunk; `None` at the end of the body.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        if let Some(conn) = &mut self.conn {
            conn.drive(cx);
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(error_chain(&e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }

    /// The body is complete: the connection goes back to the pool while it is open (whether it
    /// is ready for another request is checked when it is taken).
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take()
            && conn.drive(cx)
        {
            self.pool.put(conn);
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pool(url: &str) -> Result<ConnPool, String> {
        let config = tollgate_config::Config::embedded(std::path::Path::new("unused"));
        let connector = crate::upstream::build_connector(&config)?;
        ConnPool::new(
            connector,
            &url.parse().unwrap(),
            4,
            Duration::from_secs(90),
            3,
        )
    }

    #[test]
    fn the_host_header_names_the_port_only_when_it_is_not_the_schemes_default() {
        let host = |url: &str| pool(url).unwrap().host.to_str().unwrap().to_owned();
        assert_eq!(
            host("http://127.0.0.1:8080/v1/chat/completions"),
            "127.0.0.1:8080"
        );
        assert_eq!(host("http://upstream:80/v1/embeddings"), "upstream");
        assert_eq!(
            host(
                "https://x.openai.azure.com:443/openai/deployments/d/chat/completions?api-version=1"
            ),
            "x.openai.azure.com"
        );
        assert_eq!(
            host("https://x.openai.azure.com/openai"),
            "x.openai.azure.com"
        );
        assert_eq!(host("https://api.example:8443/v1"), "api.example:8443");
        assert_eq!(
            pool("https://api.example:8443/v1").unwrap().origin,
            "https://api.example:8443/"
        );
        assert!(
            pool("/v1/chat/completions").is_err(),
            "a path alone has no origin"
        );
    }
}
