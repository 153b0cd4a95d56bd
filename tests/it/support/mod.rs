//! Helpers shared by the integration tests: a fresh database per test.
//!
//! PostgreSQL tests share one throwaway cluster per run (started by
//! `scripts/test`) and each gets its own database, dropped afterwards. SQLite
//! tests get a file in their own temporary directory.
#![allow(dead_code)]

pub mod pg;
pub mod receiver;
pub mod smtp;

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

/// One test per case and backend: `mod postgres { case… }` on a fresh
/// database of the test cluster, `mod sqlite { case… }` on a fresh file.
/// Each case is `async fn case<S: Store>(store: &S)` in the calling module,
/// beside an `async fn postgres_store(&TestDb) -> PostgresStore`.
macro_rules! for_both_stores {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = crate::support::pg::fresh_database().await;
                    let store = super::postgres_store(&db).await;
                    super::$case(&store).await;
                    drop(store);
                    db.drop_db().await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let file = crate::support::fresh_sqlite_path();
                    let store = buktor::store::sqlite::SqliteStore::open(&file.path)
                        .expect("open the test database");
                    super::$case(&store).await;
                }
            )*
        }
    };
}
pub(crate) use for_both_stores;
