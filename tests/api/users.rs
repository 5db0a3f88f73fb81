//! Users and roles: who may create and change whom, the last owner, passwords, and
//! deactivation that takes effect at once.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, problem, spawn_app};
use crate::permissions::member_of;

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
}

async fn email_of(app: &TestApp, token: &str, id: Uuid) -> String {
    let user: Value = app
        .get(&format!("/api/v1/users/{id}"), token)
        .await
        .json()
        .await
        .unwrap();
    user["email"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn owners_create_users_who_can_log_in_and_are_listed() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let resp = app
        .post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": "Jane.Agent@Example.com", "full_name": "Jane Agent", "role": "member", "password": PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let jane: Value = resp.json().await.unwrap();
    assert_eq!(jane["role"], "member");
    assert_eq!(jane["is_active"], true);
    assert!(jane.get("password_hash").is_none() && jane.get("password").is_none());
    assert_eq!(
        login(&app, "jane.agent@example.com", PASSWORD)
            .await
            .status(),
        200
    );

    let all: Value = app
        .get("/api/v1/users?ordering=email", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["count"], 2);
    let found: Value = app
        .get("/api/v1/users?search=agent", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["count"], 1);
    assert_eq!(found["results"][0]["id"], jane["id"]);
    let owners: Value = app
        .get("/api/v1/users?role=owner", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners["results"][0]["id"], t.user_id.to_string());
    let literal: Value = app
        .get("/api/v1/users?search=%25", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(literal["count"], 0, "% in a search is a literal character");

    let dup = app
        .post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": "jane.agent@example.com", "full_name": "Again", "role": "viewer", "password": PASSWORD}),
        )
        .await;
    problem(dup, 409).await;
    let bad = app
        .post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": "nope", "role": "king", "password": "x"}),
        )
        .await;
    let body = problem(bad, 422).await;
    for field in ["email", "full_name", "role", "password"] {
        assert!(body["errors"][field].is_array(), "{field}");
    }
    let after: Value = app
        .get("/api/v1/users", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["count"], 2, "refused requests created nobody");
}

#[tokio::test]
async fn another_companys_users_answer_404() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    let path = format!("/api/v1/users/{}", b.user_id);
    problem(app.get(&path, &a.access_token).await, 404).await;
    let patch = app
        .request(
            Method::PATCH,
            &path,
            Some(&a.access_token),
            Some(json!({"full_name": "Pwned"})),
        )
        .await;
    problem(patch, 404).await;
    let toggle = app
        .post(
            &format!("{path}/toggle_status"),
            Some(&a.access_token),
            json!({}),
        )
        .await;
    problem(toggle, 404).await;
    let listed: Value = app
        .get("/api/v1/users?page_size=100", &a.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 1);
    let companies: Value = app
        .get("/api/v1/companies", &a.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(companies["count"], 1);
    assert_eq!(companies["results"][0]["id"], a.company_id.to_string());
    problem(
        app.get(
            &format!("/api/v1/companies/{}", b.company_id),
            &a.access_token,
        )
        .await,
        404,
    )
    .await;
    let rename = app
        .request(
            Method::PATCH,
            &format!("/api/v1/companies/{}", b.company_id),
            Some(&a.access_token),
            Some(json!({"name": "X"})),
        )
        .await;
    problem(rename, 404).await;
    let beta: Value = app
        .get(
            &format!("/api/v1/companies/{}", b.company_id),
            &b.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beta["name"], "Beta");
}

#[tokio::test]
async fn only_owners_manage_owners_and_a_company_keeps_one() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let (admin, admin_token) = member_of(&app, &t, "admin").await;
    let (member, member_token) = member_of(&app, &t, "member").await;

    let make_owner = json!({"email": "o2@example.com", "full_name": "O2", "role": "owner", "password": PASSWORD});
    problem(
        app.post("/api/v1/users", Some(&admin_token), make_owner.clone())
            .await,
        403,
    )
    .await;
    let promote = |token: &str, id: Uuid, role: &str| {
        let app = &app;
        let (token, role) = (token.to_string(), role.to_string());
        async move {
            app.request(
                Method::PATCH,
                &format!("/api/v1/users/{id}"),
                Some(&token),
                Some(json!({"role": role})),
            )
            .await
        }
    };
    problem(promote(&admin_token, member, "owner").await, 403).await;
    problem(promote(&admin_token, t.user_id, "viewer").await, 403).await;
    problem(promote(&member_token, member, "admin").await, 403).await;
    problem(
        app.request(
            Method::PATCH,
            &format!("/api/v1/users/{admin}"),
            Some(&member_token),
            Some(json!({"full_name": "X"})),
        )
        .await,
        403,
    )
    .await;
    let own_name = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{member}"),
            Some(&member_token),
            Some(json!({"full_name": "Me"})),
        )
        .await;
    assert_eq!(own_name.status(), 200);
    assert_eq!(promote(&admin_token, member, "viewer").await.status(), 200);

    // The only owner cannot step down or be deactivated...
    problem(promote(&t.access_token, t.user_id, "admin").await, 409).await;
    // ...until there is another active owner.
    assert_eq!(promote(&t.access_token, admin, "owner").await.status(), 200);
    let stepped_down = promote(&t.access_token, t.user_id, "admin").await;
    assert_eq!(stepped_down.status(), 200);
    let body: Value = stepped_down.json().await.unwrap();
    assert_eq!(body["role"], "admin");
    // The old token named the owner role: it no longer counts.
    problem(app.get("/api/v1/users", &t.access_token).await, 401).await;
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_ends_other_sessions() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let other_session: Value = login(&app, &t.email, PASSWORD).await.json().await.unwrap();
    let (member, _) = member_of(&app, &t, "member").await;
    let path = format!("/api/v1/users/{}/change_password", t.user_id);

    let wrong = app
        .post(
            &path,
            Some(&t.access_token),
            json!({"current_password": "not it at all", "new_password": "a brand new password"}),
        )
        .await;
    let body = problem(wrong, 422).await;
    assert!(body["errors"]["current_password"].is_array());
    let short = app
        .post(
            &path,
            Some(&t.access_token),
            json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    problem(short, 422).await;
    let someone_else = app
        .post(
            &format!("/api/v1/users/{member}/change_password"),
            Some(&t.access_token),
            json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    problem(someone_else, 403).await;
    assert_eq!(
        login(&app, &t.email, PASSWORD).await.status(),
        200,
        "refusals changed nothing"
    );

    let ok = app
        .post(
            &path,
            Some(&t.access_token),
            json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(ok.status(), 204);
    problem(login(&app, &t.email, PASSWORD).await, 401).await;
    assert_eq!(
        login(&app, &t.email, "a brand new password").await.status(),
        200
    );
    // The other login's refresh token is dead; this session's own still works.
    let other = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": other_session["refresh_token"]}),
        )
        .await;
    problem(other, 401).await;
    let own = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": t.refresh_token}),
        )
        .await;
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn deactivation_takes_effect_at_once_and_can_be_undone() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let (member, member_token) = member_of(&app, &t, "member").await;
    let email = email_of(&app, &t.access_token, member).await;
    assert_eq!(
        app.get("/api/v1/estates", &member_token).await.status(),
        200
    );

    let toggled = app
        .post(
            &format!("/api/v1/users/{member}/toggle_status"),
            Some(&t.access_token),
            json!({}),
        )
        .await;
    assert_eq!(toggled.status(), 200);
    assert_eq!(toggled.json::<Value>().await.unwrap()["is_active"], false);
    problem(app.get("/api/v1/estates", &member_token).await, 401).await;
    problem(login(&app, &email, PASSWORD).await, 401).await;

    let again = app
        .post(
            &format!("/api/v1/users/{member}/toggle_status"),
            Some(&t.access_token),
            json!({}),
        )
        .await;
    assert_eq!(again.json::<Value>().await.unwrap()["is_active"], true);
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);

    let myself = app
        .post(
            &format!("/api/v1/users/{}/toggle_status", t.user_id),
            Some(&t.access_token),
            json!({}),
        )
        .await;
    problem(myself, 409).await;
}
