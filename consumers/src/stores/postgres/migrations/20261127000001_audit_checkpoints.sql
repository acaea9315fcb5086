-- Signed checkpoints of the chains' heads, stored as they travelled in the processed partitions
-- (`docs/INTEGRITY.md`): `auditctl verify --public-key` checks each chain against them.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain           text        NOT NULL,
    seq             bigint      NOT NULL,
    hash            text        NOT NULL,
    signed_at       timestamptz NOT NULL,
    key_id          text        NOT NULL,
    signature       text        NOT NULL,
    checkpoint      jsonb       NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, seq, signature)
);
