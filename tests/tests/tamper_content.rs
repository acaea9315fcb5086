//! The tamper suite for what is stored beside and around the hashed content (issue 17, classes
//! 1–3): `auditctl verify`, the real binary, against stores the real pipeline filled and an
//! attacker then changed — files edited byte by byte, raw SQL through sqlx, the MongoDB driver, a
//! Kafka producer of their own — never through the project's writers.
//!
//! 1. What verify hashes is what everyone else reads: stored text that is another spelling of the
//!    canonical event (whitespace, duplicate members, escaped and number aliases, serde tokens) is
//!    `non_canonical`.
//! 2. Query columns are part of the record: a column that differs from its hashed event is
//!    `column_mismatch`.
//! 3. Filters never weaken the checks: `--tenant`, `--since`, `--until` select, they do not hide.
//!
//! Every store has untouched controls that must stay intact, with and without the filters.

use std::path::{Path, PathBuf};
use std::process::Command;

use audit_sink::sink::Sink as _;
use audit_tests::demo::{copy_dir, demo_store, jsonl_records};
use audit_tests::sinks::{PostgresTarget, Processed};
use auditctl::source::jsonl_files;
use serde_json::Value;

const AUDITCTL: &str = env!("CARGO_BIN_EXE_audit-test-auditctl");
const EVENTS: u64 = 300;

fn demo() -> PathBuf {
    demo_store(Path::new(AUDITCTL), EVENTS)
}

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
    detail: String,
}

/// What `auditctl verify --json` said.
#[derive(Debug)]
struct Outcome {
    code: i32,
    findings: Vec<Found>,
    events: u64,
    selected: u64,
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

    /// The only finding of `kind`, naming `event_id`.
    fn names(&self, kind: &str, event_id: &str) -> &Found {
        let mut of = self.findings.iter().filter(|f| f.kind == kind);
        let found = of.next().unwrap_or_else(|| panic!("no {kind}: {:#?}", self.findings));
        assert!(of.next().is_none(), "more than one {kind}: {:#?}", self.findings);
        assert_eq!(found.event_id.as_deref(), Some(event_id), "{found:#?}");
        assert!(!found.chain.is_empty(), "{found:#?}");
        found
    }
}

fn verify(source: &str, args: &[&str]) -> Outcome {
    let out = Command::new(AUDITCTL).args(["verify", "--json", "--source", source]).args(args).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("verify printed no report ({e}): exit {code}: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["exitCode"], code);
    let chains = report["chains"].as_array().unwrap();
    let mut findings: Vec<Found> = chains
        .iter()
        .flat_map(|c| c["findings"].as_array().unwrap())
        .chain(report["storeFindings"].as_array().unwrap())
        .map(|f| Found {
            kind: f["kind"].as_str().unwrap().to_owned(),
            seq: f["seq"].as_u64().unwrap(),
            chain: f["chain"].as_str().unwrap().to_owned(),
            event_id: f["eventId"].as_str().map(str::to_owned),
            detail: f["detail"].as_str().unwrap().to_owned(),
        })
        .collect();
    findings.sort();
    Outcome {
        code,
        findings,
        events: report["events"].as_u64().unwrap(),
        selected: chains.iter().map(|c| c["selected"].as_u64().unwrap()).sum(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSONL files.

fn jsonl_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo().join("jsonl"), dir.path());
    dir
}

fn file_of(dir: &Path, p: i32) -> PathBuf {
    jsonl_files(&dir.join(format!("partition-{p}"))).unwrap().remove(0)
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// The event of a line (`None` for a checkpoint line).
fn event_of(line: &str) -> Option<Value> {
    let wrapper: Value = serde_json::from_str(line).unwrap();
    wrapper.get("event").cloned()
}

/// The index of the `n`th event line of `lines`, with its seq, eventId and tenant.
fn nth_event(lines: &[String], n: usize) -> (usize, u64, String, String) {
    let i = (0..lines.len()).filter(|i| event_of(&lines[*i]).is_some()).nth(n).expect("enough events");
    let e = event_of(&lines[i]).unwrap();
    (
        i,
        e["integrity"]["seq"].as_u64().unwrap(),
        e["eventId"].as_str().unwrap().to_owned(),
        e["context"]["tenantId"].as_str().unwrap().to_owned(),
    )
}

/// The tenants of the demo, some other than `tenant`.
fn another_tenant(lines: &[String], tenant: &str) -> String {
    lines
        .iter()
        .filter_map(|l| event_of(l))
        .filter_map(|e| e["context"]["tenantId"].as_str().map(str::to_owned))
        .find(|t| t != tenant)
        .expect("another tenant")
}

#[test]
fn control_the_jsonl_store_stays_intact_under_every_filter() {
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let all = verify(&source, &[]);
    all.expect(0, &[]);
    assert_eq!(all.selected, all.events);
    let lines = lines(&file_of(dir.path(), 1));
    let (_, _, _, tenant) = nth_event(&lines, 0);
    let one = verify(&source, &["--tenant", &tenant, "--public-key", &demo_key()]);
    one.expect(0, &[]);
    assert!(one.selected > 0 && one.selected < one.events && one.events == all.events, "{one:?}");
    let since = verify(&source, &["--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00Z"]);
    since.expect(0, &[]);
    assert_eq!(since.selected, all.events);
}

/// Replaces the `n`th event line of partition 1's file by `edit` of it; the edited event's seq
/// and eventId.
fn edit_jsonl(dir: &Path, n: usize, edit: impl FnOnce(&str) -> String) -> (u64, String) {
    let file = file_of(dir, 1);
    let mut lines = lines(&file);
    let (i, seq, id, _) = nth_event(&lines, n);
    let edited = edit(&lines[i]);
    assert_ne!(edited, lines[i], "the edit changes the line");
    lines[i] = edited;
    write_lines(&file, &lines);
    (seq, id)
}

#[test]
fn class1_jsonl_any_other_spelling_of_the_canonical_event_is_non_canonical() {
    // Each the same event to a lenient parser (so its hash still matches), other bytes on disk.
    let same_content: [fn(&str) -> String; 6] = [
        |l| l.replacen("\"event\":{", "\"event\": {", 1),
        |l| l.replacen("\"environment\":\"demo\"", "\"environment\":\"\\u0064emo\"", 1),
        |l| l.replacen("\"chain\":\"audit.raw/1\"", "\"chain\":\"audit.raw\\/1\"", 1),
        |l| l.replacen("\"schemaVersion\":1,", "\"schemaVersion\":1.0,", 1),
        |l| l.replacen("\"schemaVersion\":1,", "\"schemaVersion\":1e0,", 1),
        |l| l.replacen("\"event\":{\"action\":", "\"event\":{\"action\":\"x\",\"action\":", 1),
    ];
    for edit in same_content {
        let dir = jsonl_copy();
        let (seq, id) = edit_jsonl(dir.path(), 11, edit);
        let out = verify(&format!("jsonl:{}", dir.path().display()), &[]);
        out.expect(1, &[("non_canonical", seq)]).names("non_canonical", &id);
    }
    // A serde_json private token as a member: another parser reads other content; and it is not
    // what was hashed either.
    let dir = jsonl_copy();
    let (seq, id) = edit_jsonl(dir.path(), 11, |l| {
        l.replacen("\"event\":{", "\"event\":{\"$serde_json::private::Number\":\"1\",", 1)
    });
    verify(&format!("jsonl:{}", dir.path().display()), &[])
        .expect(1, &[("modified", seq), ("non_canonical", seq)])
        .names("non_canonical", &id);
    // The wrapper too is the sink's, byte for byte.
    let dir = jsonl_copy();
    let (seq, _) = edit_jsonl(dir.path(), 3, |l| l.replacen("{\"partition\":", "{ \"partition\":", 1));
    verify(&format!("jsonl:{}", dir.path().display()), &[]).expect(1, &[("non_canonical", seq)]);
}

#[test]
fn class3_jsonl_filters_select_but_never_hide() {
    // An event moved to another tenant by editing its content: that other tenant's filter, and
    // the original tenant's, both see it changed.
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let (_, _, _, tenant) = nth_event(&lines(&file_of(dir.path(), 1)), 11);
    let others: Vec<String> = [0, 2].iter().flat_map(|p| lines(&file_of(dir.path(), *p))).collect();
    let other = another_tenant(&others, &tenant);
    let (seq, id) = edit_jsonl(dir.path(), 11, |l| {
        l.replacen(&format!("\"tenantId\":\"{tenant}\""), &format!("\"tenantId\":\"{other}\""), 1)
    });
    for t in [&tenant, &other] {
        verify(&source, &["--tenant", t]).expect(1, &[("modified", seq)]).names("modified", &id);
    }

    // An event's receivedAt moved out of the window: it is still verified, and so is everything
    // before the window (a deleted event there is still missing).
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let file = file_of(dir.path(), 1);
    let mut lines = lines(&file);
    let (last, ..) = nth_event(&lines, 30);
    let newest = event_of(&lines[last]).unwrap()["receivedAt"].as_str().unwrap().to_owned();
    let (seq, _) = edit_jsonl(dir.path(), 29, |l| {
        let at = event_of(l).unwrap()["receivedAt"].as_str().unwrap().to_owned();
        l.replacen(&format!("\"receivedAt\":\"{at}\""), "\"receivedAt\":\"2000-01-01T00:00:00.000Z\"", 1)
    });
    verify(&source, &["--chain", "audit.raw/1", "--since", &newest]).expect(1, &[("modified", seq)]);
    lines = self::lines(&file);
    let (deleted, gone, ..) = nth_event(&lines, 2);
    lines.remove(deleted);
    write_lines(&file, &lines);
    verify(&source, &["--chain", "audit.raw/1", "--since", &newest]).expect(1, &[("missing", gone), ("modified", seq)]);

    // A window nothing was received in: verified, but nothing selected.
    let dir = jsonl_copy();
    let out = verify(&format!("jsonl:{}", dir.path().display()), &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(4, &[("no_events", 0)]);
    assert!(out.events > 0 && out.selected == 0, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// SQLite.

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

/// Runs raw SQL on the SQLite database of `source`; the first statement's first row as text.
fn sqlite(source: &str, statements: &[String]) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let path = source.strip_prefix("sqlite:").unwrap().to_owned();
    let statements = statements.to_vec();
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

/// `(event_id, seq, tenant_id)` of the 12th event of chain `audit.raw/1`, and another tenant.
const VICTIM_SQL: &str = "SELECT event_id, CAST(seq AS TEXT), tenant_id, \
     (SELECT tenant_id FROM audit_events o WHERE o.tenant_id <> e.tenant_id LIMIT 1) \
     FROM audit_events e WHERE chain = 'audit.raw/1' ORDER BY seq LIMIT 1 OFFSET 11";

struct Victim {
    id: String,
    seq: u64,
    tenant: String,
    other: String,
}

fn victim(row: Vec<String>) -> Victim {
    Victim { id: row[0].clone(), seq: row[1].parse().unwrap(), tenant: row[2].clone(), other: row[3].clone() }
}

#[test]
fn control_the_sqlite_store_stays_intact_under_every_filter() {
    let (_dir, source) = sqlite_copy();
    let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
    verify(&source, &[]).expect(0, &[]);
    let out = verify(&source, &["--tenant", &v.tenant, "--public-key", &demo_key()]);
    out.expect(0, &[]);
    assert!(out.selected > 0 && out.selected < out.events, "{out:?}");
}

#[test]
fn class1_sqlite_the_event_column_is_the_canonical_bytes() {
    for edit in [
        "replace(event, '\"outcome\":\"', '\"outcome\": \"')",
        "replace(event, '{\"action\":', '{\"action\":\"x\",\"action\":')",
        "replace(event, '\"environment\":\"demo\"', '\"environment\":\"\\u0064emo\"')",
        "replace(event, '\"schemaVersion\":1,', '\"schemaVersion\":1.0,')",
    ] {
        let (_dir, source) = sqlite_copy();
        let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
        sqlite(&source, &[format!("UPDATE audit_events SET event = {edit} WHERE event_id = '{}'", v.id)]);
        verify(&source, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    }
}

#[test]
fn class2_sqlite_every_query_column_equals_its_hashed_event() {
    for (column, value) in [
        ("tenant_id", "'evil'"),
        ("action", "'user.logout'"),
        ("actor_id", "'someone-else'"),
        ("occurred_at", "'2020-01-01T00:00:00.000Z'"),
        ("received_at", "'2020-01-01T00:00:00.000Z'"),
        ("hash", "'00'"),
        ("target_type", "'forged'"),
    ] {
        let (_dir, source) = sqlite_copy();
        let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
        sqlite(&source, &[format!("UPDATE audit_events SET {column} = {value} WHERE event_id = '{}'", v.id)]);
        let out = verify(&source, &[]);
        let found = out.expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
        assert!(found.detail.contains(column), "{found:#?}");
    }
}

#[test]
fn class3_sqlite_the_tenant_comes_from_the_content_not_the_column() {
    // The tenant column moved to another tenant: the row is still the tenant's (the database reads
    // its content), and the column is reported.
    let (_dir, source) = sqlite_copy();
    let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
    sqlite(&source, &[format!("UPDATE audit_events SET tenant_id = '{}' WHERE event_id = '{}'", v.other, v.id)]);
    verify(&source, &["--tenant", &v.tenant]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);

    // The content moved, the column kept: handed over by its column, found changed.
    let (_dir, source) = sqlite_copy();
    let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
    sqlite(
        &source,
        &[format!(
            "UPDATE audit_events SET event = json_set(event, '$.context.tenantId', '{}') WHERE event_id = '{}'",
            v.other, v.id
        )],
    );
    verify(&source, &["--tenant", &v.tenant])
        .expect(1, &[("column_mismatch", v.seq), ("modified", v.seq)])
        .names("modified", &v.id);

    // A window nothing was received in, and the received_at column edited into it: nothing is
    // selected by a column.
    let (_dir, source) = sqlite_copy();
    let v = victim(sqlite(&source, &[VICTIM_SQL.into()]));
    sqlite(
        &source,
        &[format!("UPDATE audit_events SET received_at = '2999-06-01T00:00:00.000Z' WHERE event_id = '{}'", v.id)],
    );
    let out = verify(&source, &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(1, &[("column_mismatch", v.seq), ("no_events", 0)]);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL and MongoDB, loaded by their sinks with the demo's events and checkpoints.

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

fn postgres(url: &str, statements: &[String]) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let url = url.to_owned();
    let statements = statements.to_vec();
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
fn postgres_controls_and_classes_1_to_3() {
    let url = postgres_store();
    let v = victim(postgres(&url, &[VICTIM_SQL.into()]));
    verify(&url, &[]).expect(0, &[]);
    let out = verify(&url, &["--tenant", &v.tenant, "--public-key", &demo_key()]);
    out.expect(0, &[]);
    assert!(out.selected > 0 && out.selected < out.events, "{out:?}");

    // Class 1: a number alias jsonb keeps (numeric keeps its scale), and a serde token member.
    let url = postgres_store();
    postgres(
        &url,
        &[format!(
            "UPDATE audit_events SET event = jsonb_set(event, '{{schemaVersion}}', '1.0'::jsonb) WHERE event_id = '{}'",
            v.id
        )],
    );
    verify(&url, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    let url = postgres_store();
    postgres(
        &url,
        &[format!(
            r#"UPDATE audit_events SET event = event || '{{"$serde_json::private::Number": "1"}}' WHERE event_id = '{}'"#,
            v.id
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", v.seq), ("non_canonical", v.seq)]).names("non_canonical", &v.id);

    // Class 2: columns, times compared as instants.
    for edit in ["tenant_id = 'evil'", "received_at = received_at + interval '1 hour'", "outcome = 'failure'"] {
        let url = postgres_store();
        postgres(&url, &[format!("UPDATE audit_events SET {edit} WHERE event_id = '{}'", v.id)]);
        verify(&url, &[]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
    }

    // Class 3: the tenant column moved away does not take the row out of its tenant's check.
    let url = postgres_store();
    postgres(&url, &[format!("UPDATE audit_events SET tenant_id = '{}' WHERE event_id = '{}'", v.other, v.id)]);
    verify(&url, &["--tenant", &v.tenant]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
    let out = verify(&url, &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(1, &[("column_mismatch", v.seq), ("no_events", 0)]);
}

struct MongoStore {
    uri: String,
    database: String,
    source: String,
}

impl MongoStore {
    fn new() -> MongoStore {
        let (events, checkpoints) = jsonl_records(&demo().join("jsonl"));
        let uri = audit_tests::mongodb_uri();
        let database = audit_tests::unique_name("tamper_content").replace('-', "_");
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

    fn with<T>(&self, f: impl AsyncFnOnce(mongodb::Collection<mongodb::bson::Document>) -> T) -> T {
        runtime().block_on(async {
            let client = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
            f(client.database(&self.database).collection("audit_events")).await
        })
    }

    /// The document of seq 12 of chain `audit.raw/1`.
    fn victim(&self) -> mongodb::bson::Document {
        use mongodb::bson::doc;
        self.with(async |c| c.find_one(doc! {"integrity.chain": "audit.raw/1", "integrity.seq": 12}).await.unwrap())
            .expect("seq 12 of audit.raw/1")
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
fn mongodb_controls_and_classes_1_to_3() {
    use mongodb::bson::{doc, Bson};
    let store = MongoStore::new();
    let victim = store.victim();
    let id = victim.get_str("eventId").unwrap().to_owned();
    let tenant = victim.get_document("context").unwrap().get_str("tenantId").unwrap().to_owned();
    verify(&store.source, &[]).expect(0, &[]);
    verify(&store.source, &["--tenant", &tenant, "--public-key", &demo_key()]).expect(0, &[]);

    // Class 1: a whole number stored as a double, and a BSON type the sink never writes (a date,
    // which converts to a `$date` member).
    store.with(async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"schemaVersion": Bson::Double(1.0)}}).await.unwrap()
    });
    verify(&store.source, &[]).expect(1, &[("non_canonical", 12)]).names("non_canonical", &id);
    let store = MongoStore::new();
    store.with(async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"context.occurredAt": mongodb::bson::DateTime::now()}})
            .await
            .unwrap()
    });
    verify(&store.source, &[]).expect(1, &[("modified", 12), ("non_canonical", 12)]).names("non_canonical", &id);

    // Class 2: the `_id` lookups use is another event's.
    let store = MongoStore::new();
    store.with(async |c| {
        let mut moved = c.find_one(doc! {"eventId": &id}).await.unwrap().unwrap();
        moved.insert("_id", "not-the-event-id");
        c.delete_one(doc! {"eventId": &id}).await.unwrap();
        c.insert_one(moved).await.unwrap();
    });
    verify(&store.source, &[]).expect(1, &[("column_mismatch", 12)]).names("column_mismatch", &id);

    // Class 3: content moved to another tenant is found by the original tenant's check.
    let store = MongoStore::new();
    store.with(async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"context.tenantId": "someone-else"}}).await.unwrap()
    });
    verify(&store.source, &["--tenant", &tenant]).expect(1, &[("modified", 12)]).names("modified", &id);
}

// ---------------------------------------------------------------------------------------------
// The processed topic.

/// Writes `payload` into partition `p` of the processed topic with a client of the attacker's own.
fn produce_raw(topic: &Processed, p: i32, payload: &[u8]) {
    use rdkafka::producer::{BaseRecord, Producer as _};
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &topic.bootstrap).create().unwrap();
    producer.send(BaseRecord::<[u8], [u8]>::to(&topic.topic).partition(p).key(&b"x"[..]).payload(payload)).unwrap();
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
}

/// A correctly chained next event of partition `p` (what anyone who knows SHA-256 can make), in
/// canonical bytes.
fn next_event(topic: &Processed, p: i32) -> (Value, Vec<u8>) {
    let last = topic.published[&p].last().unwrap().clone();
    let mut next = last.clone();
    let seq = last["integrity"]["seq"].as_u64().unwrap() + 1;
    next["eventId"] = Value::String(format!("forged-{seq}"));
    next["integrity"]["seq"] = seq.into();
    next["integrity"]["prevHash"] = last["integrity"]["hash"].clone();
    next["integrity"]["source"]["offset"] = (last["integrity"]["source"]["offset"].as_i64().unwrap() + 1).into();
    next["integrity"]["hash"] = audit_schema::chain::hash_event_value(&next).unwrap().into();
    let bytes = audit_schema::canonical::canonicalize(&next).unwrap();
    (next, bytes)
}

#[test]
fn processed_topic_records_are_the_canonical_bytes() {
    let mut topic = runtime().block_on(Processed::create(2));
    topic.publish(40);
    let source = format!("kafka://{}/{}", topic.bootstrap, topic.topic);
    verify(&source, &[]).expect(0, &[]);

    // A well-chained event in canonical form is not what this test is about: it verifies.
    let (event, canonical) = next_event(&topic, 0);
    produce_raw(&topic, 0, &canonical);
    topic.published.get_mut(&0).unwrap().push(event);
    verify(&source, &[]).expect(0, &[]);

    // The next one pretty-printed, then one with an escaped alias: each chains, neither is the
    // processor's bytes.
    let (event, _) = next_event(&topic, 0);
    let seq = event["integrity"]["seq"].as_u64().unwrap();
    produce_raw(&topic, 0, serde_json::to_string_pretty(&event).unwrap().as_bytes());
    topic.published.get_mut(&0).unwrap().push(event);
    verify(&source, &[]).expect(1, &[("non_canonical", seq)]).names("non_canonical", &format!("forged-{seq}"));
    let (event, canonical) = next_event(&topic, 0);
    let aliased = String::from_utf8(canonical).unwrap().replacen("\"eventId\":\"f", "\"eventId\":\"\\u0066", 1);
    produce_raw(&topic, 0, aliased.as_bytes());
    let seq2 = event["integrity"]["seq"].as_u64().unwrap();
    verify(&source, &[]).expect(1, &[("non_canonical", seq), ("non_canonical", seq2)]);
}
