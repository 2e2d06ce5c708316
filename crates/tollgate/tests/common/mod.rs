//! Shared by the binary's integration tests: an HTTP client and admin API helpers for gateway
//! processes started from `CARGO_BIN_EXE_tollgate`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; status 0 when the gateway could not be reached.
pub async fn call(
    http: &Http,
    method: &str,
    url: &str,
    auth: &str,
    body: Option<Value>,
) -> (u16, http::HeaderMap, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .unwrap();
    let Ok(res) = http.request(req).await else {
        return (0, http::HeaderMap::new(), Bytes::new());
    };
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, headers, body)
}

/// Waits until `GET {base}{path}` answers 200 (up to 60 s).
pub async fn wait_ok(http: &Http, base: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, _, _) = call(http, "GET", &format!("{base}{path}"), "", None).await;
        if s == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{base}{path} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn id_of(b: &Bytes, field: &str) -> String {
    serde_json::from_slice::<Value>(b).unwrap()[field]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates an organization, a project and a key (with `limits`) through `base`: (org, key id, secret).
pub async fn tenant(http: &Http, base: &str, limits: Value) -> (String, String, String) {
    let (s, _, b) = call(
        http,
        "POST",
        &format!("{base}/admin/v1/organizations"),
        "adm",
        Some(json!({"name": "o"})),
    )
    .await;
    assert_eq!(s, 201);
    let org = id_of(&b, "id");
    let (s, _, b) = call(
        http,
        "POST",
        &format!("{base}/admin/v1/organizations/{org}/projects"),
        "adm",
        Some(json!({"name": "p"})),
    )
    .await;
    assert_eq!(s, 201);
    let project = id_of(&b, "id");
    let mut body = json!({"name": "k"});
    if let (Some(o), Some(l)) = (body.as_object_mut(), limits.as_object()) {
        o.extend(l.clone());
    }
    let (s, _, b) = call(
        http,
        "POST",
        &format!("{base}/admin/v1/projects/{project}/keys"),
        "adm",
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    (org, id_of(&b, "id"), id_of(&b, "key"))
}
