//! The hash chain: how an event's hash is computed, how a chain starts, and how to verify one.
//!
//! * `hash = lowercase hex SHA-256( JCS( event with integrity.hash removed ) )`. The event carries
//!   `integrity.prevHash`, `seq`, `chain` and `source`, so the hash commits to the event's position and
//!   to everything before it.
//! * Genesis: the first event of a chain has `seq = 1` and `prevHash` = 64 zeros
//!   ([`GENESIS_PREV_HASH`]).
//! * A chain is one raw partition: `chain = "<raw topic>/<partition>"` ([`chain_name`]).
//!
//! [`ChainVerifier`] checks a chain in one pass with bounded memory and classifies every break it
//! finds; [`verify_chain`] is the convenience wrapper over a slice of events.
//!
//! Layout: this module hashes and seals events and keeps a chain's head; `text_hash.rs` hashes
//! stored canonical text without parsing it, and `verify.rs` verifies chains.

mod text_hash;
mod verify;

use std::ops::Range;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{canonicalize_omitting, CanonicalError, Mark};
use crate::{AuditEvent, Integrity, SourceRef};

pub use text_hash::{hash_canonical_text, hash_text_without};
pub use verify::{
    verify_chain, verify_chain_with, BreakKind, ChainLink, ChainReport, ChainVerifier, Finding, Start, VerifyOptions,
};

/// The only hash algorithm of schema version 1.
pub const HASH_ALG: &str = "sha256";

/// `prevHash` of the first event of every chain.
pub const GENESIS_PREV_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The name of the chain that raw `partition` of `topic` feeds.
pub fn chain_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// Why an event could not be hashed or read as a chain link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The event has no canonical form.
    #[error("cannot canonicalize event: {0}")]
    Canonicalize(#[from] CanonicalError),
    /// The event could not be turned into JSON.
    #[error("cannot serialize event: {0}")]
    Serialize(String),
    /// A stored event lacks an integrity field or has one of the wrong type.
    #[error("event has no valid {field}")]
    MissingField {
        /// The dotted field name, e.g. `integrity.seq`.
        field: &'static str,
    },
}

/// SHA-256 over the canonical form of an event given as JSON, with `integrity.hash` left out.
///
/// Verifiers use this on the document exactly as stored, so a field injected into a stored event
/// changes the hash even when the Rust types would not know the field.
pub fn hash_event_value(event: &Value) -> Result<String, ChainError> {
    let mut buf = Vec::with_capacity(1024);
    hash_event_value_with(event, &mut buf)
}

/// [`hash_event_value`] reusing `buf` for the canonical bytes.
pub fn hash_event_value_with(event: &Value, buf: &mut Vec<u8>) -> Result<String, ChainError> {
    buf.clear();
    canonicalize_omitting(event, "integrity", "hash", buf, &mut [])?;
    Ok(hex::encode(Sha256::digest(&buf[..])))
}

/// The canonical form of a sealed event from one canonicalization: sets `integrity.hash` of
/// `event` to its hash and leaves in `buf` the event's canonical bytes, hash included. Returns the
/// hash and the length of the canonical form without the hash member (what the hash covers).
///
/// The event is written once without the member, hashed, and the member is put into its place in
/// the bytes (RFC 8785 order), which gives the same bytes as writing the sealed event again.
pub fn seal_canonical(event: &mut Value, buf: &mut Vec<u8>) -> Result<(String, usize), ChainError> {
    seal_canonical_spans(event, buf, &[], &mut [])
}

/// [`seal_canonical`], also telling where the values of top-level `members` are in `buf`:
/// `spans[i]` is the range of the canonical bytes of member `members[i]` (`None` when the event has
/// none), which are also its canonical form on its own, so the processor sizes and encodes payloads
/// without writing them again.
pub fn seal_canonical_spans(
    event: &mut Value,
    buf: &mut Vec<u8>,
    members: &[&str],
    spans: &mut [Option<Range<usize>>],
) -> Result<(String, usize), ChainError> {
    debug_assert_eq!(members.len(), spans.len(), "one span per member");
    buf.clear();
    let gap = {
        let mut marks: Vec<Mark<'_>> =
            members.iter().map(|name| Mark { value: event.get(name), range: None }).collect();
        let gap = canonicalize_omitting(event, "integrity", "hash", buf, &mut marks)?;
        for (span, mark) in spans.iter_mut().zip(marks) {
            *span = mark.range;
        }
        gap
    };
    let hash = hex::encode(Sha256::digest(&buf[..]));
    let (Some(gap), Some(integrity)) = (gap, event.get_mut("integrity").and_then(Value::as_object_mut)) else {
        return Err(ChainError::MissingField { field: "integrity" });
    };
    let covered = buf.len();
    let member = format!(
        "{}\"hash\":\"{hash}\"{}",
        if gap.comma_before { "," } else { "" },
        if gap.comma_after { "," } else { "" }
    );
    // Bytes from the gap on move right by the member's length.
    for span in spans.iter_mut().flatten() {
        if span.start >= gap.at {
            span.start += member.len();
        }
        if span.end > gap.at {
            span.end += member.len();
        }
    }
    buf.splice(gap.at..gap.at, member.into_bytes());
    integrity.insert("hash".into(), Value::String(hash.clone()));
    Ok((hash, covered))
}

/// The hash of a typed event (its `integrity.hash` is ignored).
pub fn hash_event(event: &AuditEvent) -> Result<String, ChainError> {
    let value = serde_json::to_value(event).map_err(|e| ChainError::Serialize(e.to_string()))?;
    hash_event_value(&value)
}

/// Computes the event's hash and stores it in `integrity.hash`.
pub fn seal(event: &mut AuditEvent) -> Result<(), ChainError> {
    event.integrity.hash = hash_event(event)?;
    Ok(())
}

/// The last link of a chain: what the next event links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// Chain name.
    pub chain: String,
    /// Seq of the last event, 0 for an empty chain.
    pub seq: u64,
    /// Hash of the last event, [`GENESIS_PREV_HASH`] for an empty chain.
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis(chain: impl Into<String>) -> Self {
        ChainHead { chain: chain.into(), seq: 0, hash: GENESIS_PREV_HASH.to_owned() }
    }

    /// The integrity block of the next event (hash still empty; see [`seal`]).
    pub fn next_integrity(&self, source: SourceRef) -> Integrity {
        Integrity {
            alg: HASH_ALG.to_owned(),
            chain: self.chain.clone(),
            seq: self.seq + 1,
            prev_hash: self.hash.clone(),
            hash: String::new(),
            source,
        }
    }

    /// Moves the head to a sealed event that was built from [`ChainHead::next_integrity`].
    pub fn advance(&mut self, sealed: &Integrity) {
        debug_assert_eq!(sealed.seq, self.seq + 1);
        self.seq = sealed.seq;
        self.hash.clone_from(&sealed.hash);
    }
}
