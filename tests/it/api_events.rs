//! The integrator event log (`events` query) and live subscriptions over
//! WebSocket (`graphql-transport-ws`), against the real server on both stores:
//! the hand-over from replay to live under concurrent bookings, tenant
//! isolation, authentication of sockets, pagination and filters.
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::server::*;

/// How long a test waits for the next message on a socket.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

macro_rules! on_both_stores {
    ($($name:ident => $body:ident;)*) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$body(super::Deployment::embedded()).await;
                }
            )*
        }
        mod postgresql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$body(super::Deployment::postgres().await).await;
                }
            )*
        }
    };
}

on_both_stores! {
    replay_hands_over_to_live_with_no_gap_and_no_duplicate => hand_over;
    a_subscriber_sees_only_its_own_hospital => tenant_isolation;
    a_socket_without_a_valid_key_is_refused => unauthenticated_sockets;
    pages_chained_by_end_cursor_cover_the_log_once => pagination_and_filters;
    the_practitioner_filter_follows_appointments_and_null_means_live => practitioner_filter_and_live_only;
    sigterm_ends_subscriptions_and_closes_sockets_at_once => shutdown;
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A `graphql-transport-ws` client.
struct GqlSocket {
    ws: Socket,
}

/// How a socket ended or what it answered instead of `connection_ack`.
#[derive(Debug)]
enum Refused {
    /// The HTTP upgrade failed with this status.
    Http(u16),
    /// The server closed the socket (close code, reason), or just ended it (None).
    Closed(Option<(u16, String)>),
    /// Some other message (shown in failures).
    Other(#[allow(dead_code)] Value),
}

async fn open_socket(server: &TestServer, header_key: Option<&str>) -> Result<Socket, Refused> {
    let mut request = format!("ws://{}/graphql", server.addr)
        .into_client_request()
        .expect("a WebSocket request");
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(key) = header_key {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).expect("a header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("graphql-transport-ws")
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(Refused::Http(response.status().as_u16()))
        }
        Err(e) => panic!("cannot open a WebSocket: {e}"),
    }
}

impl GqlSocket {
    /// Opens a socket and sends `connection_init` with `payload`; Ok once acknowledged.
    async fn connect(
        server: &TestServer,
        header_key: Option<&str>,
        payload: Option<Value>,
    ) -> Result<GqlSocket, Refused> {
        let ws = open_socket(server, header_key).await?;
        let mut socket = GqlSocket { ws };
        let mut init = json!({"type": "connection_init"});
        if let Some(p) = payload {
            init["payload"] = p;
        }
        socket.send(init).await;
        match socket.receive().await {
            Ok(m) if m["type"] == "connection_ack" => Ok(socket),
            Ok(other) => Err(Refused::Other(other)),
            Err(closed) => Err(closed),
        }
    }

    /// Connects with `key` in the `connection_init` payload.
    async fn with_key(server: &TestServer, key: &str) -> GqlSocket {
        GqlSocket::connect(
            server,
            None,
            Some(json!({"authorization": format!("Bearer {key}")})),
        )
        .await
        .unwrap_or_else(|e| panic!("the socket was refused: {e:?}"))
    }

    async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("cannot send on the socket");
    }

    /// The next graphql-transport-ws message, answering pings; Err when the socket ends.
    async fn receive(&mut self) -> Result<Value, Refused> {
        loop {
            let next = tokio::time::timeout(RECEIVE_TIMEOUT, self.ws.next())
                .await
                .expect("no message on the socket in time");
            match next {
                None | Some(Err(_)) => return Err(Refused::Closed(None)),
                Some(Ok(Message::Close(frame))) => {
                    return Err(Refused::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ))
                }
                Some(Ok(Message::Text(text))) => {
                    let m: Value = serde_json::from_str(text.as_str()).expect("a JSON message");
                    if m["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Ok(m);
                }
                Some(Ok(_)) => continue, // WebSocket pings are answered by the library
            }
        }
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id, "type": "subscribe",
            "payload": {"query": query, "variables": variables},
        }))
        .await;
    }

    /// The next `next` payload of subscription `id`; panics on anything else.
    async fn next_data(&mut self, id: &str) -> Value {
        let m = self.receive().await.expect("the socket closed");
        assert_eq!(m["id"], id, "a message of another subscription: {m}");
        assert_eq!(m["type"], "next", "expected next, got {m}");
        m["payload"].clone()
    }

    /// The next message of subscription `id`, or None if none comes within `wait`.
    async fn maybe_next(&mut self, wait: Duration) -> Option<Value> {
        let next = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
        match next.expect("the socket failed") {
            Message::Text(text) => Some(serde_json::from_str(text.as_str()).expect("JSON")),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

const APPOINTMENT_EVENTS: &str = "subscription($filter: AppointmentEventFilter, $from: String) {
    appointmentEvents(filter: $filter, fromPosition: $from) {
      position eventId streamId version type schemaVersion occurredAt recordedAt
      actor { id role } source remoteAddr correlationId data
    }
}";

const EVENTS: &str = "query($after: String, $first: Int, $types: [String!], $streams: [String!]) {
    events(after: $after, first: $first, types: $types, streams: $streams) {
      edges { cursor node { position streamId version type schemaVersion occurredAt recordedAt
                            actor { id role } source remoteAddr correlationId data } }
      pageInfo { hasNextPage endCursor }
    }
}";

/// A position `"tx.seq"` as a comparable pair.
fn position(v: &Value) -> (i64, i64) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a position"));
    let (tx, seq) = s.split_once('.').expect("tx.seq");
    (tx.parse().expect("tx"), seq.parse().expect("seq"))
}

/// The `i`-th distinct bookable start: 40 a day, 08:00–17:45, from the day after tomorrow.
fn slot(i: usize) -> DateTime<Utc> {
    let day = days_ahead(2 + (i / 40) as u64);
    local(day, 8 + (i % 40) as u32 / 4, (i % 4) as u32 * 15)
}

async fn book_slot(server: &TestServer, h: &Hospital, i: usize) -> String {
    book(server, &h.admin, &h.practitioner, &h.checkup, slot(i)).await
}

/// The `appointmentEvents` payload of one event.
fn event_of(payload: &Value) -> &Value {
    assert!(
        payload.get("errors").is_none_or(|e| e.is_null()),
        "the subscription failed: {payload}"
    );
    &payload["data"]["appointmentEvents"]
}

async fn hand_over(deployment: Deployment) {
    const BEFORE: usize = 300;
    const DURING: usize = 80;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Hand-over Hospital").await;
    let mut booked = Vec::new();
    for i in 0..BEFORE {
        booked.push(book_slot(&server, &h, i).await);
    }

    // Two bookers keep going while the subscription replays and switches to live.
    let bookers: Vec<_> = (0..2)
        .map(|b| {
            let url_server = &server;
            let h = h.clone();
            async move {
                let mut ids = Vec::new();
                for i in (BEFORE + b..BEFORE + DURING).step_by(2) {
                    ids.push(book_slot(url_server, &h, i).await);
                }
                ids
            }
        })
        .collect();
    let auditor = deployment.create_api_key(&h.tenant, "auditor").await;
    let subscriber = async {
        let mut socket = GqlSocket::with_key(&server, &auditor).await;
        socket
            .subscribe(
                "s1",
                APPOINTMENT_EVENTS,
                json!({"from": "0.0", "filter": {"types": ["AppointmentBooked"]}}),
            )
            .await;
        let mut events = Vec::new();
        while events.len() < BEFORE + DURING {
            let payload = socket.next_data("s1").await;
            events.push(event_of(&payload).clone());
        }
        (socket, events)
    };
    let (during, (mut socket, events)) =
        tokio::join!(futures::future::join_all(bookers), subscriber);
    booked.extend(during.into_iter().flatten());

    // Exactly once each, in strictly increasing positions.
    let positions: Vec<(i64, i64)> = events.iter().map(|e| position(&e["position"])).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions are not strictly increasing: {positions:?}"
    );
    let received: Vec<String> = events
        .iter()
        .map(|e| {
            e["data"]["appointment_id"]
                .as_str()
                .expect("an id")
                .to_owned()
        })
        .collect();
    let unique: BTreeSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "an event came twice");
    let expected: BTreeSet<&String> = booked.iter().collect();
    assert_eq!(unique, expected);
    for e in &events {
        assert_eq!(e["type"], "AppointmentBooked");
        assert_eq!(
            e["streamId"],
            format!(
                "appointment-{}",
                e["data"]["appointment_id"].as_str().unwrap()
            )
        );
        assert_eq!(e["version"], 1);
        assert_eq!(e["actor"]["role"], "admin");
        assert!(e["correlationId"].is_string() && e["occurredAt"].is_string());
    }
    // Nothing more (no late duplicate) until the next booking, which comes live.
    assert!(socket
        .maybe_next(Duration::from_millis(300))
        .await
        .is_none());
    let last = book_slot(&server, &h, BEFORE + DURING).await;
    let payload = socket.next_data("s1").await;
    assert_eq!(event_of(&payload)["data"]["appointment_id"], last.as_str());

    // `complete` ends the subscription.
    socket.send(json!({"id": "s1", "type": "complete"})).await;
}

async fn tenant_isolation(deployment: Deployment) {
    let server = deployment.start().await;
    let a = set_up_hospital(&deployment, &server, "Hospital A").await;
    let b = set_up_hospital(&deployment, &server, "Hospital B").await;
    let a_first = book_slot(&server, &a, 0).await;
    let b_first = book_slot(&server, &b, 0).await;

    let mut socket = GqlSocket::with_key(&server, &a.admin).await;
    socket
        .subscribe("a", APPOINTMENT_EVENTS, json!({"from": "0.0"}))
        .await;
    // B books and cancels in between; then A books its second.
    let b_second = book_slot(&server, &b, 1).await;
    server
        .gql_ok(
            &b.admin,
            "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"x\", cancelledBy: HOSPITAL) { id } }",
            json!({"id": b_first}),
        )
        .await;
    let a_second = book_slot(&server, &a, 1).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let payload = socket.next_data("a").await;
        seen.push(
            event_of(&payload)["data"]["appointment_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, vec![a_first.clone(), a_second.clone()]);
    assert!(socket
        .maybe_next(Duration::from_millis(300))
        .await
        .is_none());

    // The log query: every page of A's log, none of B's ids anywhere.
    let total: i64 = deployment.event_counts(&a.tenant).await.values().sum();
    let log = caught_up(&server, &a.admin, 50, total).await;
    assert_eq!(log.len() as i64, total);
    let text = Value::Array(log).to_string();
    for foreign in [&b.practitioner, &b.checkup, &b_first, &b_second, &b.tenant] {
        assert!(
            !text.contains(foreign.as_str()),
            "hospital B's {foreign} in A's log"
        );
    }
    assert!(text.contains(&a_first) && text.contains(&a.practitioner));
}

/// The whole log once it holds `total` events. On PostgreSQL the log shows an
/// event only once every transaction older than its own has ended, anywhere
/// on the cluster (other tests run beside this one), so it can be a moment
/// behind what the database holds.
async fn caught_up(server: &TestServer, key: &str, first: i64, total: i64) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = read_whole_log(server, key, first).await;
        if log.len() as i64 >= total || std::time::Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of the caller's log, by pages of `first` chained with `endCursor`.
async fn read_whole_log(server: &TestServer, key: &str, first: i64) -> Vec<Value> {
    let mut after = Value::Null;
    let mut all = Vec::new();
    loop {
        let page = server
            .gql_ok(key, EVENTS, json!({"after": after, "first": first}))
            .await;
        let conn = &page["events"];
        let edges = conn["edges"].as_array().expect("edges");
        assert!(edges.len() as i64 <= first);
        for e in edges {
            assert_eq!(e["cursor"], e["node"]["position"]);
            all.push(e["node"].clone());
        }
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(edges.len() as i64, first, "a short page with a next page");
        after = conn["pageInfo"]["endCursor"].clone();
        assert_eq!(after, edges.last().unwrap()["cursor"]);
    }
    all
}

async fn unauthenticated_sockets(deployment: Deployment) {
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Locked Hospital").await;
    let bogus = format!("bk_{}_{}", uuid::Uuid::new_v4().simple(), "0".repeat(64));

    // No key at all: closed without connection_ack.
    match GqlSocket::connect(&server, None, None).await.err() {
        Some(Refused::Closed(Some((_, reason)))) => {
            assert!(reason.starts_with("UNAUTHENTICATED"), "reason {reason:?}")
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
    let refused = GqlSocket::connect(&server, None, Some(json!({"authorization": "Bearer "})))
        .await
        .err();
    assert!(
        matches!(refused, Some(Refused::Closed(_))),
        "got {refused:?}"
    );
    // A wrong key in the payload.
    let refused = GqlSocket::connect(
        &server,
        None,
        Some(json!({"authorization": format!("Bearer {bogus}")})),
    )
    .await
    .err();
    match refused {
        Some(Refused::Closed(Some((_, reason)))) => {
            assert!(reason.contains("UNAUTHENTICATED"), "reason {reason:?}")
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
    // A wrong key in the upgrade request's header: 401 before the upgrade.
    let refused = GqlSocket::connect(&server, Some(&bogus), None).await.err();
    assert!(
        matches!(refused, Some(Refused::Http(401))),
        "got {refused:?}"
    );
    // Subscribing without connection_init is refused too.
    let mut ws = open_socket(&server, None).await.expect("a socket");
    ws.send(Message::text(
        json!({"id": "x", "type": "subscribe", "payload": {"query": APPOINTMENT_EVENTS}})
            .to_string(),
    ))
    .await
    .expect("send");
    let mut raw = GqlSocket { ws };
    let refused = raw.receive().await.err();
    assert!(
        matches!(refused, Some(Refused::Closed(_))),
        "got {refused:?}"
    );

    // The key in the header alone is enough; so is a bare key in the payload.
    let staff = deployment.create_api_key(&tenant, "staff").await;
    let mut ok = GqlSocket::connect(&server, Some(&staff), None)
        .await
        .expect("a header key is accepted");
    ok.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ me { role } }"}}))
        .await;
    assert_eq!(ok.next_data("q").await["data"]["me"]["role"], "staff");
    GqlSocket::connect(&server, None, Some(json!({"Authorization": admin})))
        .await
        .expect("a bare key in the payload is accepted");
}

async fn pagination_and_filters(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Paging Hospital").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(book_slot(&server, &h, i).await);
    }
    for id in &ids[..3] {
        server
            .gql_ok(
                &h.admin,
                "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"x\", cancelledBy: PATIENT) { id } }",
                json!({"id": id}),
            )
            .await;
    }
    let counts = deployment.event_counts(&h.tenant).await;
    let total: i64 = counts.values().sum();
    caught_up(&server, &h.admin, 1000, total).await;

    // Any role reads the whole log; pages chain exactly, in order.
    for role in ["auditor", "staff", "his-system"] {
        let key = deployment.create_api_key(&h.tenant, role).await;
        let log = read_whole_log(&server, &key, 7).await;
        assert_eq!(log.len() as i64, total, "{role}");
        let positions: Vec<_> = log.iter().map(|e| position(&e["position"])).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }
    let log = read_whole_log(&server, &h.admin, 1000).await;
    assert_eq!(log.len() as i64, total);
    // A page starting mid-log begins right after its cursor.
    let mid = &log[10]["position"];
    let page = server
        .gql_ok(&h.admin, EVENTS, json!({"after": mid, "first": 3}))
        .await;
    let nodes: Vec<&Value> = page["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    assert_eq!(nodes, log[11..14].iter().collect::<Vec<_>>());
    // Default page size is 100; `first: 0` says only whether there is more.
    let page = server.gql_ok(&h.admin, EVENTS, json!({})).await;
    assert_eq!(
        page["events"]["edges"].as_array().unwrap().len() as i64,
        total.min(100)
    );
    let page = server.gql_ok(&h.admin, EVENTS, json!({"first": 0})).await;
    assert_eq!(page["events"]["edges"], json!([]));
    assert_eq!(page["events"]["pageInfo"]["hasNextPage"], true);
    let end = log.last().unwrap()["position"].clone();
    let page = server
        .gql_ok(&h.admin, EVENTS, json!({"after": end, "first": 5}))
        .await;
    assert_eq!(page["events"]["edges"], json!([]));
    assert_eq!(page["events"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(page["events"]["pageInfo"]["endCursor"], Value::Null);

    // Filters: by type, by stream prefix, by exact stream, both.
    let booked = filtered(
        &server,
        &h.admin,
        json!({"types": ["AppointmentBooked"]}),
        5,
    )
    .await;
    assert_eq!(booked.len() as i64, counts["AppointmentBooked"]);
    assert!(booked.iter().all(|e| e["type"] == "AppointmentBooked"));
    let appointments = filtered(&server, &h.admin, json!({"streams": ["appointment-"]}), 4).await;
    assert_eq!(appointments.len(), 12 + 3);
    assert!(appointments
        .iter()
        .all(|e| e["streamId"].as_str().unwrap().starts_with("appointment-")));
    let one = format!("appointment-{}", ids[0]);
    let exact = filtered(&server, &h.admin, json!({"streams": [one]}), 100).await;
    let types: Vec<&str> = exact.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["AppointmentBooked", "AppointmentCancelled"]);
    let calendars = format!("calendar-{}-", h.practitioner);
    let both = filtered(
        &server,
        &h.admin,
        json!({"streams": [calendars, "practitioner-"], "types": ["PractitionerRegistered"]}),
        100,
    )
    .await;
    assert_eq!(both.len(), 1);
    assert_eq!(
        both[0]["streamId"],
        format!("practitioner-{}", h.practitioner)
    );
    let filtered_positions: Vec<_> = appointments
        .iter()
        .map(|e| position(&e["position"]))
        .collect();
    assert!(filtered_positions.windows(2).all(|w| w[0] < w[1]));

    // Typed errors.
    for (variables, field) in [
        (json!({"first": 1001}), "first"),
        (json!({"first": -1}), "first"),
        (json!({"after": "not-a-position"}), "after"),
        (json!({"after": "1.x"}), "after"),
        (json!({"after": "-1.0"}), "after"),
    ] {
        let response = server.gql(&h.admin, EVENTS, variables.clone()).await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_INPUT"),
            "{variables}: {response}"
        );
        assert_eq!(error_field(&response), Some(field), "{variables}");
    }
    assert!(server
        .gql(&h.admin, EVENTS, json!({"first": 1000}))
        .await
        .get("errors")
        .is_none());

    // A filter that matches nothing reads to the end and says how far.
    let all = server
        .gql_ok(&h.admin, EVENTS, json!({"first": 1000}))
        .await;
    let last = all["events"]["pageInfo"]["endCursor"].clone();
    let none = server
        .gql_ok(
            &h.admin,
            "query { events(types: [\"NoSuchEvent\"]) { edges { cursor } pageInfo { hasNextPage } scannedTo } }",
            json!({}),
        )
        .await;
    assert_eq!(none["events"]["edges"], json!([]));
    assert_eq!(none["events"]["pageInfo"]["hasNextPage"], json!(false));
    assert_eq!(none["events"]["scannedTo"], last);
}

/// Every event matching `filters`, by pages of `first`.
async fn filtered(server: &TestServer, key: &str, filters: Value, first: i64) -> Vec<Value> {
    let mut after = Value::Null;
    let mut all = Vec::new();
    loop {
        let mut variables = filters.clone();
        variables["after"] = after;
        variables["first"] = json!(first);
        let page = server.gql_ok(key, EVENTS, variables).await;
        let conn = &page["events"];
        for e in conn["edges"].as_array().unwrap() {
            all.push(e["node"].clone());
        }
        if conn["pageInfo"]["hasNextPage"] == false {
            return all;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

async fn practitioner_filter_and_live_only(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Two Doctors Hospital").await;
    let other = register_practitioner(&server, &h.admin, "Dr. Grace Hopper").await;
    server
        .gql_ok(
            &h.admin,
            "mutation($p: ID!, $rules: [WeeklyRuleInput!]!) { setWeeklyRules(practitionerId: $p, rules: $rules) { id } }",
            json!({"p": other, "rules": [{
                "weekdays": EVERY_DAY, "start": "00:00", "end": "23:45",
                "gridMinutes": 15, "effectiveFrom": "2020-01-01",
            }]}),
        )
        .await;
    // One service both offer, so an appointment can move between them.
    let shared = server
        .gql_ok(
            &h.admin,
            "mutation($input: ServiceInput!) { defineService(input: $input) { id } }",
            json!({"input": {
                "name": "Shared check-up", "durationMinutes": 15,
                "practitionerIds": [h.practitioner, other],
                "minNoticeMinutes": 0, "maxAdvanceDays": 730,
            }}),
        )
        .await["defineService"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = |i: usize| book(&server, &h.admin, &h.practitioner, &shared, slot(i));
    let theirs = |i: usize| book(&server, &h.admin, &other, &shared, slot(i));
    let mine_early = mine(0).await;
    let theirs_early = theirs(0).await;
    let total: i64 = deployment.event_counts(&h.tenant).await.values().sum();
    let start = caught_up(&server, &h.admin, 1000, total)
        .await
        .last()
        .unwrap()["position"]
        .clone();

    let mut filtered = GqlSocket::with_key(&server, &h.admin).await;
    filtered
        .subscribe(
            "p",
            APPOINTMENT_EVENTS,
            json!({"from": start, "filter": {"practitionerIds": [h.practitioner]}}),
        )
        .await;
    let mut live = GqlSocket::with_key(&server, &h.admin).await;
    live.subscribe("l", APPOINTMENT_EVENTS, json!({"from": null}))
        .await;
    // Let the live-only subscription start before anything is written.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cancel = "mutation($id: ID!) { cancelAppointment(id: $id, reason: \"x\", cancelledBy: HOSPITAL) { id } }";
    server
        .gql_ok(&h.admin, cancel, json!({"id": theirs_early}))
        .await;
    server
        .gql_ok(&h.admin, cancel, json!({"id": mine_early}))
        .await;
    let mine_late = mine(1).await;
    let theirs_late = theirs(1).await;
    // Moving my appointment to the other practitioner matches (it leaves mine) …
    server
        .gql_ok(
            &h.admin,
            "mutation($id: ID!, $start: DateTime!, $p: ID) { rescheduleAppointment(id: $id, start: $start, practitionerId: $p) { id } }",
            json!({"id": mine_late, "start": iso(slot(2)), "p": other}),
        )
        .await;
    // … but what happens to it afterwards no longer does.
    server
        .gql_ok(&h.admin, cancel, json!({"id": mine_late}))
        .await;
    let marker = mine(3).await;

    let mut got = Vec::new();
    while got.len() < 4 {
        let payload = filtered.next_data("p").await;
        let e = event_of(&payload);
        got.push((
            e["type"].as_str().unwrap().to_owned(),
            e["data"]["appointment_id"].as_str().unwrap().to_owned(),
        ));
    }
    let expected: Vec<(String, String)> = [
        ("AppointmentCancelled", &mine_early),
        ("AppointmentBooked", &mine_late),
        ("AppointmentRescheduled", &mine_late),
        ("AppointmentBooked", &marker),
    ]
    .into_iter()
    .map(|(t, id)| (t.to_owned(), id.clone()))
    .collect();
    assert_eq!(got, expected);

    // Live only: exactly the 7 appointment events written after it started.
    let mut all = HashSet::new();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let payload = live.next_data("l").await;
        let e = event_of(&payload);
        assert!(all.insert(e["eventId"].as_str().unwrap().to_owned()));
        ids.push(e["data"]["appointment_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids,
        [
            &theirs_early,
            &mine_early,
            &mine_late,
            &theirs_late,
            &mine_late,
            &mine_late,
            &marker
        ]
        .map(|s| s.clone())
    );
    assert!(live.maybe_next(Duration::from_millis(300)).await.is_none());

    // A bad fromPosition is a typed error on the subscription.
    filtered
        .subscribe("bad", APPOINTMENT_EVENTS, json!({"from": "nope"}))
        .await;
    let m = filtered.receive().await.expect("an answer");
    assert_eq!(m["id"], "bad");
    let errors = if m["type"] == "error" {
        m["payload"].clone()
    } else {
        m["payload"]["errors"].clone()
    };
    assert_eq!(errors[0]["extensions"]["code"], "INVALID_INPUT", "{m}");
    assert_eq!(errors[0]["extensions"]["field"], "fromPosition", "{m}");
}

async fn shutdown(deployment: Deployment) {
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Closing Hospital").await;
    let booked = book_slot(&server, &h, 0).await;
    let mut socket = GqlSocket::with_key(&server, &h.admin).await;
    socket
        .subscribe("s", APPOINTMENT_EVENTS, json!({"from": "0.0"}))
        .await;
    let payload = socket.next_data("s").await;
    assert_eq!(
        event_of(&payload)["data"]["appointment_id"],
        booked.as_str()
    );

    let started = std::time::Instant::now();
    server.sigterm();
    // The subscription ends with a typed error (or the socket just closes).
    loop {
        match socket.receive().await {
            Ok(m) if m["type"] == "next" => {
                assert_eq!(
                    m["payload"]["errors"][0]["extensions"]["code"], "SHUTTING_DOWN",
                    "{m}"
                )
            }
            Ok(m) => assert_eq!(m["type"], "complete", "{m}"),
            Err(Refused::Closed(_)) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    let status = server.wait_for_exit().await;
    assert!(status.success(), "{status}");
    // Well within the 10 s grace period that an open socket would otherwise hold.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
