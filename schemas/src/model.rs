//! Rust types of the event contract.
//!
//! Field names and optionality mirror `audit-event.input.schema.json` and `audit-event.schema.json`
//! exactly; the drift test in `tests/drift.rs` fails when they part ways. `None` is never serialized, so
//! an absent field and the JSON text that produced it hash the same way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Timestamp;

/// Version of the contract this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The action was attempted and failed for a business reason (wrong password, invalid state).
    Failure,
    /// The action was refused by an authorization decision.
    Denied,
    /// The action failed for a technical reason.
    Error,
}

impl Outcome {
    /// The wire name (`SUCCESS`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Failure => "FAILURE",
            Outcome::Denied => "DENIED",
            Outcome::Error => "ERROR",
        }
    }
}

/// Who performed the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// Kind of actor: `user`, `service`, `system`, `api_key`...
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable identifier of the actor.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Roles the actor held when acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

impl Actor {
    /// An actor of `kind` with `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Actor { kind: kind.into(), id: id.into(), name: None, roles: None }
    }
}

/// The thing acted upon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Kind of entity: `invoice`, `user`, `document`...
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier of the entity.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Target {
    /// A target of `kind` with `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Target { kind: kind.into(), id: id.into(), name: None }
    }
}

/// Where and when it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// Tenant the event belongs to; the Kafka key, so one tenant's events keep their order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Request correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Session id (never the session secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// W3C trace id, 32 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// W3C span id, 16 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Client IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Client user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// When the action happened, as seen by the producer. Always present on processed events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    /// Service that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Deployment environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl Context {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Context::default()
    }

    /// Fills every field that is `None` here from `defaults`.
    pub fn merge_defaults(&mut self, defaults: &Context) {
        fn fill<T: Clone>(slot: &mut Option<T>, default: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(default);
            }
        }
        fill(&mut self.tenant_id, &defaults.tenant_id);
        fill(&mut self.request_id, &defaults.request_id);
        fill(&mut self.session_id, &defaults.session_id);
        fill(&mut self.trace_id, &defaults.trace_id);
        fill(&mut self.span_id, &defaults.span_id);
        fill(&mut self.ip, &defaults.ip);
        fill(&mut self.user_agent, &defaults.user_agent);
        fill(&mut self.occurred_at, &defaults.occurred_at);
        fill(&mut self.service, &defaults.service);
        fill(&mut self.environment, &defaults.environment);
    }
}

/// Before and after state of an update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// State before the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// State after the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Which producer instance sent the event and its per-instance sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerInfo {
    /// Stable producer instance id.
    pub id: String,
    /// Monotonic per-instance sequence, starting at 1; a gap means an event went missing upstream.
    pub seq: u64,
}

/// What an application publishes: `audit-event.input.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventInput {
    /// Contract version the producer wrote against; absent means current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Stable id for deduplication; the producer library fills a ULID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Low-cardinality action name, e.g. `user.login`.
    pub action: String,
    /// How the action ended.
    pub outcome: Outcome,
    /// Who did it.
    pub actor: Actor,
    /// What it was done to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Where and when.
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub context: Context,
    /// Extra structured fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Before/after state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// Storage retention hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_tag: Option<String>,
    /// Producer instance and sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerInfo>,
}

impl AuditEventInput {
    /// A minimal event: `action` done by `actor` with `outcome`.
    pub fn new(action: impl Into<String>, outcome: Outcome, actor: Actor) -> Self {
        AuditEventInput {
            schema_version: None,
            event_id: None,
            action: action.into(),
            outcome,
            actor,
            target: None,
            context: Context::default(),
            metadata: None,
            diff: None,
            retention_tag: None,
            producer: None,
        }
    }
}

/// What the processor recorded about redaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// Version hash of the policy that was applied.
    pub policy: String,
    /// Dot paths of redacted values, in document order.
    pub paths: Vec<String>,
}

/// Whether payload limits truncated parts of the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// `metadata` was replaced by a truncation marker.
    pub metadata_truncated: bool,
    /// `diff` was replaced by a truncation marker.
    pub diff_truncated: bool,
}

/// The raw record an event was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceRef {
    /// Raw topic.
    pub topic: String,
    /// Raw partition.
    pub partition: i32,
    /// Raw offset.
    pub offset: i64,
}

/// Position of an event in its hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Integrity {
    /// Hash algorithm, always `sha256` in this version.
    pub alg: String,
    /// Chain name, `<raw topic>/<raw partition>`.
    pub chain: String,
    /// Position in the chain, starting at 1.
    pub seq: u64,
    /// Hash of the previous event, or [`crate::chain::GENESIS_PREV_HASH`] for seq 1.
    pub prev_hash: String,
    /// SHA-256 (lowercase hex) of this event's canonical form without `integrity.hash`.
    pub hash: String,
    /// Raw record this event was made from.
    pub source: SourceRef,
}

/// A processed event: `audit-event.schema.json` / `audit-event.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Contract version.
    pub schema_version: u32,
    /// Stable id (ULID unless the producer chose its own).
    pub event_id: String,
    /// Low-cardinality action name.
    pub action: String,
    /// How the action ended.
    pub outcome: Outcome,
    /// Who did it.
    pub actor: Actor,
    /// What it was done to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Where and when; `occurredAt` is always set.
    pub context: Context,
    /// Extra structured fields after redaction, or a truncation marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Before/after state after redaction, or a truncation marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Map<String, Value>>,
    /// Storage retention hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_tag: Option<String>,
    /// Broker timestamp of the raw record.
    pub received_at: Timestamp,
    /// Producer instance and sequence, when the producer sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerInfo>,
    /// What was redacted.
    pub redaction: Redaction,
    /// What was truncated.
    pub limits: Limits,
    /// Problems tolerated in lenient mode.
    pub warnings: Vec<String>,
    /// Hash chain position.
    pub integrity: Integrity,
}
