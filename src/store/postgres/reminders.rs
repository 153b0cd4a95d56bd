//! [`ReminderStore`] on PostgreSQL. Claims take due rows with `FOR UPDATE
//! SKIP LOCKED` and write a lease into them, so instances sharing the
//! database never lease one timer twice. Due times compare with the
//! caller's clock (the server's, which tests move); leases with the
//! database's, so instances whose clocks differ agree on when one ends.
use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{map_db, PostgresStore};
use crate::store::reminders::{
    ReminderStore, TimerChange, TimerOutcome, TimerRecord, TimerResult, TimerSpec, TimerState,
};
use crate::store::{Position, StoreError, StoreResult};

const COLUMNS: &str =
    "id, tenant_id, appointment_id, kind, channel, due_at, state, attempts, last_error";

fn decode(row: &Row) -> StoreResult<TimerRecord> {
    let state: String = row.get("state");
    Ok(TimerRecord {
        spec: TimerSpec {
            id: row.get("id"),
            tenant: TenantId::from_uuid(row.get("tenant_id")),
            appointment_id: row.get("appointment_id"),
            kind: row.get("kind"),
            channel: row.get("channel"),
            due_at: row.get("due_at"),
        },
        state: TimerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown timer state {state:?}")))?,
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        last_error: row.get("last_error"),
    })
}

#[async_trait]
impl ReminderStore for PostgresStore {
    async fn planner_checkpoint(&self, tenant: TenantId) -> StoreResult<Position> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position_tx, position_seq FROM notification_planner_checkpoints \
                 WHERE tenant_id = $1",
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(map_db)?;
        Ok(row.map_or(Position::START, |r| Position {
            tx: r.get(0),
            seq: r.get(1),
        }))
    }

    async fn plan(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        changes: &[TimerChange],
    ) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        tx.execute(
            "INSERT INTO notification_planner_checkpoints (tenant_id, position_tx, position_seq) \
             VALUES ($1, 0, 0) ON CONFLICT (tenant_id) DO NOTHING",
            &[&tenant.as_uuid()],
        )
        .await
        .map_err(map_db)?;
        let moved = tx
            .execute(
                "UPDATE notification_planner_checkpoints \
                    SET position_tx = $4, position_seq = $5, updated_at = now() \
                  WHERE tenant_id = $1 AND position_tx = $2 AND position_seq = $3",
                &[
                    &tenant.as_uuid(),
                    &expected.tx,
                    &expected.seq,
                    &to.tx,
                    &to.seq,
                ],
            )
            .await
            .map_err(map_db)?;
        if moved != 1 {
            return Err(StoreError::CheckpointMoved {
                projection: "notification-planner".into(),
            });
        }
        if !changes.is_empty() {
            let ids: Vec<Uuid> = changes.iter().map(|c| c.spec.id).collect();
            let tenants: Vec<Uuid> = changes.iter().map(|c| c.spec.tenant.as_uuid()).collect();
            let appointments: Vec<Uuid> = changes.iter().map(|c| c.spec.appointment_id).collect();
            let kinds: Vec<&str> = changes.iter().map(|c| c.spec.kind.as_str()).collect();
            let channels: Vec<&str> = changes.iter().map(|c| c.spec.channel.as_str()).collect();
            let due: Vec<DateTime<Utc>> = changes.iter().map(|c| c.spec.due_at).collect();
            let cancel: Vec<bool> = changes.iter().map(|c| c.cancel).collect();
            // One statement for the batch; a timer named twice in it keeps
            // its last change (the planner lists them in decision order).
            let statement = tx
                .prepare_cached(
                    "INSERT INTO notification_timers AS t \
                         (id, tenant_id, appointment_id, kind, channel, due_at, state) \
                     SELECT DISTINCT ON (u.id) u.id, u.tenant, u.appointment, u.kind, u.channel, \
                            u.due, CASE WHEN u.cancel THEN 'cancelled' ELSE 'pending' END \
                       FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                                   $6::timestamptz[], $7::bool[]) WITH ORDINALITY \
                            AS u(id, tenant, appointment, kind, channel, due, cancel, n) \
                      ORDER BY u.id, u.n DESC \
                     ON CONFLICT (id) DO UPDATE \
                        SET due_at = CASE WHEN excluded.state = 'pending' \
                                          THEN excluded.due_at ELSE t.due_at END, \
                            state = excluded.state, updated_at = now() \
                      WHERE t.state = 'pending'",
                )
                .await
                .map_err(map_db)?;
            tx.execute(
                &statement,
                &[
                    &ids,
                    &tenants,
                    &appointments,
                    &kinds,
                    &channels,
                    &due,
                    &cancel,
                ],
            )
            .await
            .map_err(map_db)?;
        }
        tx.commit().await.map_err(map_db)?;
        Ok(changes.len())
    }

    async fn claim_timers(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Vec<TimerRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "WITH picked AS ( \
               SELECT id FROM notification_timers \
                WHERE state = 'pending' AND due_at <= $2 \
                  AND (lease_until IS NULL OR lease_until < now()) \
                ORDER BY due_at LIMIT $3 \
                FOR UPDATE SKIP LOCKED) \
             UPDATE notification_timers t \
                SET lease_owner = $1, lease_until = now() + $4 * interval '1 millisecond' \
               FROM picked WHERE t.id = picked.id \
             RETURNING {}",
            COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &owner,
                    &now,
                    &(limit.min(i64::MAX as usize) as i64),
                    &(lease.as_secs_f64() * 1000.0),
                ],
            )
            .await
            .map_err(map_db)?;
        let mut timers: Vec<TimerRecord> = rows.iter().map(decode).collect::<StoreResult<_>>()?;
        timers.sort_by_key(|t| t.spec.due_at);
        Ok(timers)
    }

    async fn complete_timers(&self, owner: &str, results: &[TimerResult]) -> StoreResult<usize> {
        if results.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let ids: Vec<Uuid> = results.iter().map(|r| r.id).collect();
        let states: Vec<&str> = results
            .iter()
            .map(|r| match &r.outcome {
                TimerOutcome::Done(state) => state.as_str(),
                TimerOutcome::Retry { .. } => TimerState::Pending.as_str(),
            })
            .collect();
        let due: Vec<Option<DateTime<Utc>>> = results
            .iter()
            .map(|r| match &r.outcome {
                TimerOutcome::Retry { at } => Some(*at),
                TimerOutcome::Done(_) => None,
            })
            .collect();
        let errors: Vec<Option<&str>> = results.iter().map(|r| r.error.as_deref()).collect();
        let statement = client
            .prepare_cached(
                "UPDATE notification_timers t \
                    SET state = u.state, due_at = coalesce(u.due, t.due_at), \
                        attempts = t.attempts + 1, last_error = u.error, \
                        lease_owner = NULL, lease_until = NULL, updated_at = now() \
                   FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::text[]) \
                        AS u(id, state, due, error) \
                  WHERE t.id = u.id AND t.lease_owner = $1",
            )
            .await
            .map_err(map_db)?;
        let n = client
            .execute(&statement, &[&owner, &ids, &states, &due, &errors])
            .await
            .map_err(map_db)?;
        Ok(n as usize)
    }

    async fn release_timers(&self, owner: &str, ids: &[Uuid]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE notification_timers SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY ($1) AND lease_owner = $2",
                &[&ids, &owner],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn timers(
        &self,
        tenant: TenantId,
        appointment_id: Option<Uuid>,
    ) -> StoreResult<Vec<TimerRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM notification_timers \
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR appointment_id = $2) \
             ORDER BY due_at, id"
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let rows = client
            .query(&statement, &[&tenant.as_uuid(), &appointment_id])
            .await
            .map_err(map_db)?;
        rows.iter().map(decode).collect()
    }
}
