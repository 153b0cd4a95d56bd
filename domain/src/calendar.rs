//! A practitioner's calendar for one local day: the consistency boundary
//! that makes double booking impossible.
//!
//! Every booking, reschedule and cancellation appends to the calendar stream
//! of the practitioner-day it touches, at the version it decided on. The
//! store's per-stream optimistic concurrency then lets exactly one of two
//! racing bookings for overlapping time win, on any number of server
//! instances, with no lock wider than this one stream. A day is small (tens
//! of events), so loading it is cheap, and unrelated bookings on other days
//! or of other practitioners never contend.
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Capacity, Minutes};
use crate::{AppointmentId, PractitionerId, ReservationId, ServiceId};

/// The stream id of a practitioner's local day.
pub fn calendar_stream(practitioner: PractitionerId, day: NaiveDate) -> String {
    format!("{}-{practitioner}-{day}", CalendarDay::STREAM_TYPE)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub service_id: ServiceId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub buffer_before: Minutes,
    pub buffer_after: Minutes,
    pub capacity: Capacity,
}

impl Hold {
    /// The time the practitioner is busy, buffers included.
    pub fn occupied(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            self.start - self.buffer_before.duration(),
            self.end + self.buffer_after.duration(),
        )
    }

    /// Whether the busy time, buffers included, stays inside the local day
    /// of its start. Each day's calendar is checked alone, so time that
    /// spilled over midnight would be invisible to the neighbouring day's
    /// bookings: such a hold is not offered and not accepted.
    pub fn within_day(&self, zone: chrono_tz::Tz) -> bool {
        let (day_start, day_end) =
            crate::time::day_bounds(zone, crate::time::local_day(zone, self.start));
        let (from, to) = self.occupied();
        day_start <= from && to <= day_end
    }

    fn shares_group_with(&self, other: &Hold) -> bool {
        self.capacity.get() > 1 && self.service_id == other.service_id && self.start == other.start
    }
}

/// Time kept for a patient who is filling in the booking form. It lapses by
/// itself at `expires_at`: no event is needed for that, every decision after
/// it simply ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(flatten)]
    pub hold: Hold,
    pub expires_at: DateTime<Utc>,
}

impl Reservation {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CalendarEvent {
    SlotHeld {
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
        #[serde(flatten)]
        hold: Hold,
    },
    SlotReleased {
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
    },
    SlotReserved {
        practitioner_id: PractitionerId,
        reservation_id: ReservationId,
        #[serde(flatten)]
        reservation: Reservation,
    },
    /// The patient let go, or the reservation became a booking.
    ReservationReleased {
        practitioner_id: PractitionerId,
        reservation_id: ReservationId,
    },
}

impl DomainEvent for CalendarEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalendarDay {
    pub holds: BTreeMap<AppointmentId, Hold>,
    /// Expired ones stay until released; they hold nothing.
    #[serde(default)]
    pub reservations: BTreeMap<ReservationId, Reservation>,
}

impl Aggregate for CalendarDay {
    type Event = CalendarEvent;
    const STREAM_TYPE: &'static str = "calendar";

    fn apply(&mut self, event: &CalendarEvent) {
        match event {
            CalendarEvent::SlotHeld {
                appointment_id,
                hold,
                ..
            } => {
                self.holds.insert(*appointment_id, hold.clone());
            }
            CalendarEvent::SlotReleased { appointment_id, .. } => {
                self.holds.remove(appointment_id);
            }
            CalendarEvent::SlotReserved {
                reservation_id,
                reservation,
                ..
            } => {
                self.reservations
                    .insert(*reservation_id, reservation.clone());
            }
            CalendarEvent::ReservationReleased { reservation_id, .. } => {
                self.reservations.remove(reservation_id);
            }
        }
    }
}

impl CalendarDay {
    /// Holds `hold` for `appointment`, unless the time is taken. A group
    /// session (capacity > 1) admits holds of the same service and start up
    /// to its capacity; anything else overlapping, buffers included, is taken.
    /// The appointment's own earlier hold is ignored, so it can move within
    /// the day; so are reservations that lapsed before `now`.
    pub fn hold(
        &self,
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
        hold: Hold,
        now: DateTime<Utc>,
    ) -> DomainResult<CalendarEvent> {
        self.check_free(
            &Claims {
                now,
                moving: Some(appointment_id),
                reservation: None,
            },
            &hold,
        )?;
        Ok(self.overbook(practitioner_id, appointment_id, hold))
    }

    /// Turns a live reservation into the appointment's hold. A lapsed one
    /// still works while nobody else has taken the time meanwhile.
    pub fn claim(
        &self,
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
        reservation_id: ReservationId,
        now: DateTime<Utc>,
    ) -> DomainResult<Vec<CalendarEvent>> {
        let reservation = self
            .reservations
            .get(&reservation_id)
            .ok_or(DomainError::HoldNotFound(reservation_id))?;
        let hold = reservation.hold.clone();
        let claims = Claims {
            now,
            moving: Some(appointment_id),
            reservation: Some(reservation_id),
        };
        if let Err(taken) = self.check_free(&claims, &hold) {
            return Err(if reservation.is_live(now) {
                taken
            } else {
                DomainError::HoldExpired { start: hold.start }
            });
        }
        Ok(vec![
            CalendarEvent::ReservationReleased {
                practitioner_id,
                reservation_id,
            },
            self.overbook(practitioner_id, appointment_id, hold),
        ])
    }

    /// Keeps the time for a patient until `expires_at`, unless it is taken.
    pub fn reserve(
        &self,
        practitioner_id: PractitionerId,
        reservation_id: ReservationId,
        reservation: Reservation,
        now: DateTime<Utc>,
    ) -> DomainResult<CalendarEvent> {
        self.check_free(
            &Claims {
                now,
                moving: None,
                reservation: None,
            },
            &reservation.hold,
        )?;
        Ok(CalendarEvent::SlotReserved {
            practitioner_id,
            reservation_id,
            reservation,
        })
    }

    /// `None` when there is nothing to release: letting go twice is harmless.
    pub fn release_reservation(
        &self,
        practitioner_id: PractitionerId,
        reservation_id: ReservationId,
    ) -> Option<CalendarEvent> {
        self.reservations.contains_key(&reservation_id).then_some(
            CalendarEvent::ReservationReleased {
                practitioner_id,
                reservation_id,
            },
        )
    }

    /// When the next live reservation lapses: the day's free time grows then.
    pub fn next_expiry(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.reservations
            .values()
            .filter(|r| r.is_live(now))
            .map(|r| r.expires_at)
            .min()
    }

    /// Holds the time whether or not it is free: the HIS's override, after
    /// which the day is simply fuller than it should be and offers nothing
    /// that overlaps it.
    pub fn overbook(
        &self,
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
        hold: Hold,
    ) -> CalendarEvent {
        CalendarEvent::SlotHeld {
            practitioner_id,
            appointment_id,
            hold,
        }
    }

    pub fn release(
        &self,
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
    ) -> Option<CalendarEvent> {
        self.holds
            .contains_key(&appointment_id)
            .then_some(CalendarEvent::SlotReleased {
                practitioner_id,
                appointment_id,
            })
    }

    /// Whether a new appointment could hold this time at `now` (the read side asks this).
    pub fn is_free_for(&self, hold: &Hold, now: DateTime<Utc>) -> bool {
        self.check_free(
            &Claims {
                now,
                moving: None,
                reservation: None,
            },
            hold,
        )
        .is_ok()
    }

    /// Refuses a hold that overlaps another or a live reservation (buffers
    /// included) or a full group session, ignoring what `claims` owns.
    fn check_free(&self, claims: &Claims, hold: &Hold) -> DomainResult<()> {
        let (from, to) = hold.occupied();
        let mut same_group = 0u32;
        let appointments = self
            .holds
            .iter()
            .filter(|(id, _)| Some(**id) != claims.moving)
            .map(|(_, h)| h);
        let reservations = self
            .reservations
            .iter()
            .filter(|(id, r)| Some(**id) != claims.reservation && r.is_live(claims.now))
            .map(|(_, r)| &r.hold);
        for other in appointments.chain(reservations) {
            let (other_from, other_to) = other.occupied();
            if other_from < to && from < other_to {
                if hold.shares_group_with(other) {
                    same_group += 1;
                } else {
                    return Err(DomainError::SlotTaken { start: hold.start });
                }
            }
        }
        if same_group >= hold.capacity.get() {
            return Err(DomainError::SlotTaken { start: hold.start });
        }
        Ok(())
    }
}

/// What a decision may ignore when it checks the time is free.
struct Claims {
    now: DateTime<Utc>,
    /// The appointment being moved: its own old hold.
    moving: Option<AppointmentId>,
    /// The reservation being turned into the booking.
    reservation: Option<ReservationId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Before every slot of these tests.
    const NOW: DateTime<Utc> = DateTime::from_timestamp_nanos(1_796_083_200_000_000_000);

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }
    fn hold(
        service: ServiceId,
        start: DateTime<Utc>,
        minutes: i64,
        buffer: i64,
        capacity: i64,
    ) -> Hold {
        Hold {
            service_id: service,
            start,
            end: start + chrono::Duration::minutes(minutes),
            buffer_before: Minutes::parse("b", buffer, 0, 120).unwrap(),
            buffer_after: Minutes::parse("b", buffer, 0, 120).unwrap(),
            capacity: Capacity::parse(capacity).unwrap(),
        }
    }
    fn with(mut day: CalendarDay, e: CalendarEvent) -> CalendarDay {
        day.apply(&e);
        day
    }

    #[test]
    fn overlapping_single_visit_is_taken() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let day = CalendarDay::default();
        let day = with(
            day.clone(),
            day.hold(p, AppointmentId::new(), hold(s, at(9, 0), 30, 0, 1), NOW)
                .unwrap(),
        );
        let err = day
            .hold(p, AppointmentId::new(), hold(s, at(9, 15), 30, 0, 1), NOW)
            .unwrap_err();
        assert_eq!(err.code(), "SLOT_TAKEN");
        // Back to back is fine.
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 30), 30, 0, 1), NOW)
            .is_ok());
    }

    #[test]
    fn buffers_keep_neighbours_apart() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let day = CalendarDay::default();
        let day = with(
            day.clone(),
            day.hold(p, AppointmentId::new(), hold(s, at(9, 0), 30, 10, 1), NOW)
                .unwrap(),
        );
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 30), 30, 10, 1), NOW)
            .is_err());
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 50), 30, 10, 1), NOW)
            .is_ok());
    }

    #[test]
    fn group_session_fills_to_capacity() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let mut day = CalendarDay::default();
        for _ in 0..3 {
            let e = day
                .hold(p, AppointmentId::new(), hold(s, at(10, 0), 60, 0, 3), NOW)
                .unwrap();
            day = with(day, e);
        }
        assert_eq!(
            day.hold(p, AppointmentId::new(), hold(s, at(10, 0), 60, 0, 3), NOW)
                .unwrap_err()
                .code(),
            "SLOT_TAKEN"
        );
        // Another service overlapping the group is refused too.
        assert!(day
            .hold(
                p,
                AppointmentId::new(),
                hold(ServiceId::new(), at(10, 30), 15, 0, 1),
                NOW
            )
            .is_err());
    }

    #[test]
    fn release_frees_and_own_hold_does_not_block_a_move() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let a = AppointmentId::new();
        let day = CalendarDay::default();
        let day = with(
            day.clone(),
            day.hold(p, a, hold(s, at(9, 0), 30, 0, 1), NOW).unwrap(),
        );
        assert!(day.hold(p, a, hold(s, at(9, 15), 30, 0, 1), NOW).is_ok());
        let freed = with(day.clone(), day.release(p, a).unwrap());
        assert!(freed.holds.is_empty());
        assert!(freed.release(p, a).is_none());
    }

    fn reserved(
        day: &CalendarDay,
        p: PractitionerId,
        start: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> (CalendarDay, ReservationId) {
        let r = ReservationId::unguessable();
        let e = day
            .reserve(
                p,
                r,
                Reservation {
                    hold: hold(ServiceId::new(), start, 30, 0, 1),
                    expires_at: until,
                },
                NOW,
            )
            .unwrap();
        (with(day.clone(), e), r)
    }

    #[test]
    fn a_live_reservation_keeps_the_time_from_others_until_it_lapses() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let (day, _) = reserved(&CalendarDay::default(), p, at(9, 0), at(8, 5));
        let other = hold(s, at(9, 15), 30, 0, 1);
        let before = at(8, 4);
        let after = at(8, 5);
        assert_eq!(
            day.hold(p, AppointmentId::new(), other.clone(), before)
                .unwrap_err()
                .code(),
            "SLOT_TAKEN"
        );
        assert!(!day.is_free_for(&other, before));
        assert!(day
            .reserve(
                p,
                ReservationId::unguessable(),
                Reservation {
                    hold: other.clone(),
                    expires_at: at(8, 30)
                },
                before
            )
            .is_err());
        assert!(day.is_free_for(&other, after));
        assert!(day.hold(p, AppointmentId::new(), other, after).is_ok());
        assert_eq!(day.next_expiry(before), Some(at(8, 5)));
        assert_eq!(day.next_expiry(after), None);
    }

    #[test]
    fn claiming_turns_the_reservation_into_the_booking() {
        let p = PractitionerId::new();
        let (day, r) = reserved(&CalendarDay::default(), p, at(9, 0), at(8, 5));
        let a = AppointmentId::new();
        let events = day.claim(p, a, r, at(8, 1)).unwrap();
        let booked = events.iter().fold(day, |d, e| with(d, e.clone()));
        assert!(booked.reservations.is_empty());
        assert_eq!(booked.holds[&a].start, at(9, 0));
        // Claiming twice finds nothing.
        assert_eq!(
            booked
                .claim(p, AppointmentId::new(), r, at(8, 2))
                .unwrap_err()
                .code(),
            "HOLD_NOT_FOUND"
        );
    }

    #[test]
    fn a_lapsed_reservation_books_while_free_and_is_expired_once_taken() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let (day, r) = reserved(&CalendarDay::default(), p, at(9, 0), at(8, 5));
        assert!(day.claim(p, AppointmentId::new(), r, at(8, 10)).is_ok());
        let taken = with(
            day.clone(),
            day.hold(
                p,
                AppointmentId::new(),
                hold(s, at(9, 0), 30, 0, 1),
                at(8, 6),
            )
            .unwrap(),
        );
        assert_eq!(
            taken
                .claim(p, AppointmentId::new(), r, at(8, 10))
                .unwrap_err()
                .code(),
            "HOLD_EXPIRED"
        );
        let released = taken.release_reservation(p, r).unwrap();
        let gone = with(taken, released);
        assert!(gone.release_reservation(p, r).is_none());
    }
}
