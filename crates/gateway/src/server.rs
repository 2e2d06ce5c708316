//! Serving: the listener (TCP_NODELAY on every accepted socket), graceful shutdown that drains
//! in-flight requests and then the ledger writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::{App, router};

/// Binds the configured address.
pub async fn bind(app: &App) -> std::io::Result<TcpListener> {
    TcpListener::bind(&app.config.server.listen).await
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (up to the grace
/// period) and waits for the ledger to be durable.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "Could not set TCP_NODELAY.");
        }
    });
    let service = router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let handle = tokio::spawn(async move { server.await });
    let _ = rx.await;
    tracing::info!("Shutting down: draining in-flight requests.");
    match tokio::time::timeout(grace, handle).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => tracing::error!(error = %e, "Server task failed."),
        Err(_) => tracing::warn!("Grace period over; closing remaining connections."),
    }
    if let Err(error) = app.ledger.flush().await {
        tracing::error!(%error, "Ledger flush at shutdown failed.");
    }
    app.guard.persist(&app.store).await;
    Ok(())
}
