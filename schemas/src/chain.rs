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

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{canonicalize_omitting, CanonicalError, Mark};
use crate::{AuditEvent, Integrity, SourceRef};

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

/// SHA-256 over `text` with the member `hash` of its top-level `integrity` object cut out: the
/// event's hash when `text` is already in canonical form (processed JSON output and the JSONL sink's
/// lines are), with no parsing and no copy. `None` when the member is not found where the canonical
/// form has it. A result that differs from the recorded hash proves nothing by itself (the text may
/// simply not be canonical): then hash the parsed event with [`hash_event_value`].
pub fn hash_canonical_text(text: &[u8]) -> Option<String> {
    let (from, to) = integrity_hash_member(text)?;
    let hex = hash_text_without(text, from..to);
    Some(hex.iter().map(|&b| char::from(b)).collect())
}

/// SHA-256 over `text` without the bytes `cut`, as lowercase hex digits: the event's hash when
/// `text` is its canonical form and `cut` its member `integrity.hash` with the comma that separates
/// it from a neighbour (what [`hash_canonical_text`] finds itself, for readers that found it while
/// reading the text). No allocation: compare the digits with the recorded hash's bytes.
pub fn hash_text_without(text: &[u8], cut: Range<usize>) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Sha256::new();
    hasher.update(&text[..cut.start]);
    hasher.update(&text[cut.end..]);
    let mut hex = [0u8; 64];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(hasher.finalize().iter()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    hex
}

/// The byte range of `"hash":"…"` in the top-level `integrity` object of `text`, with the comma
/// that separates it from a neighbour, so that cutting it leaves valid JSON.
fn integrity_hash_member(text: &[u8]) -> Option<(usize, usize)> {
    let mut i = expect(text, 0, b'{')?;
    loop {
        let (key_start, key_end) = string_at(text, i)?;
        i = expect(text, key_end, b':')?;
        if &text[key_start..key_end] == b"\"integrity\"" {
            return hash_member_in(text, i);
        }
        i = skip_value(text, i)?;
        match text.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

/// Within the object starting at `at`: the range of member `"hash":"<string without escapes>"`.
fn hash_member_in(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut i = expect(text, at, b'{')?;
    let mut first = true;
    loop {
        let member = i;
        let (key_start, key_end) = string_at(text, i)?;
        i = expect(text, key_end, b':')?;
        let value_end = skip_value(text, i)?;
        if &text[key_start..key_end] == b"\"hash\"" {
            if text[i] != b'"' || text[i..value_end].contains(&b'\\') {
                return None;
            }
            return match (first, text.get(value_end)?) {
                (false, _) => Some((member - 1, value_end)),   // the comma before it
                (true, b',') => Some((member, value_end + 1)), // the comma after it
                (true, _) => Some((member, value_end)),
            };
        }
        i = value_end;
        match text.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
        first = false;
    }
}

fn expect(text: &[u8], at: usize, byte: u8) -> Option<usize> {
    (*text.get(at)? == byte).then_some(at + 1)
}

/// The string starting at `at` (its quotes included): `(at, end)`.
fn string_at(text: &[u8], at: usize) -> Option<(usize, usize)> {
    if *text.get(at)? != b'"' {
        return None;
    }
    let mut i = at + 1;
    loop {
        match text.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some((at, i + 1)),
            _ => i += 1,
        }
    }
}

/// The end of the JSON value starting at `at` (compact text: no whitespace between tokens).
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    loop {
        match *text.get(i)? {
            b'"' => i = string_at(text, i)?.1,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
        if depth == 0 && matches!(text.get(i), None | Some(b',' | b'}' | b']')) {
            return Some(i);
        }
    }
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

/// The kinds of chain break a verifier can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// Content does not match its hash, or a link points to a different predecessor.
    Modified,
    /// One or more seqs never appeared.
    Missing,
    /// An event appeared after a later one.
    Reordered,
    /// The same event (same hash) appears twice at one seq.
    Duplicated,
    /// Two different events claim one seq.
    Forked,
}

impl BreakKind {
    /// The name used in reports (`modified`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Modified => "modified",
            BreakKind::Missing => "missing",
            BreakKind::Reordered => "reordered",
            BreakKind::Duplicated => "duplicated",
            BreakKind::Forked => "forked",
        }
    }
}

/// One break in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What kind of break.
    pub kind: BreakKind,
    /// Chain it was found in.
    pub chain: String,
    /// Seq where the chain breaks (the first missing seq for [`BreakKind::Missing`]).
    pub seq: u64,
    /// Event id at that position, when an event is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Human explanation.
    pub detail: String,
}

/// Where a verification starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// The chain must start at seq 1 with the genesis `prevHash`.
    #[default]
    Genesis,
    /// The events continue a known head (e.g. a signed checkpoint).
    After(ChainHead),
    /// Accept whatever seq the first event has (verifying a window of a chain).
    Anywhere,
}

/// Knobs of [`ChainVerifier`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Where the chain starts.
    pub start: Start,
    /// How many recent links are remembered to tell duplicates and forks from reordering.
    pub window: usize,
    /// Findings kept in the report; later ones are counted only.
    pub max_findings: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { start: Start::Genesis, window: 65_536, max_findings: 1_000 }
    }
}

/// One event reduced to what chain verification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// `integrity.chain`.
    pub chain: String,
    /// `integrity.seq`.
    pub seq: u64,
    /// `integrity.prevHash`.
    pub prev_hash: String,
    /// `integrity.hash` as stored.
    pub hash: String,
    /// The hash recomputed from the content.
    pub computed_hash: String,
    /// `eventId`.
    pub event_id: String,
}

impl ChainLink {
    /// Reads a link from a typed event, recomputing its hash.
    pub fn from_event(event: &AuditEvent) -> Result<Self, ChainError> {
        Ok(ChainLink {
            chain: event.integrity.chain.clone(),
            seq: event.integrity.seq,
            prev_hash: event.integrity.prev_hash.clone(),
            hash: event.integrity.hash.clone(),
            computed_hash: hash_event(event)?,
            event_id: event.event_id.clone(),
        })
    }

    /// Reads a link from an event exactly as stored, recomputing its hash over the stored JSON.
    pub fn from_value(event: &Value, buf: &mut Vec<u8>) -> Result<Self, ChainError> {
        let integrity = event.get("integrity").ok_or(ChainError::MissingField { field: "integrity" })?;
        let text = |field: &'static str, name: &str| {
            integrity.get(name).and_then(Value::as_str).map(str::to_owned).ok_or(ChainError::MissingField { field })
        };
        Ok(ChainLink {
            chain: text("integrity.chain", "chain")?,
            seq: integrity
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or(ChainError::MissingField { field: "integrity.seq" })?,
            prev_hash: text("integrity.prevHash", "prevHash")?,
            hash: text("integrity.hash", "hash")?,
            computed_hash: hash_event_value_with(event, buf)?,
            event_id: event.get("eventId").and_then(Value::as_str).unwrap_or_default().to_owned(),
        })
    }
}

/// The outcome of verifying one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// Chain name (from the first event or the start head).
    pub chain: Option<String>,
    /// Events examined.
    pub events: u64,
    /// Lowest seq seen.
    pub first_seq: Option<u64>,
    /// The highest seq seen and its hash: what a checkpoint would sign.
    pub head: Option<ChainHead>,
    /// Breaks found, in the order they were detected (capped by `max_findings`).
    pub findings: Vec<Finding>,
    /// Breaks found beyond the cap.
    pub findings_dropped: u64,
}

impl ChainReport {
    /// True when no break was found.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty() && self.findings_dropped == 0
    }

    /// The earliest break in chain order (lowest seq; at equal seq, in [`BreakKind`] order).
    pub fn first_break(&self) -> Option<&Finding> {
        self.findings.iter().min_by_key(|f| (f.seq, f.kind))
    }
}

#[derive(Debug, Clone)]
struct SeenLink {
    hash: String,
    prev_hash: String,
}

/// Verifies one chain in a single pass, in the order the events were stored or read.
///
/// Memory is bounded by `window` remembered links plus the list of gaps. A seq arriving at or below
/// the highest seq seen so far is a duplicate (same hash as the remembered event), a fork (different
/// hash), or reordered (a seq that had been skipped); gaps still open at [`ChainVerifier::finish`] are
/// missing events.
#[derive(Debug)]
pub struct ChainVerifier {
    options: VerifyOptions,
    report: ChainReport,
    head: Option<(u64, String)>,
    recent: BTreeMap<u64, SeenLink>,
    /// Open gaps, start -> end (inclusive).
    gaps: BTreeMap<u64, u64>,
}

impl ChainVerifier {
    /// A verifier with `options`.
    pub fn new(options: VerifyOptions) -> Self {
        let chain = match &options.start {
            Start::After(head) => Some(head.chain.clone()),
            _ => None,
        };
        ChainVerifier {
            options,
            report: ChainReport {
                chain,
                events: 0,
                first_seq: None,
                head: None,
                findings: Vec::new(),
                findings_dropped: 0,
            },
            head: None,
            recent: BTreeMap::new(),
            gaps: BTreeMap::new(),
        }
    }

    fn find(&mut self, kind: BreakKind, seq: u64, event_id: Option<&str>, detail: String) {
        if self.report.findings.len() >= self.options.max_findings {
            self.report.findings_dropped += 1;
            return;
        }
        self.report.findings.push(Finding {
            kind,
            chain: self.report.chain.clone().unwrap_or_default(),
            seq,
            event_id: event_id.map(str::to_owned),
            detail,
        });
    }

    fn open_gap(&mut self, from: u64, to: u64) {
        if from <= to {
            self.gaps.insert(from, to);
        }
    }

    /// Closes `seq` if it lies in an open gap; true when it did.
    fn close_gap(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else { return false };
        if seq > end {
            return false;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq - 1);
        }
        if seq < end {
            self.gaps.insert(seq + 1, end);
        }
        true
    }

    /// Checks that `link` follows `prev` (the remembered link at `link.seq - 1`).
    fn check_link(&mut self, prev_seq: u64, prev_hash: &str, link: &ChainLink) {
        if link.prev_hash != prev_hash {
            self.find(
                BreakKind::Modified,
                prev_seq,
                None,
                format!(
                    "seq {} links to prevHash {} but seq {prev_seq} has hash {prev_hash}: seq {prev_seq} was rewritten (or seq {}'s link was)",
                    link.seq, link.prev_hash, link.seq
                ),
            );
        }
    }

    /// Examines the next event.
    pub fn push(&mut self, link: &ChainLink) {
        self.report.events += 1;
        match &self.report.chain {
            None => self.report.chain = Some(link.chain.clone()),
            Some(chain) if *chain != link.chain => {
                let detail = format!("event belongs to chain {:?}, not {chain:?}", link.chain);
                self.find(BreakKind::Modified, link.seq, Some(&link.event_id), detail);
                return;
            }
            Some(_) => {}
        }
        self.report.first_seq = Some(self.report.first_seq.map_or(link.seq, |s| s.min(link.seq)));
        if link.computed_hash != link.hash {
            self.find(
                BreakKind::Modified,
                link.seq,
                Some(&link.event_id),
                format!("content hashes to {} but the event records {}", link.computed_hash, link.hash),
            );
        }

        match self.head.clone() {
            None => self.first(link),
            Some((head_seq, head_hash)) if link.seq == head_seq + 1 => {
                self.check_link(head_seq, &head_hash, link);
                self.head = Some((link.seq, link.hash.clone()));
            }
            Some((head_seq, _)) if link.seq > head_seq + 1 => {
                self.open_gap(head_seq + 1, link.seq - 1);
                self.head = Some((link.seq, link.hash.clone()));
            }
            Some((head_seq, _)) => self.behind_head(head_seq, link),
        }
        self.remember(link);
    }

    fn first(&mut self, link: &ChainLink) {
        match self.options.start.clone() {
            Start::Genesis => {
                if link.seq == 1 {
                    if link.prev_hash != GENESIS_PREV_HASH {
                        self.find(
                            BreakKind::Modified,
                            1,
                            Some(&link.event_id),
                            format!("seq 1 has prevHash {} instead of the genesis value", link.prev_hash),
                        );
                    }
                } else {
                    self.open_gap(1, link.seq.saturating_sub(1));
                }
            }
            Start::After(head) => {
                if link.seq == head.seq + 1 {
                    self.check_link(head.seq, &head.hash, link);
                } else if link.seq > head.seq + 1 {
                    self.open_gap(head.seq + 1, link.seq - 1);
                } else {
                    self.find(
                        BreakKind::Reordered,
                        link.seq,
                        Some(&link.event_id),
                        format!("seq {} is at or before the starting head seq {}", link.seq, head.seq),
                    );
                }
            }
            Start::Anywhere => {}
        }
        self.head = Some((link.seq, link.hash.clone()));
    }

    fn behind_head(&mut self, head_seq: u64, link: &ChainLink) {
        if let Some(seen) = self.recent.get(&link.seq) {
            if seen.hash == link.hash {
                self.find(
                    BreakKind::Duplicated,
                    link.seq,
                    Some(&link.event_id),
                    format!("seq {} appears again (same hash) after seq {head_seq}", link.seq),
                );
            } else {
                let detail =
                    format!("two different events claim seq {}: hashes {} and {}", link.seq, seen.hash, link.hash);
                self.find(BreakKind::Forked, link.seq, Some(&link.event_id), detail);
            }
            return;
        }
        let was_gap = self.close_gap(link.seq);
        self.find(
            BreakKind::Reordered,
            link.seq,
            Some(&link.event_id),
            format!("seq {} arrived after seq {head_seq}", link.seq),
        );
        if was_gap {
            // The late event must still fit between its neighbours.
            if let Some(prev) = link.seq.checked_sub(1).and_then(|s| self.recent.get(&s)).cloned() {
                self.check_link(link.seq - 1, &prev.hash, link);
            }
            if let Some(next) = self.recent.get(&(link.seq + 1)).cloned() {
                if next.prev_hash != link.hash {
                    self.find(
                        BreakKind::Modified,
                        link.seq,
                        Some(&link.event_id),
                        format!(
                            "seq {} links to prevHash {} but seq {} has hash {}",
                            link.seq + 1,
                            next.prev_hash,
                            link.seq,
                            link.hash
                        ),
                    );
                }
            }
        }
    }

    fn remember(&mut self, link: &ChainLink) {
        self.recent
            .entry(link.seq)
            .or_insert_with(|| SeenLink { hash: link.hash.clone(), prev_hash: link.prev_hash.clone() });
        while self.recent.len() > self.options.window {
            self.recent.pop_first();
        }
    }

    /// Ends the pass: every gap still open is reported as missing.
    pub fn finish(mut self) -> ChainReport {
        for (start, end) in std::mem::take(&mut self.gaps) {
            let detail = if start == end {
                format!("seq {start} is missing")
            } else {
                format!("seqs {start}..={end} are missing ({} events)", end - start + 1)
            };
            self.find(BreakKind::Missing, start, None, detail);
        }
        if let (Some((seq, hash)), Some(chain)) = (self.head.take(), self.report.chain.clone()) {
            self.report.head = Some(ChainHead { chain, seq, hash });
        }
        self.report
    }
}

/// Verifies typed events of one chain, in stored order, from genesis.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Result<ChainReport, ChainError> {
    verify_chain_with(events, VerifyOptions::default())
}

/// [`verify_chain`] with explicit options.
pub fn verify_chain_with<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    options: VerifyOptions,
) -> Result<ChainReport, ChainError> {
    let mut verifier = ChainVerifier::new(options);
    for event in events {
        verifier.push(&ChainLink::from_event(event)?);
    }
    Ok(verifier.finish())
}
