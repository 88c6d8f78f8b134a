//! A BusinessWorks stand-in for tests and the sandbox: a BusinessWorks-shaped SQLite database
//! ([`super::layout`], read by the agent through the SQLite ODBC driver) and the import
//! utility: [`Simulator::run_import`] processes the import folder as BusinessWorks' import
//! would (validates each document, inserts the accepted ones, moves the file to `processed/`,
//! writes the log the agent reads, in the layouts of [`super::import`]).
//!
//! It also does what a person does in BusinessWorks: [`Simulator::invoice_order`] turns an
//! order into an invoice with an open balance, [`Simulator::apply_payment`] keys a receipt
//! against it, so balance changes can be tested.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::import::{ImportFolder, LogEntry, format_log};
use super::layout::{create_tables, width};
use super::names::{BwNames, q};
use crate::odbc::Source;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("simulator files: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// What one import run did with one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    pub file: String,
    pub entries: Vec<LogEntry>,
}

#[derive(Clone, Debug)]
pub struct Simulator {
    pub names: BwNames,
    pub import: ImportFolder,
    db_path: PathBuf,
    pool: SqlitePool,
}

/// SQL text built with configured names: they are validated identifiers ([`BwNames::validate`],
/// checked in [`Simulator::create`]), quoted; every value is a bound parameter.
macro_rules! sqlf {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

fn money(minor: i64) -> String {
    Decimal::new(minor, 2).to_string()
}

fn cents(s: &str) -> Option<i64> {
    let d = Decimal::from_str(s.trim()).ok()?;
    if d.normalize().scale() > 2 {
        return None;
    }
    i64::try_from((d * Decimal::ONE_HUNDRED).normalize()).ok()
}

fn next_number(existing: &[String], first: u64) -> String {
    let max = existing
        .iter()
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max();
    let width = existing
        .iter()
        .map(|n| n.trim().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let next = max.map_or(first, |m| m.saturating_add(1));
    format!("{next:0width$}")
}

impl Simulator {
    /// Creates the database at `db_path` (tables named by `names`) and the import folders.
    pub async fn create(
        db_path: &Path,
        names: BwNames,
        import: ImportFolder,
    ) -> Result<Simulator, SimError> {
        names
            .validate()
            .map_err(|e| SimError::Refused(e.to_string()))?;
        for d in [&import.dir, &import.log_dir, &import.processed_dir()] {
            tokio::fs::create_dir_all(d).await?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(db_path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        for stmt in create_tables(&names) {
            let stmt = stmt.replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1);
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&pool)
                .await?;
        }
        Ok(Simulator {
            names,
            import,
            db_path: db_path.to_owned(),
            pool,
        })
    }

    /// The ODBC connection string the agent uses (the SQLite ODBC driver).
    pub fn connection_string(&self) -> String {
        format!("Driver=SQLite3;Database={};", self.db_path.display())
    }

    pub fn source(&self) -> Source {
        Source::new(self.connection_string())
    }

    /// The database, for tests that set up or damage rows directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Adds (or replaces) an item.
    pub async fn add_item(
        &self,
        item_code: &str,
        description: &str,
        unit_price_minor: i64,
        item_type: &str,
    ) -> Result<(), SimError> {
        let it = &self.names.item;
        sqlx::query(sqlf!(
            "INSERT OR REPLACE INTO {} ({}, {}, {}, {}) VALUES (?1, ?2, ?3, ?4)",
            q(&it.table),
            q(&it.item_code),
            q(&it.description),
            q(&it.unit_price),
            q(&it.item_type)
        ))
        .bind(item_code)
        .bind(description)
        .bind(money(unit_price_minor))
        .bind(item_type)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Processes every file waiting in the import folder, in name order.
    pub async fn run_import(&self) -> Result<Vec<Processed>, SimError> {
        let mut files = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.import.dir).await?;
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            // Temporary files are still being written.
            if e.file_type().await?.is_file() && !name.starts_with('.') {
                files.push(name);
            }
        }
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let path = self.import.dir.join(&file);
            let bytes = tokio::fs::read(&path).await?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let entries = if file.starts_with("CUST_") {
                self.import_customers(&text).await?
            } else if file.starts_with("ORDER_") {
                self.import_orders(&text).await?
            } else {
                vec![LogEntry {
                    accepted: false,
                    key: file.clone(),
                    message: "not a customer or order import file".into(),
                }]
            };
            tokio::fs::rename(&path, self.import.processed_dir().join(&file)).await?;
            let log = self.import.log_path(&file);
            let tmp = log.with_extension("log.tmp");
            tokio::fs::write(&tmp, format_log(&entries)).await?;
            tokio::fs::rename(&tmp, &log).await?;
            out.push(Processed { file, entries });
        }
        Ok(out)
    }

    /// Runs the import every `every` until the task is aborted (the sandbox's BusinessWorks).
    pub fn spawn_polling(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.run_import().await {
                    tracing::warn!(error = %e, "BusinessWorks simulator import failed");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    fn records(text: &str) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes())
            .records()
            .filter_map(Result::ok)
            .map(|r| r.iter().map(str::to_owned).collect())
            .collect()
    }

    async fn import_customers(&self, text: &str) -> Result<Vec<LogEntry>, SimError> {
        let c = &self.names.customer;
        let mut out = Vec::new();
        for f in Self::records(text) {
            let key = f.first().cloned().unwrap_or_default();
            let limits = [
                ("Customer number", width::CUSTOMER_NO),
                ("Customer name", width::NAME),
                ("Address", width::ADDRESS),
                ("City", width::CITY),
                ("State", width::STATE),
                ("Zip code", width::ZIP),
                ("Country", width::COUNTRY),
                ("Phone", width::PHONE),
                ("E-mail", width::EMAIL),
                ("Salesforce id", width::SALESFORCE_ID),
            ];
            let problem = if f.len() != limits.len() {
                Some(format!(
                    "expected {} fields, found {}",
                    limits.len(),
                    f.len()
                ))
            } else if f[0].is_empty() || f[1].is_empty() {
                Some("Customer number and name are required".to_owned())
            } else {
                limits.iter().zip(&f).find_map(|((what, w), v)| {
                    (v.chars().count() > *w)
                        .then(|| format!("{what} {v:?} is longer than {w} characters"))
                })
            };
            if let Some(message) = problem {
                out.push(LogEntry {
                    accepted: false,
                    key,
                    message,
                });
                continue;
            }
            sqlx::query(sqlf!(
                "INSERT INTO {t} ({no}, {n}, {a}, {ci}, {s}, {z}, {co}, {p}, {e}, {sf})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT ({no}) DO UPDATE SET {n} = excluded.{n}, {a} = excluded.{a},
                   {ci} = excluded.{ci}, {s} = excluded.{s}, {z} = excluded.{z},
                   {co} = excluded.{co}, {p} = excluded.{p}, {e} = excluded.{e}, {sf} = excluded.{sf}",
                t = q(&c.table),
                no = q(&c.customer_no),
                n = q(&c.name),
                a = q(&c.address1),
                ci = q(&c.city),
                s = q(&c.state),
                z = q(&c.zip_code),
                co = q(&c.country),
                p = q(&c.phone),
                e = q(&c.email),
                sf = q(&c.salesforce_id),
            ))
            .bind(&f[0])
            .bind(&f[1])
            .bind(&f[2])
            .bind(&f[3])
            .bind(&f[4])
            .bind(&f[5])
            .bind(&f[6])
            .bind(&f[7])
            .bind(&f[8])
            .bind(&f[9])
            .execute(&self.pool)
            .await?;
            out.push(LogEntry {
                accepted: true,
                key,
                message: String::new(),
            });
        }
        Ok(out)
    }

    async fn exists(&self, table: &str, column: &str, value: &str) -> Result<bool, SimError> {
        let n: i64 = sqlx::query_scalar(sqlf!(
            "SELECT COUNT(*) FROM {} WHERE {} = ?1",
            q(table),
            q(column)
        ))
        .bind(value)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Why the order (header `h`, lines `ls`) is refused, if it is.
    async fn order_problem(
        &self,
        h: &[String],
        ls: &[Vec<String>],
    ) -> Result<Option<String>, SimError> {
        let n = &self.names;
        if h.len() != 6 {
            return Ok(Some(format!(
                "order header: expected 6 fields, found {}",
                h.len()
            )));
        }
        let (no, cust, date, po, sf) = (&h[1], &h[2], &h[3], &h[4], &h[5]);
        if no.is_empty() || no.chars().count() > width::ORDER_NO {
            return Ok(Some(format!(
                "Order number {no:?} is empty or longer than {} characters",
                width::ORDER_NO
            )));
        }
        if po.chars().count() > width::CUSTOMER_PO {
            return Ok(Some(format!(
                "Customer PO {po:?} is longer than {} characters",
                width::CUSTOMER_PO
            )));
        }
        if sf.chars().count() > width::SALESFORCE_ID {
            return Ok(Some(format!(
                "Salesforce id {sf:?} is longer than {} characters",
                width::SALESFORCE_ID
            )));
        }
        if chrono::NaiveDate::parse_from_str(date, "%m/%d/%Y").is_err() {
            return Ok(Some(format!("Order date {date:?} is not MM/DD/YYYY")));
        }
        if self.exists(&n.order.table, &n.order.order_no, no).await? {
            return Ok(Some(format!("Duplicate order number {no}")));
        }
        if !self
            .exists(&n.customer.table, &n.customer.customer_no, cust)
            .await?
        {
            return Ok(Some(format!("Customer {cust} does not exist")));
        }
        if ls.is_empty() {
            return Ok(Some("The order has no lines".into()));
        }
        for l in ls {
            if l.len() != 5 || l[1] != *no {
                return Ok(Some(format!("Line {l:?} does not belong to order {no}")));
            }
            if l[2].chars().count() > width::ITEM_CODE
                || !self.exists(&n.item.table, &n.item.item_code, &l[2]).await?
            {
                return Ok(Some(format!("Item {} does not exist", l[2])));
            }
            match Decimal::from_str(l[3].trim()) {
                Ok(qty) if qty > Decimal::ZERO => {}
                _ => {
                    return Ok(Some(format!(
                        "Quantity {:?} is not a positive number",
                        l[3]
                    )));
                }
            }
            if cents(&l[4]).is_none_or(|c| c < 0) {
                return Ok(Some(format!("Unit price {:?} is not an amount", l[4])));
            }
        }
        Ok(None)
    }

    async fn import_orders(&self, text: &str) -> Result<Vec<LogEntry>, SimError> {
        // Documents: a header line and the lines up to the next header.
        let mut docs: Vec<(Vec<String>, Vec<Vec<String>>)> = Vec::new();
        for r in Self::records(text) {
            match r.first().map(String::as_str) {
                Some("H") => docs.push((r, Vec::new())),
                _ => match docs.last_mut() {
                    Some(d) => d.1.push(r),
                    None => docs.push((r, Vec::new())),
                },
            }
        }
        let n = &self.names;
        let mut out = Vec::new();
        for (h, ls) in docs {
            let key = h.get(1).cloned().unwrap_or_default();
            if let Some(message) = self.order_problem(&h, &ls).await? {
                out.push(LogEntry {
                    accepted: false,
                    key,
                    message,
                });
                continue;
            }
            let date = chrono::NaiveDate::parse_from_str(&h[3], "%m/%d/%Y")
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            let mut tx = self.pool.begin().await?;
            let o = &n.order;
            sqlx::query(sqlf!(
                "INSERT INTO {} ({}, {}, {}, {}, {}) VALUES (?1, ?2, ?3, ?4, ?5)",
                q(&o.table),
                q(&o.order_no),
                q(&o.customer_no),
                q(&o.order_date),
                q(&o.customer_po),
                q(&o.salesforce_id)
            ))
            .bind(&h[1])
            .bind(&h[2])
            .bind(&date)
            .bind(&h[4])
            .bind(&h[5])
            .execute(&mut *tx)
            .await?;
            let ol = &n.order_line;
            for (i, l) in ls.iter().enumerate() {
                sqlx::query(sqlf!(
                    "INSERT INTO {} ({}, {}, {}, {}, {}) VALUES (?1, ?2, ?3, ?4, ?5)",
                    q(&ol.table),
                    q(&ol.order_no),
                    q(&ol.line_no),
                    q(&ol.item_code),
                    q(&ol.quantity),
                    q(&ol.unit_price)
                ))
                .bind(&h[1])
                .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                .bind(&l[2])
                .bind(l[3].trim())
                .bind(l[4].trim())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            out.push(LogEntry {
                accepted: true,
                key,
                message: String::new(),
            });
        }
        Ok(out)
    }

    /// Invoices order `order_no` (all its lines) with `tax_minor` and `freight_minor`: the new
    /// invoice's balance is its total. Returns the invoice number.
    pub async fn invoice_order(
        &self,
        order_no: &str,
        tax_minor: i64,
        freight_minor: i64,
    ) -> Result<String, SimError> {
        let n = &self.names;
        let (o, ol, i, il, it) = (
            &n.order,
            &n.order_line,
            &n.invoice,
            &n.invoice_line,
            &n.item,
        );
        let head: Option<(String, Option<String>)> = sqlx::query_as(sqlf!(
            "SELECT {}, {} FROM {} WHERE {} = ?1",
            q(&o.customer_no),
            q(&o.customer_po),
            q(&o.table),
            q(&o.order_no)
        ))
        .bind(order_no)
        .fetch_optional(&self.pool)
        .await?;
        let (customer_no, po) =
            head.ok_or_else(|| SimError::Refused(format!("no order {order_no}")))?;
        let lines: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(sqlf!(
            "SELECT l.{}, l.{}, l.{}, l.{}, it.{} FROM {} l LEFT JOIN {} it ON it.{} = l.{}
             WHERE l.{} = ?1 ORDER BY l.{}",
            q(&ol.line_no),
            q(&ol.item_code),
            q(&ol.quantity),
            q(&ol.unit_price),
            q(&it.description),
            q(&ol.table),
            q(&it.table),
            q(&it.item_code),
            q(&ol.item_code),
            q(&ol.order_no),
            q(&ol.line_no)
        ))
        .bind(order_no)
        .fetch_all(&self.pool)
        .await?;
        let existing: Vec<String> =
            sqlx::query_scalar(sqlf!("SELECT {} FROM {}", q(&i.invoice_no), q(&i.table)))
                .fetch_all(&self.pool)
                .await?;
        let invoice_no = next_number(&existing, 100_001);
        let bad = |what: &str| SimError::Refused(format!("order {order_no}: bad {what}"));
        let mut sales = Decimal::ZERO;
        let mut tx = self.pool.begin().await?;
        for (line_no, item, qty, price, description) in &lines {
            let qd = Decimal::from_str(qty).map_err(|_| bad("quantity"))?;
            let pd = Decimal::from_str(price).map_err(|_| bad("price"))?;
            let ext = qd
                .checked_mul(pd)
                .ok_or_else(|| bad("extension"))?
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            sales += ext;
            sqlx::query(sqlf!(
                "INSERT INTO {} ({}, {}, {}, {}, {}, {}, {}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                q(&il.table),
                q(&il.invoice_no),
                q(&il.line_no),
                q(&il.item_code),
                q(&il.description),
                q(&il.quantity),
                q(&il.unit_price),
                q(&il.extension)
            ))
            .bind(&invoice_no)
            .bind(line_no)
            .bind(item)
            .bind(description.clone().unwrap_or_default())
            .bind(qty)
            .bind(price)
            .bind(format!("{ext:.2}"))
            .execute(&mut *tx)
            .await?;
        }
        let sales_minor = i64::try_from(sales * Decimal::ONE_HUNDRED).map_err(|_| bad("total"))?;
        let total = sales_minor
            .checked_add(tax_minor)
            .and_then(|t| t.checked_add(freight_minor))
            .ok_or_else(|| bad("total"))?;
        sqlx::query(sqlf!(
            "INSERT INTO {} ({}, {}, {}, {}, {}, {}, {}, {}, {}, {})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            q(&i.table),
            q(&i.invoice_no),
            q(&i.invoice_date),
            q(&i.customer_no),
            q(&i.order_no),
            q(&i.customer_po),
            q(&i.sales_amount),
            q(&i.tax_amount),
            q(&i.freight_amount),
            q(&i.total_amount),
            q(&i.balance)
        ))
        .bind(&invoice_no)
        .bind(chrono::Utc::now().format("%Y-%m-%d").to_string())
        .bind(&customer_no)
        .bind(order_no)
        .bind(po.unwrap_or_default())
        .bind(money(sales_minor))
        .bind(money(tax_minor))
        .bind(money(freight_minor))
        .bind(money(total))
        .bind(money(total))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(invoice_no)
    }

    /// A receipt of `amount_minor` keyed against `invoice_no`: lowers its balance. Returns the
    /// new balance.
    pub async fn apply_payment(
        &self,
        invoice_no: &str,
        amount_minor: i64,
    ) -> Result<i64, SimError> {
        let i = &self.names.invoice;
        let balance: Option<String> = sqlx::query_scalar(sqlf!(
            "SELECT {} FROM {} WHERE {} = ?1",
            q(&i.balance),
            q(&i.table),
            q(&i.invoice_no)
        ))
        .bind(invoice_no)
        .fetch_optional(&self.pool)
        .await?;
        let balance = balance
            .as_deref()
            .and_then(cents)
            .ok_or_else(|| SimError::Refused(format!("no invoice {invoice_no} with a balance")))?;
        if amount_minor <= 0 || amount_minor > balance {
            return Err(SimError::Refused(format!(
                "a payment of {} on invoice {invoice_no} (balance {}) is refused",
                money(amount_minor),
                money(balance)
            )));
        }
        let left = balance - amount_minor;
        sqlx::query(sqlf!(
            "UPDATE {} SET {} = ?1 WHERE {} = ?2",
            q(&i.table),
            q(&i.balance),
            q(&i.invoice_no)
        ))
        .bind(money(left))
        .bind(invoice_no)
        .execute(&self.pool)
        .await?;
        Ok(left)
    }

    /// The customers, by number, with their Salesforce ids (for tests and the sandbox).
    pub async fn customers(&self) -> Result<HashMap<String, String>, SimError> {
        let c = &self.names.customer;
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(sqlf!(
            "SELECT {}, {} FROM {}",
            q(&c.customer_no),
            q(&c.salesforce_id),
            q(&c.table)
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    /// How many orders there are.
    pub async fn order_count(&self) -> Result<i64, SimError> {
        Ok(
            sqlx::query_scalar(sqlf!("SELECT COUNT(*) FROM {}", q(&self.names.order.table)))
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_the_widest_existing() {
        assert_eq!(next_number(&[], 100_001), "100001");
        assert_eq!(next_number(&["000099".into(), "12".into()], 1), "000100");
        assert_eq!(next_number(&["x".into()], 7), "000007");
    }
}
