//! Usage-policy enforcement on the request path: the distillation detector's hooks.
//!
//! The pipeline calls [`check_access`] once the model is known (account and owner-scoped reviews),
//! [`observe`] before limits (signals, and the configured action: record, flag, throttle, strip,
//! review), and [`completed`] with every usage record.

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderMap;
use tollgate_store::UsageRecord;
use tollgate_wire::Endpoint;

use crate::app::App;
use crate::error::ApiError;
use crate::tenancy::KeyEntry;
use crate::upstream::ModelEntry;

/// What enforcement decided for one request.
pub enum Verdict {
    /// Go on with the request as it is.
    Pass,
    /// Go on with this body instead (e.g. logprobs stripped, `n` capped).
    Rewrite(Bytes),
}

/// Refuses requests of organizations (or one owner's models) under review or terminated.
pub fn check_access(_app: &App, _key: &KeyEntry, _model: &ModelEntry) -> Result<(), ApiError> {
    Ok(())
}

/// Feeds the detector and applies the configured action.
pub fn observe(
    _app: &App,
    _key: &KeyEntry,
    _model: &ModelEntry,
    _endpoint: Endpoint,
    _body: &Bytes,
    _peer: SocketAddr,
    _headers: &HeaderMap,
) -> Result<Verdict, ApiError> {
    Ok(Verdict::Pass)
}

/// Called with every usage record before it is written.
pub fn completed(_app: &App, _record: &UsageRecord) {}
