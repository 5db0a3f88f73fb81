//! PostgreSQL access: the connection pool, the shared-schema handle, and (in [`tenancy`])
//! the only handle that reaches tenant tables.

pub mod citus;
pub mod migrations;
pub mod provisioning;
pub mod tenancy;

use std::sync::Arc;

use deadpool_postgres::{
    HookError, Manager, ManagerConfig, Object, Pool, PoolConfig, RecyclingMethod, Runtime,
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

/// The pool plus the naming rules for tenant schemas and roles.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    naming: TenantNaming,
}

impl Db {
    pub fn connect(config: &Config) -> Result<Self, DbError> {
        Self::connect_with(config, Vec::new())
    }

    /// Like [`Db::connect`], and every new connection first runs `setup`: statements that
    /// create session-lifetime objects the server relies on, such as the prepared
    /// statement of a [`Guard`]. Never settings: those are transaction-local.
    pub fn connect_with(config: &Config, setup: Vec<String>) -> Result<Self, DbError> {
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
        let setup: Arc<[String]> = setup.into();
        let pool = Pool::builder(manager)
            .config(PoolConfig::new(config.database_pool_size))
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
            .map_err(|e| DbError::PoolBuild(e.to_string()))?;
        Ok(Db {
            pool,
            naming: config.tenancy.clone(),
        })
    }

    pub fn naming(&self) -> &TenantNaming {
        &self.naming
    }

    /// A connection for work on the shared schema (companies, users, tokens, registry).
    /// Tenant tables are not on its search path; use [`Db::tenant_tx`] for those.
    pub async fn shared(&self) -> Result<Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// Opens the tenant-scoped transaction for a company. No round trip happens here: the
    /// `BEGIN`, `search_path` and `ROLE` settings travel with the first statement.
    pub async fn tenant_tx(&self, company: CompanyId) -> Result<TenantTx, DbError> {
        let tenant = self.naming.tenant(company);
        Ok(TenantTx::new(self.pool.get().await?, tenant, None))
    }

    /// A tenant transaction that goes on only if `guard` answers `ok` (see [`Guard`]).
    pub async fn guarded_tenant_tx(
        &self,
        company: CompanyId,
        guard: Guard,
    ) -> Result<TenantTx, DbError> {
        let tenant = self.naming.tenant(company);
        Ok(TenantTx::new(self.pool.get().await?, tenant, Some(guard)))
    }

    /// The pool itself, for the job worker (which works on the shared schema only).
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}
