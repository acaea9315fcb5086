//! The runtime every sink shares: its own consumer group on the processed topic, one ordered lane
//! per assigned partition, batches bounded by count, bytes and time, offsets stored only after the
//! batch they cover is durable, commit on revoke and shutdown, errors classified once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use audit_kafka::close_consumer;
use audit_schema::codec;
use audit_schema::wire::{dead_letter_class, headers};
use audit_service::Health;
use rdkafka::client::ClientContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::consumer_required;
use crate::config::Settings;
use crate::metrics::SinkMetrics;
use crate::retry::{clock_jitter, Backoff, Bisection, Circuit, CircuitBreaker};
use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};

/// Why a sink stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The store refused to work (bad config, authentication...).
    #[error("{0}")]
    Fatal(String),
}

/// What the poll loop says when a committed offset is gone from the processed topic.
const OFFSET_GONE: &str = "a committed offset of this sink's group is not in the processed topic: e.g. retention removed events before this sink stored them (the sink was down or behind for longer than the topic's retention), or the topic was recreated (or, for a partition started from its beginning, its first events expired meanwhile: a restart clears that). Not skipping them silently; restore them from another sink or an export, or set kafka.accept_loss = true to continue from the earliest event (verifying the store then reports the gap)";

#[derive(Debug)]
struct LaneState {
    partition: i32,
    acked: AtomicI64,
    stored: AtomicI64,
}

struct Lane {
    state: Arc<LaneState>,
    tx: mpsc::Sender<OwnedMessage>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Shared<S: Sink> {
    settings: Settings,
    sink: Arc<S>,
    metrics: SinkMetrics,
    dead_letters: FutureProducer,
    lanes: Mutex<BTreeMap<i32, Lane>>,
    circuit: CircuitBreaker,
    backoff: Backoff,
    fatal: Mutex<Option<String>>,
    runtime: tokio::runtime::Handle,
    /// Bumped at every assignment change (read by the poll loop).
    generation: AtomicU64,
    /// The consumer, for the rebalance callback to split partition queues.
    consumer: OnceLock<Weak<BaseConsumer<RebalanceContext<S>>>>,
    /// Each assigned partition's own queue.
    queues: Mutex<BTreeMap<i32, PartitionQueue<RebalanceContext<S>>>>,
}

impl<S: Sink> Shared<S> {
    fn lanes(&self) -> MutexGuard<'_, BTreeMap<i32, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queues(&self) -> MutexGuard<'_, BTreeMap<i32, PartitionQueue<RebalanceContext<S>>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_fatal(&self, message: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %message, "fatal");
            *f = Some(message);
        }
    }

    fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn start_lane(self: &Arc<Self>, partition: i32) {
        let (tx, rx) = mpsc::channel(self.settings.config.batch.max_events.max(64) * 2);
        let state = Arc::new(LaneState { partition, acked: AtomicI64::new(-1), stored: AtomicI64::new(-1) });
        let stop = CancellationToken::new();
        let shared = self.clone();
        let (s, st) = (state.clone(), stop.clone());
        let task = self.runtime.spawn(async move { shared.lane(s, rx, st).await });
        self.lanes().insert(partition, Lane { state, tx, stop, task });
    }

    /// Stops the lanes of `partitions` (their current write finishes), stores and commits.
    fn release<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let lanes: Vec<Lane> = {
            let mut map = self.lanes();
            partitions.iter().filter_map(|p| map.remove(p)).collect()
        };
        if lanes.is_empty() {
            return;
        }
        for lane in &lanes {
            lane.stop.cancel();
        }
        // One deadline for the whole release, however many lanes it stops.
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        for lane in lanes {
            let Lane { state, tx, mut task, .. } = lane;
            drop(tx);
            if self.runtime.block_on(tokio::time::timeout_at(deadline, &mut task)).is_err() {
                // Aborted, so it never writes next to the partition's next lane; what it had not
                // acknowledged is delivered again.
                tracing::warn!(partition = state.partition, "lane did not stop within the drain deadline; aborted");
                task.abort();
                let _ = self.runtime.block_on(task);
            }
            self.store_offset(consumer, &state);
            tracing::info!(
                partition = state.partition,
                acked_offset = state.acked.load(Ordering::Acquire),
                "lane released"
            );
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "commit on release");
        }
    }

    fn store_offset<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, lane: &LaneState) {
        let acked = lane.acked.load(Ordering::Acquire);
        if acked > lane.stored.load(Ordering::Acquire) {
            match consumer.store_offset(&self.settings.config.kafka.processed_topic, lane.partition, acked) {
                Ok(()) => lane.stored.store(acked, Ordering::Release),
                Err(error) => tracing::debug!(partition = lane.partition, %error, "offset not stored"),
            }
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff.delay(attempt, retry_after, clock_jitter())
    }

    fn record_failure(&self) {
        if self.circuit.failure() == Circuit::Opened {
            let r = &self.settings.config.retry;
            tracing::warn!(failures = r.failure_threshold, cooldown_ms = r.cooldown_ms, "circuit open: pausing writes");
            self.metrics.circuit_open.set(1);
        }
    }

    fn record_success(&self) {
        if self.circuit.success() == Circuit::Closed {
            self.metrics.circuit_open.set(0);
        }
    }

    /// Writes `batch`, retrying retriable failures; isolates poison records by splitting. Returns
    /// false when the lane must stop (stop requested or fatal).
    async fn write_all<T: Storable>(&self, batch: &[T], messages: &[&OwnedMessage], stop: &CancellationToken) -> bool {
        let mut bisection = Bisection::new(batch.len());
        while let Some(slice) = bisection.next_slice() {
            let mut attempt = 0u32;
            loop {
                if !self.circuit.wait(stop).await {
                    return false;
                }
                let started = Instant::now();
                match T::store(&*self.sink, &batch[slice.clone()]).await {
                    Ok(outcome) => {
                        self.record_success();
                        self.metrics.batch_latency.observe(started.elapsed().as_secs_f64());
                        T::count(&self.metrics, &outcome);
                        break;
                    }
                    Err(SinkError::Retriable { reason, retry_after }) => {
                        self.record_failure();
                        self.metrics.retries.inc();
                        let wait = self.backoff(attempt, retry_after);
                        tracing::warn!(sink = self.sink.name(), %reason, attempt, ?wait, "write failed; retrying");
                        attempt += 1;
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return false,
                        }
                    }
                    Err(SinkError::Poison { reason }) => {
                        // Alone: dead-lettered; else its halves are written (and split again) on their own.
                        if let Some(alone) = bisection.poisoned(slice) {
                            if !self.dead_letter(messages[alone], dead_letter_class::POISON, &reason).await {
                                return false;
                            }
                        }
                        break;
                    }
                    Err(SinkError::Fatal { reason }) => {
                        self.set_fatal(format!("sink {}: {reason}", self.sink.name()));
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Sends a record to the sink's dead-letter topic and waits until it is stored there.
    async fn dead_letter(&self, m: &OwnedMessage, class: &str, reason: &str) -> bool {
        let topic = &self.settings.dead_letter_topic;
        let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: headers::ERROR_CLASS, value: Some(class) })
            .insert(Header { key: headers::ERROR_REASON, value: Some(reason) })
            .insert(Header { key: headers::SINK, value: Some(self.sink.name()) })
            .insert(Header { key: headers::SOURCE_TOPIC, value: Some(m.topic()) })
            .insert(Header { key: headers::SOURCE_PARTITION, value: Some(partition.as_str()) })
            .insert(Header { key: headers::SOURCE_OFFSET, value: Some(offset.as_str()) });
        // A dead-lettered checkpoint stays marked as one (`auditctl dlq replay` refuses it).
        let kind = audit_kafka::header(m, audit_schema::checkpoint::RECORD_HEADER).flatten();
        let headers = match kind {
            Some(kind) => headers.insert(Header { key: audit_schema::checkpoint::RECORD_HEADER, value: Some(kind) }),
            None => headers,
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        match self.dead_letters.send(record, Duration::from_secs(60)).await {
            Ok(_) => {
                self.metrics.dead_lettered.with_label_values(&[class]).inc();
                tracing::warn!(partition = m.partition(), offset = m.offset(), class, reason, "dead letter");
                true
            }
            Err((error, _)) => {
                self.set_fatal(format!("cannot write to the dead-letter topic {topic}: {error}"));
                false
            }
        }
    }

    async fn lane(
        self: Arc<Self>,
        state: Arc<LaneState>,
        mut rx: mpsc::Receiver<OwnedMessage>,
        stop: CancellationToken,
    ) {
        let p = state.partition;
        let mut attempt = 0;
        let skip_upto = loop {
            match self.sink.prepare(p).await {
                Ok(v) => break v,
                Err(SinkError::Fatal { reason }) => {
                    return self.set_fatal(format!("sink {}: {reason}", self.sink.name()))
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "preparing the partition failed; retrying");
                    let wait = self.backoff(attempt, None);
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        };
        let b = &self.settings.config.batch;
        let mut messages: Vec<OwnedMessage> = Vec::with_capacity(b.max_events);
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { return };
            let mut bytes = first.payload().map_or(0, <[u8]>::len);
            messages.push(first);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(b.max_wait_ms);
            while messages.len() < b.max_events && bytes < b.max_bytes {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            bytes += m.payload().map_or(0, <[u8]>::len);
                            messages.push(m);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = stop.cancelled() => return,
                }
            }
            // Runs of events and of checkpoints, written in offset order.
            let mut run = Run::default();
            for m in &messages {
                if skip_upto.is_some_and(|s| m.offset() <= s) {
                    continue;
                }
                match to_record(m) {
                    Ok(record) => {
                        if run.switches_to(&record) && !self.write_run(&mut run, &stop).await {
                            return;
                        }
                        run.push(record, m);
                    }
                    Err(reason) => {
                        // Undecodable here means undecodable everywhere: it can never be stored.
                        if !self.write_run(&mut run, &stop).await {
                            return;
                        }
                        if !self.dead_letter(m, dead_letter_class::DECODE, &reason).await {
                            return;
                        }
                    }
                }
            }
            if !self.write_run(&mut run, &stop).await {
                return;
            }
            if let Some(last) = messages.last() {
                state.acked.fetch_max(last.offset(), Ordering::AcqRel);
            }
            self.metrics.consumed.inc_by(messages.len() as u64);
            messages.clear();
        }
    }
}

/// A processed record: an event, or a signed checkpoint travelling in its chain's partition.
enum Record {
    Event(SinkRecord),
    Checkpoint(CheckpointRecord),
}

/// What a lane writes through one store call: events or checkpoints.
trait Storable: Sized + Send + Sync {
    fn store<'a, S: Sink>(
        sink: &'a S,
        batch: &'a [Self],
    ) -> impl std::future::Future<Output = Result<WriteOutcome, SinkError>> + Send + 'a;

    /// Counts a successful write.
    fn count(metrics: &SinkMetrics, outcome: &WriteOutcome);
}

impl Storable for SinkRecord {
    fn store<'a, S: Sink>(
        sink: &'a S,
        batch: &'a [Self],
    ) -> impl std::future::Future<Output = Result<WriteOutcome, SinkError>> + Send + 'a {
        sink.write(batch)
    }

    fn count(metrics: &SinkMetrics, outcome: &WriteOutcome) {
        metrics.written.inc_by(outcome.written);
        metrics.duplicates.inc_by(outcome.duplicates);
        for c in &outcome.conflicts {
            metrics.conflicts.inc();
            tracing::error!(event_id = %c.event_id, stored_hash = %c.stored_hash, incoming_hash = %c.incoming_hash,
                "conflict: an event id arrived again with different content; kept for review");
        }
    }
}

impl Storable for CheckpointRecord {
    fn store<'a, S: Sink>(
        sink: &'a S,
        batch: &'a [Self],
    ) -> impl std::future::Future<Output = Result<WriteOutcome, SinkError>> + Send + 'a {
        sink.write_checkpoints(batch)
    }

    fn count(metrics: &SinkMetrics, outcome: &WriteOutcome) {
        metrics.checkpoints.with_label_values(&["written"]).inc_by(outcome.written);
        metrics.checkpoints.with_label_values(&["duplicate"]).inc_by(outcome.duplicates);
    }
}

/// Consecutive records of one kind, with the messages they came from.
#[derive(Default)]
struct Run<'m> {
    events: Vec<SinkRecord>,
    checkpoints: Vec<CheckpointRecord>,
    messages: Vec<&'m OwnedMessage>,
}

impl<'m> Run<'m> {
    /// Whether `record` is of the other kind than a non-empty run (which must be written first).
    fn switches_to(&self, record: &Record) -> bool {
        match record {
            Record::Event(_) => !self.checkpoints.is_empty(),
            Record::Checkpoint(_) => !self.events.is_empty(),
        }
    }

    fn push(&mut self, record: Record, m: &'m OwnedMessage) {
        match record {
            Record::Event(r) => self.events.push(r),
            Record::Checkpoint(c) => self.checkpoints.push(c),
        }
        self.messages.push(m);
    }
}

impl<S: Sink> Shared<S> {
    /// Writes and empties `run`; false when the lane must stop.
    async fn write_run(&self, run: &mut Run<'_>, stop: &CancellationToken) -> bool {
        let ok = if !run.events.is_empty() {
            self.write_all(&run.events, &run.messages, stop).await
        } else if !run.checkpoints.is_empty() {
            self.write_all(&run.checkpoints, &run.messages, stop).await
        } else {
            true
        };
        run.events.clear();
        run.checkpoints.clear();
        run.messages.clear();
        ok
    }
}

/// Reads a processed record into what a sink needs.
fn to_record(m: &OwnedMessage) -> Result<Record, String> {
    use audit_schema::checkpoint::Checkpoint;
    use audit_schema::wire::{headers::RECORD as RECORD_HEADER, RECORD_CHECKPOINT, RECORD_EVENT};
    let payload = m.payload().ok_or("the record has no payload")?;
    let kind = audit_kafka::header(m, RECORD_HEADER);
    match kind {
        None => {}
        Some(Some(k)) if k == RECORD_EVENT.as_bytes() => {}
        Some(Some(k)) if k == RECORD_CHECKPOINT.as_bytes() => {
            let checkpoint = Checkpoint::from_json(payload).map_err(|e| e.to_string())?;
            // Compact, whatever spacing the record had (the signature covers the canonical form).
            let json = serde_json::to_string(&checkpoint).map_err(|e| e.to_string())?;
            return Ok(Record::Checkpoint(CheckpointRecord {
                partition: m.partition(),
                offset: m.offset(),
                checkpoint,
                json,
            }));
        }
        Some(other) => {
            return Err(format!(
                "unknown {RECORD_HEADER} header {:?}: not a record this sink knows",
                other.map(String::from_utf8_lossy)
            ))
        }
    }
    let event = codec::event_value(payload).map_err(|e| e.to_string())?;
    let event_id = event.get("eventId").and_then(Value::as_str).ok_or("the event has no eventId")?.to_owned();
    let hash = event
        .get("integrity")
        .and_then(|i| i.get("hash"))
        .and_then(Value::as_str)
        .ok_or("the event has no integrity.hash")?
        .to_owned();
    // The RFC 8785 form (for JSON output that is the published text itself): the bytes that are
    // hashed, so a verifier can hash a text store's event as it stands.
    let json = match audit_schema::canonical::canonicalize(&event) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| e.to_string())?,
        Err(_) => serde_json::to_string(&event).map_err(|e| e.to_string())?,
    };
    Ok(Record::Event(SinkRecord { partition: m.partition(), offset: m.offset(), event_id, hash, event, json }))
}

/// Where each newly assigned partition starts: the group's committed offset, or the beginning
/// when the group has none (a new sink). Explicit, so that `auto.offset.reset` is left to mean
/// only "the committed offset is gone". A partition whose offset cannot be read is an error, never
/// "no commit" (that would replay it, or jump past events that are gone); the read is tried three
/// times before the process gives up (and restarts from the committed offsets).
fn start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> Result<TopicPartitionList, String> {
    // The client wraps a failed offset read as a metadata error: name the broker's error code.
    let describe = |e: KafkaError| e.rdkafka_error_code().map_or_else(|| e.to_string(), |code| code.to_string());
    let mut failure = String::new();
    for attempt in 1..=3 {
        let read =
            consumer.committed_offsets(tpl.clone(), Duration::from_secs(15)).map_err(describe).and_then(|committed| {
                let mut assignment = TopicPartitionList::new();
                for e in committed.elements() {
                    e.error().map_err(|error| format!("partition {}: {}", e.partition(), describe(error)))?;
                    let start = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    assignment.add_partition_offset(e.topic(), e.partition(), start).map_err(describe)?;
                }
                Ok(assignment)
            });
        match read {
            Ok(assignment) => return Ok(assignment),
            Err(error) => {
                tracing::warn!(attempt, %error, "cannot read the group's committed offsets");
                failure = error;
            }
        }
    }
    Err(failure)
}

struct RebalanceContext<S: Sink> {
    shared: Arc<Shared<S>>,
}

impl<S: Sink> ClientContext for RebalanceContext<S> {}

impl<S: Sink> ConsumerContext for RebalanceContext<S> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assignment = match start_offsets(consumer, tpl) {
                    Ok(assignment) => assignment,
                    Err(error) => {
                        self.shared.set_fatal(format!("cannot read the group's committed offsets: {error}"));
                        return;
                    }
                };
                if let Err(error) = consumer.assign(&assignment) {
                    self.shared.set_fatal(format!("assign failed: {error}"));
                    return;
                }
                // After `assign`: each partition its own queue (the split outlives later fetch starts).
                if let Some(me) = self.shared.consumer.get().and_then(Weak::upgrade) {
                    let mut queues = self.shared.queues();
                    for e in tpl.elements() {
                        match me.split_partition_queue(e.topic(), e.partition()) {
                            Some(q) => {
                                queues.insert(e.partition(), q);
                            }
                            None => {
                                self.shared.set_fatal(format!("cannot split the queue of partition {}", e.partition()))
                            }
                        }
                    }
                }
                for e in tpl.elements() {
                    self.shared.start_lane(e.partition());
                    tracing::info!(partition = e.partition(), "lane started");
                }
                self.shared.metrics.assigned.set(self.shared.lanes().len() as i64);
            }
            _ => {
                let partitions: Vec<i32> = self.shared.lanes().keys().copied().collect();
                self.shared.release(consumer, &partitions);
                self.shared.queues().clear();
                let _ = consumer.unassign();
                self.shared.metrics.assigned.set(0);
            }
        }
    }
}

/// Hands records to the lanes in offset order: records that arrive while a lane is full wait here
/// (only records from the main queue can: a partition's own queue is read only when its lane has
/// room), and a record fetched again is skipped.
#[derive(Default)]
struct Feeder {
    /// Lane senders, refreshed at each assignment change.
    senders: BTreeMap<i32, mpsc::Sender<OwnedMessage>>,
    waiting: BTreeMap<i32, VecDeque<OwnedMessage>>,
    /// Per partition, the offset after the last record handed over in this assignment.
    next_offset: BTreeMap<i32, i64>,
    generation: u64,
}

impl Feeder {
    /// Follows assignment changes: positions start over from the group's offsets.
    fn sync<S: Sink>(&mut self, shared: &Shared<S>) {
        let current = shared.generation.load(Ordering::Acquire);
        // The rebalance callback bumps the generation before it starts or releases any lane.
        if current != self.generation {
            self.generation = current;
            self.senders = shared.lanes().iter().map(|(p, l)| (*p, l.tx.clone())).collect();
            self.next_offset.clear();
            self.waiting.retain(|p, _| self.senders.contains_key(p));
        }
    }

    /// The lane of `p` when it can take a record now (and nothing is waiting for it).
    fn room(&self, p: i32) -> Option<&mpsc::Sender<OwnedMessage>> {
        if self.waiting.get(&p).is_some_and(|w| !w.is_empty()) {
            return None;
        }
        self.senders.get(&p).filter(|tx| tx.capacity() > 0)
    }

    /// Takes the record at `offset` of partition `p`. `Err` when order cannot be kept (the
    /// process then restarts from the committed offsets: nothing is lost).
    fn accept(&mut self, p: i32, offset: i64, detach: impl FnOnce() -> OwnedMessage, main: bool) -> Result<(), String> {
        let Some(tx) = self.senders.get(&p) else { return Ok(()) }; // revoked: redelivered to the new owner
        if let Some(next) = self.next_offset.get(&p) {
            if offset < *next {
                if main {
                    return Err(format!(
                        "partition {p}: offset {offset} arrived after offset {next} was handed over; restarting from the committed offsets"
                    ));
                }
                return Ok(()); // fetched again: already handed over
            }
        }
        self.next_offset.insert(p, offset + 1);
        let m = detach();
        let waiting = self.waiting.entry(p).or_default();
        if !waiting.is_empty() {
            waiting.push_back(m);
            return Ok(());
        }
        match tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => waiting.push_back(m),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(format!("the lane of partition {p} stopped")),
        }
        Ok(())
    }

    /// Moves waiting records into lanes that have room.
    fn flush_waiting(&mut self) {
        for (p, queue) in self.waiting.iter_mut() {
            let Some(tx) = self.senders.get(p) else { continue };
            while let Some(m) = queue.pop_front() {
                match tx.try_send(m) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(m)) => {
                        queue.push_front(m);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        queue.clear();
                        break;
                    }
                }
            }
        }
    }
}

/// Most events taken from the main queue in one turn of the poll loop (it holds rebalances,
/// errors and the few records fetched between an assignment and the split of its queue).
const MAIN_QUEUE_TURN: usize = 10_000;

/// Runs `sink` until `shutdown` (then drains, commits and returns `Ok`) or a fatal error.
pub fn run_blocking<S: Sink>(
    settings: Settings,
    sink: Arc<S>,
    metrics: SinkMetrics,
    health: Arc<Health>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let k = &settings.config.kafka;
    let mut pconf = settings.kafka.client_config(&[]).map_err(|e| RunError::Kafka(e.to_string()))?;
    pconf.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "60000");
    let dead_letters: FutureProducer =
        pconf.create().map_err(|e| RunError::Kafka(format!("dead-letter producer: {e}")))?;
    let mut cconf =
        settings.kafka.client_config(&consumer_required(k.accept_loss)).map_err(|e| RunError::Kafka(e.to_string()))?;
    cconf
        .set("group.id", &k.group_id)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (k.session_timeout_ms / 4).max(250).to_string())
        .set("auto.commit.interval.ms", "1000");
    if let Some(id) = &k.instance_id {
        cconf.set("group.instance.id", id);
    }
    let topic = k.processed_topic.clone();
    let shared = Arc::new(Shared {
        sink,
        metrics,
        dead_letters,
        lanes: Mutex::new(BTreeMap::new()),
        circuit: CircuitBreaker::new(&settings.config.retry),
        backoff: Backoff::new(&settings.config.retry),
        fatal: Mutex::new(None),
        runtime,
        settings,
        generation: AtomicU64::new(0),
        consumer: OnceLock::new(),
        queues: Mutex::new(BTreeMap::new()),
    });
    let consumer: Arc<BaseConsumer<RebalanceContext<S>>> = Arc::new(
        cconf
            .create_with_context(RebalanceContext { shared: shared.clone() })
            .map_err(|e| RunError::Kafka(format!("consumer: {e}")))?,
    );
    // The rebalance callback splits each assigned partition into its own queue.
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    consumer.subscribe(&[topic.as_str()]).map_err(|e| RunError::Kafka(format!("subscribe: {e}")))?;
    health.set_ready(true);

    // Backpressure without pausing: each assigned partition has its own client queue, read only
    // while its lane has room; when it does not, the client stops fetching that partition once
    // its prefetch limit is reached. (Pausing would discard the prefetched records and fetch them
    // again, and per-partition queues measured faster: docs/SINKS.md.)
    let mut lanes = Feeder::default();
    let result = loop {
        health.polled();
        if let Some(message) = shared.fatal() {
            break Err(RunError::Fatal(message));
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        // The main queue serves rebalances and errors (and any record fetched in the instant
        // between an assignment and the split of its queue).
        // It is emptied before any partition queue is read: a record of a partition found there
        // precedes everything in that partition's own queue.
        let idle = if shared.queues().is_empty() { 100 } else { 5 };
        let mut polled = consumer.poll(Duration::from_millis(idle));
        for _ in 0..MAIN_QUEUE_TURN {
            lanes.sync(&shared);
            match polled {
                Some(Ok(m)) => {
                    if let Err(message) = lanes.accept(m.partition(), m.offset(), || m.detach(), true) {
                        shared.set_fatal(message);
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    shared.set_fatal(OFFSET_GONE.into())
                }
                Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                None => break,
            }
            polled = consumer.poll(Duration::ZERO);
        }
        lanes.flush_waiting();
        for (p, queue) in shared.queues().iter() {
            let Some(tx) = lanes.room(*p) else { continue };
            for _ in 0..tx.capacity() {
                match queue.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        if let Err(message) = lanes.accept(*p, m.offset(), || m.detach(), false) {
                            shared.set_fatal(message);
                        }
                    }
                    Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                        shared.set_fatal(format!("partition {p}: {OFFSET_GONE}"));
                        break;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, partition = *p, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            if lanes.room(*p).is_none() {
                shared.metrics.lane_full.inc();
            }
        }
        for lane in shared.lanes().values() {
            if lane.task.is_finished() {
                // Lanes end only when released: this one failed (a panic) and its partition stalls.
                shared.set_fatal(format!("the lane of partition {} stopped", lane.state.partition));
            }
            shared.store_offset(&consumer, &lane.state);
        }
    };
    health.set_ready(false);
    let all: Vec<i32> = shared.lanes().keys().copied().collect();
    shared.release(&consumer, &all);
    shared.queues().clear();
    let Ok(consumer) = Arc::try_unwrap(consumer) else {
        return result.and(Err(RunError::Fatal("the consumer is still shared at shutdown".into())));
    };
    let outcome = close_consumer(consumer, Duration::from_secs(10));
    tracing::info!(?outcome, "left the consumer group");
    result
}
