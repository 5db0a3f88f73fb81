//! Whether a credential still counts for an operation, decided by PostgreSQL in the same
//! round trip as the request's first statement (see `db::tenancy::Guard`).
//!
//! One verdict per kind of credential — a login session, an API key, an OAuth client —
//! each prepared on every pooled connection when it is created, so checking costs neither
//! a round trip nor a query plan. Each answers `ok` or the reason for refusal:
//! identity first (revoked, inactive, role changed, company deleted or suspended), then
//! the plan (a feature the operation needs and the tier lacks) and the subscription (a
//! write while it is unpaid or cancelled).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use super::permissions::Rule;
use super::{Access, Machine, Principal};
use crate::db::tenancy::{Guard, GuardArg, TenantTx};
use crate::db::{Db, DbError};
use crate::error::AppError;

const SESSION_STATEMENT: &str = "estate_session_verdict";
const API_KEY_STATEMENT: &str = "estate_api_key_verdict";
const CLIENT_STATEMENT: &str = "estate_oauth_client_verdict";

/// The clauses every verdict ends with, reading the company `c` and its plan `p`.
/// `read`, `feature` and `unpaid` are parameter numbers: read-only, the feature the
/// operation needs (NULL for none), and whether it is allowed while unpaid (billing).
fn plan_checks(read: u8, feature: u8, unpaid: u8) -> String {
    format!(
        "WHEN ${feature}::text IS NOT NULL AND NOT (${feature}::text = ANY (p.features))
                THEN 'feature:' || ${feature}::text || ':' || c.tier
         WHEN NOT ${read}::boolean AND NOT ${unpaid}::boolean AND c.subscription_status <> 'active'
                THEN 'unpaid:' || c.subscription_status"
    )
}

/// A login session's access token: not revoked, its user active and still of the role
/// the token names, its company neither deleted nor (except for reads by the owner)
/// suspended. Parameters: user, company, jti, role, read-only, feature, while-unpaid.
static SESSION_VERDICT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT CASE
               WHEN u.id IS NULL THEN 'unknown'
               WHEN EXISTS (SELECT 1 FROM public.revoked_access_tokens r WHERE r.jti = $3) THEN 'revoked'
               WHEN NOT u.is_active THEN 'inactive'
               WHEN u.role <> $4::text THEN 'role_changed'
               WHEN c.status = 'deleted' THEN 'deleted'
               WHEN c.status = 'suspended' AND NOT ($5::boolean AND u.role = 'owner') THEN 'suspended'
               {}
               ELSE 'ok'
           END
    FROM (SELECT 1) AS one
    LEFT JOIN public.users u ON u.id = $1 AND u.company_id = $2
    LEFT JOIN public.companies c ON c.id = u.company_id
    LEFT JOIN public.plans p ON p.tier = c.tier",
        plan_checks(5, 6, 7)
    )
});

/// A machine credential (`table` holds it): not revoked or expired, its creator active,
/// its company neither deleted nor (except for reads by a credential of its owner)
/// suspended, and the company's plan still including `feature`. Parameters: credential,
/// company, read-only, feature, while-unpaid.
fn machine_verdict(table: &str, expires: bool, feature: &str) -> String {
    let expiry = if expires {
        "WHEN k.expires_at <= now() THEN 'expired'"
    } else {
        ""
    };
    format!(
        "SELECT CASE
               WHEN k.id IS NULL THEN 'unknown'
               WHEN k.revoked_at IS NOT NULL THEN 'revoked'
               {expiry}
               WHEN NOT u.is_active THEN 'inactive'
               WHEN c.status = 'deleted' THEN 'deleted'
               WHEN c.status = 'suspended' AND NOT ($3::boolean AND u.role = 'owner') THEN 'suspended'
               WHEN NOT ('{feature}' = ANY (p.features)) THEN 'feature:{feature}:' || c.tier
               {}
               ELSE 'ok'
           END
    FROM (SELECT 1) AS one
    LEFT JOIN public.{table} k ON k.id = $1 AND k.company_id = $2
    LEFT JOIN public.users u ON u.id = k.created_by
    LEFT JOIN public.companies c ON c.id = k.company_id
    LEFT JOIN public.plans p ON p.tier = c.tier",
        plan_checks(3, 4, 5)
    )
}

static API_KEY_VERDICT: LazyLock<String> =
    LazyLock::new(|| machine_verdict("api_keys", true, "api_keys"));
static CLIENT_VERDICT: LazyLock<String> =
    LazyLock::new(|| machine_verdict("oauth_clients", false, "oauth_clients"));

/// What each pooled connection runs once when it is created (see `Db::connect_with`).
pub fn connection_setup() -> Vec<String> {
    vec![
        format!(
            "PREPARE {SESSION_STATEMENT}(uuid, uuid, uuid, text, boolean, text, boolean) AS {}",
            *SESSION_VERDICT
        ),
        format!(
            "PREPARE {API_KEY_STATEMENT}(uuid, uuid, boolean, text, boolean) AS {}",
            *API_KEY_VERDICT
        ),
        format!(
            "PREPARE {CLIENT_STATEMENT}(uuid, uuid, boolean, text, boolean) AS {}",
            *CLIENT_VERDICT
        ),
    ]
}

/// The verdict for `principal` performing an operation under `rule`, as a guard that
/// travels with a tenant transaction's first statement.
pub fn guard(principal: &Principal, rule: Rule) -> Guard {
    let read_only = GuardArg::Bool(rule.access == Access::Read);
    let feature = GuardArg::OptName(rule.feature.map(|f| f.as_str()));
    let while_unpaid = GuardArg::Bool(rule.while_unpaid);
    let company = GuardArg::Uuid(principal.company.0);
    match principal.machine {
        Some(Machine::ApiKey(key)) => Guard::execute(
            API_KEY_STATEMENT,
            vec![
                GuardArg::Uuid(key),
                company,
                read_only,
                feature,
                while_unpaid,
            ],
        ),
        Some(Machine::OAuthClient(client)) => Guard::execute(
            CLIENT_STATEMENT,
            vec![
                GuardArg::Uuid(client),
                company,
                read_only,
                feature,
                while_unpaid,
            ],
        ),
        // A webhook's principal is never checked as a session; if it were, its jti would
        // name no access token and the verdict would refuse it.
        Some(Machine::Stripe) | None => Guard::execute(
            SESSION_STATEMENT,
            vec![
                GuardArg::Uuid(principal.user_id),
                company,
                GuardArg::Uuid(principal.jti),
                GuardArg::Name(principal.role.as_str()),
                read_only,
                feature,
                while_unpaid,
            ],
        ),
    }
}

/// Checks the verdict on its own round trip, for requests that open no tenant transaction.
pub async fn verify(db: &Db, principal: &Principal, rule: Rule) -> Result<(), AppError> {
    let conn = db.shared().await?;
    Ok(guard(principal, rule).check(&conn).await?)
}

/// What a verdict other than `ok` means to the caller.
pub fn refusal(reason: &str) -> AppError {
    if let Some(rest) = reason.strip_prefix("feature:") {
        let (feature, tier) = rest.split_once(':').unwrap_or((rest, "current"));
        return AppError::FeatureNotInPlan {
            feature: feature.to_string(),
            tier: tier.to_string(),
        };
    }
    match reason {
        "revoked" => AppError::Unauthorized("the credential has been revoked"),
        "expired" => AppError::Unauthorized("the API key has expired"),
        "inactive" => AppError::Unauthorized("the account is not active"),
        "role_changed" => AppError::Unauthorized("the account's role has changed; log in again"),
        "deleted" => AppError::Unauthorized("the company no longer exists"),
        "suspended" => {
            AppError::Forbidden("the company is suspended; only its owner may read its data".into())
        }
        "unpaid:past_due" => AppError::PaymentRequired(
            "the subscription's last invoice is unpaid: the company's data is read-only until \
             it is paid"
                .into(),
        ),
        "unpaid:canceled" => AppError::PaymentRequired(
            "the subscription is cancelled: the company's data is read-only until it is \
             renewed"
                .into(),
        ),
        _ => AppError::Unauthorized("the access token is not valid"),
    }
}

/// The session verdicts this process saw answer `ok`, so that a credential's next
/// requests skip the check (the largest piece of a request's database work;
/// BENCHMARKS.md). An entry counts only while no write request has finished in this
/// process and no change has been announced by PostgreSQL since the check was sent: a
/// logout, a revocation, a deactivation, a role or status change made through this
/// process reaches the very next request, one made elsewhere as soon as [`listen`] hears
/// of it.
///
/// How long an entry counts rests on what has been heard. While this process's own
/// notifications come back within [`Config::verdict_cache`] of being sent, every change
/// committed before that has been heard (PostgreSQL delivers notifications in commit
/// order), so an entry counts up to [`HEARD_LIFETIME`]. Otherwise — not yet listening,
/// the listening connection lost or slow — for [`Config::verdict_cache`] only, so a
/// change made elsewhere is seen within that (one second by default) either way.
///
/// [`Config::verdict_cache`]: crate::config::Config::verdict_cache
pub struct VerdictCache {
    ttl: Duration,
    /// Advanced by every write request and every change heard; an entry of an older
    /// epoch is stale.
    epoch: watch::Sender<u64>,
    entries: Mutex<HashMap<String, (Instant, u64)>>,
    /// When the latest of this process's own notifications that came back was sent:
    /// every change committed before then has been heard. `None` while not listening.
    heard_up_to: watch::Sender<Option<Instant>>,
}

/// How long a remembered verdict counts while changes are being heard: a backstop for a
/// change no trigger announces (shared migration V8 lists what does).
pub const HEARD_LIFETIME: Duration = Duration::from_secs(60);

/// Opens `principal`'s tenant transaction for an operation under `rule`: its verdict
/// travels with the first statement, unless `cache` remembers an `ok` one.
pub async fn tenant_tx(
    db: &Db,
    cache: &Arc<VerdictCache>,
    principal: &Principal,
    rule: Rule,
) -> Result<TenantTx, DbError> {
    let guard = guard(principal, rule);
    if !cacheable(principal, rule) {
        return db.guarded_tenant_tx(principal.company, guard).await;
    }
    // The guard's statement text names the credential and the rule: it is the key.
    let key = guard.sql();
    if cache.fresh(&key) {
        return db.tenant_tx(principal.company).await;
    }
    db.guarded_tenant_tx(principal.company, cache.remembering(guard, key))
        .await
}

/// Whether a verdict may come from the [`VerdictCache`]: a login session's, for an
/// operation that only reads and needs no feature of the plan. What such a verdict
/// depends on — the token not revoked, the user active and of the same role, the company
/// not deleted or suspended — changes only through write requests or outside this
/// process; the plan's features and the subscription's status, which a read may settle
/// (a scheduled downgrade applied by `GET /subscriptions/current`), play no part in it.
/// Machine credentials' verdicts include their plan's feature, so they are always asked.
pub fn cacheable(principal: &Principal, rule: Rule) -> bool {
    principal.machine.is_none() && rule.access == Access::Read && rule.feature.is_none()
}

/// Entries kept at most; past it, the expired ones are dropped.
const MAX_ENTRIES: usize = 50_000;

impl VerdictCache {
    pub fn new(ttl: Duration) -> Self {
        VerdictCache {
            ttl,
            epoch: watch::Sender::new(0),
            entries: Mutex::new(HashMap::new()),
            heard_up_to: watch::Sender::new(None),
        }
    }

    /// Whether the cache is in use at all (`VERDICT_CACHE_MS` above 0).
    pub fn is_on(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Whether the guard whose statement is `key` answered `ok` recently enough to be
    /// skipped.
    pub fn fresh(&self, key: &str) -> bool {
        self.fresh_at(key, Instant::now())
    }

    fn fresh_at(&self, key: &str, now: Instant) -> bool {
        if !self.is_on() {
            return false;
        }
        let lifetime = if self.hearing_at(now) {
            HEARD_LIFETIME
        } else {
            self.ttl
        };
        let epoch = *self.epoch.borrow();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|(at, e)| *e == epoch && now.saturating_duration_since(*at) < lifetime)
    }

    /// Whether every change committed more than [`Config::verdict_cache`] before `now`
    /// has been heard.
    ///
    /// [`Config::verdict_cache`]: crate::config::Config::verdict_cache
    fn hearing_at(&self, now: Instant) -> bool {
        self.heard_up_to
            .borrow()
            .is_some_and(|sent| now.saturating_duration_since(sent) < self.ttl)
    }

    /// Whether changes made elsewhere are being heard now.
    pub fn hearing(&self) -> bool {
        self.hearing_at(Instant::now())
    }

    /// Every change committed before `sent` has been heard.
    fn heard_up_to(&self, sent: Instant) {
        self.heard_up_to
            .send_modify(|latest| *latest = Some(latest.map_or(sent, |l| l.max(sent))));
    }

    /// Changes are no longer heard: entries count for [`Config::verdict_cache`] again.
    ///
    /// [`Config::verdict_cache`]: crate::config::Config::verdict_cache
    fn deaf(&self) {
        self.heard_up_to.send_replace(None);
    }

    /// Watches the epoch: it advances whenever remembered verdicts are dropped.
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Watches what has been heard (see [`VerdictCache::hearing`]).
    pub fn heard(&self) -> watch::Receiver<Option<Instant>> {
        self.heard_up_to.subscribe()
    }

    /// `guard` (whose statement is `key`), set to be remembered when it answers `ok`. The
    /// epoch is taken now, before the check is sent: a write finishing in between leaves
    /// the entry stale.
    pub fn remembering(self: &Arc<Self>, guard: Guard, key: String) -> Guard {
        if !self.is_on() {
            return guard;
        }
        let cache = self.clone();
        let epoch = *self.epoch.borrow();
        guard.on_ok(Arc::new(move || {
            let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_ENTRIES {
                let longest = HEARD_LIFETIME.max(cache.ttl);
                entries.retain(|_, (at, _)| at.elapsed() < longest);
            }
            entries.insert(key.clone(), (Instant::now(), epoch));
        }))
    }

    /// Every entry stale: called when a write request finishes, and when a change is heard.
    pub fn invalidate(&self) {
        self.epoch.send_modify(|epoch| *epoch += 1);
    }
}

/// The channel shared migration V8's triggers announce changes on.
const CHANNEL: &str = "estate_verdicts";

/// Keeps `cache` hearing the changes announced on [`CHANNEL`], over a connection of its
/// own (application name `estate verdicts`), reconnecting a second after losing it. Runs
/// until aborted.
pub async fn listen(database: tokio_postgres::Config, cache: Arc<VerdictCache>) {
    loop {
        if let Err(error) = hear(&database, &cache).await {
            tracing::warn!(%error, "listening for verdict changes failed; retrying");
        }
        cache.deaf();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One listening connection, until it fails. Every quarter of the cache's bound it
/// announces a ping of its own; when one comes back, everything committed before it was
/// sent has been heard.
async fn hear(database: &tokio_postgres::Config, cache: &VerdictCache) -> Result<(), DbError> {
    let mut database = database.clone();
    database.application_name("estate verdicts");
    let (client, mut connection) = database.connect(tokio_postgres::NoTls).await?;
    let (heard, mut payloads) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && heard.send(n.payload().to_string()).is_err()
            {
                break;
            }
        }
    });
    let outcome = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Whatever changed before the LISTEN took effect was not heard.
        cache.invalidate();
        let me = format!("ping:{}:", uuid::Uuid::new_v4().simple());
        let mut pings: HashMap<u64, Instant> = HashMap::new();
        let mut next = 0u64;
        let mut ticker = tokio::time::interval((cache.ttl / 4).max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    next += 1;
                    pings.insert(next, Instant::now());
                    // Pings that never came back are not waited for beyond the bound.
                    pings.retain(|_, sent| sent.elapsed() < cache.ttl);
                    client
                        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("{me}{next}")])
                        .await?;
                }
                payload = payloads.recv() => {
                    let Some(payload) = payload else {
                        return Err(DbError::Invariant("the listening connection closed".into()));
                    };
                    if let Some(n) = payload.strip_prefix(&me) {
                        if let Some(sent) = n.parse().ok().and_then(|n: u64| pings.remove(&n)) {
                            cache.heard_up_to(sent);
                        }
                    } else if !payload.starts_with("ping:") {
                        cache.invalidate();
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered_at(cache: &VerdictCache, at: Instant) {
        let epoch = *cache.epoch.borrow();
        cache
            .entries
            .lock()
            .unwrap()
            .insert("verdict".into(), (at, epoch));
    }

    #[test]
    fn a_verdict_counts_a_bound_long_unless_changes_are_heard() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cache = VerdictCache::new(s(1));
        remembered_at(&cache, t0);
        // Not listening: the bound.
        assert!(cache.fresh_at("verdict", t0 + Duration::from_millis(900)));
        assert!(!cache.fresh_at("verdict", t0 + s(2)));
        // Everything committed before t0 + 1.5 s heard: it counts on...
        cache.heard_up_to(t0 + Duration::from_millis(1500));
        assert!(cache.fresh_at("verdict", t0 + s(2)));
        // ...but not once the last ping back is older than the bound,
        assert!(!cache.fresh_at("verdict", t0 + s(3)));
        // and never past the backstop, heard or not.
        cache.heard_up_to(t0 + HEARD_LIFETIME);
        assert!(cache.fresh_at("verdict", t0 + HEARD_LIFETIME - Duration::from_millis(1)));
        assert!(!cache.fresh_at("verdict", t0 + HEARD_LIFETIME + Duration::from_millis(1)));
        // An older ping coming back late changes nothing.
        cache.heard_up_to(t0);
        assert!(cache.hearing_at(t0 + HEARD_LIFETIME));
        // Deaf again: the bound.
        cache.deaf();
        assert!(!cache.fresh_at("verdict", t0 + s(2)));
        assert!(cache.fresh_at("verdict", t0 + Duration::from_millis(900)));
        // A change heard or a write: gone.
        cache.invalidate();
        assert!(!cache.fresh_at("verdict", t0));
    }

    #[test]
    fn nothing_is_remembered_when_off() {
        let cache = VerdictCache::new(Duration::ZERO);
        let t0 = Instant::now();
        remembered_at(&cache, t0);
        cache.heard_up_to(t0);
        assert!(!cache.fresh_at("verdict", t0));
    }
}
