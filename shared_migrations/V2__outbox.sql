-- The job outbox (SPEC §6): a job is written here in the same transaction as the change
-- that causes it, and relayed to Redis later, so a committed change never loses its job.
-- Tenant roles insert rows through the tenants' group role (granted by `estate migrate`,
-- since the group's name depends on the database).
CREATE TABLE outbox (
    id               uuid PRIMARY KEY,
    company_id       uuid NOT NULL,
    job              text NOT NULL,
    payload          jsonb NOT NULL,
    -- the same effect is enqueued once, however often the causing request is retried
    idempotency_key  text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    relayed_at       timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (created_at) WHERE relayed_at IS NULL;
