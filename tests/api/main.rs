//! One integration-test binary (the app links once), against real PostgreSQL and Redis.

mod helpers;

mod api_keys;
mod audit;
mod auth;
mod billing_sync;
mod cli;
mod errors;
mod estates;
mod fake_stripe;
mod idempotency;
mod isolation;
mod jobs;
mod lanes;
mod metrics;
mod migrations;
mod oauth;
mod openapi;
mod outbox;
mod permissions;
mod provisioning;
mod rate_limits;
mod sales;
mod sentry;
mod stripe;
mod tiers;
mod transactions;
mod users;
mod verdict_cache;
