//! The processor's lane handler: each lane starts at its chain's processed tail, runs the
//! pipeline over its raw partition's records in order on a blocking thread, publishes the
//! results, signs checkpoints of its head, and on release waits for its deliveries and signs
//! its head as final.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use audit_kafka::lanes::{Lane, LaneHandler, RecvTimeout, StartAt, StartError, Stop};
use audit_schema::chain::{chain_name, ChainHead};
use audit_schema::wire::headers;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::publish::{LaneOutput, Publisher, MAX_TRACEPARENT_BYTES};
use super::tail::{Recovered, TailError, TailReader};
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LaneHandler for ProcessorLanes {
    /// The raw offset after the newest event in the partition's processed tail (its chain head is
    /// kept for the lane).
    fn start(&self, partition: i32) -> Result<StartAt, StartError> {
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
        let Some(lane) = lock(&self.outputs).remove(&partition) else { return };
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
        let out = Arc::new(LaneOutput::new(partition, acks, stop, LaneMark::new(&head, prev)));
        lock(&self.outputs).insert(partition, out.clone());
        let mut head = head;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            match records.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => batch.push(m),
                Err(RecvTimeout::Timeout) if !out.halted() => {
                    self.checkpoint(&out, None, Due::Scheduled);
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
            // The quarantine entry is published only once its dead letter is delivered: a kill
            // between the two would otherwise leave the entry in the chain (the next owner
            // resumes after it) and the raw record in no dead-letter topic.
            if !self.publisher.dead_letter(lane, &raw, dead, &processed.event_id) || !lane.wait_settled() {
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
        let acked = lane.acks.acked();
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
            checkpoints.witness(&c);
            tracing::debug!(chain = c.chain, seq = c.seq, "checkpoint signed and published");
        }
    }
}
