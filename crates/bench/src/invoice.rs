//! `tollgate-bench invoice`: a month's invoice for one organization over millions of usage
//! records. Starts the gateway on a fresh SQLite ledger, creates the organization through the
//! admin API, writes the records into the same ledger file with the store's own `Ledger::import`
//! (atomic batches, strict durability: the path the gateway's writer takes, minus HTTP), then
//! times `GET /admin/v1/invoices/{org}/{month}` and checks its token totals against what was
//! written.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hyper::Method;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::process::Command;
use tollgate_store::{Ledger, UsageRecord};

use crate::{harness, load, procs};

/// What `invoice` is asked to do.
pub struct InvoiceOptions {
    pub records: u64,
    pub tollgate_bin: Option<PathBuf>,
    pub no_build: bool,
    /// Times the invoice is fetched (the median and the slowest are reported).
    pub repeats: usize,
}

const MODELS: [&str; 3] = ["bench-a", "bench-b", "bench-c"];
/// October 2026: a closed month of 31 days.
const MONTH: &str = "2026-10";
const MONTH_START: OffsetDateTime = datetime!(2026-10-01 00:00 UTC);
const MONTH_SECONDS: u64 = 31 * 86_400;
const BATCH: u64 = 50_000;

fn config(listen: SocketAddr, db: &std::path::Path) -> String {
    let mut c = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_token = \"bench-admin\"\n\n[storage]\nurl = \"sqlite://{}\"\n\n[[providers]]\nname = \"sim\"\nkind = \"simulated\"\n\n",
        db.display()
    );
    for (i, m) in MODELS.iter().enumerate() {
        c += &format!(
            "[[models]]\nname = \"{m}\"\nprovider = \"sim\"\ninput_price = \"0.{i}5\"\noutput_price = \"0.60\"\n\n"
        );
    }
    c
}

/// Record `i` of `n`, spread evenly over the month.
fn record(org: &str, i: u64, n: u64) -> UsageRecord {
    let offset_us = i * (MONTH_SECONDS * 1_000_000 / n.max(1));
    UsageRecord {
        id: format!("req_inv_{i:012}"),
        time: MONTH_START + Duration::from_micros(offset_us),
        organization: org.to_owned(),
        project: Some(format!("proj_{}", i % 4)),
        key: Some(format!("key_{}", i % 16)),
        model: MODELS[(i % 3) as usize].into(),
        provider: "sim".into(),
        upstream_model: MODELS[(i % 3) as usize].into(),
        input_tokens: 100 + i % 50,
        cached_input_tokens: i % 20,
        cache_write_input_tokens: 0,
        output_tokens: 16 + i % 7,
        reasoning_tokens: 0,
        status: 200,
        latency_ms: 20,
        streamed: i % 2 == 0,
        estimated: false,
        source: "gateway".into(),
    }
}

/// Runs the invoice benchmark and prints its figures.
pub async fn run(opts: &InvoiceOptions) -> anyhow::Result<()> {
    let bin = harness::tollgate_binary_at(opts.tollgate_bin.as_ref(), opts.no_build).await?;
    let dir = tempfile::Builder::new()
        .prefix("tollgate-invoice-")
        .tempdir()?;
    let db = dir.path().join("ledger.db");
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::free_port()?));
    let cfg = dir.path().join("tollgate.toml");
    std::fs::write(&cfg, config(listen, &db))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve").arg("--config").arg(&cfg);
    let server = procs::spawn_server(
        "tollgate",
        cmd,
        listen,
        "/healthz",
        &dir.path().join("tollgate.log"),
        Duration::from_secs(30),
    )
    .await?;
    let (status, body) = load::call(
        listen,
        Method::POST,
        "/admin/v1/organizations",
        Some("bench-admin"),
        Some(&serde_json::json!({"name": "invoiced"})),
    )
    .await?;
    if status != 201 && status != 200 {
        bail!(
            "creating the organization: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let org: serde_json::Value = serde_json::from_slice(&body)?;
    let org = org["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no organization id in {org}"))?
        .to_owned();

    eprintln!(
        "[bench] writing {} records for {org} over {MONTH} into {}",
        opts.records,
        db.display()
    );
    let ledger = Ledger::open(db.to_str().context("non-UTF-8 temp path")?, true, 8192)?;
    let (mut input, mut output) = (0u64, 0u64);
    let began = Instant::now();
    let mut i = 0;
    while i < opts.records {
        let end = (i + BATCH).min(opts.records);
        let batch: Vec<UsageRecord> = (i..end).map(|j| record(&org, j, opts.records)).collect();
        for r in &batch {
            input += r.input_tokens;
            output += r.output_tokens;
        }
        let news = ledger.import(batch).await?;
        if news.iter().any(|n| !n) {
            bail!("records {i}..{end}: some were already recorded");
        }
        i = end;
    }
    let wrote = began.elapsed();
    eprintln!(
        "[bench] wrote them in {:.1} s ({:.0} records/s)",
        wrote.as_secs_f64(),
        opts.records as f64 / wrote.as_secs_f64()
    );

    let path = format!("/admin/v1/invoices/{org}/{MONTH}");
    let mut times = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..opts.repeats.max(1) {
        let t = Instant::now();
        let (status, body) =
            load::call(listen, Method::GET, &path, Some("bench-admin"), None).await?;
        times.push(t.elapsed());
        if status != 200 {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        last = serde_json::from_slice(&body)?;
    }
    let lines = last["lines"]
        .as_array()
        .ok_or_else(|| anyhow!("no lines in {last}"))?;
    let sum = |field: &str| -> u64 { lines.iter().filter_map(|l| l[field].as_u64()).sum() };
    let (got_in, got_out) = (sum("input_tokens"), sum("output_tokens"));
    if (got_in, got_out) != (input, output) {
        bail!("invoice tokens {got_in}/{got_out} differ from the ledger's {input}/{output}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "invoice of one organization for {MONTH} over {} records: median {:.1} ms, slowest {:.1} ms ({} fetches); lines {}, total {} USD, tokens in/out {}/{} match the ledger",
        opts.records,
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len(),
        lines.len(),
        last["total"],
        input,
        output
    )?;
    server.stop().await;
    Ok(())
}
