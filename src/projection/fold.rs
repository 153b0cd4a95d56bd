//! Folding a tenant's events into one generation of a projection's
//! documents, a batch per transaction.
use std::collections::BTreeSet;
use std::marker::PhantomData;

use async_trait::async_trait;
use buktor_domain::TenantId;
use buktor_projections::{DocMap, Envelope, Projection, ProjectionError};

use crate::store::{DocWrite, Position, RecordedEvent, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event this server cannot fold: the runner stops here rather than
    /// skip it, and retries (a newer server version may be needed).
    #[error("event at {position} cannot be projected: {source}")]
    Event {
        position: Position,
        #[source]
        source: ProjectionError,
    },
    #[error("stored document {key:?} of {projection} is unreadable: {reason}")]
    Document {
        projection: &'static str,
        key: String,
        reason: String,
    },
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing (more) to apply.
    CaughtUp,
    Applied {
        to: Position,
        events: usize,
    },
}

pub fn envelope(e: &RecordedEvent) -> Envelope<'_> {
    Envelope {
        stream_id: &e.stream_id,
        version: e.version,
        position: (e.position.tx, e.position.seq),
        event_id: e.event_id,
        event_type: &e.event_type,
        schema_version: e.schema_version,
        payload: &e.payload,
        metadata: &e.metadata,
        recorded_at: e.recorded_at,
    }
}

/// One projection, chosen at run time (the CLI names it).
#[async_trait]
pub trait Fold: Send + Sync {
    fn name(&self) -> &'static str;

    /// Applies the events after `from`, up to `until` (inclusive) when given,
    /// at most `batch` of them, in one transaction.
    async fn step(
        &mut self,
        store: &dyn Store,
        generation: i64,
        tenant: TenantId,
        from: Position,
        until: Option<Position>,
        batch: usize,
    ) -> Result<Step, FoldError>;

    /// Applies `events` (the tenant's next ones after `from`, in order) in
    /// one transaction.
    async fn fold(
        &mut self,
        store: &dyn Store,
        generation: i64,
        tenant: TenantId,
        from: Position,
        events: &[RecordedEvent],
    ) -> Result<Step, FoldError>;

    /// Forgets cached documents (after another writer may have changed them).
    fn forget(&mut self);

    /// Declares that this folder alone fills `generation`, which started
    /// empty: a document it never wrote cannot exist, so it is not looked up.
    fn fill_fresh(&mut self, generation: i64);
}

/// Keeps the documents it wrote between batches: while its checkpoint
/// compare succeeds nobody else wrote this generation, so they are current.
pub struct Folder<P: Projection> {
    cache: std::collections::HashMap<TenantId, (i64, DocMap<P::Doc>)>,
    /// For a generation this folder fills alone from empty: hashes of the
    /// keys it has written. A key not in it has no document (a hash
    /// collision only costs a needless lookup).
    fresh: Option<(i64, std::collections::HashSet<u64>)>,
    _projection: PhantomData<P>,
}

fn key_hash(tenant: TenantId, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Documents kept between batches, at most.
const CACHE_LIMIT: usize = 100_000;

impl<P: Projection> Default for Folder<P> {
    fn default() -> Self {
        Folder {
            cache: Default::default(),
            fresh: None,
            _projection: PhantomData,
        }
    }
}

#[async_trait]
impl<P: Projection> Fold for Folder<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn forget(&mut self) {
        self.cache.clear();
        self.fresh = None;
    }

    fn fill_fresh(&mut self, generation: i64) {
        self.fresh = Some((generation, Default::default()));
    }

    async fn step(
        &mut self,
        store: &dyn Store,
        generation: i64,
        tenant: TenantId,
        from: Position,
        until: Option<Position>,
        batch: usize,
    ) -> Result<Step, FoldError> {
        let mut events = store.read_all(tenant, from, batch).await?;
        if let Some(until) = until {
            events.retain(|e| e.position <= until);
        }
        self.fold(store, generation, tenant, from, &events).await
    }

    async fn fold(
        &mut self,
        store: &dyn Store,
        generation: i64,
        tenant: TenantId,
        from: Position,
        events: &[RecordedEvent],
    ) -> Result<Step, FoldError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(Step::CaughtUp);
        };
        // Taken out: if this batch fails, what it changed in memory is dropped.
        let mut docs = match self.cache.remove(&tenant) {
            Some((g, docs)) if g == generation && docs.len() < CACHE_LIMIT => docs,
            _ => DocMap::new(),
        };
        let fresh = match &self.fresh {
            Some((g, written)) if *g == generation => Some(written),
            _ => None,
        };
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for key in events.iter().flat_map(|e| P::keys(&envelope(e))) {
            if docs.knows(&key) {
                continue;
            }
            if fresh.is_some_and(|written| !written.contains(&key_hash(tenant, &key))) {
                docs.loaded(key, None);
            } else {
                wanted.insert(key);
            }
        }
        if !wanted.is_empty() {
            let wanted: Vec<String> = wanted.into_iter().collect();
            let rows = store
                .read_models()
                .load_docs(P::NAME, generation, tenant, &wanted)
                .await?;
            for (key, json) in rows {
                let doc: P::Doc = serde_json::from_str(&json).map_err(|e| FoldError::Document {
                    projection: P::NAME,
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                docs.loaded(key, Some(doc));
            }
            for key in wanted {
                docs.loaded(key, None);
            }
        }
        for e in events {
            P::apply(&envelope(e), &mut docs).map_err(|source| FoldError::Event {
                position: e.position,
                source,
            })?;
        }
        let written_before = match &self.fresh {
            Some((g, written)) if *g == generation => Some(written),
            _ => None,
        };
        let writes: Vec<DocWrite> = docs
            .changes()
            .map(|(key, doc)| DocWrite {
                key: key.to_owned(),
                index_key: doc.and_then(P::index_key),
                // Our own document types always serialize.
                doc: doc.map(|d| serde_json::to_string(d).unwrap_or_default()),
                is_new: written_before
                    .is_some_and(|written| !written.contains(&key_hash(tenant, key))),
            })
            .collect();
        store
            .read_models()
            .commit_docs(
                P::NAME,
                generation,
                tenant,
                from,
                last,
                events.len() as i64,
                &writes,
            )
            .await?;
        if let Some((g, written)) = &mut self.fresh {
            if *g == generation {
                written.extend(writes.iter().map(|w| key_hash(tenant, &w.key)));
            }
        }
        docs.mark_clean();
        self.cache.insert(tenant, (generation, docs));
        Ok(Step::Applied {
            to: last,
            events: events.len(),
        })
    }
}

/// A fresh folder for the projection named `name`.
pub fn folder(name: &str) -> Option<Box<dyn Fold>> {
    use buktor_projections::{appointments, audit, calendar, catalog};
    Some(match name {
        catalog::Catalog::NAME => Box::new(Folder::<catalog::Catalog>::default()),
        calendar::Calendars::NAME => Box::new(Folder::<calendar::Calendars>::default()),
        appointments::Appointments::NAME => {
            Box::new(Folder::<appointments::Appointments>::default())
        }
        audit::AuditTrail::NAME => Box::new(Folder::<audit::AuditTrail>::default()),
        _ => return None,
    })
}
