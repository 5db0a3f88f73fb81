//! Configuration, read once at start from the environment (and an optional `.env`).
//!
//! Every setting has a default that works on a developer machine (SPEC §1). A missing or
//! malformed value stops the process with one line naming the variable; secrets are kept
//! in [`Secret`] so that no `Debug` or log line can print them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use crate::db::tenancy::TenantNaming;

/// A value that must never be printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: Secret,
    pub database_pool_size: usize,
    pub redis_url: Secret,
    pub bind_addr: SocketAddr,
    pub jwt_secret: JwtSecret,
    pub tenant_role_login: bool,
    pub log_format: LogFormat,
    pub tenancy: TenantNaming,
    /// `RATE_LIMITS=off` disables tier and anonymous limits (benchmarks, load tests).
    pub rate_limits: bool,
    /// `None`: billing in local mode (plan changes apply locally, no Stripe calls).
    pub stripe: Option<StripeConfig>,
    /// Webhook signing secrets (`STRIPE_WEBHOOK_SECRET`, comma-separated: two during a
    /// rotation). Empty: the webhook endpoint refuses every event.
    pub stripe_webhook_secrets: Vec<Secret>,
    /// `SMTP_URL`; unset: e-mails are written as `.eml` files under `mail_dir`.
    pub smtp_url: Option<Secret>,
    /// `MAIL_DIR` (default `var/mail`).
    pub mail_dir: std::path::PathBuf,
    /// `MAIL_FROM`: the sender of every e-mail.
    pub mail_from: String,
    /// `SENTRY_DSN`; unset: Sentry off.
    pub sentry_dsn: Option<Secret>,
    /// `WORKER_CONCURRENCY` (default 8): jobs one worker process runs at once.
    pub worker_concurrency: usize,
    /// `WORKER_ORPHAN_SECS` (default 30): how long a worker may be silent before its jobs
    /// run elsewhere. Longer than any pause of a live worker; a killed worker's jobs wait
    /// this long.
    pub worker_orphan_after: std::time::Duration,
    /// `VERDICT_CACHE_MS` (default 1000, 0 = off): how long a change made elsewhere
    /// (another process, the database directly) may take to reach the `ok` session
    /// verdicts a server process remembers. A change made through this process applies to
    /// the next request; one announced by the database as soon as it is heard. A verdict is
    /// reused up to this long, or up to `verdict::HEARD_LIFETIME` while the process hears
    /// its own notifications come back within this time (see `verdict::VerdictCache`).
    pub verdict_cache: std::time::Duration,
    /// `TENANT_SPARES` (default 2, 0 = none): tenants `estate serve` keeps built ahead, so
    /// that a registration renames one instead of creating its schema (`db::spares`).
    pub tenant_spares: usize,
}

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    /// `STRIPE_API_BASE`, e.g. a local fake in tests; Stripe's own when unset.
    pub api_base: Option<String>,
    /// Price ids by tier, cheapest first (`STRIPE_PRICE_STARTER`, `_PROFESSIONAL`,
    /// `_ENTERPRISE`).
    pub prices: [String; 3],
    /// `STRIPE_CURRENCY` (default `usd`): the currency of allocation payments.
    pub currency: String,
}

/// Where the JWT signing key came from, so start-up can warn about a throwaway one.
#[derive(Debug, Clone)]
pub enum JwtSecret {
    Configured(Secret),
    /// Development only: made up at start, so tokens do not survive a restart.
    Ephemeral(Secret),
}

impl JwtSecret {
    pub fn secret(&self) -> &Secret {
        match self {
            JwtSecret::Configured(s) | JwtSecret::Ephemeral(s) => s,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The whole number in `variable` (read through `get`), which must lie in `range`, or
/// `default` when it is unset. `unit` names what it counts in the error: "expected
/// {unit} from {start} to {end}".
fn bounded<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    variable: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                invalid(
                    variable,
                    format!("expected {unit} from {} to {}", range.start(), range.end()),
                )
            }),
    }
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is worth stopping for.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(invalid(".env", e.to_string()));
        }
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Builds the configuration from a map of variables; separate from [`Config::from_env`]
    /// so that parsing can be tested without touching the process environment.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let app_env = match get("APP_ENV").unwrap_or("development") {
            "development" | "dev" | "test" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(invalid(
                    "APP_ENV",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };

        let database_url =
            get("DATABASE_URL").unwrap_or("postgres://postgres@127.0.0.1:5432/estate");
        let pg: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| invalid("DATABASE_URL", format!("not a PostgreSQL URL: {e}")))?;
        let database = pg
            .get_dbname()
            .ok_or_else(|| invalid("DATABASE_URL", "names no database"))?;
        let tenancy = TenantNaming::for_database(database)
            .map_err(|e| invalid("DATABASE_URL", e.to_string()))?;

        let database_pool_size =
            bounded(get, "DATABASE_POOL_SIZE", 8, 1..=1000, "a number")? as usize;

        let redis_url = get("REDIS_URL").unwrap_or("redis://127.0.0.1:6379");
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(invalid("REDIS_URL", "expected a redis:// or rediss:// URL"));
        }

        let bind_addr = get("BIND_ADDR")
            .unwrap_or("127.0.0.1:8080")
            .parse::<SocketAddr>()
            .map_err(|_| invalid("BIND_ADDR", "expected host:port, e.g. 127.0.0.1:8080"))?;

        let jwt_secret = match get("JWT_SECRET") {
            Some(s) if s.len() >= MIN_JWT_SECRET_BYTES => JwtSecret::Configured(Secret::new(s)),
            Some(_) => {
                return Err(invalid(
                    "JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                ));
            }
            None if app_env == AppEnv::Production => {
                return Err(invalid("JWT_SECRET", "is required when APP_ENV=production"));
            }
            None => JwtSecret::Ephemeral(Secret::new(random_secret())),
        };

        let tenant_role_login = parse_bool(get("TENANT_ROLE_LOGIN"), false)
            .ok_or_else(|| invalid("TENANT_ROLE_LOGIN", "expected true or false"))?;

        let log_format = match get("LOG_FORMAT") {
            None if app_env == AppEnv::Production => LogFormat::Json,
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("LOG_FORMAT", "expected `pretty` or `json`")),
        };

        let rate_limits = parse_bool(get("RATE_LIMITS"), true)
            .ok_or_else(|| invalid("RATE_LIMITS", "expected on or off"))?;

        let stripe = match get("STRIPE_SECRET_KEY") {
            None => None,
            Some(key) => {
                let price = |name: &'static str| {
                    get(name)
                        .map(str::to_string)
                        .ok_or_else(|| invalid(name, "is required when STRIPE_SECRET_KEY is set"))
                };
                let api_base = match get("STRIPE_API_BASE") {
                    None => None,
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        // async-stripe appends paths to the base; it must end with a slash.
                        Some(format!("{}/", url.trim_end_matches('/')))
                    }
                    Some(_) => return Err(invalid("STRIPE_API_BASE", "expected an http(s) URL")),
                };
                let currency = get("STRIPE_CURRENCY").unwrap_or("usd").to_ascii_lowercase();
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(invalid(
                        "STRIPE_CURRENCY",
                        "expected a three-letter ISO code",
                    ));
                }
                Some(StripeConfig {
                    secret_key: Secret::new(key),
                    api_base,
                    prices: [
                        price("STRIPE_PRICE_STARTER")?,
                        price("STRIPE_PRICE_PROFESSIONAL")?,
                        price("STRIPE_PRICE_ENTERPRISE")?,
                    ],
                    currency,
                })
            }
        };
        let stripe_webhook_secrets = get("STRIPE_WEBHOOK_SECRET")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();

        let smtp_url = match get("SMTP_URL") {
            None => None,
            Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                Some(Secret::new(url))
            }
            Some(_) => return Err(invalid("SMTP_URL", "expected an smtp:// or smtps:// URL")),
        };
        let mail_from = get("MAIL_FROM").unwrap_or("Estate API <no-reply@estate.localhost>");
        if !estate_jobs::mail::is_mailbox(mail_from) {
            return Err(invalid(
                "MAIL_FROM",
                "expected an address, e.g. Estate <no-reply@example.com>",
            ));
        }
        let worker_concurrency =
            bounded(get, "WORKER_CONCURRENCY", 8, 1..=256, "a number")? as usize;

        let sentry_dsn = match get("SENTRY_DSN") {
            None => None,
            Some(dsn) if dsn.parse::<sentry::types::Dsn>().is_ok() => Some(Secret::new(dsn)),
            Some(_) => return Err(invalid("SENTRY_DSN", "not a Sentry DSN")),
        };
        let verdict_cache_ms = bounded(get, "VERDICT_CACHE_MS", 1000, 0..=1000, "milliseconds")?;
        let tenant_spares = bounded(get, "TENANT_SPARES", 2, 0..=100, "a number")? as usize;
        let worker_orphan_secs = bounded(get, "WORKER_ORPHAN_SECS", 30, 1..=3600, "seconds")?;

        Ok(Config {
            app_env,
            database_url: Secret::new(database_url),
            database_pool_size,
            redis_url: Secret::new(redis_url),
            bind_addr,
            jwt_secret,
            tenant_role_login,
            log_format,
            tenancy: tenancy.with_login(tenant_role_login),
            rate_limits,
            stripe,
            stripe_webhook_secrets,
            smtp_url,
            mail_dir: get("MAIL_DIR").unwrap_or("var/mail").into(),
            mail_from: mail_from.to_string(),
            worker_concurrency,
            sentry_dsn,
            worker_orphan_after: std::time::Duration::from_secs(worker_orphan_secs),
            verdict_cache: std::time::Duration::from_millis(verdict_cache_ms),
            tenant_spares,
        })
    }
}

fn parse_bool(value: Option<&str>, default: bool) -> Option<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Some(default),
        Some("true" | "1" | "yes" | "on") => Some(true),
        Some("false" | "0" | "no" | "off") => Some(false),
        Some(_) => None,
    }
}

fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 48] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_on_a_developer_machine() {
        let c = Config::from_vars(&vars(&[])).expect("defaults parse");
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert!(matches!(c.jwt_secret, JwtSecret::Ephemeral(_)));
        assert_eq!(c.app_env, AppEnv::Development);
        assert!(!c.tenant_role_login);
        assert_eq!(c.tenancy.group_role().as_str(), "estate_tenant");
    }

    #[test]
    fn production_requires_a_jwt_secret() {
        let e = Config::from_vars(&vars(&[("APP_ENV", "production")])).unwrap_err();
        assert_eq!(e.variable, "JWT_SECRET");
    }

    #[test]
    fn a_short_jwt_secret_is_refused_and_not_echoed() {
        let e = Config::from_vars(&vars(&[("JWT_SECRET", "hunter2-short")])).unwrap_err();
        assert_eq!(e.variable, "JWT_SECRET");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (name, value) in [
            ("BIND_ADDR", "not-an-address"),
            ("DATABASE_URL", "mysql://nope"),
            ("REDIS_URL", "http://127.0.0.1"),
            ("TENANT_ROLE_LOGIN", "maybe"),
            ("DATABASE_POOL_SIZE", "0"),
            ("LOG_FORMAT", "xml"),
            ("RATE_LIMITS", "sometimes"),
            ("SMTP_URL", "http://mail.example"),
            ("MAIL_FROM", "not an address"),
            ("WORKER_CONCURRENCY", "0"),
            ("SENTRY_DSN", "not a dsn"),
            ("VERDICT_CACHE_MS", "1001"),
            ("TENANT_SPARES", "-1"),
            ("WORKER_ORPHAN_SECS", "0"),
        ] {
            let e = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(e.variable, name, "{name}={value}");
        }
    }

    #[test]
    fn numbers_take_their_default_and_refuse_values_outside_their_range() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.database_pool_size, 8);
        assert_eq!(c.tenant_spares, 2);
        assert_eq!(c.verdict_cache, std::time::Duration::from_millis(1000));
        let c =
            Config::from_vars(&vars(&[("TENANT_SPARES", "0"), ("VERDICT_CACHE_MS", "0")])).unwrap();
        assert_eq!(c.tenant_spares, 0);
        assert!(c.verdict_cache.is_zero());
        let e = Config::from_vars(&vars(&[("TENANT_SPARES", "101")])).unwrap_err();
        assert_eq!(e.problem, "expected a number from 0 to 100");
        let e = Config::from_vars(&vars(&[("WORKER_ORPHAN_SECS", "x")])).unwrap_err();
        assert_eq!(e.problem, "expected seconds from 1 to 3600");
    }

    #[test]
    fn stripe_needs_a_price_for_every_tier() {
        let e = Config::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_PRICE_STARTER", "price_s"),
            ("STRIPE_PRICE_ENTERPRISE", "price_e"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "STRIPE_PRICE_PROFESSIONAL");
        let c = Config::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_PRICE_STARTER", "price_s"),
            ("STRIPE_PRICE_PROFESSIONAL", "price_p"),
            ("STRIPE_PRICE_ENTERPRISE", "price_e"),
            ("STRIPE_API_BASE", "http://127.0.0.1:1234"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new"),
        ]))
        .unwrap();
        let stripe = c.stripe.expect("stripe mode");
        assert_eq!(stripe.api_base.as_deref(), Some("http://127.0.0.1:1234/"));
        assert_eq!(c.stripe_webhook_secrets.len(), 2);
        assert!(Config::from_vars(&vars(&[])).unwrap().stripe.is_none());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Config::from_vars(&vars(&[
            (
                "JWT_SECRET",
                "a-very-long-secret-value-of-more-than-32-bytes",
            ),
            (
                "DATABASE_URL",
                "postgres://postgres:pw-in-url@127.0.0.1/estate",
            ),
            ("STRIPE_SECRET_KEY", "sk_live_do-not-print"),
            ("STRIPE_PRICE_STARTER", "price_s"),
            ("STRIPE_PRICE_PROFESSIONAL", "price_p"),
            ("STRIPE_PRICE_ENTERPRISE", "price_e"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_do-not-print"),
        ]))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("do-not-print"));
        assert!(!printed.contains("a-very-long-secret"));
        assert!(!printed.contains("pw-in-url"));
    }
}
