//! Decoding and encoding events, JSON or Avro, with errors that name the field.
//!
//! Wire detection is by the first bytes: Avro single-object records start with `C3 01`; anything else
//! is read as UTF-8 JSON.
//!
//! Layout: this module holds wire detection and the decode and encode functions; the errors and
//! the reading of a JSON value as a contract type are in [`crate::contract`] (re-exported here),
//! which `avro` uses too.

use serde_json::Value;

use crate::avro;
use crate::validate::ValidationOptions;
use crate::{AuditEvent, AuditEventInput};

pub use crate::contract::{
    event_from_value, input_from_mut, input_from_ref, input_from_value, validate_event, validate_input, ContractError,
    Decoded,
};

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
    use super::*;
    use crate::validate::FieldError;
    use serde_json::json;

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
