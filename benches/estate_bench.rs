//! Benchmarks of the tenancy core, printed as figures (run with `scripts/bench`):
//!
//! 1. provisioning: ms per tenant (company row + role + schema + tenant tables + registry,
//!    in one transaction; no password hash), mean and p95 over 200 tenants;
//! 2. `GET /api/v1/estates` spread over 100 tenants with 20 estates each: requests/s, p50,
//!    p99, with load from a separate process (wrk).
//!
//! 3. the same list with the hourly rate limits on (a Redis count per request) and off,
//!    alternately, on two servers over the same tenants (on the enterprise tier, whose
//!    quota the run stays within), to show what the limit check costs per request;
//! 4. `GET /api/v1/properties` with filters over 10 tenants of 10,000 plots.
//!
//! It makes its own database and drops it (and its roles) at the end.

use std::time::Instant;

use estate::api::ApiState;
use estate::auth::jwt::JwtKeys;
use estate::config::{Config, Secret};
use estate::db::Db;
use estate::db::migrations::{TenantMigrations, migrate_shared};
use estate::db::tenancy::CompanyId;
use estate::rate_limit::Subject;
use estate::startup::Application;
use uuid::Uuid;

mod support;
use support::{SECRET, env_or, mean, percentile, provision, run_wrk, seed, settle};

/// mimalloc: the request path allocates many small objects (JSON, rows); the system
/// allocator spent ~13% of the machine's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANTS_PROVISIONED: usize = 200;
const TENANTS_SERVED: usize = 100;
const ESTATES_PER_TENANT: usize = 20;
const PROPERTY_TENANTS: usize = 10;
const PROPERTIES_PER_TENANT: usize = 10_000;

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing to filter here.
    support::with_database(&[], |config| async move { run(&config).await }).await;
}

async fn run(config: &Config) {
    let duration = env_or("BENCH_DURATION", "15s");
    migrate_shared(config.database_url.expose(), config.tenancy.group_role())
        .await
        .unwrap();
    let db = Db::connect(config).unwrap();

    // 1. Provisioning.
    let mut companies = Vec::new();
    let mut times = Vec::new();
    for i in 0..TENANTS_PROVISIONED {
        let started = Instant::now();
        let company = provision(&db, &TenantMigrations::embedded(), i).await;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        companies.push(company);
    }
    let mean = mean(&times);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "provisioning: {TENANTS_PROVISIONED} tenants, mean {mean:.1} ms, p50 {:.1} ms, p95 {:.1} ms per tenant (role + schema + tables + registry, one transaction)",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.95)
    );

    // 2. Seed 100 tenants with an owner and 20 estates each, and mint their tokens.
    let keys = JwtKeys::new(&Secret::new(SECRET)).unwrap();
    let served = seed(
        &db,
        &keys,
        &companies[..TENANTS_SERVED],
        ESTATES_PER_TENANT as i32,
    )
    .await;
    let tokens: Vec<String> = served.into_iter().map(|s| s.token).collect();
    settle(&db).await;

    let url = serve(config).await;
    let estates: Vec<(String, String)> = tokens
        .iter()
        .map(|t| (t.clone(), "/api/v1/estates".to_string()))
        .collect();
    let label =
        format!("GET /api/v1/estates over {TENANTS_SERVED} tenants x {ESTATES_PER_TENANT} estates");
    run_wrk(&url, &label, &estates, &duration).await;

    // 3. The rate limits' cost: a second server with them on, over the same tenants.
    let served: Vec<Uuid> = companies.iter().take(TENANTS_SERVED).map(|c| c.0).collect();
    db.shared()
        .await
        .unwrap()
        .execute(
            "UPDATE companies SET tier = 'enterprise' WHERE id = ANY($1)",
            &[&served],
        )
        .await
        .unwrap();
    let mut limited = config.clone();
    limited.rate_limits = true;
    let (limited_url, limited_state) = serve_with_state(&limited).await;
    let pair = env_or("BENCH_LIMITS_DURATION", "8s");
    for round in 1..=3 {
        for (url, state) in [(&url, "off"), (&limited_url, "on")] {
            let label = format!("{label}, rate limits {state} (round {round})");
            run_wrk(url, &label, &estates, &pair).await;
        }
    }
    // The check alone, without HTTP: one caller at a time, then 64 at once.
    let limiter = &limited_state.rate_limiter;
    let subjects: Vec<Subject> = companies
        .iter()
        .take(TENANTS_SERVED)
        .map(|c| Subject::Company(*c))
        .collect();
    let rounds = 20_000;
    let started = Instant::now();
    for i in 0..rounds {
        limiter.check(subjects[i % subjects.len()]).await.unwrap();
    }
    let sequential = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let started = Instant::now();
    let workers = (0..64).map(|w| {
        let state = limited_state.clone();
        let subjects = subjects.clone();
        tokio::spawn(async move {
            for i in 0..rounds / 64 {
                state
                    .rate_limiter
                    .check(subjects[(w * 7 + i) % subjects.len()])
                    .await
                    .unwrap();
            }
        })
    });
    futures::future::join_all(workers).await;
    let concurrent = (rounds / 64 * 64) as f64 / started.elapsed().as_secs_f64();
    println!(
        "rate-limit check alone (Redis INCR+EXPIRE, burst bucket, cached tier): {sequential:.0} µs per check one at a time, {concurrent:.0} checks/s with 64 at once"
    );

    // 4. Properties: tenants holding 10,000 plots each, the common filtered listing.
    let conn = db.shared().await.unwrap();
    let mut requests = Vec::new();
    for (company, token) in companies.iter().zip(&tokens).take(PROPERTY_TENANTS) {
        let schema = db.naming().tenant(*company).schema.quoted();
        let user: Uuid = conn
            .query_one("SELECT id FROM users WHERE company_id = $1", &[&company.0])
            .await
            .unwrap()
            .get(0);
        let estate: Uuid = conn
            .query_one(
                &format!("SELECT id FROM {schema}.estates ORDER BY name LIMIT 1"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        // Spread over the tenant's estates; a quarter of each status.
        conn.execute(
            &format!(
                "INSERT INTO {schema}.properties (id, estate_id, plot_number, size_sqm, price, status, created_by)
                 SELECT gen_random_uuid(), e.ids[1 + n % array_length(e.ids, 1)], 'P-' || n, 300 + n % 200,
                        1000000 + (n * 7919) % 9000000,
                        (ARRAY['available', 'reserved', 'allocated', 'sold'])[1 + n % 4], $1
                 FROM generate_series(1, $2::int) AS n,
                      (SELECT array_agg(id ORDER BY name) AS ids FROM {schema}.estates) AS e"
            ),
            &[&user, &(PROPERTIES_PER_TENANT as i32)],
        )
        .await
        .unwrap();
        let path =
            format!("/api/v1/properties?estate_id={estate}&status=available&ordering=-price");
        requests.push((token.clone(), path));
    }
    drop(conn);
    settle(&db).await;
    let label = format!(
        "GET /api/v1/properties?estate_id=…&status=available&ordering=-price over {PROPERTY_TENANTS} tenants x {PROPERTIES_PER_TENANT} properties"
    );
    run_wrk(&url, &label, &requests, &duration).await;

    // 5. Jobs: outbox-to-delivery latency, and e-mails per second into the local SMTP
    //    server with two workers.
    jobs(config, &db, companies[0]).await;
}

/// Two workers (in this process, each with its own pool and Redis connection) on the
/// benchmark's database, sending to `TEST_SMTP_URL` (aiosmtpd, started by scripts/bench).
async fn jobs(config: &Config, db: &Db, company: CompanyId) {
    let Ok(smtp) = std::env::var("TEST_SMTP_URL") else {
        println!("jobs: TEST_SMTP_URL is not set (run through scripts/bench)");
        return;
    };
    let mut config = config.clone();
    config.smtp_url = Some(Secret::new(smtp));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let config = config.clone();
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            estate::worker::run(&config, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
        }));
    }
    let conn = db.shared().await.unwrap();
    let enqueue = |run: &'static str, first: i32, n: i32| {
        let conn = &conn;
        async move {
            conn.execute(
                "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
                 SELECT gen_random_uuid(), $1, 'welcome_email',
                        jsonb_build_object('email', 'bench-' || $2 || '-' || g || '@mail.example',
                                           'full_name', 'Bench ' || g),
                        'bench:' || $2 || ':' || g
                 FROM generate_series($3::int, $3::int + $4::int - 1) AS g",
                &[&company.0, &run, &first, &n],
            )
            .await
            .unwrap();
        }
    };
    let wait_done = |run: &'static str, n: i64| {
        let conn = &conn;
        async move {
            loop {
                let done: i64 = conn
                    .query_one(
                        "SELECT count(*) FROM job_effects WHERE starts_with(idempotency_key, $1)",
                        &[&format!("bench:{run}:")],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if done >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // Latency at a steady trickle: one job every 20 ms for 10 s.
    let trickle = 500;
    for i in 0..trickle {
        enqueue("trickle", i as i32, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    wait_done("trickle", trickle).await;
    let rows = conn
        .query(
            "SELECT extract(epoch FROM e.done_at - o.created_at)::float8 * 1000
             FROM outbox o JOIN job_effects e ON e.idempotency_key = o.idempotency_key
             WHERE starts_with(o.idempotency_key, 'bench:trickle:')",
            &[],
        )
        .await
        .unwrap();
    let mut latencies: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "jobs: outbox-to-delivery latency over {} e-mails at 50/s, two workers: p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    // Throughput: a burst of e-mails at once.
    let burst = 2000;
    let started = Instant::now();
    enqueue("burst", 0, burst as i32).await;
    wait_done("burst", burst).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "jobs: {burst} e-mails into the local SMTP server with two workers (concurrency {} each): {:.0} e-mails/s",
        config.worker_concurrency,
        burst as f64 / secs
    );
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }
}

/// Starts a server on `config`; answers its base URL.
async fn serve(config: &Config) -> String {
    serve_with_state(config).await.0
}

async fn serve_with_state(config: &Config) -> (String, std::sync::Arc<ApiState>) {
    let app = Application::build(config).await.unwrap();
    let addr = app.local_addr();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    (format!("http://{addr}"), state)
}
