//! Fully populated example events, written as struct literals so the compiler makes every new field
//! appear here, and a small chain builder.
#![allow(dead_code, unreachable_pub)]

use audit_schema::chain::{chain_name, seal, ChainHead};
use audit_schema::*;
use serde_json::json;

/// An input event with every field set.
pub fn full_input() -> AuditEventInput {
    AuditEventInput {
        schema_version: Some(1),
        event_id: Some("01JD3Z5Q7X8Y9ABCDEFGHJKMNP".into()),
        action: "billing.invoice.update".into(),
        outcome: Outcome::Success,
        actor: Actor { kind: "user".into(), id: "u-42".into(), name: Some("Ada".into()), roles: Some(vec!["admin".into(), "billing".into()]) },
        target: Some(Target { kind: "invoice".into(), id: "inv-456".into(), name: Some("Invoice 456".into()) }),
        context: Context {
            tenant_id: Some("tenant-a".into()),
            request_id: Some("req-789".into()),
            session_id: Some("sess-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            span_id: Some("00f067aa0ba902b7".into()),
            ip: Some("2001:db8::1".into()),
            user_agent: Some("Mozilla/5.0".into()),
            occurred_at: Some("2026-11-26T10:00:00.123Z".parse().unwrap()),
            service: Some("billing-api".into()),
            environment: Some("production".into()),
        },
        metadata: Some(json!({"reason": "customer request", "amount": 1250.5, "lines": [1, 2, 3], "nested": {"ok": true, "none": null}}).as_object().unwrap().clone()),
        diff: Some(Diff { before: Some(json!({"status": "draft", "total": 100})), after: Some(json!({"status": "sent", "total": 120})) }),
        retention_tag: Some("sox-7y".into()),
        producer: Some(ProducerInfo { id: "billing-api-7f9c".into(), seq: 17 }),
    }
}

/// A processed event with every field set, sealed as the first event of its chain.
pub fn full_event() -> AuditEvent {
    let input = full_input();
    let mut event = AuditEvent {
        schema_version: SCHEMA_VERSION,
        event_id: input.event_id.clone().unwrap(),
        action: input.action,
        outcome: input.outcome,
        actor: input.actor,
        target: input.target,
        context: input.context,
        metadata: input.metadata,
        diff: Some(serde_json::to_value(input.diff.unwrap()).unwrap().as_object().unwrap().clone()),
        retention_tag: input.retention_tag,
        received_at: "2026-11-26T10:00:00.200Z".parse().unwrap(),
        producer: input.producer,
        redaction: Redaction { policy: "3f2a9c".into(), paths: vec!["metadata.headers.authorization".into()] },
        limits: Limits { metadata_truncated: false, diff_truncated: true },
        warnings: vec!["context.userAgent: contained NUL characters, replaced".into()],
        integrity: ChainHead::genesis(chain_name("audit.raw", 3)).next_integrity(SourceRef {
            topic: "audit.raw".into(),
            partition: 3,
            offset: 41,
        }),
    };
    seal(&mut event).unwrap();
    event
}

/// A minimal processed event for chain tests.
pub fn event(n: u64) -> AuditEvent {
    AuditEvent {
        schema_version: SCHEMA_VERSION,
        event_id: format!("evt-{n:04}"),
        action: if n.is_multiple_of(3) { "user.login".into() } else { "billing.invoice.update".into() },
        outcome: if n.is_multiple_of(5) { Outcome::Denied } else { Outcome::Success },
        actor: Actor::new("user", format!("u-{}", n % 7)),
        target: Some(Target::new("invoice", format!("inv-{n}"))),
        context: Context {
            tenant_id: Some(format!("tenant-{}", n % 2)),
            occurred_at: Timestamp::from_millis(1_790_000_000_000 + n as i64 * 1000),
            ..Context::default()
        },
        metadata: Some(json!({"n": n}).as_object().unwrap().clone()),
        diff: None,
        retention_tag: None,
        received_at: Timestamp::from_millis(1_790_000_000_500 + n as i64 * 1000).unwrap(),
        producer: None,
        redaction: Redaction { policy: "p1".into(), paths: vec![] },
        limits: Limits::default(),
        warnings: vec![],
        integrity: ChainHead::genesis("x").next_integrity(SourceRef {
            topic: "audit.raw".into(),
            partition: 0,
            offset: 0,
        }),
    }
}

/// `len` events chained from genesis on chain `audit.raw/0`, raw offsets 100, 101, ...
pub fn chain(len: u64) -> Vec<AuditEvent> {
    let mut head = ChainHead::genesis(chain_name("audit.raw", 0));
    (1..=len)
        .map(|n| {
            let mut e = event(n);
            e.integrity =
                head.next_integrity(SourceRef { topic: "audit.raw".into(), partition: 0, offset: 99 + n as i64 });
            seal(&mut e).unwrap();
            head.advance(&e.integrity);
            e
        })
        .collect()
}
