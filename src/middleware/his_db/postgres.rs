//! The HIS database on PostgreSQL.
//!
//! Parameters carry explicit casts (`$1::text`, `$2::int8`, …) so that each
//! value is sent as the type the mapping names and PostgreSQL converts it to
//! the column's own type by assignment (e.g. `int8` into an `integer`
//! column, `timestamptz` into `timestamp`).
//!
//! A batch is sent pipelined in one transaction. If PostgreSQL refuses a
//! row's data (SQLSTATE class 22, data exception, or 23, integrity
//! constraint), the transaction is rolled back, that row is reported, and
//! the rest of the batch is sent again, until a transaction commits: the
//! batch's good rows are always committed together, in one transaction
//! (no savepoints), at the cost of one more round trip per refused row.
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use super::{create_table_sql, upsert_sql, HisDatabase, RowResult, Unavailable, Value};
use crate::config::Secret;
use crate::middleware::mapping::{ColumnType, Mapping};

pub struct PgHis {
    url: Secret,
    connect_timeout: Duration,
    connection: Option<Connected>,
}

struct Connected {
    client: Client,
    upsert: Statement,
    /// The mapping the statement was prepared for.
    mapping: Mapping,
}

fn cast(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "int8",
        ColumnType::Boolean => "bool",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Date => "date",
        ColumnType::Uuid => "uuid",
        ColumnType::Json => "jsonb",
    }
}

fn column_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "bigint",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Date => "date",
        ColumnType::Uuid => "uuid",
        ColumnType::Json => "jsonb",
    }
}

fn param(value: &Value) -> &(dyn ToSql + Sync) {
    match value {
        Value::Text(v) => v,
        Value::Integer(v) => v,
        Value::Boolean(v) => v,
        Value::Timestamp(v) => v,
        Value::Date(v) => v,
        Value::Uuid(v) => v,
        Value::Json(v) => v,
    }
}

/// A refusal of one row's data, as opposed to the database or connection failing.
fn rejects_row(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| code.code().starts_with("22") || code.code().starts_with("23"))
}

impl PgHis {
    pub fn new(url: Secret, connect_timeout: Duration) -> PgHis {
        PgHis {
            url,
            connect_timeout,
            connection: None,
        }
    }

    async fn connect(&self, mapping: &Mapping) -> Result<Connected, Unavailable> {
        let mut config = tokio_postgres::Config::from_str(self.url.expose())
            .map_err(|e| Unavailable::chain("the HIS database URL", &e))?;
        config
            .connect_timeout(self.connect_timeout)
            .application_name("buktor-middleware");
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            Unavailable::chain(&format!("cannot connect to {}", self.url.redacted()), &e)
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the HIS database connection ended");
            }
        });
        if mapping.create_table {
            client
                .batch_execute(&create_table_sql(mapping, |c| column_type(c.ty)))
                .await
                .map_err(|e| {
                    Unavailable::chain(&format!("cannot create table {}", mapping.table), &e)
                })?;
        }
        let sql = upsert_sql(mapping, |i, c| format!("${i}::{}", cast(c.ty)));
        let upsert = client.prepare(&sql).await.map_err(|e| {
            Unavailable::chain(
                &format!("cannot prepare the upsert into {}", mapping.table),
                &e,
            )
        })?;
        Ok(Connected {
            client,
            upsert,
            mapping: mapping.clone(),
        })
    }
}

#[async_trait]
impl HisDatabase for PgHis {
    async fn ready(
        &mut self,
        mapping: &Mapping,
        health_query: Option<&str>,
    ) -> Result<(), Unavailable> {
        let stale = match &self.connection {
            None => true,
            Some(c) => c.client.is_closed() || c.mapping != *mapping,
        };
        if stale {
            self.connection = None;
            self.connection = Some(self.connect(mapping).await?);
        }
        let Some(connected) = &self.connection else {
            unreachable!("connected just above");
        };
        if let Some(query) = health_query {
            let answer = connected.client.simple_query(query).await;
            let rows = match answer {
                Ok(messages) => messages
                    .iter()
                    .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                    .count(),
                Err(e) => {
                    if connected.client.is_closed() {
                        self.connection = None;
                    }
                    return Err(Unavailable::chain("the health query failed", &e));
                }
            };
            if rows == 0 {
                return Err(Unavailable("the health query returned no row".into()));
            }
        }
        Ok(())
    }

    async fn write_batch(
        &mut self,
        mapping: &Mapping,
        rows: &[Vec<Value>],
    ) -> Result<Vec<RowResult>, Unavailable> {
        self.ready(mapping, None).await?;
        let Some(connected) = self.connection.as_mut() else {
            unreachable!("ready connects");
        };
        let result = write(connected, rows).await;
        if result.is_err() && connected.client.is_closed() {
            self.connection = None;
        }
        result
    }

    fn reset(&mut self) {
        self.connection = None;
    }
}

async fn write(
    connected: &mut Connected,
    rows: &[Vec<Value>],
) -> Result<Vec<RowResult>, Unavailable> {
    let unavailable = |e: tokio_postgres::Error| Unavailable::chain("writing a batch", &e);
    let statement = connected.upsert.clone();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = rows
        .iter()
        .map(|row| row.iter().map(param).collect())
        .collect();
    let mut results = vec![RowResult::Written; rows.len()];
    let mut remaining: Vec<usize> = (0..rows.len()).collect();
    while !remaining.is_empty() {
        let tx = connected.client.transaction().await.map_err(unavailable)?;
        let outcomes = join_all(
            remaining
                .iter()
                .map(|&i| tx.execute(&statement, &params[i])),
        )
        .await;
        // Statements after a failed one only report the aborted transaction:
        // the first error in order is the one that counts.
        let first_error = outcomes
            .into_iter()
            .enumerate()
            .find_map(|(k, r)| r.err().map(|e| (k, e)));
        match first_error {
            None => {
                tx.commit().await.map_err(unavailable)?;
                break;
            }
            Some((k, e)) if rejects_row(&e) => {
                tx.rollback().await.map_err(unavailable)?;
                let detail = e.as_db_error().map_or_else(
                    || e.to_string(),
                    |db| {
                        format!(
                            "the HIS database refused the row ({}): {}",
                            db.code().code(),
                            db.message()
                        )
                    },
                );
                tracing::info!(error = %detail, "the HIS database refused a row; writing the rest of its batch again");
                results[remaining.remove(k)] = RowResult::Rejected(detail);
            }
            Some((_, e)) => return Err(unavailable(e)),
        }
    }
    Ok(results)
}
