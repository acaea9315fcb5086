//! The librdkafka settings every sink fixes and why: its consumer is built with them, and
//! config validation refuses them as pass-through options. A leaf: no runtime in here.

use audit_kafka::Required;

/// The processed-topic consumer's fixed keys.
pub(crate) fn consumer_required(accept_loss: bool) -> Vec<Required> {
    let mut r = audit_kafka::AT_LEAST_ONCE_CONSUMER.to_vec();
    r.push(Required::fixed(
        "partition.assignment.strategy",
        "range,roundrobin",
        "lanes are handed over whole on revoke",
    ));
    // A partition without a committed offset is assigned from its beginning explicitly; the reset
    // policy only decides what happens when the committed offset is gone from the topic.
    r.push(if accept_loss {
        Required::fixed("auto.offset.reset", "earliest", "kafka.accept_loss continues after events that are gone")
    } else {
        Required::fixed(
            "auto.offset.reset",
            "error",
            "events gone before this sink stored them stop it (kafka.accept_loss)",
        )
    });
    r
}

/// Every librdkafka key the sink runtime fixes.
pub fn protected_keys() -> Vec<Required> {
    let mut keys = consumer_required(false);
    keys.extend_from_slice(audit_kafka::GROUP_MEMBER_KEYS);
    keys
}
