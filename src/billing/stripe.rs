//! The calls Estate makes to Stripe, through async-stripe: its request types build the
//! parameters, its client sends them (auth, API version, idempotency keys, base URL).
//! Answers are read into the few fields we use, so that Stripe adding or renaming an
//! unrelated field never breaks billing.

use std::collections::HashMap;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::subscription::{
    CreateSubscription, CreateSubscriptionItems, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::CreatePaymentIntent;

use super::plans::Tier;
use crate::config::StripeConfig;
use crate::error::AppError;

/// A Stripe object's id.
#[derive(Debug, miniserde::Deserialize)]
struct Created {
    id: String,
}

/// The fields of a subscription we keep.
#[derive(Debug, miniserde::Deserialize)]
struct SubscriptionFields {
    id: String,
    status: String,
    cancel_at_period_end: Option<bool>,
    items: ItemList,
}

#[derive(Debug, miniserde::Deserialize)]
struct ItemList {
    data: Vec<ItemFields>,
}

#[derive(Debug, miniserde::Deserialize)]
struct ItemFields {
    id: String,
    current_period_end: Option<i64>,
    price: Option<Created>,
}

#[derive(Debug, miniserde::Deserialize)]
struct PaymentIntentFields {
    id: String,
    client_secret: Option<String>,
    status: String,
}

/// A subscription as Stripe holds it after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSubscription {
    pub id: String,
    pub item_id: String,
    pub status: String,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    pub price: Option<String>,
    pub cancel_at_period_end: bool,
}

impl TryFrom<SubscriptionFields> for StripeSubscription {
    type Error = AppError;
    fn try_from(s: SubscriptionFields) -> Result<Self, AppError> {
        let item = s
            .items
            .data
            .into_iter()
            .next()
            .ok_or_else(|| AppError::Upstream("a Stripe subscription without items".into()))?;
        Ok(StripeSubscription {
            id: s.id,
            item_id: item.id,
            status: s.status,
            current_period_end: item.current_period_end,
            price: item.price.map(|p| p.id),
            cancel_at_period_end: s.cancel_at_period_end.unwrap_or(false),
        })
    }
}

impl StripeSubscription {
    pub fn state(&self) -> SubscriptionState<'_> {
        SubscriptionState {
            price: self.price.as_deref(),
            status: Some(&self.status),
            period_end: self
                .current_period_end
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            cancel_at_period_end: Some(self.cancel_at_period_end),
        }
    }
}

/// What Stripe says of a subscription, as far as the company's row follows it; read from a
/// webhook's object or from the billing sync's answer. `None` is "not said".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    pub price: Option<&'a str>,
    pub status: Option<&'a str>,
    pub period_end: Option<chrono::DateTime<chrono::Utc>>,
    pub cancel_at_period_end: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    pub id: String,
    pub client_secret: Option<String>,
    pub status: String,
}

/// Stripe, configured: a client and the price of each tier.
#[derive(Clone)]
pub struct StripeGateway {
    client: Client,
    prices: [String; 3],
    pub currency: String,
}

fn upstream(e: stripe::StripeError) -> AppError {
    AppError::Upstream(format!("Stripe: {e}"))
}

fn key(value: String) -> Result<RequestStrategy, AppError> {
    IdempotencyKey::new(value)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| AppError::Internal(format!("idempotency key: {e}")))
}

impl StripeGateway {
    pub fn new(config: &StripeConfig) -> Result<Self, AppError> {
        let mut builder = ClientBuilder::new(config.secret_key.expose())
            .timeout(Duration::from_secs(15))
            .app_info("estate-api", Some(env!("CARGO_PKG_VERSION").into()), None);
        if let Some(base) = &config.api_base {
            builder = builder.url(base.clone());
        }
        Ok(StripeGateway {
            client: builder.build().map_err(upstream)?,
            prices: config.prices.clone(),
            currency: config.currency.clone(),
        })
    }

    pub fn price(&self, tier: Tier) -> &str {
        &self.prices[tier as usize]
    }

    /// The tier a price id bills, if it is one of ours.
    pub fn tier_of_price(&self, price: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| self.price(*t) == price)
    }

    fn metadata(company: uuid::Uuid) -> HashMap<String, String> {
        HashMap::from([("company_id".to_string(), company.to_string())])
    }

    /// Creates the company's customer. The idempotency key makes a retry after a lost
    /// answer return the same customer instead of a second one.
    pub async fn create_customer(
        &self,
        company: uuid::Uuid,
        name: &str,
        email: &str,
    ) -> Result<String, AppError> {
        let created: Created = CreateCustomer::new()
            .name(name)
            .email(email)
            .metadata(Self::metadata(company))
            .build()
            .customize()
            .request_strategy(key(format!("customer-{company}"))?)
            .send(&self.client)
            .await
            .map_err(upstream)?;
        Ok(created.id)
    }

    pub async fn create_subscription(
        &self,
        company: uuid::Uuid,
        customer: &str,
        tier: Tier,
        change: uuid::Uuid,
    ) -> Result<StripeSubscription, AppError> {
        let mut item = CreateSubscriptionItems::new();
        item.price = Some(self.price(tier).to_string());
        let fields: SubscriptionFields = CreateSubscription::new()
            .customer(customer)
            .items(vec![item])
            .metadata(Self::metadata(company))
            .build()
            .customize()
            .request_strategy(key(format!("subscribe-{change}"))?)
            .send(&self.client)
            .await
            .map_err(upstream)?;
        fields.try_into()
    }

    /// Moves the subscription to `tier`'s price. An upgrade is invoiced now (prorated);
    /// a downgrade is not prorated, so the lower price starts with the next period.
    pub async fn change_price(
        &self,
        subscription: &str,
        item: &str,
        tier: Tier,
        immediately: bool,
        change: uuid::Uuid,
    ) -> Result<StripeSubscription, AppError> {
        let mut update = UpdateSubscriptionItems::new();
        update.id = Some(item.to_string());
        update.price = Some(self.price(tier).to_string());
        let proration = if immediately {
            UpdateSubscriptionProrationBehavior::AlwaysInvoice
        } else {
            UpdateSubscriptionProrationBehavior::None
        };
        let fields: SubscriptionFields = UpdateSubscription::new(subscription)
            .items(vec![update])
            .proration_behavior(proration)
            .cancel_at_period_end(false)
            .build()
            .customize()
            .request_strategy(key(format!("change-{change}"))?)
            .send(&self.client)
            .await
            .map_err(upstream)?;
        fields.try_into()
    }

    pub async fn cancel_at_period_end(
        &self,
        subscription: &str,
        change: uuid::Uuid,
    ) -> Result<StripeSubscription, AppError> {
        let fields: SubscriptionFields = UpdateSubscription::new(subscription)
            .cancel_at_period_end(true)
            .build()
            .customize()
            .request_strategy(key(format!("cancel-{change}"))?)
            .send(&self.client)
            .await
            .map_err(upstream)?;
        fields.try_into()
    }

    /// The subscription as Stripe holds it now (the billing sync).
    pub async fn subscription(&self, subscription: &str) -> Result<StripeSubscription, AppError> {
        let fields: SubscriptionFields = RetrieveSubscription::new(subscription)
            .build()
            .customize()
            .send(&self.client)
            .await
            .map_err(upstream)?;
        fields.try_into()
    }

    /// A PaymentIntent for an installment; the webhook records the payment once Stripe
    /// says it succeeded. `amount` is in the currency's minor unit.
    pub async fn create_payment_intent(
        &self,
        company: uuid::Uuid,
        allocation: uuid::Uuid,
        started_by: uuid::Uuid,
        amount: i64,
        idempotency: String,
    ) -> Result<PaymentIntent, AppError> {
        let currency = self
            .currency
            .parse::<stripe_types::Currency>()
            .map_err(|_| AppError::Internal("STRIPE_CURRENCY is not a Stripe currency".into()))?;
        let mut metadata = Self::metadata(company);
        metadata.insert("allocation_id".into(), allocation.to_string());
        metadata.insert("user_id".into(), started_by.to_string());
        let fields: PaymentIntentFields = CreatePaymentIntent::new(amount, currency)
            .metadata(metadata)
            .build()
            .customize()
            .request_strategy(key(idempotency)?)
            .send(&self.client)
            .await
            .map_err(upstream)?;
        Ok(PaymentIntent {
            id: fields.id,
            client_secret: fields.client_secret,
            status: fields.status,
        })
    }
}
