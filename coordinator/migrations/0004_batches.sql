-- Batches: a catalog submitted at once (POST /v1/batches), its jobs made
-- in the same transaction as the batch.
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    idempotency_key TEXT,
    -- SHA-256 of the body as submitted: the same key with another body is 409.
    body_hash TEXT NOT NULL,
    tracks BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);

ALTER TABLE jobs ADD COLUMN batch_id TEXT;
-- The track's id within its batch (the caller's own name for it).
ALTER TABLE jobs ADD COLUMN track TEXT;
CREATE INDEX jobs_batch ON jobs (batch_id, seq);
