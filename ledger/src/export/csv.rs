//! CSV export: RFC 4180, one row per posting, then control trailer rows.
//!
//! Every row has every column, so the file loads into a spreadsheet or an audit tool as one
//! rectangular table. Posting rows (`record_type` = `posting`) leave the five control columns
//! empty. Trailer rows (`record_type` = `trailer`) come last, one per currency in code order;
//! they leave the posting columns empty except `currency` and carry the number of posting
//! rows in the file, that currency's debit and credit totals and the hash-chain head at export
//! time. An export without postings still ends with one trailer row (row_count 0, no
//! currency), so a truncated file can always be told from an empty one.
//!
//! Fields containing a comma, a double quote, CR or LF are quoted, with embedded quotes
//! doubled; every row ends with CRLF (RFC 4180 section 2). Values are written as stored: no
//! prefixing of cells that a spreadsheet might read as formulas.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::SecondsFormat;

use crate::entry::{Account, JournalEntry, Posting};
use crate::export::{ExportEntry, ExportMeta, ExportSummary, ExportWriter, format_minor, hash_hex};
use crate::types::AccountId;

/// The header row, in column order.
pub const COLUMNS: [&str; 28] = [
    "record_type",
    "entry_id",
    "line",
    "seq",
    "entity",
    "effective_date",
    "recorded_at",
    "source",
    "idempotency_key",
    "external_ref",
    "entry_memo",
    "reverses_entry_id",
    "account_code",
    "account_name",
    "account_type",
    "direction",
    "amount",
    "amount_minor",
    "currency",
    "customer_id",
    "document_ref",
    "posting_memo",
    "entry_hash",
    "row_count",
    "total_debits",
    "total_credits",
    "chain_head_seq",
    "chain_head_hash",
];

// Indices of the columns a trailer row fills in (checked against `COLUMNS` by a test).
const CURRENCY: usize = 18;
const ROW_COUNT: usize = 23;
const TOTAL_DEBITS: usize = 24;
const TOTAL_CREDITS: usize = 25;
const CHAIN_HEAD_SEQ: usize = 26;
const CHAIN_HEAD_HASH: usize = 27;

/// Streams postings as CSV rows; see the module documentation for the layout.
#[derive(Debug)]
pub struct CsvWriter<W> {
    out: W,
    state: State,
    summary: ExportSummary,
}

#[derive(Debug)]
enum State {
    New,
    Open {
        /// Names and types for the account columns.
        accounts: HashMap<AccountId, Account>,
        chain_head: Option<(i64, [u8; 32])>,
    },
    Finished,
}

impl<W: Write + Send> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter {
            out,
            state: State::New,
            summary: ExportSummary::default(),
        }
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_trailers(&mut self, chain_head: Option<(i64, [u8; 32])>) -> io::Result<()> {
        let row_count = self.summary.postings.to_string();
        let chain_head_seq = chain_head
            .map(|(seq, _)| seq.to_string())
            .unwrap_or_default();
        let chain_head_hash = hash_hex(chain_head.as_ref().map(|(_, hash)| hash));
        let mut trailer = [""; COLUMNS.len()];
        trailer[0] = "trailer";
        trailer[ROW_COUNT] = &row_count;
        trailer[CHAIN_HEAD_SEQ] = &chain_head_seq;
        trailer[CHAIN_HEAD_HASH] = &chain_head_hash;
        if self.summary.totals.is_empty() {
            trailer[TOTAL_DEBITS] = "0";
            trailer[TOTAL_CREDITS] = "0";
            return write_row(&mut self.out, &trailer);
        }
        // `Currency` orders by code, so the trailers come out sorted by code.
        for (currency, totals) in &self.summary.totals {
            let debits = format_minor(totals.debit_minor, *currency);
            let credits = format_minor(totals.credit_minor, *currency);
            let mut row = trailer;
            row[CURRENCY] = currency.code();
            row[TOTAL_DEBITS] = &debits;
            row[TOTAL_CREDITS] = &credits;
            write_row(&mut self.out, &row)?;
        }
        Ok(())
    }
}

impl<W: Write + Send> ExportWriter for CsvWriter<W> {
    fn begin(&mut self, meta: &ExportMeta) -> io::Result<()> {
        if !matches!(self.state, State::New) {
            return Err(misuse("begin() called twice"));
        }
        write_row(&mut self.out, &COLUMNS)?;
        self.state = State::Open {
            accounts: meta.accounts.clone(),
            chain_head: meta.chain_head,
        };
        Ok(())
    }

    fn entry(&mut self, export: &ExportEntry) -> io::Result<()> {
        let State::Open { accounts, .. } = &self.state else {
            return Err(misuse("entry() called before begin() or after finish()"));
        };
        let entry = &export.entry;
        let entry_id = entry.id.to_string();
        let seq = export.seq.map(|seq| seq.to_string()).unwrap_or_default();
        let effective_date = entry.effective_date.format("%Y-%m-%d").to_string();
        let recorded_at = entry
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let reverses = entry
            .reverses_entry_id
            .map(|id| id.to_string())
            .unwrap_or_default();
        let entry_hash = hash_hex(export.hash.as_ref());
        for posting in &entry.postings {
            let account = account_of(accounts, entry, posting)?;
            let line = posting.line.to_string();
            let amount = posting.amount.format_amount();
            let amount_minor = posting.amount.amount_minor().to_string();
            let row: [&str; COLUMNS.len()] = [
                "posting",
                &entry_id,
                &line,
                &seq,
                entry.entity.as_str(),
                &effective_date,
                &recorded_at,
                entry.source.as_str(),
                entry.idempotency_key.as_str(),
                opt(entry.external_ref.as_ref().map(|t| t.as_str())),
                opt(entry.memo.as_ref().map(|t| t.as_str())),
                &reverses,
                posting.account_code.as_str(),
                &account.name,
                account.account_type.as_str(),
                posting.direction.as_str(),
                &amount,
                &amount_minor,
                posting.amount.currency().code(),
                opt(posting.customer_id.as_ref().map(|c| c.as_str())),
                opt(posting.document_ref.as_ref().map(|t| t.as_str())),
                opt(posting.memo.as_ref().map(|t| t.as_str())),
                &entry_hash,
                "",
                "",
                "",
                "",
                "",
            ];
            write_row(&mut self.out, &row)?;
        }
        self.summary.add(entry);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<ExportSummary> {
        let State::Open { chain_head, .. } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(misuse("finish() called before begin() or twice"));
        };
        self.write_trailers(chain_head)?;
        self.out.flush()?;
        Ok(std::mem::take(&mut self.summary))
    }
}

/// The account a posting names, which the export's chart of accounts must contain.
fn account_of<'a>(
    accounts: &'a HashMap<AccountId, Account>,
    entry: &JournalEntry,
    posting: &Posting,
) -> io::Result<&'a Account> {
    accounts.get(&posting.account_id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "csv export: entry {} line {} posts to account id {} ({}), \
                 which is not in the export's chart of accounts",
                entry.id, posting.line, posting.account_id.0, posting.account_code
            ),
        )
    })
}

fn opt(value: Option<&str>) -> &str {
    value.unwrap_or("")
}

fn misuse(what: &str) -> io::Error {
    io::Error::other(format!("csv export: {what}"))
}

fn write_row<W: Write>(out: &mut W, fields: &[&str]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_field(out, field)?;
    }
    out.write_all(b"\r\n")
}

/// Writes one field, quoted when it contains a comma, a quote, CR or LF.
fn write_field<W: Write>(out: &mut W, field: &str) -> io::Result<()> {
    if !field.contains([',', '"', '\r', '\n']) {
        return out.write_all(field.as_bytes());
    }
    out.write_all(b"\"")?;
    for (i, part) in field.split('"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part.as_bytes())?;
    }
    out.write_all(b"\"")
}

/// Hand-built entries shared by the export writers' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;
    use std::io;

    use chrono::{DateTime, NaiveDate, Utc};

    use crate::entry::{Account, JournalEntry, Posting};
    use crate::export::{ExportEntry, ExportMeta, ExportSummary, ExportWriter};
    use crate::money::{Currency, Money};
    use crate::types::AccountType::{Asset, Revenue};
    use crate::types::{
        AccountCode, AccountId, AccountType, CustomerId, Direction, EntityCode, EntryId,
        IdempotencyKey, SourceName, Text,
    };

    /// Entry 102's memo: a comma, double and single quotes, a pipe and XML specials.
    /// (`Text` cannot hold a newline; the AR account's name carries that case.)
    pub(crate) const TRICKY_MEMO: &str = "Invoice INV-1, \"rush\" | paid <b> & 'ok'";
    /// The AR account's name: a newline, a comma, quotes, XML specials and a pipe.
    pub(crate) const TRICKY_NAME: &str = "Receivables, \"trade\" & <other>\nUSD | main";

    pub(crate) fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    pub(crate) fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn time(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn text(s: &str) -> Text {
        Text::parse(s, "test").unwrap()
    }

    /// (id, entity, code, name, type, currency)
    const ACCOUNTS: [(i64, &str, &str, &str, AccountType, &str); 6] = [
        (1, "US01", "1000", "Cash USD", Asset, "USD"),
        (2, "US01", "1200", TRICKY_NAME, Asset, "USD"),
        (3, "US01", "4000", "Revenue USD", Revenue, "USD"),
        (4, "US01", "1010", "Cash EUR", Asset, "EUR"),
        (5, "US01", "4010", "Revenue EUR", Revenue, "EUR"),
        (6, "DE01", "1000", "Kasse", Asset, "EUR"),
    ];

    pub(crate) fn accounts() -> HashMap<AccountId, Account> {
        ACCOUNTS
            .iter()
            .map(|&(id, entity, code, name, account_type, currency_code)| {
                let account = Account {
                    id: AccountId(id),
                    entity: EntityCode::parse(entity, "entity").unwrap(),
                    code: AccountCode::parse(code, "code").unwrap(),
                    name: name.to_owned(),
                    account_type,
                    normal_balance: account_type.default_normal_balance(),
                    currency: currency(currency_code),
                    customer_subledger: id == 2,
                    created_at: time("2026-01-01T00:00:00Z"),
                };
                (account.id, account)
            })
            .collect()
    }

    /// A posting of `minor` units in the account's currency.
    fn posting(line: u32, account_id: i64, direction: Direction, minor: i64) -> Posting {
        let accounts = accounts();
        let account = &accounts[&AccountId(account_id)];
        Posting {
            line,
            account_id: account.id,
            account_code: account.code.clone(),
            direction,
            amount: Money::from_minor(minor, account.currency),
            customer_id: None,
            document_ref: None,
            memo: None,
        }
    }

    fn entry(id: i64, key: &str, effective: &str, recorded: &str, source: &str) -> JournalEntry {
        JournalEntry {
            id: EntryId(id),
            entity: EntityCode::parse("US01", "entity").unwrap(),
            idempotency_key: IdempotencyKey::parse(key, "key").unwrap(),
            effective_date: date(effective),
            recorded_at: time(recorded),
            source: SourceName::parse(source, "source").unwrap(),
            external_ref: None,
            memo: None,
            reverses_entry_id: None,
            postings: Vec::new(),
        }
    }

    /// 101: USD and EUR legs, sealed. 102: the tricky memo, an AR posting with a customer,
    /// sealed, reversed by 103. 103: the reversal of 102, not yet sealed.
    pub(crate) fn entries() -> Vec<ExportEntry> {
        use Direction::{Credit, Debit};
        let customer = CustomerId::parse("0015g00000XyZAB", "customer").unwrap();

        let mut multi = entry(
            101,
            "gw-101",
            "2026-10-05",
            "2026-10-05T12:00:00.000001Z",
            "gateway",
        );
        multi.external_ref = Some(text("ch_1"));
        multi.postings = vec![
            posting(1, 1, Debit, 10_000),
            posting(2, 3, Credit, 10_000),
            posting(3, 4, Debit, 5_000),
            posting(4, 5, Credit, 5_000),
        ];

        let mut invoice = entry(
            102,
            "sage-102",
            "2026-10-20",
            "2026-10-20T08:30:00Z",
            "sage-ar",
        );
        invoice.memo = Some(text(TRICKY_MEMO));
        let mut receivable = posting(1, 2, Debit, 25_000);
        receivable.customer_id = Some(customer.clone());
        receivable.document_ref = Some(text("INV-1"));
        let mut revenue = posting(2, 3, Credit, 25_000);
        revenue.memo = Some(text("Consulting"));
        invoice.postings = vec![receivable, revenue];

        let mut reversal = entry(
            103,
            "rev-102",
            "2026-10-31",
            "2026-10-31T23:59:59.999999Z",
            "manual",
        );
        reversal.memo = Some(text("Reversal of entry 102"));
        reversal.reverses_entry_id = Some(EntryId(102));
        let mut receivable = posting(1, 2, Credit, 25_000);
        receivable.customer_id = Some(customer);
        receivable.document_ref = Some(text("INV-1"));
        reversal.postings = vec![receivable, posting(2, 3, Debit, 25_000)];

        vec![
            ExportEntry {
                entry: multi,
                seq: Some(1),
                hash: Some([1; 32]),
                reversed_by: None,
            },
            ExportEntry {
                entry: invoice,
                seq: Some(2),
                hash: Some([2; 32]),
                reversed_by: Some(EntryId(103)),
            },
            ExportEntry {
                entry: reversal,
                seq: None,
                hash: None,
                reversed_by: None,
            },
        ]
    }

    /// Meta whose control totals are those of `entries`, as the pre-export query computes.
    pub(crate) fn meta(entries: &[ExportEntry]) -> ExportMeta {
        let mut totals = ExportSummary::default();
        for e in entries {
            totals.add(&e.entry);
        }
        ExportMeta {
            from: date("2026-10-01"),
            to: date("2026-10-31"),
            entity: Some(EntityCode::parse("US01", "entity").unwrap()),
            generated_at: time("2026-11-01T06:00:00Z"),
            software_version: "0.1.0",
            accounts: accounts(),
            entry_count: totals.entries,
            posting_count: totals.postings,
            totals: totals.totals,
            chain_head: Some((2, [0xab; 32])),
            max_entry_id: Some(3),
        }
    }

    /// Runs `writer` over `entries`.
    pub(crate) fn run(
        writer: &mut dyn ExportWriter,
        meta: &ExportMeta,
        entries: &[ExportEntry],
    ) -> io::Result<ExportSummary> {
        writer.begin(meta)?;
        for e in entries {
            writer.entry(e)?;
        }
        writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::export::csv::fixtures::{self, TRICKY_MEMO, TRICKY_NAME};
    use crate::export::csv::{
        CHAIN_HEAD_HASH, CHAIN_HEAD_SEQ, COLUMNS, CURRENCY, CsvWriter, ROW_COUNT, TOTAL_CREDITS,
        TOTAL_DEBITS,
    };
    use crate::export::{ExportEntry, ExportWriter};

    /// A strict RFC 4180 reader: quoted fields, doubled quotes, CRLF after every row.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' => {
                    assert!(
                        field.is_empty(),
                        "quote inside an unquoted field: {field:?}"
                    );
                    quoted = true;
                }
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {
                    assert_eq!(chars.next(), Some('\n'), "CR without LF");
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                '\n' => panic!("bare LF outside quotes"),
                _ => field.push(c),
            }
        }
        assert!(
            !quoted && field.is_empty() && row.is_empty(),
            "file must end with CRLF"
        );
        rows
    }

    fn export(entries: &[ExportEntry]) -> Vec<Vec<String>> {
        let meta = fixtures::meta(entries);
        let mut out = Vec::new();
        let mut writer = CsvWriter::new(&mut out);
        let summary = fixtures::run(&mut writer, &meta, entries).unwrap();
        assert_eq!(summary.entries, meta.entry_count);
        assert_eq!(summary.totals, meta.totals);
        let rows = parse_csv(&String::from_utf8(out).unwrap());
        assert_eq!(rows[0], COLUMNS, "header row");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                row.len(),
                COLUMNS.len(),
                "row {i} is not rectangular: {row:?}"
            );
        }
        rows
    }

    /// Value of `column` in `row`.
    fn get<'a>(row: &'a [String], column: &str) -> &'a str {
        let i = COLUMNS.iter().position(|c| *c == column).unwrap();
        &row[i]
    }

    #[test]
    fn trailer_column_indices_match_the_header() {
        let cases = [
            (CURRENCY, "currency"),
            (ROW_COUNT, "row_count"),
            (TOTAL_DEBITS, "total_debits"),
            (TOTAL_CREDITS, "total_credits"),
            (CHAIN_HEAD_SEQ, "chain_head_seq"),
            (CHAIN_HEAD_HASH, "chain_head_hash"),
        ];
        for (index, name) in cases {
            assert_eq!(COLUMNS[index], name);
        }
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("a\nb", "\"a\nb\""),
            ("a\rb", "\"a\rb\""),
            ("pipe | and 'single'", "pipe | and 'single'"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            super::write_field(&mut out, input).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn one_rectangular_row_per_posting_then_trailers_per_currency() {
        let entries = fixtures::entries();
        let rows = export(&entries);
        let (postings, trailers): (Vec<_>, Vec<_>) = rows[1..]
            .iter()
            .partition(|r| get(r, "record_type") == "posting");
        assert_eq!(postings.len(), 8);
        assert!(trailers.iter().all(|r| get(r, "record_type") == "trailer"));
        // Trailers come last.
        assert!(
            rows[rows.len() - trailers.len()..]
                .iter()
                .all(|r| r[0] == "trailer")
        );

        let got: Vec<[&str; 6]> = trailers
            .iter()
            .map(|r| {
                [
                    "currency",
                    "row_count",
                    "total_debits",
                    "total_credits",
                    "chain_head_seq",
                    "chain_head_hash",
                ]
                .map(|c| get(r, c))
            })
            .collect();
        let head = "ab".repeat(32);
        assert_eq!(
            got,
            [
                ["EUR", "8", "50.00", "50.00", "2", head.as_str()],
                ["USD", "8", "600.00", "600.00", "2", head.as_str()],
            ]
        );
        // Trailer rows carry nothing in the posting columns.
        for row in &trailers {
            let filled: Vec<&str> = COLUMNS
                .iter()
                .zip(row.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, _)| *c)
                .collect();
            assert_eq!(
                filled,
                [
                    "record_type",
                    "currency",
                    "row_count",
                    "total_debits",
                    "total_credits",
                    "chain_head_seq",
                    "chain_head_hash"
                ]
            );
        }
    }

    #[test]
    fn posting_rows_carry_the_entry_and_posting_fields() {
        let entries = fixtures::entries();
        let rows = export(&entries);
        let sealed = "02".repeat(32);
        // (entry_id, line, expected (column, value) pairs)
        let cases = [
            (
                "101",
                "3",
                vec![
                    ("seq", "1"),
                    ("entity", "US01"),
                    ("effective_date", "2026-10-05"),
                    ("recorded_at", "2026-10-05T12:00:00.000001Z"),
                    ("source", "gateway"),
                    ("idempotency_key", "gw-101"),
                    ("external_ref", "ch_1"),
                    ("entry_memo", ""),
                    ("account_code", "1010"),
                    ("account_name", "Cash EUR"),
                    ("account_type", "asset"),
                    ("direction", "debit"),
                    ("amount", "50.00"),
                    ("amount_minor", "5000"),
                    ("currency", "EUR"),
                ],
            ),
            (
                "102",
                "1",
                vec![
                    ("recorded_at", "2026-10-20T08:30:00.000000Z"),
                    ("entry_memo", TRICKY_MEMO),
                    ("account_code", "1200"),
                    ("account_name", TRICKY_NAME),
                    ("amount", "250.00"),
                    ("customer_id", "0015g00000XyZAB"),
                    ("document_ref", "INV-1"),
                    ("posting_memo", ""),
                    ("entry_hash", sealed.as_str()),
                ],
            ),
            (
                "103",
                "2",
                vec![
                    ("seq", ""),
                    ("reverses_entry_id", "102"),
                    ("account_name", "Revenue USD"),
                    ("account_type", "revenue"),
                    ("direction", "debit"),
                    ("entry_hash", ""),
                    ("row_count", ""),
                    ("total_debits", ""),
                ],
            ),
        ];
        for (entry_id, line, want) in cases {
            let row = rows
                .iter()
                .find(|r| get(r, "entry_id") == entry_id && get(r, "line") == line)
                .unwrap();
            let got: Vec<(&str, &str)> = want.iter().map(|(c, _)| (*c, get(row, c))).collect();
            assert_eq!(got, want, "entry {entry_id} line {line}");
        }
    }

    #[test]
    fn an_empty_export_still_ends_with_a_trailer() {
        let rows = export(&[]);
        assert_eq!(rows.len(), 2);
        let trailer = &rows[1];
        assert_eq!(
            [
                "record_type",
                "currency",
                "row_count",
                "total_debits",
                "total_credits"
            ]
            .map(|c| get(trailer, c)),
            ["trailer", "", "0", "0", "0"]
        );
    }

    #[test]
    fn misuse_and_unknown_accounts_are_errors() {
        let entries = fixtures::entries();
        let mut writer = CsvWriter::new(Vec::new());
        assert!(writer.entry(&entries[0]).is_err(), "entry before begin");
        assert!(writer.finish().is_err(), "finish before begin");

        let mut meta = fixtures::meta(&entries);
        meta.accounts.retain(|id, _| id.0 != 2);
        let err = fixtures::run(&mut CsvWriter::new(Vec::new()), &meta, &entries).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("entry 102 line 1"), "{err}");
    }
}
