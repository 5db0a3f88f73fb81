//! Business rules. Functions here take a [`crate::db::tenancy::TenantTx`] (tenant data) or a
//! shared-schema connection, and know nothing of HTTP.

pub mod allocations;
pub mod clients;
pub mod companies;
pub mod estates;
pub mod idempotency;
pub mod listing;
pub mod properties;
pub mod transactions;
pub mod users;
pub mod values;

use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::AppError;

/// Members may change only what they created; admins and owners anything in their company.
/// (Who may write at all is the permission table's business.)
pub(crate) fn may_change(
    principal: &Principal,
    created_by: Uuid,
    what: &str,
) -> Result<(), AppError> {
    if principal.role.at_least(Role::Admin) || created_by == principal.user_id {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "members may only change {what} they created"
        )))
    }
}
