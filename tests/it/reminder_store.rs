//! The notification timer contract (`buktor::store::reminders`), held
//! against both backends: the planner's checkpoint compare-and-set, claims
//! of due timers under a lease, fenced completions, cancelling and moving,
//! and concurrent claimers that never lease one timer twice.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor::store::postgres::PostgresStore;
use buktor::store::reminders::{TimerChange, TimerOutcome, TimerResult, TimerSpec, TimerState};
use buktor::store::{Position, Store, StoreError};
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::support;

async fn postgres_store(db: &support::pg::TestDb) -> PostgresStore {
    let store = PostgresStore::connect(&db.url, 16)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

crate::support::for_both_stores!(
    the_planner_checkpoint_moves_only_from_where_it_was,
    only_due_pending_timers_are_claimed_earliest_first,
    a_leased_timer_is_claimable_by_another_owner_only_after_the_lease,
    a_completion_after_the_lease_was_taken_over_changes_nothing,
    a_retry_is_due_again_at_its_time_and_counts_the_attempt,
    planning_moves_a_pending_timer_and_cancels_it_but_never_touches_a_finished_one,
    released_timers_are_claimable_at_once,
    a_tenant_lists_only_its_own_timers,
    concurrent_claimers_never_lease_one_timer_twice,
);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn spec(tenant: TenantId, appointment: Uuid, due: &str) -> TimerSpec {
    TimerSpec {
        id: Uuid::new_v4(),
        tenant,
        appointment_id: appointment,
        kind: "reminder".into(),
        channel: "email".into(),
        due_at: t(due),
    }
}

fn schedule(spec: &TimerSpec) -> TimerChange {
    TimerChange {
        spec: spec.clone(),
        cancel: false,
    }
}

/// Writes `changes` at the tenant's current checkpoint, moving it one step.
async fn plan<S: Store>(store: &S, tenant: TenantId, changes: &[TimerChange]) {
    let r = store.reminders();
    let at = r.planner_checkpoint(tenant).await.unwrap();
    let to = Position {
        tx: at.tx + 1,
        seq: at.seq + 1,
    };
    r.plan(tenant, at, to, changes).await.unwrap();
}

fn ids(timers: &[buktor::store::reminders::TimerRecord]) -> Vec<Uuid> {
    timers.iter().map(|t| t.spec.id).collect()
}

const LEASE: Duration = Duration::from_secs(60);
const NOW: &str = "2027-03-28T12:00:00Z";

async fn the_planner_checkpoint_moves_only_from_where_it_was<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    assert_eq!(r.planner_checkpoint(tenant).await.unwrap(), Position::START);
    let a = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    let p1 = Position { tx: 5, seq: 7 };
    r.plan(tenant, Position::START, p1, &[schedule(&a)])
        .await
        .unwrap();
    assert_eq!(r.planner_checkpoint(tenant).await.unwrap(), p1);
    // A second leader that read from the start writes nothing.
    let b = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    let err = r
        .plan(
            tenant,
            Position::START,
            Position { tx: 9, seq: 9 },
            &[schedule(&b)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMoved { .. }), "{err:?}");
    assert_eq!(ids(&r.timers(tenant, None).await.unwrap()), vec![a.id]);
    // Another tenant's checkpoint is its own.
    let other = TenantId::from_uuid(Uuid::new_v4());
    assert_eq!(r.planner_checkpoint(other).await.unwrap(), Position::START);
}

async fn only_due_pending_timers_are_claimed_earliest_first<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let appointment = Uuid::new_v4();
    let later = spec(tenant, appointment, "2027-03-28T11:00:00Z");
    let earlier = spec(tenant, appointment, "2027-03-28T09:00:00Z");
    let future = spec(tenant, appointment, "2027-03-28T12:00:01Z");
    let cancelled = spec(tenant, appointment, "2027-03-28T08:00:00Z");
    plan(
        store,
        tenant,
        &[
            schedule(&later),
            schedule(&earlier),
            schedule(&future),
            TimerChange {
                spec: cancelled.clone(),
                cancel: true,
            },
        ],
    )
    .await;
    let claimed = r.claim_timers("a", t(NOW), LEASE, 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![earlier.id, later.id]);
    assert!(claimed.iter().all(|c| c.state == TimerState::Pending));
    assert_eq!(claimed[0].spec, earlier);
    // The limit caps a claim.
    let next = r
        .claim_timers("a", t("2027-03-28T13:00:00Z"), LEASE, 1)
        .await
        .unwrap();
    assert_eq!(ids(&next), vec![future.id]);
}

async fn a_leased_timer_is_claimable_by_another_owner_only_after_the_lease<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let a = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    plan(store, tenant, &[schedule(&a)]).await;
    let lease = Duration::from_millis(400);
    assert_eq!(
        ids(&r.claim_timers("one", t(NOW), lease, 10).await.unwrap()),
        vec![a.id]
    );
    assert!(r
        .claim_timers("two", t(NOW), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = r.claim_timers("two", t(NOW), lease, 10).await.unwrap();
        if !got.is_empty() {
            assert_eq!(ids(&got), vec![a.id]);
            break;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_completion_after_the_lease_was_taken_over_changes_nothing<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let a = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    plan(store, tenant, &[schedule(&a)]).await;
    r.claim_timers("one", t(NOW), Duration::from_millis(200), 10)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        ids(&r.claim_timers("two", t(NOW), LEASE, 10).await.unwrap()),
        vec![a.id]
    );
    let late = TimerResult {
        id: a.id,
        outcome: TimerOutcome::Done(TimerState::Sent),
        error: None,
    };
    assert_eq!(
        r.complete_timers("one", std::slice::from_ref(&late))
            .await
            .unwrap(),
        0
    );
    let row = &r.timers(tenant, None).await.unwrap()[0];
    assert_eq!((row.state, row.attempts), (TimerState::Pending, 0));
    assert_eq!(r.complete_timers("two", &[late]).await.unwrap(), 1);
    let row = &r.timers(tenant, None).await.unwrap()[0];
    assert_eq!((row.state, row.attempts), (TimerState::Sent, 1));
    assert!(r
        .claim_timers("three", t("2030-01-01T00:00:00Z"), LEASE, 10)
        .await
        .unwrap()
        .iter()
        .all(|c| c.spec.id != a.id));
}

async fn a_retry_is_due_again_at_its_time_and_counts_the_attempt<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let a = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    plan(store, tenant, &[schedule(&a)]).await;
    r.claim_timers("one", t(NOW), LEASE, 10).await.unwrap();
    let retry_at = t("2027-03-28T12:05:00Z");
    r.complete_timers(
        "one",
        &[TimerResult {
            id: a.id,
            outcome: TimerOutcome::Retry { at: retry_at },
            error: Some("SMTP: connection refused".into()),
        }],
    )
    .await
    .unwrap();
    let row = &r.timers(tenant, None).await.unwrap()[0];
    assert_eq!(row.state, TimerState::Pending);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.spec.due_at, retry_at);
    assert_eq!(row.last_error.as_deref(), Some("SMTP: connection refused"));
    assert!(r
        .claim_timers("one", t("2027-03-28T12:04:59Z"), LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&r.claim_timers("one", retry_at, LEASE, 10).await.unwrap()),
        vec![a.id]
    );
}

async fn planning_moves_a_pending_timer_and_cancels_it_but_never_touches_a_finished_one<
    S: Store,
>(
    store: &S,
) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let appointment = Uuid::new_v4();
    let a = spec(tenant, appointment, "2027-03-28T10:00:00Z");
    let sent = spec(tenant, appointment, "2027-03-28T09:00:00Z");
    plan(store, tenant, &[schedule(&a), schedule(&sent)]).await;
    r.claim_timers("one", t("2027-03-28T09:30:00Z"), LEASE, 10)
        .await
        .unwrap();
    r.complete_timers(
        "one",
        &[TimerResult {
            id: sent.id,
            outcome: TimerOutcome::Done(TimerState::Sent),
            error: None,
        }],
    )
    .await
    .unwrap();
    // Move the pending one later; writing the sent one again changes nothing.
    let mut moved = a.clone();
    moved.due_at = t("2027-03-29T10:00:00Z");
    let mut sent_again = sent.clone();
    sent_again.due_at = t("2027-03-30T10:00:00Z");
    plan(store, tenant, &[schedule(&moved), schedule(&sent_again)]).await;
    let rows = r.timers(tenant, Some(appointment)).await.unwrap();
    let row = |id| rows.iter().find(|x| x.spec.id == id).unwrap().clone();
    assert_eq!(row(a.id).spec.due_at, moved.due_at);
    assert_eq!(row(a.id).state, TimerState::Pending);
    assert_eq!(row(sent.id).state, TimerState::Sent);
    assert_eq!(row(sent.id).spec.due_at, sent.due_at);
    assert!(r
        .claim_timers("two", t(NOW), LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    // Cancel it (and the sent one: no effect), then scheduling it again does not revive it.
    plan(
        store,
        tenant,
        &[
            TimerChange {
                spec: moved.clone(),
                cancel: true,
            },
            TimerChange {
                spec: sent.clone(),
                cancel: true,
            },
        ],
    )
    .await;
    plan(store, tenant, &[schedule(&moved)]).await;
    let rows = r.timers(tenant, Some(appointment)).await.unwrap();
    let row = |id| rows.iter().find(|x| x.spec.id == id).unwrap().clone();
    assert_eq!(row(a.id).state, TimerState::Cancelled);
    assert_eq!(row(sent.id).state, TimerState::Sent);
    assert!(r
        .claim_timers("two", t("2030-01-01T00:00:00Z"), LEASE, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn released_timers_are_claimable_at_once<S: Store>(store: &S) {
    let r = store.reminders();
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let a = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    plan(store, tenant, &[schedule(&a)]).await;
    r.claim_timers("one", t(NOW), LEASE, 10).await.unwrap();
    // Only the holder can release.
    r.release_timers("two", &[a.id]).await.unwrap();
    assert!(r
        .claim_timers("two", t(NOW), LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    r.release_timers("one", &[a.id]).await.unwrap();
    assert_eq!(
        ids(&r.claim_timers("two", t(NOW), LEASE, 10).await.unwrap()),
        vec![a.id]
    );
}

async fn a_tenant_lists_only_its_own_timers<S: Store>(store: &S) {
    let r = store.reminders();
    let one = TenantId::from_uuid(Uuid::new_v4());
    let two = TenantId::from_uuid(Uuid::new_v4());
    let a = spec(one, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    let b = spec(two, Uuid::new_v4(), "2027-03-28T10:00:00Z");
    plan(store, one, &[schedule(&a)]).await;
    plan(store, two, &[schedule(&b)]).await;
    assert_eq!(ids(&r.timers(one, None).await.unwrap()), vec![a.id]);
    assert_eq!(ids(&r.timers(two, None).await.unwrap()), vec![b.id]);
    assert!(r
        .timers(one, Some(b.appointment_id))
        .await
        .unwrap()
        .is_empty());
}

async fn concurrent_claimers_never_lease_one_timer_twice<S: Store>(store: &S) {
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let mut all = Vec::new();
    for i in 0..200 {
        let mut s = spec(tenant, Uuid::new_v4(), "2027-03-28T10:00:00Z");
        s.due_at += chrono::Duration::seconds(i);
        all.push(schedule(&s));
    }
    plan(store, tenant, &all).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Uuid>::new()));
    // Eight claimers race; each completes what it claimed, as a dispatcher does.
    let store: &S = store;
    let claimers = (0..8).map(|i| {
        let seen = seen.clone();
        async move {
            let owner = format!("claimer-{i}");
            loop {
                let got = store
                    .reminders()
                    .claim_timers(&owner, t(NOW), LEASE, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return;
                }
                seen.lock().unwrap().extend(ids(&got));
                let results: Vec<TimerResult> = got
                    .iter()
                    .map(|g| TimerResult {
                        id: g.spec.id,
                        outcome: TimerOutcome::Done(TimerState::Sent),
                        error: None,
                    })
                    .collect();
                assert_eq!(
                    store
                        .reminders()
                        .complete_timers(&owner, &results)
                        .await
                        .unwrap(),
                    results.len()
                );
            }
        }
    });
    futures::future::join_all(claimers).await;
    let seen = seen.lock().unwrap().clone();
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "a timer was claimed twice");
    assert_eq!(unique.len(), 200);
}
