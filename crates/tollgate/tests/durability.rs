//! `kill -9` under load, then restart: every response a client received in full has exactly one
//! usage record. Also checks the embedded default's first start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

mod common;

use common::{Http, call, http, tenant, wait_ok};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_completed_response() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let db = dir.path().join("ledger.db");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_token = "adm"
[storage]
url = "sqlite://{}"
[[providers]]
name = "sim"
kind = "simulated"
output_tokens = 8
[[models]]
name = "gpt-4o-mini"
provider = "sim"
input_price = "0.15"
output_price = "0.60"
"#,
        db.display()
    );
    let cfg_path = dir.path().join("tollgate.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let cfg = cfg_path.to_str().unwrap();
    let http: Http = http();

    let mut child = spawn(&["serve", "--config", cfg], &[]);
    wait_ok(&http, &base, "/healthz").await;
    let (org, _, key) = tenant(&http, &base, json!({})).await;

    // Load from several clients; remember each response received in full.
    let completed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (http, base, key, completed, stop) = (
            http.clone(),
            base.clone(),
            key.clone(),
            completed.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                i += 1;
                let stream = (w + i) % 2 == 0;
                let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("n {w} {i}")}], "stream": stream});
                let req = http::Request::post(format!("{base}/v1/chat/completions"))
                    .header("authorization", format!("Bearer {key}"))
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                let Ok(res) = http.request(req).await else { continue };
                if res.status() != 200 {
                    continue;
                }
                let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
                let Ok(body) = res.into_body().collect().await else { continue };
                let body = body.to_bytes();
                let full = if stream { body.ends_with(b"data: [DONE]\n\n") } else { serde_json::from_slice::<Value>(&body).is_ok() };
                if full {
                    completed.lock().unwrap().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let completed = completed.lock().unwrap().clone();
    assert!(
        completed.len() > 20,
        "too little load before the kill: {}",
        completed.len()
    );

    // Restart on the same data, then check the ledger.
    let mut child = spawn(&["serve", "--config", cfg], &[]);
    wait_ok(&http, &base, "/healthz").await;
    let store = tollgate_store::Store::open(db.to_str().unwrap()).unwrap();
    let found = store.existing_ids(completed.clone()).await.unwrap();
    let missing: Vec<_> = completed.iter().filter(|id| !found.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} completed responses have no record: {:?}",
        missing.len(),
        completed.len(),
        &missing[..missing.len().min(5)]
    );
    let (records, _, _) = store.ledger_totals().await.unwrap();
    assert!(records >= completed.len() as u64);
    // The usage API agrees with the ledger after the restart.
    let (s, _, b) = call(
        &http,
        "GET",
        &format!("{base}/admin/v1/usage?organization={org}"),
        "adm",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["data"][0]["requests"].as_u64(), Some(records));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn embedded_default_starts_offline_with_a_demo_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[("TOLLGATE_ADMIN_TOKEN", "")],
    );
    let http: Http = http();
    wait_ok(&http, &base, "/healthz").await;
    let key = std::fs::read_to_string(data.join("demo-key"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("tg-") && key.len() >= 3 + 32);
    let (s, _, b) = call(
        &http,
        "POST",
        &format!("{base}/v1/chat/completions"),
        &key,
        Some(json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(&http, "GET", &format!("{base}/v1/models"), &key, None).await;
    assert_eq!(s, 200);
    assert!(
        serde_json::from_slice::<Value>(&b).unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
    let (s, _, _) = call(
        &http,
        "GET",
        &format!("{base}/admin/v1/organizations"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    // The key file is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("demo-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
