//! Business rules. Functions here take a [`crate::db::tenancy::TenantTx`] (tenant data) or a
//! shared-schema connection, and know nothing of HTTP.

pub mod companies;
pub mod estates;
pub mod listing;
pub mod users;
pub mod values;
