//! The Rust types, the JSON Schemas and the Avro schemas describe one contract and cannot drift:
//! * the set of field paths is the same in all three (struct literals in `common` force every Rust
//!   field to be populated, so a field added to one side only fails here);
//! * fully populated and minimal examples validate against the JSON Schema and round-trip through
//!   the JSON and Avro codecs unchanged;
//! * mutations that break a rule are refused by both the JSON Schema and the Rust validator.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use apache_avro::Schema;
use audit_schema::avro::{self, Record};
use audit_schema::codec::{self, WireFormat};
use audit_schema::ValidationOptions;
use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Value};

/// Fields that carry arbitrary JSON (Avro: JSON text); their insides are not part of the contract.
const JSON_TEXT_FIELDS: [&str; 2] = ["metadata", "diff"];
const INPUT_SCHEMA: &str = "audit-event.input.schema.json";
const EVENT_SCHEMA: &str = "audit-event.schema.json";
const BASE_URI: &str = "https://auditstream.dev/schemas/";

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_docs() -> HashMap<String, Value> {
    [INPUT_SCHEMA, EVENT_SCHEMA]
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(schemas_dir().join(name)).unwrap();
            (name.to_owned(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn validator(name: &str) -> Validator {
    let docs = schema_docs();
    let registry = Registry::new()
        .add(format!("{BASE_URI}{INPUT_SCHEMA}"), docs[INPUT_SCHEMA].clone())
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&docs[name])
        .unwrap()
}

fn schema_errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Field paths a JSON Schema node declares, following `$ref`, `allOf`, `oneOf`, `anyOf`, `items`.
fn json_schema_paths(docs: &HashMap<String, Value>, doc: &str, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let (file, pointer) = reference.split_once('#').unwrap();
        let file = if file.is_empty() { doc } else { file };
        let target = docs[file].pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"));
        json_schema_paths(docs, file, target, prefix, out);
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        for branch in node.get(combinator).and_then(Value::as_array).into_iter().flatten() {
            json_schema_paths(docs, doc, branch, prefix, out);
        }
    }
    if let Some(items) = node.get("items") {
        json_schema_paths(docs, doc, items, &format!("{prefix}[]"), out);
    }
    for (name, sub) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let path = join(prefix, name);
        out.insert(path.clone());
        if !(prefix.is_empty() && JSON_TEXT_FIELDS.contains(&name.as_str())) {
            json_schema_paths(docs, doc, sub, &path, out);
        }
    }
}

fn avro_paths(schema: &Schema, prefix: &str, out: &mut BTreeSet<String>) {
    match schema {
        Schema::Record(r) => {
            for f in &r.fields {
                let path = join(prefix, &f.name);
                out.insert(path.clone());
                if f.custom_attributes.get("jsonText") != Some(&Value::Bool(true)) {
                    avro_paths(&f.schema, &path, out);
                }
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| avro_paths(v, prefix, out)),
        Schema::Array(a) => avro_paths(&a.items, &format!("{prefix}[]"), out),
        _ => {}
    }
}

fn value_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (name, sub) in map {
                let path = join(prefix, name);
                out.insert(path.clone());
                if !(prefix.is_empty() && JSON_TEXT_FIELDS.contains(&name.as_str())) {
                    value_paths(sub, &path, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| value_paths(i, &format!("{prefix}[]"), out)),
        _ => {}
    }
}

fn assert_same_paths(schema_name: &str, record: Record, full_example: &Value) {
    let docs = schema_docs();
    let mut from_json_schema = BTreeSet::new();
    json_schema_paths(&docs, schema_name, &docs[schema_name], "", &mut from_json_schema);
    let mut from_avro = BTreeSet::new();
    avro_paths(avro::schema(record), "", &mut from_avro);
    let mut from_rust = BTreeSet::new();
    value_paths(full_example, "", &mut from_rust);
    assert_eq!(from_json_schema, from_avro, "{schema_name} vs its .avsc");
    assert_eq!(from_json_schema, from_rust, "{schema_name} vs the Rust type (fully populated)");
}

#[test]
fn input_field_paths_are_identical_in_json_schema_avro_and_rust() {
    assert_same_paths(INPUT_SCHEMA, Record::Input, &serde_json::to_value(common::full_input()).unwrap());
}

#[test]
fn event_field_paths_are_identical_in_json_schema_avro_and_rust() {
    assert_same_paths(EVENT_SCHEMA, Record::Event, &serde_json::to_value(common::full_event()).unwrap());
}

fn minimal_input() -> audit_schema::AuditEventInput {
    audit_schema::AuditEventInput::new(
        "user.login",
        audit_schema::Outcome::Failure,
        audit_schema::Actor::new("user", "u-1"),
    )
}

#[test]
fn input_examples_validate_and_round_trip_through_json_and_avro() {
    let v = validator(INPUT_SCHEMA);
    for input in [common::full_input(), minimal_input()] {
        let json = serde_json::to_value(&input).unwrap();
        assert_eq!(schema_errors(&v, &json), Vec::<String>::new(), "{json}");

        let bytes = codec::encode_input(&input, WireFormat::Json).unwrap();
        assert_eq!(codec::decode_input(&bytes, ValidationOptions::STRICT).unwrap().event, input);

        let bytes = codec::encode_input(&input, WireFormat::Avro).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(&bytes[2..10], &avro::fingerprint(avro::schema(Record::Input)));
        assert_eq!(codec::input_value(&bytes).unwrap(), json, "Avro gives back the same JSON");
        assert_eq!(codec::decode_input(&bytes, ValidationOptions::STRICT).unwrap().event, input);
    }
}

#[test]
fn event_examples_validate_and_round_trip_through_json_and_avro() {
    let v = validator(EVENT_SCHEMA);
    let mut events = vec![common::full_event()];
    events.extend(common::chain(3));
    for event in events {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(schema_errors(&v, &json), Vec::<String>::new(), "{json}");
        for format in [WireFormat::Json, WireFormat::Avro] {
            let bytes = codec::encode_event(&event, format).unwrap();
            assert_eq!(codec::event_value(&bytes).unwrap(), json, "{format:?} gives back the same JSON");
            assert_eq!(codec::decode_event(&bytes, ValidationOptions::STRICT).unwrap().event, event);
        }
    }
}

#[test]
fn avro_encoding_is_deterministic() {
    let a = codec::encode_event(&common::full_event(), WireFormat::Avro).unwrap();
    let b = codec::encode_event(&common::full_event(), WireFormat::Avro).unwrap();
    assert_eq!(a, b);
}

#[test]
fn published_examples_match_the_types() {
    for (file, value) in [
        ("examples/input-full.json", serde_json::to_value(common::full_input()).unwrap()),
        ("examples/input-minimal.json", serde_json::to_value(minimal_input()).unwrap()),
        ("examples/event-full.json", serde_json::to_value(common::full_event()).unwrap()),
    ] {
        let path = schemas_dir().join("testdata").join(file);
        if std::env::var_os("AUDIT_UPDATE_VECTORS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
        }
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(stored, value, "{file} is out of date: rerun with AUDIT_UPDATE_VECTORS=1");
    }
}

fn mutate(base: &Value, pointer: &str, new: Option<Value>) -> Value {
    let mut v = base.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let obj = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match new {
        Some(n) => {
            obj.insert(key.to_owned(), n);
        }
        None => {
            obj.remove(key);
        }
    }
    v
}

#[test]
fn json_schema_and_rust_validation_refuse_the_same_input_mutations() {
    let v = validator(INPUT_SCHEMA);
    let base = serde_json::to_value(common::full_input()).unwrap();
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("/action", None),
        ("/action", Some(json!(""))),
        ("/action", Some(json!("user login"))),
        ("/outcome", Some(json!("OK"))),
        ("/actor/id", Some(json!(""))),
        ("/actor/id", Some(json!(7))),
        ("/actor/email", Some(json!("a@b.c"))),
        ("/target/type", None),
        ("/context/traceId", Some(json!("4BF92F3577B34DA6A3CE929D0E0E4736"))),
        ("/context/spanId", Some(json!("00f067"))),
        ("/context/ip", Some(json!("300.1.1.1"))),
        ("/context/occurredAt", Some(json!("yesterday"))),
        ("/context/tenantId", Some(json!("x".repeat(257)))),
        ("/eventId", Some(json!("has space"))),
        ("/retentionTag", Some(json!("SOX"))),
        ("/producer/seq", Some(json!(-1))),
        ("/producer/id", None),
        ("/metadata", Some(json!([1, 2]))),
        ("/diff/middle", Some(json!(1))),
        ("/schemaVersion", Some(json!(0))),
    ];
    for (pointer, new) in cases {
        let bad = mutate(&base, pointer, new.clone());
        assert!(!schema_errors(&v, &bad).is_empty(), "JSON Schema accepts {pointer} = {new:?}");
        let err = codec::input_from_value(bad, ValidationOptions::STRICT);
        assert!(err.is_err(), "Rust accepts {pointer} = {new:?}");
    }
}

#[test]
fn json_schema_and_rust_validation_refuse_the_same_event_mutations() {
    let v = validator(EVENT_SCHEMA);
    let base = serde_json::to_value(common::full_event()).unwrap();
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("/context/occurredAt", None),
        ("/receivedAt", None),
        ("/integrity/alg", Some(json!("md5"))),
        ("/integrity/seq", Some(json!(0))),
        ("/integrity/hash", Some(json!("ABC"))),
        ("/integrity/prevHash", Some(json!("0"))),
        ("/integrity/source/partition", Some(json!(-1))),
        ("/integrity/source", None),
        ("/redaction/paths", None),
        ("/limits/diffTruncated", Some(json!("yes"))),
        ("/warnings", None),
        ("/integrity/extra", Some(json!(1))),
    ];
    for (pointer, new) in cases {
        let bad = mutate(&base, pointer, new.clone());
        assert!(!schema_errors(&v, &bad).is_empty(), "JSON Schema accepts {pointer} = {new:?}");
        assert!(codec::event_from_value(bad, ValidationOptions::STRICT).is_err(), "Rust accepts {pointer} = {new:?}");
    }
}

#[test]
fn avro_bytes_depend_only_on_the_event_not_on_the_map_order_of_its_payloads() {
    let event = serde_json::to_value(common::full_event()).unwrap();
    let metadata = json!({"zeta": 1, "alpha": {"y": [1.50, "é"], "b": null}, "mid": true});
    // The same members inserted in reverse order (only differs when serde_json keeps insertion
    // order, as it does when any crate in the build turns on `preserve_order`).
    let mut reversed = serde_json::Map::new();
    for (k, v) in metadata.as_object().unwrap().iter().rev() {
        reversed.insert(k.clone(), v.clone());
    }
    let (mut a, mut b) = (event.clone(), event);
    a["metadata"] = metadata.clone();
    b["metadata"] = Value::Object(reversed);
    let (a, b) = (avro::encode_event_value(&a).unwrap(), avro::encode_event_value(&b).unwrap());
    assert_eq!(a, b);
    let text = r#"{"alpha":{"b":null,"y":[1.5,"é"]},"mid":true,"zeta":1}"#.as_bytes();
    assert!(a.windows(text.len()).any(|w| w == text), "metadata travels as its RFC 8785 text");
    assert_eq!(
        codec::decode_event(&a, ValidationOptions::STRICT).unwrap().event.metadata.unwrap(),
        *metadata.as_object().unwrap()
    );
}
