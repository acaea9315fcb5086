//! The walk over a subtree: each key and array element is offered to the rules (objects that
//! name their `value` and lists of `[name, value]` pairs count as the named key), strings go to
//! the value detectors, and a string holding JSON is parsed and redacted with the same policy.

use std::ops::Range;

use serde_json::Value;

use super::detectors::card_number;
use super::keys::measurable_text;
use super::{RedactionPolicy, RedactionReport};

/// How deep JSON held in strings is parsed (a JSON string inside a JSON string inside the event).
const MAX_JSON_NESTING: u8 = 2;

/// Keys of `{"name": …, "value": …}` objects that name their `value` (HAR headers, form fields).
pub(super) const PAIR_NAMES: &[&str] = &["name", "key", "header", "field"];

impl RedactionPolicy {
    pub(super) fn walk(&self, value: &mut Value, path: &mut String, report: &mut RedactionReport, nested: u8) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::DetectorsConfig;
    use crate::redact::tests::redact;
    use crate::redact::{Replacement, Rule, RuleMatch};

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
}
