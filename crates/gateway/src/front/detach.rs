//! Work that must finish even when the client leaves: a future that, dropped before it is done,
//! goes on as a task ([`Detach`]), and the count of such tasks that shutdown waits for
//! ([`Background`]).
//!
//! hyper drops a request's handler when its client goes away, at whatever `.await` it was. What
//! the handler owes from then on (a usage record, reservations to give back) is held by values
//! whose `Drop` hands the unfinished part to [`Background::spawn`]; `Drop` itself never blocks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

/// Tasks that finish work a client left behind, counted so shutdown can wait for them.
/// (Requests in flight are not counted here: shutdown waits for their connections, and past
/// the grace period drops them, which turns what they owe into such tasks.)
#[derive(Default)]
pub struct Background {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

/// Counts as running while it lives.
pub struct Running {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Background {
    /// Runs `work` as a task on the current runtime (the serving thread's own). Outside a runtime
    /// (nothing should drop request state there) the work is lost, and logged.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("Unfinished request work was dropped outside a runtime.");
            return;
        };
        let guard = self.enter();
        handle.spawn(async move {
            let _guard = guard;
            work.await;
        });
    }

    /// Counts the caller as running until the guard is dropped.
    fn enter(&self) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running {
            running: self.running.clone(),
            idle: self.idle.clone(),
        }
    }

    /// Tasks and requests still running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until no task runs, or `limit` has passed; true when idle.
    pub async fn idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.running() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// Whether the client is still there: set when the handler is dropped and its work detached.
#[derive(Clone, Default)]
pub struct Client(Arc<AtomicBool>);

impl Client {
    /// The client has gone away (its request goes on without it).
    pub fn gone(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn leave(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A future polled in place (no task, no hand-off) that, when dropped unfinished, is finished as
/// a [`Background`] task, its output dropped. [`Client::gone`] tells the work it goes on alone.
pub struct Detach<F: Future + Send + 'static>
where
    F::Output: Send,
{
    work: Option<Pin<Box<F>>>,
    client: Client,
    background: Arc<Background>,
}

impl<F: Future + Send + 'static> Detach<F>
where
    F::Output: Send,
{
    pub fn new(background: Arc<Background>, client: Client, work: F) -> Self {
        Self::boxed(background, client, Box::pin(work))
    }

    /// As [`Detach::new`], for work already in a box (a large future is moved once, into its
    /// box, and never again).
    pub fn boxed(background: Arc<Background>, client: Client, work: Pin<Box<F>>) -> Self {
        Detach {
            work: Some(work),
            client,
            background,
        }
    }
}

impl<F: Future + Send + 'static> Future for Detach<F>
where
    F::Output: Send,
{
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(None);
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(out) => {
                self.work = None;
                Poll::Ready(Some(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Future + Send + 'static> Drop for Detach<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            self.client.leave();
            self.background.spawn(async move {
                drop(work.await);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_future_finishes_as_a_counted_task() {
        let background = Arc::new(Background::default());
        let client = Client::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let seen = client.clone();
        let work = Detach::new(background.clone(), client.clone(), async move {
            let _ = rx.await;
            seen.gone()
        });
        // Poll once, then drop it half-way, as hyper drops a handler whose client left.
        let polled = tokio::time::timeout(Duration::from_millis(10), work).await;
        assert!(polled.is_err());
        assert!(client.gone());
        assert_eq!(background.running(), 1);
        tx.send(()).unwrap();
        assert!(background.idle(Duration::from_secs(5)).await);
        assert_eq!(background.running(), 0);
    }

    #[tokio::test]
    async fn a_finished_future_leaves_nothing_behind() {
        let background = Arc::new(Background::default());
        let client = Client::default();
        let out = Detach::new(background.clone(), client.clone(), async { 7 }).await;
        assert_eq!(out, Some(7));
        assert!(!client.gone());
        assert_eq!(background.running(), 0);
    }
}
