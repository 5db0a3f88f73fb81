//! What both benchmark programs need: a database of their own (dropped with its roles at
//! the end), wrk as the load generator in its own process, and percentiles.

#![allow(dead_code)] // each benchmark uses part of it

use std::collections::HashMap;
use std::time::{Duration, Instant};

use estate::auth::jwt::JwtKeys;
use estate::config::Config;
use estate::db::Db;
use estate::db::migrations::TenantMigrations;
use estate::db::provisioning::provision_tenant;
use estate::db::tenancy::CompanyId;
use futures::StreamExt;
use uuid::Uuid;

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// The value at `p` (0..1) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    // A load whose every request failed has no latencies: its row says NaN and the run
    // goes on (the error count is printed beside it).
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

pub const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

/// Runs `run` on a database made for it, then drops the database and its tenant roles
/// whatever happened; exits 1 if `run` panicked.
pub async fn with_database<F, Fut>(extra: &[(&str, String)], run: F)
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = env_or("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432");
    let name = format!("estate_b_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let root = admin(&format!("{server}/postgres")).await;
    root.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", format!("{server}/{name}")),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("JWT_SECRET", SECRET.into()),
        ("DATABASE_POOL_SIZE", env_or("BENCH_POOL_SIZE", "8")),
        ("RATE_LIMITS", "off".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.clone());
    }
    let config = Config::from_vars(&vars).unwrap();
    let prefix = config.tenancy.role_prefix().to_string();
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run(config))).await;

    root.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    // Many thousands of roles: dropped in batches, each one statement.
    let roles: Vec<String> = root
        .query(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for chunk in roles.chunks(500) {
        let list: Vec<String> = chunk.iter().map(|r| format!("\"{r}\"")).collect();
        root.batch_execute(&format!("DROP ROLE {}", list.join(", ")))
            .await
            .unwrap();
    }
    if outcome.is_err() {
        std::process::exit(1);
    }
}

/// What wrk measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

impl std::fmt::Display for Load {
    /// `4936 requests/s, p50 13.55 ms, p99 30.23 ms`, and the errors when there were any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
            self.requests_per_sec, self.p50_ms, self.p99_ms
        )?;
        if self.errors > 0 {
            write!(f, " ({} errors)", self.errors)?;
        }
        Ok(())
    }
}

/// wrk's latency figures carry their unit: `850.00us`, `22.81ms`, `1.02s`.
fn millis(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        (text, f64::NAN)
    };
    number
        .parse::<f64>()
        .map(|n| n * factor)
        .unwrap_or(f64::NAN)
}

/// Requests each entry of a wrk run's list (each tenant) gets before the measured run.
/// A fixed warm-up would leave runs over many tenants measured colder than runs over a
/// few: 3 seconds ask each of 10 tenants thousands of times, each of 10,000 about once,
/// and a PostgreSQL backend answers a tenant it has not met yet three times slower (its
/// catalog caches; BENCHMARKS.md). So every run is measured at the same warmth per tenant.
pub const WARM_REQUESTS_EACH: usize = 5;

/// The first pass of every wrk run, reported on its own by [`run_wrk_from_cold`].
pub const FIRST_PASS_SECS: u64 = 3;

/// Loads the server from wrk (a separate process) with `requests` (token, path) in turn:
/// a first pass of [`FIRST_PASS_SECS`], more until each request has been sent
/// [`WARM_REQUESTS_EACH`] times, then the measured run of `duration`, whose requests/s,
/// p50 and p99 it prints under `label` and answers.
pub async fn run_wrk(
    url: &str,
    label: &str,
    requests: &[(String, String)],
    duration: &str,
) -> Load {
    run_wrk_from_cold(url, label, requests, duration).await.1
}

/// [`run_wrk`], answering the first pass's figures as well: what the server does while
/// its backends are meeting the tenants.
///
/// The script formats each request once and defines no `response` hook (which would make
/// wrk hand every answer's headers and body to Lua): wrk's own cost per request is part of
/// what the cores spend, and answers other than 2xx are counted from wrk's summary instead.
pub async fn run_wrk_from_cold(
    url: &str,
    label: &str,
    requests: &[(String, String)],
    duration: &str,
) -> (Load, Load) {
    let script = std::env::temp_dir().join(format!("estate-bench-{}.lua", std::process::id()));
    let list: Vec<String> = requests
        .iter()
        .map(|(token, path)| format!("{{ \"{token}\", \"{path}\" }}"))
        .collect();
    std::fs::write(
        &script,
        format!(
            "requests = {{ {} }}\nformatted = {{}}\ncounter = math.random(1, #requests)\n\
             request = function()\n  counter = counter % #requests + 1\n  local f = formatted[counter]\n  \
             if f == nil then\n    local r = requests[counter]\n    \
             f = wrk.format(\"GET\", r[2], {{ [\"Authorization\"] = \"Bearer \" .. r[1] }})\n    \
             formatted[counter] = f\n  end\n  return f\nend\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let connections = env_or("BENCH_CONNECTIONS", "64");
    let wrk = |d: String| {
        let script = script.clone();
        let connections = connections.clone();
        async move {
            let output = tokio::process::Command::new("wrk")
                .args(["-t2", "-c", &connections, "-d", &d, "--latency", "-s"])
                .arg(&script)
                .arg(url)
                .output()
                .await?;
            Ok::<_, std::io::Error>(wrk_figures(&String::from_utf8_lossy(&output.stdout)))
        }
    };
    let passes = async {
        let first = wrk(format!("{FIRST_PASS_SECS}s")).await?;
        let sent = first.requests_per_sec * FIRST_PASS_SECS as f64;
        let wanted = (requests.len() * WARM_REQUESTS_EACH) as f64;
        if sent < wanted && first.requests_per_sec > 0.0 {
            let more = ((wanted - sent) / first.requests_per_sec).ceil();
            println!("{label}: {more:.0} s more warm-up, {WARM_REQUESTS_EACH} requests each");
            wrk(format!("{more:.0}s")).await?;
        }
        Ok::<_, std::io::Error>((first, wrk(duration.to_string()).await?))
    };
    let result = passes.await;
    let _ = std::fs::remove_file(&script);
    match result {
        Ok((first, load)) => {
            println!("{label}, {connections} connections, first {FIRST_PASS_SECS} s: {first}");
            println!("{label}, {connections} connections: {load}");
            (first, load)
        }
        Err(e) => {
            println!("{label}: wrk not runnable ({e}); install it with `apt-get install wrk`");
            Default::default()
        }
    }
}

/// Requests/s, p50, p99 and errors from wrk's `--latency` summary.
fn wrk_figures(text: &str) -> Load {
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let count_after = |marker: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(marker))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    Load {
        requests_per_sec: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: millis(&field("50%")),
        p99_ms: millis(&field("99%")),
        errors: count_after("Non-2xx") + count_after("Socket errors"),
    }
}

/// A company row and its tenant, in one transaction, as registration does (without the
/// owner's password hash).
pub async fn provision(db: &Db, migrations: &TenantMigrations, i: usize) -> CompanyId {
    let company = CompanyId(Uuid::now_v7());
    let tenant = db.naming().tenant(company);
    let mut conn = db.shared().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO companies (id, name, slug) VALUES ($1, $2, $3)",
        &[&company.0, &format!("Bench {i}"), &format!("bench-{i}")],
    )
    .await
    .unwrap();
    provision_tenant(&tx, db.naming(), &tenant, migrations)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    company
}

/// A tenant served in a benchmark: its owner and the owner's token.
pub struct Served {
    pub company: CompanyId,
    pub user: Uuid,
    pub token: String,
}

/// New access tokens for `served`, whose first ones may have expired (they last
/// `ACCESS_TOKEN_TTL_SECS`, 15 minutes; on a slow hour of the VM the 10,000-tenant load
/// starts later than that after the first tenants were seeded, and their requests were
/// refused).
pub fn fresh_tokens(keys: &JwtKeys, served: &mut [Served]) {
    for s in served {
        s.token = keys.issue(s.user, s.company.0, "owner", None).unwrap().0;
    }
}

/// An owner and `estates` estates in each tenant, and the owner's token; in the tenants'
/// order.
pub async fn seed(db: &Db, keys: &JwtKeys, tenants: &[CompanyId], estates: i32) -> Vec<Served> {
    futures::stream::iter(tenants)
        .map(|company| async move {
            let conn = db.shared().await.unwrap();
            let user = Uuid::now_v7();
            let schema = db.naming().tenant(*company).schema;
            conn.execute(
                "INSERT INTO users (id, company_id, email, full_name, password_hash, role)
                 VALUES ($1, $2, $3, 'Bench', 'not-a-hash', 'owner')",
                &[&user, &company.0, &format!("{user}@bench.example")],
            )
            .await
            .unwrap();
            conn.execute(
                &format!(
                    "INSERT INTO {}.estates (id, name, location, description, status, created_by)
                     SELECT gen_random_uuid(), 'Estate ' || n, 'Lagos', 'Plots near the lagoon', 'active', $1
                     FROM generate_series(1, $2::int) AS n",
                    schema.quoted()
                ),
                &[&user, &estates],
            )
            .await
            .unwrap();
            Served {
                company: *company,
                user,
                token: keys.issue(user, company.0, "owner", None).unwrap().0,
            }
        })
        .buffered(8)
        .collect()
        .await
}

/// What a production server's autovacuum would have done after the bulk provisioning,
/// seeding and migrations, done now: dead catalog rows left by thousands of `ALTER TABLE`s
/// and `CREATE INDEX`es cleaned, visibility maps set, statistics for the planner. This
/// machine's PostgreSQL runs with autovacuum off; with `ANALYZE` alone, the read load after
/// the second migration ran ~35% slower through the tenant path and its p99 at a fixed
/// rate was twice as high (BENCHMARKS.md). Then the WAL flushed now rather than by a
/// checkpoint in the middle of the read load. Separate statements: `VACUUM` cannot run in
/// a transaction block, and on its own it commits table by table instead of locking every
/// table of every tenant at once.
pub async fn settle(db: &Db) {
    let conn = db.shared().await.unwrap();
    conn.batch_execute("VACUUM (ANALYZE)").await.unwrap();
    conn.batch_execute("CHECKPOINT").await.unwrap();
}

/// Blocks this database's backends have read into PostgreSQL's shared buffers (from the
/// operating system's page cache or the disk): a request that needs one waits on a system
/// call at best and on the disk at worst.
pub async fn blocks_read(db: &Db) -> i64 {
    scalar(
        db,
        "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

/// Tenant transactions the server ran at home and away from their home lane (one away may
/// meet a backend that has not served its tenant yet), and those that first waited for a
/// busy lane that knew their tenant (`db::HOME_FIRST_WAIT`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LaneUse {
    pub home: f64,
    pub away: f64,
    pub waited: f64,
}

impl LaneUse {
    /// The transactions since `before` was read.
    pub fn since(self, before: LaneUse) -> LaneUse {
        LaneUse {
            home: self.home - before.home,
            away: self.away - before.away,
            waited: self.waited - before.waited,
        }
    }

    /// The share away, in percent.
    pub fn away_percent(self) -> f64 {
        100.0 * self.away / (self.home + self.away).max(1.0)
    }

    /// The share that waited for a busy lane, in percent.
    pub fn waited_percent(self) -> f64 {
        100.0 * self.waited / (self.home + self.away).max(1.0)
    }
}

impl std::ops::AddAssign for LaneUse {
    fn add_assign(&mut self, other: LaneUse) {
        self.home += other.home;
        self.away += other.away;
        self.waited += other.waited;
    }
}

/// The server's tenant transactions so far, from its `/metrics`.
pub async fn lane_use(url: &str) -> LaneUse {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| {
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = |lane: &str| value(&format!("db_tenant_transactions_total{{lane=\"{lane}\"}}"));
    LaneUse {
        home: count("home"),
        away: count("away"),
        waited: value("db_tenant_transactions_waited_total"),
    }
}

/// PostgreSQL's `shared_buffers`, printed with the host: whether every tenant's hot pages
/// fit decides how many requests read from outside it (BENCHMARKS.md).
pub async fn shared_buffers(db: &Db) -> String {
    scalar(db, "SHOW shared_buffers").await
}

/// The one value `sql` answers, over a shared connection.
pub async fn scalar<T: tokio_postgres::types::FromSqlOwned>(db: &Db, sql: &str) -> T {
    db.shared()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// What the host does that the figures feel but the benchmark does not control, printed
/// beside them: whether the kernel's DAMON proactive reclaim is paging out memory it finds
/// cold (seen on these VMs: up to 50 ms of a core each second, and pages faulted back in
/// under load), and the share of CPU time the hypervisor gave to others (steal).
pub fn host_context(since: &CpuTimes) -> String {
    let reclaim = std::fs::read_dir("/sys/kernel/mm/damon/admin/kdamonds")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("state").exists())
                .any(|e| {
                    std::fs::read_to_string(e.path().join("state")).is_ok_and(|s| s.trim() == "on")
                })
        })
        .unwrap_or(false);
    let now = CpuTimes::now();
    let total = now.total.saturating_sub(since.total).max(1);
    let steal = now.steal.saturating_sub(since.steal);
    format!(
        "DAMON proactive reclaim {}; CPU steal {:.1}%",
        if reclaim { "on" } else { "off" },
        100.0 * steal as f64 / total as f64
    )
}

/// The machine's CPU time counters from /proc/stat (Linux), in clock ticks.
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    pub fn now() -> Self {
        let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = line
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        CpuTimes {
            total: fields.iter().take(8).sum(),
            // user nice system idle iowait irq softirq steal …
            steal: fields.get(7).copied().unwrap_or(0),
        }
    }
}

/// The untimed run at the same rate before each fixed-rate measurement.
pub const FIXED_WARMUP_SECS: f64 = 2.0;

/// GETs at a fixed rate (open loop) from this process for `duration` (see [`open_loop`]),
/// with at most `BENCH_CONNECTIONS` (64) in flight, as with wrk, so that a burst waits for
/// a connection — and the wait counts — instead of opening more and growing the server.
/// `requests` are (bearer token, path) pairs, taken round robin.
pub async fn fixed_rate(
    url: &str,
    label: &str,
    requests: &[(String, String)],
    rate: u32,
    duration: Duration,
) -> Load {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let connections: usize = env_or("BENCH_CONNECTIONS", "64").parse().unwrap();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(connections));
    open_loop(label, rate, duration, |i| {
        let (token, path) = requests[i % requests.len()].clone();
        let request = http.get(format!("{url}{path}")).bearer_auth(token);
        let in_flight = in_flight.clone();
        async move {
            let Ok(_permit) = in_flight.acquire_owned().await else {
                return false;
            };
            match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

/// Starts `one(i)` at a fixed rate (open loop) for `duration`, each in a task of its own:
/// a slow one does not hold back the next, so the latency shows the service time and
/// queueing at that rate rather than a closed loop's saturation (no coordinated
/// omission). `one` answers whether it succeeded. An untimed warm-up at the same rate
/// comes first, and the timed run goes on with the `i` after the ones it asked, so that it
/// does not start with tenants just asked.
///
/// Each call is timed from the moment this process starts it, not from its place in the
/// schedule: tokio's timer fires up to a millisecond or two after the scheduled instant
/// (measured: 0.4–1.4 ms at the median, 1.2–3.1 ms at p99), which is the load generator's
/// delay, not the server's, and timed from the schedule it made up most of the p50 and
/// decided the p99. That delay is printed beside the figures.
pub async fn open_loop<F, Fut>(label: &str, rate: u32, duration: Duration, one: F) -> Load
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let run = |span: Duration, mut i: usize| {
        let one = &one;
        async move {
            let started = Instant::now();
            let period = Duration::from_secs_f64(1.0 / f64::from(rate));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            let mut late = Vec::new();
            while started.elapsed() < span {
                let due = ticker.tick().await;
                late.push(due.elapsed().as_secs_f64() * 1e3);
                let sent = Instant::now();
                let call = one(i);
                tasks.push(tokio::spawn(async move {
                    let ok = call.await;
                    (sent.elapsed().as_secs_f64() * 1e3, ok)
                }));
                i += 1;
            }
            let mut times = Vec::with_capacity(tasks.len());
            let mut errors = 0;
            for t in tasks {
                match t.await {
                    Ok((ms, true)) => times.push(ms),
                    _ => errors += 1,
                }
            }
            late.sort_by(f64::total_cmp);
            (times, errors, started.elapsed(), late, i)
        }
    };
    let (.., asked) = run(Duration::from_secs_f64(FIXED_WARMUP_SECS), 0).await;
    let (mut times, errors, took, late, _) = run(duration, asked).await;
    times.sort_by(f64::total_cmp);
    let load = Load {
        requests_per_sec: times.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        errors,
    };
    println!(
        "{label}, {rate}/s offered: {load}; sent after their scheduled time by p50 {:.2} ms, \
         p99 {:.2} ms (not counted)",
        percentile(&late, 0.5),
        percentile(&late, 0.99)
    );
    load
}
