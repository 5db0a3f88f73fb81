//! Provisioning: atomic, and the one-batch fast path builds exactly the schema that
//! applying `tenant_migrations/` one by one builds.

use estate::db::Db;
use estate::db::migrations::{TenantMigrations, apply_tenant_migrations, latest_tenant_version};
use estate::db::provisioning::{migration_settings_sql, provision_tenant, role_and_schema_sql};
use estate::db::spares;
use estate::db::tenancy::{CompanyId, Tenant};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, TestDatabase, problem, spawn_app, spawn_app_with};

/// Makes inserting a user fail: registration inserts the owner after the role, schema and
/// tenant tables, so its transaction fails right there.
async fn fail_owner_inserts(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE FUNCTION fail_owner() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_owner BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION fail_owner();",
    )
    .await
    .unwrap();
}

async fn register_doomed(app: &TestApp) -> reqwest::Response {
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"company_name": "Doomed", "email": "doomed@example.com", "password": PASSWORD, "full_name": "D"}),
    )
    .await
}

#[tokio::test]
async fn a_failure_half_way_leaves_nothing_behind() {
    let app = spawn_app().await;
    let before_roles = app.database.roles().await;
    let db = app.database.client().await;
    fail_owner_inserts(&db).await;
    let resp = register_doomed(&app).await;
    let body = problem(resp, 500).await;
    assert!(
        !body["detail"].as_str().unwrap().contains("injected"),
        "internal errors are not echoed"
    );

    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM companies").await, 0);
    assert_eq!(count("SELECT count(*) FROM tenants").await, 0);
    assert_eq!(count("SELECT count(*) FROM refresh_tokens").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'").await,
        0
    );
    assert_eq!(
        app.database.roles().await,
        before_roles,
        "no tenant role left behind"
    );

    // With the fault removed, the same registration succeeds: the failure was the fault's.
    db.batch_execute("DROP TRIGGER fail_owner ON users")
        .await
        .unwrap();
    let t = app.register("Doomed").await;
    assert_eq!(
        count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'").await,
        1
    );
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        200
    );
}

/// Everything about a schema that migrations or grants decide, with the schema and role
/// names replaced by placeholders so two tenants can be compared.
async fn schema_snapshot(client: &tokio_postgres::Client, tenant: &Tenant) -> Vec<String> {
    let schema = tenant.schema.as_str();
    let queries = [
        "SELECT 'column', table_name, column_name, ordinal_position::text, data_type, udt_name,
                is_nullable, coalesce(column_default, ''), is_generated, coalesce(generation_expression, ''),
                coalesce(character_maximum_length::text, '')
         FROM information_schema.columns WHERE table_schema = $1",
        "SELECT 'index', tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1",
        "SELECT 'constraint', c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1",
        "SELECT 'table', c.relname, c.relkind::text, pg_get_userbyid(c.relowner)::text, coalesce(c.relacl::text, '')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
        "SELECT 'grant', table_name, grantee, privilege_type
         FROM information_schema.role_table_grants WHERE table_schema = $1",
        "SELECT 'schema', pg_get_userbyid(nspowner)::text, coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = $1",
        "SELECT 'default acl', d.defaclobjtype::text, coalesce(d.defaclacl::text, '')
         FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = $1",
    ];
    let mut lines = Vec::new();
    for q in queries {
        for row in client.query(q, &[&schema]).await.unwrap() {
            let cols: Vec<String> = (0..row.len()).map(|i| row.get::<_, String>(i)).collect();
            lines.push(
                cols.join(" | ")
                    .replace(tenant.role.as_str(), "<role>")
                    .replace(schema, "<schema>"),
            );
        }
    }
    let history = format!(
        "SELECT 'history', version::text, name, checksum FROM {}.refinery_schema_history",
        tenant.schema.quoted()
    );
    for row in client.query(&history, &[]).await.unwrap() {
        lines.push(
            (0..4)
                .map(|i| row.get::<_, String>(i))
                .collect::<Vec<_>>()
                .join(" | "),
        );
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn fast_provisioning_builds_the_schema_that_migrating_one_by_one_builds() {
    let app = spawn_app().await;
    let fast = app.register("Fast Path").await;
    let naming = app.state.db.naming().clone();
    let fast_tenant = naming.tenant(CompanyId(fast.company_id));

    // The reference: role and schema as provisioning makes them, then refinery applying
    // each migration in turn.
    let slow_tenant = naming.tenant(CompanyId(Uuid::now_v7()));
    let db: &Db = &app.state.db;
    let mut conn = db.shared().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.batch_execute(&role_and_schema_sql(&naming, &slow_tenant))
        .await
        .unwrap();
    tx.batch_execute(&migration_settings_sql(&slow_tenant))
        .await
        .unwrap();
    let version = apply_tenant_migrations(
        &tx,
        &slow_tenant.schema,
        &TenantMigrations::embedded(),
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(version, latest_tenant_version());

    let client = app.database.client().await;
    let fast_snapshot = schema_snapshot(&client, &fast_tenant).await;
    let slow_snapshot = schema_snapshot(&client, &slow_tenant).await;
    assert!(
        fast_snapshot
            .iter()
            .any(|l| l.starts_with("column | estates | name"))
    );
    assert!(
        fast_snapshot
            .iter()
            .any(|l| l.starts_with("grant | estates | <role> | SELECT"))
    );
    assert!(fast_snapshot.iter().any(|l| l.starts_with("history")));
    assert_eq!(fast_snapshot, slow_snapshot);

    // The tenant role has no rights on its own migration history.
    assert!(
        !fast_snapshot
            .iter()
            .any(|l| l.starts_with("grant | refinery_schema_history | <role>"))
    );
}

#[tokio::test]
async fn a_provisioned_tenant_is_registered_as_fully_migrated() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let row = app
        .database
        .client()
        .await
        .query_one(
            "SELECT schema_name, role_name, schema_version, migration_status FROM tenants WHERE company_id = $1",
            &[&t.company_id],
        )
        .await
        .unwrap();
    let expected = app.state.db.naming().tenant(CompanyId(t.company_id));
    assert_eq!(row.get::<_, String>(0), expected.schema.as_str());
    assert_eq!(row.get::<_, String>(1), expected.role.as_str());
    assert_eq!(row.get::<_, i32>(2), latest_tenant_version());
    assert_eq!(row.get::<_, String>(3), "ok");
    // NOLOGIN unless TENANT_ROLE_LOGIN says otherwise.
    let admin = crate::helpers::admin_client("postgres").await;
    let can_login: bool = admin
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&expected.role.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!can_login);
}

#[tokio::test]
async fn tenant_role_login_setting_creates_login_roles() {
    let database = TestDatabase::new().await;
    let mut config = database.config.clone();
    config.tenancy = config.tenancy.clone().with_login(true);
    let db = Db::connect(&config).unwrap();
    let tenant = config.tenancy.tenant(CompanyId(Uuid::now_v7()));
    let mut conn = db.shared().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.batch_execute(&role_and_schema_sql(&config.tenancy, &tenant))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let admin = crate::helpers::admin_client("postgres").await;
    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = $1",
            &[&tenant.role.as_str()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "LOGIN");
    assert!(row.get::<_, bool>(1), "no password");
}

// Spare tenants (`db::spares`): built ahead, renamed at registration.

/// Spares ready in the app's database, and `s_` schemas present (claimed ones are renamed).
async fn spares(app: &TestApp) -> (i64, i64) {
    let client = app.database.client().await;
    let listed = client
        .query_one("SELECT count(*) FROM tenant_spares", &[])
        .await
        .unwrap()
        .get(0);
    let schemas = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 's\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (listed, schemas)
}

/// Tenants in the app's registry.
async fn registered(app: &TestApp) -> i64 {
    app.database
        .client()
        .await
        .query_one("SELECT count(*) FROM tenants", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_registration_claims_a_spare_that_is_the_same_as_a_created_tenant() {
    let app = spawn_app().await;
    let db: &Db = &app.state.db;
    let embedded = TenantMigrations::embedded();
    assert_eq!(spares::replenish(db, &embedded, 1).await.unwrap(), 1);
    assert_eq!(spares(&app).await, (1, 1));
    let spare_role: String = app
        .database
        .client()
        .await
        .query_one("SELECT role_name FROM tenant_spares", &[])
        .await
        .unwrap()
        .get(0);

    let claimed = app.register("Claimed").await;
    assert_eq!(spares(&app).await, (0, 0), "the spare became the company's");
    let created = app.register("Created").await; // no spare left: built from nothing
    let naming = db.naming().clone();
    let claimed_tenant = naming.tenant(CompanyId(claimed.company_id));
    let created_tenant = naming.tenant(CompanyId(created.company_id));

    let client = app.database.client().await;
    let claimed_snapshot = schema_snapshot(&client, &claimed_tenant).await;
    assert!(
        claimed_snapshot
            .iter()
            .any(|l| l.starts_with("grant | estates | <role> | SELECT"))
    );
    assert_eq!(
        claimed_snapshot,
        schema_snapshot(&client, &created_tenant).await
    );
    let roles = app.database.roles().await;
    assert!(roles.contains(&claimed_tenant.role.as_str().to_string()));
    assert!(!roles.contains(&spare_role), "the spare's role was renamed");

    // It serves its company, and only its company.
    let estate = app
        .create_estate(
            &claimed.access_token,
            json!({"name": "On a spare", "location": "L"}),
        )
        .await;
    let path = format!("/api/v1/estates/{}", estate["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &claimed.access_token).await.status(), 200);
    problem(app.get(&path, &created.access_token).await, 404).await;
    assert_eq!(app.estate_count(claimed.company_id).await, 1);
    assert_eq!(app.estate_count(created.company_id).await, 0);
}

#[tokio::test]
async fn a_failed_registration_gives_its_spare_back() {
    let app = spawn_app().await;
    spares::replenish(&app.state.db, &TenantMigrations::embedded(), 1)
        .await
        .unwrap();
    let db = app.database.client().await;
    fail_owner_inserts(&db).await;
    let roles = app.database.roles().await;
    let resp = register_doomed(&app).await;
    problem(resp, 500).await;
    assert_eq!(
        spares(&app).await,
        (1, 1),
        "the spare is still listed, unrenamed"
    );
    assert_eq!(app.database.roles().await, roles);
    assert_eq!(registered(&app).await, 0);
}

#[tokio::test]
async fn concurrent_registrations_take_different_spares() {
    let app = spawn_app().await;
    spares::replenish(&app.state.db, &TenantMigrations::embedded(), 2)
        .await
        .unwrap();
    let names = ["One", "Two", "Three", "Four"];
    let tenants = futures::future::join_all(names.iter().map(|n| app.register(n))).await;
    assert_eq!(spares(&app).await, (0, 0), "both spares taken, each once");
    let client = app.database.client().await;
    let naming = app.state.db.naming().clone();
    let first = schema_snapshot(&client, &naming.tenant(CompanyId(tenants[0].company_id))).await;
    for t in &tenants[1..] {
        let snapshot = schema_snapshot(&client, &naming.tenant(CompanyId(t.company_id))).await;
        assert_eq!(snapshot, first);
    }
    for t in &tenants {
        let listed = app.get("/api/v1/estates", &t.access_token).await;
        assert_eq!(listed.status(), 200);
    }
}

#[tokio::test]
async fn spares_of_an_older_version_are_not_claimed_and_are_replaced() {
    let app = spawn_app().await;
    let db: &Db = &app.state.db;
    let embedded = TenantMigrations::embedded();
    spares::replenish(db, &embedded, 2).await.unwrap();
    let old_roles: Vec<String> = app
        .database
        .client()
        .await
        .query("SELECT role_name FROM tenant_spares", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let newer = embedded
        .and_then(
            &format!("V{}__spare_note", embedded.latest() + 1),
            "ALTER TABLE estates ADD COLUMN spare_note text;",
        )
        .unwrap();

    // A binary expecting the newer version builds its tenant instead of claiming one.
    let company = CompanyId(Uuid::now_v7());
    let tenant = db.naming().tenant(company);
    let mut conn = db.shared().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO companies (id, name, slug) VALUES ($1, 'Newer', 'newer')",
        &[&company.0],
    )
    .await
    .unwrap();
    provision_tenant(&tx, db.naming(), &tenant, &newer)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(spares(&app).await, (2, 2), "old spares untouched");
    let client = app.database.client().await;
    let has_note = |schema: String| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM information_schema.columns
                     WHERE table_schema = $1 AND table_name = 'estates' AND column_name = 'spare_note'",
                    &[&schema],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(has_note(tenant.schema.as_str().to_string()).await, 1);

    // Its keeper drops the old spares with their roles and builds new ones.
    assert_eq!(spares::replenish(db, &newer, 1).await.unwrap(), 1);
    assert_eq!(spares(&app).await, (1, 1));
    let row = client
        .query_one("SELECT schema_name, schema_version FROM tenant_spares", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), newer.latest());
    assert_eq!(has_note(row.get(0)).await, 1);
    let roles = app.database.roles().await;
    assert!(
        old_roles.iter().all(|r| !roles.contains(r)),
        "old spares' roles dropped"
    );
    // The older binary leaves the newer spare alone, and builds no more of its own.
    assert_eq!(spares::replenish(db, &embedded, 2).await.unwrap(), 0);
    assert_eq!(spares(&app).await, (1, 1));
}

#[tokio::test]
async fn the_server_keeps_its_spares_topped_up() {
    let app = spawn_app_with(&[("TENANT_SPARES", "2")]).await;
    let ready = |want: (i64, i64)| {
        let app = &app;
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), async {
                while spares(app).await != want {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{want:?} spares within 30 s"));
        }
    };
    ready((2, 2)).await;
    let t = app.register("Topped").await;
    ready((2, 2)).await;
    assert_eq!(registered(&app).await, 1);
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        200
    );
}
