//! Admission: what a request takes before it is dispatched (a rate-limit reservation, a budget
//! hold) and what it owes once dispatched (exactly one usage record), held in one value.
//!
//! [`Admission`] is an obligation in the way an `OwnedSemaphorePermit` is: it is finished by
//! [`Admission::commit`] (record written, reservations settled to the real usage), and when it is
//! dropped unfinished — the client left at some `.await`, a later phase refused — its `Drop`
//! finishes the work: never dispatched, the reservation and the hold are given back at once;
//! dispatched, a task bills the request once (status 499, the prompt counted by the tokenizer).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use time::OffsetDateTime;
use tollgate_config::Durability;
use tollgate_store::UsageRecord;
use tollgate_wire::{ApiRequest, Endpoint, Usage};

use crate::app::App;
use crate::budget::Hold;
use crate::error::ApiError;
use crate::front::Parsed;
use crate::limits::Snapshot;
use crate::ratelimit::Reservation;
use crate::telemetry::{Phase, RequestTrace, TraceUsage};
use crate::tenancy::KeyEntry;
use crate::upstream::ModelEntry;

/// Token counts of one request. `input` includes `cached_input` (cache reads) and `cache_write`
/// (prompt tokens written to the cache), as OpenAI counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    pub estimated: bool,
}

impl Counts {
    pub fn from_usage(u: &Usage) -> Counts {
        Counts {
            input: u.prompt_tokens,
            cached_input: u.cached_tokens(),
            cache_write: u.cache_write_tokens(),
            output: u.completion_tokens,
            reasoning: u.reasoning_tokens(),
            estimated: false,
        }
    }
}

/// Status of the record of a request whose client left before its answer was complete.
pub const CLIENT_LEFT: u16 = 499;

/// A new time-ordered request id: `req_`, the microseconds since the epoch in at least 14 hex
/// digits, then 8 random hex digits. (Written by hand: `format!` costs a tenth of a microsecond
/// on every request.)
pub fn new_request_id(now: OffsetDateTime) -> String {
    let micros = (now.unix_timestamp_nanos() / 1000) as u64;
    let r: u32 = rand::random();
    let mut id = String::with_capacity(4 + 16 + 8);
    id.push_str("req_");
    push_hex(&mut id, micros, 14);
    push_hex(&mut id, u64::from(r), 8);
    id
}

/// Appends `v` in lowercase hex, zero-padded to at least `width` digits.
fn push_hex(out: &mut String, v: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let needed = (64 - v.leading_zeros() as usize).div_ceil(4).max(1);
    for i in (0..needed.max(width)).rev() {
        let nibble = if i < 16 { (v >> (4 * i)) & 0xf } else { 0 };
        out.push(char::from(DIGITS[nibble as usize]));
    }
}

/// An admitted request: its reservations and, once dispatched, the usage record it owes.
pub struct Admission {
    owed: Option<Owed>,
    /// The rate-limit levels after the reservation, for the response headers.
    pub snapshot: Snapshot,
}

/// The upstream a request was (last) sent to: its position in the model's routes.
struct Dispatched {
    route: usize,
}

struct Owed {
    app: Arc<App>,
    id: String,
    time: OffsetDateTime,
    started: Instant,
    key: Arc<KeyEntry>,
    model: Arc<ModelEntry>,
    endpoint: Endpoint,
    /// The route template (metrics).
    route: &'static str,
    /// The client's body, to count the prompt when the upstream reports no usage.
    body: Bytes,
    stream: bool,
    reservation: Option<Reservation>,
    budget: Option<Hold>,
    dispatched: Option<Dispatched>,
    /// The request's trace (`[telemetry]`), ended with the record.
    trace: Option<Box<RequestTrace>>,
}

/// The admit phase: reserves the request and its estimated tokens against the key's and
/// project's limits (429), then its estimated cost against the budgets that cover it (429
/// `insufficient_quota`). A refusal, or a drop at any `.await`, gives back what was taken.
pub async fn admit(
    app: &Arc<App>,
    key: Arc<KeyEntry>,
    model: Arc<ModelEntry>,
    request: &Parsed<'_>,
) -> Result<Admission, ApiError> {
    fits(&model, request).await?;
    let time = OffsetDateTime::now_utc();
    let view = &request.view;
    let prompt = view.prompt_bytes as u64 / 4;
    let output = view
        .max_tokens
        .unwrap_or(0)
        .saturating_mul(view.choices(request.restrict));
    let mut admission = Admission {
        owed: Some(Owed {
            app: app.clone(),
            id: new_request_id(time),
            time,
            started: request.started,
            key,
            model,
            endpoint: request.endpoint,
            route: request.route,
            body: request.body.clone(),
            stream: view.stream,
            reservation: None,
            budget: None,
            dispatched: None,
            trace: None,
        }),
        snapshot: Snapshot::default(),
    };
    let Some(owed) = admission.owed.as_mut() else {
        return Err(ApiError::internal("admission without state"));
    };
    let (reservation, snapshot) = app
        .limits
        .reserve(&owed.key, prompt.saturating_add(output))
        .await?;
    owed.reservation = Some(reservation);
    admission.snapshot = snapshot;
    let refused = |e: ApiError| {
        if e.status == http::StatusCode::TOO_MANY_REQUESTS {
            app.metrics.budget_refused.inc();
        }
        e
    };
    let hold = app
        .budgets
        .reserve(
            &app.tenancy,
            || app.prices(),
            &owed.key,
            &owed.model.name,
            prompt,
            output,
        )
        .map_err(refused)?;
    // With Redis, the budget is also reserved on the counters every instance shares.
    owed.budget = app
        .budgets
        .reserve_shared(&app.limits, hold)
        .await
        .map_err(refused)?;
    Ok(admission)
}

/// Refuses a prompt longer than the model's context window (400 `context_length_exceeded`),
/// before anything is reserved. A token is at least a byte and a message's JSON is longer than
/// its framing tokens, so only a prompt field longer than the window is counted (off the serving
/// thread, bounded: see [`crate::tokens`]).
async fn fits(model: &ModelEntry, request: &Parsed<'_>) -> Result<(), ApiError> {
    let Some(window) = model.context_window else {
        return Ok(());
    };
    if request.view.prompt_bytes as u64 <= window {
        return Ok(());
    }
    let (texts, messages) = request.view.prompt_texts(request.endpoint);
    let tokens = model.encoding.count_prompt_async(texts, messages).await;
    if tokens <= window {
        return Ok(());
    }
    let mut e = ApiError::bad_request(
        format!(
            "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
        ),
        Some(request.endpoint_prompt_field()),
    );
    e.code = Some("context_length_exceeded");
    Err(e)
}

impl Admission {
    /// The request id (also the usage record's id).
    pub fn id(&self) -> &str {
        self.owed.as_ref().map_or("", |o| o.id.as_str())
    }

    /// The application (while the admission is unfinished).
    pub fn app(&self) -> Option<&Arc<App>> {
        self.owed.as_ref().map(|o| &o.app)
    }

    /// The model entry the request was routed to.
    pub fn model(&self) -> Option<&Arc<ModelEntry>> {
        self.owed.as_ref().map(|o| &o.model)
    }

    /// Carries the request's trace from here on (it ends with the record).
    pub fn traced(&mut self, trace: Option<Box<RequestTrace>>) {
        if let (Some(owed), Some(mut t)) = (&mut self.owed, trace) {
            t.request_id(&owed.id);
            owed.trace = Some(t);
        }
    }

    /// Marks the end of a phase on the request's trace.
    pub fn mark(&mut self, phase: Phase) {
        if let Some(owed) = &mut self.owed {
            crate::telemetry::mark(&mut owed.trace, phase);
        }
    }

    /// The request was (or is about to be) sent to the model's route at this position: from now
    /// on a record is owed.
    pub fn dispatched(&mut self, route: usize) {
        if let Some(owed) = &mut self.owed {
            owed.dispatched = Some(Dispatched { route });
        }
    }

    /// Every attempt failed before any answer: the rate-limit reservation is given back whole
    /// (nothing was served), and the failure is recorded with no tokens.
    pub async fn fail(mut self, status: u16) -> Result<(), ApiError> {
        if let Some(owed) = &mut self.owed {
            drop(owed.reservation.take());
        }
        self.commit(status, Counts::default()).await
    }

    /// Counts with the model's tokenizer (off the serving thread when large): the prompt from the
    /// request, the output from `text`.
    pub async fn estimate(&self, output_text: String) -> Counts {
        match &self.owed {
            Some(owed) => owed.estimate(output_text).await,
            None => Counts::default(),
        }
    }

    /// Writes the record (durable before this returns in strict mode) and settles the
    /// reservations to the real usage. An error means the record could not be made durable.
    /// Dropped half-way, the write still completes: the record is queued before the first await.
    pub async fn commit(mut self, status: u16, counts: Counts) -> Result<(), ApiError> {
        let Some(owed) = self.owed.take() else {
            return Ok(());
        };
        owed.commit(status, counts).await
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(owed) = self.owed.take() else {
            return;
        };
        if owed.dispatched.is_none() {
            // Never sent upstream: the reservation and the hold give themselves back.
            return;
        }
        let app = owed.app.clone();
        app.background.spawn(async move {
            let counts = owed.estimate(String::new()).await;
            let _ = owed.commit(CLIENT_LEFT, counts).await;
        });
    }
}

impl Owed {
    async fn estimate(&self, output_text: String) -> Counts {
        let encoding = self.model.encoding;
        let input = match ApiRequest::parse(&self.body, self.endpoint, true) {
            Ok(req) => {
                let (texts, messages) = req.prompt_texts(self.endpoint);
                encoding.count_prompt_async(texts, messages).await
            }
            Err(_) => 0,
        };
        Counts {
            input,
            cached_input: 0,
            cache_write: 0,
            output: encoding.count_async(output_text).await,
            reasoning: 0,
            estimated: true,
        }
    }

    /// Settles everything synchronously and queues the record, then waits for durability.
    fn commit(mut self, status: u16, counts: Counts) -> impl Future<Output = Result<(), ApiError>> {
        let actual = counts.input.saturating_add(counts.output);
        if let Some(r) = self.reservation.take() {
            r.settle(actual);
        }
        let route = self
            .dispatched
            .as_ref()
            .and_then(|d| self.model.routes.get(d.route));
        let (provider, upstream_model) = match route {
            Some(r) => (r.provider.to_string(), r.upstream_model.to_string()),
            None => (String::new(), String::new()),
        };
        let record = UsageRecord {
            id: self.id.clone(),
            time: self.time,
            organization: self.key.organization.to_string(),
            project: self.key.project.as_deref().map(str::to_owned),
            key: Some(self.key.id.clone()),
            model: self.model.name.clone(),
            provider,
            upstream_model,
            input_tokens: counts.input,
            cached_input_tokens: counts.cached_input.min(counts.input),
            cache_write_input_tokens: counts
                .cache_write
                .min(counts.input.saturating_sub(counts.cached_input)),
            output_tokens: counts.output,
            reasoning_tokens: counts.reasoning,
            status,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            streamed: self.stream,
            estimated: counts.estimated,
            source: "gateway".into(),
        };
        self.app.metrics.completed(
            self.route,
            &self.model.metrics,
            route.map(|r| &r.metrics),
            status,
            [
                record.input_tokens,
                record.cached_input_tokens,
                record.cache_write_input_tokens,
                record.output_tokens,
            ],
            self.started.elapsed(),
        );
        let trace = self.trace.take().map(|mut t| {
            t.mark(Phase::Respond);
            t.status(status);
            t.metered(
                &record.provider,
                &record.upstream_model,
                TraceUsage {
                    input: record.input_tokens,
                    output: record.output_tokens,
                    cached_input: record.cached_input_tokens,
                },
            );
            t
        });
        self.app.after_usage(&record);
        if let Some(hold) = self.budget.take() {
            self.app.budgets.settle(&self.app.prices(), hold, &record);
        }
        let app = self.app.clone();
        let id = std::mem::take(&mut self.id);
        // The ledger call is started now and, if this future is dropped, finished by a task.
        let write = crate::front::detach::Detach::new(
            app.background.clone(),
            crate::front::detach::Client::default(),
            async move {
                match app.config.storage.durability {
                    Durability::Strict => app.ledger.append(record).await.map(|_| ()),
                    Durability::Relaxed => app.ledger.append_background(record).await,
                }
            },
        );
        async move {
            let result = write.await.unwrap_or(Ok(()));
            // The meter phase ends here: its span is the wait for the record to be durable.
            drop(trace);
            result.map_err(|error| {
                tracing::error!(%error, request = %id, "Usage record could not be written.");
                ApiError::unavailable(
                    "The request could not be metered, so its result is withheld. Retry later.",
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_format() {
        let values = [
            0,
            1,
            0xf,
            0x10,
            0xabc,
            u64::from(u32::MAX),
            1 << 55,
            1 << 56,
            u64::MAX,
        ];
        for v in values {
            for width in [0, 8, 14, 20] {
                let mut s = String::new();
                push_hex(&mut s, v, width);
                assert_eq!(s, format!("{v:0width$x}"), "{v} at width {width}");
            }
        }
    }

    #[test]
    fn request_ids_are_time_ordered() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = new_request_id(t);
        let b = new_request_id(t + time::Duration::microseconds(1));
        assert_eq!(a.len(), 4 + 14 + 8);
        assert!(
            a.starts_with("req_06651728988000") && a[4..].bytes().all(|c| c.is_ascii_hexdigit())
        );
        assert!(a < b);
    }
}
