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
//!
//! Layout: this module reads a source and walks its chains; `report.rs` holds the verdicts,
//! findings and the report, `checkpoints.rs` the pinned keys, signed checkpoints, witness links,
//! attestation and the second pass for checkpoints stored far after their event.

mod checkpoints;
mod report;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use audit_schema::chain::{ChainLink, ChainVerifier, Start, VerifyOptions, GENESIS_PREV_HASH};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::source::{self, LinkOnly, ReadFilter, Source, Stored};

use checkpoints::{attestation, forged, mismatch, recheck, Checkpoints};
pub use checkpoints::{KEYRING, UNATTESTED_GRACE};
use report::{inputs_of, not_checked};
pub use report::{render_text, verdict_of, ChainSummary, Finding, Verdict, VerifyReport, FINDING_KINDS};

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
