//! `/payments`: card payments of installments through Stripe, and Stripe's webhook.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Header;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::billing::payments::{self, NewCardPayment};
use crate::billing::webhook;
use crate::domain::values::Money;
use crate::error::FieldErrors;

pub struct PaymentsApi;

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ProcessPayment {
    pub allocation_id: Uuid,
    /// Decimal string with two places, at most the allocation's balance.
    pub amount: String,
}

#[derive(Object)]
pub struct PaymentIntentBody {
    /// The Stripe PaymentIntent; confirm it with `client_secret` from the front-end.
    pub payment_intent_id: String,
    pub client_secret: Option<String>,
    /// Stripe's status of the PaymentIntent, e.g. `requires_payment_method`.
    pub status: String,
    pub allocation_id: Uuid,
    pub amount: String,
    pub currency: String,
}

#[derive(ApiResponse)]
pub enum ProcessResponse {
    /// The PaymentIntent was created. The payment is recorded on the allocation when
    /// Stripe reports it succeeded (webhook `payment_intent.succeeded`).
    #[oai(status = 201)]
    Created(Json<PaymentIntentBody>),
}

#[derive(Object)]
pub struct WebhookAck {
    pub received: bool,
    /// `applied`, `replayed` (seen before: nothing changed), `stale` (older than the
    /// state already applied: nothing changed) or `ignored` (not an event we act on).
    pub outcome: String,
}

fn idempotency_key(raw: Option<&str>) -> Result<Option<&str>, ErrorResponse> {
    match raw {
        Some(k) if k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()) => {
            let mut errors = FieldErrors::default();
            errors.add(
                "Idempotency-Key",
                "must be 1 to 200 printable ASCII characters",
            );
            Err(crate::error::AppError::Validation(errors).into())
        }
        other => Ok(other),
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Payments")]
impl PaymentsApi {
    /// Start a card payment of an allocation installment through Stripe. A retry with the
    /// same `Idempotency-Key` returns the same PaymentIntent. 503 when the server has no
    /// Stripe configuration.
    #[oai(path = "/payments/process", method = "post")]
    async fn process(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<ProcessPayment>,
        #[oai(name = "Idempotency-Key")] idempotency: Header<Option<String>>,
    ) -> Result<ProcessResponse, ErrorResponse> {
        let key = idempotency_key(idempotency.0.as_deref())?;
        let mut errors = FieldErrors::default();
        let amount = errors.check("amount", Money::parse_positive(&body.0.amount));
        let new = errors.finish(|| {
            Some(NewCardPayment {
                allocation_id: body.0.allocation_id,
                amount: amount?,
            })
        })?;
        let tx = auth.tenant_tx(&state, Operation::PaymentsProcess).await?;
        let started = payments::start(
            state.billing.stripe.as_ref(),
            tx,
            auth.principal(),
            new,
            key,
        )
        .await?;
        Ok(ProcessResponse::Created(Json(PaymentIntentBody {
            payment_intent_id: started.intent.id,
            client_secret: started.intent.client_secret,
            status: started.intent.status,
            allocation_id: started.allocation_id,
            amount: started.amount.to_string(),
            currency: started.currency,
        })))
    }

    /// Stripe's webhook: the raw event JSON, verified by its `Stripe-Signature` (300 s
    /// tolerance; any configured secret, so two work during a rotation). No other
    /// authentication. Handles `customer.subscription.created/updated/deleted`,
    /// `invoice.paid`, `invoice.payment_failed` and `payment_intent.succeeded`; every other
    /// type is acknowledged and ignored. Each event takes effect once.
    #[oai(path = "/payments/webhook", method = "post")]
    async fn webhook(
        &self,
        state: Data<&Arc<ApiState>>,
        #[oai(name = "Stripe-Signature")] signature: Header<Option<String>>,
        body: Binary<Vec<u8>>,
    ) -> Result<Json<WebhookAck>, ErrorResponse> {
        webhook::verify_signature(
            &state.stripe_webhook_secrets,
            signature.0.as_deref(),
            &body.0,
            chrono::Utc::now().timestamp(),
        )?;
        let outcome = webhook::handle(&state.db, &state.billing, &body.0).await?;
        tracing::info!(outcome = outcome.as_str(), "Stripe webhook");
        Ok(Json(WebhookAck {
            received: true,
            outcome: outcome.as_str().into(),
        }))
    }
}
