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

/// The code system of [`CancellationCode`] (HL7 Terminology; FHIR R4
/// binds `Appointment.cancelationReason` to it).
pub const CANCELLATION_CODE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

/// Every code of [`CANCELLATION_CODE_SYSTEM`] as `(code, parent, display)`,
/// `parent` empty for a top-level concept. The system is hierarchical:
/// `pat` and `prov` head the patient's and the provider's reasons, `other`
/// heads the `oth-*` ones, `maint` and `meds-inc` stand alone. Displays as
/// in FHIR R4 (code system version 4.x).
pub const CANCELLATION_CODES: [(&str, &str, &str); 32] = [
    ("pat", "", "Patient"),
    (
        "pat-crs",
        "pat",
        "Patient: Canceled via automated reminder system",
    ),
    ("pat-cpp", "pat", "Patient: Canceled via Patient Portal"),
    ("pat-dec", "pat", "Patient: Deceased"),
    ("pat-fb", "pat", "Patient: Feeling Better"),
    ("pat-lt", "pat", "Patient: Lack of Transportation"),
    ("pat-mt", "pat", "Patient: Member Terminated"),
    ("pat-mv", "pat", "Patient: Moved"),
    ("pat-preg", "pat", "Patient: Pregnant"),
    ("pat-swl", "pat", "Patient: Scheduled from Wait List"),
    ("pat-ucp", "pat", "Patient: Unhappy/Changed Provider"),
    ("prov", "", "Provider"),
    ("prov-pers", "prov", "Provider: Personal"),
    ("prov-dch", "prov", "Provider: Discharged"),
    ("prov-edu", "prov", "Provider: Edu/Meeting"),
    ("prov-hosp", "prov", "Provider: Hospitalized"),
    (
        "prov-labs",
        "prov",
        "Provider: Labs Out of Acceptable Range",
    ),
    (
        "prov-mri",
        "prov",
        "Provider: MRI Screening Form Marked Do Not Proceed",
    ),
    (
        "prov-onc",
        "prov",
        "Provider: Oncology Treatment Plan Changes",
    ),
    ("maint", "", "Equipment Maintenance/Repair"),
    ("meds-inc", "", "Prep/Med Incomplete"),
    ("other", "", "Other"),
    (
        "oth-cms",
        "other",
        "Other: CMS Therapy Cap Service Not Authorized",
    ),
    ("oth-err", "other", "Other: Error"),
    ("oth-fin", "other", "Other: Financial"),
    ("oth-iv", "other", "Other: Improper IV Access/Infiltrate IV"),
    ("oth-int", "other", "Other: No Interpreter Available"),
    ("oth-mu", "other", "Other: Prep/Med/Results Unavailable"),
    ("oth-room", "other", "Other: Room/Resource Maintenance"),
    ("oth-oerr", "other", "Other: Schedule Order Error"),
    ("oth-swie", "other", "Other: Silent Walk In Error"),
    ("oth-weath", "other", "Other: Weather"),
];

/// A coded cancellation reason: one of [`CANCELLATION_CODES`]. Stored with
/// the cancellation so a FHIR client gets back the code it sent; who
/// cancelled follows from its branch ([`Self::cancelled_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancellationCode(usize);

impl CancellationCode {
    /// `None` for a code the system does not define (codes are case-sensitive).
    pub fn parse(code: &str) -> Option<CancellationCode> {
        CANCELLATION_CODES
            .iter()
            .position(|(c, _, _)| *c == code)
            .map(CancellationCode)
    }

    pub fn as_str(self) -> &'static str {
        CANCELLATION_CODES[self.0].0
    }

    pub fn display(self) -> &'static str {
        CANCELLATION_CODES[self.0].2
    }

    /// The top-level concept the code falls under (itself for one).
    pub fn branch(self) -> CancellationCode {
        match CANCELLATION_CODES[self.0].1 {
            "" => self,
            parent => CancellationCode::parse(parent).unwrap_or(self),
        }
    }

    /// Who asked, from the branch: `pat…` the patient, `prov…` the
    /// practitioner; equipment, preparation and `other…` reasons are the
    /// hospital's.
    pub fn cancelled_by(self) -> CancelledBy {
        match self.branch().as_str() {
            "pat" => CancelledBy::Patient,
            "prov" => CancelledBy::Practitioner,
            _ => CancelledBy::Hospital,
        }
    }
}

impl Serialize for CancellationCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CancellationCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        CancellationCode::parse(&code).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{code}` is not an appointment cancellation reason code"
            ))
        })
    }
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
        /// The coded reason, when the caller gave one (FHIR). Events
        /// written before it existed have none: optional, so schema
        /// version 1 still reads them unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason_code: Option<CancellationCode>,
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
    /// The cancellation's coded reason, if it had one.
    #[serde(default)]
    pub cancellation_code: Option<CancellationCode>,
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
                cancellation_code: None,
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
                reason_code,
                ..
            } => {
                a.status = AppointmentStatus::Cancelled;
                a.cancellation = Some((reason.clone(), *cancelled_by));
                a.cancellation_code = *reason_code;
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
        reason_code: Option<CancellationCode>,
    ) -> DomainResult<AppointmentEvent> {
        self.in_status(id, "cancel", &[AppointmentStatus::Booked])?;
        Ok(AppointmentEvent::AppointmentCancelled {
            appointment_id: id,
            reason,
            cancelled_by,
            reason_code,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{decode, encode};

    #[test]
    fn every_cancellation_code_parses_round_trips_and_has_a_branch() {
        for (code, parent, _) in CANCELLATION_CODES {
            let c = CancellationCode::parse(code).unwrap();
            assert_eq!(c.as_str(), code);
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json, serde_json::json!(code));
            assert_eq!(serde_json::from_value::<CancellationCode>(json).unwrap(), c);
            let branch = c.branch().as_str();
            assert_eq!(branch, if parent.is_empty() { code } else { parent });
        }
        for unknown in ["", "PAT", "pat-", "patient", "oth", "prov-xyz"] {
            assert_eq!(CancellationCode::parse(unknown), None, "{unknown:?}");
            assert!(
                serde_json::from_value::<CancellationCode>(serde_json::json!(unknown)).is_err()
            );
        }
    }

    #[test]
    fn who_cancelled_follows_the_codes_branch_not_only_the_top_codes() {
        for (code, by) in [
            ("pat", CancelledBy::Patient),
            ("pat-crs", CancelledBy::Patient),
            ("pat-swl", CancelledBy::Patient),
            ("prov", CancelledBy::Practitioner),
            ("prov-pers", CancelledBy::Practitioner),
            ("prov-onc", CancelledBy::Practitioner),
            ("maint", CancelledBy::Hospital),
            ("meds-inc", CancelledBy::Hospital),
            ("other", CancelledBy::Hospital),
            ("oth-weath", CancelledBy::Hospital),
        ] {
            assert_eq!(
                CancellationCode::parse(code).unwrap().cancelled_by(),
                by,
                "{code}"
            );
        }
    }

    #[test]
    fn a_cancellation_written_before_codes_existed_still_reads_and_the_code_is_kept() {
        let id = AppointmentId::new();
        let old = serde_json::json!({
            "appointment_id": id, "reason": "ill", "cancelled_by": "patient"});
        let event: AppointmentEvent = decode("AppointmentCancelled", 1, old).unwrap();
        let AppointmentEvent::AppointmentCancelled { reason_code, .. } = &event else {
            panic!("{event:?}");
        };
        assert_eq!(*reason_code, None);

        let coded = AppointmentEvent::AppointmentCancelled {
            appointment_id: id,
            reason: Reason::parse("reason", "ill").unwrap(),
            cancelled_by: CancelledBy::Patient,
            reason_code: CancellationCode::parse("pat-swl"),
        };
        let e = encode(&coded);
        assert_eq!(
            e.schema_version, 1,
            "an optional field needs no new version"
        );
        assert_eq!(e.payload["reason_code"], "pat-swl");
        assert_eq!(
            decode::<AppointmentEvent>(&e.event_type, e.schema_version, e.payload).unwrap(),
            coded
        );
    }
}
