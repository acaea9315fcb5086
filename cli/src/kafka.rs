//! Reading a whole topic, and following one: what `verify`, `dlq` and `tail` share.

use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};

/// A consumer outside any group's offsets (nothing is committed) for `brokers`. It reads committed
/// records only: what an aborted transaction of the processor held is never shown or verified.
pub fn reader(brokers: &str, purpose: &str) -> anyhow::Result<BaseConsumer> {
    reader_config(brokers, purpose)?.create().context("Kafka consumer")
}

fn reader_config(brokers: &str, purpose: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    let settings = audit_kafka::ClientSettings::new(brokers, "auditctl");
    let mut config = settings.client_config(audit_kafka::READ_COMMITTED).context("Kafka client config")?;
    config.set("group.id", format!("auditctl-{purpose}")).set("enable.auto.commit", "false");
    Ok(config)
}

/// The partitions of `topic`, or an error naming it when it does not exist.
pub fn partitions(consumer: &BaseConsumer, brokers: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("reading the metadata of {topic} from {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {topic} does not exist on {brokers}");
    }
    Ok(partitions)
}

/// Calls `each` with every record of `topic`, from the oldest one on, each partition in its
/// stored order.
///
/// The high watermarks are where the topic ended when the read began; records arriving later are
/// read too while they keep coming (the read ends after a second without any), so a topic still
/// being written is read to where it stands when its writers pause. A partition's end is also
/// known from reaching it (end-of-partition): a topic written in transactions ends with a
/// transaction marker, which a reader never receives as a record.
pub fn scan_topic(
    brokers: &str,
    topic: &str,
    each: &mut dyn FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer =
        reader_config(brokers, "read")?.set("enable.partition.eof", "true").create().context("Kafka consumer")?;
    let timeout = Duration::from_secs(30);
    let mut assignment = TopicPartitionList::new();
    let mut pending = std::collections::BTreeMap::new();
    for p in partitions(&consumer, brokers, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
        if high > low {
            pending.insert(p, high);
        }
    }
    consumer.assign(&assignment).context("assigning the partitions")?;
    let idle = Duration::from_secs(1);
    loop {
        let wait = if pending.is_empty() { idle } else { timeout };
        let message = match consumer.poll(wait) {
            None if pending.is_empty() => return Ok(()),
            None => bail!(
                "no record of {topic} arrived within {timeout:?}; still expected: {pending:?} (partition: end offset)"
            ),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
                continue;
            }
            Some(m) => m.with_context(|| format!("reading {topic}"))?,
        };
        let p = message.partition();
        if pending.get(&p).is_some_and(|high| message.offset() + 1 >= *high) {
            pending.remove(&p);
        }
        each(&message)?;
    }
}

/// Every header of a record as `(key, value as lossy UTF-8)`, in order.
pub fn header_texts<H: rdkafka::message::Headers>(headers: Option<&H>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a processed-topic record is a signed checkpoint (its `audit-record` header), not an
/// event.
pub fn is_checkpoint(message: &impl rdkafka::Message) -> bool {
    use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
    audit_kafka::header(message, RECORD_HEADER) == Some(Some(RECORD_CHECKPOINT.as_bytes()))
}
