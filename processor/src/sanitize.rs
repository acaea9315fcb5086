//! Making a decoded event safe for every sink before anything else looks at it.
//!
//! * NUL characters (`\u0000`, refused by PostgreSQL `jsonb`) in any string or key are replaced by
//!   U+FFFD;
//! * numbers beyond ±2^53 whose canonical text would not read back as the same number become
//!   strings: integers (a double cannot hold most of them, so the canonical form, and every JSON
//!   reader in another language, would round them) and doubles between 2^53 and 2^64 (printed as
//!   integer digits that read back as an integer no double holds);
//! * inside `metadata` and `diff`: nesting deeper than the limit is cut (MongoDB refuses documents
//!   deeper than 100), and key names that document stores refuse or misread (a leading `$`, a `.`)
//!   are rewritten (`$` → `＄`, `.` → `_`), the same way every time.
//!
//! Every change is recorded as a warning naming its path.
//!
//! Before all of that, [`identifier_hygiene`] applies the identifier rule: characters that hide
//! or reorder text on a screen or in a log line (controls, bidirectional controls, zero-width
//! characters, line and paragraph separators; [`hidden_character`]) refuse an event when they are
//! in `context.tenantId`, `action`, `actor.type` or `target.type`, and are replaced by U+FFFD,
//! with a warning, in `actor.id` and `target.id`; that rule lives in `identifiers.rs`.

mod identifiers;

use serde_json::{Map, Number, Value};

pub use identifiers::{first_hidden_character, hidden_character, identifier_hygiene, HiddenCharacter};

/// Replacement for NUL.
const REPLACEMENT: char = '\u{FFFD}';

/// A path built only as far as the walk has gone; text is made only for a warning.
struct PathBuf {
    text: String,
}

impl PathBuf {
    fn push_key(&mut self, key: &str) -> usize {
        let at = self.text.len();
        if !self.text.is_empty() {
            self.text.push('.');
        }
        self.text.push_str(key);
        at
    }

    fn push_index(&mut self, i: usize) -> usize {
        let at = self.text.len();
        self.text.push('[');
        self.text.push_str(itoa::Buffer::new().format(i));
        self.text.push(']');
        at
    }

    fn pop(&mut self, at: usize) {
        self.text.truncate(at);
    }
}

/// 2^53: every integer up to it, and no other, is held exactly by an IEEE 754 double and printed
/// as its own digits in the canonical form.
const SAFE_MAGNITUDE: u64 = 1 << 53;

/// 2^64: from here on a double prints in exponent form, which reads back as a double.
const EXPONENT_FORM: f64 = 18_446_744_073_709_551_616.0;

/// Whether the number's canonical text reads back as the same number. Integers beyond ±2^53 fail
/// (a double cannot hold most of them, and the ones it can print as other digits: 2^60 prints as
/// 1152921504606847000), and so do doubles between 2^53 and 2^64 in magnitude, which print as
/// integer digits that read back as an integer no double holds exactly.
fn survives_canonical_text(n: &Number) -> bool {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.unsigned_abs() <= SAFE_MAGNITUDE,
        (None, Some(u), _) => u <= SAFE_MAGNITUDE,
        (None, None, Some(f)) => f.abs() <= SAFE_MAGNITUDE as f64 || f.abs() >= EXPONENT_FORM,
        _ => true,
    }
}

/// Sanitizes a whole decoded event in place; returns the warnings.
pub fn sanitize_event(event: &mut Value, max_depth: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    if is_clean(event, max_depth) {
        return warnings;
    }
    let mut path = PathBuf { text: String::with_capacity(64) };
    if let Value::Object(map) = event {
        sanitize_object(map, &mut path, &mut warnings);
        for root in ["metadata", "diff"] {
            if let Some(v) = map.get_mut(root) {
                let at = path.push_key(root);
                free_form(v, &mut path, 1, max_depth, &mut warnings);
                path.pop(at);
            }
        }
    }
    warnings
}

/// Whether sanitizing would change nothing: the same tests as the walks below (`sanitize_object`,
/// `sanitize_value`, `free_form`: a rule added there belongs here too, and in the equivalence
/// test), without building paths, so that a clean event (nearly all of them) costs one read-only
/// walk.
fn is_clean(event: &Value, max_depth: usize) -> bool {
    let Value::Object(map) = event else { return true };
    map.iter().all(|(k, v)| {
        let free = (k == "metadata" || k == "diff").then_some(1);
        !k.contains('\0') && clean(v, free, max_depth)
    })
}

/// `free`: the depth inside `metadata` or `diff`, where keys and nesting are checked too.
fn clean(v: &Value, free: Option<usize>, max_depth: usize) -> bool {
    let too_deep = free.is_some_and(|depth| depth >= max_depth);
    let deeper = free.map(|depth| depth + 1);
    match v {
        Value::String(s) => !s.contains('\0'),
        Value::Number(n) => survives_canonical_text(n),
        Value::Array(items) if too_deep => items.is_empty(),
        Value::Object(map) if too_deep => map.is_empty(),
        Value::Array(items) => items.iter().all(|item| clean(item, deeper, max_depth)),
        Value::Object(map) => map.iter().all(|(k, child)| {
            !k.contains('\0')
                && (free.is_none() || !(k.starts_with('$') || k.contains('.')))
                && clean(child, deeper, max_depth)
        }),
        _ => true,
    }
}

/// NULs and numbers beyond ±2^53, everywhere. (Keep [`is_clean`] in step with the rules here.)
fn sanitize_object(map: &mut Map<String, Value>, path: &mut PathBuf, warnings: &mut Vec<String>) {
    if map.keys().any(|k| k.contains('\0')) {
        let entries = std::mem::take(map);
        for (k, v) in entries {
            let clean = k.replace('\0', &REPLACEMENT.to_string());
            if clean != k {
                let at = path.push_key(&clean);
                warnings.push(format!("{}: NUL characters in the key replaced by U+FFFD", path.text));
                path.pop(at);
            }
            map.insert(clean, v);
        }
    }
    for (k, v) in map.iter_mut() {
        let at = path.push_key(k);
        sanitize_value(v, path, warnings);
        path.pop(at);
    }
}

fn sanitize_value(v: &mut Value, path: &mut PathBuf, warnings: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', &REPLACEMENT.to_string());
            warnings.push(format!("{}: NUL characters replaced by U+FFFD", path.text));
        }
        Value::Number(n) if !survives_canonical_text(n) => {
            warnings.push(format!(
                "{}: number {n} is beyond ±2^53, where JSON readers round integers; kept as a string",
                path.text
            ));
            *v = Value::String(n.to_string());
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let at = path.push_index(i);
                sanitize_value(item, path, warnings);
                path.pop(at);
            }
        }
        Value::Object(map) => sanitize_object(map, path, warnings),
        _ => {}
    }
}

fn cut(v: &mut Value, path: &PathBuf, max_depth: usize, warnings: &mut Vec<String>) {
    warnings.push(format!("{}: nesting deeper than {max_depth} levels cut", path.text));
    *v = Value::String(format!("[cut: nesting deeper than {max_depth} levels]"));
}

/// Depth cap and key rewriting inside a free-form subtree (`metadata`, `diff`).
fn free_form(v: &mut Value, path: &mut PathBuf, depth: usize, max_depth: usize, warnings: &mut Vec<String>) {
    match v {
        Value::Object(map) if depth >= max_depth && !map.is_empty() => cut(v, path, max_depth, warnings),
        Value::Array(items) if depth >= max_depth && !items.is_empty() => cut(v, path, max_depth, warnings),
        Value::Object(map) => {
            if map.keys().any(|k| k.starts_with('$') || k.contains('.')) {
                let entries = std::mem::take(map);
                let originals: std::collections::BTreeSet<String> = entries.keys().cloned().collect();
                for (k, child) in entries {
                    let mut new = k.replace('.', "_");
                    if let Some(rest) = new.strip_prefix('$') {
                        new = format!("＄{rest}");
                    }
                    while new != k && (map.contains_key(&new) || originals.contains(&new)) {
                        new.push('_');
                    }
                    if new != k {
                        let at = path.push_key(&k);
                        warnings.push(format!(
                            "{}: key renamed to {new:?} (document stores refuse '.' and a leading '$')",
                            path.text
                        ));
                        path.pop(at);
                    }
                    map.insert(new, child);
                }
            }
            for (k, child) in map.iter_mut() {
                let at = path.push_key(k);
                free_form(child, path, depth + 1, max_depth, warnings);
                path.pop(at);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let at = path.push_index(i);
                free_form(item, path, depth + 1, max_depth, warnings);
                path.pop(at);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_is_clean_exactly_when_sanitizing_changes_nothing() {
        let mut deep = json!([]);
        for _ in 0..4 {
            deep = json!({ "d": deep });
        }
        let cases = [
            json!({"action": "a", "metadata": {"a": [1, "x", {"b": null}], "c": 1.5}, "diff": {"before": {}}}),
            json!({"actor": {"id": "a\u{0}b"}}),
            json!({"actor\u{0}": {"id": "ab"}}),
            json!({"metadata": {"k\u{0}": 1}}),
            json!({"metadata": {"k": ["x\u{0}"]}}),
            json!({"context": {"n": 9007199254740993u64}}),
            json!({"metadata": {"n": 1.2345678901234567e18}}),
            json!({"metadata": {"n": 9007199254740992u64, "m": -1e300}}),
            json!({"metadata": {"$where": 1}}),
            json!({"diff": {"before": {"a.b": 1}}}),
            json!({"context": {"a.b": "keys outside the payloads are the contract's", "$x": 1}}),
            json!({"metadata": deep.clone()}),
            json!({"metadata": {"d": {"d": {"d": {}}}}}),
            json!({"metadata": {"d": {"d": {"d": [[]]}}}}),
            json!({"diff": deep}),
            json!("not an object"),
        ];
        for case in cases {
            let mut sanitized = case.clone();
            let warnings = sanitize_event(&mut sanitized, 4);
            assert_eq!(is_clean(&case, 4), warnings.is_empty(), "{case} {warnings:?}");
            assert_eq!(warnings.is_empty(), sanitized == case, "{case}");
        }
    }

    #[test]
    fn nul_characters_are_replaced_everywhere_and_recorded() {
        let mut v = json!({"actor": {"id": "a\u{0}b"}, "metadata": {"k\u{0}": ["x\u{0}"]}});
        let w = sanitize_event(&mut v, 32);
        assert_eq!(v["actor"]["id"], "a\u{FFFD}b");
        assert_eq!(v["metadata"]["k\u{FFFD}"][0], "x\u{FFFD}");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("actor.id"), "{w:?}");
    }

    #[test]
    fn big_integers_become_strings() {
        let mut v =
            json!({"metadata": {"id": 9007199254740993u64, "ok": 9007199254740992u64, "neg": -9007199254740993i64}});
        let w = sanitize_event(&mut v, 32);
        assert_eq!(v["metadata"]["id"], "9007199254740993");
        assert_eq!(v["metadata"]["ok"], 9007199254740992u64);
        assert_eq!(v["metadata"]["neg"], "-9007199254740993");
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn every_number_left_reads_back_from_its_canonical_text_as_itself() {
        let numbers = json!([
            1152921504606846976u64, // 2^60: exact in a double, printed as 1152921504606847000
            -1152921504606846976i64,
            1.2345678901234567e18, // printed as integer digits no double holds
            -4.0e15,
            9007199254740992u64,     // 2^53 itself
            18446744073709551615u64, // u64::MAX
            1.8446744073709552e19,   // 2^64 as a double: read back as a double
            1e20,
            1e300,
            5.0,
            0.1,
            -0.0,
        ]);
        let mut v = json!({"metadata": {"n": numbers}});
        let w = sanitize_event(&mut v, 32);
        let kept: Vec<&Value> = v["metadata"]["n"].as_array().unwrap().iter().filter(|n| n.is_number()).collect();
        assert_eq!(w.len(), 4, "2^60, -2^60, 1.2345678901234567e18 and u64::MAX become strings: {w:?}");
        assert_eq!(kept.len(), 8);
        let text = audit_schema::canonical::canonicalize(&v).unwrap();
        let again: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(audit_schema::canonical::canonicalize(&again).unwrap(), text, "{}", String::from_utf8_lossy(&text));
    }

    #[test]
    fn deep_nesting_is_cut_below_the_limit() {
        let mut deep = json!("leaf");
        for _ in 0..150 {
            deep = json!({ "d": deep });
        }
        let mut v = json!({ "metadata": deep });
        let w = sanitize_event(&mut v, 32);
        let mut depth = 0;
        let mut cur = &v["metadata"];
        while let Some(next) = cur.get("d") {
            cur = next;
            depth += 1;
        }
        assert_eq!(depth, 31);
        assert!(cur.as_str().unwrap().starts_with("[cut"));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn keys_document_stores_refuse_are_rewritten_consistently() {
        let mut v = json!({"metadata": {"$where": 1, "a.b": 2, "a_b": 3, "ok": {"x.y": 4}}});
        let w = sanitize_event(&mut v, 32);
        assert_eq!(v["metadata"], json!({"＄where": 1, "a_b_": 2, "a_b": 3, "ok": {"x_y": 4}}));
        assert_eq!(w.len(), 3, "{w:?}");
        let mut again = json!({"metadata": {"$where": 1, "a.b": 2, "a_b": 3, "ok": {"x.y": 4}}});
        sanitize_event(&mut again, 32);
        assert_eq!(again, v, "deterministic");
    }
}
