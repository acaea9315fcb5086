//! `auditctl verify` against every store it reads, on chains made by the real pipeline
//! (`auditctl demo`: producer → processor → SQLite and JSONL sinks), then tampered with in each way:
//! an edited field, a deleted event, two events swapped, a forked seq, a skipped raw record. Each
//! test asserts that verify reports exactly that break, with the chain, seq and event id, and the
//! binary's exit code for it.
//!
//! One suite of one contract (verify's findings per kind of break), kept in one file although it
//! is over 500 lines: each test is a short scenario and they share the fixtures at the top.

use std::path::{Path, PathBuf};
use std::process::Command;

use audit_schema::checkpoint::Checkpoint;
use audit_sink::sink::{CheckpointRecord, Sink, SinkRecord};
use audit_sink::stores::jsonl::{jsonl_files, jsonl_partitions};
use audit_tests::demo::{copy_dir, demo_store, jsonl_records};
use auditctl::source::Location;
use auditctl::{verify, Source, Verdict, VerifyReport, VerifyRequest};
use serde_json::Value;

const EVENTS: u64 = 600;

/// One demo run shared by the tests of this file (each test copies what it tampers with).
fn demo_dir() -> PathBuf {
    demo_store(Path::new(env!("CARGO_BIN_EXE_audit-test-auditctl")), EVENTS)
}

/// A private copy of the demo's JSONL directory, events only (the signed checkpoints the sink
/// stored beside them left out, so the tampering tests see event lines alone).
fn jsonl_copy() -> tempfile::TempDir {
    let dir = jsonl_copy_with_checkpoints();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            let text = std::fs::read_to_string(&file).unwrap();
            let events: Vec<String> = text.lines().filter(|l| !is_checkpoint_line(l)).map(str::to_owned).collect();
            write_lines(&file, &events);
        }
    }
    dir
}

/// A private copy of the demo's JSONL directory as the sink wrote it.
fn jsonl_copy_with_checkpoints() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo_dir().join("jsonl"), dir.path());
    dir
}

fn is_checkpoint_line(line: &str) -> bool {
    serde_json::from_str::<Value>(line).unwrap().get("checkpoint").is_some()
}

/// The lines of the first file of partition 0 (the tests tamper with that chain).
fn first_file(dir: &Path) -> (PathBuf, Vec<String>) {
    let (_, partition) = jsonl_partitions(dir).unwrap().remove(0);
    let file = jsonl_files(&partition).unwrap().remove(0);
    let lines = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    (file, lines)
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn event_of(line: &str) -> Value {
    serde_json::from_str::<Value>(line).unwrap()["event"].clone()
}

fn run_verify(source: &Source, request: &VerifyRequest) -> VerifyReport {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(verify(source, request, &mut |_| {})).expect("verify reads the source")
}

/// Runs the binary and returns its exit code and standard output.
fn auditctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-test-auditctl")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kinds(report: &VerifyReport) -> Vec<(String, u64)> {
    report.findings().map(|f| (f.kind.clone(), f.seq)).collect()
}

#[test]
fn the_demo_chains_verify_intact_from_both_sinks() {
    let dir = demo_dir();
    for source in
        [Source::Store(Location::Jsonl(dir.join("jsonl"))), Source::Store(Location::Sqlite(dir.join("audit.db")))]
    {
        let report = run_verify(&source, &VerifyRequest::default());
        assert_eq!(report.verdict, Verdict::Intact, "{source}: {:?}", kinds(&report));
        // Every good event, the 40 KiB one, and the two bad records (one event, one quarantine entry).
        assert_eq!(report.events, EVENTS + 3, "{source}");
        assert_eq!(report.chains.iter().map(|c| c.quarantined).sum::<u64>(), 1, "{source}");
        assert!(report.chains.iter().all(|c| c.first_seq == Some(1) && c.hashed == c.events));
    }
    let (code, out) = auditctl(&["verify", "--source", &format!("jsonl:{}", dir.join("jsonl").display())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("INTACT"), "{out}");
}

#[test]
fn an_edited_field_is_reported_as_modified_at_its_seq() {
    let dir = jsonl_copy();
    let (file, mut lines) = first_file(dir.path());
    let mut wrapper: Value = serde_json::from_str(&lines[4]).unwrap();
    wrapper["event"]["outcome"] = "FAILURE".into();
    let (seq, id) = (wrapper["event"]["integrity"]["seq"].as_u64().unwrap(), wrapper["event"]["eventId"].clone());
    lines[4] = wrapper.to_string();
    write_lines(&file, &lines);

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &VerifyRequest::default());
    assert_eq!(report.verdict, Verdict::Tampered);
    assert_eq!(kinds(&report), vec![("modified".to_owned(), seq)]);
    let finding = report.findings().next().unwrap();
    assert_eq!(finding.event_id.as_deref(), id.as_str());
    assert!(finding.detail.contains("content hashes to"), "{}", finding.detail);

    let (code, out) = auditctl(&["verify", "--json", "--source", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "tampered exits 1: {out}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["verdict"], "tampered");
}

#[test]
fn a_deleted_event_is_reported_as_missing() {
    let dir = jsonl_copy();
    let (file, mut lines) = first_file(dir.path());
    let removed = event_of(&lines.remove(7));
    write_lines(&file, &lines);
    let seq = removed["integrity"]["seq"].as_u64().unwrap();

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &VerifyRequest::default());
    assert_eq!(report.verdict, Verdict::Tampered);
    assert_eq!(kinds(&report), vec![("missing".to_owned(), seq)], "{:?}", report.findings().collect::<Vec<_>>());
}

#[test]
fn two_swapped_events_are_reported_as_reordered() {
    let dir = jsonl_copy();
    let (file, mut lines) = first_file(dir.path());
    lines.swap(10, 11);
    write_lines(&file, &lines);
    let later = event_of(&lines[11])["integrity"]["seq"].as_u64().unwrap();

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &VerifyRequest::default());
    assert_eq!(report.verdict, Verdict::Tampered);
    let found = kinds(&report);
    assert!(found.contains(&("reordered".to_owned(), later)), "{found:?}");
    assert!(found.iter().all(|(k, _)| k == "reordered"), "only the swap is reported: {found:?}");
}

#[test]
fn a_second_event_at_one_seq_is_reported_as_a_fork() {
    let dir = jsonl_copy();
    let (file, mut lines) = first_file(dir.path());
    // A forger re-seals a different event at an existing seq: its own hash is right, but two
    // different events now claim that seq.
    let mut forged = event_of(&lines[3]);
    forged["actor"]["id"] = "mallory".into();
    forged["integrity"]["hash"] = audit_schema::chain::hash_event_value(&forged).unwrap().into();
    let seq = forged["integrity"]["seq"].as_u64().unwrap();
    lines.insert(6, serde_json::json!({"partition": 0, "offset": 999_999, "event": forged}).to_string());
    write_lines(&file, &lines);

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &VerifyRequest::default());
    assert_eq!(report.verdict, Verdict::Tampered);
    assert_eq!(kinds(&report), vec![("forked".to_owned(), seq)]);
}

#[test]
fn a_raw_record_no_event_accounts_for_is_reported_as_incomplete() {
    let dir = jsonl_copy();
    let (file, lines) = first_file(dir.path());
    // Re-seal the whole chain from the 20th event on as if raw offset N had been skipped: the
    // links all hold, only the source offsets jump.
    let mut head: Option<String> = None;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut wrapper: Value = serde_json::from_str(line).unwrap();
        let e = &mut wrapper["event"];
        if i >= 20 {
            let offset = e["integrity"]["source"]["offset"].as_i64().unwrap();
            e["integrity"]["source"]["offset"] = (offset + 1).into();
            e["integrity"]["prevHash"] = head.clone().unwrap().into();
            e["integrity"]["hash"] = audit_schema::chain::hash_event_value(e).unwrap().into();
        }
        head = e["integrity"]["hash"].as_str().map(str::to_owned);
        out.push(wrapper.to_string());
    }
    let seq = event_of(&out[20])["integrity"]["seq"].as_u64().unwrap();
    // The rest of the partition's files would no longer link: keep only this one.
    let partition = file.parent().unwrap().to_owned();
    for other in jsonl_files(&partition).unwrap().into_iter().filter(|f| *f != file) {
        std::fs::remove_file(other).unwrap();
    }
    write_lines(&file, &out);

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &VerifyRequest::default());
    assert_eq!(kinds(&report), vec![("unaccounted_input".to_owned(), seq)]);
    assert_eq!(report.verdict, Verdict::Incomplete);
    let (code, _) = auditctl(&["verify", "--source", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "incomplete exits 2");
}

#[test]
fn an_edited_row_in_sqlite_is_reported_and_a_tenant_filter_hashes_only_that_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    std::fs::copy(demo_dir().join("audit.db"), &db).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (victim, tenant): (String, String) = runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display())).await.unwrap();
        let row: (String, String) = sqlx::query_as(
            "SELECT event_id, tenant_id FROM audit_events WHERE tenant_id = 'globex' ORDER BY seq LIMIT 1 OFFSET 3",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        sqlx::query("UPDATE audit_events SET event = json_set(event, '$.actor.id', 'someone-else') WHERE event_id = ?")
            .bind(&row.0)
            .execute(&mut conn)
            .await
            .unwrap();
        row
    });
    let source = Source::Store(Location::Sqlite(db.clone()));
    let report = run_verify(&source, &VerifyRequest::default());
    let mut found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.event_id.clone())).collect();
    found.sort();
    // The actor_id column no longer says what the edited event says.
    assert_eq!(found, vec![("column_mismatch", Some(victim.clone())), ("modified", Some(victim.clone()))]);

    // Another tenant's view: globex's contents are not hashed, so the edit is not this tenant's
    // finding, and every link still verifies.
    let report = run_verify(&source, &VerifyRequest { tenant: Some("acme".into()), ..VerifyRequest::default() });
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", kinds(&report));
    let hashed: u64 = report.chains.iter().map(|c| c.hashed).sum();
    assert!(hashed > 0 && hashed < report.events, "only acme's events hashed: {hashed} of {}", report.events);
    // The tenant's own view finds it.
    let report = run_verify(&source, &VerifyRequest { tenant: Some(tenant), ..VerifyRequest::default() });
    assert_eq!(report.verdict, Verdict::Tampered);
}

#[test]
fn a_chain_and_time_window_are_verified_on_their_own() {
    let source = Source::Store(Location::Jsonl(demo_dir().join("jsonl")));
    let all = run_verify(&source, &VerifyRequest::default());
    let chain = all.chains[1].chain.clone();
    let report = run_verify(&source, &VerifyRequest { chain: Some(chain.clone()), ..VerifyRequest::default() });
    assert_eq!(report.chains.len(), 1);
    assert_eq!(report.chains[0].chain, chain);
    assert_eq!(report.verdict, Verdict::Intact);

    let far_future = chrono::DateTime::parse_from_rfc3339("2999-01-01T00:00:00Z").unwrap().to_utc();
    let report = run_verify(&source, &VerifyRequest { since: Some(far_future), ..VerifyRequest::default() });
    assert_eq!(report.events, all.events, "every chain is still verified whole");
    assert_eq!(report.chains.iter().map(|c| c.selected).sum::<u64>(), 0, "nothing received after 2999");
    assert_eq!(report.verdict, Verdict::Unverified, "nothing selected is not intact");
}

#[test]
fn an_unreadable_source_exits_3_and_a_bad_one_names_the_problem() {
    let (code, _) = auditctl(&["verify", "--source", "sqlite:/nonexistent/audit.db"]);
    assert_eq!(code, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_audit-test-auditctl"))
        .args(["verify", "--source", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
}

/// The JSONL demo events and the checkpoints stored beside them as sink records, for loading
/// other stores.
fn records() -> (Vec<SinkRecord>, Vec<CheckpointRecord>) {
    jsonl_records(&demo_dir().join("jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_mongodb_are_read_and_an_edit_in_each_is_found() {
    let (records, checkpoints) = tokio::task::spawn_blocking(records).await.unwrap();
    assert!(!checkpoints.is_empty(), "the demo's sinks store checkpoints");
    let victim = records[42].event_id.clone();
    let keyed = VerifyRequest { public_keys: vec![demo_dir().join("keys/checkpoint.pub")], ..VerifyRequest::default() };

    let db = audit_tests::stores::postgres::PostgresTarget::new(None).await;
    let sink = audit_sink::stores::postgres::PostgresSink::connect(db.url(), 2, true).await.unwrap();
    sink.write(&records).await.unwrap();
    sink.write_checkpoints(&checkpoints).await.unwrap();
    let source = Source::Store(Location::Postgres(db.url().to_owned()));
    let report = verify(&source, &keyed, &mut |_| {}).await.unwrap();
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", kinds(&report));
    assert_eq!(report.events, records.len() as u64);
    assert_eq!(
        report.checkpoints,
        signed_heads(checkpoints.iter().map(|c| &c.checkpoint)),
        "the stored checkpoints are read and checked"
    );
    assert!(report.chains.iter().all(|c| c.checkpointed_seq == c.head_seq));
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        // The event rewritten through jsonb, its row naming that form: only the content changed.
        sqlx::query(
            "UPDATE audit_events SET event = jsonb_set(event::jsonb, '{action}', '\"auth.logout\"')::text, \
             event_form = 'jsonb' WHERE event_id = $1",
        )
        .bind(&victim)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let report = verify(&source, &VerifyRequest::default(), &mut |_| {}).await.unwrap();
    let found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.event_id.clone())).collect();
    // The action column still says what the event said before the edit.
    assert_eq!(found, vec![("modified", Some(victim.clone())), ("column_mismatch", Some(victim.clone()))]);

    let uri = audit_tests::mongodb_uri();
    let database = format!("verify_{}", std::process::id());
    let config = audit_sink::stores::mongodb::MongoConfig {
        uri: Some(uri.clone()),
        database: database.clone(),
        collection: "audit_events".into(),
    };
    let sink = audit_sink::stores::mongodb::MongoSink::connect(&uri, &config).await.unwrap();
    sink.write(&records).await.unwrap();
    sink.write_checkpoints(&checkpoints).await.unwrap();
    let (base, query) = uri.split_once('?').unwrap_or((&uri, ""));
    let source: Source = format!("{}/{database}?{query}#audit_events", base.trim_end_matches('/')).parse().unwrap();
    let report = verify(&source, &keyed, &mut |_| {}).await.unwrap();
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", kinds(&report));
    assert_eq!(report.events, records.len() as u64);
    assert_eq!(
        report.checkpoints,
        signed_heads(checkpoints.iter().map(|c| &c.checkpoint)),
        "the stored checkpoints are read and checked"
    );
    assert!(report.chains.iter().all(|c| c.checkpointed_seq == c.head_seq));
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    client
        .database(&database)
        .collection::<mongodb::bson::Document>("audit_events")
        .update_one(mongodb::bson::doc! {"eventId": &victim}, mongodb::bson::doc! {"$set": {"outcome": "FAILURE"}})
        .await
        .unwrap();
    let report = verify(&source, &VerifyRequest::default(), &mut |_| {}).await.unwrap();
    let found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.event_id.clone())).collect();
    assert_eq!(found, vec![("modified", Some(victim))]);
    client.database(&database).drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processed_topic_itself_is_read_and_verified() {
    let mut processed = audit_tests::sinks::Processed::create(3).await;
    let key = audit_schema::checkpoint::SigningKey::from_seed(&[5; 32]);
    let keys = tempfile::tempdir().unwrap();
    let public = keys.path().join("checkpoint.pub");
    std::fs::write(&public, key.public().to_hex()).unwrap();
    let mut topic = tokio::task::spawn_blocking(move || {
        processed.publish(300);
        processed.publish_checkpoints(&key);
        processed
    })
    .await
    .unwrap();
    let source: Source = format!("kafka://{}/{}", topic.bootstrap, topic.topic).parse().unwrap();
    let keyed = VerifyRequest { public_keys: vec![public], ..VerifyRequest::default() };
    let report = verify(&source, &keyed, &mut |_| {}).await.unwrap();
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", kinds(&report));
    assert_eq!(report.events, 300);
    assert_eq!(report.chains.len(), 3);
    assert_eq!(report.checkpoints, 3, "the checkpoint records in the topic are read and checked");
    assert!(report.chains.iter().all(|c| c.checkpointed_seq == c.head_seq));

    // A record forged into partition 1 (a valid-looking event re-sealed at an existing seq).
    let mut forged = topic.published[&1][5].clone();
    forged["outcome"] = "FAILURE".into();
    forged["integrity"]["hash"] = audit_schema::chain::hash_event_value(&forged).unwrap().into();
    let seq = forged["integrity"]["seq"].as_u64().unwrap();
    let bytes = serde_json::to_vec(&forged).unwrap();
    topic = tokio::task::spawn_blocking(move || {
        topic.publish_bytes(1, &bytes);
        topic
    })
    .await
    .unwrap();
    let report = verify(&source, &VerifyRequest::default(), &mut |_| {}).await.unwrap();
    // serde_json's bytes, not the processor's canonical ones: also reported.
    assert_eq!(kinds(&report), vec![("forked".to_owned(), seq), ("non_canonical".to_owned(), seq)]);
    drop(topic);
}

/// `--checkpoints` and `--public-key` for the demo's witness and key.
fn with_checkpoints() -> VerifyRequest {
    VerifyRequest {
        checkpoints: Some(demo_dir().join("witness").join("checkpoints.jsonl")),
        public_keys: vec![demo_dir().join("keys").join("checkpoint.pub")],
        ..VerifyRequest::default()
    }
}

/// The newest checkpoint of each chain in the demo's witness.
fn newest_checkpoints() -> std::collections::BTreeMap<String, u64> {
    let mut newest = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(demo_dir().join("witness/checkpoints.jsonl")).unwrap().lines() {
        let c: Value = serde_json::from_str(line).unwrap();
        let seq = newest.entry(c["chain"].as_str().unwrap().to_owned()).or_insert(0);
        *seq = (*seq).max(c["seq"].as_u64().unwrap());
    }
    newest
}

#[test]
fn the_demo_chains_reach_their_signed_checkpoints() {
    let report = run_verify(&Source::Store(Location::Jsonl(demo_dir().join("jsonl"))), &with_checkpoints());
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", kinds(&report));
    let newest = newest_checkpoints();
    assert!(report.checkpoints >= newest.len() as u64);
    for chain in &report.chains {
        // The processor signs each chain's final head when it stops.
        assert_eq!(chain.checkpointed_seq, chain.head_seq, "{}", chain.chain);
        assert_eq!(newest.get(&chain.chain), chain.head_seq.as_ref());
    }
}

#[test]
fn a_truncated_tail_verifies_alone_but_not_against_the_newest_checkpoint() {
    let dir = jsonl_copy();
    let (chain, checkpointed) = newest_checkpoints().into_iter().max_by_key(|(_, s)| *s).unwrap();
    let partition: i32 = chain.rsplit('/').next().unwrap().parse().unwrap();
    let files = jsonl_files(&dir.path().join(format!("partition-{partition}"))).unwrap();
    let last = files.last().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(last).unwrap().lines().map(str::to_owned).collect();
    lines.truncate(lines.len() - 3);
    write_lines(last, &lines);
    let source = Source::Store(Location::Jsonl(dir.path().to_owned()));

    let alone = run_verify(&source, &VerifyRequest::default());
    assert_eq!(alone.verdict, Verdict::Intact, "a chain alone cannot show a cut tail");
    let report = run_verify(&source, &with_checkpoints());
    assert_eq!(kinds(&report), vec![("truncated".to_owned(), checkpointed - 2)]);
    assert_eq!(report.verdict, Verdict::Incomplete);
    let finding = report.findings().next().unwrap();
    assert!(finding.detail.contains(&format!("covers seq {checkpointed}")), "{}", finding.detail);

    let witness = demo_dir().join("witness/checkpoints.jsonl");
    let public = demo_dir().join("keys/checkpoint.pub");
    let (code, out) = auditctl(&[
        "verify",
        "--source",
        dir.path().to_str().unwrap(),
        "--checkpoints",
        witness.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "truncation is incomplete: {out}");
    assert!(out.contains("TRUNCATED"), "{out}");
}

#[test]
fn a_forged_checkpoint_fails_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("checkpoints.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(demo_dir().join("witness/checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Moved forward to cover events that were never there (hiding a truncation the other way).
    let mut forged: Value = serde_json::from_str(&lines[0]).unwrap();
    forged["seq"] = (forged["seq"].as_u64().unwrap() + 10).into();
    let (chain, seq) = (forged["chain"].as_str().unwrap().to_owned(), forged["seq"].as_u64().unwrap());
    lines.push(forged.to_string());
    // And one signed with a key that is not the processor's.
    let other = tempfile::tempdir().unwrap();
    let (code, _) = auditctl(&["keys", "generate", "--out", other.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let key = audit_schema::checkpoint::SigningKey::from_file(&other.path().join("checkpoint.key")).unwrap();
    lines.push(serde_json::to_string(&key.sign(&chain, 1, &"0".repeat(64), "2026-11-26T00:00:00.000Z")).unwrap());
    write_lines(&witness, &lines);

    let request = VerifyRequest { checkpoints: Some(witness), ..with_checkpoints() };
    let report = run_verify(&Source::Store(Location::Jsonl(demo_dir().join("jsonl"))), &request);
    assert_eq!(report.verdict, Verdict::Tampered);
    let found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.chain.as_str(), f.seq)).collect();
    assert_eq!(found, vec![("forged_checkpoint", chain.as_str(), seq), ("forged_checkpoint", chain.as_str(), 1)]);
    let details: Vec<_> = report.findings().map(|f| f.detail.clone()).collect();
    assert!(
        details[0].contains("does not verify") && details[1].contains("not by the given public key"),
        "{details:?}"
    );
}

#[test]
fn a_rewritten_chain_verifies_alone_but_not_against_its_checkpoint() {
    let dir = jsonl_copy();
    let changed_seq = rewrite_partition_0(dir.path());
    let source = Source::Store(Location::Jsonl(dir.path().to_owned()));
    assert_eq!(run_verify(&source, &VerifyRequest::default()).verdict, Verdict::Intact, "links alone hold");
    let report = run_verify(&source, &with_checkpoints());
    assert_eq!(report.verdict, Verdict::Tampered);
    let found = kinds(&report);
    assert!(
        !found.is_empty() && found.iter().all(|(k, s)| k == "checkpoint_mismatch" && *s >= changed_seq),
        "{found:?}"
    );
}

/// The heads `checkpoints` sign: `verify` checks each `(chain, seq)` once (a head signed on schedule
/// and signed again as final when its lane is released is one checked checkpoint).
fn signed_heads<'a>(checkpoints: impl IntoIterator<Item = &'a Checkpoint>) -> u64 {
    checkpoints.into_iter().map(|c| (c.chain.as_str(), c.seq)).collect::<std::collections::BTreeSet<_>>().len() as u64
}

/// `--public-key` alone: the checkpoints the store holds beside the events.
fn with_stored_checkpoints() -> VerifyRequest {
    VerifyRequest { public_keys: vec![demo_dir().join("keys").join("checkpoint.pub")], ..VerifyRequest::default() }
}

#[test]
fn the_checkpoints_a_sink_stored_are_checked_with_the_public_key_alone() {
    let witness: Vec<Checkpoint> = std::fs::read_to_string(demo_dir().join("witness/checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let witnessed = witness.len();
    for source in [
        Source::Store(Location::Jsonl(demo_dir().join("jsonl"))),
        Source::Store(Location::Sqlite(demo_dir().join("audit.db"))),
    ] {
        let report = run_verify(&source, &with_stored_checkpoints());
        assert_eq!(report.verdict, Verdict::Intact, "{source}: {:?}", kinds(&report));
        assert_eq!(report.checkpoints, signed_heads(&witness), "{source}: every checkpoint reached the sink");
        for chain in &report.chains {
            assert_eq!(chain.checkpointed_seq, chain.head_seq, "{source}: {}", chain.chain);
        }
        // Without a key they are counted, not trusted.
        let report = run_verify(&source, &VerifyRequest::default());
        assert_eq!((report.checkpoints, report.unchecked_checkpoints), (0, witnessed as u64), "{source}");
    }
    let (code, out) = auditctl(&["verify", "--source", demo_dir().join("jsonl").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("pass --public-key"), "{out}");
}

/// Rewrites partition 0 of a JSONL copy from its 5th event on (new content, fresh hashes,
/// consistent links), leaving checkpoint lines as they are; returns the first changed seq.
fn rewrite_partition_0(dir: &Path) -> u64 {
    let partition = dir.join("partition-0");
    let mut head: Option<String> = None;
    let mut index = 0;
    let mut changed_seq = 0;
    for file in jsonl_files(&partition).unwrap() {
        let mut out = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let mut wrapper: Value = serde_json::from_str(line).unwrap();
            if wrapper.get("checkpoint").is_some() {
                out.push(line.to_owned());
                continue;
            }
            let e = &mut wrapper["event"];
            if index >= 4 {
                if index == 4 {
                    e["outcome"] = "FAILURE".into();
                    e["actor"]["id"] = "nobody".into();
                    changed_seq = e["integrity"]["seq"].as_u64().unwrap();
                }
                e["integrity"]["prevHash"] = head.clone().unwrap().into();
                e["integrity"]["hash"] = audit_schema::chain::hash_event_value(e).unwrap().into();
            }
            head = e["integrity"]["hash"].as_str().map(str::to_owned);
            out.push(wrapper.to_string());
            index += 1;
        }
        write_lines(&file, &out);
    }
    changed_seq
}

#[test]
fn a_rewritten_chain_is_caught_by_the_checkpoints_its_own_store_holds() {
    let dir = jsonl_copy_with_checkpoints();
    let changed_seq = rewrite_partition_0(dir.path());
    let source = Source::Store(Location::Jsonl(dir.path().to_owned()));
    assert_eq!(run_verify(&source, &VerifyRequest::default()).verdict, Verdict::Intact, "links alone hold");
    let report = run_verify(&source, &with_stored_checkpoints());
    assert_eq!(report.verdict, Verdict::Tampered);
    let found = kinds(&report);
    assert!(
        !found.is_empty() && found.iter().all(|(k, s)| k == "checkpoint_mismatch" && *s >= changed_seq),
        "{found:?}"
    );
}

#[test]
fn a_cut_tail_is_caught_by_a_stored_checkpoint_unless_it_went_too_and_then_by_the_witness() {
    // Cut the last three events of the longest chain, keeping its final checkpoint line.
    let (chain, checkpointed) = newest_checkpoints().into_iter().max_by_key(|(_, s)| *s).unwrap();
    let partition: i32 = chain.rsplit('/').next().unwrap().parse().unwrap();
    let cut = |keep_checkpoints: bool| {
        let dir = jsonl_copy_with_checkpoints();
        let files = jsonl_files(&dir.path().join(format!("partition-{partition}"))).unwrap();
        let last = files.last().unwrap();
        let lines: Vec<String> = std::fs::read_to_string(last).unwrap().lines().map(str::to_owned).collect();
        let events: Vec<usize> = (0..lines.len()).filter(|i| !is_checkpoint_line(&lines[*i])).collect();
        let gone: Vec<usize> = events[events.len() - 3..].to_vec();
        let kept: Vec<String> = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| !gone.contains(i) && (keep_checkpoints || !is_checkpoint_line(l) || *i < gone[0]))
            .map(|(_, l)| l.clone())
            .collect();
        write_lines(last, &kept);
        dir
    };
    let dir = cut(true);
    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &with_stored_checkpoints());
    assert_eq!(kinds(&report), vec![("truncated".to_owned(), checkpointed - 2)]);
    assert_eq!(report.verdict, Verdict::Incomplete);

    // Whoever cut the events also removed the checkpoints after them: the store alone cannot tell
    // where the chain ended (docs/INTEGRITY.md), the witness can. The store alone still shows
    // that what is left is not attested (with the demo's one checkpoint per chain, the whole
    // chain; with older checkpoints left, the events after them once they are old).
    let dir = cut(false);
    let source = Source::Store(Location::Jsonl(dir.path().to_owned()));
    let alone = run_verify(&source, &with_stored_checkpoints());
    let unattested = alone.findings().all(|f| ["unattested_chain", "unattested_tail"].contains(&f.kind.as_str()));
    assert!(unattested, "{:?}", kinds(&alone));
    assert!(alone.findings().all(|f| f.kind != "truncated"), "{:?}", kinds(&alone));
    let report = run_verify(&source, &with_checkpoints());
    assert_eq!(kinds(&report), vec![("truncated".to_owned(), checkpointed - 2)]);
}

#[test]
fn a_checkpoint_forged_into_a_store_fails_its_signature() {
    let dir = jsonl_copy_with_checkpoints();
    let file = jsonl_files(&dir.path().join("partition-0")).unwrap().pop().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    let stored = lines.iter().find(|l| is_checkpoint_line(l)).cloned().expect("a stored checkpoint");
    let mut forged: Value = serde_json::from_str(&stored).unwrap();
    forged["checkpoint"]["hash"] = "0".repeat(64).into();
    let seq = forged["checkpoint"]["seq"].as_u64().unwrap();
    lines.push(forged.to_string());
    write_lines(&file, &lines);

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &with_stored_checkpoints());
    assert_eq!(report.verdict, Verdict::Tampered);
    let found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.seq)).collect();
    assert_eq!(found, vec![("forged_checkpoint", seq)]);
}

#[test]
fn a_checkpoint_stored_long_after_its_event_is_checked_in_a_second_pass() {
    // A checkpoint of seq 10 of partition 0, signed over the original chain and stored at the end
    // of the partition, far behind its event (beyond a ring of 4 recent heads).
    let key = audit_schema::checkpoint::SigningKey::from_seed(&[11; 32]);
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("late.pub"), key.public().to_hex()).unwrap();
    // A key directory is trusted only through its keyring.
    std::fs::write(keys.path().join("keyring"), format!("{} late.pub\n", key.public().fingerprint())).unwrap();
    let store = |rewrite: bool| {
        let dir = jsonl_copy();
        let (_, lines) = first_file(dir.path());
        let tenth = event_of(&lines[9]);
        let integrity = &tenth["integrity"];
        assert_eq!(integrity["seq"], 10, "the first file starts the chain");
        let c = key.sign(
            integrity["chain"].as_str().unwrap(),
            10,
            integrity["hash"].as_str().unwrap(),
            "2026-11-26T12:00:00.000Z",
        );
        if rewrite {
            rewrite_partition_0(dir.path());
        }
        let last = jsonl_files(&dir.path().join("partition-0")).unwrap().pop().unwrap();
        let mut text = std::fs::read_to_string(&last).unwrap();
        text.push_str(&serde_json::json!({"partition": 0, "offset": 999_999, "checkpoint": c}).to_string());
        text.push('\n');
        std::fs::write(&last, text).unwrap();
        dir
    };
    // Only partition 0's chain: the others have no checkpoint of this key (`unattested_chain`).
    let request = |recent_heads| VerifyRequest {
        chain: Some("audit.raw/0".into()),
        public_keys: vec![keys.path().to_owned()],
        recent_heads,
        ..VerifyRequest::default()
    };
    for recent_heads in [Some(4), None] {
        let dir = store(false);
        let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &request(recent_heads));
        assert_eq!(report.verdict, Verdict::Intact, "{recent_heads:?}: {:?}", kinds(&report));
        assert_eq!(report.checkpoints, 1);
        let dir = store(true);
        let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &request(recent_heads));
        assert_eq!(kinds(&report), vec![("checkpoint_mismatch".to_owned(), 10)], "{recent_heads:?}");
    }
}

#[test]
fn two_signed_checkpoints_that_disagree_and_a_broken_stored_one_are_reported() {
    let dir = jsonl_copy_with_checkpoints();
    let file = jsonl_files(&dir.path().join("partition-0")).unwrap().pop().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    let stored: Value = serde_json::from_str(lines.iter().find(|l| is_checkpoint_line(l)).unwrap()).unwrap();
    let c: audit_schema::checkpoint::Checkpoint = serde_json::from_value(stored["checkpoint"].clone()).unwrap();
    // The processor's key (as if leaked) signing another hash for the same seq.
    let secret = std::fs::read_to_string(demo_dir().join("keys/checkpoint.key")).unwrap();
    let key = audit_schema::checkpoint::SigningKey::from_hex(&secret, "demo key").unwrap();
    let other = key.sign(&c.chain, c.seq, &"e".repeat(64), "2026-11-26T13:00:00.000Z");
    lines.push(serde_json::json!({"partition": 0, "offset": 999_998, "checkpoint": other}).to_string());
    lines.push(r#"{"partition":0,"offset":999999,"checkpoint":{"kind":"audit.checkpoint","seq":"x"}}"#.to_owned());
    write_lines(&file, &lines);

    let report = run_verify(&Source::Store(Location::Jsonl(dir.path().to_owned())), &with_stored_checkpoints());
    assert_eq!(report.verdict, Verdict::Tampered);
    let mut found: Vec<_> = report.findings().map(|f| (f.kind.as_str(), f.seq)).collect();
    found.sort();
    assert_eq!(found, vec![("conflicting_checkpoints", c.seq), ("forged_checkpoint", 0)]);
}
