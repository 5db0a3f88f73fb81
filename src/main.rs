//! The `estate` command: API server, migrations, operator views, OpenAPI document.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use estate::config::Config;
use estate::db::migrations::TenantMigrations;
use estate::startup::{self, Application};
use estate::{api, db::Db, telemetry, tenants};

/// mimalloc: the request path allocates many small objects (JSON, rows); the system
/// allocator spent ~13% of the machine's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's own API (`void mi_collect(bool force)`, mimalloc.h), in the allocator
    /// linked above; callable at any time from any thread.
    safe fn mi_collect(force: bool);
}

/// Hands back to the system what mimalloc freed on this thread. mimalloc returns freed
/// memory only after a delay, checked when the thread next allocates; a password hashing
/// thread that goes idle after a hash would otherwise keep its 19 MiB (see
/// `auth::password`).
fn release_freed_memory() {
    mi_collect(true);
}

#[derive(Parser)]
#[command(
    name = "estate",
    version,
    about = "Multi-tenant real-estate SaaS backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply shared migrations, then tenant migrations to every tenant schema.
    Migrate {
        /// Tenant schemas migrated at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Run the HTTP API.
    Serve {
        /// Run `migrate` before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Run the background job worker and the outbox relay (until SIGTERM).
    Worker,
    /// Operator views of background jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Print the OpenAPI 3 document.
    Openapi,
    /// Operator views of tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs that kept failing, with their last error.
    Dead,
    /// Hand a dead job back to the queue.
    Retry { id: uuid::Uuid },
    /// Queue a sync of a company's subscription with Stripe (also run daily for all).
    SyncBilling { company: uuid::Uuid },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// List tenants with their schema version and last migration status.
    List,
    /// Migrate tenant schemas that are behind (resumable; failures are listed).
    Migrate {
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for every client (Stripe, SMTP, Sentry), chosen before any
    // of them starts: ring, which the others already use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    estate::auth::password::after_each_hash(release_freed_memory);
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let _sentry = telemetry::init_sentry(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", estate::error::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::Openapi => unreachable!("handled before configuration is read"),
        Command::Migrate { concurrency } => migrate(&config, concurrency).await,
        Command::Serve {
            migrate: run_migrations,
        } => {
            if run_migrations && migrate(&config, 8).await? != ExitCode::SUCCESS {
                return Ok(ExitCode::FAILURE);
            }
            let app = Application::build(&config).await?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker => {
            estate::worker::run(&config, startup::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            command: JobsCommand::Dead,
        } => {
            let db = Db::connect(&config)?;
            let dead = estate_jobs::dead::list(&db.shared().await?).await?;
            println!(
                "{:<36}  {:<36}  {:<30}  {:>8}  {:<20}  last error",
                "id", "company", "job", "attempts", "died"
            );
            for d in &dead {
                println!(
                    "{:<36}  {:<36}  {:<30}  {:>8}  {:<20}  {}",
                    d.id,
                    d.company_id,
                    d.job,
                    d.attempts,
                    d.died_at.format("%Y-%m-%d %H:%M:%S"),
                    d.last_error
                );
            }
            println!("{} dead jobs", dead.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            command: JobsCommand::Retry { id },
        } => {
            let db = Db::connect(&config)?;
            estate_jobs::dead::retry(&mut db.shared().await?, id).await?;
            println!("job {id} handed back to the queue");
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            command: JobsCommand::SyncBilling { company },
        } => {
            let db = Db::connect(&config)?;
            let key = estate_jobs::billing::request(&db.shared().await?, company).await?;
            println!("billing sync of {company} queued ({key})");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenants {
            command: TenantsCommand::List,
        } => {
            let db = Db::connect(&config)?;
            let records = tenants::list(&db).await?;
            println!(
                "{:<36}  {:<32}  {:<9}  {:>7}  {:<7}  schema",
                "company", "name", "status", "version", "migr."
            );
            for t in &records {
                println!(
                    "{:<36}  {:<32}  {:<9}  {:>7}  {:<7}  {}{}",
                    t.company_id,
                    t.company_name.chars().take(32).collect::<String>(),
                    t.status,
                    t.schema_version,
                    t.migration_status,
                    t.schema_name,
                    t.migration_error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                );
            }
            println!("{} tenants", records.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenants {
            command: TenantsCommand::Migrate { concurrency },
        } => {
            let db = Db::connect(&config)?;
            let outcome =
                tenants::migrate_all(&db, &TenantMigrations::embedded(), concurrency, true).await?;
            Ok(report(&outcome))
        }
    }
}

async fn migrate(
    config: &Config,
    concurrency: usize,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let outcome = startup::migrate(config, concurrency, true).await?;
    Ok(report(&outcome))
}

fn report(outcome: &tenants::MigrationOutcome) -> ExitCode {
    println!(
        "tenants: {} total, {} up to date, {} migrated, {} failed",
        outcome.total,
        outcome.up_to_date,
        outcome.migrated,
        outcome.failed.len()
    );
    for (company, error) in &outcome.failed {
        println!("  failed: {company}: {error}");
    }
    if outcome.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
