//! `/api-keys`: the company's API keys (admins and owners).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::json_body::{JsonBody, rfc3339, rfc3339_opt};
use super::listing::parse_time;
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::api_keys::{self, ApiKey, Scope};
use crate::auth::permissions::Operation;
use crate::domain::values::{required, text};
use crate::error::FieldErrors;

pub struct ApiKeysApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "ApiKey")]
pub struct ApiKeyBody {
    pub id: Uuid,
    pub name: String,
    /// The start of the key, to tell keys apart; the rest is never shown again.
    pub prefix: String,
    /// `read` (viewer rights) or `write` (member rights).
    pub scope: String,
    /// The user the key acts for.
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyBody {
    fn from(k: ApiKey) -> Self {
        ApiKeyBody {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scope: k.scope.as_str().into(),
            created_by: k.created_by,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
        }
    }
}

#[derive(Object)]
pub struct CreatedApiKeyBody {
    #[oai(flatten)]
    pub api_key: ApiKeyBody,
    /// The key, for the `X-API-Key` header. Shown this once.
    pub key: String,
}

#[derive(Object, serde::Serialize)]
pub struct ApiKeyPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<ApiKeyBody>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1–100 characters.
    pub name: Option<String>,
    /// `read` or `write`.
    pub scope: Option<String>,
    /// RFC 3339; never expires when absent.
    pub expires_at: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedApiKey {
    /// The key was created; `key` is shown only now.
    #[oai(status = 201)]
    Created(Json<CreatedApiKeyBody>),
}

#[derive(ApiResponse)]
pub enum RevokedApiKey {
    /// The key no longer works.
    #[oai(status = 204)]
    Revoked,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// The company's API keys, newest first (without the keys themselves).
    #[oai(path = "/api-keys", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<JsonBody<ApiKeyPage>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::ApiKeysList).await?;
        let keys = api_keys::list(&state.db.shared().await?, principal).await?;
        Ok(JsonBody(ApiKeyPage {
            count: keys.len() as i64,
            next: None,
            previous: None,
            results: keys.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create an API key. The response carries the key, once.
    #[oai(path = "/api-keys", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<CreateApiKey>,
    ) -> Result<CreatedApiKey, ErrorResponse> {
        let b = body.0;
        let mut errors = FieldErrors::default();
        let name = errors.check(
            "name",
            required(b.name.as_deref()).and_then(|n| text(n, 1, 100)),
        );
        let scope = errors.check("scope", required(b.scope.as_deref()).and_then(Scope::parse));
        let expires_at = errors.check("expires_at", parse_time(b.expires_at.as_deref()));
        if expires_at.flatten().is_some_and(|t| t <= Utc::now()) {
            errors.add("expires_at", "must be in the future");
        }
        let (name, scope, expires_at) = errors.finish(|| Some((name?, scope?, expires_at?)))?;
        let principal = auth.verified(&state, Operation::ApiKeysCreate).await?;
        let (key, secret) =
            api_keys::create(&state.db, principal, &name, scope, expires_at).await?;
        Ok(CreatedApiKey::Created(Json(CreatedApiKeyBody {
            api_key: key.into(),
            key: secret,
        })))
    }

    /// Revoke an API key: it stops working at once.
    #[oai(path = "/api-keys/:id", method = "delete")]
    async fn revoke(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<RevokedApiKey, ErrorResponse> {
        let principal = auth.verified(&state, Operation::ApiKeysRevoke).await?;
        api_keys::revoke(&state.db, principal, id.0).await?;
        Ok(RevokedApiKey::Revoked)
    }
}
