//! Storage for the projections' documents (see `buktor_projections`).
//!
//! Documents are JSON, keyed by `(projection, generation, tenant, key)`,
//! optionally with a secondary `index_key`. Each `(projection, generation,
//! tenant)` has a checkpoint: the position of the last event folded into its
//! documents, moved only by [`ReadModelStore::commit_docs`] in the same
//! transaction as the documents, and only from the position the writer
//! started from. So a crash never applies an event twice or skips one, and
//! two runners that race on the same generation cannot both apply a batch.
use std::collections::HashMap;

use async_trait::async_trait;
use buktor_domain::TenantId;

use super::{Position, StoreResult};

/// A document to write; `doc: None` deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocWrite {
    pub key: String,
    pub index_key: Option<String>,
    /// Serialized JSON.
    pub doc: Option<String>,
    /// Known not to be stored yet (a rebuild's fresh generation): the
    /// backend may insert it without looking for an existing row.
    pub is_new: bool,
}

/// A stored document: key and JSON.
pub type DocRow = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub position: Position,
    /// Events folded so far (all of them, not only those that changed a document).
    pub events: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationStatus {
    /// Served to queries and followed by the server's runner.
    Live,
    /// Filled by a rebuild; becomes live when it has caught up.
    Building,
    /// Filled by `verify` for comparison, then dropped.
    Scratch,
}

impl GenerationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationStatus::Live => "live",
            GenerationStatus::Building => "building",
            GenerationStatus::Scratch => "scratch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(GenerationStatus::Live),
            "building" => Some(GenerationStatus::Building),
            "scratch" => Some(GenerationStatus::Scratch),
            _ => None,
        }
    }
}

/// One document that differs between two generations.
#[derive(Debug, Clone, PartialEq)]
pub struct DocDifference {
    pub tenant: TenantId,
    pub key: String,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// Held by the one runner of a projection that may apply events. Dropping it
/// (or the process dying) lets another instance take over.
pub struct Lease {
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl Lease {
    pub fn new(
        alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
        held: Box<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        Lease { alive, _held: held }
    }

    /// False once the lease is lost (e.g. its database connection broke).
    pub fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// The generation queries read, created empty on first use.
    async fn live_generation(&self, projection: &str) -> StoreResult<i64>;

    /// A new, empty generation beside the others.
    async fn new_generation(&self, projection: &str, status: GenerationStatus) -> StoreResult<i64>;

    /// Makes `generation` live and drops the one that was; returns its number.
    async fn promote(&self, projection: &str, generation: i64) -> StoreResult<Option<i64>>;

    /// Removes a generation with its documents and checkpoints.
    async fn drop_generation(&self, projection: &str, generation: i64) -> StoreResult<()>;

    async fn generations(&self, projection: &str) -> StoreResult<Vec<(i64, GenerationStatus)>>;

    async fn checkpoints(
        &self,
        projection: &str,
        generation: i64,
    ) -> StoreResult<HashMap<TenantId, Checkpoint>>;

    /// The live generations' positions for one tenant, by projection.
    async fn live_positions(&self, tenant: TenantId) -> StoreResult<HashMap<String, Position>>;

    async fn load_docs(
        &self,
        projection: &str,
        generation: i64,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<DocRow>>;

    /// Writes the documents and moves the checkpoint from `expected` to `to`,
    /// atomically. Fails with [`super::StoreError::CheckpointMoved`] (and
    /// writes nothing) when the checkpoint is no longer at `expected`, and
    /// with [`super::StoreError::NoSuchGeneration`] when it was dropped.
    #[allow(clippy::too_many_arguments)]
    async fn commit_docs(
        &self,
        projection: &str,
        generation: i64,
        tenant: TenantId,
        expected: Position,
        to: Position,
        events: i64,
        writes: &[DocWrite],
    ) -> StoreResult<()>;

    /// Documents of the live generation by key.
    async fn live_docs(
        &self,
        projection: &str,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<DocRow>>;

    /// Documents of the live generation whose key starts with `prefix`, in
    /// key order, after `after` (exclusive), at most `limit`.
    async fn live_scan(
        &self,
        projection: &str,
        tenant: TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<DocRow>>;

    /// Documents of the live generation with this index key, in key order.
    async fn live_by_index(
        &self,
        projection: &str,
        tenant: TenantId,
        index_key: &str,
    ) -> StoreResult<Vec<DocRow>>;

    /// Documents that differ between two generations (either side may be
    /// missing), at most `limit`, in (tenant, key) order.
    async fn diff_generations(
        &self,
        projection: &str,
        left: i64,
        right: i64,
        limit: usize,
    ) -> StoreResult<Vec<DocDifference>>;

    /// Becomes the one runner of `projection` across server instances, if no
    /// other instance is. `None`: another one is.
    async fn try_lead(&self, projection: &str) -> StoreResult<Option<Lease>>;
}
