//! The topics the processor works with: all three exist, raw and processed have the same
//! partition count, and the record sizes the processor may produce fit them.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::RunError;
use crate::settings::Settings;

/// Room a processed record needs beyond its event's canonical size (`limits.max_event_bytes`):
/// the integrity hash, key, headers and batch framing.
const RECORD_OVERHEAD: usize = 64 * 1024;

/// Room a dead letter needs beyond the raw record's key and payload: headers and framing.
const DEAD_LETTER_OVERHEAD: usize = 16 * 1024;

/// Smallest `max.message.bytes` the dead-letter topic must allow.
const MIN_DEAD_LETTER_TOPIC_BYTES: usize = 64 * 1024;

/// Record sizes the processor may produce, from the config and the topics' `max.message.bytes`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordLimits {
    /// librdkafka `message.max.bytes` of the producer.
    pub(super) producer_max: usize,
    /// Largest raw key + payload a dead letter carries; a larger record's dead letter names its
    /// source without the bytes (they stay in the raw topic, and the quarantine entry holds
    /// the payload's SHA-256).
    pub(super) dead_letter_bytes: usize,
    /// librdkafka `batch.size`: a batch of several records must fit the smaller topic limit too
    /// (the broker checks whole batches; a single larger record still goes alone).
    pub(super) batch_bytes: usize,
}

impl RecordLimits {
    /// Reads both topics' `max.message.bytes` (when the broker reports them) and refuses a
    /// processed topic that cannot hold the largest event the limits allow: every such event
    /// would fail delivery, stop its lane and fail again after each restart.
    pub(super) fn check(settings: &Settings) -> Result<RecordLimits, RunError> {
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

/// Checks that the three topics exist and raw and processed have the same partition count.
pub(super) fn check_topology(settings: &Settings) -> Result<i32, RunError> {
    let k = &settings.config.kafka;
    let probe: BaseConsumer = settings
        .kafka
        .client_config(&[])
        .map_err(|e| RunError::Client(e.to_string()))?
        .create()
        .map_err(|e| RunError::Client(e.to_string()))?;
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
