//! Users of a company and their roles (SPEC §3). Users live in the shared schema (login is
//! by e-mail across all companies), so every statement here names the caller's company:
//! another company's user answers 404 exactly like a missing one.
//!
//! Rules on top of the permission table:
//! - anyone may change their own name; only admins and owners change other users;
//! - only an owner may make an owner, or change or deactivate an owner;
//! - a company always keeps at least one active owner;
//! - nobody deactivates themselves; passwords are changed only by their user.

use crate::billing::limits;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page, like_pattern};
use super::values::{EmailAddress, new_password, required, text};
use estate_jobs::{PasswordChangedEmail, WelcomeEmail};

use crate::audit::{self, AuditAction};
use crate::auth::{Principal, Role, password};
use crate::db::Db;
use crate::db::tenancy::SchemaName;
use crate::error::{AppError, FieldErrors, is_unique_violation};
use crate::outbox;

#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, email, full_name, role, is_active, created_at, updated_at";
const LISTING: Listing<User> = Listing {
    columns: COLUMNS,
    column_count: 7,
    from: "users",
    noun: "user",
    from_row: User::from_row,
};

impl User {
    fn from_row(row: &Row) -> Result<Self, AppError> {
        let role: &str = row.try_get(3)?;
        Ok(User {
            id: row.try_get(0)?,
            email: row.try_get(1)?,
            full_name: row.try_get(2)?,
            role: Role::parse(role)
                .ok_or_else(|| AppError::Internal(format!("unknown role {role}")))?,
            is_active: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
        })
    }
}

pub fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw).ok_or_else(|| "must be one of owner, admin, member, viewer".to_string())
}

fn parse_full_name(raw: &str) -> Result<String, String> {
    text(raw, 1, 200)
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: EmailAddress,
    pub full_name: String,
    pub role: Role,
    pub password: String,
}

impl NewUser {
    pub fn parse(
        email: Option<&str>,
        full_name: Option<&str>,
        role: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let email = errors.check("email", required(email).and_then(EmailAddress::parse));
        let full_name = errors.check("full_name", required(full_name).and_then(parse_full_name));
        let role = errors.check("role", required(role).and_then(parse_role));
        let password = errors.check("password", required(password).and_then(new_password));
        errors.finish(|| {
            Some(NewUser {
                email: email?,
                full_name: full_name?,
                role: role?,
                password: password?,
            })
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub full_name: Option<String>,
    pub role: Option<Role>,
}

impl UserPatch {
    pub fn parse(full_name: Option<&str>, role: Option<&str>) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let full_name = errors.check("full_name", full_name.map(parse_full_name).transpose());
        let role = errors.check("role", role.map(parse_role).transpose());
        errors.finish(|| {
            Some(UserPatch {
                full_name: full_name?,
                role: role?,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct UserFilter {
    pub search: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 5] = ["email", "full_name", "role", "created_at", "updated_at"];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: false,
};

pub async fn list(
    conn: &mut Object,
    principal: &Principal,
    filter: &UserFilter,
) -> Result<Page<User>, AppError> {
    let mut filters = Filters::default();
    filters.and("company_id = ?", principal.company.0);
    if let Some(search) = &filter.search {
        filters.and("(email ILIKE ? OR full_name ILIKE ?)", like_pattern(search));
    }
    if let Some(role) = filter.role {
        filters.and("role = ?", role.as_str());
    }
    if let Some(active) = filter.is_active {
        filters.and("is_active = ?", active);
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
    fetch_page(conn, &LISTING, &filters, &filter.ordering, filter.page).await
}

async fn find(
    client: &impl GenericClient,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> Result<User, AppError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1 AND company_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match client.query_opt(&sql, &[&id, &principal.company.0]).await? {
        Some(row) => User::from_row(&row),
        None => Err(AppError::NotFound("user")),
    }
}

pub async fn get(conn: &Object, principal: &Principal, id: Uuid) -> Result<User, AppError> {
    find(conn, principal, id, false).await
}

/// The caller's company's schema, where its audit entries go.
fn company_schema(db: &Db, principal: &Principal) -> SchemaName {
    db.naming().tenant(principal.company).schema
}

fn only_owners_manage_owners(principal: &Principal, involves_owner: bool) -> Result<(), AppError> {
    if involves_owner && principal.role != Role::Owner {
        Err(AppError::Forbidden(
            "only an owner may grant, change or remove the owner role".into(),
        ))
    } else {
        Ok(())
    }
}

/// Creates a user in the caller's shared-schema transaction (which may also hold the
/// request's idempotency claim), with its audit entry and welcome e-mail.
pub async fn create(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    principal: &Principal,
    new: NewUser,
) -> Result<User, AppError> {
    only_owners_manage_owners(principal, new.role == Role::Owner)?;
    let password_hash = password::hash(new.password).await?;
    limits::reserve_user(tx, principal.company).await?;
    let sql = format!(
        "INSERT INTO users (id, company_id, email, full_name, password_hash, role)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &Uuid::now_v7(),
                &principal.company.0,
                &new.email.as_str(),
                &new.full_name,
                &password_hash,
                &new.role.as_str(),
            ],
        )
        .await
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e, "users_email_key") {
                AppError::Conflict("an account with this email already exists".into())
            } else {
                AppError::Db(e)
            }
        })?;
    let user = User::from_row(&row)?;
    let entry = principal
        .audit(AuditAction::Create)
        .object("user", user.id)
        .after(&user);
    audit::record_in(tx, &company_schema(db, principal), entry).await?;
    let welcome = WelcomeEmail {
        company_id: principal.company.0,
        user_id: user.id,
        email: user.email.clone(),
        full_name: user.full_name.clone(),
    };
    outbox::enqueue_shared(tx, &welcome).await?;
    Ok(user)
}

/// Refuses a change that would leave the company without an active owner. Runs after the
/// target row is locked, and locks the company's owners, so two concurrent demotions of
/// the last two owners cannot both pass.
async fn ensure_another_active_owner(
    client: &impl GenericClient,
    principal: &Principal,
    target: Uuid,
) -> Result<(), AppError> {
    let others = client
        .query(
            "SELECT id FROM users WHERE company_id = $1 AND role = 'owner' AND is_active AND id <> $2 FOR UPDATE",
            &[&principal.company.0, &target],
        )
        .await?;
    if others.is_empty() {
        Err(AppError::Conflict(
            "a company must keep at least one active owner".into(),
        ))
    } else {
        Ok(())
    }
}

pub async fn update(
    db: &Db,
    principal: &Principal,
    id: Uuid,
    patch: UserPatch,
) -> Result<User, AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let current = find(&tx, principal, id, true).await?;
    let is_self = current.id == principal.user_id;
    if !is_self && !principal.role.at_least(Role::Admin) {
        return Err(AppError::Forbidden(
            "only admins and owners may change other users".into(),
        ));
    }
    if let Some(role) = patch.role.filter(|r| *r != current.role) {
        if !principal.role.at_least(Role::Admin) {
            return Err(AppError::Forbidden(
                "only admins and owners may change roles".into(),
            ));
        }
        only_owners_manage_owners(
            principal,
            role == Role::Owner || current.role == Role::Owner,
        )?;
        if current.role == Role::Owner {
            ensure_another_active_owner(&tx, principal, id).await?;
        }
    }
    let sql = format!(
        "UPDATE users SET full_name = coalesce($3, full_name), role = coalesce($4, role), updated_at = now()
         WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &id,
                &principal.company.0,
                &patch.full_name,
                &patch.role.map(Role::as_str),
            ],
        )
        .await?;
    let user = User::from_row(&row)?;
    let entry = principal
        .audit(AuditAction::Update)
        .object("user", id)
        .before(&current)
        .after(&user);
    audit::record_in(&tx, &company_schema(db, principal), entry).await?;
    tx.commit().await?;
    Ok(user)
}

/// Changes the caller's own password after checking the current one, and ends every other
/// login session of the user (their refresh tokens), keeping the caller's own.
pub async fn change_password(
    db: &Db,
    principal: &Principal,
    id: Uuid,
    current_password: &str,
    new: &str,
) -> Result<(), AppError> {
    let mut errors = FieldErrors::default();
    let new = errors.check("new_password", new_password(new));
    if current_password.is_empty() {
        errors.add("current_password", "is required");
    }
    let new = errors.finish(|| new)?;
    if id != principal.user_id || principal.machine.is_some() {
        return Err(AppError::Forbidden(
            "a password may only be changed by its own user".into(),
        ));
    }
    let mut conn = db.shared().await?;
    let account = conn
        .query_opt(
            "SELECT password_hash, email FROM users WHERE id = $1 AND company_id = $2",
            &[&id, &principal.company.0],
        )
        .await?
        .ok_or(AppError::NotFound("user"))?;
    let (stored, email): (String, String) = (account.get(0), account.get(1));
    if !password::verify(current_password.to_string(), Some(stored)).await {
        let mut errors = FieldErrors::default();
        errors.add("current_password", "is not correct");
        return Err(AppError::Validation(errors));
    }
    let hash = password::hash(new).await?;
    let tx = conn.transaction().await?;
    tx.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
        &[&id, &hash],
    )
    .await?;
    tx.execute(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $2",
        &[&id, &principal.session],
    )
    .await?;
    let entry = principal
        .audit(AuditAction::PasswordChange)
        .object("user", id);
    audit::record_in(&tx, &company_schema(db, principal), entry).await?;
    let notice = PasswordChangedEmail {
        company_id: principal.company.0,
        user_id: id,
        email,
        change_id: Uuid::now_v7(),
    };
    outbox::enqueue_shared(&tx, &notice).await?;
    tx.commit().await?;
    Ok(())
}

/// Activates or deactivates a user. A deactivated user's tokens stop working at once (the
/// session check reads `is_active`) and their refresh tokens are revoked.
pub async fn toggle_status(db: &Db, principal: &Principal, id: Uuid) -> Result<User, AppError> {
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let current = find(&tx, principal, id, true).await?;
    if current.id == principal.user_id {
        return Err(AppError::Conflict("you cannot deactivate yourself".into()));
    }
    only_owners_manage_owners(principal, current.role == Role::Owner)?;
    if current.is_active && current.role == Role::Owner {
        ensure_another_active_owner(&tx, principal, id).await?;
    }
    if !current.is_active {
        limits::reserve_user(&tx, principal.company).await?;
    }
    let sql = format!(
        "UPDATE users SET is_active = NOT is_active, updated_at = now()
         WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
    );
    let row = tx.query_one(&sql, &[&id, &principal.company.0]).await?;
    let user = User::from_row(&row)?;
    if !user.is_active {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    }
    let entry = principal
        .audit(AuditAction::UserStatusChange)
        .object("user", id)
        .before(&current)
        .after(&user);
    audit::record_in(&tx, &company_schema(db, principal), entry).await?;
    tx.commit().await?;
    Ok(user)
}
