//! Booking over HTTP, as a client sees it: configuring a practitioner,
//! reading slots, the appointment lifecycle, typed refusals, the audit
//! history, idempotency and DST days. The lifecycle and idempotency run on
//! both stores.
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appointment_goes_through_its_whole_lifecycle_on_the_embedded_store() {
    whole_lifecycle(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appointment_goes_through_its_whole_lifecycle_on_postgresql() {
    whole_lifecycle(Deployment::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_applies_once_on_the_embedded_store() {
    idempotency(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_applies_once_on_postgresql() {
    idempotency(Deployment::postgres().await).await;
}

const APPOINTMENT: &str = "query($id: ID!) {
    appointment(id: $id) {
      id practitionerId serviceId start end status note
      patient { hisPatientId name phone email }
      cancellation { reason cancelledBy }
    }
}";

const HISTORY: &str = "query($id: ID!) {
    appointment(id: $id) {
      history { type version actor { id role } source remoteAddr correlationId }
    }
}";

const RESCHEDULE: &str = "mutation($id: ID!, $start: DateTime!, $reason: String) {
    rescheduleAppointment(id: $id, start: $start, reason: $reason) { id }
}";

const CANCEL: &str = "mutation($id: ID!, $reason: String!, $by: CancelledByInput!, $key: String) {
    cancelAppointment(id: $id, reason: $reason, cancelledBy: $by, idempotencyKey: $key) { id position events }
}";

const CHECK_IN: &str = "mutation($id: ID!) { checkInAppointment(id: $id) { id } }";
const COMPLETE: &str = "mutation($id: ID!) { completeAppointment(id: $id) { id } }";
const NO_SHOW: &str = "mutation($id: ID!) { markNoShow(id: $id) { id } }";

const ADD_EXCEPTION: &str = "mutation($p: ID!, $input: ScheduleExceptionInput!) {
    addScheduleException(practitionerId: $p, input: $input) { id }
}";

/// Local wall-clock times on `day`, every 15 minutes from `first` to `last` inclusive.
fn quarter_hours(day: NaiveDate, first: (u32, u32), last: (u32, u32)) -> Vec<DateTime<Utc>> {
    let (start, end) = (local(day, first.0, first.1), local(day, last.0, last.1));
    let mut out = Vec::new();
    let mut t = start;
    while t <= end {
        out.push(t);
        t += Duration::minutes(15);
    }
    out
}

fn without(slots: &[DateTime<Utc>], taken: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    slots
        .iter()
        .copied()
        .filter(|s| !taken.contains(s))
        .collect()
}

async fn appointment(server: &TestServer, key: &str, id: &str) -> Value {
    server.gql_ok(key, APPOINTMENT, json!({"id": id})).await["appointment"].clone()
}

async fn history(server: &TestServer, key: &str, id: &str) -> Vec<Value> {
    server.gql_ok(key, HISTORY, json!({"id": id})).await["appointment"]["history"]
        .as_array()
        .expect("a history")
        .clone()
}

fn types(history: &[Value]) -> Vec<&str> {
    history
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect()
}

async fn whole_lifecycle(deployment: Deployment) {
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Lifecycle Hospital").await;
    let staff = deployment.create_api_key(&tenant, "staff").await;

    // A practitioner is registered and updated.
    let registered = server
        .gql_ok(
            &admin,
            "mutation($input: PractitionerInput!) { registerPractitioner(input: $input) { id events } }",
            json!({"input": {
                "name": "Dr. Amira Haddad", "specialty": "General Practice",
                "department": "Outpatient Clinic A", "location": "Main building", "externalId": "HIS-DR-7",
            }}),
        )
        .await;
    let p = registered["registerPractitioner"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(registered["registerPractitioner"]["events"], 1);
    server
        .gql_ok(
            &admin,
            "mutation($id: ID!, $input: PractitionerInput!) { updatePractitioner(id: $id, input: $input) { id } }",
            json!({"id": p, "input": {
                "name": "Dr. Amira Haddad", "specialty": "Cardiology",
                "department": "Heart Centre", "location": "Main building", "externalId": "HIS-DR-7",
            }}),
        )
        .await;
    let practitioner = server
        .gql_ok(
            &admin,
            "query($id: ID!) { practitioner(id: $id) { id name specialty department location externalId active } }",
            json!({"id": p}),
        )
        .await;
    assert_eq!(
        practitioner["practitioner"],
        json!({"id": p, "name": "Dr. Amira Haddad", "specialty": "Cardiology",
               "department": "Heart Centre", "location": "Main building",
               "externalId": "HIS-DR-7", "active": true})
    );

    // A 30-minute consultation: at least 60 minutes' notice, at most 30 days ahead.
    let s = define_service(&server, &admin, &p, "Consultation", 30, 60, 30).await;
    let service = server
        .gql_ok(
            &admin,
            "query($id: ID!) { service(id: $id) {
               name durationMinutes bufferBeforeMinutes bufferAfterMinutes capacity
               practitionerIds minNoticeMinutes maxAdvanceDays active } }",
            json!({"id": s}),
        )
        .await;
    assert_eq!(
        service["service"],
        json!({"name": "Consultation", "durationMinutes": 30, "bufferBeforeMinutes": 0,
               "bufferAfterMinutes": 0, "capacity": 1, "practitionerIds": [p],
               "minNoticeMinutes": 60, "maxAdvanceDays": 30, "active": true})
    );

    // Weekly rules: every day 09:00–12:00 on a 15-minute grid.
    server
        .gql_ok(
            &admin,
            "mutation($p: ID!, $rules: [WeeklyRuleInput!]!) { setWeeklyRules(practitionerId: $p, rules: $rules) { id } }",
            json!({"p": p, "rules": [{"weekdays": EVERY_DAY, "start": "09:00", "end": "12:00",
                                      "gridMinutes": 15, "effectiveFrom": "2020-01-01"}]}),
        )
        .await;
    let schedule = server
        .gql_ok(
            &admin,
            "query($p: ID!) { schedule(practitionerId: $p) { timeZone rules { start end gridMinutes weekdays } } }",
            json!({"p": p}),
        )
        .await;
    assert_eq!(
        schedule["schedule"],
        json!({"timeZone": "Europe/Amsterdam", "rules": [
            {"start": "09:00", "end": "12:00", "gridMinutes": 15, "weekdays": EVERY_DAY}]})
    );

    let (day, leave_day, other_day) = (days_ahead(7), days_ahead(8), days_ahead(9));
    let slots = |d: NaiveDate| {
        let (server, admin, p, s) = (&server, &admin, &p, &s);
        async move { slot_starts(server, admin, p, s, d, d).await }
    };
    // 30-minute slots from 09:00 to 11:30, in Amsterdam time.
    let full_day = quarter_hours(day, (9, 0), (11, 30));
    assert_eq!(full_day.len(), 11);
    assert_eq!(slots(day).await, full_day, "the rules' slots");

    // Leave: 10:00–11:00 on one day, the whole of the next.
    let partial = server
        .gql_ok(
            &admin,
            ADD_EXCEPTION,
            json!({"p": p, "input": {"date": day, "kind": "UNAVAILABLE", "start": "10:00",
                                     "end": "11:00", "reason": "Team meeting"}}),
        )
        .await["addScheduleException"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .gql_ok(
            &admin,
            ADD_EXCEPTION,
            json!({"p": p, "input": {"date": leave_day, "kind": "UNAVAILABLE", "reason": "Leave"}}),
        )
        .await;
    let in_meeting = quarter_hours(day, (9, 45), (10, 45));
    assert_eq!(
        slots(day).await,
        without(&full_day, &in_meeting),
        "leave 10:00–11:00"
    );
    assert!(slots(leave_day).await.is_empty(), "a whole day of leave");
    for start in [local(day, 10, 0), local(leave_day, 9, 0)] {
        let code = server
            .gql_err(
                &admin,
                BOOK,
                json!({"input": book_input(&p, &s, start, "P-0")}),
            )
            .await;
        assert_eq!(
            code, "OUTSIDE_AVAILABILITY",
            "booking during leave at {start}"
        );
    }
    // Off the grid or outside the rules is outside availability too.
    for start in [local(day, 9, 5), local(day, 12, 0), local(day, 8, 30)] {
        let code = server
            .gql_err(
                &admin,
                BOOK,
                json!({"input": book_input(&p, &s, start, "P-0")}),
            )
            .await;
        assert_eq!(code, "OUTSIDE_AVAILABILITY", "booking at {start}");
    }
    server
        .gql_ok(
            &admin,
            "mutation($p: ID!, $e: ID!) { removeScheduleException(practitionerId: $p, exceptionId: $e) { id } }",
            json!({"p": p, "e": partial}),
        )
        .await;
    assert_eq!(slots(day).await, full_day, "after the leave was removed");

    // Staff book through the widget; the request id becomes the correlation id.
    let correlation = Uuid::now_v7().to_string();
    let booked = server
        .gql_with_headers(
            &staff,
            BOOK,
            json!({"input": {
                "practitionerId": p, "serviceId": s, "start": iso(local(day, 9, 0)),
                "patient": {"hisPatientId": "HIS-1001", "name": "Grace Hopper",
                            "phone": "+31 20 123 4567", "email": "grace@example.org"},
                "note": "First visit",
            }}),
            &[
                ("x-request-id", correlation.as_str()),
                ("x-buktor-source", "widget"),
            ],
        )
        .await;
    let booked = &data(&booked)["bookAppointment"];
    assert_eq!(booked["events"], 2, "the appointment and the calendar hold");
    let a = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(
        appointment(&server, &admin, &a).await,
        json!({"id": a, "practitionerId": p, "serviceId": s,
               "start": iso(local(day, 9, 0)), "end": iso(local(day, 9, 30)),
               "status": "BOOKED", "note": "First visit",
               "patient": {"hisPatientId": "HIS-1001", "name": "Grace Hopper",
                           "phone": "+31201234567", "email": "grace@example.org"},
               "cancellation": null})
    );
    let nine = local(day, 9, 0);
    let quarter_past = local(day, 9, 15);
    assert_eq!(
        slots(day).await,
        without(&full_day, &[nine, quarter_past]),
        "09:00 is booked and 09:15 would overlap it"
    );
    for start in [nine, quarter_past] {
        let code = server
            .gql_err(
                &admin,
                BOOK,
                json!({"input": book_input(&p, &s, start, "P-2")}),
            )
            .await;
        assert_eq!(code, "SLOT_TAKEN", "a second booking at {start}");
    }

    // Rescheduled within the day, then to another day.
    server
        .gql_ok(
            &admin,
            RESCHEDULE,
            json!({"id": a, "start": iso(local(day, 11, 0)), "reason": "Patient asked"}),
        )
        .await;
    assert_eq!(
        instant(&appointment(&server, &admin, &a).await["start"]),
        local(day, 11, 0)
    );
    assert_eq!(
        slots(day).await,
        without(&full_day, &quarter_hours(day, (10, 45), (11, 15))),
        "the move freed 09:00 and took 11:00"
    );
    server
        .gql_ok(
            &admin,
            RESCHEDULE,
            json!({"id": a, "start": iso(local(other_day, 10, 0))}),
        )
        .await;
    let moved = appointment(&server, &admin, &a).await;
    assert_eq!(instant(&moved["start"]), local(other_day, 10, 0));
    assert_eq!(instant(&moved["end"]), local(other_day, 10, 30));
    assert_eq!(slots(day).await, full_day, "the old day is free again");
    let other_full = quarter_hours(other_day, (9, 0), (11, 30));
    assert_eq!(
        slots(other_day).await,
        without(&other_full, &quarter_hours(other_day, (9, 45), (10, 15)))
    );

    // Cancelled, with a reason and who asked.
    server
        .gql_ok(
            &admin,
            CANCEL,
            json!({"id": a, "reason": "Patient is travelling", "by": "PATIENT"}),
        )
        .await;
    let cancelled = appointment(&server, &admin, &a).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(
        cancelled["cancellation"],
        json!({"reason": "Patient is travelling", "cancelledBy": "PATIENT"})
    );
    assert_eq!(
        slots(other_day).await,
        other_full,
        "a cancellation frees the time"
    );
    for (mutation, vars) in [
        (CHECK_IN, json!({"id": a})),
        (RESCHEDULE, json!({"id": a, "start": iso(local(day, 9, 0))})),
        (
            CANCEL,
            json!({"id": a, "reason": "again", "by": "HOSPITAL"}),
        ),
    ] {
        assert_eq!(
            server.gql_err(&admin, mutation, vars).await,
            "INVALID_TRANSITION",
            "{mutation} of a cancelled appointment"
        );
    }

    // The history says who did what, through which channel, from where.
    let entries = history(&server, &admin, &a).await;
    assert_eq!(
        types(&entries),
        [
            "AppointmentBooked",
            "AppointmentRescheduled",
            "AppointmentRescheduled",
            "AppointmentCancelled"
        ]
    );
    assert_eq!(
        entries[0],
        json!({"type": "AppointmentBooked", "version": 1,
               "actor": {"id": format!("api-key:{}", key_id(&staff)), "role": "staff"},
               "source": "widget", "remoteAddr": "127.0.0.1", "correlationId": correlation})
    );
    for (i, e) in entries.iter().enumerate().skip(1) {
        assert_eq!(e["version"], i as i64 + 1);
        assert_eq!(
            e["actor"],
            json!({"id": format!("api-key:{}", key_id(&admin)), "role": "admin"})
        );
        assert_eq!(e["source"], "admin");
        assert_eq!(e["remoteAddr"], "127.0.0.1");
        assert_ne!(
            e["correlationId"],
            entries[i - 1]["correlationId"],
            "one request each"
        );
    }

    // Typed refusals, none of which writes anything.
    let before = deployment.event_counts(&tenant).await;
    let unknown = Uuid::now_v7().to_string();
    for (mutation, vars) in [
        (CHECK_IN, json!({"id": unknown})),
        (COMPLETE, json!({"id": unknown})),
        (NO_SHOW, json!({"id": unknown})),
        (
            CANCEL,
            json!({"id": unknown, "reason": "r", "by": "PATIENT"}),
        ),
        (
            RESCHEDULE,
            json!({"id": unknown, "start": iso(local(day, 9, 0))}),
        ),
    ] {
        assert_eq!(
            server.gql_err(&admin, mutation, vars).await,
            "APPOINTMENT_NOT_FOUND",
            "{mutation} of an unknown appointment"
        );
    }
    let now = Utc::now()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    for (start, expected) in [
        (now - Duration::days(1), "IN_THE_PAST"),
        (now + Duration::minutes(30), "INSIDE_MINIMUM_NOTICE"),
        (now + Duration::days(40), "BEYOND_BOOKING_WINDOW"),
    ] {
        let code = server
            .gql_err(
                &admin,
                BOOK,
                json!({"input": book_input(&p, &s, start, "P-3")}),
            )
            .await;
        assert_eq!(code, expected, "booking at {start}");
    }
    assert_eq!(
        deployment.event_counts(&tenant).await,
        before,
        "refusals write nothing"
    );

    // Check-in, completion and no-show need the day to have come: a second
    // server on the same data whose clock reads 09:40 that day.
    let early = book(&server, &admin, &p, &s, local(day, 9, 0)).await;
    let on_time = book(&server, &admin, &p, &s, local(day, 9, 30)).await;
    assert_eq!(
        server
            .gql_err(&admin, CHECK_IN, json!({"id": on_time}))
            .await,
        "CHECK_IN_TOO_EARLY"
    );
    assert_eq!(
        server.gql_err(&admin, NO_SHOW, json!({"id": early})).await,
        "NOT_STARTED_YET"
    );
    let that_morning = deployment
        .start_with(ServerOptions::clock_at(local(day, 9, 40)))
        .await;
    that_morning
        .gql_ok(&staff, CHECK_IN, json!({"id": on_time}))
        .await;
    assert_eq!(
        appointment(&server, &admin, &on_time).await["status"],
        "CHECKED_IN"
    );
    that_morning
        .gql_ok(&staff, COMPLETE, json!({"id": on_time}))
        .await;
    assert_eq!(
        appointment(&server, &admin, &on_time).await["status"],
        "COMPLETED"
    );
    that_morning
        .gql_ok(&staff, NO_SHOW, json!({"id": early}))
        .await;
    assert_eq!(
        appointment(&server, &admin, &early).await["status"],
        "NO_SHOW"
    );
    assert_eq!(
        that_morning
            .gql_err(&staff, COMPLETE, json!({"id": early}))
            .await,
        "INVALID_TRANSITION",
        "a no-show cannot be completed"
    );
    assert_eq!(
        types(&history(&server, &admin, &on_time).await),
        [
            "AppointmentBooked",
            "PatientCheckedIn",
            "AppointmentCompleted"
        ]
    );
    assert_eq!(
        types(&history(&server, &admin, &early).await),
        ["AppointmentBooked", "AppointmentMarkedNoShow"]
    );
}

async fn idempotency(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Idempotent Hospital").await;
    let start = local(days_ahead(5), 14, 0);
    let input = book_input(&h.practitioner, &h.checkup, start, "HIS-77");
    let vars = json!({"input": input, "key": "booking-42"});

    let first = server.gql_ok(&h.admin, BOOK, vars.clone()).await["bookAppointment"].clone();
    let again = server.gql_ok(&h.admin, BOOK, vars.clone()).await["bookAppointment"].clone();
    assert_eq!(again, first, "the repeat answers as the first call did");
    assert!(first["position"].is_string(), "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        types(&history(&server, &h.admin, &id).await),
        ["AppointmentBooked"]
    );
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentBooked")
            .await,
        1
    );
    assert_eq!(deployment.count_events(&h.tenant, "SlotHeld").await, 1);

    // The same key with other content is refused, for any command.
    let other = json!({"input": book_input(&h.practitioner, &h.checkup, start + Duration::minutes(15), "HIS-77"),
                       "key": "booking-42"});
    assert_eq!(
        server.gql_err(&h.admin, BOOK, other).await,
        "IDEMPOTENCY_KEY_REUSED"
    );
    let cancel_with_booking_key =
        json!({"id": id, "reason": "Moved away", "by": "PATIENT", "key": "booking-42"});
    assert_eq!(
        server
            .gql_err(&h.admin, CANCEL, cancel_with_booking_key)
            .await,
        "IDEMPOTENCY_KEY_REUSED"
    );
    assert_eq!(
        deployment
            .count_events(&h.tenant, "AppointmentBooked")
            .await,
        1
    );
    let free = slot_starts(
        &server,
        &h.admin,
        &h.practitioner,
        &h.checkup,
        days_ahead(5),
        days_ahead(5),
    )
    .await;
    assert!(!free.contains(&start), "the booked slot is taken");
    assert!(
        free.contains(&(start + Duration::minutes(15))),
        "the refused one is still free"
    );

    // A repeated cancellation answers as the first did instead of INVALID_TRANSITION.
    let cancel = json!({"id": id, "reason": "Moved away", "by": "PATIENT", "key": "cancel-42"});
    let cancelled = server.gql_ok(&h.admin, CANCEL, cancel.clone()).await;
    let repeated = server.gql_ok(&h.admin, CANCEL, cancel).await;
    assert_eq!(repeated, cancelled);
    assert_eq!(
        types(&history(&server, &h.admin, &id).await),
        ["AppointmentBooked", "AppointmentCancelled"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amsterdam_dst_days_have_no_missing_hour_slot_and_no_duplicate_slot() {
    let deployment = Deployment::embedded();
    // The server's clock reads 2027-03-21 so that both DST days are bookable, whatever today is.
    let clock = Utc.with_ymd_and_hms(2027, 3, 21, 0, 0, 0).unwrap();
    let server = deployment.start_with(ServerOptions::clock_at(clock)).await;
    let h = set_up_hospital(&deployment, &server, "DST Hospital").await;
    let slots_on = |d: NaiveDate| {
        let (server, h) = (&server, &h);
        async move { slot_starts(server, &h.admin, &h.practitioner, &h.checkup, d, d).await }
    };
    let hours = |slots: &[DateTime<Utc>]| -> Vec<(u32, u32)> {
        slots
            .iter()
            .map(|s| {
                let l = s.with_timezone(&TIME_ZONE);
                (l.hour(), l.minute())
            })
            .collect()
    };
    let every_quarter_hour = |slots: &[DateTime<Utc>]| {
        slots
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::minutes(15))
    };

    // 28 March 2027: at 02:00 the clocks jump to 03:00.
    let spring = NaiveDate::from_ymd_opt(2027, 3, 28).unwrap();
    let slots = slots_on(spring).await;
    let local_times = hours(&slots);
    assert!(
        local_times.iter().all(|(h, _)| *h != 2),
        "no 02:xx slot: {local_times:?}"
    );
    let at = |h: u32, m: u32| local_times.iter().position(|t| *t == (h, m));
    assert_eq!(
        at(1, 45).map(|i| i + 1),
        at(3, 0),
        "01:45 is followed by 03:00"
    );
    // 00:00–01:45 and 03:00–23:30, laid out in real time without a gap.
    assert_eq!(slots.len(), 8 + 83, "{local_times:?}");
    assert!(every_quarter_hour(&slots));
    let three = Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0).unwrap();
    assert_eq!(local(spring, 3, 0), three);
    book(&server, &h.admin, &h.practitioner, &h.checkup, three).await;
    assert_eq!(slots_on(spring).await.len(), slots.len() - 1);

    // 31 October 2027: 02:00–02:59 happens twice; each slot is a distinct instant.
    let autumn = NaiveDate::from_ymd_opt(2027, 10, 31).unwrap();
    let slots = slots_on(autumn).await;
    let twice: Vec<_> = hours(&slots).into_iter().filter(|(h, _)| *h == 2).collect();
    assert_eq!(twice, [(2, 0), (2, 15), (2, 30), (2, 45)].repeat(2));
    assert_eq!(slots.len(), 99, "24 h 45 min of 15-minute slots");
    assert!(every_quarter_hour(&slots), "distinct and increasing");
}
