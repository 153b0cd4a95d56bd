//! PostgreSQL backend: many concurrent writers, one global order per tenant
//! that followers can trust.
//!
//! Layout of the hot path: [`EventStore::append`] hands the request to a
//! bounded queue served by a few committer tasks (group commit, below). A
//! request alone is written by one prepared statement, [`APPEND_SQL`]: it
//! checks that every stream is at its expected version, inserts the
//! idempotency claim and all events, and returns their positions. Optimistic
//! concurrency rests on the primary key `(tenant_id, stream_id, version)`:
//! two writers cannot both add version N, and the loser waits only on that
//! one key, never on a wider lock.
//!
//! Group commit: a durable commit costs a WAL flush and a transaction's
//! worth of CPU, so one commit per append caps a 2-core server at a few
//! thousand appends per second. Each committer takes the next request,
//! drains whatever else is queued (up to [`GroupCommit::max_batch`]) and
//! writes the batch in one transaction and one round trip, the function
//! `buktor_append_batch` (`migrations/postgres/0002_group_commit.sql`).
//! Every caller still gets exactly what a lone append would give it: a
//! conflicting or invalid request is rolled back in a subtransaction of its
//! own and the rest of its batch is written. Committers keep their own
//! connections (beside the pool), in REPEATABLE READ: see the migration for
//! why the global order needs that.
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
//! order avoids it. Two batches in flight at once can also deadlock when
//! requests of each wait on the other's (after `deadlock_timeout`, 1 s by
//! default); the request that got the error is rolled back alone and
//! appended again by itself once its batch has committed.
use std::collections::HashSet;
use std::sync::Arc;

use crate::secrets::{endpoint_context, server_secret_context, ResealReport, Sealer};
use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row, Statement};
use uuid::Uuid;

mod access;
mod audit_chain;
mod read_models;
mod reminders;
mod webhooks;

use super::{
    ApiKeyRecord, AppendRequest, Directory, EventStore, Position, RecordedEvent, StoreError,
    StoreResult, StoredIdempotency, StreamAppend, TenantRecord,
};

/// Schema migrations, applied in order and recorded in `schema_migrations`.
/// Never edit one that has shipped: add a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_event_store",
        include_str!("../../migrations/postgres/0001_event_store.sql"),
    ),
    (
        "0002_group_commit",
        include_str!("../../migrations/postgres/0002_group_commit.sql"),
    ),
    (
        "0003_event_chain",
        include_str!("../../migrations/postgres/0003_event_chain.sql"),
    ),
    (
        "0004_read_models",
        include_str!("../../migrations/postgres/0004_read_models.sql"),
    ),
    (
        "0005_webhooks",
        include_str!("../../migrations/postgres/0005_webhooks.sql"),
    ),
    (
        "0006_reminders",
        include_str!("../../migrations/postgres/0006_reminders.sql"),
    ),
    (
        "0007_server_secrets",
        include_str!("../../migrations/postgres/0007_server_secrets.sql"),
    ),
    (
        "0008_revocation",
        include_str!("../../migrations/postgres/0008_revocation.sql"),
    ),
];

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
          -- Keeps this a primary-key probe per stream: without it the planner may
          -- turn it into an anti-join that scans all of the tenant's events.
          OFFSET 0
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

/// The most requests one group-commit transaction takes: each committed
/// request is a subtransaction, and more than 64 of them in one transaction
/// overflow its subtransaction cache, which slows every session's snapshots
/// on the cluster.
pub const MAX_BATCH: usize = 64;

/// How [`EventStore::append`] groups requests into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Committer tasks, each with a connection of its own (beside the
    /// pool): how many batches can be in flight at once. While one waits for
    /// its commit to reach the disk, another fills and writes the next.
    pub committers: usize,
    /// Requests per transaction, 1 to [`MAX_BATCH`].
    pub max_batch: usize,
    /// Requests waiting for a committer before `append` itself waits.
    pub queue: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            committers: 2,
            max_batch: MAX_BATCH,
            queue: 1024,
        }
    }
}

/// [`EventStore`] and [`Directory`] on PostgreSQL (15 or later).
///
/// Clones share the pool and the committers. The committers stop once every
/// clone is dropped, after writing what was already queued.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: Pool,
    /// The committers' queue (see [`GroupCommit`]).
    appends: mpsc::Sender<PendingAppend>,
    /// For the committers' own connections.
    config: tokio_postgres::Config,
    /// Revocations heard on this instance's listening connection.
    revocations: Arc<crate::store::access::RevocationFeed>,
    /// Seals the webhook secrets and server secrets this store keeps.
    sealer: Sealer,
}

impl PostgresStore {
    /// Connects a pool of at most `pool_size` connections, checks that the
    /// database answers and starts the committers with the default
    /// [`GroupCommit`]. Does not migrate: call [`PostgresStore::migrate`].
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        Self::connect_with(url, pool_size, GroupCommit::default()).await
    }

    /// [`PostgresStore::connect`] with a chosen group commit. The store
    /// opens up to `pool_size + group.committers` connections.
    pub async fn connect_with(
        url: &str,
        pool_size: usize,
        group: GroupCommit,
    ) -> StoreResult<Self> {
        let invalid = |why: &str| {
            Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                why.to_owned(),
            )))
        };
        if pool_size == 0 {
            return invalid("PostgreSQL pool size must be at least 1");
        }
        if group.committers == 0 || group.queue == 0 {
            return invalid("group commit needs at least one committer and a queue");
        }
        if !(1..=MAX_BATCH).contains(&group.max_batch) {
            return invalid("group commit batches take 1 to 64 requests");
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(StoreError::backend)?;
        if config.get_options().is_none() {
            // The hot statements are cached per connection. PostgreSQL would
            // re-plan them on each execution (their generic cost looks high on
            // a young table); their plans are key probes whatever the data, so
            // one generic plan is right and saves the planning CPU each time.
            config.options("-c plan_cache_mode=force_generic_plan");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(StoreError::backend)?;
        let mut committer_config = config;
        if committer_config.get_application_name().is_none() {
            committer_config.application_name(COMMITTER_APPLICATION_NAME);
        }
        let (appends, queue) = mpsc::channel(group.queue);
        let store = PostgresStore {
            pool,
            appends,
            config: committer_config.clone(),
            revocations: Arc::default(),
            sealer: Sealer::default(),
        };
        store.ping().await?;
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..group.committers {
            let committer = Committer::new(committer_config.clone());
            tokio::spawn(committer.run(Arc::clone(&queue), group.max_batch));
        }
        Ok(store)
    }

    /// This store, sealing the secrets it keeps with `sealer`.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Seals every stored secret that is in plaintext (from before sealing)
    /// or sealed under an old key, under the current key; fails, naming
    /// the row, if one does not open with the configured keys. Row by row,
    /// each under `FOR UPDATE`, so a rotation of a webhook secret meanwhile
    /// is not undone; safe to run from several instances at once.
    pub async fn reseal_secrets(&self) -> StoreResult<ResealReport> {
        let mut report = ResealReport::default();
        if self.sealer.keys().is_none() {
            return Ok(report);
        }
        let mut client = self.client().await?;
        let ids: Vec<Uuid> = client
            .query("SELECT id FROM webhook_endpoints ORDER BY id", &[])
            .await
            .map_err(map_db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in ids {
            let tx = client.transaction().await.map_err(map_db)?;
            let Some(row) = tx
                .query_opt(
                    "SELECT secret, previous_secret FROM webhook_endpoints \
                     WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(map_db)?
            else {
                continue;
            };
            let current: String = row.get(0);
            let previous: Option<String> = row.get(1);
            let new_current = self
                .sealer
                .reseal(&endpoint_context(id, false), current.as_bytes())?;
            report.count(current.as_bytes(), new_current.is_some());
            let new_previous = match &previous {
                Some(p) => {
                    let n = self
                        .sealer
                        .reseal(&endpoint_context(id, true), p.as_bytes())?;
                    report.count(p.as_bytes(), n.is_some());
                    n
                }
                None => None,
            };
            let text = |v: Vec<u8>| String::from_utf8(v).expect("sealed values are text");
            if new_current.is_some() || new_previous.is_some() {
                let current = new_current.map(text).unwrap_or(current);
                let previous = new_previous.map(text).or(previous);
                tx.execute(
                    "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
                    &[&id, &current, &previous],
                )
                .await
                .map_err(map_db)?;
            }
            tx.commit().await.map_err(map_db)?;
        }
        let tx = client.transaction().await.map_err(map_db)?;
        let rows = tx
            .query(
                "SELECT name, secret FROM server_secrets ORDER BY name FOR UPDATE",
                &[],
            )
            .await
            .map_err(map_db)?;
        for row in rows {
            let name: String = row.get(0);
            let stored: Vec<u8> = row.get(1);
            let new = self.sealer.reseal(&server_secret_context(&name), &stored)?;
            report.count(&stored, new.is_some());
            if let Some(new) = new {
                tx.execute(
                    "UPDATE server_secrets SET secret = $2 WHERE name = $1",
                    &[&name, &new],
                )
                .await
                .map_err(map_db)?;
            }
        }
        tx.commit().await.map_err(map_db)?;
        Ok(report)
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

    /// Writes `requests` as one group-commit batch on a connection of its
    /// own, past the queue, so that tests can choose what shares a batch.
    /// Returns each request's result, in order. At most [`MAX_BATCH`].
    #[doc(hidden)]
    pub async fn append_batch_for_tests(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<StoreResult<Vec<RecordedEvent>>> {
        assert!(
            requests.len() <= MAX_BATCH,
            "a batch takes at most {MAX_BATCH}"
        );
        let mut batch = Vec::with_capacity(requests.len());
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let (reply, answer) = oneshot::channel();
            match request.validate() {
                Ok(()) => batch.push(PendingAppend { request, reply }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
            answers.push(answer);
        }
        Committer::new(self.config.clone()).commit(batch).await;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.await.unwrap_or_else(|_| Err(committers_stopped())));
        }
        results
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
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(PendingAppend { request, reply })
            .await
            .map_err(|_| committers_stopped())?;
        answer.await.map_err(|_| committers_stopped())?
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
             CROSS JOIN LATERAL ( \
                 SELECT * FROM events x \
                 WHERE x.tenant_id = $1 AND x.stream_id = s.stream_id AND x.version > s.after_version \
                 OFFSET 0 \
             ) e \
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

    async fn server_secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        let context = server_secret_context(name);
        let candidate = self.sealer.seal(&context, candidate);
        client
            .execute(
                "INSERT INTO server_secrets (name, secret) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate],
            )
            .await
            .map_err(map_db)?;
        let row = client
            .query_one(
                "SELECT secret FROM server_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(map_db)?;
        let stored: Vec<u8> = row.get(0);
        Ok(self.sealer.open(&context, &stored)?)
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

// ---------------------------------------------------------------------------
// Group commit

/// The batch function's call; one row per request, see the migration.
const APPEND_BATCH_SQL: &str = "\
    SELECT r_req, r_status, r_seqs, r_tx, r_at, r_stream, r_version, r_constraint, r_detail \
    FROM buktor_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

/// How the committers' connections show in `pg_stat_activity` (unless the
/// URL names an application).
pub const COMMITTER_APPLICATION_NAME: &str = "buktor-append-committer";

/// An append waiting for a committer, and where its result goes.
struct PendingAppend {
    request: AppendRequest,
    reply: oneshot::Sender<StoreResult<Vec<RecordedEvent>>>,
}

type AppendQueue = Arc<Mutex<mpsc::Receiver<PendingAppend>>>;

fn committers_stopped() -> StoreError {
    StoreError::backend(std::io::Error::other(
        "the PostgreSQL append committers have stopped",
    ))
}

/// Answers every request of a batch with the same backend error: the
/// connection failed, so none of them was committed (or, if it failed
/// during the commit, none is known to be).
fn fail_all(batch: Vec<PendingAppend>, e: tokio_postgres::Error) {
    let e = Arc::new(e);
    for pending in batch {
        let _ = pending.reply.send(Err(StoreError::backend(Arc::clone(&e))));
    }
}

fn first_stream(request: &AppendRequest) -> (TenantId, &str) {
    let stream = request.streams.first().map_or("", |s| s.stream_id.as_str());
    (request.tenant, stream)
}

/// One committer task: takes batches off the shared queue and writes each
/// in one transaction on its own connection, reconnecting when it breaks.
struct Committer {
    config: tokio_postgres::Config,
    session: Option<Session>,
}

/// A committer's connection and its prepared statements.
struct Session {
    client: Client,
    single: Statement,
    /// Prepared on first use: a database migrated by an older server has no
    /// batch function yet (then every batch is appended request by request).
    batch: Option<Statement>,
}

/// What the batch function said about one request.
enum BatchOutcome {
    Done(StoreResult<Vec<RecordedEvent>>),
    /// Rolled back for a reason only the single statement can report
    /// exactly: append it again by itself.
    Again(AppendRequest),
}

impl Committer {
    fn new(config: tokio_postgres::Config) -> Self {
        Committer {
            config,
            session: None,
        }
    }

    /// Serves the queue until every sender is gone and it is empty. Takes
    /// what is queued, up to `max_batch`, as one batch: under load batches
    /// grow by themselves, alone a request is written at once.
    async fn run(mut self, queue: AppendQueue, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            // The lock only orders the committers' turns at the queue; it is
            // released before the batch is written.
            let received = queue.lock().await.recv_many(&mut batch, max_batch).await;
            if received == 0 {
                break;
            }
            self.commit(std::mem::take(&mut batch)).await;
        }
    }

    /// Writes a batch and answers every request in it.
    async fn commit(&mut self, mut batch: Vec<PendingAppend>) {
        // A caller that gave up before its request was sent gets nothing
        // written, as if it had never asked.
        batch.retain(|pending| !pending.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        // Two batches in flight that write the same streams in opposite
        // orders wait on each other until PostgreSQL's deadlock check (1 s)
        // fails one. In one order everywhere, the later batch only waits
        // for the earlier to commit. The first stream of a request is its
        // contended one (a booking's calendar day); the others are its own.
        batch.sort_by(|a, b| first_stream(&a.request).cmp(&first_stream(&b.request)));
        tracing::trace!(requests = batch.len(), "group commit");
        let session = match self.session().await {
            Ok(session) => session,
            Err(e) => return fail_all(batch, e),
        };
        if batch.len() == 1 {
            for pending in batch {
                let result = session.append_one(pending.request).await;
                let _ = pending.reply.send(result);
            }
        } else {
            session.append_batch(batch).await;
        }
        if session.client.is_closed() {
            self.session = None;
        }
    }

    async fn session(&mut self) -> Result<&mut Session, tokio_postgres::Error> {
        let session = match self.session.take() {
            Some(session) if !session.client.is_closed() => session,
            _ => Session::open(&self.config).await?,
        };
        Ok(self.session.insert(session))
    }
}

impl Session {
    async fn open(config: &tokio_postgres::Config) -> Result<Session, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "an append committer's connection failed");
            }
        });
        // One snapshot per batch, taken before the transaction has an id
        // (see the migration); a lone statement reads one snapshot anyway.
        client
            .batch_execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            )
            .await?;
        let single = client.prepare(APPEND_SQL).await?;
        Ok(Session {
            client,
            single,
            batch: None,
        })
    }

    /// One request, one statement, one transaction.
    async fn append_one(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
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

        let result = self
            .client
            .query(
                &self.single,
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

    /// Several requests in one transaction; answers each.
    async fn append_batch(&mut self, batch: Vec<PendingAppend>) {
        let rows = match self.call_batch(&batch).await {
            Ok(rows) => rows,
            Err(e) if e.as_db_error().is_some() && !self.client.is_closed() => {
                // The database refused the whole call (the function is
                // missing, a value it cannot take...): nothing was written,
                // so each request goes again by itself and gets its own answer.
                tracing::warn!(
                    error = %e,
                    requests = batch.len(),
                    "a group-commit batch failed; appending its requests one by one"
                );
                for pending in batch {
                    let result = self.append_one(pending.request).await;
                    let _ = pending.reply.send(result);
                }
                return;
            }
            Err(e) => return fail_all(batch, e),
        };

        let mut rows = rows.into_iter();
        let mut again = Vec::new();
        for (index, PendingAppend { request, reply }) in batch.into_iter().enumerate() {
            let outcome = match rows.next() {
                Some(row) => batch_outcome(&row, index, request),
                None => BatchOutcome::Done(Err(StoreError::Corrupt(format!(
                    "the append batch returned no row for request {}",
                    index + 1
                )))),
            };
            match outcome {
                BatchOutcome::Done(result) => {
                    let _ = reply.send(result);
                }
                BatchOutcome::Again(request) => again.push(PendingAppend { request, reply }),
            }
        }
        for pending in again {
            let result = self.append_one(pending.request).await;
            let _ = pending.reply.send(result);
        }
    }

    async fn call_batch(
        &mut self,
        batch: &[PendingAppend],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = match &self.batch {
            Some(statement) => statement.clone(),
            None => {
                let statement = self.client.prepare(APPEND_BATCH_SQL).await?;
                self.batch = Some(statement.clone());
                statement
            }
        };
        let requests = batch.len();
        let streams: usize = batch.iter().map(|p| p.request.streams.len()).sum();
        let events: usize = batch
            .iter()
            .flat_map(|p| &p.request.streams)
            .map(|s| s.events.len())
            .sum();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);

        let mut tenants: Vec<Uuid> = Vec::with_capacity(requests);
        let mut stream_counts: Vec<i32> = Vec::with_capacity(requests);
        let mut event_counts: Vec<i32> = Vec::with_capacity(requests);
        let mut claim_keys: Vec<Option<&str>> = Vec::with_capacity(requests);
        let mut claim_hashes: Vec<Option<&str>> = Vec::with_capacity(requests);
        let mut claim_responses: Vec<Option<&serde_json::Value>> = Vec::with_capacity(requests);
        let mut stream_reqs: Vec<i32> = Vec::with_capacity(streams);
        let mut stream_ids: Vec<&str> = Vec::with_capacity(streams);
        let mut expected: Vec<i64> = Vec::with_capacity(streams);
        let mut event_reqs: Vec<i32> = Vec::with_capacity(events);
        let mut event_streams: Vec<&str> = Vec::with_capacity(events);
        let mut versions: Vec<i64> = Vec::with_capacity(events);
        let mut event_ids: Vec<Uuid> = Vec::with_capacity(events);
        let mut event_types: Vec<&str> = Vec::with_capacity(events);
        let mut schema_versions: Vec<i32> = Vec::with_capacity(events);
        let mut payloads: Vec<&serde_json::Value> = Vec::with_capacity(events);
        let mut metadatas: Vec<&serde_json::Value> = Vec::with_capacity(events);
        // All in one statement only if no two requests share a stream: a
        // statement does not see its own rows, so a request that expects
        // the version another one writes would look behind.
        let mut seen: HashSet<(Uuid, &str)> = HashSet::with_capacity(streams);
        let mut together = true;

        for (index, pending) in batch.iter().enumerate() {
            let request = &pending.request;
            let req = count(index + 1);
            let tenant = request.tenant.as_uuid();
            tenants.push(tenant);
            stream_counts.push(count(request.streams.len()));
            event_counts.push(count(request.streams.iter().map(|s| s.events.len()).sum()));
            let claim = request.idempotency.as_ref();
            claim_keys.push(claim.map(|c| c.key.as_str()));
            claim_hashes.push(claim.map(|c| c.request_hash.as_str()));
            claim_responses.push(claim.map(|c| &c.response));
            for stream in &request.streams {
                together &= seen.insert((tenant, stream.stream_id.as_str()));
                stream_reqs.push(req);
                stream_ids.push(&stream.stream_id);
                expected.push(stream.expected_version);
                for (version, event) in (stream.expected_version + 1..).zip(&stream.events) {
                    event_reqs.push(req);
                    event_streams.push(&stream.stream_id);
                    versions.push(version);
                    event_ids.push(event.event_id);
                    event_types.push(&event.event_type);
                    schema_versions.push(event.schema_version);
                    payloads.push(&event.payload);
                    metadatas.push(&event.metadata);
                }
            }
        }

        self.client
            .query(
                &statement,
                &[
                    &together,
                    &tenants,
                    &stream_counts,
                    &event_counts,
                    &claim_keys,
                    &claim_hashes,
                    &claim_responses,
                    &stream_reqs,
                    &stream_ids,
                    &expected,
                    &event_reqs,
                    &event_streams,
                    &versions,
                    &event_ids,
                    &event_types,
                    &schema_versions,
                    &payloads,
                    &metadatas,
                ],
            )
            .await
    }
}

/// Reads the batch function's row for the request at `index`.
fn batch_outcome(row: &Row, index: usize, request: AppendRequest) -> BatchOutcome {
    let corrupt = |why: String| BatchOutcome::Done(Err(StoreError::Corrupt(why)));
    let decoded = (|| -> Result<_, tokio_postgres::Error> {
        Ok((
            row.try_get::<_, i32>(0)?,
            row.try_get::<_, i16>(1)?,
            row.try_get::<_, Option<Vec<i64>>>(2)?,
            row.try_get::<_, Option<i64>>(3)?,
            row.try_get::<_, Option<DateTime<Utc>>>(4)?,
            row.try_get::<_, Option<String>>(5)?,
            row.try_get::<_, Option<i64>>(6)?,
            row.try_get::<_, Option<String>>(7)?,
            row.try_get::<_, Option<String>>(8)?,
        ))
    })();
    let (req, status, seqs, tx, at, stream, version, constraint, detail) = match decoded {
        Ok(columns) => columns,
        Err(e) => return corrupt(format!("the append batch returned an unreadable row: {e}")),
    };
    if usize::try_from(req).ok() != Some(index + 1) {
        return corrupt(format!(
            "the append batch answered request {req} where {} was expected",
            index + 1
        ));
    }
    match status {
        0 => BatchOutcome::Done(recorded_events(request, &seqs.unwrap_or_default(), tx, at)),
        1 => match (stream, version) {
            (Some(stream_id), Some(expected_version)) => {
                BatchOutcome::Done(Err(StoreError::VersionConflict {
                    stream_id,
                    expected_version,
                }))
            }
            _ => corrupt("the append batch reported a conflict without its stream".into()),
        },
        2 => match map_unique_violation(constraint.as_deref(), detail.as_deref(), &request) {
            Some(e) => BatchOutcome::Done(Err(e)),
            None => BatchOutcome::Again(request),
        },
        3 => {
            tracing::debug!(
                error = detail.as_deref().unwrap_or_default(),
                "an append in a batch failed; appending it alone"
            );
            BatchOutcome::Again(request)
        }
        other => corrupt(format!("the append batch returned status {other}")),
    }
}

/// A written request's events, with the `seq`s the batch gave them in order.
fn recorded_events(
    request: AppendRequest,
    seqs: &[i64],
    tx: Option<i64>,
    recorded_at: Option<DateTime<Utc>>,
) -> StoreResult<Vec<RecordedEvent>> {
    let count: usize = request.streams.iter().map(|s| s.events.len()).sum();
    if seqs.len() != count {
        return Err(StoreError::Corrupt(format!(
            "append of {count} events returned {} positions",
            seqs.len()
        )));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let (Some(tx), Some(recorded_at)) = (tx, recorded_at) else {
        return Err(StoreError::Corrupt(
            "the append batch wrote events without a transaction".into(),
        ));
    };
    let mut seqs = seqs.iter().copied();
    let mut recorded = Vec::with_capacity(count);
    for stream in request.streams {
        for (version, event) in (stream.expected_version + 1..).zip(stream.events) {
            let seq = seqs.next().unwrap_or_default();
            recorded.push(RecordedEvent {
                tenant: request.tenant,
                stream_id: stream.stream_id.clone(),
                version,
                position: Position { tx, seq },
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at,
            });
        }
    }
    Ok(recorded)
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

/// See [`StoreError::is_unavailable`]: no answer from the database at all,
/// or a refusal of a class that says the database cannot serve now
/// (connection exception, transaction rollback, insufficient resources,
/// operator intervention, system error), not that the request was wrong.
pub(super) fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        // No answer from the database: a closed or failed connection, a
        // timeout, TLS. Unless the client library refused the query itself
        // (a parameter or column of the wrong type, a wrong row count): that
        // is the server's bug. The kinds are private; their messages are not.
        let message = e.to_string();
        let bug = [
            "error serializing parameter",
            "error deserializing column",
            "invalid column",
            "query returned an unexpected",
            "expected ",
        ];
        return !bug.iter().any(|b| message.starts_with(b));
    };
    let class = &db.code().code()[..2];
    matches!(class, "08" | "40" | "53" | "57" | "58") || *db.code() == SqlState::LOCK_NOT_AVAILABLE
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
        if let Some(refused) = map_unique_violation(db.constraint(), db.detail(), request) {
            return refused;
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

/// What a unique violation of an append means for its caller, from the
/// constraint and detail the database reported; `None` if it means nothing
/// the store knows (then it is a backend error).
fn map_unique_violation(
    constraint: Option<&str>,
    detail: Option<&str>,
    request: &AppendRequest,
) -> Option<StoreError> {
    match constraint {
        Some(EVENTS_PKEY) => {
            conflicting_stream(detail, &request.streams).map(|stream| StoreError::VersionConflict {
                stream_id: stream.stream_id.clone(),
                expected_version: stream.expected_version,
            })
        }
        Some(IDEMPOTENCY_PKEY) => {
            request
                .idempotency
                .as_ref()
                .map(|claim| StoreError::IdempotencyKeyTaken {
                    key: claim.key.clone(),
                })
        }
        Some(EVENTS_EVENT_ID_KEY) => Some(StoreError::DuplicateEventId(duplicate_event_id(
            detail, request,
        ))),
        Some(TENANTS_PKEY) | Some(_) | None => None,
    }
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

    fn new_event() -> super::super::NewEvent {
        super::super::NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "E".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
        }
    }

    fn claimed_request() -> AppendRequest {
        AppendRequest {
            tenant: TenantId::new(),
            streams: vec![
                StreamAppend {
                    stream_id: "a".into(),
                    expected_version: 2,
                    events: vec![new_event(), new_event()],
                },
                StreamAppend {
                    stream_id: "b".into(),
                    expected_version: 0,
                    events: vec![new_event()],
                },
            ],
            idempotency: Some(super::super::IdempotencyClaim {
                key: "k".into(),
                request_hash: "h".into(),
                response: serde_json::json!(null),
            }),
        }
    }

    #[test]
    fn a_unique_violation_in_a_batch_means_what_it_means_alone() {
        let request = claimed_request();
        let tenant = request.tenant.as_uuid();
        let detail =
            format!("Key (tenant_id, stream_id, version)=({tenant}, b, 1) already exists.");
        match map_unique_violation(Some(EVENTS_PKEY), Some(&detail), &request) {
            Some(StoreError::VersionConflict {
                stream_id,
                expected_version,
            }) => assert_eq!((stream_id.as_str(), expected_version), ("b", 0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            map_unique_violation(Some(IDEMPOTENCY_PKEY), None, &request),
            Some(StoreError::IdempotencyKeyTaken { key }) if key == "k"
        ));
        let id = request.streams[0].events[1].event_id;
        let detail = format!("Key (tenant_id, event_id)=({tenant}, {id}) already exists.");
        assert!(matches!(
            map_unique_violation(Some(EVENTS_EVENT_ID_KEY), Some(&detail), &request),
            Some(StoreError::DuplicateEventId(dup)) if dup == id
        ));
        // Anything else is for the single statement to report.
        assert!(map_unique_violation(Some("some_other_key"), None, &request).is_none());
        assert!(map_unique_violation(None, None, &request).is_none());
    }

    #[test]
    fn a_written_request_gets_its_positions_in_event_order() {
        let request = claimed_request();
        let at = Utc::now();
        let recorded = recorded_events(request.clone(), &[10, 11, 14], Some(7), Some(at)).unwrap();
        let got: Vec<(&str, i64, Position)> = recorded
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version, e.position))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 3, Position { tx: 7, seq: 10 }),
                ("a", 4, Position { tx: 7, seq: 11 }),
                ("b", 1, Position { tx: 7, seq: 14 }),
            ]
        );
        assert!(recorded.iter().all(|e| e.recorded_at == at));
        assert_eq!(recorded[2].event_id, request.streams[1].events[0].event_id);

        assert!(matches!(
            recorded_events(request.clone(), &[10, 11], Some(7), Some(at)),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            recorded_events(request, &[10, 11, 14], None, None),
            Err(StoreError::Corrupt(_))
        ));
        let claim_only = AppendRequest {
            streams: Vec::new(),
            ..claimed_request()
        };
        assert!(recorded_events(claim_only, &[], None, None)
            .unwrap()
            .is_empty());
    }
}
