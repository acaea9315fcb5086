//! Producer configuration: a serde struct (usable from TOML or env through figment), validated
//! without I/O into the settings the producer runs with.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use audit_kafka::{ClientSettings, Required};
use serde::Deserialize;

use crate::spool::FsyncPolicy;

/// What `log` does when the event cannot be handed to Kafka at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Default. `log` returns as soon as the event is in the durable spool; delivery happens in the
    /// background, in order; while the broker is away or slow, events wait on disk.
    #[default]
    Queue,
    /// Every `log` waits for the broker's acknowledgement (or fails with the reason).
    Block,
    /// No spool: when the bounded in-memory queue is full the event is refused, counted and the
    /// caller told. Events in memory at a crash are lost; `shutdown` reports any left undelivered.
    Drop,
}

/// How events are encoded on the raw topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8 JSON (default).
    #[default]
    Json,
    /// Avro single-object encoding.
    Avro,
}

/// Kafka compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (default: cheap on CPU, good on JSON).
    #[default]
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// When the spool forces records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every record.
    Always,
    /// Every `fsync_interval_ms` (default).
    #[default]
    Interval,
    /// Never explicitly.
    Never,
}

/// The durable spool (`Queue` mode).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of this instance's spool. Default: `<temp dir>/auditstream-spool/<service>`. Use a
    /// persistent volume in production; two processes cannot share one directory.
    pub dir: Option<PathBuf>,
    /// Size cap in bytes; `log` fails with a clear error when it is reached. Default 1 GiB.
    pub max_bytes: u64,
    /// Segment file size in bytes. Default 16 MiB.
    pub segment_bytes: u64,
    /// When records are forced to disk. A process crash loses nothing under any policy.
    pub fsync: Fsync,
    /// Interval of the `interval` policy. Default 100 ms.
    pub fsync_interval_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            fsync: Fsync::Interval,
            fsync_interval_ms: 100,
        }
    }
}

/// Everything the producer can be told. Field names are the config keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Raw topic events are published to.
    pub topic: String,
    /// Name of the emitting service; the key of events without a tenant, and `context.service`.
    pub service: String,
    /// Deployment environment, copied to `context.environment`.
    pub environment: Option<String>,
    /// `queue`, `block` or `drop`.
    pub mode: Mode,
    /// `json` or `avro`.
    pub encoding: Encoding,
    /// Reject events with unknown fields instead of warning.
    pub strict_validation: bool,
    /// Reject actions that embed identifiers instead of warning.
    pub strict_action_naming: bool,
    /// Largest encoded event accepted, in bytes. The topic's `max.message.bytes`, when the broker
    /// reports it, lowers this further. Default 1,000,000.
    pub max_event_bytes: usize,
    /// In-memory queue bound, events (librdkafka `queue.buffering.max.messages`). Default 100,000.
    pub queue_max_events: usize,
    /// In-memory queue bound, bytes. Default 64 MiB.
    pub queue_max_bytes: usize,
    /// How long a batch may wait to fill, milliseconds (librdkafka `linger.ms`). Default: 50 in
    /// `queue` and `drop` mode, where `log` does not wait for the broker and bigger batches cost the
    /// broker and the processor a half to a third less CPU per event under a live trickle
    /// (`docs/PERFORMANCE.md`); 5 in `block` mode, where every `log` waits for its batch.
    pub linger_ms: Option<u64>,
    /// Compression codec. Default lz4.
    pub compression: Compression,
    /// How long `Block` mode and `log_confirmed` wait for the acknowledgement, milliseconds.
    /// Default 30,000.
    pub delivery_timeout_ms: u64,
    /// The durable spool.
    pub spool: SpoolConfig,
    /// Extra librdkafka options (security, SASL, TLS...). Keys the guarantees depend on are refused.
    pub librdkafka: BTreeMap<String, String>,
}

impl ProducerConfig {
    /// `linger_ms`, or the mode's default.
    pub fn linger(&self) -> u64 {
        self.linger_ms.unwrap_or(match self.mode {
            Mode::Queue | Mode::Drop => 50,
            Mode::Block => 5,
        })
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: audit_schema::wire::topics::RAW.into(),
            service: String::new(),
            environment: None,
            mode: Mode::Queue,
            encoding: Encoding::Json,
            strict_validation: false,
            strict_action_naming: false,
            max_event_bytes: 1_000_000,
            queue_max_events: 100_000,
            queue_max_bytes: 64 << 20,
            linger_ms: None,
            compression: Compression::Lz4,
            delivery_timeout_ms: 30_000,
            spool: SpoolConfig::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

/// A config value that is not acceptable, with its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid producer config {key}: {message}")]
pub struct ConfigError {
    /// The key, e.g. `spool.max_bytes` or `librdkafka.acks`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), message: message.into() }
}

/// The producer's settings after validation.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: ProducerConfig,
    pub(crate) spool_dir: PathBuf,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) delivery_timeout: Duration,
    pub(crate) kafka: ClientSettings,
}

/// Keys the producer's guarantees depend on.
pub(crate) fn required_keys(config: &ProducerConfig) -> Vec<Required> {
    let timeout = match config.mode {
        // Queue and Drop: librdkafka never gives up on a retriable failure, so order is kept and
        // events wait (in memory, then on disk) while the broker is away.
        Mode::Queue | Mode::Drop => Cow::Borrowed("0"),
        Mode::Block => Cow::Owned(config.delivery_timeout_ms.to_string()),
    };
    vec![
        Required {
            key: "enable.idempotence",
            value: Cow::Borrowed("true"),
            reason: "retries must not duplicate or reorder events",
        },
        Required {
            key: "acks",
            value: Cow::Borrowed("all"),
            reason: "an event counts as delivered only when all in-sync replicas have it",
        },
        Required {
            key: "partitioner",
            value: Cow::Borrowed("murmur2_random"),
            reason: "keyed events must land where the Java clients put them (tenant ordering across languages)",
        },
        Required {
            key: "message.timeout.ms",
            value: timeout,
            reason: "the delivery deadline follows the producer mode",
        },
        Required {
            key: "max.in.flight.requests.per.connection",
            value: Cow::Borrowed("5"),
            reason: "ordering under idempotence",
        },
    ]
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl ProducerConfig {
    /// Checks every value without I/O.
    pub(crate) fn validate(self) -> Result<Settings, ConfigError> {
        if self.service.trim().is_empty() {
            return Err(bad("service", "must name the emitting service"));
        }
        if self.service.chars().count() > 256 {
            return Err(bad("service", "is longer than 256 characters"));
        }
        if !valid_topic(&self.topic) {
            return Err(bad("topic", format!("{:?} is not a valid Kafka topic name", self.topic)));
        }
        if !(1024..=100 << 20).contains(&self.max_event_bytes) {
            return Err(bad("max_event_bytes", "must be between 1 KiB and 100 MiB"));
        }
        if self.queue_max_events == 0 || self.queue_max_events > 10_000_000 {
            return Err(bad("queue_max_events", "must be between 1 and 10,000,000"));
        }
        if self.queue_max_bytes < self.max_event_bytes {
            return Err(bad("queue_max_bytes", "must hold at least one event of max_event_bytes"));
        }
        if self.linger_ms.is_some_and(|ms| ms > 60_000) {
            return Err(bad("linger_ms", "must be at most 60000"));
        }
        if self.delivery_timeout_ms == 0 {
            return Err(bad("delivery_timeout_ms", "must be positive"));
        }
        let spool = &self.spool;
        if spool.segment_bytes < 4096 {
            return Err(bad("spool.segment_bytes", "must be at least 4096"));
        }
        if spool.max_bytes < spool.segment_bytes {
            return Err(bad("spool.max_bytes", "must be at least spool.segment_bytes"));
        }
        if (spool.segment_bytes as usize) < self.max_event_bytes + 64 {
            return Err(bad("spool.segment_bytes", "must hold at least one event of max_event_bytes"));
        }
        let fsync = match spool.fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Never => FsyncPolicy::Never,
            Fsync::Interval if spool.fsync_interval_ms == 0 => {
                return Err(bad("spool.fsync_interval_ms", "must be positive with fsync = \"interval\""))
            }
            Fsync::Interval => FsyncPolicy::IntervalMs(spool.fsync_interval_ms),
        };
        let spool_dir = spool.dir.clone().unwrap_or_else(|| {
            let safe: String = self
                .service
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            std::env::temp_dir().join("auditstream-spool").join(safe)
        });
        let mut kafka = ClientSettings::new(self.brokers.clone(), format!("audit-producer/{}", self.service));
        kafka.pass_through = self.librdkafka.clone();
        kafka.validate(&required_keys(&self)).map_err(|e| match e {
            audit_kafka::Error::ProtectedKey { key, reason } => {
                bad(&format!("librdkafka.{key}"), format!("cannot be overridden: {reason}"))
            }
            other => bad("brokers", other.to_string()),
        })?;
        for key in [
            "queue.buffering.max.messages",
            "queue.buffering.max.kbytes",
            "linger.ms",
            "compression.type",
            "message.max.bytes",
        ] {
            if self.librdkafka.contains_key(key) {
                return Err(bad(&format!("librdkafka.{key}"), "is set through the producer's own option instead"));
            }
        }
        let delivery_timeout = Duration::from_millis(self.delivery_timeout_ms);
        Ok(Settings { config: self, spool_dir, fsync, delivery_timeout, kafka })
    }
}

impl Settings {
    /// The librdkafka producer configuration.
    pub(crate) fn client_config(&self) -> Result<rdkafka::ClientConfig, ConfigError> {
        let c = &self.config;
        let mut config = self.kafka.client_config(&required_keys(c)).map_err(|e| bad("librdkafka", e.to_string()))?;
        config
            .set("queue.buffering.max.messages", c.queue_max_events.to_string())
            .set("queue.buffering.max.kbytes", (c.queue_max_bytes / 1024).max(1).to_string())
            .set("linger.ms", c.linger().to_string())
            .set("compression.type", c.compression.as_str())
            .set("message.max.bytes", (c.max_event_bytes + 4096).to_string())
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000");
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProducerConfig {
        ProducerConfig { service: "billing-api".into(), ..ProducerConfig::default() }
    }

    #[test]
    fn linger_defaults_to_the_modes_and_yields_to_a_set_value() {
        assert_eq!(config().linger(), 50);
        assert_eq!(ProducerConfig { mode: Mode::Drop, ..config() }.linger(), 50);
        assert_eq!(ProducerConfig { mode: Mode::Block, ..config() }.linger(), 5);
        let set = ProducerConfig { mode: Mode::Block, linger_ms: Some(20), ..config() };
        let kafka = set.validate().expect("valid").client_config().expect("config");
        assert_eq!(kafka.get("linger.ms"), Some("20"));
        assert_eq!(ProducerConfig { linger_ms: Some(60_001), ..config() }.validate().unwrap_err().key, "linger_ms");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases: Vec<(ProducerConfig, &str)> = vec![
            (ProducerConfig::default(), "service"),
            (ProducerConfig { topic: "bad topic".into(), ..config() }, "topic"),
            (ProducerConfig { brokers: "nowhere".into(), ..config() }, "brokers"),
            (ProducerConfig { max_event_bytes: 10, ..config() }, "max_event_bytes"),
            (ProducerConfig { queue_max_events: 0, ..config() }, "queue_max_events"),
            (
                ProducerConfig { spool: SpoolConfig { max_bytes: 10, ..SpoolConfig::default() }, ..config() },
                "spool.max_bytes",
            ),
            (
                ProducerConfig { spool: SpoolConfig { fsync_interval_ms: 0, ..SpoolConfig::default() }, ..config() },
                "spool.fsync_interval_ms",
            ),
            (ProducerConfig { librdkafka: [("acks".into(), "1".into())].into(), ..config() }, "librdkafka.acks"),
            (
                ProducerConfig { librdkafka: [("enable.idempotence".into(), "false".into())].into(), ..config() },
                "librdkafka.enable.idempotence",
            ),
            (
                ProducerConfig { librdkafka: [("linger.ms".into(), "50".into())].into(), ..config() },
                "librdkafka.linger.ms",
            ),
        ];
        for (c, key) in cases {
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn unknown_keys_are_refused_when_deserializing() {
        let err = serde_json::from_str::<ProducerConfig>(r#"{"service": "x", "moed": "queue"}"#).unwrap_err();
        assert!(err.to_string().contains("moed"), "{err}");
    }

    #[test]
    fn a_valid_config_gets_the_guarantee_keys() {
        let settings = config().validate().unwrap();
        let c = settings.client_config().unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(c.get("message.timeout.ms"), Some("0"));
        assert!(settings.spool_dir.ends_with("auditstream-spool/billing-api"));
    }
}
