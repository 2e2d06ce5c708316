//! Serving: one single-threaded runtime per serving thread (`server.threads`, default one per
//! CPU core), each accepting on its own socket bound to the listening address with
//! `SO_REUSEPORT`, so the kernel spreads new connections evenly over the threads; TCP_NODELAY on
//! every accepted socket; graceful shutdown that drains in-flight requests on every thread and
//! then the ledger writer.
//!
//! Client connections are capped over all threads (`server.max_connections`, kept below the
//! file-descriptor limit, whose soft value is raised to the hard one at start): one more is
//! accepted and closed at once, so the listening queue never fills and `/healthz` answers as
//! soon as a slot is free. Each connection's timeouts and request cap are in
//! [`crate::downstream`].
//!
//! A request lives on the thread that accepted its connection: its task, its timers and its
//! upstream connection (each thread keeps its own idle connections, see
//! [`crate::conn::set_pool_shard`]) never leave that thread, so no request pays a cross-thread
//! wake-up or a work-stealing sibling being woken for nothing, as on a multi-threaded runtime.
//! The runtime that called [`serve`] keeps the background work (change feed, snapshots, guard
//! events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::app::App;
use crate::downstream::{self, Handlers, Limits};
use crate::routes::router;

/// Binds the configured address (see [`listen`]).
pub async fn bind(app: &App) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(&app.config.server.listen)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the listen address resolves to nothing"))?;
    listen(addr)
}

/// A listening socket on `addr` that the serving threads can share the port of: with
/// `SO_REUSEPORT` set before binding (where the platform has it), [`serve`] binds one more
/// socket per extra thread to the same address. Must be called within a tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // A port another process listens on must be an error, not shared: bind it once without
    // SO_REUSEPORT first.
    if addr.port() != 0 {
        new_socket(addr, false)?.bind(addr)?;
    }
    let socket = socket_for(addr)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A socket for a serving thread: `SO_REUSEPORT` where the platform has it.
fn socket_for(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    new_socket(addr, true)
}

fn new_socket(addr: SocketAddr, share_port: bool) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    if share_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(all(unix, not(target_os = "solaris"), not(target_os = "illumos"))))]
    let _ = share_port;
    Ok(socket)
}

/// One socket per serving thread: the given one first, then as many more bound to its address
/// as the port can be shared; when it cannot (a listener made without `SO_REUSEPORT`), the
/// remaining threads accept from a duplicate of the first.
fn sockets(listener: TcpListener, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addr = listener.local_addr()?;
    let first = listener.into_std()?;
    let mut all = Vec::with_capacity(threads);
    for _ in 1..threads {
        let own = socket_for(addr)
            .and_then(|s| {
                s.bind(addr)?;
                s.listen(1024)
            })
            .and_then(TcpListener::into_std);
        match own {
            Ok(socket) => all.push(socket),
            Err(error) => {
                tracing::debug!(%error, "Port not shareable; serving threads share one socket.");
                all.push(first.try_clone()?);
            }
        }
    }
    all.insert(0, first);
    Ok(all)
}

/// What the main runtime tells the serving threads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// Stop accepting; finish the requests in flight.
    Draining,
    /// Drop what is left (grace period over).
    Closing,
    /// The ledger is flushed: stop the runtimes.
    Done,
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (up to the grace
/// period) and waits for the ledger to be durable.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let threads = app.config.server.serving_threads();
    let sockets = sockets(listener, threads)?;
    let open = Arc::new(OpenConnections::new(connection_cap(
        app.config.server.max_connections,
    )));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut drained = Vec::with_capacity(threads);
    let mut joins = Vec::with_capacity(threads);
    for (i, socket) in sockets.into_iter().enumerate() {
        let app = app.clone();
        let phase = phase_rx.clone();
        let open = open.clone();
        let (done_tx, done_rx) = oneshot::channel();
        drained.push(done_rx);
        let join = std::thread::Builder::new()
            .name(format!("tollgate-serve-{i}"))
            .spawn(move || serving_thread(i + 1, app, socket, phase, done_tx, open))?;
        joins.push(join);
    }
    shutdown.await;
    tracing::info!("Shutting down: draining in-flight requests.");
    let _ = phase_tx.send(Phase::Draining);
    let all_drained = async {
        for done in drained {
            let _ = done.await;
        }
    };
    tokio::pin!(all_drained);
    if tokio::time::timeout(grace, &mut all_drained).await.is_err() {
        tracing::warn!("Grace period over; closing remaining connections.");
        // Each serving thread drops its connections (their requests as if the clients had
        // left, so what they owe becomes `Background` tasks) and then reports.
        let _ = phase_tx.send(Phase::Closing);
        all_drained.await;
    }
    // The serving runtimes stay up until the ledger is flushed: requests whose client left (or
    // that the grace period cut off) are finished by tasks on them, and connections they opened
    // (PostgreSQL, Redis) run there.
    let finish_for = Duration::from_millis(app.config.metering.drain_timeout_ms).max(grace);
    if !app.background.idle(finish_for).await {
        tracing::warn!(
            running = app.background.running(),
            "Shutdown: some abandoned requests were not finished in time."
        );
    }
    if let Err(error) = app.ledger.flush().await {
        tracing::error!(%error, "Ledger flush at shutdown failed.");
    }
    app.guard.persist(&app.store).await;
    if app.telemetry.is_some() {
        // The spans still queued go out before the process ends (the export blocks).
        let traced = app.clone();
        let exported = tokio::task::spawn_blocking(move || {
            traced
                .telemetry
                .as_ref()
                .map(crate::telemetry::Telemetry::shutdown)
        });
        if let Ok(Some(Err(error))) = exported.await {
            tracing::warn!(%error, "Trace export at shutdown failed.");
        }
    }
    let _ = phase_tx.send(Phase::Done);
    let joined = tokio::task::spawn_blocking(move || {
        for join in joins {
            if join.join().is_err() {
                tracing::error!("A serving thread panicked.");
            }
        }
    });
    let _ = joined.await;
    Ok(())
}

/// One serving thread: its runtime accepts and serves until told to drain, reports when its
/// connections are done, and stops once the main runtime is done with shutdown.
fn serving_thread(
    shard: usize,
    app: Arc<App>,
    socket: std::net::TcpListener,
    mut phase: watch::Receiver<Phase>,
    drained: oneshot::Sender<()>,
    open: Arc<OpenConnections>,
) {
    crate::conn::set_pool_shard(shard);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "Cannot start a serving runtime.");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(error) => {
                tracing::error!(%error, "Cannot register the listening socket.");
                return;
            }
        };
        let limits = Limits::of(&app.config.server);
        let handlers = Handlers {
            router: router(app.clone()),
            app,
        };
        let mut connections = JoinSet::new();
        let mut until_closing = phase.clone();
        let closing = tokio::select! {
            () = accept_until_draining(listener, handlers, limits, open, phase.clone(), &mut connections) => false,
            _ = until_closing.wait_for(|p| matches!(p, Phase::Closing | Phase::Done)) => true,
        };
        if closing {
            // Grace period over: drop every connection and wait until each is gone, so the
            // work their requests leave behind is counted before shutdown waits for it.
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        let _ = drained.send(());
        let _ = phase.wait_for(|p| *p == Phase::Done).await;
    });
}

/// Accepts connections until the phase leaves `Serving`, then asks every open connection to
/// finish its request in flight and waits for them all.
async fn accept_until_draining(
    listener: TcpListener,
    handlers: Handlers,
    limits: Limits,
    open: Arc<OpenConnections>,
    mut phase: watch::Receiver<Phase>,
    connections: &mut JoinSet<()>,
) {
    // Every connection task holds a receiver of `stop`, which asks it to finish its request in
    // flight and close.
    let (stop_tx, stop_rx) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Serving) => break,
            // Reap the connections that ended (a task's slot in the set is freed when joined).
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Over the cap: closed at once, before any byte is read or buffer allocated.
                let Some(slot) = open.take() else {
                    tracing::debug!(%peer, "Connection refused: too many open connections.");
                    drop(tcp);
                    continue;
                };
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "Could not set TCP_NODELAY.");
                }
                let handlers = handlers.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    downstream::serve_connection(tcp, peer, handlers, limits, stop).await;
                });
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(%error, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Errors of one connection (the peer left before it was accepted), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The count of client connections open over all serving threads, and its cap.
#[derive(Debug)]
pub struct OpenConnections {
    count: AtomicUsize,
    max: usize,
}

impl OpenConnections {
    /// A counter capped at `max`.
    pub fn new(max: usize) -> Self {
        Self {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// A slot for one more connection, or `None` when `max` are open.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One open connection's place in [`OpenConnections`], given back on drop.
struct Slot(Arc<OpenConnections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// File descriptors kept for everything but client connections (storage, spool, logs).
const RESERVED_FDS: u64 = 256;

/// The connection cap in force: `server.max_connections`, lowered so that client connections
/// and as many upstream connections fit in the process's file-descriptor limit with
/// [`RESERVED_FDS`] to spare. Raises the soft limit to the hard one first (on Unix).
pub fn connection_cap(configured: usize) -> usize {
    let Some(fds) = raise_fd_limit() else {
        return configured;
    };
    let fit = usize::try_from(fds.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX);
    if configured > fit {
        tracing::warn!(
            configured,
            fd_limit = fds,
            cap = fit.max(1),
            "server.max_connections lowered to fit the file-descriptor limit."
        );
    }
    configured.min(fit).max(1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force after,
/// or `None` when it is unlimited or unknown.
#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "Could not raise the file-descriptor limit.");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        let cap = connection_cap(usize::MAX);
        #[cfg(unix)]
        {
            let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX);
            assert!((cap as u64) <= soft.saturating_sub(RESERVED_FDS) / 2 || cap == 1);
        }
        assert_eq!(connection_cap(3), 3);
        assert!(connection_cap(0) >= 1);
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let open = Arc::new(OpenConnections::new(2));
        let a = open.take().unwrap();
        let _b = open.take().unwrap();
        assert!(open.take().is_none());
        assert_eq!(open.open(), 2);
        drop(a);
        assert!(open.take().is_some());
    }
}
