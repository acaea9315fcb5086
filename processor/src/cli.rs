//! The `audit-processor` command line, shared by the binary and the test harness.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::ProcessorConfig;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Consumes the raw audit topic and publishes redacted, limited, hash-chained events.
#[derive(Debug, Parser)]
#[command(name = "audit-processor", version, about)]
struct Args {
    /// TOML config file (defaults ← AUDIT_PRESET ← file ← AUDIT_<SECTION>__<KEY> env).
    #[arg(long, short, env = "AUDIT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the config, print the effective values and exit.
    #[arg(long)]
    check_config: bool,
}

/// Parses the command line, loads and validates the config, starts telemetry and runs until
/// SIGTERM/SIGINT. Exit codes: 0 clean shutdown, 1 runtime failure, 2 invalid config.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match ProcessorConfig::load(args.config.as_deref()).and_then(ProcessorConfig::validate) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("audit-processor: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        match toml::to_string(&settings.config) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot print the config: {e}"),
        }
        eprintln!("audit-processor: config OK (redaction policy {})", settings.policy.version());
        return ExitCode::SUCCESS;
    }
    let telemetry = match crate::telemetry::Telemetry::init(&settings.config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("audit-processor: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit-processor: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        audit_service::cancel_on_signal(shutdown.clone());
        match crate::run(settings, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "audit-processor stopped");
                eprintln!("audit-processor: {e}");
                ExitCode::from(1)
            }
        }
    });
    telemetry.shutdown();
    code
}
