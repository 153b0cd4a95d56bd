//! Authentication, tenant isolation, roles, rate limits, secrets in output,
//! and the operational endpoints.
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::*;

/// Every mutation with a valid input for `h`'s data (`appointment` booked,
/// `exception` added): each is refused only for who sends it.
fn every_mutation(
    h: &Hospital,
    appointment: &str,
    exception: &str,
) -> Vec<(&'static str, String, Value)> {
    let (p, s) = (h.practitioner.as_str(), h.checkup.as_str());
    let practitioner = json!({"name": "Dr. Intruder", "specialty": "Mischief"});
    let service = json!({"name": "Intrusion", "durationMinutes": 15, "practitionerIds": [p]});
    let rules = json!([{"weekdays": ["MONDAY"], "start": "09:00", "end": "10:00", "effectiveFrom": "2020-01-01"}]);
    let later = iso(local(days_ahead(12), 9, 0));
    vec![
        ("registerPractitioner",
         "mutation($i: PractitionerInput!) { registerPractitioner(input: $i) { id } }".into(),
         json!({"i": practitioner})),
        ("updatePractitioner",
         "mutation($id: ID!, $i: PractitionerInput!) { updatePractitioner(id: $id, input: $i) { id } }".into(),
         json!({"id": p, "i": practitioner})),
        ("setPractitionerActive",
         "mutation($id: ID!) { setPractitionerActive(id: $id, active: false) { id } }".into(),
         json!({"id": p})),
        ("defineService",
         "mutation($i: ServiceInput!) { defineService(input: $i) { id } }".into(),
         json!({"i": service})),
        ("updateService",
         "mutation($id: ID!, $i: ServiceInput!) { updateService(id: $id, input: $i) { id } }".into(),
         json!({"id": s, "i": service})),
        ("setServiceActive",
         "mutation($id: ID!) { setServiceActive(id: $id, active: false) { id } }".into(),
         json!({"id": s})),
        ("setWeeklyRules",
         "mutation($p: ID!, $r: [WeeklyRuleInput!]!) { setWeeklyRules(practitionerId: $p, rules: $r) { id } }".into(),
         json!({"p": p, "r": rules})),
        ("addScheduleException",
         "mutation($p: ID!, $d: NaiveDate!) { addScheduleException(practitionerId: $p, input: {date: $d, kind: UNAVAILABLE}) { id } }".into(),
         json!({"p": p, "d": days_ahead(30)})),
        ("removeScheduleException",
         "mutation($p: ID!, $e: ID!) { removeScheduleException(practitionerId: $p, exceptionId: $e) { id } }".into(),
         json!({"p": p, "e": exception})),
        ("bookAppointment", BOOK.into(),
         json!({"input": book_input(p, s, local(days_ahead(12), 10, 0), "HIS-X")})),
        ("rescheduleAppointment",
         "mutation($id: ID!, $t: DateTime!) { rescheduleAppointment(id: $id, start: $t) { id } }".into(),
         json!({"id": appointment, "t": later})),
        ("cancelAppointment",
         "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"Because\", cancelledBy: HOSPITAL) { id } }".into(),
         json!({"id": appointment})),
        ("checkInAppointment", "mutation($id: ID!) { checkInAppointment(id: $id) { id } }".into(),
         json!({"id": appointment})),
        ("completeAppointment", "mutation($id: ID!) { completeAppointment(id: $id) { id } }".into(),
         json!({"id": appointment})),
        ("markNoShow", "mutation($id: ID!) { markNoShow(id: $id) { id } }".into(),
         json!({"id": appointment})),
    ]
}

/// What a tenant can see of its own data.
const VIEW: &str = "query($p: ID!, $s: ID!, $a: ID!) {
    practitioners { nodes { id name specialty active } }
    services { nodes { id name durationMinutes active practitionerIds } }
    practitioner(id: $p) { id name }
    service(id: $s) { id name }
    schedule(practitionerId: $p) { rules { start end } exceptions { id date } }
    appointment(id: $a) { id start status history { type } }
}";

/// A hospital with one booked appointment and one exception.
async fn hospital_with_a_booking(
    deployment: &Deployment,
    server: &TestServer,
    name: &str,
) -> (Hospital, String, String) {
    let h = set_up_hospital(deployment, server, name).await;
    let a = book(
        server,
        &h.admin,
        &h.practitioner,
        &h.checkup,
        local(days_ahead(6), 9, 0),
    )
    .await;
    let e = server
        .gql_ok(
            &h.admin,
            "mutation($p: ID!, $d: NaiveDate!) { addScheduleException(practitionerId: $p, input: {date: $d, kind: UNAVAILABLE}) { id } }",
            json!({"p": h.practitioner, "d": days_ahead(40)}),
        )
        .await["addScheduleException"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (h, a, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_api_key_get_401_problem_details() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Guarded Hospital").await;
    let mutation = json!({
        "query": "mutation { registerPractitioner(input: {name: \"Dr. Nobody\", specialty: \"GP\"}) { id } }"
    })
    .to_string();
    let right_id_wrong_secret =
        format!("bk_{}_{}", key_id(&admin).replace('-', ""), "0".repeat(64));
    let unknown_key = format!("bk_{}_{}", Uuid::new_v4().simple(), "a".repeat(64));
    let truncated = admin[..admin.len() - 1].to_owned();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no Authorization header", vec![]),
        (
            "a garbage bearer token",
            vec![("authorization", "Bearer let-me-in".into())],
        ),
        (
            "basic auth",
            vec![("authorization", "Basic YWRtaW46YWRtaW4=".into())],
        ),
        (
            "the key without a scheme",
            vec![("authorization", admin.clone())],
        ),
        (
            "a known key id with a wrong secret",
            vec![("authorization", format!("Bearer {right_id_wrong_secret}"))],
        ),
        (
            "an unknown key",
            vec![("authorization", format!("Bearer {unknown_key}"))],
        ),
        (
            "a truncated key",
            vec![("authorization", format!("Bearer {truncated}"))],
        ),
    ];
    for (what, headers) in cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("content-type", "application/json"));
        let r = server.post_with_headers(&headers, &mutation).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{what}"
        );
        let body = r.json();
        assert_eq!(body["code"], "UNAUTHENTICATED", "{what}: {body}");
        assert_eq!(body["status"], 401, "{what}: {body}");
    }
    assert!(
        deployment.event_counts(&tenant).await.is_empty(),
        "a refused mutation was applied"
    );
    let practitioners = server
        .gql_ok(&admin, "{ practitioners { nodes { id } } }", json!({}))
        .await;
    assert_eq!(practitioners["practitioners"]["nodes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_one_hospital_can_neither_read_nor_change_anything_of_another() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (a_hospital, appointment, exception) =
        hospital_with_a_booking(&deployment, &server, "Hospital A").await;
    let a = &a_hospital;
    // A also used an idempotency key that B will use too.
    let keyed = json!({"input": book_input(&a.practitioner, &a.checkup, local(days_ahead(6), 11, 0), "HIS-A"), "key": "shared-key"});
    server.gql_ok(&a.admin, BOOK, keyed).await;
    let b = set_up_hospital(&deployment, &server, "Hospital B").await;
    let view_of_a = json!({"p": a.practitioner, "s": a.checkup, "a": appointment});
    server.settle(&a.admin).await;
    server.settle(&b.admin).await;
    let a_before = server.gql_ok(&a.admin, VIEW, view_of_a.clone()).await;
    let a_events = deployment.event_counts(&a.tenant).await;

    // B reads nothing of A: single reads are null, lists hold only B's own.
    let seen_by_b = server.gql_ok(&b.admin, VIEW, view_of_a.clone()).await;
    for field in ["practitioner", "service", "schedule", "appointment"] {
        assert!(
            seen_by_b[field].is_null(),
            "B sees A's {field}: {seen_by_b}"
        );
    }
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&seen_by_b["practitioners"]["nodes"]),
        std::slice::from_ref(&b.practitioner)
    );
    let mut b_services = vec![b.checkup.clone(), b.consultation.clone()];
    b_services.sort();
    let mut listed = ids(&seen_by_b["services"]["nodes"]);
    listed.sort();
    assert_eq!(listed, b_services);
    let slots = server
        .gql(
            &b.admin,
            "query($p: ID!, $s: ID!, $d: NaiveDate!) { availableSlots(practitionerIds: [$p], serviceId: $s, from: $d, to: $d) { nodes { start } } }",
            json!({"p": a.practitioner, "s": a.checkup, "d": days_ahead(6)}),
        )
        .await;
    assert_eq!(error_code(&slots), Some("SERVICE_NOT_FOUND"), "{slots}");

    // B changes nothing of A: every mutation on A's ids is "not found". (A
    // service names its practitioners, and A's is checked first.)
    let expected = |mutation: &str| match mutation {
        "registerPractitioner" => None,
        "setServiceActive" => Some("SERVICE_NOT_FOUND"),
        "rescheduleAppointment"
        | "cancelAppointment"
        | "checkInAppointment"
        | "completeAppointment"
        | "markNoShow" => Some("APPOINTMENT_NOT_FOUND"),
        _ => Some("PRACTITIONER_NOT_FOUND"),
    };
    for (mutation, query, vars) in every_mutation(a, &appointment, &exception) {
        let Some(code) = expected(mutation) else {
            continue;
        };
        let response = server.gql(&b.admin, &query, vars).await;
        assert_eq!(
            error_code(&response),
            Some(code),
            "B's {mutation} on A's data: {response}"
        );
    }
    let update_with_bs_practitioner = server
        .gql(
            &b.admin,
            "mutation($id: ID!, $i: ServiceInput!) { updateService(id: $id, input: $i) { id } }",
            json!({"id": a.checkup, "i": {"name": "Taken over", "durationMinutes": 15, "practitionerIds": [b.practitioner]}}),
        )
        .await;
    assert_eq!(
        error_code(&update_with_bs_practitioner),
        Some("SERVICE_NOT_FOUND"),
        "{update_with_bs_practitioner}"
    );
    // B may reuse A's ids and idempotency keys: they name B's own things.
    server
        .gql_ok(
            &b.admin,
            "mutation($i: PractitionerInput!) { registerPractitioner(input: $i) { id } }",
            json!({"i": {"id": a.practitioner, "name": "Dr. Namesake", "specialty": "GP"}}),
        )
        .await;
    let b_keyed = json!({"input": book_input(&b.practitioner, &b.checkup, local(days_ahead(6), 11, 0), "HIS-B"), "key": "shared-key"});
    let b_booking = server.gql_ok(&b.admin, BOOK, b_keyed).await;
    let b_appointment = b_booking["bookAppointment"]["id"].as_str().unwrap();
    assert!(server
        .gql_ok(
            &a.admin,
            "query($id: ID!) { appointment(id: $id) { id } }",
            json!({"id": b_appointment})
        )
        .await["appointment"]
        .is_null());

    assert_eq!(
        server.gql_ok(&a.admin, VIEW, view_of_a).await,
        a_before,
        "A's data changed"
    );
    assert_eq!(
        deployment.event_counts(&a.tenant).await,
        a_events,
        "events were written for A"
    );
    let namesake = server
        .gql_ok(
            &b.admin,
            "query($id: ID!) { practitioner(id: $id) { name } }",
            json!({"id": a.practitioner}),
        )
        .await;
    assert_eq!(namesake["practitioner"]["name"], "Dr. Namesake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_everything_and_changes_nothing() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (h, appointment, exception) =
        hospital_with_a_booking(&deployment, &server, "Audited Hospital").await;
    let auditor = deployment.create_api_key(&h.tenant, "auditor").await;
    let vars = json!({"p": h.practitioner, "s": h.checkup, "a": appointment});
    let before = server.gql_ok(&h.admin, VIEW, vars.clone()).await;
    assert_eq!(
        server.gql_ok(&auditor, VIEW, vars.clone()).await,
        before,
        "the auditor sees what the admin sees"
    );
    assert_eq!(
        server.gql_ok(&auditor, "{ me { role } }", json!({})).await["me"]["role"],
        "auditor"
    );
    let events = deployment.event_counts(&h.tenant).await;

    for (mutation, query, vars) in every_mutation(&h, &appointment, &exception) {
        let response = server.gql(&auditor, &query, vars).await;
        assert_eq!(
            error_code(&response),
            Some("FORBIDDEN"),
            "auditor's {mutation}: {response}"
        );
    }
    assert_eq!(deployment.event_counts(&h.tenant).await, events);
    assert_eq!(server.gql_ok(&h.admin, VIEW, vars).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_book_but_cannot_configure_while_the_his_can_do_both() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (h, appointment, exception) =
        hospital_with_a_booking(&deployment, &server, "Busy Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let his = deployment.create_api_key(&h.tenant, "his-system").await;
    let events = deployment.event_counts(&h.tenant).await;

    let mutations = every_mutation(&h, &appointment, &exception);
    let configures = |m: &str| {
        !matches!(
            m,
            "bookAppointment"
                | "rescheduleAppointment"
                | "cancelAppointment"
                | "checkInAppointment"
                | "completeAppointment"
                | "markNoShow"
        )
    };
    for (mutation, query, vars) in mutations.iter().filter(|m| configures(m.0)) {
        let response = server.gql(&staff, query, vars.clone()).await;
        assert_eq!(
            error_code(&response),
            Some("FORBIDDEN"),
            "staff's {mutation}: {response}"
        );
    }
    assert_eq!(
        deployment.event_counts(&h.tenant).await,
        events,
        "a refused change was written"
    );

    // Staff book, move and cancel.
    for name in [
        "bookAppointment",
        "rescheduleAppointment",
        "cancelAppointment",
    ] {
        let (_, query, vars) = mutations.iter().find(|m| m.0 == name).unwrap();
        server.gql_ok(&staff, query, vars.clone()).await;
    }
    // The HIS configures too, and its bookings are recorded as coming from the HIS API.
    register_practitioner(&server, &his, "Dr. From The HIS").await;
    let booked = book(
        &server,
        &his,
        &h.practitioner,
        &h.checkup,
        local(days_ahead(6), 15, 0),
    )
    .await;
    let history = server
        .gql_ok(
            &h.admin,
            "query($id: ID!) { appointment(id: $id) { history { source actor { role } } } }",
            json!({"id": booked}),
        )
        .await;
    assert_eq!(
        history["appointment"]["history"],
        json!([{"source": "his-api", "actor": {"role": "his-system"}}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_limit_gets_429_until_the_window_ends_and_other_keys_are_unaffected() {
    let deployment = Deployment::embedded();
    let server = deployment
        .start_with(ServerOptions {
            rate_limit: (5, 2),
            ..Default::default()
        })
        .await;
    let (tenant, limited) = deployment.tenant_with_admin("Throttled Hospital").await;
    let other = deployment.create_api_key(&tenant, "staff").await;
    let me = json!({"query": "{ me { role } }"}).to_string();

    for remaining in (0..5).rev() {
        let r = server.post_raw(Some(&limited), me.clone()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let refused = server.post_raw(Some(&limited), me.clone()).await;
    let refused_at = Instant::now();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(refused.json()["code"], "RATE_LIMITED");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(refused.header("ratelimit-limit"), Some("5"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    let reset: u64 = refused
        .header("ratelimit-reset")
        .expect("RateLimit-Reset")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&reset), "RateLimit-Reset: {reset}");

    // Another key of the same hospital is not held back.
    let r = server.post_raw(Some(&other), me.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Retrying while refused neither extends the wait nor lets a mutation through.
    let register = json!({"query": "mutation { registerPractitioner(input: {name: \"Dr. Late\", specialty: \"GP\"}) { id } }"}).to_string();
    let window_over = refused_at + Duration::from_secs(retry_after) + Duration::from_millis(150);
    while Instant::now() + Duration::from_millis(400) < window_over {
        let r = server.post_raw(Some(&limited), register.clone()).await;
        assert_eq!(r.status, 429, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(window_over.saturating_duration_since(Instant::now())).await;
    let r = server.post_raw(Some(&limited), me).await;
    assert_eq!(
        r.status, 200,
        "the key is locked out after its window: {}",
        r.body
    );
    assert_eq!(r.header("ratelimit-remaining"), Some("4"));
    assert!(
        deployment.event_counts(&tenant).await.is_empty(),
        "a refused mutation was applied"
    );
}

/// `url` with a password in it, and the password.
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let password = userinfo.split_once(':').unwrap().1.to_owned();
            (url.to_owned(), password)
        }
        Some((user, host)) => {
            let password = format!("pw-{}", Uuid::new_v4().simple());
            (
                format!(
                    "{scheme}://{user}:{password}@{host}{}",
                    &rest[authority_end..]
                ),
                password,
            )
        }
        None => {
            let password = format!("pw-{}", Uuid::new_v4().simple());
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}password={password}"), password)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_the_database_password_never_appear_in_the_servers_output() {
    // Embedded store, debug logs: keys used well and badly.
    let deployment = Deployment::embedded();
    let verbose = ServerOptions {
        env: vec![("BUKTOR_LOG__FILTER".into(), "debug".into())],
        ..Default::default()
    };
    let mut server = deployment.start_with(verbose.clone()).await;
    let h = set_up_hospital(&deployment, &server, "Discreet Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    book(
        &server,
        &staff,
        &h.practitioner,
        &h.checkup,
        local(days_ahead(4), 9, 0),
    )
    .await;
    server.gql(&staff, "{ nope }", json!({})).await;
    let wrong = format!("bk_{}_{}", key_id(&staff).replace('-', ""), "f".repeat(64));
    let r = server
        .post_raw(
            Some(&wrong),
            json!({"query": "{ me { role } }"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 401);
    let status = server.stop_sigterm().await;
    assert!(status.success(), "{status}");
    let output = server.output();
    assert!(
        output.contains("request done"),
        "the request logs were captured:\n{output}"
    );
    for key in [&h.admin, &staff] {
        assert!(
            !output.contains(key_secret(key)),
            "a key's secret is in the output:\n{output}"
        );
    }
    assert!(
        !output.contains(key_secret(&wrong)),
        "a wrong key's secret is in the output"
    );

    // PostgreSQL with a password in DATABASE_URL, debug logs.
    let pg = Deployment::postgres().await;
    let (url, password) = with_password(pg.database_url().unwrap());
    let mut options = verbose;
    options.env.push(("DATABASE_URL".into(), url.clone()));
    let mut server = pg.start_with(options).await;
    let h = set_up_hospital(&pg, &server, "Discreet PG Hospital").await;
    book(
        &server,
        &h.admin,
        &h.practitioner,
        &h.checkup,
        local(days_ahead(4), 9, 0),
    )
    .await;
    assert!(server.stop_sigterm().await.success());
    let output = server.output();
    assert!(output.contains("using PostgreSQL"), "{output}");
    assert!(
        !output.contains(&password),
        "the database password is in the output:\n{output}"
    );
    assert!(!output.contains(key_secret(&h.admin)));

    // `buktor config` shows the effective configuration with the password masked.
    for url in [url, format!("postgres://buktor:{password}@db.example:5432/buktor?sslmode=disable&password={password}")] {
        let config = pg.cli_with(&["config"], &[("DATABASE_URL", url.as_str())]).await;
        assert!(config.contains("database_url = \""), "{config}");
        assert!(config.contains("***"), "{config}");
        assert!(!config.contains(&password), "`buktor config` shows the password:\n{config}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_respond() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    // A fresh embedded store seeds the demo hospital and prints its admin key once.
    let demo_admin = server.admin_key.clone().expect("the seed's admin key");
    let me = server
        .gql_ok(&demo_admin, "{ me { tenantName role } }", json!({}))
        .await;
    assert_eq!(
        me["me"],
        json!({"tenantName": "Demo Hospital", "role": "admin"})
    );
    let health = server.get("/health").await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = server.get("/ready").await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );

    let h = set_up_hospital(&deployment, &server, "Observed Hospital").await;
    book(
        &server,
        &h.admin,
        &h.practitioner,
        &h.checkup,
        local(days_ahead(2), 9, 0),
    )
    .await;
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    for expected in [
        "buktor_http_requests_total{method=\"POST\",route=\"/graphql\",status=\"200\"}",
        "buktor_commands_total{command=\"bookAppointment\",outcome=\"ok\"} 1",
        "buktor_commands_total{command=\"registerPractitioner\",outcome=\"ok\"}",
        "buktor_store_append_duration_seconds_count",
        "buktor_http_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.body.contains(expected),
            "no {expected} in:\n{}",
            metrics.body
        );
    }

    let missing = server.get("/no/such/route").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");
}
