//! The error type of the service layer (auth and domain). The HTTP layer maps it to
//! problem+json in one place (`api::problem`); nothing below it knows about HTTP.

use std::collections::BTreeMap;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the request has invalid fields")]
    Validation(FieldErrors),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// The company's plan does not include a feature the operation needs.
    #[error("the {tier} plan does not include the `{feature}` feature")]
    FeatureNotInPlan { feature: String, tier: String },
    /// Creating one more would pass the plan's ceiling for a resource.
    #[error("the {tier} plan allows at most {limit} {resource}")]
    PlanLimitReached {
        resource: &'static str,
        limit: i64,
        tier: String,
    },
    /// The subscription is unpaid or cancelled: the company may read, not write.
    #[error("{0}")]
    PaymentRequired(String),
    /// A conflict with the current state that names each part of it, e.g. every limit a
    /// downgrade would break.
    #[error("{detail}")]
    ConflictFields { detail: String, fields: FieldErrors },
    /// The payment provider failed or refused.
    #[error("{0}")]
    Upstream(String),
    /// The server is not set up for this (e.g. card payments without Stripe).
    #[error("{0}")]
    NotConfigured(String),
    /// A webhook whose signature does not verify.
    #[error("{0}")]
    BadSignature(String),
    #[error("{detail}")]
    TooManyRequests {
        retry_after_secs: u64,
        detail: String,
    },
    #[error(transparent)]
    Db(DbError),
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            // A tenant transaction's session check said no.
            DbError::Refused(reason) => crate::auth::verdict::refusal(&reason),
            e => AppError::Db(e),
        }
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        AppError::Db(DbError::Postgres(e))
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AppError::Db(DbError::Pool(e))
    }
}

/// Field name → messages, collected while parsing input so that one answer lists every
/// problem at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.into());
    }

    /// Records the error of a field parser and keeps its value, if it parsed.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.add(field, message)).ok()
    }

    /// `Ok(value)` when no field failed; the value is built only then.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, AppError> {
        if !self.0.is_empty() {
            return Err(AppError::Validation(self));
        }
        build().ok_or_else(|| AppError::Internal("a parsed field went missing".into()))
    }
}

impl FieldErrors {
    /// Files every field error of `e` under `prefix` (`items[3]` → `items[3].price`), or,
    /// for an error of the item as a whole (conflict, not found, forbidden), under
    /// `prefix` itself. Other errors are not an item's fault and are handed back.
    pub fn absorb(&mut self, prefix: &str, e: AppError) -> Result<(), AppError> {
        match e {
            AppError::Validation(fields) => {
                for (field, messages) in fields.0 {
                    for message in messages {
                        self.add(&format!("{prefix}.{field}"), message);
                    }
                }
            }
            AppError::Conflict(message) | AppError::Forbidden(message) => self.add(prefix, message),
            AppError::NotFound(what) => self.add(prefix, format!("no such {what}")),
            other => return Err(other),
        }
        Ok(())
    }
}

/// True when the error is a unique violation of the named constraint.
pub fn is_unique_violation(e: &DbError, constraint: &str) -> bool {
    e.sql_state() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        && e.constraint() == Some(constraint)
}

/// An error and its causes on one line, for the registry and the operator's report.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
