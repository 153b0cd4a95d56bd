//! The sealer: extends every tenant's hash chain behind the global order.
//!
//! Per tenant: read the chain's head (the checkpoint), `read_all` up to
//! [`BATCH`] events after it, hash them onto the head and append the links
//! in one transaction that first checks the head has not moved. A sealer
//! that lost a race writes nothing and starts over from the new head, so
//! any number of sealers (server instances, `buktor audit verify`) can run
//! at once without forking a chain.
//!
//! In a server, [`spawn_sealer`] runs this every [`INTERVAL`], but only
//! while it holds the store's sealer lease: on PostgreSQL a session advisory
//! lock on a connection of its own, so exactly one instance seals and
//! another takes over within an interval of its death (its connection
//! closes, the lock goes with it).
use std::sync::Arc;
use std::time::Duration;

use buktor_domain::TenantId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{seal, AuditError, AuditLog, SealerLease, GENESIS};

/// Events sealed per transaction.
pub const BATCH: usize = 1000;

/// How often a server's sealer looks for new events (and, when it does not
/// lead, tries to take the lease over).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Seals the tenant's unsealed events, as far as `read_all` returns them.
/// Returns how many this call sealed (events sealed concurrently by another
/// sealer are not counted).
pub async fn seal_tenant(log: &dyn AuditLog, tenant: TenantId) -> Result<u64, AuditError> {
    let mut sealed = 0u64;
    loop {
        let head = log.chain_head(tenant).await?;
        let (after, mut prev) = match head {
            Some(link) => (link.position, link.hash),
            None => (crate::store::Position::START, GENESIS),
        };
        let events = log.read_all(tenant, after, BATCH).await?;
        if events.is_empty() {
            return Ok(sealed);
        }
        let links: Vec<_> = events
            .iter()
            .map(|event| {
                let link = seal(&prev, event);
                prev = link.hash;
                link
            })
            .collect();
        if log
            .append_links(tenant, head.map(|h| h.position), &links)
            .await?
        {
            sealed += links.len() as u64;
            if events.len() < BATCH {
                return Ok(sealed);
            }
        } else {
            tracing::debug!(%tenant, "another sealer extended the chain first; reading its head");
        }
    }
}

/// Seals every tenant; returns how many events were sealed.
pub async fn seal_all(log: &dyn AuditLog) -> Result<u64, AuditError> {
    let mut sealed = 0;
    for tenant in log.event_tenants().await? {
        sealed += seal_tenant(log, tenant).await?;
    }
    Ok(sealed)
}

/// A running sealer; [`SealerHandle::stop`] ends it.
pub struct SealerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SealerHandle {
    /// Stops the sealer and waits for it. A seal in flight is abandoned
    /// (its transaction rolls back); the next sealer redoes it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the audit sealer task failed");
        }
    }
}

/// Starts the background sealer of a server process.
pub fn spawn_sealer(log: Arc<dyn AuditLog>) -> SealerHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(log, stopped));
    SealerHandle { stop, task }
}

async fn run(log: Arc<dyn AuditLog>, mut stopped: watch::Receiver<bool>) {
    let mut lease: Option<Box<dyn SealerLease>> = None;
    loop {
        let work = async {
            if let Some(held) = &lease {
                if !held.held().await {
                    tracing::warn!("lost the audit sealer lease; trying to take it again");
                    lease = None;
                }
            }
            if lease.is_none() {
                match log.try_lead_sealing().await {
                    Ok(Some(new)) => {
                        tracing::info!("this instance seals the audit chain");
                        lease = Some(new);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot take the audit sealer lease"),
                }
            }
            if lease.is_some() {
                match seal_all(&*log).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(events = n, "sealed into the audit chain"),
                    // Transient (a database restart, a lost connection): the
                    // next round starts again from the stored head.
                    Err(e) => tracing::warn!(error = %e, "sealing the audit chain failed"),
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = stopped.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopped.changed() => break,
        }
    }
    drop(lease);
    tracing::debug!("audit sealer stopped");
}
