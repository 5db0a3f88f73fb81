//! `POST /auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::middleware::origin;
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::auth::session::{self, Session};
use crate::domain::companies::{self, NewCompany};
use crate::error::{AppError, FieldErrors};

pub struct AuthApi;

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The company's display name (1–200 characters).
    pub company_name: Option<String>,
    /// The owner's e-mail; also the login.
    pub email: Option<String>,
    /// 8–128 characters.
    pub password: Option<String>,
    pub full_name: Option<String>,
}

#[derive(Object)]
pub struct CompanySummary {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// `starter`, `professional` or `enterprise`.
    pub tier: String,
}

#[derive(Object)]
pub struct UserSummary {
    pub id: Uuid,
    pub email: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

#[derive(Object)]
pub struct Registration {
    pub company: CompanySummary,
    pub user: UserSummary,
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Object)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl From<Session> for Tokens {
    fn from(s: Session) -> Self {
        Tokens {
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            token_type: "Bearer".into(),
            expires_in: s.expires_in,
        }
    }
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login, registration or the previous refresh. Each one
    /// works once; presenting a used one again revokes every token of that login.
    pub refresh_token: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct LogoutRequest {
    /// Also revoke this refresh token (recommended).
    pub refresh_token: Option<String>,
}

#[derive(ApiResponse)]
pub enum RegisterResponse {
    /// The company, its schema and its owner exist; the tokens are ready to use.
    #[oai(status = 201)]
    Created(Json<Registration>),
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The access token (and the given refresh token) no longer work.
    #[oai(status = 204)]
    LoggedOut,
}

fn required_field(field: &str, value: Option<String>) -> Result<String, AppError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        let mut errors = FieldErrors::default();
        errors.add(field, "is required");
        AppError::Validation(errors)
    })
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Register a company and its owner.
    ///
    /// Creates the company, its own database schema and role, and the owner user in one
    /// step that fully succeeds or leaves nothing behind, and answers once the tenant is
    /// usable.
    #[oai(path = "/auth/register", method = "post")]
    async fn register(
        &self,
        state: Data<&Arc<ApiState>>,
        body: Json<RegisterRequest>,
    ) -> Result<RegisterResponse, ErrorResponse> {
        let b = body.0;
        let new = NewCompany::parse(
            b.company_name.as_deref(),
            b.email.as_deref(),
            b.password.as_deref(),
            b.full_name.as_deref(),
        )?;
        let r = companies::register(&state.db, &state.jwt, new).await?;
        Ok(RegisterResponse::Created(Json(Registration {
            company: CompanySummary {
                id: r.company.id,
                name: r.company.name,
                slug: r.company.slug,
                tier: r.company.tier,
            },
            user: UserSummary {
                id: r.user_id,
                email: r.email,
                role: r.role.as_str().into(),
            },
            access_token: r.session.access_token,
            refresh_token: r.session.refresh_token,
            token_type: "Bearer".into(),
            expires_in: r.session.expires_in,
        })))
    }

    /// Log in with e-mail and password.
    ///
    /// Unknown e-mail and wrong password answer the same 401. Repeated failures for one
    /// account or one address answer 429 with `Retry-After` for a while.
    #[oai(path = "/auth/login", method = "post")]
    async fn login(
        &self,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> Result<Json<Tokens>, ErrorResponse> {
        let email = required_field("email", body.0.email)?;
        let password = required_field("password", body.0.password)?;
        let session = session::login(&state.db, &state.jwt, &email, password, &origin(req)).await?;
        Ok(Json(session.into()))
    }

    /// Exchange a refresh token for new tokens (the old refresh token stops working).
    #[oai(path = "/auth/refresh", method = "post")]
    async fn refresh(
        &self,
        state: Data<&Arc<ApiState>>,
        body: Json<RefreshRequest>,
    ) -> Result<Json<Tokens>, ErrorResponse> {
        let token = required_field("refresh_token", body.0.refresh_token)?;
        let session = session::refresh(&state.db, &state.jwt, &token).await?;
        Ok(Json(session.into()))
    }

    /// Log out: revoke this access token until it expires, and the given refresh token.
    #[oai(path = "/auth/logout", method = "post")]
    async fn logout(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<LogoutRequest>,
    ) -> Result<LogoutResponse, ErrorResponse> {
        auth.verified(&state, Operation::Logout).await?;
        session::logout(&state.db, auth.principal(), body.0.refresh_token.as_deref()).await?;
        Ok(LogoutResponse::LoggedOut)
    }
}

impl poem_openapi::types::Example for RegisterRequest {
    fn example() -> Self {
        RegisterRequest {
            company_name: Some("Acme Homes".into()),
            email: Some("ann@acme.example".into()),
            password: Some("a long passphrase".into()),
            full_name: Some("Ann Adeyemi".into()),
        }
    }
}

impl poem_openapi::types::Example for LoginRequest {
    fn example() -> Self {
        LoginRequest {
            email: Some("ann@acme.example".into()),
            password: Some("a long passphrase".into()),
        }
    }
}
