-- Processed audit events: the queryable columns, and the event itself exactly as published.
CREATE TABLE IF NOT EXISTS audit_events (
    event_id        text        PRIMARY KEY,
    tenant_id       text,
    action          text        NOT NULL,
    outcome         text        NOT NULL,
    actor_type      text        NOT NULL,
    actor_id        text        NOT NULL,
    target_type     text,
    target_id       text,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    chain           text        NOT NULL,
    seq             bigint      NOT NULL,
    prev_hash       text        NOT NULL,
    hash            text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event           jsonb       NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);

-- The common audit questions: a tenant's activity over time, what an actor did, what happened to a
-- target, every occurrence of an action, and a chain in order (verification).
CREATE INDEX IF NOT EXISTS audit_events_tenant_time ON audit_events (tenant_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor_type, actor_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_target ON audit_events (target_type, target_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_action ON audit_events (action, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_chain ON audit_events (chain, seq);

-- An event id that arrived again with different content: never silently ignored, kept for review.
CREATE TABLE IF NOT EXISTS audit_event_conflicts (
    id              bigserial   PRIMARY KEY,
    event_id        text        NOT NULL,
    stored_hash     text        NOT NULL,
    incoming_hash   text        NOT NULL,
    incoming_event  jsonb       NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_event_conflicts_event ON audit_event_conflicts (event_id);
