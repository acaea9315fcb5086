//! The tamper suite, classes 5 and 7 of issue 17: every event and every chain attested when keys
//! are given, pinned keys, and a witness whose entries link. `auditctl verify`, the real binary,
//! against copies of an `auditctl demo` run (its JSONL files and SQLite database), PostgreSQL and
//! MongoDB loaded by their sinks with the demo's events and checkpoints, and processed topics,
//! changed as an attacker with write access to the store, the key directory or the witness file
//! would change them: lines added, removed or swapped with `std::fs`, rows inserted and deleted
//! with raw SQL, documents with the MongoDB driver, records produced (and partitions added) with a
//! Kafka client of their own, SHA-256 recomputed (it needs no secret), checkpoints signed with a
//! key of their own. Only the processor's private key is out of their reach; the tests use the
//! demo's key solely to write the witness a processor would have written (and a processed topic's
//! key only to publish the checkpoints its processor would have published). Every test asserts the
//! exact findings and the exit code; untouched controls stay intact.
//!
//! One suite (class 5 on every store and the topic), kept in one file although it is over 500
//! lines: the same attacks run store by store and read best side by side.

use std::path::{Path, PathBuf};

use audit_schema::checkpoint::{Checkpoint, CheckpointLinks, SigningKey};
use audit_sink::stores::jsonl::jsonl_files;
use audit_tests::sinks::Processed;
use audit_tests::tamper::{
    append_events, canonical, chain_of, demo, demo_witness, event_line, events, forged_after, forged_chain, head_of,
    jsonl_copy, keyed, keys_copy, last_file, lines, now_rfc3339, postgres_store, processed_topic, produce_checkpoint,
    produce_raw, runtime, seq_of, sql, sql_insert, sql_rows, sqlite_copy, text, topic_key, topic_signing_key, verify,
    verify_error, wrapper, write_lines, Found, MongoStore,
};
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

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

// --------------------------------------------------------------------------------------- controls

#[test]
fn control_untouched_stores_with_pinned_keys_and_witnesses_stay_intact() {
    let dir = jsonl_copy();
    let keys = keys_copy();
    let k = text(keys.path());
    let demo_witness = demo_witness();
    let out = verify(dir.path(), &keyed(&k, Some(&demo_witness)));
    out.expect(0, &[]);
    assert_eq!(out.report["inputs"], "key_and_witness");
    for chain in out.report["chains"].as_array().unwrap() {
        assert_eq!(chain["unattestedEvents"], 0, "{chain}");
        assert_eq!(chain["checkpointedSeq"], chain["headSeq"], "the final checkpoint covers the head: {chain}");
    }
    let sqlite = format!("sqlite:{}", text(&demo().join("audit.db")));
    verify(&sqlite, &keyed(&k, Some(&demo_witness))).expect(0, &[]);
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
//
// Every store holds the demo's chains and the checkpoints its sink stored (one final checkpoint a
// chain, at its head, signed when the demo's processor released it). The same attacks run on each
// kind of store, each through what an attacker with write access to it uses.

/// A store holding the demo's chains, as an attacker with write access sees it.
trait Store {
    /// `verify`'s source for it.
    fn source(&self) -> String;
    /// The events of `chain` as the store holds them, in seq order.
    fn chain(&self, chain: &str) -> Vec<Value>;
    /// Adds `events` (of one chain, in seq order) as its sink would have stored them.
    fn add(&self, events: &[Value]);
    /// Deletes the checkpoints the sink stored for `chain`.
    fn delete_checkpoints(&self, chain: &str);
}

/// `p` of a chain named `audit.raw/<p>`: the partition it is stored in.
fn partition_of(chain: &str) -> i32 {
    chain.rsplit_once('/').unwrap().1.parse().unwrap()
}

/// A private copy of the demo's JSONL directory, edited with `std::fs`.
struct Jsonl(tempfile::TempDir);

impl Store for Jsonl {
    fn source(&self) -> String {
        text(self.0.path())
    }

    fn chain(&self, chain: &str) -> Vec<Value> {
        events(self.0.path(), partition_of(chain))
    }

    fn add(&self, forged: &[Value]) {
        let p = partition_of(chain_of(&forged[0]));
        let partition = self.0.path().join(format!("partition-{p}"));
        if partition.exists() {
            return append_events(self.0.path(), p, forged);
        }
        // A partition of its own, in a file named by its first offset as the sink names one.
        std::fs::create_dir_all(&partition).unwrap();
        let offset = |e: &Value| e["integrity"]["source"]["offset"].as_i64().unwrap();
        let text_lines: Vec<String> = forged.iter().map(|e| event_line(p, offset(e), e)).collect();
        write_lines(&partition.join(format!("{:020}.jsonl", offset(&forged[0]))), &text_lines);
    }

    fn delete_checkpoints(&self, chain: &str) {
        without_stored_checkpoints(self.0.path(), partition_of(chain));
    }
}

/// A SQL store, changed with raw SQL: a private copy of the demo's SQLite database, or a fresh
/// PostgreSQL database its sink loaded with the demo's events and checkpoints.
struct Sql {
    source: String,
    _dir: Option<tempfile::TempDir>,
}

impl Sql {
    fn sqlite() -> Sql {
        let (dir, source) = sqlite_copy();
        Sql { source, _dir: Some(dir) }
    }

    fn postgres() -> Sql {
        Sql { source: postgres_store(), _dir: None }
    }
}

impl Store for Sql {
    fn source(&self) -> String {
        self.source.clone()
    }

    fn chain(&self, chain: &str) -> Vec<Value> {
        let select = format!("SELECT CAST(event AS TEXT) FROM audit_events WHERE chain = '{chain}' ORDER BY seq");
        sql_rows(&self.source, &[select]).iter().map(|row| serde_json::from_str(&row[0]).unwrap()).collect()
    }

    fn add(&self, forged: &[Value]) {
        let p = partition_of(chain_of(&forged[0]));
        let newest = format!(
            "SELECT CAST(COALESCE(MAX(kafka_offset), -1) AS TEXT) FROM audit_events WHERE kafka_partition = {p}"
        );
        let after: i64 = sql(&self.source, &[newest])[0].parse().unwrap();
        let inserts: Vec<String> =
            forged.iter().zip(after + 1..).map(|(e, offset)| sql_insert(&self.source, e, p, offset)).collect();
        sql(&self.source, &inserts[..]);
    }

    fn delete_checkpoints(&self, chain: &str) {
        sql(&self.source, &[format!("DELETE FROM audit_checkpoints WHERE chain = '{chain}'")]);
    }
}

/// A fresh MongoDB database its sink loaded, changed with the driver.
impl Store for MongoStore {
    fn source(&self) -> String {
        self.source.clone()
    }

    fn chain(&self, chain: &str) -> Vec<Value> {
        self.with("audit_events", async |c| {
            let mut cursor = c.find(doc! {"integrity.chain": chain}).sort(doc! {"integrity.seq": 1}).await.unwrap();
            let mut out = Vec::new();
            while cursor.advance().await.unwrap() {
                let mut document = cursor.deserialize_current().unwrap();
                document.remove("_id");
                out.push(Bson::Document(document).into_relaxed_extjson());
            }
            out
        })
    }

    fn add(&self, forged: &[Value]) {
        let documents: Vec<Document> = forged
            .iter()
            .map(|e| {
                let mut d = mongodb::bson::to_document(e).unwrap();
                d.insert("_id", e["eventId"].as_str().unwrap());
                d
            })
            .collect();
        self.with("audit_events", async |c| c.insert_many(documents).await.unwrap());
    }

    fn delete_checkpoints(&self, chain: &str) {
        self.with("audit_events_checkpoints", async |c| c.delete_many(doc! {"checkpoint.chain": chain}).await.unwrap());
    }
}

/// The untouched store with the key, and with the witness too: intact, every chain attested up to
/// its head.
fn keyed_control(store: &dyn Store) {
    let keys = keys_copy();
    let k = text(keys.path());
    for witness in [None, Some(demo_witness())] {
        let out = verify(store.source(), &keyed(&k, witness.as_deref()));
        out.expect(0, &[]);
        let chains = out.report["chains"].as_array().unwrap();
        assert_eq!(chains.len(), 4, "{:#}", out.report);
        for chain in chains {
            assert_eq!(chain["unattestedEvents"], 0, "{chain}");
            assert_eq!(chain["checkpointedSeq"], chain["headSeq"], "the final checkpoint covers the head: {chain}");
        }
    }
}

/// Events with correct links appended after a chain's final checkpoint: one to chain 0, checked
/// with the key; three to chain 2, checked against the witness too. Without a key they pass.
fn forged_tails(new: impl Fn() -> Box<dyn Store>) {
    let keys = keys_copy();
    let k = text(keys.path());
    let witness = demo_witness();
    for (p, n, with_witness) in [(0, 1, false), (2, 3, true)] {
        let store = new();
        let chain = format!("audit.raw/{p}");
        let last = store.chain(&chain).pop().unwrap();
        let head = seq_of(&last);
        store.add(&forged_after(&last, n, &now_rfc3339(chrono::TimeDelta::zero())));
        verify(store.source(), &[]).expect(0, &[]);
        let out = verify(store.source(), &keyed(&k, with_witness.then_some(witness.as_str())));
        out.expect(1, &[("after_final_checkpoint", head + 1)]);
        assert_eq!(out.one("after_final_checkpoint").chain, chain);
        assert_eq!(out.unattested(&chain), (Some(head + 1), Some(n)));
    }
}

/// A chain added with every hash recomputed and linked from the genesis: chain 0 copied whole as
/// `audit.raw/9`, and two events of chain 1 as `audit.raw/8`. Without a key they pass.
fn forged_chains(new: impl Fn() -> Box<dyn Store>) {
    let keys = keys_copy();
    let k = text(keys.path());
    let witness = demo_witness();
    for (from, to, take) in [(0, 9, usize::MAX), (1, 8, 2)] {
        let store = new();
        let forged = forged_chain(store.chain(&format!("audit.raw/{from}")).into_iter().take(take), to);
        store.add(&forged);
        verify(store.source(), &[]).expect(0, &[]);
        for args in [keyed(&k, None), keyed(&k, Some(&witness))] {
            let out = verify(store.source(), &args);
            out.expect(1, &[("unattested_chain", 1)]);
            let chain = format!("audit.raw/{to}");
            assert_eq!(out.one("unattested_chain").chain, chain);
            assert_eq!(out.unattested(&chain), (Some(1), Some(forged.len() as u64)));
        }
    }
}

/// Chain 3's stored checkpoints deleted: with the key alone the chain is unattested, the witness
/// still attests it; then a tail forged after its head: the witness's final checkpoint shows it.
fn deleted_checkpoints(new: impl Fn() -> Box<dyn Store>) {
    let keys = keys_copy();
    let k = text(keys.path());
    let witness = demo_witness();
    let store = new();
    let chain = "audit.raw/3";
    store.delete_checkpoints(chain);
    let last = store.chain(chain).pop().unwrap();
    let head = seq_of(&last);
    verify(store.source(), &[]).expect(0, &[]);
    let out = verify(store.source(), &keyed(&k, None));
    out.expect(1, &[("unattested_chain", 1)]);
    assert_eq!((out.one("unattested_chain").chain.as_str(), out.unattested(chain)), (chain, (Some(1), Some(head))));
    verify(store.source(), &keyed(&k, Some(&witness))).expect(0, &[]);

    store.add(&forged_after(&last, 2, &now_rfc3339(chrono::TimeDelta::zero())));
    let out = verify(store.source(), &keyed(&k, None));
    out.expect(1, &[("unattested_chain", 1)]);
    assert_eq!(out.unattested(chain), (Some(1), Some(head + 2)));
    let out = verify(store.source(), &keyed(&k, Some(&witness)));
    out.expect(1, &[("after_final_checkpoint", head + 1)]);
    assert_eq!(out.unattested(chain), (Some(head + 1), Some(2)));
}

/// The keyed control, then every attack above, each on a fresh store `new` makes.
fn every_attack(new: fn() -> Box<dyn Store>) {
    keyed_control(&*new());
    forged_tails(new);
    forged_chains(new);
    deleted_checkpoints(new);
}

fn jsonl() -> Box<dyn Store> {
    Box::new(Jsonl(jsonl_copy()))
}

#[test]
fn a_forged_tail_after_the_final_checkpoint_is_tampered() {
    forged_tails(jsonl);
}

#[test]
fn a_forged_extra_chain_with_correct_links_is_tampered() {
    forged_chains(jsonl);
}

#[test]
fn a_chain_whose_stored_checkpoints_were_deleted_is_unattested() {
    deleted_checkpoints(jsonl);
}

#[test]
fn class5_sqlite_every_event_and_chain_is_attested() {
    every_attack(|| Box::new(Sql::sqlite()));
}

#[test]
fn class5_postgres_every_event_and_chain_is_attested() {
    every_attack(|| Box::new(Sql::postgres()));
}

/// A checkpoint row whose query columns were moved to another chain and seq: reported as a
/// `column_mismatch` of the chain its signed content names, and still counted for that chain, so
/// `--chain` selects it by content (not `no_checkpoints`).
fn moved_checkpoint_columns(store: &Sql) {
    let keys = keys_copy();
    let k = text(keys.path());
    sql(&store.source, &["UPDATE audit_checkpoints SET chain = 'audit.raw/x', seq = 1 WHERE chain = 'audit.raw/3'"]);
    let head = seq_of(&store.chain("audit.raw/3").pop().unwrap());
    for only in [None, Some("audit.raw/3")] {
        let mut args = keyed(&k, None);
        if let Some(chain) = only {
            args.extend(["--chain", chain]);
        }
        let out = verify(store.source(), &args);
        let moved: Vec<&Found> = out.findings.iter().filter(|f| f.kind == "column_mismatch").collect();
        assert!(!moved.is_empty(), "{:#}", out.report);
        assert!(moved.iter().all(|f| f.chain == "audit.raw/3"), "{moved:#?}");
        assert_eq!(out.code, 1, "{:#}", out.report);
        assert!(out.findings.iter().all(|f| f.kind == "column_mismatch"), "{:#}", out.report);
        let chain = out.report["chains"].as_array().unwrap().iter().find(|c| c["chain"] == "audit.raw/3").unwrap();
        assert_eq!(chain["checkpointedSeq"], head, "the moved checkpoint still attests its chain: {chain}");
    }
}

#[test]
fn class2_sql_checkpoint_columns_must_equal_the_signed_checkpoint() {
    moved_checkpoint_columns(&Sql::sqlite());
    moved_checkpoint_columns(&Sql::postgres());
}

#[test]
fn class5_mongodb_every_event_and_chain_is_attested() {
    every_attack(|| Box::new(MongoStore::new()));
}

// The processed topic: checkpoints travel as `audit-record: checkpoint` records after the events
// they cover, in the chain's partition. A topic is append-only to its writers (DeleteRecords only
// cuts a partition's start, class 8), so no checkpoint can be deleted from it alone; events and
// chains can be appended by anyone allowed to produce.

/// Produces `events` as records the processor would have published (canonical JSON) with a
/// client of the attacker's own.
fn produce_events(topic: &Processed, p: i32, events: &[Value]) {
    for e in events {
        produce_raw(topic, p, Some(&canonical(e)));
    }
}

#[test]
fn class5_processed_topic_forged_tails_are_reported() {
    // Chain 0 released: the processor signs its head again, as final, naming the checkpoint
    // before it.
    let (source, topic, keys) = processed_topic(2, 40, true);
    let key = topic_key(&keys);
    let signer = topic_signing_key();
    let stored = topic.checkpoints.iter().find(|c| c["chain"] == "audit.raw/0").unwrap().clone();
    let stored = Checkpoint::from_value(stored).unwrap();
    let links = CheckpointLinks { prev: Some(stored.digest()), is_final: true };
    let released = signer.sign_linked(&stored.chain, stored.seq, &stored.hash, "2026-11-26T12:00:01.000Z", links);
    produce_checkpoint(&topic, 0, &released);
    let out = verify(&source, &["--public-key", &key]);
    out.expect(0, &[]);
    for chain in ["audit.raw/0", "audit.raw/1"] {
        assert_eq!(out.unattested(chain), (None, Some(0)));
    }

    // Two events forged after it.
    let head = stored.seq;
    produce_events(&topic, 0, &forged_after(topic.published[&0].last().unwrap(), 2, &now_rfc3339(-MINUTE)));
    verify(&source, &[]).expect(0, &[]);
    let out = verify(&source, &["--public-key", &key]);
    out.expect(1, &[("after_final_checkpoint", head + 1)]);
    assert_eq!(out.one("after_final_checkpoint").chain, "audit.raw/0");
    assert_eq!(out.unattested("audit.raw/0"), (Some(head + 1), Some(2)));

    // After chain 1's newest checkpoint, which is not final: one event received a minute ago is a
    // live chain's tail, counted; one more that claims a receipt two hours ago makes it incomplete.
    let (source, topic, keys) = processed_topic(2, 40, true);
    let key = topic_key(&keys);
    let last = topic.published[&1].last().unwrap();
    let head = seq_of(last);
    let fresh = forged_after(last, 1, &now_rfc3339(-MINUTE));
    produce_events(&topic, 1, &fresh);
    let out = verify(&source, &["--public-key", &key]);
    out.expect(0, &[]);
    assert_eq!(out.unattested("audit.raw/1"), (Some(head + 1), Some(1)));
    produce_events(&topic, 1, &forged_after(&fresh[0], 1, &now_rfc3339(chrono::TimeDelta::hours(-2))));
    let out = verify(&source, &["--public-key", &key]);
    out.expect(2, &[("unattested_tail", head + 1)]);
    assert_eq!(out.one("unattested_tail").chain, "audit.raw/1");
    assert_eq!(out.unattested("audit.raw/1"), (Some(head + 1), Some(2)));
}

const MINUTE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

#[test]
fn class5_processed_topic_forged_chains_are_unattested() {
    let (source, topic, keys) = processed_topic(2, 40, true);
    let key = topic_key(&keys);
    // Chain 0 copied whole as audit.raw/9, written into partition 1 after chain 1's checkpoint.
    let copy = forged_chain(topic.published[&0].iter().cloned(), 9);
    produce_events(&topic, 1, &copy);
    verify(&source, &[]).expect(0, &[]);
    let out = verify(&source, &["--public-key", &key]);
    out.expect(1, &[("unattested_chain", 1)]);
    assert_eq!(out.one("unattested_chain").chain, "audit.raw/9");
    assert_eq!(out.unattested("audit.raw/9"), (Some(1), Some(copy.len() as u64)));

    // A partition added to the topic, holding a two-event chain of its own (audit.raw/2).
    add_partitions(&topic, 3);
    let two = forged_chain(topic.published[&1].iter().take(2).cloned(), 2);
    produce_events(&topic, 2, &two);
    verify(&source, &[]).expect(0, &[]);
    let out = verify(&source, &["--public-key", &key]);
    out.expect(1, &[("unattested_chain", 1), ("unattested_chain", 1)]);
    assert_eq!(out.unattested("audit.raw/2"), (Some(1), Some(2)));
    // Checked alone, no checkpoint of that chain is found at all: not attested, so not verified
    // (`no_checkpoints` is "of --chain", docs/CLI.md).
    verify(&source, &["--public-key", &key, "--chain", "audit.raw/2"]).expect(4, &[("no_checkpoints", 0)]);
}

/// Grows the topic to `count` partitions (CreatePartitions) with an admin client of the
/// attacker's own, and waits until the broker's metadata shows them.
fn add_partitions(topic: &Processed, count: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &topic.bootstrap).create().unwrap();
    let results = runtime()
        .block_on(admin.create_partitions(&[NewPartitions::new(&topic.topic, count)], &AdminOptions::new()))
        .unwrap();
    results[0].as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metadata = admin.inner().fetch_metadata(Some(&topic.topic), std::time::Duration::from_secs(5)).unwrap();
        if metadata.topics()[0].partitions().len() == count {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the topic never showed {count} partitions");
        std::thread::sleep(std::time::Duration::from_millis(100));
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
    let demo_witness = demo_witness();
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
