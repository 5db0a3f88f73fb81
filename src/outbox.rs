//! The job outbox (SPEC §6): a job is written in the same transaction as the change that
//! causes it, so a committed change never loses its job, even when Redis is down; a relay
//! hands rows to the queue later. Tenant transactions write here through the tenants'
//! group role, which may insert rows and nothing else.

use deadpool_postgres::GenericClient;
use estate_jobs::Job;
use uuid::Uuid;

use crate::db::tenancy::TenantTx;
use crate::error::AppError;

/// `ON CONFLICT DO NOTHING`: a job whose idempotency key is already queued is not queued
/// twice (a retried request, a re-run). It needs only the INSERT right.
const INSERT: &str = "INSERT INTO public.outbox (id, company_id, job, payload, idempotency_key)
                      VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

fn payload<J: Job>(job: &J) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(job).map_err(|e| AppError::Internal(format!("job payload: {e}")))
}

/// Queues `job` in the caller's tenant transaction.
pub async fn enqueue<J: Job>(tx: &mut TenantTx, job: &J) -> Result<(), AppError> {
    let payload = payload(job)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &Uuid::now_v7(),
        &job.company_id(),
        &J::NAME,
        &payload,
        &job.idempotency_key(),
    ];
    tx.execute(INSERT, &params).await?;
    Ok(())
}

/// Queues `job` in a shared-schema transaction (user management, registration).
pub async fn enqueue_shared<J: Job>(client: &impl GenericClient, job: &J) -> Result<(), AppError> {
    let payload = payload(job)?;
    client
        .execute(
            INSERT,
            &[
                &Uuid::now_v7(),
                &job.company_id(),
                &J::NAME,
                &payload,
                &job.idempotency_key(),
            ],
        )
        .await?;
    Ok(())
}
