//! [`JsonBody`]: a JSON response written by serde straight from the value.
//!
//! poem-openapi's `Json<T>` writes a response by first building the whole answer as a
//! `serde_json::Value` tree (every field name and string copied into a map of its own)
//! and then serializing that tree. For a page of 20 estates that was 17% of the server's
//! CPU per request under load (BENCHMARKS.md). `JsonBody<T>` keeps `Json<T>`'s content
//! type and schema — the OpenAPI document cannot tell them apart — and writes the body with
//! `T`'s own `serde::Serialize`, which must give the same JSON as `T`'s `ToJSON`. Types
//! that derive both keep them in step with the attributes below, and a test per type
//! compares the two outputs.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use serde::Serialize;

use super::problem::{Problem, problem_response};

/// A `200` JSON answer with `T`'s schema, written by `T`'s `serde::Serialize`.
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        Json::<T>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Serialize + Send> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type(Self::CONTENT_TYPE)
                .body(body),
            // Only a map with non-string keys or a failing custom `Serialize` can get here;
            // none of the answer types has either.
            Err(e) => {
                tracing::error!(error = %e, "could not write a JSON answer");
                problem_response(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the answer could not be written",
                ))
            }
        }
    }
}

impl<T: Type + ToJSON + Serialize + Send> ApiResponse for JsonBody<T> {
    fn meta() -> MetaResponses {
        Json::<T>::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Serde attribute for `DateTime<Utc>` fields: `2026-01-31T09:30:00.123456+00:00`, the
/// form poem-openapi's `ToJSON` writes (chrono's own `Serialize` ends in `Z`).
pub fn rfc3339<S: serde::Serializer>(
    t: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&t.to_rfc3339())
}

/// [`rfc3339`] for `Option<DateTime<Utc>>`: `null` when absent.
pub fn rfc3339_opt<S: serde::Serializer>(
    t: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    //! Every answer sent as a [`JsonBody`] must read the same as poem-openapi's `Json`
    //! would have written it (field names, `null`s, enum spellings, time and decimal forms).
    //! Each page below holds one item with every optional field set and one with none.

    use chrono::{DateTime, TimeZone, Utc};
    use poem_openapi::types::{Any, ToJSON};
    use serde::Serialize;
    use uuid::Uuid;

    use crate::api::allocations::{AllocationBody, AllocationPage, PaymentBody, PaymentHistory};
    use crate::api::api_keys::{ApiKeyBody, ApiKeyPage};
    use crate::api::audit::{AuditBody, AuditLogPage};
    use crate::api::clients::{ClientBody, ClientPage};
    use crate::api::companies::{CompanyBody, CompanyPage};
    use crate::api::estates::{EstateBody, EstatePage, EstateStatusBody};
    use crate::api::oauth::{OAuthClientBody, OAuthClientPage};
    use crate::api::properties::{PropertyBody, PropertyPage};
    use crate::api::subscriptions::{BillingEventBody, BillingEventPage};
    use crate::api::transactions::TransactionPage;
    use crate::api::types::DecimalString;
    use crate::api::users::{UserBody, UserPage};

    fn assert_same_json<T: ToJSON + Serialize>(value: &T) {
        let written: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap();
        assert_eq!(Some(written), value.to_json());
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// With microseconds, as PostgreSQL stores them: the digits must survive.
    fn time(n: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 9, 30, n).unwrap()
            + chrono::Duration::microseconds(123_456)
    }

    fn money(s: &str) -> DecimalString {
        DecimalString(s.to_string())
    }

    /// A page of `results`, with both links set.
    macro_rules! page {
        ($page:ident, $results:expr) => {
            $page {
                count: 42,
                next: Some("/api/v1/x?page=3".into()),
                previous: Some("/api/v1/x?page=1".into()),
                results: $results,
            }
        };
    }

    #[test]
    fn pages_of_the_tenant_api_read_the_same_as_poem_openapi_json() {
        assert_same_json(&page!(
            EstatePage,
            [EstateStatusBody::Planning, EstateStatusBody::SoldOut]
                .into_iter()
                .map(|status| EstateBody {
                    id: id(1),
                    name: "Palm \"Court\"\n".into(),
                    location: "Lekki — Phase 1".into(),
                    description: String::new(),
                    status,
                    created_by: id(2),
                    created_at: time(1),
                    updated_at: time(2),
                })
                .collect()
        ));
        assert_same_json(&page!(
            PropertyPage,
            vec![PropertyBody {
                id: id(1),
                estate_id: id(2),
                plot_number: "A-1".into(),
                size_sqm: money("450.5"),
                price: money("2500000.00"),
                status: "available".into(),
                created_by: id(3),
                created_at: time(1),
                updated_at: time(2),
            }]
        ));
        assert_same_json(&page!(
            ClientPage,
            vec![ClientBody {
                id: id(1),
                full_name: "Ann Adeyemi".into(),
                email: "ann@example.com".into(),
                phone: "+234 1".into(),
                created_by: id(2),
                created_at: time(1),
                updated_at: time(2),
            }]
        ));
        let allocation = AllocationBody {
            id: id(1),
            property_id: id(2),
            client_id: id(3),
            payment_plan: "installment".into(),
            total_price: money("1000.00"),
            amount_paid: money("250.00"),
            balance: money("750.00"),
            status: "active".into(),
            created_by: id(4),
            created_at: time(1),
            updated_at: time(2),
        };
        assert_same_json(&page!(AllocationPage, vec![allocation]));
        let payment = || PaymentBody {
            id: id(1),
            allocation_id: id(2),
            amount: money("250.00"),
            method: "bank_transfer".into(),
            reference: "REF-1".into(),
            paid_at: time(1),
            recorded_by: id(3),
            created_at: time(2),
        };
        assert_same_json(&page!(PaymentHistory, vec![payment()]));
        assert_same_json(&page!(TransactionPage, vec![payment()]));
    }

    #[test]
    fn pages_of_the_company_api_read_the_same_as_poem_openapi_json() {
        assert_same_json(&page!(
            UserPage,
            vec![UserBody {
                id: id(1),
                email: "ann@example.com".into(),
                full_name: "Ann".into(),
                role: "owner".into(),
                is_active: false,
                created_at: time(1),
                updated_at: time(2),
            }]
        ));
        assert_same_json(&page!(
            CompanyPage,
            vec![CompanyBody {
                id: id(1),
                name: "Acme".into(),
                slug: "acme".into(),
                tier: "basic".into(),
                status: "active".into(),
                created_at: time(1),
                updated_at: time(2),
            }]
        ));
        assert_same_json(&page!(
            ApiKeyPage,
            [Some(time(3)), None]
                .into_iter()
                .map(|t| ApiKeyBody {
                    id: id(1),
                    name: "ci".into(),
                    prefix: "ek_1234".into(),
                    scope: "read".into(),
                    created_by: id(2),
                    expires_at: t,
                    last_used_at: t,
                    revoked_at: t,
                    created_at: time(1),
                })
                .collect()
        ));
        assert_same_json(&page!(
            OAuthClientPage,
            [Some(time(3)), None]
                .into_iter()
                .map(|revoked_at| OAuthClientBody {
                    id: id(1),
                    name: "erp".into(),
                    client_id: "oc_1".into(),
                    scope: "write".into(),
                    created_by: id(2),
                    revoked_at,
                    created_at: time(1),
                })
                .collect()
        ));
        assert_same_json(&page!(
            AuditLogPage,
            [true, false]
                .into_iter()
                .map(|set| AuditBody {
                    id: id(1),
                    action: "estate.update".into(),
                    actor_id: set.then(|| id(2)),
                    actor_kind: "user".into(),
                    object_type: set.then(|| "estate".into()),
                    object_id: set.then(|| id(3)),
                    before: set.then(|| Any(serde_json::json!({"name": "a", "n": [1, 2.5]}))),
                    after: set.then(|| Any(serde_json::json!({"name": null}))),
                    ip: set.then(|| "10.0.0.1".into()),
                    user_agent: set.then(|| "curl/8".into()),
                    request_id: set.then(|| "req-1".into()),
                    created_at: time(1),
                })
                .collect()
        ));
        assert_same_json(&page!(
            BillingEventPage,
            [true, false]
                .into_iter()
                .map(|set| BillingEventBody {
                    id: id(1),
                    event: "tier_changed".into(),
                    from_tier: set.then(|| "basic".into()),
                    to_tier: set.then(|| "pro".into()),
                    amount: set.then(|| "49.00".into()),
                    currency: set.then(|| "usd".into()),
                    stripe_id: set.then(|| "in_1".into()),
                    detail: set.then(|| "upgrade".into()),
                    occurred_at: time(1),
                })
                .collect()
        ));
    }

    #[test]
    fn a_page_without_links_or_results_reads_the_same() {
        assert_same_json(&EstatePage {
            count: 0,
            next: None,
            previous: None,
            results: vec![],
        });
    }
}
