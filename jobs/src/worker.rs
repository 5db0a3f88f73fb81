//! The worker: runs jobs from the apalis queue in Redis, and the outbox relay that feeds
//! it, until told to stop (SIGTERM), finishing the jobs it holds.
//!
//! Each job's effect happens once: its idempotency key is looked up in `job_effects`
//! before and recorded there right after the effect. A failing job is retried with
//! exponential backoff; after [`MAX_ATTEMPTS`] it is kept in `dead_jobs` with its last
//! error (and answered as done to apalis, whose backend would otherwise reschedule it
//! up to 25 times).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::{Config as RedisConfig, RedisStorage};
use deadpool_postgres::Pool;
use serde_json::Value;

use crate::billing::BillingSync;
use crate::mail::{Mailer, Rendered, Templates};
use crate::{Envelope, JobError, billing, relay, retention};

/// Attempts before a job is declared dead.
pub const MAX_ATTEMPTS: usize = 5;
/// Backoff before the second attempt; doubled for each one after.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);

pub struct Settings {
    pub pool: Pool,
    pub redis_url: String,
    /// The Redis queue; one per database, so deployments sharing a Redis stay apart.
    pub queue: String,
    pub smtp_url: Option<String>,
    pub mail_dir: PathBuf,
    pub mail_from: String,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a worker may miss its heartbeats before its jobs are handed to others
    /// (a killed worker's jobs run again after this).
    pub orphan_after: Duration,
    /// Runs billing-sync jobs; `None` when Stripe is not configured (such jobs then do
    /// nothing: there is nothing to sync with).
    pub billing_sync: Option<Arc<dyn BillingSync>>,
}

/// What a job handler needs.
pub struct Context {
    pool: Pool,
    mailer: Mailer,
    templates: Templates,
    from: String,
    billing_sync: Option<Arc<dyn BillingSync>>,
}

/// The queue's storage, configured for quick pick-up: an idle worker looks again every
/// heartbeat, so the heartbeat is short; many missed heartbeats before a worker's jobs
/// are taken back, so a slow job is not run twice.
pub async fn storage(
    redis_url: &str,
    queue: &str,
    orphan_after: Duration,
) -> Result<RedisStorage<Envelope>, JobError> {
    let conn = apalis_redis::connect(redis_url)
        .await
        .map_err(|e| JobError::Queue(e.to_string()))?;
    let config = RedisConfig::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats((orphan_after.as_millis() / HEARTBEAT.as_millis()).max(5) as usize);
    Ok(RedisStorage::new(conn).with_config(config))
}

/// How often an idle worker looks for jobs and tells Redis it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(200);

/// Runs the relay and the worker until `stop` resolves.
pub async fn run(
    settings: Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), JobError> {
    let storage = storage(&settings.redis_url, &settings.queue, settings.orphan_after).await?;
    let context = Arc::new(Context {
        pool: settings.pool.clone(),
        mailer: Mailer::new(settings.smtp_url.as_deref(), settings.mail_dir.clone())?,
        templates: Templates::load()?,
        from: settings.mail_from.clone(),
        billing_sync: settings.billing_sync.clone(),
    });
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let relay_stop = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let relay = tokio::spawn(relay::run(
        settings.pool.clone(),
        storage.clone(),
        relay_stop,
    ));
    let schedule = tokio::spawn(schedule(
        settings.pool.clone(),
        storage.clone(),
        stopped.clone(),
    ));
    // apalis refuses a worker name seen in the last minutes: one name per process start.
    let name = format!("estate-worker-{}", uuid::Uuid::new_v4().simple());
    let worker = WorkerBuilder::new(name)
        .backend(storage)
        .data(context)
        .concurrency(settings.concurrency.max(1))
        .build(handle);
    let worker_stop = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        }
    };
    tokio::spawn(async move {
        stop.await;
        tracing::info!("stopping: finishing the jobs in hand");
        let _ = stopping.send(true);
    });
    tracing::info!(queue = %settings.queue, concurrency = settings.concurrency, "worker started");
    let outcome = worker.run_until(worker_stop).await;
    tracing::info!("worker stopped");
    let _ = relay.await;
    schedule.abort();
    outcome.map_err(|e| JobError::Queue(e.to_string()))
}

/// Writes the daily jobs to the outbox now and every [`SCHEDULE_INTERVAL`]; the
/// idempotency keys make each once a day however many workers run. Clears finished jobs
/// out of Redis at the same pace.
async fn schedule(
    pool: Pool,
    mut storage: RedisStorage<Envelope>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match vacuum(&mut storage, KEEP_FINISHED).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "finished jobs cleared from Redis"),
            Err(e) => tracing::warn!(error = %e, "could not clear finished jobs from Redis"),
        }
        let queued = async {
            let client = pool.get().await?;
            let retention = retention::schedule_today(&client).await?;
            let syncs = billing::schedule_today(&client).await?;
            Ok::<_, JobError>((retention, syncs))
        };
        match queued.await {
            Ok((0, 0)) => {}
            Ok((retention, syncs)) => {
                tracing::info!(retention, billing_syncs = syncs, "daily jobs queued")
            }
            Err(e) => tracing::warn!(error = %e, "could not queue the daily jobs"),
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(SCHEDULE_INTERVAL) => {}
        }
    }
}

/// How long a finished job stays in Redis (for apalis' own views) before [`vacuum`].
pub const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// apalis-redis keeps every finished job (its payload, its metadata and its id in the
/// queue's done set) until vacuumed: without this Redis grows by every job ever run. Its
/// vacuum clears payloads and metadata; the done set is trimmed here of the ids whose
/// metadata is gone. Answers how many jobs were cleared.
pub async fn vacuum(
    storage: &mut RedisStorage<Envelope>,
    older_than: Duration,
) -> Result<usize, JobError> {
    use apalis_core::backend::Vacuum;
    let queue = |e: &dyn std::fmt::Display| JobError::Queue(e.to_string());
    let cleared = storage
        .vacuum_before(older_than)
        .await
        .map_err(|e| queue(&e))?;
    let config = storage.get_config().clone();
    redis::Script::new(TRIM_DONE_SET)
        .key(config.done_jobs_set())
        .key(config.job_meta_hash())
        .invoke_async::<usize>(storage.get_connection())
        .await
        .map_err(|e| queue(&e))?;
    Ok(cleared)
}

/// KEYS[1]: the done set; KEYS[2]: the metadata key prefix.
const TRIM_DONE_SET: &str = r"
local removed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', KEYS[2] .. ':' .. id) == 0 then
    redis.call('SREM', KEYS[1], id)
    removed = removed + 1
  end
end
return removed
";

/// How often the daily schedule is checked.
pub const SCHEDULE_INTERVAL: Duration = Duration::from_secs(300);

/// Runs one job, on a Sentry hub tagged with its tenant and job when Sentry is on.
async fn handle(job: Envelope, ctx: Data<Arc<Context>>) -> Result<(), JobError> {
    use sentry::SentryFutureExt;
    let main = sentry::Hub::main();
    if main.client().is_none() {
        return run_job(job, ctx).await;
    }
    // Errors reported from this job name its tenant and job.
    let hub = Arc::new(sentry::Hub::new_from_top(main));
    hub.configure_scope(|scope| {
        scope.set_tag("tenant", job.company_id);
        scope.set_tag("job", &job.job);
    });
    run_job(job, ctx).bind_hub(hub).await
}

/// Attempts the job up to [`MAX_ATTEMPTS`] times in this run, with exponential backoff
/// between attempts, then keeps it as dead. Retrying here rather than through apalis'
/// backend (which reschedules failed tasks on its own, slower and irregular clock) makes
/// the attempts and their timing the program's. A worker that dies mid-way leaves the job
/// to another, which starts its attempts again.
async fn run_job(job: Envelope, ctx: Data<Arc<Context>>) -> Result<(), JobError> {
    if done(&ctx.pool, &job.idempotency_key).await? {
        tracing::info!(job = %job.job, key = %job.idempotency_key, "already done; skipped");
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        match caught(perform(&ctx, &job)).await {
            Ok(()) => {
                record_done(&ctx.pool, &job).await?;
                tracing::info!(job = %job.job, company = %job.company_id, attempt, "job done");
                return Ok(());
            }
            Err(e) if attempt >= MAX_ATTEMPTS => {
                tracing::error!(job = %job.job, company = %job.company_id, error = %e, "job is dead");
                bury(&ctx.pool, &job, attempt, &e.to_string()).await?;
                return Ok(());
            }
            Err(e) => {
                let wait = FIRST_BACKOFF * 2u32.pow(attempt as u32 - 1);
                tracing::warn!(job = %job.job, company = %job.company_id, error = %e, attempt,
                    retry_in_ms = wait.as_millis() as u64, "job failed; will retry");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// A panic in a job is a failed attempt (Sentry's panic hook has reported it, on the job's
/// hub), not a lost task.
async fn caught(attempt: impl Future<Output = Result<(), JobError>>) -> Result<(), JobError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(JobError::Panicked(message))
        }
    }
}

async fn done(pool: &Pool, key: &str) -> Result<bool, JobError> {
    Ok(pool
        .get()
        .await?
        .query_opt(
            "SELECT 1 FROM job_effects WHERE idempotency_key = $1",
            &[&key],
        )
        .await?
        .is_some())
}

async fn record_done(pool: &Pool, job: &Envelope) -> Result<(), JobError> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO job_effects (idempotency_key, job) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&job.idempotency_key, &job.job],
        )
        .await?;
    Ok(())
}

async fn bury(pool: &Pool, job: &Envelope, attempts: usize, error: &str) -> Result<(), JobError> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO dead_jobs (outbox_id, company_id, job, idempotency_key, attempts, last_error)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (outbox_id) DO UPDATE
             SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, died_at = now()",
            &[
                &job.outbox_id,
                &job.company_id,
                &job.job,
                &job.idempotency_key,
                &(attempts as i32),
                &error,
            ],
        )
        .await?;
    Ok(())
}

/// The job's effect.
async fn perform(ctx: &Context, job: &Envelope) -> Result<(), JobError> {
    if job.job == retention::JOB {
        let deleted = retention::prune(&ctx.pool, job.company_id).await?;
        tracing::info!(company = %job.company_id, deleted, "audit retention");
        return Ok(());
    }
    if job.job == billing::JOB {
        let Some(sync) = &ctx.billing_sync else {
            tracing::info!(company = %job.company_id, "billing sync: Stripe is not configured; nothing to do");
            return Ok(());
        };
        let summary = sync.sync(job.company_id).await.map_err(JobError::Billing)?;
        tracing::info!(company = %job.company_id, %summary, "billing sync");
        return Ok(());
    }
    let recipients = recipients(ctx, job).await?;
    let mail: Rendered = ctx.templates.render(&job.job, &job.payload)?;
    for (n, to) in recipients.iter().enumerate() {
        let message_id = format!(
            "<{}.{n}@estate-api>",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, job.idempotency_key.as_bytes(),)
        );
        ctx.mailer.send(&ctx.from, to, &message_id, &mail).await?;
    }
    Ok(())
}

/// Who the job's e-mail goes to: the address it carries, or the company's owners.
async fn recipients(ctx: &Context, job: &Envelope) -> Result<Vec<String>, JobError> {
    let carried = |field: &str| {
        job.payload
            .get(field)
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .ok_or_else(|| JobError::Payload(format!("{} without {field}", job.job)))
    };
    match job.job.as_str() {
        "welcome_email" | "password_changed_email" => carried("email"),
        "allocation_confirmation_email" | "payment_received_email" => carried("client_email"),
        "quota_warning" | "payment_failed_email" => {
            let rows = ctx
                .pool
                .get()
                .await?
                .query(
                    "SELECT email FROM users WHERE company_id = $1 AND role = 'owner' AND is_active
                     ORDER BY created_at",
                    &[&job.company_id],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }
        other => Err(JobError::Payload(format!("no handler for job `{other}`"))),
    }
}
