//! Avro single-object bytes -> JSON: the writer schema is found by the record's fingerprint,
//! resolved against the expected reader schema, and the value turned into the contract's JSON form.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Value as Json};

use crate::contract::{event_from_value, input_from_value, ContractError};
use crate::validate::ValidationOptions;
use crate::{AuditEvent, AuditEventInput, Timestamp};

use super::{avro_err, field_path, is_json_text, schema, Record, KNOWN, SINGLE_OBJECT_MAGIC};

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
    fn unknown_fingerprint_is_named() {
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.push(0);
        let err = decode_to_json(&bytes, Record::Event).unwrap_err();
        assert!(err.to_string().contains("0102030405060708"), "{err}");
    }
}
