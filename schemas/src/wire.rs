//! The wire contract every crate shares, defined once: topic-name defaults, the Kafka headers on
//! processed records and dead letters, record kinds, dead-letter classes and the quarantine
//! action. Producers, the processor, the sinks and `auditctl` all name these constants; changing
//! one changes what is on the wire (`docs/ARCHITECTURE.md`, "Wire contract").

/// Default topic names (each is configurable).
pub mod topics {
    /// Where applications publish raw events, keyed by tenant.
    pub const RAW: &str = "audit.raw";
    /// Where the processor publishes chained events and checkpoints (partition p: chain of raw p).
    pub const PROCESSED: &str = "audit.processed";
    /// The processor's dead-letter topic.
    pub const DEAD_LETTERS: &str = "audit.dlq";
    /// Prefix of a sink's own dead-letter topic: `<processed topic>.dlq.<group id>`.
    pub const SINK_DEAD_LETTERS_INFIX: &str = ".dlq.";
}

/// Kafka header names.
pub mod headers {
    /// On every processed event: its `eventId` (it also marks the record as a processor's).
    pub const EVENT_ID: &str = "audit.event_id";
    /// What a processed-topic record holds: none or [`super::RECORD_EVENT`] for an event,
    /// [`super::RECORD_CHECKPOINT`] for a signed checkpoint.
    pub const RECORD: &str = "audit-record";
    /// W3C trace context, passed from the raw record to the processed one.
    pub const TRACEPARENT: &str = "traceparent";
    /// Dead letters: the class ([`super::dead_letter_class`]).
    pub const ERROR_CLASS: &str = "audit.error.class";
    /// Dead letters: the reason, for a person.
    pub const ERROR_REASON: &str = "audit.error.reason";
    /// A sink's dead letters: the sink that refused the record.
    pub const SINK: &str = "audit.sink";
    /// Dead letters: where the record came from.
    pub const SOURCE_TOPIC: &str = "audit.source.topic";
    /// Dead letters: its partition.
    pub const SOURCE_PARTITION: &str = "audit.source.partition";
    /// Dead letters: its offset.
    pub const SOURCE_OFFSET: &str = "audit.source.offset";
    /// The processor's dead letters: the `eventId` of the quarantine entry chained in its place.
    pub const QUARANTINE_EVENT_ID: &str = "audit.quarantine.event_id";
    /// The processor's dead letters: why the key and payload are not carried (too large).
    pub const PAYLOAD_OMITTED: &str = "audit.payload.omitted";
    /// A record `auditctl dlq replay` republished: the dead letter it came from (`topic/partition/offset`).
    pub const REPLAYED_FROM: &str = "audit.replayed_from";
}

/// The [`headers::RECORD`] value of an event (also: no header).
pub const RECORD_EVENT: &str = "event";
/// The [`headers::RECORD`] value of a checkpoint record.
pub const RECORD_CHECKPOINT: &str = "checkpoint";

/// The `action` of the quarantine entry the processor chains in place of a record it
/// dead-letters, so that the chain accounts for every raw offset.
pub const QUARANTINE_ACTION: &str = "audit.quarantined";

/// The [`headers::ERROR_CLASS`] values.
pub mod dead_letter_class {
    /// The processor: a record with no payload.
    pub const EMPTY: &str = "empty";
    /// Neither JSON nor Avro the processor or sink can read.
    pub const DECODE: &str = "decode";
    /// The processor: an event that breaks the schema.
    pub const INVALID: &str = "invalid";
    /// The processor: an event over the limits that `oversize` cannot shrink.
    pub const OVERSIZE: &str = "oversize";
    /// The processor: a bug of ours (the record is kept, the lane goes on).
    pub const INTERNAL: &str = "internal";
    /// A sink: a record the store refuses whatever the retries.
    pub const POISON: &str = "poison";
}
