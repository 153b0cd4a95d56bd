//! HL7 v2.5 SIU messages built from Buktor's appointment webhooks, for a HIS
//! that speaks HL7 v2 rather than SQL. `mllp` sends them.
//!
//! Building is pure: the same stored message always gives the same bytes
//! (the control id comes from the webhook id, MSH-7 from the body's
//! `timestamp`), so a retry is the very message the receiver may already
//! have seen, and it can de-duplicate on MSH-10.
//!
//! | `type`                    | trigger | SCH-25 (HL7 table 0278) |
//! |---------------------------|---------|-------------------------|
//! | `appointment.booked`      | S12     | `Booked`                |
//! | `appointment.rescheduled` | S13     | `Booked`                |
//! | `appointment.checked_in`  | S14     | `Started`               |
//! | `appointment.completed`   | S14     | `Complete`              |
//! | `appointment.cancelled`   | S15     | `Cancelled`             |
//! | `appointment.no_show`     | S26     | `Noshow`                |
//! | anything else             | —       | [`BuildError::NotApplicable`] |
//!
//! SCH-25 is taken from the appointment's status after the event (the same
//! thing for every row above). Table 0278 has no "arrived": `Started` is
//! its nearest code for a checked-in patient, and SCH-6 says `CHECKED_IN`
//! so a receiver can tell the two S14s apart. `docs/middleware.md`
//! ("HL7 v2 output") shows every field.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::StoredMessage;

/// The HL7 release every message declares in MSH-12.
pub const VERSION: &str = "2.5";

/// Local coding system for Buktor's own codes and ids (HL7 reserves
/// names starting with `99` for local tables).
pub const LOCAL_CODING_SYSTEM: &str = "99BUKTOR";

/// What a payload that cannot become an SIU message is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The type has no SIU meaning (`schedule.changed`, `practitioner.changed`,
    /// …): the caller marks the message skipped, never retries it.
    #[error("`{event_type}` has no HL7 SIU meaning")]
    NotApplicable { event_type: String },
    /// An appointment type whose body lacks what SIU requires: retrying the
    /// same body cannot help.
    #[error("the payload cannot become an SIU message: {0}")]
    Malformed(String),
}

/// The SIU trigger events Buktor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Notification of a new appointment booking.
    S12,
    /// Notification of appointment rescheduling.
    S13,
    /// Notification of appointment modification (check-in, completion).
    S14,
    /// Notification of appointment cancellation.
    S15,
    /// Notification that the patient did not show up.
    S26,
}

impl Trigger {
    /// The trigger for a webhook `type`, or `None` when it has no SIU meaning.
    pub fn for_event_type(event_type: &str) -> Option<Trigger> {
        Some(match event_type {
            "appointment.booked" => Trigger::S12,
            "appointment.rescheduled" => Trigger::S13,
            "appointment.checked_in" | "appointment.completed" => Trigger::S14,
            "appointment.cancelled" => Trigger::S15,
            "appointment.no_show" => Trigger::S26,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Trigger::S12 => "S12",
            Trigger::S13 => "S13",
            Trigger::S14 => "S14",
            Trigger::S15 => "S15",
            Trigger::S26 => "S26",
        }
    }

    /// HL7 table 0206 segment action code for RGS, AIS and AIP: the first
    /// message adds the resources, every later one updates them.
    fn action_code(self) -> &'static str {
        match self {
            Trigger::S12 => "A",
            _ => "U",
        }
    }
}

/// HL7 table 0278 filler status codes, for SCH-25, AIS-10 and AIP-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillerStatus {
    Booked,
    Started,
    Complete,
    Cancelled,
    Noshow,
}

impl FillerStatus {
    /// From the payload's `appointment.status`.
    pub fn from_appointment_status(status: &str) -> Option<FillerStatus> {
        Some(match status {
            "booked" => FillerStatus::Booked,
            "checked-in" => FillerStatus::Started,
            "completed" => FillerStatus::Complete,
            "cancelled" => FillerStatus::Cancelled,
            "no-show" => FillerStatus::Noshow,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            FillerStatus::Booked => "Booked",
            FillerStatus::Started => "Started",
            FillerStatus::Complete => "Complete",
            FillerStatus::Cancelled => "Cancelled",
            FillerStatus::Noshow => "Noshow",
        }
    }
}

/// Who sends to whom: MSH-3 to MSH-6 and MSH-11.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-11, HL7 table 0103: `P` production, `T` training, `D` debugging.
    pub processing_id: String,
}

/// A built message, ready to frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiuMessage {
    pub trigger: Trigger,
    /// MSH-10: what the receiver's MSA-2 must echo.
    pub control_id: String,
    /// The segments, each ended by `\r`.
    pub text: String,
}

/// MSH-10 for a webhook id: the first 20 hex digits of its SHA-256. Unique
/// per message (80 bits), the same on every retry, and within the 20
/// characters HL7 2.5 allows (a webhook id has 36).
pub fn control_id(webhook_id: &str) -> String {
    let digest = Sha256::digest(webhook_id.as_bytes());
    let mut hex = hex::encode_upper(digest);
    hex.truncate(20);
    hex
}

/// The message delimiters. Buktor always sends the standard ones; an ACK
/// may declare others in its own MSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Delimiters {
    /// `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: '^',
        repetition: '~',
        escape: '\\',
        subcomponent: '&',
    };

    /// The delimiters a segment starting `MSH` declares in MSH-1 and MSH-2.
    pub fn from_msh(segment: &str) -> Option<Delimiters> {
        let mut chars = segment.strip_prefix("MSH")?.chars();
        let field = chars.next()?;
        let encoding: Vec<char> = chars.take_while(|c| *c != field).collect();
        match encoding[..] {
            [component, repetition, escape, subcomponent, ..] => Some(Delimiters {
                field,
                component,
                repetition,
                escape,
                subcomponent,
            }),
            _ => None,
        }
    }

    /// Escapes a value for a field, component or subcomponent of any type
    /// but FT: the delimiters become `\F\ \S\ \T\ \R\ \E\`, and line breaks
    /// and other control characters (which would end the segment) spaces.
    pub fn escape(&self, value: &str) -> String {
        self.escape_with(value, false)
    }

    /// Escapes a formatted-text (FT) value: as [`Self::escape`], but a line
    /// break becomes `\.br\`.
    pub fn escape_formatted(&self, value: &str) -> String {
        self.escape_with(value, true)
    }

    fn escape_with(&self, value: &str, formatted: bool) -> String {
        let e = self.escape;
        let mut out = String::with_capacity(value.len());
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            let code = if c == e {
                Some('E')
            } else if c == self.field {
                Some('F')
            } else if c == self.component {
                Some('S')
            } else if c == self.subcomponent {
                Some('T')
            } else if c == self.repetition {
                Some('R')
            } else {
                None
            };
            if let Some(code) = code {
                out.extend([e, code, e]);
            } else if c == '\r' || c == '\n' {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                if formatted {
                    out.push(e);
                    out.push_str(".br");
                    out.push(e);
                } else {
                    out.push(' ');
                }
            } else if c.is_control() {
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Reverses [`Self::escape`] and [`Self::escape_formatted`]: the five
    /// delimiter escapes, `\Xhh…\` hexadecimal data and `\.br\`. Any other
    /// escape sequence is kept as written.
    pub fn unescape(&self, value: &str) -> String {
        let e = self.escape;
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find(e) {
            out.push_str(&rest[..start]);
            let after = &rest[start + e.len_utf8()..];
            let Some(end) = after.find(e) else {
                out.push_str(&rest[start..]);
                return out;
            };
            let sequence = &after[..end];
            match sequence {
                "F" => out.push(self.field),
                "S" => out.push(self.component),
                "T" => out.push(self.subcomponent),
                "R" => out.push(self.repetition),
                "E" => out.push(e),
                ".br" => out.push('\n'),
                _ => match sequence.strip_prefix('X').and_then(decode_hex) {
                    Some(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                    None => {
                        out.push(e);
                        out.push_str(sequence);
                        out.push(e);
                    }
                },
            }
            rest = &after[end + e.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

fn decode_hex(digits: &str) -> Option<Vec<u8>> {
    if digits.is_empty() {
        return None;
    }
    hex::decode(digits).ok()
}

/// Builds the SIU message for a stored webhook message.
pub fn build(header: &Header, message: &StoredMessage) -> Result<SiuMessage, BuildError> {
    let Some(trigger) = Trigger::for_event_type(&message.event_type) else {
        return Err(BuildError::NotApplicable {
            event_type: message.event_type.clone(),
        });
    };
    let appointment = Appointment::parse(&message.payload, message.received_at)?;
    let control_id = control_id(&message.webhook_id);
    let text = render(
        header,
        trigger,
        &control_id,
        &message.event_type,
        &appointment,
    );
    Ok(SiuMessage {
        trigger,
        control_id,
        text,
    })
}

/// What SIU needs from a webhook body, parsed and checked once.
struct Appointment {
    time_zone: Tz,
    sent_at: DateTime<Utc>,
    id: String,
    /// The HIS's own id (`hisId`), when the HIS created the appointment.
    his_id: Option<String>,
    status: FillerStatus,
    start: DateTime<Tz>,
    end: DateTime<Tz>,
    minutes: i64,
    note: Option<String>,
    cancellation: Option<view::Cancellation>,
    previous_start: Option<DateTime<Tz>>,
    /// On a reschedule that changed the practitioner: the one it left.
    previous_practitioner: Option<view::Practitioner>,
    actor: Option<String>,
    patient: view::Patient,
    practitioner: view::Practitioner,
    /// `null` only for a service Buktor cannot find; then SCH-7 and AIS
    /// are left out.
    service: Option<view::Service>,
}

/// The webhook body as `docs/webhooks.md` describes it; only what SIU uses.
mod view {
    use chrono::{DateTime, FixedOffset, Utc};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Body {
        pub timestamp: Option<DateTime<Utc>>,
        pub data: Data,
    }

    #[derive(Deserialize)]
    pub struct Data {
        pub event: Option<Event>,
        pub tenant: Tenant,
        pub appointment: serde_json::Value,
    }

    #[derive(Deserialize)]
    pub struct Event {
        pub actor: Option<Actor>,
    }

    #[derive(Deserialize)]
    pub struct Actor {
        pub id: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Tenant {
        pub time_zone: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Appointment {
        pub id: String,
        /// Added to payload version 1 later: absent from older bodies.
        #[serde(default)]
        pub his_id: Option<String>,
        pub status: String,
        pub local_start: DateTime<FixedOffset>,
        pub local_end: DateTime<FixedOffset>,
        pub note: Option<String>,
        pub cancellation: Option<Cancellation>,
        pub previous: Option<Previous>,
        pub patient: Patient,
        pub practitioner: Practitioner,
        pub service: Option<Service>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cancellation {
        pub reason: Option<String>,
        pub cancelled_by: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Previous {
        pub start: Option<DateTime<Utc>>,
        pub practitioner_id: Option<String>,
        /// The whole previous practitioner; older bodies carry only the id.
        #[serde(default)]
        pub practitioner: Option<Practitioner>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Patient {
        pub his_patient_id: String,
        pub name: Option<String>,
        pub phone: Option<String>,
        pub email: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Practitioner {
        pub id: String,
        pub external_id: Option<String>,
        pub name: Option<String>,
        pub specialty: Option<String>,
        pub department: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Service {
        pub id: String,
        pub external_id: Option<String>,
        pub name: Option<String>,
    }
}

impl Appointment {
    fn parse(payload: &serde_json::Value, received_at: DateTime<Utc>) -> Result<Self, BuildError> {
        let malformed =
            |what: &str, e: serde_json::Error| BuildError::Malformed(format!("{what}: {e}"));
        let body = view::Body::deserialize(payload).map_err(|e| malformed("body", e))?;
        let a = view::Appointment::deserialize(&body.data.appointment)
            .map_err(|e| malformed("data.appointment", e))?;
        let time_zone: Tz = body.data.tenant.time_zone.parse().map_err(|_| {
            BuildError::Malformed(format!(
                "data.tenant.timeZone: `{}` is not an IANA time zone",
                body.data.tenant.time_zone
            ))
        })?;
        let status = FillerStatus::from_appointment_status(&a.status).ok_or_else(|| {
            BuildError::Malformed(format!(
                "data.appointment.status: unknown status `{}`",
                a.status
            ))
        })?;
        if a.id.trim().is_empty() || a.patient.his_patient_id.trim().is_empty() {
            return Err(BuildError::Malformed(
                "data.appointment: an empty id or patient.hisPatientId".into(),
            ));
        }
        let start = a.local_start.with_timezone(&time_zone);
        let end = a.local_end.with_timezone(&time_zone);
        let minutes = (end - start).num_minutes();
        if minutes <= 0 {
            return Err(BuildError::Malformed(format!(
                "data.appointment: localEnd {} is not after localStart {}",
                a.local_end, a.local_start
            )));
        }
        let (previous_start, previous_practitioner) = match a.previous {
            Some(p) => {
                let id = p
                    .practitioner
                    .as_ref()
                    .map(|p| p.id.clone())
                    .or(p.practitioner_id);
                // Only a move to another practitioner names the old one.
                let moved = id.filter(|id| !id.is_empty() && *id != a.practitioner.id);
                let practitioner = moved.map(|id| match p.practitioner {
                    Some(known) if known.id == id => known,
                    _ => view::Practitioner {
                        id,
                        external_id: None,
                        name: None,
                        specialty: None,
                        department: None,
                    },
                });
                (p.start.map(|s| s.with_timezone(&time_zone)), practitioner)
            }
            None => (None, None),
        };
        Ok(Appointment {
            time_zone,
            sent_at: body.timestamp.unwrap_or(received_at),
            id: a.id,
            his_id: a.his_id.filter(|h| !h.trim().is_empty()),
            status,
            start,
            end,
            minutes,
            note: a.note.filter(|n| !n.trim().is_empty()),
            cancellation: a.cancellation,
            previous_start,
            previous_practitioner,
            actor: body
                .data
                .event
                .and_then(|e| e.actor)
                .and_then(|a| a.id)
                .filter(|id| !id.is_empty()),
            patient: a.patient,
            practitioner: a.practitioner,
            service: a.service,
        })
    }
}

/// HL7 DTM with the offset: `YYYYMMDDHHMMSS+ZZZZ`.
pub fn dtm<Z: TimeZone>(time: &DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    time.format("%Y%m%d%H%M%S%z").to_string()
}

/// One segment under construction: fields hold already-encoded text.
struct Segment {
    name: &'static str,
    fields: Vec<String>,
}

impl Segment {
    fn new(name: &'static str) -> Self {
        Segment {
            name,
            fields: Vec::new(),
        }
    }

    /// Sets field `number` (1-based, as HL7 counts) to encoded `value`.
    fn field(mut self, number: usize, value: impl Into<String>) -> Self {
        if self.fields.len() < number {
            self.fields.resize(number, String::new());
        }
        self.fields[number - 1] = value.into();
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str(self.name);
        let d = Delimiters::STANDARD;
        // MSH-1 is the field separator itself and MSH-2 the encoding
        // characters, which are written raw.
        let first = if self.name == "MSH" {
            out.push(d.field);
            out.extend([d.component, d.repetition, d.escape, d.subcomponent]);
            2
        } else {
            0
        };
        let used = self
            .fields
            .iter()
            .rposition(|f| !f.is_empty())
            .map_or(0, |i| i + 1);
        for field in &self.fields[first.min(used)..used] {
            out.push(d.field);
            out.push_str(field);
        }
        out.push('\r');
    }
}

/// Escapes one value.
fn text(value: &str) -> String {
    Delimiters::STANDARD.escape(value)
}

/// Joins encoded parts with `sep`, leaving out trailing empty ones.
fn join(parts: &[String], sep: char) -> String {
    let used = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    let mut out = String::new();
    for (i, part) in parts[..used].iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(part);
    }
    out
}

/// Components of one field (or repetition), from encoded parts.
fn components(parts: &[String]) -> String {
    join(parts, Delimiters::STANDARD.component)
}

/// Subcomponents of one component, from encoded parts.
fn subcomponents(parts: &[String]) -> String {
    join(parts, Delimiters::STANDARD.subcomponent)
}

/// A CE: code^text^coding system.
fn ce(code: &str, label: &str, system: &str) -> String {
    components(&[text(code), text(label), text(system)])
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn render(
    header: &Header,
    trigger: Trigger,
    control_id: &str,
    event_type: &str,
    a: &Appointment,
) -> String {
    let local_ns = text(&header.sending_application);
    let his = &header.receiving_application;
    let status = ce(a.status.code(), a.status.code(), "HL70278");
    let start = dtm(&a.start);
    let end = dtm(&a.end);
    let minutes = a.minutes.to_string();
    let minute_units = ce("min", "minutes", "UCUM");
    let action = trigger.action_code();

    let mut segments = vec![Segment::new("MSH")
        .field(3, text(&header.sending_application))
        .field(4, text(&header.sending_facility))
        .field(5, text(&header.receiving_application))
        .field(6, text(&header.receiving_facility))
        .field(7, dtm(&a.sent_at.with_timezone(&a.time_zone)))
        .field(
            9,
            components(&["SIU".into(), trigger.code().into(), "SIU_S12".into()]),
        )
        .field(10, text(control_id))
        .field(11, text(&header.processing_id))
        .field(12, VERSION)
        .field(18, "UNICODE UTF-8")];

    // SCH-1, the placer's id: the HIS's own when the HIS placed the
    // appointment (through /his/v1), so it can match the message to its
    // record; else Buktor's, which then both placed it and fills it.
    // SCH-2, the filler's id: always Buktor's, which keeps the slot.
    let filler_id = components(&[text(&a.id), local_ns.clone()]);
    let placer_id = match &a.his_id {
        Some(his_id) => components(&[text(his_id), text(his)]),
        None => filler_id.clone(),
    };
    let event_reason = event_reason(trigger, event_type, a);
    // SCH-16 and SCH-20 are required: who made the change, or Buktor itself
    // for a body without an actor.
    let actor = {
        let mut parts = vec![String::new(); 9];
        parts[0] = text(a.actor.as_deref().unwrap_or(&header.sending_application));
        parts[8] = local_ns.clone();
        components(&parts)
    };
    segments.push(
        Segment::new("SCH")
            .field(1, placer_id)
            .field(2, filler_id)
            .field(6, event_reason)
            .field(
                7,
                a.service
                    .as_ref()
                    .map(|s| service_code(s, his))
                    .unwrap_or_default(),
            )
            .field(8, ce("Normal", "Routine schedule request type", "HL70277"))
            .field(9, minutes.clone())
            .field(10, minute_units.clone())
            // SCH-11 (TQ) is kept in 2.5 for older receivers; TQ1 is the
            // current way to say the same.
            .field(
                11,
                components(&[
                    String::new(),
                    String::new(),
                    format!("M{}", a.minutes),
                    start.clone(),
                    end.clone(),
                ]),
            )
            .field(16, actor.clone())
            .field(20, actor)
            .field(25, status.clone()),
    );
    segments.push(
        Segment::new("TQ1")
            .field(1, "1")
            .field(
                6,
                components(&[
                    minutes.clone(),
                    subcomponents(&["min".into(), "minutes".into(), "UCUM".into()]),
                ]),
            )
            .field(7, start.clone())
            .field(8, end),
    );
    if let Some(note) = &a.note {
        segments.push(
            Segment::new("NTE")
                .field(1, "1")
                .field(2, "L")
                .field(3, Delimiters::STANDARD.escape_formatted(note)),
        );
    }

    let name = a
        .patient
        .name
        .as_deref()
        .map(|n| {
            let mut parts = vec![String::new(); 7];
            parts[0] = text(n);
            // Buktor keeps one display name, not family and given apart.
            parts[6] = "D".into();
            components(&parts)
        })
        .unwrap_or_default();
    let mut contacts = Vec::new();
    if let Some(phone) = &a.patient.phone {
        let mut parts = vec![String::new(); 12];
        parts[0] = text(phone);
        parts[1] = "PRN".into();
        parts[2] = "PH".into();
        parts[11] = text(phone);
        contacts.push(components(&parts));
    }
    if let Some(email) = &a.patient.email {
        contacts.push(components(&[
            String::new(),
            "NET".into(),
            "Internet".into(),
            text(email),
        ]));
    }
    segments.push(
        Segment::new("PID")
            .field(1, "1")
            .field(
                3,
                components(&[
                    text(&a.patient.his_patient_id),
                    String::new(),
                    String::new(),
                    text(his),
                    "MR".into(),
                ]),
            )
            .field(5, name)
            .field(13, join(&contacts, Delimiters::STANDARD.repetition)),
    );

    segments.push(Segment::new("RGS").field(1, "1").field(2, action));
    if let Some(service) = &a.service {
        segments.push(
            Segment::new("AIS")
                .field(1, "1")
                .field(2, action)
                .field(3, service_code(service, his))
                .field(4, start.clone())
                .field(7, minutes.clone())
                .field(8, minute_units.clone())
                .field(10, status.clone()),
        );
    }

    // A move to another practitioner says so (HL7 table 0206): `D` deletes
    // the practitioner the appointment left, at its old time, and `A` adds
    // the new one; `U` would leave the old one booked at the receiver.
    let mut set_id = 1;
    let mut current_action = action;
    if let Some(old) = &a.previous_practitioner {
        let old_start = a.previous_start.as_ref().map(dtm).unwrap_or_default();
        segments.push(
            personnel(old, header, set_id, "D")
                .field(6, old_start)
                .field(9, minutes.clone())
                .field(10, minute_units.clone()),
        );
        set_id += 1;
        current_action = "A";
    }
    segments.push(
        personnel(&a.practitioner, header, set_id, current_action)
            .field(6, start)
            .field(9, minutes)
            .field(10, minute_units)
            .field(12, status),
    );

    let mut out = String::new();
    for segment in &segments {
        segment.render(&mut out);
    }
    out
}

/// AIP-1 to AIP-5 for a practitioner: the HIS's external id (authority
/// `receiving_application`) or Buktor's id (authority
/// `sending_application`), the name as a display name, specialty and
/// department as text.
fn personnel(p: &view::Practitioner, header: &Header, set_id: usize, action: &str) -> Segment {
    let (person_id, authority) = match &p.external_id {
        Some(external) => (external.as_str(), header.receiving_application.as_str()),
        None => (p.id.as_str(), header.sending_application.as_str()),
    };
    let mut person = vec![String::new(); 10];
    person[0] = text(person_id);
    person[1] = text(opt(&p.name));
    person[8] = text(authority);
    person[9] = if p.name.is_some() {
        "D".into()
    } else {
        String::new()
    };
    Segment::new("AIP")
        .field(1, set_id.to_string())
        .field(2, action)
        .field(3, components(&person))
        .field(4, components(&[String::new(), text(opt(&p.specialty))]))
        .field(5, components(&[String::new(), text(opt(&p.department))]))
}

/// AIS-3 and SCH-7: the HIS's code for the service when it has one, with
/// Buktor's id as the alternate; Buktor's id alone otherwise.
fn service_code(service: &view::Service, his: &str) -> String {
    let label = opt(&service.name);
    match &service.external_id {
        Some(external) => components(&[
            text(external),
            text(label),
            text(his),
            text(&service.id),
            text(label),
            LOCAL_CODING_SYSTEM.into(),
        ]),
        None => ce(&service.id, label, LOCAL_CODING_SYSTEM),
    }
}

/// SCH-6: what happened, as a local code, and why in words where the
/// payload says (the cancellation reason, where a rescheduled one was).
fn event_reason(trigger: Trigger, event_type: &str, a: &Appointment) -> String {
    let (code, label) = match (trigger, event_type) {
        (Trigger::S12, _) => ("BOOKED".to_string(), "Appointment booked".to_string()),
        (Trigger::S13, _) => (
            "RESCHEDULED".into(),
            match &a.previous_start {
                Some(previous) => format!("Rescheduled from {}", dtm(previous)),
                None => "Appointment rescheduled".into(),
            },
        ),
        (Trigger::S14, "appointment.checked_in") => {
            ("CHECKED_IN".into(), "Patient checked in".into())
        }
        (Trigger::S14, _) => ("COMPLETED".into(), "Appointment completed".into()),
        (Trigger::S15, _) => {
            let by = a
                .cancellation
                .as_ref()
                .and_then(|c| c.cancelled_by.as_deref())
                .map(|by| format!("CANCELLED_BY_{}", by.to_ascii_uppercase()))
                .unwrap_or_else(|| "CANCELLED".into());
            let reason = a
                .cancellation
                .as_ref()
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "Appointment cancelled".into());
            (by, reason)
        }
        (Trigger::S26, _) => ("NO_SHOW".into(), "Patient did not show up".into()),
    };
    ce(&code, &label, LOCAL_CODING_SYSTEM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header() -> Header {
        Header {
            sending_application: "BUKTOR".into(),
            sending_facility: "DEMO".into(),
            receiving_application: "HIS".into(),
            receiving_facility: "WARD".into(),
            processing_id: "P".into(),
        }
    }

    fn body(event_type: &str, status: &str) -> serde_json::Value {
        json!({
            "type": event_type,
            "timestamp": "2026-07-01T07:14:03.120Z",
            "version": 1,
            "data": {
                "event": { "id": "e1", "name": "X", "actor": { "id": "front-desk", "role": "staff" } },
                "tenant": { "id": "t1", "timeZone": "Europe/Amsterdam" },
                "appointment": {
                    "id": "a1", "version": 2, "status": status,
                    "start": "2026-07-02T07:00:00Z", "end": "2026-07-02T07:20:00Z",
                    "localStart": "2026-07-02T09:00:00+02:00", "localEnd": "2026-07-02T09:20:00+02:00",
                    "calendarDay": "2026-07-02", "note": null, "cancellation": null, "previous": null,
                    "patient": { "hisPatientId": "P-1001", "name": "Ada Jansen", "phone": null, "email": null },
                    "practitioner": { "id": "p1", "externalId": null, "name": null, "specialty": null, "department": null, "location": null },
                    "service": { "id": "s1", "externalId": null, "name": "Consultation", "durationMinutes": 20 }
                }
            }
        })
    }

    fn stored(event_type: &str, payload: serde_json::Value) -> StoredMessage {
        StoredMessage {
            webhook_id: "msg_0123456789abcdef0123456789abcdef".into(),
            appointment_id: Some("a1".into()),
            event_type: event_type.into(),
            appointment_version: Some(2),
            payload,
            received_at: "2026-07-01T07:14:04Z".parse().unwrap(),
        }
    }

    fn segment<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.split('\r')
            .find(|s| s.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
            .split('|')
            .collect()
    }

    #[test]
    fn each_appointment_type_maps_to_its_trigger_and_status() {
        for (event_type, status, trigger, sch25) in [
            ("appointment.booked", "booked", "S12", "Booked"),
            ("appointment.rescheduled", "booked", "S13", "Booked"),
            ("appointment.checked_in", "checked-in", "S14", "Started"),
            ("appointment.completed", "completed", "S14", "Complete"),
            ("appointment.cancelled", "cancelled", "S15", "Cancelled"),
            ("appointment.no_show", "no-show", "S26", "Noshow"),
        ] {
            let siu = build(&header(), &stored(event_type, body(event_type, status))).unwrap();
            assert_eq!(siu.trigger.code(), trigger);
            let msh = segment(&siu.text, "MSH");
            assert_eq!(msh[8], format!("SIU^{trigger}^SIU_S12"));
            assert_eq!(
                segment(&siu.text, "SCH")[25],
                format!("{sch25}^{sch25}^HL70278")
            );
        }
    }

    #[test]
    fn types_without_an_siu_meaning_are_not_applicable() {
        for event_type in [
            "schedule.changed",
            "practitioner.changed",
            "service.changed",
            "webhook.dead_lettered",
        ] {
            let message = stored(event_type, json!({ "type": event_type, "data": {} }));
            assert_eq!(
                build(&header(), &message),
                Err(BuildError::NotApplicable {
                    event_type: event_type.into()
                })
            );
        }
    }

    #[test]
    fn a_body_without_what_siu_needs_is_malformed() {
        let mut no_patient = body("appointment.booked", "booked");
        no_patient["data"]["appointment"]
            .as_object_mut()
            .unwrap()
            .remove("patient");
        let mut bad_zone = body("appointment.booked", "booked");
        bad_zone["data"]["tenant"]["timeZone"] = json!("Mars/Olympus");
        let mut backwards = body("appointment.booked", "booked");
        backwards["data"]["appointment"]["localEnd"] = json!("2026-07-02T08:50:00+02:00");
        let mut unknown_status = body("appointment.booked", "booked");
        unknown_status["data"]["appointment"]["status"] = json!("pencilled");
        for (payload, needle) in [
            (no_patient, "patient"),
            (bad_zone, "Mars/Olympus"),
            (backwards, "not after"),
            (unknown_status, "pencilled"),
            (json!({ "type": "appointment.booked" }), "data"),
        ] {
            match build(&header(), &stored("appointment.booked", payload)) {
                Err(BuildError::Malformed(detail)) => assert!(detail.contains(needle), "{detail}"),
                other => panic!("expected Malformed mentioning {needle}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_control_id_is_stable_short_and_distinct() {
        let a = control_id("msg_0123456789abcdef0123456789abcdef");
        assert_eq!(a, control_id("msg_0123456789abcdef0123456789abcdef"));
        assert_eq!(a.len(), 20);
        assert_ne!(a, control_id("msg_0123456789abcdef0123456789abcdee"));
        let message = stored("appointment.booked", body("appointment.booked", "booked"));
        assert_eq!(
            build(&header(), &message),
            build(&header(), &message),
            "a retry is the same message"
        );
    }

    #[test]
    fn times_carry_the_hospitals_offset_in_summer_and_winter() {
        let siu = build(
            &header(),
            &stored("appointment.booked", body("appointment.booked", "booked")),
        )
        .unwrap();
        assert_eq!(segment(&siu.text, "MSH")[6], "20260701091403+0200");
        assert_eq!(segment(&siu.text, "TQ1")[7], "20260702090000+0200");
        assert_eq!(segment(&siu.text, "TQ1")[8], "20260702092000+0200");
        let mut winter = body("appointment.booked", "booked");
        winter["data"]["appointment"]["localStart"] = json!("2026-11-26T09:00:00+01:00");
        winter["data"]["appointment"]["localEnd"] = json!("2026-11-26T09:30:00+01:00");
        let siu = build(&header(), &stored("appointment.booked", winter)).unwrap();
        assert_eq!(
            segment(&siu.text, "SCH")[11],
            "^^M30^20261126090000+0100^20261126093000+0100"
        );
        assert_eq!(segment(&siu.text, "SCH")[9], "30");
        assert_eq!(segment(&siu.text, "AIS")[4], "20261126090000+0100");
    }

    #[test]
    fn segments_come_in_siu_order_and_end_with_carriage_returns() {
        let mut b = body("appointment.booked", "booked");
        b["data"]["appointment"]["note"] = json!("bring letter");
        let siu = build(&header(), &stored("appointment.booked", b)).unwrap();
        assert!(siu.text.ends_with('\r') && !siu.text.contains('\n'));
        let names: Vec<&str> = siu.text.split_terminator('\r').map(|s| &s[..3]).collect();
        assert_eq!(
            names,
            ["MSH", "SCH", "TQ1", "NTE", "PID", "RGS", "AIS", "AIP"]
        );
        assert!(siu.text.starts_with("MSH|^~\\&|BUKTOR|DEMO|HIS|WARD|"));
    }

    #[test]
    fn delimiters_in_data_are_escaped_and_come_back() {
        let d = Delimiters::STANDARD;
        let nasty = r"A|B^C~D\E&F";
        assert_eq!(d.escape(nasty), r"A\F\B\S\C\R\D\E\E\T\F");
        assert_eq!(d.unescape(&d.escape(nasty)), nasty);
        assert_eq!(d.escape("two\r\nlines\nhere"), "two lines here");
        assert_eq!(d.escape_formatted("two\r\nlines"), r"two\.br\lines");
        assert_eq!(d.unescape(r"two\.br\lines"), "two\nlines");
        assert_eq!(d.unescape(r"caf\XC3A9\ \Z1\ end\"), r"café \Z1\ end\");
        assert_eq!(d.escape("Zoë Ünal"), "Zoë Ünal");
    }

    #[test]
    fn names_and_notes_with_delimiters_cannot_break_the_message() {
        let mut b = body("appointment.booked", "booked");
        b["data"]["appointment"]["patient"]["name"] = json!("O'Brien|Smith^Jr~&\\");
        b["data"]["appointment"]["note"] = json!("line one\rMSH|evil");
        let siu = build(&header(), &stored("appointment.booked", b)).unwrap();
        assert_eq!(siu.text.split_terminator('\r').count(), 8);
        let pid = segment(&siu.text, "PID");
        assert_eq!(pid[5], r"O'Brien\F\Smith\S\Jr\R\\T\\E\^^^^^^D");
        assert_eq!(segment(&siu.text, "NTE")[3], r"line one\.br\MSH\F\evil");
    }

    #[test]
    fn a_missing_service_or_actor_leaves_out_only_what_depends_on_it() {
        let mut b = body("appointment.booked", "booked");
        b["data"]["appointment"]["service"] = json!(null);
        b["data"]["event"].as_object_mut().unwrap().remove("actor");
        let siu = build(&header(), &stored("appointment.booked", b)).unwrap();
        let names: Vec<&str> = siu.text.split_terminator('\r').map(|s| &s[..3]).collect();
        assert_eq!(names, ["MSH", "SCH", "TQ1", "PID", "RGS", "AIP"]);
        let sch = segment(&siu.text, "SCH");
        assert_eq!(sch[7], "");
        assert_eq!(
            sch[16], "BUKTOR^^^^^^^^BUKTOR",
            "SCH-16 is required: Buktor itself"
        );
        assert_eq!(sch[20], sch[16]);
    }

    #[test]
    fn the_placer_id_is_the_his_id_when_the_his_placed_the_appointment() {
        let siu = build(
            &header(),
            &stored("appointment.booked", body("appointment.booked", "booked")),
        )
        .unwrap();
        let sch = segment(&siu.text, "SCH");
        assert_eq!((sch[1], sch[2]), ("a1^BUKTOR", "a1^BUKTOR"));
        let mut b = body("appointment.booked", "booked");
        b["data"]["appointment"]["hisId"] = json!("HIS-APPT-7|x");
        let siu = build(&header(), &stored("appointment.booked", b)).unwrap();
        let sch = segment(&siu.text, "SCH");
        assert_eq!(
            sch[1], r"HIS-APPT-7\F\x^HIS",
            "SCH-1: the HIS's id, its namespace"
        );
        assert_eq!(sch[2], "a1^BUKTOR", "SCH-2: Buktor's id");
    }

    #[test]
    fn a_move_to_another_practitioner_deletes_the_old_and_adds_the_new() {
        let mut b = body("appointment.rescheduled", "booked");
        b["data"]["appointment"]["previous"] = json!({
            "practitionerId": "p0", "start": "2026-07-02T06:00:00Z",
            "practitioner": { "id": "p0", "externalId": "DOC-0", "name": "Dr. Old",
                "specialty": null, "department": null, "location": null },
        });
        let siu = build(&header(), &stored("appointment.rescheduled", b)).unwrap();
        let aips: Vec<Vec<&str>> = siu
            .text
            .split_terminator('\r')
            .filter(|s| s.starts_with("AIP"))
            .map(|s| s.split('|').collect())
            .collect();
        assert_eq!(aips.len(), 2, "{}", siu.text);
        assert_eq!((aips[0][1], aips[0][2]), ("1", "D"));
        assert_eq!(aips[0][3], "DOC-0^Dr. Old^^^^^^^HIS^D");
        assert_eq!(aips[0][6], "20260702080000+0200", "the old start");
        assert_eq!((aips[1][1], aips[1][2]), ("2", "A"));
        assert!(aips[1][3].starts_with("p1^"), "{}", aips[1][3]);
        assert_eq!(aips[1][12], "Booked^Booked^HL70278");

        // An older body names only the id; the same practitioner is a `U`.
        let mut b = body("appointment.rescheduled", "booked");
        b["data"]["appointment"]["previous"] =
            json!({ "practitionerId": "p0", "start": "2026-07-02T06:00:00Z" });
        let siu = build(&header(), &stored("appointment.rescheduled", b)).unwrap();
        assert!(
            siu.text.contains("AIP|1|D|p0^^^^^^^^BUKTOR|"),
            "{}",
            siu.text
        );
        let mut b = body("appointment.rescheduled", "booked");
        b["data"]["appointment"]["previous"] =
            json!({ "practitionerId": "p1", "start": "2026-07-02T06:00:00Z" });
        let siu = build(&header(), &stored("appointment.rescheduled", b)).unwrap();
        let aip = segment(&siu.text, "AIP");
        assert_eq!((aip[1], aip[2]), ("1", "U"));
        assert_eq!(siu.text.matches("AIP|").count(), 1);
    }

    #[test]
    fn delimiters_are_read_from_an_msh() {
        assert_eq!(
            Delimiters::from_msh("MSH|^~\\&|X"),
            Some(Delimiters::STANDARD)
        );
        let other = Delimiters::from_msh("MSH#*~\\&#X").unwrap();
        assert_eq!((other.field, other.component), ('#', '*'));
        assert_eq!(Delimiters::from_msh("MSH|^~"), None);
        assert_eq!(Delimiters::from_msh("PID|1"), None);
    }
}
