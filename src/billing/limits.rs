//! Resource ceilings of the company's plan, checked inside the transaction that creates
//! the resource. Concurrent creates in one company queue on a transaction-scoped advisory
//! lock before counting, so each counts every row committed before it and ten requests at
//! `limit - 1` let exactly one through.

use deadpool_postgres::GenericClient;

use super::plans::{Feature, Resource};
use crate::db::tenancy::{CompanyId, TenantTx};
use crate::error::AppError;

/// Takes the company's lock for `resource` (only when its plan has a ceiling) and answers
/// the plan's tier and ceiling. Statements are per resource so each is prepared once.
fn lock_sql(resource: Resource) -> &'static str {
    match resource {
        Resource::Estates => {
            "SELECT p.tier, p.max_estates::bigint,
                    CASE WHEN p.max_estates IS NOT NULL THEN
                        (SELECT true FROM pg_advisory_xact_lock(hashtextextended(current_schema() || ':estates', 0)))
                    END
             FROM public.current_plan p"
        }
        Resource::Properties => {
            "SELECT p.tier, p.max_properties::bigint,
                    CASE WHEN p.max_properties IS NOT NULL THEN
                        (SELECT true FROM pg_advisory_xact_lock(hashtextextended(current_schema() || ':properties', 0)))
                    END
             FROM public.current_plan p"
        }
        // Users live in the shared schema: see `reserve_user`.
        Resource::Users => "SELECT NULL::text, NULL::bigint, NULL::boolean WHERE false",
    }
}

fn count_sql(resource: Resource) -> &'static str {
    match resource {
        Resource::Estates => "SELECT count(*) FROM estates",
        Resource::Properties => "SELECT count(*) FROM properties",
        Resource::Users => "SELECT 0::bigint",
    }
}

/// Refuses to create `adding` more of a tenant resource when the plan's ceiling would be
/// passed. Call it in the creating transaction, before the insert.
pub async fn reserve(tx: &mut TenantTx, resource: Resource, adding: i64) -> Result<(), AppError> {
    let plan = tx
        .query_opt(lock_sql(resource), &[])
        .await?
        .ok_or_else(|| AppError::Internal("the company has no plan".into()))?;
    let Some(limit) = plan.get::<_, Option<i64>>(1) else {
        return Ok(());
    };
    let count: i64 = tx
        .query_opt(count_sql(resource), &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    within(resource, count, adding, limit, plan.get(0))
}

/// The same for users, which live in the shared schema: the company's row is locked
/// instead. Counts active users (a deactivated user frees a seat).
pub async fn reserve_user(client: &impl GenericClient, company: CompanyId) -> Result<(), AppError> {
    let plan = client
        .query_opt(
            "SELECT p.tier, p.max_users::bigint
             FROM companies c JOIN plans p ON p.tier = c.tier
             WHERE c.id = $1
             FOR UPDATE OF c",
            &[&company.0],
        )
        .await?
        .ok_or(AppError::NotFound("company"))?;
    let Some(limit) = plan.get::<_, Option<i64>>(1) else {
        return Ok(());
    };
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE company_id = $1 AND is_active",
            &[&company.0],
        )
        .await?
        .get(0);
    within(Resource::Users, count, 1, limit, plan.get(0))
}

fn within(
    resource: Resource,
    count: i64,
    adding: i64,
    limit: i64,
    tier: String,
) -> Result<(), AppError> {
    if count + adding > limit {
        return Err(AppError::PlanLimitReached {
            resource: resource.as_str(),
            limit,
            tier,
        });
    }
    Ok(())
}

/// Whether the company's plan includes `feature`, for features that depend on what a
/// request asks rather than on its endpoint (an installment plan, a client email).
pub async fn has_feature(tx: &mut TenantTx, feature: Feature) -> Result<bool, AppError> {
    Ok(tx
        .query_opt(
            "SELECT $1::text = ANY (features) FROM public.current_plan",
            &[&feature.as_str()],
        )
        .await?
        .is_some_and(|r| r.get(0)))
}

/// Refuses a request that asks for a feature the plan lacks.
pub async fn require_feature(tx: &mut TenantTx, feature: Feature) -> Result<(), AppError> {
    if has_feature(tx, feature).await? {
        return Ok(());
    }
    let tier: Option<String> = tx
        .query_opt("SELECT tier FROM public.current_plan", &[])
        .await?
        .map(|r| r.get(0));
    Err(AppError::FeatureNotInPlan {
        feature: feature.as_str().into(),
        tier: tier.unwrap_or_else(|| "current".into()),
    })
}
