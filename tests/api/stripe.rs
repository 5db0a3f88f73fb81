//! Billing through Stripe (async-stripe pointed at a local fake) and Stripe's webhook,
//! with events signed by the test.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::fake_stripe::{FakeStripe, PERIOD_END};
use crate::helpers::{Tenant, TestApp, problem, spawn_app_with};
use crate::sales::{client, created, id, property};

const OLD_SECRET: &str = "whsec_old_secret";
const NEW_SECRET: &str = "whsec_new_secret";

/// The settings that point billing at `fake`.
pub fn stripe_settings(fake: &FakeStripe) -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", "sk_test_fake".into()),
        ("STRIPE_API_BASE", fake.url.clone()),
        ("STRIPE_PRICE_STARTER", "price_starter".into()),
        ("STRIPE_PRICE_PROFESSIONAL", "price_professional".into()),
        ("STRIPE_PRICE_ENTERPRISE", "price_enterprise".into()),
        (
            "STRIPE_WEBHOOK_SECRET",
            format!("{OLD_SECRET},{NEW_SECRET}"),
        ),
    ]
}

/// Pairs of names and values, as the helpers take overrides.
pub fn as_overrides<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub async fn app_with_stripe() -> (TestApp, FakeStripe) {
    let fake = FakeStripe::start().await;
    let app = spawn_app_with(&as_overrides(&stripe_settings(&fake))).await;
    (app, fake)
}

fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": object}})
        .to_string()
}

async fn deliver(app: &TestApp, body: &str, header: Option<String>) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/api/v1/payments/webhook"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(h) = header {
        req = req.header("Stripe-Signature", h);
    }
    req.send().await.unwrap()
}

/// Delivers `body` signed now with the current secret; answers the outcome.
async fn send(app: &TestApp, body: &str) -> String {
    let t = now();
    let header = format!("t={t},v1={}", signature(NEW_SECRET, t, body));
    let resp = deliver(app, body, Some(header)).await;
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["outcome"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn company_row(app: &TestApp, company: Uuid) -> (String, String, Option<String>) {
    let row = app
        .database
        .client()
        .await
        .query_one(
            "SELECT tier, subscription_status, pending_tier FROM companies WHERE id = $1",
            &[&company],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Links a company to Stripe ids, as a first subscription would have.
async fn link(app: &TestApp, t: &Tenant) -> (String, String) {
    let customer = format!("cus_{}", Uuid::new_v4().simple());
    let subscription = format!("sub_{}", Uuid::new_v4().simple());
    app.database
        .client()
        .await
        .execute(
            "UPDATE companies SET stripe_customer_id = $2, stripe_subscription_id = $3 WHERE id = $1",
            &[&t.company_id, &customer, &subscription],
        )
        .await
        .unwrap();
    (customer, subscription)
}

fn subscription_object(id: &str, customer: &str, price: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "cancel_at_period_end": false,
        "items": {"data": [{"id": "si_1", "current_period_end": PERIOD_END, "price": {"id": price}}]}
    })
}

#[tokio::test]
async fn plan_changes_go_through_stripe_and_a_failure_changes_nothing() {
    let (app, fake) = app_with_stripe().await;
    let t = app.register_on("Billed", "starter").await;
    let token = t.access_token.as_str();

    let up = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "professional"}),
        )
        .await;
    assert_eq!(up.status(), 200);
    let up: Value = up.json().await.unwrap();
    assert_eq!(up["tier"], "professional");
    assert_eq!(up["billing_mode"], "stripe");
    let period_end: chrono::DateTime<chrono::Utc> =
        up["current_period_end"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        period_end.timestamp(),
        PERIOD_END,
        "the period Stripe reported"
    );
    let customers = fake.to("POST", "/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(
        customers[0].authorization.as_deref(),
        Some("Bearer sk_test_fake")
    );
    assert_eq!(customers[0].form["email"], t.email);
    assert_eq!(
        customers[0].form["metadata[company_id]"],
        t.company_id.to_string()
    );
    assert!(customers[0].idempotency_key.is_some());
    let subs = fake.to("POST", "/v1/subscriptions");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].form["customer"], "cus_1");
    assert_eq!(subs[0].form["items[0][price]"], "price_professional");

    // Stripe failing: 502, and the plan, history and audit log stay as they were.
    fake.fail(true);
    let failed = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "enterprise"}),
        )
        .await;
    problem(failed, 502).await;
    fake.fail(false);
    assert_eq!(company_row(&app, t.company_id).await.0, "professional");
    let history: Value = app
        .get("/api/v1/subscriptions/billing_history", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["count"], 1);

    let up = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(token),
            json!({"tier": "enterprise"}),
        )
        .await;
    assert_eq!(up.status(), 200);
    let change = fake.to("POST", "/v1/subscriptions/sub_2").pop().unwrap();
    assert_eq!(change.form["items[0][id]"], "si_3");
    assert_eq!(change.form["items[0][price]"], "price_enterprise");
    assert_eq!(change.form["proration_behavior"], "always_invoice");

    let down = app
        .post(
            "/api/v1/subscriptions/downgrade",
            Some(token),
            json!({"tier": "professional"}),
        )
        .await;
    assert_eq!(
        down.json::<Value>().await.unwrap()["pending_tier"],
        "professional"
    );
    let change = fake.to("POST", "/v1/subscriptions/sub_2").pop().unwrap();
    assert_eq!(change.form["items[0][price]"], "price_professional");
    assert_eq!(change.form["proration_behavior"], "none");

    let cancel = app
        .post("/api/v1/subscriptions/cancel", Some(token), json!({}))
        .await;
    assert_eq!(cancel.status(), 200);
    let change = fake.to("POST", "/v1/subscriptions/sub_2").pop().unwrap();
    assert_eq!(change.form["cancel_at_period_end"], "true");
    assert_eq!(
        fake.to("POST", "/v1/customers").len(),
        1,
        "one customer per company"
    );
}

#[tokio::test]
async fn a_card_payment_is_recorded_once_when_stripe_says_it_succeeded() {
    let (app, fake) = app_with_stripe().await;
    let t = app.register("Seller").await;
    let token = t.access_token.as_str();
    let estate = app.create_estate(token, json!({"name": "E"})).await;
    let plot = property(&app, token, id(&estate), "P-1", "5000").await;
    let buyer = client(&app, token, "Buyer").await;
    let allocation = created(
        app.post(
            "/api/v1/allocations",
            Some(token),
            json!({"property_id": id(&plot), "client_id": id(&buyer), "payment_plan": "installment"}),
        )
        .await,
    )
    .await;
    let process = |amount: &str, key: &str| {
        app.http
            .post(app.url("/api/v1/payments/process"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"allocation_id": id(&allocation), "amount": amount}))
            .send()
    };
    let first = process("1500.00", "pay-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["amount"], "1500.00");
    assert_eq!(first["currency"], "usd");
    assert!(first["client_secret"].as_str().unwrap().contains("secret"));
    let sent = fake.to("POST", "/v1/payment_intents");
    assert_eq!(sent[0].form["amount"], "150000");
    assert_eq!(sent[0].form["metadata[allocation_id]"], id(&allocation));
    // A retry with the same key gets the same PaymentIntent.
    let again: Value = process("1500.00", "pay-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["payment_intent_id"], first["payment_intent_id"]);
    // More than the balance is refused before Stripe hears of it.
    let over = process("5000.01", "pay-2").await.unwrap();
    assert!(problem(over, 422).await["errors"]["amount"].is_array());
    assert_eq!(fake.to("POST", "/v1/payment_intents").len(), 2);

    let intent = first["payment_intent_id"].as_str().unwrap();
    let succeeded = event(
        "evt_pi_1",
        "payment_intent.succeeded",
        now(),
        json!({
            "id": intent, "object": "payment_intent", "amount_received": 150000, "currency": "usd",
            "metadata": sent[0].form.iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.trim_end_matches(']').to_string(), json!(v))))
                .collect::<serde_json::Map<String, Value>>()
        }),
    );
    assert_eq!(send(&app, &succeeded).await, "applied");
    assert_eq!(send(&app, &succeeded).await, "replayed");
    let history: Value = app
        .get(
            &format!("/api/v1/allocations/{}/payment_history", id(&allocation)),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    let payments = history["results"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "{history}");
    assert_eq!(payments[0]["amount"], "1500.00");
    assert_eq!(payments[0]["method"], "stripe");
    assert_eq!(payments[0]["reference"], intent);
    let now_paid: Value = app
        .get(&format!("/api/v1/allocations/{}", id(&allocation)), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now_paid["balance"], "3500.00");
}

#[tokio::test]
async fn webhooks_need_a_fresh_signature_by_a_current_secret() {
    let (app, _fake) = app_with_stripe().await;
    let t = app.register_on("Signed", "starter").await;
    let (customer, sub) = link(&app, &t).await;
    let body = event(
        "evt_sig",
        "customer.subscription.updated",
        now(),
        subscription_object(&sub, &customer, "price_enterprise", "active"),
    );
    let t0 = now();
    let bad = [
        None,
        Some(format!(
            "t={t0},v1={}",
            signature("whsec_someone_else", t0, &body)
        )),
        Some(format!(
            "t={t0},v1={}",
            signature(NEW_SECRET, t0, "{\"tampered\":true}")
        )),
        Some(format!(
            "t={},v1={}",
            t0 - 301,
            signature(NEW_SECRET, t0 - 301, &body)
        )),
        Some(format!("v1={}", signature(NEW_SECRET, t0, &body))),
    ];
    for header in bad {
        let p = problem(deliver(&app, &body, header.clone()).await, 400).await;
        assert_eq!(p["type"], "/problems/invalid-signature", "{header:?}");
    }
    assert_eq!(
        company_row(&app, t.company_id).await.0,
        "starter",
        "nothing changed"
    );
    let recorded: i64 = app
        .database
        .client()
        .await
        .query_one("SELECT count(*) FROM stripe_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0);

    // A correctly signed body that is not an event is refused too.
    let junk = "{\"hello\": \"world\"}";
    let header = format!("t={t0},v1={}", signature(NEW_SECRET, t0, junk));
    problem(deliver(&app, junk, Some(header)).await, 422).await;

    // The old secret still works during a rotation, and one good v1 among several is enough.
    let header = format!(
        "t={t0},v1={},v1={}",
        signature("whsec_stale", t0, &body),
        signature(OLD_SECRET, t0, &body)
    );
    let ok = deliver(&app, &body, Some(header)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(company_row(&app, t.company_id).await.0, "enterprise");
}

#[tokio::test]
async fn events_apply_once_and_an_older_event_never_overwrites_a_newer_one() {
    let (app, _fake) = app_with_stripe().await;
    let t = app.register_on("Ordered", "starter").await;
    let token = t.access_token.as_str();
    let (customer, sub) = link(&app, &t).await;
    let base = now() - 100;
    let newer = event(
        "evt_2",
        "customer.subscription.updated",
        base + 20,
        subscription_object(&sub, &customer, "price_enterprise", "active"),
    );
    let older = event(
        "evt_1",
        "customer.subscription.updated",
        base + 10,
        subscription_object(&sub, &customer, "price_professional", "active"),
    );
    assert_eq!(send(&app, &newer).await, "applied");
    assert_eq!(send(&app, &older).await, "stale");
    assert_eq!(send(&app, &newer).await, "replayed");
    assert_eq!(company_row(&app, t.company_id).await.0, "enterprise");

    let invoice = |evt: &str, kind: &str, at: i64| {
        event(
            evt,
            kind,
            at,
            json!({"id": format!("in_{evt}"), "object": "invoice", "customer": customer,
                   "subscription": sub, "amount_paid": 9900, "amount_due": 9900, "currency": "usd"}),
        )
    };
    assert_eq!(
        send(&app, &invoice("evt_3", "invoice.payment_failed", base + 30)).await,
        "applied"
    );
    assert_eq!(company_row(&app, t.company_id).await.1, "past_due");
    problem(
        app.post("/api/v1/estates", Some(token), json!({"name": "No"}))
            .await,
        402,
    )
    .await;
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200);
    let notices: i64 = app
        .database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM outbox WHERE job = 'payment_failed_email' AND company_id = $1",
            &[&t.company_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(notices, 1);
    // A payment older than the failure does not lift it; a newer one does.
    assert_eq!(
        send(&app, &invoice("evt_4", "invoice.paid", base + 25)).await,
        "stale"
    );
    assert_eq!(company_row(&app, t.company_id).await.1, "past_due");
    assert_eq!(
        send(&app, &invoice("evt_5", "invoice.paid", base + 40)).await,
        "applied"
    );
    assert_eq!(company_row(&app, t.company_id).await.1, "active");
    app.create_estate(token, json!({"name": "Paid again"}))
        .await;

    let deleted = event(
        "evt_6",
        "customer.subscription.deleted",
        base + 50,
        subscription_object(&sub, &customer, "price_enterprise", "canceled"),
    );
    assert_eq!(send(&app, &deleted).await, "applied");
    assert_eq!(company_row(&app, t.company_id).await.1, "canceled");
    let other = event("evt_7", "charge.refunded", base + 60, json!({"id": "ch_1"}));
    assert_eq!(send(&app, &other).await, "ignored");

    let history: Value = app
        .get("/api/v1/subscriptions/billing_history", token)
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = history["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "canceled",
            "invoice_paid",
            "invoice_paid",
            "payment_failed",
            "subscription_updated",
            "subscription_updated"
        ]
    );
}
