//! Who may call, for admins: a hospital's API keys and browser sessions,
//! and their revocation (docs/security.md, "Revocation"). Admins only; a
//! hospital sees only its own; a key's secret is never shown (only a hash
//! is stored). A revocation takes effect on every instance within about a
//! second, and closes the credential's WebSockets and event streams.
use async_graphql::{Context, ErrorExtensions, Object, Result, SimpleObject, ID};
use buktor_domain::Role;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{app_error, invalid, principal, scheduler};
use crate::app::AppError;
use crate::store::access::{ApiKeyListing, RevokedBy, SessionRecord};

fn require_admin(ctx: &Context<'_>, action: &'static str) -> Result<()> {
    let role = principal(ctx).role;
    if role == Role::Admin {
        Ok(())
    } else {
        Err(app_error(AppError::Forbidden {
            role: role.as_str(),
            action,
        }))
    }
}

fn store_error(e: crate::store::StoreError) -> async_graphql::Error {
    app_error(AppError::Store(e))
}

fn not_found(what: &str, id: Uuid) -> async_graphql::Error {
    async_graphql::Error::new(format!("this hospital has no {what} {id}"))
        .extend_with(|_, ext| ext.set("code", "NOT_FOUND"))
}

fn uuid_arg(field: &'static str, id: &ID) -> Result<Uuid> {
    Uuid::try_parse(id.as_str())
        .map_err(|_| invalid(field, format!("{:?} is not a valid id", id.as_str())))
}

/// An API key, without its secret.
#[derive(SimpleObject)]
pub struct ApiKey {
    id: ID,
    name: String,
    /// admin, staff, his-system or auditor.
    role: String,
    created_at: DateTime<Utc>,
    /// Approximate: noted at most about every 30 seconds per instance.
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it: `api-key:<id>`, `user:<HIS user>` or `cli:<OS user>`.
    revoked_by: Option<String>,
}

impl From<ApiKeyListing> for ApiKey {
    fn from(l: ApiKeyListing) -> Self {
        ApiKey {
            id: ID(l.key.id.to_string()),
            name: l.key.name,
            role: l.key.role.as_str().to_owned(),
            created_at: l.key.created_at,
            last_used_at: l.last_used_at,
            revoked_at: l.key.revoked_at,
            revoked_by: l.revoked_by,
        }
    }
}

/// A browser session opened from an embed token.
#[derive(SimpleObject)]
#[graphql(name = "BrowserSession")]
pub struct BrowserSession {
    id: ID,
    /// The HIS's user id.
    user: String,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<String>,
}

impl From<SessionRecord> for BrowserSession {
    fn from(s: SessionRecord) -> Self {
        BrowserSession {
            id: ID(s.id.to_string()),
            user: s.user,
            name: s.name,
            role: s.role.as_str().to_owned(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_used_at: s.last_used_at,
            revoked_at: s.revoked_at,
            revoked_by: s.revoked_by,
        }
    }
}

#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The hospital's API keys, oldest first, revoked ones included. Admins only.
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        require_admin(ctx, "list API keys")?;
        let keys = scheduler(ctx)
            .store()
            .access()
            .api_keys(principal(ctx).tenant_id())
            .await
            .map_err(store_error)?;
        Ok(keys.into_iter().map(ApiKey::from).collect())
    }

    /// The hospital's browser sessions that have not expired, newest
    /// first, revoked ones included; of one HIS user if `user` is given.
    /// Admins only.
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        user: Option<String>,
    ) -> Result<Vec<BrowserSession>> {
        require_admin(ctx, "list sessions")?;
        let now = scheduler(ctx).now();
        let sessions = scheduler(ctx)
            .store()
            .access()
            .sessions(principal(ctx).tenant_id(), user.as_deref(), now)
            .await
            .map_err(store_error)?;
        Ok(sessions.into_iter().map(BrowserSession::from).collect())
    }
}

#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Revokes one of the hospital's API keys: every instance refuses it
    /// within about a second, and its open WebSockets (close code 4403) and
    /// event streams end. Revoking a revoked key changes nothing. Admins only.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        require_admin(ctx, "revoke API keys")?;
        let id = uuid_arg("id", &id)?;
        let p = principal(ctx);
        let revoked = scheduler(ctx)
            .store()
            .access()
            .revoke_api_key(
                p.tenant_id(),
                id,
                RevokedBy {
                    actor: &p.actor_id,
                    at: scheduler(ctx).now(),
                },
            )
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found("API key", id))?;
        tracing::info!(tenant = %p.tenant_id(), key = %id, by = p.actor_id.as_str(), "API key revoked");
        Ok(revoked.into())
    }

    /// Revokes one browser session of the hospital, as `revokeApiKey` does
    /// a key (its widget and admin-screen streams end too). Admins only.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<BrowserSession> {
        require_admin(ctx, "revoke sessions")?;
        let id = uuid_arg("id", &id)?;
        let p = principal(ctx);
        let revoked = scheduler(ctx)
            .store()
            .access()
            .revoke_session(
                p.tenant_id(),
                id,
                RevokedBy {
                    actor: &p.actor_id,
                    at: scheduler(ctx).now(),
                },
            )
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found("session", id))?;
        tracing::info!(tenant = %p.tenant_id(), session = %id, by = p.actor_id.as_str(), "session revoked");
        Ok(revoked.into())
    }

    /// Revokes every open session of one HIS user; returns those revoked.
    /// Admins only.
    async fn revoke_user_sessions(
        &self,
        ctx: &Context<'_>,
        user: String,
    ) -> Result<Vec<BrowserSession>> {
        require_admin(ctx, "revoke sessions")?;
        if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
            return Err(invalid(
                "user",
                "must be 1 to 200 characters without control characters",
            ));
        }
        let p = principal(ctx);
        let revoked = scheduler(ctx)
            .store()
            .access()
            .revoke_user_sessions(
                p.tenant_id(),
                &user,
                RevokedBy {
                    actor: &p.actor_id,
                    at: scheduler(ctx).now(),
                },
            )
            .await
            .map_err(store_error)?;
        tracing::info!(tenant = %p.tenant_id(), count = revoked.len(), by = p.actor_id.as_str(), "user's sessions revoked");
        Ok(revoked.into_iter().map(BrowserSession::from).collect())
    }
}
