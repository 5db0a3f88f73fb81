-- Plans as data (SPEC §5): every tier's limits and features live in this one table, and
-- every check reads it: the session verdict (features, read-only when unpaid), the limit
-- checks inside creating transactions, the rate limiter, audit retention. NULL = unlimited.
CREATE TABLE plans (
    tier                  text PRIMARY KEY,
    rank                  integer NOT NULL UNIQUE,
    requests_per_hour     integer NOT NULL CHECK (requests_per_hour > 0),
    max_users             integer CHECK (max_users > 0),
    max_estates           integer CHECK (max_estates > 0),
    max_properties        integer CHECK (max_properties > 0),
    audit_retention_days  integer NOT NULL CHECK (audit_retention_days > 0),
    features              text[] NOT NULL
);

INSERT INTO plans VALUES
    ('starter',      1,   100,    5,    3,  200,  30, '{}'),
    ('professional', 2,  1000,   25,   25, 5000, 180,
     '{api_keys,bulk_operations,csv_export,advanced_statistics,email_notifications,installment_plans}'),
    ('enterprise',   3, 10000, NULL, NULL, NULL, 730,
     '{api_keys,bulk_operations,csv_export,advanced_statistics,email_notifications,installment_plans,audit_log_access,oauth_clients}');

ALTER TABLE companies DROP CONSTRAINT companies_tier_check;
ALTER TABLE companies ADD CONSTRAINT companies_tier_fkey FOREIGN KEY (tier) REFERENCES plans (tier);

-- The subscription, one per company. `active` and `past_due` follow Stripe; `canceled`
-- once a cancellation took effect. past_due and canceled make the company read-only.
ALTER TABLE companies
    ADD COLUMN subscription_status   text NOT NULL DEFAULT 'active'
        CHECK (subscription_status IN ('active', 'past_due', 'canceled')),
    ADD COLUMN current_period_end    timestamptz NOT NULL DEFAULT now() + interval '1 month',
    ADD COLUMN cancel_at_period_end  boolean NOT NULL DEFAULT false,
    -- a downgrade waits for the end of the period that was paid for
    ADD COLUMN pending_tier          text REFERENCES plans (tier),
    ADD COLUMN stripe_customer_id    text UNIQUE,
    ADD COLUMN stripe_subscription_id text UNIQUE,
    ADD COLUMN stripe_subscription_item_id text,
    -- creation time of the newest Stripe subscription event applied: an older event
    -- delivered late never overwrites newer state
    ADD COLUMN stripe_state_at       timestamptz;

-- What happened to each company's subscription, newest first in the API.
CREATE TABLE billing_history (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    event         text NOT NULL,
    from_tier     text,
    to_tier       text,
    amount        numeric(14, 2),
    currency      text,
    stripe_id     text,
    detail        text,
    occurred_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_history_company_idx ON billing_history (company_id, occurred_at DESC);

-- Every Stripe event id applied, recorded in the transaction of its effect: a replay finds
-- its id here and changes nothing.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    created_at   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- A tenant's own plan, for checks that run under the tenant role (which cannot read
-- companies or tenants): the view runs with its owner's rights and shows one row, the
-- plan of the company whose role is asking.
CREATE VIEW current_plan AS
    SELECT p.*, c.subscription_status
    FROM tenants t
    JOIN companies c ON c.id = t.company_id
    JOIN plans p ON p.tier = c.tier
    WHERE t.role_name = current_user;
