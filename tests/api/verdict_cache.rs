//! The session-verdict cache: a read skips the check for a moment after it answered
//! `ok`; a write request through the process drops every entry; a change made outside
//! the process (here, straight in the database) is refused within a second.

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
