//! GraphQL output types: thin views over domain states.
use async_graphql::{Context, Enum, Object, Result, SimpleObject, ID};
use buktor_domain::appointment::{AppointmentStatus, BookedAppointment};
use buktor_domain::practitioner::RegisteredPractitioner;
use buktor_domain::schedule::ExceptionKind;
use buktor_domain::service::DefinedService;
use buktor_domain::{EventMetadata, PractitionerId};
use chrono::{DateTime, NaiveDate, Utc};

use super::inputs::{CancelledByInput, WeekdayInput};
use super::{app_error, principal};
use crate::app::CommandOutcome;
use crate::auth::Principal;

pub struct Me(pub Principal);

#[Object]
impl Me {
    async fn tenant_id(&self) -> ID {
        ID(self.0.tenant.id.to_string())
    }
    async fn tenant_name(&self) -> &str {
        &self.0.tenant.name
    }
    /// The hospital's IANA time zone: schedules are in it.
    async fn time_zone(&self) -> String {
        self.0.tenant.time_zone.name().to_owned()
    }
    async fn role(&self) -> &'static str {
        self.0.role.as_str()
    }
    async fn key_name(&self) -> &str {
        &self.0.key_name
    }
}

/// What a mutation did.
pub struct CommandResult(pub CommandOutcome);

#[Object]
impl CommandResult {
    /// The id of what was created or changed.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The global position of the command's last event; null when nothing changed.
    async fn position(&self) -> Option<String> {
        self.0.position.map(|p| p.to_string())
    }
    /// How many events the command recorded.
    async fn events(&self) -> usize {
        self.0.events
    }
}

pub struct Practitioner(pub RegisteredPractitioner);

#[Object]
impl Practitioner {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.details.name.as_str()
    }
    async fn specialty(&self) -> &str {
        self.0.details.specialty.as_str()
    }
    async fn department(&self) -> Option<&str> {
        self.0.details.department.as_ref().map(|d| d.as_str())
    }
    async fn location(&self) -> Option<&str> {
        self.0.details.location.as_ref().map(|d| d.as_str())
    }
    async fn external_id(&self) -> Option<&str> {
        self.0.details.external_id.as_ref().map(|d| d.as_str())
    }
    async fn active(&self) -> bool {
        self.0.active
    }
}

pub struct Service(pub DefinedService);

#[Object]
impl Service {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.details.name.as_str()
    }
    async fn duration_minutes(&self) -> u32 {
        self.0.details.duration.get()
    }
    async fn buffer_before_minutes(&self) -> u32 {
        self.0.details.buffer_before.get()
    }
    async fn buffer_after_minutes(&self) -> u32 {
        self.0.details.buffer_after.get()
    }
    async fn capacity(&self) -> u32 {
        self.0.details.capacity.get()
    }
    async fn practitioner_ids(&self) -> Vec<ID> {
        self.0
            .details
            .practitioners
            .iter()
            .map(|p| ID(p.to_string()))
            .collect()
    }
    async fn min_notice_minutes(&self) -> u32 {
        self.0.details.min_notice.get()
    }
    /// The HIS's own id for this service.
    async fn external_id(&self) -> Option<&str> {
        self.0.details.external_id.as_ref().map(|d| d.as_str())
    }
    async fn max_advance_days(&self) -> u32 {
        self.0.details.max_advance_days
    }
    async fn active(&self) -> bool {
        self.0.active
    }
}

pub struct Schedule {
    pub practitioner_id: PractitionerId,
    pub schedule: buktor_domain::schedule::Schedule,
}

#[derive(SimpleObject)]
pub struct WeeklyRule {
    weekdays: Vec<WeekdayInput>,
    start: String,
    end: String,
    grid_minutes: u32,
    effective_from: NaiveDate,
    effective_to: Option<NaiveDate>,
}

#[derive(SimpleObject)]
pub struct ScheduleException {
    id: ID,
    date: NaiveDate,
    /// `UNAVAILABLE` or `EXTRA_SESSION`.
    kind: &'static str,
    start: Option<String>,
    end: Option<String>,
    reason: Option<String>,
}

#[Object]
impl Schedule {
    async fn practitioner_id(&self) -> ID {
        ID(self.practitioner_id.to_string())
    }
    async fn time_zone(&self) -> String {
        self.schedule.time_zone.name().to_owned()
    }
    async fn rules(&self) -> Vec<WeeklyRule> {
        self.schedule
            .rules
            .iter()
            .map(|r| WeeklyRule {
                weekdays: r.weekdays.iter().map(|d| (*d).into()).collect(),
                start: r.start.format("%H:%M").to_string(),
                end: r.end.format("%H:%M").to_string(),
                grid_minutes: r.grid.get(),
                effective_from: r.effective_from,
                effective_to: r.effective_to,
            })
            .collect()
    }
    async fn exceptions(&self) -> Vec<ScheduleException> {
        self.schedule
            .exceptions
            .values()
            .map(|e| {
                let (kind, start, end) = match &e.kind {
                    ExceptionKind::Unavailable { start, end } => ("UNAVAILABLE", *start, *end),
                    ExceptionKind::ExtraSession { start, end, .. } => {
                        ("EXTRA_SESSION", Some(*start), Some(*end))
                    }
                };
                ScheduleException {
                    id: ID(e.id.to_string()),
                    date: e.date,
                    kind,
                    start: start.map(|t| t.format("%H:%M").to_string()),
                    end: end.map(|t| t.format("%H:%M").to_string()),
                    reason: e.reason.as_ref().map(|r| r.to_string()),
                }
            })
            .collect()
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Status {
    Booked,
    CheckedIn,
    Completed,
    NoShow,
    Cancelled,
}

impl From<AppointmentStatus> for Status {
    fn from(s: AppointmentStatus) -> Self {
        match s {
            AppointmentStatus::Booked => Status::Booked,
            AppointmentStatus::CheckedIn => Status::CheckedIn,
            AppointmentStatus::Completed => Status::Completed,
            AppointmentStatus::NoShow => Status::NoShow,
            AppointmentStatus::Cancelled => Status::Cancelled,
        }
    }
}

#[derive(SimpleObject)]
pub struct Patient {
    his_patient_id: String,
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
}

#[derive(SimpleObject)]
pub struct Cancellation {
    reason: String,
    cancelled_by: CancelledByInput,
}

#[derive(SimpleObject)]
pub struct Actor {
    id: String,
    role: String,
}

impl Actor {
    pub fn new(actor: &buktor_domain::Actor) -> Self {
        Actor {
            id: actor.id.clone(),
            role: actor.role.as_str().to_owned(),
        }
    }
}

/// One stored event of an appointment, with who did it, when and from where.
#[derive(SimpleObject)]
pub struct HistoryEntry {
    position: String,
    version: i64,
    r#type: String,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    actor: Actor,
    source: String,
    remote_addr: Option<String>,
    correlation_id: ID,
    data: async_graphql::Json<serde_json::Value>,
}

/// An appointment; when read as of a point in the past, its history stops there too.
pub struct Appointment(
    pub BookedAppointment,
    pub Option<crate::projection::views::AsOf>,
);

#[Object]
impl Appointment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn practitioner_id(&self) -> ID {
        ID(self.0.practitioner_id.to_string())
    }
    async fn service_id(&self) -> ID {
        ID(self.0.service_id.to_string())
    }
    async fn start(&self) -> DateTime<Utc> {
        self.0.start
    }
    async fn end(&self) -> DateTime<Utc> {
        self.0.end
    }
    async fn status(&self) -> Status {
        self.0.status.into()
    }
    async fn patient(&self) -> Patient {
        let p = &self.0.patient;
        Patient {
            his_patient_id: p.his_patient_id.to_string(),
            name: p.name.as_ref().map(|n| n.to_string()),
            phone: p.phone.as_ref().map(|n| n.as_str().to_owned()),
            email: p.email.as_ref().map(|n| n.as_str().to_owned()),
        }
    }
    async fn note(&self) -> Option<String> {
        self.0.note.as_ref().map(|n| n.to_string())
    }
    async fn cancellation(&self) -> Option<Cancellation> {
        self.0
            .cancellation
            .as_ref()
            .map(|(reason, by)| Cancellation {
                reason: reason.to_string(),
                cancelled_by: (*by).into(),
            })
    }
    /// Every event of this appointment, oldest first.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<HistoryEntry>> {
        let loader = ctx
            .data_unchecked::<async_graphql::dataloader::DataLoader<super::read::HistoryLoader>>();
        let mut events = loader
            .load_one((principal(ctx).tenant_id(), self.0.id))
            .await?
            .unwrap_or_default();
        if let Some(as_of) = self.1 {
            events.retain(|e| as_of.includes(e));
        }
        events
            .into_iter()
            .map(|e| {
                let meta: EventMetadata = serde_json::from_value(e.metadata)
                    .map_err(|err| app_error(crate::app::AppError::Corrupt(err.to_string())))?;
                Ok(HistoryEntry {
                    position: e.position.to_string(),
                    version: e.version,
                    r#type: e.event_type,
                    occurred_at: meta.occurred_at,
                    recorded_at: e.recorded_at,
                    actor: Actor {
                        id: meta.actor.id,
                        role: meta.actor.role.as_str().to_owned(),
                    },
                    source: meta.source.as_str().to_owned(),
                    remote_addr: meta.remote_addr,
                    correlation_id: ID(meta.correlation_id.to_string()),
                    data: async_graphql::Json(e.payload),
                })
            })
            .collect()
    }
}
