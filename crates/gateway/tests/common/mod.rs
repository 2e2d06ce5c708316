//! Test kit: a real gateway on a loopback port, against mock upstreams, with a small HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_config::Config;
use tollgate_gateway::App;

pub const ADMIN: &str = "test-admin-token";

/// A simulated provider, the model owner "openai" and its model "gpt-4o-mini" on it.
pub const OPENAI_OWNED_MODEL: &str = r#"
[[providers]]
name = "sim"
kind = "simulated"
ttft_ms = 0

[[owners]]
name = "openai"
revenue_share_percent = "20"
policy = "No training of competing models."

[[models]]
name = "gpt-4o-mini"
provider = "sim"
input_price = "0.15"
output_price = "0.60"
owner = "openai"
"#;

pub struct Gateway {
    pub base: String,
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    pub client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Config text with `{dir}` replaced by the test's data directory.
pub async fn start(config_toml: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n{}\n[storage]\nurl = \"sqlite://{}/ledger.db\"\n{}",
        "",
        dir.path().display(),
        config_toml
    );
    start_with(Config::from_toml(&text).unwrap(), dir).await
}

/// Stops a gateway and starts a fresh one (new data directory) with an edited copy of its config.
pub async fn restart_with(gw: Gateway, edit: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = gw.app.config.clone();
    gw.stop().await;
    let dir = tempfile::tempdir().unwrap();
    config.storage.url = format!("sqlite://{}/ledger.db", dir.path().display());
    edit(&mut config);
    start_with(config, dir).await
}

pub async fn start_with(config: Config, dir: tempfile::TempDir) -> Gateway {
    config.validate().unwrap();
    let app = App::start(config).await.unwrap();
    let listener = tollgate_gateway::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = app.clone();
    let task = tokio::spawn(async move {
        tollgate_gateway::server::serve(a, listener, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Gateway {
        base,
        app,
        dir,
        client: Client::builder(TokioExecutor::new()).build(http),
        stop: Some(tx),
        task: Some(task),
    }
}

/// Provider and model sections for one openai-kind provider per mock base URL, all serving
/// `gpt-4o-mini` in the given order.
pub fn openai_models(bases: &[String]) -> String {
    let mut s = String::new();
    for (i, b) in bases.iter().enumerate() {
        s.push_str(&format!(
            "[[providers]]\nname = \"p{i}\"\nkind = \"openai\"\nbase_url = \"{b}\"\napi_key = \"sk-upstream-{i}\"\n\n"
        ));
    }
    for i in 0..bases.len() {
        s.push_str(&format!(
            "[[models]]\nname = \"gpt-4o-mini\"\nprovider = \"p{i}\"\nupstream_model = \"up-mini\"\n{}\n",
            if i == 0 { "input_price = \"0.15\"\ncached_input_price = \"0.075\"\noutput_price = \"0.60\"\n" } else { "" }
        ));
    }
    s
}

/// A simulated provider "sim" (`settings`: more TOML lines of its section) and, on it, one model
/// per `(name, input price, output price, more TOML lines)`.
pub fn simulated(settings: &str, models: &[(&str, &str, &str, &str)]) -> String {
    let models: String = models
        .iter()
        .map(|(name, input, output, more)| {
            format!(
                "\n[[models]]\nname = \"{name}\"\nprovider = \"sim\"\ninput_price = \"{input}\"\noutput_price = \"{output}\"\n{more}\n"
            )
        })
        .collect();
    format!("\n[[providers]]\nname = \"sim\"\nkind = \"simulated\"\n{settings}\n{models}")
}

impl Gateway {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = self
            .client
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// POSTs a JSON `body` to `path` with the `authorization` header `auth`, then `extra` headers.
    pub async fn post_as(
        &self,
        path: &str,
        auth: &str,
        extra: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut headers = vec![
            ("authorization", auth),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        self.call(Method::POST, path, &headers, body).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Value) -> Reply {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let auth = format!("Bearer {ADMIN}");
        self.call(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            bytes,
        )
        .await
    }

    /// An admin call that must answer 200: its JSON body.
    pub async fn admin_ok(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.admin(method, path, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// `PUT /admin/v1/organizations/{org}/budget`.
    pub async fn put_budget(&self, org: &str, body: Value) -> Reply {
        let path = format!("/admin/v1/organizations/{org}/budget");
        self.admin(Method::PUT, &path, body).await
    }

    /// Creates an organization, a project and a key; returns (org, project, key id, secret).
    pub async fn tenant(&self, name: &str, key_body: Value) -> (String, String, String, String) {
        let org = self
            .admin(
                Method::POST,
                "/admin/v1/organizations",
                json!({"name": name}),
            )
            .await;
        assert_eq!(org.status, StatusCode::CREATED, "{}", org.text());
        let org = org.json()["id"].as_str().unwrap().to_owned();
        self.tenant_in(&org, key_body).await
    }

    pub async fn tenant_in(&self, org: &str, key_body: Value) -> (String, String, String, String) {
        let p = self
            .admin(
                Method::POST,
                &format!("/admin/v1/organizations/{org}/projects"),
                json!({"name": "default"}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{}", p.text());
        let project = p.json()["id"].as_str().unwrap().to_owned();
        let mut body = key_body;
        if body.get("name").is_none() {
            body["name"] = json!("test key");
        }
        let k = self
            .admin(
                Method::POST,
                &format!("/admin/v1/projects/{project}/keys"),
                body,
            )
            .await;
        assert_eq!(k.status, StatusCode::CREATED, "{}", k.text());
        let kj = k.json();
        (
            org.to_owned(),
            project,
            kj["id"].as_str().unwrap().to_owned(),
            kj["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn chat(&self, key: &str, body: Value) -> Reply {
        let auth = format!("Bearer {key}");
        self.post_as("/v1/chat/completions", &auth, &[], body.to_string())
            .await
    }

    pub async fn usage(&self, org: &str) -> Value {
        let r = self
            .admin(
                Method::GET,
                &format!("/admin/v1/usage?organization={org}"),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Every ledger record, oldest first (waits for pending writes).
    pub async fn records(&self) -> Vec<tollgate_store::UsageRecord> {
        self.app.ledger.flush().await.unwrap();
        let orgs: Vec<String> = self
            .app
            .store
            .organizations()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        self.app
            .store
            .records(
                tollgate_store::UsageFilter {
                    organizations: orgs,
                    ..Default::default()
                },
                1_000_000,
            )
            .await
            .unwrap()
    }

    /// Asserts that `key` is still served (a `gpt-4o-mini` chat with `text` answers 200), then
    /// stops the gateway.
    pub async fn serves_then_stops(self, key: &str, text: &str, context: &str) {
        let r = self
            .chat(key, json!({"model": "gpt-4o-mini", "messages": user(text)}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{context}: {}", r.text());
        self.stop().await;
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(str::to_owned)
        .collect()
}

/// Concatenated content deltas of a chat SSE body.
pub fn sse_content(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .flat_map(|v| {
            v["choices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| {
                    c["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| c["text"].as_str().map(str::to_owned))
                })
        })
        .collect()
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}
