//! [`WebhookStore`] on PostgreSQL. Claims use `FOR UPDATE SKIP LOCKED` and a
//! lease in the row, so instances sharing the database never lease one
//! message twice; times come from the database's clock, so instances whose
//! clocks disagree still agree on when a lease ends.
use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{map_db, PostgresStore};
use crate::secrets::{endpoint_context, Sealer};
use crate::store::webhooks::{
    outcome_name, AttemptDecision, AttemptFilter, AttemptRecord, AttemptResult, ClaimRequest,
    Claimed, EndpointRecord, EndpointSpec, MessageCounts, MessageFilter, MessageRecord,
    MessageState, NewMessage, ReplayFrom, WebhookStore,
};
use crate::store::{Position, StoreError, StoreResult};
use crate::webhooks::signature::SigningSecret;

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, practitioner_ids, \
     departments, enabled, rate_limit_per_second, max_attempts, disable_on_dead_letter, secret, \
     previous_secret, previous_secret_until, disabled_reason, created_at, updated_at";

const MESSAGE_COLUMNS: &str = "id, tenant_id, endpoint_id, event_id, position_tx, position_seq, \
     ordering_key, event_type, payload, state, attempts, failures, next_attempt_at, created_at, \
     delivered_at, last_error";

/// A stored webhook secret, opened: sealed, or plaintext from before sealing.
fn secret(sealer: &Sealer, id: Uuid, previous: bool, stored: &str) -> StoreResult<SigningSecret> {
    let text = sealer.open_text(&endpoint_context(id, previous), stored)?;
    SigningSecret::parse(&text)
        .map_err(|_| StoreError::Corrupt("a stored webhook secret is malformed".into()))
}

/// The secrets of `e` as stored: sealed, bound to the endpoint's id.
fn sealed_secrets(
    sealer: &Sealer,
    e: &EndpointRecord,
) -> (String, Option<String>, Option<DateTime<Utc>>) {
    let current = sealer.seal_text(&endpoint_context(e.id, false), &e.secret.expose());
    match &e.previous_secret {
        Some((s, until)) => (
            current,
            Some(sealer.seal_text(&endpoint_context(e.id, true), &s.expose())),
            Some(*until),
        ),
        None => (current, None, None),
    }
}

fn decode_endpoint(sealer: &Sealer, row: &Row) -> StoreResult<EndpointRecord> {
    let id: Uuid = row.get("id");
    let previous: Option<String> = row.get("previous_secret");
    let until: Option<DateTime<Utc>> = row.get("previous_secret_until");
    let previous_secret = match (previous, until) {
        (Some(s), Some(until)) => Some((secret(sealer, id, true, &s)?, until)),
        _ => None,
    };
    Ok(EndpointRecord {
        id,
        tenant: TenantId::from_uuid(row.get("tenant_id")),
        spec: EndpointSpec {
            url: row.get("url"),
            description: row.get("description"),
            event_types: row.get("event_types"),
            practitioner_ids: row.get("practitioner_ids"),
            departments: row.get("departments"),
            enabled: row.get("enabled"),
            rate_limit_per_second: row
                .get::<_, Option<i32>>("rate_limit_per_second")
                .map(|n| n as u32),
            max_attempts: row.get::<_, Option<i32>>("max_attempts").map(|n| n as u32),
            disable_on_dead_letter: row.get("disable_on_dead_letter"),
        },
        secret: secret(sealer, id, false, row.get("secret"))?,
        previous_secret,
        disabled_reason: row.get("disabled_reason"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

fn decode_message(row: &Row) -> StoreResult<MessageRecord> {
    let state: String = row.get("state");
    Ok(MessageRecord {
        id: row.get("id"),
        tenant: TenantId::from_uuid(row.get("tenant_id")),
        endpoint_id: row.get("endpoint_id"),
        event_id: row.get("event_id"),
        position: Position {
            tx: row.get("position_tx"),
            seq: row.get("position_seq"),
        },
        ordering_key: row.get("ordering_key"),
        event_type: row.get("event_type"),
        payload: row.get("payload"),
        state: MessageState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message state {state:?}")))?,
        attempts: row.get::<_, i32>("attempts") as u32,
        failures: row.get::<_, i32>("failures") as u32,
        next_attempt_at: row.get("next_attempt_at"),
        created_at: row.get("created_at"),
        delivered_at: row.get("delivered_at"),
        last_error: row.get("last_error"),
    })
}

fn decode_attempt(row: &Row) -> AttemptRecord {
    AttemptRecord {
        seq: row.get("seq"),
        message_id: row.get("message_id"),
        endpoint_id: row.get("endpoint_id"),
        event_id: row.get("event_id"),
        attempt: row.get::<_, i32>("attempt") as u32,
        started_at: row.get("started_at"),
        latency_ms: row.get::<_, i32>("latency_ms") as u32,
        status_code: row.get::<_, Option<i32>>("status_code").map(|c| c as u16),
        error: row.get("error"),
        response_excerpt: row.get("response_excerpt"),
        outcome: row.get("outcome"),
    }
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn create_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let (current, previous, until) = sealed_secrets(self.sealer(), e);
        client
            .execute(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, \
                 practitioner_ids, departments, enabled, rate_limit_per_second, max_attempts, \
                 disable_on_dead_letter, secret, previous_secret, previous_secret_until, \
                 disabled_reason, created_at, updated_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)",
                &[
                    &e.id,
                    &e.tenant.as_uuid(),
                    &e.spec.url,
                    &e.spec.description,
                    &e.spec.event_types,
                    &e.spec.practitioner_ids,
                    &e.spec.departments,
                    &e.spec.enabled,
                    &e.spec.rate_limit_per_second.map(|n| n as i32),
                    &e.spec.max_attempts.map(|n| n as i32),
                    &e.spec.disable_on_dead_letter,
                    &current,
                    &previous,
                    &until,
                    &e.disabled_reason,
                    &e.created_at,
                    &e.updated_at,
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn update_endpoint(&self, e: &EndpointRecord) -> StoreResult<bool> {
        let client = self.client().await?;
        let (current, previous, until) = sealed_secrets(self.sealer(), e);
        let n = client
            .execute(
                "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, \
                 practitioner_ids = $6, departments = $7, enabled = $8, \
                 rate_limit_per_second = $9, max_attempts = $10, disable_on_dead_letter = $11, \
                 secret = $12, previous_secret = $13, previous_secret_until = $14, \
                 disabled_reason = $15, updated_at = $16 \
                 WHERE id = $1 AND tenant_id = $2",
                &[
                    &e.id,
                    &e.tenant.as_uuid(),
                    &e.spec.url,
                    &e.spec.description,
                    &e.spec.event_types,
                    &e.spec.practitioner_ids,
                    &e.spec.departments,
                    &e.spec.enabled,
                    &e.spec.rate_limit_per_second.map(|n| n as i32),
                    &e.spec.max_attempts.map(|n| n as i32),
                    &e.spec.disable_on_dead_letter,
                    &current,
                    &previous,
                    &until,
                    &e.disabled_reason,
                    &e.updated_at,
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(n == 1)
    }

    async fn endpoint(&self, tenant: TenantId, id: Uuid) -> StoreResult<Option<EndpointRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2"
        );
        let row = client
            .query_opt(&sql, &[&id, &tenant.as_uuid()])
            .await
            .map_err(map_db)?;
        row.as_ref()
            .map(|r| decode_endpoint(self.sealer(), r))
            .transpose()
    }

    async fn endpoints(&self, tenant: Option<TenantId>) -> StoreResult<Vec<EndpointRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY created_at, id"
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let rows = client
            .query(&statement, &[&tenant.map(|t| t.as_uuid())])
            .await
            .map_err(map_db)?;
        rows.iter()
            .map(|r| decode_endpoint(self.sealer(), r))
            .collect()
    }

    async fn fanout_checkpoint(&self, tenant: TenantId) -> StoreResult<Position> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position_tx, position_seq FROM webhook_fanout_checkpoints WHERE tenant_id = $1",
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(map_db)?;
        Ok(row.map_or(Position::START, |r| Position {
            tx: r.get(0),
            seq: r.get(1),
        }))
    }

    async fn enqueue(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        messages: Vec<NewMessage>,
    ) -> StoreResult<usize> {
        let client = self.client().await?;
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let endpoints: Vec<Uuid> = messages.iter().map(|m| m.endpoint_id).collect();
        let events: Vec<Uuid> = messages.iter().map(|m| m.event_id).collect();
        let txs: Vec<i64> = messages.iter().map(|m| m.position.tx).collect();
        let seqs: Vec<i64> = messages.iter().map(|m| m.position.seq).collect();
        let keys: Vec<&str> = messages.iter().map(|m| m.ordering_key.as_str()).collect();
        let types: Vec<&str> = messages.iter().map(|m| m.event_type.as_str()).collect();
        let payloads: Vec<&str> = messages.iter().map(|m| m.payload.as_str()).collect();
        let statement = client
            .prepare_cached(
                "SELECT buktor_webhook_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await
            .map_err(map_db)?;
        let stored: i32 = client
            .query_one(
                &statement,
                &[
                    &tenant.as_uuid(),
                    &expected.tx,
                    &expected.seq,
                    &to.tx,
                    &to.seq,
                    &ids,
                    &endpoints,
                    &events,
                    &txs,
                    &seqs,
                    &keys,
                    &types,
                    &payloads,
                ],
            )
            .await
            .map_err(map_db)?
            .get(0);
        if stored < 0 {
            return Err(StoreError::CheckpointMoved {
                projection: "webhook-fanout".into(),
            });
        }
        Ok(stored as usize)
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let client = self.client().await?;
        let sql = format!(
            "WITH picked AS ( \
               SELECT m.id FROM webhook_endpoints e \
               CROSS JOIN LATERAL ( \
                 SELECT id, next_attempt_at FROM webhook_messages w \
                 WHERE w.endpoint_id = e.id AND w.state = 'pending' \
                   AND w.next_attempt_at <= now() \
                   AND (w.lease_until IS NULL OR w.lease_until < now()) \
                 ORDER BY w.next_attempt_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) m \
               WHERE e.enabled AND NOT (e.id = ANY ($3)) \
               ORDER BY m.next_attempt_at LIMIT $4) \
             UPDATE webhook_messages w \
                SET lease_owner = $1, lease_until = now() + $5 * interval '1 millisecond' \
               FROM picked WHERE w.id = picked.id \
             RETURNING {}",
            MESSAGE_COLUMNS
                .split(", ")
                .map(|c| format!("w.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &request.owner,
                    &(request.per_endpoint as i64),
                    &request.skip_endpoints,
                    &(request.limit as i64),
                    &millis(request.lease),
                ],
            )
            .await
            .map_err(map_db)?;
        let mut messages: Vec<MessageRecord> = rows
            .iter()
            .map(decode_message)
            .collect::<StoreResult<_>>()?;
        if messages.is_empty() {
            return Ok(vec![]);
        }
        messages.sort_by_key(|m| m.next_attempt_at);
        // The endpoints as they are now: a message claimed just after a
        // rotation is signed with the new secret, sent to a changed URL.
        let mut ids: Vec<Uuid> = messages.iter().map(|m| m.endpoint_id).collect();
        ids.sort();
        ids.dedup();
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ANY ($1)");
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let endpoints: std::collections::HashMap<Uuid, std::sync::Arc<EndpointRecord>> = client
            .query(&statement, &[&ids])
            .await
            .map_err(map_db)?
            .iter()
            .map(|r| decode_endpoint(self.sealer(), r).map(|e| (e.id, std::sync::Arc::new(e))))
            .collect::<StoreResult<_>>()?;
        messages
            .into_iter()
            .map(|message| {
                let endpoint = endpoints
                    .get(&message.endpoint_id)
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("message {} has no endpoint", message.id))
                    })?;
                Ok(Claimed { message, endpoint })
            })
            .collect()
    }

    async fn complete(&self, owner: &str, results: &[AttemptResult]) -> StoreResult<Vec<String>> {
        if results.is_empty() {
            return Ok(vec![]);
        }
        let client = self.client().await?;
        let mut ids = Vec::with_capacity(results.len());
        let mut outcomes = Vec::with_capacity(results.len());
        let mut retry_ms = Vec::with_capacity(results.len());
        let mut last_errors = Vec::with_capacity(results.len());
        let mut endpoints = Vec::with_capacity(results.len());
        let mut started = Vec::with_capacity(results.len());
        let mut latencies = Vec::with_capacity(results.len());
        let mut codes = Vec::with_capacity(results.len());
        let mut errors = Vec::with_capacity(results.len());
        let mut excerpts = Vec::with_capacity(results.len());
        let mut disable = Vec::with_capacity(results.len());
        for r in results {
            ids.push(r.message_id.as_str());
            outcomes.push(outcome_name(&r.decision));
            retry_ms.push(match &r.decision {
                AttemptDecision::Retry { after } => millis(*after),
                _ => 0.0,
            });
            last_errors.push(r.last_error());
            endpoints.push(r.endpoint_id);
            started.push(r.started_at);
            latencies.push(r.latency_ms.min(i32::MAX as u32) as i32);
            codes.push(r.status_code.map(i32::from));
            errors.push(r.error.as_deref());
            excerpts.push(r.response_excerpt.as_deref());
            disable.push(matches!(
                r.decision,
                AttemptDecision::DeadLetter {
                    disable_endpoint: true
                }
            ));
        }
        let statement = client
            .prepare_cached(
                "SELECT buktor_webhook_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .await
            .map_err(map_db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &owner,
                    &ids,
                    &outcomes,
                    &retry_ms,
                    &last_errors,
                    &endpoints,
                    &started,
                    &latencies,
                    &codes,
                    &errors,
                    &excerpts,
                    &disable,
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn release(&self, owner: &str, message_ids: &[String]) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE webhook_messages SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY ($1) AND lease_owner = $2",
                &[&message_ids, &owner],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn messages(
        &self,
        tenant: TenantId,
        filter: &MessageFilter,
    ) -> StoreResult<Vec<MessageRecord>> {
        let client = self.client().await?;
        let (after_tx, after_seq, after_endpoint) = match filter.after {
            Some((p, e)) => (Some(p.tx), Some(p.seq), Some(e)),
            None => (None, None, None),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM webhook_messages \
             WHERE tenant_id = $1 \
               AND ($2::uuid IS NULL OR endpoint_id = $2) \
               AND ($3::uuid IS NULL OR event_id = $3) \
               AND ($4::text IS NULL OR state = $4) \
               AND ($5::bigint IS NULL OR (position_tx, position_seq, endpoint_id) > ($5, $6, $7)) \
             ORDER BY position_tx, position_seq, endpoint_id LIMIT $8"
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &tenant.as_uuid(),
                    &filter.endpoint_id,
                    &filter.event_id,
                    &filter.state.map(|s| s.as_str()),
                    &after_tx,
                    &after_seq,
                    &after_endpoint,
                    &(filter.limit as i64),
                ],
            )
            .await
            .map_err(map_db)?;
        rows.iter().map(decode_message).collect()
    }

    async fn message(&self, tenant: TenantId, id: &str) -> StoreResult<Option<MessageRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE id = $1 AND tenant_id = $2"
        );
        let row = client
            .query_opt(&sql, &[&id, &tenant.as_uuid()])
            .await
            .map_err(map_db)?;
        row.as_ref().map(decode_message).transpose()
    }

    async fn attempts(
        &self,
        tenant: TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT seq, message_id, endpoint_id, event_id, attempt, started_at, latency_ms, \
                 status_code, error, response_excerpt, outcome FROM webhook_attempts \
                 WHERE tenant_id = $1 \
                   AND ($2::uuid IS NULL OR endpoint_id = $2) \
                   AND ($3::text IS NULL OR message_id = $3) \
                   AND ($4::uuid IS NULL OR event_id = $4) \
                   AND ($5::bigint IS NULL OR seq > $5) \
                 ORDER BY seq LIMIT $6",
            )
            .await
            .map_err(map_db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &tenant.as_uuid(),
                    &filter.endpoint_id,
                    &filter.message_id,
                    &filter.event_id,
                    &filter.after,
                    &(filter.limit as i64),
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(rows.iter().map(decode_attempt).collect())
    }

    async fn message_counts(&self, tenant: TenantId, endpoint: Uuid) -> StoreResult<MessageCounts> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT state, count(*) FROM webhook_messages \
                 WHERE tenant_id = $1 AND endpoint_id = $2 GROUP BY state",
                &[&tenant.as_uuid(), &endpoint],
            )
            .await
            .map_err(map_db)?;
        let mut counts = MessageCounts::default();
        for row in rows {
            let n = row.get::<_, i64>(1) as u64;
            match MessageState::parse(row.get(0)) {
                Some(MessageState::Queued) => counts.queued = n,
                Some(MessageState::Pending) => counts.pending = n,
                Some(MessageState::Delivered) => counts.delivered = n,
                Some(MessageState::Dead) => counts.dead = n,
                None => {}
            }
        }
        Ok(counts)
    }

    async fn replay_message(&self, tenant: TenantId, id: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        let Some(row) = tx
            .query_opt(
                "SELECT endpoint_id FROM webhook_messages WHERE id = $1 AND tenant_id = $2",
                &[&id, &tenant.as_uuid()],
            )
            .await
            .map_err(map_db)?
        else {
            return Ok(false);
        };
        let endpoint: Uuid = row.get(0);
        tx.execute("SELECT buktor_webhook_lock(ARRAY[$1::uuid])", &[&endpoint])
            .await
            .map_err(map_db)?;
        let n = tx
            .execute(
                "UPDATE webhook_messages SET state = 'pending', failures = 0, \
                 next_attempt_at = now(), lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND state = 'dead'",
                &[&id],
            )
            .await
            .map_err(map_db)?;
        tx.commit().await.map_err(map_db)?;
        Ok(n == 1)
    }

    async fn replay_endpoint(
        &self,
        tenant: TenantId,
        endpoint: Uuid,
        from: ReplayFrom,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        tx.execute("SELECT buktor_webhook_lock(ARRAY[$1::uuid])", &[&endpoint])
            .await
            .map_err(map_db)?;
        let (p, t) = match from {
            ReplayFrom::Position(p) => (Some(p), None),
            ReplayFrom::Time(t) => (None, Some(t)),
        };
        let rows = tx
            .query(
                "UPDATE webhook_messages SET state = 'queued', failures = 0 \
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND state IN ('delivered', 'dead') \
                   AND ($3::bigint IS NULL OR (position_tx, position_seq) >= ($3, $4)) \
                   AND ($5::timestamptz IS NULL OR created_at >= $5) \
                 RETURNING ordering_key",
                &[
                    &tenant.as_uuid(),
                    &endpoint,
                    &p.map(|p| p.tx),
                    &p.map(|p| p.seq),
                    &t,
                ],
            )
            .await
            .map_err(map_db)?;
        let mut keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        keys.sort();
        keys.dedup();
        // A due message behind a requeued one of its key waits for it again.
        tx.execute(
            "UPDATE webhook_messages m SET state = 'queued' \
             WHERE m.endpoint_id = $1 AND m.ordering_key = ANY ($2) AND m.state = 'pending' \
               AND EXISTS (SELECT 1 FROM webhook_messages h \
                           WHERE h.endpoint_id = m.endpoint_id \
                             AND h.ordering_key = m.ordering_key AND h.state <> 'delivered' \
                             AND (h.position_tx, h.position_seq) < (m.position_tx, m.position_seq))",
            &[&endpoint, &keys],
        )
        .await
        .map_err(map_db)?;
        tx.execute("SELECT buktor_webhook_promote($1, $2)", &[&endpoint, &keys])
            .await
            .map_err(map_db)?;
        tx.commit().await.map_err(map_db)?;
        Ok(rows.len() as u64)
    }
}
