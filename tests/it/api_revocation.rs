//! Revocation that takes effect (docs/security.md, "Revocation"): admins
//! list and revoke API keys and browser sessions, over GraphQL and the CLI;
//! a revoked credential is refused by every instance within a second, and
//! its open WebSockets (close code 4403, both GraphQL protocols) and event
//! streams end. The cross-instance cases run two servers on one PostgreSQL
//! database, with the credential cached on the instance that did not revoke.
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::server::*;

/// The guarantee under test.
const WITHIN: Duration = Duration::from_secs(1);

const ME: &str = "{ me { role } }";

const EVENTS: &str = "subscription { appointmentEvents { position type } }";

/// The GraphQL WebSocket protocols the server speaks.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    /// `graphql-transport-ws`
    Transport,
    /// The older `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Transport => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }
}

/// A subscribed GraphQL socket, authenticated in `connection_init`.
struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    async fn subscribed(server: &TestServer, protocol: Protocol, token: &str) -> Socket {
        let mut request = format!("ws://{}/graphql", server.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(protocol.name()),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the socket opens");
        let mut socket = Socket { ws };
        socket
            .send(json!({
                "type": "connection_init",
                "payload": {"authorization": format!("Bearer {token}")},
            }))
            .await;
        let ack = socket.next_message().await.expect("an answer to the init");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        let start = match protocol {
            Protocol::Transport => "subscribe",
            Protocol::Legacy => "start",
        };
        socket
            .send(json!({"id": "1", "type": start, "payload": {"query": EVENTS}}))
            .await;
        socket
    }

    async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("cannot send on the socket");
    }

    /// The next protocol message other than a keep-alive; Err(close code) when the socket ends.
    async fn next_message(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("a message or the end within 30 s");
            match next {
                None | Some(Err(_)) => return Err(None),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(Message::Text(text))) => {
                    let m: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    match m["type"].as_str() {
                        Some("ping") => self.send(json!({"type": "pong"})).await,
                        Some("ka") | Some("pong") => {}
                        _ => return Ok(m),
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for the close; returns its code and when it came.
    async fn closed(mut self) -> (Option<u16>, Instant) {
        loop {
            match self.next_message().await {
                Ok(m) => assert!(m["type"] != "error", "the subscription failed: {m}"),
                Err(code) => return (code, Instant::now()),
            }
        }
    }
}

/// Opens `GET path` as an event stream with `token`, checks it is open.
async fn open_stream(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    response
}

/// Reads the stream until it ends; returns when it did.
async fn stream_ended(mut response: reqwest::Response) -> Instant {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the stream ends within 30 s")
        {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Instant::now(),
        }
    }
}

/// Asks `server` with `token` every 10 ms until it answers 401; returns when.
async fn refused_at(server: &TestServer, token: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = server
            .post_raw(Some(token), json!({"query": ME}).to_string())
            .await;
        if answer.status == 401 {
            assert_eq!(answer.json()["code"], "UNAUTHENTICATED", "{}", answer.body);
            return Instant::now();
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(Instant::now() < deadline, "still accepted after 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn api_keys(server: &TestServer, admin: &str) -> Vec<Value> {
    let data = server
        .gql_ok(
            admin,
            "{ apiKeys { id name role createdAt lastUsedAt revokedAt revokedBy } }",
            json!({}),
        )
        .await;
    data["apiKeys"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_and_its_sockets_and_streams_close_on_the_other_within_a_second(
) {
    let deployment = Deployment::postgres().await;
    let a = deployment.start().await;
    let b = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Revoking Hospital").await;
    let victim = deployment.create_api_key(&tenant, "admin").await;
    let victim_id = key_id(&victim);

    // B has verified (and cached) the key, and holds its sockets and stream.
    assert_eq!(
        b.gql_ok(&victim, ME, json!({})).await["me"]["role"],
        "admin"
    );
    let transport = Socket::subscribed(&b, Protocol::Transport, &victim).await;
    let legacy = Socket::subscribed(&b, Protocol::Legacy, &victim).await;
    let stream = open_stream(&b, "/events/stream", &victim).await;
    // Another key's socket on B stays open.
    let mut bystander = Socket::subscribed(&b, Protocol::Transport, &admin).await;

    // The listing shows every key and never a secret.
    let keys = api_keys(&a, &admin).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let listed = keys.iter().find(|k| k["id"] == victim_id.as_str()).unwrap();
    assert_eq!(listed["revokedAt"], Value::Null);
    let listing = serde_json::to_string(&keys).unwrap();
    assert!(!listing.contains(key_secret(&victim)) && !listing.contains(key_secret(&admin)));

    let revoked = a
        .gql_ok(
            &admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt revokedBy } }",
            json!({"id": victim_id}),
        )
        .await;
    let start = Instant::now();
    assert_eq!(revoked["revokeApiKey"]["id"], victim_id.as_str());
    assert!(revoked["revokeApiKey"]["revokedAt"].is_string());
    let admin_id = key_id(&admin);
    assert!(
        revoked["revokeApiKey"]["revokedBy"]
            .as_str()
            .unwrap()
            .contains(&admin_id),
        "{revoked}"
    );

    let (refused, (transport_code, transport_at), (legacy_code, legacy_at), stream_at) = tokio::join!(
        refused_at(&b, &victim),
        transport.closed(),
        legacy.closed(),
        stream_ended(stream),
    );
    let took = |at: Instant| at.saturating_duration_since(start);
    eprintln!(
        "revocation on B after: 401 {:?}, graphql-transport-ws {:?}, graphql-ws {:?}, SSE {:?}",
        took(refused),
        took(transport_at),
        took(legacy_at),
        took(stream_at)
    );
    assert_eq!(transport_code, Some(4403));
    assert_eq!(legacy_code, Some(4403));
    for (what, at) in [
        ("401", refused),
        ("graphql-transport-ws close", transport_at),
        ("graphql-ws close", legacy_at),
        ("SSE end", stream_at),
    ] {
        assert!(took(at) < WITHIN, "{what} came after {:?}", took(at));
    }
    // A also refuses it; the other key and its socket are untouched.
    assert_eq!(
        a.post_raw(Some(&victim), json!({"query": ME}).to_string())
            .await
            .status,
        401
    );
    assert_eq!(b.gql_ok(&admin, ME, json!({})).await["me"]["role"], "admin");
    assert!(
        bystander.ws.next().now_or_never().is_none(),
        "the other key's socket stays open"
    );
    // Revoking again changes nothing; a listing shows it revoked.
    let again = a
        .gql_ok(
            &admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({"id": victim_id}),
        )
        .await;
    assert_eq!(
        again["revokeApiKey"]["revokedAt"],
        revoked["revokeApiKey"]["revokedAt"]
    );
    let keys = api_keys(&b, &admin).await;
    let listed = keys.iter().find(|k| k["id"] == victim_id.as_str()).unwrap();
    assert_eq!(listed["revokedAt"], revoked["revokeApiKey"]["revokedAt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_while_an_instance_could_not_hear_still_takes_effect_within_a_second() {
    let deployment = Deployment::postgres().await;
    let a = deployment.start().await;
    let b = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Deaf Hospital").await;
    let victim = deployment.create_api_key(&tenant, "admin").await;
    assert_eq!(
        b.gql_ok(&victim, ME, json!({})).await["me"]["role"],
        "admin"
    );
    let socket = Socket::subscribed(&b, Protocol::Transport, &victim).await;

    // Both instances lose the connection they hear revocations on, and the
    // key is revoked before they have listened again: the NOTIFY is lost.
    let url = deployment.database_url().unwrap();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'buktor-revocations'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "one listening connection per instance");
    a.gql_ok(
        &admin,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id(&victim)}),
    )
    .await;
    let start = Instant::now();
    let (refused, (code, closed)) = tokio::join!(refused_at(&b, &victim), socket.closed());
    let took = |at: Instant| at.saturating_duration_since(start);
    eprintln!(
        "revocation unheard by B after: 401 {:?}, socket close {:?}",
        took(refused),
        took(closed)
    );
    assert_eq!(code, Some(4403));
    assert!(took(refused) < WITHIN && took(closed) < WITHIN);
    assert!(
        b.output()
            .contains("lost the PostgreSQL connection that hears revocations"),
        "the loss is logged"
    );
    // Listening again: the next revocation is heard as usual.
    let other = deployment.create_api_key(&tenant, "staff").await;
    assert_eq!(b.gql_ok(&other, ME, json!({})).await["me"]["role"], "staff");
    a.gql_ok(
        &admin,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id(&other)}),
    )
    .await;
    let start = Instant::now();
    assert!(refused_at(&b, &other).await - start < WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_list_and_revoke_and_only_their_own_hospitals_keys() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("Own Hospital").await;
    let staff = deployment.create_api_key(&tenant, "staff").await;
    let (_, other_admin) = deployment.tenant_with_admin("Other Hospital").await;

    for query in ["{ apiKeys { id } }", "{ sessions { id } }"] {
        assert_eq!(server.gql_err(&staff, query, json!({})).await, "FORBIDDEN");
    }
    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }";
    let id = json!({"id": key_id(&staff)});
    assert_eq!(
        server.gql_err(&staff, revoke, id.clone()).await,
        "FORBIDDEN"
    );
    // Another hospital's admin cannot see or revoke it.
    assert_eq!(api_keys(&server, &other_admin).await.len(), 1);
    assert_eq!(
        server.gql_err(&other_admin, revoke, id.clone()).await,
        "NOT_FOUND"
    );
    assert_eq!(
        server.gql_ok(&staff, ME, json!({})).await["me"]["role"],
        "staff"
    );
    assert_eq!(
        server.gql_err(&admin, revoke, json!({"id": "nope"})).await,
        "INVALID_INPUT"
    );
    // The embedded store: a revocation in the process takes effect at once.
    server.gql_ok(&admin, revoke, id).await;
    let answer = server
        .post_raw(Some(&staff), json!({"query": ME}).to_string())
        .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_keys_without_secrets_and_its_revocation_reaches_a_running_server_within_a_second(
) {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let (tenant, admin) = deployment.tenant_with_admin("CLI Hospital").await;
    let victim = deployment.create_api_key(&tenant, "staff").await;
    assert_eq!(
        server.gql_ok(&victim, ME, json!({})).await["me"]["role"],
        "staff"
    );
    let socket = Socket::subscribed(&server, Protocol::Transport, &victim).await;

    let listing = deployment
        .cli(&["api-key", "list", "--tenant", &tenant])
        .await;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(listing.contains(&key_id(&victim)) && listing.contains("staff key"));
    assert!(!listing.contains(key_secret(&victim)) && !listing.contains(key_secret(&admin)));

    let out = deployment
        .cli(&[
            "api-key",
            "revoke",
            "--tenant",
            &tenant,
            "--id",
            &key_id(&victim),
        ])
        .await;
    let start = Instant::now();
    assert!(
        out.starts_with(&format!("revoked {}", key_id(&victim))),
        "{out}"
    );
    let (refused, (code, closed)) = tokio::join!(refused_at(&server, &victim), socket.closed());
    eprintln!(
        "CLI revocation on the embedded store after: 401 {:?}, socket close {:?}",
        refused - start,
        closed.saturating_duration_since(start)
    );
    assert!(refused - start < WITHIN);
    assert!(closed.saturating_duration_since(start) < WITHIN);
    assert_eq!(code, Some(4403));
    let listing = deployment
        .cli(&["api-key", "list", "--tenant", &tenant])
        .await;
    let line = listing
        .lines()
        .find(|l| l.starts_with(&key_id(&victim)))
        .unwrap();
    assert_eq!(
        line.split('\t').nth(4).map(|r| r != "-"),
        Some(true),
        "{line}"
    );

    // An unknown key is an error, not a silent success.
    let unknown = deployment
        .cli_output(&[
            "api-key",
            "revoke",
            "--tenant",
            &tenant,
            "--id",
            &uuid::Uuid::new_v4().to_string(),
        ])
        .await;
    assert!(!unknown.status.success());
}

/// Exchanges a fresh embed token for a session of `user`.
async fn session(server: &TestServer, his_key: &str, user: &str, role: &str) -> String {
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/embed/v1/tokens", server.url))
        .bearer_auth(his_key)
        .json(
            &json!({"user": user, "name": format!("{user} name"), "role": role, "ttlSeconds": 300}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().expect("an embed token");
    let session: Value = client
        .post(format!("{}/embed/v1/session", server.url))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    session["session"].as_str().expect("a session").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_is_revoked_on_every_instance_within_a_second_and_its_streams_end() {
    let deployment = Deployment::postgres().await;
    let a = deployment.start().await;
    let b = deployment.start().await;
    let h = set_up_hospital(&deployment, &a, "Session Hospital").await;
    let first = session(&a, &h.admin, "nurse-1", "staff").await;
    let second = session(&a, &h.admin, "nurse-1", "staff").await;
    assert_eq!(b.gql_ok(&first, ME, json!({})).await["me"]["role"], "staff");

    // The sessions are listed, newest first, without their tokens.
    let listed = a
        .gql_ok(
            &h.admin,
            "{ sessions(user: \"nurse-1\") { id user name role expiresAt revokedAt } }",
            json!({}),
        )
        .await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    assert!(sessions
        .iter()
        .all(|s| s["user"] == "nurse-1" && s["role"] == "staff"));
    let text = listed.to_string();
    assert!(!text.contains(first.trim_start_matches("bks_")));
    // Which listed session is `first`: the older one.
    let first_id = sessions[1]["id"].as_str().unwrap().to_owned();

    let socket = Socket::subscribed(&b, Protocol::Legacy, &first).await;
    let events = open_stream(&b, "/events/stream", &first).await;
    let day = days_ahead(3);
    let widget = open_stream(
        &b,
        &format!(
            "/widget/v1/{}/slots/stream?service={}&practitioner={}&from={day}&to={day}",
            h.tenant, h.checkup, h.practitioner
        ),
        &first,
    )
    .await;

    a.gql_ok(
        &h.admin,
        "mutation($id: ID!) { revokeSession(id: $id) { id revokedAt } }",
        json!({"id": first_id}),
    )
    .await;
    let start = Instant::now();
    let (refused, (code, closed), events_end, widget_end) = tokio::join!(
        refused_at(&b, &first),
        socket.closed(),
        stream_ended(events),
        stream_ended(widget),
    );
    let took = |at: Instant| at.saturating_duration_since(start);
    eprintln!(
        "session revocation on B after: 401 {:?}, graphql-ws {:?}, /events/stream {:?}, widget stream {:?}",
        took(refused),
        took(closed),
        took(events_end),
        took(widget_end)
    );
    assert_eq!(code, Some(4403));
    for at in [refused, closed, events_end, widget_end] {
        assert!(took(at) < WITHIN, "after {:?}", took(at));
    }
    // One by one: the user's other session goes on.
    assert_eq!(
        b.gql_ok(&second, ME, json!({})).await["me"]["role"],
        "staff"
    );
    let after = b
        .gql_ok(
            &h.admin,
            "{ sessions { id revokedAt revokedBy } }",
            json!({}),
        )
        .await;
    let revoked: Vec<&Value> = after["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["revokedAt"].is_null())
        .collect();
    assert_eq!(revoked.len(), 1, "{after}");
    assert_eq!(revoked[0]["id"], first_id.as_str());
}

/// Runs `buktor <args>`; returns (success, stdout, stderr).
async fn run(deployment: &Deployment, args: &[&str]) -> (bool, String, String) {
    let out = deployment.cli_output(args).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_refuses_names_the_api_refuses_and_never_prints_control_characters() {
    let deployment = Deployment::embedded();
    let tenant = deployment.create_tenant("Plain Hospital").await;
    for bad in [
        "",
        "   ",
        "Ring\u{7}Hospital",
        "Evil\u{202E}latipsoH",
        "two\nlines",
    ] {
        let (ok, stdout, stderr) = run(
            &deployment,
            &[
                "tenant",
                "create",
                "--name",
                bad,
                "--time-zone",
                "Europe/Amsterdam",
            ],
        )
        .await;
        assert!(!ok, "tenant create accepted {bad:?}: {stdout}");
        assert!(stderr.contains("name"), "{stderr}");
        let (ok, _, _) = run(
            &deployment,
            &[
                "api-key", "create", "--tenant", &tenant, "--role", "staff", "--name", bad,
            ],
        )
        .await;
        assert!(!ok, "api-key create accepted {bad:?}");
    }
    // A name that reached the store by another way is shown escaped.
    let path = deployment.sqlite_path().unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "UPDATE tenants SET name = ?1 WHERE id = ?2",
        rusqlite::params!["Bell\u{7}\u{202E}\u{1b}[2J", tenant],
    )
    .unwrap();
    drop(conn);
    let listing = deployment.cli(&["tenant", "list"]).await;
    assert!(
        !listing
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202E}'),
        "{listing:?}"
    );
    assert!(
        listing.contains("Bell\\u{7}\\u{202e}\\u{1b}[2J"),
        "{listing:?}"
    );
    assert_eq!(listing.lines().count(), 1, "{listing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_admins_revoke_sessions_one_by_one_or_all_of_a_user() {
    let deployment = Deployment::embedded();
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Session CLI Hospital").await;
    let one = session(&server, &h.admin, "nurse-2", "staff").await;
    let two = session(&server, &h.admin, "nurse-2", "staff").await;
    let three = session(&server, &h.admin, "nurse-2", "staff").await;
    let other_user = session(&server, &h.admin, "nurse-3", "auditor").await;
    for s in [&one, &two, &three, &other_user] {
        assert_eq!(server.gql(s, ME, json!({})).await["errors"], Value::Null);
    }

    let listing = deployment
        .cli(&[
            "session", "list", "--tenant", &h.tenant, "--user", "nurse-2",
        ])
        .await;
    assert_eq!(listing.lines().count(), 3, "{listing}");
    for s in [&one, &two, &three] {
        assert!(!listing.contains(s.trim_start_matches("bks_")), "{listing}");
    }
    // Newest first: the last line is `one`.
    let one_id = listing.lines().last().unwrap().split('\t').next().unwrap();
    let out = deployment
        .cli(&["session", "revoke", "--tenant", &h.tenant, "--id", one_id])
        .await;
    assert!(out.starts_with(one_id), "{out}");
    let start = Instant::now();
    assert!(refused_at(&server, &one).await - start < WITHIN);
    assert_eq!(server.gql(&two, ME, json!({})).await["errors"], Value::Null);

    // An admin ends the rest of the user's sessions at once; nurse-3 stays.
    let revoked = server
        .gql_ok(
            &h.admin,
            "mutation { revokeUserSessions(user: \"nurse-2\") { id user revokedAt } }",
            json!({}),
        )
        .await;
    assert_eq!(
        revoked["revokeUserSessions"].as_array().unwrap().len(),
        2,
        "only the two still open: {revoked}"
    );
    for s in [&two, &three] {
        let answer = server
            .post_raw(Some(s), json!({"query": ME}).to_string())
            .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    assert_eq!(
        server.gql(&other_user, ME, json!({})).await["errors"],
        Value::Null
    );
    let unknown = deployment
        .cli_output(&[
            "session",
            "revoke",
            "--tenant",
            &h.tenant,
            "--id",
            &uuid::Uuid::new_v4().to_string(),
        ])
        .await;
    assert!(!unknown.status.success());
}
