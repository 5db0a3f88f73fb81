//! Builds the application from configuration: pools, keys, routes, listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::listener::TcpAcceptor;

use crate::api::{self, ApiState};
use crate::auth::jwt::JwtKeys;
use crate::auth::verdict;
use crate::billing::subscriptions::Billing;
use crate::config::{Config, JwtSecret};
use crate::db::migrations::TenantMigrations;
use crate::db::{Db, Layout, migrations, spares};
use crate::error::AppError;
use crate::rate_limit::RateLimiter;
use crate::tenants;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    App(#[from] AppError),
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct Application {
    acceptor: TcpAcceptor,
    state: Arc<ApiState>,
    local_addr: SocketAddr,
    tenant_spares: usize,
    /// Where the verdict cache listens for changes (see `verdict::listen`).
    database: tokio_postgres::Config,
}

impl Application {
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        if let JwtSecret::Ephemeral(_) = config.jwt_secret {
            tracing::warn!(
                "JWT_SECRET is not set: using a random key, tokens will not survive a restart"
            );
        }
        let db = Db::connect_with(config, verdict::connection_setup(), Layout::TenantLanes)
            .map_err(AppError::from)?;
        let jwt = JwtKeys::new(config.jwt_secret.secret())?;
        let redis = redis::Client::open(config.redis_url.expose())?;
        let billing = Billing::load(config, &db).await?;
        if !config.rate_limits {
            tracing::warn!("RATE_LIMITS=off: no tier or anonymous request limits are enforced");
        }
        let rate_limiter = RateLimiter::new(
            config.rate_limits,
            config.tenancy.role_prefix(),
            billing.plans.clone(),
            db.clone(),
            redis.clone(),
        );
        let bind = |source| StartupError::Bind {
            addr: config.bind_addr,
            source,
        };
        let listener = std::net::TcpListener::bind(config.bind_addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let acceptor = TcpAcceptor::from_std(listener).map_err(bind)?;
        let database = config
            .database_url
            .expose()
            .parse()
            .map_err(|e| AppError::from(crate::db::DbError::Postgres(e)))?;
        Ok(Application {
            acceptor,
            state: Arc::new(ApiState {
                db,
                jwt,
                redis,
                rate_limiter,
                metrics: crate::metrics::Metrics::new(api::route_templates()),
                billing,
                stripe_webhook_secrets: config.stripe_webhook_secrets.clone(),
                verdicts: Arc::new(verdict::VerdictCache::new(config.verdict_cache)),
            }),
            local_addr,
            tenant_spares: config.tenant_spares,
            database,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> Arc<ApiState> {
        self.state.clone()
    }

    /// Serves until SIGINT/SIGTERM, then lets requests in flight finish (up to 10 s).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr, "listening");
        let keeper = tokio::spawn(spares::keep(
            self.state.db.clone(),
            TenantMigrations::embedded(),
            self.tenant_spares,
        ));
        let verdicts = self.state.verdicts.clone();
        let listener = verdicts
            .is_on()
            .then(|| tokio::spawn(verdict::listen(self.database, verdicts)));
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                api::routes(self.state),
                shutdown_signal(),
                Some(Duration::from_secs(10)),
            )
            .await;
        keeper.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        served
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal arriving in between is not lost (nor fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutting down");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}

/// `estate migrate`: shared schema first, then every tenant schema.
pub async fn migrate(
    config: &Config,
    concurrency: usize,
    progress: bool,
) -> Result<tenants::MigrationOutcome, AppError> {
    let applied =
        migrations::migrate_shared(config.database_url.expose(), config.tenancy.group_role())
            .await?;
    tracing::info!(applied, "shared migrations done");
    let db = Db::connect(config)?;
    Ok(tenants::migrate_all(
        &db,
        &migrations::TenantMigrations::embedded(),
        concurrency,
        progress,
    )
    .await?)
}
