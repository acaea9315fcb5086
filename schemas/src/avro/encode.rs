//! JSON -> Avro single-object bytes, written straight from the JSON form guided by the schema;
//! `jsonText` fields carry their value's canonical JSON (or bytes already written for it).

use apache_avro::Schema;
use serde_json::Value as Json;

use crate::contract::ContractError;
use crate::{AuditEvent, AuditEventInput, Timestamp};

use super::{avro_err, field_path, is_json_text, mismatch, schema, Record, KNOWN, SINGLE_OBJECT_MAGIC};

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
