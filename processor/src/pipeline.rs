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

use audit_schema::chain::{seal, ChainHead};
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

fn canonical_len_and_hash(v: &Value) -> (usize, String) {
    let bytes = audit_schema::canonical::canonicalize(v).unwrap_or_else(|_| v.to_string().into_bytes());
    (bytes.len(), hex::encode(Sha256::digest(&bytes)))
}

fn truncation_marker(original: &Value) -> Map<String, Value> {
    let (bytes, sha256) = canonical_len_and_hash(original);
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
        if let Err(e) = seal(&mut event) {
            let dl = DeadLetter { class: DeadLetterClass::Internal, reason: format!("cannot hash the event: {e}") };
            return self.quarantine(raw, received_at, dl, head);
        }
        match codec::encode_event(&event, self.format) {
            Ok(encoded) => {
                head.advance(&event.integrity);
                Processed { event, encoded, dead_letter: None, redactions }
            }
            Err(e) => {
                let dl =
                    DeadLetter { class: DeadLetterClass::Internal, reason: format!("cannot encode the event: {e}") };
                self.quarantine(raw, received_at, dl, head)
            }
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
            if canonical_len_and_hash(m).0 > self.limits.max_metadata_bytes {
                *m = Value::Object(truncation_marker(m));
                limits.metadata_truncated = true;
            }
        }
        if let Some(d) = diff.as_mut() {
            if canonical_len_and_hash(d).0 > self.limits.max_diff_bytes {
                *d = Value::Object(truncation_marker(d));
                limits.diff_truncated = true;
            }
        }
        event.metadata = metadata.and_then(|m| m.as_object().cloned());
        event.diff = diff.and_then(|d| d.as_object().cloned());
        event.limits = limits;
        event.redaction = Redaction { policy: self.policy.version().to_owned(), paths: redactions.paths.clone() };
        event.warnings = warnings;
        self.enforce_event_limit(&mut event)?;
        Ok((event, redactions))
    }

    fn validate(&self, mut value: Value, warnings: &mut Vec<String>) -> Result<AuditEventInput, DeadLetter> {
        for _ in 0..8 {
            match codec::input_from_value(value.clone(), self.validation) {
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

    fn enforce_event_limit(&self, event: &mut AuditEvent) -> Result<(), DeadLetter> {
        let size = |e: &AuditEvent| serde_json::to_vec(e).map(|v| v.len()).unwrap_or(usize::MAX);
        let max = self.limits.max_event_bytes;
        let bytes = size(event);
        if bytes <= max {
            return Ok(());
        }
        if self.limits.oversize == OversizeBehavior::Truncate {
            if let Some(m) = event.metadata.as_mut().filter(|_| !event.limits.metadata_truncated) {
                *m = truncation_marker(&Value::Object(m.clone()));
                event.limits.metadata_truncated = true;
            }
            if let Some(d) = event.diff.as_mut().filter(|_| !event.limits.diff_truncated) {
                *d = truncation_marker(&Value::Object(d.clone()));
                event.limits.diff_truncated = true;
            }
            if size(event) <= max {
                return Ok(());
            }
        }
        Err(DeadLetter {
            class: DeadLetterClass::Oversize,
            reason: format!("event is {bytes} bytes, over limits.max_event_bytes = {max}"),
        })
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
