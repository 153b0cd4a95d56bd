//! Instants and dates at the ends of what the API accepts (docs/time.md):
//! over GraphQL (HTTP and WebSocket) every time and date outside
//! 1900-01-01..=2199-12-31 (UTC) is refused as `INVALID_INPUT` naming the
//! field, nothing is written, and the server keeps answering. A start of
//! `+262142-12-31T23:59:59Z` used to panic the worker while it derived the
//! hospital's calendar day, closing the connection with no answer. The
//! HIS, FHIR and widget surfaces have their cases next to their other
//! tests (`his_api.rs`, `fhir.rs`, `embed_api.rs`).
use serde_json::{json, Value};

use crate::server::*;

/// The far end of what RFC 3339 parsers read, the first instant past the
/// accepted years, and the last one before them.
pub const FAR_INSTANTS: [&str; 4] = [
    "+262142-12-31T23:59:59Z",
    "-262143-01-01T00:00:00Z",
    "2200-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
];

pub const FAR_DATES: [&str; 3] = ["+262142-12-31", "2200-01-01", "1899-12-31"];

#[track_caller]
fn refused(response: &Value, field: &str, what: &str) {
    assert_eq!(
        (error_code(response), error_field(response)),
        (Some("INVALID_INPUT"), Some(field)),
        "{what}: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_refuses_instants_and_dates_outside_the_accepted_years() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Far Future Hospital").await;
    let (p, s) = (h.practitioner.as_str(), h.checkup.as_str());
    let booked = book(&server, &h.admin, p, s, local(days_ahead(3), 10, 0)).await;
    server.settle(&h.admin).await;
    let before = deployment.event_counts(&h.tenant).await;

    for far in FAR_INSTANTS {
        let mut input = book_input(p, s, local(days_ahead(3), 11, 0), "P-FAR");
        input["start"] = json!(far);
        let r = server.gql(&h.admin, BOOK, json!({"input": input})).await;
        refused(&r, "start", &format!("bookAppointment at {far}"));

        let r = server
            .gql(
                &h.admin,
                "mutation($id: ID!, $start: DateTime!) {
                   rescheduleAppointment(id: $id, start: $start) { id } }",
                json!({"id": booked, "start": far}),
            )
            .await;
        refused(&r, "start", &format!("rescheduleAppointment to {far}"));

        let r = server
            .gql(
                &h.admin,
                "query($t: DateTime) { patientAppointments(patientId: \"P-FAR\", from: $t) { nodes { status } } }",
                json!({"t": far}),
            )
            .await;
        refused(&r, "from", &format!("patientAppointments from {far}"));

        let r = server
            .gql(
                &h.admin,
                "query($id: ID!, $t: DateTime) { appointment(id: $id, asOf: {time: $t}) { id } }",
                json!({"id": booked, "t": far}),
            )
            .await;
        refused(&r, "asOf.time", &format!("appointment as of {far}"));
    }

    let today = days_ahead(0).to_string();
    for far in FAR_DATES {
        let r = server
            .gql(
                &h.admin,
                "query($s: ID!, $from: NaiveDate!, $to: NaiveDate!) {
                   availableSlots(serviceId: $s, from: $from, to: $to) { nodes { start } } }",
                json!({"s": s, "from": today, "to": far}),
            )
            .await;
        refused(&r, "to", &format!("availableSlots to {far}"));

        let r = server
            .gql(
                &h.admin,
                "query($p: ID!, $from: NaiveDate!, $to: NaiveDate!) {
                   practitionerSchedule(id: $p, from: $from, to: $to) { days { date } } }",
                json!({"p": p, "from": far, "to": today}),
            )
            .await;
        refused(&r, "from", &format!("practitionerSchedule from {far}"));

        let r = server
            .gql(
                &h.admin,
                "query($p: ID!, $from: NaiveDate!, $to: NaiveDate!) {
                   practitionerAppointments(practitionerId: $p, from: $from, to: $to) { nodes { status } } }",
                json!({"p": p, "from": far, "to": far}),
            )
            .await;
        refused(&r, "from", &format!("practitionerAppointments on {far}"));

        let r = server
            .gql(
                &h.admin,
                "mutation($p: ID!, $rules: [WeeklyRuleInput!]!) {
                   setWeeklyRules(practitionerId: $p, rules: $rules) { id } }",
                json!({"p": p, "rules": [{
                    "weekdays": EVERY_DAY, "start": "08:00", "end": "12:00",
                    "gridMinutes": 15, "effectiveFrom": far,
                }]}),
            )
            .await;
        refused(&r, "effectiveFrom", &format!("a weekly rule from {far}"));

        let r = server
            .gql(
                &h.admin,
                "mutation($p: ID!, $i: ScheduleExceptionInput!) {
                   addScheduleException(practitionerId: $p, input: $i) { id } }",
                json!({"p": p, "i": {"date": far, "kind": "UNAVAILABLE"}}),
            )
            .await;
        refused(&r, "date", &format!("an exception on {far}"));

        // The live slot subscription over the WebSocket refuses it too,
        // and the socket stays usable.
        let mut ws = crate::read_side::subscribe(
            &server,
            &h.admin,
            "subscription($p: ID!, $from: NaiveDate!, $to: NaiveDate!) {
               slotChanges(practitionerIds: [$p], from: $from, to: $to) { slots { start } } }",
            json!({"p": p, "from": today, "to": far}),
        )
        .await;
        let payload = crate::read_side::next_payload(&mut ws).await;
        refused(&payload, "to", &format!("slotChanges to {far}"));
    }

    // The last accepted instant and date are still accepted as input (no
    // slot that far ahead, but no refusal either).
    let r = server
        .gql(
            &h.admin,
            "query($t: DateTime) { patientAppointments(patientId: \"P-FAR\", to: $t) { nodes { status } } }",
            json!({"t": "2199-12-31T23:59:59Z"}),
        )
        .await;
    data(&r);

    assert_eq!(deployment.event_counts(&h.tenant).await, before);
    // Still serving, on new connections too.
    assert_eq!(server.get("/health").await.status, 200);
    let again = book(&server, &h.admin, p, s, local(days_ahead(3), 12, 0)).await;
    assert!(!again.is_empty());
}
