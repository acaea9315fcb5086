//! `audit-producer`: publish audit events from any Rust service to Kafka, without losing one.
//!
//! # Quick start
//!
//! ```no_run
//! use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Outcome, Target};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let audit = AuditLogger::builder("billing-api")
//!     .brokers("kafka-1:9092,kafka-2:9092")
//!     .topic("audit.raw")
//!     .environment("production")
//!     .spool_dir("/var/lib/billing-api/audit-spool")
//!     .build()
//!     .await?;
//!
//! // A logger for one request: every event gets the tenant and request id.
//! let request = audit.child(Context { tenant_id: Some("tenant-1".into()), request_id: Some("req-7".into()), ..Context::default() });
//! let mut event = AuditEventInput::new("billing.invoice.create", Outcome::Success, Actor::new("user", "u-42"));
//! event.target = Some(Target::new("invoice", "inv-456"));
//! let receipt = request.log(event).await?;
//! for warning in &receipt.warnings {
//!     eprintln!("audit warning: {warning}");
//! }
//!
//! let report = audit.shutdown(std::time::Duration::from_secs(10)).await;
//! assert_eq!(report.pending, 0);
//! # Ok(()) }
//! ```
//!
//! # What `log` does
//! 1. Merges the logger's default context, sets `context.service`/`environment`, takes trace ids
//!    from the current OpenTelemetry span, validates against the contract ([`audit_schema`]): an
//!    invalid event is an error naming the field; an identifier-like action is a warning (an error
//!    with `strict_action_naming`).
//! 2. Fixes `eventId` (ULID), `occurredAt` and `producer {id, seq}` *at the producer*, so every
//!    retry and replay carries the same values and downstream can see gaps in `seq`.
//! 3. Checks the encoded size against `max_event_bytes` and the topic's `max.message.bytes`: an
//!    oversize event is an error here, not a broker rejection later.
//! 4. Keys the record by `context.tenantId` (else the service name); librdkafka's `murmur2_random`
//!    partitioner puts it where the Java clients would ([`partition::partition_for_key`]).
//!
//! # Modes and guarantees
//! * [`Mode::Queue`] (default): `log` returns once the event is written to the durable local spool
//!   (one `write(2)`, so a `kill -9` cannot lose it; the fsync policy covers power loss). The
//!   idempotent producer (`acks=all`) delivers in the background; a segment file is deleted once
//!   all its events are acknowledged. While the broker is away or the in-memory queue (bounded by
//!   `queue_max_events`/`queue_max_bytes`) is full, events wait on disk, in order, and are sent
//!   when it is back, or at the next start after a crash. A full spool is an error from `log`.
//! * [`Mode::Block`]: every `log` waits for the acknowledgement and returns where it was stored.
//! * [`Mode::Drop`]: no spool; when the queue is full `log` returns [`LogError::Dropped`] and the
//!   drop is counted.
//!
//! In no mode is an accepted event lost silently: events the broker refuses for good are counted,
//! logged and kept in `failed.spool`; `flush`/`shutdown` report what is still pending.
//!
//! # Layout
//! The logger's API is `logger.rs`, its builder `logger/builder.rs`, its Kafka side (delivery
//! reports, spool replay, maintenance) `logger/delivery.rs`. [`config`] (keys and validation),
//! [`spool`] (segment files: `spool/frame.rs` the format, `spool/recovery.rs` reopening,
//! `spool/failed.rs` refused events), [`partition`] (murmur2),
//! [`metrics`] (Prometheus names), [`trace`] (W3C traceparent); the `axum` feature adds
//! [`axum_layer`]. `docs/PRODUCER.md` covers modes, spool, guarantees and limits.

pub mod config;
mod logger;
pub mod metrics;
pub mod partition;
pub mod spool;
pub mod trace;

#[cfg(feature = "axum")]
pub mod axum_layer;

pub use audit_schema::{Actor, AuditEventInput, Context, Diff, FieldError, Outcome, Target};
pub use config::{Compression, ConfigError, Encoding, Fsync, Mode, ProducerConfig, SpoolConfig};
pub use logger::{AuditLogger, AuditLoggerBuilder, BuildError, Delivered, FlushReport, LogError, LogReceipt};
