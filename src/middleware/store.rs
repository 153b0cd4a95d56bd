//! The local store: one SQLite file (`middleware.db`) the receiver writes
//! and the sync reads, shared between processes (`serve`, and the operator
//! commands) through SQLite's own locking.
//!
//! Layout:
//! - `messages`: one row per received message (de-duplicated on
//!   `webhook_id`), in arrival order (`seq`).
//! - `deliveries`: one row per message and output (`his_db`, `hl7`) with that
//!   output's sync state (`pending`, `synced`, `failed`, `skipped`,
//!   `ignored`), attempts, last error and next attempt time.
//! - `outputs`: per output, when a pass last ran, last succeeded, and the
//!   last error.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit is on disk (the
//! WAL is fsynced) before the receiver answers 2xx; `NORMAL` would survive a
//! crash of the process but could lose the last commits on power loss.
//! Write transactions are single statements or a batch's state updates.
//!
//! Times are stored as RFC 3339 UTC text with milliseconds (fixed width, so
//! they compare as text).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::payload::{Incoming, WebhookId};
use super::{Output, StoredMessage};

/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "middleware.db";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL UNIQUE,
    appointment_id TEXT,
    event_type TEXT NOT NULL,
    appointment_version INTEGER,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_appointment
    ON messages (appointment_id, appointment_version) WHERE appointment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    output TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'synced', 'failed', 'skipped', 'ignored')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (seq, output)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries (output, state, seq);
CREATE TABLE IF NOT EXISTS outputs (
    output TEXT PRIMARY KEY,
    last_pass_at TEXT,
    last_success_at TEXT,
    last_error TEXT,
    last_error_at TEXT
);
"#;

/// Pending deliveries of `?1` due by `?2` in arrival order, at most `?3`,
/// leaving out any with an earlier (by version, then arrival) message of
/// the same appointment still pending or failed.
const DUE_SQL: &str = "SELECT m.seq, d.attempts, m.webhook_id, m.appointment_id, m.event_type,
            m.appointment_version, m.payload, m.received_at
     FROM deliveries d JOIN messages m ON m.seq = d.seq
     WHERE d.output = ?1 AND d.state = 'pending' AND d.next_attempt_at <= ?2
       AND NOT EXISTS (
         SELECT 1 FROM messages m2 CROSS JOIN deliveries d2 ON d2.seq = m2.seq AND d2.output = ?1
         WHERE m.appointment_id IS NOT NULL
           AND m2.appointment_id = m.appointment_id
           AND d2.state IN ('pending', 'failed')
           AND (m2.appointment_version < m.appointment_version
                OR (m2.appointment_version = m.appointment_version AND m2.seq < m.seq)))
     ORDER BY d.seq
     LIMIT ?3";

/// Later than any real time: makes every pending delivery due.
const END_OF_TIME: &str = "9999-12-31T23:59:59.999Z";

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_timestamp(text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("local store: cannot create {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    #[error("local store: a stored payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("local store: the blocking task failed: {0}")]
    Task(String),
}

/// A handle on the local store; clones share one connection. Open a second
/// store (another connection) for work that should not wait on this one.
#[derive(Clone)]
pub struct LocalStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// The result of storing a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A message with this `webhook-id` is already stored; nothing changed.
    Duplicate,
}

/// A pending delivery that is due.
#[derive(Debug, Clone)]
pub struct Due {
    pub seq: i64,
    pub attempts: i64,
    pub message: StoredMessage,
}

/// How one delivery ended in a pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Synced,
    /// The output does not take this type of message.
    Ignored,
    /// A permanent error: waits for an operator's `retry` or `skip`.
    Failed(String),
    /// The output was unavailable: stays pending until `next_attempt_at`.
    Retry {
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
}

/// Counts and times of one output, for `status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutputStatus {
    pub output: String,
    pub pending: i64,
    pub synced: i64,
    pub failed: i64,
    pub skipped: i64,
    pub ignored: i64,
    pub last_pass_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// When the oldest pending message arrived.
    pub oldest_pending_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub messages: i64,
    pub outputs: Vec<OutputStatus>,
}

/// Which messages an operator command acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<WebhookId>),
}

/// What an operator command did to one named message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub webhook_id: String,
    /// Deliveries changed (one per output at most).
    pub changed: usize,
}

impl LocalStore {
    /// Opens (creating if needed) `data_dir/middleware.db`.
    pub fn open_in(data_dir: &Path) -> Result<LocalStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Directory(data_dir.to_owned(), e))?;
        LocalStore::open(&data_dir.join(FILE_NAME))
    }

    pub fn open(path: &Path) -> Result<LocalStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "the local store could not switch to WAL");
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(LocalStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// Whether the store answers (for `GET /health`): one trivial read.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT count(*) FROM outputs", [], |_| Ok(())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&mut conn)?)
    }

    /// Runs `f` on a blocking thread: the store's calls wait on disk and locks.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&LocalStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Stores a message with a pending delivery for each of `outputs`, in
    /// one durable transaction; a duplicate `webhook-id` changes nothing.
    pub fn insert(
        &self,
        message: &Incoming,
        outputs: &[Output],
        now: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        Ok(self.insert_all(std::slice::from_ref(message), outputs, now)?[0])
    }

    /// [`Self::insert`] for many messages in one transaction (for tools and tests).
    pub fn insert_all(
        &self,
        messages: &[Incoming],
        outputs: &[Output],
        now: DateTime<Utc>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let now = timestamp(now);
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(insert_one(&tx, message, outputs, &now)?);
            }
            tx.commit()?;
            Ok(results)
        })
    }

    /// Up to `limit` pending deliveries of `output` that are due at `now`
    /// (every pending one if `now` is `None`), in arrival order, at most one
    /// per appointment: the appointment's earliest (by version) that is not
    /// yet synced, and only if no earlier one is `failed`.
    ///
    /// The `CROSS JOIN` keeps SQLite's planner from reading the check
    /// through every pending delivery (by state) instead of the
    /// appointment's few messages (by appointment): with 20,000 pending
    /// that was 1.1 s per batch instead of 3 ms.
    pub fn due(
        &self,
        output: Output,
        now: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let now = now.map(timestamp).unwrap_or_else(|| END_OF_TIME.into());
        let rows = self.with(|conn| {
            let mut stmt = conn.prepare_cached(DUE_SQL)?;
            let rows = stmt
                .query_map(params![output.as_str(), now, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, String>(6)?,
                        parse_timestamp(&r.get::<_, String>(7)?)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(
                |(
                    seq,
                    attempts,
                    webhook_id,
                    appointment_id,
                    event_type,
                    version,
                    payload,
                    received_at,
                )| {
                    Ok(Due {
                        seq,
                        attempts,
                        message: StoredMessage {
                            webhook_id,
                            appointment_id,
                            event_type,
                            appointment_version: version,
                            payload: serde_json::from_str(&payload)?,
                            received_at,
                        },
                    })
                },
            )
            .collect()
    }

    /// Records how deliveries of `output` ended, in one transaction. Only
    /// pending deliveries change: an operator's `skip` in between wins.
    pub fn settle(
        &self,
        output: Output,
        outcomes: &[(i64, Outcome)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now_text = timestamp(now);
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut last_error: Option<&str> = None;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE deliveries SET state = ?3, attempts = attempts + ?4, last_error = ?5,
                            next_attempt_at = ?6, updated_at = ?7
                     WHERE seq = ?1 AND output = ?2 AND state = 'pending'",
                )?;
                for (seq, outcome) in outcomes {
                    let (state, attempted, error, next) = match outcome {
                        Outcome::Synced => ("synced", 1, None, now_text.clone()),
                        Outcome::Ignored => ("ignored", 0, None, now_text.clone()),
                        Outcome::Failed(e) => ("failed", 1, Some(e.as_str()), now_text.clone()),
                        Outcome::Retry {
                            error,
                            next_attempt_at,
                        } => (
                            "pending",
                            1,
                            Some(error.as_str()),
                            timestamp(*next_attempt_at),
                        ),
                    };
                    if error.is_some() {
                        last_error = error;
                    }
                    stmt.execute(params![
                        seq,
                        output.as_str(),
                        state,
                        attempted,
                        error,
                        next,
                        now_text
                    ])?;
                }
            }
            if let Some(error) = last_error {
                record_error(&tx, output, error, &now_text)?;
            }
            tx.commit()
        })
    }

    /// Records that a pass of `output` ran, and its error if it had one.
    pub fn record_pass(
        &self,
        output: Output,
        now: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = timestamp(now);
        self.with(|conn| {
            conn.execute(
                "INSERT INTO outputs (output, last_pass_at) VALUES (?1, ?2)
                 ON CONFLICT (output) DO UPDATE SET last_pass_at = excluded.last_pass_at",
                params![output.as_str(), now],
            )?;
            match error {
                Some(error) => record_error(conn, output, error, &now),
                None => conn
                    .execute(
                        "UPDATE outputs SET last_success_at = ?2 WHERE output = ?1",
                        params![output.as_str(), now],
                    )
                    .map(drop),
            }
        })
    }

    /// `failed` → `pending`, due at once.
    pub fn retry(
        &self,
        selection: &Selection,
        output: Option<Output>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Changed>, StoreError> {
        self.change_failed(selection, output, "pending", now)
    }

    /// `failed` → `skipped`: no longer holds back the appointment's later messages.
    pub fn skip(
        &self,
        ids: &[WebhookId],
        output: Option<Output>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Changed>, StoreError> {
        self.change_failed(&Selection::Ids(ids.to_vec()), output, "skipped", now)
    }

    fn change_failed(
        &self,
        selection: &Selection,
        output: Option<Output>,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Changed>, StoreError> {
        let now = timestamp(now);
        let output = output.map(Output::as_str);
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut changed = Vec::new();
            match selection {
                Selection::All => {
                    let n = tx.execute(
                        "UPDATE deliveries SET state = ?1, next_attempt_at = ?2, updated_at = ?2
                         WHERE state = 'failed' AND (?3 IS NULL OR output = ?3)",
                        params![to, now, output],
                    )?;
                    changed.push(Changed {
                        webhook_id: "*".into(),
                        changed: n,
                    });
                }
                Selection::Ids(ids) => {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE deliveries SET state = ?1, next_attempt_at = ?2, updated_at = ?2
                         WHERE state = 'failed' AND (?3 IS NULL OR output = ?3)
                           AND seq = (SELECT seq FROM messages WHERE webhook_id = ?4)",
                    )?;
                    for id in ids {
                        let n = stmt.execute(params![to, now, output, id.as_str()])?;
                        changed.push(Changed {
                            webhook_id: id.to_string(),
                            changed: n,
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    /// Deletes messages received before `before` that no output still
    /// needs (none pending or failed), a thousand per transaction.
    pub fn purge(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = timestamp(before);
        let mut total = 0;
        loop {
            let n = self.with(|conn| {
                conn.execute(
                    "DELETE FROM messages WHERE seq IN (
                       SELECT m.seq FROM messages m
                       WHERE m.received_at < ?1
                         AND NOT EXISTS (SELECT 1 FROM deliveries d
                                         WHERE d.seq = m.seq AND d.state IN ('pending', 'failed'))
                       LIMIT 1000)",
                    params![before],
                )
            })?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    pub fn status(&self) -> Result<Status, StoreError> {
        self.with(|conn| {
            let messages: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
            let mut outputs: Vec<OutputStatus> = Vec::new();
            let entry = |outputs: &mut Vec<OutputStatus>, name: &str| -> usize {
                if let Some(i) = outputs.iter().position(|o| o.output == name) {
                    return i;
                }
                outputs.push(OutputStatus {
                    output: name.to_owned(),
                    ..OutputStatus::default()
                });
                outputs.len() - 1
            };
            let mut stmt = conn.prepare(
                "SELECT output, state, count(*) FROM deliveries GROUP BY output, state ORDER BY output",
            )?;
            let counts = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (output, state, n) in counts {
                let i = entry(&mut outputs, &output);
                let o = &mut outputs[i];
                match state.as_str() {
                    "pending" => o.pending = n,
                    "synced" => o.synced = n,
                    "failed" => o.failed = n,
                    "skipped" => o.skipped = n,
                    _ => o.ignored = n,
                }
            }
            let mut stmt = conn.prepare(
                "SELECT output, last_pass_at, last_success_at, last_error, last_error_at FROM outputs ORDER BY output",
            )?;
            let times = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (output, pass, success, error, error_at) in times {
                let i = entry(&mut outputs, &output);
                let o = &mut outputs[i];
                o.last_pass_at = pass;
                o.last_success_at = success;
                o.last_error = error;
                o.last_error_at = error_at;
            }
            for o in &mut outputs {
                o.oldest_pending_at = conn
                    .query_row(
                        "SELECT m.received_at FROM deliveries d JOIN messages m ON m.seq = d.seq
                         WHERE d.output = ?1 AND d.state = 'pending' ORDER BY d.seq LIMIT 1",
                        [&o.output],
                        |r| r.get(0),
                    )
                    .optional()?;
            }
            outputs.sort_by(|a, b| a.output.cmp(&b.output));
            Ok(Status { messages, outputs })
        })
    }

    /// Every message, in arrival order (for tests and small stores).
    pub fn messages(&self) -> Result<Vec<(StoredMessage, Vec<DeliveryRow>)>, StoreError> {
        let seqs = self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, webhook_id, appointment_id, event_type, appointment_version, payload, received_at
                 FROM messages ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, String>(5)?,
                        parse_timestamp(&r.get::<_, String>(6)?)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = conn.prepare(
                "SELECT output, state, attempts, last_error, next_attempt_at FROM deliveries WHERE seq = ?1 ORDER BY output",
            )?;
            let mut out = Vec::new();
            for row in rows {
                let deliveries = stmt
                    .query_map([row.0], |r| {
                        Ok(DeliveryRow {
                            output: r.get(0)?,
                            state: r.get(1)?,
                            attempts: r.get(2)?,
                            last_error: r.get(3)?,
                            next_attempt_at: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push((row, deliveries));
            }
            Ok(out)
        })?;
        seqs.into_iter()
            .map(
                |(
                    (_, webhook_id, appointment_id, event_type, version, payload, received_at),
                    d,
                )| {
                    Ok((
                        StoredMessage {
                            webhook_id,
                            appointment_id,
                            event_type,
                            appointment_version: version,
                            payload: serde_json::from_str(&payload)?,
                            received_at,
                        },
                        d,
                    ))
                },
            )
            .collect()
    }
}

/// One delivery as stored, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRow {
    pub output: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
}

fn insert_one(
    tx: &rusqlite::Transaction<'_>,
    message: &Incoming,
    outputs: &[Output],
    now: &str,
) -> rusqlite::Result<Inserted> {
    let inserted = tx.execute(
        "INSERT INTO messages (webhook_id, appointment_id, event_type, appointment_version, payload, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (webhook_id) DO NOTHING",
        params![
            message.webhook_id.as_str(),
            message.appointment_id,
            message.event_type,
            message.appointment_version,
            message.body,
            now
        ],
    )?;
    if inserted == 0 {
        return Ok(Inserted::Duplicate);
    }
    let seq = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO deliveries (seq, output, state, next_attempt_at, updated_at)
         VALUES (?1, ?2, 'pending', ?3, ?3)",
    )?;
    for output in outputs {
        stmt.execute(params![seq, output.as_str(), now])?;
    }
    Ok(Inserted::New)
}

fn record_error(conn: &Connection, output: Output, error: &str, now: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO outputs (output, last_error, last_error_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (output) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
        params![output.as_str(), error, now],
    )?;
    Ok(())
}

/// A cross-process lock that makes sure one sync runs at a time (the
/// scheduler in `serve` and an operator's `sync-now`): an exclusive
/// transaction on a small SQLite file beside the store. The operating
/// system releases it when the holder dies, even by `kill -9`.
pub struct SyncLock {
    _conn: Connection,
}

impl SyncLock {
    /// Takes the lock, or `None` if another sync holds it.
    pub fn try_acquire(data_dir: &Path) -> Result<Option<SyncLock>, StoreError> {
        let conn = Connection::open(data_dir.join("sync.lock"))?;
        conn.busy_timeout(Duration::ZERO)?;
        match conn.execute_batch("BEGIN EXCLUSIVE") {
            Ok(()) => Ok(Some(SyncLock { _conn: conn })),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(id: &str, appointment: &str, version: i64) -> Incoming {
        Incoming {
            webhook_id: WebhookId::parse(id).unwrap(),
            event_type: "appointment.booked".into(),
            appointment_id: Some(appointment.into()),
            appointment_version: Some(version),
            body: format!(r#"{{"v":{version}}}"#),
        }
    }

    fn ids(due: &[Due]) -> Vec<&str> {
        due.iter().map(|d| d.message.webhook_id.as_str()).collect()
    }

    #[test]
    fn due_gives_each_appointment_its_earliest_version_and_a_failure_holds_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_in(dir.path()).unwrap();
        let now = Utc::now();
        for (id, a, v) in [
            ("m1", "a", 1),
            ("m3", "a", 3),
            ("m2", "a", 2),
            ("n1", "b", 1),
        ] {
            assert_eq!(
                store
                    .insert(&incoming(id, a, v), &[Output::HisDb], now)
                    .unwrap(),
                Inserted::New
            );
        }
        assert_eq!(
            store
                .insert(&incoming("m1", "a", 1), &[Output::HisDb], now)
                .unwrap(),
            Inserted::Duplicate
        );
        let due = store.due(Output::HisDb, Some(now), 10).unwrap();
        assert_eq!(ids(&due), ["m1", "n1"]);
        store
            .settle(
                Output::HisDb,
                &[
                    (due[0].seq, Outcome::Failed("bad".into())),
                    (due[1].seq, Outcome::Synced),
                ],
                now,
            )
            .unwrap();
        assert!(
            store.due(Output::HisDb, None, 10).unwrap().is_empty(),
            "m2 waits behind the failed m1"
        );
        let skipped = store
            .skip(&[WebhookId::parse("m1").unwrap()], None, now)
            .unwrap();
        assert_eq!(skipped[0].changed, 1);
        let due = store.due(Output::HisDb, Some(now), 10).unwrap();
        assert_eq!(ids(&due), ["m2"]);
        let later = now + chrono::Duration::seconds(30);
        store
            .settle(
                Output::HisDb,
                &[(
                    due[0].seq,
                    Outcome::Retry {
                        error: "down".into(),
                        next_attempt_at: later,
                    },
                )],
                now,
            )
            .unwrap();
        assert!(
            store.due(Output::HisDb, Some(now), 10).unwrap().is_empty(),
            "backing off"
        );
        assert_eq!(
            ids(&store.due(Output::HisDb, Some(later), 10).unwrap()),
            ["m2"]
        );
        assert_eq!(
            ids(&store.due(Output::HisDb, None, 10).unwrap()),
            ["m2"],
            "sync-now ignores backoff"
        );
        let status = store.status().unwrap();
        assert_eq!(status.messages, 4);
        let o = &status.outputs[0];
        assert_eq!((o.pending, o.synced, o.failed, o.skipped), (2, 1, 0, 1));
        assert_eq!(o.last_error.as_deref(), Some("down"));
    }

    #[test]
    fn due_looks_up_an_appointments_own_messages_not_every_pending_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_in(dir.path()).unwrap();
        let plan: Vec<String> = store
            .with(|conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {DUE_SQL}"))?;
                let rows = stmt
                    .query_map(params!["his_db", END_OF_TIME, 10], |r| {
                        r.get::<_, String>(3)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>();
                rows
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("m2 USING COVERING INDEX messages_appointment")),
            "{plan:#?}"
        );
    }

    #[test]
    fn the_sync_lock_admits_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = SyncLock::try_acquire(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(SyncLock::try_acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(SyncLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
