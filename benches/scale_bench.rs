//! The scale suite (issue 6, SPEC §8), run with `scripts/bench-scale` and documented in
//! BENCHMARKS.md: on a database of its own it provisions 1,000 and then 10,000 tenants and
//! prints a table of
//!
//! a. provisioning: ms per tenant as the 1,000th is reached (role, schema, tables, history,
//!    registry; no password hash), built from nothing and claimed from a spare built ahead,
//!    the time to build a spare, and registration end to end over HTTP;
//! b. migration fan-out: one new tenant migration (a column and an index) over 1,000 and
//!    over 10,000 schemas, and the run with nothing to do;
//! c. API throughput of the authenticated estates list spread evenly over 10, 1,000 and
//!    10,000 tenants, from wrk in its own process against `estate serve` in its own,
//!    measured once every tenant has been asked five times (the first seconds of load,
//!    while PostgreSQL's backends meet the tenants, are reported apart), and at a fixed
//!    rate;
//! d. the physical limit beside it: the same SQL over a pool of the same size, with no HTTP,
//!    auth or tenancy, and the ratio of the two;
//! e. the server's resident memory and PostgreSQL's backend memory at 10,000 tenants.
//!
//! `BENCH_TENANTS` (10000) and `BENCH_FIRST_TENANTS` (1000) scale it down for a quick look.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use estate::auth::jwt::JwtKeys;
use estate::config::{Config, Secret};
use estate::db::migrations::{TenantMigrations, latest_tenant_version, migrate_shared};
use estate::db::tenancy::{CompanyId, SchemaName};
use estate::db::{Db, Layout, spares};
use estate::tenants::migrate_all;
use futures::StreamExt;
use uuid::Uuid;

mod support;
use support::{
    CpuTimes, FIRST_PASS_SECS, FIXED_WARMUP_SECS, LaneUse, Load, SECRET, Served,
    WARM_REQUESTS_EACH, blocks_read, env_or, fixed_rate, fresh_tokens, host_context, lane_use,
    mean, open_loop, percentile, provision, run_wrk, run_wrk_from_cold, scalar, seed, settle,
    shared_buffers, with_database,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ESTATES_PER_TENANT: i32 = 20;
/// The server's `application_name`, to tell its backends from the benchmark's own.
const SERVER_APP: &str = "estate-bench-server";
const REGISTRATIONS: usize = 30;
/// Spares built, then claimed, past the first thousand tenants.
const SPARE_CLAIMS: usize = 100;
/// Tenants provisioned at once past the first thousand (not timed: only filling).
const FILL_CONCURRENCY: usize = 4;
const MIGRATION_CONCURRENCY: usize = 8;
/// The offered load of the fixed-rate latency runs: about a third of what the server
/// answers at 10,000 tenants, so that it measures latency rather than saturation.
const FIXED_RATE: u32 = 1000;
/// The list query of `GET /api/v1/estates` with its defaults (`-created_at`, 20 a page).
const LIST_SQL: &str = "SELECT id, name, location, description, status, created_by, created_at, \
     updated_at, count(*) OVER () FROM {schema}.estates WHERE true \
     ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 0";

#[tokio::main]
async fn main() {
    with_database(&[], |config| async move { run(config).await }).await;
}

/// The table's lines, printed again together at the end.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn add(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (what, figure) = (what.into(), figure.into());
        println!("{what}: {figure}");
        self.0.push((what, figure));
    }

    fn print(&self) {
        let width = self
            .0
            .iter()
            .map(|(w, _)| w.chars().count())
            .max()
            .unwrap_or(0);
        println!("\n| {:<width$} | figure |", "measure");
        println!("|{}|--------|", "-".repeat(width + 2));
        for (what, figure) in &self.0 {
            println!("| {what:<width$} | {figure} |");
        }
    }
}

async fn run(config: Config) {
    let total: usize = env_or("BENCH_TENANTS", "10000").parse().unwrap();
    let first: usize = env_or("BENCH_FIRST_TENANTS", "1000").parse().unwrap();
    let duration = env_or("BENCH_DURATION", "15s");
    let mut table = Table::default();
    let host = CpuTimes::now();
    migrate_shared(config.database_url.expose(), config.tenancy.group_role())
        .await
        .unwrap();
    // One pool of the server's size for provisioning and for the physical limit; and the
    // server's own layout (tenant lanes, verdict statements prepared on each connection)
    // for its database work alone.
    let db = Db::connect(&config).unwrap();
    let server_db = Db::connect_with(
        &config,
        estate::auth::verdict::connection_setup(),
        Layout::TenantLanes,
    )
    .unwrap();
    let keys = JwtKeys::new(&Secret::new(SECRET)).unwrap();

    // a. Provisioning, one tenant at a time as registrations come, up to the thousandth.
    let embedded = TenantMigrations::embedded();
    let mut tenants = Vec::with_capacity(total);
    let mut times = Vec::with_capacity(first);
    for i in 0..first {
        let started = Instant::now();
        tenants.push(provision(&db, &embedded, i).await);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let last_hundred = &times[first.saturating_sub(100)..];
    let mut sorted = last_hundred.to_vec();
    sorted.sort_by(f64::total_cmp);
    table.add(
        format!(
            "a. provisioning, tenants {}–{first}: mean / p95 per tenant",
            first.saturating_sub(100) + 1
        ),
        format!(
            "{:.1} ms / {:.1} ms",
            mean(last_hundred),
            percentile(&sorted, 0.95)
        ),
    );
    table.add(
        format!("a. provisioning, all {first}: mean per tenant"),
        format!("{:.1} ms", mean(&times)),
    );

    // What registration does when a spare is ready (the server keeps some): claim it.
    let mut builds = Vec::with_capacity(SPARE_CLAIMS);
    for _ in 0..SPARE_CLAIMS {
        let started = Instant::now();
        assert!(
            spares::top_up_one(&db, &embedded, SPARE_CLAIMS)
                .await
                .unwrap()
        );
        builds.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut claims = Vec::with_capacity(SPARE_CLAIMS);
    for i in first..first + SPARE_CLAIMS {
        let started = Instant::now();
        tenants.push(provision(&db, &embedded, i).await);
        claims.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let left: i64 = scalar(&db, "SELECT count(*) FROM tenant_spares").await;
    assert_eq!(left, 0, "every provisioning claimed a spare");
    claims.sort_by(f64::total_cmp);
    table.add(
        format!(
            "a. provisioning from a ready spare (rename + registry), tenants {}–{}: mean / p95",
            first + 1,
            first + SPARE_CLAIMS
        ),
        format!(
            "{:.1} ms / {:.1} ms",
            mean(&claims),
            percentile(&claims, 0.95)
        ),
    );
    table.add(
        "a. building one spare ahead of registration (in the background): mean",
        format!("{:.1} ms", mean(&builds)),
    );

    let server = Server::start(&config).await;
    server.spares_ready(&db, REGISTRATIONS).await;
    let registrations = register(&server.url, REGISTRATIONS).await;
    let mut sorted = registrations.clone();
    sorted.sort_by(f64::total_cmp);
    table.add(
        format!("a. registration end to end (HTTP, argon2 hash, a ready spare), {REGISTRATIONS} at ~{} tenants: mean / p95", first + SPARE_CLAIMS),
        format!("{:.1} ms / {:.1} ms", mean(&registrations), percentile(&sorted, 0.95)),
    );

    // b. One new migration over the first thousand, then nothing to do.
    let next = latest_tenant_version() + 1;
    let with_column = embedded
        .and_then(
            &format!("V{next}__bench_estate_note"),
            "ALTER TABLE estates ADD COLUMN bench_note text;
             CREATE INDEX estates_bench_note ON estates (bench_note);",
        )
        .unwrap();
    fan_out(&db, &with_column, &mut table, tenants.len() + REGISTRATIONS).await;

    // c, d at 10 and at 1,000 tenants.
    let mut served = seed(&db, &keys, &tenants, ESTATES_PER_TENANT).await;
    settle(&db).await;
    let mut loads = Vec::new();
    for n in [10, first] {
        loads.push(
            throughput(
                &db,
                &server_db,
                &server,
                &served[..n.min(served.len())],
                &duration,
                &mut table,
            )
            .await,
        );
    }

    // Fill up to `total` (already at the new version), then one more migration over all.
    let filling = Instant::now();
    let more = fill(&db, &with_column, tenants.len(), total).await;
    let filled = more.len();
    tenants.extend(more);
    println!(
        "filled {filled} more tenants in {:.0} s ({FILL_CONCURRENCY} at once)",
        filling.elapsed().as_secs_f64()
    );
    served.extend(seed(&db, &keys, &tenants[served.len()..], ESTATES_PER_TENANT).await);
    let with_index = with_column
        .and_then(
            &format!("V{}__bench_estate_note_again", next + 1),
            "ALTER TABLE estates ADD COLUMN bench_note_2 text;
             CREATE INDEX estates_bench_note_2 ON estates (bench_note_2);",
        )
        .unwrap();
    fan_out(&db, &with_index, &mut table, tenants.len() + REGISTRATIONS).await;
    settle(&db).await;

    // c, d at 10,000, and e.
    fresh_tokens(&keys, &mut served);
    loads.push(throughput(&db, &server_db, &server, &served, &duration, &mut table).await);
    let (small, large) = (&loads[0], &loads[loads.len() - 1]);
    table.add(
        format!(
            "c. p99 at {} tenants ÷ p99 at 10 tenants: saturated (wrk) / at a fixed {FIXED_RATE}/s / first {FIRST_PASS_SECS} s",
            served.len()
        ),
        format!(
            "{:.2} / {:.2} / {:.2}",
            large.saturated.p99_ms / small.saturated.p99_ms,
            large.fixed_rate.p99_ms / small.fixed_rate.p99_ms,
            large.first_pass.p99_ms / small.first_pass.p99_ms
        ),
    );
    alternated_p99(&server, &large.work, &served, &mut table).await;
    table.add(
        format!(
            "e. server resident memory after serving {} tenants",
            served.len()
        ),
        server.rss(),
    );
    table.add(
        "e. PostgreSQL backends of the server: private memory, sum / largest",
        backend_memory(&db, Some(SERVER_APP)).await,
    );
    table.add(
        "e. all backends of the database (with the benchmark's own, which serve every tenant)",
        backend_memory(&db, None).await,
    );
    // After the memory rows, which it would empty.
    fresh_backends_p99(&db, &server, &served, &mut table).await;
    drop(server);
    table.add(
        "the host during the whole run",
        format!(
            "{}; PostgreSQL shared_buffers {}",
            host_context(&host),
            shared_buffers(&db).await
        ),
    );
    table.print();
}

async fn fill(db: &Db, migrations: &TenantMigrations, from: usize, to: usize) -> Vec<CompanyId> {
    futures::stream::iter(from..to)
        .map(|i| provision(db, migrations, i))
        .buffer_unordered(FILL_CONCURRENCY)
        .collect()
        .await
}

/// Times a run that applies `migrations`' last one to every tenant, then a run with nothing
/// to do.
async fn fan_out(db: &Db, migrations: &TenantMigrations, table: &mut Table, expected: usize) {
    let started = Instant::now();
    let run = migrate_all(db, migrations, MIGRATION_CONCURRENCY, false)
        .await
        .unwrap();
    let applied = started.elapsed().as_secs_f64();
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(run.migrated, expected);
    table.add(
        format!(
            "b. one new migration (column + index) over {} tenants, {MIGRATION_CONCURRENCY} at once",
            run.migrated
        ),
        format!("{applied:.2} s"),
    );
    let started = Instant::now();
    let noop = migrate_all(db, migrations, MIGRATION_CONCURRENCY, false)
        .await
        .unwrap();
    assert_eq!(noop.migrated, 0);
    table.add(
        format!("b. migrate with nothing to do over {} tenants", noop.total),
        format!("{:.3} s", started.elapsed().as_secs_f64()),
    );
}

/// What a throughput run measured of the API, for the p99 ratios.
struct Loads {
    /// wrk's measured run, once every tenant has been asked a few times.
    saturated: Load,
    /// The fixed-rate run after it.
    fixed_rate: Load,
    /// wrk's first seconds, while the backends meet the tenants.
    first_pass: Load,
    /// The database work alone over the same tenants, with the verdicts it remembered.
    work: DatabaseWork,
}

/// c and d over `served`: wrk against the server, then the same SQL straight over a pool.
async fn throughput(
    db: &Db,
    server_db: &Db,
    server: &Server,
    served: &[Served],
    duration: &str,
    table: &mut Table,
) -> Loads {
    let n = served.len();
    let requests = list_requests(served);
    let label = format!("GET /api/v1/estates over {n} tenants");
    // `BENCH_WARMUP` (e.g. 60s): a longer warm pass first, so that every backend has met
    // its tenants before the measured run (catalog caches; see BENCHMARKS.md).
    if let Ok(warm) = std::env::var("BENCH_WARMUP") {
        run_wrk(&server.url, "warm-up", &requests, &warm).await;
    }
    let before = (Instant::now(), cpu_by_program(server.child.id()));
    let (first, api) = run_wrk_from_cold(&server.url, &label, &requests, duration).await;
    let used = cpu_by_program(server.child.id());
    let wall = before.0.elapsed().as_secs_f64();
    let read_before = blocks_read(db).await;
    let lanes_before = lane_use(&server.url).await;
    let steady = fixed_rate(
        &server.url,
        &label,
        &requests,
        FIXED_RATE,
        parse_duration(duration),
    )
    .await;
    // Over the warm-up and the timed run alike (the generator's two runs at one rate);
    // backends report their counts about once a second, so this is close, not exact.
    let reads_per_request = (blocks_read(db).await - read_before) as f64
        / (f64::from(FIXED_RATE) * (parse_duration(duration).as_secs_f64() + FIXED_WARMUP_SECS));
    let lanes = lane_use(&server.url).await.since(lanes_before);
    let share = |name: &str| {
        (used.get(name).copied().unwrap_or(0.0) - before.1.get(name).copied().unwrap_or(0.0)) / wall
    };
    table.add(
        format!("c. cores busy during the API load over {n} tenants"),
        format!(
            "server {:.2}, PostgreSQL {:.2}, wrk and the rest {:.2}",
            share("server"),
            share("postgres"),
            share("busy") - share("server") - share("postgres")
        ),
    );
    table.add(
        format!("c. API over {n} tenants, first {FIRST_PASS_SECS} s of load: requests/s, p50, p99"),
        first.to_string(),
    );
    table.add(
        format!(
            "c. API over {n} tenants, each asked {WARM_REQUESTS_EACH} times first: requests/s, p50, p99"
        ),
        api.to_string(),
    );
    table.add(
        format!(
            "c. API at a fixed {FIXED_RATE} requests/s over {n} tenants: p50, p99; reads; away, waited"
        ),
        format!(
            "{:.2} ms, {:.2} ms; {reads_per_request:.2} blocks read into shared buffers per request; {:.1}% away from their home lane, {:.1}% waited for a busy lane",
            steady.p50_ms,
            steady.p99_ms,
            lanes.away_percent(),
            lanes.waited_percent()
        ),
    );
    let schemas: Vec<SchemaName> = served
        .iter()
        .map(|s| db.naming().tenant(s.company).schema)
        .collect();
    let limit = physical_limit(db, &schemas, parse_duration(duration)).await;
    table.add(
        format!("d. same SQL, same pool size, no HTTP/auth/tenancy, over {n} tenants"),
        limit.to_string(),
    );
    // The HTTP exchange alone on the same server and connections: no token, no database.
    let health = [(String::new(), "/health".to_string())];
    let http = run_wrk(&server.url, "GET /health", &health, duration).await;
    table.add(
        "d. the HTTP stack alone (GET /health, same server and connections)",
        http.to_string(),
    );
    let in_series = 1.0 / (1.0 / limit.requests_per_sec + 1.0 / http.requests_per_sec);
    table.add(
        format!(
            "d. API ÷ (the limit and the HTTP stack in series: {in_series:.0}/s) at {n} tenants"
        ),
        format!("{:.0}%", 100.0 * api.requests_per_sec / in_series),
    );
    let work = DatabaseWork::new(server_db, served);
    let tenancy = database_work(&work, parse_duration(duration)).await;
    table.add(
        format!(
            "d. the API's database work alone (guarded tenant transaction, list), over {n} tenants"
        ),
        tenancy.to_string(),
    );
    let tenancy_steady = database_work_fixed_rate(
        &work,
        &format!("database work over {n} tenants"),
        n,
        parse_duration(duration),
    )
    .await;
    table.add(
        format!("d. the same database work at a fixed {FIXED_RATE}/s over {n} tenants: p50, p99"),
        format!(
            "{:.2} ms, {:.2} ms",
            tenancy_steady.p50_ms, tenancy_steady.p99_ms
        ),
    );
    table.add(
        format!("d. API ÷ limit at {n} tenants"),
        format!(
            "{:.0}%",
            100.0 * api.requests_per_sec / limit.requests_per_sec
        ),
    );
    Loads {
        saturated: api,
        fixed_rate: steady,
        first_pass: first,
        work,
    }
}

/// The estates list as each of `served` asks for it: (bearer token, path) pairs.
fn list_requests(served: &[Served]) -> Vec<(String, String)> {
    served
        .iter()
        .map(|s| (s.token.clone(), "/api/v1/estates".to_string()))
        .collect()
}

/// Rounds of the fixed-rate run over 10 tenants and over all of them, one after the other.
const ALTERNATIONS: usize = 3;
const ALTERNATION_SECS: u64 = 5;

/// The fixed-rate p99 over 10 tenants and over all of them, measured alternately within
/// a minute, through the API and for its database work alone (`work`). The ratio line
/// above compares runs taken a quarter of an hour apart, and on this VM one p99 moves 2–5×
/// between hours (BENCHMARKS.md): alternating puts both sides under the same host. The 10
/// tenants are then served by backends that also hold every other tenant's catalog
/// entries; only the tenants asked differ. The database work alone tells whether what
/// grows with the tenants is in PostgreSQL and the tenant transaction or in the HTTP
/// server.
async fn alternated_p99(
    server: &Server,
    work: &DatabaseWork,
    served: &[Served],
    table: &mut Table,
) {
    let (few, all) = (
        list_requests(&served[..10.min(served.len())]),
        list_requests(served),
    );
    let span = Duration::from_secs(ALTERNATION_SECS);
    // p99s, and tenant transactions over all rounds; then the database work's p99s.
    let (mut small, mut large) = (
        (Vec::new(), LaneUse::default()),
        (Vec::new(), LaneUse::default()),
    );
    let (mut small_work, mut large_work) = (Vec::new(), Vec::new());
    for round in 1..=ALTERNATIONS {
        for (side, requests) in [(&mut small, &few), (&mut large, &all)] {
            let before = lane_use(&server.url).await;
            let load = fixed_rate(
                &server.url,
                &format!(
                    "round {round} of {ALTERNATIONS}, {} tenants",
                    requests.len()
                ),
                requests,
                FIXED_RATE,
                span,
            )
            .await;
            side.0.push(load.p99_ms);
            side.1 += lane_use(&server.url).await.since(before);
        }
        for (side, tenants) in [(&mut small_work, few.len()), (&mut large_work, all.len())] {
            let label =
                format!("round {round} of {ALTERNATIONS}, database work over {tenants} tenants");
            side.push(
                database_work_fixed_rate(work, &label, tenants, span)
                    .await
                    .p99_ms,
            );
        }
    }
    let (p99_small, p99_large) = (median(&mut small.0), median(&mut large.0));
    table.add(
        format!(
            "c. p99 at a fixed {FIXED_RATE}/s, 10 and {} tenants alternated {ALTERNATIONS}× ({ALTERNATION_SECS} s each): medians, ratio; away; waited",
            all.len()
        ),
        format!(
            "{p99_small:.2} ms / {p99_large:.2} ms, {:.2}; {:.1}% / {:.1}% away from their home lane; {:.1}% / {:.1}% waited for a busy lane",
            p99_large / p99_small,
            small.1.away_percent(),
            large.1.away_percent(),
            small.1.waited_percent(),
            large.1.waited_percent()
        ),
    );
    let (work_small, work_large) = (median(&mut small_work), median(&mut large_work));
    table.add(
        "d. the same alternation for the database work alone: medians, ratio",
        format!(
            "{work_small:.2} ms / {work_large:.2} ms, {:.2}",
            work_large / work_small
        ),
    );
}

/// The fixed-rate p99 over 10 tenants once more, after the server's tenant connections
/// were closed and opened again: backends that have met only those 10 tenants, in the
/// same minute as the alternation. Against the alternation's 10-tenant median, it tells
/// whether the p99 late in the run follows what the backends hold (every tenant's catalog
/// entries and plans) or the cluster and the host at that hour.
async fn fresh_backends_p99(db: &Db, server: &Server, served: &[Served], table: &mut Table) {
    // The lanes' connections, idle after the list's read-only COMMIT, are the ones whose
    // last statement was `COMMIT`; the server's LISTEN connection (verdict changes) is
    // left alone, so remembered verdicts stay in force.
    let lanes = format!(
        "FROM pg_stat_activity WHERE application_name = '{SERVER_APP}' AND query = 'COMMIT'"
    );
    let closed: i64 = scalar(
        db,
        &format!("SELECT count(pg_terminate_backend(pid)) {lanes} AND state = 'idle'"),
    )
    .await;
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while scalar::<i64>(db, &format!("SELECT count(*) {lanes}")).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gone.expect("the closed backends exit");
    let few = list_requests(&served[..10.min(served.len())]);
    let mut p99s = Vec::new();
    for round in 1..=ALTERNATIONS {
        let label = format!("fresh backends, round {round} of {ALTERNATIONS}, 10 tenants");
        let span = Duration::from_secs(ALTERNATION_SECS);
        p99s.push(
            fixed_rate(&server.url, &label, &few, FIXED_RATE, span)
                .await
                .p99_ms,
        );
    }
    table.add(
        format!(
            "c. p99 at a fixed {FIXED_RATE}/s over 10 tenants after {closed} tenant connections were opened anew, {ALTERNATIONS}× {ALTERNATION_SECS} s: median"
        ),
        format!("{:.2} ms", median(&mut p99s)),
    );
}

/// The middle value of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn parse_duration(text: &str) -> Duration {
    let secs = text.trim_end_matches('s').parse::<u64>().unwrap_or(15);
    Duration::from_secs(secs)
}

/// What a request to the list does in the database, through the same code, without HTTP:
/// the tenant transaction with the session verdict (or the server's memory of it, kept as
/// long as the server keeps it while it hears changes), search path and role, the list
/// query, the read-only commit. Between the API and the physical limit, it shows where
/// the difference goes.
#[derive(Clone)]
struct DatabaseWork {
    db: Db,
    principals: Arc<Vec<estate::auth::Principal>>,
    cache: Arc<estate::auth::verdict::VerdictCache>,
}

impl DatabaseWork {
    fn new(db: &Db, served: &[Served]) -> Self {
        use estate::auth::{Principal, Role, verdict};
        let principals = served
            .iter()
            .map(|s| Principal {
                user_id: s.user,
                company: s.company,
                role: Role::Owner,
                jti: Uuid::new_v4(),
                session: None,
                token_expires_at: i64::MAX,
                origin: Default::default(),
                machine: None,
            })
            .collect();
        DatabaseWork {
            db: db.clone(),
            principals: Arc::new(principals),
            cache: Arc::new(verdict::VerdictCache::new(verdict::HEARD_LIFETIME)),
        }
    }

    /// The `i`th request, round robin over the tenants.
    fn request(&self, i: usize) -> impl Future<Output = ()> + Send + use<> {
        use estate::auth::{permissions::Operation, verdict};
        use estate::domain::estates::{DEFAULT_ORDERING, EstateFilter, list};
        use estate::domain::listing::{DEFAULT_PAGE_SIZE, PageRequest};
        let work = self.clone();
        async move {
            let p = &work.principals[i % work.principals.len()];
            let rule = Operation::EstatesList.rule();
            let mut tx = verdict::tenant_tx(&work.db, &work.cache, p, rule)
                .await
                .unwrap();
            let filter = EstateFilter {
                search: None,
                status: None,
                created_after: None,
                created_before: None,
                ids: None,
                ordering: DEFAULT_ORDERING,
                page: PageRequest {
                    page: 1,
                    page_size: DEFAULT_PAGE_SIZE,
                },
            };
            list(&mut tx, &filter).await.unwrap();
            tx.commit_read_only().unwrap();
        }
    }
}

async fn database_work(work: &DatabaseWork, duration: Duration) -> Load {
    let work = work.clone();
    drive(duration, move |i| work.request(i)).await
}

/// The same at a fixed rate, from this process, as the API's fixed-rate run.
async fn database_work_fixed_rate(
    work: &DatabaseWork,
    label: &str,
    tenants: usize,
    duration: Duration,
) -> Load {
    open_loop(label, FIXED_RATE, duration, |i| {
        let request = work.request(i % tenants);
        async move {
            request.await;
            true
        }
    })
    .await
}

/// Runs `one(i)` from as many tasks as wrk has connections, for `duration` after a
/// 3-second warm-up; answers the rate and latencies.
async fn drive<F, Fut>(duration: Duration, one: F) -> Load
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let connections: usize = env_or("BENCH_CONNECTIONS", "64").parse().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let round = |until: Instant| {
        let tasks = (0..connections).map(|_| {
            let (one, next) = (one.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    one(i).await;
                    latencies.push(started.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        });
        futures::future::join_all(tasks)
    };
    round(Instant::now() + Duration::from_secs(3)).await;
    let started = Instant::now();
    let mut all: Vec<f64> = round(started + duration)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Load {
        requests_per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors: 0,
    }
}

/// The list's SQL sent as the server's pool would, with the schema named in it instead of
/// chosen by a tenant transaction: as many at once as wrk's connections, for `duration`.
async fn physical_limit(db: &Db, schemas: &[SchemaName], duration: Duration) -> Load {
    let sql: Arc<Vec<String>> = Arc::new(
        schemas
            .iter()
            .map(|s| LIST_SQL.replace("{schema}", &s.quoted()))
            .collect(),
    );
    let pool = db.pool().clone();
    drive(duration, move |i| {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move {
            let conn = pool.get().await.unwrap();
            conn.simple_query(&sql[i % sql.len()]).await.unwrap();
        }
    })
    .await
}

/// Registers `n` companies over HTTP; answers each one's latency in ms.
async fn register(url: &str, n: usize) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let body = serde_json::json!({
            "company_name": format!("Registered {i}"),
            "email": format!("owner-{}@bench.example", Uuid::new_v4().simple()),
            "password": "a long enough bench password",
            "full_name": "Owner",
        });
        let started = Instant::now();
        let resp = http
            .post(format!("{url}/api/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "{}",
            resp.text().await.unwrap_or_default()
        );
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times
}

/// `estate serve` in its own process, on the benchmark's database.
struct Server {
    url: String,
    child: std::process::Child,
}

impl Server {
    async fn start(config: &Config) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_estate"))
            .arg("serve")
            .env(
                "DATABASE_URL",
                format!(
                    "{}?application_name={SERVER_APP}",
                    config.database_url.expose()
                ),
            )
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", SECRET)
            .env("DATABASE_POOL_SIZE", config.database_pool_size.to_string())
            .env("RATE_LIMITS", "off")
            .env("TENANT_SPARES", REGISTRATIONS.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start estate serve");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(r) = http.get(format!("{url}/health")).send().await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        ready.expect("the server answers /health");
        Server { url, child }
    }

    /// Waits until the server's keeper has `n` spares ready.
    async fn spares_ready(&self, db: &Db, n: usize) {
        let conn = db.shared().await.unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                let count: i64 = conn
                    .query_one("SELECT count(*) FROM tenant_spares", &[])
                    .await
                    .unwrap()
                    .get(0);
                if count >= n as i64 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        ready.expect("the server builds its spares");
    }

    /// VmRSS of the server process.
    fn rss(&self) -> String {
        proc_status(self.child.id(), "VmRSS:")
            .map(|kb| format!("{:.1} MB", kb as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds used so far by the server, by every PostgreSQL process, and by all
/// programs (`busy`), read from /proc (Linux): where the cores go under load.
fn cpu_by_program(server: u32) -> std::collections::HashMap<&'static str, f64> {
    let mut used = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces, so split after its closing bracket.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after comm.
        let ticks: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        let program = if pid == server {
            "server"
        } else if comm == "postgres" {
            "postgres"
        } else {
            continue;
        };
        // Clock ticks are 1/100 s on Linux.
        *used.entry(program).or_insert(0.0) += ticks / 100.0;
    }
    // Every core's busy time, from which the rest (wrk, which has exited by the time of
    // the second reading, and anything else) follows.
    if let Ok(stat) = std::fs::read_to_string("/proc/stat")
        && let Some(cpu) = stat.lines().next()
    {
        let f: Vec<f64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        if f.len() >= 5 {
            let busy = f.iter().sum::<f64>() - f[3] - f[4];
            used.insert("busy", busy / 100.0);
        }
    }
    used
}

/// A `kB` field of /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The private (anonymous) memory of this database's client backends: caches of catalog
/// rows, relations and plans, which grow with the tenants a connection has served. Read
/// from /proc, so only when PostgreSQL runs on this machine.
async fn backend_memory(db: &Db, application: Option<&str>) -> String {
    let pids: Vec<i32> = db
        .shared()
        .await
        .unwrap()
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND ($1::text IS NULL OR application_name = $1)",
            &[&application],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sizes: Vec<u64> = pids
        .iter()
        .filter_map(|pid| proc_status(*pid as u32, "RssAnon:"))
        .collect();
    if sizes.is_empty() {
        return "n/a (PostgreSQL is not on this machine)".into();
    }
    format!(
        "{:.0} MB / {:.1} MB over {} backends",
        sizes.iter().sum::<u64>() as f64 / 1024.0,
        *sizes.iter().max().unwrap_or(&0) as f64 / 1024.0,
        sizes.len()
    )
}
