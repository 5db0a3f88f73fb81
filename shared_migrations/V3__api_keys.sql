-- API keys (SPEC §3): sent as X-API-Key, shown once at creation and stored as a SHA-256
-- hash; the prefix stays visible so people can tell their keys apart. A key acts for the
-- user who created it, with `read` (viewer) or `write` (member) rights.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    scope         text NOT NULL CHECK (scope IN ('read', 'write')),
    created_by    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_company_id_idx ON api_keys (company_id, created_at);
