//! Operator views of tenants: `estate tenants list` and the migration orchestrator behind
//! `estate tenants migrate` and `estate migrate`.
//!
//! The registry (`public.tenants`) records each tenant's schema version and last status, so
//! a run finds the tenants that need work with one query, migrates them with bounded
//! concurrency, each in its own transaction, and records failures without stopping the
//! others. A re-run resumes: finished tenants are skipped.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use crate::db::migrations::{TenantMigrations, apply_tenant_migrations};
use crate::db::provisioning::migration_settings_sql;
use crate::db::tenancy::{CompanyId, RoleName, SchemaName, Tenant};
use crate::db::{Db, DbError};
use crate::error::error_chain;

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub company_id: Uuid,
    pub company_name: String,
    pub status: String,
    pub schema_name: String,
    pub role_name: String,
    pub schema_version: i32,
    pub migration_status: String,
    pub migration_error: Option<String>,
}

pub async fn list(db: &Db) -> Result<Vec<TenantRecord>, DbError> {
    let conn = db.shared().await?;
    let rows = conn
        .query(
            "SELECT t.company_id, c.name, c.status, t.schema_name, t.role_name, t.schema_version,
                    t.migration_status, t.migration_error
             FROM tenants t JOIN companies c ON c.id = t.company_id
             ORDER BY c.created_at, t.company_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TenantRecord {
            company_id: r.get(0),
            company_name: r.get(1),
            status: r.get(2),
            schema_name: r.get(3),
            role_name: r.get(4),
            schema_version: r.get(5),
            migration_status: r.get(6),
            migration_error: r.get(7),
        })
        .collect())
}

#[derive(Debug, Default)]
pub struct MigrationOutcome {
    pub total: usize,
    pub up_to_date: usize,
    pub migrated: usize,
    pub failed: Vec<(CompanyId, String)>,
}

/// Brings every tenant schema to the last version of `migrations`
/// ([`TenantMigrations::embedded`] but in benchmarks).
pub async fn migrate_all(
    db: &Db,
    migrations: &TenantMigrations,
    concurrency: usize,
    progress: bool,
) -> Result<MigrationOutcome, DbError> {
    let latest = migrations.latest();
    let conn = db.shared().await?;
    let total: i64 = conn
        .query_one("SELECT count(*) FROM tenants", &[])
        .await?
        .get(0);
    let pending = conn
        .query(
            "SELECT company_id, schema_name, role_name FROM tenants
             WHERE schema_version < $1 OR migration_status <> 'ok'
             ORDER BY company_id",
            &[&latest],
        )
        .await?;
    drop(conn);

    let bar = ProgressBar::with_draw_target(
        Some(pending.len() as u64),
        if progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tenants migrated ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut outcome = MigrationOutcome {
        total: total as usize,
        up_to_date: total as usize - pending.len(),
        ..Default::default()
    };
    let mut runs = futures::stream::iter(pending.into_iter().map(|row| {
        let company = CompanyId(row.get(0));
        let (schema, role): (String, String) = (row.get(1), row.get(2));
        async move {
            let result = migrate_one(db, migrations, company, schema, role).await;
            (company, result)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((company, result)) = runs.next().await {
        match result {
            Ok(_) => outcome.migrated += 1,
            Err(e) => {
                let message = error_chain(&e);
                bar.suspend(|| tracing::error!(company = %company, error = %message, "tenant migration failed"));
                record_failure(db, company, &message).await;
                outcome.failed.push((company, message));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(outcome)
}

/// Migrates one tenant schema in one transaction, holding a per-schema advisory lock so
/// that concurrent runs serialize instead of applying the same migration twice.
pub async fn migrate_one(
    db: &Db,
    migrations: &TenantMigrations,
    company: CompanyId,
    schema: String,
    role: String,
) -> Result<i32, DbError> {
    let tenant = Tenant {
        company,
        schema: SchemaName::from_registry(schema)?,
        role: RoleName::from_registry(role)?,
    };
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    tx.batch_execute(&format!(
        "{} SELECT pg_advisory_xact_lock(hashtext('estate-migrate:' || '{}'));",
        migration_settings_sql(&tenant),
        tenant.schema.as_str(),
    ))
    .await?;
    let version = apply_tenant_migrations(&tx, &tenant.schema, migrations, true).await?;
    tx.execute(
        "UPDATE public.tenants SET schema_version = $2, migration_status = 'ok',
                migration_error = NULL, migrated_at = now()
         WHERE company_id = $1",
        &[&company.0, &version],
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

async fn record_failure(db: &Db, company: CompanyId, message: &str) {
    let result = async {
        db.shared()
            .await?
            .execute(
                "UPDATE tenants SET migration_status = 'failed', migration_error = $2 WHERE company_id = $1",
                &[&company.0, &message],
            )
            .await
            .map_err(DbError::from)
    }
    .await;
    if let Err(e) = result {
        tracing::error!(company = %company, error = %e, "could not record a tenant migration failure");
    }
}
