//! [`AccessStore`] on SQLite. A revocation is announced in this process at
//! once, and written to the `revocations` table in its transaction, which
//! every server on the file polls ([`POLL`]) to hear of the revocations of
//! other processes (`buktor api-key revoke` beside a running server).
use std::time::Duration;

use async_trait::async_trait;
use buktor_domain::{Role, TenantId};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{format_time, map_db, parse_time, parse_uuid, SqliteStore};
use crate::store::access::{AccessStore, ApiKeyListing, Revocation, RevokedBy, SessionRecord};
use crate::store::{ApiKeyRecord, StoreError, StoreResult};

const KEY_COLUMNS: &str =
    "id, tenant_id, name, role, secret_hash, created_at, revoked_at, revoked_by, last_used_at";
const SESSION_COLUMNS: &str = "id, tenant_id, user_id, name, role, created_at, expires_at, \
     last_used_at, revoked_at, revoked_by";

/// How often a server reads the file's new revocations.
const POLL: Duration = Duration::from_millis(250);

fn time(text: Option<String>) -> StoreResult<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_time).transpose()
}

fn role(text: &str, what: &str) -> StoreResult<Role> {
    text.parse::<Role>()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

type KeyRow = (
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn read_key(row: &Row) -> rusqlite::Result<KeyRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn key_listing(r: KeyRow) -> StoreResult<ApiKeyListing> {
    let (id, tenant, name, role_text, secret_hash, created, revoked, revoked_by, used) = r;
    Ok(ApiKeyListing {
        key: ApiKeyRecord {
            id: parse_uuid(&id)?,
            tenant: TenantId::from_uuid(parse_uuid(&tenant)?),
            role: role(&role_text, &format!("api key {id}"))?,
            name,
            secret_hash,
            created_at: parse_time(&created)?,
            revoked_at: time(revoked)?,
        },
        revoked_by,
        last_used_at: time(used)?,
    })
}

type SessionRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn read_session(row: &Row) -> rusqlite::Result<SessionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn session_record(r: SessionRow) -> StoreResult<SessionRecord> {
    let (id, tenant, user, name, role_text, created, expires, used, revoked, revoked_by) = r;
    Ok(SessionRecord {
        id: parse_uuid(&id)?,
        tenant: TenantId::from_uuid(parse_uuid(&tenant)?),
        role: role(&role_text, &format!("session {id}"))?,
        user,
        name,
        created_at: parse_time(&created)?,
        expires_at: parse_time(&expires)?,
        last_used_at: time(used)?,
        revoked_at: time(revoked)?,
        revoked_by,
    })
}

/// Records revocations for the other processes, in the caller's transaction.
fn log_revocations(conn: &Connection, revoked: &[Revocation], at: &str) -> StoreResult<()> {
    for r in revoked {
        let (kind, id) = match r {
            Revocation::ApiKey(id) => ("key", id),
            Revocation::Session(id) => ("session", id),
            Revocation::Unknown => continue,
        };
        conn.execute(
            "INSERT INTO revocations (kind, id, revoked_at) VALUES (?1, ?2, ?3)",
            params![kind, id.to_string(), at],
        )
        .map_err(map_db)?;
    }
    Ok(())
}

impl SqliteStore {
    fn announce(&self, revoked: &[Revocation]) {
        for r in revoked {
            self.inner.revocations.announce(*r);
        }
    }

    /// The newest revocation's number, and those after `after`.
    async fn revocations_after(&self, after: Option<i64>) -> StoreResult<(i64, Vec<Revocation>)> {
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached("SELECT seq, kind, id FROM revocations WHERE seq > ?1 ORDER BY seq")
                .map_err(map_db)?;
            let head: i64 = match after {
                Some(seq) => seq,
                None => conn
                    .query_row("SELECT coalesce(max(seq), 0) FROM revocations", [], |r| {
                        r.get(0)
                    })
                    .map_err(map_db)?,
            };
            let rows = statement
                .query_map([head], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            let last = rows.last().map_or(head, |r| r.0);
            let revoked = rows
                .into_iter()
                .map(|(_, kind, id)| Revocation::parse(&format!("{kind}:{id}")))
                .collect();
            Ok((last, revoked))
        })
        .await
    }
}

/// Reads the file's new revocations every [`POLL`] while anyone listens.
async fn poll(store: SqliteStore) {
    let feed = &store.inner.revocations;
    let mut head = None;
    loop {
        match store.revocations_after(head).await {
            Ok((last, revoked)) => {
                if head.is_none() {
                    // Whatever came before the first read went unheard.
                    feed.announce(Revocation::Unknown);
                }
                head = Some(last);
                store.announce(&revoked);
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot read the revocations");
                feed.announce(Revocation::Unknown);
            }
        }
        tokio::time::sleep(POLL).await;
        if feed.is_unheard() {
            return;
        }
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyListing>> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 \
                     ORDER BY created_at, id"
                ))
                .map_err(map_db)?
                .query_map([tenant.to_string()], read_key)
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            rows.into_iter().map(key_listing).collect()
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<ApiKeyListing>> {
        let (actor, at) = (by.actor.to_owned(), format_time(by.at));
        let listing = self
            .write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(map_db)?;
                let changed = tx
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?3, revoked_by = ?4 \
                         WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                        params![tenant.to_string(), id.to_string(), at, actor],
                    )
                    .map_err(map_db)?;
                let row = tx
                    .query_row(
                        &format!(
                            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 AND id = ?2"
                        ),
                        params![tenant.to_string(), id.to_string()],
                        read_key,
                    )
                    .optional()
                    .map_err(map_db)?;
                if changed > 0 {
                    log_revocations(&tx, &[Revocation::ApiKey(id)], &at)?;
                }
                tx.commit().map_err(map_db)?;
                row.map(key_listing).transpose()
            })
            .await?;
        if listing.is_some() {
            self.announce(&[Revocation::ApiKey(id)]);
        }
        Ok(listing)
    }

    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let at = format_time(at);
        self.write(move |conn| {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 \
                 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id.to_string(), at],
            )
            .map_err(map_db)?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |conn| {
            let stale = format_time(Utc::now() - chrono::Duration::days(1));
            conn.execute("DELETE FROM sessions WHERE expires_at < ?1", [stale])
                .map_err(map_db)?;
            conn.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    s.id.to_string(),
                    s.tenant.to_string(),
                    s.user,
                    s.name,
                    s.role.as_str(),
                    format_time(s.created_at),
                    format_time(s.expires_at),
                    s.last_used_at.map(format_time),
                    s.revoked_at.map(format_time),
                    s.revoked_by,
                ],
            )
            .map_err(map_db)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                [id.to_string()],
                read_session,
            )
            .optional()
            .map_err(map_db)?
            .map(session_record)
            .transpose()
        })
        .await
    }

    async fn sessions(
        &self,
        tenant: TenantId,
        user: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let user = user.map(str::to_owned);
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?1 \
                     AND expires_at > ?2 AND (?3 IS NULL OR user_id = ?3) \
                     ORDER BY created_at DESC, id"
                ))
                .map_err(map_db)?
                .query_map(
                    params![tenant.to_string(), format_time(now), user],
                    read_session,
                )
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            rows.into_iter().map(session_record).collect()
        })
        .await
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        by: RevokedBy<'_>,
    ) -> StoreResult<Option<SessionRecord>> {
        let (actor, at) = (by.actor.to_owned(), format_time(by.at));
        let record = self
            .write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(map_db)?;
                let changed = tx
                    .execute(
                        "UPDATE sessions SET revoked_at = ?3, revoked_by = ?4 \
                         WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                        params![tenant.to_string(), id.to_string(), at, actor],
                    )
                    .map_err(map_db)?;
                let row = tx
                    .query_row(
                        &format!(
                            "SELECT {SESSION_COLUMNS} FROM sessions \
                             WHERE tenant_id = ?1 AND id = ?2"
                        ),
                        params![tenant.to_string(), id.to_string()],
                        read_session,
                    )
                    .optional()
                    .map_err(map_db)?;
                if changed > 0 {
                    log_revocations(&tx, &[Revocation::Session(id)], &at)?;
                }
                tx.commit().map_err(map_db)?;
                row.map(session_record).transpose()
            })
            .await?;
        if record.is_some() {
            self.announce(&[Revocation::Session(id)]);
        }
        Ok(record)
    }

    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: &str,
        by: RevokedBy<'_>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (user, actor, at) = (user.to_owned(), by.actor.to_owned(), format_time(by.at));
        let revoked = self
            .write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(map_db)?;
                let ids = tx
                    .prepare(
                        "UPDATE sessions SET revoked_at = ?3, revoked_by = ?4 \
                         WHERE tenant_id = ?1 AND user_id = ?2 AND revoked_at IS NULL \
                         AND expires_at > ?3 RETURNING id",
                    )
                    .map_err(map_db)?
                    .query_map(params![tenant.to_string(), user, at, actor], |r| {
                        r.get::<_, String>(0)
                    })
                    .map_err(map_db)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(map_db)?;
                let mut records = Vec::new();
                for id in &ids {
                    let row = tx
                        .query_row(
                            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                            [id],
                            read_session,
                        )
                        .map_err(map_db)?;
                    records.push(session_record(row)?);
                }
                let revocations: Vec<Revocation> =
                    records.iter().map(|s| Revocation::Session(s.id)).collect();
                log_revocations(&tx, &revocations, &at)?;
                tx.commit().map_err(map_db)?;
                Ok(records)
            })
            .await?;
        let revocations: Vec<Revocation> =
            revoked.iter().map(|s| Revocation::Session(s.id)).collect();
        self.announce(&revocations);
        Ok(revoked)
    }

    async fn touch_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let at = format_time(at);
        self.write(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_used_at = ?2 WHERE id = ?1 \
                 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id.to_string(), at],
            )
            .map_err(map_db)?;
            Ok(())
        })
        .await
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        let store = self.clone();
        self.inner
            .revocations
            .subscribe(move || drop(tokio::spawn(poll(store))))
    }
}
