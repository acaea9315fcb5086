//! `auditctl`: what an operator, an auditor and a newcomer use.
//!
//! * [`verify`]: reads the chains a store holds ([`source::Source`]: a JSONL directory,
//!   PostgreSQL, SQLite, MongoDB or the processed topic) and reports every break: content that
//!   does not hash to its recorded hash, broken links, missing or reordered seqs, forks, and raw
//!   input no event accounts for, and whatever it could not read or verify. Exit codes: 0 intact,
//!   1 tampered, 2 incomplete, 3 unreadable, 4 unverified, 5 partial. `verify/report.rs` holds the
//!   verdicts, findings and report, `verify/checkpoints.rs` the pinned keys, signed checkpoints and
//!   attestation.
//! * [`keys`]: `auditctl keys generate`, the Ed25519 pair the processor signs checkpoints with;
//!   `verify --checkpoints --public-key` checks a store's chains against them.
//! * [`topics`]: `auditctl topics create`, the three topics with matching partitions and retention.
//! * [`tail`], [`export`], [`dlq`]: follow the processed topic; a tenant's events over a time range
//!   from any store as JSONL or CSV; list dead letters and replay fixed ones to the raw topic.
//! * [`hash_file`]: the RFC 8785 canonical form and chain hash of one processed event.
//! * [`redact`]: the processor's pipeline and policy (its config, presets and environment) over
//!   sample events, no broker: how an operator tries a policy before deploying it.
//!
//! The binary (`src/main.rs`, calling [`cli::main`]) only parses the command line and prints; everything it does is a
//! function here, so the tests drive the same code. `docs/CLI.md` documents every command.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use audit_schema::{canonical, chain};

pub mod cli;
pub mod demo;
pub mod dlq;
pub mod export;
pub mod kafka;
pub mod keys;
pub mod redact;
pub mod source;
pub mod tail;
pub mod topics;
pub mod verify;

pub use source::Source;
pub use verify::{verify, Verdict, VerifyReport, VerifyRequest};

/// Exit code when the source could not be read at all.
pub const EXIT_UNREADABLE: u8 = 3;
/// Exit code for a command line or config mistake.
pub const EXIT_USAGE: u8 = 64;

/// Canonical bytes and chain hash of one JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashOutput {
    /// RFC 8785 canonical form of the whole document.
    pub canonical: String,
    /// SHA-256 over the canonical form without `integrity.hash` (the chain hash of an event).
    pub event_hash: String,
    /// The `integrity.hash` the document records, if any.
    pub recorded_hash: Option<String>,
}

/// Hashes the JSON document in `path` (`-` for standard input).
pub fn hash_file(path: &Path) -> anyhow::Result<HashOutput> {
    let mut text = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut text).context("reading standard input")?;
    } else {
        text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let value = audit_schema::codec::parse_json(&text).with_context(|| format!("parsing {}", path.display()))?;
    let canonical = String::from_utf8(canonical::canonicalize(&value)?)?;
    let event_hash = chain::hash_event_value(&value)?;
    let recorded_hash = value.pointer("/integrity/hash").and_then(|h| h.as_str()).map(str::to_owned);
    Ok(HashOutput { canonical, event_hash, recorded_hash })
}
