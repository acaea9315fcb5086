//! Processor configuration: figment merges built-in defaults ← a preset ← a TOML file ← `AUDIT_*`
//! environment variables into [`ProcessorConfig`]; [`ProcessorConfig::validate`] checks every value
//! without I/O and names the key of anything wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use audit_kafka::lanes::GroupMember;
use audit_kafka::ClientSettings;
use audit_schema::wire::topics;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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
            transaction_interval_ms: 100,
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

/// One configured redaction rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A key name, matched like the built-in keys (case and spelling variants).
    #[serde(default)]
    pub key: Option<String>,
    /// A dot path with `*` (one segment) and `**` (any depth) wildcards, e.g. `metadata.users.*.ssn`.
    #[serde(default)]
    pub path: Option<String>,
    /// A regular expression over key names.
    #[serde(default)]
    pub key_pattern: Option<String>,
    /// `mask` (default) or `hmac` (a keyed token: equal values stay joinable, unreadable).
    #[serde(default)]
    pub replace: ReplaceConfig,
}

/// Replacement of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceConfig {
    /// The mask string.
    #[default]
    Mask,
    /// `hmac:<32 hex>` = HMAC-SHA256 under the configured key.
    Hmac,
}

/// Value detectors: secrets and personal data hiding inside strings, by family. Each family's
/// detectors, their names in reports and what they match are listed in `docs/PRIVACY.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// `Bearer`/`Basic`/`Token` credentials, JWTs anywhere in text, `Authorization:` header lines
    /// (`jwt`, `bearer`, `authorization_header`).
    pub bearer_tokens: bool,
    /// `user:password@` in URLs of any scheme (also an empty user), URL parameters and form fields
    /// whose name is a sensitive key (`token=`, `password=`, `X-Amz-Signature=`), `curl -u user:pw`
    /// (`url_credentials`, `curl_credentials`).
    pub url_credentials: bool,
    /// PEM, OpenSSH, PGP and PuTTY private-key blocks (`private_key`).
    pub private_keys: bool,
    /// Payment card numbers: 13–19 digits with an issuer's prefix and length, passing the Luhn
    /// check, in strings and as JSON numbers (`card_number`).
    pub card_numbers: bool,
    /// AWS access key ids and the secret keys beside them, Google API keys, Azure storage account
    /// and shared access keys (`aws_access_key_id`, `aws_secret_access_key`, `google_api_key`,
    /// `azure_storage_key`).
    pub cloud_keys: bool,
    /// GitHub classic, fine-grained and app/OAuth tokens; GitLab tokens (`github_classic_token`,
    /// `github_fine_grained_token`, `github_app_token`, `gitlab_token`).
    pub source_host_tokens: bool,
    /// Slack tokens and webhook URLs (`slack_token`, `slack_webhook`).
    pub chat_tokens: bool,
    /// Stripe secret and restricted keys, webhook secrets (`stripe_secret_key`,
    /// `stripe_webhook_secret`).
    pub payment_keys: bool,
    /// OpenAI, Anthropic and Hugging Face keys (`openai_api_key`, `anthropic_api_key`,
    /// `huggingface_token`).
    pub ai_keys: bool,
    /// npm, PyPI and Docker Hub tokens (`npm_token`, `pypi_token`, `dockerhub_token`).
    pub registry_tokens: bool,
    /// SendGrid keys, Twilio SIDs and auth tokens in a string that names Twilio
    /// (`sendgrid_api_key`, `twilio_key`).
    pub messaging_keys: bool,
    /// `KEY=value` lines of env files, `password: value` lines of YAML and `password = value` of INI
    /// text, and `name: value` inside a line, where the key names a secret
    /// (`secret_assignment`).
    pub env_assignments: bool,
    /// Strings holding a JSON object or array are parsed, redacted with the whole policy and put
    /// back as compact JSON (what is found counts under the rule that found it).
    pub json_strings: bool,
    /// US social security numbers: `AAA-GG-SSSS` or `AAA GG SSSS` with the validity rules, or nine
    /// digits right after `SSN`/`social security number` (`ssn`).
    pub ssn: bool,
    /// IBANs passing their country's length and the mod-97 check (`iban`). Off by default (account
    /// numbers are what payment audit trails are about); `strict-multi-tenant` turns it on.
    pub iban: bool,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            bearer_tokens: true,
            url_credentials: true,
            private_keys: true,
            card_numbers: true,
            cloud_keys: true,
            source_host_tokens: true,
            chat_tokens: true,
            payment_keys: true,
            ai_keys: true,
            registry_tokens: true,
            messaging_keys: true,
            env_assignments: true,
            json_strings: true,
            ssn: true,
            iban: false,
        }
    }
}

/// Redaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// On by default; turning it off is recorded in every event's `redaction.policy`.
    pub enabled: bool,
    /// Mask string.
    pub mask: String,
    /// Use the built-in keys (password, passwd, pwd, pass, pin, cvv, ssn, otp, token, secret,
    /// credential, apiKey, privateKey, authorization, cookie... the list is in `docs/PRIVACY.md`).
    /// Key names in text (`DB_PASSWORD=…`, `?token=…`) are checked against the built-in keys even
    /// when this is off.
    pub default_keys: bool,
    /// Extra key names (masked).
    pub keys: Vec<String>,
    /// Dot paths to mask.
    pub paths: Vec<String>,
    /// Key-name regular expressions to mask.
    pub key_patterns: Vec<String>,
    /// Rules with their own replacement.
    pub rules: Vec<RuleConfig>,
    /// Value detectors.
    pub detectors: DetectorsConfig,
    /// Environment variable holding the HMAC key (for `replace = "hmac"` rules).
    pub hmac_key_env: Option<String>,
    /// File holding the HMAC key.
    pub hmac_key_file: Option<PathBuf>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: true,
            mask: "***".into(),
            default_keys: true,
            keys: Vec::new(),
            paths: Vec::new(),
            key_patterns: Vec::new(),
            rules: Vec::new(),
            detectors: DetectorsConfig::default(),
            hmac_key_env: None,
            hmac_key_file: None,
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

/// Named starting points, after the seed's presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Strict validation and action naming, oversize events rejected, JSON-free Avro output, and
    /// IBANs redacted (SSNs are by default).
    StrictMultiTenant,
    /// Lenient, conservative limits, long drain.
    SelfHosted,
    /// Lenient, larger limits with truncation instead of rejection.
    HighThroughput,
}

impl Preset {
    /// Parses `strict-multi-tenant`, `self-hosted`, `high-throughput`.
    pub fn parse(name: &str) -> Result<Preset, ConfigError> {
        match name {
            "strict-multi-tenant" => Ok(Preset::StrictMultiTenant),
            "self-hosted" => Ok(Preset::SelfHosted),
            "high-throughput" => Ok(Preset::HighThroughput),
            other => {
                Err(bad("preset", format!("{other:?} is not one of strict-multi-tenant, self-hosted, high-throughput")))
            }
        }
    }

    /// The preset's config.
    pub fn config(self) -> ProcessorConfig {
        let mut c = ProcessorConfig::default();
        match self {
            Preset::StrictMultiTenant => {
                c.processing.strict = true;
                c.processing.strict_action_naming = true;
                c.limits.oversize = OversizeBehavior::Reject;
                c.redaction.detectors.iban = true;
            }
            Preset::SelfHosted => {
                c.shutdown.drain_timeout_ms = 30_000;
                c.limits.max_event_bytes = 32 * 1024;
                c.limits.max_metadata_bytes = 16 * 1024;
                c.limits.max_diff_bytes = 16 * 1024;
            }
            Preset::HighThroughput => {
                c.limits.oversize = OversizeBehavior::Truncate;
                c.limits.max_event_bytes = 256 * 1024;
                c.limits.max_metadata_bytes = 64 * 1024;
                c.limits.max_diff_bytes = 64 * 1024;
            }
        }
        c
    }
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
        std::fs::write(&path, "[kafka]\nprocessing_guarantee = \"idempotent\"\ntransaction_interval_ms = 250\n")
            .unwrap();
        let c = ProcessorConfig::load(Some(&path)).unwrap();
        assert_eq!(c.kafka.processing_guarantee, ProcessingGuarantee::Idempotent);
        assert_eq!(c.kafka.transaction_interval_ms, 250);
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

    #[test]
    fn presets_are_valid() {
        for name in ["strict-multi-tenant", "self-hosted", "high-throughput"] {
            Preset::parse(name).unwrap().config().validate().unwrap();
        }
        assert!(Preset::parse("fast").is_err());
    }

    #[test]
    fn strict_multi_tenant_redacts_ibans_and_the_default_does_not() {
        let iban = "DE59 1001 0010 0000 1234 56";
        let note = |config: ProcessorConfig| {
            let policy = config.validate().unwrap().policy;
            let mut v = serde_json::json!({"note": format!("refund to {iban}")});
            let mut report = crate::redact::RedactionReport::default();
            policy.redact("metadata", &mut v, &mut report);
            (v["note"].as_str().unwrap().to_owned(), report.by_rule.get("iban").copied())
        };
        let strict = Preset::parse("strict-multi-tenant").unwrap().config();
        assert!(strict.redaction.detectors.iban && strict.redaction.detectors.ssn);
        assert_eq!(note(strict), ("refund to ***".to_owned(), Some(1)));
        assert_eq!(note(ProcessorConfig::default()), (format!("refund to {iban}"), None));
        let strict_version = Preset::StrictMultiTenant.config().validate().unwrap().policy.version().to_owned();
        assert_ne!(strict_version, ProcessorConfig::default().validate().unwrap().policy.version());
    }

    #[test]
    fn detector_families_are_switched_in_the_file_and_unknown_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[redaction.detectors]\nssn = false\niban = true\ncloud_keys = false\n").unwrap();
        let c = ProcessorConfig::load(Some(&path)).unwrap();
        assert!(!c.redaction.detectors.ssn && c.redaction.detectors.iban && !c.redaction.detectors.cloud_keys);
        assert!(c.redaction.detectors.bearer_tokens, "the others keep their defaults");
        std::fs::write(&path, "[redaction.detectors]\nssns = false\n").unwrap();
        let err = ProcessorConfig::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("ssns"), "{err}");
    }
}
