//! Jobs that kept failing: listed by `estate jobs dead`, handed back by `estate jobs retry`.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::JobError;

#[derive(Debug, Clone)]
pub struct DeadJob {
    pub id: Uuid,
    pub company_id: Uuid,
    pub job: String,
    pub attempts: i32,
    pub last_error: String,
    pub died_at: DateTime<Utc>,
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<DeadJob>, JobError> {
    let rows = client
        .query(
            "SELECT outbox_id, company_id, job, attempts, last_error, died_at
             FROM dead_jobs ORDER BY died_at",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeadJob {
            id: r.get(0),
            company_id: r.get(1),
            job: r.get(2),
            attempts: r.get(3),
            last_error: r.get(4),
            died_at: r.get(5),
        })
        .collect())
}

/// Hands a dead job back to the queue: its outbox row becomes unrelayed again, so the
/// relay pushes it with a fresh set of attempts. Its idempotency key is unchanged, so a
/// job that did reach its effect after all is not repeated.
pub async fn retry(client: &mut deadpool_postgres::Object, id: Uuid) -> Result<(), JobError> {
    let tx = client.transaction().await?;
    let removed = tx
        .execute("DELETE FROM dead_jobs WHERE outbox_id = $1", &[&id])
        .await?;
    if removed == 0 {
        return Err(JobError::NotFound(format!("no dead job {id}")));
    }
    tx.execute("UPDATE outbox SET relayed_at = NULL WHERE id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(())
}
