//! [`AuditLog`] on PostgreSQL: the `event_chain` table
//! (`migrations/postgres/0003_event_chain.sql`).
use async_trait::async_trait;
use buktor_domain::TenantId;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{map_db, PostgresStore};
use crate::audit::{AuditLog, ChainLink, Digest32, SealerLease};
use crate::store::{Position, StoreResult};

/// Key of the session advisory lock held by the one active sealer of a
/// database ("buktor-a" in ASCII).
const SEALER_LOCK_KEY: i64 = 0x6275_6b74_6f72_2d61;

const LINK_COLUMNS: &str = "c.tx, c.seq, c.event_id, c.prev_hash, c.hash";

fn decode_link(row: &Row) -> StoreResult<ChainLink> {
    Ok(ChainLink {
        position: Position {
            tx: row.try_get(0).map_err(map_db)?,
            seq: row.try_get(1).map_err(map_db)?,
        },
        event_id: row.try_get(2).map_err(map_db)?,
        prev_hash: Digest32::from_slice(row.try_get(3).map_err(map_db)?)?,
        hash: Digest32::from_slice(row.try_get(4).map_err(map_db)?)?,
    })
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PostgresStore {
    async fn query_links(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<ChainLink>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(map_db)?;
        let rows = client.query(&statement, params).await.map_err(map_db)?;
        rows.iter().map(decode_link).collect()
    }
}

#[async_trait]
impl AuditLog for PostgresStore {
    async fn event_tenants(&self) -> StoreResult<Vec<TenantId>> {
        // A loose index scan: one probe of the global-order index per
        // tenant, not one row per event.
        const SQL: &str = "\
            WITH RECURSIVE t(id) AS ( \
                SELECT (SELECT e.tenant_id FROM events e ORDER BY e.tenant_id LIMIT 1) \
                UNION ALL \
                SELECT (SELECT e.tenant_id FROM events e WHERE e.tenant_id > t.id \
                        ORDER BY e.tenant_id LIMIT 1) \
                FROM t WHERE t.id IS NOT NULL \
            ) \
            SELECT id FROM t WHERE id IS NOT NULL ORDER BY id";
        let client = self.client().await?;
        let rows = client.query(SQL, &[]).await.map_err(map_db)?;
        Ok(rows
            .iter()
            .map(|row| TenantId::from_uuid(row.get(0)))
            .collect())
    }

    async fn chain_head(&self, tenant: TenantId) -> StoreResult<Option<ChainLink>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM event_chain c WHERE c.tenant_id = $1 \
             ORDER BY c.tx DESC, c.seq DESC LIMIT 1"
        );
        Ok(self
            .query_links(&sql, &[&tenant.as_uuid()])
            .await?
            .into_iter()
            .next())
    }

    async fn chain_links(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<ChainLink>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM event_chain c \
             WHERE c.tenant_id = $1 AND (c.tx, c.seq) > ($2, $3) \
             ORDER BY c.tx, c.seq LIMIT $4"
        );
        self.query_links(&sql, &[&tenant.as_uuid(), &after.tx, &after.seq, &limit])
            .await
    }

    async fn chain_links_at(
        &self,
        tenant: TenantId,
        positions: &[Position],
    ) -> StoreResult<Vec<ChainLink>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let txs: Vec<i64> = positions.iter().map(|p| p.tx).collect();
        let seqs: Vec<i64> = positions.iter().map(|p| p.seq).collect();
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM unnest($2::bigint[], $3::bigint[]) AS p(tx, seq) \
             JOIN event_chain c ON c.tenant_id = $1 AND c.tx = p.tx AND c.seq = p.seq \
             ORDER BY c.tx, c.seq"
        );
        self.query_links(&sql, &[&tenant.as_uuid(), &txs, &seqs])
            .await
    }

    async fn append_links(
        &self,
        tenant: TenantId,
        head: Option<Position>,
        links: &[ChainLink],
    ) -> StoreResult<bool> {
        if links.is_empty() {
            return Ok(true);
        }
        let txs: Vec<i64> = links.iter().map(|l| l.position.tx).collect();
        let seqs: Vec<i64> = links.iter().map(|l| l.position.seq).collect();
        let ids: Vec<uuid::Uuid> = links.iter().map(|l| l.event_id).collect();
        let prevs: Vec<&[u8]> = links.iter().map(|l| &l.prev_hash.0[..]).collect();
        let hashes: Vec<&[u8]> = links.iter().map(|l| &l.hash.0[..]).collect();
        let mut client = self.client().await?;
        // Dropped without commit, the transaction rolls back.
        let tx = client.transaction().await.map_err(map_db)?;
        // The head as of now: a sealer that read an older head lost.
        let current = tx
            .query_opt(
                "SELECT tx, seq FROM event_chain WHERE tenant_id = $1 \
                 ORDER BY tx DESC, seq DESC LIMIT 1",
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(map_db)?
            .map(|row| Position {
                tx: row.get(0),
                seq: row.get(1),
            });
        if current != head {
            return Ok(false);
        }
        // A sealer racing from the same head inserts the same first
        // position: whichever commits second fails on the primary key here
        // (or waits for the first and then fails).
        let inserted = tx
            .execute(
                "INSERT INTO event_chain (tenant_id, tx, seq, event_id, prev_hash, hash) \
                 SELECT $1, l.tx, l.seq, l.event_id, l.prev_hash, l.hash \
                 FROM unnest($2::bigint[], $3::bigint[], $4::uuid[], $5::bytea[], $6::bytea[]) \
                     AS l(tx, seq, event_id, prev_hash, hash)",
                &[&tenant.as_uuid(), &txs, &seqs, &ids, &prevs, &hashes],
            )
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(false),
            Err(e) => return Err(map_db(e)),
        }
        match tx.commit().await {
            Ok(()) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(map_db(e)),
        }
    }

    async fn try_lead_sealing(&self) -> StoreResult<Option<Box<dyn SealerLease>>> {
        let client = self.client().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SEALER_LOCK_KEY])
            .await
            .map_err(map_db)?
            .get(0);
        if !locked {
            return Ok(None);
        }
        // The lock belongs to this session: the connection leaves the pool
        // for good (the pool may open another in its place), so no other
        // task ever uses it and the lock ends exactly when it closes.
        let client = deadpool_postgres::Object::take(client);
        Ok(Some(Box::new(PgSealerLease { client })))
    }
}

/// The connection that holds the sealer's advisory lock.
struct PgSealerLease {
    client: deadpool_postgres::ClientWrapper,
}

#[async_trait]
impl SealerLease for PgSealerLease {
    async fn held(&self) -> bool {
        !self.client.is_closed() && self.client.simple_query("SELECT 1").await.is_ok()
    }
}
