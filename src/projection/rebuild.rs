//! `buktor projections rebuild` and `verify`.
//!
//! A rebuild folds the whole store into a new generation beside the live
//! one, then makes it live in one transaction: queries keep being served
//! from the old generation until the swap, and the server's runner follows
//! the new one from its checkpoint. `verify` folds into a scratch
//! generation up to exactly where the live one stands and compares them
//! document by document.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor_domain::TenantId;

use super::{folder, FoldError};
use crate::store::{DocDifference, GenerationStatus, Position, Store, StoreError};

/// Events per transaction while rebuilding: large, so that a document many
/// events touch (a busy practitioner-day) is written once per batch, not
/// once per event. A crash mid-rebuild only leaves a generation that is
/// never made live.
pub const REBUILD_BATCH: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("the live read model kept moving; verify found no quiet moment in {0} attempts")]
    NeverSettled(usize),
    #[error("another rebuild or verify is running")]
    Busy,
    #[error("a rebuild task failed: {0}")]
    Task(String),
}

impl RebuildError {
    fn task(e: tokio::task::JoinError) -> Self {
        RebuildError::Task(e.to_string())
    }
}

impl From<StoreError> for RebuildError {
    fn from(e: StoreError) -> Self {
        RebuildError::Fold(FoldError::Store(e))
    }
}

#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub projection: &'static str,
    pub generation: i64,
    pub replaced: Option<i64>,
    pub events: u64,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Told how far a rebuild is: events applied so far of about `expected`.
pub trait Progress: Send {
    fn started(&mut self, projection: &str, expected: u64);
    fn advanced(&mut self, applied: u64);
    fn finished(&mut self);
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {
    fn started(&mut self, _: &str, _: u64) {}
    fn advanced(&mut self, _: u64) {}
    fn finished(&mut self) {}
}

/// The events the live generation has folded, as the expected total.
async fn expected_events(store: &dyn Store, name: &str) -> Result<u64, RebuildError> {
    let live = store.read_models().live_generation(name).await?;
    Ok(store
        .read_models()
        .checkpoints(name, live)
        .await?
        .values()
        .map(|c| c.events.max(0) as u64)
        .sum())
}

/// One projection being filled into a generation of its own.
struct Target {
    fold: Box<dyn super::Fold>,
    generation: i64,
}

impl Target {
    fn new(name: &str, generation: i64) -> Result<Self, RebuildError> {
        let mut fold = folder(name).ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
        fold.fill_fresh(generation);
        Ok(Target { fold, generation })
    }
}

/// Folds every tenant's events into each target's generation, up to `until`
/// (per tenant, inclusive) when given, else to the end of the store. The
/// store is read once for all targets, the next batch while the current one
/// is folded; each batch is folded into the targets in parallel tasks, each
/// in its own transaction. Adds the events read to `read`.
async fn fill(
    store: &Arc<dyn Store>,
    targets: &mut Vec<Target>,
    until: Option<&HashMap<TenantId, Position>>,
    progress: &mut dyn Progress,
    read: &mut u64,
) -> Result<(), RebuildError> {
    let mut done = Vec::with_capacity(targets.len());
    for t in targets.iter() {
        done.push(
            store
                .read_models()
                .checkpoints(t.fold.name(), t.generation)
                .await?,
        );
    }
    let read_batch = |tenant: TenantId, from: Position| {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.read_all(tenant, from, REBUILD_BATCH).await })
    };
    for tenant in store.tenants().await? {
        let tenant = tenant.id;
        let until = until.map(|u| u.get(&tenant).copied().unwrap_or_default());
        let mut at: Vec<Position> = done
            .iter()
            .map(|d| d.get(&tenant).map(|c| c.position).unwrap_or_default())
            .collect();
        let mut prefetched = None;
        loop {
            let Some(from) = at.iter().min().copied() else {
                return Ok(());
            };
            if until.is_some_and(|u| from >= u) {
                break;
            }
            let batch = prefetched
                .take()
                .unwrap_or_else(|| read_batch(tenant, from));
            let mut events = batch.await.map_err(RebuildError::task)??;
            if let Some(u) = until {
                events.retain(|e| e.position <= u);
            }
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            let count = events.len() as u64;
            let events = Arc::new(events);
            let folding: Vec<_> = std::mem::take(targets)
                .into_iter()
                .zip(at.iter().copied())
                .map(|(mut t, a)| {
                    let store = Arc::clone(store);
                    let events = Arc::clone(&events);
                    tokio::spawn(async move {
                        let unseen = &events[events.partition_point(|e| e.position <= a)..];
                        let result = t.fold.fold(&*store, t.generation, tenant, a, unseen).await;
                        (t, result)
                    })
                })
                .collect();
            // All targets end this batch at `last`: read on from there meanwhile.
            prefetched = Some(read_batch(tenant, last));
            let mut failed = None;
            for task in folding {
                let (t, result) = task.await.map_err(RebuildError::task)?;
                targets.push(t);
                if let Err(e) = result {
                    failed.get_or_insert(e);
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            for a in at.iter_mut() {
                *a = (*a).max(last);
            }
            *read += count;
            progress.advanced(*read);
        }
    }
    Ok(())
}

/// How long [`exclusive`] waits for the lock before answering `Busy`.
/// PostgreSQL frees a session's advisory lock only when its backend sees
/// the connection close, a moment after the lease is dropped: `projections
/// verify` of several projections, one after the other, found the lock of
/// the one before still held.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Only one rebuild or verify runs at a time (a PostgreSQL advisory lock;
/// the embedded store has one process). Holding it, any generation still
/// being built or compared was left by one that died: it is dropped.
async fn exclusive(
    store: &dyn Store,
    projections: &[&'static str],
) -> Result<crate::store::Lease, RebuildError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let lease = loop {
        if let Some(lease) = store.read_models().try_lead("rebuild").await? {
            break lease;
        }
        if Instant::now() >= deadline {
            return Err(RebuildError::Busy);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for p in projections {
        for (generation, status) in store.read_models().generations(p).await? {
            if status != GenerationStatus::Live {
                tracing::warn!(
                    projection = p,
                    generation,
                    "dropping a generation a dead rebuild left"
                );
                store.read_models().drop_generation(p, generation).await?;
            }
        }
    }
    Ok(lease)
}

/// Rebuilds projections (all of them when `names` is empty) into new
/// generations, reading the store once, and makes them live.
pub async fn rebuild_many(
    store: &Arc<dyn Store>,
    names: &[&str],
    progress: &mut dyn Progress,
) -> Result<Vec<RebuildReport>, RebuildError> {
    let mut projections: Vec<&'static str> = Vec::new();
    for name in names {
        projections.push(
            buktor_projections::ALL
                .into_iter()
                .find(|p| p == name)
                .ok_or_else(|| RebuildError::UnknownProjection((*name).into()))?,
        );
    }
    if projections.is_empty() {
        projections = buktor_projections::ALL.to_vec();
    }
    let _lease = exclusive(store.as_ref(), &projections).await?;
    let started = Instant::now();
    let mut expected = 0;
    for p in &projections {
        expected = expected.max(expected_events(store.as_ref(), p).await?);
    }
    progress.started(&projections.join(", "), expected);
    let mut targets = Vec::new();
    for p in &projections {
        let generation = store
            .read_models()
            .new_generation(p, GenerationStatus::Building)
            .await?;
        targets.push(Target::new(p, generation)?);
    }
    let mut read = 0;
    let result = async {
        fill(store, &mut targets, None, progress, &mut read).await?;
        // The tail written while filling, then the swaps.
        fill(store, &mut targets, None, progress, &mut read).await?;
        let mut replaced = Vec::new();
        for t in &targets {
            replaced.push(
                store
                    .read_models()
                    .promote(t.fold.name(), t.generation)
                    .await?,
            );
        }
        Ok::<_, RebuildError>(replaced)
    }
    .await;
    progress.finished();
    match result {
        Ok(replaced) => Ok(targets
            .iter()
            .zip(replaced)
            .zip(&projections)
            .map(|((t, replaced), projection)| RebuildReport {
                projection,
                generation: t.generation,
                replaced,
                events: read,
                elapsed: started.elapsed(),
            })
            .collect()),
        Err(e) => {
            // Leave nothing half-built behind.
            for t in &targets {
                let _ = store
                    .read_models()
                    .drop_generation(t.fold.name(), t.generation)
                    .await;
            }
            Err(e)
        }
    }
}

/// Rebuilds one projection into a new generation and makes it live.
pub async fn rebuild(
    store: &Arc<dyn Store>,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<RebuildReport, RebuildError> {
    let mut reports = rebuild_many(store, &[name], progress).await?;
    reports
        .pop()
        .ok_or_else(|| RebuildError::UnknownProjection(name.into()))
}

#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub projection: &'static str,
    /// Where the comparison was made, per tenant.
    pub at: BTreeMap<String, Position>,
    pub events: u64,
    /// Empty when the live read model equals a fresh rebuild.
    pub differences: Vec<DocDifference>,
}

/// Differences reported at most.
pub const MAX_DIFFERENCES: usize = 100;

/// Rebuilds into a scratch generation up to the live one's checkpoints and
/// compares. The scratch generation is dropped afterwards.
pub async fn verify(
    store: &Arc<dyn Store>,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<VerifyReport, RebuildError> {
    const ATTEMPTS: usize = 20;
    let projection = buktor_projections::ALL
        .into_iter()
        .find(|p| *p == name)
        .ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    let _lease = exclusive(store.as_ref(), &[projection]).await?;
    progress.started(
        projection,
        expected_events(store.as_ref(), projection).await?,
    );
    let live = store.read_models().live_generation(projection).await?;
    let scratch = store
        .read_models()
        .new_generation(projection, GenerationStatus::Scratch)
        .await?;
    let mut target = vec![Target::new(projection, scratch)?];
    let result = async {
        let mut events = 0;
        for _ in 0..ATTEMPTS {
            let targets = positions(store.as_ref(), projection, live).await?;
            fill(store, &mut target, Some(&targets), progress, &mut events).await?;
            let differences = store
                .read_models()
                .diff_generations(projection, live, scratch, MAX_DIFFERENCES)
                .await?;
            // Compared while neither side moved: the live checkpoints are
            // the same before and after the comparison.
            if positions(store.as_ref(), projection, live).await? == targets {
                return Ok(VerifyReport {
                    projection,
                    at: targets
                        .into_iter()
                        .map(|(t, p)| (t.to_string(), p))
                        .collect(),
                    events,
                    differences,
                });
            }
        }
        Err(RebuildError::NeverSettled(ATTEMPTS))
    }
    .await;
    progress.finished();
    let _ = store
        .read_models()
        .drop_generation(projection, scratch)
        .await;
    result
}

async fn positions(
    store: &dyn Store,
    name: &str,
    generation: i64,
) -> Result<HashMap<TenantId, Position>, RebuildError> {
    Ok(store
        .read_models()
        .checkpoints(name, generation)
        .await?
        .into_iter()
        .map(|(t, c)| (t, c.position))
        .collect())
}
