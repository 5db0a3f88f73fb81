//! Background jobs of Estate API (SPEC §6): what each job carries, and the worker.
//!
//! A job is written to the outbox in the same transaction as the change that causes it
//! (see `estate::outbox`); the relay (`relay`) hands committed rows to the apalis queue in
//! Redis, and the worker (`worker`) runs them; `dead` lists and retries jobs that kept
//! failing.
//!
//! Every job carries its company id (nothing relies on a global current tenant) and an
//! idempotency key: the same effect is enqueued, and later performed, once.

pub mod billing;
pub mod dead;
pub mod mail;
pub mod relay;
pub mod retention;
pub mod worker;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job as it travels from the outbox through Redis to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub outbox_id: Uuid,
    pub company_id: Uuid,
    /// The job's name ([`Job::NAME`]).
    pub job: String,
    pub payload: serde_json::Value,
    pub idempotency_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("queue: {0}")]
    Queue(String),
    #[error(transparent)]
    Mail(#[from] mail::MailError),
    #[error("payload: {0}")]
    Payload(String),
    #[error("{0}")]
    NotFound(String),
    #[error("billing sync: {0}")]
    Billing(String),
    #[error("panicked: {0}")]
    Panicked(String),
}

/// A kind of background job.
pub trait Job: Serialize {
    /// The job's name, as stored in the outbox and used to route it to its handler.
    const NAME: &'static str;

    /// The company the job belongs to.
    fn company_id(&self) -> Uuid;

    /// Identifies the effect: two jobs with the same key are the same job.
    fn idempotency_key(&self) -> String;
}

/// "Welcome" e-mail to a user created in a company.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WelcomeEmail {
    pub company_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub full_name: String,
}

impl Job for WelcomeEmail {
    const NAME: &'static str = "welcome_email";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}", Self::NAME, self.user_id)
    }
}

/// "Your password was changed" notice.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PasswordChangedEmail {
    pub company_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    /// Each change is its own notice.
    pub change_id: Uuid,
}

impl Job for PasswordChangedEmail {
    const NAME: &'static str = "password_changed_email";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}", Self::NAME, self.change_id)
    }
}

/// Confirmation to a client that a property was allocated to them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AllocationConfirmationEmail {
    pub company_id: Uuid,
    pub allocation_id: Uuid,
    pub client_email: String,
    pub client_name: String,
    pub plot_number: String,
    /// Money as a decimal string with two places.
    pub total_price: String,
}

impl Job for AllocationConfirmationEmail {
    const NAME: &'static str = "allocation_confirmation_email";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}", Self::NAME, self.allocation_id)
    }
}

/// Receipt to a client for a payment on their allocation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PaymentReceivedEmail {
    pub company_id: Uuid,
    pub allocation_id: Uuid,
    pub payment_id: Uuid,
    pub client_email: String,
    pub client_name: String,
    /// Money as decimal strings with two places.
    pub amount: String,
    pub balance: String,
}

impl Job for PaymentReceivedEmail {
    const NAME: &'static str = "payment_received_email";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}", Self::NAME, self.payment_id)
    }
}

/// "Your subscription payment failed" notice to the company's owners.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PaymentFailedEmail {
    pub company_id: Uuid,
    /// The Stripe invoice that failed; one notice per invoice.
    pub invoice_id: String,
    pub amount_due: Option<String>,
    pub currency: Option<String>,
}

impl Job for PaymentFailedEmail {
    const NAME: &'static str = "payment_failed_email";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}", Self::NAME, self.invoice_id)
    }
}

/// A company crossed a share (80 or 100 percent) of its hourly request quota.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaWarning {
    pub company_id: Uuid,
    /// 80 or 100.
    pub threshold_percent: u8,
    /// Start of the hour (Unix seconds) the quota belongs to; one warning per threshold
    /// per hour.
    pub window_start: i64,
    pub limit: u64,
}

impl Job for QuotaWarning {
    const NAME: &'static str = "quota_warning";
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            Self::NAME,
            self.company_id,
            self.window_start,
            self.threshold_percent
        )
    }
}
