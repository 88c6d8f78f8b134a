//! Storage-backed reconciliation: imported inputs, runs with their high-water marks and
//! results, the per-period lease, reports and approvals (tables of migration 0009).
//!
//! Inputs are kept as canonical CSV records (one per row, append-only); a run reads the latest
//! version of each record up to a high-water mark and parses them with the same readers as a
//! file import, so the database and a file give the engine identical inputs. A run's results
//! are stored with a digest over their canonical rows: a rerun on the same inputs, or the same
//! run on the other backend, gives the same digest.
//!
//! SQL is written once with `$N` placeholders, which both backends accept; times are epoch
//! milliseconds for the same reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use db::{Db, DbTx, on_pool, on_tx};
use ledger::{
    AccountCode, Currency, CustomerId as LedgerCustomer, Direction, EntityCode as LedgerEntity,
    EntryHeader, IdempotencyKey, Ledger, Money, NewEntry, NewPosting, SourceName, Text,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::import::{self, ImportError, InvalidInput, Kind};
use crate::matching::{Adjustment, MatchConfig, Reconciliation};
use crate::model::Inputs;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file did not parse; nothing was imported.
    #[error("{0}")]
    Invalid(InvalidInput),
    #[error("{0}")]
    Import(String),
    #[error(
        "a reconciliation of {name} is already running ({holder}, lease until {until_ms} ms); try again when it finishes"
    )]
    Busy {
        name: String,
        holder: String,
        until_ms: i64,
    },
    #[error("run {0} not found")]
    RunNotFound(i64),
    #[error("stored input is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub import_id: i64,
    pub kind: Kind,
    pub rows: u64,
    pub added: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Open items missing from an AR snapshot, now closed.
    pub closed: u64,
    pub high_water: i64,
}

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// `YYYY-MM`.
    pub period: String,
    pub entity: Option<String>,
    pub dry_run: bool,
    pub actor: String,
    pub config: MatchConfig,
    /// How long the period lease lasts without renewal (renewed while the run works).
    pub lease_ms: i64,
}

/// A stored (or, for a dry run, computed) run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// `None` for a dry run (nothing stored).
    pub id: Option<i64>,
    pub period: String,
    pub entity: String,
    pub high_water: i64,
    pub digest: String,
    pub actor: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

/// One stored result row (payment, open item or settlement).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ResultRow {
    pub kind: String,
    pub ord: i64,
    pub item_key: String,
    pub entity: String,
    pub customer: String,
    pub currency: String,
    pub amount_minor: i64,
    pub category: String,
    pub rule: Option<String>,
    pub confidence: i64,
    pub applied_minor: i64,
    pub open_minor: i64,
    pub fx_difference_minor: i64,
    pub related: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApplicationRow {
    pub ord: i64,
    pub payment_key: String,
    pub payment_source: String,
    pub payment_date: String,
    pub item_key: String,
    pub document: String,
    pub rule: String,
    pub confidence: i64,
    pub payment_amount_minor: i64,
    pub payment_currency: String,
    pub item_amount_minor: i64,
    pub item_currency: String,
    pub fx_rate: Option<String>,
    pub fx_rate_date: Option<String>,
    pub sage_job_id: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SuggestionRow {
    pub ord: i64,
    pub payment_key: String,
    pub item_keys: String,
    pub sum_minor: i64,
    pub confidence: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AdjustmentRow {
    pub ord: i64,
    pub kind: String,
    pub payment_key: Option<String>,
    pub item_key: Option<String>,
    pub document: Option<String>,
    pub customer: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub ledger_entry_id: Option<i64>,
    pub approved_by: Option<String>,
}

/// Count and amount per currency of one category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub count: u64,
    pub amount_minor: BTreeMap<String, i64>,
}

/// Everything `cashloop reconcile report` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub run: RunInfo,
    /// kind (`payment`, `item`, `settlement`) → category → total.
    pub totals: BTreeMap<String, BTreeMap<String, Total>>,
    pub results: Vec<ResultRow>,
    pub applications: Vec<ApplicationRow>,
    pub suggestions: Vec<SuggestionRow>,
    pub adjustments: Vec<AdjustmentRow>,
}

impl RunReport {
    /// The report of a result that is not stored (a run over files).
    pub fn unstored(recon: &Reconciliation) -> RunReport {
        let rows = Rows::of(recon);
        RunReport::build(
            RunInfo {
                id: None,
                period: recon
                    .inputs
                    .payments
                    .iter()
                    .map(|p| p.date)
                    .max()
                    .map(|d| d.format("%Y-%m").to_string())
                    .unwrap_or_default(),
                entity: String::new(),
                high_water: 0,
                digest: rows.digest(0, ""),
                actor: String::new(),
                started_at_ms: 0,
                finished_at_ms: 0,
            },
            rows.results,
            rows.applications,
            rows.suggestions,
            rows.adjustments,
        )
    }

    fn build(
        run: RunInfo,
        results: Vec<ResultRow>,
        applications: Vec<ApplicationRow>,
        suggestions: Vec<SuggestionRow>,
        adjustments: Vec<AdjustmentRow>,
    ) -> RunReport {
        let mut totals: BTreeMap<String, BTreeMap<String, Total>> = BTreeMap::new();
        for r in &results {
            let t = totals
                .entry(r.kind.clone())
                .or_default()
                .entry(r.category.clone())
                .or_default();
            t.count += 1;
            *t.amount_minor.entry(r.currency.clone()).or_default() += r.amount_minor;
        }
        RunReport {
            run,
            totals,
            results,
            applications,
            suggestions,
            adjustments,
        }
    }
}

/// The ledger accounts adjustments in one currency post to.
#[derive(Clone, Debug)]
pub struct AdjustmentAccounts {
    pub entity: LedgerEntity,
    pub receivable: AccountCode,
    pub write_off: AccountCode,
    pub fx_gain_loss: AccountCode,
    pub unapplied_cash: AccountCode,
}

/// What an approval did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approved {
    pub ord: i64,
    pub kind: String,
    pub ledger_entry_id: i64,
    pub replayed: bool,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The first day of `YYYY-MM`, and its last.
pub fn period_bounds(period: &str) -> Option<(NaiveDate, NaiveDate)> {
    if period.len() != 7 {
        return None;
    }
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").ok()?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
    };
    Some((first, next.pred_opt()?))
}

/// Columns that name a record, and the entity and date columns, per kind.
fn key_columns(kind: Kind) -> (&'static [&'static str], Option<&'static str>, &'static str) {
    match kind {
        Kind::Payments => (&["id"], Some("entity"), "date"),
        Kind::Invoices => (&["id"], Some("entity"), "date"),
        Kind::Settlements => (&["batch_id"], None, "date"),
        Kind::Rates => (&["from", "to", "date"], None, "date"),
    }
}

/// A record as stored: its natural key, entity, date and canonical CSV text.
struct Canonical {
    key: String,
    entity: String,
    date: String,
    text: String,
}

/// Re-reads a file that the typed reader accepted, as canonical records (header order,
/// trimmed). Only called after validation, so every column is present.
fn canonical_rows(kind: Kind, bytes: &[u8]) -> Result<Vec<Canonical>, StoreError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| StoreError::Import(e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| StoreError::Import(format!("{kind}: column {name} is missing")))
    };
    let order = kind
        .header()
        .iter()
        .map(|c| col(c))
        .collect::<Result<Vec<_>, _>>()?;
    let (keys, entity, date) = key_columns(kind);
    let keys = keys.iter().map(|c| col(c)).collect::<Result<Vec<_>, _>>()?;
    let entity = entity.map(col).transpose()?;
    let date = col(date)?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| StoreError::Import(e.to_string()))?;
        let field = |i: usize| record.get(i).unwrap_or("");
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(order.iter().map(|&i| field(i)))
            .map_err(|e| StoreError::Import(e.to_string()))?;
        let mut text = w
            .into_inner()
            .map_err(|e| StoreError::Import(e.to_string()))?;
        text.pop(); // the terminator
        out.push(Canonical {
            key: keys.iter().map(|&i| field(i)).collect::<Vec<_>>().join("|"),
            entity: entity.map(field).unwrap_or("").to_owned(),
            date: field(date).to_owned(),
            text: String::from_utf8(text).map_err(|e| StoreError::Import(e.to_string()))?,
        });
    }
    Ok(out)
}

/// Checks a whole file with the typed reader of its kind (all-or-nothing).
fn validate(kind: Kind, bytes: &[u8]) -> Result<(), StoreError> {
    let r = match kind {
        Kind::Payments => import::read_payments(bytes).map(|_| ()),
        Kind::Invoices => import::read_open_items(bytes).map(|_| ()),
        Kind::Settlements => import::read_settlements(bytes).map(|_| ()),
        Kind::Rates => import::read_rates(bytes).map(|_| ()),
    };
    match r {
        Ok(()) => Ok(()),
        Err(ImportError::Invalid(i)) => Err(StoreError::Invalid(i)),
        Err(e) => Err(StoreError::Import(e.to_string())),
    }
}

/// SQL selecting the current version of each record of one kind, up to a high-water mark.
const CURRENT_ROWS: &str = "SELECT i.natural_key, i.entity, i.row_date, i.row_text FROM recon_inputs i \
     WHERE i.kind = $1 AND i.seq <= $2 AND NOT EXISTS (SELECT 1 FROM recon_inputs j \
     WHERE j.kind = i.kind AND j.natural_key = i.natural_key AND j.seq > i.seq AND j.seq <= $2) \
     ORDER BY i.natural_key";

type InputRow = (String, String, String, String);

const RUN_COLUMNS: &str =
    "id, period, entity, high_water, digest, actor, started_at_ms, finished_at_ms";

/// Bind parameters per statement: both backends take more (PostgreSQL 65,535, SQLite 32,766),
/// and a few hundred rows per round trip is where multi-row inserts stop getting faster.
const MAX_PARAMS: usize = 16_000;

/// `INSERT INTO table (cols) VALUES ($1, …), (…)` for `rows` rows. SQLite gets anonymous `?`
/// placeholders: it resolves named and numbered ones (`$N`) by a linear search per parameter,
/// which makes a statement with thousands of them quadratic.
fn insert_sql(backend: db::Backend, table: &str, cols: &[&str], rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r > 0 { ", (" } else { "(" });
        for c in 0..cols.len() {
            n += 1;
            let sep = if c > 0 { ", " } else { "" };
            let _ = match backend {
                db::Backend::Postgres => write!(sql, "{sep}${n}"),
                db::Backend::Sqlite => write!(sql, "{sep}?"),
            };
        }
        sql.push(')');
    }
    sql
}

impl Store {
    pub fn new(db: Db) -> Store {
        Store { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The newest input row's sequence number (0 when nothing was imported).
    pub async fn high_water(&self) -> Result<i64, StoreError> {
        let hw: Option<i64> = on_pool!(&self.db, |c| sqlx::query_scalar(
            "SELECT MAX(seq) FROM recon_inputs"
        )
        .fetch_one(c)
        .await?);
        Ok(hw.unwrap_or(0))
    }

    /// Imports one file, all-or-nothing: a file with any bad line imports nothing and the
    /// error names every bad line. Records already present unchanged are skipped, so importing
    /// a file twice adds nothing. With `snapshot` (AR open-item exports), open items absent
    /// from the file are closed.
    pub async fn import(
        &self,
        kind: Kind,
        bytes: &[u8],
        origin: &str,
        snapshot: bool,
        actor: &str,
    ) -> Result<ImportReport, StoreError> {
        validate(kind, bytes)?;
        let rows = canonical_rows(kind, bytes)?;
        let mut tx = self.db.begin().await?;
        if let DbTx::Postgres(t) = &mut tx {
            // Serialises imports, so sequence numbers commit in order and a run's high-water
            // mark never skips a row committed later with a lower number.
            sqlx::query("LOCK TABLE recon_inputs IN EXCLUSIVE MODE")
                .execute(&mut **t)
                .await?;
        }
        let hw: Option<i64> = on_tx!(&mut tx, |c| sqlx::query_scalar(
            "SELECT MAX(seq) FROM recon_inputs"
        )
        .fetch_one(c)
        .await?);
        let current: Vec<InputRow> = on_tx!(&mut tx, |c| sqlx::query_as(CURRENT_ROWS)
            .bind(kind.as_str())
            .bind(hw.unwrap_or(0))
            .fetch_all(c)
            .await?);
        let current: BTreeMap<String, String> =
            current.into_iter().map(|(k, _, _, t)| (k, t)).collect();
        let at_ms = now_ms();
        let import_id: i64 = on_tx!(&mut tx, |c| {
            sqlx::query_scalar(
            "INSERT INTO recon_imports (kind, origin, rows_read, added, changed, unchanged, closed, actor, at_ms) \
             VALUES ($1, $2, 0, 0, 0, 0, 0, $3, $4) RETURNING id"
        )
        .bind(kind.as_str())
        .bind(origin)
        .bind(actor)
        .bind(at_ms)
        .fetch_one(c)
        .await?
        });
        let mut report = ImportReport {
            import_id,
            kind,
            rows: rows.len() as u64,
            added: 0,
            changed: 0,
            unchanged: 0,
            closed: 0,
            high_water: 0,
        };
        let mut seen = BTreeSet::new();
        let mut writes: Vec<(String, String, String, String)> = Vec::new();
        for r in rows {
            seen.insert(r.key.clone());
            match current.get(&r.key) {
                Some(t) if *t == r.text => report.unchanged += 1,
                Some(t) if !t.is_empty() => {
                    report.changed += 1;
                    writes.push((r.key, r.entity, r.date, r.text));
                }
                _ => {
                    report.added += 1;
                    writes.push((r.key, r.entity, r.date, r.text));
                }
            }
        }
        if snapshot {
            for (key, text) in &current {
                if !text.is_empty() && !seen.contains(key) {
                    report.closed += 1;
                    writes.push((key.clone(), String::new(), String::new(), String::new()));
                }
            }
        }
        const INPUT_COLS: [&str; 6] = [
            "kind",
            "natural_key",
            "entity",
            "row_date",
            "row_text",
            "import_id",
        ];
        for chunk in writes.chunks(MAX_PARAMS / INPUT_COLS.len()) {
            let sql = insert_sql(self.db.backend(), "recon_inputs", &INPUT_COLS, chunk.len());
            on_tx!(&mut tx, |c| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for (key, entity, date, text) in chunk {
                    q = q
                        .bind(kind.as_str())
                        .bind(key)
                        .bind(entity)
                        .bind(date)
                        .bind(text)
                        .bind(import_id);
                }
                q.execute(c).await?.rows_affected()
            });
        }
        on_tx!(&mut tx, |c| {
            sqlx::query(
            "UPDATE recon_imports SET rows_read = $1, added = $2, changed = $3, unchanged = $4, closed = $5 WHERE id = $6"
        )
        .bind(report.rows as i64)
        .bind(report.added as i64)
        .bind(report.changed as i64)
        .bind(report.unchanged as i64)
        .bind(report.closed as i64)
        .bind(import_id)
        .execute(c)
        .await?
        .rows_affected()
        });
        let hw: Option<i64> = on_tx!(&mut tx, |c| sqlx::query_scalar(
            "SELECT MAX(seq) FROM recon_inputs"
        )
        .fetch_one(c)
        .await?);
        report.high_water = hw.unwrap_or(0);
        db::audit::record_in(
            &mut tx,
            db::audit::AuditRecord {
                at: Utc::now(),
                actor,
                action: "reconcile.import",
                subject: &format!("{kind} import {import_id}"),
                detail: &format!(
                    "origin {origin}: {} rows, {} added, {} changed, {} unchanged, {} closed",
                    report.rows, report.added, report.changed, report.unchanged, report.closed
                ),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The inputs of a run: the current version of every record up to `high_water`; payments
    /// and settlements dated from `from` on (later ones are the engine's timing items);
    /// payments and open items of `entity` only, when given.
    pub async fn load(
        &self,
        high_water: i64,
        entity: Option<&str>,
        from: NaiveDate,
    ) -> Result<Inputs, StoreError> {
        let from = from.format("%Y-%m-%d").to_string();
        let mut files: BTreeMap<Kind, Vec<u8>> = BTreeMap::new();
        for kind in Kind::ALL {
            let rows: Vec<InputRow> = on_pool!(&self.db, |c| sqlx::query_as(CURRENT_ROWS)
                .bind(kind.as_str())
                .bind(high_water)
                .fetch_all(c)
                .await?);
            let mut csv = kind.header().join(",").into_bytes();
            for (_, e, date, text) in rows {
                let dated = matches!(kind, Kind::Payments | Kind::Settlements);
                if text.is_empty()
                    || (dated && date < from)
                    || entity.is_some_and(|want| key_columns(kind).1.is_some() && e != want)
                {
                    continue;
                }
                csv.push(b'\n');
                csv.extend_from_slice(text.as_bytes());
            }
            files.insert(kind, csv);
        }
        let bytes = |k| files.get(&k).map(Vec::as_slice).unwrap_or_default();
        let corrupt = |e: ImportError| StoreError::Corrupt(e.to_string());
        Ok(Inputs {
            payments: import::read_payments(bytes(Kind::Payments)).map_err(corrupt)?,
            open_items: import::read_open_items(bytes(Kind::Invoices)).map_err(corrupt)?,
            settlements: import::read_settlements(bytes(Kind::Settlements)).map_err(corrupt)?,
            rates: import::read_rates(bytes(Kind::Rates)).map_err(corrupt)?,
        })
    }

    // ---- the period lease ----

    /// Takes the lease `name` for `holder` unless someone else holds an unexpired one.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let n = on_pool!(&self.db, |c| {
            sqlx::query(
            "INSERT INTO recon_leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
             WHERE recon_leases.expires_at_ms < $4"
        )
        .bind(name)
        .bind(holder)
        .bind(now + lease_ms)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        if n == 1 {
            return Ok(());
        }
        let (holder, until_ms): (String, i64) = on_pool!(&self.db, |c| sqlx::query_as(
            "SELECT holder, expires_at_ms FROM recon_leases WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(c)
        .await?)
        .unwrap_or_default();
        Err(StoreError::Busy {
            name: name.to_owned(),
            holder,
            until_ms,
        })
    }

    /// Extends a held lease; `false` if it was lost (expired and taken by someone else).
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = on_pool!(&self.db, |c| sqlx::query(
            "UPDATE recon_leases SET expires_at_ms = $1 WHERE name = $2 AND holder = $3"
        )
        .bind(now_ms() + lease_ms)
        .bind(name)
        .bind(holder)
        .execute(c)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_pool!(&self.db, |c| sqlx::query(
            "DELETE FROM recon_leases WHERE name = $1 AND holder = $2"
        )
        .bind(name)
        .bind(holder)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    // ---- runs ----

    /// Runs a period: takes its lease, records the inputs' high-water mark, matches, and (unless
    /// a dry run) stores the results in one transaction. `progress` hears each finished phase.
    pub async fn run(
        &self,
        req: &RunRequest,
        progress: impl FnMut(crate::matching::Phase) + Send + 'static,
    ) -> Result<RunReport, StoreError> {
        let (first, last) = period_bounds(&req.period).ok_or_else(|| {
            StoreError::Rejected(format!(
                "period: {:?} is not a month such as 2026-10",
                req.period
            ))
        })?;
        let entity = req.entity.clone().unwrap_or_default();
        let lease = format!("{}|{}", req.period, entity);
        let holder = format!("{}:{}:{}", req.actor, std::process::id(), unique_suffix());
        self.acquire_lease(&lease, &holder, req.lease_ms).await?;
        let result = self
            .run_leased(req, first, last, &entity, progress, &lease, &holder)
            .await;
        let released = self.release_lease(&lease, &holder).await;
        let report = result?;
        released?;
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_leased(
        &self,
        req: &RunRequest,
        first: NaiveDate,
        last: NaiveDate,
        entity: &str,
        mut progress: impl FnMut(crate::matching::Phase) + Send + 'static,
        lease: &str,
        holder: &str,
    ) -> Result<RunReport, StoreError> {
        let started_at_ms = now_ms();
        let high_water = self.high_water().await?;
        let inputs = self
            .load(high_water, (!entity.is_empty()).then_some(entity), first)
            .await?;
        let config = MatchConfig {
            period_end: Some(last),
            ..req.config.clone()
        };
        let config_json =
            serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Matching is CPU work: off the async threads, with the lease renewed meanwhile.
        let matching = tokio::task::spawn_blocking(move || {
            crate::matching::reconcile_with_progress(inputs, &config, &mut progress)
        });
        tokio::pin!(matching);
        let renew_every =
            Duration::from_millis(u64::try_from(req.lease_ms / 3).unwrap_or(1).max(1));
        let recon = loop {
            tokio::select! {
                r = &mut matching => break r.map_err(|e| StoreError::Corrupt(e.to_string()))?
                    .map_err(|e| StoreError::Rejected(e.to_string()))?,
                () = tokio::time::sleep(renew_every) => {
                    if !self.renew_lease(lease, holder, req.lease_ms).await? {
                        return Err(StoreError::Rejected(format!("lost the lease on {lease}")));
                    }
                }
            }
        };
        let rows = Rows::of(&recon);
        let digest = rows.digest(high_water, &config_json);
        let mut run = RunInfo {
            id: None,
            period: req.period.clone(),
            entity: entity.to_owned(),
            high_water,
            digest,
            actor: req.actor.clone(),
            started_at_ms,
            finished_at_ms: now_ms(),
        };
        if !req.dry_run {
            run.id = Some(self.save(&run, &config_json, &recon, &rows).await?);
        }
        Ok(RunReport::build(
            run,
            rows.results,
            rows.applications,
            rows.suggestions,
            rows.adjustments,
        ))
    }

    async fn save(
        &self,
        run: &RunInfo,
        config_json: &str,
        recon: &Reconciliation,
        rows: &Rows,
    ) -> Result<i64, StoreError> {
        let summary = serde_json::to_string(&recon.summary())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.db.begin().await?;
        let id: i64 = on_tx!(&mut tx, |c| {
            sqlx::query_scalar(
            "INSERT INTO recon_runs (period, entity, high_water, config, summary, digest, actor, started_at_ms, finished_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"
        )
        .bind(&run.period)
        .bind(&run.entity)
        .bind(run.high_water)
        .bind(config_json)
        .bind(&summary)
        .bind(&run.digest)
        .bind(&run.actor)
        .bind(run.started_at_ms)
        .bind(run.finished_at_ms)
        .fetch_one(c)
        .await?
        });
        const RESULT_COLS: [&str; 15] = [
            "run_id",
            "kind",
            "ord",
            "item_key",
            "entity",
            "customer",
            "currency",
            "amount_minor",
            "category",
            "rule",
            "confidence",
            "applied_minor",
            "open_minor",
            "fx_difference_minor",
            "related",
        ];
        for chunk in rows.results.chunks(MAX_PARAMS / RESULT_COLS.len()) {
            let sql = insert_sql(
                self.db.backend(),
                "recon_results",
                &RESULT_COLS,
                chunk.len(),
            );
            on_tx!(&mut tx, |c| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for r in chunk {
                    q = q
                        .bind(id)
                        .bind(&r.kind)
                        .bind(r.ord)
                        .bind(&r.item_key)
                        .bind(&r.entity)
                        .bind(&r.customer)
                        .bind(&r.currency)
                        .bind(r.amount_minor)
                        .bind(&r.category)
                        .bind(&r.rule)
                        .bind(r.confidence)
                        .bind(r.applied_minor)
                        .bind(r.open_minor)
                        .bind(r.fx_difference_minor)
                        .bind(&r.related);
                }
                q.execute(c).await?.rows_affected()
            });
        }
        const APPLICATION_COLS: [&str; 15] = [
            "run_id",
            "ord",
            "payment_key",
            "payment_source",
            "payment_date",
            "item_key",
            "document",
            "rule",
            "confidence",
            "payment_amount_minor",
            "payment_currency",
            "item_amount_minor",
            "item_currency",
            "fx_rate",
            "fx_rate_date",
        ];
        for chunk in rows
            .applications
            .chunks(MAX_PARAMS / APPLICATION_COLS.len())
        {
            let sql = insert_sql(
                self.db.backend(),
                "recon_applications",
                &APPLICATION_COLS,
                chunk.len(),
            );
            on_tx!(&mut tx, |c| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for a in chunk {
                    q = q
                        .bind(id)
                        .bind(a.ord)
                        .bind(&a.payment_key)
                        .bind(&a.payment_source)
                        .bind(&a.payment_date)
                        .bind(&a.item_key)
                        .bind(&a.document)
                        .bind(&a.rule)
                        .bind(a.confidence)
                        .bind(a.payment_amount_minor)
                        .bind(&a.payment_currency)
                        .bind(a.item_amount_minor)
                        .bind(&a.item_currency)
                        .bind(&a.fx_rate)
                        .bind(&a.fx_rate_date);
                }
                q.execute(c).await?.rows_affected()
            });
        }
        for s in &rows.suggestions {
            on_tx!(&mut tx, |c| {
                sqlx::query(
                "INSERT INTO recon_suggestions (run_id, ord, payment_key, item_keys, sum_minor, confidence) VALUES ($1, $2, $3, $4, $5, $6)"
            )
            .bind(id)
            .bind(s.ord)
            .bind(&s.payment_key)
            .bind(&s.item_keys)
            .bind(s.sum_minor)
            .bind(s.confidence)
            .execute(c)
            .await?
            .rows_affected()
            });
        }
        for a in &rows.adjustments {
            on_tx!(&mut tx, |c| {
                sqlx::query(
                "INSERT INTO recon_adjustments (run_id, ord, kind, payment_key, item_key, document, customer, amount_minor, currency, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'proposed')"
            )
            .bind(id)
            .bind(a.ord)
            .bind(&a.kind)
            .bind(&a.payment_key)
            .bind(&a.item_key)
            .bind(&a.document)
            .bind(&a.customer)
            .bind(a.amount_minor)
            .bind(&a.currency)
            .execute(c)
            .await?
            .rows_affected()
            });
        }
        db::audit::record_in(
            &mut tx,
            db::audit::AuditRecord {
                at: Utc::now(),
                actor: &run.actor,
                action: "reconcile.run",
                subject: &format!("run {id}"),
                detail: &format!(
                    "period {} entity {:?} high-water {} digest {}",
                    run.period, run.entity, run.high_water, run.digest
                ),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Stored runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunInfo>, StoreError> {
        let rows: Vec<RunRow> = on_pool!(&self.db, |c| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM recon_runs ORDER BY id DESC LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(c)
            .await?
        });
        Ok(rows.into_iter().map(RunRow::info).collect())
    }

    /// The newest stored run's id and its item count per (kind, category), for monitoring.
    pub async fn latest_totals(
        &self,
    ) -> Result<Option<(i64, Vec<(String, String, i64)>)>, StoreError> {
        let id: Option<i64> = on_pool!(&self.db, |c| sqlx::query_scalar(
            "SELECT MAX(id) FROM recon_runs"
        )
        .fetch_one(c)
        .await?);
        let Some(id) = id else {
            return Ok(None);
        };
        let rows: Vec<(String, String, i64)> = on_pool!(&self.db, |c| {
            sqlx::query_as(
            "SELECT kind, category, COUNT(*) FROM recon_results WHERE run_id = $1 GROUP BY kind, category ORDER BY kind, category"
        )
        .bind(id)
        .fetch_all(c)
        .await?
        });
        Ok(Some((id, rows)))
    }

    /// A stored run with its totals and item lists.
    pub async fn report(&self, run_id: i64) -> Result<RunReport, StoreError> {
        let run = self.report_run(run_id).await?;
        let results = on_pool!(&self.db, |c| {
            sqlx::query_as(
            "SELECT kind, ord, item_key, entity, customer, currency, amount_minor, category, rule, confidence, applied_minor, open_minor, fx_difference_minor, related \
             FROM recon_results WHERE run_id = $1 ORDER BY CASE kind WHEN 'payment' THEN 0 WHEN 'item' THEN 1 ELSE 2 END, ord"
        )
        .bind(run_id)
        .fetch_all(c)
        .await?
        });
        let applications = on_pool!(&self.db, |c| {
            sqlx::query_as(
            "SELECT ord, payment_key, payment_source, payment_date, item_key, document, rule, confidence, payment_amount_minor, payment_currency, item_amount_minor, item_currency, fx_rate, fx_rate_date, sage_job_id \
             FROM recon_applications WHERE run_id = $1 ORDER BY ord"
        )
        .bind(run_id)
        .fetch_all(c)
        .await?
        });
        let suggestions = on_pool!(&self.db, |c| {
            sqlx::query_as(
            "SELECT ord, payment_key, item_keys, sum_minor, confidence FROM recon_suggestions WHERE run_id = $1 ORDER BY ord"
        )
        .bind(run_id)
        .fetch_all(c)
        .await?
        });
        let adjustments = self.adjustments(run_id).await?;
        Ok(RunReport::build(
            run,
            results,
            applications,
            suggestions,
            adjustments,
        ))
    }

    async fn adjustments(&self, run_id: i64) -> Result<Vec<AdjustmentRow>, StoreError> {
        Ok(on_pool!(&self.db, |c| {
            sqlx::query_as(
            "SELECT ord, kind, payment_key, item_key, document, customer, amount_minor, currency, status, ledger_entry_id, approved_by \
             FROM recon_adjustments WHERE run_id = $1 ORDER BY ord"
        )
        .bind(run_id)
        .fetch_all(c)
        .await?
        }))
    }

    /// Approves proposed adjustments of a run (all, or those numbered in `only`) and posts
    /// each to the ledger as its own balanced entry (idempotency key `recon:RUN:ORD`, so a
    /// retried approval posts nothing twice). `accounts` gives the accounts per currency.
    pub async fn approve(
        &self,
        ledger: &Ledger,
        run_id: i64,
        only: Option<&[i64]>,
        accounts: &BTreeMap<Currency, AdjustmentAccounts>,
        actor: &str,
    ) -> Result<Vec<Approved>, StoreError> {
        let report_date = {
            let run = self.report_run(run_id).await?;
            period_bounds(&run.period)
                .map(|(_, last)| last)
                .ok_or_else(|| StoreError::Corrupt(format!("run {run_id}: bad period")))?
        };
        let rows = self.adjustments(run_id).await?;
        if let Some(only) = only {
            for o in only {
                if !rows.iter().any(|r| r.ord == *o) {
                    return Err(StoreError::Rejected(format!(
                        "--adjustment {o}: run {run_id} has no adjustment {o}"
                    )));
                }
            }
        }
        let mut done = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.status == "proposed" && only.is_none_or(|o| o.contains(&r.ord)))
        {
            let entry = adjustment_entry(run_id, row, report_date, accounts)?;
            let outcome = ledger.post(entry).await?;
            let entry_id = outcome.entry.id.0;
            let mut tx = self.db.begin().await?;
            on_tx!(&mut tx, |c| {
                sqlx::query(
                "UPDATE recon_adjustments SET status = 'approved', ledger_entry_id = $1, approved_by = $2, approved_at_ms = $3 \
                 WHERE run_id = $4 AND ord = $5 AND status = 'proposed'"
            )
            .bind(entry_id)
            .bind(actor)
            .bind(now_ms())
            .bind(run_id)
            .bind(row.ord)
            .execute(c)
            .await?
            .rows_affected()
            });
            db::audit::record_in(
                &mut tx,
                db::audit::AuditRecord {
                    at: Utc::now(),
                    actor,
                    action: "reconcile.approve",
                    subject: &format!("run {run_id} adjustment {}", row.ord),
                    detail: &format!(
                        "{} {} {} → ledger entry {entry_id}",
                        row.kind, row.amount_minor, row.currency
                    ),
                },
            )
            .await?;
            tx.commit().await?;
            done.push(Approved {
                ord: row.ord,
                kind: row.kind.clone(),
                ledger_entry_id: entry_id,
                replayed: outcome.replayed,
            });
        }
        Ok(done)
    }

    async fn report_run(&self, run_id: i64) -> Result<RunInfo, StoreError> {
        let run: RunRow = on_pool!(&self.db, |c| sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE id = $1"
        )))
        .bind(run_id)
        .fetch_optional(c)
        .await?)
        .ok_or(StoreError::RunNotFound(run_id))?;
        Ok(run.info())
    }

    /// Applications of a run not yet handed to Sage, with their payment's row.
    pub async fn unqueued_applications(
        &self,
        run_id: i64,
    ) -> Result<Vec<(ApplicationRow, ResultRow)>, StoreError> {
        let report = self.report(run_id).await?;
        let payments: BTreeMap<&str, &ResultRow> = report
            .results
            .iter()
            .filter(|r| r.kind == "payment")
            .map(|r| (r.item_key.as_str(), r))
            .collect();
        Ok(report
            .applications
            .iter()
            .filter(|a| a.sage_job_id.is_none())
            .filter_map(|a| {
                payments
                    .get(a.payment_key.as_str())
                    .map(|p| (a.clone(), (*p).clone()))
            })
            .collect())
    }

    /// Records, inside the transaction that queued it, the sync job that applies these
    /// applications in Sage.
    pub async fn mark_queued_in(
        &self,
        tx: &mut DbTx,
        run_id: i64,
        ords: &[i64],
        job_id: i64,
    ) -> Result<(), StoreError> {
        for ord in ords {
            on_tx!(tx, |c| sqlx::query(
                "UPDATE recon_applications SET sage_job_id = $1 WHERE run_id = $2 AND ord = $3"
            )
            .bind(job_id)
            .bind(run_id)
            .bind(ord)
            .execute(c)
            .await?
            .rows_affected());
        }
        Ok(())
    }
}

/// A short random suffix so two holders in one process differ.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now_ms(), N.fetch_add(1, Ordering::Relaxed))
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    period: String,
    entity: String,
    high_water: i64,
    digest: String,
    actor: String,
    started_at_ms: i64,
    finished_at_ms: i64,
}

impl RunRow {
    fn info(self) -> RunInfo {
        RunInfo {
            id: Some(self.id),
            period: self.period,
            entity: self.entity,
            high_water: self.high_water,
            digest: self.digest,
            actor: self.actor,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
        }
    }
}

/// A run's results as the rows stored.
struct Rows {
    results: Vec<ResultRow>,
    applications: Vec<ApplicationRow>,
    suggestions: Vec<SuggestionRow>,
    adjustments: Vec<AdjustmentRow>,
}

fn ord(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

impl Rows {
    fn of(r: &Reconciliation) -> Rows {
        let inputs = &r.inputs;
        let pay_key = |p: u32| inputs.payments[p as usize].id.as_str().to_owned();
        let item_key = |i: u32| inputs.open_items[i as usize].id.as_str().to_owned();
        let mut results = Vec::new();
        for (i, (p, o)) in inputs.payments.iter().zip(&r.payments).enumerate() {
            let m = p.amount.money();
            results.push(ResultRow {
                kind: "payment".into(),
                ord: ord(i),
                item_key: p.id.as_str().to_owned(),
                entity: p.entity.as_str().to_owned(),
                customer: p.customer.as_str().to_owned(),
                currency: m.currency().code().to_owned(),
                amount_minor: m.amount_minor(),
                category: o.category.as_str().to_owned(),
                rule: o.rule.map(|r| r.as_str().to_owned()),
                confidence: i64::from(o.confidence.percent()),
                applied_minor: o.applied_minor,
                open_minor: o.unapplied_minor,
                fx_difference_minor: o.fx_difference_minor,
                related: o.related.map(pay_key),
            });
        }
        for (i, (it, o)) in inputs.open_items.iter().zip(&r.items).enumerate() {
            let m = it.open.money();
            results.push(ResultRow {
                kind: "item".into(),
                ord: ord(i),
                item_key: it.id.as_str().to_owned(),
                entity: it.entity.as_str().to_owned(),
                customer: it.customer.as_str().to_owned(),
                currency: m.currency().code().to_owned(),
                amount_minor: m.amount_minor(),
                category: o.category.as_str().to_owned(),
                rule: None,
                confidence: 0,
                applied_minor: o.applied_minor,
                open_minor: o.residual_minor,
                fx_difference_minor: o.fx_difference_minor,
                related: Some(it.number.as_str().to_owned()),
            });
        }
        for (i, (s, o)) in inputs.settlements.iter().zip(&r.settlements).enumerate() {
            results.push(ResultRow {
                kind: "settlement".into(),
                ord: ord(i),
                item_key: s.batch().as_str().to_owned(),
                entity: String::new(),
                customer: String::new(),
                currency: s.currency().code().to_owned(),
                amount_minor: s.gross().amount_minor(),
                category: o.category.as_str().to_owned(),
                rule: None,
                confidence: 0,
                applied_minor: o.captured_minor,
                open_minor: o.difference_minor,
                fx_difference_minor: 0,
                related: Some(s.deposit().as_str().to_owned()),
            });
        }
        let applications = r
            .applications
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let p = &inputs.payments[a.payment as usize];
                let it = &inputs.open_items[a.item as usize];
                ApplicationRow {
                    ord: ord(i),
                    payment_key: pay_key(a.payment),
                    payment_source: p.source.as_str().to_owned(),
                    payment_date: p.date.to_string(),
                    item_key: item_key(a.item),
                    document: it.number.as_str().to_owned(),
                    rule: a.rule.as_str().to_owned(),
                    confidence: i64::from(a.confidence.percent()),
                    payment_amount_minor: a.payment_amount_minor,
                    payment_currency: p.amount.currency().code().to_owned(),
                    item_amount_minor: a.item_amount_minor,
                    item_currency: it.open.currency().code().to_owned(),
                    fx_rate: a.fx.as_ref().map(|f| f.rate.normalize().to_string()),
                    fx_rate_date: a.fx.as_ref().map(|f| f.rate_date.to_string()),
                    sage_job_id: None,
                }
            })
            .collect();
        let suggestions = r
            .suggestions
            .iter()
            .enumerate()
            .map(|(i, s)| SuggestionRow {
                ord: ord(i),
                payment_key: pay_key(s.payment),
                item_keys: s
                    .items
                    .iter()
                    .map(|&it| item_key(it))
                    .collect::<Vec<_>>()
                    .join(" "),
                sum_minor: s.sum_minor,
                confidence: i64::from(s.confidence.percent()),
            })
            .collect();
        let adjustments = r
            .adjustments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let (kind, p, it, amount_minor, currency) = match a {
                    Adjustment::WriteOff {
                        item,
                        amount_minor,
                        currency,
                    } => ("write_off", None, Some(*item), *amount_minor, *currency),
                    Adjustment::FxGainLoss {
                        payment,
                        item,
                        amount_minor,
                        currency,
                    } => (
                        "fx_gain_loss",
                        Some(*payment),
                        Some(*item),
                        *amount_minor,
                        *currency,
                    ),
                    Adjustment::UnappliedCash {
                        payment,
                        amount_minor,
                        currency,
                    } => (
                        "unapplied_cash",
                        Some(*payment),
                        None,
                        *amount_minor,
                        *currency,
                    ),
                };
                let customer = match (p, it) {
                    (_, Some(it)) => inputs.open_items[it as usize].customer.as_str(),
                    (Some(p), None) => inputs.payments[p as usize].customer.as_str(),
                    (None, None) => "",
                };
                AdjustmentRow {
                    ord: ord(i),
                    kind: kind.to_owned(),
                    payment_key: p.map(pay_key),
                    item_key: it.map(item_key),
                    document: it
                        .map(|it| inputs.open_items[it as usize].number.as_str().to_owned()),
                    customer: customer.to_owned(),
                    amount_minor,
                    currency: currency.code().to_owned(),
                    status: "proposed".into(),
                    ledger_entry_id: None,
                    approved_by: None,
                }
            })
            .collect();
        Rows {
            results,
            applications,
            suggestions,
            adjustments,
        }
    }

    /// SHA-256 over the canonical JSON of every row, the high-water mark and the config:
    /// equal digests mean equal results on equal inputs.
    fn digest(&self, high_water: i64, config_json: &str) -> String {
        let mut h = Sha256::new();
        h.update(high_water.to_be_bytes());
        h.update(config_json.as_bytes());
        let mut feed = |v: serde_json::Result<String>| {
            h.update(v.unwrap_or_default().as_bytes());
            h.update(b"\n");
        };
        feed(serde_json::to_string(&self.results));
        feed(serde_json::to_string(&self.applications));
        feed(serde_json::to_string(&self.suggestions));
        feed(serde_json::to_string(&self.adjustments));
        hex::encode(h.finalize())
    }
}

/// The journal entry for one approved adjustment. Signs: a write-off of a positive residual
/// (short payment) is an expense against AR; an FX gain credits the gain/loss account, a loss
/// debits it; unapplied cash moves a customer's credit balance from AR to a liability.
fn adjustment_entry(
    run_id: i64,
    row: &AdjustmentRow,
    date: NaiveDate,
    accounts: &BTreeMap<Currency, AdjustmentAccounts>,
) -> Result<NewEntry, StoreError> {
    let currency = Currency::parse(&row.currency)
        .map_err(|e| StoreError::Corrupt(format!("adjustment {}: {e}", row.ord)))?;
    let acc = accounts.get(&currency).ok_or_else(|| {
        StoreError::Rejected(format!(
            "reconcile.accounts: no accounts for {currency}; adjustment {} cannot be posted",
            row.ord
        ))
    })?;
    let bad = |r: ledger::Rejection| StoreError::Rejected(r.message);
    let (debit, credit) = match (row.kind.as_str(), row.amount_minor >= 0) {
        ("write_off", true) => (&acc.write_off, &acc.receivable),
        ("write_off", false) => (&acc.receivable, &acc.write_off),
        ("fx_gain_loss", true) => (&acc.receivable, &acc.fx_gain_loss),
        ("fx_gain_loss", false) => (&acc.fx_gain_loss, &acc.receivable),
        ("unapplied_cash", true) => (&acc.receivable, &acc.unapplied_cash),
        ("unapplied_cash", false) => (&acc.unapplied_cash, &acc.receivable),
        (other, _) => return Err(StoreError::Corrupt(format!("adjustment kind {other}"))),
    };
    let amount = Money::from_minor(row.amount_minor.abs(), currency);
    let customer = (!row.customer.is_empty())
        .then(|| LedgerCustomer::parse(&row.customer, "customer"))
        .transpose()
        .map_err(bad)?;
    let document = row
        .document
        .as_deref()
        .map(|d| Text::parse(d, "document"))
        .transpose()
        .map_err(bad)?;
    let leg = |account: &AccountCode, direction, ar: bool| NewPosting {
        account: account.clone(),
        direction,
        amount,
        customer_id: if ar { customer.clone() } else { None },
        document_ref: if ar { document.clone() } else { None },
        memo: None,
    };
    let postings = vec![
        leg(debit, Direction::Debit, debit == &acc.receivable),
        leg(credit, Direction::Credit, credit == &acc.receivable),
    ];
    NewEntry::new(
        EntryHeader {
            idempotency_key: IdempotencyKey::parse(&format!("recon:{run_id}:{}", row.ord), "key")
                .map_err(bad)?,
            entity: acc.entity.clone(),
            effective_date: date,
            source: SourceName::parse("reconcile", "source").map_err(bad)?,
            external_ref: Some(
                Text::parse(
                    &format!("run {run_id} adjustment {}", row.ord),
                    "external_ref",
                )
                .map_err(bad)?,
            ),
            memo: Some(Text::parse(&row.kind, "memo").map_err(bad)?),
        },
        postings,
    )
    .map_err(bad)
}
