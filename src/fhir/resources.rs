//! Buktor's read models as FHIR R4 resources (JSON). Only elements Buktor
//! knows are written; every required element of each resource is present.
use base64::alphabet::Alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use buktor_domain::appointment::{AppointmentStatus, BookedAppointment, CANCELLATION_CODE_SYSTEM};
use buktor_domain::practitioner::RegisteredPractitioner;
use buktor_domain::service::DefinedService;
use buktor_domain::PractitionerId;
use buktor_projections::appointments::AppointmentDoc;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::params::fhir_status;

/// The code system of Buktor service ids (`Appointment.serviceType`, `Slot.serviceType`).
pub const SERVICE_SYSTEM: &str = "https://buktor.dev/fhir/CodeSystem/service";
/// The identifier system of the HIS's patient ids.
pub const PATIENT_SYSTEM: &str = "https://buktor.dev/fhir/NamingSystem/his-patient-id";
/// The identifier system of practitioners' external (HIS) ids.
pub const PRACTITIONER_SYSTEM: &str =
    "https://buktor.dev/fhir/NamingSystem/practitioner-external-id";
/// The code system of Buktor's error codes in `OperationOutcome.issue.details`.
pub const ERROR_SYSTEM: &str = "https://buktor.dev/fhir/CodeSystem/error";

pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whether `id` can stand in a FHIR reference (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The prefix of a Patient id that encodes the HIS patient id rather than
/// being it. HIS ids that start with it are encoded too, so the two kinds
/// of Patient ids never meet.
const ENCODED_PATIENT: &str = "--";

/// Base 64 over exactly the 64 characters a FHIR id may hold, unpadded and
/// canonical (no stray trailing bits), so each HIS id has one encoding.
const PATIENT_ID_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.") {
        Ok(a) => a,
        Err(_) => panic!("the FHIR id alphabet has 64 distinct characters"),
    },
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// The FHIR id of the Patient with this HIS patient id: the HIS id itself
/// when it is a FHIR id (and neither starts with `--` nor is `.` or `..`,
/// which would be URL path steps), else `--` and the base 64 of its UTF-8
/// bytes over `[A-Za-z0-9\-.]`. `None` when even that exceeds 64
/// characters (a HIS id of more than 46 bytes with other characters):
/// such a patient has no Patient resource, only the identifier.
pub fn patient_id(his_patient_id: &str) -> Option<String> {
    let plain = is_fhir_id(his_patient_id)
        && !his_patient_id.starts_with(ENCODED_PATIENT)
        && his_patient_id != "."
        && his_patient_id != "..";
    if plain {
        return Some(his_patient_id.to_owned());
    }
    let id = format!(
        "{ENCODED_PATIENT}{}",
        PATIENT_ID_ENGINE.encode(his_patient_id.as_bytes())
    );
    is_fhir_id(&id).then_some(id)
}

/// The HIS patient id a Patient id stands for: the inverse of
/// [`patient_id`]; `None` for an id that function never gives.
pub fn his_patient_id(id: &str) -> Option<String> {
    let his = match id.strip_prefix(ENCODED_PATIENT) {
        None => id.to_owned(),
        Some(encoded) => {
            let bytes = PATIENT_ID_ENGINE.decode(encoded).ok()?;
            String::from_utf8(bytes).ok()?
        }
    };
    (patient_id(&his).as_deref() == Some(id)).then_some(his)
}

fn service_type(service_id: &str, service: Option<&DefinedService>) -> Value {
    let name = service.map(|s| s.details.name.as_str());
    let mut coding = json!({"system": SERVICE_SYSTEM, "code": service_id});
    if let Some(name) = name {
        coding["display"] = json!(name);
    }
    let mut concept = json!({"coding": [coding]});
    if let Some(name) = name {
        concept["text"] = json!(name);
    }
    concept
}

/// When the appointment was booked and last changed, if the read model has it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audit {
    pub version: Option<i64>,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
}

impl From<&AppointmentDoc> for Audit {
    fn from(d: &AppointmentDoc) -> Self {
        Audit {
            version: Some(d.version),
            created: Some(d.booked_at),
            updated: Some(d.updated_at),
        }
    }
}

pub fn appointment(
    a: &BookedAppointment,
    audit: Audit,
    service: Option<&DefinedService>,
    practitioner: Option<&RegisteredPractitioner>,
) -> Value {
    let his = a.patient.his_patient_id.as_str();
    let mut patient = json!({"identifier": {"system": PATIENT_SYSTEM, "value": his}});
    if let Some(id) = patient_id(his) {
        patient["reference"] = json!(format!("Patient/{id}"));
    }
    if let Some(name) = &a.patient.name {
        patient["display"] = json!(name.as_str());
    }
    let mut doctor = json!({"reference": format!("Practitioner/{}", a.practitioner_id)});
    if let Some(p) = practitioner {
        doctor["display"] = json!(p.details.name.as_str());
    }
    let mut r = json!({
        "resourceType": "Appointment",
        "id": a.id.to_string(),
        "status": fhir_status(a.status),
        "serviceType": [service_type(&a.service_id.to_string(), service)],
        "start": instant(a.start),
        "end": instant(a.end),
        "minutesDuration": (a.end - a.start).num_minutes(),
        "participant": [
            {"actor": patient, "required": "required", "status": "accepted"},
            {"actor": doctor, "required": "required", "status": "accepted"},
        ],
    });
    let mut meta = serde_json::Map::new();
    if let Some(v) = audit.version {
        meta.insert("versionId".into(), json!(v.to_string()));
    }
    if let Some(t) = audit.updated {
        meta.insert("lastUpdated".into(), json!(instant(t)));
    }
    if !meta.is_empty() {
        r["meta"] = Value::Object(meta);
    }
    if let Some(t) = audit.created {
        r["created"] = json!(instant(t));
    }
    if let Some(note) = &a.note {
        r["comment"] = json!(note.as_str());
    }
    if a.status == AppointmentStatus::Cancelled {
        if let Some((reason, _)) = &a.cancellation {
            let mut concept = json!({"text": reason.as_str()});
            if let Some(code) = a.cancellation_code {
                concept["coding"] = json!([{
                    "system": CANCELLATION_CODE_SYSTEM,
                    "code": code.as_str(),
                    "display": code.display(),
                }]);
            }
            r["cancelationReason"] = concept;
        }
    }
    r
}

/// What Buktor knows of a patient, from the HIS's contact record or an appointment.
#[derive(Debug, Clone, Copy)]
pub struct PatientData<'a> {
    pub his_patient_id: &'a str,
    pub name: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
    /// A BCP 47 tag.
    pub language: Option<&'a str>,
}

/// A Patient resource; `None` if the HIS id has no FHIR id ([`patient_id`]).
pub fn patient(p: PatientData<'_>) -> Option<Value> {
    let mut r = json!({
        "resourceType": "Patient",
        "id": patient_id(p.his_patient_id)?,
        "identifier": [{"system": PATIENT_SYSTEM, "value": p.his_patient_id}],
    });
    if let Some(name) = p.name {
        r["name"] = json!([{"text": name}]);
    }
    let telecom: Vec<Value> = [("phone", p.phone), ("email", p.email)]
        .into_iter()
        .filter_map(|(system, value)| value.map(|v| json!({"system": system, "value": v})))
        .collect();
    if !telecom.is_empty() {
        r["telecom"] = Value::Array(telecom);
    }
    if let Some(language) = p.language {
        r["communication"] = json!([{
            "language": {
                "coding": [{"system": "urn:ietf:bcp:47", "code": language}],
                "text": language,
            },
            "preferred": true,
        }]);
    }
    Some(r)
}

pub fn practitioner(p: &RegisteredPractitioner) -> Value {
    let mut r = json!({
        "resourceType": "Practitioner",
        "id": p.id.to_string(),
        "active": p.active,
        "name": [{"text": p.details.name.as_str()}],
    });
    if let Some(ext) = &p.details.external_id {
        r["identifier"] = json!([{"system": PRACTITIONER_SYSTEM, "value": ext.as_str()}]);
    }
    r
}

/// One schedule per practitioner, with the services they offer.
pub fn schedule(p: &RegisteredPractitioner, services: &[DefinedService]) -> Value {
    let mut r = json!({
        "resourceType": "Schedule",
        "id": p.id.to_string(),
        "active": p.active,
        "actor": [{
            "reference": format!("Practitioner/{}", p.id),
            "display": p.details.name.as_str(),
        }],
        "comment": format!("The working hours of {}", p.details.name),
    });
    let offered: Vec<Value> = services
        .iter()
        .filter(|s| s.active && s.details.practitioners.contains(&p.id))
        .map(|s| service_type(&s.id.to_string(), Some(s)))
        .collect();
    if !offered.is_empty() {
        r["serviceType"] = Value::Array(offered);
    }
    r
}

/// A stable id for a free slot: the practitioner, the start and the
/// service (its last 12 hex digits, the random part), within 64 characters.
pub fn slot_id(
    practitioner: PractitionerId,
    service: &DefinedService,
    start: DateTime<Utc>,
) -> String {
    let service_hex = service.id.as_uuid().simple().to_string();
    format!(
        "{}.{}.{}",
        practitioner.as_uuid().simple(),
        start.timestamp(),
        &service_hex[service_hex.len() - 12..]
    )
}

pub fn slot(
    practitioner: PractitionerId,
    service: &DefinedService,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Value {
    json!({
        "resourceType": "Slot",
        "id": slot_id(practitioner, service, start),
        "schedule": {"reference": format!("Schedule/{practitioner}")},
        "serviceType": [service_type(&service.id.to_string(), Some(service))],
        "status": "free",
        "start": instant(start),
        "end": instant(end),
    })
}

fn entry(base: &str, resource: Value, mode: &str) -> Value {
    let url = format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    json!({"fullUrl": url, "resource": resource, "search": {"mode": mode}})
}

fn key(resource: &Value) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&resource["resourceType"]), text(&resource["id"]))
}

/// A `searchset` bundle: `total` matches, of which `matches` are on this
/// page, then the resources they reference that `_include` asked for
/// (each once, and none that is a match itself). `links` are the paging
/// links (`self`, `next`, …) as `(relation, url)`.
pub fn searchset(
    base: &str,
    links: Vec<(&str, String)>,
    total: usize,
    matches: Vec<Value>,
    included: Vec<Value>,
) -> Value {
    let mut seen: std::collections::HashSet<(String, String)> = matches.iter().map(key).collect();
    let entry: Vec<Value> = matches
        .into_iter()
        .map(|r| entry(base, r, "match"))
        .chain(
            included
                .into_iter()
                .filter(|r| seen.insert(key(r)))
                .map(|r| entry(base, r, "include")),
        )
        .collect();
    let link: Vec<Value> = links
        .into_iter()
        .map(|(relation, url)| json!({"relation": relation, "url": url}))
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": link,
    });
    if !entry.is_empty() {
        b["entry"] = Value::Array(entry);
    }
    b
}

fn search_param(name: &str, kind: &str, doc: &str) -> Value {
    json!({"name": name, "type": kind, "documentation": doc})
}

/// The paging parameters every search takes.
fn paging() -> [Value; 2] {
    [
        search_param(
            "_count",
            "number",
            "entries per page (default 50, at most 500; 0 gives only the total)",
        ),
        search_param(
            "_offset",
            "number",
            "how many matches to skip (the paging links set it)",
        ),
    ]
}

fn with_paging(params: Vec<Value>) -> Value {
    Value::Array(params.into_iter().chain(paging()).collect())
}

/// The `_include` values of each search: `(value, the target type)`.
pub const APPOINTMENT_INCLUDES: [(&str, &str); 2] = [
    ("Appointment:patient", "Patient"),
    ("Appointment:practitioner", "Practitioner"),
];
pub const SLOT_INCLUDES: [(&str, &str); 1] = [("Slot:schedule", "Schedule")];
pub const SCHEDULE_INCLUDES: [(&str, &str); 1] = [("Schedule:actor", "Practitioner")];

fn include_names(includes: &[(&str, &str)]) -> Value {
    includes.iter().map(|(name, _)| json!(name)).collect()
}

/// What this server supports, for `GET /fhir/r4/metadata`.
pub fn capability_statement(base: &str) -> Value {
    let read_search = json!([{"code": "read"}, {"code": "search-type"}]);
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Buktor",
        "kind": "instance",
        "software": {"name": "Buktor", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Buktor appointment scheduling, FHIR R4 API", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Searches are always handled strictly (as with `Prefer: handling=strict`, whatever the header says): an unknown search parameter or an unsupported `_include` value is refused with 400 and an OperationOutcome, never ignored. Searchsets carry `total` and self, first, last, next and previous links paged with `_count` and `_offset`.",
            "security": {"description": "Every request needs `Authorization: Bearer <API key>`; a key sees only its own hospital."},
            "resource": [
                {
                    "type": "Appointment",
                    "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}, {"code": "update"}],
                    "updateCreate": false,
                    "searchInclude": include_names(&APPOINTMENT_INCLUDES),
                    "searchParam": with_paging(vec![
                        search_param("patient", "reference", "Patient/<id>, or the HIS patient id as a token"),
                        search_param("practitioner", "reference", "Practitioner/<id>; without patient, needs a date range of at most 93 days"),
                        search_param("date", "date", "the start, with the prefixes eq, ge, gt, le, lt"),
                        search_param("status", "token", "booked | checked-in | fulfilled | noshow | cancelled"),
                    ]),
                },
                {
                    "type": "Patient",
                    "interaction": read_search,
                    "searchParam": with_paging(vec![
                        search_param("identifier", "token", "required: the HIS patient id"),
                    ]),
                },
                {
                    "type": "Practitioner",
                    "interaction": read_search,
                    "searchParam": with_paging(vec![
                        search_param("name", "string", "a part of the name, any case"),
                        search_param("identifier", "token", "the practitioner's external (HIS) id"),
                    ]),
                },
                {
                    "type": "Schedule",
                    "interaction": read_search,
                    "searchInclude": include_names(&SCHEDULE_INCLUDES),
                    "searchParam": with_paging(vec![
                        search_param("actor", "reference", "Practitioner/<id>"),
                    ]),
                },
                {
                    "type": "Slot",
                    "interaction": [{"code": "search-type"}],
                    "searchInclude": include_names(&SLOT_INCLUDES),
                    "searchParam": with_paging(vec![
                        search_param("schedule", "reference", "Schedule/<practitioner id>"),
                        search_param("practitioner", "reference", "Practitioner/<id> (the same as schedule)"),
                        search_param("start", "date", "required: ge and le (or gt, lt) at most 31 days apart"),
                        search_param("service-type", "token", "a Buktor service id"),
                        search_param("status", "token", "free only"),
                    ]),
                },
            ],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_are_fhir_ids_and_map_back() {
        for his in [
            "P-1001",
            "123.45",
            "MRN 88/2",
            "--P-1",
            ".",
            "..",
            "Zoë",
            "a_b",
            &"9".repeat(64),
            &"x y".repeat(15),
        ] {
            let id = patient_id(his).unwrap_or_else(|| panic!("{his:?} has no Patient id"));
            assert!(is_fhir_id(&id), "{his:?} → {id:?}");
            assert_eq!(his_patient_id(&id).as_deref(), Some(his), "{id:?}");
        }
        assert_eq!(patient_id("P-1001").as_deref(), Some("P-1001"));
        assert_eq!(patient_id("MRN 88/2").as_deref(), Some("--TVJOIDg4LzI"));
        // Too long to encode in 64 characters, and not a FHIR id itself.
        assert_eq!(patient_id(&"é".repeat(30)), None);
        assert_eq!(patient_id(&"9".repeat(65)), None);
        // Ids patient_id never gives name nobody.
        for id in ["--", "--%%", "--A", "--P-1"] {
            assert!(
                his_patient_id(id).is_none_or(|his| patient_id(&his).as_deref() == Some(id)),
                "{id}"
            );
        }
        assert_eq!(his_patient_id("--A"), None);
    }
}
