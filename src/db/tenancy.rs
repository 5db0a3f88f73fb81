//! Tenant identity and the tenant-scoped transaction.
//!
//! The invariants this module carries (SPEC §2):
//! - schema and role names are made by the server from a company id, never parsed from a
//!   request, checked against `^[a-z_][a-z0-9_]{0,62}$` and always quoted;
//! - tenant tables are reached only through [`TenantTx`], whose transaction begins with
//!   `SET LOCAL search_path` and `SET LOCAL ROLE` to the tenant's own role,
//!   so a query that names another tenant's schema fails with a permission error;
//! - nothing is ever `SET` at session level on a pooled connection.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::Object;
use futures::{FutureExt, Stream, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, Statement};
use uuid::Uuid;

use super::DbError;

/// A company id. The tenant of a request is derived from it and from nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompanyId(pub Uuid);

impl fmt::Display for CompanyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Checks a PostgreSQL identifier made by this server. Lower-case letters, digits and `_`
/// only, so the quoted form needs no escaping and can never close its own quotes.
fn checked_identifier(name: String) -> Result<String, DbError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(name)
    } else {
        Err(DbError::InvalidIdentifier(name))
    }
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The identifier in double quotes, ready to paste into SQL.
            pub fn quoted(&self) -> String {
                format!("\"{}\"", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A tenant schema name, `t_` + the company id in hex.
    SchemaName
);
identifier!(
    /// A PostgreSQL role name: a tenant's own role, or the tenants' shared group role.
    RoleName
);

impl SchemaName {
    /// Re-checks a name read back from the tenant registry.
    pub fn from_registry(name: String) -> Result<Self, DbError> {
        checked_identifier(name).map(Self)
    }
}

impl RoleName {
    /// Re-checks a name read back from the tenant registry.
    pub fn from_registry(name: String) -> Result<Self, DbError> {
        checked_identifier(name).map(Self)
    }
}

impl SchemaName {
    pub fn for_company(company: CompanyId) -> Self {
        // 34 characters of [a-z0-9_]: valid by construction.
        SchemaName(format!("t_{}", company.0.simple()))
    }
}

/// How this deployment names tenant roles. Roles are cluster-wide while schemas are per
/// database, so role names carry a prefix taken from the database name: two databases on
/// one cluster (tests, staging) never share or collide on tenant roles, and dropping a
/// database's roles is a matter of its prefix.
#[derive(Debug, Clone)]
pub struct TenantNaming {
    role_prefix: String,
    group_role: RoleName,
    login: bool,
}

/// Longest database-derived prefix that still leaves room for `t_` + 32 hex digits.
const MAX_ROLE_PREFIX: usize = 63 - 34 - 1;

impl TenantNaming {
    pub fn for_database(database: &str) -> Result<Self, DbError> {
        let mut prefix: String = database
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if prefix.starts_with(|c: char| c.is_ascii_digit()) {
            prefix.insert(0, 'd');
        }
        if prefix.is_empty() || prefix.len() > MAX_ROLE_PREFIX {
            return Err(DbError::InvalidIdentifier(format!(
                "database name `{database}` must be 1 to {MAX_ROLE_PREFIX} characters: \
                 tenant role names are derived from it"
            )));
        }
        Ok(TenantNaming {
            group_role: RoleName(checked_identifier(format!("{prefix}_tenant"))?),
            role_prefix: checked_identifier(format!("{prefix}_"))?,
            login: false,
        })
    }

    /// Tenant roles with LOGIN (and no password), needed on Citus (SPEC §8).
    pub fn with_login(mut self, login: bool) -> Self {
        self.login = login;
        self
    }

    pub fn tenant_roles_login(&self) -> bool {
        self.login
    }

    /// The group role every tenant role belongs to; it holds the few shared-schema rights
    /// tenant work needs.
    pub fn group_role(&self) -> &RoleName {
        &self.group_role
    }

    /// All tenant role names of this database start with this.
    pub fn role_prefix(&self) -> &str {
        &self.role_prefix
    }

    /// A spare: a tenant built before any company has it (see `db::spares`). Its schema is
    /// `s_` + the spare's id in hex; its role carries this database's prefix like every
    /// tenant role, so it is cleaned up with them. `company` holds the spare's own id until
    /// a registration renames schema and role to its company's names.
    pub fn spare(&self, id: Uuid) -> Tenant {
        let schema = SchemaName(format!("s_{}", id.simple()));
        let role = RoleName(format!("{}{}", self.role_prefix, schema.as_str()));
        Tenant {
            company: CompanyId(id),
            schema,
            role,
        }
    }

    pub fn tenant(&self, company: CompanyId) -> Tenant {
        let schema = SchemaName::for_company(company);
        let role = RoleName(format!("{}{}", self.role_prefix, schema.as_str()));
        Tenant {
            company,
            schema,
            role,
        }
    }
}

/// Where one company's data lives and the role its requests run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub company: CompanyId,
    pub schema: SchemaName,
    pub role: RoleName,
}

impl Tenant {
    /// The statements that open a tenant transaction, sent as one simple-protocol message:
    /// `BEGIN`, the guard if any (with the server's rights), then `search_path` and
    /// `SET LOCAL ROLE`. If any of them fails the block is aborted, so nothing after it can
    /// run outside the tenant's rights.
    ///
    /// Last, generic plans: PostgreSQL would plan a list afresh on every execution (its
    /// `LIMIT $n OFFSET $m` make the generic plan look costlier), and planning was a third
    /// of its work per request. A tenant's tables are small and its statements its own
    /// (see `prepare_for`), so each is planned once per connection and tenant
    /// (BENCHMARKS.md: +30% requests/s over 10 tenants).
    fn prelude(&self, guard: Option<&Guard>) -> String {
        format!(
            "BEGIN; {}SET LOCAL search_path TO {}, public; SET LOCAL ROLE {}; \
             SET LOCAL plan_cache_mode = force_generic_plan",
            guard.map(|g| format!("{}; ", g.sql())).unwrap_or_default(),
            self.schema.quoted(),
            self.role.quoted()
        )
    }
}

/// A check run first in a tenant transaction, with the server's rights, whose first
/// column decides whether the transaction may go on: `ok`, or the reason it may not. Then
/// every statement of the transaction fails with [`DbError::Refused`] and it rolls back.
/// Authentication uses it to check the caller's session in the same round trip as the
/// first query.
///
/// It executes a statement that each pooled connection prepared when it was created (see
/// [`super::Db::connect_with`]), so its plan is cached; a connection without it fails the
/// transaction instead of skipping the check. Its arguments are typed values rendered by
/// this module, never request text.
#[derive(Clone)]
pub struct Guard {
    statement: &'static str,
    args: Vec<GuardArg>,
    /// Called once the guard has answered `ok` (the verdict cache remembers it).
    on_ok: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("statement", &self.statement)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

/// An argument of a guard, rendered as a SQL literal.
#[derive(Debug, Clone)]
pub enum GuardArg {
    Uuid(Uuid),
    /// A name from a closed set in the program, such as a role.
    Name(&'static str),
    /// A name, or NULL.
    OptName(Option<&'static str>),
    Bool(bool),
}

impl Guard {
    /// `statement` is the name of a prepared statement (a program constant).
    pub fn execute(statement: &'static str, args: Vec<GuardArg>) -> Self {
        Guard {
            statement,
            args,
            on_ok: None,
        }
    }

    /// Calls `f` when the guard answers `ok` in a tenant transaction.
    pub fn on_ok(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_ok = Some(f);
        self
    }

    /// The statement with its arguments: what is sent, and what identifies the check.
    pub fn sql(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| match a {
                GuardArg::Uuid(u) => format!("'{u}'"),
                GuardArg::Name(n) | GuardArg::OptName(Some(n)) => {
                    format!("'{}'", n.replace('\'', "''"))
                }
                GuardArg::OptName(None) => "NULL".to_string(),
                GuardArg::Bool(b) => b.to_string(),
            })
            .collect();
        format!("EXECUTE {}({})", self.statement, args.join(", "))
    }

    /// Runs the guard on its own, for work that opens no tenant transaction.
    pub async fn check(&self, client: &tokio_postgres::Client) -> Result<(), DbError> {
        guard_verdict(&client.simple_query(&self.sql()).await?)
    }
}

fn guard_verdict(messages: &[SimpleQueryMessage]) -> Result<(), DbError> {
    let verdict = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    });
    match verdict.flatten().as_deref() {
        Some("ok") => Ok(()),
        other => Err(DbError::Refused(other.unwrap_or("unknown").to_string())),
    }
}

/// The only handle to tenant tables: one transaction, scoped to one tenant's schema and role.
///
/// It owns its pooled connection, so nothing else can use that connection while the
/// transaction is open. Opening costs no round trip: the prelude is pipelined with the
/// first statement. Dropping it without [`TenantTx::commit`] rolls back before the
/// connection goes back to the pool.
pub struct TenantTx {
    conn: Option<Object>,
    tenant: Tenant,
    guard: Option<Guard>,
    state: TxState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    /// Nothing sent yet: the prelude goes out with the first statement.
    NotStarted,
    Open,
    Finished,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl TenantTx {
    pub(super) fn new(conn: Object, tenant: Tenant, guard: Option<Guard>) -> Self {
        TenantTx {
            conn: Some(conn),
            tenant,
            guard,
            state: TxState::NotStarted,
        }
    }

    pub fn company(&self) -> CompanyId {
        self.tenant.company
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Runs a statement, caching its prepared form on the connection. The cache is keyed by
    /// SQL text and is shared by every tenant the connection serves: PostgreSQL re-resolves
    /// a cached plan when `search_path` changes, so each tenant still reads its own tables.
    pub async fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        self.run(sql, |conn, statement| async move {
            conn.query(&statement, params).await
        })
        .await
    }

    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, DbError> {
        self.run(sql, |conn, statement| async move {
            conn.execute(&statement, params).await
        })
        .await
    }

    /// Prepares `sql` (cached) and runs `work` with it, opening the transaction first if
    /// this is its first statement.
    async fn run<'s, T, Fut>(
        &'s mut self,
        sql: &str,
        work: impl FnOnce(&'s Object, Statement) -> Fut,
    ) -> Result<T, DbError>
    where
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let TenantTx {
            conn,
            tenant,
            guard,
            state,
        } = self;
        let conn: &'s Option<Object> = conn;
        let conn = conn.as_ref().ok_or(DbError::Finished)?;
        let work = async {
            let statement = prepare_for(conn, tenant, sql).await?;
            work(conn, statement).await
        };
        pipelined(conn, state, tenant, guard.as_ref(), work).await
    }

    /// Commits. A transaction that never sent a statement has nothing to commit.
    pub async fn commit(mut self) -> Result<(), DbError> {
        if self.state == TxState::Open {
            let conn = self.conn.as_ref().ok_or(DbError::Finished)?;
            conn.batch_execute("COMMIT").await?;
        }
        self.state = TxState::Finished;
        Ok(())
    }
}

/// Prepared statements a pooled connection keeps for tenants of their own, at about 36 KB
/// of backend memory each (BENCHMARKS.md).
const OWN_STATEMENTS_PER_CONNECTION: usize = 500;

/// The prepared form of `sql` for `tenant` on `conn`, cached on the connection.
///
/// PostgreSQL keeps a prepared statement's plan together with the `search_path` it was
/// made under, and plans again when the statement runs under another: one statement
/// shared by every tenant would be re-planned each time its connection changes tenant.
/// So a connection prepares each tenant its own copy — the same text with the schema in
/// a trailing comment — whose generic plan (see [`Tenant::prelude`]) is made once and
/// stays valid for that tenant. Once the connection holds
/// [`OWN_STATEMENTS_PER_CONNECTION`] statements, the rest of its tenants share one copy
/// (correct, only re-planned when the tenant changes), which bounds the memory of a
/// backend serving thousands of tenants. Either copy resolves names through the
/// transaction's `search_path`: the comment names the schema only to tell copies apart.
async fn prepare_for(
    conn: &Object,
    tenant: &Tenant,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if conn.statement_cache.size() < OWN_STATEMENTS_PER_CONNECTION {
        // A schema name is `[a-z0-9_]` only, so the comment cannot end early.
        let own = format!("{sql}\n/* {} */", tenant.schema.as_str());
        conn.prepare_cached(&own).await
    } else {
        conn.prepare_cached(sql).await
    }
}

/// Runs `work` inside the tenant transaction, sending the prelude first if this is the
/// transaction's first statement. Both futures are polled in order, so the prelude is
/// written first and the statement follows it on the wire without waiting for its answer:
/// opening the transaction costs no round trip of its own.
/// The guard's verdict is checked before the statement's result is handed back: a refused
/// transaction returns nothing it read, and rolls back whatever it wrote.
async fn pipelined<T>(
    conn: &Object,
    state: &mut TxState,
    tenant: &Tenant,
    guard: Option<&Guard>,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    match *state {
        TxState::Finished => Err(DbError::Finished),
        TxState::Open => Ok(work.await?),
        TxState::NotStarted => {
            *state = TxState::Open;
            let prelude = tenant.prelude(guard);
            let (opened, result) = tokio::join!(conn.simple_query(&prelude), work);
            let messages = opened?;
            if let Some(guard) = guard {
                guard_verdict(&messages)?;
                if let Some(ok) = &guard.on_ok {
                    ok();
                }
            }
            Ok(result?)
        }
    }
}

impl TenantTx {
    /// Streams the rows of a query, for answers too big to hold (CSV exports). The stream
    /// owns the transaction and commits it after the last row. Rows arrive as the client
    /// takes them: tokio-postgres stops reading the socket while a row waits, so memory
    /// stays bounded whatever the row count.
    pub async fn into_stream(
        mut self,
        sql: &str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + 'static + use<>, DbError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        let rows = self
            .run(sql, |conn, statement| async move {
                conn.query_raw(&statement, refs).await
            })
            .await?;
        let state = (Box::pin(rows), Some(self));
        Ok(futures::stream::unfold(
            state,
            |(mut rows, mut tx)| async move {
                match rows.next().await {
                    Some(row) => Some((row.map_err(DbError::from), (rows, tx))),
                    None => match tx.take()?.commit().await {
                        Ok(()) => None,
                        Err(e) => Some((Err(e), (rows, None))),
                    },
                }
            },
        ))
    }

    /// Ends a transaction that only read, without waiting for the server's answer: the
    /// `COMMIT` is queued on the connection before it returns to the pool, so the next
    /// borrower's statements run after it, and a read-only transaction has nothing that
    /// could fail to commit. Saves a round trip per read request.
    ///
    /// This relies on tokio-postgres writing a request on the first poll of its future (as
    /// its own `Transaction::drop` does for ROLLBACK); a test checks the connection comes
    /// back clean.
    pub fn commit_read_only(mut self) -> Result<(), DbError> {
        if self.state == TxState::Open {
            let conn = self.conn.as_ref().ok_or(DbError::Finished)?;
            // `None` means sent, answer not awaited.
            if let Some(result) = conn.batch_execute("COMMIT").now_or_never() {
                result?;
            }
        }
        self.state = TxState::Finished;
        Ok(())
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        if self.state != TxState::Open {
            return;
        }
        let Some(conn) = self.conn.take() else { return };
        // The connection must not reach the next borrower inside this transaction: roll
        // back first, and if that is impossible, close it instead of returning it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(conn));
                    }
                });
            }
            Err(_) => drop(Object::take(conn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_derived_from_the_company_and_database() {
        let naming = TenantNaming::for_database("estate").unwrap();
        let id = CompanyId(Uuid::parse_str("0190c0de-0000-7000-8000-00000000abcd").unwrap());
        let t = naming.tenant(id);
        assert_eq!(t.schema.as_str(), "t_0190c0de00007000800000000000abcd");
        assert_eq!(t.role.as_str(), "estate_t_0190c0de00007000800000000000abcd");
        assert_eq!(naming.group_role().as_str(), "estate_tenant");
    }

    #[test]
    fn odd_database_names_are_made_safe_or_refused() {
        let n = TenantNaming::for_database("1-Estate.Test").unwrap();
        assert_eq!(n.role_prefix(), "d1_estate_test_");
        assert!(TenantNaming::for_database(&"x".repeat(40)).is_err());
    }

    #[test]
    fn registry_names_are_rechecked() {
        assert!(SchemaName::from_registry("t_abc".into()).is_ok());
        for bad in ["", "T_abc", "t-abc", "t\"; drop", "1abc", &"a".repeat(64)] {
            assert!(SchemaName::from_registry(bad.to_string()).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn every_company_id_gives_a_valid_distinct_schema(a in any::<u128>(), b in any::<u128>()) {
            let naming = TenantNaming::for_database("estate_test_0123456789ab").unwrap();
            let ta = naming.tenant(CompanyId(Uuid::from_u128(a)));
            let tb = naming.tenant(CompanyId(Uuid::from_u128(b)));
            prop_assert!(checked_identifier(ta.schema.as_str().to_string()).is_ok());
            prop_assert!(checked_identifier(ta.role.as_str().to_string()).is_ok());
            prop_assert_eq!(a == b, ta.schema == tb.schema);
            prop_assert_eq!(a == b, ta.role == tb.role);
        }
    }
}
