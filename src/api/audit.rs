//! `GET /audit-logs`: the company's audit log.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::types::Any;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::json_body::{JsonBody, rfc3339};
use super::listing::{RawListParams, links};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::audit::{
    self, AuditAction, AuditFilter, AuditRecord, DEFAULT_ORDERING, ORDERING_FIELDS,
};
use crate::auth::permissions::Operation;
use crate::error::{AppError, FieldErrors};

pub struct AuditApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "AuditLogEntry")]
pub struct AuditBody {
    pub id: Uuid,
    /// e.g. `create`, `update`, `delete`, `login`, `login_failed`, `logout`,
    /// `password_change`, `user_status_change`, `permission_denied`.
    pub action: String,
    /// Who did it (a user id).
    pub actor_id: Option<Uuid>,
    /// `user`, `api_key`, `oauth_client`, `system` or `anonymous`.
    pub actor_kind: String,
    /// e.g. `estate`, `user`, `company`.
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    /// The object before the change.
    pub before: Option<Any<serde_json::Value>>,
    /// The object after the change.
    pub after: Option<Any<serde_json::Value>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditBody {
    fn from(r: AuditRecord) -> Self {
        AuditBody {
            id: r.id,
            action: r.action,
            actor_id: r.actor_id,
            actor_kind: r.actor_kind,
            object_type: r.object_type,
            object_id: r.object_id,
            before: r.before.map(Any),
            after: r.after.map(Any),
            ip: r.ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            created_at: r.created_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct AuditLogPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<AuditBody>,
}

#[allow(clippy::too_many_arguments)]
fn parse_filter(
    page: Option<i64>,
    page_size: Option<i64>,
    ordering: Option<String>,
    action: Option<String>,
    actor: Option<Uuid>,
    object_type: Option<String>,
    object_id: Option<Uuid>,
    created_after: Option<String>,
    created_before: Option<String>,
) -> Result<AuditFilter, AppError> {
    let mut errors = FieldErrors::default();
    let common = RawListParams {
        page,
        page_size,
        ordering,
        created_after,
        created_before,
        ids: None,
        search: None,
    }
    .parse(&mut errors, &ORDERING_FIELDS, DEFAULT_ORDERING);
    let action = errors.check(
        "action",
        action.as_deref().map(AuditAction::parse).transpose(),
    );
    if object_type.as_ref().is_some_and(|t| t.len() > 50) {
        errors.add("object_type", "must be at most 50 characters");
    }
    errors.finish(|| {
        let c = common?;
        Some(AuditFilter {
            action: action?,
            actor,
            object_type,
            object_id,
            created_after: c.created_after,
            created_before: c.created_before,
            ordering: c.ordering,
            page: c.page,
        })
    })
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Audit")]
impl AuditApi {
    /// The company's audit log, newest first (admins and owners).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/audit-logs", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Page number, from 1.
        page: Query<Option<i64>>,
        /// Results per page, 1–100 (default 20).
        page_size: Query<Option<i64>>,
        /// `created_at` or `action`, `-` for descending (default `-created_at`).
        ordering: Query<Option<String>>,
        /// Only this action.
        action: Query<Option<String>>,
        /// Only entries by this user.
        actor: Query<Option<Uuid>>,
        /// Only entries about this kind of object (`estate`, `user`, `company`).
        object_type: Query<Option<String>>,
        /// Only entries about this object.
        object_id: Query<Option<Uuid>>,
        /// Only entries at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only entries before this RFC 3339 time.
        created_before: Query<Option<String>>,
    ) -> Result<JsonBody<AuditLogPage>, ErrorResponse> {
        let filter = parse_filter(
            page.0,
            page_size.0,
            ordering.0,
            action.0,
            actor.0,
            object_type.0,
            object_id.0,
            created_after.0,
            created_before.0,
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::AuditLogsList).await?;
        let page = audit::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(AuditLogPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }
}
