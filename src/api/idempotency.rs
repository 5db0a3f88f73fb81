//! The `Idempotency-Key` header on the POSTs that create or pay (see
//! `domain::idempotency`). A handler makes a [`Keyed`] from the request before anything
//! else, claims it in its transaction, and either replays the stored answer or does its
//! work and stores the new one in the same transaction.
//!
//! Not on the POSTs that create credentials (API keys, OAuth clients): replaying those
//! would mean storing their one-time secret.

use poem::Request;
use poem_openapi::types::{ParseFromJSON, ToJSON};

use super::problem::ErrorResponse;
use crate::db::tenancy::TenantTx;
use crate::domain::idempotency::{self, Claim, IdempotencyKey, TABLE, request_hash};
use crate::domain::listing::Queryable;
use crate::error::AppError;

/// A request's idempotency key (if it sent one) and what identifies the request.
pub struct Keyed {
    key: Option<IdempotencyKey>,
    hash: Vec<u8>,
}

/// What claiming the key found.
pub enum Claimed<T> {
    /// First time: do the work, then [`Pending::finish`].
    Fresh(Pending),
    /// The answer given the first time.
    Replay(T),
}

/// A claimed key waiting for the answer to store.
pub struct Pending(Option<IdempotencyKey>);

impl Keyed {
    pub fn new(
        req: &Request,
        header: Option<&str>,
        body: &impl ToJSON,
    ) -> Result<Self, ErrorResponse> {
        let key = IdempotencyKey::parse(header)?;
        let body = body.to_json().unwrap_or_default();
        let hash = request_hash(req.method().as_str(), req.uri().path(), &body);
        Ok(Keyed { key, hash })
    }

    /// Claims the key in a tenant transaction.
    pub async fn claim<T: ParseFromJSON>(
        self,
        tx: &mut TenantTx,
    ) -> Result<Claimed<T>, ErrorResponse> {
        self.claim_in(tx, TABLE).await
    }

    /// Claims the key in `table` (the company's keys table) from any transaction.
    pub async fn claim_in<T: ParseFromJSON>(
        self,
        tx: &mut impl Queryable,
        table: &str,
    ) -> Result<Claimed<T>, ErrorResponse> {
        match idempotency::begin(tx, table, self.key, &self.hash).await? {
            Claim::Fresh(key) => Ok(Claimed::Fresh(Pending(key))),
            Claim::Replay { body, .. } => T::parse_from_json(Some(body))
                .map(Claimed::Replay)
                .map_err(|e| {
                    AppError::Internal(format!("stored idempotent response: {}", e.into_message()))
                        .into()
                }),
        }
    }
}

impl Pending {
    /// Stores the answer with the change, in the same tenant transaction.
    pub async fn finish(
        self,
        tx: &mut TenantTx,
        status: u16,
        body: &impl ToJSON,
    ) -> Result<(), ErrorResponse> {
        self.finish_in(tx, TABLE, status, body).await
    }

    /// Stores the answer in `table`, in the transaction that claimed the key.
    pub async fn finish_in(
        self,
        tx: &mut impl Queryable,
        table: &str,
        status: u16,
        body: &impl ToJSON,
    ) -> Result<(), ErrorResponse> {
        let body = body.to_json().unwrap_or_default();
        Ok(idempotency::finish(tx, table, self.0, status, &body).await?)
    }
}
