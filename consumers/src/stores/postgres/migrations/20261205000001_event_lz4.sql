-- The stored event (~2 KB of jsonb for a realistic event) is compressed and moved out of line
-- (TOAST) in nearly every row. lz4 instead of the default pglz: measured by the end-to-end bench
-- (docs/PERFORMANCE.md), PostgreSQL's CPU per row -38 %, WAL per row -17 %, TOAST 253 -> 44 MB for
-- 120k events. Applies to rows written from now on; older rows stay readable as they are.
ALTER TABLE audit_events ALTER COLUMN event SET COMPRESSION lz4;
ALTER TABLE audit_event_conflicts ALTER COLUMN incoming_event SET COMPRESSION lz4;
