//! Reminders and patient notifications against the real server: e-mail to a
//! local SMTP sink, text messages to a scripted SMS gateway, time moved by
//! restarting the server with a later clock (which also proves the timers
//! survive a restart), and two instances on one PostgreSQL.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::server::{
    data, error_code, error_field, instant, iso, set_up_hospital, Deployment, Hospital,
    ServerOptions, TestServer, BOOK,
};
use crate::support::receiver::{Receiver, Reply};
use crate::support::smtp::{Mail, SmtpSink};

const WAIT: Duration = Duration::from_secs(30);
const SMS_KEY: &str = "test-sms-signing-key-0123456789";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A server whose clock reads `now` at start, sending e-mail to `sink`,
/// polling for due timers every 50 ms and retrying after 300 ms, 600 ms.
fn options(now: DateTime<Utc>, sink: &SmtpSink) -> ServerOptions {
    let mut o = ServerOptions::clock_at(now);
    o.env = sink.env();
    for (k, v) in [
        ("BUKTOR_NOTIFICATIONS__POLL_MS", "50"),
        ("BUKTOR_NOTIFICATIONS__RETRY_DELAYS_MS", "[300, 600]"),
        ("BUKTOR_NOTIFICATIONS__MAX_ATTEMPTS", "3"),
        ("BUKTOR_NOTIFICATIONS__SEND_TIMEOUT_MS", "2000"),
        ("BUKTOR_NOTIFICATIONS__LEASE_MS", "10000"),
        ("BUKTOR_NOTIFICATIONS__SMS_SIGNING_KEY", SMS_KEY),
        (
            "BUKTOR_NOTIFICATIONS__FROM",
            "Test Hospital <noreply@hospital.test>",
        ),
        ("BUKTOR_WEBHOOKS__POLL_MS", "50"),
    ] {
        o.env.push((k.into(), v.into()));
    }
    o
}

const CONFIGURE: &str = "mutation($input: NotificationsInput!) {
    configureNotifications(input: $input) { id events } }";
const SET_RULE: &str = "mutation($input: ReminderRuleInput!) {
    setReminderRule(input: $input) { id events } }";
const SET_TEMPLATE: &str = "mutation($input: NotificationTemplateInput!) {
    setNotificationTemplate(input: $input) { id events } }";
const RECORD_CONTACT: &str = "mutation($input: PatientContactInput!) {
    recordPatientContact(input: $input) { id events } }";
const NOTIFICATIONS: &str = "query($id: ID!) { appointmentNotifications(appointmentId: $id) {
    id kind channel ruleId status dueAt appointmentStart attempts detail recipient } }";
const SETTINGS: &str = "query { notificationSettings { enabled defaultLanguage email smsGatewayUrl
    manageHint rules { id minutesBefore daysBefore at serviceIds } templates { kind channel language subject body } } }";

async fn configure(server: &TestServer, admin: &str, sms: Option<&str>) {
    server
        .gql_ok(
            admin,
            CONFIGURE,
            json!({"input": {"enabled": true, "defaultLanguage": "en", "email": true,
                "smsGatewayUrl": sms, "manageHint": "Call 020 123 4567 to change it."}}),
        )
        .await;
}

async fn rule(server: &TestServer, admin: &str, input: Value) -> String {
    let d = server
        .gql_ok(admin, SET_RULE, json!({ "input": input }))
        .await;
    d["setReminderRule"]["id"].as_str().unwrap().to_owned()
}

async fn book_for(
    server: &TestServer,
    key: &str,
    h: &Hospital,
    start: DateTime<Utc>,
    patient: Value,
) -> String {
    let d = server
        .gql_ok(
            key,
            BOOK,
            json!({"input": {"practitionerId": h.practitioner, "serviceId": h.checkup,
                "start": iso(start), "patient": patient}}),
        )
        .await;
    d["bookAppointment"]["id"].as_str().unwrap().to_owned()
}

async fn notifications(server: &TestServer, key: &str, appointment: &str) -> Vec<Value> {
    let d = server
        .gql_ok(key, NOTIFICATIONS, json!({ "id": appointment }))
        .await;
    d["appointmentNotifications"].as_array().unwrap().clone()
}

/// Polls an appointment's notifications until `done` holds.
async fn wait_notifications(
    server: &TestServer,
    key: &str,
    appointment: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = notifications(server, key, appointment).await;
        if done(&n) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}: {n:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of<'a>(n: &'a [Value], kind: &str, status: &str) -> Vec<&'a Value> {
    n.iter()
        .filter(|x| x["kind"] == kind && x["status"] == status)
        .collect()
}

fn due_times(n: &[Value], kind: &str, status: &str) -> Vec<DateTime<Utc>> {
    let mut v: Vec<_> = of(n, kind, status)
        .iter()
        .map(|x| instant(&x["dueAt"]))
        .collect();
    v.sort();
    v
}

fn reminders_to(mails: &[Mail], to: &str) -> usize {
    mails
        .iter()
        .filter(|m| m.to.iter().any(|x| x == to) && m.subject().contains("Herinnering"))
        .count()
}

/// The whole life of reminders on PostgreSQL, across the last Sunday of
/// March 2027 (Amsterdam springs forward on the 28th):
/// - a booking sends the booked e-mail in the patient's language (`nl-BE`
///   falls back to the `nl` template), to the contact the HIS recorded;
/// - "1 day before at 09:00" is due at 09:00 CEST, "48 h before" at 09:00
///   CET (48 real hours), and neither fires a minute early;
/// - a reschedule moves them, a cancellation cancels them (no reminder for
///   the cancelled one, but the cancellation e-mail);
/// - after restarts, and with two instances racing on one database, each
///   reminder is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_fire_at_local_times_across_dst_follow_changes_and_are_sent_once_by_two_instances(
) {
    let sink = SmtpSink::start().await;
    let deployment = Deployment::postgres().await;
    let mut server = deployment
        .start_with(options(t("2027-03-25T12:00:00Z"), &sink))
        .await;
    let h = set_up_hospital(&deployment, &server, "Reminder Hospital").await;
    let admin = h.admin.clone();
    configure(&server, &admin, None).await;
    rule(&server, &admin, json!({"daysBefore": 1, "at": "09:00"})).await;
    rule(&server, &admin, json!({"minutesBefore": 48 * 60})).await;
    for (kind, subject, body) in [
        (
            "BOOKED",
            "Afspraak op {{date}} om {{time}}",
            "Beste {{patient_name}}, uw afspraak voor {{service}} bij {{practitioner}} is op {{date}} om {{time}}. {{manage_hint}}",
        ),
        (
            "REMINDER",
            "Herinnering: {{date}} om {{time}}",
            "Beste {{patient_name}}, tot {{date}} om {{time}}.",
        ),
    ] {
        server
            .gql_ok(
                &admin,
                SET_TEMPLATE,
                json!({"input": {"kind": kind, "channel": "EMAIL", "language": "nl",
                    "subject": subject, "body": body}}),
            )
            .await;
    }
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    server
        .gql_ok(
            &staff,
            RECORD_CONTACT,
            json!({"input": {"hisPatientId": "P-NL", "name": "Ada Jansen",
                "email": "ada@example.org", "language": "nl-BE"}}),
        )
        .await;

    // Monday 29 March 10:00 CEST, booked with an older address the HIS has since replaced.
    let a = book_for(
        &server,
        &staff,
        &h,
        t("2027-03-29T08:00:00Z"),
        json!({"hisPatientId": "P-NL", "name": "A. Jansen", "email": "old@example.org"}),
    )
    .await;
    sink.wait_until(WAIT, "the booked e-mail", |m| {
        m.iter()
            .any(|m| m.to.iter().any(|to| to == "ada@example.org"))
    })
    .await;
    let booked = sink.mails_to("ada@example.org");
    assert_eq!(booked.len(), 1, "{booked:#?}");
    let mail = &booked[0];
    assert_eq!(mail.subject(), "Afspraak op 2027-03-29 om 10:00");
    assert_eq!(mail.header("content-language"), Some("nl"));
    for part in [
        "Beste Ada Jansen",
        "Check-up",
        "Dr. Ada Lovelace",
        "2027-03-29 om 10:00",
        "Call 020 123 4567 to change it.",
    ] {
        assert!(mail.body.contains(part), "{part:?} not in {:?}", mail.body);
    }
    assert!(mail
        .header("from")
        .unwrap()
        .contains("noreply@hospital.test"));
    assert!(sink.mails_to("old@example.org").is_empty());

    let n = wait_notifications(&server, &staff, &a, "A's booked e-mail recorded", |n| {
        of(n, "BOOKED", "SENT").len() == 1
    })
    .await;
    assert_eq!(of(&n, "BOOKED", "SENT")[0]["recipient"], "a***@example.org");
    assert_eq!(
        due_times(&n, "REMINDER", "SCHEDULED"),
        // 48 h before = 09:00 CET on Saturday; the day before at 09:00 = 09:00 CEST on Sunday.
        vec![t("2027-03-27T08:00:00Z"), t("2027-03-28T07:00:00Z")]
    );

    // B is cancelled, C is moved to Thursday 1 April 12:00 CEST.
    let b = book_for(
        &server,
        &staff,
        &h,
        t("2027-03-29T09:00:00Z"),
        json!({"hisPatientId": "P-B", "name": "Bea", "email": "bea@example.org"}),
    )
    .await;
    let c = book_for(
        &server,
        &staff,
        &h,
        t("2027-03-29T10:00:00Z"),
        json!({"hisPatientId": "P-C", "name": "Cor", "email": "cor@example.org"}),
    )
    .await;
    // Ten more for the same morning, to give two instances something to race over.
    let mut many = Vec::new();
    for i in 0..10 {
        let start = t("2027-03-29T11:00:00Z") + chrono::Duration::minutes(15 * i);
        let email = format!("p{i}@example.org");
        many.push((
            book_for(
                &server,
                &staff,
                &h,
                start,
                json!({"hisPatientId": format!("P-{i}"), "email": email}),
            )
            .await,
            email,
        ));
    }
    // Every booked e-mail is out before anything changes.
    sink.wait_until(WAIT, "13 booked e-mails", |m| m.len() == 13)
        .await;
    server
        .gql_ok(
            &staff,
            "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"ill\", cancelledBy: PATIENT) { id } }",
            json!({"id": b}),
        )
        .await;
    server
        .gql_ok(
            &staff,
            "mutation($id: ID!, $start: DateTime!) { rescheduleAppointment(id: $id, start: $start) { id } }",
            json!({"id": c, "start": iso(t("2027-04-01T10:00:00Z"))}),
        )
        .await;
    let nb = wait_notifications(&server, &staff, &b, "B's reminders cancelled", |n| {
        of(n, "REMINDER", "CANCELLED").len() == 2 && of(n, "CANCELLED", "SENT").len() == 1
    })
    .await;
    assert!(of(&nb, "REMINDER", "SCHEDULED").is_empty());
    let nc = wait_notifications(&server, &staff, &c, "C's reminders moved", |n| {
        of(n, "REMINDER", "SCHEDULED").len() == 2 && of(n, "RESCHEDULED", "SENT").len() == 1
    })
    .await;
    assert_eq!(
        due_times(&nc, "REMINDER", "SCHEDULED"),
        vec![t("2027-03-30T10:00:00Z"), t("2027-03-31T07:00:00Z")]
    );
    assert_eq!(due_times(&nc, "REMINDER", "CANCELLED").len(), 2);
    let cancelled_mail = sink.mails_to("bea@example.org");
    assert!(
        cancelled_mail
            .iter()
            .any(|m| m.subject().contains("is cancelled")),
        "{cancelled_mail:#?}"
    );
    // Everything planned so far is sent: 13 booked, 1 cancelled, 1 rescheduled.
    sink.wait_until(WAIT, "15 e-mails", |m| m.len() == 15).await;

    // A minute before the 48 h reminder: nothing more goes out.
    server
        .restart_with(options(t("2027-03-27T07:59:00Z"), &sink))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.mails().len(), 15, "a reminder went out early");

    // Just after it: A's 48 h reminder, in Dutch, and nothing else yet.
    server
        .restart_with(options(t("2027-03-27T08:00:05Z"), &sink))
        .await;
    sink.wait_until(WAIT, "A's 48 h reminder", |m| {
        reminders_to(m, "ada@example.org") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.mails().len(), 16);
    let reminder = sink
        .mails_to("ada@example.org")
        .into_iter()
        .find(|m| m.subject().contains("Herinnering"))
        .unwrap();
    assert_eq!(reminder.subject(), "Herinnering: 2027-03-29 om 10:00");
    assert!(sink
        .mails_to("bea@example.org")
        .iter()
        .all(|m| !m.subject().contains("Reminder")));

    // Sunday 09:00 CEST, two instances on the database: the day-before
    // reminders go out once each, with the ten others' 48 h reminders
    // (overdue since Saturday, late but before their appointments).
    server.stop_sigterm().await;
    let at = options(t("2027-03-28T07:00:05Z"), &sink);
    let (one, two) = tokio::join!(deployment.start_with(at.clone()), deployment.start_with(at));
    sink.wait_until(WAIT, "the day-before reminders", |m| {
        reminders_to(m, "ada@example.org") == 2
            && m.iter()
                .filter(|m| m.subject().starts_with("Reminder:"))
                .count()
                >= 20
    })
    .await;
    // Let both instances poll a good many times more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = sink.mails();
    assert_eq!(
        mails.len(),
        37,
        "{:#?}",
        mails
            .iter()
            .map(|m| (&m.to, m.subject()))
            .collect::<Vec<_>>()
    );
    for (_, email) in &many {
        let got = sink.mails_to(email);
        assert_eq!(
            got.iter()
                .filter(|m| m.subject().starts_with("Reminder:"))
                .count(),
            2,
            "{email}"
        );
    }
    let mut ids: Vec<&str> = mails
        .iter()
        .filter_map(|m| m.header("message-id"))
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "a notification was sent twice");
    let n = notifications(&one, &staff, &a).await;
    assert_eq!(of(&n, "REMINDER", "SENT").len(), 2);
    // C's (moved) and B's (cancelled) reminders: none yet, none ever for B.
    assert!(sink
        .mails_to("cor@example.org")
        .iter()
        .all(|m| !m.subject().starts_with("Reminder:")));
    assert!(sink
        .mails_to("bea@example.org")
        .iter()
        .all(|m| !m.subject().starts_with("Reminder:")));
    drop((one, two));
}

/// The SMS channel on the embedded store: each text is POSTed to the
/// hospital's gateway, signed with its derived secret (checked with the
/// off-the-shelf Standard Webhooks verifier); a failing gateway is retried
/// and then recorded as failed; an opted-out patient gets nothing, and that
/// is recorded as skipped; an appointment that has started gets no reminder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_goes_to_the_gateway_signed_failures_are_retried_then_recorded_and_opt_outs_and_past_appointments_are_skipped(
) {
    let sink = SmtpSink::start().await;
    let gateway = Receiver::start().await;
    let deployment = Deployment::embedded();
    let mut server = deployment
        .start_with(options(t("2027-06-01T08:00:00Z"), &sink))
        .await;
    let h = set_up_hospital(&deployment, &server, "SMS Hospital").await;
    let secret = deployment
        .cli_with(
            &["notifications", "sms-secret", "--tenant", &h.tenant],
            &[("BUKTOR_NOTIFICATIONS__SMS_SIGNING_KEY", SMS_KEY)],
        )
        .await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    gateway.set_secrets(&[&secret]);
    // Texts to +31611111111 fail every time; others succeed.
    gateway.set_policy(|_| Reply::ok());
    let sms_url = format!("{}/sms", gateway.url());
    let admin = h.admin.clone();
    server
        .gql_ok(
            &admin,
            CONFIGURE,
            json!({"input": {"enabled": true, "email": false, "smsGatewayUrl": sms_url}}),
        )
        .await;
    rule(&server, &admin, json!({"minutesBefore": 60})).await;

    // Sent and signed.
    let ok = book_for(
        &server,
        &admin,
        &h,
        t("2027-06-02T08:00:00Z"),
        json!({"hisPatientId": "P-1", "name": "Ada", "phone": "+31 6 2222 2222"}),
    )
    .await;
    let arrivals = gateway
        .wait_until("the booked text", WAIT, |a| !a.is_empty())
        .await;
    let first = &arrivals[0];
    assert_eq!(first.verified, vec![true], "{first:?}");
    assert_eq!(first.body["to"], "+31622222222");
    assert_eq!(first.body["kind"], "booked");
    assert_eq!(first.body["appointment_id"], ok.as_str());
    let text = first.body["text"].as_str().unwrap();
    assert!(text.contains("2027-06-02 10:00"), "{text}");
    assert!(text.contains("SMS Hospital"), "{text}");

    // A failing gateway: 3 attempts, then failed.
    gateway.set_policy(|_| Reply::status(503));
    let failing = book_for(
        &server,
        &admin,
        &h,
        t("2027-06-02T09:00:00Z"),
        json!({"hisPatientId": "P-2", "phone": "+31 6 3333 3333"}),
    )
    .await;
    let n = wait_notifications(&server, &admin, &failing, "the failed text", |n| {
        of(n, "BOOKED", "FAILED").len() == 1
    })
    .await;
    let failed = of(&n, "BOOKED", "FAILED")[0];
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["detail"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    let to_failing = gateway
        .arrivals()
        .iter()
        .filter(|a| a.body["to"] == "+31633333333")
        .count();
    assert_eq!(to_failing, 3);
    let events = deployment
        .count_events(&h.tenant, "NotificationFailed")
        .await;
    assert_eq!(events, 3);
    gateway.set_policy(|_| Reply::ok());

    // Opted out of SMS: skipped, and said so.
    server
        .gql_ok(
            &admin,
            RECORD_CONTACT,
            json!({"input": {"hisPatientId": "P-3", "phone": "+31 6 4444 4444", "optedOut": ["SMS"]}}),
        )
        .await;
    let opted = book_for(
        &server,
        &admin,
        &h,
        t("2027-06-02T10:00:00Z"),
        json!({"hisPatientId": "P-3", "phone": "+31 6 4444 4444"}),
    )
    .await;
    let n = wait_notifications(&server, &admin, &opted, "the opt-out", |n| {
        of(n, "BOOKED", "SKIPPED").len() == 1
    })
    .await;
    assert_eq!(of(&n, "BOOKED", "SKIPPED")[0]["detail"], "opted-out");

    // Past its start: the reminder due 09:00 UTC for `ok` is skipped when the
    // server only looks again after the appointment began.
    server
        .restart_with(options(t("2027-06-02T08:30:00Z"), &sink))
        .await;
    let n = wait_notifications(&server, &admin, &ok, "the late reminder skipped", |n| {
        of(n, "REMINDER", "SKIPPED").len() == 1
    })
    .await;
    assert_eq!(
        of(&n, "REMINDER", "SKIPPED")[0]["detail"],
        "appointment-started"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gateway
        .arrivals()
        .iter()
        .all(|a| a.body["kind"] != "reminder" || a.body["to"] != "+31622222222"));
    assert!(gateway
        .arrivals()
        .iter()
        .all(|a| a.body["to"] != "+31644444444"));
    assert!(sink.mails().is_empty(), "e-mail is off for this hospital");
}

/// Settings: bad input gets a typed error and changes nothing; staff may
/// not configure, auditors may read; another hospital sees only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_with_typed_errors_and_other_hospitals_see_nothing() {
    let sink = SmtpSink::start().await;
    let deployment = Deployment::embedded();
    let server = deployment
        .start_with(options(t("2027-06-01T08:00:00Z"), &sink))
        .await;
    let h = set_up_hospital(&deployment, &server, "Settings Hospital").await;
    let admin = h.admin.clone();
    configure(&server, &admin, Some("https://sms.example.org/send")).await;
    let rule_id = rule(
        &server,
        &admin,
        json!({"daysBefore": 2, "at": "18:30", "serviceIds": [h.checkup]}),
    )
    .await;
    let before = server.gql_ok(&admin, SETTINGS, json!({})).await;
    assert_eq!(
        before["notificationSettings"]["rules"][0]["id"],
        rule_id.as_str()
    );
    assert_eq!(before["notificationSettings"]["rules"][0]["at"], "18:30");

    let refused = [
        (
            SET_RULE,
            json!({"input": {"minutesBefore": 0}}),
            "minutesBefore",
        ),
        (
            SET_RULE,
            json!({"input": {"daysBefore": 1, "at": "25:00"}}),
            "at",
        ),
        (
            SET_RULE,
            json!({"input": {"minutesBefore": 60, "daysBefore": 1, "at": "09:00"}}),
            "input",
        ),
        (
            SET_RULE,
            json!({"input": {"daysBefore": 2, "at": "18:30", "serviceIds": [h.checkup]}}),
            "timing",
        ),
        (
            SET_RULE,
            json!({"input": {"minutesBefore": 60, "serviceIds": ["nope"]}}),
            "serviceIds",
        ),
        (
            SET_TEMPLATE,
            json!({"input": {"kind": "BOOKED", "channel": "EMAIL", "language": "nl", "subject": "Hi", "body": "Hi {{name}}"}}),
            "body",
        ),
        (
            SET_TEMPLATE,
            json!({"input": {"kind": "BOOKED", "channel": "EMAIL", "language": "nl", "body": "Hi"}}),
            "subject",
        ),
        (
            SET_TEMPLATE,
            json!({"input": {"kind": "BOOKED", "channel": "SMS", "language": "english!", "body": "Hi"}}),
            "language",
        ),
        (
            CONFIGURE,
            json!({"input": {"enabled": true, "smsGatewayUrl": "ftp://x"}}),
            "smsGatewayUrl",
        ),
        (
            CONFIGURE,
            json!({"input": {"enabled": true, "defaultLanguage": "x1"}}),
            "defaultLanguage",
        ),
        (
            RECORD_CONTACT,
            json!({"input": {"hisPatientId": "P", "email": "not-an-address"}}),
            "email",
        ),
    ];
    for (query, vars, field) in refused {
        let r = server.gql(&admin, query, vars.clone()).await;
        assert_eq!(error_code(&r), Some("INVALID_INPUT"), "{vars}: {r}");
        assert_eq!(error_field(&r), Some(field), "{vars}: {r}");
    }
    let unknown_service = server
        .gql(
            &admin,
            SET_RULE,
            json!({"input": {"minutesBefore": 60, "serviceIds": [uuid::Uuid::new_v4().to_string()]}}),
        )
        .await;
    assert_eq!(error_code(&unknown_service), Some("SERVICE_NOT_FOUND"));
    let after = server.gql_ok(&admin, SETTINGS, json!({})).await;
    assert_eq!(before, after, "a refused change changed something");

    // Roles: staff may not configure or read settings; auditors read, not write.
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let auditor = deployment.create_api_key(&h.tenant, "auditor").await;
    assert_eq!(
        server
            .gql_err(&staff, SET_RULE, json!({"input": {"minutesBefore": 5}}))
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        server.gql_err(&staff, SETTINGS, json!({})).await,
        "FORBIDDEN"
    );
    assert_eq!(server.gql_ok(&auditor, SETTINGS, json!({})).await, after);
    assert_eq!(
        server
            .gql_err(&auditor, CONFIGURE, json!({"input": {"enabled": false}}))
            .await,
        "FORBIDDEN"
    );

    // Another hospital has its own (empty) settings and cannot touch these.
    let (_, other) = deployment.tenant_with_admin("Other Hospital").await;
    let theirs = server.gql_ok(&other, SETTINGS, json!({})).await;
    assert_eq!(theirs["notificationSettings"]["enabled"], false);
    assert_eq!(theirs["notificationSettings"]["rules"], json!([]));
    let r = server
        .gql(
            &other,
            "mutation($id: ID!) { removeReminderRule(id: $id) { id } }",
            json!({"id": rule_id}),
        )
        .await;
    assert_eq!(error_code(&r), Some("INVALID_INPUT"));
    assert_eq!(server.gql_ok(&admin, SETTINGS, json!({})).await, after);
    let _ = data(&after);
}

/// A `/his/v1` write with a his-system key; answers the result's Buktor id.
async fn his_write(
    server: &TestServer,
    key: &str,
    method: reqwest::Method,
    path: &str,
    idem: &str,
    body: Value,
) -> Value {
    let res = reqwest::Client::new()
        .request(method, format!("{}/his/v1{path}", server.url))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// Changes the HIS makes through `/his/v1` drive the notifications as
/// Buktor's own do: the booking e-mail goes to the contact the HIS recorded,
/// a move moves the reminder, a cancellation cancels it, and after the
/// restart at the due time only the moved appointment's reminder is sent,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_sent_by_the_his_move_and_cancel_reminders_as_buktors_own_do() {
    use reqwest::Method;
    let sink = SmtpSink::start().await;
    let deployment = Deployment::postgres().await;
    let mut server = deployment
        .start_with(options(t("2027-03-25T12:00:00Z"), &sink))
        .await;
    let (tenant, admin) = deployment.tenant_with_admin("HIS Reminders").await;
    let his = deployment.create_api_key(&tenant, "his-system").await;
    configure(&server, &admin, None).await;
    rule(&server, &admin, json!({"minutesBefore": 120})).await;
    let master = json!({
        "practitioners": [{"hisId": "DOC-1", "version": 1, "name": "Dr. Ada Lovelace", "specialty": "Cardiology"}],
        "services": [{"hisId": "SVC-1", "version": 1, "name": "Check-up", "durationMinutes": 15, "practitionerIds": ["DOC-1"]}],
        "schedules": [{"practitionerId": "DOC-1", "version": 1, "weeklyRules": [{
            "weekdays": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
            "start": "07:00", "end": "17:00", "gridMinutes": 15, "effectiveFrom": "2020-01-01"}]}],
        "patients": [{"hisId": "P-1", "version": 1, "name": "Ada Jansen", "email": "ada@example.org", "language": "en"},
                     {"hisId": "P-2", "version": 1, "name": "Bob Smit", "email": "bob@example.org"}],
    });
    let loaded = his_write(&server, &his, Method::POST, "/bulk", "master", master).await;
    assert_eq!(loaded["summary"]["failed"], 0, "{loaded}");
    let appointment = |start: &str, patient: &str, version: i64| {
        json!({"version": version, "practitionerId": "DOC-1", "serviceId": "SVC-1", "start": start,
               "patient": {"hisId": patient, "email": "stale-copy@example.org"}})
    };
    let a = his_write(
        &server,
        &his,
        Method::PUT,
        "/appointments/A-1",
        "a1",
        appointment("2027-03-29T10:00", "P-1", 1),
    )
    .await;
    let a = a["id"].as_str().unwrap().to_owned();
    let b = his_write(
        &server,
        &his,
        Method::PUT,
        "/appointments/B-1",
        "b1",
        appointment("2027-03-29T11:00", "P-2", 1),
    )
    .await;
    let b = b["id"].as_str().unwrap().to_owned();
    sink.wait_until(WAIT, "two booked e-mails", |m| m.len() == 2)
        .await;
    assert!(sink.mails_to("stale-copy@example.org").is_empty());
    let n = wait_notifications(&server, &admin, &a, "A's reminder planned", |n| {
        of(n, "REMINDER", "SCHEDULED").len() == 1
    })
    .await;
    // 10:00 CEST on 29 March is 08:00 UTC; two hours before.
    assert_eq!(
        due_times(&n, "REMINDER", "SCHEDULED"),
        vec![t("2027-03-29T06:00:00Z")]
    );

    // The HIS moves A to the next day and cancels B.
    his_write(
        &server,
        &his,
        Method::PUT,
        "/appointments/A-1",
        "a2",
        appointment("2027-03-30T10:00", "P-1", 2),
    )
    .await;
    his_write(
        &server,
        &his,
        Method::POST,
        "/appointments/B-1/cancel",
        "b2",
        json!({"version": 2, "reason": "Ward closed"}),
    )
    .await;
    let na = wait_notifications(&server, &admin, &a, "A's reminder moved", |n| {
        of(n, "REMINDER", "CANCELLED").len() == 1 && of(n, "RESCHEDULED", "SENT").len() == 1
    })
    .await;
    assert_eq!(
        due_times(&na, "REMINDER", "SCHEDULED"),
        vec![t("2027-03-30T06:00:00Z")]
    );
    let nb = wait_notifications(&server, &admin, &b, "B's reminder cancelled", |n| {
        of(n, "REMINDER", "CANCELLED").len() == 1 && of(n, "CANCELLED", "SENT").len() == 1
    })
    .await;
    assert!(of(&nb, "REMINDER", "SCHEDULED").is_empty());
    sink.wait_until(WAIT, "the rescheduled and cancelled e-mails", |m| {
        m.len() == 4
    })
    .await;

    // B's old due time passes: nothing. A's comes: one reminder, to the HIS's address.
    server
        .restart_with(options(t("2027-03-29T07:00:05Z"), &sink))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.mails().len(), 4, "{:#?}", sink.mails());
    server
        .restart_with(options(t("2027-03-30T06:00:05Z"), &sink))
        .await;
    sink.wait_until(WAIT, "A's reminder", |m| m.len() == 5)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = sink.mails_to("ada@example.org");
    assert_eq!(mails.len(), 3, "booked, rescheduled, reminder: {mails:#?}");
    assert!(
        sink.mails_to("bob@example.org").len() == 2,
        "booked and cancelled only"
    );
    wait_notifications(&server, &admin, &a, "A's reminder recorded as sent", |n| {
        of(n, "REMINDER", "SENT").len() == 1
    })
    .await;
}

/// RFC 2045 §4: e-mails that carry `Content-Type` and
/// `Content-Transfer-Encoding` must say `MIME-Version: 1.0` (strict mail
/// gateways refuse them otherwise). Every message the real server sends to
/// the SMTP sink, one from the default English template and one with
/// non-ASCII text in the subject and body (encoded), is checked with an off-the-shelf RFC 5322 /
/// MIME parser, and its decoded body is what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_emails_are_mime_messages_a_strict_parser_accepts() {
    let sink = SmtpSink::start().await;
    let deployment = Deployment::embedded();
    let server = deployment
        .start_with(options(t("2027-03-25T12:00:00Z"), &sink))
        .await;
    let h = set_up_hospital(&deployment, &server, "Mime Hospital").await;
    configure(&server, &h.admin, None).await;
    server
        .gql_ok(
            &h.admin,
            SET_TEMPLATE,
            json!({"input": {"kind": "BOOKED", "channel": "EMAIL", "language": "nl",
                "subject": "Bevestiging — {{date}}", "body": "Beste {{patient_name}}, tot ziens om {{time}}. Groetjes, Zoë"}}),
        )
        .await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    server
        .gql_ok(
            &staff,
            RECORD_CONTACT,
            json!({"input": {"hisPatientId": "P-UTF8", "name": "Jürgen Ünal",
                "email": "jurgen@example.org", "language": "nl"}}),
        )
        .await;
    book_for(
        &server,
        &staff,
        &h,
        t("2027-03-29T08:00:00Z"),
        json!({"hisPatientId": "P-ASCII", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    book_for(
        &server,
        &staff,
        &h,
        t("2027-03-29T09:00:00Z"),
        json!({"hisPatientId": "P-UTF8", "name": "Jürgen Ünal", "email": "jurgen@example.org"}),
    )
    .await;
    sink.wait_until(WAIT, "both booked e-mails", |m| m.len() >= 2)
        .await;
    let mails = sink.mails();
    for mail in &mails {
        let body = crate::support::smtp::check_strictly(&mail.raw)
            .unwrap_or_else(|e| panic!("{e}:\n{}", mail.raw));
        assert_eq!(mail.header("mime-version"), Some("1.0"));
        assert_eq!(body.replace("\r\n", "\n").trim_end(), mail.body.trim_end());
    }
    let jurgen = sink.mails_to("jurgen@example.org");
    assert_eq!(jurgen.len(), 1);
    let body = crate::support::smtp::check_strictly(&jurgen[0].raw).unwrap();
    assert!(
        body.contains("Beste Jürgen Ünal") && body.contains("Zoë"),
        "{body}"
    );
    assert!(
        jurgen[0].header("content-transfer-encoding") != Some("7bit"),
        "non-ASCII text is encoded"
    );
}
