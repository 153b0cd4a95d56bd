//! The embedding API over HTTP against the real server (docs/embedding.md):
//! embed tokens and sessions, embedding settings, the widget API's holds,
//! bookings and manage links, origins, and holds raced over two instances.
//! The browser tests (`browser.rs`) drive the same API through the pages;
//! these pin its contract and its refusals precisely.
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::server::*;

const ALLOWED: &str = "http://his.example.org:8443";

/// A client of the widget and embed API of one server.
struct Browser {
    client: reqwest::Client,
    base: String,
    tenant: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self.body
    }

    #[track_caller]
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {}",
            self.body
        );
        assert!(
            self.headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json")),
            "a refusal is problem details"
        );
    }
}

impl Browser {
    fn new(server: &TestServer, tenant: &str) -> Browser {
        Browser {
            client: reqwest::Client::new(),
            base: server.url.clone(),
            tenant: tenant.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let path = path.replace("{tenant}", &self.tenant);
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .expect("the request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(reqwest::Method::GET, path, headers, None).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, headers, Some(body.to_string()))
            .await
    }

    async fn embed_token(&self, key: &str, user: &str, role: &str, ttl: i64) -> String {
        let answer = self
            .post(
                "/embed/v1/tokens",
                &[("authorization", &format!("Bearer {key}"))],
                json!({"user": user, "name": format!("{user} name"), "role": role, "ttlSeconds": ttl}),
            )
            .await
            .expect(201);
        answer["token"].as_str().expect("a token").to_owned()
    }

    async fn session(&self, key: &str, user: &str, role: &str) -> String {
        let token = self.embed_token(key, user, role, 300).await;
        let answer = self
            .post("/embed/v1/session", &[], json!({"token": token}))
            .await
            .expect(200);
        assert_eq!(answer["role"], role);
        assert_eq!(answer["tenant"]["id"], self.tenant.as_str());
        answer["session"].as_str().expect("a session").to_owned()
    }

    async fn hold(&self, auth: &[(&str, &str)], h: &Hospital, start: &str) -> Answer {
        self.post(
            "/widget/v1/{tenant}/holds",
            auth,
            json!({"practitionerId": h.practitioner, "serviceId": h.checkup, "start": start}),
        )
        .await
    }

    async fn slot_starts(&self, auth: &[(&str, &str)], h: &Hospital, day: &str) -> Vec<String> {
        let path = format!(
            "/widget/v1/{{tenant}}/slots?service={}&practitioner={}&from={day}&to={day}",
            h.checkup, h.practitioner
        );
        self.get(&path, auth).await.expect(200)["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .map(|s| s["start"].as_str().expect("a start").to_owned())
            .collect()
    }
}

async fn configure(server: &TestServer, admin: &str, input: Value) -> Value {
    server
        .gql(
            admin,
            "mutation($i: EmbeddingInput!) {
               configureEmbedding(input: $i) { allowedOrigins holdMinutes patientBooking }
             }",
            json!({"i": input}),
        )
        .await
}

/// The instant a slot of the widget answer names, as GraphQL writes it.
fn slot_at(day: chrono::NaiveDate, hour: u32) -> String {
    local(day, hour, 0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn embed_tokens_become_sessions_only_when_untouched_unexpired_and_issued_to_the_his() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Token Hospital").await;
    let browser = Browser::new(&server, &h.tenant);
    let staff_key = deployment.create_api_key(&h.tenant, "staff").await;
    let auth = |key: &str| format!("Bearer {key}");

    // Only the HIS server's admin or his-system key issues embed tokens.
    let request = json!({"user": "u-7", "name": "Dr. Jansen", "role": "staff"});
    browser
        .post("/embed/v1/tokens", &[], request.clone())
        .await
        .refused(401, "UNAUTHENTICATED");
    browser
        .post(
            "/embed/v1/tokens",
            &[("authorization", &auth(&staff_key))],
            request.clone(),
        )
        .await
        .refused(403, "FORBIDDEN");
    let session = browser.session(&h.admin, "u-7", "staff").await;
    browser
        .post(
            "/embed/v1/tokens",
            &[("authorization", &auth(&session))],
            request,
        )
        .await
        .refused(403, "FORBIDDEN");
    for (bad, field) in [
        (
            json!({"user": "u", "name": "n", "role": "his-system"}),
            "role",
        ),
        (json!({"user": "u", "name": "n", "role": "patient"}), "role"),
        (json!({"user": " ", "name": "n", "role": "staff"}), "user"),
        (
            json!({"user": "u", "name": "n", "role": "staff", "ttlSeconds": 0}),
            "ttlSeconds",
        ),
        (
            json!({"user": "u", "name": "n", "role": "staff", "ttlSeconds": 601}),
            "ttlSeconds",
        ),
    ] {
        let answer = browser
            .post(
                "/embed/v1/tokens",
                &[("authorization", &auth(&h.admin))],
                bad,
            )
            .await;
        answer.refused(422, "INVALID_INPUT");
        assert_eq!(answer.body["field"], field);
    }
    browser
        .post(
            "/embed/v1/tokens",
            &[("authorization", &auth(&h.admin))],
            json!({"user": "u", "name": "n", "role": "staff", "extra": 1}),
        )
        .await
        .refused(400, "MALFORMED_REQUEST");

    // The session acts as the HIS's user, in the role the HIS gave.
    let me = server
        .gql_ok(&session, "{ me { role tenantId } }", json!({}))
        .await;
    assert_eq!(me["me"]["role"], "staff");
    assert_eq!(me["me"]["tenantId"], h.tenant.as_str());
    let booked = server
        .gql_ok(
            &session,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, local(days_ahead(2), 9, 0), "p-1")}),
        )
        .await;
    let id = booked["bookAppointment"]["id"].as_str().unwrap().to_owned();
    let trail = server
        .gql_ok(
            &h.admin,
            "query($id: ID!) { appointment(id: $id) { history { actor { id role } source } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        trail["appointment"]["history"][0]["actor"]["id"],
        "user:u-7"
    );
    assert_eq!(trail["appointment"]["history"][0]["actor"]["role"], "staff");
    // An auditor's session reads but never writes.
    let auditor = browser.session(&h.admin, "a-1", "auditor").await;
    let refused = server
        .gql(
            &auditor,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, local(days_ahead(2), 10, 0), "p-1")}),
        )
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"));

    // Tampered, wrongly typed and expired tokens are refused, each for what it is.
    let token = browser.embed_token(&h.admin, "u-8", "admin", 300).await;
    let (body, sig) = token.split_once('.').unwrap();
    let mut flipped = sig.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let tampered_sig = format!("{body}.{}", String::from_utf8(flipped).unwrap());
    let other_claims = format!("{}.{sig}", body.replace('a', "b"));
    for bad in [tampered_sig, other_claims, "not-a-token".into()] {
        browser
            .post("/embed/v1/session", &[], json!({"token": bad}))
            .await
            .refused(401, "TOKEN_INVALID");
    }
    let session_as_embed = session.trim_start_matches("bks_");
    browser
        .post("/embed/v1/session", &[], json!({"token": session_as_embed}))
        .await
        .refused(401, "TOKEN_INVALID");
    let short = browser.embed_token(&h.admin, "u-9", "staff", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    browser
        .post("/embed/v1/session", &[], json!({"token": short}))
        .await
        .refused(401, "TOKEN_EXPIRED");
    let forged_session = format!("bks_{body}.{sig}x");
    let refused = server
        .post_raw(
            Some(&forged_session),
            json!({"query": "{ me { role } }"}).to_string(),
        )
        .await;
    assert_eq!(refused.status, 401);

    // A session of one hospital is nothing at another's.
    let (other_tenant, _) = deployment.tenant_with_admin("Elsewhere").await;
    let elsewhere = Browser::new(&server, &other_tenant);
    elsewhere
        .get(
            "/widget/v1/{tenant}/config",
            &[("authorization", &auth(&session))],
        )
        .await
        .refused(403, "FORBIDDEN");
}

#[tokio::test]
async fn settings_are_validated_and_only_admins_change_them() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Settings Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let auditor = deployment.create_api_key(&h.tenant, "auditor").await;

    for (input, field) in [
        (
            json!({"allowedOrigins": ["his.example.org"]}),
            "allowedOrigins",
        ),
        (
            json!({"allowedOrigins": ["https://his.example.org/path"]}),
            "allowedOrigins",
        ),
        (
            json!({"allowedOrigins": ["https://*.example.org"]}),
            "allowedOrigins",
        ),
        (
            json!({"allowedOrigins": [], "holdMinutes": 0}),
            "holdMinutes",
        ),
        (
            json!({"allowedOrigins": [], "holdMinutes": 31}),
            "holdMinutes",
        ),
    ] {
        let answer = configure(&server, &h.admin, input).await;
        assert_eq!(error_code(&answer), Some("INVALID_INPUT"), "{answer}");
        assert_eq!(answer["errors"][0]["extensions"]["field"], field);
    }
    assert_eq!(
        deployment
            .count_events(&h.tenant, "EmbeddingConfigured")
            .await,
        0
    );
    let refused = configure(&server, &staff, json!({"allowedOrigins": [ALLOWED]})).await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"));

    let set = configure(
        &server,
        &h.admin,
        json!({"allowedOrigins": ["HTTP://His.Example.org:8443", ALLOWED], "patientBooking": true}),
    )
    .await;
    assert_eq!(
        data(&set)["configureEmbedding"],
        json!({"allowedOrigins": [ALLOWED], "holdMinutes": 5, "patientBooking": true})
    );
    // Unchanged settings record nothing.
    configure(&server, &h.admin, json!({"allowedOrigins": [ALLOWED]})).await;
    assert_eq!(
        deployment
            .count_events(&h.tenant, "EmbeddingConfigured")
            .await,
        1
    );
    let read = server
        .gql_ok(
            &auditor,
            "{ embeddingSettings { allowedOrigins holdMinutes } }",
            json!({}),
        )
        .await;
    assert_eq!(
        read["embeddingSettings"]["allowedOrigins"],
        json!([ALLOWED])
    );

    // The pages may be framed by the allowed origin only.
    let page = server
        .get(&format!("/embed/{}/admin/appointments", h.tenant))
        .await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains(&format!("frame-ancestors 'self' {ALLOWED};")),
        "{csp}"
    );
    assert_eq!(
        server
            .get(&format!("/embed/{}/admin/nothing", h.tenant))
            .await
            .status,
        404
    );
    assert_eq!(
        server.get("/embed/not-a-tenant/admin/audit").await.status,
        404
    );
}

/// Sets up a hospital whose patients book online from `ALLOWED`.
async fn online_hospital(deployment: &Deployment, server: &TestServer, name: &str) -> Hospital {
    let h = set_up_hospital(deployment, server, name).await;
    let set = configure(
        server,
        &h.admin,
        json!({"allowedOrigins": [ALLOWED], "patientBooking": true}),
    )
    .await;
    assert!(set.get("errors").is_none(), "{set}");
    h
}

async fn a_patient_holds_books_and_manages_through_the_widget(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Widget Hospital").await;
    let browser = Browser::new(&server, &h.tenant);
    let day = days_ahead(4);
    let (nine, ten) = (slot_at(day, 9), slot_at(day, 10));

    // Until the hospital allows it, patients cannot book online.
    browser
        .get("/widget/v1/{tenant}/config", &[])
        .await
        .refused(403, "PATIENT_BOOKING_DISABLED");
    configure(
        &server,
        &h.admin,
        json!({"allowedOrigins": [ALLOWED], "patientBooking": true}),
    )
    .await;
    // The widget reads the catalogue and slots from the read models.
    server.settle(&h.admin).await;

    let config = browser
        .get("/widget/v1/{tenant}/config", &[])
        .await
        .expect(200);
    assert_eq!(config["mode"], "patient");
    assert_eq!(config["holdMinutes"], 5);
    assert_eq!(config["tenant"]["timeZone"], TIME_ZONE.name());
    let services: Vec<&str> = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(services.contains(&h.checkup.as_str()));

    // Another site than the allowed one is refused; the allowed one gets CORS.
    let evil = browser
        .get(
            "/widget/v1/{tenant}/config",
            &[("origin", "https://evil.example")],
        )
        .await;
    evil.refused(403, "ORIGIN_NOT_ALLOWED");
    let allowed = browser
        .get("/widget/v1/{tenant}/config", &[("origin", ALLOWED)])
        .await;
    assert_eq!(
        allowed.headers.get("access-control-allow-origin").unwrap(),
        ALLOWED
    );
    let preflight = browser
        .send(
            reqwest::Method::OPTIONS,
            "/widget/v1/{tenant}/holds",
            &[
                ("origin", ALLOWED),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .await;
    assert_eq!(preflight.status, 204);

    // A hold keeps the slot from everyone else, whoever asks.
    assert!(browser
        .slot_starts(&[], &h, &day.to_string())
        .await
        .contains(&nine));
    let hold = browser.hold(&[], &h, &nine).await.expect(201);
    let hold_id = hold["holdId"].as_str().unwrap().to_owned();
    browser
        .hold(&[], &h, &nine)
        .await
        .refused(409, "SLOT_TAKEN");
    server.settle(&h.admin).await;
    assert!(!browser
        .slot_starts(&[], &h, &day.to_string())
        .await
        .contains(&nine));
    let staff_booking = server
        .gql(
            &h.admin,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, local(day, 9, 0), "p-2")}),
        )
        .await;
    assert_eq!(error_code(&staff_booking), Some("SLOT_TAKEN"));

    // Bad bookings change nothing, and the hold survives them.
    let events_before = deployment.event_counts(&h.tenant).await;
    for (body, status, code) in [
        (
            json!({"holdId": hold_id, "patient": {"email": "ann@example.org"}}),
            422,
            "INVALID_INPUT",
        ),
        (
            json!({"holdId": hold_id, "patient": {"name": "Ann"}}),
            422,
            "INVALID_INPUT",
        ),
        (
            json!({"holdId": hold_id, "patient": {"name": "Ann", "email": "not-mail"}}),
            422,
            "INVALID_INPUT",
        ),
        (
            json!({"holdId": format!("{hold_id}x"), "patient": {"name": "Ann", "email": "a@b.org"}}),
            401,
            "TOKEN_INVALID",
        ),
        (json!({"hold": hold_id}), 400, "MALFORMED_REQUEST"),
    ] {
        browser
            .post("/widget/v1/{tenant}/bookings", &[], body)
            .await
            .refused(status, code);
    }
    browser
        .send(
            reqwest::Method::POST,
            "/widget/v1/{tenant}/bookings",
            &[],
            Some("{not json".into()),
        )
        .await
        .refused(400, "MALFORMED_REQUEST");
    assert_eq!(deployment.event_counts(&h.tenant).await, events_before);

    let booked = browser
        .post(
            "/widget/v1/{tenant}/bookings",
            &[],
            json!({"holdId": hold_id, "patient": {"name": "Ann Smith", "email": "Ann@Example.org"}, "language": "nl"}),
        )
        .await
        .expect(201);
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["start"], nine);
    assert_eq!(booked["patientName"], "Ann Smith");
    let appointment = booked["appointmentId"].as_str().unwrap().to_owned();
    let manage = booked["manageToken"].as_str().unwrap().to_owned();
    assert!(booked["manageUrl"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/widget/v1/{}/manage#token={manage}", h.tenant)));
    // The hold became the booking: it books nothing a second time.
    browser
        .post(
            "/widget/v1/{tenant}/bookings",
            &[],
            json!({"holdId": hold_id, "patient": {"name": "Bob", "email": "bob@example.org"}}),
        )
        .await
        .refused(404, "HOLD_NOT_FOUND");
    let history = server
        .gql_ok(
            &h.admin,
            "query($id: ID!) { appointment(id: $id) { patient { hisPatientId } history { actor { id role } source } } }",
            json!({"id": appointment}),
        )
        .await;
    assert_eq!(
        history["appointment"]["history"][0]["actor"]["id"],
        "patient:widget"
    );
    assert_eq!(history["appointment"]["history"][0]["source"], "widget");
    let patient_id = history["appointment"]["patient"]["hisPatientId"]
        .as_str()
        .unwrap();
    assert!(patient_id.starts_with("web-"), "{patient_id}");

    // The manage link sees, moves and cancels that one appointment only.
    let by_link = [("authorization", format!("Manage {manage}"))];
    let by_link: Vec<(&str, &str)> = by_link.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let seen = browser
        .get("/widget/v1/{tenant}/manage", &by_link)
        .await
        .expect(200);
    assert_eq!(seen["appointmentId"], appointment.as_str());
    let page = browser.get("/widget/v1/{tenant}/manage", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .as_str()
        .is_some_and(|html| html.contains("<!doctype html>")));
    browser
        .post(
            "/widget/v1/{tenant}/bookings",
            &by_link,
            json!({"holdId": hold_id}),
        )
        .await
        .refused(403, "FORBIDDEN");
    let new_hold = browser.hold(&[], &h, &ten).await.expect(201);
    let moved = browser
        .post(
            "/widget/v1/{tenant}/manage/reschedule",
            &by_link,
            json!({"holdId": new_hold["holdId"]}),
        )
        .await
        .expect(200);
    assert_eq!(moved["start"], ten);
    assert_ne!(moved["manageToken"], manage.as_str());
    server.settle(&h.admin).await;
    let free = browser.slot_starts(&[], &h, &day.to_string()).await;
    assert!(free.contains(&nine) && !free.contains(&ten));
    let cancelled = browser
        .post(
            "/widget/v1/{tenant}/manage/cancel",
            &by_link,
            json!({"reason": "feeling better"}),
        )
        .await
        .expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    let mut tampered = manage.clone();
    tampered.push('x');
    browser
        .get(
            "/widget/v1/{tenant}/manage",
            &[("authorization", &format!("Manage {tampered}"))],
        )
        .await
        .refused(401, "TOKEN_INVALID");
    // A manage link of one hospital opens nothing at another.
    let (other, _) = deployment.tenant_with_admin("Other Widget Hospital").await;
    Browser::new(&server, &other)
        .get("/widget/v1/{tenant}/manage", &by_link)
        .await
        .refused(401, "TOKEN_INVALID");

    // Letting go of a hold frees the time at once.
    let hold = browser.hold(&[], &h, &nine).await.expect(201);
    let released = browser
        .send(
            reqwest::Method::DELETE,
            &format!(
                "/widget/v1/{{tenant}}/holds/{}",
                hold["holdId"].as_str().unwrap()
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(released.status, 204);
    browser.hold(&[], &h, &nine).await.expect(201);
}

#[tokio::test]
async fn a_patient_holds_books_and_manages_through_the_widget_on_postgres() {
    a_patient_holds_books_and_manages_through_the_widget(Deployment::postgres().await).await;
}

#[tokio::test]
async fn a_patient_holds_books_and_manages_through_the_widget_on_the_embedded_store() {
    a_patient_holds_books_and_manages_through_the_widget(Deployment::embedded()).await;
}

#[tokio::test]
async fn staff_book_for_a_patient_the_his_recorded() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Staff Widget Hospital").await;
    let browser = Browser::new(&server, &h.tenant);
    server
        .gql_ok(
            &h.admin,
            "mutation { recordPatientContact(input: {hisPatientId: \"HIS-42\", name: \"Cees Bakker\",
               email: \"cees@example.org\", language: \"nl\"}) { id } }",
            json!({}),
        )
        .await;
    let session = browser.session(&h.admin, "nurse-1", "staff").await;
    let bearer = format!("Bearer {session}");
    let auth = [("authorization", bearer.as_str())];
    // Staff mode works whether or not patients may book.
    let config = browser
        .get("/widget/v1/{tenant}/config", &auth)
        .await
        .expect(200);
    assert_eq!(config["mode"], "staff");
    let found = browser
        .get("/widget/v1/{tenant}/patients/HIS-42", &auth)
        .await
        .expect(200);
    assert_eq!(found["name"], "Cees Bakker");
    browser
        .get("/widget/v1/{tenant}/patients/HIS-404", &auth)
        .await
        .refused(404, "PATIENT_NOT_FOUND");
    let auditor = browser.session(&h.admin, "audit-1", "auditor").await;
    browser
        .get(
            "/widget/v1/{tenant}/config",
            &[("authorization", &format!("Bearer {auditor}"))],
        )
        .await
        .refused(403, "FORBIDDEN");

    let day = days_ahead(5);
    let hold = browser.hold(&auth, &h, &slot_at(day, 11)).await.expect(201);
    browser
        .post(
            "/widget/v1/{tenant}/bookings",
            &auth,
            json!({"holdId": hold["holdId"], "patient": {"name": "Someone"}}),
        )
        .await
        .refused(422, "INVALID_INPUT");
    let booked = browser
        .post(
            "/widget/v1/{tenant}/bookings",
            &auth,
            json!({"holdId": hold["holdId"], "patient": {"hisPatientId": "HIS-42"}}),
        )
        .await
        .expect(201);
    assert_eq!(booked["patientName"], "Cees Bakker");
    let history = server
        .gql_ok(
            &h.admin,
            "query($id: ID!) { appointment(id: $id) { patient { hisPatientId email } history { actor { id role } source } } }",
            json!({"id": booked["appointmentId"]}),
        )
        .await;
    let a = &history["appointment"];
    assert_eq!(
        a["patient"],
        json!({"hisPatientId": "HIS-42", "email": "cees@example.org"})
    );
    assert_eq!(
        a["history"][0]["actor"],
        json!({"id": "user:nurse-1", "role": "staff"})
    );
    assert_eq!(a["history"][0]["source"], "widget");
}

#[tokio::test]
async fn one_slot_is_held_once_whatever_the_number_of_patients_and_instances() {
    let deployment = Deployment::postgres().await;
    let first = deployment.start().await;
    let second = deployment.start().await;
    let h = online_hospital(&deployment, &first, "Busy Widget Hospital").await;
    let browsers = [
        Browser::new(&first, &h.tenant),
        Browser::new(&second, &h.tenant),
    ];
    let day = days_ahead(6);
    let contested = slot_at(day, 14);
    const PATIENTS: usize = 60;

    let holds = join_all((0..PATIENTS).map(|i| browsers[i % 2].hold(&[], &h, &contested))).await;
    let won: Vec<&Answer> = holds.iter().filter(|a| a.status == 201).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one hold: {:?}",
        holds.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for lost in holds.iter().filter(|a| a.status != 201) {
        lost.refused(409, "SLOT_TAKEN");
    }
    assert_eq!(deployment.count_events(&h.tenant, "SlotReserved").await, 1);

    // Every patient then tries to book with every hold token that exists
    // (one), on both instances at once: one booking.
    let hold_id = won[0].body["holdId"].clone();
    let bookings = join_all((0..PATIENTS).map(|i| {
        browsers[i % 2].post(
            "/widget/v1/{tenant}/bookings",
            &[],
            json!({"holdId": hold_id, "patient": {"name": format!("P{i}"), "email": format!("p{i}@example.org")}}),
        )
    }))
    .await;
    assert_eq!(bookings.iter().filter(|a| a.status == 201).count(), 1);
    assert!(bookings
        .iter()
        .filter(|a| a.status != 201)
        .all(|a| a.code() == "HOLD_NOT_FOUND"));
    assert_eq!(deployment.booked_appointment_ids(&h.tenant).await.len(), 1);
}

#[tokio::test]
async fn a_lapsed_hold_frees_the_slot_and_its_token_then_books_only_if_still_free() {
    let deployment = Deployment::postgres().await;
    let now = deployment.start().await;
    // A second instance on the same data whose clock is 6 minutes ahead:
    // to it, a 5-minute hold made now has lapsed.
    let later = deployment
        .start_with(ServerOptions {
            clock_offset_secs: 6 * 60,
            ..Default::default()
        })
        .await;
    let h = online_hospital(&deployment, &now, "Lapsing Hospital").await;
    let (early, late) = (
        Browser::new(&now, &h.tenant),
        Browser::new(&later, &h.tenant),
    );
    let day = days_ahead(7);
    let (a, b) = (slot_at(day, 8), slot_at(day, 12));

    let first = early.hold(&[], &h, &a).await.expect(201);
    let second = early.hold(&[], &h, &b).await.expect(201);
    early.hold(&[], &h, &a).await.refused(409, "SLOT_TAKEN");
    later.settle(&h.admin).await;
    assert!(late
        .slot_starts(&[], &h, &day.to_string())
        .await
        .contains(&a));
    // Someone else takes slot a after the lapse; slot b stays free.
    late.hold(&[], &h, &a).await.expect(201);

    let patient = json!({"name": "Late Larry", "email": "larry@example.org"});
    late.post(
        "/widget/v1/{tenant}/bookings",
        &[],
        json!({"holdId": first["holdId"], "patient": patient}),
    )
    .await
    .refused(409, "HOLD_EXPIRED");
    let booked = late
        .post(
            "/widget/v1/{tenant}/bookings",
            &[],
            json!({"holdId": second["holdId"], "patient": patient}),
        )
        .await
        .expect(201);
    assert_eq!(booked["start"], b);
}

#[tokio::test]
async fn the_slot_stream_sends_each_day_then_again_when_a_hold_takes_a_slot() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = online_hospital(&deployment, &server, "Streaming Hospital").await;
    let browser = Browser::new(&server, &h.tenant);
    let day = days_ahead(8);
    let slot = slot_at(day, 15);
    server.settle(&h.admin).await;
    let url = format!(
        "{}/widget/v1/{}/slots/stream?service={}&practitioner={}&from={day}&to={day}",
        server.url, h.tenant, h.checkup, h.practitioner
    );
    let response = reqwest::Client::new()
        .get(url)
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);
    let mut response = response;
    let mut buffer = String::new();
    let mut days = Vec::new();
    let mut held = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while days.len() < 2 {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the stream sends the day, then the change")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            if let Some(data) = message
                .strip_prefix("event: day\ndata: ")
                .map(str::trim_end)
            {
                let day: Value = serde_json::from_str(data).unwrap();
                let starts: Vec<&str> = day["slots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["start"].as_str().unwrap())
                    .collect();
                days.push(starts.contains(&slot.as_str()));
            }
        }
        if days.len() == 1 && !held {
            browser.hold(&[], &h, &slot).await.expect(201);
            held = true;
        }
    }
    assert_eq!(
        days,
        vec![true, false],
        "free at first, gone after the hold"
    );
}

/// The starts in one `event: day` message of the slot stream.
async fn next_stream_day(response: &mut reqwest::Response, buffer: &mut String) -> Vec<String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            if let Some(data) = message.strip_prefix("event: day\ndata: ") {
                let day: Value = serde_json::from_str(data.trim_end()).unwrap();
                return day["slots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["start"].as_str().unwrap().to_owned())
                    .collect();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("a day message within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsing_hold_gives_its_slot_back_live_without_any_event() {
    let deployment = Deployment::postgres().await;
    let holder = deployment.start().await;
    // The watching instance's clock runs 56 s ahead: a 1-minute hold made
    // on the other lapses for it about 4 s after it is made.
    let watcher = deployment
        .start_with(ServerOptions {
            clock_offset_secs: 56,
            ..Default::default()
        })
        .await;
    let h = set_up_hospital(&deployment, &holder, "Lapse Hospital").await;
    configure(
        &holder,
        &h.admin,
        json!({"allowedOrigins": [ALLOWED], "patientBooking": true, "holdMinutes": 1}),
    )
    .await;
    watcher.settle(&h.admin).await;
    let day = days_ahead(9);
    let slot = slot_at(day, 13);

    let mut stream = reqwest::Client::new()
        .get(format!(
            "{}/widget/v1/{}/slots/stream?service={}&practitioner={}&from={day}&to={day}",
            watcher.url, h.tenant, h.checkup, h.practitioner
        ))
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    let mut ws = crate::read_side::subscribe(
        &watcher,
        &h.admin,
        "subscription($p: ID!, $s: ID!, $d: NaiveDate!) {
           slotChanges(practitionerIds: [$p], serviceId: $s, from: $d, to: $d) { slots { start } }
         }",
        json!({"p": h.practitioner, "s": h.checkup, "d": day}),
    )
    .await;
    let graphql_has = |payload: &Value| {
        payload["data"]["slotChanges"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| instant(&s["start"]) == local(day, 13, 0))
    };
    assert!(next_stream_day(&mut stream, &mut buffer)
        .await
        .contains(&slot));
    assert!(graphql_has(&crate::read_side::next_payload(&mut ws).await));

    Browser::new(&holder, &h.tenant)
        .hold(&[], &h, &slot)
        .await
        .expect(201);
    assert!(!next_stream_day(&mut stream, &mut buffer)
        .await
        .contains(&slot));
    assert!(!graphql_has(&crate::read_side::next_payload(&mut ws).await));
    // No event comes when the hold lapses: both feeds notice by themselves.
    assert!(next_stream_day(&mut stream, &mut buffer)
        .await
        .contains(&slot));
    assert!(graphql_has(&crate::read_side::next_payload(&mut ws).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_hospital_books_online_and_the_cli_links_to_its_admin_screens() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let output = server.output();
    // The first start says where the widget is; its patients may book there.
    let prefix = format!("Booking widget: {}/widget/v1/", server.url);
    let tenant = output
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_once("/frame"))
        .map(|(tenant, _)| tenant.to_owned())
        .unwrap_or_else(|| panic!("no widget line in:\n{output}"));
    assert!(
        output.contains(&format!("buktor embed-link --tenant {tenant}")),
        "{output}"
    );
    let browser = Browser::new(&server, &tenant);
    let page = browser.get("/widget/v1/{tenant}/frame", &[]).await;
    assert_eq!(page.status, 200);
    let config = browser
        .get("/widget/v1/{tenant}/config", &[])
        .await
        .expect(200);
    assert_eq!(config["patientBooking"], true);
    assert_eq!(config["mode"], "patient");
    assert_eq!(config["tenant"]["name"], "Demo Hospital");

    // `buktor embed-link` prints an admin screen's address with a token that
    // opens a session of the user and role asked for.
    let link = deployment
        .cli(&[
            "embed-link",
            "--tenant",
            &tenant,
            "--user",
            "support-1",
            "--name",
            "Support Desk",
            "--role",
            "auditor",
            "--screen",
            "audit",
            "--base-url",
            &format!("{}/", server.url),
        ])
        .await;
    let (address, token) = link
        .split_once("#token=")
        .unwrap_or_else(|| panic!("no token in {link:?}"));
    assert_eq!(
        address,
        format!("{}/embed/{tenant}/admin/audit", server.url)
    );
    let path = address.strip_prefix(&server.url).unwrap();
    assert_eq!(browser.get(path, &[]).await.status, 200);
    let session = browser
        .post("/embed/v1/session", &[], json!({ "token": token }))
        .await
        .expect(200);
    assert_eq!(
        (&session["user"], &session["role"], &session["name"]),
        (
            &json!("support-1"),
            &json!("auditor"),
            &json!("Support Desk")
        )
    );
    assert_eq!(session["tenant"]["id"], tenant.as_str());

    // A role for the HIS itself, an unknown screen or hospital: refused, no link.
    for (flag, value, says) in [
        ("--role", "his-system", "one of staff, admin, auditor"),
        ("--screen", "billing", "one of appointments, schedules"),
        (
            "--tenant",
            "01a2f0d0-0000-7000-8000-000000000000",
            "no tenant",
        ),
    ] {
        let hospital = if flag == "--tenant" { value } else { &tenant };
        let mut args = vec![
            "embed-link",
            "--tenant",
            hospital,
            "--user",
            "u",
            "--name",
            "N",
        ];
        if flag != "--tenant" {
            args.extend([flag, value]);
        }
        let out = deployment.cli_output(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(out.stdout.is_empty(), "{flag} {value} printed a link");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

/// The anonymous widget refuses instants and dates outside the accepted
/// years (docs/time.md) with 422 problem details naming the field: a hold,
/// a slot search and the slot stream. A hold at `+262142-12-31T23:59:59Z`
/// used to panic the worker, answering nothing to anyone who asked.
#[tokio::test]
async fn the_widget_refuses_instants_and_dates_outside_the_accepted_years() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = online_hospital(&deployment, &server, "Widget Far Future").await;
    let browser = Browser::new(&server, &h.tenant);
    server.settle(&h.admin).await;
    let before = deployment.event_counts(&h.tenant).await;
    for far in crate::time_bounds::FAR_INSTANTS {
        let answer = browser.hold(&[], &h, far).await;
        answer.refused(422, "INVALID_INPUT");
        assert_eq!(answer.body["field"], "start", "{far}");
    }
    let today = days_ahead(0).to_string();
    for far in crate::time_bounds::FAR_DATES {
        let far = far.replace('+', "%2B");
        for path in ["slots", "slots/stream"] {
            let answer = browser
                .get(
                    &format!(
                        "/widget/v1/{{tenant}}/{path}?service={}&practitioner={}&from={today}&to={far}",
                        h.checkup, h.practitioner
                    ),
                    &[],
                )
                .await;
            answer.refused(422, "INVALID_INPUT");
            assert_eq!(answer.body["field"], "to", "{path} to {far}");
        }
    }
    assert_eq!(deployment.event_counts(&h.tenant).await, before);
    // Still serving: the next patient holds a real slot.
    browser
        .hold(&[], &h, &slot_at(days_ahead(4), 9))
        .await
        .expect(201);
}
