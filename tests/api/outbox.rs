//! The outbox: jobs are written with the change that causes them, never without it, once
//! per idempotency key; tenant transactions may add jobs and do nothing else to them.

use estate::db::tenancy::CompanyId;
use estate_jobs::WelcomeEmail;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, problem, spawn_app};

async fn jobs(app: &TestApp, name: &str) -> Vec<(Uuid, Value)> {
    let client = app.database.client().await;
    client
        .query(
            "SELECT company_id, payload FROM outbox WHERE job = $1 ORDER BY created_at",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn user_creation_and_password_change_queue_their_emails_with_the_change() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let body = json!({"email": "new.agent@example.com", "full_name": "New Agent", "role": "member", "password": PASSWORD});
    let created: Value = app
        .post("/api/v1/users", Some(&t.access_token), body.clone())
        .await
        .json()
        .await
        .unwrap();
    problem(
        app.post("/api/v1/users", Some(&t.access_token), body).await,
        409,
    )
    .await;

    let welcome = jobs(&app, "welcome_email").await;
    assert_eq!(welcome.len(), 1, "the refused duplicate queued nothing");
    assert_eq!(welcome[0].0, t.company_id);
    assert_eq!(welcome[0].1["user_id"], created["id"]);
    assert_eq!(welcome[0].1["email"], "new.agent@example.com");
    assert_eq!(welcome[0].1["company_id"], t.company_id.to_string());

    let path = format!("/api/v1/users/{}/change_password", t.user_id);
    let wrong = app
        .post(
            &path,
            Some(&t.access_token),
            json!({"current_password": "nope nope", "new_password": "a brand new password"}),
        )
        .await;
    problem(wrong, 422).await;
    assert!(jobs(&app, "password_changed_email").await.is_empty());
    let ok = app
        .post(
            &path,
            Some(&t.access_token),
            json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(ok.status(), 204);
    let changed = jobs(&app, "password_changed_email").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].1["email"], t.email.as_str());
}

#[tokio::test]
async fn tenant_transactions_may_only_add_jobs_and_each_key_once() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let company = CompanyId(t.company_id);
    let job = WelcomeEmail {
        company_id: t.company_id,
        user_id: Uuid::now_v7(),
        email: "x@example.com".into(),
        full_name: "X".into(),
    };
    for _ in 0..2 {
        let mut tx = app.state.db.tenant_tx(company).await.unwrap();
        estate::outbox::enqueue(&mut tx, &job).await.unwrap();
        tx.commit().await.unwrap();
    }
    let queued: Vec<_> = jobs(&app, "welcome_email")
        .await
        .into_iter()
        .filter(|(_, p)| p["user_id"] == job.user_id.to_string())
        .collect();
    assert_eq!(queued.len(), 1, "the same idempotency key is queued once");

    for sql in [
        "SELECT payload FROM public.outbox",
        "UPDATE public.outbox SET relayed_at = now()",
        "DELETE FROM public.outbox",
    ] {
        let mut tx = app.state.db.tenant_tx(company).await.unwrap();
        let err = tx.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(
            err.sql_state(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
}
