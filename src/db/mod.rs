//! The database: a connection pool over SQLite (the embedded default) or PostgreSQL (shared by several
//! gateway nodes), the migrations in `sql/`, and the repositories for trunks, widgets and call records.
//!
//! Every query is written once, in SQL both dialects accept (`$1` placeholders, which SQLite also reads;
//! integers as `BIGINT`/`INTEGER`; times as unix milliseconds), and compiled once per backend by
//! `with_pool!`. Only the migrations differ per dialect (`sql/sqlite/`, `sql/postgres/`).
//!
//! Repositories hand out domain structs whose fields are validated types ([`values`]): a row that does not
//! parse is reported as [`DbError::CorruptRow`] rather than passed on.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use thiserror::Error;

pub mod calls;
pub mod trunks;
pub mod values;
pub mod widgets;

pub use calls::{CallEnd, CallId, CallRecord, Calls, EndedBy, LegSummary, NewCall};
pub use trunks::{NewTrunk, RemovedTrunk, Trunk, TrunkAuth, TrunkChanges, TrunkId, Trunks};
pub use values::{
    CallerId, Codec, CodecList, Credential, Destination, Host, HostPort, InvalidValue, Name, Origin, Origins,
    Password, PublicId, Transport, WidgetSecret,
};
pub use widgets::{NewWidget, SecretChange, Widget, WidgetChanges, WidgetId, WidgetTrunk, Widgets};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("sql/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("sql/postgres");

/// Everything that can go wrong talking to the database.
#[derive(Debug, Error)]
pub enum DbError {
    /// The URL names neither SQLite nor PostgreSQL, or does not parse.
    #[error("database URL must start with sqlite:// or postgres:// ({0})")]
    InvalidUrl(String),
    /// The database could not be opened or reached; `target` is the URL without its password.
    #[error("cannot open database {target}: {source}")]
    Connect {
        /// Where we tried to connect, password removed.
        target: String,
        /// The driver's reason.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// The shared database lacks migrations this version needs.
    #[error("database schema is not up to date: run `callgate migrate`")]
    NeedsMigration,
    /// The shared database was migrated by a newer callgate than this one.
    #[error("database schema version {0} is newer than this callgate knows: upgrade callgate")]
    SchemaTooNew(i64),
    /// No trunk has this name.
    #[error("no trunk named '{0}'")]
    TrunkNotFound(Name),
    /// A trunk with this name exists already.
    #[error("a trunk named '{0}' already exists")]
    DuplicateTrunk(Name),
    /// Widgets still use the trunk being removed.
    #[error("trunk '{trunk}' is used by widgets: {}; remove them, move them to another trunk, or use --force", join_names(.widgets))]
    TrunkInUse {
        /// The trunk asked for.
        trunk: Name,
        /// The widgets using it, by name.
        widgets: Vec<Name>,
    },
    /// No widget has this name.
    #[error("no widget named '{0}'")]
    WidgetNotFound(Name),
    /// No widget has this public id.
    #[error("no widget with public id '{0}'")]
    PublicIdNotFound(PublicId),
    /// A widget with this name exists already.
    #[error("a widget named '{0}' already exists")]
    DuplicateWidget(Name),
    /// A widget without a trunk (its trunk was removed) cannot be enabled.
    #[error("widget '{0}' has no trunk: give it one with --trunk to enable it")]
    WidgetWithoutTrunk(Name),
    /// No call record has this id.
    #[error("no call record with id {0}")]
    CallNotFound(CallId),
    /// A stored value does not parse: the row was written by something other than callgate.
    #[error("{table} row {id} has an invalid {column}: {reason}")]
    CorruptRow {
        /// The table holding the row.
        table: &'static str,
        /// The row's primary key.
        id: i64,
        /// The column that does not parse.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

fn join_names(names: &[Name]) -> String {
    names.iter().map(Name::as_str).collect::<Vec<_>>().join(", ")
}

impl DbError {
    /// Whether the error comes from what was asked (a malformed URL, an unknown or duplicate name, a
    /// refused removal) rather than from the database failing; the CLI exits with 2 for these, 1 for the rest.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::InvalidUrl(_)
                | Self::TrunkNotFound(_)
                | Self::DuplicateTrunk(_)
                | Self::TrunkInUse { .. }
                | Self::WidgetNotFound(_)
                | Self::PublicIdNotFound(_)
                | Self::DuplicateWidget(_)
                | Self::WidgetWithoutTrunk(_)
                | Self::CallNotFound(_)
        )
    }
}

/// The pool of one backend.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$database`. The body is compiled once per
/// backend, so its SQL must be valid in both dialects.
macro_rules! with_pool {
    ($database:expr, |$pool:ident| $body:expr) => {
        match &$database.pool {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A handle on the database: cheap to clone (the pool is shared), safe to use from many tasks.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
}

impl Database {
    /// Opens `sqlite://PATH` (the file is created when missing; WAL journal, foreign keys enforced) or
    /// `postgres://…`. Does not touch the schema: see [`Database::migrate`] and [`Database::connect_ready`].
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|error| DbError::InvalidUrl(error.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let target = format!("sqlite://{}", options.get_filename().display());
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .map_err(|source| DbError::Connect { target, source })?;
            Ok(Self {
                pool: Pool::Sqlite(pool),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options =
                PgConnectOptions::from_str(url).map_err(|error| DbError::InvalidUrl(error.to_string()))?;
            let target = format!(
                "postgres://{}@{}:{}/{}",
                options.get_username(),
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or_default()
            );
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|source| DbError::Connect { target, source })?;
            Ok(Self {
                pool: Pool::Postgres(pool),
            })
        } else {
            let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
            Err(DbError::InvalidUrl(format!("got scheme '{scheme}'")))
        }
    }

    /// Connects and makes sure the schema is current. A SQLite file belongs to this node, so it is migrated
    /// on the spot (a new file is created and migrated on first use); a PostgreSQL database may be shared by
    /// running gateway nodes, so only `callgate migrate` or `serve` changes its schema and this returns
    /// [`DbError::NeedsMigration`] when that has not been done.
    pub async fn connect_ready(url: &str) -> Result<Self, DbError> {
        let database = Self::connect(url).await?;
        match &database.pool {
            Pool::Sqlite(_) => database.migrate().await?,
            Pool::Postgres(pool) => {
                let applied: Vec<i64> =
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(pool)
                        .await
                        .or_else(|error| match &error {
                            // 42P01 undefined_table: never migrated at all.
                            sqlx::Error::Database(db_error)
                                if db_error.code().as_deref() == Some("42P01") =>
                            {
                                Ok(Vec::new())
                            }
                            _ => Err(error),
                        })?;
                if let Some(unknown) = applied
                    .iter()
                    .find(|version| !POSTGRES_MIGRATIONS.version_exists(**version))
                {
                    return Err(DbError::SchemaTooNew(*unknown));
                }
                if POSTGRES_MIGRATIONS
                    .iter()
                    .any(|migration| !applied.contains(&migration.version))
                {
                    return Err(DbError::NeedsMigration);
                }
            }
        }
        Ok(database)
    }

    /// Applies the migrations this version has not applied yet (from `sql/sqlite/` or `sql/postgres/`,
    /// embedded at build time). Several nodes may run this at once: PostgreSQL migrations take a lock.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Which backend this is, for log lines: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Runs a trivial query, for readiness probes.
    pub async fn ping(&self) -> Result<(), DbError> {
        with_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
    }

    /// The trunk repository.
    pub fn trunks(&self) -> Trunks<'_> {
        Trunks::new(self)
    }

    /// The widget repository.
    pub fn widgets(&self) -> Widgets<'_> {
        Widgets::new(self)
    }

    /// The call-record repository.
    pub fn calls(&self) -> Calls<'_> {
        Calls::new(self)
    }
}

/// A moment as milliseconds since the Unix epoch, UTC: the one time format stored in every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time (for created/updated stamps; call times are passed in by the server).
    pub fn now() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// The timestamp `millis` milliseconds after the epoch.
    pub fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Milliseconds from `self` to `later` (negative when `later` is earlier).
    pub fn millis_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0)
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-11-21T13:35:00.123Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let millis_of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let seconds = millis_of_day / 1000;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            millis_of_day % 1000
        )
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Reads the columns of one stored row into validated types, naming the row and column when a value does
/// not parse.
#[derive(Debug, Clone, Copy)]
struct StoredRow {
    table: &'static str,
    id: i64,
}

impl StoredRow {
    /// Parses a text column.
    fn text<T>(self, column: &'static str, text: &str) -> Result<T, DbError>
    where
        T: FromStr<Err = InvalidValue>,
    {
        text.parse()
            .map_err(|error: InvalidValue| self.corrupt(column, format!("'{text}': {error}")))
    }

    /// Parses an optional text column.
    fn optional_text<T>(self, column: &'static str, text: Option<&str>) -> Result<Option<T>, DbError>
    where
        T: FromStr<Err = InvalidValue>,
    {
        text.map(|text| self.text(column, text)).transpose()
    }

    /// Converts an integer column into a narrower type.
    fn integer<T: TryFrom<i64>>(self, column: &'static str, value: i64) -> Result<T, DbError> {
        T::try_from(value).map_err(|_| self.corrupt(column, format!("{value} is out of range")))
    }

    fn corrupt(self, column: &'static str, reason: String) -> DbError {
        DbError::CorruptRow {
            table: self.table,
            id: self.id,
            column,
            reason,
        }
    }
}

/// Whether a query failed on a UNIQUE constraint.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db_error) if db_error.is_unique_violation())
}

#[cfg(test)]
#[path = "../../tests/common/databases.rs"]
mod test_databases;

/// Turns each named `async fn(&Database)` scenario into two tests, `sqlite::NAME` and `postgres::NAME`, each
/// on a fresh, migrated database of its own.
#[cfg(test)]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test_database = $crate::db::test_databases::TestDatabase::sqlite();
                    let database = $crate::db::Database::connect_ready(test_database.url()).await.unwrap();
                    super::$scenario(&database).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test_database = $crate::db::test_databases::TestDatabase::postgres();
                    let database = $crate::db::Database::connect(test_database.url()).await.unwrap();
                    database.migrate().await.unwrap();
                    super::$scenario(&database).await;
                    database.close().await;
                }
            )*
        }
    };
}
#[cfg(test)]
use on_both_backends;

#[cfg(test)]
mod tests {
    use super::*;
    use test_databases::TestDatabase;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(951_782_400_123).to_string(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_763_732_100_000).to_string(),
            "2025-11-21T13:35:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        let error = Database::connect("mysql://localhost/x").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "database URL must start with sqlite:// or postgres:// (got scheme 'mysql')"
        );
    }

    #[tokio::test]
    async fn a_new_sqlite_file_is_created_and_migrated_on_first_use() {
        let test_db = TestDatabase::sqlite();
        let database = Database::connect_ready(test_db.url()).await.unwrap();
        assert!(database.trunks().list().await.unwrap().is_empty());
        assert_eq!(database.backend(), "sqlite");
    }

    #[tokio::test]
    async fn postgres_needs_an_explicit_migration() {
        let test_db = TestDatabase::postgres();
        let error = Database::connect_ready(test_db.url()).await.unwrap_err();
        assert!(matches!(error, DbError::NeedsMigration), "{error}");
        let database = Database::connect(test_db.url()).await.unwrap();
        database.migrate().await.unwrap();
        database.migrate().await.unwrap();
        let ready = Database::connect_ready(test_db.url()).await.unwrap();
        assert_eq!(ready.backend(), "postgres");
        assert!(ready.trunks().list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn connection_errors_do_not_show_the_password() {
        let test_db = TestDatabase::postgres();
        let url = test_db.url().replace("postgres@", "nobody:hunter2@");
        let error = Database::connect(&url).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot open database postgres://nobody@127.0.0.1:"),
            "{message}"
        );
        assert!(!message.contains("hunter2"));
    }
}
