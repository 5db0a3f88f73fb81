//! `/transactions`: payments across all allocations — list, statistics, CSV export.

use std::sync::Arc;

use futures::StreamExt;
use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::allocations::PaymentBody;
use super::json_body::JsonBody;
use super::listing::{RawListParams, links, parse_time};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::types::DecimalString;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::allocations::PaymentMethod;
use crate::domain::listing::parse_ids;
use crate::domain::transactions::{
    self, DEFAULT_ORDERING, ORDERING_FIELDS, Total, TransactionFilter,
};
use crate::domain::values::Money;
use crate::error::{AppError, FieldErrors};

pub struct TransactionsApi;

#[derive(Object, serde::Serialize)]
pub struct TransactionPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<PaymentBody>,
}

#[derive(Object)]
pub struct TotalBody {
    /// The month (`YYYY-MM`, UTC) or the payment method.
    pub key: String,
    pub count: i64,
    pub amount: DecimalString,
}

impl From<Total> for TotalBody {
    fn from(t: Total) -> Self {
        TotalBody {
            key: t.key,
            count: t.count,
            amount: DecimalString(t.amount.to_string()),
        }
    }
}

#[derive(Object)]
pub struct TransactionStatistics {
    pub count: i64,
    pub amount: DecimalString,
    /// Oldest month first.
    pub by_month: Vec<TotalBody>,
    pub by_method: Vec<TotalBody>,
}

#[derive(ApiResponse)]
pub enum CsvExport {
    /// The payments as CSV (RFC 4180), streamed: header row first, oldest payment first.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// The filters of the `/transactions` endpoints, as sent.
#[derive(Default)]
struct TransactionQuery {
    allocation_id: Option<Uuid>,
    method: Option<String>,
    paid_after: Option<String>,
    paid_before: Option<String>,
    min_amount: Option<String>,
    max_amount: Option<String>,
    ids: Option<String>,
}

impl TransactionQuery {
    fn parse(self, errors: &mut FieldErrors) -> Option<TransactionFilter> {
        let method = errors.check(
            "method",
            self.method.as_deref().map(PaymentMethod::parse).transpose(),
        );
        let paid_after = errors.check("paid_after", parse_time(self.paid_after.as_deref()));
        let paid_before = errors.check("paid_before", parse_time(self.paid_before.as_deref()));
        let min_amount = errors.check(
            "min_amount",
            self.min_amount.as_deref().map(Money::parse).transpose(),
        );
        let max_amount = errors.check(
            "max_amount",
            self.max_amount.as_deref().map(Money::parse).transpose(),
        );
        let ids = errors.check("ids", self.ids.as_deref().map(parse_ids).transpose());
        Some(TransactionFilter {
            allocation_id: self.allocation_id,
            method: method?,
            paid_after: paid_after?,
            paid_before: paid_before?,
            min_amount: min_amount?,
            max_amount: max_amount?,
            ids: ids?,
        })
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Transactions")]
impl TransactionsApi {
    /// List payments. `ordering`: paid_at, amount, created_at (`-` for descending; default
    /// `-paid_at`).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/transactions", method = "get")]
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
        /// Only payments on this allocation.
        allocation_id: Query<Option<Uuid>>,
        /// Only payments by this method.
        method: Query<Option<String>>,
        /// Only payments made at or after this RFC 3339 time.
        paid_after: Query<Option<String>>,
        /// Only payments made before this RFC 3339 time.
        paid_before: Query<Option<String>>,
        /// Only payments of at least this amount (decimal string).
        min_amount: Query<Option<String>>,
        /// Only payments of at most this amount (decimal string).
        max_amount: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<TransactionPage>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let common = RawListParams {
            page: page.0,
            page_size: page_size.0,
            ordering: ordering.0,
            created_after: None,
            created_before: None,
            ids: None,
            search: None,
        }
        .parse(&mut errors, &ORDERING_FIELDS, DEFAULT_ORDERING);
        let filter = TransactionQuery {
            allocation_id: allocation_id.0,
            method: method.0,
            paid_after: paid_after.0,
            paid_before: paid_before.0,
            min_amount: min_amount.0,
            max_amount: max_amount.0,
            ids: ids.0,
        }
        .parse(&mut errors);
        let (common, filter) = errors.finish(|| Some((common?, filter?)))?;
        let mut tx = auth.tenant_tx(&state, Operation::TransactionsList).await?;
        let page = transactions::list(&mut tx, &filter, &common.ordering, common.page).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(TransactionPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Totals of payments, by month (UTC) and by method.
    #[oai(path = "/transactions/statistics", method = "get")]
    async fn statistics(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        /// Only payments made at or after this RFC 3339 time.
        paid_after: Query<Option<String>>,
        /// Only payments made before this RFC 3339 time.
        paid_before: Query<Option<String>>,
        /// Only payments by this method.
        method: Query<Option<String>>,
    ) -> Result<Json<TransactionStatistics>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let filter = TransactionQuery {
            method: method.0,
            paid_after: paid_after.0,
            paid_before: paid_before.0,
            ..Default::default()
        }
        .parse(&mut errors);
        let filter = errors.finish(|| filter)?;
        let mut tx = auth
            .tenant_tx(&state, Operation::TransactionsStatistics)
            .await?;
        let s = transactions::statistics(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        Ok(Json(TransactionStatistics {
            count: s.count,
            amount: DecimalString(s.amount.to_string()),
            by_month: s.by_month.into_iter().map(Into::into).collect(),
            by_method: s.by_method.into_iter().map(Into::into).collect(),
        }))
    }

    /// Export payments as CSV, streamed row by row (any number of rows). Text cells that a
    /// spreadsheet would read as a formula are prefixed with `'`.
    #[oai(path = "/transactions/export", method = "get")]
    async fn export(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        /// Only payments made at or after this RFC 3339 time.
        paid_after: Query<Option<String>>,
        /// Only payments made before this RFC 3339 time.
        paid_before: Query<Option<String>>,
        /// Only payments by this method.
        method: Query<Option<String>>,
        /// Only payments on this allocation.
        allocation_id: Query<Option<Uuid>>,
    ) -> Result<CsvExport, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let filter = TransactionQuery {
            allocation_id: allocation_id.0,
            method: method.0,
            paid_after: paid_after.0,
            paid_before: paid_before.0,
            ..Default::default()
        }
        .parse(&mut errors);
        let filter = errors.finish(|| filter)?;
        // The export is recorded in the audit log; the stream commits after its last row.
        let tx = auth
            .tenant_tx(&state, Operation::TransactionsExport)
            .await?;
        let chunks = transactions::export_csv(tx, auth.principal(), &filter).await?;
        let body = Body::from_bytes_stream(chunks.map(|chunk| {
            chunk.map_err(|e: AppError| {
                tracing::error!(error = %e, "CSV export stopped");
                std::io::Error::other(e.to_string())
            })
        }));
        Ok(CsvExport::Csv(
            Binary(body),
            "attachment; filename=\"transactions.csv\"".to_string(),
        ))
    }
}
