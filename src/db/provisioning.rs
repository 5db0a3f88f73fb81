//! Provisioning a tenant: its role, its schema, every tenant migration and its registry row,
//! all inside the caller's transaction, so that registration as a whole either fully
//! succeeds or leaves nothing behind (PostgreSQL's CREATE ROLE and CREATE SCHEMA are
//! transactional).
//!
//! Speed matters here (SPEC §8: tens of milliseconds): everything is sent as one batch in
//! one round trip, not as one round trip per statement or per migration.

use deadpool_postgres::Transaction;
use time::OffsetDateTime;

use super::DbError;
use super::migrations::{TenantMigrations, history_table_ddl, tenant_ddl_batch};
use super::spares;
use super::tenancy::{Tenant, TenantNaming};

/// Privileges the tenant role gets on every table of its own schema. Tables are owned by
/// the migrating role, so these grants are all the tenant role has.
const TABLE_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE";

/// Creates the tenant's role and schema, its (empty) migration history table, and the
/// grants. Both provisioning paths start with this, so their grants cannot differ.
///
/// The history table is created before the default privileges are set, so the tenant role
/// gets no rights on it: a tenant can never rewrite its own migration history.
pub fn role_and_schema_sql(naming: &TenantNaming, tenant: &Tenant) -> String {
    let role = tenant.role.quoted();
    let schema = tenant.schema.quoted();
    let login = if naming.tenant_roles_login() {
        // Citus opens worker connections as the current role (SPEC §8); no password, so
        // pg_hba.conf alone decides where such a login is accepted.
        "LOGIN"
    } else {
        "NOLOGIN"
    };
    let group = naming.group_role().quoted();
    format!(
        "CREATE ROLE {role} {login} IN ROLE {group};
         DO $$ BEGIN
             -- A CREATEROLE (non-superuser) server needs membership to SET ROLE to it.
             IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                 EXECUTE format('GRANT %I TO %I', '{role_name}', current_user);
             END IF;
         END $$;
         CREATE SCHEMA {schema};
         {history}
         GRANT USAGE ON SCHEMA {schema} TO {role};
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {TABLE_PRIVILEGES} ON TABLES TO {role};
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role};",
        role_name = tenant.role.as_str(),
        history = history_table_ddl(&tenant.schema),
    )
}

/// Settings of a transaction that runs tenant migrations, all transaction-local: the
/// tenant's schema as the only search path (migrations use unqualified names), a lock
/// timeout so that a migration waits for live traffic only briefly, and
/// `estate.tenant_role`, the tenant's role, for migrations that grant or revoke rights.
pub fn migration_settings_sql(tenant: &Tenant) -> String {
    format!(
        "SET LOCAL search_path TO {}; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
         SET LOCAL estate.tenant_role = '{}';",
        tenant.schema.quoted(),
        tenant.role.as_str()
    )
}

/// How long a tenant migration waits for a lock held by live traffic before giving up
/// (and being retried on the next run) instead of queueing requests behind it.
pub const LOCK_TIMEOUT: &str = "5s";

/// Provisions `tenant` inside `tx`: by renaming a spare built ahead of time when one is
/// ready (a few catalog updates), otherwise by creating everything (see
/// [`create_tenant`]). The caller has already inserted the company row, and commits.
pub async fn provision_tenant(
    tx: &Transaction<'_>,
    naming: &TenantNaming,
    tenant: &Tenant,
    migrations: &TenantMigrations,
) -> Result<(), DbError> {
    if spares::claim(tx, tenant, naming, migrations).await? {
        return Ok(());
    }
    create_tenant(tx, naming, tenant, migrations).await
}

/// Creates `tenant` from nothing with every migration of `migrations` inside `tx`, in one
/// round trip. Most of its time goes to building some twenty indexes, each written and
/// synced to disk on its own, which is why registrations claim spares instead.
pub async fn create_tenant(
    tx: &Transaction<'_>,
    naming: &TenantNaming,
    tenant: &Tenant,
    migrations: &TenantMigrations,
) -> Result<(), DbError> {
    let batch = format!(
        "{}\n{}",
        tenant_objects_sql(naming, tenant, migrations)?,
        registry_insert_sql(tenant, migrations.latest())
    );
    tx.batch_execute(&batch).await?;
    Ok(())
}

/// Role, schema, grants, every tenant table and the migration history of `tenant`, ending
/// with the search path back at its default.
pub fn tenant_objects_sql(
    naming: &TenantNaming,
    tenant: &Tenant,
    migrations: &TenantMigrations,
) -> Result<String, DbError> {
    Ok(format!(
        "{setup}\n{path}\n{ddl}\nSET LOCAL search_path TO DEFAULT;",
        setup = role_and_schema_sql(naming, tenant),
        path = migration_settings_sql(tenant),
        ddl = tenant_ddl_batch(&tenant.schema, migrations, OffsetDateTime::now_utc())?,
    ))
}

/// The tenant registry's row for `tenant`, fully migrated to `version`.
pub fn registry_insert_sql(tenant: &Tenant, version: i32) -> String {
    format!(
        "INSERT INTO public.tenants \
             (company_id, schema_name, role_name, schema_version, migration_status, migrated_at) \
         VALUES ('{company}', '{schema}', '{role}', {version}, 'ok', now());",
        company = tenant.company.0,
        schema = tenant.schema.as_str(),
        role = tenant.role.as_str(),
    )
}
