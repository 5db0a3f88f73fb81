//! `/subscriptions`: the company's plan, its changes, and its billing history (SPEC §5).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::json_body::{JsonBody, rfc3339};
use super::listing::links;
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::billing::plans::{Plan, Tier};
use crate::billing::subscriptions::{self, BillingEvent, Subscription, Usage};
use crate::domain::listing::PageRequest;
use crate::error::{AppError, FieldErrors};

pub struct SubscriptionsApi;

/// What a tier allows. A missing ceiling means unlimited.
#[derive(Object)]
pub struct PlanBody {
    pub tier: String,
    pub requests_per_hour: u32,
    pub max_users: Option<i64>,
    pub max_estates: Option<i64>,
    pub max_properties: Option<i64>,
    pub audit_retention_days: i32,
    pub features: Vec<String>,
}

impl From<&Plan> for PlanBody {
    fn from(p: &Plan) -> Self {
        PlanBody {
            tier: p.tier.as_str().into(),
            requests_per_hour: p.requests_per_hour,
            max_users: p.max_users,
            max_estates: p.max_estates,
            max_properties: p.max_properties,
            audit_retention_days: p.audit_retention_days,
            features: p.features.clone(),
        }
    }
}

#[derive(Object)]
pub struct UsageBody {
    /// Active users.
    pub users: i64,
    pub estates: i64,
    pub properties: i64,
}

#[derive(Object)]
#[oai(rename = "Subscription")]
pub struct SubscriptionBody {
    /// `starter`, `professional` or `enterprise`.
    pub tier: String,
    /// `active`, `past_due` (read-only until the invoice is paid) or `canceled`
    /// (read-only).
    pub status: String,
    pub current_period_end: DateTime<Utc>,
    /// The subscription ends at `current_period_end`.
    pub cancel_at_period_end: bool,
    /// The tier a scheduled downgrade moves to at `current_period_end`.
    pub pending_tier: Option<String>,
    /// `stripe`, or `local` when the server has no Stripe configuration.
    pub billing_mode: String,
    pub plan: PlanBody,
    /// Present on `current`.
    pub usage: Option<UsageBody>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ChangeTier {
    /// `starter`, `professional` or `enterprise`.
    pub tier: String,
}

#[derive(Object, serde::Serialize)]
#[oai(rename = "BillingEvent")]
pub struct BillingEventBody {
    pub id: Uuid,
    /// `upgrade`, `resumed`, `downgrade_scheduled`, `downgrade_applied`,
    /// `cancel_scheduled`, `canceled`, `invoice_paid`, `payment_failed`,
    /// `subscription_updated`.
    pub event: String,
    pub from_tier: Option<String>,
    pub to_tier: Option<String>,
    /// Decimal string with two places, for invoices.
    pub amount: Option<String>,
    pub currency: Option<String>,
    /// The Stripe object this line is about.
    pub stripe_id: Option<String>,
    pub detail: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
}

impl From<BillingEvent> for BillingEventBody {
    fn from(e: BillingEvent) -> Self {
        BillingEventBody {
            id: e.id,
            event: e.event,
            from_tier: e.from_tier,
            to_tier: e.to_tier,
            amount: e.amount.map(|a| format!("{:.2}", a)),
            currency: e.currency,
            stripe_id: e.stripe_id,
            detail: e.detail,
            occurred_at: e.occurred_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct BillingEventPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<BillingEventBody>,
}

/// Parses a requested tier, answering 422 naming the field.
pub fn parse_tier(raw: &str) -> Result<Tier, AppError> {
    Tier::parse(raw).ok_or_else(|| {
        let mut errors = FieldErrors::default();
        errors.add("tier", "must be starter, professional or enterprise");
        AppError::Validation(errors)
    })
}

/// The answer for a subscription, with the plan it is on.
pub fn subscription_body(
    state: &ApiState,
    s: Subscription,
    usage: Option<Usage>,
) -> SubscriptionBody {
    SubscriptionBody {
        tier: s.tier.as_str().into(),
        status: s.status,
        current_period_end: s.current_period_end,
        cancel_at_period_end: s.cancel_at_period_end,
        pending_tier: s.pending_tier.map(|t| t.as_str().into()),
        billing_mode: if state.billing.stripe.is_some() {
            "stripe"
        } else {
            "local"
        }
        .into(),
        plan: state.billing.plans.get(s.tier).into(),
        usage: usage.map(|u| UsageBody {
            users: u.users,
            estates: u.estates,
            properties: u.properties,
        }),
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Subscriptions")]
impl SubscriptionsApi {
    /// The company's subscription, its plan and its usage of the plan's limits.
    #[oai(path = "/subscriptions/current", method = "get")]
    async fn current(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<SubscriptionBody>, ErrorResponse> {
        let principal = auth
            .verified(&state, Operation::SubscriptionsCurrent)
            .await?;
        let (s, usage) =
            subscriptions::current(&state.db, &state.billing, principal.company).await?;
        Ok(Json(subscription_body(&state, s, Some(usage))))
    }

    /// Move to a higher tier, at once (owner only). Also renews a cancelled subscription
    /// or withdraws a scheduled cancellation or downgrade.
    #[oai(path = "/subscriptions/upgrade", method = "post")]
    async fn upgrade(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<ChangeTier>,
    ) -> Result<Json<SubscriptionBody>, ErrorResponse> {
        let tier = parse_tier(&body.0.tier)?;
        let principal = auth
            .verified(&state, Operation::SubscriptionsUpgrade)
            .await?;
        let s = subscriptions::upgrade(&state.db, &state.billing, principal, tier).await?;
        state.rate_limiter.forget(principal.company);
        Ok(Json(subscription_body(&state, s, None)))
    }

    /// Move to a lower tier at the end of the current period (owner only). 409 naming each
    /// limit the company's current usage exceeds on the lower tier.
    #[oai(path = "/subscriptions/downgrade", method = "post")]
    async fn downgrade(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<ChangeTier>,
    ) -> Result<Json<SubscriptionBody>, ErrorResponse> {
        let tier = parse_tier(&body.0.tier)?;
        let principal = auth
            .verified(&state, Operation::SubscriptionsDowngrade)
            .await?;
        let s = subscriptions::downgrade(&state.db, &state.billing, principal, tier).await?;
        state.rate_limiter.forget(principal.company);
        Ok(Json(subscription_body(&state, s, None)))
    }

    /// End the subscription at the end of the current period (owner only); the company's
    /// data then becomes read-only.
    #[oai(path = "/subscriptions/cancel", method = "post")]
    async fn cancel(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<SubscriptionBody>, ErrorResponse> {
        let principal = auth
            .verified(&state, Operation::SubscriptionsCancel)
            .await?;
        let s = subscriptions::cancel(&state.db, &state.billing, principal).await?;
        state.rate_limiter.forget(principal.company);
        Ok(Json(subscription_body(&state, s, None)))
    }

    /// Plan changes, invoices and failed payments, newest first.
    #[oai(path = "/subscriptions/billing_history", method = "get")]
    async fn billing_history(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        page: Query<Option<i64>>,
        page_size: Query<Option<i64>>,
    ) -> Result<JsonBody<BillingEventPage>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let page = errors.check("page", PageRequest::parse_page(page.0));
        let page_size = errors.check("page_size", PageRequest::parse_page_size(page_size.0));
        let request = errors.finish(|| {
            Some(PageRequest {
                page: page?,
                page_size: page_size?,
            })
        })?;
        let principal = auth
            .verified(&state, Operation::SubscriptionsBillingHistory)
            .await?;
        let page = subscriptions::history(&state.db, principal.company, request).await?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(BillingEventPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }
}
