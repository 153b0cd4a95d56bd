//! The webhook outbox contract (`buktor::store::webhooks`), held against both
//! backends.
//!
//! Each case is a generic async function run twice, by `postgres::<case>` and
//! `sqlite::<case>` (see the `webhook_conformance!` invocation). Cases that
//! wait on a retry delay or a lease use short durations and poll, with a
//! generous deadline, rather than sleep for an exact time.
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use buktor::store::postgres::PostgresStore;
use buktor::store::webhooks::{
    AttemptDecision, AttemptFilter, AttemptResult, ClaimRequest, EndpointRecord, EndpointSpec,
    MessageCounts, MessageFilter, MessageRecord, MessageState, NewMessage, ReplayFrom,
    WebhookStore,
};
use buktor::store::{Position, Store, StoreError, TenantRecord};
use buktor::webhooks::signature::SigningSecret;
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::support;

const PG_POOL_SIZE: usize = 16;

async fn postgres_store(db: &support::pg::TestDb) -> PostgresStore {
    let store = PostgresStore::connect(&db.url, PG_POOL_SIZE)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

crate::support::for_both_stores!(
    endpoints_round_trip_with_their_secrets,
    enqueue_moves_the_checkpoint_only_from_where_it_was,
    a_message_for_an_event_already_queued_at_an_endpoint_is_ignored,
    only_the_oldest_undelivered_message_of_a_key_is_claimed,
    messages_of_different_keys_are_claimed_side_by_side,
    a_retry_is_claimable_only_once_its_delay_has_passed,
    a_leased_message_is_claimable_by_another_owner_only_after_the_lease,
    a_completion_after_the_lease_was_taken_over_only_records_the_attempt,
    released_messages_are_claimable_at_once,
    a_dead_letter_holds_back_its_key_until_it_is_replayed,
    an_endpoint_answering_gone_is_disabled_and_its_messages_wait,
    a_dead_letter_disables_the_endpoint_when_asked,
    claims_skip_disabled_and_skipped_endpoints_and_respect_the_caps,
    attempts_are_listed_by_endpoint_message_and_event_in_pages,
    messages_are_listed_in_position_order_with_filters_and_pages,
    message_counts_count_each_state,
    replaying_an_endpoint_from_a_position_requeues_in_order_per_key,
    replaying_an_endpoint_from_a_time_requeues_what_was_created_since,
    replaying_an_endpoint_keeps_a_later_pending_message_behind_the_replayed_one,
    a_tenant_sees_and_replays_only_its_own_messages_and_endpoints,
    concurrent_claimers_never_lease_one_message_twice,
);

// ---------------------------------------------------------------------------
// Helpers

const A: &str = "dispatcher-a";
const B: &str = "dispatcher-b";
/// Long enough that no lease runs out during a test that does not want it to.
const LONG: Duration = Duration::from_secs(60);
/// How long a poll for something a short delay makes due waits at most.
const DEADLINE: Duration = Duration::from_secs(10);

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

async fn new_tenant<S: Store>(store: &S) -> TenantId {
    let tenant = TenantRecord {
        id: TenantId::new(),
        name: "Klinikum Nord".into(),
        time_zone: chrono_tz::Europe::Berlin,
        created_at: micros(Utc::now()),
    };
    store.create_tenant(&tenant).await.expect("create tenant");
    tenant.id
}

fn spec(url: &str) -> EndpointSpec {
    EndpointSpec {
        url: url.to_owned(),
        description: String::new(),
        event_types: vec![],
        practitioner_ids: vec![],
        departments: vec![],
        enabled: true,
        rate_limit_per_second: None,
        max_attempts: None,
        disable_on_dead_letter: false,
    }
}

fn record(tenant: TenantId, spec: EndpointSpec) -> EndpointRecord {
    let now = micros(Utc::now());
    EndpointRecord {
        id: Uuid::new_v4(),
        tenant,
        spec,
        secret: SigningSecret::generate(),
        previous_secret: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// A new enabled endpoint of `tenant`.
async fn add_endpoint(w: &dyn WebhookStore, tenant: TenantId) -> Uuid {
    let endpoint = record(tenant, spec("https://example.test/hook"));
    w.create_endpoint(&endpoint).await.expect("create endpoint");
    endpoint.id
}

/// The event at position `at` (one event per position, whatever the tenant).
fn event_at(at: i64) -> Uuid {
    Uuid::from_u128(0xE000_0000 + at as u128)
}

/// The message of the event at `at` for `endpoint`, about appointment `key`.
fn message(endpoint: Uuid, key: &str, at: i64) -> NewMessage {
    NewMessage {
        id: message_id(endpoint, at),
        endpoint_id: endpoint,
        event_id: event_at(at),
        position: Position { tx: at, seq: at },
        ordering_key: key.to_owned(),
        event_type: "appointment.booked".into(),
        payload: format!(r#"{{"type":"appointment.booked","key":"{key}","at":{at}}}"#),
    }
}

fn message_id(endpoint: Uuid, at: i64) -> String {
    format!("msg_{at}_{}", endpoint.simple())
}

/// Enqueues `messages` from the fan-out's current checkpoint to the last of
/// their positions.
async fn enqueue(w: &dyn WebhookStore, tenant: TenantId, messages: Vec<NewMessage>) -> usize {
    let from = w.fanout_checkpoint(tenant).await.expect("checkpoint");
    let to = messages
        .iter()
        .map(|m| m.position)
        .max()
        .unwrap_or(from)
        .max(from);
    w.enqueue(tenant, from, to, messages)
        .await
        .expect("enqueue")
}

fn request(owner: &str) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        lease: LONG,
        per_endpoint: 100,
        limit: 1000,
        skip_endpoints: vec![],
    }
}

fn ids(messages: &[MessageRecord]) -> BTreeSet<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

fn set<const N: usize>(ids: [&String; N]) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

/// Claims, checking that each message comes with its own endpoint.
async fn claim(w: &dyn WebhookStore, request: &ClaimRequest) -> Vec<MessageRecord> {
    let claimed = w.claim(request).await.expect("claim");
    for c in &claimed {
        assert_eq!(
            c.endpoint.id, c.message.endpoint_id,
            "claimed with another endpoint"
        );
        assert_eq!(c.endpoint.tenant, c.message.tenant);
    }
    claimed.into_iter().map(|c| c.message).collect()
}

/// Claims with `request` until something comes, or panics after [`DEADLINE`].
async fn claim_when_due(w: &dyn WebhookStore, request: &ClaimRequest) -> Vec<MessageRecord> {
    let start = Instant::now();
    loop {
        let claimed = claim(w, request).await;
        if !claimed.is_empty() {
            return claimed;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "nothing became claimable within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that a claim made after `since` found nothing if `wait` had not
/// passed yet when it returned. (On a machine so slow that `wait` passed
/// between two calls, finding something is right, and not asserted on.)
fn assert_not_before(claimed: &[MessageRecord], since: Instant, wait: Duration, what: &str) {
    let elapsed = since.elapsed();
    assert!(
        claimed.is_empty() || elapsed >= wait,
        "{what}: claimed {:?} after {elapsed:?}, before {wait:?} had passed",
        ids(claimed)
    );
}

fn attempt(m: &MessageRecord, decision: AttemptDecision) -> AttemptResult {
    let status_code = match decision {
        AttemptDecision::Delivered => 200,
        AttemptDecision::Retry { .. } => 503,
        AttemptDecision::DeadLetter { .. } => 500,
        AttemptDecision::EndpointGone => 410,
    };
    AttemptResult {
        message_id: m.id.clone(),
        tenant: m.tenant,
        endpoint_id: m.endpoint_id,
        started_at: micros(Utc::now()),
        latency_ms: 12,
        status_code: Some(status_code),
        error: None,
        response_excerpt: Some(format!("answer {status_code}")),
        decision,
    }
}

async fn complete(
    w: &dyn WebhookStore,
    owner: &str,
    m: &MessageRecord,
    decision: AttemptDecision,
) -> Vec<String> {
    w.complete(owner, &[attempt(m, decision)])
        .await
        .expect("complete")
}

async fn get(w: &dyn WebhookStore, tenant: TenantId, id: &str) -> MessageRecord {
    w.message(tenant, id)
        .await
        .expect("message")
        .unwrap_or_else(|| panic!("message {id} is not stored"))
}

async fn state(w: &dyn WebhookStore, tenant: TenantId, id: &str) -> MessageState {
    get(w, tenant, id).await.state
}

/// Claims and delivers until nothing is due; returns the ids in the order
/// they were delivered, one claim's worth (sorted) after another.
async fn deliver_all(w: &dyn WebhookStore, owner: &str) -> Vec<Vec<String>> {
    let mut rounds = Vec::new();
    loop {
        let claimed = claim(w, &request(owner)).await;
        if claimed.is_empty() {
            return rounds;
        }
        let results: Vec<_> = claimed
            .iter()
            .map(|m| attempt(m, AttemptDecision::Delivered))
            .collect();
        w.complete(owner, &results).await.expect("complete");
        rounds.push(ids(&claimed).into_iter().collect());
    }
}

fn all(limit: usize) -> MessageFilter {
    MessageFilter {
        limit,
        ..MessageFilter::default()
    }
}

// ---------------------------------------------------------------------------
// Cases

async fn endpoints_round_trip_with_their_secrets<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;

    let mut first = record(
        tenant,
        EndpointSpec {
            url: "https://crm.example.test/buktor".into(),
            description: "CRM – Zürich ✓".into(),
            event_types: vec!["appointment.booked".into(), "appointment.cancelled".into()],
            practitioner_ids: vec![Uuid::new_v4(), Uuid::new_v4()],
            departments: vec!["cardiology".into()],
            enabled: true,
            rate_limit_per_second: Some(7),
            max_attempts: Some(3),
            disable_on_dead_letter: true,
        },
    );
    let old_secret = SigningSecret::generate();
    first.previous_secret = Some((
        old_secret.clone(),
        micros(Utc::now()) + chrono::Duration::hours(24),
    ));
    w.create_endpoint(&first).await.expect("create");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = record(tenant, spec("https://second.example.test/"));
    w.create_endpoint(&second).await.expect("create");
    let foreign = record(other, spec("https://other.example.test/"));
    w.create_endpoint(&foreign).await.expect("create");

    assert_eq!(
        w.endpoint(tenant, first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        w.endpoint(tenant, second.id).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        w.endpoint(other, first.id).await.unwrap(),
        None,
        "another tenant's endpoint is not found"
    );
    assert_eq!(
        w.endpoints(Some(tenant)).await.unwrap(),
        vec![first.clone(), second.clone()],
        "a tenant's endpoints by creation time"
    );
    let everyone = w.endpoints(None).await.unwrap();
    assert_eq!(everyone.len(), 3);
    assert!(everyone.contains(&foreign) && everyone.contains(&first));

    // Rotate the secret, change the spec, disable it.
    let mut rotated = first.clone();
    rotated.previous_secret = Some((
        first.secret.clone(),
        micros(Utc::now()) + chrono::Duration::hours(1),
    ));
    rotated.secret = SigningSecret::generate();
    rotated.spec.url = "https://crm.example.test/v2".into();
    rotated.spec.event_types = vec![];
    rotated.spec.practitioner_ids = vec![];
    rotated.spec.rate_limit_per_second = None;
    rotated.spec.enabled = false;
    rotated.disabled_reason = Some("paused by hand".into());
    rotated.updated_at = micros(Utc::now()) + chrono::Duration::seconds(1);
    assert!(w.update_endpoint(&rotated).await.unwrap());
    let stored = w.endpoint(tenant, first.id).await.unwrap().unwrap();
    assert_eq!(stored, rotated);
    assert_eq!(
        stored.created_at, first.created_at,
        "an update keeps the creation time"
    );
    assert_eq!(
        stored.signing_secrets(Utc::now()),
        vec![rotated.secret.clone(), first.secret.clone()]
    );

    // No previous secret any more.
    let mut settled = rotated.clone();
    settled.previous_secret = None;
    settled.disabled_reason = None;
    settled.spec.enabled = true;
    assert!(w.update_endpoint(&settled).await.unwrap());
    assert_eq!(
        w.endpoint(tenant, first.id).await.unwrap(),
        Some(settled.clone())
    );

    let mut unknown = settled.clone();
    unknown.id = Uuid::new_v4();
    assert!(!w.update_endpoint(&unknown).await.unwrap());
    let mut stolen = settled.clone();
    stolen.tenant = other;
    stolen.spec.url = "https://attacker.example.test/".into();
    assert!(
        !w.update_endpoint(&stolen).await.unwrap(),
        "another tenant cannot update the endpoint"
    );
    assert_eq!(w.endpoint(tenant, first.id).await.unwrap(), Some(settled));
}

async fn enqueue_moves_the_checkpoint_only_from_where_it_was<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    assert_eq!(w.fanout_checkpoint(tenant).await.unwrap(), Position::START);

    let batch = vec![message(endpoint, "a", 3), message(endpoint, "b", 5)];
    let wrong = Position { tx: 2, seq: 2 };
    match w
        .enqueue(tenant, wrong, Position { tx: 5, seq: 5 }, batch.clone())
        .await
    {
        Err(StoreError::CheckpointMoved { .. }) => {}
        other => panic!("expected CheckpointMoved, got {other:?}"),
    }
    assert_eq!(w.fanout_checkpoint(tenant).await.unwrap(), Position::START);
    assert!(
        w.messages(tenant, &all(10)).await.unwrap().is_empty(),
        "a refused enqueue writes no message"
    );

    let to = Position { tx: 6, seq: 1 };
    assert_eq!(
        w.enqueue(tenant, Position::START, to, batch.clone())
            .await
            .unwrap(),
        2
    );
    assert_eq!(w.fanout_checkpoint(tenant).await.unwrap(), to);
    let stored = w.messages(tenant, &all(10)).await.unwrap();
    assert_eq!(stored.len(), 2);
    let first = &stored[0];
    assert_eq!(first.id, batch[0].id);
    assert_eq!(first.tenant, tenant);
    assert_eq!(first.endpoint_id, endpoint);
    assert_eq!(first.event_id, batch[0].event_id);
    assert_eq!(first.position, batch[0].position);
    assert_eq!(first.ordering_key, "a");
    assert_eq!(first.event_type, "appointment.booked");
    assert_eq!(first.payload, batch[0].payload);
    assert_eq!(first.state, MessageState::Pending);
    assert_eq!((first.attempts, first.failures), (0, 0));
    assert_eq!(first.delivered_at, None);
    assert_eq!(first.last_error, None);

    // A second fan-out that read from the start lost the race.
    match w
        .enqueue(
            tenant,
            Position::START,
            Position { tx: 9, seq: 9 },
            vec![message(endpoint, "c", 9)],
        )
        .await
    {
        Err(StoreError::CheckpointMoved { .. }) => {}
        other => panic!("expected CheckpointMoved, got {other:?}"),
    }
    assert_eq!(w.fanout_checkpoint(tenant).await.unwrap(), to);
    assert_eq!(w.messages(tenant, &all(10)).await.unwrap().len(), 2);

    // Nothing to send still moves the checkpoint.
    let later = Position { tx: 20, seq: 20 };
    assert_eq!(w.enqueue(tenant, to, later, vec![]).await.unwrap(), 0);
    assert_eq!(w.fanout_checkpoint(tenant).await.unwrap(), later);

    // Each tenant has its own checkpoint.
    let other = new_tenant(store).await;
    assert_eq!(w.fanout_checkpoint(other).await.unwrap(), Position::START);
}

async fn a_message_for_an_event_already_queued_at_an_endpoint_is_ignored<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let second_endpoint = add_endpoint(w, tenant).await;
    let original = message(endpoint, "a", 1);
    assert_eq!(enqueue(w, tenant, vec![original.clone()]).await, 1);

    let mut again = original.clone();
    again.id = "msg_other_id".into();
    again.payload = r#"{"changed":true}"#.into();
    let inserted = enqueue(
        w,
        tenant,
        vec![again, original.clone(), message(second_endpoint, "a", 1)],
    )
    .await;
    assert_eq!(
        inserted, 1,
        "only the message for the other endpoint is new"
    );
    let stored = w.messages(tenant, &all(10)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].payload, original.payload);
    assert!(w.message(tenant, "msg_other_id").await.unwrap().is_none());
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.state == MessageState::Pending)
            .count(),
        2
    );
}

async fn only_the_oldest_undelivered_message_of_a_key_is_claimed<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    // Two batches: a key's later messages may come in a later enqueue.
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "a", 2)],
    )
    .await;
    enqueue(w, tenant, vec![message(endpoint, "a", 3)]).await;
    let [a1, a2, a3] = [1, 2, 3].map(|at| message_id(endpoint, at));
    assert_eq!(state(w, tenant, &a1).await, MessageState::Pending);
    assert_eq!(state(w, tenant, &a2).await, MessageState::Queued);
    assert_eq!(state(w, tenant, &a3).await, MessageState::Queued);

    let claimed = claim(w, &request(A)).await;
    assert_eq!(ids(&claimed), set([&a1]), "only the head of the key is due");
    assert!(claim(w, &request(B)).await.is_empty());

    // A retry keeps the rest of the key waiting.
    complete(
        w,
        A,
        &claimed[0],
        AttemptDecision::Retry {
            after: Duration::ZERO,
        },
    )
    .await;
    assert_eq!(state(w, tenant, &a2).await, MessageState::Queued);
    let claimed = claim_when_due(w, &request(A)).await;
    assert_eq!(ids(&claimed), set([&a1]));

    complete(w, A, &claimed[0], AttemptDecision::Delivered).await;
    let delivered = get(w, tenant, &a1).await;
    assert_eq!(delivered.state, MessageState::Delivered);
    assert_eq!((delivered.attempts, delivered.failures), (2, 1));
    assert!(delivered.delivered_at.is_some());
    assert_eq!(state(w, tenant, &a2).await, MessageState::Pending);
    assert_eq!(state(w, tenant, &a3).await, MessageState::Queued);

    let claimed = claim(w, &request(B)).await;
    assert_eq!(ids(&claimed), set([&a2]));
    complete(w, B, &claimed[0], AttemptDecision::Delivered).await;
    let claimed = claim(w, &request(B)).await;
    assert_eq!(ids(&claimed), set([&a3]));
    complete(w, B, &claimed[0], AttemptDecision::Delivered).await;
    assert!(claim(w, &request(A)).await.is_empty());

    // A key whose messages were all delivered starts over with the next one.
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 4), message(endpoint, "a", 5)],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    assert_eq!(ids(&claimed), set([&message_id(endpoint, 4)]));
}

async fn messages_of_different_keys_are_claimed_side_by_side<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let other_endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![
            message(endpoint, "a", 1),
            message(endpoint, "b", 2),
            message(endpoint, "a", 3),
            message(endpoint, "c", 4),
            message(endpoint, "b", 5),
            // The same key at another endpoint is a queue of its own.
            message(other_endpoint, "a", 3),
        ],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    assert_eq!(
        ids(&claimed),
        set([
            &message_id(endpoint, 1),
            &message_id(endpoint, 2),
            &message_id(endpoint, 4),
            &message_id(other_endpoint, 3),
        ])
    );
    for m in &claimed {
        assert_eq!(m.state, MessageState::Pending);
    }
    // Delivering b's head makes b's next due, not a's.
    let b1 = claimed
        .iter()
        .find(|m| m.id == message_id(endpoint, 2))
        .unwrap();
    complete(w, A, b1, AttemptDecision::Delivered).await;
    assert_eq!(
        ids(&claim(w, &request(B)).await),
        set([&message_id(endpoint, 5)])
    );
    assert_eq!(
        state(w, tenant, &message_id(endpoint, 3)).await,
        MessageState::Queued
    );
}

async fn a_retry_is_claimable_only_once_its_delay_has_passed<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(w, tenant, vec![message(endpoint, "a", 1)]).await;
    let claimed = claim(w, &request(A)).await;
    assert_eq!(claimed.len(), 1);

    let delay = Duration::from_millis(300);
    let before = Utc::now();
    let started = Instant::now();
    let dead = complete(w, A, &claimed[0], AttemptDecision::Retry { after: delay }).await;
    assert!(dead.is_empty());
    let waiting = get(w, tenant, &claimed[0].id).await;
    assert_eq!(waiting.state, MessageState::Pending);
    assert_eq!((waiting.attempts, waiting.failures), (1, 1));
    assert_eq!(waiting.last_error.as_deref(), Some("HTTP 503"));
    assert!(
        waiting.next_attempt_at >= before + chrono::Duration::milliseconds(299),
        "next attempt at {} is not the delay after {before}",
        waiting.next_attempt_at
    );
    assert_not_before(&claim(w, &request(A)).await, started, delay, "not due yet");
    assert_not_before(
        &claim(w, &request(B)).await,
        started,
        delay,
        "not due for anyone",
    );

    let claimed = claim_when_due(w, &request(B)).await;
    assert_not_before(&claimed, started, delay, "due after the delay");
    assert_eq!(claimed[0].id, waiting.id);
    assert_eq!(claimed[0].failures, 1);
}

async fn a_leased_message_is_claimable_by_another_owner_only_after_the_lease<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(w, tenant, vec![message(endpoint, "a", 1)]).await;
    let lease = Duration::from_millis(300);
    let started = Instant::now();
    let claimed = claim(
        w,
        &ClaimRequest {
            lease,
            ..request(A)
        },
    )
    .await;
    assert_eq!(claimed.len(), 1);
    assert_not_before(&claim(w, &request(B)).await, started, lease, "leased to A");
    assert_not_before(
        &claim(w, &request(A)).await,
        started,
        lease,
        "a lease is not handed out twice, not even to its owner",
    );

    let taken = claim_when_due(w, &request(B)).await;
    assert_not_before(&taken, started, lease, "taken over once the lease ran out");
    assert_eq!(ids(&taken), ids(&claimed));
    assert!(
        claim(w, &request(A)).await.is_empty(),
        "B's (long) lease holds"
    );
}

async fn a_completion_after_the_lease_was_taken_over_only_records_the_attempt<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "a", 2)],
    )
    .await;
    let short = ClaimRequest {
        lease: Duration::from_millis(100),
        ..request(A)
    };
    let mine = claim(w, &short).await;
    assert_eq!(mine.len(), 1);
    let taken = claim_when_due(w, &request(B)).await;
    assert_eq!(ids(&taken), ids(&mine));

    // A's late answers change nothing but the attempt log.
    let dead = complete(
        w,
        A,
        &mine[0],
        AttemptDecision::DeadLetter {
            disable_endpoint: true,
        },
    )
    .await;
    assert!(dead.is_empty(), "a fenced-off dead letter is not reported");
    complete(w, A, &mine[0], AttemptDecision::Delivered).await;
    let m = get(w, tenant, &mine[0].id).await;
    assert_eq!(m.state, MessageState::Pending);
    assert_eq!((m.attempts, m.failures), (0, 0));
    assert_eq!(m.delivered_at, None);
    assert_eq!(
        state(w, tenant, &message_id(endpoint, 2)).await,
        MessageState::Queued
    );
    let endpoint_record = w.endpoint(tenant, endpoint).await.unwrap().unwrap();
    assert!(
        endpoint_record.spec.enabled,
        "a fenced-off decision disables nothing"
    );
    assert!(claim(w, &request(A)).await.is_empty(), "B still holds it");
    let log = w
        .attempts(
            tenant,
            &AttemptFilter {
                message_id: Some(mine[0].id.clone()),
                limit: 10,
                ..AttemptFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        log.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(),
        ["dead-letter", "delivered"]
    );

    // B, who holds the lease, decides.
    complete(w, B, &taken[0], AttemptDecision::Delivered).await;
    let m = get(w, tenant, &mine[0].id).await;
    assert_eq!(m.state, MessageState::Delivered);
    assert_eq!(m.attempts, 1);
    assert_eq!(
        state(w, tenant, &message_id(endpoint, 2)).await,
        MessageState::Pending
    );
    assert_eq!(
        w.attempts(
            tenant,
            &AttemptFilter {
                message_id: Some(mine[0].id.clone()),
                limit: 10,
                ..AttemptFilter::default()
            },
        )
        .await
        .unwrap()
        .len(),
        3
    );
}

async fn released_messages_are_claimable_at_once<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "b", 2)],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    assert_eq!(claimed.len(), 2);
    let all_ids: Vec<String> = claimed.iter().map(|m| m.id.clone()).collect();

    w.release(B, &all_ids).await.unwrap();
    assert!(
        claim(w, &request(B)).await.is_empty(),
        "only the owner can give a lease back"
    );
    w.release(A, &all_ids[..1]).await.unwrap();
    assert_eq!(ids(&claim(w, &request(B)).await), set([&all_ids[0]]));
    w.release(A, &[]).await.unwrap();
    assert!(claim(w, &request(B)).await.is_empty());
}

async fn a_dead_letter_holds_back_its_key_until_it_is_replayed<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![
            message(endpoint, "a", 1),
            message(endpoint, "a", 2),
            message(endpoint, "b", 3),
        ],
    )
    .await;
    let [a1, a2, b1] = [1, 2, 3].map(|at| message_id(endpoint, at));
    let claimed = claim(w, &request(A)).await;
    let first = claimed.iter().find(|m| m.id == a1).unwrap();
    let dead = complete(
        w,
        A,
        first,
        AttemptDecision::DeadLetter {
            disable_endpoint: false,
        },
    )
    .await;
    assert_eq!(dead, vec![a1.clone()]);
    let m = get(w, tenant, &a1).await;
    assert_eq!(m.state, MessageState::Dead);
    assert_eq!((m.attempts, m.failures), (1, 1));
    assert_eq!(m.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(state(w, tenant, &a2).await, MessageState::Queued);
    assert!(
        w.endpoint(tenant, endpoint)
            .await
            .unwrap()
            .unwrap()
            .spec
            .enabled,
        "a dead letter alone does not disable the endpoint"
    );

    // Other keys go on; a's later message waits.
    let b = claimed.iter().find(|m| m.id == b1).unwrap();
    complete(w, A, b, AttemptDecision::Delivered).await;
    assert!(claim(w, &request(A)).await.is_empty());
    assert_eq!(state(w, tenant, &a2).await, MessageState::Queued);

    assert!(
        !w.replay_message(tenant, &a2).await.unwrap(),
        "only a dead message is replayed"
    );
    assert!(!w.replay_message(tenant, "msg_no_such").await.unwrap());
    assert!(w.replay_message(tenant, &a1).await.unwrap());
    let m = get(w, tenant, &a1).await;
    assert_eq!(m.state, MessageState::Pending);
    assert_eq!(
        (m.attempts, m.failures),
        (1, 0),
        "a replay resets the failures only"
    );
    assert!(
        !w.replay_message(tenant, &a1).await.unwrap(),
        "no longer dead"
    );

    let claimed = claim(w, &request(B)).await;
    assert_eq!(ids(&claimed), set([&a1]));
    complete(w, B, &claimed[0], AttemptDecision::Delivered).await;
    let claimed = claim(w, &request(B)).await;
    assert_eq!(
        ids(&claimed),
        set([&a2]),
        "the order resumes after the replay"
    );
}

async fn an_endpoint_answering_gone_is_disabled_and_its_messages_wait<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let gone = add_endpoint(w, tenant).await;
    let fine = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![
            message(gone, "a", 1),
            message(gone, "b", 2),
            message(fine, "a", 1),
        ],
    )
    .await;
    let claimed = claim(
        w,
        &ClaimRequest {
            per_endpoint: 1,
            ..request(A)
        },
    )
    .await;
    assert_eq!(claimed.len(), 2);
    let at_gone = claimed.iter().find(|m| m.endpoint_id == gone).unwrap();
    let dead = complete(w, A, at_gone, AttemptDecision::EndpointGone).await;
    assert!(dead.is_empty());

    let endpoint = w.endpoint(tenant, gone).await.unwrap().unwrap();
    assert!(!endpoint.spec.enabled);
    assert_eq!(
        endpoint.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    let m = get(w, tenant, &at_gone.id).await;
    assert_eq!(
        m.state,
        MessageState::Pending,
        "kept for when it is enabled again"
    );
    assert_eq!((m.attempts, m.failures), (1, 1));
    assert_eq!(m.last_error.as_deref(), Some("HTTP 410"));
    assert!(
        claim(w, &request(B)).await.is_empty(),
        "nothing of a disabled endpoint is claimed"
    );
    assert!(
        w.endpoint(tenant, fine)
            .await
            .unwrap()
            .unwrap()
            .spec
            .enabled
    );

    let mut enabled = endpoint.clone();
    enabled.spec.enabled = true;
    enabled.disabled_reason = None;
    assert!(w.update_endpoint(&enabled).await.unwrap());
    assert_eq!(
        ids(&claim(w, &request(B)).await),
        set([&message_id(gone, 1), &message_id(gone, 2)])
    );
}

async fn a_dead_letter_disables_the_endpoint_when_asked<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "b", 2)],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    let results: Vec<_> = claimed
        .iter()
        .map(|m| {
            attempt(
                m,
                AttemptDecision::DeadLetter {
                    disable_endpoint: true,
                },
            )
        })
        .collect();
    let dead = w.complete(A, &results).await.unwrap();
    assert_eq!(
        dead.into_iter().collect::<BTreeSet<_>>(),
        ids(&claimed),
        "every message dead-lettered in one call is reported"
    );
    let stored = w.endpoint(tenant, endpoint).await.unwrap().unwrap();
    assert!(!stored.spec.enabled);
    assert_eq!(
        stored.disabled_reason.as_deref(),
        Some("a message was dead-lettered")
    );
    assert_eq!(
        w.message_counts(tenant, endpoint).await.unwrap(),
        MessageCounts {
            dead: 2,
            ..MessageCounts::default()
        }
    );
}

async fn claims_skip_disabled_and_skipped_endpoints_and_respect_the_caps<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let disabled = record(
        tenant,
        EndpointSpec {
            enabled: false,
            ..spec("https://off.example.test/")
        },
    );
    w.create_endpoint(&disabled).await.unwrap();
    let skipped = add_endpoint(w, tenant).await;
    let busy = add_endpoint(w, tenant).await;
    let quiet = add_endpoint(w, tenant).await;
    let mut batch = vec![message(disabled.id, "a", 1), message(skipped, "a", 1)];
    for at in 1..=5 {
        batch.push(message(busy, &format!("k{at}"), at));
    }
    for at in 1..=2 {
        batch.push(message(quiet, &format!("k{at}"), at));
    }
    enqueue(w, tenant, batch).await;

    let claimed = claim(
        w,
        &ClaimRequest {
            per_endpoint: 2,
            skip_endpoints: vec![skipped],
            ..request(A)
        },
    )
    .await;
    let per = |endpoint: Uuid| claimed.iter().filter(|m| m.endpoint_id == endpoint).count();
    assert_eq!(per(disabled.id), 0, "a disabled endpoint is left out");
    assert_eq!(per(skipped), 0, "a skipped endpoint is left out");
    assert_eq!(per(busy), 2, "at most per_endpoint of one endpoint");
    assert_eq!(per(quiet), 2);
    assert!(
        claimed
            .windows(2)
            .all(|p| p[0].next_attempt_at <= p[1].next_attempt_at),
        "oldest due first"
    );

    let claimed = claim(
        w,
        &ClaimRequest {
            per_endpoint: 2,
            limit: 1,
            ..request(B)
        },
    )
    .await;
    assert_eq!(claimed.len(), 1, "at most limit in all");
    let rest = claim(w, &request(B)).await;
    assert_eq!(
        rest.len(),
        3,
        "what is left of busy and of the endpoint no longer skipped"
    );
    assert!(rest.iter().all(|m| m.endpoint_id != disabled.id));
    assert!(claim(w, &request(B)).await.is_empty());
}

async fn attempts_are_listed_by_endpoint_message_and_event_in_pages<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let first = add_endpoint(w, tenant).await;
    let second = add_endpoint(w, tenant).await;
    // Event 1 goes to both endpoints; event 2 only to the first.
    enqueue(
        w,
        tenant,
        vec![
            message(first, "a", 1),
            message(second, "a", 1),
            message(first, "b", 2),
        ],
    )
    .await;
    // Each message fails twice, then is delivered.
    for _ in 0..2 {
        let claimed = claim_when_due(w, &request(A)).await;
        assert_eq!(claimed.len(), 3);
        let results: Vec<_> = claimed
            .iter()
            .map(|m| {
                let mut r = attempt(
                    m,
                    AttemptDecision::Retry {
                        after: Duration::ZERO,
                    },
                );
                r.status_code = None;
                r.error = Some("connection refused".into());
                r.response_excerpt = None;
                r
            })
            .collect();
        w.complete(A, &results).await.unwrap();
    }
    let claimed = claim_when_due(w, &request(A)).await;
    assert_eq!(claimed.len(), 3);
    let started_at = micros(Utc::now());
    let results: Vec<_> = claimed
        .iter()
        .map(|m| AttemptResult {
            started_at,
            latency_ms: 250,
            ..attempt(m, AttemptDecision::Delivered)
        })
        .collect();
    w.complete(A, &results).await.unwrap();

    let list = |filter: AttemptFilter| async move { w.attempts(tenant, &filter).await.unwrap() };
    let everything = list(AttemptFilter {
        limit: 100,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(everything.len(), 9);
    assert!(
        everything.windows(2).all(|p| p[0].seq < p[1].seq),
        "in the order recorded"
    );

    let of_message = list(AttemptFilter {
        message_id: Some(message_id(first, 2)),
        limit: 100,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(
        of_message.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        of_message
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        ["retry", "retry", "delivered"]
    );
    let failed = &of_message[0];
    assert_eq!(failed.message_id, message_id(first, 2));
    assert_eq!(failed.endpoint_id, first);
    assert_eq!(failed.event_id, event_at(2));
    assert_eq!(failed.status_code, None);
    assert_eq!(failed.error.as_deref(), Some("connection refused"));
    assert_eq!(failed.response_excerpt, None);
    let ok = &of_message[2];
    assert_eq!(ok.status_code, Some(200));
    assert_eq!(ok.error, None);
    assert_eq!(ok.response_excerpt.as_deref(), Some("answer 200"));
    assert_eq!(ok.latency_ms, 250);
    assert_eq!(ok.started_at, started_at);
    let m = get(w, tenant, &message_id(first, 2)).await;
    assert_eq!((m.attempts, m.failures), (3, 2));
    assert_eq!(m.last_error, None, "a delivery clears the last error");

    let of_endpoint = list(AttemptFilter {
        endpoint_id: Some(second),
        limit: 100,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(of_endpoint.len(), 3);
    assert!(of_endpoint.iter().all(|a| a.endpoint_id == second));

    let of_event = list(AttemptFilter {
        event_id: Some(event_at(1)),
        limit: 100,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(of_event.len(), 6, "both endpoints' attempts at event 1");
    assert!(of_event.iter().all(|a| a.event_id == event_at(1)));

    let both = list(AttemptFilter {
        endpoint_id: Some(first),
        event_id: Some(event_at(1)),
        limit: 100,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(both.len(), 3, "all given conditions hold");

    // Pages of two, each after the last seq of the one before.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(AttemptFilter {
            after,
            limit: 2,
            ..AttemptFilter::default()
        })
        .await;
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        paged.extend(page);
    }
    assert_eq!(paged, everything);
    let page = list(AttemptFilter {
        endpoint_id: Some(first),
        after: Some(of_endpoint[0].seq),
        limit: 2,
        ..AttemptFilter::default()
    })
    .await;
    assert_eq!(page.len(), 2);
    assert!(page
        .iter()
        .all(|a| a.seq > of_endpoint[0].seq && a.endpoint_id == first));
}

async fn messages_are_listed_in_position_order_with_filters_and_pages<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let first = add_endpoint(w, tenant).await;
    let second = add_endpoint(w, tenant).await;
    let mut batch = Vec::new();
    for at in 1..=4 {
        batch.push(message(first, &format!("k{at}"), at));
        batch.push(message(second, &format!("k{at}"), at));
    }
    batch.push(message(first, "k1", 5));
    enqueue(w, tenant, batch).await;

    let everything = w.messages(tenant, &all(100)).await.unwrap();
    assert_eq!(everything.len(), 9);
    let order: Vec<(Position, Uuid)> = everything
        .iter()
        .map(|m| (m.position, m.endpoint_id))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "by position, then endpoint");

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = w
            .messages(
                tenant,
                &MessageFilter {
                    after,
                    limit: 2,
                    ..MessageFilter::default()
                },
            )
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.position, last.endpoint_id));
        paged.extend(page);
    }
    assert_eq!(
        paged, everything,
        "pages split one position's endpoints correctly"
    );

    let at_first = w
        .messages(
            tenant,
            &MessageFilter {
                endpoint_id: Some(first),
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_first.len(), 5);
    assert!(at_first.iter().all(|m| m.endpoint_id == first));

    let of_event = w
        .messages(
            tenant,
            &MessageFilter {
                event_id: Some(event_at(2)),
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        of_event
            .iter()
            .map(|m| m.endpoint_id)
            .collect::<BTreeSet<_>>(),
        [first, second].into_iter().collect()
    );

    let queued = w
        .messages(
            tenant,
            &MessageFilter {
                state: Some(MessageState::Queued),
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&queued), set([&message_id(first, 5)]));

    let combined = w
        .messages(
            tenant,
            &MessageFilter {
                endpoint_id: Some(second),
                state: Some(MessageState::Pending),
                after: Some((Position { tx: 2, seq: 2 }, Uuid::nil())),
                limit: 1,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&combined), set([&message_id(second, 2)]));
    assert!(w.messages(tenant, &all(0)).await.unwrap().is_empty());
}

async fn message_counts_count_each_state<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let other = add_endpoint(w, tenant).await;
    assert_eq!(
        w.message_counts(tenant, endpoint).await.unwrap(),
        MessageCounts::default()
    );
    enqueue(
        w,
        tenant,
        vec![
            message(endpoint, "a", 1),
            message(endpoint, "a", 2),
            message(endpoint, "b", 3),
            message(endpoint, "b", 4),
            message(endpoint, "b", 5),
            message(endpoint, "c", 6),
            message(endpoint, "d", 7),
            message(other, "a", 1),
        ],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    for m in claimed.iter().filter(|m| m.endpoint_id == endpoint) {
        let decision = match m.ordering_key.as_str() {
            "a" => AttemptDecision::Delivered,
            "b" => AttemptDecision::DeadLetter {
                disable_endpoint: false,
            },
            _ => AttemptDecision::Retry { after: LONG },
        };
        complete(w, A, m, decision).await;
    }
    // a: delivered + pending; b: dead + 2 queued; c, d: pending.
    assert_eq!(
        w.message_counts(tenant, endpoint).await.unwrap(),
        MessageCounts {
            queued: 2,
            pending: 3,
            delivered: 1,
            dead: 1,
        }
    );
    assert_eq!(
        w.message_counts(tenant, other).await.unwrap(),
        MessageCounts {
            pending: 1,
            ..MessageCounts::default()
        }
    );
}

async fn replaying_an_endpoint_from_a_position_requeues_in_order_per_key<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let other = add_endpoint(w, tenant).await;
    let keys = [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a"), (6, "c")];
    let mut batch: Vec<_> = keys
        .iter()
        .map(|(at, k)| message(endpoint, k, *at))
        .collect();
    batch.push(message(other, "a", 3));
    enqueue(w, tenant, batch).await;
    deliver_all(w, A).await;
    assert_eq!(
        w.message_counts(tenant, endpoint).await.unwrap().delivered,
        6
    );
    // c's one message is dead: a replay sends it again too.
    enqueue(w, tenant, vec![message(endpoint, "c", 7)]).await;
    let c2 = claim(w, &request(A)).await;
    complete(
        w,
        A,
        &c2[0],
        AttemptDecision::DeadLetter {
            disable_endpoint: false,
        },
    )
    .await;

    let requeued = w
        .replay_endpoint(
            tenant,
            endpoint,
            ReplayFrom::Position(Position { tx: 3, seq: 3 }),
        )
        .await
        .unwrap();
    assert_eq!(requeued, 5, "positions 3 to 7 of this endpoint");
    let id = |at| message_id(endpoint, at);
    for (at, expected) in [
        (1, MessageState::Delivered),
        (2, MessageState::Delivered),
        (3, MessageState::Pending),
        (4, MessageState::Pending),
        (5, MessageState::Queued),
        (6, MessageState::Pending),
        (7, MessageState::Queued),
    ] {
        assert_eq!(state(w, tenant, &id(at)).await, expected, "message at {at}");
    }
    assert_eq!(
        state(w, tenant, &message_id(other, 3)).await,
        MessageState::Delivered,
        "another endpoint's messages are not replayed"
    );
    let c1 = get(w, tenant, &id(6)).await;
    assert_eq!(c1.failures, 0);
    assert_eq!(c1.attempts, 1, "a replay keeps the attempt count");

    let rounds = deliver_all(w, B).await;
    assert_eq!(
        rounds,
        vec![vec![id(3), id(4), id(6)], vec![id(5), id(7)]],
        "each key again in order"
    );
    assert_eq!(
        w.replay_endpoint(
            tenant,
            endpoint,
            ReplayFrom::Position(Position { tx: 8, seq: 8 })
        )
        .await
        .unwrap(),
        0
    );
}

async fn replaying_an_endpoint_from_a_time_requeues_what_was_created_since<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "b", 2)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    enqueue(
        w,
        tenant,
        vec![
            message(endpoint, "a", 3),
            message(endpoint, "a", 4),
            message(endpoint, "c", 5),
        ],
    )
    .await;
    deliver_all(w, A).await;

    let requeued = w
        .replay_endpoint(tenant, endpoint, ReplayFrom::Time(since))
        .await
        .unwrap();
    assert_eq!(requeued, 3, "only the messages created since then");
    let id = |at| message_id(endpoint, at);
    assert_eq!(state(w, tenant, &id(1)).await, MessageState::Delivered);
    assert_eq!(state(w, tenant, &id(2)).await, MessageState::Delivered);
    assert_eq!(
        deliver_all(w, B).await,
        vec![vec![id(3), id(5)], vec![id(4)]]
    );
    let later = w
        .replay_endpoint(
            tenant,
            endpoint,
            ReplayFrom::Time(Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    assert_eq!(later, 0);
}

/// A replay while a key's later message is still owed (waiting on a retry,
/// or in flight) must not let that message overtake the replayed ones.
async fn replaying_an_endpoint_keeps_a_later_pending_message_behind_the_replayed_one<S: Store>(
    store: &S,
) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let id = |at| message_id(endpoint, at);
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "b", 2)],
    )
    .await;
    deliver_all(w, A).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 3), message(endpoint, "b", 4)],
    )
    .await;
    let claimed = claim(w, &request(A)).await;
    assert_eq!(ids(&claimed), set([&id(3), &id(4)]));
    // a's second message waits on a retry; b's is in flight.
    let a2 = claimed.iter().find(|m| m.id == id(3)).unwrap();
    let b2 = claimed.iter().find(|m| m.id == id(4)).unwrap();
    complete(
        w,
        A,
        a2,
        AttemptDecision::Retry {
            after: Duration::ZERO,
        },
    )
    .await;

    let requeued = w
        .replay_endpoint(tenant, endpoint, ReplayFrom::Position(Position::START))
        .await
        .unwrap();
    assert_eq!(requeued, 2);
    assert_eq!(state(w, tenant, &id(1)).await, MessageState::Pending);
    assert_eq!(state(w, tenant, &id(2)).await, MessageState::Pending);
    assert_eq!(
        state(w, tenant, &id(3)).await,
        MessageState::Queued,
        "a's later message waits for the replayed one"
    );
    let heads = claim(w, &request(B)).await;
    assert_eq!(
        ids(&heads),
        set([&id(1), &id(2)]),
        "only the replayed heads are due"
    );
    // b's in-flight attempt fails: it must not become due beside b's head.
    complete(
        w,
        A,
        b2,
        AttemptDecision::Retry {
            after: Duration::ZERO,
        },
    )
    .await;
    assert_eq!(state(w, tenant, &id(4)).await, MessageState::Queued);
    assert!(claim(w, &request(B)).await.is_empty());

    let results: Vec<_> = heads
        .iter()
        .map(|m| attempt(m, AttemptDecision::Delivered))
        .collect();
    w.complete(B, &results).await.unwrap();
    assert_eq!(deliver_all(w, B).await, vec![vec![id(3), id(4)]]);
}

async fn a_tenant_sees_and_replays_only_its_own_messages_and_endpoints<S: Store>(store: &S) {
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let intruder = new_tenant(store).await;
    let endpoint = add_endpoint(w, tenant).await;
    let own = add_endpoint(w, intruder).await;
    enqueue(
        w,
        tenant,
        vec![message(endpoint, "a", 1), message(endpoint, "a", 2)],
    )
    .await;
    enqueue(w, intruder, vec![message(own, "a", 1)]).await;
    let claimed = claim(w, &request(A)).await;
    let theirs = claimed.iter().find(|m| m.endpoint_id == endpoint).unwrap();
    complete(
        w,
        A,
        theirs,
        AttemptDecision::DeadLetter {
            disable_endpoint: false,
        },
    )
    .await;
    let dead = message_id(endpoint, 1);

    assert!(w.message(intruder, &dead).await.unwrap().is_none());
    assert_eq!(
        ids(&w.messages(intruder, &all(100)).await.unwrap()),
        set([&message_id(own, 1)])
    );
    assert!(w
        .messages(
            intruder,
            &MessageFilter {
                endpoint_id: Some(endpoint),
                limit: 100,
                ..MessageFilter::default()
            }
        )
        .await
        .unwrap()
        .is_empty());
    assert!(w
        .attempts(
            intruder,
            &AttemptFilter {
                message_id: Some(dead.clone()),
                limit: 100,
                ..AttemptFilter::default()
            }
        )
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        w.message_counts(intruder, endpoint).await.unwrap(),
        MessageCounts::default()
    );
    assert!(w.endpoint(intruder, endpoint).await.unwrap().is_none());
    assert!(!w.replay_message(intruder, &dead).await.unwrap());
    assert_eq!(
        w.replay_endpoint(intruder, endpoint, ReplayFrom::Position(Position::START))
            .await
            .unwrap(),
        0
    );
    assert_eq!(state(w, tenant, &dead).await, MessageState::Dead);
    assert_eq!(
        w.attempts(
            tenant,
            &AttemptFilter {
                message_id: Some(dead.clone()),
                limit: 100,
                ..AttemptFilter::default()
            }
        )
        .await
        .unwrap()
        .len(),
        1
    );
    assert!(w.replay_message(tenant, &dead).await.unwrap());
}

async fn concurrent_claimers_never_lease_one_message_twice<S: Store + Clone>(store: &S) {
    const ENDPOINTS: usize = 3;
    const PER_ENDPOINT: i64 = 100;
    const CLAIMERS: usize = 8;
    let w = store.webhooks();
    let tenant = new_tenant(store).await;
    let mut batch = Vec::new();
    for _ in 0..ENDPOINTS {
        let endpoint = add_endpoint(w, tenant).await;
        for at in 1..=PER_ENDPOINT {
            batch.push(message(endpoint, &format!("k{at}"), at));
        }
    }
    let total = batch.len();
    enqueue(w, tenant, batch).await;

    let tasks: Vec<_> = (0..CLAIMERS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let request = ClaimRequest {
                    per_endpoint: 4,
                    limit: 7,
                    ..request(&format!("claimer-{n}"))
                };
                let mut got = Vec::new();
                let mut idle_rounds = 0;
                while idle_rounds < 3 {
                    let claimed = store.webhooks().claim(&request).await.expect("claim");
                    if claimed.is_empty() {
                        idle_rounds += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        idle_rounds = 0;
                        got.extend(claimed.into_iter().map(|c| c.message.id));
                    }
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut count = 0;
    for task in tasks {
        for id in task.await.expect("claimer") {
            count += 1;
            assert!(seen.insert(id.clone()), "{id} was leased twice");
        }
    }
    assert_eq!(count, total, "every message leased once");
    assert!(claim(w, &request(A)).await.is_empty());
}
