//! The librdkafka settings every sink fixes and why: its consumer is built with them, and
//! config validation refuses them as pass-through options. A leaf: no runtime in here.

use audit_kafka::lanes::{consumer_keys, OffsetGone};
use audit_kafka::Required;

/// The processed-topic consumer's fixed keys (the lane engine's).
pub(crate) fn consumer_required(accept_loss: bool) -> Vec<Required> {
    consumer_keys(if accept_loss {
        OffsetGone::Earliest { reason: "kafka.accept_loss continues after events that are gone" }
    } else {
        OffsetGone::Stop { reason: "events gone before this sink stored them stop it (kafka.accept_loss)" }
    })
}

/// Every librdkafka key the sink runtime fixes.
pub fn protected_keys() -> Vec<Required> {
    let mut keys = consumer_required(false);
    keys.extend_from_slice(audit_kafka::GROUP_MEMBER_KEYS);
    keys
}
