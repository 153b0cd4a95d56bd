//! Buktor's read models as FHIR R4 resources (JSON). Only elements Buktor
//! knows are written; every required element of each resource is present.
use buktor_domain::appointment::{AppointmentStatus, BookedAppointment};
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
    if is_fhir_id(his) {
        patient["reference"] = json!(format!("Patient/{his}"));
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
            r["cancelationReason"] = json!({"text": reason.as_str()});
        }
    }
    r
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

/// A `searchset` bundle: `total` matches, of which `resources` are on this page.
pub fn searchset(base: &str, self_url: &str, total: usize, resources: Vec<Value>) -> Value {
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "{base}/{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
    });
    if !entry.is_empty() {
        b["entry"] = Value::Array(entry);
    }
    b
}

fn search_param(name: &str, kind: &str, doc: &str) -> Value {
    json!({"name": name, "type": kind, "documentation": doc})
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
            "security": {"description": "Every request needs `Authorization: Bearer <API key>`; a key sees only its own hospital."},
            "resource": [
                {
                    "type": "Appointment",
                    "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}, {"code": "update"}],
                    "updateCreate": false,
                    "searchParam": [
                        search_param("patient", "reference", "Patient/<HIS patient id>, or the HIS patient id as a token"),
                        search_param("practitioner", "reference", "Practitioner/<id>; without patient, needs a date range of at most 93 days and finds booked and checked-in appointments"),
                        search_param("date", "date", "the start, with the prefixes eq, ge, gt, le, lt"),
                        search_param("status", "token", "booked | checked-in | fulfilled | noshow | cancelled"),
                        search_param("_count", "number", "entries per page (at most 500)"),
                    ],
                },
                {
                    "type": "Practitioner",
                    "interaction": read_search,
                    "searchParam": [
                        search_param("name", "string", "a part of the name, any case"),
                        search_param("identifier", "token", "the practitioner's external (HIS) id"),
                        search_param("_count", "number", "entries per page (at most 500)"),
                    ],
                },
                {
                    "type": "Schedule",
                    "interaction": read_search,
                    "searchParam": [
                        search_param("actor", "reference", "Practitioner/<id>"),
                        search_param("_count", "number", "entries per page (at most 500)"),
                    ],
                },
                {
                    "type": "Slot",
                    "interaction": [{"code": "search-type"}],
                    "searchParam": [
                        search_param("schedule", "reference", "Schedule/<practitioner id>"),
                        search_param("practitioner", "reference", "Practitioner/<id> (the same as schedule)"),
                        search_param("start", "date", "required: ge and le (or gt, lt) at most 31 days apart"),
                        search_param("service-type", "token", "a Buktor service id"),
                        search_param("status", "token", "free only"),
                        search_param("_count", "number", "entries per page (at most 500)"),
                    ],
                },
            ],
        }],
    })
}
