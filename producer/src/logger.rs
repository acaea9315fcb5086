//! The logger's API: [`AuditLogger`] (`log` validates, enriches and spools or sends an event;
//! `flush`, `shutdown`), its errors and receipts, and the state it shares with its threads.
//! `builder.rs` builds it; `delivery.rs` is the Kafka side (delivery reports, replay of the spool,
//! maintenance).

mod builder;
mod delivery;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audit_schema::codec::{self, ContractError, WireFormat};
use audit_schema::{AuditEventInput, Context, FieldError, ProducerInfo, Timestamp, ValidationOptions, SCHEMA_VERSION};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, PurgeConfig, ThreadedProducer};
use tokio::sync::oneshot;

use crate::config::{ConfigError, Encoding, Mode, ProducerConfig, Settings};
use crate::metrics::ProducerMetrics;
use crate::spool::{FailedLog, Position, Spool, SpoolError, SpoolRecord};
use crate::trace;

pub use builder::AuditLoggerBuilder;
use delivery::DeliveryContext;

/// Why `log` did not accept an event. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The event breaks the contract; nothing was sent.
    #[error("audit event rejected: {error}")]
    Invalid {
        /// What is wrong, naming each field.
        error: ContractError,
        /// Warnings found alongside.
        warnings: Vec<FieldError>,
    },
    /// The encoded event is larger than allowed; nothing was sent.
    #[error("audit event is {bytes} bytes, over the limit of {limit} bytes (max_event_bytes or the topic's max.message.bytes); move bulky data out of metadata/diff")]
    Oversize {
        /// Encoded size.
        bytes: usize,
        /// The limit in force.
        limit: usize,
    },
    /// `Drop` mode: the bounded queue was full and the event was dropped (and counted).
    #[error("audit event dropped: the in-memory queue is full (Drop mode)")]
    Dropped,
    /// `Block` mode: the in-memory queue is full; retry later.
    #[error("the in-memory queue is full; the broker is slow or unreachable")]
    QueueFull,
    /// The spool could not take the event (full, or a disk error); nothing was accepted.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The broker refused the event for good.
    #[error("the broker refused the audit event: {0}")]
    Delivery(KafkaError),
    /// No acknowledgement in time.
    #[error("no acknowledgement within {after:?}{}", if *.kept { "; the event is kept in the spool and will still be delivered" } else { "" })]
    Timeout {
        /// How long we waited.
        after: Duration,
        /// Whether the event stays in the spool (Queue mode) and will still be delivered.
        kept: bool,
    },
    /// The logger is shutting down and accepts nothing more.
    #[error("the audit producer is shutting down")]
    ShuttingDown,
    /// The event could not be encoded.
    #[error("cannot encode the audit event: {0}")]
    Encode(ContractError),
}

/// Why the logger could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A config value is wrong (the key is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// librdkafka refused the configuration.
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    /// The metrics could not be registered (e.g. twice in one registry).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Where the broker stored an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// What `log` did with an accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReceipt {
    /// The event's id (kept by every retry and replay).
    pub event_id: String,
    /// The producer sequence number given to the event.
    pub seq: u64,
    /// Tolerated problems (identifier-like action, unknown fields...).
    pub warnings: Vec<FieldError>,
    /// Where it was stored, when the call waited for the acknowledgement.
    pub delivered: Option<Delivered>,
}

/// What [`AuditLogger::flush`] and [`AuditLogger::shutdown`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Events accepted since start.
    pub accepted: u64,
    /// Events acknowledged since start.
    pub delivered: u64,
    /// Events the broker refused for good (kept in `failed.spool`).
    pub failed: u64,
    /// Events dropped (`Drop` mode).
    pub dropped: u64,
    /// Accepted events not acknowledged at the deadline. In `Queue` mode they are in the spool and
    /// are delivered later (or at the next start); in `Block`/`Drop` mode, after `shutdown` they are
    /// lost.
    pub pending: u64,
    /// Whether `pending` events are safe in the spool.
    pub pending_in_spool: bool,
}

type Confirm = oneshot::Sender<Result<Delivered, LogError>>;

/// Travels with each record through librdkafka and comes back in the delivery report.
#[derive(Debug)]
struct DeliveryToken {
    segment: Option<u64>,
    confirm: Option<Confirm>,
    enqueued: Instant,
}

#[derive(Debug)]
struct State {
    seq: u64,
    spool: Option<Spool>,
    failed: Option<FailedLog>,
    /// First spooled record not yet handed to librdkafka (Queue mode); while set, new events go
    /// to disk only, behind it, so order is kept.
    backlog: Option<Position>,
    /// `log_confirmed` waiters of records still in the backlog.
    confirms: HashMap<Position, Confirm>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    shutting_down: AtomicBool,
    metrics: ProducerMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Core {
    settings: Settings,
    producer_id: String,
    max_bytes: usize,
    validation: ValidationOptions,
    producer: ThreadedProducer<DeliveryContext>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("producer_id", &self.producer_id)
            .field("mode", &self.settings.config.mode)
            .finish()
    }
}

/// Publishes audit events. Cheap to clone; clones and [`AuditLogger::child`]ren share one producer.
#[derive(Debug, Clone)]
pub struct AuditLogger {
    core: Arc<Core>,
    defaults: Context,
}

impl AuditLogger {
    /// A builder for a logger of `service`.
    pub fn builder(service: impl Into<String>) -> AuditLoggerBuilder {
        AuditLoggerBuilder::from_config(ProducerConfig { service: service.into(), ..ProducerConfig::default() })
    }

    /// A logger that fills every unset context field from `defaults` (tenant, request id...).
    pub fn child(&self, defaults: Context) -> AuditLogger {
        let mut merged = defaults;
        merged.merge_defaults(&self.defaults);
        AuditLogger { core: self.core.clone(), defaults: merged }
    }

    /// This instance's producer id (`<service>-<ulid>`), written to every event with its sequence.
    pub fn producer_id(&self) -> &str {
        &self.core.producer_id
    }

    /// The size limit in force (the smaller of `max_event_bytes` and the topic's limit).
    pub fn max_event_bytes(&self) -> usize {
        self.core.max_bytes
    }

    /// Validates, enriches and publishes `input`.
    ///
    /// `Queue` mode returns once the event is in the durable spool; `Block` mode waits for the
    /// broker's acknowledgement; `Drop` mode returns at once and fails with [`LogError::Dropped`]
    /// when the queue is full.
    pub async fn log(&self, input: AuditEventInput) -> Result<LogReceipt, LogError> {
        if self.core.settings.config.mode == Mode::Block {
            return self.log_confirmed(input).await;
        }
        self.enqueue(input, None)
    }

    /// Like [`AuditLogger::log`], then waits for the broker's acknowledgement (up to
    /// `delivery_timeout_ms`) and reports where the event was stored.
    pub async fn log_confirmed(&self, input: AuditEventInput) -> Result<LogReceipt, LogError> {
        let (tx, rx) = oneshot::channel();
        let mut receipt = self.enqueue(input, Some(tx))?;
        let after = self.core.settings.delivery_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(Ok(delivered))) => {
                receipt.delivered = Some(delivered);
                Ok(receipt)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(LogError::ShuttingDown),
            Err(_) => Err(LogError::Timeout { after, kept: self.core.settings.config.mode == Mode::Queue }),
        }
    }

    fn enqueue(&self, mut input: AuditEventInput, confirm: Option<Confirm>) -> Result<LogReceipt, LogError> {
        let core = &*self.core;
        let m = &core.shared.metrics;
        if core.closed.load(Ordering::Relaxed) {
            return Err(LogError::ShuttingDown);
        }
        let config = &core.settings.config;
        input.context.merge_defaults(&self.defaults);
        if input.context.service.is_none() {
            input.context.service = Some(config.service.clone());
        }
        if input.context.environment.is_none() {
            input.context.environment.clone_from(&config.environment);
        }
        let traceparent = trace::apply_current(&mut input.context);
        let warnings = match codec::validate_input(&input, core.validation) {
            Ok(w) => w,
            Err(error) => {
                m.rejected.inc();
                return Err(LogError::Invalid { error, warnings: Vec::new() });
            }
        };
        let event_id = input.event_id.get_or_insert_with(|| ulid::Ulid::generate().to_string()).clone();
        input.context.occurred_at.get_or_insert_with(Timestamp::now);
        input.schema_version.get_or_insert(SCHEMA_VERSION);
        let key = input.context.tenant_id.clone().unwrap_or_else(|| config.service.clone()).into_bytes();
        let format = match config.encoding {
            Encoding::Json => WireFormat::Json,
            Encoding::Avro => WireFormat::Avro,
        };

        let mut st = core.shared.lock();
        let seq = st.seq + 1;
        input.producer = Some(ProducerInfo { id: core.producer_id.clone(), seq });
        let value = codec::encode_input(&input, format).map_err(LogError::Encode)?;
        let size = value.len() + key.len() + traceparent.as_ref().map_or(0, |t| t.len() + 16);
        if size > core.max_bytes {
            m.rejected.inc();
            return Err(LogError::Oversize { bytes: size, limit: core.max_bytes });
        }
        let record = SpoolRecord { key, traceparent, value };
        let position = match st.spool.as_mut() {
            Some(spool) => Some(spool.append(&record)?),
            None => None,
        };
        // The seq is used from here on, even by an event that is then dropped: a gap in a
        // producer's sequence downstream is exactly what a dropped event should look like.
        st.seq = seq;
        let receipt = LogReceipt { event_id, seq, warnings, delivered: None };

        if let (Some(_), Some(pos)) = (st.backlog, position) {
            // Behind records still on disk: the replayer sends it in order.
            m.accepted.inc();
            m.spooled.inc();
            if let Some(c) = confirm {
                st.confirms.insert(pos, c);
            }
            return Ok(receipt);
        }
        let token = Box::new(DeliveryToken { segment: position.map(|p| p.segment), confirm, enqueued: Instant::now() });
        match core.send(&record, token) {
            Ok(()) => {
                m.accepted.inc();
                Ok(receipt)
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => match (config.mode, position) {
                (Mode::Queue, Some(pos)) => {
                    m.accepted.inc();
                    m.spooled.inc();
                    st.backlog = Some(pos);
                    if let Some(c) = back.confirm {
                        st.confirms.insert(pos, c);
                    }
                    core.shared.wake.notify_all();
                    Ok(receipt)
                }
                (Mode::Drop, _) => {
                    m.dropped.inc();
                    Err(LogError::Dropped)
                }
                _ => Err(LogError::QueueFull),
            },
            Err((error, back)) => {
                core.park_failed(&mut st, &record, back.segment, &error);
                Err(LogError::Delivery(error))
            }
        }
    }

    /// Waits until every accepted event is acknowledged or `deadline` passes, then reports.
    pub async fn flush(&self, deadline: Duration) -> FlushReport {
        let until = Instant::now() + deadline;
        loop {
            let pending = self.core.pending();
            if pending == 0 || Instant::now() >= until {
                return self.core.report(pending);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting events, delivers what it can within `deadline`, keeps the rest in the
    /// spool (`Queue` mode) and reports. Further `log` calls fail with [`LogError::ShuttingDown`].
    pub async fn shutdown(&self, deadline: Duration) -> FlushReport {
        self.core.closed.store(true, Ordering::Relaxed);
        let report = self.flush(deadline).await;
        let core = &self.core;
        core.shared.shutting_down.store(true, Ordering::Relaxed);
        core.shared.stop.store(true, Ordering::Relaxed);
        core.shared.wake.notify_all();
        let threads: Vec<_> = std::mem::take(&mut *core.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Counted before the purge: in Block/Drop mode these are the events lost now.
        let pending = core.pending();
        // Whatever librdkafka still holds stays in the spool (Queue mode) for the next start.
        core.producer.purge(PurgeConfig::default().queue().inflight());
        let _ = core.producer.flush(Duration::from_millis(500));
        if let Some(spool) = core.shared.lock().spool.as_mut() {
            if let Err(error) = spool.release_acknowledged().and_then(|()| spool.sync()) {
                tracing::error!(%error, "final spool sync failed");
            }
        }
        if pending > 0 {
            tracing::warn!(
                pending,
                in_spool = report.pending_in_spool,
                "audit producer shut down with undelivered events"
            );
        }
        FlushReport { pending, ..report }
    }
}
