//! `buktor-middleware serve`: the receiver and the scheduler in one process,
//! stopped together on SIGTERM/SIGINT (in-flight requests finish; a running
//! batch finishes, the pass stops after it).
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::config::Settings;
use super::receiver::{Receiver, ReceiverState};
use super::schedule::{in_windows, Schedule};
use super::store::{LocalStore, StoreError};
use super::sync::{describe_next, Syncer};

/// A running middleware: its address, and how to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    receiver: Receiver,
    scheduler: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    shutdown_timeout: std::time::Duration,
}

/// Opens the store, binds the receiver and starts the scheduler.
pub fn start(settings: &Settings) -> anyhow::Result<Running> {
    let store = LocalStore::open_in(&settings.data_dir)?;
    let state = Arc::new(ReceiverState {
        store: store.clone(),
        secrets: settings.secrets.clone(),
        tolerance_secs: settings.tolerance_secs,
        max_body_bytes: settings.max_body_bytes,
        outputs: Syncer::outputs(settings),
    });
    let receiver = Receiver::build(
        settings.listen,
        settings.workers,
        settings.shutdown_timeout,
        state,
    )?;
    // The sync gets its own connection, so its reads never queue behind the receiver.
    let sync_store = LocalStore::open_in(&settings.data_dir)?;
    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(schedule(
        Syncer::new(sync_store, settings),
        settings.clone(),
        stopped,
    ));
    Ok(Running {
        addr: receiver.addr,
        receiver,
        scheduler,
        stop,
        shutdown_timeout: settings.shutdown_timeout,
    })
}

impl Running {
    /// Serves until `until` completes, then stops gracefully.
    pub async fn run_until(
        self,
        until: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let handle = self.receiver.handle();
        let server = tokio::spawn(self.receiver.run());
        until.await;
        tracing::info!("shutting down: finishing in-flight requests and the running batch");
        let _ = self.stop.send(true);
        handle.stop(true).await;
        server.await??;
        if tokio::time::timeout(self.shutdown_timeout, self.scheduler)
            .await
            .is_err()
        {
            tracing::warn!("the sync did not stop in time; its batch is retried at the next start");
        }
        Ok(())
    }
}

/// The scheduler: a pass at each scheduled time (an interval schedule also
/// runs one at start), inside the windows.
async fn schedule(mut syncer: Syncer, settings: Settings, mut stop: watch::Receiver<bool>) {
    let zone = settings.zone;
    let mut next = match &settings.schedule {
        Schedule::Interval(_) => Some(Utc::now()),
        Schedule::Cron(_) => settings.schedule.next_after(Utc::now(), zone),
    };
    tracing::info!(schedule = %settings.schedule, windows = ?settings.windows.iter().map(|w| w.to_string()).collect::<Vec<_>>(), zone = %zone.name(), "sync scheduled");
    loop {
        let Some(at) = next else {
            tracing::error!("the schedule has no next time; the sync stops");
            return;
        };
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let started = Utc::now();
        if in_windows(&settings.windows, zone, started) {
            match syncer.pass(false, &stop).await {
                Ok(report) if report.eventful() => {
                    tracing::info!(?report, "sync pass done");
                }
                Ok(report) => tracing::debug!(?report, "sync pass done"),
                Err(e) => log_store_error(&e),
            }
        } else {
            tracing::debug!("outside the sync windows");
        }
        next = settings.schedule.next_after(started, zone);
        if let Some(at) = next {
            if at < Utc::now() {
                next = Some(Utc::now());
            }
            tracing::debug!(next = %describe_next(at, zone), "next sync pass");
        }
    }
}

fn log_store_error(e: &StoreError) {
    tracing::error!(error = %e, "the sync pass stopped on a local store error");
}
