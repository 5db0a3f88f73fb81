//! Every error is problem+json, including poem's own; every answer has the security
//! headers and a request id.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{problem, spawn_app};

#[tokio::test]
async fn framework_errors_are_problem_json() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = Some(t.access_token.as_str());

    problem(
        app.request(Method::GET, "/api/v1/nothing-here", token, None)
            .await,
        404,
    )
    .await;
    problem(
        app.request(Method::PUT, "/api/v1/estates", token, None)
            .await,
        405,
    )
    .await;
    problem(
        app.request(Method::GET, "/api/v1/estates/not-a-uuid", token, None)
            .await,
        400,
    )
    .await;
    problem(
        app.request(Method::GET, "/api/v1/estates?page=abc", token, None)
            .await,
        400,
    )
    .await;

    let malformed = app
        .http
        .post(app.url("/api/v1/estates"))
        .bearer_auth(&t.access_token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(malformed, 400).await;
    let not_json = app
        .http
        .post(app.url("/api/v1/estates"))
        .bearer_auth(&t.access_token)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert!(not_json.status().is_client_error());
    let too_big = app
        .http
        .post(app.url("/api/v1/estates"))
        .bearer_auth(&t.access_token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    problem(too_big, 413).await;
    assert_eq!(app.estate_count(t.company_id).await, 0);
}

#[tokio::test]
async fn responses_carry_security_headers_and_the_request_id() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );

    let proxied = app
        .http
        .get(app.url("/health"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(proxied.headers().get("strict-transport-security").is_some());
    let generated = app.http.get(app.url("/health")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn readiness_reports_postgres_and_redis() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "postgres": true, "redis": true, "rate_limits": "off"})
    );
}
