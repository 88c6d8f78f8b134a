//! One example per outcome category: which rule decided, and what was applied.

mod common;

use common::*;
use reconcile::{
    Adjustment, Category, Inputs, MatchConfig, PaymentSource, ReconcileError, Reconciliation, Rule,
    Tolerance, reconcile,
};

fn run(inputs: Inputs) -> Reconciliation {
    run_with(inputs, &MatchConfig::default())
}

fn run_with(inputs: Inputs, cfg: &MatchConfig) -> Reconciliation {
    reconcile(inputs, cfg).expect("reconcile")
}

fn p_idx(r: &Reconciliation, id: &str) -> usize {
    r.inputs
        .payments
        .iter()
        .position(|p| p.id.as_str() == id)
        .expect("payment id")
}

fn i_idx(r: &Reconciliation, number: &str) -> usize {
    r.inputs
        .open_items
        .iter()
        .position(|i| i.number.as_str() == number)
        .expect("item number")
}

fn pc(r: &Reconciliation, id: &str) -> Category {
    r.payments[p_idx(r, id)].category
}

fn ic(r: &Reconciliation, number: &str) -> Category {
    r.items[i_idx(r, number)].category
}

fn rule(r: &Reconciliation, id: &str) -> Option<Rule> {
    r.payments[p_idx(r, id)].rule
}

/// The (item number, payment-currency amount) pairs applied from payment `id`.
fn applied(r: &Reconciliation, id: &str) -> Vec<(String, i64)> {
    let p = u32::try_from(p_idx(r, id)).expect("index");
    r.applications_of(p)
        .iter()
        .map(|a| {
            (
                r.inputs.open_items[a.item as usize].number.to_string(),
                a.payment_amount_minor,
            )
        })
        .collect()
}

#[test]
fn matched_by_reference() {
    let r = run(inputs(
        vec![pay(
            "P1",
            "C1",
            10_000,
            "USD",
            "2026-10-05",
            "Remittance: inv-100, thanks",
        )],
        vec![
            inv("INV-99", "C1", 10_000, "USD", "2026-09-01"),
            inv("INV-100", "C1", 10_000, "USD", "2026-09-02"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(rule(&r, "P1"), Some(Rule::ExactReference));
    assert_eq!(r.payments[0].confidence.percent(), 100);
    assert_eq!(applied(&r, "P1"), [("INV-100".to_owned(), 10_000)]);
    assert_eq!(ic(&r, "INV-100"), Category::Matched);
    assert_eq!(ic(&r, "INV-99"), Category::UnmatchedInvoice);
}

#[test]
fn split_payment_over_referenced_invoices() {
    let r = run(inputs(
        vec![pay("P1", "C1", 30_000, "USD", "2026-10-05", "INV-1 INV-2")],
        vec![
            inv("INV-1", "C1", 10_000, "USD", "2026-09-01"),
            inv("INV-2", "C1", 20_000, "USD", "2026-09-02"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(
        applied(&r, "P1"),
        [("INV-1".to_owned(), 10_000), ("INV-2".to_owned(), 20_000)]
    );
}

#[test]
fn installments_close_one_invoice() {
    let r = run(inputs(
        vec![
            pay("P1", "C1", 4_000, "USD", "2026-10-05", "INV-1 part 1"),
            pay("P2", "C1", 6_000, "USD", "2026-10-06", "INV-1 part 2"),
        ],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(pc(&r, "P2"), Category::Matched);
    assert_eq!(ic(&r, "INV-1"), Category::Matched);
}

#[test]
fn exact_amount_oldest_first() {
    let r = run(inputs(
        vec![pay("P1", "C1", 7_500, "USD", "2026-10-05", "")],
        vec![
            inv("INV-2", "C1", 7_500, "USD", "2026-09-10"),
            inv("INV-1", "C1", 7_500, "USD", "2026-09-01"),
            inv("INV-3", "C1", 1_000, "USD", "2026-08-01"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(rule(&r, "P1"), Some(Rule::ExactAmount));
    assert_eq!(applied(&r, "P1"), [("INV-1".to_owned(), 7_500)]);
    assert_eq!(
        r.payments[0].confidence.percent(),
        75,
        "two candidates: lower confidence"
    );
}

#[test]
fn oldest_first_allocation_exact() {
    let r = run(inputs(
        vec![pay("P1", "C1", 3_000, "USD", "2026-10-05", "")],
        vec![
            inv("INV-1", "C1", 1_000, "USD", "2026-09-01"),
            inv("INV-2", "C1", 2_000, "USD", "2026-09-02"),
            inv("INV-3", "C1", 5_000, "USD", "2026-09-03"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(rule(&r, "P1"), Some(Rule::OldestFirst));
    assert_eq!(
        applied(&r, "P1"),
        [("INV-1".to_owned(), 1_000), ("INV-2".to_owned(), 2_000)]
    );
    assert_eq!(ic(&r, "INV-3"), Category::UnmatchedInvoice);
}

#[test]
fn partial_within_tolerance_proposes_write_off() {
    // Default tolerance: 1.00 absolute or 0.5%; short by 0.80.
    let r = run(inputs(
        vec![pay("P1", "C1", 9_920, "USD", "2026-10-05", "INV-1")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::PartialWithinTolerance);
    assert_eq!(ic(&r, "INV-1"), Category::PartialWithinTolerance);
    assert_eq!(r.items[0].residual_minor, 80);
    assert_eq!(
        r.adjustments,
        [Adjustment::WriteOff {
            item: 0,
            amount_minor: 80,
            currency: cur("USD")
        }]
    );
}

#[test]
fn partial_within_tolerance_without_reference() {
    let r = run(inputs(
        vec![pay("P1", "C1", 9_950, "USD", "2026-10-05", "")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::PartialWithinTolerance);
    assert_eq!(rule(&r, "P1"), Some(Rule::OldestFirst));
}

#[test]
fn partial_beyond_tolerance() {
    let r = run(inputs(
        vec![pay("P1", "C1", 6_000, "USD", "2026-10-05", "for INV-1")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::PartialBeyondTolerance);
    assert_eq!(ic(&r, "INV-1"), Category::PartialBeyondTolerance);
    assert_eq!(r.items[0].residual_minor, 4_000);
    assert!(r.adjustments.is_empty());
}

#[test]
fn short_payment_without_reference_is_not_applied() {
    let r = run(inputs(
        vec![pay("P1", "C1", 6_000, "USD", "2026-10-05", "")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::UnmatchedPayment);
    assert_eq!(ic(&r, "INV-1"), Category::UnmatchedInvoice);
}

#[test]
fn over_payment_leaves_unapplied_cash() {
    let r = run(inputs(
        vec![pay("P1", "C1", 12_500, "USD", "2026-10-05", "INV-1")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::OverPayment);
    assert_eq!(r.payments[0].unapplied_minor, 2_500);
    assert_eq!(r.payments[0].applied_minor, 10_000);
    assert_eq!(ic(&r, "INV-1"), Category::Matched);
    assert_eq!(
        r.adjustments,
        [Adjustment::UnappliedCash {
            payment: 0,
            amount_minor: 2_500,
            currency: cur("USD")
        }]
    );
}

#[test]
fn duplicate_by_key_and_by_reference() {
    let r = run(inputs(
        vec![
            pay("P1", "C1", 10_000, "USD", "2026-10-05", "INV-1"),
            pay("P2", "C1", 10_000, "USD", "2026-10-05", "INV-1"),
            pay(
                "P3",
                "C1",
                10_000,
                "USD",
                "2026-10-09",
                "paying INV-1 again",
            ),
        ],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(pc(&r, "P2"), Category::DuplicatePayment);
    assert_eq!(rule(&r, "P2"), Some(Rule::DuplicateKey));
    assert_eq!(pc(&r, "P3"), Category::DuplicatePayment);
    assert_eq!(rule(&r, "P3"), Some(Rule::DuplicateReference));
    let p1 = u32::try_from(p_idx(&r, "P1")).expect("idx");
    assert_eq!(r.payments[p_idx(&r, "P2")].related, Some(p1));
    assert_eq!(r.payments[p_idx(&r, "P3")].related, Some(p1));
}

#[test]
fn currency_mismatch_without_rate() {
    let r = run(inputs(
        vec![pay("P1", "C1", 10_000, "EUR", "2026-10-05", "INV-1")],
        vec![inv("INV-1", "C1", 11_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::CurrencyMismatch);
    assert_eq!(ic(&r, "INV-1"), Category::UnmatchedInvoice);
}

#[test]
fn fx_difference_by_reference() {
    // 100.00 EUR at 1.0952 = 109.52 USD against 110.00 open: loss of 0.48 USD.
    let mut i = inputs(
        vec![pay("P1", "C1", 10_000, "EUR", "2026-10-05", "INV-1")],
        vec![inv("INV-1", "C1", 11_000, "USD", "2026-09-01")],
    );
    i.rates = vec![
        rate("EUR", "USD", "2026-10-02", "1.0952"),
        rate("EUR", "USD", "2026-10-06", "1.2000"),
    ];
    let r = run(i);
    assert_eq!(pc(&r, "P1"), Category::FxDifference);
    assert_eq!(rule(&r, "P1"), Some(Rule::FxReference));
    assert_eq!(r.payments[0].fx_difference_minor, -48);
    assert_eq!(r.payments[0].applied_minor, 10_000);
    assert_eq!(ic(&r, "INV-1"), Category::FxDifference);
    assert_eq!(
        r.adjustments,
        [Adjustment::FxGainLoss {
            payment: 0,
            item: 0,
            amount_minor: -48,
            currency: cur("USD")
        }]
    );
}

#[test]
fn fx_by_converted_amount_and_inverse_rate() {
    // Only a USD->EUR rate is given: EUR->USD is its inverse. 100.00 EUR / 0.8 = 125.00 USD.
    let mut i = inputs(
        vec![pay("P1", "C1", 10_000, "EUR", "2026-10-05", "")],
        vec![inv("INV-1", "C1", 12_500, "USD", "2026-09-01")],
    );
    i.rates = vec![rate("USD", "EUR", "2026-10-05", "0.8")];
    let r = run(i);
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(rule(&r, "P1"), Some(Rule::FxAmount));
    assert_eq!(ic(&r, "INV-1"), Category::Matched);
}

#[test]
fn stale_rate_is_not_used() {
    let mut i = inputs(
        vec![pay("P1", "C1", 10_000, "EUR", "2026-10-20", "INV-1")],
        vec![inv("INV-1", "C1", 11_000, "USD", "2026-09-01")],
    );
    i.rates = vec![rate("EUR", "USD", "2026-10-01", "1.1")];
    let r = run(i);
    assert_eq!(pc(&r, "P1"), Category::CurrencyMismatch);
}

#[test]
fn unmatched_payment_and_invoice() {
    let r = run(inputs(
        vec![pay("P1", "C9", 10_000, "USD", "2026-10-05", "hello")],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "P1"), Category::UnmatchedPayment);
    assert_eq!(ic(&r, "INV-1"), Category::UnmatchedInvoice);
}

#[test]
fn timing_after_period_end() {
    let cfg = MatchConfig {
        period_end: Some(day("2026-10-31")),
        ..MatchConfig::default()
    };
    let r = run_with(
        inputs(
            vec![
                pay("P1", "C1", 10_000, "USD", "2026-11-01", "INV-1"),
                pay("P2", "C1", 5_000, "USD", "2026-10-31", "INV-2"),
            ],
            vec![
                inv("INV-1", "C1", 10_000, "USD", "2026-10-01"),
                inv("INV-2", "C1", 5_000, "USD", "2026-11-02"),
            ],
        ),
        &cfg,
    );
    assert_eq!(pc(&r, "P1"), Category::Timing);
    assert_eq!(ic(&r, "INV-2"), Category::Timing);
    assert_eq!(pc(&r, "P2"), Category::UnmatchedPayment);
    assert_eq!(ic(&r, "INV-1"), Category::UnmatchedInvoice);
}

#[test]
fn ach_return_pairs_with_its_settlement() {
    let r = run(inputs(
        vec![
            with_source(
                pay("ACH-1", "C1", 10_000, "USD", "2026-10-05", "INV-1"),
                PaymentSource::AchSettlement,
                None,
            ),
            with_source(
                pay(
                    "RET-1",
                    "C1",
                    10_000,
                    "USD",
                    "2026-10-08",
                    "R01 return of ACH-1",
                ),
                PaymentSource::AchReturn,
                None,
            ),
            with_source(
                pay(
                    "RET-2",
                    "C1",
                    10_000,
                    "USD",
                    "2026-10-08",
                    "R01 return of ACH-77",
                ),
                PaymentSource::AchReturn,
                None,
            ),
        ],
        vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
    ));
    assert_eq!(pc(&r, "ACH-1"), Category::Returned);
    assert_eq!(pc(&r, "RET-1"), Category::Returned);
    assert_eq!(pc(&r, "RET-2"), Category::UnmatchedPayment);
    assert_eq!(ic(&r, "INV-1"), Category::UnmatchedInvoice);
    assert!(r.applications.is_empty());
}

#[test]
fn credit_memo_nets_against_invoices() {
    let r = run(inputs(
        vec![pay(
            "P1",
            "C1",
            8_000,
            "USD",
            "2026-10-05",
            "INV-1 less CM-1",
        )],
        vec![
            inv("INV-1", "C1", 10_000, "USD", "2026-09-01"),
            credit_memo("CM-1", "C1", 2_000, "USD", "2026-09-15"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::Matched);
    assert_eq!(ic(&r, "INV-1"), Category::Matched);
    assert_eq!(ic(&r, "CM-1"), Category::Matched);
    let total: i64 = r.applications.iter().map(|a| a.payment_amount_minor).sum();
    assert_eq!(total, 8_000);
}

#[test]
fn subset_search_suggests_but_does_not_apply() {
    let r = run(inputs(
        vec![pay("P1", "C1", 7_000, "USD", "2026-10-05", "")],
        vec![
            inv("INV-1", "C1", 5_000, "USD", "2026-09-01"),
            inv("INV-2", "C1", 3_000, "USD", "2026-09-02"),
            inv("INV-3", "C1", 2_000, "USD", "2026-09-03"),
        ],
    ));
    assert_eq!(pc(&r, "P1"), Category::UnmatchedPayment);
    assert!(r.applications.is_empty());
    assert_eq!(r.suggestions.len(), 1);
    let s = &r.suggestions[0];
    let numbers: Vec<&str> = s
        .items
        .iter()
        .map(|&i| r.inputs.open_items[i as usize].number.as_str())
        .collect();
    assert_eq!(numbers, ["INV-1", "INV-3"]);
    assert_eq!(s.rule, Rule::SubsetSum);
}

#[test]
fn settlements_by_batch_net_of_fees() {
    let cap = |id: &str, amount: i64, batch: &str| {
        with_source(
            pay(id, "C1", amount, "USD", "2026-10-05", ""),
            PaymentSource::GatewayCapture,
            Some(batch),
        )
    };
    let mut i = inputs(
        vec![
            cap("CAP-1", 1_000, "B1"),
            cap("CAP-2", 2_500, "B1"),
            cap("CAP-3", 4_000, "B2"),
            cap("CAP-4", 900, "B9"),
        ],
        vec![],
    );
    i.settlements = vec![
        settlement("D1", "B1", "2026-10-07", 3_500, 105, "USD"),
        settlement("D2", "B2", "2026-10-07", 4_100, 120, "USD"),
        settlement("D3", "B3", "2026-10-07", 700, 20, "USD"),
    ];
    let r = run(i);
    let cats: Vec<Category> = r.settlements.iter().map(|s| s.category).collect();
    assert_eq!(
        cats,
        [
            Category::Matched,
            Category::SettlementDifference,
            Category::UnmatchedSettlement
        ]
    );
    assert_eq!(r.settlements[1].difference_minor, -100);
    assert_eq!(r.in_transit.len(), 1);
}

#[test]
fn zero_tolerance_config() {
    let cfg = MatchConfig {
        tolerance: Tolerance::ZERO,
        ..MatchConfig::default()
    };
    let r = run_with(
        inputs(
            vec![pay("P1", "C1", 9_999, "USD", "2026-10-05", "INV-1")],
            vec![inv("INV-1", "C1", 10_000, "USD", "2026-09-01")],
        ),
        &cfg,
    );
    assert_eq!(pc(&r, "P1"), Category::PartialBeyondTolerance);
}

#[test]
fn duplicate_ids_are_rejected() {
    let err = reconcile(
        inputs(
            vec![
                pay("P1", "C1", 1, "USD", "2026-10-05", ""),
                pay("P1", "C2", 2, "USD", "2026-10-06", ""),
            ],
            vec![],
        ),
        &MatchConfig::default(),
    )
    .expect_err("duplicate");
    assert_eq!(
        err,
        ReconcileError::DuplicateId {
            kind: "payment",
            id: "P1".into()
        }
    );
}

#[test]
fn summary_counts_every_item_once() {
    let r = run(inputs(
        vec![
            pay("P1", "C1", 10_000, "USD", "2026-10-05", "INV-1"),
            pay("P2", "C9", 10_000, "USD", "2026-10-05", ""),
        ],
        vec![
            inv("INV-1", "C1", 10_000, "USD", "2026-09-01"),
            inv("INV-2", "C1", 10_000, "USD", "2026-09-01"),
        ],
    ));
    let s = r.summary();
    let count = |m: &std::collections::BTreeMap<Category, reconcile::CategoryTotal>| {
        m.values().map(|t| t.count).sum::<u64>()
    };
    assert_eq!(count(&s.payments), 2);
    assert_eq!(count(&s.items), 2);
    assert_eq!(s.payments[&Category::Matched].amount_minor["USD"], 10_000);
}

#[test]
fn exact_amount_for_a_customer_with_many_open_items() {
    // More open items than the in-place scan handles: the (key, amount) index path.
    let mut items: Vec<_> = (0..50)
        .map(|n| inv(&format!("INV-{n:03}"), "C1", 1_000 + n, "USD", "2026-09-01"))
        .collect();
    items.push(inv("INV-LATE", "C1", 1_007, "USD", "2026-09-20"));
    let r = run(inputs(
        vec![
            pay("P1", "C1", 1_007, "USD", "2026-10-05", ""),
            pay("P2", "C1", 1_007, "USD", "2026-10-06", ""),
            pay("P3", "C1", 1_007, "USD", "2026-10-07", ""),
        ],
        items,
    ));
    assert_eq!(applied(&r, "P1"), [("INV-007".to_owned(), 1_007)]);
    assert_eq!(r.payments[p_idx(&r, "P1")].confidence.percent(), 75);
    assert_eq!(applied(&r, "P2"), [("INV-LATE".to_owned(), 1_007)]);
    assert_eq!(r.payments[p_idx(&r, "P2")].confidence.percent(), 90);
    assert_eq!(rule(&r, "P2"), Some(Rule::ExactAmount));
    // Nothing left at that amount; oldest-first cannot land exactly (1,000 < 1,007 < 2,001).
    assert_eq!(pc(&r, "P3"), Category::UnmatchedPayment);
}
