//! The per-record pipeline, a pure function of (raw record, chain head, policy):
//! decode → identifier rule → sanitize → validate → normalize → redact → limit → chain → encode.
//!
//! No clock, no randomness: `eventId` (when the producer sent none) is derived from the raw
//! record's (topic, partition, offset), `receivedAt` is its broker timestamp, so processing the same
//! raw range twice with the same policy gives byte-identical processed events.
//!
//! A record that can never be processed becomes a dead letter plus a quarantine entry that takes its
//! place in the chain (action `audit.quarantined`, the dead-letter reference and the SHA-256 of the
//! raw bytes, no content); the lane goes on.

use std::ops::Range;

use audit_schema::avro;
use audit_schema::chain::{seal, seal_canonical_spans, ChainHead};
use audit_schema::codec::{self, WireFormat};
use audit_schema::Integrity;
use audit_schema::{
    Actor, AuditEvent, AuditEventInput, Context, Limits, Outcome, Redaction, SourceRef, Timestamp, ValidationOptions,
    SCHEMA_VERSION,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{LimitsConfig, OutputEncoding, OversizeBehavior};
use crate::redact::{RedactionPolicy, RedactionReport};
use crate::sanitize::{first_hidden_character, identifier_hygiene, sanitize_event};
use crate::settings::Settings;
use audit_schema::wire::dead_letter_class;

/// Action of a quarantine entry.
pub use audit_schema::wire::QUARANTINE_ACTION;

/// A raw record as read from the raw topic.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Raw topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Broker timestamp, milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub payload: Option<&'a [u8]>,
}

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterClass {
    /// No payload (a tombstone).
    Empty,
    /// Not UTF-8 JSON nor a known Avro record.
    Decode,
    /// Breaks the contract beyond what lenient mode tolerates.
    Invalid,
    /// Over `limits.max_event_bytes`.
    Oversize,
    /// A bug: the event could not be hashed or encoded.
    Internal,
}

impl DeadLetterClass {
    /// Name used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterClass::Empty => dead_letter_class::EMPTY,
            DeadLetterClass::Decode => dead_letter_class::DECODE,
            DeadLetterClass::Invalid => dead_letter_class::INVALID,
            DeadLetterClass::Oversize => dead_letter_class::OVERSIZE,
            DeadLetterClass::Internal => dead_letter_class::INTERNAL,
        }
    }
}

/// A dead letter: the class and the reason (which may quote the payload; it goes to the
/// dead-letter topic's headers only, never into the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Error class.
    pub class: DeadLetterClass,
    /// Human reason.
    pub reason: String,
}

/// What the pipeline made of a raw record. Either way, it is the next link of the chain.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The processed event (or the quarantine entry standing in for a dead letter) as JSON,
    /// exactly as hashed and encoded.
    pub value: Value,
    /// `value` encoded for the processed topic.
    pub encoded: Vec<u8>,
    /// Its `eventId`.
    pub event_id: String,
    /// Its `limits`.
    pub limits: Limits,
    /// Set when the record goes to the dead-letter topic.
    pub dead_letter: Option<DeadLetter>,
    /// What redaction did.
    pub redactions: RedactionReport,
}

impl Processed {
    /// The typed event (decoded from [`Processed::value`]).
    pub fn event(&self) -> AuditEvent {
        serde_json::from_value(self.value.clone())
            .unwrap_or_else(|e| panic!("a processed event always has the contract's shape: {e}"))
    }
}

/// The compiled pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    validation: ValidationOptions,
    policy: RedactionPolicy,
    limits: LimitsConfig,
    max_depth: usize,
    format: WireFormat,
    dead_letter_topic: String,
}

/// Top-level input fields that lenient mode may drop when their value is invalid.
const DROPPABLE: &[&str] = &["eventId", "target", "metadata", "diff", "retentionTag", "producer"];

/// The free-form payloads, each with its own size limit (and, in Avro, carried as JSON text).
const PAYLOADS: [&str; 2] = ["metadata", "diff"];

/// The marker that replaces a payload, given the payload's canonical bytes.
fn truncation_marker(canonical: &[u8]) -> Value {
    let (bytes, sha256) = (canonical.len(), hex::encode(Sha256::digest(canonical)));
    let mut m = Map::new();
    m.insert("truncated".into(), Value::Bool(true));
    m.insert("originalBytes".into(), Value::from(bytes));
    m.insert("sha256".into(), Value::String(sha256));
    Value::Object(m)
}

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
    /// The pipeline the settings describe.
    pub fn new(settings: &Settings) -> Pipeline {
        let c = &settings.config;
        Pipeline {
            validation: ValidationOptions {
                strict: c.processing.strict,
                strict_action_naming: c.processing.strict_action_naming,
            },
            policy: settings.policy.clone(),
            limits: c.limits.clone(),
            max_depth: c.processing.max_depth,
            format: match c.processing.output_encoding {
                OutputEncoding::Avro => WireFormat::Avro,
                OutputEncoding::Json => WireFormat::Json,
            },
            dead_letter_topic: c.kafka.dead_letter_topic.clone(),
        }
    }

    /// The redaction policy's version.
    pub fn policy_version(&self) -> &str {
        self.policy.version()
    }

    /// Processes one raw record as the next link after `head`, and advances `head`.
    pub fn process(&self, raw: &RawRecord<'_>, head: &mut ChainHead) -> Processed {
        let received_at = raw.timestamp_ms.and_then(Timestamp::from_millis);
        match self.build(raw, received_at) {
            Ok((value, event_id, redactions)) => {
                self.seal_and_encode(raw, received_at, value, event_id, redactions, head)
            }
            Err(dead_letter) => self.quarantine(raw, received_at, dead_letter, head),
        }
    }

    fn seal_and_encode(
        &self,
        raw: &RawRecord<'_>,
        received_at: Option<Timestamp>,
        mut value: Value,
        event_id: String,
        redactions: RedactionReport,
        head: &mut ChainHead,
    ) -> Processed {
        let integrity = head.next_integrity(source(raw));
        if let Some(obj) = value.as_object_mut() {
            obj.insert("integrity".into(), serde_json::to_value(&integrity).unwrap_or_default());
        }
        let internal = |reason: String| DeadLetter { class: DeadLetterClass::Internal, reason };
        // One canonicalization serves the size limits, the hash and the encoding (JSON output is
        // those bytes; Avro carries the payloads' bytes as their JSON text).
        let mut buf = Vec::with_capacity(2048);
        let mut spans = [None, None];
        let mut limits = Limits::default();
        let hash = loop {
            let (hash, bytes) = match seal_canonical_spans(&mut value, &mut buf, &PAYLOADS, &mut spans) {
                Ok(sealed) => sealed,
                Err(e) => {
                    return self.quarantine(raw, received_at, internal(format!("cannot hash the event: {e}")), head)
                }
            };
            match self.check_limits(&mut value, &mut limits, bytes, &buf, &spans) {
                Ok(false) => break hash,
                Ok(true) => continue, // payloads were truncated: measure again
                Err(dead_letter) => return self.quarantine(raw, received_at, dead_letter, head),
            }
        };
        let encoded = match self.format {
            WireFormat::Json => Ok(buf),
            WireFormat::Avro => {
                let known: Vec<(&Value, &[u8])> = PAYLOADS
                    .iter()
                    .zip(&spans)
                    .filter_map(|(name, span)| Some((value.get(name)?, &buf[span.clone()?])))
                    .collect();
                avro::encode_event_value_known(&value, &known)
            }
        };
        match encoded {
            Ok(encoded) => {
                head.advance(&Integrity { hash, ..integrity });
                Processed { value, encoded, event_id, limits, dead_letter: None, redactions }
            }
            Err(e) => self.quarantine(raw, received_at, internal(format!("cannot encode the event: {e}")), head),
        }
    }

    /// Decode, sanitize, validate, normalize, redact and limit: the processed event as JSON, without
    /// `integrity`. The input's JSON is edited in place rather than rebuilt from typed values, so
    /// metadata and diff are never copied.
    fn build(
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

    /// Applies the size limits to the sealed event, `bytes` long without its hash, whose canonical
    /// form is `canonical` (`spans` locate the payloads in it). First each payload over its own
    /// limit becomes a truncation marker; then, for an event still over `limits.max_event_bytes`,
    /// the remaining payloads too (TRUNCATE) or the event is refused (REJECT). `Ok(true)`: payloads
    /// were truncated and the event must be sealed and measured again.
    fn check_limits(
        &self,
        value: &mut Value,
        limits: &mut Limits,
        bytes: usize,
        canonical: &[u8],
        spans: &[Option<Range<usize>>; 2],
    ) -> Result<bool, DeadLetter> {
        let max = self.limits.max_event_bytes;
        let own_max = [self.limits.max_metadata_bytes, self.limits.max_diff_bytes];
        let done = [limits.metadata_truncated, limits.diff_truncated];
        // The canonical length of each payload still there and not yet a marker.
        let len = |i: usize| spans[i].as_ref().filter(|_| !done[i]).map(Range::len);
        let mut cut = [0, 1].map(|i| len(i).is_some_and(|n| n > own_max[i]));
        if cut == [false, false] {
            if bytes <= max {
                return Ok(false);
            }
            if self.limits.oversize == OversizeBehavior::Truncate {
                cut = [0, 1].map(|i| len(i).is_some());
            }
            if cut == [false, false] {
                return Err(DeadLetter {
                    class: DeadLetterClass::Oversize,
                    reason: format!("event is {bytes} bytes (canonical JSON), over limits.max_event_bytes = {max}"),
                });
            }
        }
        let Some(obj) = value.as_object_mut() else { unreachable!("an event is an object") };
        for (i, span) in spans.iter().enumerate() {
            if let (true, Some(span)) = (cut[i], span) {
                obj.insert(PAYLOADS[i].into(), truncation_marker(&canonical[span.clone()]));
            }
        }
        limits.metadata_truncated |= cut[0];
        limits.diff_truncated |= cut[1];
        obj.insert("limits".into(), serde_json::to_value(*limits).unwrap_or_default());
        Ok(true)
    }

    /// The quarantine entry for a dead letter, chained in its place.
    fn quarantine(
        &self,
        raw: &RawRecord<'_>,
        received_at: Option<Timestamp>,
        dead_letter: DeadLetter,
        head: &mut ChainHead,
    ) -> Processed {
        let received_at = received_at.unwrap_or(EPOCH);
        let payload = raw.payload.unwrap_or_default();
        let tenant_id = raw
            .key
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty() && k.chars().count() <= 256 && first_hidden_character(k).is_none())
            .map(str::to_owned);
        let metadata = json!({
            "deadLetter": {"topic": self.dead_letter_topic, "class": dead_letter.class.as_str()},
            "rawSha256": hex::encode(Sha256::digest(payload)),
            "rawBytes": payload.len(),
        });
        let mut event = AuditEvent {
            schema_version: SCHEMA_VERSION,
            event_id: derived_event_id(raw),
            action: QUARANTINE_ACTION.into(),
            outcome: Outcome::Error,
            actor: Actor::new("system", "audit-processor"),
            target: None,
            context: Context { tenant_id, occurred_at: Some(received_at), ..Context::default() },
            metadata: metadata.as_object().cloned(),
            diff: None,
            retention_tag: None,
            received_at,
            producer: None,
            redaction: Redaction { policy: self.policy.version().to_owned(), paths: Vec::new() },
            limits: Limits::default(),
            warnings: Vec::new(),
            integrity: head.next_integrity(source(raw)),
        };
        // Built from fixed, valid parts: hashing and encoding cannot fail.
        let _ = seal(&mut event);
        let value = serde_json::to_value(&event).unwrap_or_default();
        let encoded = codec::encode_event_value(&value, self.format).unwrap_or_default();
        head.advance(&event.integrity);
        Processed {
            value,
            encoded,
            event_id: event.event_id,
            limits: event.limits,
            dead_letter: Some(dead_letter),
            redactions: RedactionReport::default(),
        }
    }
}

/// For records without any time at all.
const EPOCH: Timestamp = Timestamp::EPOCH;

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

fn source(raw: &RawRecord<'_>) -> SourceRef {
    SourceRef { topic: raw.topic.to_owned(), partition: raw.partition, offset: raw.offset }
}

/// A ULID derived from the raw record's position: its broker timestamp and the SHA-256 of
/// `topic/partition/offset`. Replays give the same id.
pub fn derived_event_id(raw: &RawRecord<'_>) -> String {
    let digest = Sha256::digest(format!("{}/{}/{}", raw.topic, raw.partition, raw.offset).as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ts = raw.timestamp_ms.unwrap_or(0).max(0) as u64;
    ulid::Ulid::from_parts(ts, u128::from_be_bytes(random)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessorConfig;
    use audit_schema::chain::{chain_name, verify_chain};

    fn pipeline(edit: impl FnOnce(&mut ProcessorConfig)) -> Pipeline {
        let mut c = ProcessorConfig::default();
        edit(&mut c);
        Pipeline::new(&c.validate().unwrap())
    }

    fn raw<'a>(offset: i64, payload: &'a [u8]) -> RawRecord<'a> {
        RawRecord {
            topic: "audit.raw",
            partition: 2,
            offset,
            timestamp_ms: Some(1_790_000_000_000 + offset),
            key: Some(b"tenant-a"),
            payload: Some(payload),
        }
    }

    fn head() -> ChainHead {
        ChainHead::genesis(chain_name("audit.raw", 2))
    }

    fn input(extra: Value) -> Vec<u8> {
        let mut v = json!({"action": "user.login", "outcome": "SUCCESS", "actor": {"type": "user", "id": "u-1"}, "context": {"tenantId": "tenant-a"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn processing_the_same_range_twice_gives_byte_identical_events() {
        let p = pipeline(|_| {});
        let payloads: Vec<Vec<u8>> =
            (0..20)
                .map(|i| {
                    if i % 7 == 3 {
                        b"not json".to_vec()
                    } else {
                        input(json!({"metadata": {"i": i, "password": "p"}}))
                    }
                })
                .collect();
        let run = || {
            let mut h = head();
            payloads
                .iter()
                .enumerate()
                .map(|(i, b)| p.process(&raw(100 + i as i64, b), &mut h).encoded)
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        // Every output is a valid processed event, and the chain it forms verifies.
        let events: Vec<AuditEvent> = first
            .iter()
            .map(|b| codec::decode_event(b, ValidationOptions::STRICT).expect("the processed contract").event)
            .collect();
        assert!(verify_chain(&events).unwrap().is_intact());
    }

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
    fn each_dead_letter_class_leaves_a_quarantine_entry_in_the_chain() {
        let p = pipeline(|c| {
            c.limits.max_event_bytes = 2048;
            c.limits.max_metadata_bytes = 1024;
            c.limits.max_diff_bytes = 1024;
        });
        let huge = input(
            json!({"target": {"type": "doc", "id": "x".repeat(200)}, "actor": {"type": "user", "id": "u", "roles": vec!["r".repeat(200); 12]}}),
        );
        let cases: Vec<(Option<&[u8]>, DeadLetterClass)> = vec![
            (None, DeadLetterClass::Empty),
            (Some(b"\xff\xfe"), DeadLetterClass::Decode),
            (Some(b"{\"action\": "), DeadLetterClass::Decode),
            (Some(b"[1,2]"), DeadLetterClass::Invalid),
            (Some(br#"{"action":"a","outcome":"OK","actor":{"type":"u","id":"1"}}"#), DeadLetterClass::Invalid),
            (Some(&huge), DeadLetterClass::Oversize),
        ];
        let mut h = head();
        let mut events = Vec::new();
        for (i, (payload, class)) in cases.into_iter().enumerate() {
            let mut r = raw(i as i64, b"");
            r.payload = payload;
            let out = p.process(&r, &mut h);
            let dl = out.dead_letter.clone().expect("dead-lettered");
            assert_eq!(dl.class, class, "case {i}: {}", dl.reason);
            assert_eq!(out.event().action, QUARANTINE_ACTION);
            assert_eq!(out.event().metadata.as_ref().unwrap()["deadLetter"]["class"], class.as_str());
            let sha = hex::encode(Sha256::digest(payload.unwrap_or_default()));
            assert_eq!(out.event().metadata.as_ref().unwrap()["rawSha256"], sha.as_str());
            assert!(!serde_json::to_string(&out.event()).unwrap().contains("\"OK\""), "no content in the chain");
            events.push(out.event());
        }
        assert!(verify_chain(&events).unwrap().is_intact());
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
    fn metadata_and_diff_over_their_limits_become_truncation_markers() {
        let p = pipeline(|c| {
            c.limits.max_metadata_bytes = 100;
            c.limits.max_diff_bytes = 100;
        });
        let big = "z".repeat(500);
        let out = p.process(
            &raw(1, &input(json!({"metadata": {"blob": big}, "diff": {"before": {"a": 1}, "after": {"a": big}}}))),
            &mut head(),
        );
        let e = &out.event();
        assert!(e.limits.metadata_truncated && e.limits.diff_truncated);
        let marker = e.metadata.as_ref().unwrap();
        assert_eq!(marker["truncated"], true);
        assert_eq!(marker["originalBytes"], 511, "canonical size of {{\"blob\":\"z…\"}}");
        assert_eq!(marker["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(e.diff.as_ref().unwrap()["truncated"], true);
    }

    /// Events of at most 2 KiB, oversized ones truncated; metadata up to `max_metadata_bytes`.
    fn truncating(max_metadata_bytes: usize) -> Pipeline {
        pipeline(|c| {
            c.limits.max_event_bytes = 2048;
            c.limits.max_metadata_bytes = max_metadata_bytes;
            c.limits.max_diff_bytes = 1024;
            c.limits.oversize = OversizeBehavior::Truncate;
        })
    }

    #[test]
    fn oversize_events_are_truncated_when_configured() {
        let p = truncating(2048);
        let meta = (0..40).map(|i| (format!("k{i}"), json!("v".repeat(40)))).collect::<Map<_, _>>();
        let out = p.process(&raw(1, &input(json!({"metadata": meta}))), &mut head());
        assert!(out.dead_letter.is_none());
        assert!(out.event().limits.metadata_truncated);
    }

    #[test]
    fn the_event_limit_is_measured_after_payloads_over_their_own_limits_are_truncated() {
        // metadata breaks its own limit; once it is a marker the event fits, so diff stays whole.
        let p = truncating(1024);
        let payloads = json!({"metadata": {"blob": "m".repeat(1500)}, "diff": {"after": {"a": "d".repeat(600)}}});
        let out = p.process(&raw(1, &input(payloads)), &mut head());
        assert!(out.dead_letter.is_none());
        let e = out.event();
        assert!(e.limits.metadata_truncated && !e.limits.diff_truncated, "{:?}", e.limits);
        assert_eq!(e.diff.as_ref().unwrap()["after"]["a"], "d".repeat(600));
        // The Avro record carries exactly what was hashed, markers included.
        assert_eq!(codec::event_value(&out.encoded).unwrap(), out.value);
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
    fn a_quarantine_entry_takes_its_tenant_from_a_record_key_only_when_the_key_is_clean() {
        let p = pipeline(|_| {});
        for (key, tenant) in [(&b"Z\xC3\xBCrich"[..], Some("Zürich")), (b"acme\xE2\x80\xAE", None), (b"a\x00b", None)]
        {
            let mut r = raw(1, b"not json");
            r.key = Some(key);
            assert_eq!(p.process(&r, &mut head()).event().context.tenant_id.as_deref(), tenant);
        }
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
    fn what_a_sink_decodes_hashes_to_the_recorded_hash_even_for_numbers_near_the_double_limits() {
        let payload = br#"{"action":"a.b","outcome":"SUCCESS","actor":{"type":"u","id":"x"},"metadata":{"two60":1152921504606846976,"f":1.2345678901234567e18,"big":1e300,"x":0.1}}"#;
        for encoding in [OutputEncoding::Avro, OutputEncoding::Json] {
            let p = pipeline(|c| c.processing.output_encoding = encoding);
            let out = p.process(&raw(1, payload), &mut head());
            assert!(out.dead_letter.is_none(), "{:?}", out.dead_letter);
            // What every sink and verifier does: decode the published bytes, hash the event.
            let decoded = codec::event_value(&out.encoded).unwrap();
            let recorded = decoded["integrity"]["hash"].as_str().unwrap().to_owned();
            assert_eq!(audit_schema::chain::hash_event_value(&decoded).unwrap(), recorded, "{encoding:?}");
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
