//! AICPA Audit Data Standard (GL standard, 2015) flat files: `GL_Detail` (one row per
//! posting, streamed) and `Trial_Balance` (opening and closing balance per account).
//!
//! Both are pipe-delimited UTF-8 text with a header row of field names and CRLF line ends.
//! The format has no quoting, so a text value must not contain the delimiter or a line
//! break: CR and LF in a value are replaced by a space and `|` by `/`. The CSV and JSONL
//! exports keep such text unaltered.
//!
//! Conventions: `Fiscal_Year` and `Period` are the calendar year and month (1-12) of the
//! effective date (of `Balance_As_Of_Date` in the trial balance); `Entered_By` is the
//! entry's source (the system or process that recorded it); `Reversal_Indicator` is 1 when
//! the entry reverses another (whose id is `Reversal_Journal_ID`), else 2 when another
//! entry reverses it (that entry's id), else empty. GL_Detail amounts are unsigned, with
//! `Amount_Credit_Debit_Indicator` giving the side; Trial_Balance amounts are signed, debit
//! positive. All amounts are decimals with the currency's exponent digits.

use std::borrow::Cow;
use std::io::{self, Write};

use chrono::{Datelike, NaiveDate, SecondsFormat};

use crate::export::{
    ExportEntry, ExportMeta, ExportSummary, ExportWriter, TrialBalanceLine, format_minor,
};
use crate::types::Direction;

/// The GL_Detail header row, in column order.
pub const GL_DETAIL_FIELDS: [&str; 20] = [
    "Journal_ID",
    "Journal_ID_Line_Number",
    "JE_Header_Description",
    "JE_Line_Description",
    "GL_Account_Number",
    "Amount",
    "Amount_Credit_Debit_Indicator",
    "Amount_Currency",
    "Effective_Date",
    "Entered_By",
    "Entered_Date",
    "Entered_DateTime",
    "Fiscal_Year",
    "Period",
    "Source",
    "Business_Unit_Code",
    "Reversal_Indicator",
    "Reversal_Journal_ID",
    "Customer_ID",
    "Document_Ref",
];

/// The Trial_Balance header row, in column order.
pub const TRIAL_BALANCE_FIELDS: [&str; 10] = [
    "GL_Account_Number",
    "GL_Account_Name",
    "Business_Unit_Code",
    "Balance_As_Of_Date",
    "Fiscal_Year",
    "Period",
    "Amount_Beginning",
    "Amount_Ending",
    "Amount_Currency",
    "Account_Type",
];

/// `GL_Detail_YYYYMMDD_YYYYMMDD.txt` for the effective-date range.
pub fn gl_detail_file_name(from: NaiveDate, to: NaiveDate) -> String {
    format!(
        "GL_Detail_{}_{}.txt",
        from.format("%Y%m%d"),
        to.format("%Y%m%d")
    )
}

/// `Trial_Balance_YYYYMMDD.txt` for the balance date.
pub fn trial_balance_file_name(to: NaiveDate) -> String {
    format!("Trial_Balance_{}.txt", to.format("%Y%m%d"))
}

/// Streams postings as ADS GL_Detail rows; see the module documentation.
#[derive(Debug)]
pub struct GlDetailWriter<W> {
    out: W,
    state: State,
    summary: ExportSummary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    New,
    Open,
    Finished,
}

impl<W: Write + Send> GlDetailWriter<W> {
    pub fn new(out: W) -> Self {
        GlDetailWriter {
            out,
            state: State::New,
            summary: ExportSummary::default(),
        }
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> ExportWriter for GlDetailWriter<W> {
    fn begin(&mut self, _meta: &ExportMeta) -> io::Result<()> {
        if self.state != State::New {
            return Err(misuse("begin() called twice"));
        }
        write_row(&mut self.out, &GL_DETAIL_FIELDS)?;
        self.state = State::Open;
        Ok(())
    }

    fn entry(&mut self, export: &ExportEntry) -> io::Result<()> {
        if self.state != State::Open {
            return Err(misuse("entry() called before begin() or after finish()"));
        }
        let entry = &export.entry;
        let journal_id = entry.id.to_string();
        let effective_date = entry.effective_date.format("%Y-%m-%d").to_string();
        let entered_date = entry
            .recorded_at
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        let entered_datetime = entry
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let fiscal_year = entry.effective_date.year().to_string();
        let period = entry.effective_date.month().to_string();
        let (reversal_indicator, reversal_journal_id) =
            match (entry.reverses_entry_id, export.reversed_by) {
                (Some(original), _) => ("1", original.to_string()),
                (None, Some(reversal)) => ("2", reversal.to_string()),
                (None, None) => ("", String::new()),
            };
        for posting in &entry.postings {
            let line = posting.line.to_string();
            let minor = posting.amount.amount_minor();
            // Unsigned amount; a negative one (never stored) flips the side instead.
            let amount = format_minor(i128::from(minor.unsigned_abs()), posting.amount.currency());
            let indicator = match (posting.direction, minor < 0) {
                (Direction::Debit, false) | (Direction::Credit, true) => "D",
                (Direction::Credit, false) | (Direction::Debit, true) => "C",
            };
            let row: [&str; GL_DETAIL_FIELDS.len()] = [
                &journal_id,
                &line,
                entry.memo.as_ref().map_or("", |m| m.as_str()),
                posting.memo.as_ref().map_or("", |m| m.as_str()),
                posting.account_code.as_str(),
                &amount,
                indicator,
                posting.amount.currency().code(),
                &effective_date,
                entry.source.as_str(),
                &entered_date,
                &entered_datetime,
                &fiscal_year,
                &period,
                entry.source.as_str(),
                entry.entity.as_str(),
                reversal_indicator,
                &reversal_journal_id,
                posting.customer_id.as_ref().map_or("", |c| c.as_str()),
                posting.document_ref.as_ref().map_or("", |d| d.as_str()),
            ];
            write_row(&mut self.out, &row)?;
        }
        self.summary.add(entry);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<ExportSummary> {
        if self.state != State::Open {
            return Err(misuse("finish() called before begin() or twice"));
        }
        self.state = State::Finished;
        self.out.flush()?;
        Ok(std::mem::take(&mut self.summary))
    }
}

/// Writes the ADS Trial_Balance file: one row per line, balances as of `meta.to`.
pub fn write_trial_balance<W: Write>(
    mut out: W,
    lines: &[TrialBalanceLine],
    meta: &ExportMeta,
) -> io::Result<()> {
    let as_of = meta.to.format("%Y-%m-%d").to_string();
    let fiscal_year = meta.to.year().to_string();
    let period = meta.to.month().to_string();
    write_row(&mut out, &TRIAL_BALANCE_FIELDS)?;
    for line in lines {
        let account = &line.account;
        let beginning = format_minor(i128::from(line.beginning_minor), account.currency);
        let ending = format_minor(i128::from(line.ending_minor), account.currency);
        let row: [&str; TRIAL_BALANCE_FIELDS.len()] = [
            account.code.as_str(),
            &account.name,
            account.entity.as_str(),
            &as_of,
            &fiscal_year,
            &period,
            &beginning,
            &ending,
            account.currency.code(),
            account.account_type.as_str(),
        ];
        write_row(&mut out, &row)?;
    }
    out.flush()
}

fn misuse(what: &str) -> io::Error {
    io::Error::other(format!("ads export: {what}"))
}

fn write_row<W: Write>(out: &mut W, fields: &[&str]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b"|")?;
        }
        out.write_all(sanitize(field).as_bytes())?;
    }
    out.write_all(b"\r\n")
}

/// A value that cannot break the file: CR and LF become a space, `|` becomes `/`.
fn sanitize(value: &str) -> Cow<'_, str> {
    if !value.contains(['\r', '\n', '|']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .chars()
            .map(|c| match c {
                '\r' | '\n' => ' ',
                '|' => '/',
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::export::ads::{
        GL_DETAIL_FIELDS, GlDetailWriter, TRIAL_BALANCE_FIELDS, gl_detail_file_name, sanitize,
        trial_balance_file_name, write_trial_balance,
    };
    use crate::export::csv::fixtures::{self, date};
    use crate::export::{ExportWriter, TrialBalanceLine};
    use crate::types::AccountId;

    /// Rows split into fields, checking CRLF line ends and the header.
    fn parse(text: &str, header: &[&str]) -> Vec<Vec<String>> {
        let body = text.strip_suffix("\r\n").expect("ends with CRLF");
        let rows: Vec<Vec<String>> = body
            .split("\r\n")
            .map(|line| {
                assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
                line.split('|').map(str::to_owned).collect()
            })
            .collect();
        assert_eq!(rows[0], header);
        for row in &rows {
            assert_eq!(row.len(), header.len(), "{row:?}");
        }
        rows
    }

    fn gl_detail() -> Vec<BTreeMap<&'static str, String>> {
        let entries = fixtures::entries();
        let meta = fixtures::meta(&entries);
        let mut out = Vec::new();
        let summary = fixtures::run(&mut GlDetailWriter::new(&mut out), &meta, &entries).unwrap();
        assert_eq!((summary.entries, summary.postings), (3, 8));
        let rows = parse(&String::from_utf8(out).unwrap(), &GL_DETAIL_FIELDS);
        rows[1..]
            .iter()
            .map(|row| {
                GL_DETAIL_FIELDS
                    .into_iter()
                    .zip(row.iter().cloned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sanitizes_delimiters_and_line_breaks() {
        let cases = [
            ("plain, \"quoted\"", "plain, \"quoted\""),
            ("a|b", "a/b"),
            ("line\nbreak\r\nend", "line break  end"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
    }

    #[test]
    fn one_row_per_posting_with_reversal_indicators() {
        let rows = gl_detail();
        assert_eq!(rows.len(), 8);
        // Per journal: (Reversal_Indicator, Reversal_Journal_ID, Entered_By, Period).
        let expected = [
            ("101", ["", "", "gateway", "10"]),
            ("102", ["2", "103", "sage-ar", "10"]),
            ("103", ["1", "102", "manual", "10"]),
        ];
        for (journal, want) in expected {
            for row in rows.iter().filter(|r| r["Journal_ID"] == journal) {
                let got = [
                    "Reversal_Indicator",
                    "Reversal_Journal_ID",
                    "Entered_By",
                    "Period",
                ]
                .map(|f| row[f].as_str());
                assert_eq!(got, want, "journal {journal}");
            }
        }
    }

    #[test]
    fn rows_carry_amounts_dates_and_sanitized_text() {
        let rows = gl_detail();
        let memo = "Invoice INV-1, \"rush\" / paid <b> & 'ok'";
        // (Journal_ID, line, expected (field, value) pairs)
        let cases = [
            (
                "101",
                "4",
                vec![
                    ("JE_Header_Description", ""),
                    ("GL_Account_Number", "4010"),
                    ("Amount", "50.00"),
                    ("Amount_Credit_Debit_Indicator", "C"),
                    ("Amount_Currency", "EUR"),
                    ("Effective_Date", "2026-10-05"),
                    ("Entered_Date", "2026-10-05"),
                    ("Entered_DateTime", "2026-10-05T12:00:00.000001Z"),
                    ("Fiscal_Year", "2026"),
                    ("Source", "gateway"),
                    ("Business_Unit_Code", "US01"),
                ],
            ),
            (
                "102",
                "1",
                vec![
                    ("JE_Header_Description", memo),
                    ("JE_Line_Description", ""),
                    ("GL_Account_Number", "1200"),
                    ("Amount", "250.00"),
                    ("Amount_Credit_Debit_Indicator", "D"),
                    ("Entered_DateTime", "2026-10-20T08:30:00.000000Z"),
                    ("Customer_ID", "0015g00000XyZAB"),
                    ("Document_Ref", "INV-1"),
                ],
            ),
            (
                "103",
                "2",
                vec![
                    ("JE_Header_Description", "Reversal of entry 102"),
                    ("GL_Account_Number", "4000"),
                    ("Amount_Credit_Debit_Indicator", "D"),
                    ("Effective_Date", "2026-10-31"),
                    ("Entered_DateTime", "2026-10-31T23:59:59.999999Z"),
                    ("Customer_ID", ""),
                ],
            ),
        ];
        for (journal, line, want) in cases {
            let row = rows
                .iter()
                .find(|r| r["Journal_ID"] == journal && r["Journal_ID_Line_Number"] == line)
                .unwrap();
            let got: Vec<(&str, &str)> = want.iter().map(|(f, _)| (*f, row[f].as_str())).collect();
            assert_eq!(got, want, "journal {journal} line {line}");
        }
    }

    #[test]
    fn trial_balance_has_signed_amounts_and_sanitized_names() {
        let accounts = fixtures::accounts();
        let balances = [(1, 0, 35_000), (2, 12_345, 0), (3, -10_000, -35_000)];
        let lines: Vec<TrialBalanceLine> = balances
            .into_iter()
            .map(|(id, beginning_minor, ending_minor)| TrialBalanceLine {
                account: accounts[&AccountId(id)].clone(),
                beginning_minor,
                ending_minor,
            })
            .collect();
        let mut out = Vec::new();
        write_trial_balance(&mut out, &lines, &fixtures::meta(&[])).unwrap();
        let text = String::from_utf8(out).unwrap();
        parse(&text, &TRIAL_BALANCE_FIELDS);
        let want = [
            "1000|Cash USD|US01|2026-10-31|2026|10|0.00|350.00|USD|asset",
            "1200|Receivables, \"trade\" & <other> USD / main|US01|2026-10-31|2026|10|123.45|0.00\
             |USD|asset",
            "4000|Revenue USD|US01|2026-10-31|2026|10|-100.00|-350.00|USD|revenue",
        ];
        assert_eq!(
            text.split("\r\n")
                .skip(1)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn file_names_follow_the_ads_convention() {
        let (from, to) = (date("2026-10-01"), date("2026-10-31"));
        assert_eq!(
            gl_detail_file_name(from, to),
            "GL_Detail_20261001_20261031.txt"
        );
        assert_eq!(trial_balance_file_name(to), "Trial_Balance_20261031.txt");
    }

    #[test]
    fn misuse_is_an_error() {
        let entries = fixtures::entries();
        let mut writer = GlDetailWriter::new(Vec::new());
        assert!(writer.entry(&entries[0]).is_err());
        assert!(writer.finish().is_err());
    }
}
