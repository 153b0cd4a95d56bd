//! The HIS database on SQLite: the second implementation of the trait, and
//! a small HIS's real option. Timestamps are stored as RFC 3339 UTC text,
//! dates as `YYYY-MM-DD`, UUIDs and JSON as text.
//!
//! A batch is one `BEGIN IMMEDIATE` transaction; a statement SQLite refuses
//! for its data (a constraint) fails alone, the rest of the batch commits.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode};

use super::{create_table_sql, upsert_sql, HisDatabase, RowResult, Unavailable, Value};
use crate::middleware::mapping::{ColumnType, Mapping};

pub struct SqliteHis {
    path: PathBuf,
    connection: Option<Arc<Mutex<Connection>>>,
}

fn column_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer | ColumnType::Boolean => "INTEGER",
        _ => "TEXT",
    }
}

fn to_sql(value: &Value) -> SqlValue {
    let text = |t: Option<String>| t.map_or(SqlValue::Null, SqlValue::Text);
    match value {
        Value::Text(v) => text(v.clone()),
        Value::Integer(v) => v.map_or(SqlValue::Null, SqlValue::Integer),
        Value::Boolean(v) => v.map_or(SqlValue::Null, |b| SqlValue::Integer(i64::from(b))),
        Value::Timestamp(v) => text(v.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))),
        Value::Date(v) => text(v.map(|d| d.format("%Y-%m-%d").to_string())),
        Value::Uuid(v) => text(v.map(|u| u.hyphenated().to_string())),
        Value::Json(v) => text(v.as_ref().map(|j| j.to_string())),
    }
}

fn unavailable(context: &str) -> impl Fn(rusqlite::Error) -> Unavailable + '_ {
    move |e| Unavailable::chain(context, &e)
}

impl SqliteHis {
    pub fn new(path: PathBuf) -> SqliteHis {
        SqliteHis {
            path,
            connection: None,
        }
    }

    fn connection(&mut self, mapping: &Mapping) -> Result<Arc<Mutex<Connection>>, Unavailable> {
        if let Some(c) = &self.connection {
            return Ok(c.clone());
        }
        let context = format!("cannot open {}", self.path.display());
        let conn = Connection::open(&self.path).map_err(unavailable(&context))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(unavailable(&context))?;
        if mapping.create_table {
            conn.execute_batch(&create_table_sql(mapping, |c| column_type(c.ty)))
                .map_err(unavailable("cannot create the table"))?;
        }
        let conn = Arc::new(Mutex::new(conn));
        self.connection = Some(conn.clone());
        Ok(conn)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Unavailable> + Send + 'static,
) -> Result<T, Unavailable> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Unavailable(format!("the SQLite task failed: {e}")))?
}

#[async_trait]
impl HisDatabase for SqliteHis {
    async fn ready(
        &mut self,
        mapping: &Mapping,
        health_query: Option<&str>,
    ) -> Result<(), Unavailable> {
        let conn = self.connection(mapping)?;
        let sql = upsert_sql(mapping, |i, _| format!("?{i}"));
        let health = health_query.map(str::to_owned);
        blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.prepare_cached(&sql)
                .map_err(unavailable("cannot prepare the upsert"))?;
            if let Some(query) = health {
                let mut stmt = conn
                    .prepare(&query)
                    .map_err(unavailable("the health query failed"))?;
                let has_row = stmt
                    .query([])
                    .and_then(|mut rows| rows.next().map(|r| r.is_some()))
                    .map_err(unavailable("the health query failed"))?;
                if !has_row {
                    return Err(Unavailable("the health query returned no row".into()));
                }
            }
            Ok(())
        })
        .await
    }

    async fn write_batch(
        &mut self,
        mapping: &Mapping,
        rows: &[Vec<Value>],
    ) -> Result<Vec<RowResult>, Unavailable> {
        let conn = self.connection(mapping)?;
        let sql = upsert_sql(mapping, |i, _| format!("?{i}"));
        let rows: Vec<Vec<SqlValue>> = rows
            .iter()
            .map(|row| row.iter().map(to_sql).collect())
            .collect();
        blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let failed = unavailable("writing a batch");
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(&failed)?;
            let mut results = Vec::with_capacity(rows.len());
            {
                let mut stmt = tx.prepare_cached(&sql).map_err(&failed)?;
                for row in &rows {
                    match stmt.execute(rusqlite::params_from_iter(row)) {
                        Ok(_) => results.push(RowResult::Written),
                        Err(rusqlite::Error::SqliteFailure(e, message))
                            if e.code == ErrorCode::ConstraintViolation =>
                        {
                            results.push(RowResult::Rejected(format!(
                                "the HIS database refused the row: {}",
                                message.unwrap_or_else(|| e.to_string())
                            )));
                        }
                        Err(e) => return Err(failed(e)),
                    }
                }
            }
            tx.commit().map_err(&failed)?;
            Ok(results)
        })
        .await
    }

    fn reset(&mut self) {
        self.connection = None;
    }
}
