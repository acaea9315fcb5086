//! Redaction of secrets in the free-form parts of an event (`metadata` and `diff`).
//!
//! Four kinds of rule, applied in one walk over the JSON tree:
//! * **keys**: the built-in list (password, otp, token, accessToken, refreshToken, authorization,
//!   cookie, set-cookie, secret, apiKey, privateKey) plus configured names, matched across case and
//!   spelling: a key is split into words (`x-api-key` → x/api/key, `accessToken` → access/token) and
//!   matches when the rule's words appear in it in a row (plural allowed on the last word) or its
//!   letters end with the rule's letters (`xapikey`). The whole value under a matching key is
//!   replaced, whatever its type, at any depth, inside arrays too;
//! * **paths**: dot paths with `*` (one segment) and `**` (any depth), e.g. `metadata.users.*.ssn`;
//! * **key patterns**: regular expressions over key names;
//! * **value detectors** for secrets inside strings that no key gives away: `Bearer`/`Basic`
//!   credentials, JWTs, `user:password@` in URLs, `password=`/`token=`/`api_key=`... in query
//!   strings, PEM private-key blocks, and card numbers that pass the Luhn check. Only the secret part
//!   of the string is replaced.
//!
//! A replacement is the mask (`***`) or, per rule, `hmac:<32 hex>` = HMAC-SHA256 under a configured
//! key over the value's canonical JSON: equal values give equal tokens (joinable) without being
//! readable. The policy's version ([`RedactionPolicy::version`]) is a hash of every rule, the mask and
//! the HMAC key's fingerprint, recorded on each event with the redacted paths.

use std::collections::BTreeMap;
use std::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use regex::Regex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::DetectorsConfig;

/// The built-in sensitive keys.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "otp",
    "token",
    "accessToken",
    "refreshToken",
    "authorization",
    "cookie",
    "set-cookie",
    "secret",
    "apiKey",
    "privateKey",
];

/// Splits a key into lowercase words at separators and lower→upper case changes.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A key split into words once, so every rule can test it without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWords {
    words: Vec<String>,
    joined: String,
}

impl KeyWords {
    /// Splits `key`.
    pub fn new(key: &str) -> Self {
        let words = words(key);
        KeyWords { joined: words.concat(), words }
    }
}

/// `word` is `base` or `base` + "s".
fn same_or_plural(word: &str, base: &str) -> bool {
    word == base || (word.len() == base.len() + 1 && word.starts_with(base) && word.ends_with('s'))
}

/// A key name as a rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    original: String,
    words: Vec<String>,
    joined: String,
}

impl KeyName {
    /// Parses a rule's key name.
    pub fn new(name: &str) -> Self {
        let words = words(name);
        KeyName { original: name.to_owned(), joined: words.concat(), words }
    }

    /// Whether a document key matches this name.
    pub fn matches(&self, key: &str) -> bool {
        self.matches_words(&KeyWords::new(key))
    }

    /// [`KeyName::matches`] on a key already split.
    pub fn matches_words(&self, key: &KeyWords) -> bool {
        if self.words.is_empty() {
            return false;
        }
        if key.joined.ends_with(&self.joined) || same_or_plural(&key.joined, &self.joined) {
            return true;
        }
        let n = self.words.len();
        key.words.windows(n).any(|w| w[..n - 1] == self.words[..n - 1] && same_or_plural(&w[n - 1], &self.words[n - 1]))
    }
}

/// One segment of a concrete path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    Literal(String),
    Any,
    AnyDepth,
}

/// A dot path with wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segs: Vec<PatSeg>,
}

impl PathPattern {
    /// Parses `metadata.users.*.ssn`, `metadata.users[*].ssn`, `diff.**.password`.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if name.is_empty() && rest.is_empty() {
                return Err(format!("{text:?} has an empty segment"));
            }
            if !name.is_empty() {
                segs.push(match name {
                    "*" => PatSeg::Any,
                    "**" => PatSeg::AnyDepth,
                    n => PatSeg::Literal(n.to_owned()),
                });
            }
            if !rest.is_empty() {
                for idx in format!("[{rest}").split('[').skip(1) {
                    let idx = idx.strip_suffix(']').ok_or_else(|| format!("{text:?} has an unclosed ["))?;
                    segs.push(if idx == "*" {
                        PatSeg::Any
                    } else {
                        idx.parse::<usize>().map_err(|_| format!("{text:?}: [{idx}] is not an index or *"))?;
                        PatSeg::Literal(idx.to_owned())
                    });
                }
            }
        }
        match segs.first() {
            Some(PatSeg::Literal(root)) if root == "metadata" || root == "diff" => {}
            Some(PatSeg::AnyDepth | PatSeg::Any) => {}
            _ => {
                return Err(format!(
                    "{text:?} must start with metadata or diff (the parts of an event that are redacted)"
                ))
            }
        }
        Ok(PathPattern { text: text.to_owned(), segs })
    }

    fn matches(&self, path: &[Seg]) -> bool {
        fn go(pat: &[PatSeg], path: &[Seg]) -> bool {
            match pat.split_first() {
                None => path.is_empty(),
                Some((PatSeg::AnyDepth, rest)) => (0..=path.len()).any(|i| go(rest, &path[i..])),
                Some((seg, rest)) => {
                    let Some((head, tail)) = path.split_first() else { return false };
                    let ok = match (seg, head) {
                        (PatSeg::Any, _) => true,
                        (PatSeg::Literal(l), Seg::Key(k)) => l.eq_ignore_ascii_case(k),
                        (PatSeg::Literal(l), Seg::Index(i)) => l.parse::<usize>().is_ok_and(|n| n == *i),
                        (PatSeg::AnyDepth, _) => unreachable!(),
                    };
                    ok && go(rest, tail)
                }
            }
        }
        go(&self.segs, path)
    }
}

/// What a rule matches.
#[derive(Debug, Clone)]
pub enum RuleMatch {
    /// A key name (spelling variants included).
    Key(KeyName),
    /// A path pattern.
    Path(PathPattern),
    /// A regular expression over key names.
    KeyPattern(Regex),
}

impl RuleMatch {
    /// A key-name rule.
    pub fn key(name: &str) -> RuleMatch {
        RuleMatch::Key(KeyName::new(name))
    }

    /// A path rule.
    pub fn path(pattern: &str) -> Result<RuleMatch, String> {
        PathPattern::parse(pattern).map(RuleMatch::Path)
    }

    /// A key-regex rule.
    pub fn key_pattern(pattern: &str) -> Result<RuleMatch, String> {
        Regex::new(pattern)
            .map(RuleMatch::KeyPattern)
            .map_err(|e| format!("{pattern:?} is not a valid regular expression: {e}"))
    }

    fn kind(&self) -> &'static str {
        match self {
            RuleMatch::Key(_) => "key",
            RuleMatch::Path(_) => "path",
            RuleMatch::KeyPattern(_) => "key_pattern",
        }
    }

    fn describe(&self) -> Value {
        match self {
            RuleMatch::Key(k) => json!({"key": k.original}),
            RuleMatch::Path(p) => json!({"path": p.text}),
            RuleMatch::KeyPattern(r) => json!({"keyPattern": r.as_str()}),
        }
    }
}

/// How a matched value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// The mask string.
    Mask,
    /// `hmac:<32 hex>`.
    Hmac,
}

/// A rule: what to match, how to replace.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Matcher.
    pub matcher: RuleMatch,
    /// Replacement.
    pub replacement: Replacement,
}

#[derive(Debug, Clone)]
struct Detector {
    name: &'static str,
    /// Cheap test a string must pass before the regex runs.
    gate: fn(&str) -> bool,
    regex: Regex,
    /// Where the secret is in a match: the whole match, or where the regex's capture group 1 is,
    /// found without the capture engine (which costs twice the search; a test keeps them equal).
    secret: fn(&str) -> Range<usize>,
    luhn: bool,
}

/// The whole match is the secret.
fn whole(m: &str) -> Range<usize> {
    0..m.len()
}

/// `<scheme><whitespace><credential>`: the credential.
fn after_scheme(m: &str) -> Range<usize> {
    let scheme_end = m.find(char::is_whitespace).unwrap_or(m.len());
    let start = m[scheme_end..].find(|c: char| !c.is_whitespace()).map_or(m.len(), |i| scheme_end + i);
    start..m.len()
}

/// `<scheme>://<user>:<password>@`: the password (the user holds no `:`, the password no `@`).
fn url_password(m: &str) -> Range<usize> {
    let user = m.find("://").map_or(0, |i| i + 3);
    let start = m[user..].find(':').map_or(m.len(), |i| user + i + 1);
    start..m.len().saturating_sub(1).max(start)
}

/// `<name>=<value>`: the value (names hold no `=`).
fn after_equals(m: &str) -> Range<usize> {
    m.find('=').map_or(m.len(), |i| i + 1)..m.len()
}

/// What redaction did to one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionReport {
    /// Paths of redacted values, in document order.
    pub paths: Vec<String>,
    /// Redactions by rule kind (`key`, `path`, `key_pattern`, `bearer`, `jwt`, ...).
    pub by_rule: BTreeMap<&'static str, u64>,
}

/// A compiled redaction policy.
#[derive(Debug, Clone)]
pub struct RedactionPolicy {
    enabled: bool,
    mask: String,
    rules: Vec<Rule>,
    detectors: Vec<Detector>,
    hmac_key: Option<Vec<u8>>,
    version: String,
    /// Identifies this compiled policy (and its clones) in the per-thread key-rule cache.
    cache_id: u64,
}

#[allow(clippy::expect_used)] // constant patterns, covered by tests
fn detectors(config: &DetectorsConfig) -> Vec<Detector> {
    let mut out = Vec::new();
    let d = |name, gate: fn(&str) -> bool, re: &str, secret, luhn| Detector {
        name,
        gate,
        regex: Regex::new(re).expect("detector regex"),
        secret,
        luhn,
    };
    if config.private_keys {
        out.push(d(
            "private_key",
            |s| s.contains("-----BEGIN"),
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\z)",
            whole,
            false,
        ));
    }
    if config.bearer_tokens {
        out.push(d(
            "jwt",
            |s| s.contains("eyJ"),
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            whole,
            false,
        ));
        out.push(d(
            "bearer",
            has_auth_scheme,
            r"(?i)\b(?:bearer|basic|token)\s+([A-Za-z0-9\-._~+/]{8,}=*)",
            after_scheme,
            false,
        ));
    }
    if config.url_credentials {
        out.push(d(
            "url_credentials",
            |s| s.contains("://") && s.contains('@'),
            r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@",
            url_password,
            false,
        ));
        out.push(d(
            "url_credentials",
            |s| s.contains('='),
            r"(?i)(?:^|[?&;\s])(?:password|passwd|pwd|pass|token|access_token|refresh_token|id_token|api_key|apikey|api-key|secret|client_secret)=([^&\s#;]+)",
            after_equals,
            false,
        ));
    }
    if config.card_numbers {
        out.push(d(
            "card_number",
            |s| s.bytes().filter(u8::is_ascii_digit).count() >= 13,
            r"\b[2-6](?:[ -]?\d){12,18}\b",
            whole,
            true,
        ));
    }
    out
}

/// Whether `s` may hold an authorization scheme followed by a credential.
fn has_auth_scheme(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(5).any(|w| {
        let l = |i: usize| w[i].to_ascii_lowercase();
        (l(0) == b'b'
            && ((l(1) == b'e' && l(2) == b'a' && l(3) == b'r' && l(4) == b'e')
                || (l(1) == b'a' && l(2) == b's' && l(3) == b'i' && l(4) == b'c')))
            || (l(0) == b't' && l(1) == b'o' && l(2) == b'k' && l(3) == b'e' && l(4) == b'n')
    })
}

/// Luhn checksum over the digits of `s` (13–19 of them).
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
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
        if default_keys {
            rules.extend(
                DEFAULT_KEYS.iter().map(|k| Rule { matcher: RuleMatch::key(k), replacement: Replacement::Mask }),
            );
        }
        let detectors = detectors(&detector_config);
        let description = json!({
            "v": 1,
            "enabled": enabled,
            "mask": mask,
            "rules": rules.iter().map(|r| json!({"match": r.matcher.describe(), "replace": if r.replacement == Replacement::Mask { "mask" } else { "hmac" }})).collect::<Vec<_>>(),
            "detectors": detectors.iter().map(|d| json!({"name": d.name, "regex": d.regex.as_str()})).collect::<Vec<_>>(),
            "hmacKey": hmac_key.as_ref().map(|k| hex::encode(&Sha256::digest(k)[..8])),
        });
        let canonical = audit_schema::canonical::canonicalize(&description).unwrap_or_default();
        let version = hex::encode(&Sha256::digest(&canonical)[..8]);
        let cache_id = NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RedactionPolicy { enabled, mask, rules, detectors, hmac_key, version, cache_id }
    }

    /// The default policy (built-in keys, all detectors, mask).
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
        self.walk(value, &mut path, report);
    }

    /// The first key-only rule (key name or key pattern) matching `key`, remembered per thread:
    /// the same few keys come back in every event.
    fn key_rule(&self, key: &str) -> Option<usize> {
        KEY_RULES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != self.cache_id {
                cache.0 = self.cache_id;
                cache.1.clear();
            }
            if let Some(hit) = cache.1.get(key) {
                return *hit;
            }
            let words = KeyWords::new(key);
            let found = self.rules.iter().position(|r| match &r.matcher {
                RuleMatch::Key(k) => k.matches_words(&words),
                RuleMatch::KeyPattern(re) => re.is_match(key),
                RuleMatch::Path(_) => false,
            });
            if cache.1.len() >= 8192 {
                cache.1.clear();
            }
            cache.1.insert(key.to_owned(), found);
            found
        })
    }

    fn matching_rule(&self, key: Option<&str>, path: &str) -> Option<&Rule> {
        let by_key = key.and_then(|k| self.key_rule(k));
        let by_path = if self.rules.iter().any(|r| matches!(r.matcher, RuleMatch::Path(_))) {
            let segs = split_path(path);
            self.rules.iter().position(|r| matches!(&r.matcher, RuleMatch::Path(p) if p.matches(&segs)))
        } else {
            None
        };
        let first = match (by_key, by_path) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first.and_then(|i| self.rules.get(i))
    }

    fn walk(&self, value: &mut Value, path: &mut String, report: &mut RedactionReport) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    let at = path.len();
                    path.push('.');
                    path.push_str(key);
                    self.visit(Some(key), child, path, report);
                    path.truncate(at);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    let at = path.len();
                    path.push('[');
                    path.push_str(itoa::Buffer::new().format(i));
                    path.push(']');
                    self.visit(None, child, path, report);
                    path.truncate(at);
                }
            }
            Value::String(s) => {
                if let Some(replaced) = self.scan_string(s, report) {
                    *s = replaced;
                    report.paths.push(path.clone());
                }
            }
            _ => {}
        }
    }

    fn visit(&self, key: Option<&str>, child: &mut Value, path: &mut String, report: &mut RedactionReport) {
        if let Some(rule) = self.matching_rule(key, path) {
            *child = self.replacement(rule.replacement, child);
            report.paths.push(path.clone());
            *report.by_rule.entry(rule.matcher.kind()).or_default() += 1;
        } else {
            self.walk(child, path, report);
        }
    }

    /// Runs the value detectors over `s`; returns the redacted string when something was found.
    fn scan_string(&self, s: &str, report: &mut RedactionReport) -> Option<String> {
        let mut current: Option<String> = None;
        for d in &self.detectors {
            let text = current.as_deref().unwrap_or(s);
            if !(d.gate)(text) {
                continue;
            }
            let mut found = 0u64;
            let mut out = String::new(); // allocated at the first secret
            let mut last = 0;
            for m in d.regex.find_iter(text) {
                let within = (d.secret)(m.as_str());
                let (start, end) = (m.start() + within.start, m.start() + within.end);
                let secret = &text[start..end];
                if (d.luhn && !luhn_valid(secret)) || secret == self.mask {
                    continue;
                }
                if found == 0 {
                    out.reserve(text.len());
                }
                out.push_str(&text[last..start]);
                out.push_str(&self.mask);
                last = end;
                found += 1;
            }
            if found > 0 {
                out.push_str(&text[last..]);
                *report.by_rule.entry(d.name).or_default() += found;
                current = Some(out);
            }
        }
        current
    }
}

type KeyRuleCache = std::collections::HashMap<String, Option<usize>, foldhash::fast::RandomState>;

/// Source of [`RedactionPolicy`] cache ids (0 is "none yet").
static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// Per thread: (policy cache id, key -> index of the first matching key-only rule).
    static KEY_RULES: std::cell::RefCell<(u64, KeyRuleCache)> =
        std::cell::RefCell::new((0, KeyRuleCache::default()));
}

/// Splits a recorded path (`metadata.users[0].ssn`) into segments for path rules.
fn split_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            segs.push(Seg::Key(key.to_owned()));
        }
        for idx in pieces {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                segs.push(Seg::Index(i));
            }
        }
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(policy: &RedactionPolicy, mut v: Value) -> (Value, RedactionReport) {
        let mut report = RedactionReport::default();
        policy.redact("metadata", &mut v, &mut report);
        (v, report)
    }

    #[test]
    fn default_keys_match_case_and_spelling_variants_at_any_depth() {
        let policy = RedactionPolicy::default_policy();
        let (v, report) = redact(
            &policy,
            json!({
                "Authorization": "Basic dXNlcjpwYXNz",
                "headers": {"x-api-key": "k1", "Set-Cookie": ["a=1", "b=2"], "cookies": {"sid": "s"}},
                "access_token": {"nested": "object replaced whole"},
                "users": [{"name": "ada", "PASSWORD": 1234}, {"name": "bob", "password_confirmation": "x"}],
                "refreshToken": "r", "otp": 123456, "client_secret": "cs", "private_key": "pk", "apikey": "k2",
                "secretary": "not a secret", "tokenizer": "fine", "passport": "fine"
            }),
        );
        for (pointer, expected) in [
            ("/Authorization", json!("***")),
            ("/headers/x-api-key", json!("***")),
            ("/headers/Set-Cookie", json!("***")),
            ("/headers/cookies", json!("***")),
            ("/access_token", json!("***")),
            ("/users/0/PASSWORD", json!("***")),
            ("/users/1/password_confirmation", json!("***")),
            ("/refreshToken", json!("***")),
            ("/otp", json!("***")),
            ("/client_secret", json!("***")),
            ("/private_key", json!("***")),
            ("/apikey", json!("***")),
            ("/secretary", json!("not a secret")),
            ("/tokenizer", json!("fine")),
            ("/passport", json!("fine")),
            ("/users/0/name", json!("ada")),
        ] {
            assert_eq!(v.pointer(pointer), Some(&expected), "{pointer}");
        }
        assert!(report.paths.contains(&"metadata.users[0].PASSWORD".to_owned()), "{:?}", report.paths);
        assert_eq!(report.by_rule.get("key"), Some(&12));
    }

    #[test]
    fn path_rules_support_wildcards_and_indices() {
        let rules = vec![
            Rule { matcher: RuleMatch::path("metadata.users.*.ssn").unwrap(), replacement: Replacement::Mask },
            Rule { matcher: RuleMatch::path("metadata.**.email").unwrap(), replacement: Replacement::Mask },
            Rule { matcher: RuleMatch::path("metadata.cards[1]").unwrap(), replacement: Replacement::Mask },
        ];
        let policy = RedactionPolicy::new(true, "***".into(), false, rules, DetectorsConfig::default(), None);
        let (v, report) = redact(
            &policy,
            json!({"users": [{"ssn": "1"}, {"ssn": "2", "keep": "k"}], "deep": {"a": {"b": {"email": "e@x"}}}, "email": "top@x", "cards": ["a", "b"]}),
        );
        assert_eq!(v["users"][0]["ssn"], "***");
        assert_eq!(v["users"][1]["ssn"], "***");
        assert_eq!(v["users"][1]["keep"], "k");
        assert_eq!(v["deep"]["a"]["b"]["email"], "***");
        assert_eq!(v["email"], "***", "** matches zero segments");
        assert_eq!(v["cards"], json!(["a", "***"]));
        assert_eq!(report.by_rule.get("path"), Some(&5));
    }

    #[test]
    fn path_patterns_are_validated() {
        assert!(PathPattern::parse("metadata..x").is_err());
        assert!(PathPattern::parse("actor.id").is_err(), "only metadata and diff are redacted");
        assert!(PathPattern::parse("metadata.a[x]").is_err());
        assert!(PathPattern::parse("diff.after.*.password").is_ok());
    }

    #[test]
    fn key_patterns_are_regular_expressions_over_keys() {
        let rules =
            vec![Rule { matcher: RuleMatch::key_pattern("^secret_|_pin$").unwrap(), replacement: Replacement::Mask }];
        let policy = RedactionPolicy::new(true, "***".into(), false, rules, DetectorsConfig::default(), None);
        let (v, _) = redact(&policy, json!({"secret_sauce": 1, "card_pin": 2, "pinned": 3}));
        assert_eq!(v, json!({"secret_sauce": "***", "card_pin": "***", "pinned": 3}));
    }

    #[test]
    fn each_detector_finds_its_secret_where_its_capture_group_is() {
        let texts = [
            "Bearer abcdef1234567890.xyz",
            "auth: BASIC\t\u{2003} dXNlcjpwYXNzd29yZA== then token  abcdefgh12345678 and Token\nzzzzzzzzzzz=",
            "postgres://admin:s3cr3t@db.internal:5432/app and https://u:p:q@h/ and a+b.c://x:y@z",
            "/cb?code=1&access_token=abc123&state=x;pwd=p;secret=a=b#frag password=x&Token=y",
            "user=ada&password=hunter2 api-key=k\tapi_key=é",
            "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abc from -----BEGIN EC PRIVATE KEY-----\nx",
            "card 4111 1111 1111 1111 and 5500-0000-0000-0004",
        ];
        let detectors = detectors(&DetectorsConfig::default());
        let mut checked = 0;
        for d in &detectors {
            for text in texts {
                for caps in d.regex.captures_iter(text) {
                    let m = caps.get(0).unwrap();
                    let want = caps.get(1).map_or(0..m.len(), |g| g.start() - m.start()..g.end() - m.start());
                    assert_eq!((d.secret)(m.as_str()), want, "{} in {:?}", d.name, m.as_str());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 15, "the texts exercise every detector: {checked} matches");
    }

    #[test]
    fn value_detectors_find_secrets_inside_strings() {
        let policy = RedactionPolicy::default_policy();
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let (v, report) = redact(
            &policy,
            json!({
                "h": "Bearer abcdef1234567890.xyz",
                "log": format!("got {jwt} from client"),
                "url": "postgres://admin:s3cr3t@db.internal:5432/app",
                "query": "/cb?code=1&access_token=abc123&state=x",
                "form": "user=ada&password=hunter2",
                "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
                "note": "card 4111 1111 1111 1111 on file",
                "not_card": "order 4111 1111 1111 1112 and ts 1732579200000",
                "plain": "nothing to see"
            }),
        );
        assert_eq!(v["h"], "Bearer ***");
        assert_eq!(v["log"], "got *** from client");
        assert_eq!(v["url"], "postgres://admin:***@db.internal:5432/app");
        assert_eq!(v["query"], "/cb?code=1&access_token=***&state=x");
        assert_eq!(v["form"], "user=ada&password=***");
        assert_eq!(v["pem"], "***");
        assert_eq!(v["note"], "card *** on file");
        assert_eq!(
            v["not_card"], "order 4111 1111 1111 1112 and ts 1732579200000",
            "Luhn fails; timestamps are not cards"
        );
        assert_eq!(v["plain"], "nothing to see");
        for rule in ["jwt", "bearer", "url_credentials", "private_key", "card_number"] {
            assert!(report.by_rule.contains_key(rule), "{rule}: {:?}", report.by_rule);
        }
        assert!(report.paths.contains(&"metadata.url".to_owned()));
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

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555 5555 5555 4444"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("1234"));
    }
}
