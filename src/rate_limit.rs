//! Hourly request quotas (SPEC §5): per company by tier, and 50 an hour per address for
//! anonymous requests.
//!
//! The hour's count lives in Redis (one `INCR` per request, with its key's expiry, in one
//! atomic pipeline) so that every server process shares it. Bursts are smoothed first, in
//! process, by a `ratelimit` token bucket per caller, so a client cannot spend its hour in
//! a second. If Redis does not answer within [`REDIS_TIMEOUT`], the process counts on its
//! own (the same quota, per process), logs a warning once, reports it on `/ready`, and
//! tries Redis again after [`REDIS_RETRY`]: the API never fails because of Redis.
//!
//! Crossing 80% and 100% of a company's quota queues a quota-warning job; its idempotency
//! key (company, hour, threshold) makes it one per threshold per hour, whichever process
//! sees the crossing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ratelimit::Ratelimiter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::billing::plans::{Plans, Tier};
use crate::db::Db;
use crate::db::tenancy::CompanyId;
use crate::error::AppError;
use crate::outbox;

/// Anonymous requests an address may make per hour.
pub const ANONYMOUS_PER_HOUR: u64 = 50;
/// The window: a clock hour.
pub const WINDOW_SECS: i64 = 3600;
/// How long a Redis call may take before the process counts on its own.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the process counts on its own before trying Redis again.
pub const REDIS_RETRY: Duration = Duration::from_secs(5);
/// Burst buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 50_000;
/// How long a company's tier is trusted before it is read again (a change made by this
/// process is seen at once; one made elsewhere within this time).
const TIER_TTL: Duration = Duration::from_secs(5);

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Company(CompanyId),
    Address(IpAddr),
}

impl Subject {
    fn key_part(&self) -> String {
        match self {
            Subject::Company(c) => format!("c:{}", c.0),
            Subject::Address(ip) => format!("ip:{ip}"),
        }
    }
}

/// Where the hour's count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSource {
    /// Redis: shared by every process.
    Shared,
    /// This process alone (Redis unreachable).
    Process,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The policy's name: the tier, or `anonymous`.
    pub policy: &'static str,
    pub limit: u64,
    /// Requests this hour, this one included (when it was counted).
    pub used: u64,
    /// Seconds until the hour's window resets.
    pub reset_secs: u64,
    /// Set when the request is refused: seconds to wait.
    pub retry_after: Option<u64>,
    pub source: CountSource,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

pub struct RateLimiter {
    enabled: bool,
    prefix: String,
    plans: Plans,
    db: Db,
    redis: Redis,
    tiers: Mutex<HashMap<CompanyId, (Tier, Instant)>>,
    buckets: Mutex<HashMap<Subject, Arc<Ratelimiter>>>,
    /// Per-process counts by (subject, window start), used while Redis is unreachable.
    local: Mutex<HashMap<(Subject, i64), u64>>,
}

/// The Redis side: a connection made on first use, and a note of when it last failed.
struct Redis {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    down_until: Mutex<Option<Instant>>,
    /// Whether the last attempt failed, so the warning is logged once per outage.
    degraded: AtomicBool,
}

impl Redis {
    fn in_backoff(&self) -> bool {
        self.down_until
            .lock()
            .map(|d| d.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }

    fn mark_down(&self, error: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + REDIS_RETRY);
        }
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error,
                "Redis is unreachable: rate limits are counted per process"
            );
        }
    }

    fn mark_up(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: rate limits are shared");
        }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.read().ok()?.clone() {
            return Some(c);
        }
        if self.in_backoff() {
            return None;
        }
        // Others wait out the backoff while this request tries.
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + REDIS_RETRY);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match made {
            Ok(Ok(conn)) => {
                if let Ok(mut slot) = self.conn.write() {
                    *slot = Some(conn.clone());
                }
                if let Ok(mut d) = self.down_until.lock() {
                    *d = None;
                }
                Some(conn)
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("connection timed out");
                None
            }
        }
    }

    /// Runs `command` on Redis, or answers `None` (and starts the backoff) when Redis does
    /// not answer in time.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Pipeline) -> Option<T> {
        if self.in_backoff() {
            return None;
        }
        let mut conn = self.connection().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, command.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.mark_up();
                Some(value)
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("command timed out");
                None
            }
        }
    }
}

/// Requests a caller may make at once: a tenth of the hour's quota, at least 10.
fn burst(limit: u64) -> u64 {
    (limit / 10).max(10)
}

fn window_start(now: i64) -> i64 {
    now - now.rem_euclid(WINDOW_SECS)
}

impl RateLimiter {
    pub fn new(enabled: bool, prefix: &str, plans: Plans, db: Db, client: redis::Client) -> Self {
        RateLimiter {
            enabled,
            prefix: format!("estate:{prefix}:rl"),
            plans,
            db,
            redis: Redis {
                client,
                conn: RwLock::new(None),
                down_until: Mutex::new(None),
                degraded: AtomicBool::new(false),
            },
            tiers: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether counts are currently shared through Redis.
    pub fn shared(&self) -> bool {
        !self.redis.degraded.load(Ordering::Relaxed)
    }

    /// The tier a company is on, cached for [`TIER_TTL`].
    async fn tier(&self, company: CompanyId) -> Result<Tier, AppError> {
        if let Some((tier, at)) = self
            .tiers
            .lock()
            .ok()
            .and_then(|t| t.get(&company).copied())
            && at.elapsed() < TIER_TTL
        {
            return Ok(tier);
        }
        let row = self
            .db
            .shared()
            .await?
            .query_opt("SELECT tier FROM companies WHERE id = $1", &[&company.0])
            .await?;
        let tier = row
            .and_then(|r| Tier::parse(r.get(0)))
            .unwrap_or(Tier::Starter);
        if let Ok(mut t) = self.tiers.lock() {
            t.insert(company, (tier, Instant::now()));
        }
        Ok(tier)
    }

    /// Forgets a company's cached tier after this process changed it.
    pub fn forget(&self, company: CompanyId) {
        if let Ok(mut t) = self.tiers.lock() {
            t.remove(&company);
        }
    }

    async fn policy(&self, subject: Subject) -> Result<(&'static str, u64), AppError> {
        Ok(match subject {
            Subject::Company(c) => {
                let tier = self.tier(c).await?;
                (
                    tier.as_str(),
                    u64::from(self.plans.get(tier).requests_per_hour),
                )
            }
            Subject::Address(_) => ("anonymous", ANONYMOUS_PER_HOUR),
        })
    }

    /// The in-process burst bucket: [`burst`] at once, refilled at four times the hour's
    /// average rate.
    fn bucket(&self, subject: Subject, limit: u64) -> Option<Arc<Ratelimiter>> {
        let mut buckets = self.buckets.lock().ok()?;
        let burst = burst(limit);
        let fresh = |limit: u64| {
            Ratelimiter::builder(limit * 4)
                .period(Duration::from_secs(WINDOW_SECS as u64))
                .max_tokens(burst)
                .initial_available(burst)
                .build()
                .ok()
                .map(Arc::new)
        };
        match buckets.get(&subject) {
            Some(b) if b.max_tokens() == burst => Some(b.clone()),
            _ => {
                // Many callers (addresses) come and go: forget those whose bucket has
                // refilled, since a fresh bucket is the same as a full one.
                if buckets.len() >= MAX_BUCKETS {
                    buckets.retain(|_, b| b.available() < b.max_tokens());
                }
                let bucket = fresh(limit)?;
                buckets.insert(subject, bucket.clone());
                Some(bucket)
            }
        }
    }

    fn key(&self, subject: Subject, window: i64) -> String {
        format!("{}:{}:{window}", self.prefix, subject.key_part())
    }

    /// Counts one request against `subject` and decides.
    pub async fn check(&self, subject: Subject) -> Result<Decision, AppError> {
        let (policy, limit) = self.policy(subject).await?;
        let now = chrono::Utc::now().timestamp();
        let window = window_start(now);
        let reset_secs = (window + WINDOW_SECS - now) as u64;
        if let Some(bucket) = self.bucket(subject, limit)
            && let Err(ratelimit::TryWaitError::Insufficient(wait)) = bucket.try_wait()
        {
            let (used, source) = self.peek(subject, window).await;
            return Ok(Decision {
                policy,
                limit,
                used,
                reset_secs,
                retry_after: Some(wait.as_secs().max(1)),
                source,
            });
        }
        let (used, source) = self.increment(subject, window).await;
        if let Subject::Company(company) = subject {
            self.warn_on_threshold(company, used, limit, window).await;
        }
        let refused = used > limit;
        Ok(Decision {
            policy,
            limit,
            used,
            reset_secs,
            retry_after: refused.then_some(reset_secs.max(1)),
            source,
        })
    }

    /// The hour's count so far, without counting.
    pub async fn usage(&self, subject: Subject) -> Result<Decision, AppError> {
        let (policy, limit) = self.policy(subject).await?;
        let now = chrono::Utc::now().timestamp();
        let window = window_start(now);
        let (used, source) = self.peek(subject, window).await;
        Ok(Decision {
            policy,
            limit,
            used,
            reset_secs: (window + WINDOW_SECS - now) as u64,
            retry_after: None,
            source,
        })
    }

    async fn increment(&self, subject: Subject, window: i64) -> (u64, CountSource) {
        let key = self.key(subject, window);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&key, 1u64)
            .expire(&key, WINDOW_SECS + 60)
            .ignore();
        match self.redis.run::<(u64,)>(&pipe).await {
            Some((count,)) => (count, CountSource::Shared),
            None => (self.local_count(subject, window, 1), CountSource::Process),
        }
    }

    async fn peek(&self, subject: Subject, window: i64) -> (u64, CountSource) {
        let mut pipe = redis::pipe();
        pipe.get(self.key(subject, window));
        match self.redis.run::<(Option<u64>,)>(&pipe).await {
            Some((count,)) => (count.unwrap_or(0), CountSource::Shared),
            None => (self.local_count(subject, window, 0), CountSource::Process),
        }
    }

    fn local_count(&self, subject: Subject, window: i64, add: u64) -> u64 {
        let Ok(mut local) = self.local.lock() else {
            return 0;
        };
        local.retain(|(_, w), _| *w == window);
        let count = local.entry((subject, window)).or_insert(0);
        *count += add;
        *count
    }

    /// Queues a quota warning when this request is the one that reaches 80% or 100% of
    /// the hour's quota (two requests an hour pay one more round trip for it). Failing to
    /// queue it is logged and does not fail the request.
    async fn warn_on_threshold(&self, company: CompanyId, used: u64, limit: u64, window: i64) {
        let threshold = [80u8, 100]
            .into_iter()
            .find(|p| used == (limit * u64::from(*p)).div_ceil(100));
        let Some(threshold_percent) = threshold else {
            return;
        };
        let job = estate_jobs::QuotaWarning {
            company_id: company.0,
            threshold_percent,
            window_start: window,
            limit,
        };
        let queued = async { outbox::enqueue_shared(&self.db.shared().await?, &job).await };
        if let Err(e) = queued.await {
            tracing::error!(error = %e, company = %company.0, "could not queue a quota warning");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_clock_hours() {
        assert_eq!(window_start(7200), 7200);
        assert_eq!(window_start(7199), 3600);
        assert_eq!(window_start(10_799), 7200);
    }
}
