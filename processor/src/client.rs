//! The librdkafka settings the processor fixes and why: its clients are built with them, and
//! config validation refuses them as pass-through options. A leaf: no runtime in here.

use audit_kafka::lanes::{consumer_keys, OffsetGone};
use audit_kafka::Required;

/// The raw-topic consumer's fixed keys (the lane engine's). A lane resumes at an explicit offset
/// (from the processed tail); the reset policy only decides what happens when that offset is gone
/// from the raw topic.
pub(crate) fn consumer_required(accept_raw_loss: bool) -> Vec<Required> {
    consumer_keys(if accept_raw_loss {
        OffsetGone::Earliest { reason: "kafka.accept_raw_loss continues after raw records that are gone" }
    } else {
        OffsetGone::Stop {
            reason: "raw records gone before they were processed stop the processor (kafka.accept_raw_loss)",
        }
    })
}

/// The producer's fixed keys (processed events, dead letters, checkpoints).
pub(crate) fn producer_required() -> Vec<Required> {
    vec![
        Required::fixed("enable.idempotence", "true", "a lane's events must land in order, without duplicates or gaps"),
        Required::fixed("acks", "all", "an event counts only when every in-sync replica has it"),
        Required::fixed(
            "message.timeout.ms",
            "0",
            "the chain cannot skip an event, so delivery is retried until it succeeds",
        ),
        Required::fixed("max.in.flight.requests.per.connection", "5", "ordering under idempotence"),
        Required::fixed(
            "enable.gapless.guarantee",
            "true",
            "an event that can never be delivered stops the producer instead of leaving a gap before later ones",
        ),
    ]
}

/// Every librdkafka key the processor fixes (refused as pass-through options).
pub fn protected_keys() -> Vec<Required> {
    let mut keys = consumer_required(false);
    keys.extend(producer_required());
    keys.extend_from_slice(audit_kafka::GROUP_MEMBER_KEYS);
    keys
}
