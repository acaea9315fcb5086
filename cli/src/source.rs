//! Where stored events are read from: a JSONL directory, PostgreSQL, SQLite, MongoDB, or the
//! processed topic itself. Every reader hands over the events of each chain in the order the store
//! keeps them (file order for JSONL and the topic, `seq` order for the databases).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use audit_schema::checkpoint::Checkpoint;
use futures::TryStreamExt as _;
use serde_json::Value;

/// A store to read events from, parsed from `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `jsonl:DIR` or a directory: the JSONL sink's `partition-<p>/*.jsonl[.gz]` files.
    Jsonl(PathBuf),
    /// `sqlite:PATH`: the SQLite sink's database file.
    Sqlite(PathBuf),
    /// `postgres://…`: the PostgreSQL sink's database.
    Postgres(String),
    /// `mongodb://host/DATABASE?…#COLLECTION`: the MongoDB sink's collection (database `audit`
    /// and collection `audit_events` unless given).
    Mongo {
        /// Connection string without the `#collection` part.
        uri: String,
        /// Database name.
        database: String,
        /// Collection of events.
        collection: String,
    },
    /// `kafka://HOST:PORT[,HOST:PORT]/TOPIC`: the processed topic, read from its oldest record to
    /// the high watermark of each partition.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Processed topic.
        topic: String,
    },
}

impl FromStr for Source {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Source> {
        if let Some(dir) = s.strip_prefix("jsonl:") {
            return Ok(Source::Jsonl(PathBuf::from(dir)));
        }
        if let Some(path) = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) {
            if path.is_empty() {
                bail!("source {s:?}: sqlite: needs a file path (sqlite:/var/lib/audit/audit.db)");
            }
            return Ok(Source::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Source::Postgres(s.to_owned()));
        }
        if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
            let (uri, collection) = s.split_once('#').unwrap_or((s, "audit_events"));
            let rest = uri.split_once("://").map_or("", |(_, r)| r);
            let database = rest
                .split_once('/')
                .map(|(_, path)| path.split('?').next().unwrap_or_default())
                .filter(|d| !d.is_empty())
                .unwrap_or("audit");
            if collection.is_empty() {
                bail!("source {s:?}: the collection after '#' is empty");
            }
            return Ok(Source::Mongo {
                uri: uri.to_owned(),
                database: database.to_owned(),
                collection: collection.into(),
            });
        }
        if let Some(rest) = s.strip_prefix("kafka://") {
            let Some((brokers, topic)) = rest.split_once('/').filter(|(b, t)| !b.is_empty() && !t.is_empty()) else {
                bail!("source {s:?}: expected kafka://HOST:PORT/TOPIC");
            };
            return Ok(Source::Kafka { brokers: brokers.to_owned(), topic: topic.to_owned() });
        }
        if s.contains("://") {
            bail!("source {s:?}: unknown scheme (expected jsonl:, sqlite:, postgres://, mongodb:// or kafka://)");
        }
        if Path::new(s).is_dir() {
            return Ok(Source::Jsonl(PathBuf::from(s)));
        }
        bail!("source {s:?}: not a directory, and not one of jsonl:DIR, sqlite:PATH, postgres://, mongodb://, kafka://")
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Jsonl(dir) => write!(f, "jsonl:{}", dir.display()),
            Source::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            // Never print a password.
            Source::Postgres(url) => write!(f, "{}", redact_userinfo(url)),
            Source::Mongo { uri, collection, .. } => write!(f, "{}#{collection}", redact_userinfo(uri)),
            Source::Kafka { brokers, topic } => write!(f, "kafka://{brokers}/{topic}"),
        }
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
            format!("{scheme}://{masked}@{host}{}", &rest[host_end..])
        }
        None => url.to_owned(),
    }
}

/// What a reader is asked for.
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    /// Only this chain.
    pub chain: Option<String>,
    /// The tenant whose contents are wanted: events of other tenants may come as links only.
    pub tenant: Option<String>,
    /// Only links and content hashes are wanted (verification): a reader may hash each event
    /// itself and hand over [`Stored::Hashed`] instead of the parsed event.
    pub hashes_only: bool,
}

/// An event as stored: its full content, or (for other tenants' events, where the store can
/// avoid reading them) only what links it into its chain.
#[derive(Debug, Clone)]
pub enum Stored {
    /// The event exactly as stored.
    Event(Value),
    /// Only the link of an event whose content was not read.
    Link(LinkOnly),
    /// An event hashed as it was read (with [`ReadFilter::hashes_only`]): its link, the hash its
    /// stored content has, and whether it is a quarantine entry.
    Hashed {
        /// The event's link.
        link: LinkOnly,
        /// SHA-256 of the stored content's canonical form, without `integrity.hash`.
        computed_hash: String,
        /// `action` is `audit.quarantined`.
        quarantined: bool,
    },
    /// A signed checkpoint the store keeps beside the events (it travelled in the processed
    /// partition). Stores with a table of their own yield them before any event; JSONL files and
    /// the processed topic yield each where it is, after the event it covers.
    Checkpoint(Box<Checkpoint>),
    /// Something stored as a checkpoint that is not one (reported, not trusted).
    BadCheckpoint {
        /// Where it is.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// The link fields of a stored event, however it was read (borrowed; missing fields read as
/// empty or 0, as the verifier treats them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRef<'a> {
    /// `integrity.chain`.
    pub chain: &'a str,
    /// `integrity.seq`.
    pub seq: u64,
    /// `integrity.hash` as recorded.
    pub hash: &'a str,
    /// `eventId`.
    pub event_id: &'a str,
    /// `receivedAt`.
    pub received_at: Option<&'a str>,
}

impl Stored {
    /// The link fields of a stored event; `None` for a checkpoint.
    pub fn link(&self) -> Option<LinkRef<'_>> {
        match self {
            Stored::Link(l) | Stored::Hashed { link: l, .. } => Some(LinkRef {
                chain: &l.chain,
                seq: l.seq,
                hash: &l.hash,
                event_id: &l.event_id,
                received_at: l.received_at.as_deref(),
            }),
            Stored::Event(e) => {
                let text = |p: &str| e.pointer(p).and_then(Value::as_str);
                Some(LinkRef {
                    chain: text("/integrity/chain").unwrap_or_default(),
                    seq: e.pointer("/integrity/seq").and_then(Value::as_u64).unwrap_or_default(),
                    hash: text("/integrity/hash").unwrap_or_default(),
                    event_id: text("/eventId").unwrap_or_default(),
                    received_at: text("/receivedAt"),
                })
            }
            Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } => None,
        }
    }

    /// A stored checkpoint as read from `value`, or what is wrong with it.
    fn checkpoint(value: Value, origin: impl FnOnce() -> String) -> Stored {
        match Checkpoint::from_value(value) {
            Ok(c) => Stored::Checkpoint(Box::new(c)),
            Err(e) => Stored::BadCheckpoint { origin: origin(), reason: e.to_string() },
        }
    }
}

/// The chain fields of an event whose content was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOnly {
    /// `integrity.chain`.
    pub chain: String,
    /// `integrity.seq`.
    pub seq: u64,
    /// `integrity.prevHash`.
    pub prev_hash: String,
    /// `integrity.hash` (trusted: the content is not there to recompute it).
    pub hash: String,
    /// `eventId`.
    pub event_id: String,
    /// `integrity.source.offset`.
    pub source_offset: Option<i64>,
    /// `receivedAt`.
    pub received_at: Option<String>,
}

/// Reads every stored event of `source` that `filter` asks for, calling `each` in store order.
pub async fn read(
    source: &Source,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    match source {
        Source::Jsonl(dir) => read_jsonl(dir, filter, each),
        Source::Sqlite(path) => read_sqlite(path, filter, each).await,
        Source::Postgres(url) => read_postgres(url, filter, each).await,
        Source::Mongo { uri, database, collection } => read_mongo(uri, database, collection, filter, each).await,
        Source::Kafka { brokers, topic } => read_kafka(brokers, topic, filter, each).await,
    }
}

fn chain_of(event: &Value) -> Option<&str> {
    event.get("integrity")?.get("chain")?.as_str()
}

/// The partition directories of a JSONL sink, in partition order.
pub fn jsonl_partitions(dir: &Path) -> anyhow::Result<Vec<(i32, PathBuf)>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the JSONL directory {}", dir.display()))?;
    let mut partitions = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(p) = name.strip_prefix("partition-").and_then(|p| p.parse::<i32>().ok()) {
            partitions.push((p, path));
        }
    }
    if partitions.is_empty() {
        bail!("{} holds no partition-<n> directories: is it a JSONL sink's directory?", dir.display());
    }
    partitions.sort();
    Ok(partitions)
}

/// The files of one JSONL partition directory in write order (`.jsonl` and compressed
/// `.jsonl.gz`, named by their first offset).
pub fn jsonl_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.gz")))
        .collect();
    files.sort();
    Ok(files)
}

/// Calls `each` with every line of a JSONL sink file (plain or gzip) and its line number.
pub fn jsonl_lines(path: &Path, each: &mut dyn FnMut(usize, &[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::with_capacity(4096);
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).with_context(|| format!("reading {}", path.display()))? == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.is_empty() {
            each(number, text)?;
        }
    }
}

fn read_jsonl(
    dir: &Path,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    for (_, partition_dir) in jsonl_partitions(dir)? {
        for path in jsonl_files(&partition_dir)? {
            jsonl_lines(&path, &mut |number, line| {
                // Only `event` or `checkpoint` is kept (partition and offset are skipped, not built).
                #[derive(serde::Deserialize)]
                struct Line {
                    event: Option<Value>,
                    checkpoint: Option<Value>,
                }
                let bad = || {
                    format!("{}:{number}: not a JSON sink line with an \"event\" or a \"checkpoint\"", path.display())
                };
                if filter.hashes_only {
                    if let Some(stored) = hashed_line(line, filter) {
                        return match stored {
                            Some(stored) => each(stored),
                            None => Ok(()),
                        };
                    }
                }
                let line: Line = serde_json::from_slice(line).with_context(bad)?;
                match line {
                    Line { event: Some(event), checkpoint: None } => {
                        if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
                            return Ok(());
                        }
                        each(Stored::Event(event))
                    }
                    Line { event: None, checkpoint: Some(c) } => {
                        match Stored::checkpoint(c, || format!("{}:{number}", path.display())) {
                            Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => {
                                Ok(())
                            }
                            stored => each(stored),
                        }
                    }
                    _ => Err(anyhow::anyhow!(bad())),
                }
            })?;
        }
    }
    Ok(())
}

/// The fast path of a JSONL event line written by the sink (`{"partition":p,"offset":o,"event":…}`,
/// the event in canonical form): its fields read without building the event, its hash computed
/// over the stored text itself. `None` when the line is not of that shape or its text does not hash
/// to its recorded hash as it stands (the caller then reads it the general way, which tells a
/// non-canonical but intact event from a modified one); `Some(None)` for an event the chain filter
/// leaves out.
fn hashed_line(line: &[u8], filter: &ReadFilter) -> Option<Option<Stored>> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        #[serde(rename = "eventId", borrow)]
        event_id: Cow<'a, str>,
        #[serde(borrow)]
        action: Cow<'a, str>,
        #[serde(rename = "receivedAt", borrow)]
        received_at: Option<Cow<'a, str>>,
        #[serde(borrow)]
        context: Option<Context<'a>>,
        #[serde(borrow)]
        integrity: Integrity<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Context<'a> {
        #[serde(rename = "tenantId", borrow)]
        tenant_id: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Integrity<'a> {
        #[serde(borrow)]
        chain: Cow<'a, str>,
        seq: u64,
        #[serde(rename = "prevHash", borrow)]
        prev_hash: Cow<'a, str>,
        #[serde(borrow)]
        hash: Cow<'a, str>,
        source: Option<SourceRef>,
    }
    #[derive(serde::Deserialize)]
    struct SourceRef {
        offset: Option<i64>,
    }
    let rest = line.strip_prefix(b"{\"partition\":")?;
    let rest = &rest[rest.iter().position(|b| *b == b',')?..];
    let rest = rest.strip_prefix(b",\"offset\":")?;
    let rest = &rest[rest.iter().position(|b| *b == b',')?..];
    let event = rest.strip_prefix(b",\"event\":")?.strip_suffix(b"}")?;
    let fields: Fields<'_> = serde_json::from_slice(event).ok()?;
    let i = &fields.integrity;
    if filter.chain.as_deref().is_some_and(|c| c != i.chain) {
        return Some(None);
    }
    let link = LinkOnly {
        chain: i.chain.to_string(),
        seq: i.seq,
        prev_hash: i.prev_hash.to_string(),
        hash: i.hash.to_string(),
        event_id: fields.event_id.to_string(),
        source_offset: i.source.as_ref().and_then(|s| s.offset),
        received_at: fields.received_at.as_deref().map(str::to_owned),
    };
    let tenant = fields.context.as_ref().and_then(|c| c.tenant_id.as_deref());
    if filter.tenant.as_deref().is_some_and(|t| Some(t) != tenant) {
        return Some(Some(Stored::Link(link)));
    }
    let computed_hash = audit_schema::chain::hash_canonical_text(event).filter(|h| *h == link.hash)?;
    Some(Some(Stored::Hashed { link, computed_hash, quarantined: fields.action == "audit.quarantined" }))
}

/// Rows of the SQL sinks' `audit_events` table: the link columns, the source offset, and the
/// content only where it is wanted.
const SQL_COLUMNS: &str = "chain, seq, prev_hash, hash, event_id";

fn sql_row(row: SqlRow) -> anyhow::Result<Stored> {
    let (chain, seq, prev_hash, hash, event_id, content, source_offset, received_at) = row;
    Ok(match content {
        Some(text) => Stored::Event(
            serde_json::from_str(&text).with_context(|| format!("event {event_id} ({chain} seq {seq}) is not JSON"))?,
        ),
        None => Stored::Link(LinkOnly {
            chain,
            seq: u64::try_from(seq).unwrap_or_default(),
            prev_hash,
            hash,
            event_id,
            source_offset,
            received_at,
        }),
    })
}

type SqlRow = (String, i64, String, String, String, Option<String>, Option<i64>, Option<String>);

async fn read_postgres(
    url: &str,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = tokio::time::timeout(Duration::from_secs(30), sqlx::PgConnection::connect(url))
        .await
        .context("connecting to PostgreSQL timed out")?
        .context("connecting to PostgreSQL")?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('audit_checkpoints')::text")
        .fetch_one(&mut conn)
        .await
        .context("looking for audit_checkpoints in PostgreSQL")?;
    if table.is_some() {
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT checkpoint::text FROM audit_checkpoints WHERE $1::text IS NULL OR chain = $1 ORDER BY chain, seq",
        )
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
        while let Some(text) = rows.try_next().await.context("reading audit_checkpoints from PostgreSQL")? {
            each(stored_checkpoint(text.as_bytes(), || "a row of audit_checkpoints".into()))?;
        }
    }
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN $1::text IS NULL OR tenant_id = $1 THEN event::text END, \
         (event->'integrity'->'source'->>'offset')::int8, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
         FROM audit_events WHERE $2::text IS NULL OR chain = $2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query_as::<_, SqlRow>(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) = rows.try_next().await.context("reading audit_events from PostgreSQL")? {
        each(sql_row(row)?)?;
    }
    Ok(())
}

async fn read_sqlite(
    path: &Path,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    if !path.is_file() {
        bail!("{} does not exist (sqlite: wants the SQLite sink's database file)", path.display());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn =
        sqlx::SqliteConnection::connect_with(&options).await.with_context(|| format!("opening {}", path.display()))?;
    let table: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'")
            .fetch_optional(&mut conn)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
    if table.is_some() {
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT checkpoint FROM audit_checkpoints WHERE ?1 IS NULL OR chain = ?1 ORDER BY chain, seq",
        )
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
        while let Some(text) =
            rows.try_next().await.with_context(|| format!("reading audit_checkpoints from {}", path.display()))?
        {
            each(stored_checkpoint(text.as_bytes(), || "a row of audit_checkpoints".into()))?;
        }
    }
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN ?1 IS NULL OR tenant_id = ?1 THEN event END, \
         json_extract(event, '$.integrity.source.offset'), received_at \
         FROM audit_events WHERE ?2 IS NULL OR chain = ?2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query_as::<_, SqlRow>(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) =
        rows.try_next().await.with_context(|| format!("reading audit_events from {}", path.display()))?
    {
        each(sql_row(row)?)?;
    }
    Ok(())
}

async fn read_mongo(
    uri: &str,
    database: &str,
    collection: &str,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use mongodb::bson::{doc, Document};
    let mut options = mongodb::options::ClientOptions::parse(uri).await.context("parsing the MongoDB URI")?;
    options.server_selection_timeout = Some(Duration::from_secs(30));
    let client = mongodb::Client::with_options(options).context("MongoDB client")?;
    let db = client.database(database);
    let checkpoints = db.collection::<Document>(&format!("{collection}_checkpoints"));
    let query = match &filter.chain {
        Some(chain) => doc! { "checkpoint.chain": chain },
        None => doc! {},
    };
    // Read before the events; no order needed (and none asked of the server: nothing indexes it).
    let mut cursor = checkpoints
        .find(query)
        .await
        .with_context(|| format!("reading {database}.{collection}_checkpoints from MongoDB"))?;
    while let Some(document) =
        cursor.try_next().await.with_context(|| format!("reading {database}.{collection}_checkpoints from MongoDB"))?
    {
        let origin =
            || format!("{collection}_checkpoints {}", document.get("_id").map(ToString::to_string).unwrap_or_default());
        let stored = match document.get_document("checkpoint") {
            Ok(inner) => {
                Stored::checkpoint(mongodb::bson::Bson::Document(inner.clone()).into_relaxed_extjson(), origin)
            }
            Err(_) => Stored::BadCheckpoint { origin: origin(), reason: "no checkpoint object".into() },
        };
        each(stored)?;
    }
    let events = db.collection::<Document>(collection);
    let query = match &filter.chain {
        Some(chain) => doc! { "integrity.chain": chain },
        None => doc! {},
    };
    let mut cursor = events
        .find(query)
        .sort(doc! { "integrity.chain": 1, "integrity.seq": 1 })
        .await
        .with_context(|| format!("reading {database}.{collection} from MongoDB"))?;
    while let Some(mut document) =
        cursor.try_next().await.with_context(|| format!("reading {database}.{collection} from MongoDB"))?
    {
        document.remove("_id");
        let event: Value = mongodb::bson::Bson::Document(document).into_relaxed_extjson();
        each(Stored::Event(event))?;
    }
    Ok(())
}

async fn read_kafka(
    brokers: &str,
    topic: &str,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use rdkafka::Message as _;
    crate::kafka::scan_topic(brokers, topic, &mut |message| {
        let Some(payload) = message.payload() else { return Ok(()) };
        if crate::kafka::is_checkpoint(message) {
            let origin = || format!("{topic}/{} offset {}", message.partition(), message.offset());
            return match stored_checkpoint(payload, origin) {
                Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => Ok(()),
                stored => each(stored),
            };
        }
        let event = audit_schema::codec::event_value(payload).with_context(|| {
            format!("{topic}/{} offset {}: not a processed event", message.partition(), message.offset())
        })?;
        if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
            return Ok(());
        }
        each(Stored::Event(event))
    })
}

/// A checkpoint stored as JSON text (a SQL row, a topic record), or what is wrong with it.
fn stored_checkpoint(json: &[u8], origin: impl FnOnce() -> String) -> Stored {
    match Checkpoint::from_json(json) {
        Ok(c) => Stored::Checkpoint(Box::new(c)),
        Err(e) => Stored::BadCheckpoint { origin: origin(), reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_from_their_spellings() {
        assert_eq!("jsonl:/x".parse::<Source>().unwrap(), Source::Jsonl("/x".into()));
        assert_eq!("sqlite:/a/b.db".parse::<Source>().unwrap(), Source::Sqlite("/a/b.db".into()));
        assert_eq!("sqlite:///a/b.db".parse::<Source>().unwrap(), Source::Sqlite("/a/b.db".into()));
        assert_eq!(
            "postgres://u:p@h:5432/db".parse::<Source>().unwrap(),
            Source::Postgres("postgres://u:p@h:5432/db".into())
        );
        assert_eq!(
            "mongodb://h:27017/auditdb?directConnection=true#events".parse::<Source>().unwrap(),
            Source::Mongo {
                uri: "mongodb://h:27017/auditdb?directConnection=true".into(),
                database: "auditdb".into(),
                collection: "events".into()
            }
        );
        assert_eq!(
            "mongodb://h:27017/?directConnection=true".parse::<Source>().unwrap(),
            Source::Mongo {
                uri: "mongodb://h:27017/?directConnection=true".into(),
                database: "audit".into(),
                collection: "audit_events".into()
            }
        );
        assert_eq!(
            "kafka://h:9092,g:9092/audit.processed".parse::<Source>().unwrap(),
            Source::Kafka { brokers: "h:9092,g:9092".into(), topic: "audit.processed".into() }
        );
        let error = "ftp://x".parse::<Source>().unwrap_err().to_string();
        assert!(error.contains("unknown scheme"), "{error}");
        let error = "kafka://h:9092".parse::<Source>().unwrap_err().to_string();
        assert!(error.contains("kafka://HOST:PORT/TOPIC"), "{error}");
    }

    #[test]
    fn a_source_never_prints_its_password() {
        let s: Source = "postgres://audit:s3cret@db:5432/audit".parse().unwrap();
        assert_eq!(s.to_string(), "postgres://audit:***@db:5432/audit");
        let s: Source = "mongodb://u:pw@h/db#c".parse().unwrap();
        assert_eq!(s.to_string(), "mongodb://u:***@h/db#c");
    }
}
