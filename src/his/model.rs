//! What the HIS sends and gets back, and how a body becomes a command.
//! Bodies refuse unknown fields, so a misspelt field is an error rather
//! than silently ignored data.
use buktor_domain::appointment::CancelledBy;
use buktor_domain::his::{HisRecordKind, HisVersion};
use buktor_domain::patient::{Channel, PatientContact};
use buktor_domain::practitioner::PractitionerDetails;
use buktor_domain::schedule::{ScheduleException, WeeklyRule};
use buktor_domain::service::ServiceDetails;
use buktor_domain::time::{self, Instant};
use buktor_domain::values::{Email, Language, Name, PatientRef, Phone, Reason, ShortText};
use buktor_domain::{derived_uuid, DomainError, PractitionerId, ServiceId, TenantId};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The record's version in the HIS: exactly one of `version` (a number
/// that grows with every change) or `lastModified` (a time that does).
fn his_version(version: Option<i64>, last_modified: Option<DateTime<Utc>>) -> Invalid<HisVersion> {
    match (version, last_modified) {
        (Some(v), None) => Ok(HisVersion::Number(v)),
        (None, Some(t)) => Ok(HisVersion::Modified(time::check_instant(
            "lastModified",
            t,
        )?)),
        (Some(_), Some(_)) => Err(invalid("version", "give version or lastModified, not both")),
        (None, None) => Err(invalid(
            "version",
            "is required: give the record's version or lastModified",
        )),
    }
}

pub type Invalid<T> = Result<T, DomainError>;

fn invalid(field: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::invalid(field, message)
}

pub fn parse_his_id(field: &'static str, raw: &str) -> Invalid<ShortText> {
    ShortText::parse(field, raw)
}

/// The path's id, and the body's when it names one too: they must agree.
pub fn record_id(path: &str, body: Option<&str>) -> Invalid<ShortText> {
    let id = parse_his_id("hisId", path)?;
    match body {
        Some(b) if b.trim() != id.as_str() => Err(invalid(
            "hisId",
            format!("the body names {b:?} but the path {:?}", id.as_str()),
        )),
        _ => Ok(id),
    }
}

fn optional<T>(raw: Option<&str>, parse: impl FnOnce(&str) -> Invalid<T>) -> Invalid<Option<T>> {
    raw.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .transpose()
}

pub fn practitioner_id(tenant: TenantId, his: &ShortText) -> PractitionerId {
    PractitionerId::from_uuid(HisRecordKind::Practitioner.buktor_id(tenant, his))
}

pub fn service_id(tenant: TenantId, his: &ShortText) -> ServiceId {
    ServiceId::from_uuid(HisRecordKind::Service.buktor_id(tenant, his))
}

/// A time the HIS sends: RFC 3339 with an offset, or the hospital's local
/// wall-clock time without one (refused when the clock skips it or shows
/// it twice, at a DST change); in either form within the years Buktor
/// accepts (`buktor_domain::time`).
fn instant(field: &'static str, raw: &str, zone: Tz) -> Invalid<Instant> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Instant::parse(field, t.with_timezone(&Utc));
    }
    let local = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .ok_or_else(|| {
            invalid(
                field,
                format!("{raw:?} is neither RFC 3339 nor a local date-time (YYYY-MM-DDTHH:MM)"),
            )
        })?;
    // Checked before it is placed in the zone, which is arithmetic too.
    time::check_date(field, local.date())?;
    match zone.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Instant::parse(field, t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(..) => Err(invalid(
            field,
            format!("{raw} happens twice in {zone} (clocks go back): give the offset"),
        )),
        chrono::LocalResult::None => Err(invalid(
            field,
            format!("{raw} does not exist in {zone} (clocks go forward)"),
        )),
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PractitionerBody {
    /// The HIS's id; required in bulk, optional (must match the path) otherwise.
    pub his_id: Option<String>,
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(example = "Dr. Ada Jansen")]
    pub name: String,
    #[schema(example = "Cardiology")]
    pub specialty: String,
    pub department: Option<String>,
    pub location: Option<String>,
    /// An inactive practitioner is kept but cannot be booked.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

pub struct Parsed<C> {
    pub his_id: ShortText,
    pub version: HisVersion,
    pub change: C,
    pub overriding: Option<Reason>,
}

impl PractitionerBody {
    pub fn parse(self, path_id: &str) -> Invalid<Parsed<crate::app::UpsertHisPractitioner>> {
        let his_id = record_id(path_id, self.his_id.as_deref())?;
        let details = PractitionerDetails {
            name: Name::parse("name", &self.name)?,
            specialty: Name::parse("specialty", &self.specialty)?,
            department: optional(self.department.as_deref(), |s| Name::parse("department", s))?,
            location: optional(self.location.as_deref(), |s| Name::parse("location", s))?,
            external_id: Some(his_id.clone()),
        };
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::UpsertHisPractitioner {
                details,
                active: self.active,
            },
            his_id,
            overriding: None,
        })
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceBody {
    pub his_id: Option<String>,
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(example = "Cardiology consultation")]
    pub name: String,
    #[schema(example = 20)]
    pub duration_minutes: i64,
    #[serde(default)]
    pub buffer_before_minutes: i64,
    #[serde(default)]
    pub buffer_after_minutes: i64,
    /// Patients per slot (group sessions take more than one).
    #[serde(default = "one")]
    pub capacity: i64,
    /// The HIS ids of the practitioners who offer it (sent before).
    pub practitioner_ids: Vec<String>,
    #[serde(default)]
    pub min_notice_minutes: i64,
    #[serde(default = "a_year")]
    pub max_advance_days: i64,
    #[serde(default = "yes")]
    pub active: bool,
}

fn one() -> i64 {
    1
}

fn a_year() -> i64 {
    365
}

impl ServiceBody {
    pub fn parse(
        self,
        tenant: TenantId,
        path_id: &str,
    ) -> Invalid<Parsed<crate::app::UpsertHisService>> {
        let his_id = record_id(path_id, self.his_id.as_deref())?;
        let practitioners = self
            .practitioner_ids
            .iter()
            .map(|p| parse_his_id("practitionerIds", p).map(|p| practitioner_id(tenant, &p)))
            .collect::<Invalid<Vec<_>>>()?;
        let details = ServiceDetails::parse(
            &self.name,
            self.duration_minutes,
            self.buffer_before_minutes,
            self.buffer_after_minutes,
            self.capacity,
            practitioners,
            self.min_notice_minutes,
            self.max_advance_days,
        )?
        .with_external_id(Some(his_id.clone()));
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::UpsertHisService {
                details,
                active: self.active,
            },
            his_id,
            overriding: None,
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<Day> for Weekday {
    fn from(d: Day) -> Weekday {
        match d {
            Day::Mon => Weekday::Mon,
            Day::Tue => Weekday::Tue,
            Day::Wed => Weekday::Wed,
            Day::Thu => Weekday::Thu,
            Day::Fri => Weekday::Fri,
            Day::Sat => Weekday::Sat,
            Day::Sun => Weekday::Sun,
        }
    }
}

/// Recurring hours, in the hospital's local time.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeeklyRuleBody {
    pub weekdays: Vec<Day>,
    #[schema(value_type = String, example = "08:00")]
    pub start: NaiveTime,
    #[schema(value_type = String, example = "12:00")]
    pub end: NaiveTime,
    /// Slots start every this many minutes.
    #[schema(example = 20)]
    pub grid_minutes: i64,
    pub effective_from: NaiveDate,
    pub effective_to: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionKindBody {
    /// Leave or a holiday: the whole day, or from `start` to `end`.
    Unavailable,
    /// A session outside the weekly rules, from `start` to `end`.
    ExtraSession,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceptionBody {
    /// The HIS's id of this exception, unique per practitioner.
    pub his_id: String,
    pub date: NaiveDate,
    pub kind: ExceptionKindBody,
    #[schema(value_type = Option<String>, example = "13:00")]
    pub start: Option<NaiveTime>,
    #[schema(value_type = Option<String>, example = "17:00")]
    pub end: Option<NaiveTime>,
    pub grid_minutes: Option<i64>,
    pub reason: Option<String>,
}

/// A practitioner's whole schedule: what is not in it is removed.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleBody {
    /// The practitioner's HIS id; required in bulk, optional (must match the path) otherwise.
    pub practitioner_id: Option<String>,
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    pub weekly_rules: Vec<WeeklyRuleBody>,
    #[serde(default)]
    pub exceptions: Vec<ExceptionBody>,
}

impl ScheduleBody {
    pub fn parse(
        self,
        tenant: TenantId,
        path_id: &str,
    ) -> Invalid<Parsed<crate::app::ReplaceHisSchedule>> {
        let practitioner_his_id = record_id(path_id, self.practitioner_id.as_deref())?;
        let practitioner = practitioner_id(tenant, &practitioner_his_id);
        let rules = self
            .weekly_rules
            .into_iter()
            .map(|r| {
                WeeklyRule::parse(
                    r.weekdays.into_iter().map(Weekday::from),
                    r.start,
                    r.end,
                    r.grid_minutes,
                    r.effective_from,
                    r.effective_to,
                )
            })
            .collect::<Invalid<Vec<_>>>()?;
        let mut seen = std::collections::HashSet::new();
        let exceptions = self
            .exceptions
            .into_iter()
            .map(|e| {
                let eid = parse_his_id("exceptions.hisId", &e.his_id)?;
                if !seen.insert(eid.clone()) {
                    return Err(invalid(
                        "exceptions.hisId",
                        format!("{:?} appears twice", eid.as_str()),
                    ));
                }
                let id = exception_id(tenant, &practitioner_his_id, &eid);
                let reason = optional(e.reason.as_deref(), |s| {
                    Reason::parse("exceptions.reason", s)
                })?;
                match e.kind {
                    ExceptionKindBody::Unavailable => {
                        ScheduleException::unavailable(id, e.date, e.start, e.end, reason)
                    }
                    ExceptionKindBody::ExtraSession => {
                        let (Some(start), Some(end), Some(grid)) = (e.start, e.end, e.grid_minutes)
                        else {
                            return Err(invalid(
                                "exceptions",
                                "an extra session needs start, end and gridMinutes",
                            ));
                        };
                        ScheduleException::extra_session(id, e.date, start, end, grid, reason)
                    }
                }
            })
            .collect::<Invalid<Vec<_>>>()?;
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::ReplaceHisSchedule {
                practitioner_id: practitioner,
                rules,
                exceptions,
            },
            his_id: practitioner_his_id,
            overriding: None,
        })
    }
}

fn exception_id(tenant: TenantId, practitioner: &ShortText, exception: &ShortText) -> Uuid {
    derived_uuid(
        tenant,
        "schedule-exception",
        &format!("{}/{}", practitioner.as_str(), exception.as_str()),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBody {
    Email,
    Sms,
}

/// A patient's contact data and notification preferences, whole.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatientBody {
    pub his_id: Option<String>,
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    pub name: Option<String>,
    /// E.164, e.g. +31201234567.
    pub phone: Option<String>,
    pub email: Option<String>,
    /// What the patient reads, e.g. `nl`, `en`, `pt-BR`.
    pub language: Option<String>,
    /// Channels the patient does not want to be contacted on.
    #[serde(default)]
    pub opted_out: Vec<ChannelBody>,
}

impl PatientBody {
    pub fn parse(self, path_id: &str) -> Invalid<Parsed<crate::app::RecordPatientContact>> {
        let his_id = record_id(path_id, self.his_id.as_deref())?;
        let mut opted_out: Vec<Channel> = self
            .opted_out
            .iter()
            .map(|c| match c {
                ChannelBody::Email => Channel::Email,
                ChannelBody::Sms => Channel::Sms,
            })
            .collect();
        opted_out.sort_by_key(|c| c.as_str());
        opted_out.dedup();
        let contact = PatientContact {
            name: optional(self.name.as_deref(), |s| Name::parse("name", s))?,
            phone: optional(self.phone.as_deref(), Phone::parse)?,
            email: optional(self.email.as_deref(), Email::parse)?,
            language: optional(self.language.as_deref(), Language::parse)?,
            opted_out,
        };
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::RecordPatientContact {
                his_patient_id: his_id.clone(),
                contact,
            },
            his_id,
            overriding: None,
        })
    }
}

/// The patient an appointment is for, as far as the appointment needs.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppointmentPatient {
    pub his_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// The appointment as the HIS has it now. Unknown to Buktor: it is
/// booked; known: it is moved if its time or practitioner changed.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppointmentBody {
    pub his_id: Option<String>,
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    /// The practitioner's HIS id.
    pub practitioner_id: String,
    /// The service's HIS id.
    pub service_id: String,
    /// RFC 3339 with an offset, or the hospital's local time without one.
    #[schema(example = "2026-12-01T09:20:00+01:00")]
    pub start: String,
    pub patient: AppointmentPatient,
    pub note: Option<String>,
    /// Book or move even where Buktor's rules refuse (taken time, outside
    /// the schedule, notice, window); `forceReason` is then required and
    /// recorded.
    #[serde(default)]
    pub force: bool,
    pub force_reason: Option<String>,
}

impl AppointmentBody {
    pub fn parse(
        self,
        tenant: TenantId,
        zone: Tz,
        path_id: &str,
    ) -> Invalid<Parsed<crate::app::UpsertHisAppointment>> {
        let his_id = record_id(path_id, self.his_id.as_deref())?;
        let overriding = overriding(self.force, self.force_reason.as_deref())?;
        let p = self.patient;
        let patient = PatientRef {
            his_patient_id: parse_his_id("patient.hisId", &p.his_id)?,
            name: optional(p.name.as_deref(), |s| Name::parse("patient.name", s))?,
            phone: optional(p.phone.as_deref(), Phone::parse)?,
            email: optional(p.email.as_deref(), Email::parse)?,
        };
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::UpsertHisAppointment {
                his_appointment_id: his_id.clone(),
                practitioner_id: practitioner_id(
                    tenant,
                    &parse_his_id("practitionerId", &self.practitioner_id)?,
                ),
                service_id: service_id(tenant, &parse_his_id("serviceId", &self.service_id)?),
                start: instant("start", &self.start, zone)?,
                patient,
                note: optional(self.note.as_deref(), |s| Reason::parse("note", s))?,
                overriding: overriding.clone(),
            },
            his_id,
            overriding,
        })
    }
}

fn overriding(force: bool, reason: Option<&str>) -> Invalid<Option<Reason>> {
    match (
        force,
        optional(reason, |s| Reason::parse("forceReason", s))?,
    ) {
        (true, Some(r)) => Ok(Some(r)),
        (true, None) => Err(invalid(
            "forceReason",
            "is required with force: say why Buktor's rules are overridden",
        )),
        (false, Some(_)) => Err(invalid("forceReason", "is only meaningful with force")),
        (false, None) => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CancelledByBody {
    Patient,
    Practitioner,
    Hospital,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBody {
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(example = "Patient called to cancel")]
    pub reason: String,
    #[serde(default = "hospital")]
    pub cancelled_by: CancelledByBody,
}

fn hospital() -> CancelledByBody {
    CancelledByBody::Hospital
}

impl CancelBody {
    pub fn parse(self, tenant: TenantId, path_id: &str) -> Invalid<Parsed<crate::app::Cancel>> {
        let his_id = record_id(path_id, None)?;
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::Cancel {
                appointment_id: appointment_id(tenant, &his_id),
                reason: Reason::parse("reason", &self.reason)?,
                cancelled_by: match self.cancelled_by {
                    CancelledByBody::Patient => CancelledBy::Patient,
                    CancelledByBody::Practitioner => CancelledBy::Practitioner,
                    CancelledByBody::Hospital => CancelledBy::Hospital,
                },
                reason_code: None,
            },
            his_id,
            overriding: None,
        })
    }
}

pub fn appointment_id(tenant: TenantId, his: &ShortText) -> buktor_domain::AppointmentId {
    buktor_domain::AppointmentId::from_uuid(HisRecordKind::Appointment.buktor_id(tenant, his))
}

/// A step of the appointment's day (check-in, completion, no-show).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepBody {
    pub version: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
}

impl StepBody {
    pub fn parse(
        self,
        tenant: TenantId,
        path_id: &str,
        step: crate::app::Attendance,
    ) -> Invalid<Parsed<crate::app::RecordAttendance>> {
        let his_id = record_id(path_id, None)?;
        Ok(Parsed {
            version: his_version(self.version, self.last_modified)?,
            change: crate::app::RecordAttendance {
                appointment_id: appointment_id(tenant, &his_id),
                step,
            },
            his_id,
            overriding: None,
        })
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The change is recorded.
    Applied,
    /// The version is recorded; the record already was as sent.
    Unchanged,
    /// Acknowledged, not applied: Buktor already has this version or a newer one.
    Stale,
    /// Refused; `problem` says why (bulk only: single requests answer with the problem).
    Failed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResult {
    pub kind: &'static str,
    pub his_id: String,
    /// Buktor's id of the record.
    pub id: Option<Uuid>,
    pub outcome: Outcome,
    /// The global position of the change's last event, for reading your writes.
    pub position: Option<String>,
    pub detail: Option<String>,
    pub problem: Option<ProblemBody>,
}

/// RFC 9457 problem details, with Buktor's stable `code`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[schema(example = "SLOT_TAKEN")]
    pub code: String,
    pub detail: String,
    /// The input field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An appointment as Buktor has it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentView {
    pub his_id: String,
    pub id: Uuid,
    #[schema(example = "booked")]
    pub status: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The start in the hospital's time zone.
    pub start_local: String,
    pub practitioner_id: Option<String>,
    pub service_id: Option<String>,
    pub patient_id: String,
    /// The last HIS version applied.
    pub his_version: Option<String>,
}

/// Initial load or nightly reconciliation: everything at once, applied in
/// dependency order (practitioners, services, schedules, patients, then
/// appointments). Each record succeeds or fails alone.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkBody {
    #[serde(default)]
    pub practitioners: Vec<PractitionerBody>,
    #[serde(default)]
    pub services: Vec<ServiceBody>,
    #[serde(default)]
    pub schedules: Vec<ScheduleBody>,
    #[serde(default)]
    pub patients: Vec<PatientBody>,
    #[serde(default)]
    pub appointments: Vec<AppointmentBody>,
}

impl BulkBody {
    /// How many records the request carries.
    pub fn records(&self) -> usize {
        self.practitioners.len()
            + self.services.len()
            + self.schedules.len()
            + self.patients.len()
            + self.appointments.len()
    }
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkSummary {
    pub applied: usize,
    pub unchanged: usize,
    pub stale: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub summary: BulkSummary,
    /// One per record, in the order sent, group by group.
    pub results: Vec<WriteResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_refused_where_the_clock_skips_or_repeats() {
        let ams: Tz = "Europe/Amsterdam".parse().unwrap();
        let t = instant("start", "2026-12-01T09:20", ams).unwrap();
        assert_eq!(t.get().to_rfc3339(), "2026-12-01T08:20:00+00:00");
        assert!(instant("start", "2026-03-29T02:30", ams).is_err());
        assert!(instant("start", "2026-10-25T02:30", ams).is_err());
        let explicit = instant("start", "2026-10-25T02:30:00+01:00", ams).unwrap();
        assert_eq!(explicit.get().to_rfc3339(), "2026-10-25T01:30:00+00:00");
        assert!(instant("start", "tomorrow", ams).is_err());
        for far in [
            "+262142-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "1899-12-31T23:59",
            "9999-12-31T23:59",
        ] {
            match instant("start", far, ams) {
                Err(DomainError::InvalidInput { field, .. }) => assert_eq!(field, "start"),
                other => panic!("{far}: {other:?}"),
            }
        }
        let e = his_version(None, Some(DateTime::<Utc>::MAX_UTC)).unwrap_err();
        assert!(matches!(
            e,
            DomainError::InvalidInput {
                field: "lastModified",
                ..
            }
        ));
    }

    #[test]
    fn a_version_is_one_of_two_kinds() {
        assert!(his_version(None, None).is_err());
        assert!(his_version(Some(1), Some(Utc::now())).is_err());
        assert_eq!(his_version(Some(4), None).unwrap(), HisVersion::Number(4));
    }

    #[test]
    fn force_needs_a_reason() {
        assert!(overriding(true, None).is_err());
        assert!(overriding(true, Some("  ")).is_err());
        assert!(overriding(false, Some("why")).is_err());
        assert!(overriding(true, Some("HIS master")).unwrap().is_some());
    }
}
