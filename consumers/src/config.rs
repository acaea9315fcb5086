//! Sink configuration: figment merges defaults ← TOML file ← `AUDIT_<SECTION>__<KEY>` environment
//! variables into [`SinkConfig`]; [`SinkConfig::validate`] checks every value without I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use audit_kafka::lanes::GroupMember;
use audit_kafka::ClientSettings;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::stores::StoreConfig;

/// A config value that is not acceptable, with its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sink config {key}: {message}")]
pub struct ConfigError {
    /// Key path, e.g. `batch.max_events`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Kafka settings of a sink: one consumer group per sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// This sink's consumer group (each sink has its own).
    pub group_id: String,
    /// Processed topic (input).
    pub processed_topic: String,
    /// This sink's dead-letter topic (records it can never accept).
    pub dead_letter_topic: String,
    /// Session timeout, milliseconds.
    pub session_timeout_ms: u64,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    /// When this sink's committed offset is gone from the processed topic (retention removed
    /// events before the sink stored them): `false` stops the sink with an error; `true` continues
    /// from the earliest event, and verifying the store reports the gap.
    pub accept_loss: bool,
    /// Extra librdkafka options.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: String::new(),
            processed_topic: audit_schema::wire::topics::PROCESSED.into(),
            dead_letter_topic: String::new(),
            session_timeout_ms: 10_000,
            instance_id: None,
            accept_loss: false,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// Batching per partition lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most events per write.
    pub max_events: usize,
    /// Most bytes (encoded events) per write.
    pub max_bytes: usize,
    /// Longest a partial batch waits, milliseconds.
    pub max_wait_ms: u64,
    /// A partial batch is also written once no record has come for this long, milliseconds: the
    /// records of a processor's transaction become readable at once, and waiting out `max_wait_ms`
    /// after such a burst only adds latency. Under a steady stream records keep coming and batches
    /// still fill up to the bounds above. A value above `max_wait_ms` has no effect.
    pub idle_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_events: 1000, max_bytes: 4 << 20, max_wait_ms: 200, idle_ms: 10 }
    }
}

/// Retries of retriable failures, and the circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff, milliseconds (doubled per attempt, with jitter).
    pub base_backoff_ms: u64,
    /// Longest backoff, milliseconds.
    pub max_backoff_ms: u64,
    /// Consecutive failures that open the circuit (the lane then waits `cooldown_ms` between probes).
    pub failure_threshold: u32,
    /// Cool-down of an open circuit, milliseconds.
    pub cooldown_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { base_backoff_ms: 100, max_backoff_ms: 30_000, failure_threshold: 5, cooldown_ms: 10_000 }
    }
}

/// HTTP endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "0.0.0.0:9465".into() }
    }
}

/// Everything a sink can be told.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Batching.
    pub batch: BatchConfig,
    /// Retries and circuit breaker.
    pub retry: RetryConfig,
    /// The store (`kind`, one of `stores::KINDS`, plus that store's settings); required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConfig>,
    /// HTTP endpoints.
    pub http: HttpConfig,
    /// SIGTERM drain deadline, milliseconds.
    pub drain_timeout_ms: u64,
    /// `tracing` filter.
    pub log_filter: String,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config.
    pub config: SinkConfig,
    /// The store's settings.
    pub store: StoreConfig,
    /// Kafka client settings.
    pub kafka: ClientSettings,
    /// Dead-letter topic (explicit or `<processed topic>.dlq.<group>`).
    pub dead_letter_topic: String,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// The store's connection URL or URI (PostgreSQL, MongoDB), from its config or environment.
    pub store_url: Option<String>,
}

impl SinkConfig {
    /// Loads defaults ← `file` ← `AUDIT_<SECTION>__<KEY>` env. Unknown keys are errors naming the key.
    pub fn load(file: Option<&Path>) -> Result<SinkConfig, ConfigError> {
        let defaults = SinkConfig { drain_timeout_ms: 20_000, log_filter: "info".into(), ..SinkConfig::default() };
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Some(file) = file {
            if !file.exists() {
                return Err(bad("config file", format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Section keys have `__` (`AUDIT_KAFKA__GROUP_ID`); the two top-level keys are named, so
        // that other `AUDIT_*` variables (`AUDIT_CONFIG`, …) are not taken for config keys.
        let top_level = |k: &str| ["log_filter", "drain_timeout_ms"].iter().any(|t| k.eq_ignore_ascii_case(t));
        figment = figment.merge(
            Env::prefixed("AUDIT_").filter(move |k| k.as_str().contains("__") || top_level(k.as_str())).split("__"),
        );
        figment.extract().map_err(|e| {
            let key = e.path.join(".");
            bad(if key.is_empty() { "config".to_owned() } else { key }, e.kind.to_string())
        })
    }

    /// Checks every value without I/O.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let k = &self.kafka;
        GroupMember::new(&k.group_id, k.session_timeout_ms, k.instance_id.as_deref())
            .validate()
            .map_err(|(key, message)| bad(format!("kafka.{key}"), message))?;
        let topic_ok = |t: &str| {
            !t.is_empty() && t.len() <= 249 && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !topic_ok(&k.processed_topic) {
            return Err(bad("kafka.processed_topic", format!("{:?} is not a valid topic name", k.processed_topic)));
        }
        let dead_letter_topic = if k.dead_letter_topic.is_empty() {
            format!("{}{}{}", k.processed_topic, audit_schema::wire::topics::SINK_DEAD_LETTERS_INFIX, k.group_id)
        } else {
            k.dead_letter_topic.clone()
        };
        if !topic_ok(&dead_letter_topic) {
            return Err(bad("kafka.dead_letter_topic", format!("{dead_letter_topic:?} is not a valid topic name")));
        }
        let mut kafka = ClientSettings::new(k.brokers.clone(), format!("audit-sink/{}", k.group_id));
        kafka.pass_through = k.librdkafka.clone();
        kafka.validate(&crate::client::protected_keys()).map_err(|e| match e {
            audit_kafka::Error::ProtectedKey { key, reason } => {
                bad(format!("kafka.librdkafka.{key}"), format!("cannot be overridden: {reason}"))
            }
            other => bad("kafka.brokers", other.to_string()),
        })?;
        let b = &self.batch;
        if !(1..=100_000).contains(&b.max_events) {
            return Err(bad("batch.max_events", "must be between 1 and 100000"));
        }
        if b.max_bytes < 1024 {
            return Err(bad("batch.max_bytes", "must be at least 1024"));
        }
        if b.max_wait_ms == 0 || b.max_wait_ms > 60_000 {
            return Err(bad("batch.max_wait_ms", "must be between 1 and 60000"));
        }
        if b.idle_ms == 0 || b.idle_ms > 60_000 {
            return Err(bad("batch.idle_ms", "must be between 1 and 60000"));
        }
        let r = &self.retry;
        if r.base_backoff_ms == 0 || r.max_backoff_ms < r.base_backoff_ms {
            return Err(bad("retry.max_backoff_ms", "must be at least retry.base_backoff_ms, which must be positive"));
        }
        if r.failure_threshold == 0 {
            return Err(bad("retry.failure_threshold", "must be positive"));
        }
        let Some(store) = &self.store else {
            let (last, others) = crate::stores::KINDS.split_last().unwrap_or((&"", &[]));
            let kinds = format!("{} or {last}", others.join(", "));
            return Err(bad("store.kind", format!("missing: choose the store ({kinds})")));
        };
        let store_url = store.check().map_err(|(key, message)| bad(key, message))?;
        let http_listen = self
            .http
            .listen
            .parse()
            .map_err(|e| bad("http.listen", format!("{:?} is not host:port ({e})", self.http.listen)))?;
        if self.drain_timeout_ms == 0 {
            return Err(bad("drain_timeout_ms", "must be positive"));
        }
        Ok(Settings {
            store: store.clone(),
            kafka,
            dead_letter_topic,
            http_listen,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            store_url,
            config: self,
        })
    }
}
