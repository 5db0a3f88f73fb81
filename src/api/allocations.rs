//! `/allocations`: properties allocated to clients, and their payments.

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
use super::listing::{RawListParams, links, parse_time};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::types::{DecimalString, decimal_text};
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::allocations::{
    self, Allocation, AllocationFilter, AllocationStatus, DEFAULT_ORDERING, NewAllocation,
    NewPayment, ORDERING_FIELDS, Payment,
};
use crate::domain::estates;
use crate::domain::listing::PageRequest;
use crate::error::FieldErrors;

pub struct AllocationsApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "Allocation")]
pub struct AllocationBody {
    pub id: Uuid,
    pub property_id: Uuid,
    pub client_id: Uuid,
    /// `outright` or `installment`.
    pub payment_plan: String,
    /// Money: decimal strings with two places.
    pub total_price: DecimalString,
    pub amount_paid: DecimalString,
    pub balance: DecimalString,
    /// `active`, `completed` (fully paid) or `cancelled`.
    pub status: String,
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Allocation> for AllocationBody {
    fn from(a: Allocation) -> Self {
        AllocationBody {
            id: a.id,
            property_id: a.property_id,
            client_id: a.client_id,
            payment_plan: a.payment_plan.as_str().into(),
            total_price: DecimalString(a.total_price.to_string()),
            amount_paid: DecimalString(a.amount_paid.to_string()),
            balance: DecimalString(a.balance.to_string()),
            status: a.status.as_str().into(),
            created_by: a.created_by,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
#[oai(rename = "Payment")]
pub struct PaymentBody {
    pub id: Uuid,
    pub allocation_id: Uuid,
    /// Money: a decimal string with two places.
    pub amount: DecimalString,
    /// `cash`, `bank_transfer`, `card` or `stripe`.
    pub method: String,
    pub reference: String,
    #[serde(serialize_with = "rfc3339")]
    pub paid_at: DateTime<Utc>,
    pub recorded_by: Uuid,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<Payment> for PaymentBody {
    fn from(p: Payment) -> Self {
        PaymentBody {
            id: p.id,
            allocation_id: p.allocation_id,
            amount: DecimalString(p.amount.to_string()),
            method: p.method.as_str().into(),
            reference: p.reference,
            paid_at: p.paid_at,
            recorded_by: p.recorded_by,
            created_at: p.created_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct AllocationPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<AllocationBody>,
}

#[derive(Object, serde::Serialize)]
pub struct PaymentHistory {
    /// Every payment of the allocation, oldest first.
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<PaymentBody>,
}

#[derive(Object)]
pub struct PaymentRecorded {
    /// The allocation after the payment.
    pub allocation: AllocationBody,
    pub payment: PaymentBody,
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct CreateAllocation {
    pub property_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    /// `outright` or `installment`.
    pub payment_plan: Option<String>,
    /// Money; the property's price when absent.
    pub total_price: Option<DecimalString>,
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct RecordPayment {
    /// Money, more than 0 and at most the balance, e.g. `"500000.00"`.
    pub amount: Option<DecimalString>,
    /// `cash`, `bank_transfer`, `card` or `stripe`.
    pub method: Option<String>,
    /// Up to 200 characters (a receipt or transfer number).
    pub reference: Option<String>,
    /// RFC 3339; now when absent.
    pub paid_at: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedAllocation {
    /// The property is allocated to the client.
    #[oai(status = 201)]
    Created(Json<AllocationBody>),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Allocations")]
impl AllocationsApi {
    /// List allocations.
    ///
    /// `ordering`: created_at, updated_at, total_price, balance, status (`-` for
    /// descending; default `-created_at`).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/allocations", method = "get")]
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
        /// Only allocations with this status.
        status: Query<Option<String>>,
        /// Only allocations of this property.
        property_id: Query<Option<Uuid>>,
        /// Only allocations to this client.
        client_id: Query<Option<Uuid>>,
        /// Only allocations of properties in this estate.
        estate_id: Query<Option<Uuid>>,
        /// Only allocations made at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only allocations made before this RFC 3339 time.
        created_before: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<AllocationPage>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let common = RawListParams {
            page: page.0,
            page_size: page_size.0,
            ordering: ordering.0,
            created_after: created_after.0,
            created_before: created_before.0,
            ids: ids.0,
            search: None,
        }
        .parse(&mut errors, &ORDERING_FIELDS, DEFAULT_ORDERING);
        let status = errors.check(
            "status",
            status.0.as_deref().map(AllocationStatus::parse).transpose(),
        );
        let filter = errors.finish(|| {
            let c = common?;
            Some(AllocationFilter {
                status: status?,
                property_id: property_id.0,
                client_id: client_id.0,
                estate_id: estate_id.0,
                created_after: c.created_after,
                created_before: c.created_before,
                ids: c.ids,
                ordering: c.ordering,
                page: c.page,
            })
        })?;
        let mut tx = auth.tenant_tx(&state, Operation::AllocationsList).await?;
        let page = allocations::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(AllocationPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Allocate a property to a client. A property is allocated at most once at a time:
    /// 409 when it already is, also under concurrent requests.
    #[oai(path = "/allocations", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateAllocation>,
    ) -> Result<CreatedAllocation, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let new = NewAllocation::parse(
            b.property_id,
            b.client_id,
            b.payment_plan.as_deref(),
            decimal_text(&b.total_price),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::AllocationsCreate).await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(CreatedAllocation::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let body = AllocationBody::from(allocations::create(&mut tx, auth.principal(), new).await?);
        pending.finish(&mut tx, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedAllocation::Created(Json(body)))
    }

    /// Get one allocation. Another company's allocation answers 404.
    #[oai(path = "/allocations/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<AllocationBody>, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::AllocationsGet).await?;
        let allocation = allocations::get(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(Json(allocation.into()))
    }

    /// Record a payment. More than the balance is 422; a payment that clears the balance
    /// completes the allocation and marks the property sold.
    #[oai(path = "/allocations/:id/record_payment", method = "post")]
    async fn record_payment(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<RecordPayment>,
    ) -> Result<Json<PaymentRecorded>, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let payment = NewPayment::parse(
            decimal_text(&b.amount),
            b.method.as_deref(),
            b.reference.as_deref(),
            parse_time(b.paid_at.as_deref()),
        )?;
        let mut tx = auth
            .tenant_tx(&state, Operation::AllocationsRecordPayment)
            .await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(Json(body)),
            Claimed::Fresh(pending) => pending,
        };
        let (allocation, payment) =
            allocations::record_payment(&mut tx, auth.principal(), id.0, payment).await?;
        let body = PaymentRecorded {
            allocation: allocation.into(),
            payment: payment.into(),
        };
        pending.finish(&mut tx, 200, &body).await?;
        tx.commit().await?;
        Ok(Json(body))
    }

    /// Every payment of an allocation, oldest first.
    #[oai(path = "/allocations/:id/payment_history", method = "get")]
    async fn payment_history(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<JsonBody<PaymentHistory>, ErrorResponse> {
        let mut tx = auth
            .tenant_tx(&state, Operation::AllocationsPaymentHistory)
            .await?;
        let payments = allocations::payment_history(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(JsonBody(PaymentHistory {
            count: payments.len() as i64,
            next: None,
            previous: None,
            results: payments.into_iter().map(Into::into).collect(),
        }))
    }

    /// The allocations of an estate's properties, newest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/estates/:id/allocations", method = "get")]
    async fn of_estate(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        id: Path<Uuid>,
        /// Page number, from 1.
        page: Query<Option<i64>>,
        /// Results per page, 1–100 (default 20).
        page_size: Query<Option<i64>>,
        /// Only allocations with this status.
        status: Query<Option<String>>,
    ) -> Result<JsonBody<AllocationPage>, ErrorResponse> {
        let mut errors = FieldErrors::default();
        let page = errors.check("page", PageRequest::parse_page(page.0));
        let page_size = errors.check("page_size", PageRequest::parse_page_size(page_size.0));
        let status = errors.check(
            "status",
            status.0.as_deref().map(AllocationStatus::parse).transpose(),
        );
        let filter = errors.finish(|| {
            Some(AllocationFilter {
                status: status?,
                property_id: None,
                client_id: None,
                estate_id: Some(id.0),
                created_after: None,
                created_before: None,
                ids: None,
                ordering: DEFAULT_ORDERING,
                page: PageRequest {
                    page: page?,
                    page_size: page_size?,
                },
            })
        })?;
        let mut tx = auth
            .tenant_tx(&state, Operation::EstatesAllocations)
            .await?;
        estates::get(&mut tx, id.0).await?;
        let page = allocations::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(AllocationPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Make many allocations at once: all or none. Any failing item fails the request with
    /// per-item errors (`allocations[i].property_id`, `allocations[i]`) and nothing changes.
    #[oai(path = "/allocations/bulk_allocate", method = "post")]
    async fn bulk_allocate(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<BulkAllocate>,
    ) -> Result<CreatedAllocations, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let items = body
            .0
            .allocations
            .into_iter()
            .map(|b| {
                NewAllocation::parse(
                    b.property_id,
                    b.client_id,
                    b.payment_plan.as_deref(),
                    decimal_text(&b.total_price),
                )
            })
            .collect();
        let mut tx = auth
            .tenant_tx(&state, Operation::AllocationsBulkAllocate)
            .await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(CreatedAllocations::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let made = allocations::bulk_allocate(&mut tx, auth.principal(), items).await?;
        let body = BulkAllocations {
            count: made.len() as i64,
            results: made.into_iter().map(Into::into).collect(),
        };
        pending.finish(&mut tx, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedAllocations::Created(Json(body)))
    }
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct BulkAllocate {
    /// 1 to 100 allocations.
    pub allocations: Vec<CreateAllocation>,
}

#[derive(Object)]
pub struct BulkAllocations {
    pub count: i64,
    pub results: Vec<AllocationBody>,
}

#[derive(ApiResponse)]
pub enum CreatedAllocations {
    /// Every allocation was made.
    #[oai(status = 201)]
    Created(Json<BulkAllocations>),
}

impl poem_openapi::types::Example for CreateAllocation {
    fn example() -> Self {
        CreateAllocation {
            property_id: Some(Uuid::nil()),
            client_id: Some(Uuid::nil()),
            payment_plan: Some("installment".into()),
            total_price: None,
        }
    }
}

impl poem_openapi::types::Example for RecordPayment {
    fn example() -> Self {
        RecordPayment {
            amount: Some(DecimalString("500000.00".into())),
            method: Some("bank_transfer".into()),
            reference: Some("TRX-2026-0042".into()),
            paid_at: None,
        }
    }
}
