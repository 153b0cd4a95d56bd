//! Every appointment's current state, found by id or by patient.
use buktor_domain::appointment::{Appointment, AppointmentEvent, BookedAppointment};
use buktor_domain::Aggregate;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{stream_key, DocMap, Envelope, Projection, ProjectionError};

pub struct Appointments;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentDoc {
    pub appointment: BookedAppointment,
    /// When it was booked and last changed (the commands' times).
    pub booked_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The stream version and global position of its last event.
    pub version: i64,
    pub position: String,
}

/// The index key of a patient's appointments.
pub fn patient_index(his_patient_id: &str) -> String {
    format!("patient/{his_patient_id}")
}

impl Projection for Appointments {
    type Doc = AppointmentDoc;
    const NAME: &'static str = "appointments";

    fn keys(event: &Envelope<'_>) -> Vec<String> {
        stream_key(event.stream_id, Appointment::STREAM_TYPE)
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default()
    }

    fn apply(
        event: &Envelope<'_>,
        docs: &mut DocMap<AppointmentDoc>,
    ) -> Result<(), ProjectionError> {
        let Some(key) = Self::keys(event).pop() else {
            return Ok(());
        };
        // The runner never applies an event twice (its checkpoint moves with
        // the documents); a document already past this event stays as is.
        if docs.get(&key).is_some_and(|d| d.version >= event.version) {
            return Ok(());
        }
        let e: AppointmentEvent = event.decode()?;
        let at = event.metadata()?.occurred_at;
        let mut state = Appointment {
            booked: docs.get(&key).map(|d| d.appointment.clone()),
        };
        state.apply(&e);
        let appointment = state
            .booked
            .ok_or_else(|| ProjectionError::StreamId(event.stream_id.to_owned()))?;
        let booked_at = docs.get(&key).map_or(at, |d| d.booked_at);
        docs.put(
            &key,
            AppointmentDoc {
                appointment,
                booked_at,
                updated_at: at,
                version: event.version,
                position: event.position_text(),
            },
        );
        Ok(())
    }

    fn index_key(doc: &AppointmentDoc) -> Option<String> {
        Some(patient_index(
            doc.appointment.patient.his_patient_id.as_str(),
        ))
    }
}
