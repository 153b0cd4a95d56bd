//! Decisions that span several aggregates: booking and rescheduling read the
//! practitioner, the service and the schedule, and write the appointment and
//! the calendar day(s) together.
use chrono::{DateTime, Duration, Utc};

use crate::aggregate::Aggregate;
use crate::appointment::{Appointment, AppointmentEvent};
use crate::calendar::{calendar_stream, CalendarDay, CalendarEvent, Hold, Reservation};
use crate::error::{DomainError, DomainResult};
use crate::practitioner::Practitioner;
use crate::schedule::Schedule;
use crate::service::{DefinedService, Service};
use crate::time::local_day;
use crate::values::{PatientRef, Reason, ShortText};
use crate::{AppointmentId, PractitionerId, ReservationId, ServiceId};

/// What a booking needs to know, loaded by the caller.
#[derive(Debug, Clone, Copy)]
pub struct BookingContext<'a> {
    /// The hospital's time zone: the calendar day of a booking is the date
    /// a clock in the hospital shows at its start, whether or not the
    /// practitioner has a schedule (one without events is in UTC).
    pub time_zone: chrono_tz::Tz,
    pub practitioner: &'a Practitioner,
    pub service: &'a Service,
    pub schedule: &'a Schedule,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BookAppointment {
    pub appointment_id: AppointmentId,
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    pub start: DateTime<Utc>,
    pub patient: PatientRef,
    pub note: Option<Reason>,
    pub his_appointment_id: Option<ShortText>,
    /// Book even where Buktor's rules refuse (taken time, no availability,
    /// notice, window), for this recorded reason. Only the HIS, the master
    /// of its appointments, is offered this.
    pub overriding: Option<Reason>,
    /// The patient's reservation of this time, which the booking takes over.
    pub reservation: Option<ReservationId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RescheduleAppointment {
    pub appointment_id: AppointmentId,
    /// `None` keeps the current practitioner.
    pub practitioner_id: Option<PractitionerId>,
    pub start: DateTime<Utc>,
    pub reason: Option<Reason>,
    pub overriding: Option<Reason>,
    /// A reservation of the new time, which the move takes over.
    pub reservation: Option<ReservationId>,
}

/// Events to append, per stream, all in one atomic write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub calendar: Vec<(String, Vec<CalendarEvent>)>,
    pub appointment: AppointmentEvent,
}

/// Checks every rule that does not depend on other bookings and returns the
/// time the appointment would hold.
fn bookable_hold(
    ctx: &BookingContext<'_>,
    practitioner_id: PractitionerId,
    service_id: ServiceId,
    start: DateTime<Utc>,
    overriding: bool,
) -> DomainResult<Hold> {
    let practitioner = ctx.practitioner.get(practitioner_id)?;
    let DefinedService {
        details, active, ..
    } = ctx.service.get(service_id)?;
    let hold = Hold {
        service_id,
        start,
        end: start + details.duration.duration(),
        buffer_before: details.buffer_before,
        buffer_after: details.buffer_after,
        capacity: details.capacity,
    };
    if overriding {
        return Ok(hold);
    }
    if !practitioner.active {
        return Err(DomainError::PractitionerInactive(practitioner_id));
    }
    if !*active {
        return Err(DomainError::ServiceInactive(service_id));
    }
    if !details.practitioners.contains(&practitioner_id) {
        return Err(DomainError::ServiceNotOffered {
            service: service_id,
            practitioner: practitioner_id,
        });
    }
    if start <= ctx.now {
        return Err(DomainError::InThePast { start });
    }
    let earliest = ctx.now + details.min_notice.duration();
    if start < earliest {
        return Err(DomainError::InsideMinimumNotice { start, earliest });
    }
    let latest = ctx.now + Duration::days(i64::from(details.max_advance_days));
    if start > latest {
        return Err(DomainError::BeyondBookingWindow { start, latest });
    }
    if !ctx.schedule.offers(start, details.duration) {
        return Err(DomainError::OutsideAvailability { start });
    }
    if !hold.within_day(ctx.time_zone) {
        return Err(DomainError::OutsideAvailability { start });
    }
    Ok(hold)
}

/// How the appointment gets its time on the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The time must be free.
    Free,
    /// The HIS's override: whether or not it is free.
    Overriding,
    /// The patient's reservation of exactly this time becomes the booking.
    Reservation(ReservationId),
}

impl Claim {
    fn new(overriding: bool, reservation: Option<ReservationId>) -> Self {
        match (overriding, reservation) {
            (true, _) => Claim::Overriding,
            (false, Some(r)) => Claim::Reservation(r),
            (false, None) => Claim::Free,
        }
    }
}

fn hold_on(
    ctx: &BookingContext<'_>,
    calendar: &CalendarDay,
    practitioner_id: PractitionerId,
    appointment_id: AppointmentId,
    hold: Hold,
    claim: Claim,
) -> DomainResult<Vec<CalendarEvent>> {
    match claim {
        Claim::Overriding => Ok(vec![calendar.overbook(
            practitioner_id,
            appointment_id,
            hold,
        )]),
        Claim::Free => Ok(vec![calendar.hold(
            practitioner_id,
            appointment_id,
            hold,
            ctx.now,
        )?]),
        Claim::Reservation(id) => {
            // The reservation must be of the very time being booked, else
            // a reservation of one slot could book another past its rules.
            match calendar.reservations.get(&id) {
                Some(r) if r.hold == hold => {}
                _ => return Err(DomainError::HoldNotFound(id)),
            }
            calendar.claim(practitioner_id, appointment_id, id, ctx.now)
        }
    }
}

/// Keeps a slot for a patient filling in the form, if a booking of it could
/// be made now; the booking then claims it with [`BookAppointment::reservation`].
#[allow(clippy::too_many_arguments)]
pub fn reserve(
    ctx: &BookingContext<'_>,
    calendar: &CalendarDay,
    practitioner_id: PractitionerId,
    service_id: ServiceId,
    start: DateTime<Utc>,
    reservation_id: ReservationId,
    expires_at: DateTime<Utc>,
) -> DomainResult<CalendarEvent> {
    if expires_at <= ctx.now {
        return Err(DomainError::invalid(
            "expiresAt",
            "a hold must end in the future",
        ));
    }
    let hold = bookable_hold(ctx, practitioner_id, service_id, start, false)?;
    calendar.reserve(
        practitioner_id,
        reservation_id,
        Reservation { hold, expires_at },
        ctx.now,
    )
}

/// The calendar stream a booking at `start` with `practitioner` goes to,
/// in a hospital in `zone`.
pub fn calendar_for(
    zone: chrono_tz::Tz,
    practitioner: PractitionerId,
    start: DateTime<Utc>,
) -> String {
    calendar_stream(practitioner, local_day(zone, start))
}

pub fn book(
    ctx: &BookingContext<'_>,
    existing: &Appointment,
    calendar: &CalendarDay,
    cmd: BookAppointment,
) -> DomainResult<Decision> {
    if existing.booked.is_some() {
        return Err(DomainError::AppointmentAlreadyExists(cmd.appointment_id));
    }
    let overriding = cmd.overriding.is_some();
    let hold = bookable_hold(
        ctx,
        cmd.practitioner_id,
        cmd.service_id,
        cmd.start,
        overriding,
    )?;
    let day = local_day(ctx.time_zone, cmd.start);
    let end = hold.end;
    let held = hold_on(
        ctx,
        calendar,
        cmd.practitioner_id,
        cmd.appointment_id,
        hold,
        Claim::new(overriding, cmd.reservation),
    )?;
    Ok(Decision {
        calendar: vec![(calendar_stream(cmd.practitioner_id, day), held)],
        appointment: AppointmentEvent::AppointmentBooked {
            appointment_id: cmd.appointment_id,
            practitioner_id: cmd.practitioner_id,
            service_id: cmd.service_id,
            start: cmd.start,
            end,
            calendar_day: day,
            patient: cmd.patient,
            note: cmd.note,
            his_appointment_id: cmd.his_appointment_id,
            rules_overridden: cmd.overriding,
        },
    })
}

/// Moves an appointment. `old_calendar` is the day it holds now; `new_calendar`
/// the target day, or `None` when that is the same stream.
pub fn reschedule(
    ctx: &BookingContext<'_>,
    appointment: &Appointment,
    old_calendar: &CalendarDay,
    new_calendar: Option<&CalendarDay>,
    cmd: RescheduleAppointment,
) -> DomainResult<Decision> {
    let current = appointment.ensure_reschedulable(cmd.appointment_id)?;
    let practitioner_id = cmd.practitioner_id.unwrap_or(current.practitioner_id);
    if practitioner_id == current.practitioner_id && cmd.start == current.start {
        return Err(DomainError::SameTime { start: cmd.start });
    }
    let overriding = cmd.overriding.is_some();
    let claim = Claim::new(overriding, cmd.reservation);
    let hold = bookable_hold(
        ctx,
        practitioner_id,
        current.service_id,
        cmd.start,
        overriding,
    )?;
    let old_stream = calendar_stream(current.practitioner_id, current.calendar_day);
    let new_day = local_day(ctx.time_zone, cmd.start);
    let new_stream = calendar_stream(practitioner_id, new_day);
    let end = hold.end;
    let released = old_calendar.release(current.practitioner_id, cmd.appointment_id);
    let calendar = match new_calendar {
        None if new_stream == old_stream => {
            let held = hold_on(
                ctx,
                old_calendar,
                practitioner_id,
                cmd.appointment_id,
                hold,
                claim,
            )?;
            vec![(old_stream, released.into_iter().chain(held).collect())]
        }
        None => {
            return Err(DomainError::invalid(
                "start",
                "the target day's calendar was not loaded",
            ))
        }
        Some(target) => {
            // A different stream: the appointment's old hold is not in it.
            let held = hold_on(
                ctx,
                target,
                practitioner_id,
                cmd.appointment_id,
                hold,
                claim,
            )?;
            vec![
                (old_stream, released.into_iter().collect()),
                (new_stream, held),
            ]
        }
    };
    Ok(Decision {
        calendar,
        appointment: AppointmentEvent::AppointmentRescheduled {
            appointment_id: cmd.appointment_id,
            previous_practitioner_id: current.practitioner_id,
            previous_start: current.start,
            practitioner_id,
            start: cmd.start,
            end,
            calendar_day: new_day,
            reason: cmd.reason,
            rules_overridden: cmd.overriding,
        },
    })
}

/// A cancellation also frees the calendar time.
pub fn cancel(
    appointment: &Appointment,
    calendar: &CalendarDay,
    id: AppointmentId,
    reason: Reason,
    cancelled_by: crate::appointment::CancelledBy,
    reason_code: Option<crate::appointment::CancellationCode>,
) -> DomainResult<Decision> {
    let event = appointment.cancel(id, reason, cancelled_by, reason_code)?;
    let current = appointment.get(id)?;
    let stream = calendar_stream(current.practitioner_id, current.calendar_day);
    let released = calendar.release(current.practitioner_id, id);
    Ok(Decision {
        calendar: vec![(stream, released.into_iter().collect())],
        appointment: event,
    })
}

/// Stream id of an aggregate instance: `{type}-{key}`.
pub fn stream_id<A: Aggregate>(key: impl std::fmt::Display) -> String {
    format!("{}-{key}", A::STREAM_TYPE)
}
