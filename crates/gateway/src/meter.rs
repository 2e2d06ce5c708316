//! Metering: the usage record of each dispatched request, committed to the ledger exactly once.

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
use crate::tenancy::KeyEntry;
use crate::upstream::ModelEntry;

/// Token counts of one request. `input` includes `cached_input`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub estimated: bool,
}

impl Counts {
    pub fn from_usage(u: &Usage) -> Counts {
        Counts {
            input: u.prompt_tokens,
            cached_input: u.cached_tokens(),
            output: u.completion_tokens,
            reasoning: u.reasoning_tokens(),
            estimated: false,
        }
    }
}

/// Everything needed to write one request's usage record.
pub struct Meter {
    pub app: Arc<App>,
    pub id: String,
    pub time: OffsetDateTime,
    pub started: Instant,
    pub key: Arc<KeyEntry>,
    pub model: Arc<ModelEntry>,
    pub endpoint: Endpoint,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
    /// Tokens reserved against TPM limits, settled on commit.
    pub reserved_tokens: u64,
    /// The client's request body, for counting prompt tokens where the upstream reports none.
    pub body: Bytes,
    /// Cost reserved against budgets, settled on commit.
    pub budget: Option<Hold>,
}

/// A new time-ordered request id (`req_` + microseconds + randomness).
pub fn new_request_id(now: OffsetDateTime) -> String {
    let micros = (now.unix_timestamp_nanos() / 1000) as u64;
    let r: u32 = rand::random();
    format!("req_{micros:014x}{r:08x}")
}

impl Meter {
    /// Counts with the model's tokenizer: the prompt from the request, the output from `text`.
    pub fn estimate(&self, output_text: &str) -> Counts {
        let input = ApiRequest::parse(&self.body, self.endpoint, true)
            .map(|req| {
                let (texts, messages) = req.prompt_texts(self.endpoint);
                self.model.encoding.count_prompt(&texts, messages)
            })
            .unwrap_or(0);
        Counts {
            input,
            cached_input: 0,
            output: self.model.encoding.count(output_text),
            reasoning: 0,
            estimated: true,
        }
    }

    /// Writes the record (waiting for durability in strict mode) and settles rate-limit
    /// reservations. An error means the record could not be made durable.
    pub async fn commit(
        &mut self,
        status: u16,
        counts: Counts,
        streamed: bool,
    ) -> Result<(), ApiError> {
        let actual = counts.input.saturating_add(counts.output);
        self.app
            .limits
            .settle(&self.key, self.reserved_tokens, actual);
        let record = UsageRecord {
            id: self.id.clone(),
            time: self.time,
            organization: self.key.organization.to_string(),
            project: self.key.project.as_deref().map(str::to_owned),
            key: Some(self.key.id.clone()),
            model: self.model.name.clone(),
            provider: self.provider.to_string(),
            upstream_model: self.upstream_model.to_string(),
            input_tokens: counts.input,
            cached_input_tokens: counts.cached_input.min(counts.input),
            cache_write_input_tokens: 0,
            output_tokens: counts.output,
            reasoning_tokens: counts.reasoning,
            status,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            streamed,
            estimated: counts.estimated,
            source: "gateway".into(),
        };
        self.app.after_usage(&record);
        if let Some(hold) = self.budget.take() {
            self.app.budgets.settle(&self.app, hold, &record);
        }
        let result = match self.app.config.storage.durability {
            Durability::Strict => self.app.ledger.append(record).await.map(|_| ()),
            Durability::Relaxed => self.app.ledger.append_background(record).await,
        };
        result.map_err(|error| {
            tracing::error!(%error, request = %self.id, "Usage record could not be written.");
            ApiError::unavailable(
                "The request could not be metered, so its result is withheld. Retry later.",
            )
        })
    }
}
