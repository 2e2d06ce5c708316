//! OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`.

use serde::Serialize;

/// The body of every error response, exactly as OpenAI shapes it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// The inner error object. `param` and `code` serialize as `null` when absent, like OpenAI's.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ErrorBody<'_> {
    /// Serializes the body to JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing plain strings into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_openai() {
        let body = ErrorBody {
            error: ErrorDetail {
                message: "Incorrect API key provided.",
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
            },
        };
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
        );
    }
}
