-- Shared schema: companies, their users, credentials, and the tenant registry.
-- Business data never lives here; it lives in each company's own schema.

CREATE TABLE companies (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    tier        text NOT NULL DEFAULT 'starter'
                CHECK (tier IN ('starter', 'professional', 'enterprise')),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    company_id     uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    email          text NOT NULL,
    full_name      text NOT NULL,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- Login is by e-mail alone, so an address identifies one user across all companies.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_company_id_idx ON users (company_id);

-- The tenant registry: where each company's data lives and how far its schema is migrated.
CREATE TABLE tenants (
    company_id        uuid PRIMARY KEY REFERENCES companies (id) ON DELETE CASCADE,
    schema_name       text NOT NULL UNIQUE CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    role_name         text NOT NULL UNIQUE CHECK (role_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    schema_version    integer NOT NULL DEFAULT 0,
    migration_status  text NOT NULL DEFAULT 'pending'
                      CHECK (migration_status IN ('pending', 'ok', 'failed')),
    migration_error   text,
    migrated_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_schema_version_idx ON tenants (schema_version);

-- Refresh tokens are opaque; only their SHA-256 is stored. Every token descends from one
-- login (its family), so reuse of a rotated token can revoke the whole family.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);

-- Access tokens revoked before their expiry (logout); rows past expires_at can be pruned.
CREATE TABLE revoked_access_tokens (
    jti         uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);

-- Failed-login counters per account and per client address, one fixed window each.
CREATE TABLE login_failures (
    key               text PRIMARY KEY,
    failures          integer NOT NULL,
    window_started_at timestamptz NOT NULL
);
