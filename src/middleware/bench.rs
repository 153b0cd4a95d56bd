//! `buktor-middleware bench-sync`: how many messages per second one sync
//! pass writes into a PostgreSQL (or SQLite) HIS database.
//!
//! It fills a throwaway local store with `rows` pending `appointment.booked`
//! messages (one appointment each, bodies shaped like Buktor's), lets one
//! forced pass write them into a new table `buktor_bench_<random>` (created
//! through the mapping's `create_table`), checks the table's row count,
//! drops the table and the store, and reports the pass's rate. The local
//! store's setup is not timed.
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::config::{HisDbSettings, HisDbUrl, Settings};
use super::mapping::Mapping;
use super::payload::{Incoming, WebhookId};
use super::schedule::{Schedule, Zone};
use super::store::LocalStore;
use super::sync::Syncer;
use super::Output;
use crate::config::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rows: usize,
    pub batch_size: usize,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub batches: usize,
}

/// A body like Buktor's `appointment.booked` for appointment number `n`.
pub fn sample_body(appointment_id: &str, version: i64, n: usize) -> serde_json::Value {
    json!({
        "type": "appointment.booked",
        "timestamp": "2026-11-25T09:14:03.120Z",
        "version": 1,
        "data": {
            "event": {
                "id": Uuid::now_v7().to_string(), "name": "AppointmentBooked",
                "position": format!("{n}.0"), "stream": format!("appointment-{appointment_id}"),
                "streamVersion": version, "occurredAt": "2026-11-25T09:14:03.120Z",
                "actor": {"id": "front-desk", "role": "staff"}, "source": "admin",
                "correlationId": Uuid::now_v7().to_string()
            },
            "tenant": {"id": "7d2b3a0e-0000-4000-8000-000000000001", "timeZone": "Europe/Amsterdam"},
            "appointment": {
                "id": appointment_id, "version": version, "status": "booked",
                "start": "2026-11-26T08:00:00Z", "end": "2026-11-26T08:20:00Z",
                "localStart": "2026-11-26T09:00:00+01:00", "localEnd": "2026-11-26T09:20:00+01:00",
                "calendarDay": "2026-11-26", "note": null, "cancellation": null, "previous": null,
                "patient": {"hisPatientId": format!("P-{n}"), "name": "Ada Jansen", "phone": "+31612345678", "email": null},
                "practitioner": {"id": "p1", "externalId": "HIS-DOC-17", "name": "Dr. Visser",
                                 "specialty": "Cardiology", "department": "Cardiology", "location": null},
                "service": {"id": "s1", "externalId": null, "name": "Consultation", "durationMinutes": 20}
            }
        }
    })
}

fn mapping(table: &str) -> Mapping {
    Mapping::parse(&format!(
        r#"
table = "{table}"
create_table = true
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
column = "practitioner"
field = "data.appointment.practitioner.externalId"
type = "text"
nullable = true
[[columns]]
column = "starts_at"
field = "data.appointment.start"
type = "timestamp"
[[columns]]
column = "ends_at"
field = "data.appointment.end"
type = "timestamp"
[[columns]]
column = "day"
field = "data.appointment.calendarDay"
type = "date"
[[columns]]
column = "minutes"
field = "data.appointment.service.durationMinutes"
type = "integer"
[[columns]]
column = "note"
field = "data.appointment.note"
type = "text"
nullable = true
"#
    ))
    .expect("the bench mapping is valid")
}

pub async fn bench_sync(
    database_url: &str,
    rows: usize,
    batch_size: usize,
) -> anyhow::Result<BenchReport> {
    let url = HisDbUrl::parse(&Secret::new(database_url))?;
    let table = format!("buktor_bench_{}", Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!(
        "buktor-middleware-bench-{}",
        Uuid::new_v4().simple()
    ));
    let settings = Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.clone(),
        secrets: Vec::new(),
        tolerance_secs: 300,
        max_body_bytes: 1 << 20,
        workers: 1,
        shutdown_timeout: Duration::from_secs(5),
        zone: Zone::Local,
        retention_days: 0,
        his_db: Some(HisDbSettings {
            url: url.clone(),
            mapping: mapping(&table),
            health_query: None,
            batch_size,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(300),
        }),
        hl7: None,
        schedule: Schedule::Interval(Duration::from_secs(60)),
        windows: Vec::new(),
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(1),
    };
    let result = run(&settings, rows).await;
    let counted = count_and_drop(&url, &table).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let counted = counted?;
    if counted != rows as i64 {
        anyhow::bail!("the table holds {counted} rows, not {rows}");
    }
    Ok(report)
}

async fn run(settings: &Settings, rows: usize) -> anyhow::Result<BenchReport> {
    let store = LocalStore::open_in(&settings.data_dir)?;
    let now = Utc::now();
    for chunk_start in (0..rows).step_by(10_000) {
        let messages = (chunk_start..(chunk_start + 10_000).min(rows))
            .map(|n| {
                let id = Uuid::new_v4().to_string();
                Incoming {
                    webhook_id: WebhookId::parse(&format!("msg_{}", Uuid::new_v4().simple()))
                        .expect("a valid id"),
                    event_type: "appointment.booked".into(),
                    appointment_id: Some(id.clone()),
                    appointment_version: Some(1),
                    body: sample_body(&id, 1, n).to_string(),
                }
            })
            .collect::<Vec<_>>();
        store.insert_all(&messages, &[Output::HisDb], now)?;
    }
    let mut syncer = Syncer::new(store.clone(), settings);
    let (_stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let report = syncer.pass(true, &stopped).await?;
    let seconds = started.elapsed().as_secs_f64();
    let his = report
        .output(Output::HisDb)
        .ok_or_else(|| anyhow::anyhow!("the pass did not reach the HIS database"))?;
    if let Some(e) = &his.error {
        anyhow::bail!("the pass failed: {e}");
    }
    if his.synced != rows {
        anyhow::bail!("the pass synced {} of {rows} messages", his.synced);
    }
    Ok(BenchReport {
        rows,
        batch_size: settings.his_db.as_ref().map_or(0, |d| d.batch_size),
        seconds,
        rows_per_second: rows as f64 / seconds,
        batches: his.batches,
    })
}

/// The table's row count; the table is dropped.
async fn count_and_drop(url: &HisDbUrl, table: &str) -> anyhow::Result<i64> {
    let count_sql = format!("SELECT count(*) FROM \"{table}\"");
    let count = match url {
        HisDbUrl::Postgres(url) => {
            let (client, connection) =
                tokio_postgres::connect(url.expose(), tokio_postgres::NoTls).await?;
            let connection = tokio::spawn(connection);
            let count: i64 = client.query_one(&count_sql, &[]).await?.get(0);
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
                .await?;
            drop(client);
            let _ = connection.await;
            count
        }
        HisDbUrl::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path)?;
            let count: i64 = conn.query_row(&count_sql, [], |r| r.get(0))?;
            conn.execute_batch(&format!("DROP TABLE IF EXISTS \"{table}\""))?;
            count
        }
    };
    Ok(count)
}
