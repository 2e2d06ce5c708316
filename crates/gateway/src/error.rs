//! The one place where failures become OpenAI-shaped error responses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tollgate_wire::{ErrorBody, ErrorDetail};

/// An error answered to a client, with its status, OpenAI `type`/`code`, and extra headers.
/// Boxed, so `Result<_, ApiError>` stays one pointer wide on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<ErrorParts>);

/// The parts of an [`ApiError`].
#[derive(Debug)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError(Box::new(ErrorParts {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            retry_after_secs: None,
            headers: Vec::new(),
        }))
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided. You can find your API keys with your Tollgate administrator.",
        )
    }

    pub fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the api-key header.",
        )
    }

    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        );
        e.param = param.map(str::to_owned);
        e
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        e.param = Some("model".into());
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some(code),
            message,
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("Request body exceeds the limit of {limit} bytes."),
        )
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            message,
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn insufficient_quota(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        )
    }

    pub fn upstream(status: StatusCode, message: impl Into<String>) -> Self {
        let code = if status == StatusCode::GATEWAY_TIMEOUT {
            "upstream_timeout"
        } else {
            "upstream_error"
        };
        Self::new(status, "api_error", Some(code), message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            Some("internal_error"),
            message,
        )
    }

    /// The client went away before its answer (logged as 499; nobody reads it).
    pub fn client_left() -> Self {
        Self::new(
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request_error",
            Some("client_closed_request"),
            "The client closed the request.",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("unavailable"),
            message,
        )
    }

    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A short, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        self.code.unwrap_or(self.kind)
    }
}

/// Logs a store failure and answers 500 (nothing was changed).
pub fn store_error(e: tollgate_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "Store failed.");
    ApiError::internal("The store failed; nothing was changed.")
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;
    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorParts {
        &mut self.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = *self.0;
        let body = ErrorBody {
            error: ErrorDetail {
                message: &parts.message,
                kind: parts.kind,
                param: parts.param.as_deref(),
                code: parts.code,
            },
        }
        .to_vec();
        let mut res = (parts.status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = parts.retry_after_secs {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in parts.headers {
            h.insert(name, value);
        }
        res
    }
}
