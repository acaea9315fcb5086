//! The sink as a handler of the partition-lane engine ([`audit_kafka::lanes`]): each lane skips
//! what its store already holds, batches records by count, bytes and time, writes them with
//! retries, a circuit breaker and bisection of poison batches, dead-letters what can never be
//! stored, and acknowledges a batch once it is durable. The engine owns the consumer group,
//! the lanes, back-pressure, offset storing, release and close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_kafka::lanes::{self, EngineConfig, EngineError, GroupMember, Lane, LaneHandler, StartAt, StartError, Stop};
use audit_schema::codec;
use audit_schema::wire::{dead_letter_class, headers};
use audit_service::Health;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::Value;
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

/// What the engine says when a committed offset is gone from the processed topic.
const OFFSET_GONE: &str = "a committed offset of this sink's group is not in the processed topic: e.g. retention removed events before this sink stored them (the sink was down or behind for longer than the topic's retention), or the topic was recreated (or, for a partition started from its beginning, its first events expired meanwhile: a restart clears that). Not skipping them silently; restore them from another sink or an export, or set kafka.accept_loss = true to continue from the earliest event (verifying the store then reports the gap)";

/// The sink's lane handler: what every lane shares.
struct SinkLanes<S: Sink> {
    settings: Settings,
    sink: Arc<S>,
    metrics: SinkMetrics,
    dead_letters: FutureProducer,
    circuit: CircuitBreaker,
    backoff: Backoff,
}

impl<S: Sink> LaneHandler for SinkLanes<S> {
    /// The group's committed offset (the beginning for a new sink); what the store already holds
    /// is skipped by the lane ([`Sink::prepare`]).
    fn start(&self, _partition: i32) -> Result<StartAt, StartError> {
        Ok(StartAt::Committed)
    }

    async fn run_lane(self: Arc<Self>, lane: Lane) {
        self.lane(lane).await
    }

    fn assigned(&self, lanes: usize) {
        self.metrics.assigned.set(lanes as i64);
    }

    fn lane_full(&self, _partition: i32) {
        self.metrics.lane_full.inc();
    }
}

impl<S: Sink> SinkLanes<S> {
    fn fatal(&self, stop: &Stop, reason: impl std::fmt::Display) {
        stop.fatal(format!("sink {}: {reason}", self.sink.name()));
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
    async fn write_all<T: Storable>(&self, batch: &[T], messages: &[&OwnedMessage], stop: &Stop) -> bool {
        let mut bisection = Bisection::new(batch.len());
        while let Some(slice) = bisection.next_slice() {
            let mut attempt = 0u32;
            loop {
                if !self.circuit.wait(stop.token()).await {
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
                            () = stop.requested() => return false,
                        }
                    }
                    Err(SinkError::Poison { reason }) => {
                        // Alone: dead-lettered; else its halves are written (and split again) on their own.
                        if let Some(alone) = bisection.poisoned(slice) {
                            if !self.dead_letter(messages[alone], dead_letter_class::POISON, &reason, stop).await {
                                return false;
                            }
                        }
                        break;
                    }
                    Err(SinkError::Fatal { reason }) => {
                        self.fatal(stop, reason);
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Sends a record to the sink's dead-letter topic and waits until it is stored there.
    async fn dead_letter(&self, m: &OwnedMessage, class: &str, reason: &str, stop: &Stop) -> bool {
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
                stop.fatal(format!("cannot write to the dead-letter topic {topic}: {error}"));
                false
            }
        }
    }

    /// One lane: what the store holds is skipped, then batches are written in offset order and
    /// acknowledged once durable.
    async fn lane(&self, lane: Lane) {
        let Lane { partition: p, mut records, acks, stop } = lane;
        let mut attempt = 0;
        let skip_upto = loop {
            match self.sink.prepare(p).await {
                Ok(v) => break v,
                Err(SinkError::Fatal { reason }) => return self.fatal(&stop, reason),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "preparing the partition failed; retrying");
                    let wait = self.backoff(attempt, None);
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.requested() => return,
                    }
                }
            }
        };
        let b = &self.settings.config.batch;
        let mut messages: Vec<OwnedMessage> = Vec::with_capacity(b.max_events);
        loop {
            let first = tokio::select! {
                m = records.recv() => m,
                () = stop.requested() => None,
            };
            let Some(first) = first else { return };
            let mut bytes = first.payload().map_or(0, <[u8]>::len);
            messages.push(first);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(b.max_wait_ms);
            let idle = Duration::from_millis(b.idle_ms);
            while messages.len() < b.max_events && bytes < b.max_bytes {
                let quiet = deadline.min(tokio::time::Instant::now() + idle);
                tokio::select! {
                    m = records.recv() => match m {
                        Some(m) => {
                            bytes += m.payload().map_or(0, <[u8]>::len);
                            messages.push(m);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(quiet) => break,
                    () = stop.requested() => return,
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
                        if !self.dead_letter(m, dead_letter_class::DECODE, &reason, &stop).await {
                            return;
                        }
                    }
                }
            }
            if !self.write_run(&mut run, &stop).await {
                return;
            }
            if let Some(last) = messages.last() {
                acks.ack(last.offset());
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

impl<S: Sink> SinkLanes<S> {
    /// Writes and empties `run`; false when the lane must stop.
    async fn write_run(&self, run: &mut Run<'_>, stop: &Stop) -> bool {
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
    let client =
        settings.kafka.client_config(&consumer_required(k.accept_loss)).map_err(|e| RunError::Kafka(e.to_string()))?;
    let config = EngineConfig {
        client,
        group: GroupMember::new(&k.group_id, k.session_timeout_ms, k.instance_id.as_deref()),
        topic: k.processed_topic.clone(),
        lane_capacity: settings.config.batch.max_events.max(64) * 2,
        release_timeout: settings.drain_timeout,
        // A sink's start is the group's committed offset: never unavailable.
        start_retry: Duration::ZERO,
        offset_gone: OFFSET_GONE.into(),
        lag_interval: None,
        liveness: Some(health),
    };
    let handler = Arc::new(SinkLanes {
        circuit: CircuitBreaker::new(&settings.config.retry),
        backoff: Backoff::new(&settings.config.retry),
        settings,
        sink,
        metrics,
        dead_letters,
    });
    lanes::run(config, handler, runtime, shutdown).map_err(|e| match e {
        EngineError::Kafka(message) => RunError::Kafka(message),
        EngineError::Fatal(message) | EngineError::Interrupted(message) => RunError::Fatal(message),
    })
}
