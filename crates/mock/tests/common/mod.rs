//! Helpers shared by the mock's tests: a started mock, a loopback HTTP client and one JSON request
//! through it.

#![allow(clippy::unwrap_used, dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_mock::{MockConfig, MockUpstream};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Starts a mock on `cfg` on a loopback port.
pub async fn start(cfg: MockConfig) -> MockUpstream {
    MockUpstream::start(cfg).await.unwrap()
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What the mock answered.
pub struct Answer {
    pub status: StatusCode,
    /// The `content-type` header ("" when absent).
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `body` as JSON (`content-type: application/json`, then `headers`) and reads the answer.
pub async fn request(
    c: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}
