//! API keys (SPEC §3): `X-API-Key: est_<prefix>_<secret>`. Only a SHA-256 of the key is
//! stored; the key itself is shown once, at creation. A key acts for the user who created
//! it, with viewer rights (`read`) or member rights (`write`), and stops working when it is
//! revoked, expires, or its creator is deactivated.

use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Machine, Principal, RequestOrigin, Role};
use crate::audit::{self, AuditAction};
use crate::db::Db;
use crate::db::tenancy::CompanyId;
use crate::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            _ => Err("must be read or write".into()),
        }
    }

    /// The rights a key of this scope has.
    pub fn role(self) -> Role {
        match self {
            Scope::Read => Role::Viewer,
            Scope::Write => Role::Member,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scope: Scope,
    pub created_by: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, prefix, scope, created_by, expires_at, last_used_at, revoked_at, created_at";

impl ApiKey {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, AppError> {
        Ok(ApiKey {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            prefix: row.try_get(2)?,
            scope: Scope::parse(row.try_get(3)?).map_err(AppError::Internal)?,
            created_by: row.try_get(4)?,
            expires_at: row.try_get(5)?,
            last_used_at: row.try_get(6)?,
            revoked_at: row.try_get(7)?,
            created_at: row.try_get(8)?,
        })
    }
}

fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new key and its visible prefix. 32 random bytes of secret.
fn generate() -> (String, String) {
    let prefix = format!("est_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let secret: [u8; 32] = rand::random();
    let key = format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    (key, prefix)
}

/// Creates a key, audited; returns it with the key text, which is never stored and cannot
/// be shown again.
pub async fn create(
    db: &Db,
    principal: &Principal,
    name: &str,
    scope: Scope,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, String), AppError> {
    let (key, prefix) = generate();
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let sql = format!(
        "INSERT INTO api_keys (id, company_id, name, prefix, key_hash, scope, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &Uuid::now_v7(),
                &principal.company.0,
                &name,
                &prefix,
                &key_hash(&key),
                &scope.as_str(),
                &principal.user_id,
                &expires_at,
            ],
        )
        .await?;
    let created = ApiKey::from_row(&row)?;
    let entry = principal
        .audit(AuditAction::ApiKeyCreated)
        .object("api_key", created.id)
        .after(&created);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok((created, key))
}

pub async fn list(
    client: &impl GenericClient,
    principal: &Principal,
) -> Result<Vec<ApiKey>, AppError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys WHERE company_id = $1 ORDER BY created_at DESC, id DESC"
    );
    let rows = client.query(&sql, &[&principal.company.0]).await?;
    rows.iter().map(ApiKey::from_row).collect()
}

/// Revokes a key of the caller's company, audited; another company's key answers 404.
pub async fn revoke(db: &Db, principal: &Principal, id: Uuid) -> Result<ApiKey, AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let sql = format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
    );
    let revoked = match tx.query_opt(&sql, &[&id, &principal.company.0]).await? {
        Some(row) => ApiKey::from_row(&row)?,
        None => return Err(AppError::NotFound("API key")),
    };
    let entry = principal
        .audit(AuditAction::ApiKeyRevoked)
        .object("api_key", id)
        .after(&revoked);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok(revoked)
}

/// Turns a presented key into a principal, touching `last_used_at` at most once a minute
/// (not a write per request). Whether the key still counts at the moment of the request's
/// transaction is checked again by its guard.
pub async fn authenticate(
    db: &Db,
    key: &str,
    origin: RequestOrigin,
) -> Result<Principal, AppError> {
    let conn = db.shared().await?;
    let statement = conn
        .prepare_cached(
            "WITH found AS (
                 SELECT id, company_id, scope, created_by, last_used_at FROM api_keys
                 WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
             ),
             touched AS (
                 UPDATE api_keys SET last_used_at = now()
                 WHERE id IN (SELECT id FROM found
                              WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
             )
             SELECT id, company_id, scope, created_by FROM found",
        )
        .await?;
    let row = conn
        .query_opt(&statement, &[&key_hash(key)])
        .await?
        .ok_or(AppError::Unauthorized("the API key is not valid"))?;
    let scope = Scope::parse(row.try_get(2)?).map_err(AppError::Internal)?;
    let key_id: Uuid = row.try_get(0)?;
    Ok(Principal {
        user_id: row.try_get(3)?,
        company: CompanyId(row.try_get(1)?),
        role: scope.role(),
        jti: key_id,
        session: None,
        token_expires_at: i64::MAX,
        origin,
        machine: Some(Machine::ApiKey(key_id)),
    })
}
