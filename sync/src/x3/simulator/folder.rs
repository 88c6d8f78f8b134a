//! One simulated X3 folder: records per class, numbering sequences and the business rules
//! that answer type-3 messages. The texts follow X3's `FIELD : message` style but are not
//! copied from a real installation (none is public): check them against a sandbox.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use ledger::Currency;
use rust_decimal::{Decimal, RoundingStrategy};

use super::expr::{Expr, compare_values};
use crate::x3::record::{Line, X3Record};
use crate::x3::schema::{self, ClassSchema};
use crate::x3::types::{ADDRESS_TABLE, DATE_FORMAT, ORDER_LINES, PAYMENT_LINES};

/// Why the simulator refuses a request; the server maps each to X3's shape per surface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// A business rule: type-3 message (SOAP status 0, REST 400 `$diagnoses`).
    Business(String),
    /// No such record / class (REST 404).
    NotFound(String),
    /// A property the class does not have, in `where` / `orderBy` (REST 500).
    UnknownProperty(String),
    /// A request X3 cannot read (REST 400).
    BadRequest(String),
}

impl SimError {
    pub fn message(&self) -> &str {
        match self {
            SimError::Business(m)
            | SimError::NotFound(m)
            | SimError::UnknownProperty(m)
            | SimError::BadRequest(m) => m,
        }
    }
}

pub type SimResult<T> = Result<T, SimError>;

fn business(msg: impl Into<String>) -> SimError {
    SimError::Business(msg.into())
}

/// A stored record and its stamps.
#[derive(Clone, Debug)]
pub struct Stored {
    pub uuid: String,
    pub etag: String,
    pub rec: X3Record,
}

/// A query row: the record and its sort values (the `orderBy` fields, then the key).
pub type Row<'a> = (&'a Stored, Vec<String>);

/// A folder's state.
#[derive(Debug)]
pub struct Folder {
    pub name: String,
    sites: Vec<String>,
    currencies: Vec<String>,
    custom_fields: Vec<String>,
    tax_rate: Decimal,
    records: BTreeMap<&'static str, BTreeMap<String, Stored>>,
    seq: BTreeMap<&'static str, u64>,
}

fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS random source");
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now_etag() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Checked decimal arithmetic: an overflow is a business error, never a panic.
fn checked(r: Option<Decimal>, field: &str) -> SimResult<Decimal> {
    r.ok_or_else(|| business(format!("{field} : Amount out of range")))
}

fn decimal(text: &str, field: &str) -> SimResult<Decimal> {
    text.trim()
        .parse::<Decimal>()
        .map_err(|_| business(format!("{field} : Invalid number {text:?}")))
}

/// Rounds to the currency's decimals, half away from zero, and fixes the scale.
fn round_to(d: Decimal, currency: &str) -> Decimal {
    let dp = Currency::parse(currency).map_or(2, |c| c.exponent());
    let mut r = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(dp);
    r
}

fn line_of(pairs: &[(&str, String)]) -> Line {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl Folder {
    pub fn new(
        name: &str,
        sites: &[String],
        currencies: &[String],
        custom_fields: &[String],
        tax_rate: Decimal,
    ) -> Folder {
        Folder {
            name: name.into(),
            sites: sites.to_vec(),
            currencies: currencies.to_vec(),
            custom_fields: custom_fields.to_vec(),
            tax_rate,
            records: BTreeMap::new(),
            seq: BTreeMap::new(),
        }
    }

    fn next(&mut self, class: &'static str) -> u64 {
        let n = self.seq.entry(class).or_default();
        *n += 1;
        *n
    }

    fn table(&self, class: &str) -> Option<&BTreeMap<String, Stored>> {
        self.records.get(class)
    }

    pub fn get(&self, class: &str, key: &str) -> Option<&Stored> {
        self.table(class).and_then(|t| t.get(key))
    }

    fn exists(&self, class: &str, key: &str) -> bool {
        self.get(class, key).is_some()
    }

    /// Whether `field` is a header property of `class` here (custom fields included).
    pub fn has_property(&self, schema: &ClassSchema, field: &str) -> bool {
        schema.has_field(field)
            || (schema.class == "BPCUSTOMER" && self.custom_fields.iter().any(|c| c == field))
    }

    /// Refuses unknown header fields, tables and line fields; moves a scalar sent for a
    /// dimensioned field into its list.
    fn check_fields(&self, schema: &ClassSchema, rec: &mut X3Record) -> SimResult<()> {
        let names: Vec<String> = rec.header_names().map(str::to_owned).collect();
        for f in names {
            if !self.has_property(schema, &f) {
                return Err(SimError::BadRequest(format!(
                    "{f} : Property unknown in class {}",
                    schema.class
                )));
            }
        }
        for (f, _) in schema.lists {
            if let Some(v) = rec.fields.remove(*f) {
                rec.lists.insert((*f).to_owned(), vec![v]);
            }
        }
        for (id, lines) in &rec.tables {
            let Some(fields) = schema.table(id) else {
                return Err(SimError::BadRequest(format!(
                    "{id} : Collection unknown in class {}",
                    schema.class
                )));
            };
            for line in lines {
                if let Some(f) = line.keys().find(|k| !fields.contains(&k.as_str())) {
                    return Err(SimError::BadRequest(format!(
                        "{id}.{f} : Property unknown in class {}",
                        schema.class
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_currency(&self, cur: &str) -> SimResult<()> {
        if self.currencies.iter().any(|c| c == cur) {
            Ok(())
        } else {
            Err(business(format!("CUR : Currency {cur} does not exist")))
        }
    }

    fn check_site(&self, field: &str, site: &str) -> SimResult<()> {
        if self.sites.iter().any(|s| s == site) {
            Ok(())
        } else {
            Err(business(format!("{field} : Site {site} does not exist")))
        }
    }

    fn store(&mut self, class: &'static str, key: String, rec: X3Record) -> X3Record {
        let stored = Stored {
            uuid: new_uuid(),
            etag: now_etag(),
            rec: rec.clone(),
        };
        self.records.entry(class).or_default().insert(key, stored);
        rec
    }

    /// Stores a record as is (seeding).
    pub fn insert_raw(&mut self, schema: &'static ClassSchema, rec: X3Record) {
        let key = rec.text(schema.key).to_owned();
        self.store(schema.class, key, rec);
    }

    /// `$create` / `save`.
    pub fn create(
        &mut self,
        schema: &'static ClassSchema,
        mut rec: X3Record,
    ) -> SimResult<X3Record> {
        self.check_fields(schema, &mut rec)?;
        match schema.class {
            "BPCUSTOMER" => self.create_customer(rec),
            "SORDER" => self.create_order(rec),
            "ITMMASTER" => self.create_item(rec),
            "PAYMENTH" => self.create_payment(rec),
            other => Err(business(format!(
                "{other} : Creation is not available through this web service"
            ))),
        }
    }

    fn create_customer(&mut self, mut rec: X3Record) -> SimResult<X3Record> {
        if rec.text("BPRNAM").trim().is_empty() {
            return Err(business("BPRNAM : Mandatory field"));
        }
        let cur = rec.text("CUR").to_owned();
        self.check_currency(&cur)?;
        if rec.text("CRY").trim().is_empty() {
            return Err(business("CRY : Mandatory field"));
        }
        let mut code = rec.text("BPCNUM").trim().to_owned();
        if code.is_empty() {
            loop {
                code = format!("C{:05}", self.next("BPCUSTOMER"));
                if !self.exists("BPCUSTOMER", &code) {
                    break;
                }
            }
        } else if self.exists("BPCUSTOMER", &code) {
            return Err(business(format!(
                "BPCNUM : Customer {code} : Record already exists"
            )));
        }
        rec.set("BPCNUM", code.clone());
        for f in &self.custom_fields {
            if !rec.fields.contains_key(f) {
                rec.set(f, "");
            }
        }
        if let Some(addr) = rec.lines(ADDRESS_TABLE).first() {
            let code = addr.get("CODADR").cloned().unwrap_or_default();
            rec.set("BPAINV", code.clone());
            rec.set("BPAPYR", code);
        }
        Ok(self.store("BPCUSTOMER", code, rec))
    }

    fn create_item(&mut self, rec: X3Record) -> SimResult<X3Record> {
        let code = rec.text("ITMREF").trim().to_owned();
        if code.is_empty() {
            return Err(business("ITMREF : Mandatory field"));
        }
        if self.exists("ITMMASTER", &code) {
            return Err(business(format!(
                "ITMREF : Product {code} : Record already exists"
            )));
        }
        Ok(self.store("ITMMASTER", code, rec))
    }

    /// Checks an order's header and lines; fills `CUR`, `ITMDES`, `ORDNOT`.
    fn check_order(&self, rec: &mut X3Record) -> SimResult<()> {
        let customer = rec.text("BPCORD").to_owned();
        let Some(bpc) = self.get("BPCUSTOMER", &customer) else {
            return Err(business(format!(
                "BPCORD : Customer {customer} does not exist"
            )));
        };
        let bpc_cur = bpc.rec.text("CUR").to_owned();
        self.check_site("SALFCY", rec.text("SALFCY"))?;
        self.check_site("STOFCY", rec.text("STOFCY"))?;
        if rec.text("CUR").is_empty() {
            rec.set("CUR", bpc_cur);
        }
        let cur = rec.text("CUR").to_owned();
        self.check_currency(&cur)?;
        if NaiveDate::parse_from_str(rec.text("ORDDAT"), DATE_FORMAT).is_err() {
            return Err(business(format!(
                "ORDDAT : Invalid date {:?}",
                rec.text("ORDDAT")
            )));
        }
        if rec.text("SOHTYP").is_empty() {
            rec.set("SOHTYP", "SON");
        }
        let lines = rec.tables.get(ORDER_LINES).cloned().unwrap_or_default();
        if lines.is_empty() {
            return Err(business("SOH4_1 : The order has no lines"));
        }
        let mut total = Decimal::ZERO;
        let mut filled = Vec::with_capacity(lines.len());
        for (i, mut line) in lines.into_iter().enumerate() {
            let g = |k: &str| line.get(k).cloned().unwrap_or_default();
            let item = g("ITMREF");
            let Some(itm) = self.get("ITMMASTER", &item) else {
                return Err(business(format!(
                    "ITMREF : Line {} : Product {item} does not exist",
                    i + 1
                )));
            };
            let qty = decimal(&g("QTY"), "QTY")?;
            if qty <= Decimal::ZERO {
                return Err(business(format!(
                    "QTY : Line {} : The quantity must be greater than 0",
                    i + 1
                )));
            }
            let price = decimal(&g("GROPRI"), "GROPRI")?;
            total = checked(
                qty.checked_mul(price)
                    .and_then(|a| total.checked_add(round_to(a, &cur))),
                "GROPRI",
            )?;
            line.insert("ITMDES".into(), itm.rec.text("ITMDES1").to_owned());
            filled.push(line);
        }
        rec.tables.insert(ORDER_LINES.into(), filled);
        rec.set("ORDNOT", round_to(total, &cur).to_string());
        Ok(())
    }

    fn create_order(&mut self, mut rec: X3Record) -> SimResult<X3Record> {
        self.check_order(&mut rec)?;
        let mut num = rec.text("SOHNUM").trim().to_owned();
        if num.is_empty() {
            let site = rec.text("SALFCY").to_owned();
            num = format!("SO{site}{:06}", self.next("SORDER"));
        } else if self.exists("SORDER", &num) {
            return Err(business(format!(
                "SOHNUM : Order {num} : Record already exists"
            )));
        }
        rec.set("SOHNUM", num.clone());
        rec.set("INVSTA", "1");
        Ok(self.store("SORDER", num, rec))
    }

    fn create_payment(&mut self, mut rec: X3Record) -> SimResult<X3Record> {
        let customer = rec.text("BPR").to_owned();
        if !self.exists("BPCUSTOMER", &customer) {
            return Err(business(format!(
                "BPR : Customer {customer} does not exist"
            )));
        }
        let cur = rec.text("CUR").to_owned();
        self.check_currency(&cur)?;
        self.check_site("FCY", rec.text("FCY"))?;
        if NaiveDate::parse_from_str(rec.text("ACCDAT"), DATE_FORMAT).is_err() {
            return Err(business(format!(
                "ACCDAT : Invalid date {:?}",
                rec.text("ACCDAT")
            )));
        }
        let amount = decimal(rec.text("AMTCUR"), "AMTCUR")?;
        if amount <= Decimal::ZERO {
            return Err(business("AMTCUR : The amount must be greater than 0"));
        }
        // Check every allocation before applying any.
        let mut applied = Vec::new();
        let mut allocated = Decimal::ZERO;
        for line in rec.lines(PAYMENT_LINES) {
            let inv = line.get("VCRNUM").cloned().unwrap_or_default();
            let amt = decimal(line.get("AMTLIN").map_or("", String::as_str), "AMTLIN")?;
            let Some(stored) = self.get("SINVOICE", &inv) else {
                return Err(business(format!("VCRNUM : Invoice {inv} does not exist")));
            };
            let r = &stored.rec;
            if r.text("BPCINV") != customer {
                return Err(business(format!(
                    "VCRNUM : Invoice {inv} belongs to customer {}",
                    r.text("BPCINV")
                )));
            }
            if r.text("CUR") != cur {
                return Err(business(format!(
                    "CUR : Invoice {inv} is in {}, the payment in {cur}",
                    r.text("CUR")
                )));
            }
            let open = checked(
                decimal(r.text("AMTATI"), "AMTATI")?
                    .checked_sub(decimal(r.text("PAYCUR"), "PAYCUR")?),
                "PAYCUR",
            )?;
            if amt <= Decimal::ZERO || amt > open {
                return Err(business(format!(
                    "AMTLIN : Amount {amt} is not between 0 and the open amount {open} of invoice {inv}"
                )));
            }
            allocated = checked(allocated.checked_add(amt), "AMTLIN")?;
            applied.push((inv, amt));
        }
        if allocated > amount {
            return Err(business(format!(
                "AMTCUR : Allocated {allocated} exceeds the payment amount {amount}"
            )));
        }
        for (inv, amt) in applied {
            if let Some(stored) = self
                .records
                .get_mut("SINVOICE")
                .and_then(|t| t.get_mut(&inv))
            {
                let paid = checked(
                    decimal(stored.rec.text("PAYCUR"), "PAYCUR")?.checked_add(amt),
                    "PAYCUR",
                )?;
                stored.rec.set("PAYCUR", round_to(paid, &cur).to_string());
                stored.etag = now_etag();
            }
        }
        let num = format!("PAY{:06}", self.next("PAYMENTH"));
        rec.set("NUM", num.clone());
        if rec.text("PAYTYP").is_empty() {
            rec.set("PAYTYP", "REC");
        }
        Ok(self.store("PAYMENTH", num, rec))
    }

    /// `$edit` / `modify`: partial update.
    pub fn update(
        &mut self,
        schema: &'static ClassSchema,
        key: &str,
        mut changes: X3Record,
    ) -> SimResult<X3Record> {
        self.check_fields(schema, &mut changes)?;
        if !matches!(schema.class, "BPCUSTOMER" | "SORDER" | "ITMMASTER") {
            return Err(business(format!(
                "{} : Modification is not available through this web service",
                schema.class
            )));
        }
        let Some(stored) = self.get(schema.class, key) else {
            return Err(SimError::NotFound(format!(
                "{} {key} : Record does not exist",
                schema.class
            )));
        };
        if let Some(k) = changes.get(schema.key)
            && k != key
        {
            return Err(business(format!(
                "{} : The key cannot be modified",
                schema.key
            )));
        }
        let mut rec = stored.rec.clone();
        rec.merge(&changes);
        match schema.class {
            "BPCUSTOMER" => {
                if rec.text("BPRNAM").trim().is_empty() {
                    return Err(business("BPRNAM : Mandatory field"));
                }
                self.check_currency(rec.text("CUR"))?;
            }
            "SORDER" => {
                if rec.text("INVSTA") == "3" {
                    return Err(business(format!("SOHNUM : Order {key} is invoiced")));
                }
                self.check_order(&mut rec)?;
            }
            _ => {}
        }
        let table = self.records.entry(schema.class).or_default();
        if let Some(s) = table.get_mut(key) {
            s.rec = rec.clone();
            s.etag = now_etag();
        }
        Ok(rec)
    }

    /// Rows matching `filter`, sorted by `order` then key, after the sort tuple `after`;
    /// header fields only. Answers the rows and whether more follow.
    pub fn query(
        &self,
        schema: &ClassSchema,
        filter: Option<&Expr>,
        order: &[(String, bool)],
        after: Option<&[String]>,
        count: usize,
    ) -> SimResult<(Vec<Row<'_>>, bool)> {
        for f in filter
            .map(Expr::fields)
            .unwrap_or_default()
            .into_iter()
            .chain(order.iter().map(|(f, _)| f.as_str()))
        {
            if !self.has_property(schema, f) {
                return Err(SimError::UnknownProperty(format!(
                    "Property '{f}' does not exist in class {}",
                    schema.class
                )));
            }
        }
        let mut dirs: Vec<bool> = order.iter().map(|(_, asc)| *asc).collect();
        dirs.push(true);
        let mut rows: Vec<Row<'_>> = self
            .table(schema.class)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|s| filter.is_none_or(|f| f.matches(&s.rec)))
            .map(|s| {
                let mut tuple: Vec<String> = order
                    .iter()
                    .map(|(f, _)| s.rec.text(f).to_owned())
                    .collect();
                tuple.push(s.rec.text(schema.key).to_owned());
                (s, tuple)
            })
            .collect();
        rows.sort_by(|a, b| compare_tuples(&a.1, &b.1, &dirs));
        if let Some(after) = after {
            rows.retain(|(_, t)| compare_tuples(t, after, &dirs) == Ordering::Greater);
        }
        let more = rows.len() > count;
        rows.truncate(count);
        Ok((rows, more))
    }

    /// Invoices an order (simulator control): a SINVOICE for all its lines.
    pub fn invoice_order(&mut self, sohnum: &str) -> SimResult<X3Record> {
        let Some(order) = self.get("SORDER", sohnum).map(|s| s.rec.clone()) else {
            return Err(SimError::NotFound(format!(
                "SORDER {sohnum} : Record does not exist"
            )));
        };
        if order.text("INVSTA") == "3" {
            return Err(business(format!(
                "SOHNUM : Order {sohnum} is already invoiced"
            )));
        }
        let cur = order.text("CUR").to_owned();
        let mut net = Decimal::ZERO;
        let mut lines = Vec::new();
        for l in order.lines(ORDER_LINES) {
            let g = |k: &str| l.get(k).cloned().unwrap_or_default();
            let amount = round_to(
                checked(
                    decimal(&g("QTY"), "QTY")?.checked_mul(decimal(&g("GROPRI"), "GROPRI")?),
                    "GROPRI",
                )?,
                &cur,
            );
            net = checked(net.checked_add(amount), "AMTNOT")?;
            lines.push(line_of(&[
                ("ITMREF", g("ITMREF")),
                ("QTY", g("QTY")),
                ("GROPRI", g("GROPRI")),
                ("AMTNOTLIN", amount.to_string()),
            ]));
        }
        let tax = round_to(checked(net.checked_mul(self.tax_rate), "AMTATI")?, &cur);
        let gross = checked(net.checked_add(tax), "AMTATI")?;
        let site = order.text("SALFCY").to_owned();
        let num = format!("INV{site}{:06}", self.next("SINVOICE"));
        let mut inv = X3Record::new()
            .with("NUM", num.clone())
            .with("SIVTYP", "INV")
            .with("INVTYP", "1")
            .with("SALFCY", site)
            .with("BPCINV", order.text("BPCORD"))
            .with("BPCORD", order.text("BPCORD"))
            .with(
                "INVDAT",
                Utc::now().date_naive().format(DATE_FORMAT).to_string(),
            )
            .with("CUR", cur.clone())
            .with("SOHNUM", sohnum)
            .with("AMTNOT", round_to(net, &cur).to_string())
            .with("AMTATI", round_to(gross, &cur).to_string())
            .with("PAYCUR", round_to(Decimal::ZERO, &cur).to_string());
        inv.tables.insert("SIH4_1".into(), lines);
        if let Some(s) = self
            .records
            .get_mut("SORDER")
            .and_then(|t| t.get_mut(sohnum))
        {
            s.rec.set("INVSTA", "3");
            s.etag = now_etag();
        }
        Ok(self.store("SINVOICE", num, inv))
    }

    /// Credits part of an invoice (simulator control: a person enters a credit note against
    /// it): a SINVOICE of category 2 (`INVTYP`), `SIVTYP` `CRN`, for `net` before tax (tax at
    /// the folder's rate), on the invoice's order, with positive amounts as X3 keeps them.
    /// Refused above what the invoice and its earlier credit notes leave.
    pub fn credit_invoice(&mut self, invoice: &str, net: Decimal) -> SimResult<X3Record> {
        let Some(inv) = self.get("SINVOICE", invoice).map(|s| s.rec.clone()) else {
            return Err(SimError::NotFound(format!(
                "SINVOICE {invoice} : Record does not exist"
            )));
        };
        if matches!(inv.text("INVTYP"), "2" | "4") {
            return Err(business(format!("NUM : {invoice} is a credit note")));
        }
        let cur = inv.text("CUR").to_owned();
        let net = round_to(net, &cur);
        let invoiced = decimal(inv.text("AMTNOT"), "AMTNOT")?;
        let mut credited = Decimal::ZERO;
        for c in self.all("SINVOICE") {
            if c.text("SIHORINUM") == invoice {
                credited = checked(
                    credited.checked_add(decimal(c.text("AMTNOT"), "AMTNOT")?),
                    "AMTNOT",
                )?;
            }
        }
        if net <= Decimal::ZERO || net > invoiced - credited {
            return Err(business(format!(
                "AMTNOT : {net} is not between 0 and the {} left to credit on {invoice}",
                invoiced - credited
            )));
        }
        let tax = round_to(checked(net.checked_mul(self.tax_rate), "AMTATI")?, &cur);
        let gross = checked(net.checked_add(tax), "AMTATI")?;
        let site = inv.text("SALFCY").to_owned();
        let num = format!("CRN{site}{:06}", self.next("SINVOICE"));
        let crn = X3Record::new()
            .with("NUM", num.clone())
            .with("SIVTYP", "CRN")
            .with("INVTYP", "2")
            .with("SALFCY", site)
            .with("BPCINV", inv.text("BPCINV"))
            .with("BPCORD", inv.text("BPCORD"))
            .with(
                "INVDAT",
                Utc::now().date_naive().format(DATE_FORMAT).to_string(),
            )
            .with("CUR", cur.clone())
            .with("SOHNUM", inv.text("SOHNUM"))
            .with("SIHORINUM", invoice)
            .with("AMTNOT", net.to_string())
            .with("AMTATI", round_to(gross, &cur).to_string())
            .with("PAYCUR", round_to(Decimal::ZERO, &cur).to_string());
        Ok(self.store("SINVOICE", num, crn))
    }

    /// Adds a STOCK line (seeding); answers its `STOCKID`.
    pub fn add_stock(&mut self, site: &str, item: &str, status: &str, qty: Decimal) -> String {
        let id = format!("{:08}", self.next("STOCK"));
        let rec = X3Record::new()
            .with("STOCKID", id.clone())
            .with("STOFCY", site)
            .with("ITMREF", item)
            .with("LOT", "")
            .with("LOC", "A01")
            .with("STA", status)
            .with("QTYSTU", qty.to_string())
            .with("STU", "UN");
        self.store("STOCK", id.clone(), rec);
        id
    }

    /// Available (`STA` = `A`) stock of an item at a site.
    pub fn available(&self, item: &str, site: &str) -> Decimal {
        self.table("STOCK")
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|s| {
                s.rec.text("ITMREF") == item
                    && s.rec.text("STOFCY") == site
                    && s.rec.text("STA") == "A"
            })
            .filter_map(|s| s.rec.text("QTYSTU").parse::<Decimal>().ok())
            .sum()
    }

    /// All records of a class, in key order.
    pub fn all(&self, class: &str) -> Vec<X3Record> {
        self.table(class)
            .map(|t| t.values().map(|s| s.rec.clone()).collect())
            .unwrap_or_default()
    }
}

fn compare_tuples(a: &[String], b: &[String], ascending: &[bool]) -> Ordering {
    for ((x, y), asc) in a.iter().zip(b).zip(ascending) {
        let o = compare_values(x, y);
        let o = if *asc { o } else { o.reverse() };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// The schema of a class the simulator serves.
pub fn schema_of(class: &str) -> Option<&'static ClassSchema> {
    schema::schema(class)
}
