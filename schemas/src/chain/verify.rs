//! Verifying a chain: [`ChainVerifier`] checks one chain in one pass with bounded memory and names
//! every break (modified, missing, reordered, duplicated, forked); [`verify_chain`] wraps it over a
//! slice of events.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::AuditEvent;

use super::{hash_event, hash_event_value_with, ChainError, ChainHead, GENESIS_PREV_HASH};

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
