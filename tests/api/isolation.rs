//! Tenant isolation: another tenant's ids are 404, concurrent mixed-tenant load never
//! leaks rows, the tenant role cannot reach other schemas even by qualified name, and no
//! tenant setting survives on a pooled connection.

use std::collections::{HashMap, HashSet};

use estate::db::Db;
use estate::db::tenancy::{CompanyId, SchemaName};
use futures::future::join_all;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::{problem, spawn_app};

#[tokio::test]
async fn another_tenants_estate_answers_404_on_every_method() {
    let app = spawn_app().await;
    let a = app.register("Alpha Homes").await;
    let b = app.register("Beta Homes").await;
    let estate = app
        .create_estate(&a.access_token, json!({"name": "Alpha Gardens"}))
        .await;
    let path = format!("/api/v1/estates/{}", estate["id"].as_str().unwrap());

    let missing = format!("/api/v1/estates/{}", Uuid::now_v7());
    let missing_body = problem(app.get(&missing, &b.access_token).await, 404).await;
    let foreign_body = problem(app.get(&path, &b.access_token).await, 404).await;
    assert_eq!(
        missing_body["detail"], foreign_body["detail"],
        "a foreign id looks exactly like a missing one"
    );

    let patch = app
        .request(
            Method::PATCH,
            &path,
            Some(&b.access_token),
            Some(json!({"name": "Stolen"})),
        )
        .await;
    problem(patch, 404).await;
    problem(
        app.request(Method::DELETE, &path, Some(&b.access_token), None)
            .await,
        404,
    )
    .await;

    let still: Value = app.get(&path, &a.access_token).await.json().await.unwrap();
    assert_eq!(still["name"], "Alpha Gardens");
    assert_eq!(app.estate_count(a.company_id).await, 1);
}

#[tokio::test]
async fn six_hundred_concurrent_mixed_tenant_requests_see_only_their_own_rows() {
    let app = spawn_app().await;
    let mut tenants = Vec::new();
    let mut owner_of: HashMap<String, usize> = HashMap::new();
    for i in 0..6 {
        let t = app.register(&format!("Company {i}")).await;
        let mut ids = HashSet::new();
        // Different sizes per tenant, so a leaked or swapped answer shows in the count too.
        for j in 0..=i {
            let e = app
                .create_estate(&t.access_token, json!({"name": format!("C{i} estate {j}")}))
                .await;
            let id = e["id"].as_str().unwrap().to_string();
            owner_of.insert(id.clone(), i);
            ids.insert(id);
        }
        tenants.push((t, ids));
    }
    let all_ids: Vec<String> = owner_of.keys().cloned().collect();

    let mut rng = rand::rng();
    let plan: Vec<(usize, Option<String>)> = (0..600)
        .map(|n| {
            let tenant = n % tenants.len();
            // Half list requests, half fetches of a random estate of any tenant.
            let target = (n % 2 == 1).then(|| all_ids.choose(&mut rng).unwrap().clone());
            (tenant, target)
        })
        .collect();

    let results = join_all(plan.iter().map(|(tenant, target)| {
        let token = tenants[*tenant].0.access_token.clone();
        let app = &app;
        async move {
            let path = match target {
                None => "/api/v1/estates?page_size=100".to_string(),
                Some(id) => format!("/api/v1/estates/{id}"),
            };
            let resp = app.get(&path, &token).await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    }))
    .await;

    for ((tenant, target), (status, body)) in plan.iter().zip(results) {
        let own = &tenants[*tenant].1;
        match target {
            None => {
                assert_eq!(status, 200);
                let got: HashSet<String> = body["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(
                    &got, own,
                    "tenant {tenant} listed rows that are not its own"
                );
                assert_eq!(body["count"], own.len());
            }
            Some(id) if owner_of[id] == *tenant => {
                assert_eq!(status, 200);
                assert_eq!(body["id"], id.as_str());
            }
            Some(_) => assert_eq!(
                status, 404,
                "tenant {tenant} fetched another tenant's estate"
            ),
        }
    }
}

fn sql_state(e: &estate::db::DbError) -> Option<SqlState> {
    e.sql_state().cloned()
}

#[tokio::test]
async fn tenant_role_cannot_read_other_schemas_even_by_qualified_name() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    app.create_estate(&b.access_token, json!({"name": "Beta's secret"}))
        .await;
    let b_schema = SchemaName::for_company(CompanyId(b.company_id));

    let db = &app.state.db;
    let mut tx = db.tenant_tx(CompanyId(a.company_id)).await.unwrap();
    let err = tx
        .query(
            &format!("SELECT name FROM {}.estates", b_schema.quoted()),
            &[],
        )
        .await
        .expect_err("reading another tenant's schema must fail");
    assert_eq!(
        sql_state(&err),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    drop(tx);

    // Nor the shared schema's credentials. (SET ROLE is checked against the session user,
    // so the tenant role guards against mistaken queries, not against injected SQL: every
    // query here is parameterized.)
    for sql in [
        "SELECT email FROM public.users",
        "SELECT token_hash FROM public.refresh_tokens",
    ] {
        let mut tx = db.tenant_tx(CompanyId(a.company_id)).await.unwrap();
        let err = tx.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            sql_state(&err),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }

    // Its own schema it can read, as its own role.
    let mut tx = db.tenant_tx(CompanyId(a.company_id)).await.unwrap();
    let row = tx
        .query("SELECT current_user::text, count(*) FROM estates", &[])
        .await
        .unwrap();
    assert_eq!(
        row[0].get::<_, String>(0),
        db.naming().tenant(CompanyId(a.company_id)).role.as_str()
    );
    tx.commit().await.unwrap();
}

/// Nothing a tenant transaction sets outlives it on the pooled connection, whether it
/// commits or is dropped half-way.
#[tokio::test]
async fn no_tenant_state_survives_on_a_pooled_connection() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let mut config = app.database.config.clone();
    config.database_pool_size = 1; // every checkout below is the same connection
    let db = Db::connect(&config).unwrap();
    let company = CompanyId(a.company_id);

    let assert_clean = |conn: deadpool_postgres::Object| async move {
        let row = conn
            .query_one(
                "SELECT current_setting('search_path'), current_user::text",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "\"$user\", public");
        assert_eq!(row.get::<_, String>(1), "postgres");
        // SAVEPOINT fails outside a transaction block: proof that none is left open.
        assert!(conn.batch_execute("SAVEPOINT probe").await.is_err());
    };

    let mut tx = db.tenant_tx(company).await.unwrap();
    tx.query("SELECT count(*) FROM estates", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert_clean(db.shared().await.unwrap()).await;

    // The read-only commit does not wait for the server's answer: the COMMIT must still
    // reach the server before anything the next borrower sends.
    let mut tx = db.tenant_tx(company).await.unwrap();
    tx.query("SELECT count(*) FROM estates", &[]).await.unwrap();
    tx.commit_read_only().unwrap();
    assert_clean(db.shared().await.unwrap()).await;

    let mut tx = db.tenant_tx(company).await.unwrap();
    tx.execute(
        "INSERT INTO estates (id, name, created_by) VALUES ($1, 'never committed', $2)",
        &[&Uuid::now_v7(), &a.user_id],
    )
    .await
    .unwrap();
    drop(tx); // no commit: must roll back before the connection is reused
    assert_clean(db.shared().await.unwrap()).await;
    assert_eq!(app.estate_count(a.company_id).await, 0);
}

/// The session check executes a statement each pooled connection prepares when created. On
/// a connection without it, the transaction must fail, never run unchecked.
#[tokio::test]
async fn a_guarded_transaction_fails_closed_without_its_prepared_check() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let principal =
        estate::auth::session::authenticate(&app.state.jwt, &a.access_token, Default::default())
            .unwrap();
    let guard =
        || estate::auth::verdict::guard(&principal, estate::auth::permissions::Rule::any_session());

    let bare = Db::connect(&app.database.config).unwrap();
    let mut tx = bare
        .guarded_tenant_tx(CompanyId(a.company_id), guard())
        .await
        .unwrap();
    assert!(tx.query("SELECT count(*) FROM estates", &[]).await.is_err());

    // The server's own pool has it, and the same check passes there.
    let mut tx = app
        .state
        .db
        .guarded_tenant_tx(CompanyId(a.company_id), guard())
        .await
        .unwrap();
    let rows = tx.query("SELECT count(*) FROM estates", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    tx.commit().await.unwrap();
}

/// A pooled connection prepares each tenant its own copy of a statement (so its plan
/// survives tenant switches) up to a bound, then shares one copy among the rest: both
/// read the asking tenant's tables, however the tenants alternate.
#[tokio::test]
async fn own_and_shared_statement_copies_each_read_the_asking_tenants_tables() {
    let app = spawn_app().await;
    let a = app.register("Copies A").await;
    let b = app.register("Copies B").await;
    for name in ["A1", "A2"] {
        app.create_estate(&a.access_token, json!({"name": name, "location": "L"}))
            .await;
    }
    app.create_estate(&b.access_token, json!({"name": "B1", "location": "L"}))
        .await;
    // One connection, so every transaction below shares its statement cache.
    let config = crate::helpers::config_with(&app.database.name, &[("DATABASE_POOL_SIZE", "1")]);
    let db = Db::connect(&config).unwrap();
    let count = |company: Uuid| {
        let db = &db;
        async move {
            let mut tx = db.tenant_tx(CompanyId(company)).await.unwrap();
            let n: i64 = tx.query("SELECT count(*) FROM estates", &[]).await.unwrap()[0].get(0);
            tx.commit().await.unwrap();
            n
        }
    };
    let cached = || {
        let db = &db;
        async move { db.shared().await.unwrap().statement_cache.size() }
    };
    for _ in 0..2 {
        assert_eq!(count(a.company_id).await, 2);
        assert_eq!(count(b.company_id).await, 1);
    }
    assert_eq!(cached().await, 2, "one copy per tenant");

    // Fill the connection's cache to the bound: from now on the tenants share one copy.
    let filled = {
        let conn = db.shared().await.unwrap();
        for i in 0..500 {
            conn.prepare_cached(&format!("SELECT {i}")).await.unwrap();
        }
        conn.statement_cache.size()
    };
    for _ in 0..2 {
        assert_eq!(count(b.company_id).await, 1);
        assert_eq!(count(a.company_id).await, 2);
    }
    assert_eq!(
        cached().await,
        filled + 1,
        "one shared copy, no more own ones"
    );
}
