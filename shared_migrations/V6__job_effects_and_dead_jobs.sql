-- Effects jobs have performed, by idempotency key: a job run again after a crash or a
-- duplicate hand-off finds its key here and does not repeat its effect (one e-mail).
CREATE TABLE job_effects (
    idempotency_key  text PRIMARY KEY,
    job              text NOT NULL,
    done_at          timestamptz NOT NULL DEFAULT now()
);

-- Jobs that kept failing after every retry, with their last error. `estate jobs retry ID`
-- hands the outbox row to the queue again and removes it from here.
CREATE TABLE dead_jobs (
    outbox_id        uuid PRIMARY KEY,
    company_id       uuid NOT NULL,
    job              text NOT NULL,
    idempotency_key  text NOT NULL,
    attempts         integer NOT NULL,
    last_error       text NOT NULL,
    died_at          timestamptz NOT NULL DEFAULT now()
);
