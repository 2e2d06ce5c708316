//! Response bodies: a whole buffer, a truncated buffer (for `CloseMidStream`), or a lazily
//! rendered SSE stream with optional delays, split writes and keep-alive comments.

use crate::render::{self, Api, Usage};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The body type of every mock response.
pub(crate) enum MockBody {
    /// The whole body in one frame.
    Full(Option<Bytes>),
    /// Sends these bytes, lets hyper flush them, then fails so the connection is dropped.
    Truncated(Option<Bytes>, bool),
    /// A server-sent-events stream.
    Sse(Box<SseBody>),
    /// Pre-rendered events (the Responses and Messages streams).
    Events(Box<EventsBody>),
}

impl MockBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        MockBody::Full(Some(bytes))
    }
}

fn aborted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "tollgate-mock: closing the connection mid-response",
    )
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Truncated(b, flushed) => match b.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if !*flushed => {
                    // Pending makes hyper flush the partial body before the abort.
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(Some(Err(aborted()))),
            },
            MockBody::Sse(s) => s.poll_next(cx),
            MockBody::Events(e) => e.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A stream of pre-rendered events, with the configured gap between them; with
/// `close_mid_stream` the connection drops after half of them.
pub(crate) struct EventsBody {
    events: VecDeque<Bytes>,
    gap: Duration,
    sent: usize,
    close_at: Option<usize>,
    close_flushed: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl EventsBody {
    pub(crate) fn new(events: Vec<Bytes>, gap: Duration, close_mid_stream: bool) -> Self {
        let close_at = close_mid_stream.then_some(events.len() / 2);
        EventsBody {
            events: events.into(),
            gap,
            sent: 0,
            close_at,
            close_flushed: false,
            sleep: None,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.close_at == Some(self.sent) {
            if !self.close_flushed {
                self.close_flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.close_at = None;
            self.events.clear();
            return Poll::Ready(Some(Err(aborted())));
        }
        if self.sent > 0 && !self.gap.is_zero() && !self.events.is_empty() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.gap)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        match self.events.pop_front() {
            Some(e) => {
                self.sent += 1;
                Poll::Ready(Some(Ok(Frame::data(e))))
            }
            None => Poll::Ready(None),
        }
    }
}

/// Everything needed to render one stream.
pub(crate) struct StreamPlan {
    pub api: Api,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[`
    pub prefix: Bytes,
    pub n: u32,
    /// Content tokens per choice.
    pub tokens: u64,
    /// Content chunks per choice.
    pub chunks: u64,
    /// Put `"usage":null` on chunks that carry no usage (OpenAI does when include_usage is set).
    pub usage_null: bool,
    /// Put the running usage on every chunk (vLLM continuous usage stats).
    pub every_chunk: bool,
    /// Send the final `"choices":[]` usage chunk.
    pub final_usage: bool,
    pub prompt: u64,
    pub cached: u64,
    pub reasoning: u64,
    pub gap: Duration,
    pub split_writes: bool,
    pub keepalive_comments: bool,
    /// Drop the connection instead of sending the event with this index.
    pub close_mid_stream: bool,
}

impl StreamPlan {
    /// Steps per choice: chat has a role chunk, content chunks and a finish chunk;
    /// legacy completions have content chunks and a finish chunk.
    fn steps(&self) -> u64 {
        match self.api {
            Api::Chat => self.chunks + 2,
            Api::Text => self.chunks + 1,
        }
    }

    /// Total number of SSE events including `[DONE]`.
    pub(crate) fn total_events(&self) -> u64 {
        self.steps() * u64::from(self.n) + u64::from(self.final_usage) + 1
    }

    /// Tokens carried by content chunk `i` (0-based) of one choice.
    fn chunk_tokens(&self, i: u64) -> u64 {
        if self.chunks == 0 {
            return 0;
        }
        let base = self.tokens / self.chunks;
        let rest = self.tokens % self.chunks;
        base + u64::from(i < rest)
    }
}

/// A lazily rendered SSE stream.
pub(crate) struct SseBody {
    plan: StreamPlan,
    total: u64,
    next: u64,
    close_at: Option<u64>,
    close_flushed: bool,
    emitted_tokens: u64,
    pieces: VecDeque<Bytes>,
    flush_before_next_piece: bool,
    gap_waited: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

const KEEPALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

impl SseBody {
    pub(crate) fn new(plan: StreamPlan) -> Self {
        let total = plan.total_events();
        let close_at = plan.close_mid_stream.then_some(total / 2);
        SseBody {
            plan,
            total,
            next: 0,
            close_at,
            close_flushed: false,
            emitted_tokens: 0,
            pieces: VecDeque::new(),
            flush_before_next_piece: false,
            gap_waited: false,
            sleep: None,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            if self.flush_before_next_piece && !self.pieces.is_empty() {
                // Returning Pending makes hyper flush what it has buffered, so each piece
                // goes out in its own write.
                self.flush_before_next_piece = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(piece) = self.pieces.pop_front() {
                self.flush_before_next_piece = self.plan.split_writes;
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            if self.next >= self.total {
                return Poll::Ready(None);
            }
            if self.close_at == Some(self.next) {
                if !self.close_flushed {
                    // Pending makes hyper flush the events sent so far before the abort.
                    self.close_flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.close_at = None;
                self.next = self.total;
                return Poll::Ready(Some(Err(aborted())));
            }
            if self.next > 0 && !self.plan.gap.is_zero() && !self.gap_waited {
                self.gap_waited = true;
                self.sleep = Some(Box::pin(tokio::time::sleep(self.plan.gap)));
                continue;
            }
            self.gap_waited = false;
            if self.next > 0 && self.plan.keepalive_comments {
                self.push_event(Bytes::from_static(KEEPALIVE));
            }
            let event = self.render(self.next);
            self.next += 1;
            self.push_event(event);
        }
    }

    /// Queues one event, split in pieces when `split_writes` is on: the cuts fall inside
    /// `data:`, in the middle of the JSON and between the two terminating newlines.
    fn push_event(&mut self, event: Bytes) {
        let len = event.len();
        if !self.plan.split_writes || len < 8 {
            self.pieces.push_back(event);
            return;
        }
        let cuts = [0, 3, len / 2, len - 1, len];
        for w in cuts.windows(2) {
            self.pieces.push_back(event.slice(w[0]..w[1]));
        }
    }

    fn usage_now(&self, completion: u64) -> Usage {
        Usage {
            prompt: self.plan.prompt,
            completion,
            cached: self.plan.cached,
            reasoning: self.plan.reasoning,
        }
    }

    fn full_completion(&self) -> u64 {
        self.plan.tokens * u64::from(self.plan.n) + self.plan.reasoning
    }

    /// Renders event `e`.
    fn render(&mut self, e: u64) -> Bytes {
        let p = &self.plan;
        let n = u64::from(p.n);
        let step_events = p.steps() * n;
        if e == self.total - 1 {
            return Bytes::from_static(DONE);
        }
        let mut buf = Vec::with_capacity(p.prefix.len() + 256);
        buf.extend_from_slice(&p.prefix);
        if e >= step_events {
            // The final usage chunk.
            buf.push(b']');
            buf.extend_from_slice(b",\"usage\":");
            let u = self.usage_now(self.full_completion());
            render::push_usage(&mut buf, &u);
            buf.extend_from_slice(b"}\n\n");
            return Bytes::from(buf);
        }
        let step = e / n;
        let index = e % n;
        match p.api {
            Api::Chat => {
                buf.extend_from_slice(b"{\"index\":");
                render::push_u64(&mut buf, index);
                if step == 0 {
                    buf.extend_from_slice(b",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}");
                } else if step <= p.chunks {
                    let t = p.chunk_tokens(step - 1);
                    self.emitted_tokens += t;
                    buf.extend_from_slice(b",\"delta\":{\"content\":\"");
                    for _ in 0..t {
                        buf.extend_from_slice(b"tok ");
                    }
                    buf.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":null}");
                } else {
                    buf.extend_from_slice(
                        b",\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}",
                    );
                }
            }
            Api::Text => {
                buf.extend_from_slice(b"{\"text\":\"");
                let last = step == p.chunks;
                if !last {
                    let t = p.chunk_tokens(step);
                    self.emitted_tokens += t;
                    for _ in 0..t {
                        buf.extend_from_slice(b"tok ");
                    }
                }
                buf.extend_from_slice(b"\",\"index\":");
                render::push_u64(&mut buf, index);
                if last {
                    buf.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":\"stop\"}");
                } else {
                    buf.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":null}");
                }
            }
        }
        buf.push(b']');
        let p = &self.plan;
        if p.every_chunk {
            buf.extend_from_slice(b",\"usage\":");
            let u = self.usage_now(p.reasoning + self.emitted_tokens);
            render::push_usage(&mut buf, &u);
        } else if p.usage_null {
            buf.extend_from_slice(b",\"usage\":null");
        }
        buf.extend_from_slice(b"}\n\n");
        Bytes::from(buf)
    }
}
