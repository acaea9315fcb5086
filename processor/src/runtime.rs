//! The Kafka side: one consumer in the processor group, one ordered lane (thread) per assigned raw
//! partition, one idempotent producer, and the exactly-once chain without broker transactions.
//!
//! * On assignment of raw partition p, the lane's state is recovered from the tail of processed
//!   partition p: the last event's `(seq, hash, source.offset)`. The raw partition is assigned at
//!   `source.offset + 1`, whatever the group committed, so a restart neither repeats nor skips a raw
//!   record in the chain.
//! * The producer is idempotent with unlimited retries, so a lane's output lands in order and
//!   without gaps; a permanent delivery failure is fatal (the chain must not skip) and the process
//!   exits non-zero, to resume from the tail after a restart.
//! * Raw offsets are stored only once the processed event they produced is acknowledged; they are
//!   committed in the background and on revoke and shutdown. They serve lag monitoring; correctness
//!   comes from the processed tail.
//! * On revoke and on shutdown each lane stops taking records, waits for its in-flight deliveries,
//!   stores and commits its offset, then lets the partition go.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audit_kafka::close_consumer;
use audit_schema::chain::{chain_name, ChainHead, ChainLink};
use audit_schema::codec;
use audit_schema::wire::headers;
use audit_service::Health;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::checkpoints::Due;
use crate::client::{consumer_required, producer_required};
use crate::metrics::ProcessorMetrics;
use crate::pipeline::{Pipeline, RawRecord};
use crate::settings::Settings;

/// Why the processor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The topics are missing or shaped wrong.
    #[error("{0}")]
    Topology(String),
    /// A Kafka client could not be created or used.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A lane cannot continue (permanent delivery failure, unreadable processed tail...).
    #[error("{0}")]
    Fatal(String),
    /// Partitions were released with deliveries still in flight (the broker was unreachable past
    /// the drain deadline): they were dropped, and the Kafka clients must start afresh so that
    /// none of them can land after the partitions' next owner has read the tail.
    /// [`crate::run`] starts the clients again in the same process.
    #[error("{0}")]
    Interrupted(String),
    /// The HTTP endpoint could not start.
    #[error("http endpoint {addr}: {source}")]
    Http {
        /// Listen address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Most records a lane takes from its queue at once (one span each).
const BATCH: usize = 256;

/// Room a processed record needs beyond its event's canonical size (`limits.max_event_bytes`):
/// the integrity hash, key, headers and batch framing.
const RECORD_OVERHEAD: usize = 64 * 1024;

/// Room a dead letter needs beyond the raw record's key and payload: headers and framing.
const DEAD_LETTER_OVERHEAD: usize = 16 * 1024;

/// Smallest `max.message.bytes` the dead-letter topic must allow.
const MIN_DEAD_LETTER_TOPIC_BYTES: usize = 64 * 1024;

/// Longest raw key carried over to the processed record (a tenant id is far shorter; the
/// partition is chosen explicitly, so a longer key is left off rather than let the record grow
/// past what the topic accepts).
const MAX_KEY_BYTES: usize = 4 * 1024;

/// Longest `traceparent` header passed on (the W3C form is 55 characters).
const MAX_TRACEPARENT_BYTES: usize = 512;

/// How long the poll loop waits for room in a lane's queue before it holds the record and
/// pauses the partition (keeping the poll loop, and so the group membership, alive).
const LANE_STALL: Duration = Duration::from_secs(2);

/// Record sizes the processor may produce, from the config and the topics' `max.message.bytes`.
#[derive(Debug, Clone, Copy)]
struct RecordLimits {
    /// librdkafka `message.max.bytes` of the producer.
    producer_max: usize,
    /// Largest raw key + payload a dead letter carries; a larger record's dead letter names its
    /// source without the bytes (they stay in the raw topic, and the quarantine entry holds
    /// the payload's SHA-256).
    dead_letter_bytes: usize,
    /// librdkafka `batch.size`: a batch of several records must fit the smaller topic limit too
    /// (the broker checks whole batches; a single larger record still goes alone).
    batch_bytes: usize,
}

impl RecordLimits {
    /// Reads both topics' `max.message.bytes` (when the broker reports them) and refuses a
    /// processed topic that cannot hold the largest event the limits allow: every such event
    /// would fail delivery, stop its lane and fail again after each restart.
    fn check(settings: &Settings) -> Result<RecordLimits, RunError> {
        let k = &settings.config.kafka;
        let wait = Duration::from_secs(10);
        let topics = [k.processed_topic.as_str(), k.dead_letter_topic.as_str()];
        let limits = tokio::runtime::Handle::current()
            .block_on(audit_kafka::topics::max_message_bytes(&settings.kafka, &topics, wait))
            .unwrap_or_else(|e| topics.iter().map(|_| Err(e.to_string())).collect());
        let [processed, dead_letter_topic] = [0, 1].map(|i| match &limits[i] {
            Ok(limit) => Some(*limit),
            Err(error) => {
                // E.g. the client may describe topics but not their configs (ACLs).
                tracing::info!(%error, topic = topics[i], "the topic's max.message.bytes is unknown; relying on the configured limits");
                None
            }
        });
        let needed = settings.config.limits.max_event_bytes + RECORD_OVERHEAD;
        if let Some(limit) = processed.filter(|l| *l < needed) {
            return Err(RunError::Topology(format!(
                "processed topic {:?} accepts records up to {limit} bytes (max.message.bytes), but limits.max_event_bytes = {} needs {needed}; raise the topic's max.message.bytes or lower limits.max_event_bytes",
                k.processed_topic, settings.config.limits.max_event_bytes
            )));
        }
        if let Some(limit) = dead_letter_topic.filter(|l| *l < MIN_DEAD_LETTER_TOPIC_BYTES) {
            return Err(RunError::Topology(format!(
                "dead-letter topic {:?} accepts records up to {limit} bytes (max.message.bytes); a dead letter's headers alone need room, so it must allow at least {MIN_DEAD_LETTER_TOPIC_BYTES}",
                k.dead_letter_topic
            )));
        }
        // librdkafka's default, or more when the events or the dead-letter topic need it.
        let producer_max = needed.max(dead_letter_topic.unwrap_or(0)).clamp(1_000_000, 1_000_000_000);
        let dead_letter_bytes =
            dead_letter_topic.unwrap_or(producer_max).min(producer_max).saturating_sub(DEAD_LETTER_OVERHEAD);
        let smallest_topic = [processed, dead_letter_topic].into_iter().flatten().min().unwrap_or(usize::MAX);
        let batch_bytes = smallest_topic.min(1_000_000).saturating_sub(DEAD_LETTER_OVERHEAD);
        Ok(RecordLimits { producer_max, dead_letter_bytes, batch_bytes })
    }
}

/// What a delivery report belongs to.
#[derive(Debug)]
struct Token {
    lane: Arc<LaneState>,
    /// Raw offset whose processed event this is; `None` for a dead letter.
    raw_offset: Option<i64>,
}

#[derive(Debug)]
struct LaneState {
    partition: i32,
    stop: AtomicBool,
    in_flight: AtomicI64,
    /// Highest raw offset whose processed event was acknowledged (-1: none yet).
    acked: AtomicI64,
    /// Highest raw offset stored for commit.
    stored: AtomicI64,
    /// The lane's head and what of it is signed (checkpoints).
    mark: Mutex<crate::checkpoints::LaneMark>,
}

/// The first reason the poll loop must stop (`interrupted`: the clients are to start again, else
/// fatal). It stays set: what happens during the teardown after it (purged deliveries failing)
/// is a consequence, not a new reason.
#[derive(Debug, Default)]
struct FatalSlot(Mutex<Option<(bool, String)>>);

impl FatalSlot {
    fn set(&self, message: String) {
        self.put(false, message);
    }

    fn interrupt(&self, message: String) {
        self.put(true, message);
    }

    fn put(&self, interrupted: bool, message: String) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(error = %message, interrupted, "stopping the Kafka clients");
            *slot = Some((interrupted, message));
        }
    }

    fn get(&self) -> Option<RunError> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|(interrupted, message)| {
            if *interrupted {
                RunError::Interrupted(message.clone())
            } else {
                RunError::Fatal(message.clone())
            }
        })
    }
}

#[derive(Debug)]
struct DeliveryContext {
    fatal: Arc<FatalSlot>,
    shutting_down: Arc<AtomicBool>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        match result {
            Ok(_) => {
                if let Some(offset) = token.raw_offset {
                    token.lane.acked.fetch_max(offset, Ordering::AcqRel);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight), _))
                if self.shutting_down.load(Ordering::Relaxed) => {}
            Err((error, message)) => {
                // The lane takes no further record: nothing may be chained after the lost event.
                token.lane.stop.store(true, Ordering::Release);
                self.fatal.set(format!(
                    "permanent delivery failure to {} partition {} (raw partition {}): {error}; the chain cannot skip an event, exiting to resume from the processed tail",
                    message.topic(),
                    message.partition(),
                    token.lane.partition
                ))
            }
        }
        token.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Lane {
    state: Arc<LaneState>,
    tx: SyncSender<OwnedMessage>,
    thread: JoinHandle<()>,
    /// Records taken from the consumer while the lane's queue stayed full (the partition is
    /// paused until they are handed over).
    held: VecDeque<OwnedMessage>,
}

struct Shared {
    settings: Settings,
    pipeline: Pipeline,
    metrics: ProcessorMetrics,
    producer: ThreadedProducer<DeliveryContext>,
    lanes: Mutex<BTreeMap<i32, Lane>>,
    tail: Mutex<Option<BaseConsumer>>,
    fatal: Arc<FatalSlot>,
    limits: RecordLimits,
    checkpoints: Option<crate::checkpoints::Checkpointer>,
}

impl Shared {
    fn lanes(&self) -> MutexGuard<'_, BTreeMap<i32, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn raw_topic(&self) -> &str {
        &self.settings.config.kafka.raw_topic
    }
}

struct RebalanceContext {
    shared: Arc<Shared>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.shared.release(consumer, &partitions);
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassign after revoke");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let partitions: Vec<i32> = self.shared.lanes().keys().copied().collect();
                self.shared.release(consumer, &partitions);
                let _ = consumer.unassign();
            }
        }
    }
}

impl RebalanceContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let shared = &self.shared;
        let raw = shared.raw_topic().to_owned();
        let mut assignment = TopicPartitionList::new();
        let mut resumed = Vec::new();
        for element in tpl.elements() {
            let p = element.partition();
            match shared.recover_retrying(p) {
                Ok((head, offset, prev)) => {
                    tracing::info!(pid = std::process::id(), partition = p, seq = head.seq, next_raw_offset = ?offset, "lane resumes at the processed tail");
                    let _ = assignment.add_partition_offset(&raw, p, offset);
                    resumed.push((p, head, prev));
                }
                Err(TailError::Broken(message)) => {
                    shared
                        .fatal
                        .set(format!("raw partition {p}: cannot recover the chain from the processed tail: {message}"));
                    let _ = assignment.add_partition_offset(&raw, p, Offset::Stored);
                }
                Err(TailError::Unavailable(message)) => {
                    // The cluster did not answer for the tail (a leader moving, a broker down): the
                    // clients start again and the partition comes back in a later assignment.
                    shared.fatal.interrupt(format!(
                        "raw partition {p}: the processed tail could not be read for {}s: {message}",
                        TAIL_RETRY.as_secs()
                    ));
                    let _ = assignment.add_partition_offset(&raw, p, Offset::Stored);
                }
            }
        }
        if let Err(error) = consumer.assign(&assignment) {
            shared.fatal.set(format!("assign failed: {error}"));
            return;
        }
        // A partition paused under an earlier assignment (its lane was stuck) stays paused
        // through a rebalance; its new lane starts taking records at once.
        if let Err(error) = consumer.resume(&assignment) {
            tracing::warn!(%error, "resume after assign");
        }
        for (p, head, prev) in resumed {
            shared.start_lane(p, head, prev);
        }
        shared.metrics.assigned.set(shared.lanes().len() as i64);
    }
}

/// Why the processed tail could not give a lane its chain head.
#[derive(Debug)]
enum TailError {
    /// The cluster did not answer (no leader, a broker down, a timeout): worth asking again.
    Unavailable(String),
    /// The tail was read and the chain cannot be continued from it.
    Broken(String),
}

impl From<String> for TailError {
    fn from(message: String) -> Self {
        TailError::Broken(message)
    }
}

/// How long an assignment keeps asking an unavailable cluster for a processed tail (a leader
/// election after a broker failure takes seconds) before the clients start again.
const TAIL_RETRY: Duration = Duration::from_secs(30);

impl Shared {
    /// [`Shared::recover`], asked again while the cluster is unavailable, for [`TAIL_RETRY`].
    fn recover_retrying(&self, p: i32) -> Result<Recovered, TailError> {
        let started = Instant::now();
        loop {
            match self.recover(p) {
                Err(TailError::Unavailable(message)) if started.elapsed() < TAIL_RETRY => {
                    tracing::warn!(partition = p, error = %message, "processed tail unavailable; asking again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Reads the tail of processed partition `p`: the chain head, the raw offset to resume at, and
    /// the digest of the newest checkpoint of the chain in that tail (the next one's `prev`).
    fn recover(&self, p: i32) -> Result<Recovered, TailError> {
        let k = &self.settings.config.kafka;
        let chain = chain_name(&k.raw_topic, p);
        let mut guard = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let mut config = self.settings.kafka.client_config(&[]).map_err(|e| e.to_string())?;
            config
                .set("group.id", format!("{}.tail-reader", k.group_id))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                // The end of a partition is known from an empty fetch: do not wait for data.
                .set("fetch.wait.max.ms", "10")
                .set("auto.offset.reset", "earliest");
            *guard = Some(config.create().map_err(|e| format!("tail reader: {e}"))?);
        }
        let reader = guard.as_ref().ok_or_else(|| TailError::Broken("no tail reader".into()))?;
        let (low, high) = reader
            .fetch_watermarks(&k.processed_topic, p, Duration::from_secs(15))
            .map_err(|e| TailError::Unavailable(format!("watermarks of {} partition {p}: {e}", k.processed_topic)))?;
        if high == 0 {
            return Ok((ChainHead::genesis(chain), Offset::Beginning, None));
        }
        if high <= low {
            // Records were written and have all expired: starting the chain again at seq 1 would
            // fork it from what the sinks hold.
            return Err(TailError::Broken(format!(
                "processed partition {p} of {} is empty but has held records (offsets up to {high}): retention removed the chain's tail, so it cannot be continued; raise the processed topic's retention and restore the tail, or start a new processed topic",
                k.processed_topic
            )));
        }
        // Read from the last record to the end (records may arrive meanwhile); when the newest
        // records are not events of ours (checkpoints, foreign records), step back 1,000 at a time.
        let mut start = (high - 1).max(low);
        loop {
            if let Some(link) = read_last_event(reader, &k.processed_topic, p, start)? {
                if link.chain != chain {
                    return Err(TailError::Broken(format!(
                        "processed partition {p} holds chain {:?}, expected {chain:?}: do raw and processed topics belong together?",
                        link.chain
                    )));
                }
                if link.computed_hash != link.hash {
                    tracing::warn!(
                        partition = p,
                        seq = link.seq,
                        "the processed tail does not verify; continuing the chain from its recorded hash"
                    );
                }
                let prev = link.checkpoint.filter(|c| c.chain == chain && c.seq <= link.seq).map(|c| c.digest());
                let head = ChainHead { chain, seq: link.seq, hash: link.hash };
                return Ok((head, Offset::Offset(link.source_offset + 1), prev));
            }
            if start == low {
                return Err(TailError::Broken(format!("processed partition {p} has records but no auditstream event")));
            }
            start = (start - 1000).max(low);
        }
    }

    fn start_lane(self: &Arc<Self>, partition: i32, head: ChainHead, prev: Option<String>) {
        let state = Arc::new(LaneState {
            partition,
            stop: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            acked: AtomicI64::new(-1),
            stored: AtomicI64::new(-1),
            mark: Mutex::new(crate::checkpoints::LaneMark::new(&head, prev)),
        });
        let (tx, rx) = sync_channel(2048);
        let shared = self.clone();
        let lane_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lane-{partition}"))
            .spawn(move || shared.lane_loop(&lane_state, rx, head))
            .unwrap_or_else(|e| panic!("cannot spawn a lane thread: {e}"));
        self.lanes().insert(partition, Lane { state, tx, thread, held: VecDeque::new() });
    }

    /// Stops the lanes of `partitions`: no new records, in-flight deliveries awaited, offsets
    /// stored and committed.
    fn release<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let lanes: Vec<(i32, Lane)> = {
            let mut map = self.lanes();
            partitions.iter().filter_map(|p| map.remove(p).map(|l| (*p, l))).collect()
        };
        if lanes.is_empty() {
            return;
        }
        for (_, lane) in &lanes {
            lane.state.stop.store(true, Ordering::Release);
        }
        let deadline = Instant::now() + self.settings.drain_timeout;
        for (p, lane) in lanes {
            drop(lane.tx);
            let _ = lane.thread.join();
            while lane.state.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The head this lane leaves behind, signed once delivered (and its record delivered).
            self.checkpoint(&lane.state, None, Due::Final);
            while lane.state.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let left = lane.state.in_flight.load(Ordering::Acquire);
            if left > 0 {
                // Those events may still land after the partition's next owner has read the tail
                // and chained past it: drop them and start the clients afresh (the next owner,
                // maybe this process again, processes their raw records again from the tail).
                self.fatal.interrupt(format!(
                    "raw partition {p} was released with {left} deliveries still in flight after the drain deadline (is the broker reachable?); dropping them and starting the Kafka clients again"
                ));
                self.producer.purge(PurgeConfig::default().queue().inflight());
            }
            self.store_offset(consumer, &lane.state);
            tracing::info!(
                pid = std::process::id(),
                partition = p,
                acked_raw_offset = lane.state.acked.load(Ordering::Acquire),
                "lane released"
            );
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "commit on release");
        }
        self.metrics.assigned.set(self.lanes().len() as i64);
    }

    /// Gives a record to its lane, waiting while the lane is busy (back-pressure on the consumer)
    /// for up to [`LANE_STALL`]. A lane still full after that is stuck (its deliveries do not get
    /// through): the record is held and the partition paused, so that the poll loop goes on
    /// serving the group instead of being dropped from it with the lane still producing.
    fn hand_over<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, mut m: OwnedMessage) {
        let p = m.partition();
        let (tx, holding) = match self.lanes().get(&p) {
            Some(lane) => (lane.tx.clone(), !lane.held.is_empty()),
            // Not assigned any more: its next owner resumes from the processed tail.
            None => return,
        };
        if !holding {
            let started = Instant::now();
            loop {
                match tx.try_send(m) {
                    Ok(()) => return,
                    Err(TrySendError::Disconnected(_)) => {
                        // Gone while its partition is assigned: the lane failed (a panic).
                        self.fatal.set(format!("the lane of raw partition {p} stopped"));
                        return;
                    }
                    Err(TrySendError::Full(back)) => m = back,
                }
                if started.elapsed() >= LANE_STALL {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            tracing::warn!(
                partition = p,
                "the lane has taken no record for {LANE_STALL:?} (are its deliveries stuck?); pausing the partition"
            );
            if let Err(error) = self.pause_or_resume(consumer, p, true) {
                self.fatal.set(format!("cannot pause raw partition {p} while its lane is stuck: {error}"));
            }
        }
        // After those already held. (The pause purges what the client had fetched for the
        // partition, so in practice one record is held.)
        if let Some(lane) = self.lanes().get_mut(&p) {
            lane.held.push_back(m);
        }
    }

    /// Hands held records to their lanes as room appears and resumes the partitions whose
    /// records are all handed over; true while some are still held.
    fn hand_over_held<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> bool {
        let mut holding = false;
        for (p, lane) in self.lanes().iter_mut().filter(|(_, l)| !l.held.is_empty()) {
            while let Some(m) = lane.held.pop_front() {
                match lane.tx.try_send(m) {
                    Ok(()) => {}
                    Err(TrySendError::Full(m)) => {
                        lane.held.push_front(m);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.fatal.set(format!("the lane of raw partition {p} stopped"));
                        lane.held.clear();
                    }
                }
            }
            if lane.held.is_empty() {
                match self.pause_or_resume(consumer, *p, false) {
                    Ok(()) => tracing::info!(partition = p, "the lane takes records again; partition resumed"),
                    Err(error) => self.fatal.set(format!("cannot resume raw partition {p}: {error}")),
                }
            } else {
                holding = true;
            }
        }
        holding
    }

    /// Pauses (or resumes) raw partition `p`; the client reports a partition's own failure in the
    /// list, not in the call's result.
    fn pause_or_resume<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, p: i32, pause: bool) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.raw_topic(), p, Offset::Invalid)?;
        if pause {
            consumer.pause(&tpl)?;
        } else {
            consumer.resume(&tpl)?;
        }
        tpl.elements().first().map_or(Ok(()), |e| e.error())
    }

    fn store_offset<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, lane: &LaneState) {
        let acked = lane.acked.load(Ordering::Acquire);
        if acked > lane.stored.load(Ordering::Acquire) {
            match consumer.store_offset(self.raw_topic(), lane.partition, acked) {
                Ok(()) => lane.stored.store(acked, Ordering::Release),
                // Not owned any more: the next owner resumes from the processed tail anyway.
                Err(error) => tracing::debug!(partition = lane.partition, %error, "offset not stored"),
            }
        }
    }

    /// One lane: process the records of one raw partition in order.
    fn lane_loop(&self, state: &Arc<LaneState>, rx: Receiver<OwnedMessage>, mut head: ChainHead) {
        let mut next_expected: Option<i64> = None;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) if !state.stop.load(Ordering::Acquire) => {
                    self.checkpoint(state, None, Due::Scheduled);
                    continue;
                }
                Err(_) => return,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let span = tracing::info_span!(
                "audit.process_batch",
                partition = state.partition,
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
                if state.stop.load(Ordering::Acquire) {
                    return;
                }
                if next_expected.is_some_and(|n| message.offset() < n) {
                    continue;
                }
                next_expected = Some(message.offset() + 1);
                if !self.process_one(state, &message, &mut head) {
                    return;
                }
                self.checkpoint(state, Some((&head, message.offset())), Due::Scheduled);
            }
        }
    }

    /// Processes and publishes one record; false when the lane must stop.
    fn process_one(&self, state: &Arc<LaneState>, message: &OwnedMessage, head: &mut ChainHead) -> bool {
        let k = &self.settings.config.kafka;
        {
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
            let traceparent = audit_kafka::header(message, headers::TRACEPARENT)
                .flatten()
                .filter(|tp| tp.len() <= MAX_TRACEPARENT_BYTES)
                .map(<[u8]>::to_vec);
            if let Some(dead) = &processed.dead_letter {
                self.metrics.dead_lettered.with_label_values(&[dead.class.as_str()]).inc();
                tracing::warn!(partition = raw.partition, offset = raw.offset, class = dead.class.as_str(), reason = %dead.reason, "dead letter");
                let source_partition = raw.partition.to_string();
                let source_offset = raw.offset.to_string();
                let carried = raw.key.map_or(0, <[u8]>::len) + raw.payload.map_or(0, <[u8]>::len);
                let omitted = (carried > self.limits.dead_letter_bytes).then(|| {
                    format!("{carried} bytes of key and payload, over the dead-letter topic's record size; they stay at the source offset in the raw topic")
                });
                let mut headers = OwnedHeaders::new()
                    .insert(Header { key: headers::ERROR_CLASS, value: Some(dead.class.as_str()) })
                    .insert(Header { key: headers::ERROR_REASON, value: Some(dead.reason.as_str()) })
                    .insert(Header { key: headers::SOURCE_TOPIC, value: Some(raw.topic) })
                    .insert(Header { key: headers::SOURCE_PARTITION, value: Some(source_partition.as_str()) })
                    .insert(Header { key: headers::SOURCE_OFFSET, value: Some(source_offset.as_str()) })
                    .insert(Header { key: headers::QUARANTINE_EVENT_ID, value: Some(processed.event_id.as_str()) });
                if let Some(omitted) = &omitted {
                    headers = headers.insert(Header { key: headers::PAYLOAD_OMITTED, value: Some(omitted.as_str()) });
                }
                let token = Box::new(Token { lane: state.clone(), raw_offset: None });
                let mut record = BaseRecord::with_opaque_to(&k.dead_letter_topic, token).headers(headers);
                if omitted.is_none() {
                    if let Some(key) = raw.key {
                        record = record.key(key);
                    }
                    if let Some(payload) = raw.payload {
                        record = record.payload(payload);
                    }
                }
                if !self.send(state, record) {
                    return false;
                }
            }
            let token = Box::new(Token { lane: state.clone(), raw_offset: Some(raw.offset) });
            let mut headers =
                OwnedHeaders::new().insert(Header { key: headers::EVENT_ID, value: Some(processed.event_id.as_str()) });
            if let Some(tp) = &traceparent {
                headers = headers.insert(Header { key: headers::TRACEPARENT, value: Some(tp.as_slice()) });
            }
            let mut record = BaseRecord::with_opaque_to(&k.processed_topic, token)
                .partition(raw.partition)
                .payload(&processed.encoded[..])
                .headers(headers);
            if let Some(key) = raw.key.filter(|key| key.len() <= MAX_KEY_BYTES) {
                record = record.key(key);
            }
            if !self.send(state, record) {
                return false;
            }
            self.metrics.processed.inc();
        }
        true
    }

    /// Notes the lane's new head (`advanced`: the head and its raw offset) and signs the head when
    /// one is due and delivered ([`Due::Final`]: the lane is released, its head is signed as
    /// final). A signed checkpoint is published in the lane's processed partition, after the event
    /// it covers, then witnessed.
    fn checkpoint(&self, state: &Arc<LaneState>, advanced: Option<(&ChainHead, i64)>, due: Due) {
        let Some(checkpoints) = &self.checkpoints else { return };
        let chain = || chain_name(self.raw_topic(), state.partition);
        let acked = state.acked.load(Ordering::Acquire);
        let mut mark = state.mark.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((head, raw_offset)) = advanced {
            mark.advance(head, raw_offset);
        }
        for c in checkpoints.sign_due(&mut mark, &chain, acked, due) {
            if !self.publish_checkpoint(state, &c) {
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

    /// Sends checkpoint `c` to the lane's processed partition, marked by its `audit-record` header.
    fn publish_checkpoint(&self, state: &Arc<LaneState>, c: &audit_schema::checkpoint::Checkpoint) -> bool {
        use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
        let Ok(payload) = serde_json::to_vec(c) else { return false };
        let headers = OwnedHeaders::new().insert(Header { key: RECORD_HEADER, value: Some(RECORD_CHECKPOINT) });
        let token = Box::new(Token { lane: state.clone(), raw_offset: None });
        let record = BaseRecord::with_opaque_to(&self.settings.config.kafka.processed_topic, token)
            .partition(state.partition)
            .key(c.chain.as_bytes())
            .payload(&payload[..])
            .headers(headers);
        self.send(state, record)
    }

    /// Hands a record to the producer, waiting while its queue is full; false when the lane must stop.
    fn send(&self, state: &LaneState, mut record: BaseRecord<'_, [u8], [u8], Box<Token>>) -> bool {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match self.producer.send(record) {
                Ok(()) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if state.stop.load(Ordering::Acquire) {
                        state.in_flight.fetch_sub(1, Ordering::AcqRel);
                        return false;
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    state.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.fatal.set(format!(
                        "cannot hand a record of raw partition {} to the producer: {error}",
                        state.partition
                    ));
                    return false;
                }
            }
        }
    }
}

/// What a lane resumes from: the chain head, the raw offset after it, and the digest of the
/// newest checkpoint in the processed tail.
type Recovered = (ChainHead, Offset, Option<String>);

/// The newest event of a processed partition.
struct TailLink {
    chain: String,
    seq: u64,
    hash: String,
    computed_hash: String,
    source_offset: i64,
    /// The newest checkpoint record read (from `start` to the end), for the next one's `prev`.
    checkpoint: Option<audit_schema::checkpoint::Checkpoint>,
}

/// The last event in `topic`/`p` from `start` to the end. Records no processor wrote are passed
/// over; one of ours that cannot be read back after the last readable event is an error.
fn read_last_event(reader: &BaseConsumer, topic: &str, p: i32, start: i64) -> Result<Option<TailLink>, TailError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(start)).map_err(|e| e.to_string())?;
    reader.assign(&tpl).map_err(|e| TailError::Unavailable(format!("assign {topic}/{p}: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<TailLink> = None;
    let mut checkpoint = None;
    // A record of ours after the last readable event.
    let mut unreadable = None;
    let mut buf = Vec::new();
    loop {
        if Instant::now() > deadline {
            let _ = reader.unassign();
            return Err(TailError::Unavailable(format!(
                "reading the tail of {topic} partition {p} did not reach its end in 30 s"
            )));
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if is_checkpoint_record(&m) {
                    if let Some(c) = m.payload().and_then(|p| audit_schema::checkpoint::Checkpoint::from_json(p).ok()) {
                        checkpoint = Some(c);
                    }
                    continue;
                }
                let link = m.payload().ok_or_else(|| "no payload".to_owned()).and_then(|payload| {
                    let value = codec::event_value(payload).map_err(|e| e.to_string())?;
                    let link = ChainLink::from_value(&value, &mut buf).map_err(|e| e.to_string())?;
                    let offset = value
                        .pointer("/integrity/source/offset")
                        .and_then(serde_json::Value::as_i64)
                        .ok_or("no integrity.source.offset")?;
                    Ok((link, offset))
                });
                let (link, offset) = match link {
                    Ok(found) => found,
                    // The processor marks each event it publishes: one it cannot read back may be
                    // the chain's newest link, and continuing from an older one would fork it.
                    Err(why) if audit_kafka::header(&m, headers::EVENT_ID).is_some() => {
                        unreadable = Some(format!(
                            "record at offset {} of {topic} partition {p} was published by a processor but cannot be read back ({why}); a newer version's format, or a damaged record? Not continuing the chain from an older link",
                            m.offset()
                        ));
                        continue;
                    }
                    Err(why) => {
                        tracing::warn!(topic, partition = p, offset = m.offset(), %why, "a record in the processed topic that no processor wrote; passed over");
                        continue;
                    }
                };
                unreadable = None;
                last = Some(TailLink {
                    chain: link.chain,
                    seq: link.seq,
                    hash: link.hash,
                    computed_hash: link.computed_hash,
                    source_offset: offset,
                    checkpoint: None,
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                let _ = reader.unassign();
                return Err(TailError::Unavailable(format!("reading {topic} partition {p}: {e}")));
            }
            None => {}
        }
    }
    let _ = reader.unassign();
    match unreadable {
        Some(message) => Err(TailError::Broken(message)),
        None => Ok(last.map(|link| TailLink { checkpoint, ..link })),
    }
}

/// A signed checkpoint travelling in the processed partition (not an event of the chain).
fn is_checkpoint_record(m: &impl Message) -> bool {
    use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
    audit_kafka::header(m, RECORD_HEADER) == Some(Some(RECORD_CHECKPOINT.as_bytes()))
}

/// Checks that the three topics exist and raw and processed have the same partition count.
fn check_topology(settings: &Settings) -> Result<i32, RunError> {
    let k = &settings.config.kafka;
    let probe: BaseConsumer = settings
        .kafka
        .client_config(&[])
        .map_err(|e| RunError::Kafka(e.to_string()))?
        .create()
        .map_err(|e| RunError::Kafka(e.to_string()))?;
    let count = |topic: &str| {
        audit_kafka::topics::partition_count(probe.client(), topic, Duration::from_secs(15))
            .map_err(|e| RunError::Topology(format!("{e} (create the topics with `auditctl topics create`)")))
    };
    let raw = count(&k.raw_topic)?;
    let processed = count(&k.processed_topic)?;
    count(&k.dead_letter_topic)?;
    if raw != processed {
        return Err(RunError::Topology(format!(
            "raw topic {:?} has {raw} partitions but processed topic {:?} has {processed}; they must match, because processed partition p holds the chain of raw partition p",
            k.raw_topic, k.processed_topic
        )));
    }
    Ok(raw)
}

/// Runs the processor until `shutdown` is cancelled (then drains and commits) or a fatal error.
/// Runs on a Tokio blocking thread (it waits for the broker's admin answers on the runtime).
pub(crate) fn run_blocking(
    settings: Settings,
    metrics: ProcessorMetrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let partitions = check_topology(&settings)?;
    let limits = RecordLimits::check(&settings)?;
    tracing::info!(pid = std::process::id(), partitions, raw = %settings.config.kafka.raw_topic, processed = %settings.config.kafka.processed_topic,
        policy = %settings.policy.version(), "topics checked");
    let fatal = Arc::new(FatalSlot::default());
    let shutting_down = Arc::new(AtomicBool::new(false));

    let mut pconf = settings.kafka.client_config(&producer_required()).map_err(|e| RunError::Kafka(e.to_string()))?;
    pconf
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.max.bytes", limits.producer_max.to_string())
        .set("batch.size", limits.batch_bytes.to_string());
    let producer: ThreadedProducer<DeliveryContext> = pconf
        .create_with_context(DeliveryContext { fatal: fatal.clone(), shutting_down: shutting_down.clone() })
        .map_err(|e| RunError::Kafka(format!("producer: {e}")))?;

    let checkpoints =
        crate::checkpoints::Checkpointer::open(&settings, metrics.checkpoints.clone()).map_err(RunError::Fatal)?;
    let shared = Arc::new(Shared {
        checkpoints,
        pipeline: Pipeline::new(&settings),
        metrics,
        producer,
        lanes: Mutex::new(BTreeMap::new()),
        tail: Mutex::new(None),
        fatal: fatal.clone(),
        limits,
        settings,
    });
    let k = &shared.settings.config.kafka;
    let mut cconf = shared
        .settings
        .kafka
        .client_config(&consumer_required(k.accept_raw_loss))
        .map_err(|e| RunError::Kafka(e.to_string()))?;
    audit_kafka::lanes::GroupMember {
        group_id: k.group_id.clone(),
        session_timeout_ms: k.session_timeout_ms,
        instance_id: k.instance_id.clone(),
    }
    .apply(&mut cconf);
    let consumer: BaseConsumer<RebalanceContext> = cconf
        .create_with_context(RebalanceContext { shared: shared.clone() })
        .map_err(|e| RunError::Kafka(format!("consumer: {e}")))?;
    consumer.subscribe(&[k.raw_topic.as_str()]).map_err(|e| RunError::Kafka(format!("subscribe: {e}")))?;
    health.set_ready(true);

    let mut last_lag = Instant::now();
    let result = loop {
        health.polled();
        if let Some(error) = fatal.get() {
            break Err(error);
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let holding = shared.hand_over_held(&consumer);
        match consumer.poll(Duration::from_millis(if holding { 5 } else { 100 })) {
            Some(Ok(m)) => {
                shared.metrics.consumed.inc();
                shared.hand_over(&consumer, m.detach());
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => fatal.set(
                "a raw partition's resume offset (the processed tail's source.offset + 1, in the \"lane resumes at the processed tail\" lines) is not in the raw topic: e.g. retention removed raw records before they were processed, or the raw topic was recreated. Not skipping them silently; to continue from the earliest raw record and leave the gap for verification to report, set kafka.accept_raw_loss = true".into(),
            ),
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
        for lane in shared.lanes().values() {
            shared.store_offset(&consumer, &lane.state);
        }
        if last_lag.elapsed() > Duration::from_secs(5) {
            last_lag = Instant::now();
            for (p, lane) in shared.lanes().iter() {
                if let Ok((_, high)) = consumer.fetch_watermarks(&k.raw_topic, *p, Duration::from_millis(500)) {
                    let done = lane.state.acked.load(Ordering::Acquire) + 1;
                    shared.metrics.lag.with_label_values(&[&p.to_string()]).set((high - done).max(0));
                }
            }
        }
    };

    // Drain: stop every lane, wait for deliveries, store and commit, leave the group.
    health.set_ready(false);
    let all: Vec<i32> = shared.lanes().keys().copied().collect();
    shared.release(&consumer, &all);
    shutting_down.store(true, Ordering::Relaxed);
    // Whatever the drain did not deliver is dropped before the group is left, so that the
    // partitions' next owner is never raced by late deliveries (it resumes from the tail it reads).
    shared.producer.purge(PurgeConfig::default().queue().inflight());
    let outcome = close_consumer(consumer, Duration::from_secs(10));
    tracing::info!(?outcome, "left the consumer group");
    let _ = shared.producer.flush(Duration::from_secs(5));
    if let Some(checkpoints) = &shared.checkpoints {
        checkpoints.close(Duration::from_secs(5));
    }
    // The tail reader carries a group id (assign needs one): close it the bounded way too.
    let tail = shared.tail.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(tail) = tail {
        close_consumer(tail, Duration::from_secs(5));
    }
    result
}
