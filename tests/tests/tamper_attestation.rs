//! The tamper suite, classes 5 and 7 of issue 17: every event and every chain attested when keys
//! are given, pinned keys, and a witness whose entries link. `auditctl verify`, the real binary,
//! against copies of an `auditctl demo` run, changed as an attacker with write access to the store,
//! the key directory or the witness file would change them: lines added, removed or swapped with
//! `std::fs`, SHA-256 recomputed (it needs no secret), checkpoints signed with a key of their own.
//! Only the processor's private key is out of their reach; the tests use the demo's key solely to
//! write the witness a processor would have written. Every test asserts the exact findings and the
//! exit code; untouched controls stay intact.

use std::path::{Path, PathBuf};
use std::process::Command;

use audit_schema::checkpoint::{Checkpoint, CheckpointLinks, SigningKey};
use audit_tests::demo::{copy_dir, demo_store};
use auditctl::source::jsonl_files;
use serde_json::Value;

const AUDITCTL: &str = env!("CARGO_BIN_EXE_audit-test-auditctl");
const EVENTS: u64 = 300;

fn demo() -> PathBuf {
    demo_store(Path::new(AUDITCTL), EVENTS)
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// What `verify --json` said: the exit code and every finding as `(kind, seq)`, sorted.
#[derive(Debug)]
struct Outcome {
    code: i32,
    findings: Vec<(String, u64)>,
    report: Value,
}

impl Outcome {
    #[track_caller]
    fn expect(&self, code: i32, kinds: &[(&str, u64)]) -> &Outcome {
        let mut want: Vec<(String, u64)> = kinds.iter().map(|(k, s)| ((*k).to_owned(), *s)).collect();
        want.sort();
        assert_eq!(self.findings, want, "{:#}", self.report);
        assert_eq!(self.code, code, "exit code: {:#}", self.report);
        self
    }

    fn chain(&self, chain: &str) -> &Value {
        self.report["chains"].as_array().unwrap().iter().find(|c| c["chain"] == chain).expect("the chain")
    }
}

fn verify(source: &Path, args: &[&str]) -> Outcome {
    verify_source(&text(source), args)
}

fn verify_source(source: &str, args: &[&str]) -> Outcome {
    let out = Command::new(AUDITCTL).args(["verify", "--json", "--source", source]).args(args).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("verify printed no report ({e}): exit {code}: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["exitCode"], code, "the report carries the exit code");
    let per_chain = report["chains"].as_array().unwrap().iter().flat_map(|c| c["findings"].as_array().unwrap());
    let mut findings: Vec<(String, u64)> = per_chain
        .chain(report["storeFindings"].as_array().unwrap())
        .map(|f| {
            assert!(f["chain"].is_string() && f["detail"].is_string(), "{f}");
            (f["kind"].as_str().unwrap().to_owned(), f["seq"].as_u64().unwrap())
        })
        .collect();
    findings.sort();
    Outcome { code, findings, report }
}

/// `verify` when it stops before any report: the exit code and standard error.
fn verify_error(source: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(AUDITCTL).args(["verify", "--source", &text(source)]).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A private copy of the demo's JSONL directory.
fn jsonl_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo().join("jsonl"), dir.path());
    dir
}

/// A verifier's key directory: the demo's public key and its keyring (not the private key).
fn keys_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["checkpoint.pub", "keyring"] {
        std::fs::copy(demo().join("keys").join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn last_file(dir: &Path, p: i32) -> PathBuf {
    jsonl_files(&dir.join(format!("partition-{p}"))).unwrap().pop().unwrap()
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn wrapper(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// The events of partition `p` of `dir`, in file order.
fn events(dir: &Path, p: i32) -> Vec<Value> {
    let mut out = Vec::new();
    for file in jsonl_files(&dir.join(format!("partition-{p}"))).unwrap() {
        out.extend(lines(&file).iter().filter_map(|l| wrapper(l).get("event").cloned()));
    }
    out
}

fn seq_of(event: &Value) -> u64 {
    event["integrity"]["seq"].as_u64().unwrap()
}

/// `event` sealed as the processor seals one: its hash recomputed over everything else.
fn seal(mut event: Value) -> Value {
    let hash = audit_schema::chain::hash_event_value(&event).unwrap();
    event["integrity"]["hash"] = Value::String(hash);
    event
}

/// A JSONL line as the sink writes one: the event in its canonical form.
fn event_line(partition: i32, offset: i64, event: &Value) -> String {
    let canonical = String::from_utf8(audit_schema::canonical::canonicalize(event).unwrap()).unwrap();
    format!(r#"{{"partition":{partition},"offset":{offset},"event":{canonical}}}"#)
}

/// `n` events that continue `last` with correct links: what someone appends who knows SHA-256.
fn forged_after(last: &Value, n: u64, received_at: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut prev = last.clone();
    for i in 1..=n {
        let mut e = prev.clone();
        e["eventId"] = Value::String(format!("01JZZZZZZZZZZZZZ{:010}", seq_of(last) + i));
        e["receivedAt"] = Value::String(received_at.to_owned());
        e["integrity"]["seq"] = Value::from(seq_of(&prev) + 1);
        e["integrity"]["prevHash"] = prev["integrity"]["hash"].clone();
        let offset = prev["integrity"]["source"]["offset"].as_i64().unwrap() + 1;
        e["integrity"]["source"]["offset"] = Value::from(offset);
        e = seal(e);
        out.push(e.clone());
        prev = e;
    }
    out
}

/// Appends `forged` to the newest file of partition `p` (Kafka offsets after the last line's).
fn append_events(dir: &Path, p: i32, forged: &[Value]) {
    let file = last_file(dir, p);
    let mut all = lines(&file);
    let mut offset = all.iter().map(|l| wrapper(l)["offset"].as_i64().unwrap()).max().unwrap();
    for e in forged {
        offset += 1;
        all.push(event_line(p, offset, e));
    }
    write_lines(&file, &all);
}

fn now_rfc3339(shift: chrono::TimeDelta) -> String {
    (chrono::Utc::now() + shift).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The demo's processor key: only for writing the witness the processor would have written.
fn processor_key() -> SigningKey {
    SigningKey::from_file(&demo().join("keys/checkpoint.key")).unwrap()
}

/// A witness as the processor writes one, for chains 0 and 1 of `dir`: a checkpoint every 10
/// seqs and a final one at the head, each naming its chain's previous one, the chains
/// interleaved. Returns the file and its entries.
fn linked_witness(dir: &Path) -> (tempfile::TempDir, PathBuf, Vec<Checkpoint>) {
    let key = processor_key();
    let mut per_chain = Vec::new();
    for p in [0, 1] {
        let events = events(dir, p);
        let head = seq_of(events.last().unwrap());
        let mut prev: Option<String> = None;
        let mut signed = Vec::new();
        for e in events.iter().filter(|e| seq_of(e).is_multiple_of(10) || seq_of(e) == head) {
            let seq = seq_of(e);
            let links = CheckpointLinks { prev: prev.clone(), is_final: seq == head };
            let time = format!("2026-12-05T00:00:{:02}.000Z", seq % 60);
            let c = key.sign_linked(
                e["integrity"]["chain"].as_str().unwrap(),
                seq,
                e["integrity"]["hash"].as_str().unwrap(),
                &time,
                links,
            );
            prev = Some(c.digest());
            signed.push(c);
        }
        assert!(signed.len() >= 4, "chain {p} gives enough entries: {}", signed.len());
        per_chain.push(signed);
    }
    let mut entries = Vec::new();
    let longest = per_chain.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        for chain in &per_chain {
            if let Some(c) = chain.get(i) {
                entries.push(c.clone());
            }
        }
    }
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("checkpoints.jsonl");
    write_witness(&file, &entries);
    (home, file, entries)
}

fn write_witness(file: &Path, entries: &[Checkpoint]) {
    let text: String = entries.iter().map(|c| format!("{}\n", serde_json::to_string(c).unwrap())).collect();
    std::fs::write(file, text).unwrap();
}

fn keyed<'a>(keys: &'a str, witness: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--public-key", keys];
    if let Some(w) = witness {
        args.extend(["--checkpoints", w]);
    }
    args
}

fn head_of(dir: &Path, p: i32) -> u64 {
    seq_of(events(dir, p).last().unwrap())
}

// --------------------------------------------------------------------------------------- controls

#[test]
fn control_untouched_stores_with_pinned_keys_and_witnesses_stay_intact() {
    let dir = jsonl_copy();
    let keys = keys_copy();
    let k = text(keys.path());
    let demo_witness = text(&demo().join("witness/checkpoints.jsonl"));
    let out = verify(dir.path(), &keyed(&k, Some(&demo_witness)));
    out.expect(0, &[]);
    assert_eq!(out.report["inputs"], "key_and_witness");
    for chain in out.report["chains"].as_array().unwrap() {
        assert_eq!(chain["unattestedEvents"], 0, "{chain}");
        assert_eq!(chain["checkpointedSeq"], chain["headSeq"], "the final checkpoint covers the head: {chain}");
    }
    let sqlite = format!("sqlite:{}", text(&demo().join("audit.db")));
    verify_source(&sqlite, &keyed(&k, Some(&demo_witness))).expect(0, &[]);
    // The key file itself, the keyring file, and the demo's own key directory.
    verify(dir.path(), &keyed(&text(&keys.path().join("checkpoint.pub")), None)).expect(0, &[]);
    verify(dir.path(), &keyed(&text(&keys.path().join("keyring")), None)).expect(0, &[]);
    // A witness whose entries link, interleaving two chains.
    let (_home, witness, _) = linked_witness(dir.path());
    verify(dir.path(), &keyed(&k, Some(&text(&witness)))).expect(0, &[]);
    // Without keys nothing is attested, and the report says what it could not check.
    let out = verify(dir.path(), &[]);
    out.expect(0, &[]);
    assert_eq!(out.report["inputs"], "no_key");
    assert!(!out.report["notChecked"].as_array().unwrap().is_empty());
}

// -------------------------------------------------------------------- class 5: every event attested

#[test]
fn a_forged_tail_after_the_final_checkpoint_is_tampered() {
    let keys = keys_copy();
    let k = text(keys.path());
    let witness = text(&demo().join("witness/checkpoints.jsonl"));
    // One event appended to chain 0; three to chain 2, checked against the witness too.
    for (p, n, with_witness) in [(0, 1, false), (2, 3, true)] {
        let dir = jsonl_copy();
        let head = head_of(dir.path(), p);
        let last = events(dir.path(), p).pop().unwrap();
        append_events(dir.path(), p, &forged_after(&last, n, &now_rfc3339(chrono::TimeDelta::zero())));
        // The links are right: without a key it passes.
        verify(dir.path(), &[]).expect(0, &[]);
        let out = verify(dir.path(), &keyed(&k, with_witness.then_some(witness.as_str())));
        out.expect(1, &[("after_final_checkpoint", head + 1)]);
        let chain = out.chain(&format!("audit.raw/{p}"));
        assert_eq!((chain["unattestedFrom"].as_u64(), chain["unattestedEvents"].as_u64()), (Some(head + 1), Some(n)));
    }
}

#[test]
fn a_forged_extra_chain_with_correct_links_is_tampered() {
    let keys = keys_copy();
    let k = text(keys.path());
    let witness = text(&demo().join("witness/checkpoints.jsonl"));
    // Chain 0 copied whole as chain audit.raw/9, and two events of chain 1 as audit.raw/8.
    for (from, to, take) in [(0, 9, usize::MAX), (1, 8, 2)] {
        let dir = jsonl_copy();
        let mut prev_hash = "0".repeat(64);
        let mut forged = Vec::new();
        for e in events(dir.path(), from).into_iter().take(take) {
            let mut e = e;
            e["integrity"]["chain"] = Value::String(format!("audit.raw/{to}"));
            e["integrity"]["prevHash"] = Value::String(prev_hash.clone());
            e["integrity"]["source"]["partition"] = Value::from(to);
            e["eventId"] = Value::String(format!("01JYYYYYYYYYYY{to}{:011}", seq_of(&e)));
            let e = seal(e);
            prev_hash = e["integrity"]["hash"].as_str().unwrap().to_owned();
            forged.push(e);
        }
        let partition = dir.path().join(format!("partition-{to}"));
        std::fs::create_dir_all(&partition).unwrap();
        let offset = |e: &Value| e["integrity"]["source"]["offset"].as_i64().unwrap();
        let text_lines: Vec<String> = forged.iter().map(|e| event_line(to, offset(e), e)).collect();
        write_lines(&partition.join(format!("{:020}.jsonl", offset(&forged[0]))), &text_lines);
        verify(dir.path(), &[]).expect(0, &[]);
        verify(dir.path(), &keyed(&k, None)).expect(1, &[("unattested_chain", 1)]);
        verify(dir.path(), &keyed(&k, Some(&witness))).expect(1, &[("unattested_chain", 1)]);
    }
}

/// Partition `p` of `dir` without the checkpoints the sink stored (deleted by the attacker).
fn without_stored_checkpoints(dir: &Path, p: i32) {
    for file in jsonl_files(&dir.join(format!("partition-{p}"))).unwrap() {
        let kept: Vec<String> = lines(&file).into_iter().filter(|l| wrapper(l).get("checkpoint").is_none()).collect();
        write_lines(&file, &kept);
    }
}

#[test]
fn an_unattested_tail_older_than_the_grace_is_incomplete_and_a_fresh_one_is_counted() {
    let keys = keys_copy();
    let k = text(keys.path());
    // Chain 0's stored checkpoints deleted, and its final one missing from the witness (cut
    // before it arrived): the newest checkpoint left is a periodic one.
    let setup = || {
        let dir = jsonl_copy();
        let (home, witness, entries) = linked_witness(dir.path());
        let periodic: Vec<Checkpoint> =
            entries.into_iter().filter(|c| !(c.chain == "audit.raw/0" && c.is_final)).collect();
        write_witness(&witness, &periodic);
        let newest = periodic.iter().filter(|c| c.chain == "audit.raw/0").map(|c| c.seq).max().unwrap();
        without_stored_checkpoints(dir.path(), 0);
        (dir, home, witness, newest)
    };
    // Received two hours ago, or claiming a receipt a year ahead.
    for shift in [chrono::TimeDelta::hours(-2), chrono::TimeDelta::days(365)] {
        let (dir, _home, witness, newest) = setup();
        let head = head_of(dir.path(), 0);
        let last = events(dir.path(), 0).pop().unwrap();
        append_events(dir.path(), 0, &forged_after(&last, 2, &now_rfc3339(shift)));
        let out = verify(dir.path(), &keyed(&k, Some(&text(&witness))));
        out.expect(2, &[("unattested_tail", newest + 1)]);
        assert_eq!(out.chain("audit.raw/0")["unattestedEvents"], head + 2 - newest);
    }
    // Received just now: a live chain's tail, counted but not a finding (the documented grace).
    let (dir, _home, witness, newest) = setup();
    let head = head_of(dir.path(), 0);
    let last = events(dir.path(), 0).pop().unwrap();
    append_events(dir.path(), 0, &forged_after(&last, 1, &now_rfc3339(chrono::TimeDelta::zero())));
    let out = verify(dir.path(), &keyed(&k, Some(&text(&witness))));
    out.expect(0, &[]);
    assert_eq!(out.chain("audit.raw/0")["unattestedFrom"], newest + 1);
    assert_eq!(out.chain("audit.raw/0")["unattestedEvents"], head + 1 - newest);
    // The demo's witness still holds the final checkpoint: the tail after it is caught at once.
    let demo_witness = text(&demo().join("witness/checkpoints.jsonl"));
    verify(dir.path(), &keyed(&k, Some(&demo_witness))).expect(1, &[("after_final_checkpoint", head + 1)]);
}

// ------------------------------------------------------------------------- class 7: pinned keys

#[test]
fn a_key_dropped_into_the_key_directory_is_never_trusted() {
    let attacker = SigningKey::from_seed(&[66u8; 32]);
    // Dropped in beside the pinned key: reported, the store otherwise untouched.
    let dir = jsonl_copy();
    let keys = keys_copy();
    std::fs::write(keys.path().join("backup.pub"), attacker.public().to_hex()).unwrap();
    verify(dir.path(), &keyed(&text(keys.path()), None)).expect(1, &[("unpinned_key", 0)]);

    // Dropped in to vouch for a forged tail with a checkpoint the attacker signed.
    let dir = jsonl_copy();
    let keys = keys_copy();
    std::fs::write(keys.path().join("zz-rotation.pub"), format!("{}\n", attacker.public().to_hex())).unwrap();
    let head = head_of(dir.path(), 3);
    let last = events(dir.path(), 3).pop().unwrap();
    let forged = forged_after(&last, 2, &now_rfc3339(chrono::TimeDelta::zero()));
    append_events(dir.path(), 3, &forged);
    let tip = forged.last().unwrap();
    let c = attacker.sign_linked(
        "audit.raw/3",
        head + 2,
        tip["integrity"]["hash"].as_str().unwrap(),
        &now_rfc3339(chrono::TimeDelta::zero()),
        CheckpointLinks { prev: None, is_final: true },
    );
    let file = last_file(dir.path(), 3);
    let mut all = lines(&file);
    all.push(format!(r#"{{"partition":3,"offset":999999,"checkpoint":{}}}"#, serde_json::to_string(&c).unwrap()));
    write_lines(&file, &all);
    verify(dir.path(), &keyed(&text(keys.path()), None))
        .expect(1, &[("unpinned_key", 0), ("forged_checkpoint", head + 2), ("after_final_checkpoint", head + 1)]);
}

#[test]
fn a_replaced_key_file_or_an_unpinned_directory_stops_verify() {
    let dir = jsonl_copy();
    let attacker = SigningKey::from_seed(&[67u8; 32]);
    // The pinned file's content swapped for the attacker's key.
    let keys = keys_copy();
    std::fs::write(keys.path().join("checkpoint.pub"), attacker.public().to_hex()).unwrap();
    let (code, err) = verify_error(dir.path(), &keyed(&text(keys.path()), None));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("fingerprint"), "{err}");
    // The keyring removed: a directory of unpinned keys is not trusted at all.
    let keys = keys_copy();
    std::fs::remove_file(keys.path().join("keyring")).unwrap();
    let (code, err) = verify_error(dir.path(), &keyed(&text(keys.path()), None));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("keyring"), "{err}");
}

// --------------------------------------------------------------------- class 7: witness links

#[test]
fn witness_entries_removed_or_reordered_in_the_middle_are_reported() {
    let dir = jsonl_copy();
    let keys = keys_copy();
    let k = text(keys.path());
    let (_home, witness, entries) = linked_witness(dir.path());
    let of = |chain: &str| -> Vec<usize> { (0..entries.len()).filter(|i| entries[*i].chain == chain).collect() };
    let (zero, one) = (of("audit.raw/0"), of("audit.raw/1"));

    // Chain 0's second entry deleted: its third names it.
    let mut cut = entries.clone();
    cut.remove(zero[1]);
    write_witness(&witness, &cut);
    verify(dir.path(), &keyed(&k, Some(&text(&witness)))).expect(1, &[("witness_broken", entries[zero[2]].seq)]);

    // Chain 1's second and third entries swapped: both links break.
    let mut swapped = entries.clone();
    swapped.swap(one[1], one[2]);
    write_witness(&witness, &swapped);
    verify(dir.path(), &keyed(&k, Some(&text(&witness)))).expect(
        1,
        &[
            ("witness_broken", entries[one[1]].seq),
            ("witness_broken", entries[one[2]].seq),
            ("witness_broken", entries[one[3]].seq),
        ],
    );

    // Byte by byte: one line's `prev` edited to skip back breaks its signature instead.
    let mut raw: Vec<String> = entries.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
    let target = zero[2];
    let first_digest = entries[zero[0]].digest();
    let own = entries[target].prev.clone().unwrap();
    raw[target] = raw[target].replace(&own, &first_digest);
    raw.remove(zero[1]);
    std::fs::write(&witness, raw.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    // The forged entry is left out of the links, so the next one names a predecessor the witness
    // no longer holds validly.
    verify(dir.path(), &keyed(&k, Some(&text(&witness))))
        .expect(1, &[("forged_checkpoint", entries[target].seq), ("witness_broken", entries[zero[3]].seq)]);
}

#[test]
fn a_rolled_back_witness_hides_only_what_its_removed_entries_alone_attested() {
    let keys = keys_copy();
    let k = text(keys.path());
    // The newest entries cut off: a prefix of the real witness, which nothing can tell from one
    // that has not received them yet; the stores' own checkpoints still cover the chains.
    let dir = jsonl_copy();
    let (_home, witness, entries) = linked_witness(dir.path());
    for keep in [entries.len() - 1, entries.len() / 2] {
        write_witness(&witness, &entries[..keep]);
        verify(dir.path(), &keyed(&k, Some(&text(&witness)))).expect(0, &[]);
    }
    // Rolled back, and the store's newest events of chain 0 deleted with every stored checkpoint:
    // the newest entry left still shows the cut.
    let kept = &entries[..entries.len() / 2];
    let newest = kept.iter().filter(|c| c.chain == "audit.raw/0").map(|c| c.seq).max().unwrap();
    write_witness(&witness, kept);
    let file = last_file(dir.path(), 0);
    let cut: Vec<String> =
        lines(&file).into_iter().filter(|l| wrapper(l).get("event").is_some_and(|e| seq_of(e) < newest - 3)).collect();
    write_lines(&file, &cut);
    let out = verify(dir.path(), &keyed(&k, Some(&text(&witness))));
    out.expect(2, &[("truncated", newest - 3)]);
}
