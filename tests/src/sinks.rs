//! Helpers for the sink conformance suite: processed events made by the real pipeline, the stores
//! under test with a way to read them back, sink processes, and a private PostgreSQL.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_processor::config::ProcessorConfig;
use audit_processor::pipeline::{Pipeline, RawRecord};
use audit_schema::chain::{chain_name, ChainHead};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::kafka::free_port;
use crate::pipeline::raw_event;
use crate::{database_url, kafka_bootstrap, unique_name};

/// A processed topic filled with real processed events.
pub struct Processed {
    /// Broker.
    pub bootstrap: String,
    /// Processed topic.
    pub topic: String,
    /// Partitions.
    pub partitions: i32,
    /// What was published, per partition, in offset order (the event JSON).
    pub published: BTreeMap<i32, Vec<Value>>,
    /// The signed checkpoints published, in publishing order (their JSON objects).
    pub checkpoints: Vec<Value>,
    producer: ThreadedProducer<DefaultProducerContext>,
    heads: BTreeMap<i32, ChainHead>,
    pipeline: Pipeline,
    next_raw: u64,
}

impl std::fmt::Debug for Processed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processed").field("topic", &self.topic).field("partitions", &self.partitions).finish()
    }
}

impl Processed {
    /// Creates a processed topic with `partitions` partitions on the shared broker.
    pub async fn create(partitions: i32) -> Processed {
        let topic = unique_name("sink.processed");
        let bootstrap = kafka_bootstrap();
        create_topics(&ClientSettings::new(&bootstrap, "test-admin"), &[TopicSpec::new(&topic, partitions)])
            .await
            .expect("topic");
        let mut c = ProcessorConfig::default();
        c.processing.output_encoding = audit_processor::config::OutputEncoding::Avro;
        let pipeline = Pipeline::new(&c.validate().expect("config"));
        let mut config = ClientSettings::new(&bootstrap, "test-publisher").client_config(&[]).expect("config");
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5");
        let producer = config.create().expect("producer");
        let heads = (0..partitions).map(|p| (p, ChainHead::genesis(chain_name("audit.raw", p)))).collect();
        Processed {
            bootstrap,
            topic,
            partitions,
            published: BTreeMap::new(),
            checkpoints: Vec::new(),
            producer,
            heads,
            pipeline,
            next_raw: 0,
        }
    }

    /// Publishes `n` more processed events spread over the partitions.
    pub fn publish(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.next_raw;
            self.next_raw += 1;
            let p = (i % self.partitions as u64) as i32;
            let (key, mut payload) = raw_event(i);
            if payload.starts_with(b"{\"action\": \"broken") {
                // Keep the fixture free of quarantine entries: a valid event with this index's id.
                let valid = String::from_utf8(raw_event(i + 1).1).expect("utf-8");
                payload = valid.replace(&format!("load-{:08}", i + 1), &format!("load-{i:08}")).into_bytes();
            }
            let head = self.heads.get_mut(&p).expect("head");
            let raw = RawRecord {
                topic: "audit.raw",
                partition: p,
                offset: head.seq as i64,
                timestamp_ms: Some(1_790_000_000_000 + i as i64),
                key: Some(key.as_bytes()),
                payload: Some(&payload),
            };
            let out = self.pipeline.process(&raw, head);
            self.send(p, key.as_bytes(), &out.encoded);
            self.published.entry(p).or_default().push(out.value);
        }
        self.flush();
    }

    /// Signs the head of every partition that has events with `key` and publishes each checkpoint
    /// in its partition as the processor does (an `audit-record: checkpoint` record).
    pub fn publish_checkpoints(&mut self, key: &audit_schema::checkpoint::SigningKey) {
        use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
        use rdkafka::message::{Header, OwnedHeaders};
        for (p, head) in &self.heads {
            if head.seq == 0 {
                continue;
            }
            let c = key.sign(&head.chain, head.seq, &head.hash, "2026-11-26T12:00:00.000Z");
            let payload = serde_json::to_vec(&c).expect("checkpoint JSON");
            let headers = OwnedHeaders::new().insert(Header { key: RECORD_HEADER, value: Some(RECORD_CHECKPOINT) });
            let mut record =
                BaseRecord::to(&self.topic).partition(*p).key(head.chain.as_bytes()).payload(&payload).headers(headers);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            self.checkpoints.push(serde_json::to_value(&c).expect("checkpoint JSON"));
        }
        self.flush();
    }

    /// Publishes raw bytes as a record of partition `p` (for poison and duplicate tests).
    pub fn publish_bytes(&mut self, p: i32, bytes: &[u8]) {
        self.send(p, b"tenant-x", bytes);
        self.flush();
    }

    fn send(&self, p: i32, key: &[u8], payload: &[u8]) {
        let mut record = BaseRecord::to(&self.topic).partition(p).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every published event, all partitions.
    pub fn total(&self) -> usize {
        self.published.values().map(Vec::len).sum()
    }
}

/// A store under test.
pub trait Target: Send + Sync {
    /// Sink kind, for messages.
    fn name(&self) -> &'static str;
    /// Environment configuring an `audit-sink` process for this store.
    fn env(&self) -> Vec<(String, String)>;
    /// The stored events, per partition, in the order the store keeps them.
    fn read_back(&self) -> BTreeMap<i32, Vec<Value>>;
    /// Conflicts the store kept for review (`None` when it keeps none beyond the metric).
    fn conflicts(&self) -> Option<usize>;
    /// The signed checkpoints the store keeps (their JSON objects), in the order it keeps them.
    fn checkpoints(&self) -> Vec<Value>;
}

/// JSONL files in a temporary directory.
#[derive(Debug)]
pub struct JsonlTarget {
    dir: tempfile::TempDir,
    gzip: bool,
}

impl JsonlTarget {
    /// A fresh directory.
    pub fn new() -> Self {
        JsonlTarget { dir: tempfile::tempdir().expect("dir"), gzip: false }
    }

    /// A fresh directory, closed files compressed (`store.gzip_closed`).
    pub fn gzip() -> Self {
        JsonlTarget { gzip: true, ..Self::new() }
    }

    /// Every line of every file, parsed, per partition in file order.
    fn lines(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut out = BTreeMap::new();
        let Ok(parts) = std::fs::read_dir(self.dir.path()) else { return out };
        for part in parts.flatten() {
            let name = part.file_name().to_string_lossy().into_owned();
            let Some(p) = name.strip_prefix("partition-").and_then(|s| s.parse::<i32>().ok()) else { continue };
            // `<first offset>.jsonl` or `.jsonl.gz` (a file may be caught between the two: the
            // compressed copy is complete before the plain one goes, so read one of each name).
            let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
            for path in std::fs::read_dir(part.path()).expect("dir").flatten().map(|e| e.path()) {
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".jsonl.gz") {
                    files.insert(stem.to_owned(), path); // complete: preferred
                } else if let Some(stem) = name.strip_suffix(".jsonl") {
                    files.entry(stem.to_owned()).or_insert(path);
                }
            }
            let lines: &mut Vec<Value> = out.entry(p).or_default();
            for f in files.into_values() {
                let text = if f.extension().is_some_and(|x| x == "gz") {
                    let Ok(file) = std::fs::File::open(&f) else { continue }; // removed meanwhile
                    std::io::read_to_string(flate2::read::GzDecoder::new(file)).expect("gzip file")
                } else {
                    match std::fs::read_to_string(&f) {
                        Ok(text) => text,
                        Err(_) => continue, // compressed and removed meanwhile: the .gz was read
                    }
                };
                for line in text.lines() {
                    lines.push(serde_json::from_str(line).expect("a JSON line"));
                }
            }
        }
        out
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for JsonlTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for JsonlTarget {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "jsonl".into()),
            ("AUDIT_STORE__DIR".into(), self.dir.path().display().to_string()),
            ("AUDIT_STORE__MAX_FILE_BYTES".into(), "65536".into()),
            ("AUDIT_STORE__GZIP_CLOSED".into(), self.gzip.to_string()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.lines()
            .into_iter()
            .map(|(p, lines)| (p, lines.into_iter().filter_map(|mut l| l.get_mut("event").map(Value::take)).collect()))
            .collect()
    }

    fn checkpoints(&self) -> Vec<Value> {
        let lines = self.lines().into_values().flatten();
        lines.filter_map(|mut l| l.get_mut("checkpoint").map(Value::take)).collect()
    }

    fn conflicts(&self) -> Option<usize> {
        None
    }
}

/// A PostgreSQL database of its own on the shared server (or on a private one).
#[derive(Debug)]
pub struct PostgresTarget {
    url: String,
}

async fn admin_connection(server_url: &str) -> PgConnection {
    PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|e| panic!("{}", crate::unreachable("PostgreSQL", server_url, e)))
}

impl PostgresTarget {
    /// A new database on the server of `server_url` (default: the shared `DATABASE_URL`).
    pub async fn new(server_url: Option<&str>) -> Self {
        let server = server_url.map(str::to_owned).unwrap_or_else(database_url);
        let name = unique_name("sink").replace('-', "_");
        let mut admin = admin_connection(&server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        PostgresTarget { url: format!("{base}/{name}") }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f(url))
        })
        .join()
        .expect("query thread")
    }
}

impl Target for PostgresTarget {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("AUDIT_STORE__KIND".into(), "postgres".into()), ("AUDIT_STORE__URL".into(), self.url.clone())]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.query(|url| {
            Box::pin(async move {
                let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
                let Ok(mut c) = PgConnection::connect(&url).await else { return out };
                let rows: Vec<(i32, String)> = match sqlx::query_as(
                    "SELECT kafka_partition, event::text FROM audit_events ORDER BY kafka_partition, kafka_offset",
                )
                .fetch_all(&mut c)
                .await
                {
                    Ok(rows) => rows,
                    Err(_) => return out,
                };
                for (p, text) in rows {
                    out.entry(p).or_default().push(serde_json::from_str(&text).expect("jsonb text"));
                }
                out
            })
        })
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.query(|url| {
            Box::pin(async move {
                let mut c = PgConnection::connect(&url).await.expect("connect");
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_conflicts")
                    .fetch_one(&mut c)
                    .await
                    .unwrap_or(0);
                n as usize
            })
        }))
    }

    fn checkpoints(&self) -> Vec<Value> {
        self.query(|url| {
            Box::pin(async move {
                let Ok(mut c) = PgConnection::connect(&url).await else { return Vec::new() };
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT checkpoint::text FROM audit_checkpoints ORDER BY kafka_partition, kafka_offset",
                )
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
                rows.iter().map(|t| serde_json::from_str(t).expect("jsonb text")).collect()
            })
        })
    }
}

/// A SQLite database file in a temporary directory.
#[derive(Debug)]
pub struct SqliteTarget {
    dir: tempfile::TempDir,
}

impl SqliteTarget {
    /// A fresh directory.
    pub fn new() -> Self {
        SqliteTarget { dir: tempfile::tempdir().expect("dir") }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.sqlite")
    }

    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(sqlx::SqliteConnection) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
        default: T,
    ) -> T {
        let path = self.path();
        if !path.exists() {
            return default;
        }
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async move {
                let c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
                    .await
                    .expect("open");
                f(c).await
            })
        })
        .join()
        .expect("query thread")
    }
}

impl Default for SqliteTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for SqliteTarget {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "sqlite".into()),
            ("AUDIT_STORE__PATH".into(), self.path().display().to_string()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.query(
            |mut c| {
                Box::pin(async move {
                    let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
                    let rows: Vec<(i32, String)> = sqlx::query_as(
                        "SELECT kafka_partition, event FROM audit_events ORDER BY kafka_partition, kafka_offset",
                    )
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_default();
                    for (p, text) in rows {
                        out.entry(p).or_default().push(serde_json::from_str(&text).expect("event JSON"));
                    }
                    out
                })
            },
            BTreeMap::new(),
        )
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.query(
            |mut c| {
                Box::pin(async move {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_conflicts")
                        .fetch_one(&mut c)
                        .await
                        .unwrap_or(0);
                    n as usize
                })
            },
            0,
        ))
    }

    fn checkpoints(&self) -> Vec<Value> {
        self.query(
            |mut c| {
                Box::pin(async move {
                    let rows: Vec<String> = sqlx::query_scalar(
                        "SELECT checkpoint FROM audit_checkpoints ORDER BY kafka_partition, kafka_offset",
                    )
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_default();
                    rows.iter().map(|t| serde_json::from_str(t).expect("checkpoint JSON")).collect()
                })
            },
            Vec::new(),
        )
    }
}

/// A MongoDB database of its own on the shared server.
#[derive(Debug)]
pub struct MongoTarget {
    uri: String,
    database: String,
}

impl MongoTarget {
    /// A fresh database name on the shared `MONGODB_URI`.
    pub fn new() -> Self {
        MongoTarget { uri: crate::mongodb_uri(), database: unique_name("sink").replace('-', "_") }
    }

    fn collection(&self, name: &str) -> Vec<mongodb::bson::Document> {
        let (uri, db, name) = (self.uri.clone(), self.database.clone(), name.to_owned());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async move {
                let client = mongodb::Client::with_uri_str(&uri).await.expect("MongoDB client");
                let coll = client.database(&db).collection::<mongodb::bson::Document>(&name);
                let mut out = Vec::new();
                if let Ok(mut cursor) = coll.find(mongodb::bson::doc! {}).await {
                    while cursor.advance().await.unwrap_or(false) {
                        out.push(cursor.deserialize_current().expect("document"));
                    }
                }
                out
            })
        })
        .join()
        .expect("query thread")
    }
}

impl Default for MongoTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for MongoTarget {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "mongodb".into()),
            ("AUDIT_STORE__URI".into(), self.uri.clone()),
            ("AUDIT_STORE__DATABASE".into(), self.database.clone()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
        for mut d in self.collection("audit_events") {
            d.remove("_id");
            let v = serde_json::to_value(&d).expect("document as JSON");
            let p = v["integrity"]["source"]["partition"].as_i64().unwrap_or(-1) as i32;
            out.entry(p).or_default().push(v);
        }
        for events in out.values_mut() {
            events.sort_by_key(|e| e["integrity"]["seq"].as_u64());
        }
        out
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.collection("audit_events_conflicts").len())
    }

    fn checkpoints(&self) -> Vec<Value> {
        let mut docs: Vec<Value> = self
            .collection("audit_events_checkpoints")
            .into_iter()
            .map(|d| serde_json::to_value(&d).expect("document as JSON"))
            .collect();
        docs.sort_by_key(|d| (d["kafkaPartition"].as_i64(), d["kafkaOffset"].as_i64()));
        docs.into_iter().map(|mut d| d["checkpoint"].take()).collect()
    }
}

/// An `audit-sink` process.
#[derive(Debug)]
pub struct SinkProcess {
    /// The child.
    pub child: Child,
    /// Its `/metrics` port.
    pub port: u16,
}

/// Starts the sink binary `bin` for `target`, reading processed `topic` on `bootstrap` in `group`;
/// its log goes to `log`.
pub fn spawn_sink(
    bin: &str,
    target: &dyn Target,
    bootstrap: &str,
    topic: &str,
    group: &str,
    log: &Path,
    extra: &[(&str, &str)],
) -> SinkProcess {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.env("AUDIT_KAFKA__BROKERS", bootstrap)
        .env("AUDIT_KAFKA__PROCESSED_TOPIC", topic)
        .env("AUDIT_KAFKA__GROUP_ID", group)
        .env("AUDIT_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("AUDIT_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("AUDIT_BATCH__MAX_WAIT_MS", "50")
        .env("AUDIT_RETRY__BASE_BACKOFF_MS", "50")
        .env("AUDIT_RETRY__MAX_BACKOFF_MS", "1000")
        .env("AUDIT_RETRY__COOLDOWN_MS", "1000")
        .env("AUDIT_LOG_FILTER", "warn,audit_sink=info");
    for (k, v) in target.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::null()).stderr(file).spawn().expect("start audit-sink");
    SinkProcess { child, port }
}

/// A plain HTTP GET on loopback; the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The value of a counter in a Prometheus exposition (sum over label sets).
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `target` holds `n` events (or `limit` passes); returns what it holds.
pub fn wait_stored(target: &dyn Target, n: usize, limit: Duration) -> BTreeMap<i32, Vec<Value>> {
    let started = Instant::now();
    loop {
        let got = target.read_back();
        if got.values().map(Vec::len).sum::<usize>() >= n || started.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A PostgreSQL cluster owned by one test, which may stop and start it.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin").join(name)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
fn pg_command(bin: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin)).args(args);
        c
    } else {
        let mut c = Command::new(pg_bin(bin));
        c.args(args);
        c
    }
}

impl PrivatePostgres {
    /// initdb and start a cluster on a free loopback port.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new().prefix("auditstream-pg").tempdir_in("/tmp").expect("dir");
        if is_root() {
            let _ = Command::new("chown").args(["postgres", &dir.path().display().to_string()]).status();
        }
        let data = dir.path().join("data");
        let status =
            pg_command("initdb", &["-D", &data.display().to_string(), "-U", "postgres", "-A", "trust", "--no-locale"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("initdb");
        assert!(status.success(), "initdb failed (is PostgreSQL 15 installed? scripts/services up installs it)");
        let pg = PrivatePostgres { dir, port: free_port() };
        pg.start_server();
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (after [`PrivatePostgres::stop`]).
    pub fn start_server(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log").display().to_string();
        let status = pg_command("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "private PostgreSQL did not start");
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = pg_command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
