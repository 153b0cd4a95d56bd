//! The read side's engine: runners that fold the store's global order into
//! the projections' documents (`buktor_projections`), the wait behind
//! read-your-writes, and rebuild / verify.
//!
//! Each projection has one runner per server process, but only the one
//! holding the projection's lease (a PostgreSQL advisory lock) applies
//! events; the others wait to take over when it dies. Independently of the
//! lease, every batch commits only if the checkpoint is still where the
//! batch started, so even two runners that both believed they led could not
//! apply an event twice.
pub mod cli;
mod fold;
pub mod rebuild;
pub mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use buktor_domain::TenantId;
use tokio::sync::{watch, Notify};

pub use fold::{envelope, folder, Fold, FoldError, Step};

use crate::store::{Position, Store, StoreError};

/// Events a runner applies per transaction.
pub const LIVE_BATCH: usize = 500;
/// How often a runner looks for events of a hospital that just had some;
/// each empty look doubles the wait for that hospital, up to
/// [`IDLE_POLL`]. Writes of this instance wake the runner at once, so the
/// polls only find other instances' writes.
const POLL: Duration = Duration::from_millis(25);
const IDLE_POLL: Duration = Duration::from_millis(400);
/// How often a runner without the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_millis(500);
/// How often a runner re-reads the tenant list and the live generation.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("the read models did not reach position {wanted} within {waited_ms} ms")]
    Timeout { wanted: Position, waited_ms: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where each projection's live generation stands, per tenant, as this
/// process last saw it; and the wait for a position.
pub struct ReadSide {
    store: Arc<dyn Store>,
    positions: Mutex<HashMap<(TenantId, &'static str), Position>>,
    moved: Notify,
    /// The projections whose runner in this process holds the lease: their
    /// positions are known here without asking the database.
    leading: Mutex<std::collections::HashSet<&'static str>>,
    /// Catalog documents as last parsed, with the JSON they came from: a
    /// service lists every practitioner offering it, and parsing it again
    /// for each slot query was a fifth of that query's CPU.
    parsed_catalog: Mutex<HashMap<(TenantId, String), views::ParsedDoc>>,
}

impl ReadSide {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(ReadSide {
            store,
            positions: Mutex::new(HashMap::new()),
            moved: Notify::new(),
            leading: Mutex::new(Default::default()),
            parsed_catalog: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn record(&self, tenant: TenantId, projection: &'static str, at: Position) {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = positions.entry((tenant, projection)).or_default();
        if at > *slot {
            *slot = at;
        }
        drop(positions);
        self.moved.notify_waiters();
    }

    /// A new generation may stand behind the old one: forget what was
    /// recorded for the projection, so that waits go by the new one.
    fn restart(&self, projection: &'static str) {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, name), _| *name != projection);
    }

    fn set_leading(&self, projection: &'static str, leads: bool) {
        let mut leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        if leads {
            leading.insert(projection);
        } else {
            leading.remove(projection);
        }
    }

    fn leads_all(&self) -> bool {
        let leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        buktor_projections::ALL.iter().all(|p| leading.contains(p))
    }

    fn reached(&self, tenant: TenantId, wanted: Position) -> bool {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        buktor_projections::ALL.iter().all(|name| {
            positions
                .get(&(tenant, *name))
                .is_some_and(|p| *p >= wanted)
        })
    }

    /// Waits until every projection of the tenant has applied the events up
    /// to `wanted`, at most `timeout`. Positions written by other instances
    /// are learned from the database.
    pub async fn wait_for(
        &self,
        tenant: TenantId,
        wanted: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let started = tokio::time::Instant::now();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            let moved = self.moved.notified();
            if self.reached(tenant, wanted) {
                return Ok(());
            }
            // When this process runs every projection, its runners report
            // each commit here; the database is asked only as a safety net.
            let ask_every = if self.leads_all() { LEASE_RETRY } else { POLL };
            if asked.is_none_or(|at| at.elapsed() >= ask_every) {
                asked = Some(tokio::time::Instant::now());
                for (name, at) in self.store.read_models().live_positions(tenant).await? {
                    if let Some(name) = buktor_projections::ALL.iter().find(|n| **n == name) {
                        self.record(tenant, name, at);
                    }
                }
                if self.reached(tenant, wanted) {
                    return Ok(());
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(WaitError::Timeout {
                    wanted,
                    waited_ms: elapsed.as_millis() as u64,
                });
            }
            let _ = tokio::time::timeout(POLL.min(timeout - elapsed), moved).await;
        }
    }

    /// The position every projection of the tenant has reached (the lowest).
    pub async fn position(&self, tenant: TenantId) -> Result<Position, StoreError> {
        let live = self.store.read_models().live_positions(tenant).await?;
        Ok(buktor_projections::ALL
            .iter()
            .map(|name| live.get(*name).copied().unwrap_or_default())
            .min()
            .unwrap_or_default())
    }

    /// Starts one runner per projection; they stop when `stop` turns true.
    pub fn spawn_runners(
        self: &Arc<Self>,
        appends: Arc<crate::app::AppendSignal>,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        buktor_projections::ALL
            .iter()
            .filter_map(|name| folder(name))
            .map(|fold| {
                let side = Arc::clone(self);
                tokio::spawn(run(side, fold, appends.clone(), stop.clone()))
            })
            .collect()
    }
}

/// Sleeps `d` unless asked to stop first; answers whether to stop.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Waits until this instance holds the one-leader lease `name` (the
/// webhook fan-out's, the notification planner's), trying every `retry`;
/// `None` when asked to stop first.
pub(crate) async fn lease_when_free(
    store: &dyn Store,
    name: &str,
    retry: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<crate::store::Lease> {
    loop {
        if *stop.borrow() {
            return None;
        }
        match store.read_models().try_lead(name).await {
            Ok(Some(lease)) => return Some(lease),
            Ok(None) => {}
            Err(e) => tracing::warn!(lease = name, error = %e, "cannot take the lease"),
        }
        if sleep_or_stop(retry, stop).await {
            return None;
        }
    }
}

async fn run(
    side: Arc<ReadSide>,
    mut fold: Box<dyn Fold>,
    appends: Arc<crate::app::AppendSignal>,
    mut stop: watch::Receiver<bool>,
) {
    let name = fold.name();
    let store = Arc::clone(&side.store);
    loop {
        if *stop.borrow() {
            return;
        }
        let lease = match store.read_models().try_lead(name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if sleep_or_stop(LEASE_RETRY, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "cannot take the projection lease");
                if sleep_or_stop(LEASE_RETRY * 4, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(projection = name, "projection runner leads");
        fold.forget();
        side.set_leading(name, true);
        let led = lead(&side, fold.as_mut(), &lease, &appends, &mut stop).await;
        side.set_leading(name, false);
        if let Err(e) = led {
            tracing::error!(projection = name, error = %e, "projection runner failed; retrying");
            if sleep_or_stop(LEASE_RETRY * 2, &mut stop).await {
                return;
            }
        }
        drop(lease);
    }
}

/// Applies events while the lease holds. Returns `Ok` on stop or lost lease.
async fn lead(
    side: &ReadSide,
    fold: &mut dyn Fold,
    lease: &crate::store::Lease,
    signal: &crate::app::AppendSignal,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), FoldError> {
    use tokio::time::Instant;
    let name = fold.name();
    let store = side.store.as_ref();
    let mut generation = store.read_models().live_generation(name).await?;
    let mut checkpoints: HashMap<TenantId, Position> = store
        .read_models()
        .checkpoints(name, generation)
        .await?
        .into_iter()
        .map(|(t, c)| (t, c.position))
        .collect();
    let mut tenants: Vec<TenantId> = Vec::new();
    let mut refreshed = Instant::now() - REFRESH;
    let mut appends = signal.subscribe();
    let mut seen = 0;
    // Per hospital: when to look next, and how long the last wait was.
    let mut due: HashMap<TenantId, (Instant, Duration)> = HashMap::new();
    loop {
        if *stop.borrow() || !lease.is_alive() {
            return Ok(());
        }
        if refreshed.elapsed() >= REFRESH {
            tenants = store.tenants().await?.into_iter().map(|t| t.id).collect();
            let live = store.read_models().live_generation(name).await?;
            if live != generation {
                tracing::info!(
                    projection = name,
                    generation = live,
                    "following a new generation"
                );
                generation = live;
                fold.forget();
                side.restart(name);
                due.clear();
                checkpoints = store
                    .read_models()
                    .checkpoints(name, generation)
                    .await?
                    .into_iter()
                    .map(|(t, c)| (t, c.position))
                    .collect();
            }
            refreshed = Instant::now();
        }
        // Marked first: an append after this wakes the wait below.
        appends.mark_unchanged();
        let (count, woken) = signal.since(seen);
        seen = count;
        let now = Instant::now();
        for tenant in woken {
            due.insert(tenant, (now, POLL));
        }
        let mut busy = false;
        for tenant in &tenants {
            let (at, wait) = *due.entry(*tenant).or_insert((now, POLL));
            if at > now {
                continue;
            }
            let from = checkpoints.get(tenant).copied().unwrap_or_default();
            side.record(*tenant, name, from);
            match fold
                .step(store, generation, *tenant, from, None, LIVE_BATCH)
                .await
            {
                Ok(Step::CaughtUp) => {
                    let wait = (wait * 2).min(IDLE_POLL);
                    due.insert(*tenant, (Instant::now() + wait, wait));
                }
                Ok(Step::Applied { to, .. }) => {
                    busy = true;
                    due.insert(*tenant, (Instant::now(), POLL));
                    checkpoints.insert(*tenant, to);
                    side.record(*tenant, name, to);
                }
                Err(FoldError::Store(StoreError::CheckpointMoved { .. })) => {
                    // Another runner wrote this generation: start over from its checkpoint.
                    tracing::warn!(projection = name, "checkpoint moved under the runner");
                    fold.forget();
                    let fresh = store.read_models().checkpoints(name, generation).await?;
                    checkpoints.insert(
                        *tenant,
                        fresh.get(tenant).map(|c| c.position).unwrap_or_default(),
                    );
                    busy = true;
                }
                Err(FoldError::Store(StoreError::NoSuchGeneration { .. })) => {
                    refreshed = Instant::now() - REFRESH;
                    busy = true;
                }
                Err(e) => return Err(e),
            }
        }
        if !busy {
            let next = due
                .values()
                .map(|(at, _)| *at)
                .min()
                .unwrap_or_else(|| Instant::now() + IDLE_POLL)
                .min(refreshed + REFRESH);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = appends.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }
}
