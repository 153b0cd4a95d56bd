//! The event store contract, held against both backends.
//!
//! Each case is a generic async function run twice, by `postgres::<case>` and
//! `sqlite::<case>` (see the `conformance!` invocation). Cases that only make
//! sense on one backend (the deterministic global-order trap, migrations
//! under concurrency, reopening a file) follow at the end.
//!
//! The PostgreSQL tests of one run share a cluster, and `read_all` waits for
//! the cluster's oldest running transaction, whatever its database: a test
//! that expects events from `read_all` therefore polls for them
//! ([`read_all_until`]) instead of asserting on one read.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buktor::store::postgres::PostgresStore;
use buktor::store::sqlite::SqliteStore;
use buktor::store::{
    ApiKeyRecord, AppendRequest, EventStore, IdempotencyClaim, NewEvent, Position, RecordedEvent,
    Store, StoreError, StoreResult, StreamAppend, TenantRecord,
};
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::support;

/// What the generic cases need beyond the store traits.
#[async_trait]
trait Backend: Store + Clone {
    /// One SQL statement straight on the database, past the store's API.
    async fn raw(&self, sql: &str) -> StoreResult<u64>;
}

#[async_trait]
impl Backend for PostgresStore {
    async fn raw(&self, sql: &str) -> StoreResult<u64> {
        self.execute_raw_for_tests(sql).await
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn raw(&self, sql: &str) -> StoreResult<u64> {
        self.execute_raw_for_tests(sql).await
    }
}

/// Pool large enough for the concurrent-writers case to run truly concurrently.
const PG_POOL_SIZE: usize = 24;

async fn postgres_store(db: &support::pg::TestDb) -> PostgresStore {
    let store = PostgresStore::connect(&db.url, PG_POOL_SIZE)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

crate::support::for_both_stores!(
    appended_events_read_back_with_versions_positions_and_content,
    read_all_pages_through_the_global_order,
    a_stale_expected_version_conflicts_and_writes_nothing,
    an_expected_version_ahead_of_the_stream_conflicts_and_writes_nothing,
    a_conflict_on_one_stream_writes_none_of_the_streams,
    an_idempotency_claim_is_stored_with_the_events_and_taken_only_once,
    a_duplicate_event_id_is_refused_and_writes_nothing,
    invalid_appends_are_refused_before_writing,
    read_streams_catches_up_several_streams_at_once,
    stream_ids_lists_a_tenants_streams_by_prefix_in_byte_order,
    stored_events_cannot_be_updated_or_deleted,
    a_tenant_sees_nothing_of_another_tenants_events,
    the_directory_keeps_tenants_and_api_keys,
    a_follower_sees_every_event_of_concurrent_writers_once_and_in_order,
    an_event_stored_in_an_old_schema_version_is_read_in_the_current_one,
    revocations_keep_the_first_stay_in_their_hospital_and_are_announced,
);

/// An `AppointmentBooked` written by an older server (schema version 1, the
/// patient as two flat fields) comes back from the store unchanged and is
/// upcast to the current shape when decoded.
async fn an_event_stored_in_an_old_schema_version_is_read_in_the_current_one<S: Backend>(
    store: &S,
) {
    use buktor_domain::appointment::AppointmentEvent;
    let tenant = TenantId::new();
    let v1_payload = json!({
        "appointment_id": Uuid::now_v7(),
        "practitioner_id": Uuid::now_v7(),
        "service_id": Uuid::now_v7(),
        "start": "2026-12-01T08:00:00Z",
        "end": "2026-12-01T08:30:00Z",
        "calendar_day": "2026-12-01",
        "patient_id": "P-77",
        "patient_name": "Ada Jansen",
        "note": null
    });
    let mut old = event("AppointmentBooked", 1);
    old.schema_version = 1;
    old.payload = v1_payload.clone();
    append_ok(
        store,
        request(tenant, vec![stream("appointment-old", 0, vec![old])]),
    )
    .await;

    let stored = stream_events(store, tenant, "appointment-old").await;
    assert_eq!(
        stored[0].schema_version, 1,
        "the store keeps what was written"
    );
    assert_eq!(stored[0].payload, v1_payload);
    let decoded: AppointmentEvent = buktor::app::decode_event(&stored[0]).expect("upcast");
    match decoded {
        AppointmentEvent::AppointmentBooked { patient, .. } => {
            assert_eq!(patient.his_patient_id.as_str(), "P-77");
            assert_eq!(patient.name.expect("name").as_str(), "Ada Jansen");
        }
        other => panic!("decoded as {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn event(event_type: &str, n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 2,
        payload: json!({
            "n": n,
            "text": "Zürich, Tür 3 ✓ \"quoted\"",
            "nested": { "list": [1, "two", null, 3.5, true], "empty": {} },
        }),
        metadata: json!({
            "actor": { "id": "user-1", "role": "staff" },
            "source": "admin",
            "correlation_id": Uuid::now_v7(),
        }),
    }
}

fn events(event_type: &str, count: i64) -> Vec<NewEvent> {
    (1..=count).map(|n| event(event_type, n)).collect()
}

fn stream(stream_id: &str, expected_version: i64, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream_id.to_owned(),
        expected_version,
        events,
    }
}

fn request(tenant: TenantId, streams: Vec<StreamAppend>) -> AppendRequest {
    AppendRequest {
        tenant,
        streams,
        idempotency: None,
    }
}

fn claim(key: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.to_owned(),
        request_hash: format!("hash-of-{key}"),
        response: json!({ "status": 201, "body": { "key": key } }),
    }
}

async fn append_ok<S: Backend>(store: &S, request: AppendRequest) -> Vec<RecordedEvent> {
    store.append(request).await.expect("append")
}

fn assert_conflict(result: StoreResult<Vec<RecordedEvent>>, stream_id: &str, expected: i64) {
    match result {
        Err(StoreError::VersionConflict {
            stream_id: s,
            expected_version,
        }) => {
            assert_eq!(s, stream_id, "conflict reported on the wrong stream");
            assert_eq!(expected_version, expected);
        }
        other => panic!("expected a version conflict on {stream_id}@{expected}, got {other:?}"),
    }
}

/// Reads the tenant's global order from `after` until `count` events have
/// come (or 20 s pass), in pages of `page`.
async fn read_all_until<S: Backend>(
    store: &S,
    tenant: TenantId,
    after: Position,
    count: usize,
    page: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut position = after;
    while seen.len() < count {
        let batch = store
            .read_all(tenant, position, page)
            .await
            .expect("read_all");
        assert!(batch.len() <= page, "read_all returned more than its limit");
        if batch.is_empty() {
            assert!(
                Instant::now() < deadline,
                "read_all returned {} of {count} events after {after} within 20 s",
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
    seen
}

async fn stream_events<S: Backend>(
    store: &S,
    tenant: TenantId,
    stream_id: &str,
) -> Vec<RecordedEvent> {
    store
        .read_stream(tenant, stream_id, 0)
        .await
        .expect("read_stream")
}

/// Everything the tenant has, once nothing more is pending.
async fn settled_read_all<S: Backend>(
    store: &S,
    tenant: TenantId,
    expected: usize,
) -> Vec<RecordedEvent> {
    let all = read_all_until(store, tenant, Position::START, expected, 1000).await;
    let more = store
        .read_all(
            tenant,
            all.last().map_or(Position::START, |e| e.position),
            1000,
        )
        .await
        .expect("read_all");
    assert!(
        more.is_empty(),
        "read_all has events that should not exist: {more:?}"
    );
    all
}

// ---------------------------------------------------------------------------
// Cases for both backends

async fn appended_events_read_back_with_versions_positions_and_content<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let first = events("SlotBooked", 3);
    let recorded = append_ok(
        store,
        request(tenant, vec![stream("slot-1", 0, first.clone())]),
    )
    .await;

    assert_eq!(recorded.len(), 3);
    for (i, (r, e)) in recorded.iter().zip(&first).enumerate() {
        assert_eq!(r.tenant, tenant);
        assert_eq!(r.stream_id, "slot-1");
        assert_eq!(r.version, i as i64 + 1);
        assert_eq!(r.event_id, e.event_id);
        assert_eq!(r.event_type, e.event_type);
        assert_eq!(r.schema_version, e.schema_version);
        assert_eq!(r.payload, e.payload);
        assert_eq!(r.metadata, e.metadata);
        let age = Utc::now() - r.recorded_at;
        assert!(
            age.num_seconds().abs() < 60,
            "recorded_at is not now: {}",
            r.recorded_at
        );
    }
    assert!(recorded.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(stream_events(store, tenant, "slot-1").await, recorded);

    let second = events("SlotReleased", 2);
    let more = append_ok(store, request(tenant, vec![stream("slot-1", 3, second)])).await;
    assert_eq!(more.iter().map(|e| e.version).collect::<Vec<_>>(), [4, 5]);
    assert!(more[0].position > recorded[2].position);
    assert_eq!(store.read_stream(tenant, "slot-1", 3).await.unwrap(), more);
    assert!(store
        .read_stream(tenant, "slot-1", 5)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_stream(tenant, "no-such-stream", 0)
        .await
        .unwrap()
        .is_empty());

    let everything: Vec<RecordedEvent> = recorded.iter().chain(&more).cloned().collect();
    assert_eq!(settled_read_all(store, tenant, 5).await, everything);
    assert_eq!(
        read_all_until(store, tenant, recorded[2].position, 2, 10).await,
        more
    );
    store.ping().await.expect("ping");
}

async fn read_all_pages_through_the_global_order<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let mut expected = Vec::new();
    for i in 0..5 {
        let id = format!("stream-{}", i % 2);
        let version = expected
            .iter()
            .filter(|e: &&RecordedEvent| e.stream_id == id)
            .count() as i64;
        expected.extend(
            append_ok(
                store,
                request(tenant, vec![stream(&id, version, events("E", 2))]),
            )
            .await,
        );
    }
    assert!(store
        .read_all(tenant, Position::START, 0)
        .await
        .unwrap()
        .is_empty());
    let paged = read_all_until(store, tenant, Position::START, 10, 3).await;
    assert_eq!(paged, expected);
    let last = paged.last().unwrap().position;
    assert!(store.read_all(tenant, last, 3).await.unwrap().is_empty());
}

async fn a_stale_expected_version_conflicts_and_writes_nothing<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let written = append_ok(store, request(tenant, vec![stream("s", 0, events("E", 2))])).await;

    for stale in [0, 1] {
        let result = store
            .append(request(tenant, vec![stream("s", stale, events("Late", 1))]))
            .await;
        assert_conflict(result, "s", stale);
    }
    assert_eq!(stream_events(store, tenant, "s").await, written);
    assert_eq!(settled_read_all(store, tenant, 2).await, written);
}

async fn an_expected_version_ahead_of_the_stream_conflicts_and_writes_nothing<S: Backend>(
    store: &S,
) {
    let tenant = TenantId::new();
    let written = append_ok(store, request(tenant, vec![stream("s", 0, events("E", 2))])).await;

    let result = store
        .append(request(tenant, vec![stream("s", 3, events("Ahead", 1))]))
        .await;
    assert_conflict(result, "s", 3);
    let result = store
        .append(request(tenant, vec![stream("new", 1, events("Ahead", 1))]))
        .await;
    assert_conflict(result, "new", 1);

    assert_eq!(stream_events(store, tenant, "s").await, written);
    assert!(stream_events(store, tenant, "new").await.is_empty());
    assert_eq!(settled_read_all(store, tenant, 2).await, written);
}

async fn a_conflict_on_one_stream_writes_none_of_the_streams<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let existing = append_ok(
        store,
        request(tenant, vec![stream("taken", 0, events("E", 1))]),
    )
    .await;

    // Behind, ahead, and the conflicting stream first or last.
    let attempts = [
        (
            vec![
                stream("fresh", 0, events("A", 2)),
                stream("taken", 0, events("B", 1)),
            ],
            0,
        ),
        (
            vec![
                stream("taken", 0, events("B", 1)),
                stream("fresh", 0, events("A", 2)),
            ],
            0,
        ),
        (
            vec![
                stream("fresh", 0, events("A", 2)),
                stream("taken", 4, events("B", 1)),
            ],
            4,
        ),
        (
            vec![
                stream("taken", 2, events("B", 1)),
                stream("fresh", 0, events("A", 1)),
            ],
            2,
        ),
    ];
    for (i, (streams, expected)) in attempts.into_iter().enumerate() {
        let mut req = request(tenant, streams);
        req.idempotency = Some(claim(&format!("key-{i}")));
        assert_conflict(store.append(req).await, "taken", expected);
        assert!(
            store
                .idempotency(tenant, &format!("key-{i}"))
                .await
                .unwrap()
                .is_none(),
            "the idempotency claim of a failed append was stored"
        );
    }
    assert!(stream_events(store, tenant, "fresh").await.is_empty());
    assert_eq!(stream_events(store, tenant, "taken").await, existing);
    assert_eq!(settled_read_all(store, tenant, 1).await, existing);

    // Both streams at the right versions: both written, atomically.
    let both = append_ok(
        store,
        request(
            tenant,
            vec![
                stream("fresh", 0, events("A", 2)),
                stream("taken", 1, events("B", 1)),
            ],
        ),
    )
    .await;
    assert_eq!(
        both.iter()
            .map(|e| (e.stream_id.as_str(), e.version))
            .collect::<Vec<_>>(),
        [("fresh", 1), ("fresh", 2), ("taken", 2)]
    );
    assert!(both.windows(2).all(|w| w[0].position < w[1].position));
}

async fn an_idempotency_claim_is_stored_with_the_events_and_taken_only_once<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    assert!(store.idempotency(tenant, "book-1").await.unwrap().is_none());

    let mut first = request(tenant, vec![stream("a", 0, events("Booked", 1))]);
    first.idempotency = Some(claim("book-1"));
    let written = append_ok(store, first).await;
    let stored = store
        .idempotency(tenant, "book-1")
        .await
        .unwrap()
        .expect("claim stored");
    assert_eq!(stored.request_hash, "hash-of-book-1");
    assert_eq!(stored.response, claim("book-1").response);

    let mut again = request(tenant, vec![stream("b", 0, events("Booked", 1))]);
    again.idempotency = Some(IdempotencyClaim {
        response: json!({ "other": true }),
        ..claim("book-1")
    });
    match store.append(again).await {
        Err(StoreError::IdempotencyKeyTaken { key }) => assert_eq!(key, "book-1"),
        other => panic!("expected IdempotencyKeyTaken, got {other:?}"),
    }
    assert!(stream_events(store, tenant, "b").await.is_empty());
    assert_eq!(
        store
            .idempotency(tenant, "book-1")
            .await
            .unwrap()
            .unwrap()
            .response,
        claim("book-1").response
    );
    assert_eq!(settled_read_all(store, tenant, 1).await, written);

    // Keys belong to a tenant.
    let other = TenantId::new();
    let mut theirs = request(other, vec![stream("a", 0, events("Booked", 1))]);
    theirs.idempotency = Some(claim("book-1"));
    append_ok(store, theirs).await;

    // A claim alone (a command that changed nothing) is a valid append.
    let alone = AppendRequest {
        tenant,
        streams: Vec::new(),
        idempotency: Some(claim("no-op")),
    };
    assert!(append_ok(store, alone).await.is_empty());
    assert!(store.idempotency(tenant, "no-op").await.unwrap().is_some());
}

async fn a_duplicate_event_id_is_refused_and_writes_nothing<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let written = append_ok(store, request(tenant, vec![stream("a", 0, events("E", 1))])).await;
    let mut copy = event("E", 2);
    copy.event_id = written[0].event_id;

    let mut req = request(tenant, vec![stream("b", 0, vec![event("E", 1), copy])]);
    req.idempotency = Some(claim("dup"));
    match store.append(req).await {
        Err(StoreError::DuplicateEventId(id)) => assert_eq!(id, written[0].event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert!(stream_events(store, tenant, "b").await.is_empty());
    assert!(store.idempotency(tenant, "dup").await.unwrap().is_none());
    assert_eq!(settled_read_all(store, tenant, 1).await, written);

    // Event ids are unique per tenant, not across tenants.
    let mut elsewhere = event("E", 1);
    elsewhere.event_id = written[0].event_id;
    append_ok(
        store,
        request(TenantId::new(), vec![stream("a", 0, vec![elsewhere])]),
    )
    .await;
}

async fn invalid_appends_are_refused_before_writing<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let invalid = [
        request(tenant, Vec::new()),
        request(tenant, vec![stream("a", 0, Vec::new())]),
        request(tenant, vec![stream("", 0, events("E", 1))]),
        request(tenant, vec![stream("a", -1, events("E", 1))]),
        request(
            tenant,
            vec![
                stream("a", 0, events("E", 1)),
                stream("a", 1, events("E", 1)),
            ],
        ),
        AppendRequest {
            tenant,
            streams: vec![stream("a", 0, events("E", 1))],
            idempotency: Some(claim("")),
        },
    ];
    for req in invalid {
        let described = format!("{req:?}");
        match store.append(req).await {
            Err(StoreError::InvalidAppend(_)) => {}
            other => panic!("expected InvalidAppend for {described}, got {other:?}"),
        }
    }
    assert!(stream_events(store, tenant, "a").await.is_empty());
}

async fn read_streams_catches_up_several_streams_at_once<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let a = append_ok(store, request(tenant, vec![stream("a", 0, events("A", 3))])).await;
    let b = append_ok(store, request(tenant, vec![stream("b", 0, events("B", 2))])).await;

    let caught_up = store
        .read_streams(
            tenant,
            &[
                ("b".into(), 0),
                ("a".into(), 1),
                ("missing".into(), 0),
                ("a-2".into(), 0),
            ],
        )
        .await
        .unwrap();
    let expected: Vec<RecordedEvent> = b.iter().chain(&a[1..]).cloned().collect();
    assert_eq!(caught_up, expected);

    assert!(store.read_streams(tenant, &[]).await.unwrap().is_empty());
    assert!(store
        .read_streams(tenant, &[("a".into(), 3), ("b".into(), 2)])
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_streams(TenantId::new(), &[("a".into(), 0)])
        .await
        .unwrap()
        .is_empty());
}

async fn stream_ids_lists_a_tenants_streams_by_prefix_in_byte_order<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let ids = [
        "slot-b",
        "slot-a",
        "slot-a-2",
        "slot",
        "slotted",
        "appointment-1",
        "Slot-Z",
        "a%b",
        "a_c",
        "axb",
        "ärzte-1",
        "slot-é",
    ];
    for id in ids {
        append_ok(store, request(tenant, vec![stream(id, 0, events("E", 2))])).await;
    }
    append_ok(
        store,
        request(
            TenantId::new(),
            vec![stream("slot-other", 0, events("E", 1))],
        ),
    )
    .await;

    let mut sorted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    sorted.sort(); // byte order of UTF-8 = code point order
    assert_eq!(store.stream_ids(tenant, "").await.unwrap(), sorted);
    assert_eq!(
        store.stream_ids(tenant, "slot-").await.unwrap(),
        ["slot-a", "slot-a-2", "slot-b", "slot-é"]
    );
    assert_eq!(
        store.stream_ids(tenant, "slot").await.unwrap(),
        ["slot", "slot-a", "slot-a-2", "slot-b", "slot-é", "slotted"]
    );
    // LIKE wildcards are plain characters here.
    assert_eq!(store.stream_ids(tenant, "a%").await.unwrap(), ["a%b"]);
    assert_eq!(store.stream_ids(tenant, "a_").await.unwrap(), ["a_c"]);
    assert_eq!(store.stream_ids(tenant, "ä").await.unwrap(), ["ärzte-1"]);
    assert!(store.stream_ids(tenant, "zzz").await.unwrap().is_empty());
    assert!(store
        .stream_ids(tenant, "slot-a-2-")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .stream_ids(TenantId::new(), "")
        .await
        .unwrap()
        .is_empty());
}

async fn stored_events_cannot_be_updated_or_deleted<S: Backend>(store: &S) {
    let tenant = TenantId::new();
    let written = append_ok(store, request(tenant, vec![stream("s", 0, events("E", 2))])).await;

    for sql in [
        "UPDATE events SET event_type = 'Tampered'",
        "UPDATE events SET payload = '{}' WHERE version = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE version = 2",
    ] {
        match store.raw(sql).await {
            Err(StoreError::Backend(e)) => {
                let chain = error_chain(&*e);
                assert!(
                    chain.contains("append-only"),
                    "{sql} failed for another reason: {chain}"
                );
            }
            other => panic!("{sql} was not refused: {other:?}"),
        }
    }
    assert_eq!(stream_events(store, tenant, "s").await, written);
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn a_tenant_sees_nothing_of_another_tenants_events<S: Backend>(store: &S) {
    let a = TenantId::new();
    let b = TenantId::new();
    let mut req = request(a, vec![stream("shared-name", 0, events("E", 3))]);
    req.idempotency = Some(claim("k"));
    let written_a = append_ok(store, req).await;
    assert_eq!(settled_read_all(store, a, 3).await, written_a);

    assert!(store
        .read_all(b, Position::START, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(stream_events(store, b, "shared-name").await.is_empty());
    assert!(store.stream_ids(b, "").await.unwrap().is_empty());
    assert!(store.idempotency(b, "k").await.unwrap().is_none());

    // B's stream of the same name is its own, starting at version 1.
    let written_b = append_ok(
        store,
        request(b, vec![stream("shared-name", 0, events("E", 1))]),
    )
    .await;
    assert_eq!(written_b[0].version, 1);
    assert_eq!(settled_read_all(store, b, 1).await, written_b);
    assert_eq!(stream_events(store, a, "shared-name").await, written_a);
    assert_eq!(settled_read_all(store, a, 3).await, written_a);
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

async fn the_directory_keeps_tenants_and_api_keys<S: Backend>(store: &S) {
    let tenant = TenantRecord {
        id: TenantId::new(),
        name: "Klinikum Nord".into(),
        time_zone: chrono_tz::Europe::Berlin,
        created_at: micros(Utc::now()),
    };
    let other = TenantRecord {
        id: TenantId::new(),
        name: "St. Mary's".into(),
        time_zone: chrono_tz::America::New_York,
        created_at: micros(Utc::now()),
    };
    assert!(store.tenant(tenant.id).await.unwrap().is_none());
    store.create_tenant(&tenant).await.unwrap();
    store.create_tenant(&other).await.unwrap();
    assert_eq!(store.tenant(tenant.id).await.unwrap(), Some(tenant.clone()));

    let renamed = TenantRecord {
        name: "Someone else".into(),
        ..tenant.clone()
    };
    match store.create_tenant(&renamed).await {
        Err(StoreError::TenantExists(id)) => assert_eq!(id, tenant.id),
        other => panic!("expected TenantExists, got {other:?}"),
    }
    assert_eq!(store.tenant(tenant.id).await.unwrap(), Some(tenant.clone()));
    let all = store.tenants().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&tenant) && all.contains(&other));

    let active = ApiKeyRecord {
        id: Uuid::now_v7(),
        tenant: tenant.id,
        name: "HIS gateway".into(),
        role: Role::HisSystem,
        secret_hash: vec![0, 1, 2, 254, 255],
        created_at: micros(Utc::now()),
        revoked_at: None,
    };
    let revoked = ApiKeyRecord {
        id: Uuid::now_v7(),
        name: "old desk".into(),
        role: Role::Staff,
        secret_hash: vec![7; 32],
        revoked_at: Some(micros(Utc::now())),
        ..active.clone()
    };
    store.create_api_key(&active).await.unwrap();
    store.create_api_key(&revoked).await.unwrap();
    assert_eq!(
        store.api_key(active.id).await.unwrap(),
        Some(active.clone())
    );
    assert_eq!(store.api_key(revoked.id).await.unwrap(), Some(revoked));
    assert!(store.api_key(Uuid::now_v7()).await.unwrap().is_none());
    assert!(
        store.create_api_key(&active).await.is_err(),
        "a second key with the same id was stored"
    );
    let orphan = ApiKeyRecord {
        id: Uuid::now_v7(),
        tenant: TenantId::new(),
        ..active.clone()
    };
    assert!(
        store.create_api_key(&orphan).await.is_err(),
        "a key of an unknown tenant was stored"
    );
}

/// The global-order guarantee under load: writers append concurrently (to
/// their own streams and to shared ones, retrying on conflicts) while a
/// follower reads the global order from its last position. The follower
/// must see exactly the committed events, each once, positions strictly
/// increasing, and every stream's versions in order without gaps.
async fn a_follower_sees_every_event_of_concurrent_writers_once_and_in_order<S: Backend>(
    store: &S,
) {
    const WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 100; // 2 events each: 200 per writer
    const SHARED_STREAMS: usize = 3;
    let tenant = TenantId::new();
    let other_tenant = TenantId::new();

    let (done_tx, done_rx) = watch::channel(None::<usize>);
    let follower = {
        let store = store.clone();
        tokio::spawn(async move { follow(store, tenant, done_rx).await })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let own = format!("writer-{w}");
            let mut own_version = 0;
            let mut shared_versions = [0i64; SHARED_STREAMS];
            let mut committed = Vec::new();
            let mut conflicts = 0;
            for i in 0..APPENDS_PER_WRITER {
                if (i + w) % 3 == 0 {
                    // One event on the own stream and one on a shared stream,
                    // atomically; on conflict, catch up and try again.
                    let s = (i + w) % SHARED_STREAMS;
                    let shared = format!("shared-{s}");
                    loop {
                        let req = request(
                            tenant,
                            vec![
                                stream(&own, own_version, events("Own", 1)),
                                stream(&shared, shared_versions[s], events("Shared", 1)),
                            ],
                        );
                        match store.append(req).await {
                            Ok(recorded) => {
                                own_version += 1;
                                shared_versions[s] = recorded[1].version;
                                committed.extend(recorded);
                                break;
                            }
                            Err(StoreError::VersionConflict { stream_id, .. }) => {
                                assert_eq!(stream_id, shared, "only shared streams conflict");
                                conflicts += 1;
                                let newer = store
                                    .read_stream(tenant, &shared, shared_versions[s])
                                    .await
                                    .expect("catch up");
                                shared_versions[s] =
                                    newer.last().map_or(shared_versions[s], |e| e.version);
                            }
                            Err(e) => panic!("writer {w}: {e:?}"),
                        }
                    }
                } else {
                    let recorded = store
                        .append(request(
                            tenant,
                            vec![stream(&own, own_version, events("Own", 2))],
                        ))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: {e:?}"));
                    own_version += 2;
                    committed.extend(recorded);
                }
            }
            (committed, conflicts)
        }));
    }
    // Another tenant writing at the same time must not show up.
    let noise = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append(request(
                        other_tenant,
                        vec![stream("noise", i, events("Noise", 1))],
                    ))
                    .await
                    .expect("other tenant's append");
            }
        })
    };

    let mut committed: HashMap<Uuid, RecordedEvent> = HashMap::new();
    let mut conflicts = 0;
    for writer in writers {
        let (events, c) = writer.await.expect("writer panicked");
        conflicts += c;
        for e in events {
            assert!(committed.insert(e.event_id, e).is_none());
        }
    }
    noise.await.expect("noise writer panicked");
    assert_eq!(committed.len(), WRITERS * APPENDS_PER_WRITER * 2);
    done_tx.send(Some(committed.len())).expect("follower alive");

    let seen = follower.await.expect("follower panicked");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let committed_ids: HashSet<Uuid> = committed.keys().copied().collect();
    let missed: Vec<_> = committed_ids.difference(&seen_ids).collect();
    let extra: Vec<_> = seen_ids.difference(&committed_ids).collect();
    assert!(
        missed.is_empty(),
        "the follower missed {} committed events",
        missed.len()
    );
    assert!(
        extra.is_empty(),
        "the follower saw {} events nobody committed",
        extra.len()
    );
    for e in &seen {
        assert_eq!(
            e, &committed[&e.event_id],
            "the follower saw an event unlike the one appended"
        );
    }
    eprintln!(
        "{} events by {WRITERS} writers ({conflicts} conflicts retried) followed in order",
        seen.len()
    );
}

/// A follower: reads the global order from its last position until it has
/// seen as many events as the writers report committed (or 60 s pass), then
/// checks once more that nothing further comes.
async fn follow<S: Backend>(
    store: S,
    tenant: TenantId,
    mut done: watch::Receiver<Option<usize>>,
) -> Vec<RecordedEvent> {
    let deadline_after_done = Duration::from_secs(60);
    let mut done_at: Option<(Instant, usize)> = None;
    let mut position = Position::START;
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut ids = HashSet::new();
    let mut stream_versions: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        if done_at.is_none() {
            if let Some(total) = *done.borrow_and_update() {
                done_at = Some((Instant::now(), total));
            }
        }
        let batch = store
            .read_all(tenant, position, 64)
            .await
            .expect("follower read_all");
        let empty = batch.is_empty();
        for e in batch {
            assert!(
                e.position > position,
                "positions went from {position} to {} (not strictly increasing)",
                e.position
            );
            assert_eq!(e.tenant, tenant, "another tenant's event");
            assert!(ids.insert(e.event_id), "event {} seen twice", e.event_id);
            let last = stream_versions.entry(e.stream_id.clone()).or_insert(0);
            assert_eq!(
                e.version,
                *last + 1,
                "stream {} went from version {} to {} in global order",
                e.stream_id,
                last,
                e.version
            );
            *last = e.version;
            position = e.position;
            seen.push(e);
        }
        if let Some((since, total)) = done_at {
            if seen.len() >= total {
                // Nothing may follow the last committed event.
                let more = store
                    .read_all(tenant, position, 64)
                    .await
                    .expect("read_all");
                assert!(
                    more.is_empty(),
                    "events past the last committed one: {more:?}"
                );
                return seen;
            }
            assert!(
                since.elapsed() < deadline_after_done,
                "follower saw {} of {total} committed events; the rest never came",
                seen.len()
            );
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL only

mod postgres_only {
    use super::*;
    use tokio_postgres::NoTls;

    async fn raw_client(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("raw connect");
        tokio::spawn(connection);
        client
    }

    const RAW_INSERT: &str = "INSERT INTO events \
        (tenant_id, stream_id, version, event_id, event_type, schema_version, payload, metadata) \
        VALUES ($1, $2, 1, $3, 'Raw', 1, '{}', '{}') RETURNING seq";

    /// The trap itself: a transaction takes seq N and stays open while
    /// another commits with seq N+1. A follower must not be handed N+1
    /// before N commits, and then must get both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_transaction_holds_back_later_events_until_it_commits() {
        let db = support::pg::fresh_database().await;
        let store = postgres_store(&db).await;
        let tenant = TenantId::new();

        let raw = raw_client(&db.url).await;
        raw.batch_execute("BEGIN").await.unwrap();
        let raw_id = Uuid::now_v7();
        let raw_seq: i64 = raw
            .query_one(RAW_INSERT, &[&tenant.as_uuid(), &"early", &raw_id])
            .await
            .unwrap()
            .get(0);

        let later = append_ok(
            &store,
            request(tenant, vec![stream("late", 0, events("E", 1))]),
        )
        .await;
        assert!(
            later[0].position.seq > raw_seq,
            "the store's event took a later seq"
        );
        assert_eq!(
            stream_events(&store, tenant, "late").await,
            later,
            "committed"
        );

        // The later event is committed, but handing it out now would let a
        // follower resume past `early`, which is about to commit.
        let mut follower = Position::START;
        for _ in 0..3 {
            let batch = store.read_all(tenant, follower, 100).await.unwrap();
            assert!(
                batch.is_empty(),
                "read_all ran past an open transaction: {batch:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        raw.batch_execute("COMMIT").await.unwrap();
        let both = read_all_until(&store, tenant, follower, 2, 100).await;
        assert_eq!(both[0].event_id, raw_id);
        assert_eq!(both[0].position.seq, raw_seq);
        assert_eq!(both[1], later[0]);
        follower = both[1].position;
        assert!(store
            .read_all(tenant, follower, 100)
            .await
            .unwrap()
            .is_empty());

        drop(store);
        db.drop_db().await;
    }

    /// The other way round: the older transaction takes its seq after the
    /// newer one. Ordering by seq alone would put it after an event a
    /// follower has already passed; ordering by (tx, seq) does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_transaction_with_a_later_seq_is_not_skipped() {
        let db = support::pg::fresh_database().await;
        let store = postgres_store(&db).await;
        let tenant = TenantId::new();

        let raw = raw_client(&db.url).await;
        raw.batch_execute("BEGIN").await.unwrap();
        raw.query_one("SELECT pg_current_xact_id()", &[])
            .await
            .unwrap();

        let newer = append_ok(
            &store,
            request(tenant, vec![stream("newer", 0, events("E", 1))]),
        )
        .await;
        let raw_id = Uuid::now_v7();
        let raw_seq: i64 = raw
            .query_one(RAW_INSERT, &[&tenant.as_uuid(), &"older", &raw_id])
            .await
            .unwrap()
            .get(0);
        assert!(raw_seq > newer[0].position.seq);
        assert!(store
            .read_all(tenant, Position::START, 100)
            .await
            .unwrap()
            .is_empty());

        raw.batch_execute("COMMIT").await.unwrap();
        let both = read_all_until(&store, tenant, Position::START, 2, 100).await;
        assert_eq!(
            both[0].event_id, raw_id,
            "the older transaction comes first"
        );
        assert!(both[0].position.tx < both[1].position.tx);
        assert_eq!(both[1], newer[0]);

        drop(store);
        db.drop_db().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_cannot_be_truncated() {
        let db = support::pg::fresh_database().await;
        let store = postgres_store(&db).await;
        let tenant = TenantId::new();
        let written = append_ok(
            &store,
            request(tenant, vec![stream("s", 0, events("E", 1))]),
        )
        .await;
        let refused = store.execute_raw_for_tests("TRUNCATE events").await;
        assert!(refused.is_err(), "TRUNCATE was not refused");
        assert_eq!(stream_events(&store, tenant, "s").await, written);
        drop(store);
        db.drop_db().await;
    }

    /// Several server instances starting at once all migrate; each
    /// migration is applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_migrations_apply_each_migration_once() {
        let db = support::pg::fresh_database().await;
        let mut starting = Vec::new();
        for _ in 0..6 {
            let url = db.url.clone();
            starting.push(tokio::spawn(async move {
                let store = PostgresStore::connect(&url, 2).await.expect("connect");
                store.migrate().await.expect("migrate");
                store
            }));
        }
        let mut stores = Vec::new();
        for s in starting {
            stores.push(s.await.expect("instance panicked"));
        }
        stores[0]
            .migrate()
            .await
            .expect("migrating again is a no-op");
        let raw = raw_client(&db.url).await;
        let rows = raw
            .query(
                "SELECT version, count(*) FROM schema_migrations GROUP BY version",
                &[],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            assert_eq!(
                row.get::<_, i64>(1),
                1,
                "migration {} applied twice",
                row.get::<_, String>(0)
            );
        }
        append_ok(
            &stores[3],
            request(TenantId::new(), vec![stream("s", 0, events("E", 1))]),
        )
        .await;
        drop(raw);
        drop(stores);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn connecting_to_a_missing_database_fails_at_once() {
        let url = support::pg::with_database(&support::pg::admin_url(), "buktor_no_such_database");
        let result = PostgresStore::connect(&url, 2).await;
        assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    }
}

// ---------------------------------------------------------------------------
// SQLite only

mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn a_reopened_database_keeps_its_events_and_continues_their_order() {
        let file = support::fresh_sqlite_path();
        let tenant = TenantId::new();
        let first = {
            let store = SqliteStore::open(&file.path).expect("create");
            append_ok(
                &store,
                request(tenant, vec![stream("s", 0, events("E", 2))]),
            )
            .await
        };
        assert!(
            file.path.exists(),
            "the file and its directory were created"
        );

        let store = SqliteStore::open(&file.path).expect("reopen (migrations already applied)");
        assert_eq!(stream_events(&store, tenant, "s").await, first);
        let second = append_ok(
            &store,
            request(tenant, vec![stream("s", 2, events("E", 1))]),
        )
        .await;
        assert!(second[0].position > first[1].position);
        assert_eq!(
            store.read_all(tenant, first[1].position, 10).await.unwrap(),
            second
        );
        let wal = file.path.with_extension("db-wal");
        assert!(wal.exists(), "the database is not in WAL mode");
    }

    #[tokio::test]
    async fn two_stores_on_one_file_keep_a_single_global_order() {
        // Two server processes on one file: IMMEDIATE transactions still
        // serialize commits, so rowid order stays commit order.
        let file = support::fresh_sqlite_path();
        let one = SqliteStore::open(&file.path).expect("open");
        let two = SqliteStore::open(&file.path).expect("open again");
        let tenant = TenantId::new();
        let mut tasks = Vec::new();
        for (n, store) in [one.clone(), two.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let id = format!("s{n}");
                for v in 0..20 {
                    store
                        .append(request(tenant, vec![stream(&id, v, events("E", 1))]))
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = one.read_all(tenant, Position::START, 100).await.unwrap();
        assert_eq!(all.len(), 40);
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(
            two.read_all(tenant, Position::START, 100).await.unwrap(),
            all
        );
    }
}

/// Waits up to 5 s for `expected` on the feed, past anything else (a
/// revocation may be announced more than once, and `Unknown` means "check
/// everything").
async fn heard(
    rx: &mut tokio::sync::broadcast::Receiver<buktor::store::access::Revocation>,
    expected: buktor::store::access::Revocation,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(r)) if r == expected => return,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("the feed failed: {e}"),
            Err(_) => panic!("{expected:?} was not announced within 5 s"),
        }
    }
}

async fn revocations_keep_the_first_stay_in_their_hospital_and_are_announced<S: Backend>(
    store: &S,
) {
    use buktor::store::access::{Revocation, RevokedBy, SessionRecord};
    let access = store.access();
    let mut rx = access.revocations();
    // The feed says `Unknown` once it hears (before that, a revocation
    // could go unheard: listeners then check everything).
    heard(&mut rx, Revocation::Unknown).await;
    let now = micros(Utc::now());
    let tenant = TenantRecord {
        id: TenantId::new(),
        name: "Revoking".into(),
        time_zone: chrono_tz::Europe::Berlin,
        created_at: now,
    };
    let other = TenantRecord {
        id: TenantId::new(),
        name: "Elsewhere".into(),
        ..tenant.clone()
    };
    store.create_tenant(&tenant).await.unwrap();
    store.create_tenant(&other).await.unwrap();
    let key = ApiKeyRecord {
        id: Uuid::now_v7(),
        tenant: tenant.id,
        name: "desk".into(),
        role: Role::Staff,
        secret_hash: vec![1; 32],
        created_at: now,
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    let by = |actor: &'static str, at: DateTime<Utc>| RevokedBy { actor, at };

    // Another hospital can neither see nor revoke it.
    assert!(access.api_keys(other.id).await.unwrap().is_empty());
    assert!(access
        .revoke_api_key(other.id, key.id, by("api-key:x", now))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .api_key(key.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    let first = micros(now + chrono::Duration::seconds(1));
    let revoked = access
        .revoke_api_key(tenant.id, key.id, by("cli:ops", first))
        .await
        .unwrap()
        .expect("the hospital's key");
    assert_eq!(revoked.key.revoked_at, Some(first));
    assert_eq!(revoked.revoked_by.as_deref(), Some("cli:ops"));
    heard(&mut rx, Revocation::ApiKey(key.id)).await;
    // Again: the first revocation stays.
    let again = access
        .revoke_api_key(
            tenant.id,
            key.id,
            by("user:late", first + chrono::Duration::seconds(5)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.key.revoked_at, Some(first));
    assert_eq!(again.revoked_by.as_deref(), Some("cli:ops"));
    let listed = access.api_keys(tenant.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.revoked_at, Some(first));
    assert_eq!(
        store.api_key(key.id).await.unwrap().unwrap().revoked_at,
        Some(first)
    );

    // Last use only moves forward.
    let later = micros(now + chrono::Duration::seconds(30));
    access.touch_api_key(key.id, later).await.unwrap();
    access.touch_api_key(key.id, now).await.unwrap();
    assert_eq!(
        access.api_keys(tenant.id).await.unwrap()[0].last_used_at,
        Some(later)
    );

    let session =
        |user: &str, expires_at: DateTime<Utc>, created_at: DateTime<Utc>| SessionRecord {
            id: Uuid::new_v4(),
            tenant: tenant.id,
            user: user.into(),
            name: format!("{user} name"),
            role: Role::Staff,
            created_at,
            expires_at,
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
    let hours = chrono::Duration::hours;
    let open = session("u1", now + hours(8), now);
    let expired = session("u1", now - hours(1), now - hours(9));
    let newer = session("u1", now + hours(8), now + chrono::Duration::seconds(2));
    let elsewhere = session("u2", now + hours(8), now);
    for s in [&open, &expired, &newer, &elsewhere] {
        access.create_session(s).await.unwrap();
    }
    assert_eq!(access.session(open.id).await.unwrap(), Some(open.clone()));
    let ids = |list: Vec<SessionRecord>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(access.sessions(tenant.id, Some("u1"), now).await.unwrap()),
        vec![newer.id, open.id],
        "unexpired, newest first"
    );
    assert_eq!(
        access.sessions(tenant.id, None, now).await.unwrap().len(),
        3
    );
    assert!(access
        .sessions(other.id, None, now)
        .await
        .unwrap()
        .is_empty());
    assert!(access
        .revoke_session(other.id, open.id, by("api-key:x", now))
        .await
        .unwrap()
        .is_none());

    let one = access
        .revoke_session(tenant.id, open.id, by("user:admin", first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (one.revoked_at, one.revoked_by.as_deref()),
        (Some(first), Some("user:admin"))
    );
    heard(&mut rx, Revocation::Session(open.id)).await;
    // All of u1's: only the one still open and unexpired.
    let rest = access
        .revoke_user_sessions(tenant.id, "u1", by("user:admin", first))
        .await
        .unwrap();
    assert_eq!(ids(rest), vec![newer.id]);
    heard(&mut rx, Revocation::Session(newer.id)).await;
    assert!(access
        .revoke_user_sessions(tenant.id, "u1", by("user:admin", first))
        .await
        .unwrap()
        .is_empty());
    assert!(access
        .session(elsewhere.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}
