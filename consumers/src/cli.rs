//! The `audit-sink` command line, shared by the binary and the test harness.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::metrics::SinkMetrics;
use crate::SinkConfig;

/// Writes processed audit events into a store, as its own consumer group.
#[derive(Debug, Parser)]
#[command(name = "audit-sink", version, about)]
struct Args {
    /// TOML config file (defaults ← file ← AUDIT_<SECTION>__<KEY> env).
    #[arg(long, short, env = "AUDIT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the config, print the effective values and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the store's migrations and exit (PostgreSQL, SQLite).
    Migrate,
}

/// Exit codes: 0 clean shutdown, 1 runtime failure, 2 invalid config.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match SinkConfig::load(args.config.as_deref()).and_then(SinkConfig::validate) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("audit-sink: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        match toml::to_string(&settings.config) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot print the config: {e}"),
        }
        eprintln!("audit-sink: config OK ({} sink, group {})", settings.store.kind(), settings.config.kafka.group_id);
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit-sink: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        audit_service::cancel_on_signal(shutdown.clone());
        let metrics = match SinkMetrics::new(settings.store.kind(), &settings.config.kafka.group_id) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("audit-sink: metrics: {e}");
                return ExitCode::from(1);
            }
        };
        if matches!(args.command, Some(Command::Migrate)) {
            // Stores without migrations: `migrate` runs the sink as usual.
            let applied = settings.store.migrate(settings.store_url.as_deref()).await;
            match applied {
                Some(Ok(())) => {
                    eprintln!("audit-sink: migrations applied");
                    return ExitCode::SUCCESS;
                }
                Some(Err(e)) => {
                    eprintln!("audit-sink: {e}");
                    return ExitCode::from(1);
                }
                None => {}
            }
        }
        let result = crate::run_store(settings, metrics, shutdown).await;
        match result {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "audit-sink stopped");
                eprintln!("audit-sink: {e}");
                ExitCode::from(1)
            }
        }
    })
}
