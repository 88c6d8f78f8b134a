//! CSV import of the four input kinds, all-or-nothing: a file either parses completely into
//! model values or yields an [`InvalidInput`] report naming every bad line (line number and
//! column), so a run never starts on partial input.
//!
//! One format per kind, with a header row; columns are found by name (any order, extra
//! columns ignored); values are trimmed:
//!
//! | kind | columns |
//! |---|---|
//! | payments | `id,entity,customer,currency,amount,date,reference,source,batch_id` |
//! | invoices | `id,number,kind,entity,customer,currency,amount_open,date,due_date` |
//! | settlements | `deposit_id,batch_id,date,currency,gross,fees,net` |
//! | rates | `from,to,date,rate` |
//!
//! Amounts are exact decimals with at most the currency's minor-unit digits ("10.00" USD,
//! "1500" JPY); dates are `YYYY-MM-DD`; `source` is `gateway_capture`, `ach_settlement`,
//! `ach_return` or `sage_receipt`; `kind` is `invoice` or `credit_memo`; `reference` and
//! `batch_id` may be empty. Ids must be unique within a file.
//!
//! The reader works on raw byte records (no per-field `String`), interns entity and customer
//! codes, and caches currencies, because the 1M-row benchmark reads through this path.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use ledger::{Currency, FxRate, Money};

use crate::hash::FxBuild;
use crate::model::{
    BatchId, CustomerId, DatedRate, DepositId, DocumentNumber, EntityCode, Inputs, ModelError,
    OpenItem, OpenItemId, OpenItemKind, Payment, PaymentId, PaymentSource, PositiveMoney,
    Reference, SettlementBatch,
};

/// At most this many bad lines are listed in one report; all of them are counted.
pub const MAX_REPORTED_ERRORS: usize = 10_000;

/// The input kinds, as named on the command line (`--kind payments`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Payments,
    Invoices,
    Settlements,
    Rates,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Payments,
        Kind::Invoices,
        Kind::Settlements,
        Kind::Rates,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Payments => "payments",
            Kind::Invoices => "invoices",
            Kind::Settlements => "settlements",
            Kind::Rates => "rates",
        }
    }

    /// The header this kind requires, in the order [`write_header`](Self::header) gives it.
    pub const fn header(self) -> &'static [&'static str] {
        match self {
            Kind::Payments => &[
                "id",
                "entity",
                "customer",
                "currency",
                "amount",
                "date",
                "reference",
                "source",
                "batch_id",
            ],
            Kind::Invoices => &[
                "id",
                "number",
                "kind",
                "entity",
                "customer",
                "currency",
                "amount_open",
                "date",
                "due_date",
            ],
            Kind::Settlements => &[
                "deposit_id",
                "batch_id",
                "date",
                "currency",
                "gross",
                "fees",
                "net",
            ],
            Kind::Rates => &["from", "to", "date", "rate"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown kind \"{s}\": expected payments, invoices, settlements or rates")
            })
    }
}

/// One problem on one line. `line` is 1-based and counts the header as line 1.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    pub line: u64,
    /// The column at fault; `None` when the whole line is (unreadable CSV).
    pub column: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, column {c}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// The report for a file that did not parse: every bad line (up to [`MAX_REPORTED_ERRORS`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InvalidInput {
    pub kind: Kind,
    pub errors: Vec<LineError>,
    /// Lines with at least one error (may exceed the listed errors' lines when truncated).
    pub bad_lines: u64,
    /// True when more errors existed than were listed.
    pub truncated: bool,
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} bad line(s)", self.kind, self.bad_lines)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        if self.truncated {
            write!(
                f,
                "\n  … (only the first {MAX_REPORTED_ERRORS} errors are listed)"
            )?;
        }
        Ok(())
    }
}

/// Why an import produced no input.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(InvalidInput),
}

// ---------------------------------------------------------------------------
// Shared reader machinery
// ---------------------------------------------------------------------------

/// Per-file parse state: errors so far, interners and the currency cache.
struct Ctx {
    kind: Kind,
    errors: Vec<LineError>,
    bad_lines: u64,
    truncated: bool,
    line: u64,
    line_bad: bool,
    strings: HashSet<Arc<str>, FxBuild>,
    currencies: Vec<([u8; 3], Currency)>,
}

impl Ctx {
    fn new(kind: Kind) -> Ctx {
        Ctx {
            kind,
            errors: Vec::new(),
            bad_lines: 0,
            truncated: false,
            line: 1,
            line_bad: false,
            strings: HashSet::default(),
            currencies: Vec::new(),
        }
    }

    fn start_line(&mut self, line: u64) {
        self.line = line;
        self.line_bad = false;
    }

    fn error(&mut self, column: Option<&'static str>, message: impl Into<String>) {
        if !self.line_bad {
            self.line_bad = true;
            self.bad_lines += 1;
        }
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError {
                line: self.line,
                column,
                message: message.into(),
            });
        } else {
            self.truncated = true;
        }
    }

    fn finish<T>(self, rows: T) -> Result<T, ImportError> {
        if self.bad_lines == 0 {
            Ok(rows)
        } else {
            Err(ImportError::Invalid(InvalidInput {
                kind: self.kind,
                errors: self.errors,
                bad_lines: self.bad_lines,
                truncated: self.truncated,
            }))
        }
    }

    fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(v) = self.strings.get(value) {
            return Arc::clone(v);
        }
        let v: Arc<str> = Arc::from(value);
        self.strings.insert(Arc::clone(&v));
        v
    }

    fn currency(&mut self, code: &str) -> Result<Currency, String> {
        if let Ok(key) = <[u8; 3]>::try_from(code.as_bytes())
            && let Some((_, c)) = self.currencies.iter().find(|(k, _)| *k == key)
        {
            return Ok(*c);
        }
        let c = Currency::parse(code).map_err(|e| e.to_string())?;
        if let Ok(key) = <[u8; 3]>::try_from(code.as_bytes()) {
            self.currencies.push((key, c));
        }
        Ok(c)
    }
}

/// A record's fields by required column, for one line.
struct Row<'r> {
    record: &'r csv::ByteRecord,
    columns: &'r [usize],
    names: &'static [&'static str],
}

impl Row<'_> {
    /// The trimmed text of required column `i`, or an error recorded in `ctx`.
    fn text(&self, ctx: &mut Ctx, i: usize) -> Option<&str> {
        let name = self.names[i];
        let Some(bytes) = self.record.get(self.columns[i]) else {
            ctx.error(Some(name), "missing value (the line has too few fields)");
            return None;
        };
        match std::str::from_utf8(bytes) {
            Ok(s) => Some(s.trim()),
            Err(_) => {
                ctx.error(Some(name), "not valid UTF-8");
                None
            }
        }
    }

    fn parsed<T>(
        &self,
        ctx: &mut Ctx,
        i: usize,
        parse: impl FnOnce(&str) -> Result<T, ModelError>,
    ) -> Option<T> {
        let text = self.text(ctx, i)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                ctx.error(Some(self.names[i]), format!("\"{}\" {e}", clip(text)));
                None
            }
        }
    }

    fn shared(&self, ctx: &mut Ctx, i: usize) -> Option<Arc<str>> {
        let text = self.text(ctx, i)?;
        // Validate once per distinct value: interned values were checked when first seen.
        if let Some(v) = ctx.strings.get(text) {
            return Some(Arc::clone(v));
        }
        match EntityCode::parse(text) {
            Ok(_) => Some(ctx.intern(text)),
            Err(e) => {
                ctx.error(Some(self.names[i]), format!("\"{}\" {e}", clip(text)));
                None
            }
        }
    }

    fn currency(&self, ctx: &mut Ctx, i: usize) -> Option<Currency> {
        let text = self.text(ctx, i)?;
        match ctx.currency(text) {
            Ok(c) => Some(c),
            Err(e) => {
                ctx.error(Some(self.names[i]), e);
                None
            }
        }
    }

    fn date(&self, ctx: &mut Ctx, i: usize) -> Option<NaiveDate> {
        let text = self.text(ctx, i)?;
        match parse_date(text) {
            Some(d) => Some(d),
            None => {
                ctx.error(
                    Some(self.names[i]),
                    format!("\"{}\" is not a date (expected YYYY-MM-DD)", clip(text)),
                );
                None
            }
        }
    }

    /// An amount in `currency` (None if the currency was bad: nothing to check against).
    fn money(&self, ctx: &mut Ctx, i: usize, currency: Option<Currency>) -> Option<Money> {
        let text = self.text(ctx, i)?;
        let currency = currency?;
        match Money::parse_decimal(text, currency) {
            Ok(m) => Some(m),
            Err(e) => {
                ctx.error(Some(self.names[i]), e.to_string());
                None
            }
        }
    }

    fn positive(
        &self,
        ctx: &mut Ctx,
        i: usize,
        currency: Option<Currency>,
    ) -> Option<PositiveMoney> {
        let m = self.money(ctx, i, currency)?;
        match PositiveMoney::new(m) {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.error(Some(self.names[i]), format!("amount {e}"));
                None
            }
        }
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// `YYYY-MM-DD`, strictly (ten bytes, a real calendar date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5..7)?, num(8..10)?)
}

/// Reads the header, maps required columns to positions, then hands every record to
/// `parse_row`. Returns the rows and the line of each (for duplicate-id reports).
fn read_csv<R: Read, T>(
    reader: R,
    capacity: usize,
    kind: Kind,
    ctx: &mut Ctx,
    mut parse_row: impl FnMut(&Row<'_>, &mut Ctx) -> Option<T>,
) -> (Vec<T>, Vec<u32>) {
    let names = kind.header();
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    let mut rows = Vec::with_capacity(capacity);
    let mut lines = Vec::with_capacity(capacity);
    // Header.
    ctx.start_line(1);
    match csv.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => {
            ctx.error(None, "the file is empty: expected a header row");
            return (rows, lines);
        }
        Err(e) => {
            ctx.error(None, format!("unreadable header: {e}"));
            return (rows, lines);
        }
    }
    let header: Vec<&[u8]> = record.iter().map(<[u8]>::trim_ascii).collect();
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        match header.iter().position(|h| *h == name.as_bytes()) {
            Some(p) => columns.push(p),
            None => ctx.error(Some(name), "missing column"),
        }
    }
    if columns.len() != names.len() {
        return (rows, lines);
    }
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(ctx.line + 1, csv::Position::line);
                ctx.start_line(line);
                ctx.error(None, format!("unreadable CSV: {e}"));
                // An I/O error does not advance; anything else (bad quoting) is per line.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(ctx.line + 1, csv::Position::line);
        ctx.start_line(line);
        // Blank lines are skipped by the csv reader; a line of only commas is not blank.
        let row = Row {
            record: &record,
            columns: &columns,
            names,
        };
        if let Some(value) = parse_row(&row, ctx)
            && ctx.bad_lines == 0
        {
            rows.push(value);
            lines.push(u32::try_from(line).unwrap_or(u32::MAX));
        }
    }
    (rows, lines)
}

/// Reports ids seen on more than one line.
fn check_unique<'a>(
    ctx: &mut Ctx,
    column: &'static str,
    ids: impl Iterator<Item = &'a str>,
    lines: &[u32],
) {
    // Sort by (16-byte prefix, id, line): equal ids become neighbours, in line order, and
    // integer compares decide almost every comparison (no hashing of a million strings).
    let prefix = |s: &str| {
        let mut word = [0u8; 16];
        let n = s.len().min(16);
        word[..n].copy_from_slice(&s.as_bytes()[..n]);
        u128::from_be_bytes(word)
    };
    let mut keys: Vec<(u128, &str, u32)> = Vec::with_capacity(lines.len());
    keys.extend(ids.zip(lines).map(|(id, &line)| (prefix(id), id, line)));
    keys.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    let mut dups = Vec::new();
    let mut first = 0usize;
    for i in 1..keys.len() {
        if keys[i].0 == keys[first].0 && keys[i].1 == keys[first].1 {
            dups.push((keys[i].2, keys[first].2, keys[i].1.to_owned()));
        } else {
            first = i;
        }
    }
    dups.sort_unstable();
    for (line, first, id) in dups {
        ctx.start_line(u64::from(line));
        ctx.error(
            Some(column),
            format!("duplicate id \"{}\" (first on line {first})", clip(&id)),
        );
    }
}

// ---------------------------------------------------------------------------
// The four kinds
// ---------------------------------------------------------------------------

/// Reads a payments CSV.
pub fn read_payments<R: Read>(reader: R) -> Result<Vec<Payment>, ImportError> {
    read_payments_sized(reader, 0)
}

fn read_payments_sized<R: Read>(reader: R, capacity: usize) -> Result<Vec<Payment>, ImportError> {
    let mut ctx = Ctx::new(Kind::Payments);
    let (rows, lines) = read_csv(reader, capacity, Kind::Payments, &mut ctx, |row, ctx| {
        let id = row.parsed(ctx, 0, PaymentId::parse);
        let entity = row.shared(ctx, 1);
        let customer = row.shared(ctx, 2);
        let currency = row.currency(ctx, 3);
        let amount = row.positive(ctx, 4, currency);
        let date = row.date(ctx, 5);
        let reference = row.parsed(ctx, 6, Reference::parse);
        let source = row.parsed(ctx, 7, PaymentSource::parse);
        let batch = row.parsed(ctx, 8, |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                BatchId::parse(s).map(Some)
            }
        });
        Some(Payment {
            id: id?,
            entity: EntityCode::from_shared(entity?),
            customer: CustomerId::from_shared(customer?),
            amount: amount?,
            date: date?,
            reference: reference?,
            source: source?,
            batch: batch?,
        })
    });
    if ctx.bad_lines == 0 {
        check_unique(&mut ctx, "id", rows.iter().map(|p| p.id.as_str()), &lines);
    }
    ctx.finish(rows)
}

/// Reads an invoices (AR open items) CSV.
pub fn read_open_items<R: Read>(reader: R) -> Result<Vec<OpenItem>, ImportError> {
    read_open_items_sized(reader, 0)
}

fn read_open_items_sized<R: Read>(
    reader: R,
    capacity: usize,
) -> Result<Vec<OpenItem>, ImportError> {
    let mut ctx = Ctx::new(Kind::Invoices);
    let (rows, lines) = read_csv(reader, capacity, Kind::Invoices, &mut ctx, |row, ctx| {
        let id = row.parsed(ctx, 0, OpenItemId::parse);
        let number = row.parsed(ctx, 1, DocumentNumber::parse);
        let kind = row.parsed(ctx, 2, OpenItemKind::parse);
        let entity = row.shared(ctx, 3);
        let customer = row.shared(ctx, 4);
        let currency = row.currency(ctx, 5);
        let open = row.positive(ctx, 6, currency);
        let date = row.date(ctx, 7);
        let due_date = row.date(ctx, 8);
        Some(OpenItem {
            id: id?,
            number: number?,
            kind: kind?,
            entity: EntityCode::from_shared(entity?),
            customer: CustomerId::from_shared(customer?),
            open: open?,
            date: date?,
            due_date: due_date?,
        })
    });
    if ctx.bad_lines == 0 {
        check_unique(&mut ctx, "id", rows.iter().map(|i| i.id.as_str()), &lines);
    }
    ctx.finish(rows)
}

/// Reads a settlements (processor deposits) CSV.
pub fn read_settlements<R: Read>(reader: R) -> Result<Vec<SettlementBatch>, ImportError> {
    read_settlements_sized(reader, 0)
}

fn read_settlements_sized<R: Read>(
    reader: R,
    capacity: usize,
) -> Result<Vec<SettlementBatch>, ImportError> {
    let mut ctx = Ctx::new(Kind::Settlements);
    let (rows, lines) = read_csv(reader, capacity, Kind::Settlements, &mut ctx, |row, ctx| {
        let deposit = row.parsed(ctx, 0, DepositId::parse);
        let batch = row.parsed(ctx, 1, BatchId::parse);
        let date = row.date(ctx, 2);
        let currency = row.currency(ctx, 3);
        let gross = row.money(ctx, 4, currency);
        let fees = row.money(ctx, 5, currency);
        let net = row.money(ctx, 6, currency);
        let (deposit, batch, date, gross, fees, net) =
            (deposit?, batch?, date?, gross?, fees?, net?);
        match SettlementBatch::new(deposit, batch, date, gross, fees, net) {
            Ok(s) => Some(s),
            Err(e) => {
                let column = match e {
                    ModelError::Negative(m) if m == gross => "gross",
                    ModelError::Negative(_) => "fees",
                    _ => "net",
                };
                ctx.error(Some(column), e.to_string());
                None
            }
        }
    });
    if ctx.bad_lines == 0 {
        check_unique(
            &mut ctx,
            "batch_id",
            rows.iter().map(|s| s.batch().as_str()),
            &lines,
        );
    }
    ctx.finish(rows)
}

/// Reads an FX rates CSV (one rate per pair and date).
pub fn read_rates<R: Read>(reader: R) -> Result<Vec<DatedRate>, ImportError> {
    read_rates_sized(reader, 0)
}

fn read_rates_sized<R: Read>(reader: R, capacity: usize) -> Result<Vec<DatedRate>, ImportError> {
    let mut ctx = Ctx::new(Kind::Rates);
    let (rows, lines) = read_csv(reader, capacity, Kind::Rates, &mut ctx, |row, ctx| {
        let from = row.currency(ctx, 0);
        let to = row.currency(ctx, 1);
        let date = row.date(ctx, 2);
        let text = row.text(ctx, 3)?;
        let (from, to) = (from?, to?);
        match FxRate::parse(from, to, text) {
            Ok(rate) => Some(DatedRate { date: date?, rate }),
            Err(e) => {
                ctx.error(Some("rate"), e.to_string());
                None
            }
        }
    });
    if ctx.bad_lines == 0 {
        let keys: Vec<String> = rows
            .iter()
            .map(|r| format!("{}/{} {}", r.rate.from(), r.rate.to(), r.date))
            .collect();
        check_unique(&mut ctx, "date", keys.iter().map(String::as_str), &lines);
    }
    ctx.finish(rows)
}

fn open(path: &Path) -> Result<std::fs::File, ImportError> {
    std::fs::File::open(path).map_err(|source| ImportError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The files of one run; any may be absent.
#[derive(Clone, Debug, Default)]
pub struct InputFiles {
    pub payments: Option<PathBuf>,
    pub invoices: Option<PathBuf>,
    pub settlements: Option<PathBuf>,
    pub rates: Option<PathBuf>,
}

/// Reads every given file (payments and settlements on one thread, invoices and rates on
/// another) into [`Inputs`]; all-or-nothing across the files: every file's errors come back.
pub fn read_inputs(files: &InputFiles) -> Result<Inputs, Vec<ImportError>> {
    /// Reads `path` with row vectors sized from the file length (rows are at least
    /// `MIN_ROW_BYTES` long), so a large file does not regrow and copy them.
    fn opt<T>(
        path: Option<&PathBuf>,
        read: fn(std::fs::File, usize) -> Result<Vec<T>, ImportError>,
    ) -> Result<Vec<T>, ImportError> {
        const MIN_ROW_BYTES: u64 = 48;
        match path {
            Some(p) => {
                let file = open(p)?;
                let len = file.metadata().map_or(0, |m| m.len());
                read(file, usize::try_from(len / MIN_ROW_BYTES).unwrap_or(0))
            }
            None => Ok(Vec::new()),
        }
    }
    let ((payments, settlements), (open_items, rates)) = std::thread::scope(|s| {
        let left = s.spawn(|| {
            (
                opt(files.payments.as_ref(), read_payments_sized),
                opt(files.settlements.as_ref(), read_settlements_sized),
            )
        });
        let right = (
            opt(files.invoices.as_ref(), read_open_items_sized),
            opt(files.rates.as_ref(), read_rates_sized),
        );
        let left = left
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (left, right)
    });
    fn keep<T>(errors: &mut Vec<ImportError>, r: Result<T, ImportError>) -> Option<T> {
        r.map_err(|e| errors.push(e)).ok()
    }
    let mut errors = Vec::new();
    let payments = keep(&mut errors, payments);
    let settlements = keep(&mut errors, settlements);
    let open_items = keep(&mut errors, open_items);
    let rates = keep(&mut errors, rates);
    match (payments, open_items, settlements, rates) {
        (Some(payments), Some(open_items), Some(settlements), Some(rates)) => Ok(Inputs {
            payments,
            open_items,
            settlements,
            rates,
        }),
        _ => Err(errors),
    }
}
