//! Builders shared by the reconcile integration tests.
#![allow(dead_code)]

use chrono::NaiveDate;
use ledger::{Currency, FxRate, Money};
use reconcile::{
    BatchId, CustomerId, DatedRate, DepositId, DocumentNumber, EntityCode, Inputs, OpenItem,
    OpenItemId, OpenItemKind, Payment, PaymentId, PaymentSource, PositiveMoney, Reference,
    SettlementBatch,
};

pub fn cur(code: &str) -> Currency {
    Currency::parse(code).expect("currency")
}

pub fn day(d: &str) -> NaiveDate {
    NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("date")
}

pub fn money(amount: &str, code: &str) -> Money {
    Money::parse_decimal(amount, cur(code)).expect("amount")
}

fn pos(amount_minor: i64, code: &str) -> PositiveMoney {
    PositiveMoney::new(Money::from_minor(amount_minor, cur(code))).expect("positive")
}

/// A payment from a compact spec; `amount_minor` in the currency's minor units.
pub fn pay(
    id: &str,
    customer: &str,
    amount_minor: i64,
    code: &str,
    date: &str,
    reference: &str,
) -> Payment {
    Payment {
        id: PaymentId::parse(id).expect("id"),
        entity: EntityCode::parse("E1").expect("entity"),
        customer: CustomerId::parse(customer).expect("customer"),
        amount: pos(amount_minor, code),
        date: day(date),
        reference: Reference::parse(reference).expect("reference"),
        source: PaymentSource::SageReceipt,
        batch: None,
    }
}

pub fn with_source(mut p: Payment, source: PaymentSource, batch: Option<&str>) -> Payment {
    p.source = source;
    p.batch = batch.map(|b| BatchId::parse(b).expect("batch"));
    p
}

/// An invoice; its id is its number with an "ID-" prefix.
pub fn inv(number: &str, customer: &str, amount_minor: i64, code: &str, date: &str) -> OpenItem {
    OpenItem {
        id: OpenItemId::parse(&format!("ID-{number}")).expect("id"),
        number: DocumentNumber::parse(number).expect("number"),
        kind: OpenItemKind::Invoice,
        entity: EntityCode::parse("E1").expect("entity"),
        customer: CustomerId::parse(customer).expect("customer"),
        open: pos(amount_minor, code),
        date: day(date),
        due_date: day(date) + chrono::Days::new(30),
    }
}

pub fn credit_memo(
    number: &str,
    customer: &str,
    amount_minor: i64,
    code: &str,
    date: &str,
) -> OpenItem {
    OpenItem {
        kind: OpenItemKind::CreditMemo,
        ..inv(number, customer, amount_minor, code, date)
    }
}

pub fn rate(from: &str, to: &str, date: &str, r: &str) -> DatedRate {
    DatedRate {
        date: day(date),
        rate: FxRate::parse(cur(from), cur(to), r).expect("rate"),
    }
}

pub fn settlement(
    deposit: &str,
    batch: &str,
    date: &str,
    gross: i64,
    fees: i64,
    code: &str,
) -> SettlementBatch {
    let c = cur(code);
    SettlementBatch::new(
        DepositId::parse(deposit).expect("deposit"),
        BatchId::parse(batch).expect("batch"),
        day(date),
        Money::from_minor(gross, c),
        Money::from_minor(fees, c),
        Money::from_minor(gross - fees, c),
    )
    .expect("settlement")
}

pub fn inputs(payments: Vec<Payment>, open_items: Vec<OpenItem>) -> Inputs {
    Inputs {
        payments,
        open_items,
        settlements: Vec::new(),
        rates: Vec::new(),
    }
}
