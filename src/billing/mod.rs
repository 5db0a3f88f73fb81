//! Subscriptions and what they allow (SPEC §5): plans as data, resource limits checked in
//! the creating transaction, plan changes (locally, or through Stripe when configured),
//! Stripe webhooks, and the billing-sync job's effect.

pub mod limits;
pub mod payments;
pub mod plans;
pub mod stripe;
pub mod subscriptions;
pub mod sync;
pub mod webhook;
