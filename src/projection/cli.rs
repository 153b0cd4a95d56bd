//! `buktor projections …`: rebuild, verify and inspect the read models.
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::rebuild::{self, Progress};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the whole store into fresh read models, then swap them in
    /// (the server keeps serving the old ones until the swap).
    Rebuild {
        /// One projection (catalog, calendar, appointments, audit); all by default.
        name: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild into a scratch copy and report every difference from the
    /// live read models; exit status 3 if there is one.
    Verify {
        name: Option<String>,
        #[arg(long)]
        quiet: bool,
    },
    /// Each projection's live generation and position per hospital.
    Status,
}

/// A terminal progress bar with events/s and ETA.
struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress for Bar {
    fn started(&mut self, projection: &str, expected: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(expected.max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} events  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(projection.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }
    fn advanced(&mut self, applied: u64) {
        if let Some(bar) = &self.bar {
            if applied > bar.length().unwrap_or(0) {
                bar.set_length(applied);
            }
            bar.set_position(applied);
        }
    }
    fn finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn names(name: Option<String>) -> anyhow::Result<Vec<&'static str>> {
    match name {
        None => Ok(buktor_projections::ALL.to_vec()),
        Some(n) => buktor_projections::ALL
            .into_iter()
            .find(|p| *p == n)
            .map(|p| vec![p])
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no projection {n:?}; there are: {}",
                    buktor_projections::ALL.join(", ")
                )
            }),
    }
}

/// Runs the command; returns the process exit status.
pub async fn run(store: &Arc<dyn Store>, command: ProjectionsCommand) -> anyhow::Result<i32> {
    match command {
        ProjectionsCommand::Rebuild { name, quiet } => {
            // All of them in one pass over the store.
            let names = names(name)?;
            let mut bar = Bar { bar: None, quiet };
            for report in rebuild::rebuild_many(store, &names, &mut bar).await? {
                println!(
                    "{}: rebuilt generation {} from {} events in {:.1} s ({:.0} events/s){}",
                    report.projection,
                    report.generation,
                    report.events,
                    report.elapsed.as_secs_f64(),
                    report.events_per_second(),
                    report
                        .replaced
                        .map(|g| format!(", replacing generation {g}"))
                        .unwrap_or_default()
                );
            }
            Ok(0)
        }
        ProjectionsCommand::Verify { name, quiet } => {
            let mut status = 0;
            for name in names(name)? {
                let mut bar = Bar { bar: None, quiet };
                let report = rebuild::verify(store, name, &mut bar).await?;
                if report.differences.is_empty() {
                    println!(
                        "{}: OK, the live read model equals a rebuild of {} events",
                        report.projection, report.events
                    );
                    continue;
                }
                status = 3;
                println!(
                    "{}: {} document(s) differ from a rebuild (first {} shown):",
                    report.projection,
                    report.differences.len(),
                    rebuild::MAX_DIFFERENCES
                );
                for d in &report.differences {
                    println!(
                        "  tenant {} key {}\n    live:    {}\n    rebuilt: {}",
                        d.tenant,
                        d.key,
                        d.left.as_deref().unwrap_or("(missing)"),
                        d.right.as_deref().unwrap_or("(missing)")
                    );
                }
            }
            Ok(status)
        }
        ProjectionsCommand::Status => {
            for name in buktor_projections::ALL {
                let live = store.read_models().live_generation(name).await?;
                println!("{name}: live generation {live}");
                for (tenant, c) in store.read_models().checkpoints(name, live).await? {
                    println!("  {tenant}  at {}  ({} events)", c.position, c.events);
                }
            }
            Ok(0)
        }
    }
}
