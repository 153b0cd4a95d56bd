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
use crate::{AppointmentId, PractitionerId, ServiceId};

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
    pub fn within_day(&self, schedule: &crate::schedule::Schedule) -> bool {
        let (day_start, day_end) = schedule.day_bounds(schedule.local_date(self.start));
        let (from, to) = self.occupied();
        day_start <= from && to <= day_end
    }

    fn shares_group_with(&self, other: &Hold) -> bool {
        self.capacity.get() > 1 && self.service_id == other.service_id && self.start == other.start
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
}

impl DomainEvent for CalendarEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalendarDay {
    pub holds: BTreeMap<AppointmentId, Hold>,
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
        }
    }
}

impl CalendarDay {
    /// Holds `hold` for `appointment`, unless the time is taken. A group
    /// session (capacity > 1) admits holds of the same service and start up
    /// to its capacity; anything else overlapping, buffers included, is taken.
    /// The appointment's own earlier hold is ignored, so it can move within the day.
    pub fn hold(
        &self,
        practitioner_id: PractitionerId,
        appointment_id: AppointmentId,
        hold: Hold,
    ) -> DomainResult<CalendarEvent> {
        self.check_free(Some(appointment_id), &hold)?;
        Ok(self.overbook(practitioner_id, appointment_id, hold))
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

    /// Whether a new appointment could hold this time (the read side asks this).
    pub fn is_free_for(&self, hold: &Hold) -> bool {
        self.check_free(None, hold).is_ok()
    }

    /// Refuses a hold that overlaps another (buffers included) or a full
    /// group session, ignoring the hold of `moving` itself.
    fn check_free(&self, moving: Option<AppointmentId>, hold: &Hold) -> DomainResult<()> {
        let (from, to) = hold.occupied();
        let mut same_group = 0u32;
        for (other_id, other) in &self.holds {
            if Some(*other_id) == moving {
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
            day.hold(p, AppointmentId::new(), hold(s, at(9, 0), 30, 0, 1))
                .unwrap(),
        );
        let err = day
            .hold(p, AppointmentId::new(), hold(s, at(9, 15), 30, 0, 1))
            .unwrap_err();
        assert_eq!(err.code(), "SLOT_TAKEN");
        // Back to back is fine.
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 30), 30, 0, 1))
            .is_ok());
    }

    #[test]
    fn buffers_keep_neighbours_apart() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let day = CalendarDay::default();
        let day = with(
            day.clone(),
            day.hold(p, AppointmentId::new(), hold(s, at(9, 0), 30, 10, 1))
                .unwrap(),
        );
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 30), 30, 10, 1))
            .is_err());
        assert!(day
            .hold(p, AppointmentId::new(), hold(s, at(9, 50), 30, 10, 1))
            .is_ok());
    }

    #[test]
    fn group_session_fills_to_capacity() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let mut day = CalendarDay::default();
        for _ in 0..3 {
            let e = day
                .hold(p, AppointmentId::new(), hold(s, at(10, 0), 60, 0, 3))
                .unwrap();
            day = with(day, e);
        }
        assert_eq!(
            day.hold(p, AppointmentId::new(), hold(s, at(10, 0), 60, 0, 3))
                .unwrap_err()
                .code(),
            "SLOT_TAKEN"
        );
        // Another service overlapping the group is refused too.
        assert!(day
            .hold(
                p,
                AppointmentId::new(),
                hold(ServiceId::new(), at(10, 30), 15, 0, 1)
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
            day.hold(p, a, hold(s, at(9, 0), 30, 0, 1)).unwrap(),
        );
        assert!(day.hold(p, a, hold(s, at(9, 15), 30, 0, 1)).is_ok());
        let freed = with(day.clone(), day.release(p, a).unwrap());
        assert!(freed.holds.is_empty());
        assert!(freed.release(p, a).is_none());
    }
}
