//! The tenant migration orchestrator: skips tenants that are up to date, isolates
//! failures, and resumes on a re-run.

use estate::db::migrations::{TenantMigrations, latest_tenant_version};
use estate::db::tenancy::{CompanyId, SchemaName};
use estate::tenants;

use crate::helpers::spawn_app;

#[tokio::test]
async fn migrate_skips_up_to_date_tenants_isolates_failures_and_resumes() {
    let app = spawn_app().await;
    let db = &app.state.db;
    let healthy = app.register("Healthy").await;
    let behind = app.register("Behind").await;
    let broken = app.register("Broken").await;

    let first = tenants::migrate_all(db, &TenantMigrations::embedded(), 4, false)
        .await
        .unwrap();
    assert_eq!(
        (
            first.total,
            first.up_to_date,
            first.migrated,
            first.failed.len()
        ),
        (3, 3, 0, 0)
    );

    let client = app.database.client().await;
    // "Behind": the registry says version 0, but its history is intact, so a run only
    // records the version. "Broken": history wiped, so re-applying V1 hits existing tables.
    let broken_schema = SchemaName::for_company(CompanyId(broken.company_id));
    client
        .batch_execute(&format!(
            "UPDATE tenants SET schema_version = 0 WHERE company_id IN ('{}', '{}');
             CREATE TABLE saved_history AS SELECT * FROM {schema}.refinery_schema_history;
             DELETE FROM {schema}.refinery_schema_history;",
            behind.company_id,
            broken.company_id,
            schema = broken_schema.quoted()
        ))
        .await
        .unwrap();

    let second = tenants::migrate_all(db, &TenantMigrations::embedded(), 4, false)
        .await
        .unwrap();
    assert_eq!(
        (second.total, second.up_to_date, second.migrated),
        (3, 1, 1)
    );
    assert_eq!(second.failed.len(), 1);
    assert_eq!(second.failed[0].0, CompanyId(broken.company_id));

    let records = tenants::list(db).await.unwrap();
    let record = |id| records.iter().find(|r| r.company_id == id).unwrap();
    assert_eq!(
        record(healthy.company_id).schema_version,
        latest_tenant_version()
    );
    assert_eq!(
        record(behind.company_id).schema_version,
        latest_tenant_version()
    );
    assert_eq!(record(behind.company_id).migration_status, "ok");
    assert_eq!(record(broken.company_id).migration_status, "failed");
    assert!(
        record(broken.company_id)
            .migration_error
            .as_deref()
            .unwrap()
            .contains("already exists")
    );
    // The failed tenant's transaction rolled back: its data is as it was.
    assert_eq!(app.estate_count(broken.company_id).await, 0);

    // Repair the cause and re-run: only the failed tenant is worked on.
    client
        .batch_execute(&format!(
            "INSERT INTO {}.refinery_schema_history SELECT * FROM saved_history",
            broken_schema.quoted()
        ))
        .await
        .unwrap();
    let third = tenants::migrate_all(db, &TenantMigrations::embedded(), 4, false)
        .await
        .unwrap();
    assert_eq!(
        (
            third.total,
            third.up_to_date,
            third.migrated,
            third.failed.len()
        ),
        (3, 2, 1, 0)
    );
    assert_eq!(
        app.get("/api/v1/estates", &broken.access_token)
            .await
            .status(),
        200
    );
}

/// A new tenant migration reaches every tenant (column and index), is recorded in each
/// schema's history and the registry, and a re-run does nothing.
#[tokio::test]
async fn a_new_migration_reaches_every_tenant_once() {
    let app = spawn_app().await;
    let db = &app.state.db;
    let a = app.register("First").await;
    let b = app.register("Second").await;
    let next = latest_tenant_version() + 1;
    let set = TenantMigrations::embedded()
        .and_then(
            &format!("V{next}__estate_note"),
            "ALTER TABLE estates ADD COLUMN note text;
             CREATE INDEX estates_note ON estates (note);",
        )
        .unwrap();

    let run = tenants::migrate_all(db, &set, 4, false).await.unwrap();
    assert_eq!((run.total, run.migrated, run.failed.len()), (2, 2, 0));
    let client = app.database.client().await;
    for t in [&a, &b] {
        let schema = SchemaName::for_company(CompanyId(t.company_id));
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT max(version) FROM {s}.refinery_schema_history),
                            to_regclass('{n}.estates_note') IS NOT NULL,
                            (SELECT schema_version FROM tenants WHERE company_id = $1)",
                    s = schema.quoted(),
                    n = schema.as_str()
                ),
                &[&t.company_id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), next);
        assert!(row.get::<_, bool>(1), "the index exists");
        assert_eq!(row.get::<_, i32>(2), next);
    }
    // The API still serves the migrated tenant.
    assert_eq!(
        app.get("/api/v1/estates", &a.access_token).await.status(),
        200
    );
    let again = tenants::migrate_all(db, &set, 4, false).await.unwrap();
    assert_eq!((again.up_to_date, again.migrated), (2, 0));
}
