//! Aggregate states kept between commands, caught up from the store on every use.
//!
//! A cached state at version `v` is the fold of events `1..=v`, and history
//! never changes, so the cache is always correct: a load reads only the
//! events after `v` (usually none). It saves re-reading a practitioner's day
//! or a schedule on every booking, and stays correct with several server
//! instances because the catch-up read always happens.
use std::collections::HashMap;
use std::sync::Mutex;

use buktor_domain::{decode, Aggregate, TenantId};

use crate::app::AppError;
use crate::store::RecordedEvent;

/// A state and the stream version it reflects.
#[derive(Debug, Clone, Default)]
pub struct Versioned<A> {
    pub version: i64,
    pub state: A,
}

pub struct AggregateCache<A: Aggregate> {
    entries: Mutex<HashMap<(TenantId, String), Versioned<A>>>,
    capacity: usize,
}

impl<A: Aggregate> AggregateCache<A> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The newest state known here, or the empty state at version 0.
    pub fn get(&self, tenant: TenantId, stream: &str) -> Versioned<A> {
        self.lock()
            .get(&(tenant, stream.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Folds `events` (this stream's, after `base.version`) into `base` and remembers the result.
    pub fn advance(
        &self,
        tenant: TenantId,
        stream: &str,
        base: Versioned<A>,
        events: &[&RecordedEvent],
    ) -> Result<Versioned<A>, AppError> {
        let mut current = base;
        for e in events {
            if e.version != current.version + 1 {
                return Err(AppError::Corrupt(format!(
                    "stream {stream} jumps from version {} to {}",
                    current.version, e.version
                )));
            }
            let event: A::Event = decode(&e.event_type, e.schema_version, e.payload.clone())
                .map_err(|err| AppError::Corrupt(err.to_string()))?;
            current.state.apply(&event);
            current.version = e.version;
        }
        self.remember(tenant, stream, &current);
        Ok(current)
    }

    /// Records the state after a successful append of `events` on top of `base`.
    pub fn after_append(
        &self,
        tenant: TenantId,
        stream: &str,
        base: &Versioned<A>,
        events: &[A::Event],
    ) {
        let mut next = base.clone();
        for e in events {
            next.state.apply(e);
        }
        next.version += events.len() as i64;
        self.remember(tenant, stream, &next);
    }

    fn remember(&self, tenant: TenantId, stream: &str, state: &Versioned<A>) {
        let mut entries = self.lock();
        let key = (tenant, stream.to_owned());
        if entries
            .get(&key)
            .is_some_and(|e| e.version >= state.version)
        {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Crude but bounded: a cold cache only costs a full stream read.
            entries.clear();
        }
        entries.insert(key, state.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, String), Versioned<A>>> {
        // A panic while holding the lock cannot leave a half-updated entry
        // (entries are replaced whole), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
