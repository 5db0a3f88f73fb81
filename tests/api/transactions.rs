//! Transactions: totals by month and method, and the streamed CSV export.

use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, problem, spawn_app};

/// An estate, a property, a client and an allocation of `price`; returns the allocation id.
async fn allocation(app: &TestApp, t: &Tenant, client_name: &str, price: &str) -> String {
    let token = t.access_token.as_str();
    let estate = app
        .create_estate(token, json!({"name": "Ledger Gardens"}))
        .await;
    let property: Value = app
        .post(
            "/api/v1/properties",
            Some(token),
            json!({"estate_id": estate["id"], "plot_number": uuid::Uuid::new_v4().to_string()[..8], "size_sqm": "300", "price": price}),
        )
        .await
        .json()
        .await
        .unwrap();
    let client: Value = app
        .post(
            "/api/v1/clients",
            Some(token),
            json!({"full_name": client_name, "email": "buyer@example.com"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let allocation: Value = app
        .post(
            "/api/v1/allocations",
            Some(token),
            json!({"property_id": property["id"], "client_id": client["id"], "payment_plan": "installment"}),
        )
        .await
        .json()
        .await
        .unwrap();
    allocation["id"].as_str().unwrap().to_string()
}

async fn pay(
    app: &TestApp,
    t: &Tenant,
    allocation: &str,
    amount: &str,
    method: &str,
    paid_at: &str,
    reference: &str,
) {
    let resp = app
        .post(
            &format!("/api/v1/allocations/{allocation}/record_payment"),
            Some(&t.access_token),
            json!({"amount": amount, "method": method, "paid_at": paid_at, "reference": reference}),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn statistics_total_by_month_and_method() {
    let app = spawn_app().await;
    let t = app.register("Ledger").await;
    let a = allocation(&app, &t, "Ada", "10000").await;
    pay(&app, &t, &a, "1000", "cash", "2026-09-15T10:00:00Z", "").await;
    pay(
        &app,
        &t,
        &a,
        "2000.50",
        "bank_transfer",
        "2026-09-30T23:59:59Z",
        "",
    )
    .await;
    pay(&app, &t, &a, "3000", "cash", "2026-10-01T00:00:00Z", "").await;

    let s: Value = app
        .get("/api/v1/transactions/statistics", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["count"], 3);
    assert_eq!(s["amount"], "6000.50");
    assert_eq!(
        s["by_month"],
        json!([{"key": "2026-09", "count": 2, "amount": "3000.50"}, {"key": "2026-10", "count": 1, "amount": "3000.00"}])
    );
    assert_eq!(
        s["by_method"],
        json!([{"key": "bank_transfer", "count": 1, "amount": "2000.50"}, {"key": "cash", "count": 2, "amount": "4000.00"}])
    );
    let october: Value = app
        .get(
            "/api/v1/transactions/statistics?paid_after=2026-10-01T00:00:00Z",
            &t.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(october["amount"], "3000.00");

    let cash: Value = app
        .get(
            "/api/v1/transactions?method=cash&ordering=paid_at",
            &t.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<&str> = cash["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["1000.00", "3000.00"]);
    for bad in [
        "?method=barter",
        "?paid_after=last-week",
        "?min_amount=-3",
        "?ordering=method",
    ] {
        problem(
            app.get(&format!("/api/v1/transactions{bad}"), &t.access_token)
                .await,
            422,
        )
        .await;
    }
    let other = app.register("Elsewhere").await;
    let theirs: Value = app
        .get("/api/v1/transactions/statistics", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["count"], 0);
}

#[tokio::test]
async fn the_export_quotes_correctly_neutralises_formulas_and_streams_many_rows() {
    let app = spawn_app().await;
    let t = app.register("Ledger").await;
    let a = allocation(&app, &t, "Okafor, \"Chidi\"", "100000000").await;
    pay(
        &app,
        &t,
        &a,
        "12.34",
        "card",
        "2026-01-02T03:04:05Z",
        "line one\nline two",
    )
    .await;
    pay(
        &app,
        &t,
        &a,
        "5",
        "cash",
        "2026-01-03T00:00:00Z",
        "=HYPERLINK(\"http://evil\")",
    )
    .await;

    // Bulk rows straight into the tenant's schema: the export must stream them all.
    let schema =
        estate::db::tenancy::SchemaName::for_company(estate::db::tenancy::CompanyId(t.company_id));
    app.database
        .client()
        .await
        .execute(
            &format!(
                "INSERT INTO {}.payments (id, allocation_id, amount, method, reference, paid_at, recorded_by)
                 SELECT gen_random_uuid(), $1::uuid, 1, 'cash', 'bulk ' || n, '2026-02-01'::timestamptz + n * interval '1 second', $2
                 FROM generate_series(1, 100000) AS n",
                schema.quoted()
            ),
            &[&a.parse::<uuid::Uuid>().unwrap(), &t.user_id],
        )
        .await
        .unwrap();

    let resp = app
        .get("/api/v1/transactions/export", &t.access_token)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("transactions.csv")
    );
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let body = resp.bytes().await.unwrap();

    let mut reader = csv::Reader::from_reader(body.as_ref());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        estate::domain::transactions::EXPORT_COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 100_002);
    assert_eq!(&rows[0][1], "2026-01-02T03:04:05Z");
    assert_eq!(&rows[0][2], "12.34");
    assert_eq!(&rows[0][4], "line one\nline two");
    assert_eq!(&rows[0][8], "Okafor, \"Chidi\"");
    assert_eq!(
        &rows[1][4], "'=HYPERLINK(\"http://evil\")",
        "formulas are neutralised"
    );
    assert_eq!(
        &rows[100_001][4], "bulk 100000",
        "oldest first, to the last row"
    );

    let logged: Value = app
        .get("/api/v1/audit-logs?action=export", &t.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(logged["count"], 1);
}
