//! `/clients`: the company's buyers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::estates::patch_field;
use super::idempotency::{Claimed, Keyed};
use super::json_body::{JsonBody, rfc3339};
use super::listing::{RawListParams, links};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::domain::clients::{
    self, Client, ClientFilter, ClientPatch, DEFAULT_ORDERING, NewClient, ORDERING_FIELDS,
};
use crate::error::FieldErrors;

pub struct ClientsApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "Client")]
pub struct ClientBody {
    pub id: Uuid,
    pub full_name: String,
    /// Empty when unknown.
    pub email: String,
    /// Empty when unknown.
    pub phone: String,
    pub created_by: Uuid,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Client> for ClientBody {
    fn from(c: Client) -> Self {
        ClientBody {
            id: c.id,
            full_name: c.full_name,
            email: c.email,
            phone: c.phone,
            created_by: c.created_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct ClientPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<ClientBody>,
}

#[derive(Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct CreateClient {
    /// 1–200 characters. Required.
    pub full_name: Option<String>,
    pub email: Option<String>,
    /// Digits, spaces and `+ - ( ) .`.
    pub phone: Option<String>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateClient {
    /// May not be null.
    pub full_name: MaybeUndefined<String>,
    /// null clears it.
    pub email: MaybeUndefined<String>,
    /// null clears it.
    pub phone: MaybeUndefined<String>,
}

#[derive(ApiResponse)]
pub enum CreatedClient {
    /// The client was created.
    #[oai(status = 201)]
    Created(Json<ClientBody>),
}

#[derive(ApiResponse)]
pub enum DeletedClient {
    /// The client was deleted.
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Clients")]
impl ClientsApi {
    /// List clients.
    ///
    /// `search` is full-text over name, e-mail and phone; `ordering`: full_name, email,
    /// created_at, updated_at (`-` for descending; default `-created_at`).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/clients", method = "get")]
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
        /// Words of a name, e-mail or phone number.
        search: Query<Option<String>>,
        /// Only clients created at or after this RFC 3339 time.
        created_after: Query<Option<String>>,
        /// Only clients created before this RFC 3339 time.
        created_before: Query<Option<String>>,
        /// Only these ids (comma-separated, at most 100).
        ids: Query<Option<String>>,
    ) -> Result<JsonBody<ClientPage>, ErrorResponse> {
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
        let filter = errors.finish(|| {
            let c = common?;
            Some(ClientFilter {
                search: c.search,
                created_after: c.created_after,
                created_before: c.created_before,
                ids: c.ids,
                ordering: c.ordering,
                page: c.page,
            })
        })?;
        let mut tx = auth.tenant_tx(&state, Operation::ClientsList).await?;
        let page = clients::list(&mut tx, &filter).await?;
        tx.commit_read_only()?;
        let (next, previous) = links(req, &page);
        Ok(JsonBody(ClientPage {
            count: page.count,
            next,
            previous,
            results: page.results.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create a client.
    #[oai(path = "/clients", method = "post")]
    async fn create(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// Makes a retry safe: a request repeated with the same key within 24 hours gets
        /// the first answer and changes nothing twice.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateClient>,
    ) -> Result<CreatedClient, ErrorResponse> {
        let keyed = Keyed::new(req, idempotency_key.0.as_deref(), &body.0)?;
        let b = body.0;
        let new = NewClient::parse(
            b.full_name.as_deref(),
            b.email.as_deref(),
            b.phone.as_deref(),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::ClientsCreate).await?;
        let pending = match keyed.claim(&mut tx).await? {
            Claimed::Replay(body) => return Ok(CreatedClient::Created(Json(body))),
            Claimed::Fresh(pending) => pending,
        };
        let body = ClientBody::from(clients::create(&mut tx, auth.principal(), new).await?);
        pending.finish(&mut tx, 201, &body).await?;
        tx.commit().await?;
        Ok(CreatedClient::Created(Json(body)))
    }

    /// Get one client. Another company's client answers 404.
    #[oai(path = "/clients/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<ClientBody>, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::ClientsGet).await?;
        let client = clients::get(&mut tx, id.0).await?;
        tx.commit_read_only()?;
        Ok(Json(client.into()))
    }

    /// Change a client. Members may change only clients they created.
    #[oai(path = "/clients/:id", method = "patch")]
    async fn update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<UpdateClient>,
    ) -> Result<Json<ClientBody>, ErrorResponse> {
        let b = body.0;
        let patch = ClientPatch::parse(
            patch_field(&b.full_name),
            patch_field(&b.email),
            patch_field(&b.phone),
        )?;
        let mut tx = auth.tenant_tx(&state, Operation::ClientsUpdate).await?;
        let client = clients::update(&mut tx, auth.principal(), id.0, patch).await?;
        tx.commit().await?;
        Ok(Json(client.into()))
    }

    /// Delete a client without allocations.
    #[oai(path = "/clients/:id", method = "delete")]
    async fn delete(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<DeletedClient, ErrorResponse> {
        let mut tx = auth.tenant_tx(&state, Operation::ClientsDelete).await?;
        clients::delete(&mut tx, auth.principal(), id.0).await?;
        tx.commit().await?;
        Ok(DeletedClient::Deleted)
    }
}

impl poem_openapi::types::Example for CreateClient {
    fn example() -> Self {
        CreateClient {
            full_name: Some("Chidi Okafor".into()),
            email: Some("chidi@example.com".into()),
            phone: Some("+234 803 555 0101".into()),
        }
    }
}
