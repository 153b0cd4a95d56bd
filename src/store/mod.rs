//! The event store: append-only, per-stream optimistic concurrency, one global
//! order per tenant that a follower can trust never to skip an event.
//!
//! Two backends implement [`EventStore`] and [`Directory`] and are held to the
//! same conformance suite (`tests/it/store_conformance.rs`):
//! - [`sqlite::SqliteStore`], the embedded default: one file, one writer, so
//!   commit order is rowid order.
//! - [`postgres::PostgresStore`], production: many writers; positions are
//!   `(tx_id, seq)` pairs and readers only read below the oldest running
//!   transaction, so a transaction that took an earlier sequence number but
//!   commits later is never skipped (see `read_all`).
//!
//! The store knows nothing of the domain's event types: it stores JSON with a
//! type name and a schema version. Decoding and upcasting live in
//! `crate::codec`.
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod access;
pub mod postgres;
pub mod read_models;
pub mod reminders;
pub mod sqlite;
pub mod webhooks;

pub use read_models::{
    Checkpoint, DocDifference, DocRow, DocWrite, GenerationStatus, Lease, ReadModelStore,
};

/// A point in a tenant's global order. Events are read in `(tx, seq)` order.
///
/// On PostgreSQL `tx` is the id of the transaction that wrote the event and
/// `seq` a sequence value; ordering by `tx` first is what makes the order
/// match commit visibility (see module docs). On SQLite both are the rowid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub tx: i64,
    pub seq: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position { tx: 0, seq: 0 };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx, self.seq)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a position is written TX.SEQ with two non-negative integers, got {0:?}")]
pub struct InvalidPosition(String);

impl FromStr for Position {
    type Err = InvalidPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPosition(s.to_owned());
        let (tx, seq) = s.split_once('.').ok_or_else(bad)?;
        let tx: i64 = tx.parse().map_err(|_| bad())?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        if tx < 0 || seq < 0 {
            return Err(bad());
        }
        Ok(Position { tx, seq })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    /// Who, from where, why: `buktor_domain::EventMetadata` as JSON.
    pub metadata: serde_json::Value,
}

/// Events for one stream, valid only if the stream is still at `expected_version`
/// (0 = the stream must not exist yet). The first event gets `expected_version + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
}

/// Marks a command as applied under an idempotency key, in the same atomic
/// write as its events, with the response to give when it is repeated.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyClaim {
    pub key: String,
    pub request_hash: String,
    pub response: serde_json::Value,
}

/// One atomic write: every stream's events and the idempotency claim are
/// stored together or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub tenant: TenantId,
    pub streams: Vec<StreamAppend>,
    pub idempotency: Option<IdempotencyClaim>,
}

impl AppendRequest {
    /// What every backend refuses before touching the database: a request
    /// that writes nothing, a stream listed twice or with no events (a
    /// version check alone is not an append), an empty stream id, a negative
    /// expected version, an empty idempotency key.
    ///
    /// Callers that append to several streams at once should list them in a
    /// consistent order (e.g. sorted by id): two requests that take the same
    /// streams in opposite orders can deadlock on PostgreSQL, which then fails
    /// one of them as a `VersionConflict`.
    pub fn validate(&self) -> StoreResult<()> {
        let invalid = |why: String| Err(StoreError::InvalidAppend(why));
        if self.streams.is_empty() && self.idempotency.is_none() {
            return invalid("nothing to append".into());
        }
        for (i, stream) in self.streams.iter().enumerate() {
            if stream.stream_id.is_empty() {
                return invalid("a stream id is empty".into());
            }
            if stream.expected_version < 0 {
                return invalid(format!(
                    "stream {} expects negative version {}",
                    stream.stream_id, stream.expected_version
                ));
            }
            if stream.events.is_empty() {
                return invalid(format!("stream {} has no events", stream.stream_id));
            }
            if self.streams[..i]
                .iter()
                .any(|s| s.stream_id == stream.stream_id)
            {
                return invalid(format!("stream {} is listed twice", stream.stream_id));
            }
        }
        if self.idempotency.as_ref().is_some_and(|c| c.key.is_empty()) {
            return invalid("the idempotency key is empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub tenant: TenantId,
    pub stream_id: String,
    pub version: i64,
    pub position: Position,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// What a repeated idempotency key finds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIdempotency {
    pub request_hash: String,
    pub response: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first. The caller reloads and decides again.
    #[error("stream {stream_id} is no longer at version {expected_version}")]
    VersionConflict {
        stream_id: String,
        expected_version: i64,
    },
    /// Another writer applied a command with this idempotency key first.
    #[error("idempotency key {key:?} was used concurrently")]
    IdempotencyKeyTaken { key: String },
    /// An event id was already stored for this tenant.
    #[error("event id {0} already exists")]
    DuplicateEventId(Uuid),
    #[error("append request is invalid: {0}")]
    InvalidAppend(String),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// Another runner moved a read model's checkpoint first: reload and retry.
    #[error("projection {projection} moved past the expected checkpoint")]
    CheckpointMoved { projection: String },
    /// The read-model generation written to no longer exists (a rebuild replaced it).
    #[error("projection {projection} has no generation {generation}")]
    NoSuchGeneration { projection: String, generation: i64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A stored secret cannot be sealed or opened with the configured keys
    /// (a wrong or missing `secrets.encryption_key`): an operator's fix.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error("event store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }

    /// Whether the store could not be reached or was too busy, so the same
    /// request may well succeed when retried: a lost or refused connection,
    /// a pool that timed out, a database shutting down or out of resources,
    /// a busy or unwritable file. Everything else (an append the server
    /// should never have built, stored data that does not decode, SQL the
    /// database refuses) is a bug that a retry repeats: not retryable.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Backend(e) => backend_unavailable(e.as_ref()),
            _ => false,
        }
    }
}

fn backend_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = e.downcast_ref::<tokio_postgres::Error>() {
        return postgres::is_unavailable(e);
    }
    if let Some(e) = e.downcast_ref::<std::sync::Arc<tokio_postgres::Error>>() {
        return postgres::is_unavailable(e);
    }
    if let Some(e) = e.downcast_ref::<deadpool_postgres::PoolError>() {
        return match e {
            deadpool_postgres::PoolError::Backend(e) => postgres::is_unavailable(e),
            _ => true,
        };
    }
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        return sqlite::is_unavailable(e);
    }
    // Files that cannot be opened or written, committers that stopped.
    e.is::<std::io::Error>()
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically. Fails with `VersionConflict` if any stream moved,
    /// `IdempotencyKeyTaken` if the key is already stored; nothing is written then.
    /// Returns the stored events in the order given.
    async fn append(&self, request: AppendRequest) -> StoreResult<Vec<RecordedEvent>>;

    /// A stream's events with `version > after_version`, in version order.
    async fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: &str,
        after_version: i64,
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// Several streams caught up in one round trip: for each `(stream, after_version)`
    /// the events past that version. Ordered by stream (as given), then version.
    async fn read_streams(
        &self,
        tenant: TenantId,
        streams: &[(String, i64)],
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// The tenant's events after `after` in global order, at most `limit`.
    /// Never returns an event while an event before it may still be committed,
    /// so a follower that resumes from the last position it saw misses nothing.
    async fn read_all(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// Ids of the tenant's streams whose id starts with `prefix`, sorted.
    async fn stream_ids(&self, tenant: TenantId, prefix: &str) -> StoreResult<Vec<String>>;

    async fn idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> StoreResult<Option<StoredIdempotency>>;

    /// Cheap liveness of the backend, for `/ready`.
    async fn ping(&self) -> StoreResult<()>;
}

/// A hospital as the server knows it for authentication and defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub time_zone: chrono_tz::Tz,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: only a hash of its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant: TenantId,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret part of the key.
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Tenants and API keys: not event-sourced, they are the server's own
/// configuration of who may talk to it.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<()>;
    async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>>;
    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>>;
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>>;
    /// The secret called `name`, made from `candidate` if there is none yet.
    /// Every instance on one store gets the same secret: the first writer wins.
    async fn server_secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>>;
}

/// A backend: events, the directory, the projections' documents and the
/// webhook outbox beside them.
pub trait Store: EventStore + Directory {
    fn read_models(&self) -> &dyn ReadModelStore;
    fn webhooks(&self) -> &dyn webhooks::WebhookStore;
    fn access(&self) -> &dyn access::AccessStore;
    fn reminders(&self) -> &dyn reminders::ReminderStore;
}

impl Store for postgres::PostgresStore {
    fn read_models(&self) -> &dyn ReadModelStore {
        self
    }
    fn webhooks(&self) -> &dyn webhooks::WebhookStore {
        self
    }
    fn access(&self) -> &dyn access::AccessStore {
        self
    }
    fn reminders(&self) -> &dyn reminders::ReminderStore {
        self
    }
}

impl Store for sqlite::SqliteStore {
    fn read_models(&self) -> &dyn ReadModelStore {
        self
    }
    fn webhooks(&self) -> &dyn webhooks::WebhookStore {
        self
    }
    fn access(&self) -> &dyn access::AccessStore {
        self
    }
    fn reminders(&self) -> &dyn reminders::ReminderStore {
        self
    }
}

/// Which backend the configuration selects, opened and migrated.
pub async fn open(config: &crate::config::Config) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(open_with_audit(config).await?.0)
}

/// [`open`], and the same store as the audit chain sees it.
pub async fn open_with_audit(
    config: &crate::config::Config,
) -> StoreResult<(
    std::sync::Arc<dyn Store>,
    std::sync::Arc<dyn crate::audit::AuditLog>,
)> {
    let (store, audit, _) = open_and_reseal(config).await?;
    Ok((store, audit))
}

/// [`open_with_audit`], and what it sealed: every opening seals the stored
/// secrets that are in plaintext or under an old key under the current key
/// (`src/secrets.rs`), and fails, naming the row, when one does not open
/// with the configured keys: a wrong key stops a start, it does not
/// surface later as failed deliveries.
pub async fn open_and_reseal(
    config: &crate::config::Config,
) -> StoreResult<(
    std::sync::Arc<dyn Store>,
    std::sync::Arc<dyn crate::audit::AuditLog>,
    crate::secrets::ResealReport,
)> {
    let sealer = sealer(config)?;
    let key_id = sealer.keys().map(|k| k.current_id().to_owned());
    let (store, audit, report): (
        std::sync::Arc<dyn Store>,
        std::sync::Arc<dyn crate::audit::AuditLog>,
        _,
    ) = match &config.database_url {
        Some(url) => {
            tracing::info!(database = %url, "using PostgreSQL");
            let store = postgres::PostgresStore::connect(url.expose(), config.pool_size)
                .await?
                .with_sealer(sealer);
            store.migrate().await?;
            let report = store.reseal_secrets().await?;
            let store = std::sync::Arc::new(store);
            (store.clone(), store, report)
        }
        None => {
            let path = config.data_dir.join("buktor.db");
            tracing::info!(path = %path.display(), "using the embedded store");
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                .await
                .map_err(StoreError::backend)??
                .with_sealer(sealer);
            let report = store.reseal_secrets().await?;
            let store = std::sync::Arc::new(store);
            (store.clone(), store, report)
        }
    };
    if report.sealed + report.resealed > 0 {
        tracing::info!(
            key = key_id.as_deref().unwrap_or(""),
            sealed = report.sealed,
            resealed = report.resealed,
            "sealed stored secrets under the current encryption key"
        );
    }
    Ok((store, audit, report))
}

/// The sealer of the configured keys. Every store the server or a command
/// opens seals; PostgreSQL without `secrets.encryption_key` is refused, as
/// its instances could not share a key made on one machine.
fn sealer(config: &crate::config::Config) -> StoreResult<crate::secrets::Sealer> {
    let keys = crate::secrets::SecretKeys::from_config(config)?
        .ok_or(crate::secrets::SecretsError::NoKey)?;
    Ok(crate::secrets::Sealer::new(std::sync::Arc::new(keys)))
}

/// Whether the configuration selects the embedded store.
pub fn is_embedded(config: &crate::config::Config) -> bool {
    config.database_url.is_none()
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn only_an_unreachable_or_busy_store_is_unavailable() {
        assert!(!StoreError::InvalidAppend("stream s has no events".into()).is_unavailable());
        assert!(!StoreError::Corrupt("not JSON".into()).is_unavailable());
        assert!(!StoreError::VersionConflict {
            stream_id: "s".into(),
            expected_version: 1
        }
        .is_unavailable());
        assert!(StoreError::backend(std::io::Error::other("committers stopped")).is_unavailable());
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(StoreError::backend(busy).is_unavailable());
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(!StoreError::backend(constraint).is_unavailable());
        assert!(!StoreError::backend(rusqlite::Error::InvalidQuery).is_unavailable());
        let not_json = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!StoreError::backend(not_json).is_unavailable());
    }
}
