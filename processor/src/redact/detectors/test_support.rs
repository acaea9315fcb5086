//! Helpers of the detector tests: every detector on, fake values, and `finds`/`keeps` through the
//! policy.

use std::collections::BTreeMap;

use serde_json::json;

use crate::config::DetectorsConfig;
use crate::redact::{RedactionPolicy, RedactionReport};

/// Every detector on (IBANs are off by default).
pub(super) fn all_on() -> RedactionPolicy {
    let config = DetectorsConfig { iban: true, ..DetectorsConfig::default() };
    RedactionPolicy::new(true, "***".into(), true, Vec::new(), config, None)
}

/// `pattern` repeated to `n` characters: fake values of an issuer's length and alphabet.
pub(super) fn fill(pattern: &str, n: usize) -> String {
    pattern.chars().cycle().take(n).collect()
}

/// Redacts `{"note": text}`: the note after, and the redactions by rule.
pub(super) fn scan(policy: &RedactionPolicy, text: &str) -> (String, BTreeMap<&'static str, u64>) {
    let mut v = json!({ "note": text });
    let mut report = RedactionReport::default();
    policy.redact("metadata", &mut v, &mut report);
    (v["note"].as_str().unwrap_or_default().to_owned(), report.by_rule)
}

/// `rule` finds `secret` in `text`: gone from the note, counted under `rule`.
#[track_caller]
pub(super) fn finds(rule: &str, text: &str, secret: &str) {
    assert!(text.contains(secret), "the sample holds its secret");
    let (out, by_rule) = scan(&all_on(), text);
    assert!(!out.contains(secret), "{rule}: {secret:?} left in {out:?}");
    assert!(by_rule.contains_key(rule), "{rule} not in {by_rule:?} for {text:?} -> {out:?}");
}

/// Nothing in `text` is redacted.
#[track_caller]
pub(super) fn keeps(text: &str) {
    let (out, by_rule) = scan(&all_on(), text);
    assert_eq!(out, text, "{by_rule:?}");
    assert!(by_rule.is_empty(), "{by_rule:?}");
}
