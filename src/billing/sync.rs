//! The billing-sync job's effect (SPEC §6): reads the company's subscription from Stripe
//! and brings the local row in step, for when a webhook was lost, or its effect refused.
//!
//! It follows the same rules as the webhook (`subscriptions::follow_stripe`) and the same
//! ordering: the moment Stripe was read is kept as the state's time, so a webhook event
//! older than the read that arrives afterwards changes nothing, and a read older than an
//! event already applied is dropped (`Synced::Stale`).

use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use estate_jobs::billing::{BillingSync, SyncFuture};
use uuid::Uuid;

use super::subscriptions::{
    Billing, HistoryLine, SUBSCRIPTION_COLUMNS, Subscription, audit_change, follow_stripe,
    record_history, store,
};
use crate::audit::{AuditAction, AuditEntry, RequestOrigin};
use crate::db::Db;
use crate::db::tenancy::CompanyId;
use crate::error::AppError;

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// Stripe is not configured: nothing to sync with.
    LocalMode,
    /// The company has no Stripe subscription (yet).
    NoSubscription,
    Unchanged,
    /// A webhook newer than the read was applied meanwhile; it wins.
    Stale,
    Changed {
        before: Box<Subscription>,
        after: Box<Subscription>,
    },
}

impl fmt::Display for Synced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Synced::LocalMode => f.write_str("local mode: nothing to sync"),
            Synced::NoSubscription => f.write_str("no Stripe subscription"),
            Synced::Unchanged => f.write_str("already in step with Stripe"),
            Synced::Stale => f.write_str("a newer webhook was applied meanwhile"),
            Synced::Changed { before, after } => write!(
                f,
                "{} {} -> {} {}",
                before.tier.as_str(),
                before.status,
                after.tier.as_str(),
                after.status
            ),
        }
    }
}

/// Brings `company`'s subscription in step with Stripe: one read from Stripe, then one
/// shared transaction (the company's row locked, the row, a history line and an audit
/// entry when something changed).
pub async fn sync(db: &Db, billing: &Billing, company: CompanyId) -> Result<Synced, AppError> {
    let Some(stripe) = &billing.stripe else {
        return Ok(Synced::LocalMode);
    };
    let subscription_id: Option<String> = db
        .shared()
        .await?
        .query_opt(
            "SELECT stripe_subscription_id FROM companies WHERE id = $1",
            &[&company.0],
        )
        .await?
        .ok_or(AppError::NotFound("company"))?
        .get(0);
    let Some(subscription_id) = subscription_id else {
        return Ok(Synced::NoSubscription);
    };
    // Taken before the read, so that any event Stripe created after it counts as newer.
    let read_at = Utc::now();
    let remote = stripe.subscription(&subscription_id).await?;

    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS}, stripe_state_at FROM companies
                 WHERE id = $1 FOR UPDATE"
            ),
            &[&company.0],
        )
        .await?;
    let before = Subscription::from_row(&row, 0)?;
    let state_at: Option<chrono::DateTime<Utc>> = row.get(5);
    if state_at.is_some_and(|t| t > read_at) {
        return Ok(Synced::Stale);
    }
    let mut after = before.clone();
    follow_stripe(billing, &remote.state(), &mut after);
    if after == before {
        return Ok(Synced::Unchanged);
    }
    store(&tx, company, &after, Some(read_at), None).await?;
    record_history(
        &tx,
        company,
        HistoryLine {
            event: "billing_sync",
            from_tier: Some(before.tier),
            to_tier: Some(after.pending_tier.unwrap_or(after.tier)),
            stripe_id: Some(&remote.id),
            detail: Some("brought in step with Stripe by the billing sync"),
            ..Default::default()
        },
    )
    .await?;
    let entry = AuditEntry::system(&RequestOrigin::default(), AuditAction::SubscriptionChange);
    audit_change(&tx, db.naming(), company, entry, &before, &after).await?;
    tx.commit().await?;
    Ok(Synced::Changed {
        before: Box::new(before),
        after: Box::new(after),
    })
}

/// The sync as the worker runs it.
pub struct StripeSync {
    pub db: Db,
    pub billing: Billing,
}

impl BillingSync for StripeSync {
    fn sync(&self, company: Uuid) -> SyncFuture<'_> {
        Box::pin(async move {
            sync(&self.db, &self.billing, CompanyId(company))
                .await
                .map(|synced| synced.to_string())
                .map_err(|e| e.to_string())
        })
    }
}

impl StripeSync {
    /// The worker's sync, or `None` in local mode.
    pub fn for_worker(db: Db, billing: Billing) -> Option<Arc<dyn BillingSync>> {
        billing
            .stripe
            .is_some()
            .then(|| Arc::new(StripeSync { db, billing }) as Arc<dyn BillingSync>)
    }
}
