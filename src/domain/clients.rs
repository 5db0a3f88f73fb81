//! Clients: the buyers properties are allocated to.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page};
use super::values::{EmailAddress, required, text};
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::domain::estates::PatchField;
use crate::error::{AppError, FieldErrors};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Client {
    pub id: Uuid,
    pub full_name: String,
    pub email: String,
    pub phone: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, full_name, email, phone, created_by, created_at, updated_at";

impl Client {
    fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(Client {
            id: row.try_get(0)?,
            full_name: row.try_get(1)?,
            email: row.try_get(2)?,
            phone: row.try_get(3)?,
            created_by: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
        })
    }
}

const LISTING: Listing<Client> = Listing {
    columns: COLUMNS,
    column_count: 7,
    from: "clients",
    noun: "client",
    from_row: Client::from_row,
};

fn parse_full_name(raw: &str) -> Result<String, String> {
    text(raw, 1, 200)
}

/// Empty, or an e-mail address.
fn parse_email(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        Ok(String::new())
    } else {
        EmailAddress::parse(raw).map(|e| e.as_str().to_string())
    }
}

/// Empty, or 5–30 characters of digits, spaces and `+ - ( ) .`.
fn parse_phone(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if s.is_empty() {
        Ok(String::new())
    } else if s.len() <= 30
        && digits >= 5
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        Ok(s.to_string())
    } else {
        Err("must be a phone number: digits, spaces and + - ( ) .".into())
    }
}

#[derive(Debug, Clone)]
pub struct NewClient {
    pub full_name: String,
    pub email: String,
    pub phone: String,
}

impl NewClient {
    pub fn parse(
        full_name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let full_name = errors.check("full_name", required(full_name).and_then(parse_full_name));
        let email = errors.check("email", parse_email(email.unwrap_or("")));
        let phone = errors.check("phone", parse_phone(phone.unwrap_or("")));
        errors.finish(|| {
            Some(NewClient {
                full_name: full_name?,
                email: email?,
                phone: phone?,
            })
        })
    }
}

/// A partial update; `null` clears e-mail and phone, and is refused for the name.
#[derive(Debug, Clone, Default)]
pub struct ClientPatch {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl ClientPatch {
    pub fn parse(
        full_name: PatchField<'_>,
        email: PatchField<'_>,
        phone: PatchField<'_>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let full_name = errors.check(
            "full_name",
            match full_name {
                PatchField::Absent => Ok(None),
                PatchField::Null => Err("must not be null".to_string()),
                PatchField::Value(v) => parse_full_name(v).map(Some),
            },
        );
        let clearable = |f: PatchField<'_>, parse: fn(&str) -> Result<String, String>| match f {
            PatchField::Absent => Ok(None),
            PatchField::Null => Ok(Some(String::new())),
            PatchField::Value(v) => parse(v).map(Some),
        };
        let email = errors.check("email", clearable(email, parse_email));
        let phone = errors.check("phone", clearable(phone, parse_phone));
        errors.finish(|| {
            Some(ClientPatch {
                full_name: full_name?,
                email: email?,
                phone: phone?,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct ClientFilter {
    pub search: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 4] = ["full_name", "email", "created_at", "updated_at"];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: true,
};

pub async fn list(tx: &mut TenantTx, filter: &ClientFilter) -> Result<Page<Client>, AppError> {
    let mut filters = Filters::default();
    if let Some(search) = &filter.search {
        filters.and(
            "search @@ websearch_to_tsquery('simple', ?)",
            search.clone(),
        );
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

async fn find(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Client, AppError> {
    LISTING.find(tx, id, lock).await
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Client, AppError> {
    find(tx, id, false).await
}

pub async fn create(
    tx: &mut TenantTx,
    principal: &Principal,
    new: NewClient,
) -> Result<Client, AppError> {
    let sql = format!(
        "INSERT INTO clients (id, full_name, email, phone, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &Uuid::now_v7(),
                &new.full_name,
                &new.email,
                &new.phone,
                &principal.user_id,
            ],
        )
        .await?;
    let client = Client::from_row(rows.first().ok_or(AppError::NotFound("client"))?)?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("client", client.id)
        .after(&client);
    audit::record(tx, entry).await?;
    Ok(client)
}

pub async fn update(
    tx: &mut TenantTx,
    principal: &Principal,
    id: Uuid,
    patch: ClientPatch,
) -> Result<Client, AppError> {
    let current = find(tx, id, true).await?;
    super::may_change(principal, current.created_by, "clients")?;
    let sql = format!(
        "UPDATE clients SET full_name = coalesce($2, full_name), email = coalesce($3, email),
                phone = coalesce($4, phone), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(&sql, &[&id, &patch.full_name, &patch.email, &patch.phone])
        .await?;
    let updated = Client::from_row(rows.first().ok_or(AppError::NotFound("client"))?)?;
    let entry = principal
        .audit(AuditAction::Update)
        .object("client", id)
        .before(&current)
        .after(&updated);
    audit::record(tx, entry).await?;
    Ok(updated)
}

pub async fn delete(tx: &mut TenantTx, principal: &Principal, id: Uuid) -> Result<(), AppError> {
    let current = find(tx, id, true).await?;
    super::may_change(principal, current.created_by, "clients")?;
    let allocated = tx
        .query_opt(
            "SELECT 1 FROM allocations WHERE client_id = $1 LIMIT 1",
            &[&id],
        )
        .await?;
    if allocated.is_some() {
        return Err(AppError::Conflict(
            "the client has allocations; it cannot be deleted".into(),
        ));
    }
    tx.execute("DELETE FROM clients WHERE id = $1", &[&id])
        .await?;
    let entry = principal
        .audit(AuditAction::Delete)
        .object("client", id)
        .before(&current);
    audit::record(tx, entry).await
}
