//! `tollgate-mock` binary: runs the mock OpenAI-compatible upstream until Ctrl-C / SIGTERM.
//!
//! Prints `tollgate-mock listening on http://ADDR` on stdout once bound (useful with port 0).

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tollgate_mock::{Behavior, MockConfig, MockUpstream, UsageMode};

/// Usage reporting mode on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum UsageArg {
    Always,
    Never,
    EveryChunk,
}

/// A fast mock OpenAI-compatible upstream.
#[derive(Debug, Parser)]
#[command(name = "tollgate-mock", version)]
struct Args {
    /// Address to listen on (port 0 = ephemeral).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Completion tokens per answer.
    #[arg(long, default_value_t = 16)]
    response_tokens: u32,
    /// Content chunks per stream (default: one per token).
    #[arg(long)]
    stream_chunks: Option<u32>,
    /// Delay before the first byte, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Delay between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
    /// The first N requests fail with --fail-status.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Status used by --fail-first.
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Always answer this status with an OpenAI error body.
    #[arg(long, conflicts_with_all = ["hang", "close_mid_stream"])]
    status: Option<u16>,
    /// Accept requests and never answer.
    #[arg(long, conflicts_with = "close_mid_stream")]
    hang: bool,
    /// Send half of each response, then drop the connection.
    #[arg(long)]
    close_mid_stream: bool,
    /// How usage is reported.
    #[arg(long, value_enum, default_value = "always")]
    usage: UsageArg,
    /// Write each SSE event in several flushed pieces.
    #[arg(long)]
    split_writes: bool,
    /// Interleave `: keep-alive` comments between SSE events.
    #[arg(long)]
    keepalive_comments: bool,
    /// Reported cached prompt tokens.
    #[arg(long, default_value_t = 0)]
    cached_tokens: u32,
    /// Reported Anthropic cache writes (`cache_creation_input_tokens`).
    #[arg(long, default_value_t = 0)]
    cache_write_tokens: u32,
    /// Reported reasoning tokens.
    #[arg(long, default_value_t = 0)]
    reasoning_tokens: u32,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl Args {
    fn config(&self) -> MockConfig {
        let behavior = if let Some(s) = self.status {
            Behavior::Status(s)
        } else if self.hang {
            Behavior::Hang
        } else if self.close_mid_stream {
            Behavior::CloseMidStream
        } else {
            Behavior::Ok
        };
        MockConfig {
            behavior,
            response_tokens: self.response_tokens,
            stream_chunks: self.stream_chunks,
            ttft: Duration::from_millis(self.ttft_ms),
            chunk_gap: Duration::from_millis(self.chunk_gap_ms),
            usage: match self.usage {
                UsageArg::Always => UsageMode::Always,
                UsageArg::Never => UsageMode::Never,
                UsageArg::EveryChunk => UsageMode::EveryChunk,
            },
            split_writes: self.split_writes,
            keepalive_comments: self.keepalive_comments,
            fail_first: self.fail_first,
            fail_status: self.fail_status,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
            record_requests: false,
            ..MockConfig::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("building the tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mock = MockUpstream::start_on(args.listen, args.config())
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tollgate-mock listening on http://{}", mock.addr())?;
        out.flush()?;
    }
    wait_for_signal().await;
    drop(mock);
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
