//! The fan-out: one leader across all instances follows each tenant's
//! global order and writes, per event and subscribed endpoint, one message
//! into the outbox. The messages and the moved checkpoint are one
//! transaction, so a crash loses or doubles nothing; a new leader resumes
//! at the checkpoint.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use buktor_domain::TenantId;
use tokio::sync::{watch, Notify};

use super::payload::{message_id, Built, PayloadBuilder};
use crate::app::AppendSignal;
use crate::projection::lease_when_free;
use crate::store::webhooks::{EndpointRecord, NewMessage};
use crate::store::{Position, Store, StoreError};

/// Events read per transaction.
const BATCH: usize = 500;
const IDLE_MIN: Duration = Duration::from_millis(25);
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// How long the list of tenants with endpoints is trusted before it is read
/// again (each step reads its tenant's endpoints afresh).
const ENDPOINTS_TTL: Duration = Duration::from_secs(1);

/// Whether `endpoint` subscribes to a built payload.
pub fn subscribes(
    endpoint: &EndpointRecord,
    built: &Built,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> bool {
    let spec = &endpoint.spec;
    // An endpoint hears of what happened after it was made, not the history.
    if recorded_at < endpoint.created_at {
        return false;
    }
    if built.about_endpoint == Some(endpoint.id) {
        return false;
    }
    if !spec.event_types.is_empty() && !spec.event_types.iter().any(|t| t == built.payload_type) {
        return false;
    }
    if !spec.practitioner_ids.is_empty()
        && !built
            .practitioners
            .iter()
            .any(|p| spec.practitioner_ids.contains(p))
    {
        return false;
    }
    if !spec.departments.is_empty()
        && !built
            .departments
            .iter()
            .any(|d| spec.departments.iter().any(|s| s.eq_ignore_ascii_case(d)))
    {
        return false;
    }
    true
}

pub struct Fanout {
    store: Arc<dyn Store>,
    appends: Arc<AppendSignal>,
    /// Woken after messages were stored, so this instance's dispatcher
    /// claims them at once.
    stored: Arc<Notify>,
    idle_max: Duration,
}

struct TenantState {
    builder: PayloadBuilder,
    checkpoint: Option<Position>,
}

impl Fanout {
    pub fn new(
        store: Arc<dyn Store>,
        appends: Arc<AppendSignal>,
        stored: Arc<Notify>,
        idle_max: Duration,
    ) -> Self {
        Fanout {
            store,
            appends,
            stored,
            idle_max,
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while let Some(lease) = lease_when_free(
            self.store.as_ref(),
            "webhook-fanout",
            LEASE_RETRY,
            &mut stop,
        )
        .await
        {
            tracing::info!("this instance fans webhook messages out");
            self.lead(&lease, &mut stop).await;
        }
    }

    async fn lead(&self, lease: &crate::store::Lease, stop: &mut watch::Receiver<bool>) {
        let mut tenants: HashMap<TenantId, TenantState> = HashMap::new();
        let mut endpoints: HashMap<TenantId, Vec<EndpointRecord>> = HashMap::new();
        let mut endpoints_read = None::<std::time::Instant>;
        let mut idle = IDLE_MIN;
        let mut wake = self.appends.subscribe();
        while lease.is_alive() && !*stop.borrow() {
            if endpoints_read.is_none_or(|at| at.elapsed() > ENDPOINTS_TTL) {
                match self.store.webhooks().endpoints(None).await {
                    Ok(all) => {
                        endpoints.clear();
                        for e in all {
                            endpoints.entry(e.tenant).or_default().push(e);
                        }
                        endpoints_read = Some(std::time::Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read webhook endpoints"),
                }
            }
            let mut busy = false;
            for tenant in endpoints.keys() {
                match self.step(*tenant, &mut tenants).await {
                    Ok(moved) => busy |= moved,
                    Err(e) => {
                        // Start this tenant over from its stored checkpoint.
                        tenants.remove(tenant);
                        tracing::warn!(tenant = %tenant, error = %e, "webhook fan-out step failed");
                    }
                }
            }
            if busy {
                idle = IDLE_MIN;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = wake.changed() => { idle = IDLE_MIN; continue; }
                _ = stop.changed() => return,
            }
            idle = (idle * 2).min(self.idle_max);
        }
    }

    /// Reads one batch of `tenant`'s log and stores its messages. `true` if
    /// the checkpoint moved.
    async fn step(
        &self,
        tenant: TenantId,
        tenants: &mut HashMap<TenantId, TenantState>,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let state = match tenants.entry(tenant) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Some(record) = self.store.tenant(tenant).await? else {
                    return Ok(false);
                };
                v.insert(TenantState {
                    builder: PayloadBuilder::new(tenant, record.time_zone),
                    checkpoint: None,
                })
            }
        };
        let checkpoint = match state.checkpoint {
            Some(p) => p,
            None => {
                let p = self.store.webhooks().fanout_checkpoint(tenant).await?;
                state.checkpoint = Some(p);
                p
            }
        };
        let events = self.store.read_all(tenant, checkpoint, BATCH).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(false);
        };
        // The endpoints as they are now, read after the events: a cached list
        // would miss an endpoint made (or changed) just before an event was
        // recorded, and the checkpoint moves past that event for good.
        let endpoints = self.store.webhooks().endpoints(Some(tenant)).await?;
        let mut messages = Vec::new();
        for event in &events {
            let Some(built) = state.builder.build(&*self.store, event).await? else {
                continue;
            };
            for endpoint in &endpoints {
                if subscribes(endpoint, &built, event.recorded_at) {
                    messages.push(NewMessage {
                        id: message_id(endpoint.id, event.event_id),
                        endpoint_id: endpoint.id,
                        event_id: event.event_id,
                        position: event.position,
                        ordering_key: built.ordering_key.clone(),
                        event_type: built.payload_type.to_owned(),
                        payload: built.body.clone(),
                    });
                }
            }
        }
        let count = messages.len();
        match self
            .store
            .webhooks()
            .enqueue(tenant, checkpoint, last, messages)
            .await
        {
            Ok(_) => {
                state.checkpoint = Some(last);
                if count > 0 {
                    self.stored.notify_one();
                    tracing::debug!(tenant = %tenant, messages = count, to = %last, "webhook messages stored");
                }
                Ok(true)
            }
            Err(StoreError::CheckpointMoved { .. }) => {
                // Another leader wrote meanwhile: read where it got to.
                tenants.remove(&tenant);
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}
