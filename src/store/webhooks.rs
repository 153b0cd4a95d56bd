//! Storage of push subscriptions: endpoints, the messages owed to them (an
//! outbox filled from the global order) and every delivery attempt.
//!
//! A message's life: the fan-out writes it `pending` when it is the oldest
//! undelivered message of its ordering key (its appointment) at its
//! endpoint, else `queued` behind that one. Only `pending` messages are
//! claimed for delivery, each under a lease held by one dispatcher; when a
//! message is delivered the next `queued` one of its key becomes `pending`.
//! A `dead` message (given up on) keeps the rest of its key queued until it
//! is replayed: nothing of that appointment overtakes it. Every transition
//! that can promote or queue (enqueue, complete, replay) holds the
//! endpoint's lock, so a promotion never misses a message enqueued beside it.
use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Position, StoreResult};
use crate::webhooks::signature::SigningSecret;

/// What an endpoint subscribes to and how it is delivered to.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub url: String,
    pub description: String,
    /// Payload types (`appointment.booked`, …); empty = every type.
    pub event_types: Vec<String>,
    /// Only events about these practitioners; empty = all.
    pub practitioner_ids: Vec<Uuid>,
    /// Only events about practitioners of these departments; empty = all.
    pub departments: Vec<String>,
    pub enabled: bool,
    /// Most requests per second to this endpoint from each dispatching
    /// instance; `None` = no limit.
    pub rate_limit_per_second: Option<u32>,
    /// Failed attempts before a message is dead-lettered; `None` = the server's default.
    pub max_attempts: Option<u32>,
    /// Disable the endpoint when one of its messages is dead-lettered.
    pub disable_on_dead_letter: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    pub id: Uuid,
    pub tenant: TenantId,
    pub spec: EndpointSpec,
    pub secret: SigningSecret,
    /// The secret before the last rotation, still signing until the time given.
    pub previous_secret: Option<(SigningSecret, DateTime<Utc>)>,
    /// Why the dispatcher disabled it (410 Gone, a dead letter), if it did.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRecord {
    /// The secrets that sign a message sent at `now`: the current one, and the
    /// previous one while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        let mut secrets = vec![self.secret.clone()];
        if let Some((previous, until)) = &self.previous_secret {
            if *until > now {
                secrets.push(previous.clone());
            }
        }
        secrets
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waits for an earlier message of the same appointment.
    Queued,
    /// Due for delivery at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up on; holds back the rest of its appointment until replayed.
    Dead,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Pending => "pending",
            MessageState::Delivered => "delivered",
            MessageState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            MessageState::Queued,
            MessageState::Pending,
            MessageState::Delivered,
            MessageState::Dead,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A message the fan-out owes an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The `webhook-id`: stable for one event and one endpoint.
    pub id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub position: Position,
    /// Messages with the same key are delivered one after another, in order.
    pub ordering_key: String,
    pub event_type: String,
    /// The JSON body, exactly as it is sent.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: String,
    pub tenant: TenantId,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub position: Position,
    pub ordering_key: String,
    pub event_type: String,
    pub payload: String,
    pub state: MessageState,
    /// Attempts made so far (a replay does not reset it).
    pub attempts: u32,
    /// Failed attempts since it was last made due (a replay resets it).
    pub failures: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What became of one attempt, as the dispatcher decided it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptDecision {
    Delivered,
    /// Try again after this long.
    Retry {
        after: std::time::Duration,
    },
    /// Give up on the message; also disable the endpoint when `disable_endpoint`.
    DeadLetter {
        disable_endpoint: bool,
    },
    /// The endpoint answered 410 Gone: disable it, keep the message pending
    /// (it goes out if the endpoint is enabled again).
    EndpointGone,
}

/// One HTTP attempt and its decision.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub message_id: String,
    pub tenant: TenantId,
    pub endpoint_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u32,
    pub status_code: Option<u16>,
    /// Timeout, connection refused, …: what went wrong when there was no answer
    /// or the answer was a failure.
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response_excerpt: Option<String>,
    pub decision: AttemptDecision,
}

impl AttemptResult {
    /// What the message keeps as its last error: the failure, or the status
    /// of an answer that was not a success.
    pub fn last_error(&self) -> Option<String> {
        if self.decision == AttemptDecision::Delivered {
            return None;
        }
        self.error
            .clone()
            .or_else(|| self.status_code.map(|c| format!("HTTP {c}")))
    }
}

/// A leased message and its endpoint as it is at the claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub message: MessageRecord,
    pub endpoint: std::sync::Arc<EndpointRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// Increasing in the order attempts were recorded; a cursor for paging.
    pub seq: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// delivered, retry, dead-letter or endpoint-gone.
    pub outcome: String,
}

pub fn outcome_name(decision: &AttemptDecision) -> &'static str {
    match decision {
        AttemptDecision::Delivered => "delivered",
        AttemptDecision::Retry { .. } => "retry",
        AttemptDecision::DeadLetter { .. } => "dead-letter",
        AttemptDecision::EndpointGone => "endpoint-gone",
    }
}

/// Which messages to list; all given conditions hold.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub endpoint_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub state: Option<MessageState>,
    /// Messages after this one in (position, endpoint) order, for paging.
    pub after: Option<(Position, Uuid)>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub endpoint_id: Option<Uuid>,
    pub message_id: Option<String>,
    pub event_id: Option<Uuid>,
    /// Attempts recorded after this `seq`.
    pub after: Option<i64>,
    pub limit: usize,
}

/// Where a replay of an endpoint starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayFrom {
    /// Messages of events at or after this position.
    Position(Position),
    /// Messages created at or after this time.
    Time(DateTime<Utc>),
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Who holds the leases (an instance id).
    pub owner: String,
    /// How long a claimed message is held: longer than any attempt may take.
    pub lease: std::time::Duration,
    /// At most this many messages per endpoint.
    pub per_endpoint: usize,
    /// At most this many in all.
    pub limit: usize,
    /// Endpoints to leave out (this instance has enough of theirs in flight).
    pub skip_endpoints: Vec<Uuid>,
}

/// Counts per state, for the endpoint list and the dispatcher's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub queued: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_endpoint(&self, endpoint: &EndpointRecord) -> StoreResult<()>;
    /// Replaces the spec, the secrets and the disabled reason; `false` if no such endpoint.
    async fn update_endpoint(&self, endpoint: &EndpointRecord) -> StoreResult<bool>;
    async fn endpoint(&self, tenant: TenantId, id: Uuid) -> StoreResult<Option<EndpointRecord>>;
    /// One tenant's endpoints, or every tenant's (`None`), by creation time.
    async fn endpoints(&self, tenant: Option<TenantId>) -> StoreResult<Vec<EndpointRecord>>;

    /// Where the fan-out of `tenant` has read the global order up to.
    async fn fanout_checkpoint(&self, tenant: TenantId) -> StoreResult<Position>;
    /// Stores `messages` and moves the fan-out checkpoint from `expected` to
    /// `to`, atomically; `CheckpointMoved` (nothing written) when the
    /// checkpoint is no longer at `expected`. A message whose (endpoint,
    /// event) is already stored is left as is.
    async fn enqueue(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        messages: Vec<NewMessage>,
    ) -> StoreResult<usize>;

    /// Leases due `pending` messages of enabled endpoints to `request.owner`,
    /// oldest due first, each with its endpoint as it is now. A message
    /// leased to someone else is not returned until that lease has run out.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;
    /// Records attempts and applies their decisions, releasing the leases.
    /// A decision whose lease `owner` no longer holds only records the attempt.
    /// Returns the messages the decisions dead-lettered.
    async fn complete(&self, owner: &str, results: &[AttemptResult]) -> StoreResult<Vec<String>>;
    /// Gives leases back (a stopping dispatcher), due at once.
    async fn release(&self, owner: &str, message_ids: &[String]) -> StoreResult<()>;

    async fn messages(
        &self,
        tenant: TenantId,
        filter: &MessageFilter,
    ) -> StoreResult<Vec<MessageRecord>>;
    async fn message(&self, tenant: TenantId, id: &str) -> StoreResult<Option<MessageRecord>>;
    async fn attempts(
        &self,
        tenant: TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptRecord>>;
    async fn message_counts(&self, tenant: TenantId, endpoint: Uuid) -> StoreResult<MessageCounts>;

    /// Makes a `dead` message due again; `false` if it is not dead.
    async fn replay_message(&self, tenant: TenantId, id: &str) -> StoreResult<bool>;
    /// Sends every delivered or dead message of an endpoint from `from` on
    /// again, in order per appointment. Returns how many were requeued.
    async fn replay_endpoint(
        &self,
        tenant: TenantId,
        endpoint: Uuid,
        from: ReplayFrom,
    ) -> StoreResult<u64>;
}
