//! `audit-processor`: consumes the raw topic and publishes processed, chained events.
//!
//! **Status: skeleton.** The processor issue fills this crate. Per raw partition, in one ordered lane,
//! it will: decode (JSON or Avro), validate, normalize (`eventId`, `receivedAt` from the broker
//! timestamp), redact secrets, enforce payload limits, link the event into the partition's SHA-256
//! chain with [`audit_schema::chain`], and publish to the same partition of the processed topic.
//! Records that can never be processed go to the dead-letter topic and leave a quarantine entry in
//! the chain. Exactly-once chaining without broker transactions comes from resuming each lane at the
//! tail of its processed partition.
