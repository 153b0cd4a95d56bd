//! Bearer credentials: API keys and browser sessions.
//!
//! API keys are `bk_<key id>_<secret>`. Only a SHA-256 of the secret is
//! stored; the secret has 256 random bits, so a fast hash is enough (no
//! password stretching needed) and verification stays cheap on every request.
//!
//! Sessions are `bks_<signed token>` (see `crate::embed::tokens`), made from
//! an embed token the HIS server issued for one of its users; they act as
//! that user, in the role the HIS gave them, until they expire or an admin
//! revokes them. Each is recorded (its token carries the record's id), so
//! it can be listed and revoked one by one.
//!
//! Revocation: keys and sessions are cached for [`KEY_CACHE_TTL`], and
//! forgotten as soon as the store announces their revocation (within about
//! a second on every instance; see `crate::store::access`).
//! [`Authenticator::revoked`] lets long-lived connections close then.
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buktor_domain::{derived_uuid, Role, TenantId};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::embed::tokens::{Grant, TokenError, TokenSigner};
use crate::store::access::{Revocation, SessionRecord, FEED_CAPACITY};
use crate::store::{ApiKeyRecord, Store, StoreError, TenantRecord};
use tokio::sync::broadcast;

/// How long a verified key is trusted without asking the store again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantRecord,
    /// What rate limits count against: the key, or the session's user.
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    /// Who the events record as the actor: `api-key:<id>` or `user:<HIS user id>`.
    pub actor_id: String,
    /// Whether the caller is a person in a browser session (its writes are
    /// recorded as coming from the admin screens or the widget).
    pub session: bool,
    /// The key or session, as a revocation names it.
    pub credential: Credential,
    /// `Authenticator`'s revocation count when this was verified.
    pub generation: u64,
}

impl Principal {
    pub fn tenant_id(&self) -> TenantId {
        self.tenant.id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the session is not valid")]
    SessionInvalid,
    #[error("the session has expired: open the page again from the HIS")]
    SessionExpired,
    #[error("the session was ended by an administrator")]
    SessionRevoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly made key: the record to store and the token to hand over once.
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub token: String,
}

pub fn generate_api_key(tenant: TenantId, role: Role, name: &str) -> NewApiKey {
    let id = Uuid::new_v4();
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    NewApiKey {
        record: ApiKeyRecord {
            id,
            tenant,
            name: name.to_owned(),
            role,
            secret_hash: hash_secret(&secret),
            created_at: Utc::now(),
            revoked_at: None,
        },
        token: format!("bk_{}_{secret}", id.simple()),
    }
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn parse_token(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix("bk_")?;
    let (id, secret) = rest.split_once('_')?;
    if secret.len() != 64 {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

/// What a principal authenticated with, for revoking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey(Uuid),
    Session(Uuid),
}

impl Credential {
    fn revoked_by(&self, r: &Revocation) -> bool {
        matches!(
            (self, r),
            (Credential::ApiKey(a), Revocation::ApiKey(b))
                | (Credential::Session(a), Revocation::Session(b)) if a == b
        )
    }
}

/// Verifies credentials, keeping what it read for [`KEY_CACHE_TTL`], and
/// forgets a credential the moment its revocation is heard (see
/// `crate::store::access`): the cache never outlives a revocation by more
/// than the backend takes to announce it.
pub struct Authenticator {
    shared: Arc<Shared>,
    tokens: Arc<TokenSigner>,
}

struct Shared {
    store: Arc<dyn Store>,
    keys: Mutex<HashMap<Uuid, (ApiKeyRecord, TenantRecord, Instant)>>,
    sessions: Mutex<HashMap<Uuid, (SessionRecord, Instant)>>,
    tenants: Mutex<HashMap<TenantId, (TenantRecord, Instant)>>,
    /// Counts the revocations applied to the caches; a principal records
    /// it, so that one verified just before a revocation is checked again.
    generation: AtomicU64,
    /// Revocations, passed on after the caches have forgotten them.
    revoked: broadcast::Sender<Revocation>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn forget(&self, r: Revocation) {
        match r {
            Revocation::ApiKey(id) => {
                lock(&self.keys).remove(&id);
            }
            Revocation::Session(id) => {
                lock(&self.sessions).remove(&id);
            }
            Revocation::Unknown => {
                lock(&self.keys).clear();
                lock(&self.sessions).clear();
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.revoked.send(r);
    }

    /// Whether the credential is still good, asking the store itself.
    async fn still_valid(&self, credential: Credential) -> Result<bool, StoreError> {
        Ok(match credential {
            Credential::ApiKey(id) => self
                .store
                .api_key(id)
                .await?
                .is_some_and(|k| k.revoked_at.is_none()),
            Credential::Session(id) => self
                .store
                .access()
                .session(id)
                .await?
                .is_some_and(|s| s.revoked_at.is_none()),
        })
    }
}

/// The prefix that tells a session from an API key.
pub const SESSION_PREFIX: &str = "bks_";

impl Authenticator {
    /// Must be made inside the runtime: it starts hearing revocations.
    pub fn new(store: Arc<dyn Store>, tokens: Arc<TokenSigner>) -> Self {
        let mut heard = store.access().revocations();
        let shared = Arc::new(Shared {
            store,
            keys: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            tenants: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            revoked: broadcast::channel(FEED_CAPACITY).0,
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                let r = match heard.recv().await {
                    Ok(r) => r,
                    // Fell behind: some revocation went unseen.
                    Err(broadcast::error::RecvError::Lagged(_)) => Revocation::Unknown,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(shared) = weak.upgrade() else { return };
                if r != Revocation::Unknown {
                    tracing::info!(revocation = ?r, "revocation heard");
                }
                shared.forget(r);
            }
        });
        Authenticator { shared, tokens }
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // Read before the caches: see `Shared::generation`.
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let token = token.trim();
        if let Some(session) = token.strip_prefix(SESSION_PREFIX) {
            return self.verify_session(session, generation).await;
        }
        let (id, secret) = parse_token(token).ok_or(AuthError::Invalid)?;
        let cached = lock(&self.shared.keys)
            .get(&id)
            .filter(|(_, _, at)| at.elapsed() < KEY_CACHE_TTL)
            .cloned();
        let (key, tenant) = match cached {
            Some((key, tenant, _)) => (key, tenant),
            None => {
                let store = &self.shared.store;
                let key = store.api_key(id).await?.ok_or(AuthError::Invalid)?;
                let tenant = store.tenant(key.tenant).await?.ok_or(AuthError::Invalid)?;
                // Only if no revocation came meanwhile: the read may predate it.
                if self.shared.generation.load(Ordering::SeqCst) == generation {
                    let mut cache = lock(&self.shared.keys);
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(id, (key.clone(), tenant.clone(), Instant::now()));
                }
                if key.revoked_at.is_none() && hash_secret(secret).ct_eq(&key.secret_hash).into() {
                    self.note_use(Credential::ApiKey(id));
                }
                (key, tenant)
            }
        };
        let matches: bool = hash_secret(secret).ct_eq(&key.secret_hash).into();
        if !matches || key.revoked_at.is_some() {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            tenant,
            key_id: key.id,
            actor_id: format!("api-key:{}", key.id),
            key_name: key.name,
            role: key.role,
            session: false,
            credential: Credential::ApiKey(key.id),
            generation,
        })
    }

    /// Records when a credential was last used, off the request's path
    /// (at most once per cache period per instance).
    fn note_use(&self, credential: Credential) {
        let store = self.shared.store.clone();
        let now = Utc::now();
        tokio::spawn(async move {
            let access = store.access();
            let result = match credential {
                Credential::ApiKey(id) => access.touch_api_key(id, now).await,
                Credential::Session(id) => access.touch_session(id, now).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = ?e, "cannot record when a credential was used");
            }
        });
    }

    async fn verify_session(&self, token: &str, generation: u64) -> Result<Principal, AuthError> {
        let verified = self
            .tokens
            .verify(token, "session")
            .await
            .map_err(|e| match e {
                TokenError::Expired => AuthError::SessionExpired,
                TokenError::Invalid => AuthError::SessionInvalid,
                TokenError::Store(e) => AuthError::Store(e),
            })?;
        let Grant::Session {
            id,
            user,
            name,
            role,
        } = verified.grant
        else {
            return Err(AuthError::SessionInvalid);
        };
        let cached = lock(&self.shared.sessions)
            .get(&id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(s, _)| s.clone());
        let record = match cached {
            Some(record) => record,
            None => {
                let record = self
                    .shared
                    .store
                    .access()
                    .session(id)
                    .await?
                    .ok_or(AuthError::SessionInvalid)?;
                if self.shared.generation.load(Ordering::SeqCst) == generation {
                    let mut cache = lock(&self.shared.sessions);
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(id, (record.clone(), Instant::now()));
                }
                if record.revoked_at.is_none() {
                    self.note_use(Credential::Session(id));
                }
                record
            }
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::SessionRevoked);
        }
        if record.tenant != verified.tenant {
            return Err(AuthError::SessionInvalid);
        }
        let tenant = self.tenant(verified.tenant).await?;
        Ok(Principal {
            key_id: derived_uuid(tenant.id, "session-user", &user),
            actor_id: format!("user:{user}"),
            key_name: name,
            tenant,
            role,
            session: true,
            credential: Credential::Session(id),
            generation,
        })
    }

    /// Opens a session for a HIS user: records it (so it can be listed and
    /// revoked) and returns its token, without the `bks_` prefix.
    pub async fn open_session(
        &self,
        tenant: TenantId,
        user: &str,
        name: &str,
        role: Role,
        expires_at: DateTime<Utc>,
    ) -> Result<(Uuid, String), TokenError> {
        let id = Uuid::new_v4();
        self.shared
            .store
            .access()
            .create_session(&SessionRecord {
                id,
                tenant,
                user: user.to_owned(),
                name: name.to_owned(),
                role,
                created_at: self.tokens.now(),
                expires_at,
                last_used_at: None,
                revoked_at: None,
                revoked_by: None,
            })
            .await?;
        let grant = Grant::Session {
            id,
            user: user.to_owned(),
            name: name.to_owned(),
            role,
        };
        let token = self.tokens.issue(tenant, grant, expires_at).await?;
        Ok((id, token))
    }

    /// Resolves once the principal's credential is revoked (at once if it
    /// already was), for the connections that outlive a request: WebSockets
    /// and event streams close then. A store failure while checking is not
    /// taken as a revocation: it is checked again a little later.
    pub fn revoked(&self, principal: &Principal) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let mut heard = shared.revoked.subscribe();
        let credential = principal.credential;
        let mut check = shared.generation.load(Ordering::SeqCst) != principal.generation;
        async move {
            loop {
                if check {
                    match shared.still_valid(credential).await {
                        Ok(true) => check = false,
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(error = ?e, "cannot check a credential; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                match heard.recv().await {
                    Ok(r) if credential.revoked_by(&r) => return,
                    Ok(Revocation::Unknown) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        check = true
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        }
    }

    /// A hospital's record, kept for a short while: sessions name the
    /// hospital themselves, so this is their only store read.
    pub async fn tenant(&self, id: TenantId) -> Result<TenantRecord, AuthError> {
        self.hospital(id).await?.ok_or(AuthError::SessionInvalid)
    }

    /// A hospital's record by id, `None` for an unknown one. Known ones are
    /// kept for a short while: the widget's and the framed pages' URLs name
    /// the hospital, and every call of theirs would read it again.
    pub async fn hospital(&self, id: TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let cached = lock(&self.shared.tenants)
            .get(&id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(t, _)| t.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(tenant) = self.shared.store.tenant(id).await? else {
            return Ok(None);
        };
        let mut tenants = lock(&self.shared.tenants);
        if tenants.len() > 10_000 {
            tenants.clear();
        }
        tenants.insert(id, (tenant.clone(), Instant::now()));
        Ok(Some(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_hash() {
        let k = generate_api_key(TenantId::new(), Role::Staff, "front desk");
        let (id, secret) = parse_token(&k.token).unwrap();
        assert_eq!(id, k.record.id);
        assert_eq!(hash_secret(secret), k.record.secret_hash);
        assert!(!k.record.secret_hash.is_empty());
        assert!(parse_token("bk_nothex_abc").is_none());
        assert!(parse_token(&k.token[..k.token.len() - 1]).is_none());
        assert!(parse_token("Bearer x").is_none());
    }
}
