//! PostgreSQL backend: many concurrent writers, one global order per tenant
//! that followers can trust.
//!
//! Layout of the hot path: [`EventStore::append`] is one prepared statement
//! (one round trip, no explicit transaction). It checks that every stream is
//! at its expected version, inserts the idempotency claim and all events, and
//! returns their positions. Optimistic concurrency rests on the primary key
//! `(tenant_id, stream_id, version)`: two writers cannot both add version N,
//! and the loser waits only on that one key, never on a wider lock.
//!
//! Global order: every event records the id of the transaction that wrote it
//! (`tx_id xid8 DEFAULT pg_current_xact_id()`). [`EventStore::read_all`] only
//! returns events whose transaction is older than the oldest transaction still
//! running, ordered by `(tx_id, seq)`. A transaction that took a lower `seq`
//! but commits later is therefore never skipped: until it ends, nothing past
//! it is returned. See `migrations/postgres/0001_event_store.sql`.
//!
//! The price: "oldest transaction still running" is cluster-wide. A write
//! transaction left open anywhere on the cluster, in any database (an idle
//! `psql` session, a long batch job, a forgotten prepared transaction),
//! holds every follower back until it ends; nothing is lost, only delayed.
//! Give the cluster `idle_in_transaction_session_timeout` and keep long
//! jobs elsewhere.
//!
//! Deadlocks: two appends that take the same two streams in opposite orders
//! can deadlock on each other's new versions; PostgreSQL fails one, reported
//! as a [`StoreError::VersionConflict`]. Listing streams in a consistent
//! order avoids it.
use std::collections::HashSet;

use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{
    ApiKeyRecord, AppendRequest, Directory, EventStore, Position, RecordedEvent, StoreError,
    StoreResult, StoredIdempotency, StreamAppend, TenantRecord,
};

/// Schema migrations, applied in order and recorded in `schema_migrations`.
/// Never edit one that has shipped: add a new one.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_event_store",
    include_str!("../../migrations/postgres/0001_event_store.sql"),
)];

/// Key of the transaction-scoped advisory lock that serializes migrations of
/// server instances starting at the same time ("buktor-m" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6275_6b74_6f72_2d6d;

/// Constraint names the error mapping relies on (see the migration).
const EVENTS_PKEY: &str = "events_pkey";
const EVENTS_EVENT_ID_KEY: &str = "events_event_id_key";
const IDEMPOTENCY_PKEY: &str = "idempotency_keys_pkey";
const TENANTS_PKEY: &str = "tenants_pkey";

/// The columns every event read returns, in the order [`decode_event`] expects.
macro_rules! event_columns {
    () => {
        "e.tenant_id, e.stream_id, e.version, e.tx_id::text::bigint, e.seq, \
         e.event_id, e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at"
    };
}

/// The whole append in one statement.
///
/// - `input`: one row per event, in request order (`ord`).
/// - `behind`: streams whose expected version they have not reached (the
///   expectation is ahead of the stream). If any, nothing is inserted and these
///   rows are returned instead. An expectation behind the stream is caught by
///   the primary key when version `expected + 1` is inserted.
/// - `claim` and `inserted` write only when `behind` is empty; a unique
///   violation in either aborts the statement, so nothing is written then.
///
/// Returns `(conflict, ord, stream_id, version, seq, tx, recorded_at)` ordered
/// by `ord`: the inserted events in request order, or the conflicting streams.
const APPEND_SQL: &str = r#"
WITH input AS (
    SELECT *
    FROM unnest($2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int4[], $7::jsonb[], $8::jsonb[])
        WITH ORDINALITY AS i(stream_id, version, event_id, event_type, schema_version, payload, metadata, ord)
),
behind AS (
    SELECT s.stream_id, s.expected_version, s.ord
    FROM unnest($9::text[], $10::bigint[]) WITH ORDINALITY AS s(stream_id, expected_version, ord)
    WHERE s.expected_version > 0
      AND NOT EXISTS (
          SELECT 1 FROM events e
          WHERE e.tenant_id = $1::uuid AND e.stream_id = s.stream_id AND e.version = s.expected_version
      )
),
claim AS (
    INSERT INTO idempotency_keys (tenant_id, key, request_hash, response)
    SELECT $1::uuid, $11::text, $12::text, $13::jsonb
    WHERE $11::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM behind)
),
inserted AS (
    INSERT INTO events (tenant_id, stream_id, version, event_id, event_type, schema_version, payload, metadata)
    SELECT $1::uuid, stream_id, version, event_id, event_type, schema_version, payload, metadata
    FROM input
    WHERE NOT EXISTS (SELECT 1 FROM behind)
    ORDER BY ord
    RETURNING stream_id, version, seq, tx_id, recorded_at
)
SELECT false AS conflict, i.ord, n.stream_id::text, n.version, n.seq, n.tx_id::text::bigint AS tx, n.recorded_at
FROM inserted n JOIN input i ON i.stream_id = n.stream_id AND i.version = n.version
UNION ALL
SELECT true, b.ord, b.stream_id, b.expected_version, NULL, NULL, NULL
FROM behind b
ORDER BY 2
"#;

/// [`EventStore`] and [`Directory`] on PostgreSQL (15 or later).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connects a pool of at most `pool_size` connections and checks that the
    /// database answers. Does not migrate: call [`PostgresStore::migrate`].
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        if pool_size == 0 {
            return Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "PostgreSQL pool size must be at least 1",
            )));
        }
        let config: tokio_postgres::Config = url.parse().map_err(StoreError::backend)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(StoreError::backend)?;
        let store = PostgresStore { pool };
        store.ping().await?;
        Ok(store)
    }

    /// Applies the embedded migrations that are not yet recorded in
    /// `schema_migrations`, in order, in one transaction. Server instances
    /// starting together take turns on a transaction-scoped advisory lock.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(map_db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    text        PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(map_db)?;
        let applied: HashSet<String> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(map_db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for (name, sql) in MIGRATIONS {
            if applied.contains(*name) {
                continue;
            }
            tracing::info!(migration = name, "applying PostgreSQL migration");
            tx.batch_execute(sql).await.map_err(map_db)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[name],
            )
            .await
            .map_err(map_db)?;
        }
        let known: HashSet<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
        for name in applied.iter().filter(|name| !known.contains(name.as_str())) {
            tracing::warn!(
                migration = name.as_str(),
                "database has a migration this server does not know: is a newer server sharing it?"
            );
        }
        tx.commit().await.map_err(map_db)
    }

    /// Runs one SQL statement on a pooled connection, bypassing the store.
    /// Only for tests that check what the database itself enforces.
    #[doc(hidden)]
    pub async fn execute_raw_for_tests(&self, sql: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        client.execute(sql, &[]).await.map_err(map_db)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(map_pool)
    }

    async fn query_events(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<RecordedEvent>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(map_db)?;
        let rows = client.query(&statement, params).await.map_err(map_db)?;
        rows.iter().map(decode_event).collect()
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
        request.validate()?;
        let event_count: usize = request.streams.iter().map(|s| s.events.len()).sum();
        let mut stream_ids: Vec<&str> = Vec::with_capacity(event_count);
        let mut versions: Vec<i64> = Vec::with_capacity(event_count);
        let mut event_ids: Vec<Uuid> = Vec::with_capacity(event_count);
        let mut event_types: Vec<&str> = Vec::with_capacity(event_count);
        let mut schema_versions: Vec<i32> = Vec::with_capacity(event_count);
        let mut payloads: Vec<&serde_json::Value> = Vec::with_capacity(event_count);
        let mut metadatas: Vec<&serde_json::Value> = Vec::with_capacity(event_count);
        let mut expected_streams: Vec<&str> = Vec::with_capacity(request.streams.len());
        let mut expected_versions: Vec<i64> = Vec::with_capacity(request.streams.len());
        for stream in &request.streams {
            expected_streams.push(&stream.stream_id);
            expected_versions.push(stream.expected_version);
            for (version, event) in (stream.expected_version + 1..).zip(&stream.events) {
                stream_ids.push(&stream.stream_id);
                versions.push(version);
                event_ids.push(event.event_id);
                event_types.push(&event.event_type);
                schema_versions.push(event.schema_version);
                payloads.push(&event.payload);
                metadatas.push(&event.metadata);
            }
        }
        let claim = request.idempotency.as_ref();
        let claim_key = claim.map(|c| c.key.as_str());
        let claim_hash = claim.map(|c| c.request_hash.as_str());
        let claim_response = claim.map(|c| &c.response);
        let tenant = request.tenant.as_uuid();

        let client = self.client().await?;
        let statement = client.prepare_cached(APPEND_SQL).await.map_err(map_db)?;
        let result = client
            .query(
                &statement,
                &[
                    &tenant,
                    &stream_ids,
                    &versions,
                    &event_ids,
                    &event_types,
                    &schema_versions,
                    &payloads,
                    &metadatas,
                    &expected_streams,
                    &expected_versions,
                    &claim_key,
                    &claim_hash,
                    &claim_response,
                ],
            )
            .await;
        drop(client);
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => return Err(map_append_error(e, &request)),
        };

        if let Some(row) = rows.iter().find(|row| row.get::<_, bool>(0)) {
            let stream_id: String = row.get(2);
            let expected_version: i64 = row.get(3);
            return Err(StoreError::VersionConflict {
                stream_id,
                expected_version,
            });
        }
        if rows.len() != event_count {
            return Err(StoreError::Corrupt(format!(
                "append of {event_count} events returned {} rows",
                rows.len()
            )));
        }

        let mut recorded = Vec::with_capacity(event_count);
        let mut rows = rows.iter();
        for stream in request.streams {
            for (version, event) in (stream.expected_version + 1..).zip(stream.events) {
                let row = rows.next().ok_or_else(|| {
                    StoreError::Corrupt("append returned fewer rows than events".into())
                })?;
                let row_stream: &str = row.get(2);
                let row_version: i64 = row.get(3);
                if row_stream != stream.stream_id || row_version != version {
                    return Err(StoreError::Corrupt(format!(
                        "append returned {row_stream}@{row_version} where {}@{version} was expected",
                        stream.stream_id
                    )));
                }
                recorded.push(RecordedEvent {
                    tenant: request.tenant,
                    stream_id: stream.stream_id.clone(),
                    version,
                    position: Position {
                        tx: row.get(5),
                        seq: row.get(4),
                    },
                    event_id: event.event_id,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload: event.payload,
                    metadata: event.metadata,
                    recorded_at: row.get(6),
                });
            }
        }
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: &str,
        after_version: i64,
    ) -> StoreResult<Vec<RecordedEvent>> {
        const SQL: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e \
             WHERE e.tenant_id = $1 AND e.stream_id = $2 AND e.version > $3 \
             ORDER BY e.version"
        );
        self.query_events(SQL, &[&tenant.as_uuid(), &stream_id, &after_version])
            .await
    }

    async fn read_streams(
        &self,
        tenant: TenantId,
        streams: &[(String, i64)],
    ) -> StoreResult<Vec<RecordedEvent>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(|(id, _)| id.as_str()).collect();
        let afters: Vec<i64> = streams.iter().map(|(_, after)| *after).collect();
        const SQL: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS s(stream_id, after_version, ord) \
             JOIN events e ON e.tenant_id = $1 AND e.stream_id = s.stream_id \
                          AND e.version > s.after_version \
             ORDER BY s.ord, e.version"
        );
        self.query_events(SQL, &[&tenant.as_uuid(), &ids, &afters])
            .await
    }

    async fn read_all(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // `tx_id < xmin`: only events of transactions that have ended, so no
        // event can later appear before one already returned.
        const SQL: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e \
             WHERE e.tenant_id = $1 \
               AND (e.tx_id, e.seq) > ($2::bigint::text::xid8, $3::bigint) \
               AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY e.tx_id, e.seq \
             LIMIT $4"
        );
        self.query_events(SQL, &[&tenant.as_uuid(), &after.tx, &after.seq, &limit])
            .await
    }

    async fn stream_ids(&self, tenant: TenantId, prefix: &str) -> StoreResult<Vec<String>> {
        // A loose index scan over the primary key: one index probe per
        // stream, not one row per event. `stream_id` is COLLATE "C", so the
        // ids with the prefix are contiguous and start at the prefix.
        const SQL: &str = "\
            WITH RECURSIVE s(stream_id) AS ( \
                SELECT (SELECT e.stream_id FROM events e \
                        WHERE e.tenant_id = $1 AND e.stream_id >= $2 \
                        ORDER BY e.stream_id LIMIT 1) \
                UNION ALL \
                SELECT (SELECT e.stream_id FROM events e \
                        WHERE e.tenant_id = $1 AND e.stream_id > s.stream_id \
                        ORDER BY e.stream_id LIMIT 1) \
                FROM s WHERE s.stream_id IS NOT NULL AND starts_with(s.stream_id, $2) \
            ) \
            SELECT stream_id FROM s \
            WHERE stream_id IS NOT NULL AND starts_with(stream_id, $2) \
            ORDER BY stream_id";
        let client = self.client().await?;
        let statement = client.prepare_cached(SQL).await.map_err(map_db)?;
        let rows = client
            .query(&statement, &[&tenant.as_uuid(), &prefix])
            .await
            .map_err(map_db)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> StoreResult<Option<StoredIdempotency>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT request_hash, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2",
            )
            .await
            .map_err(map_db)?;
        let row = client
            .query_opt(&statement, &[&tenant.as_uuid(), &key])
            .await
            .map_err(map_db)?;
        Ok(row.map(|row| StoredIdempotency {
            request_hash: row.get(0),
            response: row.get(1),
        }))
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(map_db)?;
        Ok(())
    }
}

#[async_trait]
impl Directory for PostgresStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO tenants (id, name, time_zone, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT ON CONSTRAINT tenants_pkey DO NOTHING",
            )
            .await
            .map_err(map_db)?;
        let inserted = client
            .execute(
                &statement,
                &[
                    &tenant.id.as_uuid(),
                    &tenant.name,
                    &tenant.time_zone.name(),
                    &tenant.created_at,
                ],
            )
            .await
            .map_err(map_db)?;
        if inserted == 0 {
            return Err(StoreError::TenantExists(tenant.id));
        }
        Ok(())
    }

    async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, name, time_zone, created_at FROM tenants WHERE id = $1")
            .await
            .map_err(map_db)?;
        let row = client
            .query_opt(&statement, &[&id.as_uuid()])
            .await
            .map_err(map_db)?;
        row.as_ref().map(decode_tenant).transpose()
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, name, time_zone, created_at FROM tenants ORDER BY id")
            .await
            .map_err(map_db)?;
        let rows = client.query(&statement, &[]).await.map_err(map_db)?;
        rows.iter().map(decode_tenant).collect()
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO api_keys (id, tenant_id, name, role, secret_hash, created_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(map_db)?;
        client
            .execute(
                &statement,
                &[
                    &key.id,
                    &key.tenant.as_uuid(),
                    &key.name,
                    &key.role.as_str(),
                    &key.secret_hash,
                    &key.created_at,
                    &key.revoked_at,
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, tenant_id, name, role, secret_hash, created_at, revoked_at \
                 FROM api_keys WHERE id = $1",
            )
            .await
            .map_err(map_db)?;
        let row = client.query_opt(&statement, &[&id]).await.map_err(map_db)?;
        row.map(|row| {
            let role: &str = row.get(3);
            Ok(ApiKeyRecord {
                id: row.get(0),
                tenant: TenantId::from_uuid(row.get(1)),
                name: row.get(2),
                role: role
                    .parse::<Role>()
                    .map_err(|e| StoreError::Corrupt(format!("api key {id}: {e}")))?,
                secret_hash: row.get(4),
                created_at: row.get(5),
                revoked_at: row.get(6),
            })
        })
        .transpose()
    }
}

fn decode_event(row: &Row) -> StoreResult<RecordedEvent> {
    Ok(RecordedEvent {
        tenant: TenantId::from_uuid(row.try_get(0).map_err(map_db)?),
        stream_id: row.try_get(1).map_err(map_db)?,
        version: row.try_get(2).map_err(map_db)?,
        position: Position {
            tx: row.try_get(3).map_err(map_db)?,
            seq: row.try_get(4).map_err(map_db)?,
        },
        event_id: row.try_get(5).map_err(map_db)?,
        event_type: row.try_get(6).map_err(map_db)?,
        schema_version: row.try_get(7).map_err(map_db)?,
        payload: row.try_get(8).map_err(map_db)?,
        metadata: row.try_get(9).map_err(map_db)?,
        recorded_at: row.try_get::<_, DateTime<Utc>>(10).map_err(map_db)?,
    })
}

fn decode_tenant(row: &Row) -> StoreResult<TenantRecord> {
    let id = TenantId::from_uuid(row.get(0));
    let time_zone: &str = row.get(2);
    Ok(TenantRecord {
        id,
        name: row.get(1),
        time_zone: time_zone.parse().map_err(|_| {
            StoreError::Corrupt(format!("tenant {id} has unknown time zone {time_zone:?}"))
        })?,
        created_at: row.get(3),
    })
}

fn map_db(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(e)
}

fn map_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => StoreError::backend(e),
        other => StoreError::backend(other),
    }
}

/// Turns the database's refusal of an append into what the caller should do.
fn map_append_error(e: tokio_postgres::Error, request: &AppendRequest) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::backend(e);
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        match db.constraint() {
            Some(EVENTS_PKEY) => {
                if let Some(stream) = conflicting_stream(db.detail(), &request.streams) {
                    return StoreError::VersionConflict {
                        stream_id: stream.stream_id.clone(),
                        expected_version: stream.expected_version,
                    };
                }
            }
            Some(IDEMPOTENCY_PKEY) => {
                if let Some(claim) = &request.idempotency {
                    return StoreError::IdempotencyKeyTaken {
                        key: claim.key.clone(),
                    };
                }
            }
            Some(EVENTS_EVENT_ID_KEY) => {
                let id = duplicate_event_id(db.detail(), request);
                return StoreError::DuplicateEventId(id);
            }
            Some(TENANTS_PKEY) | Some(_) | None => {}
        }
    } else if *code == SqlState::T_R_DEADLOCK_DETECTED {
        // Two appends waited on each other's new versions of the same
        // streams: both could not have succeeded, and the database chose this
        // one to fail. Listing streams in a consistent order avoids it.
        if let Some(stream) = request.streams.first() {
            return StoreError::VersionConflict {
                stream_id: stream.stream_id.clone(),
                expected_version: stream.expected_version,
            };
        }
    }
    StoreError::backend(e)
}

/// The values of a unique-violation detail, `Key (a, b)=(x, y) already exists.`,
/// without the surrounding parentheses.
fn key_values(detail: &str) -> Option<&str> {
    let (_, values) = detail.split_once(")=(")?;
    let end = values.rfind(')')?;
    Some(&values[..end])
}

/// Which stream's `(tenant_id, stream_id, version)` already existed; the first
/// stream if the detail cannot be read.
fn conflicting_stream<'a>(
    detail: Option<&str>,
    streams: &'a [StreamAppend],
) -> Option<&'a StreamAppend> {
    detail
        .and_then(key_values)
        .and_then(|values| {
            // "<tenant uuid>, <stream id>, <version>"; a stream id may itself
            // contain ", ", so cut at the first and at the last separator.
            let (_, rest) = values.split_once(", ")?;
            let (stream_id, _) = rest.rsplit_once(", ")?;
            streams.iter().find(|s| s.stream_id == stream_id)
        })
        .or_else(|| streams.first())
}

fn duplicate_event_id(detail: Option<&str>, request: &AppendRequest) -> Uuid {
    detail
        .and_then(key_values)
        .and_then(|values| values.rsplit_once(", "))
        .and_then(|(_, id)| id.parse().ok())
        .or_else(|| {
            request
                .streams
                .iter()
                .flat_map(|s| &s.events)
                .map(|e| e.event_id)
                .next()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> StreamAppend {
        StreamAppend {
            stream_id: id.into(),
            expected_version: 3,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_primary_key_detail_names_the_conflicting_stream() {
        let streams = [stream("slot-1"), stream("appointment-7, b"), stream("x")];
        let detail = "Key (tenant_id, stream_id, version)=(0190c8a4-7a5e-7b4c-9d2e-0123456789ab, appointment-7, b, 4) already exists.";
        assert_eq!(
            conflicting_stream(Some(detail), &streams)
                .unwrap()
                .stream_id,
            "appointment-7, b"
        );
    }

    #[test]
    fn an_unreadable_detail_blames_the_first_stream() {
        let streams = [stream("slot-1"), stream("x")];
        assert_eq!(
            conflicting_stream(None, &streams).unwrap().stream_id,
            "slot-1"
        );
        assert_eq!(
            conflicting_stream(Some("Schlüssel existiert bereits"), &streams)
                .unwrap()
                .stream_id,
            "slot-1"
        );
    }

    #[test]
    fn an_event_id_detail_gives_the_duplicate_id() {
        let request = AppendRequest {
            tenant: TenantId::new(),
            streams: vec![stream("s")],
            idempotency: None,
        };
        let id = Uuid::now_v7();
        let detail = format!(
            "Key (tenant_id, event_id)=({}, {id}) already exists.",
            Uuid::nil()
        );
        assert_eq!(duplicate_event_id(Some(&detail), &request), id);
    }
}
