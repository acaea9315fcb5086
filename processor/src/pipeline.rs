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
//!
//! Layout: this module holds the record and result types, the order of the steps, sealing and
//! encoding, and the quarantine entry; `input.rs` makes the event (decode to redact) and
//! `limits.rs` applies the size limits.

mod input;
mod limits;

use audit_schema::avro;
use audit_schema::chain::{seal, seal_canonical_spans, ChainHead};
use audit_schema::codec::{self, WireFormat};
use audit_schema::Integrity;
use audit_schema::{
    Actor, AuditEvent, Context, Limits, Outcome, Redaction, SourceRef, Timestamp, ValidationOptions, SCHEMA_VERSION,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{LimitsConfig, OutputEncoding};
use crate::redact::{RedactionPolicy, RedactionReport};
use crate::sanitize::first_hidden_character;
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

/// The free-form payloads, each with its own size limit (and, in Avro, carried as JSON text).
const PAYLOADS: [&str; 2] = ["metadata", "diff"];

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

    pub(super) fn pipeline(edit: impl FnOnce(&mut ProcessorConfig)) -> Pipeline {
        let mut c = ProcessorConfig::default();
        edit(&mut c);
        Pipeline::new(&c.validate().unwrap())
    }

    pub(super) fn raw<'a>(offset: i64, payload: &'a [u8]) -> RawRecord<'a> {
        RawRecord {
            topic: "audit.raw",
            partition: 2,
            offset,
            timestamp_ms: Some(1_790_000_000_000 + offset),
            key: Some(b"tenant-a"),
            payload: Some(payload),
        }
    }

    pub(super) fn head() -> ChainHead {
        ChainHead::genesis(chain_name("audit.raw", 2))
    }

    pub(super) fn input(extra: Value) -> Vec<u8> {
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
}
