//! Relaying a streamed response: forward events as they arrive, keep the usage, bill exactly once.
//!
//! The client's response body is a [`RelayBody`]: each time the server asks it for the next
//! frame it reads the upstream (driving the upstream connection in the same poll, see `conn`),
//! splits server-sent events and hands them on, so a chunk crosses no task or channel on its way.
//! It forwards each event unchanged, except the usage chunk that the gateway asked for on the
//! client's behalf, which it keeps for the ledger and strips when the client did not ask for it.
//! The final `data: [DONE]` is held back until the usage record is durable (strict durability).
//!
//! When the client goes away the server drops the body; the drop hands the stream to a task that
//! either drains the upstream to its own usage report (within a bound) or cancels it and bills the
//! tokens generated so far, marked estimated. A record whose commit had already begun is finished
//! by a task too, so dropping the body never loses a record.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tollgate_config::DisconnectPolicy;
use tollgate_wire::usage::read_chunk;
use tollgate_wire::{SseSplitter, Usage};

use crate::app::App;
use crate::error::ApiError;
use crate::front::admit::{Admission, CLIENT_LEFT, Counts};
use crate::upstream::UpstreamBody;

type Commit = Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send>>;

/// What the stream has seen so far: the splitter's state, the generated text, the usage.
struct Relay {
    splitter: SseSplitter,
    text: String,
    usage: Option<Usage>,
    done: Option<Bytes>,
    client_wants_usage: bool,
    /// Streams in another API (Responses, Messages) relayed unchanged: how their usage is read.
    dialect: Option<crate::dialect::StreamDialect>,
}

impl Relay {
    fn new(client_wants_usage: bool) -> Relay {
        Relay {
            splitter: SseSplitter::new(),
            text: String::new(),
            usage: None,
            done: None,
            client_wants_usage,
            dialect: None,
        }
    }

    /// Feeds a piece of the upstream body; the events to forward go to `out`.
    fn feed(&mut self, piece: &[u8], out: &mut VecDeque<Bytes>) {
        self.splitter.push(piece);
        while let Some(event) = self.splitter.next_event() {
            if event.is_done() {
                self.done = Some(event.raw);
                continue;
            }
            if let (Some(dialect), Some(data)) = (&mut self.dialect, &event.data) {
                if let Some(u) = dialect.observe(data, &mut self.text) {
                    self.usage = Some(u);
                }
                if dialect.is_final(data) {
                    self.done = Some(event.raw);
                } else {
                    out.push_back(event.raw);
                }
                continue;
            }
            let mut forward = Some(event.raw);
            if let Some(data) = &event.data
                && let Some(view) = read_chunk(data, &mut self.text)
                && let Some(u) = view.usage
            {
                self.usage = Some(u);
                if !self.client_wants_usage {
                    forward = if view.choices_empty {
                        None
                    } else if contains(data, b"\"usage\"") {
                        strip_usage(data)
                    } else {
                        forward
                    };
                }
            }
            if let Some(bytes) = forward {
                out.push_back(bytes);
            }
        }
    }

    /// The upstream has ended: an unterminated last event is read (and forwarded to `out`).
    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        if let Some(event) = self.splitter.finish() {
            if event.is_done() {
                self.done = Some(event.raw);
            } else if let (Some(dialect), Some(data)) = (&mut self.dialect, &event.data) {
                if let Some(u) = dialect.observe(data, &mut self.text) {
                    self.usage = Some(u);
                }
                out.push_back(event.raw);
            } else if let Some(data) = &event.data {
                if let Some(view) = read_chunk(data, &mut self.text)
                    && let Some(u) = view.usage
                {
                    self.usage = Some(u);
                }
                out.push_back(event.raw);
            }
        }
    }

    /// The upstream's own usage, else the tokenizer's count of what was generated.
    async fn counts(self, admission: &Admission) -> Counts {
        match &self.usage {
            Some(u) => Counts::from_usage(u),
            None => admission.estimate(self.text).await,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Removes the `usage` member from a chunk that also carries choices.
fn strip_usage(data: &[u8]) -> Option<Bytes> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(data).ok()?;
    v.remove("usage");
    let mut out = b"data: ".to_vec();
    serde_json::to_writer(&mut out, &v).ok()?;
    out.extend_from_slice(b"\n\n");
    Some(Bytes::from(out))
}

enum Phase {
    /// Reading the upstream.
    Reading,
    /// The upstream has ended; the usage record is being committed.
    Committing(Commit),
    /// Everything has been sent.
    Done,
}

/// The client's body of a streamed response.
pub struct RelayBody {
    relay: Relay,
    upstream: Option<UpstreamBody>,
    admission: Option<Admission>,
    /// Where a task finishes the stream if the client leaves.
    app: Option<Arc<App>>,
    out: VecDeque<Bytes>,
    phase: Phase,
    upstream_failed: bool,
    /// The upstream must send something at least this often.
    idle: Duration,
    /// When the upstream's silence becomes a failure (moved on by each piece; the timer is
    /// re-armed only when it fires early).
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
}

/// Starts relaying; returns the client's body.
pub fn start(
    admission: Admission,
    upstream: UpstreamBody,
    client_wants_usage: bool,
    idle: Duration,
) -> RelayBody {
    let deadline = Instant::now() + idle;
    RelayBody {
        relay: Relay::new(client_wants_usage),
        upstream: Some(upstream),
        app: admission.app().cloned(),
        admission: Some(admission),
        out: VecDeque::new(),
        phase: Phase::Reading,
        upstream_failed: false,
        idle,
        deadline,
        timer: Box::pin(tokio::time::sleep_until(deadline)),
    }
}

impl RelayBody {
    /// Reads a stream in another API (Responses, Messages) relayed unchanged: its usage comes
    /// from its own events, and its final event waits for the usage record like `[DONE]`.
    pub fn reading(mut self, dialect: Option<crate::dialect::StreamDialect>) -> RelayBody {
        self.relay.dialect = dialect;
        self
    }

    /// The upstream has ended (or failed, or fell silent): read its last event and start the
    /// commit.
    fn end_upstream(&mut self) {
        self.upstream = None;
        self.relay.finish(&mut self.out);
        let Some(admission) = self.admission.take() else {
            self.phase = Phase::Done;
            return;
        };
        let seen = Relay {
            splitter: SseSplitter::new(),
            text: std::mem::take(&mut self.relay.text),
            usage: self.relay.usage.take(),
            done: None,
            client_wants_usage: false,
            dialect: None,
        };
        let status = if self.upstream_failed { 502 } else { 200 };
        self.phase = Phase::Committing(Box::pin(async move {
            let counts = seen.counts(&admission).await;
            admission.commit(status, counts).await
        }));
    }

    /// Whether the upstream has been silent past its deadline.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return true;
            }
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match &mut this.phase {
                Phase::Reading => {
                    let Some(upstream) = &mut this.upstream else {
                        this.end_upstream();
                        continue;
                    };
                    match upstream.poll_next(cx) {
                        Poll::Ready(Some(Ok(piece))) => {
                            this.deadline = Instant::now() + this.idle;
                            this.relay.feed(&piece, &mut this.out);
                        }
                        Poll::Ready(Some(Err(error))) => {
                            let request = this.admission.as_ref().map(Admission::id);
                            tracing::warn!(%error, request, "Upstream stream broke.");
                            this.upstream_failed = true;
                            this.end_upstream();
                        }
                        Poll::Ready(None) => this.end_upstream(),
                        Poll::Pending => {
                            if !this.timed_out(cx) {
                                return Poll::Pending;
                            }
                            this.upstream_failed = true;
                            this.end_upstream();
                        }
                    }
                }
                Phase::Committing(commit) => {
                    let durable = match commit.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r.is_ok(),
                    };
                    this.phase = Phase::Done;
                    if durable && !this.upstream_failed {
                        let tail = this
                            .relay
                            .done
                            .take()
                            .unwrap_or_else(|| Bytes::from_static(b"data: [DONE]\n\n"));
                        this.out.push_back(tail);
                    }
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let task: Pin<Box<dyn Future<Output = ()> + Send>> = match phase {
            Phase::Done => return,
            // The commit has begun: finish it (the client's leaving does not undo the answer).
            Phase::Committing(commit) => Box::pin(async move {
                let _ = commit.await;
            }),
            // The client left mid-stream.
            Phase::Reading => {
                let Some(admission) = self.admission.take() else {
                    return;
                };
                let relay = std::mem::replace(&mut self.relay, Relay::new(false));
                Box::pin(after_client_left(admission, relay, self.upstream.take()))
            }
        };
        match &self.app {
            Some(app) => app.background.spawn(task),
            None => tracing::error!("A stream's usage could not be recorded: no application."),
        }
    }
}

/// The client went away mid-stream: drain the upstream to its usage report (within
/// `metering.drain_timeout_ms`) or cancel it, then bill the request once with status 499.
async fn after_client_left(admission: Admission, mut relay: Relay, upstream: Option<UpstreamBody>) {
    let Some(app) = admission.app().cloned() else {
        return;
    };
    let mut discard = VecDeque::new();
    if let Some(mut upstream) = upstream
        && app.config.metering.on_client_disconnect == DisconnectPolicy::Drain
    {
        let drain_for = Duration::from_millis(app.config.metering.drain_timeout_ms);
        let _ = tokio::time::timeout(drain_for, async {
            while let Some(Ok(piece)) = upstream.next().await {
                relay.feed(&piece, &mut discard);
                discard.clear();
            }
        })
        .await;
    }
    relay.finish(&mut discard);
    let counts = relay.counts(&admission).await;
    let _ = admission.commit(CLIENT_LEFT, counts).await;
}
