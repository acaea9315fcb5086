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

mod detectors;
mod keys;

use std::collections::BTreeMap;
use std::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use regex::Regex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::DetectorsConfig;
pub use detectors::luhn_valid;
use detectors::{card_number, is_url_signature, Detectors};
use keys::measurable_text;
pub use keys::{
    KeyName, KeyWords, WordMatch, DEFAULT_KEYS, DEFAULT_LAST_WORD_KEYS, DEFAULT_WORD_KEYS, MEASURE_PREFIXES,
    MEASURE_WORDS,
};

/// How deep JSON held in strings is parsed (a JSON string inside a JSON string inside the event).
const MAX_JSON_NESTING: u8 = 2;

/// Keys of `{"name": …, "value": …}` objects that name their `value` (HAR headers, form fields).
const PAIR_NAMES: &[&str] = &["name", "key", "header", "field"];

/// The built-in keys as rules.
fn builtin_keys() -> Vec<RuleMatch> {
    DEFAULT_KEYS
        .iter()
        .map(|k| RuleMatch::key(k))
        .chain(DEFAULT_WORD_KEYS.iter().map(|k| RuleMatch::Key(KeyName::with(k, WordMatch::Words))))
        .chain(DEFAULT_LAST_WORD_KEYS.iter().map(|k| RuleMatch::Key(KeyName::with(k, WordMatch::LastWord))))
        .collect()
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
            RuleMatch::Key(k) => match k.how() {
                WordMatch::WordsOrLetters => json!({"key": k.original}),
                WordMatch::Words => json!({"key": k.original, "match": "words"}),
                WordMatch::LastWord => json!({"key": k.original, "match": "last_word"}),
            },
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
        let cache_id = NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// The first key-only rule (key name or key pattern) matching `key`, for a value the measure
    /// rule keeps (`measurable`) or not; remembered per thread: the same few keys come back in
    /// every event.
    fn key_rule(&self, key: &str, measurable: bool) -> Option<usize> {
        let (any, measured) = self.remembered(
            key,
            |c| &mut c.keys,
            || {
                let words = KeyWords::new(key);
                let matches = |r: &Rule| match &r.matcher {
                    RuleMatch::Key(k) => k.matches_words(&words),
                    RuleMatch::KeyPattern(re) => re.is_match(key),
                    RuleMatch::Path(_) => false,
                };
                let any = self.rules.iter().position(matches);
                let measured = any.and_then(|_| {
                    self.rules
                        .iter()
                        .position(|r| matches(r) && !matches!(&r.matcher, RuleMatch::Key(k) if k.is_measure_of(&words)))
                });
                (any, measured)
            },
        );
        if measurable {
            measured
        } else {
            any
        }
    }

    /// `compute(key)`, remembered in this thread's cache for this policy.
    fn remembered<T: Copy>(
        &self,
        key: &str,
        map: fn(&mut KeyCache) -> &mut KeyMap<T>,
        compute: impl FnOnce() -> T,
    ) -> T {
        KEY_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.policy != self.cache_id {
                *cache = KeyCache { policy: self.cache_id, ..KeyCache::default() };
            }
            let map = map(&mut cache);
            if let Some(hit) = map.get(key) {
                return *hit;
            }
            let found = compute();
            if map.len() >= 8192 {
                map.clear();
            }
            map.insert(key.to_owned(), found);
            found
        })
    }

    fn matching_rule(&self, key: Option<&str>, alias: Option<&str>, path: &str, measurable: bool) -> Option<&Rule> {
        let by_key = key.and_then(|k| self.key_rule(k, measurable));
        let by_alias = alias.and_then(|k| self.key_rule(k, measurable));
        let by_path = if self.has_path_rules {
            let segs = split_path(path);
            self.rules.iter().position(|r| matches!(&r.matcher, RuleMatch::Path(p) if p.matches(&segs)))
        } else {
            None
        };
        [by_key, by_alias, by_path].into_iter().flatten().min().and_then(|i| self.rules.get(i))
    }

    /// Whether a key named in text names a secret, given the value assigned to it (the measure
    /// rule) and whether it is a URL parameter (which may also be a URL signature).
    fn names_secret(&self, name: &str, value: &str, url_parameter: bool) -> bool {
        let (signs_url, any, measured) = self.remembered(
            name,
            |c| &mut c.names,
            || {
                let words = KeyWords::new(name);
                let names = |measurable: bool| {
                    self.name_rules.iter().any(|r| match r {
                        RuleMatch::Key(k) => k.matches_words(&words) && !(measurable && k.is_measure_of(&words)),
                        RuleMatch::KeyPattern(re) => re.is_match(name),
                        RuleMatch::Path(_) => false,
                    })
                };
                (is_url_signature(words.last_word()), names(false), names(true))
            },
        );
        (url_parameter && signs_url) || if measurable_text(value) { measured } else { any }
    }

    fn walk(&self, value: &mut Value, path: &mut String, report: &mut RedactionReport, nested: u8) {
        match value {
            Value::Object(map) => {
                let pair_name = pair_name(map);
                for (key, child) in map.iter_mut() {
                    let at = path.len();
                    path.push('.');
                    path.push_str(key);
                    let alias = pair_name.as_deref().filter(|_| key.eq_ignore_ascii_case("value"));
                    self.visit(Some(key), alias, child, path, report, nested);
                    path.truncate(at);
                }
            }
            Value::Array(items) => {
                let pairs = is_pair_list(items);
                for (i, child) in items.iter_mut().enumerate() {
                    let at = path.len();
                    push_index(path, i);
                    match child {
                        Value::Array(pair) if pairs => {
                            let name = pair.first().and_then(Value::as_str).map(str::to_owned);
                            for (j, element) in pair.iter_mut().enumerate() {
                                let at = path.len();
                                push_index(path, j);
                                let alias = name.as_deref().filter(|_| j == 1);
                                self.visit(None, alias, element, path, report, nested);
                                path.truncate(at);
                            }
                        }
                        _ => self.visit(None, None, child, path, report, nested),
                    }
                    path.truncate(at);
                }
            }
            Value::String(s) => {
                if let Some(replaced) = self.scan_string(s, path, report, nested) {
                    *s = replaced;
                    report.paths.push(path.clone());
                }
            }
            Value::Number(n) => {
                let card = self.detectors.card_numbers
                    && n.as_u64().is_some_and(|u| u >= 1_000_000_000_000 && card_number(itoa::Buffer::new().format(u)));
                if card {
                    *value = Value::String(self.mask.clone());
                    report.paths.push(path.clone());
                    *report.by_rule.entry("card_number").or_default() += 1;
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn visit(
        &self,
        key: Option<&str>,
        alias: Option<&str>,
        child: &mut Value,
        path: &mut String,
        report: &mut RedactionReport,
        nested: u8,
    ) {
        let measurable = match &*child {
            Value::Number(_) | Value::Bool(_) => true,
            Value::String(s) => measurable_text(s),
            _ => false,
        };
        if let Some(rule) = self.matching_rule(key, alias, path, measurable) {
            *child = self.replacement(rule.replacement, child);
            report.paths.push(path.clone());
            *report.by_rule.entry(rule.matcher.kind()).or_default() += 1;
        } else {
            self.walk(child, path, report, nested);
        }
    }

    /// Runs the value detectors over `s` (and the whole policy inside it when it holds JSON);
    /// returns the redacted string when something was found.
    fn scan_string(&self, s: &str, path: &str, report: &mut RedactionReport, nested: u8) -> Option<String> {
        let open = self.detectors.gates(s);
        // JSON text: without an anchor or an escape in it, nothing inside can match.
        if self.detectors.json_strings
            && nested < MAX_JSON_NESTING
            && holds_json(s)
            && (open != 0 || self.always_parse_json || s.contains('\\'))
        {
            if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                let mut found = RedactionReport::default();
                let mut inner_path = path.to_owned();
                self.walk(&mut inner, &mut inner_path, &mut found, nested + 1);
                if found.paths.is_empty() {
                    return None;
                }
                for (rule, n) in found.by_rule {
                    *report.by_rule.entry(rule).or_default() += n;
                }
                // Written back in canonical form (RFC 8785: sorted keys, one number form), so the
                // processed event is the same whatever map order serde_json was built with.
                return audit_schema::canonical::canonicalize(&inner).ok().and_then(|b| String::from_utf8(b).ok());
            }
        }
        if open == 0 {
            return None;
        }
        let findings = self
            .detectors
            .find(s, open, &self.mask, |name, value, url_parameter| self.names_secret(name, value, url_parameter));
        if findings.is_empty() {
            return None;
        }
        for f in findings.iter().filter(|f| f.counted) {
            *report.by_rule.entry(f.rule).or_default() += 1;
        }
        let mut ranges: Vec<Range<usize>> = findings.into_iter().map(|f| f.range).collect();
        ranges.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        let mut ranges = ranges.into_iter().peekable();
        while let Some(first) = ranges.next() {
            let mut end = first.end;
            while let Some(next) = ranges.next_if(|r| r.start <= end) {
                end = end.max(next.end);
            }
            out.push_str(&s[last..first.start.max(last)]);
            out.push_str(&self.mask);
            last = end;
        }
        out.push_str(&s[last..]);
        Some(out)
    }
}

fn push_index(path: &mut String, i: usize) {
    path.push('[');
    path.push_str(itoa::Buffer::new().format(i));
    path.push(']');
}

/// The key a `{"name": …, "value": …}` object (`Key`/`Value` too) gives its `value`.
fn pair_name(map: &serde_json::Map<String, Value>) -> Option<String> {
    if !map.keys().any(|k| k.eq_ignore_ascii_case("value")) {
        return None;
    }
    map.iter()
        .find(|(k, v)| v.is_string() && PAIR_NAMES.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
}

/// A list of `[name, value]` pairs (headers as a list).
fn is_pair_list(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| matches!(i, Value::Array(p) if p.len() == 2 && p[0].is_string()))
}

/// Whether a string looks like a JSON object or array.
fn holds_json(s: &str) -> bool {
    let t = s.trim().as_bytes();
    t.len() >= 2 && matches!((t[0], t[t.len() - 1]), (b'{', b'}') | (b'[', b']'))
}

type KeyMap<T> = std::collections::HashMap<String, T, foldhash::fast::RandomState>;

/// What one policy decided about the keys a thread has seen.
#[derive(Debug, Default)]
struct KeyCache {
    /// The policy ([`RedactionPolicy`] cache id; 0 is "none yet").
    policy: u64,
    /// Key -> the first matching key-only rule for any value, and for a value the measure rule
    /// keeps.
    keys: KeyMap<(Option<usize>, Option<usize>)>,
    /// Key named in text -> (signs a URL, names a secret for any value, for a measurable value).
    names: KeyMap<(bool, bool, bool)>,
}

/// Source of [`RedactionPolicy`] cache ids (0 is "none yet").
static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    static KEY_CACHE: std::cell::RefCell<KeyCache> = std::cell::RefCell::new(KeyCache::default());
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
    fn the_measure_rule_keeps_counters_of_secrets_and_masks_the_secrets() {
        let policy = RedactionPolicy::default_policy();
        let (v, report) = redact(
            &policy,
            json!({
                "token_count": 5, "tokens_used": 12, "password_length": 12, "secret_rotation_days": 90,
                "max_tokens": 4096, "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                "token_expires_in": 3600, "passwordChangedAt": 1732579200, "pin_attempts": 2, "mfa_token_required": true,
                "as_text": {"password_length": "12", "token_count": "many"},
                "password": 1234, "pin": 1234, "otp": 123456, "card_pin": "0000", "cvv": 123, "password_ok": true,
                "tokens": ["t1", "t2"]
            }),
        );
        for kept in [
            "token_count",
            "tokens_used",
            "password_length",
            "secret_rotation_days",
            "max_tokens",
            "token_expires_in",
            "passwordChangedAt",
            "pin_attempts",
        ] {
            assert_ne!(v[kept], "***", "{kept} is a measure");
        }
        assert_eq!(v["usage"], json!({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}));
        assert_eq!(v["as_text"]["password_length"], "12", "numbers as text count as numbers");
        assert_eq!(v["as_text"]["token_count"], "***", "but not other text");
        for masked in ["password", "pin", "otp", "card_pin", "cvv", "password_ok", "tokens", "mfa_token_required"] {
            assert_eq!(v[masked], "***", "{masked}");
        }
        assert_eq!(report.by_rule.get("key"), Some(&9));
    }

    #[test]
    fn header_lists_and_name_value_objects_count_as_their_named_key() {
        let policy = RedactionPolicy::default_policy();
        let (v, report) = redact(
            &policy,
            json!({
                "har": [{"name": "Authorization", "value": "AWS4-HMAC-SHA256 Credential=x/20250101, Signature=EXAMPLE"},
                        {"name": "Accept", "value": "application/json"}],
                "pairs": [["Host", "api.example.com"], ["X-Api-Key", "EXAMPLEkey"]],
                "changed_fields": ["password", "email"],
                "form": [{"field": "pin", "value": 1234}, {"field": "pin_length", "value": 4}],
                "tags": [{"Key": "db_password", "Value": "EXAMPLEpw"}, {"Key": "team", "Value": "billing"}]
            }),
        );
        assert_eq!(v["har"][0]["value"], "***");
        assert_eq!(v["har"][1]["value"], "application/json");
        assert_eq!(v["pairs"], json!([["Host", "api.example.com"], ["X-Api-Key", "***"]]));
        assert_eq!(v["changed_fields"], json!(["password", "email"]), "a list of names is not a pair list");
        assert_eq!(v["form"][0]["value"], "***");
        assert_eq!(v["form"][1]["value"], 4, "the measure rule applies to the named key");
        assert_eq!(v["tags"], json!([{"Key": "db_password", "Value": "***"}, {"Key": "team", "Value": "billing"}]));
        let mut paths = report.paths.clone();
        paths.sort(); // document order follows the map's order, which a build may change
        assert_eq!(
            paths,
            vec!["metadata.form[0].value", "metadata.har[0].value", "metadata.pairs[1][1]", "metadata.tags[0].Value"],
            "paths are where the values are"
        );
    }

    #[test]
    fn secrets_inside_a_string_holding_json_are_redacted_and_it_stays_a_string() {
        let policy = RedactionPolicy::default_policy();
        let body = r#"{"user": "ada", "password": "EXAMPLEpw", "note": "key AKIAEXAMPLEKEY234567", "n": 1}"#;
        let nested = serde_json::to_string(&json!({"inner": body})).unwrap();
        let clean = r#"{"a": 1,  "b": [1, 2]}"#;
        let (v, report) = redact(
            &policy,
            json!({"body": body, "nested": nested, "clean": clean, "list": r#"[{"token": "EXAMPLEtok"}]"#,
                   "broken": "{user: ada, password: EXAMPLEpw"}),
        );
        assert_eq!(v["body"], r#"{"n":1,"note":"key ***","password":"***","user":"ada"}"#);
        let inner: Value = serde_json::from_str(v["nested"].as_str().unwrap()).unwrap();
        assert_eq!(inner["inner"], r#"{"n":1,"note":"key ***","password":"***","user":"ada"}"#, "JSON in JSON in JSON");
        assert_eq!(v["clean"], clean, "nothing found: the text is left byte for byte");
        assert_eq!(v["list"], r#"[{"token":"***"}]"#);
        assert_eq!(v["broken"], "{user: ada, password: ***", "not JSON: the text detectors");
        let mut paths = report.paths.clone();
        paths.sort(); // document order follows the map's order, which a build may change
        assert_eq!(paths, vec!["metadata.body", "metadata.broken", "metadata.list", "metadata.nested"]);
        assert_eq!(report.by_rule.get("key"), Some(&3), "inner redactions count under their own rule");
        assert_eq!(report.by_rule.get("aws_access_key_id"), Some(&2));
        let off = RedactionPolicy::new(
            true,
            "***".into(),
            true,
            Vec::new(),
            DetectorsConfig { json_strings: false, ..DetectorsConfig::default() },
            None,
        );
        let (v, _) = redact(&off, json!({"body": body}));
        assert_eq!(
            v["body"],
            body.replace("AKIAEXAMPLEKEY234567", "***").replace("EXAMPLEpw", "***"),
            "off: the text detectors still see `\"password\": \"…\"`, and the text keeps its spacing"
        );
    }

    #[test]
    fn path_rules_reach_inside_json_strings() {
        let rules =
            vec![Rule { matcher: RuleMatch::path("metadata.body.email").unwrap(), replacement: Replacement::Mask }];
        let policy = RedactionPolicy::new(true, "***".into(), true, rules, DetectorsConfig::default(), None);
        let (v, _) = redact(&policy, json!({"body": r#"{"email":"ada@example.com","id":7}"#}));
        assert_eq!(v["body"], r#"{"email":"***","id":7}"#);
    }

    #[test]
    fn keys_named_in_text_use_the_configured_and_built_in_names() {
        let rules = vec![Rule { matcher: RuleMatch::key("employeeNumber"), replacement: Replacement::Mask }];
        let policy = RedactionPolicy::new(true, "***".into(), false, rules, DetectorsConfig::default(), None);
        let (v, _) = redact(
            &policy,
            json!({"password": "kept: default_keys is off", "env": "EMPLOYEE_NUMBER=4242\nDB_PASSWORD=EXAMPLEpw\nHOST=db"}),
        );
        assert_eq!(v["password"], "kept: default_keys is off");
        assert_eq!(v["env"], "EMPLOYEE_NUMBER=***\nDB_PASSWORD=***\nHOST=db", "text keys always use the built-in list");
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
}
