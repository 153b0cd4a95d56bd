//! The planner: one leader across all instances follows each hospital's
//! global order and turns appointment events into scheduled (and cancelled)
//! notifications.
//!
//! Per batch of events it (1) decides, per appointment, the new events of
//! its `reminders-<appointment>` stream ([`super::reminders::plan`]) and
//! appends them in one atomic write, then (2) writes the timers those
//! streams now call for and moves its checkpoint, in one transaction. A
//! crash between (1) and (2) repeats the batch: step (1) then decides
//! nothing new (the streams record which appointment version they were
//! planned through) and step (2) writes the same timers again.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use buktor_domain::appointment::{Appointment, AppointmentEvent};
use buktor_domain::{
    decode, encode, Actor, Aggregate, AppointmentId, EventMetadata, Role, Source, TenantId,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::reminders::{plan, reminders_stream, Change, Planned, Reminders, Status};
use super::settings::{settings_stream, NotificationSettings, SettingsEvent};
use crate::app::AppendSignal;
use crate::projection::lease_when_free;
use crate::store::reminders::{TimerChange, TimerSpec};
use crate::store::{
    AppendRequest, NewEvent, Position, RecordedEvent, Store, StoreError, StreamAppend,
};

/// Events read per batch.
pub const BATCH: usize = 500;
const IDLE_MIN: Duration = Duration::from_millis(25);
const LEASE_RETRY: Duration = Duration::from_secs(1);
const TENANTS_TTL: Duration = Duration::from_secs(1);
/// Appends lost to a concurrent writer (a dispatcher recording a send)
/// before the batch is given up until the next round.
const APPEND_ATTEMPTS: usize = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the planner knows of one hospital between batches.
pub struct TenantState {
    zone: Tz,
    checkpoint: Position,
    /// The settings as of `checkpoint`.
    settings: Arc<NotificationSettings>,
}

pub struct Planner {
    store: Arc<dyn Store>,
    appends: Arc<AppendSignal>,
    /// Woken after timers were written, so this instance's dispatcher looks at once.
    planned: Arc<Notify>,
    idle_max: Duration,
}

/// The metadata of the planner's and the dispatcher's own events.
pub fn system_metadata(
    tenant: TenantId,
    occurred_at: DateTime<Utc>,
    causation: Uuid,
) -> serde_json::Value {
    serde_json::to_value(EventMetadata {
        tenant,
        actor: Actor {
            id: "system:notifications".into(),
            role: Role::Admin,
        },
        source: Source::System,
        remote_addr: None,
        correlation_id: causation,
        causation_id: causation,
        idempotency_key: None,
        occurred_at,
    })
    .unwrap_or_default()
}

fn occurred_at(event: &RecordedEvent) -> DateTime<Utc> {
    event
        .metadata
        .get("occurred_at")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(event.recorded_at)
}

impl Planner {
    pub fn new(
        store: Arc<dyn Store>,
        appends: Arc<AppendSignal>,
        planned: Arc<Notify>,
        idle_max: Duration,
    ) -> Self {
        Planner {
            store,
            appends,
            planned,
            idle_max,
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while let Some(lease) = lease_when_free(
            self.store.as_ref(),
            "notification-planner",
            LEASE_RETRY,
            &mut stop,
        )
        .await
        {
            tracing::info!("this instance plans notifications");
            self.lead(&lease, &mut stop).await;
        }
    }

    async fn lead(&self, lease: &crate::store::Lease, stop: &mut watch::Receiver<bool>) {
        let mut states: HashMap<TenantId, TenantState> = HashMap::new();
        let mut tenants: Vec<TenantId> = Vec::new();
        let mut tenants_read = None::<std::time::Instant>;
        let mut idle = IDLE_MIN;
        let mut wake = self.appends.subscribe();
        while lease.is_alive() && !*stop.borrow() {
            if tenants_read.is_none_or(|at| at.elapsed() > TENANTS_TTL) {
                match self.store.tenants().await {
                    Ok(all) => {
                        tenants = all.into_iter().map(|t| t.id).collect();
                        tenants_read = Some(std::time::Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list hospitals"),
                }
            }
            let mut busy = false;
            for tenant in &tenants {
                match self.step(*tenant, &mut states).await {
                    Ok(read) => busy |= read > 0,
                    Err(e) => {
                        states.remove(tenant);
                        tracing::warn!(tenant = %tenant, error = %e, "notification planning failed");
                    }
                }
            }
            if busy {
                idle = IDLE_MIN;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = wake.changed() => { idle = IDLE_MIN; continue; }
                _ = stop.changed() => return,
            }
            idle = (idle * 2).min(self.idle_max);
        }
    }

    /// Loads where `tenant`'s planning stands: its checkpoint and the
    /// settings as of it.
    async fn load(&self, tenant: TenantId) -> Result<Option<TenantState>, BoxError> {
        let Some(record) = self.store.tenant(tenant).await? else {
            return Ok(None);
        };
        let checkpoint = self.store.reminders().planner_checkpoint(tenant).await?;
        let mut settings = NotificationSettings::default();
        for e in self
            .store
            .read_stream(tenant, &settings_stream(tenant), 0)
            .await?
        {
            if e.position > checkpoint {
                break;
            }
            settings.apply(&decode::<SettingsEvent>(
                &e.event_type,
                e.schema_version,
                e.payload,
            )?);
        }
        Ok(Some(TenantState {
            zone: record.time_zone,
            checkpoint,
            settings: Arc::new(settings),
        }))
    }

    /// Plans one batch of `tenant`'s log; returns how many events it read.
    pub async fn step(
        &self,
        tenant: TenantId,
        states: &mut HashMap<TenantId, TenantState>,
    ) -> Result<usize, BoxError> {
        let state = match states.entry(tenant) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match self.load(tenant).await? {
                Some(s) => v.insert(s),
                None => return Ok(0),
            },
        };
        let events = self.store.read_all(tenant, state.checkpoint, BATCH).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(0);
        };
        let settings_id = settings_stream(tenant);
        // Each appointment event with the settings as of it.
        let mut changes: Vec<(
            RecordedEvent,
            AppointmentId,
            Change,
            Arc<NotificationSettings>,
        )> = Vec::new();
        let mut settings = state.settings.clone();
        for event in events.iter() {
            if event.stream_id == settings_id {
                let e: SettingsEvent = decode(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                )?;
                Arc::make_mut(&mut settings).apply(&e);
            } else if event.stream_id.starts_with("appointment-")
                // A hospital that never configured notifications has nothing
                // to schedule or cancel (and if it turned them off and reset
                // everything, the dispatcher skips what is left).
                && *settings != NotificationSettings::default()
            {
                // An appointment event this server cannot read (a newer
                // server's) is left out rather than stopping the hospital's
                // planning for good.
                let e: AppointmentEvent = match decode(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                ) {
                    Ok(e) => e,
                    Err(err) => {
                        tracing::warn!(tenant = %tenant, position = %event.position, error = %err, "notification planner skips an event it cannot read");
                        continue;
                    }
                };
                let (id, change) = Change::of(&e);
                changes.push((event.clone(), id, change, settings.clone()));
            }
        }
        let timers = if changes.is_empty() {
            vec![]
        } else {
            self.decide_and_append(tenant, state.zone, &mut changes)
                .await?
        };
        let count = timers.len();
        match self
            .store
            .reminders()
            .plan(tenant, state.checkpoint, last, &timers)
            .await
        {
            Ok(_) => {
                state.checkpoint = last;
                state.settings = settings;
                if count > 0 {
                    self.planned.notify_one();
                    tracing::debug!(tenant = %tenant, timers = count, to = %last, "notifications planned");
                }
                Ok(events.len())
            }
            Err(StoreError::CheckpointMoved { .. }) => {
                // Another leader wrote meanwhile: start from where it got to.
                states.remove(&tenant);
                Ok(events.len())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends the reminder events the changes call for and returns the
    /// timers their streams now hold.
    async fn decide_and_append(
        &self,
        tenant: TenantId,
        zone: Tz,
        changes: &mut [(
            RecordedEvent,
            AppointmentId,
            Change,
            Arc<NotificationSettings>,
        )],
    ) -> Result<Vec<TimerChange>, BoxError> {
        // A move does not name the service: read it from the appointment.
        let moved: Vec<(String, i64)> = changes
            .iter()
            .filter(|c| matches!(c.2, Change::Rescheduled { .. }))
            .map(|c| (c.0.stream_id.clone(), 0))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !moved.is_empty() {
            let mut appointments: HashMap<String, Appointment> = HashMap::new();
            for e in self.store.read_streams(tenant, &moved).await? {
                let event: AppointmentEvent = decode(&e.event_type, e.schema_version, e.payload)?;
                appointments.entry(e.stream_id).or_default().apply(&event);
            }
            for c in changes.iter_mut() {
                if let Change::Rescheduled { service, .. } = &mut c.2 {
                    *service = appointments
                        .get(&c.0.stream_id)
                        .and_then(|a| a.booked.as_ref())
                        .map(|b| b.service_id);
                }
            }
        }
        let mut ids: Vec<AppointmentId> = changes.iter().map(|c| c.1).collect();
        ids.sort_by_key(|id| id.as_uuid());
        ids.dedup();
        let streams: Vec<(String, i64)> = ids.iter().map(|id| (reminders_stream(*id), 0)).collect();
        for _ in 0..APPEND_ATTEMPTS {
            let mut current: BTreeMap<String, (i64, Reminders)> = streams
                .iter()
                .map(|(s, _)| (s.clone(), (0, Reminders::default())))
                .collect();
            for e in self.store.read_streams(tenant, &streams).await? {
                let event = decode(&e.event_type, e.schema_version, e.payload)?;
                if let Some((version, state)) = current.get_mut(&e.stream_id) {
                    *version = e.version;
                    state.apply(&event);
                }
            }
            let mut new: BTreeMap<String, Vec<super::reminders::ReminderEvent>> = BTreeMap::new();
            for (event, id, change, settings) in changes.iter() {
                let stream = reminders_stream(*id);
                let Some((_, state)) = current.get_mut(&stream) else {
                    continue;
                };
                let decided = plan(
                    state,
                    &Planned {
                        appointment_id: *id,
                        version: event.version,
                        occurred_at: occurred_at(event),
                        change: change.clone(),
                        settings,
                        zone,
                    },
                );
                for e in &decided {
                    state.apply(e);
                }
                new.entry(stream).or_default().extend(decided);
            }
            let appends: Vec<StreamAppend> = new
                .iter()
                .filter(|(_, events)| !events.is_empty())
                .map(|(stream, events)| {
                    let causation = Uuid::now_v7();
                    StreamAppend {
                        stream_id: stream.clone(),
                        expected_version: current[stream].0,
                        events: events
                            .iter()
                            .map(|e| {
                                let enc = encode(e);
                                NewEvent {
                                    event_id: Uuid::now_v7(),
                                    event_type: enc.event_type,
                                    schema_version: enc.schema_version,
                                    payload: enc.payload,
                                    metadata: system_metadata(tenant, Utc::now(), causation),
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            if !appends.is_empty() {
                match self
                    .store
                    .append(AppendRequest {
                        tenant,
                        streams: appends,
                        idempotency: None,
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(StoreError::VersionConflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(timers_of(tenant, &current));
        }
        Err(format!("reminder streams kept moving over {APPEND_ATTEMPTS} attempts").into())
    }
}

/// The timers the streams call for: pending ones for scheduled
/// notifications, cancelled ones for withdrawn ones. Sent, failed and
/// skipped ones are the dispatcher's.
fn timers_of(tenant: TenantId, streams: &BTreeMap<String, (i64, Reminders)>) -> Vec<TimerChange> {
    let mut out = Vec::new();
    for (_, r) in streams.values() {
        let Some(appointment) = r.appointment_id else {
            continue;
        };
        for n in &r.notifications {
            let cancel = match n.status {
                Status::Scheduled => false,
                Status::Cancelled => true,
                _ => continue,
            };
            out.push(TimerChange {
                spec: TimerSpec {
                    id: n.id,
                    tenant,
                    appointment_id: appointment.as_uuid(),
                    kind: n.kind.as_str().to_owned(),
                    channel: n.channel.as_str().to_owned(),
                    due_at: n.due_at,
                },
                cancel,
            });
        }
    }
    out
}
