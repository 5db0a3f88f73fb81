//! OAuth 2 client credentials: the token exchange, the client's rights, and revocation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};

/// Exchanges a created client's credentials for a bearer token.
pub async fn client_token(app: &TestApp, client: &Value) -> String {
    let resp = token_request(
        app,
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
        "client_credentials",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_string()
}

async fn token_request(app: &TestApp, id: &str, secret: &str, grant: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/v1/oauth/token"))
        .form(&[
            ("grant_type", grant),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

async fn create_client(app: &TestApp, token: &str, scope: &str) -> Value {
    let resp = app
        .post(
            "/api/v1/oauth-clients",
            Some(token),
            json!({"name": format!("{scope} client"), "scope": scope}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn clients_get_tokens_of_their_company_with_their_scope() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let other = app.register("Other").await;
    app.create_estate(&other.access_token, json!({"name": "Not yours"}))
        .await;
    let writer = create_client(&app, &t.access_token, "write").await;
    let reader = create_client(&app, &t.access_token, "read").await;
    let listed: Value = app
        .get("/api/v1/oauth-clients", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 2);
    assert!(
        listed["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("client_secret").is_none())
    );

    let write_token = client_token(&app, &writer).await;
    let read_token = client_token(&app, &reader).await;
    let created = app
        .post(
            "/api/v1/estates",
            Some(&write_token),
            json!({"name": "By client"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let seen: Value = app
        .get("/api/v1/estates", &read_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["count"], 1, "only its own company's estates");
    problem(
        app.post("/api/v1/estates", Some(&read_token), json!({"name": "No"}))
            .await,
        403,
    )
    .await;
    problem(
        app.post("/api/v1/auth/logout", Some(&write_token), json!({}))
            .await,
        403,
    )
    .await;
    let log: Value = app
        .get("/api/v1/audit-logs?object_type=estate", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["results"][0]["actor_kind"], "oauth_client");
    assert_eq!(log["results"][0]["actor_id"], writer["id"]);

    // Revoking the client ends its tokens at once.
    let path = format!("/api/v1/oauth-clients/{}", writer["id"].as_str().unwrap());
    assert_eq!(
        app.request(Method::DELETE, &path, Some(&t.access_token), None)
            .await
            .status(),
        204
    );
    problem(app.get("/api/v1/estates", &write_token).await, 401).await;
    problem(
        token_request(
            &app,
            writer["client_id"].as_str().unwrap(),
            writer["client_secret"].as_str().unwrap(),
            "client_credentials",
        )
        .await,
        401,
    )
    .await;
}

#[tokio::test]
async fn bad_client_credentials_are_refused_alike() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let client = create_client(&app, &t.access_token, "read").await;
    let id = client["client_id"].as_str().unwrap();
    let wrong = problem(
        token_request(&app, id, "not-the-secret", "client_credentials").await,
        401,
    )
    .await;
    let unknown = problem(
        token_request(&app, "oc_nobody", "whatever", "client_credentials").await,
        401,
    )
    .await;
    assert_eq!(wrong, unknown);
    let body = problem(
        token_request(
            &app,
            id,
            client["client_secret"].as_str().unwrap(),
            "password",
        )
        .await,
        422,
    )
    .await;
    assert!(body["errors"]["grant_type"].is_array());
    let member = crate::permissions::member_of(&app, &t, "member").await.1;
    problem(
        app.post(
            "/api/v1/oauth-clients",
            Some(&member),
            json!({"name": "x", "scope": "read"}),
        )
        .await,
        403,
    )
    .await;
    let other = app.register("Other").await;
    let theirs = app
        .request(
            Method::DELETE,
            &format!("/api/v1/oauth-clients/{}", client["id"].as_str().unwrap()),
            Some(&other.access_token),
            None,
        )
        .await;
    problem(theirs, 404).await;
}
