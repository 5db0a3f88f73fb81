//! Test harness: each test gets its own database, cloned from a migrated template, and a
//! server on a random port. Dropping the [`TestApp`] drops the database and the tenant
//! roles it created (roles are cluster-wide and named after the database).

use std::collections::HashMap;
use std::sync::Arc;

use estate::api::ApiState;
use estate::config::Config;
use estate::db::migrations::migrate_shared;
use estate::startup::Application;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The secret the test servers sign with, so tests can forge tokens deliberately.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery";

/// Server URL without a database name; `TEST_PG_URL` overrides it.
pub fn pg_base() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub async fn admin_client(database: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("{}/{database}", pg_base()), tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL (is it running? scripts/test starts it)");
    tokio::spawn(conn);
    client
}

/// The template's name carries a hash of the shared migrations, so it is reused across
/// runs until a migration changes, and a stale one is replaced.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shared_migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shared_migrations/")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.file_name().hash(&mut hasher);
        std::fs::read(&f).expect("read migration").hash(&mut hasher);
    }
    format!("estate_tpl_{:08x}", hasher.finish() as u32)
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let admin = admin_client("postgres").await;
            // Serialize template creation across concurrent test processes.
            admin
                .execute("SELECT pg_advisory_lock(724411)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                for stale in admin
                    .query(
                        "SELECT datname FROM pg_database WHERE datname LIKE 'estate\\_tpl\\_%'",
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    let stale: String = stale.get(0);
                    admin
                        .batch_execute(&format!("DROP DATABASE \"{stale}\" WITH (FORCE)"))
                        .await
                        .unwrap();
                }
                let building = format!("{name}_new");
                admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
                    ))
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{building}\""))
                    .await
                    .unwrap();
                let config = test_config(&building);
                migrate_shared(config.database_url.expose(), config.tenancy.group_role())
                    .await
                    .expect("shared migrations apply to the template");
                // The template's own group role goes: each clone makes its own.
                let group = config.tenancy.group_role().quoted();
                admin_client(&building)
                    .await
                    .batch_execute(&format!("DROP OWNED BY {group}"))
                    .await
                    .unwrap();
                admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        &[&building],
                    )
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!(
                        "DROP ROLE {group}; ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
                    ))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(724411)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

pub fn test_config(database: &str) -> Config {
    config_with(database, &[])
}

/// The test configuration with some variables set otherwise.
pub fn config_with(database: &str, overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", format!("{}/{database}", pg_base())),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("JWT_SECRET", JWT_SECRET.into()),
        ("DATABASE_POOL_SIZE", "8".into()),
        // Tests of the limits turn them on; every other test registers and logs in from
        // one address far more often than the anonymous quota allows.
        ("RATE_LIMITS", "off".into()),
        // Tests of spare tenants turn them on; elsewhere a keeper building schemas in the
        // background would change the roles and schemas tests count.
        ("TENANT_SPARES", "0".into()),
        (
            "REDIS_URL",
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_vars(&vars).expect("test configuration")
}

/// A fresh, migrated database of its own; dropped with its roles when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub config: Config,
}

fn new_database_name() -> String {
    format!("estate_t_{}", &Uuid::new_v4().simple().to_string()[..12])
}

impl TestDatabase {
    /// A database with nothing in it, not even the shared migrations.
    pub async fn empty() -> Self {
        let name = new_database_name();
        let admin = admin_client("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a database");
        let config = test_config(&name);
        TestDatabase { name, config }
    }

    pub async fn new() -> Self {
        let template = template().await;
        let name = new_database_name();
        let admin = admin_client("postgres").await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
            .expect("clone the template database");
        let config = test_config(&name);
        // Creates this database's group role (role names are per database).
        migrate_shared(config.database_url.expose(), config.tenancy.group_role())
            .await
            .expect("shared migrations");
        TestDatabase { name, config }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.name).await
    }

    /// Tenant roles (and the group role) of this database that exist in the cluster.
    pub async fn roles(&self) -> Vec<String> {
        let admin = admin_client("postgres").await;
        admin
            .query(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
                &[&self.config.tenancy.role_prefix()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let prefix = self.config.tenancy.role_prefix().to_string();
        // Drop may run while the test's runtime is unwinding: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let admin = admin_client("postgres").await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .unwrap();
                let roles = admin
                    .query(
                        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
                        &[&prefix],
                    )
                    .await
                    .unwrap();
                for role in roles {
                    let role: String = role.get(0);
                    admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                        .await
                        .unwrap();
                }
            })
        });
        let _ = cleanup.join();
    }
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub state: Arc<ApiState>,
    // Declared last: dropped after the server's handles above.
    pub database: TestDatabase,
}

/// A registered company and its owner's tokens.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub company_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// An app whose configuration differs from the tests' usual one by `overrides`.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let mut database = TestDatabase::new().await;
    database.config = config_with(&database.name, overrides);
    let (address, state) = serve(&database.config).await;
    TestApp {
        address,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        database,
    }
}

/// Starts a server process (in this test process) on `config`; answers its base URL.
pub async fn serve(config: &Config) -> (String, Arc<ApiState>) {
    let app = Application::build(config)
        .await
        .expect("build the application");
    let address = format!("http://{}", app.local_addr());
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    (address, state)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request reaches the server")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Registers a company on the enterprise tier, so tests of the API itself meet no
    /// plan gates; tests of the tiers use [`TestApp::register_on`].
    pub async fn register(&self, company_name: &str) -> Tenant {
        self.register_on(company_name, "enterprise").await
    }

    /// Registers a company (which starts on starter) and moves it to `tier` directly in
    /// the database.
    pub async fn register_on(&self, company_name: &str, tier: &str) -> Tenant {
        let tenant = self.register_starter(company_name).await;
        if tier != "starter" {
            self.set_tier(tenant.company_id, tier).await;
        }
        tenant
    }

    pub async fn set_tier(&self, company: Uuid, tier: &str) {
        let client = self.database.client().await;
        let changed = client
            .execute(
                "UPDATE companies SET tier = $2 WHERE id = $1",
                &[&company, &tier],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }

    async fn register_starter(&self, company_name: &str) -> Tenant {
        let email = format!("owner-{}@example.com", Uuid::new_v4().simple());
        let resp = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"company_name": company_name, "email": email, "password": PASSWORD, "full_name": "Owner"}),
            )
            .await;
        assert_eq!(resp.status(), 201, "registration of {company_name}");
        let body: Value = resp.json().await.unwrap();
        Tenant {
            company_id: body["company"]["id"].as_str().unwrap().parse().unwrap(),
            user_id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            access_token: body["access_token"].as_str().unwrap().to_string(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn create_estate(&self, token: &str, body: Value) -> Value {
        let resp = self.post("/api/v1/estates", Some(token), body).await;
        let status = resp.status();
        if status != 201 {
            panic!(
                "creating an estate: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        resp.json().await.unwrap()
    }

    /// Estates in a company's schema, counted directly (not through the API).
    pub async fn estate_count(&self, company: Uuid) -> i64 {
        let schema =
            estate::db::tenancy::SchemaName::for_company(estate::db::tenancy::CompanyId(company));
        let client = self.database.client().await;
        client
            .query_one(
                &format!("SELECT count(*) FROM {}.estates", schema.quoted()),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Reads a problem+json answer, checking its content type and status field.
pub async fn problem(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}
