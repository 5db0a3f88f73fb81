//! OAuth 2 client credentials: `POST /oauth/token`, and `/oauth-clients` to manage the
//! company's machine clients (admins and owners).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::{Form, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::json_body::{JsonBody, rfc3339, rfc3339_opt};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::api_keys::Scope;
use crate::auth::oauth_clients::{self, OAuthClient};
use crate::auth::permissions::Operation;
use crate::domain::values::{required, text};
use crate::error::FieldErrors;

pub struct OAuthApi;

#[derive(Object, serde::Deserialize)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(Object)]
pub struct ClientTokenBody {
    /// A JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    /// `read` or `write`, the client's scope.
    pub scope: String,
}

#[derive(Object, serde::Serialize)]
#[oai(rename = "OAuthClient")]
pub struct OAuthClientBody {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    /// `read` (viewer rights) or `write` (member rights).
    pub scope: String,
    /// The user the client acts for.
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<OAuthClient> for OAuthClientBody {
    fn from(c: OAuthClient) -> Self {
        OAuthClientBody {
            id: c.id,
            name: c.name,
            client_id: c.client_id,
            scope: c.scope.as_str().into(),
            created_by: c.created_by,
            revoked_at: c.revoked_at,
            created_at: c.created_at,
        }
    }
}

#[derive(Object)]
pub struct CreatedOAuthClientBody {
    #[oai(flatten)]
    pub client: OAuthClientBody,
    /// Shown this once.
    pub client_secret: String,
}

#[derive(Object, serde::Serialize)]
pub struct OAuthClientPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<OAuthClientBody>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct CreateOAuthClient {
    /// 1–100 characters.
    pub name: Option<String>,
    /// `read` or `write`.
    pub scope: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedOAuthClient {
    /// The client was created; `client_secret` is shown only now.
    #[oai(status = 201)]
    Created(Json<CreatedOAuthClientBody>),
}

#[derive(ApiResponse)]
pub enum RevokedOAuthClient {
    /// The client and its tokens no longer work.
    #[oai(status = 204)]
    Revoked,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::OAuth")]
impl OAuthApi {
    /// Exchange client credentials for a bearer token (form-encoded, grant
    /// `client_credentials`). Unknown client and wrong secret answer the same 401.
    #[oai(path = "/oauth/token", method = "post")]
    async fn token(
        &self,
        state: Data<&Arc<ApiState>>,
        body: Form<TokenRequest>,
    ) -> Result<Json<ClientTokenBody>, ErrorResponse> {
        let b = body.0;
        let mut errors = FieldErrors::default();
        match b.grant_type.as_deref() {
            Some("client_credentials") => {}
            _ => errors.add("grant_type", "must be client_credentials"),
        }
        let client_id = errors.check("client_id", required(b.client_id));
        let secret = errors.check("client_secret", required(b.client_secret));
        let (client_id, secret) = errors.finish(|| Some((client_id?, secret?)))?;
        let token = oauth_clients::exchange(&state.db, &state.jwt, &client_id, &secret).await?;
        Ok(Json(ClientTokenBody {
            access_token: token.access_token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
            scope: token.scope.as_str().into(),
        }))
    }

    /// The company's OAuth clients, newest first (without secrets).
    #[oai(path = "/oauth-clients", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<JsonBody<OAuthClientPage>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::OAuthClientsList).await?;
        let clients = oauth_clients::list(&state.db, principal).await?;
        Ok(JsonBody(OAuthClientPage {
            count: clients.len() as i64,
            next: None,
            previous: None,
            results: clients.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create an OAuth client. The response carries its secret, once.
    #[oai(path = "/oauth-clients", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<CreateOAuthClient>,
    ) -> Result<CreatedOAuthClient, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let name = errors.check(
            "name",
            required(body.0.name.as_deref()).and_then(|n| text(n, 1, 100)),
        );
        let scope = errors.check(
            "scope",
            required(body.0.scope.as_deref()).and_then(Scope::parse),
        );
        let (name, scope) = errors.finish(|| Some((name?, scope?)))?;
        let principal = auth.verified(&state, Operation::OAuthClientsCreate).await?;
        let (client, secret) = oauth_clients::create(&state.db, principal, &name, scope).await?;
        Ok(CreatedOAuthClient::Created(Json(CreatedOAuthClientBody {
            client: client.into(),
            client_secret: secret,
        })))
    }

    /// Revoke an OAuth client: its tokens stop working at once.
    #[oai(path = "/oauth-clients/:id", method = "delete")]
    async fn revoke(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<RevokedOAuthClient, ErrorResponse> {
        let principal = auth.verified(&state, Operation::OAuthClientsRevoke).await?;
        oauth_clients::revoke(&state.db, principal, id.0).await?;
        Ok(RevokedOAuthClient::Revoked)
    }
}
