//! The event contract read from a JSON value: [`ContractError`] (every way bytes or a value can
//! fail to be an event, each problem naming its field), [`Decoded`], and the readers and checks
//! of the two contract types. `codec` (wire formats) and `avro` both build on it.
//!
//! Layout: `reading.rs` reads a JSON value as a contract type, naming the field of any error.

mod reading;

use serde_json::{Map, Value};

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

    pub(crate) fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
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
