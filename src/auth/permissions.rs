//! The permission table: for every operation of the API, the least role that may call it
//! and whether it reads or writes (read-scoped API keys may only read). One table, read by
//! one check, and walked by a test that calls every endpoint as every role.
//!
//! Ownership rules that depend on the object ("members may change what they created",
//! "only an owner may make an owner") are the domain's, on top of this table.

use super::{Access, Principal, Role};
use crate::billing::plans::Feature;
use crate::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    EstatesList,
    EstatesCreate,
    EstatesGet,
    EstatesUpdate,
    EstatesDelete,
    EstatesStatistics,
    EstatesAllocations,
    UsersList,
    UsersCreate,
    UsersGet,
    UsersUpdate,
    UsersChangePassword,
    UsersToggleStatus,
    CompaniesList,
    CompaniesGet,
    CompaniesUpdate,
    AuditLogsList,
    PropertiesList,
    PropertiesCreate,
    PropertiesGet,
    PropertiesUpdate,
    PropertiesDelete,
    PropertiesBulkPriceUpdate,
    ClientsList,
    ClientsCreate,
    ClientsGet,
    ClientsUpdate,
    ClientsDelete,
    AllocationsList,
    AllocationsCreate,
    AllocationsGet,
    AllocationsRecordPayment,
    AllocationsPaymentHistory,
    AllocationsBulkAllocate,
    TransactionsList,
    TransactionsStatistics,
    TransactionsExport,
    ApiKeysList,
    ApiKeysCreate,
    ApiKeysRevoke,
    OAuthClientsList,
    OAuthClientsCreate,
    OAuthClientsRevoke,
    Logout,
    SubscriptionsCurrent,
    SubscriptionsUpgrade,
    SubscriptionsDowngrade,
    SubscriptionsCancel,
    SubscriptionsBillingHistory,
    CompaniesUpgradeSubscription,
    CompaniesCheckApiLimit,
    PaymentsProcess,
}

/// Who may perform an operation, and what it needs of the company's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub least_role: Role,
    pub access: Access,
    /// A feature the company's tier must include (SPEC §5); refused with 403 otherwise.
    pub feature: Option<Feature>,
    /// Allowed while the subscription is unpaid or cancelled (paying is how a read-only
    /// company gets out of that state); every other write then answers 402.
    pub while_unpaid: bool,
}

const fn rule(least_role: Role, access: Access) -> Rule {
    Rule {
        least_role,
        access,
        feature: None,
        while_unpaid: false,
    }
}

impl Rule {
    const fn needs(mut self, feature: Feature) -> Rule {
        self.feature = Some(feature);
        self
    }

    const fn while_unpaid(mut self) -> Rule {
        self.while_unpaid = true;
        self
    }

    /// Any live session may do this: the check used before recording a refusal.
    pub const fn any_session() -> Rule {
        rule(Role::Viewer, Access::Read)
    }
}

impl Operation {
    pub const ALL: [Operation; 52] = [
        Operation::EstatesList,
        Operation::EstatesCreate,
        Operation::EstatesGet,
        Operation::EstatesUpdate,
        Operation::EstatesDelete,
        Operation::EstatesStatistics,
        Operation::EstatesAllocations,
        Operation::UsersList,
        Operation::UsersCreate,
        Operation::UsersGet,
        Operation::UsersUpdate,
        Operation::UsersChangePassword,
        Operation::UsersToggleStatus,
        Operation::CompaniesList,
        Operation::CompaniesGet,
        Operation::CompaniesUpdate,
        Operation::AuditLogsList,
        Operation::PropertiesList,
        Operation::PropertiesCreate,
        Operation::PropertiesGet,
        Operation::PropertiesUpdate,
        Operation::PropertiesDelete,
        Operation::PropertiesBulkPriceUpdate,
        Operation::ClientsList,
        Operation::ClientsCreate,
        Operation::ClientsGet,
        Operation::ClientsUpdate,
        Operation::ClientsDelete,
        Operation::AllocationsList,
        Operation::AllocationsCreate,
        Operation::AllocationsGet,
        Operation::AllocationsRecordPayment,
        Operation::AllocationsPaymentHistory,
        Operation::AllocationsBulkAllocate,
        Operation::TransactionsList,
        Operation::TransactionsStatistics,
        Operation::TransactionsExport,
        Operation::ApiKeysList,
        Operation::ApiKeysCreate,
        Operation::ApiKeysRevoke,
        Operation::OAuthClientsList,
        Operation::OAuthClientsCreate,
        Operation::OAuthClientsRevoke,
        Operation::Logout,
        Operation::SubscriptionsCurrent,
        Operation::SubscriptionsUpgrade,
        Operation::SubscriptionsDowngrade,
        Operation::SubscriptionsCancel,
        Operation::SubscriptionsBillingHistory,
        Operation::CompaniesUpgradeSubscription,
        Operation::CompaniesCheckApiLimit,
        Operation::PaymentsProcess,
    ];

    /// The endpoint (method, OpenAPI path) that performs the operation. A test checks that
    /// every secured endpoint of the OpenAPI document appears here, so none is left out.
    pub const fn endpoint(self) -> (&'static str, &'static str) {
        match self {
            Operation::EstatesList => ("get", "/api/v1/estates"),
            Operation::EstatesCreate => ("post", "/api/v1/estates"),
            Operation::EstatesGet => ("get", "/api/v1/estates/{id}"),
            Operation::EstatesUpdate => ("patch", "/api/v1/estates/{id}"),
            Operation::EstatesDelete => ("delete", "/api/v1/estates/{id}"),
            Operation::EstatesStatistics => ("get", "/api/v1/estates/{id}/statistics"),
            Operation::EstatesAllocations => ("get", "/api/v1/estates/{id}/allocations"),
            Operation::UsersList => ("get", "/api/v1/users"),
            Operation::UsersCreate => ("post", "/api/v1/users"),
            Operation::UsersGet => ("get", "/api/v1/users/{id}"),
            Operation::UsersUpdate => ("patch", "/api/v1/users/{id}"),
            Operation::UsersChangePassword => ("post", "/api/v1/users/{id}/change_password"),
            Operation::UsersToggleStatus => ("post", "/api/v1/users/{id}/toggle_status"),
            Operation::CompaniesList => ("get", "/api/v1/companies"),
            Operation::CompaniesGet => ("get", "/api/v1/companies/{id}"),
            Operation::CompaniesUpdate => ("patch", "/api/v1/companies/{id}"),
            Operation::AuditLogsList => ("get", "/api/v1/audit-logs"),
            Operation::PropertiesList => ("get", "/api/v1/properties"),
            Operation::PropertiesCreate => ("post", "/api/v1/properties"),
            Operation::PropertiesGet => ("get", "/api/v1/properties/{id}"),
            Operation::PropertiesUpdate => ("patch", "/api/v1/properties/{id}"),
            Operation::PropertiesDelete => ("delete", "/api/v1/properties/{id}"),
            Operation::PropertiesBulkPriceUpdate => {
                ("post", "/api/v1/properties/bulk_price_update")
            }
            Operation::ClientsList => ("get", "/api/v1/clients"),
            Operation::ClientsCreate => ("post", "/api/v1/clients"),
            Operation::ClientsGet => ("get", "/api/v1/clients/{id}"),
            Operation::ClientsUpdate => ("patch", "/api/v1/clients/{id}"),
            Operation::ClientsDelete => ("delete", "/api/v1/clients/{id}"),
            Operation::AllocationsList => ("get", "/api/v1/allocations"),
            Operation::AllocationsCreate => ("post", "/api/v1/allocations"),
            Operation::AllocationsGet => ("get", "/api/v1/allocations/{id}"),
            Operation::AllocationsRecordPayment => {
                ("post", "/api/v1/allocations/{id}/record_payment")
            }
            Operation::AllocationsPaymentHistory => {
                ("get", "/api/v1/allocations/{id}/payment_history")
            }
            Operation::AllocationsBulkAllocate => ("post", "/api/v1/allocations/bulk_allocate"),
            Operation::TransactionsList => ("get", "/api/v1/transactions"),
            Operation::TransactionsStatistics => ("get", "/api/v1/transactions/statistics"),
            Operation::TransactionsExport => ("get", "/api/v1/transactions/export"),
            Operation::ApiKeysList => ("get", "/api/v1/api-keys"),
            Operation::ApiKeysCreate => ("post", "/api/v1/api-keys"),
            Operation::ApiKeysRevoke => ("delete", "/api/v1/api-keys/{id}"),
            Operation::OAuthClientsList => ("get", "/api/v1/oauth-clients"),
            Operation::OAuthClientsCreate => ("post", "/api/v1/oauth-clients"),
            Operation::OAuthClientsRevoke => ("delete", "/api/v1/oauth-clients/{id}"),
            Operation::Logout => ("post", "/api/v1/auth/logout"),
            Operation::SubscriptionsCurrent => ("get", "/api/v1/subscriptions/current"),
            Operation::SubscriptionsUpgrade => ("post", "/api/v1/subscriptions/upgrade"),
            Operation::SubscriptionsDowngrade => ("post", "/api/v1/subscriptions/downgrade"),
            Operation::SubscriptionsCancel => ("post", "/api/v1/subscriptions/cancel"),
            Operation::SubscriptionsBillingHistory => {
                ("get", "/api/v1/subscriptions/billing_history")
            }
            Operation::CompaniesUpgradeSubscription => {
                ("post", "/api/v1/companies/{id}/upgrade_subscription")
            }
            Operation::CompaniesCheckApiLimit => ("get", "/api/v1/companies/{id}/check_api_limit"),
            Operation::PaymentsProcess => ("post", "/api/v1/payments/process"),
        }
    }

    /// The table.
    pub const fn rule(self) -> Rule {
        use Access::{Read, Write};
        use Feature::*;
        use Role::{Admin, Member, Owner, Viewer};
        match self {
            Operation::EstatesList
            | Operation::EstatesGet
            | Operation::EstatesAllocations
            | Operation::PropertiesList
            | Operation::PropertiesGet
            | Operation::ClientsList
            | Operation::ClientsGet
            | Operation::AllocationsList
            | Operation::AllocationsGet
            | Operation::AllocationsPaymentHistory
            | Operation::TransactionsList => rule(Viewer, Read),
            Operation::EstatesStatistics | Operation::TransactionsStatistics => {
                rule(Viewer, Read).needs(AdvancedStatistics)
            }
            Operation::TransactionsExport => rule(Viewer, Read).needs(CsvExport),
            // Members change only what they created (checked by the domain).
            Operation::EstatesCreate
            | Operation::EstatesUpdate
            | Operation::EstatesDelete
            | Operation::PropertiesCreate
            | Operation::PropertiesUpdate
            | Operation::PropertiesDelete
            | Operation::ClientsCreate
            | Operation::ClientsUpdate
            | Operation::ClientsDelete
            | Operation::AllocationsCreate
            | Operation::AllocationsRecordPayment
            | Operation::PaymentsProcess => rule(Member, Write),
            Operation::PropertiesBulkPriceUpdate | Operation::AllocationsBulkAllocate => {
                rule(Member, Write).needs(BulkOperations)
            }
            Operation::UsersList | Operation::UsersGet => rule(Viewer, Read),
            Operation::UsersCreate => rule(Admin, Write),
            // Security stays possible while unpaid: locking a user out, changing one's
            // password, revoking credentials.
            Operation::UsersToggleStatus => rule(Admin, Write).while_unpaid(),
            // Anyone may change their own name; only admins others' (checked by the domain).
            Operation::UsersUpdate => rule(Viewer, Write),
            // One's own password only (checked by the domain).
            Operation::UsersChangePassword => rule(Viewer, Write).while_unpaid(),
            Operation::CompaniesList
            | Operation::CompaniesGet
            | Operation::CompaniesCheckApiLimit
            | Operation::SubscriptionsCurrent => rule(Viewer, Read),
            Operation::CompaniesUpdate => rule(Admin, Write),
            Operation::SubscriptionsBillingHistory => rule(Admin, Read),
            Operation::SubscriptionsUpgrade
            | Operation::SubscriptionsDowngrade
            | Operation::SubscriptionsCancel
            | Operation::CompaniesUpgradeSubscription => rule(Owner, Write).while_unpaid(),
            Operation::AuditLogsList => rule(Admin, Read).needs(AuditLogAccess),
            Operation::ApiKeysList => rule(Admin, Read).needs(ApiKeys),
            Operation::ApiKeysCreate => rule(Admin, Write).needs(ApiKeys),
            Operation::ApiKeysRevoke => rule(Admin, Write).needs(ApiKeys).while_unpaid(),
            Operation::OAuthClientsList => rule(Admin, Read).needs(OAuthClients),
            Operation::OAuthClientsCreate => rule(Admin, Write).needs(OAuthClients),
            Operation::OAuthClientsRevoke => rule(Admin, Write).needs(OAuthClients).while_unpaid(),
            Operation::Logout => rule(Viewer, Write).while_unpaid(),
        }
    }
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Member => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    /// True when this role is at least `other`.
    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
}

/// The role check: may this principal perform this operation at all? The plan and
/// subscription parts of the rule are the session verdict's (`auth::verdict`).
pub fn permit(principal: &Principal, operation: Operation) -> Result<Rule, AppError> {
    let rule = operation.rule();
    if principal.role.at_least(rule.least_role) {
        Ok(rule)
    } else {
        Err(AppError::Forbidden(format!(
            "this requires the {} role or higher",
            rule.least_role.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner.at_least(Role::Admin));
        assert!(Role::Admin.at_least(Role::Member));
        assert!(Role::Member.at_least(Role::Viewer));
        assert!(!Role::Viewer.at_least(Role::Member));
        assert!(!Role::Admin.at_least(Role::Owner));
    }

    #[test]
    fn viewers_may_write_nothing_but_their_own_account_and_session() {
        for op in Operation::ALL {
            let r = op.rule();
            if r.access == Access::Write && r.least_role == Role::Viewer {
                assert!(
                    matches!(
                        op,
                        Operation::UsersUpdate | Operation::UsersChangePassword | Operation::Logout
                    ),
                    "{op:?}"
                );
            }
        }
    }
}
