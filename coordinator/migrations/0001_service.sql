-- The job service's state. Portable between SQLite (embedded) and
-- PostgreSQL (shared): text ids, BIGINT milliseconds, JSON as TEXT.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    -- SHA-256 of the key (256 random bits: no slow hash needed).
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    store_key TEXT NOT NULL,
    -- pending (URL handed out), stored (audio in the store)
    state TEXT NOT NULL,
    bytes BIGINT,
    expires_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    -- Creation order, for cursor paging (with id to break ties).
    seq BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    idempotency_key TEXT,
    -- SHA-256 of the body as submitted: the same key with another body is 409.
    body_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    -- The pipeline's job message (worker/src/job.rs).
    message TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    attempts BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq);
CREATE INDEX jobs_status_seq ON jobs (status, seq);

CREATE TABLE service_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
