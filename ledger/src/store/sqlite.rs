//! SQLite SQL for the ledger. Writers take the database lock up front (`BEGIN IMMEDIATE`)
//! so a transaction never fails half-way on a lock upgrade; batches are multi-row
//! `INSERT … VALUES` chunks under SQLite's bound-parameter limit.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    ENTRY_ROW_SELECT, Prepared, RawAccount, RawOpenItem, RawPosting, RawRow, Sums, WriteOutcome,
};
use crate::entry::{Account, NewAccount};
use crate::error::Result;
use crate::types::{CustomerId, EntityCode, EntryId, Period, Text};

/// Rows per multi-row INSERT; × 9 columns stays under SQLite's 32,766 bound parameters.
const MAX_ROWS_PER_INSERT: usize = 3000;

/// Timestamps are stored as fixed-width RFC 3339 UTC text with microseconds, so that text
/// order is time order and the value round-trips exactly.
pub(crate) use db::sqlite_ts as ts;

pub(crate) fn parse_ts(s: &str) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("bad timestamp {s:?}: {e}").into()))
}

pub(crate) fn parse_date(s: &str) -> std::result::Result<NaiveDate, sqlx::Error> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| sqlx::Error::Decode(format!("bad date {s:?}: {e}").into()))
}

const ACCOUNT_COLUMNS: &str = "id, entity, code, name, account_type, normal_balance, currency, customer_subledger, created_at";

fn account_from_row(r: &SqliteRow) -> Result<Account> {
    let created: String = r.try_get(8)?;
    RawAccount {
        id: r.try_get(0)?,
        entity: r.try_get(1)?,
        code: r.try_get(2)?,
        name: r.try_get(3)?,
        account_type: r.try_get(4)?,
        normal_balance: r.try_get(5)?,
        currency: r.try_get(6)?,
        customer_subledger: r.try_get::<i64, _>(7)? != 0,
        created_at: parse_ts(&created)?,
    }
    .parse()
}

pub(crate) async fn insert_account(
    pool: &SqlitePool,
    a: &NewAccount,
    at: DateTime<Utc>,
) -> Result<Account> {
    let sql = format!(
        "INSERT INTO ledger_accounts (entity, code, name, account_type, normal_balance, currency, customer_subledger, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ACCOUNT_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(a.entity.as_str())
        .bind(a.code.as_str())
        .bind(a.name.as_str())
        .bind(a.account_type.as_str())
        .bind(a.normal_balance.as_str())
        .bind(a.currency.code())
        .bind(i64::from(a.customer_subledger))
        .bind(ts(at))
        .fetch_one(pool)
        .await
        .map_err(|e| {
            if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
                super::account_exists(a)
            } else {
                e.into()
            }
        })?;
    account_from_row(&row)
}

pub(crate) async fn accounts(
    pool: &SqlitePool,
    entity: Option<&EntityCode>,
) -> Result<Vec<Account>> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE (?1 IS NULL OR entity = ?1) ORDER BY entity, code"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(entity.map(EntityCode::as_str))
        .fetch_all(pool)
        .await?;
    rows.iter().map(account_from_row).collect()
}

fn opt(t: Option<&Text>) -> Option<String> {
    t.map(|t| t.as_str().to_owned())
}

pub(crate) async fn write_batch(
    pool: &SqlitePool,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    // IMMEDIATE: take the write lock now; SQLite then has no other writer to race.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let out = write_batch_in(&mut tx, batch, recorded_at).await?;
    tx.commit().await?;
    Ok(out)
}

/// Writes a batch inside the caller's transaction (which the caller commits or rolls back).
pub(crate) async fn write_batch_in(
    conn: &mut sqlx::SqliteConnection,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; batch.len()];

    let closed: HashSet<(String, String)> = sqlx::query_as::<_, (String, String)>(
        "SELECT entity, period FROM ledger_periods WHERE status = 'closed'",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut live: Vec<(usize, &Prepared)> = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        if closed.contains(&(p.entry.entity().as_str().to_owned(), p.period().to_string())) {
            outcomes[i] = Some(WriteOutcome::PeriodClosed);
        } else {
            live.push((i, p));
        }
    }

    let recorded = ts(recorded_at);
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(live.len());
    for chunk in live.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO ledger_entries (entity, idempotency_key, request_hash, effective_date, recorded_at, source, external_ref, memo, reverses_entry_id) ",
        );
        qb.push_values(chunk, |mut b, (_, p)| {
            let e = &p.entry;
            b.push_bind(e.entity().as_str().to_owned())
                .push_bind(e.idempotency_key().as_str().to_owned())
                .push_bind(p.request_hash.to_vec())
                .push_bind(e.effective_date().to_string())
                .push_bind(recorded.clone())
                .push_bind(e.source().as_str().to_owned())
                .push_bind(opt(e.external_ref()))
                .push_bind(opt(e.memo()))
                .push_bind(e.reverses().map(|r| r.0));
        });
        qb.push(" ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key");
        let rows: Vec<(i64, String)> = qb
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?;
        ids.extend(rows.into_iter().map(|(id, k)| (k, id)));
    }

    let mut written: Vec<&Prepared> = Vec::with_capacity(live.len());
    let mut postings: Vec<(i64, usize, &Prepared)> = Vec::new();
    for (i, p) in &live {
        let k = p.entry.idempotency_key().as_str();
        if let Some(id) = ids.get(k) {
            outcomes[*i] = Some(WriteOutcome::Inserted(EntryId(*id)));
            written.push(p);
            for line in 0..p.entry.postings().len() {
                postings.push((*id, line, p));
            }
        } else {
            let (id, h): (i64, Vec<u8>) = sqlx::query_as(
                "SELECT id, request_hash FROM ledger_entries WHERE idempotency_key = ?",
            )
            .bind(k)
            .fetch_one(&mut *conn)
            .await?;
            outcomes[*i] = Some(WriteOutcome::Existing {
                id: EntryId(id),
                request_hash: h,
            });
        }
    }
    for chunk in postings.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO ledger_postings (entry_id, line, account_id, direction, amount_minor, currency, customer_id, document_ref, memo) ",
        );
        qb.push_values(chunk, |mut b, (id, line, p)| {
            let posting = &p.entry.postings()[*line];
            b.push_bind(*id)
                .push_bind(i64::try_from(*line + 1).unwrap_or(i64::MAX))
                .push_bind(p.account_ids[*line].0)
                .push_bind(posting.direction.as_char().to_string())
                .push_bind(posting.amount.amount_minor())
                .push_bind(posting.amount.currency().code())
                .push_bind(posting.customer_id.as_ref().map(|c| c.as_str().to_owned()))
                .push_bind(opt(posting.document_ref.as_ref()))
                .push_bind(opt(posting.memo.as_ref()));
        });
        qb.build().persistent(false).execute(&mut *conn).await?;
    }
    let inserted_ids: Vec<i64> = written
        .iter()
        .filter_map(|p| ids.get(p.entry.idempotency_key().as_str()).copied())
        .collect();
    for chunk in inserted_ids.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO ledger_unsealed (entry_id) ");
        qb.push_values(chunk, |mut b, id| {
            b.push_bind(*id);
        });
        qb.build().persistent(false).execute(&mut *conn).await?;
    }
    if !written.is_empty() {
        let deltas =
            super::balance_deltas(&written).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        for chunk in deltas.chunks(MAX_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO ledger_balances (account_id, day, debit_minor, credit_minor) ",
            );
            qb.push_values(chunk, |mut b, (a, d, s)| {
                b.push_bind(*a)
                    .push_bind(d.to_string())
                    .push_bind(s.debit_minor)
                    .push_bind(s.credit_minor);
            });
            qb.push(
                " ON CONFLICT (account_id, day) DO UPDATE SET debit_minor = debit_minor + excluded.debit_minor, credit_minor = credit_minor + excluded.credit_minor",
            );
            qb.build().persistent(false).execute(&mut *conn).await?;
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::PeriodClosed))
        .collect())
}

fn raw_row(r: &SqliteRow) -> std::result::Result<RawRow, sqlx::Error> {
    let line: Option<i64> = r.try_get(9)?;
    let posting = match line {
        None => None,
        Some(line) => Some(RawPosting {
            line,
            account_id: r.try_get(10)?,
            direction: r.try_get(11)?,
            amount_minor: r.try_get(12)?,
            currency: r.try_get(13)?,
            customer_id: r.try_get(14)?,
            document_ref: r.try_get(15)?,
            memo: r.try_get(16)?,
        }),
    };
    let date: String = r.try_get(3)?;
    let recorded: String = r.try_get(4)?;
    Ok(RawRow {
        entry_id: r.try_get(0)?,
        entity: r.try_get(1)?,
        idempotency_key: r.try_get(2)?,
        effective_date: parse_date(&date)?,
        recorded_at: parse_ts(&recorded)?,
        source: r.try_get(5)?,
        external_ref: r.try_get(6)?,
        memo: r.try_get(7)?,
        reverses_entry_id: r.try_get(8)?,
        posting,
        seq: r.try_get(17)?,
        hash: r.try_get(18)?,
        reversed_by: r.try_get(19)?,
    })
}

pub(crate) async fn entry_rows(
    conn: &mut sqlx::SqliteConnection,
    ids: &[i64],
) -> Result<Vec<RawRow>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(ENTRY_ROW_SELECT);
        qb.push(" WHERE e.id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(") ORDER BY e.id, p.line");
        let rows = qb.build().persistent(false).fetch_all(&mut *conn).await?;
        for r in &rows {
            out.push(raw_row(r)?);
        }
    }
    Ok(out)
}

pub(crate) async fn set_period(
    pool: &SqlitePool,
    entity: &EntityCode,
    period: Period,
    closed: bool,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let status = if closed { "closed" } else { "open" };
    sqlx::query(
        "INSERT INTO ledger_periods (entity, period, status, changed_at, changed_by) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (entity, period) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
    )
    .bind(entity.as_str())
    .bind(period.to_string())
    .bind(status)
    .bind(ts(at))
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(ts(at))
    .bind(actor)
    .bind(if closed {
        "ledger.period.close"
    } else {
        "ledger.period.open"
    })
    .bind(format!("{entity}/{period}"))
    .bind(status)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn periods(
    pool: &SqlitePool,
    entity: Option<&EntityCode>,
) -> Result<Vec<super::PeriodRow>> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT entity, period, status, changed_at, changed_by FROM ledger_periods
         WHERE (?1 IS NULL OR entity = ?1) ORDER BY entity, period",
    )
    .bind(entity.map(EntityCode::as_str))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(e, p, s, at, by)| Ok((e, p, s, parse_ts(&at)?, by)))
        .collect()
}

pub(crate) async fn account_sums(
    pool: &SqlitePool,
    account_ids: Option<&[i64]>,
    as_of: Option<NaiveDate>,
) -> Result<HashMap<i64, Sums>> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT account_id, SUM(debit_minor), SUM(credit_minor) FROM ledger_balances WHERE 1 = 1",
    );
    if let Some(ids) = account_ids {
        qb.push(" AND account_id IN (");
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(*id);
        }
        sep.push_unseparated(")");
    }
    if let Some(d) = as_of {
        qb.push(" AND day <= ").push_bind(d.to_string());
    }
    qb.push(" GROUP BY account_id");
    // SQLite's SUM raises "integer overflow" rather than wrapping.
    let rows: Vec<(i64, i64, i64)> = qb
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(a, d, c)| {
            (
                a,
                Sums {
                    debit_minor: d,
                    credit_minor: c,
                },
            )
        })
        .collect())
}

pub(crate) async fn open_items(
    pool: &SqlitePool,
    customer: &CustomerId,
    as_of: Option<NaiveDate>,
) -> Result<Vec<RawOpenItem>> {
    let rows = sqlx::query(
        "SELECT p.account_id, p.document_ref, p.currency,
                SUM(CASE WHEN p.direction = 'D' THEN p.amount_minor ELSE 0 END),
                SUM(CASE WHEN p.direction = 'C' THEN p.amount_minor ELSE 0 END),
                MIN(e.effective_date), MAX(e.effective_date)
         FROM ledger_postings p
         JOIN ledger_entries e ON e.id = p.entry_id
         JOIN ledger_accounts a ON a.id = p.account_id
         WHERE p.customer_id = ?1 AND a.customer_subledger = 1 AND (?2 IS NULL OR e.effective_date <= ?2)
         GROUP BY p.account_id, p.document_ref, p.currency
         ORDER BY MIN(e.effective_date), p.document_ref",
    )
    .bind(customer.as_str())
    .bind(as_of.map(|d| d.to_string()))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let first: String = r.try_get(5)?;
            let last: String = r.try_get(6)?;
            Ok(RawOpenItem {
                account_id: r.try_get(0)?,
                document_ref: r.try_get(1)?,
                currency: r.try_get(2)?,
                debit_minor: r.try_get(3)?,
                credit_minor: r.try_get(4)?,
                first_date: parse_date(&first)?,
                last_date: parse_date(&last)?,
            })
        })
        .collect()
}
