//! Throwaway databases for tests: a SQLite file in a temporary directory, or a fresh PostgreSQL database
//! created on the server named by `CALLGATE_TEST_POSTGRES_URL` and dropped again afterwards. Each test gets
//! its own, so tests run in parallel.
//!
//! Shared by the library's unit tests (`src/db/mod.rs` includes this file by path) and the integration
//! tests, so it uses only dependencies, never `callgate` itself.

use std::future::Future;

use rand::RngCore as _;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// The variable `tests/support/postgres.sh` exports: an admin URL of the test PostgreSQL server.
const POSTGRES_URL_VARIABLE: &str = "CALLGATE_TEST_POSTGRES_URL";

/// One test's database; removed when dropped.
pub(crate) struct TestDatabase {
    url: String,
    kind: Kind,
}

enum Kind {
    Sqlite { _directory: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A SQLite URL for a file that does not exist yet, in a fresh temporary directory.
    pub(crate) fn sqlite() -> Self {
        let directory = tempfile::tempdir().expect("test setup: create a temporary directory");
        let url = format!("sqlite://{}", directory.path().join("callgate.db").display());
        Self {
            url,
            kind: Kind::Sqlite {
                _directory: directory,
            },
        }
    }

    /// A new, empty PostgreSQL database with a random name. Fails the test when the test server is not
    /// configured: the PostgreSQL half of the suite must never be skipped silently.
    pub(crate) fn postgres() -> Self {
        let admin_url = std::env::var(POSTGRES_URL_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VARIABLE} is not set: run the tests with `bash tests/run.sh`, or first \
                 `source tests/support/postgres.sh && postgres_start`"
            )
        });
        let mut random = [0_u8; 8];
        rand::rng().fill_bytes(&mut random);
        let name = format!("callgate_test_{}", hex::encode(random));
        let statement = format!("CREATE DATABASE {name}");
        run_admin(&admin_url, statement).unwrap_or_else(|error| {
            panic!("cannot create a test database on {admin_url} (is tests/support/postgres.sh started?): {error}")
        });
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let server = base.rsplit_once('/').map_or(base, |(server, _database)| server);
        let url = format!("{server}/{name}");
        Self {
            url,
            kind: Kind::Postgres { admin_url, name },
        }
    }

    /// The URL to pass to `Database::connect` or `--database`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Kind::Postgres { admin_url, name } = &self.kind {
            // FORCE ends connections a test's pool may still hold.
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = run_admin(admin_url, statement) {
                eprintln!("warning: could not drop test database {name}: {error}");
            }
        }
    }
}

/// Runs one statement on the admin database. On a thread of its own with its own runtime, so that it works
/// from plain `#[test]`s, from `#[tokio::test]`s and from `Drop`.
fn run_admin(admin_url: &str, statement: String) -> Result<(), sqlx::Error> {
    let admin_url = admin_url.to_owned();
    block_on_own_thread(async move {
        let mut connection = PgConnection::connect(&admin_url).await?;
        // The statement only ever holds a name this file generated from hex digits.
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await?;
        connection.close().await
    })
}

fn block_on_own_thread<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test setup: build a tokio runtime")
            .block_on(work)
    })
    .join()
    .expect("test setup: the admin thread panicked")
}
