//! Group commit on PostgreSQL: appends that share a transaction each get
//! what they would have got alone.
//!
//! Most cases build one batch on purpose with
//! `PostgresStore::append_batch_for_tests`, past the queue, so that what
//! shares a transaction is not left to timing; the others go through
//! `append` under concurrency. `group_commit_benchmark` (ignored) measures
//! appends per second and latency on a cluster you name.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor::store::postgres::{GroupCommit, PostgresStore, COMMITTER_APPLICATION_NAME};
use buktor::store::{
    AppendRequest, EventStore, IdempotencyClaim, NewEvent, Position, RecordedEvent, StoreError,
    StoreResult, StreamAppend,
};
use buktor_domain::TenantId;
use serde_json::json;
use tokio::sync::Barrier;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::support;

async fn store_with(db: &support::pg::TestDb, group: GroupCommit) -> PostgresStore {
    let store = PostgresStore::connect_with(&db.url, 8, group)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

async fn store(db: &support::pg::TestDb) -> PostgresStore {
    store_with(db, GroupCommit::default()).await
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(connection);
    client
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "E".to_owned(),
        schema_version: 1,
        payload: json!({ "n": n, "text": "Tür 3 ✓" }),
        metadata: json!({ "actor": "test" }),
    }
}

fn stream(id: &str, expected_version: i64, count: i64) -> StreamAppend {
    StreamAppend {
        stream_id: id.to_owned(),
        expected_version,
        events: (1..=count).map(event).collect(),
    }
}

fn request(tenant: TenantId, streams: Vec<StreamAppend>) -> AppendRequest {
    AppendRequest {
        tenant,
        streams,
        idempotency: None,
    }
}

fn claimed(mut request: AppendRequest, key: &str) -> AppendRequest {
    request.idempotency = Some(IdempotencyClaim {
        key: key.to_owned(),
        request_hash: format!("hash-{key}"),
        response: json!({ "key": key }),
    });
    request
}

fn assert_conflict(result: &StoreResult<Vec<RecordedEvent>>, stream_id: &str, expected: i64) {
    match result {
        Err(StoreError::VersionConflict {
            stream_id: s,
            expected_version,
        }) => {
            assert_eq!(s, stream_id, "conflict reported on the wrong stream");
            assert_eq!(*expected_version, expected);
        }
        other => panic!("expected a version conflict on {stream_id}@{expected}, got {other:?}"),
    }
}

fn assert_written(result: &StoreResult<Vec<RecordedEvent>>, request: &AppendRequest) {
    let recorded = result
        .as_ref()
        .unwrap_or_else(|e| panic!("expected {request:?} to be written, got {e:?}"));
    let expected: Vec<(String, i64, Uuid)> = request
        .streams
        .iter()
        .flat_map(|s| {
            (s.expected_version + 1..)
                .zip(&s.events)
                .map(|(v, e)| (s.stream_id.clone(), v, e.event_id))
        })
        .collect();
    let got: Vec<(String, i64, Uuid)> = recorded
        .iter()
        .map(|e| (e.stream_id.clone(), e.version, e.event_id))
        .collect();
    assert_eq!(got, expected);
    assert!(recorded.windows(2).all(|w| w[0].position < w[1].position));
    assert!(recorded.iter().all(|e| e.tenant == request.tenant));
}

async fn stream_events(store: &PostgresStore, tenant: TenantId, id: &str) -> Vec<RecordedEvent> {
    store.read_stream(tenant, id, 0).await.expect("read_stream")
}

/// The tenant's whole global order once `count` events are readable.
async fn read_all_until(
    store: &PostgresStore,
    tenant: TenantId,
    count: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut position = Position::START;
    while seen.len() < count {
        let batch = store
            .read_all(tenant, position, 500)
            .await
            .expect("read_all");
        if batch.is_empty() {
            assert!(
                Instant::now() < deadline,
                "read_all returned {} of {count} events within 20 s",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for e in batch {
            assert!(e.position > position, "read_all went backwards");
            position = e.position;
            seen.push(e);
        }
    }
    assert!(store
        .read_all(tenant, position, 10)
        .await
        .unwrap()
        .is_empty());
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_independent_appends_is_one_transaction_in_request_order() {
    let db = support::pg::fresh_database().await;
    let store = store(&db).await;
    let tenant = TenantId::new();
    let other = TenantId::new();
    let requests = vec![
        claimed(
            request(tenant, vec![stream("a", 0, 2), stream("b", 0, 1)]),
            "k1",
        ),
        request(tenant, vec![stream("c", 0, 1)]),
        // Another tenant's stream of the same name, in the same batch.
        claimed(request(other, vec![stream("a", 0, 1)]), "k1"),
        // A claim alone.
        AppendRequest {
            tenant,
            streams: Vec::new(),
            idempotency: Some(IdempotencyClaim {
                key: "no-op".into(),
                request_hash: "h".into(),
                response: json!(null),
            }),
        },
    ];
    let results = store.append_batch_for_tests(requests.clone()).await;
    for (result, request) in results.iter().zip(&requests) {
        assert_written(result, request);
    }
    let written: Vec<&RecordedEvent> = results.iter().flat_map(|r| r.as_ref().unwrap()).collect();
    let tx = written[0].position.tx;
    assert!(
        written.iter().all(|e| e.position.tx == tx),
        "one transaction"
    );
    assert!(
        written.windows(2).all(|w| w[0].position < w[1].position),
        "positions follow request order"
    );
    assert!(written
        .iter()
        .all(|e| e.recorded_at == written[0].recorded_at));

    for id in ["a", "b", "c"] {
        let stored = stream_events(&store, tenant, id).await;
        let mine: Vec<RecordedEvent> = written
            .iter()
            .filter(|e| e.tenant == tenant && e.stream_id == id)
            .map(|e| (*e).clone())
            .collect();
        assert_eq!(stored, mine);
    }
    assert!(store.idempotency(tenant, "k1").await.unwrap().is_some());
    assert!(store.idempotency(other, "k1").await.unwrap().is_some());
    assert!(store.idempotency(tenant, "no-op").await.unwrap().is_some());
    let all = read_all_until(&store, tenant, 4).await;
    let expected: Vec<RecordedEvent> = written
        .iter()
        .filter(|e| e.tenant == tenant)
        .map(|e| (*e).clone())
        .collect();
    assert_eq!(all, expected);

    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_appends_in_a_batch_write_nothing_and_leave_the_others_alone() {
    let db = support::pg::fresh_database().await;
    let store = store(&db).await;
    let tenant = TenantId::new();
    let existing = store
        .append(claimed(
            request(tenant, vec![stream("taken", 0, 2)]),
            "used",
        ))
        .await
        .expect("setup");
    let mut copy = event(9);
    copy.event_id = existing[0].event_id;

    let requests = vec![
        request(tenant, vec![stream("ok-1", 0, 1)]),
        // Stale: behind the stream (a unique violation in the database).
        claimed(
            request(tenant, vec![stream("fresh-1", 0, 1), stream("taken", 1, 1)]),
            "stale",
        ),
        // Ahead of the stream.
        claimed(
            request(tenant, vec![stream("fresh-2", 0, 1), stream("taken", 5, 1)]),
            "ahead",
        ),
        request(tenant, vec![stream("ok-2", 0, 2)]),
        // The key is taken.
        claimed(request(tenant, vec![stream("fresh-3", 0, 1)]), "used"),
        // An event id that exists.
        claimed(
            request(
                tenant,
                vec![StreamAppend {
                    stream_id: "fresh-4".into(),
                    expected_version: 0,
                    events: vec![event(1), copy.clone()],
                }],
            ),
            "dup",
        ),
        // Invalid: refused before the database.
        request(tenant, vec![stream("", 0, 1)]),
        claimed(request(tenant, vec![stream("taken", 2, 1)]), "ok-3"),
    ];
    let results = store.append_batch_for_tests(requests.clone()).await;
    assert_written(&results[0], &requests[0]);
    assert_conflict(&results[1], "taken", 1);
    assert_conflict(&results[2], "taken", 5);
    assert_written(&results[3], &requests[3]);
    match &results[4] {
        Err(StoreError::IdempotencyKeyTaken { key }) => assert_eq!(key, "used"),
        other => panic!("expected IdempotencyKeyTaken, got {other:?}"),
    }
    match &results[5] {
        Err(StoreError::DuplicateEventId(id)) => assert_eq!(*id, copy.event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert!(matches!(results[6], Err(StoreError::InvalidAppend(_))));
    assert_written(&results[7], &requests[7]);

    for id in ["fresh-1", "fresh-2", "fresh-3", "fresh-4"] {
        assert!(stream_events(&store, tenant, id).await.is_empty(), "{id}");
    }
    for key in ["stale", "ahead", "dup"] {
        assert!(
            store.idempotency(tenant, key).await.unwrap().is_none(),
            "{key}"
        );
    }
    assert_eq!(
        store
            .idempotency(tenant, "used")
            .await
            .unwrap()
            .unwrap()
            .request_hash,
        "hash-used"
    );
    assert!(store.idempotency(tenant, "ok-3").await.unwrap().is_some());
    let taken = stream_events(&store, tenant, "taken").await;
    assert_eq!(taken.len(), 3);
    assert_eq!(&taken[..2], &existing[..]);
    assert_eq!(taken[2].event_id, requests[7].streams[0].events[0].event_id);
    // 2 before, then 1 + 2 + 1 written by the batch.
    let all = read_all_until(&store, tenant, 6).await;
    assert_eq!(all.len(), 6);

    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_one_batch_on_the_same_stream_see_each_other_in_order() {
    let db = support::pg::fresh_database().await;
    let store = store(&db).await;
    let tenant = TenantId::new();
    let requests = vec![
        request(tenant, vec![stream("s", 0, 2)]),
        // Expects what the first one writes.
        request(tenant, vec![stream("s", 2, 1), stream("t", 0, 1)]),
        // Stale by then.
        request(tenant, vec![stream("s", 2, 1)]),
        // Ahead of all of them.
        request(tenant, vec![stream("s", 9, 1)]),
        request(tenant, vec![stream("t", 1, 1), stream("s", 3, 1)]),
        // The same key twice: the second is refused.
        claimed(request(tenant, vec![stream("u", 0, 1)]), "twice"),
        claimed(request(tenant, vec![stream("v", 0, 1)]), "twice"),
    ];
    let mut same_id = requests[0].clone();
    same_id.streams[0].stream_id = "w".into();
    let mut requests = requests;
    // The same event id as the first request: refused.
    requests.push(same_id);
    let results = store.append_batch_for_tests(requests.clone()).await;
    assert_written(&results[0], &requests[0]);
    assert_written(&results[1], &requests[1]);
    assert_conflict(&results[2], "s", 2);
    assert_conflict(&results[3], "s", 9);
    assert_written(&results[4], &requests[4]);
    assert_written(&results[5], &requests[5]);
    match &results[6] {
        Err(StoreError::IdempotencyKeyTaken { key }) => assert_eq!(key, "twice"),
        other => panic!("expected IdempotencyKeyTaken, got {other:?}"),
    }
    assert!(matches!(results[7], Err(StoreError::DuplicateEventId(_))));
    assert!(stream_events(&store, tenant, "v").await.is_empty());
    assert!(stream_events(&store, tenant, "w").await.is_empty());
    let s = stream_events(&store, tenant, "s").await;
    assert_eq!(
        s.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(s.windows(2).all(|w| w[0].position < w[1].position));
    // Global order keeps every stream's versions in order.
    let all = read_all_until(&store, tenant, 7).await;
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    for e in &all {
        let last = versions.entry(e.stream_id.clone()).or_default();
        assert_eq!(e.version, *last + 1, "{} out of order", e.stream_id);
        *last = e.version;
    }

    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_database_refuses_fails_only_its_own_append() {
    let db = support::pg::fresh_database().await;
    let store = store(&db).await;
    let tenant = TenantId::new();
    // jsonb cannot hold U+0000: the database refuses the whole call, and
    // the batch is appended request by request.
    let mut bad = request(tenant, vec![stream("bad", 0, 1)]);
    bad.streams[0].events[0].payload = json!({ "text": "a\u{0}b" });
    let requests = vec![
        request(tenant, vec![stream("good-1", 0, 1)]),
        bad,
        request(tenant, vec![stream("good-2", 0, 1)]),
    ];
    let results = store.append_batch_for_tests(requests.clone()).await;
    assert_written(&results[0], &requests[0]);
    assert!(
        matches!(results[1], Err(StoreError::Backend(_))),
        "{:?}",
        results[1]
    );
    assert_written(&results[2], &requests[2]);
    assert!(stream_events(&store, tenant, "bad").await.is_empty());
    // Alone it fails the same way.
    let alone = store.append(requests[1].clone()).await;
    assert!(matches!(alone, Err(StoreError::Backend(_))), "{alone:?}");

    drop(store);
    db.drop_db().await;
}

/// Many writers at once through `append`: each booking is one event on its
/// own new stream and one on a shared stream, with a claim; writers that
/// lose a shared stream's version retry. Every result must be the truth:
/// exactly the successful ones are stored, in a gap-free order per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_that_conflict_inside_batches_each_get_the_right_result() {
    const WRITERS: usize = 48;
    const BOOKINGS: usize = 20;
    const SHARED: usize = 4;
    let db = support::pg::fresh_database().await;
    let store = store_with(
        &db,
        GroupCommit {
            committers: 3,
            max_batch: 16,
            queue: 64,
        },
    )
    .await;
    let tenant = TenantId::new();
    let start = Arc::new(Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let start = Arc::clone(&start);
        writers.push(tokio::spawn(async move {
            start.wait().await;
            let mut written = Vec::new();
            let mut conflicts = 0;
            let mut known = [0i64; SHARED];
            for b in 0..BOOKINGS {
                let s = (w + b) % SHARED;
                let shared = format!("shared-{s}");
                loop {
                    let req = claimed(
                        request(
                            tenant,
                            vec![
                                stream(&format!("booking-{w}-{b}"), 0, 1),
                                stream(&shared, known[s], 1),
                            ],
                        ),
                        &format!("key-{w}-{b}"),
                    );
                    match store.append(req.clone()).await {
                        Ok(recorded) => {
                            assert_written(&Ok(recorded.clone()), &req);
                            known[s] = recorded[1].version;
                            written.extend(recorded);
                            break;
                        }
                        Err(StoreError::VersionConflict {
                            stream_id,
                            expected_version,
                        }) => {
                            assert_eq!(stream_id, shared);
                            assert_eq!(expected_version, known[s]);
                            conflicts += 1;
                            let newer = store
                                .read_stream(tenant, &shared, known[s])
                                .await
                                .expect("catch up");
                            assert!(!newer.is_empty(), "a conflict with nothing newer");
                            known[s] = newer.last().unwrap().version;
                        }
                        Err(e) => panic!("writer {w}: {e:?}"),
                    }
                }
            }
            (written, conflicts)
        }));
    }
    let mut written: HashMap<Uuid, RecordedEvent> = HashMap::new();
    let mut conflicts = 0;
    for writer in writers {
        let (events, c) = writer.await.expect("writer panicked");
        conflicts += c;
        for e in events {
            assert!(written.insert(e.event_id, e).is_none());
        }
    }
    assert_eq!(written.len(), WRITERS * BOOKINGS * 2);
    let all = read_all_until(&store, tenant, written.len()).await;
    assert_eq!(all.len(), written.len());
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    for e in &all {
        assert_eq!(&written[&e.event_id], e, "stored unlike reported");
        let last = versions.entry(e.stream_id.clone()).or_default();
        assert_eq!(e.version, *last + 1, "{} out of order", e.stream_id);
        *last = e.version;
    }
    let shared_total: i64 = (0..SHARED).map(|s| versions[&format!("shared-{s}")]).sum();
    assert_eq!(shared_total as usize, WRITERS * BOOKINGS);
    let txs: HashSet<i64> = all.iter().map(|e| e.position.tx).collect();
    eprintln!(
        "{} bookings in {} transactions, {conflicts} conflicts retried",
        WRITERS * BOOKINGS,
        txs.len()
    );

    drop(store);
    db.drop_db().await;
}

/// Counts the committers' connections to the test database.
async fn committer_connections(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            &[&db, &COMMITTER_APPLICATION_NAME],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_finishes_queued_appends_then_stops_the_committers() {
    let db = support::pg::fresh_database().await;
    let admin = raw_client(&support::pg::admin_url()).await;
    let store = store_with(
        &db,
        GroupCommit {
            committers: 2,
            max_batch: 8,
            queue: 256,
        },
    )
    .await;
    let tenant = TenantId::new();
    // Let both committers connect.
    let mut warm = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        warm.push(tokio::spawn(async move {
            store
                .append(request(tenant, vec![stream(&format!("warm-{i}"), 0, 1)]))
                .await
        }));
    }
    for w in warm {
        w.await.unwrap().expect("append");
    }
    assert!(committer_connections(&admin, &db.name).await >= 1);

    let mut pending = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            store
                .append(request(tenant, vec![stream(&format!("s-{i}"), 0, 1)]))
                .await
        }));
    }
    drop(store);
    for p in pending {
        p.await.unwrap().expect("a queued append was lost");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while committer_connections(&admin, &db.name).await > 0 {
        assert!(Instant::now() < deadline, "committers still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(admin);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_connection_killed_mid_batch_fails_that_batch_and_reconnects() {
    let db = support::pg::fresh_database().await;
    let admin = raw_client(&support::pg::admin_url()).await;
    let store = store_with(
        &db,
        GroupCommit {
            committers: 1,
            max_batch: 64,
            queue: 64,
        },
    )
    .await;
    let tenant = TenantId::new();
    store
        .append(request(tenant, vec![stream("first", 0, 1)]))
        .await
        .expect("append");

    // A transaction holds version 1 of "blocked": an append of it waits on
    // it, and the appends queued behind it wait for the committer.
    let raw = raw_client(&db.url).await;
    raw.batch_execute("BEGIN").await.unwrap();
    raw.execute(
        "INSERT INTO events (tenant_id, stream_id, version, event_id, event_type, schema_version, payload, metadata) \
         VALUES ($1, 'blocked', 1, $2, 'Raw', 1, '{}', '{}')",
        &[&tenant.as_uuid(), &Uuid::now_v7()],
    )
    .await
    .unwrap();
    let mut waiting = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let id = if i == 0 {
            "blocked".to_owned()
        } else {
            format!("w-{i}")
        };
        waiting.push(tokio::spawn(async move {
            store.append(request(tenant, vec![stream(&id, 0, 1)])).await
        }));
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let killed = loop {
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = $2 AND wait_event_type = 'Lock'",
                &[&db.name, &COMMITTER_APPLICATION_NAME],
            )
            .await
            .unwrap()
            .get(0);
        if killed > 0 || Instant::now() > deadline {
            break killed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(killed, 1, "the committer was not waiting on the lock");
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut failed = 0;
        for w in waiting {
            match w.await.unwrap() {
                Ok(_) => {}
                Err(StoreError::Backend(_)) => failed += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        failed
    })
    .await
    .expect("appends hung after their connection died");
    assert!(outcome >= 1, "the waiting append did not fail");
    raw.batch_execute("ROLLBACK").await.unwrap();

    // The committer reconnects.
    store
        .append(request(tenant, vec![stream("after", 0, 1)]))
        .await
        .expect("append after reconnecting");

    drop(store);
    drop(raw);
    drop(admin);
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// Benchmark

/// Appends per second and latency of a booking-shaped append (one event on
/// the writer's day stream, one on a new appointment stream, an idempotency
/// claim) at several concurrencies. Not a test: run it in release against a
/// durable cluster whose databases may be created and dropped:
///
/// ```text
/// BUKTOR_BENCH_ADMIN_URL=postgres://postgres@127.0.0.1:54330/postgres \
/// BUKTOR_BENCH_CONCURRENCY=1,8,32,64 BUKTOR_BENCH_SECS=10 BUKTOR_BENCH_COMMITTERS=2 \
///   cargo test --release --test it group_commit_benchmark -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: needs BUKTOR_BENCH_ADMIN_URL"]
async fn group_commit_benchmark() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let admin_url = std::env::var("BUKTOR_BENCH_ADMIN_URL").expect("BUKTOR_BENCH_ADMIN_URL");
    let secs: f64 = env("BUKTOR_BENCH_SECS", "10").parse().unwrap();
    let committers: usize = env("BUKTOR_BENCH_COMMITTERS", "2").parse().unwrap();
    let max_batch: usize = env("BUKTOR_BENCH_MAX_BATCH", "64").parse().unwrap();
    let name = env("BUKTOR_BENCH_DB", "gc_bench");
    let concurrencies: Vec<usize> = env("BUKTOR_BENCH_CONCURRENCY", "1,8,32,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    for concurrency in concurrencies {
        let admin = raw_client(&admin_url).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        let url = support::pg::with_database(&admin_url, &name);
        let group = GroupCommit {
            committers,
            max_batch,
            ..GroupCommit::default()
        };
        let store = PostgresStore::connect_with(&url, 64, group).await.unwrap();
        store.migrate().await.unwrap();
        let (count, mut latencies, elapsed) = run_bench(&store, concurrency, secs).await;
        latencies.sort_unstable();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let client = raw_client(&url).await;
        let txs: i64 = client
            .query_one("SELECT count(DISTINCT tx_id) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        let events: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        println!(
            "BENCH committers={committers} max_batch={max_batch} concurrency={concurrency} appends={count} \
             per_s={:.0} p50_ms={:.2} p99_ms={:.2} events={events} appends_per_tx={:.1}",
            count as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            (events as f64 / 2.0) / txs.max(1) as f64,
        );
        drop(client);
        drop(store);
        tokio::time::sleep(Duration::from_millis(200)).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .unwrap();
    }
}

async fn run_bench(
    store: &PostgresStore,
    concurrency: usize,
    secs: f64,
) -> (usize, Vec<Duration>, Duration) {
    let tenant = TenantId::new();
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(secs);
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let day = format!("calendar-{w}-2031-05-06");
            let mut version = 0i64;
            let mut latencies = Vec::new();
            let mut i = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let appointment = Uuid::now_v7();
                let booking = |kind: &str| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: kind.into(),
                    schema_version: 1,
                    payload: json!({
                        "appointment_id": appointment,
                        "practitioner_id": format!("practitioner-{w}"),
                        "service_id": "0190c8a4-7a5e-7b4c-9d2e-0123456789ab",
                        "start": "2031-05-06T09:15:00Z",
                        "end": "2031-05-06T09:30:00Z",
                        "patient": { "system": "urn:oid:1.2.276.0.76.4.8", "value": format!("P{i:08}") },
                        "note": "Kontrolle nach OP, Tür 3",
                    }),
                    metadata: json!({
                        "actor": { "id": "his-gateway", "role": "his_system" },
                        "source": "graphql",
                        "correlation_id": Uuid::now_v7(),
                        "causation_id": Uuid::now_v7(),
                    }),
                };
                let req = AppendRequest {
                    tenant,
                    streams: vec![
                        StreamAppend {
                            stream_id: format!("appointment-{appointment}"),
                            expected_version: 0,
                            events: vec![booking("AppointmentBooked")],
                        },
                        StreamAppend {
                            stream_id: day.clone(),
                            expected_version: version,
                            events: vec![booking("SlotTaken")],
                        },
                    ],
                    idempotency: Some(IdempotencyClaim {
                        key: format!("book-{w}-{i}"),
                        request_hash: format!("{:064x}", i),
                        response: json!({ "id": appointment, "events": 2 }),
                    }),
                };
                store.append(req).await.expect("append");
                version += 1;
                i += 1;
                if now >= begin {
                    latencies.push(now.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    (latencies.len(), latencies, measure)
}
