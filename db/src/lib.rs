//! Storage plumbing shared by every cashloop crate: one handle over the two backends
//! (SQLite, the embedded default; PostgreSQL, the production and scale-out store),
//! their embedded migrations, and fresh databases for tests.
//!
//! This crate holds no business rules and no tables of its own; each domain crate
//! writes its own SQL per backend against the [`Db`] it is given.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub mod audit;
pub mod testing;

/// SQLite migrations, embedded in the binary. Same version numbers as [`POSTGRES_MIGRATOR`].
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
/// PostgreSQL migrations, embedded in the binary.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The default database: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://cashloop.db";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {url:?} is not supported: it must start with sqlite:// or postgres://")]
    UnsupportedUrl { url: String },
    #[error("database URL is invalid: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Which backend a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool sizing and durability settings.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// SQLite `busy_timeout`: how long a writer waits for another writer's lock.
    pub sqlite_busy_timeout_ms: u64,
    /// SQLite `synchronous=FULL` (fsync on every commit) rather than `NORMAL`. Money wants FULL.
    pub sqlite_synchronous_full: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 10,
            acquire_timeout_ms: 30_000,
            sqlite_busy_timeout_ms: 10_000,
            sqlite_synchronous_full: true,
        }
    }
}

/// A connection pool on one of the two backends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// A SQLite pool plus the path of its file (bulk scans open their own read-only connection).
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pub pool: SqlitePool,
    pub path: PathBuf,
}

impl Db {
    /// Connects to `url` (`sqlite://FILE` or `postgres://…`). A SQLite file is created if missing
    /// and switched to WAL.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Db, DbError> {
        if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(DbError::InvalidUrl)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if options.sqlite_synchronous_full {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(options.sqlite_busy_timeout_ms));
            let path = connect.get_filename().to_path_buf();
            if path.as_os_str().is_empty() || path == Path::new(":memory:") {
                // Bulk scans and several processes need a real file.
                return Err(DbError::UnsupportedUrl {
                    url: url.to_owned(),
                });
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
                .connect_with(connect)
                .await
                .map_err(DbError::Connect)?;
            Ok(Db::Sqlite(SqliteDb { pool, path }))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url).map_err(DbError::InvalidUrl)?;
            Self::connect_pg(connect, options).await
        } else {
            Err(DbError::UnsupportedUrl {
                url: url.to_owned(),
            })
        }
    }

    pub(crate) async fn connect_pg(
        connect: PgConnectOptions,
        options: &DbOptions,
    ) -> Result<Db, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .connect_with(connect.application_name("cashloop"))
            .await
            .map_err(DbError::Connect)?;
        Ok(Db::Postgres(pool))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every pending migration. Safe to run from several processes at once:
    /// sqlx takes an advisory lock on PostgreSQL, and SQLite serialises writers.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => SQLITE_MIGRATOR.run(&s.pool).await?,
            Db::Postgres(p) => POSTGRES_MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// Versions embedded in this binary that the database has not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, DbError> {
        let (applied, migrator): (Vec<i64>, &sqlx::migrate::Migrator) = match self {
            Db::Sqlite(s) => (applied_versions_sqlite(&s.pool).await?, &SQLITE_MIGRATOR),
            Db::Postgres(p) => (applied_versions_pg(p).await?, &POSTGRES_MIGRATOR),
        };
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(s) => {
                sqlx::query("SELECT 1").execute(&s.pool).await?;
            }
            Db::Postgres(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(s) => s.pool.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

async fn applied_versions_sqlite(pool: &SqlitePool) -> Result<Vec<i64>, DbError> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?,
    )
}

async fn applied_versions_pg(pool: &PgPool) -> Result<Vec<i64>, DbError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?,
    )
}

/// An open transaction on either backend, for work that must commit atomically across crates
/// (a payment state change and its ledger posting). Commit or roll back explicitly; dropping
/// it rolls back.
#[derive(Debug)]
pub enum DbTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$c` bound to the pool of either backend: one statement text, written
/// once, executed through each backend's own sqlx types (`$N` placeholders work on both).
///
/// ```ignore
/// let n: i64 = db::on_pool!(&db, |c| sqlx::query_scalar(SQL).fetch_one(c).await)?;
/// ```
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::Db::Postgres(p) => {
                let $c = p;
                $body
            }
            $crate::Db::Sqlite(s) => {
                let $c = &s.pool;
                $body
            }
        }
    };
}

/// [`on_pool!`] for an open transaction (`$c` is the connection of either backend).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::DbTx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::DbTx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

impl Db {
    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// it cannot fail half-way on a lock upgrade.
    pub async fn begin(&self) -> Result<DbTx, DbError> {
        Ok(match self {
            Db::Sqlite(s) => DbTx::Sqlite(s.pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => DbTx::Postgres(p.begin().await?),
        })
    }
}

impl DbTx {
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            DbTx::Sqlite(t) => t.commit().await?,
            DbTx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            DbTx::Sqlite(t) => t.rollback().await?,
            DbTx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// True when a database error is worth retrying as a whole transaction: a PostgreSQL
/// deadlock or serialization failure, or a SQLite lock that outlived `busy_timeout`.
pub fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code();
            matches!(
                code.as_deref(),
                Some("40P01") | Some("40001") | Some("55P03") | Some("5") | Some("6") | Some("517")
            )
        }
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

/// The name of the violated constraint, if `err` is a unique / check / foreign-key violation.
pub fn constraint_name(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

/// A timestamp as SQLite columns hold it (TEXT): RFC 3339 in UTC with microseconds and `Z`,
/// one fixed width, so comparing the text compares the times.
pub fn sqlite_ts(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A 64-bit advisory-lock key for `name`, stable across processes and releases
/// (FNV-1a; `std`'s hasher is randomly seeded, so unusable here).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two migration trees must hold the same versions, so both backends move in step.
    #[test]
    fn migration_trees_hold_the_same_versions() {
        let versions = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        let sqlite = versions(&SQLITE_MIGRATOR);
        let postgres = versions(&POSTGRES_MIGRATOR);
        assert!(!sqlite.is_empty(), "no migrations embedded");
        assert_eq!(sqlite, postgres);
    }

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(lock_key("ledger-sealer"), lock_key("ledger-sealer"));
        assert_ne!(lock_key("ledger-sealer"), lock_key("ledger-sealer2"));
        // A fixed value: changing the hash would let old and new processes hold "one" lock twice.
        assert_eq!(
            lock_key(""),
            i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes())
        );
    }

    #[tokio::test]
    async fn rejects_unknown_scheme() {
        let err = Db::connect("mysql://x", &DbOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::UnsupportedUrl { .. }), "{err}");
    }
}
