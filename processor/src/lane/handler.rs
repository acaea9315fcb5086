//! The processor's lane handler: each lane starts at its chain's processed tail, runs the
//! pipeline over its raw partition's records in order on a blocking thread, publishes the
//! results, signs checkpoints of its head, and on release waits for its deliveries and signs
//! its head as final. In `exactly_once` a lane's start first initializes its transactional
//! producer (fencing the partition's previous owner) and only then reads the tail; the lane
//! commits its transaction when due and at its release.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use audit_kafka::lanes::{Lane, LaneHandler, RecvTimeout, StartAt, StartError, Stop};
use audit_schema::chain::{chain_name, ChainHead};
use audit_schema::wire::headers;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::publish::{unsupported, LaneOutput, Publisher, MAX_TRACEPARENT_BYTES};
use super::tail::{Recovered, TailError, TailReader};
use super::transaction::{LaneTransactions, TxnError};
use crate::checkpoints::{Checkpointer, Due, LaneMark};
use crate::metrics::ProcessorMetrics;
use crate::pipeline::{Pipeline, RawRecord};
use crate::settings::Settings;

/// Most records a lane takes from its queue at once (one span each).
const BATCH: usize = 256;

/// How long a full lane may take no record before it is reported stuck (its deliveries do not
/// get through): its partition is then simply not read, while the poll loop keeps serving the
/// group.
const LANE_STALL: Duration = Duration::from_secs(2);

/// What every lane of the processor shares.
#[derive(Debug)]
pub(super) struct ProcessorLanes {
    pub(super) settings: Settings,
    pub(super) pipeline: Pipeline,
    pub(super) metrics: ProcessorMetrics,
    pub(super) publisher: Publisher,
    pub(super) tail: TailReader,
    pub(super) checkpoints: Option<Checkpointer>,
    /// Per partition, what [`LaneHandler::start`] recovered from the processed tail, for the
    /// partition's lane to continue from.
    pub(super) recovered: Mutex<BTreeMap<i32, Recovered>>,
    /// Per partition, the lane's output, until [`LaneHandler::release`] has finished it.
    pub(super) outputs: Mutex<BTreeMap<i32, Arc<LaneOutput>>>,
    /// `exactly_once`: per partition, the transactional producer [`LaneHandler::start`]
    /// initialized, for the partition's lane.
    pub(super) transactions: Mutex<BTreeMap<i32, LaneTransactions>>,
}

/// How long a lane's commit may take before its transaction is aborted: a slow broker (deliveries
/// held back) delays the lane, as in `idempotent` mode, until shortly before the broker itself
/// would abort the transaction (`transaction.timeout.ms`, 60 s).
const COMMIT_PATIENCE: Duration = Duration::from_secs(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LaneHandler for ProcessorLanes {
    /// The raw offset after the newest event in the partition's processed tail (its chain head is
    /// kept for the lane).
    fn start(&self, partition: i32) -> Result<StartAt, StartError> {
        // Fence the previous owner first: once its open transaction is ended, the tail read
        // next is final (read_committed).
        if let Some(init) = self.publisher.lane_transactions(partition) {
            let txn = init.map_err(|e| match e {
                TxnError::Unsupported(m) => StartError::Fatal(unsupported(&m)),
                other => StartError::Unavailable(format!(
                    "raw partition {partition}: its transactional producer could not be initialized ({other}); a broker whose transaction coordinator never answers does not support transactions: see kafka.processing_guarantee"
                )),
            })?;
            tracing::info!(partition, transactional_id = %txn.id, "lane producer initialized; the partition's previous owner is fenced");
            lock(&self.transactions).insert(partition, txn);
        }
        match self.tail.recover(partition) {
            Ok(recovered) => {
                let start = recovered.start;
                tracing::info!(pid = std::process::id(), partition, seq = recovered.head.seq, next_raw_offset = ?start,
                    "lane resumes at the processed tail");
                lock(&self.recovered).insert(partition, recovered);
                Ok(start)
            }
            // The cluster did not answer for the tail (a leader moving, a broker down): the
            // engine asks again, then starts the clients again.
            Err(TailError::Unavailable(message)) => {
                Err(StartError::Unavailable(format!("the processed tail could not be read: {message}")))
            }
            Err(TailError::Broken(message)) => Err(StartError::Fatal(format!(
                "raw partition {partition}: cannot recover the chain from the processed tail: {message}"
            ))),
        }
    }

    async fn run_lane(self: Arc<Self>, lane: Lane) {
        // The pipeline is CPU-bound and the producer's queue blocks: a thread of its own.
        let partition = lane.partition;
        if let Err(error) = tokio::task::spawn_blocking(move || self.lane_loop(lane)).await {
            tracing::error!(partition, %error, "the lane failed");
        }
    }

    fn release(&self, partition: i32, deadline: tokio::time::Instant, stop: &Stop) {
        lock(&self.recovered).remove(&partition);
        lock(&self.transactions).remove(&partition);
        let Some(lane) = lock(&self.outputs).remove(&partition) else { return };
        if lane.txn.is_some() {
            self.release_transactional(&lane, deadline);
            return;
        }
        lane.wait_delivered(deadline);
        // The head this lane leaves behind, signed once delivered (and its record delivered).
        self.checkpoint(&lane, None, Due::Final);
        let left = lane.wait_delivered(deadline);
        if left > 0 {
            // Those events may still land after the partition's next owner has read the tail
            // and chained past it: drop them and start the clients afresh (the next owner,
            // maybe this process again, processes their raw records again from the tail).
            stop.interrupt(format!(
                "raw partition {partition} was released with {left} deliveries still in flight after the drain deadline (is the broker reachable?); dropping them and starting the Kafka clients again"
            ));
            self.publisher.purge();
        }
    }

    fn assigned(&self, lanes: usize) {
        self.metrics.assigned.set(lanes as i64);
    }

    fn lane_full(&self, partition: i32) {
        let Some(lane) = lock(&self.outputs).get(&partition).cloned() else { return };
        if lane.full(LANE_STALL) {
            tracing::warn!(
                partition,
                "the lane has taken no record for {LANE_STALL:?} (are its deliveries stuck?); leaving the partition unread"
            );
        }
    }

    fn lag(&self, partition: i32, records: i64) {
        self.metrics.lag.with_label_values(&[&partition.to_string()]).set(records);
    }

    fn leaving(&self) {
        self.publisher.leave();
    }
}

impl ProcessorLanes {
    /// One lane: process the records of one raw partition in order.
    fn lane_loop(&self, lane: Lane) {
        let Lane { partition, mut records, acks, stop } = lane;
        if stop.is_requested() {
            // Released before this thread started: the release is over or under way without it.
            return;
        }
        let Some(Recovered { head, prev, .. }) = lock(&self.recovered).remove(&partition) else {
            stop.fatal(format!("raw partition {partition}: its lane started without a chain head"));
            return;
        };
        let txn = lock(&self.transactions).remove(&partition);
        if txn.is_none() && self.publisher.transactional() {
            stop.fatal(format!("raw partition {partition}: its lane started without its transactional producer"));
            return;
        }
        let out = Arc::new(LaneOutput::new(partition, acks, stop, LaneMark::new(&head, prev), txn));
        lock(&self.outputs).insert(partition, out.clone());
        let mut head = head;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Wake up for the open transaction's commit, too.
            let wait =
                out.txn.as_ref().and_then(LaneTransactions::due_at).map_or(IDLE, |at| {
                    at.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), IDLE)
                });
            match records.recv_timeout(wait) {
                Ok(m) => batch.push(m),
                Err(RecvTimeout::Timeout) if !out.halted() => {
                    self.checkpoint(&out, None, Due::Scheduled);
                    if !self.commit_due(&out) {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
            while batch.len() < BATCH {
                match records.try_recv() {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            self.metrics.consumed.inc_by(batch.len() as u64);
            if out.took(batch.len()) {
                tracing::info!(partition, "the lane takes records again; its partition is read again");
            }
            let span = tracing::info_span!(
                "audit.process_batch",
                partition,
                records = batch.len(),
                first_offset = batch.first().map(Message::offset),
                last_offset = batch.last().map(Message::offset),
            );
            for m in &batch {
                let tp = audit_kafka::header(m, headers::TRACEPARENT).flatten();
                if let Some(cx) = tp.and_then(crate::telemetry::span_context) {
                    tracing_opentelemetry::OpenTelemetrySpanExt::add_link(&span, cx);
                }
            }
            let _entered = span.enter();
            for message in batch.drain(..) {
                if out.halted() || !self.process_one(&out, &message, &mut head) {
                    return;
                }
                self.checkpoint(&out, Some((&head, message.offset())), Due::Scheduled);
                if !self.commit_due(&out) {
                    return;
                }
            }
        }
    }

    /// Processes and publishes one record; false when the lane must stop.
    fn process_one(&self, lane: &Arc<LaneOutput>, message: &OwnedMessage, head: &mut ChainHead) -> bool {
        let started = Instant::now();
        let raw = RawRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            payload: message.payload(),
        };
        let processed = self.pipeline.process(&raw, head);
        self.metrics.latency.observe(started.elapsed().as_secs_f64());
        for (rule, n) in &processed.redactions.by_rule {
            self.metrics.redactions.with_label_values(&[rule]).inc_by(*n);
        }
        if processed.limits.metadata_truncated {
            self.metrics.truncations.with_label_values(&["metadata"]).inc();
        }
        if processed.limits.diff_truncated {
            self.metrics.truncations.with_label_values(&["diff"]).inc();
        }
        if let Some(dead) = &processed.dead_letter {
            self.metrics.dead_lettered.with_label_values(&[dead.class.as_str()]).inc();
            tracing::warn!(partition = raw.partition, offset = raw.offset, class = dead.class.as_str(), reason = %dead.reason, "dead letter");
            // Without transactions, the quarantine entry is published only once its dead letter
            // is delivered: a kill between the two would otherwise leave the entry in the chain
            // (the next owner resumes after it) and the raw record in no dead-letter topic. In a
            // transaction both become visible together or not at all.
            if !self.publisher.dead_letter(lane, &raw, dead, &processed.event_id)
                || (lane.txn.is_none() && !lane.wait_settled())
            {
                return false;
            }
        }
        let traceparent =
            audit_kafka::header(message, headers::TRACEPARENT).flatten().filter(|tp| tp.len() <= MAX_TRACEPARENT_BYTES);
        if !self.publisher.event(lane, &raw, &processed.event_id, &processed.encoded, traceparent) {
            return false;
        }
        self.metrics.processed.inc();
        true
    }

    /// Notes the lane's new head (`advanced`: the head and its raw offset) and signs the head when
    /// one is due and delivered ([`Due::Final`]: the lane is released, its head is signed as
    /// final). A signed checkpoint is published in the lane's processed partition, after the event
    /// it covers, then witnessed.
    fn checkpoint(&self, lane: &Arc<LaneOutput>, advanced: Option<(&ChainHead, i64)>, due: Due) {
        let Some(checkpoints) = &self.checkpoints else { return };
        let chain = || chain_name(&self.settings.config.kafka.raw_topic, lane.partition);
        // In a transaction, a checkpoint goes after the event it covers into the same or a later
        // transaction: both become visible together or not at all, and the witnesses get it
        // once it is committed.
        let acked = if lane.txn.is_some() { i64::MAX } else { lane.acks.acked() };
        let mut mark = lock(&lane.mark);
        if let Some((head, raw_offset)) = advanced {
            mark.advance(head, raw_offset);
        }
        for c in checkpoints.sign_due(&mut mark, &chain, acked, due) {
            if !self.publisher.checkpoint(lane, &c) {
                // Not in the partition: signed again at the next turn (a witness never holds a
                // checkpoint the stores cannot get).
                self.metrics.checkpoints.with_label_values(&["publish_failed"]).inc();
                tracing::warn!(
                    chain = c.chain,
                    seq = c.seq,
                    "a checkpoint could not be handed to the producer; signing it again"
                );
                mark.retry(&c);
                break;
            }
            self.metrics.checkpoints.with_label_values(&["published"]).inc();
            tracing::debug!(chain = c.chain, seq = c.seq, "checkpoint signed and published");
            match &lane.txn {
                Some(txn) => txn.witness_after_commit(c),
                None => checkpoints.witness(&c),
            }
        }
    }
}

/// Longest wait for a record before the lane looks at its checkpoints (and transaction) again.
const IDLE: Duration = Duration::from_millis(100);

impl ProcessorLanes {
    /// `exactly_once`: commits the lane's open transaction when it is due; false when the lane
    /// must stop (the transaction failed: the engine is interrupted).
    fn commit_due(&self, lane: &Arc<LaneOutput>) -> bool {
        let Some(txn) = &lane.txn else { return true };
        if txn.due_at().is_none_or(|at| at > Instant::now()) {
            return true;
        }
        match self.commit(lane, txn, COMMIT_PATIENCE, &|| lane.halted()) {
            Ok(()) => true,
            // Released while committing: the release commits it.
            Err(TxnError::Unavailable(_)) if lane.halted() => false,
            Err(error) => {
                lane.transaction_failed(error);
                false
            }
        }
    }

    /// Commits the lane's open transaction; then the raw offsets it covered are acknowledged (for
    /// lag) and its checkpoints witnessed. A failed commit is aborted: nothing of it is visible.
    fn commit(
        &self,
        lane: &LaneOutput,
        txn: &LaneTransactions,
        timeout: Duration,
        stopping: &dyn Fn() -> bool,
    ) -> Result<(), TxnError> {
        let started = Instant::now();
        let result = txn.commit(timeout, stopping);
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(committed) => {
                if let Some(offset) = committed.raw_offset {
                    lane.acks.ack(offset);
                }
                if committed.records > 0 {
                    self.metrics.transactions.with_label_values(&["committed"]).inc();
                }
                if let Some(checkpoints) = &self.checkpoints {
                    for c in &committed.checkpoints {
                        checkpoints.witness(c);
                    }
                }
                Ok(())
            }
            Err(TxnError::Unavailable(m)) if stopping() => Err(TxnError::Unavailable(m)),
            Err(error) => {
                let result = if matches!(error, TxnError::Fenced(_)) { "fenced" } else { "aborted" };
                self.metrics.transactions.with_label_values(&[result]).inc();
                tracing::warn!(partition = lane.partition, transactional_id = %txn.id, %error,
                    "transaction not committed; nothing of it is visible");
                Err(error)
            }
        }
    }

    /// `exactly_once` release: the head is signed as final into the open transaction, which is
    /// committed within `deadline`. Past it, or when the commit fails, the transaction is
    /// aborted: nothing of it is visible, so unlike the idempotent release nothing needs to be
    /// dropped from the producer and the clients need not start again; the next owner resumes
    /// from the committed tail.
    fn release_transactional(&self, lane: &Arc<LaneOutput>, deadline: tokio::time::Instant) {
        let Some(txn) = &lane.txn else { return };
        // From here on, what the producer reports (an abort's purged records) stops nothing.
        lane.release();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if lane.failed() || left.is_zero() {
            if !lane.failed() {
                tracing::warn!(
                    partition = lane.partition,
                    "released past the drain deadline; its open transaction is aborted"
                );
            }
            txn.abort(Duration::from_secs(1));
            return;
        }
        self.checkpoint(lane, None, Due::Final);
        // A commit that fails, or is not done by the deadline, is aborted: nothing of it is visible.
        let _ = self.commit(lane, txn, left, &|| false);
    }
}
