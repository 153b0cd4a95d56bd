//! Commands as the HIS sends them: keyed by the HIS's own ids, each carrying
//! the HIS's version of the record. `HisVersioned` wraps a change with the
//! record's version guard (`buktor_domain::his`), appended in the same
//! atomic write, so an older version never rolls a newer one back, on any
//! number of instances. The upserts decide, on the state they load, whether
//! the HIS's record means a creation, a change or nothing, so a retry after
//! a lost race decides afresh.
use buktor_domain::appointment::{Appointment, AppointmentStatus};
use buktor_domain::booking::stream_id;
use buktor_domain::his::{his_record_stream, HisRecordKind, HisVersion};
use buktor_domain::practitioner::{Practitioner, PractitionerDetails};
use buktor_domain::schedule::{ScheduleException, WeeklyRule};
use buktor_domain::service::{Service, ServiceDetails};
use buktor_domain::time::Instant;
use buktor_domain::values::{PatientRef, Reason, ShortText};
use buktor_domain::{AppointmentId, DomainError, PractitionerId, Role, ServiceId, TenantId};
use serde::Serialize;
use uuid::Uuid;

use super::{
    AppResult, Book, Cancel, Command, CommandContext, CommandOutcome, Decided, Pending,
    RecordAttendance, RecordPatientContact, Reschedule, Scheduler,
};

/// A change from the HIS to one of its records, at the HIS's version.
#[derive(Debug, Clone, Serialize)]
pub struct HisVersioned<C> {
    pub kind: HisRecordKind,
    pub his_id: ShortText,
    pub version: HisVersion,
    /// Why Buktor's rules may be overridden, when the HIS forces the change.
    pub overriding: Option<Reason>,
    pub change: C,
}

impl<C> HisVersioned<C> {
    /// Buktor's id of the record in `tenant`.
    pub fn buktor_id(&self, tenant: TenantId) -> Uuid {
        self.kind.buktor_id(tenant, &self.his_id)
    }
}

impl<C: Command> Command for HisVersioned<C> {
    const NAME: &'static str = C::NAME;

    fn allowed(role: Role) -> bool {
        role == Role::HisSystem && C::allowed(role)
    }

    fn contention_key(&self, ctx: &CommandContext) -> Option<String> {
        self.change.contention_key(ctx)
    }

    async fn decide(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
    ) -> AppResult<Decided> {
        let stream = his_record_stream(self.kind, self.buktor_id(ctx.tenant));
        let guard = s.load(ctx.tenant, &s.his_records, &stream).await?;
        // Checked first: a stale version is acknowledged without looking further.
        let applied = guard.state.apply_version(
            self.kind,
            self.his_id.clone(),
            self.version,
            self.overriding.clone(),
        )?;
        let mut decided = self.change.decide(s, ctx, new_id).await?;
        decided.streams.push(Pending::new(
            ctx.tenant,
            stream,
            guard,
            vec![applied],
            |s| &s.his_records,
        ));
        Ok(decided)
    }
}

/// The appointment as the HIS has it now: booked if Buktor does not know
/// it, moved if its time or practitioner changed, otherwise unchanged.
#[derive(Debug, Clone, Serialize)]
pub struct UpsertHisAppointment {
    pub his_appointment_id: ShortText,
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    pub start: Instant,
    pub patient: PatientRef,
    pub note: Option<Reason>,
    pub overriding: Option<Reason>,
}

impl Command for UpsertHisAppointment {
    const NAME: &'static str = "hisUpsertAppointment";

    fn allowed(role: Role) -> bool {
        role.can_write_appointments()
    }

    // A HIS sends a practitioner's day together, so its bookings race on
    // the day's calendar: they take turns there rather than retrying.
    fn contention_key(&self, ctx: &CommandContext) -> Option<String> {
        Some(buktor_domain::calendar::calendar_stream(
            self.practitioner_id,
            self.start.local_day(ctx.time_zone),
        ))
    }

    async fn decide(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
    ) -> AppResult<Decided> {
        let id = AppointmentId::from_uuid(
            HisRecordKind::Appointment.buktor_id(ctx.tenant, &self.his_appointment_id),
        );
        // A booking that another instance made between this read and the
        // booking's own read is seen on the next turn, as a move.
        for _ in 0..3 {
            match self.decide_once(s, ctx, new_id, id).await {
                Err(super::AppError::Domain(DomainError::AppointmentAlreadyExists(_))) => continue,
                decided => return decided,
            }
        }
        Err(super::AppError::Contention(3))
    }
}

impl UpsertHisAppointment {
    async fn decide_once(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
        new_id: Uuid,
        id: AppointmentId,
    ) -> AppResult<Decided> {
        let current = s
            .load(ctx.tenant, &s.appointments, &stream_id::<Appointment>(id))
            .await?;
        let Some(booked) = &current.state.booked else {
            let book = Book {
                appointment_id: Some(id),
                practitioner_id: self.practitioner_id,
                service_id: self.service_id,
                start: self.start,
                patient: self.patient.clone(),
                note: self.note.clone(),
                his_appointment_id: Some(self.his_appointment_id.clone()),
                overriding: self.overriding.clone(),
                reservation: None,
            };
            return book.decide(s, ctx, new_id).await;
        };
        if booked.service_id != self.service_id {
            return Err(DomainError::invalid(
                "serviceId",
                "an appointment keeps its service; cancel it and send a new appointment",
            )
            .into());
        }
        if booked.start == self.start.get() && booked.practitioner_id == self.practitioner_id {
            return Ok(Decided {
                id: id.as_uuid(),
                streams: Vec::new(),
            });
        }
        if booked.status != AppointmentStatus::Booked {
            return Err(DomainError::InvalidTransition {
                action: "reschedule",
                status: booked.status.as_str(),
            }
            .into());
        }
        Reschedule {
            appointment_id: id,
            practitioner_id: Some(self.practitioner_id),
            start: self.start,
            reason: None,
            overriding: self.overriding.clone(),
            reservation: None,
        }
        .decide(s, ctx, new_id)
        .await
    }
}

/// A practitioner as the HIS has it now, active or not.
#[derive(Debug, Clone, Serialize)]
pub struct UpsertHisPractitioner {
    pub details: PractitionerDetails,
    pub active: bool,
}

impl Command for UpsertHisPractitioner {
    const NAME: &'static str = "hisUpsertPractitioner";

    fn allowed(role: Role) -> bool {
        role.can_configure()
    }

    async fn decide(&self, s: &Scheduler, ctx: &CommandContext, _: Uuid) -> AppResult<Decided> {
        let his_id = self
            .details
            .external_id
            .as_ref()
            .ok_or_else(|| DomainError::invalid("hisId", "is required"))?;
        let id =
            PractitionerId::from_uuid(HisRecordKind::Practitioner.buktor_id(ctx.tenant, his_id));
        s.decide_on(
            ctx,
            |s| &s.practitioners,
            stream_id::<Practitioner>(id),
            id.as_uuid(),
            |state| state.sync(id, self.details.clone(), self.active),
        )
        .await
    }
}

/// A service as the HIS has it now, active or not.
#[derive(Debug, Clone, Serialize)]
pub struct UpsertHisService {
    pub details: ServiceDetails,
    pub active: bool,
}

impl Command for UpsertHisService {
    const NAME: &'static str = "hisUpsertService";

    fn allowed(role: Role) -> bool {
        role.can_configure()
    }

    async fn decide(&self, s: &Scheduler, ctx: &CommandContext, _: Uuid) -> AppResult<Decided> {
        let his_id = self
            .details
            .external_id
            .as_ref()
            .ok_or_else(|| DomainError::invalid("hisId", "is required"))?;
        let id = ServiceId::from_uuid(HisRecordKind::Service.buktor_id(ctx.tenant, his_id));
        s.ensure_practitioners_exist(ctx, &self.details).await?;
        s.decide_on(
            ctx,
            |s| &s.services,
            stream_id::<Service>(id),
            id.as_uuid(),
            |state| state.sync(id, self.details.clone(), self.active),
        )
        .await
    }
}

/// A practitioner's whole schedule as the HIS has it: the weekly rules and
/// every exception. Exceptions Buktor has that the HIS no longer sends are
/// removed; changed ones are replaced.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaceHisSchedule {
    pub practitioner_id: PractitionerId,
    pub rules: Vec<WeeklyRule>,
    pub exceptions: Vec<ScheduleException>,
}

impl Command for ReplaceHisSchedule {
    const NAME: &'static str = "hisReplaceSchedule";

    fn allowed(role: Role) -> bool {
        role.can_configure()
    }

    async fn decide(&self, s: &Scheduler, ctx: &CommandContext, _: Uuid) -> AppResult<Decided> {
        let stream = s
            .schedule_stream_of_existing(ctx, self.practitioner_id)
            .await?;
        let p = self.practitioner_id;
        s.decide_on(
            ctx,
            |s| &s.schedules,
            stream,
            p.as_uuid(),
            |state| state.replace(p, ctx.time_zone, self.rules.clone(), &self.exceptions),
        )
        .await
    }
}

macro_rules! his_command {
    ($method:ident, $change:ty) => {
        impl Scheduler {
            pub async fn $method(
                &self,
                ctx: &CommandContext,
                command: &HisVersioned<$change>,
            ) -> AppResult<CommandOutcome> {
                self.run(ctx, command).await
            }
        }
    };
}

his_command!(his_upsert_appointment, UpsertHisAppointment);
his_command!(his_cancel_appointment, Cancel);
his_command!(his_record_attendance, RecordAttendance);
his_command!(his_upsert_practitioner, UpsertHisPractitioner);
his_command!(his_upsert_service, UpsertHisService);
his_command!(his_replace_schedule, ReplaceHisSchedule);
his_command!(his_record_patient_contact, RecordPatientContact);

impl Scheduler {
    /// The last version of a HIS record Buktor applied.
    pub async fn his_version(
        &self,
        tenant: TenantId,
        kind: HisRecordKind,
        buktor_id: Uuid,
    ) -> AppResult<Option<HisVersion>> {
        let stream = his_record_stream(kind, buktor_id);
        Ok(self
            .load(tenant, &self.his_records, &stream)
            .await?
            .state
            .applied)
    }
}
