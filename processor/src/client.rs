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

/// A lane's transactional producer's fixed keys (`processing_guarantee = "exactly_once"`): its
/// `transactional.id` fences the partition's previous owner. `message.timeout.ms` is left to
/// librdkafka, which keeps it within `transaction.timeout.ms`: an event that cannot be delivered
/// fails its transaction, which aborts as a whole, so nothing is skipped and nothing lands out of
/// order.
pub(crate) fn transactional_producer_required(transactional_id: &str) -> Vec<Required> {
    vec![
        Required::fixed("enable.idempotence", "true", "a lane's events must land in order, without duplicates or gaps"),
        Required::fixed("acks", "all", "an event counts only when every in-sync replica has it"),
        Required::fixed("max.in.flight.requests.per.connection", "5", "ordering under idempotence"),
        Required {
            key: "transactional.id",
            value: transactional_id.to_owned().into(),
            reason: "derived from kafka.group_id, kafka.processed_topic and the partition, so the partition's next owner fences the previous one",
        },
        Required::fixed(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT_MS,
            "how long the broker keeps an open transaction of an owner that vanished and had no successor yet",
        ),
    ]
}

/// `transaction.timeout.ms` of the lanes' producers. A successor aborts a vanished owner's open
/// transaction at once (its `init_transactions`); only an owner without a successor holds the
/// partition's last stable offset this long.
const TRANSACTION_TIMEOUT_MS: &str = "60000";

/// Every librdkafka key the processor fixes (refused as pass-through options).
pub fn protected_keys() -> Vec<Required> {
    let mut keys = consumer_required(false);
    keys.extend(producer_required());
    keys.extend(transactional_producer_required(""));
    keys.extend_from_slice(audit_kafka::GROUP_MEMBER_KEYS);
    keys
}

/// The `transactional.id` of each lane's producer: `<group_id>.<processed_topic>.<partition>`.
/// Stable across restarts and instances, so whoever owns a partition next fences whoever owned it
/// before; one per group and processed topic, so two processor groups (or a group writing two
/// topics) never fence each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionalIds {
    prefix: String,
}

/// Longest `transactional.id` accepted (with the longest partition number): the broker keys its
/// transaction state by it, and ACLs name it.
pub const MAX_TRANSACTIONAL_ID: usize = 255;

impl TransactionalIds {
    /// The ids of `group_id`'s lanes writing `processed_topic`. Refused: characters other than
    /// ASCII letters, digits, `.`, `_` and `-` (the id must read the same in the broker's logs and in
    /// a prefixed ACL, `<group_id>.`), and ids longer than [`MAX_TRANSACTIONAL_ID`].
    pub fn new(group_id: &str, processed_topic: &str) -> Result<TransactionalIds, String> {
        let allowed = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if group_id.is_empty() || !allowed(group_id) {
            return Err(format!(
                "{group_id:?} cannot name transactions (kafka.processing_guarantee = \"exactly_once\" derives each lane's transactional.id from it): use ASCII letters, digits, '.', '_' and '-'"
            ));
        }
        if processed_topic.is_empty() || !allowed(processed_topic) {
            return Err(format!("processed topic {processed_topic:?} cannot name transactions"));
        }
        let prefix = format!("{group_id}.{processed_topic}.");
        let longest = prefix.len() + i32::MAX.to_string().len();
        if longest > MAX_TRANSACTIONAL_ID {
            return Err(format!(
                "the lanes' transactional.id <group_id>.<processed_topic>.<partition> would be up to {longest} characters, over {MAX_TRANSACTIONAL_ID}: shorten kafka.group_id"
            ));
        }
        Ok(TransactionalIds { prefix })
    }

    /// The `transactional.id` of the lane of `partition`.
    pub fn for_partition(&self, partition: i32) -> String {
        format!("{}{partition}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lanes_transactional_id_is_group_topic_and_partition() {
        let ids = TransactionalIds::new("audit-processor", "audit.processed").unwrap();
        assert_eq!(ids.for_partition(0), "audit-processor.audit.processed.0");
        assert_eq!(ids.for_partition(11), "audit-processor.audit.processed.11");
        // Another group, or another processed topic, never shares an id (they would fence each other).
        assert_ne!(
            TransactionalIds::new("audit-processor-b", "audit.processed").unwrap().for_partition(0),
            ids.for_partition(0)
        );
        assert_ne!(
            TransactionalIds::new("audit-processor", "audit.processed2").unwrap().for_partition(0),
            ids.for_partition(0)
        );
    }

    #[test]
    fn transactional_ids_refuse_other_characters_and_lengths() {
        for group in ["", "audit processor", "audit/processor", "prozéssor", "a*"] {
            let err = TransactionalIds::new(group, "audit.processed").unwrap_err();
            assert!(err.contains("exactly_once"), "{group:?}: {err}");
        }
        let longest_ok = "g".repeat(MAX_TRANSACTIONAL_ID - "..2147483647".len() - 1);
        assert!(TransactionalIds::new(&longest_ok, "t").is_ok());
        let err = TransactionalIds::new(&format!("{longest_ok}g"), "t").unwrap_err();
        assert!(err.contains("shorten kafka.group_id"), "{err}");
    }

    #[test]
    fn the_transactional_id_cannot_be_passed_through() {
        let keys = protected_keys();
        for key in ["transactional.id", "transaction.timeout.ms", "enable.idempotence"] {
            assert!(keys.iter().any(|r| r.key == key), "{key} is protected");
        }
    }
}
