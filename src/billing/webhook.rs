//! Stripe webhooks (`POST /payments/webhook`).
//!
//! Verification is written here rather than taken from async-stripe's webhook module:
//! that one checks a single secret, while a rotation needs two, and it parses into typed
//! events that we read only a few fields of. The scheme is Stripe's: `Stripe-Signature:
//! t=<unix>,v1=<hex>[,v1=<hex>…]`, each `v1` an HMAC-SHA256 of `"<t>.<raw body>"`.
//!
//! Each event id is recorded once, in the same transaction as its effect, so a replay
//! changes nothing. Events may arrive out of order: the creation time of the newest event
//! applied to a company's subscription is kept, and an older one changes no state.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::stripe::SubscriptionState;
use super::subscriptions::{
    Billing, HistoryLine, SUBSCRIPTION_COLUMNS, Subscription, audit_change, follow_stripe,
    record_history, store,
};
use crate::audit::{AuditAction, AuditEntry, RequestOrigin};
use crate::auth::{Machine, Principal, Role};
use crate::config::Secret;
use crate::db::Db;
use crate::db::tenancy::CompanyId;
use crate::domain::allocations::{self, NewPayment, PaymentMethod};
use crate::domain::values::Money;
use crate::error::AppError;
use crate::outbox;

/// Seconds a signature stays valid (Stripe's default tolerance).
pub const TOLERANCE_SECS: i64 = 300;

/// Checks `header` against the raw body with any of `secrets`.
pub fn verify_signature(
    secrets: &[Secret],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), AppError> {
    let bad = |m: &str| AppError::BadSignature(m.to_string());
    if secrets.is_empty() {
        return Err(bad(
            "webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET)",
        ));
    }
    let header = header.ok_or_else(|| bad("the Stripe-Signature header is missing"))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| bad("the Stripe-Signature header has no timestamp"))?;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(bad(
            "the signature's timestamp is outside the 300-second tolerance",
        ));
    }
    for secret in secrets {
        for signature in &signatures {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|_| AppError::Internal("webhook secret".into()))?;
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            // Constant-time comparison.
            if mac.verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(bad("no signature matches the body"))
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Seen before: nothing changed.
    Replayed,
    /// Older than what the company's state already reflects: recorded, nothing changed.
    Stale,
    /// A type we do not handle, or about no company of ours: acknowledged.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Replayed => "replayed",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
        }
    }
}

/// An event, as far as we read it.
struct Event<'a> {
    id: &'a str,
    kind: &'a str,
    created: DateTime<Utc>,
    object: &'a Value,
}

/// A body whose signature verified but which is not an event we can read.
fn not_an_event() -> AppError {
    let mut errors = crate::error::FieldErrors::default();
    errors.add(
        "body",
        "must be a Stripe event (id, type, created, data.object)",
    );
    AppError::Validation(errors)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Applies a verified event.
pub async fn handle(db: &Db, billing: &Billing, body: &[u8]) -> Result<Outcome, AppError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| not_an_event())?;
    let (Some(id), Some(kind), Some(created), Some(object)) = (
        text(&value, "/id"),
        text(&value, "/type"),
        value
            .get("created")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        value.pointer("/data/object"),
    ) else {
        return Err(not_an_event());
    };
    let event = Event {
        id,
        kind,
        created,
        object,
    };
    match kind {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "invoice.paid"
        | "invoice.payment_failed" => subscription_event(db, billing, &event).await,
        "payment_intent.succeeded" => payment_succeeded(db, &event).await,
        _ => Ok(Outcome::Ignored),
    }
}

fn amount(minor: Option<i64>) -> Option<Decimal> {
    minor.map(|m| Decimal::new(m, 2))
}

/// Subscription and invoice events: the company's row, in one shared transaction with the
/// event's id, its history line and audit entry.
async fn subscription_event(
    db: &Db,
    billing: &Billing,
    event: &Event<'_>,
) -> Result<Outcome, AppError> {
    let object = event.object;
    let customer = text(object, "/customer");
    let subscription_id = if event.kind.starts_with("customer.subscription") {
        text(object, "/id")
    } else {
        text(object, "/subscription")
            .or_else(|| text(object, "/parent/subscription_details/subscription"))
    };
    let metadata_company =
        text(object, "/metadata/company_id").and_then(|c| c.parse::<Uuid>().ok());

    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT id, {SUBSCRIPTION_COLUMNS}, stripe_state_at
                 FROM companies
                 WHERE stripe_subscription_id = $1 OR stripe_customer_id = $2 OR id = $3
                 ORDER BY (stripe_subscription_id = $1) DESC NULLS LAST
                 LIMIT 1
                 FOR UPDATE"
            ),
            &[&subscription_id, &customer, &metadata_company],
        )
        .await?;
    let Some(row) = row else {
        tracing::warn!(
            event = event.id,
            kind = event.kind,
            "Stripe event about no company of ours"
        );
        return Ok(Outcome::Ignored);
    };
    if !record_event(&tx, event).await? {
        return Ok(Outcome::Replayed);
    }
    let company = CompanyId(row.get(0));
    let before = Subscription::from_row(&row, 1)?;
    let state_at: Option<DateTime<Utc>> = row.get(6);
    let stale = state_at.is_some_and(|t| event.created < t);
    let mut after = before.clone();
    let mut line = HistoryLine {
        event: "subscription_updated",
        stripe_id: text(object, "/id"),
        ..Default::default()
    };
    match event.kind {
        "invoice.paid" => {
            line.event = "invoice_paid";
            line.amount = amount(object.get("amount_paid").and_then(Value::as_i64));
            line.currency = text(object, "/currency");
            if after.status == "past_due" {
                after.status = "active".into();
            }
        }
        "invoice.payment_failed" => {
            line.event = "payment_failed";
            line.amount = amount(object.get("amount_due").and_then(Value::as_i64));
            line.currency = text(object, "/currency");
            after.status = "past_due".into();
        }
        "customer.subscription.deleted" => {
            line.event = "canceled";
            after.status = "canceled".into();
            after.cancel_at_period_end = false;
            after.pending_tier = None;
        }
        _ => follow_stripe(billing, &state_of(object), &mut after),
    }
    line.from_tier = Some(before.tier);
    line.to_tier = Some(after.pending_tier.unwrap_or(after.tier));
    if stale {
        line.detail = Some("older than the state already applied; no change");
        record_history(&tx, company, line).await?;
        tx.commit().await?;
        return Ok(Outcome::Stale);
    }
    store(&tx, company, &after, Some(event.created), customer).await?;
    if event.kind == "customer.subscription.created" {
        tx.execute(
            "UPDATE companies SET stripe_subscription_id = $2,
                    stripe_subscription_item_id = coalesce($3, stripe_subscription_item_id)
             WHERE id = $1 AND stripe_subscription_id IS NULL",
            &[
                &company.0,
                &subscription_id,
                &text(object, "/items/data/0/id"),
            ],
        )
        .await?;
    }
    let failed_invoice =
        (event.kind == "invoice.payment_failed").then(|| estate_jobs::PaymentFailedEmail {
            company_id: company.0,
            invoice_id: text(object, "/id").unwrap_or(event.id).to_string(),
            amount_due: line.amount.map(|a| format!("{a:.2}")),
            currency: line.currency.map(str::to_string),
        });
    record_history(&tx, company, line).await?;
    if let Some(job) = failed_invoice {
        outbox::enqueue_shared(&tx, &job).await?;
    }
    if after != before {
        let entry = AuditEntry::system(&RequestOrigin::default(), AuditAction::SubscriptionChange);
        audit_change(&tx, db.naming(), company, entry, &before, &after).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Applied)
}

/// A subscription object of an event, as far as the company's row follows it.
fn state_of(object: &Value) -> SubscriptionState<'_> {
    SubscriptionState {
        price: text(object, "/items/data/0/price/id"),
        status: text(object, "/status"),
        period_end: object
            .pointer("/items/data/0/current_period_end")
            .or_else(|| object.get("current_period_end"))
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        cancel_at_period_end: object.get("cancel_at_period_end").and_then(Value::as_bool),
    }
}

/// `ON CONFLICT DO NOTHING` needs only the INSERT right, which tenant roles hold.
const RECORD_EVENT: &str = "INSERT INTO public.stripe_events (id, type, created_at)
                            VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// Records the event id; false when it was recorded before (a replay).
async fn record_event(
    client: &impl deadpool_postgres::GenericClient,
    event: &Event<'_>,
) -> Result<bool, AppError> {
    let inserted = client
        .execute(RECORD_EVENT, &[&event.id, &event.kind, &event.created])
        .await?;
    Ok(inserted == 1)
}

/// A card payment started by `POST /payments/process` succeeded: record it on its
/// allocation, in the company's tenant transaction together with the event id.
async fn payment_succeeded(db: &Db, event: &Event<'_>) -> Result<Outcome, AppError> {
    let object = event.object;
    let ids = (
        text(object, "/metadata/company_id").and_then(|v| v.parse::<Uuid>().ok()),
        text(object, "/metadata/allocation_id").and_then(|v| v.parse::<Uuid>().ok()),
        text(object, "/metadata/user_id").and_then(|v| v.parse::<Uuid>().ok()),
        text(object, "/id"),
        object.get("amount_received").and_then(Value::as_i64),
    );
    let (Some(company), Some(allocation), Some(user), Some(intent), Some(received)) = ids else {
        tracing::warn!(
            event = event.id,
            "payment_intent.succeeded without our metadata"
        );
        return Ok(Outcome::Ignored);
    };
    let known = db
        .shared()
        .await?
        .query_opt("SELECT 1 FROM tenants WHERE company_id = $1", &[&company])
        .await?;
    if known.is_none() {
        return Ok(Outcome::Ignored);
    }
    let company = CompanyId(company);
    let mut tx = db.tenant_tx(company).await?;
    let inserted = tx
        .execute(RECORD_EVENT, &[&event.id, &event.kind, &event.created])
        .await?;
    if inserted == 0 {
        return Ok(Outcome::Replayed);
    }
    // The user who started the payment authorised it then; Stripe completes it now.
    let principal = Principal {
        user_id: user,
        company,
        role: Role::Owner,
        jti: Uuid::nil(),
        session: None,
        token_expires_at: 0,
        origin: RequestOrigin::default(),
        machine: Some(Machine::Stripe),
    };
    let payment = NewPayment {
        amount: Money::from_decimal(Decimal::new(received, 2)),
        method: PaymentMethod::Stripe,
        reference: intent.to_string(),
        paid_at: Some(event.created),
    };
    match allocations::record_payment(&mut tx, &principal, allocation, payment).await {
        Ok(_) => {
            tx.commit().await?;
            Ok(Outcome::Applied)
        }
        // The allocation no longer takes this payment (completed, cancelled, or the
        // balance is lower than the amount): nothing is recorded, and the operator is told.
        Err(e @ (AppError::Conflict(_) | AppError::Validation(_) | AppError::NotFound(_))) => {
            tracing::error!(event = event.id, payment_intent = intent, error = %e,
                "a Stripe payment succeeded but its allocation does not take it");
            Ok(Outcome::Ignored)
        }
        Err(e) => Err(e),
    }
}
