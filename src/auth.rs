//! Bearer credentials: API keys and browser sessions.
//!
//! API keys are `bk_<key id>_<secret>`. Only a SHA-256 of the secret is
//! stored; the secret has 256 random bits, so a fast hash is enough (no
//! password stretching needed) and verification stays cheap on every request.
//!
//! Sessions are `bks_<signed token>` (see `crate::embed::tokens`), made from
//! an embed token the HIS server issued for one of its users; they act as
//! that user, in the role the HIS gave them, until they expire.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buktor_domain::{derived_uuid, Role, TenantId};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::embed::tokens::{Grant, TokenError, TokenSigner};
use crate::store::{ApiKeyRecord, Store, StoreError, TenantRecord};

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

pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<Uuid, (ApiKeyRecord, TenantRecord, Instant)>>,
    tokens: Arc<TokenSigner>,
    tenants: Mutex<HashMap<TenantId, (TenantRecord, Instant)>>,
}

/// The prefix that tells a session from an API key.
pub const SESSION_PREFIX: &str = "bks_";

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, tokens: Arc<TokenSigner>) -> Self {
        Authenticator {
            store,
            cache: Mutex::new(HashMap::new()),
            tokens,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if let Some(session) = token.strip_prefix(SESSION_PREFIX) {
            return self.verify_session(session).await;
        }
        let (id, secret) = parse_token(token).ok_or(AuthError::Invalid)?;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .filter(|(_, _, at)| at.elapsed() < KEY_CACHE_TTL)
            .cloned();
        let (key, tenant) = match cached {
            Some((key, tenant, _)) => (key, tenant),
            None => {
                let key = self.store.api_key(id).await?.ok_or(AuthError::Invalid)?;
                let tenant = self
                    .store
                    .tenant(key.tenant)
                    .await?
                    .ok_or(AuthError::Invalid)?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > 100_000 {
                    cache.clear();
                }
                cache.insert(id, (key.clone(), tenant.clone(), Instant::now()));
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
        })
    }

    async fn verify_session(&self, token: &str) -> Result<Principal, AuthError> {
        let verified = self
            .tokens
            .verify(token, "session")
            .await
            .map_err(|e| match e {
                TokenError::Expired => AuthError::SessionExpired,
                TokenError::Invalid => AuthError::SessionInvalid,
                TokenError::Store(e) => AuthError::Store(e),
            })?;
        let Grant::Session { user, name, role } = verified.grant else {
            return Err(AuthError::SessionInvalid);
        };
        let tenant = self.tenant(verified.tenant).await?;
        Ok(Principal {
            key_id: derived_uuid(tenant.id, "session-user", &user),
            actor_id: format!("user:{user}"),
            key_name: name,
            tenant,
            role,
            session: true,
        })
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
        let cached = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(t, _)| t.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(tenant) = self.store.tenant(id).await? else {
            return Ok(None);
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
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
