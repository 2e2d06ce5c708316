//! `tollgate guard …`: backtest the distillation detector over recorded traffic.
//!
//! `tollgate guard replay --input FILE [--json] [--config PATH] [--min-requests N]
//! [--threshold X] [--benchmark FILE]…` runs the same detector as the gateway, in event time, over
//! JSON Lines of requests and reports per organization (a table, or the contract JSON
//! `{"organizations": [...]}` with `--json`). Detector settings come from `[guard.detector]` of
//! `--config` when given, otherwise the defaults; the flags override them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tollgate_guard::{DetectorSettings, render_table, replay};

#[derive(Subcommand)]
pub enum GuardCommand {
    /// Replay recorded traffic (JSON Lines) through the detector and report per organization.
    Replay {
        /// JSON Lines file: {"time", "organization", "key", "client_ip", "endpoint", "body", "output_tokens"?}; `-` reads stdin.
        #[arg(long)]
        input: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Take detector settings from this config file's [guard.detector].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Requests an organization must make before it can be flagged.
        #[arg(long)]
        min_requests: Option<u64>,
        /// Flag threshold (0..1).
        #[arg(long)]
        threshold: Option<f64>,
        /// Public prompt sets for benchmark-overlap detection (repeatable).
        #[arg(long = "benchmark")]
        benchmarks: Vec<PathBuf>,
    },
}

/// Runs one guard command.
pub fn run(cmd: GuardCommand) -> anyhow::Result<()> {
    match cmd {
        GuardCommand::Replay {
            input,
            json,
            config,
            min_requests,
            threshold,
            benchmarks,
        } => {
            let mut settings = match &config {
                Some(path) => tollgate_config::Config::load(path)?.guard.detector,
                None => DetectorSettings::default(),
            };
            if let Some(n) = min_requests {
                settings.min_requests = n;
            }
            if let Some(t) = threshold {
                settings.flag_threshold = t;
            }
            settings.benchmark_files.extend(benchmarks);
            // Progress on stderr by bytes read (hidden off a terminal and with --json).
            let report = if input.as_os_str() == "-" {
                let pb = crate::progress::spinner("replaying", json);
                let report = replay(
                    std::io::BufReader::new(pb.wrap_read(std::io::stdin().lock())),
                    &settings,
                )?;
                pb.finish_and_clear();
                report
            } else {
                let file = std::fs::File::open(&input)
                    .with_context(|| format!("cannot open {}", input.display()))?;
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let pb = crate::progress::bar(len, crate::progress::Unit::Bytes, "replaying", json);
                let report = replay(std::io::BufReader::new(pb.wrap_read(file)), &settings)?;
                pb.finish_and_clear();
                report
            };
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", render_table(&report))?;
            }
            out.flush()?;
            Ok(())
        }
    }
}
