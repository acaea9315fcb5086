//! `auditctl`: what an operator, an auditor and a newcomer use.
//!
//! **Status: early.** The CLI issue fills this crate with signed checkpoints, `verify` from any sink,
//! `topics create`, `tail`, `export`, `dlq list|replay` and the one-command `demo`. Today it offers
//! `auditctl hash`, which prints the RFC 8785 canonical form and the chain hash of a processed event,
//! the same computation the processor and every verifier perform.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use audit_schema::{canonical, chain};

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
