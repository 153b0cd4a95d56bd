//! The read side end to end: projections served over GraphQL with
//! read-your-writes, pagination, point-in-time reads and tenant isolation;
//! runners that survive kill -9 and share one PostgreSQL without applying
//! an event twice; rebuild and verify.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::server::*;

const RESCHEDULE: &str = "mutation($id: ID!, $start: DateTime!, $reason: String) {
    rescheduleAppointment(id: $id, start: $start, reason: $reason) { id position }
}";
const CANCEL: &str = "mutation($id: ID!) {
    cancelAppointment(id: $id, reason: \"Feeling better\", cancelledBy: PATIENT) { id position }
}";
const PATIENT: &str = "query($p: String!, $at: String, $first: Int, $after: String, $status: [StatusFilter!]) {
    patientAppointments(patientId: $p, atLeast: $at, first: $first, after: $after, status: $status) {
      nodes { status position appointment { id start history { type } } }
      pageInfo { hasNextPage endCursor }
    }
}";
const AUDIT: &str = "query($a: ID!, $at: String) {
    auditTrail(appointmentId: $a, atLeast: $at) {
      nodes { type version actor { role } source reason position }
    }
}";
const AGENDA: &str = "query($p: ID!, $d: NaiveDate!, $at: String, $asOf: AsOfInput) {
    practitionerSchedule(id: $p, from: $d, to: $d, atLeast: $at, asOf: $asOf) {
      timeZone
      days { date working { start end } free { start end }
             booked { appointmentId start end appointment { patient { hisPatientId } status } } }
    }
}";
const SLOTS: &str = "query($p: ID!, $s: ID!, $d: NaiveDate!, $at: String) {
    availableSlots(practitionerIds: [$p], serviceId: $s, from: $d, to: $d, first: 500, atLeast: $at) {
      nodes { start }
    }
}";

async fn book_for(
    server: &TestServer,
    key: &str,
    h: &Hospital,
    start: chrono::DateTime<chrono::Utc>,
    patient: &str,
) -> (String, String) {
    let data = server
        .gql_ok(
            key,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, start, patient)}),
        )
        .await;
    let b = &data["bookAppointment"];
    (
        b["id"].as_str().unwrap().to_owned(),
        b["position"].as_str().unwrap().to_owned(),
    )
}

fn starts(slots: &Value) -> Vec<String> {
    slots["availableSlots"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| iso(instant(&s["start"])))
        .collect()
}

async fn answers_from_the_read_models(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Read Hospital").await;
    let key = h.admin.as_str();
    let day = days_ahead(5);
    let (first, first_at) = book_for(&server, key, &h, local(day, 9, 0), "PAT-7").await;
    let (moved, _) = book_for(&server, key, &h, local(day, 10, 0), "PAT-7").await;
    let (cancelled, _) = book_for(&server, key, &h, local(day, 11, 0), "PAT-7").await;
    let (_, _) = book_for(&server, key, &h, local(day, 12, 0), "PAT-8").await;
    server
        .gql_ok(
            key,
            RESCHEDULE,
            json!({"id": moved, "start": iso(local(day, 14, 0)), "reason": "Clinic running late"}),
        )
        .await;
    let at = server.gql_ok(key, CANCEL, json!({"id": cancelled})).await["cancelAppointment"]
        ["position"]
        .clone();

    // Read-your-writes: with the cancellation's position the lists show it.
    let history = server
        .gql_ok(key, PATIENT, json!({"p": "PAT-7", "at": at}))
        .await;
    let nodes = history["patientAppointments"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    let seen: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n["appointment"]["id"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (first.clone(), "BOOKED".to_owned()),
            (cancelled.clone(), "CANCELLED".to_owned()),
            (moved.clone(), "BOOKED".to_owned()),
        ],
        "sorted by start: 09:00, 11:00, then the one moved to 14:00"
    );
    // Each row's history, loaded for the whole page in one read.
    let histories: Vec<Vec<&str>> = nodes
        .iter()
        .map(|n| {
            n["appointment"]["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["type"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        histories,
        vec![
            vec!["AppointmentBooked"],
            vec!["AppointmentBooked", "AppointmentCancelled"],
            vec!["AppointmentBooked", "AppointmentRescheduled"],
        ]
    );
    let only_cancelled = server
        .gql_ok(key, PATIENT, json!({"p": "PAT-7", "status": ["CANCELLED"]}))
        .await;
    assert_eq!(
        only_cancelled["patientAppointments"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Pages of one, chained by their cursors, cover the list exactly once.
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let page = server
            .gql_ok(
                key,
                PATIENT,
                json!({"p": "PAT-7", "first": 1, "after": after}),
            )
            .await;
        let conn = &page["patientAppointments"];
        for n in conn["nodes"].as_array().unwrap() {
            paged.push(n["appointment"]["id"].as_str().unwrap().to_owned());
        }
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(paged, vec![first.clone(), cancelled.clone(), moved.clone()]);

    // The audit trail: who, from where, why.
    let trail = server.gql_ok(key, AUDIT, json!({"a": moved})).await;
    let entries = trail["auditTrail"]["nodes"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{trail}");
    assert_eq!(entries[0]["type"], "AppointmentBooked");
    assert_eq!(entries[1]["type"], "AppointmentRescheduled");
    assert_eq!(entries[1]["reason"], "Clinic running late");
    assert_eq!(entries[1]["actor"]["role"], "admin");
    assert_eq!(entries[1]["source"], "admin");

    // The agenda: bookings (with their appointments, loaded in one batch)
    // and the free time around them.
    let agenda = server
        .gql_ok(key, AGENDA, json!({"p": h.practitioner, "d": day}))
        .await;
    let days = agenda["practitionerSchedule"]["days"].as_array().unwrap();
    let booked: Vec<(String, String)> = days[0]["booked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                iso(instant(&b["start"])),
                b["appointment"]["patient"]["hisPatientId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        booked,
        vec![
            (iso(local(day, 9, 0)), "PAT-7".to_owned()),
            (iso(local(day, 12, 0)), "PAT-8".to_owned()),
            (iso(local(day, 14, 0)), "PAT-7".to_owned()),
        ]
    );
    let free: Vec<(String, String)> = days[0]["free"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (iso(instant(&f["start"])), iso(instant(&f["end"]))))
        .collect();
    assert!(
        free.contains(&(iso(local(day, 9, 15)), iso(local(day, 12, 0)))),
        "{free:?}"
    );

    // Slots: the cancelled and the vacated times are offered again, the taken ones not.
    let slots = starts(
        &server
            .gql_ok(
                key,
                SLOTS,
                json!({"p": h.practitioner, "s": h.checkup, "d": day}),
            )
            .await,
    );
    for free in [local(day, 10, 0), local(day, 11, 0)] {
        assert!(slots.contains(&iso(free)), "{} should be free", iso(free));
    }
    for taken in [local(day, 9, 0), local(day, 12, 0), local(day, 14, 0)] {
        assert!(
            !slots.contains(&iso(taken)),
            "{} should be taken",
            iso(taken)
        );
    }

    // Point in time: as of the first booking, one booking and no cancellation.
    let then = server
        .gql_ok(
            key,
            "query($a: ID!, $c: ID!, $at: String!) {
               first: appointment(id: $a, asOf: {position: $at}) { status history { type } }
               cancelled: appointment(id: $c, asOf: {position: $at}) { status }
               now: appointment(id: $c) { status }
             }",
            json!({"a": first, "c": cancelled, "at": first_at}),
        )
        .await;
    assert_eq!(
        then["first"],
        json!({"status": "BOOKED", "history": [{"type": "AppointmentBooked"}]})
    );
    assert!(then["cancelled"].is_null(), "not booked yet then: {then}");
    assert_eq!(then["now"]["status"], "CANCELLED");
    let agenda_then = server
        .gql_ok(
            key,
            AGENDA,
            json!({"p": h.practitioner, "d": day, "asOf": {"position": first_at}}),
        )
        .await;
    let booked_then = agenda_then["practitionerSchedule"]["days"][0]["booked"]
        .as_array()
        .unwrap();
    assert_eq!(booked_then.len(), 1, "{agenda_then}");
    assert_eq!(booked_then[0]["appointmentId"], json!(first));
    let by_time = server
        .gql_ok(
            key,
            "query($c: ID!) { appointment(id: $c, asOf: {time: \"2000-01-01T00:00:00Z\"}) { id } }",
            json!({"c": cancelled}),
        )
        .await;
    assert!(by_time["appointment"].is_null());

    // Bad arguments get typed errors.
    for (query, vars, field) in [
        (PATIENT, json!({"p": "PAT-7", "at": "yesterday"}), "atLeast"),
        (PATIENT, json!({"p": "PAT-7", "first": 100000}), "first"),
        (PATIENT, json!({"p": "PAT-7", "after": "nonsense"}), "after"),
        (PATIENT, json!({"p": ""}), "patientId"),
        (
            AGENDA,
            json!({"p": h.practitioner, "d": day, "asOf": {"position": "1.1", "time": "2026-01-01T00:00:00Z"}}),
            "asOf",
        ),
    ] {
        let r = server.gql(key, query, vars).await;
        assert_eq!(error_code(&r), Some("INVALID_INPUT"), "{r}");
        assert_eq!(error_field(&r), Some(field), "{r}");
    }
    let too_far = server
        .gql(key, PATIENT, json!({"p": "PAT-7", "at": "999999999.1"}))
        .await;
    assert_eq!(error_code(&too_far), Some("NOT_CAUGHT_UP"), "{too_far}");

    // Limits: a page of 500 asked five times over costs too much.
    let fan_out = format!(
        "{{ {} }}",
        (0..5)
            .map(|i| format!("s{i}: availableSlots(specialty: \"x\", from: \"2030-01-01\", to: \"2030-01-01\", first: 500) {{ nodes {{ start end remaining localStart }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = server.gql(key, &fan_out, json!({})).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{r}"
    );

    // Practitioner pages, filtered by specialty and activity, chained by
    // cursors: every match once, in registration order.
    let mut cardiologists = Vec::new();
    let mut last_at = String::new();
    for i in 0..7 {
        let specialty = if i % 2 == 0 {
            "Cardiology"
        } else {
            "Dermatology"
        };
        let r = server
            .gql_ok(
                key,
                "mutation($input: PractitionerInput!) { registerPractitioner(input: $input) { id position } }",
                json!({"input": {"name": format!("Dr. {i}"), "specialty": specialty}}),
            )
            .await;
        let id = r["registerPractitioner"]["id"].as_str().unwrap().to_owned();
        last_at = r["registerPractitioner"]["position"]
            .as_str()
            .unwrap()
            .to_owned();
        if i % 2 == 0 {
            cardiologists.push(id);
        }
    }
    let retired = cardiologists.remove(1);
    let r = server
        .gql_ok(
            key,
            "mutation($p: ID!) { setPractitionerActive(id: $p, active: false) { position } }",
            json!({"p": retired}),
        )
        .await;
    last_at = r["setPractitionerActive"]["position"]
        .as_str()
        .map_or(last_at, str::to_owned);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = server
            .gql_ok(
                key,
                "query($after: String, $at: String) {
                   practitioners(first: 2, after: $after, specialty: \"cardiology\", atLeast: $at) {
                     nodes { id } pageInfo { hasNextPage endCursor }
                   }
                 }",
                json!({"after": after, "at": last_at}),
            )
            .await;
        let conn = &page["practitioners"];
        for n in conn["nodes"].as_array().unwrap() {
            paged.push(n["id"].as_str().unwrap().to_owned());
        }
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(paged, cardiologists, "active cardiologists, two per page");

    // Another hospital sees none of it.
    let other = set_up_hospital(&deployment, &server, "Other Hospital").await;
    let o = other.admin.as_str();
    let theirs = server
        .gql_ok(o, PATIENT, json!({"p": "PAT-7", "at": at}))
        .await;
    assert_eq!(theirs["patientAppointments"]["nodes"], json!([]));
    let theirs = server.gql_ok(o, AUDIT, json!({"a": moved})).await;
    assert_eq!(theirs["auditTrail"]["nodes"], json!([]));
    let theirs = server
        .gql_ok(o, AGENDA, json!({"p": h.practitioner, "d": day}))
        .await;
    assert!(theirs["practitionerSchedule"].is_null());
    let theirs = server
        .gql(
            o,
            SLOTS,
            json!({"p": h.practitioner, "s": h.checkup, "d": day}),
        )
        .await;
    assert_eq!(error_code(&theirs), Some("SERVICE_NOT_FOUND"), "{theirs}");
    server.settle(o).await;
    let listed = server
        .gql_ok(o, "{ practitioners { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        listed["practitioners"]["nodes"],
        json!([{"id": other.practitioner}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_models_answer_with_read_your_writes_on_postgresql() {
    answers_from_the_read_models(Deployment::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_models_answer_with_read_your_writes_on_the_embedded_store() {
    answers_from_the_read_models(Deployment::embedded()).await;
}

/// Each live projection's folded event count for the tenant.
async fn applied_counts(deployment: &Deployment, tenant: &str) -> BTreeMap<String, i64> {
    deployment
        .query_pairs(
            tenant,
            "SELECT c.projection, c.events FROM projection_checkpoints c \
             JOIN projection_generations g ON g.projection = c.projection AND g.generation = c.generation \
             WHERE g.status = 'live' AND c.tenant_id = {T}",
        )
        .await
        .into_iter()
        .map(|(p, n)| (p, n.parse().unwrap()))
        .collect()
}

/// A digest of every live document, to compare two rebuilds.
async fn live_documents(deployment: &Deployment, tenant: &str) -> Vec<(String, String)> {
    let doc = if deployment.database_url().is_some() {
        "d.doc::text"
    } else {
        "d.doc"
    };
    deployment
        .query_pairs(
            tenant,
            &format!(
                "SELECT d.projection || '/' || d.key, {doc} FROM projection_docs d \
                 JOIN projection_generations g ON g.projection = d.projection AND g.generation = d.generation \
                 WHERE g.status = 'live' AND d.tenant_id = {{T}} ORDER BY 1"
            ),
        )
        .await
}

async fn assert_every_event_applied_once(deployment: &Deployment, tenant: &str) {
    let events: i64 = deployment.event_counts(tenant).await.values().sum();
    let applied = applied_counts(deployment, tenant).await;
    assert_eq!(applied.len(), 4, "{applied:?}");
    for (projection, n) in applied {
        assert_eq!(n, events, "{projection} folded {n} events of {events}");
    }
}

fn assert_verified(output: &str) {
    for projection in ["catalog", "calendar", "appointments", "audit"] {
        assert!(
            output.contains(&format!("{projection}: OK")),
            "verify did not pass for {projection}:\n{output}"
        );
    }
}

/// Books `n` appointments at once, spread over `servers`; returns how many
/// succeeded and the last position among them.
async fn burst(
    servers: &[&TestServer],
    key: &str,
    h: &Hospital,
    from_day: u64,
    n: usize,
) -> (usize, Option<String>) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let server = servers[i % servers.len()];
        let day = days_ahead(from_day + (i / 40) as u64);
        let k = 32 + (i % 40) as u32;
        let start = local(day, k / 4, (k % 4) * 15);
        let input = book_input(
            &h.practitioner,
            &h.checkup,
            start,
            &format!("PAT-{}", i % 17),
        );
        tasks.push(async move { server.gql(key, BOOK, json!({"input": input})).await });
    }
    let positions: Vec<(i64, i64, String)> = futures::future::join_all(tasks)
        .await
        .iter()
        .filter_map(|r| r["data"]["bookAppointment"]["position"].as_str())
        .map(|p| {
            let (tx, seq) = p.split_once('.').unwrap();
            (tx.parse().unwrap(), seq.parse().unwrap(), p.to_owned())
        })
        .collect();
    let last = positions.iter().max().map(|(_, _, p)| p.clone());
    (positions.len(), last)
}

async fn survives_kill_9_and_equals_a_rebuild(deployment: Deployment) {
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Crash Hospital").await;
    let key = h.admin.clone();
    // Kill the server in the middle of a burst of bookings: once the first
    // 30 are acknowledged, while the others are in flight and its runners
    // are applying what was written.
    {
        use futures::StreamExt;
        let mut in_flight: futures::stream::FuturesUnordered<_> = (0..200usize)
            .map(|i| {
                let day = days_ahead(3 + (i / 40) as u64);
                let k = 32 + (i % 40) as u32;
                let input = book_input(
                    &h.practitioner,
                    &h.checkup,
                    local(day, k / 4, (k % 4) * 15),
                    "PAT-K",
                );
                let server = &server;
                let key = key.as_str();
                async move { server.gql(key, BOOK, json!({"input": input})).await }
            })
            .collect();
        let mut acknowledged = 0;
        while let Some(r) = in_flight.next().await {
            if r["data"]["bookAppointment"]["id"].is_string() {
                acknowledged += 1;
            }
            if acknowledged == 30 {
                break;
            }
        }
        assert_eq!(acknowledged, 30, "the burst did not get going");
        assert!(
            !in_flight.is_empty(),
            "every booking finished before the kill"
        );
    }
    server.kill9().await;
    server.restart().await;
    server.settle(&key).await;
    assert_every_event_applied_once(&deployment, &h.tenant).await;
    let verified = deployment.cli(&["projections", "verify", "--quiet"]).await;
    assert_verified(&verified);

    // Two rebuilds give identical read models, equal to what the runner built.
    let before = live_documents(&deployment, &h.tenant).await;
    assert!(!before.is_empty());
    let out = deployment.cli(&["projections", "rebuild", "--quiet"]).await;
    assert!(out.contains("appointments: rebuilt generation 2"), "{out}");
    let first = live_documents(&deployment, &h.tenant).await;
    deployment
        .cli(&["projections", "rebuild", "appointments", "--quiet"])
        .await;
    let second = live_documents(&deployment, &h.tenant).await;
    assert_eq!(
        first, before,
        "a rebuild differs from what the runner built"
    );
    assert_eq!(second, first, "two rebuilds differ");

    // The server follows the new generations: a new booking shows up.
    let (id, at) = book_for(&server, &key, &h, local(days_ahead(40), 9, 0), "PAT-NEW").await;
    let mine = server
        .gql_ok(&key, PATIENT, json!({"p": "PAT-NEW", "at": at}))
        .await;
    assert_eq!(
        mine["patientAppointments"]["nodes"][0]["appointment"]["id"],
        json!(id)
    );
    assert_every_event_applied_once(&deployment, &h.tenant).await;
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_survive_kill_9_and_equal_a_rebuild_on_postgresql() {
    survives_kill_9_and_equals_a_rebuild(Deployment::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_survive_kill_9_and_equal_a_rebuild_on_the_embedded_store() {
    survives_kill_9_and_equals_a_rebuild(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgresql_instances_never_apply_an_event_twice_and_one_takes_over() {
    let deployment = Deployment::postgres().await;
    let mut a = deployment.start().await;
    let b = deployment.start().await;
    let h = set_up_hospital(&deployment, &a, "Shared Hospital").await;
    let key = h.admin.clone();
    let (booked, _) = burst(&[&a, &b], &key, &h, 3, 120).await;
    assert!(booked > 100, "only {booked} of 120 bookings succeeded");
    b.settle(&key).await;
    a.settle(&key).await;
    assert_every_event_applied_once(&deployment, &h.tenant).await;

    // Whichever instance led, after a kill -9 of `a` the survivor carries on.
    a.kill9().await;
    let (id, at) = book_for(&b, &key, &h, local(days_ahead(50), 9, 0), "PAT-AFTER").await;
    let seen = b
        .gql_ok(&key, PATIENT, json!({"p": "PAT-AFTER", "at": at}))
        .await;
    assert_eq!(
        seen["patientAppointments"]["nodes"][0]["appointment"]["id"],
        json!(id)
    );
    assert_every_event_applied_once(&deployment, &h.tenant).await;
    assert_verified(&deployment.cli(&["projections", "verify", "--quiet"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_in_without_a_gap_in_answers() {
    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Busy Hospital").await;
    let key = h.admin.clone();
    let (booked, last) = burst(&[&server], &key, &h, 3, 60).await;
    server.settle(&key).await;
    let count = |v: &Value| v["patientAppointments"]["nodes"].as_array().unwrap().len();
    let baseline = count(
        &server
            .gql_ok(
                &key,
                PATIENT,
                json!({"p": "PAT-0", "first": 500, "at": last}),
            )
            .await,
    );
    assert!(baseline > 0 && booked > 50);
    // What a rebuild killed half-way would leave: a generation being built.
    let (db, connection) =
        tokio_postgres::connect(deployment.database_url().unwrap(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    db.batch_execute(
        "INSERT INTO projection_generations (projection, generation, status) VALUES ('audit', 99, 'building');
         INSERT INTO projection_docs (projection, generation, tenant_id, key, doc)
           SELECT 'audit', 99, id, 'left-over', '{}' FROM tenants",
    )
    .await
    .unwrap();
    let rebuild = deployment.cli(&["projections", "rebuild", "--quiet"]);
    tokio::pin!(rebuild);
    let mut reads = 0;
    loop {
        tokio::select! {
            out = &mut rebuild => {
                assert!(out.contains("catalog: rebuilt"), "{out}");
                break;
            }
            r = server.gql(&key, PATIENT, json!({"p": "PAT-0", "first": 500})) => {
                assert!(r.get("errors").is_none(), "{r}");
                assert_eq!(count(&r["data"]), baseline, "a read during the rebuild saw a partial model");
                reads += 1;
            }
        }
    }
    assert!(reads > 0);
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM projection_generations WHERE generation = 99) \
                  + (SELECT count(*) FROM projection_docs WHERE generation = 99)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the rebuild left the dead one's generation behind");
    assert_eq!(
        count(
            &server
                .gql_ok(&key, PATIENT, json!({"p": "PAT-0", "first": 500}))
                .await
        ),
        baseline
    );
}

#[tokio::test]
async fn the_checked_in_schema_is_what_the_server_serves() {
    let deployment = Deployment::embedded();
    let exported = deployment.cli(&["graphql", "schema"]).await;
    let checked_in = include_str!("../../schema.graphql");
    assert!(
        exported.trim() == checked_in.trim(),
        "schema.graphql is stale: run `cargo run -- graphql schema > schema.graphql`"
    );
}

/// A graphql-transport-ws client: connects, authenticates in
/// `connection_init`, subscribes, and yields each `next` payload.
pub(crate) async fn subscribe(
    server: &TestServer,
    key: &str,
    query: &str,
    variables: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/graphql", server.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {key}")}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    loop {
        let msg = ws.next().await.expect("an ack").unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "connection_ack", "{v}");
            break;
        }
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

pub(crate) async fn next_payload(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "next", "{v}");
            return v["payload"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_changes_show_a_booking_and_a_cancellation_live() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Live Hospital").await;
    server.settle(&h.admin).await;
    let day = days_ahead(4);
    let mut ws = subscribe(
        &server,
        &h.admin,
        "subscription($p: [ID!]!, $s: ID, $d: NaiveDate!) {
           slotChanges(practitionerIds: $p, serviceId: $s, from: $d, to: $d) {
             practitionerId date position slots { start }
           }
         }",
        json!({"p": [h.practitioner], "s": h.checkup, "d": day}),
    )
    .await;
    let starts_of = |payload: &Value| -> Vec<String> {
        payload["data"]["slotChanges"]["slots"]
            .as_array()
            .unwrap_or_else(|| panic!("slots in {payload}"))
            .iter()
            .map(|s| iso(instant(&s["start"])))
            .collect()
    };
    let nine = iso(local(day, 9, 0));
    let first = next_payload(&mut ws).await;
    assert_eq!(first["data"]["slotChanges"]["date"], json!(day));
    assert!(starts_of(&first).contains(&nine), "{first}");

    let (id, _) = book_for(&server, &h.admin, &h, local(day, 9, 0), "PAT-LIVE").await;
    let after_booking = next_payload(&mut ws).await;
    assert!(
        !starts_of(&after_booking).contains(&nine),
        "{after_booking}"
    );
    assert_eq!(starts_of(&after_booking).len(), starts_of(&first).len() - 1);

    server.gql_ok(&h.admin, CANCEL, json!({"id": id})).await;
    let after_cancel = next_payload(&mut ws).await;
    assert_eq!(starts_of(&after_cancel), starts_of(&first));

    // Another hospital's bookings of the same kind send nothing here, and
    // its key cannot watch this practitioner.
    let other = set_up_hospital(&deployment, &server, "Other Live Hospital").await;
    book_for(&server, &other.admin, &other, local(day, 10, 0), "PAT-X").await;
    let mut theirs = subscribe(
        &server,
        &other.admin,
        "subscription($p: [ID!]!, $d: NaiveDate!) {
           slotChanges(practitionerIds: $p, from: $d, to: $d) { slots { start } }
         }",
        json!({"p": [h.practitioner], "d": day}),
    )
    .await;
    let seen = next_payload(&mut theirs).await;
    assert_eq!(seen["data"]["slotChanges"]["slots"], json!([]), "{seen}");
    book_for(&server, &h.admin, &h, local(day, 11, 0), "PAT-LIVE-2").await;
    let mine = next_payload(&mut ws).await;
    assert!(!starts_of(&mine).contains(&iso(local(day, 11, 0))));
}

#[tokio::test]
async fn a_practitioners_day_lists_every_appointment_once_where_it_is_now_whatever_its_status() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Agenda Hospital").await;
    let (day, next) = (days_ahead(3), days_ahead(4));
    let (kept, _) = book_for(&server, &h.admin, &h, local(day, 9, 0), "P-1").await;
    let (cancelled, _) = book_for(&server, &h.admin, &h, local(day, 10, 0), "P-2").await;
    let (moved, _) = book_for(&server, &h.admin, &h, local(day, 11, 0), "P-3").await;
    book_for(&server, &h.admin, &h, local(next, 9, 0), "P-4").await;
    server
        .gql_ok(&h.admin, CANCEL, json!({"id": cancelled}))
        .await;
    let at = server
        .gql_ok(
            &h.admin,
            "mutation($id: ID!, $start: DateTime!) { rescheduleAppointment(id: $id, start: $start) { position } }",
            json!({"id": moved, "start": iso(local(day, 12, 0))}),
        )
        .await["rescheduleAppointment"]["position"]
        .clone();
    let list = |status: Value| {
        server.gql_ok(
            &h.admin,
            "query($p: ID!, $d: NaiveDate!, $at: String, $status: [StatusFilter!]) {
               practitionerAppointments(practitionerId: $p, from: $d, to: $d, atLeast: $at, status: $status) {
                 nodes { status appointment { id } }
               }
             }",
            json!({"p": h.practitioner, "d": day, "at": at, "status": status}),
        )
    };
    let ids = |data: &Value| -> Vec<(String, String)> {
        data["practitionerAppointments"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["appointment"]["id"].as_str().unwrap().to_owned(),
                    n["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        ids(&list(Value::Null).await),
        vec![
            (kept.clone(), "BOOKED".to_owned()),
            (cancelled.clone(), "CANCELLED".to_owned()),
            (moved, "BOOKED".to_owned()),
        ]
    );
    assert_eq!(
        ids(&list(json!(["CANCELLED"])).await),
        vec![(cancelled, "CANCELLED".to_owned())]
    );
}
