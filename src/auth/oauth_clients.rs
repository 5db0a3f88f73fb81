//! OAuth 2 client credentials (SPEC §3): a machine client exchanges its `client_id` and
//! `client_secret` at `POST /oauth/token` for a bearer JWT of its company. The secret is
//! shown once and stored as a SHA-256 hash (it is 32 random bytes, so a slow hash buys
//! nothing). A client acts for the user who created it, with `read` (viewer) or `write`
//! (member) rights; its tokens stop working when it is revoked.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Principal;
use super::api_keys::Scope;
use super::jwt::{ACCESS_TOKEN_TTL_SECS, JwtKeys};
use crate::audit::{self, AuditAction};
use crate::db::Db;
use crate::error::AppError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct OAuthClient {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    pub scope: Scope,
    pub created_by: Uuid,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, client_id, scope, created_by, revoked_at, created_at";

impl OAuthClient {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, AppError> {
        Ok(OAuthClient {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            client_id: row.try_get(2)?,
            scope: Scope::parse(row.try_get(3)?).map_err(AppError::Internal)?,
            created_by: row.try_get(4)?,
            revoked_at: row.try_get(5)?,
            created_at: row.try_get(6)?,
        })
    }
}

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a client, audited; returns it with its secret, which cannot be shown again.
pub async fn create(
    db: &Db,
    principal: &Principal,
    name: &str,
    scope: Scope,
) -> Result<(OAuthClient, String), AppError> {
    let client_id = format!("oc_{}", Uuid::new_v4().simple());
    let secret_bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let sql = format!(
        "INSERT INTO oauth_clients (id, company_id, name, client_id, secret_hash, scope, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &Uuid::now_v7(),
                &principal.company.0,
                &name,
                &client_id,
                &secret_hash(&secret),
                &scope.as_str(),
                &principal.user_id,
            ],
        )
        .await?;
    let client = OAuthClient::from_row(&row)?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("oauth_client", client.id)
        .after(&client);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok((client, secret))
}

pub async fn list(db: &Db, principal: &Principal) -> Result<Vec<OAuthClient>, AppError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM oauth_clients WHERE company_id = $1 ORDER BY created_at DESC, id DESC"
    );
    let rows = db
        .shared()
        .await?
        .query(&sql, &[&principal.company.0])
        .await?;
    rows.iter().map(OAuthClient::from_row).collect()
}

/// Revokes a client and, with it, every token it holds; another company's id is 404.
pub async fn revoke(db: &Db, principal: &Principal, id: Uuid) -> Result<OAuthClient, AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let sql = format!(
        "UPDATE oauth_clients SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
    );
    let client = match tx.query_opt(&sql, &[&id, &principal.company.0]).await? {
        Some(row) => OAuthClient::from_row(&row)?,
        None => return Err(AppError::NotFound("OAuth client")),
    };
    let entry = principal
        .audit(AuditAction::Delete)
        .object("oauth_client", id)
        .after(&client);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok(client)
}

/// A token from the client credentials grant.
pub struct ClientToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: Scope,
}

const BAD_CLIENT: &str = "invalid client credentials";

/// The client credentials grant: the same 401 for an unknown client, a wrong secret, a
/// revoked client, or one whose creator is inactive.
pub async fn exchange(
    db: &Db,
    keys: &JwtKeys,
    client_id: &str,
    secret: &str,
) -> Result<ClientToken, AppError> {
    let conn = db.shared().await?;
    let row = conn
        .query_opt(
            "SELECT o.id, o.company_id, o.scope, o.created_by, o.secret_hash
             FROM oauth_clients o
             JOIN users u ON u.id = o.created_by
             JOIN companies c ON c.id = o.company_id
             WHERE o.client_id = $1 AND o.revoked_at IS NULL AND u.is_active AND c.status <> 'deleted'",
            &[&client_id],
        )
        .await?
        .ok_or(AppError::Unauthorized(BAD_CLIENT))?;
    let stored: Vec<u8> = row.try_get(4)?;
    // Constant-time enough: both sides are fixed-length digests.
    let presented = secret_hash(secret);
    if presented.len() != stored.len()
        || presented
            .iter()
            .zip(&stored)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return Err(AppError::Unauthorized(BAD_CLIENT));
    }
    let scope = Scope::parse(row.try_get(2)?).map_err(AppError::Internal)?;
    let (access_token, _) = keys.issue_for_client(
        row.try_get(3)?,
        row.try_get(1)?,
        scope.role().as_str(),
        row.try_get(0)?,
    )?;
    Ok(ClientToken {
        access_token,
        expires_in: ACCESS_TOKEN_TTL_SECS,
        scope,
    })
}
