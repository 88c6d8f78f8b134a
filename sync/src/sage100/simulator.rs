//! A Sage 100 simulator (axum on 127.0.0.1:0) for tests and the sandbox. Its books are a
//! SQLite database in Sage 100's File Layout (`layout`), so what the eBusiness Web Services
//! side creates, a reader sees over ODBC (the SQLite ODBC driver on [`Simulator::database_path`]).
//!
//! The SOAP surface: customers keyed by (ARDivisionNo, CustomerNo), sales orders, the item
//! list and the sales order number sequence, answering with the faults a real site sends:
//!
//! | condition                                         | fault              |
//! |---------------------------------------------------|--------------------|
//! | GetCustomer / UpdateCustomer / GetSalesOrder of a missing record | `CI_NoKey` |
//! | CreateSalesOrder for an unknown customer or item  | `CI_NOF`           |
//! | a field longer than its layout (CustomerName 30, CustomerNo 20, ARDivisionNo 2, CustomerPONo 15) | `CI_CharLength` |
//! | CreateCustomer / CreateSalesOrder of an existing key | `WS_AlreadyExists` |
//! | a wrong logon or company                          | `WS_InvalidLogon`  |
//! | a UDF in `OtherFields` the layout does not have   | `WS_BadRequest`    |
//!
//! Faults are HTTP 500 with `detail/MasFault{ErrorCode, ErrorMessage}`.
//!
//! Simulator-only operations (not Sage's surface; what people do in Sage's own screens), as
//! Rust methods and as JSON over HTTP under `/sim/…` so a sandbox can drive them:
//!
//! | method | HTTP | what it stands for |
//! |---|---|---|
//! | [`Simulator::invoice_order`] | `POST /sim/invoice` | Sales Order Invoice Data Entry + Daily Sales Journal Update |
//! | [`Simulator::run_visual_integrator`] | `POST /sim/vi/run` | running the `AR_CashReceipts` Visual Integrator job |
//! | [`Simulator::key_cash_receipt`] | `POST /sim/cash_receipts` | a receipt typed into Cash Receipts Entry and posted |
//! | [`Simulator::put_item`] | `POST /sim/items` | Item Maintenance |
//!
//! Every change stamps `DateUpdated`/`TimeUpdated` (Sage's format, `layout::stamp`) from the
//! local clock, or from [`Simulator::set_clock`] when a test needs equal timestamps.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::layout::{self, SF_UDF};
use super::soap::{self, Customer, NS, SalesOrder, SalesOrderLine};
use crate::intacct::xml::Element;

/// A simulator-only operation refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("simulator database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("simulator files: {0}")]
    Io(String),
}

/// Invoice a sales order (all lines shipped in full).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceOrder {
    pub sales_order_no: String,
    /// `YYYYMMDD`; today when absent.
    #[serde(default)]
    pub invoice_date: Option<String>,
    /// Integer minor units.
    #[serde(default)]
    pub sales_tax_minor: i64,
    #[serde(default)]
    pub freight_minor: i64,
}

/// A cash receipt keyed in by hand and posted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedReceipt {
    pub ar_division_no: String,
    pub customer_no: String,
    pub check_no: String,
    /// `YYYYMMDD`.
    pub deposit_date: String,
    pub amount_minor: i64,
    /// Empty: on account.
    #[serde(default)]
    pub invoice_no: String,
    #[serde(default)]
    pub comment: String,
}

/// A CI_Item record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimItem {
    pub item_code: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub unit_price_minor: i64,
    /// `1` regular (Sage's code) when absent.
    #[serde(default)]
    pub item_type: Option<String>,
}

/// What one Visual Integrator run did with one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViRun {
    pub file: String,
    /// Records posted (0 when rejected).
    pub posted: usize,
    pub deposit_no: Option<String>,
    /// Why the file was rejected (the record number and the reason).
    pub rejected: Option<String>,
}

#[derive(Debug, Default)]
struct Mem {
    next_so: u64,
    next_invoice: u64,
    next_deposit: u64,
    calls: Vec<String>,
    /// How long CreateSalesOrder takes (tests hold a command in flight with it).
    create_delay: std::time::Duration,
    clock: Option<chrono::NaiveDateTime>,
    vi_folder: Option<PathBuf>,
}

#[derive(Debug)]
struct Shared {
    username: String,
    password: String,
    company: String,
    db: Mutex<Connection>,
    mem: Mutex<Mem>,
    path: PathBuf,
    /// Owns the database file of [`Simulator::start`].
    _dir: Option<tempfile::TempDir>,
}

impl Shared {
    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stamp(&self) -> (String, String) {
        let at = self
            .mem()
            .clock
            .unwrap_or_else(|| chrono::Local::now().naive_local());
        layout::stamp(at)
    }
}

/// A running simulator; stopped when dropped.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Starts with the logon `username`/`password`, company `company` and the given items, its
    /// books in a new temporary database that lives as long as the simulator.
    pub async fn start(username: &str, password: &str, company: &str, items: &[&str]) -> Simulator {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("sage100.db");
        Self::launch(&path, Some(dir), username, password, company, items)
            .await
            .expect("simulator database")
    }

    /// Starts on the database at `path` (created with the layout's tables if missing; an
    /// existing database keeps its books).
    pub async fn start_at(
        path: &Path,
        username: &str,
        password: &str,
        company: &str,
        items: &[&str],
    ) -> Result<Simulator, SimError> {
        Self::launch(path, None, username, password, company, items).await
    }

    async fn launch(
        path: &Path,
        dir: Option<tempfile::TempDir>,
        username: &str,
        password: &str,
        company: &str,
        items: &[&str],
    ) -> Result<Simulator, SimError> {
        let conn = Connection::open(path)?;
        // A rollback journal, not WAL: in a test process the SQLite ODBC driver brings a second
        // copy of SQLite, and POSIX locks are per process, so that copy takes itself for the
        // last user on close and deletes the WAL this connection still writes to. With a
        // rollback journal every read sees the committed file (the two copies still do not
        // lock each other out: a read racing a write in the same process may see it half done).
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        for t in layout::TABLES {
            conn.execute(t, [])?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| SimError::Io(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SimError::Io(e.to_string()))?;
        let shared = Arc::new(Shared {
            username: username.to_owned(),
            password: password.to_owned(),
            company: company.to_owned(),
            db: Mutex::new(conn),
            mem: Mutex::new(Mem {
                next_so: 1,
                next_invoice: 100_001,
                next_deposit: 1,
                ..Mem::default()
            }),
            path: path.to_owned(),
            _dir: dir,
        });
        let (d, t) = shared.stamp();
        {
            let db = shared.db();
            for code in items {
                db.execute(
                    "INSERT OR IGNORE INTO CI_Item (ItemCode, ItemCodeDesc, DateUpdated, TimeUpdated)
                     VALUES (?1, ?1, ?2, ?3)",
                    params![code, d, t],
                )?;
            }
        }
        let app = Router::new()
            .route(soap::SOAP_PATH, post(handle))
            .route("/sim/invoice", post(sim_invoice))
            .route("/sim/vi/run", post(sim_vi_run))
            .route("/sim/cash_receipts", post(sim_cash_receipt))
            .route("/sim/items", post(sim_item))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Simulator { shared, addr, task })
    }

    /// The web services URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, soap::SOAP_PATH)
    }

    /// The base URL of the `/sim/…` operations.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The books: a SQLite database in the File Layout (open it with the SQLite ODBC driver).
    pub fn database_path(&self) -> &Path {
        &self.shared.path
    }

    /// An ODBC connection string for the books through the SQLite ODBC driver.
    pub fn odbc_connection_string(&self) -> String {
        format!("Driver=SQLite3;Database={};", self.shared.path.display())
    }

    pub fn customers(&self) -> Vec<Customer> {
        let db = self.shared.db();
        let mut keys = Vec::new();
        if let Ok(mut st) =
            db.prepare("SELECT ARDivisionNo, CustomerNo FROM AR_Customer ORDER BY 1, 2")
            && let Ok(rows) = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        {
            keys = rows.flatten().collect::<Vec<(String, String)>>();
        }
        keys.iter()
            .filter_map(|(d, c)| get_customer(&db, d, c).ok().flatten())
            .collect()
    }

    pub fn sales_orders(&self) -> Vec<SalesOrder> {
        let db = self.shared.db();
        let mut nos = Vec::new();
        if let Ok(mut st) = db.prepare("SELECT SalesOrderNo FROM SO_SalesOrderHeader ORDER BY 1")
            && let Ok(rows) = st.query_map([], |r| r.get(0))
        {
            nos = rows.flatten().collect::<Vec<String>>();
        }
        nos.iter()
            .filter_map(|n| get_order(&db, n).ok().flatten())
            .collect()
    }

    /// Makes CreateSalesOrder take `delay` before it answers.
    pub fn set_create_delay(&self, delay: std::time::Duration) {
        self.shared.mem().create_delay = delay;
    }

    /// Every SOAP operation called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.shared.mem().calls.clone()
    }

    /// Stamps every later change with `at` (`None`: the local clock again).
    pub fn set_clock(&self, at: Option<chrono::NaiveDateTime>) {
        self.shared.mem().clock = at;
    }

    /// The folder [`Self::run_visual_integrator`] imports from (the agent's `--vi-folder`).
    pub fn set_vi_folder(&self, folder: &Path) {
        self.shared.mem().vi_folder = Some(folder.to_owned());
    }

    /// Adds or changes a CI_Item record.
    pub fn put_item(&self, item: &SimItem) -> Result<(), SimError> {
        put_item(&self.shared, item)
    }

    /// Invoices a sales order in full; returns the invoice number.
    pub fn invoice_order(&self, req: &InvoiceOrder) -> Result<String, SimError> {
        invoice_order(&self.shared, req)
    }

    /// Runs the Visual Integrator cash receipts job over the VI folder.
    pub fn run_visual_integrator(&self) -> Result<Vec<ViRun>, SimError> {
        run_vi(&self.shared)
    }

    /// Posts a receipt typed in by hand; returns its deposit number.
    pub fn key_cash_receipt(&self, r: &KeyedReceipt) -> Result<String, SimError> {
        key_receipt(&self.shared, r)
    }
}

// ---- the books --------------------------------------------------------------------------------

fn money(minor: i64) -> String {
    Decimal::new(minor, 2).to_string()
}

/// A decimal column read back as text (SQLite keeps DECIMAL as a number; CAST gives its text).
fn dec(text: &str, what: &str) -> Result<Decimal, SimError> {
    Decimal::from_str(text.trim())
        .map_err(|_| SimError::Invalid(format!("{what} {text:?} is not a number")))
}

fn minor(d: Decimal, what: &str) -> Result<i64, SimError> {
    use rust_decimal::prelude::ToPrimitive;
    let n = d.normalize();
    if n.scale() > 2 {
        return Err(SimError::Invalid(format!(
            "{what} {d} has more than 2 decimal places"
        )));
    }
    n.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|m| m.to_i64())
        .ok_or_else(|| SimError::Invalid(format!("{what} {d} is out of range")))
}

fn get_customer(db: &Connection, div: &str, no: &str) -> Result<Option<Customer>, SimError> {
    Ok(db
        .query_row(
            "SELECT ARDivisionNo, CustomerNo, CustomerName, AddressLine1, City, State, ZipCode,
                    CountryCode, TelephoneNo, EmailAddress, UDF_SF_ID
             FROM AR_Customer WHERE ARDivisionNo = ?1 AND CustomerNo = ?2",
            params![div, no],
            |r| {
                Ok(Customer {
                    ar_division_no: r.get(0)?,
                    customer_no: r.get(1)?,
                    customer_name: r.get(2)?,
                    address_line1: r.get(3)?,
                    city: r.get(4)?,
                    state: r.get(5)?,
                    zip_code: r.get(6)?,
                    country_code: r.get(7)?,
                    telephone_no: r.get(8)?,
                    email_address: r.get(9)?,
                    udfs: vec![(SF_UDF.to_owned(), r.get(10)?)],
                })
            },
        )
        .optional()?)
}

/// The Salesforce-id UDF from `OtherFields`; another UDF is not in the layout.
fn sf_udf(udfs: &[(String, String)], table: &str) -> Result<String, String> {
    let mut sf = String::new();
    for (k, v) in udfs {
        if k.eq_ignore_ascii_case(SF_UDF) {
            sf = v.clone();
        } else {
            return Err(format!("{k} is not a field of {table}."));
        }
    }
    Ok(sf)
}

fn get_order(db: &Connection, no: &str) -> Result<Option<SalesOrder>, SimError> {
    let Some(mut so) = db
        .query_row(
            "SELECT SalesOrderNo, ARDivisionNo, CustomerNo, CustomerPONo, OrderDate, UDF_SF_ID
             FROM SO_SalesOrderHeader WHERE SalesOrderNo = ?1",
            params![no],
            |r| {
                Ok(SalesOrder {
                    sales_order_no: r.get(0)?,
                    ar_division_no: r.get(1)?,
                    customer_no: r.get(2)?,
                    customer_po_no: r.get(3)?,
                    order_date: r.get(4)?,
                    lines: vec![],
                    udfs: vec![(SF_UDF.to_owned(), r.get(5)?)],
                })
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = db.prepare(
        "SELECT ItemCode, CAST(QuantityOrdered AS TEXT), CAST(UnitPrice AS TEXT)
         FROM SO_SalesOrderDetail WHERE SalesOrderNo = ?1 ORDER BY LineKey",
    )?;
    let rows: Vec<(String, String, String)> = st
        .query_map(params![no], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (item, q, p) in rows {
        let mut price = dec(&p, "UnitPrice")?;
        if price.scale() < 2 {
            price.rescale(2);
        }
        so.lines.push(SalesOrderLine {
            item_code: item,
            quantity_ordered: dec(&q, "QuantityOrdered")?.normalize().to_string(),
            unit_price: price.to_string(),
        });
    }
    Ok(Some(so))
}

fn put_item(shared: &Shared, item: &SimItem) -> Result<(), SimError> {
    if item.item_code.is_empty() || item.item_code.chars().count() > 30 {
        return Err(SimError::Invalid(
            "ItemCode must be 1 to 30 characters".into(),
        ));
    }
    let (d, t) = shared.stamp();
    shared.db().execute(
        "INSERT INTO CI_Item (ItemCode, ItemCodeDesc, ItemType, StandardUnitPrice, DateUpdated, TimeUpdated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (ItemCode) DO UPDATE SET ItemCodeDesc = excluded.ItemCodeDesc,
           ItemType = excluded.ItemType, StandardUnitPrice = excluded.StandardUnitPrice,
           DateUpdated = excluded.DateUpdated, TimeUpdated = excluded.TimeUpdated",
        params![
            item.item_code,
            item.description,
            item.item_type.as_deref().unwrap_or("1"),
            money(item.unit_price_minor),
            d,
            t
        ],
    )?;
    Ok(())
}

fn yyyymmdd(s: &str) -> Result<(), String> {
    chrono::NaiveDate::parse_from_str(s, "%Y%m%d")
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not a YYYYMMDD date"))
}

fn invoice_order(shared: &Shared, req: &InvoiceOrder) -> Result<String, SimError> {
    if req.sales_tax_minor < 0 || req.freight_minor < 0 {
        return Err(SimError::Invalid(
            "tax and freight must not be negative".into(),
        ));
    }
    let (d, t) = shared.stamp();
    let invoice_date = req.invoice_date.clone().unwrap_or_else(|| d.clone());
    yyyymmdd(&invoice_date).map_err(SimError::Invalid)?;
    let mut db = shared.db();
    let header: Option<(String, String, String, String, String)> = db
        .query_row(
            "SELECT ARDivisionNo, CustomerNo, CustomerPONo, UDF_SF_ID, OrderStatus
             FROM SO_SalesOrderHeader WHERE SalesOrderNo = ?1",
            params![req.sales_order_no],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((div, cust, po, sf, status)) = header else {
        return Err(SimError::NotFound(format!(
            "sales order {} is not on file",
            req.sales_order_no
        )));
    };
    if status != "O" {
        return Err(SimError::Invalid(format!(
            "sales order {} is already invoiced",
            req.sales_order_no
        )));
    }
    let lines: Vec<(String, String, String, String, String)> = {
        let mut st = db.prepare(
            "SELECT ItemCode, ItemCodeDesc, CAST(QuantityOrdered AS TEXT), CAST(UnitPrice AS TEXT),
                    CAST(ExtensionAmt AS TEXT)
             FROM SO_SalesOrderDetail WHERE SalesOrderNo = ?1 ORDER BY LineKey",
        )?;
        st.query_map(params![req.sales_order_no], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?
    };
    let mut sales: i64 = 0;
    for l in &lines {
        sales = sales
            .checked_add(minor(dec(&l.4, "ExtensionAmt")?, "ExtensionAmt")?)
            .ok_or_else(|| SimError::Invalid("invoice total overflows".into()))?;
    }
    let total = sales
        .checked_add(req.sales_tax_minor)
        .and_then(|s| s.checked_add(req.freight_minor))
        .ok_or_else(|| SimError::Invalid("invoice total overflows".into()))?;
    // Taxed: every line is taxable (one tax class is enough for the loop).
    let (taxable, non_taxable) = if req.sales_tax_minor > 0 {
        (sales, 0)
    } else {
        (0, sales)
    };
    let invoice_no = {
        let mut mem = shared.mem();
        loop {
            let no = format!("{:07}", mem.next_invoice);
            mem.next_invoice += 1;
            let used: bool = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM AR_InvoiceHistoryHeader WHERE InvoiceNo = ?1)",
                params![no],
                |r| r.get(0),
            )?;
            if !used {
                break no;
            }
        }
    };
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO AR_InvoiceHistoryHeader (InvoiceNo, HeaderSeqNo, InvoiceType, InvoiceDate,
            ARDivisionNo, CustomerNo, SalesOrderNo, CustomerPONo, TaxableSalesAmt,
            NonTaxableSalesAmt, SalesTaxAmt, FreightAmt, UDF_SF_ID, DateUpdated, TimeUpdated)
         VALUES (?1, '000000', 'IN', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            invoice_no,
            invoice_date,
            div,
            cust,
            req.sales_order_no,
            po,
            money(taxable),
            money(non_taxable),
            money(req.sales_tax_minor),
            money(req.freight_minor),
            sf,
            d,
            t
        ],
    )?;
    for (i, (item, desc, q, p, ext)) in lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO AR_InvoiceHistoryDetail (InvoiceNo, HeaderSeqNo, DetailSeqNo, ItemCode,
                ItemCodeDesc, QuantityShipped, UnitPrice, ExtensionAmt)
             VALUES (?1, '000000', ?2, ?3, ?4, ?5, ?6, ?7)",
            params![invoice_no, format!("{:06}", i + 1), item, desc, q, p, ext],
        )?;
    }
    tx.execute(
        "INSERT INTO AR_OpenInvoice (ARDivisionNo, CustomerNo, InvoiceNo, InvoiceType, InvoiceDate,
            Balance, DateUpdated, TimeUpdated)
         VALUES (?1, ?2, ?3, 'IN', ?4, ?5, ?6, ?7)",
        params![div, cust, invoice_no, invoice_date, money(total), d, t],
    )?;
    tx.execute(
        "UPDATE SO_SalesOrderHeader SET OrderStatus = 'C', DateUpdated = ?2, TimeUpdated = ?3
         WHERE SalesOrderNo = ?1",
        params![req.sales_order_no, d, t],
    )?;
    tx.commit()?;
    Ok(invoice_no)
}

/// The longest check number Sage 100 keeps.
const CHECK_NO_MAX: usize = 10;

/// One receipt line to post (from a VI record or a hand-keyed entry).
#[derive(Debug)]
struct ReceiptLine {
    deposit_date: String,
    div: String,
    cust: String,
    check_no: String,
    amount_minor: i64,
    invoice_no: String,
    comment: String,
}

/// Checks `lines` against the books as Sage's posting would; `Err((index, reason))` names the
/// first bad one. Balances are tracked across the lines (two receipts on one invoice).
fn check_receipts(db: &Connection, lines: &[ReceiptLine]) -> Result<(), (usize, String)> {
    let mut balances: HashMap<(String, String, String), i64> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, l) in lines.iter().enumerate() {
        let bad = |m: String| (i, m);
        yyyymmdd(&l.deposit_date).map_err(bad)?;
        if l.amount_minor <= 0 {
            return Err(bad("the amount must be positive".into()));
        }
        // AR_CashReceiptsHistory.CheckNo is 10 characters in the File Layout.
        if l.check_no.chars().count() > CHECK_NO_MAX {
            return Err(bad(format!(
                "CheckNo {:?} is longer than {CHECK_NO_MAX} characters",
                l.check_no
            )));
        }
        if !seen.insert((
            l.div.clone(),
            l.cust.clone(),
            l.check_no.clone(),
            l.invoice_no.clone(),
        )) {
            return Err(bad(format!(
                "check {} is applied to invoice {:?} twice",
                l.check_no, l.invoice_no
            )));
        }
        let known = get_customer(db, &l.div, &l.cust)
            .map_err(|e| bad(e.to_string()))?
            .is_some();
        if !known {
            return Err(bad(format!("unknown customer {}-{}", l.div, l.cust)));
        }
        if l.invoice_no.is_empty() {
            continue;
        }
        let key = (l.div.clone(), l.cust.clone(), l.invoice_no.clone());
        let balance = match balances.get(&key) {
            Some(b) => *b,
            None => {
                let b: Option<String> = db
                    .query_row(
                        "SELECT CAST(Balance AS TEXT) FROM AR_OpenInvoice
                         WHERE ARDivisionNo = ?1 AND CustomerNo = ?2 AND InvoiceNo = ?3
                           AND InvoiceType = 'IN'",
                        params![l.div, l.cust, l.invoice_no],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| bad(e.to_string()))?;
                let Some(b) = b else {
                    return Err(bad(format!(
                        "unknown invoice {} for customer {}-{}",
                        l.invoice_no, l.div, l.cust
                    )));
                };
                dec(&b, "Balance")
                    .and_then(|d| minor(d, "Balance"))
                    .map_err(|e| bad(e.to_string()))?
            }
        };
        if l.amount_minor > balance {
            return Err(bad(format!(
                "amount {} over the balance {} of invoice {}",
                money(l.amount_minor),
                money(balance),
                l.invoice_no
            )));
        }
        balances.insert(key, balance - l.amount_minor);
    }
    Ok(())
}

/// Posts checked `lines` under one deposit, in one transaction.
fn post_receipts(
    shared: &Shared,
    db: &mut Connection,
    lines: &[ReceiptLine],
) -> Result<String, SimError> {
    let (d, t) = shared.stamp();
    let deposit_no = {
        let mut mem = shared.mem();
        loop {
            let no = format!("{:05}", mem.next_deposit);
            mem.next_deposit += 1;
            let used: bool = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM AR_CashReceiptsHistory WHERE DepositNo = ?1)",
                params![no],
                |r| r.get(0),
            )?;
            if !used {
                break no;
            }
        }
    };
    let tx = db.transaction()?;
    for l in lines {
        tx.execute(
            "INSERT INTO AR_CashReceiptsHistory (DepositNo, ARDivisionNo, CustomerNo, CheckNo,
                InvoiceNo, DepositDate, PostingAmt, Comment, DateUpdated, TimeUpdated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                deposit_no,
                l.div,
                l.cust,
                l.check_no,
                l.invoice_no,
                l.deposit_date,
                money(l.amount_minor),
                l.comment,
                d,
                t
            ],
        )?;
        if !l.invoice_no.is_empty() {
            let b: String = tx.query_row(
                "SELECT CAST(Balance AS TEXT) FROM AR_OpenInvoice
                 WHERE ARDivisionNo = ?1 AND CustomerNo = ?2 AND InvoiceNo = ?3 AND InvoiceType = 'IN'",
                params![l.div, l.cust, l.invoice_no],
                |r| r.get(0),
            )?;
            let left = minor(dec(&b, "Balance")?, "Balance")?
                .checked_sub(l.amount_minor)
                .ok_or_else(|| SimError::Invalid("the balance overflows".into()))?;
            tx.execute(
                "UPDATE AR_OpenInvoice SET Balance = ?4, DateUpdated = ?5, TimeUpdated = ?6
                 WHERE ARDivisionNo = ?1 AND CustomerNo = ?2 AND InvoiceNo = ?3 AND InvoiceType = 'IN'",
                params![l.div, l.cust, l.invoice_no, money(left), d, t],
            )?;
        }
    }
    tx.commit()?;
    Ok(deposit_no)
}

fn key_receipt(shared: &Shared, r: &KeyedReceipt) -> Result<String, SimError> {
    let lines = [ReceiptLine {
        deposit_date: r.deposit_date.clone(),
        div: r.ar_division_no.clone(),
        cust: r.customer_no.clone(),
        check_no: r.check_no.clone(),
        amount_minor: r.amount_minor,
        invoice_no: r.invoice_no.clone(),
        comment: r.comment.clone(),
    }];
    let mut db = shared.db();
    check_receipts(&db, &lines).map_err(|(_, m)| SimError::Invalid(m))?;
    post_receipts(shared, &mut db, &lines)
}

/// One VI record (the `agent::ViFolder` layout) as a receipt line.
fn vi_record(rec: &csv::StringRecord) -> Result<ReceiptLine, String> {
    if rec.len() != 8 {
        return Err(format!("expected 8 fields, found {}", rec.len()));
    }
    let amount = |i: usize, name: &str| -> Result<i64, String> {
        dec(&rec[i], name)
            .and_then(|d| minor(d, name))
            .map_err(|e| e.to_string())
    };
    let posting = amount(4, "PostingAmt")?;
    if amount(6, "AmountPosted")? != posting {
        return Err("AmountPosted differs from PostingAmt".into());
    }
    Ok(ReceiptLine {
        deposit_date: rec[0].to_owned(),
        div: rec[1].to_owned(),
        cust: rec[2].to_owned(),
        check_no: rec[3].to_owned(),
        amount_minor: posting,
        invoice_no: rec[5].to_owned(),
        comment: rec[7].to_owned(),
    })
}

fn run_vi(shared: &Shared) -> Result<Vec<ViRun>, SimError> {
    let io = |e: std::io::Error| SimError::Io(e.to_string());
    let Some(folder) = shared.mem().vi_folder.clone() else {
        return Err(SimError::Invalid(
            "no Visual Integrator folder is set".into(),
        ));
    };
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("AR_CashReceipts_") && n.ends_with(".csv"))
        .collect();
    names.sort();
    let mut runs = Vec::new();
    for name in names {
        let path = folder.join(&name);
        let text = std::fs::read(&path).map_err(io)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&text[..]);
        let mut lines = Vec::new();
        let mut problem = None;
        for (i, rec) in reader.records().enumerate() {
            match rec.map_err(|e| e.to_string()).and_then(|r| vi_record(&r)) {
                Ok(l) => lines.push(l),
                Err(e) => {
                    problem = Some(format!("record {}: {e}", i + 1));
                    break;
                }
            }
        }
        let mut db = shared.db();
        if problem.is_none() {
            if lines.is_empty() {
                problem = Some("the file holds no records".into());
            } else if let Err((i, e)) = check_receipts(&db, &lines) {
                problem = Some(format!("record {}: {e}", i + 1));
            }
        }
        let (sub, run, log) = match problem {
            Some(p) => (
                "rejected",
                ViRun {
                    file: name.clone(),
                    posted: 0,
                    deposit_no: None,
                    rejected: Some(p.clone()),
                },
                format!("{name}: rejected, nothing posted\r\n{p}\r\n"),
            ),
            None => {
                let deposit = post_receipts(shared, &mut db, &lines)?;
                let total = lines
                    .iter()
                    .fold(0i64, |a, l| a.saturating_add(l.amount_minor));
                (
                    "processed",
                    ViRun {
                        file: name.clone(),
                        posted: lines.len(),
                        deposit_no: Some(deposit.clone()),
                        rejected: None,
                    },
                    format!(
                        "{name}: {} records posted to deposit {deposit}, total {}\r\n",
                        lines.len(),
                        money(total)
                    ),
                )
            }
        };
        drop(db);
        let dest = folder.join(sub);
        std::fs::create_dir_all(&dest).map_err(io)?;
        std::fs::rename(&path, dest.join(&name)).map_err(io)?;
        std::fs::write(dest.join(format!("{name}.log")), log).map_err(io)?;
        runs.push(run);
    }
    Ok(runs)
}

// ---- /sim over HTTP -------------------------------------------------------------------------

fn sim_answer<T: Serialize>(r: Result<T, SimError>) -> Response {
    match r {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            let status = match e {
                SimError::NotFound(_) => StatusCode::NOT_FOUND,
                SimError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}

async fn sim_invoice(State(s): State<Arc<Shared>>, Json(req): Json<InvoiceOrder>) -> Response {
    sim_answer(invoice_order(&s, &req).map(|no| serde_json::json!({"invoice_no": no})))
}

async fn sim_vi_run(State(s): State<Arc<Shared>>) -> Response {
    sim_answer(run_vi(&s).map(|runs| serde_json::json!({"files": runs})))
}

async fn sim_cash_receipt(State(s): State<Arc<Shared>>, Json(r): Json<KeyedReceipt>) -> Response {
    sim_answer(key_receipt(&s, &r).map(|no| serde_json::json!({"deposit_no": no})))
}

async fn sim_item(State(s): State<Arc<Shared>>, Json(i): Json<SimItem>) -> Response {
    sim_answer(put_item(&s, &i).map(|()| serde_json::json!({"item_code": i.item_code})))
}

// ---- SOAP -----------------------------------------------------------------------------------

fn fault(code: &str, message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/xml; charset=utf-8")],
        soap::fault_envelope(code, message),
    )
        .into_response()
}

fn ok(op: &str, result: Option<Element>) -> Response {
    let mut resp = Element::new(format!("{op}Response")).with_attr("xmlns", NS);
    if let Some(r) = result {
        resp = resp.with(r);
    }
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        soap::envelope(resp),
    )
        .into_response()
}

fn too_long(field: &str, value: &str, max: usize) -> Option<Response> {
    (value.chars().count() > max).then(|| {
        fault(
            "CI_CharLength",
            &format!("The {field} is too long (maximum {max} characters)."),
        )
    })
}

fn check_customer(c: &Customer) -> Option<Response> {
    too_long("ARDivisionNo", &c.ar_division_no, 2)
        .or_else(|| too_long("CustomerNo", &c.customer_no, 20))
        .or_else(|| too_long("CustomerName", &c.customer_name, 30))
        .or_else(|| too_long("AddressLine1", &c.address_line1, 30))
        .or_else(|| too_long("City", &c.city, 20))
        .or_else(|| too_long("EmailAddress", &c.email_address, 250))
}

fn db_fault(e: impl std::fmt::Display) -> Response {
    fault("WS_ServerError", &format!("The database failed: {e}"))
}

async fn handle(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let call = match soap::body(&body) {
        Ok(c) => c,
        Err(e) => return fault("WS_BadRequest", &e.to_string()),
    };
    let op = call.name.clone();
    let t = |p: &str| call.text_at(p).unwrap_or_default().to_owned();
    if t("logon/Username") != shared.username
        || t("logon/Password") != shared.password
        || !t("companyCode").eq_ignore_ascii_case(&shared.company)
    {
        return fault("WS_InvalidLogon", "The logon or company code is not valid.");
    }
    if op == "CreateSalesOrder" {
        let delay = shared.mem().create_delay;
        tokio::time::sleep(delay).await;
    }
    shared.mem().calls.push(op.clone());
    let (d, ts) = shared.stamp();
    let db = shared.db();
    match op.as_str() {
        "GetCustomer" => match get_customer(&db, &t("arDivisionNo"), &t("customerNo")) {
            Ok(Some(c)) => ok(&op, Some(c.to_element("GetCustomerResult"))),
            Ok(None) => fault("CI_NoKey", "The record does not exist."),
            Err(e) => db_fault(e),
        },
        "CreateCustomer" | "UpdateCustomer" => {
            let Some(el) = call.child("customer") else {
                return fault("WS_BadRequest", "customer is required");
            };
            let c = Customer::from_element(el);
            if let Some(f) = check_customer(&c) {
                return f;
            }
            let sf = match sf_udf(&c.udfs, "AR_Customer") {
                Ok(sf) => sf,
                Err(m) => return fault("WS_BadRequest", &m),
            };
            let exists = match get_customer(&db, &c.ar_division_no, &c.customer_no) {
                Ok(e) => e.is_some(),
                Err(e) => return db_fault(e),
            };
            if op == "CreateCustomer" && exists {
                return fault(
                    "WS_AlreadyExists",
                    &format!(
                        "Customer {}-{} already exists.",
                        c.ar_division_no, c.customer_no
                    ),
                );
            }
            if op == "UpdateCustomer" && !exists {
                return fault("CI_NoKey", "The record does not exist.");
            }
            let r = db.execute(
                "INSERT INTO AR_Customer (ARDivisionNo, CustomerNo, CustomerName, AddressLine1, City,
                    State, ZipCode, CountryCode, TelephoneNo, EmailAddress, UDF_SF_ID, DateUpdated,
                    TimeUpdated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (ARDivisionNo, CustomerNo) DO UPDATE SET
                    CustomerName = excluded.CustomerName, AddressLine1 = excluded.AddressLine1,
                    City = excluded.City, State = excluded.State, ZipCode = excluded.ZipCode,
                    CountryCode = excluded.CountryCode, TelephoneNo = excluded.TelephoneNo,
                    EmailAddress = excluded.EmailAddress, UDF_SF_ID = excluded.UDF_SF_ID,
                    DateUpdated = excluded.DateUpdated, TimeUpdated = excluded.TimeUpdated",
                params![
                    c.ar_division_no,
                    c.customer_no,
                    c.customer_name,
                    c.address_line1,
                    c.city,
                    c.state,
                    c.zip_code,
                    c.country_code,
                    c.telephone_no,
                    c.email_address,
                    sf,
                    d,
                    ts
                ],
            );
            match r {
                Ok(_) => ok(&op, None),
                Err(e) => db_fault(e),
            }
        }
        "GetNextSalesOrderNo" => {
            // Skip numbers already used (an order created with an explicit number).
            let mut mem = shared.mem();
            let mut n = mem.next_so;
            loop {
                match get_order(&db, &format!("{n:07}")) {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break,
                    Err(e) => return db_fault(e),
                }
            }
            mem.next_so = n + 1;
            ok(
                &op,
                Some(Element::leaf(
                    "GetNextSalesOrderNoResult",
                    format!("{n:07}"),
                )),
            )
        }
        "CreateSalesOrder" => {
            let Some(el) = call.child("salesOrder") else {
                return fault("WS_BadRequest", "salesOrder is required");
            };
            let so = SalesOrder::from_element(el);
            create_sales_order(db, &so, &d, &ts)
        }
        "GetSalesOrder" => match get_order(&db, &t("salesOrderNo")) {
            Ok(Some(so)) => ok(&op, Some(so.to_element("GetSalesOrderResult"))),
            Ok(None) => fault("CI_NoKey", "The record does not exist."),
            Err(e) => db_fault(e),
        },
        other => fault(
            "WS_NotSupported",
            &format!("The operation {other} is not supported."),
        ),
    }
}

fn create_sales_order(
    mut db: std::sync::MutexGuard<'_, Connection>,
    so: &SalesOrder,
    d: &str,
    ts: &str,
) -> Response {
    let op = "CreateSalesOrder";
    if let Some(f) = too_long("SalesOrderNo", &so.sales_order_no, 7)
        .or_else(|| too_long("CustomerPONo", &so.customer_po_no, 15))
    {
        return f;
    }
    if so.sales_order_no.is_empty() {
        return fault("WS_BadRequest", "SalesOrderNo is required");
    }
    let sf = match sf_udf(&so.udfs, "SO_SalesOrderHeader") {
        Ok(sf) => sf,
        Err(m) => return fault("WS_BadRequest", &m),
    };
    match get_order(&db, &so.sales_order_no) {
        Ok(Some(_)) => {
            return fault(
                "WS_AlreadyExists",
                &format!("Sales order {} already exists.", so.sales_order_no),
            );
        }
        Ok(None) => {}
        Err(e) => return db_fault(e),
    }
    match get_customer(&db, &so.ar_division_no, &so.customer_no) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return fault(
                "CI_NOF",
                &format!(
                    "Customer {}-{} is not on file.",
                    so.ar_division_no, so.customer_no
                ),
            );
        }
        Err(e) => return db_fault(e),
    }
    let mut lines = Vec::new();
    for l in &so.lines {
        let desc: Option<String> = match db
            .query_row(
                "SELECT ItemCodeDesc FROM CI_Item WHERE ItemCode = ?1",
                params![l.item_code],
                |r| r.get(0),
            )
            .optional()
        {
            Ok(d) => d,
            Err(e) => return db_fault(e),
        };
        let Some(desc) = desc else {
            return fault("CI_NOF", &format!("Item {} is not on file.", l.item_code));
        };
        let (Ok(q), Ok(p)) = (
            Decimal::from_str(&l.quantity_ordered),
            Decimal::from_str(&l.unit_price),
        ) else {
            return fault(
                "WS_BadRequest",
                &format!(
                    "Line {}: QuantityOrdered and UnitPrice must be numbers.",
                    l.item_code
                ),
            );
        };
        // Sage rounds the extension to the currency's 2 places.
        let ext = q.checked_mul(p).map(|e| {
            e.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        });
        let Some(ext) = ext else {
            return fault("WS_BadRequest", "The line extension overflows.");
        };
        lines.push((l, desc, ext));
    }
    let r = (|| -> rusqlite::Result<()> {
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO SO_SalesOrderHeader (SalesOrderNo, OrderDate, OrderStatus, ARDivisionNo,
                CustomerNo, CustomerPONo, UDF_SF_ID, DateUpdated, TimeUpdated)
             VALUES (?1, ?2, 'O', ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                so.sales_order_no,
                so.order_date,
                so.ar_division_no,
                so.customer_no,
                so.customer_po_no,
                sf,
                d,
                ts
            ],
        )?;
        for (i, (l, desc, ext)) in lines.iter().enumerate() {
            tx.execute(
                "INSERT INTO SO_SalesOrderDetail (SalesOrderNo, LineKey, ItemCode, ItemCodeDesc,
                    QuantityOrdered, UnitPrice, ExtensionAmt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    so.sales_order_no,
                    format!("{:06}", i + 1),
                    l.item_code,
                    desc,
                    l.quantity_ordered,
                    l.unit_price,
                    ext.to_string()
                ],
            )?;
        }
        tx.commit()
    })();
    match r {
        Ok(()) => ok(op, None),
        Err(e) => db_fault(e),
    }
}
