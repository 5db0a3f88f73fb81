//! Idempotency-Key: a retry gets the first answer and changes nothing twice.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};

async fn keyed_post(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: Value,
) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_create_returns_the_first_answer_and_creates_once() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let first = keyed_post(
        &app,
        token,
        "/api/v1/estates",
        "create-1",
        json!({"name": "Once"}),
    )
    .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = keyed_post(
        &app,
        token,
        "/api/v1/estates",
        "create-1",
        json!({"name": "Once"}),
    )
    .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.estate_count(t.company_id).await, 1);

    let other_body = keyed_post(
        &app,
        token,
        "/api/v1/estates",
        "create-1",
        json!({"name": "Twice"}),
    )
    .await;
    assert!(problem(other_body, 422).await["errors"]["Idempotency-Key"].is_array());
    let other_path = keyed_post(
        &app,
        token,
        "/api/v1/clients",
        "create-1",
        json!({"full_name": "Once"}),
    )
    .await;
    problem(other_path, 422).await;
    assert_eq!(app.estate_count(t.company_id).await, 1);

    // Without a key, the same request is simply made again.
    assert_eq!(
        app.post("/api/v1/estates", Some(token), json!({"name": "Once"}))
            .await
            .status(),
        201
    );
    assert_eq!(app.estate_count(t.company_id).await, 2);
    problem(
        keyed_post(
            &app,
            token,
            "/api/v1/estates",
            "bad key with spaces",
            json!({"name": "X"}),
        )
        .await,
        422,
    )
    .await;

    // Keys are per company.
    let b = app.register("Beta").await;
    let theirs: Value = keyed_post(
        &app,
        &b.access_token,
        "/api/v1/estates",
        "create-1",
        json!({"name": "Once"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_ne!(theirs["id"], first["id"]);
}

#[tokio::test]
async fn ten_simultaneous_retries_of_a_payment_pay_once() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Paid once"})).await;
    let property: Value = app
        .post("/api/v1/properties", Some(token), json!({"estate_id": estate["id"], "plot_number": "1", "size_sqm": "1", "price": "1000"}))
        .await
        .json()
        .await
        .unwrap();
    let client: Value = app
        .post(
            "/api/v1/clients",
            Some(token),
            json!({"full_name": "Payer"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let allocation: Value = keyed_post(
        &app,
        token,
        "/api/v1/allocations",
        "allocate-1",
        json!({"property_id": property["id"], "client_id": client["id"], "payment_plan": "installment"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let path = format!(
        "/api/v1/allocations/{}/record_payment",
        allocation["id"].as_str().unwrap()
    );
    let body = json!({"amount": "100", "method": "cash"});

    let answers: Vec<(u16, Value)> = join_all((0..10).map(|_| {
        let (app, path, body) = (&app, &path, body.clone());
        async move {
            let resp = keyed_post(app, token, path, "pay-1", body).await;
            (resp.status().as_u16(), resp.json().await.unwrap())
        }
    }))
    .await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(
            answer["payment"]["id"], answers[0].1["payment"]["id"],
            "every retry sees the one payment"
        );
    }
    let now: Value = app
        .get(
            &format!("/api/v1/allocations/{}", allocation["id"].as_str().unwrap()),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["amount_paid"], "100.00");

    // A request that fails does not use up its key.
    let too_much = json!({"amount": "5000", "method": "cash"});
    problem(
        keyed_post(&app, token, &path, "pay-2", too_much.clone()).await,
        422,
    )
    .await;
    problem(keyed_post(&app, token, &path, "pay-2", too_much).await, 422).await;
    let fixed = keyed_post(
        &app,
        token,
        &path,
        "pay-2",
        json!({"amount": "900", "method": "cash"}),
    )
    .await;
    assert_eq!(fixed.status(), 200);
    assert_eq!(
        fixed.json::<Value>().await.unwrap()["allocation"]["status"],
        "completed"
    );
}

#[tokio::test]
async fn a_retried_user_creation_creates_one_user_and_one_welcome() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let body = json!({"email": "once@example.com", "full_name": "Once", "role": "viewer", "password": "a long password"});
    let first = keyed_post(
        &app,
        &t.access_token,
        "/api/v1/users",
        "user-1",
        body.clone(),
    )
    .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = keyed_post(&app, &t.access_token, "/api/v1/users", "user-1", body).await;
    assert_eq!(
        again.status(),
        201,
        "a replay, not a 409 for the taken e-mail"
    );
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = json!({"email": "twice@example.com", "full_name": "Twice", "role": "viewer", "password": "a long password"});
    problem(
        keyed_post(&app, &t.access_token, "/api/v1/users", "user-1", other).await,
        422,
    )
    .await;

    let users: Value = app
        .get("/api/v1/users", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["count"], 2, "the owner and one new user");
    let welcomes: i64 = app
        .database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM outbox WHERE job = 'welcome_email'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(welcomes, 1);
}
