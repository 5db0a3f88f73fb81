-- Tenants built ahead of registration (src/db/spares.rs): a registration renames one to
-- its company's schema and role instead of creating some fifty relations while the
-- client waits. One row per spare schema; a spare is claimed only if built at the
-- version the claiming binary expects, with the same LOGIN setting.
CREATE TABLE tenant_spares (
    schema_name text PRIMARY KEY,
    role_name text NOT NULL UNIQUE,
    schema_version integer NOT NULL,
    role_login boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_spares_claim ON tenant_spares (schema_version, role_login, created_at);
