//! The published vectors in `schemas/testdata/` verify against this implementation:
//! RFC 8785 canonical form (including the RFC's number and string cases) and the chain hash rule.
//! `schemas/testdata/verify_vectors.py` checks the same files with an independent implementation.

mod common;

use std::path::PathBuf;

use audit_schema::canonical::canonicalize;
use audit_schema::chain::{hash_event_value, verify_chain, GENESIS_PREV_HASH};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
    numbers: Vec<NumberCase>,
    rejected: Vec<Rejected>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    json: String,
    canonical: String,
    sha256: String,
}

#[derive(Deserialize)]
struct NumberCase {
    ieee754: String,
    canonical: String,
}

#[derive(Deserialize)]
struct Rejected {
    name: String,
    json: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(&std::fs::read_to_string(testdata("canonical.json")).unwrap()).unwrap()
}

#[test]
fn canonical_vectors_give_the_published_bytes_and_hashes() {
    let v = vectors();
    assert!(v.cases.len() >= 5);
    for case in v.cases {
        let value: Value = serde_json::from_str(&case.json).unwrap();
        let bytes = canonicalize(&value).unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), case.canonical, "{}", case.name);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), case.sha256, "{}", case.name);
    }
}

#[test]
fn rfc8785_number_vectors_format_like_ecmascript() {
    let v = vectors();
    assert!(v.numbers.len() >= 20);
    for case in v.numbers {
        let bits = u64::from_str_radix(&case.ieee754, 16).unwrap();
        let n = serde_json::Number::from_f64(f64::from_bits(bits)).unwrap();
        let text = String::from_utf8(canonicalize(&Value::Number(n)).unwrap()).unwrap();
        assert_eq!(text, case.canonical, "{}", case.ieee754);
    }
}

#[test]
fn inputs_without_a_canonical_form_are_rejected() {
    for case in vectors().rejected {
        let value: Value = serde_json::from_str(&case.json).unwrap();
        assert!(canonicalize(&value).is_err(), "{} was canonicalized", case.name);
    }
}

#[test]
fn chain_vector_recomputes_and_links_from_genesis() {
    let path = testdata("chain.jsonl");
    let expected: Vec<Value> = common::chain(5).iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    if std::env::var_os("AUDIT_UPDATE_VECTORS").is_some() {
        let lines: Vec<String> = expected.iter().map(|v| serde_json::to_string(v).unwrap()).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    let stored: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stored, expected, "chain.jsonl is out of date: rerun with AUDIT_UPDATE_VECTORS=1");

    let mut prev = GENESIS_PREV_HASH.to_owned();
    for (i, event) in stored.iter().enumerate() {
        let recorded = event["integrity"]["hash"].as_str().unwrap();
        assert_eq!(hash_event_value(event).unwrap(), recorded, "line {}", i + 1);
        assert_eq!(event["integrity"]["prevHash"], Value::String(prev.clone()), "line {}", i + 1);
        assert_eq!(event["integrity"]["seq"], i as u64 + 1);
        prev = recorded.to_owned();
    }
    let report = verify_chain(&common::chain(5)).unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[test]
fn the_hash_leaves_out_only_integrity_hash() {
    let event = common::full_event();
    let mut value = serde_json::to_value(&event).unwrap();
    let recorded = hash_event_value(&value).unwrap();
    value["integrity"]["hash"] = Value::String("f".repeat(64));
    assert_eq!(hash_event_value(&value).unwrap(), recorded, "integrity.hash is not covered");
    value["integrity"]["seq"] = Value::from(2);
    assert_ne!(hash_event_value(&value).unwrap(), recorded, "integrity.seq is covered");
    let mut value = serde_json::to_value(&event).unwrap();
    value["hash"] = Value::String("x".into());
    assert_ne!(hash_event_value(&value).unwrap(), recorded, "a top-level field named hash is covered");
}

#[test]
fn canonical_text_hashes_without_parsing_and_other_text_does_not_pass_for_it() {
    use audit_schema::chain::hash_canonical_text;
    for event in common::chain(5) {
        let value = serde_json::to_value(&event).unwrap();
        let recorded = value["integrity"]["hash"].as_str().unwrap().to_owned();
        let canonical = audit_schema::canonical::canonicalize(&value).unwrap();
        assert_eq!(hash_canonical_text(&canonical).as_deref(), Some(recorded.as_str()));
        // The same event in another key order (not canonical) does not hash to it.
        let mut other = serde_json::to_vec(&value).unwrap();
        if other == canonical {
            other = format!("{{\"zz\":0,{}", std::str::from_utf8(&canonical[1..]).unwrap()).into_bytes();
        }
        assert_ne!(hash_canonical_text(&other).as_deref(), Some(recorded.as_str()));
    }
    let canonical =
        audit_schema::canonical::canonicalize(&serde_json::to_value(common::full_event()).unwrap()).unwrap();
    let text = std::str::from_utf8(&canonical).unwrap();
    // An edit anywhere changes it; an event without integrity.hash has none.
    let edited = text.replacen("\"actor\":{", "\"actor\":{\"x\":1,", 1);
    let value: Value = serde_json::from_str(text).unwrap();
    assert_ne!(hash_canonical_text(edited.as_bytes()), hash_canonical_text(text.as_bytes()));
    assert_eq!(hash_canonical_text(text.as_bytes()), Some(hash_event_value(&value).unwrap()));
    let cut = text.replace(&format!("\"hash\":\"{}\",", value["integrity"]["hash"].as_str().unwrap()), "");
    assert_eq!(hash_canonical_text(cut.as_bytes()), None);
}

#[test]
fn sealing_in_one_pass_gives_the_canonical_bytes_of_the_sealed_event_wherever_hash_sorts() {
    use audit_schema::chain::seal_canonical;
    let mut buf = Vec::new();
    let mut integrities: Vec<Value> = vec![
        serde_json::json!({}),
        serde_json::json!({"alg": "sha256"}),
        serde_json::json!({"zz": 1}),
        serde_json::json!({"a": 1, "z": [1, {"hash": "inner stays"}]}),
        serde_json::json!({"hash": "stale", "\u{e000}": 1, "\u{10000}": 2}),
    ];
    integrities.extend(common::chain(3).iter().map(|e| serde_json::to_value(&e.integrity).unwrap()));
    for integrity in integrities {
        let mut event = serde_json::json!({"action": "a.b", "integrity": integrity, "metadata": {"hash": 1}});
        let expected_hash = hash_event_value(&event).unwrap();
        let (hash, covered) = seal_canonical(&mut event, &mut buf).unwrap();
        assert_eq!(hash, expected_hash, "{event}");
        assert_eq!(event["integrity"]["hash"], Value::String(hash.clone()));
        assert_eq!(buf, canonicalize(&event).unwrap(), "{}", String::from_utf8_lossy(&buf));
        assert_eq!(
            covered,
            buf.len()
                - format!("\"hash\":\"{hash}\"").len()
                - usize::from(event["integrity"].as_object().unwrap().len() > 1)
        );
    }
    let mut no_integrity = serde_json::json!({"action": "a.b"});
    assert!(seal_canonical(&mut no_integrity, &mut buf).is_err());
}

#[test]
fn sealing_tells_where_each_requested_member_is_in_the_sealed_bytes() {
    use audit_schema::chain::seal_canonical_spans;
    use serde_json::json;
    // Members before and after `integrity` (whose hash is put in after writing), `integrity`
    // itself (it grows by the hash), and one the event lacks.
    let members = ["action", "diff", "integrity", "metadata", "zz", "absent"];
    for integrity in [json!({}), json!({"alg": "sha256"}), json!({"a": 1, "z": 2}), json!({"zz": [1]})] {
        let mut event = json!({
            "action": "a.b", "diff": {"before": {"x": [1, "é\n"]}, "after": null}, "integrity": integrity,
            "metadata": {"hash": 1, "b": {"\u{fb33}": 1, "\u{1f600}": 2}}, "zz": "\u{1f600}"
        });
        let (mut buf, mut spans) = (Vec::new(), vec![None; members.len()]);
        seal_canonical_spans(&mut event, &mut buf, &members, &mut spans).unwrap();
        assert_eq!(buf, canonicalize(&event).unwrap());
        for (name, span) in members.iter().zip(spans) {
            match event.get(name) {
                Some(v) => assert_eq!(buf[span.unwrap()], canonicalize(v).unwrap(), "{name} in {event}"),
                None => assert_eq!(span, None),
            }
        }
    }
}
