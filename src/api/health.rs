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
    /// `ok` when every dependency answered; `degraded` when only Redis did not (the API
    /// still serves; rate limits are counted per process); `unavailable` without
    /// PostgreSQL.
    pub status: String,
    pub postgres: bool,
    pub redis: bool,
    /// `shared` (Redis), `per_process` (Redis unreachable) or `off` (`RATE_LIMITS=off`).
    pub rate_limits: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// PostgreSQL is reachable (and Redis, unless `status` is `degraded`).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// PostgreSQL is unreachable.
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

    /// Readiness: PostgreSQL is reachable (503 otherwise); Redis is reported, but the API
    /// serves without it.
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
        let rate_limits = match (state.rate_limiter.enabled(), redis) {
            (false, _) => "off",
            (true, true) => "shared",
            (true, false) => "per_process",
        };
        let body = |status: &str| {
            Json(Readiness {
                status: status.into(),
                postgres,
                redis,
                rate_limits: rate_limits.into(),
            })
        };
        match (postgres, redis) {
            (true, true) => ReadyResponse::Ready(body("ok")),
            (true, false) => ReadyResponse::Ready(body("degraded")),
            (false, _) => ReadyResponse::NotReady(body("unavailable")),
        }
    }
}
