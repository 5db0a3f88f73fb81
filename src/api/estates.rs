//! `/estates`: CRUD and listing of the caller's company's estates.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use super::idempotency::{Claimed, Keyed};
use super::json_body::{JsonBody, rfc3339};
use super::listing::{RawListParams, links};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::types::DecimalString;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::estates::{
    self, DEFAULT_ORDERING, Estate, EstateFilter, EstatePatch, EstateStatus, NewEstate,
    ORDERING_FIELDS, PatchField,
};
use crate::error::{AppError, FieldErrors};

pub struct EstatesApi;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EstateStatusBody {
    Planning,
    Active,
    SoldOut,
    Archived,
}

impl From<EstateStatus> for EstateStatusBody {
    fn from(s: EstateStatus) -> Self {
        match s {
            EstateStatus::Planning => Self::Planning,
            EstateStatus::Active => Self::Active,
            EstateStatus::SoldOut => Self::SoldOut,
            EstateStatus::Archived => Self::Archived,
        }
    }
}

#[derive(Object, serde::Serialize)]
#[oai(rename = "Estate")]
pub struct EstateBody {
    pub id: Uuid,
    pub name: String,
    pub location: String,
    pub description: String,
    pub status: EstateStatusBody,
    /// The user who created the estate.
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Estate> for EstateBody {
    fn from(e: Estate) -> Self {
        EstateBody {
            id: e.id,
            name: e.name,
            location: e.location,
            description: e.description,
            status: e.status.into(),
            created_by: e.created_by,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct CreateEstate {
    /// 1–200 characters. Required.
    pub name: Option<String>,
    /// Up to 300 characters.
    pub location: Option<String>,
    /// Up to 5000 characters.
    pub description: Option<String>,
    /// `planning` (default), `active`, `sold_out` or `archived`.
    pub status: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateEstate {
    /// 1–200 characters; may not be null.
    pub name: MaybeUndefined<String>,
    /// Up to 300 characters; null clears it.
    pub location: MaybeUndefined<String>,
    /// Up to 5000 characters; null clears it.
    pub description: MaybeUndefined<String>,
    /// `planning`, `active`, `sold_out` or `archived`; may not be null.
    pub status: MaybeUndefined<String>,
}

pub(crate) fn patch_field(f: &MaybeUndefined<String>) -> PatchField<'_> {
    match f {
        MaybeUndefined::Undefined => PatchField::Absent,
        MaybeUndefined::Null => PatchField::Null,
        MaybeUndefined::Value(v) => PatchField::Value(v),
    }
}

#[derive(Object, serde::Serialize)]
pub struct EstatePage {
    /// Estates matching the filters, across all pages.
    pub count: i64,
    /// The next page's URL, or null on the last page.
    pub next: Option<String>,
    /// The previous page's URL, or null on the first page.
    pub previous: Option<String>,
    pub results: Vec<EstateBody>,
}

#[derive(ApiResponse)]
pub enum CreatedEstate {
    /// The estate was created.
    #[oai(status = 201)]
    Created(Json<EstateBody>),
}

#[derive(ApiResponse)]
pub enum DeletedEstate {
    /// The estate was deleted.
    #[oai(status = 204)]
    Deleted,
}

#[allow(clippy::too_many_arguments)]
fn parse_filter(
    page: Option<i64>,
    page_size: Option<i64>,
    search: Option<String>,
    ordering: Option<String>,
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    ids: Option<String>,
) -> Result<EstateFilter, AppError> {
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
    let status = errors.check(
        "status",
        status.as_deref().map(EstateStatus::parse).transpose(),
    );
    errors.finish(|| {
        let c = common?;
        Some(EstateFilter {
            search: c.search,
            status: status?,
            created_after: c.created_after,
            created_before: c.created_before,
            ids: c.ids,
            ordering: c.ordering,
            page: c.page,
        })
    })
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Estates")]
impl EstatesApi {
    /// List estates.
    ///
    /// Filters combine with AND. `search` is full-text over name, location and
    /// description. `ordering` is one of name, location, status, created_at, updated_at,
    /// with `-` for descending (default `-created_at`).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/estates", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Page number, from 1.
        page: Query<Option<i64>>,
        /// Results per page, 1–100 (default 20).
        page_size: Query<Option<i64>>,
        /// Full-text search over name, location and description.
        search: Query<Option<String>>,
        /// Field to order by, `-field` for descending.
        ordering: Query<Option<String>>,
        /// Only estates with this status.
        status: Query<Option<String>>,
        /// Only estates created at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only estates created before this RFC 3339 time.
        created_before: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<EstatePage>, ErrorResponse> {
        let filter = parse_filter(
            page.0,
            page_size.0,
            search.0,
            ordering.0,
            status.0,
            created_after.0,
            created_before.0,
            ids.0,
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::EstatesList).await?;
        let page = estates::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(EstatePage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create an estate. Viewers may not.
    #[oai(path = "/estates", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateEstate>,
    ) -> Result<CreatedEstate, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let new = NewEstate::parse(
            b.name.as_deref(),
            b.location.as_deref(),
            b.description.as_deref(),
            b.status.as_deref(),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::EstatesCreate).await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(CreatedEstate::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let body = EstateBody::from(estates::create(&mut tx, auth.principal(), new).await?);
        pending.finish(&mut tx, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedEstate::Created(Json(body)))
    }

    /// Get one estate. Another company's estate id answers 404, like a missing one.
    #[oai(path = "/estates/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<EstateBody>, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::EstatesGet).await?;
        let estate = estates::get(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(Json(estate.into()))
    }

    /// Change an estate. Members may change only estates they created.
    #[oai(path = "/estates/:id", method = "patch")]
    async fn update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<UpdateEstate>,
    ) -> Result<Json<EstateBody>, ErrorResponse> {
        let b = body.0;
        let patch = EstatePatch::parse(
            patch_field(&b.name),
            patch_field(&b.location),
            patch_field(&b.description),
            patch_field(&b.status),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::EstatesUpdate).await?;
        let estate = estates::update(&mut tx, auth.principal(), id.0, patch).await?;
        tx.commit().await?;
        Ok(Json(estate.into()))
    }

    /// Delete an estate. Members may delete only estates they created.
    #[oai(path = "/estates/:id", method = "delete")]
    async fn delete(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<DeletedEstate, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::EstatesDelete).await?;
        estates::delete(&mut tx, auth.principal(), id.0).await?;
        tx.commit().await?;
        Ok(DeletedEstate::Deleted)
    }

    /// Figures of an estate: properties by status, allocated value, amount collected and
    /// outstanding balance.
    #[oai(path = "/estates/:id/statistics", method = "get")]
    async fn statistics(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<EstateStatisticsBody>, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::EstatesStatistics).await?;
        let s = estates::statistics(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(Json(EstateStatisticsBody {
            estate_id: s.estate_id,
            properties: PropertiesByStatus {
                total: s.properties_total,
                available: s.available,
                reserved: s.reserved,
                allocated: s.allocated,
                sold: s.sold,
            },
            allocated_value: DecimalString(s.allocated_value.to_string()),
            amount_collected: DecimalString(s.amount_collected.to_string()),
            outstanding: DecimalString(s.outstanding.to_string()),
        }))
    }
}

#[derive(Object)]
pub struct PropertiesByStatus {
    pub total: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub sold: i64,
}

#[derive(Object)]
#[oai(rename = "EstateStatistics")]
pub struct EstateStatisticsBody {
    pub estate_id: Uuid,
    pub properties: PropertiesByStatus,
    /// Total price of the estate's allocations that are not cancelled.
    pub allocated_value: DecimalString,
    /// Paid so far on those allocations.
    pub amount_collected: DecimalString,
    /// Still to be paid on active allocations.
    pub outstanding: DecimalString,
}

impl poem_openapi::types::Example for CreateEstate {
    fn example() -> Self {
        CreateEstate {
            name: Some("Palm Court".into()),
            location: Some("Lekki, Lagos".into()),
            description: Some("120 plots near the lagoon".into()),
            status: Some("active".into()),
        }
    }
}
