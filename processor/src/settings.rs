//! The settings the processor runs with: its config, checked ([`crate::config`]), with what it
//! names compiled or read: the Kafka client settings, the redaction policy, the HMAC and
//! checkpoint signing keys.

use std::net::SocketAddr;
use std::time::Duration;

use audit_kafka::ClientSettings;

use crate::client::TransactionalIds;
use crate::config::{bad, ConfigError, ProcessingGuarantee, ProcessorConfig, ReplaceConfig};
use crate::redact::{RedactionPolicy, Replacement, Rule, RuleMatch};

/// The validated settings the processor runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config they came from.
    pub config: ProcessorConfig,
    /// Kafka client settings.
    pub kafka: ClientSettings,
    /// The compiled redaction policy.
    pub policy: RedactionPolicy,
    /// SIGTERM drain deadline.
    pub drain_timeout: Duration,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// The checkpoint signing key, when checkpoints are on.
    pub signing_key: Option<audit_schema::checkpoint::SigningKey>,
    /// How the lanes write their output (`kafka.processing_guarantee`).
    pub guarantee: Guarantee,
}

/// How the lanes write their output, from `kafka.processing_guarantee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarantee {
    /// One idempotent producer for the instance; a raw offset is acknowledged once its event is
    /// delivered.
    Idempotent,
    /// A transactional producer per lane; a raw offset is acknowledged once the transaction
    /// holding its event is committed.
    ExactlyOnce(Transactions),
}

/// How each lane's transactions are named and cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transactions {
    /// The lanes' `transactional.id`s.
    pub ids: TransactionalIds,
    /// A transaction is committed this long after it opened...
    pub interval: Duration,
    /// ...or once it holds this many records.
    pub max_records: usize,
}

impl ProcessorConfig {
    /// Checks every value (reading nothing but the HMAC and signing key files or variables it
    /// names) and compiles the settings.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let kafka = self.check()?;
        let policy = self.redaction_policy()?;
        let k = &self.kafka;
        let guarantee = match k.processing_guarantee {
            ProcessingGuarantee::Idempotent => Guarantee::Idempotent,
            ProcessingGuarantee::ExactlyOnce => Guarantee::ExactlyOnce(Transactions {
                ids: TransactionalIds::new(&k.group_id, &k.processed_topic).map_err(|m| bad("kafka.group_id", m))?,
                interval: Duration::from_millis(k.transaction_interval_ms),
                max_records: k.transaction_max_records,
            }),
        };
        Ok(Settings {
            guarantee,
            drain_timeout: Duration::from_millis(self.shutdown.drain_timeout_ms),
            http_listen: self.http.listen.parse().map_err(|_| bad("http.listen", "unparseable"))?,
            signing_key: self.signing_key()?,
            kafka,
            policy,
            config: self,
        })
    }

    fn signing_key(&self) -> Result<Option<audit_schema::checkpoint::SigningKey>, ConfigError> {
        use audit_schema::checkpoint::SigningKey;
        let c = &self.checkpoint;
        let key = match (&c.signing_key_env, &c.signing_key_file) {
            (Some(_), Some(_)) => {
                return Err(bad("checkpoint.signing_key_env", "set signing_key_env or signing_key_file, not both"))
            }
            (Some(var), None) => {
                let text = std::env::var(var)
                    .map_err(|_| bad("checkpoint.signing_key_env", format!("environment variable {var} is not set")))?;
                SigningKey::from_hex(&text, var).map_err(|e| bad("checkpoint.signing_key_env", e.to_string()))?
            }
            (None, Some(path)) => {
                SigningKey::from_file(path).map_err(|e| bad("checkpoint.signing_key_file", e.to_string()))?
            }
            (None, None) => return Ok(None),
        };
        if c.every_events == 0 {
            return Err(bad("checkpoint.every_events", "must be positive"));
        }
        if c.every_ms == 0 {
            return Err(bad("checkpoint.every_ms", "must be positive"));
        }
        // The URL itself is never echoed: it might carry credentials.
        if let Some(url) = &c.witness_url {
            let parsed =
                reqwest::Url::parse(url).map_err(|e| bad("checkpoint.witness_url", format!("not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(bad(
                    "checkpoint.witness_url",
                    format!("wants an http:// or https:// URL with a host, got scheme {:?}", parsed.scheme()),
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
                return Err(bad(
                    "checkpoint.witness_url",
                    "credentials or a query in the URL would be logged: use witness_token_env or witness_token_file",
                ));
            }
            let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            let token = c.witness_token_env.is_some() || c.witness_token_file.is_some();
            if token && parsed.scheme() == "http" && !loopback {
                return Err(bad("checkpoint.witness_url", "a witness token is only sent over https (or to loopback)"));
            }
        }
        if c.witness_token_env.is_some() && c.witness_token_file.is_some() {
            return Err(bad("checkpoint.witness_token_env", "set witness_token_env or witness_token_file, not both"));
        }
        if c.witness_url.is_none() && (c.witness_token_env.is_some() || c.witness_token_file.is_some()) {
            return Err(bad("checkpoint.witness_url", "a witness token is set but no witness_url"));
        }
        Ok(Some(key))
    }

    fn hmac_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let r = &self.redaction;
        let key = match (&r.hmac_key_env, &r.hmac_key_file) {
            (Some(_), Some(_)) => {
                return Err(bad("redaction.hmac_key_env", "set hmac_key_env or hmac_key_file, not both"))
            }
            (Some(var), None) => Some(
                std::env::var(var)
                    .map_err(|_| bad("redaction.hmac_key_env", format!("environment variable {var} is not set")))?
                    .into_bytes(),
            ),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| bad("redaction.hmac_key_file", format!("cannot read {}: {e}", path.display())))?
                    .trim_ascii()
                    .to_vec(),
            ),
            (None, None) => None,
        };
        if let Some(k) = &key {
            if k.len() < 16 {
                return Err(bad("redaction.hmac_key_env", "the HMAC key must be at least 16 bytes"));
            }
        }
        Ok(key)
    }

    /// The redaction policy this config describes.
    pub fn redaction_policy(&self) -> Result<RedactionPolicy, ConfigError> {
        let r = &self.redaction;
        let mut rules = Vec::new();
        for (i, rc) in r.rules.iter().enumerate() {
            let key = format!("redaction.rules[{i}]");
            let matcher = match (&rc.key, &rc.path, &rc.key_pattern) {
                (Some(k), None, None) => RuleMatch::key(k),
                (None, Some(p), None) => RuleMatch::path(p).map_err(|e| bad(format!("{key}.path"), e))?,
                (None, None, Some(re)) => {
                    RuleMatch::key_pattern(re).map_err(|e| bad(format!("{key}.key_pattern"), e))?
                }
                _ => return Err(bad(key, "set exactly one of key, path, key_pattern")),
            };
            let replacement = match rc.replace {
                ReplaceConfig::Mask => Replacement::Mask,
                ReplaceConfig::Hmac => Replacement::Hmac,
            };
            rules.push(Rule { matcher, replacement });
        }
        for k in &r.keys {
            rules.push(Rule { matcher: RuleMatch::key(k), replacement: Replacement::Mask });
        }
        for (i, p) in r.paths.iter().enumerate() {
            rules.push(Rule {
                matcher: RuleMatch::path(p).map_err(|e| bad(format!("redaction.paths[{i}]"), e))?,
                replacement: Replacement::Mask,
            });
        }
        for (i, p) in r.key_patterns.iter().enumerate() {
            rules.push(Rule {
                matcher: RuleMatch::key_pattern(p).map_err(|e| bad(format!("redaction.key_patterns[{i}]"), e))?,
                replacement: Replacement::Mask,
            });
        }
        let hmac_key = self.hmac_key()?;
        if rules.iter().any(|r| r.replacement == Replacement::Hmac) && hmac_key.is_none() {
            return Err(bad("redaction.hmac_key_env", "a rule uses replace = \"hmac\" but no HMAC key is configured"));
        }
        if r.mask.is_empty() {
            return Err(bad("redaction.mask", "must not be empty"));
        }
        Ok(RedactionPolicy::new(r.enabled, r.mask.clone(), r.default_keys, rules, r.detectors.clone(), hmac_key))
    }
}
