//! The FHIR R4 API (`/fhir/r4/`) end to end against the real server: every
//! resource it serves is checked by an off-the-shelf R4 model library
//! (fhirbolt, strict deserialization: unknown elements, missing required
//! elements and malformed primitives fail) plus the required code bindings.
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::server::*;

/// The R4 value sets with required bindings that the resources use.
const APPOINTMENT_STATUS: [&str; 10] = [
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
];
const PARTICIPATION_STATUS: [&str; 4] = ["accepted", "declined", "tentative", "needs-action"];
const SLOT_STATUS: [&str; 5] = [
    "busy",
    "free",
    "busy-unavailable",
    "busy-tentative",
    "entered-in-error",
];

struct Fhir {
    client: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    location: Option<String>,
    content_type: String,
    body: Value,
}

impl Fhir {
    fn new(server: &TestServer) -> Fhir {
        Fhir {
            client: reqwest::Client::new(),
            base: format!("{}/fhir/r4", server.url),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let res = request.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        let content_type = header("content-type").unwrap_or_default();
        let text = res.text().await.expect("a body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: the body is not JSON ({e}): {text}"));
        validate(&body);
        Answer {
            status,
            location,
            content_type,
            body,
        }
    }

    async fn get(&self, key: Option<&str>, path: &str) -> Answer {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        self.send(r).await
    }

    /// GET of an absolute URL the server gave (a paging link).
    async fn follow(&self, key: &str, url: &str) -> Value {
        let path = url
            .strip_prefix(&self.base)
            .unwrap_or_else(|| panic!("{url} is not under {}", self.base));
        self.ok(key, path).await
    }

    async fn ok(&self, key: &str, path: &str) -> Value {
        let a = self.get(Some(key), path).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.body);
        assert!(a.content_type.starts_with("application/fhir+json"));
        a.body
    }

    async fn write(&self, key: &str, method: reqwest::Method, path: &str, body: String) -> Answer {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/fhir+json")
            .body(body);
        self.send(r).await
    }

    async fn post(&self, key: &str, body: &Value) -> Answer {
        self.write(key, reqwest::Method::POST, "/Appointment", body.to_string())
            .await
    }

    async fn put(&self, key: &str, id: &str, body: &Value) -> Answer {
        self.write(
            key,
            reqwest::Method::PUT,
            &format!("/Appointment/{id}"),
            body.to_string(),
        )
        .await
    }
}

/// Strict R4 deserialization by fhirbolt, and the required code bindings.
fn validate(resource: &Value) {
    let text = resource.to_string();
    if let Err(e) = fhirbolt::json::from_str::<fhirbolt::model::r4::Resource>(&text, None) {
        panic!("not a valid FHIR R4 resource ({e}): {resource:#}");
    }
    match resource["resourceType"].as_str() {
        Some("Bundle") => {
            assert_eq!(resource["type"], "searchset");
            for entry in resource["entry"].as_array().into_iter().flatten() {
                assert!(entry["fullUrl"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(&format!(
                        "/{}/{}",
                        entry["resource"]["resourceType"].as_str().unwrap(),
                        entry["resource"]["id"].as_str().unwrap()
                    ))));
                assert!(["match", "include"].contains(&entry["search"]["mode"].as_str().unwrap()));
                validate(&entry["resource"]);
            }
            for link in resource["link"].as_array().expect("Bundle.link") {
                assert!(link["url"].as_str().is_some_and(|u| u.starts_with("http")));
            }
        }
        Some("Appointment") => {
            // fhirbolt does not check primitive formats: instants must carry a zone.
            for field in ["start", "end", "created"] {
                if let Some(t) = resource[field].as_str() {
                    assert!(
                        DateTime::parse_from_rfc3339(t).is_ok(),
                        "Appointment.{field} {t:?} is not an instant"
                    );
                }
            }
            let status = resource["status"].as_str().expect("Appointment.status");
            assert!(APPOINTMENT_STATUS.contains(&status), "{status}");
            for p in resource["participant"].as_array().expect("participants") {
                let s = p["status"].as_str().expect("participant.status");
                assert!(PARTICIPATION_STATUS.contains(&s), "{s}");
            }
            for r in references(resource) {
                assert!(
                    r.starts_with("Patient/") || r.starts_with("Practitioner/"),
                    "{r}"
                );
            }
        }
        Some("Slot") => {
            let s = resource["status"].as_str().expect("Slot.status");
            assert!(SLOT_STATUS.contains(&s), "{s}");
            assert!(resource["schedule"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Schedule/")));
            for field in ["start", "end"] {
                let t = resource[field].as_str().expect("Slot.start and Slot.end");
                assert!(DateTime::parse_from_rfc3339(t).is_ok(), "{t:?}");
            }
        }
        Some("Patient") => {
            let id = resource["id"].as_str().expect("Patient.id");
            assert!(
                (1..=64).contains(&id.len())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "Patient.id {id:?}"
            );
            for t in resource["telecom"].as_array().into_iter().flatten() {
                assert!(["phone", "email"].contains(&t["system"].as_str().unwrap()));
            }
        }
        Some("Schedule") => {
            assert!(resource["actor"][0]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Practitioner/")));
        }
        Some("OperationOutcome") => {
            assert!(resource["issue"][0]["details"]["coding"][0]["code"].is_string());
        }
        _ => {}
    }
}

fn references(r: &Value) -> Vec<String> {
    r["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["actor"]["reference"].as_str().map(str::to_owned))
        .collect()
}

/// The ids of the matches (not the included resources).
fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `Type/id` of each included resource, in order.
fn included(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// The URL of a bundle's link with this relation.
fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().unwrap().to_owned())
}

/// The Buktor error code an OperationOutcome carries.
fn code(a: &Answer) -> &str {
    assert_eq!(a.body["resourceType"], "OperationOutcome", "{}", a.body);
    a.body["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap()
}

fn instant_of(v: &Value) -> DateTime<Utc> {
    instant(v)
}

fn z(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn book_for(
    server: &TestServer,
    h: &Hospital,
    start: DateTime<Utc>,
    patient: &str,
    name: &str,
) -> String {
    let mut input = book_input(&h.practitioner, &h.checkup, start, patient);
    input["patient"]["name"] = json!(name);
    let data = server.gql_ok(&h.admin, BOOK, json!({"input": input})).await;
    data["bookAppointment"]["id"].as_str().unwrap().to_owned()
}

fn new_appointment(h: &Hospital, start: DateTime<Utc>, patient: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "status": "booked",
        "serviceType": [{"coding": [{"system": "https://buktor.dev/fhir/CodeSystem/service", "code": h.checkup}]}],
        "start": z(start),
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}"), "display": "Grace Hopper"}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{}", h.practitioner)}, "status": "accepted"},
        ],
    })
}

#[tokio::test]
async fn fhir_reads_and_searches_serve_valid_r4_resources() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Reads").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let d1 = days_ahead(3);
    let d2 = days_ahead(4);
    let a1 = book_for(&server, &h, local(d1, 9, 0), "P-1", "Ada Jansen").await;
    let a2 = book_for(&server, &h, local(d2, 10, 0), "P-1", "Ada Jansen").await;
    let a3 = book_for(&server, &h, local(d2, 11, 0), "P-2", "Bob Smit").await;
    let external = server
        .gql_ok(
            key,
            "mutation($input: PractitionerInput!) { registerPractitioner(input: $input) { id } }",
            json!({"input": {"name": "Dr. Grace Hopper", "specialty": "Cardiology", "externalId": "HIS-DOC-7"}}),
        )
        .await["registerPractitioner"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.settle(key).await;

    // metadata
    let cs = fhir.ok(key, "/metadata").await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Appointment", "Patient", "Practitioner", "Schedule", "Slot"]
    );
    let includes = |t: &str| -> Vec<String> {
        cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == t)
            .unwrap()["searchInclude"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        includes("Appointment"),
        ["Appointment:patient", "Appointment:practitioner"]
    );
    assert_eq!(includes("Slot"), ["Slot:schedule"]);
    assert_eq!(includes("Schedule"), ["Schedule:actor"]);

    // read
    let a = fhir.ok(key, &format!("/Appointment/{a1}")).await;
    assert_eq!(a["status"], "booked");
    assert_eq!(instant_of(&a["start"]), local(d1, 9, 0));
    assert_eq!(a["minutesDuration"], 15);
    assert_eq!(a["serviceType"][0]["coding"][0]["code"], h.checkup.as_str());
    assert_eq!(a["serviceType"][0]["text"], "Check-up");
    assert_eq!(a["participant"][0]["actor"]["reference"], "Patient/P-1");
    assert_eq!(a["participant"][0]["actor"]["display"], "Ada Jansen");
    assert_eq!(a["participant"][0]["actor"]["identifier"]["value"], "P-1");
    assert_eq!(
        a["participant"][1]["actor"]["reference"],
        format!("Practitioner/{}", h.practitioner)
    );
    assert!(a["created"].is_string());

    // patient: as a reference and as a token, with or without the system
    for q in [
        "patient=Patient/P-1",
        "patient=P-1",
        "patient=https://buktor.dev/fhir/NamingSystem/his-patient-id|P-1",
    ] {
        let b = fhir
            .ok(key, &format!("/Appointment?{}", q.replace('|', "%7C")))
            .await;
        assert_eq!(b["total"], 2, "{q}");
        assert_eq!(ids(&b), [a1.as_str(), a2.as_str()], "{q}");
    }
    // practitioner with a date range; date prefixes
    let p = format!("practitioner=Practitioner/{}", h.practitioner);
    let b = fhir
        .ok(key, &format!("/Appointment?{p}&date=ge{d1}&date=le{d2}"))
        .await;
    assert_eq!(ids(&b), [a1.as_str(), a2.as_str(), a3.as_str()]);
    let b = fhir
        .ok(
            key,
            &format!("/Appointment?{p}&date=gt{d1}&date=lt{}", days_ahead(5)),
        )
        .await;
    assert_eq!(ids(&b), [a2.as_str(), a3.as_str()]);
    let b = fhir
        .ok(
            key,
            &format!(
                "/Appointment?{p}&date=eq{d2}&date=lt{}",
                z(local(d2, 11, 0)).replace('+', "%2B")
            ),
        )
        .await;
    assert_eq!(ids(&b), [a2.as_str()]);
    let b = fhir
        .ok(key, &format!("/Appointment?patient=P-1&date={d1}"))
        .await;
    assert_eq!(ids(&b), [a1.as_str()]);
    let b = fhir
        .ok(key, &format!("/Appointment?patient=P-1&date=le{d1}"))
        .await;
    assert_eq!(ids(&b), [a1.as_str()]);
    // status and _count
    let b = fhir.ok(key, "/Appointment?patient=P-2&status=booked").await;
    assert_eq!(ids(&b), [a3.as_str()]);
    let b = fhir
        .ok(key, "/Appointment?patient=P-2&status=cancelled,noshow")
        .await;
    assert_eq!(b["total"], 0);
    let b = fhir.ok(key, "/Appointment?patient=P-1&_count=1").await;
    assert_eq!(b["total"], 2);
    assert_eq!(ids(&b), [a1.as_str()]);
    assert!(b["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/fhir/r4/Appointment/{a1}")));

    // Practitioner
    let pr = fhir.ok(key, &format!("/Practitioner/{external}")).await;
    assert_eq!(pr["name"][0]["text"], "Dr. Grace Hopper");
    assert_eq!(pr["identifier"][0]["value"], "HIS-DOC-7");
    let b = fhir.ok(key, "/Practitioner?identifier=HIS-DOC-7").await;
    assert_eq!(ids(&b), [external.as_str()]);
    let b = fhir.ok(key, "/Practitioner?name=lovelace").await;
    assert_eq!(ids(&b), [h.practitioner.as_str()]);
    let b = fhir.ok(key, "/Practitioner").await;
    assert_eq!(b["total"], 2);

    // Schedule
    let s = fhir.ok(key, &format!("/Schedule/{}", h.practitioner)).await;
    assert_eq!(
        s["actor"][0]["reference"],
        format!("Practitioner/{}", h.practitioner)
    );
    assert_eq!(s["serviceType"].as_array().unwrap().len(), 2);
    let b = fhir
        .ok(key, &format!("/Schedule?actor=Practitioner/{external}"))
        .await;
    assert_eq!(ids(&b), [external.as_str()]);

    // Slot: only free ones; the booked 09:00 is not offered
    let slots = fhir
        .ok(
            key,
            &format!(
                "/Slot?schedule=Schedule/{}&service-type={}&start=ge{d1}&start=le{d1}&_count=500",
                h.practitioner, h.checkup
            ),
        )
        .await;
    let starts: Vec<DateTime<Utc>> = slots["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["resource"]["status"], "free");
            instant_of(&e["resource"]["start"])
        })
        .collect();
    assert!(starts.contains(&local(d1, 9, 15)));
    assert!(!starts.contains(&local(d1, 9, 0)));
    assert_eq!(
        slots["total"].as_u64().unwrap() as usize,
        slot_starts(&server, key, &h.practitioner, &h.checkup, d1, d1)
            .await
            .len()
    );
    let b = fhir
        .ok(
            key,
            &format!(
                "/Slot?practitioner=Practitioner/{}&start=ge{}&start=lt{}",
                h.practitioner,
                z(local(d1, 9, 0)).replace('+', "%2B"),
                z(local(d1, 10, 0)).replace('+', "%2B")
            ),
        )
        .await;
    let (from, to) = (local(d1, 9, 0), local(d1, 10, 0));
    let mut expected = 0;
    for service in [&h.checkup, &h.consultation] {
        expected += slot_starts(&server, key, &h.practitioner, service, d1, d1)
            .await
            .into_iter()
            .filter(|t| *t >= from && *t < to)
            .count();
    }
    assert!(expected >= 4);
    assert_eq!(b["total"].as_u64().unwrap() as usize, expected, "{b:#}");
    let slot_ids = ids(&b);
    let mut unique = slot_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), slot_ids.len());
}

#[tokio::test]
async fn fhir_create_books_and_update_reschedules_and_cancels() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Writes").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let day = days_ahead(5);
    let start = local(day, 14, 0);

    let created = fhir.post(key, &new_appointment(&h, start, "P-9")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(created
        .location
        .as_deref()
        .is_some_and(|l| l.ends_with(&format!("/fhir/r4/Appointment/{id}"))));
    assert_eq!(created.body["status"], "booked");
    assert_eq!(
        created.body["participant"][0]["actor"]["display"],
        "Grace Hopper"
    );
    // At once visible to searches, and the slot is gone.
    let b = fhir.ok(key, "/Appointment?patient=P-9").await;
    assert_eq!(ids(&b), [id.as_str()]);
    let slot_query = format!(
        "/Slot?schedule=Schedule/{}&service-type={}&start=ge{day}&start=le{day}&_count=500",
        h.practitioner, h.checkup
    );
    let free = |b: &Value| -> Vec<DateTime<Utc>> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| instant_of(&e["resource"]["start"]))
            .collect()
    };
    assert!(!free(&fhir.ok(key, &slot_query).await).contains(&start));

    // The same slot again: 409 SLOT_TAKEN.
    let again = fhir.post(key, &new_appointment(&h, start, "P-10")).await;
    assert_eq!(again.status, 409);
    assert_eq!(code(&again), "SLOT_TAKEN");
    // Outside availability (14:07 is not on the grid): 422 with the code.
    let odd = fhir
        .post(
            key,
            &new_appointment(&h, start + Duration::minutes(7), "P-10"),
        )
        .await;
    assert_eq!(odd.status, 422);
    assert_eq!(code(&odd), "OUTSIDE_AVAILABILITY");
    // Unsupported: created as anything but booked.
    let mut proposed = new_appointment(&h, start + Duration::hours(1), "P-10");
    proposed["status"] = json!("proposed");
    let refused = fhir.post(key, &proposed).await;
    assert_eq!(refused.status, 422);
    assert_eq!(code(&refused), "UNSUPPORTED");

    // Update the start: a reschedule.
    let mut moved = created.body.clone();
    let later = start + Duration::hours(2);
    moved["start"] = json!(z(later));
    let updated = fhir.put(key, &id, &moved).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(instant_of(&updated.body["start"]), later);
    assert_eq!(
        instant_of(&fhir.ok(key, &format!("/Appointment/{id}")).await["start"]),
        later
    );
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentRescheduled")
            .await,
        1
    );
    let slots = free(&fhir.ok(key, &slot_query).await);
    assert!(slots.contains(&start) && !slots.contains(&later));
    // The same resource again changes nothing.
    let same = fhir.put(key, &id, &updated.body).await;
    assert_eq!(same.status, 200);
    // Changing the service is not supported.
    let mut other_service = updated.body.clone();
    other_service["serviceType"][0]["coding"][0]["code"] = json!(h.consultation);
    let refused = fhir.put(key, &id, &other_service).await;
    assert_eq!(refused.status, 422);
    assert_eq!(code(&refused), "UNSUPPORTED");

    // Status cancelled: a cancellation with the reason.
    let mut cancelled = updated.body.clone();
    cancelled["status"] = json!("cancelled");
    cancelled["cancelationReason"] = json!({"text": "patient is travelling"});
    let done = fhir.put(key, &id, &cancelled).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["status"], "cancelled");
    assert_eq!(
        done.body["cancelationReason"]["text"],
        "patient is travelling"
    );
    let b = fhir
        .ok(key, "/Appointment?patient=Patient/P-9&status=cancelled")
        .await;
    assert_eq!(ids(&b), [id.as_str()]);
    assert!(free(&fhir.ok(key, &slot_query).await).contains(&later));
    // Rebooking a cancelled one through update is refused with Buktor's code.
    let mut revive = done.body.clone();
    revive["status"] = json!("booked");
    revive["start"] = json!(z(start + Duration::hours(3)));
    let refused = fhir.put(key, &id, &revive).await;
    assert_eq!(refused.status, 422);
    assert_eq!(code(&refused), "UNSUPPORTED");
}

#[tokio::test]
async fn fhir_updates_check_in_fulfil_and_mark_no_shows() {
    let deployment = Deployment::embedded();
    let day = days_ahead(3);
    let mut server = deployment
        .start_with(ServerOptions::clock_at(local(day, 8, 0)))
        .await;
    let h = set_up_hospital(&deployment, &server, "FHIR Attendance").await;
    let key = h.admin.as_str();
    let fhir = Fhir::new(&server);
    let visit = fhir
        .post(key, &new_appointment(&h, local(day, 9, 0), "P-A1"))
        .await;
    assert_eq!(visit.status, 201, "{}", visit.body);
    let missed = fhir
        .post(key, &new_appointment(&h, local(day, 9, 30), "P-A2"))
        .await;
    assert_eq!(missed.status, 201, "{}", missed.body);
    let (visit_id, missed_id) = (
        visit.body["id"].as_str().unwrap().to_owned(),
        missed.body["id"].as_str().unwrap().to_owned(),
    );
    let with_status = |body: &Value, status: &str| {
        let mut b = body.clone();
        b["status"] = json!(status);
        b
    };

    // Before its start nobody can have missed it: the lifecycle's own code.
    let early = fhir
        .put(key, &missed_id, &with_status(&missed.body, "noshow"))
        .await;
    assert_eq!(early.status, 422, "{}", early.body);
    assert_eq!(code(&early), "NOT_STARTED_YET");
    // Check-in opens two hours before the start.
    let arrived = fhir
        .put(key, &visit_id, &with_status(&visit.body, "checked-in"))
        .await;
    assert_eq!(arrived.status, 200, "{}", arrived.body);
    assert_eq!(arrived.body["status"], "checked-in");
    // Two steps at once are refused, and change nothing.
    let mut both = with_status(&missed.body, "checked-in");
    both["start"] = json!(z(local(day, 11, 0)));
    let refused = fhir.put(key, &missed_id, &both).await;
    assert_eq!(refused.status, 422);
    assert_eq!(code(&refused), "UNSUPPORTED");

    // Later that morning.
    server
        .restart_with(ServerOptions::clock_at(local(day, 10, 0)))
        .await;
    let fhir = Fhir::new(&server);
    let fulfilled = fhir
        .put(key, &visit_id, &with_status(&arrived.body, "fulfilled"))
        .await;
    assert_eq!(fulfilled.status, 200, "{}", fulfilled.body);
    assert_eq!(fulfilled.body["status"], "fulfilled");
    let noshow = fhir
        .put(key, &missed_id, &with_status(&missed.body, "noshow"))
        .await;
    assert_eq!(noshow.status, 200, "{}", noshow.body);
    assert_eq!(noshow.body["status"], "noshow");
    assert_eq!(
        fhir.ok(key, &format!("/Appointment/{missed_id}")).await["status"],
        "noshow"
    );
    let b = fhir
        .ok(key, "/Appointment?patient=P-A1&status=fulfilled")
        .await;
    assert_eq!(ids(&b), [visit_id.as_str()]);
}

#[tokio::test]
async fn fhir_bad_requests_get_an_operation_outcome_and_change_nothing() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Bad").await;
    let other = set_up_hospital(&deployment, &server, "FHIR Other").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let theirs = book_for(&server, &other, local(days_ahead(2), 8, 0), "P-1", "Eve").await;
    let ours = book_for(&server, &h, local(days_ahead(2), 8, 0), "P-1", "Ada").await;
    server.settle(key).await;
    server.settle(&other.admin).await;
    let before = deployment.event_counts(&h.tenant).await;
    let before_other = deployment.event_counts(&other.tenant).await;

    // No key, a wrong key: 401.
    let a = fhir.get(None, "/metadata").await;
    assert_eq!(a.status, 401);
    assert_eq!(code(&a), "UNAUTHENTICATED");
    let a = fhir
        .get(Some("bk_nonsense"), &format!("/Appointment/{ours}"))
        .await;
    assert_eq!(a.status, 401);
    let a = fhir
        .send(
            fhir.client
                .post(format!("{}/Appointment", fhir.base))
                .body(new_appointment(&h, local(days_ahead(3), 8, 0), "P-1").to_string()),
        )
        .await;
    assert_eq!(a.status, 401);

    // Malformed JSON, the wrong resource type, no id match.
    let a = fhir
        .write(
            key,
            reqwest::Method::POST,
            "/Appointment",
            "{not json".into(),
        )
        .await;
    assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"));
    let a = fhir
        .post(key, &json!({"resourceType": "Patient", "id": "x"}))
        .await;
    assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"));
    let mut wrong_id = new_appointment(&h, local(days_ahead(3), 8, 0), "P-1");
    wrong_id["id"] = json!(theirs);
    let a = fhir.put(key, &ours, &wrong_id).await;
    assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"));

    // Unknown ids and another hospital's ids: 404.
    for path in [
        "/Appointment/0190e1a4-0000-7000-8000-000000000000".to_owned(),
        "/Appointment/not-an-id".to_owned(),
        format!("/Appointment/{theirs}"),
        format!("/Practitioner/{}", other.practitioner),
        format!("/Schedule/{}", other.practitioner),
    ] {
        let a = fhir.get(Some(key), &path).await;
        assert_eq!((a.status, code(&a)), (404, "NOT_FOUND"), "{path}");
    }
    let mut theirs_body = new_appointment(&h, local(days_ahead(3), 8, 0), "P-1");
    theirs_body["id"] = json!(theirs);
    theirs_body["status"] = json!("cancelled");
    let a = fhir.put(key, &theirs, &theirs_body).await;
    assert_eq!(a.status, 404);

    // Bad search parameters: 400.
    for q in [
        "/Appointment?patient=P-1&date=ap2026-01-01",
        "/Appointment?patient=P-1&date=ge2026-13-01",
        "/Appointment?patient=P-1&status=arrived",
        "/Appointment?patient=P-1&_count=-1",
        "/Appointment?patient=P-1&location=x",
        "/Appointment",
        "/Slot?start=ge2026-01-01",
        "/Slot?start=ge2026-01-01&start=le2026-03-01",
        "/Slot?start=ge2026-01-01&start=le2026-01-02&status=busy",
    ] {
        let a = fhir.get(Some(key), q).await;
        assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"), "{q}");
    }
    let a = fhir.get(Some(key), "/Observation").await;
    assert_eq!(a.status, 404);

    // Tenant isolation in searches.
    let b = fhir.ok(key, "/Appointment?patient=P-1").await;
    assert_eq!(ids(&b), [ours.as_str()]);
    let b = fhir.ok(&other.admin, "/Appointment?patient=P-1").await;
    assert_eq!(ids(&b), [theirs.as_str()]);
    let b = fhir
        .ok(
            key,
            &format!("/Schedule?actor=Practitioner/{}", other.practitioner),
        )
        .await;
    assert_eq!(b["total"], 0);

    assert_eq!(deployment.event_counts(&h.tenant).await, before);
    assert_eq!(deployment.event_counts(&other.tenant).await, before_other);
}

#[tokio::test]
async fn fhir_practitioner_search_finds_appointments_whatever_their_status() {
    let deployment = Deployment::embedded();
    let day = days_ahead(3);
    let next_day = day.succ_opt().unwrap();
    let mut server = deployment
        .start_with(ServerOptions::clock_at(local(day, 8, 0)))
        .await;
    let h = set_up_hospital(&deployment, &server, "FHIR Agenda").await;
    let key = h.admin.as_str();
    let fhir = Fhir::new(&server);
    let mut booked = Vec::new();
    for (i, minute) in [0, 30, 60, 90, 120].into_iter().enumerate() {
        let a = fhir
            .post(
                key,
                &new_appointment(
                    &h,
                    local(day, 9, 0) + Duration::minutes(minute),
                    &format!("P-S{i}"),
                ),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        booked.push(a.body);
    }
    let id = |i: usize| booked[i]["id"].as_str().unwrap().to_owned();
    let with_status = |body: &Value, status: &str| {
        let mut b = body.clone();
        b["status"] = json!(status);
        b
    };
    // 09:30 cancelled, 09:00 checked in; 11:00 moves to the next day.
    let a = fhir
        .put(key, &id(1), &with_status(&booked[1], "cancelled"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = fhir
        .put(key, &id(0), &with_status(&booked[0], "checked-in"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let checked_in = a.body;
    let mut moved = booked[4].clone();
    moved["start"] = json!(z(local(next_day, 9, 0)));
    let a = fhir.put(key, &id(4), &moved).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // After the morning: 09:00 fulfilled, 10:00 a no-show, 10:30 stays booked.
    server
        .restart_with(ServerOptions::clock_at(local(day, 12, 0)))
        .await;
    let fhir = Fhir::new(&server);
    let a = fhir
        .put(key, &id(0), &with_status(&checked_in, "fulfilled"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = fhir
        .put(key, &id(2), &with_status(&booked[2], "noshow"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    server.settle(key).await;

    let p = format!("practitioner=Practitioner/{}", h.practitioner);
    let b = fhir.ok(key, &format!("/Appointment?{p}&date={day}")).await;
    assert_eq!(b["total"], 4, "{b:#}");
    assert_eq!(ids(&b), [id(0), id(1), id(2), id(3)]);
    let statuses: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["fulfilled", "cancelled", "noshow", "booked"]);
    for (status, expected) in [
        ("cancelled", vec![id(1)]),
        ("fulfilled,noshow", vec![id(0), id(2)]),
        ("booked", vec![id(3)]),
        ("checked-in", vec![]),
    ] {
        let b = fhir
            .ok(key, &format!("/Appointment?{p}&date={day}&status={status}"))
            .await;
        assert_eq!(ids(&b), expected, "status={status}");
        assert_eq!(b["total"], expected.len(), "status={status}");
    }
    // The moved one is found on its new day only, once.
    let b = fhir
        .ok(key, &format!("/Appointment?{p}&date={next_day}"))
        .await;
    assert_eq!(ids(&b), [id(4)]);
    let b = fhir
        .ok(
            key,
            &format!("/Appointment?{p}&date=ge{day}&date=le{next_day}"),
        )
        .await;
    assert_eq!(ids(&b), [id(0), id(1), id(2), id(3), id(4)]);
    // Another practitioner's search finds none of them.
    let other = register_practitioner(&server, key, "Dr. Other").await;
    let b = fhir
        .ok(
            key,
            &format!("/Appointment?practitioner=Practitioner/{other}&date={day}"),
        )
        .await;
    assert_eq!(b["total"], 0);
}

#[tokio::test]
async fn fhir_patients_are_read_and_searched_by_his_id() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Patients").await;
    let other = set_up_hospital(&deployment, &server, "FHIR Patients Other").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let day = days_ahead(4);
    // P-1: the HIS recorded the contact; bookings carry older copies.
    book_for(&server, &h, local(day, 9, 0), "P-1", "Ada Jansen").await;
    server
        .gql_ok(
            key,
            "mutation($input: PatientContactInput!) { recordPatientContact(input: $input) { id } }",
            json!({"input": {
                "hisPatientId": "P-1", "name": "Ada Jansen-de Vries", "phone": "+31 6 1234 5678",
                "email": "ada@example.org", "language": "pt-BR",
            }}),
        )
        .await;
    // P-2: known only from bookings; the newest booking's copy counts.
    let mut input = book_input(&h.practitioner, &h.checkup, local(day, 10, 0), "P-2");
    input["patient"]["name"] = json!("Bob Smit");
    input["patient"]["email"] = json!("old@example.org");
    server.gql_ok(key, BOOK, json!({"input": input})).await;
    let mut input = book_input(&h.practitioner, &h.checkup, local(day, 8, 0), "P-2");
    input["patient"]["name"] = json!("Bob Smit");
    input["patient"]["phone"] = json!("+31 20 123 4567");
    server.gql_ok(key, BOOK, json!({"input": input})).await;
    // A HIS id that is no FHIR id.
    let odd_his = "MRN 88/2";
    let odd = book_for(&server, &h, local(day, 11, 0), odd_his, "Cor Vos").await;
    // Another hospital's P-3.
    book_for(&server, &other, local(day, 9, 0), "P-3", "Eve").await;
    server.settle(key).await;
    server.settle(&other.admin).await;

    let p1 = fhir.ok(key, "/Patient/P-1").await;
    assert_eq!(p1["id"], "P-1");
    assert_eq!(
        p1["identifier"],
        json!([{"system": "https://buktor.dev/fhir/NamingSystem/his-patient-id", "value": "P-1"}])
    );
    assert_eq!(p1["name"][0]["text"], "Ada Jansen-de Vries");
    assert_eq!(
        p1["telecom"],
        json!([
            {"system": "phone", "value": "+31612345678"},
            {"system": "email", "value": "ada@example.org"},
        ])
    );
    assert_eq!(
        p1["communication"][0]["language"]["coding"][0],
        json!({"system": "urn:ietf:bcp:47", "code": "pt-BR"})
    );
    let p2 = fhir.ok(key, "/Patient/P-2").await;
    assert_eq!(p2["name"][0]["text"], "Bob Smit");
    assert_eq!(
        p2["telecom"],
        json!([{"system": "phone", "value": "+31201234567"}])
    );
    assert!(p2.get("communication").is_none());

    // The odd HIS id: the appointment's reference reads the patient back.
    let a = fhir.ok(key, &format!("/Appointment/{odd}")).await;
    let reference = a["participant"][0]["actor"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let odd_id = reference.strip_prefix("Patient/").unwrap().to_owned();
    assert!(odd_id.starts_with("--"), "{odd_id}");
    let p = fhir.ok(key, &format!("/{reference}")).await;
    assert_eq!(p["id"], odd_id.as_str());
    assert_eq!(p["identifier"][0]["value"], odd_his);
    let b = fhir
        .ok(key, &format!("/Appointment?patient={reference}"))
        .await;
    assert_eq!(ids(&b), [odd.as_str()]);
    let b = fhir.ok(key, "/Appointment?patient=%7CMRN%2088%2F2").await;
    assert_eq!(ids(&b), [odd.as_str()]);

    // Search by identifier, with or without the system.
    for q in [
        "identifier=P-1".to_owned(),
        "identifier=https://buktor.dev/fhir/NamingSystem/his-patient-id%7CP-1".to_owned(),
    ] {
        let b = fhir.ok(key, &format!("/Patient?{q}")).await;
        assert_eq!(
            (b["total"].clone(), ids(&b)),
            (json!(1), vec!["P-1".to_owned()])
        );
    }
    let b = fhir.ok(key, "/Patient?identifier=MRN%2088%2F2").await;
    assert_eq!(ids(&b), [odd_id.as_str()]);
    let b = fhir.ok(key, "/Patient?identifier=P-404").await;
    assert_eq!(b["total"], 0);

    // Unknown, malformed and other hospitals' patients: 404; isolation in searches.
    for path in [
        "/Patient/P-404",
        "/Patient/P-3",
        "/Patient/--A",
        "/Patient/--",
    ] {
        let a = fhir.get(Some(key), path).await;
        assert_eq!((a.status, code(&a)), (404, "NOT_FOUND"), "{path}");
    }
    assert_eq!(fhir.ok(&other.admin, "/Patient/P-3").await["id"], "P-3");
    assert_eq!(fhir.ok(key, "/Patient?identifier=P-3").await["total"], 0);
    for q in [
        "/Patient",
        "/Patient?name=Ada",
        "/Patient?identifier=x%7CP-1",
    ] {
        let a = fhir.get(Some(key), q).await;
        assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"), "{q}");
    }
}

#[tokio::test]
async fn fhir_searches_page_with_links_and_include_what_they_reference() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Paging").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let day = days_ahead(6);
    let mut all = Vec::new();
    for i in 0..7 {
        let start = local(day, 9, 0) + Duration::minutes(15 * i);
        all.push(book_for(&server, &h, start, &format!("P-{}", i % 3), "Pat").await);
    }
    // A cancelled one is still a match of a practitioner search.
    server
        .gql_ok(
            key,
            "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"ill\", cancelledBy: PATIENT) { id } }",
            json!({"id": all[3]}),
        )
        .await;
    server.settle(key).await;

    // Follow next to the end: every match once, in order.
    let search = format!(
        "/Appointment?practitioner=Practitioner/{}&date={day}&_count=3",
        h.practitioner
    );
    let mut page = fhir.ok(key, &search).await;
    assert_eq!(page["total"], 7);
    assert!(link(&page, "previous").is_none());
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        assert!(ids(&page).len() <= 3);
        seen.extend(ids(&page));
        pages.push(ids(&page));
        match link(&page, "next") {
            Some(next) => page = fhir.follow(key, &next).await,
            None => break,
        }
    }
    assert_eq!(seen, all);
    assert_eq!(pages.len(), 3);
    // The last page's previous and the links' own pages.
    let previous = fhir.follow(key, &link(&page, "previous").unwrap()).await;
    assert_eq!(ids(&previous), pages[1]);
    let last = fhir.follow(key, &link(&previous, "last").unwrap()).await;
    assert_eq!(ids(&last), pages[2]);
    let first = fhir.follow(key, &link(&last, "first").unwrap()).await;
    assert_eq!(ids(&first), pages[0]);
    let again = fhir.follow(key, &link(&previous, "self").unwrap()).await;
    assert_eq!(ids(&again), pages[1]);
    assert_eq!(again["total"], 7);
    // _offset directly, past the end, and _count=0.
    let b = fhir.ok(key, &format!("{search}&_offset=5")).await;
    assert_eq!(ids(&b), all[5..]);
    let b = fhir.ok(key, &format!("{search}&_offset=9")).await;
    assert_eq!((b["total"].clone(), ids(&b).len()), (json!(7), 0));
    let b = fhir
        .ok(
            key,
            &format!("{}&_count=0", search.replace("&_count=3", "")),
        )
        .await;
    assert_eq!(b["total"], 7);
    assert!(ids(&b).is_empty() && link(&b, "next").is_none());
    // Paging of other searches.
    let b = fhir.ok(key, "/Appointment?patient=P-0&_count=2").await;
    assert_eq!(b["total"], 3);
    let b = fhir.follow(key, &link(&b, "next").unwrap()).await;
    assert_eq!(ids(&b), [all[6].clone()]);
    let slots = format!(
        "/Slot?schedule=Schedule/{}&service-type={}&start=ge{day}&start=le{day}",
        h.practitioner, h.checkup
    );
    let one = fhir.ok(key, &format!("{slots}&_count=500")).await;
    let total = one["total"].as_u64().unwrap() as usize;
    assert!(total > 50);
    let mut page = fhir.ok(key, &slots).await;
    let mut slot_ids = ids(&page);
    while let Some(next) = link(&page, "next") {
        page = fhir.follow(key, &next).await;
        slot_ids.extend(ids(&page));
    }
    assert_eq!(slot_ids, ids(&one));

    // _include: the patients and the practitioner of the page's appointments.
    let b = fhir
        .ok(
            key,
            &format!("{search}&_include=Appointment:patient&_include=Appointment:practitioner:Practitioner"),
        )
        .await;
    assert_eq!(ids(&b), all[..3]);
    assert_eq!(
        included(&b),
        [
            "Patient/P-0".to_owned(),
            "Patient/P-1".to_owned(),
            "Patient/P-2".to_owned(),
            format!("Practitioner/{}", h.practitioner),
        ]
    );
    let patient = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["id"] == "P-1")
        .unwrap();
    assert_eq!(patient["search"]["mode"], "include");
    assert_eq!(patient["resource"]["name"][0]["text"], "Pat");
    let b = fhir
        .ok(key, &format!("{slots}&_count=2&_include=Slot:schedule"))
        .await;
    assert_eq!(included(&b), [format!("Schedule/{}", h.practitioner)]);
    let b = fhir
        .ok(
            key,
            &format!(
                "/Schedule?actor=Practitioner/{}&_include=Schedule:actor",
                h.practitioner
            ),
        )
        .await;
    assert_eq!(ids(&b), [h.practitioner.as_str()]);
    assert_eq!(included(&b), [format!("Practitioner/{}", h.practitioner)]);
    // Unsupported _include values are refused, as unknown parameters are.
    for q in [
        format!("{search}&_include=Appointment:location"),
        format!("{search}&_include=*"),
        format!("{search}&_include=Appointment:patient:Practitioner"),
        format!("{search}&_include=Slot:schedule"),
        format!("{search}&_revinclude=Slot:schedule"),
        format!("{search}&_offset=-1"),
        "/Practitioner?_include=Practitioner:organization".to_owned(),
    ] {
        let a = fhir.get(Some(key), &q).await;
        assert_eq!((a.status, code(&a)), (400, "INVALID_INPUT"), "{q}");
    }
}

const CANCELLATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

/// `cancelationReason` codings from HL7's appointment-cancellation-reason
/// code system: the code is kept through a round trip (the update's answer
/// and a later read, both valid R4 for fhirbolt), who cancelled follows the
/// code's branch (`pat-*` the patient, `prov-*` the practitioner, the rest
/// the hospital), codings of other systems are ignored, and an unknown code
/// of the system is 422 `UNKNOWN_CODE` that cancels nothing.
#[tokio::test]
async fn fhir_cancellation_reasons_keep_their_code_and_say_who_cancelled_from_its_branch() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Cancellation Codes").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let day = days_ahead(5);
    let sys = CANCELLATION_SYSTEM;
    let cancel = |current: &Value, reason: Value| {
        let mut body = current.clone();
        body["status"] = json!("cancelled");
        body["cancelationReason"] = reason;
        body
    };
    let cases = [
        (
            "pat-swl",
            true,
            "PATIENT",
            Some("found an earlier slot"),
            "Patient: Scheduled from Wait List",
        ),
        (
            "pat-crs",
            true,
            "PATIENT",
            None,
            "Patient: Canceled via automated reminder system",
        ),
        (
            "prov-pers",
            true,
            "PRACTITIONER",
            None,
            "Provider: Personal",
        ),
        ("prov", true, "PRACTITIONER", None, "Provider"),
        ("oth-weath", true, "HOSPITAL", None, "Other: Weather"),
        (
            "maint",
            true,
            "HOSPITAL",
            None,
            "Equipment Maintenance/Repair",
        ),
        // The form Buktor read before: a bare code without a system.
        ("pat", false, "PATIENT", Some("ill"), "Patient"),
    ];
    for (i, (code, with_system, by, text, display)) in cases.into_iter().enumerate() {
        let id = book_for(
            &server,
            &h,
            local(day, 8 + i as u32, 0),
            &format!("P-C{i}"),
            "Ada",
        )
        .await;
        let current = fhir.ok(key, &format!("/Appointment/{id}")).await;
        let mut coding = json!({"code": code});
        if with_system {
            coding["system"] = json!(sys);
        }
        let mut reason =
            json!({"coding": [{"system": "http://example.org/local", "code": "X9"}, coding]});
        if let Some(text) = text {
            reason["text"] = json!(text);
        }
        let done = fhir.put(key, &id, &cancel(&current, reason)).await;
        assert_eq!(done.status, 200, "{code}: {}", done.body);
        let read = fhir.ok(key, &format!("/Appointment/{id}")).await;
        for r in [&done.body, &read] {
            assert_eq!(r["status"], "cancelled");
            assert_eq!(
                r["cancelationReason"]["coding"],
                json!([{"system": sys, "code": code, "display": display}]),
                "{code}"
            );
            // Without a text, the code's display is the reason.
            assert_eq!(r["cancelationReason"]["text"], text.unwrap_or(display));
        }
        let g = server
            .gql_ok(
                key,
                "query($id: ID!) { appointment(id: $id) { cancellation { reason cancelledBy } } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            g["appointment"]["cancellation"]["cancelledBy"], by,
            "{code}"
        );
    }

    // Unknown codes of the system, and two different ones, change nothing.
    let id = book_for(&server, &h, local(day, 20, 0), "P-BAD", "Ada").await;
    let current = fhir.ok(key, &format!("/Appointment/{id}")).await;
    for (reason, status, error) in [
        (
            json!({"coding": [{"system": sys, "code": "pat-xyz"}]}),
            422,
            "UNKNOWN_CODE",
        ),
        (
            json!({"coding": [{"system": sys, "code": "PAT"}]}),
            422,
            "UNKNOWN_CODE",
        ),
        (
            json!({"coding": [{"system": sys, "code": "pat"}, {"system": sys, "code": "prov"}]}),
            400,
            "INVALID_INPUT",
        ),
        (
            json!({"coding": {"system": sys, "code": "pat"}}),
            400,
            "INVALID_INPUT",
        ),
    ] {
        let refused = fhir.put(key, &id, &cancel(&current, reason.clone())).await;
        assert_eq!(refused.status, status, "{reason}: {}", refused.body);
        assert_eq!(code(&refused), error, "{reason}");
        assert_eq!(
            fhir.ok(key, &format!("/Appointment/{id}")).await["status"],
            "booked",
            "{reason}"
        );
    }
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentCancelled")
            .await,
        cases.len() as i64
    );
}

/// Instants and dates outside the accepted years (docs/time.md) get a 400
/// OperationOutcome, in a created or updated Appointment and in every date
/// search; nothing is written and the server keeps answering. A `start` of
/// `+262142-12-31T23:59:59Z` used to panic the worker.
#[tokio::test]
async fn fhir_instants_and_dates_outside_the_accepted_years_are_refused() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "FHIR Far Future").await;
    let fhir = Fhir::new(&server);
    let key = h.admin.as_str();
    let ours = book_for(&server, &h, local(days_ahead(2), 8, 0), "P-1", "Ada").await;
    server.settle(key).await;
    let before = deployment.event_counts(&h.tenant).await;

    for far in crate::time_bounds::FAR_INSTANTS {
        let mut body = new_appointment(&h, local(days_ahead(3), 8, 0), "P-1");
        body["start"] = json!(far);
        let a = fhir.post(key, &body).await;
        assert_eq!(
            (a.status, code(&a)),
            (400, "INVALID_INPUT"),
            "create at {far}"
        );
        body["id"] = json!(ours);
        let a = fhir.put(key, &ours, &body).await;
        assert_eq!(
            (a.status, code(&a)),
            (400, "INVALID_INPUT"),
            "move to {far}"
        );
    }
    let enc = |s: &str| s.replace('+', "%2B");
    for far in crate::time_bounds::FAR_DATES
        .into_iter()
        .chain(crate::time_bounds::FAR_INSTANTS)
    {
        for q in [
            format!("/Appointment?patient=P-1&date=ge{}", enc(far)),
            format!("/Appointment?patient=P-1&date={}", enc(far)),
            format!(
                "/Slot?schedule=Schedule/{}&start=ge{}&start=le{}",
                h.practitioner,
                days_ahead(1),
                enc(far)
            ),
        ] {
            let a = fhir.get(Some(key), &q).await;
            assert_eq!(
                (a.status, code(&a)),
                (400, "INVALID_INPUT"),
                "{q}: {}",
                a.body
            );
        }
    }
    assert_eq!(deployment.event_counts(&h.tenant).await, before);
    let b = fhir.ok(key, "/Appointment?patient=P-1").await;
    assert_eq!(ids(&b), [ours.as_str()]);
}
