//! The cashloop double-entry ledger.
//!
//! Integer minor units per ISO 4217 currency; entries of two or more postings that balance
//! per currency (checked before write and after read); append-only storage on SQLite or
//! PostgreSQL with reversals instead of edits; a SHA-256 hash chain sealed off the hot path;
//! accounting periods per entity; balances, trial balance and AR open items; streaming
//! exports for auditors.
//!
//! Invariants, stated as absences: this crate does no HTTP and knows nothing of Salesforce,
//! Sage or card data; no code path updates or deletes a journal row; no `f64` touches money.
//!
//! [`Ledger`] is the entry point. Writes go through a group-commit writer
//! ([`writer`]); reads go straight to the pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use db::Db;

pub mod canonical;
pub mod chain;
pub mod clock;
pub mod entry;
pub mod error;
pub mod export;
pub mod input;
pub mod money;
pub mod read;
pub mod scan;
mod store;
pub mod types;
mod verify;
pub mod writer;

pub use chain::{ChainBreak, VerifyReport};
pub use clock::{Clock, FixedClock, SystemClock};
pub use entry::{Account, EntryHeader, JournalEntry, NewAccount, NewEntry, NewPosting, Posting};
pub use error::{ErrorCode, LedgerError, Rejection, Result};
pub use money::{Currency, FxRate, Money, MoneyError, Rounding};
pub use read::{AccountBalance, OpenItem, TrialBalance, TrialBalanceRow};
pub use scan::ScanFilter;
pub use types::{
    AccountCode, AccountId, AccountType, CustomerId, Direction, EntityCode, EntryId,
    IdempotencyKey, Period, SourceName, Text,
};
pub use writer::{PostOutcome, WriterConfig};

use export::{CurrencyTotals, ExportEntry, ExportFormat, ExportMeta, ExportSummary};
use writer::{Shared, Writer};

/// How a [`Ledger`] is set up.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    pub writer: WriterConfig,
    pub clock: Arc<dyn Clock>,
}

impl LedgerOptions {
    pub fn for_db(db: &Db) -> Self {
        LedgerOptions {
            writer: WriterConfig::for_backend(db.backend()),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A period's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeriodState {
    pub entity: String,
    pub period: String,
    pub status: String,
    pub changed_at: chrono::DateTime<chrono::Utc>,
    pub changed_by: String,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub format: ExportFormat,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub entity: Option<EntityCode>,
    /// Keep only postings in this currency (SAF-T files are single-currency).
    pub currency: Option<Currency>,
}

/// The ledger: cheap to clone, shares one writer and one pool.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
    writer: Writer,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.shared.db.backend())
            .finish()
    }
}

impl Ledger {
    /// Starts the writer tasks on the current Tokio runtime. The database must be migrated.
    pub fn new(db: Db, options: LedgerOptions) -> Ledger {
        let shared = Arc::new(Shared {
            db,
            clock: options.clock,
            accounts: Default::default(),
        });
        let writer = Writer::start(shared.clone(), &options.writer);
        Ledger { shared, writer }
    }

    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    // ---- chart of accounts ----

    /// Adds an account; `actor` is recorded in the audit log.
    pub async fn create_account(&self, account: NewAccount, actor: &str) -> Result<Account> {
        let at = self.shared.clock.now();
        let created = store::insert_account(&self.shared.db, &account, at).await?;
        store::audit(
            &self.shared.db,
            at,
            actor,
            "ledger.account.create",
            &format!("{}/{}", created.entity, created.code),
            &format!(
                "{} {} {}",
                created.account_type.as_str(),
                created.currency,
                created.name
            ),
        )
        .await?;
        self.shared.accounts.reload(&self.shared.db).await?;
        Ok(created)
    }

    pub async fn accounts(&self, entity: Option<&EntityCode>) -> Result<Vec<Account>> {
        store::accounts(&self.shared.db, entity).await
    }

    pub async fn account(&self, entity: &EntityCode, code: &AccountCode) -> Result<Account> {
        let snap = self.shared.accounts.current();
        if let Some(a) = snap.get(entity.as_str(), code.as_str()) {
            return Ok(a.clone());
        }
        let snap = self.shared.accounts.reload(&self.shared.db).await?;
        snap.get(entity.as_str(), code.as_str())
            .cloned()
            .ok_or_else(|| {
                LedgerError::rejected(
                    ErrorCode::AccountNotFound,
                    Some("account".to_owned()),
                    format!("account: there is no account {code} in entity {entity}"),
                )
            })
    }

    // ---- journal ----

    /// Posts one entry. A replay of the same idempotency key and body returns the original.
    pub async fn post(&self, entry: NewEntry) -> Result<PostOutcome> {
        self.writer
            .submit(vec![entry])
            .await?
            .pop()
            .unwrap_or(Err(LedgerError::WriterStopped))
    }

    /// Posts one entry inside `tx`, so it commits or rolls back together with the caller's
    /// own writes (a payment's state change and its posting). Replays and rejections behave
    /// as in [`Ledger::post`]; after a storage error, roll `tx` back.
    pub async fn post_in_tx(&self, tx: &mut db::DbTx, entry: NewEntry) -> Result<PostOutcome> {
        writer::post_in(&self.shared, tx, entry).await
    }

    /// Posts up to `max_batch_entries` entries in one transaction; one result per entry
    /// (an invalid entry is rejected alone, the others are written).
    pub async fn post_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<PostOutcome>>> {
        self.writer.submit(entries).await
    }

    pub async fn entry(&self, id: EntryId) -> Result<JournalEntry> {
        writer::load_with_reload(&self.shared, &[id.0], self.shared.accounts.current())
            .await?
            .pop()
            .ok_or_else(|| {
                LedgerError::rejected(
                    ErrorCode::EntryNotFound,
                    Some("id".to_owned()),
                    format!("id: there is no entry {id}"),
                )
            })
    }

    pub async fn entry_by_key(&self, key: &IdempotencyKey) -> Result<Option<JournalEntry>> {
        match store::entry_id_by_key(&self.shared.db, key.as_str()).await? {
            Some(id) => Ok(Some(self.entry(EntryId(id)).await?)),
            None => Ok(None),
        }
    }

    /// Posts the reversal of entry `id` (dated `effective_date`, or today), linked to it.
    /// An entry can be reversed once; replaying the same key returns the first reversal.
    pub async fn reverse(
        &self,
        id: EntryId,
        idempotency_key: IdempotencyKey,
        effective_date: Option<NaiveDate>,
        memo: Option<Text>,
    ) -> Result<PostOutcome> {
        let original = self.entry(id).await?;
        let date = effective_date.unwrap_or_else(|| self.shared.clock.now().date_naive());
        let reversal = NewEntry::reversal_of(&original, idempotency_key.clone(), date, memo)?;
        let key_used = store::entry_id_by_key(&self.shared.db, idempotency_key.as_str())
            .await?
            .is_some();
        if !key_used && let Some(by) = store::reversed_by(&self.shared.db, id.0).await? {
            return Err(LedgerError::rejected(
                ErrorCode::AlreadyReversed,
                Some("id".to_owned()),
                format!("id: entry {id} was already reversed by entry {by}"),
            ));
        }
        self.post(reversal).await
    }

    // ---- periods ----

    pub async fn close_period(
        &self,
        entity: &EntityCode,
        period: Period,
        actor: &str,
    ) -> Result<()> {
        let at = self.shared.clock.now();
        store::set_period(&self.shared.db, entity, period, true, actor, at).await
    }

    pub async fn reopen_period(
        &self,
        entity: &EntityCode,
        period: Period,
        actor: &str,
    ) -> Result<()> {
        let at = self.shared.clock.now();
        store::set_period(&self.shared.db, entity, period, false, actor, at).await
    }

    pub async fn periods(&self, entity: Option<&EntityCode>) -> Result<Vec<PeriodState>> {
        Ok(store::periods(&self.shared.db, entity)
            .await?
            .into_iter()
            .map(
                |(entity, period, status, changed_at, changed_by)| PeriodState {
                    entity,
                    period,
                    status,
                    changed_at,
                    changed_by,
                },
            )
            .collect())
    }

    // ---- reads ----

    pub async fn balance(
        &self,
        entity: &EntityCode,
        code: &AccountCode,
        as_of: Option<NaiveDate>,
    ) -> Result<AccountBalance> {
        let account = self.account(entity, code).await?;
        let sums = store::account_sums(&self.shared.db, Some(&[account.id.0]), as_of)
            .await?
            .remove(&account.id.0)
            .unwrap_or_default();
        AccountBalance::new(account, as_of, sums)
    }

    pub async fn trial_balance(
        &self,
        entity: Option<&EntityCode>,
        as_of: Option<NaiveDate>,
    ) -> Result<TrialBalance> {
        let accounts = store::accounts(&self.shared.db, entity).await?;
        let mut sums = store::account_sums(&self.shared.db, None, as_of).await?;
        let rows = accounts
            .into_iter()
            .map(|a| {
                let s = sums.remove(&a.id.0).unwrap_or_default();
                (a, s)
            })
            .collect();
        TrialBalance::build(as_of, entity.map(|e| e.to_string()), rows)
    }

    /// A customer's open sub-ledger documents (net ≠ 0) as of a date.
    pub async fn open_items(
        &self,
        customer: &CustomerId,
        as_of: Option<NaiveDate>,
    ) -> Result<Vec<OpenItem>> {
        let snap = self.shared.accounts.reload(&self.shared.db).await?;
        let mut out = Vec::new();
        for r in store::open_items(&self.shared.db, customer, as_of).await? {
            let currency =
                Currency::parse(&r.currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            let open = r
                .debit_minor
                .checked_sub(r.credit_minor)
                .ok_or_else(|| LedgerError::Corrupt("open item overflows".to_owned()))?;
            if open == 0 {
                continue;
            }
            out.push(OpenItem {
                account_code: snap
                    .by_id
                    .get(&AccountId(r.account_id))
                    .map(|a| a.code.to_string())
                    .unwrap_or_default(),
                document_ref: r.document_ref,
                currency,
                debit_minor: r.debit_minor,
                credit_minor: r.credit_minor,
                open: Money::from_minor(open, currency),
                first_date: r.first_date,
                last_date: r.last_date,
            });
        }
        Ok(out)
    }

    // ---- chain ----

    /// Seals every pending entry into the hash chain now; returns how many.
    pub async fn seal(&self) -> Result<u64> {
        chain::seal_all(&self.shared).await
    }

    /// Runs the sealer in the background every `interval` until the returned sender is
    /// dropped or set to `true`.
    pub fn spawn_sealer(&self, interval: Duration) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(chain::run_sealer(self.shared.clone(), interval, rx));
        tx
    }

    /// Recomputes the chain and the balance table; `progress` gets entries checked so far.
    pub async fn verify(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
        chain::verify(&self.shared, progress).await
    }

    pub async fn chain_head(&self) -> Result<Option<(i64, [u8; 32])>> {
        chain::head(&self.shared.db).await
    }

    // ---- exports ----

    /// Control totals and context for an export, computed before streaming.
    pub async fn export_meta(&self, req: &ExportRequest) -> Result<ExportMeta> {
        let snap = self.shared.accounts.reload(&self.shared.db).await?;
        let max_entry_id = max_entry_id(&self.shared.db).await?;
        let (entries, postings, totals) = export_totals(&self.shared.db, req, max_entry_id).await?;
        Ok(ExportMeta {
            from: req.from,
            to: req.to,
            entity: req.entity.clone(),
            generated_at: self.shared.clock.now(),
            software_version: env!("CARGO_PKG_VERSION"),
            accounts: snap.by_id.clone(),
            entry_count: entries,
            posting_count: postings,
            totals,
            chain_head: self.chain_head().await?,
            max_entry_id,
        })
    }

    /// Streams the entries of `req` into `writer`; `progress` gets postings written so far.
    pub async fn export(
        &self,
        req: &ExportRequest,
        meta: &ExportMeta,
        writer: &mut dyn export::ExportWriter,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ExportSummary> {
        writer.begin(meta)?;
        let filter = ScanFilter {
            from: Some(req.from),
            to: Some(req.to),
            entity: req.entity.as_ref().map(|e| e.to_string()),
            max_id: Some(meta.max_entry_id.unwrap_or(0)),
        };
        let mut written = 0u64;
        let mut next_report = 0u64;
        scan::scan_entries(&self.shared.db, &filter, &meta.accounts, |s| {
            s.entry.check().map_err(LedgerError::Corrupt)?;
            let mut entry = s.entry;
            if let Some(c) = req.currency {
                entry.postings.retain(|p| p.amount.currency() == c);
                if entry.postings.is_empty() {
                    return Ok(());
                }
            }
            written += entry.postings.len() as u64;
            let hash = s.hash.as_deref().and_then(|h| <[u8; 32]>::try_from(h).ok());
            writer.entry(&ExportEntry {
                entry,
                seq: s.seq,
                hash,
                reversed_by: s.reversed_by.map(EntryId),
            })?;
            if written >= next_report {
                progress(written);
                next_report = written + 65_536;
            }
            Ok(())
        })
        .await?;
        progress(written);
        let summary = writer.finish()?;
        if summary.postings != meta.posting_count || summary.totals != meta.totals {
            return Err(LedgerError::Corrupt(format!(
                "export wrote {} postings but the control totals say {}: the ledger changed during export or is inconsistent",
                summary.postings, meta.posting_count
            )));
        }
        Ok(summary)
    }

    /// Balances before `from` and at `to` per account, for the ADS Trial_Balance file.
    pub async fn trial_balance_lines(
        &self,
        req: &ExportRequest,
    ) -> Result<Vec<export::TrialBalanceLine>> {
        let accounts = store::accounts(&self.shared.db, req.entity.as_ref()).await?;
        let begin = store::account_sums(&self.shared.db, None, req.from.pred_opt()).await?;
        let end = store::account_sums(&self.shared.db, None, Some(req.to)).await?;
        let net = |s: Option<&store::Sums>| -> i64 {
            s.map(|s| s.debit_minor.saturating_sub(s.credit_minor))
                .unwrap_or(0)
        };
        Ok(accounts
            .into_iter()
            .filter(|a| req.currency.is_none_or(|c| c == a.currency))
            .map(|a| export::TrialBalanceLine {
                beginning_minor: net(begin.get(&a.id.0)),
                ending_minor: net(end.get(&a.id.0)),
                account: a,
            })
            .collect())
    }
}

async fn max_entry_id(db: &Db) -> Result<Option<i64>> {
    const SQL: &str = "SELECT max(id) FROM ledger_entries";
    Ok(match db {
        Db::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await?,
        Db::Sqlite(s) => sqlx::query_scalar(SQL).fetch_one(&s.pool).await?,
    })
}

/// (entries, postings, totals per currency) over an export's range, up to entry `max_id`.
async fn export_totals(
    db: &Db,
    req: &ExportRequest,
    max_id: Option<i64>,
) -> Result<(u64, u64, BTreeMap<Currency, CurrencyTotals>)> {
    let max_id = max_id.unwrap_or(0);
    let entity = req.entity.as_ref().map(|e| e.as_str().to_owned());
    let currency = req.currency.map(|c| c.code().to_owned());
    let rows: Vec<(String, i64, i64, String, String)> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(
                "SELECT p.currency, count(DISTINCT p.entry_id), count(*),
                        COALESCE(SUM(CASE WHEN p.direction = 'D' THEN p.amount_minor END), 0)::text,
                        COALESCE(SUM(CASE WHEN p.direction = 'C' THEN p.amount_minor END), 0)::text
                 FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id
                 WHERE e.effective_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR e.entity = $3)
                   AND ($4::text IS NULL OR p.currency = $4) AND e.id <= $5
                 GROUP BY p.currency",
            )
            .bind(req.from)
            .bind(req.to)
            .bind(entity.as_deref())
            .bind(currency.as_deref())
            .bind(max_id)
            .fetch_all(p)
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(
                "SELECT p.currency, count(DISTINCT p.entry_id), count(*),
                        CAST(COALESCE(SUM(CASE WHEN p.direction = 'D' THEN p.amount_minor END), 0) AS TEXT),
                        CAST(COALESCE(SUM(CASE WHEN p.direction = 'C' THEN p.amount_minor END), 0) AS TEXT)
                 FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id
                 WHERE e.effective_date BETWEEN ?1 AND ?2 AND (?3 IS NULL OR e.entity = ?3)
                   AND (?4 IS NULL OR p.currency = ?4) AND e.id <= ?5
                 GROUP BY p.currency",
            )
            .bind(req.from.to_string())
            .bind(req.to.to_string())
            .bind(entity.as_deref())
            .bind(currency.as_deref())
            .bind(max_id)
            .fetch_all(&s.pool)
            .await?
        }
    };
    let entries: i64 = match db {
        Db::Postgres(p) => {
            sqlx::query_scalar(
                "SELECT count(DISTINCT p.entry_id) FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id
                 WHERE e.effective_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR e.entity = $3)
                   AND ($4::text IS NULL OR p.currency = $4) AND e.id <= $5",
            )
            .bind(req.from)
            .bind(req.to)
            .bind(entity.as_deref())
            .bind(currency.as_deref())
            .bind(max_id)
            .fetch_one(p)
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_scalar(
                "SELECT count(DISTINCT p.entry_id) FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id
                 WHERE e.effective_date BETWEEN ?1 AND ?2 AND (?3 IS NULL OR e.entity = ?3)
                   AND (?4 IS NULL OR p.currency = ?4) AND e.id <= ?5",
            )
            .bind(req.from.to_string())
            .bind(req.to.to_string())
            .bind(entity.as_deref())
            .bind(currency.as_deref())
            .bind(max_id)
            .fetch_one(&s.pool)
            .await?
        }
    };
    let mut totals = BTreeMap::new();
    let mut postings = 0u64;
    for (c, _, n, d, cr) in rows {
        let currency = Currency::parse(&c).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let parse = |s: &str| {
            s.parse::<i128>()
                .map_err(|_| LedgerError::Corrupt(format!("bad total {s:?}")))
        };
        totals.insert(
            currency,
            CurrencyTotals {
                debit_minor: parse(&d)?,
                credit_minor: parse(&cr)?,
            },
        );
        postings += u64::try_from(n).unwrap_or(0);
    }
    Ok((u64::try_from(entries).unwrap_or(0), postings, totals))
}

/// Re-export of the account map type used by export metadata.
pub type AccountMap = HashMap<AccountId, Account>;
