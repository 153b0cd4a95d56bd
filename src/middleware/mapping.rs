//! The mapping file: which HIS table a message goes into and which payload
//! field goes into which column, with what type.
//!
//! ```toml
//! table = "his_appointments"          # may be schema-qualified: "his.appointments"
//! create_table = false                 # true: CREATE TABLE IF NOT EXISTS at first connection
//! types = ["appointment.*"]            # the default; other types are `ignored`
//!
//! [key]                                # the upsert key: unique in the table
//! column = "buktor_appointment_id"
//! field = "data.appointment.id"        # the default
//!
//! [version]                            # newer state has a higher one; never overwritten by a lower
//! column = "buktor_version"
//! field = "data.appointment.version"   # the default
//!
//! [[columns]]
//! column = "patient_id"
//! field = "data.appointment.patient.hisPatientId"   # dotted path, or a JSON pointer "/data/…"
//! type = "text"                        # text | integer | boolean | timestamp | date | uuid | json
//! nullable = false                     # the default: a missing or null value fails the message
//! ```
//!
//! Names are used exactly as written (quoted), so write them as the table
//! has them; PostgreSQL keeps unquoted names in lower case.
use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    table: String,
    #[serde(default)]
    create_table: bool,
    #[serde(default = "default_types")]
    types: Vec<String>,
    key: KeyFile,
    version: VersionFile,
    #[serde(default)]
    columns: Vec<ColumnFile>,
}

fn default_types() -> Vec<String> {
    vec!["appointment.*".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    column: String,
    #[serde(default = "default_key_field")]
    field: String,
    #[serde(default = "default_key_type", rename = "type")]
    ty: ColumnType,
}

fn default_key_field() -> String {
    "data.appointment.id".into()
}
fn default_key_type() -> ColumnType {
    ColumnType::Text
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    column: String,
    #[serde(default = "default_version_field")]
    field: String,
}

fn default_version_field() -> String {
    "data.appointment.version".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    column: String,
    field: String,
    #[serde(rename = "type")]
    ty: ColumnType,
    #[serde(default)]
    nullable: bool,
}

/// A column's SQL type, as the mapping names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    /// 64-bit; a JSON integer.
    Integer,
    Boolean,
    /// An RFC 3339 string, stored as an instant (`timestamptz` in PostgreSQL).
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
    /// A UUID string, for HIS tables with `uuid` columns (text in SQLite).
    Uuid,
    /// Any JSON value, stored as `jsonb` in PostgreSQL and text in SQLite.
    Json,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
            ColumnType::Uuid => "uuid",
            ColumnType::Json => "json",
        }
    }
}

/// A payload field and the column it goes into.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The field as the mapping wrote it, for messages.
    pub field: String,
    /// The field as a JSON pointer.
    pointer: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// A table name, possibly schema-qualified; each part is quoted when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(Vec<String>);

impl TableName {
    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// `"schema"."table"`.
    pub fn quoted(&self) -> String {
        self.0
            .iter()
            .map(|p| quote(p))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// An identifier in double quotes (names are checked to hold no quote).
pub fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// A parsed mapping file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub table: TableName,
    pub create_table: bool,
    types: Vec<String>,
    /// The upsert key column.
    pub key: Column,
    /// The version column (integer, never null).
    pub version: Column,
    /// The other columns.
    pub columns: Vec<Column>,
}

#[derive(Debug, thiserror::Error)]
pub enum MappingFileError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Rule(String),
}

/// Why a message cannot be written: permanent, the message becomes `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{field} (column {column}) is missing or null")]
    Missing { field: String, column: String },
    #[error("{field} (column {column}) is {found}, the column wants {wants}")]
    WrongType {
        field: String,
        column: String,
        found: String,
        wants: &'static str,
    },
}

/// One cell, typed by its column; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Integer(Option<i64>),
    Boolean(Option<bool>),
    Timestamp(Option<DateTime<Utc>>),
    Date(Option<NaiveDate>),
    Uuid(Option<uuid::Uuid>),
    Json(Option<Json>),
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Mapping, MappingFileError> {
        Mapping::parse(&std::fs::read_to_string(path)?)
    }

    pub fn parse(text: &str) -> Result<Mapping, MappingFileError> {
        let file: MappingFile = toml::from_str(text)?;
        let rule = |m: String| MappingFileError::Rule(m);
        let table = file
            .table
            .split('.')
            .map(|p| identifier(p).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| rule(format!("table: {e}")))?;
        if table.len() > 2 {
            return Err(rule("table: at most schema.table".into()));
        }
        if file.types.is_empty() {
            return Err(rule(
                "types: name at least one type, e.g. \"appointment.*\"".into(),
            ));
        }
        let key = column(&file.key.column, &file.key.field, file.key.ty, false)
            .map_err(|e| rule(format!("key: {e}")))?;
        if matches!(file.key.ty, ColumnType::Json | ColumnType::Boolean) {
            return Err(rule(
                "key: type must be text, integer, uuid, timestamp or date".into(),
            ));
        }
        let version = column(
            &file.version.column,
            &file.version.field,
            ColumnType::Integer,
            false,
        )
        .map_err(|e| rule(format!("version: {e}")))?;
        let columns = file
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                column(&c.column, &c.field, c.ty, c.nullable)
                    .map_err(|e| rule(format!("columns[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = HashSet::new();
        for c in std::iter::once(&key).chain([&version]).chain(&columns) {
            if !seen.insert(c.name.as_str()) {
                return Err(rule(format!("column {} is mapped twice", c.name)));
            }
        }
        Ok(Mapping {
            table: TableName(table),
            create_table: file.create_table,
            types: file.types,
            key,
            version,
            columns,
        })
    }

    /// Whether messages of this type go into the table.
    pub fn covers(&self, event_type: &str) -> bool {
        self.types.iter().any(|pattern| {
            pattern == "*"
                || pattern == event_type
                || pattern
                    .strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
        })
    }

    /// Key, version, then the other columns, in that order.
    pub fn all_columns(&self) -> impl Iterator<Item = &Column> {
        std::iter::once(&self.key)
            .chain(std::iter::once(&self.version))
            .chain(self.columns.iter())
    }

    /// The row for one message, in [`Self::all_columns`] order.
    pub fn row(&self, payload: &Json) -> Result<Vec<Value>, MappingError> {
        self.all_columns().map(|c| c.extract(payload)).collect()
    }
}

impl Column {
    fn extract(&self, payload: &Json) -> Result<Value, MappingError> {
        let found = payload.pointer(&self.pointer).filter(|v| !v.is_null());
        let Some(found) = found else {
            if self.nullable {
                return Ok(null_of(self.ty));
            }
            return Err(MappingError::Missing {
                field: self.field.clone(),
                column: self.name.clone(),
            });
        };
        let wrong = || MappingError::WrongType {
            field: self.field.clone(),
            column: self.name.clone(),
            found: describe(found),
            wants: self.ty.name(),
        };
        Ok(match self.ty {
            ColumnType::Text => Value::Text(Some(match found {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
                _ => return Err(wrong()),
            })),
            ColumnType::Integer => Value::Integer(Some(found.as_i64().ok_or_else(wrong)?)),
            ColumnType::Boolean => Value::Boolean(Some(found.as_bool().ok_or_else(wrong)?)),
            ColumnType::Timestamp => Value::Timestamp(Some(
                found
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .ok_or_else(wrong)?
                    .with_timezone(&Utc),
            )),
            ColumnType::Date => Value::Date(Some(
                found
                    .as_str()
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    .ok_or_else(wrong)?,
            )),
            ColumnType::Uuid => Value::Uuid(Some(
                found
                    .as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .ok_or_else(wrong)?,
            )),
            ColumnType::Json => Value::Json(Some(found.clone())),
        })
    }
}

fn null_of(ty: ColumnType) -> Value {
    match ty {
        ColumnType::Text => Value::Text(None),
        ColumnType::Integer => Value::Integer(None),
        ColumnType::Boolean => Value::Boolean(None),
        ColumnType::Timestamp => Value::Timestamp(None),
        ColumnType::Date => Value::Date(None),
        ColumnType::Uuid => Value::Uuid(None),
        ColumnType::Json => Value::Json(None),
    }
}

fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.chars().count() > 40 => "a string".into(),
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

fn identifier(name: &str) -> Result<&str, String> {
    if name.trim().is_empty() || name.len() > 63 {
        return Err(format!("{name:?} is not a name of 1 to 63 bytes"));
    }
    if name.contains(['"', '\0']) || name.trim() != name {
        return Err(format!(
            "{name:?}: names hold no double quote, NUL or edge spaces"
        ));
    }
    Ok(name)
}

fn column(name: &str, field: &str, ty: ColumnType, nullable: bool) -> Result<Column, String> {
    identifier(name)?;
    Ok(Column {
        name: name.to_owned(),
        field: field.to_owned(),
        pointer: pointer(field)?,
        ty,
        nullable,
    })
}

/// A dotted path (`data.appointment.id`) or a JSON pointer (`/data/appointment/id`)
/// as a JSON pointer.
fn pointer(field: &str) -> Result<String, String> {
    if field.starts_with('/') {
        return Ok(field.to_owned());
    }
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(format!(
            "field {field:?} is not a dotted path like data.appointment.id or a JSON pointer like /data/appointment/id"
        ));
    }
    Ok(field
        .split('.')
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAPPING: &str = r#"
table = "his.appointments"
[key]
column = "appointment_id"
[version]
column = "version"
[[columns]]
column = "patient_id"
field = "data.appointment.patient.hisPatientId"
type = "text"
[[columns]]
column = "starts_at"
field = "/data/appointment/start"
type = "timestamp"
[[columns]]
column = "note"
field = "data.appointment.note"
type = "text"
nullable = true
[[columns]]
column = "day"
field = "data.appointment.calendarDay"
type = "date"
[[columns]]
column = "minutes"
field = "data.appointment.service.durationMinutes"
type = "integer"
"#;

    fn body() -> Json {
        json!({"type": "appointment.booked", "version": 1, "data": {"appointment": {
            "id": "a1", "version": 3, "start": "2026-11-26T09:00:00+01:00", "note": null,
            "calendarDay": "2026-11-26", "patient": {"hisPatientId": "P-1"},
            "service": {"durationMinutes": 20}}}})
    }

    #[test]
    fn a_body_becomes_a_typed_row() {
        let m = Mapping::parse(MAPPING).unwrap();
        assert_eq!(m.table.quoted(), "\"his\".\"appointments\"");
        let row = m.row(&body()).unwrap();
        assert_eq!(
            row,
            vec![
                Value::Text(Some("a1".into())),
                Value::Integer(Some(3)),
                Value::Text(Some("P-1".into())),
                Value::Timestamp(Some(
                    DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
                        .unwrap()
                        .with_timezone(&Utc)
                )),
                Value::Text(None),
                Value::Date(Some(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap())),
                Value::Integer(Some(20)),
            ]
        );
        assert!(m.covers("appointment.cancelled"));
        assert!(!m.covers("schedule.changed"));
        assert!(!m.covers("appointmentX"));
    }

    #[test]
    fn a_missing_or_mistyped_field_is_an_error_naming_it() {
        let m = Mapping::parse(MAPPING).unwrap();
        let mut b = body();
        b["data"]["appointment"]["patient"]["hisPatientId"] = Json::Null;
        assert_eq!(
            m.row(&b).unwrap_err(),
            MappingError::Missing {
                field: "data.appointment.patient.hisPatientId".into(),
                column: "patient_id".into()
            }
        );
        let mut b = body();
        b["data"]["appointment"]["service"]["durationMinutes"] = json!("20");
        let err = m.row(&b).unwrap_err().to_string();
        assert!(
            err.contains("durationMinutes") && err.contains("integer"),
            "{err}"
        );
    }

    #[test]
    fn bad_mapping_files_are_refused() {
        for (bad, says) in [
            (MAPPING.replace("his.appointments", "a\"b"), "table"),
            (MAPPING.replace("\"note\"", "\"patient_id\""), "twice"),
            (
                MAPPING.replace("type = \"date\"", "type = \"float\""),
                "float",
            ),
            (
                MAPPING.replace("/data/appointment/start", "data..start"),
                "columns[1]",
            ),
        ] {
            let err = Mapping::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
