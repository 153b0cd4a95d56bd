//! When the sync runs: an interval or a 5-field cron expression, and the
//! time windows (local time) outside which it does not write.
//!
//! The cron expression has Unix semantics (minute hour day-of-month month
//! day-of-week; `*`, lists, ranges, `/steps`, month and day names; day of
//! week 0–7 with 0 and 7 Sunday; when both day fields are restricted either
//! may match). Crates at hand count weekdays from 1 = Sunday, which would
//! quietly shift an operator's `1-5` by a day, hence this small parser.
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};

/// The time zone windows and cron expressions are read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// This machine's local time.
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    pub fn local(&self, at: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Local => at.with_timezone(&chrono::Local).naive_local(),
            Zone::Named(tz) => at.with_timezone(tz).naive_local(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Zone::Local => "local time".into(),
            Zone::Named(tz) => tz.name().into(),
        }
    }
}

/// `HH:MM-HH:MM`, local time, start included and end excluded; an end at or
/// before the start crosses midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    start: NaiveTime,
    end: NaiveTime,
}

impl TimeWindow {
    pub fn parse(text: &str) -> Result<TimeWindow, String> {
        let bad = || format!("{text:?} is not a window like 22:00-06:00");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(format!(
                "{text:?} is empty; leave windows out to sync at any time"
            ));
        }
        Ok(TimeWindow { start, end })
    }

    pub fn contains(&self, time: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }
}

impl std::fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// True when `at` falls in one of `windows`, or there are none.
pub fn in_windows(windows: &[TimeWindow], zone: Zone, at: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    let time = zone.local(at).time();
    windows.iter().any(|w| w.contains(time))
}

/// A parsed 5-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronExpr {
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?}: a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let minutes = field(fields[0], 0, 59, &[], "minute")?;
        let hours = field(fields[1], 0, 23, &[], "hour")?;
        let days_of_month = field(fields[2], 1, 31, &[], "day of month")?;
        let months = field(fields[3], 1, 12, &MONTHS, "month")?;
        let mut days_of_week = field(fields[4], 0, 7, &DAYS, "day of week")?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        let expr = CronExpr {
            source: text.trim().to_owned(),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            any_day_of_month: fields[2] == "*",
            any_day_of_week: fields[4] == "*",
        };
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        if expr
            .next_after(probe, Zone::Named(chrono_tz::UTC))
            .is_none()
        {
            return Err(format!("{text:?} never fires"));
        }
        Ok(expr)
    }

    fn date_matches(&self, local: NaiveDateTime) -> bool {
        if self.months & (1 << local.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << local.day()) != 0;
        let dow = self.days_of_week & (1 << local.weekday().num_days_from_sunday()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first whole minute strictly after `after` that matches, read in `zone`.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Zone) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        let mut t = start;
        // Skips a day or an hour at a time where they cannot match: about
        // eight years of days at most (29 February on a given weekday).
        for _ in 0..300_000 {
            let local = zone.local(t);
            let into_day = i64::from(local.hour() * 60 + local.minute());
            if !self.date_matches(local) {
                t += chrono::Duration::minutes(24 * 60 - into_day);
            } else if self.hours & (1 << local.hour()) == 0 {
                t += chrono::Duration::minutes(60 - i64::from(local.minute()));
            } else if self.minutes & (1 << local.minute()) == 0 {
                t += chrono::Duration::minutes(1);
            } else {
                return Some(t);
            }
        }
        None
    }
}

impl std::fmt::Display for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// One field as a bit set of the values it allows.
fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let bad = |detail: &str| format!("{what} {text:?}: {detail}");
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months are named from 1, days of the week from 0.
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| bad("not a number"))?;
        if v < min || v > max {
            return Err(bad(&format!("values go from {min} to {max}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if step == 0 {
                    return Err(bad("a step of 0"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else if step != 1 {
            return Err(bad("a step needs * or a range before it"));
        } else {
            let v = value(range)?;
            (v, v)
        };
        if from > to {
            return Err(bad("a range runs backwards"));
        }
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// The sync's rhythm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A pass every so often, counted from the start of the previous one.
    Interval(Duration),
    Cron(CronExpr),
}

impl Schedule {
    /// When the pass after one that started at `last_start` is due.
    pub fn next_after(&self, last_start: DateTime<Utc>, zone: Zone) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(every) => {
                Some(last_start + chrono::Duration::from_std(*every).ok()?)
            }
            Schedule::Cron(expr) => expr.next_after(last_start, zone),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Interval(d) => write!(f, "every {} s", d.as_secs()),
            Schedule::Cron(c) => write!(f, "cron {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn t(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    #[test]
    fn a_window_across_midnight_holds_the_night_and_not_the_day() {
        let night = TimeWindow::parse("22:00-06:00").unwrap();
        assert!(night.contains(t("22:00")));
        assert!(night.contains(t("23:59")));
        assert!(night.contains(t("05:59")));
        assert!(!night.contains(t("06:00")));
        assert!(!night.contains(t("12:00")));
        let lunch = TimeWindow::parse("12:00-13:30").unwrap();
        assert!(lunch.contains(t("12:00")) && !lunch.contains(t("13:30")));
        for bad in ["22:00", "25:00-01:00", "10:00-10:00", "ab-cd"] {
            assert!(TimeWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_are_read_in_the_configured_zone() {
        let ams = Zone::Named(chrono_tz::Europe::Amsterdam);
        let night = [TimeWindow::parse("22:00-06:00").unwrap()];
        // 21:30 UTC in winter is 22:30 in Amsterdam.
        assert!(in_windows(&night, ams, at("2026-11-25T21:30:00Z")));
        assert!(!in_windows(&night, ams, at("2026-11-25T20:30:00Z")));
        assert!(in_windows(&[], ams, at("2026-11-25T12:00:00Z")));
    }

    #[test]
    fn cron_weekdays_count_from_sunday_zero_as_in_unix() {
        let utc = Zone::Named(chrono_tz::UTC);
        // 2026-11-27 is a Friday.
        let weekdays = CronExpr::parse("30 2 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(at("2026-11-27T03:00:00Z"), utc),
            Some(at("2026-11-30T02:30:00Z"))
        );
        let sundays = CronExpr::parse("0 0 * * 7").unwrap();
        assert_eq!(
            sundays,
            CronExpr {
                source: "0 0 * * 7".into(),
                ..CronExpr::parse("0 0 * * 0").unwrap()
            }
        );
        let every5 = CronExpr::parse("*/5 * * * *").unwrap();
        assert_eq!(
            every5.next_after(at("2026-11-27T03:04:59Z"), utc),
            Some(at("2026-11-27T03:05:00Z"))
        );
        assert_eq!(
            every5.next_after(at("2026-11-27T03:05:00Z"), utc),
            Some(at("2026-11-27T03:10:00Z"))
        );
        let named = CronExpr::parse("0 22 1,15 jan-mar mon").unwrap();
        // Either day field matches when both are restricted: Monday 5 January 2026.
        assert_eq!(
            named.next_after(at("2026-01-02T00:00:00Z"), utc),
            Some(at("2026-01-05T22:00:00Z"))
        );
        let leap = CronExpr::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(at("2026-03-01T00:00:00Z"), utc),
            Some(at("2028-02-29T00:00:00Z"))
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "0 0 31 2 *",
            "*/0 * * * *",
            "5-1 * * * *",
        ] {
            assert!(CronExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_is_read_in_the_zone() {
        let ams = Zone::Named(chrono_tz::Europe::Amsterdam);
        let nightly = CronExpr::parse("0 2 * * *").unwrap();
        assert_eq!(
            nightly.next_after(at("2026-11-25T12:00:00Z"), ams),
            Some(at("2026-11-26T01:00:00Z"))
        );
    }
}
