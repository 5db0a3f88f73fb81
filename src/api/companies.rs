//! `/companies`: the caller's own company, and nothing else.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::json_body::{JsonBody, rfc3339};
use super::problem::ErrorResponse;
use super::security::Auth;
use super::subscriptions::{ChangeTier, SubscriptionBody, parse_tier, subscription_body};
use super::{ApiState, ApiTags};
use crate::auth::permissions::Operation;
use crate::billing::subscriptions;
use crate::domain::companies::{self, CompanyDetails, parse_company_name};
use crate::error::AppError;
use crate::rate_limit::{CountSource, Subject};

pub struct CompaniesApi;

#[derive(Object, serde::Serialize)]
#[oai(rename = "Company")]
pub struct CompanyBody {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// `starter`, `professional` or `enterprise`.
    pub tier: String,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<CompanyDetails> for CompanyBody {
    fn from(c: CompanyDetails) -> Self {
        CompanyBody {
            id: c.id,
            name: c.name,
            slug: c.slug,
            tier: c.tier,
            status: c.status,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Object, serde::Serialize)]
pub struct CompanyPage {
    /// Always 1: a caller sees only its own company.
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<CompanyBody>,
}

/// The hour's request quota.
#[derive(Object)]
pub struct ApiLimitBody {
    pub tier: String,
    /// Requests allowed per hour.
    pub limit: u64,
    /// Requests made this hour (this one included).
    pub used: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset: u64,
    pub resets_at: DateTime<Utc>,
    /// False when the server runs with `RATE_LIMITS=off`.
    pub enforced: bool,
    /// False while Redis is unreachable and each server process counts on its own.
    pub shared: bool,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateCompany {
    /// 1–200 characters.
    pub name: Option<String>,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Companies")]
impl CompaniesApi {
    /// The caller's company, as a one-item list.
    #[oai(path = "/companies", method = "get")]
    async fn list(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<JsonBody<CompanyPage>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::CompaniesList).await?;
        let company = companies::get(&state.db, principal, principal.company.0).await?;
        Ok(JsonBody(CompanyPage {
            count: 1,
            next: None,
            previous: None,
            results: vec![company.into()],
        }))
    }

    /// The caller's company. Any other id answers 404.
    #[oai(path = "/companies/:id", method = "get")]
    async fn get(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<CompanyBody>, ErrorResponse> {
        let principal = auth.verified(&state, Operation::CompaniesGet).await?;
        Ok(Json(
            companies::get(&state.db, principal, id.0).await?.into(),
        ))
    }

    /// Move the company to a higher tier, at once (owner only): the same as
    /// `POST /subscriptions/upgrade`, addressed by company. Any other id answers 404.
    #[oai(path = "/companies/:id/upgrade_subscription", method = "post")]
    async fn upgrade_subscription(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<ChangeTier>,
    ) -> Result<Json<SubscriptionBody>, ErrorResponse> {
        let tier = parse_tier(&body.0.tier)?;
        let principal = auth
            .verified(&state, Operation::CompaniesUpgradeSubscription)
            .await?;
        if id.0 != principal.company.0 {
            return Err(AppError::NotFound("company").into());
        }
        let s = subscriptions::upgrade(&state.db, &state.billing, principal, tier).await?;
        state.rate_limiter.forget(principal.company);
        Ok(Json(subscription_body(&state, s, None)))
    }

    /// The company's request quota this hour: its limit, what is used, and when the
    /// window resets. Any other id answers 404.
    #[oai(path = "/companies/:id/check_api_limit", method = "get")]
    async fn check_api_limit(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
    ) -> Result<Json<ApiLimitBody>, ErrorResponse> {
        let principal = auth
            .verified(&state, Operation::CompaniesCheckApiLimit)
            .await?;
        if id.0 != principal.company.0 {
            return Err(AppError::NotFound("company").into());
        }
        let d = state
            .rate_limiter
            .usage(Subject::Company(principal.company))
            .await?;
        Ok(Json(ApiLimitBody {
            tier: d.policy.into(),
            limit: d.limit,
            used: d.used,
            remaining: d.remaining(),
            reset: d.reset_secs,
            resets_at: Utc::now() + chrono::Duration::seconds(d.reset_secs as i64),
            enforced: state.rate_limiter.enabled(),
            shared: d.source == CountSource::Shared,
        }))
    }

    /// Rename the company (admins and owners).
    #[oai(path = "/companies/:id", method = "patch")]
    async fn update(
        &self,
        auth: Auth,
        state: Data<&Arc<ApiState>>,
        id: Path<Uuid>,
        body: Json<UpdateCompany>,
    ) -> Result<Json<CompanyBody>, ErrorResponse> {
        let name = parse_company_name(body.0.name.as_deref())?;
        let principal = auth.verified(&state, Operation::CompaniesUpdate).await?;
        Ok(Json(
            companies::update(&state.db, principal, id.0, name)
                .await?
                .into(),
        ))
    }
}
