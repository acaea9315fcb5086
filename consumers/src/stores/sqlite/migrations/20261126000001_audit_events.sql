-- Processed audit events (SQLite, for single-machine and local use): the queryable columns and the
-- event itself as JSON text. Times are RFC 3339 UTC text, which sorts chronologically.
CREATE TABLE IF NOT EXISTS audit_events (
    event_id        TEXT    PRIMARY KEY,
    tenant_id       TEXT,
    action          TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    actor_type      TEXT    NOT NULL,
    actor_id        TEXT    NOT NULL,
    target_type     TEXT,
    target_id       TEXT,
    occurred_at     TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    chain           TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    stored_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS audit_events_tenant_time ON audit_events (tenant_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor_type, actor_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_target ON audit_events (target_type, target_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_action ON audit_events (action, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_chain ON audit_events (chain, seq);

CREATE TABLE IF NOT EXISTS audit_event_conflicts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    stored_hash     TEXT    NOT NULL,
    incoming_hash   TEXT    NOT NULL,
    incoming_event  TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    detected_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS audit_event_conflicts_event ON audit_event_conflicts (event_id);
