//! The logger: validation, enrichment, the spool, the Kafka producer and the background replayer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audit_schema::codec::{self, ContractError, WireFormat};
use audit_schema::{AuditEventInput, Context, FieldError, ProducerInfo, Timestamp, ValidationOptions, SCHEMA_VERSION};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::Message;
use tokio::sync::oneshot;

use crate::config::{ConfigError, Encoding, Mode, ProducerConfig, Settings};
use crate::metrics::ProducerMetrics;
use crate::spool::{FailedLog, FsyncPolicy, Position, Spool, SpoolError, SpoolRecord};
use crate::trace;

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

#[derive(Debug)]
struct DeliveryContext {
    shared: Arc<Shared>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

fn is_purge(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight))
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<DeliveryToken>) {
        let DeliveryToken { segment, confirm, enqueued } = *token;
        let m = &self.shared.metrics;
        let outcome = match result {
            Ok(message) => {
                m.delivered.inc();
                m.delivery_latency.observe(enqueued.elapsed().as_secs_f64());
                Ok(Delivered { partition: message.partition(), offset: message.offset() })
            }
            Err((error, _)) if is_purge(error) && self.shared.shutting_down.load(Ordering::Relaxed) => {
                // Shutdown purged it: it stays in the spool (Queue mode) for the next start.
                if let Some(c) = confirm {
                    let _ = c.send(Err(LogError::ShuttingDown));
                }
                return;
            }
            Err((error, message)) => {
                m.failed.inc();
                let key = message.key().unwrap_or_default();
                tracing::error!(%error, key = %String::from_utf8_lossy(key), "broker refused an audit event for good");
                let mut st = self.shared.lock();
                if let Some(failed) = st.failed.as_mut() {
                    let traceparent = message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == trace::TRACEPARENT))
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()));
                    let record = SpoolRecord {
                        key: key.to_vec(),
                        traceparent,
                        value: message.payload().unwrap_or_default().to_vec(),
                    };
                    if let Err(e) = failed.append(&record) {
                        tracing::error!(error = %e, "could not park a refused audit event in failed.spool");
                    }
                }
                Err(LogError::Delivery(error.clone()))
            }
        };
        if let Some(segment) = segment {
            if let Some(spool) = self.shared.lock().spool.as_mut() {
                spool.ack(segment);
            }
        }
        if let Some(c) = confirm {
            let _ = c.send(outcome);
        }
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

/// Builds an [`AuditLogger`]; every setting is also a [`ProducerConfig`] key.
#[derive(Debug)]
pub struct AuditLoggerBuilder {
    config: ProducerConfig,
    registry: Option<prometheus::Registry>,
}

impl AuditLoggerBuilder {
    /// Starts from `config` (e.g. loaded with figment).
    pub fn from_config(config: ProducerConfig) -> Self {
        AuditLoggerBuilder { config, registry: None }
    }

    /// Kafka bootstrap servers.
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.config.brokers = brokers.into();
        self
    }

    /// Raw topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.config.topic = topic.into();
        self
    }

    /// Deployment environment.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.config.environment = Some(environment.into());
        self
    }

    /// Delivery mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Wire encoding on the raw topic.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.config.encoding = encoding;
        self
    }

    /// Unknown fields are errors.
    pub fn strict_validation(mut self, on: bool) -> Self {
        self.config.strict_validation = on;
        self
    }

    /// Identifier-like actions are errors.
    pub fn strict_action_naming(mut self, on: bool) -> Self {
        self.config.strict_action_naming = on;
        self
    }

    /// Largest encoded event, bytes.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.config.max_event_bytes = bytes;
        self
    }

    /// Spool directory of this instance.
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.spool.dir = Some(dir.into());
        self
    }

    /// Spool size cap, bytes.
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.config.spool.max_bytes = bytes;
        self
    }

    /// In-memory queue bound, events.
    pub fn queue_max_events(mut self, events: usize) -> Self {
        self.config.queue_max_events = events;
        self
    }

    /// A librdkafka option (security, SASL, TLS...). Keys the guarantees depend on are refused at
    /// `build()`.
    pub fn librdkafka(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.librdkafka.insert(key.into(), value.into());
        self
    }

    /// Registers the producer's metrics in `registry` (default: a private registry).
    pub fn metrics_registry(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Validates the config, opens the spool (replaying what a previous run left) and connects.
    ///
    /// A broker that is down does not fail the build: events wait in the spool.
    pub async fn build(self) -> Result<AuditLogger, BuildError> {
        let settings = self.config.validate()?;
        let config = &settings.config;
        let registry = self.registry.unwrap_or_default();
        let metrics = ProducerMetrics::register(&registry, &config.service)?;

        let (spool, failed, backlog) = if config.mode == Mode::Queue {
            let (spool, recovery) =
                Spool::open(&settings.spool_dir, config.spool.segment_bytes, config.spool.max_bytes, settings.fsync)?;
            let failed = FailedLog::open(&settings.spool_dir)?;
            let backlog = (recovery.records > 0).then(|| spool.start());
            if recovery.records > 0 {
                tracing::info!(records = recovery.records, segments = recovery.segments, bytes_cut = recovery.bytes_cut,
                    dir = %settings.spool_dir.display(), "replaying audit events left in the spool by a previous run");
                metrics.spooled.inc_by(recovery.records);
            }
            (Some(spool), Some(failed), backlog)
        } else {
            (None, None, None)
        };

        let shared = Arc::new(Shared {
            state: Mutex::new(State { seq: 0, spool, failed, backlog, confirms: HashMap::new() }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            metrics,
        });
        let producer: ThreadedProducer<DeliveryContext> =
            settings.client_config()?.create_with_context(DeliveryContext { shared: shared.clone() })?;
        let max_bytes = topic_limit(&settings).await.map_or(config.max_event_bytes, |t| t.min(config.max_event_bytes));
        let validation =
            ValidationOptions { strict: config.strict_validation, strict_action_naming: config.strict_action_naming };
        let producer_id = format!("{}-{}", config.service, ulid::Ulid::generate().to_string().to_lowercase());
        let core = Arc::new(Core {
            settings,
            producer_id,
            max_bytes,
            validation,
            producer,
            shared,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        core.start_threads();
        Ok(AuditLogger { core, defaults: Context::default() })
    }
}

/// The topic's `max.message.bytes` when the broker reports it (within a few seconds).
async fn topic_limit(settings: &Settings) -> Option<usize> {
    let topic = settings.config.topic.as_str();
    let wait = Duration::from_secs(3);
    let topics = [topic];
    let limits = audit_kafka::topics::max_message_bytes(&settings.kafka, &topics, wait);
    let limit = tokio::time::timeout(wait, limits).await.map(|r| match r {
        Ok(mut per_topic) => per_topic.remove(0),
        Err(e) => Err(e.to_string()),
    });
    match limit {
        // Each record also carries a key, headers and batch framing.
        Ok(Ok(limit)) => Some(limit.saturating_sub(256)),
        Ok(Err(error)) => {
            tracing::warn!(%error, topic, "could not read the topic's max.message.bytes; using max_event_bytes");
            None
        }
        Err(_) => {
            tracing::warn!(topic, "broker did not answer in time; using max_event_bytes as the size limit");
            None
        }
    }
}

impl Core {
    fn start_threads(self: &Arc<Self>) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if self.settings.config.mode == Mode::Queue {
            let core = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("audit-spool-replay".into())
                    .spawn(move || core.replay_loop())
                    .expect("spawn"),
            );
        }
        let core = self.clone();
        threads.push(
            std::thread::Builder::new()
                .name("audit-spool-sync".into())
                .spawn(move || core.maintenance_loop())
                .expect("spawn"),
        );
    }

    fn record_headers(traceparent: Option<&str>) -> Option<OwnedHeaders> {
        traceparent.map(|tp| OwnedHeaders::new().insert(Header { key: trace::TRACEPARENT, value: Some(tp) }))
    }

    /// Hands one record to librdkafka. On failure the token comes back.
    fn send(&self, record: &SpoolRecord, token: Box<DeliveryToken>) -> Result<(), (KafkaError, Box<DeliveryToken>)> {
        let mut base = BaseRecord::with_opaque_to(&self.settings.config.topic, token)
            .key(&record.key[..])
            .payload(&record.value[..]);
        if let Some(h) = Self::record_headers(record.traceparent.as_deref()) {
            base = base.headers(h);
        }
        self.producer.send(base).map_err(|(e, r)| (e, r.delivery_opaque))
    }

    /// Parks a record that librdkafka refuses outright, so it is not replayed forever.
    fn park_failed(&self, st: &mut State, record: &SpoolRecord, segment: Option<u64>, error: &KafkaError) {
        self.shared.metrics.failed.inc();
        tracing::error!(%error, "librdkafka refused an audit event; parked in failed.spool");
        if let Some(f) = st.failed.as_mut() {
            let _ = f.append(record);
        }
        if let (Some(seg), Some(spool)) = (segment, st.spool.as_mut()) {
            spool.ack(seg);
        }
    }

    /// Sends spooled records that have not reached librdkafka yet, in order.
    fn replay_loop(self: Arc<Self>) {
        loop {
            let (batch, next) = {
                let mut st = self.shared.lock();
                loop {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if st.backlog.is_some() {
                        break;
                    }
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, Duration::from_millis(200))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                let from = st.backlog.unwrap_or(Position { segment: 0, offset: 0 });
                let Some(spool) = st.spool.as_ref() else { return };
                match spool.read_from(from, 512) {
                    Ok((records, _)) if records.is_empty() => {
                        st.backlog = None;
                        continue;
                    }
                    Ok((records, next)) => {
                        let batch: Vec<_> =
                            records.into_iter().map(|(pos, r)| (pos, r, st.confirms.remove(&pos))).collect();
                        (batch, next)
                    }
                    Err(error) => {
                        drop(st);
                        tracing::error!(%error, "cannot read the spool; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            };
            for (pos, record, confirm) in batch {
                let mut token =
                    Box::new(DeliveryToken { segment: Some(pos.segment), confirm, enqueued: Instant::now() });
                loop {
                    match self.send(&record, token) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            token = back;
                            if self.shared.stop.load(Ordering::Relaxed) {
                                // Still in the spool: replayed at the next start.
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err((error, back)) => {
                            let mut st = self.shared.lock();
                            self.park_failed(&mut st, &record, back.segment, &error);
                            if let Some(c) = back.confirm {
                                let _ = c.send(Err(LogError::Delivery(error)));
                            }
                            break;
                        }
                    }
                }
            }
            self.shared.lock().backlog = Some(next);
        }
    }

    /// Background fsync (interval policy) and gauges.
    fn maintenance_loop(self: Arc<Self>) {
        let tick = match self.settings.fsync {
            FsyncPolicy::IntervalMs(ms) => Duration::from_millis(ms).min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        let mut last_gauges = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            let (handle, unacked, bytes) = {
                let mut st = self.shared.lock();
                match st.spool.as_mut() {
                    Some(s) => {
                        // Bounds what a crash could replay twice to about one tick of events.
                        if let Err(error) = s.release_acknowledged() {
                            tracing::error!(%error, "cannot rotate the spool");
                        }
                        (s.active_handle().ok(), s.unacked(), s.bytes())
                    }
                    None => (None, 0, 0),
                }
            };
            if matches!(self.settings.fsync, FsyncPolicy::IntervalMs(_)) {
                if let Some(h) = handle {
                    if let Err(error) = h.sync_data() {
                        tracing::error!(%error, "spool fsync failed");
                    }
                }
            }
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                let depth = if self.settings.config.mode == Mode::Queue {
                    unacked
                } else {
                    self.producer.in_flight_count().max(0) as u64
                };
                self.shared.metrics.queue_depth.set(depth as i64);
                self.shared.metrics.spool_bytes.set(bytes as i64);
                last_gauges = Instant::now();
            }
        }
    }

    fn pending(&self) -> u64 {
        let st = self.shared.lock();
        match st.spool.as_ref() {
            Some(s) => s.unacked(),
            None => self.producer.in_flight_count().max(0) as u64,
        }
    }

    fn report(&self, pending: u64) -> FlushReport {
        let m = &self.shared.metrics;
        FlushReport {
            accepted: m.accepted.get(),
            delivered: m.delivered.get(),
            failed: m.failed.get(),
            dropped: m.dropped.get(),
            pending,
            pending_in_spool: self.settings.config.mode == Mode::Queue,
        }
    }
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
