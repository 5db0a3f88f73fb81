//! The `estate` command itself: configuration errors, `openapi`, `worker`, `jobs`,
//! `tenants list`.

use std::process::{Command, Output};

use crate::helpers::{TestDatabase, spawn_app};

fn estate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_estate"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // Run where no .env file can be picked up.
    cmd.current_dir(std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the estate binary")
}

#[test]
fn a_bad_setting_stops_the_process_with_one_line_naming_it() {
    for (name, value) in [
        ("JWT_SECRET", "too-short-secret-value"),
        ("BIND_ADDR", "nowhere"),
        ("DATABASE_URL", "mysql://localhost/estate"),
        ("TENANT_ROLE_LOGIN", "perhaps"),
    ] {
        let out = estate(&["serve"], &[(name, value)]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    let out = estate(&["serve"], &[("APP_ENV", "production")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
    let out = estate(&["serve"], &[("JWT_SECRET", "hunter2-is-not-a-secret")]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("hunter2"),
        "secrets are never printed"
    );
}

#[test]
fn openapi_prints_the_checked_in_document() {
    let out = estate(&["openapi"], &[]);
    assert!(out.status.success());
    let file = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json"))
        .unwrap();
    assert!(
        out.stdout == file,
        "openapi.json differs from `estate openapi`"
    );
}

/// `estate worker` runs until SIGTERM, then stops cleanly (exit status 0).
#[tokio::test]
async fn the_worker_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let db = TestDatabase::new().await;
    let mail_dir = std::env::temp_dir().join(format!("estate-mail-{}", db.name));
    let mut child = Command::new(env!("CARGO_BIN_EXE_estate"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.config.database_url.expose())
        .env("REDIS_URL", db.config.redis_url.expose())
        .env("MAIL_DIR", &mail_dir)
        .env("LOG_FORMAT", "json")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the worker");
    let stderr = child.stderr.take().unwrap();
    // Read the log to its end (a closed pipe would fail the worker's writes).
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let log = tokio::task::spawn_blocking(move || {
        let mut started_tx = Some(started_tx);
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("worker started")
                && let Some(tx) = started_tx.take()
            {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), started)
        .await
        .expect("the worker starts")
        .expect("the worker logs that it started");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), status)
        .await
        .expect("the worker stops after SIGTERM")
        .unwrap()
        .unwrap();
    let log = log.await.unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("worker stopped"), "{log}");
    let _ = std::fs::remove_dir_all(mail_dir);
}

#[tokio::test]
async fn tenants_list_and_migrate_report_each_tenant() {
    let app = spawn_app().await;
    let t = app.register("Listed Homes").await;
    let url = app.database.config.database_url.expose().to_string();
    let list = estate(&["tenants", "list"], &[("DATABASE_URL", &url)]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&t.company_id.to_string()))
        .expect("the tenant is listed");
    assert!(
        line.contains("Listed Homes") && line.contains(" ok "),
        "{line}"
    );
    let version = estate::db::migrations::latest_tenant_version().to_string();
    assert!(line.split_whitespace().any(|w| w == version), "{line}");

    let migrate = estate(&["migrate"], &[("DATABASE_URL", &url)]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(
        String::from_utf8_lossy(&migrate.stdout)
            .contains("1 total, 1 up to date, 0 migrated, 0 failed")
    );
}

#[tokio::test]
async fn migrate_builds_an_empty_database_and_is_idempotent() {
    let database = TestDatabase::empty().await;
    let url = database.config.database_url.expose().to_string();
    // Idempotent: the second run finds nothing to do.
    for _ in 0..2 {
        let out = estate(&["migrate"], &[("DATABASE_URL", &url)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("0 total"));
    }
}

/// `estate jobs dead` lists dead jobs with their error; `estate jobs retry ID` hands one
/// back (its outbox row becomes unrelayed) and refuses an unknown id.
#[tokio::test]
async fn jobs_dead_and_retry_from_the_command_line() {
    let app = spawn_app().await;
    let t = app.register("Dead letters").await;
    let db = app.database.client().await;
    let id = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO outbox (id, company_id, job, payload, idempotency_key, relayed_at)
         VALUES ($1, $2, 'welcome_email', '{}', 'welcome_email:cli', now())",
        &[&id, &t.company_id],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO dead_jobs (outbox_id, company_id, job, idempotency_key, attempts, last_error)
         VALUES ($1, $2, 'welcome_email', 'welcome_email:cli', 5, 'SMTP: connection refused')",
        &[&id, &t.company_id],
    )
    .await
    .unwrap();
    let url = app.database.config.database_url.expose().to_string();
    let env = [("DATABASE_URL", url.as_str())];
    let listed = estate(&["jobs", "dead"], &env);
    assert!(listed.status.success());
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.contains(&id.to_string()) && out.contains("SMTP: connection refused"),
        "{out}"
    );
    assert!(out.contains("1 dead jobs"), "{out}");

    let retried = estate(&["jobs", "retry", &id.to_string()], &env);
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let relayed: Option<chrono::DateTime<chrono::Utc>> = db
        .query_one("SELECT relayed_at FROM outbox WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(relayed.is_none(), "handed back to the relay");
    let again = estate(&["jobs", "retry", &id.to_string()], &env);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no dead job"));
}

/// `estate jobs sync-billing COMPANY` queues one sync job; an unknown company is refused.
#[tokio::test]
async fn jobs_sync_billing_queues_a_sync_from_the_command_line() {
    let app = spawn_app().await;
    let t = app.register("Sync me").await;
    let url = app.database.config.database_url.expose().to_string();
    let env = [("DATABASE_URL", url.as_str())];
    let queued = estate(&["jobs", "sync-billing", &t.company_id.to_string()], &env);
    assert!(
        queued.status.success(),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    let rows = app
        .database
        .client()
        .await
        .query(
            "SELECT company_id FROM outbox WHERE job = 'billing_sync'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, uuid::Uuid>(0), t.company_id);
    let unknown = estate(
        &["jobs", "sync-billing", &uuid::Uuid::new_v4().to_string()],
        &env,
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no company"));
}
