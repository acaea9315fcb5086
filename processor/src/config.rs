//! Processor configuration: figment merges built-in defaults ← a preset ← a TOML file ← `AUDIT_*`
//! environment variables into [`ProcessorConfig`]; [`ProcessorConfig::validate`] checks every value
//! without I/O and names the key of anything wrong.
//!
//! Each section is a serde struct here; the `[redaction]` section is in `redaction.rs` and the
//! presets in `preset.rs`. A leaf module: it imports no runtime and no pipeline module.

mod preset;
mod redaction;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use audit_kafka::lanes::GroupMember;
use audit_kafka::ClientSettings;
use audit_schema::wire::topics;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use preset::Preset;
pub use redaction::{DetectorsConfig, RedactionConfig, ReplaceConfig, RuleConfig};

/// A config value that is not acceptable, with its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid processor config {key}: {message}")]
pub struct ConfigError {
    /// Key path, e.g. `limits.max_event_bytes`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group of the processors.
    pub group_id: String,
    /// Raw topic (input).
    pub raw_topic: String,
    /// Processed topic (output); must have as many partitions as the raw topic.
    pub processed_topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Consumer session timeout, milliseconds: how fast a dead instance's partitions move.
    pub session_timeout_ms: u64,
    /// Static group membership (`group.instance.id`): a stable name per instance (a StatefulSet
    /// pod name). A restarted instance then takes its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// When a lane's resume point is gone from the raw topic (retention removed raw records
    /// before they were processed, or the topic was recreated): `false` stops the processor with
    /// an error; `true` continues from the earliest raw record, and verification reports the gap.
    pub accept_raw_loss: bool,
    /// Extra librdkafka options for every client (security, SASL, TLS...).
    pub librdkafka: BTreeMap<String, String>,
    /// How the processed records are written. `exactly_once` (default): each lane writes in Kafka
    /// transactions of its own (`transactional.id` `<group_id>.<processed_topic>.<partition>`), so
    /// an instance that lost its partitions while paused is fenced and nothing it wrote afterwards
    /// becomes visible: no fork. Needs a broker with transactions (Apache Kafka, Redpanda).
    /// `idempotent`: one idempotent producer per instance, for brokers without transactions; a
    /// paused instance can then still publish after its partitions moved (`docs/INTEGRITY.md`).
    pub processing_guarantee: ProcessingGuarantee,
    /// `exactly_once`: a lane commits its open transaction this many milliseconds after it opened
    /// it (10–10000)... What a lane produces becomes visible to `read_committed` readers (the
    /// sinks, `auditctl`) at the commit: this is the latency exactly-once adds.
    pub transaction_interval_ms: u64,
    /// ...or after this many records (events, dead letters and checkpoints; 1–100000), whichever
    /// comes first.
    pub transaction_max_records: usize,
}

/// How the processor writes its output (`kafka.processing_guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Transactions per lane, fenced for a stale owner: no fork, ever.
    ExactlyOnce,
    /// One idempotent producer per instance (brokers without transactions); a paused instance can
    /// fork the chain, which verification reports.
    Idempotent,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "audit-processor".into(),
            raw_topic: topics::RAW.into(),
            processed_topic: topics::PROCESSED.into(),
            dead_letter_topic: topics::DEAD_LETTERS.into(),
            session_timeout_ms: 10_000,
            instance_id: None,
            accept_raw_loss: false,
            librdkafka: BTreeMap::new(),
            processing_guarantee: ProcessingGuarantee::ExactlyOnce,
            transaction_interval_ms: 250,
            transaction_max_records: 10_000,
        }
    }
}

/// Validation and output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Unknown fields and bad values are dead-lettered instead of kept with warnings.
    pub strict: bool,
    /// Identifier-like actions are dead-lettered instead of warned about.
    pub strict_action_naming: bool,
    /// Encoding of processed events: `avro` (default) or `json`.
    pub output_encoding: OutputEncoding,
    /// Deepest nesting kept in metadata/diff (MongoDB refuses documents deeper than 100).
    pub max_depth: usize,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            strict: false,
            strict_action_naming: false,
            output_encoding: OutputEncoding::Avro,
            max_depth: 32,
        }
    }
}

/// Encoding of processed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputEncoding {
    /// Avro single-object encoding.
    Avro,
    /// UTF-8 JSON.
    Json,
}

/// What happens to an event over `max_event_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeBehavior {
    /// Dead-letter it (a quarantine entry keeps its place in the chain).
    Reject,
    /// Replace metadata and diff by truncation markers; dead-letter it if still too large.
    Truncate,
}

/// Payload limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest processed event, bytes (canonical JSON). Default 64 KiB.
    pub max_event_bytes: usize,
    /// What to do with a larger event.
    pub oversize: OversizeBehavior,
    /// Largest `metadata` (canonical JSON) before it is replaced by a truncation marker. 32 KiB.
    pub max_metadata_bytes: usize,
    /// Largest `diff` (canonical JSON) before it is replaced by a truncation marker. 32 KiB.
    pub max_diff_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: 64 * 1024,
            oversize: OversizeBehavior::Reject,
            max_metadata_bytes: 32 * 1024,
            max_diff_bytes: 32 * 1024,
        }
    }
}

/// HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "0.0.0.0:9464".into() }
    }
}

/// Shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM may take to drain and commit, milliseconds.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_timeout_ms: 20_000 }
    }
}

/// Signed checkpoints of each chain's head (`docs/INTEGRITY.md`). On when a signing key is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// File holding the Ed25519 secret seed as 64 hex digits (`auditctl keys generate`).
    pub signing_key_file: Option<PathBuf>,
    /// Environment variable holding the seed instead.
    pub signing_key_env: Option<String>,
    /// Sign after this many events of a chain.
    pub every_events: u64,
    /// Or after this many milliseconds with unsigned events.
    pub every_ms: u64,
    /// A witness file: a JSONL file each checkpoint is also appended to (and fsynced), kept where
    /// the sinks' writers cannot change it. Checkpoints always travel in the processed partition
    /// after the event they cover; a witness is a copy held elsewhere.
    pub witness_file: Option<PathBuf>,
    /// A witness endpoint: each checkpoint is also POSTed there as JSON (in the background, with
    /// retries).
    pub witness_url: Option<String>,
    /// Environment variable holding a bearer token for `witness_url`.
    pub witness_token_env: Option<String>,
    /// File holding a bearer token for `witness_url` instead.
    pub witness_token_file: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            signing_key_file: None,
            signing_key_env: None,
            every_events: 1000,
            every_ms: 10_000,
            witness_file: None,
            witness_url: None,
            witness_token_env: None,
            witness_token_file: None,
        }
    }
}

/// Telemetry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` or `text` logs on stderr.
    pub log_format: String,
    /// `tracing` filter, e.g. `info,audit_processor=debug`.
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`; unset: no spans exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: "text".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
            service_name: "audit-processor".into(),
        }
    }
}

/// Everything the processor can be told.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Validation and output.
    pub processing: ProcessingConfig,
    /// Redaction.
    pub redaction: RedactionConfig,
    /// Payload limits.
    pub limits: LimitsConfig,
    /// HTTP endpoints.
    pub http: HttpConfig,
    /// Shutdown.
    pub shutdown: ShutdownConfig,
    /// Signed checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
}

impl ProcessorConfig {
    /// Loads defaults ← `AUDIT_PRESET` preset ← `file` ← `AUDIT_<SECTION>__<KEY>` environment
    /// variables (`AUDIT_KAFKA__BROKERS` sets `kafka.brokers`). Unknown keys are errors naming the key.
    pub fn load(file: Option<&Path>) -> Result<ProcessorConfig, ConfigError> {
        let base = match std::env::var("AUDIT_PRESET") {
            Ok(name) => Preset::parse(&name)?.config(),
            Err(_) => ProcessorConfig::default(),
        };
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(file) = file {
            if !file.exists() {
                return Err(bad("config file", format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `AUDIT_<SECTION>__<KEY>` variables are config; other AUDIT_* variables are not ours.
        figment = figment.merge(Env::prefixed("AUDIT_").filter(|k| k.as_str().contains("__")).split("__"));
        figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let key = if key.is_empty() { "config".to_owned() } else { key };
            bad(key, e.kind.to_string())
        })
    }

    /// Checks every value that needs no file, variable or compilation (those are
    /// [`ProcessorConfig::validate`]'s, in `settings.rs`), and gives the Kafka client settings.
    pub(crate) fn check(&self) -> Result<ClientSettings, ConfigError> {
        let k = &self.kafka;
        for (key, topic) in [
            ("kafka.raw_topic", &k.raw_topic),
            ("kafka.processed_topic", &k.processed_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ] {
            if topic.is_empty()
                || topic.len() > 249
                || !topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(bad(key, format!("{topic:?} is not a valid topic name")));
            }
        }
        if k.raw_topic == k.processed_topic
            || k.raw_topic == k.dead_letter_topic
            || k.processed_topic == k.dead_letter_topic
        {
            return Err(bad(
                "kafka.processed_topic",
                "raw, processed and dead-letter topics must be three different topics",
            ));
        }
        GroupMember::new(&k.group_id, k.session_timeout_ms, k.instance_id.as_deref())
            .validate()
            .map_err(|(key, message)| bad(format!("kafka.{key}"), message))?;
        if k.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            crate::client::TransactionalIds::new(&k.group_id, &k.processed_topic)
                .map_err(|message| bad("kafka.group_id", message))?;
        }
        if !(10..=10_000).contains(&k.transaction_interval_ms) {
            return Err(bad("kafka.transaction_interval_ms", "must be between 10 and 10000"));
        }
        if !(1..=100_000).contains(&k.transaction_max_records) {
            return Err(bad("kafka.transaction_max_records", "must be between 1 and 100000"));
        }
        let mut kafka = ClientSettings::new(k.brokers.clone(), "audit-processor");
        kafka.pass_through = k.librdkafka.clone();
        let protected = crate::client::protected_keys();
        kafka.validate(&protected).map_err(|e| match e {
            audit_kafka::Error::ProtectedKey { key, reason } => {
                bad(format!("kafka.librdkafka.{key}"), format!("cannot be overridden: {reason}"))
            }
            other => bad("kafka.brokers", other.to_string()),
        })?;

        let p = &self.processing;
        if !(2..=90).contains(&p.max_depth) {
            return Err(bad(
                "processing.max_depth",
                "must be between 2 and 90 (MongoDB refuses nesting deeper than 100)",
            ));
        }
        let l = &self.limits;
        if !(1024..=8 << 20).contains(&l.max_event_bytes) {
            return Err(bad("limits.max_event_bytes", "must be between 1 KiB and 8 MiB"));
        }
        for (key, v) in
            [("limits.max_metadata_bytes", l.max_metadata_bytes), ("limits.max_diff_bytes", l.max_diff_bytes)]
        {
            if v < 64 || v > l.max_event_bytes {
                return Err(bad(key, "must be between 64 bytes and limits.max_event_bytes"));
            }
        }
        if let Err(e) = self.http.listen.parse::<SocketAddr>() {
            return Err(bad("http.listen", format!("{:?} is not host:port ({e})", self.http.listen)));
        }
        if self.shutdown.drain_timeout_ms == 0 {
            return Err(bad("shutdown.drain_timeout_ms", "must be positive"));
        }
        if !["json", "text"].contains(&self.telemetry.log_format.as_str()) {
            return Err(bad("telemetry.log_format", "must be json or text"));
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            if !endpoint.starts_with("http://") {
                return Err(bad(
                    "telemetry.otlp_endpoint",
                    format!("{endpoint:?} must be an http:// URL (spans go over plain HTTP to a local collector)"),
                ));
            }
        }
        Ok(kafka)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_names_its_key() {
        let mut cases: Vec<(ProcessorConfig, &str)> = Vec::new();
        let mut c = ProcessorConfig::default();
        c.kafka.raw_topic = "bad topic".into();
        cases.push((c, "kafka.raw_topic"));
        let mut c = ProcessorConfig::default();
        c.kafka.processed_topic = c.kafka.raw_topic.clone();
        cases.push((c, "kafka.processed_topic"));
        let mut c = ProcessorConfig::default();
        c.checkpoint.signing_key_file = Some("/nonexistent/checkpoint.key".into());
        cases.push((c, "checkpoint.signing_key_file"));
        let mut c = ProcessorConfig::default();
        c.checkpoint.signing_key_env = Some("AUDIT_TEST_NO_SUCH_VARIABLE".into());
        cases.push((c, "checkpoint.signing_key_env"));
        let key = std::env::temp_dir().join(format!("processor-config-key-{}", std::process::id()));
        std::fs::write(&key, audit_schema::checkpoint::SigningKey::from_seed(&[1; 32]).to_hex()).unwrap();
        let mut c = ProcessorConfig::default();
        c.checkpoint.signing_key_file = Some(key.clone());
        c.checkpoint.witness_url = Some("ftp://witness.example/".into());
        cases.push((c.clone(), "checkpoint.witness_url"));
        c.checkpoint.witness_url = Some("https://user:secret@witness.example/".into());
        cases.push((c.clone(), "checkpoint.witness_url"));
        c.checkpoint.witness_url = Some("http://witness.example/".into());
        c.checkpoint.witness_token_env = Some("AUDIT_WITNESS_TOKEN".into());
        cases.push((c.clone(), "checkpoint.witness_url"));
        c.checkpoint.witness_url = None;
        c.checkpoint.witness_token_env = Some("AUDIT_WITNESS_TOKEN".into());
        cases.push((c.clone(), "checkpoint.witness_url"));
        c.checkpoint.witness_token_env = None;
        c.checkpoint.every_events = 0;
        cases.push((c, "checkpoint.every_events"));
        let mut c = ProcessorConfig::default();
        c.limits.max_metadata_bytes = 10;
        cases.push((c, "limits.max_metadata_bytes"));
        let mut c = ProcessorConfig::default();
        c.http.listen = "nowhere".into();
        cases.push((c, "http.listen"));
        let mut c = ProcessorConfig::default();
        c.redaction.paths = vec!["metadata..x".into()];
        cases.push((c, "redaction.paths[0]"));
        let mut c = ProcessorConfig::default();
        c.redaction.key_patterns = vec!["(".into()];
        cases.push((c, "redaction.key_patterns[0]"));
        let mut c = ProcessorConfig::default();
        c.redaction.rules =
            vec![RuleConfig { key: Some("email".into()), path: None, key_pattern: None, replace: ReplaceConfig::Hmac }];
        cases.push((c, "redaction.hmac_key_env"));
        let mut c = ProcessorConfig::default();
        c.kafka.librdkafka.insert("enable.auto.offset.store".into(), "true".into());
        cases.push((c, "kafka.librdkafka.enable.auto.offset.store"));
        let mut c = ProcessorConfig::default();
        c.processing.max_depth = 200;
        cases.push((c, "processing.max_depth"));
        let mut c = ProcessorConfig::default();
        c.kafka.group_id = "audit processor".into();
        cases.push((c, "kafka.group_id"));
        let mut c = ProcessorConfig::default();
        c.kafka.transaction_interval_ms = 5;
        cases.push((c, "kafka.transaction_interval_ms"));
        let mut c = ProcessorConfig::default();
        c.kafka.transaction_max_records = 0;
        cases.push((c, "kafka.transaction_max_records"));
        let mut c = ProcessorConfig::default();
        c.kafka.librdkafka.insert("transactional.id".into(), "mine".into());
        cases.push((c, "kafka.librdkafka.transactional.id"));
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
        let mut c = ProcessorConfig::default();
        c.checkpoint.signing_key_file = Some(key);
        c.checkpoint.witness_url = Some("https://auditor:hunter2@witness.example/x".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "the witness URL's password is not echoed: {err}");
    }

    #[test]
    fn the_processing_guarantee_is_exactly_once_by_default_and_read_from_file_and_env() {
        assert_eq!(ProcessorConfig::default().kafka.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[kafka]\nprocessing_guarantee = \"idempotent\"\ntransaction_interval_ms = 500\n")
            .unwrap();
        let c = ProcessorConfig::load(Some(&path)).unwrap();
        assert_eq!(c.kafka.processing_guarantee, ProcessingGuarantee::Idempotent);
        assert_eq!(c.kafka.transaction_interval_ms, 500);
        // A group id that cannot name transactions is fine where none are used.
        let mut idempotent = c.clone();
        idempotent.kafka.group_id = "audit processor".into();
        idempotent.validate().unwrap();
        std::fs::write(&path, "[kafka]\nprocessing_guarantee = \"exactly-once\"\n").unwrap();
        let err = ProcessorConfig::load(Some(&path)).unwrap_err();
        assert_eq!(err.key, "kafka.processing_guarantee", "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[limits]\nmax_event_byte = 5\n").unwrap();
        let err = ProcessorConfig::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("max_event_byte"), "{err}");
    }
}
