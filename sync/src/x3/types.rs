//! Typed X3 records: customers (BPCUSTOMER), sales orders (SORDER), sales invoices
//! (SINVOICE), items (ITMMASTER), stock lines (STOCK) and payments (PAYMENTH), each with
//! its conversion from / to an [`X3Record`].
//!
//! Money: X3 sends decimal strings (`"1234.50"`); our types hold integer minor units of the
//! record's currency, parsed with `rust_decimal` and rounded half away from zero (X3's
//! `ar2` rounding for amounts). Quantities stay `Decimal`. No floating point anywhere.

use chrono::NaiveDate;
use ledger::Currency;
use rust_decimal::{Decimal, RoundingStrategy};

use super::error::X3Error;
use super::record::{Line, X3Record};

/// X3's date format in records (`ORDDAT`, `INVDAT`, `ACCDAT`).
pub const DATE_FORMAT: &str = "%Y%m%d";

/// The address table of BPCUSTOMER.
pub const ADDRESS_TABLE: &str = "BPAC_1";
/// The line table of SORDER.
pub const ORDER_LINES: &str = "SOH4_1";
/// The line table of PAYMENTH (documents paid).
pub const PAYMENT_LINES: &str = "PAYD_1";

fn bad(field: &str, detail: impl std::fmt::Display) -> X3Error {
    X3Error::MalformedResponse {
        status: 200,
        detail: format!("{field}: {detail}"),
    }
}

fn currency(code: &str) -> Result<Currency, X3Error> {
    Currency::parse(code.trim()).map_err(|e| bad("CUR", e))
}

/// An X3 decimal string in `currency` → minor units, rounded half away from zero.
pub fn parse_minor(text: &str, currency_code: &str, field: &str) -> Result<i64, X3Error> {
    let cur = currency(currency_code)?;
    let t = text.trim();
    let amount: Decimal = if t.is_empty() {
        Decimal::ZERO
    } else {
        t.parse().map_err(|e| bad(field, format!("{t:?}: {e}")))?
    };
    let scaled = amount
        .checked_mul(Decimal::from(10i64.pow(cur.exponent())))
        .ok_or_else(|| bad(field, "amount out of range"))?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(scaled.mantissa())
        .ok()
        .filter(|_| scaled.scale() == 0)
        .ok_or_else(|| bad(field, format!("amount {amount} out of range")))
}

/// Minor units → X3 decimal string with the currency's decimals (`1050`, EUR → `"10.50"`).
pub fn format_minor(minor: i64, currency_code: &str) -> Result<String, X3Error> {
    let cur = Currency::parse(currency_code.trim())
        .map_err(|e| X3Error::Invalid(format!("currency {currency_code:?}: {e}")))?;
    Ok(Decimal::new(minor, cur.exponent()).to_string())
}

fn parse_decimal(text: &str, field: &str) -> Result<Decimal, X3Error> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Decimal::ZERO);
    }
    t.parse().map_err(|e| bad(field, format!("{t:?}: {e}")))
}

fn parse_date(text: &str, field: &str) -> Result<Option<NaiveDate>, X3Error> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    // X3 writes YYYYMMDD in objectXml; REST representations may use ISO dates.
    NaiveDate::parse_from_str(t, DATE_FORMAT)
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
        .map(Some)
        .map_err(|e| bad(field, format!("{t:?}: {e}")))
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn line(pairs: &[(&str, String)]) -> Line {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A customer's main address (first line of `BPAC_1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    /// `CODADR` (address code, `MAIN` when we create it).
    pub code: String,
    /// `ADDLIG1..3`.
    pub lines: Vec<String>,
    pub postal_code: String,
    pub city: String,
    /// `BPACRY`.
    pub country: String,
}

/// BPCUSTOMER.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Customer {
    /// `BPCNUM`; empty on create: X3 numbers it.
    pub code: String,
    /// `BPRNAM(0)`.
    pub name: String,
    /// `BPRNAM(1)`.
    pub name2: Option<String>,
    /// `BCGCOD` (customer category).
    pub category: Option<String>,
    /// `CRY`.
    pub country: String,
    /// `CUR`.
    pub currency: String,
    pub address: Option<Address>,
    /// The Salesforce Account id, in the configured custom field (`YSFID`).
    pub sf_id: Option<String>,
}

impl Customer {
    /// The record to send; `sf_id_field` is the installation's custom field name.
    pub fn to_record(&self, sf_id_field: &str) -> X3Record {
        let mut names = vec![self.name.clone()];
        if let Some(n2) = &self.name2 {
            names.push(n2.clone());
        }
        let mut rec = X3Record::new()
            .with_list("BPRNAM", names)
            .with("CRY", self.country.clone())
            .with("CUR", self.currency.clone());
        if !self.code.is_empty() {
            rec.set("BPCNUM", self.code.clone());
        }
        if let Some(c) = &self.category {
            rec.set("BCGCOD", c.clone());
        }
        if let Some(id) = &self.sf_id {
            rec.set(sf_id_field, id.clone());
        }
        if let Some(a) = &self.address {
            let mut pairs = vec![
                (
                    "CODADR",
                    if a.code.is_empty() {
                        "MAIN".to_owned()
                    } else {
                        a.code.clone()
                    },
                ),
                ("POSCOD", a.postal_code.clone()),
                ("CTY", a.city.clone()),
                ("BPACRY", a.country.clone()),
            ];
            for (i, l) in a.lines.iter().take(3).enumerate() {
                pairs.push((["ADDLIG1", "ADDLIG2", "ADDLIG3"][i], l.clone()));
            }
            rec = rec.with_line(ADDRESS_TABLE, line(&pairs));
        }
        rec
    }

    pub fn from_record(rec: &X3Record, sf_id_field: &str) -> Result<Customer, X3Error> {
        let names = rec.list("BPRNAM");
        let name = names
            .first()
            .cloned()
            .or_else(|| rec.get("BPRNAM").map(str::to_owned))
            .unwrap_or_default();
        let address = rec.lines(ADDRESS_TABLE).first().map(|l| {
            let g = |k: &str| l.get(k).cloned().unwrap_or_default();
            Address {
                code: g("CODADR"),
                lines: ["ADDLIG1", "ADDLIG2", "ADDLIG3"]
                    .iter()
                    .map(|k| g(k))
                    .filter(|s| !s.is_empty())
                    .collect(),
                postal_code: g("POSCOD"),
                city: g("CTY"),
                country: g("BPACRY"),
            }
        });
        let code = rec.text("BPCNUM").to_owned();
        if code.is_empty() {
            return Err(bad("BPCNUM", "missing"));
        }
        Ok(Customer {
            code,
            name,
            name2: names.get(1).and_then(|s| opt(s)),
            category: opt(rec.text("BCGCOD")),
            country: rec.text("CRY").to_owned(),
            currency: rec.text("CUR").to_owned(),
            address,
            sf_id: opt(rec.text(sf_id_field)),
        })
    }
}

/// One SORDER line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// `ITMREF`.
    pub item: String,
    /// `QTY` (sales unit).
    pub quantity: Decimal,
    /// `GROPRI`, gross unit price in the order currency's minor units.
    pub gross_price_minor: i64,
}

/// SORDER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalesOrder {
    /// `SOHNUM`; empty on create: X3 numbers it.
    pub number: String,
    /// `SALFCY`.
    pub sales_site: String,
    /// `SOHTYP` (`SON` normal order).
    pub order_type: String,
    /// `BPCORD`.
    pub customer: String,
    /// `CUSORDREF` (the customer's PO or the Salesforce id).
    pub customer_ref: String,
    /// `ORDDAT`.
    pub order_date: NaiveDate,
    /// `STOFCY`.
    pub shipping_site: String,
    /// `CUR`.
    pub currency: String,
    pub lines: Vec<OrderLine>,
    /// `ORDNOT`, total excluding tax (read only: X3 computes it).
    pub total_excl_tax_minor: Option<i64>,
}

impl SalesOrder {
    pub fn to_record(&self) -> Result<X3Record, X3Error> {
        let mut rec = X3Record::new()
            .with("SALFCY", self.sales_site.clone())
            .with("SOHTYP", self.order_type.clone())
            .with("BPCORD", self.customer.clone())
            .with("CUSORDREF", self.customer_ref.clone())
            .with("ORDDAT", self.order_date.format(DATE_FORMAT).to_string())
            .with("STOFCY", self.shipping_site.clone())
            .with("CUR", self.currency.clone());
        if !self.number.is_empty() {
            rec.set("SOHNUM", self.number.clone());
        }
        for l in &self.lines {
            rec = rec.with_line(
                ORDER_LINES,
                line(&[
                    ("ITMREF", l.item.clone()),
                    ("QTY", l.quantity.normalize().to_string()),
                    ("GROPRI", format_minor(l.gross_price_minor, &self.currency)?),
                ]),
            );
        }
        Ok(rec)
    }

    pub fn from_record(rec: &X3Record) -> Result<SalesOrder, X3Error> {
        let currency = rec.text("CUR").to_owned();
        let lines = rec
            .lines(ORDER_LINES)
            .iter()
            .map(|l| {
                let g = |k: &str| l.get(k).map_or("", String::as_str);
                Ok(OrderLine {
                    item: g("ITMREF").to_owned(),
                    quantity: parse_decimal(g("QTY"), "QTY")?,
                    gross_price_minor: parse_minor(g("GROPRI"), &currency, "GROPRI")?,
                })
            })
            .collect::<Result<Vec<_>, X3Error>>()?;
        let total = match rec.get("ORDNOT") {
            Some(t) if !t.trim().is_empty() => Some(parse_minor(t, &currency, "ORDNOT")?),
            _ => None,
        };
        Ok(SalesOrder {
            number: rec.text("SOHNUM").to_owned(),
            sales_site: rec.text("SALFCY").to_owned(),
            order_type: rec.text("SOHTYP").to_owned(),
            customer: rec.text("BPCORD").to_owned(),
            customer_ref: rec.text("CUSORDREF").to_owned(),
            order_date: parse_date(rec.text("ORDDAT"), "ORDDAT")?
                .ok_or_else(|| bad("ORDDAT", "missing"))?,
            shipping_site: rec.text("STOFCY").to_owned(),
            currency,
            lines,
            total_excl_tax_minor: total,
        })
    }
}

/// Where an invoice stands, from its open amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceStatus {
    Open,
    PartlyPaid,
    Paid,
}

/// SINVOICE (with the open-item amount paid, `PAYCUR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalesInvoice {
    /// `NUM`.
    pub number: String,
    /// `BPCINV` (bill-to customer).
    pub customer: String,
    /// `SALFCY`.
    pub sales_site: String,
    /// `INVDAT`.
    pub date: Option<NaiveDate>,
    /// `CUR`.
    pub currency: String,
    /// `AMTNOT`.
    pub amount_excl_tax_minor: i64,
    /// `AMTATI`.
    pub amount_incl_tax_minor: i64,
    /// `PAYCUR`: paid so far.
    pub paid_minor: i64,
    /// `AMTATI − PAYCUR`.
    pub open_minor: i64,
    pub status: InvoiceStatus,
    /// `SOHNUM`: the sales order it came from.
    pub origin_order: Option<String>,
    /// `INVTYP` 2 or 4 (X3's invoice category, local menu 645: credit note, credit memo on
    /// invoice): the amounts are positive and reduce what the customer owes; the open amount
    /// is the credit not yet matched against an invoice.
    pub credit_note: bool,
}

impl SalesInvoice {
    pub fn from_record(rec: &X3Record) -> Result<SalesInvoice, X3Error> {
        let cur = rec.text("CUR").to_owned();
        let excl = parse_minor(rec.text("AMTNOT"), &cur, "AMTNOT")?;
        let incl = parse_minor(rec.text("AMTATI"), &cur, "AMTATI")?;
        let paid = parse_minor(rec.text("PAYCUR"), &cur, "PAYCUR")?;
        let open = incl
            .checked_sub(paid)
            .ok_or_else(|| bad("PAYCUR", "out of range"))?;
        let status = if paid == 0 && open != 0 {
            InvoiceStatus::Open
        } else if open == 0 {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::PartlyPaid
        };
        Ok(SalesInvoice {
            number: rec.text("NUM").to_owned(),
            customer: rec.text("BPCINV").to_owned(),
            sales_site: rec.text("SALFCY").to_owned(),
            date: parse_date(rec.text("INVDAT"), "INVDAT")?,
            currency: cur,
            amount_excl_tax_minor: excl,
            amount_incl_tax_minor: incl,
            paid_minor: paid,
            open_minor: open,
            status,
            origin_order: opt(rec.text("SOHNUM")),
            credit_note: matches!(rec.text("INVTYP"), "2" | "4"),
        })
    }

    /// What this document adds to the customer's balance: the open amount of an invoice, or
    /// minus the unmatched credit of a credit note.
    pub fn signed_open_minor(&self) -> i64 {
        if self.credit_note {
            -self.open_minor
        } else {
            self.open_minor
        }
    }
}

/// ITMMASTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// `ITMREF`.
    pub code: String,
    /// `ITMDES1`.
    pub description: String,
    /// `TCLCOD`.
    pub category: Option<String>,
    /// `STU`.
    pub stock_unit: Option<String>,
}

impl Item {
    pub fn to_record(&self) -> X3Record {
        let mut rec = X3Record::new()
            .with("ITMREF", self.code.clone())
            .with("ITMDES1", self.description.clone());
        if let Some(c) = &self.category {
            rec.set("TCLCOD", c.clone());
        }
        if let Some(u) = &self.stock_unit {
            rec.set("STU", u.clone());
        }
        rec
    }

    pub fn from_record(rec: &X3Record) -> Item {
        Item {
            code: rec.text("ITMREF").to_owned(),
            description: rec.text("ITMDES1").to_owned(),
            category: opt(rec.text("TCLCOD")),
            stock_unit: opt(rec.text("STU")),
        }
    }
}

/// One STOCK line (read only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockLine {
    /// `STOCKID`.
    pub id: String,
    /// `STOFCY`.
    pub site: String,
    /// `ITMREF`.
    pub item: String,
    pub lot: Option<String>,
    pub location: Option<String>,
    /// `STA` (`A` available, `Q` quality control, `R` rejected).
    pub status: String,
    /// `QTYSTU`.
    pub quantity: Decimal,
}

impl StockLine {
    pub fn from_record(rec: &X3Record) -> Result<StockLine, X3Error> {
        Ok(StockLine {
            id: rec.text("STOCKID").to_owned(),
            site: rec.text("STOFCY").to_owned(),
            item: rec.text("ITMREF").to_owned(),
            lot: opt(rec.text("LOT")),
            location: opt(rec.text("LOC")),
            status: rec.text("STA").to_owned(),
            quantity: parse_decimal(rec.text("QTYSTU"), "QTYSTU")?,
        })
    }
}

/// One document a payment settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentAllocation {
    /// `VCRNUM`: the invoice number.
    pub invoice: String,
    /// `AMTLIN`.
    pub amount_minor: i64,
}

/// PAYMENTH (customer receipt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// `NUM`; empty on create: X3 numbers it.
    pub number: String,
    /// `PAYTYP` (payment transaction type).
    pub payment_type: String,
    /// `BPR`: the customer.
    pub customer: String,
    /// `FCY`: the site.
    pub site: String,
    /// `ACCDAT`.
    pub date: NaiveDate,
    /// `CUR`.
    pub currency: String,
    /// `AMTCUR`.
    pub amount_minor: i64,
    /// `BAN`: bank account code.
    pub bank: String,
    /// `REF`: our reference (gateway payment id).
    pub reference: String,
    pub allocations: Vec<PaymentAllocation>,
}

impl Payment {
    pub fn to_record(&self) -> Result<X3Record, X3Error> {
        let mut rec = X3Record::new()
            .with("PAYTYP", self.payment_type.clone())
            .with("BPR", self.customer.clone())
            .with("FCY", self.site.clone())
            .with("ACCDAT", self.date.format(DATE_FORMAT).to_string())
            .with("CUR", self.currency.clone())
            .with("AMTCUR", format_minor(self.amount_minor, &self.currency)?)
            .with("BAN", self.bank.clone())
            .with("REF", self.reference.clone());
        if !self.number.is_empty() {
            rec.set("NUM", self.number.clone());
        }
        for a in &self.allocations {
            rec = rec.with_line(
                PAYMENT_LINES,
                line(&[
                    ("VCRNUM", a.invoice.clone()),
                    ("AMTLIN", format_minor(a.amount_minor, &self.currency)?),
                ]),
            );
        }
        Ok(rec)
    }

    pub fn from_record(rec: &X3Record) -> Result<Payment, X3Error> {
        let cur = rec.text("CUR").to_owned();
        let allocations = rec
            .lines(PAYMENT_LINES)
            .iter()
            .map(|l| {
                Ok(PaymentAllocation {
                    invoice: l.get("VCRNUM").cloned().unwrap_or_default(),
                    amount_minor: parse_minor(
                        l.get("AMTLIN").map_or("", String::as_str),
                        &cur,
                        "AMTLIN",
                    )?,
                })
            })
            .collect::<Result<Vec<_>, X3Error>>()?;
        Ok(Payment {
            number: rec.text("NUM").to_owned(),
            payment_type: rec.text("PAYTYP").to_owned(),
            customer: rec.text("BPR").to_owned(),
            site: rec.text("FCY").to_owned(),
            date: parse_date(rec.text("ACCDAT"), "ACCDAT")?
                .ok_or_else(|| bad("ACCDAT", "missing"))?,
            amount_minor: parse_minor(rec.text("AMTCUR"), &cur, "AMTCUR")?,
            currency: cur,
            bank: rec.text("BAN").to_owned(),
            reference: rec.text("REF").to_owned(),
            allocations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_minor(text: &str, cur: &str, expected: i64) {
        assert_eq!(
            parse_minor(text, cur, "AMT").unwrap(),
            expected,
            "{text} {cur}"
        );
    }

    #[test]
    fn amounts_to_minor_units() {
        check_minor("1234.50", "EUR", 123_450);
        check_minor("1234.5", "USD", 123_450);
        check_minor("0.005", "EUR", 1); // half away from zero
        check_minor("-0.005", "EUR", -1);
        check_minor("0.0049", "EUR", 0);
        check_minor("1500", "JPY", 1_500);
        check_minor("1.2345", "BHD", 1_235);
        check_minor("", "EUR", 0);
        assert!(parse_minor("12,50", "EUR", "AMT").is_err());
        assert!(parse_minor("1", "XXZ", "AMT").is_err());
        assert!(parse_minor("99999999999999999999999", "EUR", "AMT").is_err());
        assert_eq!(format_minor(1_050, "EUR").unwrap(), "10.50");
        assert_eq!(format_minor(-7, "USD").unwrap(), "-0.07");
        assert_eq!(format_minor(1_500, "JPY").unwrap(), "1500");
    }

    #[test]
    fn minor_units_round_trip_through_x3_text() {
        for cur in ["EUR", "JPY", "BHD"] {
            for minor in (-2_000i64..=2_000).chain([i64::MAX / 1_000, -(i64::MAX / 1_000)]) {
                let text = format_minor(minor, cur).unwrap();
                assert_eq!(
                    parse_minor(&text, cur, "AMT").unwrap(),
                    minor,
                    "{text} {cur}"
                );
            }
        }
    }

    #[test]
    fn order_round_trip() {
        let order = SalesOrder {
            number: String::new(),
            sales_site: "FR011".into(),
            order_type: "SON".into(),
            customer: "C00001".into(),
            customer_ref: "006Qz000001".into(),
            order_date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            shipping_site: "FR012".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                item: "BMS001".into(),
                quantity: Decimal::new(25, 1),
                gross_price_minor: 1_999,
            }],
            total_excl_tax_minor: None,
        };
        let rec = order.to_record().unwrap();
        assert_eq!(rec.get("ORDDAT"), Some("20261126"));
        assert_eq!(
            rec.lines(ORDER_LINES)[0].get("GROPRI").map(String::as_str),
            Some("19.99")
        );
        let mut back_rec = rec.clone();
        back_rec.set("SOHNUM", "SOFR011000001");
        let back = SalesOrder::from_record(&back_rec).unwrap();
        assert_eq!(back.lines, order.lines);
        assert_eq!(back.number, "SOFR011000001");
    }

    #[test]
    fn invoice_status_from_amounts() {
        let rec = |paid: &str| {
            X3Record::new()
                .with("NUM", "INV1")
                .with("CUR", "EUR")
                .with("AMTNOT", "100.00")
                .with("AMTATI", "120.00")
                .with("PAYCUR", paid)
        };
        let open = SalesInvoice::from_record(&rec("0")).unwrap();
        assert_eq!(
            (open.open_minor, open.status),
            (12_000, InvoiceStatus::Open)
        );
        let part = SalesInvoice::from_record(&rec("20.005")).unwrap();
        assert_eq!(
            (part.open_minor, part.status),
            (9_999, InvoiceStatus::PartlyPaid)
        );
        let paid = SalesInvoice::from_record(&rec("120")).unwrap();
        assert_eq!((paid.open_minor, paid.status), (0, InvoiceStatus::Paid));
    }
}
