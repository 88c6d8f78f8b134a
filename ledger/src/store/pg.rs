//! PostgreSQL SQL for the ledger. Batches are written with `UNNEST` arrays, so a batch of
//! any size costs the same handful of round trips; balance rows are upserted in
//! (account, day) order so concurrent batches lock them in one order and cannot deadlock.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{Prepared, RawAccount, RawOpenItem, RawPosting, RawRow, Sums, WriteOutcome};
use crate::entry::{Account, NewAccount};
use crate::error::{LedgerError, Result};
use crate::types::{CustomerId, EntityCode, EntryId, Period, Text};

const ACCOUNT_COLUMNS: &str = "id, entity, code, name, account_type, normal_balance, currency, customer_subledger, created_at";

fn account_from_row(r: &sqlx::postgres::PgRow) -> Result<Account> {
    RawAccount {
        id: r.try_get(0)?,
        entity: r.try_get(1)?,
        code: r.try_get(2)?,
        name: r.try_get(3)?,
        account_type: r.try_get(4)?,
        normal_balance: r.try_get(5)?,
        currency: r.try_get(6)?,
        customer_subledger: r.try_get(7)?,
        created_at: r.try_get(8)?,
    }
    .parse()
}

pub(crate) async fn insert_account(
    pool: &PgPool,
    a: &NewAccount,
    at: DateTime<Utc>,
) -> Result<Account> {
    let sql = format!(
        "INSERT INTO ledger_accounts (entity, code, name, account_type, normal_balance, currency, customer_subledger, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ACCOUNT_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(a.entity.as_str())
        .bind(a.code.as_str())
        .bind(a.name.as_str())
        .bind(a.account_type.as_str())
        .bind(a.normal_balance.as_str())
        .bind(a.currency.code())
        .bind(a.customer_subledger)
        .bind(at)
        .fetch_one(pool)
        .await
        .map_err(|e| account_conflict(e, a))?;
    account_from_row(&row)
}

fn account_conflict(e: sqlx::Error, a: &NewAccount) -> LedgerError {
    if db::constraint_name(&e).as_deref() == Some("ledger_accounts_entity_code_key") {
        super::account_exists(a)
    } else {
        e.into()
    }
}

pub(crate) async fn accounts(pool: &PgPool, entity: Option<&EntityCode>) -> Result<Vec<Account>> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE ($1::text IS NULL OR entity = $1) ORDER BY entity, code"
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
    pool: &PgPool,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let out = write_batch_in(&mut tx, batch, recorded_at).await?;
    tx.commit().await?;
    Ok(out)
}

/// Writes a batch inside the caller's transaction (which the caller commits or rolls back).
pub(crate) async fn write_batch_in(
    conn: &mut sqlx::PgConnection,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; batch.len()];

    // 1. Periods: a shared advisory lock per (entity, month) keeps a concurrent close out
    //    until we commit; then read which of them are closed.
    let mut periods: Vec<(String, String)> = batch
        .iter()
        .map(|p| (p.entry.entity().as_str().to_owned(), p.period().to_string()))
        .collect();
    periods.sort();
    periods.dedup();
    let mut keys: Vec<i64> = periods
        .iter()
        .map(|(e, p)| db::lock_key(&format!("ledger-period:{e}:{p}")))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query("SELECT count(pg_advisory_xact_lock_shared(k)) FROM UNNEST($1::int8[]) AS k")
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    let (ents, pers): (Vec<String>, Vec<String>) = periods.into_iter().unzip();
    let closed: Vec<(String, String)> = sqlx::query_as(
        "SELECT entity, period FROM ledger_periods
         WHERE status = 'closed' AND (entity, period) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&ents)
    .bind(&pers)
    .fetch_all(&mut *conn)
    .await?;
    let mut live: Vec<(usize, &Prepared)> = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        let key = (p.entry.entity().as_str().to_owned(), p.period().to_string());
        if closed.contains(&key) {
            outcomes[i] = Some(WriteOutcome::PeriodClosed);
        } else {
            live.push((i, p));
        }
    }

    // 2. Headers, skipping keys that already exist; the unsealed queue row goes with each.
    let n = live.len();
    let mut entity = Vec::with_capacity(n);
    let mut key = Vec::with_capacity(n);
    let mut hash = Vec::with_capacity(n);
    let mut date = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut xref = Vec::with_capacity(n);
    let mut memo = Vec::with_capacity(n);
    let mut reverses = Vec::with_capacity(n);
    for (_, p) in &live {
        let e = &p.entry;
        entity.push(e.entity().as_str().to_owned());
        key.push(e.idempotency_key().as_str().to_owned());
        hash.push(p.request_hash.to_vec());
        date.push(e.effective_date());
        source.push(e.source().as_str().to_owned());
        xref.push(opt(e.external_ref()));
        memo.push(opt(e.memo()));
        reverses.push(e.reverses().map(|r| r.0));
    }
    let inserted: Vec<(i64, String)> = if n == 0 {
        Vec::new()
    } else {
        sqlx::query_as(
            "WITH ins AS (
                INSERT INTO ledger_entries
                    (entity, idempotency_key, request_hash, effective_date, recorded_at, source, external_ref, memo, reverses_entry_id)
                SELECT u.entity, u.key, u.hash, u.day, $5, u.source, u.xref, u.memo, u.reverses
                FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::date[], $6::text[], $7::text[], $8::text[], $9::int8[])
                    AS u(entity, key, hash, day, source, xref, memo, reverses)
                ON CONFLICT ON CONSTRAINT ledger_entries_idempotency_key_key DO NOTHING
                RETURNING id, idempotency_key
            ), queued AS (
                INSERT INTO ledger_unsealed (entry_id) SELECT id FROM ins
            )
            SELECT id, idempotency_key FROM ins",
        )
        .bind(&entity)
        .bind(&key)
        .bind(&hash)
        .bind(&date)
        .bind(recorded_at)
        .bind(&source)
        .bind(&xref)
        .bind(&memo)
        .bind(&reverses)
        .fetch_all(&mut *conn)
        .await?
    };
    let ids: HashMap<String, i64> = inserted.into_iter().map(|(id, k)| (k, id)).collect();

    // 3. Keys that were not inserted already exist: fetch what they hold.
    let missing: Vec<String> = live
        .iter()
        .filter(|(_, p)| !ids.contains_key(p.entry.idempotency_key().as_str()))
        .map(|(_, p)| p.entry.idempotency_key().as_str().to_owned())
        .collect();
    let mut existing: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
    if !missing.is_empty() {
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, idempotency_key, request_hash FROM ledger_entries WHERE idempotency_key = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        existing = rows.into_iter().map(|(id, k, h)| (k, (id, h))).collect();
    }

    // 4. Postings and balances of the inserted entries.
    let mut written: Vec<&Prepared> = Vec::with_capacity(n);
    let (mut pe, mut pl, mut pa, mut pd, mut pm, mut pc, mut pcu, mut pdoc, mut pmemo) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (i, p) in &live {
        let k = p.entry.idempotency_key().as_str();
        if let Some(id) = ids.get(k) {
            outcomes[*i] = Some(WriteOutcome::Inserted(EntryId(*id)));
            written.push(p);
            for (line, (posting, account)) in
                p.entry.postings().iter().zip(&p.account_ids).enumerate()
            {
                pe.push(*id);
                pl.push(i32::try_from(line + 1).unwrap_or(i32::MAX));
                pa.push(account.0);
                pd.push(posting.direction.as_char().to_string());
                pm.push(posting.amount.amount_minor());
                pc.push(posting.amount.currency().code());
                pcu.push(posting.customer_id.as_ref().map(|c| c.as_str().to_owned()));
                pdoc.push(opt(posting.document_ref.as_ref()));
                pmemo.push(opt(posting.memo.as_ref()));
            }
        } else if let Some((id, h)) = existing.get(k) {
            outcomes[*i] = Some(WriteOutcome::Existing {
                id: EntryId(*id),
                request_hash: h.clone(),
            });
        } else {
            // Neither inserted nor found: the conflicting row vanished, which append-only
            // tables forbid. Fail the batch rather than guess.
            return Err(sqlx::Error::Protocol(format!(
                "idempotency key {k} neither inserted nor found"
            )));
        }
    }
    if !written.is_empty() {
        let deltas =
            super::balance_deltas(&written).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let (ba, bd, bdeb, bcred): (Vec<i64>, Vec<NaiveDate>, Vec<i64>, Vec<i64>) =
            deltas.into_iter().fold(
                (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
                |mut acc, (a, d, s)| {
                    acc.0.push(a);
                    acc.1.push(d);
                    acc.2.push(s.debit_minor);
                    acc.3.push(s.credit_minor);
                    acc
                },
            );
        sqlx::query(
            "WITH p AS (
                INSERT INTO ledger_postings
                    (entry_id, line, account_id, direction, amount_minor, currency, customer_id, document_ref, memo)
                SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[])
            )
            INSERT INTO ledger_balances AS b (account_id, day, debit_minor, credit_minor)
            SELECT * FROM UNNEST($10::int8[], $11::date[], $12::int8[], $13::int8[])
            ON CONFLICT (account_id, day) DO UPDATE
                SET debit_minor = b.debit_minor + EXCLUDED.debit_minor,
                    credit_minor = b.credit_minor + EXCLUDED.credit_minor",
        )
        .bind(&pe)
        .bind(&pl)
        .bind(&pa)
        .bind(&pd)
        .bind(&pm)
        .bind(&pc)
        .bind(&pcu)
        .bind(&pdoc)
        .bind(&pmemo)
        .bind(&ba)
        .bind(&bd)
        .bind(&bdeb)
        .bind(&bcred)
        .execute(&mut *conn)
        .await?;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::PeriodClosed))
        .collect())
}

pub(crate) fn raw_row(r: &sqlx::postgres::PgRow) -> std::result::Result<RawRow, sqlx::Error> {
    let line: Option<i32> = r.try_get(9)?;
    let posting = match line {
        None => None,
        Some(line) => Some(RawPosting {
            line: i64::from(line),
            account_id: r.try_get(10)?,
            direction: r.try_get(11)?,
            amount_minor: r.try_get(12)?,
            currency: r.try_get(13)?,
            customer_id: r.try_get(14)?,
            document_ref: r.try_get(15)?,
            memo: r.try_get(16)?,
        }),
    };
    Ok(RawRow {
        entry_id: r.try_get(0)?,
        entity: r.try_get(1)?,
        idempotency_key: r.try_get(2)?,
        effective_date: r.try_get(3)?,
        recorded_at: r.try_get(4)?,
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

/// Entries by id. The joins are LATERAL with `OFFSET 0` (which keeps the planner from
/// flattening them): one index probe per entry whatever the statistics say. As plain joins,
/// stale statistics after a bulk load made PostgreSQL hash-join the whole postings table to
/// fetch a few thousand entries.
const ENTRIES_BY_ID: &str = "SELECT e.id, e.entity, e.idempotency_key, e.effective_date, e.recorded_at, e.source,
        e.external_ref, e.memo, e.reverses_entry_id,
        p.line, p.account_id, p.direction, p.amount_minor, p.currency, p.customer_id, p.document_ref, p.memo,
        c.seq, c.hash, r.id
    FROM ledger_entries e
    LEFT JOIN LATERAL (SELECT * FROM ledger_postings p WHERE p.entry_id = e.id OFFSET 0) p ON true
    LEFT JOIN LATERAL (SELECT seq, hash FROM ledger_chain c WHERE c.entry_id = e.id OFFSET 0) c ON true
    LEFT JOIN LATERAL (SELECT id FROM ledger_entries r WHERE r.reverses_entry_id = e.id OFFSET 0) r ON true
    WHERE e.id = ANY($1) ORDER BY e.id, p.line";

pub(crate) async fn entry_rows<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    ids: &[i64],
) -> Result<Vec<RawRow>> {
    let rows = sqlx::query(ENTRIES_BY_ID).bind(ids).fetch_all(conn).await?;
    Ok(rows
        .iter()
        .map(raw_row)
        .collect::<std::result::Result<_, _>>()?)
}

async fn lock_period(
    tx: &mut Transaction<'_, Postgres>,
    entity: &EntityCode,
    period: Period,
) -> Result<()> {
    let key = db::lock_key(&format!("ledger-period:{entity}:{period}"));
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn set_period(
    pool: &PgPool,
    entity: &EntityCode,
    period: Period,
    closed: bool,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Exclusive: waits for every in-flight batch posting into this period to commit.
    lock_period(&mut tx, entity, period).await?;
    let status = if closed { "closed" } else { "open" };
    sqlx::query(
        "INSERT INTO ledger_periods (entity, period, status, changed_at, changed_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (entity, period) DO UPDATE SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by",
    )
    .bind(entity.as_str())
    .bind(period.to_string())
    .bind(status)
    .bind(at)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at)
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
    pool: &PgPool,
    entity: Option<&EntityCode>,
) -> Result<Vec<super::PeriodRow>> {
    Ok(sqlx::query_as(
        "SELECT entity, period, status, changed_at, changed_by FROM ledger_periods
         WHERE ($1::text IS NULL OR entity = $1) ORDER BY entity, period",
    )
    .bind(entity.map(EntityCode::as_str))
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn account_sums(
    pool: &PgPool,
    account_ids: Option<&[i64]>,
    as_of: Option<NaiveDate>,
) -> Result<HashMap<i64, Sums>> {
    // SUM(bigint) is numeric in PostgreSQL; cast back, an overflow errors rather than wraps.
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT account_id, SUM(debit_minor)::int8, SUM(credit_minor)::int8 FROM ledger_balances
         WHERE ($1::int8[] IS NULL OR account_id = ANY($1)) AND ($2::date IS NULL OR day <= $2)
         GROUP BY account_id",
    )
    .bind(account_ids)
    .bind(as_of)
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
    pool: &PgPool,
    customer: &CustomerId,
    as_of: Option<NaiveDate>,
) -> Result<Vec<RawOpenItem>> {
    let rows = sqlx::query(
        "SELECT p.account_id, p.document_ref, p.currency,
                SUM(CASE WHEN p.direction = 'D' THEN p.amount_minor ELSE 0 END)::int8,
                SUM(CASE WHEN p.direction = 'C' THEN p.amount_minor ELSE 0 END)::int8,
                MIN(e.effective_date), MAX(e.effective_date)
         FROM ledger_postings p
         JOIN ledger_entries e ON e.id = p.entry_id
         JOIN ledger_accounts a ON a.id = p.account_id
         WHERE p.customer_id = $1 AND a.customer_subledger AND ($2::date IS NULL OR e.effective_date <= $2)
         GROUP BY p.account_id, p.document_ref, p.currency
         ORDER BY MIN(e.effective_date), p.document_ref",
    )
    .bind(customer.as_str())
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RawOpenItem {
                account_id: r.try_get(0)?,
                document_ref: r.try_get(1)?,
                currency: r.try_get(2)?,
                debit_minor: r.try_get(3)?,
                credit_minor: r.try_get(4)?,
                first_date: r.try_get(5)?,
                last_date: r.try_get(6)?,
            })
        })
        .collect()
}
