//! Per-request context: a request id (taken from `X-Request-Id` or made), a tracing span
//! that the auth checker fills with tenant and user, one log line per request, and the
//! security headers of SPEC §7.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode, header};
use poem::middleware::CatchPanic;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response};
use sentry::SentryFutureExt;
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use super::MAX_BODY_BYTES;
use super::problem::{Problem, problem_response};
use crate::auth::RequestOrigin;

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id, in the request's extensions for handlers and the audit log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest user agent kept in the audit log.
const MAX_USER_AGENT: usize = 500;

/// Where a request came from: its id, the client address, its user agent.
pub fn origin(req: &Request) -> RequestOrigin {
    RequestOrigin {
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        ip: req.remote_addr().as_socket_addr().map(|a| a.ip()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
    }
}

fn accepted_request_id(req: &Request) -> Option<String> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| value.to_string())
}

/// Answers 413 to a body declared too large, and caps an undeclared (chunked) one so that
/// reading past the limit fails as a malformed body instead of exhausting memory.
fn limit_body(req: &mut Request) -> Option<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => Some(problem_response(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        ))),
        Some(_) => None,
        None => {
            let body = req
                .take_body()
                .into_async_read()
                .take(MAX_BODY_BYTES as u64);
            req.set_body(Body::from_async_read(body));
            None
        }
    }
}

/// The layers every answer passes through, outermost first: the request context (id,
/// span, Sentry hub, security headers), then a panic caught and answered as a 500
/// problem (Sentry's panic hook has reported it by then, on the request's hub, with its
/// tags) instead of a dropped connection.
pub fn outermost<E: Endpoint + 'static>(app: E) -> impl Endpoint {
    app.with(CatchPanic::new().with_handler(|_| {
        problem_response(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an unexpected error occurred",
        ))
    }))
    .around(request_context)
}

pub async fn request_context<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    // From the thread-local generator: no system call per request, unlike `new_v4`.
    let request_id = accepted_request_id(&req).unwrap_or_else(|| {
        uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string()
    });
    let path = req.uri().path().to_string();
    let tls = req
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %path,
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let started = Instant::now();
    let hub = crate::telemetry::work_hub();
    if let Some(hub) = &hub {
        hub.configure_scope(|scope| {
            scope.set_tag("request_id", &request_id);
            scope.set_tag("route", crate::metrics::route_of(&path));
        });
    }
    let mut response = match limit_body(&mut req) {
        Some(refused) => refused,
        None => {
            let call = ep.call(req).instrument(span.clone());
            let result = match hub {
                Some(hub) => call.bind_hub(hub).await,
                None => call.await,
            };
            match result {
                Ok(output) => output.into_response(),
                Err(err) => err.into_response(),
            }
        }
    };
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "request finished"
        )
    });

    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, id);
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Swagger UI runs scripts and styles of its own; everything else is plain JSON.
    if !path.starts_with("/docs") {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    if tls {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    Ok(response)
}

/// Counts each request and its latency by route, method and status for `/metrics`.
pub async fn observe<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    let state = req.data::<Arc<super::ApiState>>().cloned();
    let writes = !req.method().is_safe();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => super::problem::into_problem(e).await,
    };
    if writes && let Some(state) = &state {
        // Whatever this request changed (a logout, a revocation, a plan), the next
        // request checks its credential afresh.
        state.verdicts.invalidate();
    }
    if let Some(state) = state
        && path != "/metrics"
    {
        state.metrics.observe_request(
            &method,
            &path,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}
