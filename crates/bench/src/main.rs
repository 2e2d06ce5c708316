//! `tollgate-bench`: the load harness. Runs every scenario directly against mock upstreams,
//! through tollgate and optionally through LiteLLM, prints comparison tables and writes JSON.
//!
//! `tollgate-bench mock ...` runs one mock upstream; the harness starts its mocks that way, as
//! child processes, so their CPU is not counted as the harness's.

mod harness;
mod invoice;
mod load;
mod procs;
mod report;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tollgate_mock::{Behavior, MockConfig, MockUpstream};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", version, about = "Tollgate load harness")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Short runs (about 2 s per scenario, under ~2 minutes in all).
    #[arg(long)]
    quick: bool,
    /// Also benchmark LiteLLM's proxy (installed into .venv-litellm on first use).
    #[arg(long)]
    litellm: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/latest.json")]
    out: PathBuf,
    /// Use this tollgate binary instead of target/release/tollgate.
    #[arg(long)]
    tollgate_bin: Option<PathBuf>,
    /// Do not run `cargo build --release -p tollgate` first.
    #[arg(long)]
    no_build: bool,
    /// Only run scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Also run every scenario through a second Tollgate with `durability = "relaxed"` (records
    /// committed in the background), to show what strict durability's fsync adds.
    #[arg(long)]
    relaxed: bool,
    /// Also run every scenario through a Tollgate whose store is a throwaway PostgreSQL
    /// (started from the installed server binaries, as the tests do).
    #[arg(long)]
    postgres: bool,
    /// LiteLLM `--num_workers`.
    #[arg(long, default_value_t = 2)]
    litellm_workers: usize,
    /// Split each timed scenario into this many rounds, the targets taking turns within each
    /// round, so all of them sample the same spells of machine noise (their rounds are summed).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Also run every scenario through this second tollgate binary (strict, SQLite), as target
    /// `tollgate-versus`: a before/after of two builds measured side by side in one run.
    #[arg(long)]
    versus: Option<PathBuf>,
    /// Also run nginx (Debian package) as a bare keep-alive reverse proxy in front of the plain
    /// mock, as target `nginx`: an anchor for what one proxy hop costs (plain chat scenarios).
    #[arg(long)]
    nginx: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one mock upstream until killed (prints its address on stdout).
    Mock(MockArgs),
    /// Time a month's invoice for one organization over many usage records (10 million by
    /// default; about 3 GB of temporary disk).
    Invoice(InvoiceArgs),
}

#[derive(Debug, Args)]
struct InvoiceArgs {
    /// Usage records written for the organization over the month.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Times the invoice is fetched.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Use this tollgate binary instead of target/release/tollgate.
    #[arg(long)]
    tollgate_bin: Option<PathBuf>,
    /// Do not run `cargo build --release -p tollgate` first.
    #[arg(long)]
    no_build: bool,
}

#[derive(Debug, Args)]
struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 16)]
    response_tokens: u32,
    #[arg(long)]
    stream_chunks: Option<u32>,
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
    /// Always answer this status.
    #[arg(long)]
    status: Option<u16>,
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Tokio worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Exit when stdin reaches end of file (the harness holds the other end).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    rt.build().context("building the tokio runtime")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Mock(args)) => {
            let rt = runtime(args.threads)?;
            rt.block_on(run_mock(args))
        }
        Some(Cmd::Invoice(args)) => {
            let rt = runtime(None)?;
            rt.block_on(invoice::run(&invoice::InvoiceOptions {
                records: args.records,
                tollgate_bin: args.tollgate_bin,
                no_build: args.no_build,
                repeats: args.repeats,
            }))
        }
        None => {
            let b = cli.bench;
            let opts = harness::Options {
                quick: b.quick,
                litellm: b.litellm,
                out: b.out,
                tollgate_bin: b.tollgate_bin,
                no_build: b.no_build,
                only: b.only,
                litellm_workers: b.litellm_workers.max(1),
                relaxed: b.relaxed,
                postgres: b.postgres,
                rounds: b.rounds.max(1),
                versus: b.versus,
                nginx: b.nginx,
            };
            let rt = runtime(None)?;
            let doc = rt.block_on(async {
                // On Ctrl-C / SIGTERM the plan is dropped, which kills every child process.
                tokio::select! {
                    doc = harness::run(&opts) => doc,
                    sig = interrupted() => Err(anyhow::anyhow!("interrupted by {sig}")),
                }
            })?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", report::main_table(&doc))?;
            let streams = report::stream_table(&doc);
            if !streams.is_empty() {
                writeln!(out, "{streams}")?;
            }
            for n in &doc.notes {
                writeln!(out, "note: {n}")?;
            }
            writeln!(out, "results written to {}", opts.out.display())?;
            Ok(())
        }
    }
}

async fn run_mock(args: MockArgs) -> anyhow::Result<()> {
    let config = MockConfig {
        behavior: args.status.map_or(Behavior::Ok, Behavior::Status),
        response_tokens: args.response_tokens,
        stream_chunks: args.stream_chunks,
        ttft: Duration::from_millis(args.ttft_ms),
        chunk_gap: Duration::from_millis(args.chunk_gap_ms),
        fail_first: args.fail_first,
        record_requests: false,
        ..MockConfig::default()
    };
    let mock = MockUpstream::start_on(args.listen, config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tollgate-mock listening on http://{}", mock.addr())?;
        out.flush()?;
    }
    // Runs until killed, Ctrl-C, or (with --exit-on-stdin-eof) the parent going away.
    if args.exit_on_stdin_eof {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        let eof = async {
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = eof => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(mock);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
