//! `auditctl verify`: reads the chains a store holds and reports every break.
//!
//! Per chain, in the order the store keeps it: every hash recomputes over the stored content,
//! every `prevHash` links to its predecessor, `seq` has no gaps, no two events claim one seq, and
//! every raw offset between two consecutive events is accounted for (an event or a quarantine
//! entry per raw record: a gap there means the processor skipped input). The chain primitives are
//! `audit_schema::chain`'s, the same the sinks' tests use.
//!
//! With `--tenant`, only that tenant's events are hashed; the other tenants' events in the same
//! chains are needed only for their links (seq, prevHash, hash), which the SQL stores hand over
//! without their content. With `--since`/`--until`, each chain is verified over the seq window of
//! the events received in that interval (a window starts where its first event is).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use audit_schema::checkpoint::{Checkpoint, PublicKey};

use audit_schema::chain::{ChainLink, ChainVerifier, Start, VerifyOptions};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::source::{self, LinkOnly, LinkRef, ReadFilter, Source, Stored};

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Only this chain (`<raw topic>/<partition>`).
    pub chain: Option<String>,
    /// Hash only this tenant's events; the others count as links.
    pub tenant: Option<String>,
    /// Only the window of events received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only the window of events received at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// Signed checkpoints to check the chains against (a witness JSONL file).
    pub checkpoints: Option<PathBuf>,
    /// Public keys the checkpoints must be signed with (several after a rotation).
    pub public_keys: Vec<PathBuf>,
    /// How many recent heads each chain keeps for checkpoints stored after their event (default
    /// 16,384); one further back is checked in a second pass over the source.
    pub recent_heads: Option<usize>,
}

/// The verdict, worst first: it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Intact,
    /// The chains link, but raw input is unaccounted for (or, with checkpoints, the tail is short).
    Incomplete,
    /// Content, order or links were changed.
    Tampered,
}

impl Verdict {
    /// `auditctl verify`'s exit code: 0 intact, 1 tampered, 2 incomplete (3: could not read).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Intact => 0,
            Verdict::Tampered => 1,
            Verdict::Incomplete => 2,
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `modified`, `missing`, `reordered`, `duplicated`, `forked` (tampered) or
    /// `unaccounted_input` (incomplete).
    pub kind: String,
    /// The chain.
    pub chain: String,
    /// Where in the chain.
    pub seq: u64,
    /// The event at that seq, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
}

impl Finding {
    /// A finding about the event `link`.
    fn at(kind: &str, link: &ChainLink, detail: String) -> Finding {
        Finding {
            kind: kind.into(),
            chain: link.chain.clone(),
            seq: link.seq,
            event_id: Some(link.event_id.clone()),
            detail,
        }
    }

    fn verdict(&self) -> Verdict {
        if self.kind == "unaccounted_input" || self.kind == "truncated" {
            Verdict::Incomplete
        } else {
            Verdict::Tampered
        }
    }
}

/// Checkpoints that passed their signature check, by chain and seq, and findings about the
/// others.
#[derive(Debug, Default)]
struct Checkpoints {
    keys: Vec<PublicKey>,
    by_chain: BTreeMap<String, BTreeMap<u64, Checkpoint>>,
    verified: u64,
    /// Checkpoints the store holds that were not checked: no `--public-key`.
    unchecked: u64,
    findings: Vec<Finding>,
}

impl Checkpoints {
    /// The keys of `request` and the checkpoints of its witness file.
    fn load(request: &VerifyRequest) -> anyhow::Result<Checkpoints> {
        let mut keys = Vec::new();
        for path in &request.public_keys {
            for file in key_files(path)? {
                keys.push(PublicKey::from_file(&file)?);
            }
        }
        let mut out = Checkpoints { keys, ..Checkpoints::default() };
        let Some(path) = &request.checkpoints else { return Ok(out) };
        if out.keys.is_empty() {
            anyhow::bail!("--checkpoints needs --public-key (the key that signed them)");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading checkpoints {}", path.display()))?;
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let origin = format!("{}:{}", path.display(), number + 1);
            match Checkpoint::from_json(line.as_bytes()) {
                Ok(c) if request.chain.as_deref().is_some_and(|chain| chain != c.chain) => {}
                Ok(c) => {
                    out.add(c, &origin);
                }
                Err(e) => out.findings.push(forged(String::new(), 0, format!("{origin}: {e}"))),
            }
        }
        Ok(out)
    }

    /// Checks `c`'s signature and keeps it when it verifies; returns it then (`None`: forged,
    /// unchecked, or already known).
    fn add(&mut self, c: Checkpoint, origin: &str) -> Option<&Checkpoint> {
        if self.keys.is_empty() {
            self.unchecked += 1;
            return None;
        }
        let key = self.keys.iter().find(|k| k.key_id() == c.key_id).unwrap_or(&self.keys[0]);
        if let Err(e) = key.verify(&c) {
            self.findings.push(forged(c.chain.clone(), c.seq, format!("{origin}: {e}")));
            return None;
        }
        let chain = self.by_chain.entry(c.chain.clone()).or_default();
        match chain.get(&c.seq) {
            Some(known) if known.hash == c.hash => return None, // the same head, witness and store: checked once
            Some(known) => {
                // Two valid signatures over two hashes for one seq: a leaked key, or a forked chain.
                let detail = format!(
                    "{origin}: signed checkpoints disagree at this seq: hash {} (signed at {}) and hash {} (signed at {})",
                    known.hash, known.time, c.hash, c.time
                );
                self.findings.push(Finding {
                    kind: "conflicting_checkpoints".into(),
                    chain: c.chain,
                    seq: c.seq,
                    event_id: None,
                    detail,
                });
                return None;
            }
            None => {}
        }
        self.verified += 1;
        let seq = c.seq;
        chain.insert(seq, c);
        chain.get(&seq)
    }
}

/// The key files `path` names: itself, or every `*.pub` file of a directory (never the secret
/// `checkpoint.key` that `auditctl keys generate` writes beside it; names starting with `.`, where
/// Kubernetes keeps a mounted ConfigMap's bookkeeping, skipped).
fn key_files(path: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading the key directory {}", path.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && name.ends_with(".pub") && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        anyhow::bail!("the key directory {} holds no public key file (*.pub)", path.display());
    }
    files.sort();
    Ok(files)
}

fn forged(chain: String, seq: u64, detail: String) -> Finding {
    Finding { kind: "forged_checkpoint".into(), chain, seq, event_id: None, detail }
}

fn mismatch(c: &Checkpoint, hash: &str, event_id: Option<String>) -> Finding {
    Finding {
        kind: "checkpoint_mismatch".into(),
        chain: c.chain.clone(),
        seq: c.seq,
        event_id,
        detail: format!(
            "the checkpoint signed at {} records hash {} here, the chain has {hash}: the chain was rewritten",
            c.time, c.hash
        ),
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
    /// Events whose content was hashed (all of them, unless `--tenant`).
    pub hashed: u64,
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
    /// The worst verdict of any chain (intact when there is no chain at all).
    pub verdict: Verdict,
}

impl VerifyReport {
    /// Every finding of every chain.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.chains.iter().flat_map(|c| c.findings.iter())
    }
}

/// The per-chain state while reading.
#[derive(Debug)]
struct ChainState {
    verifier: ChainVerifier,
    hashed: u64,
    quarantined: u64,
    /// `(seq, source offset)` of the previous event pushed, for the completeness check.
    previous: Option<(u64, i64)>,
    /// `(seq, hash, eventId)` of the newest events, for checkpoints stored after their event.
    recent: VecDeque<(u64, String, String)>,
    extra: Vec<Finding>,
}

/// How many recent heads a chain remembers for checkpoints that come after their event, unless
/// the request says (in the processed partition a checkpoint follows its event closely; one
/// further back is checked in a second pass).
const RECENT_HEADS: usize = 16_384;

impl ChainState {
    fn new(start: &Start) -> ChainState {
        ChainState {
            verifier: ChainVerifier::new(VerifyOptions { start: start.clone(), ..VerifyOptions::default() }),
            hashed: 0,
            quarantined: 0,
            previous: None,
            recent: VecDeque::new(),
            extra: Vec::new(),
        }
    }
}

/// The seq window of one chain that a time filter selects.
type Windows = BTreeMap<String, (u64, u64)>;

/// What the verifier needs of one stored item.
struct Item {
    link: ChainLink,
    hashed: bool,
    quarantined: bool,
    source_offset: Option<i64>,
}

fn received_in(received_at: Option<&str>, request: &VerifyRequest) -> bool {
    let Some(at) = received_at.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return request.since.is_none() && request.until.is_none();
    };
    let at = at.with_timezone(&Utc);
    request.since.is_none_or(|s| at >= s) && request.until.is_none_or(|u| at <= u)
}

/// Turns a stored item into what the verifier needs; `buf` is reused for canonical bytes.
fn item(stored: Stored, tenant: Option<&str>, buf: &mut Vec<u8>) -> anyhow::Result<Item> {
    match stored {
        Stored::Link(LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, .. }) => Ok(Item {
            link: ChainLink { chain, seq, prev_hash, computed_hash: hash.clone(), hash, event_id },
            hashed: false,
            quarantined: false,
            source_offset,
        }),
        Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } => anyhow::bail!("a checkpoint is not an event"),
        Stored::Hashed { link, computed_hash, quarantined } => {
            let LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, .. } = link;
            Ok(Item {
                link: ChainLink { chain, seq, prev_hash, computed_hash, hash, event_id },
                hashed: true,
                quarantined,
                source_offset,
            })
        }
        Stored::Event(event) => {
            let mine = tenant.is_none_or(|t| {
                event.get("context").and_then(|c| c.get("tenantId")).and_then(Value::as_str) == Some(t)
            });
            let link = if mine {
                ChainLink::from_value(&event, buf)
            } else {
                // Another tenant's event: only its link counts, as if the content were not here.
                let text = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
                let hash = text("/integrity/hash");
                Ok(ChainLink {
                    chain: text("/integrity/chain"),
                    seq: event.pointer("/integrity/seq").and_then(Value::as_u64).unwrap_or_default(),
                    prev_hash: text("/integrity/prevHash"),
                    computed_hash: hash.clone(),
                    hash,
                    event_id: text("/eventId"),
                })
            }
            .map_err(|e| {
                let id = event.get("eventId").and_then(Value::as_str).unwrap_or("(no eventId)");
                anyhow::anyhow!("event {id}: {e}")
            })?;
            Ok(Item {
                link,
                hashed: mine,
                quarantined: event.get("action").and_then(Value::as_str) == Some("audit.quarantined"),
                // Plain lookups: `Value::pointer` allocates while unescaping each token.
                source_offset: event
                    .get("integrity")
                    .and_then(|i| i.get("source"))
                    .and_then(|s| s.get("offset"))
                    .and_then(Value::as_i64),
            })
        }
    }
}

/// Progress callback: events read so far.
pub type Progress<'a> = &'a mut (dyn FnMut(u64) + Send);

/// Verifies every chain `source` holds.
pub async fn verify(source: &Source, request: &VerifyRequest, progress: Progress<'_>) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let mut checkpoints = Checkpoints::load(request)?;
    let filter = ReadFilter { chain: request.chain.clone(), tenant: request.tenant.clone(), hashes_only: true };
    let windowed = request.since.is_some() || request.until.is_some();
    let windows = if windowed { Some(time_windows(source, &filter, request).await?) } else { None };
    // A topic keeps only its retention: its chains start wherever the oldest record is.
    let start = match (source, windowed) {
        (Source::Kafka { .. }, _) | (_, true) => Start::Anywhere,
        _ => Start::Genesis,
    };
    let mut chains: BTreeMap<String, ChainState> = BTreeMap::new();
    let mut buf = Vec::with_capacity(4096);
    let mut events = 0u64;
    let tenant = request.tenant.clone();
    let recent_heads = request.recent_heads.unwrap_or(RECENT_HEADS).max(1);
    // Checkpoints stored after their event, too far back for `recent`: `(chain, seq)`.
    let mut behind: BTreeSet<(String, u64)> = BTreeSet::new();
    source::read(source, &filter, &mut |stored| {
        let stored = match stored {
            Stored::BadCheckpoint { origin, reason } => {
                checkpoints.findings.push(forged(String::new(), 0, format!("{origin}: {reason}")));
                return Ok(());
            }
            Stored::Checkpoint(c) => {
                let Some(c) = checkpoints.add(*c, "stored checkpoint") else { return Ok(()) };
                // Already past its seq: check it against the hash the chain had there.
                let Some(state) = chains.get_mut(&c.chain) else { return Ok(()) };
                let Some(newest) = state.recent.back().map(|r| r.0) else { return Ok(()) };
                if c.seq > newest {
                    return Ok(()); // checked when its event comes
                }
                match state.recent.iter().find(|r| r.0 == c.seq) {
                    Some((_, hash, id)) if *hash != c.hash => state.extra.push(mismatch(c, hash, Some(id.clone()))),
                    Some(_) => {}
                    None => {
                        behind.insert((c.chain.clone(), c.seq));
                    }
                }
                return Ok(());
            }
            other => other,
        };
        let item = item(stored, tenant.as_deref(), &mut buf)?;
        if let Some(windows) = &windows {
            match windows.get(&item.link.chain) {
                Some((lo, hi)) if (*lo..=*hi).contains(&item.link.seq) => {}
                _ => return Ok(()),
            }
        }
        events += 1;
        if events.is_multiple_of(10_000) {
            progress(events);
        }
        let state = chains.entry(item.link.chain.clone()).or_insert_with(|| ChainState::new(&start));
        state.hashed += u64::from(item.hashed);
        state.quarantined += u64::from(item.quarantined);
        if let (Some((prev_seq, prev_offset)), Some(offset)) = (state.previous, item.source_offset) {
            // Consecutive events must account for consecutive raw records.
            if item.link.seq == prev_seq + 1 && offset > prev_offset + 1 {
                let detail = format!(
                    "raw offsets {}..={} lie between seq {prev_seq} and seq {} but no event or quarantine entry accounts for them",
                    prev_offset + 1,
                    offset - 1,
                    item.link.seq
                );
                state.extra.push(Finding::at("unaccounted_input", &item.link, detail));
            }
        }
        if let Some(offset) = item.source_offset {
            state.previous = Some((item.link.seq, offset));
        }
        if let Some(c) = checkpoints.by_chain.get(&item.link.chain).and_then(|c| c.get(&item.link.seq)) {
            if c.hash != item.link.hash {
                state.extra.push(mismatch(c, &item.link.hash, Some(item.link.event_id.clone())));
            }
        }
        state.verifier.push(&item.link);
        if state.recent.len() >= recent_heads {
            state.recent.pop_front();
        }
        let ChainLink { seq, hash, event_id, .. } = item.link;
        state.recent.push_back((seq, hash, event_id));
        Ok(())
    })
    .await?;
    progress(events);
    if !behind.is_empty() {
        recheck(source, &filter, &behind, &checkpoints, &mut chains).await?;
    }

    // Chains the checkpoints know but the store has no event of.
    for chain in checkpoints.by_chain.keys() {
        if !chains.contains_key(chain) && !windowed {
            chains.insert(chain.clone(), ChainState::new(&start));
        }
    }
    let mut summaries = Vec::with_capacity(chains.len());
    for (chain, mut state) in chains {
        let report = state.verifier.finish();
        let newest = checkpoints.by_chain.get(&chain).and_then(|c| c.last_key_value()).map(|(_, c)| c.clone());
        if let Some(c) = &newest {
            let head = report.head.as_ref().map_or(0, |h| h.seq);
            if c.seq > head && !windowed {
                state.extra.push(Finding {
                    kind: "truncated".into(),
                    chain: chain.clone(),
                    seq: head + 1,
                    event_id: None,
                    detail: format!(
                        "the checkpoint signed at {} covers seq {} but the chain ends at seq {head}: seqs {}..={} are gone",
                        c.time,
                        c.seq,
                        head + 1,
                        c.seq
                    ),
                });
            }
        }
        let mut findings: Vec<Finding> = report
            .findings
            .into_iter()
            .map(|f| Finding {
                kind: f.kind.as_str().to_owned(),
                chain: f.chain,
                seq: f.seq,
                event_id: f.event_id,
                detail: f.detail,
            })
            .collect();
        findings.extend(state.extra);
        findings.sort_by_key(|f| f.seq);
        let verdict = findings
            .iter()
            .map(Finding::verdict)
            .max()
            .unwrap_or(Verdict::Intact)
            .max(if report.findings_dropped > 0 { Verdict::Tampered } else { Verdict::Intact });
        summaries.push(ChainSummary {
            chain,
            events: report.events,
            hashed: state.hashed,
            quarantined: state.quarantined,
            first_seq: report.first_seq,
            head_seq: report.head.as_ref().map(|h| h.seq),
            head_hash: report.head.map(|h| h.hash),
            findings,
            findings_dropped: report.findings_dropped,
            checkpointed_seq: newest.map(|c| c.seq),
            verdict,
        });
    }
    if !checkpoints.findings.is_empty() {
        // Forged checkpoints belong to no verified chain: reported on their own line.
        summaries.push(ChainSummary {
            chain: "(checkpoints)".into(),
            events: 0,
            hashed: 0,
            quarantined: 0,
            first_seq: None,
            head_seq: None,
            head_hash: None,
            findings: std::mem::take(&mut checkpoints.findings),
            findings_dropped: 0,
            checkpointed_seq: None,
            verdict: Verdict::Tampered,
        });
    }
    let verdict = summaries.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Intact);
    Ok(VerifyReport {
        source: source.to_string(),
        events,
        checkpoints: checkpoints.verified,
        unchecked_checkpoints: checkpoints.unchecked,
        seconds: started.elapsed().as_secs_f64(),
        chains: summaries,
        verdict,
    })
}

/// Second pass for checkpoints stored too far after their event: compares each with the hash
/// its chain has at its seq.
async fn recheck(
    source: &Source,
    filter: &ReadFilter,
    behind: &BTreeSet<(String, u64)>,
    checkpoints: &Checkpoints,
    chains: &mut BTreeMap<String, ChainState>,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<&str> = behind.iter().map(|(c, _)| c.as_str()).collect();
    source::read(source, filter, &mut |stored| {
        let Some(LinkRef { chain, seq, hash, event_id, .. }) = stored.link() else { return Ok(()) };
        if !wanted.contains(chain) || !behind.contains(&(chain.to_owned(), seq)) {
            return Ok(());
        }
        if let Some(c) = checkpoints.by_chain.get(chain).and_then(|c| c.get(&seq)) {
            if c.hash != hash {
                if let Some(state) = chains.get_mut(chain) {
                    state.extra.push(mismatch(c, hash, Some(event_id.to_owned())));
                }
            }
        }
        Ok(())
    })
    .await
}

/// First pass of a time-filtered verification: per chain, the lowest and highest seq received in
/// the interval.
async fn time_windows(source: &Source, filter: &ReadFilter, request: &VerifyRequest) -> anyhow::Result<Windows> {
    let mut windows = Windows::new();
    source::read(source, filter, &mut |stored| {
        let Some(LinkRef { chain, seq, received_at, .. }) = stored.link() else { return Ok(()) };
        if received_in(received_at, request) {
            let w = windows.entry(chain.to_owned()).or_insert((seq, seq));
            w.0 = w.0.min(seq);
            w.1 = w.1.max(seq);
        }
        Ok(())
    })
    .await?;
    Ok(windows)
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
        let id = f.event_id.as_deref().map(|i| format!(" event {i}")).unwrap_or_default();
        let _ = writeln!(out, "  {} {} seq {}{id}: {}", f.kind.to_uppercase(), f.chain, f.seq, f.detail);
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
        report.chains.iter().filter(|c| c.chain != "(checkpoints)").count(),
        report.events,
        report.seconds
    );
    out
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Intact => "INTACT",
        Verdict::Incomplete => "INCOMPLETE",
        Verdict::Tampered => "TAMPERED",
    }
}
