//! Hourly quotas (SPEC §5): headers, refusals, counts shared by two server processes,
//! quota warnings, and what happens when Redis goes away.

use std::sync::{Arc, Mutex};

use reqwest::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{Tenant, TestApp, config_with, problem, serve, spawn_app_with};

const ON: (&str, &str) = ("RATE_LIMITS", "on");

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
        .to_string()
}

fn remaining(resp: &Response) -> u64 {
    header(resp, "x-ratelimit-remaining").parse().unwrap()
}

fn hour_start() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now % 3600
}

/// The Redis key holding a company's count this hour.
fn counter_key(app: &TestApp, company: Uuid) -> String {
    format!(
        "estate:{}:rl:c:{company}:{}",
        app.database.config.tenancy.role_prefix(),
        hour_start()
    )
}

async fn set_count(app: &TestApp, company: Uuid, count: u64) {
    let client = redis::Client::open(app.database.config.redis_url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(counter_key(app, company))
        .arg(count)
        .arg("EX")
        .arg(3700)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn count(app: &TestApp, company: Uuid) -> Option<u64> {
    let client = redis::Client::open(app.database.config.redis_url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(counter_key(app, company))
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn get(app: &TestApp, base: &str, path: &str, t: &Tenant) -> Response {
    app.http
        .get(format!("{base}{path}"))
        .bearer_auth(&t.access_token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_answer_carries_the_quota_and_two_processes_share_one_count() {
    let app = spawn_app_with(&[ON]).await;
    let t = app.register_on("Counted", "starter").await;
    let first = get(&app, &app.address, "/api/v1/estates", &t).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"starter\";q=100;w=3600"
    );
    assert_eq!(header(&first, "x-ratelimit-limit"), "100");
    assert_eq!(remaining(&first), 99);
    let reset: u64 = header(&first, "x-ratelimit-reset").parse().unwrap();
    assert!((1..=3600).contains(&reset));
    assert_eq!(
        header(&first, "ratelimit"),
        format!("\"starter\";r=99;t={reset}")
    );

    // A second server process on the same database and Redis counts on.
    let (other, _) = serve(&app.database.config).await;
    assert_eq!(
        remaining(&get(&app, &other, "/api/v1/estates", &t).await),
        98
    );
    assert_eq!(
        remaining(&get(&app, &app.address, "/api/v1/estates", &t).await),
        97
    );

    // Errors carry the headers too; so do anonymous requests, on their own policy.
    let missing = get(
        &app,
        &app.address,
        &format!("/api/v1/estates/{}", Uuid::nil()),
        &t,
    )
    .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(remaining(&missing), 96);
    let anonymous = app
        .http
        .get(app.url("/api/v1/estates"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        header(&anonymous, "ratelimit-policy"),
        "\"anonymous\";q=50;w=3600"
    );

    // The company's own view of its quota matches the headers.
    let limit_path = format!("/api/v1/companies/{}/check_api_limit", t.company_id);
    let check = get(&app, &app.address, &limit_path, &t).await;
    let left = remaining(&check);
    let body: Value = check.json().await.unwrap();
    assert_eq!(body["limit"], 100);
    assert_eq!(body["used"], 100 - left);
    assert_eq!(body["remaining"], left);
    assert_eq!(body["enforced"], true);
    assert_eq!(body["shared"], true);
    let other_company = app.register_on("Other", "starter").await;
    let foreign = format!(
        "/api/v1/companies/{}/check_api_limit",
        other_company.company_id
    );
    problem(get(&app, &app.address, &foreign, &t).await, 404).await;
}

#[tokio::test]
async fn past_the_quota_requests_are_refused_with_retry_after_and_change_nothing() {
    let app = spawn_app_with(&[ON]).await;
    let t = app.register_on("Busy", "starter").await;
    set_count(&app, t.company_id, 100).await;
    let refused = app
        .post(
            "/api/v1/estates",
            Some(&t.access_token),
            json!({"name": "Too many"}),
        )
        .await;
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    let reset: u64 = header(&refused, "x-ratelimit-reset").parse().unwrap();
    assert_eq!(retry_after, reset);
    assert_eq!(remaining(&refused), 0);
    problem(refused, 429).await;
    assert_eq!(app.estate_count(t.company_id).await, 0);

    // The professional quota is ten times larger: the same count is far from it.
    app.set_tier(t.company_id, "professional").await;
    app.state
        .rate_limiter
        .forget(estate::db::tenancy::CompanyId(t.company_id));
    let ok = app.get("/api/v1/estates", &t.access_token).await;
    assert_eq!(ok.status(), 200);
    // Refused requests count too (hammering does not help): 100 + 1 refused + this one.
    assert_eq!(remaining(&ok), 898);
}

#[tokio::test]
async fn a_burst_is_cut_short_before_the_hour_is_spent() {
    let app = spawn_app_with(&[ON]).await;
    let t = app.register_on("Bursty", "starter").await; // bursts of 10
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let resp = app.get("/api/v1/estates", &t.access_token).await;
        if resp.status() == 429 {
            retry_after = Some(header(&resp, "retry-after").parse::<u64>().unwrap());
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10..], [429, 429]);
    // Refilled at four times the hour's rate: a token every 9 s on starter.
    assert!((1..=9).contains(&retry_after.unwrap()));
    // Burst refusals are not counted against the hour.
    assert_eq!(count(&app, t.company_id).await, Some(10));
}

async fn quota_warnings(app: &TestApp, company: Uuid) -> Vec<Value> {
    app.database
        .client()
        .await
        .query(
            "SELECT payload FROM outbox WHERE job = 'quota_warning' AND company_id = $1
             ORDER BY created_at",
            &[&company],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn crossing_80_and_100_percent_queues_one_warning_each_per_hour() {
    let app = spawn_app_with(&[ON]).await;
    let t = app.register_on("Watched", "starter").await;
    let token = t.access_token.as_str();
    set_count(&app, t.company_id, 78).await;
    app.get("/api/v1/estates", token).await; // 79
    assert!(quota_warnings(&app, t.company_id).await.is_empty());
    app.get("/api/v1/estates", token).await; // 80
    let warnings = quota_warnings(&app, t.company_id).await;
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["threshold_percent"], 80);
    assert_eq!(warnings[0]["limit"], 100);
    assert_eq!(warnings[0]["window_start"], hour_start());

    set_count(&app, t.company_id, 99).await;
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 200); // 100
    assert_eq!(app.get("/api/v1/estates", token).await.status(), 429); // 101
    // Crossing 80% again in the same hour (say, counted by another process) adds nothing.
    set_count(&app, t.company_id, 79).await;
    app.get("/api/v1/estates", token).await;
    let thresholds: Vec<Value> = quota_warnings(&app, t.company_id)
        .await
        .iter()
        .map(|w| w["threshold_percent"].clone())
        .collect();
    assert_eq!(thresholds, [json!(80), json!(100)]);
}

/// A TCP proxy to the real Redis that the test can cut, as if Redis had stopped.
struct RedisProxy {
    url: String,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl RedisProxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let target = target
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let spawned = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                spawned.lock().unwrap().push(pipe.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        RedisProxy { url, tasks }
    }

    /// Closes the listener and every connection through it.
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn with_redis_gone_the_api_keeps_answering_and_counts_per_process() {
    let base = spawn_app_with(&[ON]).await;
    let proxy = RedisProxy::start(base.database.config.redis_url.expose()).await;
    let config = config_with(&base.database.name, &[ON, ("REDIS_URL", &proxy.url)]);
    let (address, state) = serve(&config).await;
    let t = base.register_on("Resilient", "starter").await;

    let shared = get(&base, &address, "/api/v1/estates", &t).await;
    assert_eq!(shared.status(), 200);
    assert_eq!(remaining(&shared), 99);
    let ready: Value = base
        .http
        .get(format!("{address}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["rate_limits"], "shared");

    proxy.stop();
    for expected in [99, 98] {
        // The process counts on its own from zero: nothing is refused for want of Redis.
        let resp = get(&base, &address, "/api/v1/estates", &t).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(remaining(&resp), expected);
    }
    let write = base
        .http
        .post(format!("{address}/api/v1/clients"))
        .bearer_auth(&t.access_token)
        .json(&json!({"full_name": "Written without Redis"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201);
    let ready = base
        .http
        .get(format!("{address}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["rate_limits"], "per_process");
    assert!(!state.rate_limiter.shared());
    let check: Value = get(
        &base,
        &address,
        &format!("/api/v1/companies/{}/check_api_limit", t.company_id),
        &t,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(check["shared"], false);
}
