//! CSV import: good files parse; bad files yield a report of every bad line with its line
//! number and column, and nothing else.

use reconcile::import::{read_open_items, read_payments, read_rates, read_settlements};
use reconcile::{ImportError, InputFiles, InvalidInput, OpenItemKind, PaymentSource, read_inputs};

const PAYMENTS_HEADER: &str = "id,entity,customer,currency,amount,date,reference,source,batch_id\n";

fn invalid<T: std::fmt::Debug>(r: Result<T, ImportError>) -> InvalidInput {
    match r {
        Err(ImportError::Invalid(report)) => report,
        other => panic!("expected an invalid-input report, got {other:?}"),
    }
}

/// `(line, column)` of every error, in report order.
fn places(report: &InvalidInput) -> Vec<(u64, Option<&'static str>)> {
    report.errors.iter().map(|e| (e.line, e.column)).collect()
}

#[test]
fn payments_parse() {
    let csv = format!(
        "{PAYMENTS_HEADER}\
         P1,E1,C1,USD,100.50,2026-10-01,\"INV-1, INV-2\",gateway_capture,B7\n\
         P2,E1,C1,JPY,1500,2026-10-02,,sage_receipt,\n"
    );
    let rows = read_payments(csv.as_bytes()).expect("valid");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].amount.amount_minor(), 10_050);
    assert_eq!(rows[0].reference.as_str(), "INV-1, INV-2");
    assert_eq!(rows[0].source, PaymentSource::GatewayCapture);
    assert_eq!(rows[0].batch.as_ref().map(|b| b.as_str()), Some("B7"));
    assert_eq!(rows[1].amount.amount_minor(), 1_500);
    assert_eq!(rows[1].batch, None);
}

#[test]
fn columns_in_any_order_extra_ignored() {
    let csv = "note,amount,currency,id,customer,entity,date,source,reference,batch_id\n\
               x,1.00,EUR,P1,C1,E1,2026-10-01,ach_settlement,,\n";
    let rows = read_payments(csv.as_bytes()).expect("valid");
    assert_eq!(rows[0].amount.amount_minor(), 100);
}

#[test]
fn missing_columns_are_listed() {
    let csv = "id,entity,customer,amount,date,source\nP1,E1,C1,1.00,2026-10-01,sage_receipt\n";
    let r = invalid(read_payments(csv.as_bytes()));
    assert_eq!(
        places(&r),
        [
            (1, Some("currency")),
            (1, Some("reference")),
            (1, Some("batch_id"))
        ]
    );
    assert_eq!(r.errors[0].message, "missing column");
}

#[test]
fn every_bad_line_is_reported_with_its_column() {
    let csv = format!(
        "{PAYMENTS_HEADER}\
         P1,E1,C1,USD,10.00,2026-10-01,,sage_receipt,\n\
         P2,E1,C1,USD,10.001,2026-10-01,,sage_receipt,\n\
         P3,E1,C1,USD,ten,2026-13-01,,sage_receipt,\n\
         P4,E1,C1,XXX,1.00,2026-10-01,,sage_receipt,\n\
         P5,E1,C1,JPY,1.5,2026-10-01,,cash,\n\
         P6,E1,C1,USD,-1.00,2026-10-01,,sage_receipt,\n\
         P7,E1,C1\n\
         ,E1,C1,USD,1.00,10/01/2026,,sage_receipt,\n"
    );
    let r = invalid(read_payments(csv.as_bytes()));
    assert_eq!(
        places(&r),
        [
            (3, Some("amount")),
            (4, Some("amount")),
            (4, Some("date")),
            (5, Some("currency")),
            (6, Some("amount")),
            (6, Some("source")),
            (7, Some("amount")),
            (8, Some("currency")),
            (8, Some("amount")),
            (8, Some("date")),
            (8, Some("reference")),
            (8, Some("source")),
            (8, Some("batch_id")),
            (9, Some("id")),
            (9, Some("date")),
        ]
    );
    assert_eq!(r.bad_lines, 7);
    assert!(!r.truncated);
    let msg = |line: u64, col: &str| {
        r.errors
            .iter()
            .find(|e| e.line == line && e.column == Some(col))
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg(3, "amount").contains("USD allows at most 2"),
        "{}",
        msg(3, "amount")
    );
    assert!(msg(5, "currency").contains("XXX"), "{}", msg(5, "currency"));
    assert!(
        msg(7, "amount").contains("greater than zero"),
        "{}",
        msg(7, "amount")
    );
    assert!(
        msg(8, "amount").contains("too few fields"),
        "{}",
        msg(8, "amount")
    );
    assert!(msg(9, "date").contains("YYYY-MM-DD"), "{}", msg(9, "date"));
    // The report renders one line per error.
    let text = r.to_string();
    assert!(text.starts_with("payments: 7 bad line(s)"), "{text}");
    assert!(text.contains("line 3, column amount:"), "{text}");
}

#[test]
fn duplicate_ids_name_both_lines() {
    let csv = format!(
        "{PAYMENTS_HEADER}\
         P1,E1,C1,USD,1.00,2026-10-01,,sage_receipt,\n\
         P2,E1,C1,USD,1.00,2026-10-01,,sage_receipt,\n\
         P1,E1,C1,USD,2.00,2026-10-01,,sage_receipt,\n"
    );
    let r = invalid(read_payments(csv.as_bytes()));
    assert_eq!(places(&r), [(4, Some("id"))]);
    assert!(
        r.errors[0].message.contains("first on line 2"),
        "{}",
        r.errors[0].message
    );
}

#[test]
fn quoted_newlines_keep_line_numbers_right() {
    let csv = format!(
        "{PAYMENTS_HEADER}\
         P1,E1,C1,USD,1.00,2026-10-01,\"two\nlines\",sage_receipt,\n\
         P2,E1,C1,USD,bad,2026-10-01,,sage_receipt,\n"
    );
    let r = invalid(read_payments(csv.as_bytes()));
    assert_eq!(places(&r), [(4, Some("amount"))]);
}

#[test]
fn empty_file_and_header_only() {
    let r = invalid(read_payments("".as_bytes()));
    assert_eq!(places(&r), [(1, None)]);
    assert_eq!(
        read_payments(PAYMENTS_HEADER.as_bytes()).expect("ok").len(),
        0
    );
}

#[test]
fn invoices_parse_and_fail() {
    let good = "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
                1001,INV-1,invoice,E1,C1,USD,250.00,2026-09-01,2026-10-01\n\
                1002,CM-1,credit_memo,E1,C1,BHD,1.250,2026-09-02,2026-09-02\n";
    let rows = read_open_items(good.as_bytes()).expect("valid");
    assert_eq!(rows[1].kind, OpenItemKind::CreditMemo);
    assert_eq!(rows[1].open.amount_minor(), 1_250);
    let bad = "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
               1001,INV-1,order,E1,C1,USD,0,2026-09-01,2026-02-30\n";
    let r = invalid(read_open_items(bad.as_bytes()));
    assert_eq!(
        places(&r),
        [
            (2, Some("kind")),
            (2, Some("amount_open")),
            (2, Some("due_date"))
        ]
    );
}

#[test]
fn settlements_check_net() {
    let csv = "deposit_id,batch_id,date,currency,gross,fees,net\n\
               D1,B1,2026-10-03,USD,100.00,2.90,97.10\n\
               D2,B2,2026-10-03,USD,100.00,2.90,97.00\n\
               D3,B3,2026-10-03,USD,100.00,-1.00,101.00\n";
    let r = invalid(read_settlements(csv.as_bytes()));
    assert_eq!(places(&r), [(3, Some("net")), (4, Some("fees"))]);
    let ok = read_settlements("deposit_id,batch_id,date,currency,gross,fees,net\nD1,B1,2026-10-03,USD,100.00,2.90,97.10\n".as_bytes())
        .expect("valid");
    assert_eq!(ok[0].net().amount_minor(), 9_710);
}

#[test]
fn rates_parse_and_fail() {
    let csv = "from,to,date,rate\nEUR,USD,2026-10-01,1.0952\nEUR,USD,2026-10-02,-1\nEUR,USD,2026-10-01,1.1\n";
    let r = invalid(read_rates(csv.as_bytes()));
    assert_eq!(places(&r), [(3, Some("rate"))]);
    let csv = "from,to,date,rate\nEUR,USD,2026-10-01,1.0952\nEUR,USD,2026-10-01,1.1\n";
    let r = invalid(read_rates(csv.as_bytes()));
    assert_eq!(places(&r), [(3, Some("date"))]);
}

#[test]
fn read_inputs_is_all_or_nothing_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let payments = dir.path().join("payments.csv");
    let invoices = dir.path().join("invoices.csv");
    std::fs::write(
        &payments,
        format!("{PAYMENTS_HEADER}P1,E1,C1,USD,1.00,2026-10-01,,sage_receipt,\n"),
    )
    .expect("write");
    std::fs::write(&invoices, "id,number\n1,INV-1\n").expect("write");
    let files = InputFiles {
        payments: Some(payments.clone()),
        invoices: Some(invoices),
        settlements: None,
        rates: Some(dir.path().join("missing.csv")),
    };
    let errors = read_inputs(&files).expect_err("invalid invoices, missing rates");
    assert_eq!(errors.len(), 2);
    assert!(matches!(&errors[0], ImportError::Invalid(r) if r.kind == reconcile::Kind::Invoices));
    assert!(matches!(&errors[1], ImportError::Io { .. }));
    let ok = read_inputs(&InputFiles {
        payments: Some(payments),
        ..InputFiles::default()
    })
    .expect("valid");
    assert_eq!(ok.payments.len(), 1);
}
