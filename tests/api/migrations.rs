//! The tenant migration orchestrator: skips tenants that are up to date, isolates
//! failures, and resumes on a re-run.

use estate::db::migrations::latest_tenant_version;
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

    let first = tenants::migrate_all(db, 4, false).await.unwrap();
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

    let second = tenants::migrate_all(db, 4, false).await.unwrap();
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
    let third = tenants::migrate_all(db, 4, false).await.unwrap();
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
