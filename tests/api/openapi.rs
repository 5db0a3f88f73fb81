//! The checked-in `openapi.json` is what the code generates, and it is served.

use crate::helpers::spawn_app;

fn checked_in() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    std::fs::read_to_string(path).expect("openapi.json at the repository root")
}

#[test]
fn checked_in_openapi_json_matches_the_code() {
    let generated = format!("{}\n", estate::api::openapi_json());
    assert!(
        generated == checked_in(),
        "openapi.json is stale: run `cargo run -q -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn spec_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let served: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file: serde_json::Value = serde_json::from_str(&checked_in()).unwrap();
    assert_eq!(served, file);
    assert!(served["components"]["securitySchemes"]["BearerAuth"].is_object());
    let estates_get = &served["paths"]["/api/v1/estates/{id}"]["get"];
    for status in ["200", "401", "404", "422"] {
        assert!(
            estates_get["responses"][status].is_object(),
            "GET /estates/{{id}} documents {status}"
        );
    }
    assert!(estates_get["responses"]["404"]["content"]["application/problem+json"].is_object());

    let schemas = &served["components"]["schemas"];
    for name in [
        "RegisterRequest",
        "CreateEstate",
        "CreateProperty",
        "CreateAllocation",
        "RecordPayment",
        "Problem",
    ] {
        assert!(
            schemas[name]["example"].is_object(),
            "{name} has an example"
        );
    }
    assert_eq!(schemas["Problem"]["example"]["status"], 422);

    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.headers().get("content-security-policy").is_none(),
        "Swagger UI needs its scripts"
    );
    assert!(docs.text().await.unwrap().contains("swagger"));
}
