//! The `tollgate` binary: `serve`, `migrate`, `guard replay`, and the admin CLI (a client of the
//! admin API). All logic lives in the library crates; this file wires them to the command line.

mod cli;
mod events;
mod guard_cli;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_config::Config;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An OpenAI-compatible gateway that meters, bills and polices resold model access."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config: the embedded default (SQLite and simulated models under --data-dir).
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory of the embedded default.
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
        data_dir: PathBuf,
        /// Listen address (overrides the config).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply schema migrations to the configured store and exit; with --from/--to, copy one
    /// store into another (progress bar on a terminal).
    Migrate {
        /// Config file (TOML) whose [storage] to migrate.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory of the embedded default.
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
        data_dir: PathBuf,
        /// Copy everything from this store (e.g. sqlite://tollgate-data/ledger.db) …
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// … into this one (e.g. postgres://user:pass@host:5432/tollgate), then verify counts
        /// and totals. Safe to rerun.
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Distillation detector tools: `guard replay` backtests recorded traffic.
    Guard {
        #[command(subcommand)]
        cmd: guard_cli::GuardCommand,
    },
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn load_config(
    config: Option<&PathBuf>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Config, bool)> {
    match config {
        Some(path) => Ok((Config::load(path)?, false)),
        None => {
            let mut c = Config::embedded(data_dir);
            c.apply_env(|k| std::env::var(k).ok());
            c.validate()?;
            Ok((c, true))
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: logs redirected to a file or a pipe stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn serve(
    config: Option<PathBuf>,
    data_dir: PathBuf,
    listen: Option<String>,
) -> anyhow::Result<()> {
    let (mut config, embedded) = load_config(config.as_ref(), &data_dir)?;
    if let Some(l) = listen {
        config.server.listen = l;
        config.validate()?;
    }
    if embedded && config.server.admin_token.is_none() {
        config.server.admin_token = Some(
            tollgate_gateway::bootstrap::admin_token_file(&data_dir)
                .context("cannot create the admin token file")?,
        );
    }
    let app = tollgate_gateway::App::start(config).await?;
    let demo_key = if embedded {
        tollgate_gateway::bootstrap::ensure_demo(&app, &data_dir)
            .await
            .map_err(anyhow::Error::msg)?
    } else {
        None
    };
    let listener = tollgate_gateway::server::bind(&app)
        .await
        .with_context(|| format!("cannot listen on {}", app.config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, models = app.models.len(), "Tollgate is serving.");
    if embedded {
        let mut out = std::io::stdout().lock();
        use std::io::Write;
        writeln!(
            out,
            "Tollgate is serving on http://{addr} (data in {})",
            data_dir.display()
        )?;
        writeln!(
            out,
            "  admin token: {}   (also in {}/admin-token)",
            app.admin_token,
            data_dir.display()
        )?;
        if let Some(k) = &demo_key {
            writeln!(
                out,
                "  demo key:    {k}   (also in {}/demo-key)",
                data_dir.display()
            )?;
        }
        writeln!(out, "  models:      {}", app.model_order.join(", "))?;
        writeln!(
            out,
            "  console:     http://{addr}/console/   (sign in with the admin token)"
        )?;
        out.flush()?;
    }
    tollgate_gateway::server::serve(app, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                data_dir,
                listen,
            } => {
                init_tracing();
                serve(config, data_dir, listen).await
            }
            Command::Migrate {
                config,
                data_dir,
                from: Some(from),
                to: Some(to),
            } => {
                let _ = (config, data_dir);
                // Progress on stderr while records are copied (hidden off a terminal).
                let pb = progress::bar(0, progress::Unit::Items, "records", false);
                let r = tollgate_store::copy_store_with_progress(&from, &to, |done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                })
                .await;
                pb.finish_and_clear();
                let r = r?;
                eprintln!(
                    "copied {} organizations, {} projects, {} keys, {} prices; {} usage records ({} new)\nverified: source {:?} target {:?} (records, input tokens, output tokens)",
                    r.organizations, r.projects, r.keys, r.prices, r.records, r.records_new, r.source_totals, r.target_totals
                );
                Ok(())
            }
            Command::Migrate {
                config, data_dir, ..
            } => {
                let (config, _) = load_config(config.as_ref(), &data_dir)?;
                tollgate_store::Store::connect(&config.storage.url, 1).await?;
                eprintln!("migrations applied to {}", config.storage.url);
                Ok(())
            }
            Command::Guard { cmd } => guard_cli::run(cmd),
            Command::Admin(cmd) => cli::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
