//! Publishing: the producer of each lane's processed events, dead letters and checkpoints, and
//! what each lane has in flight.
//!
//! * `idempotent`: one idempotent producer for every lane. A raw offset is acknowledged to the
//!   engine once the processed event it produced is delivered; a permanent delivery failure is
//!   fatal (the chain must not skip an event).
//! * `exactly_once`: each lane's own transactional producer ([`super::transaction`]); a raw
//!   offset is acknowledged once the transaction holding its event is committed, and a failed
//!   transaction stops the lane (the clients start again, from the committed tail).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_kafka::lanes::{Acks, Stop};
use audit_schema::checkpoint::Checkpoint;
use audit_schema::wire::headers;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::Message;

use super::topics::RecordLimits;
use super::transaction::{LaneTransactions, TxnError};
use super::RunError;
use crate::checkpoints::LaneMark;
use crate::client::{producer_required, transactional_producer_required};
use crate::pipeline::{DeadLetter, RawRecord};
use crate::settings::{Guarantee, Settings, Transactions};

/// Longest raw key carried over to the processed record (a tenant id is far shorter; the
/// partition is chosen explicitly, so a longer key is left off rather than let the record grow
/// past what the topic accepts).
const MAX_KEY_BYTES: usize = 4 * 1024;

/// The output producers' batching and compression; `kafka.librdkafka` may override each.
const PRODUCER_TUNING: &[(&str, &str)] = &[
    ("linger.ms", "20"),
    ("compression.type", "lz4"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "200000"),
];

/// Longest `traceparent` header passed on (the W3C form is 55 characters).
pub(super) const MAX_TRACEPARENT_BYTES: usize = 512;

/// One lane's output, shared with its delivery reports and kept until the lane's release.
#[derive(Debug)]
pub(super) struct LaneOutput {
    pub(super) partition: i32,
    /// Where delivered raw offsets are acknowledged.
    pub(super) acks: Acks,
    /// The lane's stop request; a permanent delivery failure stops the engine through it.
    stop: Stop,
    /// A delivery failed for good: nothing may be chained after the lost event.
    failed: AtomicBool,
    in_flight: AtomicI64,
    /// The lane's head and what of it is signed (checkpoints).
    pub(super) mark: Mutex<LaneMark>,
    /// Records the lane has taken, and how long it has taken none while full.
    taken: AtomicU64,
    stall: Mutex<Stall>,
    /// `exactly_once`: the lane's transactional producer.
    pub(super) txn: Option<LaneTransactions>,
    /// The lane is released: what its producer reports from now on (purged records when it is
    /// dropped) is expected.
    released: AtomicBool,
}

/// How long a full lane has taken no record.
#[derive(Debug)]
struct Stall {
    taken: u64,
    since: Instant,
    last_full: Instant,
    reported: bool,
}

impl LaneOutput {
    pub(super) fn new(
        partition: i32,
        acks: Acks,
        stop: Stop,
        mark: LaneMark,
        txn: Option<LaneTransactions>,
    ) -> LaneOutput {
        let now = Instant::now();
        LaneOutput {
            partition,
            acks,
            stop,
            failed: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            mark: Mutex::new(mark),
            taken: AtomicU64::new(0),
            stall: Mutex::new(Stall { taken: 0, since: now, last_full: now, reported: false }),
            txn,
            released: AtomicBool::new(false),
        }
    }

    /// The lane is being released: its producer's reports no longer stop anything.
    pub(super) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// A transactional call failed: the lane takes no further record, and the engine stops so
    /// that the clients start again (the partition's next owner, maybe this process again,
    /// resumes from the committed tail). A broker without transactions is fatal.
    pub(super) fn transaction_failed(&self, error: TxnError) {
        self.failed.store(true, Ordering::Release);
        let p = self.partition;
        let id = self.txn.as_ref().map_or("", |t| t.id.as_str());
        match error {
            TxnError::Fenced(m) => self.stop.interrupt(format!(
                "raw partition {p}: its producer ({id}) is fenced ({m}): another instance owns the partition now; nothing this lane wrote after that becomes visible. Starting the Kafka clients again"
            )),
            TxnError::Aborted(m) | TxnError::Unavailable(m) => self.stop.interrupt(format!(
                "raw partition {p}: transaction of {id} aborted ({m}); the lane's head is ahead of the committed tail, so the Kafka clients start again to resume from it"
            )),
            TxnError::Unsupported(m) => self.stop.fatal(unsupported(&m)),
        }
    }

    /// Whether a delivery or a transaction of the lane failed.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the lane must take no further record (released, or a delivery failed for good).
    pub(super) fn halted(&self) -> bool {
        self.failed.load(Ordering::Acquire) || self.stop.is_requested()
    }

    /// Waits until nothing is in flight or `deadline` passes; returns what is still in flight.
    pub(super) fn wait_delivered(&self, deadline: tokio::time::Instant) -> i64 {
        loop {
            let left = self.in_flight.load(Ordering::Acquire);
            if left <= 0 || tokio::time::Instant::now() >= deadline {
                return left.max(0);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until everything handed to the producer so far is delivered; false when a delivery
    /// failed for good or the lane is stopped first.
    pub(super) fn wait_settled(&self) -> bool {
        while !self.halted() {
            if self.wait_delivered(tokio::time::Instant::now() + Duration::from_millis(50)) == 0 {
                return !self.failed.load(Ordering::Acquire);
            }
        }
        false
    }

    /// The lane took `n` records; true when it had been reported stalled (it is not any more).
    pub(super) fn took(&self, n: usize) -> bool {
        self.taken.fetch_add(n as u64, Ordering::AcqRel);
        let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut stall.reported, false)
    }

    /// The lane is full now; true (once per stall) when it has been full without taking a record
    /// for `limit`.
    pub(super) fn full(&self, limit: Duration) -> bool {
        let taken = self.taken.load(Ordering::Acquire);
        let now = Instant::now();
        let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
        // The engine reports a full lane at every turn of its poll loop: a gap means it had room.
        let had_room = now.duration_since(stall.last_full) > Duration::from_millis(500);
        stall.last_full = now;
        if taken != stall.taken || had_room {
            stall.taken = taken;
            stall.since = now;
            return false;
        }
        if !stall.reported && now.duration_since(stall.since) >= limit {
            stall.reported = true;
            return true;
        }
        false
    }
}

/// What a delivery report belongs to.
#[derive(Debug)]
pub(super) struct Token {
    lane: Arc<LaneOutput>,
    /// Raw offset whose processed event this is; `None` for a dead letter or a checkpoint.
    raw_offset: Option<i64>,
}

#[derive(Debug)]
pub(super) struct DeliveryContext {
    /// The member is leaving the group: purged deliveries are expected.
    leaving: Arc<AtomicBool>,
}

impl ClientContext for DeliveryContext {}

/// What a broker without transactions means for `kafka.processing_guarantee = "exactly_once"`.
pub(super) fn unsupported(error: &str) -> String {
    format!(
        "kafka.processing_guarantee = \"exactly_once\" needs Kafka transactions, which this broker refuses ({error}). Use a broker with transactions (Apache Kafka, Redpanda; check the transactional.id ACLs for <group_id>.), or set kafka.processing_guarantee = \"idempotent\", which can fork the chain when a paused instance wakes up (docs/INTEGRITY.md)"
    )
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        match result {
            Ok(_) => {
                if let Some(offset) = token.raw_offset {
                    token.lane.acks.ack(offset);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight), _))
                if self.leaving.load(Ordering::Relaxed) => {}
            Err(_) if token.lane.released.load(Ordering::Acquire) => {}
            Err((error, message)) if token.lane.txn.is_some() => {
                // Its transaction cannot commit: aborted, nothing of it becomes visible.
                tracing::warn!(partition = message.partition(), %error, "a delivery in a transaction failed");
                token.lane.transaction_failed(TxnError::Aborted(format!("a delivery failed: {error}")));
            }
            Err((error, message)) => {
                // The lane takes no further record: nothing may be chained after the lost event.
                token.lane.failed.store(true, Ordering::Release);
                token.lane.stop.fatal(format!(
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

/// The processor's producers: one shared idempotent one, or (`exactly_once`) the config each
/// lane's transactional producer is made from.
pub(super) struct Publisher {
    producer: Option<ThreadedProducer<DeliveryContext>>,
    transactional: Option<(rdkafka::config::ClientConfig, Transactions)>,
    leaving: Arc<AtomicBool>,
    processed_topic: String,
    dead_letter_topic: String,
    limits: RecordLimits,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("processed_topic", &self.processed_topic).finish_non_exhaustive()
    }
}

impl Publisher {
    pub(super) fn new(settings: &Settings, limits: RecordLimits) -> Result<Publisher, RunError> {
        let required = match &settings.guarantee {
            Guarantee::Idempotent => producer_required(),
            // Each lane sets its own transactional.id.
            Guarantee::ExactlyOnce(_) => transactional_producer_required(""),
        };
        let mut config = settings
            .kafka
            .tuned_client_config(&required, PRODUCER_TUNING)
            .map_err(|e| RunError::Client(e.to_string()))?;
        config
            .set("message.max.bytes", limits.producer_max.to_string())
            .set("batch.size", limits.batch_bytes.to_string());
        let leaving = Arc::new(AtomicBool::new(false));
        let (producer, transactional) = match &settings.guarantee {
            Guarantee::Idempotent => {
                let producer = config
                    .create_with_context(DeliveryContext { leaving: leaving.clone() })
                    .map_err(|e| RunError::Client(format!("producer: {e}")))?;
                (Some(producer), None)
            }
            Guarantee::ExactlyOnce(transactions) => (None, Some((config, transactions.clone()))),
        };
        let k = &settings.config.kafka;
        Ok(Publisher {
            producer,
            transactional,
            leaving,
            processed_topic: k.processed_topic.clone(),
            dead_letter_topic: k.dead_letter_topic.clone(),
            limits,
        })
    }

    /// Whether each lane has a transactional producer of its own (`exactly_once`).
    pub(super) fn transactional(&self) -> bool {
        self.transactional.is_some()
    }

    /// `exactly_once`: the transactional producer of the lane of `partition`, initialized (which
    /// fences the partition's previous owner); `None` in `idempotent` mode.
    pub(super) fn lane_transactions(&self, partition: i32) -> Option<Result<LaneTransactions, TxnError>> {
        let (config, t) = self.transactional.as_ref()?;
        let id = t.ids.for_partition(partition);
        let mut config = config.clone();
        config.set("transactional.id", &id);
        let context = DeliveryContext { leaving: self.leaving.clone() };
        Some(LaneTransactions::init(&config, context, id, t.interval, t.max_records))
    }

    /// Sends the processed event of `raw` (`encoded`, with its event id and the raw record's
    /// trace context) to the lane's processed partition; its delivery acknowledges `raw.offset`.
    pub(super) fn event(
        &self,
        lane: &Arc<LaneOutput>,
        raw: &RawRecord<'_>,
        event_id: &str,
        encoded: &[u8],
        traceparent: Option<&[u8]>,
    ) -> bool {
        // In a transaction the offset is acknowledged at the commit.
        let token = Box::new(Token { lane: lane.clone(), raw_offset: lane.txn.is_none().then_some(raw.offset) });
        let mut headers = OwnedHeaders::new().insert(Header { key: headers::EVENT_ID, value: Some(event_id) });
        if let Some(tp) = traceparent {
            headers = headers.insert(Header { key: headers::TRACEPARENT, value: Some(tp) });
        }
        let mut record = BaseRecord::with_opaque_to(&self.processed_topic, token)
            .partition(raw.partition)
            .payload(encoded)
            .headers(headers);
        if let Some(key) = raw.key.filter(|key| key.len() <= MAX_KEY_BYTES) {
            record = record.key(key);
        }
        self.send(lane, record, Some(raw.offset))
    }

    /// Sends `raw` to the dead-letter topic with the class, reason and source in headers (without
    /// its bytes when they exceed what the topic takes); `event_id` is the quarantine entry's.
    pub(super) fn dead_letter(
        &self,
        lane: &Arc<LaneOutput>,
        raw: &RawRecord<'_>,
        dead: &DeadLetter,
        event_id: &str,
    ) -> bool {
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
            .insert(Header { key: headers::QUARANTINE_EVENT_ID, value: Some(event_id) });
        if let Some(omitted) = &omitted {
            headers = headers.insert(Header { key: headers::PAYLOAD_OMITTED, value: Some(omitted.as_str()) });
        }
        let token = Box::new(Token { lane: lane.clone(), raw_offset: None });
        let mut record = BaseRecord::with_opaque_to(&self.dead_letter_topic, token).headers(headers);
        if omitted.is_none() {
            if let Some(key) = raw.key {
                record = record.key(key);
            }
            if let Some(payload) = raw.payload {
                record = record.payload(payload);
            }
        }
        self.send(lane, record, None)
    }

    /// Sends checkpoint `c` to the lane's processed partition, marked by its `audit-record` header.
    pub(super) fn checkpoint(&self, lane: &Arc<LaneOutput>, c: &Checkpoint) -> bool {
        use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
        let Ok(payload) = serde_json::to_vec(c) else { return false };
        let headers = OwnedHeaders::new().insert(Header { key: RECORD_HEADER, value: Some(RECORD_CHECKPOINT) });
        let token = Box::new(Token { lane: lane.clone(), raw_offset: None });
        let record = BaseRecord::with_opaque_to(&self.processed_topic, token)
            .partition(lane.partition)
            .key(c.chain.as_bytes())
            .payload(&payload[..])
            .headers(headers);
        self.send(lane, record, None)
    }

    /// Hands a record to the lane's producer (in `exactly_once`, into its open transaction, `raw_offset`
    /// naming the raw record an event covers), waiting while its queue is full; false when the lane
    /// must stop.
    fn send(
        &self,
        lane: &LaneOutput,
        mut record: BaseRecord<'_, [u8], [u8], Box<Token>>,
        raw_offset: Option<i64>,
    ) -> bool {
        let producer = match (&lane.txn, &self.producer) {
            (Some(txn), _) => {
                if let Err(error) = txn.begin() {
                    lane.transaction_failed(error);
                    return false;
                }
                &txn.producer
            }
            (None, Some(producer)) => producer,
            (None, None) => {
                lane.stop.fatal(format!("raw partition {}: its lane has no producer", lane.partition));
                return false;
            }
        };
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match producer.send(record) {
                Ok(()) => {
                    if let Some(txn) = &lane.txn {
                        txn.added(raw_offset);
                    }
                    return true;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if lane.halted() {
                        lane.in_flight.fetch_sub(1, Ordering::AcqRel);
                        return false;
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) if lane.txn.is_some() => {
                    // E.g. fenced: the producer cannot take records any more.
                    lane.in_flight.fetch_sub(1, Ordering::AcqRel);
                    lane.transaction_failed(TxnError::Aborted(format!(
                        "cannot hand a record to the producer: {error}"
                    )));
                    return false;
                }
                Err((error, _)) => {
                    lane.in_flight.fetch_sub(1, Ordering::AcqRel);
                    lane.stop.fatal(format!(
                        "cannot hand a record of raw partition {} to the producer: {error}",
                        lane.partition
                    ));
                    return false;
                }
            }
        }
    }

    /// Drops every record not yet delivered (their raw records are processed again from the
    /// processed tail by the partitions' next owner).
    pub(super) fn purge(&self) {
        if let Some(producer) = &self.producer {
            producer.purge(PurgeConfig::default().queue().inflight());
        }
    }

    /// The member leaves the group: what is not delivered by now is dropped, so that the
    /// partitions' next owner is never raced by late deliveries (it resumes from the tail it reads).
    pub(super) fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.purge();
    }

    /// Waits up to `timeout` for what is still queued (after [`Publisher::leave`]: the purge reports).
    pub(super) fn flush(&self, timeout: Duration) {
        if let Some(producer) = &self.producer {
            let _ = producer.flush(timeout);
        }
    }
}
