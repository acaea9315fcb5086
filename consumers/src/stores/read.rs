//! What a store's reader hands over to `auditctl verify` and `export`: every stored event of each
//! chain in the order the store keeps it (file order for JSONL, `seq` order for the databases),
//! the signed checkpoints kept beside them, and what could not be read as either.
//!
//! Nothing a store holds is skipped in silence: what a reader cannot take as an event or a
//! checkpoint (a file the JSONL sink never writes, a line or row that does not decode, bytes after
//! a gzip stream) is handed over as [`Stored::Unread`], naming where it is, for `verify` to report.

use std::error::Error as StdError;

use audit_schema::checkpoint::Checkpoint;
use serde_json::Value;

/// What a reader calls for each thing it reads, in store order; an `Err` stops the reading and
/// is what the reader returns.
pub type Each<'a, E> = dyn FnMut(Stored) -> Result<(), E> + Send + 'a;

/// A store that could not be read at all (connecting, listing, a query that failed): what was
/// being done, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct ReadError {
    context: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ReadError {
    /// A failure with nothing underneath.
    pub fn msg(context: impl Into<String>) -> ReadError {
        ReadError { context: context.into(), source: None }
    }
}

/// Names what was being done when a read failed (as `anyhow::Context` does, for a library).
pub trait ReadContext<T> {
    /// The error, with `context` as what was being done.
    fn context(self, context: impl Into<String>) -> Result<T, ReadError>;
    /// The error, with `context()` as what was being done.
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, ReadError>;
}

impl<T, E: Into<Box<dyn StdError + Send + Sync>>> ReadContext<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T, ReadError> {
        self.map_err(|e| ReadError { context: context.into(), source: Some(e.into()) })
    }

    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, ReadError> {
        self.map_err(|e| ReadError { context: context(), source: Some(e.into()) })
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
    /// A finding of `kind` at `location` about something whose chain position is unknown.
    pub fn stored(kind: UnreadKind, location: String, reason: String) -> Stored {
        Stored::Unread(Box::new(Unread { kind, location, chain: None, seq: None, event_id: None, reason }))
    }

    /// An unreadable event: its chain position taken from whatever of `event` is readable.
    pub fn event(location: String, event: &Value, reason: String) -> Stored {
        Unread::about(UnreadKind::Unreadable, location, event, reason)
    }

    /// A finding of `kind` about `event`, named by whatever of it is readable.
    pub fn about(kind: UnreadKind, location: String, event: &Value, reason: String) -> Stored {
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
pub fn missing_link_field(event: &Value) -> Option<&'static str> {
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
    pub fn checkpoint(value: Value, origin: impl FnOnce() -> String) -> Stored {
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

/// `integrity.chain` of `event`, when it has one.
pub fn chain_of(event: &Value) -> Option<&str> {
    event.get("integrity")?.get("chain")?.as_str()
}

/// A checkpoint stored as JSON text (a SQL row, a topic record), or what is wrong with it.
pub fn stored_checkpoint(json: &[u8], origin: impl FnOnce() -> String) -> Stored {
    match Checkpoint::from_json(json) {
        Ok(c) => Stored::Checkpoint(Box::new(c)),
        Err(e) => Stored::BadCheckpoint { origin: origin(), reason: e.to_string() },
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
pub fn redact_userinfo(url: &str) -> String {
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
