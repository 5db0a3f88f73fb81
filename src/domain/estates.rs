//! Estates: the top of a company's inventory. Every function runs on the caller's
//! [`TenantTx`], so it only ever sees the caller's own company.

use crate::billing::limits;
use crate::billing::plans::Resource;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page};
use super::values::{Money, required, text};
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::error::{AppError, FieldErrors};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EstateStatus {
    Planning,
    Active,
    SoldOut,
    Archived,
}

impl EstateStatus {
    pub const ALL: [EstateStatus; 4] =
        [Self::Planning, Self::Active, Self::SoldOut, Self::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planning => "planning",
            Self::Active => "active",
            Self::SoldOut => "sold_out",
            Self::Archived => "archived",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| "must be one of planning, active, sold_out, archived".to_string())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Estate {
    pub id: Uuid,
    pub name: String,
    pub location: String,
    pub description: String,
    pub status: EstateStatus,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, location, description, status, created_by, created_at, updated_at";
const LISTING: Listing<Estate> = Listing {
    columns: COLUMNS,
    column_count: 8,
    from: "estates",
    noun: "estate",
    from_row: Estate::from_row,
};

impl Estate {
    fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(Estate {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            location: row.try_get(2)?,
            description: row.try_get(3)?,
            status: EstateStatus::parse(row.try_get(4)?).map_err(AppError::Internal)?,
            created_by: row.try_get(5)?,
            created_at: row.try_get(6)?,
            updated_at: row.try_get(7)?,
        })
    }
}

const NAME_MAX: usize = 200;
const LOCATION_MAX: usize = 300;
const DESCRIPTION_MAX: usize = 5000;

fn parse_name(raw: &str) -> Result<String, String> {
    text(raw, 1, NAME_MAX)
}
fn parse_location(raw: &str) -> Result<String, String> {
    text(raw, 0, LOCATION_MAX)
}
fn parse_description(raw: &str) -> Result<String, String> {
    text(raw, 0, DESCRIPTION_MAX)
}

#[derive(Debug, Clone)]
pub struct NewEstate {
    pub name: String,
    pub location: String,
    pub description: String,
    pub status: EstateStatus,
}

impl NewEstate {
    pub fn parse(
        name: Option<&str>,
        location: Option<&str>,
        description: Option<&str>,
        status: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let name = errors.check("name", required(name).and_then(parse_name));
        let location = errors.check("location", parse_location(location.unwrap_or("")));
        let description = errors.check("description", parse_description(description.unwrap_or("")));
        let status = errors.check(
            "status",
            status.map_or(Ok(EstateStatus::Planning), EstateStatus::parse),
        );
        errors.finish(|| {
            Some(NewEstate {
                name: name?,
                location: location?,
                description: description?,
                status: status?,
            })
        })
    }
}

/// A partial update. A field given as JSON `null` is an error for `name` and `status`
/// (they cannot be empty) and clears `location` and `description`.
#[derive(Debug, Clone, Default)]
pub struct EstatePatch {
    pub name: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub status: Option<EstateStatus>,
}

/// A patch field: absent, explicitly null, or a value.
pub enum PatchField<'a> {
    Absent,
    Null,
    Value(&'a str),
}

impl EstatePatch {
    pub fn parse(
        name: PatchField<'_>,
        location: PatchField<'_>,
        description: PatchField<'_>,
        status: PatchField<'_>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let not_null = |f: PatchField<'_>, parse: fn(&str) -> Result<String, String>| match f {
            PatchField::Absent => Ok(None),
            PatchField::Null => Err("must not be null".to_string()),
            PatchField::Value(v) => parse(v).map(Some),
        };
        let clearable = |f: PatchField<'_>, parse: fn(&str) -> Result<String, String>| match f {
            PatchField::Absent => Ok(None),
            PatchField::Null => Ok(Some(String::new())),
            PatchField::Value(v) => parse(v).map(Some),
        };
        let name = errors.check("name", not_null(name, parse_name));
        let location = errors.check("location", clearable(location, parse_location));
        let description = errors.check("description", clearable(description, parse_description));
        let status = errors.check(
            "status",
            match status {
                PatchField::Absent => Ok(None),
                PatchField::Null => Err("must not be null".to_string()),
                PatchField::Value(v) => EstateStatus::parse(v).map(Some),
            },
        );
        errors.finish(|| {
            Some(EstatePatch {
                name: name?,
                location: location?,
                description: description?,
                status: status?,
            })
        })
    }
}

/// Filters of `GET /estates`, already parsed.
#[derive(Debug, Clone)]
pub struct EstateFilter {
    pub search: Option<String>,
    pub status: Option<EstateStatus>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 5] = ["name", "location", "status", "created_at", "updated_at"];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: true,
};

/// Lists estates: one statement per page (see [`Filters::page_sql`]).
pub async fn list(tx: &mut TenantTx, filter: &EstateFilter) -> Result<Page<Estate>, AppError> {
    let mut filters = Filters::default();
    if let Some(search) = &filter.search {
        filters.and(
            "search @@ websearch_to_tsquery('english', ?)",
            search.clone(),
        );
    }
    if let Some(status) = filter.status {
        filters.and("status = ?", status.as_str());
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

/// Figures of one estate: its properties by status and the money of their allocations.
#[derive(Debug, Clone)]
pub struct EstateStatistics {
    pub estate_id: Uuid,
    pub properties_total: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub sold: i64,
    /// Total price of the estate's allocations that are not cancelled.
    pub allocated_value: Money,
    /// Paid so far on those allocations.
    pub amount_collected: Money,
    /// Still to be paid on active allocations.
    pub outstanding: Money,
}

pub async fn statistics(tx: &mut TenantTx, id: Uuid) -> Result<EstateStatistics, AppError> {
    get(tx, id).await?;
    let row = tx
        .query(
            "SELECT
                 (SELECT count(*) FROM properties WHERE estate_id = $1),
                 (SELECT count(*) FILTER (WHERE status = 'available') FROM properties WHERE estate_id = $1),
                 (SELECT count(*) FILTER (WHERE status = 'reserved') FROM properties WHERE estate_id = $1),
                 (SELECT count(*) FILTER (WHERE status = 'allocated') FROM properties WHERE estate_id = $1),
                 (SELECT count(*) FILTER (WHERE status = 'sold') FROM properties WHERE estate_id = $1),
                 coalesce(sum(a.total_price), 0),
                 coalesce(sum(a.amount_paid), 0),
                 coalesce(sum(a.balance) FILTER (WHERE a.status = 'active'), 0)
             FROM allocations a JOIN properties p ON p.id = a.property_id
             WHERE p.estate_id = $1 AND a.status <> 'cancelled'",
            &[&id],
        )
        .await?;
    let row = row.first().ok_or(AppError::NotFound("estate"))?;
    Ok(EstateStatistics {
        estate_id: id,
        properties_total: row.try_get(0)?,
        available: row.try_get(1)?,
        reserved: row.try_get(2)?,
        allocated: row.try_get(3)?,
        sold: row.try_get(4)?,
        allocated_value: Money::from_decimal(row.try_get(5)?),
        amount_collected: Money::from_decimal(row.try_get(6)?),
        outstanding: Money::from_decimal(row.try_get(7)?),
    })
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Estate, AppError> {
    LISTING.find(tx, id, false).await
}

pub async fn create(
    tx: &mut TenantTx,
    principal: &Principal,
    new: NewEstate,
) -> Result<Estate, AppError> {
    limits::reserve(tx, Resource::Estates, 1).await?;
    let sql = format!(
        "INSERT INTO estates (id, name, location, description, status, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    let row = tx
        .query(
            &sql,
            &[
                &Uuid::now_v7(),
                &new.name,
                &new.location,
                &new.description,
                &new.status.as_str(),
                &principal.user_id,
            ],
        )
        .await?;
    let row = row
        .first()
        .ok_or_else(|| AppError::Internal("INSERT … RETURNING gave no row".into()))?;
    let estate = Estate::from_row(row)?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("estate", estate.id)
        .after(&estate);
    audit::record(tx, entry).await?;
    Ok(estate)
}

async fn get_for_update(tx: &mut TenantTx, id: Uuid) -> Result<Estate, AppError> {
    LISTING.find(tx, id, true).await
}

pub async fn update(
    tx: &mut TenantTx,
    principal: &Principal,
    id: Uuid,
    patch: EstatePatch,
) -> Result<Estate, AppError> {
    let current = get_for_update(tx, id).await?;
    super::may_change(principal, current.created_by, "estates")?;
    let sql = format!(
        "UPDATE estates SET
             name = coalesce($2, name),
             location = coalesce($3, location),
             description = coalesce($4, description),
             status = coalesce($5, status),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &id,
                &patch.name,
                &patch.location,
                &patch.description,
                &patch.status.map(EstateStatus::as_str),
            ],
        )
        .await?;
    let row = rows.first().ok_or(AppError::NotFound("estate"))?;
    let updated = Estate::from_row(row)?;
    let entry = principal
        .audit(AuditAction::Update)
        .object("estate", id)
        .before(&current)
        .after(&updated);
    audit::record(tx, entry).await?;
    Ok(updated)
}

pub async fn delete(tx: &mut TenantTx, principal: &Principal, id: Uuid) -> Result<(), AppError> {
    let current = get_for_update(tx, id).await?;
    super::may_change(principal, current.created_by, "estates")?;
    let has_properties = tx
        .query_opt(
            "SELECT 1 FROM properties WHERE estate_id = $1 LIMIT 1",
            &[&id],
        )
        .await?;
    if has_properties.is_some() {
        return Err(AppError::Conflict(
            "the estate has properties; delete or move them first".into(),
        ));
    }
    tx.execute("DELETE FROM estates WHERE id = $1", &[&id])
        .await?;
    let entry = principal
        .audit(AuditAction::Delete)
        .object("estate", id)
        .before(&current);
    audit::record(tx, entry).await
}
