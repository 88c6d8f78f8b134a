//! Reads from BusinessWorks over ODBC ([`crate::odbc::Source`]; the Actian Zen driver in
//! production), with the configured names ([`BwNames`]), into the contract's types.
//!
//! Change detection is by row hash: BusinessWorks' tables have no reliable modified
//! timestamp, so every read scans the table, fingerprints each row's canonical text (the
//! contract record serialized as JSON: the invoice header with its balance, without lines; the
//! item) and returns the rows whose fingerprint is new or different from the one recorded in
//! the agent's local state. The contract's `since` cursor is therefore ignored and `next` is
//! always `None`; `more` says more changed rows are waiting than `max_rows` allowed.
//! Deletions are not seen. Amounts are the driver's text parsed with `rust_decimal`: a value
//! that is not an exact amount in cents is an error naming table, key and column.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use sha2::Digest;

use super::names::{BwNames, q};
use super::state::RowHash;
use crate::agent_contract::{Invoice, InvoiceLine, Item};
use crate::odbc::{OdbcError, Source};

/// The division every BusinessWorks customer has in the contract (it has no divisions).
pub const DIVISION: &str = "00";

/// Object names in the local hash record.
pub const INVOICE_OBJECT: &str = "invoice";
pub const ITEM_OBJECT: &str = "item";

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Odbc(#[from] OdbcError),
    #[error("{table} {key}: column {column} = {value:?} is not an amount with at most 2 decimals")]
    Amount {
        table: String,
        key: String,
        column: String,
        value: String,
    },
    #[error("{table} {key}: column {column} = {value:?}: {why}")]
    Value {
        table: String,
        key: String,
        column: String,
        value: String,
        why: &'static str,
    },
}

impl ReadError {
    /// Whether a retry may help (a driver error may be a lost connection; bad data stays bad).
    pub fn retryable(&self) -> bool {
        match self {
            ReadError::Odbc(e) => e.retryable(),
            _ => false,
        }
    }
}

/// A customer as cashloop sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BwCustomer {
    pub customer_no: String,
    pub name: String,
    pub address1: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country: String,
    pub phone: String,
    pub email: String,
    /// Empty when the field is empty.
    pub salesforce_id: String,
}

/// Changed rows of one read, their new hashes (to record with the result) and whether more
/// changed rows are waiting.
#[derive(Clone, Debug, PartialEq)]
pub struct Changed<T> {
    pub rows: Vec<T>,
    pub hashes: Vec<RowHash>,
    pub more: bool,
}

/// Reads BusinessWorks.
#[derive(Clone, Debug)]
pub struct Reader {
    pub source: Source,
    pub names: BwNames,
}

type Rec<'a> = HashMap<String, Option<&'a str>>;

fn text(r: &Rec<'_>, c: &str) -> String {
    r.get(c)
        .copied()
        .flatten()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// An amount in cents from the driver's text.
pub fn minor(table: &str, key: &str, column: &str, v: Option<&str>) -> Result<i64, ReadError> {
    let raw = v.unwrap_or_default().trim();
    let bad = || ReadError::Amount {
        table: table.to_owned(),
        key: key.to_owned(),
        column: column.to_owned(),
        value: raw.to_owned(),
    };
    let d = Decimal::from_str(raw).map_err(|_| bad())?;
    if d.normalize().scale() > 2 {
        return Err(bad());
    }
    d.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|c| i64::try_from(c.normalize()).ok())
        .ok_or_else(bad)
}

fn quantity(table: &str, key: &str, column: &str, v: Option<&str>) -> Result<String, ReadError> {
    let raw = v.unwrap_or_default().trim();
    Decimal::from_str(raw)
        .map(|d| d.normalize().to_string())
        .map_err(|_| ReadError::Value {
            table: table.to_owned(),
            key: key.to_owned(),
            column: column.to_owned(),
            value: raw.to_owned(),
            why: "not a decimal quantity",
        })
}

/// `YYYYMMDD` from the driver's date text (`YYYY-MM-DD`, possibly with a time, or `YYYYMMDD`).
fn date(table: &str, key: &str, column: &str, v: Option<&str>) -> Result<String, ReadError> {
    let raw = v.unwrap_or_default().trim();
    let day = raw.get(..10).unwrap_or(raw);
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(raw, "%Y%m%d"))
        .map(|d| d.format("%Y%m%d").to_string())
        .map_err(|_| ReadError::Value {
            table: table.to_owned(),
            key: key.to_owned(),
            column: column.to_owned(),
            value: raw.to_owned(),
            why: "not a date",
        })
}

/// SHA-256 (hex) of a record's canonical text (its JSON: fixed field order).
pub fn row_hash<T: serde::Serialize>(row: &T) -> String {
    let canonical = serde_json::to_string(row).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Keeps the rows whose hash differs from `known`, in key order, at most `max_rows`.
fn changed<T: serde::Serialize>(
    object: &str,
    mut rows: Vec<(String, T)>,
    known: &HashMap<String, String>,
    max_rows: u32,
) -> Changed<T> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = usize::try_from(max_rows.max(1)).unwrap_or(usize::MAX);
    let mut out = Changed {
        rows: Vec::new(),
        hashes: Vec::new(),
        more: false,
    };
    for (key, row) in rows {
        let hash = row_hash(&row);
        if known.get(&key) == Some(&hash) {
            continue;
        }
        if out.rows.len() == limit {
            out.more = true;
            break;
        }
        out.hashes.push(RowHash {
            object: object.to_owned(),
            key,
            hash,
        });
        out.rows.push(row);
    }
    out
}

impl Reader {
    pub fn new(source: Source, names: BwNames) -> Reader {
        Reader { source, names }
    }

    /// Every invoice header (lines empty), keyed by invoice number.
    async fn invoice_headers(&self) -> Result<Vec<(String, Invoice)>, ReadError> {
        let i = &self.names.invoice;
        let o = &self.names.order;
        let sql = format!(
            "SELECT i.{} AS invoice_no, i.{} AS invoice_date, i.{} AS customer_no, i.{} AS order_no, \
             i.{} AS customer_po, i.{} AS sales, i.{} AS tax, i.{} AS freight, i.{} AS total, \
             i.{} AS balance, o.{} AS salesforce_id \
             FROM {} i LEFT JOIN {} o ON o.{} = i.{} ORDER BY i.{}",
            q(&i.invoice_no),
            q(&i.invoice_date),
            q(&i.customer_no),
            q(&i.order_no),
            q(&i.customer_po),
            q(&i.sales_amount),
            q(&i.tax_amount),
            q(&i.freight_amount),
            q(&i.total_amount),
            q(&i.balance),
            q(&o.salesforce_id),
            q(&i.table),
            q(&o.table),
            q(&o.order_no),
            q(&i.order_no),
            q(&i.invoice_no),
        );
        let rows = self.source.query(&sql, &[]).await?;
        let recs = rows.records(
            &[
                "invoice_no",
                "invoice_date",
                "customer_no",
                "order_no",
                "customer_po",
                "sales",
                "tax",
                "freight",
                "total",
                "balance",
                "salesforce_id",
            ],
            &sql,
        )?;
        let t = i.table.as_str();
        let mut out = Vec::with_capacity(recs.len());
        for r in &recs {
            let no = text(r, "invoice_no");
            let opt = |c: &str| Some(text(r, c)).filter(|s| !s.is_empty());
            let inv = Invoice {
                invoice_date: date(t, &no, &i.invoice_date, r["invoice_date"])?,
                ar_division_no: DIVISION.to_owned(),
                customer_no: text(r, "customer_no"),
                sales_order_no: opt("order_no"),
                salesforce_id: opt("salesforce_id"),
                customer_po_no: text(r, "customer_po"),
                lines: Vec::new(),
                sales_minor: minor(t, &no, &i.sales_amount, r["sales"])?,
                sales_tax_minor: minor(t, &no, &i.tax_amount, r["tax"])?,
                freight_minor: minor(t, &no, &i.freight_amount, r["freight"])?,
                total_minor: minor(t, &no, &i.total_amount, r["total"])?,
                balance_minor: minor(t, &no, &i.balance, r["balance"])?,
                invoice_no: no.clone(),
            };
            out.push((no, inv));
        }
        Ok(out)
    }

    /// The lines of `invoice_nos`, by invoice number, in line order.
    pub async fn invoice_lines(
        &self,
        invoice_nos: &[String],
    ) -> Result<HashMap<String, Vec<InvoiceLine>>, ReadError> {
        let l = &self.names.invoice_line;
        let t = l.table.as_str();
        let mut out: HashMap<String, Vec<InvoiceLine>> = HashMap::new();
        // Bounded IN lists: drivers limit statement size and parameter counts.
        for chunk in invoice_nos.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT {} AS invoice_no, {} AS line_no, {} AS item_code, {} AS description, \
                 {} AS quantity, {} AS unit_price, {} AS extension FROM {} WHERE {} IN ({marks}) \
                 ORDER BY {}, {}",
                q(&l.invoice_no),
                q(&l.line_no),
                q(&l.item_code),
                q(&l.description),
                q(&l.quantity),
                q(&l.unit_price),
                q(&l.extension),
                q(t),
                q(&l.invoice_no),
                q(&l.invoice_no),
                q(&l.line_no),
            );
            let rows = self.source.query(&sql, chunk).await?;
            let recs = rows.records(
                &[
                    "invoice_no",
                    "line_no",
                    "item_code",
                    "description",
                    "quantity",
                    "unit_price",
                    "extension",
                ],
                &sql,
            )?;
            for r in &recs {
                let no = text(r, "invoice_no");
                let key = format!("{no}/{}", text(r, "line_no"));
                let line = InvoiceLine {
                    item_code: text(r, "item_code"),
                    description: text(r, "description"),
                    quantity: quantity(t, &key, &l.quantity, r["quantity"])?,
                    unit_price_minor: minor(t, &key, &l.unit_price, r["unit_price"])?,
                    extension_minor: minor(t, &key, &l.extension, r["extension"])?,
                };
                out.entry(no).or_default().push(line);
            }
        }
        Ok(out)
    }

    /// The invoices (with lines and open balance) whose header hash differs from `known`.
    pub async fn changed_invoices(
        &self,
        known: &HashMap<String, String>,
        max_rows: u32,
    ) -> Result<Changed<Invoice>, ReadError> {
        let mut c = changed(
            INVOICE_OBJECT,
            self.invoice_headers().await?,
            known,
            max_rows,
        );
        let nos: Vec<String> = c.rows.iter().map(|i| i.invoice_no.clone()).collect();
        let mut lines = self.invoice_lines(&nos).await?;
        for inv in &mut c.rows {
            inv.lines = lines.remove(&inv.invoice_no).unwrap_or_default();
        }
        Ok(c)
    }

    /// The items whose hash differs from `known`.
    pub async fn changed_items(
        &self,
        known: &HashMap<String, String>,
        max_rows: u32,
    ) -> Result<Changed<Item>, ReadError> {
        let it = &self.names.item;
        let sql = format!(
            "SELECT {} AS item_code, {} AS description, {} AS unit_price, {} AS item_type FROM {}",
            q(&it.item_code),
            q(&it.description),
            q(&it.unit_price),
            q(&it.item_type),
            q(&it.table),
        );
        let rows = self.source.query(&sql, &[]).await?;
        let recs = rows.records(
            &["item_code", "description", "unit_price", "item_type"],
            &sql,
        )?;
        let mut items = Vec::with_capacity(recs.len());
        for r in &recs {
            let code = text(r, "item_code");
            let item = Item {
                description: text(r, "description"),
                unit_price_minor: minor(&it.table, &code, &it.unit_price, r["unit_price"])?,
                item_type: text(r, "item_type"),
                item_code: code.clone(),
            };
            items.push((code, item));
        }
        Ok(changed(ITEM_OBJECT, items, known, max_rows))
    }

    async fn customer_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<BwCustomer>, ReadError> {
        let c = &self.names.customer;
        let sql = format!(
            "SELECT {} AS customer_no, {} AS name, {} AS address1, {} AS city, {} AS state, \
             {} AS zip_code, {} AS country, {} AS phone, {} AS email, {} AS salesforce_id \
             FROM {} WHERE {} = ?",
            q(&c.customer_no),
            q(&c.name),
            q(&c.address1),
            q(&c.city),
            q(&c.state),
            q(&c.zip_code),
            q(&c.country),
            q(&c.phone),
            q(&c.email),
            q(&c.salesforce_id),
            q(&c.table),
            q(column),
        );
        let rows = self.source.query(&sql, &[value.to_owned()]).await?;
        let recs = rows.records(
            &[
                "customer_no",
                "name",
                "address1",
                "city",
                "state",
                "zip_code",
                "country",
                "phone",
                "email",
                "salesforce_id",
            ],
            &sql,
        )?;
        Ok(recs.first().map(|r| BwCustomer {
            customer_no: text(r, "customer_no"),
            name: text(r, "name"),
            address1: text(r, "address1"),
            city: text(r, "city"),
            state: text(r, "state"),
            zip_code: text(r, "zip_code"),
            country: text(r, "country"),
            phone: text(r, "phone"),
            email: text(r, "email"),
            salesforce_id: text(r, "salesforce_id"),
        }))
    }

    /// The customer numbered `customer_no`.
    pub async fn customer_by_no(&self, customer_no: &str) -> Result<Option<BwCustomer>, ReadError> {
        self.customer_where(&self.names.customer.customer_no, customer_no)
            .await
    }

    /// The customer whose Salesforce-id field holds `salesforce_id`.
    pub async fn customer_by_salesforce_id(
        &self,
        salesforce_id: &str,
    ) -> Result<Option<BwCustomer>, ReadError> {
        self.customer_where(&self.names.customer.salesforce_id, salesforce_id)
            .await
    }

    /// The number of the order carrying `salesforce_id`, if any.
    pub async fn order_by_salesforce_id(
        &self,
        salesforce_id: &str,
    ) -> Result<Option<String>, ReadError> {
        let o = &self.names.order;
        let sql = format!(
            "SELECT {} AS order_no FROM {} WHERE {} = ?",
            q(&o.order_no),
            q(&o.table),
            q(&o.salesforce_id),
        );
        let rows = self.source.query(&sql, &[salesforce_id.to_owned()]).await?;
        let recs = rows.records(&["order_no"], &sql)?;
        Ok(recs.first().map(|r| text(r, "order_no")))
    }

    /// The order numbers in use (BusinessWorks keeps them as text: compared as numbers by the
    /// caller, since the text order of unpadded numbers is not their numeric order).
    pub async fn order_numbers(&self) -> Result<Vec<String>, ReadError> {
        let o = &self.names.order;
        let sql = format!("SELECT {} AS order_no FROM {}", q(&o.order_no), q(&o.table));
        let rows = self.source.query(&sql, &[]).await?;
        let recs = rows.records(&["order_no"], &sql)?;
        Ok(recs.iter().map(|r| text(r, "order_no")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_cents_or_an_error_naming_the_column() {
        assert_eq!(minor("T", "1", "C", Some("12.50")).unwrap(), 1250);
        assert_eq!(minor("T", "1", "C", Some(" 7 ")).unwrap(), 700);
        assert_eq!(minor("T", "1", "C", Some("-0.01")).unwrap(), -1);
        assert_eq!(minor("T", "1", "C", Some("3.100")).unwrap(), 310);
        for bad in [Some("12.345"), Some("abc"), Some(""), None] {
            let e = minor("ARInvoice", "1001", "Balance", bad).unwrap_err();
            let s = e.to_string();
            assert!(
                s.contains("ARInvoice") && s.contains("1001") && s.contains("Balance"),
                "{s}"
            );
        }
        assert_eq!(date("T", "k", "D", Some("2026-11-26")).unwrap(), "20261126");
        assert_eq!(
            date("T", "k", "D", Some("2026-11-26 00:00:00")).unwrap(),
            "20261126"
        );
        assert!(date("T", "k", "D", Some("26/11/2026")).is_err());
    }

    #[test]
    fn changed_keeps_new_and_different_rows_and_pages() {
        let rows = vec![
            ("b".to_owned(), 2),
            ("a".to_owned(), 1),
            ("c".to_owned(), 3),
        ];
        let all = changed("x", rows.clone(), &HashMap::new(), 2);
        assert_eq!(all.rows, [1, 2]);
        assert!(all.more);
        let known: HashMap<String, String> = all
            .hashes
            .iter()
            .map(|h| (h.key.clone(), h.hash.clone()))
            .collect();
        let rest = changed("x", rows, &known, 2);
        assert_eq!(rest.rows, [3]);
        assert!(!rest.more);
    }
}
