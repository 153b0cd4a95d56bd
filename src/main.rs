//! `buktor`: the server and its administration commands.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use buktor::app::{Scheduler, SystemClock};
use buktor::auth::generate_api_key;
use buktor::config::Config;
use buktor::http::{AppState, Application};
use buktor::metrics::Metrics;
use buktor::store::access::RevokedBy;
use buktor::{audit, demo, store, telemetry};
use buktor_domain::values::{Name, ShortText};
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
    /// The encryption keys of stored secrets (docs/secrets.md).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
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
    /// List and revoke the browser sessions opened from embed tokens.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Print the address of an admin screen with a fresh embed token, valid
    /// for 10 minutes: the admin screens without a HIS (a first look, the
    /// support desk). A HIS gets its tokens from POST /embed/v1/tokens.
    EmbedLink {
        #[arg(long)]
        tenant: TenantId,
        /// Who opens it, as the audit trail will name them (user:<id>).
        #[arg(long)]
        user: String,
        /// Their name, shown on the screens.
        #[arg(long)]
        name: String,
        /// staff, admin or auditor.
        #[arg(long, default_value = "admin")]
        role: String,
        /// appointments, schedules, services, endpoints or audit.
        #[arg(long, default_value = "appointments")]
        screen: String,
        /// Where browsers reach this server (default: http://<listen address>).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Rebuild, verify and inspect the read models.
    Projections {
        #[command(subcommand)]
        command: buktor::projection::cli::ProjectionsCommand,
    },
    /// The GraphQL API's description.
    Graphql {
        #[command(subcommand)]
        command: GraphqlCommand,
    },
    /// Manage the HIS endpoints Buktor pushes events to, and their deliveries.
    Endpoint {
        #[command(subcommand)]
        command: buktor::webhooks::cli::EndpointCommand,
    },
    /// Check and export the tamper-evident hash chain over the events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Patient notifications (docs/notifications.md).
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// Print the secret a hospital's SMS gateway checks Buktor's signatures
    /// with (derived from notifications.sms_signing_key).
    SmsSecret {
        #[arg(long)]
        tenant: TenantId,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new random key for secrets.encryption_key (base64 of 32 bytes).
    GenerateKey,
    /// Seal every stored secret under secrets.encryption_key: those stored
    /// in plaintext and those under a key of secrets.old_encryption_keys.
    /// Afterwards the old keys can be removed from the configuration.
    Rotate,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every hash of the chain from the events; exit status 3 if
    /// a link is broken. Seals the events not yet sealed first.
    Verify {
        /// Only this hospital (default: every hospital with events).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Write nothing: leave unsealed events unsealed (they are counted).
        #[arg(long)]
        no_seal: bool,
    },
    /// Write a hospital's sealed events as JSON Lines, with their hashes.
    #[command(group(clap::ArgGroup::new("filter").required(true).args(["appointment", "patient", "from"])))]
    Export {
        #[arg(long)]
        tenant: TenantId,
        /// Every event of this appointment.
        #[arg(long)]
        appointment: Option<String>,
        /// Every event of the appointments booked for this HIS patient id.
        #[arg(long)]
        patient: Option<String>,
        /// Events recorded at or after this time (RFC 3339); needs --to.
        #[arg(long, requires = "to", value_parser = accepted_time)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// ... and before this time.
        #[arg(long, requires = "from", value_parser = accepted_time)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// An RFC 3339 time within the years the API accepts (`buktor_domain::time`).
fn accepted_time(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let t = chrono::DateTime::parse_from_rfc3339(raw)
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time: {e}"))?;
    buktor_domain::time::check_instant("time", t.with_timezone(&chrono::Utc)).map_err(|e| match e {
        buktor_domain::DomainError::InvalidInput { message, .. } => message,
        other => other.to_string(),
    })
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
enum GraphqlCommand {
    /// Print the schema (SDL); `schema.graphql` in the repository is its output.
    Schema,
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
    /// List a hospital's keys: id, role, created, last used, revoked, name
    /// (tab-separated; never the key itself).
    List {
        #[arg(long)]
        tenant: TenantId,
    },
    /// Revoke a key: every server refuses it within about a second, and its
    /// open WebSockets and event streams are closed.
    Revoke {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List a hospital's unexpired sessions: id, user, role, created,
    /// expires, last used, revoked, name (tab-separated).
    List {
        #[arg(long)]
        tenant: TenantId,
        /// Only this HIS user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one session (--id) or every open session of a user (--user).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "user"])))]
    Revoke {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: Option<uuid::Uuid>,
        #[arg(long)]
        user: Option<String>,
    },
}

/// Text from the store as a terminal may show it: control and
/// bidirectional-override characters escaped, so a name cannot ring the
/// bell, move the cursor or reverse the rest of the line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if buktor_domain::values::is_unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn time_or_dash(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Who the CLI records as having revoked: `cli:<OS user>`.
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{}", printable(&user))
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
        Command::Projections { command } => {
            let store = store::open(&config).await?;
            let status = buktor::projection::cli::run(&store, command).await?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
        Command::Graphql {
            command: GraphqlCommand::Schema,
        } => {
            print!("{}", buktor::graphql::sdl());
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
                    // The rules every name of the API follows.
                    let name = Name::parse("name", &name)?;
                    let t = demo::create_tenant(&scheduler, name.as_str(), time_zone).await?;
                    println!("{}", t.id);
                }
                TenantCommand::List => {
                    for t in scheduler.store().tenants().await? {
                        println!("{}\t{}\t{}", t.id, t.time_zone.name(), printable(&t.name));
                    }
                }
            }
            Ok(())
        }
        Command::ApiKey { command } => api_key_command(&config, command).await,
        Command::Session { command } => session_command(&config, command).await,
        Command::EmbedLink {
            tenant,
            user,
            name,
            role,
            screen,
            base_url,
        } => {
            let store = store::open(&config).await?;
            if store.tenant(tenant).await?.is_none() {
                anyhow::bail!("no tenant {tenant}");
            }
            let tokens = buktor::embed::tokens::TokenSigner::new(store, Arc::new(SystemClock));
            let base_url = base_url.unwrap_or_else(|| format!("http://{}", config.listen));
            let parsed =
                reqwest::Url::parse(&base_url).map_err(|e| anyhow::anyhow!("--base-url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || base_url.chars().any(char::is_control)
            {
                anyhow::bail!("--base-url: must be an http:// or https:// URL");
            }
            let link =
                buktor::embed::admin_link(&tokens, &base_url, tenant, &user, &name, &role, &screen)
                    .await?;
            println!("{link}");
            Ok(())
        }
        Command::Endpoint { command } => {
            let store = store::open(&config).await?;
            buktor::webhooks::cli::run(&*store, &config.webhooks, command).await
        }
        Command::Serve { demo } => serve(config, demo).await,
        Command::Secrets {
            command: SecretsCommand::GenerateKey,
        } => {
            println!("{}", buktor::secrets::generate_key());
            Ok(())
        }
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => {
            let (_, _, report) = store::open_and_reseal(&config).await?;
            println!(
                "{} stored secrets: {} sealed from plaintext, {} sealed again from an old key, \
                 all under the current key",
                report.total, report.sealed, report.resealed
            );
            Ok(())
        }
        Command::Audit { command } => audit_command(&config, command).await,
        Command::Notifications {
            command: NotificationsCommand::SmsSecret { tenant },
        } => {
            let sms = buktor::notifications::channels::SmsSender::new(&config.notifications)?;
            let secret = sms.secret_for(tenant).ok_or_else(|| {
                anyhow::anyhow!("notifications.sms_signing_key is not set: there is no SMS secret")
            })?;
            println!("{}", secret.expose());
            Ok(())
        }
    }
}

async fn existing_tenant(store: &dyn store::Store, tenant: TenantId) -> anyhow::Result<()> {
    if store.tenant(tenant).await?.is_none() {
        anyhow::bail!("no tenant {tenant}");
    }
    Ok(())
}

async fn api_key_command(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = store::open(config).await?;
    match command {
        ApiKeyCommand::Create { tenant, role, name } => {
            let name = Name::parse("name", &name)?;
            existing_tenant(&*store, tenant).await?;
            let key = generate_api_key(tenant, role, name.as_str());
            store.create_api_key(&key.record).await?;
            println!("{}", key.token);
        }
        ApiKeyCommand::List { tenant } => {
            existing_tenant(&*store, tenant).await?;
            for k in store.access().api_keys(tenant).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.key.id,
                    k.key.role,
                    time_or_dash(Some(k.key.created_at)),
                    time_or_dash(k.last_used_at),
                    time_or_dash(k.key.revoked_at),
                    printable(&k.key.name)
                );
            }
        }
        ApiKeyCommand::Revoke { tenant, id } => {
            existing_tenant(&*store, tenant).await?;
            let actor = cli_actor();
            let by = RevokedBy {
                actor: &actor,
                at: chrono::Utc::now(),
            };
            let Some(k) = store.access().revoke_api_key(tenant, id, by).await? else {
                anyhow::bail!("tenant {tenant} has no API key {id}");
            };
            tracing::info!(%tenant, key = %id, by = actor.as_str(), "API key revoked");
            println!("revoked {} at {}", k.key.id, time_or_dash(k.key.revoked_at));
        }
    }
    Ok(())
}

async fn session_command(config: &Config, command: SessionCommand) -> anyhow::Result<()> {
    let store = store::open(config).await?;
    let print = |s: &buktor::store::access::SessionRecord| {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.id,
            printable(&s.user),
            s.role,
            time_or_dash(Some(s.created_at)),
            time_or_dash(Some(s.expires_at)),
            time_or_dash(s.last_used_at),
            time_or_dash(s.revoked_at),
            printable(&s.name)
        )
    };
    match command {
        SessionCommand::List { tenant, user } => {
            existing_tenant(&*store, tenant).await?;
            let sessions = store
                .access()
                .sessions(tenant, user.as_deref(), chrono::Utc::now())
                .await?;
            sessions.iter().for_each(print);
        }
        SessionCommand::Revoke { tenant, id, user } => {
            existing_tenant(&*store, tenant).await?;
            let actor = cli_actor();
            let by = RevokedBy {
                actor: &actor,
                at: chrono::Utc::now(),
            };
            let revoked = match (id, user) {
                (Some(id), _) => match store.access().revoke_session(tenant, id, by).await? {
                    Some(s) => vec![s],
                    None => anyhow::bail!("tenant {tenant} has no session {id}"),
                },
                (None, Some(user)) => {
                    let user = ShortText::parse("user", &user)?;
                    store
                        .access()
                        .revoke_user_sessions(tenant, user.as_str(), by)
                        .await?
                }
                (None, None) => anyhow::bail!("give --id or --user"),
            };
            tracing::info!(%tenant, count = revoked.len(), by = actor.as_str(), "sessions revoked");
            revoked.iter().for_each(print);
        }
    }
    Ok(())
}

/// Exit status of `buktor audit verify` when a chain is broken.
const BROKEN_CHAIN_EXIT: i32 = 3;

async fn audit_command(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let (_, log) = store::open_with_audit(config).await?;
    match command {
        AuditCommand::Verify { tenant, no_seal } => {
            if !no_seal {
                // Covers every event committed before the command started
                // (on PostgreSQL: whose transactions have all ended).
                let sealed = match tenant {
                    Some(t) => audit::seal_tenant(&*log, t).await,
                    None => audit::seal_all(&*log).await,
                };
                match sealed {
                    Ok(n) => tracing::debug!(events = n, "sealed before verifying"),
                    Err(e) => eprintln!("warning: cannot seal the unsealed events: {e:#}"),
                }
            }
            let reports = audit::verify(&*log, tenant).await?;
            let (mut verified, mut unsealed) = (0, 0);
            for report in &reports {
                println!("{report}");
                verified += report.verified;
                unsealed += report.unsealed;
            }
            if reports.iter().any(|r| r.broken.is_some()) {
                println!("audit chain BROKEN");
                std::io::Write::flush(&mut std::io::stdout())?;
                // Not 1 (the check itself failed) nor 2 (clap's usage errors).
                std::process::exit(BROKEN_CHAIN_EXIT);
            }
            println!(
                "audit chain OK: {} tenants, {verified} events verified, {unsealed} not yet sealed",
                reports.len()
            );
            Ok(())
        }
        AuditCommand::Export {
            tenant,
            appointment,
            patient,
            from,
            to,
        } => {
            let filter = match (appointment, patient, from, to) {
                (Some(id), _, _, _) => audit::ExportFilter::Appointment(id),
                (_, Some(p), _, _) => audit::ExportFilter::Patient(p),
                (_, _, Some(from), Some(to)) => audit::ExportFilter::Between { from, to },
                _ => anyhow::bail!("give --appointment, --patient, or --from and --to"),
            };
            if let Err(e) = audit::seal_tenant(&*log, tenant).await {
                eprintln!("warning: cannot seal the unsealed events: {e:#}");
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = match audit::export(&*log, tenant, &filter, &mut out).await {
                Ok(summary) => summary,
                // The reader stopped reading (`| head`): not a failure.
                Err(audit::AuditError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            };
            drop(out);
            eprintln!(
                "exported {} events; {} not yet sealed were left out",
                summary.exported, summary.unsealed
            );
            Ok(())
        }
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
    let (store, audit_log) = store::open_with_audit(&config).await?;
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
    let (stop_runners, runners_stop) = tokio::sync::watch::channel(false);
    let runners = state.read_side.spawn_runners(
        state.scheduler.append_signal().clone(),
        runners_stop.clone(),
    );
    let notifications = buktor::notifications::spawn(
        store.clone(),
        state.scheduler.clone(),
        &config.notifications,
        runners_stop.clone(),
    )?;
    let webhooks = buktor::webhooks::spawn(
        store.clone(),
        &config.webhooks,
        state.scheduler.append_signal().clone(),
        runners_stop,
    );
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
            println!(
                "Booking widget: {url}/widget/v1/{}/frame  (the demo hospital takes bookings from patients)",
                s.tenant.id
            );
            println!(
                "Admin screens: buktor embed-link --tenant {} --user you --name \"Your Name\"  (prints a link)",
                s.tenant.id
            );
            println!("GraphiQL: {url}/graphql  (send the header  Authorization: Bearer <key>)");
        }
        None => println!("GraphiQL: {url}/graphql"),
    }
    let sealer = audit::spawn_sealer(audit_log);
    let served = app.run_until_stopped().await;
    let _ = stop_runners.send(true);
    for runner in runners.into_iter().chain(webhooks).chain(notifications) {
        let _ = runner.await;
    }
    sealer.stop().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}
