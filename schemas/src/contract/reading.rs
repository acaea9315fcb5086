//! Reading a JSON value as a contract type. The fast path, for the common valid event, is plain
//! deserialization plus a check of the field names against [`fields`]; only a value that fails is
//! read again through the path-tracking wrappers, so that the error names the field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ContractError, Decoded};
use crate::validate::{FieldError, Findings, ValidationOptions};

/// Field names of each object of the contract, for the unknown-field check of the fast path.
/// A unit test keeps them equal to the JSON Schemas.
pub(crate) mod fields {
    pub(crate) const INPUT: &[&str] = &[
        "schemaVersion",
        "eventId",
        "action",
        "outcome",
        "actor",
        "target",
        "context",
        "metadata",
        "diff",
        "retentionTag",
        "producer",
    ];
    pub(crate) const EVENT: &[&str] = &[
        "schemaVersion",
        "eventId",
        "action",
        "outcome",
        "actor",
        "target",
        "context",
        "metadata",
        "diff",
        "retentionTag",
        "producer",
        "receivedAt",
        "redaction",
        "limits",
        "warnings",
        "integrity",
    ];
    pub(crate) const ACTOR: &[&str] = &["type", "id", "name", "roles"];
    pub(crate) const TARGET: &[&str] = &["type", "id", "name"];
    pub(crate) const CONTEXT: &[&str] = &[
        "tenantId",
        "requestId",
        "sessionId",
        "traceId",
        "spanId",
        "ip",
        "userAgent",
        "occurredAt",
        "service",
        "environment",
    ];
    pub(crate) const PRODUCER: &[&str] = &["id", "seq"];
    pub(crate) const DIFF: &[&str] = &["before", "after"];
    pub(crate) const REDACTION: &[&str] = &["policy", "paths"];
    pub(crate) const LIMITS: &[&str] = &["metadataTruncated", "diffTruncated"];
    pub(crate) const INTEGRITY: &[&str] = &["alg", "chain", "seq", "prevHash", "hash", "source"];
    pub(crate) const SOURCE: &[&str] = &["topic", "partition", "offset"];
}

/// Which contract a value is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Input,
    Event,
}

/// Paths of fields the contract does not know, in document order.
fn unknown_fields(value: &Value, shape: Shape) -> Vec<String> {
    let mut out = Vec::new();
    let Some(top) = value.as_object() else { return out };
    let mut check = |obj: &serde_json::Map<String, Value>, known: &[&str], prefix: &str| {
        for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            out.push(if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") });
        }
    };
    check(top, if shape == Shape::Input { fields::INPUT } else { fields::EVENT }, "");
    let mut nested: Vec<(&str, &[&str])> = vec![
        ("actor", fields::ACTOR),
        ("target", fields::TARGET),
        ("context", fields::CONTEXT),
        ("producer", fields::PRODUCER),
    ];
    match shape {
        Shape::Input => nested.push(("diff", fields::DIFF)),
        Shape::Event => {
            nested.extend([
                ("redaction", fields::REDACTION),
                ("limits", fields::LIMITS),
                ("integrity", fields::INTEGRITY),
            ]);
        }
    }
    for (name, known) in nested {
        if let Some(obj) = top.get(name).and_then(Value::as_object) {
            check(obj, known, name);
        }
    }
    if shape == Shape::Event {
        if let Some(source) = top.get("integrity").and_then(|i| i.get("source")).and_then(Value::as_object) {
            check(source, fields::SOURCE, "integrity.source");
        }
    }
    out
}

/// Deserializes `value` into `T`, naming the path of a type error and collecting unknown fields.
///
/// The common case (a valid event) takes the fast path: plain deserialization plus a key check.
/// Only a value that fails is deserialized again through the path-tracking wrappers, for the
/// error message.
pub(super) fn from_value<T: DeserializeOwned>(
    value: &Value,
    options: ValidationOptions,
    shape: Shape,
) -> Result<(T, Findings), ContractError> {
    let (event, unknown) = match T::deserialize(value) {
        Ok(event) => (event, unknown_fields(value, shape)),
        Err(_) => {
            let mut unknown = Vec::new();
            // serde_ignored marks an Option's inside with `?`: `target.?.color` is `target.color`.
            let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
            let ignored = serde_ignored::Deserializer::new(value, &mut record);
            let event: T = serde_path_to_error::deserialize(ignored).map_err(|e| {
                let path = e.path().to_string().replace(".?", "");
                let message = e.into_inner().to_string();
                ContractError::single(if path == "." { String::new() } else { path }, message)
            })?;
            (event, unknown)
        }
    };
    let mut findings = Findings::default();
    for path in unknown {
        let f = FieldError::new(path, "unknown field");
        if options.strict {
            findings.errors.push(f);
        } else {
            findings.warnings.push(f);
        }
    }
    Ok((event, findings))
}

pub(super) fn finish<T>(event: T, findings: Findings) -> Result<Decoded<T>, ContractError> {
    if findings.errors.is_empty() {
        Ok(Decoded { event, warnings: findings.warnings })
    } else {
        Err(ContractError::Invalid { errors: findings.errors })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::AuditEventInput;

    #[test]
    fn the_fast_path_finds_the_same_unknown_fields_as_serde_ignored() {
        let v = json!({
            "action": "a.b", "outcome": "SUCCESS", "extra": 1,
            "actor": {"type": "user", "id": "u", "email": "x"},
            "target": {"type": "t", "id": "1", "color": "red"},
            "context": {"tenantId": "t", "region": "eu"},
            "producer": {"id": "p", "seq": 1, "host": "h"},
            "diff": {"before": {"deep": {"free": 1}}, "during": 2},
            "metadata": {"anything": {"goes": true}}
        });
        let mut slow = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| slow.push(path.to_string().replace(".?", ""));
        let _: AuditEventInput = serde_ignored::deserialize(&v, &mut record).unwrap();
        let mut fast = unknown_fields(&v, Shape::Input);
        slow.sort();
        fast.sort();
        assert_eq!(fast, slow);
    }

    #[test]
    fn the_field_lists_match_the_json_schemas() {
        let input: Value = serde_json::from_str(include_str!("../../audit-event.input.schema.json")).unwrap();
        let event: Value = serde_json::from_str(include_str!("../../audit-event.schema.json")).unwrap();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v["properties"].as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let sorted = |f: &[&str]| {
            let mut k: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&input), sorted(fields::INPUT));
        assert_eq!(keys(&event), sorted(fields::EVENT));
        for (def, list) in [
            ("actor", fields::ACTOR),
            ("target", fields::TARGET),
            ("context", fields::CONTEXT),
            ("producer", fields::PRODUCER),
            ("diff", fields::DIFF),
        ] {
            assert_eq!(keys(&input["$defs"][def]), sorted(list), "{def}");
        }
        let p = &event["properties"];
        assert_eq!(keys(&p["redaction"]), sorted(fields::REDACTION));
        assert_eq!(keys(&p["limits"]), sorted(fields::LIMITS));
        assert_eq!(keys(&p["integrity"]), sorted(fields::INTEGRITY));
        assert_eq!(keys(&p["integrity"]["properties"]["source"]), sorted(fields::SOURCE));
    }
}
