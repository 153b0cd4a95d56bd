//! [`WebhookStore`] on SQLite, with the semantics of the PostgreSQL backend
//! (`src/store/postgres/webhooks.rs`, `migrations/postgres/0005_webhooks.sql`).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction on the store's one writer
//! connection, so writes never interleave: that stands in for PostgreSQL's
//! per-endpoint lock (a promotion never misses a message enqueued beside it)
//! and for `SKIP LOCKED` (two claims never lease one message). The clock is
//! this process's `Utc::now()`, read once per transaction as PostgreSQL's
//! `now()` is: one process owns the file, so there is no other clock to agree
//! with. Times are compared as text, which the fixed-width format written by
//! [`format_time`] keeps in time order.
use std::collections::BTreeSet;

use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{format_time, map_db, parse_time, parse_uuid, to_micros, SqliteStore};
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

const ATTEMPT_COLUMNS: &str = "seq, message_id, endpoint_id, event_id, attempt, started_at, \
     latency_ms, status_code, error, response_excerpt, outcome";

/// The name a moved fan-out checkpoint is reported under (as on PostgreSQL).
const FANOUT: &str = "webhook-fanout";

/// The latest time stored: later ones would no longer sort as text.
const LATEST: &str = "9999-12-31T23:59:59.999999Z";

fn col<T: FromSql>(row: &Row<'_>, name: &str) -> StoreResult<T> {
    row.get(name).map_err(map_db)
}

/// A stored webhook secret, opened: sealed, or plaintext from before sealing.
fn secret(sealer: &Sealer, id: Uuid, previous: bool, stored: &str) -> StoreResult<SigningSecret> {
    let text = sealer.open_text(&endpoint_context(id, previous), stored)?;
    SigningSecret::parse(&text)
        .map_err(|_| StoreError::Corrupt("a stored webhook secret is malformed".into()))
}

fn json_list<T: DeserializeOwned>(text: &str) -> StoreResult<Vec<T>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a stored webhook list {text:?}: {e}")))
}

fn to_json<T: serde::Serialize>(list: &[T]) -> StoreResult<String> {
    serde_json::to_string(list).map_err(StoreError::backend)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `now` plus `d`, as stored text; past year 9999 it is [`LATEST`].
fn later(now: DateTime<Utc>, d: std::time::Duration) -> String {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map(format_time)
        .filter(|t| t.len() == LATEST.len())
        .unwrap_or_else(|| LATEST.to_owned())
}

fn decode_endpoint(sealer: &Sealer, row: &Row<'_>) -> StoreResult<EndpointRecord> {
    let id = parse_uuid(&col::<String>(row, "id")?)?;
    let previous: Option<String> = col(row, "previous_secret")?;
    let until: Option<String> = col(row, "previous_secret_until")?;
    let previous_secret = match (previous, until) {
        (Some(s), Some(until)) => Some((secret(sealer, id, true, &s)?, parse_time(&until)?)),
        _ => None,
    };
    let practitioner_ids: Vec<String> = json_list(&col::<String>(row, "practitioner_ids")?)?;
    Ok(EndpointRecord {
        id,
        tenant: TenantId::from_uuid(parse_uuid(&col::<String>(row, "tenant_id")?)?),
        spec: EndpointSpec {
            url: col(row, "url")?,
            description: col(row, "description")?,
            event_types: json_list(&col::<String>(row, "event_types")?)?,
            practitioner_ids: practitioner_ids
                .iter()
                .map(|id| parse_uuid(id))
                .collect::<StoreResult<_>>()?,
            departments: json_list(&col::<String>(row, "departments")?)?,
            enabled: col(row, "enabled")?,
            rate_limit_per_second: col::<Option<i64>>(row, "rate_limit_per_second")?.map(count),
            max_attempts: col::<Option<i64>>(row, "max_attempts")?.map(count),
            disable_on_dead_letter: col(row, "disable_on_dead_letter")?,
        },
        secret: secret(sealer, id, false, &col::<String>(row, "secret")?)?,
        previous_secret,
        disabled_reason: col(row, "disabled_reason")?,
        created_at: parse_time(&col::<String>(row, "created_at")?)?,
        updated_at: parse_time(&col::<String>(row, "updated_at")?)?,
    })
}

fn decode_message(row: &Row<'_>) -> StoreResult<MessageRecord> {
    let state: String = col(row, "state")?;
    Ok(MessageRecord {
        id: col(row, "id")?,
        tenant: TenantId::from_uuid(parse_uuid(&col::<String>(row, "tenant_id")?)?),
        endpoint_id: parse_uuid(&col::<String>(row, "endpoint_id")?)?,
        event_id: parse_uuid(&col::<String>(row, "event_id")?)?,
        position: Position {
            tx: col(row, "position_tx")?,
            seq: col(row, "position_seq")?,
        },
        ordering_key: col(row, "ordering_key")?,
        event_type: col(row, "event_type")?,
        payload: col(row, "payload")?,
        state: MessageState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message state {state:?}")))?,
        attempts: count(col(row, "attempts")?),
        failures: count(col(row, "failures")?),
        next_attempt_at: parse_time(&col::<String>(row, "next_attempt_at")?)?,
        created_at: parse_time(&col::<String>(row, "created_at")?)?,
        delivered_at: col::<Option<String>>(row, "delivered_at")?
            .as_deref()
            .map(parse_time)
            .transpose()?,
        last_error: col(row, "last_error")?,
    })
}

fn decode_attempt(row: &Row<'_>) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        seq: col(row, "seq")?,
        message_id: col(row, "message_id")?,
        endpoint_id: parse_uuid(&col::<String>(row, "endpoint_id")?)?,
        event_id: parse_uuid(&col::<String>(row, "event_id")?)?,
        attempt: count(col(row, "attempt")?),
        started_at: parse_time(&col::<String>(row, "started_at")?)?,
        latency_ms: count(col(row, "latency_ms")?),
        status_code: col::<Option<i64>>(row, "status_code")?
            .map(|c| u16::try_from(c).unwrap_or(u16::MAX)),
        error: col(row, "error")?,
        response_excerpt: col(row, "response_excerpt")?,
        outcome: col(row, "outcome")?,
    })
}

/// Runs `sql` and decodes every row it returns.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    decode: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(map_db)?;
    let mut rows = statement.query(params).map_err(map_db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_db)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Makes the first undelivered message of `key` at `endpoint` due, if it
/// is queued (`buktor_webhook_promote` on PostgreSQL).
fn promote(conn: &Connection, endpoint: &str, key: &str, now: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_messages SET state = 'pending', next_attempt_at = ?3, failures = 0 \
         WHERE state = 'queued' AND id = ( \
             SELECT id FROM webhook_messages \
             WHERE endpoint_id = ?1 AND ordering_key = ?2 AND state <> 'delivered' \
             ORDER BY position_tx, position_seq, id LIMIT 1)",
    )
    .map_err(map_db)?
    .execute(params![endpoint, key, now])
    .map_err(map_db)?;
    Ok(())
}

fn disable(conn: &Connection, endpoint: Uuid, reason: &str, now: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?2, updated_at = ?3 \
         WHERE id = ?1 AND enabled = 1",
    )
    .map_err(map_db)?
    .execute(params![endpoint.to_string(), reason, now])
    .map_err(map_db)?;
    Ok(())
}

/// An endpoint's values that are stored in another form than the record
/// holds them: ids as text, lists as JSON, the previous secret split in two.
struct EndpointValues {
    id: String,
    tenant: String,
    event_types: String,
    practitioner_ids: String,
    departments: String,
    /// The secrets, sealed and bound to the endpoint's id.
    secret: String,
    previous: Option<String>,
    until: Option<String>,
}

impl EndpointValues {
    fn of(sealer: &Sealer, e: &EndpointRecord) -> StoreResult<Self> {
        let (previous, until) = match &e.previous_secret {
            Some((s, until)) => (
                Some(sealer.seal_text(&endpoint_context(e.id, true), &s.expose())),
                Some(format_time(*until)),
            ),
            None => (None, None),
        };
        Ok(EndpointValues {
            id: e.id.to_string(),
            tenant: e.tenant.as_uuid().to_string(),
            event_types: to_json(&e.spec.event_types)?,
            practitioner_ids: to_json(&e.spec.practitioner_ids)?,
            departments: to_json(&e.spec.departments)?,
            secret: sealer.seal_text(&endpoint_context(e.id, false), &e.secret.expose()),
            previous,
            until,
        })
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
        let e = e.clone();
        let v = EndpointValues::of(&self.sealer, &e)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, \
                 practitioner_ids, departments, enabled, rate_limit_per_second, max_attempts, \
                 disable_on_dead_letter, secret, previous_secret, previous_secret_until, \
                 disabled_reason, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )
            .map_err(map_db)?
            .execute(params![
                v.id,
                v.tenant,
                e.spec.url,
                e.spec.description,
                v.event_types,
                v.practitioner_ids,
                v.departments,
                e.spec.enabled,
                e.spec.rate_limit_per_second,
                e.spec.max_attempts,
                e.spec.disable_on_dead_letter,
                v.secret,
                v.previous,
                v.until,
                e.disabled_reason,
                format_time(e.created_at),
                format_time(e.updated_at),
            ])
            .map_err(map_db)?;
            Ok(())
        })
        .await
    }

    async fn update_endpoint(&self, e: &EndpointRecord) -> StoreResult<bool> {
        let e = e.clone();
        let v = EndpointValues::of(&self.sealer, &e)?;
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE webhook_endpoints SET url = ?3, description = ?4, event_types = ?5, \
                     practitioner_ids = ?6, departments = ?7, enabled = ?8, \
                     rate_limit_per_second = ?9, max_attempts = ?10, \
                     disable_on_dead_letter = ?11, secret = ?12, previous_secret = ?13, \
                     previous_secret_until = ?14, disabled_reason = ?15, updated_at = ?16 \
                     WHERE id = ?1 AND tenant_id = ?2",
                )
                .map_err(map_db)?
                .execute(params![
                    v.id,
                    v.tenant,
                    e.spec.url,
                    e.spec.description,
                    v.event_types,
                    v.practitioner_ids,
                    v.departments,
                    e.spec.enabled,
                    e.spec.rate_limit_per_second,
                    e.spec.max_attempts,
                    e.spec.disable_on_dead_letter,
                    v.secret,
                    v.previous,
                    v.until,
                    e.disabled_reason,
                    format_time(e.updated_at),
                ])
                .map_err(map_db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn endpoint(&self, tenant: TenantId, id: Uuid) -> StoreResult<Option<EndpointRecord>> {
        let sealer = self.sealer.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1 AND tenant_id = ?2"
            );
            let found = query_all(
                conn,
                &sql,
                params![id.to_string(), tenant.as_uuid().to_string()],
                |r: &Row<'_>| decode_endpoint(&sealer, r),
            )?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn endpoints(&self, tenant: Option<TenantId>) -> StoreResult<Vec<EndpointRecord>> {
        let sealer = self.sealer.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
                 WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY created_at, id"
            );
            query_all(
                conn,
                &sql,
                params![tenant.map(|t| t.as_uuid().to_string())],
                |r: &Row<'_>| decode_endpoint(&sealer, r),
            )
        })
        .await
    }

    async fn fanout_checkpoint(&self, tenant: TenantId) -> StoreResult<Position> {
        self.read(move |conn| {
            super::follower_checkpoint(
                conn,
                "webhook_fanout_checkpoints",
                &tenant.as_uuid().to_string(),
            )
        })
        .await
    }

    async fn enqueue(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        messages: Vec<NewMessage>,
    ) -> StoreResult<usize> {
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = format_time(Utc::now());
            let tenant = tenant.as_uuid().to_string();
            super::move_follower_checkpoint(
                &tx,
                "webhook_fanout_checkpoints",
                FANOUT,
                &tenant,
                expected,
                to,
            )?;
            let mut inserted = 0;
            let mut touched = BTreeSet::new();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, \
                         position_tx, position_seq, ordering_key, event_type, payload, state, \
                         next_attempt_at, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?10, ?10) \
                         ON CONFLICT DO NOTHING",
                    )
                    .map_err(map_db)?;
                for m in &messages {
                    let endpoint = m.endpoint_id.to_string();
                    inserted += insert
                        .execute(params![
                            m.id,
                            tenant,
                            endpoint,
                            m.event_id.to_string(),
                            m.position.tx,
                            m.position.seq,
                            m.ordering_key,
                            m.event_type,
                            m.payload,
                            now,
                        ])
                        .map_err(map_db)?;
                    touched.insert((endpoint, m.ordering_key.as_str()));
                }
            }
            for (endpoint, key) in &touched {
                promote(&tx, endpoint, key, &now)?;
            }
            tx.commit().map_err(map_db)?;
            Ok(inserted)
        })
        .await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let request = request.clone();
        let skip = to_json(&request.skip_endpoints)?;
        let sealer = self.sealer.clone();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = to_micros(Utc::now());
            let now_text = format_time(now);
            let until = later(now, request.lease);
            let picked: Vec<String> = {
                let mut statement = tx
                    .prepare_cached(
                        "SELECT id FROM ( \
                             SELECT m.id, m.next_attempt_at, m.position_tx, m.position_seq, \
                                    row_number() OVER (PARTITION BY m.endpoint_id \
                                        ORDER BY m.next_attempt_at, m.position_tx, m.position_seq) \
                                        AS nth \
                             FROM webhook_endpoints e \
                             JOIN webhook_messages m ON m.endpoint_id = e.id \
                             WHERE e.enabled = 1 \
                               AND e.id NOT IN (SELECT value FROM json_each(?2)) \
                               AND m.state = 'pending' AND m.next_attempt_at <= ?1 \
                               AND (m.lease_until IS NULL OR m.lease_until < ?1)) \
                         WHERE nth <= ?3 \
                         ORDER BY next_attempt_at, position_tx, position_seq LIMIT ?4",
                    )
                    .map_err(map_db)?;
                let rows = statement
                    .query_map(
                        params![
                            now_text,
                            skip,
                            sql_limit(request.per_endpoint),
                            sql_limit(request.limit)
                        ],
                        |r| r.get(0),
                    )
                    .map_err(map_db)?;
                rows.collect::<Result<_, _>>().map_err(map_db)?
            };
            let sql = format!(
                "UPDATE webhook_messages SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 \
                 RETURNING {MESSAGE_COLUMNS}"
            );
            let mut messages = Vec::with_capacity(picked.len());
            for id in &picked {
                messages.extend(query_all(
                    &tx,
                    &sql,
                    params![id, request.owner, until],
                    decode_message,
                )?);
            }
            // The endpoints as they are now: a message claimed just after a
            // rotation is signed with the new secret.
            let mut endpoints = std::collections::HashMap::new();
            let mut claimed = Vec::with_capacity(messages.len());
            for message in messages {
                let endpoint = match endpoints.entry(message.endpoint_id) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        std::sync::Arc::clone(e.get())
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let endpoint = query_all(
                            &tx,
                            &format!(
                                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1"
                            ),
                            params![message.endpoint_id.to_string()],
                            |r: &Row<'_>| decode_endpoint(&sealer, r),
                        )?
                        .pop()
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("message {} has no endpoint", message.id))
                        })?;
                        std::sync::Arc::clone(v.insert(std::sync::Arc::new(endpoint)))
                    }
                };
                claimed.push(Claimed { message, endpoint });
            }
            tx.commit().map_err(map_db)?;
            Ok(claimed)
        })
        .await
    }

    async fn complete(&self, owner: &str, results: &[AttemptResult]) -> StoreResult<Vec<String>> {
        if results.is_empty() {
            return Ok(vec![]);
        }
        let owner = owner.to_owned();
        let results = results.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = to_micros(Utc::now());
            let now_text = format_time(now);
            let mut dead = Vec::new();
            for r in &results {
                let (state, next_attempt_at, failed) = match &r.decision {
                    AttemptDecision::Delivered => ("delivered", now_text.clone(), false),
                    AttemptDecision::Retry { after } => ("pending", later(now, *after), true),
                    AttemptDecision::DeadLetter { .. } => ("dead", now_text.clone(), true),
                    AttemptDecision::EndpointGone => ("pending", now_text.clone(), true),
                };
                let last_error = r.last_error();
                let updated = tx
                    .prepare_cached(
                        // A failed attempt of a message that a replay queued
                        // behind its key while in flight leaves it queued.
                        "UPDATE webhook_messages \
                         SET state = CASE WHEN ?3 = 'pending' AND state = 'queued' \
                                          THEN 'queued' ELSE ?3 END, \
                         attempts = attempts + 1, \
                         failures = failures + ?4, lease_owner = NULL, lease_until = NULL, \
                         next_attempt_at = ?5, \
                         delivered_at = CASE WHEN ?3 = 'delivered' THEN ?6 ELSE delivered_at END, \
                         last_error = ?7 \
                         WHERE id = ?1 AND lease_owner = ?2 \
                         RETURNING attempts, ordering_key, event_id",
                    )
                    .map_err(map_db)?
                    .query_row(
                        params![
                            r.message_id,
                            owner,
                            state,
                            i64::from(failed),
                            next_attempt_at,
                            now_text,
                            last_error,
                        ],
                        |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, String>(2)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(map_db)?;
                let (attempt, event_id) = match &updated {
                    Some((attempt, _, event_id)) => (*attempt, event_id.clone()),
                    None => {
                        // Our lease ran out and someone else has the message:
                        // keep the record of what we saw, change nothing else.
                        tracing::warn!(message = %r.message_id, "attempt finished after its lease ended");
                        tx.prepare_cached(
                            "SELECT attempts + 1, event_id FROM webhook_messages WHERE id = ?1",
                        )
                        .map_err(map_db)?
                        .query_row([&r.message_id], |row| Ok((row.get(0)?, row.get(1)?)))
                        .map_err(map_db)?
                    }
                };
                tx.prepare_cached(
                    "INSERT INTO webhook_attempts (tenant_id, message_id, endpoint_id, event_id, \
                     attempt, started_at, latency_ms, status_code, error, response_excerpt, \
                     outcome) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(map_db)?
                .execute(params![
                    r.tenant.as_uuid().to_string(),
                    r.message_id,
                    r.endpoint_id.to_string(),
                    event_id,
                    attempt,
                    format_time(r.started_at),
                    r.latency_ms,
                    r.status_code,
                    r.error,
                    r.response_excerpt,
                    outcome_name(&r.decision),
                ])
                .map_err(map_db)?;
                let Some((_, key, _)) = updated else { continue };
                match &r.decision {
                    AttemptDecision::Delivered => {
                        promote(&tx, &r.endpoint_id.to_string(), &key, &now_text)?;
                    }
                    AttemptDecision::DeadLetter { disable_endpoint } => {
                        dead.push(r.message_id.clone());
                        if *disable_endpoint {
                            disable(
                                &tx,
                                r.endpoint_id,
                                "a message was dead-lettered",
                                &now_text,
                            )?;
                        }
                    }
                    AttemptDecision::EndpointGone => {
                        disable(
                            &tx,
                            r.endpoint_id,
                            "the endpoint answered 410 Gone",
                            &now_text,
                        )?;
                    }
                    AttemptDecision::Retry { .. } => {}
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(dead)
        })
        .await
    }

    async fn release(&self, owner: &str, message_ids: &[String]) -> StoreResult<()> {
        if message_ids.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let message_ids = message_ids.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            {
                let mut release = tx
                    .prepare_cached(
                        "UPDATE webhook_messages SET lease_owner = NULL, lease_until = NULL \
                         WHERE id = ?1 AND lease_owner = ?2",
                    )
                    .map_err(map_db)?;
                for id in &message_ids {
                    release.execute(params![id, owner]).map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)
        })
        .await
    }

    async fn messages(
        &self,
        tenant: TenantId,
        filter: &MessageFilter,
    ) -> StoreResult<Vec<MessageRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            let (after_tx, after_seq, after_endpoint) = match filter.after {
                Some((p, e)) => (Some(p.tx), Some(p.seq), Some(e.to_string())),
                None => (None, None, None),
            };
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM webhook_messages \
                 WHERE tenant_id = ?1 \
                   AND (?2 IS NULL OR endpoint_id = ?2) \
                   AND (?3 IS NULL OR event_id = ?3) \
                   AND (?4 IS NULL OR state = ?4) \
                   AND (?5 IS NULL \
                        OR (position_tx, position_seq, endpoint_id) > (?5, ?6, ?7)) \
                 ORDER BY position_tx, position_seq, endpoint_id LIMIT ?8"
            );
            query_all(
                conn,
                &sql,
                params![
                    tenant.as_uuid().to_string(),
                    filter.endpoint_id.map(|e| e.to_string()),
                    filter.event_id.map(|e| e.to_string()),
                    filter.state.map(|s| s.as_str()),
                    after_tx,
                    after_seq,
                    after_endpoint,
                    sql_limit(filter.limit),
                ],
                decode_message,
            )
        })
        .await
    }

    async fn message(&self, tenant: TenantId, id: &str) -> StoreResult<Option<MessageRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE id = ?1 AND tenant_id = ?2"
            );
            let found = query_all(
                conn,
                &sql,
                params![id, tenant.as_uuid().to_string()],
                decode_message,
            )?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn attempts(
        &self,
        tenant: TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts \
                 WHERE tenant_id = ?1 \
                   AND (?2 IS NULL OR endpoint_id = ?2) \
                   AND (?3 IS NULL OR message_id = ?3) \
                   AND (?4 IS NULL OR event_id = ?4) \
                   AND (?5 IS NULL OR seq > ?5) \
                 ORDER BY seq LIMIT ?6"
            );
            query_all(
                conn,
                &sql,
                params![
                    tenant.as_uuid().to_string(),
                    filter.endpoint_id.map(|e| e.to_string()),
                    filter.message_id,
                    filter.event_id.map(|e| e.to_string()),
                    filter.after,
                    sql_limit(filter.limit),
                ],
                decode_attempt,
            )
        })
        .await
    }

    async fn message_counts(&self, tenant: TenantId, endpoint: Uuid) -> StoreResult<MessageCounts> {
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT state, count(*) FROM webhook_messages \
                     WHERE tenant_id = ?1 AND endpoint_id = ?2 GROUP BY state",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map(
                    params![tenant.as_uuid().to_string(), endpoint.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .map_err(map_db)?;
            let mut counts = MessageCounts::default();
            for row in rows {
                let (state, n) = row.map_err(map_db)?;
                let n = u64::try_from(n).unwrap_or(0);
                match MessageState::parse(&state) {
                    Some(MessageState::Queued) => counts.queued = n,
                    Some(MessageState::Pending) => counts.pending = n,
                    Some(MessageState::Delivered) => counts.delivered = n,
                    Some(MessageState::Dead) => counts.dead = n,
                    None => {}
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn replay_message(&self, tenant: TenantId, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            let now = format_time(Utc::now());
            let n = conn
                .prepare_cached(
                    "UPDATE webhook_messages SET state = 'pending', failures = 0, \
                     next_attempt_at = ?3, lease_owner = NULL, lease_until = NULL \
                     WHERE id = ?1 AND tenant_id = ?2 AND state = 'dead'",
                )
                .map_err(map_db)?
                .execute(params![id, tenant.as_uuid().to_string(), now])
                .map_err(map_db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn replay_endpoint(
        &self,
        tenant: TenantId,
        endpoint: Uuid,
        from: ReplayFrom,
    ) -> StoreResult<u64> {
        let (p, t) = match from {
            ReplayFrom::Position(p) => (Some(p), None),
            ReplayFrom::Time(t) => (None, Some(format_time(t))),
        };
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let now = format_time(Utc::now());
            let endpoint = endpoint.to_string();
            let keys: Vec<String> = {
                let mut statement = tx
                    .prepare_cached(
                        "UPDATE webhook_messages SET state = 'queued', failures = 0 \
                         WHERE tenant_id = ?1 AND endpoint_id = ?2 \
                           AND state IN ('delivered', 'dead') \
                           AND (?3 IS NULL OR (position_tx, position_seq) >= (?3, ?4)) \
                           AND (?5 IS NULL OR created_at >= ?5) \
                         RETURNING ordering_key",
                    )
                    .map_err(map_db)?;
                let rows = statement
                    .query_map(
                        params![
                            tenant.as_uuid().to_string(),
                            endpoint,
                            p.map(|p| p.tx),
                            p.map(|p| p.seq),
                            t,
                        ],
                        |r| r.get(0),
                    )
                    .map_err(map_db)?;
                rows.collect::<Result<_, _>>().map_err(map_db)?
            };
            let requeued = keys.len() as u64;
            let keys: BTreeSet<String> = keys.into_iter().collect();
            {
                // A due message behind a requeued one of its key waits for it again.
                let mut demote = tx
                    .prepare_cached(
                        "UPDATE webhook_messages AS m SET state = 'queued' \
                         WHERE m.endpoint_id = ?1 AND m.ordering_key = ?2 \
                           AND m.state = 'pending' \
                           AND EXISTS (SELECT 1 FROM webhook_messages h \
                                       WHERE h.endpoint_id = m.endpoint_id \
                                         AND h.ordering_key = m.ordering_key \
                                         AND h.state <> 'delivered' \
                                         AND (h.position_tx, h.position_seq) \
                                             < (m.position_tx, m.position_seq))",
                    )
                    .map_err(map_db)?;
                for key in &keys {
                    demote.execute(params![endpoint, key]).map_err(map_db)?;
                }
            }
            for key in &keys {
                promote(&tx, &endpoint, key, &now)?;
            }
            tx.commit().map_err(map_db)?;
            Ok(requeued)
        })
        .await
    }
}
