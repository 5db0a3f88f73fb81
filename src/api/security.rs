//! Credential schemes. The checker turns a bearer token into a [`Principal`]; the tenant of
//! the request is the principal's company and nothing else.

use std::sync::Arc;

use poem::Request;
use poem::http::Method;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::ApiState;
use super::problem::ErrorResponse;
use crate::auth::{Principal, session};
use crate::error::AppError;

/// A JWT access token from `POST /auth/login`, `/auth/register` or `/auth/refresh`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| ErrorResponse::from(AppError::Internal("API state missing".into())))?;
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    session::authenticate(&state.db, &state.jwt, &bearer.token, read_only)
        .await
        .map_err(|e| ErrorResponse::from(e).into())
}
