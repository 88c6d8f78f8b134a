//! Bulk, streaming reads of the whole journal (or a date range of it), for the exports,
//! and bulk loads by id on SQLite (the sealer). Rows arrive in (entry id, line) order and are assembled into entries one
//! at a time; memory stays bounded whatever the ledger's size.
//!
//! PostgreSQL streams through sqlx. SQLite is read through its own read-only `rusqlite`
//! connection on a blocking thread, because sqlx's SQLite driver hands rows across a
//! channel one by one (measured here: ~6 µs per row, 30× slower than a direct read).
//! `rusqlite` shares sqlx's `libsqlite3-sys`, so there is one SQLite library in the binary.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use db::Db;
use futures_util::TryStreamExt;
use tokio::sync::mpsc;

use crate::entry::Account;
use crate::error::Result;
use crate::store::{Assembler, ENTRY_ROW_SELECT, RawPosting, RawRow, ScannedEntry, pg, sqlite};
use crate::types::AccountId;

/// Rows per message from the SQLite reader thread.
const SQLITE_BATCH_ROWS: usize = 4096;
/// Messages in flight between the reader thread and the consumer (back-pressure).
const SQLITE_CHANNEL_BATCHES: usize = 4;

/// Which entries a scan covers.
#[derive(Clone, Debug, Default)]
pub struct ScanFilter {
    /// Effective dates, inclusive.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub entity: Option<String>,
    /// Only entries with ids up to this one: an export's high-water mark, so entries committed
    /// after its control totals were taken are left out of the file as they are of the totals.
    pub max_id: Option<i64>,
}

/// Calls `f` with every entry matching `filter`, in entry-id order.
pub(crate) async fn scan_entries(
    db: &Db,
    filter: &ScanFilter,
    accounts: &HashMap<AccountId, Account>,
    mut f: impl FnMut(ScannedEntry) -> Result<()>,
) -> Result<()> {
    let mut asm = Assembler::new(accounts);
    match db {
        Db::Postgres(pool) => {
            let sql = format!(
                "{} WHERE ($1::date IS NULL OR e.effective_date >= $1) AND ($2::date IS NULL OR e.effective_date <= $2)
                   AND ($3::text IS NULL OR e.entity = $3) AND ($4::int8 IS NULL OR e.id <= $4)
                 ORDER BY e.id, p.line",
                ENTRY_ROW_SELECT
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.entity.as_deref())
                .bind(filter.max_id)
                .fetch(pool);
            while let Some(row) = rows.try_next().await? {
                if let Some(done) = asm.push(pg::raw_row(&row)?)? {
                    f(done)?;
                }
            }
        }
        Db::Sqlite(s) => {
            let sql = format!(
                "{} WHERE (?1 IS NULL OR e.effective_date >= ?1) AND (?2 IS NULL OR e.effective_date <= ?2)
                   AND (?3 IS NULL OR e.entity = ?3) AND (?4 IS NULL OR e.id <= ?4)
                 ORDER BY e.id, p.line",
                ENTRY_ROW_SELECT
            );
            let params = vec![
                opt_value(filter.from.map(|d| d.to_string())),
                opt_value(filter.to.map(|d| d.to_string())),
                opt_value(filter.entity.clone()),
                filter.max_id.map_or(
                    rusqlite::types::Value::Null,
                    rusqlite::types::Value::Integer,
                ),
            ];
            let mut rx = sqlite_rows(s.path.clone(), sql, params, sqlite_raw_row);
            while let Some(batch) = rx.recv().await {
                for row in batch? {
                    if let Some(done) = asm.push(row)? {
                        f(done)?;
                    }
                }
            }
        }
    }
    if let Some(done) = asm.finish() {
        f(done)?;
    }
    Ok(())
}

/// Rows of the entries with these ids (SQLite, bulk reader), in (id, line) order.
pub(crate) async fn sqlite_entries_by_id(path: PathBuf, ids: Vec<i64>) -> Result<Vec<RawRow>> {
    let mut out = Vec::with_capacity(ids.len() * 2);
    for chunk in ids.chunks(900) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("{ENTRY_ROW_SELECT} WHERE e.id IN ({marks}) ORDER BY e.id, p.line");
        let params = chunk
            .iter()
            .map(|id| rusqlite::types::Value::Integer(*id))
            .collect();
        let mut rx = sqlite_rows(path.clone(), sql, params, sqlite_raw_row);
        while let Some(batch) = rx.recv().await {
            out.extend(batch?);
        }
    }
    Ok(out)
}

fn opt_value(v: Option<String>) -> rusqlite::types::Value {
    match v {
        Some(s) => rusqlite::types::Value::Text(s),
        None => rusqlite::types::Value::Null,
    }
}

fn sqlite_raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    let conv = |i: usize, e: sqlx::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let line: Option<i64> = r.get(9)?;
    let posting = match line {
        None => None,
        Some(line) => Some(RawPosting {
            line,
            account_id: r.get(10)?,
            direction: r.get(11)?,
            amount_minor: r.get(12)?,
            currency: r.get(13)?,
            customer_id: r.get(14)?,
            document_ref: r.get(15)?,
            memo: r.get(16)?,
        }),
    };
    let date = r.get_ref(3)?.as_str()?;
    let recorded = r.get_ref(4)?.as_str()?;
    Ok(RawRow {
        entry_id: r.get(0)?,
        entity: r.get(1)?,
        idempotency_key: r.get(2)?,
        effective_date: sqlite::parse_date(date).map_err(|e| conv(3, e))?,
        recorded_at: sqlite::parse_ts(recorded).map_err(|e| conv(4, e))?,
        source: r.get(5)?,
        external_ref: r.get(6)?,
        memo: r.get(7)?,
        reverses_entry_id: r.get(8)?,
        posting,
        seq: r.get(17)?,
        hash: r.get(18)?,
        reversed_by: r.get(19)?,
    })
}

/// Runs `sql` on a read-only connection in a blocking thread, sending rows in batches.
fn sqlite_rows<T: Send + 'static>(
    path: PathBuf,
    sql: String,
    params: Vec<rusqlite::types::Value>,
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> mpsc::Receiver<Result<Vec<T>>> {
    let (tx, rx) = mpsc::channel(SQLITE_CHANNEL_BATCHES);
    tokio::task::spawn_blocking(move || {
        let run = || -> Result<()> {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            // One read transaction: the whole scan sees one consistent snapshot.
            conn.execute_batch("BEGIN")?;
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
            let mut batch = Vec::with_capacity(SQLITE_BATCH_ROWS);
            while let Some(row) = rows.next()? {
                batch.push(map(row)?);
                if batch.len() == SQLITE_BATCH_ROWS {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(SQLITE_BATCH_ROWS));
                    if tx.blocking_send(Ok(full)).is_err() {
                        return Ok(()); // the consumer stopped early
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(Ok(batch));
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}
