//! The ledger's SQL, one module per backend, behind one set of functions that dispatch on
//! [`Db`]. Rows come back as plain [`RawRow`]s and are turned into domain values in one
//! place ([`Assembler`]), so both backends are parsed and checked by the same code.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use db::Db;

use crate::entry::{Account, JournalEntry, NewAccount, NewEntry, Posting};
use crate::error::{LedgerError, Result};
use crate::money::{Currency, Money};
use crate::types::{
    AccountCode, AccountId, AccountType, CustomerId, Direction, EntityCode, EntryId,
    IdempotencyKey, Period, SourceName, Text,
};

pub(crate) mod pg;
pub(crate) mod sqlite;

/// An entry ready for the database: validated, accounts resolved.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub entry: NewEntry,
    pub request_hash: [u8; 32],
    /// Account id of each posting, in posting order.
    pub account_ids: Vec<AccountId>,
}

impl Prepared {
    pub fn period(&self) -> Period {
        Period::of(self.entry.effective_date())
    }
}

/// What happened to one prepared entry in a batch write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Inserted(EntryId),
    /// The idempotency key was already used, by the entry with this id and request hash.
    Existing {
        id: EntryId,
        request_hash: Vec<u8>,
    },
    PeriodClosed,
}

/// The joined entry / posting / chain / reversal row both backends select (same SQL).
pub(crate) const ENTRY_ROW_SELECT: &str = "SELECT e.id, e.entity, e.idempotency_key, e.effective_date, e.recorded_at, e.source,
        e.external_ref, e.memo, e.reverses_entry_id,
        p.line, p.account_id, p.direction, p.amount_minor, p.currency, p.customer_id, p.document_ref, p.memo,
        c.seq, c.hash, r.id
    FROM ledger_entries e
    LEFT JOIN ledger_postings p ON p.entry_id = e.id
    LEFT JOIN ledger_chain c ON c.entry_id = e.id
    LEFT JOIN ledger_entries r ON r.reverses_entry_id = e.id";

/// One joined entry-and-posting row, as both backends return it.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub entry_id: i64,
    pub entity: String,
    pub idempotency_key: String,
    pub effective_date: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub external_ref: Option<String>,
    pub memo: Option<String>,
    pub reverses_entry_id: Option<i64>,
    /// `None` when the entry has no postings at all (a LEFT JOIN miss: corrupt).
    pub posting: Option<RawPosting>,
    pub seq: Option<i64>,
    pub hash: Option<Vec<u8>>,
    pub reversed_by: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawPosting {
    pub line: i64,
    pub account_id: i64,
    pub direction: String,
    pub amount_minor: i64,
    pub currency: String,
    pub customer_id: Option<String>,
    pub document_ref: Option<String>,
    pub memo: Option<String>,
}

/// An assembled entry plus the chain columns that came with it.
#[derive(Debug, Clone)]
pub(crate) struct ScannedEntry {
    pub entry: JournalEntry,
    pub seq: Option<i64>,
    pub hash: Option<Vec<u8>>,
    pub reversed_by: Option<i64>,
}

fn corrupt(entry_id: i64, what: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("entry {entry_id}: {what}"))
}

/// Groups rows ordered by (entry_id, line) into entries, parsing every field.
#[derive(Debug)]
pub(crate) struct Assembler<'a> {
    accounts: &'a HashMap<AccountId, Account>,
    current: Option<ScannedEntry>,
}

impl<'a> Assembler<'a> {
    pub fn new(accounts: &'a HashMap<AccountId, Account>) -> Self {
        Assembler {
            accounts,
            current: None,
        }
    }

    /// Feeds one row; returns the previous entry when this row starts a new one.
    pub fn push(&mut self, row: RawRow) -> Result<Option<ScannedEntry>> {
        let mut done = None;
        let same = self
            .current
            .as_ref()
            .is_some_and(|c| c.entry.id.0 == row.entry_id);
        if !same {
            done = self.current.take();
            self.current = Some(self.header(&row)?);
        }
        if let (Some(cur), Some(p)) = (self.current.as_mut(), row.posting) {
            let posting = Self::posting(self.accounts, row.entry_id, p)?;
            cur.entry.postings.push(posting);
        }
        Ok(done)
    }

    pub fn finish(&mut self) -> Option<ScannedEntry> {
        self.current.take()
    }

    fn header(&self, row: &RawRow) -> Result<ScannedEntry> {
        let id = row.entry_id;
        let text = |v: &Option<String>, field: &str| -> Result<Option<Text>> {
            v.as_deref()
                .map(|s| Text::parse(s, field).map_err(|e| corrupt(id, e)))
                .transpose()
        };
        Ok(ScannedEntry {
            entry: JournalEntry {
                id: EntryId(id),
                entity: EntityCode::parse(&row.entity, "entity").map_err(|e| corrupt(id, e))?,
                idempotency_key: IdempotencyKey::parse(&row.idempotency_key, "idempotency_key")
                    .map_err(|e| corrupt(id, e))?,
                effective_date: row.effective_date,
                recorded_at: row.recorded_at,
                source: SourceName::parse(&row.source, "source").map_err(|e| corrupt(id, e))?,
                external_ref: text(&row.external_ref, "external_ref")?,
                memo: text(&row.memo, "memo")?,
                reverses_entry_id: row.reverses_entry_id.map(EntryId),
                postings: Vec::with_capacity(2),
            },
            seq: row.seq,
            hash: row.hash.clone(),
            reversed_by: row.reversed_by,
        })
    }

    fn posting(accounts: &HashMap<AccountId, Account>, id: i64, p: RawPosting) -> Result<Posting> {
        let account = accounts.get(&AccountId(p.account_id)).ok_or_else(|| {
            corrupt(
                id,
                format!("posting to unknown account id {}", p.account_id),
            )
        })?;
        let currency = Currency::parse(&p.currency).map_err(|e| corrupt(id, e))?;
        let opt_text = |v: Option<String>, f: &str| -> Result<Option<Text>> {
            v.map(|s| Text::parse(&s, f).map_err(|e| corrupt(id, e)))
                .transpose()
        };
        Ok(Posting {
            line: u32::try_from(p.line).map_err(|_| corrupt(id, "bad line number"))?,
            account_id: account.id,
            account_code: account.code.clone(),
            direction: Direction::from_db(&p.direction)
                .ok_or_else(|| corrupt(id, format!("bad direction {:?}", p.direction)))?,
            amount: Money::from_minor(p.amount_minor, currency),
            customer_id: p
                .customer_id
                .map(|c| CustomerId::parse(&c, "customer_id").map_err(|e| corrupt(id, e)))
                .transpose()?,
            document_ref: opt_text(p.document_ref, "document_ref")?,
            memo: opt_text(p.memo, "memo")?,
        })
    }
}

/// Raw account columns, parsed in one place.
#[derive(Debug)]
pub(crate) struct RawAccount {
    pub id: i64,
    pub entity: String,
    pub code: String,
    pub name: String,
    pub account_type: String,
    pub normal_balance: String,
    pub currency: String,
    pub customer_subledger: bool,
    pub created_at: DateTime<Utc>,
}

impl RawAccount {
    pub fn parse(self) -> Result<Account> {
        let bad = |what: &str| LedgerError::Corrupt(format!("account {}: bad {what}", self.id));
        Ok(Account {
            id: AccountId(self.id),
            entity: EntityCode::parse(&self.entity, "entity").map_err(|_| bad("entity"))?,
            code: AccountCode::parse(&self.code, "code").map_err(|_| bad("code"))?,
            account_type: AccountType::parse(&self.account_type).ok_or_else(|| bad("type"))?,
            normal_balance: Direction::parse(&self.normal_balance)
                .ok_or_else(|| bad("normal balance"))?,
            currency: Currency::parse(&self.currency).map_err(|_| bad("currency"))?,
            customer_subledger: self.customer_subledger,
            created_at: self.created_at,
            name: self.name,
        })
    }
}

/// Debit and credit sums of one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub debit_minor: i64,
    pub credit_minor: i64,
}

/// An open sub-ledger document of a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawOpenItem {
    pub account_id: i64,
    pub document_ref: Option<String>,
    pub currency: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub first_date: NaiveDate,
    pub last_date: NaiveDate,
}

/// Account rows per (account, day) to add to `ledger_balances`, sorted — the lock order.
pub(crate) fn balance_deltas(batch: &[&Prepared]) -> Result<Vec<(i64, NaiveDate, Sums)>> {
    let mut map: std::collections::BTreeMap<(i64, NaiveDate), Sums> = Default::default();
    for p in batch {
        let day = p.entry.effective_date();
        for (posting, account) in p.entry.postings().iter().zip(&p.account_ids) {
            let s = map.entry((account.0, day)).or_default();
            let amount = posting.amount.amount_minor();
            let slot = match posting.direction {
                Direction::Debit => &mut s.debit_minor,
                Direction::Credit => &mut s.credit_minor,
            };
            *slot = slot.checked_add(amount).ok_or_else(|| {
                LedgerError::rejected(
                    crate::error::ErrorCode::AmountOverflow,
                    None,
                    "the balance of an account would overflow 64-bit minor units",
                )
            })?;
        }
    }
    Ok(map.into_iter().map(|((a, d), s)| (a, d, s)).collect())
}

pub(crate) fn account_exists(a: &NewAccount) -> LedgerError {
    LedgerError::rejected(
        crate::error::ErrorCode::AccountExists,
        Some("code".to_owned()),
        format!(
            "code: account {} already exists in entity {}",
            a.code, a.entity
        ),
    )
}

pub(crate) async fn insert_account(db: &Db, a: &NewAccount, at: DateTime<Utc>) -> Result<Account> {
    match db {
        Db::Sqlite(s) => sqlite::insert_account(&s.pool, a, at).await,
        Db::Postgres(p) => pg::insert_account(p, a, at).await,
    }
}

pub(crate) async fn accounts(db: &Db, entity: Option<&EntityCode>) -> Result<Vec<Account>> {
    match db {
        Db::Sqlite(s) => sqlite::accounts(&s.pool, entity).await,
        Db::Postgres(p) => pg::accounts(p, entity).await,
    }
}

pub(crate) async fn write_batch_in(
    tx: &mut db::DbTx,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    match tx {
        db::DbTx::Sqlite(t) => sqlite::write_batch_in(&mut *t, batch, recorded_at).await,
        db::DbTx::Postgres(t) => pg::write_batch_in(&mut *t, batch, recorded_at).await,
    }
}

pub(crate) async fn write_batch(
    db: &Db,
    batch: &[&Prepared],
    recorded_at: DateTime<Utc>,
) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
    match db {
        Db::Sqlite(s) => sqlite::write_batch(&s.pool, batch, recorded_at).await,
        Db::Postgres(p) => pg::write_batch(p, batch, recorded_at).await,
    }
}

/// From this many ids on, SQLite entries are loaded through the bulk reader.
const BULK_LOAD_MIN_IDS: usize = 64;

pub(crate) async fn load_entries(
    db: &Db,
    ids: &[i64],
    accounts: &HashMap<AccountId, Account>,
) -> Result<Vec<JournalEntry>> {
    let rows = match db {
        // Many entries (the sealer): the bulk reader; sqlx's SQLite driver costs ~6 µs a row.
        Db::Sqlite(s) if ids.len() > BULK_LOAD_MIN_IDS => {
            crate::scan::sqlite_entries_by_id(s.path.clone(), ids.to_vec()).await?
        }
        Db::Sqlite(s) => sqlite::entry_rows(&mut *s.pool.acquire().await?, ids).await?,
        Db::Postgres(p) => pg::entry_rows(p, ids).await?,
    };
    assemble(rows, accounts)
}

/// Entries by id, read inside the caller's transaction (so its own writes are visible).
pub(crate) async fn load_entries_in(
    tx: &mut db::DbTx,
    ids: &[i64],
    accounts: &HashMap<AccountId, Account>,
) -> Result<Vec<JournalEntry>> {
    let rows = match tx {
        db::DbTx::Sqlite(t) => sqlite::entry_rows(&mut *t, ids).await?,
        db::DbTx::Postgres(t) => pg::entry_rows(&mut **t, ids).await?,
    };
    assemble(rows, accounts)
}

/// Groups rows into entries and applies the after-read check to each.
fn assemble(
    rows: Vec<RawRow>,
    accounts: &HashMap<AccountId, Account>,
) -> Result<Vec<JournalEntry>> {
    let mut asm = Assembler::new(accounts);
    let mut out = Vec::new();
    for row in rows {
        if let Some(done) = asm.push(row)? {
            out.push(done.entry);
        }
    }
    out.extend(asm.finish().map(|s| s.entry));
    for e in &out {
        e.check().map_err(LedgerError::Corrupt)?;
    }
    Ok(out)
}

pub(crate) async fn entry_id_by_key(db: &Db, key: &str) -> Result<Option<i64>> {
    Ok(match db {
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT id FROM ledger_entries WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&s.pool)
                .await?
        }
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT id FROM ledger_entries WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?
        }
    })
}

pub(crate) async fn reversed_by(db: &Db, id: i64) -> Result<Option<i64>> {
    Ok(match db {
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT id FROM ledger_entries WHERE reverses_entry_id = ?")
                .bind(id)
                .fetch_optional(&s.pool)
                .await?
        }
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT id FROM ledger_entries WHERE reverses_entry_id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }
    })
}

pub(crate) async fn set_period(
    db: &Db,
    entity: &EntityCode,
    period: Period,
    closed: bool,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    match db {
        Db::Sqlite(s) => sqlite::set_period(&s.pool, entity, period, closed, actor, at).await,
        Db::Postgres(p) => pg::set_period(p, entity, period, closed, actor, at).await,
    }
}

/// (entity, period, status, changed_at, changed_by) rows.
pub(crate) type PeriodRow = (String, String, String, DateTime<Utc>, String);

pub(crate) async fn periods(db: &Db, entity: Option<&EntityCode>) -> Result<Vec<PeriodRow>> {
    match db {
        Db::Sqlite(s) => sqlite::periods(&s.pool, entity).await,
        Db::Postgres(p) => pg::periods(p, entity).await,
    }
}

/// Debit and credit sums per account for effective dates up to `as_of`.
pub(crate) async fn account_sums(
    db: &Db,
    account_ids: Option<&[i64]>,
    as_of: Option<NaiveDate>,
) -> Result<HashMap<i64, Sums>> {
    match db {
        Db::Sqlite(s) => sqlite::account_sums(&s.pool, account_ids, as_of).await,
        Db::Postgres(p) => pg::account_sums(p, account_ids, as_of).await,
    }
}

pub(crate) async fn open_items(
    db: &Db,
    customer: &CustomerId,
    as_of: Option<NaiveDate>,
) -> Result<Vec<RawOpenItem>> {
    match db {
        Db::Sqlite(s) => sqlite::open_items(&s.pool, customer, as_of).await,
        Db::Postgres(p) => pg::open_items(p, customer, as_of).await,
    }
}

pub(crate) async fn audit(
    db: &Db,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    db::audit::record(
        db,
        db::audit::AuditRecord {
            at,
            actor,
            action,
            subject,
            detail,
        },
    )
    .await?;
    Ok(())
}
