//! The `auditctl` command line, shared by the binary and the test harness: parses the arguments,
//! calls the library and prints.

use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{Source, VerifyRequest, EXIT_UNREADABLE, EXIT_USAGE};
use audit_schema::wire::topics;
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
    /// Exit codes: 0 intact, 1 tampered, 2 incomplete, 3 the source could not be read, 4 unverified
    /// (nothing verified, or no signed checkpoint although --public-key was given), 5 partial (the
    /// processed topic no longer holds a chain's start).
    Verify {
        /// jsonl:DIR (or a directory), sqlite:PATH, postgres://…, mongodb://host/DB?…#COLLECTION,
        /// kafka://HOST:PORT/TOPIC.
        #[arg(long, short, env = "AUDITCTL_SOURCE")]
        source: String,
        /// Only this chain (`<raw topic>/<partition>`).
        #[arg(long)]
        chain: Option<String>,
        /// Select this tenant's events, as their verified content says (SQL stores hand over only
        /// the links of other tenants' rows; everything handed over is verified).
        #[arg(long)]
        tenant: Option<String>,
        /// Select the events received at or after this RFC 3339 time (every chain is still
        /// verified whole; selecting nothing is unverified).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Select the events received at or before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Witness file of signed checkpoints (JSONL), kept apart from the store, to check the
        /// chains against as well: a chain must reach each checkpoint's seq with its hash
        /// (truncation, rewrites). Needs --public-key.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Public key file(s) the checkpoints are signed with (repeat after a key rotation), or a
        /// directory of them. With a key, the checkpoints the store itself holds are checked too.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow the processed topic (filters: tenant, action prefix, chain).
    Tail {
        /// Bootstrap servers.
        #[arg(long, env = "AUDIT_KAFKA__BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Processed topic.
        #[arg(long, default_value = topics::PROCESSED)]
        topic: String,
        /// Start from the oldest record instead of the end.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        filter: crate::tail::EventFilter,
        /// Print each event as JSON (one per line) instead of a summary line.
        #[arg(long)]
        json: bool,
    },
    /// Export events from a store (tenant, time range on occurredAt) as JSONL or CSV.
    Export {
        /// A store, as for verify.
        #[arg(long, short, env = "AUDITCTL_SOURCE")]
        source: String,
        #[command(flatten)]
        filter: crate::tail::EventFilter,
        /// Only events that occurred at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events that occurred at or before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: crate::export::Format,
        /// Output file (standard output when absent).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Dead letters: list them, replay fixed ones to the raw topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
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
    /// Run sample events (one JSON object per line) through the processor's pipeline and policy,
    /// without a broker: what the processor would publish goes to standard output, a JSON line
    /// per input line (a quarantine entry for a line it would dead-letter), a summary to standard
    /// error.
    ///
    /// The config is loaded as the processor loads it: defaults ← AUDIT_PRESET ← --config ←
    /// AUDIT_<SECTION>__<KEY> variables. Exit codes: 0 every line processed (dead letters
    /// included), 1 the output could not be written, 2 bad config or arguments, 3 the input could
    /// not be read.
    Redact {
        /// The processor's TOML config file.
        #[arg(long, short, env = "AUDIT_CONFIG")]
        config: Option<PathBuf>,
        /// Broker time given to every record (RFC 3339), so that two runs can be compared byte
        /// for byte; the current time when absent.
        #[arg(long, value_parser = parse_time)]
        received_at: Option<DateTime<Utc>>,
        /// Events, one JSON object per line; - or nothing for standard input.
        file: Option<PathBuf>,
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
enum DlqCommand {
    /// List the dead letters of a topic with their class, reason and source.
    List {
        /// Bootstrap servers.
        #[arg(long, env = "AUDIT_KAFKA__BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Dead-letter topic (the processor's, or a sink's `<processed>.dlq.<group>`).
        #[arg(long, default_value = topics::DEAD_LETTERS)]
        topic: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish a dead letter (or a fixed version of it) to the raw topic again.
    Replay {
        /// Bootstrap servers.
        #[arg(long, env = "AUDIT_KAFKA__BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Dead-letter topic.
        #[arg(long, default_value = topics::DEAD_LETTERS)]
        topic: String,
        /// Which dead letter: PARTITION/OFFSET, as `dlq list` prints it.
        #[arg(long, value_parser = parse_position)]
        record: (i32, i64),
        /// A file with the fixed payload to send instead of the original.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// The raw topic.
        #[arg(long, default_value = topics::RAW)]
        raw_topic: String,
    },
}

fn parse_position(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected PARTITION/OFFSET, like 0/17"))?;
    Ok((p.parse().map_err(|e| format!("partition {p:?}: {e}"))?, o.parse().map_err(|e| format!("offset {o:?}: {e}"))?))
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
        Command::Tail { brokers, topic, from_beginning, limit, filter, json } => {
            let mut print = |event: &serde_json::Value| {
                if json {
                    println!("{event}");
                } else {
                    println!("{}", crate::tail::human_line(event));
                }
                Ok(())
            };
            match crate::tail::follow(&brokers, &topic, from_beginning, &filter, limit, &mut print) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("auditctl tail: {e:#}");
                    ExitCode::from(EXIT_UNREADABLE)
                }
            }
        }
        Command::Export { source, filter, since, until, format, out } => {
            let source: Source = match source.parse() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("auditctl export: {e:#}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let mut writer: Box<dyn std::io::Write + Send> = match &out {
                Some(path) => match std::fs::File::create(path) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        eprintln!("auditctl export: cannot create {}: {e}", path.display());
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
                None => Box::new(std::io::stdout()),
            };
            match runtime().block_on(crate::export::export(&source, &filter, since, until, format, &mut *writer)) {
                Ok(n) => {
                    eprintln!("auditctl export: {n} events");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("auditctl export: {e:#}");
                    ExitCode::from(EXIT_UNREADABLE)
                }
            }
        }
        Command::Dlq { command: DlqCommand::List { brokers, topic, json } } => match crate::dlq::list(&brokers, &topic)
        {
            Ok(letters) => {
                for letter in &letters {
                    if json {
                        println!("{}", serde_json::to_string(letter).expect("JSON"));
                    } else {
                        println!("{}", letter.line());
                    }
                }
                if !json {
                    eprintln!("{} dead letters in {topic}", letters.len());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("auditctl dlq list: {e:#}");
                ExitCode::from(EXIT_UNREADABLE)
            }
        },
        Command::Dlq {
            command: DlqCommand::Replay { brokers, topic, record: (partition, offset), payload, raw_topic },
        } => {
            let fixed = match payload.as_deref().map(std::fs::read).transpose() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("auditctl dlq replay: cannot read the payload file: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match runtime().block_on(crate::dlq::replay(&brokers, &topic, partition, offset, fixed, &raw_topic)) {
                Ok((p, o)) => {
                    println!("replayed {topic}/{partition}/{offset} to {raw_topic}/{p}/{o}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("auditctl dlq replay: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
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
            let request = VerifyRequest { chain, tenant, since, until, checkpoints, public_keys, recent_heads: None };
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
        Command::Redact { config, received_at, file } => redact(config.as_deref(), received_at, file.as_deref()),
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

/// `auditctl redact`.
fn redact(config: Option<&Path>, received_at: Option<DateTime<Utc>>, file: Option<&Path>) -> ExitCode {
    use crate::redact::{load_settings, render_summary, RedactError, RedactSummary, EXIT_BAD_CONFIG};
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("auditctl redact: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut input: Box<dyn BufRead> = match file.filter(|f| *f != Path::new("-")) {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                eprintln!("auditctl redact: cannot read {}: {e}", path.display());
                return ExitCode::from(EXIT_UNREADABLE);
            }
        },
        None => Box::new(std::io::stdin().lock()),
    };
    let mut output = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let received_at_ms = received_at.unwrap_or_else(Utc::now).timestamp_millis();
    let mut summary = RedactSummary::default();
    // Flushed whatever happened: what was read before an input error is written too.
    let result = crate::redact::redact(&settings, received_at_ms, &mut input, &mut output, &mut summary)
        .and(output.flush().map_err(RedactError::Write));
    eprint!("{}", render_summary(&summary));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auditctl redact: {e}");
            ExitCode::from(match e {
                RedactError::Read { .. } => EXIT_UNREADABLE,
                RedactError::Write(_) => 1,
            })
        }
    }
}
