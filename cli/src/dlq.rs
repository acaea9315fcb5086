//! `auditctl dlq list|replay`: inspect dead letters, and send fixed ones back to the raw topic.
//!
//! Dead letters carry their story in headers (`audit.error.class`, `audit.error.reason`,
//! `audit.source.topic|partition|offset`, and `audit.quarantine.event_id` from the processor or
//! `audit.sink` from a sink). A replay publishes the record's payload — or a fixed version of it
//! from a file — to the raw topic with its original key, so it lands in the same chain, and marks
//! it with `audit.replayed_from` (`<dlq topic>/<partition>/<offset>`). The processor treats it as
//! new input: it gets a new place in the chain, while the quarantine entry keeps the old one.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use audit_schema::wire::headers;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use serde::Serialize;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Dead-letter topic partition.
    pub partition: i32,
    /// Offset there.
    pub offset: i64,
    /// Its headers (`audit.error.class`, `audit.error.reason`, `audit.source.*`, …).
    pub headers: BTreeMap<String, String>,
    /// The record key (tenant), when UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Payload size in bytes.
    pub bytes: usize,
    /// The first 120 characters of the payload (lossy UTF-8).
    pub preview: String,
}

impl DeadLetter {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("?", String::as_str)
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{}/{} {} from {}/{}/{}: {} ({} bytes) {}",
            self.partition,
            self.offset,
            self.header(headers::ERROR_CLASS),
            self.header(headers::SOURCE_TOPIC),
            self.header(headers::SOURCE_PARTITION),
            self.header(headers::SOURCE_OFFSET),
            self.header(headers::ERROR_REASON),
            self.bytes,
            self.preview
        )
    }
}

/// Every dead letter in `topic`, oldest first per partition.
pub fn list(brokers: &str, topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    crate::kafka::scan_topic(brokers, topic, &mut |m| {
        let headers = crate::kafka::header_texts(m.headers()).into_iter().collect();
        let payload = m.payload().unwrap_or_default();
        let preview: String = String::from_utf8_lossy(payload).chars().take(120).collect();
        out.push(DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            headers,
            key: m.key().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_owned),
            bytes: payload.len(),
            preview: preview.replace('\n', "\\n"),
        });
        Ok(())
    })?;
    Ok(out)
}

/// Publishes dead letter `partition/offset` of `dlq_topic` (or `fixed` instead of its payload) to
/// `raw_topic` with its original key; returns where it landed.
pub async fn replay(
    brokers: &str,
    dlq_topic: &str,
    partition: i32,
    offset: i64,
    fixed: Option<Vec<u8>>,
    raw_topic: &str,
) -> anyhow::Result<(i32, i64)> {
    let mut found = None;
    crate::kafka::scan_topic(brokers, dlq_topic, &mut |m| {
        if m.partition() == partition && m.offset() == offset {
            let checkpoint = crate::kafka::is_checkpoint(m);
            found = Some((m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec(), checkpoint));
        }
        Ok(())
    })?;
    let Some((key, payload, checkpoint)) = found else {
        bail!("{dlq_topic} has no record at partition {partition} offset {offset} (auditctl dlq list shows them)")
    };
    if checkpoint {
        bail!(
            "{dlq_topic} partition {partition} offset {offset} is a signed checkpoint a sink could not store, not an event: it cannot go to the raw topic (fix the store; the checkpoint is also in the processed partition)"
        );
    }
    let payload = fixed.unwrap_or(payload);
    let producer: FutureProducer = audit_kafka::ClientSettings::new(brokers, "auditctl")
        .client_config(&[])?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("Kafka producer")?;
    let from = format!("{dlq_topic}/{partition}/{offset}");
    let headers = OwnedHeaders::new().insert(Header { key: headers::REPLAYED_FROM, value: Some(from.as_str()) });
    let mut record = FutureRecord::<[u8], [u8]>::to(raw_topic).payload(&payload).headers(headers);
    if let Some(key) = &key {
        record = record.key(key);
    }
    let delivered = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publishing to {raw_topic}: {e}"))?;
    Ok((delivered.partition, delivered.offset))
}
