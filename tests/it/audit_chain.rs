//! The audit hash chain, end to end and on both stores: the server's
//! sealer seals what is booked over HTTP, `buktor audit verify` passes,
//! `buktor audit export` lines re-hash to their stored hashes by a recipe
//! written again here from the README (not with Buktor's code), and an
//! event changed behind the store's back makes `verify` fail naming it.
//! Then the sealing itself: racing sealers never fork a chain, only one
//! instance holds the PostgreSQL sealer lease at a time, and a removed
//! event is named as missing.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor::audit::{self, AuditLog};
use buktor::store::postgres::PostgresStore;
use buktor::store::sqlite::SqliteStore;
use buktor::store::{AppendRequest, EventStore, NewEvent, StreamAppend};
use buktor_domain::TenantId;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::server::*;
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_exports_and_catches_a_changed_event_on_the_embedded_store() {
    chain_end_to_end(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_exports_and_catches_a_changed_event_on_postgresql() {
    chain_end_to_end(Deployment::postgres().await).await;
}

const ALL_TIME: [&str; 4] = [
    "--from",
    "2000-01-01T00:00:00Z",
    "--to",
    "2100-01-01T00:00:00Z",
];

async fn chain_end_to_end(deployment: Deployment) {
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Audit Hospital").await;
    let day = days_ahead(3);
    let mut appointments = Vec::new();
    for (i, patient) in ["P-A", "P-B", "P-A"].into_iter().enumerate() {
        let start = local(day, 9, 0) + chrono::Duration::minutes(30 * i as i64);
        let data = server
            .gql_ok(
                &h.admin,
                BOOK,
                json!({"input": book_input(&h.practitioner, &h.checkup, start, patient)}),
            )
            .await;
        appointments.push(data["bookAppointment"]["id"].as_str().unwrap().to_owned());
    }
    let total: i64 = deployment.event_counts(&h.tenant).await.values().sum();

    // The server's own sealer catches up, without help from the CLI.
    let sealed = wait_until_sealed(&deployment, &h.tenant).await;
    assert!(
        sealed.contains(&format!("{total} events verified, 0 not yet sealed")),
        "{sealed}"
    );

    // The whole history: every line re-hashes, and the lines chain.
    let mut args = vec!["audit", "export", "--tenant", &h.tenant];
    args.extend(ALL_TIME);
    let lines = export_lines(&deployment, &args).await;
    assert_eq!(lines.len() as i64, total, "one line per event");
    let mut prev = "0".repeat(64);
    for line in &lines {
        assert_eq!(line["prev_hash"].as_str(), Some(prev.as_str()), "{line}");
        assert_eq!(rehash(line), line["hash"].as_str().unwrap(), "{line}");
        prev = line["hash"].as_str().unwrap().to_owned();
    }

    // One appointment.
    let stream = |id: &str| format!("appointment-{id}");
    let lines = export_lines(
        &deployment,
        &[
            "audit",
            "export",
            "--tenant",
            &h.tenant,
            "--appointment",
            &appointments[1],
        ],
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let target = lines[0].clone();
    assert_eq!(target["stream_id"], json!(stream(&appointments[1])));
    assert_eq!(target["event_type"], json!("AppointmentBooked"));
    assert_eq!(rehash(&target), target["hash"].as_str().unwrap());

    // One patient's appointments, and nothing else.
    let lines = export_lines(
        &deployment,
        &["audit", "export", "--tenant", &h.tenant, "--patient", "P-A"],
    )
    .await;
    let streams: BTreeSet<String> = lines
        .iter()
        .map(|l| l["stream_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        streams,
        BTreeSet::from([stream(&appointments[0]), stream(&appointments[2])])
    );
    for line in &lines {
        assert_eq!(rehash(line), line["hash"].as_str().unwrap(), "{line}");
    }

    let status = server.stop_sigterm().await;
    assert!(
        status.success(),
        "the server (and its sealer) stopped cleanly: {status}"
    );
    let ok = deployment.cli(&["audit", "verify"]).await;
    assert!(ok.contains("audit chain OK"), "{ok}");

    // Behind the store's back: the chain table refuses changes too.
    let position = target["position"].as_str().unwrap().to_owned();
    let event_id = target["event_id"].as_str().unwrap().to_owned();
    tamper(&deployment, &event_id).await;

    let output = deployment
        .cli_output(&["audit", "verify", "--tenant", &h.tenant])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "BROKEN at position {position} (event {event_id}): the event does not match its seal"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stored hash {}", target["hash"].as_str().unwrap())),
        "{stdout}"
    );
}

/// Polls `verify --no-seal` until nothing is left unsealed.
async fn wait_until_sealed(deployment: &Deployment, tenant: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = deployment
            .cli(&["audit", "verify", "--no-seal", "--tenant", tenant])
            .await;
        if out.contains(" 0 not yet sealed") {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "the sealer did not catch up: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn export_lines(deployment: &Deployment, args: &[&str]) -> Vec<Value> {
    deployment
        .cli(args)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Changes the event's payload past the append-only triggers, as a
/// database superuser (PostgreSQL) or the file's owner (SQLite) could.
async fn tamper(deployment: &Deployment, event_id: &str) {
    match (deployment.database_url(), deployment.sqlite_path()) {
        (Some(url), _) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let connection = tokio::spawn(connection);
            let refused = client
                .batch_execute("UPDATE event_chain SET hash = hash")
                .await
                .expect_err("event_chain is append-only");
            let message = refused.as_db_error().map(|e| e.message().to_owned());
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("append-only")),
                "{refused:?}"
            );
            // Ordinary triggers do not fire for a replica session.
            client
                .batch_execute(&format!(
                    "SET session_replication_role = replica; \
                     UPDATE events SET payload = jsonb_set(payload, '{{note}}', '\"tampered\"') \
                     WHERE event_id = '{event_id}'; \
                     RESET session_replication_role;"
                ))
                .await
                .unwrap();
            drop(client);
            let _ = connection.await;
        }
        (None, Some(path)) => {
            let event_id = event_id.to_owned();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.execute("UPDATE event_chain SET hash = hash", [])
                    .expect_err("event_chain is append-only");
                conn.execute_batch("DROP TRIGGER events_no_update").unwrap();
                let changed = conn
                    .execute(
                        "UPDATE events SET payload = json_set(payload, '$.note', 'tampered') \
                         WHERE event_id = ?1",
                        [&event_id],
                    )
                    .unwrap();
                assert_eq!(changed, 1);
                conn.execute_batch(
                    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events \
                     BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;",
                )
                .unwrap();
            })
            .await
            .unwrap();
        }
        (None, None) => unreachable!("a deployment has a store"),
    }
}

/// The README's recipe, written again without Buktor's code: drop
/// `prev_hash` and `hash`, write the rest as canonical JSON, and
/// `SHA-256(prev_hash bytes || canonical)`.
fn rehash(line: &Value) -> String {
    let mut event = line.as_object().expect("a JSON object").clone();
    let prev = hex::decode(event.remove("prev_hash").unwrap().as_str().unwrap()).unwrap();
    event.remove("hash");
    let mut canonical = String::new();
    canon(&Value::Object(event), &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(&prev);
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

fn canon(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            assert!(n.is_i64() || n.is_u64(), "events carry integers only: {n}");
            out.push_str(&n.to_string());
        }
        Value::String(s) => quote(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            // By code point.
            keys.sort_by(|a, b| a.chars().cmp(b.chars()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(key, out);
                out.push(':');
                canon(&members[key], out);
            }
            out.push('}');
        }
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Sealing, through the library

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_sealers_never_fork_a_chain_on_postgresql() {
    let db = support::pg::fresh_database().await;
    let store = PostgresStore::connect(&db.url, 16).await.unwrap();
    store.migrate().await.unwrap();
    racing_sealers(Arc::new(store)).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_sealers_never_fork_a_chain_on_sqlite() {
    let file = support::fresh_sqlite_path();
    let path = file.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    racing_sealers(Arc::new(store)).await;
}

/// Four sealers loop while events are appended; afterwards the chain holds
/// every event exactly once and verifies.
async fn racing_sealers(log: Arc<dyn AuditLog>) {
    const REQUESTS: usize = 40;
    let tenant = TenantId::new();
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let sealers: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while !*done.borrow() {
                    audit::seal_tenant(&*log, tenant).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for r in 0..REQUESTS / 4 {
                    let events = (0..5)
                        .map(|i| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "Noted".into(),
                            schema_version: 1,
                            payload: json!({"writer": w, "request": r, "i": i, "text": "ü\n\"x\""}),
                            metadata: json!({"actor": "test"}),
                        })
                        .collect();
                    log.append(AppendRequest {
                        tenant,
                        streams: vec![StreamAppend {
                            stream_id: format!("note-{w}-{r}"),
                            expected_version: 0,
                            events,
                        }],
                        idempotency: None,
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done_tx.send(true).unwrap();
    for s in sealers {
        s.await.unwrap();
    }
    // On PostgreSQL an event becomes readable in the global order only once
    // every older transaction of the cluster has ended (other tests run
    // beside this one), so seal until everything written is sealed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let reports = loop {
        audit::seal_tenant(&*log, tenant).await.unwrap();
        let reports = audit::verify(&*log, Some(tenant)).await.unwrap();
        let done = reports
            .first()
            .is_some_and(|r| r.verified == REQUESTS as u64 * 5 || r.broken.is_some());
        if done || tokio::time::Instant::now() > deadline {
            break reports;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert!(report.broken.is_none(), "{report}");
    assert_eq!(report.verified, REQUESTS as u64 * 5, "{report}");
    assert_eq!(report.unsealed, 0, "{report}");
    let all = log
        .chain_links(tenant, buktor::store::Position::START, 10_000)
        .await
        .unwrap();
    assert_eq!(all.len(), REQUESTS * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_at_a_time_holds_the_sealer_lease_on_postgresql() {
    let db = support::pg::fresh_database().await;
    let a = PostgresStore::connect(&db.url, 2).await.unwrap();
    a.migrate().await.unwrap();
    let b = PostgresStore::connect(&db.url, 2).await.unwrap();
    let lease = a
        .try_lead_sealing()
        .await
        .unwrap()
        .expect("the first asks, the first leads");
    assert!(lease.held().await);
    assert!(
        b.try_lead_sealing().await.unwrap().is_none(),
        "b must not lead while a does"
    );
    // The lease's connection left a's pool: a's pool still serves.
    a.ping().await.unwrap();
    a.ping().await.unwrap();
    drop(lease);
    // The connection closes in the background: b takes over shortly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        if let Some(lease) = b.try_lead_sealing().await.unwrap() {
            break lease;
        }
        assert!(Instant::now() < deadline, "b never took the lease over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(taken.held().await);
    drop(taken);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_event_leaves_a_link_without_its_event() {
    let file = support::fresh_sqlite_path();
    let path = file.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    let tenant = TenantId::new();
    for r in 0..3 {
        store
            .append(AppendRequest {
                tenant,
                streams: vec![StreamAppend {
                    stream_id: format!("note-{r}"),
                    expected_version: 0,
                    events: vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "Noted".into(),
                        schema_version: 1,
                        payload: json!({"r": r}),
                        metadata: json!({}),
                    }],
                }],
                idempotency: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(audit::seal_tenant(&store, tenant).await.unwrap(), 3);
    let second = store
        .read_all(tenant, buktor::store::Position::START, 10)
        .await
        .unwrap()[1]
        .clone();
    store
        .execute_raw_for_tests("DROP TRIGGER events_no_delete")
        .await
        .unwrap();
    store
        .execute_raw_for_tests(&format!(
            "DELETE FROM events WHERE seq = {}",
            second.position.seq
        ))
        .await
        .unwrap();
    let report = audit::verify(&store, Some(tenant)).await.unwrap().remove(0);
    let broken = report.broken.expect("a removed event breaks the chain");
    assert_eq!(broken.position, second.position);
    assert_eq!(broken.event_id, second.event_id);
    assert_eq!(broken.what, audit::Break::EventMissing);
    assert_eq!(report.verified, 1);
    assert!(broken.to_string().contains("missing from the events table"));
}
