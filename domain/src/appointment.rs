//! The appointment lifecycle: booked → (rescheduled)* → checked-in → completed,
//! or cancelled, or no-show.
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{PatientRef, Reason, ShortText};
use crate::{AppointmentId, PractitionerId, ServiceId};

/// Check-in opens this long before the start.
pub const CHECK_IN_OPENS_BEFORE: Duration = Duration::hours(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppointmentStatus {
    Booked,
    CheckedIn,
    Completed,
    NoShow,
    Cancelled,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::CheckedIn => "checked-in",
            AppointmentStatus::Completed => "completed",
            AppointmentStatus::NoShow => "no-show",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the appointment still occupies its calendar time.
    pub fn holds_time(self) -> bool {
        matches!(
            self,
            AppointmentStatus::Booked | AppointmentStatus::CheckedIn
        )
    }
}

/// Who asked for a cancellation (the actor who entered it is in the event metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelledBy {
    Patient,
    Practitioner,
    Hospital,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppointmentEvent {
    AppointmentBooked {
        appointment_id: AppointmentId,
        practitioner_id: PractitionerId,
        service_id: ServiceId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        /// The local day whose calendar holds the time.
        calendar_day: NaiveDate,
        patient: PatientRef,
        note: Option<Reason>,
        /// The HIS's id, when the HIS sent the appointment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        his_appointment_id: Option<ShortText>,
        /// Why Buktor's booking rules were overridden (by the HIS, with `force`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rules_overridden: Option<Reason>,
    },
    AppointmentRescheduled {
        appointment_id: AppointmentId,
        previous_practitioner_id: PractitionerId,
        previous_start: DateTime<Utc>,
        practitioner_id: PractitionerId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        calendar_day: NaiveDate,
        reason: Option<Reason>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rules_overridden: Option<Reason>,
    },
    AppointmentCancelled {
        appointment_id: AppointmentId,
        reason: Reason,
        cancelled_by: CancelledBy,
    },
    PatientCheckedIn {
        appointment_id: AppointmentId,
        at: DateTime<Utc>,
    },
    AppointmentCompleted {
        appointment_id: AppointmentId,
        at: DateTime<Utc>,
    },
    AppointmentMarkedNoShow {
        appointment_id: AppointmentId,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AppointmentEvent {
    fn schema_version(event_type: &str) -> i32 {
        match event_type {
            "AppointmentBooked" => 2,
            _ => 1,
        }
    }

    fn upcast(
        event_type: &str,
        from_version: i32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        match (event_type, from_version) {
            // Version 1 kept the patient as two flat fields; version 2 groups
            // what reminders need into `patient`.
            ("AppointmentBooked", 1) => {
                let mut obj = match payload {
                    serde_json::Value::Object(obj) => obj,
                    other => return Err(format!("AppointmentBooked v1 is not an object: {other}")),
                };
                let id = obj
                    .remove("patient_id")
                    .ok_or("AppointmentBooked v1 without patient_id")?;
                let name = obj
                    .remove("patient_name")
                    .unwrap_or(serde_json::Value::Null);
                obj.insert(
                    "patient".into(),
                    serde_json::json!({"his_patient_id": id, "name": name, "phone": null, "email": null}),
                );
                Ok(serde_json::Value::Object(obj))
            }
            (t, v) if v == Self::schema_version(t) => Ok(payload),
            (t, v) => Err(format!("no upcaster for {t} from schema version {v}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookedAppointment {
    pub id: AppointmentId,
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub calendar_day: NaiveDate,
    pub patient: PatientRef,
    pub note: Option<Reason>,
    pub his_appointment_id: Option<ShortText>,
    pub status: AppointmentStatus,
    pub cancellation: Option<(Reason, CancelledBy)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    pub booked: Option<BookedAppointment>,
}

impl Aggregate for Appointment {
    type Event = AppointmentEvent;
    const STREAM_TYPE: &'static str = "appointment";

    fn apply(&mut self, event: &AppointmentEvent) {
        use AppointmentEvent::*;
        if let AppointmentBooked {
            appointment_id,
            practitioner_id,
            service_id,
            start,
            end,
            calendar_day,
            patient,
            note,
            his_appointment_id,
            ..
        } = event
        {
            self.booked = Some(BookedAppointment {
                id: *appointment_id,
                practitioner_id: *practitioner_id,
                service_id: *service_id,
                start: *start,
                end: *end,
                calendar_day: *calendar_day,
                patient: patient.clone(),
                note: note.clone(),
                his_appointment_id: his_appointment_id.clone(),
                status: AppointmentStatus::Booked,
                cancellation: None,
            });
            return;
        }
        let Some(a) = &mut self.booked else { return };
        match event {
            AppointmentBooked { .. } => {}
            AppointmentRescheduled {
                practitioner_id,
                start,
                end,
                calendar_day,
                ..
            } => {
                a.practitioner_id = *practitioner_id;
                a.start = *start;
                a.end = *end;
                a.calendar_day = *calendar_day;
            }
            AppointmentCancelled {
                reason,
                cancelled_by,
                ..
            } => {
                a.status = AppointmentStatus::Cancelled;
                a.cancellation = Some((reason.clone(), *cancelled_by));
            }
            PatientCheckedIn { .. } => a.status = AppointmentStatus::CheckedIn,
            AppointmentCompleted { .. } => a.status = AppointmentStatus::Completed,
            AppointmentMarkedNoShow { .. } => a.status = AppointmentStatus::NoShow,
        }
    }
}

impl Appointment {
    pub fn get(&self, id: AppointmentId) -> DomainResult<&BookedAppointment> {
        self.booked
            .as_ref()
            .filter(|x| x.id == id)
            .ok_or(DomainError::AppointmentNotFound(id))
    }

    fn in_status(
        &self,
        id: AppointmentId,
        action: &'static str,
        allowed: &[AppointmentStatus],
    ) -> DomainResult<&BookedAppointment> {
        let a = self.get(id)?;
        if !allowed.contains(&a.status) {
            return Err(DomainError::InvalidTransition {
                action,
                status: a.status.as_str(),
            });
        }
        Ok(a)
    }

    /// Checks that the appointment may be moved; the new time is checked by `booking::reschedule`.
    pub fn ensure_reschedulable(&self, id: AppointmentId) -> DomainResult<&BookedAppointment> {
        self.in_status(id, "reschedule", &[AppointmentStatus::Booked])
    }

    pub fn cancel(
        &self,
        id: AppointmentId,
        reason: Reason,
        cancelled_by: CancelledBy,
    ) -> DomainResult<AppointmentEvent> {
        self.in_status(id, "cancel", &[AppointmentStatus::Booked])?;
        Ok(AppointmentEvent::AppointmentCancelled {
            appointment_id: id,
            reason,
            cancelled_by,
        })
    }

    pub fn check_in(
        &self,
        id: AppointmentId,
        now: DateTime<Utc>,
    ) -> DomainResult<AppointmentEvent> {
        let a = self.in_status(id, "check in", &[AppointmentStatus::Booked])?;
        let opens = a.start - CHECK_IN_OPENS_BEFORE;
        if now < opens {
            return Err(DomainError::CheckInTooEarly { opens });
        }
        if now >= a.end {
            return Err(DomainError::InvalidTransition {
                action: "check in",
                status: "over",
            });
        }
        Ok(AppointmentEvent::PatientCheckedIn {
            appointment_id: id,
            at: now,
        })
    }

    pub fn complete(
        &self,
        id: AppointmentId,
        now: DateTime<Utc>,
    ) -> DomainResult<AppointmentEvent> {
        let a = self.in_status(id, "complete", &[AppointmentStatus::CheckedIn])?;
        if now < a.start {
            return Err(DomainError::NotStartedYet { start: a.start });
        }
        Ok(AppointmentEvent::AppointmentCompleted {
            appointment_id: id,
            at: now,
        })
    }

    pub fn mark_no_show(
        &self,
        id: AppointmentId,
        now: DateTime<Utc>,
    ) -> DomainResult<AppointmentEvent> {
        let a = self.in_status(id, "mark as no-show", &[AppointmentStatus::Booked])?;
        if now < a.start {
            return Err(DomainError::NotStartedYet { start: a.start });
        }
        Ok(AppointmentEvent::AppointmentMarkedNoShow {
            appointment_id: id,
            at: now,
        })
    }
}
