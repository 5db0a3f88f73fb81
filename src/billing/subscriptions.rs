//! Plan changes (SPEC §5). An upgrade applies at once; a downgrade and a cancellation wait
//! for the end of the period already paid for. Only the company's owner may change its
//! plan (the permission table), and each change is recorded in the billing history and
//! the company's audit log (`subscription_change`) in its own transaction.
//!
//! With Stripe configured, each change is made on the company's Stripe subscription first
//! and the local row follows Stripe's answer; Stripe's webhooks then keep it in step
//! (`billing::webhook`). Without it (local mode) the change applies locally only.

use chrono::{DateTime, Months, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use super::plans::{Plans, Resource, Tier};
use super::stripe::{StripeGateway, StripeSubscription, SubscriptionState};
use crate::audit::{self, AuditAction, AuditEntry, RequestOrigin};
use crate::auth::Principal;
use crate::db::Db;
use crate::db::tenancy::{CompanyId, TenantNaming};
use crate::domain::listing::{Page, PageRequest};
use crate::error::{AppError, FieldErrors};

/// Billing as configured: the plans, and Stripe when it is set up.
#[derive(Clone)]
pub struct Billing {
    pub plans: Plans,
    pub stripe: Option<StripeGateway>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub tier: Tier,
    /// `active`, `past_due` (an invoice failed) or `canceled`.
    pub status: String,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    /// A downgrade waiting for the end of the period.
    pub pending_tier: Option<Tier>,
}

impl Billing {
    /// The plans (from the database: run `estate migrate` first) and Stripe, when
    /// configured.
    pub async fn load(config: &crate::config::Config, db: &Db) -> Result<Self, AppError> {
        let plans = Plans::load(&db.shared().await?).await?;
        let stripe = match &config.stripe {
            Some(stripe) => Some(StripeGateway::new(stripe)?),
            None => {
                tracing::info!("STRIPE_SECRET_KEY is not set: billing runs in local mode");
                None
            }
        };
        Ok(Billing { plans, stripe })
    }
}

/// How much of each limited resource the company uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub users: i64,
    pub estates: i64,
    pub properties: i64,
}

impl Usage {
    pub fn of(&self, resource: Resource) -> i64 {
        match resource {
            Resource::Users => self.users,
            Resource::Estates => self.estates,
            Resource::Properties => self.properties,
        }
    }
}

/// The company's row, locked for a change.
struct Locked {
    subscription: Subscription,
    name: String,
    stripe_customer: Option<String>,
    stripe_subscription: Option<String>,
    stripe_item: Option<String>,
}

fn tier(raw: &str) -> Result<Tier, AppError> {
    Tier::parse(raw).ok_or_else(|| AppError::Internal(format!("unknown tier `{raw}`")))
}

/// The subscription columns, in the order every query here selects them.
pub const SUBSCRIPTION_COLUMNS: &str =
    "tier, subscription_status, current_period_end, cancel_at_period_end, pending_tier";

impl Subscription {
    /// Reads [`SUBSCRIPTION_COLUMNS`] from `row`, starting at column `first`.
    pub fn from_row(row: &tokio_postgres::Row, first: usize) -> Result<Self, AppError> {
        Ok(Subscription {
            tier: tier(row.get(first))?,
            status: row.get(first + 1),
            current_period_end: row.get(first + 2),
            cancel_at_period_end: row.get(first + 3),
            pending_tier: row
                .get::<_, Option<&str>>(first + 4)
                .map(tier)
                .transpose()?,
        })
    }
}

async fn lock(client: &impl GenericClient, company: CompanyId) -> Result<Locked, AppError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS}, name, stripe_customer_id, stripe_subscription_id,
                        stripe_subscription_item_id
                 FROM companies WHERE id = $1 FOR UPDATE"
            ),
            &[&company.0],
        )
        .await?
        .ok_or(AppError::NotFound("company"))?;
    Ok(Locked {
        subscription: Subscription::from_row(&row, 0)?,
        name: row.get(5),
        stripe_customer: row.get(6),
        stripe_subscription: row.get(7),
        stripe_item: row.get(8),
    })
}

/// Stores the company's subscription. When it is what Stripe reported, `stripe_state_at`
/// is when (a webhook event's time, or the moment the billing sync read it), so that an
/// older report arriving later is known as stale; a local change leaves it as it was. The
/// customer id is kept when the company had none yet.
pub async fn store(
    client: &impl GenericClient,
    company: CompanyId,
    s: &Subscription,
    stripe_state_at: Option<DateTime<Utc>>,
    customer: Option<&str>,
) -> Result<(), AppError> {
    client
        .execute(
            "UPDATE companies
             SET tier = $2, subscription_status = $3, current_period_end = $4,
                 cancel_at_period_end = $5, pending_tier = $6,
                 stripe_state_at = coalesce($7, stripe_state_at),
                 stripe_customer_id = coalesce(stripe_customer_id, $8),
                 updated_at = now()
             WHERE id = $1",
            &[
                &company.0,
                &s.tier.as_str(),
                &s.status,
                &s.current_period_end,
                &s.cancel_at_period_end,
                &s.pending_tier.map(Tier::as_str),
                &stripe_state_at,
                &customer,
            ],
        )
        .await?;
    Ok(())
}

async fn store_stripe_ids(
    client: &impl GenericClient,
    company: CompanyId,
    customer: &str,
    subscription: &StripeSubscription,
) -> Result<(), AppError> {
    client
        .execute(
            "UPDATE companies SET stripe_customer_id = $2, stripe_subscription_id = $3,
                                  stripe_subscription_item_id = $4
             WHERE id = $1",
            &[
                &company.0,
                &customer,
                &subscription.id,
                &subscription.item_id,
            ],
        )
        .await?;
    Ok(())
}

/// One line of the billing history.
#[derive(Debug, Default)]
pub struct HistoryLine<'a> {
    pub event: &'a str,
    pub from_tier: Option<Tier>,
    pub to_tier: Option<Tier>,
    pub amount: Option<rust_decimal::Decimal>,
    pub currency: Option<&'a str>,
    pub stripe_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

pub async fn record_history(
    client: &impl GenericClient,
    company: CompanyId,
    line: HistoryLine<'_>,
) -> Result<(), AppError> {
    client
        .execute(
            "INSERT INTO billing_history
                 (id, company_id, event, from_tier, to_tier, amount, currency, stripe_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &Uuid::now_v7(),
                &company.0,
                &line.event,
                &line.from_tier.map(Tier::as_str),
                &line.to_tier.map(Tier::as_str),
                &line.amount,
                &line.currency,
                &line.stripe_id,
                &line.detail,
            ],
        )
        .await?;
    Ok(())
}

/// Records a change of the subscription in the company's audit log.
pub async fn audit_change(
    client: &impl GenericClient,
    naming: &TenantNaming,
    company: CompanyId,
    entry: AuditEntry,
    before: &Subscription,
    after: &Subscription,
) -> Result<(), AppError> {
    let entry = entry
        .object("company", company.0)
        .before(before)
        .after(after);
    audit::record_in(client, &naming.tenant(company).schema, entry).await
}

/// Applies what the passing of time decided: at the end of a period a scheduled downgrade
/// takes effect and, in local mode, a scheduled cancellation too, and a local period
/// renews. (With Stripe, renewals and cancellations arrive as webhooks.)
async fn settle(
    client: &impl GenericClient,
    naming: &TenantNaming,
    billing: &Billing,
    company: CompanyId,
    locked: &mut Locked,
) -> Result<(), AppError> {
    let now = Utc::now();
    let before = locked.subscription.clone();
    let s = &mut locked.subscription;
    if now < s.current_period_end || s.status == "canceled" {
        return Ok(());
    }
    let local = billing.stripe.is_none();
    if local && s.cancel_at_period_end {
        s.status = "canceled".into();
        s.cancel_at_period_end = false;
        s.pending_tier = None;
        record_history(
            client,
            company,
            HistoryLine {
                event: "canceled",
                from_tier: Some(s.tier),
                ..Default::default()
            },
        )
        .await?;
    } else if let Some(lower) = s.pending_tier.take() {
        record_history(
            client,
            company,
            HistoryLine {
                event: "downgrade_applied",
                from_tier: Some(s.tier),
                to_tier: Some(lower),
                ..Default::default()
            },
        )
        .await?;
        s.tier = lower;
    }
    if local && s.status == "active" {
        while s.current_period_end <= now {
            s.current_period_end = s
                .current_period_end
                .checked_add_months(Months::new(1))
                .ok_or_else(|| AppError::Internal("billing period out of range".into()))?;
        }
    }
    if *s != before {
        let after = s.clone();
        store(client, company, &after, None, None).await?;
        let entry = AuditEntry::system(&RequestOrigin::default(), AuditAction::SubscriptionChange);
        audit_change(client, naming, company, entry, &before, &after).await?;
    }
    Ok(())
}

/// What Stripe says of the subscription (price, status, period), onto the company's
/// subscription. A lower price within the same period is a scheduled downgrade: it waits
/// for the period's end (Stripe bills it from the next invoice).
pub fn follow_stripe(billing: &Billing, stripe: &SubscriptionState<'_>, s: &mut Subscription) {
    let new_period = stripe
        .period_end
        .is_some_and(|end| end > s.current_period_end);
    let priced = stripe
        .price
        .and_then(|price| billing.stripe.as_ref()?.tier_of_price(price));
    if let Some(tier) = priced {
        if tier < s.tier && !new_period {
            s.pending_tier = Some(tier);
        } else {
            s.tier = tier;
            s.pending_tier = None;
        }
    }
    if let Some(end) = stripe.period_end {
        s.current_period_end = end;
    }
    if let Some(cancel) = stripe.cancel_at_period_end {
        s.cancel_at_period_end = cancel;
    }
    s.status = match stripe.status {
        Some("active" | "trialing") => "active".into(),
        Some("past_due" | "unpaid") => "past_due".into(),
        Some("canceled" | "incomplete_expired") => "canceled".into(),
        _ => s.status.clone(),
    };
}

/// The company's subscription, with any change due by now applied.
pub async fn current(
    db: &Db,
    billing: &Billing,
    company: CompanyId,
) -> Result<(Subscription, Usage), AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let mut locked = lock(&tx, company).await?;
    settle(&tx, db.naming(), billing, company, &mut locked).await?;
    let usage = usage(&tx, db.naming(), company).await?;
    tx.commit().await?;
    Ok((locked.subscription, usage))
}

pub async fn usage(
    client: &impl GenericClient,
    naming: &TenantNaming,
    company: CompanyId,
) -> Result<Usage, AppError> {
    let schema = naming.tenant(company).schema;
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM users WHERE company_id = $1 AND is_active),
                        (SELECT count(*) FROM {schema}.estates),
                        (SELECT count(*) FROM {schema}.properties)",
                schema = schema.quoted()
            ),
            &[&company.0],
        )
        .await?;
    Ok(Usage {
        users: row.get(0),
        estates: row.get(1),
        properties: row.get(2),
    })
}

/// Runs one plan change: locks the company's row, settles what is due, lets `change`
/// decide the new state (calling Stripe if configured), stores it with its history line
/// and audit entry, and commits. Nothing is stored if any step fails.
async fn change<F>(
    db: &Db,
    billing: &Billing,
    principal: &Principal,
    change: F,
) -> Result<Subscription, AppError>
where
    F: AsyncFnOnce(
        &mut Locked,
        &deadpool_postgres::Transaction<'_>,
    ) -> Result<&'static str, AppError>,
{
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let company = principal.company;
    let mut locked = lock(&tx, company).await?;
    settle(&tx, db.naming(), billing, company, &mut locked).await?;
    let before = locked.subscription.clone();
    let event = change(&mut locked, &tx).await?;
    let after = locked.subscription.clone();
    store(&tx, company, &after, None, None).await?;
    record_history(
        &tx,
        company,
        HistoryLine {
            event,
            from_tier: Some(before.tier),
            to_tier: Some(after.pending_tier.unwrap_or(after.tier)),
            ..Default::default()
        },
    )
    .await?;
    let entry = principal.audit(AuditAction::SubscriptionChange);
    audit_change(&tx, db.naming(), company, entry, &before, &after).await?;
    tx.commit().await?;
    Ok(after)
}

fn tier_field_error(message: String) -> AppError {
    let mut errors = FieldErrors::default();
    errors.add("tier", message);
    AppError::Validation(errors)
}

/// Moves the company to a higher tier at once; also renews a cancelled subscription or
/// withdraws a scheduled cancellation or downgrade.
pub async fn upgrade(
    db: &Db,
    billing: &Billing,
    principal: &Principal,
    to: Tier,
) -> Result<Subscription, AppError> {
    change(db, billing, principal, async |locked, tx| {
        let s = &mut locked.subscription;
        let resuming = s.status == "canceled" || s.cancel_at_period_end;
        if to < s.tier || (to == s.tier && !resuming && s.pending_tier.is_none()) {
            return Err(tier_field_error(format!(
                "must be above the current tier ({}); use downgrade to go lower",
                s.tier.as_str()
            )));
        }
        let event = if to == s.tier { "resumed" } else { "upgrade" };
        if let Some(stripe) = &billing.stripe {
            let sub = stripe_upgrade(stripe, tx, principal, locked, to).await?;
            let s = &mut locked.subscription;
            if let Some(end) = sub
                .current_period_end
                .and_then(|t| DateTime::from_timestamp(t, 0))
            {
                s.current_period_end = end;
            }
        } else if s.status == "canceled" {
            s.current_period_end = Utc::now()
                .checked_add_months(Months::new(1))
                .ok_or_else(|| AppError::Internal("billing period out of range".into()))?;
        }
        let s = &mut locked.subscription;
        s.tier = to;
        s.status = "active".into();
        s.cancel_at_period_end = false;
        s.pending_tier = None;
        Ok(event)
    })
    .await
}

/// Creates the Stripe customer and subscription the first time; afterwards moves the
/// existing subscription to the new price, invoiced now.
async fn stripe_upgrade(
    stripe: &StripeGateway,
    tx: &deadpool_postgres::Transaction<'_>,
    principal: &Principal,
    locked: &mut Locked,
    to: Tier,
) -> Result<StripeSubscription, AppError> {
    let company = principal.company;
    let change_id = Uuid::now_v7();
    let customer = match &locked.stripe_customer {
        Some(c) => c.clone(),
        None => {
            let email: String = tx
                .query_one(
                    "SELECT email FROM users WHERE id = $1",
                    &[&principal.user_id],
                )
                .await?
                .get(0);
            stripe
                .create_customer(company.0, &locked.name, &email)
                .await?
        }
    };
    let sub = match (&locked.stripe_subscription, &locked.stripe_item) {
        (Some(id), Some(item)) if locked.subscription.status != "canceled" => {
            stripe.change_price(id, item, to, true, change_id).await?
        }
        _ => {
            stripe
                .create_subscription(company.0, &customer, to, change_id)
                .await?
        }
    };
    store_stripe_ids(tx, company, &customer, &sub).await?;
    locked.stripe_customer = Some(customer);
    Ok(sub)
}

/// Schedules a move to a lower tier for the end of the period. Refused (409, naming each
/// limit) while the company uses more than the lower tier allows.
pub async fn downgrade(
    db: &Db,
    billing: &Billing,
    principal: &Principal,
    to: Tier,
) -> Result<Subscription, AppError> {
    change(db, billing, principal, async |locked, tx| {
        let s = &locked.subscription;
        if s.status != "active" {
            return Err(AppError::Conflict(format!(
                "the subscription is {}; renew it with an upgrade first",
                s.status.replace('_', " ")
            )));
        }
        if to >= s.tier {
            return Err(tier_field_error(format!(
                "must be below the current tier ({})",
                s.tier.as_str()
            )));
        }
        let plan = billing.plans.get(to);
        let usage = usage(tx, db.naming(), principal.company).await?;
        let mut over = FieldErrors::default();
        for resource in Resource::ALL {
            if let Some(limit) = plan.limit(resource)
                && usage.of(resource) > limit
            {
                over.add(
                    resource.as_str(),
                    format!(
                        "{} in use; the {} plan allows {limit}",
                        usage.of(resource),
                        to.as_str()
                    ),
                );
            }
        }
        if !over.0.is_empty() {
            return Err(AppError::ConflictFields {
                detail: format!(
                    "the company uses more than the {} plan allows; reduce usage first",
                    to.as_str()
                ),
                fields: over,
            });
        }
        if let (Some(stripe), Some(id), Some(item)) = (
            &billing.stripe,
            &locked.stripe_subscription,
            &locked.stripe_item,
        ) {
            stripe
                .change_price(id, item, to, false, Uuid::now_v7())
                .await?;
        }
        locked.subscription.pending_tier = Some(to);
        Ok("downgrade_scheduled")
    })
    .await
}

/// Schedules the end of the subscription for the end of the period; the company then
/// becomes read-only.
pub async fn cancel(
    db: &Db,
    billing: &Billing,
    principal: &Principal,
) -> Result<Subscription, AppError> {
    change(db, billing, principal, async |locked, _tx| {
        if locked.subscription.status == "canceled" || locked.subscription.cancel_at_period_end {
            return Err(AppError::Conflict(
                "the subscription is already cancelled".into(),
            ));
        }
        if let (Some(stripe), Some(id)) = (&billing.stripe, &locked.stripe_subscription) {
            stripe.cancel_at_period_end(id, Uuid::now_v7()).await?;
        }
        locked.subscription.cancel_at_period_end = true;
        Ok("cancel_scheduled")
    })
    .await
}

#[derive(Debug, Clone)]
pub struct BillingEvent {
    pub id: Uuid,
    pub event: String,
    pub from_tier: Option<String>,
    pub to_tier: Option<String>,
    pub amount: Option<rust_decimal::Decimal>,
    pub currency: Option<String>,
    pub stripe_id: Option<String>,
    pub detail: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The company's billing history, newest first.
pub async fn history(
    db: &Db,
    company: CompanyId,
    request: PageRequest,
) -> Result<Page<BillingEvent>, AppError> {
    let conn = db.shared().await?;
    let [limit, offset] = request.limit_offset();
    let rows = conn
        .query(
            "SELECT id, event, from_tier, to_tier, amount, currency, stripe_id, detail,
                    occurred_at, count(*) OVER ()
             FROM billing_history WHERE company_id = $1
             ORDER BY occurred_at DESC, id DESC
             LIMIT $2 OFFSET $3",
            &[&company.0, &limit, &offset],
        )
        .await?;
    let count = match rows.first() {
        Some(r) => r.get(9),
        None => conn
            .query_one(
                "SELECT count(*) FROM billing_history WHERE company_id = $1",
                &[&company.0],
            )
            .await?
            .get(0),
    };
    let results = rows
        .iter()
        .map(|r| BillingEvent {
            id: r.get(0),
            event: r.get(1),
            from_tier: r.get(2),
            to_tier: r.get(3),
            amount: r.get(4),
            currency: r.get(5),
            stripe_id: r.get(6),
            detail: r.get(7),
            occurred_at: r.get(8),
        })
        .collect();
    Ok(Page {
        count,
        request,
        results,
    })
}
