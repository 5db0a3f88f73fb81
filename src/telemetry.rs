//! Tracing output (human-readable in development, JSON lines in production) and error
//! reporting to Sentry.
//!
//! Error-level events go to Sentry (when `SENTRY_DSN` is set) through sentry's tracing
//! layer, and panics through its panic integration. Each request runs with a hub of its
//! own carrying `request_id`, and `tenant`/user once the credential is known; each job
//! with `tenant` and `job`: so every event says whose it was.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::{AppEnv, Config, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn,refinery_core=warn"));
    let output = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_writer(std::io::stderr).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(sentry_layer())
        .try_init();
}

/// Error-level tracing events as Sentry events (a no-op while Sentry is off).
pub fn sentry_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    sentry::integrations::tracing::ErrorLayer::new().with_filter(LevelFilter::ERROR)
}

/// Starts Sentry when configured. Keep the guard for the life of the process: dropping
/// it flushes pending events.
pub fn init_sentry(config: &Config) -> Option<sentry::ClientInitGuard> {
    let dsn = config.sentry_dsn.as_ref()?;
    let environment = match config.app_env {
        AppEnv::Production => "production",
        AppEnv::Development => "development",
    };
    let mut options = sentry::ClientOptions::default();
    options.release = sentry::release_name!();
    options.environment = Some(environment.into());
    options.send_default_pii = false;
    Some(sentry::init((dsn.expose(), options)))
}

/// A hub for one unit of work (a request, a job), with the process's client; `None`
/// while Sentry is off, so requests pay nothing for it then. Made from the main hub, not
/// the thread's: a thread's hub keeps the client it saw when the thread first used one.
pub fn work_hub() -> Option<Arc<sentry::Hub>> {
    let main = sentry::Hub::main();
    main.client()?;
    Some(Arc::new(sentry::Hub::new_from_top(main)))
}

/// Names the tenant (and user) on the current hub's scope.
pub fn tag_tenant(company: uuid::Uuid, user: Option<uuid::Uuid>) {
    sentry::configure_scope(|scope| {
        scope.set_tag("tenant", company);
        if let Some(user) = user {
            scope.set_user(Some(sentry::User {
                id: Some(user.to_string()),
                ..Default::default()
            }));
        }
    });
}
