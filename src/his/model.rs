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
use buktor_domain::values::{Email, Language, PatientRef, Phone, Reason, ShortText, Text};
use buktor_domain::{derived_uuid, DomainError, PractitionerId, ServiceId, TenantId};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::openapi::schemas;

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

/// The schema bounds text by its length as sent (JSON Schema's
/// `maxLength` cannot trim); the domain counts again after trimming.
fn within<const MAX: usize>(field: &'static str, raw: &str) -> Invalid<()> {
    if raw.chars().count() > MAX {
        return Err(invalid(field, format!("must be at most {MAX} characters")));
    }
    Ok(())
}

/// Required text: at most `MAX` characters, not blank, no control
/// characters inside (surrounding white space is trimmed).
fn text<const MAX: usize>(field: &'static str, raw: &str) -> Invalid<Text<MAX>> {
    within::<MAX>(field, raw)?;
    Text::parse(field, raw)
}

/// Optional text: absent, null or blank is no value.
fn optional_text<const MAX: usize>(
    field: &'static str,
    raw: Option<&str>,
) -> Invalid<Option<Text<MAX>>> {
    if let Some(raw) = raw {
        within::<MAX>(field, raw)?;
    }
    optional(raw, |s| Text::parse(field, s))
}

fn optional_email(raw: Option<&str>) -> Invalid<Option<Email>> {
    if let Some(raw) = raw {
        within::<{ schemas::EMAIL_MAX }>("email", raw)?;
    }
    optional(raw, Email::parse)
}

pub fn parse_his_id(field: &'static str, raw: &str) -> Invalid<ShortText> {
    text(field, raw)
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

/// RFC 3339 as JSON Schema's `date-time` has it: chrono alone would also
/// take a space between date and time.
fn rfc3339(raw: &str) -> Option<DateTime<FixedOffset>> {
    if !matches!(raw.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    DateTime::parse_from_rfc3339(raw).ok()
}

/// Digits of exactly `N` characters at `raw[at..]`, as a number.
fn digits<const N: usize>(raw: &[u8], at: usize) -> Option<u32> {
    let part = raw.get(at..at + N)?;
    part.iter()
        .all(u8::is_ascii_digit)
        .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD`, JSON Schema's `date` (chrono alone would also take a
/// sign, more year digits or one-digit months).
fn calendar_date(raw: &str) -> Option<NaiveDate> {
    let b = raw.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        i32::try_from(digits::<4>(b, 0)?).ok()?,
        digits::<2>(b, 5)?,
        digits::<2>(b, 8)?,
    )
}

/// `HH:MM` or `HH:MM:SS` on a 24-hour clock, without leap seconds or fractions.
fn clock_time(raw: &str) -> Option<NaiveTime> {
    let b = raw.as_bytes();
    let seconds = match b.len() {
        5 => 0,
        8 if b[5] == b':' => digits::<2>(b, 6)?,
        _ => return None,
    };
    if b[2] != b':' {
        return None;
    }
    NaiveTime::from_hms_opt(digits::<2>(b, 0)?, digits::<2>(b, 3)?, seconds)
}

/// `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`, a wall-clock time.
fn local_date_time(raw: &str) -> Option<NaiveDateTime> {
    let (date, time) = (raw.get(..10)?, raw.get(11..)?);
    if raw.as_bytes()[10] != b'T' {
        return None;
    }
    Some(calendar_date(date)?.and_time(clock_time(time)?))
}

/// A time the HIS sends: RFC 3339 with an offset, or the hospital's local
/// wall-clock time without one (refused when the clock skips it or shows
/// it twice, at a DST change); in either form within the years Buktor
/// accepts (`buktor_domain::time`).
fn instant(field: &'static str, raw: &str, zone: Tz) -> Invalid<Instant> {
    if let Some(t) = rfc3339(raw) {
        return Instant::parse(field, t.with_timezone(&Utc));
    }
    let local = local_date_time(raw).ok_or_else(|| {
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

/// Deserializers that take exactly what the OpenAPI document declares.
/// A value of the wrong shape makes the body malformed (400); a value of
/// the right shape that breaks a rule is refused with its field (422).
mod wire {
    use super::*;
    use serde::de::{Error, Unexpected};

    /// JSON Schema's `integer`: any number without a fraction, so `1739.0`
    /// and `1.739e3` too, within ±(2^63 − 1) (`openapi::INTEGER_MAX`; a double
    /// cannot tell −2^63 from its neighbours, so that end is left out).
    pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        // Through serde_json's own number, which reads every JSON number
        // (also where a dependency turns on its arbitrary precision).
        let n = serde_json::Number::deserialize(d)?;
        // 2^63 is exact in a double; every integral double inside it fits.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if i != i64::MIN => Ok(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < LIMIT => Ok(f as i64),
            _ => Err(D::Error::invalid_value(
                Unexpected::Other(&format!("the number {n}")),
                &"an integer (a number without a fraction, within ±(2^63 − 1))",
            )),
        }
    }

    pub fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "integer")] i64);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }

    fn parsed<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &'static str,
    ) -> Result<T, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).ok_or_else(|| D::Error::invalid_value(Unexpected::Str(&raw), &expected))
    }

    fn optional_parsed<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &'static str,
    ) -> Result<Option<T>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(raw) => parse(&raw)
                .map(Some)
                .ok_or_else(|| D::Error::invalid_value(Unexpected::Str(&raw), &expected)),
        }
    }

    /// A date outside the years Buktor accepts, in any form chrono reads
    /// (`+262142-12-31`): taken here so that the domain refuses it as out of
    /// range, naming its field (422), like every other far date.
    fn far<T: chrono::Datelike>(t: T) -> Option<T> {
        (!(time::FIRST_YEAR..=time::LAST_YEAR).contains(&t.year())).then_some(t)
    }

    fn date_or_far(raw: &str) -> Option<NaiveDate> {
        calendar_date(raw).or_else(|| raw.parse::<NaiveDate>().ok().and_then(far))
    }

    fn date_time_or_far(raw: &str) -> Option<DateTime<Utc>> {
        rfc3339(raw)
            .or_else(|| raw.parse::<DateTime<FixedOffset>>().ok().and_then(far))
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        parsed(d, date_or_far, "a date YYYY-MM-DD")
    }

    pub fn optional_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        optional_parsed(d, date_or_far, "a date YYYY-MM-DD")
    }

    pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        parsed(d, clock_time, "a time HH:MM or HH:MM:SS")
    }

    pub fn optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveTime>, D::Error> {
        optional_parsed(d, clock_time, "a time HH:MM or HH:MM:SS")
    }

    pub fn optional_date_time<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        optional_parsed(d, date_time_or_far, "an RFC 3339 date-time with an offset")
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PractitionerBody {
    /// The HIS's id; required in bulk, optional (must match the path) otherwise.
    #[schema(schema_with = schemas::optional_his_id)]
    pub his_id: Option<String>,
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(schema_with = schemas::name)]
    pub name: String,
    #[schema(schema_with = schemas::name)]
    pub specialty: String,
    #[schema(schema_with = schemas::optional_name)]
    pub department: Option<String>,
    #[schema(schema_with = schemas::optional_name)]
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
            name: text("name", &self.name)?,
            specialty: text("specialty", &self.specialty)?,
            department: optional_text("department", self.department.as_deref())?,
            location: optional_text("location", self.location.as_deref())?,
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
    /// The HIS's id; required in bulk, optional (must match the path) otherwise.
    #[schema(schema_with = schemas::optional_his_id)]
    pub his_id: Option<String>,
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(schema_with = schemas::name)]
    pub name: String,
    /// How long one appointment takes.
    #[serde(deserialize_with = "wire::integer")]
    #[schema(minimum = 5, maximum = 480)]
    pub duration_minutes: i64,
    /// Time kept free before each appointment.
    #[serde(default, deserialize_with = "wire::integer")]
    #[schema(minimum = 0, maximum = 120)]
    pub buffer_before_minutes: i64,
    /// Time kept free after each appointment.
    #[serde(default, deserialize_with = "wire::integer")]
    #[schema(minimum = 0, maximum = 120)]
    pub buffer_after_minutes: i64,
    /// Patients per slot (group sessions take more than one).
    #[serde(default = "one", deserialize_with = "wire::integer")]
    #[schema(minimum = 1, maximum = 500)]
    pub capacity: i64,
    /// The HIS ids of the practitioners who offer it (sent before); repeats count once.
    #[schema(schema_with = schemas::his_ids)]
    pub practitioner_ids: Vec<String>,
    /// How long before its start an appointment may be booked at the latest
    /// (up to 60 days).
    #[serde(default, deserialize_with = "wire::integer")]
    #[schema(minimum = 0, maximum = 86400)]
    pub min_notice_minutes: i64,
    /// How far ahead patients may book.
    #[serde(default = "a_year", deserialize_with = "wire::integer")]
    #[schema(minimum = 1, maximum = 730)]
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
    /// The days it applies on; repeats count once.
    #[schema(min_items = 1)]
    pub weekdays: Vec<Day>,
    /// Must be before `end` (a session within one day).
    #[serde(deserialize_with = "wire::time")]
    #[schema(schema_with = schemas::time_of_day)]
    pub start: NaiveTime,
    #[serde(deserialize_with = "wire::time")]
    #[schema(schema_with = schemas::time_of_day)]
    pub end: NaiveTime,
    /// Slots start every this many minutes.
    #[serde(deserialize_with = "wire::integer")]
    #[schema(minimum = 5, maximum = 240)]
    pub grid_minutes: i64,
    /// The first day it applies.
    #[serde(deserialize_with = "wire::date")]
    #[schema(value_type = String, format = Date)]
    pub effective_from: NaiveDate,
    /// The last day it applies (not before `effectiveFrom`); none: open-ended.
    #[serde(default, deserialize_with = "wire::optional_date")]
    #[schema(value_type = Option<String>, format = Date)]
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
    #[schema(schema_with = schemas::his_id)]
    pub his_id: String,
    #[serde(deserialize_with = "wire::date")]
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub kind: ExceptionKindBody,
    /// With `end` (before it), or neither for the whole day when unavailable.
    #[serde(default, deserialize_with = "wire::optional_time")]
    #[schema(schema_with = schemas::optional_time_of_day)]
    pub start: Option<NaiveTime>,
    #[serde(default, deserialize_with = "wire::optional_time")]
    #[schema(schema_with = schemas::optional_time_of_day)]
    pub end: Option<NaiveTime>,
    /// Required for an extra session (5 to 240); ignored otherwise.
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub grid_minutes: Option<i64>,
    #[schema(schema_with = schemas::optional_reason)]
    pub reason: Option<String>,
}

/// A practitioner's whole schedule: what is not in it is removed.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleBody {
    /// The practitioner's HIS id; required in bulk, optional (must match the path) otherwise.
    #[schema(schema_with = schemas::optional_his_id)]
    pub practitioner_id: Option<String>,
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    /// None: the practitioner has no recurring hours.
    #[schema(max_items = 100)]
    pub weekly_rules: Vec<WeeklyRuleBody>,
    /// Their `hisId`s differ.
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
                let reason = optional_text("exceptions.reason", e.reason.as_deref())?;
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
    /// The HIS's id; required in bulk, optional (must match the path) otherwise.
    #[schema(schema_with = schemas::optional_his_id)]
    pub his_id: Option<String>,
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(schema_with = schemas::optional_name)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::phone)]
    pub phone: Option<String>,
    #[schema(schema_with = schemas::email)]
    pub email: Option<String>,
    #[schema(schema_with = schemas::language)]
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
            name: optional_text("name", self.name.as_deref())?,
            phone: optional(self.phone.as_deref(), Phone::parse)?,
            email: optional_email(self.email.as_deref())?,
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
    #[schema(schema_with = schemas::his_id)]
    pub his_id: String,
    #[schema(schema_with = schemas::optional_name)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::phone)]
    pub phone: Option<String>,
    #[schema(schema_with = schemas::email)]
    pub email: Option<String>,
}

/// The appointment as the HIS has it now. Unknown to Buktor: it is
/// booked; known: it is moved if its time or practitioner changed.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppointmentBody {
    /// The HIS's id; required in bulk, optional (must match the path) otherwise.
    #[schema(schema_with = schemas::optional_his_id)]
    pub his_id: Option<String>,
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    /// The practitioner's HIS id.
    #[schema(schema_with = schemas::his_id)]
    pub practitioner_id: String,
    /// The service's HIS id; an appointment keeps its service.
    #[schema(schema_with = schemas::his_id)]
    pub service_id: String,
    #[schema(schema_with = schemas::appointment_start)]
    pub start: String,
    pub patient: AppointmentPatient,
    #[schema(schema_with = schemas::optional_reason)]
    pub note: Option<String>,
    /// Book or move even where Buktor's rules refuse (taken time, outside
    /// the schedule, notice, window); `forceReason` is then required and
    /// recorded.
    #[serde(default)]
    pub force: bool,
    #[schema(schema_with = schemas::optional_reason)]
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
            name: optional_text("patient.name", p.name.as_deref())?,
            phone: optional(p.phone.as_deref(), Phone::parse)?,
            email: optional_email(p.email.as_deref())?,
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
                note: optional_text("note", self.note.as_deref())?,
                overriding: overriding.clone(),
            },
            his_id,
            overriding,
        })
    }
}

fn overriding(force: bool, reason: Option<&str>) -> Invalid<Option<Reason>> {
    match (force, optional_text::<500>("forceReason", reason)?) {
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
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
    pub last_modified: Option<DateTime<Utc>>,
    #[schema(schema_with = schemas::reason)]
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
                reason: text("reason", &self.reason)?,
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
    #[serde(default, deserialize_with = "wire::optional_integer")]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "wire::optional_date_time")]
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
