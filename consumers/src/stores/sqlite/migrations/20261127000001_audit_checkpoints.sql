-- Signed checkpoints of the chains' heads, stored as they travelled in the processed partitions
-- (`docs/INTEGRITY.md`): `auditctl verify --public-key` checks each chain against them.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain           TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    hash            TEXT    NOT NULL,
    signed_at       TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    signature       TEXT    NOT NULL,
    checkpoint      TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    stored_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (chain, seq, signature)
);
