//! The respond phase: a plain answer is read whole, metered (durable in strict mode) and then
//! sent; a streamed one becomes the client's body ([`super::relay::RelayBody`]), which meters
//! when the upstream ends. Either way the [`Admission`] is finished exactly once.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::ApiError;
use crate::front::Parsed;
use crate::front::admit::{Admission, CLIENT_LEFT, Counts};
use crate::front::detach::Client;
use crate::upstream::UpstreamResponse;

/// Most bytes of a plain upstream answer the gateway reads.
const MAX_PLAIN_BYTES: usize = 64 << 20;

pub async fn respond(
    admission: Admission,
    resp: UpstreamResponse,
    request: &Parsed<'_>,
    timeout: Duration,
    client: &Client,
) -> Result<Response, ApiError> {
    let (endpoint, stream, client_wants_usage) = (
        request.endpoint,
        request.view.stream,
        request.view.include_usage,
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(admission.id()) {
        headers.insert("x-request-id", v);
    }
    for (name, value) in admission.snapshot.headers() {
        headers.insert(name, value);
    }
    if stream {
        headers.insert(
            header::CONTENT_TYPE,
            resp.content_type
                .unwrap_or(HeaderValue::from_static("text/event-stream")),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let body = super::relay::start(admission, resp.body, client_wants_usage, timeout)
            .reading(crate::dialect::StreamDialect::of(endpoint));
        let mut res = Response::new(Body::new(body));
        *res.status_mut() = resp.status;
        *res.headers_mut() = headers;
        return Ok(res);
    }
    let collected = tokio::time::timeout(timeout, resp.body.collect(MAX_PLAIN_BYTES)).await;
    let bytes = match collected {
        Ok(Ok(b)) => b,
        Ok(Err(error)) => {
            tracing::warn!(%error, request = %admission.id(), "Upstream body failed.");
            admission.commit(502, Counts::default()).await?;
            return Err(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream response broke off.",
            ));
        }
        Err(_) => {
            admission.commit(504, Counts::default()).await?;
            return Err(ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream provider did not finish in time.",
            ));
        }
    };
    let counts = match crate::dialect::plain_usage(endpoint, &bytes) {
        Some(u) => Counts::from_usage(&u),
        // An embeddings answer carries vectors, not text to count.
        None => {
            admission
                .estimate(crate::dialect::plain_text(endpoint, &bytes))
                .await
        }
    };
    let status = if client.gone() {
        CLIENT_LEFT
    } else {
        resp.status.as_u16()
    };
    admission.commit(status, counts).await?;
    headers.insert(
        header::CONTENT_TYPE,
        resp.content_type
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = resp.status;
    *res.headers_mut() = headers;
    Ok(res)
}
