-- OAuth 2 clients (client credentials grant, SPEC §3): machine clients exchange their id
-- and secret at POST /oauth/token for a bearer JWT of their company. The secret is shown
-- once and stored as a SHA-256 hash. A client acts for the user who created it, with
-- `read` (viewer) or `write` (member) rights.
CREATE TABLE oauth_clients (
    id             uuid PRIMARY KEY,
    company_id     uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name           text NOT NULL,
    client_id      text NOT NULL UNIQUE,
    secret_hash    bytea NOT NULL,
    scope          text NOT NULL CHECK (scope IN ('read', 'write')),
    created_by     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    revoked_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_clients_company_id_idx ON oauth_clients (company_id, created_at);
