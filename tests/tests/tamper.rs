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
use std::path::{Path, PathBuf};
use std::process::Command;

use audit_sink::sink::Sink as _;
use audit_tests::demo::{copy_dir, demo_store, jsonl_records};
use audit_tests::sinks::{PostgresTarget, Processed};
use auditctl::source::{jsonl_files, jsonl_partitions};
use serde_json::Value;

const AUDITCTL: &str = env!("CARGO_BIN_EXE_audit-test-auditctl");
const EVENTS: u64 = 300;

/// The demo run the file stores are copied from.
fn demo() -> PathBuf {
    demo_store(Path::new(AUDITCTL), EVENTS)
}

/// The public key the demo's processor signed its checkpoints with.
fn demo_key() -> String {
    demo().join("keys/checkpoint.pub").display().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// One finding as `verify --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    kind: String,
    seq: u64,
    chain: String,
    event_id: Option<String>,
    location: Option<String>,
}

/// What `auditctl verify --json` said, and its exit code.
#[derive(Debug)]
struct Outcome {
    code: i32,
    /// Every finding, chains' and store's, sorted by kind and seq.
    findings: Vec<Found>,
}

impl Outcome {
    /// Asserts the exit code and exactly these `(kind, seq)` findings.
    fn expect(&self, code: i32, kinds: &[(&str, u64)]) -> &Outcome {
        let mut want: Vec<(&str, u64)> = kinds.to_vec();
        want.sort();
        let got: Vec<(&str, u64)> = self.findings.iter().map(|f| (f.kind.as_str(), f.seq)).collect();
        assert_eq!(got, want, "{:#?}", self.findings);
        assert_eq!(self.code, code, "exit code: {:#?}", self.findings);
        self
    }

    /// The only finding of `kind`.
    fn one(&self, kind: &str) -> &Found {
        let mut of = self.findings.iter().filter(|f| f.kind == kind);
        let found = of.next().unwrap_or_else(|| panic!("no {kind}: {:#?}", self.findings));
        assert!(of.next().is_none(), "more than one {kind}: {:#?}", self.findings);
        found
    }
}

/// Runs `auditctl verify --json --source SOURCE ARGS…`.
fn verify(source: &str, args: &[&str]) -> Outcome {
    let out = Command::new(AUDITCTL).args(["verify", "--json", "--source", source]).args(args).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("verify printed no report ({e}): exit {code}: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["exitCode"], code, "the report carries the exit code");
    let chains = report["chains"].as_array().unwrap().iter().flat_map(|c| c["findings"].as_array().unwrap());
    let mut findings: Vec<Found> = chains
        .chain(report["storeFindings"].as_array().unwrap())
        .map(|f| Found {
            kind: f["kind"].as_str().unwrap().to_owned(),
            seq: f["seq"].as_u64().unwrap(),
            chain: f["chain"].as_str().unwrap().to_owned(),
            event_id: f["eventId"].as_str().map(str::to_owned),
            location: f["location"].as_str().map(str::to_owned),
        })
        .collect();
    findings.sort();
    Outcome { code, findings }
}

/// Runs `auditctl verify` for its text report: the exit code and standard output.
fn verify_text(source: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(AUDITCTL).args(["verify", "--source", source]).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// JSONL files.

/// A private copy of the demo's JSONL directory, as the sink wrote it (signed checkpoint lines
/// included).
fn jsonl_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo().join("jsonl"), dir.path());
    dir
}

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

/// The (first) file of partition `p`.
fn file_of(dir: &Path, p: i32) -> PathBuf {
    jsonl_files(&dir.join(format!("partition-{p}"))).unwrap().remove(0)
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// `(chain, seq, eventId)` of an event line; `None` for a checkpoint line.
fn event_of(line: &str) -> Option<(String, u64, String)> {
    let wrapper: Value = serde_json::from_str(line).unwrap();
    let e = wrapper.get("event")?;
    Some((
        e["integrity"]["chain"].as_str().unwrap().to_owned(),
        e["integrity"]["seq"].as_u64().unwrap(),
        e["eventId"].as_str().unwrap().to_owned(),
    ))
}

/// The index of the `n`th event line of `lines`.
fn nth_event(lines: &[String], n: usize) -> usize {
    (0..lines.len()).filter(|i| event_of(&lines[*i]).is_some()).nth(n).expect("enough events")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn control_the_jsonl_stores_plain_and_compressed_stay_intact() {
    for dir in [jsonl_copy(), gzip_copy()] {
        verify(&text(dir.path()), &[]).expect(0, &[]);
        verify(&text(dir.path()), &["--public-key", &demo_key()]).expect(0, &[]);
    }
    // A compression under way (`.jsonl.gz.tmp` beside its plain file) is the sink at work.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    std::fs::write(format!("{}.gz.tmp", file.display()), &gzip(&std::fs::read(&file).unwrap())[..100]).unwrap();
    verify(&text(dir.path()), &[]).expect(0, &[]);
}

#[test]
fn class4_jsonl_nothing_verified_is_not_intact() {
    // An empty directory, and one whose every file was deleted.
    let empty = tempfile::tempdir().unwrap();
    verify(&text(empty.path()), &[]).expect(4, &[("no_events", 0)]);
    let dir = jsonl_copy();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            std::fs::remove_file(file).unwrap();
        }
    }
    verify(&text(dir.path()), &[]).expect(4, &[("no_events", 0)]);
    verify(&text(dir.path()), &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0), ("no_events", 0)]);
    let (code, out) = verify_text(&text(dir.path()), &[]);
    assert_eq!(code, 4);
    assert!(out.contains("UNVERIFIED") && out.contains("nothing was verified"), "{out}");

    // A chain the store does not hold, and one whose file was deleted.
    let dir = jsonl_copy();
    let unknown = verify(&text(dir.path()), &["--chain", "audit.raw/99"]);
    assert_eq!(unknown.expect(4, &[("unknown_chain", 0)]).one("unknown_chain").chain, "audit.raw/99");
    let file = file_of(dir.path(), 1);
    let (chain, _, _) = lines(&file).iter().find_map(|l| event_of(l)).unwrap();
    std::fs::remove_file(file).unwrap();
    verify(&text(dir.path()), &["--chain", &chain]).expect(4, &[("unknown_chain", 0)]);

    // Every signed checkpoint line removed: the chains alone verify, but with the key nothing
    // is attested.
    let dir = jsonl_copy();
    for (_, partition) in jsonl_partitions(dir.path()).unwrap() {
        for file in jsonl_files(&partition).unwrap() {
            let events: Vec<String> = lines(&file).into_iter().filter(|l| event_of(l).is_some()).collect();
            write_lines(&file, &events);
        }
    }
    verify(&text(dir.path()), &[]).expect(0, &[]);
    verify(&text(dir.path()), &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    let (code, out) = verify_text(&text(dir.path()), &["--public-key", &demo_key()]);
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
    let out = verify(&text(dir.path()), &[]);
    assert!(out
        .expect(2, &[("unread_file", 0)])
        .one("unread_file")
        .location
        .as_deref()
        .unwrap()
        .ends_with(".jsonl.bak"));
    let (code, report) = verify_text(&text(dir.path()), &[]);
    assert_eq!(code, 2);
    assert!(
        report.contains("UNREAD_FILE") && report.contains("not read, so what it holds is not verified"),
        "{report}"
    );

    // A partition directory spelled another way (read as partition 0 before), holding a copy.
    let dir = jsonl_copy();
    copy_dir(&dir.path().join("partition-0"), &dir.path().join("partition-00"));
    let out = verify(&text(dir.path()), &[]);
    assert!(out
        .expect(2, &[("unread_file", 0)])
        .one("unread_file")
        .location
        .as_deref()
        .unwrap()
        .ends_with("partition-00"));

    // A sink file name that cannot be opened (a dangling link), a stray file at the top.
    let dir = jsonl_copy();
    std::os::unix::fs::symlink("/nonexistent/audit", dir.path().join("partition-0/00000000000000099999.jsonl"))
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "nothing to see").unwrap();
    verify(&text(dir.path()), &[]).expect(2, &[("unread_file", 0), ("unread_file", 0)]);
    // Whatever chain is asked for: a file does not say which chain it holds.
    verify(&text(dir.path()), &["--chain", "audit.raw/1"]).expect(2, &[("unread_file", 0), ("unread_file", 0)]);

    // A compression's leftover without its plain file.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 2);
    std::fs::write(format!("{}.tmp", gz.display()), gzip(b"{}\n")).unwrap();
    verify(&text(dir.path()), &[]).expect(2, &[("unread_file", 0)]);
}

#[test]
fn class6_jsonl_lines_verify_cannot_read_are_reported_not_skipped() {
    // An empty line.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    let mut all = lines(&file);
    all.insert(3, String::new());
    write_lines(&file, &all);
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(1, &[("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:4", file.display()).as_str()));

    // An event line overwritten with bytes that are not JSON: its seq is missing, and the line
    // is named.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 1);
    let mut all = lines(&file);
    let at = nth_event(&all, 5);
    let (_, seq, _) = event_of(&all[at]).unwrap();
    all[at] = "\u{0}\u{1}garbage".into();
    write_lines(&file, &all);
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", file.display(), at + 1).as_str()));

    // An event without its hash: named by chain, seq and event id.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 2);
    let mut all = lines(&file);
    let at = nth_event(&all, 7);
    let (chain, seq, id) = event_of(&all[at]).unwrap();
    let mut wrapper: Value = serde_json::from_str(&all[at]).unwrap();
    wrapper["event"]["integrity"].as_object_mut().unwrap().remove("hash");
    all[at] = wrapper.to_string();
    write_lines(&file, &all);
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", seq)]).one("unreadable");
    assert_eq!((found.chain.as_str(), found.event_id.as_deref()), (chain.as_str(), Some(id.as_str())));

    // A JSON line that is neither an event nor a checkpoint.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 3);
    let mut all = lines(&file);
    all.insert(10, r#"{"partition":3,"offset":999999,"note":"kept out of verify"}"#.into());
    write_lines(&file, &all);
    verify(&text(dir.path()), &[]).expect(1, &[("unreadable", 0)]);
}

#[test]
fn class6_a_torn_line_is_incomplete_only_at_the_end_of_the_newest_file() {
    // The newest file's last line cut short, as a crash mid-write leaves it.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 0);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(2, &[("torn_line", 0)]).one("torn_line");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", file.display(), lines(&file).len()).as_str()));

    // The same cut at the end of an older file (the sink never appends to one): tampered.
    let dir = jsonl_copy();
    let file = file_of(dir.path(), 1);
    let all = lines(&file);
    let last = nth_event(&all, 30);
    let split = last + 1;
    let (_, seq, _) = event_of(&all[last]).unwrap();
    let offset = serde_json::from_str::<Value>(&all[split]).unwrap()["offset"].as_i64().unwrap();
    write_lines(&file.with_file_name(format!("{offset:020}.jsonl")), &all[split..]);
    let older: String = all[..split].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, &older.as_bytes()[..older.len() - 10]).unwrap();
    verify(&text(dir.path()), &[]).expect(1, &[("missing", seq), ("unreadable", 0)]);
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
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(1, &[("extra_gzip_member", 0)]).one("extra_gzip_member");
    assert_eq!(found.location.as_deref(), Some(text(&gz).as_str()));
    verify(&text(dir.path()), &["--public-key", &demo_key()]).expect(1, &[("extra_gzip_member", 0)]);
    let (_, report) = verify_text(&text(dir.path()), &[]);
    assert!(report.contains(&format!("the second from byte {second_at}")), "{report}");

    // A member appended with a line of its own: read (and reported) like the first member's.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 1);
    let count = flate2_decode(&gz).iter().filter(|b| **b == b'\n').count();
    let mut bytes = std::fs::read(&gz).unwrap();
    bytes.extend(gzip(b"{\"partition\":1,\"offset\":999999,\"note\":\"appended\"}\n"));
    std::fs::write(&gz, bytes).unwrap();
    let out = verify(&text(dir.path()), &[]);
    let found = out.expect(1, &[("extra_gzip_member", 0), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.location.as_deref(), Some(format!("{}:{}", gz.display(), count + 1).as_str()));

    // Bytes after the gzip stream: text, and a lone byte that could start a member.
    for tail in [&b"hidden after the stream\n"[..], &[0x1f][..]] {
        let dir = gzip_copy();
        let gz = file_of(dir.path(), 2);
        let mut bytes = std::fs::read(&gz).unwrap();
        bytes.extend_from_slice(tail);
        std::fs::write(&gz, bytes).unwrap();
        verify(&text(dir.path()), &[]).expect(1, &[("trailing_bytes", 0)]);
    }

    // A compressed file cut short: what follows the cut is not read.
    let dir = gzip_copy();
    let gz = file_of(dir.path(), 3);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    verify(&text(dir.path()), &[]).expect(1, &[("damaged_file", 0)]);
}

fn flate2_decode(gz: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap()), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// SQLite.

/// A private copy of the demo's SQLite database.
fn sqlite_copy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit.db") {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    let source = format!("sqlite:{}", dir.path().join("audit.db").display());
    (dir, source)
}

/// Runs raw SQL on the SQLite database of `source`, the first statement's first row (if it
/// returns one) as text columns.
fn sqlite(source: &str, statements: &[&str]) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let path = source.strip_prefix("sqlite:").unwrap().to_owned();
    let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    runtime().block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{path}")).await.unwrap();
        let mut first = Vec::new();
        for (i, sql) in statements.into_iter().enumerate() {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap();
            if i == 0 {
                if let Some(row) = rows.first() {
                    first = (0..row.len()).map(|c| row.get::<String, _>(c)).collect();
                }
            }
        }
        first
    })
}

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
    sqlite(&source, &["DELETE FROM audit_events", "DELETE FROM audit_checkpoints"]);
    verify(&source, &[]).expect(4, &[("no_events", 0)]);
    verify(&source, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0), ("no_events", 0)]);

    let (_dir, source) = sqlite_copy();
    verify(&source, &["--chain", "audit.raw/99"]).expect(4, &[("unknown_chain", 0)]);
    sqlite(
        &source,
        &[
            "DELETE FROM audit_events WHERE chain = 'audit.raw/1'",
            "DELETE FROM audit_checkpoints WHERE chain = 'audit.raw/1'",
        ],
    );
    verify(&source, &["--chain", "audit.raw/1"]).expect(4, &[("unknown_chain", 0)]);

    for attack in ["DELETE FROM audit_checkpoints", "DROP TABLE audit_checkpoints"] {
        let (_dir, source) = sqlite_copy();
        sqlite(&source, &[attack]);
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
        let victim = sqlite(&source, &[VICTIM_SQL]);
        sqlite(&source, &[&attack.replace('?', &format!("'{}'", victim[0]))]);
        let seq: u64 = victim[2].parse().unwrap();
        let out = verify(&source, &[]);
        let found = out.expect(1, &[("unreadable", seq)]).one("unreadable");
        assert_eq!((found.chain.as_str(), found.event_id.as_deref()), (victim[1].as_str(), Some(victim[0].as_str())));
        assert!(found.location.as_deref().unwrap().starts_with("audit_events row"), "{found:?}");
    }

    // A link column of the wrong type: the row is reported, its seq is missing from the chain.
    let (_dir, source) = sqlite_copy();
    let victim = sqlite(&source, &[VICTIM_SQL]);
    sqlite(&source, &[&format!("UPDATE audit_events SET seq = 'seven' WHERE event_id = '{}'", victim[0])]);
    let seq: u64 = victim[2].parse().unwrap();
    let out = verify(&source, &[]);
    let found = out.expect(1, &[("missing", seq), ("unreadable", 0)]).one("unreadable");
    assert_eq!(found.event_id.as_deref(), Some(victim[0].as_str()));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL and MongoDB, loaded by their sinks with the demo's events and checkpoints.

/// A fresh PostgreSQL database holding the demo's events and checkpoints; its URL.
fn postgres_store() -> String {
    let (events, checkpoints) = jsonl_records(&demo().join("jsonl"));
    runtime().block_on(async move {
        let db = PostgresTarget::new(None).await;
        let sink = audit_sink::postgres::PostgresSink::connect(db.url(), 2, true).await.unwrap();
        sink.write(&events).await.unwrap();
        sink.write_checkpoints(&checkpoints).await.unwrap();
        db.url().to_owned()
    })
}

/// Runs raw SQL on PostgreSQL; the first statement's first row as text columns.
fn postgres(url: &str, statements: &[&str]) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let url = url.to_owned();
    let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    runtime().block_on(async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut first = Vec::new();
        for (i, sql) in statements.into_iter().enumerate() {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap();
            if i == 0 {
                if let Some(row) = rows.first() {
                    first = (0..row.len()).map(|c| row.get::<String, _>(c)).collect();
                }
            }
        }
        first
    })
}

#[test]
fn class4_postgres_nothing_verified_is_not_intact() {
    let url = postgres_store();
    verify(&url, &[]).expect(0, &[]);
    verify(&url, &["--public-key", &demo_key()]).expect(0, &[]);
    verify(&url, &["--chain", "audit.raw/99"]).expect(4, &[("unknown_chain", 0)]);
    postgres(&url, &["TRUNCATE audit_checkpoints"]);
    verify(&url, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
    postgres(&url, &["DELETE FROM audit_events"]);
    verify(&url, &[]).expect(4, &[("no_events", 0)]);

    let url = postgres_store();
    postgres(&url, &["DROP TABLE audit_checkpoints"]);
    verify(&url, &["--public-key", &demo_key()]).expect(4, &[("no_checkpoints", 0)]);
}

#[test]
fn class6_postgres_rows_verify_cannot_decode_are_reported() {
    let url = postgres_store();
    let victim = postgres(&url, &[VICTIM_SQL]);
    let seq: u64 = victim[2].parse().unwrap();
    for attack in [
        "UPDATE audit_events SET event = event - 'integrity' WHERE event_id = $1",
        r#"UPDATE audit_events SET event = jsonb_set(event, '{integrity,seq}', '"seven"') WHERE event_id = $1"#,
    ] {
        let url = postgres_store();
        postgres(&url, &[&attack.replace("$1", &format!("'{}'", victim[0]))]);
        let out = verify(&url, &[]);
        let found = out.expect(1, &[("unreadable", seq)]).one("unreadable");
        assert_eq!(found.event_id.as_deref(), Some(victim[0].as_str()));
    }
    // A source offset that is not a number used to fail the whole query (exit 3): now the event
    // is read, and its content no longer hashes.
    postgres(
        &url,
        &[&format!(
            r#"UPDATE audit_events SET event = jsonb_set(event, '{{integrity,source,offset}}', '"x"') WHERE event_id = '{}'"#,
            victim[0]
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", seq)]);
}

/// A fresh MongoDB database holding the demo's events and checkpoints, and verify's source for it.
struct MongoStore {
    uri: String,
    database: String,
    source: String,
}

impl MongoStore {
    fn new() -> MongoStore {
        let (events, checkpoints) = jsonl_records(&demo().join("jsonl"));
        let uri = audit_tests::mongodb_uri();
        let database = audit_tests::unique_name("tamper").replace('-', "_");
        let config = audit_sink::config::MongoConfig {
            uri: Some(uri.clone()),
            database: database.clone(),
            collection: "audit_events".into(),
        };
        runtime().block_on(async {
            let sink = audit_sink::mongodb::MongoSink::connect(&uri, &config).await.unwrap();
            sink.write(&events).await.unwrap();
            sink.write_checkpoints(&checkpoints).await.unwrap();
        });
        let (base, query) = uri.split_once('?').unwrap_or((&uri, ""));
        let source = format!("{}/{database}?{query}#audit_events", base.trim_end_matches('/'));
        MongoStore { uri, database, source }
    }

    /// Runs `f` on a collection of the database with the driver.
    fn with<T>(&self, collection: &str, f: impl AsyncFnOnce(mongodb::Collection<mongodb::bson::Document>) -> T) -> T {
        runtime().block_on(async {
            let client = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
            f(client.database(&self.database).collection(collection)).await
        })
    }

    /// `(eventId, seq)` of the 12th event of chain `audit.raw/1`.
    fn victim(&self) -> (String, u64) {
        use mongodb::bson::doc;
        self.with("audit_events", async |c| {
            let d = c
                .find_one(doc! {"integrity.chain": "audit.raw/1", "integrity.seq": 12})
                .await
                .unwrap()
                .expect("seq 12 of audit.raw/1");
            (d.get_str("eventId").unwrap().to_owned(), 12)
        })
    }
}

impl Drop for MongoStore {
    fn drop(&mut self) {
        let (uri, database) = (self.uri.clone(), self.database.clone());
        runtime().block_on(async move {
            if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                let _ = client.database(&database).drop().await;
            }
        });
    }
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
        let (id, seq) = store.victim();
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

/// A processed topic of `partitions` partitions holding `events` events published by the
/// processor's pipeline, with (`signed`) a checkpoint of each chain's head; the source, the
/// topic, and the public key file.
fn processed_topic(partitions: i32, events: u64, signed: bool) -> (String, Processed, tempfile::TempDir) {
    let mut topic = runtime().block_on(Processed::create(partitions));
    topic.publish(events);
    let keys = tempfile::tempdir().unwrap();
    let key = audit_schema::checkpoint::SigningKey::from_seed(&[17; 32]);
    std::fs::write(keys.path().join("checkpoint.pub"), key.public().to_hex()).unwrap();
    if signed {
        topic.publish_checkpoints(&key);
    }
    (format!("kafka://{}/{}", topic.bootstrap, topic.topic), topic, keys)
}

fn topic_key(keys: &tempfile::TempDir) -> String {
    text(&keys.path().join("checkpoint.pub"))
}

/// Writes a record into the processed topic with a client of the attacker's own.
fn produce_raw(topic: &Processed, partition: i32, payload: Option<&[u8]>) {
    use rdkafka::producer::{BaseRecord, Producer as _};
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &topic.bootstrap).create().unwrap();
    let mut record = BaseRecord::<[u8], [u8]>::to(&topic.topic).partition(partition).key(&b"x"[..]);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
}

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
