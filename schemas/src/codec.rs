//! Decoding and encoding events, JSON or Avro, with errors that name the field.
//!
//! Wire detection is by the first bytes: Avro single-object records start with `C3 01`; anything else
//! is read as UTF-8 JSON.
//!
//! Layout: this module holds the errors, wire detection and the decode and encode functions;
//! `reading.rs` reads a JSON value as a contract type, naming the field of any error.

mod reading;

use serde_json::{Map, Value};

use crate::avro;
use crate::validate::{check_event, check_input, FieldError, Findings, ValidationOptions};
use crate::{AuditEvent, AuditEventInput};

use reading::{finish, from_value, Shape};

/// Why bytes are not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// JSON payload that is not UTF-8.
    #[error("event is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// Not parseable JSON.
    #[error("event is not valid JSON (line {line}, column {column}): {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// Parsed but breaks the contract; every problem found is listed.
    #[error("invalid audit event: {}", join(.errors))]
    Invalid {
        /// The problems, each naming its field.
        errors: Vec<FieldError>,
    },
    /// An Avro record that cannot be decoded.
    #[error("invalid Avro record: {0}")]
    Avro(String),
    /// An Avro single-object record written with a schema this reader does not know.
    #[error("Avro record written with unknown schema fingerprint {fingerprint} (known: {known})")]
    UnknownSchema {
        /// The record's CRC-64-AVRO fingerprint, hex.
        fingerprint: String,
        /// Fingerprints this build knows, hex.
        known: String,
    },
    /// An Avro record of the other contract (an input where an event was expected, or vice versa).
    #[error("Avro record is a {found}, expected a {expected}")]
    WrongRecord {
        /// Record name found.
        found: &'static str,
        /// Record name expected.
        expected: &'static str,
    },
}

impl ContractError {
    /// The field errors, when the event parsed but broke the contract.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ContractError::Invalid { errors } => errors,
            _ => &[],
        }
    }

    fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ContractError::Invalid { errors: vec![FieldError::new(path, message)] }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A decoded event and the problems that were tolerated.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// The event.
    pub event: T,
    /// Tolerated problems (unknown fields in lenient mode, identifier-like actions...).
    pub warnings: Vec<FieldError>,
}

/// Which wire form a payload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// UTF-8 JSON.
    Json,
    /// Avro single-object encoding.
    Avro,
}

impl WireFormat {
    /// Detects the format from the first bytes.
    pub fn detect(bytes: &[u8]) -> WireFormat {
        if bytes.starts_with(&avro::SINGLE_OBJECT_MAGIC) {
            WireFormat::Avro
        } else {
            WireFormat::Json
        }
    }
}

/// Parses JSON bytes into a JSON value with a precise error.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ContractError> {
    // serde_json checks UTF-8 as it parses; the separate check only words the error.
    serde_json::from_slice(bytes).map_err(|e| match std::str::from_utf8(bytes) {
        Err(utf8) => ContractError::NotUtf8 { offset: utf8.valid_up_to() },
        Ok(_) => ContractError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
        },
    })
}

/// Validates an input event already in memory (what the producer library does before sending).
pub fn validate_input(input: &AuditEventInput, options: ValidationOptions) -> Result<Vec<FieldError>, ContractError> {
    let mut findings = Findings::default();
    check_input(&mut findings, input, options);
    finish((), findings).map(|d| d.warnings)
}

/// Validates a processed event already in memory.
pub fn validate_event(event: &AuditEvent, options: ValidationOptions) -> Result<Vec<FieldError>, ContractError> {
    let mut findings = Findings::default();
    check_event(&mut findings, event, options);
    finish((), findings).map(|d| d.warnings)
}

/// Reads an input event from a JSON value.
pub fn input_from_value(value: Value, options: ValidationOptions) -> Result<Decoded<AuditEventInput>, ContractError> {
    input_from_ref(&value, options)
}

/// Reads an input event from a borrowed JSON value (no copy of the value is made).
pub fn input_from_ref(value: &Value, options: ValidationOptions) -> Result<Decoded<AuditEventInput>, ContractError> {
    if !value.is_object() {
        return Err(ContractError::single("", "an audit event must be a JSON object"));
    }
    let (input, mut findings) = from_value::<AuditEventInput>(value, options, Shape::Input)?;
    check_input(&mut findings, &input, options);
    finish(input, findings)
}

/// Validates an input event like [`input_from_ref`] without copying its payloads: `metadata` and
/// `diff.before`/`diff.after` (free-form, so their contents never change the outcome) are detached
/// from `value` while the contract is checked and put back afterwards. The returned event's
/// `metadata` and `diff` are therefore `None`; read them from `value`.
pub fn input_from_mut(
    value: &mut Value,
    options: ValidationOptions,
) -> Result<Decoded<AuditEventInput>, ContractError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ContractError::single("", "an audit event must be a JSON object"));
    };
    let metadata = match obj.get_mut("metadata") {
        Some(m @ Value::Object(_)) => Some(std::mem::replace(m, Value::Object(Map::new()))),
        _ => None,
    };
    let mut diff = [None, None];
    if let Some(d) = obj.get_mut("diff").and_then(Value::as_object_mut) {
        for (slot, key) in diff.iter_mut().zip(["before", "after"]) {
            // `null` reads as absent: left in place so the placeholder changes nothing.
            *slot = d.get_mut(key).filter(|v| !v.is_null()).map(|v| std::mem::replace(v, Value::Bool(true)));
        }
    }
    let result = input_from_ref(value, options);
    let Some(obj) = value.as_object_mut() else { unreachable!("checked above") };
    if let (Some(m), Some(slot)) = (metadata, obj.get_mut("metadata")) {
        *slot = m;
    }
    if let Some(d) = obj.get_mut("diff").and_then(Value::as_object_mut) {
        for (taken, key) in diff.into_iter().zip(["before", "after"]) {
            if let (Some(v), Some(slot)) = (taken, d.get_mut(key)) {
                *slot = v;
            }
        }
    }
    result.map(|mut decoded| {
        decoded.event.metadata = None;
        decoded.event.diff = None;
        decoded
    })
}

/// Reads a processed event from a JSON value.
pub fn event_from_value(value: Value, options: ValidationOptions) -> Result<Decoded<AuditEvent>, ContractError> {
    if !value.is_object() {
        return Err(ContractError::single("", "an audit event must be a JSON object"));
    }
    let (event, mut findings) = from_value::<AuditEvent>(&value, options, Shape::Event)?;
    check_event(&mut findings, &event, options);
    finish(event, findings)
}

/// Decodes an input event from JSON or Avro bytes.
pub fn decode_input(bytes: &[u8], options: ValidationOptions) -> Result<Decoded<AuditEventInput>, ContractError> {
    input_from_value(input_value(bytes)?, options)
}

/// The JSON form of input bytes (JSON or Avro), before contract checks.
pub fn input_value(bytes: &[u8]) -> Result<Value, ContractError> {
    match WireFormat::detect(bytes) {
        WireFormat::Json => parse_json(bytes),
        WireFormat::Avro => avro::decode_to_json(bytes, avro::Record::Input),
    }
}

/// Decodes a processed event from JSON or Avro bytes.
pub fn decode_event(bytes: &[u8], options: ValidationOptions) -> Result<Decoded<AuditEvent>, ContractError> {
    event_from_value(event_value(bytes)?, options)
}

/// The JSON form of processed-event bytes (JSON or Avro), before contract checks. Chain
/// verification hashes this form.
pub fn event_value(bytes: &[u8]) -> Result<Value, ContractError> {
    match WireFormat::detect(bytes) {
        WireFormat::Json => parse_json(bytes),
        WireFormat::Avro => avro::decode_to_json(bytes, avro::Record::Event),
    }
}

/// Encodes a processed event in the given wire format.
pub fn encode_event(event: &AuditEvent, format: WireFormat) -> Result<Vec<u8>, ContractError> {
    match format {
        WireFormat::Json => serde_json::to_vec(event).map_err(|e| ContractError::single("", e.to_string())),
        WireFormat::Avro => avro::encode_event(event),
    }
}

/// Encodes a processed event given as its JSON value (as hashed), in the given wire format.
pub fn encode_event_value(value: &Value, format: WireFormat) -> Result<Vec<u8>, ContractError> {
    match format {
        // The RFC 8785 form: the bytes depend only on the event, never on the JSON map's order
        // (serde_json keeps insertion order when any crate in the build turns `preserve_order`
        // on, as the MongoDB driver does), so replays stay byte-identical across builds.
        WireFormat::Json => crate::canonical::canonicalize(value).map_err(|e| ContractError::single("", e.to_string())),
        WireFormat::Avro => avro::encode_event_value(value),
    }
}

/// Encodes an input event in the given wire format.
pub fn encode_input(input: &AuditEventInput, format: WireFormat) -> Result<Vec<u8>, ContractError> {
    match format {
        WireFormat::Json => serde_json::to_vec(input).map_err(|e| ContractError::single("", e.to_string())),
        WireFormat::Avro => avro::encode_input(input),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn processed_json_is_the_canonical_form_whatever_the_map_order() {
        let value: Value = serde_json::from_str(
            r#"{"z": 1, "eventId": "e", "metadata": {"b": [1.50, {"y": true, "x": null}], "a": "\u00e9"}, "action": "a.b"}"#,
        )
        .unwrap();
        let bytes = encode_event_value(&value, WireFormat::Json).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"action":"a.b","eventId":"e","metadata":{"a":"é","b":[1.5,{"x":null,"y":true}]},"z":1}"#
        );
        assert_eq!(parse_json(&bytes).unwrap(), value);
    }

    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"action": "user.login", "outcome": "SUCCESS", "actor": {"type": "user", "id": "u-1"}})
    }

    #[test]
    fn validating_in_place_agrees_with_validating_a_copy_and_restores_the_payloads() {
        let mut cases = vec![minimal()];
        for (metadata, diff) in [
            (json!({"a": {"b": [1, 2]}, "password": "x"}), json!({"before": {"s": 1}, "after": null})),
            (json!("not an object"), json!({"before": 1, "colour": "unknown field"})),
            (json!({}), json!("not an object")),
            (json!({}), json!({"after": null})),
            (json!(null), json!({"after": [1]})),
        ] {
            let mut v = minimal();
            v["metadata"] = metadata;
            v["diff"] = diff;
            cases.push(v);
        }
        for options in [ValidationOptions::LENIENT, ValidationOptions::STRICT] {
            for case in &cases {
                let mut edited = case.clone();
                let in_place = input_from_mut(&mut edited, options).map(|d| d.warnings);
                let copied = input_from_ref(case, options).map(|d| d.warnings);
                assert_eq!(in_place.map_err(|e| e.to_string()), copied.map_err(|e| e.to_string()), "{case}");
                assert_eq!(&edited, case, "payloads put back");
            }
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut v = minimal();
        v["actor"]["id"] = json!(5);
        let err = input_from_value(v, ValidationOptions::LENIENT).unwrap_err();
        assert_eq!(err.field_errors()[0].path, "actor.id", "{err}");
        assert!(err.to_string().contains("actor.id: invalid type: integer `5`"), "{err}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("outcome");
        let err = input_from_value(v, ValidationOptions::LENIENT).unwrap_err();
        assert!(err.to_string().contains("missing field `outcome`"), "{err}");
    }

    #[test]
    fn bad_outcome_lists_the_allowed_values() {
        let mut v = minimal();
        v["outcome"] = json!("OK");
        let err = input_from_value(v, ValidationOptions::LENIENT).unwrap_err();
        assert_eq!(err.field_errors()[0].path, "outcome");
        assert!(err.to_string().contains("SUCCESS"), "{err}");
    }

    #[test]
    fn unknown_fields_are_warnings_when_lenient_and_errors_when_strict() {
        let mut v = minimal();
        v["actor"]["email"] = json!("a@b.c");
        let ok = input_from_value(v.clone(), ValidationOptions::LENIENT).unwrap();
        assert_eq!(ok.warnings, vec![FieldError::new("actor.email", "unknown field")]);
        let err = input_from_value(v, ValidationOptions::STRICT).unwrap_err();
        assert_eq!(err.field_errors(), &[FieldError::new("actor.email", "unknown field")]);
    }

    #[test]
    fn all_semantic_errors_are_reported_together() {
        let v = json!({
            "action": "", "outcome": "SUCCESS", "actor": {"type": "user", "id": ""},
            "context": {"ip": "300.1.1.1", "traceId": "XYZ"}
        });
        let err = input_from_value(v, ValidationOptions::LENIENT).unwrap_err();
        let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["action", "actor.id", "context.traceId", "context.ip"]);
    }

    #[test]
    fn identifier_like_action_is_a_warning_or_an_error() {
        let mut v = minimal();
        v["action"] = json!("invoice.123456.update");
        let ok = input_from_value(v.clone(), ValidationOptions::LENIENT).unwrap();
        assert_eq!(ok.warnings[0].path, "action");
        let strict = ValidationOptions { strict: false, strict_action_naming: true };
        assert!(input_from_value(v, strict).is_err());
    }

    #[test]
    fn syntax_and_encoding_errors_say_where() {
        assert_eq!(parse_json(b"{\"a\": \xff}").unwrap_err(), ContractError::NotUtf8 { offset: 6 });
        let err = parse_json(b"{\n  \"a\": tru }").unwrap_err();
        assert!(matches!(err, ContractError::Syntax { line: 2, .. }), "{err}");
        let err = input_from_value(json!([1]), ValidationOptions::LENIENT).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"));
    }
}
