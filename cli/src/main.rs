//! `auditctl` binary: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Print the RFC 8785 canonical form and the chain hash of a processed event (JSON file or -).
    Hash {
        /// JSON file, or - for standard input.
        file: PathBuf,
    },
    /// Run the whole pipeline on an embedded default (not delivered yet).
    Demo,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Hash { file } => match auditctl::hash_file(&file) {
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
                ExitCode::from(3)
            }
        },
        Command::Demo => {
            eprintln!("auditctl demo: not delivered yet; it arrives with the CLI issue (see README.md).");
            ExitCode::from(2)
        }
    }
}
