-- The distributed shape (service.render = "queue"): a job's queue message
-- is written with the job, in its transaction, and relayed to RabbitMQ
-- (publisher confirms) by whichever replica leases it; results come back
-- by the message's id.
CREATE TABLE outbox (
    job_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    message TEXT NOT NULL,
    -- Until when a replica is publishing it (0: free).
    lease_ms BIGINT NOT NULL
);
CREATE INDEX outbox_seq ON outbox (seq);

ALTER TABLE jobs ADD COLUMN message_id TEXT;
CREATE INDEX jobs_message_id ON jobs (message_id);
