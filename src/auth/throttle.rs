//! Refusal of repeated failed logins, per account and per client address (SPEC §3).
//!
//! Counters live in the shared schema so that every server process sees the same count.
//! Each key has one fixed window: once its failures reach the limit, logins for that key
//! answer 429 until the window ends, whatever the password.

use std::net::IpAddr;

use deadpool_postgres::GenericClient;

use crate::error::AppError;

pub const WINDOW_SECS: i64 = 15 * 60;
pub const ACCOUNT_LIMIT: i32 = 5;
pub const ADDRESS_LIMIT: i32 = 50;

pub struct LoginKeys {
    account: String,
    address: Option<String>,
}

impl LoginKeys {
    pub fn new(email: &str, address: Option<IpAddr>) -> Self {
        LoginKeys {
            account: format!("account:{}", email.to_lowercase()),
            address: address.map(|a| format!("address:{a}")),
        }
    }

    fn all(&self) -> Vec<&str> {
        std::iter::once(self.account.as_str())
            .chain(self.address.as_deref())
            .collect()
    }

    fn limit_for(key: &str) -> i32 {
        if key.starts_with("account:") {
            ACCOUNT_LIMIT
        } else {
            ADDRESS_LIMIT
        }
    }
}

/// Refuses the attempt if the account or the address has used up its failures.
pub async fn check(conn: &impl GenericClient, keys: &LoginKeys) -> Result<(), AppError> {
    let rows = conn
        .query(
            "SELECT key, failures,
                    ceil(extract(epoch FROM window_started_at + make_interval(secs => $2) - now()))::bigint
             FROM login_failures
             WHERE key = ANY($1) AND window_started_at > now() - make_interval(secs => $2)",
            &[&keys.all(), &(WINDOW_SECS as f64)],
        )
        .await?;
    let retry_after = rows
        .iter()
        .filter(|row| row.get::<_, i32>(1) >= LoginKeys::limit_for(row.get(0)))
        .map(|row| row.get::<_, i64>(2).max(1) as u64)
        .max();
    match retry_after {
        Some(retry_after_secs) => Err(AppError::TooManyRequests {
            retry_after_secs,
            detail: "too many failed logins; try again later".into(),
        }),
        None => Ok(()),
    }
}

pub async fn record_failure(conn: &impl GenericClient, keys: &LoginKeys) -> Result<(), AppError> {
    conn.execute(
        "INSERT INTO login_failures AS f (key, failures, window_started_at)
         SELECT k, 1, now() FROM unnest($1::text[]) AS k
         ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN f.window_started_at <= now() - make_interval(secs => $2)
                             THEN 1 ELSE f.failures + 1 END,
             window_started_at = CASE WHEN f.window_started_at <= now() - make_interval(secs => $2)
                                      THEN now() ELSE f.window_started_at END",
        &[&keys.all(), &(WINDOW_SECS as f64)],
    )
    .await?;
    Ok(())
}

/// A successful login clears the account's count (not the address's).
pub async fn clear_account(conn: &impl GenericClient, keys: &LoginKeys) -> Result<(), AppError> {
    conn.execute(
        "DELETE FROM login_failures WHERE key = $1",
        &[&keys.account],
    )
    .await?;
    Ok(())
}
