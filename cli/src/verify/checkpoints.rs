//! Signed checkpoints in verify: the keys a `--public-key` file, keyring or key directory pins,
//! the checkpoints that pass their signature (and findings about those that do not), the links
//! between a witness's entries, and which events no checkpoint attests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use anyhow::Context as _;
use audit_schema::checkpoint::{Checkpoint, PublicKey};
use chrono::{DateTime, Utc};

use super::ChainState;
use crate::source::{self, LinkRef, ReadFilter, Source};

use super::report::Finding;
use super::VerifyRequest;

/// Checkpoints that passed their signature check, by chain and seq, and findings about the
/// others.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    pub(super) keys: Vec<PublicKey>,
    pub(super) by_chain: BTreeMap<String, BTreeMap<u64, Checkpoint>>,
    pub(super) verified: u64,
    /// Checkpoints the store holds that were not checked: no `--public-key`.
    pub(super) unchecked: u64,
    pub(super) findings: Vec<Finding>,
}

impl Checkpoints {
    /// The keys of `request` and the checkpoints of its witness file.
    pub(super) fn load(request: &VerifyRequest) -> anyhow::Result<Checkpoints> {
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
    pub(super) fn add(&mut self, c: Checkpoint, origin: &str) -> Option<&Checkpoint> {
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

pub(super) fn forged(chain: String, seq: u64, detail: String) -> Finding {
    Finding { kind: "forged_checkpoint".into(), chain, seq, event_id: None, detail, location: None }
}

pub(super) fn mismatch(c: &Checkpoint, hash: &str, event_id: Option<String>) -> Finding {
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
pub(super) fn attestation(
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

/// Second pass for checkpoints stored too far after their event: compares each with the hash
/// its chain has at its seq.
pub(super) async fn recheck(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
