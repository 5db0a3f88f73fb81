//! Transactions: the payments recorded on allocations, listed, summed and exported.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio_postgres::Row;
use uuid::Uuid;

use super::allocations::{Payment, PaymentMethod};
use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page};
use super::values::Money;
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::db::tenancy::TenantTx;
use crate::error::AppError;

const LISTING: Listing<Payment> = Listing {
    columns: super::allocations::PAYMENT_COLUMNS,
    column_count: 8,
    from: "payments",
    noun: "payment",
    from_row: Payment::from_row,
};

#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub allocation_id: Option<Uuid>,
    pub method: Option<PaymentMethod>,
    pub paid_after: Option<DateTime<Utc>>,
    pub paid_before: Option<DateTime<Utc>>,
    pub min_amount: Option<Money>,
    pub max_amount: Option<Money>,
    pub ids: Option<Vec<Uuid>>,
}

impl TransactionFilter {
    fn filters(&self) -> Filters {
        let mut f = Filters::default();
        if let Some(allocation) = self.allocation_id {
            f.and("allocation_id = ?", allocation);
        }
        if let Some(method) = self.method {
            f.and("method = ?", method.as_str());
        }
        if let Some(after) = self.paid_after {
            f.and("paid_at >= ?", after);
        }
        if let Some(before) = self.paid_before {
            f.and("paid_at < ?", before);
        }
        if let Some(min) = self.min_amount {
            f.and("amount >= ?", min.decimal());
        }
        if let Some(max) = self.max_amount {
            f.and("amount <= ?", max.decimal());
        }
        if let Some(ids) = &self.ids {
            f.and("id = ANY(?)", ids.clone());
        }
        f
    }
}

pub const ORDERING_FIELDS: [&str; 3] = ["paid_at", "amount", "created_at"];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "paid_at",
    descending: true,
};

pub async fn list(
    tx: &mut TenantTx,
    filter: &TransactionFilter,
    ordering: &Ordering,
    page: PageRequest,
) -> Result<Page<Payment>, AppError> {
    fetch_page(tx, &LISTING, &filter.filters(), ordering, page).await
}

/// A count and a sum of payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub key: String,
    pub count: i64,
    pub amount: Money,
}

#[derive(Debug, Clone)]
pub struct Statistics {
    pub count: i64,
    pub amount: Money,
    /// By calendar month of payment (UTC), `YYYY-MM`, oldest first.
    pub by_month: Vec<Total>,
    /// By payment method, alphabetical.
    pub by_method: Vec<Total>,
}

fn totals(rows: &[Row]) -> Result<Vec<Total>, AppError> {
    rows.iter()
        .map(|r| {
            Ok(Total {
                key: r.try_get(0)?,
                count: r.try_get(1)?,
                amount: Money::from_decimal(r.try_get(2)?),
            })
        })
        .collect()
}

pub async fn statistics(
    tx: &mut TenantTx,
    filter: &TransactionFilter,
) -> Result<Statistics, AppError> {
    let filters = filter.filters();
    let grouped = |key: &str| {
        format!(
            "SELECT {key}, count(*), coalesce(sum(amount), 0) FROM payments WHERE true{} GROUP BY 1 ORDER BY 1",
            filters.conditions()
        )
    };
    let by_month = tx
        .query(
            &grouped("to_char(date_trunc('month', paid_at AT TIME ZONE 'UTC'), 'YYYY-MM')"),
            &filters.params(),
        )
        .await?;
    let by_method = tx.query(&grouped("method"), &filters.params()).await?;
    let by_month = totals(&by_month)?;
    let by_method = totals(&by_method)?;
    let count = by_method.iter().map(|t| t.count).sum();
    let amount = Money::from_decimal(by_method.iter().map(|t| t.amount.decimal()).sum());
    Ok(Statistics {
        count,
        amount,
        by_month,
        by_method,
    })
}

/// The CSV header of an export.
pub const EXPORT_COLUMNS: [&str; 10] = [
    "payment_id",
    "paid_at",
    "amount",
    "method",
    "reference",
    "allocation_id",
    "estate",
    "plot_number",
    "client_name",
    "client_email",
];

/// A text cell that a spreadsheet would take for a formula (`=`, `+`, `-`, `@`) is prefixed
/// with `'`, so an export can never run code where it is opened.
fn neutral(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

fn csv_record(row: &Row) -> Result<[String; 10], AppError> {
    let paid_at: DateTime<Utc> = row.try_get(1)?;
    Ok([
        row.try_get::<_, Uuid>(0)?.to_string(),
        paid_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Money::from_decimal(row.try_get(2)?).to_string(),
        row.try_get::<_, String>(3)?,
        neutral(row.try_get(4)?),
        row.try_get::<_, Uuid>(5)?.to_string(),
        neutral(row.try_get(6)?),
        neutral(row.try_get(7)?),
        neutral(row.try_get(8)?),
        neutral(row.try_get(9)?),
    ])
}

/// Rows encoded per chunk of the response body.
const ROWS_PER_CHUNK: usize = 500;

/// Streams the matching payments as CSV (RFC 4180 quoting), oldest first, header first.
/// The export is recorded in the audit log; nothing is held in memory beyond one chunk.
pub async fn export_csv(
    mut tx: TenantTx,
    principal: &Principal,
    filter: &TransactionFilter,
) -> Result<impl Stream<Item = Result<Vec<u8>, AppError>> + Send + 'static + use<>, AppError> {
    let filters = filter.filters();
    let entry = principal
        .audit(AuditAction::Export)
        .object_type("transaction")
        .after(&serde_json::json!({ "format": "csv" }));
    audit::record(&mut tx, entry).await?;
    let sql = format!(
        "SELECT p.id, p.paid_at, p.amount, p.method, p.reference, p.allocation_id,
                e.name, pr.plot_number, c.full_name, c.email
         FROM (SELECT * FROM payments WHERE true{}) p
         JOIN allocations a ON a.id = p.allocation_id
         JOIN properties pr ON pr.id = a.property_id
         JOIN estates e ON e.id = pr.estate_id
         JOIN clients c ON c.id = a.client_id
         ORDER BY p.paid_at, p.id",
        filters.conditions()
    );
    let rows = tx.into_stream(&sql, filters.into_params()).await?;
    let header = encode(&[EXPORT_COLUMNS.map(String::from)]);
    let body = rows.chunks(ROWS_PER_CHUNK).map(|chunk| {
        let records = chunk
            .into_iter()
            .map(|row| csv_record(&row?))
            .collect::<Result<Vec<_>, AppError>>()?;
        encode(&records)
    });
    Ok(futures::stream::once(async move { header }).chain(body))
}

fn encode(records: &[[String; 10]]) -> Result<Vec<u8>, AppError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in records {
        writer
            .write_record(record)
            .map_err(|e| AppError::Internal(format!("csv: {e}")))?;
    }
    writer
        .into_inner()
        .map_err(|e| AppError::Internal(format!("csv: {e}")))
}
