//! Properties (plots) in estates. `allocated` and `sold` are set by allocations and
//! payments, never by hand; a plot number is unique within its estate.

use crate::billing::limits;
use crate::billing::plans::Resource;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page, like_pattern};
use super::values::{Money, area, required, text};
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::error::{AppError, FieldErrors, is_unique_violation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyStatus {
    Available,
    Reserved,
    Allocated,
    Sold,
}

impl PropertyStatus {
    pub const ALL: [PropertyStatus; 4] =
        [Self::Available, Self::Reserved, Self::Allocated, Self::Sold];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Allocated => "allocated",
            Self::Sold => "sold",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| "must be one of available, reserved, allocated, sold".to_string())
    }

    /// The statuses a person may set; the others follow from allocations and payments.
    fn parse_settable(raw: &str) -> Result<Self, String> {
        match Self::parse(raw)? {
            s @ (Self::Available | Self::Reserved) => Ok(s),
            _ => Err(
                "only available or reserved may be set; allocated and sold follow from allocations"
                    .into(),
            ),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Property {
    pub id: Uuid,
    pub estate_id: Uuid,
    pub plot_number: String,
    pub size_sqm: Decimal,
    pub price: Money,
    pub status: PropertyStatus,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str =
    "id, estate_id, plot_number, size_sqm, price, status, created_by, created_at, updated_at";

impl Property {
    pub(crate) fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(Property {
            id: row.try_get(0)?,
            estate_id: row.try_get(1)?,
            plot_number: row.try_get(2)?,
            size_sqm: row.try_get(3)?,
            price: Money::from_decimal(row.try_get(4)?),
            status: PropertyStatus::parse(row.try_get(5)?).map_err(AppError::Internal)?,
            created_by: row.try_get(6)?,
            created_at: row.try_get(7)?,
            updated_at: row.try_get(8)?,
        })
    }
}

const LISTING: Listing<Property> = Listing {
    columns: COLUMNS,
    column_count: 9,
    from: "properties",
    noun: "property",
    from_row: Property::from_row,
};

fn parse_plot_number(raw: &str) -> Result<String, String> {
    text(raw, 1, 50)
}

#[derive(Debug, Clone)]
pub struct NewProperty {
    pub estate_id: Uuid,
    pub plot_number: String,
    pub size_sqm: Decimal,
    pub price: Money,
    pub status: PropertyStatus,
}

impl NewProperty {
    pub fn parse(
        estate_id: Option<Uuid>,
        plot_number: Option<&str>,
        size_sqm: Option<&str>,
        price: Option<&str>,
        status: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let estate_id = errors.check("estate_id", required(estate_id));
        let plot_number = errors.check(
            "plot_number",
            required(plot_number).and_then(parse_plot_number),
        );
        let size_sqm = errors.check("size_sqm", required(size_sqm).and_then(area));
        let price = errors.check("price", required(price).and_then(Money::parse));
        let status = errors.check(
            "status",
            status.map_or(
                Ok(PropertyStatus::Available),
                PropertyStatus::parse_settable,
            ),
        );
        errors.finish(|| {
            Some(NewProperty {
                estate_id: estate_id?,
                plot_number: plot_number?,
                size_sqm: size_sqm?,
                price: price?,
                status: status?,
            })
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct PropertyPatch {
    pub plot_number: Option<String>,
    pub size_sqm: Option<Decimal>,
    pub price: Option<Money>,
    pub status: Option<PropertyStatus>,
}

impl PropertyPatch {
    pub fn parse(
        plot_number: Option<&str>,
        size_sqm: Option<&str>,
        price: Option<&str>,
        status: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let plot_number = errors.check(
            "plot_number",
            plot_number.map(parse_plot_number).transpose(),
        );
        let size_sqm = errors.check("size_sqm", size_sqm.map(area).transpose());
        let price = errors.check("price", price.map(Money::parse).transpose());
        let status = errors.check(
            "status",
            status.map(PropertyStatus::parse_settable).transpose(),
        );
        errors.finish(|| {
            Some(PropertyPatch {
                plot_number: plot_number?,
                size_sqm: size_sqm?,
                price: price?,
                status: status?,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct PropertyFilter {
    pub estate_id: Option<Uuid>,
    pub status: Option<PropertyStatus>,
    pub search: Option<String>,
    pub min_price: Option<Money>,
    pub max_price: Option<Money>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 6] = [
    "plot_number",
    "price",
    "size_sqm",
    "status",
    "created_at",
    "updated_at",
];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: true,
};

pub async fn list(tx: &mut TenantTx, filter: &PropertyFilter) -> Result<Page<Property>, AppError> {
    let mut filters = Filters::default();
    if let Some(estate) = filter.estate_id {
        filters.and("estate_id = ?", estate);
    }
    if let Some(status) = filter.status {
        filters.and("status = ?", status.as_str());
    }
    if let Some(search) = &filter.search {
        filters.and("plot_number ILIKE ?", like_pattern(search));
    }
    if let Some(min) = filter.min_price {
        filters.and("price >= ?", min.decimal());
    }
    if let Some(max) = filter.max_price {
        filters.and("price <= ?", max.decimal());
    }
    if let Some(after) = filter.created_after {
        filters.and("created_at >= ?", after);
    }
    if let Some(before) = filter.created_before {
        filters.and("created_at < ?", before);
    }
    if let Some(ids) = &filter.ids {
        filters.and("id = ANY(?)", ids.clone());
    }
    fetch_page(tx, &LISTING, &filters, &filter.ordering, filter.page).await
}

async fn find(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Property, AppError> {
    LISTING.find(tx, id, lock).await
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Property, AppError> {
    find(tx, id, false).await
}

/// Locks a property for an allocation or payment (see `allocations`).
pub(crate) async fn lock(tx: &mut TenantTx, id: Uuid) -> Result<Property, AppError> {
    find(tx, id, true).await
}

pub(crate) async fn set_status(
    tx: &mut TenantTx,
    id: Uuid,
    status: PropertyStatus,
) -> Result<(), AppError> {
    tx.execute(
        "UPDATE properties SET status = $2, updated_at = now() WHERE id = $1",
        &[&id, &status.as_str()],
    )
    .await?;
    Ok(())
}

fn plot_taken(e: crate::db::DbError) -> AppError {
    if is_unique_violation(&e, "properties_plot_number_key") {
        let mut errors = FieldErrors::default();
        errors.add("plot_number", "is already used in this estate");
        AppError::Validation(errors)
    } else {
        AppError::from(e)
    }
}

pub async fn create(
    tx: &mut TenantTx,
    principal: &Principal,
    new: NewProperty,
) -> Result<Property, AppError> {
    limits::reserve(tx, Resource::Properties, 1).await?;
    let estate = tx
        .query_opt("SELECT 1 FROM estates WHERE id = $1", &[&new.estate_id])
        .await?;
    if estate.is_none() {
        let mut errors = FieldErrors::default();
        errors.add("estate_id", "no such estate");
        return Err(AppError::Validation(errors));
    }
    let sql = format!(
        "INSERT INTO properties (id, estate_id, plot_number, size_sqm, price, status, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &Uuid::now_v7(),
                &new.estate_id,
                &new.plot_number,
                &new.size_sqm,
                &new.price.decimal(),
                &new.status.as_str(),
                &principal.user_id,
            ],
        )
        .await
        .map_err(plot_taken)?;
    let property = Property::from_row(rows.first().ok_or(AppError::NotFound("property"))?)?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("property", property.id)
        .after(&property);
    audit::record(tx, entry).await?;
    Ok(property)
}

pub async fn update(
    tx: &mut TenantTx,
    principal: &Principal,
    id: Uuid,
    patch: PropertyPatch,
) -> Result<Property, AppError> {
    let current = find(tx, id, true).await?;
    super::may_change(principal, current.created_by, "properties")?;
    if patch.status.is_some()
        && matches!(
            current.status,
            PropertyStatus::Allocated | PropertyStatus::Sold
        )
    {
        return Err(AppError::Conflict(format!(
            "the property is {}; its status follows its allocation",
            current.status.as_str()
        )));
    }
    let sql = format!(
        "UPDATE properties SET
             plot_number = coalesce($2, plot_number),
             size_sqm = coalesce($3, size_sqm),
             price = coalesce($4, price),
             status = coalesce($5, status),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &id,
                &patch.plot_number,
                &patch.size_sqm,
                &patch.price.map(Money::decimal),
                &patch.status.map(PropertyStatus::as_str),
            ],
        )
        .await
        .map_err(plot_taken)?;
    let updated = Property::from_row(rows.first().ok_or(AppError::NotFound("property"))?)?;
    let entry = principal
        .audit(AuditAction::Update)
        .object("property", id)
        .before(&current)
        .after(&updated);
    audit::record(tx, entry).await?;
    Ok(updated)
}

pub async fn delete(tx: &mut TenantTx, principal: &Principal, id: Uuid) -> Result<(), AppError> {
    let current = find(tx, id, true).await?;
    super::may_change(principal, current.created_by, "properties")?;
    let allocated = tx
        .query_opt(
            "SELECT 1 FROM allocations WHERE property_id = $1 LIMIT 1",
            &[&id],
        )
        .await?;
    if allocated.is_some() {
        return Err(AppError::Conflict(
            "the property has allocations; it cannot be deleted".into(),
        ));
    }
    tx.execute("DELETE FROM properties WHERE id = $1", &[&id])
        .await?;
    let entry = principal
        .audit(AuditAction::Delete)
        .object("property", id)
        .before(&current);
    audit::record(tx, entry).await
}

/// Most items one bulk request may carry.
pub const MAX_BULK_ITEMS: usize = 500;

/// Sets the price of many properties, all or none: any item that fails (missing,
/// another member's, bad price) fails the whole request with every item's errors, keyed
/// `updates[i]`, and nothing changes.
pub async fn bulk_price_update(
    tx: &mut TenantTx,
    principal: &Principal,
    updates: Vec<(Option<Uuid>, Option<String>)>,
) -> Result<Vec<Property>, AppError> {
    let mut errors = FieldErrors::default();
    if updates.is_empty() || updates.len() > MAX_BULK_ITEMS {
        errors.add("updates", format!("must hold 1 to {MAX_BULK_ITEMS} items"));
        return Err(AppError::Validation(errors));
    }
    let mut updated = Vec::with_capacity(updates.len());
    for (i, (id, price)) in updates.into_iter().enumerate() {
        let prefix = format!("updates[{i}]");
        let parsed = PropertyPatch::parse(None, None, price.as_deref(), None).and_then(|patch| {
            if patch.price.is_none() {
                let mut e = FieldErrors::default();
                e.add("price", "is required");
                return Err(AppError::Validation(e));
            }
            Ok(patch)
        });
        let result = match (id, parsed) {
            (None, _) => {
                errors.add(&format!("{prefix}.id"), "is required");
                continue;
            }
            (Some(_), Err(e)) => Err(e),
            (Some(id), Ok(patch)) => update(tx, principal, id, patch).await,
        };
        match result {
            Ok(property) => updated.push(property),
            Err(e) => errors.absorb(&prefix, e)?,
        }
    }
    errors.finish(|| Some(()))?;
    let ids: Vec<Uuid> = updated.iter().map(|p| p.id).collect();
    let entry = principal
        .audit(AuditAction::BulkOperation)
        .object_type("property")
        .after(&serde_json::json!({ "operation": "bulk_price_update", "properties": ids }));
    audit::record(tx, entry).await?;
    Ok(updated)
}
