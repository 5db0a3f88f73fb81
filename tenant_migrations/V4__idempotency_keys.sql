-- Idempotency-Key support (SPEC §4): the first response to a keyed request is kept with
-- the change it made, in the same transaction, so a retry gets the same answer and
-- changes nothing twice. Keys count for 24 hours.
CREATE TABLE idempotency_keys (
    key              text PRIMARY KEY,
    -- SHA-256 of method, path and body: the same key with another request is refused
    request_hash     bytea NOT NULL,
    response_status  integer,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
