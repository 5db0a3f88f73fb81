//! The tiers of SPEC §5. Their limits and features are data, in the shared `plans` table
//! seeded by a migration; this module names them for the program and loads the table once
//! at start. SQL checks (the session verdict, `current_plan`) read the same table.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;

use crate::db::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Starter,
    Professional,
    Enterprise,
}

impl Tier {
    /// In rank order, cheapest first.
    pub const ALL: [Tier; 3] = [Tier::Starter, Tier::Professional, Tier::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Starter => "starter",
            Tier::Professional => "professional",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Something a tier may or may not include. An operation that needs one names it in the
/// permission table (`auth::permissions`); the session verdict refuses it for tiers
/// without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    ApiKeys,
    BulkOperations,
    CsvExport,
    AdvancedStatistics,
    EmailNotifications,
    InstallmentPlans,
    AuditLogAccess,
    OAuthClients,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::ApiKeys => "api_keys",
            Feature::BulkOperations => "bulk_operations",
            Feature::CsvExport => "csv_export",
            Feature::AdvancedStatistics => "advanced_statistics",
            Feature::EmailNotifications => "email_notifications",
            Feature::InstallmentPlans => "installment_plans",
            Feature::AuditLogAccess => "audit_log_access",
            Feature::OAuthClients => "oauth_clients",
        }
    }
}

/// A countable resource with a per-tier ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Users,
    Estates,
    Properties,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Users, Resource::Estates, Resource::Properties];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Estates => "estates",
            Resource::Properties => "properties",
        }
    }
}

/// One row of `plans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tier: Tier,
    pub requests_per_hour: u32,
    pub max_users: Option<i64>,
    pub max_estates: Option<i64>,
    pub max_properties: Option<i64>,
    pub audit_retention_days: i32,
    pub features: Vec<String>,
}

impl Plan {
    pub fn limit(&self, resource: Resource) -> Option<i64> {
        match resource {
            Resource::Users => self.max_users,
            Resource::Estates => self.max_estates,
            Resource::Properties => self.max_properties,
        }
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.features.iter().any(|f| f == feature.as_str())
    }
}

/// Every plan, loaded once at start (plans change only by migration), indexed by tier.
#[derive(Debug, Clone)]
pub struct Plans(Arc<[Plan; 3]>);

impl Plans {
    pub async fn load(client: &impl GenericClient) -> Result<Plans, DbError> {
        let rows = client
            .query(
                "SELECT tier, requests_per_hour, max_users, max_estates, max_properties,
                        audit_retention_days, features
                 FROM plans",
                &[],
            )
            .await?;
        let mut plans = HashMap::new();
        for row in rows {
            let name: String = row.get(0);
            let Some(tier) = Tier::parse(&name) else {
                tracing::warn!(tier = %name, "a tier this build does not know is in the plans table");
                continue;
            };
            let requests: i32 = row.get(1);
            plans.insert(
                tier,
                Plan {
                    tier,
                    requests_per_hour: requests.max(1) as u32,
                    max_users: row.get::<_, Option<i32>>(2).map(i64::from),
                    max_estates: row.get::<_, Option<i32>>(3).map(i64::from),
                    max_properties: row.get::<_, Option<i32>>(4).map(i64::from),
                    audit_retention_days: row.get(5),
                    features: row.get(6),
                },
            );
        }
        let ordered: Vec<Plan> = Tier::ALL
            .into_iter()
            .filter_map(|t| plans.remove(&t))
            .collect();
        let ordered: [Plan; 3] = ordered.try_into().map_err(|_| {
            DbError::Invariant("the plans table lacks a tier; run `estate migrate`".into())
        })?;
        Ok(Plans(Arc::new(ordered)))
    }

    pub fn get(&self, tier: Tier) -> &Plan {
        &self.0[tier as usize]
    }
}
