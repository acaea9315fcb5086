//! The contract between the shared runtime and a store.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// One processed event as a sink receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// Processed partition.
    pub partition: i32,
    /// Processed offset.
    pub offset: i64,
    /// `eventId`.
    pub event_id: String,
    /// `integrity.hash`: the event's content hash, used to tell a duplicate from a conflict.
    pub hash: String,
    /// The event, exactly as published (JSON form).
    pub event: Value,
    /// The event as text stores write it: its RFC 8785 canonical form (for JSON output, the
    /// published text itself).
    pub json: String,
}

impl SinkRecord {
    /// This record against the stored event with the same id and `stored_hash`.
    pub fn conflict_with(&self, stored_hash: impl Into<String>) -> Conflict {
        Conflict { event_id: self.event_id.clone(), stored_hash: stored_hash.into(), incoming_hash: self.hash.clone() }
    }
}

/// A signed checkpoint as a sink receives it: it travels in the processed partition after the
/// event it covers (`docs/INTEGRITY.md`), and every store keeps it beside the events so
/// `auditctl verify --public-key` can check the chain against it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    /// Processed partition.
    pub partition: i32,
    /// Processed offset.
    pub offset: i64,
    /// The checkpoint.
    pub checkpoint: audit_schema::checkpoint::Checkpoint,
    /// The checkpoint as compact JSON text (what text stores write).
    pub json: String,
}

impl CheckpointRecord {
    /// The store key: `<chain>:<seq>:<signature>` (a redelivery has the same one).
    pub fn id(&self) -> String {
        self.checkpoint.id()
    }
}

/// The same `eventId` arrived with different content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The event id.
    pub event_id: String,
    /// Hash of the stored event.
    pub stored_hash: String,
    /// Hash of the incoming event.
    pub incoming_hash: String,
}

/// What a durable write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Events newly stored.
    pub written: u64,
    /// Events already stored with the same content (absorbed).
    pub duplicates: u64,
    /// Events already stored with different content (kept for review by the store).
    pub conflicts: Vec<Conflict>,
}

/// A failed write, classified once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (connection, timeout, 5xx, 429): the lane backs off and retries.
    #[error("retriable: {reason}")]
    Retriable {
        /// Why.
        reason: String,
        /// Server-requested wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Something in the batch can never be stored: the runtime splits the batch to isolate it and
    /// sends it to the sink's dead-letter topic.
    #[error("poison: {reason}")]
    Poison {
        /// Why.
        reason: String,
    },
    /// The sink cannot work at all (bad config, authentication): the process exits non-zero.
    #[error("fatal: {reason}")]
    Fatal {
        /// Why.
        reason: String,
    },
}

impl SinkError {
    /// A retriable error.
    pub fn retriable(reason: impl Into<String>) -> Self {
        SinkError::Retriable { reason: reason.into(), retry_after: None }
    }

    /// A poison error.
    pub fn poison(reason: impl Into<String>) -> Self {
        SinkError::Poison { reason: reason.into() }
    }

    /// A fatal error.
    pub fn fatal(reason: impl Into<String>) -> Self {
        SinkError::Fatal { reason: reason.into() }
    }
}

/// A store. Writes are batches of one partition, in offset order; a write that returns `Ok` is
/// durable. Writing the same event twice must be harmless (idempotence on `eventId`).
pub trait Sink: Send + Sync + 'static {
    /// Short name for logs and metrics (`postgres`, `jsonl`...).
    fn name(&self) -> &'static str;

    /// Called when a partition is assigned, before its first write. Returns the highest offset of
    /// that partition already durably stored, when the store knows it (the runtime then skips
    /// records up to it), or `None`.
    fn prepare(&self, partition: i32) -> impl Future<Output = Result<Option<i64>, SinkError>> + Send;

    /// Stores `batch` durably.
    fn write(&self, batch: &[SinkRecord]) -> impl Future<Output = Result<WriteOutcome, SinkError>> + Send;

    /// Stores signed checkpoints durably, idempotent on [`CheckpointRecord::id`] (`written` and
    /// `duplicates` of the outcome count checkpoints). The runtime calls it in offset order
    /// with [`Sink::write`], never both for one record.
    fn write_checkpoints(
        &self,
        batch: &[CheckpointRecord],
    ) -> impl Future<Output = Result<WriteOutcome, SinkError>> + Send;
}
