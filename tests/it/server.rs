//! The harness of the API tests: the real `buktor` binary as a child process.
//!
//! Tests talk to it only as a client would: over HTTP, with API keys made by
//! the CLI, configured only by environment. Running the real binary (rather
//! than the app in-process) is what makes SIGTERM, `kill -9` and several
//! instances on one database real.
//!
//! - [`Deployment`]: the data that servers share (an embedded-store
//!   directory or a fresh PostgreSQL database), the CLI against it, and
//!   direct reads of its events for assertions the API cannot make.
//! - [`TestServer`]: one running `buktor serve`, its address, its output,
//!   and how to stop it (SIGTERM, kill -9) and start it again on the same data.
//! - [`Hospital`]: a practitioner with a schedule covering every day and two
//!   services, set up through GraphQL as an admin.
//! - Time helpers: tests book relative to now, in the hospital's time zone.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::support::pg::{fresh_database, TestDb};

/// How long a server gets to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server gets to exit (the server's own grace period is 10 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The hospitals of these tests are in Amsterdam: it has DST.
pub const TIME_ZONE: Tz = chrono_tz::Europe::Amsterdam;

/// Where the servers of a test keep their data; cheap to clone, and the data
/// (temporary directory or database) is removed when the last clone is dropped.
#[derive(Clone)]
pub struct Deployment {
    backend: Backend,
    /// The working directory of every process, so that a `buktor.toml` in the
    /// developer's checkout cannot change the configuration under test.
    workdir: Arc<TempDir>,
}

#[derive(Clone)]
enum Backend {
    Embedded {
        data_dir: PathBuf,
    },
    /// `key`: the deployment's `secrets.encryption_key`, which PostgreSQL
    /// requires; every process of the deployment is given it.
    Postgres {
        db: Arc<TestDb>,
        key: String,
    },
}

/// What a server is started with, besides its data.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `(requests, window_secs)` per API key. Tests default to a limit they never reach.
    pub rate_limit: (u32, u64),
    /// Shifts the server's clock (`BUKTOR_CLOCK_OFFSET_SECS`).
    pub clock_offset_secs: i64,
    /// PostgreSQL connections per instance.
    pub pool_size: usize,
    /// More environment, applied last (so it can override the above).
    pub env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            rate_limit: (100_000, 60),
            clock_offset_secs: 0,
            pool_size: 8,
            env: Vec::new(),
        }
    }
}

impl ServerOptions {
    /// Options whose server clock reads `now` when the server starts.
    pub fn clock_at(now: DateTime<Utc>) -> Self {
        ServerOptions {
            clock_offset_secs: (now - Utc::now()).num_seconds(),
            ..Default::default()
        }
    }
}

impl Deployment {
    /// A fresh embedded store (SQLite) in a temporary directory.
    pub fn embedded() -> Deployment {
        let workdir = tempfile::Builder::new()
            .prefix("buktor-api-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        Deployment {
            backend: Backend::Embedded {
                data_dir: workdir.path().join("data"),
            },
            workdir: Arc::new(workdir),
        }
    }

    /// A fresh PostgreSQL database on the test cluster (`BUKTOR_TEST_DATABASE_URL`).
    pub async fn postgres() -> Deployment {
        let db = fresh_database().await;
        let workdir = tempfile::Builder::new()
            .prefix("buktor-api-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        Deployment {
            backend: Backend::Postgres {
                db: Arc::new(db),
                key: buktor::secrets::generate_key(),
            },
            workdir: Arc::new(workdir),
        }
    }

    /// The PostgreSQL URL of this deployment, if it uses PostgreSQL.
    pub fn database_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Postgres { db, .. } => Some(&db.url),
            Backend::Embedded { .. } => None,
        }
    }

    /// A `buktor` command with a clean environment that selects this deployment's data.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_buktor"));
        // Configured by environment only, and only by what is set here: a
        // developer's own BUKTOR_* or DATABASE_URL must not change what is tested.
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR", "LANG"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
        cmd.current_dir(self.workdir.path());
        match &self.backend {
            Backend::Embedded { data_dir } => cmd.env("BUKTOR_DATA_DIR", data_dir),
            Backend::Postgres { db, key } => cmd
                .env("DATABASE_URL", &db.url)
                .env("BUKTOR_SECRETS__ENCRYPTION_KEY", key),
        };
        cmd
    }

    /// Runs `buktor <args>` with `env` on top, expects success, returns its trimmed stdout.
    pub async fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("cannot run the buktor CLI");
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success(),
            "`buktor {}` failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    pub async fn cli(&self, args: &[&str]) -> String {
        self.cli_with(args, &[]).await
    }

    /// Runs `buktor <args>` and returns its output, whether it succeeded or not.
    pub async fn cli_output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command();
        cmd.args(args);
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("cannot run the buktor CLI")
    }

    /// [`Deployment::cli_output`] with `env` on top.
    pub async fn cli_output_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("cannot run the buktor CLI")
    }

    /// The keys the deployment's processes seal stored secrets with: the
    /// configured key on PostgreSQL, the key file the embedded store made.
    pub fn secret_keys(&self) -> buktor::secrets::SecretKeys {
        let text = match &self.backend {
            Backend::Postgres { key, .. } => key.clone(),
            Backend::Embedded { data_dir } => {
                std::fs::read_to_string(data_dir.join(buktor::secrets::KEY_FILE))
                    .expect("the embedded store's key file")
            }
        };
        let key = buktor::secrets::parse_key("the key", &text).expect("a key");
        buktor::secrets::SecretKeys::new(&key, &[])
    }

    /// The configured encryption key, on PostgreSQL.
    pub fn encryption_key(&self) -> Option<&str> {
        match &self.backend {
            Backend::Postgres { key, .. } => Some(key),
            Backend::Embedded { .. } => None,
        }
    }

    /// Runs one SQL statement on the store, past the server.
    pub async fn execute_sql(&self, sql: &str) {
        match &self.backend {
            Backend::Embedded { data_dir } => {
                let path = data_dir.join("buktor.db");
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(&path).expect("open the embedded store");
                    conn.execute_batch(&sql).expect("the statement runs");
                })
                .await
                .expect("the statement task")
            }
            Backend::Postgres { db, .. } => {
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                    .await
                    .expect("cannot connect to the test database");
                let connection = tokio::spawn(connection);
                client.batch_execute(sql).await.expect("the statement runs");
                drop(client);
                let _ = connection.await;
            }
        }
    }

    /// The embedded store's database file, if this deployment uses it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.backend {
            Backend::Embedded { data_dir } => Some(data_dir.join("buktor.db")),
            Backend::Postgres { .. } => None,
        }
    }

    /// `buktor tenant create`: a hospital in Amsterdam; returns its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        let id = self
            .cli(&[
                "tenant",
                "create",
                "--name",
                name,
                "--time-zone",
                TIME_ZONE.name(),
            ])
            .await;
        uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("tenant create printed {id:?}"));
        id
    }

    /// `buktor api-key create`; returns the key. `role`: admin, staff, his-system or auditor.
    pub async fn create_api_key(&self, tenant: &str, role: &str) -> String {
        let key = self
            .cli(&[
                "api-key",
                "create",
                "--tenant",
                tenant,
                "--role",
                role,
                "--name",
                &format!("{role} key"),
            ])
            .await;
        assert!(key.starts_with("bk_"), "api-key create printed {key:?}");
        key
    }

    /// A tenant and an admin key for it.
    pub async fn tenant_with_admin(&self, name: &str) -> (String, String) {
        let tenant = self.create_tenant(name).await;
        let key = self.create_api_key(&tenant, "admin").await;
        (tenant, key)
    }

    pub async fn start(&self) -> TestServer {
        self.start_with(ServerOptions::default()).await
    }

    pub async fn start_with(&self, options: ServerOptions) -> TestServer {
        let running = self.spawn(&options).await;
        TestServer {
            addr: running.addr,
            url: format!("http://{}", running.addr),
            admin_key: running.admin_key.clone(),
            running: Some(running),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("cannot build an HTTP client"),
            deployment: self.clone(),
            options,
        }
    }

    async fn spawn(&self, options: &ServerOptions) -> Running {
        let mut cmd = self.command();
        cmd.arg("serve")
            .env("BUKTOR_LISTEN", "127.0.0.1:0")
            .env("BUKTOR_POOL_SIZE", options.pool_size.to_string())
            .env("BUKTOR_SHUTDOWN_TIMEOUT_SECS", "10")
            .env(
                "BUKTOR_RATE_LIMIT__REQUESTS",
                options.rate_limit.0.to_string(),
            )
            .env(
                "BUKTOR_RATE_LIMIT__WINDOW_SECS",
                options.rate_limit.1.to_string(),
            )
            .env(
                "BUKTOR_CLOCK_OFFSET_SECS",
                options.clock_offset_secs.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot start the buktor binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (started_tx, started_rx) = oneshot::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn({
            let output = output.clone();
            move || read_stdout(stdout, output, started_tx)
        });
        std::thread::spawn({
            let output = output.clone();
            move || drain(stderr, output)
        });
        let started = match tokio::time::timeout(STARTUP_TIMEOUT, started_rx).await {
            Ok(Ok(started)) => started,
            outcome => {
                let _ = child.kill();
                let status = child.wait();
                // Give the readers a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the server did not start ({}; {status:?}); its output:\n{}",
                    if outcome.is_err() {
                        "timed out"
                    } else {
                        "it exited"
                    },
                    output.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        };
        Running {
            child,
            addr: started.addr,
            admin_key: started.admin_key,
            output,
        }
    }

    /// How many events of each type the store holds for `tenant`, read from the
    /// database itself, past the server.
    pub async fn event_counts(&self, tenant: &str) -> BTreeMap<String, i64> {
        self.query_pairs(
            tenant,
            "SELECT event_type, COUNT(*) FROM events WHERE tenant_id = {T} GROUP BY event_type",
        )
        .await
        .into_iter()
        .map(|(t, n)| (t, n.parse().expect("a count")))
        .collect()
    }

    /// The count of events of `event_type` for `tenant`.
    pub async fn count_events(&self, tenant: &str, event_type: &str) -> i64 {
        self.event_counts(tenant)
            .await
            .get(event_type)
            .copied()
            .unwrap_or(0)
    }

    /// The ids of every appointment the store holds an `AppointmentBooked` event of.
    pub async fn booked_appointment_ids(&self, tenant: &str) -> Vec<String> {
        let json_id = match self.backend {
            Backend::Embedded { .. } => "json_extract(payload, '$.appointment_id')",
            Backend::Postgres { .. } => "payload->>'appointment_id'",
        };
        let mut ids: Vec<String> = self
            .query_pairs(
                tenant,
                &format!(
                    "SELECT {json_id}, event_type FROM events \
                     WHERE tenant_id = {{T}} AND event_type = 'AppointmentBooked'"
                ),
            )
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// Rows of two text columns; `{T}` in `sql` stands for the tenant id.
    pub async fn query_pairs(&self, tenant: &str, sql: &str) -> Vec<(String, String)> {
        match &self.backend {
            Backend::Embedded { data_dir } => {
                let path = data_dir.join("buktor.db");
                let sql = sql.replace("{T}", "?1");
                let tenant = tenant.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )
                    .expect("cannot open the embedded store");
                    let mut stmt = conn.prepare(&sql).expect("a valid query");
                    let rows = stmt
                        .query_map([&tenant], |row| {
                            let a: rusqlite::types::Value = row.get(0)?;
                            let b: rusqlite::types::Value = row.get(1)?;
                            Ok((sqlite_text(a), sqlite_text(b)))
                        })
                        .expect("the query runs");
                    rows.collect::<Result<Vec<_>, _>>().expect("rows")
                })
                .await
                .expect("the query task")
            }
            Backend::Postgres { db, .. } => {
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                    .await
                    .expect("cannot connect to the test database");
                let connection = tokio::spawn(connection);
                let sql = format!(
                    "SELECT a::text, b::text FROM ({}) AS q(a, b)",
                    sql.replace("{T}", "$1::text::uuid")
                );
                let rows = client
                    .query(&sql, &[&tenant])
                    .await
                    .expect("the query runs");
                drop(client);
                let _ = connection.await;
                rows.iter().map(|r| (r.get(0), r.get(1))).collect()
            }
        }
    }
}

fn sqlite_text(v: rusqlite::types::Value) -> String {
    match v {
        rusqlite::types::Value::Text(s) => s,
        rusqlite::types::Value::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// What a starting server printed on stdout.
struct Started {
    addr: SocketAddr,
    admin_key: Option<String>,
}

/// Collects stdout and reports the address once the start-up lines are out
/// (`Buktor listening on …`, the seed's admin key if any, and `GraphiQL:` last).
fn read_stdout(stdout: impl Read, output: Arc<Mutex<String>>, started: oneshot::Sender<Started>) {
    let mut started = Some(started);
    let mut addr = None;
    let mut admin_key = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(a) = line.strip_prefix("Buktor listening on http://") {
            addr = a.trim().parse::<SocketAddr>().ok();
        }
        if let Some(k) = line.strip_prefix("Admin API key (shown only now): ") {
            admin_key = Some(k.trim().to_owned());
        }
        let ready = line.starts_with("GraphiQL:");
        push_line(&output, &line);
        if ready {
            if let (Some(tx), Some(addr)) = (started.take(), addr) {
                let _ = tx.send(Started {
                    addr,
                    admin_key: admin_key.take(),
                });
            }
        }
    }
}

fn drain(stream: impl Read, output: Arc<Mutex<String>>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        push_line(&output, &line);
    }
}

fn push_line(output: &Mutex<String>, line: &str) {
    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
    out.push_str(line);
    out.push('\n');
}

/// A server process that has printed its address.
struct Running {
    child: Child,
    addr: SocketAddr,
    admin_key: Option<String>,
    output: Arc<Mutex<String>>,
}

/// One `buktor serve` process. Dropping it kills the process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The admin key the server printed when it seeded the demo hospital.
    pub admin_key: Option<String>,
    running: Option<Running>,
    client: reqwest::Client,
    deployment: Deployment,
    options: ServerOptions,
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }
}

impl TestServer {
    /// Sends a GraphQL request with `key`; returns the whole response
    /// (`data` and `errors`). Panics unless the HTTP status is 200 with JSON.
    pub async fn gql(&self, key: &str, query: &str, variables: Value) -> Value {
        self.gql_with_headers(key, query, variables, &[]).await
    }

    pub async fn gql_with_headers(
        &self,
        key: &str,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.url))
            .bearer_auth(key)
            .json(&json!({"query": query, "variables": variables}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = read(request.send().await).await;
        assert_eq!(
            response.status, 200,
            "GraphQL request failed: {}\nquery: {query}",
            response.body
        );
        response.json()
    }

    /// The `data` of a request that must succeed.
    pub async fn gql_ok(&self, key: &str, query: &str, variables: Value) -> Value {
        let response = self.gql(key, query, variables).await;
        data(&response).clone()
    }

    /// The `extensions.code` of a request that must fail.
    pub async fn gql_err(&self, key: &str, query: &str, variables: Value) -> String {
        let response = self.gql(key, query, variables).await;
        error_code(&response)
            .unwrap_or_else(|| panic!("expected an error, got {response}\nquery: {query}"))
            .to_owned()
    }

    /// POSTs `body` as JSON to `/graphql`, with `key` if given.
    pub async fn post_raw(&self, key: Option<&str>, body: impl Into<reqwest::Body>) -> RawResponse {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        read(request.send().await).await
    }

    /// POSTs to `/graphql` with exactly these headers.
    pub async fn post_with_headers(&self, headers: &[(&str, &str)], body: &str) -> RawResponse {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.url))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await).await
    }

    pub async fn get(&self, path: &str) -> RawResponse {
        read(self.client.get(format!("{}{path}", self.url)).send().await).await
    }

    /// Everything the server wrote to stdout and stderr so far (all its runs).
    pub fn output(&self) -> String {
        match &self.running {
            Some(r) => r.output.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => String::new(),
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        let running = self.running.as_ref().expect("the server is not running");
        nix::unistd::Pid::from_raw(running.child.id() as i32)
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM)
            .expect("cannot send SIGTERM");
    }

    /// Waits until the process exits (the address is then free).
    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let running = self.running.as_mut().expect("the server is not running");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = running
                .child
                .try_wait()
                .expect("cannot wait for the server")
            {
                return status;
            }
            if Instant::now() > deadline {
                let _ = running.child.kill();
                panic!(
                    "the server did not exit within {EXIT_TIMEOUT:?}; its output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit and returns its status.
    pub async fn stop_sigterm(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_for_exit().await
    }

    /// `kill -9`: no chance to finish anything.
    pub async fn kill9(&mut self) -> ExitStatus {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL)
            .expect("cannot send SIGKILL");
        self.wait_for_exit().await
    }

    /// Starts the server again on the same data with the same options. A
    /// running server is stopped with SIGTERM first and must exit cleanly.
    pub async fn restart(&mut self) {
        self.restart_with(self.options.clone()).await
    }

    pub async fn restart_with(&mut self, options: ServerOptions) {
        let alive = self
            .running
            .as_mut()
            .is_some_and(|r| r.child.try_wait().ok().flatten().is_none());
        if alive {
            let status = self.stop_sigterm().await;
            assert!(status.success(), "SIGTERM ended the server with {status}");
        }
        let previous = self.output();
        let running = self.deployment.spawn(&options).await;
        // Keep the earlier runs' output: checks over "everything it printed" see it all.
        {
            let mut out = running.output.lock().unwrap_or_else(|p| p.into_inner());
            out.insert_str(0, &previous);
        }
        self.addr = running.addr;
        self.url = format!("http://{}", running.addr);
        self.running = Some(running);
        self.options = options;
    }
}

async fn read(sent: reqwest::Result<reqwest::Response>) -> RawResponse {
    let response = sent.unwrap_or_else(|e| panic!("HTTP request failed: {e:?}"));
    RawResponse {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response
            .text()
            .await
            .expect("cannot read the response body"),
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let _ = running.child.kill();
        let _ = running.child.wait();
        if std::thread::panicking() {
            let output = self.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- last lines of the server at {} ----\n{}",
                self.url,
                tail.join("\n")
            );
        }
    }
}

/// The `data` of a GraphQL response that must have no errors.
pub fn data(response: &Value) -> &Value {
    assert!(
        response.get("errors").is_none_or(|e| e.is_null()),
        "expected success, got {response}"
    );
    &response["data"]
}

/// `errors[0].extensions.code`.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// `errors[0].extensions.field`.
pub fn error_field(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["field"].as_str()
}

/// The hyphenated key id inside an API key `bk_<id>_<secret>`.
pub fn key_id(key: &str) -> String {
    let simple = key
        .strip_prefix("bk_")
        .and_then(|k| k.split('_').next())
        .expect("an API key");
    uuid::Uuid::parse_str(simple).expect("a key id").to_string()
}

/// The secret part of an API key.
pub fn key_secret(key: &str) -> &str {
    key.rsplit('_').next().expect("an API key")
}

/// Today's date in the hospital's time zone plus `days`.
pub fn days_ahead(days: u64) -> NaiveDate {
    Utc::now()
        .with_timezone(&TIME_ZONE)
        .date_naive()
        .checked_add_days(Days::new(days))
        .expect("a date")
}

/// The instant of a wall-clock time in the hospital's time zone.
pub fn local(date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(hour, minute, 0).expect("a time");
    TIME_ZONE
        .from_local_datetime(&date.and_time(time))
        .single()
        .unwrap_or_else(|| panic!("{date} {time} is not one instant in {TIME_ZONE}"))
        .with_timezone(&Utc)
}

/// An instant as GraphQL takes and returns it (`2027-03-28T01:00:00+00:00`).
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// An instant GraphQL returned.
pub fn instant(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a time"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// The starts of `availableSlots` of one practitioner and service on
/// `from..=to`, once the read models have caught up with every write so far.
pub async fn slot_starts(
    server: &TestServer,
    key: &str,
    practitioner: &str,
    service: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<DateTime<Utc>> {
    server.settle(key).await;
    let data = server
        .gql_ok(
            key,
            "query($p: ID!, $s: ID!, $from: NaiveDate!, $to: NaiveDate!) {
               availableSlots(practitionerIds: [$p], serviceId: $s, from: $from, to: $to, first: 500) {
                 nodes { start end remaining }
               }
             }",
            json!({"p": practitioner, "s": service, "from": from, "to": to}),
        )
        .await;
    data["availableSlots"]["nodes"]
        .as_array()
        .expect("a list of slots")
        .iter()
        .map(|s| instant(&s["start"]))
        .collect()
}

pub const BOOK: &str = "mutation($input: BookInput!, $key: String) {
    bookAppointment(input: $input, idempotencyKey: $key) { id position events }
}";

/// The `input` of `bookAppointment` for a patient without contact data.
pub fn book_input(practitioner: &str, service: &str, start: DateTime<Utc>, patient: &str) -> Value {
    json!({
        "practitionerId": practitioner,
        "serviceId": service,
        "start": iso(start),
        "patient": {"hisPatientId": patient},
    })
}

/// A practitioner who works every day 00:00–23:45 (15-minute grid, since
/// 2020-01-01) and the services they offer.
#[derive(Debug, Clone)]
pub struct Hospital {
    pub tenant: String,
    pub admin: String,
    pub practitioner: String,
    /// 15 minutes, no minimum notice, bookable up to 730 days ahead.
    pub checkup: String,
    /// 30 minutes, at least 60 minutes' notice, at most 30 days ahead.
    pub consultation: String,
}

pub const EVERY_DAY: [&str; 7] = [
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

impl TestServer {
    /// Waits until the read models have applied every event of the key's
    /// hospital written so far (the lists and searches are served from them).
    pub async fn settle(&self, key: &str) {
        // On PostgreSQL the log shows an event only once every older
        // transaction of the cluster has ended, so a head read while another
        // test's transaction is open can be a little behind: read it again
        // until it stops moving.
        let mut settled: Option<String> = None;
        loop {
            let head = self.log_head(key).await;
            if let Some(at) = &head {
                self.gql_ok(
                    key,
                    "query($at: String) { practitioners(first: 0, atLeast: $at) { pageInfo { hasNextPage } } }",
                    json!({"at": at}),
                )
                .await;
            }
            if head == settled {
                return;
            }
            settled = head;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The position of the last event of the key's hospital the log shows.
    async fn log_head(&self, key: &str) -> Option<String> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .gql_ok(
                    key,
                    "query($a: String) { events(after: $a, first: 1000) { pageInfo { hasNextPage endCursor } } }",
                    json!({"a": after}),
                )
                .await;
            let info = &page["events"]["pageInfo"];
            if let Some(cursor) = info["endCursor"].as_str() {
                after = Some(cursor.to_owned());
            }
            if info["hasNextPage"] != json!(true) {
                return after;
            }
        }
    }
}

/// One weekly rule: every day from `start` to `end` (hospital time), on a
/// 15-minute grid, since 2020.
pub async fn work_every_day(
    server: &TestServer,
    admin: &str,
    practitioner: &str,
    start: &str,
    end: &str,
) {
    server
        .gql_ok(
            admin,
            "mutation($p: ID!, $rules: [WeeklyRuleInput!]!) {
               setWeeklyRules(practitionerId: $p, rules: $rules) { id }
             }",
            json!({"p": practitioner, "rules": [{
                "weekdays": EVERY_DAY, "start": start, "end": end,
                "gridMinutes": 15, "effectiveFrom": "2020-01-01",
            }]}),
        )
        .await;
}

/// Makes a tenant and admin key with the CLI, then the practitioner, the
/// schedule and the services through GraphQL.
pub async fn set_up_hospital(deployment: &Deployment, server: &TestServer, name: &str) -> Hospital {
    let (tenant, admin) = deployment.tenant_with_admin(name).await;
    let practitioner = register_practitioner(server, &admin, "Dr. Ada Lovelace").await;
    work_every_day(server, &admin, &practitioner, "00:00", "23:45").await;
    let checkup = define_service(server, &admin, &practitioner, "Check-up", 15, 0, 730).await;
    let consultation =
        define_service(server, &admin, &practitioner, "Consultation", 30, 60, 30).await;
    Hospital {
        tenant,
        admin,
        practitioner,
        checkup,
        consultation,
    }
}

pub async fn register_practitioner(server: &TestServer, admin: &str, name: &str) -> String {
    let data = server
        .gql_ok(
            admin,
            "mutation($input: PractitionerInput!) { registerPractitioner(input: $input) { id } }",
            json!({"input": {"name": name, "specialty": "General Practice"}}),
        )
        .await;
    data["registerPractitioner"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

pub async fn define_service(
    server: &TestServer,
    admin: &str,
    practitioner: &str,
    name: &str,
    minutes: i64,
    min_notice_minutes: i64,
    max_advance_days: i64,
) -> String {
    let data = server
        .gql_ok(
            admin,
            "mutation($input: ServiceInput!) { defineService(input: $input) { id } }",
            json!({"input": {
                "name": name, "durationMinutes": minutes, "practitionerIds": [practitioner],
                "minNoticeMinutes": min_notice_minutes, "maxAdvanceDays": max_advance_days,
            }}),
        )
        .await;
    data["defineService"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Books `start` and returns the appointment id; panics on an error.
pub async fn book(
    server: &TestServer,
    key: &str,
    practitioner: &str,
    service: &str,
    start: DateTime<Utc>,
) -> String {
    let data = server
        .gql_ok(
            key,
            BOOK,
            json!({"input": book_input(practitioner, service, start, "P-1")}),
        )
        .await;
    data["bookAppointment"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}
