//! `buktor-bench webhooks`: event → HIS receipt latency of push delivery.
//!
//! ```text
//! buktor-bench webhooks DATABASE_URL [--rate 1000] [--secs 30] [--endpoints 50] [--timing-out 0]
//! ```
//!
//! In one process: the store (database `buktor_bench_webhooks`, dropped and
//! recreated), the real fan-out and dispatcher (`buktor::webhooks::spawn`
//! with the default configuration), and one HTTP receiver serving every
//! endpoint on 127.0.0.1. `--endpoints` practitioners each get an endpoint
//! subscribed to their `appointment.booked` events; bookings go through the
//! real `Scheduler` at `--rate` per second (open loop, round-robin over the
//! practitioners), so every booking is one delivery. The first
//! `--timing-out` endpoints never answer (each attempt runs into the 10 s
//! attempt timeout and is retried on the schedule).
//!
//! Latency is receipt time minus the event's `occurredAt` (the command's
//! clock reading just before its append), same process and clock; reported
//! for the healthy endpoints, with their throughput during the load.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, Context};
use buktor::app::{Book, CommandContext, Scheduler, SystemClock};
use buktor::config::Webhooks as WebhooksConfig;
use buktor::metrics::Metrics;
use buktor::store::postgres::PostgresStore;
use buktor::store::Store;
use buktor::webhooks::endpoints::{self, EndpointChanges};
use buktor_domain::{Actor, Role, Source};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{percentile_ms, recreate_database, set_up, url_and_counts};

struct Options {
    url: String,
    rate: usize,
    secs: u64,
    endpoints: usize,
    timing_out: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let usage = "usage: buktor-bench webhooks DATABASE_URL [--rate N] [--secs S] [--endpoints E] [--timing-out T<=E]";
    let (url, [rate, secs, endpoints, timing_out]) = url_and_counts(
        args,
        [
            ("--rate", 1000),
            ("--secs", 30),
            ("--endpoints", 50),
            ("--timing-out", 0),
        ],
    )
    .with_context(|| usage)?;
    if rate == 0 || endpoints == 0 || timing_out > endpoints {
        bail!(usage);
    }
    Ok(Options {
        url,
        rate,
        secs: secs as u64,
        endpoints,
        timing_out,
    })
}

#[derive(Default)]
struct Receipts {
    /// Per endpoint index: latencies of first receipts.
    latencies: Vec<Vec<Duration>>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    timed_out_requests: usize,
}

async fn receive(
    path: web::Path<usize>,
    body: web::Bytes,
    state: web::Data<(Arc<Mutex<Receipts>>, usize)>,
) -> HttpResponse {
    let n = path.into_inner();
    let (receipts, timing_out) = (&state.0, state.1);
    if n < timing_out {
        receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .timed_out_requests += 1;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return HttpResponse::Ok().finish();
    }
    let now = Utc::now();
    let occurred: Option<DateTime<Utc>> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["event"]["occurredAt"].as_str().map(str::to_owned))
        .and_then(|s| s.parse().ok());
    let Some(occurred) = occurred else {
        return HttpResponse::BadRequest().finish();
    };
    let latency = (now - occurred).to_std().unwrap_or_default();
    let mut r = receipts.lock().unwrap_or_else(|p| p.into_inner());
    let at = Instant::now();
    r.first_at.get_or_insert(at);
    r.last_at = Some(at);
    if let Some(list) = r.latencies.get_mut(n) {
        list.push(latency);
    }
    HttpResponse::NoContent().finish()
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let url = recreate_database(&o.url, "buktor_bench_webhooks").await?;
    let store = PostgresStore::connect(&url, 64).await?;
    store.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let scheduler = Arc::new(Scheduler::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
    ));
    let fixture = set_up(&scheduler, o.endpoints).await?;

    let receipts = Arc::new(Mutex::new(Receipts {
        latencies: vec![Vec::new(); o.endpoints],
        ..Default::default()
    }));
    let data = web::Data::new((receipts.clone(), o.timing_out));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/e/{n}", web::post().to(receive))
    })
    .workers(2)
    .backlog(4096)
    .max_connections(100_000)
    .bind(("127.0.0.1", 0))?;
    let addr = server.addrs()[0];
    let server = server.disable_signals().shutdown_timeout(0).run();
    let server_handle = server.handle();
    tokio::spawn(server);

    for (n, practitioner) in fixture.practitioners.iter().enumerate() {
        endpoints::create(
            store.webhooks(),
            fixture.tenant,
            EndpointChanges {
                url: Some(format!("http://{addr}/e/{n}")),
                event_types: Some(vec!["appointment.booked".into()]),
                practitioner_ids: Some(vec![practitioner.as_uuid()]),
                ..Default::default()
            },
        )
        .await?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = WebhooksConfig::default();
    let dispatch = buktor::webhooks::spawn(
        store.clone(),
        &config,
        scheduler.append_signal().clone(),
        stop_rx,
    );

    let total = o.rate * o.secs as usize;
    println!(
        "webhooks: {} bookings at {}/s over {} endpoints ({} never answer), attempt timeout {} ms",
        total, o.rate, o.endpoints, o.timing_out, config.attempt_timeout_ms
    );
    let fixture = Arc::new(fixture);
    let started = Instant::now();
    let mut bookings = tokio::task::JoinSet::new();
    let mut failed = 0usize;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / o.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (scheduler, fixture) = (scheduler.clone(), fixture.clone());
        let endpoints = o.endpoints;
        bookings.spawn(async move {
            let (practitioner_id, start) = fixture.target(i, endpoints, None);
            let ctx = CommandContext {
                tenant: fixture.tenant,
                time_zone: chrono_tz::UTC,
                actor: Actor {
                    id: "api-key:bench-his".into(),
                    role: Role::HisSystem,
                },
                source: Source::HisApi,
                remote_addr: None,
                correlation_id: Uuid::now_v7(),
                idempotency_key: None,
            };
            let command = Book {
                appointment_id: None,
                practitioner_id,
                service_id: fixture.service,
                start: buktor_domain::time::Instant::parse("start", start)?,
                patient: super::patient(i)?,
                note: None,
                his_appointment_id: None,
                overriding: None,
                reservation: None,
            };
            scheduler.book(&ctx, &command).await?;
            anyhow::Ok(())
        });
        while let Some(done) = bookings.try_join_next() {
            if !matches!(done, Ok(Ok(()))) {
                failed += 1;
            }
        }
    }
    while let Some(done) = bookings.join_next().await {
        if !matches!(done, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let booked_in = started.elapsed();
    let healthy = o.endpoints - o.timing_out;
    let expected = (0..total)
        .filter(|i| i % o.endpoints >= o.timing_out)
        .count()
        - failed.min(total);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: usize = receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latencies
            .iter()
            .map(Vec::len)
            .sum();
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = std::mem::take(&mut *receipts.lock().unwrap_or_else(|p| p.into_inner()));
    let mut all: Vec<Duration> = r.latencies.iter().flatten().copied().collect();
    all.sort();
    let span = match (r.first_at, r.last_at) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    println!(
        "booked {} in {:.1} s ({:.0}/s), {} failed",
        total - failed,
        booked_in.as_secs_f64(),
        (total - failed) as f64 / booked_in.as_secs_f64(),
        failed
    );
    println!(
        "healthy endpoints {healthy}: received {} of {expected} in {:.1} s ({:.0}/s); latency p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        all.len(),
        span,
        all.len() as f64 / span,
        percentile_ms(&all, 0.50),
        percentile_ms(&all, 0.90),
        percentile_ms(&all, 0.99),
        percentile_ms(&all, 1.0),
    );
    if o.timing_out > 0 {
        println!(
            "timing-out endpoints {}: {} requests received and left hanging",
            o.timing_out, r.timed_out_requests
        );
    }
    let _ = stop_tx.send(true);
    // The dispatcher waits for its hanging attempts to time out; don't.
    for task in dispatch {
        task.abort();
    }
    server_handle.stop(false).await;
    Ok(())
}
