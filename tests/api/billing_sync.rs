//! The Stripe billing-sync job: a change made in Stripe whose webhook never came is brought
//! into the company's row by the job, once, on demand and on the daily schedule.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use estate::billing::subscriptions::Billing;
use estate::billing::sync::{Synced, sync};
use estate::db::Db;
use estate::db::tenancy::CompanyId;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{Tenant, TestApp, config_with};
use crate::jobs::Worker;
use crate::stripe::{app_with_stripe, as_overrides, stripe_settings};

async fn subscription_id(app: &TestApp, company: Uuid) -> String {
    app.database
        .client()
        .await
        .query_one(
            "SELECT stripe_subscription_id FROM companies WHERE id = $1",
            &[&company],
        )
        .await
        .unwrap()
        .get(0)
}

async fn tier_and_status(app: &TestApp, company: Uuid) -> (String, String) {
    let row = app
        .database
        .client()
        .await
        .query_one(
            "SELECT tier, subscription_status FROM companies WHERE id = $1",
            &[&company],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits (bounded) until every key has its effect recorded.
async fn wait_for_effects(app: &TestApp, keys: &[String]) {
    let client = app.database.client().await;
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done: i64 = client
                .query_one(
                    "SELECT count(*) FROM job_effects WHERE idempotency_key = ANY($1)",
                    &[&keys],
                )
                .await
                .unwrap()
                .get(0);
            if done == keys.len() as i64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("jobs {keys:?} done within 30 s"));
}

async fn sync_lines(app: &TestApp, token: &str) -> Vec<Value> {
    let history: Value = app
        .get("/api/v1/subscriptions/billing_history", token)
        .await
        .json()
        .await
        .unwrap();
    history["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["event"] == "billing_sync")
        .cloned()
        .collect()
}

/// A server billing through the fake Stripe, and a company subscribed there on
/// professional.
async fn subscribed(name: &str) -> (TestApp, FakeStripe, Tenant) {
    let (app, fake) = app_with_stripe().await;
    let t = app.register_on(name, "starter").await;
    let up = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(&t.access_token),
            json!({"tier": "professional"}),
        )
        .await;
    assert_eq!(up.status(), 200);
    (app, fake, t)
}

#[tokio::test]
async fn the_sync_job_brings_a_change_made_in_stripe_into_the_company_once() {
    let (app, fake, t) = subscribed("Synced").await;
    let token = t.access_token.as_str();
    let local_only = app.register_on("Never billed", "starter").await;
    let subscription = subscription_id(&app, t.company_id).await;

    // Changed in Stripe, and the webhooks lost.
    fake.change_subscription(&subscription, "price_enterprise", "past_due");
    assert_eq!(
        tier_and_status(&app, t.company_id).await,
        ("professional".into(), "active".into())
    );

    let db = Db::connect(&app.database.config).unwrap();
    let shared = db.shared().await.unwrap();
    let on_demand = estate_jobs::billing::request(&shared, t.company_id)
        .await
        .unwrap();
    let unknown = estate_jobs::billing::request(&shared, Uuid::new_v4()).await;
    assert!(
        matches!(unknown, Err(estate_jobs::JobError::NotFound(_))),
        "{unknown:?}"
    );

    let stripe = stripe_settings(&fake);
    let worker = Worker::start_with(&app, &as_overrides(&stripe)).await;
    // The worker queues the daily sync on start: for the Stripe-billed company only.
    let today = chrono::Utc::now().date_naive();
    let daily = format!("billing_sync:{}:{today}", t.company_id);
    wait_for_effects(&app, &[on_demand.clone(), daily.clone()]).await;
    worker.stop().await;

    assert_eq!(
        tier_and_status(&app, t.company_id).await,
        ("enterprise".into(), "past_due".into())
    );
    let queued: Vec<String> = shared
        .query(
            "SELECT idempotency_key FROM outbox WHERE job = 'billing_sync' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(
        !queued
            .iter()
            .any(|k| k.contains(&local_only.company_id.to_string()))
    );
    assert!(
        !fake
            .to("GET", &format!("/v1/subscriptions/{subscription}"))
            .is_empty()
    );

    // Two syncs ran; the change happened once.
    let lines = sync_lines(&app, token).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["from_tier"], "professional");
    assert_eq!(lines[0]["to_tier"], "enterprise");
    let audit: Value = app
        .get("/api/v1/audit-logs?action=subscription_change", token)
        .await
        .json()
        .await
        .unwrap();
    let synced = audit["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["after"]["tier"] == "enterprise")
        .count();
    assert_eq!(synced, 1, "{audit}");

    // The daily schedule is once a day, however often it is written.
    assert_eq!(
        estate_jobs::billing::schedule_today(&shared).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_sync_older_than_the_state_applied_changes_nothing() {
    let (app, fake, t) = subscribed("Ordered").await;
    let token = t.access_token.as_str();
    let stripe = stripe_settings(&fake);
    let config = config_with(&app.database.name, &as_overrides(&stripe));
    let db = Db::connect(&config).unwrap();
    let billing = Billing::load(&config, &db).await.unwrap();
    let company = CompanyId(t.company_id);

    assert_eq!(
        sync(&db, &billing, company).await.unwrap(),
        Synced::Unchanged
    );
    assert!(sync_lines(&app, token).await.is_empty());

    // A webhook newer than any read we could make has been applied: the read loses.
    app.database
        .client()
        .await
        .execute(
            "UPDATE companies SET stripe_state_at = now() + interval '1 hour' WHERE id = $1",
            &[&t.company_id],
        )
        .await
        .unwrap();
    let subscription = subscription_id(&app, t.company_id).await;
    fake.change_subscription(&subscription, "price_starter", "canceled");
    assert_eq!(sync(&db, &billing, company).await.unwrap(), Synced::Stale);
    assert_eq!(
        tier_and_status(&app, t.company_id).await,
        ("professional".into(), "active".into())
    );

    // Stripe failing: an error (the job retries), nothing changed.
    app.database
        .client()
        .await
        .execute(
            "UPDATE companies SET stripe_state_at = NULL WHERE id = $1",
            &[&t.company_id],
        )
        .await
        .unwrap();
    fake.fail(true);
    assert!(sync(&db, &billing, company).await.is_err());
    fake.fail(false);
    assert_eq!(
        tier_and_status(&app, t.company_id).await,
        ("professional".into(), "active".into())
    );
    // Once it answers, the cancellation is followed.
    assert!(matches!(
        sync(&db, &billing, company).await.unwrap(),
        Synced::Changed { .. }
    ));
    assert_eq!(tier_and_status(&app, t.company_id).await.1, "canceled");

    // In local mode there is nothing to sync with.
    let local = config_with(&app.database.name, &[]);
    let local_billing = Billing::load(&local, &db).await.unwrap();
    assert_eq!(
        sync(&db, &local_billing, company).await.unwrap(),
        Synced::LocalMode
    );
}
