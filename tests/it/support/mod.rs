//! Helpers shared by the integration tests: a fresh database per test.
//!
//! PostgreSQL tests share one throwaway cluster per run (started by
//! `scripts/test`) and each gets its own database, dropped afterwards. SQLite
//! tests get a file in their own temporary directory.
#![allow(dead_code)]

pub mod pg;
pub mod receiver;

use std::path::PathBuf;

/// A SQLite database path in a temporary directory that is removed when this
/// is dropped. The file itself does not exist yet.
pub struct TestSqlite {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn fresh_sqlite_path() -> TestSqlite {
    let dir = tempfile::Builder::new()
        .prefix("buktor-test-")
        .tempdir()
        .expect("cannot create a temporary directory for a SQLite test database");
    TestSqlite {
        path: dir.path().join("nested").join("buktor.db"),
        _dir: dir,
    }
}
