-- Every change of a job's status, in order: what GET /v1/events streams
-- (and, later, what webhooks deliver).
CREATE TABLE job_events (
    seq BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (seq, job_id)
);
CREATE INDEX job_events_tenant_seq ON job_events (tenant, seq);
