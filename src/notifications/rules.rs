//! When a reminder is due: a rule's timing applied to an appointment's start
//! in the hospital's time zone.
//!
//! - `Before { minutes }` is elapsed time: 48 h before is 48 real hours
//!   before, so across a DST change its local time of day moves by an hour.
//! - `DaysBeforeAt { days, at }` is wall-clock time: "1 day before at 09:00"
//!   is 09:00 local on the calendar day before the appointment's local day,
//!   whatever the offset that day. A time that does not exist that day (the
//!   spring-forward gap) is moved forward by the gap (02:30 becomes 03:30); a
//!   time that exists twice (the autumn overlap) is taken the first time.
use buktor_domain::{DomainError, DomainResult};
use chrono::{DateTime, Days, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The longest a reminder may come before the appointment: 60 days.
pub const MAX_MINUTES_BEFORE: u32 = 60 * 24 * 60;
pub const MAX_DAYS_BEFORE: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "timing", rename_all = "kebab-case")]
pub enum Timing {
    /// This many minutes (elapsed) before the start.
    Before { minutes: u32 },
    /// At this local time, this many calendar days before the start's local day.
    DaysBeforeAt { days: u32, at: NaiveTime },
}

impl Timing {
    pub fn before(minutes: i64) -> DomainResult<Timing> {
        if !(1..=MAX_MINUTES_BEFORE as i64).contains(&minutes) {
            return Err(DomainError::invalid(
                "minutesBefore",
                format!("must be from 1 to {MAX_MINUTES_BEFORE}"),
            ));
        }
        Ok(Timing::Before {
            minutes: minutes as u32,
        })
    }

    pub fn days_before_at(days: i64, at: NaiveTime) -> DomainResult<Timing> {
        if !(0..=MAX_DAYS_BEFORE as i64).contains(&days) {
            return Err(DomainError::invalid(
                "daysBefore",
                format!("must be from 0 to {MAX_DAYS_BEFORE}"),
            ));
        }
        Ok(Timing::DaysBeforeAt {
            days: days as u32,
            at: at.with_nanosecond_zeroed(),
        })
    }

    /// When a reminder for an appointment starting at `start` is due; `None`
    /// when that is not before the start (0 days before at 18:00 for a
    /// morning appointment).
    pub fn due(&self, start: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let due = match *self {
            Timing::Before { minutes } => start - chrono::Duration::minutes(minutes.into()),
            Timing::DaysBeforeAt { days, at } => {
                let day = buktor_domain::time::local_day(zone, start)
                    .checked_sub_days(Days::new(days.into()))?;
                local_instant(zone, day.and_time(at))?
            }
        };
        (due < start).then_some(due)
    }
}

trait ZeroNanos {
    fn with_nanosecond_zeroed(self) -> Self;
}

impl ZeroNanos for NaiveTime {
    fn with_nanosecond_zeroed(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap_or(self)
    }
}

/// The instant a local wall-clock time names in `zone`: the earlier of two
/// in an overlap; in a gap, the time moved forward by the gap's length.
pub fn local_instant(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Read the time with the offset in force before the gap: that
            // instant lies after the gap, the length of the gap later on the
            // wall clock. A day before is safely before any transition.
            let before = local.and_utc() - chrono::Duration::days(1);
            let offset = zone.offset_from_utc_datetime(&before.naive_utc()).fix();
            Some((local - offset).and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Amsterdam;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn local(s: &str) -> String {
        utc(s)
            .with_timezone(&Amsterdam)
            .format("%F %R %:z")
            .to_string()
    }

    #[test]
    fn a_day_before_at_nine_stays_at_nine_local_across_spring_forward() {
        // Monday 29 March 2027 10:00 CEST; DST began on Sunday the 28th.
        let start = utc("2027-03-29T08:00:00Z");
        let rule = Timing::days_before_at(1, at(9, 0)).unwrap();
        let due = rule.due(start, Amsterdam).unwrap();
        assert_eq!(due, utc("2027-03-28T07:00:00Z"));
        // Two days before is Saturday, still winter time.
        let due2 = Timing::days_before_at(2, at(9, 0))
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due2, utc("2027-03-27T08:00:00Z"));
    }

    #[test]
    fn elapsed_hours_cross_the_change_as_real_time() {
        let start = utc("2027-03-29T08:00:00Z"); // 10:00 CEST
        let due = Timing::before(48 * 60)
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due, utc("2027-03-27T08:00:00Z"));
        assert_eq!(local("2027-03-27T08:00:00Z"), "2027-03-27 09:00 +01:00");
        // Autumn: Monday 1 November 2027 10:00 CET (09:00Z); 48 h before is
        // Saturday 11:00 CEST, as summer time ends in between.
        let start = utc("2027-11-01T09:00:00Z");
        let due = Timing::before(48 * 60)
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due, utc("2027-10-30T09:00:00Z"));
        assert_eq!(local("2027-10-30T09:00:00Z"), "2027-10-30 11:00 +02:00");
    }

    #[test]
    fn a_time_in_the_spring_gap_moves_forward_by_the_gap() {
        // 02:30 does not exist on 28 March 2027 in Amsterdam.
        let start = utc("2027-03-29T08:00:00Z");
        let due = Timing::days_before_at(1, at(2, 30))
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(local(&due.to_rfc3339()), "2027-03-28 03:30 +02:00");
        assert_eq!(due, utc("2027-03-28T01:30:00Z"));
    }

    #[test]
    fn a_time_in_the_autumn_overlap_is_taken_the_first_time() {
        // 02:30 happens twice on 31 October 2027: first at +02:00.
        let start = utc("2027-11-01T09:00:00Z");
        let due = Timing::days_before_at(1, at(2, 30))
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due, utc("2027-10-31T00:30:00Z"));
        // 09:00 on the day of the change is 09:00 CET.
        let due = Timing::days_before_at(1, at(9, 0))
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due, utc("2027-10-31T08:00:00Z"));
    }

    #[test]
    fn the_local_day_is_the_hospitals_not_utcs() {
        // 00:30 CEST on 2 June is 22:30 UTC on 1 June: the day before is 1 June.
        let start = utc("2027-06-01T22:30:00Z");
        let due = Timing::days_before_at(1, at(18, 0))
            .unwrap()
            .due(start, Amsterdam)
            .unwrap();
        assert_eq!(due, utc("2027-06-01T16:00:00Z"));
    }

    #[test]
    fn a_reminder_not_before_the_start_is_none() {
        let start = utc("2027-06-01T07:00:00Z"); // 09:00 CEST
        assert!(Timing::days_before_at(0, at(18, 0))
            .unwrap()
            .due(start, Amsterdam)
            .is_none());
        assert_eq!(
            Timing::days_before_at(0, at(7, 0))
                .unwrap()
                .due(start, Amsterdam),
            Some(utc("2027-06-01T05:00:00Z"))
        );
    }

    #[test]
    fn out_of_range_timings_are_refused_with_their_field() {
        assert_eq!(Timing::before(0).unwrap_err().code(), "INVALID_INPUT");
        assert!(Timing::before(MAX_MINUTES_BEFORE as i64 + 1).is_err());
        assert!(Timing::days_before_at(-1, at(9, 0)).is_err());
        assert!(Timing::days_before_at(61, at(9, 0)).is_err());
    }
}
