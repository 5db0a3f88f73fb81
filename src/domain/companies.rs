//! Companies: registration, which creates a company, provisions its tenant schema and role,
//! and creates its owner, all in one transaction (SPEC §2).

use uuid::Uuid;

use super::values::{EmailAddress, new_password, required, text};
use crate::audit::{self, AuditAction};
use crate::auth::jwt::JwtKeys;
use crate::auth::session::{self, Session};
use crate::auth::{Principal, Role, password};
use crate::db::Db;
use crate::db::migrations::TenantMigrations;
use crate::db::provisioning::provision_tenant;
use crate::db::tenancy::CompanyId;
use crate::error::{AppError, FieldErrors, is_unique_violation};

/// A validated registration.
#[derive(Debug, Clone)]
pub struct NewCompany {
    pub company_name: String,
    pub email: EmailAddress,
    pub password: String,
    pub full_name: String,
}

impl NewCompany {
    pub fn parse(
        company_name: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
        full_name: Option<&str>,
    ) -> Result<Self, AppError> {
        let mut errors = FieldErrors::default();
        let company_name = errors.check(
            "company_name",
            required(company_name).and_then(|s| text(s, 1, 200)),
        );
        let email = errors.check("email", required(email).and_then(EmailAddress::parse));
        let password = errors.check("password", required(password).and_then(new_password));
        let full_name = errors.check(
            "full_name",
            required(full_name).and_then(|s| text(s, 1, 200)),
        );
        errors.finish(|| {
            Some(NewCompany {
                company_name: company_name?,
                email: email?,
                password: password?,
                full_name: full_name?,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct Company {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub tier: String,
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub company: Company,
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub session: Session,
}

/// A URL-friendly form of the company name: lower-case letters, digits and single dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(50).collect();
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "company".into()
    } else {
        slug
    }
}

/// Registers a company. The answer comes only once the tenant is usable: its schema is
/// migrated and its role exists when this returns.
pub async fn register(db: &Db, keys: &JwtKeys, new: NewCompany) -> Result<Registered, AppError> {
    let password_hash = password::hash(new.password.clone()).await?;

    let mut conn = db.shared().await?;
    // Checked first only to spare the DDL; the unique index below is what guarantees it.
    let taken = conn
        .query_opt(
            "SELECT 1 FROM users WHERE lower(email) = lower($1)",
            &[&new.email.as_str()],
        )
        .await?
        .is_some();
    if taken {
        return Err(email_taken());
    }

    let company = CompanyId(Uuid::now_v7());
    let tenant = db.naming().tenant(company);
    let base_slug = slugify(&new.company_name);
    let suffix = company.0.simple().to_string()[..8].to_string();

    let tx = conn.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO companies (id, name, slug)
             VALUES ($1, $2, CASE WHEN EXISTS (SELECT 1 FROM companies WHERE slug = $3)
                                  THEN $3 || '-' || $4 ELSE $3 END)
             RETURNING slug, tier",
            &[&company.0, &new.company_name, &base_slug, &suffix],
        )
        .await
        .map_err(|e| {
            conflict_or(
                e.into(),
                "companies_slug_key",
                "a company with this name was just registered; try again",
            )
        })?;
    let (slug, tier): (String, String) = (row.get(0), row.get(1));

    provision_tenant(&tx, db.naming(), &tenant, &TenantMigrations::embedded()).await?;

    let user_id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO users (id, company_id, email, full_name, password_hash, role)
         VALUES ($1, $2, $3, $4, $5, 'owner')",
        &[
            &user_id,
            &company.0,
            &new.email.as_str(),
            &new.full_name,
            &password_hash,
        ],
    )
    .await
    .map_err(|e| {
        conflict_or(
            e.into(),
            "users_email_key",
            "an account with this email already exists",
        )
    })?;

    let session = session::issue(&tx, keys, user_id, company, Role::Owner, None).await?;
    tx.commit().await?;

    Ok(Registered {
        company: Company {
            id: company.0,
            name: new.company_name,
            slug,
            tier,
        },
        user_id,
        email: new.email.as_str().to_string(),
        role: Role::Owner,
        session,
    })
}

/// A company as its members see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompanyDetails {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub tier: String,
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const COMPANY_COLUMNS: &str = "id, name, slug, tier, status, created_at, updated_at";

impl CompanyDetails {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, AppError> {
        Ok(CompanyDetails {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            slug: row.try_get(2)?,
            tier: row.try_get(3)?,
            status: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
        })
    }
}

/// The caller's own company; any other id answers 404, like a missing one.
pub async fn get(db: &Db, principal: &Principal, id: Uuid) -> Result<CompanyDetails, AppError> {
    if id != principal.company.0 {
        return Err(AppError::NotFound("company"));
    }
    let conn = db.shared().await?;
    let sql = format!("SELECT {COMPANY_COLUMNS} FROM companies WHERE id = $1");
    match conn.query_opt(&sql, &[&id]).await? {
        Some(row) => CompanyDetails::from_row(&row),
        None => Err(AppError::NotFound("company")),
    }
}

pub fn parse_company_name(raw: Option<&str>) -> Result<Option<String>, AppError> {
    let mut errors = FieldErrors::default();
    let name = errors.check("name", raw.map(|s| text(s, 1, 200)).transpose());
    errors.finish(|| name)
}

/// Renames the caller's company. The slug stays: it may be in links already.
pub async fn update(
    db: &Db,
    principal: &Principal,
    id: Uuid,
    name: Option<String>,
) -> Result<CompanyDetails, AppError> {
    if id != principal.company.0 {
        return Err(AppError::NotFound("company"));
    }
    let mut conn = db.shared().await?;
    let tx = conn.transaction().await?;
    let select = format!("SELECT {COMPANY_COLUMNS} FROM companies WHERE id = $1 FOR UPDATE");
    let before = match tx.query_opt(&select, &[&id]).await? {
        Some(row) => CompanyDetails::from_row(&row)?,
        None => return Err(AppError::NotFound("company")),
    };
    let update = format!(
        "UPDATE companies SET name = coalesce($2, name), updated_at = now() WHERE id = $1 RETURNING {COMPANY_COLUMNS}"
    );
    let after = CompanyDetails::from_row(&tx.query_one(&update, &[&id, &name]).await?)?;
    let entry = principal
        .audit(AuditAction::Update)
        .object("company", id)
        .before(&before)
        .after(&after);
    audit::record_in(&tx, &db.naming().tenant(principal.company).schema, entry).await?;
    tx.commit().await?;
    Ok(after)
}

fn email_taken() -> AppError {
    AppError::Conflict("an account with this email already exists".into())
}

fn conflict_or(e: crate::db::DbError, constraint: &str, message: &str) -> AppError {
    if is_unique_violation(&e, constraint) {
        AppError::Conflict(message.into())
    } else {
        AppError::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Acme Homes, Ltd."), "acme-homes-ltd");
        assert_eq!(slugify("  ---  "), "company");
        assert_eq!(slugify("Ünïcode Estates"), "n-code-estates");
        assert!(slugify(&"a".repeat(80)).len() <= 50);
    }

    #[test]
    fn registration_lists_every_bad_field() {
        let Err(AppError::Validation(errors)) =
            NewCompany::parse(Some(""), Some("nope"), Some("short"), None)
        else {
            panic!("expected a validation error");
        };
        let fields: Vec<&str> = errors.0.keys().map(String::as_str).collect();
        assert_eq!(fields, ["company_name", "email", "full_name", "password"]);
    }
}
