//! Who is calling: credentials in, a [`Principal`] out (SPEC §3).
//!
//! The principal's company comes from the credential alone; nothing a request says can
//! point it at another tenant.

pub mod api_keys;
pub mod jwt;
pub mod oauth_clients;
pub mod password;
pub mod permissions;
pub mod session;
pub mod throttle;
pub mod verdict;

use uuid::Uuid;

pub use crate::audit::RequestOrigin;
use crate::audit::{AuditAction, AuditEntry};

use crate::db::tenancy::CompanyId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Whether a request only reads or may write: a suspended company's owner may still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An authenticated caller: the token's signature and claims are verified. Whether the
/// session still counts (not revoked, user active, company not suspended) is checked by
/// the database with the request's first statement: see `session::guard`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub company: CompanyId,
    pub role: Role,
    /// The access token's id, so logout can revoke exactly this token.
    pub jti: Uuid,
    /// The login session (refresh-token family), when the token names one.
    pub session: Option<Uuid>,
    pub token_expires_at: i64,
    pub origin: RequestOrigin,
    /// Set when the caller is a machine (an API key or an OAuth client) acting for
    /// `user_id`, the user who created it.
    pub machine: Option<Machine>,
}

/// A machine caller: no session, no password, rights from its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    ApiKey(Uuid),
    OAuthClient(Uuid),
    /// Stripe, through a verified webhook, completing a payment a user started. Never
    /// presented as a credential, so never guarded by a session verdict.
    Stripe,
}

impl Principal {
    /// Starts an audit entry for something this caller did.
    pub fn audit(&self, action: AuditAction) -> AuditEntry {
        match self.machine {
            Some(Machine::ApiKey(key)) => {
                AuditEntry::new(key, &self.origin, action).by_machine("api_key")
            }
            Some(Machine::OAuthClient(client)) => {
                AuditEntry::new(client, &self.origin, action).by_machine("oauth_client")
            }
            Some(Machine::Stripe) => AuditEntry::system(&self.origin, action),
            None => AuditEntry::new(self.user_id, &self.origin, action),
        }
    }
}
