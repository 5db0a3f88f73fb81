//! The session-verdict cache: a read skips the check after it answered `ok`; a write
//! request through the process drops every entry; a change made outside the process
//! (here, straight in the database) is announced by a trigger, heard by the server's
//! listening connection and refused at once — and within a second when nothing is heard.

use std::sync::Arc;
use std::time::Duration;

use estate::auth::permissions::Operation;
use estate::auth::verdict::{self, VerdictCache, cacheable};
use estate::auth::{Principal, Role};
use estate::db::Db;
use estate::db::tenancy::CompanyId;
use uuid::Uuid;

use crate::helpers::spawn_app;

async fn deactivate(app: &crate::helpers::TestApp, user: Uuid) {
    app.database
        .client()
        .await
        .execute("UPDATE users SET is_active = false WHERE id = $1", &[&user])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_remembered_verdict_is_skipped_until_a_write_or_its_time_is_up() {
    let app = spawn_app().await;
    let t = app.register("Cached").await;
    let db = Db::connect_with(
        &app.database.config,
        verdict::connection_setup(),
        estate::db::Layout::Shared,
    )
    .unwrap();
    let principal = Principal {
        user_id: t.user_id,
        company: CompanyId(t.company_id),
        role: Role::Owner,
        jti: Uuid::new_v4(),
        session: None,
        token_expires_at: i64::MAX,
        origin: Default::default(),
        machine: None,
    };
    let rule = Operation::EstatesList.rule();
    assert!(cacheable(&principal, rule));
    assert!(
        !cacheable(&principal, Operation::EstatesCreate.rule()),
        "writes are always checked"
    );
    let cache = Arc::new(VerdictCache::new(Duration::from_secs(60)));
    let guard = verdict::guard(&principal, rule);
    let key = guard.sql();
    assert!(!cache.fresh(&key));

    // A tenant transaction whose verdict the cache remembers if it is `ok`.
    let remembered = || {
        db.guarded_tenant_tx(
            principal.company,
            cache.remembering(guard.clone(), key.clone()),
        )
    };
    let mut tx = remembered().await.unwrap();
    tx.query("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(cache.fresh(&key), "an ok verdict is remembered");

    deactivate(&app, t.user_id).await;
    // Still remembered (the change was not made through this cache's process)...
    assert!(cache.fresh(&key));
    // ...until a write request finishes, after which the check runs again and refuses.
    cache.invalidate();
    assert!(!cache.fresh(&key));
    let mut tx = remembered().await.unwrap();
    assert!(tx.query("SELECT 1", &[]).await.is_err());
    drop(tx);
    assert!(!cache.fresh(&key), "a refusal is not remembered");

    // Nothing is remembered when the cache is off.
    let off = Arc::new(VerdictCache::new(Duration::ZERO));
    assert!(!off.fresh(&key));
}

#[tokio::test]
async fn a_user_deactivated_outside_the_server_is_refused_within_a_second() {
    let app = spawn_app().await;
    let t = app.register("Deactivated elsewhere").await;
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        200
    );
    deactivate(&app, t.user_id).await;
    // The server's cache keeps an entry one second at most; poll (bounded) for the refusal.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status = app.get("/api/v1/estates", &t.access_token).await.status();
            if status == 401 {
                return;
            }
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "refused once the remembered verdict ran out"
    );
}

/// Waits until the server's verdict cache hears changes made elsewhere.
async fn until_hearing(cache: &VerdictCache) {
    let mut heard = cache.heard();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cache.hearing() {
            heard.changed().await.expect("the cache lives");
        }
    })
    .await
    .expect("the server listens for verdict changes");
}

/// Waits until every change committed before now has been heard: a ping the listener sends
/// after now comes back after them (notifications arrive in commit order).
async fn all_heard(cache: &VerdictCache) {
    let now = std::time::Instant::now();
    let mut heard = cache.heard();
    tokio::time::timeout(
        Duration::from_secs(10),
        heard.wait_for(|h| h.is_some_and(|sent| sent > now)),
    )
    .await
    .expect("a later ping comes back")
    .unwrap();
}

/// Makes `change` once everything before it has been heard, then waits until the cache
/// drops its remembered verdicts: the change was announced and heard.
async fn heard_after(cache: &VerdictCache, change: impl Future<Output = ()>, what: &str) {
    all_heard(cache).await;
    let mut epochs = cache.epochs();
    epochs.borrow_and_update();
    change.await;
    tokio::time::timeout(Duration::from_secs(10), epochs.changed())
        .await
        .unwrap_or_else(|_| panic!("not announced: {what}"))
        .unwrap();
}

#[tokio::test]
async fn a_change_made_in_the_database_is_heard_and_refused_at_once() {
    let app = spawn_app().await;
    let cache = app.state.verdicts.clone();
    until_hearing(&cache).await;
    let t = app.register("Heard").await;
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        200
    );
    heard_after(&cache, deactivate(&app, t.user_id), "a deactivation").await;
    // The remembered verdict is gone: the very next read is checked and refused, however
    // long a verdict may otherwise be remembered while changes are heard.
    assert_eq!(
        app.get("/api/v1/estates", &t.access_token).await.status(),
        401
    );
}

#[tokio::test]
async fn every_change_a_session_verdict_reads_is_announced_and_no_other() {
    let app = spawn_app().await;
    let cache = app.state.verdicts.clone();
    until_hearing(&cache).await;
    let t = app.register("Announced").await;
    let db = app.database.client().await;
    let user = t.user_id;
    let company = t.company_id;
    let announced: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 6] = [
        (
            "UPDATE users SET is_active = is_active WHERE id = $1",
            &[&user],
        ),
        ("UPDATE users SET role = role WHERE id = $1", &[&user]),
        (
            "UPDATE users SET company_id = company_id WHERE id = $1",
            &[&user],
        ),
        (
            "UPDATE companies SET status = status WHERE id = $1",
            &[&company],
        ),
        (
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, now())",
            &[&Uuid::new_v4()],
        ),
        ("DELETE FROM users WHERE id = $1 AND false", &[&user]),
    ];
    for (sql, params) in announced {
        let change = async { db.execute(sql, params).await.map(drop).unwrap() };
        heard_after(&cache, change, sql).await;
    }

    // Columns no verdict reads: once everything committed before now has been heard,
    // nothing was.
    all_heard(&cache).await;
    let epoch = *cache.epochs().borrow();
    db.execute(
        "UPDATE companies SET name = name WHERE id = $1",
        &[&company],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE users SET full_name = full_name WHERE id = $1",
        &[&user],
    )
    .await
    .unwrap();
    all_heard(&cache).await;
    assert_eq!(*cache.epochs().borrow(), epoch, "nothing announced");
}

#[tokio::test]
async fn a_lost_listening_connection_is_noticed_and_made_again() {
    let app = spawn_app().await;
    let cache = app.state.verdicts.clone();
    until_hearing(&cache).await;
    let mut heard = cache.heard();
    let epoch = *cache.epochs().borrow();
    let db = app.database.client().await;
    let killed: i64 = db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'estate verdicts' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one listening connection per server");
    tokio::time::timeout(Duration::from_secs(10), heard.wait_for(Option::is_none))
        .await
        .expect("the loss is noticed")
        .unwrap();
    until_hearing(&cache).await;
    assert!(
        *cache.epochs().borrow() > epoch,
        "what was remembered before the new connection listened is dropped"
    );
}
