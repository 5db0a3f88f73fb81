//! `/properties`: plots in the company's estates.

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
use super::types::{DecimalString, decimal_text};
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::properties::{
    self, DEFAULT_ORDERING, NewProperty, ORDERING_FIELDS, Property, PropertyFilter, PropertyPatch,
    PropertyStatus,
};
use crate::domain::values::Money;
use crate::error::FieldErrors;

pub struct PropertiesApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "Property")]
pub struct PropertyBody {
    pub id: Uuid,
    pub estate_id: Uuid,
    /// Unique within its estate.
    pub plot_number: String,
    /// Square metres, a decimal string with two places.
    pub size_sqm: DecimalString,
    /// Money: a decimal string with two places, e.g. `"2500000.00"`.
    pub price: DecimalString,
    /// `available`, `reserved`, `allocated` or `sold`.
    pub status: String,
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Property> for PropertyBody {
    fn from(p: Property) -> Self {
        PropertyBody {
            id: p.id,
            estate_id: p.estate_id,
            plot_number: p.plot_number,
            size_sqm: DecimalString(format!("{:.2}", p.size_sqm)),
            price: DecimalString(p.price.to_string()),
            status: p.status.as_str().into(),
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct PropertyPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<PropertyBody>,
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct CreateProperty {
    pub estate_id: Option<Uuid>,
    /// 1–50 characters, unique within the estate.
    pub plot_number: Option<String>,
    /// Square metres, a decimal string, e.g. `"450.00"`.
    pub size_sqm: Option<DecimalString>,
    /// Money, a decimal string, e.g. `"2500000.00"`.
    pub price: Option<DecimalString>,
    /// `available` (default) or `reserved`.
    pub status: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateProperty {
    pub plot_number: Option<String>,
    pub size_sqm: Option<DecimalString>,
    pub price: Option<DecimalString>,
    /// `available` or `reserved`; allocated and sold follow from allocations.
    pub status: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedProperty {
    /// The property was created.
    #[oai(status = 201)]
    Created(Json<PropertyBody>),
}

#[derive(ApiResponse)]
pub enum DeletedProperty {
    /// The property was deleted.
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Properties")]
impl PropertiesApi {
    /// List properties.
    ///
    /// `ordering`: plot_number, price, size_sqm, status, created_at, updated_at (`-` for
    /// descending; default `-created_at`). `search` matches part of the plot number.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/properties", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Page number, from 1.
        page: Query<Option<i64>>,
        /// Results per page, 1–100 (default 20).
        page_size: Query<Option<i64>>,
        /// Field to order by, `-field` for descending.
        ordering: Query<Option<String>>,
        /// Part of a plot number.
        search: Query<Option<String>>,
        /// Only properties of this estate.
        estate_id: Query<Option<Uuid>>,
        /// Only properties with this status.
        status: Query<Option<String>>,
        /// Only properties priced at least this (decimal string).
        min_price: Query<Option<String>>,
        /// Only properties priced at most this (decimal string).
        max_price: Query<Option<String>>,
        /// Only properties created at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only properties created before this RFC 3339 time.
        created_before: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<PropertyPage>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let common = RawListParams {
            page: page.0,
            page_size: page_size.0,
            ordering: ordering.0,
            created_after: created_after.0,
            created_before: created_before.0,
            ids: ids.0,
            search: search.0,
        }
        .parse(&mut errors, &ORDERING_FIELDS, DEFAULT_ORDERING);
        let status = errors.check(
            "status",
            status.0.as_deref().map(PropertyStatus::parse).transpose(),
        );
        let min_price = errors.check(
            "min_price",
            min_price.0.as_deref().map(Money::parse).transpose(),
        );
        let max_price = errors.check(
            "max_price",
            max_price.0.as_deref().map(Money::parse).transpose(),
        );
        let filter = errors.finish(|| {
            let c = common?;
            Some(PropertyFilter {
                estate_id: estate_id.0,
                status: status?,
                search: c.search,
                min_price: min_price?,
                max_price: max_price?,
                created_after: c.created_after,
                created_before: c.created_before,
                ids: c.ids,
                ordering: c.ordering,
                page: c.page,
            })
        })?;
        let mut tx = auth.tenant_tx(&state, Operation::PropertiesList).await?;
        let page = properties::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(PropertyPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create a property in an estate.
    #[oai(path = "/properties", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateProperty>,
    ) -> Result<CreatedProperty, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let new = NewProperty::parse(
            b.estate_id,
            b.plot_number.as_deref(),
            decimal_text(&b.size_sqm),
            decimal_text(&b.price),
            b.status.as_deref(),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::PropertiesCreate).await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(CreatedProperty::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let body = PropertyBody::from(properties::create(&mut tx, auth.principal(), new).await?);
        pending.finish(&mut tx, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedProperty::Created(Json(body)))
    }

    /// Get one property. Another company's property answers 404.
    #[oai(path = "/properties/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<PropertyBody>, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::PropertiesGet).await?;
        let property = properties::get(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(Json(property.into()))
    }

    /// Change a property. Members may change only properties they created.
    #[oai(path = "/properties/:id", method = "patch")]
    async fn update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<UpdateProperty>,
    ) -> Result<Json<PropertyBody>, ErrorResponse> {
        let b = body.0;
        let patch = PropertyPatch::parse(
            b.plot_number.as_deref(),
            decimal_text(&b.size_sqm),
            decimal_text(&b.price),
            b.status.as_deref(),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::PropertiesUpdate).await?;
        let property = properties::update(&mut tx, auth.principal(), id.0, patch).await?;
        tx.commit().await?;
        Ok(Json(property.into()))
    }

    /// Delete a property that was never allocated.
    #[oai(path = "/properties/:id", method = "delete")]
    async fn delete(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<DeletedProperty, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::PropertiesDelete).await?;
        properties::delete(&mut tx, auth.principal(), id.0).await?;
        tx.commit().await?;
        Ok(DeletedProperty::Deleted)
    }

    /// Set the price of many properties at once: all or none. Any failing item fails the
    /// request with per-item errors (`updates[i].price`, `updates[i]`) and nothing changes.
    #[oai(path = "/properties/bulk_price_update", method = "post")]
    async fn bulk_price_update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        body: Json<BulkPriceUpdate>,
    ) -> Result<Json<BulkProperties>, ErrorResponse> {
        let updates = body
            .0
            .updates
            .into_iter()
            .map(|u| (u.id, u.price.map(|p| p.0)))
            .collect();
        let mut tx = auth
            .tenant_tx(&state, Operation::PropertiesBulkPriceUpdate)
            .await?;
        let updated = properties::bulk_price_update(&mut tx, auth.principal(), updates).await?;
        tx.commit().await?;
        Ok(Json(BulkProperties {
            count: updated.len() as i64,
            results: updated.into_iter().map(Into::into).collect(),
        }))
    }
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct PriceUpdate {
    pub id: Option<Uuid>,
    /// Money, e.g. `"2750000.00"`.
    pub price: Option<DecimalString>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct BulkPriceUpdate {
    /// 1 to 500 items.
    pub updates: Vec<PriceUpdate>,
}

#[derive(Object)]
pub struct BulkProperties {
    pub count: i64,
    pub results: Vec<PropertyBody>,
}

impl poem_openapi::types::Example for CreateProperty {
    fn example() -> Self {
        CreateProperty {
            estate_id: Some(Uuid::nil()),
            plot_number: Some("A-12".into()),
            size_sqm: Some(DecimalString("450.00".into())),
            price: Some(DecimalString("2500000.00".into())),
            status: None,
        }
    }
}
