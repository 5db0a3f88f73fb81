//! Every error answer is `application/problem+json` (RFC 9457). [`ErrorResponse`] is the one
//! place service errors become HTTP; [`into_problem`] converts poem's own errors (malformed
//! JSON, wrong types, unknown routes, missing credentials, oversized bodies) the same way.

use std::collections::BTreeMap;

use poem::Response;
use poem::http::StatusCode;
use poem::http::header::CONTENT_TYPE;

use crate::db::DbError;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::error::AppError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem.
#[derive(Object, Debug, Clone, PartialEq)]
#[oai(example)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For validation problems: field name → messages; for a refused downgrade: each
    /// limit the current usage exceeds.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
    /// For `/problems/feature-not-in-plan`: the feature the plan lacks.
    #[oai(skip_serializing_if_is_none)]
    pub feature: Option<String>,
    /// For `/problems/plan-limit-reached`: the resource whose ceiling was reached.
    #[oai(skip_serializing_if_is_none)]
    pub limit: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        let slug = title.to_lowercase().replace(' ', "-");
        Problem {
            problem_type: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            feature: None,
            limit: None,
        }
    }

    fn of_type(mut self, problem_type: &str) -> Self {
        self.problem_type = format!("/problems/{problem_type}");
        self
    }
}

/// The documented error answers of every endpoint.
#[derive(ApiResponse, Debug)]
pub enum ErrorResponse {
    /// The request is malformed: unparseable JSON, wrong types, bad query parameters.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, invalid, expired or revoked credentials.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The subscription is unpaid or cancelled: the company's data is read-only.
    #[oai(status = 402, content_type = "application/problem+json")]
    PaymentRequired(Json<Problem>),
    /// The caller may not do this: role, suspended company, a feature the plan lacks
    /// (`feature`), or a plan limit reached (`limit`).
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such object in the caller's company (another company's ids answer the same).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request conflicts with the current state, e.g. an e-mail already registered.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// Fields that parse but are not acceptable; `errors` lists them.
    #[oai(status = 422, content_type = "application/problem+json")]
    UnprocessableEntity(Json<Problem>),
    /// Too many attempts; retry after the given number of seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// An unexpected failure; details are in the server log, not in the answer.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The payment provider failed; nothing was changed.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// A dependency (the database) is unavailable, or the server is not configured for
    /// this (card payments without Stripe).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl From<AppError> for ErrorResponse {
    fn from(e: AppError) -> Self {
        let p = |status, detail: String| Json(Problem::new(status, detail));
        match e {
            AppError::NotFound(_) => {
                ErrorResponse::NotFound(p(StatusCode::NOT_FOUND, e.to_string()))
            }
            AppError::Validation(fields) => {
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the request has invalid fields",
                );
                problem.problem_type = "/problems/validation-error".into();
                problem.errors = Some(fields.0);
                ErrorResponse::UnprocessableEntity(Json(problem))
            }
            AppError::Conflict(detail) => ErrorResponse::Conflict(p(StatusCode::CONFLICT, detail)),
            AppError::Unauthorized(detail) => {
                ErrorResponse::Unauthorized(p(StatusCode::UNAUTHORIZED, detail.to_string()))
            }
            AppError::Forbidden(detail) => {
                ErrorResponse::Forbidden(p(StatusCode::FORBIDDEN, detail))
            }
            AppError::FeatureNotInPlan { ref feature, .. } => {
                let mut problem = Problem::new(StatusCode::FORBIDDEN, e.to_string())
                    .of_type("feature-not-in-plan");
                problem.feature = Some(feature.clone());
                ErrorResponse::Forbidden(Json(problem))
            }
            AppError::PlanLimitReached { resource, .. } => {
                let mut problem = Problem::new(StatusCode::FORBIDDEN, e.to_string())
                    .of_type("plan-limit-reached");
                problem.limit = Some(resource.to_string());
                ErrorResponse::Forbidden(Json(problem))
            }
            AppError::PaymentRequired(detail) => ErrorResponse::PaymentRequired(Json(
                Problem::new(StatusCode::PAYMENT_REQUIRED, detail).of_type("subscription-inactive"),
            )),
            AppError::ConflictFields { detail, fields } => {
                let mut problem = Problem::new(StatusCode::CONFLICT, detail);
                problem.errors = Some(fields.0);
                ErrorResponse::Conflict(Json(problem))
            }
            AppError::NotConfigured(detail) => {
                ErrorResponse::Unavailable(p(StatusCode::SERVICE_UNAVAILABLE, detail))
            }
            AppError::BadSignature(detail) => ErrorResponse::BadRequest(Json(
                Problem::new(StatusCode::BAD_REQUEST, detail).of_type("invalid-signature"),
            )),
            AppError::Upstream(detail) => {
                tracing::error!(error = %detail, "payment provider failed");
                ErrorResponse::BadGateway(p(
                    StatusCode::BAD_GATEWAY,
                    "the payment provider could not complete the request; nothing was changed"
                        .into(),
                ))
            }
            AppError::TooManyRequests {
                retry_after_secs,
                detail,
            } => ErrorResponse::TooManyRequests(
                p(StatusCode::TOO_MANY_REQUESTS, detail),
                retry_after_secs,
            ),
            AppError::Db(crate::db::DbError::Pool(deadpool_postgres::PoolError::Timeout(_))) => {
                tracing::error!(error = %e, "database pool exhausted");
                ErrorResponse::Unavailable(p(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is busy; retry shortly".into(),
                ))
            }
            AppError::Db(_) | AppError::Internal(_) => {
                tracing::error!(error = %e, "request failed");
                ErrorResponse::Internal(p(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "an unexpected error occurred".into(),
                ))
            }
        }
    }
}

impl From<tokio_postgres::Error> for ErrorResponse {
    fn from(e: tokio_postgres::Error) -> Self {
        AppError::from(e).into()
    }
}

impl From<DbError> for ErrorResponse {
    fn from(e: DbError) -> Self {
        AppError::from(e).into()
    }
}

/// The outermost error handler: answers every error as problem+json, keeping those that
/// already are.
pub async fn into_problem(err: poem::Error) -> Response {
    let status = err.status();
    let detail = err.to_string();
    let response = err.into_response();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let status = if status.is_success() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    let detail = match status {
        StatusCode::NOT_FOUND if detail.is_empty() || detail == "not found" => {
            "no such resource".to_string()
        }
        s if s.is_server_error() => {
            tracing::error!(error = %detail, "unhandled error");
            "an unexpected error occurred".to_string()
        }
        _ => detail,
    };
    problem_response(Problem::new(status, detail))
}

pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "type": problem.problem_type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    });
    Response::builder()
        .status(status)
        .content_type(PROBLEM_JSON)
        .body(body.to_string())
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        let mut errors = BTreeMap::new();
        errors.insert("name".to_string(), vec!["must not be empty".to_string()]);
        Problem {
            problem_type: "/problems/validation-error".into(),
            title: "Unprocessable Entity".into(),
            status: 422,
            detail: "the request has invalid fields".into(),
            errors: Some(errors),
            feature: None,
            limit: None,
        }
    }
}
