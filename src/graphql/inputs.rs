//! GraphQL inputs and their parsing into domain values. Every check that can
//! fail names the input field in `extensions.field`.
use async_graphql::{Enum, InputObject, Result, ID};
use buktor_domain::appointment::CancelledBy;
use buktor_domain::practitioner::PractitionerDetails;
use buktor_domain::schedule::{ScheduleException, WeeklyRule};
use buktor_domain::service::ServiceDetails;
use buktor_domain::time::Instant;
use buktor_domain::values::{Email, Name, PatientRef, Phone, Reason, ShortText};
use buktor_domain::{DomainError, PractitionerId, ServiceId};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::{app_error, invalid, parse_id};
use crate::app::{Book, DefineService, RegisterPractitioner, UpdatePractitioner, UpdateService};

fn domain(e: DomainError) -> async_graphql::Error {
    app_error(e.into())
}

fn name(field: &'static str, raw: &str) -> Result<Name> {
    Name::parse(field, raw).map_err(domain)
}

fn optional_name(field: &'static str, raw: Option<String>) -> Result<Option<Name>> {
    raw.filter(|s| !s.trim().is_empty())
        .map(|s| name(field, &s))
        .transpose()
}

pub(super) fn parse_reason(field: &'static str, raw: &str) -> Result<Reason> {
    Reason::parse(field, raw).map_err(domain)
}

/// `HH:MM` or `HH:MM:SS`, 24-hour clock.
fn time(field: &'static str, raw: &str) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(raw, "%H:%M:%S"))
        .map_err(|_| invalid(field, format!("{raw:?} is not a time like 08:30")))
}

#[derive(InputObject)]
pub struct PractitionerInput {
    /// Optional on registration: the server makes one when absent.
    pub id: Option<ID>,
    pub name: String,
    pub specialty: String,
    pub department: Option<String>,
    pub location: Option<String>,
    /// The HIS's own id for this practitioner.
    pub external_id: Option<String>,
}

impl PractitionerInput {
    fn details(&self) -> Result<PractitionerDetails> {
        Ok(PractitionerDetails {
            name: name("name", &self.name)?,
            specialty: name("specialty", &self.specialty)?,
            department: optional_name("department", self.department.clone())?,
            location: optional_name("location", self.location.clone())?,
            external_id: self
                .external_id
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| ShortText::parse("externalId", s).map_err(domain))
                .transpose()?,
        })
    }

    pub fn into_register(self) -> Result<RegisterPractitioner> {
        Ok(RegisterPractitioner {
            id: self.id.as_ref().map(|id| parse_id("id", id)).transpose()?,
            details: self.details()?,
        })
    }

    pub fn into_update(self, id: PractitionerId) -> Result<UpdatePractitioner> {
        Ok(UpdatePractitioner {
            id,
            details: self.details()?,
        })
    }
}

#[derive(InputObject)]
pub struct ServiceInput {
    pub id: Option<ID>,
    pub name: String,
    pub duration_minutes: i64,
    #[graphql(default = 0)]
    pub buffer_before_minutes: i64,
    #[graphql(default = 0)]
    pub buffer_after_minutes: i64,
    /// 1 for a normal visit; more for a group session.
    #[graphql(default = 1)]
    pub capacity: i64,
    pub practitioner_ids: Vec<ID>,
    #[graphql(default = 0)]
    pub min_notice_minutes: i64,
    #[graphql(default = 90)]
    pub max_advance_days: i64,
    /// The HIS's own id for this service, sent back in pushes.
    pub external_id: Option<String>,
}

impl ServiceInput {
    fn details(&self) -> Result<ServiceDetails> {
        let practitioners = self
            .practitioner_ids
            .iter()
            .map(|id| parse_id::<PractitionerId>("practitionerIds", id))
            .collect::<Result<Vec<_>>>()?;
        Ok(ServiceDetails::parse(
            &self.name,
            self.duration_minutes,
            self.buffer_before_minutes,
            self.buffer_after_minutes,
            self.capacity,
            practitioners,
            self.min_notice_minutes,
            self.max_advance_days,
        )
        .map_err(domain)?
        .with_external_id(
            self.external_id
                .as_deref()
                .map(|s| ShortText::parse("externalId", s).map_err(domain))
                .transpose()?,
        ))
    }

    pub fn into_define(self) -> Result<DefineService> {
        Ok(DefineService {
            id: self.id.as_ref().map(|id| parse_id("id", id)).transpose()?,
            details: self.details()?,
        })
    }

    pub fn into_update(self, id: ServiceId) -> Result<UpdateService> {
        Ok(UpdateService {
            id,
            details: self.details()?,
        })
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WeekdayInput {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<WeekdayInput> for chrono::Weekday {
    fn from(d: WeekdayInput) -> Self {
        use chrono::Weekday::*;
        match d {
            WeekdayInput::Monday => Mon,
            WeekdayInput::Tuesday => Tue,
            WeekdayInput::Wednesday => Wed,
            WeekdayInput::Thursday => Thu,
            WeekdayInput::Friday => Fri,
            WeekdayInput::Saturday => Sat,
            WeekdayInput::Sunday => Sun,
        }
    }
}

impl From<chrono::Weekday> for WeekdayInput {
    fn from(d: chrono::Weekday) -> Self {
        use chrono::Weekday::*;
        match d {
            Mon => WeekdayInput::Monday,
            Tue => WeekdayInput::Tuesday,
            Wed => WeekdayInput::Wednesday,
            Thu => WeekdayInput::Thursday,
            Fri => WeekdayInput::Friday,
            Sat => WeekdayInput::Saturday,
            Sun => WeekdayInput::Sunday,
        }
    }
}

#[derive(InputObject)]
pub struct WeeklyRuleInput {
    pub weekdays: Vec<WeekdayInput>,
    /// Wall-clock start in the hospital's time zone, `HH:MM`.
    pub start: String,
    pub end: String,
    #[graphql(default = 15)]
    pub grid_minutes: i64,
    pub effective_from: NaiveDate,
    /// Inclusive; absent means open-ended.
    pub effective_to: Option<NaiveDate>,
}

impl WeeklyRuleInput {
    pub fn parse(self) -> Result<WeeklyRule> {
        WeeklyRule::parse(
            self.weekdays.into_iter().map(Into::into),
            time("start", &self.start)?,
            time("end", &self.end)?,
            self.grid_minutes,
            self.effective_from,
            self.effective_to,
        )
        .map_err(domain)
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ExceptionKindInput {
    /// Leave or holiday; the whole day unless start and end are given.
    Unavailable,
    /// A session outside the weekly rules.
    ExtraSession,
}

#[derive(InputObject)]
pub struct ScheduleExceptionInput {
    pub id: Option<ID>,
    pub date: NaiveDate,
    pub kind: ExceptionKindInput,
    pub start: Option<String>,
    pub end: Option<String>,
    #[graphql(default = 15)]
    pub grid_minutes: i64,
    pub reason: Option<String>,
}

impl ScheduleExceptionInput {
    pub fn parse(self) -> Result<ScheduleException> {
        let id = match &self.id {
            Some(id) => parse_id("id", id)?,
            None => uuid::Uuid::now_v7(),
        };
        let start = self
            .start
            .as_deref()
            .map(|s| time("start", s))
            .transpose()?;
        let end = self.end.as_deref().map(|s| time("end", s)).transpose()?;
        let reason = self
            .reason
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|r| parse_reason("reason", r))
            .transpose()?;
        match self.kind {
            ExceptionKindInput::Unavailable => {
                ScheduleException::unavailable(id, self.date, start, end, reason).map_err(domain)
            }
            ExceptionKindInput::ExtraSession => {
                let (Some(start), Some(end)) = (start, end) else {
                    return Err(invalid("start", "an extra session needs start and end"));
                };
                ScheduleException::extra_session(
                    id,
                    self.date,
                    start,
                    end,
                    self.grid_minutes,
                    reason,
                )
                .map_err(domain)
            }
        }
    }
}

#[derive(InputObject)]
pub struct PatientInput {
    /// The patient's id in the HIS.
    pub his_patient_id: String,
    pub name: Option<String>,
    /// International form, e.g. +31 20 123 4567.
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(InputObject)]
pub struct BookInput {
    pub id: Option<ID>,
    pub practitioner_id: ID,
    pub service_id: ID,
    pub start: DateTime<Utc>,
    pub patient: PatientInput,
    pub note: Option<String>,
}

impl BookInput {
    pub fn parse(self) -> Result<Book> {
        let p = self.patient;
        Ok(Book {
            appointment_id: self.id.as_ref().map(|id| parse_id("id", id)).transpose()?,
            practitioner_id: parse_id("practitionerId", &self.practitioner_id)?,
            service_id: parse_id("serviceId", &self.service_id)?,
            start: Instant::parse("start", self.start).map_err(domain)?,
            patient: PatientRef {
                his_patient_id: ShortText::parse("patient.hisPatientId", &p.his_patient_id)
                    .map_err(domain)?,
                name: optional_name("patient.name", p.name)?,
                phone: p
                    .phone
                    .as_deref()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| Phone::parse(s).map_err(domain))
                    .transpose()?,
                email: p
                    .email
                    .as_deref()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| Email::parse(s).map_err(domain))
                    .transpose()?,
            },
            note: self
                .note
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|n| parse_reason("note", n))
                .transpose()?,
            his_appointment_id: None,
            overriding: None,
            reservation: None,
        })
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CancelledByInput {
    Patient,
    Practitioner,
    Hospital,
}

impl From<CancelledByInput> for CancelledBy {
    fn from(c: CancelledByInput) -> Self {
        match c {
            CancelledByInput::Patient => CancelledBy::Patient,
            CancelledByInput::Practitioner => CancelledBy::Practitioner,
            CancelledByInput::Hospital => CancelledBy::Hospital,
        }
    }
}

impl From<CancelledBy> for CancelledByInput {
    fn from(c: CancelledBy) -> Self {
        match c {
            CancelledBy::Patient => CancelledByInput::Patient,
            CancelledBy::Practitioner => CancelledByInput::Practitioner,
            CancelledBy::Hospital => CancelledByInput::Hospital,
        }
    }
}
