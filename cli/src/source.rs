//! Where stored events are read from: a JSONL directory, PostgreSQL, SQLite, MongoDB, or the
//! processed topic itself. Every reader hands over the events of each chain in the order the store
//! keeps them (file order for JSONL and the topic, `seq` order for the databases).
//!
//! Nothing a store holds is skipped in silence: what a reader cannot take as an event or a
//! checkpoint (a file the JSONL sink never writes, a line or row that does not decode, bytes after
//! a gzip stream) is handed over as [`Stored::Unread`], naming where it is, for `verify` to report.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use audit_schema::checkpoint::Checkpoint;
use futures::TryStreamExt as _;
use serde_json::Value;

mod sink_line;

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
    /// Part of the store that was not read as an event or a checkpoint, or not as its writer
    /// writes it.
    Unread(Box<Unread>),
}

/// What is wrong with a part of a store that was not read as its writer writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadKind {
    /// A file or directory the JSONL sink never writes, or one that could not be opened or read:
    /// not read.
    UnreadFile,
    /// The last line of a partition's newest plain file, cut short (a write a crash interrupted;
    /// the sink cuts it when it starts again and writes that record anew).
    TornLine,
    /// A line, row, document or record that is not an event or a checkpoint as its writer writes
    /// them (empty, not JSON, without the chain fields, wrongly typed columns).
    Unreadable,
    /// A compressed file whose gzip stream is corrupt or cut short (the sink renames a `.gz` into
    /// place only once it is complete): what follows the damage is not read.
    DamagedFile,
    /// A compressed file of more than the one gzip member the sink writes (every member is read,
    /// as gzip tools read them).
    ExtraGzipMember,
    /// Bytes after a compressed file's gzip stream that are not gzip: not read.
    TrailingBytes,
    /// An event whose stored text is not the form the processor published (duplicate members,
    /// escaped or number aliases, whitespace, serde tokens): what other readers of the store see
    /// may not be what was hashed. The event is still verified as it parses.
    NonCanonical,
    /// A query column (or MongoDB's `_id`) that differs from what the hashed event says.
    ColumnMismatch,
}

impl UnreadKind {
    /// The finding's name in `verify`'s report.
    pub fn as_str(self) -> &'static str {
        match self {
            UnreadKind::UnreadFile => "unread_file",
            UnreadKind::TornLine => "torn_line",
            UnreadKind::Unreadable => "unreadable",
            UnreadKind::DamagedFile => "damaged_file",
            UnreadKind::ExtraGzipMember => "extra_gzip_member",
            UnreadKind::TrailingBytes => "trailing_bytes",
            UnreadKind::NonCanonical => "non_canonical",
            UnreadKind::ColumnMismatch => "column_mismatch",
        }
    }
}

/// A part of a store not read as an event or a checkpoint: where, what, and the chain position
/// when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// What is wrong.
    pub kind: UnreadKind,
    /// Where: `FILE`, `FILE:LINE`, a table and its row, `TOPIC/PARTITION@OFFSET`.
    pub location: String,
    /// `integrity.chain` (or the `chain` column), when readable.
    pub chain: Option<String>,
    /// `integrity.seq`, when readable.
    pub seq: Option<u64>,
    /// `eventId`, when readable.
    pub event_id: Option<String>,
    /// What is wrong, and what it leaves unverified.
    pub reason: String,
}

impl Unread {
    fn stored(kind: UnreadKind, location: String, reason: String) -> Stored {
        Stored::Unread(Box::new(Unread { kind, location, chain: None, seq: None, event_id: None, reason }))
    }

    /// An unreadable event: its chain position taken from whatever of `event` is readable.
    fn event(location: String, event: &Value, reason: String) -> Stored {
        Unread::about(UnreadKind::Unreadable, location, event, reason)
    }

    /// A finding of `kind` about `event`, named by whatever of it is readable.
    fn about(kind: UnreadKind, location: String, event: &Value, reason: String) -> Stored {
        let integrity = event.get("integrity");
        Stored::Unread(Box::new(Unread {
            kind,
            location,
            chain: integrity.and_then(|i| i.get("chain")).and_then(Value::as_str).map(str::to_owned),
            seq: integrity.and_then(|i| i.get("seq")).and_then(Value::as_u64),
            event_id: event.get("eventId").and_then(Value::as_str).map(str::to_owned),
            reason,
        }))
    }
}

/// The first chain field `event` lacks (or has with the wrong type), as the verifier reads them
/// (`audit_schema::chain::ChainLink::from_value`); `None` when it has them all.
fn missing_link_field(event: &Value) -> Option<&'static str> {
    let Some(integrity) = event.get("integrity").filter(|i| i.is_object()) else { return Some("integrity") };
    let text = |name| integrity.get(name).is_some_and(Value::is_string);
    if !text("chain") {
        Some("integrity.chain")
    } else if !integrity.get("seq").is_some_and(Value::is_u64) {
        Some("integrity.seq")
    } else if !text("prevHash") {
        Some("integrity.prevHash")
    } else if !text("hash") {
        Some("integrity.hash")
    } else {
        None
    }
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
            Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } | Stored::Unread(_) => None,
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
    /// `context.tenantId` as the hashed content says (`None` when the content was not read).
    pub tenant: Option<String>,
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

/// A JSONL sink's directory: the files it wrote, and every other entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlLayout {
    /// `(partition, directory, its files in write order)`, in partition order.
    pub partitions: Vec<(i32, PathBuf, Vec<PathBuf>)>,
    /// Entries the sink never writes, or that could not be listed, and why: not read.
    pub foreign: Foreign,
}

/// Entries of a JSONL directory that are not read, and why.
pub type Foreign = Vec<(PathBuf, String)>;

/// Whether `path` is a compressed file of the sink (`.jsonl.gz`).
fn compressed(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The partition of a `partition-<p>` directory name, exactly as the sink spells it.
fn partition_of(name: &str) -> Option<i32> {
    let p: i32 = name.strip_prefix("partition-")?.parse().ok()?;
    (format!("partition-{p}") == name).then_some(p)
}

/// Whether `name` is a file the sink writes: `<first offset, 20 digits>.jsonl` or `.jsonl.gz`.
fn is_sink_file(name: &str) -> bool {
    let stem = name.strip_suffix(".jsonl.gz").or_else(|| name.strip_suffix(".jsonl"));
    stem.is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads how `dir` is laid out: the `partition-<p>` directories and their
/// `<offset>.jsonl[.gz]` files, and whatever else is there (a `.jsonl.gz.tmp` beside its plain
/// file is a compression under way, not foreign: its content is the plain file's).
pub fn jsonl_layout(dir: &Path) -> anyhow::Result<JsonlLayout> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the JSONL directory {}", dir.display()))?;
    let mut layout = JsonlLayout::default();
    let not_sink = "not a partition-<n> directory of the JSONL sink";
    for entry in entries {
        let entry = entry.with_context(|| format!("reading the JSONL directory {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match partition_of(&name) {
            Some(p) if entry.file_type().is_ok_and(|t| t.is_dir()) => match partition_files(&path) {
                Ok((files, foreign)) => {
                    layout.partitions.push((p, path, files));
                    layout.foreign.extend(foreign);
                }
                Err(e) => layout.foreign.push((path, format!("could not be listed ({e})"))),
            },
            _ => layout.foreign.push((path, not_sink.into())),
        }
    }
    layout.partitions.sort();
    layout.foreign.sort();
    Ok(layout)
}

/// The sink's files of one partition directory in write order, and its other entries.
fn partition_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Foreign)> {
    let mut files = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_sink_file(&name) && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            files.push(entry.path());
        } else {
            others.push((entry.path(), name));
        }
    }
    let mut foreign = Vec::new();
    for (path, name) in others {
        let compressing = name
            .strip_suffix(".gz.tmp")
            .is_some_and(|plain| is_sink_file(plain) && files.iter().any(|f| f.file_name() == Some(plain.as_ref())));
        if !compressing {
            foreign
                .push((path, "not a file the JSONL sink writes (<first offset, 20 digits>.jsonl or .jsonl.gz)".into()));
        }
    }
    files.sort();
    Ok((files, foreign))
}

/// The partition directories of a JSONL sink, in partition order.
pub fn jsonl_partitions(dir: &Path) -> anyhow::Result<Vec<(i32, PathBuf)>> {
    let partitions: Vec<(i32, PathBuf)> =
        jsonl_layout(dir)?.partitions.into_iter().map(|(p, path, _)| (p, path)).collect();
    if partitions.is_empty() {
        bail!("{} holds no partition-<n> directories: is it a JSONL sink's directory?", dir.display());
    }
    Ok(partitions)
}

/// The files of one JSONL partition directory in write order (`.jsonl` and compressed
/// `.jsonl.gz`, named by their first offset); other names are left out.
pub fn jsonl_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(partition_files(dir).with_context(|| format!("reading {}", dir.display()))?.0)
}

/// Every gzip member of a compressed file in turn, as gzip tools read them: counts the members,
/// and stops at bytes after the last member that do not start another.
struct GzMembers {
    decoder: Option<flate2::bufread::GzDecoder<BufReader<File>>>,
    len: u64,
    /// Members read to their end.
    members: u32,
    /// Where the second member starts.
    second_at: Option<u64>,
    /// `(at, length)` of bytes after the gzip stream that are not gzip.
    trailing: Option<(u64, u64)>,
}

impl GzMembers {
    fn new(file: File, len: u64) -> GzMembers {
        GzMembers {
            decoder: Some(flate2::bufread::GzDecoder::new(BufReader::with_capacity(1 << 16, file))),
            len,
            members: 0,
            second_at: None,
            trailing: None,
        }
    }

    /// After a member: a decoder for the next one, or the end (with any trailing bytes noted).
    fn next_member(&mut self, input: BufReader<File>) -> std::io::Result<()> {
        let mut input = input;
        let at = input.stream_position()?;
        let mut file = input.into_inner();
        file.seek(SeekFrom::Start(at))?;
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < magic.len() {
            match file.read(&mut magic[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            return Ok(());
        }
        if got < 2 || magic != [0x1f, 0x8b] {
            self.trailing = Some((at, self.len.saturating_sub(at)));
            return Ok(());
        }
        file.seek(SeekFrom::Start(at))?;
        self.second_at.get_or_insert(at);
        self.decoder = Some(flate2::bufread::GzDecoder::new(BufReader::with_capacity(1 << 16, file)));
        Ok(())
    }
}

impl Read for GzMembers {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(decoder) = self.decoder.as_mut() {
            let n = decoder.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            let Some(decoder) = self.decoder.take() else { break };
            self.members += 1;
            self.next_member(decoder.into_inner())?;
        }
        Ok(0)
    }
}

fn read_jsonl(
    dir: &Path,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    let layout = jsonl_layout(dir)?;
    for (path, reason) in layout.foreign {
        let reason = format!("{reason}: not read, so what it holds is not verified");
        each(Unread::stored(UnreadKind::UnreadFile, path.display().to_string(), reason))?;
    }
    for (_, _, files) in layout.partitions {
        let newest = files.last().cloned();
        for path in files {
            // Only the newest plain file is ever appended to: only it can end in a torn line.
            let appendable = Some(&path) == newest.as_ref() && !compressed(&path);
            read_jsonl_file(&path, appendable, filter, each)?;
        }
    }
    Ok(())
}

/// One file of a JSONL sink, line by line (every member of a compressed file); what is not as
/// the sink writes it goes to `each` as [`Stored::Unread`].
fn read_jsonl_file(
    path: &Path,
    appendable: bool,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    let location = || path.display().to_string();
    let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len())));
    let (file, len) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let reason = format!("could not be opened ({e}): not read, so what it holds is not verified");
            return each(Unread::stored(UnreadKind::UnreadFile, location(), reason));
        }
    };
    if !compressed(path) {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        if let (lines, Some(e)) = jsonl_lines(&mut reader, path, appendable, filter, each)? {
            let reason = format!("could not be read after line {lines} ({e}): the rest is not verified");
            each(Unread::stored(UnreadKind::UnreadFile, location(), reason))?;
        }
        return Ok(());
    }
    if len == 0 {
        let reason = "an empty file, not a gzip stream (the sink renames a .gz into place once complete)".into();
        return each(Unread::stored(UnreadKind::DamagedFile, location(), reason));
    }
    let mut reader = BufReader::with_capacity(1 << 20, GzMembers::new(file, len));
    if let (lines, Some(e)) = jsonl_lines(&mut reader, path, false, filter, each)? {
        let reason = format!(
            "the gzip stream is damaged after line {lines} ({e}): the rest of the file is not read, so not verified"
        );
        each(Unread::stored(UnreadKind::DamagedFile, location(), reason))?;
    }
    let gz = reader.get_ref();
    if let (true, Some(at)) = (gz.members > 1, gz.second_at) {
        let reason = format!(
            "{} gzip members, the second from byte {at}: the sink writes one and never appends to a compressed \
             file, so it was written again after it was closed (every member was read and verified, as gzip tools \
             read them)",
            gz.members
        );
        each(Unread::stored(UnreadKind::ExtraGzipMember, location(), reason))?;
    }
    if let Some((at, n)) = gz.trailing {
        let reason =
            format!("{n} bytes after the gzip stream, from byte {at}, that are not gzip: not read, so not verified");
        each(Unread::stored(UnreadKind::TrailingBytes, location(), reason))?;
    }
    Ok(())
}

/// Hands every line of `reader` to `each` as what it stores; returns how many lines were read,
/// and the read error that ended the file early, if one did.
fn jsonl_lines<R: Read>(
    reader: &mut BufReader<R>,
    path: &Path,
    appendable: bool,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<(usize, Option<std::io::Error>)> {
    let mut line = Vec::with_capacity(4096);
    let mut number = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok((number, None)),
            Ok(_) => {}
            Err(e) => return Ok((number, Some(e))),
        }
        number += 1;
        let (text, complete) = match line.strip_suffix(b"\n") {
            Some(text) => (text, true),
            None => (&line[..], false),
        };
        jsonl_line(path, number, text, appendable && !complete, filter, each)?;
    }
}

/// One line of a JSONL sink file: an event, a checkpoint, or what it is instead (`torn`: the
/// last line of the newest plain file, without its newline).
fn jsonl_line(
    path: &Path,
    number: usize,
    line: &[u8],
    torn: bool,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    // Only `event` or `checkpoint` is kept (partition and offset are skipped, not built).
    #[derive(serde::Deserialize)]
    struct Line {
        event: Option<Value>,
        checkpoint: Option<Value>,
    }
    if filter.hashes_only {
        if let Some(stored) = sink_line::hashed_line(line, filter) {
            return match stored {
                Some(stored) => each(stored),
                None => Ok(()),
            };
        }
    }
    let location = || format!("{}:{number}", path.display());
    let unreadable = |reason: String| Unread::stored(UnreadKind::Unreadable, location(), reason);
    if line.is_empty() {
        return each(unreadable("an empty line (the sink never writes one)".into()));
    }
    match serde_json::from_slice::<Line>(line) {
        Err(e) if torn => {
            let reason = format!(
                "the newest file's last line ends without its newline and does not decode ({e}): a write a crash \
                 cut short, which the sink cuts when it starts again and then writes anew; not verified"
            );
            each(Unread::stored(UnreadKind::TornLine, location(), reason))
        }
        Err(e) => each(unreadable(format!("not a JSON line of the sink ({e}): not verified"))),
        Ok(Line { event: Some(event), checkpoint: None }) => {
            if let Some(field) = missing_link_field(&event) {
                let reason = format!("an event without a valid {field}: not verified");
                return each(Unread::event(location(), &event, reason));
            }
            if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
                return Ok(());
            }
            if let Err(why) = sink_line::sink_event_text(line) {
                let reason = format!(
                    "the line is not byte for byte what the sink writes ({why}): readers of the file may see other \
                     content than the canonical form that was hashed; the event is verified as it parses"
                );
                each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
            }
            each(Stored::Event(event))
        }
        Ok(Line { event: None, checkpoint: Some(c) }) => match Stored::checkpoint(c, location) {
            Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => Ok(()),
            stored => each(stored),
        },
        Ok(_) => each(unreadable("neither an \"event\" nor a \"checkpoint\" line: not verified".into())),
    }
}

/// Rows of the SQL sinks' `audit_events` table: the link columns, the content only where it is
/// wanted, the source offset and `receivedAt` as text, the row's Kafka position, then
/// [`QUERY_COLUMNS`] and `occurred_at` (as text).
const SQL_COLUMNS: &str = "chain, seq, prev_hash, hash, event_id";

/// The query columns a row holds beside its event, each the event's field of the same meaning
/// (`occurred_at` and `received_at` follow them as text).
const QUERY_COLUMNS: &str = "tenant_id, action, outcome, actor_type, actor_id, target_type, target_id";

/// Each query column and the event field it must equal (the link columns are compared too).
const COLUMN_FIELDS: [(&str, &[&str]); 9] = [
    ("tenant_id", &["context", "tenantId"]),
    ("action", &["action"]),
    ("outcome", &["outcome"]),
    ("actor_type", &["actor", "type"]),
    ("actor_id", &["actor", "id"]),
    ("target_type", &["target", "type"]),
    ("target_id", &["target", "id"]),
    ("occurred_at", &["context", "occurredAt"]),
    ("received_at", &["receivedAt"]),
];

/// One `audit_events` row, each column as it decoded (`Err`: why it did not). A writer with the
/// database's password can put anything into a column (SQLite keeps any type in any column).
struct SqlRow {
    chain: Result<String, String>,
    seq: Result<i64, String>,
    prev_hash: Result<String, String>,
    hash: Result<String, String>,
    event_id: Result<String, String>,
    /// The event as text where it is wanted (`Ok(None)`: another tenant's).
    content: Result<Option<String>, String>,
    source_offset: Option<i64>,
    received_at: Option<String>,
    /// `(kafka_partition, kafka_offset)`.
    position: Option<(i64, i64)>,
    /// The values of [`COLUMN_FIELDS`]' columns, in that order, as text (`Err`: does not decode).
    columns: Vec<Result<Option<String>, String>>,
}

impl SqlRow {
    /// Decodes the columns of [`SQL_COLUMNS`] and the four that follow, one by one.
    fn read<R>(row: &R) -> SqlRow
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        fn column<'r, R, T>(row: &'r R, i: usize) -> Result<T, String>
        where
            R: sqlx::Row,
            usize: sqlx::ColumnIndex<R>,
            T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            row.try_get(i).map_err(|e| e.to_string())
        }
        let text = |i| column::<R, Option<String>>(row, i).ok().flatten();
        SqlRow {
            chain: column(row, 0),
            seq: column(row, 1),
            prev_hash: column(row, 2),
            hash: column(row, 3),
            event_id: column(row, 4),
            content: column(row, 5),
            source_offset: text(6).and_then(|t| t.parse().ok()),
            received_at: text(7),
            position: column::<R, i64>(row, 8).ok().zip(column::<R, i64>(row, 9).ok()),
            // tenant_id .. target_id, occurred_at, then received_at (read above as column 7).
            columns: (10..18).chain([7]).map(|i| column::<R, Option<String>>(row, i)).collect(),
        }
    }

    /// What the row stores: an event; or, when its content does not decode, that finding and its
    /// link columns in its place (so the chain around it still links); or only that finding
    /// when even the link columns do not decode.
    /// `form`: how the store keeps the event's text (SQLite: the canonical bytes; PostgreSQL:
    /// `jsonb`'s output).
    fn stored(
        self,
        form: audit_schema::canonical::TextForm,
        each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
    ) -> anyhow::Result<()> {
        let SqlRow { chain, seq, prev_hash, hash, event_id, content, source_offset, received_at, position, columns } =
            self;
        let location = match position {
            Some((p, o)) => format!("audit_events row of Kafka partition {p} offset {o}"),
            None => "audit_events row".to_owned(),
        };
        let seq = seq.and_then(|s| u64::try_from(s).map_err(|_| format!("negative: {s}")));
        let unreadable = |chain: Option<String>, seq: Option<u64>, event_id: Option<String>, reason: String| {
            Stored::Unread(Box::new(Unread {
                kind: UnreadKind::Unreadable,
                location: location.clone(),
                chain,
                seq,
                event_id,
                reason,
            }))
        };
        let link = match (chain, seq, prev_hash, hash, event_id) {
            (Ok(chain), Ok(seq), Ok(prev_hash), Ok(hash), Ok(event_id)) => {
                LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, received_at, tenant: None }
            }
            (chain, seq, prev_hash, hash, event_id) => {
                let why = [
                    ("chain", chain.as_ref().err()),
                    ("seq", seq.as_ref().err()),
                    ("prev_hash", prev_hash.as_ref().err()),
                    ("hash", hash.as_ref().err()),
                    ("event_id", event_id.as_ref().err()),
                ]
                .into_iter()
                .filter_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
                let reason = format!("its link columns do not decode ({why}): not verified");
                return each(unreadable(chain.ok(), seq.ok(), event_id.ok(), reason));
            }
        };
        let mut strict = Ok(());
        let content = match content {
            Ok(None) => return each(Stored::Link(link)),
            Ok(Some(text)) => {
                strict = audit_schema::canonical::check_text(text.as_bytes(), form);
                serde_json::from_str::<Value>(&text).map_err(|e| format!("is not JSON ({e})"))
            }
            Err(e) => Err(format!("does not decode ({e})")),
        };
        let problem = match content {
            Ok(event) => match missing_link_field(&event) {
                None => {
                    if let Err(e) = strict {
                        let what = match form {
                            audit_schema::canonical::TextForm::Canonical => {
                                "the canonical form the processor published"
                            }
                            audit_schema::canonical::TextForm::Jsonb => "jsonb's output of the canonical form",
                        };
                        let reason = format!(
                            "the event column is not {what} (at {e}): readers of the column may see other content \
                             than what was hashed; the event is verified as it parses"
                        );
                        each(Unread::about(UnreadKind::NonCanonical, location.clone(), &event, reason))?;
                    }
                    let exact_times = form == audit_schema::canonical::TextForm::Canonical;
                    let wrong = column_mismatches(&event, &link, &columns, exact_times);
                    if !wrong.is_empty() {
                        let reason = format!(
                            "query columns differ from the hashed event: {}; queries, export and --tenant on those \
                             columns see other values than the verified content",
                            wrong.join("; ")
                        );
                        each(Unread::about(UnreadKind::ColumnMismatch, location.clone(), &event, reason))?;
                    }
                    return each(Stored::Event(event));
                }
                Some(field) => format!("has no valid {field}"),
            },
            Err(e) => e,
        };
        let reason = format!(
            "the event column {problem}: its content is not verified (its link columns stand in for it in the chain)"
        );
        each(unreadable(Some(link.chain.clone()), Some(link.seq), Some(link.event_id.clone()), reason))?;
        each(Stored::Link(link))
    }
}

/// The columns of a row that differ from its hashed event, each as `column "value" ≠ event's
/// "value"`. `exact_times`: the times are stored as the event's text (SQLite); otherwise as
/// instants to the microsecond (PostgreSQL `timestamptz`).
fn column_mismatches(
    event: &Value,
    link: &LinkOnly,
    columns: &[Result<Option<String>, String>],
    exact_times: bool,
) -> Vec<String> {
    let field = |path: &[&str]| path.iter().try_fold(event, |v, key| v.get(key));
    let text = |path: &[&str]| field(path).and_then(Value::as_str);
    let mut wrong = Vec::new();
    let integrity = |name: &str| text(&["integrity", name]);
    let links = [
        ("chain", Some(link.chain.as_str()), integrity("chain")),
        ("prev_hash", Some(link.prev_hash.as_str()), integrity("prevHash")),
        ("hash", Some(link.hash.as_str()), integrity("hash")),
        ("event_id", Some(link.event_id.as_str()), text(&["eventId"])),
    ];
    for (name, column, content) in links {
        if column != content {
            wrong.push(format!("{name} {column:?} ≠ event's {content:?}"));
        }
    }
    let seq = field(&["integrity", "seq"]).and_then(Value::as_u64);
    if seq != Some(link.seq) {
        wrong.push(format!("seq {} ≠ event's {seq:?}", link.seq));
    }
    for ((name, path), column) in COLUMN_FIELDS.iter().zip(columns) {
        let content = text(path);
        let equal = match column {
            Err(e) => {
                wrong.push(format!("{name} does not decode ({e})"));
                continue;
            }
            Ok(column) if !exact_times && name.ends_with("_at") => match (column.as_deref(), content) {
                (Some(c), Some(e)) => same_instant(c, e),
                (c, e) => c == e,
            },
            Ok(column) => column.as_deref() == content,
        };
        if !equal {
            wrong.push(format!("{name} {:?} ≠ event's {content:?}", column.as_ref().ok().cloned().flatten()));
        }
    }
    wrong
}

/// Two RFC 3339 times name the same instant to the microsecond (`timestamptz`'s precision).
fn same_instant(column: &str, event: &str) -> bool {
    let nanos =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().and_then(|t| t.timestamp_nanos_opt()).map(i128::from);
    matches!((nanos(column), nanos(event)), (Some(c), Some(e)) if (c - e).abs() < 1_000)
}

/// The columns of `audit_checkpoints` read beside the signed checkpoint, in this order after it:
/// what people query must be what was signed.
const CHECKPOINT_COLUMNS: [&str; 5] = ["chain", "seq", "hash", "key_id", "signature"];

/// A row of an `audit_checkpoints` table: its signed checkpoint, as stored (one that does not
/// decode is reported as what it is), and a `column_mismatch` when a column says something else
/// than the signed checkpoint. Rows are chosen by the signed chain, never by the column.
fn checkpoint_row<R>(
    row: &R,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let origin = || "a row of audit_checkpoints".to_owned();
    let text = match row.try_get::<String, _>(0) {
        Ok(text) => text,
        Err(e) => return each(Stored::BadCheckpoint { origin: origin(), reason: e.to_string() }),
    };
    let checkpoint = match Checkpoint::from_json(text.as_bytes()) {
        Ok(c) => c,
        Err(e) => return each(Stored::BadCheckpoint { origin: origin(), reason: e.to_string() }),
    };
    if filter.chain.as_deref().is_some_and(|chain| chain != checkpoint.chain) {
        return Ok(());
    }
    let column = |i: usize| row.try_get::<String, _>(i).ok();
    let columns = [column(1), row.try_get::<i64, _>(2).ok().map(|n| n.to_string()), column(3), column(4), column(5)];
    let signed = [
        checkpoint.chain.clone(),
        checkpoint.seq.to_string(),
        checkpoint.hash.clone(),
        checkpoint.key_id.clone(),
        checkpoint.signature.clone(),
    ];
    let differ: Vec<String> = CHECKPOINT_COLUMNS
        .iter()
        .zip(columns.iter().zip(&signed))
        .filter(|(_, (column, signed))| column.as_deref() != Some(signed.as_str()))
        .map(|(name, (column, _))| format!("{name} = {}", column.as_deref().map_or("?".into(), |c| format!("{c:?}"))))
        .collect();
    if !differ.is_empty() {
        each(Stored::Unread(Box::new(Unread {
            kind: UnreadKind::ColumnMismatch,
            location: format!("audit_checkpoints row of chain {:?} seq {}", checkpoint.chain, checkpoint.seq),
            chain: Some(checkpoint.chain.clone()),
            seq: Some(checkpoint.seq),
            event_id: None,
            reason: format!(
                "the row's {} differ from its signed checkpoint: queries by those columns see another checkpoint than the one verified",
                differ.join(", ")
            ),
        })))?;
    }
    each(Stored::Checkpoint(Box::new(checkpoint)))
}

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
        let mut rows = sqlx::query(
            "SELECT checkpoint::text, chain, seq::int8, hash, key_id, signature FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch(&mut conn);
        while let Some(row) = rows.try_next().await.context("reading audit_checkpoints from PostgreSQL")? {
            checkpoint_row(&row, filter, each)?;
        }
    }
    // The source offset as text: a cast in SQL would fail the whole query on one edited event.
    // The content of a row is handed over when the tenant column or the content itself names the
    // tenant: the database reads every row's tenant from its content, so editing the tenant column
    // does not take a row out of its tenant's verification (and only links leave the database for
    // the others).
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN $1::text IS NULL OR tenant_id = $1 OR event #>> '{{context,tenantId}}' = $1 \
         THEN event::text END, \
         event #>> '{{integrity,source,offset}}', to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         kafka_partition::int8, kafka_offset, {QUERY_COLUMNS}, \
         to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM audit_events WHERE $2::text IS NULL OR chain = $2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) = rows.try_next().await.context("reading audit_events from PostgreSQL")? {
        SqlRow::read(&row).stored(audit_schema::canonical::TextForm::Jsonb, each)?;
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
        let mut rows = sqlx::query(
            "SELECT checkpoint, CAST(chain AS TEXT), CAST(seq AS INTEGER), CAST(hash AS TEXT), CAST(key_id AS TEXT), \
             CAST(signature AS TEXT) FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch(&mut conn);
        while let Some(row) =
            rows.try_next().await.with_context(|| format!("reading audit_checkpoints from {}", path.display()))?
        {
            checkpoint_row(&row, filter, each)?;
        }
    }
    // json_extract fails the whole query on text that is not JSON: only valid JSON is asked.
    // As for PostgreSQL, the tenant is also read from the content (and a row whose content is not
    // JSON is handed over to every tenant: whose it is cannot be told).
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN ?1 IS NULL OR tenant_id = ?1 THEN event WHEN NOT json_valid(event) THEN event \
         WHEN json_extract(event, '$.context.tenantId') = ?1 THEN event END, \
         CASE WHEN json_valid(event) THEN CAST(json_extract(event, '$.integrity.source.offset') AS TEXT) END, \
         received_at, kafka_partition, kafka_offset, {QUERY_COLUMNS}, occurred_at \
         FROM audit_events WHERE ?2 IS NULL OR chain = ?2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) =
        rows.try_next().await.with_context(|| format!("reading audit_events from {}", path.display()))?
    {
        SqlRow::read(&row).stored(audit_schema::canonical::TextForm::Canonical, each)?;
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
        let raw_id = document.remove("_id");
        let id = raw_id.as_ref().map(ToString::to_string).unwrap_or_default();
        let event: Value = mongodb::bson::Bson::Document(document).into_relaxed_extjson();
        match missing_link_field(&event) {
            None => {
                let location = || format!("{collection} document {id}");
                if let Some(why) = not_as_written(&event, &mut String::new()) {
                    let reason = format!(
                        "the document is not what the sink writes of the canonical event ({why}): readers of the \
                         collection may see other content than what was hashed; the event is verified as it converts"
                    );
                    each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
                }
                let event_id = event.get("eventId").and_then(Value::as_str);
                if raw_id.as_ref().and_then(|id| id.as_str()) != event_id {
                    let reason = format!("_id {id} ≠ event's eventId {event_id:?}: lookups by _id see another event");
                    each(Unread::about(UnreadKind::ColumnMismatch, location(), &event, reason))?;
                }
                each(Stored::Event(event))?;
            }
            Some(field) => {
                let reason = format!("an event without a valid {field}: not verified");
                each(Unread::event(format!("{collection} document {id}"), &event, reason))?;
            }
        }
    }
    Ok(())
}

/// What in a MongoDB event document the sink never writes of a canonical event: a member whose
/// name starts with `$` (extended JSON reads it as a type: `$numberLong`, `$date`...; and every BSON
/// type the sink does not write converts to one), or a whole number stored as a double (the sink
/// writes the integers of canonical JSON as integers: a double is a number alias). `path` is
/// scratch space for the member's path. Duplicate member names cannot be seen: the driver keeps
/// the last.
fn not_as_written(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                if key.starts_with('$') {
                    return Some(format!("a member named {key:?} at {path}"));
                }
                let found = not_as_written(v, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(|v| not_as_written(v, path)),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.2e18)
            .map(|f| format!("the whole number {f} stored as a double at {path}")),
        _ => None,
    }
}

async fn read_kafka(
    brokers: &str,
    topic: &str,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use rdkafka::Message as _;
    crate::kafka::scan_topic(brokers, topic, &mut |message| {
        let location = || format!("{topic}/{} offset {}", message.partition(), message.offset());
        let Some(payload) = message.payload() else {
            let reason = "a record without a payload (the processor never publishes one): not verified".into();
            return each(Unread::stored(UnreadKind::Unreadable, location(), reason));
        };
        if crate::kafka::is_checkpoint(message) {
            return match stored_checkpoint(payload, location) {
                Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => Ok(()),
                stored => each(stored),
            };
        }
        let json = audit_schema::WireFormat::detect(payload) == audit_schema::WireFormat::Json;
        let strict = if json {
            audit_schema::canonical::check_text(payload, audit_schema::canonical::TextForm::Canonical)
        } else {
            Ok(())
        };
        let event = match audit_schema::codec::event_value(payload) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("not a processed event ({e}): not verified");
                return each(Unread::stored(UnreadKind::Unreadable, location(), reason));
            }
        };
        if let Some(field) = missing_link_field(&event) {
            return each(Unread::event(location(), &event, format!("an event without a valid {field}: not verified")));
        }
        if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
            return Ok(());
        }
        if let Err(e) = strict {
            let reason = format!(
                "the record's payload is not the canonical form the processor publishes (at {e}): consumers of the \
                 topic may read other content than what was hashed; the event is verified as it parses"
            );
            each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
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

    /// Reads `dir` as a JSONL source: the kinds of what was not read as an event or checkpoint,
    /// and how many lines were read as checkpoints (good or bad).
    fn read_dir(dir: &Path) -> (Vec<(&'static str, String)>, usize) {
        let mut unread = Vec::new();
        let mut checkpoints = 0;
        read_jsonl(dir, &ReadFilter::default(), &mut |stored| {
            match stored {
                Stored::Unread(u) => unread.push((u.kind.as_str(), u.location)),
                Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } => checkpoints += 1,
                other => panic!("{other:?}"),
            }
            Ok(())
        })
        .unwrap();
        (unread, checkpoints)
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    const LINE: &[u8] = b"{\"partition\":0,\"offset\":0,\"checkpoint\":{}}\n";

    #[test]
    fn only_the_sinks_names_are_read_and_every_other_entry_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        std::fs::create_dir_all(dir.path().join("partition-01")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(p0.join("00000000000000000000.jsonl"), LINE).unwrap();
        // A compression under way: its plain file is read, the .tmp is not reported.
        std::fs::write(p0.join("00000000000000000000.jsonl.gz.tmp"), b"partial").unwrap();
        std::fs::write(p0.join("00000000000000000007.jsonl.gz.tmp"), b"orphan").unwrap();
        std::fs::write(p0.join("7.jsonl"), LINE).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        let names: Vec<_> = unread
            .iter()
            .map(|(k, l)| (*k, Path::new(l).file_name().unwrap().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                ("unread_file", "notes.txt".to_owned()),
                ("unread_file", "00000000000000000007.jsonl.gz.tmp".to_owned()),
                ("unread_file", "7.jsonl".to_owned()),
                ("unread_file", "partition-01".to_owned()),
            ]
        );
        assert_eq!(checkpoints, 1);
    }

    #[test]
    fn every_gzip_member_is_read_and_more_than_one_or_trailing_bytes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        let file = p0.join("00000000000000000000.jsonl.gz");
        std::fs::write(&file, gzip(&LINE.repeat(3))).unwrap();
        assert_eq!(read_dir(dir.path()), (vec![], 3), "one member, as the sink writes it");

        let mut two = gzip(&LINE.repeat(3));
        two.extend(gzip(&LINE.repeat(2)));
        std::fs::write(&file, &two).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        assert_eq!((unread.iter().map(|u| u.0).collect::<Vec<_>>(), checkpoints), (vec!["extra_gzip_member"], 5));

        let mut trailing = gzip(&LINE.repeat(3));
        trailing.extend(b"\x1f");
        std::fs::write(&file, &trailing).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        assert_eq!((unread.iter().map(|u| u.0).collect::<Vec<_>>(), checkpoints), (vec!["trailing_bytes"], 3));

        let whole = gzip(&LINE.repeat(3));
        std::fs::write(&file, &whole[..whole.len() - 4]).unwrap();
        let (unread, _) = read_dir(dir.path());
        assert_eq!(unread.iter().map(|u| u.0).collect::<Vec<_>>(), vec!["damaged_file"]);
    }

    #[test]
    fn a_torn_line_is_one_only_at_the_end_of_the_newest_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        let torn = [LINE, &LINE[..10]].concat();
        std::fs::write(p0.join("00000000000000000000.jsonl"), &torn).unwrap();
        std::fs::write(p0.join("00000000000000000001.jsonl"), &torn).unwrap();
        let (unread, _) = read_dir(dir.path());
        let kinds: Vec<_> = unread.iter().map(|(k, l)| (*k, l.rsplit('/').next().unwrap().to_owned())).collect();
        assert_eq!(
            kinds,
            [
                ("unreadable", "00000000000000000000.jsonl:2".to_owned()),
                ("torn_line", "00000000000000000001.jsonl:2".to_owned())
            ]
        );
    }

    #[test]
    fn a_source_never_prints_its_password() {
        let s: Source = "postgres://audit:s3cret@db:5432/audit".parse().unwrap();
        assert_eq!(s.to_string(), "postgres://audit:***@db:5432/audit");
        let s: Source = "mongodb://u:pw@h/db#c".parse().unwrap();
        assert_eq!(s.to_string(), "mongodb://u:***@h/db#c");
    }
}
