//! JSON lines export: one object per journal entry, then one trailer object.
//!
//! Each line is a complete JSON object, so a consumer can stream the file line by line.
//! Amounts appear twice: as a decimal string with exactly the currency's exponent digits
//! (`"12.50"`) and as an integer of minor units (`1250`); JSON numbers are never used for
//! decimals. Missing optional values are `null`. The last line is
//! `{"trailer":{...}}` with the entry and posting counts, debit and credit totals per
//! currency (decimal strings), the hash-chain head at export time and the date range, so a
//! truncated file (no trailer) can be told from a complete one.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use chrono::{NaiveDate, SecondsFormat};
use serde::Serialize;

use crate::entry::Account;
use crate::export::{ExportEntry, ExportMeta, ExportSummary, ExportWriter, format_minor, hash_hex};
use crate::types::{AccountId, EntryId};

/// Streams entries as JSON lines; see the module documentation for the layout.
#[derive(Debug)]
pub struct JsonlWriter<W> {
    out: W,
    state: State,
    summary: ExportSummary,
}

#[derive(Debug)]
enum State {
    New,
    Open {
        /// Names for `account_name`.
        accounts: HashMap<AccountId, Account>,
        chain_head: Option<(i64, [u8; 32])>,
        from: NaiveDate,
        to: NaiveDate,
    },
    Finished,
}

#[derive(Serialize)]
struct EntryLine<'a> {
    entry_id: EntryId,
    seq: Option<i64>,
    hash: Option<String>,
    entity: &'a str,
    idempotency_key: &'a str,
    effective_date: String,
    recorded_at: String,
    source: &'a str,
    external_ref: Option<&'a str>,
    memo: Option<&'a str>,
    reverses_entry_id: Option<EntryId>,
    reversed_by: Option<EntryId>,
    postings: Vec<PostingLine<'a>>,
}

#[derive(Serialize)]
struct PostingLine<'a> {
    line: u32,
    account_id: AccountId,
    account_code: &'a str,
    account_name: &'a str,
    direction: &'static str,
    amount: String,
    amount_minor: i64,
    currency: &'static str,
    customer_id: Option<&'a str>,
    document_ref: Option<&'a str>,
    memo: Option<&'a str>,
}

#[derive(Serialize)]
struct TrailerLine {
    trailer: Trailer,
}

#[derive(Serialize)]
struct Trailer {
    entries: u64,
    postings: u64,
    totals: BTreeMap<&'static str, Totals>,
    chain_head_seq: Option<i64>,
    chain_head_hash: Option<String>,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct Totals {
    debits: String,
    credits: String,
}

impl<W: Write + Send> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        JsonlWriter {
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

impl<W: Write + Send> ExportWriter for JsonlWriter<W> {
    fn begin(&mut self, meta: &ExportMeta) -> io::Result<()> {
        if !matches!(self.state, State::New) {
            return Err(misuse("begin() called twice"));
        }
        self.state = State::Open {
            accounts: meta.accounts.clone(),
            chain_head: meta.chain_head,
            from: meta.from,
            to: meta.to,
        };
        Ok(())
    }

    fn entry(&mut self, export: &ExportEntry) -> io::Result<()> {
        let State::Open { accounts, .. } = &self.state else {
            return Err(misuse("entry() called before begin() or after finish()"));
        };
        let entry = &export.entry;
        let mut postings = Vec::with_capacity(entry.postings.len());
        for posting in &entry.postings {
            let account = accounts.get(&posting.account_id).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "jsonl export: entry {} line {} posts to account id {} ({}), \
                         which is not in the export's chart of accounts",
                        entry.id, posting.line, posting.account_id.0, posting.account_code
                    ),
                )
            })?;
            postings.push(PostingLine {
                line: posting.line,
                account_id: posting.account_id,
                account_code: posting.account_code.as_str(),
                account_name: &account.name,
                direction: posting.direction.as_str(),
                amount: posting.amount.format_amount(),
                amount_minor: posting.amount.amount_minor(),
                currency: posting.amount.currency().code(),
                customer_id: posting.customer_id.as_ref().map(|c| c.as_str()),
                document_ref: posting.document_ref.as_ref().map(|t| t.as_str()),
                memo: posting.memo.as_ref().map(|t| t.as_str()),
            });
        }
        let line = EntryLine {
            entry_id: entry.id,
            seq: export.seq,
            hash: export.hash.as_ref().map(|h| hash_hex(Some(h))),
            entity: entry.entity.as_str(),
            idempotency_key: entry.idempotency_key.as_str(),
            effective_date: entry.effective_date.format("%Y-%m-%d").to_string(),
            recorded_at: entry
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            source: entry.source.as_str(),
            external_ref: entry.external_ref.as_ref().map(|t| t.as_str()),
            memo: entry.memo.as_ref().map(|t| t.as_str()),
            reverses_entry_id: entry.reverses_entry_id,
            reversed_by: export.reversed_by,
            postings,
        };
        write_line(&mut self.out, &line)?;
        self.summary.add(entry);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<ExportSummary> {
        let State::Open {
            chain_head,
            from,
            to,
            ..
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(misuse("finish() called before begin() or twice"));
        };
        let totals = self
            .summary
            .totals
            .iter()
            .map(|(currency, totals)| {
                let totals = Totals {
                    debits: format_minor(totals.debit_minor, *currency),
                    credits: format_minor(totals.credit_minor, *currency),
                };
                (currency.code(), totals)
            })
            .collect();
        let trailer = TrailerLine {
            trailer: Trailer {
                entries: self.summary.entries,
                postings: self.summary.postings,
                totals,
                chain_head_seq: chain_head.map(|(seq, _)| seq),
                chain_head_hash: chain_head.map(|(_, hash)| hash_hex(Some(&hash))),
                from: from.format("%Y-%m-%d").to_string(),
                to: to.format("%Y-%m-%d").to_string(),
            },
        };
        write_line(&mut self.out, &trailer)?;
        self.out.flush()?;
        Ok(std::mem::take(&mut self.summary))
    }
}

/// Writes `value` as one line of JSON.
fn write_line<W: Write>(out: &mut W, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

fn misuse(what: &str) -> io::Error {
    io::Error::other(format!("jsonl export: {what}"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::export::ExportWriter;
    use crate::export::csv::fixtures::{self, TRICKY_MEMO, TRICKY_NAME};
    use crate::export::jsonl::JsonlWriter;

    fn export_lines() -> Vec<Value> {
        let entries = fixtures::entries();
        let meta = fixtures::meta(&entries);
        let mut out = Vec::new();
        let summary = fixtures::run(&mut JsonlWriter::new(&mut out), &meta, &entries).unwrap();
        assert_eq!((summary.entries, summary.postings), (3, 8));
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn every_line_parses_and_the_trailer_matches() {
        let lines = export_lines();
        assert_eq!(lines.len(), 4, "three entries and a trailer");
        let head = "ab".repeat(32);
        assert_eq!(
            lines[3],
            json!({"trailer": {
                "entries": 3,
                "postings": 8,
                "totals": {
                    "EUR": {"debits": "50.00", "credits": "50.00"},
                    "USD": {"debits": "600.00", "credits": "600.00"},
                },
                "chain_head_seq": 2,
                "chain_head_hash": head,
                "from": "2026-10-01",
                "to": "2026-10-31",
            }})
        );
    }

    #[test]
    fn entry_lines_carry_every_field() {
        let lines = export_lines();
        assert_eq!(
            lines[1],
            json!({
                "entry_id": 102,
                "seq": 2,
                "hash": "02".repeat(32),
                "entity": "US01",
                "idempotency_key": "sage-102",
                "effective_date": "2026-10-20",
                "recorded_at": "2026-10-20T08:30:00.000000Z",
                "source": "sage-ar",
                "external_ref": null,
                "memo": TRICKY_MEMO,
                "reverses_entry_id": null,
                "reversed_by": 103,
                "postings": [
                    {
                        "line": 1, "account_id": 2, "account_code": "1200",
                        "account_name": TRICKY_NAME, "direction": "debit",
                        "amount": "250.00", "amount_minor": 25000, "currency": "USD",
                        "customer_id": "0015g00000XyZAB", "document_ref": "INV-1", "memo": null,
                    },
                    {
                        "line": 2, "account_id": 3, "account_code": "4000",
                        "account_name": "Revenue USD", "direction": "credit",
                        "amount": "250.00", "amount_minor": 25000, "currency": "USD",
                        "customer_id": null, "document_ref": null, "memo": "Consulting",
                    },
                ],
            })
        );
        // (entry_id, seq, hash present, reverses_entry_id, reversed_by, posting count)
        let expected = [
            (101, json!(1), true, json!(null), json!(null), 4),
            (102, json!(2), true, json!(null), json!(103), 2),
            (103, json!(null), false, json!(102), json!(null), 2),
        ];
        for (line, (id, seq, hashed, reverses, reversed_by, postings)) in lines.iter().zip(expected)
        {
            assert_eq!(line["entry_id"], id);
            assert_eq!(line["seq"], seq, "{id}");
            assert_eq!(line["hash"].is_string(), hashed, "{id}");
            assert_eq!(line["reverses_entry_id"], reverses, "{id}");
            assert_eq!(line["reversed_by"], reversed_by, "{id}");
            assert_eq!(line["postings"].as_array().unwrap().len(), postings, "{id}");
        }
    }

    #[test]
    fn an_empty_export_is_just_the_trailer() {
        let meta = fixtures::meta(&[]);
        let mut out = Vec::new();
        fixtures::run(&mut JsonlWriter::new(&mut out), &meta, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let trailer: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(trailer["trailer"]["entries"], 0);
        assert_eq!(trailer["trailer"]["totals"], json!({}));
    }

    #[test]
    fn misuse_is_an_error() {
        let entries = fixtures::entries();
        let mut writer = JsonlWriter::new(Vec::new());
        assert!(writer.entry(&entries[0]).is_err());
        writer.begin(&fixtures::meta(&entries)).unwrap();
        assert!(writer.begin(&fixtures::meta(&entries)).is_err());
        writer.finish().unwrap();
        assert!(writer.finish().is_err());
    }
}
