//! `buktor-bench reminders`: how fast appointments get their notification
//! timers planned, and how fast due timers are claimed and completed.
//!
//! ```text
//! buktor-bench reminders DATABASE_URL [--appointments 20000] [--practitioners 20]
//! ```
//!
//! In one process: the store (database `buktor_bench_reminders`, dropped and
//! recreated) and a hospital with notifications on (e-mail, two reminder
//! rules: "1 day before at 09:00" and "2 h before"). First the appointments
//! are booked through the real `Scheduler` (not timed as planning); then the
//! real planner (`buktor::notifications::planner::Planner`) catches up with
//! them from its checkpoint: reading the log, appending each appointment's
//! `NotificationScheduled` events and writing the timers with the checkpoint,
//! batch by batch. That is the figure reported (appointments/s). Last, every
//! timer is claimed and completed as sent in batches of 500 (a null channel),
//! which measures the dispatcher's store round trips without any sending.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buktor::app::{
    Book, CommandContext, ConfigureNotifications, Scheduler, SetReminderRule, SystemClock,
};
use buktor::metrics::Metrics;
use buktor::notifications::planner::Planner;
use buktor::notifications::rules::Timing;
use buktor::notifications::settings::General;
use buktor::store::postgres::PostgresStore;
use buktor::store::reminders::{TimerOutcome, TimerResult, TimerState};
use buktor::store::Store;
use buktor_domain::{Actor, Role, Source};
use chrono::NaiveTime;
use uuid::Uuid;

use super::{admin_context, recreate_database, set_up, url_and_counts};

struct Options {
    url: String,
    appointments: usize,
    practitioners: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let usage = "usage: buktor-bench reminders DATABASE_URL [--appointments N] [--practitioners P]";
    let (url, [appointments, practitioners]) =
        url_and_counts(args, [("--appointments", 20_000), ("--practitioners", 20)])
            .with_context(|| usage)?;
    if appointments == 0 || practitioners == 0 {
        bail!(usage);
    }
    Ok(Options {
        url,
        appointments,
        practitioners,
    })
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let url = recreate_database(&o.url, "buktor_bench_reminders").await?;
    let store = PostgresStore::connect(&url, 64).await?;
    store.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let scheduler = Arc::new(Scheduler::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
    ));
    let fixture = Arc::new(set_up(&scheduler, o.practitioners).await?);
    let ctx = admin_context(fixture.tenant);
    scheduler
        .configure_notifications(
            &ctx,
            &ConfigureNotifications {
                general: General {
                    enabled: true,
                    ..General::default()
                },
            },
        )
        .await?;
    for timing in [
        Timing::days_before_at(1, NaiveTime::from_hms_opt(9, 0, 0).context("a time")?)?,
        Timing::before(120)?,
    ] {
        scheduler
            .set_reminder_rule(
                &ctx,
                &SetReminderRule {
                    id: None,
                    timing,
                    service_ids: vec![],
                },
            )
            .await?;
    }

    println!(
        "reminders: booking {} appointments over {} practitioners…",
        o.appointments, o.practitioners
    );
    let booking = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..o.practitioners {
        let (scheduler, fixture) = (scheduler.clone(), fixture.clone());
        let (n, p) = (o.appointments, o.practitioners);
        workers.spawn(async move {
            let ctx = CommandContext {
                tenant: fixture.tenant,
                time_zone: chrono_tz::UTC,
                actor: Actor {
                    id: "api-key:bench-his".into(),
                    role: Role::HisSystem,
                },
                source: Source::HisApi,
                remote_addr: None,
                correlation_id: Uuid::now_v7(),
                idempotency_key: None,
            };
            // Reminders already due when planned are not sent (nor timed):
            // tomorrow's "day before at 09:00" is past after 09:00 UTC.
            let mut timers = 0usize;
            for i in (w..n).step_by(p) {
                let (practitioner_id, start) = fixture.target(i, p, None);
                let day_before_at_nine = (start.date_naive() - chrono::Days::new(1))
                    .and_hms_opt(9, 0, 0)
                    .context("a time")?
                    .and_utc();
                timers += 1
                    + usize::from(start - chrono::Duration::hours(2) > chrono::Utc::now())
                    + usize::from(day_before_at_nine > chrono::Utc::now());
                scheduler
                    .book(
                        &ctx,
                        &Book {
                            appointment_id: None,
                            practitioner_id,
                            service_id: fixture.service,
                            start: buktor_domain::time::Instant::parse("start", start)?,
                            patient: super::patient(i)?,
                            note: None,
                            his_appointment_id: None,
                            overriding: None,
                            reservation: None,
                        },
                    )
                    .await?;
            }
            anyhow::Ok(timers)
        });
    }
    let mut expected = 0usize;
    while let Some(done) = workers.join_next().await {
        expected += done??;
    }
    println!(
        "  booked in {:.1} s ({:.0}/s)",
        booking.elapsed().as_secs_f64(),
        o.appointments as f64 / booking.elapsed().as_secs_f64()
    );

    let planner = Planner::new(
        store.clone(),
        scheduler.append_signal().clone(),
        Arc::new(tokio::sync::Notify::new()),
        Duration::from_millis(100),
    );
    let mut states = HashMap::new();
    let planning = Instant::now();
    let mut events = 0usize;
    let mut batches = 0usize;
    // Until a read finds nothing new: the planner's own appends are read too.
    loop {
        let read = planner
            .step(fixture.tenant, &mut states)
            .await
            .map_err(|e| anyhow::anyhow!("planning failed: {e}"))?;
        if read == 0 {
            break;
        }
        events += read;
        batches += 1;
    }
    let planned_in = planning.elapsed();
    let timers = store.reminders().timers(fixture.tenant, None).await?;
    println!(
        "  planned {} appointments in {:.2} s: {:.0} appointments/s, {:.0} timers/s \
         ({} timers, {} events read in {} batches)",
        o.appointments,
        planned_in.as_secs_f64(),
        o.appointments as f64 / planned_in.as_secs_f64(),
        timers.len() as f64 / planned_in.as_secs_f64(),
        timers.len(),
        events,
        batches
    );
    if timers.len() != expected {
        bail!(
            "expected {expected} timers (booked news and the reminders not yet due), found {}",
            timers.len()
        );
    }

    let firing = Instant::now();
    let far = chrono::Utc::now() + chrono::Duration::days(3650);
    let mut fired = 0usize;
    loop {
        let claimed = store
            .reminders()
            .claim_timers("bench", far, Duration::from_secs(60), 500)
            .await?;
        if claimed.is_empty() {
            break;
        }
        let results: Vec<TimerResult> = claimed
            .iter()
            .map(|t| TimerResult {
                id: t.spec.id,
                outcome: TimerOutcome::Done(TimerState::Sent),
                error: None,
            })
            .collect();
        fired += store.reminders().complete_timers("bench", &results).await?;
    }
    println!(
        "  claimed and completed {} timers in {:.2} s: {:.0} timers/s (null channel, batches of 500)",
        fired,
        firing.elapsed().as_secs_f64(),
        fired as f64 / firing.elapsed().as_secs_f64()
    );
    Ok(())
}
