//! No secret reaches a log: a whole scenario at `trace`, in both log
//! formats and on both stores, then the server's output (stdout and stderr)
//! is searched for every secret the scenario made or configured, in every
//! form it could be written (see src/telemetry.rs for the rules).
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use buktor::secrets::server_secret_context;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::{
    book_input, days_ahead, key_secret, local, set_up_hospital, Deployment, ServerOptions,
    TestServer, BOOK,
};
use crate::support::receiver::{Receiver, Reply};
use crate::support::smtp::SmtpSink;

const WAIT: Duration = Duration::from_secs(60);
const SMS_KEY: &str = "sms-signing-key-for-the-log-test-5f1c2e";
const SMTP_USER: &str = "buktor-mailer";
const CREATE_ENDPOINT: &str = "mutation($input: WebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { secret endpoint { id } } }";
const ROTATE: &str = "mutation($id: ID!) {
    rotateWebhookEndpointSecret(id: $id, overlapMinutes: 60) { secret } }";

/// A secret and the name it is reported by.
struct Sought {
    what: String,
    text: String,
}

/// Every secret of a scenario, in every written form worth looking for.
#[derive(Default)]
struct Secrets(Vec<Sought>);

impl Secrets {
    fn add(&mut self, what: &str, text: impl Into<String>) {
        let text = text.into();
        assert!(
            text.len() >= 8,
            "{what} is too short to search for: {text:?}"
        );
        self.0.push(Sought {
            what: what.into(),
            text,
        });
    }

    /// A `whsec_` secret: as shown, its base64 alone, and its key bytes in hex.
    fn add_whsec(&mut self, what: &str, secret: &str) {
        let b64 = secret.strip_prefix("whsec_").expect("a whsec_ secret");
        self.add(what, secret);
        self.add(&format!("{what} (base64)"), b64);
        self.add_bytes(what, &STANDARD.decode(b64).expect("base64"));
    }

    /// Key bytes: hex, both base64 alphabets, and as Rust's `Debug` of a
    /// byte slice (how tokio_postgres logs a bytea parameter).
    fn add_bytes(&mut self, what: &str, bytes: &[u8]) {
        self.add(&format!("{what} (hex)"), hex::encode(bytes));
        self.add(&format!("{what} (HEX)"), hex::encode_upper(bytes));
        self.add(&format!("{what} (base64)"), STANDARD.encode(bytes));
        self.add(
            &format!("{what} (base64url)"),
            URL_SAFE_NO_PAD.encode(bytes),
        );
        self.add(&format!("{what} (Debug)"), format!("{bytes:?}"));
        let spaced: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
        self.add(&format!("{what} (Debug, compact)"), spaced.join(","));
    }

    /// A signed browser token: whole, and its signature alone.
    fn add_token(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let (_, sig) = token.rsplit_once('.').expect("a signed token");
        self.add(&format!("{what} (signature)"), sig);
    }

    fn add_api_key(&mut self, what: &str, key: &str) {
        self.add(what, key);
        self.add(&format!("{what} (secret part)"), key_secret(key));
    }

    #[track_caller]
    fn assert_absent_from(&self, output: &str, context: &str) {
        let found: Vec<&str> = self
            .0
            .iter()
            .filter(|s| output.contains(&s.text))
            .map(|s| s.what.as_str())
            .collect();
        assert!(
            found.is_empty(),
            "{context}: the output holds {found:?} ({} lines)",
            output.lines().count()
        );
    }
}

/// A server secret as the store holds it, past the server (sealed).
async fn stored_server_secret(deployment: &Deployment, name: &str) -> Vec<u8> {
    match deployment.database_url() {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            let connection = tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT secret FROM server_secrets WHERE name = $1",
                    &[&name],
                )
                .await
                .expect("the server secret exists");
            let key: Vec<u8> = row.get(0);
            drop(client);
            let _ = connection.await;
            key
        }
        None => {
            let path = deployment.sqlite_path().expect("the embedded store");
            let name = name.to_owned();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).expect("open the embedded store");
                conn.query_row(
                    "SELECT secret FROM server_secrets WHERE name = ?1",
                    [name],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .expect("the server secret exists")
            })
            .await
            .expect("the read")
        }
    }
}

const SIGNING_KEY: &str = "browser-token-signing-key";

/// The token-signing key, opened with the deployment's encryption key.
async fn signing_key(deployment: &Deployment) -> Vec<u8> {
    let stored = stored_server_secret(deployment, SIGNING_KEY).await;
    deployment
        .secret_keys()
        .open(&server_secret_context(SIGNING_KEY), &stored)
        .expect("the signing key opens with the deployment's key")
        .plaintext
}

async fn post_json(
    server: &TestServer,
    path: &str,
    authorization: Option<&str>,
    extra: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .timeout(Duration::from_secs(30))
        .json(&body);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request
        .send()
        .await
        .expect("the request reaches the server");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Runs the scenario at `trace` in `format` and returns the server's whole
/// output and every secret the scenario saw.
async fn scenario(deployment: &Deployment, format: &str) -> (String, Secrets) {
    let mut secrets = Secrets::default();
    let hooks = Receiver::start().await;
    let gateway = Receiver::start().await;
    gateway.set_policy(|_| Reply::ok());
    let sink = SmtpSink::start().await;
    let smtp_password = format!("smtp-pw-{}", Uuid::new_v4().simple());
    secrets.add("the SMTP password", &smtp_password);
    secrets.add(
        "the SMTP AUTH PLAIN line",
        STANDARD.encode(format!("\0{SMTP_USER}\0{smtp_password}")),
    );
    secrets.add("the SMS signing key", SMS_KEY);

    let mut options = ServerOptions {
        env: sink.env(),
        ..Default::default()
    };
    for (k, v) in [
        ("BUKTOR_LOG__FILTER", "trace"),
        ("BUKTOR_LOG__FORMAT", format),
        ("BUKTOR_NOTIFICATIONS__SMS_SIGNING_KEY", SMS_KEY),
        ("BUKTOR_NOTIFICATIONS__SMTP_USERNAME", SMTP_USER),
        ("BUKTOR_NOTIFICATIONS__SMTP_PASSWORD", &smtp_password),
        ("BUKTOR_NOTIFICATIONS__POLL_MS", "50"),
        ("BUKTOR_WEBHOOKS__POLL_MS", "50"),
    ] {
        options.env.push((k.into(), v.into()));
    }
    if let Some(url) = deployment.database_url() {
        // A password in the URL (the test cluster trusts local connections
        // and ignores it): it must not be logged either.
        let password = format!("db-pw-{}", Uuid::new_v4().simple());
        let sep = if url.contains('?') { '&' } else { '?' };
        options.env.push((
            "DATABASE_URL".into(),
            format!("{url}{sep}password={password}"),
        ));
        secrets.add("the database password", password);
    }
    let mut server = deployment.start_with(options).await;

    // API keys: the admin key (CLI), a staff and a HIS key.
    let h = set_up_hospital(deployment, &server, "Discreet Hospital").await;
    secrets.add_api_key("the admin API key", &h.admin);
    let staff = deployment.create_api_key(&h.tenant, "staff").await;
    secrets.add_api_key("the staff API key", &staff);
    let his = deployment.create_api_key(&h.tenant, "his-system").await;
    secrets.add_api_key("the HIS API key", &his);

    // A webhook endpoint, its secret rotated: both secrets sign for an hour.
    let created = server
        .gql_ok(
            &h.admin,
            CREATE_ENDPOINT,
            json!({"input": {"url": format!("{}/hook", hooks.url()), "description": "HIS"}}),
        )
        .await;
    let first = created["createWebhookEndpoint"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = server
        .gql_ok(&h.admin, ROTATE, json!({"id": endpoint}))
        .await;
    let second = rotated["rotateWebhookEndpointSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add_whsec("the first webhook secret", &first);
    secrets.add_whsec("the rotated webhook secret", &second);
    hooks.set_secrets(&[&second, &first]);

    // Notifications: e-mail over SMTP with AUTH, texts to the gateway.
    let sms_secret = deployment
        .cli_with(
            &["notifications", "sms-secret", "--tenant", &h.tenant],
            &[("BUKTOR_NOTIFICATIONS__SMS_SIGNING_KEY", SMS_KEY)],
        )
        .await;
    secrets.add_whsec("the hospital's SMS secret", &sms_secret);
    server
        .gql_ok(
            &h.admin,
            "mutation($input: NotificationsInput!) { configureNotifications(input: $input) { id } }",
            json!({"input": {"enabled": true, "defaultLanguage": "en", "email": true,
                "smsGatewayUrl": format!("{}/sms", gateway.url())}}),
        )
        .await;

    // A booking over GraphQL, for a patient with an e-mail address and a phone.
    let mut input = book_input(
        &h.practitioner,
        &h.checkup,
        local(days_ahead(3), 9, 0),
        "P-LOG-1",
    );
    input["patient"] = json!({"hisPatientId": "P-LOG-1", "name": "Ada",
        "email": "ada@example.org", "phone": "+31 6 1234 5678"});
    server.gql_ok(&staff, BOOK, json!({ "input": input })).await;

    // An embed token, exchanged for a session that is then used.
    let (status, issued) = post_json(
        &server,
        "/embed/v1/tokens",
        Some(&format!("Bearer {}", h.admin)),
        &[],
        json!({"user": "u-1", "name": "Dr. Who", "role": "admin", "ttlSeconds": 300}),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let embed = issued["token"].as_str().unwrap().to_owned();
    secrets.add_token("the embed token", &embed);
    let (status, opened) = post_json(
        &server,
        "/embed/v1/session",
        None,
        &[],
        json!({"token": embed}),
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    let session = opened["session"].as_str().unwrap().to_owned();
    secrets.add_token("the session token", &session);
    let me = server.gql_ok(&session, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "admin");

    // The patient widget: a hold (its token), a booking (a manage token), a look.
    server
        .gql_ok(
            &h.admin,
            "mutation($i: EmbeddingInput!) { configureEmbedding(input: $i) { patientBooking } }",
            json!({"i": {"allowedOrigins": ["https://his.example"], "patientBooking": true}}),
        )
        .await;
    server.settle(&h.admin).await;
    let start = local(days_ahead(4), 10, 0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let widget = format!("/widget/v1/{}", h.tenant);
    let (status, hold) = post_json(
        &server,
        &format!("{widget}/holds"),
        None,
        &[],
        json!({"practitionerId": h.practitioner, "serviceId": h.checkup, "start": start}),
    )
    .await;
    assert_eq!(status, 201, "{hold}");
    let hold = hold["holdId"].as_str().unwrap().to_owned();
    secrets.add_token("the hold token", &hold);
    let (status, booked) = post_json(
        &server,
        &format!("{widget}/bookings"),
        None,
        &[],
        json!({"holdId": hold, "patient": {"name": "Bea", "email": "bea@example.org"}}),
    )
    .await;
    assert_eq!(status, 201, "{booked}");
    let manage = booked["manageToken"].as_str().unwrap().to_owned();
    secrets.add_token("the manage token", &manage);
    let (status, seen) = send(
        reqwest::Client::new()
            .get(format!("{}{widget}/manage", server.url))
            .header("authorization", format!("Manage {manage}")),
    )
    .await;
    assert_eq!(status, 200, "{seen}");

    // A HIS request.
    let (status, patient) = send(
        reqwest::Client::new()
            .put(format!("{}/his/v1/patients/P-HIS-1", server.url))
            .bearer_auth(&his)
            .header("idempotency-key", "log-test-1")
            .json(&json!({"version": 1, "name": "Cas"})),
    )
    .await;
    assert!(status < 300, "{status} {patient}");

    // Everything went out: signed webhooks, a text and e-mails (with AUTH).
    hooks
        .wait_until("a webhook signed with both secrets", WAIT, |a| {
            a.iter().any(|a| a.verified == vec![true, true])
        })
        .await;
    gateway.wait_until("a text", WAIT, |a| !a.is_empty()).await;
    sink.wait_until(WAIT, "an e-mail", |m| !m.is_empty()).await;
    assert!(
        !sink.auths().is_empty(),
        "the server authenticated to the SMTP server"
    );

    // The server's own key, read from the store.
    let key = signing_key(deployment).await;
    secrets.add_bytes("the token-signing key", &key);
    let encryption_key = first_key(deployment);
    secrets.add("the encryption key", encryption_key.as_str());
    secrets.add_bytes(
        "the encryption key",
        &buktor::secrets::parse_key("k", &encryption_key).unwrap(),
    );

    assert!(server.stop_sigterm().await.success());
    (server.output(), secrets)
}

async fn no_secret_in_the_logs(deployment: Deployment, format: &str) {
    let (output, secrets) = scenario(&deployment, format).await;
    // The one secret printed on purpose: a fresh embedded store's demo admin
    // key, on stdout, once, for the person who started it (README).
    let output: String = output
        .lines()
        .filter(|l| !l.starts_with("Admin API key (shown only now): "))
        .flat_map(|l| [l, "\n"])
        .collect();
    // The logs were really verbose: Buktor's own debug events are there.
    assert!(output.contains("request done"), "{output}");
    assert!(output.contains("DEBUG"), "debug events were written");
    if format == "json" {
        let line = output.lines().find(|l| l.contains("request done")).unwrap();
        serde_json::from_str::<Value>(line).expect("a JSON log line");
    }
    secrets.assert_absent_from(&output, &format!("logs in {format}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_in_json_on_postgres() {
    no_secret_in_the_logs(Deployment::postgres().await, "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_pretty_on_postgres() {
    no_secret_in_the_logs(Deployment::postgres().await, "pretty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_in_json_on_the_embedded_store() {
    no_secret_in_the_logs(Deployment::embedded(), "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_pretty_on_the_embedded_store() {
    no_secret_in_the_logs(Deployment::embedded(), "pretty").await;
}

// Secrets at rest: what could sign is sealed in the store (src/secrets.rs).

const SEALED: &str = "bkenc1:";

/// An endpoint's stored `(secret, previous_secret)`, as the rows hold them.
async fn stored_endpoint_secrets(d: &Deployment, tenant: &str, endpoint: &str) -> (String, String) {
    d.query_pairs(
        tenant,
        &format!(
            "SELECT secret, COALESCE(previous_secret, '') FROM webhook_endpoints \
             WHERE tenant_id = {{T}} AND id = '{endpoint}'"
        ),
    )
    .await
    .pop()
    .expect("the endpoint's row")
}

/// A staff session from an embed token: signed with the token-signing key.
async fn embed_session(server: &TestServer, admin: &str) -> String {
    let (status, issued) = post_json(
        server,
        "/embed/v1/tokens",
        Some(&format!("Bearer {admin}")),
        &[],
        json!({"user": "u-1", "name": "Dr. Who", "role": "admin", "ttlSeconds": 300}),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let (status, opened) = post_json(
        server,
        "/embed/v1/session",
        None,
        &[],
        json!({"token": issued["token"]}),
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    opened["session"].as_str().unwrap().to_owned()
}

/// Books one more appointment and waits for its webhook, signed with both
/// of the endpoint's secrets.
async fn a_webhook_signed_by_both(
    server: &TestServer,
    h: &crate::server::Hospital,
    hooks: &Receiver,
    day: u64,
) {
    let before = hooks.arrivals().len();
    let input = book_input(
        &h.practitioner,
        &h.checkup,
        local(days_ahead(day), 9, 0),
        &format!("P-REST-{day}"),
    );
    server
        .gql_ok(&h.admin, BOOK, json!({ "input": input }))
        .await;
    hooks
        .wait_until("a new webhook signed with both secrets", WAIT, |a| {
            a.len() > before && a[before..].iter().any(|a| a.verified == vec![true, true])
        })
        .await;
}

/// The `secrets.old_encryption_keys` environment value for `keys`.
fn old_keys_env(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!("[{}]", quoted.join(","))
}

fn key_id(key: &str) -> String {
    let bytes = buktor::secrets::parse_key("k", key).unwrap();
    buktor::secrets::SecretKeys::new(&bytes, &[])
        .current_id()
        .to_owned()
}

/// The key a deployment's processes were sealing with until now.
fn first_key(deployment: &Deployment) -> String {
    match deployment.encryption_key() {
        Some(k) => k.to_owned(),
        None => std::fs::read_to_string(
            deployment
                .sqlite_path()
                .unwrap()
                .with_file_name(buktor::secrets::KEY_FILE),
        )
        .unwrap()
        .trim()
        .to_owned(),
    }
}

async fn secrets_are_sealed_at_rest_and_the_key_rotates(deployment: Deployment) {
    let hooks = Receiver::start().await;
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Sealed Hospital").await;
    let created = server
        .gql_ok(
            &h.admin,
            CREATE_ENDPOINT,
            json!({"input": {"url": format!("{}/hook", hooks.url()), "description": "HIS"}}),
        )
        .await;
    let first = created["createWebhookEndpoint"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = server
        .gql_ok(&h.admin, ROTATE, json!({"id": endpoint}))
        .await;
    let second = rotated["rotateWebhookEndpointSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    hooks.set_secrets(&[&second, &first]);
    let session = embed_session(&server, &h.admin).await;

    // The rows hold neither secret, nor the token-signing key.
    let k1 = first_key(&deployment);
    let (current, previous) = stored_endpoint_secrets(&deployment, &h.tenant, &endpoint).await;
    for (stored, secret) in [(&current, &second), (&previous, &first)] {
        assert!(
            stored.starts_with(&format!("{SEALED}{}:", key_id(&k1))),
            "{stored}"
        );
        assert!(!stored.contains(secret.trim_start_matches("whsec_")));
    }
    let key = stored_server_secret(&deployment, SIGNING_KEY).await;
    assert!(key.starts_with(SEALED.as_bytes()));
    a_webhook_signed_by_both(&server, &h, &hooks, 3).await;

    // Rows from before sealing (plaintext) keep working, and are sealed at start.
    let plain_key = signing_key(&deployment).await;
    assert!(server.stop_sigterm().await.success());
    let blob = match deployment.database_url() {
        Some(_) => format!("decode('{}', 'hex')", hex::encode(&plain_key)),
        None => format!("X'{}'", hex::encode(&plain_key)),
    };
    deployment
        .execute_sql(&format!(
            "UPDATE webhook_endpoints SET secret = '{second}', previous_secret = '{first}' \
             WHERE id = '{endpoint}'; \
             UPDATE server_secrets SET secret = {blob} WHERE name = '{SIGNING_KEY}';"
        ))
        .await;
    server.restart().await;
    let (current, previous) = stored_endpoint_secrets(&deployment, &h.tenant, &endpoint).await;
    assert!(current.starts_with(SEALED) && previous.starts_with(SEALED));
    assert!(stored_server_secret(&deployment, SIGNING_KEY)
        .await
        .starts_with(SEALED.as_bytes()));
    let me = server.gql_ok(&session, "{ me { role } }", json!({})).await;
    assert_eq!(
        me["me"]["role"], "admin",
        "a session signed before still opens"
    );
    a_webhook_signed_by_both(&server, &h, &hooks, 4).await;
    assert!(server.stop_sigterm().await.success());

    // Rotation: a new key, the old one listed; `secrets rotate` seals all anew.
    let k2 = buktor::secrets::generate_key();
    let old = old_keys_env(&[&k1]);
    let rotate_env = [
        ("BUKTOR_SECRETS__ENCRYPTION_KEY", k2.as_str()),
        ("BUKTOR_SECRETS__OLD_ENCRYPTION_KEYS", old.as_str()),
    ];
    let said = deployment
        .cli_with(&["secrets", "rotate"], &rotate_env)
        .await;
    assert!(
        said.starts_with("3 stored secrets: 0 sealed from plaintext, 3 sealed again"),
        "{said}"
    );
    let (current, previous) = stored_endpoint_secrets(&deployment, &h.tenant, &endpoint).await;
    for stored in [&current, &previous] {
        assert!(
            stored.starts_with(&format!("{SEALED}{}:", key_id(&k2))),
            "{stored}"
        );
    }
    let again = deployment
        .cli_with(&["secrets", "rotate"], &rotate_env)
        .await;
    assert!(
        again.starts_with("3 stored secrets: 0 sealed from plaintext, 0 sealed again"),
        "{again}"
    );

    // The old key is no longer needed: the new one alone serves.
    if let Some(path) = deployment.sqlite_path() {
        std::fs::remove_file(path.with_file_name(buktor::secrets::KEY_FILE)).unwrap();
    }
    let mut options = ServerOptions::default();
    options
        .env
        .push(("BUKTOR_SECRETS__ENCRYPTION_KEY".into(), k2.clone()));
    server.restart_with(options).await;
    let me = server.gql_ok(&session, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "admin");
    a_webhook_signed_by_both(&server, &h, &hooks, 5).await;
    assert!(server.stop_sigterm().await.success());

    // A wrong key stops the start with an error that says what to do.
    let k3 = buktor::secrets::generate_key();
    for (key, says) in [
        (k3.as_str(), "which is not configured"),
        ("too-short", "must be base64 of 32 bytes"),
    ] {
        let out = deployment
            .cli_output_with(&["serve"], &[("BUKTOR_SECRETS__ENCRYPTION_KEY", key)])
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_the_key_rotates_on_postgres() {
    secrets_are_sealed_at_rest_and_the_key_rotates(Deployment::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_the_key_rotates_on_the_embedded_store() {
    secrets_are_sealed_at_rest_and_the_key_rotates(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_an_encryption_key_does_not_start() {
    let deployment = Deployment::postgres().await;
    let out = deployment
        .cli_output_with(&["serve"], &[("BUKTOR_SECRETS__ENCRYPTION_KEY", "")])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("secrets.encryption_key"), "{stderr}");
}
