//! `buktor-bench`: books N appointments at concurrency C against PostgreSQL
//! through the real command path, in the output shape of the peer benchmark
//! (`../shared/peers/cqrs-es-bench`, cqrs-es + postgres-es doing the same
//! booking work), then checks by SQL that nothing was double-booked.
//!
//! ```text
//! buktor-bench DATABASE_URL BOOKINGS CONCURRENCY [CONTENDED_SLOTS] [--http]
//! ```
//!
//! - `DATABASE_URL` is any database of the cluster (a `postgres://` URL): the
//!   benchmark drops and recreates its own database `buktor_bench` there
//!   (`BUKTOR_BENCH_DB` names another) and migrates it with the store's
//!   `migrate()`. Run it only against a cluster you may do that on.
//! - Setup, through the real `Scheduler` commands: one tenant (time zone UTC,
//!   so every day has the same slots), practitioners with a weekly rule for
//!   every day 00:00–23:45 on a 15-minute grid effective from 2020-01-01, and
//!   one 15-minute service (capacity 1, min notice 0, max advance 730 days)
//!   offered by all of them.
//! - Bookings, C tasks, each with an idempotency key, metadata, and one atomic
//!   append to the calendar-day stream and the new appointment stream:
//!   - uncontended (no `CONTENDED_SLOTS`): worker `w` books only practitioner
//!     `w`'s slots, walking forward from tomorrow, so no two in-flight bookings
//!     touch the same practitioner-day;
//!   - contended: every worker books slot `i % K` of one practitioner, so
//!     exactly K succeed and the rest are refused with `SLOT_TAKEN`.
//! - `--http` starts the real server in-process (`Application::build`,
//!   `AppState::new`, listening on 127.0.0.1:0) and sends `bookAppointment`
//!   GraphQL mutations over C keep-alive HTTP/1.1 connections instead.
//!
//! Booking `i` goes to worker `i % C` as in the peer. `conflicts` counts
//! appends refused because a stream moved and then decided again
//! (`buktor_store_version_conflicts_total`); the peer cannot retry, so its
//! `conflicts` are failed commands.
//!
//! After the peer-shaped line come `stats:` (the cluster's WAL range of the
//! booking phase, for `pg_waldump --stats=record`, WAL bytes per command and
//! this process's CPU time) and `verify:`; the exit code is 1 if any command
//! failed or the check did not pass. Diagnostics, off by default:
//! `BUKTOR_BENCH_STORE_STATS=1` counts and times the store calls of the
//! booking phase (`store:` line); `BUKTOR_BENCH_ANALYZE=1` runs `ANALYZE`
//! after the setup. Session settings go in the URL, e.g.
//! `?options=-c%20log_min_duration_statement%3D0`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buktor::app::{
    AppError, Book, CommandContext, DefineService, RegisterPractitioner, Scheduler, SetWeeklyRules,
    SystemClock,
};
use buktor::auth::generate_api_key;
use buktor::config::{Config, RateLimit, Secret};
use buktor::http::{AppState, Application};
use buktor::metrics::Metrics;
use buktor::store::postgres::PostgresStore;
use buktor::store::{
    ApiKeyRecord, AppendRequest, Directory, EventStore, Position, RecordedEvent, Store,
    StoreResult, StoredIdempotency, TenantRecord,
};
use buktor_domain::practitioner::PractitionerDetails;
use buktor_domain::schedule::WeeklyRule;
use buktor_domain::service::ServiceDetails;
use buktor_domain::values::{Name, PatientRef, ShortText};
use buktor_domain::{Actor, PractitionerId, Role, ServiceId, Source, TenantId};
use chrono::{DateTime, Duration as Days, NaiveDate, NaiveTime, Utc, Weekday};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use uuid::Uuid;

const USAGE: &str =
    "usage: buktor-bench DATABASE_URL BOOKINGS CONCURRENCY [CONTENDED_SLOTS] [--http]";
const GRID_MINUTES: u32 = 15;
/// The weekly rule's window. A rule ends within its day, so the last slot
/// starts at 23:30: 95 slots a day.
const DAY_START: (u32, u32) = (0, 0);
const DAY_END: (u32, u32) = (23, 45);

struct Args {
    url: String,
    bookings: usize,
    concurrency: usize,
    contended: Option<usize>,
    http: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let http = raw.iter().any(|a| a == "--http");
    let pos: Vec<&String> = raw.iter().filter(|a| *a != "--http").collect();
    if !(3..=4).contains(&pos.len()) || pos.iter().any(|a| a.starts_with("--")) {
        bail!("{USAGE}");
    }
    let num = |i: usize, what: &str| -> anyhow::Result<usize> {
        let n: usize = pos[i].parse().with_context(|| format!("{what}: {USAGE}"))?;
        if n == 0 {
            bail!("{what} must be at least 1");
        }
        Ok(n)
    };
    Ok(Args {
        url: pos[0].clone(),
        bookings: num(1, "BOOKINGS")?,
        concurrency: num(2, "CONCURRENCY")?,
        contended: if pos.len() == 4 {
            Some(num(3, "CONTENDED_SLOTS")?)
        } else {
            None
        },
        http,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let passed = runtime.block_on(run(args))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// What one benchmark run set up.
struct Fixture {
    tenant: TenantId,
    practitioners: Vec<PractitionerId>,
    service: ServiceId,
    /// Midnight UTC of the first booked day (tomorrow).
    first_day: DateTime<Utc>,
}

impl Fixture {
    fn slots_per_day() -> usize {
        let minutes = |(h, m): (u32, u32)| h * 60 + m;
        ((minutes(DAY_END) - minutes(DAY_START)) / GRID_MINUTES) as usize
    }

    /// Booking `i`: which practitioner, at what time.
    fn target(
        &self,
        i: usize,
        concurrency: usize,
        contended: Option<usize>,
    ) -> (PractitionerId, DateTime<Utc>) {
        let (practitioner, slot) = match contended {
            Some(k) => (self.practitioners[0], i % k),
            None => (self.practitioners[i % concurrency], i / concurrency),
        };
        let per_day = Self::slots_per_day();
        let day = (slot / per_day) as i64;
        let minute = (DAY_START.0 * 60 + DAY_START.1) as i64
            + (slot % per_day) as i64 * i64::from(GRID_MINUTES);
        (
            practitioner,
            self.first_day + Days::days(day) + Days::minutes(minute),
        )
    }
}

/// Tallies of one worker.
#[derive(Default)]
struct Tally {
    ok: usize,
    rejected: usize,
    gave_up: usize,
    errors: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.gave_up += other.gave_up;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }

    fn record(&mut self, started: Instant, outcome: Result<(), (String, String)>) {
        self.latencies.push(started.elapsed());
        match outcome {
            Ok(()) => self.ok += 1,
            Err((code, _)) if code == "SLOT_TAKEN" => self.rejected += 1,
            Err((code, _)) if code == "CONCURRENCY_CONFLICT" => self.gave_up += 1,
            Err((code, message)) => {
                self.errors += 1;
                self.first_error.get_or_insert(format!("{code}: {message}"));
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let db = std::env::var("BUKTOR_BENCH_DB").unwrap_or_else(|_| "buktor_bench".into());
    let url = recreate_database(&args.url, &db).await?;
    let pool_size = args.concurrency + 2;
    let store = PostgresStore::connect(&url, pool_size)
        .await
        .context("cannot connect to the bench database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the bench database")?;
    let store: Arc<dyn Store> = Arc::new(store);
    // BUKTOR_BENCH_STORE_STATS=1 counts the store calls a command makes and their latency.
    let store_stats =
        std::env::var_os("BUKTOR_BENCH_STORE_STATS").map(|_| Arc::new(StoreStats::default()));
    let store: Arc<dyn Store> = match &store_stats {
        Some(stats) => Arc::new(CountingStore {
            inner: store,
            stats: stats.clone(),
        }),
        None => store,
    };

    let config = Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: Some(Secret::new(url.clone())),
        pool_size,
        rate_limit: RateLimit {
            requests: u32::MAX,
            window_secs: 1,
        },
        ..Config::default()
    };
    // In-process the scheduler is used directly; over HTTP the server's own
    // scheduler is used for setup too, so its caches are as a running server's.
    let (scheduler, metrics, state) = if args.http {
        let state = Arc::new(AppState::new(&config, store.clone()));
        (state.scheduler.clone(), state.metrics.clone(), Some(state))
    } else {
        let metrics = Arc::new(Metrics::new());
        let scheduler = Arc::new(Scheduler::new(
            store.clone(),
            Arc::new(SystemClock),
            metrics.clone(),
        ));
        (scheduler, metrics, None)
    };
    let practitioners = if args.contended.is_some() {
        1
    } else {
        args.concurrency
    };
    let fixture = Arc::new(set_up(&scheduler, practitioners).await?);
    let last = fixture
        .target(args.bookings - 1, args.concurrency, args.contended)
        .1;
    if last > fixture.first_day + Days::days(729) {
        bail!("{} bookings at concurrency {} reach {last}, past the 730-day booking window: lower BOOKINGS or raise CONCURRENCY", args.bookings, args.concurrency);
    }

    let check = CheckClient::connect(&url).await?;
    // An experiment, off by default (the peer's tables start unanalyzed too):
    // BUKTOR_BENCH_ANALYZE=1 gives the planner statistics of the set-up data.
    if std::env::var_os("BUKTOR_BENCH_ANALYZE").is_some() {
        check.client.batch_execute("ANALYZE").await?;
    }
    let events_before = check.count_events(fixture.tenant).await?;
    let conflicts_before = metrics.conflicts.get();
    let wal_before = check.wal_lsn().await?;
    let cpu_before = own_cpu_secs();
    let run_id = Uuid::now_v7().simple().to_string();
    if let Some(stats) = &store_stats {
        stats.reset();
    }

    let started = Instant::now();
    let tally = match &state {
        None => book_in_process(&args, &scheduler, &fixture, &run_id).await?,
        Some(state) => book_over_http(&args, &config, state.clone(), &fixture, &run_id).await?,
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu = own_cpu_secs() - cpu_before;
    let wal_after = check.wal_lsn().await?;

    let conflicts = metrics.conflicts.get() - conflicts_before;
    let events = check.count_events(fixture.tenant).await? - events_before;
    let mut latencies = tally.latencies.clone();
    latencies.sort_unstable();
    println!(
        "commands={} concurrency={} ok={} rejected={} conflicts={conflicts} events={events} secs={secs:.2} commands_per_s={:.0} p50_ms={:.2} p99_ms={:.2}{}",
        args.bookings,
        args.concurrency,
        tally.ok,
        tally.rejected,
        args.bookings as f64 / secs,
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        if args.http { " mode=http" } else { "" },
    );
    // For `pg_waldump --start FROM --end TO --stats=record` on the cluster's pg_wal.
    println!(
        "stats: wal_from={} wal_to={} wal_bytes_per_command={:.0} bench_process_cpu_s={cpu:.2}",
        wal_before.0,
        wal_after.0,
        (wal_after.1 - wal_before.1) as f64 / args.bookings as f64,
    );
    if let Some(stats) = &store_stats {
        stats.print(args.bookings, &latencies);
    }
    let mut passed = true;
    if tally.gave_up + tally.errors > 0 {
        passed = false;
        println!(
            "FAILED: gave_up={} (CONCURRENCY_CONFLICT) errors={} first_error={}",
            tally.gave_up,
            tally.errors,
            tally.first_error.as_deref().unwrap_or("-")
        );
    }
    passed &= verify(&check, &fixture, &args, tally.ok).await?;
    Ok(passed)
}

/// Drops and recreates `db` on the cluster of `admin_url`; returns its URL.
async fn recreate_database(admin_url: &str, db: &str) -> anyhow::Result<String> {
    if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("database name {db:?}: use letters, digits and _ only");
    }
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", Secret::new(admin_url)))?;
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .with_context(|| format!("cannot drop database {db}"))?;
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .with_context(|| format!("cannot create database {db}"))?;
    drop(client);
    let _ = conn.await;
    with_database(admin_url, db)
}

/// `admin_url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("DATABASE_URL must be a postgres:// URL")?;
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority_and_path
        .split('/')
        .next()
        .unwrap_or(authority_and_path);
    Ok(match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    })
}

fn admin_context(tenant: TenantId) -> CommandContext {
    CommandContext {
        tenant,
        time_zone: chrono_tz::UTC,
        actor: Actor {
            id: "system:bench-setup".into(),
            role: Role::Admin,
        },
        source: Source::System,
        remote_addr: None,
        correlation_id: Uuid::now_v7(),
        idempotency_key: None,
    }
}

/// One tenant, `practitioners` practitioners with an every-day schedule, one
/// service offered by all of them: all through the real commands.
async fn set_up(scheduler: &Scheduler, practitioners: usize) -> anyhow::Result<Fixture> {
    let tenant = buktor::demo::create_tenant(scheduler, "Bench Hospital", chrono_tz::UTC).await?;
    let ctx = admin_context(tenant.id);
    let name = |s: &str| Name::parse("name", s);
    let hm = |(h, m): (u32, u32)| NaiveTime::from_hms_opt(h, m, 0).context("bad time");
    let from = NaiveDate::from_ymd_opt(2020, 1, 1).context("bad date")?;
    let every_day = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let mut ids = Vec::with_capacity(practitioners);
    for p in 0..practitioners {
        let outcome = scheduler
            .register_practitioner(
                &ctx,
                &RegisterPractitioner {
                    id: None,
                    details: PractitionerDetails {
                        name: name(&format!("Dr. Bench {p}"))?,
                        specialty: name("General Practice")?,
                        department: Some(name("Outpatient Clinic")?),
                        location: Some(name("Main building")?),
                        external_id: None,
                    },
                },
            )
            .await?;
        let id = PractitionerId::from_uuid(outcome.id);
        scheduler
            .set_weekly_rules(
                &ctx,
                &SetWeeklyRules {
                    practitioner_id: id,
                    rules: vec![WeeklyRule::parse(
                        every_day,
                        hm(DAY_START)?,
                        hm(DAY_END)?,
                        i64::from(GRID_MINUTES),
                        from,
                        None,
                    )?],
                },
            )
            .await?;
        ids.push(id);
    }
    let service = scheduler
        .define_service(
            &ctx,
            &DefineService {
                id: None,
                details: ServiceDetails::parse(
                    "Consultation",
                    i64::from(GRID_MINUTES),
                    0,
                    0,
                    1,
                    ids.clone(),
                    0,
                    730,
                )?,
            },
        )
        .await?;
    let tomorrow = Utc::now().date_naive() + Days::days(1);
    Ok(Fixture {
        tenant: tenant.id,
        practitioners: ids,
        service: ServiceId::from_uuid(service.id),
        first_day: tomorrow.and_time(NaiveTime::MIN).and_utc(),
    })
}

fn patient(i: usize) -> anyhow::Result<PatientRef> {
    Ok(PatientRef {
        his_patient_id: ShortText::parse("hisPatientId", &format!("P{i:07}"))?,
        name: Some(Name::parse("name", &format!("Patient {i}"))?),
        phone: None,
        email: None,
    })
}

async fn book_in_process(
    args: &Args,
    scheduler: &Arc<Scheduler>,
    fixture: &Arc<Fixture>,
    run_id: &str,
) -> anyhow::Result<Tally> {
    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (scheduler, fixture, run_id) = (scheduler.clone(), fixture.clone(), run_id.to_owned());
        let (n, conc, contended) = (args.bookings, args.concurrency, args.contended);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = w;
            while i < n {
                let (practitioner_id, start) = fixture.target(i, conc, contended);
                // What a HIS integration sends: its own idempotency key and
                // correlation id per request.
                let ctx = CommandContext {
                    tenant: fixture.tenant,
                    time_zone: chrono_tz::UTC,
                    actor: Actor {
                        id: "api-key:bench-his".into(),
                        role: Role::HisSystem,
                    },
                    source: Source::HisApi,
                    remote_addr: Some("127.0.0.1".into()),
                    correlation_id: Uuid::now_v7(),
                    idempotency_key: Some(format!("bench-{run_id}-{i}")),
                };
                let command = Book {
                    appointment_id: None,
                    practitioner_id,
                    service_id: fixture.service,
                    start,
                    patient: patient(i)?,
                    note: None,
                };
                let started = Instant::now();
                let outcome = scheduler
                    .book(&ctx, &command)
                    .await
                    .map(|_| ())
                    .map_err(|e: AppError| (e.code().to_owned(), format!("{e:?}")));
                tally.record(started, outcome);
                i += conc;
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        total.merge(t.await??);
    }
    Ok(total)
}

const BOOK_MUTATION: &str = "mutation Book($input: BookInput!, $key: String) { \
     bookAppointment(input: $input, idempotencyKey: $key) { id position events } }";

async fn book_over_http(
    args: &Args,
    config: &Config,
    state: Arc<AppState>,
    fixture: &Arc<Fixture>,
    run_id: &str,
) -> anyhow::Result<Tally> {
    let key = generate_api_key(fixture.tenant, Role::HisSystem, "bench HIS");
    state.store.create_api_key(&key.record).await?;
    let app = Application::build(config, state).context("cannot start the server")?;
    let addr = app.addr;
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let token = Arc::new(key.token);

    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (fixture, run_id, token) = (fixture.clone(), run_id.to_owned(), token.clone());
        let (n, conc, contended) = (args.bookings, args.concurrency, args.contended);
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::connect(addr, &token).await?;
            let mut tally = Tally::default();
            let mut i = w;
            while i < n {
                let (practitioner_id, start) = fixture.target(i, conc, contended);
                let body = serde_json::json!({
                    "query": BOOK_MUTATION,
                    "variables": {
                        "key": format!("bench-{run_id}-{i}"),
                        "input": {
                            "practitionerId": practitioner_id.to_string(),
                            "serviceId": fixture.service.to_string(),
                            "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            "patient": {
                                "hisPatientId": format!("P{i:07}"),
                                "name": format!("Patient {i}"),
                            },
                        },
                    },
                });
                let started = Instant::now();
                let (status, response) = client.post_json("/graphql", &body).await?;
                tally.record(started, graphql_outcome(status, &response));
                i += conc;
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        total.merge(t.await??);
    }
    handle.stop(true).await;
    server.await??;
    Ok(total)
}

/// `Ok` if the mutation answered an id, else the error code and message.
fn graphql_outcome(status: u16, response: &serde_json::Value) -> Result<(), (String, String)> {
    if status == 200 && response["data"]["bookAppointment"]["id"].is_string() {
        return Ok(());
    }
    let error = &response["errors"][0];
    let code = error["extensions"]["code"]
        .as_str()
        .or_else(|| response["code"].as_str())
        .unwrap_or("HTTP_ERROR")
        .to_owned();
    Err((code, format!("HTTP {status}: {response}")))
}

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a
/// time, like a HIS interface engine's connection. (No HTTP client is among
/// the crate's dependencies; reqwest is a dev-dependency only.)
struct HttpClient {
    stream: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl HttpClient {
    async fn connect(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            token: token.to_owned(),
        })
    }

    async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = serde_json::to_vec(body)?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nX-Buktor-Source: his-api\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.token,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        self.stream.get_mut().write_all(&request).await?;

        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the response headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>()?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.context("response without Content-Length")?;
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`;
/// 0 where that is not available.
fn own_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// A plain connection for counting and checking, outside the store.
struct CheckClient {
    client: tokio_postgres::Client,
}

impl CheckClient {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(CheckClient { client })
    }

    async fn count_events(&self, tenant: TenantId) -> anyhow::Result<i64> {
        self.scalar("SELECT count(*) FROM events WHERE tenant_id = $1", tenant)
            .await
    }

    /// The cluster's current WAL insert position, as text and in bytes.
    async fn wal_lsn(&self) -> anyhow::Result<(String, i64)> {
        let row = self
            .client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    async fn scalar(&self, sql: &str, tenant: TenantId) -> anyhow::Result<i64> {
        let row = self.client.query_one(sql, &[&tenant.as_uuid()]).await?;
        Ok(row.get(0))
    }
}

/// No capacity-1 slot holds two appointments, and the store holds exactly
/// the bookings that were answered as successful.
async fn verify(
    check: &CheckClient,
    fixture: &Fixture,
    args: &Args,
    ok: usize,
) -> anyhow::Result<bool> {
    let t = fixture.tenant;
    let booked = check
        .scalar(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'AppointmentBooked'",
            t,
        )
        .await?;
    let held = check
        .scalar(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'SlotHeld'",
            t,
        )
        .await?;
    let distinct = check
        .scalar(
            "SELECT count(*) FROM (SELECT DISTINCT payload->>'practitioner_id', payload->>'start' \
             FROM events WHERE tenant_id = $1 AND event_type = 'AppointmentBooked') s",
            t,
        )
        .await?;
    let doubled = check
        .scalar(
            "SELECT count(*) FROM (SELECT 1 FROM events \
             WHERE tenant_id = $1 AND event_type = 'AppointmentBooked' \
             GROUP BY payload->>'practitioner_id', payload->>'start' HAVING count(*) > 1) d",
            t,
        )
        .await?;
    let keys = check
        .scalar(
            "SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1",
            t,
        )
        .await?;
    let expected_ok = match args.contended {
        Some(k) => k.min(args.bookings),
        None => args.bookings,
    };
    let ok = ok as i64;
    let passed = doubled == 0
        && booked == ok
        && held == ok
        && keys == ok
        && distinct == ok
        && ok == expected_ok as i64;
    println!(
        "verify: booked={booked} slot_held={held} distinct_slots={distinct} double_booked_slots={doubled} idempotency_keys={keys} expected_ok={expected_ok} {}",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}

/// Calls and time per store method, for `BUKTOR_BENCH_STORE_STATS`.
#[derive(Default)]
struct StoreStats {
    /// `(calls, nanoseconds)` per entry of [`StoreStats::NAMES`].
    methods: [(AtomicU64, AtomicU64); 12],
}

impl StoreStats {
    const NAMES: [&'static str; 12] = [
        "append",
        "read_stream",
        "read_streams",
        "read_all",
        "stream_ids",
        "idempotency",
        "ping",
        "create_tenant",
        "tenant",
        "tenants",
        "create_api_key",
        "api_key",
    ];

    fn reset(&self) {
        for (calls, nanos) in &self.methods {
            calls.store(0, Ordering::Relaxed);
            nanos.store(0, Ordering::Relaxed);
        }
    }

    async fn time<T>(&self, method: usize, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let result = f.await;
        let (calls, nanos) = &self.methods[method];
        calls.fetch_add(1, Ordering::Relaxed);
        nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    fn print(&self, commands: usize, latencies: &[Duration]) {
        let mut line = String::from("store:");
        let mut store_ns = 0u64;
        for (name, (calls, nanos)) in Self::NAMES.iter().zip(&self.methods) {
            let (calls, nanos) = (calls.load(Ordering::Relaxed), nanos.load(Ordering::Relaxed));
            if calls > 0 {
                store_ns += nanos;
                line.push_str(&format!(
                    " {name}={:.2}/cmd,{:.2}ms",
                    calls as f64 / commands as f64,
                    nanos as f64 / calls as f64 / 1e6
                ));
            }
        }
        let command_ns: u128 = latencies.iter().map(Duration::as_nanos).sum();
        line.push_str(&format!(
            " store_share_of_command_time={:.0}%",
            store_ns as f64 * 100.0 / command_ns.max(1) as f64
        ));
        println!("{line}");
    }
}

/// A store that counts and times every call of the one it wraps.
struct CountingStore {
    inner: Arc<dyn Store>,
    stats: Arc<StoreStats>,
}

#[async_trait::async_trait]
impl EventStore for CountingStore {
    async fn append(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
        self.stats.time(0, self.inner.append(request)).await
    }
    async fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: &str,
        after_version: i64,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.stats
            .time(1, self.inner.read_stream(tenant, stream_id, after_version))
            .await
    }
    async fn read_streams(
        &self,
        tenant: TenantId,
        streams: &[(String, i64)],
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.stats
            .time(2, self.inner.read_streams(tenant, streams))
            .await
    }
    async fn read_all(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.stats
            .time(3, self.inner.read_all(tenant, after, limit))
            .await
    }
    async fn stream_ids(&self, tenant: TenantId, prefix: &str) -> StoreResult<Vec<String>> {
        self.stats
            .time(4, self.inner.stream_ids(tenant, prefix))
            .await
    }
    async fn idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> StoreResult<Option<StoredIdempotency>> {
        self.stats
            .time(5, self.inner.idempotency(tenant, key))
            .await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.stats.time(6, self.inner.ping()).await
    }
}

impl buktor::store::Store for CountingStore {
    fn read_models(&self) -> &dyn buktor::store::ReadModelStore {
        self.inner.read_models()
    }
}

#[async_trait::async_trait]
impl Directory for CountingStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<()> {
        self.stats.time(7, self.inner.create_tenant(tenant)).await
    }
    async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
        self.stats.time(8, self.inner.tenant(id)).await
    }
    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.stats.time(9, self.inner.tenants()).await
    }
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        self.stats.time(10, self.inner.create_api_key(key)).await
    }
    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
        self.stats.time(11, self.inner.api_key(id)).await
    }
}
