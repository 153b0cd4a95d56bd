//! FHIR search parameters, parsed: date comparisons with prefixes, tokens
//! and references. Anything the server does not understand is refused with
//! 400 rather than ignored, so a client never gets a wider result than it
//! asked for.
use buktor_domain::appointment::AppointmentStatus;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::Outcome;

/// Results per page when `_count` is not given, and the most a page holds.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 500;

/// A half-open range of instants `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }

    fn narrow_from(&mut self, t: DateTime<Utc>) {
        self.from = Some(self.from.map_or(t, |f| f.max(t)));
    }

    fn narrow_to(&mut self, t: DateTime<Utc>) {
        self.to = Some(self.to.map_or(t, |e| e.min(t)));
    }

    /// Adds one `date`-style comparison (`ge2026-12-01`, `lt2026-12-01T10:00:00Z`,
    /// a bare value means `eq`). A date is the whole hospital-local day.
    pub fn add(&mut self, param: &str, raw: &str, zone: Tz) -> Result<(), Outcome> {
        let (prefix, value) = match raw.get(..2) {
            Some(p) if p.chars().all(|c| c.is_ascii_lowercase()) => (p, &raw[2..]),
            _ => ("eq", raw),
        };
        let (lo, hi) = instant_bounds(value, zone).ok_or_else(|| {
            Outcome::invalid(format!(
                "{param}: {value:?} is neither a date (YYYY-MM-DD) nor a dateTime with a time zone"
            ))
        })?;
        match prefix {
            "eq" => {
                self.narrow_from(lo);
                self.narrow_to(hi);
            }
            "ge" => self.narrow_from(lo),
            "gt" => self.narrow_from(hi),
            "le" => self.narrow_to(hi),
            "lt" => self.narrow_to(lo),
            other => {
                return Err(Outcome::invalid(format!(
                    "{param}: the prefix {other:?} is not supported; use eq, ge, gt, le or lt"
                )))
            }
        }
        Ok(())
    }
}

/// The instants a date or dateTime value stands for: `[start, end)`.
fn instant_bounds(value: &str, zone: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let start = local_midnight(date, zone)?;
        let end = local_midnight(date.succ_opt()?, zone)?;
        return Some((start, end));
    }
    let t = DateTime::parse_from_rfc3339(value)
        .ok()?
        .with_timezone(&Utc);
    Some((t, t + chrono::Duration::seconds(1)))
}

fn local_midnight(date: NaiveDate, zone: Tz) -> Option<DateTime<Utc>> {
    let naive = date.and_hms_opt(0, 0, 0)?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// `_count`: how many entries one page holds.
pub fn count(raw: Option<&str>) -> Result<usize, Outcome> {
    match raw {
        None => Ok(DEFAULT_COUNT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if n <= MAX_COUNT => Ok(n),
            _ => Err(Outcome::invalid(format!(
                "_count: {raw:?} is not a whole number from 0 to {MAX_COUNT}"
            ))),
        },
    }
}

/// A token's value: `system|value` or `value` (the system is not checked
/// beyond being ours or absent).
pub fn token<'a>(param: &str, raw: &'a str, system: &str) -> Result<&'a str, Outcome> {
    match raw.split_once('|') {
        None => Ok(raw),
        Some(("", value)) => Ok(value),
        Some((s, value)) if s == system => Ok(value),
        Some((s, _)) => Err(Outcome::invalid(format!(
            "{param}: the identifier system {s:?} is unknown; use {system}"
        ))),
    }
}

/// The id of a reference `Type/id` (or a bare id).
pub fn reference<'a>(param: &str, raw: &'a str, resource: &str) -> Result<&'a str, Outcome> {
    match raw.split_once('/') {
        None => Ok(raw),
        Some((t, id)) if t == resource && !id.is_empty() && !id.contains('/') => Ok(id),
        _ => Err(Outcome::invalid(format!(
            "{param}: {raw:?} is not a reference to a {resource} (\"{resource}/<id>\")"
        ))),
    }
}

/// A Buktor status as FHIR R4 names it (value set `appointmentstatus`).
pub fn fhir_status(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Booked => "booked",
        AppointmentStatus::CheckedIn => "checked-in",
        AppointmentStatus::Completed => "fulfilled",
        AppointmentStatus::NoShow => "noshow",
        AppointmentStatus::Cancelled => "cancelled",
    }
}

/// The Buktor status of a FHIR code, if Buktor has one.
pub fn status_of(code: &str) -> Option<AppointmentStatus> {
    [
        AppointmentStatus::Booked,
        AppointmentStatus::CheckedIn,
        AppointmentStatus::Completed,
        AppointmentStatus::NoShow,
        AppointmentStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| fhir_status(*s) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: Tz = chrono_tz::Europe::Amsterdam;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_date_is_the_whole_local_day() {
        let mut r = Range::default();
        r.add("date", "2026-12-01", ZONE).unwrap();
        assert_eq!(r.from, Some(at("2026-11-30T23:00:00Z")));
        assert_eq!(r.to, Some(at("2026-12-01T23:00:00Z")));
    }

    #[test]
    fn prefixes_narrow_the_range() {
        let mut r = Range::default();
        r.add("date", "gt2026-12-01", ZONE).unwrap();
        r.add("date", "lt2026-12-03T10:00:00Z", ZONE).unwrap();
        assert_eq!(r.from, Some(at("2026-12-01T23:00:00Z")));
        assert_eq!(r.to, Some(at("2026-12-03T10:00:00Z")));
        let mut r = Range::default();
        r.add("date", "le2026-12-01", ZONE).unwrap();
        assert_eq!(r.to, Some(at("2026-12-01T23:00:00Z")));
        assert!(r.from.is_none());
    }

    #[test]
    fn unknown_prefixes_and_bad_values_are_refused() {
        let mut r = Range::default();
        assert!(r.add("date", "ap2026-12-01", ZONE).is_err());
        assert!(r.add("date", "ge2026-13-01", ZONE).is_err());
        assert!(r.add("date", "2026-12-01T10:00:00", ZONE).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for code in ["booked", "checked-in", "fulfilled", "noshow", "cancelled"] {
            assert_eq!(fhir_status(status_of(code).unwrap()), code);
        }
        assert!(status_of("arrived").is_none());
    }
}
