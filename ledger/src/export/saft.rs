//! SAF-T export: the general ledger as a Standard Audit File for Tax (XML), in the element
//! order of the Norwegian SAF-T Financial 1.30 schema (a profile of OECD SAF-T 2.0).
//!
//! Layout: `Header`, `MasterFiles/GeneralLedgerAccounts` (the exported entity's accounts),
//! then `GeneralLedgerEntries` with its control totals (`NumberOfEntries`, `TotalDebit`,
//! `TotalCredit`, taken from [`ExportMeta`] because they precede the entries) and one
//! `Journal` holding one `Transaction` per entry and one `Line` per posting.
//!
//! SAF-T amounts are in one currency, the header's `DefaultCurrencyCode`, so `begin` refuses
//! an export whose postings span several currencies (export one currency at a time).
//! `finish` checks the streamed entries against the header's control totals; on a mismatch
//! it returns an error and leaves the file unterminated, so it cannot pass for a valid one.
//!
//! Text is XML-escaped; characters XML 1.0 cannot carry become U+FFFD; free-text
//! descriptions are cut to the schema's 256 characters (the full text is in the CSV and
//! JSONL exports). Identifiers are never cut.
//!
//! Known gaps against a strict 1.30 validator, because [`ExportMeta`] does not carry the
//! data: `Company` has no `Contact` and its `RegistrationNumber` is the entity code, not an
//! organisation number; accounts have no opening/closing balances; `GroupingCategory` /
//! `GroupingCode` hold our account type and code rather than Skatteetaten's standard codes;
//! `SAFmonetaryType` allows two decimals, so currencies with three or four (BHD, CLF) exceed
//! it; identifiers longer than the schema allows (35 characters for `SourceID`,
//! `CustomerID`, `SourceDocumentID`) are written in full.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use chrono::Datelike;

use crate::entry::{Account, JournalEntry, Posting};
use crate::export::{
    CurrencyTotals, ExportEntry, ExportMeta, ExportSummary, ExportWriter, format_minor, hash_hex,
};
use crate::money::Currency;
use crate::types::{AccountId, Direction, EntityCode};

/// `AuditFileCountry`. The one place to change when the country becomes configurable.
pub const AUDIT_FILE_COUNTRY: &str = "NO";
/// The schema version and its namespace.
const AUDIT_FILE_VERSION: &str = "1.30";
const NAMESPACE: &str = "urn:StandardAuditFile-Taxation-Financial:NO";
/// `DefaultCurrencyCode` of an export without postings.
const CURRENCY_WHEN_EMPTY: &str = "USD";
/// Maximum length of `SAFlongtextType` (descriptions, names), in characters.
const LONG_TEXT_MAX: usize = 256;

/// Streams entries as SAF-T XML; see the module documentation.
#[derive(Debug)]
pub struct SaftWriter<W> {
    out: W,
    state: State,
    summary: ExportSummary,
}

#[derive(Debug)]
enum State {
    New,
    Open(Open),
    Finished,
}

#[derive(Debug)]
struct Open {
    currency: Currency,
    entity: Option<EntityCode>,
    /// Account names, for line descriptions.
    accounts: HashMap<AccountId, Account>,
    /// What the header announced.
    expected_entries: u64,
    expected_totals: CurrencyTotals,
}

impl<W: Write + Send> SaftWriter<W> {
    pub fn new(out: W) -> Self {
        SaftWriter {
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

impl<W: Write + Send> ExportWriter for SaftWriter<W> {
    fn begin(&mut self, meta: &ExportMeta) -> io::Result<()> {
        if !matches!(self.state, State::New) {
            return Err(misuse("begin() called twice"));
        }
        let currency = single_currency(meta)?;
        let totals = meta.totals.get(&currency).copied().unwrap_or_default();
        let out = &mut self.out;
        write_header(out, meta, currency)?;
        write_accounts(out, meta)?;
        open(out, 1, "GeneralLedgerEntries")?;
        element(out, 2, "NumberOfEntries", &meta.entry_count.to_string())?;
        element(
            out,
            2,
            "TotalDebit",
            &format_minor(totals.debit_minor, currency),
        )?;
        element(
            out,
            2,
            "TotalCredit",
            &format_minor(totals.credit_minor, currency),
        )?;
        open(out, 2, "Journal")?;
        element(out, 3, "JournalID", "GL")?;
        element(out, 3, "Description", "cashloop general ledger")?;
        element(out, 3, "Type", "GL")?;
        self.state = State::Open(Open {
            currency,
            entity: meta.entity.clone(),
            accounts: meta.accounts.clone(),
            expected_entries: meta.entry_count,
            expected_totals: totals,
        });
        Ok(())
    }

    fn entry(&mut self, export: &ExportEntry) -> io::Result<()> {
        let State::Open(open_state) = &self.state else {
            return Err(misuse("entry() called before begin() or after finish()"));
        };
        let entry = &export.entry;
        check_entry(open_state, entry)?;
        let out = &mut self.out;
        let effective_date = entry.effective_date.format("%Y-%m-%d").to_string();
        let description = entry
            .memo
            .as_ref()
            .map_or(entry.idempotency_key.as_str(), |memo| memo.as_str());
        open(out, 3, "Transaction")?;
        element(out, 4, "TransactionID", &entry.id.to_string())?;
        element(out, 4, "Period", &entry.effective_date.month().to_string())?;
        element(
            out,
            4,
            "PeriodYear",
            &entry.effective_date.year().to_string(),
        )?;
        element(out, 4, "TransactionDate", &effective_date)?;
        element(out, 4, "SourceID", entry.source.as_str())?;
        element(out, 4, "Description", clip(description, LONG_TEXT_MAX))?;
        let system_entry_date = entry
            .recorded_at
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        element(out, 4, "SystemEntryDate", &system_entry_date)?;
        element(out, 4, "GLPostingDate", &effective_date)?;
        if let Some(customer) = single_customer(entry) {
            element(out, 4, "CustomerID", customer)?;
        }
        for posting in &entry.postings {
            write_line(out, open_state, entry, posting)?;
        }
        close(out, 3, "Transaction")?;
        self.summary.add(entry);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<ExportSummary> {
        let State::Open(open_state) = std::mem::replace(&mut self.state, State::Finished) else {
            return Err(misuse("finish() called before begin() or twice"));
        };
        let currency = open_state.currency;
        let got = self
            .summary
            .totals
            .get(&currency)
            .copied()
            .unwrap_or_default();
        let want = open_state.expected_totals;
        if self.summary.entries != open_state.expected_entries || got != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "saft export: the header announced {} entries, debit {} and credit {} \
                     {currency}, but the entries written add up to {} entries, debit {} and \
                     credit {}; the file is left unterminated and must be discarded",
                    open_state.expected_entries,
                    format_minor(want.debit_minor, currency),
                    format_minor(want.credit_minor, currency),
                    self.summary.entries,
                    format_minor(got.debit_minor, currency),
                    format_minor(got.credit_minor, currency),
                ),
            ));
        }
        let out = &mut self.out;
        close(out, 2, "Journal")?;
        close(out, 1, "GeneralLedgerEntries")?;
        close(out, 0, "AuditFile")?;
        out.flush()?;
        Ok(std::mem::take(&mut self.summary))
    }
}

/// The one currency of the export, or an error naming them all.
fn single_currency(meta: &ExportMeta) -> io::Result<Currency> {
    let mut currencies = meta.totals.keys();
    match (currencies.next(), currencies.next()) {
        (Some(only), None) => Ok(*only),
        (None, _) => Currency::parse(CURRENCY_WHEN_EMPTY).map_err(io::Error::other),
        (Some(_), Some(_)) => {
            let codes: Vec<&str> = meta.totals.keys().map(|c| c.code()).collect();
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "saft export: a SAF-T file holds one currency, but this export has \
                     postings in {}; export each currency separately",
                    codes.join(", ")
                ),
            ))
        }
    }
}

/// Refuses, before anything of it is written, an entry this file cannot carry.
fn check_entry(open_state: &Open, entry: &JournalEntry) -> io::Result<()> {
    let invalid = |message: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("saft export: entry {}: {message}", entry.id),
        ))
    };
    if let Some(entity) = &open_state.entity
        && entry.entity != *entity
    {
        return invalid(format!("belongs to entity {}, not {entity}", entry.entity));
    }
    for posting in &entry.postings {
        let currency = posting.amount.currency();
        if currency != open_state.currency {
            return invalid(format!(
                "line {} is in {currency}, but this file is in {}",
                posting.line, open_state.currency
            ));
        }
        if !open_state.accounts.contains_key(&posting.account_id) {
            return invalid(format!(
                "line {} posts to account id {} ({}), \
                 which is not in the export's chart of accounts",
                posting.line, posting.account_id.0, posting.account_code
            ));
        }
    }
    Ok(())
}

fn write_header<W: Write>(out: &mut W, meta: &ExportMeta, currency: Currency) -> io::Result<()> {
    let company = meta.entity.as_ref().map_or("cashloop", EntityCode::as_str);
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(out, r#"<AuditFile xmlns="{NAMESPACE}">"#)?;
    open(out, 1, "Header")?;
    element(out, 2, "AuditFileVersion", AUDIT_FILE_VERSION)?;
    element(out, 2, "AuditFileCountry", AUDIT_FILE_COUNTRY)?;
    let created = meta
        .generated_at
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    element(out, 2, "AuditFileDateCreated", &created)?;
    element(out, 2, "SoftwareCompanyName", "cashloop")?;
    element(out, 2, "SoftwareID", "cashloop")?;
    element(out, 2, "SoftwareVersion", meta.software_version)?;
    open(out, 2, "Company")?;
    element(out, 3, "RegistrationNumber", company)?;
    element(out, 3, "Name", company)?;
    close(out, 2, "Company")?;
    element(out, 2, "DefaultCurrencyCode", currency.code())?;
    open(out, 2, "SelectionCriteria")?;
    if let Some(entity) = &meta.entity {
        element(out, 3, "CompanyEntity", entity.as_str())?;
    }
    element(
        out,
        3,
        "SelectionStartDate",
        &meta.from.format("%Y-%m-%d").to_string(),
    )?;
    element(
        out,
        3,
        "SelectionEndDate",
        &meta.to.format("%Y-%m-%d").to_string(),
    )?;
    close(out, 2, "SelectionCriteria")?;
    if let Some((seq, hash)) = &meta.chain_head {
        let comment = format!(
            "cashloop hash chain head: seq {seq}, sha256 {}",
            hash_hex(Some(hash))
        );
        element(out, 2, "HeaderComment", &comment)?;
    }
    element(out, 2, "TaxAccountingBasis", "A")?;
    close(out, 1, "Header")
}

/// The exported entity's accounts (every account when no entity is selected), by code.
fn write_accounts<W: Write>(out: &mut W, meta: &ExportMeta) -> io::Result<()> {
    let mut accounts: Vec<&Account> = meta
        .accounts
        .values()
        .filter(|a| meta.entity.as_ref().is_none_or(|e| a.entity == *e))
        .collect();
    if accounts.is_empty() {
        return Ok(());
    }
    accounts.sort_by(|a, b| (&a.entity, &a.code, a.id).cmp(&(&b.entity, &b.code, b.id)));
    open(out, 1, "MasterFiles")?;
    open(out, 2, "GeneralLedgerAccounts")?;
    for account in accounts {
        let name = non_empty(&account.name).unwrap_or(account.code.as_str());
        open(out, 3, "Account")?;
        element(out, 4, "AccountID", account.code.as_str())?;
        element(out, 4, "AccountDescription", clip(name, LONG_TEXT_MAX))?;
        element(out, 4, "GroupingCategory", account.account_type.as_str())?;
        element(out, 4, "GroupingCode", account.code.as_str())?;
        element(out, 4, "AccountType", "GL")?;
        let created = account
            .created_at
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        element(out, 4, "AccountCreationDate", &created)?;
        close(out, 3, "Account")?;
    }
    close(out, 2, "GeneralLedgerAccounts")?;
    close(out, 1, "MasterFiles")
}

fn write_line<W: Write>(
    out: &mut W,
    open_state: &Open,
    entry: &JournalEntry,
    posting: &Posting,
) -> io::Result<()> {
    // Description is required: the posting's memo, else the entry's, else the account name.
    let account_name = open_state
        .accounts
        .get(&posting.account_id)
        .map(|a| a.name.as_str());
    let description = [
        posting.memo.as_ref().map(|m| m.as_str()),
        entry.memo.as_ref().map(|m| m.as_str()),
        account_name,
    ]
    .into_iter()
    .flatten()
    .find_map(non_empty)
    .unwrap_or(posting.account_code.as_str());
    let side = match posting.direction {
        Direction::Debit => "DebitAmount",
        Direction::Credit => "CreditAmount",
    };
    let amount = format_minor(
        i128::from(posting.amount.amount_minor()),
        posting.amount.currency(),
    );
    open(out, 4, "Line")?;
    element(out, 5, "RecordID", &posting.line.to_string())?;
    element(out, 5, "AccountID", posting.account_code.as_str())?;
    if let Some(document) = &posting.document_ref {
        element(out, 5, "SourceDocumentID", document.as_str())?;
    }
    if let Some(customer) = &posting.customer_id {
        element(out, 5, "CustomerID", customer.as_str())?;
    }
    element(out, 5, "Description", clip(description, LONG_TEXT_MAX))?;
    open(out, 5, side)?;
    element(out, 6, "Amount", &amount)?;
    close(out, 5, side)?;
    close(out, 4, "Line")
}

/// The customer when every posting that names one names the same one.
fn single_customer(entry: &JournalEntry) -> Option<&str> {
    let mut customers = entry.postings.iter().filter_map(|p| p.customer_id.as_ref());
    let first = customers.next()?;
    customers.all(|c| c == first).then_some(first.as_str())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// The first `max_chars` characters of `s`.
fn clip(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

fn indent<W: Write>(out: &mut W, depth: usize) -> io::Result<()> {
    write!(out, "{:width$}", "", width = depth * 2)
}

fn open<W: Write>(out: &mut W, depth: usize, name: &str) -> io::Result<()> {
    indent(out, depth)?;
    writeln!(out, "<{name}>")
}

fn close<W: Write>(out: &mut W, depth: usize, name: &str) -> io::Result<()> {
    indent(out, depth)?;
    writeln!(out, "</{name}>")
}

/// `<name>text</name>` on its own line, with `text` escaped.
fn element<W: Write>(out: &mut W, depth: usize, name: &str, text: &str) -> io::Result<()> {
    indent(out, depth)?;
    writeln!(out, "<{name}>{}</{name}>", Escaped(text))
}

/// XML character data: the five special characters as entities, CR as a character
/// reference (so parsers do not fold it into LF), and characters XML 1.0 forbids as U+FFFD.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut start = 0;
        for (i, c) in text.char_indices() {
            let replacement = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&apos;",
                '\r' => "&#xD;",
                '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => {
                    continue;
                }
                _ => "\u{FFFD}",
            };
            f.write_str(&text[start..i])?;
            f.write_str(replacement)?;
            start = i + c.len_utf8();
        }
        f.write_str(&text[start..])
    }
}

fn misuse(what: &str) -> io::Error {
    io::Error::other(format!("saft export: {what}"))
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use crate::export::csv::fixtures;
    use crate::export::saft::{Escaped, SaftWriter, clip};
    use crate::export::{ExportEntry, ExportMeta, ExportWriter};

    /// Start tags as (depth, name), asserting the document is well formed as far as tags
    /// and entities go: every tag closed in order, no stray `<`, `>` or `&` in text.
    fn elements(xml: &str) -> Vec<(usize, String)> {
        let mut stack: Vec<String> = Vec::new();
        let mut found = Vec::new();
        let mut rest = xml;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt]);
            let gt = lt + rest[lt..].find('>').expect("unclosed tag");
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if tag.starts_with('?') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched close tag");
                continue;
            }
            let name = tag.trim_end_matches('/').split_whitespace().next().unwrap();
            found.push((stack.len(), name.to_owned()));
            if !tag.ends_with('/') {
                stack.push(name.to_owned());
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        found
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw '>' in text: {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#xD;"];
            assert!(
                entity.iter().any(|e| text[i..].starts_with(e)),
                "raw '&': {text:?}"
            );
        }
    }

    /// Names of the children of the `nth` element called `parent`.
    fn children(elements: &[(usize, String)], parent: &str, nth: usize) -> Vec<String> {
        let start = elements
            .iter()
            .enumerate()
            .filter(|(_, (_, name))| name == parent)
            .nth(nth)
            .unwrap()
            .0;
        let depth = elements[start].0;
        elements[start + 1..]
            .iter()
            .take_while(|(d, _)| *d > depth)
            .filter(|(d, _)| *d == depth + 1)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// The raw (still escaped) text of every `<name>…</name>` leaf.
    fn texts<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        xml.split(&open)
            .skip(1)
            .map(|rest| &rest[..rest.find(&close).unwrap()])
            .collect()
    }

    fn export(meta: &ExportMeta, entries: &[ExportEntry]) -> (std::io::Result<()>, String) {
        let mut out = Vec::new();
        let result = fixtures::run(&mut SaftWriter::new(&mut out), meta, entries).map(|_| ());
        (result, String::from_utf8(out).unwrap())
    }

    /// Entries 102 and 103: USD only.
    fn usd_entries() -> Vec<ExportEntry> {
        fixtures::entries().split_off(1)
    }

    #[test]
    fn escapes_and_clips_text() {
        let cases = [
            ("plain", "plain"),
            ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
            ("\"q\" 'a'", "&quot;q&quot; &apos;a&apos;"),
            ("line\nnext\ttab\rcr", "line\nnext\ttab&#xD;cr"),
            ("bell\u{7}nul\u{0}", "bell\u{FFFD}nul\u{FFFD}"),
            ("ünïcødé €", "ünïcødé €"),
        ];
        for (input, want) in cases {
            assert_eq!(Escaped(input).to_string(), want, "{input:?}");
        }
        assert_eq!(clip("ééé", 2), "éé");
        assert_eq!(clip("ab", 5), "ab");
        assert_eq!(clip(&"x".repeat(300), 256).len(), 256);
    }

    #[test]
    fn refuses_more_than_one_currency_before_writing_anything() {
        let entries = fixtures::entries();
        let (result, xml) = export(&fixtures::meta(&entries), &entries);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("EUR, USD"), "{err}");
        assert_eq!(xml, "");
    }

    #[test]
    fn single_currency_file_has_control_totals_and_escaped_text() {
        let entries = usd_entries();
        let (result, xml) = export(&fixtures::meta(&entries), &entries);
        result.unwrap();
        elements(&xml);
        let customer = "0015g00000XyZAB";
        let memo = "Invoice INV-1, &quot;rush&quot; | paid &lt;b&gt; &amp; &apos;ok&apos;";
        let reversal = "Reversal of entry 102";
        let expected: [(&str, Vec<&str>); 14] = [
            ("AuditFileCountry", vec!["NO"]),
            ("DefaultCurrencyCode", vec!["USD"]),
            ("CompanyEntity", vec!["US01"]),
            ("SelectionStartDate", vec!["2026-10-01"]),
            ("SelectionEndDate", vec!["2026-10-31"]),
            ("NumberOfEntries", vec!["2"]),
            ("TotalDebit", vec!["500.00"]),
            ("TotalCredit", vec!["500.00"]),
            // The entity's accounts only (not DE01's), by code.
            ("GroupingCode", vec!["1000", "1010", "1200", "4000", "4010"]),
            ("TransactionID", vec!["102", "103"]),
            ("Period", vec!["10", "10"]),
            ("CustomerID", vec![customer, customer, customer, customer]),
            (
                "Description",
                vec![
                    "cashloop general ledger",
                    memo,
                    memo,
                    "Consulting",
                    reversal,
                    reversal,
                    reversal,
                ],
            ),
            ("Amount", vec!["250.00", "250.00", "250.00", "250.00"]),
        ];
        for (name, want) in expected {
            assert_eq!(texts(&xml, name), want, "<{name}>");
        }
        assert_eq!(
            texts(&xml, "AccountDescription")[2],
            "Receivables, &quot;trade&quot; &amp; &lt;other&gt;\nUSD | main"
        );
        assert!(xml.contains(&format!("sha256 {}", "ab".repeat(32))));
    }

    #[test]
    fn elements_follow_the_schema_order() {
        let entries = usd_entries();
        let (result, xml) = export(&fixtures::meta(&entries), &entries);
        result.unwrap();
        let elements = elements(&xml);
        let cases: [(&str, usize, &[&str]); 7] = [
            (
                "AuditFile",
                0,
                &["Header", "MasterFiles", "GeneralLedgerEntries"],
            ),
            (
                "Header",
                0,
                &[
                    "AuditFileVersion",
                    "AuditFileCountry",
                    "AuditFileDateCreated",
                    "SoftwareCompanyName",
                    "SoftwareID",
                    "SoftwareVersion",
                    "Company",
                    "DefaultCurrencyCode",
                    "SelectionCriteria",
                    "HeaderComment",
                    "TaxAccountingBasis",
                ],
            ),
            (
                "Account",
                0,
                &[
                    "AccountID",
                    "AccountDescription",
                    "GroupingCategory",
                    "GroupingCode",
                    "AccountType",
                    "AccountCreationDate",
                ],
            ),
            (
                "GeneralLedgerEntries",
                0,
                &["NumberOfEntries", "TotalDebit", "TotalCredit", "Journal"],
            ),
            (
                "Transaction",
                0,
                &[
                    "TransactionID",
                    "Period",
                    "PeriodYear",
                    "TransactionDate",
                    "SourceID",
                    "Description",
                    "SystemEntryDate",
                    "GLPostingDate",
                    "CustomerID",
                    "Line",
                    "Line",
                ],
            ),
            (
                "Line",
                0,
                &[
                    "RecordID",
                    "AccountID",
                    "SourceDocumentID",
                    "CustomerID",
                    "Description",
                    "DebitAmount",
                ],
            ),
            (
                "Line",
                1,
                &["RecordID", "AccountID", "Description", "CreditAmount"],
            ),
        ];
        for (parent, nth, want) in cases {
            assert_eq!(children(&elements, parent, nth), want, "{parent} #{nth}");
        }
    }

    #[test]
    fn an_empty_export_is_a_valid_usd_file() {
        let (result, xml) = export(&fixtures::meta(&[]), &[]);
        result.unwrap();
        elements(&xml);
        for (name, want) in [
            ("DefaultCurrencyCode", "USD"),
            ("NumberOfEntries", "0"),
            ("TotalDebit", "0.00"),
            ("TotalCredit", "0.00"),
        ] {
            assert_eq!(texts(&xml, name), [want], "<{name}>");
        }
    }

    #[test]
    fn refuses_entries_and_totals_that_contradict_the_header() {
        let entries = usd_entries();

        let mut meta = fixtures::meta(&entries);
        meta.totals.values_mut().for_each(|t| t.debit_minor += 1);
        let (result, xml) = export(&meta, &entries);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("debit 500.01"), "{err}");
        assert!(
            !xml.contains("</AuditFile>"),
            "a failed file stays unterminated"
        );

        let mut meta = fixtures::meta(&entries);
        meta.entry_count = 3;
        assert!(export(&meta, &entries).0.is_err(), "entry count");

        // An EUR leg in a USD file.
        let (result, _) = export(&fixtures::meta(&entries), &fixtures::entries());
        assert!(result.unwrap_err().to_string().contains("line 3 is in EUR"));

        let mut meta = fixtures::meta(&entries);
        meta.entity = Some(crate::types::EntityCode::parse("DE01", "entity").unwrap());
        let err = export(&meta, &entries).0.unwrap_err();
        assert!(err.to_string().contains("belongs to entity US01"), "{err}");
    }

    #[test]
    fn misuse_is_an_error() {
        let entries = usd_entries();
        let mut writer = SaftWriter::new(Vec::new());
        assert!(writer.entry(&entries[0]).is_err());
        assert!(writer.finish().is_err());
    }
}
