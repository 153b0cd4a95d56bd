//! Patient notifications and reminders (`docs/notifications.md`).
//!
//! - `settings`: a hospital's rules, templates and channels, as events.
//! - `rules`: when a reminder is due, in the hospital's time zone.
//! - `templates`: `{{placeholder}}` texts and the choice by language.
//! - `reminders`: an appointment's notifications, as events in
//!   `reminders-<appointment>`, and the planner's pure decision.
//! - `planner`: one leader follows each hospital's global order, appends
//!   the decisions and writes the due timers with its checkpoint in one
//!   transaction.
//! - `dispatch`: every dispatching instance claims due timers under a lease,
//!   checks them against the streams and the appointment, sends and records.
//! - `channels`: e-mail over SMTP and the SMS gateway webhook.
pub mod channels;
pub mod dispatch;
pub mod planner;
pub mod reminders;
pub mod rules;
pub mod settings;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use crate::app::Scheduler;
use crate::config::Notifications as Config;
use crate::store::Store;

/// Starts this instance's planner (it works while it holds the lease) and
/// dispatcher. They stop when `stop` turns true; the dispatcher finishes the
/// sends it has claimed first.
pub fn spawn(
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    config: &Config,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    if !config.dispatch {
        return Ok(vec![]);
    }
    if config.smtp_host.is_none() {
        tracing::info!("no SMTP server configured (notifications.smtp_host): e-mails are skipped");
    }
    let planned = Arc::new(tokio::sync::Notify::new());
    let planner = planner::Planner::new(
        store.clone(),
        scheduler.append_signal().clone(),
        planned.clone(),
        Duration::from_millis(config.poll_ms),
    );
    let dispatcher = dispatch::Dispatcher::new(store, scheduler, config.clone(), planned)?;
    Ok(vec![
        tokio::spawn(planner.run(stop.clone())),
        tokio::spawn(dispatcher.run(stop)),
    ])
}
