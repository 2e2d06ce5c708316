//! The request path's metric handles: labelled counters and latency histograms registered once
//! at start ([`Metrics`], kept in `App`), and each model's and route's handles resolved then
//! ([`ModelMetrics`] in its `ModelEntry`, [`RouteMetrics`] in its `Route`). `metrics` serves them.
//!
//! Cost on the request path: a finished request adds to its model's handles (a few atomic adds
//! and two uncontended histogram locks) and to its route's counter for its route template and
//! status (an array cell, resolved once); an upstream attempt observes its route's histogram.
//! Only refusals before dispatch and unusual statuses look up the labelled family.
//!
//! Label cardinality is bounded by the configuration: `model` is a configured model name, or
//! `other` (a request refused before its model was known, or naming an unknown one); `provider`
//! a configured provider, or `none` (not dispatched); `route` one of the inference route templates
//! ([`route_template`]); `status` an HTTP status code the gateway answers; `lane` one of four.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tollgate_wire::Endpoint;

/// Buckets (seconds) of the request and upstream latency histograms.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0,
];

/// Buckets (seconds) of the gateway-overhead histogram: tens of microseconds to a second.
pub const OVERHEAD_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The model label of a request whose model is not a configured one (or not yet known).
pub const OTHER: &str = "other";
/// The provider label of a request that was not dispatched.
pub const NO_PROVIDER: &str = "none";

/// The token lanes, in the order of [`ModelMetrics`]' counters.
pub const LANES: [&str; 4] = ["input", "cached_input", "cache_write", "output"];

/// A label value shared by reference (a configured model or provider name).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// An HTTP status code as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Status(pub u16);

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{}", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    model: Name,
    provider: Name,
    status: Status,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    model: Name,
    provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: Name,
    lane: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The inference route templates, OpenAI's paths then Azure's (`route` label values).
static TEMPLATES: [&str; 10] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/openai/deployments/{deployment}/chat/completions",
    "/openai/deployments/{deployment}/completions",
    "/openai/deployments/{deployment}/embeddings",
    "/openai/deployments/{deployment}/responses",
    "/openai/deployments/{deployment}/messages",
];

/// The route template of an inference request: OpenAI's path, or Azure's with `{deployment}`.
pub fn route_template(endpoint: Endpoint, azure: bool) -> &'static str {
    let i = match endpoint {
        Endpoint::ChatCompletions => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
        Endpoint::Responses => 3,
        Endpoint::Messages => 4,
    };
    TEMPLATES[i + if azure { 5 } else { 0 }]
}

/// The statuses a dispatched request is usually recorded with, each with a slot in a route's
/// [`StatusCounters`]; others go through the labelled family.
const STATUS_SLOTS: [u16; 12] = [200, 400, 401, 403, 404, 408, 413, 422, 429, 499, 502, 504];

/// A route's request counters by (route template, status), each resolved on first use: a
/// dispatched request's count is an index and an atomic add instead of hashing its label set
/// under the family's lock.
#[derive(Debug, Default)]
pub struct StatusCounters {
    cells: [[std::sync::OnceLock<Counter>; STATUS_SLOTS.len()]; TEMPLATES.len()],
}

impl StatusCounters {
    fn cell(&self, route: &'static str, status: u16) -> Option<&std::sync::OnceLock<Counter>> {
        let r = TEMPLATES
            .iter()
            .position(|t| std::ptr::eq(t.as_ptr(), route.as_ptr()) || *t == route)?;
        let s = STATUS_SLOTS.iter().position(|&c| c == status)?;
        Some(&self.cells[r][s])
    }
}

/// The request path's metrics, registered once; scrape-time gauges are added by [`metrics`].
#[derive(Debug)]
pub struct Metrics {
    /// Everything registered at start (`metrics` encodes it).
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<ModelLabel>,
    upstream: Histograms<UpstreamLabels>,
    tokens: Family<TokenLabels, Counter>,
    /// The gateway's own time before the first upstream attempt (authenticate … admit).
    pub overhead: Histogram,
    /// Requests refused because a budget was reached (429 `insufficient_quota`).
    pub budget_refused: Counter,
    other: Name,
    none: Name,
}

/// A model's handles, resolved at start (see [`Metrics::model`]).
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    pub label: Name,
    /// Arrival to the usage record (the whole answer, streamed or not).
    pub duration: Histogram,
    /// Tokens per lane, in [`LANES`] order.
    pub tokens: [Counter; 4],
}

impl ModelMetrics {
    /// Handles registered nowhere (replaced at start by [`Metrics::model`]).
    pub fn detached(name: &str) -> ModelMetrics {
        ModelMetrics {
            label: Name(name.into()),
            duration: latency_histogram(),
            tokens: Default::default(),
        }
    }
}

/// A route's handles (one provider serving one model), resolved at start.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    pub provider: Name,
    /// Upstream time to the response head, per attempt that got one.
    pub upstream: Histogram,
    /// Requests billed on this route, by route template and status.
    pub statuses: Arc<StatusCounters>,
}

impl RouteMetrics {
    /// Handles registered nowhere (replaced at start by [`Metrics::route`]).
    pub fn detached(provider: &Arc<str>) -> RouteMetrics {
        RouteMetrics {
            provider: Name(provider.clone()),
            upstream: latency_histogram(),
            statuses: Arc::default(),
        }
    }
}

/// Tokens of one usage record by lane ([`LANES`] order).
pub type Lanes = [u64; 4];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tollgate_requests",
            "Inference requests by route template, model, provider and status (the billed status for dispatched requests, 499 when the client left).",
            requests.clone(),
        );
        let duration: Histograms<ModelLabel> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "tollgate_request_duration_seconds",
            "Dispatched requests: arrival to the usage record (the whole answer, streamed or not).",
            duration.clone(),
        );
        let upstream: Histograms<UpstreamLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "tollgate_upstream_ttfb_seconds",
            "Upstream attempts: request sent to response head (time to first byte).",
            upstream.clone(),
        );
        let overhead = Histogram::new(OVERHEAD_BUCKETS);
        registry.register(
            "tollgate_gateway_overhead_seconds",
            "The gateway's own time before the first upstream attempt (authenticate, read, parse, route, enforce, admit).",
            overhead.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tollgate_tokens",
            "Tokens of usage records by model and lane (input includes cached_input and cache_write).",
            tokens.clone(),
        );
        let budget_refused = Counter::default();
        registry.register(
            "tollgate_budget_refused",
            "Requests refused because a budget was reached (429 insufficient_quota).",
            budget_refused.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream,
            tokens,
            overhead,
            budget_refused,
            other: Name(OTHER.into()),
            none: Name(NO_PROVIDER.into()),
        }
    }

    /// The handles of a configured model (its series exist from start, at zero).
    pub fn model(&self, name: &str) -> ModelMetrics {
        let label = Name(name.into());
        let duration = self
            .duration
            .get_or_create(&ModelLabel {
                model: label.clone(),
            })
            .clone();
        let tokens = LANES.map(|lane| {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: label.clone(),
                    lane,
                })
                .clone()
        });
        ModelMetrics {
            label,
            duration,
            tokens,
        }
    }

    /// The handles of a route: `provider` serving `model`.
    pub fn route(&self, model: &ModelMetrics, provider: &Arc<str>) -> RouteMetrics {
        let provider = Name(provider.clone());
        let upstream = self
            .upstream
            .get_or_create(&UpstreamLabels {
                model: model.label.clone(),
                provider: provider.clone(),
            })
            .clone();
        RouteMetrics {
            provider,
            upstream,
            statuses: Arc::default(),
        }
    }

    /// A dispatched request's usage record: its count (on the route it was last sent to),
    /// duration and tokens.
    pub fn completed(
        &self,
        route: &'static str,
        model: &ModelMetrics,
        upstream: Option<&RouteMetrics>,
        status: u16,
        lanes: Lanes,
        elapsed: Duration,
    ) {
        let provider = upstream.map(|u| &u.provider);
        match upstream.and_then(|u| u.statuses.cell(route, status)) {
            Some(cell) => cell
                .get_or_init(|| self.counter(route, Some(model), provider, status))
                .inc(),
            None => self.counter(route, Some(model), provider, status).inc(),
        };
        model.duration.observe(elapsed.as_secs_f64());
        for (counter, n) in model.tokens.iter().zip(lanes) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    /// One request refused before dispatch, answered with `status` (see [`Self::completed`]).
    pub fn count(&self, route: &'static str, model: Option<&ModelMetrics>, status: u16) {
        self.counter(route, model, None, status).inc();
    }

    /// The counter of a label set (created at zero when new).
    fn counter(
        &self,
        route: &'static str,
        model: Option<&ModelMetrics>,
        provider: Option<&Name>,
        status: u16,
    ) -> Counter {
        let labels = RequestLabels {
            route,
            model: model.map_or(&self.other, |m| &m.label).clone(),
            provider: provider.unwrap_or(&self.none).clone(),
            status: Status(status),
        };
        self.requests.get_or_create(&labels).clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_completed_request_is_counted_with_its_labels_tokens_and_duration() {
        let m = Metrics::new();
        let model = m.model("gpt-4o-mini");
        let route = m.route(&model, &Arc::from("p0"));
        for status in [200, 200, 599] {
            m.completed(
                route_template(Endpoint::ChatCompletions, false),
                &model,
                Some(&route),
                status,
                [12, 4, 0, 8],
                Duration::from_millis(30),
            );
        }
        m.count(route_template(Endpoint::Embeddings, true), None, 401);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("# TYPE tollgate_requests_total counter"),
            "{out}"
        );
        // Counted through the route's cell (200) and through the family (599): the same series.
        assert!(out.contains(r#"tollgate_requests_total{route="/v1/chat/completions",model="gpt-4o-mini",provider="p0",status="200"} 2"#), "{out}");
        assert!(out.contains(r#"tollgate_requests_total{route="/v1/chat/completions",model="gpt-4o-mini",provider="p0",status="599"} 1"#), "{out}");
        assert!(out.contains(r#"tollgate_requests_total{route="/openai/deployments/{deployment}/embeddings",model="other",provider="none",status="401"} 1"#), "{out}");
        assert!(
            out.contains(r#"tollgate_tokens_total{model="gpt-4o-mini",lane="input"} 36"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tollgate_tokens_total{model="gpt-4o-mini",lane="cache_write"} 0"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tollgate_request_duration_seconds_count{model="gpt-4o-mini"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"tollgate_upstream_ttfb_seconds_count{model="gpt-4o-mini",provider="p0"} 0"#
            ),
            "{out}"
        );
    }
}
