//! API keys: shown once, stored hashed, read/write scopes, revocation and expiry that take
//! effect at once, and the tenant taken from the key.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};
use crate::permissions::member_of;

async fn create_key(app: &TestApp, token: &str, scope: &str) -> Value {
    let resp = app
        .post(
            "/api/v1/api-keys",
            Some(token),
            json!({"name": format!("{scope} key"), "scope": scope}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn with_key(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn keys_are_shown_once_and_act_with_their_scope() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let write = create_key(&app, &t.access_token, "write").await;
    let read = create_key(&app, &t.access_token, "read").await;
    let write_key = write["key"].as_str().unwrap();
    let read_key = read["key"].as_str().unwrap();
    assert!(write_key.starts_with(write["prefix"].as_str().unwrap()));

    let listed: Value = app
        .get("/api/v1/api-keys", &t.access_token)
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
            .all(|k| k.get("key").is_none()),
        "never shown again"
    );
    let stored: Vec<u8> = app
        .database
        .client()
        .await
        .query_one(
            "SELECT key_hash FROM api_keys WHERE id = $1",
            &[&write["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !String::from_utf8_lossy(&stored).contains(write_key),
        "only a hash is stored"
    );

    let created = with_key(
        &app,
        Method::POST,
        "/api/v1/estates",
        write_key,
        Some(json!({"name": "By key"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    let estate: Value = created.json().await.unwrap();
    assert_eq!(
        estate["created_by"],
        t.user_id.to_string(),
        "a key acts for its creator"
    );
    let listed = with_key(&app, Method::GET, "/api/v1/estates", read_key, None).await;
    assert_eq!(listed.json::<Value>().await.unwrap()["count"], 1);
    problem(
        with_key(
            &app,
            Method::POST,
            "/api/v1/estates",
            read_key,
            Some(json!({"name": "No"})),
        )
        .await,
        403,
    )
    .await;
    problem(
        with_key(&app, Method::GET, "/api/v1/users", "est_nope_nope", None).await,
        401,
    )
    .await;
    problem(
        with_key(
            &app,
            Method::POST,
            "/api/v1/auth/logout",
            write_key,
            Some(json!({})),
        )
        .await,
        403,
    )
    .await;
    problem(
        with_key(
            &app,
            Method::POST,
            "/api/v1/api-keys",
            write_key,
            Some(json!({"name": "x", "scope": "write"})),
        )
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
    assert_eq!(log["results"][0]["actor_kind"], "api_key");
    assert_eq!(log["results"][0]["actor_id"], write["id"]);
    let used: Value = app
        .get("/api/v1/api-keys", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    let used = used["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == write["id"])
        .unwrap()
        .clone();
    assert!(used["last_used_at"].is_string());
}

#[tokio::test]
async fn revoked_expired_or_orphaned_keys_stop_at_once() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let (admin, admin_token) = member_of(&app, &t, "admin").await;
    let revoked = create_key(&app, &t.access_token, "read").await;
    let expiring = create_key(&app, &t.access_token, "read").await;
    let admins = create_key(&app, &admin_token, "read").await;
    for k in [&revoked, &expiring, &admins] {
        assert_eq!(
            with_key(
                &app,
                Method::GET,
                "/api/v1/estates",
                k["key"].as_str().unwrap(),
                None
            )
            .await
            .status(),
            200
        );
    }

    let resp = app
        .request(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", revoked["id"].as_str().unwrap()),
            Some(&t.access_token),
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    problem(
        with_key(
            &app,
            Method::GET,
            "/api/v1/estates",
            revoked["key"].as_str().unwrap(),
            None,
        )
        .await,
        401,
    )
    .await;

    app.database
        .client()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&expiring["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap()],
        )
        .await
        .unwrap();
    problem(
        with_key(
            &app,
            Method::GET,
            "/api/v1/estates",
            expiring["key"].as_str().unwrap(),
            None,
        )
        .await,
        401,
    )
    .await;

    app.post(
        &format!("/api/v1/users/{admin}/toggle_status"),
        Some(&t.access_token),
        json!({}),
    )
    .await;
    problem(
        with_key(
            &app,
            Method::GET,
            "/api/v1/estates",
            admins["key"].as_str().unwrap(),
            None,
        )
        .await,
        401,
    )
    .await;

    let other = app.register("Other").await;
    let theirs = app
        .request(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", admins["id"].as_str().unwrap()),
            Some(&other.access_token),
            None,
        )
        .await;
    problem(theirs, 404).await;
    let member = member_of(&app, &t, "member").await.1;
    problem(
        app.post(
            "/api/v1/api-keys",
            Some(&member),
            json!({"name": "x", "scope": "read"}),
        )
        .await,
        403,
    )
    .await;
    let bad = app
        .post(
            "/api/v1/api-keys",
            Some(&t.access_token),
            json!({"name": "", "scope": "admin", "expires_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    let body = problem(bad, 422).await;
    for field in ["name", "scope", "expires_at"] {
        assert!(body["errors"][field].is_array(), "{field}");
    }
}

#[tokio::test]
async fn a_key_selects_its_own_company_only() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    let theirs = app
        .create_estate(&b.access_token, json!({"name": "Beta's"}))
        .await;
    let key = create_key(&app, &a.access_token, "write").await;
    let key = key["key"].as_str().unwrap();
    let list = with_key(&app, Method::GET, "/api/v1/estates", key, None).await;
    assert_eq!(list.json::<Value>().await.unwrap()["count"], 0);
    let path = format!("/api/v1/estates/{}", theirs["id"].as_str().unwrap());
    problem(with_key(&app, Method::GET, &path, key, None).await, 404).await;
}
