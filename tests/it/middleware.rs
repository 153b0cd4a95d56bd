//! `buktor-middleware` end to end: signed pushes into the receiver, the
//! local store, and the sync into a real PostgreSQL (and SQLite) HIS table.
//!
//! Most tests drive the library in-process (receiver on port 0, one sync
//! pass at a time); the CLI tests and the outage test run the real binary.
//! The outage test starts a private PostgreSQL cluster it can stop and
//! start without disturbing the shared one.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor::middleware::config::{MiddlewareConfig, Settings};
use buktor::middleware::receiver::{Receiver, ReceiverState, PATH};
use buktor::middleware::store::LocalStore;
use buktor::middleware::sync::{PassReport, Syncer};
use buktor::middleware::Output;
use buktor::webhooks::signature::{self, SigningSecret};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::support::pg::{self, TestDb};

const HIS_TABLE_DDL: &str = "CREATE TABLE his_appointments (
    appointment_id text PRIMARY KEY,
    version bigint NOT NULL,
    status text NOT NULL,
    patient_id text NOT NULL CHECK (patient_id <> 'REFUSED'),
    starts_at timestamptz NOT NULL,
    note text
)";

const MAPPING: &str = r#"
table = "his_appointments"
create_table = false

[key]
column = "appointment_id"

[version]
column = "version"

[[columns]]
column = "status"
field = "data.appointment.status"
type = "text"

[[columns]]
column = "patient_id"
field = "data.appointment.patient.hisPatientId"
type = "text"

[[columns]]
column = "starts_at"
field = "/data/appointment/start"
type = "timestamp"

[[columns]]
column = "note"
field = "data.appointment.note"
type = "text"
nullable = true
"#;

// --- messages ------------------------------------------------------------------

/// When version `version` of an appointment starts: each version moves it,
/// so the HIS table shows which version it holds.
fn start_of(version: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::days(version)
}

/// A body per `docs/webhooks.md`: appointment `id` in its state after version `version`.
fn body(id: &str, version: i64, status: &str, patient: Option<&str>) -> Value {
    let event_type = match (status, version) {
        ("booked", 1) => "appointment.booked",
        ("booked", _) => "appointment.rescheduled",
        ("cancelled", _) => "appointment.cancelled",
        _ => "appointment.checked_in",
    };
    let start = start_of(version);
    json!({
        "type": event_type,
        "timestamp": Utc::now().to_rfc3339(),
        "version": 1,
        "data": {
            "event": {"id": uuid::Uuid::now_v7().to_string(), "name": "AppointmentBooked",
                      "position": "1.0", "stream": format!("appointment-{id}"), "streamVersion": version,
                      "occurredAt": Utc::now().to_rfc3339(), "actor": {"id": "desk", "role": "staff"},
                      "source": "admin", "correlationId": "c"},
            "tenant": {"id": "t1", "timeZone": "Europe/Amsterdam"},
            "appointment": {
                "id": id, "version": version, "status": status,
                "start": start.to_rfc3339(), "end": (start + chrono::Duration::minutes(20)).to_rfc3339(),
                "localStart": start.to_rfc3339(), "localEnd": (start + chrono::Duration::minutes(20)).to_rfc3339(),
                "calendarDay": start.format("%Y-%m-%d").to_string(), "note": null,
                "cancellation": null, "previous": null,
                "patient": {"hisPatientId": patient, "name": "Ada Jansen", "phone": null, "email": null},
                "practitioner": {"id": "p1", "externalId": "DOC-1", "name": "Dr. V", "specialty": null,
                                 "department": null, "location": null},
                "service": {"id": "s1", "externalId": null, "name": "Consultation", "durationMinutes": 20}
            }
        }
    })
}

fn booked(id: &str, version: i64) -> Value {
    body(id, version, "booked", Some(&format!("P-{id}")))
}

/// The webhook-id Buktor would give this appointment version.
fn webhook_id(id: &str, version: i64) -> String {
    format!("msg_{id}_v{version}")
}

/// The HIS table's rows: appointment → (version, status, start).
type HisState = BTreeMap<String, (i64, String, DateTime<Utc>)>;

fn expect(rows: &[(&str, i64, &str)]) -> HisState {
    rows.iter()
        .map(|(id, v, status)| (id.to_string(), (*v, status.to_string(), start_of(*v))))
        .collect()
}

// --- a middleware under test -----------------------------------------------------

struct Setup {
    dir: tempfile::TempDir,
    secret: SigningSecret,
    config_path: PathBuf,
}

/// A configuration file, mapping file and data directory in a temporary
/// directory, for a HIS database at `his_url`; the `extra_*` lines go at
/// the top level (where a `listen` or `secrets` replaces the default one),
/// into `[his_db]` and into `[schedule]`.
fn setup(his_url: &str, extra_top: &str, extra_his_db: &str, extra_schedule: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("buktor-middleware-test-")
        .tempdir()
        .unwrap();
    let secret = SigningSecret::generate();
    std::fs::write(dir.path().join("mapping.toml"), MAPPING).unwrap();
    let secrets = if extra_top.contains("secrets =") {
        String::new()
    } else {
        format!("secrets = [\"{}\"]", secret.expose())
    };
    let listen = if extra_top.contains("listen =") {
        ""
    } else {
        "listen = \"127.0.0.1:0\""
    };
    let config = format!(
        "{listen}\n\
         data_dir = \"{data}\"\n\
         {secrets}\n\
         workers = 1\n\
         shutdown_timeout_secs = 5\n\
         {extra_top}\n\
         [his_db]\n\
         url = \"{his_url}\"\n\
         mapping = \"mapping.toml\"\n\
         connect_timeout_secs = 2\n\
         statement_timeout_secs = 10\n\
         {extra_his_db}\n\
         [schedule]\n\
         interval_secs = 1\n\
         {extra_schedule}\n\
         [retry]\n\
         initial_secs = 1\n\
         max_secs = 2\n\
         [log]\n\
         format = \"pretty\"\n\
         filter = \"info,buktor=debug\"\n",
        data = dir.path().join("data").display(),
    );
    let config_path = dir.path().join("middleware.toml");
    std::fs::write(&config_path, config).unwrap();
    Setup {
        dir,
        secret,
        config_path,
    }
}

impl Setup {
    fn settings(&self) -> Settings {
        MiddlewareConfig::load(Some(&self.config_path))
            .unwrap()
            .settings(self.dir.path())
            .unwrap()
    }

    fn store(&self) -> LocalStore {
        LocalStore::open_in(&self.dir.path().join("data")).unwrap()
    }

    /// One pass as the scheduler runs it (`force` as `sync-now`).
    async fn pass(&self, syncer: &mut Syncer, force: bool) -> PassReport {
        let (_stop, stopped) = watch::channel(false);
        syncer.pass(force, &stopped).await.unwrap()
    }

    /// Runs the real binary with `args` and this configuration.
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        binary(&self.config_path)
            .args(args)
            .output()
            .await
            .expect("cannot run buktor-middleware")
    }

    async fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "buktor-middleware {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }
}

fn binary(config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_buktor-middleware"));
    // Only what is set here configures it, not a developer's own BUKTOR_MIDDLEWARE_*.
    cmd.env_clear();
    for var in ["PATH", "HOME", "TMPDIR", "LANG"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("NO_COLOR", "1").arg("--config").arg(config);
    cmd.kill_on_drop(true);
    cmd
}

/// The receiver alone, in-process, on a free port.
struct TestReceiver {
    url: String,
    handle: actix_web::dev::ServerHandle,
    client: reqwest::Client,
    secret: SigningSecret,
    store: LocalStore,
}

async fn start_receiver(setup: &Setup) -> TestReceiver {
    let settings = setup.settings();
    let store = setup.store();
    let state = Arc::new(ReceiverState {
        store: store.clone(),
        secrets: settings.secrets.clone(),
        tolerance_secs: settings.tolerance_secs,
        max_body_bytes: settings.max_body_bytes,
        outputs: Syncer::outputs(&settings),
    });
    let receiver = Receiver::build(settings.listen, 1, Duration::from_secs(1), state).unwrap();
    let url = format!("http://{}{PATH}", receiver.addr);
    let handle = receiver.handle();
    tokio::spawn(receiver.run());
    TestReceiver {
        url,
        handle,
        client: reqwest::Client::new(),
        secret: setup.secret.clone(),
        store,
    }
}

impl TestReceiver {
    async fn send_raw(&self, headers: &[(&str, String)], body: Vec<u8>) -> reqwest::Response {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.body(body).send().await.unwrap()
    }

    /// Signs `body` as Buktor does and posts it; returns the status.
    async fn push(&self, id: &str, body: &Value) -> u16 {
        push_to(&self.client, &self.url, &self.secret, id, body).await
    }

    fn message_count(&self) -> i64 {
        self.store.status().unwrap().messages
    }
}

async fn push_to(
    client: &reqwest::Client,
    url: &str,
    secret: &SigningSecret,
    id: &str,
    body: &Value,
) -> u16 {
    let bytes = serde_json::to_vec(body).unwrap();
    let headers = signature::headers(
        std::slice::from_ref(secret),
        id,
        Utc::now().timestamp(),
        &bytes,
    );
    let mut request = client.post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.body(bytes).send().await.unwrap().status().as_u16()
}

/// Posts `body` with `Transfer-Encoding: chunked` (no content-length) over a
/// plain socket; returns the response's status. Stops writing if the server
/// answers early.
async fn send_chunked(url: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

async fn his_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the HIS database: {e}"));
    tokio::spawn(connection);
    client
}

async fn his_state(client: &tokio_postgres::Client) -> HisState {
    client
        .query(
            "SELECT appointment_id, version, status, starts_at FROM his_appointments",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

async fn his_database() -> (TestDb, tokio_postgres::Client) {
    let db = pg::fresh_database().await;
    let client = his_client(&db.url).await;
    client.batch_execute(HIS_TABLE_DDL).await.unwrap();
    (db, client)
}

fn states(store: &LocalStore, output: Output) -> BTreeMap<String, String> {
    store
        .messages()
        .unwrap()
        .into_iter()
        .map(|(m, deliveries)| {
            let state = deliveries
                .iter()
                .find(|d| d.output == output.as_str())
                .map(|d| d.state.clone())
                .unwrap_or_default();
            (m.webhook_id, state)
        })
        .collect()
}

// --- the receiver ------------------------------------------------------------------

#[tokio::test]
async fn middleware_refuses_bad_input_with_problem_details_and_stores_nothing() {
    let setup = setup("sqlite:unused.db", "", "", "");
    let r = start_receiver(&setup).await;
    let good = serde_json::to_vec(&booked("a1", 1)).unwrap();
    let now = Utc::now().timestamp();
    let signed = |secret: &SigningSecret, ts: i64, body: &[u8]| {
        signature::headers(std::slice::from_ref(secret), "msg_1", ts, body).to_vec()
    };
    let without = |name: &str| -> Vec<(&'static str, String)> {
        signed(&r.secret, now, &good)
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    let huge = {
        let mut b = booked("a1", 1);
        b["data"]["appointment"]["note"] = json!("x".repeat(2 * 1024 * 1024));
        serde_json::to_vec(&b).unwrap()
    };
    let unsupported = {
        let mut b = booked("a1", 1);
        b["version"] = json!(2);
        serde_json::to_vec(&b).unwrap()
    };
    let no_appointment_id = {
        let mut b = booked("a1", 1);
        b["data"]["appointment"]
            .as_object_mut()
            .unwrap()
            .remove("id");
        serde_json::to_vec(&b).unwrap()
    };
    // Nested far past serde_json's recursion limit (128), signed: the
    // receiver reads it after the signature checks out.
    let deep_list = format!("{}1{}", "[".repeat(3_000), "]".repeat(3_000)).into_bytes();
    let deep_object = {
        let inner = format!("{}1{}", "{\"a\": ".repeat(3_000), "}".repeat(3_000));
        format!("{{\"type\": \"appointment.booked\", \"data\": {inner}}}").into_bytes()
    };
    let stranger = SigningSecret::generate();
    /// What is sent, its headers and body, and the status and code expected.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no headers", vec![], good.clone(), 401, "MISSING_SIGNATURE"),
        (
            "no signature",
            without(signature::HEADER_SIGNATURE),
            good.clone(),
            401,
            "MISSING_SIGNATURE",
        ),
        (
            "no timestamp",
            without(signature::HEADER_TIMESTAMP),
            good.clone(),
            401,
            "MISSING_SIGNATURE",
        ),
        (
            "no id",
            without(signature::HEADER_ID),
            good.clone(),
            401,
            "MISSING_SIGNATURE",
        ),
        (
            "another secret",
            signed(&stranger, now, &good),
            good.clone(),
            401,
            "BAD_SIGNATURE",
        ),
        (
            "a tampered body",
            signed(&r.secret, now, &good),
            unsupported.clone(),
            401,
            "BAD_SIGNATURE",
        ),
        (
            "a stale timestamp",
            signed(&r.secret, now - 600, &good),
            good.clone(),
            400,
            "STALE_TIMESTAMP",
        ),
        (
            "a future timestamp",
            signed(&r.secret, now + 600, &good),
            good.clone(),
            400,
            "STALE_TIMESTAMP",
        ),
        (
            "malformed JSON",
            signed(&r.secret, now, b"{\"type\": "),
            b"{\"type\": ".to_vec(),
            400,
            "MALFORMED_BODY",
        ),
        (
            "payload version 2",
            signed(&r.secret, now, &unsupported),
            unsupported.clone(),
            422,
            "UNSUPPORTED_VERSION",
        ),
        (
            "no appointment id",
            signed(&r.secret, now, &no_appointment_id),
            no_appointment_id.clone(),
            422,
            "INVALID_PAYLOAD",
        ),
        (
            "a list nested 3,000 deep",
            signed(&r.secret, now, &deep_list),
            deep_list.clone(),
            400,
            "MALFORMED_BODY",
        ),
        (
            "an object nested 3,000 deep",
            signed(&r.secret, now, &deep_object),
            deep_object.clone(),
            400,
            "MALFORMED_BODY",
        ),
        (
            "a 2 MiB body",
            signed(&r.secret, now, &huge),
            huge.clone(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let res = r.send_raw(&headers, body).await;
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        assert_eq!(r.message_count(), 0, "{what} stored something");
    }

    // A huge body sent chunked, without a content-length, is cut off too.
    let status = send_chunked(&r.url, &signed(&r.secret, now, &huge), &huge).await;
    assert_eq!(status, 413);
    assert_eq!(r.message_count(), 0);

    // The same good message, properly signed, is stored: the checks above can pass.
    let res = r
        .send_raw(&signed(&r.secret, now, &good), good.clone())
        .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(r.message_count(), 1);
    let health = r
        .client
        .get(r.url.replace(PATH, "/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    r.handle.stop(false).await;
}

#[tokio::test]
async fn middleware_accepts_every_secret_of_a_rotation() {
    let old = SigningSecret::generate();
    let new = SigningSecret::generate();
    let setup = setup(
        "sqlite:unused.db",
        &format!("secrets = [\"{}\", \"{}\"]", old.expose(), new.expose()),
        "",
        "",
    );
    let r = start_receiver(&setup).await;
    for (i, secret) in [&old, &new].into_iter().enumerate() {
        let status = push_to(
            &r.client,
            &r.url,
            secret,
            &format!("msg_r{i}"),
            &booked("a1", 1),
        )
        .await;
        assert_eq!(status, 200, "secret {i}");
    }
    let both = serde_json::to_vec(&booked("a2", 1)).unwrap();
    let headers = signature::headers(&[old, new], "msg_both", Utc::now().timestamp(), &both);
    assert_eq!(r.send_raw(&headers, both).await.status().as_u16(), 200);
    assert_eq!(r.message_count(), 3);
    r.handle.stop(false).await;
}

#[tokio::test]
async fn middleware_stores_a_duplicate_webhook_id_once_and_still_answers_2xx() {
    let setup = setup("sqlite:unused.db", "", "", "");
    let r = start_receiver(&setup).await;
    let body = booked("a1", 1);
    for attempt in 0..3 {
        // Each retry is signed afresh, as Buktor's dispatcher does.
        let bytes = serde_json::to_vec(&body).unwrap();
        let headers = signature::headers(
            std::slice::from_ref(&r.secret),
            "msg_dup",
            Utc::now().timestamp() - attempt,
            &bytes,
        );
        let res = r.send_raw(&headers, bytes).await;
        assert_eq!(res.status().as_u16(), 200);
        let answer: Value = res.json().await.unwrap();
        let expected = if attempt == 0 { "stored" } else { "duplicate" };
        assert_eq!(answer["status"], expected, "attempt {attempt}");
    }
    let messages = r.store.messages().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1.len(), 1, "one delivery: the HIS database");
    assert_eq!(messages[0].0.appointment_id.as_deref(), Some("a1"));
    assert_eq!(messages[0].0.appointment_version, Some(1));
    r.handle.stop(false).await;
}

// --- the sync into PostgreSQL -------------------------------------------------------

#[tokio::test]
async fn middleware_never_lets_an_older_version_overwrite_a_newer_one_in_postgresql() {
    let (db, his) = his_database().await;
    let setup = setup(&db.url, "", "", "");
    let r = start_receiver(&setup).await;
    let mut syncer = Syncer::new(setup.store(), &setup.settings());

    // v1 and v3 arrive and are synced; v2 arrives late.
    assert_eq!(r.push(&webhook_id("a", 1), &booked("a", 1)).await, 200);
    assert_eq!(r.push(&webhook_id("a", 3), &booked("a", 3)).await, 200);
    let report = setup.pass(&mut syncer, false).await;
    assert_eq!(
        report.output(Output::HisDb).unwrap().synced,
        2,
        "{report:?}"
    );
    assert_eq!(his_state(&his).await, expect(&[("a", 3, "booked")]));
    assert_eq!(r.push(&webhook_id("a", 2), &booked("a", 2)).await, 200);
    // b's versions all arrive out of order before a pass.
    for v in [2, 3, 1] {
        assert_eq!(r.push(&webhook_id("b", v), &booked("b", v)).await, 200);
    }
    let report = setup.pass(&mut syncer, false).await;
    assert_eq!(
        report.output(Output::HisDb).unwrap().synced,
        4,
        "{report:?}"
    );
    assert_eq!(
        his_state(&his).await,
        expect(&[("a", 3, "booked"), ("b", 3, "booked")]),
        "the late v2 of a did not roll it back"
    );
    assert!(states(&r.store, Output::HisDb)
        .values()
        .all(|s| s == "synced"));

    // Idempotent: the same messages again change nothing.
    let again = setup.pass(&mut syncer, true).await;
    assert_eq!(again.output(Output::HisDb).unwrap().synced, 0);
    r.handle.stop(false).await;
    drop(his);
    db.drop_db().await;
}

#[tokio::test]
async fn middleware_writes_one_transaction_per_batch_and_a_bad_message_fails_alone() {
    let (db, his) = his_database().await;
    let setup = setup(&db.url, "", "batch_size = 3", "");
    let r = start_receiver(&setup).await;
    let mut syncer = Syncer::new(setup.store(), &setup.settings());
    // Seven appointments: c2 lacks the patient id the mapping needs, the HIS
    // table's CHECK refuses c5's, and a schedule change is not mapped.
    for n in 1..=7 {
        let id = format!("c{n}");
        let patient = match n {
            2 => None,
            5 => Some("REFUSED".to_string()),
            _ => Some(format!("P-{n}")),
        };
        let status = r
            .push(
                &webhook_id(&id, 1),
                &body(&id, 1, "booked", patient.as_deref()),
            )
            .await;
        assert_eq!(status, 200);
    }
    let schedule = json!({"type": "schedule.changed", "version": 1, "data": {"schedule": {}}});
    assert_eq!(r.push("msg_schedule", &schedule).await, 200);
    // c2's later version waits behind its failed first one.
    assert_eq!(r.push(&webhook_id("c2", 2), &booked("c2", 2)).await, 200);

    let report = setup.pass(&mut syncer, false).await;
    let his_report = report.output(Output::HisDb).unwrap();
    assert_eq!(
        (
            his_report.synced,
            his_report.failed,
            his_report.ignored,
            his_report.batches
        ),
        (5, 2, 1, 3),
        "{report:?}"
    );
    let rows = his
        .query(
            "SELECT appointment_id, xmin::text FROM his_appointments ORDER BY appointment_id",
            &[],
        )
        .await
        .unwrap();
    let xmin: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        xmin.keys().cloned().collect::<Vec<_>>(),
        ["c1", "c3", "c4", "c6", "c7"],
        "every message but the two bad ones is written"
    );
    // Batches in arrival order: [c1 c2 c3] [c4 c5 c6] [c7 schedule].
    assert_eq!(
        xmin["c1"], xmin["c3"],
        "one transaction for the first batch"
    );
    assert_eq!(
        xmin["c4"], xmin["c6"],
        "c5's refusal did not roll back c4 and c6"
    );
    assert_ne!(xmin["c1"], xmin["c4"], "one transaction per batch");
    assert_ne!(xmin["c4"], xmin["c7"]);

    let s = states(&r.store, Output::HisDb);
    assert_eq!(s[&webhook_id("c2", 1)], "failed");
    assert_eq!(s[&webhook_id("c5", 1)], "failed");
    assert_eq!(s["msg_schedule"], "ignored");
    assert_eq!(s[&webhook_id("c2", 2)], "pending", "held back by c2 v1");
    let errors: BTreeMap<String, Option<String>> = r
        .store
        .messages()
        .unwrap()
        .into_iter()
        .map(|(m, d)| (m.webhook_id, d[0].last_error.clone()))
        .collect();
    let c2_error = errors[&webhook_id("c2", 1)].clone().unwrap();
    assert!(c2_error.contains("hisPatientId"), "{c2_error}");
    let c5_error = errors[&webhook_id("c5", 1)].clone().unwrap();
    assert!(c5_error.contains("23514"), "{c5_error}");

    // Skipping the failed c2 v1 lets its v2 through.
    let skipped = r
        .store
        .skip(&[webhook_id("c2", 1).parse().unwrap()], None, Utc::now())
        .unwrap();
    assert_eq!(skipped[0].changed, 1);
    setup.pass(&mut syncer, false).await;
    assert_eq!(his_state(&his).await["c2"].0, 2);
    r.handle.stop(false).await;
    drop(his);
    db.drop_db().await;
}

#[tokio::test]
async fn middleware_writes_nothing_outside_its_window_and_sync_now_writes_anyway() {
    let (db, his) = his_database().await;
    // A one-hour window that starts two hours from now, in UTC.
    let from = Utc::now() + chrono::Duration::hours(2);
    let window = format!(
        "{}-{}",
        from.format("%H:00"),
        (from + chrono::Duration::hours(1)).format("%H:00")
    );
    let setup = setup(
        &db.url,
        "time_zone = \"UTC\"",
        "",
        &format!("windows = [\"{window}\"]"),
    );
    let r = start_receiver(&setup).await;
    let mut syncer = Syncer::new(setup.store(), &setup.settings());
    assert_eq!(r.push(&webhook_id("w", 1), &booked("w", 1)).await, 200);

    let report = setup.pass(&mut syncer, false).await;
    assert!(report.outside_window, "{report:?}");
    assert!(his_state(&his).await.is_empty());

    let report = setup.cli_json(&["sync-now", "--json"]).await;
    assert_eq!(report["outputs"][0]["synced"], 1, "{report}");
    assert_eq!(his_state(&his).await, expect(&[("w", 1, "booked")]));
    let status = setup.cli_json(&["status", "--json"]).await;
    assert_eq!(status["outputs"][0]["output"], "his_db");
    assert_eq!(status["outputs"][0]["synced"], 1);
    assert!(
        status["outputs"][0]["last_success_at"].is_string(),
        "{status}"
    );
    r.handle.stop(false).await;
    drop(his);
    db.drop_db().await;
}

#[tokio::test]
async fn middleware_cli_shows_status_and_retries_and_skips_failed_messages() {
    let (db, his) = his_database().await;
    let setup = setup(&db.url, "", "", "");
    let r = start_receiver(&setup).await;
    for id in ["f1", "f2", "f3"] {
        let status = r
            .push(&webhook_id(id, 1), &body(id, 1, "booked", None))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(r.push(&webhook_id("ok", 1), &booked("ok", 1)).await, 200);
    let report = setup.cli_json(&["sync-now", "--json"]).await;
    assert_eq!(report["outputs"][0]["failed"], 3, "{report}");

    let status = setup.cli_json(&["status", "--json"]).await;
    let o = &status["outputs"][0];
    assert_eq!(
        (
            o["pending"].clone(),
            o["synced"].clone(),
            o["failed"].clone()
        ),
        (json!(0), json!(1), json!(3))
    );
    assert!(
        o["last_error"].as_str().unwrap().contains("hisPatientId"),
        "{status}"
    );
    let text = setup.cli(&["status"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("his_db: 0 pending, 1 synced, 3 failed, 0 skipped, 0 ignored"),
        "{text}"
    );

    let out = setup.cli(&["skip", &webhook_id("f1", 1)]).await;
    assert!(out.status.success(), "{out:?}");
    let out = setup.cli(&["retry", &webhook_id("f2", 1)]).await;
    assert!(out.status.success(), "{out:?}");
    let status = setup.cli_json(&["status", "--json"]).await;
    let o = &status["outputs"][0];
    assert_eq!(
        (
            o["pending"].clone(),
            o["failed"].clone(),
            o["skipped"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    // Naming a message that is not failed changes nothing and says so.
    let out = setup.cli(&["skip", &webhook_id("ok", 1)]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = setup.cli(&["retry", "--all"]).await;
    assert!(out.status.success(), "{out:?}");
    let status = setup.cli_json(&["status", "--json"]).await;
    assert_eq!(status["outputs"][0]["pending"], 2);
    assert_eq!(status["outputs"][0]["failed"], 0);
    r.handle.stop(false).await;
    drop(his);
    db.drop_db().await;
}

// --- the same trait, on SQLite ------------------------------------------------------

#[tokio::test]
async fn middleware_syncs_into_a_sqlite_his_database_through_the_same_trait() {
    let his_dir = tempfile::tempdir().unwrap();
    let his_path = his_dir.path().join("his.db");
    {
        let his = rusqlite::Connection::open(&his_path).unwrap();
        his.execute_batch(
            "CREATE TABLE his_appointments (appointment_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
             status TEXT NOT NULL, patient_id TEXT NOT NULL CHECK (patient_id <> 'REFUSED'),
             starts_at TEXT NOT NULL, note TEXT)",
        )
        .unwrap();
    }
    let setup = setup(&format!("sqlite:{}", his_path.display()), "", "", "");
    let r = start_receiver(&setup).await;
    let mut syncer = Syncer::new(setup.store(), &setup.settings());
    assert_eq!(r.push(&webhook_id("s", 1), &booked("s", 1)).await, 200);
    assert_eq!(
        r.push(&webhook_id("s", 3), &body("s", 3, "cancelled", Some("P-s")))
            .await,
        200
    );
    assert_eq!(
        r.push(
            &webhook_id("t", 1),
            &body("t", 1, "booked", Some("REFUSED"))
        )
        .await,
        200
    );
    setup.pass(&mut syncer, false).await;
    assert_eq!(r.push(&webhook_id("s", 2), &booked("s", 2)).await, 200);
    let report = setup.pass(&mut syncer, false).await;
    assert_eq!(report.output(Output::HisDb).unwrap().synced, 1);
    let his = rusqlite::Connection::open(&his_path).unwrap();
    let rows: Vec<(String, i64, String, String)> = his
        .prepare("SELECT appointment_id, version, status, starts_at FROM his_appointments")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [(
            "s".to_string(),
            3,
            "cancelled".to_string(),
            "2026-12-04T08:00:00.000Z".to_string()
        )]
    );
    assert_eq!(
        states(&r.store, Output::HisDb)[&webhook_id("t", 1)],
        "failed"
    );
    r.handle.stop(false).await;
}

// --- the HIS database stops in the middle ----------------------------------------------

/// A PostgreSQL cluster of this test's own, which it may stop and start.
struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    /// The unprivileged user that runs initdb and pg_ctl when we are root.
    user: Option<String>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("buktor-mw-pg-")
            .tempdir()
            .unwrap();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let user = root
            .then(|| std::env::var("BUKTOR_TEST_PG_USER").unwrap_or_else(|_| "postgres".into()));
        if let Some(user) = &user {
            let status = std::process::Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "cannot chown the cluster directory to {user}"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivateCluster { dir, port, user };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        cluster.start_again();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = format!("{PG_BIN}/{program}");
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--", &path]);
                c
            }
            None => std::process::Command::new(&path),
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {path}: {e} (PostgreSQL 15 is installed by scripts/test)")
        });
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let path = format!("{PG_BIN}/pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = match &self.user {
            Some(user) => std::process::Command::new("runuser")
                .args(["-u", user, "--", &path])
                .args(args)
                .output(),
            None => std::process::Command::new(&path).args(args).output(),
        };
    }
}

/// `buktor-middleware serve` as a child process.
struct MiddlewareProcess {
    child: tokio::process::Child,
    url: String,
}

async fn spawn_middleware(setup: &Setup, log_name: &str) -> MiddlewareProcess {
    let log = std::fs::File::create(setup.dir.path().join(log_name)).unwrap();
    let mut child = binary(&setup.config_path)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("cannot start buktor-middleware");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("buktor-middleware did not say where it listens within 60 s")
        .unwrap()
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(setup.dir.path().join(log_name)).unwrap_or_default();
            panic!("buktor-middleware exited at start:\n{log}")
        });
    let base = line
        .rsplit(' ')
        .next()
        .expect("an address on the line")
        .to_string();
    MiddlewareProcess {
        child,
        url: format!("{base}{PATH}"),
    }
}

async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn his_state_at(url: &str) -> Option<HisState> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(his_state(&client).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_loses_nothing_when_the_his_database_stops_and_the_middleware_is_killed() {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .unwrap();
    his_client(&cluster.url())
        .await
        .batch_execute(HIS_TABLE_DDL)
        .await
        .unwrap();
    let setup = setup(&cluster.url(), "", "", "");
    let client = reqwest::Client::new();
    let push = |url: String, id: &'static str, v: i64, status: &'static str| {
        let client = client.clone();
        let secret = setup.secret.clone();
        async move {
            let b = body(id, v, status, Some(&format!("P-{id}")));
            let code = push_to(&client, &url, &secret, &webhook_id(id, v), &b).await;
            assert_eq!(code, 200, "{id} v{v}");
        }
    };

    let first = spawn_middleware(&setup, "first.log").await;
    push(first.url.clone(), "a1", 1, "booked").await;
    push(first.url.clone(), "a2", 1, "booked").await;
    push(first.url.clone(), "a3", 1, "booked").await;
    push(first.url.clone(), "a4", 1, "booked").await;
    push(first.url.clone(), "a4", 2, "booked").await;
    let before = expect(&[
        ("a1", 1, "booked"),
        ("a2", 1, "booked"),
        ("a3", 1, "booked"),
        ("a4", 2, "booked"),
    ]);
    wait_for(
        "the first messages in the HIS table",
        Duration::from_secs(60),
        || async { his_state_at(&cluster.url()).await.filter(|s| *s == before) },
    )
    .await;

    // The HIS database stops; messages keep coming and are accepted.
    tokio::task::block_in_place(|| cluster.stop());
    push(first.url.clone(), "a1", 2, "cancelled").await;
    push(first.url.clone(), "a2", 2, "booked").await;
    push(first.url.clone(), "a5", 1, "booked").await;

    // The middleware dies without warning, and comes back while the HIS is still down.
    let mut first = first;
    first.child.kill().await.unwrap();
    let mut second = spawn_middleware(&setup, "second.log").await;
    push(second.url.clone(), "a3", 2, "checked-in").await;
    push(second.url.clone(), "a5", 2, "booked").await;
    push(second.url.clone(), "a6", 1, "booked").await;
    // Its passes fail and say why; the messages wait.
    let store = setup.store();
    wait_for(
        "a failed pass against the stopped HIS",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                let status = store.status().ok()?;
                let o = status.outputs.first()?;
                (o.pending == 6 && o.last_error.is_some()).then_some(())
            }
        },
    )
    .await;
    assert_eq!(store.status().unwrap().outputs[0].failed, 0);

    tokio::task::block_in_place(|| cluster.start_again());
    let after = expect(&[
        ("a1", 2, "cancelled"),
        ("a2", 2, "booked"),
        ("a3", 2, "checked-in"),
        ("a4", 2, "booked"),
        ("a5", 2, "booked"),
        ("a6", 1, "booked"),
    ]);
    wait_for(
        "every appointment's final state in the HIS table",
        Duration::from_secs(60),
        || async { his_state_at(&cluster.url()).await.filter(|s| *s == after) },
    )
    .await;
    let status = store.status().unwrap();
    let o = &status.outputs[0];
    assert_eq!((o.pending, o.synced, o.failed), (0, 11, 0), "{status:?}");

    // SIGTERM stops it cleanly.
    let pid = nix::unistd::Pid::from_raw(second.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), second.child.wait())
        .await
        .expect("buktor-middleware did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

// --- Buktor itself pushing to the middleware ---------------------------------------------

const CREATE_ENDPOINT: &str = "mutation($input: WebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { secret endpoint { id } } }";
const RESCHEDULE: &str = "mutation($id: ID!, $start: DateTime!) {
    rescheduleAppointment(id: $id, start: $start) { id } }";
const CANCEL: &str = "mutation($id: ID!, $reason: String!, $by: CancelledByInput!) {
    cancelAppointment(id: $id, reason: $reason, cancelledBy: $by) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_gets_buktors_bookings_reschedules_and_cancellations_into_the_his_table() {
    use crate::server::{book_input, days_ahead, local, set_up_hospital, Deployment, BOOK};

    let deployment = Deployment::postgres().await;
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Legacy HIS Hospital").await;
    let (his_db, his) = his_database().await;

    // The middleware's address is chosen first: Buktor's endpoint needs it,
    // and the middleware needs the endpoint's secret.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let created = server
        .gql_ok(
            &h.admin,
            CREATE_ENDPOINT,
            json!({"input": {"url": format!("http://127.0.0.1:{port}{PATH}"), "description": "legacy HIS"}}),
        )
        .await;
    let secret = created["createWebhookEndpoint"]["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let setup = setup(
        &his_db.url,
        &format!("listen = \"127.0.0.1:{port}\"\nsecrets = [\"{secret}\"]"),
        "",
        "",
    );
    let mut middleware = spawn_middleware(&setup, "middleware.log").await;

    let book = |patient: &'static str, start| {
        let input = book_input(&h.practitioner, &h.checkup, start, patient);
        let server = &server;
        let admin = h.admin.clone();
        async move {
            let data = server.gql_ok(&admin, BOOK, json!({ "input": input })).await;
            data["bookAppointment"]["id"].as_str().unwrap().to_owned()
        }
    };
    let day = days_ahead(3);
    let kept = book("P-KEPT", local(day, 9, 0)).await;
    let moved = book("P-MOVED", local(day, 10, 0)).await;
    let cancelled = book("P-CANCELLED", local(day, 11, 0)).await;
    let moved_then_cancelled = book("P-BOTH", local(day, 12, 0)).await;
    for (id, to) in [
        (&moved, local(day, 14, 0)),
        (&moved_then_cancelled, local(day, 15, 0)),
    ] {
        server
            .gql_ok(
                &h.admin,
                RESCHEDULE,
                json!({"id": id, "start": to.to_rfc3339()}),
            )
            .await;
    }
    for id in [&cancelled, &moved_then_cancelled] {
        server
            .gql_ok(
                &h.admin,
                CANCEL,
                json!({"id": id, "reason": "ill", "by": "PATIENT"}),
            )
            .await;
    }

    let expected: HisRows = [
        (&kept, 1, "booked", "P-KEPT", local(day, 9, 0)),
        (&moved, 2, "booked", "P-MOVED", local(day, 14, 0)),
        (&cancelled, 2, "cancelled", "P-CANCELLED", local(day, 11, 0)),
        (
            &moved_then_cancelled,
            3,
            "cancelled",
            "P-BOTH",
            local(day, 15, 0),
        ),
    ]
    .into_iter()
    .map(|(id, v, status, patient, start)| {
        (
            id.clone(),
            (v, status.to_owned(), patient.to_owned(), start),
        )
    })
    .collect();
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let now = his_rows(&his).await;
        if now == expected {
            break;
        }
        if Instant::now() > until {
            let log = std::fs::read_to_string(setup.dir.path().join("middleware.log"))
                .unwrap_or_default();
            panic!(
                "the HIS table is not the final state of every appointment:\n\
                 table: {now:#?}\nexpected: {expected:#?}\nmiddleware log:\n{log}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = setup.store().status().unwrap();
    assert_eq!(status.outputs[0].failed, 0, "{status:?}");
    middleware.child.kill().await.unwrap();
    drop(his);
    his_db.drop_db().await;
}

/// appointment → (version, status, patient, start).
type HisRows = BTreeMap<String, (i64, String, String, DateTime<Utc>)>;

async fn his_rows(client: &tokio_postgres::Client) -> HisRows {
    client
        .query(
            "SELECT appointment_id, version, status, patient_id, starts_at FROM his_appointments",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
}

// --- the HL7 output beside the database ------------------------------------------------

/// An MLLP peer on 127.0.0.1 that answers `AA` to every message and keeps them.
async fn start_hl7_peer() -> (
    u16,
    Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buffer.ends_with(&[0x1c, 0x0d]) {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buffer)
                .trim_start_matches('\u{b}')
                .trim_end_matches(['\u{1c}', '\r'])
                .to_string();
            let control_id = text
                .split('\r')
                .next()
                .and_then(|msh| msh.split('|').nth(9))
                .unwrap_or_default()
                .to_string();
            kept.lock().unwrap().push(text);
            let ack = format!(
                "\u{b}MSH|^~\\&|HIS|HIS|BUKTOR|BUKTOR|20261125120000||ACK|A{control_id}|T|2.5\rMSA|AA|{control_id}\r\u{1c}\r"
            );
            let _ = socket.write_all(ack.as_bytes()).await;
        }
    });
    (port, received, task)
}

#[tokio::test]
async fn middleware_sends_messages_to_hl7_beside_the_database_with_a_state_per_output() {
    let his_dir = tempfile::tempdir().unwrap();
    let his_path = his_dir.path().join("his.db");
    rusqlite::Connection::open(&his_path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE his_appointments (appointment_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
             status TEXT NOT NULL, patient_id TEXT NOT NULL, starts_at TEXT NOT NULL, note TEXT)",
        )
        .unwrap();
    let (port, received, peer) = start_hl7_peer().await;
    let setup = setup(&format!("sqlite:{}", his_path.display()), "", "", "");
    let mut config = std::fs::read_to_string(&setup.config_path).unwrap();
    config.push_str(&format!(
        "[hl7]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout_ms = 1000\n\
         ack_timeout_ms = 2000\nprocessing_id = \"T\"\n"
    ));
    std::fs::write(&setup.config_path, config).unwrap();
    let r = start_receiver(&setup).await;
    let mut syncer = Syncer::new(setup.store(), &setup.settings());

    assert_eq!(r.push(&webhook_id("h", 1), &booked("h", 1)).await, 200);
    let cancel = body("h", 2, "cancelled", Some("P-h"));
    assert_eq!(r.push(&webhook_id("h", 2), &cancel).await, 200);
    let schedule = json!({"type": "schedule.changed", "version": 1, "data": {"schedule": {}}});
    assert_eq!(r.push("msg_schedule", &schedule).await, 200);

    // One pass: each appointment message goes to both outputs, v1 before v2.
    let report = setup.pass(&mut syncer, false).await;
    for _ in 0..2 {
        let report = setup.pass(&mut syncer, false).await;
        assert!(
            report.outputs.iter().all(|o| o.error.is_none()),
            "{report:?}"
        );
    }
    let hl7 = report.output(Output::Hl7).unwrap();
    assert_eq!(
        hl7.ignored, 1,
        "schedule.changed has no SIU form: {report:?}"
    );
    let messages = received.lock().unwrap().clone();
    assert_eq!(
        messages.len(),
        2,
        "{messages:?} {report:?} {:?}",
        r.store.messages().unwrap()
    );
    assert!(messages[0].contains("SIU^S12"), "{}", messages[0]);
    assert!(messages[1].contains("SIU^S15"), "{}", messages[1]);
    for output in [Output::HisDb, Output::Hl7] {
        let s = states(&r.store, output);
        assert_eq!(s[&webhook_id("h", 1)], "synced", "{output}");
        assert_eq!(s[&webhook_id("h", 2)], "synced", "{output}");
        assert_eq!(s["msg_schedule"], "ignored", "{output}");
    }

    // The HL7 receiver goes away: the database output goes on, HL7 waits.
    peer.abort();
    let _ = peer.await;
    let rebooked = body("h", 3, "booked", Some("P-h"));
    assert_eq!(r.push(&webhook_id("h", 3), &rebooked).await, 200);
    let report = setup.pass(&mut syncer, false).await;
    assert_eq!(
        report.output(Output::HisDb).unwrap().synced,
        1,
        "{report:?}"
    );
    let hl7 = report.output(Output::Hl7).unwrap();
    assert_eq!(hl7.deferred, 1, "{report:?}");
    assert!(hl7.error.is_some(), "{report:?}");
    assert_eq!(
        states(&r.store, Output::Hl7)[&webhook_id("h", 3)],
        "pending"
    );
    assert_eq!(
        states(&r.store, Output::HisDb)[&webhook_id("h", 3)],
        "synced"
    );
    r.handle.stop(false).await;
}
