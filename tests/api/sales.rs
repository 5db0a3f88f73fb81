//! Properties, clients, allocations and payments: the rules of SPEC §4.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, problem, spawn_app};

pub async fn created(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

pub async fn property(app: &TestApp, token: &str, estate: &str, plot: &str, price: &str) -> Value {
    let body = json!({"estate_id": estate, "plot_number": plot, "size_sqm": "450", "price": price});
    created(app.post("/api/v1/properties", Some(token), body).await).await
}

pub async fn client(app: &TestApp, token: &str, name: &str) -> Value {
    let body =
        json!({"full_name": name, "email": format!("{}@buyers.example", Uuid::new_v4().simple())});
    created(app.post("/api/v1/clients", Some(token), body).await).await
}

pub fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

#[tokio::test]
async fn properties_are_unique_per_estate_priced_in_decimal_strings_and_filterable() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let a = app.create_estate(token, json!({"name": "A"})).await;
    let b = app.create_estate(token, json!({"name": "B"})).await;
    let p1 = property(&app, token, id(&a), "A-1", "2500000").await;
    assert_eq!(p1["price"], "2500000.00");
    assert_eq!(p1["size_sqm"], "450.00");
    assert_eq!(p1["status"], "available");
    property(&app, token, id(&a), "A-2", "1000000.50").await;
    property(&app, token, id(&b), "A-1", "3000000").await; // same plot number, other estate

    let dup = app
        .post(
            "/api/v1/properties",
            Some(token),
            json!({"estate_id": id(&a), "plot_number": "A-1", "size_sqm": "1", "price": "1"}),
        )
        .await;
    assert!(problem(dup, 422).await["errors"]["plot_number"].is_array());
    let other = app.register("Other").await;
    let foreign_estate = app
        .create_estate(&other.access_token, json!({"name": "Theirs"}))
        .await;
    let foreign = app
        .post("/api/v1/properties", Some(token), json!({"estate_id": id(&foreign_estate), "plot_number": "X", "size_sqm": "1", "price": "1"}))
        .await;
    assert!(problem(foreign, 422).await["errors"]["estate_id"].is_array());
    for bad in [
        json!({"estate_id": id(&a), "plot_number": "Z", "size_sqm": "0", "price": "1"}),
        json!({"estate_id": id(&a), "plot_number": "Z", "size_sqm": "1", "price": "-5"}),
        json!({"estate_id": id(&a), "plot_number": "Z", "size_sqm": "1", "price": "1.001"}),
        json!({"estate_id": id(&a), "plot_number": "Z", "size_sqm": "1", "price": 12.5}),
        json!({"estate_id": id(&a), "plot_number": "Z", "size_sqm": "1", "price": "1", "status": "sold"}),
    ] {
        let resp = app
            .post("/api/v1/properties", Some(token), bad.clone())
            .await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 422, "{bad}: {status}");
    }
    let list: Value = app
        .get(
            &format!(
                "/api/v1/properties?estate_id={}&status=available&ordering=-price",
                id(&a)
            ),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    let prices: Vec<&str> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["2500000.00", "1000000.50"]);
    let cheap: Value = app
        .get("/api/v1/properties?max_price=1500000", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cheap["count"], 1);
    problem(
        app.get("/api/v1/properties?min_price=lots", token).await,
        422,
    )
    .await;

    // An estate with properties is not deleted from under them.
    problem(
        app.request(
            Method::DELETE,
            &format!("/api/v1/estates/{}", id(&a)),
            Some(token),
            None,
        )
        .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn twenty_simultaneous_allocations_of_one_property_give_exactly_one_201() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Hot"})).await;
    let plot = property(&app, token, id(&estate), "H-1", "1000000").await;
    let mut buyers = Vec::new();
    for i in 0..20 {
        buyers.push(client(&app, token, &format!("Buyer {i}")).await);
    }
    let statuses: Vec<u16> = join_all(buyers.iter().map(|b| {
        let body =
            json!({"property_id": id(&plot), "client_id": id(b), "payment_plan": "installment"});
        let app = &app;
        async move {
            app.post("/api/v1/allocations", Some(token), body)
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    let listed: Value = app
        .get(
            &format!("/api/v1/allocations?property_id={}", id(&plot)),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 1);
    let after: Value = app
        .get(&format!("/api/v1/properties/{}", id(&plot)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["status"], "allocated");
}

#[tokio::test]
async fn payments_reduce_the_balance_refuse_overpayment_and_the_last_one_sells() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Paid"})).await;
    let plot = property(&app, token, id(&estate), "P-1", "1000000").await;
    let buyer = client(&app, token, "Ada Buyer").await;
    let allocation = created(
        app.post(
            "/api/v1/allocations",
            Some(token),
            json!({"property_id": id(&plot), "client_id": id(&buyer), "payment_plan": "installment"}),
        )
        .await,
    )
    .await;
    assert_eq!(allocation["total_price"], "1000000.00");
    assert_eq!(allocation["balance"], "1000000.00");
    let pay = |amount: &str| {
        let app = &app;
        let path = format!("/api/v1/allocations/{}/record_payment", id(&allocation));
        let body = json!({"amount": amount, "method": "bank_transfer", "reference": "TRX-1"});
        async move { app.post(&path, Some(token), body).await }
    };

    let first: Value = pay("400000").await.json().await.unwrap();
    assert_eq!(first["allocation"]["amount_paid"], "400000.00");
    assert_eq!(first["allocation"]["balance"], "600000.00");
    assert_eq!(first["allocation"]["status"], "active");
    assert_eq!(first["payment"]["amount"], "400000.00");

    let over = problem(pay("600000.01").await, 422).await;
    assert!(
        over["errors"]["amount"][0]
            .as_str()
            .unwrap()
            .contains("600000.00")
    );
    problem(pay("0").await, 422).await;
    let unchanged: Value = app
        .get(&format!("/api/v1/allocations/{}", id(&allocation)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unchanged["balance"], "600000.00",
        "refused payments changed nothing"
    );

    let last: Value = pay("600000.00").await.json().await.unwrap();
    assert_eq!(last["allocation"]["balance"], "0.00");
    assert_eq!(last["allocation"]["status"], "completed");
    let sold: Value = app
        .get(&format!("/api/v1/properties/{}", id(&plot)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sold["status"], "sold");
    problem(pay("1").await, 409).await;

    let history: Value = app
        .get(
            &format!("/api/v1/allocations/{}/payment_history", id(&allocation)),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<&str> = history["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["400000.00", "600000.00"]);

    // Receipts and the confirmation were queued with the changes, once each.
    let db = app.database.client().await;
    let jobs: Vec<String> = db
        .query("SELECT job FROM outbox WHERE company_id = $1 AND job <> 'welcome_email' ORDER BY created_at", &[&t.company_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        jobs,
        [
            "allocation_confirmation_email",
            "payment_received_email",
            "payment_received_email"
        ]
    );
    let recorded: Value = app
        .get("/api/v1/audit-logs?action=payment_recorded", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recorded["count"], 2);

    // A client or property with an allocation stays.
    problem(
        app.request(
            Method::DELETE,
            &format!("/api/v1/clients/{}", id(&buyer)),
            Some(token),
            None,
        )
        .await,
        409,
    )
    .await;
    problem(
        app.request(
            Method::DELETE,
            &format!("/api/v1/properties/{}", id(&plot)),
            Some(token),
            None,
        )
        .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn another_tenants_inventory_cannot_be_allocated_or_seen() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    let estate = app
        .create_estate(&b.access_token, json!({"name": "Beta's"}))
        .await;
    let theirs = property(&app, &b.access_token, id(&estate), "B-1", "10").await;
    let their_client = client(&app, &b.access_token, "Theirs").await;
    let mine = client(&app, &a.access_token, "Mine").await;

    let attempt = app
        .post(
            "/api/v1/allocations",
            Some(&a.access_token),
            json!({"property_id": id(&theirs), "client_id": id(&mine), "payment_plan": "outright"}),
        )
        .await;
    assert!(problem(attempt, 422).await["errors"]["property_id"].is_array());
    for path in [
        format!("/api/v1/properties/{}", id(&theirs)),
        format!("/api/v1/clients/{}", id(&their_client)),
    ] {
        problem(app.get(&path, &a.access_token).await, 404).await;
    }
    let allocation = created(
        app.post(
            "/api/v1/allocations",
            Some(&b.access_token),
            json!({"property_id": id(&theirs), "client_id": id(&their_client), "payment_plan": "outright"}),
        )
        .await,
    )
    .await;
    let path = format!("/api/v1/allocations/{}", id(&allocation));
    problem(app.get(&path, &a.access_token).await, 404).await;
    let pay = app
        .post(
            &format!("{path}/record_payment"),
            Some(&a.access_token),
            json!({"amount": "1", "method": "cash"}),
        )
        .await;
    problem(pay, 404).await;
}

#[tokio::test]
async fn clients_are_validated_searched_and_cleared() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let c = created(
        app.post("/api/v1/clients", Some(token), json!({"full_name": "Chidi Okafor", "email": "chidi@example.com", "phone": "+234 (803) 555-0101"}))
            .await,
    )
    .await;
    client(&app, token, "Zainab Bello").await;
    for bad in [
        json!({}),
        json!({"full_name": "X", "email": "not-mail"}),
        json!({"full_name": "X", "phone": "call me"}),
    ] {
        problem(app.post("/api/v1/clients", Some(token), bad).await, 422).await;
    }
    let found: Value = app
        .get("/api/v1/clients?search=okafor", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["count"], 1);
    assert_eq!(found["results"][0]["id"], c["id"]);
    let cleared = app
        .request(
            Method::PATCH,
            &format!("/api/v1/clients/{}", id(&c)),
            Some(token),
            Some(json!({"phone": null})),
        )
        .await;
    assert_eq!(cleared.json::<Value>().await.unwrap()["phone"], "");
    let unnamed = app
        .request(
            Method::PATCH,
            &format!("/api/v1/clients/{}", id(&c)),
            Some(token),
            Some(json!({"full_name": null})),
        )
        .await;
    problem(unnamed, 422).await;
}

#[tokio::test]
async fn estate_statistics_and_allocations_add_up() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Counted"})).await;
    let elsewhere = app.create_estate(token, json!({"name": "Elsewhere"})).await;
    let p1 = property(&app, token, id(&estate), "C-1", "1000").await;
    let p2 = property(&app, token, id(&estate), "C-2", "2000").await;
    property(&app, token, id(&estate), "C-3", "3000").await;
    let other = property(&app, token, id(&elsewhere), "E-1", "9999").await;
    let buyer = client(&app, token, "Counted Buyer").await;
    let allocate = |p: &Value| {
        let body =
            json!({"property_id": id(p), "client_id": id(&buyer), "payment_plan": "installment"});
        let app = &app;
        async move { created(app.post("/api/v1/allocations", Some(token), body).await).await }
    };
    let a1 = allocate(&p1).await;
    allocate(&p2).await;
    allocate(&other).await;
    let pay = |a: &Value, amount: &str| {
        let path = format!("/api/v1/allocations/{}/record_payment", id(a));
        let body = json!({"amount": amount, "method": "cash"});
        let app = &app;
        async move { assert_eq!(app.post(&path, Some(token), body).await.status(), 200) }
    };
    pay(&a1, "500").await;

    let stats_path = format!("/api/v1/estates/{}/statistics", id(&estate));
    let stats: Value = app.get(&stats_path, token).await.json().await.unwrap();
    assert_eq!(
        stats["properties"],
        json!({"total": 3, "available": 1, "reserved": 0, "allocated": 2, "sold": 0})
    );
    assert_eq!(stats["allocated_value"], "3000.00");
    assert_eq!(stats["amount_collected"], "500.00");
    assert_eq!(stats["outstanding"], "2500.00");

    pay(&a1, "500").await;
    let stats: Value = app.get(&stats_path, token).await.json().await.unwrap();
    assert_eq!(stats["properties"]["sold"], 1);
    assert_eq!(stats["amount_collected"], "1000.00");
    assert_eq!(stats["outstanding"], "2000.00");

    let of_estate: Value = app
        .get(
            &format!("/api/v1/estates/{}/allocations", id(&estate)),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(of_estate["count"], 2, "only this estate's allocations");
    let completed: Value = app
        .get(
            &format!(
                "/api/v1/estates/{}/allocations?status=completed",
                id(&estate)
            ),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(completed["results"][0]["id"], a1["id"]);

    let stranger = app.register("Stranger").await;
    problem(app.get(&stats_path, &stranger.access_token).await, 404).await;
    problem(
        app.get(
            &format!("/api/v1/estates/{}/allocations", Uuid::now_v7()),
            token,
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn bulk_price_update_is_all_or_nothing_with_errors_per_item() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Bulk"})).await;
    let p1 = property(&app, token, id(&estate), "B-1", "100").await;
    let p2 = property(&app, token, id(&estate), "B-2", "200").await;

    let bad = app
        .post(
            "/api/v1/properties/bulk_price_update",
            Some(token),
            json!({"updates": [
                {"id": id(&p1), "price": "150"},
                {"id": id(&p2), "price": "-1"},
                {"id": Uuid::now_v7(), "price": "10"},
                {"price": "10"}
            ]}),
        )
        .await;
    let body = problem(bad, 422).await;
    let errors = body["errors"].as_object().unwrap();
    let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
    assert_eq!(fields, ["updates[1].price", "updates[2]", "updates[3].id"]);
    let unchanged: Value = app
        .get(&format!("/api/v1/properties/{}", id(&p1)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unchanged["price"], "100.00",
        "the valid item was not applied either"
    );

    let ok = app
        .post(
            "/api/v1/properties/bulk_price_update",
            Some(token),
            json!({"updates": [{"id": id(&p1), "price": "150"}, {"id": id(&p2), "price": "250.5"}]}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["count"], 2);
    let prices: Vec<&str> = ok["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["150.00", "250.50"]);
    let logged: Value = app
        .get("/api/v1/audit-logs?action=bulk_operation", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(logged["count"], 1);
    problem(
        app.post(
            "/api/v1/properties/bulk_price_update",
            Some(token),
            json!({"updates": []}),
        )
        .await,
        422,
    )
    .await;
}

#[tokio::test]
async fn bulk_allocate_is_all_or_nothing_with_errors_per_item() {
    let app = spawn_app().await;
    let t = app.register("Acme").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "Bulk"})).await;
    let p1 = property(&app, token, id(&estate), "BA-1", "100").await;
    let p2 = property(&app, token, id(&estate), "BA-2", "200").await;
    let buyer = client(&app, token, "Bulk Buyer").await;
    let item = |p: &Value| json!({"property_id": id(p), "client_id": id(&buyer), "payment_plan": "installment"});

    let bad = app
        .post(
            "/api/v1/allocations/bulk_allocate",
            Some(token),
            json!({"allocations": [item(&p1), item(&p1), {"property_id": id(&p2), "client_id": id(&buyer), "payment_plan": "layaway"}]}),
        )
        .await;
    let body = problem(bad, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["allocations[1]", "allocations[2].payment_plan"]);
    let none: Value = app
        .get("/api/v1/allocations", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["count"], 0, "the valid first item was rolled back too");
    let still: Value = app
        .get(&format!("/api/v1/properties/{}", id(&p1)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["status"], "available");
    let queued: i64 = app
        .database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM outbox WHERE job = 'allocation_confirmation_email'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        queued, 0,
        "no confirmation for an allocation that never happened"
    );

    let ok = app
        .post(
            "/api/v1/allocations/bulk_allocate",
            Some(token),
            json!({"allocations": [item(&p1), item(&p2)]}),
        )
        .await;
    let ok = created(ok).await;
    assert_eq!(ok["count"], 2);
    let all: Value = app
        .get("/api/v1/allocations", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["count"], 2);
}
