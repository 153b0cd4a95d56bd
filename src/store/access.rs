//! Who may call, and how that is taken back: the listing and revocation of
//! API keys, the browser sessions opened from embed tokens, and the feed
//! that tells every instance of a revocation (docs/security.md,
//! "Revocation").
//!
//! A revocation is a row: `revoked_at` and `revoked_by` on the key or the
//! session, never undone. Each backend announces it to every server on the
//! same data: PostgreSQL with `NOTIFY` in the revoking transaction, heard on
//! a connection of each instance's own; the embedded store directly in its
//! process, and through a `revocations` table it polls for the other
//! processes on the file (the CLI).
use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{ApiKeyRecord, StoreResult};

/// The PostgreSQL channel revocations are announced on.
pub const CHANNEL: &str = "buktor_revocations";
/// Revocations a listener may fall behind before it is told [`Revocation::Unknown`].
pub const FEED_CAPACITY: usize = 1024;

/// What a server hears: one credential revoked, or that some may have been
/// while it could not hear (its PostgreSQL connection was lost, or it fell
/// behind), so everything cached must be checked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    ApiKey(Uuid),
    Session(Uuid),
    Unknown,
}

impl Revocation {
    /// The `NOTIFY` payload: `key:<uuid>` or `session:<uuid>`.
    pub fn payload(&self) -> Option<String> {
        match self {
            Revocation::ApiKey(id) => Some(format!("key:{id}")),
            Revocation::Session(id) => Some(format!("session:{id}")),
            Revocation::Unknown => None,
        }
    }

    /// Reads a payload; anything else is [`Revocation::Unknown`], which
    /// makes a listener check everything: never less safe than knowing.
    pub fn parse(payload: &str) -> Revocation {
        let parsed = payload.split_once(':').and_then(|(kind, id)| {
            let id = Uuid::try_parse(id).ok()?;
            match kind {
                "key" => Some(Revocation::ApiKey(id)),
                "session" => Some(Revocation::Session(id)),
                _ => None,
            }
        });
        parsed.unwrap_or(Revocation::Unknown)
    }
}

/// An API key as an admin sees it: never its secret or hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyListing {
    pub key: ApiKeyRecord,
    pub revoked_by: Option<String>,
    /// Approximate: written at most about once per key cache period.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A browser session opened from an embed token.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub tenant: TenantId,
    /// The HIS's user id.
    pub user: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// Who revoked, as recorded: `api-key:<id>`, `user:<HIS user>` or `cli:<OS user>`.
#[derive(Debug, Clone)]
pub struct RevokedBy<'a> {
    pub actor: &'a str,
    pub at: DateTime<Utc>,
}

/// A backend's fan-out of revocations to this process's listeners; its
/// source (a PostgreSQL listener, a poller) starts with the first listener.
pub struct RevocationFeed {
    sender: broadcast::Sender<Revocation>,
    started: std::sync::Once,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeed").finish_non_exhaustive()
    }
}

impl Default for RevocationFeed {
    fn default() -> Self {
        RevocationFeed {
            sender: broadcast::channel(FEED_CAPACITY).0,
            started: std::sync::Once::new(),
        }
    }
}

impl RevocationFeed {
    /// A new listener; runs `start` (which spawns the source) the first time.
    pub fn subscribe(&self, start: impl FnOnce()) -> broadcast::Receiver<Revocation> {
        let rx = self.sender.subscribe();
        self.started.call_once(start);
        rx
    }

    /// Whether nobody in this process listens any more (a source may stop).
    pub fn is_unheard(&self) -> bool {
        self.sender.receiver_count() == 0
    }

    /// Tells every listener of this process (none listening is fine).
    pub fn announce(&self, revocation: Revocation) {
        let _ = self.sender.send(revocation);
    }
}

#[async_trait]
pub trait AccessStore: Send + Sync {
    /// A hospital's keys, oldest first.
    async fn api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyListing>>;
    /// Revokes a key of `tenant` and announces it; a key already revoked
    /// keeps its first revocation. `None` if the hospital has no such key.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<ApiKeyListing>>;
    /// Notes that a key was used at `at`.
    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;

    /// Records a new session (and forgets sessions that expired a day ago).
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>>;
    /// A hospital's sessions that have not expired at `now` (revoked ones
    /// included), of one user or of all, newest first.
    async fn sessions(
        &self,
        tenant: TenantId,
        user: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Revokes one session of `tenant` and announces it; `None` if the
    /// hospital has no such session.
    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Revokes every unexpired, unrevoked session of a user; returns them.
    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: &str,
        by: RevokedBy<'_>,
    ) -> StoreResult<Vec<SessionRecord>>;
    async fn touch_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;

    /// Every revocation from now on, made by any process on this data,
    /// within about a second. Starts the backend's listener on first use
    /// (call it inside the runtime).
    fn revocations(&self) -> broadcast::Receiver<Revocation>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_anything_else_means_check_everything() {
        let id = Uuid::new_v4();
        for r in [Revocation::ApiKey(id), Revocation::Session(id)] {
            assert_eq!(Revocation::parse(&r.payload().unwrap()), r);
        }
        let odd = [
            String::new(),
            "key:".into(),
            "key:nope".into(),
            format!("other:{id}"),
        ];
        for payload in odd {
            assert_eq!(Revocation::parse(&payload), Revocation::Unknown);
        }
    }
}
