//! Push to HIS (issue 5) end to end: the real server binary delivers to a
//! real HTTP receiver on 127.0.0.1 (`support::receiver`) that verifies every
//! signature with the off-the-shelf `standardwebhooks` verifier, records
//! what arrived when, answers as scripted (200, 500, 429 with Retry-After,
//! 410, 400, no answer, connection refused) and catches a webhook-id in
//! flight twice at once.
//!
//! What is checked: every event arrives; per appointment, version n+1 is
//! sent only after version n was delivered; a message keeps its webhook-id
//! through retries and replays; the retry policy (Retry-After, dead letters,
//! 410, refused connections, max attempts and the alert to other endpoints);
//! filters; secret rotation; replays; `kill -9` mid-dispatch; two instances
//! dispatching from one PostgreSQL; and the GraphQL errors of bad input,
//! roles and other tenants. The delivery log read over GraphQL is compared
//! with what the receiver saw.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use futures::future::join_all;
use rand::Rng;
use serde_json::{json, Value};

use crate::server::*;
use crate::support::receiver::{summary, Arrival, Receiver, Reply};

mod postgresql {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_arrives_in_order_per_appointment_through_random_failures() {
        every_event_arrives_in_order_through_random_failures(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_endpoint_cli_manages_endpoints_and_shows_the_delivery_log() {
        endpoint_cli(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_longer_retry_after_is_honoured() {
        retry_after_is_honoured(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_error_dead_letters_at_once_and_holds_the_appointment_until_replayed() {
        client_error_dead_letters_and_replay_releases(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gone_disables_the_endpoint_until_it_is_enabled_again() {
        gone_disables_until_enabled(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_is_retried_until_the_receiver_is_back() {
        refused_connection_is_retried(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_max_attempts_the_message_is_dead_the_endpoint_disabled_and_others_alerted() {
        max_attempts_dead_letter_and_alert(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_hear_only_the_event_types_and_practitioners_they_filter_on() {
        filters(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_endpoint_hears_of_the_very_next_event() {
        new_endpoint_hears_the_next_event(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_a_secret_rotates_both_sign_and_without_overlap_only_the_new_one() {
        secret_rotation(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replaying_an_endpoint_resends_with_the_same_ids_in_order() {
        replay_endpoint(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_puts_the_appointments_failing_message_back_behind_the_replayed_ones() {
        replay_behind_a_failing_message(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rate_limited_endpoint_gets_each_message_once_from_two_instances() {
        rate_limit_with_two_instances(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_during_dispatch_loses_no_message() {
        kill_9_during_dispatch(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_dispatch_without_sending_one_message_twice_at_once() {
        two_instances(Deployment::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_input_roles_and_other_tenants_get_typed_errors() {
        bad_input_roles_and_tenants(Deployment::postgres().await).await;
    }
}

/// The receiver and the checks themselves catch what they must: else the
/// tests above could not fail.
mod harness {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_receiver_catches_bad_signatures_and_a_message_in_flight_twice() {
        receiver_self_check().await;
    }

    #[test]
    fn the_order_check_catches_a_version_sent_before_the_last_was_delivered() {
        order_check_self_check();
    }
}

mod embedded {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_arrives_in_order_per_appointment_through_failures() {
        embedded_delivery_in_order(Deployment::embedded()).await;
    }
}

// --- GraphQL ------------------------------------------------------------------

const CREATE_ENDPOINT: &str = "mutation($input: WebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { secret endpoint { id enabled } } }";
const UPDATE_ENDPOINT: &str = "mutation($id: ID!, $changes: WebhookEndpointChanges!) {
    updateWebhookEndpoint(id: $id, changes: $changes) { id enabled disabledReason } }";
const ROTATE: &str = "mutation($id: ID!, $overlap: Int) {
    rotateWebhookEndpointSecret(id: $id, overlapMinutes: $overlap) {
      secret endpoint { id previousSecretValidUntil } } }";
const REPLAY_MESSAGE: &str =
    "mutation($id: String!) { replayWebhookMessage(id: $id) { id state attemptCount } }";
const REPLAY_ENDPOINT: &str = "mutation($id: ID!, $p: String, $t: DateTime) {
    replayWebhookEndpoint(id: $id, fromPosition: $p, fromTime: $t) }";
const ENDPOINT: &str = "query($id: ID!) { webhookEndpoint(id: $id) {
    id url enabled disabledReason eventTypes practitionerIds
    messageCounts { queued pending delivered dead } } }";
const MESSAGES: &str = "query($id: ID!, $after: String) { webhookEndpoint(id: $id) {
    messages(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id eventId eventType position state attemptCount payload } } } }";
const ATTEMPTS: &str = "query($id: ID!, $after: String) { webhookEndpoint(id: $id) {
    attempts(first: 200, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { messageId attempt statusCode error outcome startedAt } } } }";
const MESSAGE: &str = "query($id: String!) { webhookMessage(id: $id) {
    id state attemptCount lastError payload
    attempts { attempt statusCode error outcome startedAt } } }";

const RESCHEDULE: &str = "mutation($id: ID!, $start: DateTime!) {
    rescheduleAppointment(id: $id, start: $start) { id } }";
const CANCEL: &str = "mutation($id: ID!) {
    cancelAppointment(id: $id, reason: \"patient is ill\", cancelledBy: PATIENT) { id } }";
const CHECK_IN: &str = "mutation($id: ID!) { checkInAppointment(id: $id) { id } }";

/// Server options with delivery settings fit for tests (short retry pauses,
/// a short attempt timeout, frequent polling); `overrides` last.
fn options(overrides: &[(&str, &str)]) -> ServerOptions {
    let mut env: Vec<(String, String)> = [
        ("BUKTOR_WEBHOOKS__RETRY_DELAYS_MS", "[100,200]"),
        ("BUKTOR_WEBHOOKS__MAX_ATTEMPTS", "10"),
        ("BUKTOR_WEBHOOKS__ATTEMPT_TIMEOUT_MS", "1000"),
        ("BUKTOR_WEBHOOKS__LEASE_MS", "3000"),
        ("BUKTOR_WEBHOOKS__POLL_MS", "50"),
    ]
    .iter()
    .chain(overrides)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // The last value of a variable wins: keep only that one.
    let mut seen = BTreeSet::new();
    env.reverse();
    env.retain(|(k, _)| seen.insert(k.clone()));
    env.reverse();
    ServerOptions {
        env,
        ..Default::default()
    }
}

struct Endpoint {
    id: String,
    secret: String,
}

/// Creates an endpoint and tells `receiver` its secret.
async fn create_endpoint(
    server: &TestServer,
    key: &str,
    receiver: &Receiver,
    mut input: Value,
) -> Endpoint {
    input["url"] = json!(receiver.url());
    let data = server
        .gql_ok(key, CREATE_ENDPOINT, json!({ "input": input }))
        .await;
    let created = &data["createWebhookEndpoint"];
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.set_secrets(&[&secret]);
    Endpoint {
        id: created["endpoint"]["id"]
            .as_str()
            .expect("an id")
            .to_owned(),
        secret,
    }
}

async fn endpoint(server: &TestServer, key: &str, id: &str) -> Value {
    server.gql_ok(key, ENDPOINT, json!({ "id": id })).await["webhookEndpoint"].clone()
}

/// A message as the delivery log shows it.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    event_id: String,
    event_type: String,
    position: String,
    state: String,
    attempt_count: u64,
    /// `data.appointment.id` and `.version` of the payload.
    appointment: Option<(String, i64)>,
}

fn message_of(node: &Value) -> Message {
    let payload: Value =
        serde_json::from_str(node["payload"].as_str().expect("a payload")).expect("JSON");
    let a = &payload["data"]["appointment"];
    Message {
        id: node["id"].as_str().expect("an id").to_owned(),
        event_id: node["eventId"].as_str().unwrap_or_default().to_owned(),
        event_type: node["eventType"].as_str().unwrap_or_default().to_owned(),
        position: node["position"].as_str().unwrap_or_default().to_owned(),
        state: node["state"].as_str().unwrap_or_default().to_owned(),
        attempt_count: node["attemptCount"].as_u64().unwrap_or_default(),
        appointment: a["id"]
            .as_str()
            .map(|id| (id.to_owned(), a["version"].as_i64().expect("a version"))),
    }
}

/// Every message of an endpoint, in global order.
async fn messages(server: &TestServer, key: &str, endpoint: &str) -> Vec<Message> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = server
            .gql_ok(key, MESSAGES, json!({ "id": endpoint, "after": after }))
            .await;
        let page = &data["webhookEndpoint"]["messages"];
        all.extend(
            page["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(message_of),
        );
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return all;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// One delivery attempt as the log shows it.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    message_id: String,
    attempt: u64,
    status: Option<u16>,
    error: Option<String>,
    outcome: String,
    started_at: DateTime<Utc>,
}

fn attempt_of(node: &Value, message_id: Option<&str>) -> Attempt {
    Attempt {
        message_id: node["messageId"]
            .as_str()
            .or(message_id)
            .unwrap_or_default()
            .to_owned(),
        attempt: node["attempt"].as_u64().expect("an attempt number"),
        status: node["statusCode"].as_u64().map(|s| s as u16),
        error: node["error"].as_str().map(str::to_owned),
        outcome: node["outcome"].as_str().expect("an outcome").to_owned(),
        started_at: instant(&node["startedAt"]),
    }
}

/// Every attempt at an endpoint, oldest first.
async fn attempts(server: &TestServer, key: &str, endpoint: &str) -> Vec<Attempt> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = server
            .gql_ok(key, ATTEMPTS, json!({ "id": endpoint, "after": after }))
            .await;
        let page = &data["webhookEndpoint"]["attempts"];
        all.extend(
            page["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| attempt_of(n, None)),
        );
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return all;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// `webhookMessage(id)` and its attempts.
async fn message(server: &TestServer, key: &str, id: &str) -> (Value, Vec<Attempt>) {
    let m = server.gql_ok(key, MESSAGE, json!({ "id": id })).await["webhookMessage"].clone();
    let attempts = m["attempts"]
        .as_array()
        .map(|a| a.iter().map(|n| attempt_of(n, Some(id))).collect())
        .unwrap_or_default();
    (m, attempts)
}

/// Polls `probe` until it returns something; panics after `within`.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the endpoint's messages are all delivered, and `delivered` of them.
async fn await_all_delivered(
    server: &TestServer,
    key: &str,
    endpoint_id: &str,
    delivered: u64,
    within: Duration,
) {
    let want = json!({"queued": 0, "pending": 0, "delivered": delivered, "dead": 0});
    let deadline = Instant::now() + within;
    loop {
        let last = endpoint(server, key, endpoint_id).await["messageCounts"].clone();
        if last == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint's messages are {last}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- appointments ---------------------------------------------------------------

async fn book_at(server: &TestServer, h: &Hospital, start: DateTime<Utc>, patient: &str) -> String {
    let data = server
        .gql_ok(
            &h.admin,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, start, patient)}),
        )
        .await;
    data["bookAppointment"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

async fn reschedule(server: &TestServer, key: &str, id: &str, start: DateTime<Utc>) {
    server
        .gql_ok(key, RESCHEDULE, json!({"id": id, "start": iso(start)}))
        .await;
}

async fn cancel(server: &TestServer, key: &str, id: &str) {
    server.gql_ok(key, CANCEL, json!({ "id": id })).await;
}

/// Check-up slots on `day`, 06:00 to 21:45 local (clear of any DST change).
/// All are free in a fresh [`Hospital`]: its practitioner works every day
/// 00:00–23:45 on a 15-minute grid. (Computed rather than read from
/// `availableSlots`, which answers from read models that may lag.)
fn slots(day: NaiveDate) -> Vec<DateTime<Utc>> {
    (6..22)
        .flat_map(|h| [0, 15, 30, 45].map(|m| local(day, h, m)))
        .collect()
}

/// Check-up slots starting 2 to 100 minutes from now: check-in opens two
/// hours before the start, so these can be checked in at once.
fn soon_slots() -> Vec<DateTime<Utc>> {
    let now = Utc::now();
    let today = now.with_timezone(&TIME_ZONE).date_naive();
    let mut found = Vec::new();
    for day in [today, today.succ_opt().expect("a date")] {
        for minutes in (0..=23 * 60 + 30).step_by(15) {
            let at = day
                .and_time(NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).expect("a time"));
            let Some(start) = TIME_ZONE.from_local_datetime(&at).single() else {
                continue;
            };
            let start = start.with_timezone(&Utc);
            if start > now + chrono::Duration::minutes(2)
                && start < now + chrono::Duration::minutes(100)
            {
                found.push(start);
            }
        }
    }
    found
}

/// What a test did to one appointment: the payload type of each version.
#[derive(Debug, Clone)]
struct Done {
    id: String,
    types: Vec<&'static str>,
}

impl Done {
    fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        (1..=self.types.len() as i64).map(|v| (self.id.clone(), v))
    }
}

/// (appointment id, version): one event of one appointment.
type Key = (String, i64);

fn key(a: &Arrival) -> Option<Key> {
    Some((a.appointment_id.clone()?, a.appointment_version?))
}

/// `n` appointments, each booked and then changed in one of four ways
/// (checked in; cancelled; rescheduled and cancelled; rescheduled twice),
/// all at once, the i-th through `servers[i % len]`.
async fn busy_appointments(servers: &[&TestServer], h: &Hospital, n: usize) -> Vec<Done> {
    let mut soon = soon_slots();
    let mut first = slots(days_ahead(3)).into_iter();
    let mut moved = slots(days_ahead(4)).into_iter();
    let mut plans = Vec::new();
    for i in 0..n {
        let kind = if i % 4 == 0 && soon.is_empty() {
            1
        } else {
            i % 4
        };
        let start = if kind == 0 {
            soon.remove(0)
        } else {
            first.next().expect("a free slot")
        };
        let targets: Vec<DateTime<Utc>> = match kind {
            2 => vec![moved.next().expect("a free slot")],
            3 => vec![
                moved.next().expect("a free slot"),
                moved.next().expect("a free slot"),
            ],
            _ => vec![],
        };
        plans.push((i, kind, start, targets));
    }
    let runs = plans.into_iter().map(|(i, kind, start, targets)| {
        let server = servers[i % servers.len()];
        let other = servers[(i + 1) % servers.len()];
        async move {
            let id = book_at(server, h, start, &format!("P-{i}")).await;
            let mut types = vec!["appointment.booked"];
            for t in &targets {
                reschedule(other, &h.admin, &id, *t).await;
                types.push("appointment.rescheduled");
            }
            match kind {
                0 => {
                    server.gql_ok(&h.admin, CHECK_IN, json!({ "id": id })).await;
                    types.push("appointment.checked_in");
                }
                1 | 2 => {
                    cancel(other, &h.admin, &id).await;
                    types.push("appointment.cancelled");
                }
                _ => {}
            }
            Done { id, types }
        }
    });
    join_all(runs).await
}

// --- checks -----------------------------------------------------------------

/// Per appointment: the first request of version n+1 came after a request of
/// version n was answered 2xx, and after every request of version n ended.
fn assert_in_order(arrivals: &[Arrival]) {
    let mut by_key: BTreeMap<Key, Vec<&Arrival>> = BTreeMap::new();
    for a in arrivals {
        if let Some(k) = key(a) {
            by_key.entry(k).or_default().push(a);
        }
    }
    for ((id, version), next) in &by_key {
        if *version == 1 {
            continue;
        }
        let Some(before) = by_key.get(&(id.clone(), version - 1)) else {
            panic!(
                "{id} v{version} arrived, v{} never did:\n{}",
                version - 1,
                summary(arrivals)
            );
        };
        let first_next = next.iter().map(|a| a.arrived).min().expect("one");
        assert!(
            before
                .iter()
                .any(|a| a.succeeded() && a.answered.is_some_and(|t| t <= first_next)),
            "{id} v{version} was sent before v{} was delivered:\n{}",
            version - 1,
            summary(arrivals)
        );
        assert!(
            before
                .iter()
                .all(|a| a.arrived < first_next && a.ended.is_some_and(|t| t <= first_next)),
            "a request of {id} v{} was still in flight or came again after v{version} was sent:\n{}",
            version - 1,
            summary(arrivals)
        );
    }
}

/// Every request of one event carries one webhook-id, and different events
/// different ids. Returns the id of each event.
fn assert_ids_stable(arrivals: &[Arrival]) -> BTreeMap<Key, String> {
    let mut ids: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for a in arrivals {
        if let Some(k) = key(a) {
            ids.entry(k).or_default().insert(a.webhook_id.clone());
        }
    }
    let mut owners: BTreeMap<&str, &Key> = BTreeMap::new();
    for (k, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "{k:?} arrived with several webhook-ids: {set:?}"
        );
        let id = set.first().expect("one");
        if let Some(other) = owners.insert(id, k) {
            panic!("{k:?} and {other:?} arrived with the same webhook-id {id}");
        }
    }
    ids.into_iter()
        .map(|(k, set)| (k, set.into_iter().next().expect("one")))
        .collect()
}

/// What the receiver answered to each request of each webhook-id, in order:
/// a status, or `None` for no answer.
fn answers(arrivals: &[Arrival]) -> BTreeMap<String, Vec<Option<u16>>> {
    let mut map: BTreeMap<String, Vec<Option<u16>>> = BTreeMap::new();
    for a in arrivals {
        let answered = a.answered.map(|_| a.status.expect("a status"));
        map.entry(a.webhook_id.clone()).or_default().push(answered);
    }
    map
}

/// The delivery log agrees with the receiver: per message the same number of
/// attempts, numbered 1, 2, …, with the statuses it answered (no status and
/// a timeout error where it did not answer).
fn assert_log_matches(log: &[Attempt], arrivals: &[Arrival]) {
    let mut logged: BTreeMap<String, Vec<&Attempt>> = BTreeMap::new();
    for a in log {
        logged.entry(a.message_id.clone()).or_default().push(a);
    }
    let seen = answers(arrivals);
    assert_eq!(
        logged.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>(),
        "the log and the receiver know different messages"
    );
    for (id, attempts) in &logged {
        let numbers: Vec<u64> = attempts.iter().map(|a| a.attempt).collect();
        let expected: Vec<u64> = (1..=attempts.len() as u64).collect();
        assert_eq!(numbers, expected, "attempt numbers of {id}");
        let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.status).collect();
        assert_eq!(
            &statuses, &seen[id],
            "statuses of {id}: the log says {attempts:#?}"
        );
        for a in attempts {
            match a.status {
                Some(s) if (200..300).contains(&s) => assert_eq!(a.outcome, "delivered", "{a:?}"),
                Some(_) => assert_ne!(a.outcome, "delivered", "{a:?}"),
                None => assert!(
                    a.error.as_deref().is_some_and(|e| e.contains("no answer")),
                    "an unanswered attempt is logged as a timeout: {a:?}"
                ),
            }
        }
    }
}

// --- 1. every event, in order, through failures ---------------------------------

async fn every_event_arrives_in_order_through_random_failures(deployment: Deployment) {
    let server = deployment
        .start_with(options(&[
            ("BUKTOR_WEBHOOKS__ATTEMPT_TIMEOUT_MS", "800"),
            ("BUKTOR_WEBHOOKS__LEASE_MS", "2000"),
            ("BUKTOR_WEBHOOKS__MAX_ATTEMPTS", "15"),
        ]))
        .await;
    let h = set_up_hospital(&deployment, &server, "Flaky HIS Hospital").await;
    let receiver = Receiver::start().await;
    // About 30% fail: 500, 429 with Retry-After, or no answer at all.
    receiver.set_policy(|_| {
        let roll: f64 = rand::thread_rng().gen();
        if roll < 0.15 {
            Reply::status(500)
        } else if roll < 0.22 {
            Reply::too_many(1)
        } else if roll < 0.30 {
            Reply::hang()
        } else {
            Reply::ok()
        }
    });
    let e = create_endpoint(&server, &h.admin, &receiver, json!({"description": "HIS"})).await;

    let started = Instant::now();
    let done = busy_appointments(&[&server], &h, 20).await;
    let expected: BTreeSet<Key> = done.iter().flat_map(|d| d.keys()).collect();
    receiver
        .wait_until(
            "every event answered 2xx",
            Duration::from_secs(45),
            |arrivals| {
                let delivered: BTreeSet<Key> = arrivals
                    .iter()
                    .filter(|a| a.succeeded())
                    .filter_map(key)
                    .collect();
                expected.is_subset(&delivered)
            },
        )
        .await;
    await_all_delivered(
        &server,
        &h.admin,
        &e.id,
        expected.len() as u64,
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "{} events delivered in {:?}",
        expected.len(),
        started.elapsed()
    );

    let arrivals = receiver.arrivals();
    receiver.assert_no_problems();
    // Nothing but these events, each with the type of what was done.
    let types: BTreeMap<Key, &str> = done
        .iter()
        .flat_map(|d| d.keys().zip(d.types.iter().copied()))
        .collect();
    for a in &arrivals {
        let k = key(a).unwrap_or_else(|| panic!("not about an appointment: {a:?}"));
        assert_eq!(Some(&a.event_type.as_str()), types.get(&k), "{a:?}");
    }
    assert_in_order(&arrivals);
    let ids = assert_ids_stable(&arrivals);
    assert_eq!(ids.len(), expected.len());
    let failed = arrivals.iter().filter(|a| !a.succeeded()).count();
    assert!(
        failed > 0,
        "the receiver failed no request: the test proved nothing"
    );
    // Exactly one 2xx per message: a delivered message is not sent again.
    for (k, id) in &ids {
        let ok = arrivals
            .iter()
            .filter(|a| &a.webhook_id == id && a.succeeded())
            .count();
        assert_eq!(ok, 1, "{k:?} was answered 2xx {ok} times");
    }
    assert_log_matches(&attempts(&server, &h.admin, &e.id).await, &arrivals);
    // The log's messages are the receiver's: same ids for the same events.
    let logged = messages(&server, &h.admin, &e.id).await;
    for m in &logged {
        let k = m.appointment.clone().expect("an appointment message");
        assert_eq!(ids.get(&k), Some(&m.id), "{m:?}");
        assert_eq!(types.get(&k), Some(&m.event_type.as_str()), "{m:?}");
        assert_eq!(m.state, "DELIVERED");
        assert_eq!(
            m.attempt_count as usize,
            arrivals.iter().filter(|a| a.webhook_id == m.id).count()
        );
    }
    eprintln!(
        "{} requests, {failed} failed on purpose; test took {:?}",
        arrivals.len(),
        started.elapsed()
    );
}

// --- 2. the retry policy ----------------------------------------------------------

async fn retry_after_is_honoured(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Busy HIS Hospital").await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::too_many(2)]);
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let slot = slots(days_ahead(2))[0];
    book_at(&server, &h, slot, "P-1").await;

    let arrivals = receiver
        .wait_until("a retry after the 429", Duration::from_secs(15), |a| {
            a.iter().any(|a| a.succeeded())
        })
        .await;
    receiver.assert_no_problems();
    assert_eq!(arrivals.len(), 2, "{}", summary(&arrivals));
    assert_eq!(arrivals[0].status, Some(429));
    let pause = arrivals[1].arrived - arrivals[0].arrived;
    assert!(
        pause >= Duration::from_secs(2),
        "retried after {pause:?}, though Retry-After asked for 2 s (the schedule says 100 ms)"
    );
    assert_eq!(arrivals[0].webhook_id, arrivals[1].webhook_id);
    await_all_delivered(&server, &h.admin, &e.id, 1, Duration::from_secs(5)).await;
    let (m, log) = message(&server, &h.admin, &arrivals[0].webhook_id).await;
    assert_eq!(m["state"], "DELIVERED");
    assert_eq!(
        log.iter()
            .map(|a| (a.attempt, a.status, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        [(1, Some(429), "retry"), (2, Some(200), "delivered")]
    );
    assert!(log[1].started_at - log[0].started_at >= chrono::Duration::seconds(2));
}

async fn client_error_dead_letters_and_replay_releases(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Strict HIS Hospital").await;
    let receiver = Receiver::start().await;
    // The HIS refuses the first message it is sent, once.
    receiver.set_policy(|m| {
        if m.appointment_version == Some(1)
            && m.earlier == 0
            && m.event_type == "appointment.booked"
        {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let slots = slots(days_ahead(2));
    let a = book_at(&server, &h, slots[0], "P-A").await;
    let first = receiver
        .wait_until("the booking of A", Duration::from_secs(15), |x| {
            !x.is_empty()
        })
        .await[0]
        .clone();
    assert_eq!(first.status, Some(400));
    // Later changes of A wait behind the dead message; B is not held up.
    reschedule(&server, &h.admin, &a, slots[1]).await;
    cancel(&server, &h.admin, &a).await;
    receiver.set_policy(|_| Reply::ok());
    let b = book_at(&server, &h, slots[2], "P-B").await;
    receiver
        .wait_until("the booking of B", Duration::from_secs(15), |x| {
            x.iter()
                .any(|x| x.appointment_id.as_deref() == Some(b.as_str()))
        })
        .await;
    // The fan-out wrote A's later messages before B's: they are stored.
    let stored = eventually(
        "A's three messages are stored",
        Duration::from_secs(10),
        async || {
            let all = messages(&server, &h.admin, &e.id).await;
            let of_a: Vec<Message> = all
                .into_iter()
                .filter(|m| m.appointment.as_ref().is_some_and(|(id, _)| id == &a))
                .collect();
            (of_a.len() == 3).then_some(of_a)
        },
    )
    .await;
    assert_eq!(
        stored
            .iter()
            .map(|m| (
                m.appointment.clone().unwrap().1,
                m.state.as_str(),
                m.attempt_count
            ))
            .collect::<Vec<_>>(),
        [(1, "DEAD", 1), (2, "QUEUED", 0), (3, "QUEUED", 0)],
        "a 4xx is given up on at once and holds the rest of the appointment"
    );
    // And they stay queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = receiver.arrivals();
    assert!(
        arrivals
            .iter()
            .filter(|x| x.appointment_id.as_deref() == Some(a.as_str()))
            .all(|x| x.webhook_id == first.webhook_id),
        "A's later messages were sent past the dead one:\n{}",
        summary(&arrivals)
    );
    let (m, log) = message(&server, &h.admin, &first.webhook_id).await;
    assert_eq!(m["state"], "DEAD");
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].status, log[0].outcome.as_str()),
        (Some(400), "dead-letter")
    );
    assert_eq!(
        endpoint(&server, &h.admin, &e.id).await["enabled"],
        true,
        "a dead letter does not disable an endpoint unless asked to"
    );

    // Replayed: delivered, and then A's queued messages in order.
    let replayed = server
        .gql_ok(&h.admin, REPLAY_MESSAGE, json!({"id": first.webhook_id}))
        .await;
    assert_eq!(replayed["replayWebhookMessage"]["id"], first.webhook_id);
    assert_eq!(replayed["replayWebhookMessage"]["state"], "PENDING");
    let arrivals = receiver
        .wait_until(
            "A's three versions delivered",
            Duration::from_secs(15),
            |x| {
                (1..=3).all(|v| {
                    x.iter().any(|x| {
                        x.succeeded()
                            && x.appointment_id.as_deref() == Some(a.as_str())
                            && x.appointment_version == Some(v)
                    })
                })
            },
        )
        .await;
    receiver.assert_no_problems();
    assert_in_order(&arrivals);
    let ids = assert_ids_stable(&arrivals);
    assert_eq!(
        ids[&(a.clone(), 1)],
        first.webhook_id,
        "the replay keeps the id"
    );
    let of_a: Vec<(i64, Option<u16>)> = arrivals
        .iter()
        .filter(|x| x.appointment_id.as_deref() == Some(a.as_str()))
        .map(|x| (x.appointment_version.unwrap(), x.status))
        .collect();
    assert_eq!(
        of_a,
        [
            (1, Some(400)),
            (1, Some(200)),
            (2, Some(200)),
            (3, Some(200))
        ]
    );
    await_all_delivered(&server, &h.admin, &e.id, 4, Duration::from_secs(5)).await;
    let (_, log) = message(&server, &h.admin, &first.webhook_id).await;
    assert_eq!(
        log.iter()
            .map(|a| (a.attempt, a.status))
            .collect::<Vec<_>>(),
        [(1, Some(400)), (2, Some(200))]
    );
    // A delivered message is not dead: it cannot be replayed on its own.
    assert_eq!(
        server
            .gql_err(&h.admin, REPLAY_MESSAGE, json!({"id": first.webhook_id}))
            .await,
        "NOT_DEAD"
    );
}

async fn gone_disables_until_enabled(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Moved HIS Hospital").await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let slots = slots(days_ahead(2));
    let a = book_at(&server, &h, slots[0], "P-A").await;
    receiver
        .wait_until("the booking of A", Duration::from_secs(15), |x| {
            !x.is_empty()
        })
        .await;
    let disabled = eventually(
        "the endpoint is disabled",
        Duration::from_secs(5),
        async || {
            let ep = endpoint(&server, &h.admin, &e.id).await;
            (ep["enabled"] == false).then_some(ep)
        },
    )
    .await;
    let reason = disabled["disabledReason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "disabled because {reason:?}");
    // Nothing more is sent while it is disabled, old or new.
    let b = book_at(&server, &h, slots[1], "P-B").await;
    eventually(
        "B's message is stored",
        Duration::from_secs(10),
        async || {
            let all = messages(&server, &h.admin, &e.id).await;
            all.iter()
                .any(|m| m.appointment.as_ref().is_some_and(|(id, _)| id == &b))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let arrivals = receiver.arrivals();
    assert_eq!(
        arrivals.len(),
        1,
        "sent to a disabled endpoint:\n{}",
        summary(&arrivals)
    );
    let (m, log) = message(&server, &h.admin, &arrivals[0].webhook_id).await;
    assert_eq!(
        m["state"], "PENDING",
        "410 keeps the message for when it is enabled"
    );
    assert_eq!(
        log.iter()
            .map(|a| (a.status, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        [(Some(410), "endpoint-gone")]
    );

    let enabled = server
        .gql_ok(
            &h.admin,
            UPDATE_ENDPOINT,
            json!({"id": e.id, "changes": {"enabled": true}}),
        )
        .await;
    assert_eq!(enabled["updateWebhookEndpoint"]["enabled"], true);
    assert_eq!(
        enabled["updateWebhookEndpoint"]["disabledReason"],
        Value::Null
    );
    let arrivals = receiver
        .wait_until("A and B delivered", Duration::from_secs(15), |x| {
            [&a, &b].iter().all(|id| {
                x.iter()
                    .any(|x| x.succeeded() && x.appointment_id.as_deref() == Some(id.as_str()))
            })
        })
        .await;
    receiver.assert_no_problems();
    assert_ids_stable(&arrivals);
    await_all_delivered(&server, &h.admin, &e.id, 2, Duration::from_secs(5)).await;
    assert_log_matches(&attempts(&server, &h.admin, &e.id).await, &arrivals);
}

async fn refused_connection_is_retried(deployment: Deployment) {
    let server = deployment
        .start_with(options(&[(
            "BUKTOR_WEBHOOKS__RETRY_DELAYS_MS",
            "[200,400]",
        )]))
        .await;
    let h = set_up_hospital(&deployment, &server, "Offline HIS Hospital").await;
    let receiver = Receiver::start().await;
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    receiver.stop().await;
    let slot = slots(days_ahead(2))[0];
    let a = book_at(&server, &h, slot, "P-A").await;
    // Two refused attempts in the log, then the receiver comes back.
    let id = eventually(
        "two refused attempts",
        Duration::from_secs(15),
        async || {
            let log = attempts(&server, &h.admin, &e.id).await;
            (log.len() >= 2).then(|| log[0].message_id.clone())
        },
    )
    .await;
    receiver.restart().await;
    let arrivals = receiver
        .wait_until("A delivered", Duration::from_secs(15), |x| {
            x.iter().any(|x| x.succeeded())
        })
        .await;
    receiver.assert_no_problems();
    assert_eq!(arrivals.len(), 1, "{}", summary(&arrivals));
    assert_eq!(arrivals[0].appointment_id.as_deref(), Some(a.as_str()));
    assert_eq!(arrivals[0].webhook_id, id);
    await_all_delivered(&server, &h.admin, &e.id, 1, Duration::from_secs(5)).await;
    let (_, log) = message(&server, &h.admin, &id).await;
    let (last, refused) = log.split_last().expect("attempts");
    assert!(refused.len() >= 2, "{log:#?}");
    for r in refused {
        assert_eq!(r.status, None, "{r:?}");
        assert_eq!(r.outcome, "retry", "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            error.to_lowercase().contains("refused"),
            "the log says why: {error:?}"
        );
    }
    assert_eq!(
        (last.status, last.outcome.as_str()),
        (Some(200), "delivered")
    );
}

async fn max_attempts_dead_letter_and_alert(deployment: Deployment) {
    let server = deployment
        .start_with(options(&[("BUKTOR_WEBHOOKS__MAX_ATTEMPTS", "8")]))
        .await;
    let h = set_up_hospital(&deployment, &server, "Broken HIS Hospital").await;
    let broken = Receiver::start().await;
    broken.set_policy(|_| Reply::status(500));
    let monitor = Receiver::start().await;
    let e = create_endpoint(
        &server,
        &h.admin,
        &broken,
        json!({"maxAttempts": 3, "disableOnDeadLetter": true}),
    )
    .await;
    let m = create_endpoint(
        &server,
        &h.admin,
        &monitor,
        json!({"eventTypes": ["webhook.dead_lettered"]}),
    )
    .await;
    let slots = slots(days_ahead(2));
    let a = book_at(&server, &h, slots[0], "P-A").await;

    let alert = monitor
        .wait_until("the dead-letter alert", Duration::from_secs(20), |x| {
            !x.is_empty()
        })
        .await[0]
        .clone();
    let sent = broken.arrivals();
    assert_eq!(
        sent.len(),
        3,
        "the endpoint's own maxAttempts:\n{}",
        summary(&sent)
    );
    assert!(sent
        .iter()
        .all(|x| x.appointment_id.as_deref() == Some(a.as_str())));
    let dead_id = sent[0].webhook_id.clone();
    assert_eq!(alert.event_type, "webhook.dead_lettered");
    let body = &alert.body["data"]["alert"];
    assert_eq!(body["endpointId"], json!(e.id), "{body}");
    assert_eq!(body["messageId"], json!(dead_id), "{body}");
    assert_eq!(body["eventType"], "appointment.booked", "{body}");
    assert_eq!(body["attempts"], 3, "{body}");
    assert_eq!(body["lastStatus"], 500, "{body}");
    assert_eq!(body["endpointDisabled"], true, "{body}");
    assert!(alert.body["data"].get("appointment").is_none());

    let ep = endpoint(&server, &h.admin, &e.id).await;
    assert_eq!(ep["enabled"], false);
    assert!(
        ep["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("dead-letter")),
        "{ep}"
    );
    assert_eq!(
        ep["messageCounts"],
        json!({"queued": 0, "pending": 0, "delivered": 0, "dead": 1})
    );
    let (msg, log) = message(&server, &h.admin, &dead_id).await;
    assert_eq!(msg["state"], "DEAD");
    assert_eq!(msg["attemptCount"], 3);
    assert_eq!(
        log.iter()
            .map(|a| (a.status, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            (Some(500), "retry"),
            (Some(500), "retry"),
            (Some(500), "dead-letter")
        ]
    );
    assert_log_matches(&attempts(&server, &h.admin, &e.id).await, &sent);
    // The monitor got the alert and nothing else (its filter), and the
    // disabled endpoint gets nothing more.
    book_at(&server, &h, slots[1], "P-B").await;
    eventually(
        "the monitor's alert is delivered",
        Duration::from_secs(10),
        async || {
            let c = endpoint(&server, &h.admin, &m.id).await["messageCounts"].clone();
            (c == json!({"queued": 0, "pending": 0, "delivered": 1, "dead": 0})).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        monitor.arrivals().len(),
        1,
        "{}",
        summary(&monitor.arrivals())
    );
    assert_eq!(
        broken.arrivals().len(),
        3,
        "{}",
        summary(&broken.arrivals())
    );
    broken.assert_no_problems();
    monitor.assert_no_problems();
    assert_eq!(
        alert.verified,
        [true],
        "signed with the monitor's own secret"
    );
}

// --- 3. filters and secrets ---------------------------------------------------------

async fn filters(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Filtering HIS Hospital").await;
    let elsewhere = register_practitioner(&server, &h.admin, "Dr. Elsewhere").await;
    let all = Receiver::start().await;
    let cancellations = Receiver::start().await;
    let mine = Receiver::start().await;
    let others = Receiver::start().await;
    let e_all = create_endpoint(&server, &h.admin, &all, json!({})).await;
    let e_cancel = create_endpoint(
        &server,
        &h.admin,
        &cancellations,
        json!({"eventTypes": ["appointment.cancelled"]}),
    )
    .await;
    let e_mine = create_endpoint(
        &server,
        &h.admin,
        &mine,
        json!({"practitionerIds": [h.practitioner]}),
    )
    .await;
    let e_others = create_endpoint(
        &server,
        &h.admin,
        &others,
        json!({"practitionerIds": [elsewhere]}),
    )
    .await;
    let listed = endpoint(&server, &h.admin, &e_cancel.id).await;
    assert_eq!(listed["eventTypes"], json!(["appointment.cancelled"]));
    assert_eq!(
        endpoint(&server, &h.admin, &e_others.id).await["practitionerIds"],
        json!([elsewhere])
    );

    let slots = slots(days_ahead(2));
    let a = book_at(&server, &h, slots[0], "P-A").await;
    reschedule(&server, &h.admin, &a, slots[1]).await;
    cancel(&server, &h.admin, &a).await;
    let b = book_at(&server, &h, slots[2], "P-B").await;
    let everything = [
        (a.clone(), 1),
        (a.clone(), 2),
        (a.clone(), 3),
        (b.clone(), 1),
    ];
    for (r, what) in [(&all, "everything"), (&mine, "their practitioner's events")] {
        r.wait_until(what, Duration::from_secs(15), |x| {
            everything.iter().all(|k| {
                x.iter()
                    .any(|x| x.succeeded() && key(x).as_ref() == Some(k))
            })
        })
        .await;
    }
    cancellations
        .wait_until("the cancellation", Duration::from_secs(15), |x| {
            x.iter().any(|x| x.succeeded())
        })
        .await;
    await_all_delivered(&server, &h.admin, &e_all.id, 4, Duration::from_secs(5)).await;
    await_all_delivered(&server, &h.admin, &e_mine.id, 4, Duration::from_secs(5)).await;
    await_all_delivered(&server, &h.admin, &e_cancel.id, 1, Duration::from_secs(5)).await;
    // The fan-out writes every endpoint's messages of an event together: the
    // others' endpoint had its chance and was owed nothing.
    await_all_delivered(&server, &h.admin, &e_others.id, 0, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // What arrived, in order per appointment (appointments go in parallel).
    assert_in_order(&all.arrivals());
    assert_in_order(&mine.arrivals());
    let got = |r: &Receiver| -> BTreeSet<(Key, String)> {
        r.arrivals()
            .iter()
            .map(|x| (key(x).expect("an appointment"), x.event_type.clone()))
            .collect()
    };
    assert_eq!(all.arrivals().len(), 4, "{}", summary(&all.arrivals()));
    assert_eq!(mine.arrivals().len(), 4, "{}", summary(&mine.arrivals()));
    assert_eq!(
        got(&mine),
        got(&all),
        "the practitioner filter keeps their events"
    );
    assert_eq!(
        got(&cancellations),
        BTreeSet::from([((a.clone(), 3), "appointment.cancelled".to_owned())])
    );
    assert!(
        others.arrivals().is_empty(),
        "{}",
        summary(&others.arrivals())
    );
    for r in [&all, &cancellations, &mine, &others] {
        r.assert_no_problems();
    }
    // The same event has a different webhook-id at each endpoint.
    let at_all = all
        .arrivals()
        .into_iter()
        .find(|x| x.event_type == "appointment.cancelled")
        .expect("the cancellation");
    assert_ne!(at_all.webhook_id, cancellations.arrivals()[0].webhook_id);
    assert_eq!(at_all.event_id, cancellations.arrivals()[0].event_id);
}

/// An endpoint hears of every event recorded after it was made, even while
/// the fan-out is busy with the hospital's other endpoints.
async fn new_endpoint_hears_the_next_event(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Growing HIS Hospital").await;
    let first = Receiver::start().await;
    create_endpoint(&server, &h.admin, &first, json!({})).await;
    let mut slots = slots(days_ahead(2)).into_iter();
    let a = book_at(&server, &h, slots.next().expect("a slot"), "P-0").await;
    first
        .wait_until("the first booking", Duration::from_secs(15), |x| {
            x.iter()
                .any(|x| x.appointment_id.as_deref() == Some(a.as_str()))
        })
        .await;
    for round in 1..=3 {
        let later = Receiver::start().await;
        let e = create_endpoint(&server, &h.admin, &later, json!({})).await;
        let b = book_at(
            &server,
            &h,
            slots.next().expect("a slot"),
            &format!("P-{round}"),
        )
        .await;
        first
            .wait_until("the next booking", Duration::from_secs(15), |x| {
                x.iter()
                    .any(|x| x.appointment_id.as_deref() == Some(b.as_str()))
            })
            .await;
        let owed = messages(&server, &h.admin, &e.id).await;
        assert_eq!(
            owed.iter()
                .map(|m| m.appointment.clone())
                .collect::<Vec<_>>(),
            [Some((b.clone(), 1))],
            "round {round}: the endpoint made just before the booking is owed it"
        );
        later
            .wait_until("the booking", Duration::from_secs(15), |x| !x.is_empty())
            .await;
        later.assert_no_problems();
    }
    first.assert_no_problems();
}

async fn secret_rotation(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Rotating HIS Hospital").await;
    let receiver = Receiver::start().await;
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let old = e.secret.clone();
    let slots = slots(days_ahead(2));
    let mut slots = slots.into_iter();
    let mut booked = 0;

    // Books one appointment and returns how it arrived.
    let mut book_one = async |receiver: &Receiver| -> Arrival {
        booked += 1;
        let id = book_at(&server, &h, slots.next().expect("a slot"), "P-R").await;
        receiver
            .wait_until("the booking", Duration::from_secs(15), |x| {
                x.iter()
                    .any(|x| x.appointment_id.as_deref() == Some(id.as_str()))
            })
            .await
            .into_iter()
            .find(|x| x.appointment_id.as_deref() == Some(id.as_str()))
            .expect("it arrived")
    };

    let before = book_one(&receiver).await;
    assert_eq!(
        (before.signatures, before.verified.clone()),
        (1, vec![true])
    );

    // With an overlap, both secrets sign.
    let rotated = server
        .gql_ok(&h.admin, ROTATE, json!({"id": e.id, "overlap": 60}))
        .await;
    let new = rotated["rotateWebhookEndpointSecret"]["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    assert_ne!(new, old);
    let until =
        instant(&rotated["rotateWebhookEndpointSecret"]["endpoint"]["previousSecretValidUntil"]);
    let overlap = until - Utc::now();
    assert!(
        overlap > chrono::Duration::minutes(59) && overlap <= chrono::Duration::minutes(60),
        "{until}"
    );
    let rotated_at = Instant::now();
    receiver.set_secrets(&[&new, &old]);
    let during = book_one(&receiver).await;
    eprintln!(
        "rotation with overlap: first message {:?} after",
        rotated_at.elapsed()
    );
    assert_eq!(
        (during.signatures, during.verified.clone()),
        (2, vec![true, true]),
        "a message sent after the rotation is signed by the new and the old secret"
    );

    // Without an overlap, only the new one signs from now on.
    let rotated = server
        .gql_ok(&h.admin, ROTATE, json!({"id": e.id, "overlap": 0}))
        .await;
    let newest = rotated["rotateWebhookEndpointSecret"]["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    assert_eq!(
        rotated["rotateWebhookEndpointSecret"]["endpoint"]["previousSecretValidUntil"],
        Value::Null
    );
    receiver.set_secrets(&[&newest, &new, &old]);
    let after = book_one(&receiver).await;
    assert_eq!(
        (after.signatures, after.verified.clone()),
        (1, vec![true, false, false]),
        "a message sent after a rotation without overlap is signed by the new secret only"
    );
    receiver.assert_no_problems();
    assert_eq!(booked, 3);
}

// --- 4. replay ------------------------------------------------------------------------

async fn replay_endpoint(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Replaying HIS Hospital").await;
    let receiver = Receiver::start().await;
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let slots = slots(days_ahead(2));
    let a = book_at(&server, &h, slots[0], "P-A").await;
    reschedule(&server, &h.admin, &a, slots[1]).await;
    let b = book_at(&server, &h, slots[2], "P-B").await;
    cancel(&server, &h.admin, &a).await;
    reschedule(&server, &h.admin, &b, slots[3]).await;
    await_all_delivered(&server, &h.admin, &e.id, 5, Duration::from_secs(15)).await;
    let first_round = receiver.arrivals();
    assert_eq!(first_round.len(), 5, "{}", summary(&first_round));
    let ids = assert_ids_stable(&first_round);
    let log = messages(&server, &h.admin, &e.id).await;
    assert_eq!(log.len(), 5);

    // From the start: all five again, same ids, in order per appointment.
    let replayed_at = Instant::now();
    let n = server
        .gql_ok(
            &h.admin,
            REPLAY_ENDPOINT,
            json!({"id": e.id, "p": log[0].position}),
        )
        .await;
    assert_eq!(n["replayWebhookEndpoint"], 5);
    let arrivals = receiver
        .wait_until("the replay", Duration::from_secs(15), |x| {
            x.iter().filter(|x| x.succeeded()).count() == 10
        })
        .await;
    let second_round: Vec<Arrival> = arrivals
        .iter()
        .filter(|x| x.arrived >= replayed_at)
        .cloned()
        .collect();
    assert_eq!(second_round.len(), 5, "{}", summary(&arrivals));
    assert_eq!(
        assert_ids_stable(&second_round),
        ids,
        "a replay keeps the webhook-ids"
    );
    assert_in_order(&second_round);
    assert_in_order(&arrivals[5..]);
    await_all_delivered(&server, &h.admin, &e.id, 5, Duration::from_secs(5)).await;

    // From B's reschedule on: only what is at or after that position.
    let from = log
        .iter()
        .find(|m| m.appointment == Some((b.clone(), 2)))
        .expect("B's reschedule");
    let replayed_at = Instant::now();
    let n = server
        .gql_ok(
            &h.admin,
            REPLAY_ENDPOINT,
            json!({"id": e.id, "p": from.position}),
        )
        .await;
    assert_eq!(n["replayWebhookEndpoint"], 1);
    let arrivals = receiver
        .wait_until("the second replay", Duration::from_secs(15), |x| {
            x.iter().filter(|x| x.succeeded()).count() == 11
        })
        .await;
    let third_round: Vec<&Arrival> = arrivals
        .iter()
        .filter(|x| x.arrived >= replayed_at)
        .collect();
    assert_eq!(third_round.len(), 1);
    assert_eq!(third_round[0].webhook_id, ids[&(b.clone(), 2)]);
    await_all_delivered(&server, &h.admin, &e.id, 5, Duration::from_secs(5)).await;

    // From a time: everything the fan-out wrote since (all five).
    let n = server
        .gql_ok(
            &h.admin,
            REPLAY_ENDPOINT,
            json!({"id": e.id, "t": iso(Utc::now() - chrono::Duration::hours(1))}),
        )
        .await;
    assert_eq!(n["replayWebhookEndpoint"], 5);
    let arrivals = receiver
        .wait_until("the replay from a time", Duration::from_secs(15), |x| {
            x.iter().filter(|x| x.succeeded()).count() == 16
        })
        .await;
    assert_in_order(&arrivals[11..]);
    receiver.assert_no_problems();
}

/// Replaying an appointment's delivered message while its next one is
/// failing: the failing one waits behind the replayed one again.
async fn replay_behind_a_failing_message(deployment: Deployment) {
    let server = deployment
        .start_with(options(&[
            ("BUKTOR_WEBHOOKS__RETRY_DELAYS_MS", "[300,600]"),
            ("BUKTOR_WEBHOOKS__MAX_ATTEMPTS", "30"),
        ]))
        .await;
    let h = set_up_hospital(&deployment, &server, "Stubborn HIS Hospital").await;
    let receiver = Receiver::start().await;
    let failing = Arc::new(AtomicBool::new(true));
    receiver.set_policy({
        let failing = failing.clone();
        move |m| {
            if m.appointment_version == Some(2) && failing.load(Ordering::SeqCst) {
                Reply::status(503)
            } else {
                Reply::ok()
            }
        }
    });
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let s = slots(days_ahead(2));
    let a = book_at(&server, &h, s[0], "P-A").await;
    let v1 = (a.clone(), 1);
    let v2 = (a.clone(), 2);
    receiver
        .wait_until("v1 delivered", Duration::from_secs(15), |x| {
            x.iter()
                .any(|x| x.succeeded() && key(x).as_ref() == Some(&v1))
        })
        .await;
    reschedule(&server, &h.admin, &a, s[1]).await;
    // Replay v1 just after a failed attempt at v2, so none is in flight.
    receiver
        .wait_until(
            "v2 failing, and just failed",
            Duration::from_secs(15),
            |x| {
                let of_v2: Vec<&Arrival> =
                    x.iter().filter(|x| key(x).as_ref() == Some(&v2)).collect();
                of_v2.len() >= 2
                    && of_v2
                        .last()
                        .and_then(|x| x.ended)
                        .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            },
        )
        .await;
    let position = messages(&server, &h.admin, &e.id)
        .await
        .into_iter()
        .find(|m| m.appointment.as_ref() == Some(&v1))
        .expect("v1's message")
        .position;
    let replayed_at = Instant::now();
    let n = server
        .gql_ok(
            &h.admin,
            REPLAY_ENDPOINT,
            json!({"id": e.id, "p": position}),
        )
        .await;
    assert_eq!(
        n["replayWebhookEndpoint"], 1,
        "only the delivered v1 is replayed"
    );
    receiver
        .wait_until("v1 again", Duration::from_secs(15), |x| {
            x.iter()
                .any(|x| x.arrived >= replayed_at && x.succeeded() && key(x).as_ref() == Some(&v1))
        })
        .await;
    failing.store(false, Ordering::SeqCst);
    let arrivals = receiver
        .wait_until("v2 delivered", Duration::from_secs(15), |x| {
            x.iter()
                .any(|x| x.succeeded() && key(x).as_ref() == Some(&v2))
        })
        .await;
    let since: Vec<Arrival> = arrivals
        .iter()
        .filter(|x| x.arrived >= replayed_at)
        .cloned()
        .collect();
    assert_eq!(
        since.first().and_then(key),
        Some(v1.clone()),
        "after the replay, v1 goes first:\n{}",
        summary(&arrivals)
    );
    assert_in_order(&since);
    await_all_delivered(&server, &h.admin, &e.id, 2, Duration::from_secs(5)).await;
    receiver.assert_no_problems();
}

/// A rate limit spaces an endpoint's messages out; with two instances
/// claiming, none goes out twice (a message waiting for its turn is still
/// leased to the instance that will send it).
async fn rate_limit_with_two_instances(deployment: Deployment) {
    let opts = options(&[
        ("BUKTOR_WEBHOOKS__LEASE_MS", "2000"),
        ("BUKTOR_WEBHOOKS__ATTEMPT_TIMEOUT_MS", "1000"),
    ]);
    let (one, two) = tokio::join!(
        deployment.start_with(opts.clone()),
        deployment.start_with(opts.clone())
    );
    let h = set_up_hospital(&deployment, &one, "Throttled HIS Hospital").await;
    let receiver = Receiver::start().await;
    let e = create_endpoint(&one, &h.admin, &receiver, json!({"rateLimitPerSecond": 4})).await;
    let starts = slots(days_ahead(2));
    let booked = join_all((0..16).map(|i| {
        let (server, h) = (if i % 2 == 0 { &one } else { &two }, &h);
        let start = starts[i];
        async move { book_at(server, h, start, &format!("P-{i}")).await }
    }))
    .await;
    receiver
        .wait_until("every booking", Duration::from_secs(20), |x| {
            booked.iter().all(|id| {
                x.iter()
                    .any(|x| x.succeeded() && x.appointment_id.as_deref() == Some(id.as_str()))
            })
        })
        .await;
    await_all_delivered(&one, &h.admin, &e.id, 16, Duration::from_secs(10)).await;
    let arrivals = receiver.arrivals();
    receiver.assert_no_problems();
    assert_eq!(
        arrivals.len(),
        16,
        "each message once:\n{}",
        summary(&arrivals)
    );
    let span = arrivals.last().expect("one").arrived - arrivals[0].arrived;
    // Each instance keeps its own bucket (4 at once, then 4/s): even both
    // together need a second for the 8 beyond the first bursts.
    assert!(
        span >= Duration::from_millis(900),
        "16 messages at 4/s went out in {span:?}:\n{}",
        summary(&arrivals)
    );
    eprintln!("16 messages at 4/s took {span:?}");
}

// --- 5. kill -9 ----------------------------------------------------------------------

async fn kill_9_during_dispatch(deployment: Deployment) {
    let mut server = deployment
        .start_with(options(&[
            ("BUKTOR_WEBHOOKS__LEASE_MS", "2000"),
            ("BUKTOR_WEBHOOKS__ATTEMPT_TIMEOUT_MS", "1000"),
        ]))
        .await;
    let h = set_up_hospital(&deployment, &server, "Crashing Hospital").await;
    // A slow HIS: every request takes 300 ms, so many are in flight at once.
    let receiver = Receiver::start_holding(Duration::from_millis(300)).await;
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let mut slots = slots(days_ahead(2)).into_iter();
    let mut booked = Vec::new();
    for chunk in 0..4 {
        let starts: Vec<DateTime<Utc>> = (0..10).map(|_| slots.next().expect("a slot")).collect();
        booked.extend(
            join_all(starts.into_iter().enumerate().map(|(i, s)| {
                let (server, h) = (&server, &h);
                async move { book_at(server, h, s, &format!("P-{chunk}-{i}")).await }
            }))
            .await,
        );
    }
    receiver
        .wait_until("a request just come in", Duration::from_secs(15), |x| {
            // Killed while it is held (300 ms), the sender cannot see its answer.
            x.len() >= 5
                && x.iter().any(|x| {
                    x.answered.is_none()
                        && x.ended.is_none()
                        && x.arrived.elapsed() < Duration::from_millis(150)
                })
        })
        .await;
    let in_flight = receiver.in_flight();
    server.kill9().await;
    assert!(in_flight > 0);
    let at_kill = receiver.arrivals().len();
    eprintln!("killed with {in_flight} request(s) in flight, {at_kill} arrived");

    server.restart().await;
    for (i, s) in (0..10).map(|_| slots.next().expect("a slot")).enumerate() {
        booked.push(book_at(&server, &h, s, &format!("P-after-{i}")).await);
    }
    receiver
        .wait_until("every booking delivered", Duration::from_secs(40), |x| {
            booked.iter().all(|id| {
                x.iter()
                    .any(|x| x.succeeded() && x.appointment_id.as_deref() == Some(id.as_str()))
            })
        })
        .await;
    await_all_delivered(&server, &h.admin, &e.id, 50, Duration::from_secs(10)).await;
    let arrivals = receiver.arrivals();
    receiver.assert_no_problems();
    // Duplicates only with the same webhook-id: one id per booking.
    let ids = assert_ids_stable(&arrivals);
    assert_eq!(ids.len(), 50);
    let cut_off = arrivals
        .iter()
        .filter(|x| x.answered.is_none() && x.status.is_some())
        .count();
    assert!(
        cut_off > 0,
        "the kill cut no request off:\n{}",
        summary(&arrivals)
    );
    eprintln!(
        "{} requests for 50 messages; {cut_off} cut off by the kill",
        arrivals.len()
    );
}

// --- 6. two instances -------------------------------------------------------------------

async fn two_instances(deployment: Deployment) {
    let opts = options(&[("BUKTOR_WEBHOOKS__ATTEMPT_TIMEOUT_MS", "1000")]);
    let (one, two) = tokio::join!(
        deployment.start_with(opts.clone()),
        deployment.start_with(opts.clone())
    );
    let h = set_up_hospital(&deployment, &one, "Clustered Hospital").await;
    let receiver = Receiver::start_holding(Duration::from_millis(30)).await;
    receiver.set_policy(|_| {
        if rand::thread_rng().gen_bool(0.2) {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let e = create_endpoint(&one, &h.admin, &receiver, json!({})).await;
    let done = busy_appointments(&[&one, &two], &h, 24).await;
    let expected: BTreeSet<Key> = done.iter().flat_map(|d| d.keys()).collect();
    receiver
        .wait_until(
            "every event answered 2xx",
            Duration::from_secs(40),
            |arrivals| {
                let delivered: BTreeSet<Key> = arrivals
                    .iter()
                    .filter(|a| a.succeeded())
                    .filter_map(key)
                    .collect();
                expected.is_subset(&delivered)
            },
        )
        .await;
    await_all_delivered(
        &two,
        &h.admin,
        &e.id,
        expected.len() as u64,
        Duration::from_secs(10),
    )
    .await;
    let arrivals = receiver.arrivals();
    // No webhook-id was ever in flight twice at once (the receiver checks).
    receiver.assert_no_problems();
    assert_in_order(&arrivals);
    let ids = assert_ids_stable(&arrivals);
    assert_eq!(ids.len(), expected.len());
    for (k, id) in &ids {
        let ok = arrivals
            .iter()
            .filter(|a| &a.webhook_id == id && a.succeeded())
            .count();
        assert_eq!(ok, 1, "{k:?} was delivered {ok} times");
    }
    assert_log_matches(&attempts(&one, &h.admin, &e.id).await, &arrivals);
}

// --- 7. bad input, roles, tenants ---------------------------------------------------------

async fn bad_input_roles_and_tenants(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Careful Hospital").await;
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    let auditor = deployment.create_api_key(&h.tenant, "auditor").await;
    let (_, stranger) = deployment.tenant_with_admin("Other Hospital").await;
    let receiver = Receiver::start().await;
    let url = receiver.url();

    let invalid = |input: Value, field: &'static str| {
        let server = &server;
        let admin = &h.admin;
        async move {
            let response = server
                .gql(admin, CREATE_ENDPOINT, json!({ "input": input }))
                .await;
            assert_eq!(
                error_code(&response),
                Some("INVALID_INPUT"),
                "{input}: {response}"
            );
            assert_eq!(error_field(&response), Some(field), "{input}: {response}");
        }
    };
    invalid(json!({"url": "not a url"}), "url").await;
    invalid(json!({"url": "ftp://his.example.org/hooks"}), "url").await;
    invalid(
        json!({"url": "https://user:pw@his.example.org/hooks"}),
        "url",
    )
    .await;
    invalid(
        json!({"url": url, "eventTypes": ["appointment.deleted"]}),
        "eventTypes",
    )
    .await;
    invalid(
        json!({"url": url, "rateLimitPerSecond": 0}),
        "rateLimitPerSecond",
    )
    .await;
    invalid(json!({"url": url, "maxAttempts": 0}), "maxAttempts").await;
    invalid(
        json!({"url": url, "practitionerIds": ["not-a-uuid"]}),
        "practitionerIds",
    )
    .await;
    assert!(
        server
            .gql_ok(&h.admin, "{ webhookEndpoints { id } }", json!({}))
            .await["webhookEndpoints"]
            .as_array()
            .expect("a list")
            .is_empty(),
        "refused input creates nothing"
    );

    // Only admins manage; staff cannot even read; auditors read.
    for key in [&staff, &auditor] {
        let code = server
            .gql_err(key, CREATE_ENDPOINT, json!({"input": {"url": url}}))
            .await;
        assert_eq!(code, "FORBIDDEN");
    }
    assert_eq!(
        server
            .gql_err(&staff, "{ webhookEndpoints { id } }", json!({}))
            .await,
        "FORBIDDEN"
    );
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let slot = slots(days_ahead(2))[0];
    book_at(&server, &h, slot, "P-1").await;
    await_all_delivered(&server, &h.admin, &e.id, 1, Duration::from_secs(15)).await;
    let m = messages(&server, &h.admin, &e.id).await.remove(0);

    let listed = server
        .gql_ok(&auditor, "{ webhookEndpoints { id url } }", json!({}))
        .await;
    assert_eq!(listed["webhookEndpoints"][0]["id"], json!(e.id));
    assert_eq!(endpoint(&server, &auditor, &e.id).await["id"], json!(e.id));
    assert_eq!(messages(&server, &auditor, &e.id).await.len(), 1);
    let (seen, _) = message(&server, &auditor, &m.id).await;
    assert_eq!(seen["state"], "DELIVERED");
    for (query, variables) in [
        (
            UPDATE_ENDPOINT,
            json!({"id": e.id, "changes": {"enabled": false}}),
        ),
        (ROTATE, json!({"id": e.id, "overlap": 0})),
        (REPLAY_ENDPOINT, json!({"id": e.id, "p": m.position})),
        (REPLAY_MESSAGE, json!({"id": m.id})),
    ] {
        for key in [&staff, &auditor] {
            assert_eq!(
                server.gql_err(key, query, variables.clone()).await,
                "FORBIDDEN",
                "{query}"
            );
        }
    }
    for key in [&staff] {
        assert_eq!(
            server.gql_err(key, MESSAGE, json!({"id": m.id})).await,
            "FORBIDDEN"
        );
    }

    // Other tenants see nothing and change nothing.
    assert_eq!(
        server
            .gql_ok(&stranger, ENDPOINT, json!({"id": e.id}))
            .await["webhookEndpoint"],
        Value::Null
    );
    assert_eq!(
        server.gql_ok(&stranger, MESSAGE, json!({"id": m.id})).await["webhookMessage"],
        Value::Null
    );
    assert_eq!(
        server
            .gql_ok(
                &stranger,
                "query($e: ID!) { webhookMessagesForEvent(eventId: $e) { id } }",
                json!({"e": m.event_id}),
            )
            .await["webhookMessagesForEvent"],
        json!([])
    );
    assert_eq!(
        server
            .gql_ok(&stranger, "{ webhookEndpoints { id } }", json!({}))
            .await["webhookEndpoints"],
        json!([])
    );
    for (query, variables) in [
        (
            UPDATE_ENDPOINT,
            json!({"id": e.id, "changes": {"enabled": false}}),
        ),
        (ROTATE, json!({"id": e.id, "overlap": 0})),
        (REPLAY_ENDPOINT, json!({"id": e.id, "p": m.position})),
        (REPLAY_MESSAGE, json!({"id": m.id})),
    ] {
        assert_eq!(
            server.gql_err(&stranger, query, variables).await,
            "NOT_FOUND",
            "{query}"
        );
    }
    let mine = endpoint(&server, &h.admin, &e.id).await;
    assert_eq!(mine["enabled"], true, "untouched by the other tenant");
    let own = server
        .gql_ok(
            &h.admin,
            "query($e: ID!) { webhookMessagesForEvent(eventId: $e) { id state } }",
            json!({"e": m.event_id}),
        )
        .await;
    assert_eq!(
        own["webhookMessagesForEvent"],
        json!([{"id": m.id, "state": "DELIVERED"}])
    );

    // More bad input on the other mutations.
    let bad = [
        (ROTATE, json!({"id": e.id, "overlap": -1}), "INVALID_INPUT"),
        (REPLAY_ENDPOINT, json!({"id": e.id}), "INVALID_INPUT"),
        (
            REPLAY_ENDPOINT,
            json!({"id": e.id, "p": m.position, "t": iso(Utc::now())}),
            "INVALID_INPUT",
        ),
        (
            REPLAY_ENDPOINT,
            json!({"id": e.id, "p": "not a position"}),
            "INVALID_INPUT",
        ),
        (
            UPDATE_ENDPOINT,
            json!({"id": "not-an-id", "changes": {}}),
            "INVALID_INPUT",
        ),
        (
            UPDATE_ENDPOINT,
            json!({"id": e.id, "changes": {"url": "mailto:his@example.org"}}),
            "INVALID_INPUT",
        ),
        (
            UPDATE_ENDPOINT,
            json!({"id": uuid::Uuid::now_v7().to_string(), "changes": {}}),
            "NOT_FOUND",
        ),
        (REPLAY_MESSAGE, json!({"id": "msg_0000"}), "NOT_FOUND"),
        (REPLAY_MESSAGE, json!({"id": m.id}), "NOT_DEAD"),
    ];
    for (query, variables, code) in bad {
        assert_eq!(
            server.gql_err(&h.admin, query, variables.clone()).await,
            code,
            "{query} {variables}"
        );
    }
    assert_eq!(endpoint(&server, &h.admin, &e.id).await["url"], json!(url));
    receiver.assert_no_problems();
}

// --- 8. the embedded store ---------------------------------------------------------------

async fn embedded_delivery_in_order(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "Embedded HIS Hospital").await;
    let receiver = Receiver::start().await;
    receiver.set_policy(|_| {
        let roll: f64 = rand::thread_rng().gen();
        if roll < 0.2 {
            Reply::status(500)
        } else if roll < 0.3 {
            Reply::hang()
        } else {
            Reply::ok()
        }
    });
    let e = create_endpoint(&server, &h.admin, &receiver, json!({})).await;
    let done = busy_appointments(&[&server], &h, 8).await;
    let expected: BTreeSet<Key> = done.iter().flat_map(|d| d.keys()).collect();
    receiver
        .wait_until(
            "every event answered 2xx",
            Duration::from_secs(40),
            |arrivals| {
                let delivered: BTreeSet<Key> = arrivals
                    .iter()
                    .filter(|a| a.succeeded())
                    .filter_map(key)
                    .collect();
                expected.is_subset(&delivered)
            },
        )
        .await;
    await_all_delivered(
        &server,
        &h.admin,
        &e.id,
        expected.len() as u64,
        Duration::from_secs(10),
    )
    .await;
    let arrivals = receiver.arrivals();
    receiver.assert_no_problems();
    assert_in_order(&arrivals);
    assert_eq!(assert_ids_stable(&arrivals).len(), expected.len());
    assert_log_matches(&attempts(&server, &h.admin, &e.id).await, &arrivals);
}

// --- the harness checks itself -------------------------------------------------------------

/// Posts `body` as Buktor would, signed with `secrets`.
async fn post_signed(
    client: &reqwest::Client,
    receiver: &Receiver,
    id: &str,
    secrets: &[buktor::webhooks::signature::SigningSecret],
) -> reqwest::Result<u16> {
    let body = json!({"type": "appointment.booked", "data": {
        "event": {"id": "e", "position": "1.1"},
        "appointment": {"id": "a", "version": 1},
    }})
    .to_string();
    let mut request = client
        .post(receiver.url())
        .header("content-type", "application/json")
        .header("user-agent", "Buktor-Webhooks/1");
    let now = Utc::now().timestamp();
    for (name, value) in buktor::webhooks::signature::headers(secrets, id, now, body.as_bytes()) {
        request = request.header(name, value);
    }
    Ok(request.body(body).send().await?.status().as_u16())
}

async fn receiver_self_check() {
    use buktor::webhooks::signature::SigningSecret;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("a client");
    let receiver = Receiver::start_holding(Duration::from_millis(200)).await;
    let secret = SigningSecret::generate();
    receiver.set_secrets(&[&secret.expose()]);
    let id = |n: u32| format!("msg_{n:032x}");

    // Signed right: no problem, and the arrival says so.
    assert_eq!(
        post_signed(&client, &receiver, &id(1), std::slice::from_ref(&secret))
            .await
            .ok(),
        Some(200)
    );
    receiver.assert_no_problems();
    let first = &receiver.arrivals()[0];
    assert_eq!((first.signatures, first.verified.clone()), (1, vec![true]));
    assert_eq!(first.appointment_id.as_deref(), Some("a"));

    // Signed with another secret: a problem.
    let stranger = SigningSecret::generate();
    post_signed(&client, &receiver, &id(2), &[stranger])
        .await
        .ok();
    assert_eq!(receiver.problems().len(), 1, "{:?}", receiver.problems());
    assert!(receiver.problems()[0].contains("verifies"));

    // The same id twice at once: a problem; one after the other: none.
    let before = receiver.problems().len();
    let twice = id(3);
    let (a, b) = tokio::join!(
        post_signed(&client, &receiver, &twice, std::slice::from_ref(&secret)),
        post_signed(&client, &receiver, &twice, std::slice::from_ref(&secret)),
    );
    assert_eq!((a.ok(), b.ok()), (Some(200), Some(200)));
    let problems = receiver.problems();
    assert_eq!(problems.len(), before + 1, "{problems:?}");
    assert!(problems[before].contains("in flight"), "{problems:?}");
    post_signed(&client, &receiver, &id(3), std::slice::from_ref(&secret))
        .await
        .ok();
    assert_eq!(receiver.problems().len(), before + 1);

    // Scripted answers, no answer, a closed port, and back again.
    receiver.script([Reply::too_many(7), Reply::hang()]);
    let response = client
        .post(receiver.url())
        .header("webhook-id", id(4))
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let hung = post_signed(&client, &receiver, &id(5), std::slice::from_ref(&secret)).await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    receiver
        .wait_until("the hung request to end", Duration::from_secs(5), |x| {
            x.last()
                .is_some_and(|x| x.ended.is_some() && x.answered.is_none())
        })
        .await;
    receiver.stop().await;
    // A new client: the old one's pooled connection was closed, not refused.
    let client = reqwest::Client::new();
    let refused = post_signed(&client, &receiver, &id(6), std::slice::from_ref(&secret)).await;
    assert!(refused.is_err_and(|e| e.is_connect()));
    receiver.restart().await;
    assert_eq!(
        post_signed(&client, &receiver, &id(6), std::slice::from_ref(&secret))
            .await
            .ok(),
        Some(200)
    );
    assert_eq!(receiver.in_flight(), 0);
}

fn order_check_self_check() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let arrival = |version: i64, arrived: u64, answered: u64, status: u16| Arrival {
        webhook_id: format!("msg_{version:032x}"),
        event_type: "appointment.booked".into(),
        event_id: None,
        position: None,
        appointment_id: Some("a".into()),
        appointment_version: Some(version),
        arrived: ms(arrived),
        status: Some(status),
        answered: Some(ms(answered)),
        ended: Some(ms(answered)),
        signatures: 1,
        verified: vec![true],
        body: Value::Null,
    };
    let fails = |arrivals: Vec<Arrival>| {
        std::panic::catch_unwind(move || assert_in_order(&arrivals)).is_err()
    };
    // v1 failed, retried and delivered, then v2: in order.
    assert!(!fails(vec![
        arrival(1, 0, 10, 500),
        arrival(1, 20, 30, 200),
        arrival(2, 40, 50, 200)
    ]));
    // v2 sent while v1 was only failing.
    assert!(fails(vec![
        arrival(1, 0, 10, 500),
        arrival(2, 20, 30, 200),
        arrival(1, 40, 50, 200)
    ]));
    // v2 sent while v1 was still in flight.
    assert!(fails(vec![arrival(1, 0, 30, 200), arrival(2, 20, 40, 200)]));
    // v2 without v1.
    assert!(fails(vec![arrival(2, 0, 10, 200)]));
    let mut other = arrival(2, 40, 50, 200);
    other.webhook_id = "msg_1".into();
    assert!(
        std::panic::catch_unwind(|| assert_ids_stable(&[arrival(2, 0, 10, 500), other])).is_err()
    );
}

/// `buktor endpoint …` on the server's machine does what the mutations do.
async fn endpoint_cli(deployment: Deployment) {
    let server = deployment.start_with(options(&[])).await;
    let h = set_up_hospital(&deployment, &server, "CLI HIS Hospital").await;
    let receiver = Receiver::start().await;
    let url = receiver.url();

    let refused = deployment
        .cli_output(&[
            "endpoint",
            "create",
            "--tenant",
            &h.tenant,
            "--url",
            "ftp://his/x",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("http:// or https://"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let created = deployment
        .cli(&[
            "endpoint",
            "create",
            "--tenant",
            &h.tenant,
            "--url",
            &url,
            "--event-type",
            "appointment.booked",
        ])
        .await;
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {created:?}"))
            .to_owned()
    };
    let (id, secret) = (field("endpoint "), field("secret "));
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.set_secrets(&[&secret]);

    let slot = slots(days_ahead(2))[0];
    book_at(&server, &h, slot, "P-CLI").await;
    let arrivals = receiver
        .wait_until("the booking", Duration::from_secs(10), |a| {
            a.iter().any(|a| a.succeeded())
        })
        .await;
    receiver.assert_no_problems();
    assert!(
        arrivals[0].verified[0],
        "signed with the secret the CLI showed"
    );
    let webhook_id = arrivals[0].webhook_id.clone();

    let listed = deployment
        .cli(&["endpoint", "list", "--tenant", &h.tenant])
        .await;
    assert!(
        listed.contains(&id) && listed.contains("enabled") && listed.contains("delivered 1"),
        "{listed}"
    );
    let log = deployment
        .cli(&["endpoint", "deliveries", "--tenant", &h.tenant, "--id", &id])
        .await;
    assert!(
        log.contains(&webhook_id) && log.contains("\t200\t") && log.contains("delivered"),
        "{log}"
    );

    deployment
        .cli(&[
            "endpoint",
            "update",
            "--tenant",
            &h.tenant,
            "--id",
            &id,
            "--disable",
        ])
        .await;
    assert_eq!(endpoint(&server, &h.admin, &id).await["enabled"], false);
    deployment
        .cli(&[
            "endpoint", "update", "--tenant", &h.tenant, "--id", &id, "--enable",
        ])
        .await;
    assert_eq!(endpoint(&server, &h.admin, &id).await["enabled"], true);

    let replayed = deployment
        .cli(&[
            "endpoint",
            "replay",
            "--tenant",
            &h.tenant,
            "--id",
            &id,
            "--from-position",
            "0.0",
        ])
        .await;
    assert!(replayed.starts_with("1 messages"), "{replayed}");
    receiver
        .wait_until("the replay", Duration::from_secs(10), |a| {
            a.iter()
                .filter(|a| a.succeeded() && a.webhook_id == webhook_id)
                .count()
                == 2
        })
        .await;

    let rotated = deployment
        .cli(&[
            "endpoint",
            "rotate-secret",
            "--tenant",
            &h.tenant,
            "--id",
            &id,
            "--overlap-minutes",
            "0",
        ])
        .await;
    let new_secret = rotated
        .split_whitespace()
        .nth(1)
        .expect("a secret")
        .to_owned();
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{rotated}"
    );
    receiver.set_secrets(&[&new_secret]);
    book_at(&server, &h, slots(days_ahead(2))[1], "P-CLI-2").await;
    let arrivals = receiver
        .wait_until(
            "a booking signed with the new secret",
            Duration::from_secs(10),
            |a| a.iter().filter(|a| a.succeeded()).count() == 3,
        )
        .await;
    receiver.assert_no_problems();
    assert!(arrivals.last().is_some_and(|a| a.verified[0]));
}
