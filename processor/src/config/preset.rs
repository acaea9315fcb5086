//! Presets: named starting points (`AUDIT_PRESET`) that the file and the environment then
//! override.

use super::{bad, ConfigError, OversizeBehavior, ProcessorConfig};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
