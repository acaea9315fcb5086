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

use std::sync::LazyLock;

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use digest::Digest;
use serde_json::{Map, Value as Json};

use crate::codec::{event_from_value, input_from_value, ContractError};
use crate::validate::ValidationOptions;
use crate::{AuditEvent, AuditEventInput, Timestamp};

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

fn encode(record: Record, json: &Json, known: Known<'_>) -> Result<Vec<u8>, ContractError> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&fingerprint_of(record));
    write(schema(record), Some(json), false, "", known, &mut out)?;
    Ok(out)
}

/// Canonical (RFC 8785) bytes already written for values inside the value being encoded, each
/// paired with its value (found by identity, not equality): a `jsonText` field holding one of
/// them carries the bytes instead of writing the value again.
pub type Known<'a> = &'a [(&'a Json, &'a [u8])];

fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

/// Whether a record field is marked `"jsonText": true` (arbitrary JSON carried as text).
fn is_json_text(f: &apache_avro::schema::RecordField) -> bool {
    f.custom_attributes.get("jsonText") == Some(&Json::Bool(true))
}

/// JSON -> Avro binary, guided by `schema`, straight into `out` (no intermediate Avro values). The
/// drift tests read everything written here back with `apache-avro`'s reader.
fn write(
    schema: &Schema,
    json: Option<&Json>,
    json_text: bool,
    path: &str,
    known: Known<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ContractError> {
    let present = json.filter(|j| !j.is_null());
    match schema {
        Schema::Union(union) => {
            let variants = union.variants();
            let wanted = |s: &Schema| matches!(s, Schema::Null) == present.is_none();
            let (idx, inner) = variants
                .iter()
                .enumerate()
                .find(|(_, s)| wanted(s))
                .ok_or_else(|| ContractError::Avro(format!("{path}: required field is missing")))?;
            write_long(idx as i64, out);
            write(inner, present, json_text, path, known, out)
        }
        Schema::Null => Ok(()),
        _ => {
            let Some(json) = present else {
                return Err(ContractError::Avro(format!("{path}: required field is missing")));
            };
            match schema {
                Schema::String if json_text => {
                    // The RFC 8785 form, so the bytes never depend on the JSON map's order (which
                    // follows the input when any crate in the build turns on `preserve_order`).
                    // An input with an integer no double holds has no such form: it goes as plain
                    // JSON, and the processor turns that integer into a string.
                    if let Some((_, text)) = known.iter().find(|(value, _)| std::ptr::eq(*value, json)) {
                        write_bytes(text, out);
                    } else {
                        let text = match crate::canonical::canonicalize(json) {
                            Ok(text) => text,
                            Err(_) => serde_json::to_vec(json).map_err(avro_err)?,
                        };
                        write_bytes(&text, out);
                    }
                }
                Schema::String => {
                    write_bytes(json.as_str().ok_or_else(|| mismatch(path, "a string", json))?.as_bytes(), out)
                }
                Schema::Boolean => out.push(u8::from(json.as_bool().ok_or_else(|| mismatch(path, "a boolean", json))?)),
                Schema::Int => write_long(
                    json.as_i64()
                        .filter(|i| i32::try_from(*i).is_ok())
                        .ok_or_else(|| mismatch(path, "a 32-bit integer", json))?,
                    out,
                ),
                Schema::Long => write_long(json.as_i64().ok_or_else(|| mismatch(path, "a 64-bit integer", json))?, out),
                Schema::TimestampMillis => {
                    let text = json.as_str().ok_or_else(|| mismatch(path, "an RFC 3339 timestamp", json))?;
                    let ts: Timestamp = text.parse().map_err(|e| ContractError::Avro(format!("{path}: {e}")))?;
                    write_long(ts.as_millis(), out);
                }
                Schema::Enum(e) => {
                    let symbol = json.as_str().ok_or_else(|| mismatch(path, "an enum symbol", json))?;
                    let idx = e
                        .symbols
                        .iter()
                        .position(|s| s == symbol)
                        .ok_or_else(|| mismatch(path, "one of the enum symbols", json))?;
                    write_long(idx as i64, out);
                }
                Schema::Array(a) => {
                    let items = json.as_array().ok_or_else(|| mismatch(path, "an array", json))?;
                    if !items.is_empty() {
                        write_long(items.len() as i64, out);
                        for (i, item) in items.iter().enumerate() {
                            if let Err(e) = write(&a.items, Some(item), false, "", known, out) {
                                // Again with the item's path, which only an error needs.
                                let named =
                                    write(&a.items, Some(item), false, &format!("{path}[{i}]"), &[], &mut Vec::new());
                                return Err(named.err().unwrap_or(e));
                            }
                        }
                    }
                    out.push(0);
                }
                Schema::Record(r) => {
                    let obj = json.as_object().ok_or_else(|| mismatch(path, "an object", json))?;
                    let mut found = 0;
                    for f in &r.fields {
                        let member = obj.get(&f.name);
                        found += usize::from(member.is_some());
                        let text = is_json_text(f);
                        // The path is built only when an error travels up through this record.
                        write(&f.schema, member, text, &f.name, known, out).map_err(|e| match e {
                            ContractError::Avro(m) if !path.is_empty() => ContractError::Avro(format!("{path}.{m}")),
                            e => e,
                        })?;
                    }
                    // Every member was a field: none is left without a counterpart.
                    if found < obj.len() {
                        let extra = obj.keys().find(|k| !r.lookup.contains_key(k.as_str())).map_or("", String::as_str);
                        return Err(ContractError::Avro(format!(
                            "{}: field has no counterpart in Avro record {}",
                            field_path(path, extra),
                            r.name.name()
                        )));
                    }
                }
                other => {
                    return Err(ContractError::Avro(format!("{path}: Avro type {other:?} is not used by the contract")))
                }
            }
            Ok(())
        }
    }
}

/// Encodes a processed event given as its JSON value.
pub fn encode_event_value(value: &Json) -> Result<Vec<u8>, ContractError> {
    encode(Record::Event, value, &[])
}

/// [`encode_event_value`] with the canonical bytes of some `jsonText` values already at hand.
pub fn encode_event_value_known(value: &Json, known: Known<'_>) -> Result<Vec<u8>, ContractError> {
    encode(Record::Event, value, known)
}

fn fingerprint_of(record: Record) -> [u8; 8] {
    KNOWN.iter().find(|k| k.record == record).map(|k| k.fingerprint).unwrap_or_default()
}

/// Encodes a processed event.
pub fn encode_event(event: &AuditEvent) -> Result<Vec<u8>, ContractError> {
    encode(Record::Event, &serde_json::to_value(event).map_err(avro_err)?, &[])
}

/// Encodes an input event.
pub fn encode_input(input: &AuditEventInput) -> Result<Vec<u8>, ContractError> {
    encode(Record::Input, &serde_json::to_value(input).map_err(avro_err)?, &[])
}

/// Decodes a single-object record of `expected` into its JSON form.
pub fn decode_to_json(bytes: &[u8], expected: Record) -> Result<Json, ContractError> {
    if bytes.len() < 10 || bytes[..2] != SINGLE_OBJECT_MAGIC {
        return Err(ContractError::Avro("record too short or missing the C3 01 single-object marker".into()));
    }
    let fp = &bytes[2..10];
    let Some(known) = KNOWN.iter().find(|k| k.fingerprint == fp) else {
        return Err(ContractError::UnknownSchema {
            fingerprint: hex::encode(fp),
            known: KNOWN.iter().map(|k| hex::encode(k.fingerprint)).collect::<Vec<_>>().join(", "),
        });
    };
    if known.record != expected {
        return Err(ContractError::WrongRecord { found: known.record.name(), expected: expected.name() });
    }
    let reader_schema = schema(expected);
    let mut body = &bytes[10..];
    if std::ptr::eq(known.schema, reader_schema) {
        // Written with the schema this build reads: decode straight into JSON.
        let value = read(reader_schema, &mut body, false, "")?;
        if !body.is_empty() {
            return Err(ContractError::Avro(format!("{} trailing bytes after the record", body.len())));
        }
        return value.ok_or_else(|| ContractError::Avro("record decoded to null".into()));
    }
    let reader = GenericDatumReader::builder(known.schema).reader_schema(reader_schema).build().map_err(avro_err)?;
    let value = reader.read_value(&mut body).map_err(avro_err)?;
    if !body.is_empty() {
        return Err(ContractError::Avro(format!("{} trailing bytes after the record", body.len())));
    }
    from_avro(reader_schema, &value, false, "")?.ok_or_else(|| ContractError::Avro("record decoded to null".into()))
}

fn truncated(path: &str) -> ContractError {
    ContractError::Avro(format!("{path}: record ends early"))
}

fn read_long(buf: &mut &[u8], path: &str) -> Result<i64, ContractError> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| truncated(path))?;
        *buf = rest;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(ContractError::Avro(format!("{path}: varint longer than 64 bits")))
}

fn read_bytes<'a>(buf: &mut &'a [u8], path: &str) -> Result<&'a [u8], ContractError> {
    let len =
        usize::try_from(read_long(buf, path)?).map_err(|_| ContractError::Avro(format!("{path}: negative length")))?;
    if buf.len() < len {
        return Err(truncated(path));
    }
    let (b, rest) = buf.split_at(len);
    *buf = rest;
    Ok(b)
}

/// Avro binary -> JSON, guided by the writer schema (when it is the reader schema): no
/// intermediate Avro values. `None` for an Avro null (an absent JSON field).
fn read(schema: &Schema, buf: &mut &[u8], json_text: bool, path: &str) -> Result<Option<Json>, ContractError> {
    Ok(Some(match schema {
        Schema::Null => return Ok(None),
        Schema::Union(u) => {
            let idx = read_long(buf, path)?;
            let branch = usize::try_from(idx)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or_else(|| ContractError::Avro(format!("{path}: union branch {idx} does not exist")))?;
            return read(branch, buf, json_text, path);
        }
        Schema::Boolean => {
            let (&b, rest) = buf.split_first().ok_or_else(|| truncated(path))?;
            *buf = rest;
            Json::Bool(b != 0)
        }
        Schema::Int | Schema::Long => Json::from(read_long(buf, path)?),
        Schema::TimestampMillis => {
            let ms = read_long(buf, path)?;
            Json::String(
                Timestamp::from_millis(ms)
                    .ok_or_else(|| ContractError::Avro(format!("{path}: time out of range")))?
                    .to_string(),
            )
        }
        Schema::String => {
            let b = read_bytes(buf, path)?;
            if json_text {
                serde_json::from_slice(b)
                    .map_err(|e| ContractError::Avro(format!("{path}: JSON text does not parse: {e}")))?
            } else {
                Json::String(
                    std::str::from_utf8(b).map_err(|_| ContractError::Avro(format!("{path}: not UTF-8")))?.to_owned(),
                )
            }
        }
        Schema::Enum(e) => {
            let idx = read_long(buf, path)?;
            let symbol = usize::try_from(idx)
                .ok()
                .and_then(|i| e.symbols.get(i))
                .ok_or_else(|| ContractError::Avro(format!("{path}: enum index {idx} does not exist")))?;
            Json::String(symbol.clone())
        }
        Schema::Array(a) => {
            let mut out = Vec::new();
            loop {
                let mut count = read_long(buf, path)?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    count = -count;
                    read_long(buf, path)?; // block size in bytes
                }
                for _ in 0..count {
                    out.push(read(&a.items, buf, false, path)?.unwrap_or(Json::Null));
                }
            }
            Json::Array(out)
        }
        Schema::Record(r) => {
            let mut obj = Map::with_capacity(r.fields.len());
            for f in &r.fields {
                let text = is_json_text(f);
                if let Some(v) = read(&f.schema, buf, text, &f.name)? {
                    obj.insert(f.name.clone(), v);
                }
            }
            Json::Object(obj)
        }
        other => return Err(ContractError::Avro(format!("{path}: Avro type {other:?} is not used by the contract"))),
    }))
}

/// Decodes an Avro input record (strictness as given).
pub fn decode_input(bytes: &[u8], options: ValidationOptions) -> Result<AuditEventInput, ContractError> {
    Ok(input_from_value(decode_to_json(bytes, Record::Input)?, options)?.event)
}

/// Decodes an Avro processed event.
pub fn decode_event(bytes: &[u8], options: ValidationOptions) -> Result<AuditEvent, ContractError> {
    Ok(event_from_value(decode_to_json(bytes, Record::Event)?, options)?.event)
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

/// Avro -> JSON, guided by `schema`; `None` for an Avro null (an absent JSON field).
fn from_avro(schema: &Schema, value: &Avro, json_text: bool, path: &str) -> Result<Option<Json>, ContractError> {
    let bad = || ContractError::Avro(format!("{path}: value {value:?} does not match schema {schema:?}"));
    Ok(Some(match (schema, value) {
        (_, Avro::Null) => return Ok(None),
        (Schema::Union(u), Avro::Union(idx, inner)) => {
            let branch = u.variants().get(*idx as usize).ok_or_else(bad)?;
            return from_avro(branch, inner, json_text, path);
        }
        (Schema::String, Avro::String(s)) if json_text => serde_json::from_str(s)
            .map_err(|e| ContractError::Avro(format!("{path}: JSON text does not parse: {e}")))?,
        (Schema::String, Avro::String(s)) => Json::String(s.clone()),
        (Schema::Boolean, Avro::Boolean(b)) => Json::Bool(*b),
        (Schema::Int, Avro::Int(i)) => Json::from(*i),
        (Schema::Long, Avro::Long(i)) => Json::from(*i),
        (Schema::TimestampMillis, Avro::TimestampMillis(ms) | Avro::Long(ms)) => {
            let ts = Timestamp::from_millis(*ms).ok_or_else(bad)?;
            Json::String(ts.to_string())
        }
        (Schema::Enum(_), Avro::Enum(_, symbol)) => Json::String(symbol.clone()),
        (Schema::Array(a), Avro::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(from_avro(&a.items, item, false, &format!("{path}[{i}]"))?.unwrap_or(Json::Null));
            }
            Json::Array(out)
        }
        (Schema::Record(r), Avro::Record(fields)) => {
            let mut obj = Map::new();
            for ((name, v), f) in fields.iter().zip(&r.fields) {
                let text = is_json_text(f);
                if let Some(j) = from_avro(&f.schema, v, text, &field_path(path, name))? {
                    obj.insert(name.clone(), j);
                }
            }
            Json::Object(obj)
        }
        _ => return Err(bad()),
    }))
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

    #[test]
    fn unknown_fingerprint_is_named() {
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.push(0);
        let err = decode_to_json(&bytes, Record::Event).unwrap_err();
        assert!(err.to_string().contains("0102030405060708"), "{err}");
    }
}
