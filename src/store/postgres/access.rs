//! [`AccessStore`] on PostgreSQL. A revocation commits with its `NOTIFY`
//! (PostgreSQL delivers it at commit), and each instance listens on a
//! connection of its own, outside the pool: see [`listen`].
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use uuid::Uuid;

use super::{map_db, PostgresStore};
use crate::store::access::{
    AccessStore, ApiKeyListing, Revocation, RevocationFeed, RevokedBy, SessionRecord, CHANNEL,
};
use crate::store::{ApiKeyRecord, StoreError, StoreResult};

const KEY_COLUMNS: &str =
    "id, tenant_id, name, role, secret_hash, created_at, revoked_at, revoked_by, last_used_at";
const SESSION_COLUMNS: &str = "id, tenant_id, user_id, name, role, created_at, expires_at, \
     last_used_at, revoked_at, revoked_by";

/// How the listening connection shows in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "buktor-revocations";

/// How often the listening connection is checked: a connection that died
/// without a word (a network partition) would otherwise hear nothing.
const HEALTH_CHECK: Duration = Duration::from_secs(5);
/// How long the check may take before the connection counts as lost.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

fn role(text: &str, what: &str) -> StoreResult<Role> {
    text.parse::<Role>()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn key_listing(row: &Row) -> StoreResult<ApiKeyListing> {
    let id: Uuid = row.get(0);
    Ok(ApiKeyListing {
        key: ApiKeyRecord {
            id,
            tenant: TenantId::from_uuid(row.get(1)),
            name: row.get(2),
            role: role(row.get(3), &format!("api key {id}"))?,
            secret_hash: row.get(4),
            created_at: row.get(5),
            revoked_at: row.get(6),
        },
        revoked_by: row.get(7),
        last_used_at: row.get(8),
    })
}

fn session_record(row: &Row) -> StoreResult<SessionRecord> {
    let id: Uuid = row.get(0);
    Ok(SessionRecord {
        id,
        tenant: TenantId::from_uuid(row.get(1)),
        user: row.get(2),
        name: row.get(3),
        role: role(row.get(4), &format!("session {id}"))?,
        created_at: row.get(5),
        expires_at: row.get(6),
        last_used_at: row.get(7),
        revoked_at: row.get(8),
        revoked_by: row.get(9),
    })
}

impl PostgresStore {
    /// Runs `update` (whose rows are the revoked records) and announces
    /// each with `NOTIFY`, in one transaction.
    async fn revoke_rows(
        &self,
        update: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        payload: impl Fn(&Row) -> String,
    ) -> StoreResult<Vec<Row>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        let rows = tx.query(update, params).await.map_err(map_db)?;
        for row in &rows {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload(row)])
                .await
                .map_err(map_db)?;
        }
        tx.commit().await.map_err(map_db)?;
        Ok(rows)
    }
}

#[async_trait]
impl AccessStore for PostgresStore {
    async fn api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyListing>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 \
                     ORDER BY created_at, id"
                ),
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(map_db)?;
        rows.iter().map(key_listing).collect()
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<ApiKeyListing>> {
        let rows = self
            .revoke_rows(
                &format!(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3), \
                     revoked_by = CASE WHEN revoked_at IS NULL THEN $4 ELSE revoked_by END \
                     WHERE tenant_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}"
                ),
                &[&tenant.as_uuid(), &id, &by.at, &by.actor],
                |row| Revocation::ApiKey(row.get(0)).payload().unwrap_or_default(),
            )
            .await?;
        rows.first().map(key_listing).transpose()
    }

    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
                &[&id, &at],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM sessions WHERE expires_at < now() - interval '1 day'",
                &[],
            )
            .await
            .map_err(map_db)?;
        client
            .execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &session.id,
                    &session.tenant.as_uuid(),
                    &session.user,
                    &session.name,
                    &session.role.as_str(),
                    &session.created_at,
                    &session.expires_at,
                    &session.last_used_at,
                    &session.revoked_at,
                    &session.revoked_by,
                ],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(map_db)?;
        row.as_ref().map(session_record).transpose()
    }

    async fn sessions(
        &self,
        tenant: TenantId,
        user: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 \
                     AND expires_at > $2 AND ($3::text IS NULL OR user_id = $3) \
                     ORDER BY created_at DESC, id"
                ),
                &[&tenant.as_uuid(), &now, &user],
            )
            .await
            .map_err(map_db)?;
        rows.iter().map(session_record).collect()
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<SessionRecord>> {
        let rows = self
            .revoke_rows(
                &format!(
                    "UPDATE sessions SET revoked_at = coalesce(revoked_at, $3), \
                     revoked_by = CASE WHEN revoked_at IS NULL THEN $4 ELSE revoked_by END \
                     WHERE tenant_id = $1 AND id = $2 RETURNING {SESSION_COLUMNS}"
                ),
                &[&tenant.as_uuid(), &id, &by.at, &by.actor],
                |row| {
                    Revocation::Session(row.get(0))
                        .payload()
                        .unwrap_or_default()
                },
            )
            .await?;
        rows.first().map(session_record).transpose()
    }

    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: &str,
        by: RevokedBy<'_>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let rows = self
            .revoke_rows(
                &format!(
                    "UPDATE sessions SET revoked_at = $3, revoked_by = $4 \
                     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL \
                     AND expires_at > $3 RETURNING {SESSION_COLUMNS}"
                ),
                &[&tenant.as_uuid(), &user, &by.at, &by.actor],
                |row| {
                    Revocation::Session(row.get(0))
                        .payload()
                        .unwrap_or_default()
                },
            )
            .await?;
        rows.iter().map(session_record).collect()
    }

    async fn touch_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sessions SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
                &[&id, &at],
            )
            .await
            .map_err(map_db)?;
        Ok(())
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        let feed = self.revocations.clone();
        let config = self.config.clone();
        self.revocations
            .subscribe(move || drop(tokio::spawn(listen(config, feed))))
    }
}

/// Hears revocations on a connection of its own, for as long as anyone in
/// this process listens. Whenever it is not certain to have heard
/// everything (it connects, or its connection was lost) it announces
/// [`Revocation::Unknown`], so that listeners check all they hold.
async fn listen(mut config: tokio_postgres::Config, feed: Arc<RevocationFeed>) {
    // Named apart from the committers, so an operator can tell it in
    // `pg_stat_activity` (unless the URL names an application).
    if config.get_application_name() == Some(super::COMMITTER_APPLICATION_NAME) {
        config.application_name(LISTENER_APPLICATION_NAME);
    }
    let mut failures = 0u32;
    loop {
        let (reason, listened) = listen_once(&config, &feed).await;
        if feed.is_unheard() {
            return;
        }
        feed.announce(Revocation::Unknown);
        // Back off over consecutive failures only: a connection that was
        // listening is replaced at once, to keep the one-second promise.
        failures = if listened { 1 } else { failures + 1 };
        tracing::warn!(
            reason = %reason,
            failures,
            "lost the PostgreSQL connection that hears revocations; reconnecting"
        );
        let pause = Duration::from_millis(50) * 2u32.pow(failures.min(7));
        tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
    }
}

/// One listening connection, until it fails; returns why, and whether it
/// got as far as listening.
async fn listen_once(config: &tokio_postgres::Config, feed: &RevocationFeed) -> (String, bool) {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return (format!("cannot connect: {e}"), false),
    };
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let item = match message {
                Ok(AsyncMessage::Notification(n)) => Ok(n.payload().to_owned()),
                Ok(_) => continue,
                Err(e) => Err(e.to_string()),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
        let _ = tx.send(Err("the connection ended".into()));
    });
    let mut listened = false;
    let reason = async {
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            return format!("cannot LISTEN: {e}");
        }
        listened = true;
        // Whatever was revoked before LISTEN took effect went unheard.
        feed.announce(Revocation::Unknown);
        loop {
            tokio::select! {
                item = heard.recv() => match item {
                    Some(Ok(payload)) => feed.announce(Revocation::parse(&payload)),
                    Some(Err(e)) => return e,
                    None => return "the connection ended".into(),
                },
                _ = tokio::time::sleep(HEALTH_CHECK) => {
                    if feed.is_unheard() {
                        return "nobody listens".into();
                    }
                    match tokio::time::timeout(HEALTH_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("health check failed: {e}"),
                        Err(_) => return "health check timed out".into(),
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    (reason, listened)
}
