//! `buktor`: the server and its administration commands.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use buktor::app::{Scheduler, SystemClock};
use buktor::auth::generate_api_key;
use buktor::config::Config;
use buktor::http::{AppState, Application};
use buktor::metrics::Metrics;
use buktor::{demo, store, telemetry};
use buktor_domain::{Role, TenantId};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "buktor",
    version,
    about = "Appointment scheduling for hospitals"
)]
struct Cli {
    /// A TOML configuration file (default: ./buktor.toml if present).
    #[arg(long, global = true, env = "BUKTOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// Seed the demo hospital even on PostgreSQL (the embedded store seeds it when empty).
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Manage hospitals.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a hospital; prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// IANA time zone, e.g. Europe/Amsterdam.
        #[arg(long)]
        time_zone: chrono_tz::Tz,
    },
    /// List hospitals.
    List,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create an API key; prints it once (only a hash is stored).
    Create {
        #[arg(long)]
        tenant: TenantId,
        /// admin, staff, his-system or auditor.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(
        cli.command.unwrap_or(Command::Serve { demo: false }),
        config,
    ))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            store::open(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant { command } => {
            let scheduler = scheduler(&config).await?;
            match command {
                TenantCommand::Create { name, time_zone } => {
                    let t = demo::create_tenant(&scheduler, &name, time_zone).await?;
                    println!("{}", t.id);
                }
                TenantCommand::List => {
                    for t in scheduler.store().tenants().await? {
                        println!("{}\t{}\t{}", t.id, t.time_zone.name(), t.name);
                    }
                }
            }
            Ok(())
        }
        Command::ApiKey {
            command: ApiKeyCommand::Create { tenant, role, name },
        } => {
            let store = store::open(&config).await?;
            if store.tenant(tenant).await?.is_none() {
                anyhow::bail!("no tenant {tenant}");
            }
            let key = generate_api_key(tenant, role, &name);
            store.create_api_key(&key.record).await?;
            println!("{}", key.token);
            Ok(())
        }
        Command::Serve { demo } => serve(config, demo).await,
    }
}

async fn scheduler(config: &Config) -> anyhow::Result<Scheduler> {
    let store = store::open(config).await?;
    Ok(Scheduler::new(
        store,
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
    ))
}

async fn serve(config: Config, demo_requested: bool) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting");
    let store = store::open(&config).await?;
    let state = Arc::new(AppState::new(&config, store.clone()));
    let seed = if store::is_embedded(&config) || demo_requested {
        let tenants = store.tenants().await?;
        if tenants.iter().any(|t| t.name == demo::DEMO_TENANT_NAME)
            || (!demo_requested && !tenants.is_empty())
        {
            None
        } else {
            Some(demo::seed(&state.scheduler).await?)
        }
    } else {
        None
    };
    let app = Application::build(&config, state).context("cannot bind the listen address")?;
    let url = format!("http://{}", app.addr);
    // Tests and scripts read this line to find the port.
    println!("Buktor listening on {url}");
    match seed {
        Some(s) => {
            println!(
                "Seeded the demo hospital {:?} ({}).",
                s.tenant.name, s.tenant.id
            );
            println!("Admin API key (shown only now): {}", s.admin_key);
            println!("GraphiQL: {url}/graphql  (send the header  Authorization: Bearer <key>)");
        }
        None => println!("GraphiQL: {url}/graphql"),
    }
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
