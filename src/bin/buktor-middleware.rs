//! `buktor-middleware`: receives Buktor's webhooks for a HIS that cannot
//! take pushes, stores them locally and syncs them into the HIS's own
//! database (and HL7 v2) on a schedule. See `docs/middleware.md`.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buktor::middleware::config::MiddlewareConfig;
use buktor::middleware::payload::WebhookId;
use buktor::middleware::store::{Changed, LocalStore, Selection, Status};
use buktor::middleware::sync::{PassReport, Syncer};
use buktor::middleware::{bench, serve, Output};
use buktor::telemetry;
use chrono::Utc;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "buktor-middleware",
    version,
    about = "Buktor's webhooks into a HIS database that cannot take pushes"
)]
struct Cli {
    /// The TOML configuration file (default: ./buktor-middleware.toml if present).
    #[arg(long, global = true, env = "BUKTOR_MIDDLEWARE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver and the scheduled sync.
    Serve,
    /// One sync pass now, ignoring the time windows and the backoff; exit
    /// status 1 if an output could not be written.
    SyncNow {
        /// How long to wait for a running pass (of `serve`) to finish.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Counts per output and state, the last error, the last successful sync.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Failed messages back to pending: retried at the next pass.
    Retry {
        /// Every failed message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only this output (default: every output).
        #[arg(long)]
        output: Option<Output>,
        /// webhook-ids of failed messages.
        #[arg(required_unless_present = "all")]
        ids: Vec<WebhookId>,
    },
    /// Failed messages to skipped: never written, and no longer holding back
    /// their appointment's later messages.
    Skip {
        #[arg(long)]
        output: Option<Output>,
        #[arg(required = true)]
        ids: Vec<WebhookId>,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Measure one pass's rate into a database (creates and drops a table).
    BenchSync {
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// postgres://… or sqlite:PATH
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = MiddlewareConfig::load(cli.config.as_deref())?;
    telemetry::init(&config.log);
    let base_dir = cli
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve => runtime.block_on(run_serve(&config, &base_dir)),
        Command::SyncNow { wait_secs, json } => {
            let report = runtime.block_on(sync_now(&config, &base_dir, wait_secs))?;
            print_report(&report, json)?;
            if report.outputs.iter().any(|o| o.error.is_some()) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Status { json } => {
            let store = LocalStore::open_in(&config.data_dir)?;
            print_status(&store.status()?, json)
        }
        Command::Retry { all, output, ids } => {
            let store = LocalStore::open_in(&config.data_dir)?;
            let selection = if all {
                Selection::All
            } else {
                Selection::Ids(ids)
            };
            report_changes("retry", &store.retry(&selection, output, Utc::now())?)
        }
        Command::Skip { output, ids } => {
            let store = LocalStore::open_in(&config.data_dir)?;
            report_changes("skip", &store.skip(&ids, output, Utc::now())?)
        }
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::BenchSync {
            rows,
            database_url,
            batch_size,
        } => {
            let report = runtime.block_on(bench::bench_sync(&database_url, rows, batch_size))?;
            println!(
                "bench-sync: {} rows in {:.2} s = {:.0} rows/s ({} batches of up to {})",
                report.rows,
                report.seconds,
                report.rows_per_second,
                report.batches,
                report.batch_size
            );
            Ok(())
        }
    }
}

async fn run_serve(config: &MiddlewareConfig, base_dir: &Path) -> anyhow::Result<()> {
    let settings = config.settings(base_dir)?;
    let running = serve::start(&settings)?;
    // The one line on stdout: scripts and tests read the address from it.
    println!("buktor-middleware listening on http://{}", running.addr);
    std::io::stdout().flush()?;
    tracing::info!(addr = %running.addr, data_dir = %settings.data_dir.display(), "receiving webhooks");
    running.run_until(wait_for_signal()).await
}

async fn sync_now(
    config: &MiddlewareConfig,
    base_dir: &Path,
    wait_secs: u64,
) -> anyhow::Result<PassReport> {
    let settings = config.settings(base_dir)?;
    let store = LocalStore::open_in(&settings.data_dir)?;
    let mut syncer = Syncer::new(store, &settings);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let report = syncer.pass(true, &stopped).await?;
        if !report.locked {
            return Ok(report);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("another sync pass is still running after {wait_secs} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_report(report: &PassReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for o in &report.outputs {
        println!(
            "{}: {} synced, {} failed, {} ignored, {} waiting again, {} batches",
            o.output, o.synced, o.failed, o.ignored, o.deferred, o.batches
        );
        if let Some(e) = &o.error {
            println!("{}: not available: {e}", o.output);
        }
    }
    Ok(())
}

fn print_status(status: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    println!("messages stored: {}", status.messages);
    for o in &status.outputs {
        println!(
            "{}: {} pending, {} synced, {} failed, {} skipped, {} ignored",
            o.output, o.pending, o.synced, o.failed, o.skipped, o.ignored
        );
        let show = |label: &str, value: &Option<String>| {
            println!("  {label}: {}", value.as_deref().unwrap_or("never"));
        };
        show("last successful sync", &o.last_success_at);
        show("last pass", &o.last_pass_at);
        if let Some(at) = &o.oldest_pending_at {
            println!("  oldest pending received: {at}");
        }
        if let Some(e) = &o.last_error {
            println!(
                "  last error ({}): {e}",
                o.last_error_at.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn report_changes(verb: &str, changes: &[Changed]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for c in changes {
        if c.webhook_id == "*" {
            println!("{verb}: {} failed deliveries changed", c.changed);
        } else if c.changed == 0 {
            missing.push(c.webhook_id.clone());
        } else {
            println!("{verb}: {} ({} deliveries)", c.webhook_id, c.changed);
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "not failed or not stored (unchanged): {}",
            missing.join(" ")
        );
        std::process::exit(2);
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
