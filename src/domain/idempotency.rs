//! `Idempotency-Key` (SPEC §4): a retried request with the same key gets the first
//! response and changes nothing twice; the same key with a different request is 422.
//!
//! Everything happens in the request's own tenant transaction: [`begin`] claims the key
//! (a concurrent retry waits on the claim's row lock, then sees the stored answer), and
//! [`finish`] stores the answer before the transaction commits with the change. A request
//! that fails rolls back its claim, so it can be retried with the same key.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::listing::Queryable;
use crate::db::tenancy::SchemaName;
use crate::error::{AppError, FieldErrors};

/// How long a key counts.
pub const KEY_LIFETIME_HOURS: i32 = 24;

/// A valid `Idempotency-Key` value: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, AppError> {
        let Some(raw) = raw else { return Ok(None) };
        if !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Some(IdempotencyKey(raw.to_string())))
        } else {
            let mut errors = FieldErrors::default();
            errors.add(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            );
            Err(AppError::Validation(errors))
        }
    }
}

/// What identifies a request for its key: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &Value) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hasher.finalize().to_vec()
}

/// The outcome of claiming a key.
pub enum Claim {
    /// First time (or no key): do the work, then [`finish`].
    Fresh(Option<IdempotencyKey>),
    /// Seen before: answer this again.
    Replay { status: u16, body: Value },
}

/// The keys table as seen from a tenant transaction.
pub const TABLE: &str = "idempotency_keys";

/// The keys table of `schema`, for a shared-schema transaction (user management).
pub fn table_of(schema: &SchemaName) -> String {
    format!("{}.{TABLE}", schema.quoted())
}

/// Claims `key` in `table` (see [`TABLE`], [`table_of`]) inside the request's transaction.
pub async fn begin(
    tx: &mut impl Queryable,
    table: &str,
    key: Option<IdempotencyKey>,
    hash: &[u8],
) -> Result<Claim, AppError> {
    let Some(key) = key else {
        return Ok(Claim::Fresh(None));
    };
    let claim = format!(
        "WITH expired AS (
             DELETE FROM {table} WHERE key = $1 AND created_at < now() - make_interval(hours => $3)
         )
         INSERT INTO {table} (key, request_hash) VALUES ($1, $2)
         ON CONFLICT (key) DO NOTHING RETURNING 1"
    );
    let claimed = tx
        .rows(&claim, &[&key.0, &hash, &KEY_LIFETIME_HOURS])
        .await?;
    if !claimed.is_empty() {
        return Ok(Claim::Fresh(Some(key)));
    }
    let row = tx
        .rows(
            &format!(
                "SELECT request_hash, response_status, response_body FROM {table} WHERE key = $1"
            ),
            &[&key.0],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::Conflict("the Idempotency-Key is in use; retry".into()))?;
    if row.try_get::<_, Vec<u8>>(0)? != hash {
        let mut errors = FieldErrors::default();
        errors.add(
            "Idempotency-Key",
            "was already used with a different request",
        );
        return Err(AppError::Validation(errors));
    }
    match (
        row.try_get::<_, Option<i32>>(1)?,
        row.try_get::<_, Option<Value>>(2)?,
    ) {
        (Some(status), Some(body)) => Ok(Claim::Replay {
            status: status as u16,
            body,
        }),
        _ => Err(AppError::Conflict(
            "the Idempotency-Key is in use; retry".into(),
        )),
    }
}

/// Stores the answer to a fresh keyed request, in its transaction.
pub async fn finish(
    tx: &mut impl Queryable,
    table: &str,
    key: Option<IdempotencyKey>,
    status: u16,
    body: &Value,
) -> Result<(), AppError> {
    if let Some(key) = key {
        let store =
            format!("UPDATE {table} SET response_status = $2, response_body = $3 WHERE key = $1");
        tx.rows(&store, &[&key.0, &(status as i32), body]).await?;
    }
    Ok(())
}
