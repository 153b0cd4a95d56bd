//! [`ReadModelStore`] on SQLite. Writes go through the store's one writer
//! connection, so batches of different runners never interleave.
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use buktor_domain::TenantId;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{map_db, SqliteStore};
use crate::store::{
    Checkpoint, DocDifference, DocRow, DocWrite, GenerationStatus, Lease, Position, ReadModelStore,
    StoreError, StoreResult,
};

const LIVE: &str = "(SELECT g.generation FROM projection_generations g \
                     WHERE g.projection = ?1 AND g.status = 'live')";

fn tenant_text(tenant: TenantId) -> String {
    tenant.as_uuid().to_string()
}

fn parse_tenant(text: &str) -> StoreResult<TenantId> {
    text.parse::<uuid::Uuid>()
        .map(TenantId::from_uuid)
        .map_err(|e| StoreError::Corrupt(format!("tenant id {text:?}: {e}")))
}

fn live_generation_in(conn: &rusqlite::Connection, projection: &str) -> StoreResult<Option<i64>> {
    conn.query_row(
        "SELECT generation FROM projection_generations WHERE projection = ?1 AND status = 'live'",
        [projection],
        |r| r.get(0),
    )
    .optional()
    .map_err(map_db)
}

fn docs_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<DocRow>> {
    let mut statement = conn.prepare_cached(sql).map_err(map_db)?;
    let rows = statement
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_db)?;
    rows.collect::<Result<_, _>>().map_err(map_db)
}

#[async_trait]
impl ReadModelStore for SqliteStore {
    async fn live_generation(&self, projection: &str) -> StoreResult<i64> {
        let projection = projection.to_owned();
        if let Some(g) = self
            .read({
                let projection = projection.clone();
                move |conn| live_generation_in(conn, &projection)
            })
            .await?
        {
            return Ok(g);
        }
        self.write(move |conn| {
            if let Some(g) = live_generation_in(conn, &projection)? {
                return Ok(g);
            }
            conn.execute(
                "INSERT INTO projection_generations (projection, generation, status) \
                 VALUES (?1, 1, 'live')",
                [&projection],
            )
            .map_err(map_db)?;
            Ok(1)
        })
        .await
    }

    async fn new_generation(&self, projection: &str, status: GenerationStatus) -> StoreResult<i64> {
        self.live_generation(projection).await?;
        let projection = projection.to_owned();
        self.write(move |conn| {
            conn.query_row(
                "INSERT INTO projection_generations (projection, generation, status) \
                 SELECT ?1, coalesce(max(generation), 0) + 1, ?2 \
                 FROM projection_generations WHERE projection = ?1 \
                 RETURNING generation",
                params![projection, status.as_str()],
                |r| r.get(0),
            )
            .map_err(map_db)
        })
        .await
    }

    async fn promote(&self, projection: &str, generation: i64) -> StoreResult<Option<i64>> {
        let projection = projection.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let old = live_generation_in(&tx, &projection)?.filter(|g| *g != generation);
            tx.execute(
                "UPDATE projection_generations SET status = 'building' \
                 WHERE projection = ?1 AND status = 'live'",
                [&projection],
            )
            .map_err(map_db)?;
            let n = tx
                .execute(
                    "UPDATE projection_generations SET status = 'live' \
                     WHERE projection = ?1 AND generation = ?2",
                    params![projection, generation],
                )
                .map_err(map_db)?;
            if n == 0 {
                return Err(StoreError::NoSuchGeneration {
                    projection,
                    generation,
                });
            }
            if let Some(old) = old {
                for table in [
                    "projection_docs",
                    "projection_checkpoints",
                    "projection_generations",
                ] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE projection = ?1 AND generation = ?2"),
                        params![projection, old],
                    )
                    .map_err(map_db)?;
                }
            }
            tx.commit().map_err(map_db)?;
            Ok(old)
        })
        .await
    }

    async fn drop_generation(&self, projection: &str, generation: i64) -> StoreResult<()> {
        let projection = projection.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            if live_generation_in(&tx, &projection)? == Some(generation) {
                return Ok(());
            }
            for table in [
                "projection_docs",
                "projection_checkpoints",
                "projection_generations",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE projection = ?1 AND generation = ?2"),
                    params![projection, generation],
                )
                .map_err(map_db)?;
            }
            tx.commit().map_err(map_db)
        })
        .await
    }

    async fn generations(&self, projection: &str) -> StoreResult<Vec<(i64, GenerationStatus)>> {
        let projection = projection.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT generation, status FROM projection_generations \
                     WHERE projection = ?1 ORDER BY generation",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map([&projection], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(map_db)?;
            let mut out = Vec::new();
            for row in rows {
                let (g, status) = row.map_err(map_db)?;
                let status = GenerationStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("generation status {status:?}")))?;
                out.push((g, status));
            }
            Ok(out)
        })
        .await
    }

    async fn checkpoints(
        &self,
        projection: &str,
        generation: i64,
    ) -> StoreResult<HashMap<TenantId, Checkpoint>> {
        let projection = projection.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT tenant_id, position_tx, position_seq, events \
                     FROM projection_checkpoints WHERE projection = ?1 AND generation = ?2",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map(params![projection, generation], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(map_db)?;
            let mut out = HashMap::new();
            for row in rows {
                let (tenant, tx, seq, events) = row.map_err(map_db)?;
                out.insert(
                    parse_tenant(&tenant)?,
                    Checkpoint {
                        position: Position { tx, seq },
                        events,
                    },
                );
            }
            Ok(out)
        })
        .await
    }

    async fn live_positions(&self, tenant: TenantId) -> StoreResult<HashMap<String, Position>> {
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT c.projection, c.position_tx, c.position_seq \
                     FROM projection_checkpoints c JOIN projection_generations g \
                       ON g.projection = c.projection AND g.generation = c.generation \
                     WHERE g.status = 'live' AND c.tenant_id = ?1",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map([tenant_text(tenant)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Position {
                            tx: r.get(1)?,
                            seq: r.get(2)?,
                        },
                    ))
                })
                .map_err(map_db)?;
            rows.collect::<Result<_, _>>().map_err(map_db)
        })
        .await
    }

    async fn load_docs(
        &self,
        projection: &str,
        generation: i64,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<DocRow>> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let projection = projection.to_owned();
        let keys = serde_json::to_string(keys).map_err(StoreError::backend)?;
        // Through the writer: the runner must see its own last commit.
        self.write(move |conn| {
            docs_query(
                conn,
                "SELECT key, doc FROM projection_docs \
                 WHERE projection = ?1 AND generation = ?2 AND tenant_id = ?3 \
                   AND key IN (SELECT value FROM json_each(?4))",
                &[&projection, &generation, &tenant_text(tenant), &keys],
            )
        })
        .await
    }

    async fn commit_docs(
        &self,
        projection: &str,
        generation: i64,
        tenant: TenantId,
        expected: Position,
        to: Position,
        events: i64,
        writes: &[DocWrite],
    ) -> StoreResult<()> {
        let projection = projection.to_owned();
        let writes = writes.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_db)?;
            let tenant = tenant_text(tenant);
            let exists = tx
                .query_row(
                    "SELECT 1 FROM projection_generations WHERE projection = ?1 AND generation = ?2",
                    params![projection, generation],
                    |_| Ok(()),
                )
                .optional()
                .map_err(map_db)?;
            if exists.is_none() {
                return Err(StoreError::NoSuchGeneration {
                    projection,
                    generation,
                });
            }
            let current = tx
                .query_row(
                    "SELECT position_tx, position_seq FROM projection_checkpoints \
                     WHERE projection = ?1 AND generation = ?2 AND tenant_id = ?3",
                    params![projection, generation, tenant],
                    |r| Ok(Position { tx: r.get(0)?, seq: r.get(1)? }),
                )
                .optional()
                .map_err(map_db)?
                .unwrap_or(Position::START);
            if current != expected {
                return Err(StoreError::CheckpointMoved { projection });
            }
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO projection_docs \
                           (projection, generation, tenant_id, key, index_key, doc) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (projection, generation, tenant_id, key) \
                         DO UPDATE SET index_key = excluded.index_key, doc = excluded.doc",
                    )
                    .map_err(map_db)?;
                let mut delete = tx
                    .prepare_cached(
                        "DELETE FROM projection_docs WHERE projection = ?1 AND generation = ?2 \
                           AND tenant_id = ?3 AND key = ?4",
                    )
                    .map_err(map_db)?;
                for w in &writes {
                    match &w.doc {
                        Some(doc) => upsert
                            .execute(params![projection, generation, tenant, w.key, w.index_key, doc])
                            .map_err(map_db)?,
                        None => delete
                            .execute(params![projection, generation, tenant, w.key])
                            .map_err(map_db)?,
                    };
                }
            }
            tx.execute(
                "INSERT INTO projection_checkpoints \
                   (projection, generation, tenant_id, position_tx, position_seq, events, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
                 ON CONFLICT (projection, generation, tenant_id) DO UPDATE SET \
                   position_tx = excluded.position_tx, position_seq = excluded.position_seq, \
                   events = events + excluded.events, updated_at = excluded.updated_at",
                params![projection, generation, tenant, to.tx, to.seq, events],
            )
            .map_err(map_db)?;
            tx.commit().map_err(map_db)
        })
        .await
    }

    async fn live_docs(
        &self,
        projection: &str,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<DocRow>> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let projection = projection.to_owned();
        let keys = serde_json::to_string(keys).map_err(StoreError::backend)?;
        self.read(move |conn| {
            docs_query(
                conn,
                &format!(
                    "SELECT key, doc FROM projection_docs \
                     WHERE projection = ?1 AND generation = {LIVE} AND tenant_id = ?2 \
                       AND key IN (SELECT value FROM json_each(?3)) ORDER BY key"
                ),
                &[&projection, &tenant_text(tenant), &keys],
            )
        })
        .await
    }

    async fn live_scan(
        &self,
        projection: &str,
        tenant: TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<DocRow>> {
        let projection = projection.to_owned();
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            docs_query(
                conn,
                &format!(
                    "SELECT key, doc FROM projection_docs \
                     WHERE projection = ?1 AND generation = {LIVE} AND tenant_id = ?2 \
                       AND key >= ?3 AND substr(key, 1, length(?3)) = ?3 \
                       AND (?4 IS NULL OR key > ?4) \
                     ORDER BY key LIMIT ?5"
                ),
                &[&projection, &tenant_text(tenant), &prefix, &after, &limit],
            )
        })
        .await
    }

    async fn live_by_index(
        &self,
        projection: &str,
        tenant: TenantId,
        index_key: &str,
    ) -> StoreResult<Vec<DocRow>> {
        let projection = projection.to_owned();
        let index_key = index_key.to_owned();
        self.read(move |conn| {
            docs_query(
                conn,
                &format!(
                    "SELECT key, doc FROM projection_docs \
                     WHERE projection = ?1 AND generation = {LIVE} AND tenant_id = ?2 \
                       AND index_key = ?3 ORDER BY key"
                ),
                &[&projection, &tenant_text(tenant), &index_key],
            )
        })
        .await
    }

    async fn diff_generations(
        &self,
        projection: &str,
        left: i64,
        right: i64,
        limit: usize,
    ) -> StoreResult<Vec<DocDifference>> {
        let projection = projection.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn
                .prepare(
                    "SELECT coalesce(l.tenant_id, r.tenant_id), coalesce(l.key, r.key), l.doc, r.doc \
                     FROM (SELECT * FROM projection_docs WHERE projection = ?1 AND generation = ?2) l \
                     FULL JOIN (SELECT * FROM projection_docs WHERE projection = ?1 AND generation = ?3) r \
                       ON l.tenant_id = r.tenant_id AND l.key = r.key \
                     WHERE l.doc IS NOT r.doc OR l.index_key IS NOT r.index_key \
                     ORDER BY 1, 2 LIMIT ?4",
                )
                .map_err(map_db)?;
            let rows = statement
                .query_map(params![projection, left, right, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(map_db)?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, key, left, right) = row.map_err(map_db)?;
                out.push(DocDifference {
                    tenant: parse_tenant(&tenant)?,
                    key,
                    left,
                    right,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn try_lead(&self, _projection: &str) -> StoreResult<Option<Lease>> {
        // One process owns an embedded store; the checkpoint compare in
        // `commit_docs` still refuses a second runner's stale batch.
        Ok(Some(Lease::new(
            Arc::new(AtomicBool::new(true)),
            Box::new(()),
        )))
    }
}
