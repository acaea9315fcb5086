-- The stored event becomes text holding its RFC 8785 canonical form byte for byte (the bytes the
-- processor hashed, `SinkRecord::json`) instead of jsonb: the server no longer parses every event
-- on insert (the end-to-end bench's biggest CPU consumer per stored event, docs/PERFORMANCE.md),
-- and `auditctl verify` hashes the stored text as it stands, as for SQLite and JSONL.
--
-- Rows written before this migration cannot be given their canonical text here (SQL has no RFC
-- 8785), so they are converted with `event::text`, which is jsonb's output form, and each row
-- records which form its text is in: `event_form` = 'jsonb' (converted, and checked by verify as
-- jsonb's output of the canonical form, as before) or 'canonical' (checked byte for byte). The
-- CHECK keeps other values out; verify reports any other value, or a text not in the form its row
-- names, as `non_canonical`, so editing the form column alone is found like any other edit.
--
-- The column's default stays 'jsonb', and the sink names 'canonical' in every insert: a row whose
-- writer does not name a form is one written the old way. A sink of the previous version still
-- running during an upgrade (it inserts `ev::jsonb`, which PostgreSQL assigns to a text column as
-- jsonb's output) therefore writes rows that say 'jsonb' and verify, instead of jsonb text that
-- claims to be canonical.
--
-- Changing the column's type REWRITES THE TABLE ONCE (and its indexes), holding an ACCESS
-- EXCLUSIVE lock for the duration: sinks and readers wait; expect about as long as copying the
-- table. Text rows are compressed with lz4 as before (set again: the type change must not leave
-- the column on the default method). Adding `event_form` with a constant default alone would be
-- metadata-only; here it rides on the same rewrite.
--
-- The same for the conflicts kept for review (`incoming_event`, `incoming_event_form`).
--
-- Queries with JSON operators: the view `audit_events_json` exposes the event as jsonb
-- (`event::jsonb`, parsed when read). A row whose text was edited into something that is not JSON
-- makes a query of the view that reads its event fail; `auditctl verify` reads the table and
-- reports such a row instead. A later migration that changes a column the view uses must drop and
-- recreate the view.
ALTER TABLE audit_events
    ADD COLUMN event_form text NOT NULL DEFAULT 'jsonb'
        CONSTRAINT audit_events_event_form CHECK (event_form IN ('canonical', 'jsonb')),
    ALTER COLUMN event TYPE text USING event::text,
    ALTER COLUMN event SET COMPRESSION lz4;

ALTER TABLE audit_event_conflicts
    ADD COLUMN incoming_event_form text NOT NULL DEFAULT 'jsonb'
        CONSTRAINT audit_event_conflicts_incoming_event_form CHECK (incoming_event_form IN ('canonical', 'jsonb')),
    ALTER COLUMN incoming_event TYPE text USING incoming_event::text,
    ALTER COLUMN incoming_event SET COMPRESSION lz4;

CREATE VIEW audit_events_json AS
SELECT event_id, tenant_id, action, outcome, actor_type, actor_id, target_type, target_id, occurred_at,
       received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event::jsonb AS event, stored_at
FROM audit_events;
