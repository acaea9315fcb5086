//! What the SQL sinks (PostgreSQL, SQLite) store of an event: the queryable columns, read once from
//! the event and borrowed from it, so a batch is bound without copying its events.

use serde_json::Value;

use crate::sink::{SinkError, SinkRecord};

/// One `audit_events` row, borrowed from its [`SinkRecord`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) action: &'a str,
    pub(crate) outcome: &'a str,
    pub(crate) actor_type: &'a str,
    pub(crate) actor_id: &'a str,
    pub(crate) target_type: Option<&'a str>,
    pub(crate) target_id: Option<&'a str>,
    /// RFC 3339, as in the event.
    pub(crate) occurred_at: &'a str,
    /// RFC 3339, as in the event.
    pub(crate) received_at: &'a str,
    pub(crate) chain: &'a str,
    pub(crate) seq: i64,
    pub(crate) prev_hash: &'a str,
    pub(crate) hash: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The event's canonical text ([`SinkRecord::json`]): stored as it is, the bytes that are hashed.
    pub(crate) event: &'a str,
}

impl<'a> EventRow<'a> {
    /// The row of `r`; an event missing a required column is poison (it can never be stored).
    pub(crate) fn of(r: &'a SinkRecord) -> Result<EventRow<'a>, SinkError> {
        let e = &r.event;
        // Plain lookups: `Value::pointer` allocates while unescaping every token.
        let field = |path: &[&str]| path.iter().try_fold(e, |v, key| v.get(key));
        let text = |path: &[&str]| field(path).and_then(Value::as_str);
        let need = |path: &[&str]| {
            text(path).ok_or_else(|| SinkError::poison(format!("event {} has no {}", r.event_id, path.join("."))))
        };
        Ok(EventRow {
            event_id: &r.event_id,
            tenant_id: text(&["context", "tenantId"]),
            action: need(&["action"])?,
            outcome: need(&["outcome"])?,
            actor_type: need(&["actor", "type"])?,
            actor_id: need(&["actor", "id"])?,
            target_type: text(&["target", "type"]),
            target_id: text(&["target", "id"]),
            occurred_at: need(&["context", "occurredAt"])?,
            received_at: need(&["receivedAt"])?,
            chain: need(&["integrity", "chain"])?,
            seq: field(&["integrity", "seq"])
                .and_then(Value::as_i64)
                .ok_or_else(|| SinkError::poison(format!("event {} has no integrity.seq", r.event_id)))?,
            prev_hash: need(&["integrity", "prevHash"])?,
            hash: &r.hash,
            partition: r.partition,
            offset: r.offset,
            event: &r.json,
        })
    }
}
