//! [`ReadModelStore`] on PostgreSQL.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use buktor_domain::TenantId;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::{map_db, PostgresStore};
use crate::store::{
    Checkpoint, DocDifference, DocRow, DocWrite, GenerationStatus, Lease, Position, ReadModelStore,
    StoreError, StoreResult,
};

/// The live generation of projection `$1`, as a subquery.
macro_rules! live {
    () => {
        "(SELECT g.generation FROM projection_generations g \
          WHERE g.projection = $1 AND g.status = 'live')"
    };
}

/// Advisory lock keys of the projection runners: "buktor-p" then a hash of the name.
fn lease_key(projection: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("buktor-projection:{projection}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

impl PostgresStore {
    /// Runs a cached statement that selects `key, doc`.
    async fn query_docs(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<DocRow>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(map_db)?;
        let rows = client.query(&statement, params).await.map_err(map_db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl ReadModelStore for PostgresStore {
    async fn live_generation(&self, projection: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_opt(concat!("SELECT ", live!()), &[&projection])
            .await
            .map_err(map_db)?;
        if let Some(generation) = row.and_then(|r| r.get::<_, Option<i64>>(0)) {
            return Ok(generation);
        }
        // Two instances starting together: the unique live index lets one win.
        client
            .execute(
                "INSERT INTO projection_generations (projection, generation, status) \
                 VALUES ($1, 1, 'live') ON CONFLICT DO NOTHING",
                &[&projection],
            )
            .await
            .map_err(map_db)?;
        let row = client
            .query_one(concat!("SELECT ", live!()), &[&projection])
            .await
            .map_err(map_db)?;
        row.get::<_, Option<i64>>(0).ok_or_else(|| {
            StoreError::Corrupt(format!("projection {projection} has no live generation"))
        })
    }

    async fn new_generation(&self, projection: &str, status: GenerationStatus) -> StoreResult<i64> {
        self.live_generation(projection).await?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO projection_generations (projection, generation, status) \
                 SELECT $1, coalesce(max(generation), 0) + 1, $2 \
                 FROM projection_generations WHERE projection = $1 \
                 RETURNING generation",
                &[&projection, &status.as_str()],
            )
            .await
            .map_err(map_db)?;
        Ok(row.get(0))
    }

    async fn promote(&self, projection: &str, generation: i64) -> StoreResult<Option<i64>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        // Runners commit with the generation's checkpoint row locked; taking
        // the generations row here orders the swap after any batch in flight.
        let old: Option<i64> = tx
            .query_opt(
                "SELECT generation FROM projection_generations \
                 WHERE projection = $1 AND status = 'live' FOR UPDATE",
                &[&projection],
            )
            .await
            .map_err(map_db)?
            .map(|r| r.get(0));
        let moved = tx
            .execute(
                "UPDATE projection_generations SET status = 'building' \
                 WHERE projection = $1 AND status = 'live'",
                &[&projection],
            )
            .await
            .map_err(map_db)?;
        debug_assert!(moved <= 1);
        let n = tx
            .execute(
                "UPDATE projection_generations SET status = 'live' \
                 WHERE projection = $1 AND generation = $2",
                &[&projection, &generation],
            )
            .await
            .map_err(map_db)?;
        if n == 0 {
            return Err(StoreError::NoSuchGeneration {
                projection: projection.to_owned(),
                generation,
            });
        }
        if let Some(old) = old.filter(|old| *old != generation) {
            tx.execute(
                "DELETE FROM projection_docs WHERE projection = $1 AND generation = $2",
                &[&projection, &old],
            )
            .await
            .map_err(map_db)?;
            tx.execute(
                "DELETE FROM projection_generations WHERE projection = $1 AND generation = $2",
                &[&projection, &old],
            )
            .await
            .map_err(map_db)?;
        }
        tx.commit().await.map_err(map_db)?;
        Ok(old.filter(|old| *old != generation))
    }

    async fn drop_generation(&self, projection: &str, generation: i64) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        tx.execute(
            "DELETE FROM projection_docs WHERE projection = $1 AND generation = $2",
            &[&projection, &generation],
        )
        .await
        .map_err(map_db)?;
        tx.execute(
            "DELETE FROM projection_generations \
             WHERE projection = $1 AND generation = $2 AND status <> 'live'",
            &[&projection, &generation],
        )
        .await
        .map_err(map_db)?;
        tx.commit().await.map_err(map_db)
    }

    async fn generations(&self, projection: &str) -> StoreResult<Vec<(i64, GenerationStatus)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT generation, status FROM projection_generations \
                 WHERE projection = $1 ORDER BY generation",
                &[&projection],
            )
            .await
            .map_err(map_db)?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(1);
                GenerationStatus::parse(&status)
                    .map(|s| (r.get(0), s))
                    .ok_or_else(|| StoreError::Corrupt(format!("generation status {status:?}")))
            })
            .collect()
    }

    async fn checkpoints(
        &self,
        projection: &str,
        generation: i64,
    ) -> StoreResult<HashMap<TenantId, Checkpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant_id, position_tx, position_seq, events FROM projection_checkpoints \
                 WHERE projection = $1 AND generation = $2",
                &[&projection, &generation],
            )
            .await
            .map_err(map_db)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    TenantId::from_uuid(r.get::<_, Uuid>(0)),
                    Checkpoint {
                        position: Position {
                            tx: r.get(1),
                            seq: r.get(2),
                        },
                        events: r.get(3),
                    },
                )
            })
            .collect())
    }

    async fn live_positions(&self, tenant: TenantId) -> StoreResult<HashMap<String, Position>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT c.projection, c.position_tx, c.position_seq \
                 FROM projection_checkpoints c JOIN projection_generations g \
                   ON g.projection = c.projection AND g.generation = c.generation \
                 WHERE g.status = 'live' AND c.tenant_id = $1",
            )
            .await
            .map_err(map_db)?;
        let rows = client
            .query(&statement, &[&tenant.as_uuid()])
            .await
            .map_err(map_db)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Position {
                        tx: r.get(1),
                        seq: r.get(2),
                    },
                )
            })
            .collect())
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
        self.query_docs(
            "SELECT key, doc FROM projection_docs \
                 WHERE projection = $1 AND generation = $2 AND tenant_id = $3 \
                   AND key = ANY($4::text[])",
            &[&projection, &generation, &tenant.as_uuid(), &keys],
        )
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_db)?;
        let tenant_id = tenant.as_uuid();
        // The generation row, shared: a concurrent promote or drop waits for
        // this batch, and a dropped generation is noticed here.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM projection_generations \
                 WHERE projection = $1 AND generation = $2 FOR SHARE",
                &[&projection, &generation],
            )
            .await
            .map_err(map_db)?;
        if exists.is_none() {
            return Err(StoreError::NoSuchGeneration {
                projection: projection.to_owned(),
                generation,
            });
        }
        tx.execute(
            "INSERT INTO projection_checkpoints \
               (projection, generation, tenant_id, position_tx, position_seq) \
             VALUES ($1, $2, $3, 0, 0) ON CONFLICT DO NOTHING",
            &[&projection, &generation, &tenant_id],
        )
        .await
        .map_err(map_db)?;
        let row = tx
            .query_one(
                "SELECT position_tx, position_seq FROM projection_checkpoints \
                 WHERE projection = $1 AND generation = $2 AND tenant_id = $3 FOR UPDATE",
                &[&projection, &generation, &tenant_id],
            )
            .await
            .map_err(map_db)?;
        let current = Position {
            tx: row.get(0),
            seq: row.get(1),
        };
        if current != expected {
            return Err(StoreError::CheckpointMoved {
                projection: projection.to_owned(),
            });
        }
        let (inserts, rest): (Vec<&DocWrite>, Vec<&DocWrite>) =
            writes.iter().partition(|w| w.is_new && w.doc.is_some());
        let (upserts, deletes): (Vec<&DocWrite>, Vec<&DocWrite>) =
            rest.into_iter().partition(|w| w.doc.is_some());
        if !inserts.is_empty() {
            // COPY: a rebuild writes mostly new documents, and a binary COPY
            // is the cheapest way for PostgreSQL to take rows.
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::Type;
            let sink = tx
                .copy_in(
                    "COPY projection_docs (projection, generation, tenant_id, key, index_key, doc) \
                     FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(map_db)?;
            let writer = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::TEXT,
                    Type::INT8,
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                ],
            );
            futures::pin_mut!(writer);
            for w in inserts {
                writer
                    .as_mut()
                    .write(&[
                        &projection,
                        &generation,
                        &tenant_id,
                        &w.key,
                        &w.index_key,
                        &w.doc,
                    ])
                    .await
                    .map_err(map_db)?;
            }
            writer.finish().await.map_err(map_db)?;
        }
        if !upserts.is_empty() {
            let keys: Vec<&str> = upserts.iter().map(|w| w.key.as_str()).collect();
            let index_keys: Vec<Option<&str>> =
                upserts.iter().map(|w| w.index_key.as_deref()).collect();
            let docs: Vec<&str> = upserts.iter().filter_map(|w| w.doc.as_deref()).collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO projection_docs \
                       (projection, generation, tenant_id, key, index_key, doc) \
                     SELECT $1, $2, $3, u.key, u.index_key, u.doc \
                     FROM unnest($4::text[], $5::text[], $6::text[]) AS u(key, index_key, doc) \
                     ON CONFLICT (projection, generation, tenant_id, key) \
                     DO UPDATE SET index_key = excluded.index_key, doc = excluded.doc",
                )
                .await
                .map_err(map_db)?;
            tx.execute(
                &statement,
                &[
                    &projection,
                    &generation,
                    &tenant_id,
                    &keys,
                    &index_keys,
                    &docs,
                ],
            )
            .await
            .map_err(map_db)?;
        }
        if !deletes.is_empty() {
            let keys: Vec<&str> = deletes.iter().map(|w| w.key.as_str()).collect();
            tx.execute(
                "DELETE FROM projection_docs WHERE projection = $1 AND generation = $2 \
                   AND tenant_id = $3 AND key = ANY($4::text[])",
                &[&projection, &generation, &tenant_id, &keys],
            )
            .await
            .map_err(map_db)?;
        }
        tx.execute(
            "UPDATE projection_checkpoints \
             SET position_tx = $4, position_seq = $5, events = events + $6, updated_at = now() \
             WHERE projection = $1 AND generation = $2 AND tenant_id = $3",
            &[
                &projection,
                &generation,
                &tenant_id,
                &to.tx,
                &to.seq,
                &events,
            ],
        )
        .await
        .map_err(map_db)?;
        tx.commit().await.map_err(map_db)
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
        self.query_docs(
            concat!(
                "SELECT key, doc FROM projection_docs \
                 WHERE projection = $1 AND generation = ",
                live!(),
                " AND tenant_id = $2 AND key = ANY($3::text[]) ORDER BY key"
            ),
            &[&projection, &tenant.as_uuid(), &keys],
        )
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_docs(
            concat!(
                "SELECT key, doc FROM projection_docs \
                 WHERE projection = $1 AND generation = ",
                live!(),
                " AND tenant_id = $2 AND key >= $3 AND starts_with(key, $3) \
                   AND ($4::text IS NULL OR key > $4) \
                 ORDER BY key LIMIT $5"
            ),
            &[&projection, &tenant.as_uuid(), &prefix, &after, &limit],
        )
        .await
    }

    async fn live_by_index(
        &self,
        projection: &str,
        tenant: TenantId,
        index_key: &str,
    ) -> StoreResult<Vec<DocRow>> {
        self.query_docs(
            concat!(
                "SELECT key, doc FROM projection_docs \
                 WHERE projection = $1 AND generation = ",
                live!(),
                " AND tenant_id = $2 AND index_key = $3 ORDER BY key"
            ),
            &[&projection, &tenant.as_uuid(), &index_key],
        )
        .await
    }

    async fn diff_generations(
        &self,
        projection: &str,
        left: i64,
        right: i64,
        limit: usize,
    ) -> StoreResult<Vec<DocDifference>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT coalesce(l.tenant_id, r.tenant_id) AS tenant_id, \
                        coalesce(l.key, r.key) AS key, l.doc, r.doc \
                 FROM (SELECT * FROM projection_docs WHERE projection = $1 AND generation = $2) l \
                 FULL JOIN (SELECT * FROM projection_docs WHERE projection = $1 AND generation = $3) r \
                   ON l.tenant_id = r.tenant_id AND l.key = r.key \
                 WHERE l.doc IS DISTINCT FROM r.doc OR l.index_key IS DISTINCT FROM r.index_key \
                 ORDER BY 1, 2 LIMIT $4",
                &[&projection, &left, &right, &limit],
            )
            .await
            .map_err(map_db)?;
        Ok(rows
            .iter()
            .map(|r| DocDifference {
                tenant: TenantId::from_uuid(r.get::<_, Uuid>(0)),
                key: r.get(1),
                left: r.get(2),
                right: r.get(3),
            })
            .collect())
    }

    async fn try_lead(&self, projection: &str) -> StoreResult<Option<Lease>> {
        // A connection of its own: a session advisory lock lives as long as
        // the session, so the lease ends when this process or its
        // connection dies, and another instance's runner takes over.
        let mut config = self.config.clone();
        config.application_name("buktor-projection-lease");
        let (client, connection) = config.connect(NoTls).await.map_err(map_db)?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&alive);
        let name = projection.to_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(projection = %name, error = %e, "projection lease connection failed");
            }
            flag.store(false, Ordering::Release);
        });
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lease_key(projection)])
            .await
            .map_err(map_db)?;
        if row.get::<_, bool>(0) {
            Ok(Some(Lease::new(alive, Box::new(client))))
        } else {
            Ok(None)
        }
    }
}
