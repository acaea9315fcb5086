//! [`AuditLoggerBuilder`]: settings by method or from a [`ProducerConfig`], then `build` opens the
//! spool, creates the idempotent producer, reads the topic's size limit and starts the threads.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use audit_schema::{Context, ValidationOptions};
use rdkafka::producer::ThreadedProducer;

use crate::config::{Encoding, Mode, ProducerConfig, Settings};
use crate::metrics::ProducerMetrics;
use crate::spool::{FailedLog, Spool};

use super::{AuditLogger, BuildError, Core, DeliveryContext, Shared, State};

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

    /// How long a batch may wait to fill, milliseconds (librdkafka `linger.ms`).
    pub fn linger_ms(mut self, ms: u64) -> Self {
        self.config.linger_ms = Some(ms);
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
