//! Spare tenants: schemas and roles built ahead of registration, so that onboarding a
//! company renames one (a few catalog updates, a millisecond or two) instead of creating
//! some fifty relations while the client waits (tens of milliseconds, most of it syncing
//! each new index to disk; BENCHMARKS.md).
//!
//! A spare is exactly what [`create_tenant`] would build, under its own names
//! ([`TenantNaming::spare`]) and listed in `public.tenant_spares` instead of the tenant
//! registry. Grants, default privileges and role membership refer to objects, not names, so
//! after `ALTER SCHEMA … RENAME` and `ALTER ROLE … RENAME` the claimed spare is the same as
//! a tenant created for the company (a test compares the two).
//!
//! Only spares built at the version the claiming binary expects, with its `LOGIN`
//! setting, are claimed. Older ones are dropped by the keeper of a newer binary; a newer
//! one is left for the binary that expects it, and its presence stops older binaries from
//! building more, so two versions running side by side during a deploy do not undo each
//! other's work.
//!
//! [`create_tenant`]: super::provisioning::create_tenant

use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::migrations::TenantMigrations;
use super::provisioning::{registry_insert_sql, tenant_objects_sql};
use super::tenancy::{RoleName, SchemaName, Tenant, TenantNaming};
use super::{Db, DbError};

/// Serialises topping up across processes, so they never build past the target together.
const TOP_UP_LOCK: i64 = 0x7370_6172_6573; // "spares"

/// How often a keeper looks at the count of spares.
const KEEPER_INTERVAL: Duration = Duration::from_secs(1);

/// Renames a ready spare to `tenant`'s schema and role and registers it, inside the
/// registration's transaction: if that rolls back, the spare is back in the list. Returns
/// false when none is ready. Concurrent registrations each take a different spare (`SKIP
/// LOCKED`).
pub async fn claim(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    naming: &TenantNaming,
    migrations: &TenantMigrations,
) -> Result<bool, DbError> {
    let version = migrations.latest();
    let taken = tx
        .query_opt(
            "DELETE FROM public.tenant_spares WHERE schema_name = (
                 SELECT schema_name FROM public.tenant_spares
                 WHERE schema_version = $1 AND role_login = $2
                 ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING schema_name, role_name",
            &[&version, &naming.tenant_roles_login()],
        )
        .await?;
    let Some(row) = taken else {
        return Ok(false);
    };
    let schema = SchemaName::from_registry(row.get(0))?;
    let role = RoleName::from_registry(row.get(1))?;
    tx.batch_execute(&format!(
        "ALTER SCHEMA {} RENAME TO {};\nALTER ROLE {} RENAME TO {};\n{}",
        schema.quoted(),
        tenant.schema.quoted(),
        role.quoted(),
        tenant.role.quoted(),
        registry_insert_sql(tenant, version)
    ))
    .await?;
    Ok(true)
}

/// Builds one spare if fewer than `target` are ready and no newer binary is keeping spares
/// (one of a later version exists: during a deploy the old processes stop building what
/// the new ones would drop). Returns whether it built one.
pub async fn top_up_one(
    db: &Db,
    migrations: &TenantMigrations,
    target: usize,
) -> Result<bool, DbError> {
    let naming = db.naming();
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TOP_UP_LOCK])
        .await?;
    if !count(&tx, naming, migrations).await?.wants_more(target) {
        return Ok(false);
    }
    let spare = naming.spare(Uuid::now_v7());
    tx.batch_execute(&format!(
        "{}\nINSERT INTO public.tenant_spares (schema_name, role_name, schema_version, role_login)
         VALUES ('{}', '{}', {}, {});",
        tenant_objects_sql(naming, &spare, migrations)?,
        spare.schema.as_str(),
        spare.role.as_str(),
        migrations.latest(),
        naming.tenant_roles_login(),
    ))
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The spares as a binary expecting `migrations` sees them.
struct Counts {
    /// At its version and with its `LOGIN` setting: the ones it may claim.
    ready: i64,
    /// Built by a newer binary.
    newer: i64,
    /// Built by an older binary, to be dropped.
    outdated: i64,
}

impl Counts {
    /// Whether this binary should build another: fewer than `target` ready, and no newer
    /// binary keeping spares.
    fn wants_more(&self, target: usize) -> bool {
        self.ready < target as i64 && self.newer == 0
    }
}

async fn count(
    client: &impl GenericClient,
    naming: &TenantNaming,
    migrations: &TenantMigrations,
) -> Result<Counts, DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE schema_version = $1 AND role_login = $2),
                    count(*) FILTER (WHERE schema_version > $1),
                    count(*) FILTER (WHERE schema_version < $1)
             FROM public.tenant_spares",
            &[&migrations.latest(), &naming.tenant_roles_login()],
        )
        .await?;
    Ok(Counts {
        ready: row.get(0),
        newer: row.get(1),
        outdated: row.get(2),
    })
}

/// Drops spares built for an older version of the tenant migrations than `migrations`,
/// with their roles. Returns how many.
pub async fn drop_outdated(db: &Db, migrations: &TenantMigrations) -> Result<usize, DbError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let outdated = tx
        .query(
            "DELETE FROM public.tenant_spares WHERE schema_version < $1
             RETURNING schema_name, role_name",
            &[&migrations.latest()],
        )
        .await?;
    let mut drops = String::new();
    for row in &outdated {
        let schema = SchemaName::from_registry(row.get(0))?;
        let role = RoleName::from_registry(row.get(1))?;
        drops.push_str(&format!(
            "DROP SCHEMA {} CASCADE; DROP ROLE {};\n",
            schema.quoted(),
            role.quoted()
        ));
    }
    if !drops.is_empty() {
        tx.batch_execute(&drops).await?;
    }
    tx.commit().await?;
    Ok(outdated.len())
}

/// Drops outdated spares, then builds spares until `target` are ready. Returns how many it
/// built. One look first, outside any transaction: the keeper calls this every second, and
/// almost always there is nothing to do.
pub async fn replenish(
    db: &Db,
    migrations: &TenantMigrations,
    target: usize,
) -> Result<usize, DbError> {
    let look = count(&db.shared().await?, db.naming(), migrations).await?;
    if look.outdated > 0 {
        drop_outdated(db, migrations).await?;
    }
    let mut built = 0;
    // `top_up_one` counts again under the lock: another process may be topping up too.
    if look.wants_more(target) {
        while top_up_one(db, migrations, target).await? {
            built += 1;
        }
    }
    Ok(built)
}

/// Keeps `target` spares ready for as long as it runs (`estate serve` runs it beside the
/// API). A failure is logged and retried on the next look: without spares, registrations
/// still work, building their tenant themselves.
pub async fn keep(db: Db, migrations: TenantMigrations, target: usize) {
    if target == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(KEEPER_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match replenish(&db, &migrations, target).await {
            Ok(0) => {}
            Ok(built) => tracing::debug!(built, "spare tenants built"),
            Err(error) => tracing::warn!(%error, "topping up spare tenants failed"),
        }
    }
}
