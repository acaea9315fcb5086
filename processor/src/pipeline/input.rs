//! From a raw record's payload to the processed event before it is chained: decode (a UTF-8
//! byte-order mark before JSON ignored), the identifier rule, sanitize, validate (lenient mode
//! drops bad optional fields with warnings), normalize ids and times, redact.

use audit_schema::codec::{self, WireFormat};
use audit_schema::{AuditEventInput, Limits, Timestamp, SCHEMA_VERSION};
use serde_json::{json, Map, Value};

use super::{derived_event_id, DeadLetter, DeadLetterClass, Pipeline, RawRecord, EPOCH, PAYLOADS};
use crate::redact::RedactionReport;
use crate::sanitize::{identifier_hygiene, sanitize_event};

/// Top-level input fields that lenient mode may drop when their value is invalid.
const DROPPABLE: &[&str] = &["eventId", "target", "metadata", "diff", "retentionTag", "producer"];

/// Removes the JSON field at a dotted error path (`context.ip`, `actor.roles[2]`) when lenient mode
/// may drop it; returns the path actually removed.
fn drop_optional(value: &mut Value, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split(['.', '[']).map(|s| s.trim_end_matches(']')).collect();
    let obj = value.as_object_mut()?;
    match segs.as_slice() {
        [first, ..] if DROPPABLE.contains(first) => {
            obj.remove(*first)?;
            Some((*first).to_owned())
        }
        ["context"] => {
            obj.remove("context")?;
            Some("context".to_owned())
        }
        [parent @ "context", field, ..] | [parent @ "actor", field @ ("name" | "roles"), ..] => {
            obj.get_mut(*parent)?.as_object_mut()?.remove(*field)?;
            Some(format!("{parent}.{field}"))
        }
        _ => None,
    }
}

impl Pipeline {
    /// Decode, sanitize, validate, normalize, redact and limit: the processed event as JSON, without
    /// `integrity`. The input's JSON is edited in place rather than rebuilt from typed values, so
    /// metadata and diff are never copied.
    pub(super) fn build(
        &self,
        raw: &RawRecord<'_>,
        received_at: Option<Timestamp>,
    ) -> Result<(Value, String, RedactionReport), DeadLetter> {
        let payload = match raw.payload {
            Some(p) if !p.is_empty() => p,
            _ => return Err(DeadLetter { class: DeadLetterClass::Empty, reason: "record has no payload".into() }),
        };
        // RFC 8259 allows a reader to ignore a byte-order mark, and some writers (.NET's
        // `Encoding.UTF8`, PowerShell, Windows editors) put one before JSON. Only before JSON: an
        // Avro record starts with C3 01, and one behind a text marker is not a record.
        let payload = match payload.strip_prefix(UTF8_BOM) {
            Some(json) if WireFormat::detect(json) == WireFormat::Json => json,
            _ => payload,
        };
        let mut value = codec::input_value(payload)
            .map_err(|e| DeadLetter { class: DeadLetterClass::Decode, reason: e.to_string() })?;
        if !value.is_object() {
            return Err(DeadLetter {
                class: DeadLetterClass::Invalid,
                reason: "an audit event must be a JSON object".into(),
            });
        }
        // First, so that a refused identifier is refused as sent (not after NULs became U+FFFD)
        // and in lenient mode too (a tenantId is never dropped for it).
        let mut warnings = identifier_hygiene(&mut value)
            .map_err(|e| DeadLetter { class: DeadLetterClass::Invalid, reason: e.to_string() })?;
        warnings.extend(sanitize_event(&mut value, self.max_depth));
        let input = self.validate(&mut value, &mut warnings)?;
        strip_contract_nulls(&mut value);

        let received_at = received_at.unwrap_or_else(|| {
            warnings.push("receivedAt: the raw record has no broker timestamp; using occurredAt".into());
            input.context.occurred_at.unwrap_or(EPOCH)
        });
        let occurred_at = input.context.occurred_at.unwrap_or_else(|| {
            warnings.push("context.occurredAt: missing; set to receivedAt".into());
            received_at
        });
        let event_id = input.event_id.clone().unwrap_or_else(|| derived_event_id(raw));
        let Some(obj) = value.as_object_mut() else { unreachable!("checked above") };
        obj.insert("schemaVersion".into(), Value::from(SCHEMA_VERSION));
        obj.insert("eventId".into(), Value::String(event_id.clone()));
        obj.insert("receivedAt".into(), Value::String(received_at.to_string()));
        let context = obj.entry("context").or_insert_with(|| Value::Object(Map::new()));
        if let Some(c) = context.as_object_mut() {
            c.insert("occurredAt".into(), Value::String(occurred_at.to_string()));
        }

        let mut redactions = RedactionReport::default();
        for root in PAYLOADS {
            if let Some(v) = obj.get_mut(root) {
                self.policy.redact(root, v, &mut redactions);
            }
        }
        obj.insert("redaction".into(), json!({"policy": self.policy.version(), "paths": redactions.paths}));
        obj.insert("limits".into(), serde_json::to_value(Limits::default()).unwrap_or_default());
        obj.insert("warnings".into(), Value::from(warnings));
        Ok((value, event_id, redactions))
    }

    /// Validates `value` against the input contract; in lenient mode drops unknown fields and bad
    /// optional fields from it (with warnings) until it passes.
    fn validate(&self, value: &mut Value, warnings: &mut Vec<String>) -> Result<AuditEventInput, DeadLetter> {
        for _ in 0..8 {
            match codec::input_from_mut(value, self.validation) {
                Ok(decoded) => {
                    for w in &decoded.warnings {
                        if w.message == "unknown field" {
                            remove_path(value, &w.path);
                        }
                        warnings.push(w.to_string());
                    }
                    return Ok(decoded.event);
                }
                Err(e) if self.validation.strict || e.field_errors().is_empty() => {
                    return Err(DeadLetter { class: DeadLetterClass::Invalid, reason: e.to_string() });
                }
                Err(e) => {
                    let mut dropped_any = false;
                    for fe in e.field_errors() {
                        if let Some(removed) = drop_optional(value, &fe.path) {
                            warnings.push(format!("{fe} (field {removed} dropped)"));
                            dropped_any = true;
                        }
                    }
                    if !dropped_any {
                        return Err(DeadLetter { class: DeadLetterClass::Invalid, reason: e.to_string() });
                    }
                }
            }
        }
        Err(DeadLetter { class: DeadLetterClass::Invalid, reason: "too many invalid fields".into() })
    }
}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Removes `null` from the contract's optional fields (serde reads `null` as absent; the processed
/// schema has no nullable fields). Nulls inside metadata and diff are data and stay.
fn strip_contract_nulls(value: &mut Value) {
    let Some(obj) = value.as_object_mut() else { return };
    obj.retain(|k, v| !v.is_null() || k == "metadata" || k == "diff");
    for nested in ["actor", "target", "context", "producer"] {
        if let Some(m) = obj.get_mut(nested).and_then(Value::as_object_mut) {
            m.retain(|_, v| !v.is_null());
        }
    }
    if let Some(d) = obj.get_mut("diff").and_then(Value::as_object_mut) {
        d.retain(|_, v| !v.is_null());
    }
}

/// Removes the field at a serde path (`actor.email`, `actor.roles.2.x`).
fn remove_path(value: &mut Value, path: &str) {
    let segs: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segs.split_last() else { return };
    let mut cur = value;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(*seg) {
                Some(v) => v,
                None => return,
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(m) = cur {
        m.remove(*last);
    }
}

#[cfg(test)]
mod tests {
    use audit_schema::{Actor, Outcome};
    use serde_json::json;

    use super::*;
    use crate::pipeline::tests::{head, input, pipeline, raw};
    use crate::pipeline::QUARANTINE_ACTION;

    #[test]
    fn normalizes_ids_and_times_from_the_raw_record() {
        let p = pipeline(|_| {});
        let out = p.process(&raw(7, &input(json!({}))), &mut head());
        let e = &out.event();
        assert_eq!(e.event_id, derived_event_id(&raw(7, b"")), "derived from the position");
        assert_eq!(e.received_at.as_millis(), 1_790_000_000_007, "broker timestamp");
        assert_eq!(e.context.occurred_at, Some(e.received_at));
        assert!(e.warnings.iter().any(|w| w.starts_with("context.occurredAt")));
        assert_eq!((e.integrity.seq, e.integrity.source.offset), (1, 7));
        let kept = p.process(&raw(8, &input(json!({"eventId": "evt-from-producer"}))), &mut head());
        assert_eq!(kept.event().event_id, "evt-from-producer");
    }

    #[test]
    fn lenient_mode_drops_bad_optional_fields_with_warnings_and_strict_mode_refuses() {
        let bad = input(
            json!({"context": {"tenantId": "t", "ip": "300.1.1.1"}, "actor": {"type": "user", "id": "u", "email": "a@b"}}),
        );
        let lenient = pipeline(|_| {}).process(&raw(1, &bad), &mut head());
        assert!(lenient.dead_letter.is_none());
        assert_eq!(lenient.event().context.ip, None);
        let w = lenient.event().warnings.join("\n");
        assert!(w.contains("context.ip") && w.contains("dropped"), "{w}");
        assert!(w.contains("actor.email: unknown field"), "{w}");
        let strict = pipeline(|c| c.processing.strict = true).process(&raw(1, &bad), &mut head());
        assert_eq!(strict.dead_letter.unwrap().class, DeadLetterClass::Invalid);
    }

    #[test]
    fn redaction_is_recorded_with_the_policy_version() {
        let p = pipeline(|_| {});
        let out = p.process(
            &raw(1, &input(json!({"metadata": {"headers": {"Authorization": "Bearer abc.def.ghi"}}}))),
            &mut head(),
        );
        assert_eq!(out.event().metadata.as_ref().unwrap()["headers"]["Authorization"], "***");
        assert_eq!(out.event().redaction.paths, vec!["metadata.headers.Authorization"]);
        assert_eq!(out.event().redaction.policy, p.policy_version());
    }

    #[test]
    fn unsafe_values_are_sanitized_before_the_chain() {
        let p = pipeline(|_| {});
        let out = p.process(&raw(1, br#"{"action":"a.b","outcome":"SUCCESS","actor":{"type":"u","id":"x\u0000y"},"metadata":{"n":12345678901234567890,"$k":1}}"#), &mut head());
        assert!(out.dead_letter.is_none(), "{:?}", out.dead_letter);
        assert_eq!(out.event().actor.id, "x\u{FFFD}y");
        let event = out.event();
        let m = event.metadata.as_ref().unwrap();
        assert_eq!(m["n"], "12345678901234567890");
        assert!(m.contains_key("＄k"));
    }

    #[test]
    fn hidden_characters_refuse_a_tenant_or_action_and_are_replaced_in_ids_in_every_mode() {
        for strict in [false, true] {
            let p = pipeline(|c| c.processing.strict = strict);
            // Refused even in lenient mode, where a bad context field is otherwise dropped: an event
            // without its tenant would be filed under none.
            for (tenant, reason) in [
                ("acme\u{202E}", "context.tenantId contains U+202E RIGHT-TO-LEFT OVERRIDE at character 5"),
                ("ac\u{0}me", "context.tenantId contains U+0000 NULL at character 3"),
            ] {
                let out = p.process(&raw(1, &input(json!({"context": {"tenantId": tenant}}))), &mut head());
                let dl = out.dead_letter.clone().expect("refused");
                assert_eq!(dl.class, DeadLetterClass::Invalid);
                assert!(dl.reason.starts_with(reason), "{}", dl.reason);
                assert_eq!(out.event().action, QUARANTINE_ACTION);
            }
            let bad_action =
                br#"{"action":"user.login\u2028admin.grant","outcome":"SUCCESS","actor":{"type":"user","id":"u"}}"#;
            let dl = p.process(&raw(1, bad_action), &mut head()).dead_letter.expect("refused");
            assert!(dl.reason.starts_with("action contains U+2028 LINE SEPARATOR at character 11"), "{}", dl.reason);

            let out = p.process(
                &raw(1, &input(json!({"actor": {"type": "user", "id": "\u{202E}nimda"}, "target": {"type": "doc", "id": "東京"}}))),
                &mut head(),
            );
            assert!(out.dead_letter.is_none(), "{:?}", out.dead_letter);
            let e = out.event();
            assert_eq!(e.actor.id, "\u{FFFD}nimda");
            assert_eq!(e.target.unwrap().id, "東京", "ordinary non-ASCII ids stay");
            assert!(e.warnings.iter().any(|w| w.starts_with("actor.id: U+202E RIGHT-TO-LEFT OVERRIDE at character 1")));
            assert!(!e.warnings.iter().any(|w| w.starts_with("target.id")), "{:?}", e.warnings);
        }
        // Avro input meets the same rule.
        let mut avro = AuditEventInput::new("user.logout", Outcome::Success, Actor::new("user", "u\u{200D}2"));
        avro.context.tenant_id = Some("Zürich".into());
        let out =
            pipeline(|_| {}).process(&raw(1, &codec::encode_input(&avro, WireFormat::Avro).unwrap()), &mut head());
        assert_eq!(
            (out.event().actor.id.as_str(), out.event().context.tenant_id.as_deref()),
            ("u\u{FFFD}2", Some("Zürich"))
        );
    }

    #[test]
    fn a_byte_order_mark_before_json_is_ignored_and_nowhere_else() {
        let p = pipeline(|_| {});
        let plain = input(json!({"metadata": {"note": "\u{FEFF}kept inside a value"}}));
        let with_bom = [&b"\xEF\xBB\xBF"[..], &plain].concat();
        let expected = p.process(&raw(1, &plain), &mut head());
        let out = p.process(&raw(1, &with_bom), &mut head());
        assert!(out.dead_letter.is_none(), "{:?}", out.dead_letter);
        assert_eq!(out.encoded, expected.encoded, "the same event as without the mark");
        assert_eq!(out.event().metadata.unwrap()["note"], "\u{FEFF}kept inside a value");
        // One mark only, only in front, only before JSON.
        let twice = [&b"\xEF\xBB\xBF\xEF\xBB\xBF"[..], &plain].concat();
        let mut inside = plain.clone();
        inside.splice(1..1, b"\xEF\xBB\xBF".iter().copied());
        let avro =
            codec::encode_input(&AuditEventInput::new("a.b", Outcome::Success, Actor::new("u", "1")), WireFormat::Avro);
        let avro_behind_a_mark = [&b"\xEF\xBB\xBF"[..], &avro.unwrap()].concat();
        for bad in [&twice, &inside, &avro_behind_a_mark, &b"\xEF\xBB\xBF".to_vec()] {
            let dl = p.process(&raw(1, bad), &mut head()).dead_letter.expect("dead letter");
            assert_eq!(dl.class, DeadLetterClass::Decode, "{}", dl.reason);
        }
    }

    #[test]
    fn avro_input_is_accepted() {
        let p = pipeline(|_| {});
        let input = AuditEventInput::new("user.logout", Outcome::Success, Actor::new("user", "u-2"));
        let bytes = codec::encode_input(&input, WireFormat::Avro).unwrap();
        let out = p.process(&raw(1, &bytes), &mut head());
        assert!(out.dead_letter.is_none());
        assert_eq!(out.event().action, "user.logout");
        assert_eq!(&out.encoded[..2], &[0xC3, 0x01], "processed events are Avro by default");
    }
}
