//! Free slots of one practitioner for one service.
use std::collections::HashMap;

use buktor_domain::calendar::{CalendarDay, Hold};
use buktor_domain::schedule::Schedule;
use buktor_domain::service::ServiceDetails;
use buktor_domain::ServiceId;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreeSlot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Places left: 1 for a normal visit, up to the capacity for a group session.
    pub remaining: u32,
}

/// Slots on the local dates `from..=to` that a booking made at `now` would accept.
pub fn free_slots(
    schedule: &Schedule,
    service_id: ServiceId,
    service: &ServiceDetails,
    calendars: &HashMap<NaiveDate, CalendarDay>,
    now: DateTime<Utc>,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<FreeSlot> {
    let earliest = now + service.min_notice.duration();
    let latest = now + Duration::days(i64::from(service.max_advance_days));
    let empty = CalendarDay::default();
    let mut out = Vec::new();
    for date in from.iter_days().take_while(|d| *d <= to) {
        let calendar = calendars.get(&date).unwrap_or(&empty);
        for start in schedule.slots_on(date, service.duration) {
            if start <= now || start < earliest || start > latest {
                continue;
            }
            let hold = Hold {
                service_id,
                start,
                end: start + service.duration.duration(),
                buffer_before: service.buffer_before,
                buffer_after: service.buffer_after,
                capacity: service.capacity,
            };
            if !hold.within_day(schedule.time_zone) || !calendar.is_free_for(&hold, now) {
                continue;
            }
            let reserved = calendar
                .reservations
                .values()
                .filter(|r| r.is_live(now))
                .map(|r| &r.hold);
            let taken = calendar
                .holds
                .values()
                .chain(reserved)
                .filter(|h| h.service_id == service_id && h.start == start)
                .count() as u32;
            out.push(FreeSlot {
                start,
                end: hold.end,
                remaining: service.capacity.get().saturating_sub(taken),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use buktor_domain::calendar::CalendarEvent;
    use buktor_domain::schedule::WeeklyRule;
    use buktor_domain::{Aggregate, AppointmentId, PractitionerId};
    use chrono::{NaiveTime, TimeZone, Weekday};

    #[test]
    fn booked_and_too_soon_slots_are_not_offered() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let rule = WeeklyRule::parse(
            [Weekday::Tue],
            NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
            30,
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            None,
        )
        .unwrap();
        let schedule = Schedule::from_events(
            &Schedule::default()
                .set_weekly_rules(p, chrono_tz::UTC, vec![rule])
                .unwrap(),
        );
        let service = ServiceDetails::parse("Consult", 30, 0, 0, 1, [p], 0, 30).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let nine = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let mut calendar = CalendarDay::default();
        let held: CalendarEvent = calendar
            .hold(
                p,
                AppointmentId::new(),
                Hold {
                    service_id: s,
                    start: nine,
                    end: nine + Duration::minutes(30),
                    buffer_before: service.buffer_before,
                    buffer_after: service.buffer_after,
                    capacity: service.capacity,
                },
                Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap(),
            )
            .unwrap();
        calendar.apply(&held);
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
        let calendars = HashMap::from([(day, calendar)]);
        let slots = free_slots(&schedule, s, &service, &calendars, now, day, day);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].start, nine + Duration::minutes(30));
        // Once it is 09:30 nothing is left.
        assert!(free_slots(
            &schedule,
            s,
            &service,
            &calendars,
            nine + Duration::minutes(30),
            day,
            day
        )
        .is_empty());
    }

    #[test]
    fn busy_time_that_would_cross_midnight_is_not_offered() {
        let p = PractitionerId::new();
        let s = ServiceId::new();
        let rule = |from: u32, to: (u32, u32)| {
            WeeklyRule::parse(
                [Weekday::Tue],
                NaiveTime::from_hms_opt(from, 0, 0).unwrap(),
                NaiveTime::from_hms_opt(to.0, to.1, 0).unwrap(),
                15,
                NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                None,
            )
            .unwrap()
        };
        let schedule = Schedule::from_events(
            &Schedule::default()
                .set_weekly_rules(p, chrono_tz::UTC, vec![rule(0, (1, 0)), rule(23, (23, 45))])
                .unwrap(),
        );
        // 15 minutes with 15 minutes of buffer on each side.
        let service = ServiceDetails::parse("Night check", 15, 15, 15, 1, [p], 0, 30).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
        let starts: Vec<DateTime<Utc>> =
            free_slots(&schedule, s, &service, &HashMap::new(), now, day, day)
                .into_iter()
                .map(|f| f.start)
                .collect();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap();
        // 00:00 would need 23:45–00:00 of Monday; 23:30 ends its buffer at midnight.
        assert_eq!(
            starts,
            vec![
                at(0, 15),
                at(0, 30),
                at(0, 45),
                at(23, 0),
                at(23, 15),
                at(23, 30)
            ]
        );
    }
}
