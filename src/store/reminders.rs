//! Storage of notification timers: one row per notification the planner
//! scheduled (`crate::notifications`), due at a time, claimed under a lease
//! by one dispatcher at a time.
//!
//! The rows are not the record: the `reminders-<appointment>` streams of
//! the event store are (what was scheduled, cancelled, sent, failed or
//! skipped). A row is the index the dispatcher polls, written by the planner
//! in the same transaction as its checkpoint, so a crash loses or doubles
//! nothing: a new planner resumes at the checkpoint and writes the same rows
//! again (their ids are derived, so a second write is an update).
use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Position, StoreResult};

/// Where a timer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerState {
    /// Due at `due_at` (again, after a failed attempt).
    Pending,
    Sent,
    /// Given up on after the last attempt.
    Failed,
    /// Not sent on purpose: opted out, no address, the appointment started…
    Skipped,
    /// The planner withdrew it (the appointment moved, was cancelled, …).
    Cancelled,
}

impl TimerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerState::Pending => "pending",
            TimerState::Sent => "sent",
            TimerState::Failed => "failed",
            TimerState::Skipped => "skipped",
            TimerState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TimerState::Pending,
            TimerState::Sent,
            TimerState::Failed,
            TimerState::Skipped,
            TimerState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A timer as the planner writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerSpec {
    /// The notification's id (derived, so writing it again is an update).
    pub id: Uuid,
    pub tenant: TenantId,
    pub appointment_id: Uuid,
    /// booked, rescheduled, cancelled or reminder.
    pub kind: String,
    /// email or sms.
    pub channel: String,
    pub due_at: DateTime<Utc>,
}

/// One planner write: a timer made (or moved) while it is pending, or cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerChange {
    pub spec: TimerSpec,
    /// `false`: insert it pending, or move a pending one to `spec.due_at`.
    /// `true`: cancel it if pending (insert it cancelled if unknown).
    /// A timer that was sent, failed or skipped is left as it is.
    pub cancel: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimerRecord {
    pub spec: TimerSpec,
    pub state: TimerState,
    /// Attempts completed so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// What became of a claimed timer.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerOutcome {
    /// Final: sent, failed, skipped or cancelled.
    Done(TimerState),
    /// Try again at this time.
    Retry { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimerResult {
    pub id: Uuid,
    pub outcome: TimerOutcome,
    pub error: Option<String>,
}

#[async_trait]
pub trait ReminderStore: Send + Sync + 'static {
    /// Where the planner of `tenant` has read the global order up to.
    async fn planner_checkpoint(&self, tenant: TenantId) -> StoreResult<Position>;
    /// Applies `changes` in order and moves the planner checkpoint from
    /// `expected` to `to`, atomically; `CheckpointMoved` (nothing written)
    /// when the checkpoint is no longer at `expected`.
    async fn plan(
        &self,
        tenant: TenantId,
        expected: Position,
        to: Position,
        changes: &[TimerChange],
    ) -> StoreResult<usize>;
    /// Leases to `owner` at most `limit` pending timers due at `now` (the
    /// server's clock: tests move it), earliest first. A timer leased to
    /// someone else is not returned until that lease ends (leases run on the
    /// database's clock, so instances whose clocks differ agree on them).
    async fn claim_timers(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Vec<TimerRecord>>;
    /// Applies outcomes of timers `owner` still holds, releasing them;
    /// returns how many it applied (a timer whose lease was taken over is
    /// left to its new holder).
    async fn complete_timers(&self, owner: &str, results: &[TimerResult]) -> StoreResult<usize>;
    /// Gives leases back (a stopping dispatcher): due again at once.
    async fn release_timers(&self, owner: &str, ids: &[Uuid]) -> StoreResult<()>;
    /// One tenant's timers, of one appointment or all, by due time.
    async fn timers(
        &self,
        tenant: TenantId,
        appointment_id: Option<Uuid>,
    ) -> StoreResult<Vec<TimerRecord>>;
}
