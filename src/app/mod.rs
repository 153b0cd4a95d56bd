//! The application service: turns an authenticated command into events in the
//! store, or a typed refusal.
//!
//! Each command goes: idempotency check → load the streams it decides over
//! (one catch-up read) → decide in the domain → one atomic append of every
//! stream's events at the versions it read, plus the idempotency claim. If
//! another writer moved one of those streams in between, the command is
//! decided again on the new state (an unrelated booking on the same day is
//! thus retried transparently, while a booking of the same time now fails
//! with `SLOT_TAKEN`).
mod cache;
mod commands;
mod embedding;
mod his;
mod notification_settings;
mod queries;

pub use commands::*;
pub use embedding::*;
pub use his::*;
pub use notification_settings::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use buktor_domain::appointment::Appointment;
use buktor_domain::calendar::CalendarDay;
use buktor_domain::practitioner::Practitioner;
use buktor_domain::schedule::Schedule;
use buktor_domain::service::Service;
use buktor_domain::{
    encode, Actor, Aggregate, DomainError, DomainEvent, EventMetadata, Source, TenantId,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{
    AppendRequest, IdempotencyClaim, NewEvent, Position, RecordedEvent, Store, StoreError,
    StreamAppend,
};
use cache::{AggregateCache, Versioned};

/// How often a command is decided again after losing a race on one of its
/// streams before giving up with `CONCURRENCY_CONFLICT`. Each retry re-reads
/// only the events it missed and waits a random, growing pause first, so
/// writers from several instances on one busy day spread out and converge.
const MAX_ATTEMPTS: u32 = 30;

/// Commands of one instance that race on the same stream take turns on one
/// of these (chosen by hashing the stream), so they queue in memory instead of
/// failing each other's appends. Correctness never rests on it: other
/// instances are kept out by the store's version check alone.
const CONTENTION_STRIPES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the {role} role may not {action}")]
    Forbidden {
        role: &'static str,
        action: &'static str,
    },
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    #[error("gave up after {0} attempts: the data changed under the command every time")]
    Contention(usize),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("event store failed")]
    Store(#[from] StoreError),
}

impl AppError {
    /// Stable machine code, as for domain errors.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Domain(e) => e.code(),
            AppError::Forbidden { .. } => "FORBIDDEN",
            AppError::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            AppError::Contention(_) => "CONCURRENCY_CONFLICT",
            AppError::Store(e) if e.is_unavailable() => "STORE_UNAVAILABLE",
            AppError::Corrupt(_) | AppError::Store(_) => "INTERNAL",
        }
    }

    /// Whether the store could not be reached or was too busy
    /// ([`StoreError::is_unavailable`]): the same request can succeed later,
    /// so every surface answers it as retryable (`STORE_UNAVAILABLE`, HTTP
    /// 503). Any other failure inside the server is a bug: `INTERNAL`.
    pub fn is_unavailable(&self) -> bool {
        self.code() == "STORE_UNAVAILABLE"
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Who is asking, from where, on behalf of which hospital.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant: TenantId,
    /// The hospital's time zone: schedules and calendar days are in it.
    pub time_zone: Tz,
    pub actor: Actor,
    pub source: Source,
    pub remote_addr: Option<String>,
    pub correlation_id: Uuid,
    pub idempotency_key: Option<String>,
}

/// What a command did: the response (also what a repeat with the same
/// idempotency key gets) and the global position of its last event.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CommandOutcome {
    /// The id of the thing the command created or changed.
    pub id: Uuid,
    /// `None` when the command changed nothing.
    pub position: Option<Position>,
    pub events: usize,
}

/// The time, injected so tests and replays control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by a fixed offset (`clock_offset_secs`).
pub struct OffsetClock(pub chrono::Duration);
impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

/// Counts this instance's appends and remembers, per hospital, the count
/// at its last append: a follower that saw count `n` knows which hospitals
/// have new events since, without polling the others.
#[derive(Default)]
pub struct AppendSignal {
    counter: tokio::sync::watch::Sender<u64>,
    last: std::sync::Mutex<HashMap<TenantId, u64>>,
}

impl AppendSignal {
    fn record(&self, tenant: TenantId) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut count = 0;
        self.counter.send_modify(|n| {
            *n += 1;
            count = *n;
        });
        last.insert(tenant, count);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.counter.subscribe()
    }

    /// The current count and the hospitals appended for after count `seen`.
    pub fn since(&self, seen: u64) -> (u64, Vec<TenantId>) {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = *self.counter.borrow();
        let tenants = last
            .iter()
            .filter(|(_, n)| **n > seen)
            .map(|(t, _)| *t)
            .collect();
        (now, tenants)
    }
}

pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    practitioners: AggregateCache<Practitioner>,
    services: AggregateCache<Service>,
    schedules: AggregateCache<Schedule>,
    calendars: AggregateCache<CalendarDay>,
    appointments: AggregateCache<Appointment>,
    patients: AggregateCache<buktor_domain::patient::Patient>,
    notification_settings: AggregateCache<crate::notifications::settings::NotificationSettings>,
    his_records: AggregateCache<buktor_domain::his::HisRecord>,
    embedding_settings: AggregateCache<buktor_domain::embedding::EmbeddingSettings>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// This instance's appends, for the projection runners and the live
    /// feed (`crate::live`) to read a write at once rather than at their
    /// next poll.
    appends: Arc<AppendSignal>,
}

/// Events for one stream, typed until they are encoded.
struct Pending {
    stream_id: String,
    expected_version: i64,
    events: Vec<(String, i32, serde_json::Value)>,
    /// Applies the events to the right cache once stored.
    on_stored: Box<dyn FnOnce(&Scheduler) + Send>,
}

impl Pending {
    fn new<A>(
        tenant: TenantId,
        stream_id: String,
        base: Versioned<A>,
        events: Vec<A::Event>,
        cache: fn(&Scheduler) -> &AggregateCache<A>,
    ) -> Self
    where
        A: Aggregate + Send + 'static,
        A::Event: Send + 'static,
    {
        let encoded = events
            .iter()
            .map(|e| {
                let enc = encode(e);
                (enc.event_type, enc.schema_version, enc.payload)
            })
            .collect();
        let stream = stream_id.clone();
        Pending {
            expected_version: base.version,
            stream_id,
            events: encoded,
            on_stored: Box::new(move |s: &Scheduler| {
                cache(s).after_append(tenant, &stream, &base, &events)
            }),
        }
    }
}

/// The result of deciding a command once.
struct Decided {
    id: Uuid,
    streams: Vec<Pending>,
}

/// A command the scheduler can run: how to recognise a repeat, and how to decide it.
trait Command: Serialize + Sync {
    const NAME: &'static str;
    /// Whether `ctx.actor.role` may run it.
    fn allowed(role: buktor_domain::Role) -> bool;
    /// The stream this command most likely races on, if known before loading.
    fn contention_key(&self, _ctx: &CommandContext) -> Option<String> {
        None
    }
    /// `new_id` is the id to give what the command creates, when it creates
    /// something and the client named no id; it stays the same across retries.
    async fn decide(&self, s: &Scheduler, ctx: &CommandContext, new_id: Uuid)
        -> AppResult<Decided>;
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            store,
            clock,
            metrics,
            practitioners: AggregateCache::new(10_000),
            services: AggregateCache::new(10_000),
            schedules: AggregateCache::new(10_000),
            calendars: AggregateCache::new(50_000),
            appointments: AggregateCache::new(50_000),
            patients: AggregateCache::new(50_000),
            notification_settings: AggregateCache::new(1_000),
            his_records: AggregateCache::new(50_000),
            embedding_settings: AggregateCache::new(1_000),
            stripes: (0..CONTENTION_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            appends: Arc::new(AppendSignal::default()),
        }
    }

    /// Changes after each successful append of this instance.
    pub fn watch_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appends.counter.subscribe()
    }

    /// Which hospitals this instance appended for, and when.
    pub fn append_signal(&self) -> &Arc<AppendSignal> {
        &self.appends
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn run<C: Command>(
        &self,
        ctx: &CommandContext,
        command: &C,
    ) -> AppResult<CommandOutcome> {
        let started = Instant::now();
        let result = self.run_inner(ctx, command).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AppError::Domain(_)) => "rejected",
            Err(AppError::Forbidden { .. }) | Err(AppError::IdempotencyKeyReused(_)) => "refused",
            Err(AppError::Contention(_)) => "contention",
            Err(_) => "error",
        };
        self.metrics
            .commands
            .with_label_values(&[C::NAME, outcome])
            .inc();
        self.metrics
            .command_seconds
            .with_label_values(&[C::NAME])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            match e {
                AppError::Store(_) | AppError::Corrupt(_) => {
                    tracing::error!(command = C::NAME, error = ?e, "command failed")
                }
                _ => tracing::debug!(command = C::NAME, code = e.code(), "command refused"),
            }
        }
        result
    }

    async fn run_inner<C: Command>(
        &self,
        ctx: &CommandContext,
        command: &C,
    ) -> AppResult<CommandOutcome> {
        if !C::allowed(ctx.actor.role) {
            return Err(AppError::Forbidden {
                role: ctx.actor.role.as_str(),
                action: C::NAME,
            });
        }
        let request_hash = request_hash(C::NAME, command);
        // The idempotency key is checked lazily: a repeat of a command that
        // was applied either fails to decide (its own effect is in the way:
        // the slot is taken, the appointment is already cancelled) or fails
        // to store its claim. Only then is the stored outcome looked up, which
        // saves a round trip on every first attempt.
        match self.decide_and_append(ctx, command, &request_hash).await {
            Err(AppError::Domain(e)) => match &ctx.idempotency_key {
                Some(key) => match self.replay(ctx.tenant, key, &request_hash).await? {
                    Some(done) => Ok(done),
                    None => Err(AppError::Domain(e)),
                },
                None => Err(AppError::Domain(e)),
            },
            other => other,
        }
    }

    async fn decide_and_append<C: Command>(
        &self,
        ctx: &CommandContext,
        command: &C,
        request_hash: &str,
    ) -> AppResult<CommandOutcome> {
        let causation_id = Uuid::now_v7();
        let new_id = Uuid::now_v7();
        // Taken only after losing a race once: uncontended commands and
        // read-only refusals (SLOT_TAKEN) never wait for it.
        let mut turn = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let decided = command.decide(self, ctx, new_id).await?;
            let Decided { id, mut streams } = decided;
            // A stream the command decided to leave as it is (a HIS record
            // sent again with a newer version but the same data) is not
            // appended to: the store refuses an append of no events, and
            // only the streams that change need their versions checked.
            streams.retain(|p| !p.events.is_empty());
            let events: usize = streams.iter().map(|p| p.events.len()).sum();
            if events == 0 {
                // Nothing changes, so nothing is claimed: a repeat decides again and also changes nothing.
                return Ok(CommandOutcome {
                    id,
                    position: None,
                    events: 0,
                });
            }
            let metadata = serde_json::to_value(EventMetadata {
                tenant: ctx.tenant,
                actor: ctx.actor.clone(),
                source: ctx.source,
                remote_addr: ctx.remote_addr.clone(),
                correlation_id: ctx.correlation_id,
                causation_id,
                idempotency_key: ctx.idempotency_key.clone(),
                occurred_at: self.clock.now(),
            })
            .map_err(|e| AppError::Corrupt(e.to_string()))?;
            let mut appends = Vec::with_capacity(streams.len());
            let mut on_stored = Vec::with_capacity(streams.len());
            for p in streams {
                appends.push(StreamAppend {
                    stream_id: p.stream_id,
                    expected_version: p.expected_version,
                    events: p
                        .events
                        .into_iter()
                        .map(|(event_type, schema_version, payload)| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type,
                            schema_version,
                            payload,
                            metadata: metadata.clone(),
                        })
                        .collect(),
                });
                on_stored.push(p.on_stored);
            }
            // The response is known before the append: the position is filled in by
            // the store's answer, so a repeat answers with what the first call did.
            let claim = ctx
                .idempotency_key
                .as_ref()
                .map(|key| (key.clone(), request_hash.to_owned()));
            let append_started = Instant::now();
            let result = self
                .append_with_claim(ctx.tenant, appends, claim, id, events)
                .await;
            self.metrics
                .append_seconds
                .observe(append_started.elapsed().as_secs_f64());
            match result {
                Ok(outcome) => {
                    for f in on_stored {
                        f(self);
                    }
                    return Ok(outcome);
                }
                Err(StoreError::VersionConflict { stream_id, .. }) => {
                    self.metrics.conflicts.inc();
                    tracing::debug!(command = C::NAME, %stream_id, attempt, "stream moved, deciding again");
                    if turn.is_none() {
                        if let Some(stripe) = self.stripe_of(ctx, command) {
                            turn = Some(self.stripes[stripe].lock().await);
                            continue;
                        }
                    }
                    let ceiling_us = (250u64 << attempt.min(7)).min(30_000);
                    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling_us);
                    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
                }
                Err(StoreError::IdempotencyKeyTaken { key }) => {
                    // A concurrent request with the same key won; answer as it did.
                    return match self.replay(ctx.tenant, &key, request_hash).await? {
                        Some(done) => Ok(done),
                        None => Err(AppError::Corrupt(format!(
                            "idempotency key {key:?} taken but not stored"
                        ))),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention(MAX_ATTEMPTS as usize))
    }

    /// Appends; the idempotency claim stores the outcome. The position in the
    /// stored response is the last event's, which the store returns, so the
    /// claim is written with a placeholder position and the exact outcome is
    /// computed from the answer (`replay` recomputes it from the events).
    async fn append_with_claim(
        &self,
        tenant: TenantId,
        streams: Vec<StreamAppend>,
        claim: Option<(String, String)>,
        id: Uuid,
        events: usize,
    ) -> Result<CommandOutcome, StoreError> {
        let idempotency = claim.map(|(key, request_hash)| IdempotencyClaim {
            key,
            request_hash,
            response: serde_json::json!({
                "id": id,
                "events": events,
                "streams": streams.iter().map(|s| (s.stream_id.clone(), s.expected_version + s.events.len() as i64)).collect::<Vec<_>>(),
            }),
        });
        let stored = self
            .store
            .append(AppendRequest {
                tenant,
                streams,
                idempotency,
            })
            .await?;
        self.appends.record(tenant);
        Ok(CommandOutcome {
            id,
            position: stored.iter().map(|e| e.position).max(),
            events: stored.len(),
        })
    }

    fn stripe_of<C: Command>(&self, ctx: &CommandContext, command: &C) -> Option<usize> {
        let key = command.contention_key(ctx)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(ctx.tenant, key), &mut h);
        Some(std::hash::Hasher::finish(&h) as usize % self.stripes.len())
    }

    /// The outcome of an earlier command with this idempotency key, if there was one.
    async fn replay(
        &self,
        tenant: TenantId,
        key: &str,
        request_hash: &str,
    ) -> AppResult<Option<CommandOutcome>> {
        let Some(stored) = self.store.idempotency(tenant, key).await? else {
            return Ok(None);
        };
        if stored.request_hash != request_hash {
            return Err(AppError::IdempotencyKeyReused(key.to_owned()));
        }
        #[derive(serde::Deserialize)]
        struct Claimed {
            id: Uuid,
            events: usize,
            streams: Vec<(String, i64)>,
        }
        let claimed: Claimed = serde_json::from_value(stored.response)
            .map_err(|e| AppError::Corrupt(format!("idempotency record: {e}")))?;
        // The position is the highest of the command's events; read them back.
        let mut position = None;
        for (stream, version) in &claimed.streams {
            let events = self.store.read_stream(tenant, stream, version - 1).await?;
            if let Some(e) = events.iter().find(|e| e.version == *version) {
                position = position.max(Some(e.position));
            }
        }
        Ok(Some(CommandOutcome {
            id: claimed.id,
            position,
            events: claimed.events,
        }))
    }

    /// Loads five streams in one read, each caught up from its cache.
    #[allow(clippy::type_complexity)]
    async fn load5<A, B, C, D, E>(
        &self,
        tenant: TenantId,
        a: (&AggregateCache<A>, String),
        b: (&AggregateCache<B>, String),
        c: (&AggregateCache<C>, String),
        d: (&AggregateCache<D>, String),
        e: (&AggregateCache<E>, String),
    ) -> AppResult<(
        Versioned<A>,
        Versioned<B>,
        Versioned<C>,
        Versioned<D>,
        Versioned<E>,
    )>
    where
        A: Aggregate,
        B: Aggregate,
        C: Aggregate,
        D: Aggregate,
        E: Aggregate,
    {
        let (ba, bb, bc, bd, be) = (
            a.0.get(tenant, &a.1),
            b.0.get(tenant, &b.1),
            c.0.get(tenant, &c.1),
            d.0.get(tenant, &d.1),
            e.0.get(tenant, &e.1),
        );
        let mut reads: Vec<(String, i64)> = Vec::with_capacity(5);
        for (stream, version) in [
            (&a.1, ba.version),
            (&b.1, bb.version),
            (&c.1, bc.version),
            (&d.1, bd.version),
            (&e.1, be.version),
        ] {
            // The same stream may be named twice (a reschedule within one day).
            match reads.iter_mut().find(|(s, _)| s == stream) {
                Some((_, v)) => *v = (*v).min(version),
                None => reads.push((stream.clone(), version)),
            }
        }
        let events = self.store.read_streams(tenant, &reads).await?;
        let of = |s: &str, after: i64| {
            events
                .iter()
                .filter(|e| e.stream_id == s && e.version > after)
                .collect::<Vec<_>>()
        };
        Ok((
            {
                let new = of(&a.1, ba.version);
                a.0.advance(tenant, &a.1, ba, &new)?
            },
            {
                let new = of(&b.1, bb.version);
                b.0.advance(tenant, &b.1, bb, &new)?
            },
            {
                let new = of(&c.1, bc.version);
                c.0.advance(tenant, &c.1, bc, &new)?
            },
            {
                let new = of(&d.1, bd.version);
                d.0.advance(tenant, &d.1, bd, &new)?
            },
            {
                let new = of(&e.1, be.version);
                e.0.advance(tenant, &e.1, be, &new)?
            },
        ))
    }

    /// Loads one stream, caught up from its cache.
    async fn load<A: Aggregate>(
        &self,
        tenant: TenantId,
        cache: &AggregateCache<A>,
        stream: &str,
    ) -> AppResult<Versioned<A>> {
        let base = cache.get(tenant, stream);
        let events = self.store.read_stream(tenant, stream, base.version).await?;
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        cache.advance(tenant, stream, base, &refs)
    }
}

/// A digest of the command's name and content: the same key with other content is refused.
fn request_hash<C: Serialize>(name: &str, command: &C) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    // serde_json writes struct fields in declaration order: stable for one build.
    hasher.update(serde_json::to_vec(command).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Decodes a stored event of aggregate `A`.
pub fn decode_event<E: DomainEvent>(e: &RecordedEvent) -> AppResult<E> {
    buktor_domain::decode(&e.event_type, e.schema_version, e.payload.clone())
        .map_err(|err| AppError::Corrupt(err.to_string()))
}
