//! The inbound HIS API (`/his/v1/`) end to end against the real server:
//! an initial bulk load, daily changes, repeats, versions arriving out of
//! order (also racing over two instances), conflicts with and without
//! `force`, and bad requests that must answer with problem details and
//! change nothing.
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::server::*;

struct His {
    client: reqwest::Client,
    base: String,
    key: String,
}

struct Reply {
    status: u16,
    body: Value,
}

impl His {
    fn new(server: &TestServer, key: &str) -> His {
        His {
            client: reqwest::Client::new(),
            base: format!("{}/his/v1", server.url),
            key: key.to_owned(),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Reply {
        let res = r.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = res.text().await.expect("a body");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
        if status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{body}");
            for field in ["type", "title", "status", "code", "detail"] {
                assert!(!body[field].is_null(), "problem without {field}: {body}");
            }
            assert_eq!(body["status"], status);
        }
        Reply { status, body }
    }

    /// A write with `Idempotency-Key: key`.
    async fn write(&self, method: reqwest::Method, path: &str, key: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .header("idempotency-key", key)
                .json(body),
        )
        .await
    }

    async fn put(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.write(reqwest::Method::PUT, path, key, body).await
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.write(reqwest::Method::POST, path, key, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.key),
        )
        .await
    }

    async fn ok(&self, reply: Reply) -> Value {
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }
}

fn practitioner(his_id: &str, name: &str, version: i64) -> Value {
    json!({"hisId": his_id, "version": version, "name": name, "specialty": "Cardiology", "department": "Heart"})
}

fn service(his_id: &str, practitioners: &[&str], version: i64) -> Value {
    json!({"hisId": his_id, "version": version, "name": "Consultation", "durationMinutes": 20, "practitionerIds": practitioners})
}

/// Weekdays 08:00–16:00 on a 20-minute grid, and a day off on `off`.
fn schedule(practitioner: &str, version: i64, off: NaiveDate) -> Value {
    json!({
        "practitionerId": practitioner,
        "version": version,
        "weeklyRules": [{
            "weekdays": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
            "start": "08:00", "end": "16:00", "gridMinutes": 20, "effectiveFrom": "2020-01-01",
        }],
        "exceptions": [{"hisId": "LEAVE-1", "date": off, "kind": "unavailable", "reason": "Congress"}],
    })
}

fn appointment(his_id: &str, practitioner: &str, start: DateTime<Utc>, version: i64) -> Value {
    json!({
        "hisId": his_id,
        "version": version,
        "practitionerId": practitioner,
        "serviceId": "SVC-CARD",
        "start": iso(start),
        "patient": {"hisId": format!("PAT-{his_id}"), "name": "Ada Jansen"},
    })
}

/// A hospital with a his-system key and its admin key.
async fn hospital(deployment: &Deployment, name: &str) -> (String, String, String) {
    let (tenant, admin) = deployment.tenant_with_admin(name).await;
    let his = deployment.create_api_key(&tenant, "his-system").await;
    (tenant, admin, his)
}

/// Practitioners DOC-1 and DOC-2, service SVC-CARD, their schedules.
async fn load_master_data(his: &His) -> Value {
    let body = json!({
        "practitioners": [practitioner("DOC-1", "Dr. Ada Lovelace", 1), practitioner("DOC-2", "Dr. Grace Hopper", 1)],
        "services": [service("SVC-CARD", &["DOC-1", "DOC-2"], 1)],
        "schedules": [schedule("DOC-1", 1, days_ahead(20)), schedule("DOC-2", 1, days_ahead(20))],
    });
    his.ok(his.post("/bulk", "master-1", &body).await).await
}

fn outcomes(result: &Value) -> Vec<String> {
    result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn his_bulk_load_then_daily_changes_and_repeats() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let (tenant, admin, key) = hospital(&deployment, "HIS Bulk").await;
    let his = His::new(&server, &key);

    let master = load_master_data(&his).await;
    assert_eq!(master["summary"]["applied"], 5, "{master}");
    let doc1_id = master["results"][0]["id"].as_str().unwrap().to_owned();

    // The initial load: a week of appointments and their patients.
    let day = days_ahead(3);
    let appointments: Vec<Value> = (0..12)
        .map(|i| {
            let doc = if i % 2 == 0 { "DOC-1" } else { "DOC-2" };
            appointment(
                &format!("APT-{i}"),
                doc,
                local(day, 8 + (i / 2) as u32, 0),
                1,
            )
        })
        .collect();
    let patients: Vec<Value> = (0..12)
        .map(|i| json!({"hisId": format!("PAT-APT-{i}"), "version": 1, "email": format!("p{i}@example.org"), "language": "nl"}))
        .collect();
    let load = json!({"patients": patients, "appointments": appointments});
    let first = his.ok(his.post("/bulk", "load-1", &load).await).await;
    assert_eq!(
        first["summary"],
        json!({"applied": 24, "unchanged": 0, "stale": 0, "failed": 0})
    );
    assert_eq!(
        deployment.count_events(&tenant, "AppointmentBooked").await,
        12
    );
    assert_eq!(
        deployment
            .count_events(&tenant, "PatientContactRecorded")
            .await,
        12
    );

    // The same request again (a retry after a lost answer) answers as the first did.
    let again = his.ok(his.post("/bulk", "load-1", &load).await).await;
    assert_eq!(again, first);
    // The same records under a new key (tonight's reconciliation): stale, nothing written.
    let reconciled = his.ok(his.post("/bulk", "load-2", &load).await).await;
    assert_eq!(reconciled["summary"]["stale"], 24, "{reconciled}");
    assert_eq!(
        deployment.count_events(&tenant, "AppointmentBooked").await,
        12
    );

    // Daily changes: a move to another practitioner and time, a cancellation, a check-in.
    let moved_to = local(day, 14, 20);
    let mut v2 = appointment("APT-0", "DOC-2", moved_to, 2);
    v2["hisId"] = Value::Null;
    let moved = his
        .ok(his.put("/appointments/APT-0", "chg-1", &v2).await)
        .await;
    assert_eq!(moved["outcome"], "applied");
    let view = his.ok(his.get("/appointments/APT-0").await).await;
    assert_eq!(view["practitionerId"], "DOC-2");
    assert_eq!(view["serviceId"], "SVC-CARD");
    assert_eq!(view["patientId"], "PAT-APT-0");
    assert_eq!(view["hisVersion"], "2");
    assert_eq!(instant(&view["start"]), moved_to);
    assert!(
        view["startLocal"].as_str().unwrap().ends_with("+01:00")
            || view["startLocal"].as_str().unwrap().ends_with("+02:00")
    );

    let cancelled = his
        .ok(his
            .post(
                "/appointments/APT-1/cancel",
                "chg-2",
                &json!({"version": 2, "reason": "Patient called", "cancelledBy": "patient"}),
            )
            .await)
        .await;
    assert_eq!(cancelled["outcome"], "applied");
    assert_eq!(
        his.ok(his.get("/appointments/APT-1").await).await["status"],
        "cancelled"
    );
    // Its time is free again: another appointment takes it.
    let reuse = appointment("APT-NEW", "DOC-2", local(day, 8, 0), 1);
    assert_eq!(
        his.ok(his.put("/appointments/APT-NEW", "chg-3", &reuse).await)
            .await["outcome"],
        "applied"
    );

    // The same version with the same content again: acknowledged as stale.
    let same = his.put("/appointments/APT-0", "chg-4", &v2).await;
    assert_eq!(his.ok(same).await["outcome"], "stale");
    // A newer version that changes nothing is recorded as unchanged.
    let mut v3 = v2.clone();
    v3["version"] = json!(3);
    assert_eq!(
        his.ok(his.put("/appointments/APT-0", "chg-5", &v3).await)
            .await["outcome"],
        "unchanged"
    );
    assert_eq!(
        his.ok(his.get("/appointments/APT-0").await).await["hisVersion"],
        "3"
    );

    // Master data changes: a renamed practitioner, and the schedule without the leave.
    let renamed = his
        .ok(his
            .put(
                "/practitioners/DOC-1",
                "chg-6",
                &practitioner("DOC-1", "Dr. Ada King", 2),
            )
            .await)
        .await;
    assert_eq!(renamed["outcome"], "applied");
    assert_eq!(renamed["id"], doc1_id.as_str());
    let data = server
        .gql_ok(
            &admin,
            "query($id: ID!) { practitioner(id: $id) { name externalId } }",
            json!({"id": doc1_id}),
        )
        .await;
    assert_eq!(
        data["practitioner"],
        json!({"name": "Dr. Ada King", "externalId": "DOC-1"})
    );
    let mut without_leave = schedule("DOC-1", 2, days_ahead(20));
    without_leave["exceptions"] = json!([]);
    assert_eq!(
        his.ok(his
            .put("/practitioners/DOC-1/schedule", "chg-7", &without_leave)
            .await)
            .await["outcome"],
        "applied"
    );
    assert_eq!(
        deployment
            .count_events(&tenant, "ScheduleExceptionRemoved")
            .await,
        1
    );

    // Every change is recorded as the HIS's, with its key and from where.
    let sources = deployment
        .query_pairs(&tenant, match deployment.database_url() {
            Some(_) => "SELECT DISTINCT metadata->>'source', metadata->'actor'->>'role' FROM events WHERE tenant_id = {T}",
            None => "SELECT DISTINCT json_extract(metadata, '$.source'), json_extract(metadata, '$.actor.role') FROM events WHERE tenant_id = {T}",
        })
        .await;
    assert_eq!(
        sources,
        vec![("his-api".to_owned(), "his-system".to_owned())]
    );
}

#[tokio::test]
async fn his_versions_arriving_out_of_order_never_roll_back() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Order").await;
    let his = His::new(&server, &key);
    load_master_data(&his).await;
    let day = days_ahead(4);

    // v3 arrives first, then the older v2 and v1.
    let v3 = appointment("APT-1", "DOC-1", local(day, 10, 0), 3);
    assert_eq!(
        his.ok(his.put("/appointments/APT-1", "k3", &v3).await)
            .await["outcome"],
        "applied"
    );
    for (v, hour) in [(2, 11), (1, 9)] {
        let old = appointment("APT-1", "DOC-1", local(day, hour, 0), v);
        let r = his
            .ok(his.put("/appointments/APT-1", &format!("k{v}"), &old).await)
            .await;
        assert_eq!(r["outcome"], "stale", "{r}");
        assert!(r["detail"].as_str().unwrap().contains("not newer"), "{r}");
    }
    let view = his.ok(his.get("/appointments/APT-1").await).await;
    assert_eq!(instant(&view["start"]), local(day, 10, 0));
    assert_eq!(view["hisVersion"], "3");
    // A late cancel of an old version does not cancel.
    let late = his
        .post(
            "/appointments/APT-1/cancel",
            "kc",
            &json!({"version": 2, "reason": "old"}),
        )
        .await;
    assert_eq!(his.ok(late).await["outcome"], "stale");
    assert_eq!(
        his.ok(his.get("/appointments/APT-1").await).await["status"],
        "booked"
    );

    // Last-modified times work the same; switching kinds is refused.
    let patient = |at: &str, email: &str| json!({"lastModified": at, "email": email});
    let newer = patient("2026-11-20T10:00:00Z", "new@example.org");
    let older = patient("2026-11-19T10:00:00Z", "old@example.org");
    assert_eq!(
        his.ok(his.put("/patients/PAT-9", "p1", &newer).await).await["outcome"],
        "applied"
    );
    assert_eq!(
        his.ok(his.put("/patients/PAT-9", "p2", &older).await).await["outcome"],
        "stale"
    );
    let switched = his
        .put(
            "/patients/PAT-9",
            "p3",
            &json!({"version": 99, "email": "x@example.org"}),
        )
        .await;
    assert_eq!(
        (switched.status, switched.body["code"].as_str().unwrap()),
        (409, "VERSION_KIND_CHANGED")
    );
    let emails = deployment
        .query_pairs(&tenant, "SELECT payload->>'email', event_type FROM events WHERE tenant_id = {T} AND event_type = 'PatientContactRecorded'")
        .await;
    assert_eq!(
        emails,
        vec![(
            "new@example.org".to_owned(),
            "PatientContactRecorded".to_owned()
        )]
    );
}

#[tokio::test]
async fn his_versions_racing_over_two_instances_end_at_the_newest() {
    let deployment = Deployment::postgres().await;
    let a = deployment.start().await;
    let b = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Race").await;
    let (his_a, his_b) = (His::new(&a, &key), His::new(&b, &key));
    load_master_data(&his_a).await;
    let day = days_ahead(5);
    // 16 versions of one appointment, each at another time, sent at once,
    // newest first, alternating between the two instances.
    let sends = (1..=16).rev().map(|v| {
        let his = if v % 2 == 0 { &his_a } else { &his_b };
        let body = appointment(
            "APT-R",
            "DOC-1",
            local(day, 8, 0) + chrono::Duration::minutes(20 * v),
            v,
        );
        async move {
            (
                v,
                his.put("/appointments/APT-R", &format!("race-{v}"), &body)
                    .await,
            )
        }
    });
    let replies = futures::future::join_all(sends).await;
    let mut applied = Vec::new();
    for (v, r) in &replies {
        assert_eq!(r.status, 200, "v{v}: {}", r.body);
        if r.body["outcome"] == "applied" {
            applied.push(*v);
        }
    }
    // Whatever order they were decided in, each applied version was newer
    // than every one applied before it, and the newest always ends up applied.
    assert!(applied.contains(&16), "{applied:?}");
    let view = his_a.ok(his_a.get("/appointments/APT-R").await).await;
    assert_eq!(view["hisVersion"], "16");
    assert_eq!(
        instant(&view["start"]),
        local(day, 8, 0) + chrono::Duration::minutes(320)
    );
    let versions = deployment
        .query_pairs(&tenant, "SELECT payload->'version'->>'value', version::text FROM events WHERE tenant_id = {T} AND event_type = 'HisVersionApplied' AND payload->>'kind' = 'appointment' ORDER BY version")
        .await;
    let applied_in_order: Vec<i64> = versions.iter().map(|(v, _)| v.parse().unwrap()).collect();
    assert!(
        applied_in_order.windows(2).all(|w| w[0] < w[1]),
        "{applied_in_order:?}"
    );
    assert_eq!(applied_in_order.len(), applied.len());
    // Exactly one calendar hold remains, at the newest time.
    let counts = deployment.event_counts(&tenant).await;
    let held = counts.get("SlotHeld").copied().unwrap_or(0);
    let released = counts.get("SlotReleased").copied().unwrap_or(0);
    assert_eq!(held - released, 1, "{counts:?}");
}

#[tokio::test]
async fn his_conflicts_are_typed_and_force_overrides_with_the_reason_recorded() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let (tenant, admin, key) = hospital(&deployment, "HIS Force").await;
    let his = His::new(&server, &key);
    let master = load_master_data(&his).await;
    let doc1 = master["results"][0]["id"].as_str().unwrap().to_owned();
    let svc = master["results"][2]["id"].as_str().unwrap().to_owned();
    let day = days_ahead(6);
    let at = local(day, 9, 0);

    // The widget sold the slot a second earlier.
    server
        .gql_ok(
            &admin,
            BOOK,
            json!({"input": book_input(&doc1, &svc, at, "WEB-1")}),
        )
        .await;
    let before = deployment.event_counts(&tenant).await;
    let refused = his
        .put(
            "/appointments/APT-X",
            "f1",
            &appointment("APT-X", "DOC-1", at, 1),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str().unwrap()),
        (409, "SLOT_TAKEN"),
        "{}",
        refused.body
    );
    // Outside the schedule (the leave day) and in the past: rule errors too.
    let leave = his
        .put(
            "/appointments/APT-Y",
            "f2",
            &appointment("APT-Y", "DOC-1", local(days_ahead(20), 9, 0), 1),
        )
        .await;
    assert_eq!(
        (leave.status, leave.body["code"].as_str().unwrap()),
        (422, "OUTSIDE_AVAILABILITY")
    );
    assert_eq!(
        deployment.event_counts(&tenant).await,
        before,
        "a refusal writes nothing"
    );

    // With force and a reason, the HIS's appointment is booked anyway.
    let mut forced = appointment("APT-X", "DOC-1", at, 1);
    forced["force"] = json!(true);
    forced["forceReason"] = json!("Booked at the desk during the outage");
    let ok = his
        .ok(his.put("/appointments/APT-X", "f3", &forced).await)
        .await;
    assert_eq!(ok["outcome"], "applied");
    let reasons = deployment
        .query_pairs(&tenant, "SELECT event_type, payload->>'rules_overridden' FROM events WHERE tenant_id = {T} AND payload ? 'rules_overridden' ORDER BY seq")
        .await;
    let reasons: BTreeMap<String, String> = reasons.into_iter().collect();
    assert_eq!(
        reasons.get("AppointmentBooked").map(String::as_str),
        Some("Booked at the desk during the outage")
    );
    assert_eq!(
        reasons.get("HisVersionApplied").map(String::as_str),
        Some("Booked at the desk during the outage")
    );
    // The overbooked time stays unavailable to the widget.
    let again = server
        .gql(
            &admin,
            BOOK,
            json!({"input": book_input(&doc1, &svc, at, "WEB-2")}),
        )
        .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "SLOT_TAKEN",
        "{again}"
    );
}

#[tokio::test]
async fn his_bad_requests_get_problem_details_and_change_nothing() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let (tenant, admin, key) = hospital(&deployment, "HIS Bad").await;
    let his = His::new(&server, &key);
    load_master_data(&his).await;
    let before = deployment.event_counts(&tenant).await;
    let at = local(days_ahead(7), 9, 0);
    let good = appointment("APT-1", "DOC-1", at, 1);
    let url = |p: &str| format!("{}/his/v1{p}", server.url);
    let client = reqwest::Client::new();

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no key",
            client
                .put(url("/appointments/APT-1"))
                .header("idempotency-key", "a")
                .json(&good),
            401,
            "UNAUTHENTICATED",
        ),
        (
            "admin key",
            client
                .put(url("/appointments/APT-1"))
                .bearer_auth(&admin)
                .header("idempotency-key", "a")
                .json(&good),
            403,
            "FORBIDDEN",
        ),
        (
            "no idempotency key",
            client
                .put(url("/appointments/APT-1"))
                .bearer_auth(&key)
                .json(&good),
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
        ),
        (
            "not JSON",
            client
                .put(url("/appointments/APT-1"))
                .bearer_auth(&key)
                .header("idempotency-key", "b")
                .body("{\"version\": 1,"),
            400,
            "MALFORMED_BODY",
        ),
        (
            "unknown route",
            client.get(url("/doctors")).bearer_auth(&key),
            404,
            "NOT_FOUND",
        ),
    ];
    for (what, request, status, code) in cases {
        let r = his.send(request).await;
        assert_eq!(
            (r.status, r.body["code"].as_str().unwrap()),
            (status, code),
            "{what}: {}",
            r.body
        );
    }

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        edit(&mut b);
        b
    };
    // (what, path, body, status, code, field at fault)
    type Case<'a> = (&'a str, &'a str, Value, u16, &'a str, Option<&'a str>);
    let bodies: Vec<Case> = vec![
        (
            "misspelt field",
            "/appointments/APT-1",
            with(&|b| b["pratitionerId"] = json!("DOC-1")),
            400,
            "MALFORMED_BODY",
            None,
        ),
        (
            "no version",
            "/appointments/APT-1",
            with(&|b| {
                b.as_object_mut().unwrap().remove("version");
            }),
            422,
            "INVALID_INPUT",
            Some("version"),
        ),
        (
            "both versions",
            "/appointments/APT-1",
            with(&|b| b["lastModified"] = json!("2026-01-01T00:00:00Z")),
            422,
            "INVALID_INPUT",
            Some("version"),
        ),
        (
            "other id in body",
            "/appointments/APT-1",
            with(&|b| b["hisId"] = json!("APT-2")),
            422,
            "INVALID_INPUT",
            Some("hisId"),
        ),
        (
            "unknown practitioner",
            "/appointments/APT-1",
            with(&|b| b["practitionerId"] = json!("DOC-404")),
            404,
            "UNKNOWN_PRACTITIONER",
            None,
        ),
        (
            "unknown service",
            "/appointments/APT-1",
            with(&|b| b["serviceId"] = json!("SVC-404")),
            404,
            "UNKNOWN_SERVICE",
            None,
        ),
        (
            "bad time",
            "/appointments/APT-1",
            with(&|b| b["start"] = json!("next tuesday")),
            422,
            "INVALID_INPUT",
            Some("start"),
        ),
        (
            "skipped local time",
            "/appointments/APT-1",
            with(&|b| b["start"] = json!("2027-03-28T02:30")),
            422,
            "INVALID_INPUT",
            Some("start"),
        ),
        (
            "force without reason",
            "/appointments/APT-1",
            with(&|b| b["force"] = json!(true)),
            422,
            "INVALID_INPUT",
            Some("forceReason"),
        ),
        (
            "bad e-mail",
            "/patients/PAT-1",
            json!({"version": 1, "email": "not-an-address"}),
            422,
            "INVALID_INPUT",
            Some("email"),
        ),
        (
            "bad language",
            "/patients/PAT-1",
            json!({"version": 1, "language": "klingon!"}),
            422,
            "INVALID_INPUT",
            Some("language"),
        ),
        (
            "service of unknown practitioner",
            "/services/SVC-2",
            service("SVC-2", &["DOC-404"], 1),
            404,
            "UNKNOWN_PRACTITIONER",
            None,
        ),
        (
            "schedule of unknown practitioner",
            "/practitioners/DOC-404/schedule",
            schedule("DOC-404", 1, days_ahead(9)),
            404,
            "UNKNOWN_PRACTITIONER",
            None,
        ),
        (
            "empty name",
            "/practitioners/DOC-9",
            practitioner("DOC-9", " ", 1),
            422,
            "INVALID_INPUT",
            Some("name"),
        ),
    ];
    for (i, (what, path, body, status, code, field)) in bodies.into_iter().enumerate() {
        let r = his.put(path, &format!("bad-{i}"), &body).await;
        assert_eq!(
            (r.status, r.body["code"].as_str().unwrap()),
            (status, code),
            "{what}: {}",
            r.body
        );
        if let Some(field) = field {
            assert_eq!(r.body["field"], field, "{what}: {}", r.body);
        }
    }
    let unknown = his
        .post(
            "/appointments/APT-404/cancel",
            "c1",
            &json!({"version": 1, "reason": "x"}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str().unwrap()),
        (404, "UNKNOWN_APPOINTMENT")
    );
    let missing = his.get("/appointments/APT-404").await;
    assert_eq!(
        (missing.status, missing.body["code"].as_str().unwrap()),
        (404, "UNKNOWN_APPOINTMENT")
    );
    assert_eq!(
        deployment.event_counts(&tenant).await,
        before,
        "a refused request wrote events"
    );

    // A key reused for another request is refused; its first answer stands.
    assert_eq!(
        his.ok(his.put("/appointments/APT-1", "once", &good).await)
            .await["outcome"],
        "applied"
    );
    let reused = his
        .put(
            "/appointments/APT-1",
            "once",
            &with(&|b| b["version"] = json!(2)),
        )
        .await;
    assert_eq!(
        (reused.status, reused.body["code"].as_str().unwrap()),
        (409, "IDEMPOTENCY_KEY_REUSED")
    );

    // A bulk request: bad records fail alone, the others apply.
    let mixed = json!({"appointments": [
        appointment("APT-2", "DOC-1", at + chrono::Duration::minutes(20), 1),
        appointment("APT-3", "DOC-404", at, 1),
        {"version": 1, "practitionerId": "DOC-1", "serviceId": "SVC-CARD", "start": iso(at), "patient": {"hisId": "P"}},
    ]});
    let r = his.ok(his.post("/bulk", "mixed", &mixed).await).await;
    assert_eq!(outcomes(&r), ["applied", "failed", "failed"]);
    assert_eq!(r["results"][1]["problem"]["code"], "UNKNOWN_PRACTITIONER");
    assert_eq!(r["results"][2]["problem"]["field"], "hisId");
    let too_many = json!({"patients": (0..10_001).map(|i| json!({"hisId": format!("P{i}"), "version": 1})).collect::<Vec<_>>()});
    let r = his.post("/bulk", "big", &too_many).await;
    assert_eq!(
        (r.status, r.body["code"].as_str().unwrap()),
        (413, "TOO_MANY_RECORDS")
    );
}

#[tokio::test]
async fn his_api_works_on_the_embedded_store() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Embedded").await;
    let his = His::new(&server, &key);
    assert_eq!(load_master_data(&his).await["summary"]["applied"], 5);
    let at = local(days_ahead(3), 10, 0);
    let v1 = appointment("APT-E", "DOC-1", at, 1);
    assert_eq!(
        his.ok(his.put("/appointments/APT-E", "e1", &v1).await)
            .await["outcome"],
        "applied"
    );
    let v0 = appointment("APT-E", "DOC-2", at, 0);
    assert_eq!(
        his.ok(his.put("/appointments/APT-E", "e0", &v0).await)
            .await["outcome"],
        "stale"
    );
    let clash = his
        .put(
            "/appointments/APT-F",
            "e2",
            &appointment("APT-F", "DOC-1", at, 1),
        )
        .await;
    assert_eq!(clash.body["code"], "SLOT_TAKEN");
    let done = his
        .post(
            "/appointments/APT-E/cancel",
            "e3",
            &json!({"version": 2, "reason": "Ill"}),
        )
        .await;
    assert_eq!(his.ok(done).await["outcome"], "applied");
    assert_eq!(
        deployment
            .count_events(&tenant, "AppointmentCancelled")
            .await,
        1
    );
}

#[tokio::test]
async fn his_openapi_document_is_served_and_matches_the_checked_in_copy() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let client = reqwest::Client::new();
    let served = client
        .get(format!("{}/his/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let text = served.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/his/v1/appointments/{hisId}",
        "/his/v1/bulk",
        "/his/v1/patients/{hisId}",
        "/his/v1/practitioners/{hisId}/schedule",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["hisKey"]["scheme"],
        "bearer"
    );

    let checked_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/his-openapi.json");
    if std::env::var_os("BUKTOR_UPDATE_OPENAPI").is_some() {
        std::fs::write(&checked_in, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        expected == text,
        "docs/his-openapi.json differs from what the server generates; \
         regenerate it with `BUKTOR_UPDATE_OPENAPI=1 cargo test --test it his_openapi` and commit it"
    );

    let page = client
        .get(format!("{}/his/v1/docs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("openapi.json"));
}

/// A newer version of a record with the same data (a nightly reconciliation
/// that bumps versions) is `unchanged`: only the version is recorded. It
/// was a 503 STORE_UNAVAILABLE forever, from an append of no events.
async fn newer_version_with_unchanged_data_is_unchanged(deployment: Deployment) {
    let server = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Unchanged").await;
    let his = His::new(&server, &key);
    assert_eq!(load_master_data(&his).await["summary"]["applied"], 5);
    let patient = |version: i64| json!({"version": version, "name": "n"});
    let applied = his
        .ok(his.put("/patients/C", "p1", &patient(1)).await)
        .await;
    assert_eq!(applied["outcome"], "applied", "{applied}");
    let off = days_ahead(20);
    let with_version = |mut body: Value, version: i64| {
        body["version"] = json!(version);
        body
    };
    let records = [
        (
            "/practitioners/DOC-1",
            practitioner("DOC-1", "Dr. Ada Lovelace", 2),
        ),
        (
            "/services/SVC-CARD",
            service("SVC-CARD", &["DOC-1", "DOC-2"], 2),
        ),
        ("/practitioners/DOC-1/schedule", schedule("DOC-1", 2, off)),
        ("/patients/C", patient(2)),
    ];
    let before = deployment.event_counts(&tenant).await;
    for (i, (path, body)) in records.iter().enumerate() {
        let key = format!("unchanged-{i}");
        let first = his.put(path, &key, body).await;
        assert_eq!(first.status, 200, "{path}: {}", first.body);
        assert_eq!(first.body["outcome"], "unchanged", "{path}: {}", first.body);
        // A retry with the same key answers alike.
        let again = his.ok(his.put(path, &key, body).await).await;
        assert_eq!(again, first.body, "{path}");
        // The version was recorded: the same version again is stale.
        let stale = his
            .ok(his.put(path, &format!("{key}-again"), body).await)
            .await;
        assert_eq!(stale["outcome"], "stale", "{path}: {stale}");
    }
    let after = deployment.event_counts(&tenant).await;
    assert_eq!(
        after.get("HisVersionApplied").copied().unwrap_or(0)
            - before.get("HisVersionApplied").copied().unwrap_or(0),
        4,
        "{after:?}"
    );
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| *k != "HisVersionApplied" && after.get(*k) != before.get(*k))
        .collect();
    assert!(changed.is_empty(), "only versions recorded: {changed:?}");

    // The nightly reconciliation in bulk: every record unchanged, none failed.
    let bulk = json!({
        "practitioners": [with_version(practitioner("DOC-1", "Dr. Ada Lovelace", 1), 3), with_version(practitioner("DOC-2", "Dr. Grace Hopper", 1), 3)],
        "services": [service("SVC-CARD", &["DOC-1", "DOC-2"], 3)],
        "schedules": [schedule("DOC-1", 3, off), schedule("DOC-2", 3, off)],
        "patients": [{"hisId": "C", "version": 3, "name": "n"}],
    });
    let nightly = his.ok(his.post("/bulk", "nightly-1", &bulk).await).await;
    assert_eq!(
        nightly["summary"],
        json!({"applied": 0, "unchanged": 6, "stale": 0, "failed": 0}),
        "{nightly}"
    );
    assert!(server.get("/health").await.status == 200);
}

#[tokio::test]
async fn his_newer_version_with_unchanged_data_is_unchanged_on_postgres() {
    newer_version_with_unchanged_data_is_unchanged(Deployment::postgres().await).await;
}

#[tokio::test]
async fn his_newer_version_with_unchanged_data_is_unchanged_on_the_embedded_store() {
    newer_version_with_unchanged_data_is_unchanged(Deployment::embedded()).await;
}

/// Times and dates outside the accepted years (docs/time.md) are refused
/// as 422 INVALID_INPUT naming the field, in every form the HIS sends them:
/// RFC 3339, a local wall-clock time, a `lastModified`, a schedule's dates.
/// An appointment at `+262142-12-31T23:59:59Z` used to panic the worker.
#[tokio::test]
async fn his_times_outside_the_accepted_years_are_refused() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Far Future").await;
    let his = His::new(&server, &key);
    load_master_data(&his).await;
    let before = deployment.event_counts(&tenant).await;
    let good = appointment("APT-FAR", "DOC-1", local(days_ahead(7), 9, 0), 1);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        edit(&mut b);
        b
    };
    let mut cases: Vec<(String, &str, Value, &str)> = Vec::new();
    for far in crate::time_bounds::FAR_INSTANTS.into_iter().chain([
        "9999-12-31T23:59",
        "1899-12-31T23:59:59",
        "+262142-12-31T23:59",
    ]) {
        cases.push((
            format!("start {far}"),
            "/appointments/APT-FAR",
            with(&|b| b["start"] = json!(far)),
            "start",
        ));
    }
    for far in ["+262142-12-31T23:59:59Z", "2200-01-01T00:00:00Z"] {
        cases.push((
            format!("lastModified {far}"),
            "/patients/PAT-FAR",
            json!({"lastModified": far, "name": "n"}),
            "lastModified",
        ));
    }
    for far in crate::time_bounds::FAR_DATES {
        let mut rules = schedule("DOC-1", 2, days_ahead(9));
        rules["weeklyRules"][0]["effectiveFrom"] = json!(far);
        cases.push((
            format!("effectiveFrom {far}"),
            "/practitioners/DOC-1/schedule",
            rules,
            "effectiveFrom",
        ));
        let mut leave = schedule("DOC-1", 2, days_ahead(9));
        leave["exceptions"][0]["date"] = json!(far);
        cases.push((
            format!("exception on {far}"),
            "/practitioners/DOC-1/schedule",
            leave,
            "date",
        ));
    }
    for (i, (what, path, body, field)) in cases.into_iter().enumerate() {
        let r = his.put(path, &format!("far-{i}"), &body).await;
        assert_eq!(
            (
                r.status,
                r.body["code"].as_str().unwrap(),
                r.body["field"].as_str()
            ),
            (422, "INVALID_INPUT", Some(field)),
            "{what}: {}",
            r.body
        );
    }
    // In bulk, the one far record fails and the others are applied.
    let bulk = json!({
        "appointments": [with(&|b| b["start"] = json!("+262142-12-31T23:59:59Z"))],
        "patients": [{"hisId": "PAT-NEAR", "version": 1, "name": "n"}],
    });
    let r = his.ok(his.post("/bulk", "far-bulk", &bulk).await).await;
    assert_eq!(r["summary"]["failed"], 1, "{r}");
    assert_eq!(r["summary"]["applied"], 1, "{r}");
    let after = deployment.event_counts(&tenant).await;
    assert_eq!(
        after.get("AppointmentBooked"),
        before.get("AppointmentBooked"),
        "nothing booked"
    );
    // The last accepted local time parses, and is refused only by the rules.
    let last = his
        .put(
            "/appointments/APT-LAST",
            "far-last",
            &with(&|b| {
                b["hisId"] = json!("APT-LAST");
                b["start"] = json!("2199-12-31T10:00");
            }),
        )
        .await;
    assert_eq!(last.status, 422, "{}", last.body);
    assert_ne!(last.body["code"], "INVALID_INPUT", "{}", last.body);
    assert_eq!(server.get("/health").await.status, 200);
}

/// A forced booking from the HIS for a practitioner Buktor keeps no
/// schedule for, at every hour of a local day in Amsterdam and on both DST
/// change days: each is booked on its local calendar day. Between 00:00
/// and 01:00 it was a 503 (`Corrupt("schedule time zone differs from the
/// hospital's: calendar-…-2026-12-09 is not calendar-…-2026-12-10")`): the
/// empty schedule's UTC day was not the local day the server had loaded.
#[tokio::test]
async fn his_forced_bookings_without_a_schedule_land_on_the_local_day_at_every_hour() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, _, key) = hospital(&deployment, "HIS Midnight").await;
    let his = His::new(&server, &key);
    let master = json!({
        "practitioners": [practitioner("DOC-N", "Dr. Night", 1)],
        "services": [service("SVC-CARD", &["DOC-N"], 1)],
    });
    his.ok(his.post("/bulk", "night-master", &master).await)
        .await;
    let forced = |his_id: &str, start: &str| {
        json!({
            "hisId": his_id,
            "version": 1,
            "practitionerId": "DOC-N",
            "serviceId": "SVC-CARD",
            "start": start,
            "patient": {"hisId": format!("PAT-{his_id}"), "name": "Ada Jansen"},
            "force": true,
            "forceReason": "Night shift booked at the desk",
        })
    };
    // The exact case of the issue first: 00:30 on 10 December 2026 in
    // Amsterdam, which is 23:30 UTC on the 9th.
    let r = his
        .put(
            "/appointments/NIGHT-ISSUE",
            "night-issue",
            &forced("NIGHT-ISSUE", "2026-12-10T00:30:00+01:00"),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["outcome"]),
        (200, &json!("applied")),
        "{}",
        r.body
    );

    let mut days = vec![
        days_ahead(30),
        // Spring forward (02:00 → 03:00) and fall back (03:00 → 02:00).
        NaiveDate::from_ymd_opt(2027, 3, 28).unwrap(),
        NaiveDate::from_ymd_opt(2027, 10, 31).unwrap(),
    ];
    days.dedup();
    let mut expected: Vec<(String, NaiveDate)> = vec![(
        "NIGHT-ISSUE".into(),
        NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(),
    )];
    for day in days {
        for hour in 0..24 {
            // RFC 3339 with the offset in force, so the DST days' skipped
            // and repeated hours are named without ambiguity.
            let naive = day.and_hms_opt(hour, 30, 0).unwrap();
            let Some(at) = TIME_ZONE.from_local_datetime(&naive).earliest() else {
                continue;
            };
            let his_id = format!("NIGHT-{day}-{hour:02}");
            let r = his
                .put(
                    &format!("/appointments/{his_id}"),
                    &his_id,
                    &forced(&his_id, &at.to_rfc3339()),
                )
                .await;
            assert_eq!(r.status, 200, "{at}: {}", r.body);
            assert_eq!(r.body["outcome"], "applied", "{at}: {}", r.body);
            expected.push((his_id, day));
        }
    }
    // Each appointment is on the calendar of its local day.
    let days: BTreeMap<String, String> = deployment
        .query_pairs(
            &tenant,
            "SELECT payload->>'his_appointment_id', payload->>'calendar_day' FROM events WHERE tenant_id = {T} AND event_type = 'AppointmentBooked'",
        )
        .await
        .into_iter()
        .collect();
    for (his_id, day) in expected {
        assert_eq!(
            days.get(&his_id),
            Some(&day.to_string()),
            "{his_id}: {days:?}"
        );
    }
    assert_eq!(server.get("/health").await.status, 200);
}

/// What the OpenAPI document allows, the server takes: JSON Schema's
/// `integer` is any number without a fraction (`1739.0`, `2e1`), and lists
/// the document lets be empty can be. What it forbids (both `version` and
/// `lastModified`, no weekday in a rule) the server refuses with a problem.
#[tokio::test]
async fn his_accepts_what_its_document_allows_and_refuses_what_it_forbids() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (_, _, key) = hospital(&deployment, "HIS Contract").await;
    let his = His::new(&server, &key);

    // Integers written as numbers with a zero fraction or an exponent.
    let doc = json!({"version": 1739.0, "name": "Dr. Ada Jansen", "specialty": "Cardiology"});
    let r = his
        .ok(his.put("/practitioners/DOC-1", "p-1", &doc).await)
        .await;
    assert_eq!(r["outcome"], "applied", "{r}");
    let svc = json!({"version": 2e0, "name": "Consultation", "durationMinutes": 2e1,
        "bufferAfterMinutes": 5.0, "capacity": 1.0, "practitionerIds": ["DOC-1"]});
    let r = his.ok(his.put("/services/SVC-1", "s-1", &svc).await).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    // A fraction is not an integer.
    let half = json!({"version": 1739.5, "name": "Dr. Ada Jansen", "specialty": "Cardiology"});
    let r = his.put("/practitioners/DOC-1", "p-2", &half).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("MALFORMED_BODY")),
        "{}",
        r.body
    );
    // Nor is a number beyond the document's bounds (±(2^63 − 1)).
    let huge =
        r#"{"version": -9223372036854775809, "name": "Dr. Ada Jansen", "specialty": "Cardiology"}"#;
    let r = his
        .send(
            his.client
                .put(format!("{}/practitioners/DOC-1", his.base))
                .bearer_auth(&his.key)
                .header("idempotency-key", "p-3")
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("MALFORMED_BODY")),
        "{}",
        r.body
    );

    // A schedule with no rules and no exceptions: the practitioner has no hours.
    let empty = json!({"version": 1.0, "weeklyRules": [], "exceptions": []});
    let r = his
        .ok(his
            .put("/practitioners/DOC-1/schedule", "sch-1", &empty)
            .await)
        .await;
    assert_eq!(r["outcome"], "applied", "{r}");
    let r = his
        .ok(his
            .post(
                "/bulk",
                "bulk-empty",
                &json!({"patients": [], "appointments": []}),
            )
            .await)
        .await;
    assert_eq!(r["results"], json!([]), "{r}");

    // Forbidden by the document, refused by the server.
    let both = json!({"version": 1, "lastModified": "2026-12-01T10:00:00Z", "name": "n"});
    let r = his.put("/patients/PAT-1", "pat-1", &both).await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("version")),
        "{}",
        r.body
    );
    let no_day = json!({"version": 2, "weeklyRules": [{"weekdays": [], "start": "08:00", "end": "12:00",
        "gridMinutes": 20, "effectiveFrom": "2026-01-05"}]});
    let r = his
        .put("/practitioners/DOC-1/schedule", "sch-2", &no_day)
        .await;
    assert!(matches!(r.status, 400 | 422), "{}", r.body);

    let doc: Value = reqwest::get(format!("{}/his/v1/openapi.json", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["PatientBody"]["oneOf"].as_array().map(Vec::len),
        Some(2),
        "exactly one of version and lastModified"
    );
    assert_eq!(
        schemas["WeeklyRuleBody"]["properties"]["weekdays"]["minItems"],
        1
    );
    assert_eq!(
        schemas["ScheduleBody"]["properties"]["weeklyRules"].get("minItems"),
        None
    );
}

/// Every write declares its required `Idempotency-Key` header, and every
/// operation the answers the server gives: 401 everywhere, 400, 422 and 503
/// on writes, 429 with its headers; a method a path does not take answers
/// 405 with `Allow`.
#[tokio::test]
async fn his_openapi_declares_the_idempotency_key_and_every_answer() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let doc: Value = reqwest::get(format!("{}/his/v1/openapi.json", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut writes = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: no summary"
            );
            let statuses = op["responses"].as_object().unwrap();
            assert!(statuses.contains_key("401"), "{what}: no 401");
            assert!(statuses.contains_key("429"), "{what}: no 429");
            assert!(statuses.contains_key("503"), "{what}: no 503");
            if method == "get" {
                continue;
            }
            writes += 1;
            let key = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "Idempotency-Key")
                .unwrap_or_else(|| panic!("{what}: no Idempotency-Key"));
            assert_eq!(
                (&key["in"], &key["required"]),
                (&json!("header"), &json!(true)),
                "{what}"
            );
            for status in ["400", "422"] {
                if path == "/his/v1/bulk" && status == "422" {
                    continue;
                }
                assert!(statuses.contains_key(status), "{what}: no {status}");
            }
            let body = &op["requestBody"]["content"]["application/json"];
            assert!(body["example"].is_object(), "{what}: no example body");
        }
    }
    assert_eq!(writes, 10);
    let limited = &doc["components"]["responses"]["RateLimited"]["headers"];
    for header in [
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ] {
        assert!(limited[header].is_object(), "429 without {header}");
    }

    let res = reqwest::Client::new()
        .delete(format!("{}/his/v1/patients/PAT-1", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "PUT");
    let res = reqwest::Client::new()
        .post(format!("{}/his/v1/appointments/APT-1", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, PUT");
}
