//! Tail recovery: where a lane starts. The chain of raw partition p continues from the newest
//! event in processed partition p, whatever the group committed: its `(seq, hash)` is the lane's
//! chain head and its `integrity.source.offset + 1` the raw offset the lane starts at, so a
//! restart neither repeats nor skips a raw record in the chain.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use audit_kafka::lanes::StartAt;
use audit_kafka::{close_consumer, ClientSettings};
use audit_schema::chain::{chain_name, ChainHead, ChainLink};
use audit_schema::checkpoint::Checkpoint;
use audit_schema::codec;
use audit_schema::wire::headers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::settings::Settings;

/// Why the processed tail could not give a lane its chain head.
#[derive(Debug)]
pub(super) enum TailError {
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

/// What a lane resumes from.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The chain head: the newest event's `(seq, hash)`, or genesis.
    pub(super) head: ChainHead,
    /// The raw offset after the newest event's source (the raw partition's beginning for a new
    /// chain).
    pub(super) start: StartAt,
    /// The digest of the newest checkpoint of the chain in the tail (the next one's `prev`).
    pub(super) prev: Option<String>,
}

/// Reads processed tails. Its consumer carries a group id (assign needs one) but never joins the
/// group or commits.
pub(super) struct TailReader {
    kafka: ClientSettings,
    group_id: String,
    raw_topic: String,
    processed_topic: String,
    reader: Mutex<Option<BaseConsumer>>,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader").field("processed_topic", &self.processed_topic).finish_non_exhaustive()
    }
}

impl TailReader {
    pub(super) fn new(settings: &Settings) -> TailReader {
        let k = &settings.config.kafka;
        TailReader {
            kafka: settings.kafka.clone(),
            group_id: format!("{}.tail-reader", k.group_id),
            raw_topic: k.raw_topic.clone(),
            processed_topic: k.processed_topic.clone(),
            reader: Mutex::new(None),
        }
    }

    /// Reads the tail of processed partition `p`: the chain head, the raw offset to resume at, and
    /// the digest of the newest checkpoint of the chain in that tail (the next one's `prev`).
    pub(super) fn recover(&self, p: i32) -> Result<Recovered, TailError> {
        let topic = self.processed_topic.as_str();
        let chain = chain_name(&self.raw_topic, p);
        let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // Committed records only: the chain continues from what every sink can see.
            let mut config = self.kafka.client_config(audit_kafka::READ_COMMITTED).map_err(|e| e.to_string())?;
            config
                .set("group.id", &self.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                // The end of a partition is known from an empty fetch: do not wait for data.
                .set("fetch.wait.max.ms", "10")
                .set("auto.offset.reset", "earliest");
            *guard = Some(config.create().map_err(|e| format!("tail reader: {e}"))?);
        }
        let reader = guard.as_ref().ok_or_else(|| TailError::Broken("no tail reader".into()))?;
        let (low, high) = reader
            .fetch_watermarks(topic, p, Duration::from_secs(15))
            .map_err(|e| TailError::Unavailable(format!("watermarks of {topic} partition {p}: {e}")))?;
        if high == 0 {
            return Ok(Recovered { head: ChainHead::genesis(chain), start: StartAt::Beginning, prev: None });
        }
        if high <= low {
            // Records were written and have all expired: starting the chain again at seq 1 would
            // fork it from what the sinks hold.
            return Err(TailError::Broken(format!(
                "processed partition {p} of {topic} is empty but has held records (offsets up to {high}): retention removed the chain's tail, so it cannot be continued; raise the processed topic's retention and restore the tail, or start a new processed topic"
            )));
        }
        // Read from the last record to the end (records may arrive meanwhile); when the newest
        // records are not events of ours (checkpoints, foreign records, and in a partition
        // written in transactions the commit marker that ends it, which no reader receives),
        // step back 16, then 1,000 at a time.
        let mut start = (high - 1).max(low);
        let mut back = 16;
        loop {
            let (found, visible) = read_last_event(reader, topic, p, start)?;
            if let Some(link) = found {
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
                return Ok(Recovered { head, start: StartAt::Offset(link.source_offset + 1), prev });
            }
            if start == low {
                if low == 0 && visible == 0 {
                    // Only records of aborted transactions (and their markers): nothing was ever
                    // committed, the chain starts at genesis.
                    return Ok(Recovered { head: ChainHead::genesis(chain), start: StartAt::Beginning, prev: None });
                }
                return Err(TailError::Broken(format!("processed partition {p} has records but no auditstream event")));
            }
            start = (start - back).max(low);
            back = 1000;
        }
    }

    /// Closes the reader the bounded way ([`close_consumer`]).
    pub(super) fn close(&self) {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(reader) = reader {
            close_consumer(reader, Duration::from_secs(5));
        }
    }
}

/// The newest event of a processed partition.
struct TailLink {
    chain: String,
    seq: u64,
    hash: String,
    computed_hash: String,
    source_offset: i64,
    /// The newest checkpoint record read (from `start` to the end), for the next one's `prev`.
    checkpoint: Option<Checkpoint>,
}

/// The last event in `topic`/`p` from `start` to the end, and how many records were read (a
/// read_committed reader sees no aborted record and no transaction marker). Records no processor
/// wrote are passed over; one of ours that cannot be read back after the last readable event is
/// an error.
fn read_last_event(
    reader: &BaseConsumer,
    topic: &str,
    p: i32,
    start: i64,
) -> Result<(Option<TailLink>, usize), TailError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(start)).map_err(|e| e.to_string())?;
    reader.assign(&tpl).map_err(|e| TailError::Unavailable(format!("assign {topic}/{p}: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<TailLink> = None;
    let mut checkpoint = None;
    // A record of ours after the last readable event.
    let mut unreadable = None;
    let mut buf = Vec::new();
    let mut visible = 0;
    loop {
        if Instant::now() > deadline {
            let _ = reader.unassign();
            return Err(TailError::Unavailable(format!(
                "reading the tail of {topic} partition {p} did not reach its end in 30 s"
            )));
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                visible += 1;
                if is_checkpoint_record(&m) {
                    if let Some(c) = m.payload().and_then(|p| Checkpoint::from_json(p).ok()) {
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
        None => Ok((last.map(|link| TailLink { checkpoint, ..link }), visible)),
    }
}

/// A signed checkpoint travelling in the processed partition (not an event of the chain).
fn is_checkpoint_record(m: &impl Message) -> bool {
    use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
    audit_kafka::header(m, RECORD_HEADER) == Some(Some(RECORD_CHECKPOINT.as_bytes()))
}
