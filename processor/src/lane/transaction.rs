//! `processing_guarantee = "exactly_once"`: each lane writes its events, dead letters and
//! checkpoints in Kafka transactions of its own producer, whose `transactional.id` belongs to the
//! partition (`<group_id>.<processed_topic>.<partition>`).
//!
//! Why a producer per lane, not one per instance sending the group's metadata with its offsets
//! (KIP-447): the chain's state is the processed tail, not the committed offsets, and what must
//! not happen is a stale owner's records becoming visible after the next owner read that tail.
//! With the partition's own id, the next owner's `init_transactions` aborts the previous owner's
//! open transaction at once and bumps the epoch, so the previous owner can neither produce nor
//! commit afterwards, and the tail it reads next is the committed one. With one producer per
//! instance, a paused instance's open transaction (holding records of every lane it had) would
//! hold each of those partitions' last stable offset, and so every `read_committed` reader (the
//! sinks, the next owner's tail read), until `transaction.timeout.ms`; and a lane's commit would
//! wait for the others'.
//!
//! A transaction is opened by the lane's first record after a commit and committed after
//! `kafka.transaction_interval_ms` or `kafka.transaction_max_records`, whichever comes first, and
//! when the lane is released. After a commit the raw offsets it covered are acknowledged to the
//! engine (for lag: correctness comes from the committed tail) and the checkpoints it held are
//! handed to the witnesses, so a witness never holds a checkpoint of an aborted seq.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use audit_schema::checkpoint::Checkpoint;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ThreadedProducer};

use super::publish::DeliveryContext;

/// How long `init_transactions` may take at a lane's start (it waits for the previous owner's
/// open transaction to be aborted).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a commit looks whether the lane's records are all delivered.
const SETTLE_STEP: Duration = Duration::from_millis(1);

/// What a failed transactional call means for the lane.
#[derive(Debug)]
pub(super) enum TxnError {
    /// Another instance owns the partition now (fenced), or the producer cannot go on: the lane
    /// stops and this producer is never used again.
    Fenced(String),
    /// The transaction was aborted (or must be): nothing of it is visible; the lane's head is
    /// ahead of the committed tail and must be read again.
    Aborted(String),
    /// The broker did not answer in time (at start: ask again).
    Unavailable(String),
    /// The broker cannot do transactions: `processing_guarantee = "exactly_once"` cannot work.
    Unsupported(String),
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnError::Fenced(m) => write!(f, "fenced: {m}"),
            TxnError::Aborted(m) => write!(f, "aborted: {m}"),
            TxnError::Unavailable(m) => write!(f, "unavailable: {m}"),
            TxnError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

/// Classifies a transactional call's error once.
fn classify(error: &KafkaError) -> TxnError {
    let text = error.to_string();
    let code = error.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidTransactionTimeout
        )
    ) {
        return TxnError::Unsupported(text);
    }
    if matches!(
        code,
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    ) {
        return TxnError::Fenced(text);
    }
    match error {
        // rust-rdkafka flushes before it commits: a flush that timed out can be asked again.
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => TxnError::Unavailable(text),
        KafkaError::Transaction(e) if e.is_fatal() => TxnError::Fenced(text),
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnError::Aborted(text),
        KafkaError::Transaction(e) if e.is_retriable() => TxnError::Unavailable(text),
        _ => TxnError::Aborted(text),
    }
}

/// What the open transaction holds.
#[derive(Debug, Default)]
struct Open {
    /// When it was begun (`None`: no transaction is open).
    since: Option<Instant>,
    records: usize,
    /// The highest raw offset whose event (or quarantine entry) it holds.
    raw_offset: Option<i64>,
    /// Checkpoints it holds, for the witnesses once it is committed.
    checkpoints: Vec<Checkpoint>,
}

/// What a commit made visible.
#[derive(Debug, Default)]
pub(super) struct Committed {
    /// The highest raw offset covered (to acknowledge).
    pub(super) raw_offset: Option<i64>,
    /// The checkpoints it held (to witness).
    pub(super) checkpoints: Vec<Checkpoint>,
    /// Records it held.
    pub(super) records: usize,
}

/// One lane's transactional producer and its open transaction.
pub(super) struct LaneTransactions {
    pub(super) producer: ThreadedProducer<DeliveryContext>,
    pub(super) id: String,
    interval: Duration,
    max_records: usize,
    open: Mutex<Open>,
}

impl std::fmt::Debug for LaneTransactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneTransactions").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LaneTransactions {
    /// Creates the lane's producer and initializes its transactions: this fences the partition's
    /// previous owner and ends its open transaction (aborted, or committed if its commit had
    /// begun), so a `read_committed` read of the processed tail afterwards sees the final state.
    pub(super) fn init(
        config: &ClientConfig,
        context: DeliveryContext,
        id: String,
        interval: Duration,
        max_records: usize,
    ) -> Result<LaneTransactions, TxnError> {
        let producer: ThreadedProducer<DeliveryContext> =
            config.create_with_context(context).map_err(|e| TxnError::Unsupported(format!("producer {id}: {e}")))?;
        producer.init_transactions(INIT_TIMEOUT).map_err(|e| match classify(&e) {
            // A fenced or fatal init is a producer that cannot work here; a timeout is the cluster
            // (or its transaction coordinator) not answering yet.
            TxnError::Aborted(m) | TxnError::Unavailable(m) => TxnError::Unavailable(m),
            other => other,
        })?;
        Ok(LaneTransactions { producer, id, interval, max_records, open: Mutex::new(Open::default()) })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a transaction unless one is open (before a record is handed to the producer).
    pub(super) fn begin(&self) -> Result<(), TxnError> {
        let mut open = self.open();
        if open.since.is_none() {
            self.producer.begin_transaction().map_err(|e| classify(&e))?;
            open.since = Some(Instant::now());
        }
        Ok(())
    }

    /// A record was handed to the producer in the open transaction (`raw_offset`: for an event).
    pub(super) fn added(&self, raw_offset: Option<i64>) {
        let mut open = self.open();
        open.records += 1;
        if raw_offset.is_some() {
            open.raw_offset = raw_offset.max(open.raw_offset);
        }
    }

    /// A checkpoint handed to the producer in the open transaction: the witnesses get it once
    /// the transaction is committed.
    pub(super) fn witness_after_commit(&self, c: Checkpoint) {
        self.open().checkpoints.push(c);
    }

    /// When the open transaction is due for commit (`None`: none is open).
    pub(super) fn due_at(&self) -> Option<Instant> {
        let open = self.open();
        let since = open.since?;
        Some(if open.records >= self.max_records { since } else { since + self.interval })
    }

    /// Commits the open transaction within `timeout`, asking again (a second at a time) while the
    /// broker is slow to take its records, so a slow broker delays the lane instead of costing it
    /// the transaction. When `stopping()` says the lane is released meanwhile, the transaction is
    /// left open for the release to commit ([`TxnError::Unavailable`]). A failed commit is aborted
    /// here: nothing of it becomes visible.
    pub(super) fn commit(&self, timeout: Duration, stopping: &dyn Fn() -> bool) -> Result<Committed, TxnError> {
        let deadline = Instant::now() + timeout;
        let mut open = self.open();
        if open.since.is_none() {
            return Ok(Committed::default());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
            self.settle(Instant::now() + left);
            match self.producer.commit_transaction(left) {
                Ok(()) => {
                    let done = std::mem::take(&mut *open);
                    return Ok(Committed {
                        raw_offset: done.raw_offset,
                        checkpoints: done.checkpoints,
                        records: done.records,
                    });
                }
                Err(e) => match classify(&e) {
                    TxnError::Unavailable(m) if Instant::now() < deadline => {
                        if stopping() {
                            return Err(TxnError::Unavailable(m));
                        }
                    }
                    failed => {
                        *open = Open::default();
                        drop(open);
                        if !matches!(failed, TxnError::Fenced(_)) {
                            self.abort(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
                        }
                        return Err(match failed {
                            TxnError::Unavailable(m) => TxnError::Aborted(format!("commit timed out: {m}")),
                            other => other,
                        });
                    }
                },
            }
        }
    }

    /// Waits until the producer holds nothing undelivered, or `until`.
    ///
    /// rust-rdkafka's `commit_transaction` flushes first, and its flush, finding anything
    /// outstanding, polls the producer's queue in 100 ms calls that each last their whole timeout
    /// while the `ThreadedProducer`'s own thread takes the reports: a commit with one record still
    /// lingering took 100 ms (82 ms on average in the e2e bench, the lane held all that time).
    /// Here the producer's thread serves the reports and this waits in short steps, so the flush
    /// finds nothing left (a commit took ~1 ms on this broker, measured with librdkafka alone).
    fn settle(&self, until: Instant) {
        while self.producer.in_flight_count() > 0 && Instant::now() < until {
            std::thread::sleep(SETTLE_STEP);
        }
    }

    /// Aborts the open transaction (best effort: a transaction left open is aborted by the
    /// partition's next owner's `init_transactions`, or by the broker after
    /// `transaction.timeout.ms`).
    pub(super) fn abort(&self, timeout: Duration) {
        *self.open() = Open::default();
        if let Err(error) = self.producer.abort_transaction(timeout) {
            tracing::debug!(id = %self.id, %error, "abort_transaction");
            // A fenced producer cannot abort: drop what it still holds (never committed).
            self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_errors_are_classified_once() {
        let kind = |e: KafkaError| match classify(&e) {
            TxnError::Fenced(_) => "fenced",
            TxnError::Aborted(_) => "aborted",
            TxnError::Unavailable(_) => "unavailable",
            TxnError::Unsupported(_) => "unsupported",
        };
        // A flush that timed out inside a commit is asked again, not aborted.
        assert_eq!(kind(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)), "unavailable");
        for code in [RDKafkaErrorCode::ProducerFenced, RDKafkaErrorCode::InvalidProducerEpoch, RDKafkaErrorCode::Fenced]
        {
            assert_eq!(kind(KafkaError::MessageProduction(code)), "fenced", "{code:?}");
        }
        for code in [RDKafkaErrorCode::UnsupportedVersion, RDKafkaErrorCode::TransactionalIdAuthorizationFailed] {
            assert_eq!(kind(KafkaError::MessageProduction(code)), "unsupported", "{code:?}");
        }
        assert_eq!(kind(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)), "aborted");
    }
}
