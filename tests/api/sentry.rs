//! Errors reach Sentry (through its test transport) with tenant and request tags, from
//! the server and from the worker.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sentry::test::TestTransport;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{config_with, spawn_app, spawn_app_with};

/// Sentry for the whole test binary, capturing into one transport; each test finds its
/// own events by their tags.
fn transport() -> Arc<TestTransport> {
    static SENTRY: OnceLock<Arc<TestTransport>> = OnceLock::new();
    SENTRY
        .get_or_init(|| {
            let _ = tracing_subscriber::registry()
                .with(estate::telemetry::sentry_layer())
                .try_init();
            let transport = TestTransport::new();
            let mut options = sentry::ClientOptions::default();
            options.dsn = Some("https://public@sentry.invalid/1".parse().unwrap());
            options.transport = Some(Arc::new(transport.clone()));
            // Only the integration these tests rely on (panics); the default set also reads
            // OS contexts and debug images, which nothing here looks at.
            options.default_integrations = false;
            options.integrations.push(Arc::new(
                sentry::integrations::panic::PanicIntegration::default(),
            ));
            // `sentry::init` binds the thread's hub, and a test is not on the main thread:
            // bind the process's hub, which requests and jobs start from.
            sentry::Hub::main().bind_client(Some(Arc::new(options.into())));
            transport
        })
        .clone()
}

fn tag<'a>(event: &'a sentry::protocol::Event<'static>, name: &str) -> Option<&'a str> {
    event.tags.get(name).map(String::as_str)
}

/// Every event captured so far, kept for all tests to search.
static EVENTS: std::sync::Mutex<Vec<sentry::protocol::Event<'static>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (bounded) for an event matching `matches`.
async fn event_where(
    matches: impl Fn(&sentry::protocol::Event<'static>) -> bool,
) -> sentry::protocol::Event<'static> {
    let transport = transport();
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            {
                let mut events = EVENTS.lock().unwrap();
                events.extend(transport.fetch_and_clear_events());
                if let Some(event) = events.iter().find(|e| matches(e)) {
                    return event.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let events = EVENTS.lock().unwrap();
        let tags: Vec<_> = events.iter().map(|e| &e.tags).collect();
        panic!(
            "the event reaches Sentry; captured {} others: {tags:?}",
            events.len()
        )
    })
}

#[tokio::test]
async fn a_server_error_reaches_sentry_with_its_tenant_and_request() {
    transport();
    let fake = FakeStripe::start().await;
    let app = spawn_app_with(&[
        ("STRIPE_SECRET_KEY", "sk_test_fake"),
        ("STRIPE_API_BASE", &fake.url),
        ("STRIPE_PRICE_STARTER", "price_s"),
        ("STRIPE_PRICE_PROFESSIONAL", "price_p"),
        ("STRIPE_PRICE_ENTERPRISE", "price_e"),
    ])
    .await;
    let t = app.register_on("Reported", "starter").await;
    fake.fail(true);
    let resp = app
        .post(
            "/api/v1/subscriptions/upgrade",
            Some(&t.access_token),
            json!({"tier": "professional"}),
        )
        .await;
    assert_eq!(resp.status(), 502);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let event = event_where(|e| tag(e, "request_id") == Some(request_id.as_str())).await;
    assert_eq!(
        tag(&event, "tenant"),
        Some(t.company_id.to_string().as_str())
    );
    assert_eq!(tag(&event, "route"), Some("/api/v1/subscriptions/upgrade"));
    assert_eq!(
        event.user.as_ref().and_then(|u| u.id.clone()),
        Some(t.user_id.to_string())
    );
}

#[tokio::test]
async fn a_dead_job_reaches_sentry_with_its_tenant_and_job() {
    transport();
    let app = spawn_app().await;
    let t = app.register("Failing jobs").await;
    app.database
        .client()
        .await
        .execute(
            "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
             VALUES ($1, $2, 'welcome_email', $3, $4)",
            &[
                &Uuid::now_v7(),
                &t.company_id,
                &json!({"email": "still not an address", "full_name": "X"}),
                &format!("welcome_email:{}", Uuid::now_v7()),
            ],
        )
        .await
        .unwrap();
    let config = config_with(&app.database.name, &[]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        estate::worker::run(&config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let company = t.company_id.to_string();
    let event = event_where(|e| tag(e, "tenant") == Some(company.as_str())).await;
    assert_eq!(tag(&event, "job"), Some("welcome_email"));
    let _ = stop.send(());
    worker.await.unwrap();
}

/// A panic in a handler answers 500 problem+json with the request's id (not a dropped
/// connection), and reaches Sentry with the request's tags: the same outer layers as the
/// server's routes, around an endpoint that panics.
#[tokio::test]
async fn a_panic_in_a_request_answers_500_and_reaches_sentry_with_the_request() {
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::{EndpointExt, Server, endpoint::make};
    transport();
    let app = estate::api::middleware::outermost(
        make(|_| async {
            if true {
                panic!("a handler broke");
            }
            "unreachable"
        })
        .map_to_response(),
    );
    let request_id = format!("panic-{}", Uuid::new_v4().simple());
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/estates"))
        .header("x-request-id", &request_id)
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-request-id"], request_id.as_str());
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let event = event_where(|e| tag(e, "request_id") == Some(request_id.as_str())).await;
    assert_eq!(tag(&event, "route"), Some("/api/v1/estates"));
    let exception = event.exception.values.first().expect("a panic exception");
    assert_eq!(exception.ty, "panic");
    assert_eq!(exception.value.as_deref(), Some("a handler broke"));
}

/// A billing sync that panics: the worker survives it, counts it as a failed attempt
/// (dead after the last, with the panic's message), and Sentry gets the panic with the
/// job's tenant and name.
#[tokio::test]
async fn a_panic_in_a_job_is_a_failed_attempt_and_reaches_sentry_with_its_tenant() {
    struct Panicking;
    impl estate_jobs::billing::BillingSync for Panicking {
        fn sync(&self, _company: Uuid) -> estate_jobs::billing::SyncFuture<'_> {
            Box::pin(async { panic!("the sync broke") })
        }
    }
    transport();
    let app = spawn_app().await;
    let t = app.register("Panicking jobs").await;
    let config = config_with(&app.database.name, &[]);
    let db = estate::db::Db::connect(&config).unwrap();
    estate_jobs::billing::request(&db.shared().await.unwrap(), t.company_id)
        .await
        .unwrap();
    let mut settings = estate::worker::settings(&config, &db).await.unwrap();
    settings.billing_sync = Some(Arc::new(Panicking));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(estate_jobs::worker::run(settings, async {
        let _ = stopped.await;
    }));
    let company = t.company_id.to_string();
    let event = event_where(|e| {
        tag(e, "tenant") == Some(company.as_str())
            && e.exception.values.first().is_some_and(|x| x.ty == "panic")
    })
    .await;
    assert_eq!(tag(&event, "job"), Some("billing_sync"));
    let dead = crate::jobs::wait_for_dead(&db, Duration::from_secs(30)).await;
    assert_eq!(dead[0].last_error, "panicked: the sync broke");
    let _ = stop.send(());
    worker
        .await
        .unwrap()
        .expect("the worker outlived the panics");
}
