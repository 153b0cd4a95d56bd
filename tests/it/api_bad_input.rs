//! Bad input, for every mutation and at the HTTP level: each gets an error
//! with a code (and the field, for invalid values), nothing is written, and
//! the server keeps serving.
use std::collections::BTreeSet;

use chrono::Duration;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::*;

/// Every mutation of the schema: each must be covered below.
const MUTATIONS: [&str; 15] = [
    "registerPractitioner",
    "updatePractitioner",
    "setPractitionerActive",
    "defineService",
    "updateService",
    "setServiceActive",
    "setWeeklyRules",
    "addScheduleException",
    "removeScheduleException",
    "bookAppointment",
    "rescheduleAppointment",
    "cancelAppointment",
    "checkInAppointment",
    "completeAppointment",
    "markNoShow",
];

const REGISTER: &str =
    "mutation($i: PractitionerInput!) { registerPractitioner(input: $i) { id } }";
const UPDATE_PRACTITIONER: &str =
    "mutation($id: ID!, $i: PractitionerInput!) { updatePractitioner(id: $id, input: $i) { id } }";
const SET_PRACTITIONER_ACTIVE: &str =
    "mutation($id: ID!, $active: Boolean!) { setPractitionerActive(id: $id, active: $active) { id } }";
const DEFINE: &str = "mutation($i: ServiceInput!) { defineService(input: $i) { id } }";
const UPDATE_SERVICE: &str =
    "mutation($id: ID!, $i: ServiceInput!) { updateService(id: $id, input: $i) { id } }";
const SET_SERVICE_ACTIVE: &str =
    "mutation($id: ID!, $active: Boolean!) { setServiceActive(id: $id, active: $active) { id } }";
const RULES: &str = "mutation($p: ID!, $rules: [WeeklyRuleInput!]!) {
    setWeeklyRules(practitionerId: $p, rules: $rules) { id } }";
const ADD_EXCEPTION: &str = "mutation($p: ID!, $i: ScheduleExceptionInput!) {
    addScheduleException(practitionerId: $p, input: $i) { id position } }";
const REMOVE_EXCEPTION: &str = "mutation($p: ID!, $e: ID!) {
    removeScheduleException(practitionerId: $p, exceptionId: $e) { id } }";
const RESCHEDULE: &str = "mutation($id: ID!, $start: DateTime!, $p: ID, $reason: String) {
    rescheduleAppointment(id: $id, start: $start, practitionerId: $p, reason: $reason) { id } }";
const CANCEL: &str = "mutation($id: ID!, $reason: String!, $by: CancelledByInput!) {
    cancelAppointment(id: $id, reason: $reason, cancelledBy: $by) { id } }";
const CHECK_IN: &str = "mutation($id: ID!) { checkInAppointment(id: $id) { id } }";
const COMPLETE: &str = "mutation($id: ID!) { completeAppointment(id: $id) { id } }";
const NO_SHOW: &str = "mutation($id: ID!) { markNoShow(id: $id) { id } }";

/// Everything a bad request could have changed.
const SNAPSHOT: &str = "query($p: ID!, $a: ID!, $newP: ID!, $newS: ID!, $newA: ID!, $at: String) {
    practitioners(includeInactive: true, atLeast: $at) {
      nodes { id name specialty department location externalId active } }
    services(includeInactive: true, atLeast: $at) {
      nodes { id name durationMinutes bufferBeforeMinutes bufferAfterMinutes capacity
              practitionerIds minNoticeMinutes maxAdvanceDays active } }
    schedule(practitionerId: $p) {
      rules { weekdays start end gridMinutes effectiveFrom effectiveTo }
      exceptions { id date kind start end reason }
    }
    appointment(id: $a) { start end status history { type } }
    newPractitioner: practitioner(id: $newP) { id }
    newService: service(id: $newS) { id }
    newAppointment: appointment(id: $newA) { id }
}";

/// One bad request and the refusal it must get.
struct Case {
    mutation: &'static str,
    what: &'static str,
    query: &'static str,
    variables: Value,
    code: &'static str,
    /// `extensions.field` for INVALID_INPUT.
    field: Option<&'static str>,
}

fn case(
    mutation: &'static str,
    what: &'static str,
    query: &'static str,
    variables: Value,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        mutation,
        what,
        query,
        variables,
        code,
        field,
    }
}

/// `base` with `changes` merged in (a null removes the key).
fn with(base: &Value, changes: Value) -> Value {
    let mut out = base.clone();
    for (k, v) in changes.as_object().expect("an object") {
        if v.is_null() {
            out.as_object_mut().unwrap().remove(k);
        } else {
            out[k] = v.clone();
        }
    }
    out
}

const INVALID: &str = "INVALID_INPUT";
const WRONG_TYPE: &str = "GRAPHQL_VALIDATION_FAILED";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_refuses_bad_input_with_a_code_and_writes_nothing() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Strict Hospital").await;
    let (p, s) = (h.practitioner.as_str(), h.checkup.as_str());
    let day = days_ahead(3);
    let booked_at = local(day, 10, 0);
    let a = book(&server, &h.admin, p, s, booked_at).await;
    let free = local(day, 11, 0);
    let added = server
        .gql_ok(
            &h.admin,
            ADD_EXCEPTION,
            json!({"p": p, "i": {"date": days_ahead(20), "kind": "UNAVAILABLE", "reason": "Leave"}}),
        )
        .await;
    let exception = added["addScheduleException"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The last write before the snapshots: the lists wait for it.
    let setup_position = added["addScheduleException"]["position"].clone();
    let e = exception.as_str();
    let unknown = Uuid::now_v7().to_string();
    let u = unknown.as_str();
    // Ids a failed create must not leave behind.
    let (new_p, new_s, new_a) = (
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
    );

    let practitioner = json!({"id": new_p, "name": "Dr. New", "specialty": "Radiology"});
    let service =
        json!({"id": new_s, "name": "Scan", "durationMinutes": 20, "practitionerIds": [p]});
    let rule = json!({"weekdays": ["MONDAY"], "start": "09:00", "end": "12:00", "effectiveFrom": "2020-01-01"});
    let exception_input = json!({"date": days_ahead(21), "kind": "UNAVAILABLE"});
    let booking = with(&book_input(p, s, free, "HIS-1"), json!({"id": new_a}));
    let long = |n: usize| "x".repeat(n);

    let cases = vec![
        case(
            "registerPractitioner",
            "empty name",
            REGISTER,
            json!({"i": with(&practitioner, json!({"name": ""}))}),
            INVALID,
            Some("name"),
        ),
        case(
            "registerPractitioner",
            "blank specialty",
            REGISTER,
            json!({"i": with(&practitioner, json!({"specialty": "   "}))}),
            INVALID,
            Some("specialty"),
        ),
        case(
            "registerPractitioner",
            "malformed id",
            REGISTER,
            json!({"i": with(&practitioner, json!({"id": "not-a-uuid"}))}),
            INVALID,
            Some("id"),
        ),
        case(
            "registerPractitioner",
            "a name of 201 characters",
            REGISTER,
            json!({"i": with(&practitioner, json!({"name": long(201)}))}),
            INVALID,
            Some("name"),
        ),
        case(
            "registerPractitioner",
            "a control character",
            REGISTER,
            json!({"i": with(&practitioner, json!({"name": "Dr.\u{7} Bell"}))}),
            INVALID,
            Some("name"),
        ),
        case(
            "registerPractitioner",
            "an external id of 101 characters",
            REGISTER,
            json!({"i": with(&practitioner, json!({"externalId": long(101)}))}),
            INVALID,
            Some("externalId"),
        ),
        case(
            "registerPractitioner",
            "a number for a name",
            REGISTER,
            json!({"i": with(&practitioner, json!({"name": 42}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "registerPractitioner",
            "no specialty",
            REGISTER,
            json!({"i": with(&practitioner, json!({"specialty": null}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "registerPractitioner",
            "an id that exists",
            REGISTER,
            json!({"i": with(&practitioner, json!({"id": p}))}),
            "PRACTITIONER_ALREADY_EXISTS",
            None,
        ),
        case(
            "updatePractitioner",
            "unknown id",
            UPDATE_PRACTITIONER,
            json!({"id": u, "i": practitioner}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "updatePractitioner",
            "malformed id",
            UPDATE_PRACTITIONER,
            json!({"id": "123", "i": practitioner}),
            INVALID,
            Some("id"),
        ),
        case(
            "updatePractitioner",
            "empty name",
            UPDATE_PRACTITIONER,
            json!({"id": p, "i": with(&practitioner, json!({"name": ""}))}),
            INVALID,
            Some("name"),
        ),
        case(
            "setPractitionerActive",
            "unknown id",
            SET_PRACTITIONER_ACTIVE,
            json!({"id": u, "active": false}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "setPractitionerActive",
            "a string for a boolean",
            SET_PRACTITIONER_ACTIVE,
            json!({"id": p, "active": "no"}),
            WRONG_TYPE,
            None,
        ),
        case(
            "setPractitionerActive",
            "malformed id",
            SET_PRACTITIONER_ACTIVE,
            json!({"id": "dr-1", "active": false}),
            INVALID,
            Some("id"),
        ),
        case(
            "defineService",
            "zero duration",
            DEFINE,
            json!({"i": with(&service, json!({"durationMinutes": 0}))}),
            INVALID,
            Some("durationMinutes"),
        ),
        case(
            "defineService",
            "capacity 0",
            DEFINE,
            json!({"i": with(&service, json!({"capacity": 0}))}),
            INVALID,
            Some("capacity"),
        ),
        case(
            "defineService",
            "no practitioner",
            DEFINE,
            json!({"i": with(&service, json!({"practitionerIds": []}))}),
            INVALID,
            Some("practitionerIds"),
        ),
        case(
            "defineService",
            "an unknown practitioner",
            DEFINE,
            json!({"i": with(&service, json!({"practitionerIds": [u]}))}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "defineService",
            "a malformed practitioner id",
            DEFINE,
            json!({"i": with(&service, json!({"practitionerIds": ["nope"]}))}),
            INVALID,
            Some("practitionerIds"),
        ),
        case(
            "defineService",
            "a booking window of 0 days",
            DEFINE,
            json!({"i": with(&service, json!({"maxAdvanceDays": 0}))}),
            INVALID,
            Some("maxAdvanceDays"),
        ),
        case(
            "defineService",
            "a negative buffer",
            DEFINE,
            json!({"i": with(&service, json!({"bufferBeforeMinutes": -5}))}),
            INVALID,
            Some("bufferBeforeMinutes"),
        ),
        case(
            "defineService",
            "a negative notice",
            DEFINE,
            json!({"i": with(&service, json!({"minNoticeMinutes": -1}))}),
            INVALID,
            Some("minNoticeMinutes"),
        ),
        case(
            "defineService",
            "empty name",
            DEFINE,
            json!({"i": with(&service, json!({"name": " "}))}),
            INVALID,
            Some("name"),
        ),
        case(
            "defineService",
            "a string for a number",
            DEFINE,
            json!({"i": with(&service, json!({"durationMinutes": "thirty"}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "defineService",
            "an id that exists",
            DEFINE,
            json!({"i": with(&service, json!({"id": s}))}),
            "SERVICE_ALREADY_EXISTS",
            None,
        ),
        case(
            "updateService",
            "unknown id",
            UPDATE_SERVICE,
            json!({"id": u, "i": service}),
            "SERVICE_NOT_FOUND",
            None,
        ),
        case(
            "updateService",
            "capacity 0",
            UPDATE_SERVICE,
            json!({"id": s, "i": with(&service, json!({"capacity": 0}))}),
            INVALID,
            Some("capacity"),
        ),
        case(
            "updateService",
            "a duration over 8 hours",
            UPDATE_SERVICE,
            json!({"id": s, "i": with(&service, json!({"durationMinutes": 481}))}),
            INVALID,
            Some("durationMinutes"),
        ),
        case(
            "setServiceActive",
            "unknown id",
            SET_SERVICE_ACTIVE,
            json!({"id": u, "active": false}),
            "SERVICE_NOT_FOUND",
            None,
        ),
        case(
            "setServiceActive",
            "malformed id",
            SET_SERVICE_ACTIVE,
            json!({"id": "svc", "active": false}),
            INVALID,
            Some("id"),
        ),
        case(
            "setWeeklyRules",
            "end before start",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"end": "08:00"}))]}),
            INVALID,
            Some("end"),
        ),
        case(
            "setWeeklyRules",
            "end equal to start",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"end": "09:00"}))]}),
            INVALID,
            Some("end"),
        ),
        case(
            "setWeeklyRules",
            "an impossible time",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"start": "25:00"}))]}),
            INVALID,
            Some("start"),
        ),
        case(
            "setWeeklyRules",
            "no weekday",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"weekdays": []}))]}),
            INVALID,
            Some("weekdays"),
        ),
        case(
            "setWeeklyRules",
            "a grid of 0 minutes",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"gridMinutes": 0}))]}),
            INVALID,
            Some("gridMinutes"),
        ),
        case(
            "setWeeklyRules",
            "effectiveTo before effectiveFrom",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"effectiveTo": "2019-01-01"}))]}),
            INVALID,
            Some("effectiveTo"),
        ),
        case(
            "setWeeklyRules",
            "an unknown weekday",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"weekdays": ["FUNDAY"]}))]}),
            WRONG_TYPE,
            None,
        ),
        case(
            "setWeeklyRules",
            "an impossible date",
            RULES,
            json!({"p": p, "rules": [with(&rule, json!({"effectiveFrom": "2020-13-01"}))]}),
            WRONG_TYPE,
            None,
        ),
        case(
            "setWeeklyRules",
            "an unknown practitioner",
            RULES,
            json!({"p": u, "rules": [rule]}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "setWeeklyRules",
            "a good rule followed by a bad one",
            RULES,
            json!({"p": p, "rules": [rule, with(&rule, json!({"start": "13:00", "end": "12:00"}))]}),
            INVALID,
            Some("end"),
        ),
        case(
            "addScheduleException",
            "end before start",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"start": "14:00", "end": "13:00"}))}),
            INVALID,
            Some("end"),
        ),
        case(
            "addScheduleException",
            "a start without an end",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"start": "14:00"}))}),
            INVALID,
            Some("start"),
        ),
        case(
            "addScheduleException",
            "an extra session without times",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"kind": "EXTRA_SESSION"}))}),
            INVALID,
            Some("start"),
        ),
        case(
            "addScheduleException",
            "an extra session on a grid of 0",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"kind": "EXTRA_SESSION", "start": "18:00", "end": "19:00", "gridMinutes": 0}))}),
            INVALID,
            Some("gridMinutes"),
        ),
        case(
            "addScheduleException",
            "an unknown practitioner",
            ADD_EXCEPTION,
            json!({"p": u, "i": exception_input}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "addScheduleException",
            "a word for a date",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"date": "tomorrow"}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "addScheduleException",
            "an unknown kind",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"kind": "HOLIDAY"}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "addScheduleException",
            "an existing id with other content",
            ADD_EXCEPTION,
            json!({"p": p, "i": with(&exception_input, json!({"id": e}))}),
            INVALID,
            Some("exceptionId"),
        ),
        case(
            "removeScheduleException",
            "an unknown exception",
            REMOVE_EXCEPTION,
            json!({"p": p, "e": u}),
            "EXCEPTION_NOT_FOUND",
            None,
        ),
        case(
            "removeScheduleException",
            "a malformed exception id",
            REMOVE_EXCEPTION,
            json!({"p": p, "e": "leave-1"}),
            INVALID,
            Some("exceptionId"),
        ),
        case(
            "removeScheduleException",
            "an unknown practitioner",
            REMOVE_EXCEPTION,
            json!({"p": u, "e": e}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "bookAppointment",
            "a phone number without country code",
            BOOK,
            json!({"input": with(&booking, json!({"patient": {"hisPatientId": "HIS-1", "phone": "12345"}}))}),
            INVALID,
            Some("phone"),
        ),
        case(
            "bookAppointment",
            "a malformed e-mail address",
            BOOK,
            json!({"input": with(&booking, json!({"patient": {"hisPatientId": "HIS-1", "email": "not-an-email"}}))}),
            INVALID,
            Some("email"),
        ),
        case(
            "bookAppointment",
            "an empty patient id",
            BOOK,
            json!({"input": with(&booking, json!({"patient": {"hisPatientId": ""}}))}),
            INVALID,
            Some("patient.hisPatientId"),
        ),
        case(
            "bookAppointment",
            "a word for a time",
            BOOK,
            json!({"input": with(&booking, json!({"start": "tomorrow"}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "bookAppointment",
            "a number for a time",
            BOOK,
            json!({"input": with(&booking, json!({"start": 42}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "bookAppointment",
            "no patient",
            BOOK,
            json!({"input": with(&booking, json!({"patient": null}))}),
            WRONG_TYPE,
            None,
        ),
        case(
            "bookAppointment",
            "an unknown practitioner",
            BOOK,
            json!({"input": with(&booking, json!({"practitionerId": u}))}),
            "PRACTITIONER_NOT_FOUND",
            None,
        ),
        case(
            "bookAppointment",
            "an unknown service",
            BOOK,
            json!({"input": with(&booking, json!({"serviceId": u}))}),
            "SERVICE_NOT_FOUND",
            None,
        ),
        case(
            "bookAppointment",
            "a malformed practitioner id",
            BOOK,
            json!({"input": with(&booking, json!({"practitionerId": "dr-who"}))}),
            INVALID,
            Some("practitionerId"),
        ),
        case(
            "bookAppointment",
            "a time off the grid",
            BOOK,
            json!({"input": with(&booking, json!({"start": iso(free + Duration::minutes(7))}))}),
            "OUTSIDE_AVAILABILITY",
            None,
        ),
        case(
            "bookAppointment",
            "an appointment id that exists",
            BOOK,
            json!({"input": with(&booking, json!({"id": a}))}),
            "APPOINTMENT_ALREADY_EXISTS",
            None,
        ),
        case(
            "bookAppointment",
            "a note of 501 characters",
            BOOK,
            json!({"input": with(&booking, json!({"note": long(501)}))}),
            INVALID,
            Some("note"),
        ),
        case(
            "bookAppointment",
            "a taken slot",
            BOOK,
            json!({"input": with(&booking, json!({"start": iso(booked_at)}))}),
            "SLOT_TAKEN",
            None,
        ),
        case(
            "bookAppointment",
            "an empty idempotency key",
            BOOK,
            json!({"input": booking, "key": ""}),
            INVALID,
            Some("idempotencyKey"),
        ),
        case(
            "rescheduleAppointment",
            "unknown id",
            RESCHEDULE,
            json!({"id": u, "start": iso(free)}),
            "APPOINTMENT_NOT_FOUND",
            None,
        ),
        case(
            "rescheduleAppointment",
            "malformed id",
            RESCHEDULE,
            json!({"id": "appt-1", "start": iso(free)}),
            INVALID,
            Some("id"),
        ),
        case(
            "rescheduleAppointment",
            "a word for a time",
            RESCHEDULE,
            json!({"id": a, "start": "soon"}),
            WRONG_TYPE,
            None,
        ),
        case(
            "rescheduleAppointment",
            "the same time",
            RESCHEDULE,
            json!({"id": a, "start": iso(booked_at)}),
            "SAME_TIME",
            None,
        ),
        case(
            "rescheduleAppointment",
            "a time in the past",
            RESCHEDULE,
            json!({"id": a, "start": iso(local(days_ahead(0), 0, 0) - Duration::days(1))}),
            "IN_THE_PAST",
            None,
        ),
        case(
            "rescheduleAppointment",
            "a malformed practitioner id",
            RESCHEDULE,
            json!({"id": a, "start": iso(free), "p": "x"}),
            INVALID,
            Some("practitionerId"),
        ),
        case(
            "rescheduleAppointment",
            "a time off the grid",
            RESCHEDULE,
            json!({"id": a, "start": iso(free + Duration::minutes(7))}),
            "OUTSIDE_AVAILABILITY",
            None,
        ),
        case(
            "cancelAppointment",
            "an empty reason",
            CANCEL,
            json!({"id": a, "reason": "", "by": "PATIENT"}),
            INVALID,
            Some("reason"),
        ),
        case(
            "cancelAppointment",
            "a reason of 501 characters",
            CANCEL,
            json!({"id": a, "reason": long(501), "by": "PATIENT"}),
            INVALID,
            Some("reason"),
        ),
        case(
            "cancelAppointment",
            "an unknown canceller",
            CANCEL,
            json!({"id": a, "reason": "ill", "by": "ALIENS"}),
            WRONG_TYPE,
            None,
        ),
        case(
            "cancelAppointment",
            "unknown id",
            CANCEL,
            json!({"id": u, "reason": "ill", "by": "PATIENT"}),
            "APPOINTMENT_NOT_FOUND",
            None,
        ),
        case(
            "checkInAppointment",
            "unknown id",
            CHECK_IN,
            json!({"id": u}),
            "APPOINTMENT_NOT_FOUND",
            None,
        ),
        case(
            "checkInAppointment",
            "an empty id",
            CHECK_IN,
            json!({"id": ""}),
            INVALID,
            Some("id"),
        ),
        case(
            "checkInAppointment",
            "three days early",
            CHECK_IN,
            json!({"id": a}),
            "CHECK_IN_TOO_EARLY",
            None,
        ),
        case(
            "completeAppointment",
            "not checked in",
            COMPLETE,
            json!({"id": a}),
            "INVALID_TRANSITION",
            None,
        ),
        case(
            "completeAppointment",
            "unknown id",
            COMPLETE,
            json!({"id": u}),
            "APPOINTMENT_NOT_FOUND",
            None,
        ),
        case(
            "completeAppointment",
            "a list for an id",
            COMPLETE,
            json!({"id": [a]}),
            WRONG_TYPE,
            None,
        ),
        case(
            "markNoShow",
            "not started yet",
            NO_SHOW,
            json!({"id": a}),
            "NOT_STARTED_YET",
            None,
        ),
        case(
            "markNoShow",
            "malformed id",
            NO_SHOW,
            json!({"id": "42"}),
            INVALID,
            Some("id"),
        ),
        case(
            "markNoShow",
            "unknown id",
            NO_SHOW,
            json!({"id": u}),
            "APPOINTMENT_NOT_FOUND",
            None,
        ),
    ];
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.mutation).collect();
    assert_eq!(
        covered,
        BTreeSet::from(MUTATIONS),
        "every mutation has bad-input cases"
    );

    let snapshot_vars =
        json!({"p": p, "a": a, "newP": new_p, "newS": new_s, "newA": new_a, "at": setup_position});
    let before_snapshot = server
        .gql_ok(&h.admin, SNAPSHOT, snapshot_vars.clone())
        .await;
    let before_events = deployment.event_counts(&h.tenant).await;

    let mut failures = Vec::new();
    for c in &cases {
        assert!(c.query.contains(c.mutation), "{} / {}", c.mutation, c.what);
        let response = server.gql(&h.admin, c.query, c.variables.clone()).await;
        let got = (error_code(&response), error_field(&response));
        if got != (Some(c.code), c.field) || !response["data"].is_null() {
            failures.push(format!(
                "{} with {}: expected {} {:?}, got {response}",
                c.mutation, c.what, c.code, c.field
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    assert_eq!(
        deployment.event_counts(&h.tenant).await,
        before_events,
        "a refused request wrote events"
    );
    let after_snapshot = server.gql_ok(&h.admin, SNAPSHOT, snapshot_vars).await;
    assert_eq!(after_snapshot, before_snapshot);
    assert!(after_snapshot["newPractitioner"].is_null());
    assert!(after_snapshot["newService"].is_null());
    assert!(after_snapshot["newAppointment"].is_null());
    assert_eq!(
        after_snapshot["appointment"]["history"],
        json!([{"type": "AppointmentBooked"}])
    );

    // Still serving: the slot the bad bookings aimed at can be booked.
    book(&server, &h.admin, p, s, free).await;
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_abusive_requests_get_typed_errors_and_the_server_keeps_working() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Sturdy Hospital").await;

    // Bodies that are not a GraphQL request in JSON: 400 problem details.
    for body in [
        b"{\"query\": ".to_vec(),
        b"not json at all".to_vec(),
        b"".to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"{\"query\": 42}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
    ] {
        let r = server.post_raw(Some(&admin), body.clone()).await;
        let shown = String::from_utf8_lossy(&body);
        assert_eq!(r.status, 400, "{shown:?}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{shown:?}"
        );
        assert_eq!(r.json()["code"], "MALFORMED_REQUEST", "{shown:?}");
    }

    // A body over the limit (256 KiB by default): 413, and the mutation in it is not applied.
    let huge = json!({
        "query": "mutation($i: PractitionerInput!) { registerPractitioner(input: $i) { id } }",
        "variables": {"i": {"name": "Dr. Big", "specialty": "x".repeat(300 * 1024)}},
    });
    let r = server.post_raw(Some(&admin), huge.to_string()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["code"], "BODY_TOO_LARGE");

    // Malformed GraphQL and queries the schema refuses: an error with a code.
    // Deeper than introspection may nest (20), the standard query's depth.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(20),
        "}".repeat(20)
    );
    let deep_data = format!(
        "{{ me {{ role }} __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(10),
        "}".repeat(10)
    );
    let complex = format!(
        "{{ {} }}",
        (0..5100)
            .map(|i| format!("a{i}: me {{ role }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let nested_value = format!(
        "{{ available: availableSlots(practitionerIds: {}1{}, serviceId: \"x\", from: \"2030-01-01\", to: \"2030-01-01\") {{ nodes {{ start }} }} }}",
        "[".repeat(200),
        "]".repeat(200)
    );
    const INVALID: &str = "GRAPHQL_VALIDATION_FAILED";
    for (what, query, code, message) in [
        (
            "an unclosed selection",
            "{ me { role ".to_owned(),
            INVALID,
            "",
        ),
        ("an unknown field", "{ nope }".to_owned(), INVALID, "nope"),
        (
            "a mutation without its arguments",
            "mutation { bookAppointment { id } }".to_owned(),
            INVALID,
            "input",
        ),
        (
            "a subscription",
            "subscription { me { role } }".to_owned(),
            INVALID,
            "",
        ),
        ("a query nested too deep", deep, INVALID, "deep"),
        (
            "data beside introspection nested too deep",
            deep_data,
            INVALID,
            "deep",
        ),
        ("a query too complex", complex, INVALID, "complex"),
        // Refused before parsing (see graphql::guard).
        (
            "a value nested 200 lists deep",
            nested_value,
            "GRAPHQL_DOCUMENT_TOO_DEEP",
            "deeper",
        ),
    ] {
        let response = server.gql(&admin, &query, json!({})).await;
        assert!(response["data"].is_null(), "{what}: {response}");
        assert_eq!(error_code(&response), Some(code), "{what}: {response}");
        let text = response["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        assert!(text.contains(message), "{what}: {response}");
    }

    // Nothing was written, nothing panicked, and the server still answers.
    assert!(deployment.event_counts(&tenant).await.is_empty());
    let me = server
        .gql_ok(&admin, "{ me { role tenantId } }", json!({}))
        .await;
    assert_eq!(me["me"], json!({"role": "admin", "tenantId": tenant}));
    assert_eq!(server.get("/health").await.status, 200);
    assert!(!server.output().contains("panicked"), "{}", server.output());
}
