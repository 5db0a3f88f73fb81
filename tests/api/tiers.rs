//! Plans (SPEC §5): features per tier, resource ceilings under concurrency, and
//! subscription changes in local mode (no Stripe configured).

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, problem, spawn_app};
use crate::permissions::member_of;
use crate::sales::{client, created, id, property};

async fn feature_refused(resp: reqwest::Response, feature: &str) {
    let p = problem(resp, 403).await;
    assert_eq!(p["type"], "/problems/feature-not-in-plan", "{p}");
    assert_eq!(p["feature"], feature, "{p}");
    assert!(p["detail"].as_str().unwrap().contains(feature), "{p}");
}

#[tokio::test]
async fn each_tier_has_exactly_its_features() {
    let app = spawn_app().await;
    let t = app.register_on("Small", "starter").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "E"})).await;
    let stats = format!("/api/v1/estates/{}/statistics", id(&estate));

    feature_refused(
        app.get("/api/v1/transactions/export", token).await,
        "csv_export",
    )
    .await;
    feature_refused(app.get(&stats, token).await, "advanced_statistics").await;
    feature_refused(
        app.get("/api/v1/transactions/statistics", token).await,
        "advanced_statistics",
    )
    .await;
    feature_refused(
        app.get("/api/v1/audit-logs", token).await,
        "audit_log_access",
    )
    .await;
    feature_refused(
        app.post(
            "/api/v1/api-keys",
            Some(token),
            json!({"name": "k", "scope": "read"}),
        )
        .await,
        "api_keys",
    )
    .await;
    feature_refused(
        app.post(
            "/api/v1/oauth-clients",
            Some(token),
            json!({"name": "c", "scope": "read"}),
        )
        .await,
        "oauth_clients",
    )
    .await;
    // A feature chosen by the request body: installment plans.
    let p = property(&app, token, id(&estate), "P-1", "1000").await;
    feature_refused(
        app.post(
            "/api/v1/properties/bulk_price_update",
            Some(token),
            json!({"updates": [{"id": id(&p), "price": "2000.00"}]}),
        )
        .await,
        "bulk_operations",
    )
    .await;
    let buyer = client(&app, token, "Buyer").await;
    let installment =
        json!({"property_id": id(&p), "client_id": id(&buyer), "payment_plan": "installment"});
    feature_refused(
        app.post("/api/v1/allocations", Some(token), installment.clone())
            .await,
        "installment_plans",
    )
    .await;
    // Refusals change nothing: the property is still available.
    let still = app
        .get(&format!("/api/v1/properties/{}", id(&p)), token)
        .await;
    assert_eq!(still.json::<Value>().await.unwrap()["status"], "available");

    app.set_tier(t.company_id, "professional").await;
    assert_eq!(
        app.get("/api/v1/transactions/export", token).await.status(),
        200
    );
    assert_eq!(app.get(&stats, token).await.status(), 200);
    created(
        app.post("/api/v1/allocations", Some(token), installment)
            .await,
    )
    .await;
    let key = created(
        app.post(
            "/api/v1/api-keys",
            Some(token),
            json!({"name": "k", "scope": "read"}),
        )
        .await,
    )
    .await;
    feature_refused(
        app.get("/api/v1/audit-logs", token).await,
        "audit_log_access",
    )
    .await;
    feature_refused(
        app.get("/api/v1/oauth-clients", token).await,
        "oauth_clients",
    )
    .await;

    // A key made on professional stops working when the plan loses API keys.
    let with_key = |path: &str| {
        app.http
            .get(app.url(path))
            .header("X-API-Key", key["key"].as_str().unwrap())
            .send()
    };
    assert_eq!(with_key("/api/v1/estates").await.unwrap().status(), 200);
    app.set_tier(t.company_id, "starter").await;
    feature_refused(with_key("/api/v1/estates").await.unwrap(), "api_keys").await;

    app.set_tier(t.company_id, "enterprise").await;
    assert_eq!(app.get("/api/v1/audit-logs", token).await.status(), 200);
    assert_eq!(app.get("/api/v1/oauth-clients", token).await.status(), 200);
}

#[tokio::test]
async fn ten_simultaneous_creates_at_the_limit_minus_one_let_exactly_one_through() {
    let app = spawn_app().await;
    let t = app.register_on("Small", "starter").await; // starter: 3 estates
    let token = t.access_token.as_str();
    for n in 0..2 {
        app.create_estate(token, json!({"name": format!("E{n}")}))
            .await;
    }
    let attempts = (0..10).map(|n| {
        app.post(
            "/api/v1/estates",
            Some(token),
            json!({"name": format!("Race {n}")}),
        )
    });
    let mut statuses = Vec::new();
    for resp in join_all(attempts).await {
        let status = resp.status().as_u16();
        if status == 403 {
            let p: Value = resp.json().await.unwrap();
            assert_eq!(p["type"], "/problems/plan-limit-reached", "{p}");
            assert_eq!(p["limit"], "estates");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [201, 403, 403, 403, 403, 403, 403, 403, 403, 403]);
    assert_eq!(app.estate_count(t.company_id).await, 3);

    // The next tier's ceiling applies as soon as the company is on it.
    app.set_tier(t.company_id, "professional").await;
    app.create_estate(token, json!({"name": "Fourth"})).await;
}

async fn create_user(app: &TestApp, token: &str) -> reqwest::Response {
    let email = format!("{}@staff.example", Uuid::new_v4().simple());
    app.post(
        "/api/v1/users",
        Some(token),
        json!({"email": email, "full_name": "Staff", "role": "viewer", "password": PASSWORD}),
    )
    .await
}

#[tokio::test]
async fn the_user_ceiling_counts_active_users() {
    let app = spawn_app().await;
    let t = app.register_on("Small", "starter").await; // starter: 5 users
    let token = t.access_token.as_str();
    let mut staff = Vec::new();
    for _ in 0..4 {
        staff.push(created(create_user(&app, token).await).await);
    }
    let p = problem(create_user(&app, token).await, 403).await;
    assert_eq!(p["limit"], "users");
    // Deactivating a user frees a seat; reactivating needs one.
    let toggle = |user: &Value| format!("/api/v1/users/{}/toggle_status", id(user));
    assert_eq!(
        app.post(&toggle(&staff[0]), Some(token), json!({}))
            .await
            .status(),
        200
    );
    created(create_user(&app, token).await).await;
    let p = problem(
        app.post(&toggle(&staff[0]), Some(token), json!({})).await,
        403,
    )
    .await;
    assert_eq!(p["limit"], "users");
}

async fn subscription(app: &TestApp, token: &str) -> Value {
    let resp = app.get("/api/v1/subscriptions/current", token).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn history_events(app: &TestApp, token: &str) -> Vec<String> {
    let resp = app
        .get("/api/v1/subscriptions/billing_history", token)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// Moves the company's period end into the past, as if the period had run out.
async fn end_period(app: &TestApp, company: Uuid) {
    app.database
        .client()
        .await
        .execute(
            "UPDATE companies SET current_period_end = now() - interval '1 second' WHERE id = $1",
            &[&company],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn plan_changes_in_local_mode() {
    let app = spawn_app().await;
    let t = app.register_on("Growing", "starter").await;
    let token = t.access_token.as_str();
    let current = subscription(&app, token).await;
    assert_eq!(current["tier"], "starter");
    assert_eq!(current["status"], "active");
    assert_eq!(current["billing_mode"], "local");
    assert_eq!(current["plan"]["max_estates"], 3);
    assert_eq!(current["usage"]["users"], 1);

    // Only the owner changes the plan.
    let (_, admin) = member_of(&app, &t, "admin").await;
    let upgrade = json!({"tier": "professional"});
    problem(
        app.post(
            "/api/v1/subscriptions/upgrade",
            Some(&admin),
            upgrade.clone(),
        )
        .await,
        403,
    )
    .await;

    let up = app
        .post("/api/v1/subscriptions/upgrade", Some(token), upgrade)
        .await;
    assert_eq!(up.status(), 200);
    assert_eq!(up.json::<Value>().await.unwrap()["tier"], "professional");
    let same = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "professional"}),
        )
        .await;
    assert!(problem(same, 422).await["errors"]["tier"].is_array());
    let bad = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "platinum"}),
        )
        .await;
    assert!(problem(bad, 422).await["errors"]["tier"].is_array());

    // Using more than starter allows blocks the downgrade, naming the limit.
    let estates: Vec<Value> =
        join_all((0..4).map(|n| app.create_estate(token, json!({"name": format!("E{n}")})))).await;
    let refused = app
        .post(
            "/api/v1/subscriptions/downgrade",
            Some(token),
            json!({"tier": "starter"}),
        )
        .await;
    let p = problem(refused, 409).await;
    assert_eq!(
        p["errors"]["estates"][0], "4 in use; the starter plan allows 3",
        "{p}"
    );
    assert!(p["errors"].get("users").is_none());
    let gone = app
        .request(
            Method::DELETE,
            &format!("/api/v1/estates/{}", id(&estates[0])),
            Some(token),
            None,
        )
        .await;
    assert_eq!(gone.status(), 204);
    let down = app
        .post(
            "/api/v1/subscriptions/downgrade",
            Some(token),
            json!({"tier": "starter"}),
        )
        .await;
    let down: Value = down.json().await.unwrap();
    assert_eq!(
        down["tier"], "professional",
        "the downgrade waits for the period's end"
    );
    assert_eq!(down["pending_tier"], "starter");
    assert_eq!(
        app.get("/api/v1/transactions/export", token).await.status(),
        200
    );

    end_period(&app, t.company_id).await;
    let after = subscription(&app, token).await;
    assert_eq!(after["tier"], "starter");
    assert!(after["pending_tier"].is_null());
    let renewed: chrono::DateTime<chrono::Utc> = after["current_period_end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(renewed > chrono::Utc::now(), "a local period renews");
    feature_refused(
        app.get("/api/v1/transactions/export", token).await,
        "csv_export",
    )
    .await;

    // Cancelling ends the subscription at the period's end: then the data is read-only.
    let cancel = app
        .post("/api/v1/subscriptions/cancel", Some(token), json!({}))
        .await;
    assert_eq!(
        cancel.json::<Value>().await.unwrap()["cancel_at_period_end"],
        true
    );
    problem(
        app.post("/api/v1/subscriptions/cancel", Some(token), json!({}))
            .await,
        409,
    )
    .await;
    end_period(&app, t.company_id).await;
    assert_eq!(subscription(&app, token).await["status"], "canceled");
    let p = problem(
        app.post("/api/v1/estates", Some(token), json!({"name": "No"}))
            .await,
        402,
    )
    .await;
    assert_eq!(p["type"], "/problems/subscription-inactive");
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200);
    // Renewing is allowed while cancelled, and writes work again.
    let renew = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "starter"}),
        )
        .await;
    assert_eq!(renew.json::<Value>().await.unwrap()["status"], "active");
    created(
        app.post("/api/v1/clients", Some(token), json!({"full_name": "Back"}))
            .await,
    )
    .await;

    assert_eq!(
        history_events(&app, token).await,
        [
            "resumed",
            "canceled",
            "cancel_scheduled",
            "downgrade_applied",
            "downgrade_scheduled",
            "upgrade"
        ]
    );
    // Each change is in the audit log, with the state before and after.
    app.set_tier(t.company_id, "enterprise").await; // audit logs are an enterprise feature
    let audit = app
        .get("/api/v1/audit-logs?action=subscription_change", token)
        .await;
    let entries: Value = audit.json().await.unwrap();
    let entries = entries["results"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{entries:?}");
    let by_system = entries
        .iter()
        .filter(|e| e["actor_kind"] == "system")
        .count();
    assert_eq!(by_system, 2, "the period's end applied two changes");
    let first = entries.last().unwrap();
    assert_eq!(first["before"]["tier"], "starter");
    assert_eq!(first["after"]["tier"], "professional");
}

#[tokio::test]
async fn an_unpaid_company_reads_but_answers_402_to_writes() {
    let app = spawn_app().await;
    let t = app.register("Late payer").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Kept"})).await;
    app.database
        .client()
        .await
        .execute(
            "UPDATE companies SET subscription_status = 'past_due' WHERE id = $1",
            &[&t.company_id],
        )
        .await
        .unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/estates".to_string(),
            Some(json!({"name": "New"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/estates/{}", id(&estate)),
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::POST,
            "/api/v1/clients".to_string(),
            Some(json!({"full_name": "C"})),
        ),
    ] {
        let resp = app.request(method, &path, Some(token), body).await;
        assert!(
            problem(resp, 402).await["detail"]
                .as_str()
                .unwrap()
                .contains("unpaid")
        );
    }
    assert_eq!(app.estate_count(t.company_id).await, 1);
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200);
    // Security stays possible: changing one's password.
    let change = app
        .post(
            &format!("/api/v1/users/{}/change_password", t.user_id),
            Some(token),
            json!({"current_password": crate::helpers::PASSWORD, "new_password": "another long passphrase"}),
        )
        .await;
    assert_eq!(change.status(), 204);
    assert_eq!(subscription(&app, token).await["status"], "past_due");
}

/// The mechanism behind the test above, step by step: a second creating transaction waits
/// on the first one's lock, then counts what the first committed.
#[tokio::test]
async fn a_creating_transaction_waits_for_the_one_before_it_then_counts_its_row() {
    use estate::billing::limits;
    use estate::billing::plans::Resource;
    use estate::db::tenancy::CompanyId;

    let app = spawn_app().await;
    let t = app.register_on("Small", "starter").await;
    for n in 0..2 {
        app.create_estate(&t.access_token, json!({"name": format!("E{n}")}))
            .await;
    }
    let db = app.state.db.clone();
    let company = CompanyId(t.company_id);
    let mut first = db.tenant_tx(company).await.unwrap();
    limits::reserve(&mut first, Resource::Estates, 1)
        .await
        .unwrap();
    first
        .execute(
            "INSERT INTO estates (id, name, created_by) VALUES ($1, 'third', $2)",
            &[&Uuid::now_v7(), &t.user_id],
        )
        .await
        .unwrap();

    let second = tokio::spawn(async move {
        let mut tx = db.tenant_tx(company).await.unwrap();
        limits::reserve(&mut tx, Resource::Estates, 1).await
    });
    // Wait until the second transaction is blocked on the advisory lock (bounded, so a
    // second transaction that never waits fails the test instead of hanging it).
    let admin = app.database.client().await;
    let blocked = async {
        loop {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                     WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1",
                    &[&app.database.name],
                )
                .await
                .unwrap()
                .get(0);
            if waiting == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), blocked)
        .await
        .expect("the second transaction waits for the first one's lock");
    first.commit().await.unwrap();
    let refused = second.await.unwrap().unwrap_err();
    assert!(
        matches!(
            refused,
            estate::error::AppError::PlanLimitReached {
                resource: "estates",
                limit: 3,
                ..
            }
        ),
        "{refused:?}"
    );
}
