//! Each practitioner-day's held time: what the slot and agenda queries
//! subtract from the schedule.
use buktor_domain::calendar::{CalendarDay, CalendarEvent};
use buktor_domain::{Aggregate, PractitionerId};
use chrono::NaiveDate;

use crate::{stream_key, DocMap, Envelope, Projection, ProjectionError};

pub struct Calendars;

/// `<practitioner id>/<local date>`.
pub fn day_key(practitioner: PractitionerId, date: NaiveDate) -> String {
    format!("{practitioner}/{date}")
}

impl Projection for Calendars {
    type Doc = CalendarDay;
    const NAME: &'static str = "calendar";

    fn keys(event: &Envelope<'_>) -> Vec<String> {
        // `calendar-<uuid>-<yyyy-mm-dd>`: a uuid is 36 characters.
        match stream_key(event.stream_id, CalendarDay::STREAM_TYPE) {
            Some(rest) if rest.len() == 36 + 1 + 10 && rest.as_bytes()[36] == b'-' => {
                vec![format!("{}/{}", &rest[..36], &rest[37..])]
            }
            _ => vec![],
        }
    }

    fn apply(event: &Envelope<'_>, docs: &mut DocMap<CalendarDay>) -> Result<(), ProjectionError> {
        let Some(key) = Self::keys(event).pop() else {
            return Ok(());
        };
        let e: CalendarEvent = event.decode()?;
        docs.upsert_with(&key, CalendarDay::default).apply(&e);
        Ok(())
    }
}
