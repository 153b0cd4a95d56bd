//! The HIS's SQL database, behind one trait so that the sync does not care
//! which database it is: PostgreSQL ([`postgres::PgHis`]) and SQLite
//! ([`sqlite::SqliteHis`]).
//!
//! Both write a batch in one transaction with the same upsert: insert the
//! row, or on a conflict on the key column update it only if the stored
//! version is lower than the message's, so an older event never overwrites
//! a newer state and writing the same message twice changes nothing.
use async_trait::async_trait;

use super::config::{HisDbSettings, HisDbUrl};
use super::mapping::{quote, Column, Mapping};

pub mod postgres;
pub mod sqlite;

pub use super::mapping::Value;

/// How one row of a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowResult {
    /// Upserted, or left alone because the table holds a newer version.
    Written,
    /// The database refused this row's data (a data exception or a
    /// constraint): permanent, the rest of the batch is still written.
    Rejected(String),
}

/// The database could not take the batch at all (down, unreachable, the
/// table missing, a timeout): nothing of the batch was written; retry later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    /// `context: cause: cause's cause…`, the whole chain in one line.
    pub fn chain(context: &str, error: &(dyn std::error::Error + 'static)) -> Unavailable {
        let mut text = format!("{context}: {error}");
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        Unavailable(text)
    }
}

#[async_trait]
pub trait HisDatabase: Send {
    /// Connects if not connected, creates the table if the mapping says so,
    /// prepares the upsert, and runs the health query if there is one (it
    /// must succeed and return a row).
    async fn ready(
        &mut self,
        mapping: &Mapping,
        health_query: Option<&str>,
    ) -> Result<(), Unavailable>;

    /// Upserts `rows` (in [`Mapping::all_columns`] order) in one
    /// transaction: one result per row, or an error and nothing written.
    async fn write_batch(
        &mut self,
        mapping: &Mapping,
        rows: &[Vec<Value>],
    ) -> Result<Vec<RowResult>, Unavailable>;

    /// Forgets the connection (after a timeout): the next call reconnects.
    fn reset(&mut self);
}

/// The database `settings` name, not yet connected.
pub fn open(settings: &HisDbSettings) -> Box<dyn HisDatabase> {
    match &settings.url {
        HisDbUrl::Postgres(url) => {
            Box::new(postgres::PgHis::new(url.clone(), settings.connect_timeout))
        }
        HisDbUrl::Sqlite(path) => Box::new(sqlite::SqliteHis::new(path.clone())),
    }
}

/// The upsert with the version check, with placeholders from `placeholder(index, column)`.
fn upsert_sql(mapping: &Mapping, placeholder: impl Fn(usize, &Column) -> String) -> String {
    let columns: Vec<&Column> = mapping.all_columns().collect();
    let names = columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let values = columns
        .iter()
        .enumerate()
        .map(|(i, c)| placeholder(i + 1, c))
        .collect::<Vec<_>>()
        .join(", ");
    let updates = columns
        .iter()
        .skip(1)
        .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} AS target ({names}) VALUES ({values}) \
         ON CONFLICT ({key}) DO UPDATE SET {updates} \
         WHERE target.{version} < EXCLUDED.{version}",
        table = mapping.table.quoted(),
        key = quote(&mapping.key.name),
        version = quote(&mapping.version.name),
    )
}

/// `CREATE TABLE IF NOT EXISTS` with the key as primary key.
fn create_table_sql(mapping: &Mapping, sql_type: impl Fn(&Column) -> &'static str) -> String {
    let columns = mapping
        .all_columns()
        .enumerate()
        .map(|(i, c)| {
            let constraint = match i {
                0 => " PRIMARY KEY",
                _ if !c.nullable => " NOT NULL",
                _ => "",
            };
            format!("{} {}{constraint}", quote(&c.name), sql_type(c))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({columns})",
        mapping.table.quoted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_updates_only_from_a_lower_version() {
        let mapping = Mapping::parse(
            "table = \"his.appts\"\n[key]\ncolumn = \"id\"\n[version]\ncolumn = \"v\"\n\
             [[columns]]\ncolumn = \"end\"\nfield = \"data.appointment.end\"\ntype = \"timestamp\"\n",
        )
        .unwrap();
        assert_eq!(
            upsert_sql(&mapping, |i, _| format!("${i}")),
            "INSERT INTO \"his\".\"appts\" AS target (\"id\", \"v\", \"end\") VALUES ($1, $2, $3) \
             ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\", \"end\" = EXCLUDED.\"end\" \
             WHERE target.\"v\" < EXCLUDED.\"v\""
        );
    }
}
