//! The outbox relay: hands committed outbox rows to the apalis queue in Redis.
//!
//! A batch of unrelayed rows is claimed with `FOR UPDATE SKIP LOCKED` (so several relays
//! never hand off the same row at once), pushed to Redis, and marked relayed in the same
//! transaction only after Redis accepted them. If Redis fails, the transaction rolls back
//! and the rows wait for the next round; a row pushed twice (Redis accepted, the commit
//! was lost) is harmless because every job's effect is idempotent.

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::RedisStorage;
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::{Envelope, JobError};

/// How often an idle relay looks for new rows.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Rows handed off per transaction.
pub const BATCH: i64 = 200;

/// Relays one batch; answers how many rows it handed off.
pub async fn relay_batch(
    pool: &Pool,
    storage: &mut RedisStorage<Envelope>,
) -> Result<usize, JobError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let rows = tx
        .query(
            "SELECT id, company_id, job, payload, idempotency_key FROM outbox
             WHERE relayed_at IS NULL
             ORDER BY created_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&BATCH],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let envelopes: Vec<Envelope> = rows
        .iter()
        .map(|r| Envelope {
            outbox_id: r.get(0),
            company_id: r.get(1),
            job: r.get(2),
            payload: r.get(3),
            idempotency_key: r.get(4),
        })
        .collect();
    storage
        .push_bulk(envelopes)
        .await
        .map_err(|e| JobError::Queue(e.to_string()))?;
    tx.execute(
        "UPDATE outbox SET relayed_at = now() WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Relays until `stop` resolves. Failures (Redis or PostgreSQL away) are logged and
/// retried after a pause; nothing is lost, since rows stay unrelayed until handed off.
pub async fn run(pool: Pool, mut storage: RedisStorage<Envelope>, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut failing = false;
    loop {
        let pause = match relay_batch(&pool, &mut storage).await {
            Ok(n) => {
                if failing {
                    tracing::info!("outbox relay recovered");
                    failing = false;
                }
                if n as i64 == BATCH {
                    continue;
                }
                POLL_INTERVAL
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    failing = true;
                }
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
