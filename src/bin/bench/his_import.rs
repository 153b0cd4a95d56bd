//! `buktor-bench his-import`: the HIS's initial load through `/his/v1/bulk`.
//!
//! ```text
//! buktor-bench his-import DATABASE_URL [--appointments 100000] [--batch 1000]
//!                                      [--clients 4] [--practitioners 100]
//! ```
//!
//! In one process: the store (database `buktor_bench_his`, dropped and
//! recreated) and the real HTTP server (`Application::build`, listening on
//! 127.0.0.1:0). The master data (practitioners working every day
//! 00:00–23:45 on a 15-minute grid, one 15-minute service) goes in one bulk
//! request; then the appointments, `--batch` per request, over `--clients`
//! concurrent connections, practitioner `i % P`, each practitioner's next
//! free slot from tomorrow on. Every appointment carries its patient's
//! contact data. Reported: appointments/s over the appointment phase,
//! request latency, and a check by SQL that every appointment was booked
//! exactly once.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buktor::auth::generate_api_key;
use buktor::config::{Config, RateLimit, Secret};
use buktor::http::{AppState, Application};
use buktor::store::postgres::PostgresStore;
use buktor::store::Store;
use buktor_domain::Role;
use chrono::{Days, NaiveTime, TimeZone, Utc};
use serde_json::{json, Value};

use super::{percentile_ms, recreate_database, url_and_counts};

struct Options {
    url: String,
    appointments: usize,
    batch: usize,
    clients: usize,
    practitioners: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let usage = "usage: buktor-bench his-import DATABASE_URL [--appointments N] [--batch N] [--clients N] [--practitioners N]";
    let (url, [appointments, batch, clients, practitioners]) = url_and_counts(
        args,
        [
            ("--appointments", 100_000),
            ("--batch", 1000),
            ("--clients", 4),
            ("--practitioners", 100),
        ],
    )
    .with_context(|| usage)?;
    if batch == 0 || clients == 0 || practitioners == 0 {
        bail!("--batch, --clients and --practitioners must be at least 1");
    }
    Ok(Options {
        url,
        appointments,
        batch,
        clients,
        practitioners,
    })
}

const SLOTS_PER_DAY: usize = 95;

/// Appointment `i`: practitioner `i % P`, that practitioner's slot `i / P`.
fn appointment(i: usize, practitioners: usize, tomorrow: chrono::NaiveDate) -> Value {
    let p = i % practitioners;
    let n = i / practitioners;
    let day = tomorrow + Days::new((n / SLOTS_PER_DAY) as u64);
    let minutes = (n % SLOTS_PER_DAY) as u32 * 15;
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or_default();
    let start = Utc.from_utc_datetime(&day.and_time(time));
    json!({
        "hisId": format!("APT-{i:07}"),
        "version": 1,
        "practitionerId": format!("DOC-{p:04}"),
        "serviceId": "SVC-1",
        "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "patient": {
            "hisId": format!("PAT-{i:07}"),
            "name": format!("Patient {i}"),
            "email": format!("patient{i}@example.org"),
        },
    })
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let url = recreate_database(&o.url, "buktor_bench_his").await?;
    let pool_size = 32;
    let store = PostgresStore::connect(&url, pool_size).await?;
    store.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let config = Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: Some(Secret::new(url.clone())),
        pool_size,
        max_body_bytes: 1 << 20,
        rate_limit: RateLimit {
            requests: u32::MAX,
            window_secs: 1,
        },
        ..Config::default()
    };
    let state = Arc::new(AppState::new(&config, store.clone()));
    let metrics = state.metrics.clone();
    let tenant =
        buktor::demo::create_tenant(&state.scheduler, "Bench HIS Hospital", chrono_tz::UTC).await?;
    let key = generate_api_key(tenant.id, Role::HisSystem, "bench HIS");
    store.create_api_key(&key.record).await?;
    let app = Application::build(&config, state).context("cannot start the server")?;
    let base = format!("http://{}/his/v1", app.addr);
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients)
        .timeout(Duration::from_secs(600))
        .build()?;
    let token = Arc::new(key.token);

    let doctors: Vec<String> = (0..o.practitioners)
        .map(|p| format!("DOC-{p:04}"))
        .collect();
    let master = json!({
        "practitioners": doctors.iter().map(|d| json!({"hisId": d, "version": 1, "name": format!("Dr. {d}"), "specialty": "General"})).collect::<Vec<_>>(),
        "services": [{"hisId": "SVC-1", "version": 1, "name": "Visit", "durationMinutes": 15, "practitionerIds": doctors, "maxAdvanceDays": 730}],
        "schedules": doctors.iter().map(|d| json!({"practitionerId": d, "version": 1, "weeklyRules": [{
            "weekdays": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
            "start": "00:00", "end": "23:45", "gridMinutes": 15, "effectiveFrom": "2020-01-01"}]})).collect::<Vec<_>>(),
    });
    let started = Instant::now();
    let summary = post(&client, &base, &token, "master", &master).await?;
    if summary["failed"] != 0 {
        bail!("the master data failed: {summary}");
    }
    println!(
        "master data: {} practitioners, 1 service, {} schedules in {:.2} s",
        o.practitioners,
        o.practitioners,
        started.elapsed().as_secs_f64()
    );

    let tomorrow = Utc::now().date_naive() + Days::new(1);
    let batches: Vec<(usize, usize)> = (0..o.appointments)
        .step_by(o.batch)
        .map(|from| (from, (from + o.batch).min(o.appointments)))
        .collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let batches = Arc::new(batches);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..o.clients {
        let (client, base, token, next, batches) = (
            client.clone(),
            base.clone(),
            token.clone(),
            next.clone(),
            batches.clone(),
        );
        let practitioners = o.practitioners;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(from, to)) = batches.get(b) else {
                    break;
                };
                let body = json!({"appointments": (from..to).map(|i| appointment(i, practitioners, tomorrow)).collect::<Vec<_>>()});
                let t = Instant::now();
                let summary = post(&client, &base, &token, &format!("apt-{b}"), &body).await?;
                latencies.push(t.elapsed());
                failed += summary["failed"].as_u64().unwrap_or(0);
                if failed > 0 && latencies.len() == 1 {
                    eprintln!("first failures: {summary}");
                }
            }
            anyhow::Ok((latencies, failed))
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (l, f) = w.await??;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let booked: i64 = {
        let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(connection);
        let row = db
            .query_one(
                "SELECT COUNT(DISTINCT stream_id) FROM events WHERE event_type = 'AppointmentBooked'",
                &[],
            )
            .await?;
        drop(db);
        let _ = conn.await;
        row.get(0)
    };
    println!(
        "his-import appointments={} batch={} clients={} practitioners={} elapsed_s={:.2} appointments_per_s={:.0} request_p50_ms={:.0} request_p99_ms={:.0} failed={failed} conflicts={}",
        o.appointments,
        o.batch,
        o.clients,
        o.practitioners,
        elapsed.as_secs_f64(),
        o.appointments as f64 / elapsed.as_secs_f64(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        metrics.conflicts.get(),
    );
    let passed = failed == 0 && booked as usize == o.appointments;
    println!(
        "verify: {} appointments booked, expected {}: {}",
        booked,
        o.appointments,
        if passed { "ok" } else { "FAILED" }
    );
    handle.stop(true).await;
    server.await??;
    if !passed {
        bail!("the import did not book every appointment exactly once");
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let res = client
        .post(format!("{base}/bulk"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let answer: Value = res.json().await?;
    if !status.is_success() {
        bail!("bulk request {key} answered {status}: {answer}");
    }
    Ok(answer["summary"].clone())
}
