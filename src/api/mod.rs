//! The HTTP layer: parse requests, call the domain, map errors. Every endpoint goes through
//! poem-openapi so the OpenAPI document is generated from the code.

pub mod allocations;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod clients;
pub mod companies;
pub mod estates;
pub mod health;
pub mod idempotency;
pub mod json_body;
pub mod listing;
pub mod middleware;
pub mod oauth;
pub mod payments;
pub mod problem;
pub mod properties;
pub mod rate_limit;
pub mod security;
pub mod subscriptions;
pub mod transactions;
pub mod types;
pub mod users;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::auth::jwt::JwtKeys;
use crate::billing::subscriptions::Billing;
use crate::db::Db;

/// Largest request body accepted; bigger ones answer 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What handlers share.
pub struct ApiState {
    pub db: Db,
    pub jwt: JwtKeys,
    pub redis: redis::Client,
    pub billing: Billing,
    pub rate_limiter: crate::rate_limit::RateLimiter,
    pub metrics: crate::metrics::Metrics,
    /// Webhook signing secrets (two during a rotation).
    pub stripe_webhook_secrets: Vec<crate::config::Secret>,
    pub verdicts: Arc<crate::auth::verdict::VerdictCache>,
}

#[derive(Tags)]
pub enum ApiTags {
    /// Process and dependency health
    Health,
    /// Registration, login and tokens
    Auth,
    /// The caller's company
    Companies,
    /// Users of the caller's company and their roles
    Users,
    /// API keys for machine clients
    ApiKeys,
    /// OAuth 2 client credentials for machine clients
    OAuth,
    /// Estates of the caller's company
    Estates,
    /// Properties (plots) in the estates
    Properties,
    /// Clients (buyers)
    Clients,
    /// Allocations of properties to clients, and payments
    Allocations,
    /// Payments across allocations: list, statistics, export
    Transactions,
    /// The company's audit log
    Audit,
    /// The company's plan, its changes and billing history
    Subscriptions,
    /// Card payments through Stripe, and Stripe's webhook
    Payments,
}

pub type Apis = (
    health::HealthApi,
    auth::AuthApi,
    companies::CompaniesApi,
    users::UsersApi,
    api_keys::ApiKeysApi,
    oauth::OAuthApi,
    estates::EstatesApi,
    properties::PropertiesApi,
    clients::ClientsApi,
    allocations::AllocationsApi,
    transactions::TransactionsApi,
    audit::AuditApi,
    subscriptions::SubscriptionsApi,
    payments::PaymentsApi,
);

pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            auth::AuthApi,
            companies::CompaniesApi,
            users::UsersApi,
            api_keys::ApiKeysApi,
            oauth::OAuthApi,
            estates::EstatesApi,
            properties::PropertiesApi,
            clients::ClientsApi,
            allocations::AllocationsApi,
            transactions::TransactionsApi,
            audit::AuditApi,
            subscriptions::SubscriptionsApi,
            payments::PaymentsApi,
        ),
        "Estate API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant API for real-estate companies. Each company's data lives in its own \
         PostgreSQL schema; the tenant of a request comes only from its credential. Errors \
         are application/problem+json (RFC 9457).",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and printed by `estate openapi`.
pub fn openapi_json() -> String {
    openapi_service().spec()
}

/// Every route template the server answers, for the metrics' route labels.
pub fn route_templates() -> Vec<String> {
    let spec: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap_or_default();
    let mut routes: Vec<String> = spec["paths"]
        .as_object()
        .map(|paths| paths.keys().cloned().collect())
        .unwrap_or_default();
    routes.extend(["/openapi.json", "/metrics"].map(String::from));
    routes
}

/// `GET /metrics`: Prometheus text format. Unauthenticated, like `/health`: expose it to
/// the scraper only (a load balancer rule or a private port).
#[poem::handler]
async fn metrics(state: poem::web::Data<&Arc<ApiState>>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.db).await)
}

pub fn routes(state: Arc<ApiState>) -> impl Endpoint {
    let api = openapi_service();
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let app = Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/metrics", poem::get(metrics))
        .around(rate_limit::rate_limit)
        .around(middleware::observe)
        .data(state)
        .catch_all_error(problem::into_problem);
    middleware::outermost(app)
}
