//! SQLite backend, the embedded default: one file, one writer.
//!
//! Layout: one writer connection behind a mutex, used from
//! `tokio::task::spawn_blocking`; appends run in one `BEGIN IMMEDIATE`
//! transaction each. Commits are therefore serialized (across processes too:
//! `IMMEDIATE` takes the file's write lock before the first row is written),
//! so the `seq` rowid order is the commit order and is the global order:
//! a reader can never see event 11 without event 10. Readers use their own
//! connections (WAL mode: they never block the writer, nor it them), kept in
//! a small pool that grows to the number of concurrent reads.
//!
//! Storage: ids as hyphenated UUID text, times as RFC 3339 UTC text with
//! microseconds, JSON as text. See `migrations/sqlite/0001_event_store.sql`.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::secrets::{endpoint_context, server_secret_context, ResealReport, Sealer};
use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

mod access;
mod audit_chain;
mod read_models;
mod reminders;
mod webhooks;

use super::{
    ApiKeyRecord, AppendRequest, Directory, EventStore, Position, RecordedEvent, StoreError,
    StoreResult, StoredIdempotency, TenantRecord,
};

/// Schema migrations, applied in order and recorded in `schema_migrations`.
/// Never edit one that has shipped: add a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_event_store",
        include_str!("../../migrations/sqlite/0001_event_store.sql"),
    ),
    (
        "0002_event_chain",
        include_str!("../../migrations/sqlite/0002_event_chain.sql"),
    ),
    (
        "0003_read_models",
        include_str!("../../migrations/sqlite/0003_read_models.sql"),
    ),
    (
        "0004_webhooks",
        include_str!("../../migrations/sqlite/0004_webhooks.sql"),
    ),
    (
        "0005_reminders",
        include_str!("../../migrations/sqlite/0005_reminders.sql"),
    ),
    (
        "0006_server_secrets",
        include_str!("../../migrations/sqlite/0006_server_secrets.sql"),
    ),
    (
        "0007_revocation",
        include_str!("../../migrations/sqlite/0007_revocation.sql"),
    ),
];

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns every event read returns, in the order [`read_event_row`] expects.
macro_rules! event_columns {
    () => {
        "tenant_id, stream_id, version, seq, event_id, event_type, \
         schema_version, payload, metadata, recorded_at"
    };
}

const READ_STREAM_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE tenant_id = ?1 AND stream_id = ?2 AND version > ?3 ORDER BY version"
);

/// [`EventStore`] and [`Directory`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Seals the webhook secrets and server secrets this store keeps.
    sealer: Sealer,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// Idle read connections; a read takes one or opens a new one.
    readers: Mutex<Vec<Connection>>,
    /// Revocations made in this process or read from the file.
    revocations: crate::store::access::RevocationFeed,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at
    /// `path`, in WAL mode with `synchronous=FULL`, and applies the embedded
    /// migrations that are not yet recorded. Blocks while it does so.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
        }
        let mut writer = Connection::open(path).map_err(map_db)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(map_db)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(map_db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(std::io::Error::other(format!(
                "SQLite refused WAL mode for {} (journal mode is {mode})",
                path.display()
            ))));
        }
        writer
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(map_db)?;
        migrate(&mut writer)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                revocations: Default::default(),
            }),
            sealer: Sealer::default(),
        })
    }

    /// This store, sealing the secrets it keeps with `sealer`.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// Seals every stored secret that is in plaintext (from before sealing)
    /// or sealed under an old key, under the current key, in one
    /// transaction; fails, naming the row, if one does not open with the
    /// configured keys (and then changes nothing).
    pub async fn reseal_secrets(&self) -> StoreResult<ResealReport> {
        let sealer = self.sealer.clone();
        if sealer.keys().is_none() {
            return Ok(ResealReport::default());
        }
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let mut report = ResealReport::default();
            let endpoints: Vec<(String, String, Option<String>)> = {
                let mut statement = tx
                    .prepare("SELECT id, secret, previous_secret FROM webhook_endpoints ORDER BY id")
                    .map_err(map_db)?;
                let rows = statement
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(map_db)?;
                rows.collect::<Result<_, _>>().map_err(map_db)?
            };
            for (id, current, previous) in endpoints {
                let uuid = parse_uuid(&id)?;
                let new_current = sealer.reseal(&endpoint_context(uuid, false), current.as_bytes())?;
                report.count(current.as_bytes(), new_current.is_some());
                let new_previous = match &previous {
                    Some(p) => {
                        let n = sealer.reseal(&endpoint_context(uuid, true), p.as_bytes())?;
                        report.count(p.as_bytes(), n.is_some());
                        n
                    }
                    None => None,
                };
                if new_current.is_some() || new_previous.is_some() {
                    let text = |v: Vec<u8>| String::from_utf8(v).expect("sealed values are text");
                    tx.execute(
                        "UPDATE webhook_endpoints SET secret = ?2, previous_secret = ?3 WHERE id = ?1",
                        params![
                            id,
                            new_current.map(text).unwrap_or(current),
                            new_previous.map(text).or(previous)
                        ],
                    )
                    .map_err(map_db)?;
                }
            }
            let secrets: Vec<(String, Vec<u8>)> = {
                let mut statement = tx
                    .prepare("SELECT name, secret FROM server_secrets ORDER BY name")
                    .map_err(map_db)?;
                let rows = statement
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(map_db)?;
                rows.collect::<Result<_, _>>().map_err(map_db)?
            };
            for (name, stored) in secrets {
                let new = sealer.reseal(&server_secret_context(&name), &stored)?;
                report.count(&stored, new.is_some());
                if let Some(new) = new {
                    tx.execute(
                        "UPDATE server_secrets SET secret = ?2 WHERE name = ?1",
                        params![name, new],
                    )
                    .map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(report)
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs one SQL statement on the writer connection, bypassing the store.
    /// Only for tests that check what the database itself enforces.
    #[doc(hidden)]
    pub async fn execute_raw_for_tests(&self, sql: &str) -> StoreResult<u64> {
        let sql = sql.to_owned();
        self.write(move |conn| Ok(conn.execute(&sql, []).map_err(map_db)? as u64))
            .await
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(StoreError::backend)?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&mut conn);
            // A connection left inside a transaction by a failed read is not
            // reused.
            if conn.is_autocommit() {
                inner
                    .readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_db)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_db)?;
    Ok(conn)
}

/// Applies the migrations not yet recorded, in one `IMMEDIATE` transaction:
/// processes opening the same file at once take turns on its write lock.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_db)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    TEXT NOT NULL PRIMARY KEY,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         )",
    )
    .map_err(map_db)?;
    for (name, sql) in MIGRATIONS {
        let applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .map_err(map_db)?
            .is_some();
        if applied {
            continue;
        }
        tracing::info!(migration = name, "applying SQLite migration");
        tx.execute_batch(sql).map_err(map_db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            [name],
        )
        .map_err(map_db)?;
    }
    tx.commit().map_err(map_db)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
        request.validate()?;
        self.write(move |conn| append(conn, request)).await
    }

    async fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: &str,
        after_version: i64,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(READ_STREAM_SQL).map_err(map_db)?;
            let rows = statement
                .query_map(
                    params![tenant.to_string(), stream_id, after_version],
                    read_event_row,
                )
                .map_err(map_db)?;
            collect_events(rows)
        })
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
        let streams = streams.to_vec();
        self.read(move |conn| {
            // One read transaction: every stream as of the same moment.
            let tx = conn.transaction().map_err(map_db)?;
            let mut events = Vec::new();
            {
                let mut statement = tx.prepare_cached(READ_STREAM_SQL).map_err(map_db)?;
                let tenant = tenant.to_string();
                for (stream_id, after_version) in &streams {
                    let rows = statement
                        .query_map(params![tenant, stream_id, after_version], read_event_row)
                        .map_err(map_db)?;
                    events.extend(collect_events(rows)?);
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(events)
        })
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
        // Positions here are (seq, seq). `(seq, seq) > (after.tx, after.seq)`
        // is `seq >= after.tx` when `after.tx > after.seq`, else `seq > after.tx`.
        let floor = if after.tx > after.seq {
            after.tx - 1
        } else {
            after.tx
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            const SQL: &str = concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            );
            let mut statement = conn.prepare_cached(SQL).map_err(map_db)?;
            let rows = statement
                .query_map(params![tenant.to_string(), floor, limit], read_event_row)
                .map_err(map_db)?;
            collect_events(rows)
        })
        .await
    }

    async fn stream_ids(&self, tenant: TenantId, prefix: &str) -> StoreResult<Vec<String>> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            // A loose index scan: one probe of the (tenant_id, stream_id,
            // version) index per stream rather than one row per event. Ids
            // compare bytewise (BINARY), so those with the prefix are
            // contiguous and start at the prefix.
            let mut statement = conn
                .prepare_cached(
                    "WITH RECURSIVE s(stream_id) AS ( \
                         SELECT (SELECT stream_id FROM events \
                                 WHERE tenant_id = ?1 AND stream_id >= ?2 \
                                 ORDER BY stream_id LIMIT 1) \
                         UNION ALL \
                         SELECT (SELECT e.stream_id FROM events e \
                                 WHERE e.tenant_id = ?1 AND e.stream_id > s.stream_id \
                                 ORDER BY e.stream_id LIMIT 1) \
                         FROM s \
                         WHERE s.stream_id IS NOT NULL \
                           AND substr(s.stream_id, 1, length(?2)) = ?2 \
                     ) \
                     SELECT stream_id FROM s \
                     WHERE stream_id IS NOT NULL AND substr(stream_id, 1, length(?2)) = ?2 \
                     ORDER BY stream_id",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map(params![tenant.to_string(), prefix], |row| row.get(0))
                .map_err(map_db)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(map_db)
        })
        .await
    }

    async fn idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> StoreResult<Option<StoredIdempotency>> {
        let key = key.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT request_hash, response FROM idempotency_keys \
                     WHERE tenant_id = ?1 AND key = ?2",
                )
                .map_err(map_db)?;
            let row = statement
                .query_row(params![tenant.to_string(), key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
                .map_err(map_db)?;
            row.map(|(request_hash, response)| {
                Ok(StoredIdempotency {
                    request_hash,
                    response: parse_json(&response)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_db))
            .await
    }
}

/// The append, inside the writer's lock.
fn append(conn: &mut Connection, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_db)?;
    let tenant = request.tenant.to_string();
    {
        let mut current = tx
            .prepare_cached(
                "SELECT COALESCE(MAX(version), 0) FROM events \
                 WHERE tenant_id = ?1 AND stream_id = ?2",
            )
            .map_err(map_db)?;
        for stream in &request.streams {
            let version: i64 = current
                .query_row(params![tenant, stream.stream_id], |row| row.get(0))
                .map_err(map_db)?;
            if version != stream.expected_version {
                return Err(StoreError::VersionConflict {
                    stream_id: stream.stream_id.clone(),
                    expected_version: stream.expected_version,
                });
            }
        }
    }
    // Truncated to what is stored, so the events returned equal those read.
    let recorded_at = to_micros(Utc::now());
    let recorded_at_text = format_time(recorded_at);
    if let Some(claim) = &request.idempotency {
        let response = serde_json::to_string(&claim.response).map_err(StoreError::backend)?;
        tx.prepare_cached(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, response, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(map_db)?
        .execute(params![
            tenant,
            claim.key,
            claim.request_hash,
            response,
            recorded_at_text
        ])
        .map_err(|e| {
            if is_unique_violation(&e, "idempotency_keys.") {
                StoreError::IdempotencyKeyTaken {
                    key: claim.key.clone(),
                }
            } else {
                map_db(e)
            }
        })?;
    }
    let mut recorded = Vec::with_capacity(request.streams.iter().map(|s| s.events.len()).sum());
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (tenant_id, stream_id, version, event_id, event_type, \
                                     schema_version, payload, metadata, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING seq",
            )
            .map_err(map_db)?;
        for stream in request.streams {
            for (version, event) in (stream.expected_version + 1..).zip(stream.events) {
                let payload = serde_json::to_string(&event.payload).map_err(StoreError::backend)?;
                let metadata =
                    serde_json::to_string(&event.metadata).map_err(StoreError::backend)?;
                let seq: i64 = insert
                    .query_row(
                        params![
                            tenant,
                            stream.stream_id,
                            version,
                            event.event_id.to_string(),
                            event.event_type,
                            event.schema_version,
                            payload,
                            metadata,
                            recorded_at_text,
                        ],
                        |row| row.get(0),
                    )
                    .map_err(|e| {
                        if is_unique_violation(&e, "events.tenant_id, events.event_id") {
                            StoreError::DuplicateEventId(event.event_id)
                        } else if is_unique_violation(&e, "events.tenant_id, events.stream_id") {
                            StoreError::VersionConflict {
                                stream_id: stream.stream_id.clone(),
                                expected_version: stream.expected_version,
                            }
                        } else {
                            map_db(e)
                        }
                    })?;
                recorded.push(RecordedEvent {
                    tenant: request.tenant,
                    stream_id: stream.stream_id.clone(),
                    version,
                    position: Position { tx: seq, seq },
                    event_id: event.event_id,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload: event.payload,
                    metadata: event.metadata,
                    recorded_at,
                });
            }
        }
    }
    tx.commit().map_err(map_db)?;
    Ok(recorded)
}

#[async_trait]
impl Directory for SqliteStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tenants (id, name, time_zone, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(map_db)?
                .execute(params![
                    tenant.id.to_string(),
                    tenant.name,
                    tenant.time_zone.name(),
                    format_time(tenant.created_at),
                ])
                .map_err(map_db)?;
            if inserted == 0 {
                return Err(StoreError::TenantExists(tenant.id));
            }
            Ok(())
        })
        .await
    }

    async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT id, name, time_zone, created_at FROM tenants WHERE id = ?1")
                .map_err(map_db)?
                .query_row([id.to_string()], read_tenant_row)
                .optional()
                .map_err(map_db)?;
            row.map(decode_tenant).transpose()
        })
        .await
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached("SELECT id, name, time_zone, created_at FROM tenants ORDER BY id")
                .map_err(map_db)?;
            let rows = statement
                .query_map([], read_tenant_row)
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            rows.into_iter().map(decode_tenant).collect()
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_keys (id, tenant_id, name, role, secret_hash, created_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_db)?
            .execute(params![
                key.id.to_string(),
                key.tenant.to_string(),
                key.name,
                key.role.as_str(),
                key.secret_hash,
                format_time(key.created_at),
                key.revoked_at.map(format_time),
            ])
            .map_err(map_db)?;
            Ok(())
        })
        .await
    }

    async fn server_secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let context = server_secret_context(name);
        let (name, candidate) = (name.to_owned(), self.sealer.seal(&context, candidate));
        let stored = self
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO server_secrets (name, secret, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO NOTHING",
                    params![name, candidate, format_time(chrono::Utc::now())],
                )
                .map_err(map_db)?;
                conn.query_row(
                    "SELECT secret FROM server_secrets WHERE name = ?1",
                    [&name],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .map_err(map_db)
            })
            .await?;
        Ok(self.sealer.open(&context, &stored)?)
    }

    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT id, tenant_id, name, role, secret_hash, created_at, revoked_at \
                     FROM api_keys WHERE id = ?1",
                )
                .map_err(map_db)?
                .query_row([id.to_string()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, Option<String>>(6)?,
                    ))
                })
                .optional()
                .map_err(map_db)?;
            row.map(
                |(id, tenant, name, role, secret_hash, created_at, revoked_at)| {
                    Ok(ApiKeyRecord {
                        id: parse_uuid(&id)?,
                        tenant: TenantId::from_uuid(parse_uuid(&tenant)?),
                        role: role
                            .parse::<Role>()
                            .map_err(|e| StoreError::Corrupt(format!("api key {id}: {e}")))?,
                        name,
                        secret_hash,
                        created_at: parse_time(&created_at)?,
                        revoked_at: revoked_at.as_deref().map(parse_time).transpose()?,
                    })
                },
            )
            .transpose()
        })
        .await
    }
}

/// An event row as stored, before its text columns are parsed.
struct EventRow {
    tenant_id: String,
    stream_id: String,
    version: i64,
    seq: i64,
    event_id: String,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    recorded_at: String,
}

fn read_event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        tenant_id: row.get(0)?,
        stream_id: row.get(1)?,
        version: row.get(2)?,
        seq: row.get(3)?,
        event_id: row.get(4)?,
        event_type: row.get(5)?,
        schema_version: row.get(6)?,
        payload: row.get(7)?,
        metadata: row.get(8)?,
        recorded_at: row.get(9)?,
    })
}

fn collect_events(
    rows: impl Iterator<Item = rusqlite::Result<EventRow>>,
) -> StoreResult<Vec<RecordedEvent>> {
    rows.map(|row| decode_event(row.map_err(map_db)?)).collect()
}

fn decode_event(row: EventRow) -> StoreResult<RecordedEvent> {
    Ok(RecordedEvent {
        tenant: TenantId::from_uuid(parse_uuid(&row.tenant_id)?),
        stream_id: row.stream_id,
        version: row.version,
        position: Position {
            tx: row.seq,
            seq: row.seq,
        },
        event_id: parse_uuid(&row.event_id)?,
        event_type: row.event_type,
        schema_version: row.schema_version,
        payload: parse_json(&row.payload)?,
        metadata: parse_json(&row.metadata)?,
        recorded_at: parse_time(&row.recorded_at)?,
    })
}

type TenantRow = (String, String, String, String);

fn read_tenant_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_tenant((id, name, time_zone, created_at): TenantRow) -> StoreResult<TenantRecord> {
    let id = TenantId::from_uuid(parse_uuid(&id)?);
    Ok(TenantRecord {
        id,
        name,
        time_zone: time_zone.parse().map_err(|_| {
            StoreError::Corrupt(format!("tenant {id} has unknown time zone {time_zone:?}"))
        })?,
        created_at: parse_time(&created_at)?,
    })
}

/// A follower's checkpoint (the webhook fan-out's, the notification
/// planner's) in `table`: `(tenant_id, position_tx, position_seq, updated_at)`.
fn follower_checkpoint(conn: &Connection, table: &str, tenant: &str) -> StoreResult<Position> {
    conn.prepare_cached(&format!(
        "SELECT position_tx, position_seq FROM {table} WHERE tenant_id = ?1"
    ))
    .map_err(map_db)?
    .query_row([tenant], |r| {
        Ok(Position {
            tx: r.get(0)?,
            seq: r.get(1)?,
        })
    })
    .optional()
    .map_err(map_db)
    .map(|p| p.unwrap_or(Position::START))
}

/// Moves a follower's checkpoint from `expected` to `to` inside the
/// transaction that writes what it decided; `name` is the follower, for
/// the refusal when another leader moved it first.
fn move_follower_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    name: &str,
    tenant: &str,
    expected: Position,
    to: Position,
) -> StoreResult<()> {
    if follower_checkpoint(tx, table, tenant)? != expected {
        return Err(StoreError::CheckpointMoved {
            projection: name.into(),
        });
    }
    tx.prepare_cached(&format!(
        "INSERT INTO {table} (tenant_id, position_tx, position_seq, updated_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (tenant_id) DO UPDATE SET position_tx = excluded.position_tx, \
             position_seq = excluded.position_seq, updated_at = excluded.updated_at"
    ))
    .map_err(map_db)?
    .execute(params![tenant, to.tx, to.seq, format_time(Utc::now())])
    .map_err(map_db)?;
    Ok(())
}

fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{text:?} is not a UUID: {e}")))
}

fn parse_json(text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

fn parse_time(text: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("{text:?} is not an RFC 3339 time: {e}")))
}

fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Whether `e` is a UNIQUE or PRIMARY KEY failure on the columns named in
/// `columns` (SQLite reports `UNIQUE constraint failed: table.col, table.col`).
fn is_unique_violation(e: &rusqlite::Error, columns: &str) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            failure.code == ErrorCode::ConstraintViolation && message.contains(columns)
        }
        _ => false,
    }
}

/// See [`StoreError::is_unavailable`]: the file is busy, locked by another
/// process, or cannot be read or written (disk full, I/O error).
pub(super) fn is_unavailable(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        ),
        _ => false,
    }
}

fn map_db(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}
