//! Audit retention (SPEC §6): each day, every company's audit entries older than its
//! tier's retention are deleted, in batches so no statement holds locks for long.
//!
//! The daily schedule is written to the outbox like any job, one row per company and day
//! whose idempotency key names both; every worker process may write it, and the key
//! makes it once. (Cron in each process would run it once per process.)

use deadpool_postgres::{GenericClient, Pool};
use uuid::Uuid;

use crate::JobError;

pub const JOB: &str = "audit_retention";
/// Rows deleted per statement.
pub const BATCH: i64 = 1000;

/// Queues today's retention job for every company that has none yet; answers how many
/// were queued.
pub async fn schedule_today(client: &impl GenericClient) -> Result<u64, JobError> {
    Ok(client
        .execute(
            "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
             SELECT gen_random_uuid(), t.company_id, $1,
                    jsonb_build_object('company_id', t.company_id, 'day', current_date),
                    $1 || ':' || t.company_id || ':' || current_date
             FROM tenants t
             ON CONFLICT (idempotency_key) DO NOTHING",
            &[&JOB],
        )
        .await?)
}

/// Deletes the company's audit entries older than its tier's retention; answers how many.
pub async fn prune(pool: &Pool, company: Uuid) -> Result<u64, JobError> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT t.schema_name, p.audit_retention_days
             FROM tenants t
             JOIN companies c ON c.id = t.company_id
             JOIN plans p ON p.tier = c.tier
             WHERE t.company_id = $1",
            &[&company],
        )
        .await?
    else {
        return Ok(0);
    };
    let schema: String = row.get(0);
    let days: i32 = row.get(1);
    // The schema name comes from the registry, which only holds names the server made
    // (checked by its CHECK constraint); quoted all the same.
    let sql = format!(
        "DELETE FROM \"{schema}\".audit_log WHERE id IN (
             SELECT id FROM \"{schema}\".audit_log
             WHERE created_at < now() - make_interval(days => $1)
             LIMIT $2)"
    );
    let mut total = 0;
    loop {
        let deleted = client.execute(&sql, &[&days, &BATCH]).await?;
        total += deleted;
        if (deleted as i64) < BATCH {
            return Ok(total);
        }
    }
}
