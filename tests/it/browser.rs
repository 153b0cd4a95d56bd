//! End-to-end tests in a real browser: the booking widget and the embedded
//! admin screens (docs/embedding.md), driven in Debian's Chromium by
//! playwright-core from one node process (tests/browser/run.mjs).
//!
//! This test sets everything up the way a hospital would, with the harness
//! of the other API tests: real `buktor serve` processes (two instances on
//! one PostgreSQL database, and one on a fresh embedded store), tenants and
//! API keys made with the CLI, practitioners, schedules and services through
//! GraphQL, embed tokens issued over HTTP with the hospital's API key, and
//! the embedding settings through the GraphQL mutation `configureEmbedding`.
//! Then it runs the whole browser suite, one Chromium for every scenario, and
//! fails with the suite's output when any scenario fails. Screenshots of
//! every screen go to tests/browser/artifacts/.
//!
//! It needs `/usr/bin/chromium` (Debian's `chromium`) and
//! `tests/browser/node_modules` (`npm ci`); `scripts/test` installs both.
//! `BUKTOR_BROWSER_SCENARIOS=widget-race,admin-frame` runs only those
//! scenarios (names as in tests/browser/*.mjs).
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::server::{
    days_ahead, iso, local, register_practitioner, set_up_hospital, work_every_day, Deployment,
    Hospital, TestServer, TIME_ZONE,
};
use crate::support::receiver::Receiver;

/// The whole browser suite may take this long (it takes about a minute or two).
const SUITE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long node gets to start its host pages.
const HOSTS_TIMEOUT: Duration = Duration::from_secs(60);
/// Embed tokens for the browser outlive the whole suite.
const TOKEN_TTL_SECS: i64 = 600;
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Panics, rather than letting the test pass without a browser, when the
/// tools are missing.
fn check_tools() {
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian's `chromium` package)"));
    }
    if !playwright.exists() {
        missing.push(format!(
            "{} (`npm ci` in tests/browser)",
            playwright.display()
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("node (Node.js 20 or later)".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run them with `scripts/test browser`, which installs them",
        missing.join(", ")
    );
}

/// One hospital the browser works with: a tenant on a server, its ids and
/// what the scenarios need of it; becomes one entry of the suite's config.
struct Site {
    name: &'static str,
    backend: &'static str,
    /// Instance 1, and instance 2 on the same data where there is one.
    servers: Vec<String>,
    hospital: Hospital,
    tenant_name: String,
    day: NaiveDate,
    /// How long choosing a slot holds it (`configureEmbedding`).
    hold_minutes: i64,
    extra: Map<String, Value>,
    tokens: Map<String, Value>,
}

impl Site {
    async fn new(
        name: &'static str,
        backend: &'static str,
        deployment: &Deployment,
        servers: &[&TestServer],
        tenant_name: &str,
    ) -> Site {
        let hospital = set_up_hospital(deployment, servers[0], tenant_name).await;
        Site {
            name,
            backend,
            servers: servers.iter().map(|s| s.url.clone()).collect(),
            hospital,
            tenant_name: tenant_name.to_owned(),
            day: days_ahead(2),
            hold_minutes: 5,
            extra: Map::new(),
            tokens: Map::new(),
        }
    }

    fn json(&self) -> Value {
        let h = &self.hospital;
        let mut v = json!({
            "name": self.name,
            "backend": self.backend,
            "server": self.servers[0],
            "servers": self.servers,
            "tenant": h.tenant,
            "tenantName": self.tenant_name,
            "timeZone": TIME_ZONE.name(),
            "adminKey": h.admin,
            "practitioner": {"id": h.practitioner, "name": "Dr. Ada Lovelace"},
            "services": {
                "checkup": {"id": h.checkup, "name": "Check-up", "durationMinutes": 15},
                "consultation": {"id": h.consultation, "name": "Consultation", "durationMinutes": 30},
            },
            "day": self.day,
            "holdMinutes": self.hold_minutes,
            // Every quarter hour of the working day, hospital wall clock ->
            // instant (none near a DST change, which is at night).
            "at": (24..80)
                .map(|q| {
                    let (hour, minute) = (q / 4, (q % 4) * 15);
                    (format!("{hour:02}:{minute:02}"), json!(iso(local(self.day, hour, minute))))
                })
                .collect::<Map<String, Value>>(),
            "tokens": self.tokens,
        });
        let obj = v.as_object_mut().expect("an object");
        for (k, val) in &self.extra {
            obj.insert(k.clone(), val.clone());
        }
        v
    }

    /// `POST /embed/v1/tokens` with the hospital's admin key (as its HIS
    /// server would, with its own key); returns the token and its expiry.
    async fn issue_token(
        &self,
        server: &TestServer,
        user: &str,
        name: &str,
        role: &str,
        ttl: i64,
    ) -> (String, DateTime<Utc>) {
        let response = reqwest::Client::new()
            .post(format!("{}/embed/v1/tokens", server.url))
            .bearer_auth(&self.hospital.admin)
            .json(&json!({"user": user, "name": name, "role": role, "ttlSeconds": ttl}))
            .send()
            .await
            .expect("POST /embed/v1/tokens");
        let status = response.status().as_u16();
        let body = response.text().await.expect("a body");
        assert_eq!(status, 201, "POST /embed/v1/tokens answered: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        let token = body["token"].as_str().expect("a token").to_owned();
        let expires = body["expiresAt"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| panic!("expiresAt is not RFC 3339: {body}"))
            .with_timezone(&Utc);
        (token, expires)
    }

    /// Issues a token for the browser and files it under `key`.
    async fn token(&mut self, server: &TestServer, key: &str, user: &str, name: &str, role: &str) {
        let (token, _) = self
            .issue_token(server, user, name, role, TOKEN_TTL_SECS)
            .await;
        self.tokens.insert(
            key.to_owned(),
            json!({"token": token, "user": user, "name": name, "role": role}),
        );
    }

    /// The origins that may frame this hospital's pages and call its widget API.
    async fn configure_embedding(&self, server: &TestServer, allowed: &str) {
        let data = server
            .gql_ok(
                &self.hospital.admin,
                "mutation($origins: [String!]!, $hold: Int, $patient: Boolean) {
                   configureEmbedding(input: {allowedOrigins: $origins, holdMinutes: $hold, patientBooking: $patient}) {
                     allowedOrigins holdMinutes patientBooking
                   }
                 }",
                json!({"origins": [allowed], "hold": self.hold_minutes, "patient": true}),
            )
            .await;
        assert_eq!(
            data["configureEmbedding"],
            json!({"allowedOrigins": [allowed], "holdMinutes": self.hold_minutes, "patientBooking": true}),
            "configureEmbedding for {}",
            self.name
        );
    }
}

/// A second practitioner working every day, and a service both offer, so that
/// choosing a practitioner in the widget means something.
async fn add_second_practitioner(site: &mut Site, server: &TestServer) {
    let admin = site.hospital.admin.clone();
    let grace = register_practitioner(server, &admin, "Dr. Grace Hopper").await;
    work_every_day(server, &admin, &grace, "08:00", "17:00").await;
    let data = server
        .gql_ok(
            &admin,
            "mutation($input: ServiceInput!) { defineService(input: $input) { id } }",
            json!({"input": {
                "name": "Vaccination", "durationMinutes": 15,
                "practitionerIds": [site.hospital.practitioner, grace],
                "minNoticeMinutes": 0, "maxAdvanceDays": 60,
            }}),
        )
        .await;
    let vaccination = data["defineService"]["id"].as_str().expect("an id");
    site.extra.insert(
        "secondPractitioner".into(),
        json!({"id": grace, "name": "Dr. Grace Hopper"}),
    );
    site.extra.insert(
        "vaccination".into(),
        json!({"id": vaccination, "name": "Vaccination", "durationMinutes": 15}),
    );
}

/// Books through GraphQL; returns the appointment id.
async fn book_for(
    server: &TestServer,
    site: &Site,
    start: DateTime<Utc>,
    his_patient: &str,
    name: &str,
) -> String {
    let h = &site.hospital;
    let data = server
        .gql_ok(
            &h.admin,
            "mutation($input: BookInput!) { bookAppointment(input: $input) { id } }",
            json!({"input": {
                "practitionerId": h.practitioner, "serviceId": h.checkup, "start": iso(start),
                "patient": {"hisPatientId": his_patient, "name": name},
            }}),
        )
        .await;
    data["bookAppointment"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// The suite's output, collected from node's stdout and stderr.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn push(&self, line: &str) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str(line);
        out.push('\n');
    }

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
    mut hosts: Option<oneshot::Sender<Value>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(json) = line.strip_prefix("BUKTOR_HOSTS ") {
                if let (Some(tx), Ok(v)) = (hosts.take(), serde_json::from_str(json)) {
                    let _ = tx.send(v);
                }
            }
            // As it comes, for `--no-capture` runs; the whole of it again on failure.
            println!("browser | {line}");
            output.push(&line);
        }
    })
}

/// Tampers with a token: flips one character in the middle of its signature.
fn tamper(token: &str) -> String {
    let (claims, signature) = token.rsplit_once('.').expect("a token `claims.signature`");
    let mut sig: Vec<char> = signature.chars().collect();
    assert!(sig.len() > 4, "a signature: {signature}");
    let i = sig.len() / 2;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    format!("{claims}.{}", sig.into_iter().collect::<String>())
}

/// `POST /embed/v1/session`: (status, code).
async fn exchange(server: &TestServer, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/embed/v1/session", server.url))
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("POST /embed/v1/session");
    let status = response.status().as_u16();
    let body = response.text().await.expect("a body");
    (status, serde_json::from_str(&body).unwrap_or(json!(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_suite() {
    check_tools();

    // Two instances on one PostgreSQL database (live updates and races cross
    // instances), and one server on a fresh embedded store.
    let pg = Deployment::postgres().await;
    let pg1 = pg.start().await;
    let pg2 = pg.start().await;
    let embedded = Deployment::embedded();
    let sq = embedded.start().await;

    // --- the hospitals ------------------------------------------------------
    let mut patient_pg = Site::new(
        "patient-pg",
        "postgres",
        &pg,
        &[&pg1],
        "Sint Maarten Ziekenhuis",
    )
    .await;
    add_second_practitioner(&mut patient_pg, &pg1).await;
    let mut patient_sq = Site::new(
        "patient-sqlite",
        "embedded",
        &embedded,
        &[&sq],
        "Huisartsenpost Zuid",
    )
    .await;
    add_second_practitioner(&mut patient_sq, &sq).await;

    // Staff books on behalf of a patient the HIS recorded.
    let mut staff = Site::new("staff", "postgres", &pg, &[&pg1], "Rivierenland Kliniek").await;
    pg1.gql_ok(
        &staff.hospital.admin,
        "mutation($input: PatientContactInput!) { recordPatientContact(input: $input) { id } }",
        json!({"input": {
            "hisPatientId": "HIS-4711", "name": "Jan Jansen", "email": "jan.jansen@example.org",
            "phone": "+31 6 1111 2222", "language": "nl",
        }}),
    )
    .await;
    staff.extra.insert(
        "patient".into(),
        json!({"hisPatientId": "HIS-4711", "name": "Jan Jansen", "email": "jan.jansen@example.org", "phone": "+31 6 1111 2222"}),
    );
    staff
        .token(&pg1, "staffWidget", "nurse-7", "Nurse Noor Visser", "staff")
        .await;

    let live = Site::new("live", "postgres", &pg, &[&pg1, &pg2], "Live Ziekenhuis").await;
    let race = Site::new("race", "postgres", &pg, &[&pg1, &pg2], "Race Ziekenhuis").await;
    // Holds of the shortest length, to see one lapse by itself.
    let mut expiry = Site::new("expiry", "postgres", &pg, &[&pg1, &pg2], "Kort Ziekenhuis").await;
    expiry.hold_minutes = 1;

    // The admin screens' hospital: appointments on the suite's day, a push
    // endpoint with deliveries, and tokens for every role.
    let receiver = Receiver::start().await;
    let mut admin = Site::new("admin", "postgres", &pg, &[&pg1], "Academisch Centrum Oost").await;
    let created = pg1
        .gql_ok(
            &admin.hospital.admin,
            "mutation($input: WebhookEndpointInput!) {
               createWebhookEndpoint(input: $input) { secret endpoint { id url } } }",
            json!({"input": {"url": receiver.url(), "description": "HIS inbox"}}),
        )
        .await;
    let secret = created["createWebhookEndpoint"]["secret"]
        .as_str()
        .expect("a secret");
    receiver.set_secrets(&[secret]);
    let endpoint = created["createWebhookEndpoint"]["endpoint"].clone();
    let day = admin.day;
    let mut booked = Vec::new();
    for (hour, patient, name) in [
        (9, "HIS-1001", "Anna de Boer"),
        (10, "HIS-1002", "Bram Visser"),
        (11, "HIS-1003", "Cor van Dijk"),
        (16, "HIS-1004", "Dirk Smit"),
    ] {
        let start = local(day, hour, 0);
        let id = book_for(&pg1, &admin, start, patient, name).await;
        booked.push(
            json!({"id": id, "start": iso(start), "hisPatientId": patient, "patientName": name}),
        );
    }
    admin.extra.insert("appointments".into(), json!(booked));
    admin.extra.insert(
        "reschedule".into(),
        json!({"local": format!("{day}T14:00"), "start": iso(local(day, 14, 0))}),
    );
    admin.extra.insert("endpoint".into(), endpoint);
    admin
        .token(
            &pg1,
            "admin-appointments",
            "admin-1",
            "Dr. Admin Bakker",
            "admin",
        )
        .await;
    admin
        .token(
            &pg1,
            "admin-disallowed",
            "admin-1",
            "Dr. Admin Bakker",
            "admin",
        )
        .await;
    admin
        .token(
            &pg1,
            "auditor-appointments",
            "audit-3",
            "Ellen Auditor",
            "auditor",
        )
        .await;
    for screen in ["appointments", "schedules", "endpoints"] {
        admin
            .token(
                &pg1,
                &format!("staff-{screen}"),
                "nurse-9",
                "Nurse Fenna Smit",
                "staff",
            )
            .await;
    }
    // Refused tokens: one that expires in a second, one with its signature
    // tampered with. The server refuses both, also outside the browser.
    let (expired, expires_at) = admin
        .issue_token(&pg1, "admin-1", "Dr. Admin Bakker", "admin", 1)
        .await;
    let (good, _) = admin
        .issue_token(&pg1, "admin-1", "Dr. Admin Bakker", "admin", TOKEN_TTL_SECS)
        .await;
    let tampered = tamper(&good);
    admin
        .tokens
        .insert("expired".into(), json!({"token": expired}));
    admin
        .tokens
        .insert("tampered".into(), json!({"token": tampered}));
    admin
        .tokens
        .insert("tamper-original".into(), json!({"token": good}));

    let sites = [
        &patient_pg,
        &patient_sq,
        &staff,
        &live,
        &race,
        &expiry,
        &admin,
    ];

    // --- the browser suite ----------------------------------------------------
    let workdir = tempfile::Builder::new()
        .prefix("buktor-browser-")
        .tempdir()
        .expect("a temporary directory");
    let config_path = workdir.path().join("config.json");
    let config = json!({
        "sites": sites.iter().map(|s| (s.name.to_owned(), s.json())).collect::<Map<String, Value>>(),
    });
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).expect("JSON"),
    )
    .expect("write the suite's config");

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join("run.mjs"))
        .current_dir(browser_dir())
        .env("BUKTOR_BROWSER_CONFIG", &config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut node = cmd.spawn().expect("cannot start node");
    let output = Output::default();
    let (hosts_tx, hosts_rx) = oneshot::channel();
    let out_task = collect(
        node.stdout.take().expect("piped"),
        output.clone(),
        Some(hosts_tx),
    );
    let err_task = collect(node.stderr.take().expect("piped"), output.clone(), None);

    let hosts = match tokio::time::timeout(HOSTS_TIMEOUT, hosts_rx).await {
        Ok(Ok(hosts)) => hosts,
        _ => {
            let _ = node.kill().await;
            panic!(
                "the browser suite did not start its host pages; its output:\n{}",
                output.text()
            );
        }
    };
    let allowed = hosts["allowed"].as_str().expect("an origin").to_owned();
    let disallowed = hosts["disallowed"].as_str().expect("an origin");
    assert_ne!(allowed, disallowed);
    for site in sites {
        let server = if site.backend == "embedded" {
            &sq
        } else {
            &pg1
        };
        site.configure_embedding(server, &allowed).await;
    }

    // The refused tokens, outside the browser: wait (for the clock, not for
    // luck) until the short one has run out.
    let wait = (expires_at - Utc::now()).num_milliseconds() + 1500;
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let (status, body) = exchange(&pg1, admin.tokens["expired"]["token"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_EXPIRED")),
        "{body}"
    );
    let (status, body) = exchange(&pg1, &tampered).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_INVALID")),
        "{body}"
    );

    let mut stdin = node.stdin.take().expect("piped");
    stdin.write_all(b"go\n").await.expect("write to node");
    stdin.flush().await.expect("flush");
    drop(stdin);

    let status = match tokio::time::timeout(SUITE_TIMEOUT, node.wait()).await {
        Ok(status) => status.expect("wait for node"),
        Err(_) => {
            let _ = node.kill().await;
            panic!(
                "the browser suite did not finish within {SUITE_TIMEOUT:?}; its output:\n{}",
                output.text()
            );
        }
    };
    // Whatever node started is gone with it; don't wait for its pipes forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), out_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), err_task).await;
    let text = output.text();
    assert!(
        status.success(),
        "the browser suite failed ({status}); its output:\n{text}"
    );

    // --- the store, read past the server ----------------------------------------
    // However the race went, one appointment; the live scenario booked one.
    if ran("widget-race") {
        assert_eq!(
            pg.booked_appointment_ids(&race.hospital.tenant).await.len(),
            1,
            "the race booked exactly one appointment"
        );
    }
    if ran("widget-hold-expiry") {
        assert_eq!(
            pg.booked_appointment_ids(&expiry.hospital.tenant)
                .await
                .len(),
            1,
            "the lapsed hold's time was booked once"
        );
    }
    if ran("widget-live") {
        assert_eq!(
            pg.booked_appointment_ids(&live.hospital.tenant).await.len(),
            1,
            "the live scenario booked exactly one appointment"
        );
    }
    receiver.assert_no_problems();
}

/// Whether the suite ran this scenario (all of them unless
/// `BUKTOR_BROWSER_SCENARIOS` names some): the rule of run.mjs, where a name
/// also picks the scenarios it prefixes (`widget` runs `widget-race`).
fn ran(scenario: &str) -> bool {
    match std::env::var("BUKTOR_BROWSER_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .any(|s| !s.is_empty() && (scenario == s || scenario.starts_with(&format!("{s}-")))),
        _ => true,
    }
}
