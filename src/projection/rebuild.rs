//! `buktor projections rebuild` and `verify`.
//!
//! A rebuild folds the whole store into a new generation beside the live
//! one, then makes it live in one transaction: queries keep being served
//! from the old generation until the swap, and the server's runner follows
//! the new one from its checkpoint. `verify` folds into a scratch
//! generation up to exactly where the live one stands and compares them
//! document by document.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use buktor_domain::TenantId;

use super::{folder, FoldError, Step};
use crate::store::{DocDifference, GenerationStatus, Position, Store, StoreError};

/// Events per transaction while rebuilding.
pub const REBUILD_BATCH: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("the live read model kept moving; verify found no quiet moment in {0} attempts")]
    NeverSettled(usize),
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

/// Folds every tenant's events into `generation`, up to `targets` (per
/// tenant, inclusive) when given, else to the end of the store.
async fn fill(
    store: &dyn Store,
    name: &str,
    generation: i64,
    targets: Option<&HashMap<TenantId, Position>>,
    progress: &mut dyn Progress,
) -> Result<u64, RebuildError> {
    let mut fold = folder(name).ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    let done = store.read_models().checkpoints(name, generation).await?;
    let mut applied = 0;
    for tenant in store.tenants().await? {
        let until = match targets {
            Some(t) => Some(t.get(&tenant.id).copied().unwrap_or_default()),
            None => None,
        };
        let mut at = done.get(&tenant.id).map(|c| c.position).unwrap_or_default();
        loop {
            if until.is_some_and(|u| at >= u) {
                break;
            }
            match fold
                .step(store, generation, tenant.id, at, until, REBUILD_BATCH)
                .await?
            {
                Step::CaughtUp => break,
                Step::Applied { to, events } => {
                    at = to;
                    applied += events as u64;
                    progress.advanced(applied);
                }
            }
        }
    }
    Ok(applied)
}

/// Rebuilds one projection into a new generation and makes it live.
pub async fn rebuild(
    store: &dyn Store,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<RebuildReport, RebuildError> {
    let projection = buktor_projections::ALL
        .into_iter()
        .find(|p| *p == name)
        .ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    let started = Instant::now();
    progress.started(projection, expected_events(store, projection).await?);
    let generation = store
        .read_models()
        .new_generation(projection, GenerationStatus::Building)
        .await?;
    let result = async {
        let events = fill(store, projection, generation, None, progress).await?;
        // The tail written while filling, then the swap.
        let tail = fill(store, projection, generation, None, progress).await?;
        let replaced = store.read_models().promote(projection, generation).await?;
        Ok::<_, RebuildError>((events + tail, replaced))
    }
    .await;
    progress.finished();
    match result {
        Ok((events, replaced)) => Ok(RebuildReport {
            projection,
            generation,
            replaced,
            events,
            elapsed: started.elapsed(),
        }),
        Err(e) => {
            // Leave nothing half-built behind.
            let _ = store
                .read_models()
                .drop_generation(projection, generation)
                .await;
            Err(e)
        }
    }
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
    store: &dyn Store,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<VerifyReport, RebuildError> {
    const ATTEMPTS: usize = 20;
    let projection = buktor_projections::ALL
        .into_iter()
        .find(|p| *p == name)
        .ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    progress.started(projection, expected_events(store, projection).await?);
    let live = store.read_models().live_generation(projection).await?;
    let scratch = store
        .read_models()
        .new_generation(projection, GenerationStatus::Scratch)
        .await?;
    let result = async {
        let mut events = 0;
        for _ in 0..ATTEMPTS {
            let targets = positions(store, projection, live).await?;
            events += fill(store, projection, scratch, Some(&targets), progress).await?;
            let differences = store
                .read_models()
                .diff_generations(projection, live, scratch, MAX_DIFFERENCES)
                .await?;
            // Compared while neither side moved: the live checkpoints are
            // the same before and after the comparison.
            if positions(store, projection, live).await? == targets {
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
