//! The agent's reads from Sage 100 over ODBC (the ProvideX driver, `DSN=SOTAMAS90;…`): posted
//! invoices with their open balance, posted cash receipts, items (`agent_contract`'s
//! `read_changed_invoices`, `read_cash_receipts`, `read_items`).
//!
//! The driver's SQL is limited and it has no transactions, so every query is a single-table
//! SELECT with a WHERE; joins, ordering and paging happen here. Change detection uses Sage's
//! audit columns: `DateUpdated` (`YYYYMMDD`) is compared in SQL (`>=` the cursor's day), and
//! `TimeUpdated` (fractional hours as text, `"9.25000"` < `"14.50833"` only as numbers) is
//! compared here as a decimal. Rows are ordered by (DateUpdated, TimeUpdated, key).
//!
//! The cursor (`next`, opaque to the server) holds the last row's timestamp and the
//! (key, fingerprint) of every row returned at exactly that timestamp: the next read returns
//! rows after that timestamp, and rows at it that were not returned yet or have changed since
//! (Sage's timestamps resolve to 1/100000 hour, so many rows share one; a page may end inside
//! them). An invoice counts as changed when its history header or its `AR_OpenInvoice` row
//! changed (a receipt posted against it), and comes back with its current balance.
//!
//! Amounts are parsed from the driver's text with `rust_decimal`: more than 2 decimal places or
//! text that is no number fails the read naming the table, key and column; nothing is rounded
//! or dropped.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::agent_contract::{
    Invoice, InvoiceLine, InvoicesResult, Item, ItemsResult, PostedReceipt, ReadChanges,
    ReceiptsResult,
};
use crate::odbc::{OdbcError, Rows, Source};

/// How a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Odbc(#[from] OdbcError),
    /// A value Sage holds that the contract cannot carry exactly, or a bad cursor.
    #[error("{0}")]
    Data(String),
}

impl ReadError {
    /// Whether a later attempt may succeed: a driver or connection error may pass; a missing
    /// table or column (configuration: SQLSTATE 42S02/42S22, or the driver's words for them,
    /// since the SQLite driver reports every error as HY000) does not.
    pub fn retryable(&self) -> bool {
        match self {
            ReadError::Odbc(e @ OdbcError::Driver(text)) => {
                let t = text.to_ascii_lowercase();
                let configuration = [
                    "42s02",
                    "42s22",
                    "no such column",
                    "no such table",
                    "column not found",
                    "table not found",
                ]
                .iter()
                .any(|m| t.contains(m));
                e.retryable() && !configuration
            }
            ReadError::Odbc(e) => e.retryable(),
            ReadError::Data(_) => false,
        }
    }
}

/// Values in one IN list (the driver's statements stay short).
const IN_CHUNK: usize = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cursor {
    /// DateUpdated of the last row returned.
    d: String,
    /// Its TimeUpdated as Sage wrote it.
    t: String,
    /// (key, fingerprint) of the rows returned at exactly (d, t).
    seen: Vec<(String, String)>,
}

fn parse_cursor(since: Option<&str>) -> Result<Option<(Cursor, Decimal)>, ReadError> {
    let Some(s) = since else { return Ok(None) };
    let c: Cursor = serde_json::from_str(s)
        .map_err(|_| ReadError::Data(format!("the cursor {s:?} is not one this agent wrote")))?;
    let t = Decimal::from_str(&c.t)
        .map_err(|_| ReadError::Data(format!("the cursor {s:?} is not one this agent wrote")))?;
    Ok(Some((c, t)))
}

/// A changed row, before it is turned into a result record.
struct Stamped<T> {
    date: String,
    time: Decimal,
    time_text: String,
    key: String,
    fp: String,
    item: T,
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// One page after the cursor: the rows, the next cursor, and whether more are waiting.
fn page<T>(
    mut rows: Vec<Stamped<T>>,
    since: Option<(Cursor, Decimal)>,
    max_rows: u32,
) -> (Vec<Stamped<T>>, Option<String>, bool) {
    let max = usize::try_from(max_rows.max(1)).unwrap_or(usize::MAX);
    if let Some((c, t)) = &since {
        rows.retain(
            |r| match (r.date.as_str(), r.time).cmp(&(c.d.as_str(), *t)) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => !c.seen.iter().any(|(k, f)| *k == r.key && *f == r.fp),
                std::cmp::Ordering::Less => false,
            },
        );
    }
    rows.sort_by(|a, b| (&a.date, a.time, &a.key).cmp(&(&b.date, b.time, &b.key)));
    let more = rows.len() > max;
    rows.truncate(max);
    let next = match rows.last() {
        None => since.map(|(c, _)| c),
        Some(last) => {
            let (d, t, tt) = (last.date.clone(), last.time, last.time_text.clone());
            let mut seen: Vec<(String, String)> = match since {
                Some((c, ct)) if c.d == d && ct == t => c.seen,
                _ => vec![],
            };
            for r in rows.iter().filter(|r| r.date == d && r.time == t) {
                seen.retain(|(k, _)| *k != r.key);
                seen.push((r.key.clone(), r.fp.clone()));
            }
            Some(Cursor { d, t: tt, seen })
        }
    };
    (
        rows,
        next.map(|c| serde_json::to_string(&c).unwrap_or_default()),
        more,
    )
}

/// A record of a result set, with the table and key for error messages.
struct Rec<'a> {
    table: &'static str,
    key: String,
    values: HashMap<String, Option<&'a str>>,
}

impl Rec<'_> {
    fn text(&self, column: &str) -> String {
        self.values
            .get(column)
            .copied()
            .flatten()
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    fn bad(&self, column: &str, what: &str) -> ReadError {
        ReadError::Data(format!("{} {}: {column} {what}", self.table, self.key))
    }

    fn decimal(&self, column: &str) -> Result<Decimal, ReadError> {
        let raw = self
            .values
            .get(column)
            .copied()
            .flatten()
            .unwrap_or_default();
        Decimal::from_str(raw.trim())
            .map_err(|_| self.bad(column, &format!("{raw:?} is not a number")))
    }

    /// An amount as integer minor units: exactly, or an error.
    fn minor(&self, column: &str) -> Result<i64, ReadError> {
        use rust_decimal::prelude::ToPrimitive;
        let d = self.decimal(column)?;
        let n = d.normalize();
        if n.scale() > 2 {
            return Err(self.bad(column, &format!("{d} has more than 2 decimal places")));
        }
        n.checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|m| m.to_i64())
            .ok_or_else(|| self.bad(column, &format!("{d} is out of range")))
    }

    /// (DateUpdated, TimeUpdated as a number, its text); blank = the start of time.
    fn stamp(&self) -> Result<(String, Decimal, String), ReadError> {
        let d = self.text("DateUpdated");
        let t = self.text("TimeUpdated");
        let time = if t.trim().is_empty() {
            Decimal::ZERO
        } else {
            Decimal::from_str(t.trim())
                .map_err(|_| self.bad("TimeUpdated", &format!("{t:?} is not a number")))?
        };
        Ok((d, time, t))
    }
}

fn records<'a>(
    rows: &'a Rows,
    columns: &[&str],
    sql: &str,
    table: &'static str,
    key: &[&str],
) -> Result<Vec<Rec<'a>>, ReadError> {
    Ok(rows
        .records(columns, sql)?
        .into_iter()
        .map(|values| {
            let key = key
                .iter()
                .map(|k| {
                    values
                        .get(*k)
                        .copied()
                        .flatten()
                        .unwrap_or_default()
                        .trim_end()
                })
                .collect::<Vec<_>>()
                .join("-");
            Rec { table, key, values }
        })
        .collect())
}

/// `SELECT columns FROM table [WHERE DateUpdated >= ?]`.
async fn changed_since(
    src: &Source,
    table: &str,
    columns: &[&str],
    since: &Option<(Cursor, Decimal)>,
) -> Result<(Rows, String), ReadError> {
    let mut sql = format!("SELECT {} FROM {table}", columns.join(", "));
    let mut params = vec![];
    if let Some((c, _)) = since {
        sql.push_str(" WHERE DateUpdated >= ?");
        params.push(c.d.clone());
    }
    let rows = src.query(&sql, &params).await?;
    Ok((rows, sql))
}

/// `SELECT columns FROM table WHERE column IN (values)`, in chunks.
async fn where_in(
    src: &Source,
    table: &str,
    columns: &[&str],
    column: &str,
    values: &[String],
) -> Result<(Rows, String), ReadError> {
    let mut all = Rows::default();
    let mut last_sql = format!("SELECT {} FROM {table}", columns.join(", "));
    for chunk in values.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT {} FROM {table} WHERE {column} IN ({marks})",
            columns.join(", ")
        );
        let rows = src.query(&sql, chunk).await?;
        if all.columns.is_empty() {
            all.columns = rows.columns;
        }
        all.rows.extend(rows.rows);
        last_sql = sql;
    }
    Ok((all, last_sql))
}

/// A UDF name goes into SQL text: only a plain identifier.
fn udf_column(name: &str) -> Result<&str, ReadError> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name)
    } else {
        Err(ReadError::Data(format!(
            "the Salesforce-id UDF {name:?} is not a column name"
        )))
    }
}

pub async fn items(src: &Source, req: &ReadChanges) -> Result<ItemsResult, ReadError> {
    let since = parse_cursor(req.since.as_deref())?;
    const COLS: &[&str] = &[
        "ItemCode",
        "ItemCodeDesc",
        "ItemType",
        "StandardUnitPrice",
        "DateUpdated",
        "TimeUpdated",
    ];
    let (rows, sql) = changed_since(src, "CI_Item", COLS, &since).await?;
    let mut stamped = Vec::new();
    for r in records(&rows, COLS, &sql, "CI_Item", &["ItemCode"])? {
        let (date, time, time_text) = r.stamp()?;
        let item = Item {
            item_code: r.text("ItemCode"),
            description: r.text("ItemCodeDesc"),
            unit_price_minor: r.minor("StandardUnitPrice")?,
            item_type: r.text("ItemType"),
        };
        stamped.push(Stamped {
            date,
            time,
            time_text,
            fp: fingerprint(&[
                &item.description,
                &item.item_type,
                &item.unit_price_minor.to_string(),
            ]),
            key: r.key,
            item,
        });
    }
    let (rows, next, more) = page(stamped, since, req.max_rows);
    Ok(ItemsResult {
        items: rows.into_iter().map(|s| s.item).collect(),
        next,
        more,
    })
}

pub async fn cash_receipts(src: &Source, req: &ReadChanges) -> Result<ReceiptsResult, ReadError> {
    let since = parse_cursor(req.since.as_deref())?;
    const COLS: &[&str] = &[
        "DepositNo",
        "ARDivisionNo",
        "CustomerNo",
        "CheckNo",
        "InvoiceNo",
        "DepositDate",
        "PostingAmt",
        "Comment",
        "DateUpdated",
        "TimeUpdated",
    ];
    const KEY: &[&str] = &[
        "DepositNo",
        "ARDivisionNo",
        "CustomerNo",
        "CheckNo",
        "InvoiceNo",
    ];
    let (rows, sql) = changed_since(src, "AR_CashReceiptsHistory", COLS, &since).await?;
    let mut stamped = Vec::new();
    for r in records(&rows, COLS, &sql, "AR_CashReceiptsHistory", KEY)? {
        let (date, time, time_text) = r.stamp()?;
        let invoice_no = r.text("InvoiceNo");
        let item = PostedReceipt {
            deposit_no: r.text("DepositNo"),
            ar_division_no: r.text("ARDivisionNo"),
            customer_no: r.text("CustomerNo"),
            check_no: r.text("CheckNo"),
            deposit_date: r.text("DepositDate"),
            amount_minor: r.minor("PostingAmt")?,
            invoice_no: (!invoice_no.is_empty()).then_some(invoice_no),
            comment: r.text("Comment"),
        };
        stamped.push(Stamped {
            date,
            time,
            time_text,
            fp: fingerprint(&[&item.amount_minor.to_string(), &item.comment]),
            key: r.key,
            item,
        });
    }
    let (rows, next, more) = page(stamped, since, req.max_rows);
    Ok(ReceiptsResult {
        receipts: rows.into_iter().map(|s| s.item).collect(),
        next,
        more,
    })
}

/// An invoice's header row, owned.
#[derive(Clone, Debug)]
struct Header {
    invoice_no: String,
    header_seq_no: String,
    division: String,
    customer: String,
    stamp: (String, Decimal, String),
    invoice: Invoice,
}

fn header_columns(udf: &str) -> Vec<&str> {
    vec![
        "InvoiceNo",
        "HeaderSeqNo",
        "InvoiceDate",
        "ARDivisionNo",
        "CustomerNo",
        "SalesOrderNo",
        "CustomerPONo",
        "TaxableSalesAmt",
        "NonTaxableSalesAmt",
        "SalesTaxAmt",
        "FreightAmt",
        udf,
        "DateUpdated",
        "TimeUpdated",
    ]
}

fn header(r: &Rec<'_>, udf: &str) -> Result<Header, ReadError> {
    let taxable = r.minor("TaxableSalesAmt")?;
    let non_taxable = r.minor("NonTaxableSalesAmt")?;
    let tax = r.minor("SalesTaxAmt")?;
    let freight = r.minor("FreightAmt")?;
    let overflow = || r.bad("TaxableSalesAmt", "totals overflow");
    let sales = taxable.checked_add(non_taxable).ok_or_else(overflow)?;
    let total = sales
        .checked_add(tax)
        .and_then(|s| s.checked_add(freight))
        .ok_or_else(overflow)?;
    let so = r.text("SalesOrderNo");
    let sf = r.text(udf);
    Ok(Header {
        invoice_no: r.text("InvoiceNo"),
        header_seq_no: r.text("HeaderSeqNo"),
        division: r.text("ARDivisionNo"),
        customer: r.text("CustomerNo"),
        stamp: r.stamp()?,
        invoice: Invoice {
            invoice_no: r.text("InvoiceNo"),
            invoice_date: r.text("InvoiceDate"),
            ar_division_no: r.text("ARDivisionNo"),
            customer_no: r.text("CustomerNo"),
            sales_order_no: (!so.is_empty()).then_some(so),
            salesforce_id: (!sf.is_empty()).then_some(sf),
            customer_po_no: r.text("CustomerPONo"),
            lines: vec![],
            sales_minor: sales,
            sales_tax_minor: tax,
            freight_minor: freight,
            total_minor: total,
            balance_minor: 0,
        },
    })
}

/// An AR_OpenInvoice row's key: (division, customer, invoice).
type OpenKey = (String, String, String);
/// Its balance (minor units, and as the driver wrote it) and its (date, time, time text).
type OpenRow = (i64, String, (String, Decimal, String));

const OPEN_COLS: &[&str] = &[
    "ARDivisionNo",
    "CustomerNo",
    "InvoiceNo",
    "InvoiceType",
    "Balance",
    "DateUpdated",
    "TimeUpdated",
];
const OPEN_KEY: &[&str] = &["ARDivisionNo", "CustomerNo", "InvoiceNo", "InvoiceType"];

fn open_rows(rows: &Rows, sql: &str) -> Result<HashMap<OpenKey, OpenRow>, ReadError> {
    let mut out = HashMap::new();
    for r in records(rows, OPEN_COLS, sql, "AR_OpenInvoice", OPEN_KEY)? {
        // Credit memos and other types are not the invoices the loop follows.
        if r.text("InvoiceType") != "IN" {
            continue;
        }
        let balance_text = r.text("Balance");
        out.insert(
            (
                r.text("ARDivisionNo"),
                r.text("CustomerNo"),
                r.text("InvoiceNo"),
            ),
            (r.minor("Balance")?, balance_text, r.stamp()?),
        );
    }
    Ok(out)
}

pub async fn changed_invoices(
    src: &Source,
    sf_udf: &str,
    req: &ReadChanges,
) -> Result<InvoicesResult, ReadError> {
    let udf = udf_column(sf_udf)?;
    let since = parse_cursor(req.since.as_deref())?;
    let hcols = header_columns(udf);
    let hkey: &[&str] = &["InvoiceNo", "HeaderSeqNo"];

    // Headers changed since the cursor's day, and open invoices changed since then.
    let (hrows, hsql) = changed_since(src, "AR_InvoiceHistoryHeader", &hcols, &since).await?;
    let mut headers: BTreeMap<(String, String), Header> = BTreeMap::new();
    let mut header_changed: HashMap<(String, String), (String, Decimal, String)> = HashMap::new();
    for r in records(&hrows, &hcols, &hsql, "AR_InvoiceHistoryHeader", hkey)? {
        let h = header(&r, udf)?;
        let k = (h.invoice_no.clone(), h.header_seq_no.clone());
        header_changed.insert(k.clone(), h.stamp.clone());
        headers.insert(k, h);
    }
    let (orows, osql) = changed_since(src, "AR_OpenInvoice", OPEN_COLS, &since).await?;
    let open_changed = open_rows(&orows, &osql)?;

    // Open invoices whose header did not change: fetch their headers.
    let missing: Vec<String> = {
        let mut v: Vec<String> = open_changed
            .keys()
            .filter(|(d, c, i)| {
                !headers
                    .values()
                    .any(|h| h.invoice_no == *i && h.division == *d && h.customer == *c)
            })
            .map(|(_, _, i)| i.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if !missing.is_empty() {
        let (rows, sql) = where_in(
            src,
            "AR_InvoiceHistoryHeader",
            &hcols,
            "InvoiceNo",
            &missing,
        )
        .await?;
        for r in records(&rows, &hcols, &sql, "AR_InvoiceHistoryHeader", hkey)? {
            let h = header(&r, udf)?;
            headers.insert((h.invoice_no.clone(), h.header_seq_no.clone()), h);
        }
    }

    // Each open row belongs to the latest header with its number, division and customer.
    let mut open_of: HashMap<(String, String), OpenKey> = HashMap::new();
    for ok in open_changed.keys() {
        let owner = headers
            .iter()
            .filter(|(_, h)| h.invoice_no == ok.2 && h.division == ok.0 && h.customer == ok.1)
            .map(|(k, _)| k.clone())
            .max();
        match owner {
            Some(k) => {
                open_of.insert(k, ok.clone());
            }
            None => tracing::warn!(
                invoice = %ok.2,
                "AR_OpenInvoice row without an AR_InvoiceHistoryHeader: not reported"
            ),
        }
    }

    // Candidates: changed headers, and headers whose open invoice changed.
    let mut stamped = Vec::new();
    for (k, h) in &headers {
        let hs = header_changed.get(k);
        let os = open_of.get(k).and_then(|ok| open_changed.get(ok));
        let latest = match (hs, os.map(|o| &o.2)) {
            (Some(a), Some(b)) => {
                if (&b.0, b.1) > (&a.0, a.1) {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => continue,
        };
        let fp = fingerprint(&[
            hs.map(|s| s.2.as_str()).unwrap_or_default(),
            hs.map(|s| s.0.as_str()).unwrap_or_default(),
            os.map(|o| o.1.as_str()).unwrap_or_default(),
            os.map(|o| o.2.0.as_str()).unwrap_or_default(),
            os.map(|o| o.2.2.as_str()).unwrap_or_default(),
        ]);
        stamped.push(Stamped {
            date: latest.0.clone(),
            time: latest.1,
            time_text: latest.2.clone(),
            key: format!("{}-{}", k.0, k.1),
            fp,
            item: (k.clone(), h.clone()),
        });
    }
    let (page_rows, next, more) = page(stamped, since, req.max_rows);

    // The page's balances (open rows not changed since the cursor are fetched) and lines.
    let numbers: Vec<String> = {
        let mut v: Vec<String> = page_rows
            .iter()
            .map(|s| s.item.1.invoice_no.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut open_all = open_changed.clone();
    let need_open: Vec<String> = numbers
        .iter()
        .filter(|n| !open_changed.keys().any(|k| k.2 == **n))
        .cloned()
        .collect();
    if !need_open.is_empty() {
        let (rows, sql) =
            where_in(src, "AR_OpenInvoice", OPEN_COLS, "InvoiceNo", &need_open).await?;
        open_all.extend(open_rows(&rows, &sql)?);
    }
    const DCOLS: &[&str] = &[
        "InvoiceNo",
        "HeaderSeqNo",
        "DetailSeqNo",
        "ItemCode",
        "ItemCodeDesc",
        "QuantityShipped",
        "UnitPrice",
        "ExtensionAmt",
    ];
    let mut lines: HashMap<(String, String), Vec<(String, InvoiceLine)>> = HashMap::new();
    if !numbers.is_empty() {
        let (rows, sql) =
            where_in(src, "AR_InvoiceHistoryDetail", DCOLS, "InvoiceNo", &numbers).await?;
        for r in records(
            &rows,
            DCOLS,
            &sql,
            "AR_InvoiceHistoryDetail",
            &["InvoiceNo", "HeaderSeqNo", "DetailSeqNo"],
        )? {
            let line = InvoiceLine {
                item_code: r.text("ItemCode"),
                description: r.text("ItemCodeDesc"),
                quantity: r.decimal("QuantityShipped")?.normalize().to_string(),
                unit_price_minor: r.minor("UnitPrice")?,
                extension_minor: r.minor("ExtensionAmt")?,
            };
            lines
                .entry((r.text("InvoiceNo"), r.text("HeaderSeqNo")))
                .or_default()
                .push((r.text("DetailSeqNo"), line));
        }
    }
    let mut invoices = Vec::with_capacity(page_rows.len());
    for s in page_rows {
        let (k, h) = s.item;
        let mut inv = h.invoice;
        let mut ls = lines.remove(&k).unwrap_or_default();
        ls.sort_by(|a, b| a.0.cmp(&b.0));
        inv.lines = ls.into_iter().map(|(_, l)| l).collect();
        // No open row: paid and removed from the open file.
        inv.balance_minor = open_all
            .get(&(h.division.clone(), h.customer.clone(), h.invoice_no.clone()))
            .map(|o| o.0)
            .unwrap_or(0);
        invoices.push(inv);
    }
    Ok(InvoicesResult {
        invoices,
        next,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(date: &str, time: &str, key: &str, fp: &str) -> Stamped<String> {
        Stamped {
            date: date.into(),
            time: Decimal::from_str(time).unwrap(),
            time_text: time.into(),
            key: key.into(),
            fp: fp.into(),
            item: key.into(),
        }
    }

    #[test]
    fn pages_compare_time_as_a_number_and_resume_inside_equal_timestamps() {
        let all = || {
            vec![
                row("20261126", "14.50000", "B", "1"),
                row("20261126", "9.25000", "Z", "1"),
                row("20261126", "14.50000", "A", "1"),
                row("20261126", "14.50000", "C", "1"),
            ]
        };
        let (p1, next, more) = page(all(), None, 2);
        let keys: Vec<_> = p1.iter().map(|s| s.item.clone()).collect();
        assert_eq!(keys, ["Z", "A"]);
        assert!(more);
        let c = parse_cursor(next.as_deref()).unwrap();
        let (p2, next, more) = page(all(), c, 2);
        let keys: Vec<_> = p2.iter().map(|s| s.item.clone()).collect();
        assert_eq!(keys, ["B", "C"]);
        assert!(!more);
        // Caught up: nothing, the cursor stays; a changed row at the same timestamp comes back.
        let c = parse_cursor(next.as_deref()).unwrap();
        let (p3, again, _) = page(all(), c.clone(), 2);
        assert!(p3.is_empty());
        assert_eq!(again, next);
        let mut changed = all();
        changed[0].fp = "2".into();
        let (p4, _, _) = page(changed, c, 2);
        assert_eq!(p4.len(), 1);
        assert_eq!(p4[0].item, "B");
        assert!(parse_cursor(Some("garbage")).is_err());
    }
}
