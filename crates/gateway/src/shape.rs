//! The last step of every response: an error whose body is not JSON (a framework rejection: a
//! bad query string, a path parameter that is not UTF-8, a JSON body axum refused, a method a
//! route does not take, a plain-text 503) is rewritten into OpenAI's error object, and every
//! response without an `x-request-id` gets one (a handler that set its own keeps it).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, Uri, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use time::OffsetDateTime;

use crate::error::ApiError;

/// Largest error body read back to become a message; larger ones are left as they are.
const MAX_MESSAGE_BODY: u64 = 64 << 10;

/// Longest message kept from a rejection's text.
const MAX_MESSAGE_CHARS: usize = 512;

/// Applies the rules above to a response of `method uri`.
pub async fn finish(method: &Method, uri: &Uri, res: Response) -> Response {
    let mut res = if res.status().as_u16() >= 400 && needs_shape(&res) {
        reshape(method, uri, res).await
    } else {
        res
    };
    if !res.headers().contains_key("x-request-id")
        && let Ok(id) = HeaderValue::from_str(&crate::front::admit::new_request_id(
            OffsetDateTime::now_utc(),
        ))
    {
        res.headers_mut().insert("x-request-id", id);
    }
    res
}

/// An error response is shaped unless it already says JSON; bodies of unknown or large size
/// (a stream) are left alone.
fn needs_shape(res: &Response) -> bool {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("application/json")
                || ct.split(';').next().is_some_and(|m| m.ends_with("+json"))
        });
    !json
        && res
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= MAX_MESSAGE_BODY)
}

async fn reshape(method: &Method, uri: &Uri, res: Response) -> Response {
    let (parts, body) = res.into_parts();
    let text = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let status = parts.status;
    let text = text.trim();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .filter(|a| !a.is_empty())
            .map(|a| format!(" (allowed: {a})"))
            .unwrap_or_default();
        format!(
            "Method {method} is not allowed on {}{allowed}.",
            bounded(uri.path())
        )
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("Request failed")
            .to_owned()
    } else {
        bounded(text)
    };
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", Some("invalid_request")),
        404 => ("invalid_request_error", Some("not_found")),
        405 => ("invalid_request_error", Some("method_not_allowed")),
        408 => ("invalid_request_error", Some("request_timeout")),
        413 => ("invalid_request_error", Some("request_too_large")),
        415 => ("invalid_request_error", Some("unsupported_media_type")),
        422 => ("invalid_request_error", Some("invalid_request_body")),
        429 => ("requests", Some("rate_limit_exceeded")),
        503 => ("api_error", Some("unavailable")),
        500..=599 => ("api_error", Some("internal_error")),
        _ => ("invalid_request_error", None),
    };
    let mut shaped = ApiError::new(status, kind, code, message).into_response();
    let headers = shaped.headers_mut();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            headers.insert(name, value.clone());
        }
    }
    *shaped.extensions_mut() = parts.extensions;
    shaped
}

/// `s` cut to [`MAX_MESSAGE_CHARS`] characters.
fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use axum::body::Body;

    async fn shaped(res: Response, method: Method, path: &str) -> (Response, serde_json::Value) {
        let uri: Uri = path.parse().unwrap();
        let res = finish(&method, &uri, res).await;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::empty()), v)
    }

    #[tokio::test]
    async fn plain_text_errors_become_openai_errors() {
        let res = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let (res, v) = shaped(res, Method::GET, "/admin/v1/usage?x=%zz").await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        assert!(res.headers().contains_key("x-request-id"));
        assert_eq!(v["error"]["message"], "Failed to deserialize query string");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn a_plain_text_503_becomes_unavailable() {
        let res = (StatusCode::SERVICE_UNAVAILABLE, "ledger not ready").into_response();
        let (res, v) = shaped(res, Method::GET, "/readyz").await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"]["message"], "ledger not ready");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn empty_405_names_the_method_and_keeps_allow() {
        let mut res = StatusCode::METHOD_NOT_ALLOWED.into_response();
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        let (res, v) = shaped(res, Method::GET, "/v1/chat/completions").await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "POST");
        assert_eq!(v["error"]["code"], "method_not_allowed");
        assert_eq!(
            v["error"]["message"],
            "Method GET is not allowed on /v1/chat/completions (allowed: POST)."
        );
    }

    #[tokio::test]
    async fn json_errors_and_successes_keep_their_body_and_request_id() {
        let mut res = ApiError::not_found("nope").into_response();
        res.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("req_own"));
        let (res, v) = shaped(res, Method::GET, "/x").await;
        assert_eq!(res.headers()["x-request-id"], "req_own");
        assert_eq!(v["error"]["message"], "nope");
        let (res, v) = shaped("ok".into_response(), Method::GET, "/healthz").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(v.is_null());
        assert!(
            res.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "é".repeat(2000);
        assert_eq!(bounded(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
