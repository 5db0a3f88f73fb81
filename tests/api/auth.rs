//! Authentication: login, refusals of bad tokens, logout, refresh rotation and reuse,
//! throttling of failed logins, inactive users and suspended companies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{JWT_SECRET, PASSWORD, Tenant, TestApp, problem, spawn_app};

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
}

/// Asserts that a refresh with this token is refused.
async fn refresh_is_refused(app: &TestApp, refresh_token: &str) {
    let resp = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    problem(resp, 401).await;
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(t: &Tenant, company: Uuid, exp_offset: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": t.user_id, "tid": company, "role": "owner", "iat": now, "exp": now + exp_offset, "jti": Uuid::new_v4()})
}

#[tokio::test]
async fn login_issues_working_tokens_with_the_specified_claims() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let resp = login(&app, &t.email.to_uppercase(), PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["sub"], t.user_id.to_string());
    assert_eq!(payload["tid"], t.company_id.to_string());
    assert_eq!(payload["role"], "owner");
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        900
    );
    assert!(payload["jti"].is_string());
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let unknown = problem(login(&app, "nobody@example.com", PASSWORD).await, 401).await;
    let wrong = problem(login(&app, &t.email, "wrong password!").await, 401).await;
    assert_eq!(unknown, wrong);
}

#[tokio::test]
async fn repeated_failed_logins_are_refused_with_429_then_even_the_right_password() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    for _ in 0..estate::auth::throttle::ACCOUNT_LIMIT {
        problem(login(&app, &t.email, "wrong password!").await, 401).await;
    }
    let resp = login(&app, &t.email, PASSWORD).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= estate::auth::throttle::WINDOW_SECS as u64);
    problem(resp, 429).await;
    // Another account from the same address is not locked by this one's failures.
    let other = app.register("Other").await;
    assert_eq!(login(&app, &other.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let other = app.register("Other").await;
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims(&t, t.company_id, 600).to_string());
    let cases = [
        ("expired", sign(&claims(&t, t.company_id, -120), JWT_SECRET)),
        (
            "forged signature",
            sign(
                &claims(&t, t.company_id, 600),
                "another-secret-another-secret-another-secret",
            ),
        ),
        ("alg none", format!("{header_none}.{body}.")),
        (
            "wrong tenant",
            sign(&claims(&t, other.company_id, 600), JWT_SECRET),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (name, token) in cases {
        let resp = app.get("/api/v1/estates", &token).await;
        assert_eq!(resp.status(), 401, "{name}");
        problem(resp, 401).await;
    }
    // A correctly signed token of the right tenant is accepted: the cases fail for their flaw.
    let good = sign(&claims(&t, t.company_id, 600), JWT_SECRET);
    assert_eq!(app.get("/api/v1/estates", &good).await.status(), 200);
    let missing = app
        .request(Method::GET, "/api/v1/estates", None, None)
        .await;
    problem(missing, 401).await;
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_the_refresh_token() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let resp = app
        .post(
            "/api/v1/auth/logout",
            Some(&t.access_token),
            json!({"refresh_token": t.refresh_token}),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let after = problem(app.get("/api/v1/estates", &t.access_token).await, 401).await;
    assert!(after["detail"].as_str().unwrap().contains("revoked"));
    refresh_is_refused(&app, &t.refresh_token).await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let first: Value = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": t.refresh_token}),
        )
        .await
        .json()
        .await
        .unwrap();
    let rotated = first["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, t.refresh_token);
    assert_eq!(
        app.get("/api/v1/estates", first["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // The old token again: refused, and the family's newer token dies with it.
    refresh_is_refused(&app, &t.refresh_token).await;
    refresh_is_refused(&app, &rotated).await;
    // Another login's family is untouched.
    let fresh: Value = login(&app, &t.email, PASSWORD).await.json().await.unwrap();
    let again = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": fresh["refresh_token"]}),
        )
        .await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn deactivated_users_lose_access_at_once() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let db = app.database.client().await;
    db.execute(
        "UPDATE users SET is_active = false WHERE id = $1",
        &[&t.user_id],
    )
    .await
    .unwrap();
    problem(app.get("/api/v1/estates", &t.access_token).await, 401).await;
    problem(login(&app, &t.email, PASSWORD).await, 401).await;
    refresh_is_refused(&app, &t.refresh_token).await;
}

#[tokio::test]
async fn a_suspended_company_is_read_only_for_its_owner() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let db = app.database.client().await;
    db.execute(
        "UPDATE companies SET status = 'suspended' WHERE id = $1",
        &[&t.company_id],
    )
    .await
    .unwrap();
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        200
    );
    problem(
        app.post(
            "/api/v1/estates",
            Some(&t.access_token),
            json!({"name": "X"}),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(app.estate_count(t.company_id).await, 0);
}

#[tokio::test]
async fn registration_refuses_a_taken_email_and_bad_fields() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let dup = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"company_name": "Acme 2", "email": t.email.to_uppercase(), "password": PASSWORD, "full_name": "X"}),
        )
        .await;
    problem(dup, 409).await;
    let bad = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"company_name": "", "email": "x", "password": "short"}),
        )
        .await;
    let body = problem(bad, 422).await;
    for field in ["company_name", "email", "password", "full_name"] {
        assert!(body["errors"][field].is_array(), "{field} reported");
    }
    let companies: i64 = app
        .database
        .client()
        .await
        .query_one("SELECT count(*) FROM companies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(companies, 1);
}

#[tokio::test]
async fn a_changed_role_invalidates_tokens_that_name_the_old_one() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let db = app.database.client().await;
    db.execute(
        "UPDATE users SET role = 'viewer' WHERE id = $1",
        &[&t.user_id],
    )
    .await
    .unwrap();
    let refused = problem(
        app.post(
            "/api/v1/estates",
            Some(&t.access_token),
            json!({"name": "X"}),
        )
        .await,
        401,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("role"));
    assert_eq!(
        app.estate_count(t.company_id).await,
        0,
        "the refused write was rolled back"
    );
    // A fresh login carries the new role, which may read but not write.
    let fresh: Value = login(&app, &t.email, PASSWORD).await.json().await.unwrap();
    let token = fresh["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200);
    problem(
        app.post("/api/v1/estates", Some(token), json!({"name": "X"}))
            .await,
        403,
    )
    .await;
}
