//! The `[redaction]` section: configured rules, the built-in keys switch, the value detector
//! families and where the HMAC key comes from. Compiled into a policy by `settings.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use crate::config::ProcessorConfig;

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
