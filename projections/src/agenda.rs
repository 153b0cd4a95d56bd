//! A practitioner's day: when they work, what is booked, what is free.
use std::collections::HashMap;

use buktor_domain::calendar::CalendarDay;
use buktor_domain::schedule::{subtract_spans, Schedule};
use buktor_domain::{AppointmentId, ServiceId};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedTime {
    pub appointment_id: AppointmentId,
    pub service_id: ServiceId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Including the service's buffers.
    pub occupied: Interval,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgendaDay {
    pub date: NaiveDate,
    pub working: Vec<Interval>,
    pub booked: Vec<BookedTime>,
    /// Working time not occupied by any booking (buffers included).
    pub free: Vec<Interval>,
}

/// The agenda of the local dates `from..=to`.
pub fn agenda(
    schedule: &Schedule,
    calendars: &HashMap<NaiveDate, CalendarDay>,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<AgendaDay> {
    let empty = CalendarDay::default();
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|date| {
            let calendar = calendars.get(&date).unwrap_or(&empty);
            let working: Vec<Interval> = schedule
                .working_hours_on(date)
                .into_iter()
                .map(|(start, end)| Interval { start, end })
                .collect();
            let mut booked: Vec<BookedTime> = calendar
                .holds
                .iter()
                .map(|(id, hold)| {
                    let (start, end) = hold.occupied();
                    BookedTime {
                        appointment_id: *id,
                        service_id: hold.service_id,
                        start: hold.start,
                        end: hold.end,
                        occupied: Interval { start, end },
                    }
                })
                .collect();
            booked.sort_by_key(|b| (b.start, b.appointment_id));
            let spans: Vec<_> = working.iter().map(|w| (w.start, w.end)).collect();
            let occupied: Vec<_> = booked
                .iter()
                .map(|b| (b.occupied.start, b.occupied.end))
                .collect();
            let free = subtract_spans(&spans, &occupied)
                .into_iter()
                .map(|(start, end)| Interval { start, end })
                .collect();
            AgendaDay {
                date,
                working,
                booked,
                free,
            }
        })
        .collect()
}
