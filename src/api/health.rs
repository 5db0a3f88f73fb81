//! `GET /health` (the process answers) and `GET /ready` (PostgreSQL and Redis answer).

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{ApiState, ApiTags};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HealthApi;

#[derive(Object)]
pub struct Health {
    /// Always `ok` when the process answers.
    pub status: String,
}

#[derive(Object)]
pub struct Readiness {
    /// `ok` when every dependency answered, `unavailable` otherwise.
    pub status: String,
    pub postgres: bool,
    pub redis: bool,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// PostgreSQL and Redis are reachable.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency is unreachable.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: PostgreSQL and Redis are reachable.
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self, state: Data<&Arc<ApiState>>) -> ReadyResponse {
        let postgres = async {
            let conn = state.db.shared().await.ok()?;
            conn.simple_query("SELECT 1").await.ok()
        };
        let redis = async {
            let mut conn = state.redis.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        let (postgres, redis) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, postgres),
            tokio::time::timeout(CHECK_TIMEOUT, redis)
        );
        let postgres = matches!(postgres, Ok(Some(_)));
        let redis = matches!(redis, Ok(Some(_)));
        let body = |status: &str| {
            Json(Readiness {
                status: status.into(),
                postgres,
                redis,
            })
        };
        if postgres && redis {
            ReadyResponse::Ready(body("ok"))
        } else {
            ReadyResponse::NotReady(body("unavailable"))
        }
    }
}
