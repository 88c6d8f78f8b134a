//! Reads over ODBC (unixODBC on Linux, the Windows driver manager on the agent's host): the
//! Sage 100 ProvideX driver (`DSN=SOTAMAS90;…`) and BusinessWorks' Actian Zen driver in
//! production, the SQLite ODBC driver (`Driver=SQLite3;Database=…`) in tests.
//!
//! Read-only by design: both drivers are reporting interfaces without transactions (Sage
//! supports no writes through them). Every value is fetched as text, as the drivers render it,
//! and parsed by the caller into typed values (money through `rust_decimal`, never floats).
//! ODBC calls block, so each query runs on a blocking thread. A value longer than
//! [`MAX_TEXT_BYTES`] is an error, never silently truncated.

use std::collections::HashMap;
use std::sync::OnceLock;

use odbc_api::buffers::TextRowSet;
use odbc_api::{ConnectionOptions, Cursor, Environment, IntoParameter, ResultSetMetadata};

/// The longest value read, bytes (memo fields included).
pub const MAX_TEXT_BYTES: usize = 8192;
/// Rows fetched per round trip.
const BATCH_ROWS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum OdbcError {
    /// The driver manager, driver or data source refused (the text is the driver's diagnostic;
    /// the connection string is never part of it).
    #[error("ODBC: {0}")]
    Driver(String),
    #[error("ODBC column {column:?} is not in the result of {query:?}")]
    MissingColumn { column: String, query: String },
    #[error("ODBC read thread failed: {0}")]
    Join(String),
}

impl OdbcError {
    /// Whether retrying later may help: every driver error may be a lost connection or a
    /// locked file, so all are retryable except a missing column (a configuration error).
    pub fn retryable(&self) -> bool {
        !matches!(self, OdbcError::MissingColumn { .. })
    }
}

fn env() -> Result<&'static Environment, OdbcError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| Environment::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| OdbcError::Driver(e.clone()))
}

/// A result set: column names (as the driver reports them) and text values (`None` = NULL).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// Index of `column` (case-insensitive, as SQL names are).
    pub fn index(&self, column: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
    }

    /// The rows as maps keyed by the names in `columns` (each must be in the result).
    pub fn records<'a>(
        &'a self,
        columns: &[&str],
        query: &str,
    ) -> Result<Vec<HashMap<String, Option<&'a str>>>, OdbcError> {
        let idx = columns
            .iter()
            .map(|c| {
                self.index(c)
                    .map(|i| (c.to_string(), i))
                    .ok_or_else(|| OdbcError::MissingColumn {
                        column: c.to_string(),
                        query: query.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .rows
            .iter()
            .map(|r| {
                idx.iter()
                    .map(|(c, i)| (c.clone(), r[*i].as_deref()))
                    .collect()
            })
            .collect())
    }
}

/// An ODBC data source. The connection string may hold a password: it is never logged or
/// shown (`Debug` leaves it out).
#[derive(Clone)]
pub struct Source {
    connection_string: String,
    pub query_timeout_sec: Option<usize>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Source {
    pub fn new(connection_string: impl Into<String>) -> Source {
        Source {
            connection_string: connection_string.into(),
            query_timeout_sec: Some(120),
        }
    }

    /// Runs `sql` with text parameters (`?` placeholders) and returns every row.
    pub async fn query(&self, sql: &str, params: &[String]) -> Result<Rows, OdbcError> {
        let me = self.clone();
        let sql = sql.to_owned();
        let params = params.to_vec();
        tokio::task::spawn_blocking(move || me.query_blocking(&sql, &params))
            .await
            .map_err(|e| OdbcError::Join(e.to_string()))?
    }

    /// [`Self::query`] on the calling thread.
    pub fn query_blocking(&self, sql: &str, params: &[String]) -> Result<Rows, OdbcError> {
        let driver = |e: odbc_api::Error| OdbcError::Driver(e.to_string());
        let conn = env()?
            .connect_with_connection_string(&self.connection_string, ConnectionOptions::default())
            .map_err(driver)?;
        let bound: Vec<_> = params.iter().map(|p| p.as_str().into_parameter()).collect();
        let mut out = Rows::default();
        let Some(mut cursor) = conn
            .execute(sql, &bound[..], self.query_timeout_sec)
            .map_err(driver)?
        else {
            return Ok(out);
        };
        out.columns = cursor
            .column_names()
            .map_err(driver)?
            .collect::<Result<_, _>>()
            .map_err(driver)?;
        let buffers = TextRowSet::for_cursor(BATCH_ROWS, &mut cursor, Some(MAX_TEXT_BYTES))
            .map_err(driver)?;
        let mut rows = cursor.bind_buffer(buffers).map_err(driver)?;
        // A value longer than the buffer is an error rather than a silently shortened value.
        while let Some(batch) = rows.fetch_with_truncation_check(true).map_err(driver)? {
            for r in 0..batch.num_rows() {
                let mut row = Vec::with_capacity(batch.num_cols());
                for c in 0..batch.num_cols() {
                    row.push(
                        batch
                            .at(c, r)
                            .map(|b| String::from_utf8_lossy(b).into_owned()),
                    );
                }
                out.rows.push(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite ODBC driver (Debian `libsqliteodbc`, installed by `.ci/run`).
    fn sqlite_source(path: &std::path::Path) -> Source {
        Source::new(format!("Driver=SQLite3;Database={};", path.display()))
    }

    #[tokio::test]
    async fn reads_text_nulls_and_parameters_through_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ar.db");
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query(
            "CREATE TABLE AR_Customer (ARDivisionNo TEXT, CustomerNo TEXT, CustomerName TEXT, CreditLimit NUMERIC)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO AR_Customer VALUES ('01', 'ABF', 'American Business Futures', '1500.25'), ('02', 'X', NULL, NULL)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let src = sqlite_source(&path);
        let rows = src
            .query(
                "SELECT ARDivisionNo, CustomerNo, CustomerName, CreditLimit FROM AR_Customer WHERE ARDivisionNo >= ? ORDER BY ARDivisionNo",
                &["01".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.columns,
            ["ARDivisionNo", "CustomerNo", "CustomerName", "CreditLimit"]
        );
        assert_eq!(rows.rows.len(), 2);
        assert_eq!(
            rows.rows[0][2].as_deref(),
            Some("American Business Futures")
        );
        assert_eq!(rows.rows[0][3].as_deref(), Some("1500.25"));
        assert_eq!(rows.rows[1][2], None);
        let recs = rows.records(&["customerno"], "q").unwrap();
        assert_eq!(recs[1]["customerno"], Some("X"));
        let err = rows.records(&["Nope"], "q").unwrap_err();
        assert!(!err.retryable(), "{err}");

        // A missing table is the driver's diagnostic, not a panic or an empty result.
        let err = src.query("SELECT * FROM AR_Nope", &[]).await.unwrap_err();
        assert!(err.to_string().contains("AR_Nope"), "{err}");
        // The connection string (it may hold a password) is not in Debug.
        assert!(!format!("{src:?}").contains("ar.db"));
    }
}
