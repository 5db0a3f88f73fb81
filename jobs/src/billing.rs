//! Stripe billing sync (SPEC §6): brings a company's local subscription in step with what
//! Stripe holds, for the day a webhook was lost or arrived out of order.
//!
//! The sync itself belongs to the `estate` crate, which owns the Stripe client and the
//! billing rules; it is handed to the worker as a [`BillingSync`]. This module only says
//! what the job is and when it is queued: on demand for one company (`estate jobs
//! sync-billing`), and daily for every company billed through Stripe, written to the
//! outbox like the audit retention so that the idempotency key makes it once a day however
//! many workers run.

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::{Job, JobError};

pub const JOB: &str = "billing_sync";

/// Sync one company's subscription with Stripe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyncBilling {
    pub company_id: Uuid,
    /// What asked for it: the day (`2026-11-29`) for the daily run, a fresh id for a
    /// request on demand. One sync per request.
    pub requested: String,
}

impl Job for SyncBilling {
    const NAME: &'static str = JOB;
    fn company_id(&self) -> Uuid {
        self.company_id
    }
    fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", Self::NAME, self.company_id, self.requested)
    }
}

/// The future a [`BillingSync`] answers with: what changed, in a line for the log.
pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Performs the sync of one company; implemented by the `estate` binary.
pub trait BillingSync: Send + Sync + 'static {
    fn sync(&self, company: Uuid) -> SyncFuture<'_>;
}

/// Queues a sync of `company` now; answers the job's idempotency key.
pub async fn request(client: &impl GenericClient, company: Uuid) -> Result<String, JobError> {
    let job = SyncBilling {
        company_id: company,
        requested: Uuid::now_v7().to_string(),
    };
    let key = job.idempotency_key();
    let payload = serde_json::to_value(&job).map_err(|e| JobError::Payload(e.to_string()))?;
    let inserted = client
        .execute(
            "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
             SELECT $1, id, $2, $3, $4 FROM companies WHERE id = $5",
            &[&Uuid::now_v7(), &JOB, &payload, &key, &company],
        )
        .await?;
    if inserted == 0 {
        return Err(JobError::NotFound(format!("no company {company}")));
    }
    Ok(key)
}

/// Queues today's sync for every company with a Stripe subscription that has none yet;
/// answers how many were queued.
pub async fn schedule_today(client: &impl GenericClient) -> Result<u64, JobError> {
    Ok(client
        .execute(
            "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
             SELECT gen_random_uuid(), c.id, $1,
                    jsonb_build_object('company_id', c.id, 'requested', current_date::text),
                    $1 || ':' || c.id || ':' || current_date
             FROM companies c
             WHERE c.stripe_subscription_id IS NOT NULL
             ON CONFLICT (idempotency_key) DO NOTHING",
            &[&JOB],
        )
        .await?)
}
