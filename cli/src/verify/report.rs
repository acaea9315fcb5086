//! What verify reports: the verdicts, every finding kind and the verdict it gives, one finding, a
//! chain's summary and the whole report, what a verdict over the inputs cannot show, and the text
//! summary.

use audit_schema::chain::ChainLink;
use serde::Serialize;

use super::VerifyRequest;

/// The verdict, best first: the worst one of any chain and of the store decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed, over everything the source holds.
    Intact,
    /// What was read verifies, but not from a chain's start: the processed topic no longer holds
    /// it (retention).
    Partial,
    /// Nothing was verified (an empty store or selection, an unknown `--chain`), or not what was
    /// asked (no valid signed checkpoint although `--public-key` was given).
    Unverified,
    /// The chains link, but something is missing or was not read: raw input unaccounted for, a
    /// tail cut below a checkpoint, a file or line verify could not read.
    Incomplete,
    /// Content, order or links were changed, or the store holds what its writer never writes.
    Tampered,
}

impl Verdict {
    /// `auditctl verify`'s exit code: 0 intact, 1 tampered, 2 incomplete, 4 unverified, 5 partial
    /// (3: the source could not be read at all, 64: a usage mistake).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Intact => 0,
            Verdict::Tampered => 1,
            Verdict::Incomplete => 2,
            Verdict::Unverified => 4,
            Verdict::Partial => 5,
        }
    }

    /// What the verdict says, for the text report.
    fn meaning(self) -> &'static str {
        match self {
            Verdict::Intact => "every check passed over everything the source holds",
            Verdict::Partial => "what was read verifies, but not from each chain's start: see the findings",
            Verdict::Unverified => "nothing was verified, or not what was asked: see the findings",
            Verdict::Incomplete => "something is missing or was not read, so not verified: see the findings",
            Verdict::Tampered => "the store was changed: see the findings",
        }
    }
}

/// Every finding kind and the verdict it gives (`docs/CLI.md` lists the same).
pub const FINDING_KINDS: &[(&str, Verdict)] = &[
    ("modified", Verdict::Tampered),
    ("missing", Verdict::Tampered),
    ("reordered", Verdict::Tampered),
    ("duplicated", Verdict::Tampered),
    ("forked", Verdict::Tampered),
    ("forged_checkpoint", Verdict::Tampered),
    ("conflicting_checkpoints", Verdict::Tampered),
    ("checkpoint_mismatch", Verdict::Tampered),
    ("unattested_chain", Verdict::Tampered),
    ("after_final_checkpoint", Verdict::Tampered),
    ("witness_broken", Verdict::Tampered),
    ("unpinned_key", Verdict::Tampered),
    ("unreadable", Verdict::Tampered),
    ("damaged_file", Verdict::Tampered),
    ("extra_gzip_member", Verdict::Tampered),
    ("trailing_bytes", Verdict::Tampered),
    ("non_canonical", Verdict::Tampered),
    ("column_mismatch", Verdict::Tampered),
    ("unaccounted_input", Verdict::Incomplete),
    ("truncated", Verdict::Incomplete),
    ("unattested_tail", Verdict::Incomplete),
    ("unread_file", Verdict::Incomplete),
    ("torn_line", Verdict::Incomplete),
    ("no_events", Verdict::Unverified),
    ("unknown_chain", Verdict::Unverified),
    ("no_checkpoints", Verdict::Unverified),
    ("partial", Verdict::Partial),
];

/// The verdict a finding of `kind` gives (a kind not in [`FINDING_KINDS`] counts as tampered).
pub fn verdict_of(kind: &str) -> Verdict {
    FINDING_KINDS.iter().find(|(k, _)| *k == kind).map_or(Verdict::Tampered, |(_, v)| *v)
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// One of [`FINDING_KINDS`]: `modified`, `missing`, `unread_file`, `no_events`, ...
    pub kind: String,
    /// The chain (empty when the finding is about no one chain).
    pub chain: String,
    /// Where in the chain (0 when nowhere in particular).
    pub seq: u64,
    /// The event at that seq, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What is wrong, and what it leaves unverified, in words.
    pub detail: String,
    /// Where in the store, for what was not read as an event: `FILE`, `FILE:LINE`, a table row,
    /// `TOPIC/PARTITION offset N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Finding {
    /// A finding about the event `link`.
    pub(super) fn at(kind: &str, link: &ChainLink, detail: String) -> Finding {
        Finding {
            kind: kind.into(),
            chain: link.chain.clone(),
            seq: link.seq,
            event_id: Some(link.event_id.clone()),
            detail,
            location: None,
        }
    }

    /// A finding about the store or the request rather than one event.
    pub(super) fn about(kind: &str, chain: Option<&str>, detail: String) -> Finding {
        Finding {
            kind: kind.into(),
            chain: chain.unwrap_or_default().to_owned(),
            seq: 0,
            event_id: None,
            detail,
            location: None,
        }
    }

    pub(super) fn verdict(&self) -> Verdict {
        verdict_of(&self.kind)
    }
}

/// One chain's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainSummary {
    /// The chain.
    pub chain: String,
    /// Events examined.
    pub events: u64,
    /// Events whose content was hashed (all the store handed over content for: with `--tenant`,
    /// the SQL stores hand over only links for other tenants' rows).
    pub hashed: u64,
    /// Events the filters select (`--tenant`, `--since`, `--until`, read from verified content);
    /// every event is verified whatever they select.
    pub selected: u64,
    /// Quarantine entries (raw records that went to the dead-letter topic).
    pub quarantined: u64,
    /// Lowest seq seen.
    pub first_seq: Option<u64>,
    /// Highest seq seen and its hash.
    pub head_seq: Option<u64>,
    /// Hash at `head_seq`: what a checkpoint signs.
    pub head_hash: Option<String>,
    /// Breaks found in this chain.
    pub findings: Vec<Finding>,
    /// Findings beyond the cap, counted only.
    pub findings_dropped: u64,
    /// The newest valid checkpoint's seq, when checkpoints were given.
    pub checkpointed_seq: Option<u64>,
    /// (With keys) The first seq no valid checkpoint covers: after the newest checkpoint, or the
    /// chain's first when none covers it.
    pub unattested_from: Option<u64>,
    /// (With keys) How many events from `unattested_from` on no valid checkpoint covers.
    pub unattested_events: u64,
    /// This chain's verdict.
    pub verdict: Verdict,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Where the chains were read (no password).
    pub source: String,
    /// Events examined in all chains.
    pub events: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Checkpoints the store holds that were not checked (no `--public-key` given).
    pub unchecked_checkpoints: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Per chain, by name.
    pub chains: Vec<ChainSummary>,
    /// Findings about no one chain: what the store holds that was not read as an event (files,
    /// lines, rows), checkpoints that fail their signature, and nothing verified.
    pub store_findings: Vec<Finding>,
    /// What the inputs let verify check: `no_key`, `key` or `key_and_witness`.
    pub inputs: &'static str,
    /// What no verdict over these inputs can show (docs/INTEGRITY.md, per input).
    pub not_checked: Vec<&'static str>,
    /// The worst verdict of any chain and of the store's findings.
    pub verdict: Verdict,
    /// `auditctl verify`'s exit code for that verdict.
    pub exit_code: u8,
}

impl VerifyReport {
    /// Every finding: every chain's, then the store's.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.chains.iter().flat_map(|c| c.findings.iter()).chain(&self.store_findings)
    }
}

pub(super) fn inputs_of(request: &VerifyRequest) -> &'static str {
    match (request.public_keys.is_empty(), request.checkpoints.is_some()) {
        (true, _) => "no_key",
        (false, false) => "key",
        (false, true) => "key_and_witness",
    }
}

/// What a verdict over `request`'s inputs cannot show, in words (the same as docs/INTEGRITY.md).
pub(super) fn not_checked(request: &VerifyRequest) -> Vec<&'static str> {
    let mut out = Vec::new();
    if request.public_keys.is_empty() {
        out.push("a chain rewritten from some seq on with fresh hashes (no checkpoint signature checked)");
        out.push("newest events deleted (tail truncation), a chain added to the store, events appended to a chain");
    } else if request.checkpoints.is_none() {
        out.push("newest events deleted together with the stored checkpoints that cover them (no witness)");
        out.push("a stored final checkpoint deleted together with the events appended after it (no witness)");
    }
    if !request.public_keys.is_empty() {
        out.push(
            "events received within the last 15 minutes after a chain's newest non-final checkpoint (counted in \
             unattestedFrom/unattestedEvents, not yet a finding)",
        );
    }
    if request.checkpoints.is_some() {
        out.push(
            "the witness's newest entries removed (a rolled-back witness is a prefix of the real one): the events \
             they covered are still checked against the stored checkpoints and as unattested",
        );
    }
    out
}

/// The human summary: one line per chain, then every finding.
pub fn render_text(report: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "source: {}", report.source);
    for c in &report.chains {
        let range = match (c.first_seq, c.head_seq) {
            (Some(a), Some(b)) => format!("seq {a}..={b}"),
            _ => "empty".into(),
        };
        let hashed = if c.hashed == c.events { String::new() } else { format!(", {} hashed", c.hashed) };
        let quarantined = if c.quarantined == 0 { String::new() } else { format!(", {} quarantined", c.quarantined) };
        let _ = writeln!(
            out,
            "  {:<28} {range:<22} {:>9} events{hashed}{quarantined}  {}",
            c.chain,
            c.events,
            verdict_word(c.verdict)
        );
    }
    for f in report.findings() {
        let mut at = String::new();
        if !f.chain.is_empty() {
            let _ = write!(at, " {}", f.chain);
        }
        if f.seq > 0 || f.event_id.is_some() {
            let _ = write!(at, " seq {}", f.seq);
        }
        if let Some(id) = &f.event_id {
            let _ = write!(at, " event {id}");
        }
        if let Some(location) = &f.location {
            let _ = write!(at, " at {location}");
        }
        let _ = writeln!(out, "  {}{at}: {}", f.kind.to_uppercase(), f.detail);
    }
    let dropped: u64 = report.chains.iter().map(|c| c.findings_dropped).sum();
    if dropped > 0 {
        let _ = writeln!(out, "  … and {dropped} more findings");
    }
    if report.unchecked_checkpoints > 0 {
        let _ = writeln!(
            out,
            "  note: the store holds {} signed checkpoints that were not checked; pass --public-key to check the chains against them",
            report.unchecked_checkpoints
        );
    }
    let rate = report.events as f64 / report.seconds.max(1e-9);
    let checkpoints =
        if report.checkpoints > 0 { format!(", {} signed checkpoints", report.checkpoints) } else { String::new() };
    let _ = writeln!(
        out,
        "{}: {} chains, {} events{checkpoints} in {:.2}s ({rate:.0} events/s)",
        verdict_word(report.verdict),
        report.chains.len(),
        report.events,
        report.seconds
    );
    if report.verdict != Verdict::Intact {
        let _ = writeln!(out, "  {} (exit {})", report.verdict.meaning(), report.verdict.exit_code());
    }
    out
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Intact => "INTACT",
        Verdict::Partial => "PARTIAL",
        Verdict::Unverified => "UNVERIFIED",
        Verdict::Incomplete => "INCOMPLETE",
        Verdict::Tampered => "TAMPERED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::source::UnreadKind;

    #[test]
    fn every_finding_kind_has_a_verdict_and_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CLI.md")).unwrap();
        for (kind, _) in FINDING_KINDS {
            assert!(doc.contains(&format!("| `{kind}` |")), "docs/CLI.md has no row for `{kind}`");
        }
        let unread = [
            UnreadKind::UnreadFile,
            UnreadKind::TornLine,
            UnreadKind::Unreadable,
            UnreadKind::DamagedFile,
            UnreadKind::ExtraGzipMember,
            UnreadKind::TrailingBytes,
            UnreadKind::NonCanonical,
            UnreadKind::ColumnMismatch,
        ];
        for kind in unread {
            assert!(FINDING_KINDS.iter().any(|(k, _)| *k == kind.as_str()), "{kind:?}");
        }
        for chain_break in ["modified", "missing", "reordered", "duplicated", "forked"] {
            assert_eq!(verdict_of(chain_break), Verdict::Tampered);
        }
    }

    #[test]
    fn each_verdict_has_its_own_exit_code_and_the_worst_wins() {
        let all = [Verdict::Intact, Verdict::Partial, Verdict::Unverified, Verdict::Incomplete, Verdict::Tampered];
        let codes: BTreeSet<u8> = all.iter().map(|v| v.exit_code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&crate::EXIT_UNREADABLE) && !codes.contains(&crate::EXIT_USAGE));
        assert!(all.windows(2).all(|w| w[0] < w[1]), "declared best first");
        assert_eq!(
            [Verdict::Intact.exit_code(), Verdict::Tampered.exit_code(), Verdict::Incomplete.exit_code()],
            [0, 1, 2]
        );
    }
}
