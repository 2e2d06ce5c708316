//! Relaying a streamed response: forward events as they arrive, keep the usage, bill exactly once.
//!
//! A task owns the upstream stream and feeds the client's body through a small channel. It
//! forwards each server-sent event unchanged, except the usage chunk that the gateway asked for on
//! the client's behalf, which it keeps for the ledger and strips when the client did not ask for it.
//! The final `data: [DONE]` is held back until the usage record is durable (strict durability).
//! When the client goes away, the task either drains the upstream to its own usage report (within
//! a bound) or cancels it and bills the tokens generated so far, marked estimated.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tollgate_config::DisconnectPolicy;
use tollgate_wire::usage::read_chunk;
use tollgate_wire::{SseSplitter, Usage};

use crate::meter::{Counts, Meter};
use crate::upstream::UpstreamBody;

/// A response body fed by a channel.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts relaying; returns the client's body.
pub fn start(meter: Meter, upstream: UpstreamBody, client_wants_usage: bool) -> ChannelBody {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(meter, upstream, client_wants_usage, tx));
    ChannelBody { rx }
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

async fn run(
    mut meter: Meter,
    mut upstream: UpstreamBody,
    client_wants_usage: bool,
    tx: mpsc::Sender<Bytes>,
) {
    let app = meter.app.clone();
    let idle = Duration::from_millis(app.config.server.upstream_timeout_ms);
    let policy = app.config.metering.on_client_disconnect;
    let drain_for = Duration::from_millis(app.config.metering.drain_timeout_ms);
    let mut splitter = SseSplitter::new();
    let mut text = String::new();
    let mut usage: Option<Usage> = None;
    let mut done: Option<Bytes> = None;
    let mut client_gone: Option<Instant> = None;
    let mut upstream_failed = false;
    'outer: loop {
        let wait = match client_gone {
            Some(since) => drain_for.saturating_sub(since.elapsed()),
            None => idle,
        };
        let piece = match tokio::time::timeout(wait, upstream.next()).await {
            Err(_) => {
                upstream_failed = client_gone.is_none();
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, request = %meter.id, "Upstream stream broke.");
                upstream_failed = true;
                break;
            }
            Ok(Some(Ok(piece))) => piece,
        };
        splitter.push(&piece);
        while let Some(event) = splitter.next_event() {
            if event.is_done() {
                done = Some(event.raw);
                continue;
            }
            let mut forward = Some(event.raw);
            if let Some(data) = &event.data
                && let Some(view) = read_chunk(data, &mut text)
                && let Some(u) = view.usage
            {
                usage = Some(u);
                if !client_wants_usage {
                    forward = if view.choices_empty {
                        None
                    } else if contains(data, b"\"usage\"") {
                        strip_usage(data)
                    } else {
                        forward
                    };
                }
            }
            if client_gone.is_none()
                && let Some(bytes) = forward
                && tx.send(bytes).await.is_err()
            {
                client_gone = Some(Instant::now());
                if policy == DisconnectPolicy::Cancel {
                    break 'outer;
                }
            }
        }
    }
    drop(upstream);
    if let Some(event) = splitter.finish() {
        if event.is_done() {
            done = Some(event.raw);
        } else if let Some(data) = &event.data {
            if let Some(view) = read_chunk(data, &mut text)
                && let Some(u) = view.usage
            {
                usage = Some(u);
            }
            if client_gone.is_none() {
                let _ = tx.send(event.raw).await;
            }
        }
    }
    let counts = match usage {
        Some(u) => Counts::from_usage(&u),
        None => meter.estimate(&text),
    };
    let status = if client_gone.is_some() {
        499
    } else if upstream_failed {
        502
    } else {
        200
    };
    let durable = meter.commit(status, counts, true).await;
    if client_gone.is_none() && durable.is_ok() {
        let tail = done.unwrap_or_else(|| Bytes::from_static(b"data: [DONE]\n\n"));
        if !upstream_failed {
            let _ = tx.send(tail).await;
        }
    }
}
