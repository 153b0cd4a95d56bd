//! `buktor-bench`: books N appointments at concurrency C against PostgreSQL
//! through the real command path, in the output shape of the peer benchmark
//! (`../shared/peers/cqrs-es-bench`, cqrs-es + postgres-es doing the same
//! booking work), then checks by SQL that nothing was double-booked.
//!
//! ```text
//! buktor-bench DATABASE_URL BOOKINGS CONCURRENCY [CONTENDED_SLOTS] [--http | --widget]
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
//! - `--widget` does the same but books as anonymous patients do through the
//!   booking widget: per booking a hold (`POST /widget/v1/{tenant}/holds`)
//!   and the booking that claims it (`POST …/bookings` with the patient's
//!   name and e-mail), two requests and two appends; its latency is the pair.
//!   The widget sends no idempotency key, so none are stored.
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
    AppError, Book, CommandContext, ConfigureEmbedding, DefineService, RegisterPractitioner,
    Scheduler, SetWeeklyRules, SystemClock,
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
    "usage: buktor-bench DATABASE_URL BOOKINGS CONCURRENCY [CONTENDED_SLOTS] [--http | --widget]";
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
    widget: bool,
}

impl Args {
    fn over_http(&self) -> bool {
        self.http || self.widget
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let http = raw.iter().any(|a| a == "--http");
    let widget = raw.iter().any(|a| a == "--widget");
    if http && widget {
        bail!("--http and --widget exclude each other: {USAGE}");
    }
    let pos: Vec<&String> = raw
        .iter()
        .filter(|a| *a != "--http" && *a != "--widget")
        .collect();
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
        widget,
    })
}

#[path = "bench/webhooks.rs"]
mod webhooks;

#[path = "bench/reminders.rs"]
mod reminders;

#[path = "bench/his_import.rs"]
mod his_import;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("his-import") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(his_import::run(&args));
    }
    if std::env::args().nth(1).as_deref() == Some("reminders") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(reminders::run(&args));
    }
    if std::env::args().nth(1).as_deref() == Some("webhooks") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(webhooks::run(&args));
    }
    if let Some(sub) = std::env::args()
        .nth(1)
        .filter(|a| READ_SUBCOMMANDS.contains(&a.as_str()))
    {
        return read_bench::main(&sub);
    }
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
    let (scheduler, metrics, state) = if args.over_http() {
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
    if args.widget {
        scheduler
            .configure_embedding(
                &admin_context(fixture.tenant),
                &ConfigureEmbedding {
                    allowed_origins: Vec::new(),
                    hold_minutes: None,
                    patient_booking: Some(true),
                },
            )
            .await?;
    }
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
        if args.widget {
            " mode=widget"
        } else if args.http {
            " mode=http"
        } else {
            ""
        },
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

/// Registers a general practitioner of the outpatient clinic working by `rule`.
async fn register_with_rule(
    scheduler: &Scheduler,
    ctx: &CommandContext,
    label: &str,
    rule: WeeklyRule,
) -> anyhow::Result<PractitionerId> {
    let name = |s: &str| Name::parse("name", s);
    let outcome = scheduler
        .register_practitioner(
            ctx,
            &RegisterPractitioner {
                id: None,
                details: PractitionerDetails {
                    name: name(label)?,
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
            ctx,
            &SetWeeklyRules {
                practitioner_id: id,
                rules: vec![rule],
            },
        )
        .await?;
    Ok(id)
}

/// One tenant, `practitioners` practitioners with an every-day schedule, one
/// service offered by all of them: all through the real commands.
async fn set_up(scheduler: &Scheduler, practitioners: usize) -> anyhow::Result<Fixture> {
    let tenant = buktor::demo::create_tenant(scheduler, "Bench Hospital", chrono_tz::UTC).await?;
    let ctx = admin_context(tenant.id);
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
        let rule = WeeklyRule::parse(
            every_day,
            hm(DAY_START)?,
            hm(DAY_END)?,
            i64::from(GRID_MINUTES),
            from,
            None,
        )?;
        let id = register_with_rule(scheduler, &ctx, &format!("Dr. Bench {p}"), rule).await?;
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
                    start: buktor_domain::time::Instant::parse("start", start)?,
                    patient: patient(i)?,
                    note: None,
                    his_appointment_id: None,
                    overriding: None,
                    reservation: None,
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
    // Widget patients are anonymous; the HIS books with its API key.
    let token = if args.widget {
        None
    } else {
        let key = generate_api_key(fixture.tenant, Role::HisSystem, "bench HIS");
        state.store.create_api_key(&key.record).await?;
        Some(key.token)
    };
    let app = Application::build(config, state).context("cannot start the server")?;
    let addr = app.addr;
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let token = Arc::new(token);
    let widget = args.widget;

    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (fixture, run_id, token) = (fixture.clone(), run_id.to_owned(), token.clone());
        let (n, conc, contended) = (args.bookings, args.concurrency, args.contended);
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::connect(addr, token.as_deref()).await?;
            let mut tally = Tally::default();
            let mut i = w;
            while i < n {
                let (practitioner_id, start) = fixture.target(i, conc, contended);
                if widget {
                    let started = Instant::now();
                    let outcome =
                        book_through_widget(&mut client, &fixture, practitioner_id, start, i)
                            .await?;
                    tally.record(started, outcome);
                    i += conc;
                    continue;
                }
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

/// A patient's hold and the booking that claims it, as the widget sends them.
async fn book_through_widget(
    client: &mut HttpClient,
    fixture: &Fixture,
    practitioner_id: PractitionerId,
    start: DateTime<Utc>,
    i: usize,
) -> anyhow::Result<Result<(), (String, String)>> {
    let base = format!("/widget/v1/{}", fixture.tenant);
    let hold = serde_json::json!({
        "practitionerId": practitioner_id.to_string(),
        "serviceId": fixture.service.to_string(),
        "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let (status, held) = client.post_json(&format!("{base}/holds"), &hold).await?;
    if status != 201 {
        return Ok(Err(problem_outcome(status, &held)));
    }
    let booking = serde_json::json!({
        "holdId": held["holdId"],
        "patient": {"name": format!("Patient {i}"), "email": format!("patient{i}@example.org")},
    });
    let (status, booked) = client
        .post_json(&format!("{base}/bookings"), &booking)
        .await?;
    Ok(if status == 201 && booked["appointmentId"].is_string() {
        Ok(())
    } else {
        Err(problem_outcome(status, &booked))
    })
}

/// The code and text of a problem-details answer.
fn problem_outcome(status: u16, problem: &serde_json::Value) -> (String, String) {
    let code = problem["code"].as_str().unwrap_or("HTTP_ERROR").to_owned();
    (code, format!("HTTP {status}: {problem}"))
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
    /// The `Authorization: Bearer` header's token; none for anonymous calls.
    token: Option<String>,
}

impl HttpClient {
    async fn connect(addr: std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            token: token.map(str::to_owned),
        })
    }

    async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = serde_json::to_vec(body)?;
        let authorization = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\nX-Buktor-Source: his-api\r\n"))
            .unwrap_or_default();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
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

/// A subcommand's arguments: the database URL and numeric flags, each
/// named with its default in `flags`; answers the URL and the values in
/// the order of `flags`.
fn url_and_counts<const N: usize>(
    args: &[String],
    flags: [(&str, usize); N],
) -> anyhow::Result<(String, [usize; N])> {
    let mut values = flags.map(|(_, default)| default);
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(i) = flags.iter().position(|(name, _)| name == a) {
            values[i] = it
                .next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a} needs a number"))?;
        } else if !a.starts_with("--") && url.is_none() {
            url = Some(a.clone());
        } else {
            bail!("unknown argument {a:?}");
        }
    }
    let url = url.context("the first argument is the database URL")?;
    Ok((url, values))
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
    let expected_keys = if args.widget { 0 } else { ok };
    let passed = doubled == 0
        && booked == ok
        && held == ok
        && keys == expected_keys
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
    fn webhooks(&self) -> &dyn buktor::store::webhooks::WebhookStore {
        self.inner.webhooks()
    }
    fn reminders(&self) -> &dyn buktor::store::reminders::ReminderStore {
        self.inner.reminders()
    }
    fn access(&self) -> &dyn buktor::store::access::AccessStore {
        self.inner.access()
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
    async fn server_secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        self.inner.server_secret(name, candidate).await
    }
}

/// The read-side benchmarks' subcommands (see [`read_bench`]).
const READ_SUBCOMMANDS: [&str; 4] = ["seed", "rebuild", "slots", "lag"];

/// Read-side benchmarks, in the order they are meant to run on one database:
///
/// ```text
/// buktor-bench seed    DATABASE_URL [--practitioners 1000] [--days 90] [--booked 0.3] [--writers 4]
/// buktor-bench rebuild DATABASE_URL
/// buktor-bench slots   DATABASE_URL [--clients 32] [--secs 20] [--warmup 3] [--server target/release/buktor]
/// buktor-bench lag     DATABASE_URL [--rate 1000] [--secs 30] [--connections 128] [--practitioners 64] [--server PATH]
/// ```
///
/// All use the database `buktor_bench_read` of the cluster (`--db` or
/// `BUKTOR_BENCH_DB` names another); only `seed` (and `lag --fresh`) drop
/// and recreate it.
///
/// - `seed`: a tenant "Bench Clinic" (UTC), N practitioners with a weekly
///   rule Monday to Friday 08:00–16:40 on a 20-minute grid and one 20-minute
///   service (capacity 1) offered by all, through the real commands; then
///   each slot of the next D days (from tomorrow) is booked with probability
///   F. The bookings are decided by the domain's own `booking::book` on the
///   loaded aggregates and appended with `EventStore::append` exactly as
///   the scheduler writes a booking without an idempotency key (a `SlotHeld`
///   on `calendar-<practitioner>-<date>` and an `AppointmentBooked` on
///   `appointment-<id>`, at the versions read, with the HIS actor's
///   metadata), a few hundred bookings per append. The audit chain is then
///   sealed and the database `VACUUM ANALYZE`d, as a long-running system's
///   would be. With the defaults that is ≈1,000,000 events.
/// - `rebuild`: `buktor::projection::rebuild::rebuild` of every projection in
///   turn, in-process, timing the store calls (read_all, load_docs,
///   commit_docs); the rest is the fold (decode, apply, encode).
/// - `slots`: starts the real server (`--server`, default
///   `target/release/buktor`) on the database, waits until every projection
///   has reached the last event, then C keep-alive clients ask
///   `availableSlots(practitionerIds: [one at random], serviceId, from, to:
///   from + 6 days)` with `from` a random day of the seeded range, for S
///   seconds after a warm-up.
/// - `lag`: a tenant of its own (every-day schedules, `--practitioners`),
///   the real server, and bookings over HTTP at a fixed rate (open loop:
///   booking i is due at i / rate) from a pool of connections; after each
///   booking's answer the same connection asks `patientAppointments(patientId,
///   atLeast: <the booking's position>)`, and the lag is the time from the
///   booking's answer (its events are committed by then) to the answer that
///   shows the appointment.
mod read_bench {
    use std::collections::HashMap;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use buktor::app::{decode_event, DefineService, Scheduler, SystemClock};
    use buktor::auth::generate_api_key;
    use buktor::config::Secret;
    use buktor::metrics::Metrics;
    use buktor::projection::rebuild::{rebuild, rebuild_many, Quiet};
    use buktor::projection::ReadSide;
    use buktor::store::postgres::PostgresStore;
    use buktor::store::{
        ApiKeyRecord, AppendRequest, Checkpoint, Directory, DocDifference, DocRow, DocWrite,
        EventStore, GenerationStatus, Lease, NewEvent, Position, ReadModelStore, RecordedEvent,
        Store, StoreResult, StoredIdempotency, StreamAppend, TenantRecord,
    };
    use buktor_domain::appointment::Appointment;
    use buktor_domain::booking::{self, stream_id, BookAppointment, BookingContext};
    use buktor_domain::calendar::{calendar_stream, CalendarDay};
    use buktor_domain::practitioner::Practitioner;
    use buktor_domain::schedule::{Schedule, WeeklyRule};
    use buktor_domain::service::{Service, ServiceDetails};
    use buktor_domain::{
        encode, Actor, Aggregate, AppointmentId, EventMetadata, PractitionerId, Role, ServiceId,
        Source, TenantId,
    };
    use chrono::{Datelike, Duration as Days, NaiveDate, NaiveTime, Utc, Weekday};
    use futures::StreamExt;
    use rand::{Rng, SeedableRng};
    use tokio::io::AsyncBufReadExt;
    use uuid::Uuid;

    use super::{
        admin_context, percentile_ms, recreate_database, set_up, with_database, HttpClient,
        BOOK_MUTATION,
    };

    const CLINIC: &str = "Bench Clinic";
    /// The clinic's day: Monday to Friday 08:00–16:40, 20-minute slots (26 a day).
    const CLINIC_START: (u32, u32) = (8, 0);
    const CLINIC_END: (u32, u32) = (16, 40);
    const CLINIC_SLOT: u32 = 20;
    const WEEKDAYS: [Weekday; 5] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];

    /// `--name value` options after the subcommand and the URL.
    struct Opts {
        url: String,
        flags: HashMap<String, String>,
    }

    impl Opts {
        fn parse() -> anyhow::Result<Self> {
            let raw: Vec<String> = std::env::args().skip(2).collect();
            let usage =
                "usage: buktor-bench seed|rebuild|slots|lag DATABASE_URL [--name value ...]";
            let (url, rest) = raw.split_first().context(usage)?;
            if url.starts_with("--") {
                bail!("{usage}");
            }
            let mut flags = HashMap::new();
            let mut it = rest.iter();
            while let Some(name) = it.next() {
                let name = name.strip_prefix("--").context(usage)?;
                // `--fresh` and `--each` alone are switches.
                if name == "fresh" || name == "each" {
                    flags.insert(name.to_owned(), "1".to_owned());
                    continue;
                }
                let value = it
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                flags.insert(name.to_owned(), value.clone());
            }
            Ok(Opts {
                url: url.clone(),
                flags,
            })
        }

        fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
            match self.flags.get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--{name} {v:?} is not a number")),
            }
        }

        fn text(&self, name: &str, default: &str) -> String {
            self.flags
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        }

        fn db(&self) -> String {
            self.flags.get("db").cloned().unwrap_or_else(|| {
                std::env::var("BUKTOR_BENCH_DB").unwrap_or_else(|_| "buktor_bench_read".into())
            })
        }
    }

    pub fn main(sub: &str) -> anyhow::Result<()> {
        let opts = Opts::parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        println!("load: {}", load_average());
        runtime.block_on(async {
            match sub {
                "seed" => seed(&opts).await,
                "rebuild" => rebuild_all(&opts).await,
                "slots" => slots(&opts).await,
                "lag" => lag(&opts).await,
                _ => bail!("unknown subcommand {sub}"),
            }
        })?;
        println!("load: {}", load_average());
        Ok(())
    }

    fn load_average() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    }

    async fn open(url: &str, pool: usize) -> anyhow::Result<Arc<PostgresStore>> {
        let store = PostgresStore::connect(url, pool)
            .await
            .context("cannot connect to the bench database")?;
        store.migrate().await.context("cannot migrate")?;
        Ok(Arc::new(store))
    }

    async fn sql(url: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The position of the tenant's last event.
    async fn last_position(
        client: &tokio_postgres::Client,
        tenant: TenantId,
    ) -> anyhow::Result<Position> {
        let row = client
            .query_opt(
                "SELECT tx_id::text::bigint, seq FROM events WHERE tenant_id = $1 \
                 ORDER BY tx_id DESC, seq DESC LIMIT 1",
                &[&tenant.as_uuid()],
            )
            .await?;
        Ok(row
            .map(|r| Position {
                tx: r.get(0),
                seq: r.get(1),
            })
            .unwrap_or_default())
    }

    async fn load_state<A: Aggregate>(
        store: &dyn Store,
        tenant: TenantId,
        stream: &str,
    ) -> anyhow::Result<A> {
        let mut state = A::default();
        for e in store.read_stream(tenant, stream, 0).await? {
            state.apply(&decode_event::<A::Event>(&e)?);
        }
        Ok(state)
    }

    // ----------------------------------------------------------------- seed

    async fn seed(opts: &Opts) -> anyhow::Result<()> {
        let practitioners: usize = opts.num("practitioners", 1000)?;
        let days: i64 = opts.num("days", 90)?;
        let booked: f64 = opts.num("booked", 0.3)?;
        let writers: usize = opts.num("writers", 4)?;
        let per_append: usize = opts.num("per-append", 250)?;
        // Bookings are dealt out practitioner by practitioner, so the appends
        // in flight together touch distinct practitioner-days only while
        // they hold at most one booking per practitioner.
        if per_append.saturating_mul(writers) > practitioners {
            bail!(
                "--per-append × --writers ({}) must not exceed --practitioners ({practitioners})",
                per_append * writers
            );
        }
        let url = recreate_database(&opts.url, &opts.db()).await?;
        let store = open(&url, writers + 8).await?;
        let dyn_store: Arc<dyn Store> = store.clone();
        let scheduler = Arc::new(Scheduler::new(
            dyn_store.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
        ));

        let started = Instant::now();
        let tenant = buktor::demo::create_tenant(&scheduler, CLINIC, chrono_tz::UTC).await?;
        let tenant = tenant.id;
        let ctx = admin_context(tenant);
        let hm = |(h, m): (u32, u32)| NaiveTime::from_hms_opt(h, m, 0).context("bad time");
        let (open_at, close_at) = (hm(CLINIC_START)?, hm(CLINIC_END)?);
        let effective = NaiveDate::from_ymd_opt(2020, 1, 1).context("bad date")?;
        let ids: Vec<PractitionerId> = futures::stream::iter(0..practitioners)
            .map(|p| {
                let (scheduler, ctx) = (scheduler.clone(), ctx.clone());
                async move {
                    let rule = WeeklyRule::parse(
                        WEEKDAYS,
                        open_at,
                        close_at,
                        i64::from(CLINIC_SLOT),
                        effective,
                        None,
                    )?;
                    let id = super::register_with_rule(
                        &scheduler,
                        &ctx,
                        &format!("Dr. Clinic {p}"),
                        rule,
                    )
                    .await?;
                    anyhow::Ok(id)
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let service = scheduler
            .define_service(
                &ctx,
                &DefineService {
                    id: None,
                    details: ServiceDetails::parse(
                        "Consultation",
                        i64::from(CLINIC_SLOT),
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
        let service = ServiceId::from_uuid(service.id);
        println!(
            "seed: tenant={tenant} service={service} practitioners={} set_up_secs={:.1}",
            ids.len(),
            started.elapsed().as_secs_f64()
        );

        // The aggregates a booking decides over, loaded as the scheduler would.
        let service_state: Service =
            load_state(&*dyn_store, tenant, &stream_id::<Service>(service)).await?;
        let mut states = Vec::with_capacity(ids.len());
        for id in &ids {
            let p: Practitioner =
                load_state(&*dyn_store, tenant, &stream_id::<Practitioner>(id)).await?;
            let s: Schedule = load_state(&*dyn_store, tenant, &stream_id::<Schedule>(id)).await?;
            states.push((p, s));
        }

        let first_day = Utc::now().date_naive() + Days::days(1);
        let per_day = ((close_at - open_at).num_minutes() / i64::from(CLINIC_SLOT)) as usize;
        let (tx, rx) = tokio::sync::mpsc::channel::<AppendRequest>(writers * 2);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let appended = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (rx, store, appended) = (rx.clone(), dyn_store.clone(), appended.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(request) = next else {
                        return anyhow::Ok(());
                    };
                    let n = store.append(request).await?.len() as u64;
                    let before = appended.fetch_add(n, Ordering::Relaxed);
                    if (before + n) / 200_000 > before / 200_000 {
                        println!("seed: {} events appended", before + n);
                    }
                }
            }));
        }

        // Slot-major order: consecutive bookings (and so one append and the
        // appends in flight together) never touch the same practitioner-day.
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut calendars: HashMap<(usize, i64), (CalendarDay, i64)> = HashMap::new();
        let mut pending: Vec<StreamAppend> = Vec::with_capacity(per_append * 2);
        let (mut bookings, mut slots) = (0usize, 0usize);
        let seeding = Instant::now();
        let actor = Actor {
            id: "api-key:bench-his".into(),
            role: Role::HisSystem,
        };
        for slot in 0..per_day {
            for day in 0..days {
                let date = first_day + Days::days(day);
                if !WEEKDAYS.contains(&date.weekday()) {
                    continue;
                }
                let start = date.and_time(open_at).and_utc()
                    + Days::minutes(slot as i64 * i64::from(CLINIC_SLOT));
                for (p, id) in ids.iter().enumerate() {
                    slots += 1;
                    if !rng.gen_bool(booked) {
                        continue;
                    }
                    let now = Utc::now();
                    let (practitioner, schedule) = &states[p];
                    let context = BookingContext {
                        time_zone: schedule.time_zone,
                        practitioner,
                        service: &service_state,
                        schedule,
                        now,
                    };
                    let appointment_id = AppointmentId::from_uuid(Uuid::now_v7());
                    let calendar = calendars.entry((p, day)).or_default();
                    let decision = booking::book(
                        &context,
                        &Appointment::default(),
                        &calendar.0,
                        BookAppointment {
                            appointment_id,
                            practitioner_id: *id,
                            service_id: service,
                            start,
                            patient: super::patient(bookings)?,
                            note: None,
                            his_appointment_id: None,
                            overriding: None,
                            reservation: None,
                        },
                    )?;
                    let metadata = serde_json::to_value(EventMetadata {
                        tenant,
                        actor: actor.clone(),
                        source: Source::HisApi,
                        remote_addr: Some("127.0.0.1".into()),
                        correlation_id: Uuid::now_v7(),
                        causation_id: Uuid::now_v7(),
                        idempotency_key: None,
                        occurred_at: now,
                    })?;
                    let new_event = |e: buktor_domain::EncodedEvent| NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: e.event_type,
                        schema_version: e.schema_version,
                        payload: e.payload,
                        metadata: metadata.clone(),
                    };
                    for (stream, events) in decision.calendar {
                        if stream != calendar_stream(*id, date) {
                            bail!("booking at {start} went to {stream}");
                        }
                        let expected_version = calendar.1;
                        for e in &events {
                            calendar.0.apply(e);
                        }
                        calendar.1 += events.len() as i64;
                        pending.push(StreamAppend {
                            stream_id: stream,
                            expected_version,
                            events: events.iter().map(|e| new_event(encode(e))).collect(),
                        });
                    }
                    pending.push(StreamAppend {
                        stream_id: stream_id::<Appointment>(appointment_id),
                        expected_version: 0,
                        events: vec![new_event(encode(&decision.appointment))],
                    });
                    bookings += 1;
                    if bookings % per_append == 0 {
                        let streams = std::mem::take(&mut pending);
                        tx.send(AppendRequest {
                            tenant,
                            streams,
                            idempotency: None,
                        })
                        .await?;
                    }
                }
            }
        }
        if !pending.is_empty() {
            tx.send(AppendRequest {
                tenant,
                streams: pending,
                idempotency: None,
            })
            .await?;
        }
        drop(tx);
        for t in tasks {
            t.await??;
        }
        let secs = seeding.elapsed().as_secs_f64();
        let events = appended.load(Ordering::Relaxed);
        println!(
            "seed: slots={slots} bookings={bookings} booked_share={:.3} events={events} secs={secs:.1} events_per_s={:.0}",
            bookings as f64 / slots.max(1) as f64,
            events as f64 / secs
        );
        let sealing = Instant::now();
        let sealed = buktor::audit::seal_all(store.as_ref()).await?;
        println!(
            "seed: audit chain sealed events={sealed} secs={:.1}",
            sealing.elapsed().as_secs_f64()
        );
        let vacuum = Instant::now();
        sql(&url).await?.batch_execute("VACUUM ANALYZE").await?;
        let client = sql(&url).await?;
        let total: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        println!(
            "seed: vacuum_analyze_secs={:.1} events_in_store={total} total_secs={:.1}",
            vacuum.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The seeded clinic: its tenant, practitioners and service.
    async fn clinic(
        store: &dyn Store,
    ) -> anyhow::Result<(TenantId, Vec<PractitionerId>, ServiceId)> {
        let tenant = store
            .tenants()
            .await?
            .into_iter()
            .find(|t| t.name == CLINIC)
            .context("no seeded clinic: run `buktor-bench seed` first")?
            .id;
        let ids = |prefix: &'static str| async move {
            let streams = store.stream_ids(tenant, prefix).await?;
            streams
                .iter()
                .map(|s| Uuid::parse_str(&s[prefix.len()..]).context("bad stream id"))
                .collect::<anyhow::Result<Vec<Uuid>>>()
        };
        let practitioners = ids("practitioner-")
            .await?
            .into_iter()
            .map(PractitionerId::from_uuid)
            .collect();
        let service = ids("service-")
            .await?
            .first()
            .copied()
            .map(ServiceId::from_uuid)
            .context("no service")?;
        Ok((tenant, practitioners, service))
    }

    // -------------------------------------------------------------- rebuild

    async fn rebuild_all(opts: &Opts) -> anyhow::Result<()> {
        let url = with_database(&opts.url, &opts.db())?;
        let store = open(&url, 8).await?;
        let client = sql(&url).await?;
        let stored: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        let stats = Arc::new(Profile::default());
        let profiled: Arc<dyn Store> = Arc::new(ProfiledStore {
            inner: store,
            stats: stats.clone(),
        });
        println!("rebuild: events_in_store={stored}");
        // What `buktor projections rebuild` does: every projection in one
        // pass over the store.
        stats.reset();
        let reports = rebuild_many(&profiled, &[], &mut Quiet).await?;
        let secs = reports[0].elapsed.as_secs_f64();
        let [read_all, load_docs, commit_docs] = stats.secs();
        println!(
            "rebuild: one_pass projections={} events={} secs={secs:.2} store_events_per_s={:.0} \
             folded_events_per_s={:.0} read_all_s={read_all:.2} load_docs_s={load_docs:.2} \
             commit_docs_s={commit_docs:.2} (commits of the four run concurrently) docs_written={}",
            reports.len(),
            reports[0].events,
            reports[0].events as f64 / secs,
            (reports[0].events * reports.len() as u64) as f64 / secs,
            stats.docs.load(Ordering::Relaxed),
        );
        if !opts.flags.contains_key("each") {
            return Ok(());
        }
        let started = Instant::now();
        let mut folded = 0u64;
        for name in buktor_projections::ALL {
            stats.reset();
            let report = rebuild(&profiled, name, &mut Quiet).await?;
            let secs = report.elapsed.as_secs_f64();
            folded += report.events;
            let [read_all, load_docs, commit_docs] = stats.secs();
            println!(
                "rebuild: projection={name} events={} secs={secs:.2} events_per_s={:.0} \
                 read_all_s={read_all:.2} load_docs_s={load_docs:.2} commit_docs_s={commit_docs:.2} \
                 fold_and_rest_s={:.2} docs_written={}",
                report.events,
                report.events_per_second(),
                (secs - read_all - load_docs - commit_docs).max(0.0),
                stats.docs.load(Ordering::Relaxed),
            );
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "rebuild: each_in_turn secs={secs:.2} store_events_per_s={:.0} folded_events_per_s={:.0}",
            stored as f64 / secs,
            folded as f64 / secs
        );
        Ok(())
    }

    /// Time spent in the store calls of a rebuild.
    #[derive(Default)]
    struct Profile {
        /// Nanoseconds in read_all, load_docs, commit_docs.
        nanos: [AtomicU64; 3],
        docs: AtomicU64,
    }

    impl Profile {
        fn reset(&self) {
            for n in &self.nanos {
                n.store(0, Ordering::Relaxed);
            }
            self.docs.store(0, Ordering::Relaxed);
        }

        fn secs(&self) -> [f64; 3] {
            [0, 1, 2].map(|i| self.nanos[i].load(Ordering::Relaxed) as f64 / 1e9)
        }

        async fn time<T>(&self, i: usize, f: impl std::future::Future<Output = T>) -> T {
            let started = Instant::now();
            let out = f.await;
            self.nanos[i].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            out
        }
    }

    /// A store that times the calls a fold makes and passes everything on.
    struct ProfiledStore {
        inner: Arc<PostgresStore>,
        stats: Arc<Profile>,
    }

    #[async_trait::async_trait]
    impl EventStore for ProfiledStore {
        async fn append(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
            self.inner.append(request).await
        }
        async fn read_stream(
            &self,
            tenant: TenantId,
            stream_id: &str,
            after_version: i64,
        ) -> StoreResult<Vec<RecordedEvent>> {
            self.inner
                .read_stream(tenant, stream_id, after_version)
                .await
        }
        async fn read_streams(
            &self,
            tenant: TenantId,
            streams: &[(String, i64)],
        ) -> StoreResult<Vec<RecordedEvent>> {
            self.inner.read_streams(tenant, streams).await
        }
        async fn read_all(
            &self,
            tenant: TenantId,
            after: Position,
            limit: usize,
        ) -> StoreResult<Vec<RecordedEvent>> {
            self.stats
                .time(0, self.inner.read_all(tenant, after, limit))
                .await
        }
        async fn stream_ids(&self, tenant: TenantId, prefix: &str) -> StoreResult<Vec<String>> {
            self.inner.stream_ids(tenant, prefix).await
        }
        async fn idempotency(
            &self,
            tenant: TenantId,
            key: &str,
        ) -> StoreResult<Option<StoredIdempotency>> {
            self.inner.idempotency(tenant, key).await
        }
        async fn ping(&self) -> StoreResult<()> {
            self.inner.ping().await
        }
    }

    #[async_trait::async_trait]
    impl Directory for ProfiledStore {
        async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<()> {
            self.inner.create_tenant(tenant).await
        }
        async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
            self.inner.tenant(id).await
        }
        async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
            self.inner.tenants().await
        }
        async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
            self.inner.create_api_key(key).await
        }
        async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
            self.inner.api_key(id).await
        }
        async fn server_secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
            self.inner.server_secret(name, candidate).await
        }
    }

    impl Store for ProfiledStore {
        fn read_models(&self) -> &dyn ReadModelStore {
            self
        }
        fn webhooks(&self) -> &dyn buktor::store::webhooks::WebhookStore {
            self.inner.webhooks()
        }
        fn reminders(&self) -> &dyn buktor::store::reminders::ReminderStore {
            self.inner.reminders()
        }
        fn access(&self) -> &dyn buktor::store::access::AccessStore {
            self.inner.access()
        }
    }

    #[async_trait::async_trait]
    impl ReadModelStore for ProfiledStore {
        async fn live_generation(&self, projection: &str) -> StoreResult<i64> {
            self.inner.live_generation(projection).await
        }
        async fn new_generation(
            &self,
            projection: &str,
            status: GenerationStatus,
        ) -> StoreResult<i64> {
            self.inner.new_generation(projection, status).await
        }
        async fn promote(&self, projection: &str, generation: i64) -> StoreResult<Option<i64>> {
            self.inner.promote(projection, generation).await
        }
        async fn drop_generation(&self, projection: &str, generation: i64) -> StoreResult<()> {
            self.inner.drop_generation(projection, generation).await
        }
        async fn generations(&self, projection: &str) -> StoreResult<Vec<(i64, GenerationStatus)>> {
            self.inner.generations(projection).await
        }
        async fn checkpoints(
            &self,
            projection: &str,
            generation: i64,
        ) -> StoreResult<HashMap<TenantId, Checkpoint>> {
            self.inner.checkpoints(projection, generation).await
        }
        async fn live_positions(&self, tenant: TenantId) -> StoreResult<HashMap<String, Position>> {
            self.inner.live_positions(tenant).await
        }
        async fn load_docs(
            &self,
            projection: &str,
            generation: i64,
            tenant: TenantId,
            keys: &[String],
        ) -> StoreResult<Vec<DocRow>> {
            self.stats
                .time(
                    1,
                    self.inner.load_docs(projection, generation, tenant, keys),
                )
                .await
        }
        async fn commit_docs(
            &self,
            projection: &str,
            generation: i64,
            tenant: TenantId,
            expected: Position,
            to: Position,
            events: i64,
            writes: &[DocWrite],
        ) -> StoreResult<()> {
            self.stats
                .docs
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            self.stats
                .time(
                    2,
                    self.inner
                        .commit_docs(projection, generation, tenant, expected, to, events, writes),
                )
                .await
        }
        async fn live_docs(
            &self,
            projection: &str,
            tenant: TenantId,
            keys: &[String],
        ) -> StoreResult<Vec<DocRow>> {
            self.inner.live_docs(projection, tenant, keys).await
        }
        async fn live_scan(
            &self,
            projection: &str,
            tenant: TenantId,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> StoreResult<Vec<DocRow>> {
            self.inner
                .live_scan(projection, tenant, prefix, after, limit)
                .await
        }
        async fn live_by_index(
            &self,
            projection: &str,
            tenant: TenantId,
            index_key: &str,
        ) -> StoreResult<Vec<DocRow>> {
            self.inner
                .live_by_index(projection, tenant, index_key)
                .await
        }
        async fn diff_generations(
            &self,
            projection: &str,
            left: i64,
            right: i64,
            limit: usize,
        ) -> StoreResult<Vec<DocDifference>> {
            self.inner
                .diff_generations(projection, left, right, limit)
                .await
        }
        async fn try_lead(&self, projection: &str) -> StoreResult<Option<Lease>> {
            self.inner.try_lead(projection).await
        }
    }

    // --------------------------------------------------------------- server

    /// The real server binary, on the bench database, listening on a free port.
    struct Server {
        child: tokio::process::Child,
        addr: std::net::SocketAddr,
    }

    impl Server {
        async fn start(path: &str, url: &str) -> anyhow::Result<Self> {
            let mut child = tokio::process::Command::new(path)
                .arg("serve")
                .env_remove("BUKTOR_CONFIG")
                .env("BUKTOR_DATABASE_URL", url)
                // PostgreSQL needs an encryption key for stored secrets; the
                // bench database is throwaway, so a fixed key unless one is set.
                .env(
                    "BUKTOR_SECRETS__ENCRYPTION_KEY",
                    std::env::var("BUKTOR_SECRETS__ENCRYPTION_KEY")
                        .unwrap_or_else(|_| "YnVrdG9yLWJlbmNoLWVuY3J5cHRpb24ta2V5LTAwMDE=".into()),
                )
                .env("BUKTOR_LISTEN", "127.0.0.1:0")
                .env("BUKTOR_RATE_LIMIT__REQUESTS", "1000000000")
                .env("BUKTOR_RATE_LIMIT__WINDOW_SECS", "1")
                .env(
                    "BUKTOR_LOG__FILTER",
                    std::env::var("BUKTOR_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {path} (cargo build --release --bins)"))?;
            let stdout = child.stdout.take().context("no stdout")?;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let addr = loop {
                let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                    .await
                    .context("the server did not start within 60 s")??
                    .context("the server exited before listening")?;
                if let Some(url) = line.strip_prefix("Buktor listening on http://") {
                    break url.trim().parse::<std::net::SocketAddr>()?;
                }
            };
            // Keep draining its output.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            println!(
                "server: {path} pid={} on {addr} (database {})",
                child.id().unwrap_or(0),
                Secret::new(url)
            );
            Ok(Server { child, addr })
        }

        async fn stop(mut self) -> anyhow::Result<()> {
            self.child.start_kill()?;
            self.child.wait().await?;
            Ok(())
        }
    }

    /// Waits until every projection of every tenant has applied its last event.
    async fn caught_up(store: Arc<dyn Store>, url: &str) -> anyhow::Result<()> {
        let client = sql(url).await?;
        let side = ReadSide::new(store.clone());
        let started = Instant::now();
        let mut events = 0i64;
        for t in store.tenants().await? {
            let at = last_position(&client, t.id).await?;
            side.wait_for(t.id, at, Duration::from_secs(3600)).await?;
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM events WHERE tenant_id = $1",
                    &[&t.id.as_uuid()],
                )
                .await?
                .get(0);
            events += n;
        }
        println!(
            "server: read models caught up with {events} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn graphql_ok(status: u16, response: &serde_json::Value) -> Result<(), String> {
        if status == 200 && response.get("errors").is_none() && response["data"].is_object() {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {response}"))
        }
    }

    // ---------------------------------------------------------------- slots

    const SLOTS_QUERY: &str =
        "query Slots($p: [ID!], $s: ID, $from: NaiveDate!, $to: NaiveDate!) { \
         availableSlots(practitionerIds: $p, serviceId: $s, from: $from, to: $to, first: 200) { \
         edges { node { start end remaining } } pageInfo { hasNextPage } } }";

    async fn slots(opts: &Opts) -> anyhow::Result<()> {
        let clients: usize = opts.num("clients", 32)?;
        let secs: f64 = opts.num("secs", 20.0)?;
        let warmup: f64 = opts.num("warmup", 3.0)?;
        let days: i64 = opts.num("days", 90)?;
        let url = with_database(&opts.url, &opts.db())?;
        let store = open(&url, 4).await?;
        let (tenant, practitioners, service) = clinic(store.as_ref()).await?;
        let key = generate_api_key(tenant, Role::HisSystem, "bench reader");
        store.create_api_key(&key.record).await?;
        let server = Server::start(&opts.text("server", "target/release/buktor"), &url).await?;
        caught_up(store.clone(), &url).await?;

        let first_day = Utc::now().date_naive() + Days::days(1);
        let (practitioners, token) = (Arc::new(practitioners), Arc::new(key.token));
        let (addr, span) = (server.addr, (days - 6).max(1));
        let run = |secs: f64| {
            let (practitioners, token) = (practitioners.clone(), token.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let mut tasks = Vec::new();
                for w in 0..clients {
                    let (practitioners, token) = (practitioners.clone(), token.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                        let mut client = HttpClient::connect(addr, Some(token.as_str())).await?;
                        let (mut latencies, mut found, mut errors) = (Vec::new(), 0usize, 0usize);
                        let mut first_error = None;
                        while Instant::now() < deadline {
                            let p = practitioners[rng.gen_range(0..practitioners.len())];
                            let from = first_day + Days::days(rng.gen_range(0..span));
                            let body = serde_json::json!({
                                "query": SLOTS_QUERY,
                                "variables": {
                                    "p": [p.to_string()],
                                    "s": service.to_string(),
                                    "from": from.to_string(),
                                    "to": (from + Days::days(6)).to_string(),
                                },
                            });
                            let started = Instant::now();
                            let (status, response) = client.post_json("/graphql", &body).await?;
                            latencies.push(started.elapsed());
                            match graphql_ok(status, &response) {
                                Ok(()) => {
                                    found += response["data"]["availableSlots"]["edges"]
                                        .as_array()
                                        .map_or(0, Vec::len)
                                }
                                Err(e) => {
                                    errors += 1;
                                    first_error.get_or_insert(e);
                                }
                            }
                        }
                        anyhow::Ok((latencies, found, errors, first_error))
                    }));
                }
                let (mut all, mut found, mut errors, mut first_error) =
                    (Vec::new(), 0, 0, None::<String>);
                for t in tasks {
                    let (l, f, e, fe) = t.await??;
                    all.extend(l);
                    found += f;
                    errors += e;
                    if first_error.is_none() {
                        first_error = fe;
                    }
                }
                anyhow::Ok((all, found, errors, first_error))
            }
        };
        run(warmup).await?;
        let cpu_before = process_cpu_secs(server.child.id());
        let started = Instant::now();
        let (mut latencies, found, errors, first_error) = run(secs).await?;
        let wall = started.elapsed().as_secs_f64();
        let server_cpu = process_cpu_secs(server.child.id()) - cpu_before;
        latencies.sort_unstable();
        let n = latencies.len();
        println!(
            "slots: clients={clients} requests={n} secs={wall:.1} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} slots_per_answer={:.1} errors={errors} server_cpu_s_per_s={:.2}",
            n as f64 / wall,
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.90),
            percentile_ms(&latencies, 0.99),
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            found as f64 / n.max(1) as f64,
            server_cpu / wall,
        );
        if let Some(e) = first_error {
            println!("slots: first error: {e}");
        }
        server.stop().await
    }

    /// CPU seconds (user + system) of a process so far, from `/proc`.
    fn process_cpu_secs(pid: Option<u32>) -> f64 {
        let Some(pid) = pid else { return 0.0 };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return 0.0;
        };
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }

    // ------------------------------------------------------------------ lag

    const PATIENT_QUERY: &str = "query Mine($patient: String!, $at: String) { \
         patientAppointments(patientId: $patient, atLeast: $at) { edges { node { appointment { id } } } } }";

    async fn lag(opts: &Opts) -> anyhow::Result<()> {
        let rate: f64 = opts.num("rate", 1000.0)?;
        let secs: f64 = opts.num("secs", 30.0)?;
        let connections: usize = opts.num("connections", 128)?;
        let practitioners: usize = opts.num("practitioners", 64)?;
        let url = if opts.flags.contains_key("fresh") {
            recreate_database(&opts.url, &opts.db()).await?
        } else {
            with_database(&opts.url, &opts.db())?
        };
        let store = open(&url, 8).await?;
        let dyn_store: Arc<dyn Store> = store.clone();
        let scheduler = Scheduler::new(
            dyn_store.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
        );
        let fixture = Arc::new(set_up(&scheduler, practitioners).await?);
        let key = generate_api_key(fixture.tenant, Role::HisSystem, "bench HIS");
        store.create_api_key(&key.record).await?;
        let server = Server::start(&opts.text("server", "target/release/buktor"), &url).await?;
        caught_up(dyn_store.clone(), &url).await?;

        let total = (rate * secs) as usize;
        let run_id = Uuid::now_v7().simple().to_string()[..10].to_owned();
        let next = Arc::new(AtomicUsize::new(0));
        let token = Arc::new(key.token);
        let cpu_before = process_cpu_secs(server.child.id());
        let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (next, token, fixture, run_id) =
                (next.clone(), token.clone(), fixture.clone(), run_id.clone());
            let addr = server.addr;
            tasks.push(tokio::spawn(async move {
                let mut client = HttpClient::connect(addr, Some(token.as_str())).await?;
                // (lateness, booking latency, lag) per booking.
                let mut samples = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok((samples, errors));
                    }
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let late = tokio::time::Instant::now() - due;
                    let (practitioner_id, start) = fixture.target(i, practitioners, None);
                    let patient = format!("L{run_id}-{i}");
                    let body = serde_json::json!({
                        "query": BOOK_MUTATION,
                        "variables": {
                            "input": {
                                "practitionerId": practitioner_id.to_string(),
                                "serviceId": fixture.service.to_string(),
                                "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                                "patient": { "hisPatientId": patient, "name": format!("Patient {i}") },
                            },
                        },
                    });
                    let sent = Instant::now();
                    let (status, response) = client.post_json("/graphql", &body).await?;
                    let booked = Instant::now();
                    if let Err(e) = graphql_ok(status, &response) {
                        errors.push(e);
                        continue;
                    }
                    let result = &response["data"]["bookAppointment"];
                    let (Some(id), Some(position)) =
                        (result["id"].as_str(), result["position"].as_str())
                    else {
                        errors.push(format!("no id or position: {response}"));
                        continue;
                    };
                    let body = serde_json::json!({
                        "query": PATIENT_QUERY,
                        "variables": { "patient": patient, "at": position },
                    });
                    let (status, response) = client.post_json("/graphql", &body).await?;
                    let seen = Instant::now();
                    if let Err(e) = graphql_ok(status, &response) {
                        errors.push(e);
                        continue;
                    }
                    let shown = response["data"]["patientAppointments"]["edges"]
                        .as_array()
                        .is_some_and(|edges| {
                            edges
                                .iter()
                                .any(|e| e["node"]["appointment"]["id"].as_str() == Some(id))
                        });
                    if !shown {
                        errors.push(format!("appointment {id} not shown: {response}"));
                        continue;
                    }
                    samples.push((late, booked - sent, seen - booked));
                }
            }));
        }
        let mut samples = Vec::with_capacity(total);
        let mut errors = Vec::new();
        for t in tasks {
            let (s, e) = t.await??;
            samples.extend(s);
            errors.extend(e);
        }
        let wall = t0.elapsed().as_secs_f64();
        let server_cpu = process_cpu_secs(server.child.id()) - cpu_before;
        let pick = |f: fn(&(Duration, Duration, Duration)) -> Duration| {
            let mut v: Vec<Duration> = samples.iter().map(f).collect();
            v.sort_unstable();
            v
        };
        let (late, book, lag) = (pick(|s| s.0), pick(|s| s.1), pick(|s| s.2));
        println!(
            "lag: target_rate={rate:.0} bookings={} achieved_rate={:.0} secs={wall:.1} connections={connections} \
             lag_p50_ms={:.2} lag_p90_ms={:.2} lag_p99_ms={:.2} lag_max_ms={:.2} \
             book_p50_ms={:.2} book_p99_ms={:.2} start_late_p99_ms={:.2} errors={} server_cpu_s_per_s={:.2}",
            samples.len(),
            samples.len() as f64 / wall,
            percentile_ms(&lag, 0.50),
            percentile_ms(&lag, 0.90),
            percentile_ms(&lag, 0.99),
            lag.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            percentile_ms(&book, 0.50),
            percentile_ms(&book, 0.99),
            percentile_ms(&late, 0.99),
            errors.len(),
            server_cpu / wall,
        );
        if let Some(e) = errors.first() {
            println!("lag: first error: {e}");
        }
        server.stop().await
    }
}
