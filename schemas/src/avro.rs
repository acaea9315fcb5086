//! Avro codec with single-object encoding: `C3 01`, the writer schema's 8-byte CRC-64-AVRO
//! fingerprint (little-endian), then the Avro binary body. No registry server is needed: every schema
//! this build can read is compiled in and looked up by fingerprint.
//!
//! The fingerprint is taken over the schema's Parsing Canonical Form as the Avro specification (and
//! the Java, Python and Go implementations) define it, in which `{"type":"long","logicalType":...}`
//! becomes `"long"`. The `apache-avro` crate keeps `{"type":"long"}` there and would produce a
//! fingerprint that other languages do not recognise, so the form is normalized before hashing.
//!
//! Conversion between the JSON form and Avro values is driven by the schema: a JSON field with no
//! Avro counterpart is an error, so the two contracts cannot drift silently. Fields marked
//! `"jsonText": true` in the `.avsc` carry arbitrary JSON as text, written in RFC 8785 canonical
//! form so that the bytes depend only on the value.
//!
//! Layout: this module holds the compiled-in schemas and their fingerprints; `encode.rs` writes
//! JSON as Avro, `decode.rs` reads it back.

mod decode;
mod encode;

use std::sync::LazyLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use digest::Digest;
use serde_json::Value as Json;

use crate::contract::ContractError;

pub use decode::{decode_event, decode_input, decode_to_json};
pub use encode::{encode_event, encode_event_value, encode_event_value_known, encode_input, Known};

/// The two marker bytes that open every single-object record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// The processed-event schema text (`schemas/audit-event.avsc`).
pub const EVENT_SCHEMA_TEXT: &str = include_str!("../audit-event.avsc");
/// The input schema text (`schemas/audit-event.input.avsc`).
pub const INPUT_SCHEMA_TEXT: &str = include_str!("../audit-event.input.avsc");

/// Which of the two contracts a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// `AuditEventInput`.
    Input,
    /// `AuditEvent`.
    Event,
}

impl Record {
    fn name(self) -> &'static str {
        match self {
            Record::Input => "AuditEventInput",
            Record::Event => "AuditEvent",
        }
    }
}

struct KnownSchema {
    record: Record,
    schema: &'static Schema,
    fingerprint: [u8; 8],
}

#[allow(clippy::expect_used)] // the schemas are compiled in and covered by tests
static EVENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(EVENT_SCHEMA_TEXT).expect("audit-event.avsc parses"));
#[allow(clippy::expect_used)]
static INPUT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(INPUT_SCHEMA_TEXT).expect("audit-event.input.avsc parses"));

static KNOWN: LazyLock<Vec<KnownSchema>> = LazyLock::new(|| {
    vec![
        KnownSchema { record: Record::Event, schema: &EVENT_SCHEMA, fingerprint: fingerprint(&EVENT_SCHEMA) },
        KnownSchema { record: Record::Input, schema: &INPUT_SCHEMA, fingerprint: fingerprint(&INPUT_SCHEMA) },
    ]
});

/// The parsed schema of `record`.
pub fn schema(record: Record) -> &'static Schema {
    match record {
        Record::Input => &INPUT_SCHEMA,
        Record::Event => &EVENT_SCHEMA,
    }
}

/// The Parsing Canonical Form of `schema` as the Avro specification defines it.
pub fn parsing_canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for primitive in ["null", "boolean", "int", "long", "float", "double", "bytes", "string"] {
        form = form.replace(&format!("{{\"type\":\"{primitive}\"}}"), &format!("\"{primitive}\""));
    }
    form
}

/// CRC-64-AVRO fingerprint of `schema`, in the byte order single-object encoding writes it.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    let digest = Rabin::digest(parsing_canonical_form(schema).as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The fingerprint of the current schema of `record`, hex.
pub fn fingerprint_hex(record: Record) -> String {
    hex::encode(fingerprint(schema(record)))
}

fn avro_err(e: impl std::fmt::Display) -> ContractError {
    ContractError::Avro(e.to_string())
}

/// Whether a record field is marked `"jsonText": true` (arbitrary JSON carried as text).
fn is_json_text(f: &apache_avro::schema::RecordField) -> bool {
    f.custom_attributes.get("jsonText") == Some(&Json::Bool(true))
}

fn field_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn mismatch(path: &str, expected: &str, json: &Json) -> ContractError {
    ContractError::Avro(format!("{path}: expected {expected}, found {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_drops_logical_types_like_the_specification() {
        let form = parsing_canonical_form(schema(Record::Event));
        assert!(!form.contains("logicalType"), "{form}");
        assert!(!form.contains("{\"type\":\"long\"}"), "{form}");
        assert!(form.starts_with("{\"name\":\"dev.auditstream.v1.AuditEvent\",\"type\":\"record\""), "{form}");
    }

    /// Computed independently with Python's fastavro (`to_parsing_canonical_form` + `fingerprint(...,
    /// "CRC-64-AVRO")`); a Java or Go reader recognises the same bytes.
    #[test]
    fn fingerprints_match_other_avro_implementations() {
        assert_eq!(fingerprint_hex(Record::Event), "ee8b3ae1d890f71b");
        assert_eq!(fingerprint_hex(Record::Input), "7fa2efada2e73e20");
    }

    #[test]
    fn fingerprints_differ_between_the_two_records() {
        assert_ne!(fingerprint_hex(Record::Event), fingerprint_hex(Record::Input));
    }
}
