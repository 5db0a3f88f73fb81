//! Credential schemes. The checker turns a bearer token into a [`Principal`]; the tenant of
//! the request is the principal's company and nothing else.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::{ApiKey, Bearer};

use super::ApiState;
use super::middleware::origin;
use super::problem::ErrorResponse;
use super::rate_limit::VerifiedApiKey;
use crate::audit::{self, AuditAction};
use crate::auth::permissions::{self, Operation, Rule};
use crate::auth::{Principal, api_keys, session, verdict};
use crate::db::tenancy::TenantTx;
use crate::error::AppError;

/// A JWT access token from `POST /auth/login`, `/auth/register` or `/auth/refresh`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

/// An API key from `POST /api-keys`, acting for its creator with `read` (viewer) or
/// `write` (member) rights.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_api_key"
)]
pub struct ApiKeyAuth(pub Principal);

/// Any credential of a caller. Tried in order; the bearer token last, so that a bad one's
/// reason (expired, revoked…) is the answer.
#[derive(SecurityScheme)]
pub enum Auth {
    ApiKey(ApiKeyAuth),
    Bearer(BearerAuth),
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| ErrorResponse::from(AppError::Internal("API state missing".into())))?;
    let principal = session::authenticate(&state.jwt, &bearer.token, origin(req))
        .map_err(ErrorResponse::from)?;
    Ok(traced(principal))
}

async fn check_api_key(req: &Request, key: ApiKey) -> poem::Result<Principal> {
    if let Some(VerifiedApiKey(principal)) = req.extensions().get::<VerifiedApiKey>() {
        return Ok(traced(principal.clone()));
    }
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| ErrorResponse::from(AppError::Internal("API state missing".into())))?;
    let principal = api_keys::authenticate(&state.db, &key.key, origin(req))
        .await
        .map_err(ErrorResponse::from)?;
    Ok(traced(principal))
}

/// Puts the caller on the request's tracing span.
fn traced(principal: Principal) -> Principal {
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(principal.company));
    span.record("user", tracing::field::display(principal.user_id));
    crate::telemetry::tag_tenant(principal.company.0, Some(principal.user_id));
    principal
}

impl Auth {
    pub fn principal(&self) -> &Principal {
        match self {
            Auth::ApiKey(ApiKeyAuth(p)) | Auth::Bearer(BearerAuth(p)) => p,
        }
    }

    /// Checks the permission table for `operation`, then opens the caller's tenant
    /// transaction. The session check (revoked token, inactive user, changed role,
    /// suspended company) travels with its first statement, and nothing the transaction
    /// reads or writes survives a refusal.
    pub async fn tenant_tx(
        &self,
        state: &ApiState,
        operation: Operation,
    ) -> Result<TenantTx, ErrorResponse> {
        let rule = self.permit(state, operation).await?;
        Ok(verdict::tenant_tx(&state.db, &state.verdicts, self.principal(), rule).await?)
    }

    /// Checks the permission table for `operation` and the session on its own round trip,
    /// for handlers that work on the shared schema and open no tenant transaction.
    pub async fn verified(
        &self,
        state: &ApiState,
        operation: Operation,
    ) -> Result<&Principal, ErrorResponse> {
        let rule = self.permit(state, operation).await?;
        verdict::verify(&state.db, self.principal(), rule).await?;
        Ok(self.principal())
    }

    /// The permission table's answer. A refusal is recorded in the company's audit log
    /// (`permission_denied`) when the caller's session still counts, so dead tokens cannot
    /// fill the log; failing to record it is logged and does not change the answer.
    async fn permit(&self, state: &ApiState, operation: Operation) -> Result<Rule, ErrorResponse> {
        let refusal = match permissions::permit(self.principal(), operation) {
            Ok(access) => return Ok(access),
            Err(refusal) => refusal,
        };
        verdict::verify(&state.db, self.principal(), Rule::any_session()).await?;
        let entry =
            self.principal()
                .audit(AuditAction::PermissionDenied)
                .after(&serde_json::json!({
                    "operation": format!("{operation:?}"),
                    "least_role": operation.rule().least_role,
                }));
        let schema = state.db.naming().tenant(self.principal().company).schema;
        let recorded = async { audit::record_in(&state.db.shared().await?, &schema, entry).await };
        if let Err(e) = recorded.await {
            tracing::error!(error = %e, "could not record a permission_denied audit entry");
        }
        Err(refusal.into())
    }
}
