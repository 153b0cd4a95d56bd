//! A practitioner's availability: weekly rules in the hospital's IANA time
//! zone, effective date ranges, and date exceptions (leave, holidays, extra
//! sessions).
//!
//! Rules are wall-clock ("Mon–Fri 08:00–12:00"), but slots are instants. A
//! window's ends are resolved to instants on that date and slots are laid out
//! in real time from the start, so on a spring-forward day a 02:30 slot does
//! not exist (the clock never shows it) and on a fall-back day the repeated
//! hour yields distinct instants, never the same instant twice.
use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Minutes, Reason};
use crate::PractitionerId;

/// Slots of a window start on this grid, measured from the window's start.
pub const MIN_GRID_MINUTES: u32 = 5;
pub const MAX_RULES: usize = 100;

/// A recurring block of availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyRule {
    /// Distinct, Monday first.
    pub weekdays: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub grid: Minutes,
    pub effective_from: NaiveDate,
    /// Inclusive; `None` means open-ended.
    pub effective_to: Option<NaiveDate>,
}

impl WeeklyRule {
    pub fn parse(
        weekdays: impl IntoIterator<Item = Weekday>,
        start: NaiveTime,
        end: NaiveTime,
        grid_minutes: i64,
        effective_from: NaiveDate,
        effective_to: Option<NaiveDate>,
    ) -> DomainResult<Self> {
        let mut weekdays: Vec<Weekday> = weekdays.into_iter().collect();
        weekdays.sort_by_key(|d| d.num_days_from_monday());
        weekdays.dedup();
        if weekdays.is_empty() {
            return Err(DomainError::invalid(
                "weekdays",
                "name at least one weekday",
            ));
        }
        check_times(start, end)?;
        let effective_from = crate::time::check_date("effectiveFrom", effective_from)?;
        let effective_to = effective_to
            .map(|to| crate::time::check_date("effectiveTo", to))
            .transpose()?;
        if effective_to.is_some_and(|to| to < effective_from) {
            return Err(DomainError::invalid(
                "effectiveTo",
                "must not be before effectiveFrom",
            ));
        }
        Ok(WeeklyRule {
            weekdays,
            start,
            end,
            grid: Minutes::parse("gridMinutes", grid_minutes, MIN_GRID_MINUTES, 240)?,
            effective_from,
            effective_to,
        })
    }

    fn applies_on(&self, date: NaiveDate) -> bool {
        self.weekdays.contains(&date.weekday())
            && date >= self.effective_from
            && self.effective_to.is_none_or(|to| date <= to)
    }
}

fn check_times(start: NaiveTime, end: NaiveTime) -> DomainResult<()> {
    if start >= end {
        return Err(DomainError::invalid(
            "end",
            format!("must be after start ({start}), within the same day"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ExceptionKind {
    /// Leave or a holiday: the whole day, or the part between `start` and `end`.
    Unavailable {
        start: Option<NaiveTime>,
        end: Option<NaiveTime>,
    },
    /// A session outside the weekly rules.
    ExtraSession {
        start: NaiveTime,
        end: NaiveTime,
        grid: Minutes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleException {
    pub id: Uuid,
    pub date: NaiveDate,
    #[serde(flatten)]
    pub kind: ExceptionKind,
    pub reason: Option<Reason>,
}

impl ScheduleException {
    pub fn unavailable(
        id: Uuid,
        date: NaiveDate,
        start: Option<NaiveTime>,
        end: Option<NaiveTime>,
        reason: Option<Reason>,
    ) -> DomainResult<Self> {
        let date = crate::time::check_date("date", date)?;
        match (start, end) {
            (Some(s), Some(e)) => check_times(s, e)?,
            (None, None) => {}
            _ => {
                return Err(DomainError::invalid(
                    "start",
                    "give both start and end, or neither for the whole day",
                ))
            }
        }
        Ok(ScheduleException {
            id,
            date,
            kind: ExceptionKind::Unavailable { start, end },
            reason,
        })
    }

    pub fn extra_session(
        id: Uuid,
        date: NaiveDate,
        start: NaiveTime,
        end: NaiveTime,
        grid_minutes: i64,
        reason: Option<Reason>,
    ) -> DomainResult<Self> {
        check_times(start, end)?;
        let date = crate::time::check_date("date", date)?;
        Ok(ScheduleException {
            id,
            date,
            kind: ExceptionKind::ExtraSession {
                start,
                end,
                grid: Minutes::parse("gridMinutes", grid_minutes, MIN_GRID_MINUTES, 240)?,
            },
            reason,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScheduleEvent {
    WeeklyRulesSet {
        practitioner_id: PractitionerId,
        time_zone: Tz,
        rules: Vec<WeeklyRule>,
    },
    ScheduleExceptionAdded {
        practitioner_id: PractitionerId,
        exception: ScheduleException,
    },
    ScheduleExceptionRemoved {
        practitioner_id: PractitionerId,
        exception_id: Uuid,
    },
}

impl DomainEvent for ScheduleEvent {}

/// A practitioner's schedule. Without rules or sessions it offers no slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub time_zone: Tz,
    pub rules: Vec<WeeklyRule>,
    pub exceptions: BTreeMap<Uuid, ScheduleException>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            time_zone: Tz::UTC,
            rules: vec![],
            exceptions: BTreeMap::new(),
        }
    }
}

impl Aggregate for Schedule {
    type Event = ScheduleEvent;
    const STREAM_TYPE: &'static str = "schedule";

    fn apply(&mut self, event: &ScheduleEvent) {
        match event {
            ScheduleEvent::WeeklyRulesSet {
                time_zone, rules, ..
            } => {
                self.time_zone = *time_zone;
                self.rules = rules.clone();
            }
            ScheduleEvent::ScheduleExceptionAdded { exception, .. } => {
                self.exceptions.insert(exception.id, exception.clone());
            }
            ScheduleEvent::ScheduleExceptionRemoved { exception_id, .. } => {
                self.exceptions.remove(exception_id);
            }
        }
    }
}

struct DayWindows {
    windows: Vec<(Span, Minutes)>,
    extra_sessions: usize,
    blocked: Vec<Span>,
}

/// A span of real time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Span {
    fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.start < end && start < self.end
    }
}

/// The parts of `spans` that no span of `taken` covers, in order; every
/// span is `[start, end)`.
pub fn subtract_spans(
    spans: &[(DateTime<Utc>, DateTime<Utc>)],
    taken: &[(DateTime<Utc>, DateTime<Utc>)],
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    for span in spans {
        let mut pieces = vec![*span];
        for &(t_start, t_end) in taken {
            pieces = pieces
                .into_iter()
                .flat_map(|(start, end)| {
                    if t_end <= start || end <= t_start {
                        return vec![(start, end)];
                    }
                    let mut left = Vec::new();
                    if start < t_start {
                        left.push((start, t_start));
                    }
                    if t_end < end {
                        left.push((t_end, end));
                    }
                    left
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

/// The instant a wall-clock time on `date` denotes. In a spring-forward gap
/// it is the moment the clock jumps (the first time that exists after it);
/// in a fall-back overlap, the first occurrence.
pub fn resolve_local(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut naive = date.and_time(time);
    // Gaps are at most a few hours (real zones: one hour, rarely two).
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
            LocalResult::None => naive += Duration::minutes(1),
        }
    }
    // Unreachable for any real time zone; fall back to reading the time as UTC.
    Utc.from_utc_datetime(&date.and_time(time))
}

impl Schedule {
    pub fn set_weekly_rules(
        &self,
        practitioner_id: PractitionerId,
        time_zone: Tz,
        rules: Vec<WeeklyRule>,
    ) -> DomainResult<Vec<ScheduleEvent>> {
        if rules.len() > MAX_RULES {
            return Err(DomainError::invalid(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        if self.time_zone == time_zone && self.rules == rules {
            return Ok(vec![]);
        }
        Ok(vec![ScheduleEvent::WeeklyRulesSet {
            practitioner_id,
            time_zone,
            rules,
        }])
    }

    /// Adds an exception on a date of the hospital in `time_zone`. A
    /// schedule that never had weekly rules is still in UTC (its default);
    /// it first takes the hospital's zone, so that an extra session on a
    /// schedule of exceptions alone is at the local time it names.
    pub fn add_exception(
        &self,
        practitioner_id: PractitionerId,
        time_zone: Tz,
        exception: ScheduleException,
    ) -> DomainResult<Vec<ScheduleEvent>> {
        if let Some(existing) = self.exceptions.get(&exception.id) {
            if *existing == exception {
                return Ok(vec![]);
            }
            return Err(DomainError::invalid(
                "exceptionId",
                "an exception with this id exists with other content",
            ));
        }
        let mut events = self.set_weekly_rules(practitioner_id, time_zone, self.rules.clone())?;
        events.push(ScheduleEvent::ScheduleExceptionAdded {
            practitioner_id,
            exception,
        });
        Ok(events)
    }

    /// The whole schedule as its master record (the HIS) has it: the weekly
    /// rules, and exactly `exceptions` (others are removed, changed ones
    /// replaced).
    pub fn replace(
        &self,
        practitioner_id: PractitionerId,
        time_zone: Tz,
        rules: Vec<WeeklyRule>,
        exceptions: &[ScheduleException],
    ) -> DomainResult<Vec<ScheduleEvent>> {
        let mut state = self.clone();
        let mut events = Vec::new();
        let mut record = |state: &mut Schedule, decided: Vec<ScheduleEvent>| {
            decided.iter().for_each(|e| state.apply(e));
            events.extend(decided);
        };
        let decided = state.set_weekly_rules(practitioner_id, time_zone, rules)?;
        record(&mut state, decided);
        let outdated: Vec<Uuid> = state
            .exceptions
            .iter()
            .filter(|(id, existing)| !exceptions.iter().any(|e| e.id == **id && e == *existing))
            .map(|(id, _)| *id)
            .collect();
        for id in outdated {
            let decided = state.remove_exception(practitioner_id, id)?;
            record(&mut state, decided);
        }
        for exception in exceptions {
            let decided = state.add_exception(practitioner_id, time_zone, exception.clone())?;
            record(&mut state, decided);
        }
        Ok(events)
    }

    pub fn remove_exception(
        &self,
        practitioner_id: PractitionerId,
        exception_id: Uuid,
    ) -> DomainResult<Vec<ScheduleEvent>> {
        if !self.exceptions.contains_key(&exception_id) {
            return Err(DomainError::ExceptionNotFound(exception_id));
        }
        Ok(vec![ScheduleEvent::ScheduleExceptionRemoved {
            practitioner_id,
            exception_id,
        }])
    }

    /// The real-time span of the local `date`: from its midnight to the next.
    pub fn day_bounds(&self, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        crate::time::day_bounds(self.time_zone, date)
    }

    /// The local calendar date of an instant in this schedule's time zone.
    pub fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        crate::time::local_day(self.time_zone, instant)
    }

    /// The day's bookable windows with their grids, extra sessions first,
    /// and the spans leave blocks out of the weekly rules.
    fn windows_on(&self, date: NaiveDate) -> DayWindows {
        let tz = self.time_zone;
        let mut blocked: Vec<Span> = Vec::new();
        let mut windows: Vec<(Span, Minutes)> = Vec::new();
        for e in self.exceptions.values().filter(|e| e.date == date) {
            match e.kind {
                ExceptionKind::Unavailable { start, end } => {
                    let (start, end) = match (start, end) {
                        (Some(s), Some(e)) => {
                            (resolve_local(tz, date, s), resolve_local(tz, date, e))
                        }
                        _ => {
                            let next = date.succ_opt().unwrap_or(date);
                            (
                                resolve_local(tz, date, NaiveTime::MIN),
                                resolve_local(tz, next, NaiveTime::MIN),
                            )
                        }
                    };
                    blocked.push(Span { start, end });
                }
                ExceptionKind::ExtraSession { start, end, grid } => windows.push((
                    Span {
                        start: resolve_local(tz, date, start),
                        end: resolve_local(tz, date, end),
                    },
                    grid,
                )),
            }
        }
        let extra_sessions = windows.len();
        for rule in self.rules.iter().filter(|r| r.applies_on(date)) {
            windows.push((
                Span {
                    start: resolve_local(tz, date, rule.start),
                    end: resolve_local(tz, date, rule.end),
                },
                rule.grid,
            ));
        }
        DayWindows {
            windows,
            extra_sessions,
            blocked,
        }
    }

    /// The real-time spans the practitioner works on the local `date`:
    /// weekly rules minus leave, plus extra sessions, merged and sorted.
    pub fn working_hours_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let day = self.windows_on(date);
        let blocked: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            day.blocked.iter().map(|b| (b.start, b.end)).collect();
        let mut spans: Vec<Span> = Vec::new();
        for (i, (window, _)) in day.windows.iter().enumerate() {
            if i < day.extra_sessions {
                spans.push(*window);
                continue;
            }
            spans.extend(
                subtract_spans(&[(window.start, window.end)], &blocked)
                    .into_iter()
                    .map(|(start, end)| Span { start, end }),
            );
        }
        spans.retain(|s| s.start < s.end);
        spans.sort_by_key(|s| (s.start, s.end));
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for s in spans {
            match merged.last_mut() {
                Some(last) if s.start <= last.1 => last.1 = last.1.max(s.end),
                _ => merged.push((s.start, s.end)),
            }
        }
        merged
    }

    /// Start instants of every slot of `duration` on the local `date`, sorted, distinct.
    pub fn slots_on(&self, date: NaiveDate, duration: Minutes) -> Vec<DateTime<Utc>> {
        let DayWindows {
            windows,
            extra_sessions,
            blocked,
        } = self.windows_on(date);
        let length = duration.duration();
        let mut slots = BTreeSet::new();
        for (i, (window, grid)) in windows.iter().enumerate() {
            let is_extra = i < extra_sessions;
            let mut start = window.start;
            while start + length <= window.end {
                let end = start + length;
                // Leave blocks the weekly rules; an extra session is booked on purpose.
                if is_extra || !blocked.iter().any(|b| b.overlaps(start, end)) {
                    slots.insert(start);
                }
                start += grid.duration();
            }
        }
        slots.into_iter().collect()
    }

    /// Whether `start` begins a slot of `duration` in this schedule.
    pub fn offers(&self, start: DateTime<Utc>, duration: Minutes) -> bool {
        self.slots_on(self.local_date(start), duration)
            .binary_search(&start)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;
    use Weekday::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }
    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn every_day() -> [Weekday; 7] {
        [Mon, Tue, Wed, Thu, Fri, Sat, Sun]
    }
    fn schedule(tz: Tz, start: NaiveTime, end: NaiveTime, grid: i64) -> Schedule {
        let rule = WeeklyRule::parse(every_day(), start, end, grid, d(2026, 1, 1), None).unwrap();
        let events = Schedule::default()
            .set_weekly_rules(PractitionerId::new(), tz, vec![rule])
            .unwrap();
        Schedule::from_events(&events)
    }
    fn fifteen() -> Minutes {
        Minutes::parse("d", 15, 5, 480).unwrap()
    }
    fn assert_distinct_and_increasing(slots: &[DateTime<Utc>]) {
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
    }

    #[test]
    fn weekday_rule_yields_grid_slots_in_local_time() {
        let rule = WeeklyRule::parse(
            [Mon, Tue, Wed, Thu, Fri],
            t(8, 0),
            t(12, 0),
            15,
            d(2026, 1, 1),
            None,
        )
        .unwrap();
        let s = Schedule::from_events(
            &Schedule::default()
                .set_weekly_rules(
                    PractitionerId::new(),
                    chrono_tz::Europe::Amsterdam,
                    vec![rule],
                )
                .unwrap(),
        );
        let thirty = Minutes::parse("d", 30, 5, 480).unwrap();
        // Tuesday 1 December 2026, CET (UTC+1): 08:00 local = 07:00Z, last 30-min slot at 11:30.
        let slots = s.slots_on(d(2026, 12, 1), thirty);
        assert_eq!(slots.len(), 15);
        assert_eq!(
            slots[0],
            Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap()
        );
        assert_eq!(
            *slots.last().unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 10, 30, 0).unwrap()
        );
        // Saturday: nothing.
        assert!(s.slots_on(d(2026, 12, 5), thirty).is_empty());
        // Before the rule took effect: nothing.
        assert!(s.slots_on(d(2025, 12, 2), thirty).is_empty());
    }

    #[test]
    fn spring_forward_amsterdam_has_no_0230_slot() {
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST.
        let tz = chrono_tz::Europe::Amsterdam;
        let s = schedule(tz, t(0, 0), t(4, 0), 15);
        let slots = s.slots_on(d(2026, 3, 29), fifteen());
        assert_distinct_and_increasing(&slots);
        // 00:00–04:00 local is three real hours that day.
        assert_eq!(slots.len(), 12);
        assert!(slots.iter().all(|x| x.with_timezone(&tz).hour() != 2));
        // 01:45 CET is followed directly by 03:00 CEST.
        assert_eq!(
            slots[7],
            Utc.with_ymd_and_hms(2026, 3, 29, 0, 45, 0).unwrap()
        );
        assert_eq!(
            slots[8],
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()
        );
        assert_eq!(slots[8].with_timezone(&tz).hour(), 3);
    }

    #[test]
    fn fall_back_amsterdam_has_no_duplicate_instant() {
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
        let tz = chrono_tz::Europe::Amsterdam;
        let s = schedule(tz, t(0, 0), t(4, 0), 15);
        let slots = s.slots_on(d(2026, 10, 25), fifteen());
        assert_distinct_and_increasing(&slots);
        // Five real hours: the doctor is there for the repeated hour too.
        assert_eq!(slots.len(), 20);
        let first = Utc.with_ymd_and_hms(2026, 10, 24, 22, 0, 0).unwrap();
        assert_eq!(slots[0], first);
        assert_eq!(
            *slots.last().unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 25, 2, 45, 0).unwrap()
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        let tz = chrono_tz::America::New_York;
        let s = schedule(tz, t(1, 0), t(4, 0), 30);
        let half_hour = Minutes::parse("d", 30, 5, 480).unwrap();
        // 8 March 2026: 02:00 EST -> 03:00 EDT. 01:00–04:00 is two real hours.
        let spring = s.slots_on(d(2026, 3, 8), half_hour);
        assert_distinct_and_increasing(&spring);
        assert_eq!(spring.len(), 4);
        assert!(spring.iter().all(|x| x.with_timezone(&tz).hour() != 2));
        // A plain day: three hours, six slots.
        assert_eq!(s.slots_on(d(2026, 3, 9), half_hour).len(), 6);
        // 1 November 2026: 02:00 EDT -> 01:00 EST. Four real hours, eight distinct instants.
        let fall = s.slots_on(d(2026, 11, 1), half_hour);
        assert_distinct_and_increasing(&fall);
        assert_eq!(fall.len(), 8);
        assert_eq!(fall[0], Utc.with_ymd_and_hms(2026, 11, 1, 5, 0, 0).unwrap());
    }

    #[test]
    fn day_shift_across_dst_keeps_wall_clock_times() {
        // 08:00 local on both sides of the change: 07:00Z in winter, 06:00Z in summer.
        let s = schedule(chrono_tz::Europe::Amsterdam, t(8, 0), t(9, 0), 15);
        assert_eq!(
            s.slots_on(d(2026, 3, 28), fifteen())[0],
            Utc.with_ymd_and_hms(2026, 3, 28, 7, 0, 0).unwrap()
        );
        assert_eq!(
            s.slots_on(d(2026, 3, 30), fifteen())[0],
            Utc.with_ymd_and_hms(2026, 3, 30, 6, 0, 0).unwrap()
        );
    }

    #[test]
    fn leave_blocks_and_extra_session_adds() {
        let p = PractitionerId::new();
        let mut s = schedule(chrono_tz::Europe::London, t(9, 0), t(12, 0), 30);
        let half = Minutes::parse("d", 30, 5, 480).unwrap();
        let day = d(2026, 12, 1);
        let leave = ScheduleException::unavailable(
            Uuid::new_v4(),
            day,
            Some(t(10, 0)),
            Some(t(11, 0)),
            None,
        )
        .unwrap();
        for e in s.add_exception(p, s.time_zone, leave.clone()).unwrap() {
            s.apply(&e);
        }
        assert_eq!(s.slots_on(day, half).len(), 4);
        let whole =
            ScheduleException::unavailable(Uuid::new_v4(), d(2026, 12, 2), None, None, None)
                .unwrap();
        for e in s.add_exception(p, s.time_zone, whole).unwrap() {
            s.apply(&e);
        }
        assert!(s.slots_on(d(2026, 12, 2), half).is_empty());
        let extra = ScheduleException::extra_session(
            Uuid::new_v4(),
            d(2026, 12, 2),
            t(14, 0),
            t(15, 0),
            30,
            None,
        )
        .unwrap();
        for e in s.add_exception(p, s.time_zone, extra).unwrap() {
            s.apply(&e);
        }
        assert_eq!(s.slots_on(d(2026, 12, 2), half).len(), 2);
        // Adding the same exception again is a no-op; removing an unknown one is an error.
        assert!(s
            .add_exception(p, s.time_zone, leave.clone())
            .unwrap()
            .is_empty());
        assert_eq!(
            s.remove_exception(p, Uuid::new_v4()).unwrap_err().code(),
            "EXCEPTION_NOT_FOUND"
        );
        for e in s.remove_exception(p, leave.id).unwrap() {
            s.apply(&e);
        }
        assert_eq!(s.slots_on(day, half).len(), 6);
    }

    #[test]
    fn dates_outside_the_accepted_years_are_refused() {
        let far = NaiveDate::MAX;
        let e = WeeklyRule::parse([Mon], t(8, 0), t(9, 0), 15, far, None).unwrap_err();
        assert_eq!(e.to_string().split(':').next(), Some("effectiveFrom"));
        let e =
            WeeklyRule::parse([Mon], t(8, 0), t(9, 0), 15, d(2026, 1, 1), Some(far)).unwrap_err();
        assert_eq!(e.to_string().split(':').next(), Some("effectiveTo"));
        assert!(
            ScheduleException::unavailable(Uuid::new_v4(), NaiveDate::MIN, None, None, None)
                .is_err()
        );
        assert!(ScheduleException::extra_session(
            Uuid::new_v4(),
            d(2200, 1, 1),
            t(9, 0),
            t(10, 0),
            15,
            None
        )
        .is_err());
    }

    #[test]
    fn an_extra_session_on_a_schedule_without_rules_is_in_the_hospitals_zone() {
        let tz = chrono_tz::Europe::Amsterdam;
        let p = PractitionerId::new();
        let extra = ScheduleException::extra_session(
            Uuid::new_v4(),
            d(2026, 12, 9),
            t(0, 0),
            t(1, 0),
            30,
            None,
        )
        .unwrap();
        let s = Schedule::from_events(&Schedule::default().add_exception(p, tz, extra).unwrap());
        assert_eq!(s.time_zone, tz);
        let half = Minutes::parse("d", 30, 5, 480).unwrap();
        // 00:00 and 00:30 in Amsterdam: 23:00 and 23:30 UTC the day before.
        assert_eq!(
            s.slots_on(d(2026, 12, 9), half),
            vec![
                Utc.with_ymd_and_hms(2026, 12, 8, 23, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 12, 8, 23, 30, 0).unwrap()
            ]
        );
        assert!(s.offers(Utc.with_ymd_and_hms(2026, 12, 8, 23, 30, 0).unwrap(), half));
    }

    #[test]
    fn invalid_rules_are_rejected() {
        assert!(WeeklyRule::parse([], t(8, 0), t(9, 0), 15, d(2026, 1, 1), None).is_err());
        assert!(WeeklyRule::parse([Mon], t(9, 0), t(8, 0), 15, d(2026, 1, 1), None).is_err());
        assert!(WeeklyRule::parse([Mon], t(8, 0), t(9, 0), 0, d(2026, 1, 1), None).is_err());
        assert!(WeeklyRule::parse(
            [Mon],
            t(8, 0),
            t(9, 0),
            15,
            d(2026, 1, 2),
            Some(d(2026, 1, 1))
        )
        .is_err());
        assert!(ScheduleException::unavailable(
            Uuid::new_v4(),
            d(2026, 1, 1),
            Some(t(9, 0)),
            None,
            None
        )
        .is_err());
    }

    #[test]
    fn overlapping_rules_do_not_duplicate_slots() {
        let r1 =
            WeeklyRule::parse(every_day(), t(8, 0), t(10, 0), 15, d(2026, 1, 1), None).unwrap();
        let r2 =
            WeeklyRule::parse(every_day(), t(9, 0), t(11, 0), 15, d(2026, 1, 1), None).unwrap();
        let s = Schedule::from_events(
            &Schedule::default()
                .set_weekly_rules(PractitionerId::new(), Tz::UTC, vec![r1, r2])
                .unwrap(),
        );
        let slots = s.slots_on(d(2026, 12, 1), fifteen());
        assert_distinct_and_increasing(&slots);
        assert_eq!(slots.len(), 12);
    }
}
