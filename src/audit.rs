//! The per-company audit log (SPEC §7). Every entry is written in the same transaction as
//! the change it records: by [`record`] on a tenant transaction, or by [`record_in`] on a
//! shared-schema transaction (user and company changes, logins), which writes into the
//! company's schema by its server-made name. The tenant role may insert and read entries,
//! never change or remove them (tenant migration V2).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::db::tenancy::{SchemaName, TenantTx};
use crate::domain::listing::{Filters, Listing, Ordering, Page, PageRequest, fetch_page};
use crate::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Update,
    Delete,
    Login,
    LoginFailed,
    Logout,
    PasswordChange,
    UserStatusChange,
    ApiKeyCreated,
    ApiKeyRevoked,
    PaymentRecorded,
    BulkOperation,
    Export,
    PermissionDenied,
    SubscriptionChange,
}

impl AuditAction {
    pub const ALL: [AuditAction; 15] = [
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Login,
        Self::LoginFailed,
        Self::Logout,
        Self::PasswordChange,
        Self::UserStatusChange,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::PaymentRecorded,
        Self::BulkOperation,
        Self::Export,
        Self::PermissionDenied,
        Self::SubscriptionChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Login => "login",
            Self::LoginFailed => "login_failed",
            Self::Logout => "logout",
            Self::PasswordChange => "password_change",
            Self::UserStatusChange => "user_status_change",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::PaymentRecorded => "payment_recorded",
            Self::BulkOperation => "bulk_operation",
            Self::Export => "export",
            Self::PermissionDenied => "permission_denied",
            Self::SubscriptionChange => "subscription_change",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == raw)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!("must be one of {}", names.join(", "))
            })
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin {
    pub request_id: Option<String>,
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

/// One entry, built fluently:
/// `principal.audit(AuditAction::Create).object("estate", id).after(&estate)`.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    action: AuditAction,
    actor: Option<Uuid>,
    actor_kind: &'static str,
    object_type: Option<&'static str>,
    object_id: Option<Uuid>,
    before: Option<Value>,
    after: Option<Value>,
    origin: RequestOrigin,
}

impl AuditEntry {
    /// An entry for something `user` did, from `origin`.
    pub fn new(user: Uuid, origin: &RequestOrigin, action: AuditAction) -> Self {
        AuditEntry {
            action,
            actor: Some(user),
            actor_kind: "user",
            object_type: None,
            object_id: None,
            before: None,
            after: None,
            origin: origin.clone(),
        }
    }

    /// The actor is a machine (`api_key`, `oauth_client`: its id), not a user.
    /// An entry for a change no user made (a Stripe webhook, a period ending).
    pub fn system(origin: &RequestOrigin, action: AuditAction) -> Self {
        AuditEntry {
            actor: None,
            actor_kind: "system",
            ..AuditEntry::new(Uuid::nil(), origin, action)
        }
    }

    pub fn by_machine(mut self, kind: &'static str) -> Self {
        self.actor_kind = kind;
        self
    }

    pub fn object(mut self, object_type: &'static str, id: Uuid) -> Self {
        self.object_type = Some(object_type);
        self.object_id = Some(id);
        self
    }

    /// For an entry about a kind of object rather than one (bulk operations).
    pub fn object_type(mut self, object_type: &'static str) -> Self {
        self.object_type = Some(object_type);
        self
    }

    pub fn before(mut self, value: &impl serde::Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after(mut self, value: &impl serde::Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

fn insert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (id, action, actor_id, object_type, object_id, before, after, ip, user_agent, request_id, actor_kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
}

macro_rules! entry_params {
    ($e:expr, $id:expr) => {
        [
            &$id as &(dyn tokio_postgres::types::ToSql + Sync),
            &$e.action.as_str(),
            &$e.actor,
            &$e.object_type,
            &$e.object_id,
            &$e.before,
            &$e.after,
            &$e.origin.ip,
            &$e.origin.user_agent,
            &$e.origin.request_id,
            &$e.actor_kind,
        ]
    };
}

/// Records an entry in the transaction's own company.
pub async fn record(tx: &mut TenantTx, entry: AuditEntry) -> Result<(), AppError> {
    let id = Uuid::now_v7();
    tx.execute(&insert_sql("audit_log"), &entry_params!(entry, id))
        .await?;
    Ok(())
}

/// Records an entry in `schema`'s audit log from a shared-schema transaction.
pub async fn record_in(
    client: &impl GenericClient,
    schema: &SchemaName,
    entry: AuditEntry,
) -> Result<(), AppError> {
    let id = Uuid::now_v7();
    let table = format!("{}.audit_log", schema.quoted());
    client
        .execute(&insert_sql(&table), &entry_params!(entry, id))
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: Uuid,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub actor_kind: String,
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, action, actor_id, actor_kind, object_type, object_id, before, after, host(ip), user_agent, request_id, created_at";
const LISTING: Listing<AuditRecord> = Listing {
    columns: COLUMNS,
    column_count: 12,
    from: "audit_log",
    noun: "audit entry",
    from_row: AuditRecord::from_row,
};

impl AuditRecord {
    fn from_row(row: &Row) -> Result<Self, AppError> {
        Ok(AuditRecord {
            id: row.try_get(0)?,
            action: row.try_get(1)?,
            actor_id: row.try_get(2)?,
            actor_kind: row.try_get(3)?,
            object_type: row.try_get(4)?,
            object_id: row.try_get(5)?,
            before: row.try_get(6)?,
            after: row.try_get(7)?,
            ip: row.try_get(8)?,
            user_agent: row.try_get(9)?,
            request_id: row.try_get(10)?,
            created_at: row.try_get(11)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<Uuid>,
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ordering: Ordering,
    pub page: PageRequest,
}

pub const ORDERING_FIELDS: [&str; 2] = ["created_at", "action"];
pub const DEFAULT_ORDERING: Ordering = Ordering {
    column: "created_at",
    descending: true,
};

pub async fn list(tx: &mut TenantTx, filter: &AuditFilter) -> Result<Page<AuditRecord>, AppError> {
    let mut filters = Filters::default();
    if let Some(action) = filter.action {
        filters.and("action = ?", action.as_str());
    }
    if let Some(actor) = filter.actor {
        filters.and("actor_id = ?", actor);
    }
    if let Some(object_type) = &filter.object_type {
        filters.and("object_type = ?", object_type.clone());
    }
    if let Some(object_id) = filter.object_id {
        filters.and("object_id = ?", object_id);
    }
    if let Some(after) = filter.created_after {
        filters.and("created_at >= ?", after);
    }
    if let Some(before) = filter.created_before {
        filters.and("created_at < ?", before);
    }
    fetch_page(tx, &LISTING, &filters, &filter.ordering, filter.page).await
}
