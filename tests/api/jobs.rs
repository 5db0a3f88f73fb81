//! Background jobs against the real Redis and a real SMTP server (aiosmtpd, started by
//! `scripts/test`): the outbox relay, e-mails, retries, dead jobs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, config_with, spawn_app, spawn_app_with};
use crate::sales::{created, id, property};

fn smtp_url() -> String {
    std::env::var("TEST_SMTP_URL").unwrap_or_else(|_| "smtp://127.0.0.1:2525".into())
}

fn maildir() -> PathBuf {
    std::env::var("TEST_MAILDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("estate-test-mail"))
}

/// Messages the SMTP server received for `address` (it records the envelope recipient
/// as `X-RcptTo`).
fn mails_to(address: &str) -> Vec<String> {
    let header = format!("X-RcptTo: {address}");
    std::fs::read_dir(maildir().join("new"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .filter(|m| m.lines().any(|l| l == header))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until `address` has `n` messages, and answers them.
async fn wait_for_mail(address: &str, n: usize) -> Vec<String> {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mails = mails_to(address);
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        panic!(
            "{n} e-mail(s) to {address} within 30 s; got {}",
            mails_to(address).len()
        )
    })
}

/// A worker (relay and job runner) in this process, on the app's database.
pub struct Worker {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Worker {
    async fn start(app: &TestApp) -> Worker {
        Worker::start_with(app, &[]).await
    }

    /// A worker with more settings than the SMTP server's.
    pub async fn start_with(app: &TestApp, overrides: &[(&str, &str)]) -> Worker {
        let smtp = smtp_url();
        let mut settings = vec![("SMTP_URL", smtp.as_str())];
        settings.extend_from_slice(overrides);
        let config = config_with(&app.database.name, &settings);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            estate::worker::run(&config, async {
                let _ = stopped.await;
            })
            .await
            .expect("the worker runs");
        });
        Worker {
            stop: Some(stop),
            done,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.done)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

/// Waits (at most `within`) until some job is kept dead, and answers the dead jobs.
pub async fn wait_for_dead(
    db: &estate::db::Db,
    within: Duration,
) -> Vec<estate_jobs::dead::DeadJob> {
    tokio::time::timeout(within, async {
        loop {
            let dead = estate_jobs::dead::list(&db.shared().await.unwrap())
                .await
                .unwrap();
            if !dead.is_empty() {
                return dead;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a job is kept dead after its attempts")
}

fn address(who: &str) -> String {
    format!("{who}-{}@mail.example", Uuid::new_v4().simple())
}

#[tokio::test]
async fn committed_changes_send_their_emails_once_with_both_parts() {
    let app = spawn_app().await;
    let worker = Worker::start(&app).await;
    let t = app.register("Mailing Homes").await;
    let token = t.access_token.as_str();

    let staff = address("staff");
    created(
        app.post(
            "/api/v1/users",
            Some(token),
            json!({"email": staff, "full_name": "Tunde Staff", "role": "member", "password": PASSWORD}),
        )
        .await,
    )
    .await;
    let estate = app.create_estate(token, json!({"name": "E"})).await;
    let plot = property(&app, token, id(&estate), "P-9", "2500000").await;
    let buyer_email = address("buyer");
    let buyer = created(
        app.post(
            "/api/v1/clients",
            Some(token),
            json!({"full_name": "Bola Buyer", "email": buyer_email}),
        )
        .await,
    )
    .await;
    let allocation = created(
        app.post(
            "/api/v1/allocations",
            Some(token),
            json!({"property_id": id(&plot), "client_id": id(&buyer), "payment_plan": "installment"}),
        )
        .await,
    )
    .await;
    let paid = app
        .post(
            &format!("/api/v1/allocations/{}/record_payment", id(&allocation)),
            Some(token),
            json!({"amount": "500000.00", "method": "cash"}),
        )
        .await;
    assert_eq!(paid.status(), 200);

    let welcome = wait_for_mail(&staff, 1).await;
    assert!(welcome[0].contains("Subject: Welcome to Estate API"));
    assert!(welcome[0].contains("multipart/alternative"));
    assert!(welcome[0].contains("Content-Type: text/plain"));
    assert!(welcome[0].contains("Content-Type: text/html"));
    assert!(welcome[0].contains("Hello Tunde Staff,"));
    let to_buyer = wait_for_mail(&buyer_email, 2).await;
    let subjects: Vec<bool> = ["Subject: Your plot allocation", "Subject: Payment received"]
        .iter()
        .map(|s| to_buyer.iter().any(|m| m.contains(s)))
        .collect();
    assert_eq!(subjects, [true, true]);
    assert!(
        to_buyer
            .iter()
            .any(|m| m.contains("P-9") && m.contains("2500000.00"))
    );
    assert!(
        to_buyer
            .iter()
            .any(|m| m.contains("500000.00") && m.contains("2000000.00"))
    );

    // Every outbox row was handed off, and each effect is recorded once.
    let db = app.database.client().await;
    let pending: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox WHERE relayed_at IS NULL AND job LIKE '%email'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
    worker.stop().await;
    assert_eq!(mails_to(&staff).len(), 1);
    assert_eq!(mails_to(&buyer_email).len(), 2);

    // Finished jobs stay in Redis until vacuumed; the vacuum clears all of them.
    let config = &app.database.config;
    let mut storage = estate_jobs::worker::storage(
        config.redis_url.expose(),
        &estate::worker::queue_name(config),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let keys = storage.get_config().clone();
    let mut redis = redis::Client::open(config.redis_url.expose())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored = async |redis: &mut redis::aio::MultiplexedConnection| -> (usize, usize) {
        let payloads: usize = redis::cmd("HLEN")
            .arg(keys.job_data_hash())
            .query_async(redis)
            .await
            .unwrap();
        let done: usize = redis::cmd("SCARD")
            .arg(keys.done_jobs_set())
            .query_async(redis)
            .await
            .unwrap();
        (payloads, done)
    };
    let (payloads, done) = stored(&mut redis).await;
    assert!(
        payloads >= 3 && done == payloads,
        "{payloads} payloads, {done} done"
    );
    let cleared = estate_jobs::worker::vacuum(&mut storage, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(cleared, payloads);
    assert_eq!(stored(&mut redis).await, (0, 0));
}

#[tokio::test]
async fn jobs_written_while_redis_is_down_are_delivered_once_it_is_back() {
    // The API's Redis is unreachable; writes still commit their outbox rows.
    let app = spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let t = app.register("Offline Homes").await;
    let mut staff = Vec::new();
    for n in 0..3 {
        let email = address(&format!("offline{n}"));
        created(
            app.post(
                "/api/v1/users",
                Some(&t.access_token),
                json!({"email": email, "full_name": "Staff", "role": "viewer", "password": PASSWORD}),
            )
            .await,
        )
        .await;
        staff.push(email);
    }
    // Redis back (the worker uses the real one): every job arrives, once.
    let worker = Worker::start(&app).await;
    for email in &staff {
        assert_eq!(wait_for_mail(email, 1).await.len(), 1);
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_kept_dead_with_its_error_and_can_be_retried() {
    let app = spawn_app().await;
    let t = app.register("Broken Mail").await;
    let db = app.database.client().await;
    let outbox_id = Uuid::now_v7();
    let key = format!("welcome_email:{}", Uuid::now_v7());
    db.execute(
        "INSERT INTO outbox (id, company_id, job, payload, idempotency_key)
         VALUES ($1, $2, 'welcome_email', $3, $4)",
        &[
            &outbox_id,
            &t.company_id,
            &json!({"email": "not an address", "full_name": "Nobody"}),
            &key,
        ],
    )
    .await
    .unwrap();
    let worker = Worker::start(&app).await;
    let dead = wait_for_dead(&app.state.db, Duration::from_secs(60)).await;
    let pool = app.state.db.pool().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, outbox_id);
    assert_eq!(dead[0].attempts, estate_jobs::worker::MAX_ATTEMPTS as i32);
    assert!(
        dead[0].last_error.contains("not an address"),
        "{}",
        dead[0].last_error
    );

    // Fixed, and handed back: it runs again and its e-mail goes out once.
    let fixed = address("fixed");
    db.execute(
        "UPDATE outbox SET payload = jsonb_set(payload, '{email}', to_jsonb($2::text)) WHERE id = $1",
        &[&outbox_id, &fixed],
    )
    .await
    .unwrap();
    estate_jobs::dead::retry(&mut pool.get().await.unwrap(), outbox_id)
        .await
        .unwrap();
    assert_eq!(wait_for_mail(&fixed, 1).await.len(), 1);
    assert!(
        estate_jobs::dead::list(&pool.get().await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        estate_jobs::dead::retry(&mut pool.get().await.unwrap(), outbox_id)
            .await
            .is_err()
    );
    worker.stop().await;
}

#[tokio::test]
async fn retention_deletes_exactly_the_entries_older_than_each_tiers_retention() {
    let app = spawn_app().await;
    let starter = app.register_on("Short memory", "starter").await; // 30 days
    let professional = app.register_on("Long memory", "professional").await; // 180 days
    let db = app.database.client().await;
    let naming = &app.database.config.tenancy;
    // (company, age in days, expected to survive)
    let entries = [
        (&starter, 31, false),
        (&starter, 29, true),
        (&professional, 181, false),
        (&professional, 179, true),
        (&professional, 31, true),
    ];
    let mut kept = Vec::new();
    for (tenant, days, survives) in entries {
        let schema = naming
            .tenant(estate::db::tenancy::CompanyId(tenant.company_id))
            .schema
            .quoted();
        let id = Uuid::now_v7();
        db.execute(
            &format!(
                "INSERT INTO {schema}.audit_log (id, action, actor_kind, created_at)
                 VALUES ($1, 'update', 'system', now() - make_interval(days => $2))"
            ),
            &[&id, &days],
        )
        .await
        .unwrap();
        if survives {
            kept.push(id);
        }
    }
    let count_old = |schema: String| {
        let db = &db;
        async move {
            db.query_one(
                &format!("SELECT count(*) FROM {schema}.audit_log WHERE action = 'update'"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };

    let worker = Worker::start(&app).await;
    let keys: Vec<String> = [&starter, &professional]
        .iter()
        .map(|t| format!("audit_retention:{}:", t.company_id))
        .collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done: i64 = db
                .query_one(
                    "SELECT count(*) FROM job_effects
                     WHERE starts_with(idempotency_key, $1) OR starts_with(idempotency_key, $2)",
                    &[&keys[0], &keys[1]],
                )
                .await
                .unwrap()
                .get(0);
            if done == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both companies' retention ran");
    worker.stop().await;

    let schema = |t: &crate::helpers::Tenant| {
        naming
            .tenant(estate::db::tenancy::CompanyId(t.company_id))
            .schema
            .quoted()
    };
    assert_eq!(count_old(schema(&starter)).await, 1);
    assert_eq!(count_old(schema(&professional)).await, 2);
    for id in kept {
        let found: i64 = db
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {}.audit_log WHERE id = $1)
                          + (SELECT count(*) FROM {}.audit_log WHERE id = $1)",
                    schema(&starter),
                    schema(&professional)
                ),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "entry {id} is within its retention");
    }
}

/// A proxy to the test SMTP server that, on its first connection, forwards the client's
/// commands up to `DATA` and then nothing more: the worker is left in the middle of
/// sending, and the server never receives the message. Later connections pass through.
struct StallingSmtp {
    url: String,
    stalled: oneshot::Receiver<()>,
}

impl StallingSmtp {
    async fn start() -> StallingSmtp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = smtp_url().trim_start_matches("smtp://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let (stalled_tx, stalled) = oneshot::channel();
        tokio::spawn(async move {
            let mut stalled_tx = Some(stalled_tx);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let stall = stalled_tx.take();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut seen = Vec::new();
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(tx) = &stall
                            && let Some(at) = find(&seen, b"DATA\r\n")
                        {
                            // Forward up to DATA, then hold everything else.
                            let already = seen.len() - n;
                            let upto = at + 6 - already.min(at + 6);
                            let _ = server_write.write_all(&buf[..upto.min(n)]).await;
                            let _ = tx;
                            break;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    if let Some(tx) = stall {
                        let _ = tx.send(());
                        // Hold the connection until the client goes away.
                        while let Ok(n) = client_read.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    drop(server_write);
                    down.abort();
                });
            }
        });
        StallingSmtp { url, stalled }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_a_job_leaves_it_to_another_and_one_email_arrives() {
    let app = spawn_app().await;
    let t = app.register("Interrupted").await;
    let smtp = StallingSmtp::start().await;
    let recipient = address("interrupted");
    let config = &app.database.config;
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_estate"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", config.database_url.expose())
        .env("REDIS_URL", config.redis_url.expose())
        .env("SMTP_URL", &smtp.url)
        .env("WORKER_ORPHAN_SECS", "2")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker process");
    created(
        app.post(
            "/api/v1/users",
            Some(&t.access_token),
            json!({"email": recipient, "full_name": "Again", "role": "viewer", "password": PASSWORD}),
        )
        .await,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(60), smtp.stalled)
        .await
        .expect("the worker is in the middle of sending")
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    first.wait().unwrap();
    assert!(
        mails_to(&recipient).is_empty(),
        "the interrupted e-mail never completed"
    );

    // Another worker takes the job over once the first one's heartbeats stop.
    let config = config_with(
        &app.database.name,
        &[("SMTP_URL", &smtp_url()), ("WORKER_ORPHAN_SECS", "2")],
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let second = tokio::spawn(async move {
        estate::worker::run(&config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    assert_eq!(wait_for_mail(&recipient, 1).await.len(), 1);
    let key_done: i64 = app
        .database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM job_effects WHERE job = 'welcome_email'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key_done, 1);
    let _ = stop.send(());
    second.await.unwrap();
    assert_eq!(mails_to(&recipient).len(), 1, "exactly one e-mail");
}
