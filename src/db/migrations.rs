//! Migrations, all run by refinery: `shared_migrations/` once into `public`, and
//! `tenant_migrations/` into every tenant schema, each schema with its own history table.
//!
//! Tenant migrations run inside a transaction the caller opened with the schema on its
//! `search_path` (refinery pastes table names verbatim and takes no lock, so the caller also
//! takes an advisory lock per schema). [`tenant_ddl_batch`] is the fast path used when a
//! tenant is provisioned: the same migrations and the same history rows as one batch, one
//! round trip. A test checks that both paths build identical schemas.

use std::sync::{Arc, OnceLock};

use deadpool_postgres::Transaction;
use refinery::{AsyncMigrate, Migration, Runner};
use refinery_core::traits::r#async::{AsyncQuery, AsyncTransaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::DbError;
use super::tenancy::{RoleName, SchemaName};

mod embedded_shared {
    refinery::embed_migrations!("shared_migrations");
}
mod embedded_tenant {
    refinery::embed_migrations!("tenant_migrations");
}

/// refinery's history table, in each tenant schema as in `public`.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// Held (session-level, on a dedicated connection) while shared migrations run, so that two
/// processes starting with `--migrate` do not race.
const SHARED_MIGRATION_LOCK: i64 = 0x6573_7461_7465_0001;

/// A set of tenant migrations in version order: those of `tenant_migrations/`, or that set
/// with more after it (the benchmarks add a migration to time its fan-out).
#[derive(Clone)]
pub struct TenantMigrations(Arc<[Migration]>);

impl TenantMigrations {
    /// `tenant_migrations/`, parsed (and checksummed) once per process.
    pub fn embedded() -> Self {
        static EMBEDDED: OnceLock<TenantMigrations> = OnceLock::new();
        EMBEDDED
            .get_or_init(|| {
                let mut migrations = embedded_tenant::migrations::runner()
                    .get_migrations()
                    .clone();
                migrations.sort();
                TenantMigrations(migrations.into())
            })
            .clone()
    }

    /// This set and one migration more, named as a file would be (`V7__add_column`).
    pub fn and_then(&self, name: &str, sql: &str) -> Result<Self, DbError> {
        let next = Migration::unapplied(name, sql)?;
        if next.version() <= self.latest() {
            return Err(DbError::InvalidIdentifier(format!(
                "migration {name} is not after version {}",
                self.latest()
            )));
        }
        let mut migrations = self.0.to_vec();
        migrations.push(next);
        Ok(TenantMigrations(migrations.into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.0.iter()
    }

    /// The version a schema with every migration of the set is at.
    pub fn latest(&self) -> i32 {
        self.0.last().map(|m| m.version()).unwrap_or(0)
    }
}

/// The version a fully migrated tenant schema is at.
pub fn latest_tenant_version() -> i32 {
    TenantMigrations::embedded().latest()
}

fn history_table(schema: &SchemaName) -> String {
    format!("{}.{HISTORY_TABLE}", schema.quoted())
}

/// refinery's own DDL for its history table (refinery-core `ASSERT_MIGRATIONS_TABLE_QUERY`),
/// so that a table created by the fast path is the one refinery would have made.
pub fn history_table_ddl(schema: &SchemaName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}(
             version int4 PRIMARY KEY,
             name VARCHAR(255),
             applied_on VARCHAR(255),
             checksum VARCHAR(255));",
        history_table(schema)
    )
}

/// The few shared-schema rights tenant work needs, held by the tenants' group role:
/// tenant transactions write job rows, read their own plan (`current_plan` shows one row,
/// the asking tenant's), and record the Stripe events whose effect is tenant data.
/// Applied by every `migrate` (it is idempotent), not by a migration, because the group's
/// name depends on the database.
fn group_grants_sql(group_role: &RoleName) -> String {
    format!(
        "GRANT INSERT ON public.outbox TO {0}; GRANT SELECT ON public.current_plan TO {0};
         GRANT INSERT ON public.stripe_events TO {0}",
        group_role.quoted()
    )
}

/// Applies `shared_migrations/`, and makes sure the tenants' group role exists with its
/// rights. Uses its own connection: the session-level advisory lock must not touch the pool.
pub async fn migrate_shared(database_url: &str, group_role: &RoleName) -> Result<usize, DbError> {
    let (mut client, connection) =
        tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SHARED_MIGRATION_LOCK])
        .await?;
    let report = embedded_shared::migrations::runner()
        .run_async(&mut client)
        .await?;
    // Tenant roles join this group; it carries the few shared-schema rights tenant work needs.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            group_role.quoted()
        ))
        .await?;
    client.batch_execute(&group_grants_sql(group_role)).await?;
    drop(client);
    let _ = driver.await;
    Ok(report.applied_migrations().len())
}

/// Applies the pending migrations of `migrations` inside `tx`, whose `search_path` the
/// caller has set to `schema`. `grouped` sends them as one batch; otherwise one statement
/// batch per migration, as a plain refinery run would. Returns the schema version reached.
pub async fn apply_tenant_migrations(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    migrations: &TenantMigrations,
    grouped: bool,
) -> Result<i32, DbError> {
    let mut runner = Runner::new(&migrations.0).set_grouped(grouped);
    runner.set_migration_table_name(history_table(schema));
    runner.run_async(&mut InTransaction(tx)).await?;
    let version: Option<i32> = tx
        .query_one(
            &format!("SELECT max(version) FROM {}", history_table(schema)),
            &[],
        )
        .await?
        .get(0);
    Ok(version.unwrap_or(0))
}

/// Every migration of the set plus its history row, as one SQL batch. Expects the schema
/// and its history table to exist and the transaction's `search_path` to be the schema.
pub fn tenant_ddl_batch(
    schema: &SchemaName,
    migrations: &TenantMigrations,
    applied_on: OffsetDateTime,
) -> Result<String, DbError> {
    let applied_on = applied_on
        .format(&Rfc3339)
        .map_err(|e| DbError::InvalidIdentifier(format!("timestamp: {e}")))?;
    let mut batch = String::new();
    for migration in migrations.iter() {
        let sql = migration.sql().unwrap_or_default();
        batch.push_str(sql);
        batch.push_str(";\n");
        // The same row refinery's `insert_migration_query` writes.
        batch.push_str(&format!(
            "INSERT INTO {} (version, name, applied_on, checksum) VALUES ({}, '{}', '{}', '{}');\n",
            history_table(schema),
            migration.version(),
            migration.name().replace('\'', "''"),
            applied_on,
            migration.checksum()
        ));
    }
    Ok(batch)
}

/// Lets refinery run inside a transaction we own, instead of opening its own per call.
struct InTransaction<'a, 't>(&'a Transaction<'t>);

#[derive(Debug, thiserror::Error)]
enum InTransactionError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("unreadable migration history row: {0}")]
    History(String),
}

impl AsyncTransaction for InTransaction<'_, '_> {
    type Error = InTransactionError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.batch_execute(query).await?;
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_> {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.0.query(query, &[]).await?;
        rows.into_iter()
            .map(|row| {
                let applied_on: String = row.try_get(2)?;
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                    .map_err(|e| InTransactionError::History(format!("applied_on: {e}")))?;
                let checksum: String = row.try_get(3)?;
                let checksum = checksum
                    .parse::<u64>()
                    .map_err(|e| InTransactionError::History(format!("checksum: {e}")))?;
                Ok(Migration::applied(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    applied_on,
                    checksum,
                ))
            })
            .collect()
    }
}

impl AsyncMigrate for InTransaction<'_, '_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_migrations_are_embedded_in_order() {
        let versions: Vec<i32> = TenantMigrations::embedded()
            .iter()
            .map(|m| m.version())
            .collect();
        assert!(!versions.is_empty());
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(latest_tenant_version(), *versions.last().unwrap());
    }

    #[test]
    fn fast_batch_records_every_migration() {
        let schema = SchemaName::for_company(super::super::tenancy::CompanyId(uuid::Uuid::nil()));
        let set = TenantMigrations::embedded()
            .and_then("V900__extra", "SELECT 1")
            .unwrap();
        assert_eq!(set.latest(), 900);
        assert!(set.and_then("V900__again", "SELECT 1").is_err());
        let batch = tenant_ddl_batch(&schema, &set, OffsetDateTime::UNIX_EPOCH).unwrap();
        for m in set.iter() {
            assert!(batch.contains(&format!("VALUES ({}, '{}'", m.version(), m.name())));
            assert!(batch.contains(&m.checksum().to_string()));
        }
    }
}
