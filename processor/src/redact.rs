//! Redaction of secrets and personal data in the free-form parts of an event (`metadata` and
//! `diff`).
//!
//! Four kinds of rule, applied in one walk over the JSON tree:
//! * **keys** ([`DEFAULT_KEYS`] and the others in `keys.rs`, plus configured names), matched across
//!   case and spelling: a key is split into words (`x-api-key` → x/api/key, `accessToken` →
//!   access/token) and matches when the rule's words appear in it in a row (plural allowed on the
//!   last word) or its letters end with the rule's letters (`xapikey`); short built-in names
//!   (`pin`, `pwd`, `cvv`, `ssn`, `pass`) match whole words only. The whole value under a matching
//!   key is replaced, whatever its type, at any depth, inside arrays too, except that a number or
//!   boolean under a key that measures a secret (`token_count`, `password_length`, `max_tokens`)
//!   is kept: the measure rule. `{"name": "Authorization", "value": …}` objects and lists of
//!   `["Authorization", …]` pairs (header lists) count as the named key;
//! * **paths**: dot paths with `*` (one segment) and `**` (any depth), e.g. `metadata.users.*.ssn`;
//! * **key patterns**: regular expressions over key names;
//! * **value detectors** (`detectors.rs`) for secrets inside strings that no key gives away:
//!   credential formats (cloud, source-host, chat, payment, AI, registry and messaging keys, JWTs,
//!   private keys, credentials in URLs, `Authorization:` lines, `curl -u`, `KEY=value` lines whose
//!   key names a secret) and personal data (card numbers, US SSNs, IBANs). Only the secret part of
//!   the string is replaced. A string holding a JSON object or array is parsed, redacted with the
//!   same policy and put back as compact JSON; card numbers stored as JSON numbers are replaced.
//!
//! A replacement is the mask (`***`) or, per rule, `hmac:<32 hex>` = HMAC-SHA256 under a configured
//! key over the value's canonical JSON: equal values give equal tokens (joinable) without being
//! readable. The policy's version ([`RedactionPolicy::version`]) is a hash of every rule, the key
//! lists, the measure words, every detector (name, gate, regex, check), the mask and the HMAC key's
//! fingerprint, recorded on each event with the redacted paths.
//!
//! Layout: this module compiles the policy and versions it; `rules.rs` holds the rules and which
//! one a key or path matches, `walk.rs` the walk over the tree (pairs, JSON held in strings),
//! `keys.rs` the key-name matcher and the built-in lists, and `detectors.rs` (with `detectors/`,
//! one module per kind of secret) the value detectors.

mod detectors;
mod keys;
mod rules;
mod walk;

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::DetectorsConfig;
pub use detectors::luhn_valid;
use detectors::Detectors;
pub use keys::{
    KeyName, KeyWords, WordMatch, DEFAULT_KEYS, DEFAULT_LAST_WORD_KEYS, DEFAULT_WORD_KEYS, MEASURE_PREFIXES,
    MEASURE_WORDS,
};
use rules::builtin_keys;
pub use rules::{PathPattern, Replacement, Rule, RuleMatch};
use walk::PAIR_NAMES;

/// What redaction did to one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionReport {
    /// Paths of redacted values, in document order (a string redacted inside, JSON text included,
    /// is listed once at its own path).
    pub paths: Vec<String>,
    /// Redactions by rule: the rule kinds `key`, `path`, `key_pattern`, and each value detector's
    /// name (`jwt`, `aws_access_key_id`, `card_number`, ...). Secrets found inside a string holding
    /// JSON count under the rule that found them.
    pub by_rule: BTreeMap<&'static str, u64>,
}

/// A compiled redaction policy.
#[derive(Debug, Clone)]
pub struct RedactionPolicy {
    enabled: bool,
    mask: String,
    rules: Vec<Rule>,
    /// What decides whether a key named in text (`DB_PASSWORD=`, `?token=`, `password:`) names a
    /// secret: the configured key names and key patterns, and the built-in keys even when
    /// `default_keys` is off (as the detectors always had their own list).
    name_rules: Vec<RuleMatch>,
    detectors: Detectors,
    /// Some rule (a key pattern, a path) may match inside JSON text with no anchor in it.
    always_parse_json: bool,
    has_path_rules: bool,
    hmac_key: Option<Vec<u8>>,
    version: String,
    /// Identifies this compiled policy (and its clones) in the per-thread key-rule cache.
    cache_id: u64,
}

impl RedactionPolicy {
    /// Compiles a policy. `rules` are tried first, then the built-in keys (when enabled).
    pub fn new(
        enabled: bool,
        mask: String,
        default_keys: bool,
        mut rules: Vec<Rule>,
        detector_config: DetectorsConfig,
        hmac_key: Option<Vec<u8>>,
    ) -> RedactionPolicy {
        let builtin = builtin_keys();
        let mut name_rules: Vec<RuleMatch> =
            rules.iter().filter(|r| !matches!(r.matcher, RuleMatch::Path(_))).map(|r| r.matcher.clone()).collect();
        name_rules.extend(builtin.iter().cloned());
        if default_keys {
            rules.extend(builtin.into_iter().map(|matcher| Rule { matcher, replacement: Replacement::Mask }));
        }
        let mut key_anchors: Vec<String> = name_rules
            .iter()
            .filter_map(|r| match r {
                RuleMatch::Key(k) => k.anchor().map(str::to_owned),
                _ => None,
            })
            .collect();
        key_anchors.sort();
        key_anchors.dedup();
        // Keys no ASCII word announces: a regular expression, or a name the automaton cannot fold.
        let unanchored_keys = name_rules.iter().any(|r| matches!(r, RuleMatch::KeyPattern(_)))
            || key_anchors.iter().any(|a| !a.is_ascii());
        let has_path_rules = rules.iter().any(|r| matches!(r.matcher, RuleMatch::Path(_)));
        let always_parse_json = unanchored_keys || has_path_rules;
        let detectors = Detectors::new(&detector_config, &key_anchors, unanchored_keys);
        let describe_rule = |r: &Rule| json!({"match": r.matcher.describe(), "replace": if r.replacement == Replacement::Mask { "mask" } else { "hmac" }});
        let description = json!({
            "v": 2,
            "enabled": enabled,
            "mask": mask,
            "rules": rules.iter().map(describe_rule).collect::<Vec<_>>(),
            "nameRules": name_rules.iter().map(RuleMatch::describe).collect::<Vec<_>>(),
            "measureWords": MEASURE_WORDS,
            "measurePrefixes": MEASURE_PREFIXES,
            "pairNames": PAIR_NAMES,
            "detectors": detectors.describe(),
            "cardNumbersInNumbers": detector_config.card_numbers,
            "jsonStrings": detector_config.json_strings,
            "hmacKey": hmac_key.as_ref().map(|k| hex::encode(&Sha256::digest(k)[..8])),
        });
        let canonical = audit_schema::canonical::canonicalize(&description).unwrap_or_default();
        let version = hex::encode(&Sha256::digest(&canonical)[..8]);
        let cache_id = rules::NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RedactionPolicy {
            enabled,
            mask,
            rules,
            name_rules,
            detectors,
            always_parse_json,
            has_path_rules,
            hmac_key,
            version,
            cache_id,
        }
    }

    /// The default policy (built-in keys, the default detectors, mask).
    pub fn default_policy() -> RedactionPolicy {
        RedactionPolicy::new(true, "***".into(), true, Vec::new(), DetectorsConfig::default(), None)
    }

    /// Version hash of this policy (16 hex), recorded in each event's `redaction.policy`.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn replacement(&self, replacement: Replacement, value: &Value) -> Value {
        match (replacement, &self.hmac_key) {
            (Replacement::Hmac, Some(key)) => {
                let canonical =
                    audit_schema::canonical::canonicalize(value).unwrap_or_else(|_| value.to_string().into_bytes());
                #[allow(clippy::expect_used)] // HMAC accepts keys of any length
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(&canonical);
                Value::String(format!("hmac:{}", &hex::encode(mac.finalize().into_bytes())[..32]))
            }
            _ => Value::String(self.mask.clone()),
        }
    }

    /// Redacts the subtree `value` found at `root` (`metadata` or `diff`), recording what it did.
    pub fn redact(&self, root: &str, value: &mut Value, report: &mut RedactionReport) {
        if !self.enabled {
            return;
        }
        let mut path = String::with_capacity(64);
        path.push_str(root);
        self.walk(value, &mut path, report, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `v` redacted as the `metadata` of an event, and the report.
    pub(super) fn redact(policy: &RedactionPolicy, mut v: Value) -> (Value, RedactionReport) {
        let mut report = RedactionReport::default();
        policy.redact("metadata", &mut v, &mut report);
        (v, report)
    }

    #[test]
    fn the_version_covers_the_keys_the_measure_rule_and_every_detector_switch() {
        let default = RedactionPolicy::default_policy();
        let version = |config: DetectorsConfig| {
            RedactionPolicy::new(true, "***".into(), true, Vec::new(), config, None).version().to_owned()
        };
        let mut seen = std::collections::BTreeSet::from([default.version().to_owned()]);
        for off in [
            DetectorsConfig { ai_keys: false, ..DetectorsConfig::default() },
            DetectorsConfig { env_assignments: false, ..DetectorsConfig::default() },
            DetectorsConfig { json_strings: false, ..DetectorsConfig::default() },
            DetectorsConfig { card_numbers: false, ..DetectorsConfig::default() },
            DetectorsConfig { iban: true, ..DetectorsConfig::default() },
        ] {
            assert!(seen.insert(version(off.clone())), "{off:?} has its own version");
        }
        let no_builtin = RedactionPolicy::new(true, "***".into(), false, Vec::new(), DetectorsConfig::default(), None);
        assert!(seen.insert(no_builtin.version().to_owned()));
    }

    #[test]
    fn hmac_tokens_are_stable_joinable_and_keyed() {
        let rules = || vec![Rule { matcher: RuleMatch::key("email"), replacement: Replacement::Hmac }];
        let a = RedactionPolicy::new(
            true,
            "***".into(),
            true,
            rules(),
            DetectorsConfig::default(),
            Some(b"0123456789abcdef".to_vec()),
        );
        let b = RedactionPolicy::new(
            true,
            "***".into(),
            true,
            rules(),
            DetectorsConfig::default(),
            Some(b"fedcba9876543210".to_vec()),
        );
        let (v1, _) = redact(&a, json!({"email": "ada@example.com", "other": {"email": "ada@example.com"}}));
        let (v2, _) = redact(&b, json!({"email": "ada@example.com"}));
        let token = v1["email"].as_str().unwrap();
        assert!(token.starts_with("hmac:") && token.len() == 37, "{token}");
        assert_eq!(v1["email"], v1["other"]["email"], "equal values give equal tokens");
        assert_ne!(v1["email"], v2["email"], "another key gives another token");
        assert_ne!(a.version(), b.version(), "the key is part of the policy version");
    }

    #[test]
    fn the_version_changes_with_the_rules_and_not_otherwise() {
        let p1 = RedactionPolicy::default_policy();
        let p2 = RedactionPolicy::default_policy();
        assert_eq!(p1.version(), p2.version());
        let p3 = RedactionPolicy::new(true, "[redacted]".into(), true, Vec::new(), DetectorsConfig::default(), None);
        assert_ne!(p1.version(), p3.version());
    }

    #[test]
    fn disabled_policy_leaves_values_alone() {
        let policy = RedactionPolicy::new(false, "***".into(), true, Vec::new(), DetectorsConfig::default(), None);
        let (v, report) = redact(&policy, json!({"password": "p"}));
        assert_eq!(v["password"], "p");
        assert!(report.paths.is_empty());
    }
}
