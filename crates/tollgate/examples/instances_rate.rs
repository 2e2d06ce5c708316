//! Throughput of one and of two gateway instances on one throwaway PostgreSQL (strict
//! durability, simulated model answering at once): closed-loop clients for a few seconds, then
//! the ledger is checked to hold exactly one record per completed response.
//!
//! `cargo build --release -p tollgate && cargo run --release -p tollgate --example instances_rate -- [secs] [clients]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(http: &Http, url: &str, auth: &str, body: Value) -> (u16, Bytes) {
    let req = http::Request::post(url)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    match http.request(req).await {
        Ok(r) => {
            let s = r.status().as_u16();
            (
                s,
                r.into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default(),
            )
        }
        Err(_) => (0, Bytes::new()),
    }
}

fn spawn(url: &str, dir: &std::path::Path, n: usize) -> (Child, String) {
    let port = tollgate_testkit::free_port().unwrap();
    let cfg = dir.join(format!("g{n}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"adm\"\n[storage]\nurl = \"{url}\"\nspool_dir = \"{}\"\n[[providers]]\nname = \"sim\"\nkind = \"simulated\"\noutput_tokens = 16\n[[models]]\nname = \"gpt-4o-mini\"\nprovider = \"sim\"\ninput_price = \"0.15\"\noutput_price = \"0.60\"\n",
            dir.join(format!("spool{n}")).display()
        ),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("tollgate");
    let child = Command::new(bin)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

async fn ready(http: &Http, base: &str) {
    for _ in 0..600 {
        let req = http::Request::get(format!("{base}/readyz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(r) = http.request(req).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway not ready");
}

async fn load(http: &Http, bases: &[String], key: &str, secs: u64, clients: usize) -> (u64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, key, done, stop) = (
            http.clone(),
            bases[c % bases.len()].clone(),
            key.to_owned(),
            done.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello there"}]});
                let (s, _) = post(&http, &format!("{base}/v1/chat/completions"), &key, body).await;
                if s == 200 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    (n, n as f64 / began.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(5);
    let clients = args.get(1).copied().unwrap_or(128) as usize;
    let pg = tollgate_testkit::Postgres::start().unwrap();
    let url = pg.database("rate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let (mut a, base_a) = spawn(&url, dir.path(), 0);
    ready(&http, &base_a).await;
    let (_, b) = post(
        &http,
        &format!("{base_a}/admin/v1/organizations"),
        "adm",
        json!({"name": "o"}),
    )
    .await;
    let org = serde_json::from_slice::<Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, b) = post(
        &http,
        &format!("{base_a}/admin/v1/organizations/{org}/projects"),
        "adm",
        json!({"name": "p"}),
    )
    .await;
    let project = serde_json::from_slice::<Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, b) = post(
        &http,
        &format!("{base_a}/admin/v1/projects/{project}/keys"),
        "adm",
        json!({"name": "k"}),
    )
    .await;
    let key = serde_json::from_slice::<Value>(&b).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let (n1, r1) = load(&http, std::slice::from_ref(&base_a), &key, secs, clients).await;
    println!("one instance:  {n1} responses in {secs} s: {r1:.0} requests/s ({clients} clients)");
    let (mut b, base_b) = spawn(&url, dir.path(), 1);
    ready(&http, &base_b).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the key reaches B through the change feed
    let (n2, r2) = load(
        &http,
        &[base_a.clone(), base_b.clone()],
        &key,
        secs,
        clients,
    )
    .await;
    println!("two instances: {n2} responses in {secs} s: {r2:.0} requests/s ({clients} clients)");
    let store = tollgate_store::Store::connect(&url, 1).await.unwrap();
    let (records, _, _) = store.ledger_totals().await.unwrap();
    println!(
        "ledger: {records} records for {} completed responses",
        n1 + n2
    );
    let _ = a.kill();
    let _ = b.kill();
}
