//! Walks every secured endpoint as every role and checks the answer against the
//! permission table in `auth::permissions`.

use std::collections::BTreeSet;

use estate::auth::Role;
use estate::auth::permissions::Operation;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, Tenant, TestApp, spawn_app};

/// A user of `t`'s company with `role`, logged in: (user id, access token).
pub async fn member_of(app: &TestApp, t: &Tenant, role: &str) -> (Uuid, String) {
    let email = format!("{role}-{}@example.com", Uuid::new_v4().simple());
    let resp = app
        .post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": email, "full_name": role, "role": role, "password": PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), 201, "create a {role}");
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let login: Value = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await
        .json()
        .await
        .unwrap();
    (id, login["access_token"].as_str().unwrap().to_string())
}

#[test]
fn every_secured_endpoint_of_the_api_is_in_the_permission_table() {
    let spec: Value = serde_json::from_str(&estate::api::openapi_json()).unwrap();
    let mut secured = BTreeSet::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            if op.get("security").is_some() {
                secured.insert((method.clone(), path.clone()));
            }
        }
    }
    let table: BTreeSet<(String, String)> = Operation::ALL
        .iter()
        .map(|op| {
            let (m, p) = op.endpoint();
            (m.to_string(), p.to_string())
        })
        .collect();
    assert_eq!(secured, table);
}

#[tokio::test]
async fn every_endpoint_answers_every_role_and_key_scope_as_the_table_says() {
    let app = spawn_app().await;
    let owner = app.register("Walked Homes").await;
    let (victim, _) = member_of(&app, &owner, "member").await;

    // Everyone exists before anyone logs out (logout ends the owner's token too). API keys
    // act for the owner who makes them, with viewer (read) or member (write) rights.
    let mut callers = vec![(
        Role::Owner,
        owner.user_id,
        Credential::Bearer(owner.access_token.clone()),
    )];
    for role in [Role::Admin, Role::Member, Role::Viewer] {
        let (user, token) = member_of(&app, &owner, role.as_str()).await;
        callers.push((role, user, Credential::Bearer(token)));
    }
    for (scope, role) in [("read", Role::Viewer), ("write", Role::Member)] {
        let key: Value = app
            .post(
                "/api/v1/api-keys",
                Some(&owner.access_token),
                json!({"name": scope, "scope": scope}),
            )
            .await
            .json()
            .await
            .unwrap();
        callers.push((
            role,
            owner.user_id,
            Credential::ApiKey(key["key"].as_str().unwrap().to_string()),
        ));
        let client: Value = app
            .post(
                "/api/v1/oauth-clients",
                Some(&owner.access_token),
                json!({"name": scope, "scope": scope}),
            )
            .await
            .json()
            .await
            .unwrap();
        let token = crate::oauth::client_token(&app, &client).await;
        callers.push((role, owner.user_id, Credential::Client(token)));
    }
    let mut fixtures = Vec::new();
    for (role, _, credential) in &callers {
        let api_key = app
            .post(
                "/api/v1/api-keys",
                Some(&owner.access_token),
                json!({"name": "fixture", "scope": "read"}),
            )
            .await
            .json::<Value>()
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // Objects of the caller's own where it may create them (members change only their
        // own); the owner's for viewers, whom the table refuses anyway.
        let creator = match credential {
            Credential::Bearer(token) if role.at_least(Role::Member) => token,
            _ => &owner.access_token,
        };
        let mut made = Fixtures::make(&app, creator, &format!("{role:?}")).await;
        made.api_key = api_key;
        made.oauth_client = app
            .post(
                "/api/v1/oauth-clients",
                Some(&owner.access_token),
                json!({"name": "fixture", "scope": "read"}),
            )
            .await
            .json::<Value>()
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        fixtures.push(made);
    }
    for ((role, user, credential), own) in callers.into_iter().zip(fixtures) {
        let is_machine = !matches!(credential, Credential::Bearer(_));
        let own_estate = &own.estate;
        let company = owner.company_id;
        // Logout last: it ends the session the others use.
        let mut operations = Operation::ALL.to_vec();
        // Plan changes in an order where each succeeds for the owner: the downgrade is
        // withdrawn by the upgrade, the cancellation by the company-addressed upgrade.
        operations.sort_by_key(|op| match op {
            Operation::EstatesDelete | Operation::PropertiesDelete | Operation::ClientsDelete => 1,
            Operation::SubscriptionsDowngrade => 2,
            Operation::SubscriptionsUpgrade => 3,
            Operation::SubscriptionsCancel => 4,
            Operation::CompaniesUpgradeSubscription => 5,
            Operation::Logout => 6,
            _ => 0,
        });
        for op in operations {
            let (method, body, path) = match op {
                Operation::EstatesList => (Method::GET, None, "/api/v1/estates".to_string()),
                Operation::EstatesCreate => (
                    Method::POST,
                    Some(json!({"name": "walk"})),
                    "/api/v1/estates".into(),
                ),
                Operation::EstatesGet => {
                    (Method::GET, None, format!("/api/v1/estates/{own_estate}"))
                }
                Operation::EstatesUpdate => (
                    Method::PATCH,
                    Some(json!({"status": "active"})),
                    format!("/api/v1/estates/{own_estate}"),
                ),
                Operation::EstatesDelete => (
                    Method::DELETE,
                    None,
                    format!("/api/v1/estates/{own_estate}"),
                ),
                Operation::UsersList => (Method::GET, None, "/api/v1/users".into()),
                Operation::UsersCreate => (
                    Method::POST,
                    Some(
                        json!({"email": format!("{}@example.com", Uuid::new_v4().simple()), "full_name": "N", "role": "viewer", "password": PASSWORD}),
                    ),
                    "/api/v1/users".into(),
                ),
                Operation::UsersGet => (Method::GET, None, format!("/api/v1/users/{victim}")),
                Operation::UsersUpdate => (
                    Method::PATCH,
                    Some(json!({"full_name": "Renamed"})),
                    format!("/api/v1/users/{user}"),
                ),
                Operation::UsersChangePassword => (
                    Method::POST,
                    Some(json!({"current_password": PASSWORD, "new_password": PASSWORD})),
                    format!("/api/v1/users/{user}/change_password"),
                ),
                Operation::UsersToggleStatus => (
                    Method::POST,
                    None,
                    format!("/api/v1/users/{victim}/toggle_status"),
                ),
                Operation::CompaniesList => (Method::GET, None, "/api/v1/companies".into()),
                Operation::CompaniesGet => {
                    (Method::GET, None, format!("/api/v1/companies/{company}"))
                }
                Operation::CompaniesUpdate => (
                    Method::PATCH,
                    Some(json!({"name": "Walked Homes"})),
                    format!("/api/v1/companies/{company}"),
                ),
                Operation::AuditLogsList => (Method::GET, None, "/api/v1/audit-logs".into()),
                Operation::ApiKeysList => (Method::GET, None, "/api/v1/api-keys".into()),
                Operation::ApiKeysCreate => (
                    Method::POST,
                    Some(json!({"name": "walk", "scope": "read"})),
                    "/api/v1/api-keys".into(),
                ),
                Operation::ApiKeysRevoke => (
                    Method::DELETE,
                    None,
                    format!("/api/v1/api-keys/{}", own.api_key),
                ),
                Operation::OAuthClientsList => (Method::GET, None, "/api/v1/oauth-clients".into()),
                Operation::OAuthClientsCreate => (
                    Method::POST,
                    Some(json!({"name": "walk", "scope": "read"})),
                    "/api/v1/oauth-clients".into(),
                ),
                Operation::OAuthClientsRevoke => (
                    Method::DELETE,
                    None,
                    format!("/api/v1/oauth-clients/{}", own.oauth_client),
                ),
                Operation::TransactionsList => (Method::GET, None, "/api/v1/transactions".into()),
                Operation::TransactionsStatistics => {
                    (Method::GET, None, "/api/v1/transactions/statistics".into())
                }
                Operation::TransactionsExport => {
                    (Method::GET, None, "/api/v1/transactions/export".into())
                }
                Operation::PropertiesBulkPriceUpdate => (
                    Method::POST,
                    Some(json!({"updates": [{"id": own.property, "price": "1300.00"}]})),
                    "/api/v1/properties/bulk_price_update".into(),
                ),
                Operation::AllocationsBulkAllocate => (
                    Method::POST,
                    Some(
                        json!({"allocations": [{"property_id": own.bulk_property, "client_id": own.buyer, "payment_plan": "outright"}]}),
                    ),
                    "/api/v1/allocations/bulk_allocate".into(),
                ),
                Operation::EstatesStatistics => (
                    Method::GET,
                    None,
                    format!("/api/v1/estates/{}/statistics", own.spare_estate),
                ),
                Operation::EstatesAllocations => (
                    Method::GET,
                    None,
                    format!("/api/v1/estates/{}/allocations", own.spare_estate),
                ),
                Operation::PropertiesList => (Method::GET, None, "/api/v1/properties".into()),
                Operation::PropertiesCreate => (
                    Method::POST,
                    Some(
                        json!({"estate_id": own.spare_estate, "plot_number": Uuid::new_v4().to_string()[..8], "size_sqm": "100", "price": "1000"}),
                    ),
                    "/api/v1/properties".into(),
                ),
                Operation::PropertiesGet => (
                    Method::GET,
                    None,
                    format!("/api/v1/properties/{}", own.property),
                ),
                Operation::PropertiesUpdate => (
                    Method::PATCH,
                    Some(json!({"price": "1200.00"})),
                    format!("/api/v1/properties/{}", own.property),
                ),
                Operation::PropertiesDelete => (
                    Method::DELETE,
                    None,
                    format!("/api/v1/properties/{}", own.property),
                ),
                Operation::ClientsList => (Method::GET, None, "/api/v1/clients".into()),
                Operation::ClientsCreate => (
                    Method::POST,
                    Some(json!({"full_name": "Walk-in"})),
                    "/api/v1/clients".into(),
                ),
                Operation::ClientsGet => {
                    (Method::GET, None, format!("/api/v1/clients/{}", own.client))
                }
                Operation::ClientsUpdate => (
                    Method::PATCH,
                    Some(json!({"phone": "+234 800 000 0000"})),
                    format!("/api/v1/clients/{}", own.client),
                ),
                Operation::ClientsDelete => (
                    Method::DELETE,
                    None,
                    format!("/api/v1/clients/{}", own.client),
                ),
                Operation::AllocationsList => (Method::GET, None, "/api/v1/allocations".into()),
                Operation::AllocationsCreate => (
                    Method::POST,
                    Some(
                        json!({"property_id": own.free_property, "client_id": own.buyer, "payment_plan": "installment"}),
                    ),
                    "/api/v1/allocations".into(),
                ),
                Operation::AllocationsGet => (
                    Method::GET,
                    None,
                    format!("/api/v1/allocations/{}", own.allocation),
                ),
                Operation::AllocationsRecordPayment => (
                    Method::POST,
                    Some(json!({"amount": "1.00", "method": "cash"})),
                    format!("/api/v1/allocations/{}/record_payment", own.allocation),
                ),
                Operation::AllocationsPaymentHistory => (
                    Method::GET,
                    None,
                    format!("/api/v1/allocations/{}/payment_history", own.allocation),
                ),
                Operation::Logout => (Method::POST, Some(json!({})), "/api/v1/auth/logout".into()),
                Operation::SubscriptionsCurrent => {
                    (Method::GET, None, "/api/v1/subscriptions/current".into())
                }
                Operation::SubscriptionsBillingHistory => (
                    Method::GET,
                    None,
                    "/api/v1/subscriptions/billing_history".into(),
                ),
                Operation::CompaniesCheckApiLimit => (
                    Method::GET,
                    None,
                    format!("/api/v1/companies/{company}/check_api_limit"),
                ),
                Operation::SubscriptionsDowngrade => (
                    Method::POST,
                    Some(json!({"tier": "professional"})),
                    "/api/v1/subscriptions/downgrade".into(),
                ),
                Operation::SubscriptionsCancel => {
                    (Method::POST, None, "/api/v1/subscriptions/cancel".into())
                }
                Operation::SubscriptionsUpgrade => (
                    Method::POST,
                    Some(json!({"tier": "enterprise"})),
                    "/api/v1/subscriptions/upgrade".into(),
                ),
                Operation::CompaniesUpgradeSubscription => (
                    Method::POST,
                    Some(json!({"tier": "enterprise"})),
                    format!("/api/v1/companies/{company}/upgrade_subscription"),
                ),
                Operation::PaymentsProcess => (
                    Method::POST,
                    Some(json!({"allocation_id": own.allocation, "amount": "1.00"})),
                    "/api/v1/payments/process".into(),
                ),
            };
            assert_eq!(op.endpoint().0.to_uppercase(), method.as_str(), "{op:?}");
            let mut request = app.http.request(method, app.url(&path));
            request = match &credential {
                Credential::Bearer(token) | Credential::Client(token) => request.bearer_auth(token),
                Credential::ApiKey(key) => request.header("X-API-Key", key),
            };
            if let Some(body) = body {
                request = request.json(&body);
            }
            let status = request.send().await.unwrap().status().as_u16();
            // A machine (API key, OAuth client) has no session and no password of its own.
            let key_refused =
                is_machine && matches!(op, Operation::Logout | Operation::UsersChangePassword);
            let allowed = role.at_least(op.rule().least_role) && !key_refused;
            let caller = format!("{role:?} {}", credential.kind());
            // Without Stripe configured, card payments answer 503 once permitted.
            let local_mode_answer = op == Operation::PaymentsProcess && status == 503;
            if allowed {
                assert!(
                    (200..300).contains(&status) || local_mode_answer,
                    "{caller} {op:?}: expected success, got {status}"
                );
            } else {
                assert_eq!(status, 403, "{caller} {op:?}");
            }
        }
    }
}

/// What one caller acts on in the walk.
struct Fixtures {
    estate: String,
    /// Holds `property`, so deleting the estate (last) still finds it empty.
    spare_estate: String,
    property: String,
    client: String,
    /// Allocated by the walk's AllocationsCreate.
    free_property: String,
    /// Allocated by the walk's AllocationsBulkAllocate.
    bulk_property: String,
    buyer: String,
    allocation: String,
    /// Revoked by the walk's ApiKeysRevoke.
    api_key: String,
    /// Revoked by the walk's OAuthClientsRevoke.
    oauth_client: String,
}

async fn id_of(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

impl Fixtures {
    async fn make(app: &TestApp, token: &str, who: &str) -> Self {
        let estate = app
            .create_estate(token, json!({"name": format!("{who}'s")}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let spare_estate = app
            .create_estate(token, json!({"name": format!("{who}'s spare")}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let property = |plot: &str| {
            let body = json!({"estate_id": spare_estate, "plot_number": plot, "size_sqm": "100", "price": "1000"});
            async move { id_of(app.post("/api/v1/properties", Some(token), body).await).await }
        };
        let bulk_property = property("A-4").await;
        let (prop, free, sold) = (
            property("A-1").await,
            property("A-2").await,
            property("A-3").await,
        );
        let client = |name: &str| {
            let body = json!({"full_name": name});
            async move { id_of(app.post("/api/v1/clients", Some(token), body).await).await }
        };
        let (own_client, buyer) = (client("Own").await, client("Buyer").await);
        let allocation = id_of(
            app.post(
                "/api/v1/allocations",
                Some(token),
                json!({"property_id": sold, "client_id": buyer, "payment_plan": "installment"}),
            )
            .await,
        )
        .await;
        Fixtures {
            estate,
            spare_estate,
            property: prop,
            client: own_client,
            free_property: free,
            bulk_property,
            buyer,
            allocation,
            api_key: String::new(),
            oauth_client: String::new(),
        }
    }
}

/// How a caller of the walk authenticates.
enum Credential {
    Bearer(String),
    ApiKey(String),
    /// An OAuth client's bearer token.
    Client(String),
}

impl Credential {
    fn kind(&self) -> &'static str {
        match self {
            Credential::Bearer(_) => "user",
            Credential::ApiKey(_) => "API key",
            Credential::Client(_) => "OAuth client",
        }
    }
}
