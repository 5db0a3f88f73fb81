//! Tenant lanes: a tenant's transactions run on the connections of its home lane while
//! they are free, and spill into another lane rather than wait long when they are not.

use std::collections::HashSet;
use std::time::Duration;

use estate::db::tenancy::{CompanyId, TenantTx};
use estate::db::{Db, LANE_SIZE, Layout};

use crate::helpers::{TestApp, config_with, spawn_app};

async fn backend(tx: &mut TenantTx) -> i32 {
    tx.query("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0)
}

/// `company`'s transactions holding every connection of its home lane (free until now),
/// each with the backend it runs on.
async fn hold_home(db: &Db, company: CompanyId) -> Vec<(TenantTx, i32)> {
    let mut held = Vec::new();
    for _ in 0..LANE_SIZE {
        let mut tx = db.tenant_tx(company).await.unwrap();
        let pid = backend(&mut tx).await;
        held.push((tx, pid));
    }
    held
}

/// An app, and a handle on its database laid out as the server's: a pool of 8, so six
/// lanes of one connection.
async fn app_with_lanes() -> (TestApp, Db) {
    let app = spawn_app().await;
    let config = config_with(&app.database.name, &[("DATABASE_POOL_SIZE", "8")]);
    let db = Db::connect_with(&config, Vec::new(), Layout::TenantLanes).unwrap();
    (app, db)
}

/// A company at home in each of `db`'s lanes, registered as `label n`.
async fn company_in_every_lane(
    app: &TestApp,
    db: &Db,
    label: &str,
) -> std::collections::BTreeMap<usize, CompanyId> {
    let mut by_lane = std::collections::BTreeMap::new();
    for n in 0.. {
        if by_lane.len() == db.lane_count() {
            break;
        }
        let c = CompanyId(app.register(&format!("{label} {n}")).await.company_id);
        by_lane.entry(db.home_lane(c).unwrap()).or_insert(c);
    }
    by_lane
}

/// `company`'s next transaction, in a task of its own: answers its backend.
fn spawn_transaction(db: &Db, company: CompanyId) -> tokio::task::JoinHandle<i32> {
    let db = db.clone();
    tokio::spawn(async move {
        let mut tx = db.tenant_tx(company).await.unwrap();
        let pid = backend(&mut tx).await;
        tx.commit().await.unwrap();
        pid
    })
}

#[tokio::test]
async fn a_tenant_stays_in_its_lane_until_the_lane_is_busy() {
    let (app, db) = app_with_lanes().await;
    // Two companies at home in different lanes.
    let first = CompanyId(app.register("Lane one").await.company_id);
    let home = db.home_lane(first).expect("the server layout has lanes");
    let mut other = None;
    for n in 0.. {
        if other.is_some() {
            break;
        }
        let c = CompanyId(app.register(&format!("Lane two {n}")).await.company_id);
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

    assert_eq!(
        db.lane_use().counts(),
        (12, 0),
        "one at a time, all at home"
    );
    assert_eq!(
        db.lane_use().waited(),
        0,
        "a free home lane is taken at once"
    );

    // The home lane fully held: the next transaction is served by another lane, after
    // at most a brief wait at home.
    let held = hold_home(&db, first).await;
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
    assert_eq!(db.lane_use().counts(), (12 + LANE_SIZE as u64, 1));
    assert_eq!(
        db.lane_use().waited(),
        1,
        "no other lane knew the tenant: it waited at home first"
    );
    for (tx, _) in held {
        tx.commit().await.unwrap();
    }
}

/// Every connection of every lane busy: a tenant waits at home only briefly, then takes
/// the first connection any lane frees — here one of another lane's.
#[tokio::test]
async fn with_every_lane_busy_a_tenant_takes_the_first_connection_freed_anywhere() {
    let (app, db) = app_with_lanes().await;
    let by_lane = company_in_every_lane(&app, &db, "Busy lanes").await;
    let waiting_company = by_lane[&0];
    // Hold every lane connection with its own company's transactions.
    let mut held = Vec::new();
    for company in by_lane.values() {
        for (tx, _) in hold_home(&db, *company).await {
            held.push((*company, tx));
        }
    }
    let waiting = spawn_transaction(&db, waiting_company);
    // Free one connection of another lane; the home lane stays busy.
    let index = held
        .iter()
        .position(|(c, _)| *c != waiting_company)
        .unwrap();
    let (_, mut freed) = held.remove(index);
    let freed_pid = backend(&mut freed).await;
    freed.commit().await.unwrap();
    let pid = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served by the freed connection of another lane, not kept waiting at home")
        .unwrap();
    assert_eq!(pid, freed_pid);
    for (_, tx) in held {
        tx.commit().await.unwrap();
    }
}

/// A tenant whose home lane is busy goes at once to a free lane that has served it
/// before, rather than wait at home or meet a backend that does not know it.
#[tokio::test]
async fn a_busy_tenant_returns_to_a_lane_that_has_served_it() {
    let (app, db) = app_with_lanes().await;
    let lanes = db.lane_count();
    assert!(lanes >= 3, "{lanes} lanes");
    // A company at home in some lane, and one at home in the lane after it.
    let mut by_lane = std::collections::BTreeMap::new();
    for n in 0.. {
        let c = CompanyId(app.register(&format!("Returning {n}")).await.company_id);
        let lane = db.home_lane(c).unwrap();
        by_lane.entry(lane).or_insert(c);
        if by_lane.contains_key(&((lane + 1) % lanes))
            || by_lane.contains_key(&((lane + lanes - 1) % lanes))
        {
            break;
        }
    }
    let (&first_lane, _) = by_lane
        .iter()
        .find(|(lane, _)| by_lane.contains_key(&((*lane + 1) % lanes)))
        .unwrap();
    let (tenant, neighbour) = (by_lane[&first_lane], by_lane[&((first_lane + 1) % lanes)]);
    // The tenant's home and the next lane busy: its transaction goes further on.
    let home = hold_home(&db, tenant).await;
    let next = hold_home(&db, neighbour).await;
    let mut away = db.tenant_tx(tenant).await.unwrap();
    let met = backend(&mut away).await;
    away.commit().await.unwrap();
    // The next lane free again, home still busy: back to the lane that served it, not
    // to the first free one.
    for (tx, _) in next {
        tx.commit().await.unwrap();
    }
    let mut again = db.tenant_tx(tenant).await.unwrap();
    assert_eq!(backend(&mut again).await, met);
    again.commit().await.unwrap();
    for (tx, _) in home {
        tx.commit().await.unwrap();
    }
}

/// Every lane busy: a tenant waits for whichever of the lanes that know it comes free
/// first — its home and a lane it spilled into before — and for no other, so that with a
/// few busy tenants (who soon know every lane) no lane idles while they wait at home.
#[tokio::test]
async fn with_every_lane_busy_a_tenant_waits_for_the_lanes_that_know_it() {
    let (app, db) = app_with_lanes().await;
    let lanes = db.lane_count();
    assert!(lanes >= 3, "{lanes} lanes");
    let by_lane = company_in_every_lane(&app, &db, "Known lanes").await;
    let home = 0;
    let tenant = by_lane[&home];
    // The tenant's home busy, every other lane free: it spills into the next lane,
    // which then knows it.
    let held_home = hold_home(&db, tenant).await;
    let mut spilled = db.tenant_tx(tenant).await.unwrap();
    let met_pid = backend(&mut spilled).await;
    spilled.commit().await.unwrap();
    for (tx, _) in held_home {
        tx.commit().await.unwrap();
    }
    // Every lane busy with its own tenants.
    let mut held = Vec::new();
    for (lane, company) in &by_lane {
        for (tx, pid) in hold_home(&db, *company).await {
            held.push((*lane, tx, pid));
        }
    }
    let met = held
        .iter()
        .find(|(_, _, pid)| *pid == met_pid)
        .map(|(lane, _, _)| *lane)
        .expect("the lane that served the spill is held");
    assert_ne!(met, home);
    let waiting = spawn_transaction(&db, tenant);
    tokio::time::timeout(Duration::from_secs(10), async {
        while db.lane_status(met).unwrap().waiting == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the tenant waits for the lane that knows it");
    for lane in (0..lanes).filter(|lane| *lane != home && *lane != met) {
        assert_eq!(
            db.lane_status(lane).unwrap().waiting,
            0,
            "lane {lane} has never served the tenant"
        );
    }
    // That lane frees first: it serves the tenant; home is still busy.
    let index = held.iter().position(|(lane, _, _)| *lane == met).unwrap();
    let (_, freed, _) = held.remove(index);
    freed.commit().await.unwrap();
    let pid = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served by the lane that knows it")
        .unwrap();
    assert_eq!(pid, met_pid);
    for (_, tx, _) in held {
        tx.commit().await.unwrap();
    }
}
