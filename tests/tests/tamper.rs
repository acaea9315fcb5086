//! The tamper suite (issue 17): `auditctl verify`, the real binary, against stores the real
//! pipeline filled, changed the way someone with write access to the store would change them —
//! files edited byte by byte with `std::fs`, raw SQL, the MongoDB driver, a Kafka client of their
//! own and DeleteRecords — never through the project's writers. Every test asserts the exact
//! findings and the exit code; every store has an untouched control that must stay intact.
//!
//! The stores: `auditctl demo` (producer, processor, SQLite and JSONL sinks, signed checkpoints),
//! its JSONL files also compressed as the sink compresses a closed file, its events loaded into
//! PostgreSQL and MongoDB by their sinks, and a processed topic published by the processor's
//! pipeline (`audit_tests::sinks::Processed`).
//!
//! Classes covered so far: 4 (nothing verified is not intact: exit 4), 6 (every byte of a store is
//! read: files, lines, rows, records, gzip members) and 8 (a processed-topic chain whose start is
//! gone is partial: exit 5).

use std::io::Write as _;
use std::path::Path;

use audit_sink::stores::jsonl::{jsonl_files, jsonl_partitions};
use audit_tests::demo::copy_dir;
use audit_tests::tamper::{
    chain_of, demo_key, event_of, file_of, jsonl_copy, lines, nth_event, postgres_store, processed_topic, produce_raw,
    runtime, seq_of, sql, sqlite_copy, text, topic_key, verify, verify_text, write_lines, MongoStore,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// JSONL files.

/// A private copy with every file compressed as the sink compresses a closed file: one gzip
/// member, then the plain file removed.
fn gzip_copy() -> tempfile::TempDir {
    let dir = jsonl_copy();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&std::fs::read(&file).unwrap()).unwrap();
            std::fs::write(format!("{}.gz", file.display()), encoder.finish().unwrap()).unwrap();
            std::fs::remove_file(&file).unwrap();
        }
    }
    dir
}

/// `(chain, seq, eventId)` of an event line; `None` for a checkpoint line.
fn link_of(line: &str) -> Option<(String, u64, String)> {
    let e = event_of(line)?;
    Some((chain_of(&e).to_owned(), seq_of(&e), e["eventId"].as_str().unwrap().to_owned()))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn control_the_jsonl_stores_plain_and_compressed_stay_intact() {
    for dir in [jsonl_copy(), gzip_copy()] {
        verify(dir.path(), &[]).expect(0, &[]);
        verify(dir.path(), &["--public-key", &demo_key()]).expect(0, &[]);
    }
    // A compression under way (`.jsonl.gz.tmp` beside its plain file) is the sink at work.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    std::fs::write(format!("{}.gz.tmp", file.display()), &gzip(&std::fs::read(&file).unwrap())[..100]).unwrap();
    verify(dir.path(), &[]).expect(0, &[]);
}

#[test]
fn class4_jsonl_nothing_verified_is_not_intact() {
    // An empty directory, and one whose every file was deleted.
    let empty = tempfile::tempdir().unwrap();
    verify(empty.path(), &[]).expect(4, &[("no_events", 0)]);
    let dir = jsonl_copy();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            std::fs::remove_file(file).unwrap();
        }
    }
    verify(dir.path(), &[]).expect(4, &[("no_events", 0)]);
    verify(dir.path(), &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0), ("no_events", 0)]);
    let (code, out) = verify_text(dir.path(), &[]);
    assert_eq!(code, 4);
    assert!(out.contains("UNVERIFIED") && out.contains("nothing was verified"), "{out}");

    // A chain the store does not hold, and one whose file was deleted.
    let dir = jsonl_copy();
    let unknown = verify(dir.path(), &["--chain", "audit.raw/99"]);
    assert_eq!(unknown.expect(4, &[("unknown_chain", 0)]).one("unknown_chain").chain, "audit.raw/99");
    let file = file_of(dir.path(), 1);
    let (chain, _, _) = lines(&file).iter().find_map(|l| link_of(l)).unwrap();
    std::fs::remove_file(file).unwrap();
    verify(dir.path(), &["--chain", &chain]).expect(4, &[("unknown_chain", 0)]);

    // Every signed checkpoint line removed: the chains alone verify, but with the key nothing
    // is attested.
    let dir = jsonl_copy();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            let events: Vec<String> = lines(&file).into_iter().filter(|l| event_of(l).is_some()).collect();
            write_lines(&file, &events);
        }
    }
    verify(dir.path(), &[]).expect(0, &[]);
    verify(dir.path(), &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    let (code, out) = verify_text(dir.path(), &["--public-key", &demo_key()]);
    assert_eq!(code, 4);
    assert!(out.contains("NO_CHECKPOINTS") && out.contains("no chain was checked against the given key"), "{out}");
}

#[test]
fn class6_jsonl_files_the_sink_never_writes_are_reported_not_ignored() {
    // A copy of partition 0's file beside it under another name, edited (other readers of
    // `*.jsonl*` would take it in).
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    let edited = std::fs::read_to_string(&file).unwrap().replacen("SUCCESS", "FAILURE", 1);
    std::fs::write(format!("{}.bak", file.display()), edited).unwrap();
    let out = verify(dir.path(), &[]);
    let found = out.expect(2, &[("unread_file", 0)]).one("unread_file");
    assert!(found.location.as_deref().is_some_and(|l| l.ends_with(".jsonl.bak")), "{found:?}");
    let (code, report) = verify_text(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        report.contains("UNREAD_FILE") && report.contains("not read, so what it holds is not verified"),
        "{report}"
    );

    // A partition directory spelled another way (read as partition 0 before), holding a copy.
    let dir = jsonl_copy();
    copy_dir(&dir.path().join("partition-0"), &dir.path().join("partition-00"));
    let out = verify(dir.path(), &[]);
    let found = out.expect(2, &[("unread_file", 0)]).one("unread_file");
    assert!(found.location.as_deref().is_some_and(|l| l.ends_with("partition-00")), "{found:?}");

    // A sink file name that cannot be opened (a dangling link), a stray file at the top.
    let dir = jsonl_copy();
    std::os::unix::fs::symlink("/nonexistent/audit", dir.path().join("partition-0/00000000000000099999.jsonl"))
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "nothing to see").unwrap();
    verify(dir.path(), &[]).expect(2, &[("unread_file", 0), ("unread_file", 0)]);
    // Whatever chain is asked for: a file does not say which chain it holds.
    verify(dir.path(), &["--chain", "audit.raw/1"]).expect(2, &[("unread_file", 0), ("unread_file", 0)]);

    // A compression's leftover without its plain file.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 2);
    std::fs::write(format!("{}.tmp", gz.display()), gzip(b"{}\n")).unwrap();
    verify(dir.path(), &[]).expect(2, &[("unread_file", 0)]);
}

#[test]
fn class6_jsonl_lines_verify_cannot_read_are_reported_not_skipped() {
    // An empty line.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    let mut all = lines(&file);
    all.insert(3, String::new());
    write_lines(&file, &all);
    let out = verify(dir.path(), &[]);
    let found = out.expect(1, &[("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:4", file.display()).as_str()));

    // An event line overwritten with bytes that are not JSON: its seq is missing, and the line
    // is named.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 1);
    let mut all = lines(&file);
    let at = nth_event(&all, 5);
    let (_, seq, _) = link_of(&all[at]).unwrap();
    all[at] = "\u{0}\u{1}garbage".into();
    write_lines(&file, &all);
    let out = verify(dir.path(), &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", file.display(), at + 1).as_str()));

    // An event without its hash: named by chain, seq and event id.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 2);
    let mut all = lines(&file);
    let at = nth_event(&all, 7);
    let (chain, seq, id) = link_of(&all[at]).unwrap();
    let mut wrapper: Value = serde_json::from_str(&all[at]).unwrap();
    wrapper["event"]["integrity"].as_object_mut().unwrap().remove("hash");
    all[at] = wrapper.to_string();
    write_lines(&file, &all);
    let out = verify(dir.path(), &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", seq)]).one("unreadable");
    assert_eq!((found.chain.as_str(), found.event_id.as_deref()), (chain.as_str(), Some(id.as_str())));

    // A JSON line that is neither an event nor a checkpoint.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 3);
    let mut all = lines(&file);
    all.insert(10, r#"{"partition":3,"offset":999999,"note":"kept out of verify"}"#.into());
    write_lines(&file, &all);
    verify(dir.path(), &[]).expect(1, &[("unreadable", 0)]);
}

#[test]
fn class6_a_torn_line_is_incomplete_only_at_the_end_of_the_newest_file() {
    // The newest file's last line cut short, as a crash mid-write leaves it.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let out = verify(dir.path(), &[]);
    let found = out.expect(2, &[("torn_line", 0)]).one("torn_line");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", file.display(), lines(&file).len()).as_str()));

    // The same cut at the end of an older file (the sink never appends to one): tampered.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 1);
    let all = lines(&file);
    let last = nth_event(&all, 30);
    let split = last + 1;
    let (_, seq, _) = link_of(&all[last]).unwrap();
    let offset = serde_json::from_str::<Value>(&all[split]).unwrap()["offset"].as_i64().unwrap();
    write_lines(&file.with_file_name(format!("{offset:020}.jsonl")), &all[split..]);
    let older: String = all[..split].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, &older.as_bytes()[..older.len() - 10]).unwrap();
    verify(dir.path(), &[]).expect(1, &[("missing", seq), ("unreadable", 0)]);
}

#[test]
fn class6_every_gzip_member_and_trailing_byte_is_read_or_reported() {
    // The same lines in two members: all read, the second member reported.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 0);
    let plain = flate2_decode(&gz);
    let half = plain.len() / 2 + plain[plain.len() / 2..].iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut two = gzip(&plain[..half]);
    let second_at = two.len();
    two.extend(gzip(&plain[half..]));
    std::fs::write(&gz, &two).unwrap();
    let out = verify(dir.path(), &[]);
    let found = out.expect(1, &[("extra_gzip_member", 0)]).one("extra_gzip_member");
    assert_eq!(found.location.as_deref(), Some(text(&gz).as_str()));
    verify(dir.path(), &["--public-key", &demo_key()]).expect(1, &[("extra_gzip_member", 0)]);
    let (_, report) = verify_text(dir.path(), &[]);
    assert!(report.contains(&format!("the second from byte {second_at}")), "{report}");

    // A member appended with a line of its own: read (and reported) like the first member's.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 1);
    let count = flate2_decode(&gz).iter().filter(|b| **b == b'\n').count();
    let mut bytes = std::fs::read(&gz).unwrap();
    bytes.extend(gzip(b"{\"partition\":1,\"offset\":999999,\"note\":\"appended\"}\n"));
    std::fs::write(&gz, bytes).unwrap();
    let out = verify(dir.path(), &[]);
    let found = out.expect(1, &[("extra_gzip_member", 0), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", gz.display(), count + 1).as_str()));

    // Bytes after the gzip stream: text, and a lone byte that could start a member.
    for tail in [&b"hidden after the stream\n"[..], &[0x1f][..]] {
        let dir = gzip_copy();
        let gz = file_of(dir.path(), 2);
        let mut bytes = std::fs::read(&gz).unwrap();
        bytes.extend_from_slice(tail);
        std::fs::write(&gz, bytes).unwrap();
        verify(dir.path(), &[]).expect(1, &[("trailing_bytes", 0)]);
    }

    // A compressed file cut short: what follows the cut is not read.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 3);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    verify(dir.path(), &[]).expect(1, &[("damaged_file", 0)]);
}

fn flate2_decode(gz: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap()), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// SQLite.

/// `(event_id, chain, seq)` of the 12th event of chain `audit.raw/1` in a SQL store.
const VICTIM_SQL: &str = "SELECT event_id, chain, CAST(seq AS TEXT) FROM audit_events WHERE chain = 'audit.raw/1' ORDER BY seq LIMIT 1 OFFSET 11";

#[test]
fn control_the_sqlite_store_stays_intact() {
    let (_dir, source) = sqlite_copy();
    verify(&source, &[]).expect(0, &[]);
    verify(&source, &["--public-key", &demo_key()]).expect(0, &[]);
}

#[test]
fn class4_sqlite_nothing_verified_is_not_intact() {
    let (_dir, source) = sqlite_copy();
    sql(&source, &["DELETE FROM audit_events", "DELETE FROM audit_checkpoints"]);
    verify(&source, &[]).expect(4, &[("no_events", 0)]);
    verify(&source, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0), ("no_events", 0)]);

    let (_dir, source) = sqlite_copy();
    verify(&source, &["--chain", "audit.raw/99"]).expect(4, &[("unknown_chain", 0)]);
    sql(
        &source,
        &[
            "DELETE FROM audit_events WHERE chain = 'audit.raw/1'",
            "DELETE FROM audit_checkpoints WHERE chain = 'audit.raw/1'",
        ],
    );
    verify(&source, &["--chain", "audit.raw/1"]).expect(4, &[("unknown_chain", 0)]);

    for attack in ["DELETE FROM audit_checkpoints", "DROP TABLE audit_checkpoints"] {
        let (_dir, source) = sqlite_copy();
        sql(&source, &[attack]);
        verify(&source, &[]).expect(0, &[]);
        verify(&source, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    }
}

#[test]
fn class6_sqlite_rows_verify_cannot_decode_are_reported() {
    // The event text cut short, or stored as a blob: the row's content is reported, its link
    // columns keep its place.
    for attack in [
        "UPDATE audit_events SET event = substr(event, 1, 200) WHERE event_id = ?",
        "UPDATE audit_events SET event = CAST(event AS BLOB) WHERE event_id = ?",
        "UPDATE audit_events SET event = json_remove(event, '$.integrity') WHERE event_id = ?",
    ] {
        let (_dir, source) = sqlite_copy();
        let victim = sql(&source, &[VICTIM_SQL]);
        sql(&source, &[&attack.replace('?', &format!("'{}'", victim[0]))]);
        let seq: u64 = victim[2].parse().unwrap();
        let out = verify(&source, &[]);
        let found = out.expect(1, &[("unreadable", seq)]).one("unreadable");
        assert_eq!((found.chain.as_str(), found.event_id.as_deref()), (victim[1].as_str(), Some(victim[0].as_str())));
        assert!(found.location.as_deref().unwrap().starts_with("audit_events row"), "{found:?}");
    }

    // A link column of the wrong type: the row is reported, its seq is missing from the chain.
    let (_dir, source) = sqlite_copy();
    let victim = sql(&source, &[VICTIM_SQL]);
    sql(&source, &[&format!("UPDATE audit_events SET seq = 'seven' WHERE event_id = '{}'", victim[0])]);
    let seq: u64 = victim[2].parse().unwrap();
    let out = verify(&source, &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.event_id.as_deref(), Some(victim[0].as_str()));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL and MongoDB, loaded by their sinks with the demo's events and checkpoints.

#[test]
fn class4_postgres_nothing_verified_is_not_intact() {
    let url = postgres_store();
    verify(&url, &[]).expect(0, &[]);
    verify(&url, &["--public-key", &demo_key()]).expect(0, &[]);
    verify(&url, &["--chain", "audit.raw/99"]).expect(4, &[("unknown_chain", 0)]);
    sql(&url, &["TRUNCATE audit_checkpoints"]);
    verify(&url, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    sql(&url, &["DELETE FROM audit_events"]);
    verify(&url, &[]).expect(4, &[("no_events", 0)]);

    let url = postgres_store();
    sql(&url, &["DROP TABLE audit_checkpoints"]);
    verify(&url, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
}

#[test]
fn class6_postgres_rows_verify_cannot_decode_are_reported() {
    let url = postgres_store();
    let victim = sql(&url, &[VICTIM_SQL]);
    let seq: u64 = victim[2].parse().unwrap();
    // The event is text: the text cut short (not JSON: a cast in the reader's query would fail the
    // whole query), emptied, NULL, or JSON without its chain fields.
    let attacks: [&[&str]; 5] = [
        &["UPDATE audit_events SET event = substr(event, 1, 200) WHERE event_id = $1"],
        &["UPDATE audit_events SET event = '' WHERE event_id = $1"],
        &[
            "ALTER TABLE audit_events ALTER COLUMN event DROP NOT NULL",
            "UPDATE audit_events SET event = NULL WHERE event_id = $1",
        ],
        &["UPDATE audit_events SET event = (event::jsonb - 'integrity')::text, event_form = 'jsonb' WHERE event_id = $1"],
        &[r#"UPDATE audit_events SET event = jsonb_set(event::jsonb, '{integrity,seq}', '"seven"')::text WHERE event_id = $1"#],
    ];
    for attack in attacks {
        let url = postgres_store();
        let statements: Vec<String> = attack.iter().map(|a| a.replace("$1", &format!("'{}'", victim[0]))).collect();
        sql(&url, &statements);
        let out = verify(&url, &[]);
        let found = out.expect(1, &[("unreadable", seq)]).one("unreadable");
        assert_eq!(found.event_id.as_deref(), Some(victim[0].as_str()));
        assert!(found.location.as_deref().unwrap().starts_with("audit_events row"), "{found:?}");
    }
    // A source offset that is not a number used to fail the whole query (exit 3): now the event
    // is read, and its content no longer hashes (rewritten as jsonb text, its row saying so).
    sql(
        &url,
        &[&format!(
            r#"UPDATE audit_events SET event = jsonb_set(event::jsonb, '{{integrity,source,offset}}', '"x"')::text,
               event_form = 'jsonb' WHERE event_id = '{}'"#,
            victim[0]
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", seq)]);
    // The same in the canonical text itself.
    let url = postgres_store();
    sql(
        &url,
        &[&format!(
            r#"UPDATE audit_events SET event = regexp_replace(event, '"source":[{{]"offset":[0-9]+', '"source":{{"offset":"x"')
               WHERE event_id = '{}'"#,
            victim[0]
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", seq)]);
}

#[test]
fn class4_mongodb_nothing_verified_is_not_intact() {
    use mongodb::bson::doc;
    let store = MongoStore::new();
    verify(&store.source, &[]).expect(0, &[]);
    verify(&store.source, &["--public-key", &demo_key()]).expect(0, &[]);
    verify(&store.source, &["--chain", "audit.raw/99"]).expect(4, &[("unknown_chain", 0)]);
    store.with("audit_events_checkpoints", async |c| c.drop().await.unwrap());
    verify(&store.source, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    store.with("audit_events", async |c| c.delete_many(doc! {}).await.unwrap());
    verify(&store.source, &[]).expect(4, &[("no_events", 0)]);
}

#[test]
fn class6_mongodb_documents_verify_cannot_decode_are_reported() {
    use mongodb::bson::doc;
    for (update, seq_reported) in
        [(doc! {"$unset": {"integrity.hash": ""}}, true), (doc! {"$set": {"integrity.seq": "twelve"}}, false)]
    {
        let store = MongoStore::new();
        let (id, seq) = (store.victim().get_str("eventId").unwrap().to_owned(), 12);
        store.with("audit_events", async |c| c.update_one(doc! {"eventId": &id}, update).await.unwrap());
        let out = verify(&store.source, &[]);
        let at = if seq_reported { seq } else { 0 };
        let found = out.expect(1, &[("missing", seq), ("unreadable", at)]).one("unreadable");
        assert_eq!((found.chain.as_str(), found.event_id.as_deref()), ("audit.raw/1", Some(id.as_str())));
        assert!(found.location.as_deref().unwrap().starts_with("audit_events document"), "{found:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The processed topic.

#[test]
fn class4_processed_topic_nothing_verified_is_not_intact() {
    let (source, _topic, _keys) = processed_topic(2, 0, false);
    verify(&source, &[]).expect(4, &[("no_events", 0)]);

    let (source, topic, keys) = processed_topic(3, 60, false);
    verify(&source, &[]).expect(0, &[]);
    verify(&source, &["--public-key", &topic_key(&keys)]).expect(4, &[("no_checkpoints", 0)]);
    verify(&source, &["--chain", "audit.raw/7"]).expect(4, &[("unknown_chain", 0)]);
    // Every record deleted (what retention does to a topic nobody wrote to for long enough).
    for (p, events) in &topic.published {
        let low = runtime().block_on(audit_tests::kafka::delete_records(
            &topic.bootstrap,
            &topic.topic,
            *p,
            events.len() as i64,
        ));
        assert_eq!(low, events.len() as i64);
    }
    verify(&source, &[]).expect(4, &[("no_events", 0)]);
}

#[test]
fn class6_processed_topic_records_verify_cannot_decode_are_reported() {
    let (source, topic, keys) = processed_topic(2, 40, true);
    verify(&source, &["--public-key", &topic_key(&keys)]).expect(0, &[]);
    produce_raw(&topic, 1, None);
    let out = verify(&source, &[]);
    let found = out.expect(1, &[("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}/1 offset 21", topic.topic).as_str()));
    produce_raw(&topic, 0, Some(b"not an event"));
    verify(&source, &[]).expect(1, &[("unreadable", 0), ("unreadable", 0)]);
}

#[test]
fn class8_a_topic_chain_whose_start_is_gone_is_partial_not_intact() {
    let (source, topic, keys) = processed_topic(3, 150, true);
    let key = topic_key(&keys);
    verify(&source, &["--public-key", &key]).expect(0, &[]);
    let delete = |p: i32, before: i64| {
        let low = runtime().block_on(audit_tests::kafka::delete_records(&topic.bootstrap, &topic.topic, p, before));
        assert_eq!(low, before);
    };
    let id = |p: i32, i: usize| topic.published[&p][i]["eventId"].as_str().unwrap().to_owned();

    // The oldest ten records of partition 1 gone.
    delete(1, 10);
    let out = verify(&source, &[]);
    let found = out.expect(5, &[("partial", 11)]).one("partial");
    assert_eq!((found.chain.as_str(), found.event_id.clone()), ("audit.raw/1", Some(id(1, 10))));
    let (code, report) = verify_text(&source, &[]);
    assert_eq!(code, 5);
    assert!(report.contains("PARTIAL") && report.contains("verified from seq 11 on only"), "{report}");

    // Only the first record of partition 0 gone, and half of partition 2: each chain from its
    // first seq, the signed heads still checked.
    delete(0, 1);
    delete(2, 25);
    verify(&source, &["--public-key", &key]).expect(5, &[("partial", 2), ("partial", 11), ("partial", 26)]);
    let out = verify(&source, &["--chain", "audit.raw/2", "--public-key", &key]);
    assert_eq!(out.expect(5, &[("partial", 26)]).one("partial").event_id, Some(id(2, 25)));

    // Partial never hides a change: a record that is no event makes it tampered.
    produce_raw(&topic, 2, Some(b"{}"));
    verify(&source, &[]).expect(1, &[("partial", 2), ("partial", 11), ("partial", 26), ("unreadable", 0)]);
}
