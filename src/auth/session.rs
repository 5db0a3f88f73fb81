//! Login, refresh-token rotation, logout, and checking an access token on each request.

use base64::Engine;
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::jwt::{ACCESS_TOKEN_TTL_SECS, JwtKeys};
use super::throttle::{self, LoginKeys};
use super::{Machine, Principal, RequestOrigin, Role, password};
use crate::audit::{self, AuditAction, AuditEntry};
use crate::db::Db;
use crate::db::tenancy::CompanyId;
use crate::error::AppError;

pub const REFRESH_TOKEN_TTL_DAYS: i32 = 30;

/// The same answer for an unknown e-mail, a wrong password and an inactive user, so the
/// response does not tell which accounts exist.
const BAD_CREDENTIALS: &str = "invalid email or password";

/// Tokens handed to a client after login, registration or refresh.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Issues an access token and a new refresh token of `family` (a new family when `None`,
/// i.e. on login), storing only the refresh token's hash.
pub async fn issue(
    client: &impl GenericClient,
    keys: &JwtKeys,
    user: Uuid,
    company: CompanyId,
    role: Role,
    family: Option<Uuid>,
) -> Result<Session, AppError> {
    let family = family.unwrap_or_else(Uuid::now_v7);
    let (access_token, _) = keys.issue(user, company.0, role.as_str(), Some(family))?;
    let secret: [u8; 32] = rand::random();
    let refresh_token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    client
        .execute(
            "INSERT INTO refresh_tokens (id, family_id, user_id, company_id, token_hash, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6))",
            &[
                &Uuid::now_v7(),
                &family,
                &user,
                &company.0,
                &refresh_token_hash(&refresh_token),
                &REFRESH_TOKEN_TTL_DAYS,
            ],
        )
        .await?;
    Ok(Session {
        access_token,
        refresh_token,
        expires_in: ACCESS_TOKEN_TTL_SECS,
    })
}

pub async fn login(
    db: &Db,
    keys: &JwtKeys,
    email: &str,
    password: String,
    origin: &RequestOrigin,
) -> Result<Session, AppError> {
    let mut conn = db.shared().await?;
    let throttle_keys = LoginKeys::new(email, origin.ip);
    throttle::check(&conn, &throttle_keys).await?;

    let row = conn
        .query_opt(
            "SELECT u.id, u.company_id, u.role, u.password_hash, u.is_active, c.status
             FROM users u JOIN companies c ON c.id = u.company_id
             WHERE lower(u.email) = lower($1)",
            &[&email],
        )
        .await?;
    let stored_hash = row.as_ref().map(|r| r.get::<_, String>(3));
    let password_ok = password::verify(password, stored_hash).await;
    // The account, when the e-mail names one: its company's audit log hears of the attempt.
    let known: Option<(Uuid, CompanyId)> = row.as_ref().map(|r| (r.get(0), CompanyId(r.get(1))));
    let account =
        row.filter(|r| password_ok && r.get::<_, bool>(4) && r.get::<_, &str>(5) != "deleted");

    let tx = conn.transaction().await?;
    let Some(account) = account else {
        throttle::record_failure(&tx, &throttle_keys).await?;
        if let Some((user, company)) = known {
            let entry =
                AuditEntry::new(user, origin, AuditAction::LoginFailed).object("user", user);
            audit::record_in(&tx, &db.naming().tenant(company).schema, entry).await?;
        }
        tx.commit().await?;
        return Err(AppError::Unauthorized(BAD_CREDENTIALS));
    };
    throttle::clear_account(&tx, &throttle_keys).await?;
    let (user, company): (Uuid, CompanyId) = (account.get(0), CompanyId(account.get(1)));
    let role = Role::parse(account.get(2))
        .ok_or_else(|| AppError::Internal("user with an unknown role".into()))?;
    let session = issue(&tx, keys, user, company, role, None).await?;
    let entry = AuditEntry::new(user, origin, AuditAction::Login).object("user", user);
    audit::record_in(&tx, &db.naming().tenant(company).schema, entry).await?;
    tx.commit().await?;
    Ok(session)
}

/// Rotates a refresh token. A token that was already rotated is being replayed, by its
/// owner or by a thief; since we cannot tell which, the whole family is revoked.
pub async fn refresh(db: &Db, keys: &JwtKeys, token: &str) -> Result<Session, AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT t.id, t.family_id, t.user_id, t.company_id,
                    t.expires_at < now(), t.rotated_at IS NOT NULL, t.revoked_at IS NOT NULL,
                    u.role, u.is_active, c.status
             FROM refresh_tokens t
             JOIN users u ON u.id = t.user_id
             JOIN companies c ON c.id = t.company_id
             WHERE t.token_hash = $1
             FOR UPDATE OF t",
            &[&refresh_token_hash(token)],
        )
        .await?
    else {
        return Err(AppError::Unauthorized("the refresh token is not valid"));
    };
    let family: Uuid = row.get(1);
    if row.get::<_, bool>(6) {
        return Err(AppError::Unauthorized("the refresh token has been revoked"));
    }
    if row.get::<_, bool>(5) {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
            &[&family],
        )
        .await?;
        tx.commit().await?;
        return Err(AppError::Unauthorized(
            "the refresh token was already used; every token of this login is now revoked",
        ));
    }
    if row.get::<_, bool>(4) {
        return Err(AppError::Unauthorized("the refresh token has expired"));
    }
    if !row.get::<_, bool>(8) || row.get::<_, &str>(9) == "deleted" {
        return Err(AppError::Unauthorized("the account is not active"));
    }
    let role = Role::parse(row.get(7))
        .ok_or_else(|| AppError::Internal("user with an unknown role".into()))?;
    tx.execute(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1",
        &[&row.get::<_, Uuid>(0)],
    )
    .await?;
    let session = issue(
        &tx,
        keys,
        row.get(2),
        CompanyId(row.get(3)),
        role,
        Some(family),
    )
    .await?;
    tx.commit().await?;
    Ok(session)
}

/// Revokes the caller's access token until it expires and, when given, its refresh token.
pub async fn logout(
    db: &Db,
    principal: &Principal,
    refresh_token: Option<&str>,
) -> Result<(), AppError> {
    if principal.machine.is_some() {
        return Err(AppError::Forbidden(
            "an API key has no session to end; revoke it instead".into(),
        ));
    }
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    tx.execute(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, to_timestamp($2))
         ON CONFLICT (jti) DO NOTHING",
        &[&principal.jti, &(principal.token_expires_at as f64)],
    )
    .await?;
    if let Some(token) = refresh_token {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
            &[&refresh_token_hash(token), &principal.user_id],
        )
        .await?;
    }
    let entry = principal
        .audit(AuditAction::Logout)
        .object("user", principal.user_id);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok(())
}

/// Turns a bearer token into a principal: signature, algorithm, expiry and claims. No
/// database work: the session is checked with the request's first statement ([`guard`])
/// or, for requests that touch no tenant data, by [`verify`].
pub fn authenticate(
    keys: &JwtKeys,
    token: &str,
    origin: RequestOrigin,
) -> Result<Principal, AppError> {
    let claims = keys.verify(token)?;
    let role =
        Role::parse(&claims.role).ok_or(AppError::Unauthorized("the access token is not valid"))?;
    Ok(Principal {
        user_id: claims.sub,
        company: CompanyId(claims.tid),
        role,
        jti: claims.jti,
        session: claims.sid,
        token_expires_at: claims.exp,
        origin,
        machine: claims.cid.map(Machine::OAuthClient),
    })
}
