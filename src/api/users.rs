//! `/users`: the caller's company's users and their roles.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::idempotency::{Claimed, Keyed};
use super::json_body::{JsonBody, rfc3339};
use super::listing::{RawListParams, links};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::idempotency;
use crate::domain::users::{
    self, DEFAULT_ORDERING, NewUser, ORDERING_FIELDS, User, UserFilter, UserPatch, parse_role,
};
use crate::error::{AppError, FieldErrors};

pub struct UsersApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "User")]
pub struct UserBody {
    pub id: Uuid,
    pub email: String,
    pub full_name: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    /// Inactive users cannot log in and their tokens do not work.
    pub is_active: bool,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        UserBody {
            id: u.id,
            email: u.email,
            full_name: u.full_name,
            role: u.role.as_str().into(),
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct UserPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<UserBody>,
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct CreateUser {
    /// Also the login; unique across all companies.
    pub email: Option<String>,
    pub full_name: Option<String>,
    /// `owner` (owners only), `admin`, `member` or `viewer`.
    pub role: Option<String>,
    /// 8–128 characters.
    pub password: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateUser {
    /// Anyone may change their own name; admins and owners anyone's.
    pub full_name: Option<String>,
    /// Admins and owners only; only owners grant or remove `owner`.
    pub role: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: Option<String>,
    /// 8–128 characters.
    pub new_password: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedUser {
    /// The user was created.
    #[oai(status = 201)]
    Created(Json<UserBody>),
}

#[derive(ApiResponse)]
pub enum PasswordChanged {
    /// The password was changed and the user's other sessions ended.
    #[oai(status = 204)]
    Changed,
}

#[allow(clippy::too_many_arguments)]
fn parse_filter(
    page: Option<i64>,
    page_size: Option<i64>,
    search: Option<String>,
    ordering: Option<String>,
    role: Option<String>,
    is_active: Option<bool>,
    created_after: Option<String>,
    created_before: Option<String>,
    ids: Option<String>,
) -> Result<UserFilter, AppError> {
    let mut errors = FieldErrors::default();
    let common = RawListParams {
        page,
        page_size,
        ordering,
        created_after,
        created_before,
        ids,
        search,
    }
    .parse(&mut errors, &ORDERING_FIELDS, DEFAULT_ORDERING);
    let role = errors.check("role", role.as_deref().map(parse_role).transpose());
    errors.finish(|| {
        let c = common?;
        Some(UserFilter {
            search: c.search,
            role: role?,
            is_active,
            created_after: c.created_after,
            created_before: c.created_before,
            ids: c.ids,
            ordering: c.ordering,
            page: c.page,
        })
    })
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Users")]
impl UsersApi {
    /// List the company's users.
    ///
    /// `search` matches e-mail or name; `ordering` is one of email, full_name, role,
    /// created_at, updated_at (`-` for descending; default created_at).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/users", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Page number, from 1.
        page: Query<Option<i64>>,
        /// Results per page, 1–100 (default 20).
        page_size: Query<Option<i64>>,
        /// Part of an e-mail or a name.
        search: Query<Option<String>>,
        /// Field to order by, `-field` for descending.
        ordering: Query<Option<String>>,
        /// Only users with this role.
        role: Query<Option<String>>,
        /// Only active (true) or inactive (false) users.
        is_active: Query<Option<bool>>,
        /// Only users created at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only users created before this RFC 3339 time.
        created_before: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<UserPage>, ErrorResponse> {
        let filter = parse_filter(
            page.0,
            page_size.0,
            search.0,
            ordering.0,
            role.0,
            is_active.0,
            created_after.0,
            created_before.0,
            ids.0,
        )?;
        let principal = auth.verified(&state, Operation::UsersList).await?;
        let mut conn = state.db.shared().await?;
        let page = users::list(&mut conn, principal, &filter).await?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(UserPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create a user in the company. Admins and owners; only owners create owners.
    #[oai(path = "/users", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateUser>,
    ) -> Result<CreatedUser, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let new = NewUser::parse(
            b.email.as_deref(),
            b.full_name.as_deref(),
            b.role.as_deref(),
            b.password.as_deref(),
        )?;
        let principal = auth.verified(&state, Operation::UsersCreate).await?;
        let table = idempotency::table_of(&state.db.naming().tenant(principal.company).schema);
        let mut conn = state.db.shared().await?;
        let mut tx = conn.transaction().await?;
        let pending = match keyed.claim_in(&mut tx, &table).await? {
            Claimed::Replay(body) => return Ok(CreatedUser::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let body = UserBody::from(users::create(&state.db, &tx, principal, new).await?);
        pending.finish_in(&mut tx, &table, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedUser::Created(Json(body)))
    }

    /// Get one of the company's users. Another company's user answers 404.
    #[oai(path = "/users/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<UserBody>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::UsersGet).await?;
        let conn = state.db.shared().await?;
        Ok(Json(users::get(&conn, principal, id.0).await?.into()))
    }

    /// Change a user's name or role.
    #[oai(path = "/users/:id", method = "patch")]
    async fn update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<UpdateUser>,
    ) -> Result<Json<UserBody>, ErrorResponse> {
        let patch = UserPatch::parse(body.0.full_name.as_deref(), body.0.role.as_deref())?;
        let principal = auth.verified(&state, Operation::UsersUpdate).await?;
        Ok(Json(
            users::update(&state.db, principal, id.0, patch)
                .await?
                .into(),
        ))
    }

    /// Change your own password; your other sessions end.
    #[oai(path = "/users/:id/change_password", method = "post")]
    async fn change_password(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<ChangePassword>,
    ) -> Result<PasswordChanged, ErrorResponse> {
        let principal = auth
            .verified(&state, Operation::UsersChangePassword)
            .await?;
        users::change_password(
            &state.db,
            principal,
            id.0,
            body.0.current_password.as_deref().unwrap_or(""),
            body.0.new_password.as_deref().unwrap_or(""),
        )
        .await?;
        Ok(PasswordChanged::Changed)
    }

    /// Activate or deactivate a user. A deactivated user's tokens stop working at once.
    #[oai(path = "/users/:id/toggle_status", method = "post")]
    async fn toggle_status(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<UserBody>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::UsersToggleStatus).await?;
        Ok(Json(
            users::toggle_status(&state.db, principal, id.0)
                .await?
                .into(),
        ))
    }
}

impl poem_openapi::types::Example for CreateUser {
    fn example() -> Self {
        CreateUser {
            email: Some("bola@acme.example".into()),
            full_name: Some("Bola Agent".into()),
            role: Some("member".into()),
            password: Some("another long passphrase".into()),
        }
    }
}
