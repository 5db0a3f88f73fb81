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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

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

/// The session verdicts this process saw answer `ok` in the last moments, so that a
/// credential's next requests skip the check (the largest piece of a request's database
/// work; BENCHMARKS.md). An entry counts for [`Config::verdict_cache`] at most, and only
/// while no write request has finished in this process since the check was sent: a
/// logout, a revocation, a deactivation, a role, plan or status change made through this
/// process reaches the very next request. A change made elsewhere reaches it within the
/// entry's lifetime (one second by default).
///
/// [`Config::verdict_cache`]: crate::config::Config::verdict_cache
pub struct VerdictCache {
    ttl: Duration,
    /// Advanced by every write request; an entry of an older epoch is stale.
    epoch: AtomicU64,
    entries: Mutex<HashMap<String, (Instant, u64)>>,
}

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
            epoch: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the guard whose statement is `key` answered `ok` recently enough to be
    /// skipped.
    pub fn fresh(&self, key: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|(at, e)| *e == epoch && at.elapsed() < self.ttl)
    }

    /// `guard` (whose statement is `key`), set to be remembered when it answers `ok`. The
    /// epoch is taken now, before the check is sent: a write finishing in between leaves
    /// the entry stale.
    pub fn remembering(self: &Arc<Self>, guard: Guard, key: String) -> Guard {
        if self.ttl.is_zero() {
            return guard;
        }
        let cache = self.clone();
        let epoch = self.epoch.load(Ordering::Acquire);
        guard.on_ok(Arc::new(move || {
            let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_ENTRIES {
                let ttl = cache.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            entries.insert(key.clone(), (Instant::now(), epoch));
        }))
    }

    /// Every entry stale: called when a write request finishes.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}
