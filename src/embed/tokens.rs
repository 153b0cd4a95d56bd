//! Signed, expiring tokens for the browser: `base64url(claims).base64url(mac)`,
//! HMAC-SHA256 with a key the store keeps (made by the first instance that
//! needs one, shared by all), so any instance verifies what another issued.
//!
//! The kind is inside the signed claims, so a token of one kind is refused
//! where another is expected (a manage link cannot open a staff session).
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use buktor_domain::{AppointmentId, PractitionerId, ReservationId, Role, ServiceId, TenantId};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::OnceCell;

use crate::app::Clock;
use crate::store::{Store, StoreError};

/// The name of the signing key in the store's server secrets.
const KEY_NAME: &str = "browser-token-signing-key";
/// Longest token accepted: claims are small, so anything longer is not ours.
const MAX_TOKEN_LEN: usize = 2048;

/// What a token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "typ", rename_all = "kebab-case")]
pub enum Grant {
    /// Issued to the HIS server, handed to its page, exchanged once for a session.
    Embed {
        user: String,
        name: String,
        role: Role,
    },
    /// A signed-in user of an embedded page or the staff widget. `id` names
    /// the stored session, which an admin may revoke.
    Session {
        id: uuid::Uuid,
        user: String,
        name: String,
        role: Role,
    },
    /// Lets a patient see, cancel or move one appointment.
    Manage { appointment: AppointmentId },
    /// A widget hold: the reservation and the time it keeps. Only whoever
    /// holds the token can book it; the reservation id alone, which the
    /// event log shows, is not enough.
    Hold {
        reservation: ReservationId,
        practitioner: PractitionerId,
        service: ServiceId,
        start: DateTime<Utc>,
    },
}

impl Grant {
    fn kind(&self) -> &'static str {
        match self {
            Grant::Embed { .. } => "embed",
            Grant::Session { .. } => "session",
            Grant::Manage { .. } => "manage",
            Grant::Hold { .. } => "hold",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    #[serde(flatten)]
    grant: Grant,
    tenant: TenantId,
    /// Unix seconds.
    exp: i64,
}

/// A verified token's content.
#[derive(Debug, Clone)]
pub struct Verified {
    pub grant: Grant,
    pub tenant: TenantId,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Invalid => "TOKEN_INVALID",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::Store(_) => "STORE_UNAVAILABLE",
        }
    }
}

pub struct TokenSigner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: OnceCell<Vec<u8>>,
}

impl TokenSigner {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        TokenSigner {
            store,
            clock,
            key: OnceCell::new(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn mac(&self) -> Result<Hmac<Sha256>, TokenError> {
        let key = self
            .key
            .get_or_try_init(|| async {
                let mut candidate = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut candidate);
                self.store.server_secret(KEY_NAME, &candidate).await
            })
            .await?;
        Ok(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    pub async fn issue(
        &self,
        tenant: TenantId,
        grant: Grant,
        expires_at: DateTime<Utc>,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            grant,
            tenant,
            exp: expires_at.timestamp(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let mut mac = self.mac().await?;
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{body}.{sig}"))
    }

    /// Checks the signature first, then the kind, then the time: a token
    /// that is both forged and old is reported as invalid, not expired.
    pub async fn verify(&self, token: &str, kind: &str) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let (body, sig) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac().await?;
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if claims.grant.kind() != kind {
            return Err(TokenError::Invalid);
        }
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Invalid)?;
        if expires_at <= self.now() {
            return Err(TokenError::Expired);
        }
        Ok(Verified {
            grant: claims.grant,
            tenant: claims.tenant,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::SystemClock;
    use crate::store::sqlite::SqliteStore;

    async fn signer() -> (TokenSigner, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (
            TokenSigner::new(Arc::new(store), Arc::new(SystemClock)),
            dir,
        )
    }

    fn staff() -> Grant {
        Grant::Embed {
            user: "u-1".into(),
            name: "Dr. J".into(),
            role: Role::Staff,
        }
    }

    #[tokio::test]
    async fn a_token_verifies_only_untouched_unexpired_and_as_its_own_kind() {
        let (s, _dir) = signer().await;
        let tenant = TenantId::new();
        let later = Utc::now() + chrono::Duration::minutes(5);
        let token = s.issue(tenant, staff(), later).await.unwrap();
        let v = s.verify(&token, "embed").await.unwrap();
        assert_eq!(v.grant, staff());
        assert_eq!(v.tenant, tenant);

        assert!(matches!(
            s.verify(&token, "session").await,
            Err(TokenError::Invalid)
        ));
        // Flip one character of the signature, then of the claims.
        for at in [token.len() - 2, 3] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(s.verify(&tampered, "embed").await, Err(TokenError::Invalid)),
                "tampered at {at} was accepted"
            );
        }
        let past = Utc::now() - chrono::Duration::seconds(1);
        let old = s.issue(tenant, staff(), past).await.unwrap();
        assert!(matches!(
            s.verify(&old, "embed").await,
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            s.verify("no-dot", "embed").await,
            Err(TokenError::Invalid)
        ));
    }
}
