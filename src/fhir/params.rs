//! FHIR search parameters, parsed: date comparisons with prefixes, tokens
//! and references. Anything the server does not understand is refused with
//! 400 rather than ignored, so a client never gets a wider result than it
//! asked for.
use buktor_domain::appointment::AppointmentStatus;
use buktor_domain::time;
use chrono::{DateTime, NaiveDate, Utc};
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
        let (lo, hi) = instant_bounds(value, zone)
            .map_err(|why| Outcome::invalid(format!("{param}: {value:?} {why}")))?;
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

/// The instants a date or dateTime value stands for: `[start, end)`, a
/// date being the hospital's whole local day. Both must lie in the years
/// Buktor accepts (`buktor_domain::time`), which keeps the arithmetic here
/// and in the searches in range.
fn instant_bounds(value: &str, zone: Tz) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let outside = |e: buktor_domain::DomainError| match e {
        buktor_domain::DomainError::InvalidInput { message, .. } => message,
        other => other.to_string(),
    };
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let date = time::check_date("date", date).map_err(outside)?;
        return Ok(time::day_bounds(zone, date));
    }
    let t = DateTime::parse_from_rfc3339(value)
        .map_err(|_| "is neither a date (YYYY-MM-DD) nor a dateTime with a time zone".to_owned())?
        .with_timezone(&Utc);
    let t = time::check_instant("date", t).map_err(outside)?;
    Ok((t, t + chrono::Duration::seconds(1)))
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

/// One page of a search: `_count` entries from the `_offset`-th match on
/// (0-based). Every search sorts its matches in a fixed order, so the
/// pages of one result set neither repeat nor skip a match as long as
/// the matches do not change between the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub count: usize,
    pub offset: usize,
}

impl Page {
    pub fn parse(count_raw: Option<&str>, offset_raw: Option<&str>) -> Result<Page, Outcome> {
        let offset = match offset_raw {
            None => 0,
            Some(raw) => raw.parse::<usize>().map_err(|_| {
                Outcome::invalid(format!("_offset: {raw:?} is not a whole number from 0"))
            })?,
        };
        Ok(Page {
            count: count(count_raw)?,
            offset,
        })
    }

    /// This page's share of all the matches, in their order.
    pub fn of<T>(&self, matches: Vec<T>) -> Vec<T> {
        matches
            .into_iter()
            .skip(self.offset)
            .take(self.count)
            .collect()
    }

    /// The offset of the next page, if there is one.
    pub fn next(&self, total: usize) -> Option<usize> {
        let next = self.offset.saturating_add(self.count);
        (self.count > 0 && next < total).then_some(next)
    }

    /// The offset of the previous page, if this is not the first.
    pub fn previous(&self) -> Option<usize> {
        (self.offset > 0).then(|| self.offset.saturating_sub(self.count.max(1)))
    }

    /// The offset of the last page.
    pub fn last(&self, total: usize) -> usize {
        match self.count {
            0 => 0,
            n => total.saturating_sub(1) / n * n,
        }
    }
}

/// The `_include` values of a search, each one of `supported`
/// (`Source:parameter`, with an optional `:Target` that must be the
/// parameter's target type). Anything else is refused, as unknown search
/// parameters are: the client would otherwise get less than it asked for
/// without knowing.
pub fn includes<'a>(
    values: impl IntoIterator<Item = &'a str>,
    supported: &[(&'static str, &'static str)],
) -> Result<Vec<&'static str>, Outcome> {
    let mut out: Vec<&'static str> = Vec::new();
    for raw in values {
        let found = supported.iter().find(|(name, target)| {
            raw == *name
                || raw
                    .strip_prefix(*name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(*target)
        });
        match found {
            Some((name, _)) => {
                if !out.contains(name) {
                    out.push(name);
                }
            }
            None => {
                let names: Vec<&str> = supported.iter().map(|(n, _)| *n).collect();
                return Err(Outcome::invalid(format!(
                    "_include: {raw:?} is not supported here; supported: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
    }
    Ok(out)
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
    fn dates_and_times_outside_the_accepted_years_are_refused() {
        for raw in [
            "ge+262142-12-31",
            "le9999-12-31",
            "1899-12-31",
            "lt2200-01-01T00:00:00Z",
            "ge0001-01-01T00:00:00Z",
        ] {
            let e = Range::default().add("date", raw, ZONE);
            assert!(e.is_err(), "{raw}");
        }
        // The last instant accepted still gets its one-second range.
        let mut r = Range::default();
        r.add("date", "2199-12-31T23:59:59Z", ZONE).unwrap();
        assert_eq!(r.to, Some(at("2200-01-01T00:00:00Z")));
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
    fn pages_cover_every_match_once() {
        let all: Vec<usize> = (0..7).collect();
        let mut page = Page::parse(Some("3"), None).unwrap();
        let mut seen = Vec::new();
        loop {
            seen.extend(page.of(all.clone()));
            match page.next(all.len()) {
                Some(offset) => page.offset = offset,
                None => break,
            }
        }
        assert_eq!(seen, all);
        assert_eq!(page.offset, 6);
        assert_eq!(page.last(7), 6);
        assert_eq!(page.previous(), Some(3));
        let zero = Page::parse(Some("0"), Some("2")).unwrap();
        assert_eq!(zero.next(7), None);
        assert_eq!(zero.previous(), Some(1));
        assert!(Page::parse(None, Some("-1")).is_err());
    }

    #[test]
    fn includes_are_checked() {
        let supported = [("Slot:schedule", "Schedule")];
        assert_eq!(
            includes(["Slot:schedule", "Slot:schedule:Schedule"], &supported).unwrap(),
            ["Slot:schedule"]
        );
        assert!(includes(["Slot:schedule:Practitioner"], &supported).is_err());
        assert!(includes(["*"], &supported).is_err());
        assert!(includes(["Appointment:patient"], &supported).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for code in ["booked", "checked-in", "fulfilled", "noshow", "cancelled"] {
            assert_eq!(fhir_status(status_of(code).unwrap()), code);
        }
        assert!(status_of("arrived").is_none());
    }
}
