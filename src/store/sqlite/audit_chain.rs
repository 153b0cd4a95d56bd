//! [`AuditLog`] on SQLite: the `event_chain` table
//! (`migrations/sqlite/0002_event_chain.sql`).
use async_trait::async_trait;
use buktor_domain::TenantId;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{is_unique_violation, map_db, parse_uuid, SqliteStore};
use crate::audit::{AuditLog, ChainLink, Digest32, SealerLease};
use crate::store::{Position, StoreResult};

const LINK_COLUMNS: &str = "tx, seq, event_id, prev_hash, hash";

type LinkRow = (i64, i64, String, Vec<u8>, Vec<u8>);

fn read_link_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_link((tx, seq, event_id, prev_hash, hash): LinkRow) -> StoreResult<ChainLink> {
    Ok(ChainLink {
        position: Position { tx, seq },
        event_id: parse_uuid(&event_id)?,
        prev_hash: Digest32::from_slice(&prev_hash)?,
        hash: Digest32::from_slice(&hash)?,
    })
}

/// The head as the connection sees it now.
fn head(conn: &rusqlite::Connection, tenant: &str) -> StoreResult<Option<ChainLink>> {
    let sql = format!(
        "SELECT {LINK_COLUMNS} FROM event_chain WHERE tenant_id = ?1 \
         ORDER BY tx DESC, seq DESC LIMIT 1"
    );
    conn.prepare_cached(&sql)
        .map_err(map_db)?
        .query_row([tenant], read_link_row)
        .optional()
        .map_err(map_db)?
        .map(decode_link)
        .transpose()
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn event_tenants(&self) -> StoreResult<Vec<TenantId>> {
        self.read(|conn| {
            // A loose index scan over (tenant_id, seq): one probe per tenant.
            let mut statement = conn
                .prepare_cached(
                    "WITH RECURSIVE t(id) AS ( \
                         SELECT (SELECT tenant_id FROM events ORDER BY tenant_id LIMIT 1) \
                         UNION ALL \
                         SELECT (SELECT e.tenant_id FROM events e WHERE e.tenant_id > t.id \
                                 ORDER BY e.tenant_id LIMIT 1) \
                         FROM t WHERE t.id IS NOT NULL \
                     ) \
                     SELECT id FROM t WHERE id IS NOT NULL ORDER BY id",
                )
                .map_err(map_db)?;
            let ids = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            ids.iter()
                .map(|id| parse_uuid(id).map(TenantId::from_uuid))
                .collect()
        })
        .await
    }

    async fn chain_head(&self, tenant: TenantId) -> StoreResult<Option<ChainLink>> {
        self.read(move |conn| head(conn, &tenant.to_string())).await
    }

    async fn chain_links(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<ChainLink>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {LINK_COLUMNS} FROM event_chain \
                 WHERE tenant_id = ?1 AND (tx, seq) > (?2, ?3) \
                 ORDER BY tx, seq LIMIT ?4"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(map_db)?;
            let rows = statement
                .query_map(
                    params![tenant.to_string(), after.tx, after.seq, limit],
                    read_link_row,
                )
                .map_err(map_db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_db)?;
            rows.into_iter().map(decode_link).collect()
        })
        .await
    }

    async fn chain_links_at(
        &self,
        tenant: TenantId,
        positions: &[Position],
    ) -> StoreResult<Vec<ChainLink>> {
        let mut positions = positions.to_vec();
        positions.sort_unstable();
        positions.dedup();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {LINK_COLUMNS} FROM event_chain \
                 WHERE tenant_id = ?1 AND tx = ?2 AND seq = ?3"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(map_db)?;
            let tenant = tenant.to_string();
            let mut links = Vec::with_capacity(positions.len());
            for p in positions {
                if let Some(row) = statement
                    .query_row(params![tenant, p.tx, p.seq], read_link_row)
                    .optional()
                    .map_err(map_db)?
                {
                    links.push(decode_link(row)?);
                }
            }
            Ok(links)
        })
        .await
    }

    async fn append_links(
        &self,
        tenant: TenantId,
        expected: Option<Position>,
        links: &[ChainLink],
    ) -> StoreResult<bool> {
        if links.is_empty() {
            return Ok(true);
        }
        let links = links.to_vec();
        self.write(move |conn| {
            let tenant = tenant.to_string();
            // IMMEDIATE: the head read and the inserts under one write lock,
            // also against a `buktor audit` process on the same file.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            if head(&tx, &tenant)?.map(|l| l.position) != expected {
                return Ok(false);
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO event_chain (tenant_id, tx, seq, event_id, prev_hash, hash) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(map_db)?;
                for link in &links {
                    let inserted = insert.execute(params![
                        tenant,
                        link.position.tx,
                        link.position.seq,
                        link.event_id.to_string(),
                        &link.prev_hash.0[..],
                        &link.hash.0[..],
                    ]);
                    match inserted {
                        Ok(_) => {}
                        Err(e) if is_unique_violation(&e, "event_chain.") => return Ok(false),
                        Err(e) => return Err(map_db(e)),
                    }
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(true)
        })
        .await
    }

    async fn try_lead_sealing(&self) -> StoreResult<Option<Box<dyn SealerLease>>> {
        // One server process per file: it always leads. A `buktor audit`
        // command sealing at the same time is safe (see `append_links`).
        Ok(Some(Box::new(AlwaysHeld)))
    }
}

struct AlwaysHeld;

#[async_trait]
impl SealerLease for AlwaysHeld {
    async fn held(&self) -> bool {
        true
    }
}
