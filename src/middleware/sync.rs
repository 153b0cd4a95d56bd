//! One sync pass: stored messages → the outputs.
//!
//! For the HIS database, a pass connects (and creates the table if the
//! mapping says so), asks the health query, then takes due messages in
//! batches of `batch_size`, one transaction per batch, until none is due,
//! the time window closes, or the service stops. Per message:
//! - a type the mapping does not cover → `ignored`;
//! - a mapped field missing or of the wrong type → `failed` with the reason,
//!   before the batch is written (the rest of the batch goes on);
//! - a row the database refuses (data exception, constraint) → `failed`,
//!   the rest of the batch is committed;
//! - the database unavailable (down, timeout, table missing, health query
//!   failing) → the batch stays `pending`, nothing of it written, each
//!   message due again after a backoff; the pass stops there.
//!
//! For HL7, due messages are sent one at a time (one MLLP exchange each)
//! and each one's state is recorded as soon as its ACK is read: accepted →
//! `synced`; a type with no SIU meaning → `ignored`; a payload SIU cannot
//! carry → `failed`; a NAK (`AE`/`AR`) or an unusable ACK → due again after
//! a backoff; no connection or no ACK in time → due again after a backoff,
//! and the pass stops.
//!
//! Order: a batch holds at most one message per appointment, the earliest
//! (by version) not yet synced, and none while an earlier one is `failed`
//! (until an operator retries or skips it). Writing is idempotent (the
//! upsert's version check), so a crash between the HIS commit and the local
//! state update only rewrites the same rows.
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::config::{HisDbSettings, Settings};
use super::his_db::{self, HisDatabase, RowResult, Unavailable};
use super::mllp::{self, Disposition, Hl7Config, Hl7Error};
use super::schedule::{in_windows, TimeWindow, Zone};
use super::store::{LocalStore, Outcome, StoreError, SyncLock};
use super::Output;

/// The HIS database output: its settings and its connection.
pub struct HisDbOutput {
    pub settings: HisDbSettings,
    pub db: Box<dyn HisDatabase>,
}

impl HisDbOutput {
    pub fn new(settings: HisDbSettings) -> HisDbOutput {
        HisDbOutput {
            db: his_db::open(&settings),
            settings,
        }
    }
}

/// Runs passes; holds the outputs' connections between them.
pub struct Syncer {
    store: LocalStore,
    data_dir: PathBuf,
    his_db: Option<HisDbOutput>,
    hl7: Option<Hl7Config>,
    windows: Vec<TimeWindow>,
    zone: Zone,
    retry_initial: Duration,
    retry_max: Duration,
    retention_days: u32,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PassReport {
    /// One entry per output the pass worked on.
    pub outputs: Vec<OutputReport>,
    /// Another sync held the lock; this pass did nothing.
    pub locked: bool,
    /// The time window was closed; this pass did nothing.
    pub outside_window: bool,
}

impl PassReport {
    pub fn output(&self, output: Output) -> Option<&OutputReport> {
        self.outputs.iter().find(|o| o.output == output.as_str())
    }

    /// Whether anything happened worth an info line.
    pub fn eventful(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.synced + o.failed + o.ignored + o.deferred > 0 || o.error.is_some())
    }
}

/// What a pass did for one output.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OutputReport {
    pub output: String,
    pub synced: usize,
    pub failed: usize,
    pub ignored: usize,
    /// Messages put back to wait for the output.
    pub deferred: usize,
    pub batches: usize,
    /// Why the output was not (fully) written, if it was not.
    pub error: Option<String>,
}

impl OutputReport {
    fn new(output: Output) -> OutputReport {
        OutputReport {
            output: output.as_str().into(),
            ..OutputReport::default()
        }
    }
}

/// Messages read from the local store at a time for the HL7 output.
const HL7_BATCH: usize = 100;

/// `initial`, doubled per earlier attempt, at most `max`.
pub fn backoff(attempts_before: i64, initial: Duration, max: Duration) -> Duration {
    let doublings = attempts_before.clamp(0, 30) as u32;
    initial.saturating_mul(1 << doublings).min(max)
}

impl Syncer {
    pub fn new(store: LocalStore, settings: &Settings) -> Syncer {
        Syncer {
            store,
            data_dir: settings.data_dir.clone(),
            his_db: settings.his_db.clone().map(HisDbOutput::new),
            hl7: settings.hl7.clone(),
            windows: settings.windows.clone(),
            zone: settings.zone,
            retry_initial: settings.retry_initial,
            retry_max: settings.retry_max,
            retention_days: settings.retention_days,
        }
    }

    /// Outputs each received message gets a delivery for.
    pub fn outputs(settings: &Settings) -> Vec<Output> {
        let mut outputs = Vec::new();
        if settings.his_db.is_some() {
            outputs.push(Output::HisDb);
        }
        if settings.hl7.is_some() {
            outputs.push(Output::Hl7);
        }
        outputs
    }

    fn open_window(&self, force: bool) -> bool {
        force || in_windows(&self.windows, self.zone, Utc::now())
    }

    /// One pass over every output. `force` (the operator's `sync-now`)
    /// ignores the time windows and the backoff. A pass that finds another
    /// one running does nothing and says so.
    pub async fn pass(
        &mut self,
        force: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<PassReport, StoreError> {
        if !self.open_window(force) {
            return Ok(PassReport {
                outside_window: true,
                ..PassReport::default()
            });
        }
        let data_dir = self.data_dir.clone();
        let lock = self
            .store
            .run(move |_| SyncLock::try_acquire(&data_dir))
            .await?;
        let Some(_lock) = lock else {
            return Ok(PassReport {
                locked: true,
                ..PassReport::default()
            });
        };
        let mut report = PassReport::default();
        if self.his_db.is_some() {
            let mut output = OutputReport::new(Output::HisDb);
            self.his_db_pass(force, stop, &mut output).await?;
            report.outputs.push(output);
        }
        if let Some(config) = self.hl7.clone() {
            let mut output = OutputReport::new(Output::Hl7);
            self.hl7_pass(&config, force, stop, &mut output).await?;
            report.outputs.push(output);
        }
        if self.retention_days > 0 {
            let before = Utc::now() - chrono::Duration::days(i64::from(self.retention_days));
            let purged = self.store.run(move |s| s.purge(before)).await?;
            if purged > 0 {
                tracing::info!(purged, "deleted messages past retention_days");
            }
        }
        Ok(report)
    }

    async fn his_db_pass(
        &mut self,
        force: bool,
        stop: &watch::Receiver<bool>,
        report: &mut OutputReport,
    ) -> Result<(), StoreError> {
        let Some(output) = self.his_db.as_mut() else {
            return Ok(());
        };
        let settings = &output.settings;
        let timeout = settings.statement_timeout;
        let ready = tokio::time::timeout(
            timeout,
            output
                .db
                .ready(&settings.mapping, settings.health_query.as_deref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Unavailable(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))
        });
        if let Err(e) = ready {
            output.db.reset();
            tracing::warn!(error = %e, "the HIS database is not available; messages wait");
            report.error = Some(e.0.clone());
            let error = e.0;
            self.store
                .run(move |s| s.record_pass(Output::HisDb, Utc::now(), Some(&error)))
                .await?;
            return Ok(());
        }
        loop {
            if *stop.borrow() || !(force || in_windows(&self.windows, self.zone, Utc::now())) {
                break;
            }
            let now = Utc::now();
            let limit = settings.batch_size;
            let due_at = (!force).then_some(now);
            let due = self
                .store
                .run(move |s| s.due(Output::HisDb, due_at, limit))
                .await?;
            if due.is_empty() {
                break;
            }
            report.batches += 1;
            let mut outcomes = Vec::with_capacity(due.len());
            let mut rows = Vec::new();
            let mut written = Vec::new();
            for d in &due {
                let message = &d.message;
                if !settings.mapping.covers(&message.event_type) {
                    outcomes.push((d.seq, Outcome::Ignored));
                    report.ignored += 1;
                    continue;
                }
                match settings.mapping.row(&message.payload) {
                    Ok(row) => {
                        rows.push(row);
                        written.push(d);
                    }
                    Err(e) => {
                        tracing::warn!(webhook_id = %message.webhook_id, error = %e, "a message cannot be mapped");
                        outcomes.push((d.seq, Outcome::Failed(e.to_string())));
                        report.failed += 1;
                    }
                }
            }
            let mut batch_error = None;
            if !rows.is_empty() {
                let result =
                    tokio::time::timeout(timeout, output.db.write_batch(&settings.mapping, &rows))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Unavailable(format!(
                                "the batch took more than {} s",
                                timeout.as_secs()
                            )))
                        });
                match result {
                    Ok(results) => {
                        for (d, result) in written.iter().zip(results) {
                            match result {
                                RowResult::Written => {
                                    outcomes.push((d.seq, Outcome::Synced));
                                    report.synced += 1;
                                }
                                RowResult::Rejected(e) => {
                                    tracing::warn!(webhook_id = %d.message.webhook_id, error = %e, "the HIS database refused a message");
                                    outcomes.push((d.seq, Outcome::Failed(e)));
                                    report.failed += 1;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        output.db.reset();
                        tracing::warn!(error = %e, messages = written.len(), "a batch was not written; it waits");
                        for d in &written {
                            let wait = backoff(d.attempts, self.retry_initial, self.retry_max);
                            outcomes.push((
                                d.seq,
                                Outcome::Retry {
                                    error: e.0.clone(),
                                    next_attempt_at: now
                                        + chrono::Duration::from_std(wait).unwrap_or_default(),
                                },
                            ));
                            report.deferred += 1;
                        }
                        batch_error = Some(e.0);
                    }
                }
            }
            self.store
                .run(move |s| s.settle(Output::HisDb, &outcomes, Utc::now()))
                .await?;
            if let Some(error) = batch_error {
                report.error = Some(error);
                break;
            }
        }
        let error = report.error.clone();
        self.store
            .run(move |s| s.record_pass(Output::HisDb, Utc::now(), error.as_deref()))
            .await?;
        Ok(())
    }

    async fn hl7_pass(
        &mut self,
        config: &Hl7Config,
        force: bool,
        stop: &watch::Receiver<bool>,
        report: &mut OutputReport,
    ) -> Result<(), StoreError> {
        'pass: loop {
            let now = Utc::now();
            let due_at = (!force).then_some(now);
            let due = self
                .store
                .run(move |s| s.due(Output::Hl7, due_at, HL7_BATCH))
                .await?;
            if due.is_empty() {
                break;
            }
            report.batches += 1;
            for d in due {
                if *stop.borrow() || !(force || in_windows(&self.windows, self.zone, Utc::now())) {
                    break 'pass;
                }
                let mut receiver_down = None;
                let outcome = match mllp::forward(config, &d.message).await {
                    Ok(_) => {
                        report.synced += 1;
                        Outcome::Synced
                    }
                    Err(e) => {
                        let text = Unavailable::chain("HL7", &e).0;
                        match e.disposition() {
                            Disposition::Skip => {
                                report.ignored += 1;
                                Outcome::Ignored
                            }
                            Disposition::GiveUp => {
                                tracing::warn!(webhook_id = %d.message.webhook_id, error = %text, "a message cannot go out as HL7");
                                report.failed += 1;
                                Outcome::Failed(text)
                            }
                            Disposition::Retry => {
                                tracing::warn!(webhook_id = %d.message.webhook_id, error = %text, "the HL7 receiver did not accept a message; it waits");
                                if matches!(e, Hl7Error::Timeout { .. } | Hl7Error::Connection(_)) {
                                    receiver_down = Some(text.clone());
                                }
                                report.deferred += 1;
                                let wait = backoff(d.attempts, self.retry_initial, self.retry_max);
                                Outcome::Retry {
                                    error: text,
                                    next_attempt_at: Utc::now()
                                        + chrono::Duration::from_std(wait).unwrap_or_default(),
                                }
                            }
                        }
                    }
                };
                let settled = vec![(d.seq, outcome)];
                self.store
                    .run(move |s| s.settle(Output::Hl7, &settled, Utc::now()))
                    .await?;
                if let Some(error) = receiver_down {
                    report.error = Some(error);
                    break 'pass;
                }
            }
        }
        let error = report.error.clone();
        self.store
            .run(move |s| s.record_pass(Output::Hl7, Utc::now(), error.as_deref()))
            .await?;
        Ok(())
    }
}

/// When a pass that starts now may run at the latest: for logs.
pub fn describe_next(next: DateTime<Utc>, zone: Zone) -> String {
    format!(
        "{} ({})",
        zone.local(next).format("%Y-%m-%d %H:%M:%S"),
        zone.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, s(30), s(3600)), s(30));
        assert_eq!(backoff(1, s(30), s(3600)), s(60));
        assert_eq!(backoff(3, s(30), s(3600)), s(240));
        assert_eq!(backoff(20, s(30), s(3600)), s(3600));
        assert_eq!(backoff(i64::MAX, s(30), s(3600)), s(3600));
    }
}
