//! Card payments of allocation installments through Stripe: `POST /payments/process`
//! creates a PaymentIntent; the payment is recorded on the allocation only when Stripe's
//! `payment_intent.succeeded` webhook arrives (`billing::webhook`), once.

use rust_decimal::prelude::ToPrimitive;
use uuid::Uuid;

use super::stripe::{PaymentIntent, StripeGateway};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::domain::allocations::{self, AllocationStatus};
use crate::domain::values::Money;
use crate::error::{AppError, FieldErrors};

#[derive(Debug, Clone)]
pub struct NewCardPayment {
    pub allocation_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone)]
pub struct StartedPayment {
    pub intent: PaymentIntent,
    pub allocation_id: Uuid,
    pub amount: Money,
    pub currency: String,
}

/// Minor units (cents) of a two-place amount.
pub fn minor_units(amount: Money) -> Result<i64, AppError> {
    (amount.decimal() * rust_decimal::Decimal::ONE_HUNDRED)
        .to_i64()
        .ok_or_else(|| AppError::Internal("amount out of range".into()))
}

/// Checks the allocation takes this payment (it exists, the caller may change it, it is
/// active, the amount is within its balance), then asks Stripe for a PaymentIntent. The
/// tenant transaction only reads, and is closed before Stripe is called.
pub async fn start(
    stripe: Option<&StripeGateway>,
    mut tx: TenantTx,
    principal: &Principal,
    new: NewCardPayment,
    idempotency_key: Option<&str>,
) -> Result<StartedPayment, AppError> {
    let Some(stripe) = stripe else {
        return Err(AppError::NotConfigured(
            "card payments need Stripe, which this server is not configured for \
             (STRIPE_SECRET_KEY); record other payments with record_payment"
                .into(),
        ));
    };
    let allocation = match allocations::get(&mut tx, new.allocation_id).await {
        Err(AppError::NotFound(_)) => return Err(field("allocation_id", "no such allocation")),
        other => other?,
    };
    crate::domain::may_change(principal, allocation.created_by, "allocations")?;
    if allocation.status != AllocationStatus::Active {
        return Err(AppError::Conflict(format!(
            "the allocation is {}; it takes no payments",
            allocation.status.as_str()
        )));
    }
    if new.amount.decimal() > allocation.balance.decimal() {
        return Err(field(
            "amount",
            &format!("must not exceed the balance of {}", allocation.balance),
        ));
    }
    tx.commit().await?;
    // A retried request (same Idempotency-Key) gets the same PaymentIntent from Stripe.
    let key = match idempotency_key {
        Some(k) => format!("pi-{}-{k}", principal.company.0),
        None => format!("pi-{}", Uuid::now_v7()),
    };
    let intent = stripe
        .create_payment_intent(
            principal.company.0,
            allocation.id,
            principal.user_id,
            minor_units(new.amount)?,
            key,
        )
        .await?;
    Ok(StartedPayment {
        intent,
        allocation_id: allocation.id,
        amount: new.amount,
        currency: stripe.currency.clone(),
    })
}

fn field(name: &str, message: &str) -> AppError {
    let mut errors = FieldErrors::default();
    errors.add(name, message);
    AppError::Validation(errors)
}
