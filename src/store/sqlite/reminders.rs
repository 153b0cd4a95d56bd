//! [`ReminderStore`] on SQLite, with the semantics of the PostgreSQL backend
//! (`src/store/postgres/reminders.rs`). Every write is one `BEGIN IMMEDIATE`
//! transaction on the one writer connection, which stands in for `SKIP
//! LOCKED`: two claims never interleave. Leases run on this process's clock
//! (one process owns the file); due times compare with the caller's.
use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Row, TransactionBehavior};
use uuid::Uuid;

use super::{format_time, map_db, parse_time, parse_uuid, to_micros, SqliteStore};
use crate::store::reminders::{
    ReminderStore, TimerChange, TimerOutcome, TimerRecord, TimerResult, TimerSpec, TimerState,
};
use crate::store::{Position, StoreError, StoreResult};

const COLUMNS: &str =
    "id, tenant_id, appointment_id, kind, channel, due_at, state, attempts, last_error";

fn decode(row: &Row<'_>) -> StoreResult<TimerRecord> {
    let text = |name: &str| row.get::<_, String>(name).map_err(map_db);
    let state = text("state")?;
    Ok(TimerRecord {
        spec: TimerSpec {
            id: parse_uuid(&text("id")?)?,
            tenant: TenantId::from_uuid(parse_uuid(&text("tenant_id")?)?),
            appointment_id: parse_uuid(&text("appointment_id")?)?,
            kind: text("kind")?,
            channel: text("channel")?,
            due_at: parse_time(&text("due_at")?)?,
        },
        state: TimerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown timer state {state:?}")))?,
        attempts: u32::try_from(row.get::<_, i64>("attempts").map_err(map_db)?).unwrap_or(0),
        last_error: row.get("last_error").map_err(map_db)?,
    })
}

fn stored(t: DateTime<Utc>) -> String {
    format_time(to_micros(t))
}

#[async_trait]
impl ReminderStore for SqliteStore {
    async fn planner_checkpoint(&self, tenant: TenantId) -> StoreResult<Position> {
        self.read(move |conn| {
            super::follower_checkpoint(
                conn,
                "notification_planner_checkpoints",
                &tenant.as_uuid().to_string(),
            )
        })
        .await
    }

    async fn plan(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        changes: &[TimerChange],
    ) -> StoreResult<usize> {
        let changes = changes.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = stored(Utc::now());
            let tenant = tenant.as_uuid().to_string();
            super::move_follower_checkpoint(
                &tx,
                "notification_planner_checkpoints",
                "notification-planner",
                &tenant,
                expected,
                to,
            )?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO notification_timers AS t \
                             (id, tenant_id, appointment_id, kind, channel, due_at, state, \
                              updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (id) DO UPDATE \
                            SET due_at = CASE WHEN excluded.state = 'pending' \
                                              THEN excluded.due_at ELSE t.due_at END, \
                                state = excluded.state, updated_at = excluded.updated_at \
                          WHERE t.state = 'pending'",
                    )
                    .map_err(map_db)?;
                for c in &changes {
                    let state = if c.cancel { "cancelled" } else { "pending" };
                    upsert
                        .execute(params![
                            c.spec.id.to_string(),
                            c.spec.tenant.as_uuid().to_string(),
                            c.spec.appointment_id.to_string(),
                            c.spec.kind,
                            c.spec.channel,
                            stored(c.spec.due_at),
                            state,
                            now,
                        ])
                        .map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(changes.len())
        })
        .await
    }

    async fn claim_timers(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Vec<TimerRecord>> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let wall = to_micros(Utc::now());
            let wall_text = format_time(wall);
            let until = TimeDelta::from_std(lease)
                .ok()
                .and_then(|d| wall.checked_add_signed(d))
                .map(format_time)
                .unwrap_or_else(|| "9999-12-31T23:59:59.999999Z".into());
            let ids: Vec<String> = {
                let mut statement = tx
                    .prepare_cached(
                        "SELECT id FROM notification_timers \
                         WHERE state = 'pending' AND due_at <= ?1 \
                           AND (lease_until IS NULL OR lease_until < ?2) \
                         ORDER BY due_at LIMIT ?3",
                    )
                    .map_err(map_db)?;
                let rows = statement
                    .query_map(
                        params![
                            stored(now),
                            wall_text,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |r| r.get(0),
                    )
                    .map_err(map_db)?;
                rows.collect::<Result<_, _>>().map_err(map_db)?
            };
            let mut timers = Vec::with_capacity(ids.len());
            {
                let sql = format!(
                    "UPDATE notification_timers SET lease_owner = ?2, lease_until = ?3 \
                     WHERE id = ?1 RETURNING {COLUMNS}"
                );
                let mut update = tx.prepare_cached(&sql).map_err(map_db)?;
                for id in &ids {
                    let mut rows = update.query(params![id, owner, until]).map_err(map_db)?;
                    if let Some(row) = rows.next().map_err(map_db)? {
                        timers.push(decode(row)?);
                    }
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(timers)
        })
        .await
    }

    async fn complete_timers(&self, owner: &str, results: &[TimerResult]) -> StoreResult<usize> {
        if results.is_empty() {
            return Ok(0);
        }
        let owner = owner.to_owned();
        let results = results.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = stored(Utc::now());
            let mut applied = 0;
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE notification_timers \
                            SET state = ?3, due_at = coalesce(?4, due_at), \
                                attempts = attempts + 1, last_error = ?5, \
                                lease_owner = NULL, lease_until = NULL, updated_at = ?6 \
                          WHERE id = ?1 AND lease_owner = ?2",
                    )
                    .map_err(map_db)?;
                for r in &results {
                    let (state, due) = match &r.outcome {
                        TimerOutcome::Done(state) => (state.as_str(), None),
                        TimerOutcome::Retry { at } => (TimerState::Pending.as_str(), Some(*at)),
                    };
                    applied += update
                        .execute(params![
                            r.id.to_string(),
                            owner,
                            state,
                            due.map(stored),
                            r.error,
                            now
                        ])
                        .map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(applied)
        })
        .await
    }

    async fn release_timers(&self, owner: &str, ids: &[Uuid]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let ids = ids.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            {
                let mut release = tx
                    .prepare_cached(
                        "UPDATE notification_timers SET lease_owner = NULL, lease_until = NULL \
                         WHERE id = ?1 AND lease_owner = ?2",
                    )
                    .map_err(map_db)?;
                for id in &ids {
                    release
                        .execute(params![id.to_string(), owner])
                        .map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)
        })
        .await
    }

    async fn timers(
        &self,
        tenant: TenantId,
        appointment_id: Option<Uuid>,
    ) -> StoreResult<Vec<TimerRecord>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM notification_timers \
                 WHERE tenant_id = ?1 AND (?2 IS NULL OR appointment_id = ?2) \
                 ORDER BY due_at, id"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(map_db)?;
            let mut rows = statement
                .query(params![
                    tenant.as_uuid().to_string(),
                    appointment_id.map(|a| a.to_string())
                ])
                .map_err(map_db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(map_db)? {
                out.push(decode(row)?);
            }
            Ok(out)
        })
        .await
    }
}
