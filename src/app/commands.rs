//! Every write the server offers. Each struct is what a client sends (already
//! parsed into domain values); `decide` loads what the rule needs and returns
//! the events.
use buktor_domain::appointment::{Appointment, CancellationCode, CancelledBy};
use buktor_domain::booking::{
    self, stream_id, BookAppointment, BookingContext, RescheduleAppointment,
};
use buktor_domain::calendar::calendar_stream;
use buktor_domain::practitioner::{Practitioner, PractitionerDetails};
use buktor_domain::schedule::{Schedule, ScheduleException, WeeklyRule};
use buktor_domain::service::{Service, ServiceDetails};
use buktor_domain::time::Instant;
use buktor_domain::values::{PatientRef, Reason, ShortText};
use buktor_domain::{AppointmentId, PractitionerId, ReservationId, Role, ServiceId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{AppResult, CommandContext, CommandOutcome, Decided, Pending, Scheduler};

fn configures(role: Role) -> bool {
    role.can_configure()
}

fn books(role: Role) -> bool {
    role.can_write_appointments()
}

/// A patient acts only through the widget, on a hold or on the one
/// appointment their manage link names; the HTTP layer checks which.
fn books_or_patient(role: Role) -> bool {
    role.can_write_appointments() || role == Role::Patient
}

macro_rules! command {
    ($ty:ident, $name:literal, $allowed:path, $method:ident) => {
        command!($ty, $name, $allowed, $method, |_c, _ctx| None);
    };
    ($ty:ident, $name:literal, $allowed:path, $method:ident, $contention:expr) => {
        impl super::Command for $ty {
            const NAME: &'static str = $name;
            fn allowed(role: Role) -> bool {
                $allowed(role)
            }
            fn contention_key(&self, ctx: &CommandContext) -> Option<String> {
                let key: fn(&$ty, &CommandContext) -> Option<String> = $contention;
                key(self, ctx)
            }
            async fn decide(
                &self,
                s: &Scheduler,
                ctx: &CommandContext,
                new_id: Uuid,
            ) -> AppResult<Decided> {
                self.decide_with(s, ctx, new_id).await
            }
        }

        impl Scheduler {
            pub async fn $method(
                &self,
                ctx: &CommandContext,
                command: &$ty,
            ) -> AppResult<CommandOutcome> {
                self.run(ctx, command).await
            }
        }
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct RegisterPractitioner {
    pub id: Option<PractitionerId>,
    pub details: PractitionerDetails,
}
command!(
    RegisterPractitioner,
    "registerPractitioner",
    configures,
    register_practitioner
);

impl RegisterPractitioner {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
    ) -> AppResult<Decided> {
        let id = self.id.unwrap_or(PractitionerId::from_uuid(new_id));
        let stream = stream_id::<Practitioner>(id);
        s.decide_on(
            ctx,
            |s| &s.practitioners,
            stream,
            id.as_uuid(),
            |state| state.register(id, self.details.clone()),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdatePractitioner {
    pub id: PractitionerId,
    pub details: PractitionerDetails,
}
command!(
    UpdatePractitioner,
    "updatePractitioner",
    configures,
    update_practitioner
);

impl UpdatePractitioner {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = stream_id::<Practitioner>(self.id);
        s.decide_on(
            ctx,
            |s| &s.practitioners,
            stream,
            self.id.as_uuid(),
            |state| state.update(self.id, self.details.clone()),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SetPractitionerActive {
    pub id: PractitionerId,
    pub active: bool,
}
command!(
    SetPractitionerActive,
    "setPractitionerActive",
    configures,
    set_practitioner_active
);

impl SetPractitionerActive {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = stream_id::<Practitioner>(self.id);
        s.decide_on(
            ctx,
            |s| &s.practitioners,
            stream,
            self.id.as_uuid(),
            |state| state.set_active(self.id, self.active),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DefineService {
    pub id: Option<ServiceId>,
    pub details: ServiceDetails,
}
command!(DefineService, "defineService", configures, define_service);

impl DefineService {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
    ) -> AppResult<Decided> {
        let id = self.id.unwrap_or(ServiceId::from_uuid(new_id));
        s.ensure_practitioners_exist(ctx, &self.details).await?;
        let stream = stream_id::<Service>(id);
        s.decide_on(
            ctx,
            |s| &s.services,
            stream,
            id.as_uuid(),
            |state| state.define(id, self.details.clone()),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdateService {
    pub id: ServiceId,
    pub details: ServiceDetails,
}
command!(UpdateService, "updateService", configures, update_service);

impl UpdateService {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        s.ensure_practitioners_exist(ctx, &self.details).await?;
        let stream = stream_id::<Service>(self.id);
        s.decide_on(
            ctx,
            |s| &s.services,
            stream,
            self.id.as_uuid(),
            |state| state.update(self.id, self.details.clone()),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SetServiceActive {
    pub id: ServiceId,
    pub active: bool,
}
command!(
    SetServiceActive,
    "setServiceActive",
    configures,
    set_service_active
);

impl SetServiceActive {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = stream_id::<Service>(self.id);
        s.decide_on(
            ctx,
            |s| &s.services,
            stream,
            self.id.as_uuid(),
            |state| state.set_active(self.id, self.active),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SetWeeklyRules {
    pub practitioner_id: PractitionerId,
    pub rules: Vec<WeeklyRule>,
}
command!(
    SetWeeklyRules,
    "setWeeklyRules",
    configures,
    set_weekly_rules
);

impl SetWeeklyRules {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = s
            .schedule_stream_of_existing(ctx, self.practitioner_id)
            .await?;
        s.decide_on(
            ctx,
            |s| &s.schedules,
            stream,
            self.practitioner_id.as_uuid(),
            |state| state.set_weekly_rules(self.practitioner_id, ctx.time_zone, self.rules.clone()),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AddScheduleException {
    pub practitioner_id: PractitionerId,
    pub exception: ScheduleException,
}
command!(
    AddScheduleException,
    "addScheduleException",
    configures,
    add_schedule_exception
);

impl AddScheduleException {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = s
            .schedule_stream_of_existing(ctx, self.practitioner_id)
            .await?;
        s.decide_on(
            ctx,
            |s| &s.schedules,
            stream,
            self.exception.id,
            |state| {
                state.add_exception(self.practitioner_id, ctx.time_zone, self.exception.clone())
            },
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoveScheduleException {
    pub practitioner_id: PractitionerId,
    pub exception_id: Uuid,
}
command!(
    RemoveScheduleException,
    "removeScheduleException",
    configures,
    remove_schedule_exception
);

impl RemoveScheduleException {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let stream = s
            .schedule_stream_of_existing(ctx, self.practitioner_id)
            .await?;
        s.decide_on(
            ctx,
            |s| &s.schedules,
            stream,
            self.exception_id,
            |state| state.remove_exception(self.practitioner_id, self.exception_id),
        )
        .await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Book {
    pub appointment_id: Option<AppointmentId>,
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    /// Parsed at the edge: within the years Buktor accepts, so every
    /// conversion below stays in range (`buktor_domain::time`).
    pub start: Instant,
    pub patient: PatientRef,
    pub note: Option<Reason>,
    pub his_appointment_id: Option<ShortText>,
    /// See `BookAppointment::overriding`.
    pub overriding: Option<Reason>,
    /// The widget's hold on this time, which the booking takes over.
    pub reservation: Option<ReservationId>,
}
// Bookings of one practitioner-day race on its calendar stream.
command!(Book, "bookAppointment", books_or_patient, book, |c, ctx| {
    Some(calendar_stream(
        c.practitioner_id,
        c.start.local_day(ctx.time_zone),
    ))
});

impl Book {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
    ) -> AppResult<Decided> {
        let id = self
            .appointment_id
            .unwrap_or(AppointmentId::from_uuid(new_id));
        let day = self.start.local_day(ctx.time_zone);
        let (practitioner, service, schedule, calendar, appointment) = s
            .load5(
                ctx.tenant,
                (
                    &s.practitioners,
                    stream_id::<Practitioner>(self.practitioner_id),
                ),
                (&s.services, stream_id::<Service>(self.service_id)),
                (&s.schedules, stream_id::<Schedule>(self.practitioner_id)),
                (&s.calendars, calendar_stream(self.practitioner_id, day)),
                (&s.appointments, stream_id::<Appointment>(id)),
            )
            .await?;
        let ctx_b = BookingContext {
            time_zone: ctx.time_zone,
            practitioner: &practitioner.state,
            service: &service.state,
            schedule: &schedule.state,
            now: s.now(),
        };
        // The appointment stream is read too (in the same round trip): a client
        // may name the id, and a taken id must be refused, not retried forever.
        let decision = booking::book(
            &ctx_b,
            &appointment.state,
            &calendar.state,
            BookAppointment {
                appointment_id: id,
                practitioner_id: self.practitioner_id,
                service_id: self.service_id,
                start: self.start.get(),
                patient: self.patient.clone(),
                note: self.note.clone(),
                his_appointment_id: self.his_appointment_id.clone(),
                overriding: self.overriding.clone(),
                reservation: self.reservation,
            },
        )?;
        let calendar_id = calendar_stream(self.practitioner_id, day);
        let mut streams = Vec::new();
        for (stream, events) in decision.calendar {
            if stream != calendar_id {
                // Both days come from the hospital's zone: a bug if they differ.
                return Err(super::AppError::Corrupt(format!(
                    "the booking decided on calendar {stream}, not the loaded {calendar_id}"
                )));
            }
            streams.push(Pending::new(
                ctx.tenant,
                stream,
                calendar.clone(),
                events,
                |s| &s.calendars,
            ));
        }
        streams.push(Pending::new(
            ctx.tenant,
            stream_id::<Appointment>(id),
            appointment,
            vec![decision.appointment],
            |s| &s.appointments,
        ));
        Ok(Decided {
            id: id.as_uuid(),
            streams,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Reschedule {
    pub appointment_id: AppointmentId,
    pub practitioner_id: Option<PractitionerId>,
    pub start: Instant,
    pub reason: Option<Reason>,
    pub overriding: Option<Reason>,
    /// A hold on the new time, which the move takes over.
    pub reservation: Option<ReservationId>,
}
command!(
    Reschedule,
    "rescheduleAppointment",
    books_or_patient,
    reschedule
);

impl Reschedule {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let id = self.appointment_id;
        let appointment_stream = stream_id::<Appointment>(id);
        let appointment = s
            .load(ctx.tenant, &s.appointments, &appointment_stream)
            .await?;
        let current = appointment.state.ensure_reschedulable(id)?;
        let practitioner_id = self.practitioner_id.unwrap_or(current.practitioner_id);
        let old_stream = calendar_stream(current.practitioner_id, current.calendar_day);
        let new_day = self.start.local_day(ctx.time_zone);
        let new_stream = calendar_stream(practitioner_id, new_day);
        // The target day is read with the rest; when it is the same day, the
        // fifth read is a repeat of the fourth that finds nothing new.
        let (practitioner, service, schedule, old_calendar, target_calendar) = s
            .load5(
                ctx.tenant,
                (&s.practitioners, stream_id::<Practitioner>(practitioner_id)),
                (&s.services, stream_id::<Service>(current.service_id)),
                (&s.schedules, stream_id::<Schedule>(practitioner_id)),
                (&s.calendars, old_stream.clone()),
                (&s.calendars, new_stream.clone()),
            )
            .await?;
        let new_calendar = (new_stream != old_stream).then_some(target_calendar);
        let ctx_b = BookingContext {
            time_zone: ctx.time_zone,
            practitioner: &practitioner.state,
            service: &service.state,
            schedule: &schedule.state,
            now: s.now(),
        };
        let decision = booking::reschedule(
            &ctx_b,
            &appointment.state,
            &old_calendar.state,
            new_calendar.as_ref().map(|c| &c.state),
            RescheduleAppointment {
                appointment_id: id,
                practitioner_id: self.practitioner_id,
                start: self.start.get(),
                reason: self.reason.clone(),
                overriding: self.overriding.clone(),
                reservation: self.reservation,
            },
        )?;
        let mut streams = Vec::new();
        for (stream, events) in decision.calendar {
            let base = if stream == old_stream {
                old_calendar.clone()
            } else {
                new_calendar.clone().unwrap_or_default()
            };
            streams.push(Pending::new(ctx.tenant, stream, base, events, |s| {
                &s.calendars
            }));
        }
        streams.push(Pending::new(
            ctx.tenant,
            appointment_stream,
            appointment,
            vec![decision.appointment],
            |s| &s.appointments,
        ));
        Ok(Decided {
            id: id.as_uuid(),
            streams,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cancel {
    pub appointment_id: AppointmentId,
    pub reason: Reason,
    pub cancelled_by: CancelledBy,
    /// The coded reason (FHIR `cancelationReason`); left out of the
    /// serialized command when absent, so idempotency fingerprints of
    /// commands without one are what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<CancellationCode>,
}
command!(Cancel, "cancelAppointment", books_or_patient, cancel);

impl Cancel {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let id = self.appointment_id;
        let appointment_stream = stream_id::<Appointment>(id);
        let appointment = s
            .load(ctx.tenant, &s.appointments, &appointment_stream)
            .await?;
        let current = appointment.state.get(id)?;
        let calendar_id = calendar_stream(current.practitioner_id, current.calendar_day);
        let calendar = s.load(ctx.tenant, &s.calendars, &calendar_id).await?;
        let decision = booking::cancel(
            &appointment.state,
            &calendar.state,
            id,
            self.reason.clone(),
            self.cancelled_by,
            self.reason_code,
        )?;
        let mut streams = Vec::new();
        for (stream, events) in decision.calendar {
            streams.push(Pending::new(
                ctx.tenant,
                stream,
                calendar.clone(),
                events,
                |s| &s.calendars,
            ));
        }
        streams.push(Pending::new(
            ctx.tenant,
            appointment_stream,
            appointment,
            vec![decision.appointment],
            |s| &s.appointments,
        ));
        Ok(Decided {
            id: id.as_uuid(),
            streams,
        })
    }
}

/// Keeps a slot for whoever is filling in the booking form, until `expires_at`.
#[derive(Debug, Clone, Serialize)]
pub struct ReserveSlot {
    pub reservation_id: ReservationId,
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    pub start: Instant,
    pub expires_at: DateTime<Utc>,
}
command!(
    ReserveSlot,
    "reserveSlot",
    books_or_patient,
    reserve_slot,
    |c, ctx| Some(calendar_stream(
        c.practitioner_id,
        c.start.local_day(ctx.time_zone)
    ))
);

impl ReserveSlot {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let day = self.start.local_day(ctx.time_zone);
        let stream = calendar_stream(self.practitioner_id, day);
        // The fifth read repeats the fourth and finds nothing new: one round trip.
        let (practitioner, service, schedule, calendar, _) = s
            .load5(
                ctx.tenant,
                (
                    &s.practitioners,
                    stream_id::<Practitioner>(self.practitioner_id),
                ),
                (&s.services, stream_id::<Service>(self.service_id)),
                (&s.schedules, stream_id::<Schedule>(self.practitioner_id)),
                (&s.calendars, stream.clone()),
                (&s.calendars, stream.clone()),
            )
            .await?;
        let event = booking::reserve(
            &BookingContext {
                time_zone: ctx.time_zone,
                practitioner: &practitioner.state,
                service: &service.state,
                schedule: &schedule.state,
                now: s.now(),
            },
            &calendar.state,
            self.practitioner_id,
            self.service_id,
            self.start.get(),
            self.reservation_id,
            self.expires_at,
        )?;
        Ok(Decided {
            id: self.reservation_id.as_uuid(),
            streams: vec![Pending::new(
                ctx.tenant,
                stream,
                calendar,
                vec![event],
                |s| &s.calendars,
            )],
        })
    }
}

/// Lets go of a reservation; nothing to do when it is already gone.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReservation {
    pub reservation_id: ReservationId,
    pub practitioner_id: PractitionerId,
    pub day: chrono::NaiveDate,
}
command!(
    ReleaseReservation,
    "releaseReservation",
    books_or_patient,
    release_reservation
);

impl ReleaseReservation {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        s.decide_on(
            ctx,
            |s| &s.calendars,
            calendar_stream(self.practitioner_id, self.day),
            self.reservation_id.as_uuid(),
            |day| {
                Ok(day
                    .release_reservation(self.practitioner_id, self.reservation_id)
                    .into_iter()
                    .collect())
            },
        )
        .await
    }
}

/// The steps of an appointment's day that touch only the appointment itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Attendance {
    CheckIn,
    Complete,
    NoShow,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordAttendance {
    pub appointment_id: AppointmentId,
    pub step: Attendance,
}
command!(
    RecordAttendance,
    "recordAttendance",
    books,
    record_attendance
);

impl RecordAttendance {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        let id = self.appointment_id;
        let stream = stream_id::<Appointment>(id);
        let appointment = s.load(ctx.tenant, &s.appointments, &stream).await?;
        let now = s.now();
        let event = match self.step {
            Attendance::CheckIn => appointment.state.check_in(id, now)?,
            Attendance::Complete => appointment.state.complete(id, now)?,
            Attendance::NoShow => appointment.state.mark_no_show(id, now)?,
        };
        Ok(Decided {
            id: id.as_uuid(),
            streams: vec![Pending::new(
                ctx.tenant,
                stream,
                appointment,
                vec![event],
                |s| &s.appointments,
            )],
        })
    }
}

impl Scheduler {
    /// Decides a command that changes only the one stream it loads.
    pub(super) async fn decide_on<A>(
        &self,
        ctx: &CommandContext,
        cache: fn(&Scheduler) -> &super::cache::AggregateCache<A>,
        stream: String,
        id: Uuid,
        decide: impl FnOnce(&A) -> buktor_domain::DomainResult<Vec<A::Event>>,
    ) -> AppResult<Decided>
    where
        A: buktor_domain::Aggregate + Send + 'static,
        A::Event: Send + 'static,
    {
        let current = self.load(ctx.tenant, cache(self), &stream).await?;
        let events = decide(&current.state)?;
        Ok(Decided {
            id,
            streams: vec![Pending::new(ctx.tenant, stream, current, events, cache)],
        })
    }

    pub(super) async fn ensure_practitioners_exist(
        &self,
        ctx: &CommandContext,
        details: &ServiceDetails,
    ) -> AppResult<()> {
        for id in &details.practitioners {
            let p = self
                .load(
                    ctx.tenant,
                    &self.practitioners,
                    &stream_id::<Practitioner>(*id),
                )
                .await?;
            p.state.get(*id)?;
        }
        Ok(())
    }

    /// A schedule belongs to a registered practitioner.
    pub(super) async fn schedule_stream_of_existing(
        &self,
        ctx: &CommandContext,
        practitioner_id: PractitionerId,
    ) -> AppResult<String> {
        let p = self
            .load(
                ctx.tenant,
                &self.practitioners,
                &stream_id::<Practitioner>(practitioner_id),
            )
            .await?;
        p.state.get(practitioner_id)?;
        Ok(stream_id::<Schedule>(practitioner_id))
    }
}

/// Records a patient's contact data, language and opted-out channels, whole,
/// under the id derived from the HIS's patient id. Notifications prefer it
/// to the copy an appointment took at booking.
#[derive(Debug, Clone, Serialize)]
pub struct RecordPatientContact {
    pub his_patient_id: buktor_domain::values::ShortText,
    pub contact: buktor_domain::patient::PatientContact,
}
// A patient records their own, through the widget only (see `crate::embed`).
command!(
    RecordPatientContact,
    "recordPatientContact",
    books_or_patient,
    record_patient_contact
);

impl RecordPatientContact {
    async fn decide_with(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        _: Uuid,
    ) -> AppResult<Decided> {
        use buktor_domain::patient::{patient_id_for, Patient};
        let id = patient_id_for(ctx.tenant, &self.his_patient_id);
        s.decide_on(
            ctx,
            |s| &s.patients,
            stream_id::<Patient>(id),
            id.as_uuid(),
            |state| state.record_contact(id, self.his_patient_id.clone(), self.contact.clone()),
        )
        .await
    }
}
