//! A private PostgreSQL database per test.
//!
//! `BUKTOR_TEST_DATABASE_URL` names an admin connection to a throwaway
//! cluster (`scripts/test` starts one on 127.0.0.1 and sets it). Each
//! [`fresh_database`] creates a uniquely named database there and drops it
//! again, with `WITH (FORCE)` so connections a failed test left open do not
//! keep it alive.
use tokio_postgres::NoTls;
use uuid::Uuid;

pub const URL_VARIABLE: &str = "BUKTOR_TEST_DATABASE_URL";

/// A database that exists until [`TestDb::drop_db`] is awaited or the value
/// is dropped (also when a test panics).
pub struct TestDb {
    /// Connection URL of this test's database.
    pub url: String,
    pub name: String,
    admin_url: String,
    dropped: bool,
}

/// The admin URL of the test cluster. Panics, rather than letting a test
/// pass without a database, when it is not set.
pub fn admin_url() -> String {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{URL_VARIABLE} is not set: PostgreSQL tests need a throwaway cluster. \
             Run the suite with `scripts/test`, which starts one and sets the variable \
             (or set it yourself to an admin URL such as postgres://postgres@127.0.0.1:5432/postgres \
             of a cluster whose databases may be created and dropped)."
        ),
    }
}

pub async fn fresh_database() -> TestDb {
    let admin_url = admin_url();
    let name = format!("buktor_test_{}", Uuid::new_v4().simple());
    let admin = connect(&admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    TestDb {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
        dropped: false,
    }
}

impl TestDb {
    /// Drops the database now. Prefer this at the end of a test: it reports
    /// a failure to drop, which `Drop` can only print.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name)
            .await
            .unwrap_or_else(|e| panic!("cannot drop test database {}: {e}", self.name));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime (where blocking on another future
        // panics), so the async work gets a thread and a runtime of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(drop_database(&admin_url, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster at {URL_VARIABLE}: {e}"));
    tokio::spawn(connection);
    client
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls).await?;
    let connection = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    drop(client);
    let _ = connection.await;
    result
}

/// `url` with its database replaced by `name`. Accepts URLs
/// (`postgres://user@host:port/db?opts`) and key/value strings
/// (`host=... dbname=...`, where a later `dbname` wins).
pub fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={name}");
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|i| &rest[authority_end + i..])
        .unwrap_or("");
    format!("{}/{name}{query}", &url[..rest_start + authority_end])
}

#[test]
fn a_url_gets_the_test_database_in_place_of_its_own() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h:1/db?sslmode=disable", "t1"),
        "postgresql://u:p@h:1/t1?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:1?application_name=x", "t1"),
        "postgres://h:1/t1?application_name=x"
    );
    assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    assert_eq!(
        with_database("host=127.0.0.1 user=postgres", "t1"),
        "host=127.0.0.1 user=postgres dbname=t1"
    );
}
