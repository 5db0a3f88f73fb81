//! The rate-limit middleware: counts each request against its caller's hourly quota
//! (`crate::rate_limit`), refuses with 429 and `Retry-After` past it, and puts the quota
//! headers of SPEC §5 on every answer.
//!
//! The caller is found cheaply and without trusting anything unverified: a bearer token's
//! company after its signature checks, an API key's company after its lookup (handed on
//! to the API-key checker so the lookup is not repeated), otherwise the client address.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::ApiState;
use super::middleware::origin;
use super::problem::{Problem, into_problem, problem_response};
use crate::auth::{Principal, api_keys};
use crate::db::tenancy::CompanyId;
use crate::rate_limit::{Decision, Subject};

/// An API key the middleware already verified; the API-key checker takes it from here.
#[derive(Clone)]
pub struct VerifiedApiKey(pub Principal);

/// Paths outside the quotas: probes, documentation, and Stripe's webhook (verified by
/// signature, and Stripe's retries must never be refused).
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics" | "/openapi.json")
        || path.starts_with("/docs")
        || path == "/api/v1/payments/webhook"
}

async fn subject(state: &ApiState, req: &mut Request) -> Subject {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer
        && let Ok(claims) = state.jwt.verify(token.trim())
    {
        return Subject::Company(CompanyId(claims.tid));
    }
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(key) = api_key
        && let Ok(principal) = api_keys::authenticate(&state.db, &key, origin(req)).await
    {
        let company = principal.company;
        req.extensions_mut().insert(VerifiedApiKey(principal));
        return Subject::Company(company);
    }
    Subject::Address(
        req.remote_addr()
            .as_socket_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    )
}

fn set(response: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, v);
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF draft) and the `X-RateLimit-*` trio.
pub fn quota_headers(response: &mut Response, d: &Decision) {
    set(
        response,
        "ratelimit-policy",
        format!("\"{}\";q={};w=3600", d.policy, d.limit),
    );
    set(
        response,
        "ratelimit",
        format!("\"{}\";r={};t={}", d.policy, d.remaining(), d.reset_secs),
    );
    set(response, "x-ratelimit-limit", d.limit.to_string());
    set(response, "x-ratelimit-remaining", d.remaining().to_string());
    set(response, "x-ratelimit-reset", d.reset_secs.to_string());
}

pub async fn rate_limit<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let state = req.data::<Arc<ApiState>>().cloned();
    let limiter = state.as_ref().map(|s| &s.rate_limiter);
    let decision = match (&state, limiter) {
        (Some(state), Some(limiter)) if limiter.enabled() && !exempt(req.uri().path()) => {
            let subject = subject(state, &mut req).await;
            match limiter.check(subject).await {
                Ok(d) => Some(d),
                // Not knowing the caller's tier (the database is down) must not refuse
                // the request; the request itself will meet the database soon enough.
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit not checked");
                    None
                }
            }
        }
        _ => None,
    };
    let Some(decision) = decision else {
        return Ok(respond(ep.call(req).await).await);
    };
    if let Some(wait) = decision.retry_after {
        let mut refused = problem_response(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the {} quota of {} requests an hour is used up, or requests came too fast; \
                 retry after {wait} s",
                decision.policy, decision.limit
            ),
        ));
        set(&mut refused, "retry-after", wait.to_string());
        quota_headers(&mut refused, &decision);
        return Ok(refused);
    }
    let mut response = respond(ep.call(req).await).await;
    quota_headers(&mut response, &decision);
    Ok(response)
}

/// The endpoint's answer as a response, errors as problem+json.
async fn respond<R: IntoResponse>(result: poem::Result<R>) -> Response {
    match result {
        Ok(r) => r.into_response(),
        Err(e) => into_problem(e).await,
    }
}
