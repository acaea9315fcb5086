//! The `auditctl` command line, shared by the binary and the test harness: parses the arguments,
//! calls the library and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Source, VerifyRequest, EXIT_UNREADABLE, EXIT_USAGE};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

/// auditstream's command line.
#[derive(Debug, Parser)]
#[command(name = "auditctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify the hash chains a store holds: hashes, links, gaps, forks, unaccounted raw input.
    ///
    /// Exit codes: 0 intact, 1 tampered, 2 incomplete, 3 the source could not be read.
    Verify {
        /// jsonl:DIR (or a directory), sqlite:PATH, postgres://…, mongodb://host/DB?…#COLLECTION,
        /// kafka://HOST:PORT/TOPIC.
        #[arg(long, short, env = "AUDITCTL_SOURCE")]
        source: String,
        /// Only this chain (`<raw topic>/<partition>`).
        #[arg(long)]
        chain: Option<String>,
        /// Hash only this tenant's events (the others' links still count).
        #[arg(long)]
        tenant: Option<String>,
        /// Only the window of events received at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only the window of events received at or before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Witness file of signed checkpoints (JSONL) to check the chains against: a chain must
        /// reach each checkpoint's seq with its hash (truncation, rewrites).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Public key file(s) the checkpoints are signed with (repeat after a key rotation).
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Signing keys for checkpoints.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the RFC 8785 canonical form and the chain hash of a processed event (JSON file or -).
    Hash {
        /// JSON file, or - for standard input.
        file: PathBuf,
    },
    /// Run the whole pipeline on an embedded default: in-process broker (librdkafka's mock
    /// cluster, for this demo only), processor, SQLite and JSONL sinks, then verify every chain.
    Demo {
        /// Directory for the sinks' data (emptied first when it is a previous demo's).
        #[arg(long, default_value = "auditstream-demo")]
        dir: PathBuf,
        /// Good events to publish.
        #[arg(long, default_value_t = 3000)]
        events: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create the raw, processed and dead-letter topics (existing ones are kept and checked).
    Create(crate::topics::TopicsPlan),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make an Ed25519 key pair: <out>/checkpoint.key (secret, mode 0600) and <out>/checkpoint.pub.
    Generate {
        /// Directory to write the two files to (created when missing; existing keys are kept).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-11-26T10:00:00Z ({e})"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Runs `auditctl` with the process's arguments; the exit code says how it went.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Topics { command: TopicsCommand::Create(plan) } => {
            match runtime().block_on(crate::topics::create(&plan)) {
                Ok(outcomes) => {
                    for t in outcomes {
                        let what = if t.created { "created" } else { "exists " };
                        println!("{what} {} ({} partitions)", t.name, t.partitions);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("auditctl topics create: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Keys { command: KeysCommand::Generate { out } } => match crate::keys::generate(&out) {
            Ok(public) => {
                println!("{}", public.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("auditctl keys generate: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Verify { source, chain, tenant, since, until, checkpoints, public_keys, json } => {
            let source: Source = match source.parse() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("auditctl verify: {e:#}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let request = VerifyRequest { chain, tenant, since, until, checkpoints, public_keys };
            let bar = indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {human_pos} events read ({per_sec})")
                    .expect("progress template"),
            );
            if json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let outcome = runtime().block_on(crate::verify(&source, &request, &mut |n| bar.set_position(n)));
            bar.finish_and_clear();
            match outcome {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).expect("report as JSON"));
                    } else {
                        print!("{}", crate::verify::render_text(&report));
                    }
                    ExitCode::from(report.verdict.exit_code())
                }
                Err(e) => {
                    eprintln!("auditctl verify: cannot read {source}: {e:#}");
                    ExitCode::from(EXIT_UNREADABLE)
                }
            }
        }
        Command::Hash { file } => match crate::hash_file(&file) {
            Ok(out) => {
                println!("canonical: {}", out.canonical);
                println!("hash:      {}", out.event_hash);
                match out.recorded_hash {
                    Some(recorded) if recorded == out.event_hash => println!("recorded:  {recorded} (matches)"),
                    Some(recorded) => {
                        println!("recorded:  {recorded} (DOES NOT MATCH)");
                        return ExitCode::from(1);
                    }
                    None => {}
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("auditctl hash: {e:#}");
                ExitCode::from(EXIT_UNREADABLE)
            }
        },
        Command::Demo { dir, events } => {
            let outcome = runtime().block_on(crate::demo::run(&dir, events, &mut |line| println!("demo: {line}")));
            match outcome {
                Ok(report) => {
                    print!("{}", crate::demo::render(&report));
                    ExitCode::from(report.verdict().exit_code())
                }
                Err(e) => {
                    eprintln!("auditctl demo: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
