//! `auditctl verify`: reads the chains a store holds and reports every break.
//!
//! Per chain, in the order the store keeps it: every hash recomputes over the stored content,
//! every `prevHash` links to its predecessor, `seq` has no gaps, no two events claim one seq, and
//! every raw offset between two consecutive events is accounted for (an event or a quarantine
//! entry per raw record: a gap there means the processor skipped input). The chain primitives are
//! `audit_schema::chain`'s, the same the sinks' tests use.
//!
//! Filters choose what is reported, never what is verified. With `--tenant`, every event whose
//! content the store hands over is hashed, and the tenant is read from that verified content; the
//! SQL stores hand over the content of the rows whose tenant column *or* content names the tenant
//! (the database reads the content's tenant) and only the links (seq, prevHash, hash) of the
//! others. `--since`/`--until` do not narrow the chains either: every chain is verified from its
//! start to its head (so no edited time moves a window's edge, and truncation and checkpoints are
//! checked as without them); they only choose which events count as selected (their `receivedAt`
//! read from verified content), and selecting none is [`Verdict::Unverified`].
//!
//! What verify hashes is what everyone else reads: an event whose stored text is not the form the
//! processor published is `non_canonical`, and a query column that differs from its hashed event is
//! `column_mismatch` (see `docs/INTEGRITY.md` for what each store compares).
//!
//! Nothing unread passes as intact: what a store holds that is not an event or a checkpoint as its
//! writer writes it (a foreign file, a line or row that does not decode, a gzip file of several
//! members) is a finding, and so is having verified nothing ([`Verdict::Unverified`]) or only the
//! part of a chain the processed topic still holds ([`Verdict::Partial`]). [`FINDING_KINDS`] lists
//! every finding and the verdict it gives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use audit_schema::checkpoint::{Checkpoint, PublicKey};

use audit_schema::chain::{ChainLink, ChainVerifier, Start, VerifyOptions, GENESIS_PREV_HASH};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::source::{self, LinkOnly, LinkRef, ReadFilter, Source, Stored};

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Only this chain (`<raw topic>/<partition>`).
    pub chain: Option<String>,
    /// Select this tenant's events (as their verified content says); the SQL stores hand over
    /// only the links of the others.
    pub tenant: Option<String>,
    /// Select the events received at or after this time (every chain is still verified whole).
    pub since: Option<DateTime<Utc>>,
    /// Select the events received at or before this time (every chain is still verified whole).
    pub until: Option<DateTime<Utc>>,
    /// Signed checkpoints to check the chains against (a witness JSONL file).
    pub checkpoints: Option<PathBuf>,
    /// Public keys the checkpoints must be signed with (several after a rotation).
    pub public_keys: Vec<PathBuf>,
    /// How many recent heads each chain keeps for checkpoints stored after their event (default
    /// 16,384); one further back is checked in a second pass over the source.
    pub recent_heads: Option<usize>,
}

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
    fn at(kind: &str, link: &ChainLink, detail: String) -> Finding {
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
    fn about(kind: &str, chain: Option<&str>, detail: String) -> Finding {
        Finding {
            kind: kind.into(),
            chain: chain.unwrap_or_default().to_owned(),
            seq: 0,
            event_id: None,
            detail,
            location: None,
        }
    }

    fn verdict(&self) -> Verdict {
        verdict_of(&self.kind)
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
        let (mut keys, mut findings) = (Vec::new(), Vec::new());
        for path in &request.public_keys {
            let (pinned, unpinned) = pinned_keys(path)?;
            keys.extend(pinned);
            findings.extend(unpinned);
        }
        let mut out = Checkpoints { keys, findings, ..Checkpoints::default() };
        let Some(path) = &request.checkpoints else { return Ok(out) };
        if out.keys.is_empty() {
            anyhow::bail!("--checkpoints needs --public-key (the key that signed them)");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading checkpoints {}", path.display()))?;
        let mut witness = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let origin = format!("{}:{}", path.display(), number + 1);
            match Checkpoint::from_json(line.as_bytes()) {
                Ok(c) if request.chain.as_deref().is_some_and(|chain| chain != c.chain) => {}
                Ok(c) => {
                    witness.push((origin.clone(), c.clone()));
                    out.add(c, &origin);
                }
                Err(e) => out.findings.push(forged(String::new(), 0, format!("{origin}: {e}"))),
            }
        }
        let links = witness_links(&out.keys, &witness);
        out.findings.extend(links);
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
            Some(known) if known.hash == c.hash => {
                // The same head, witness and store, or signed again at a release: checked once,
                // and final if any copy says so.
                if c.is_final && !known.is_final {
                    chain.insert(c.seq, c);
                }
                return None;
            }
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
                    location: None,
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

/// The name of a key directory's keyring: the only file of the directory `verify` reads itself.
pub const KEYRING: &str = "keyring";

/// The public keys `path` pins, and findings about files beside them that were not trusted.
///
/// * A key file (64 hex digits): that key.
/// * A keyring file: lines `<fingerprint> <key file>` (`#` comments; the file relative to the
///   keyring's directory); each key file must hash to its fingerprint
///   ([`PublicKey::fingerprint`]), or verify stops.
/// * A directory: its [`KEYRING`] file, as above. Any other file there (a key someone dropped in,
///   one the keyring does not name) is never read as a key and is reported (`unpinned_key`);
///   names starting with `.`, where Kubernetes keeps a mounted ConfigMap's bookkeeping, and the
///   secret `checkpoint.key` that `auditctl keys generate` writes beside its keyring are passed
///   over.
fn pinned_keys(path: &std::path::Path) -> anyhow::Result<(Vec<PublicKey>, Vec<Finding>)> {
    if !path.is_dir() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the key {}", path.display()))?;
        if text.split_whitespace().count() == 1 && !text.trim_start().starts_with('#') {
            return Ok((vec![PublicKey::from_file(path)?], Vec::new()));
        }
        let (keys, _) = keyring(path, &text)?;
        return Ok((keys, Vec::new()));
    }
    let ring = path.join(KEYRING);
    if !ring.is_file() {
        anyhow::bail!(
            "the key directory {} has no {KEYRING} file: its keys are not pinned, so none is trusted (give key files \
             explicitly, or a keyring of `<fingerprint> <file>` lines; `auditctl keys generate` writes one)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&ring).with_context(|| format!("reading the keyring {}", ring.display()))?;
    let (keys, named) = keyring(&ring, &text)?;
    let mut findings = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("reading the key directory {}", path.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == KEYRING || name == "checkpoint.key" || named.contains(&entry.path()) {
            continue;
        }
        let detail = format!(
            "{} is in the key directory but the keyring does not name it: not trusted, and checkpoints signed by a key \
             in it are forged; someone who could write the verifier's keys put it there, or a rotation forgot the \
             keyring",
            entry.path().display()
        );
        findings.push(Finding {
            location: Some(entry.path().display().to_string()),
            ..Finding::about("unpinned_key", None, detail)
        });
    }
    Ok((keys, findings))
}

/// The keys a keyring file (`origin`, holding `text`) pins, and the files it names.
fn keyring(origin: &std::path::Path, text: &str) -> anyhow::Result<(Vec<PublicKey>, BTreeSet<PathBuf>)> {
    let dir = origin.parent().unwrap_or_else(|| std::path::Path::new("."));
    let (mut keys, mut named) = (Vec::new(), BTreeSet::new());
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", origin.display(), number + 1);
        let mut fields = line.split_whitespace();
        let (Some(fingerprint), Some(file), None) = (fields.next(), fields.next(), fields.next()) else {
            anyhow::bail!("{}: expected `<fingerprint> <key file>`", at());
        };
        let file = dir.join(file);
        let key = PublicKey::from_file(&file).with_context(at)?;
        if !key.fingerprint().eq_ignore_ascii_case(fingerprint) {
            anyhow::bail!(
                "{}: {} has fingerprint {}, the keyring pins {fingerprint}: the key file was replaced",
                at(),
                file.display(),
                key.fingerprint()
            );
        }
        named.insert(file);
        keys.push(key);
    }
    if keys.is_empty() {
        anyhow::bail!("the keyring {} pins no key", origin.display());
    }
    Ok((keys, named))
}

/// The links between a witness's entries of one chain (version 2 `prev`): each names the digest
/// of the entry of its chain before it in the witness. An entry without `prev` (signed by a lane
/// that did not know its predecessor) starts a new run; the first entry of a chain may name one
/// the witness never held (it started later). Entries whose signature does not verify are
/// reported as forged elsewhere and left out here.
fn witness_links(keys: &[PublicKey], witness: &[(String, Checkpoint)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut last: BTreeMap<&str, (&str, &Checkpoint, String)> = BTreeMap::new();
    for (origin, c) in witness {
        let Some(key) = keys.iter().find(|k| k.key_id() == c.key_id) else { continue };
        if key.verify(c).is_err() {
            continue;
        }
        if let (Some(prev), Some((at, before, digest))) = (&c.prev, last.get(c.chain.as_str())) {
            if prev != digest {
                let detail = format!(
                    "{origin}: this checkpoint (seq {}, signed at {}) names predecessor {prev}, but the witness's \
                     previous entry of the chain is {at} (seq {}, digest {digest}): entries between them were removed, \
                     or entries were reordered",
                    c.seq, c.time, before.seq
                );
                findings.push(Finding {
                    kind: "witness_broken".into(),
                    chain: c.chain.clone(),
                    seq: c.seq,
                    event_id: None,
                    detail,
                    location: Some(origin.clone()),
                });
            }
        }
        last.insert(c.chain.as_str(), (origin.as_str(), c, c.digest()));
    }
    findings
}

fn forged(chain: String, seq: u64, detail: String) -> Finding {
    Finding { kind: "forged_checkpoint".into(), chain, seq, event_id: None, detail, location: None }
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
        location: None,
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

/// The per-chain state while reading.
#[derive(Debug)]
struct ChainState {
    verifier: ChainVerifier,
    hashed: u64,
    selected: u64,
    quarantined: u64,
    /// `(seq, source offset)` of the previous event pushed, for the completeness check.
    previous: Option<(u64, i64)>,
    /// `(seq, hash, eventId)` of the newest events, for checkpoints stored after their event.
    recent: VecDeque<(u64, String, String)>,
    /// The lowest seq seen and its event (where the topic's part of the chain starts).
    lowest: Option<(u64, String)>,
    /// With keys: `(seq, receivedAt, eventId)` of the events after the newest valid checkpoint
    /// known so far (checkpoints stored after their events prune it).
    unattested: VecDeque<(u64, Option<String>, String)>,
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
            selected: 0,
            quarantined: 0,
            previous: None,
            recent: VecDeque::new(),
            lowest: None,
            unattested: VecDeque::new(),
            extra: Vec::new(),
        }
    }
}

/// What the verifier needs of one stored item.
struct Item {
    link: ChainLink,
    hashed: bool,
    /// The filters select it (from its verified content).
    selected: bool,
    quarantined: bool,
    source_offset: Option<i64>,
}

/// Whether an event whose content says `tenant` and `received_at` is one the request selects.
fn selects(request: &VerifyRequest, tenant: Option<&str>, received_at: Option<&str>) -> bool {
    request.tenant.as_deref().is_none_or(|t| tenant == Some(t)) && received_in(received_at, request)
}

fn received_in(received_at: Option<&str>, request: &VerifyRequest) -> bool {
    let Some(at) = received_at.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return request.since.is_none() && request.until.is_none();
    };
    let at = at.with_timezone(&Utc);
    request.since.is_none_or(|s| at >= s) && request.until.is_none_or(|u| at <= u)
}

/// Turns a stored item into what the verifier needs; `buf` is reused for canonical bytes.
fn item(stored: Stored, request: &VerifyRequest, buf: &mut Vec<u8>) -> anyhow::Result<Item> {
    match stored {
        Stored::Link(LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, .. }) => Ok(Item {
            link: ChainLink { chain, seq, prev_hash, computed_hash: hash.clone(), hash, event_id },
            hashed: false,
            selected: false,
            quarantined: false,
            source_offset,
        }),
        Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } | Stored::Unread(_) => {
            anyhow::bail!("a checkpoint or an unread part of the store is not an event")
        }
        Stored::Hashed { link, computed_hash, quarantined } => {
            let selected = selects(request, link.tenant.as_deref(), link.received_at.as_deref());
            let LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, .. } = link;
            Ok(Item {
                link: ChainLink { chain, seq, prev_hash, computed_hash, hash, event_id },
                hashed: true,
                selected,
                quarantined,
                source_offset,
            })
        }
        Stored::Event(event) => {
            // Every event whose content is here is hashed: the tenant is read from it, not trusted.
            let link = ChainLink::from_value(&event, buf).map_err(|e| {
                let id = event.get("eventId").and_then(Value::as_str).unwrap_or("(no eventId)");
                anyhow::anyhow!("event {id}: {e}")
            })?;
            let tenant = event.get("context").and_then(|c| c.get("tenantId")).and_then(Value::as_str);
            let selected = selects(request, tenant, event.get("receivedAt").and_then(Value::as_str));
            Ok(Item {
                link,
                hashed: true,
                selected,
                quarantined: event.get("action").and_then(Value::as_str) == Some(audit_schema::wire::QUARANTINE_ACTION),
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
    // A topic keeps only its retention: its chains start wherever the oldest record is (and are
    // reported partial when that is not seq 1).
    let topic = matches!(source, Source::Kafka { .. });
    let start = if topic { Start::Anywhere } else { Start::Genesis };
    let anywhere = start == Start::Anywhere;
    let mut chains: BTreeMap<String, ChainState> = BTreeMap::new();
    let mut buf = Vec::with_capacity(4096);
    let mut events = 0u64;
    let mut store_findings: Vec<Finding> = Vec::new();
    let recent_heads = request.recent_heads.unwrap_or(RECENT_HEADS).max(1);
    // Checkpoints stored after their event, too far back for `recent`: `(chain, seq)`.
    let mut behind: BTreeSet<(String, u64)> = BTreeSet::new();
    source::read(source, &filter, &mut |stored| {
        let stored = match stored {
            Stored::BadCheckpoint { origin, reason } => {
                checkpoints.findings.push(forged(String::new(), 0, format!("{origin}: {reason}")));
                return Ok(());
            }
            Stored::Unread(u) => {
                let u = *u;
                if request.chain.is_some() && u.chain.is_some() && u.chain != request.chain {
                    return Ok(());
                }
                let finding = Finding {
                    kind: u.kind.as_str().into(),
                    chain: u.chain.clone().unwrap_or_default(),
                    seq: u.seq.unwrap_or_default(),
                    event_id: u.event_id,
                    detail: u.reason,
                    location: Some(u.location),
                };
                match u.chain {
                    Some(chain) => {
                        chains.entry(chain).or_insert_with(|| ChainState::new(&start)).extra.push(finding);
                    }
                    _ => store_findings.push(finding),
                }
                return Ok(());
            }
            Stored::Checkpoint(c) => {
                let Some(c) = checkpoints.add(*c, "stored checkpoint") else { return Ok(()) };
                // Already past its seq: check it against the hash the chain had there.
                let Some(state) = chains.get_mut(&c.chain) else { return Ok(()) };
                let covered = c.seq;
                state.unattested.retain(|(seq, _, _)| *seq > covered);
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
        // When keys are given, an event's receipt time tells how long it has gone unattested.
        let received_at =
            if checkpoints.keys.is_empty() { None } else { stored.link().and_then(|l| l.received_at.map(str::to_owned)) };
        let item = match item(stored, request, &mut buf) {
            Ok(item) => item,
            Err(e) => {
                store_findings.push(Finding::about("unreadable", None, format!("{e:#}: not verified")));
                return Ok(());
            }
        };
        events += 1;
        if events.is_multiple_of(10_000) {
            progress(events);
        }
        // With keys: the newest seq a valid checkpoint (witness, or stored so far) covers.
        let attested = if checkpoints.keys.is_empty() {
            None
        } else {
            Some(checkpoints.by_chain.get(&item.link.chain).and_then(|c| c.last_key_value()).map_or(0, |(s, _)| *s))
        };
        // Looked up before it is inserted: no copy of the chain's name per event.
        if !chains.contains_key(&item.link.chain) {
            chains.insert(item.link.chain.clone(), ChainState::new(&start));
        }
        let state = chains.get_mut(&item.link.chain).expect("inserted above");
        state.hashed += u64::from(item.hashed);
        state.selected += u64::from(item.selected);
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
        if state.lowest.as_ref().is_none_or(|(seq, _)| item.link.seq < *seq) {
            state.lowest = Some((item.link.seq, item.link.event_id.clone()));
        }
        // Started anywhere, the verifier does not know seq 1's predecessor: it is the genesis.
        if item.link.seq == 1 && anywhere && item.link.prev_hash != GENESIS_PREV_HASH {
            let detail = format!("seq 1 has prevHash {} instead of the genesis value", item.link.prev_hash);
            state.extra.push(Finding::at("modified", &item.link, detail));
        }
        state.verifier.push(&item.link);
        if state.recent.len() >= recent_heads {
            state.recent.pop_front();
        }
        let ChainLink { seq, hash, event_id, .. } = item.link;
        if attested.is_some_and(|attested| seq > attested) {
            state.unattested.push_back((seq, received_at, event_id.clone()));
        }
        state.recent.push_back((seq, hash, event_id));
        Ok(())
    })
    .await?;
    progress(events);
    if !behind.is_empty() {
        recheck(source, &filter, &behind, &checkpoints, &mut chains).await?;
    }

    store_findings.extend(nothing_verified(request, &checkpoints, &chains, events));
    // Chains the checkpoints know but the store has no event of.
    for chain in checkpoints.by_chain.keys() {
        if !chains.contains_key(chain) {
            chains.insert(chain.clone(), ChainState::new(&start));
        }
    }
    let mut summaries = Vec::with_capacity(chains.len());
    for (chain, mut state) in chains {
        let report = state.verifier.finish();
        let newest = checkpoints.by_chain.get(&chain).and_then(|c| c.last_key_value()).map(|(_, c)| c.clone());
        if let Some(c) = &newest {
            let head = report.head.as_ref().map_or(0, |h| h.seq);
            if c.seq > head {
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
                    location: None,
                });
            }
        }
        let unattested = if checkpoints.keys.is_empty() {
            None
        } else {
            let (unattested, finding) =
                attestation(&chain, &mut state.unattested, newest.as_ref(), report.head.as_ref().map(|h| h.seq));
            // No valid checkpoint anywhere is `no_checkpoints` (unverified) already.
            state.extra.extend(finding.filter(|_| checkpoints.verified > 0));
            unattested
        };
        if let Some((first, event_id)) = state.lowest.take().filter(|(seq, _)| topic && *seq > 1) {
            let detail = format!(
                "the topic's oldest event of this chain is seq {first}: seqs 1..={} are no longer in it (retention, or \
                 records deleted from its start), so the chain is verified from seq {first} on only; neither seq \
                 {first}'s link to its predecessor nor any signed checkpoint below it is checked (verify a store that \
                 holds the whole chain for that)",
                first - 1
            );
            state.extra.push(Finding {
                kind: "partial".into(),
                chain: chain.clone(),
                seq: first,
                event_id: Some(event_id),
                detail,
                location: None,
            });
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
                location: None,
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
            selected: state.selected,
            quarantined: state.quarantined,
            first_seq: report.first_seq,
            head_seq: report.head.as_ref().map(|h| h.seq),
            head_hash: report.head.map(|h| h.hash),
            findings,
            findings_dropped: report.findings_dropped,
            checkpointed_seq: newest.map(|c| c.seq),
            unattested_from: unattested.map(|u| u.0),
            unattested_events: unattested.map_or(0, |u| u.1),
            verdict,
        });
    }
    // Forged checkpoints belong to no verified chain.
    store_findings.append(&mut checkpoints.findings);
    let verdict = summaries
        .iter()
        .map(|c| c.verdict)
        .chain(store_findings.iter().map(Finding::verdict))
        .max()
        .unwrap_or(Verdict::Intact);
    Ok(VerifyReport {
        source: source.to_string(),
        events,
        checkpoints: checkpoints.verified,
        unchecked_checkpoints: checkpoints.unchecked,
        seconds: started.elapsed().as_secs_f64(),
        chains: summaries,
        store_findings,
        inputs: inputs_of(request),
        not_checked: not_checked(request),
        verdict,
        exit_code: verdict.exit_code(),
    })
}

/// How long events may go without a checkpoint before their chain is reported incomplete: the
/// processor signs every `every_ms` (10 s as shipped) and at every release, and a sink stores a
/// checkpoint right after its event; the rest is slack for sinks that lag.
pub const UNATTESTED_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The events of a chain no valid checkpoint covers (`(first seq, how many)`), and the finding
/// they give: the whole chain unattested is `unattested_chain`; events after a final checkpoint
/// (what a lane signs when it is released) that no later one covers are `after_final_checkpoint`;
/// other events after the newest checkpoint are `unattested_tail` once one of them was received
/// more than [`UNATTESTED_GRACE`] ago (or claims a receipt time that far in the future, or none),
/// and only counted before that.
fn attestation(
    chain: &str,
    unattested: &mut VecDeque<(u64, Option<String>, String)>,
    newest: Option<&Checkpoint>,
    head: Option<u64>,
) -> (Option<(u64, u64)>, Option<Finding>) {
    let attested = newest.map_or(0, |c| c.seq);
    unattested.retain(|(seq, _, _)| *seq > attested);
    let (Some(head), Some((first, _, event_id))) = (head, unattested.front()) else {
        return (None, None);
    };
    if head <= attested {
        return (None, None);
    }
    let count = unattested.len() as u64;
    let at = |kind: &str, detail: String| Finding {
        kind: kind.into(),
        chain: chain.to_owned(),
        seq: *first,
        event_id: Some(event_id.clone()),
        detail,
        location: None,
    };
    let finding = match newest {
        None => Some(at(
            "unattested_chain",
            format!(
                "no validly signed checkpoint covers any of this chain's {count} events (seq {first}..={head}): \
                 nothing vouches that the processor wrote them; a chain added to the store (each hash recomputes, \
                 but no signature) or one younger than a checkpoint interval"
            ),
        )),
        Some(c) if c.is_final => Some(at(
            "after_final_checkpoint",
            format!(
                "{count} events (seq {first}..={head}) follow the final checkpoint signed at {} when the processor \
                 released the chain at seq {}, and no later checkpoint covers them: appended by someone else",
                c.time, c.seq
            ),
        )),
        Some(c) => {
            let now = Utc::now();
            let outside = |at: &Option<String>| {
                at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).is_none_or(|r| {
                    let r = r.with_timezone(&Utc);
                    r < now - UNATTESTED_GRACE || r > now + UNATTESTED_GRACE
                })
            };
            let stale = unattested.iter().find(|(_, at, _)| outside(at)).map(|(_, at, _)| at.clone());
            stale.map(|received_at| {
                at(
                    "unattested_tail",
                    format!(
                        "{count} events (seq {first}..={head}) follow the newest checkpoint (seq {}, signed at {}) and \
                         none covers them, though one of them was received at {} (more than {} minutes from now): \
                         the processor signs sooner, so they were not attested by the key (a processor that stopped \
                         without releasing the chain, or events appended by someone else)",
                        c.seq,
                        c.time,
                        received_at.as_deref().unwrap_or("(no receivedAt)"),
                        UNATTESTED_GRACE.num_minutes()
                    ),
                )
            })
        }
    };
    (Some((*first, count)), finding)
}

fn inputs_of(request: &VerifyRequest) -> &'static str {
    match (request.public_keys.is_empty(), request.checkpoints.is_some()) {
        (true, _) => "no_key",
        (false, false) => "key",
        (false, true) => "key_and_witness",
    }
}

/// What a verdict over `request`'s inputs cannot show, in words (the same as docs/INTEGRITY.md).
fn not_checked(request: &VerifyRequest) -> Vec<&'static str> {
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

/// What was asked but not verified: nothing at all (an empty store or selection, an unknown
/// `--chain`), or no chain against a signed checkpoint although keys were given.
fn nothing_verified(
    request: &VerifyRequest,
    checkpoints: &Checkpoints,
    chains: &BTreeMap<String, ChainState>,
    events: u64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let chain = request.chain.as_deref();
    let selected: u64 = chains.values().map(|c| c.selected).sum();
    let filtered = request.tenant.is_some() || request.since.is_some() || request.until.is_some();
    let known = |c: &str| chains.contains_key(c) || checkpoints.by_chain.contains_key(c);
    if let Some(c) = chain.filter(|c| events == 0 && !known(c)) {
        let detail = format!("the store holds no chain {c:?} (no event, no signed checkpoint): nothing was verified");
        findings.push(Finding::about("unknown_chain", Some(c), detail));
    } else if events == 0 {
        let what = chain.map_or_else(|| "the store holds".to_owned(), |c| format!("chain {c} holds"));
        let detail = format!("{what} no event that could be read: nothing was verified");
        findings.push(Finding::about("no_events", chain, detail));
    } else if filtered && selected == 0 {
        let tenant = request.tenant.as_deref().map(|t| format!(" of tenant {t:?}")).unwrap_or_default();
        let window = match (request.since, request.until) {
            (None, None) => String::new(),
            (since, until) => format!(
                " received between {} and {}",
                since.map_or_else(|| "its start".into(), |t| t.to_rfc3339()),
                until.map_or_else(|| "now".into(), |t| t.to_rfc3339())
            ),
        };
        let detail = format!(
            "no event{tenant}{window} (as their verified content says): the {events} events read were verified, \
             none of them is one the filters ask for"
        );
        findings.push(Finding::about("no_events", chain, detail));
    }
    if !request.public_keys.is_empty() && checkpoints.verified == 0 {
        let of = chain.map(|c| format!(" of chain {c}")).unwrap_or_default();
        let witness = if request.checkpoints.is_some() { " nor in the witness" } else { "" };
        let detail = format!(
            "no validly signed checkpoint{of} in the store{witness}: no chain was checked against the given key, so \
             neither a rewritten chain nor a cut tail would show"
        );
        findings.push(Finding::about("no_checkpoints", chain, detail));
    }
    findings
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
    fn a_key_directory_trusts_only_what_its_keyring_pins() {
        use audit_schema::checkpoint::SigningKey;
        let dir = std::env::temp_dir().join(format!("verify-keyring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let public = crate::keys::generate(&dir).unwrap();
        let (keys, findings) = pinned_keys(&dir).unwrap();
        assert_eq!((keys.len(), findings.len()), (1, 0));
        let attacker = SigningKey::from_seed(&[9u8; 32]).public();
        std::fs::write(dir.join("extra.pub"), attacker.to_hex()).unwrap();
        let (keys, findings) = pinned_keys(&dir).unwrap();
        assert_ne!(keys[0].key_id(), attacker.key_id());
        assert_eq!(findings.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(), ["unpinned_key"]);
        // The pinned file replaced under its name: verify stops.
        std::fs::write(&public, attacker.to_hex()).unwrap();
        let error = pinned_keys(&dir).unwrap_err().to_string();
        assert!(error.contains("fingerprint"), "{error}");
        // No keyring: nothing in the directory is trusted.
        std::fs::remove_file(dir.join(KEYRING)).unwrap();
        let error = pinned_keys(&dir).unwrap_err().to_string();
        assert!(error.contains("keyring"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn witness_entries_of_a_chain_link_whatever_the_other_chains_do() {
        use audit_schema::checkpoint::{CheckpointLinks, SigningKey};
        let key = SigningKey::from_seed(&[4u8; 32]);
        let keys = vec![key.public()];
        let mut entries = Vec::new();
        let mut prev = [None, None];
        for seq in 1..=4u64 {
            for (i, chain) in ["a/0", "a/1"].into_iter().enumerate() {
                let links = CheckpointLinks { prev: prev[i].clone(), is_final: false };
                let c = key.sign_linked(chain, seq, &format!("{seq:064x}"), "2026-12-05T00:00:00.000Z", links);
                prev[i] = Some(c.digest());
                entries.push((format!("w:{}", entries.len() + 1), c));
            }
        }
        assert!(witness_links(&keys, &entries).is_empty());
        let seqs = |entries: &[(String, Checkpoint)]| -> Vec<(String, u64)> {
            witness_links(&keys, entries).into_iter().map(|f| (f.chain, f.seq)).collect()
        };
        // a/0's seq 2 removed; a/1's seqs 2 and 3 swapped.
        let mut cut = entries.clone();
        cut.remove(2);
        assert_eq!(seqs(&cut), [("a/0".to_owned(), 3)]);
        let mut swapped = entries.clone();
        swapped.swap(3, 5);
        assert_eq!(seqs(&swapped), [("a/1".to_owned(), 3), ("a/1".to_owned(), 2), ("a/1".to_owned(), 4)]);
        // Rolled back: a prefix links.
        assert!(witness_links(&keys, &entries[..5]).is_empty());
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
