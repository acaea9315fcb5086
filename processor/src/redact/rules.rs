//! The rules of a policy and which one a key or a path matches: key names (with the built-in
//! keys), dot paths with wildcards and regular expressions over key names; the first match wins,
//! and what a policy decided about a key is remembered per thread (the same few keys come back in
//! every event).

use regex::Regex;
use serde_json::{json, Value};

use super::detectors::is_url_signature;
use super::keys::{
    measurable_text, KeyName, KeyWords, WordMatch, DEFAULT_KEYS, DEFAULT_LAST_WORD_KEYS, DEFAULT_WORD_KEYS,
};
use super::RedactionPolicy;

/// The built-in keys as rules.
pub(super) fn builtin_keys() -> Vec<RuleMatch> {
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

    pub(super) fn kind(&self) -> &'static str {
        match self {
            RuleMatch::Key(_) => "key",
            RuleMatch::Path(_) => "path",
            RuleMatch::KeyPattern(_) => "key_pattern",
        }
    }

    pub(super) fn describe(&self) -> Value {
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

impl RedactionPolicy {
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

    pub(super) fn matching_rule(
        &self,
        key: Option<&str>,
        alias: Option<&str>,
        path: &str,
        measurable: bool,
    ) -> Option<&Rule> {
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
    pub(super) fn names_secret(&self, name: &str, value: &str, url_parameter: bool) -> bool {
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
pub(super) static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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
    use serde_json::json;

    use super::*;
    use crate::config::DetectorsConfig;
    use crate::redact::tests::redact;

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
}
