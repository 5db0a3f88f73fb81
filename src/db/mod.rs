//! PostgreSQL access: the connection pool, the shared-schema handle, and (in [`tenancy`])
//! the only handle that reaches tenant tables.

pub mod citus;
pub mod migrations;
pub mod provisioning;
pub mod spares;
pub mod tenancy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    HookError, Manager, ManagerConfig, Object, Pool, PoolConfig, PoolError, RecyclingMethod,
    Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use crate::config::Config;
use tenancy::{CompanyId, Guard, TenantNaming, TenantTx};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
    #[error("invalid identifier: {0}")]
    InvalidIdentifier(String),
    #[error("database pool: {0}")]
    PoolBuild(String),
    /// A transaction's guard refused it; the text is the guard's reason.
    #[error("refused: {0}")]
    Refused(String),
    #[error("the transaction is already finished")]
    Finished,
    /// The database does not hold what the program relies on (e.g. a seeded table).
    #[error("{0}")]
    Invariant(String),
}

impl DbError {
    /// The SQLSTATE of a server-side error, when there is one.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            DbError::Postgres(e) => e.code(),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }

    /// Name of the violated constraint, for mapping unique violations to conflicts.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Postgres(e) => e.as_db_error().and_then(|d| d.constraint()),
            _ => None,
        }
    }
}

/// How a process lays out its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One pool for everything (workers, commands, tests of the shared schema).
    Shared,
    /// The API server's: a quarter of the connections for shared-schema work, the rest in
    /// lanes of [`LANE_SIZE`], each tenant at home in one lane (see [`Db::tenant_tx`]).
    TenantLanes,
}

/// Connections per lane: a tenant's requests run on its lane's one connection and spill
/// into other lanes when it stays busy. One rather than two halves the tenants each backend
/// meets (its catalog caches and per-tenant statements); measured in BENCHMARKS.md.
pub const LANE_SIZE: usize = 1;

/// How long a tenant transaction first waits for its home lane, or whichever lane that
/// has served the tenant before frees first, when all of them are busy, before it takes a
/// free connection of any other lane. A busy lane is usually one short transaction from free, and a backend
/// that has not served the tenant yet answers about three times slower; waiting 2 ms took
/// the share of transactions served away from home at 1,000 requests/s from 1.4–3.3% to
/// 0.0–0.7% (BENCHMARKS.md).
pub const HOME_FIRST_WAIT: Duration = Duration::from_millis(2);

/// How long a tenant transaction waits for its home lane, or whichever lane that has
/// served the tenant before frees first, when every connection is busy, before it takes
/// the first connection of any lane.
pub const HOME_WAIT: Duration = Duration::from_millis(25);

/// The pools plus the naming rules for tenant schemas and roles.
///
/// Why lanes: a PostgreSQL backend caches the catalog entries (schema, tables, indexes)
/// of every tenant it has served and never lets them go; with every connection serving
/// every tenant, at 10,000 tenants each backend held over a gigabyte and most requests
/// met a connection that had not seen their tenant yet (BENCHMARKS.md). A tenant's
/// transactions go to its home lane first, so each backend sees about one lane's share
/// of the tenants. A busy lane makes a tenant wait at most [`HOME_FIRST_WAIT`] while
/// another lane has a free connection, and not at all when that lane has served it.
#[derive(Clone)]
pub struct Db {
    shared: Pool,
    lanes: Arc<[Pool]>,
    naming: TenantNaming,
    lane_use: Arc<LaneUse>,
    met_away: Arc<MetAway>,
}

/// Where tenant transactions found their connections, since the process started. A
/// transaction away from its home lane may meet a backend that has not served its tenant
/// yet and first loads the tenant's catalog entries (BENCHMARKS.md): the share away is
/// the figure to watch when tuning [`HOME_FIRST_WAIT`] and the pool size.
///
/// Also counted: transactions that found neither their home lane nor any lane that had
/// served them free, and so waited (up to [`HOME_FIRST_WAIT`]) before spilling. Over many
/// tenants a tenant knows few lanes, so this is where a busy lane shows in the tail.
#[derive(Debug, Default)]
pub struct LaneUse {
    home: AtomicU64,
    away: AtomicU64,
    waited: AtomicU64,
}

impl LaneUse {
    /// (at home, away) counts so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.home.load(Ordering::Relaxed),
            self.away.load(Ordering::Relaxed),
        )
    }

    /// Transactions that waited for a busy lane that knew their tenant, so far.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    fn record(&self, lane: usize, home: usize) {
        let counter = if lane == home { &self.home } else { &self.away };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which lanes other than its home have served each tenant: a busy home lane sends a
/// tenant at once to a free lane whose backend has met it, and makes it wait briefly
/// rather than meet a new one. A hint only: a lane's connection may have been replaced
/// since. It grows only with spills, to at most every tenant in every lane.
#[derive(Debug, Default)]
struct MetAway(std::sync::Mutex<std::collections::HashSet<(CompanyId, usize)>>);

impl MetAway {
    /// The lanes among `lanes` that have served `company`, in that order.
    fn lanes_met(&self, company: CompanyId, lanes: impl Iterator<Item = usize>) -> Vec<usize> {
        let met = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .filter(|lane| met.contains(&(company, *lane)))
            .collect()
    }

    fn meet(&self, company: CompanyId, lane: usize) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((company, lane));
    }
}

impl Db {
    pub fn connect(config: &Config) -> Result<Self, DbError> {
        Self::connect_with(config, Vec::new(), Layout::Shared)
    }

    /// Like [`Db::connect`], laid out as `layout` says, and every new connection first
    /// runs `setup`: statements that create session-lifetime objects the server relies on,
    /// such as the prepared statement of a [`Guard`]. Never settings: those are
    /// transaction-local.
    pub fn connect_with(
        config: &Config,
        setup: Vec<String>,
        layout: Layout,
    ) -> Result<Self, DbError> {
        let setup: Arc<[String]> = setup.into();
        let size = config.database_pool_size;
        let lanes = match layout {
            Layout::Shared => 0,
            Layout::TenantLanes => (size - size / 4) / LANE_SIZE,
        };
        let shared_size = size - lanes * LANE_SIZE;
        Ok(Db {
            shared: build_pool(config, shared_size, setup.clone())?,
            lanes: (0..lanes)
                .map(|_| build_pool(config, LANE_SIZE, setup.clone()))
                .collect::<Result<_, _>>()?,
            naming: config.tenancy.clone(),
            lane_use: Arc::default(),
            met_away: Arc::default(),
        })
    }

    pub fn naming(&self) -> &TenantNaming {
        &self.naming
    }

    /// A connection for work on the shared schema (companies, users, tokens, registry).
    /// Tenant tables are not on its search path; use [`Db::tenant_tx`] for those.
    pub async fn shared(&self) -> Result<Object, DbError> {
        Ok(self.shared.get().await?)
    }

    /// A connection for `company`'s tenant work: a free one of its home lane, else a free
    /// one of a lane that has served it before, else the first of those lanes (home
    /// included) to come free within [`HOME_FIRST_WAIT`], else a free one of any lane,
    /// else the first of those lanes within [`HOME_WAIT`], else the next of any lane. A
    /// backend that has not met the tenant answers about three times slower, and a busy
    /// lane is usually one short transaction from free: so a lightly loaded server keeps
    /// its tenants on backends that know them, waiting for them keeps a saturated server's
    /// backends on their own tenants, and the bound keeps a lane that holds more busy
    /// tenants than the others from making them wait long. Waiting for every lane that
    /// knows the tenant rather than its home alone matters when a few tenants are busy:
    /// they soon have met every lane, and a lane that frees up then serves whoever waits
    /// first instead of idling while its home tenants are served (BENCHMARKS.md).
    async fn tenant_connection(&self, company: CompanyId) -> Result<Object, DbError> {
        if self.lanes.is_empty() {
            return self.shared().await;
        }
        let lanes = self.lanes.len();
        let home = lane_of(company, lanes);
        let others = || (1..lanes).map(move |i| (home + i) % lanes);
        if let Some(conn) = self
            .lane_within(company, home, home, Duration::ZERO)
            .await?
        {
            return Ok(conn);
        }
        let met = self.met_away.lanes_met(company, others());
        for &lane in &met {
            if let Some(conn) = self
                .lane_within(company, lane, home, Duration::ZERO)
                .await?
            {
                return Ok(conn);
            }
        }
        let known: Vec<usize> = std::iter::once(home).chain(met).collect();
        self.lane_use.waited.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = self
            .first_within(company, &known, home, HOME_FIRST_WAIT)
            .await?
        {
            return Ok(conn);
        }
        for lane in others() {
            if let Some(conn) = self
                .lane_within(company, lane, home, Duration::ZERO)
                .await?
            {
                return Ok(conn);
            }
        }
        if let Some(conn) = self.first_within(company, &known, home, HOME_WAIT).await? {
            return Ok(conn);
        }
        let all: Vec<usize> = (0..lanes).collect();
        self.first_of(company, &all, home).await
    }

    /// A connection of whichever of `lanes` comes free first within `wait`, for
    /// `company` (at home in `home`).
    async fn first_within(
        &self,
        company: CompanyId,
        lanes: &[usize],
        home: usize,
        wait: Duration,
    ) -> Result<Option<Object>, DbError> {
        match lanes {
            [lane] => self.lane_within(company, *lane, home, wait).await,
            _ => match tokio::time::timeout(wait, self.first_of(company, lanes, home)).await {
                Ok(conn) => conn.map(Some),
                Err(_) => Ok(None),
            },
        }
    }

    /// A connection of whichever of `lanes` comes free first. The waits that lose are
    /// dropped; deadpool's waits are cancel-safe, so none of them keeps a connection.
    async fn first_of(
        &self,
        company: CompanyId,
        lanes: &[usize],
        home: usize,
    ) -> Result<Object, DbError> {
        let gets = lanes
            .iter()
            .map(|&lane| Box::pin(async move { (lane, self.lanes[lane].get().await) }));
        let ((lane, got), _, _) = futures::future::select_all(gets).await;
        let conn = got?;
        self.took(company, lane, home);
        Ok(conn)
    }

    /// A connection of `lane` for `company` (at home in `home`) if one comes free within
    /// `wait`.
    async fn lane_within(
        &self,
        company: CompanyId,
        lane: usize,
        home: usize,
        wait: Duration,
    ) -> Result<Option<Object>, DbError> {
        let timeouts = Timeouts {
            wait: Some(wait),
            ..Timeouts::default()
        };
        match self.lanes[lane].timeout_get(&timeouts).await {
            Ok(conn) => {
                self.took(company, lane, home);
                Ok(Some(conn))
            }
            Err(PoolError::Timeout(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts where `company`'s transaction runs, and remembers a lane away from home
    /// that has now served it.
    fn took(&self, company: CompanyId, lane: usize, home: usize) {
        self.lane_use.record(lane, home);
        if lane != home {
            self.met_away.meet(company, lane);
        }
    }

    /// Where this process's tenant transactions found their connections.
    pub fn lane_use(&self) -> &LaneUse {
        &self.lane_use
    }

    /// How many lanes this process has (none when laid out [`Layout::Shared`]).
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// One lane's pool status (how many wait for it, among others), when it exists.
    pub fn lane_status(&self, lane: usize) -> Option<deadpool_postgres::Status> {
        self.lanes.get(lane).map(Pool::status)
    }

    /// The lane `company` is at home in, when this process has lanes.
    pub fn home_lane(&self, company: CompanyId) -> Option<usize> {
        (!self.lanes.is_empty()).then(|| lane_of(company, self.lanes.len()))
    }

    /// Opens the tenant-scoped transaction for a company. No round trip happens here: the
    /// `BEGIN`, `search_path` and `ROLE` settings travel with the first statement.
    pub async fn tenant_tx(&self, company: CompanyId) -> Result<TenantTx, DbError> {
        let tenant = self.naming.tenant(company);
        Ok(TenantTx::new(
            self.tenant_connection(company).await?,
            tenant,
            None,
        ))
    }

    /// A tenant transaction that goes on only if `guard` answers `ok` (see [`Guard`]).
    pub async fn guarded_tenant_tx(
        &self,
        company: CompanyId,
        guard: Guard,
    ) -> Result<TenantTx, DbError> {
        let tenant = self.naming.tenant(company);
        Ok(TenantTx::new(
            self.tenant_connection(company).await?,
            tenant,
            Some(guard),
        ))
    }

    /// The shared pool itself, for the job worker (which works on the shared schema only
    /// and is laid out [`Layout::Shared`], so this is all its connections).
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.shared
    }

    /// Every pool's status, added up.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        let mut total = self.shared.status();
        for lane in self.lanes.iter() {
            let s = lane.status();
            total.max_size += s.max_size;
            total.size += s.size;
            total.available += s.available;
            total.waiting += s.waiting;
        }
        total
    }
}

/// The home lane of `company` among `lanes`. Company ids are UUIDv7: the low bits are
/// random, so tenants spread evenly.
fn lane_of(company: CompanyId, lanes: usize) -> usize {
    (company.0.as_u128() % lanes as u128) as usize
}

fn build_pool(config: &Config, size: usize, setup: Arc<[String]>) -> Result<Pool, DbError> {
    let pg: tokio_postgres::Config = config
        .database_url
        .expose()
        .parse()
        .map_err(DbError::Postgres)?;
    // Fast recycling is safe only because nothing ever sets session state on a pooled
    // connection: tenant settings are transaction-local (see `tenancy`).
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .config(PoolConfig::new(size.max(1)))
        .runtime(Runtime::Tokio1)
        .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            let setup = setup.clone();
            Box::pin(async move {
                for sql in setup.iter() {
                    client
                        .batch_execute(sql)
                        .await
                        .map_err(HookError::Backend)?;
                }
                Ok(())
            })
        }))
        .build()
        .map_err(|e| DbError::PoolBuild(e.to_string()))
}
