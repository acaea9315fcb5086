//! What the tamper suite (issue 17: `tests/tests/tamper*.rs`) shares: `auditctl verify`, the real
//! binary, and its findings; the stores it is run against (private copies of an `auditctl demo`
//! run, PostgreSQL and MongoDB loaded by their sinks with the demo's events and checkpoints, a
//! processed topic published by the processor's pipeline); and what an attacker with write access
//! uses on them — files edited with `std::fs`, raw SQL through sqlx, the MongoDB driver, a Kafka
//! client of their own, SHA-256 recomputed (it needs no secret) — never the project's writers.
//!
//! Over 500 lines because it is the suite's whole toolkit (stores, attacks, findings) in one place;
//! the three suites read it side by side.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use audit_sink::sink::Sink as _;
use audit_sink::stores::jsonl::jsonl_files;
use serde_json::Value;

use crate::demo::{copy_dir, demo_store, jsonl_records};
use crate::sinks::Processed;
use crate::stores::postgres::PostgresTarget;

/// How many events the demo run holds.
pub const EVENTS: u64 = 300;

/// The `auditctl` the tests run: the package's `audit-test-auditctl` binary, which cargo builds
/// beside the test binaries (nextest also names it in the environment).
pub fn auditctl() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_audit-test-auditctl") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary");
    // target/<profile>/deps/<test binary> → target/<profile>/audit-test-auditctl
    let path = exe.parent().and_then(Path::parent).expect("the profile directory").join("audit-test-auditctl");
    assert!(path.is_file(), "the auditctl binary at {}", path.display());
    path
}

/// The demo run the stores are copied from or loaded with.
pub fn demo() -> PathBuf {
    demo_store(&auditctl(), EVENTS)
}

/// The public key the demo's processor signed its checkpoints with.
pub fn demo_key() -> String {
    text(&demo().join("keys/checkpoint.pub"))
}

/// The witness file the demo's processor wrote.
pub fn demo_witness() -> String {
    text(&demo().join("witness/checkpoints.jsonl"))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

pub fn text(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// auditctl verify.

/// One finding as `verify --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub kind: String,
    pub seq: u64,
    pub chain: String,
    pub event_id: Option<String>,
    pub location: Option<String>,
    pub detail: String,
}

/// What `auditctl verify --json` said, and its exit code.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    /// Every finding, chains' and store's, sorted by kind and seq.
    pub findings: Vec<Found>,
    /// The whole report.
    pub report: Value,
}

impl Outcome {
    /// Asserts the exit code and exactly these `(kind, seq)` findings.
    #[track_caller]
    pub fn expect(&self, code: i32, kinds: &[(&str, u64)]) -> &Outcome {
        let mut want: Vec<(&str, u64)> = kinds.to_vec();
        want.sort();
        let got: Vec<(&str, u64)> = self.findings.iter().map(|f| (f.kind.as_str(), f.seq)).collect();
        assert_eq!(got, want, "{:#}", self.report);
        assert_eq!(self.code, code, "exit code: {:#}", self.report);
        self
    }

    /// The only finding of `kind`.
    #[track_caller]
    pub fn one(&self, kind: &str) -> &Found {
        let mut of = self.findings.iter().filter(|f| f.kind == kind);
        let found = of.next().unwrap_or_else(|| panic!("no {kind}: {:#?}", self.findings));
        assert!(of.next().is_none(), "more than one {kind}: {:#?}", self.findings);
        found
    }

    /// The only finding of `kind`, naming `event_id`.
    #[track_caller]
    pub fn names(&self, kind: &str, event_id: &str) -> &Found {
        let found = self.one(kind);
        assert_eq!(found.event_id.as_deref(), Some(event_id), "{found:#?}");
        assert!(!found.chain.is_empty(), "{found:#?}");
        found
    }

    /// The report of `chain`.
    #[track_caller]
    pub fn chain(&self, chain: &str) -> &Value {
        let chains = self.report["chains"].as_array().unwrap();
        chains.iter().find(|c| c["chain"] == chain).unwrap_or_else(|| panic!("no chain {chain}: {:#}", self.report))
    }

    /// `(unattestedFrom, unattestedEvents)` of `chain`.
    pub fn unattested(&self, chain: &str) -> (Option<u64>, Option<u64>) {
        let c = self.chain(chain);
        (c["unattestedFrom"].as_u64(), c["unattestedEvents"].as_u64())
    }

    /// How many events the store holds.
    pub fn events(&self) -> u64 {
        self.report["events"].as_u64().unwrap()
    }

    /// How many of them the filters selected.
    pub fn selected(&self) -> u64 {
        self.report["chains"].as_array().unwrap().iter().map(|c| c["selected"].as_u64().unwrap()).sum()
    }
}

/// Runs `auditctl verify --json --source SOURCE ARGS…`.
pub fn verify(source: impl AsRef<OsStr>, args: &[&str]) -> Outcome {
    let out = run_verify(["--json"], source, args);
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
            detail: f["detail"].as_str().unwrap().to_owned(),
        })
        .collect();
    findings.sort();
    Outcome { code, findings, report }
}

fn run_verify<const N: usize>(flags: [&str; N], source: impl AsRef<OsStr>, args: &[&str]) -> std::process::Output {
    Command::new(auditctl()).arg("verify").args(flags).arg("--source").arg(source).args(args).output().unwrap()
}

/// Runs `auditctl verify` for its text report: the exit code and standard output.
pub fn verify_text(source: impl AsRef<OsStr>, args: &[&str]) -> (i32, String) {
    let out = run_verify([], source, args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `verify` when it stops before any report: the exit code and standard error.
pub fn verify_error(source: impl AsRef<OsStr>, args: &[&str]) -> (i32, String) {
    let out = run_verify([], source, args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `--public-key KEYS`, and `--checkpoints WITNESS` when one is given.
pub fn keyed<'a>(keys: &'a str, witness: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--public-key", keys];
    if let Some(w) = witness {
        args.extend(["--checkpoints", w]);
    }
    args
}

// ---------------------------------------------------------------------------------------------
// JSONL files.

/// A private copy of the demo's JSONL directory, as the sink wrote it (signed checkpoint lines
/// included).
pub fn jsonl_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo().join("jsonl"), dir.path());
    dir
}

/// A verifier's key directory: the demo's public key and its keyring (not the private key).
pub fn keys_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["checkpoint.pub", "keyring"] {
        std::fs::copy(demo().join("keys").join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// The files of partition `p` of the JSONL directory `dir`, oldest first.
pub fn partition_files(dir: &Path, p: i32) -> Vec<PathBuf> {
    jsonl_files(&dir.join(format!("partition-{p}"))).unwrap()
}

/// The (first) file of partition `p`.
pub fn file_of(dir: &Path, p: i32) -> PathBuf {
    partition_files(dir, p).remove(0)
}

/// The newest file of partition `p`.
pub fn last_file(dir: &Path, p: i32) -> PathBuf {
    partition_files(dir, p).pop().unwrap()
}

pub fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect()
}

pub fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// A JSONL line as JSON: `{"partition","offset","event"}` or `{…,"checkpoint"}`.
pub fn wrapper(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// The event of a line (`None` for a checkpoint line).
pub fn event_of(line: &str) -> Option<Value> {
    wrapper(line).get("event").cloned()
}

/// The index of the `n`th event line of `lines`.
pub fn nth_event(lines: &[String], n: usize) -> usize {
    (0..lines.len()).filter(|i| event_of(&lines[*i]).is_some()).nth(n).expect("enough events")
}

/// The events of partition `p` of `dir`, in file order.
pub fn events(dir: &Path, p: i32) -> Vec<Value> {
    let mut out = Vec::new();
    for file in partition_files(dir, p) {
        out.extend(lines(&file).iter().filter_map(|l| event_of(l)));
    }
    out
}

/// The seq of the newest event of partition `p` of `dir`.
pub fn head_of(dir: &Path, p: i32) -> u64 {
    seq_of(events(dir, p).last().unwrap())
}

/// A JSONL line as the sink writes one: the event in its canonical form.
pub fn event_line(partition: i32, offset: i64, event: &Value) -> String {
    let canonical = String::from_utf8(canonical(event)).unwrap();
    format!(r#"{{"partition":{partition},"offset":{offset},"event":{canonical}}}"#)
}

/// Appends `forged` to the newest file of partition `p` (Kafka offsets after the last line's).
pub fn append_events(dir: &Path, p: i32, forged: &[Value]) {
    let file = last_file(dir, p);
    let mut all = lines(&file);
    let mut offset = all.iter().map(|l| wrapper(l)["offset"].as_i64().unwrap()).max().unwrap();
    for e in forged {
        offset += 1;
        all.push(event_line(p, offset, e));
    }
    write_lines(&file, &all);
}

// ---------------------------------------------------------------------------------------------
// Forging events: the hash rule is public.

pub fn seq_of(event: &Value) -> u64 {
    event["integrity"]["seq"].as_u64().unwrap()
}

/// The chain an event names.
pub fn chain_of(event: &Value) -> &str {
    event["integrity"]["chain"].as_str().unwrap()
}

/// The RFC 8785 bytes of `event`: what the processor publishes and the JSONL and SQLite sinks store.
pub fn canonical(event: &Value) -> Vec<u8> {
    audit_schema::canonical::canonicalize(event).unwrap()
}

/// `event` sealed as the processor seals one: its hash recomputed over everything else.
pub fn seal(mut event: Value) -> Value {
    let hash = audit_schema::chain::hash_event_value(&event).unwrap();
    event["integrity"]["hash"] = Value::String(hash);
    event
}

/// The event that follows `prev` in its chain with correct links: `prev`'s content under
/// `event_id` (and `received_at`, when given), the next seq and source offset, sealed.
pub fn chained_after(prev: &Value, event_id: String, received_at: Option<&str>) -> Value {
    let mut e = prev.clone();
    e["eventId"] = Value::String(event_id);
    if let Some(at) = received_at {
        e["receivedAt"] = Value::String(at.to_owned());
    }
    e["integrity"]["seq"] = Value::from(seq_of(prev) + 1);
    e["integrity"]["prevHash"] = prev["integrity"]["hash"].clone();
    let offset = prev["integrity"]["source"]["offset"].as_i64().unwrap() + 1;
    e["integrity"]["source"]["offset"] = Value::from(offset);
    seal(e)
}

/// `n` events that continue `last` with correct links: what someone appends who knows SHA-256.
pub fn forged_after(last: &Value, n: u64, received_at: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for i in 1..=n {
        let prev = out.last().unwrap_or(last);
        let id = format!("01JZZZZZZZZZZZZZ{:010}", seq_of(last) + i);
        out.push(chained_after(prev, id, Some(received_at)));
    }
    out
}

/// `events` (the start of a chain) copied as chain `audit.raw/<to>`, each hash recomputed and
/// linked from the genesis: a chain nobody signed.
pub fn forged_chain(events: impl IntoIterator<Item = Value>, to: i32) -> Vec<Value> {
    let mut prev_hash = audit_schema::chain::GENESIS_PREV_HASH.to_owned();
    let mut forged = Vec::new();
    for mut e in events {
        e["integrity"]["chain"] = Value::String(format!("audit.raw/{to}"));
        e["integrity"]["prevHash"] = Value::String(prev_hash.clone());
        e["integrity"]["source"]["partition"] = Value::from(to);
        e["eventId"] = Value::String(format!("01JYYYYYYYYYYY{to}{:011}", seq_of(&e)));
        let e = seal(e);
        prev_hash = e["integrity"]["hash"].as_str().unwrap().to_owned();
        forged.push(e);
    }
    forged
}

/// Now shifted by `shift`, as RFC 3339 with milliseconds (the processor's `receivedAt` form).
pub fn now_rfc3339(shift: chrono::TimeDelta) -> String {
    (chrono::Utc::now() + shift).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// SQLite and PostgreSQL.

/// A private copy of the demo's SQLite database; its source (`sqlite:PATH`).
pub fn sqlite_copy() -> (tempfile::TempDir, String) {
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

/// A fresh PostgreSQL database holding the demo's events and checkpoints, loaded by the sink; its
/// URL.
pub fn postgres_store() -> String {
    let (events, checkpoints) = jsonl_records(&demo().join("jsonl"));
    runtime().block_on(async move {
        let db = PostgresTarget::new(None).await;
        let sink = audit_sink::stores::postgres::PostgresSink::connect(db.url(), 2, true).await.unwrap();
        sink.write(&events).await.unwrap();
        sink.write_checkpoints(&checkpoints).await.unwrap();
        db.url().to_owned()
    })
}

/// Runs `statements` on a connection; every row of the first one as text columns.
macro_rules! run_statements {
    ($connect:expr, $statements:expr) => {{
        use sqlx::Row as _;
        let mut conn = $connect.await.unwrap();
        let mut first: Vec<Vec<String>> = Vec::new();
        for (i, sql) in $statements.into_iter().enumerate() {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap();
            if i == 0 {
                first = rows.iter().map(|row| (0..row.len()).map(|c| row.get::<String, _>(c)).collect()).collect();
            }
        }
        first
    }};
}

/// Runs raw SQL on the database of `source` (`sqlite:PATH` or a PostgreSQL URL); every row of the
/// first statement as text columns.
pub fn sql_rows(source: &str, statements: &[impl AsRef<str>]) -> Vec<Vec<String>> {
    use sqlx::Connection as _;
    let statements: Vec<String> = statements.iter().map(|s| s.as_ref().to_owned()).collect();
    runtime().block_on(async move {
        match source.strip_prefix("sqlite:") {
            Some(path) => run_statements!(sqlx::SqliteConnection::connect(&format!("sqlite:{path}")), statements),
            None => run_statements!(sqlx::PgConnection::connect(source), statements),
        }
    })
}

/// [`sql_rows`]' first row (empty when the first statement returns none).
pub fn sql(source: &str, statements: &[impl AsRef<str>]) -> Vec<String> {
    sql_rows(source, statements).into_iter().next().unwrap_or_default()
}

/// A SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The `INSERT` that adds `event` to `audit_events` of the database of `source` (`sqlite:PATH` or
/// a PostgreSQL URL) as a row the sink would have written, every query column equal to the event's
/// field and the event as its canonical text (PostgreSQL casts the times' literals to
/// `timestamptz`, and its row names the text's form: `event_form` 'canonical').
pub fn sql_insert(source: &str, event: &Value, kafka_partition: i32, kafka_offset: i64) -> String {
    let field = |path: &[&str]| {
        let value = path.iter().try_fold(event, |v, key| v.get(key)).and_then(Value::as_str);
        value.map_or_else(|| "NULL".to_owned(), quoted)
    };
    let columns = [
        field(&["eventId"]),
        field(&["context", "tenantId"]),
        field(&["action"]),
        field(&["outcome"]),
        field(&["actor", "type"]),
        field(&["actor", "id"]),
        field(&["target", "type"]),
        field(&["target", "id"]),
        field(&["context", "occurredAt"]),
        field(&["receivedAt"]),
        field(&["integrity", "chain"]),
        seq_of(event).to_string(),
        field(&["integrity", "prevHash"]),
        field(&["integrity", "hash"]),
        kafka_partition.to_string(),
        kafka_offset.to_string(),
        quoted(&String::from_utf8(canonical(event)).unwrap()),
    ];
    let (form_column, form) = if source.starts_with("sqlite:") { ("", "") } else { (", event_form", ", 'canonical'") };
    format!(
        "INSERT INTO audit_events (event_id, tenant_id, action, outcome, actor_type, actor_id, target_type, \
         target_id, occurred_at, received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event\
         {form_column}) VALUES ({}{form})",
        columns.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// MongoDB.

/// A fresh MongoDB database holding the demo's events and checkpoints, loaded by the sink, and
/// verify's source for it. Dropped with the value.
#[derive(Debug)]
pub struct MongoStore {
    pub uri: String,
    pub database: String,
    pub source: String,
}

impl MongoStore {
    pub fn new() -> MongoStore {
        let (events, checkpoints) = jsonl_records(&demo().join("jsonl"));
        let uri = crate::mongodb_uri();
        let database = crate::unique_name("tamper").replace('-', "_");
        let config = audit_sink::stores::mongodb::MongoConfig {
            uri: Some(uri.clone()),
            database: database.clone(),
            collection: "audit_events".into(),
        };
        runtime().block_on(async {
            let sink = audit_sink::stores::mongodb::MongoSink::connect(&uri, &config).await.unwrap();
            sink.write(&events).await.unwrap();
            sink.write_checkpoints(&checkpoints).await.unwrap();
        });
        let (base, query) = uri.split_once('?').unwrap_or((&uri, ""));
        let source = format!("{}/{database}?{query}#audit_events", base.trim_end_matches('/'));
        MongoStore { uri, database, source }
    }

    /// Runs `f` on a collection of the database with the driver (`audit_events`, or
    /// `audit_events_checkpoints`).
    pub fn with<T>(
        &self,
        collection: &str,
        f: impl AsyncFnOnce(mongodb::Collection<mongodb::bson::Document>) -> T,
    ) -> T {
        runtime().block_on(async {
            let client = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
            f(client.database(&self.database).collection(collection)).await
        })
    }

    /// The document of seq 12 of chain `audit.raw/1`.
    pub fn victim(&self) -> mongodb::bson::Document {
        use mongodb::bson::doc;
        self.with("audit_events", async |c| {
            c.find_one(doc! {"integrity.chain": "audit.raw/1", "integrity.seq": 12}).await.unwrap()
        })
        .expect("seq 12 of audit.raw/1")
    }
}

impl Default for MongoStore {
    fn default() -> Self {
        MongoStore::new()
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

// ---------------------------------------------------------------------------------------------
// The processed topic.

/// The key the processed topics' checkpoints are signed with: the processor's, in these tests.
pub fn topic_signing_key() -> audit_schema::checkpoint::SigningKey {
    audit_schema::checkpoint::SigningKey::from_seed(&[17; 32])
}

/// A processed topic of `partitions` partitions holding `events` events published by the
/// processor's pipeline, with (`signed`) a checkpoint of each chain's head; the source, the
/// topic, and a key directory holding the public key (`checkpoint.pub`).
pub fn processed_topic(partitions: i32, events: u64, signed: bool) -> (String, Processed, tempfile::TempDir) {
    let mut topic = runtime().block_on(Processed::create(partitions));
    topic.publish(events);
    let keys = tempfile::tempdir().unwrap();
    let key = topic_signing_key();
    std::fs::write(keys.path().join("checkpoint.pub"), key.public().to_hex()).unwrap();
    if signed {
        topic.publish_checkpoints(&key);
    }
    (format!("kafka://{}/{}", topic.bootstrap, topic.topic), topic, keys)
}

/// The public key file of a [`processed_topic`]'s key directory.
pub fn topic_key(keys: &tempfile::TempDir) -> String {
    text(&keys.path().join("checkpoint.pub"))
}

/// Writes a record into the processed topic with a client of the attacker's own (`headers`:
/// `(name, value)` pairs).
fn produce(topic: &Processed, partition: i32, payload: Option<&[u8]>, headers: &[(&str, &str)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer as _};
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &topic.bootstrap).create().unwrap();
    let mut record = BaseRecord::<[u8], [u8]>::to(&topic.topic).partition(partition).key(&b"x"[..]);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    if !headers.is_empty() {
        let mut with = OwnedHeaders::new();
        for (key, value) in headers {
            with = with.insert(Header { key, value: Some(value.as_bytes()) });
        }
        record = record.headers(with);
    }
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
}

/// Writes a record without headers (an event's, or no payload at all) into the processed topic.
pub fn produce_raw(topic: &Processed, partition: i32, payload: Option<&[u8]>) {
    produce(topic, partition, payload, &[]);
}

/// Writes `checkpoint` into partition `p` of the processed topic as the processor publishes one:
/// the checkpoint JSON under the `audit-record: checkpoint` header.
pub fn produce_checkpoint(topic: &Processed, p: i32, checkpoint: &audit_schema::checkpoint::Checkpoint) {
    use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
    let payload = serde_json::to_vec(checkpoint).unwrap();
    produce(topic, p, Some(&payload), &[(RECORD_HEADER, RECORD_CHECKPOINT)]);
}

/// A correctly chained next event of partition `p` (what anyone who knows SHA-256 can make), in
/// canonical bytes.
pub fn next_event(topic: &Processed, p: i32) -> (Value, Vec<u8>) {
    let last = topic.published[&p].last().unwrap();
    let next = chained_after(last, format!("forged-{}", seq_of(last) + 1), None);
    let bytes = canonical(&next);
    (next, bytes)
}
