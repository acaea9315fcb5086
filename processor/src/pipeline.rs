//! The per-record pipeline, a pure function of (raw record, chain head, policy):
//! decode → sanitize → validate → normalize → redact → limit → chain → encode.
//!
//! No clock, no randomness: `eventId` (when the producer sent none) is derived from the raw
//! record's (topic, partition, offset), `receivedAt` is its broker timestamp, so processing the same
//! raw range twice with the same policy gives byte-identical processed events.
//!
//! A record that can never be processed becomes a dead letter plus a quarantine entry that takes its
//! place in the chain (action `audit.quarantined`, the dead-letter reference and the SHA-256 of the
//! raw bytes, no content); the lane goes on.

use audit_schema::chain::{hash_event_value_with, seal, ChainHead};
use audit_schema::codec::{self, WireFormat};
use audit_schema::{
    Actor, AuditEvent, AuditEventInput, Context, FieldError, Limits, Outcome, Redaction, SourceRef, Timestamp,
    ValidationOptions, SCHEMA_VERSION,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{LimitsConfig, OutputEncoding, OversizeBehavior, Settings};
use crate::redact::{RedactionPolicy, RedactionReport};
use crate::sanitize::sanitize_event;

/// Action of a quarantine entry.
pub const QUARANTINE_ACTION: &str = "audit.quarantined";

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
            DeadLetterClass::Empty => "empty",
            DeadLetterClass::Decode => "decode",
            DeadLetterClass::Invalid => "invalid",
            DeadLetterClass::Oversize => "oversize",
            DeadLetterClass::Internal => "internal",
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

/// What the pipeline made of a raw record. Either way, `event` is the next link of the chain.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The processed event, or the quarantine entry standing in for a dead letter.
    pub event: AuditEvent,
    /// `event` encoded for the processed topic.
    pub encoded: Vec<u8>,
    /// Set when the record goes to the dead-letter topic.
    pub dead_letter: Option<DeadLetter>,
    /// What redaction did.
    pub redactions: RedactionReport,
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

fn canonical_bytes(v: &Value) -> Vec<u8> {
    audit_schema::canonical::canonicalize(v).unwrap_or_else(|_| v.to_string().into_bytes())
}

fn truncation_marker(original: &Value) -> Map<String, Value> {
    let canonical = canonical_bytes(original);
    let (bytes, sha256) = (canonical.len(), hex::encode(Sha256::digest(&canonical)));
    let mut m = Map::new();
    m.insert("truncated".into(), Value::Bool(true));
    m.insert("originalBytes".into(), Value::from(bytes));
    m.insert("sha256".into(), Value::String(sha256));
    m
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
        let (event, redactions) = match self.build(raw, received_at) {
            Ok(built) => built,
            Err(dead_letter) => return self.quarantine(raw, received_at, dead_letter, head),
        };
        self.seal_and_encode(raw, received_at, event, redactions, head)
    }

    fn seal_and_encode(
        &self,
        raw: &RawRecord<'_>,
        received_at: Option<Timestamp>,
        mut event: AuditEvent,
        redactions: RedactionReport,
        head: &mut ChainHead,
    ) -> Processed {
        event.integrity = head.next_integrity(source(raw));
        let internal = |reason: String| DeadLetter { class: DeadLetterClass::Internal, reason };
        // One JSON value serves the size limit, the hash and the encoding.
        let mut buf = Vec::with_capacity(2048);
        let (mut value, hash) = loop {
            let value = match serde_json::to_value(&event) {
                Ok(v) => v,
                Err(e) => return self.quarantine(raw, received_at, internal(format!("cannot serialize the event: {e}")), head),
            };
            let hash = match hash_event_value_with(&value, &mut buf) {
                Ok(h) => h,
                Err(e) => return self.quarantine(raw, received_at, internal(format!("cannot hash the event: {e}")), head),
            };
            match self.check_event_limit(&mut event, buf.len()) {
                Ok(false) => break (value, hash),
                Ok(true) => continue, // payloads were truncated: measure again
                Err(dead_letter) => return self.quarantine(raw, received_at, dead_letter, head),
            }
        };
        if let Some(integrity) = value.get_mut("integrity").and_then(Value::as_object_mut) {
            integrity.insert("hash".into(), Value::String(hash.clone()));
        }
        event.integrity.hash = hash;
        match codec::encode_event_value(&value, self.format) {
            Ok(encoded) => {
                head.advance(&event.integrity);
                Processed { event, encoded, dead_letter: None, redactions }
            }
            Err(e) => self.quarantine(raw, received_at, internal(format!("cannot encode the event: {e}")), head),
        }
    }

    fn build(
        &self,
        raw: &RawRecord<'_>,
        received_at: Option<Timestamp>,
    ) -> Result<(AuditEvent, RedactionReport), DeadLetter> {
        let payload = match raw.payload {
            Some(p) if !p.is_empty() => p,
            _ => return Err(DeadLetter { class: DeadLetterClass::Empty, reason: "record has no payload".into() }),
        };
        let mut value = codec::input_value(payload)
            .map_err(|e| DeadLetter { class: DeadLetterClass::Decode, reason: e.to_string() })?;
        if !value.is_object() {
            return Err(DeadLetter {
                class: DeadLetterClass::Invalid,
                reason: "an audit event must be a JSON object".into(),
            });
        }
        let mut warnings = sanitize_event(&mut value, self.max_depth);
        let input = self.validate(value, &mut warnings)?;
        let (mut event, received_warning) = self.normalize(raw, input, received_at);
        warnings.extend(received_warning);

        let mut redactions = RedactionReport::default();
        let mut metadata = event.metadata.take().map(Value::Object);
        let mut diff = event.diff.take().map(Value::Object);
        if let Some(m) = metadata.as_mut() {
            self.policy.redact("metadata", m, &mut redactions);
        }
        if let Some(d) = diff.as_mut() {
            self.policy.redact("diff", d, &mut redactions);
        }
        let mut limits = Limits::default();
        if let Some(m) = metadata.as_mut() {
            if canonical_bytes(m).len() > self.limits.max_metadata_bytes {
                *m = Value::Object(truncation_marker(m));
                limits.metadata_truncated = true;
            }
        }
        if let Some(d) = diff.as_mut() {
            if canonical_bytes(d).len() > self.limits.max_diff_bytes {
                *d = Value::Object(truncation_marker(d));
                limits.diff_truncated = true;
            }
        }
        let into_map = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        event.metadata = metadata.and_then(into_map);
        event.diff = diff.and_then(into_map);
        event.limits = limits;
        event.redaction = Redaction { policy: self.policy.version().to_owned(), paths: redactions.paths.clone() };
        event.warnings = warnings;
        Ok((event, redactions))
    }

    fn validate(&self, mut value: Value, warnings: &mut Vec<String>) -> Result<AuditEventInput, DeadLetter> {
        for _ in 0..8 {
            match codec::input_from_ref(&value, self.validation) {
                Ok(decoded) => {
                    warnings.extend(decoded.warnings.iter().map(FieldError::to_string));
                    return Ok(decoded.event);
                }
                Err(e) if self.validation.strict || e.field_errors().is_empty() => {
                    return Err(DeadLetter { class: DeadLetterClass::Invalid, reason: e.to_string() });
                }
                Err(e) => {
                    let mut dropped_any = false;
                    for fe in e.field_errors() {
                        if let Some(removed) = drop_optional(&mut value, &fe.path) {
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

    fn normalize(
        &self,
        raw: &RawRecord<'_>,
        input: AuditEventInput,
        received_at: Option<Timestamp>,
    ) -> (AuditEvent, Vec<String>) {
        let mut warnings = Vec::new();
        let received_at = received_at.unwrap_or_else(|| {
            warnings.push("receivedAt: the raw record has no broker timestamp; using occurredAt".into());
            input.context.occurred_at.unwrap_or(Timestamp::from_millis(0).unwrap_or(Timestamp::now()))
        });
        let mut context = input.context;
        if context.occurred_at.is_none() {
            context.occurred_at = Some(received_at);
            warnings.push("context.occurredAt: missing; set to receivedAt".into());
        }
        let event = AuditEvent {
            schema_version: SCHEMA_VERSION,
            event_id: input.event_id.unwrap_or_else(|| derived_event_id(raw)),
            action: input.action,
            outcome: input.outcome,
            actor: input.actor,
            target: input.target,
            context,
            metadata: input.metadata,
            diff: input.diff.and_then(|d| serde_json::to_value(d).ok()).and_then(|v| v.as_object().cloned()),
            retention_tag: input.retention_tag,
            received_at,
            producer: input.producer,
            redaction: Redaction::default(),
            limits: Limits::default(),
            warnings: Vec::new(),
            integrity: ChainHead::genesis("").next_integrity(source(raw)),
        };
        (event, warnings)
    }

    /// Checks the event's canonical size against `limits.max_event_bytes`. `Ok(true)`: payloads
    /// were replaced by truncation markers and the event must be measured again.
    fn check_event_limit(&self, event: &mut AuditEvent, bytes: usize) -> Result<bool, DeadLetter> {
        let max = self.limits.max_event_bytes;
        if bytes <= max {
            return Ok(false);
        }
        let can_truncate = self.limits.oversize == OversizeBehavior::Truncate
            && ((event.metadata.is_some() && !event.limits.metadata_truncated)
                || (event.diff.is_some() && !event.limits.diff_truncated));
        if !can_truncate {
            return Err(DeadLetter {
                class: DeadLetterClass::Oversize,
                reason: format!("event is {bytes} bytes (canonical JSON), over limits.max_event_bytes = {max}"),
            });
        }
        if let Some(m) = event.metadata.as_mut().filter(|_| !event.limits.metadata_truncated) {
            *m = truncation_marker(&Value::Object(std::mem::take(m)));
            event.limits.metadata_truncated = true;
        }
        if let Some(d) = event.diff.as_mut().filter(|_| !event.limits.diff_truncated) {
            *d = truncation_marker(&Value::Object(std::mem::take(d)));
            event.limits.diff_truncated = true;
        }
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
        let received_at = received_at.unwrap_or(Timestamp::from_millis(0).unwrap_or(Timestamp::now()));
        let payload = raw.payload.unwrap_or_default();
        let tenant_id = raw
            .key
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty() && k.chars().count() <= 256 && !k.contains('\0'))
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
        let encoded = codec::encode_event(&event, self.format).unwrap_or_default();
        head.advance(&event.integrity);
        Processed { event, encoded, dead_letter: Some(dead_letter), redactions: RedactionReport::default() }
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
        RawRecord { topic: "audit.raw", partition: 2, offset, timestamp_ms: Some(1_790_000_000_000 + offset), key: Some(b"tenant-a"), payload: Some(payload) }
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
        let payloads: Vec<Vec<u8>> = (0..20)
            .map(|i| if i % 7 == 3 { b"not json".to_vec() } else { input(json!({"metadata": {"i": i, "password": "p"}})) })
            .collect();
        let run = || {
            let mut h = head();
            payloads.iter().enumerate().map(|(i, b)| p.process(&raw(100 + i as i64, b), &mut h).encoded).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn normalizes_ids_and_times_from_the_raw_record() {
        let p = pipeline(|_| {});
        let out = p.process(&raw(7, &input(json!({}))), &mut head());
        let e = &out.event;
        assert_eq!(e.event_id, derived_event_id(&raw(7, b"")), "derived from the position");
        assert_eq!(e.received_at.as_millis(), 1_790_000_000_007, "broker timestamp");
        assert_eq!(e.context.occurred_at, Some(e.received_at));
        assert!(e.warnings.iter().any(|w| w.starts_with("context.occurredAt")));
        assert_eq!((e.integrity.seq, e.integrity.source.offset), (1, 7));
        let kept = p.process(&raw(8, &input(json!({"eventId": "evt-from-producer"}))), &mut head());
        assert_eq!(kept.event.event_id, "evt-from-producer");
    }

    #[test]
    fn each_dead_letter_class_leaves_a_quarantine_entry_in_the_chain() {
        let p = pipeline(|c| {
            c.limits.max_event_bytes = 2048;
            c.limits.max_metadata_bytes = 1024;
            c.limits.max_diff_bytes = 1024;
        });
        let huge = input(json!({"target": {"type": "doc", "id": "x".repeat(200)}, "actor": {"type": "user", "id": "u", "roles": vec!["r".repeat(200); 12]}}));
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
            let dl = out.dead_letter.expect("dead-lettered");
            assert_eq!(dl.class, class, "case {i}: {}", dl.reason);
            assert_eq!(out.event.action, QUARANTINE_ACTION);
            assert_eq!(out.event.metadata.as_ref().unwrap()["deadLetter"]["class"], class.as_str());
            let sha = hex::encode(Sha256::digest(payload.unwrap_or_default()));
            assert_eq!(out.event.metadata.as_ref().unwrap()["rawSha256"], sha.as_str());
            assert!(!serde_json::to_string(&out.event).unwrap().contains("\"OK\""), "no content in the chain");
            events.push(out.event);
        }
        assert!(verify_chain(&events).unwrap().is_intact());
    }

    #[test]
    fn lenient_mode_drops_bad_optional_fields_with_warnings_and_strict_mode_refuses() {
        let bad = input(json!({"context": {"tenantId": "t", "ip": "300.1.1.1"}, "actor": {"type": "user", "id": "u", "email": "a@b"}}));
        let lenient = pipeline(|_| {}).process(&raw(1, &bad), &mut head());
        assert!(lenient.dead_letter.is_none());
        assert_eq!(lenient.event.context.ip, None);
        let w = lenient.event.warnings.join("\n");
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
        let out = p.process(&raw(1, &input(json!({"metadata": {"blob": big}, "diff": {"before": {"a": 1}, "after": {"a": big}}}))), &mut head());
        let e = &out.event;
        assert!(e.limits.metadata_truncated && e.limits.diff_truncated);
        let marker = e.metadata.as_ref().unwrap();
        assert_eq!(marker["truncated"], true);
        assert_eq!(marker["originalBytes"], 511, "canonical size of {{\"blob\":\"z…\"}}");
        assert_eq!(marker["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(e.diff.as_ref().unwrap()["truncated"], true);
    }

    #[test]
    fn oversize_events_are_truncated_when_configured() {
        let p = pipeline(|c| {
            c.limits.max_event_bytes = 2048;
            c.limits.max_metadata_bytes = 2048;
            c.limits.max_diff_bytes = 1024;
            c.limits.oversize = OversizeBehavior::Truncate;
        });
        let meta = (0..40).map(|i| (format!("k{i}"), json!("v".repeat(40)))).collect::<Map<_, _>>();
        let out = p.process(&raw(1, &input(json!({"metadata": meta}))), &mut head());
        assert!(out.dead_letter.is_none());
        assert!(out.event.limits.metadata_truncated);
    }

    #[test]
    fn redaction_is_recorded_with_the_policy_version() {
        let p = pipeline(|_| {});
        let out = p.process(&raw(1, &input(json!({"metadata": {"headers": {"Authorization": "Bearer abc.def.ghi"}}}))), &mut head());
        assert_eq!(out.event.metadata.as_ref().unwrap()["headers"]["Authorization"], "***");
        assert_eq!(out.event.redaction.paths, vec!["metadata.headers.Authorization"]);
        assert_eq!(out.event.redaction.policy, p.policy_version());
    }

    #[test]
    fn unsafe_values_are_sanitized_before_the_chain() {
        let p = pipeline(|_| {});
        let out = p.process(&raw(1, br#"{"action":"a.b","outcome":"SUCCESS","actor":{"type":"u","id":"x\u0000y"},"metadata":{"n":12345678901234567890,"$k":1}}"#), &mut head());
        assert!(out.dead_letter.is_none(), "{:?}", out.dead_letter);
        assert_eq!(out.event.actor.id, "x\u{FFFD}y");
        let m = out.event.metadata.as_ref().unwrap();
        assert_eq!(m["n"], "12345678901234567890");
        assert!(m.contains_key("＄k"));
    }

    #[test]
    fn avro_input_is_accepted() {
        let p = pipeline(|_| {});
        let input = AuditEventInput::new("user.logout", Outcome::Success, Actor::new("user", "u-2"));
        let bytes = codec::encode_input(&input, WireFormat::Avro).unwrap();
        let out = p.process(&raw(1, &bytes), &mut head());
        assert!(out.dead_letter.is_none());
        assert_eq!(out.event.action, "user.logout");
        assert_eq!(&out.encoded[..2], &[0xC3, 0x01], "processed events are Avro by default");
    }
}
