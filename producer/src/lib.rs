//! `audit-producer`: the library applications use to publish audit events.
//!
//! **Status: skeleton.** The producer issue fills this crate. It will own:
//! * a builder (brokers, raw topic, service, environment, mode, limits, pass-through librdkafka
//!   options, metrics registry) whose `build()` rejects invalid config naming the key;
//! * `log(input)` / `log_confirmed(input)`: validation against [`audit_schema`], `eventId` (ULID),
//!   `occurredAt` and `producer {id, seq}` filled at the producer, keyed by `context.tenantId` with the
//!   Java-compatible murmur2 partitioner, idempotent delivery (`acks=all`);
//! * the `Queue`, `Block` and `Drop` modes, and a durable local spool (length + CRC32 framed segments)
//!   so that no accepted event is lost while Kafka is away;
//! * an `axum` feature with a request-context layer and extractor.
//!
//! Today it re-exports the contract types users build events with.

pub use audit_schema::{Actor, AuditEventInput, Context, Diff, Outcome, Target};
