//! The dispatcher: claims due timers under a lease and sends them, on every
//! instance that dispatches. Before each send it reads the notification's
//! stream and the appointment as they are now, so a notification that was
//! withdrawn or already sent is not sent (again), and one whose appointment
//! has started, moved or been cancelled is skipped. Each outcome is appended
//! to the stream before the timer is released.
//!
//! The one window for a duplicate: a crash after the SMTP server or the SMS
//! gateway accepted a message and before `NotificationSent` was appended.
//! The timer's lease then runs out and the notification is sent again (with
//! the same Message-ID / webhook-id, so a receiver can drop it).
use std::sync::Arc;
use std::time::Duration;

use buktor_domain::patient::{patient_id_for, Channel, PatientContact};
use buktor_domain::{decode, encode, AppointmentId, TenantId};
use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify, Semaphore};
use uuid::Uuid;

use super::channels::{mask, Email, Mailer, SendError, SmsBody, SmsSender};
use super::planner::system_metadata;
use super::reminders::{
    reminders_stream, Notification, ReminderEvent, Reminders, SkipReason, Status,
};
use super::settings::{NotificationKind, NotificationSettings};
use super::templates::choose;
use crate::app::Scheduler;
use crate::config::Notifications as Config;
use crate::store::reminders::{TimerOutcome, TimerRecord, TimerResult, TimerState};
use crate::store::{AppendRequest, NewEvent, Store, StoreError, StreamAppend};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    config: Config,
    mailer: Option<Mailer>,
    sms: SmsSender,
    planned: Arc<Notify>,
    owner: String,
}

/// What one send decided, before it is recorded.
enum Decision {
    /// Nothing to send or record: the stream already says what happened.
    Already(TimerState),
    Record(ReminderEvent, TimerOutcome, Option<String>),
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        scheduler: Arc<Scheduler>,
        config: Config,
        planned: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        Ok(Dispatcher {
            mailer: Mailer::new(&config)?,
            sms: SmsSender::new(&config)?,
            store,
            scheduler,
            config,
            planned,
            owner: format!("notifications-{}", Uuid::now_v7()),
        })
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.max_in_flight));
        let poll = Duration::from_millis(this.config.poll_ms);
        let lease = Duration::from_millis(this.config.lease_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            let claimed = match this
                .store
                .reminders()
                .claim_timers(
                    &this.owner,
                    this.scheduler.now(),
                    lease,
                    this.config.max_in_flight,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim notification timers");
                    vec![]
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = this.planned.notified() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            // The whole claim is handled before the next: a stopping server
            // finishes what it claimed (each send is bounded by its timeout).
            let mut tasks = Vec::with_capacity(claimed.len());
            for timer in claimed {
                let permit = slots.clone().acquire_owned().await;
                let this = this.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    let id = timer.spec.id;
                    match this.handle(&timer).await {
                        Ok(result) => Some(result),
                        Err(e) => {
                            tracing::warn!(notification = %id, error = %e, "notification not handled; it is tried again after its lease");
                            None
                        }
                    }
                }));
            }
            let mut results = Vec::new();
            for t in tasks {
                if let Ok(Some(r)) = t.await {
                    results.push(r);
                }
            }
            if let Err(e) = this
                .store
                .reminders()
                .complete_timers(&this.owner, &results)
                .await
            {
                tracing::warn!(error = %e, "cannot record notification outcomes");
            }
        }
    }

    async fn handle(&self, timer: &TimerRecord) -> Result<TimerResult, BoxError> {
        let tenant = timer.spec.tenant;
        let appointment_id = AppointmentId::from_uuid(timer.spec.appointment_id);
        let stream = reminders_stream(appointment_id);
        let (version, reminders) = self.reminders(tenant, &stream).await?;
        let Some(notification) = reminders.get(timer.spec.id).cloned() else {
            return Ok(done(
                timer.spec.id,
                TimerState::Cancelled,
                Some("unknown notification"),
            ));
        };
        let decision = self.decide(tenant, appointment_id, &notification).await?;
        let (event, outcome, error) = match decision {
            Decision::Already(state) => return Ok(done(timer.spec.id, state, None)),
            Decision::Record(event, outcome, error) => (event, outcome, error),
        };
        self.record(tenant, &stream, version, event).await?;
        Ok(TimerResult {
            id: timer.spec.id,
            outcome,
            error,
        })
    }

    async fn reminders(
        &self,
        tenant: TenantId,
        stream: &str,
    ) -> Result<(i64, Reminders), BoxError> {
        let mut state = Reminders::default();
        let mut version = 0;
        for e in self.store.read_stream(tenant, stream, 0).await? {
            buktor_domain::Aggregate::apply(
                &mut state,
                &decode(&e.event_type, e.schema_version, e.payload)?,
            );
            version = e.version;
        }
        Ok((version, state))
    }

    async fn decide(
        &self,
        tenant: TenantId,
        appointment_id: AppointmentId,
        n: &Notification,
    ) -> Result<Decision, BoxError> {
        match n.status {
            Status::Scheduled => {}
            Status::Sent => return Ok(Decision::Already(TimerState::Sent)),
            Status::Failed => return Ok(Decision::Already(TimerState::Failed)),
            Status::Skipped => return Ok(Decision::Already(TimerState::Skipped)),
            Status::Cancelled => return Ok(Decision::Already(TimerState::Cancelled)),
        }
        let now = self.scheduler.now();
        let skip = |reason: SkipReason| {
            Ok(Decision::Record(
                ReminderEvent::NotificationSkipped {
                    notification_id: n.id,
                    reason,
                },
                TimerOutcome::Done(TimerState::Skipped),
                Some(reason.as_str().to_owned()),
            ))
        };
        let Some(appointment) = self.scheduler.appointment(tenant, appointment_id).await? else {
            return skip(SkipReason::AppointmentChanged);
        };
        if appointment.start <= now {
            return skip(SkipReason::AppointmentStarted);
        }
        let booked = appointment.status == buktor_domain::appointment::AppointmentStatus::Booked;
        let current = match n.kind {
            NotificationKind::Cancelled => !booked,
            _ => booked && appointment.start == n.appointment_start,
        };
        if !current {
            return skip(SkipReason::AppointmentChanged);
        }
        let settings = self.scheduler.notification_settings(tenant).await?;
        if !settings.general.enabled {
            return skip(SkipReason::ChannelOff);
        }
        let contact = self.contact(tenant, &appointment).await?;
        if !contact.allows(n.channel) {
            return skip(SkipReason::OptedOut);
        }
        let address = match n.channel {
            Channel::Email => contact.email.as_ref().map(|e| e.as_str().to_owned()),
            Channel::Sms => contact.phone.as_ref().map(|p| p.as_str().to_owned()),
        };
        let Some(address) = address else {
            return skip(SkipReason::NoAddress);
        };
        let gateway = settings.general.sms_gateway.clone();
        let channel_on = match n.channel {
            Channel::Email => settings.general.email && self.mailer.is_some(),
            Channel::Sms => gateway.is_some() && self.sms.available(),
        };
        if !channel_on {
            return skip(SkipReason::ChannelOff);
        }
        let rendered = self
            .render(tenant, n, &appointment, &contact, &settings)
            .await?;
        let sent = match n.channel {
            Channel::Email => match &self.mailer {
                Some(mailer) => {
                    mailer
                        .send(&Email {
                            notification_id: n.id,
                            to_name: contact.name.as_ref().map(|x| x.as_str()),
                            to: &address,
                            language: &rendered.language,
                            subject: rendered.subject.as_deref().unwrap_or_default(),
                            body: &rendered.body,
                        })
                        .await
                }
                None => Err(SendError::Smtp("no SMTP server is configured".into())),
            },
            Channel::Sms => {
                let url = gateway.as_ref().map(|g| g.as_str()).unwrap_or_default();
                self.sms
                    .send(
                        tenant,
                        url,
                        &SmsBody {
                            to: &address,
                            text: &rendered.body,
                            language: &rendered.language,
                            notification_id: n.id,
                            appointment_id: appointment_id.as_uuid(),
                            kind: n.kind.as_str(),
                        },
                    )
                    .await
            }
        };
        let attempt = n.attempts + 1;
        Ok(match sent {
            Ok(()) => Decision::Record(
                ReminderEvent::NotificationSent {
                    notification_id: n.id,
                    channel: n.channel,
                    recipient: mask(&address),
                    language: rendered.language,
                    attempt,
                },
                TimerOutcome::Done(TimerState::Sent),
                None,
            ),
            Err(e) => {
                let error = e.to_string();
                let retry_at = retry_at(
                    now,
                    attempt,
                    self.config.max_attempts,
                    &self.config.retry_delays_ms,
                );
                tracing::info!(notification = %n.id, attempt, error = %error, final_attempt = retry_at.is_none(), "a notification failed");
                Decision::Record(
                    ReminderEvent::NotificationFailed {
                        notification_id: n.id,
                        attempt,
                        error: error.clone(),
                        retry_at,
                    },
                    match retry_at {
                        Some(at) => TimerOutcome::Retry { at },
                        None => TimerOutcome::Done(TimerState::Failed),
                    },
                    Some(error),
                )
            }
        })
    }

    /// The patient's contact as the HIS recorded it, else as the appointment took it.
    async fn contact(
        &self,
        tenant: TenantId,
        appointment: &buktor_domain::appointment::BookedAppointment,
    ) -> Result<PatientContact, BoxError> {
        let patient = &appointment.patient;
        let recorded = self
            .scheduler
            .patient_contact(tenant, patient_id_for(tenant, &patient.his_patient_id))
            .await?;
        Ok(recorded.unwrap_or_else(|| PatientContact {
            name: patient.name.clone(),
            phone: patient.phone.clone(),
            email: patient.email.clone(),
            language: None,
            opted_out: vec![],
        }))
    }

    async fn render(
        &self,
        tenant: TenantId,
        n: &Notification,
        appointment: &buktor_domain::appointment::BookedAppointment,
        contact: &PatientContact,
        settings: &NotificationSettings,
    ) -> Result<Rendered, BoxError> {
        let record = self
            .store
            .tenant(tenant)
            .await?
            .ok_or("the hospital is gone")?;
        let practitioner = self
            .scheduler
            .practitioner(tenant, appointment.practitioner_id)
            .await?;
        let service = self
            .scheduler
            .service(tenant, appointment.service_id)
            .await?;
        let local = appointment.start.with_timezone(&record.time_zone);
        let chosen = choose(
            &settings.templates,
            n.kind,
            n.channel,
            contact.language.as_ref(),
            &settings.general.default_language,
        );
        let value = |name: &str| -> String {
            match name {
                "patient_name" => contact
                    .name
                    .as_ref()
                    .map(|x| x.as_str().to_owned())
                    .unwrap_or_default(),
                "date" => local.format("%Y-%m-%d").to_string(),
                "time" => local.format("%H:%M").to_string(),
                "time_zone" => record.time_zone.name().to_owned(),
                "practitioner" => practitioner
                    .as_ref()
                    .map(|p| p.details.name.as_str().to_owned())
                    .unwrap_or_default(),
                "service" => service
                    .as_ref()
                    .map(|s| s.details.name.as_str().to_owned())
                    .unwrap_or_default(),
                "location" => practitioner
                    .as_ref()
                    .and_then(|p| p.details.location.as_ref())
                    .map(|l| l.as_str().to_owned())
                    .unwrap_or_default(),
                "hospital" => record.name.clone(),
                "manage_hint" => settings
                    .general
                    .manage_hint
                    .as_ref()
                    .map(|h| h.as_str().to_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            }
        };
        Ok(Rendered {
            language: chosen.language.clone(),
            subject: chosen.subject.as_ref().map(|s| s.render(value)),
            body: chosen.body.render(value),
        })
    }

    /// Appends `event` to the notification's stream; another writer moving
    /// the stream meanwhile (the planner) does not change what happened.
    async fn record(
        &self,
        tenant: TenantId,
        stream: &str,
        mut version: i64,
        event: ReminderEvent,
    ) -> Result<(), BoxError> {
        let enc = encode(&event);
        let causation = Uuid::now_v7();
        for _ in 0..10 {
            let request = AppendRequest {
                tenant,
                streams: vec![StreamAppend {
                    stream_id: stream.to_owned(),
                    expected_version: version,
                    events: vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: enc.event_type.clone(),
                        schema_version: enc.schema_version,
                        payload: enc.payload.clone(),
                        metadata: system_metadata(tenant, self.scheduler.now(), causation),
                    }],
                }],
                idempotency: None,
            };
            match self.store.append(request).await {
                Ok(_) => return Ok(()),
                Err(StoreError::VersionConflict { .. }) => {
                    version = self
                        .store
                        .read_stream(tenant, stream, version)
                        .await?
                        .last()
                        .map_or(version, |e| e.version);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(format!("stream {stream} kept moving").into())
    }
}

struct Rendered {
    language: String,
    subject: Option<String>,
    body: String,
}

fn done(id: Uuid, state: TimerState, error: Option<&str>) -> TimerResult {
    TimerResult {
        id,
        outcome: TimerOutcome::Done(state),
        error: error.map(str::to_owned),
    }
}

/// When the next attempt is due after `attempt` failed ones, or none when
/// `max_attempts` are used up.
pub fn retry_at(
    now: DateTime<Utc>,
    attempt: u32,
    max_attempts: u32,
    delays_ms: &[u64],
) -> Option<DateTime<Utc>> {
    if attempt >= max_attempts || delays_ms.is_empty() {
        return None;
    }
    let i = (attempt as usize)
        .saturating_sub(1)
        .min(delays_ms.len() - 1);
    Some(now + chrono::Duration::milliseconds(delays_ms[i] as i64))
}
