-- The company's audit log (SPEC §7). Written in the same transaction as the change it
-- records. The tenant role may add and read entries, never change or remove them:
-- `estate.tenant_role` is set by whoever runs tenant migrations.
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY,
    action       text NOT NULL,
    -- a public.users id (or API key, OAuth client), kept without a cross-schema foreign key
    actor_id     uuid,
    actor_kind   text NOT NULL DEFAULT 'user'
                 CHECK (actor_kind IN ('user', 'api_key', 'oauth_client', 'system', 'anonymous')),
    object_type  text,
    object_id    uuid,
    before       jsonb,
    after        jsonb,
    ip           inet,
    user_agent   text,
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_created_at_idx ON audit_log (created_at, id);
CREATE INDEX audit_log_object_idx ON audit_log (object_type, object_id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id);

DO $$
BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I',
                   current_setting('estate.tenant_role'));
END
$$;
