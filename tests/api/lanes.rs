//! Tenant lanes: a tenant's transactions run on the connections of its home lane while
//! they are free, and spill into another lane rather than wait when they are not.

use std::collections::HashSet;
use std::time::Duration;

use estate::db::tenancy::{CompanyId, TenantTx};
use estate::db::{Db, LANE_SIZE, Layout};

use crate::helpers::{config_with, spawn_app};

async fn backend(tx: &mut TenantTx) -> i32 {
    tx.query("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0)
}

#[tokio::test]
async fn a_tenant_stays_in_its_lane_until_the_lane_is_busy() {
    let app = spawn_app().await;
    let config = config_with(&app.database.name, &[("DATABASE_POOL_SIZE", "8")]);
    let db = Db::connect_with(&config, Vec::new(), Layout::TenantLanes).unwrap();
    // Two companies at home in different lanes.
    let first = CompanyId(app.register("Lane one").await.company_id);
    let home = db.home_lane(first).expect("the server layout has lanes");
    let mut other = None;
    while other.is_none() {
        let c = CompanyId(app.register("Lane two").await.company_id);
        if db.home_lane(c) != Some(home) {
            other = Some(c);
        }
    }
    let other = other.unwrap();

    // One after another, each company's transactions land on its own lane's backends.
    let seen = |company| {
        let db = db.clone();
        async move {
            let mut pids = HashSet::new();
            for _ in 0..6 {
                let mut tx = db.tenant_tx(company).await.unwrap();
                pids.insert(backend(&mut tx).await);
                tx.commit().await.unwrap();
            }
            pids
        }
    };
    let first_pids = seen(first).await;
    let other_pids = seen(other).await;
    assert!(first_pids.len() <= LANE_SIZE, "{first_pids:?}");
    assert!(
        first_pids.is_disjoint(&other_pids),
        "{first_pids:?} {other_pids:?}"
    );

    // The home lane fully held: the next transaction is served by another lane at once.
    let mut held = Vec::new();
    for _ in 0..LANE_SIZE {
        let mut tx = db.tenant_tx(first).await.unwrap();
        let pid = backend(&mut tx).await;
        held.push((tx, pid));
    }
    let mut spilled = tokio::time::timeout(Duration::from_secs(10), db.tenant_tx(first))
        .await
        .expect("a free connection of another lane, not a wait for the home lane")
        .unwrap();
    let pid = backend(&mut spilled).await;
    assert!(held.iter().all(|(_, p)| *p != pid));
    // Still this tenant's transaction, whichever lane it runs on.
    let schema: String = spilled.query("SELECT current_schema()", &[]).await.unwrap()[0].get(0);
    assert_eq!(schema, db.naming().tenant(first).schema.as_str());
    spilled.commit().await.unwrap();
    for (tx, _) in held {
        tx.commit().await.unwrap();
    }
}
