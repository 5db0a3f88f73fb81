//! `GET /metrics`: Prometheus text with requests by route and status, latency, the pool,
//! jobs by state and the outbox's lag.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{PASSWORD, spawn_app};

/// The value of the sample whose name is `name` and whose labels include all `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_report_jobs() {
    let app = spawn_app().await;
    let t = app.register("Measured").await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/api/v1/estates", &t.access_token).await.status(),
            200
        );
    }
    let missing = app
        .get(
            &format!("/api/v1/estates/{}", Uuid::now_v7()),
            &t.access_token,
        )
        .await;
    assert_eq!(missing.status(), 404);
    let created = app
        .post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": format!("{}@m.example", Uuid::new_v4().simple()), "full_name": "M", "role": "viewer", "password": PASSWORD}),
        )
        .await;
    assert_eq!(created.status(), 201);

    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let requests = |route: &str, status: &str| {
        sample(
            &text,
            "http_requests_total",
            &[("method", "GET"), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/api/v1/estates", "200"), Some(2.0), "{text}");
    assert_eq!(requests("/api/v1/estates/{id}", "404"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "http_request_duration_seconds_count",
            &[("route", "/api/v1/estates"), ("status", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "db_pool_connections", &[("state", "max")]),
        Some(8.0)
    );
    // The new user's welcome e-mail waits in the outbox (no worker runs here).
    assert_eq!(
        sample(&text, "jobs", &[("state", "pending")]),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "outbox_lag_seconds", &[]).is_some_and(|lag| lag >= 0.0));
}

/// Each tenant transaction is counted at home or away from its company's home lane; with
/// one request at a time every lane is free, so each goes home.
#[tokio::test]
async fn metrics_count_tenant_transactions_by_lane() {
    let app = spawn_app().await;
    let t = app.register("Laned").await;
    let lanes = || async {
        let text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count =
            |lane| sample(&text, "db_tenant_transactions_total", &[("lane", lane)]).unwrap_or(0.0);
        (count("home"), count("away"))
    };
    let before = lanes().await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/api/v1/estates", &t.access_token).await.status(),
            200
        );
    }
    let after = lanes().await;
    assert_eq!(after.0 - before.0, 3.0, "{before:?} → {after:?}");
    assert_eq!(after.1, before.1, "{before:?} → {after:?}");
}
