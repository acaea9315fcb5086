//! The compiled detectors ([`Detectors`]): the enabled rows of the table with their regexes, the
//! prefilter that opens only the detectors whose gate a string passes (one Aho-Corasick pass over
//! the anchors, a digit count, the required bytes, the assignments' names), and the search that
//! turns matches into [`Finding`]s.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::Regex;
use serde_json::{json, Value};

use super::assignments::{assignments, Assignment};
use super::{passes, specs, Check, Family, Gate, URL_SIGNATURE_WORDS};
use crate::config::DetectorsConfig;

/// Keys whose lines belong to [`SPECS`]' `authorization_header` (which keeps the scheme visible),
/// not to `secret_assignment`.
const HEADER_KEYS: &[&str] = &["authorization", "proxy-authorization"];

/// The bit [`Detectors::gates`] sets when a string holds a word of a sensitive key name.
const KEY_WORDS: u64 = 1 << 63;

/// A compiled detector.
#[derive(Debug, Clone)]
struct Detector {
    name: &'static str,
    family: Family,
    gate: Gate,
    regex: Regex,
    check: Check,
    /// Index of the regex's `secret` group, if it has one.
    secret_group: Option<usize>,
    /// Index of its `name` group (the key a [`Check::KeyName`] value is assigned to).
    name_group: Option<usize>,
}

/// A secret found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::redact) struct Finding {
    /// Byte range of the secret.
    pub(in crate::redact) range: Range<usize>,
    /// The detector that found it.
    pub(in crate::redact) rule: &'static str,
    /// Counted in the report: false when an earlier detector found an overlapping secret.
    pub(in crate::redact) counted: bool,
}

/// The enabled detectors and their prefilter.
#[derive(Debug, Clone)]
pub(in crate::redact) struct Detectors {
    list: Vec<Detector>,
    /// Anchors of the literal- and key-word-gated detectors.
    automaton: Option<AhoCorasick>,
    /// For each automaton pattern, the detectors it opens.
    pattern_masks: Vec<u64>,
    /// Every detector the automaton can open.
    anchored: u64,
    /// Digit-gated detectors: (digits needed, detector bit).
    digit_gates: Vec<(usize, u64)>,
    /// Detectors whose matches all hold a byte besides their anchor: (byte, detector bits).
    required_bytes: Vec<(u8, u64)>,
    /// Key-named detectors: (the assignment shape their regex reads, detector bit).
    assignment_gates: Vec<(Assignment, u64)>,
    /// An `authorization_header` detector is on.
    header_lines: bool,
    /// Card numbers stored as JSON numbers are checked too.
    pub(in crate::redact) card_numbers: bool,
    /// Strings holding JSON are parsed and redacted inside.
    pub(in crate::redact) json_strings: bool,
}

impl Detectors {
    /// Compiles the enabled detectors. `key_anchors` are the words of the policy's key names;
    /// `unanchored_keys`: some key rule is a regular expression (or a non-ASCII name), whose keys
    /// no word announces (the key-named detectors then run on every string holding `=` or `:`).
    #[allow(clippy::expect_used)] // constant patterns, covered by tests
    pub(in crate::redact) fn new(config: &DetectorsConfig, key_anchors: &[String], unanchored_keys: bool) -> Detectors {
        let list: Vec<Detector> = specs()
            .filter(|s| s.family.enabled(config))
            .map(|s| {
                let regex = Regex::new(&s.regex.replace(r"\b", r"(?-u:\b)")).expect("detector regex");
                let group = |name: &str| regex.capture_names().position(|n| n == Some(name));
                let (secret_group, name_group) = (group("secret"), group("name"));
                Detector {
                    name: s.name,
                    family: s.family,
                    gate: s.gate,
                    regex,
                    check: s.check,
                    secret_group,
                    name_group,
                }
            })
            .collect();
        assert!(list.len() < 64, "one bit per detector, and one for key words");
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_masks: Vec<u64> = Vec::new();
        let mut digit_gates = Vec::new();
        let mut required_bytes: Vec<(u8, u64)> = Vec::new();
        let mut assignment_gates = Vec::new();
        let mut add = |pattern: &str, bit: u64| {
            let lower = pattern.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == lower) {
                Some(i) => pattern_masks[i] |= bit,
                None => {
                    patterns.push(lower);
                    pattern_masks.push(bit);
                }
            }
        };
        for (i, d) in list.iter().enumerate() {
            let bit = 1u64 << i;
            match d.gate {
                Gate::Literals(literals) => literals.iter().for_each(|l| add(l, bit)),
                Gate::LiteralsAnd(literals, byte) => {
                    literals.iter().for_each(|l| add(l, bit));
                    match required_bytes.iter_mut().find(|(b, _)| *b == byte) {
                        Some((_, bits)) => *bits |= bit,
                        None => required_bytes.push((byte, bit)),
                    }
                }
                Gate::KeyWords(shape) => {
                    assignment_gates.push((shape, bit));
                    key_anchors.iter().for_each(|w| add(w, bit));
                    if d.check == Check::QueryName {
                        URL_SIGNATURE_WORDS.iter().for_each(|w| add(w, bit));
                    }
                    if unanchored_keys {
                        add("=", bit);
                        add(":", bit);
                    }
                }
                Gate::Digits(n) => digit_gates.push((n, bit)),
            }
        }
        // A key word anywhere opens JSON text to the key rules, whichever detectors are on.
        key_anchors.iter().for_each(|w| add(w, KEY_WORDS));
        let anchored = pattern_masks.iter().fold(0, |a, m| a | m);
        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&patterns)
                .expect("anchor automaton")
        });
        let header_lines = list.iter().any(|d| d.name == "authorization_header");
        Detectors {
            header_lines,
            list,
            automaton,
            pattern_masks,
            anchored,
            digit_gates,
            required_bytes,
            assignment_gates,
            card_numbers: config.card_numbers,
            json_strings: config.json_strings,
        }
    }

    /// The detectors whose gate `s` passes, one bit each (and [`KEY_WORDS`]).
    pub(in crate::redact) fn gates(&self, s: &str) -> u64 {
        let mut open = 0u64;
        if let Some(automaton) = &self.automaton {
            for m in automaton.find_overlapping_iter(s) {
                open |= self.pattern_masks[m.pattern().as_usize()];
                if open == self.anchored {
                    break;
                }
            }
        }
        if let Some(fewest) = self.digit_gates.iter().map(|g| g.0).min() {
            if s.len() >= fewest {
                let digits = s.bytes().filter(u8::is_ascii_digit).count();
                for &(needed, bit) in &self.digit_gates {
                    if digits >= needed {
                        open |= bit;
                    }
                }
            }
        }
        open
    }

    /// The secrets in `text` found by the detectors in `open`, in detector order. `names_secret`
    /// tells whether a key name (with its value, and whether it is a URL parameter) names a secret.
    pub(in crate::redact) fn find(
        &self,
        text: &str,
        open: u64,
        mask: &str,
        names_secret: impl Fn(&str, &str, bool) -> bool,
    ) -> Vec<Finding> {
        let open = self.refine(text, open, &names_secret);
        let mut found: Vec<Finding> = Vec::new();
        let mut accept = |range: Range<usize>, rule: &'static str| {
            let secret = &text[range.clone()];
            let leftover = |rest: &str| rest.trim().is_empty();
            if leftover(secret) || (secret.contains(mask) && secret.split(mask).all(leftover)) {
                return; // nothing, or what an earlier redaction left
            }
            let counted = !found.iter().any(|f| f.range.start < range.end && range.start < f.range.end);
            found.push(Finding { range, rule, counted });
        };
        for (i, d) in self.list.iter().enumerate() {
            if open & (1 << i) == 0 {
                continue;
            }
            if let Some(secret_group) = d.secret_group {
                for caps in d.regex.captures_iter(text) {
                    let Some(secret) = caps.get(secret_group) else { continue };
                    let mut range = secret.range();
                    if let Some(name_group) = d.name_group {
                        range = trim_value(text, range);
                        let name = caps.get(name_group).map_or("", |n| n.as_str());
                        if self.header_lines && HEADER_KEYS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                            continue;
                        }
                        if !names_secret(name, &text[range.clone()], d.check == Check::QueryName) {
                            continue;
                        }
                    } else if !passes(d.check, text, range.clone()) {
                        continue;
                    }
                    accept(range, d.name);
                }
            } else {
                for m in d.regex.find_iter(text) {
                    if passes(d.check, text, m.range()) {
                        accept(m.range(), d.name);
                    }
                }
            }
        }
        found
    }

    /// `open` without the detectors whose regex cannot find a secret in `text` although their gate
    /// passed: a required byte is missing, or no `name=value` of the shape a key-named detector
    /// reads has a name that names a secret ([`assignments`]). Exact: every match these skip would
    /// have been dropped by its check.
    fn refine(&self, text: &str, mut open: u64, names_secret: &impl Fn(&str, &str, bool) -> bool) -> u64 {
        for &(byte, bits) in &self.required_bytes {
            if open & bits != 0 && !text.as_bytes().contains(&byte) {
                open &= !bits;
            }
        }
        if self.assignment_gates.iter().any(|&(_, bit)| open & bit != 0) {
            // The value does not matter here: a key that names a secret for some value passes.
            let found = assignments(text, |name, url_parameter| names_secret(name, "", url_parameter));
            for &(shape, bit) in &self.assignment_gates {
                if !found.contains(shape) {
                    open &= !bit;
                }
            }
        }
        open
    }

    /// Describes the detectors for the policy version.
    pub(in crate::redact) fn describe(&self) -> Value {
        Value::Array(
            self.list
                .iter()
                .map(|d| {
                    let gate = match d.gate {
                        // The byte and the assignment shape follow from the regex: not described.
                        Gate::Literals(l) | Gate::LiteralsAnd(l, _) => json!({"literals": l}),
                        Gate::KeyWords(_) => json!("key_words"),
                        Gate::Digits(n) => json!({"digits": n}),
                    };
                    json!({"name": d.name, "family": d.family.as_str(), "gate": gate, "regex": d.regex.as_str(), "check": d.check.as_str()})
                })
                .collect(),
        )
    }
}

/// An assigned value without trailing blanks, and without its quotes when quoted (what follows
/// the closing quote, `",` in a line of JSON-like text, is not the value).
fn trim_value(text: &str, range: Range<usize>) -> Range<usize> {
    let value = text[range.clone()].trim_end();
    let start = range.start;
    match value.as_bytes().first() {
        Some(&q @ (b'"' | b'\'')) => {
            let end = value[1..].rfind(q as char).map_or(value.len(), |i| i + 1);
            start + 1..start + end.max(1)
        }
        _ => start..start + value.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fill;
    use super::*;

    #[test]
    fn every_detector_regex_compiles_and_every_family_has_a_switch() {
        let all = DetectorsConfig {
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
            iban: true,
        };
        let d = Detectors::new(&all, &["password".into()], false);
        assert_eq!(d.list.len(), specs().count());
        for spec in specs() {
            assert!(spec.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}: snake_case", spec.name);
            let mut off = all.clone();
            match spec.family {
                Family::BearerTokens => off.bearer_tokens = false,
                Family::UrlCredentials => off.url_credentials = false,
                Family::PrivateKeys => off.private_keys = false,
                Family::CardNumbers => off.card_numbers = false,
                Family::CloudKeys => off.cloud_keys = false,
                Family::SourceHostTokens => off.source_host_tokens = false,
                Family::ChatTokens => off.chat_tokens = false,
                Family::PaymentKeys => off.payment_keys = false,
                Family::AiKeys => off.ai_keys = false,
                Family::RegistryTokens => off.registry_tokens = false,
                Family::MessagingKeys => off.messaging_keys = false,
                Family::EnvAssignments => off.env_assignments = false,
                Family::Ssn => off.ssn = false,
                Family::Iban => off.iban = false,
            }
            assert!(!spec.family.enabled(&off), "{}", spec.family.as_str());
            assert!(Detectors::new(&off, &[], false).list.iter().all(|d| d.family != spec.family));
        }
    }

    /// Every match of a literal-gated detector over these samples contains one of its
    /// anchors, so the prefilter never skips a string the regex would match (Twilio's anchor is
    /// context instead: it must be in the string).
    #[test]
    fn every_literal_gated_match_contains_an_anchor() {
        let samples = [
            format!("AKIAEXAMPLEKEY234567:{}", fill("EXAMPLEsecret/Key+0123", 40)),
            format!("aws_secret_access_key = \"{}\"", fill("EXAMPLEsecret/Key+0123", 40)),
            format!("AIza{} ghp_{}", fill("SyEXAMPLE", 35), fill("EXAMPLE0", 36)),
            format!("AccountKey={}==", fill("EXAMPLEkey0123+/", 86)),
            format!("xoxb-1-{} https://hooks.slack.com/services/{}", fill("EXAMPLE", 12), fill("T0/B0/EXAMPLE", 30)),
            format!("sk_live_{} whsec_{} sk-ant-api03-{}", fill("EX0", 24), fill("EX0", 32), fill("EX0", 40)),
            format!("sk-proj-{} hf_{} npm_{}", fill("EXAMPLEk3y9", 50), fill("EXAMPLEtok", 34), fill("EX0", 36)),
            format!(
                "pypi-AgEIcHlwaS5vcmc{} dckr_pat_{} SG.{}.{}",
                fill("X", 50),
                fill("X", 27),
                fill("X", 22),
                fill("Y", 43)
            ),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig Authorization: Basic EXAMPLE0 bearer EXAMPLE0123 x".to_owned(),
            "Authorization: Digest response=\"x\"\nredis://:pw@h curl -u a:b https://x ssn 401550001".to_owned(),
            "-----BEGIN RSA PRIVATE KEY-----\nx PuTTY-User-Key-File-2: x Private-MAC: 00".to_owned(),
            format!("glpat-{} GR1348941{}", fill("EXAMPLE", 20), fill("EXAMPLE", 20)),
        ];
        let all = DetectorsConfig { iban: true, ..DetectorsConfig::default() };
        let detectors = Detectors::new(&all, &[], false);
        let mut checked = 0;
        for d in &detectors.list {
            let Some(anchors) = d.gate.literals() else { continue };
            for text in &samples {
                for m in d.regex.find_iter(text) {
                    let found = m.as_str().to_ascii_lowercase();
                    let context = d.name == "twilio_key" || d.name == "ssn";
                    let within = if context { text.to_ascii_lowercase() } else { found };
                    assert!(
                        anchors.iter().any(|a| within.contains(&a.to_ascii_lowercase())),
                        "{}: {:?} holds none of {anchors:?}",
                        d.name,
                        m.as_str()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 25, "the samples exercise the detectors: {checked} matches");
    }

    #[test]
    fn a_string_without_anchors_opens_no_detector() {
        let detectors = Detectors::new(&DetectorsConfig::default(), &["password".into(), "token".into()], false);
        for text in ["customer request", "EUR", "billing.invoice.update", "r-1", "draft"] {
            assert_eq!(detectors.gates(text), 0, "{text}");
        }
        assert_ne!(detectors.gates("a PASSWORD here") & KEY_WORDS, 0, "key words, any case");
        let digits = detectors.gates("2026-11-26T10:00:00.123Z");
        assert_ne!(digits, 0, "13+ digits open the card and SSN detectors");
        assert_eq!(digits & detectors.anchored, 0, "and nothing else");
    }
}
