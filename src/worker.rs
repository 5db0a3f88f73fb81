//! `estate worker`: the outbox relay and the job worker of `estate-jobs`, configured from
//! the process's configuration, with the billing sync this crate implements.

use estate_jobs::worker::{self, Settings};

use crate::billing::subscriptions::Billing;
use crate::billing::sync::StripeSync;
use crate::config::Config;
use crate::db::Db;
use crate::error::AppError;

/// The Redis queue of this database's jobs, so deployments sharing a Redis stay apart.
pub fn queue_name(config: &Config) -> String {
    format!("estate:{}:jobs", config.tenancy.role_prefix())
}

pub async fn settings(config: &Config, db: &Db) -> Result<Settings, AppError> {
    let billing = Billing::load(config, db).await?;
    Ok(Settings {
        pool: db.pool().clone(),
        redis_url: config.redis_url.expose().to_string(),
        queue: queue_name(config),
        smtp_url: config.smtp_url.as_ref().map(|s| s.expose().to_string()),
        mail_dir: config.mail_dir.clone(),
        mail_from: config.mail_from.clone(),
        concurrency: config.worker_concurrency,
        orphan_after: config.worker_orphan_after,
        billing_sync: StripeSync::for_worker(db.clone(), billing),
    })
}

/// Runs until `stop` resolves (SIGTERM/SIGINT for the command).
pub async fn run(
    config: &Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let db = Db::connect(config)?;
    if config.smtp_url.is_none() {
        tracing::info!(dir = %config.mail_dir.display(), "SMTP_URL is not set: e-mails are written as .eml files");
    }
    worker::run(settings(config, &db).await?, stop)
        .await
        .map_err(|e| AppError::Internal(format!("worker: {e}")))
}
