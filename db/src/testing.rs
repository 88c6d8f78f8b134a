//! Fresh, migrated databases for tests, on both backends.
//!
//! SQLite: a new file in a temporary directory per test. PostgreSQL: a new schema per
//! test in the database named by [`POSTGRES_TEST_URL_VAR`], so tests run in parallel
//! without seeing each other. When that variable is set the PostgreSQL half of every
//! storage test runs, and an unreachable server fails the test loudly; when it is unset
//! the PostgreSQL half says so on stderr and returns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Backend, Db, DbOptions};

/// Set this to a PostgreSQL URL (e.g. `postgres://postgres@127.0.0.1:5432/test`) to run
/// every storage test on PostgreSQL as well as SQLite.
pub const POSTGRES_TEST_URL_VAR: &str = "CASHLOOP_TEST_POSTGRES_URL";

const SCHEMA_PREFIX: &str = "cltest_";
/// Schemas left behind by crashed runs are dropped once they are this old.
const STALE_SCHEMA_AGE_S: u64 = 6 * 3600;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A migrated database that is removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    /// A URL other processes (the CLI, a second server) can use to reach the same data.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, schema)) = self.pg_schema.take() {
            // Drop runs inside the test's runtime; use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        if let Ok(db) = Db::connect(&admin_url, &small()).await {
                            if let Db::Postgres(pool) = &db {
                                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                                let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await;
                            }
                            db.close().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

fn small() -> DbOptions {
    DbOptions {
        max_connections: 4,
        ..DbOptions::default()
    }
}

/// A fresh, migrated SQLite database in a temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("create temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let db = Db::connect(&url, &small())
        .await
        .expect("open SQLite test db");
    db.migrate().await.expect("migrate SQLite test db");
    TestDb {
        db,
        url,
        _dir: Some(dir),
        pg_schema: None,
    }
}

/// The PostgreSQL URL from the environment, if the PostgreSQL test run is switched on.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_TEST_URL_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// A fresh, migrated schema on the test PostgreSQL server, or `None` when
/// [`POSTGRES_TEST_URL_VAR`] is unset. Panics if it is set and the server is unreachable.
pub async fn postgres() -> Option<TestDb> {
    let Some(admin_url) = postgres_url() else {
        eprintln!("{POSTGRES_TEST_URL_VAR} is not set: skipping the PostgreSQL half of this test");
        return None;
    };
    let admin = Db::connect(&admin_url, &small()).await.unwrap_or_else(|e| {
        panic!("{POSTGRES_TEST_URL_VAR} is set but PostgreSQL is unreachable at {admin_url}: {e}")
    });
    let Db::Postgres(admin_pool) = &admin else {
        panic!("{POSTGRES_TEST_URL_VAR} must be a postgres:// URL");
    };
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    drop_stale_schemas(admin_pool, now_s).await;
    let schema = format!(
        "{SCHEMA_PREFIX}{now_s}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(admin_pool)
        .await
        .expect("create test schema");
    admin.close().await;
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{sep}options[search_path]={schema}");
    let db = Db::connect(&url, &small())
        .await
        .expect("connect to test schema");
    db.migrate().await.expect("migrate PostgreSQL test schema");
    Some(TestDb {
        db,
        url,
        _dir: None,
        pg_schema: Some((admin_url, schema)),
    })
}

async fn drop_stale_schemas(pool: &sqlx::PgPool, now_s: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'cltest\\_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for name in names {
        let created_s: Option<u64> = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse().ok());
        if created_s.is_some_and(|c| c + STALE_SCHEMA_AGE_S < now_s) {
            let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await;
        }
    }
}

/// Runs `$body` (an async block using the `TestDb` bound to `$db`) once on SQLite and
/// once on PostgreSQL, as two tests named `sqlite` and `postgres` in a module `$name`.
///
/// ```text
/// db::both_backends!(posts_an_entry, |t| async move {
///     let ledger = Ledger::open(t.db.clone()).await.unwrap();
///     /* … */
/// });
/// ```
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::testing::sqlite().await;
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = $crate::testing::postgres().await else {
                    return;
                };
                $body.await;
            }
        }
    };
}

/// Every row of `table` as text, ordered by `order_by`, so a test can compare a table before
/// and after, or search it for data that must not be there. SQLite renders BLOBs in hex.
pub async fn table_text(db: &Db, table: &str, order_by: &str) -> String {
    let text: Option<String> = match db {
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n' ORDER BY {order_by}) FROM {table} t"
        )))
        .fetch_one(p)
        .await
        .expect("dump table"),
        Db::Sqlite(s) => {
            let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}')"
            )))
            .fetch_all(&s.pool)
            .await
            .expect("list columns");
            let expr = cols
                .iter()
                .map(|c| format!("quote({c})"))
                .collect::<Vec<_>>()
                .join("||','||");
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT group_concat(r, char(10)) FROM (SELECT {expr} AS r FROM {table} ORDER BY {order_by})"
            )))
            .fetch_one(&s.pool)
            .await
            .expect("dump table")
        }
    };
    text.unwrap_or_default()
}

/// The names of every table in the test database.
pub async fn tables(db: &Db) -> Vec<String> {
    match db {
        Db::Postgres(p) => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
        )
        .fetch_all(p)
        .await
        .expect("list tables"),
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
                .fetch_all(&s.pool)
                .await
                .expect("list tables")
        }
    }
}
