//! Estates CRUD, permissions by role, bad input, and the list filters.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, Tenant, TestApp, problem, spawn_app};

#[tokio::test]
async fn create_read_update_delete() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let created = app
        .create_estate(
            &t.access_token,
            json!({"name": " Palm Court ", "location": "Lekki", "status": "active"}),
        )
        .await;
    assert_eq!(created["name"], "Palm Court", "names are trimmed");
    assert_eq!(created["status"], "active");
    assert_eq!(created["created_by"], t.user_id.to_string());
    let path = format!("/api/v1/estates/{}", created["id"].as_str().unwrap());

    let fetched: Value = app.get(&path, &t.access_token).await.json().await.unwrap();
    assert_eq!(fetched, created);

    let patched = app
        .request(
            Method::PATCH,
            &path,
            Some(&t.access_token),
            Some(json!({"status": "sold_out", "location": null})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["status"], "sold_out");
    assert_eq!(patched["location"], "");
    assert_eq!(patched["name"], "Palm Court");

    assert_eq!(
        app.request(Method::DELETE, &path, Some(&t.access_token), None)
            .await
            .status(),
        204
    );
    problem(app.get(&path, &t.access_token).await, 404).await;
}

#[tokio::test]
async fn bad_input_on_every_field_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = Some(t.access_token.as_str());
    let creates = [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(201)}),
        json!({"name": "ok", "location": "x".repeat(301)}),
        json!({"name": "ok", "description": "x".repeat(5001)}),
        json!({"name": "ok", "status": "demolished"}),
        json!({"name": "ok\u{0007}"}),
        json!({"name": {"text": "ok"}}),
        json!({"name": ["ok"]}),
        json!({"name": "ok", "status": 3}),
        json!({"name": "ok", "unknown": true}),
        json!(["name"]),
    ];
    for body in creates {
        let resp = app.post("/api/v1/estates", token, body.clone()).await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 422, "{body}: {status}");
        problem(resp, status).await;
    }
    assert_eq!(app.estate_count(t.company_id).await, 0);

    let estate = app
        .create_estate(
            &t.access_token,
            json!({"name": "Original", "location": "Here"}),
        )
        .await;
    let path = format!("/api/v1/estates/{}", estate["id"].as_str().unwrap());
    let patches = [
        json!({"name": null}),
        json!({"name": ""}),
        json!({"status": null}),
        json!({"status": "gone"}),
        json!({"location": "x".repeat(301)}),
        json!({"description": [5]}),
        json!({"name": "Changed", "status": "bogus"}),
        json!({"id": Uuid::now_v7()}),
    ];
    for body in patches {
        let resp = app
            .request(Method::PATCH, &path, token, Some(body.clone()))
            .await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 422, "{body}: {status}");
    }
    let after: Value = app.get(&path, &t.access_token).await.json().await.unwrap();
    assert_eq!(
        after, estate,
        "a refused patch changes nothing, not even partly"
    );

    let v = problem(
        app.post("/api/v1/estates", token, json!({"name": "", "status": "x"}))
            .await,
        422,
    )
    .await;
    assert!(v["errors"]["name"].is_array() && v["errors"]["status"].is_array());
}

/// Adds a user of the given role to the tenant's company and logs in as them.
async fn user_with_role(app: &TestApp, t: &Tenant, role: &str) -> String {
    let email = format!("{role}-{}@example.com", Uuid::new_v4().simple());
    let hash = estate::auth::password::hash(PASSWORD.into()).await.unwrap();
    app.database
        .client()
        .await
        .execute(
            "INSERT INTO users (id, company_id, email, full_name, password_hash, role) VALUES ($1, $2, $3, 'U', $4, $5)",
            &[&Uuid::now_v7(), &t.company_id, &email, &hash, &role],
        )
        .await
        .unwrap();
    let resp = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn viewers_read_members_change_only_their_own_admins_change_anything() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let viewer = user_with_role(&app, &t, "viewer").await;
    let member = user_with_role(&app, &t, "member").await;
    let admin = user_with_role(&app, &t, "admin").await;
    let owners = app
        .create_estate(&t.access_token, json!({"name": "Owner's"}))
        .await;
    let owners_path = format!("/api/v1/estates/{}", owners["id"].as_str().unwrap());

    assert_eq!(app.get(&owners_path, &viewer).await.status(), 200);
    problem(
        app.post("/api/v1/estates", Some(&viewer), json!({"name": "V"}))
            .await,
        403,
    )
    .await;

    let mine = app
        .create_estate(&member, json!({"name": "Member's"}))
        .await;
    let mine_path = format!("/api/v1/estates/{}", mine["id"].as_str().unwrap());
    let own_patch = app
        .request(
            Method::PATCH,
            &mine_path,
            Some(&member),
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(own_patch.status(), 200);
    let other_patch = app
        .request(
            Method::PATCH,
            &owners_path,
            Some(&member),
            Some(json!({"name": "Taken"})),
        )
        .await;
    problem(other_patch, 403).await;
    problem(
        app.request(Method::DELETE, &owners_path, Some(&member), None)
            .await,
        403,
    )
    .await;

    let admin_patch = app
        .request(
            Method::PATCH,
            &mine_path,
            Some(&admin),
            Some(json!({"name": "Admin's now"})),
        )
        .await;
    assert_eq!(admin_patch.status(), 200);
    assert_eq!(
        app.request(Method::DELETE, &owners_path, Some(&admin), None)
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn listing_paginates_filters_searches_and_orders() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let mut ids = Vec::new();
    for i in 0..25 {
        let status = if i % 5 == 0 { "active" } else { "planning" };
        let description = if i == 7 {
            "Waterfront villas by the lagoon"
        } else {
            "Quiet plots"
        };
        let e = app
            .create_estate(token, json!({"name": format!("Estate {i:02}"), "status": status, "description": description}))
            .await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let list = |query: &str| {
        let app = &app;
        let path = format!("/api/v1/estates{query}");
        async move {
            let resp = app.get(&path, token).await;
            assert_eq!(resp.status(), 200, "{path}");
            resp.json::<Value>().await.unwrap()
        }
    };
    let names = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };

    let p1 = list("?page_size=10&ordering=name").await;
    assert_eq!(p1["count"], 25);
    assert_eq!(
        names(&p1),
        (0..10)
            .map(|i| format!("Estate {i:02}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(p1["previous"], Value::Null);
    assert_eq!(
        p1["next"],
        "/api/v1/estates?page_size=10&ordering=name&page=2"
    );
    let p3 = list("?page_size=10&ordering=name&page=3").await;
    assert_eq!(names(&p3).len(), 5);
    assert_eq!(p3["next"], Value::Null);
    assert_eq!(
        p3["previous"],
        "/api/v1/estates?page_size=10&ordering=name&page=2"
    );
    let past_end = list("?page_size=10&page=9").await;
    assert_eq!(past_end["count"], 25);
    assert_eq!(names(&past_end).len(), 0);

    let desc = list("?ordering=-name&page_size=3").await;
    assert_eq!(names(&desc), ["Estate 24", "Estate 23", "Estate 22"]);
    let default_order = list("?page_size=1").await;
    assert_eq!(
        names(&default_order),
        ["Estate 24"],
        "newest first by default"
    );

    let active = list("?status=active&page_size=100").await;
    assert_eq!(active["count"], 5);
    assert!(
        active["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "active")
    );

    let search = list("?search=lagoons").await;
    assert_eq!(
        names(&search),
        ["Estate 07"],
        "full-text search stems lagoons → lagoon"
    );

    let picked = list(&format!("?ids={},{}&ordering=name", ids[3], ids[11])).await;
    assert_eq!(names(&picked), ["Estate 03", "Estate 11"]);

    let future = list("?created_after=2999-01-01T00:00:00Z").await;
    assert_eq!(future["count"], 0);
    let past =
        list("?created_before=2999-01-01T00:00:00Z&created_after=2000-01-01T00:00:00Z").await;
    assert_eq!(past["count"], 25);

    for bad in [
        "?page_size=101",
        "?page_size=0",
        "?page=0",
        "?ordering=password",
        "?status=nope",
        "?created_after=yesterday",
        "?ids=1,2",
    ] {
        let body = problem(app.get(&format!("/api/v1/estates{bad}"), token).await, 422).await;
        assert!(body["errors"].is_object(), "{bad}");
    }
}
