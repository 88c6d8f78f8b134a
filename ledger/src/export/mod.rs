//! Exports auditors use: CSV (one row per posting, with a control trailer), JSON lines,
//! SAF-T GeneralLedgerEntries XML and AICPA Audit Data Standard GL_Detail / Trial_Balance.
//!
//! Writers are synchronous and streaming: they receive entries one at a time from a bulk
//! scan and keep only running totals, so a million postings never sit in memory. Control
//! totals that a format needs *before* the entries (SAF-T's NumberOfEntries, TotalDebit,
//! TotalCredit) are computed by a cheap aggregate query first and passed in [`ExportMeta`].

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use chrono::{DateTime, NaiveDate, Utc};

use crate::entry::{Account, JournalEntry};
use crate::money::Currency;
use crate::types::{AccountId, EntityCode, EntryId};

pub mod ads;
pub mod csv;
pub mod jsonl;
pub mod saft;

/// The export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
    Saft,
    Ads,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        Some(match s {
            "csv" => ExportFormat::Csv,
            "jsonl" => ExportFormat::Jsonl,
            "saft" => ExportFormat::Saft,
            "ads" => ExportFormat::Ads,
            _ => return None,
        })
    }
}

/// One entry as the exporters see it: the stored entry plus its place in the hash chain.
#[derive(Clone, Debug)]
pub struct ExportEntry {
    pub entry: JournalEntry,
    /// Chain sequence number and hash, if the entry has been sealed.
    pub seq: Option<i64>,
    pub hash: Option<[u8; 32]>,
    /// The entry that reverses this one, if any (ADS Reversal_Indicator 2).
    pub reversed_by: Option<EntryId>,
}

/// Debit and credit totals of one currency, in minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub debit_minor: i128,
    pub credit_minor: i128,
}

/// What every writer knows before the first entry.
#[derive(Clone, Debug)]
pub struct ExportMeta {
    /// Effective-date range, inclusive.
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub entity: Option<EntityCode>,
    pub generated_at: DateTime<Utc>,
    pub software_version: &'static str,
    /// Every account that can appear, by id.
    pub accounts: HashMap<AccountId, Account>,
    /// Control totals over the exported range, computed before streaming.
    pub entry_count: u64,
    pub posting_count: u64,
    pub totals: BTreeMap<Currency, CurrencyTotals>,
    /// The chain head (seq, hash) at the time of export.
    pub chain_head: Option<(i64, [u8; 32])>,
    /// The highest entry id when the totals were taken; the export stops there.
    pub max_entry_id: Option<i64>,
}

/// A trial-balance line for the ADS Trial_Balance file: balances before `from` and at `to`,
/// signed debit-positive, in minor units of the account's currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialBalanceLine {
    pub account: Account,
    pub beginning_minor: i64,
    pub ending_minor: i64,
}

/// Totals a writer observed, returned by `finish` and checked against [`ExportMeta`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub entries: u64,
    pub postings: u64,
    pub totals: BTreeMap<Currency, CurrencyTotals>,
}

impl ExportSummary {
    /// Adds one entry's postings to the running totals.
    pub fn add(&mut self, e: &JournalEntry) {
        self.entries += 1;
        for p in &e.postings {
            self.postings += 1;
            let t = self.totals.entry(p.amount.currency()).or_default();
            match p.direction {
                crate::types::Direction::Debit => {
                    t.debit_minor += i128::from(p.amount.amount_minor())
                }
                crate::types::Direction::Credit => {
                    t.credit_minor += i128::from(p.amount.amount_minor())
                }
            }
        }
    }
}

/// A streaming export writer.
pub trait ExportWriter: Send {
    /// Writes the header (and anything that precedes the entries).
    fn begin(&mut self, meta: &ExportMeta) -> io::Result<()>;
    /// Writes one entry (all its postings).
    fn entry(&mut self, entry: &ExportEntry) -> io::Result<()>;
    /// Writes trailers / closing elements and flushes.
    fn finish(&mut self) -> io::Result<ExportSummary>;
}

/// Formats `minor` units of `currency` as a plain decimal string ("-12.34").
/// i128 because control totals can exceed i64.
pub fn format_minor(minor: i128, currency: Currency) -> String {
    let exp = currency.exponent();
    let neg = minor < 0;
    let abs = minor.unsigned_abs();
    if exp == 0 {
        return format!("{}{abs}", if neg { "-" } else { "" });
    }
    let div = 10u128.pow(exp);
    format!(
        "{}{}.{:0width$}",
        if neg { "-" } else { "" },
        abs / div,
        abs % div,
        width = exp as usize
    )
}

/// Hex of a chain hash, or empty.
pub fn hash_hex(h: Option<&[u8; 32]>) -> String {
    h.map(hex::encode).unwrap_or_default()
}

/// Boxes the writer for `format` over `out`.
pub fn writer_for<W: Write + Send + 'static>(
    format: ExportFormat,
    out: W,
) -> Box<dyn ExportWriter> {
    match format {
        ExportFormat::Csv => Box::new(csv::CsvWriter::new(out)),
        ExportFormat::Jsonl => Box::new(jsonl::JsonlWriter::new(out)),
        ExportFormat::Saft => Box::new(saft::SaftWriter::new(out)),
        ExportFormat::Ads => Box::new(ads::GlDetailWriter::new(out)),
    }
}
