//! The span of time Buktor deals in, and the one way an instant becomes a
//! hospital's calendar day.
//!
//! Every instant and date that comes in from outside (a booking's start, a
//! schedule's dates, a search range, a time to read as of, a HIS record's
//! `lastModified`) must lie in the years [`FIRST_YEAR`] to [`LAST_YEAR`]:
//! from 1900-01-01T00:00:00Z to 2199-12-31T23:59:59.999999999Z. That covers
//! any appointment a hospital books and any history it keeps, and it keeps
//! every conversion the server makes afterwards (into any time zone, plus
//! any duration, notice or booking window it allows) far inside what
//! `chrono` can represent, so none of them can overflow or panic. Values
//! outside are refused as `INVALID_INPUT` naming the field.
//!
//! [`Instant`] and [`Date`] can only be built through that check; the
//! commands that take a time carry them, so an adapter cannot forget it.
use chrono::{DateTime, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, DomainResult};

pub const FIRST_YEAR: i32 = 1900;
pub const LAST_YEAR: i32 = 2199;

/// The first date accepted.
pub fn first_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// The last date accepted.
pub fn last_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(LAST_YEAR, 12, 31).unwrap_or(NaiveDate::MAX)
}

fn out_of_range(field: &'static str, got: impl std::fmt::Display) -> DomainError {
    DomainError::invalid(
        field,
        format!("must be between {FIRST_YEAR}-01-01 and {LAST_YEAR}-12-31 (UTC), got {got}"),
    )
}

/// An instant within the accepted years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "DateTime<Utc>", into = "DateTime<Utc>")]
pub struct Instant(DateTime<Utc>);

impl Instant {
    pub fn parse(field: &'static str, t: DateTime<Utc>) -> DomainResult<Self> {
        let date = t.date_naive();
        if date < first_date() || date > last_date() {
            return Err(out_of_range(field, t.to_rfc3339()));
        }
        Ok(Instant(t))
    }

    pub fn get(self) -> DateTime<Utc> {
        self.0
    }

    /// The hospital's calendar day this instant falls on.
    pub fn local_day(self, zone: Tz) -> NaiveDate {
        local_day(zone, self.0)
    }
}

impl TryFrom<DateTime<Utc>> for Instant {
    type Error = DomainError;
    fn try_from(t: DateTime<Utc>) -> Result<Self, Self::Error> {
        Instant::parse("time", t)
    }
}

impl From<Instant> for DateTime<Utc> {
    fn from(i: Instant) -> Self {
        i.0
    }
}

impl std::fmt::Display for Instant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A calendar date within the accepted years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "NaiveDate", into = "NaiveDate")]
pub struct Date(NaiveDate);

impl Date {
    pub fn parse(field: &'static str, d: NaiveDate) -> DomainResult<Self> {
        if d < first_date() || d > last_date() {
            return Err(out_of_range(field, d));
        }
        Ok(Date(d))
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

impl TryFrom<NaiveDate> for Date {
    type Error = DomainError;
    fn try_from(d: NaiveDate) -> Result<Self, Self::Error> {
        Date::parse("date", d)
    }
}

impl From<Date> for NaiveDate {
    fn from(d: Date) -> Self {
        d.0
    }
}

/// `t` if it lies in the accepted years, for values that stay plain
/// `DateTime`s after the edge (search ranges, times to read as of).
pub fn check_instant(field: &'static str, t: DateTime<Utc>) -> DomainResult<DateTime<Utc>> {
    Instant::parse(field, t).map(Instant::get)
}

/// `d` if it lies in the accepted years.
pub fn check_date(field: &'static str, d: NaiveDate) -> DomainResult<NaiveDate> {
    Date::parse(field, d).map(Date::get)
}

/// The calendar day `t` falls on in `zone`: the wall-clock date a clock in
/// the hospital shows at that instant. Every calendar day Buktor derives
/// (the calendar stream a booking races on, the day an agenda or a search
/// covers) comes from here, never from the UTC date.
///
/// Total: for an instant so near the end of time that the local date does
/// not exist (never one that passed [`Instant::parse`]) it answers the UTC
/// date instead of panicking.
pub fn local_day(zone: Tz, t: DateTime<Utc>) -> NaiveDate {
    let offset = zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc()
        .checked_add_offset(offset)
        .map_or_else(|| t.date_naive(), |local| local.date())
}

/// The real-time span of the local `date` in `zone`: from its first
/// instant to the next day's. Usually 24 hours; 23 or 25 on the days the
/// clocks change, and where midnight itself is skipped, the day starts at
/// the first instant that exists.
pub fn day_bounds(zone: Tz, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = date.succ_opt().unwrap_or(date);
    (
        crate::schedule::resolve_local(zone, date, NaiveTime::MIN),
        crate::schedule::resolve_local(zone, next, NaiveTime::MIN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Timelike};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn instants_and_dates_outside_the_years_are_refused_with_the_field() {
        for bad in [
            "+262142-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "2200-01-01T00:00:00Z",
            "1899-12-31T23:59:59Z",
        ] {
            let t = DateTime::parse_from_rfc3339(bad)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            match Instant::parse("start", t).unwrap_err() {
                DomainError::InvalidInput { field, .. } => assert_eq!(field, "start"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(Instant::parse("start", DateTime::<Utc>::MAX_UTC).is_err());
        assert!(Instant::parse("start", DateTime::<Utc>::MIN_UTC).is_err());
        assert!(Instant::parse("start", utc("1900-01-01T00:00:00Z")).is_ok());
        assert!(Instant::parse("start", utc("2199-12-31T23:59:59.999Z")).is_ok());
        assert!(Date::parse("date", NaiveDate::MAX).is_err());
        assert!(Date::parse("date", NaiveDate::MIN).is_err());
        assert!(Date::parse("date", last_date()).is_ok());
        assert!(serde_json::from_str::<Instant>("\"2200-01-01T00:00:00Z\"").is_err());
        assert!(serde_json::from_str::<Date>("\"2026-12-01\"").is_ok());
    }

    #[test]
    fn everything_done_with_an_accepted_instant_stays_in_range() {
        // The extremes, in the zones furthest from UTC, plus the longest
        // durations the domain allows (a year's booking window, days).
        for t in [utc("1900-01-01T00:00:00Z"), utc("2199-12-31T23:59:59Z")] {
            let i = Instant::parse("t", t).unwrap();
            for zone in [
                chrono_tz::Pacific::Kiritimati,
                chrono_tz::Etc::GMTPlus12,
                chrono_tz::Pacific::Auckland,
                chrono_tz::America::Los_Angeles,
            ] {
                let day = i.local_day(zone);
                let (start, end) = day_bounds(zone, day);
                assert!(start <= t && t < end, "{t} {zone}");
                let _ = t.with_timezone(&zone).date_naive();
                let _ = t + Duration::days(3660) - Duration::days(3660);
            }
        }
        // And local_day never panics, even at the end of time.
        let _ = local_day(chrono_tz::Pacific::Kiritimati, DateTime::<Utc>::MAX_UTC);
        let _ = local_day(chrono_tz::America::Los_Angeles, DateTime::<Utc>::MIN_UTC);
    }

    /// Every hour and half hour of each day around the DST changes (and a
    /// plain day) in zones east and west of UTC: the derived day is the
    /// date a local clock shows, its bounds contain the instant, and
    /// consecutive instants never go back a day.
    #[test]
    fn the_calendar_day_is_the_local_wall_clock_date_every_half_hour() {
        let zones: [(Tz, &[&str]); 5] = [
            // Europe/Amsterdam: spring forward 29 March, fall back 25 October 2026.
            (
                chrono_tz::Europe::Amsterdam,
                &["2026-03-28", "2026-03-29", "2026-10-25", "2026-12-09"],
            ),
            // Pacific/Auckland (UTC+12/+13): fall back 5 April, spring forward 27 September 2026.
            (
                chrono_tz::Pacific::Auckland,
                &["2026-04-05", "2026-09-27", "2026-12-09"],
            ),
            // Pacific/Kiritimati (UTC+14, no DST).
            (
                chrono_tz::Pacific::Kiritimati,
                &["2026-12-09", "2026-12-31"],
            ),
            // America/Los_Angeles (UTC-8/-7): 8 March and 1 November 2026.
            (
                chrono_tz::America::Los_Angeles,
                &["2026-03-08", "2026-11-01", "2026-12-09"],
            ),
            // Pacific/Honolulu (UTC-10, no DST).
            (chrono_tz::Pacific::Honolulu, &["2026-12-09", "2026-12-31"]),
        ];
        for (zone, days) in zones {
            for day in days.iter().map(|d| d.parse::<NaiveDate>().unwrap()) {
                // Two UTC days either side cover the local day in any zone.
                let from = day.pred_opt().unwrap().and_time(NaiveTime::MIN).and_utc();
                let mut previous: Option<NaiveDate> = None;
                for step in 0..(4 * 48) {
                    let t = from + Duration::minutes(30 * step);
                    let derived = Instant::parse("t", t).unwrap().local_day(zone);
                    let shown = t.with_timezone(&zone);
                    assert_eq!(derived, shown.date_naive(), "{t} in {zone}");
                    let (start, end) = day_bounds(zone, derived);
                    assert!(start <= t && t < end, "{t} in {zone}: {start}..{end}");
                    // The day starts at local midnight (no zone here skips it).
                    assert_eq!(start.with_timezone(&zone).hour(), 0, "{zone} {derived}");
                    if let Some(p) = previous {
                        assert!(derived == p || derived == p.succ_opt().unwrap());
                    }
                    previous = Some(derived);
                    // Not the UTC date, whenever the two differ.
                    if shown.date_naive() != t.date_naive() {
                        assert_ne!(derived, t.date_naive());
                    }
                }
            }
        }
    }

    #[test]
    fn a_day_is_23_or_25_hours_long_when_the_clocks_change() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let hours = |zone, day| {
            let (s, e) = day_bounds(zone, day);
            (e - s).num_hours()
        };
        assert_eq!(hours(chrono_tz::Europe::Amsterdam, d("2026-03-29")), 23);
        assert_eq!(hours(chrono_tz::Europe::Amsterdam, d("2026-10-25")), 25);
        assert_eq!(hours(chrono_tz::Pacific::Auckland, d("2026-04-05")), 25);
        assert_eq!(hours(chrono_tz::Pacific::Auckland, d("2026-09-27")), 23);
        assert_eq!(hours(chrono_tz::America::Los_Angeles, d("2026-03-08")), 23);
        assert_eq!(hours(chrono_tz::Pacific::Kiritimati, d("2026-12-09")), 24);
    }
}
