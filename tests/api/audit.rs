//! The audit log: written with the change it records (and not without it), append-only
//! for the tenant role, and listed with filters.

use estate::db::tenancy::CompanyId;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

use crate::helpers::{PASSWORD, TestApp, problem, spawn_app};
use crate::permissions::member_of;

async fn entries(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let resp = app
        .get(&format!("/api/v1/audit-logs?page_size=100{query}"), token)
        .await;
    assert_eq!(resp.status(), 200, "audit-logs{query}");
    resp.json::<Value>().await.unwrap()["results"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn estate_changes_are_recorded_with_who_what_before_after_and_origin() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let create = app
        .http
        .post(app.url("/api/v1/estates"))
        .bearer_auth(&t.access_token)
        .header("x-request-id", "req-create-1")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"name": "Palm Court"}))
        .send()
        .await
        .unwrap();
    let estate: Value = create.json().await.unwrap();
    let id = estate["id"].as_str().unwrap();
    let path = format!("/api/v1/estates/{id}");
    app.request(
        Method::PATCH,
        &path,
        Some(&t.access_token),
        Some(json!({"status": "active"})),
    )
    .await;
    app.request(Method::DELETE, &path, Some(&t.access_token), None)
        .await;

    let log = entries(
        &app,
        &t.access_token,
        &format!("&object_type=estate&object_id={id}&ordering=created_at"),
    )
    .await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "update", "delete"]);
    let created = &log[0];
    assert_eq!(created["actor_id"], t.user_id.to_string());
    assert_eq!(created["actor_kind"], "user");
    assert_eq!(created["after"]["name"], "Palm Court");
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["request_id"], "req-create-1");
    assert_eq!(created["user_agent"], "audit-test/1.0");
    assert_eq!(created["ip"], "127.0.0.1");
    assert_eq!(log[1]["before"]["status"], "planning");
    assert_eq!(log[1]["after"]["status"], "active");
    assert_eq!(log[2]["before"]["status"], "active");
    assert_eq!(log[2]["after"], Value::Null);
}

#[tokio::test]
async fn refused_changes_leave_no_entry_but_a_refusal_by_the_table_is_recorded() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let (member, member_token) = member_of(&app, &t, "member").await;
    let estate = app
        .create_estate(&t.access_token, json!({"name": "Owner's"}))
        .await;
    let path = format!("/api/v1/estates/{}", estate["id"].as_str().unwrap());
    let before = entries(&app, &t.access_token, "").await.len();

    problem(
        app.post(
            "/api/v1/estates",
            Some(&t.access_token),
            json!({"name": ""}),
        )
        .await,
        422,
    )
    .await;
    let foreign = app
        .request(
            Method::PATCH,
            &path,
            Some(&member_token),
            Some(json!({"name": "Mine"})),
        )
        .await;
    problem(foreign, 403).await;
    assert_eq!(
        entries(&app, &t.access_token, "").await.len(),
        before,
        "rolled back with the refused change"
    );

    problem(app.get("/api/v1/audit-logs", &member_token).await, 403).await;
    let denied = entries(&app, &t.access_token, "&action=permission_denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["actor_id"], member.to_string());
    assert_eq!(denied[0]["after"]["operation"], "AuditLogsList");
}

#[tokio::test]
async fn sessions_and_account_changes_are_recorded() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let (member, _) = member_of(&app, &t, "member").await;
    let login = |password: &str| {
        let app = &app;
        let body = json!({"email": t.email, "password": password});
        async move { app.post("/api/v1/auth/login", None, body).await }
    };
    problem(login("wrong password!").await, 401).await;
    let fresh: Value = login(PASSWORD).await.json().await.unwrap();
    let token = fresh["access_token"].as_str().unwrap().to_string();
    app.post(
        &format!("/api/v1/users/{member}/toggle_status"),
        Some(&token),
        json!({}),
    )
    .await;
    let change = app
        .post(
            &format!("/api/v1/users/{}/change_password", t.user_id),
            Some(&token),
            json!({"current_password": PASSWORD, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(change.status(), 204);

    let log = entries(&app, &token, "&ordering=created_at").await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in [
        "create",
        "login_failed",
        "login",
        "user_status_change",
        "password_change",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let status = log
        .iter()
        .find(|e| e["action"] == "user_status_change")
        .unwrap();
    assert_eq!(status["object_id"], member.to_string());
    assert_eq!(status["before"]["is_active"], true);
    assert_eq!(status["after"]["is_active"], false);
    assert!(
        log.iter()
            .all(|e| e["after"].get("password_hash").is_none()),
        "no hashes in the log"
    );

    let resp = app
        .post("/api/v1/auth/logout", Some(&token), json!({}))
        .await;
    assert_eq!(resp.status(), 204);
    let relogin: Value = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": t.email, "password": "another long password"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let after = entries(
        &app,
        relogin["access_token"].as_str().unwrap(),
        "&action=logout",
    )
    .await;
    assert_eq!(after.len(), 1);
}

#[tokio::test]
async fn the_tenant_role_can_add_entries_but_never_change_or_remove_them() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    app.create_estate(&t.access_token, json!({"name": "Logged"}))
        .await;
    let db = &app.state.db;
    for sql in [
        "UPDATE audit_log SET action = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let mut tx = db.tenant_tx(CompanyId(t.company_id)).await.unwrap();
        let err = tx.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(
            err.sql_state(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    let mut tx = db.tenant_tx(CompanyId(t.company_id)).await.unwrap();
    let rows = tx
        .query(
            "SELECT count(*) FROM audit_log WHERE action = 'create'",
            &[],
        )
        .await
        .unwrap();
    assert!(rows[0].get::<_, i64>(0) >= 1);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn each_company_sees_only_its_own_log_and_filters_apply() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    app.create_estate(&b.access_token, json!({"name": "Beta's"}))
        .await;
    let mine = entries(&app, &a.access_token, "").await;
    assert!(
        mine.iter()
            .all(|e| e["actor_id"] == a.user_id.to_string() || e["actor_id"].is_null())
    );
    assert!(
        entries(&app, &a.access_token, "&object_type=estate")
            .await
            .is_empty()
    );
    assert_eq!(
        entries(&app, &b.access_token, "&object_type=estate")
            .await
            .len(),
        1
    );
    assert!(
        entries(&app, &b.access_token, "&created_after=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        entries(&app, &b.access_token, &format!("&actor={}", b.user_id))
            .await
            .len(),
        1
    );
    for bad in [
        "&action=hacked",
        "&created_before=soon",
        "&ordering=actor_id",
    ] {
        problem(
            app.get(&format!("/api/v1/audit-logs?{bad}"), &b.access_token)
                .await,
            422,
        )
        .await;
    }
    problem(
        app.get("/api/v1/audit-logs?actor=not-a-uuid", &b.access_token)
            .await,
        400,
    )
    .await;
}
