//! Allocations of properties to clients, and the payments made on them (SPEC §4).
//!
//! - A property is allocated at most once at a time: the property row is locked first,
//!   so concurrent requests queue and all but one answer 409; a partial unique index
//!   (one non-cancelled allocation per property) backs this up.
//! - A payment may not exceed the balance (422). The payment that clears the balance
//!   completes the allocation and marks the property sold.
//! - Confirmation and receipt e-mails are queued in the same transaction (outbox).

use crate::billing::limits;
use crate::billing::plans::Feature;
use chrono::{DateTime, Utc};
use estate_jobs::{AllocationConfirmationEmail, PaymentReceivedEmail};
use tokio_postgres::Row;
use uuid::Uuid;

use super::clients;
use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page};
use super::properties::{self, PropertyStatus};
use super::values::{Money, required, text};
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::error::{AppError, FieldErrors, is_unique_violation};
use crate::outbox;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentPlan {
    Outright,
    Installment,
}

impl PaymentPlan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outright => "outright",
            Self::Installment => "installment",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "outright" => Ok(Self::Outright),
            "installment" => Ok(Self::Installment),
            _ => Err("must be outright or installment".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    Active,
    Completed,
    Cancelled,
}

impl AllocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "active" => Ok(Self::Active),
            "completed" => Ok(Self::Completed),
            "cancelled" => Ok(Self::Cancelled),
            _ => Err("must be one of active, completed, cancelled".into()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Allocation {
    pub id: Uuid,
    pub property_id: Uuid,
    pub client_id: Uuid,
    pub payment_plan: PaymentPlan,
    pub total_price: Money,
    pub amount_paid: Money,
    pub balance: Money,
    pub status: AllocationStatus,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, property_id, client_id, payment_plan, total_price, amount_paid, balance, status, created_by, created_at, updated_at";

impl Allocation {
    fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(Allocation {
            id: row.try_get(0)?,
            property_id: row.try_get(1)?,
            client_id: row.try_get(2)?,
            payment_plan: PaymentPlan::parse(row.try_get(3)?).map_err(AppError::Internal)?,
            total_price: Money::from_decimal(row.try_get(4)?),
            amount_paid: Money::from_decimal(row.try_get(5)?),
            balance: Money::from_decimal(row.try_get(6)?),
            status: AllocationStatus::parse(row.try_get(7)?).map_err(AppError::Internal)?,
            created_by: row.try_get(8)?,
            created_at: row.try_get(9)?,
            updated_at: row.try_get(10)?,
        })
    }
}

const LISTING: Listing<Allocation> = Listing {
    columns: COLUMNS,
    column_count: 11,
    from: "allocations",
    noun: "allocation",
    from_row: Allocation::from_row,
};

#[derive(Debug, Clone)]
pub struct NewAllocation {
    pub property_id: Uuid,
    pub client_id: Uuid,
    pub payment_plan: PaymentPlan,
    /// The property's price when not given.
    pub total_price: Option<Money>,
}

impl NewAllocation {
    pub fn parse(
        property_id: Option<Uuid>,
        client_id: Option<Uuid>,
        payment_plan: Option<&str>,
        total_price: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let property_id = errors.check("property_id", required(property_id));
        let client_id = errors.check("client_id", required(client_id));
        let payment_plan = errors.check(
            "payment_plan",
            required(payment_plan).and_then(PaymentPlan::parse),
        );
        let total_price = errors.check("total_price", total_price.map(Money::parse).transpose());
        errors.finish(|| {
            Some(NewAllocation {
                property_id: property_id?,
                client_id: client_id?,
                payment_plan: payment_plan?,
                total_price: total_price?,
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    BankTransfer,
    Card,
    Stripe,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cash => "cash",
            Self::BankTransfer => "bank_transfer",
            Self::Card => "card",
            Self::Stripe => "stripe",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "cash" => Ok(Self::Cash),
            "bank_transfer" => Ok(Self::BankTransfer),
            "card" => Ok(Self::Card),
            "stripe" => Ok(Self::Stripe),
            _ => Err("must be one of cash, bank_transfer, card, stripe".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewPayment {
    pub amount: Money,
    pub method: PaymentMethod,
    pub reference: String,
    pub paid_at: Option<DateTime<Utc>>,
}

impl NewPayment {
    pub fn parse(
        amount: Option<&str>,
        method: Option<&str>,
        reference: Option<&str>,
        paid_at: Result<Option<DateTime<Utc>>, String>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let amount = errors.check("amount", required(amount).and_then(Money::parse_positive));
        let method = errors.check("method", required(method).and_then(PaymentMethod::parse));
        let reference = errors.check("reference", text(reference.unwrap_or(""), 0, 200));
        let paid_at = errors.check("paid_at", paid_at);
        if paid_at
            .flatten()
            .is_some_and(|t| t > Utc::now() + chrono::Duration::minutes(5))
        {
            errors.add("paid_at", "must not be in the future");
        }
        errors.finish(|| {
            Some(NewPayment {
                amount: amount?,
                method: method?,
                reference: reference?,
                paid_at: paid_at?,
            })
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Payment {
    pub id: Uuid,
    pub allocation_id: Uuid,
    pub amount: Money,
    pub method: PaymentMethod,
    pub reference: String,
    pub paid_at: DateTime<Utc>,
    pub recorded_by: Uuid,
    pub created_at: DateTime<Utc>,
}

pub(crate) const PAYMENT_COLUMNS: &str =
    "id, allocation_id, amount, method, reference, paid_at, recorded_by, created_at";

impl Payment {
    pub(crate) fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(Payment {
            id: row.try_get(0)?,
            allocation_id: row.try_get(1)?,
            amount: Money::from_decimal(row.try_get(2)?),
            method: PaymentMethod::parse(row.try_get(3)?).map_err(AppError::Internal)?,
            reference: row.try_get(4)?,
            paid_at: row.try_get(5)?,
            recorded_by: row.try_get(6)?,
            created_at: row.try_get(7)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AllocationFilter {
    pub status: Option<AllocationStatus>,
    pub property_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    pub estate_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 5] = [
    "created_at",
    "updated_at",
    "total_price",
    "balance",
    "status",
];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: true,
};

pub async fn list(
    tx: &mut TenantTx,
    filter: &AllocationFilter,
) -> Result<Page<Allocation>, AppError> {
    let mut filters = Filters::default();
    if let Some(status) = filter.status {
        filters.and("status = ?", status.as_str());
    }
    if let Some(property) = filter.property_id {
        filters.and("property_id = ?", property);
    }
    if let Some(client) = filter.client_id {
        filters.and("client_id = ?", client);
    }
    if let Some(estate) = filter.estate_id {
        filters.and(
            "property_id IN (SELECT id FROM properties WHERE estate_id = ?)",
            estate,
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

async fn find(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Allocation, AppError> {
    LISTING.find(tx, id, lock).await
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Allocation, AppError> {
    find(tx, id, false).await
}

fn field_error(field: &str, message: &str) -> AppError {
    let mut errors = FieldErrors::default();
    errors.add(field, message);
    AppError::Validation(errors)
}

fn already_allocated() -> AppError {
    AppError::Conflict("the property is already allocated".into())
}

/// Allocates a property to a client.
pub async fn create(
    tx: &mut TenantTx,
    principal: &Principal,
    new: NewAllocation,
) -> Result<Allocation, AppError> {
    if new.payment_plan == PaymentPlan::Installment {
        limits::require_feature(tx, Feature::InstallmentPlans).await?;
    }
    // Lock first: concurrent allocations of one property queue here.
    let property = match properties::lock(tx, new.property_id).await {
        Err(AppError::NotFound(_)) => return Err(field_error("property_id", "no such property")),
        other => other?,
    };
    if !matches!(
        property.status,
        PropertyStatus::Available | PropertyStatus::Reserved
    ) {
        return Err(already_allocated());
    }
    let client = match clients::get(tx, new.client_id).await {
        Err(AppError::NotFound(_)) => return Err(field_error("client_id", "no such client")),
        other => other?,
    };
    let total = new.total_price.unwrap_or(property.price);
    let sql = format!(
        "INSERT INTO allocations (id, property_id, client_id, payment_plan, total_price, status, created_by)
         VALUES ($1, $2, $3, $4, $5, 'active', $6) RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &Uuid::now_v7(),
                &property.id,
                &client.id,
                &new.payment_plan.as_str(),
                &total.decimal(),
                &principal.user_id,
            ],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "allocations_one_per_property") {
                already_allocated()
            } else {
                AppError::from(e)
            }
        })?;
    let allocation = Allocation::from_row(rows.first().ok_or(AppError::NotFound("allocation"))?)?;
    properties::set_status(tx, property.id, PropertyStatus::Allocated).await?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("allocation", allocation.id)
        .after(&allocation);
    audit::record(tx, entry).await?;
    if !client.email.is_empty() && limits::has_feature(tx, Feature::EmailNotifications).await? {
        let confirmation = AllocationConfirmationEmail {
            company_id: principal.company.0,
            allocation_id: allocation.id,
            client_email: client.email.clone(),
            client_name: client.full_name.clone(),
            plot_number: property.plot_number.clone(),
            total_price: allocation.total_price.to_string(),
        };
        outbox::enqueue(tx, &confirmation).await?;
    }
    Ok(allocation)
}

/// Records a payment on an allocation and returns the allocation as it now stands.
pub async fn record_payment(
    tx: &mut TenantTx,
    principal: &Principal,
    id: Uuid,
    payment: NewPayment,
) -> Result<(Allocation, Payment), AppError> {
    let current = find(tx, id, true).await?;
    super::may_change(principal, current.created_by, "allocations")?;
    if current.status != AllocationStatus::Active {
        return Err(AppError::Conflict(format!(
            "the allocation is {}; it takes no payments",
            current.status.as_str()
        )));
    }
    if payment.amount > current.balance {
        return Err(field_error(
            "amount",
            &format!("must not exceed the balance of {}", current.balance),
        ));
    }
    let sql = format!(
        "INSERT INTO payments (id, allocation_id, amount, method, reference, paid_at, recorded_by)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7) RETURNING {PAYMENT_COLUMNS}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &Uuid::now_v7(),
                &id,
                &payment.amount.decimal(),
                &payment.method.as_str(),
                &payment.reference,
                &payment.paid_at,
                &principal.user_id,
            ],
        )
        .await?;
    let recorded = Payment::from_row(rows.first().ok_or(AppError::NotFound("payment"))?)?;
    let sql = format!(
        "UPDATE allocations SET amount_paid = amount_paid + $2,
                status = CASE WHEN amount_paid + $2 = total_price THEN 'completed' ELSE status END,
                updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let rows = tx.query(&sql, &[&id, &payment.amount.decimal()]).await?;
    let updated = Allocation::from_row(rows.first().ok_or(AppError::NotFound("allocation"))?)?;
    if updated.status == AllocationStatus::Completed {
        properties::set_status(tx, updated.property_id, PropertyStatus::Sold).await?;
    }
    let entry = principal
        .audit(AuditAction::PaymentRecorded)
        .object("allocation", id)
        .before(&current)
        .after(&serde_json::json!({ "allocation": &updated, "payment": &recorded }));
    audit::record(tx, entry).await?;
    let client = clients::get(tx, updated.client_id).await?;
    if !client.email.is_empty() && limits::has_feature(tx, Feature::EmailNotifications).await? {
        let receipt = PaymentReceivedEmail {
            company_id: principal.company.0,
            allocation_id: id,
            payment_id: recorded.id,
            client_email: client.email,
            client_name: client.full_name,
            amount: recorded.amount.to_string(),
            balance: updated.balance.to_string(),
        };
        outbox::enqueue(tx, &receipt).await?;
    }
    Ok((updated, recorded))
}

/// The payments on an allocation, oldest first.
pub async fn payment_history(tx: &mut TenantTx, id: Uuid) -> Result<Vec<Payment>, AppError> {
    find(tx, id, false).await?;
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE allocation_id = $1 ORDER BY paid_at, id"
    );
    let rows = tx.query(&sql, &[&id]).await?;
    rows.iter().map(Payment::from_row).collect()
}

/// Most allocations one bulk request may carry.
pub const MAX_BULK_ITEMS: usize = 100;

/// Makes many allocations, all or none: any item that fails fails the whole request with
/// every item's errors, keyed `allocations[i]`, and nothing changes.
pub async fn bulk_allocate(
    tx: &mut TenantTx,
    principal: &Principal,
    items: Vec<Result<NewAllocation, AppError>>,
) -> Result<Vec<Allocation>, AppError> {
    let mut errors = FieldErrors::default();
    if items.is_empty() || items.len() > MAX_BULK_ITEMS {
        errors.add(
            "allocations",
            format!("must hold 1 to {MAX_BULK_ITEMS} items"),
        );
        return Err(AppError::Validation(errors));
    }
    let mut made = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let result = match item {
            Ok(new) => create(tx, principal, new).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(allocation) => made.push(allocation),
            Err(e) => errors.absorb(&format!("allocations[{i}]"), e)?,
        }
    }
    errors.finish(|| Some(()))?;
    let ids: Vec<Uuid> = made.iter().map(|a| a.id).collect();
    let entry = principal
        .audit(AuditAction::BulkOperation)
        .object_type("allocation")
        .after(&serde_json::json!({ "operation": "bulk_allocate", "allocations": ids }));
    audit::record(tx, entry).await?;
    Ok(made)
}
