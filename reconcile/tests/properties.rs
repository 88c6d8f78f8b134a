//! Property tests: generated invoice/payment sets with known ground truth (exact, split,
//! installments, partial, over-payment, duplicate, FX) and random noise.
//!
//! Checked: 100% precision on the exact and split cases (every application goes to the
//! intended invoice and both sides are `Matched`); every input item lands in exactly one
//! category valid for its kind; no payment is applied beyond its amount or twice; items are
//! never over-applied; results are identical when the inputs are shuffled.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use reconcile::{
    Category, Inputs, MatchConfig, OpenItem, Payment, PaymentSource, Reconciliation, reconcile,
};

/// The truth for one generated case.
#[derive(Clone, Debug)]
enum Truth {
    /// Payments that must be `Matched`, applied only to these invoices, which end `Matched`.
    Exact {
        payments: Vec<String>,
        invoices: Vec<String>,
    },
    Partial {
        payment: String,
        invoice: String,
    },
    Over {
        payment: String,
        invoice: String,
    },
    /// Two payments of one obligation: exactly one applied, the other a duplicate.
    Duplicate {
        first: String,
        second: String,
        invoice: String,
    },
    Fx {
        payment: String,
        invoice: String,
    },
}

#[derive(Clone, Debug)]
enum CaseSpec {
    Exact(i64),
    Split(Vec<i64>),
    Installments(i64, u8),
    Partial(i64, u8),
    Over(i64, i64),
    Duplicate(i64, bool),
    Fx(i64, i64),
}

fn case_spec() -> impl Strategy<Value = CaseSpec> {
    let amount = 1_000i64..5_000_000;
    prop_oneof![
        amount.clone().prop_map(CaseSpec::Exact),
        prop::collection::vec(amount.clone(), 2..5).prop_map(CaseSpec::Split),
        (amount.clone(), 2u8..5).prop_map(|(a, n)| CaseSpec::Installments(a, n)),
        (amount.clone(), 10u8..90).prop_map(|(a, pct)| CaseSpec::Partial(a, pct)),
        (amount.clone(), 1i64..100_000).prop_map(|(a, x)| CaseSpec::Over(a, x)),
        (amount.clone(), any::<bool>()).prop_map(|(a, same_day)| CaseSpec::Duplicate(a, same_day)),
        // EUR amount and a rate in 1/10,000 (0.5000..2.0000)
        (100_000i64..5_000_000, 5_000i64..20_000).prop_map(|(a, r)| CaseSpec::Fx(a, r)),
    ]
}

struct World {
    inputs: Inputs,
    truths: Vec<Truth>,
}

fn build(specs: &[(CaseSpec, u8)]) -> World {
    let mut payments: Vec<Payment> = Vec::new();
    let mut items: Vec<OpenItem> = Vec::new();
    let mut rates = Vec::new();
    // One rate per (currency, day): a later FX case on the same pair and day reuses it.
    let mut rate_of: BTreeMap<(&str, u32), i64> = BTreeMap::new();
    let mut truths = Vec::new();
    let mut n_inv = 0u32;
    let mut n_pay = 0u32;
    let mut next_inv = |items: &mut Vec<OpenItem>, customer: &str, amount: i64, code: &str| {
        n_inv += 1;
        let number = format!("INV-{n_inv:06}");
        let d = format!("2026-09-{:02}", 1 + n_inv % 28);
        items.push(inv(&number, customer, amount, code, &d));
        number
    };
    let mut next_pay = |payments: &mut Vec<Payment>,
                        customer: &str,
                        amount: i64,
                        code: &str,
                        day: u32,
                        reference: &str| {
        n_pay += 1;
        let id = format!("P{n_pay:06}");
        payments.push(pay(
            &id,
            customer,
            amount,
            code,
            &format!("2026-10-{:02}", 1 + day % 28),
            reference,
        ));
        id
    };
    for (k, (spec, customer)) in specs.iter().enumerate() {
        let k = u32::try_from(k).unwrap_or(0);
        let c = format!("C{customer}");
        match spec {
            CaseSpec::Exact(a) => {
                let i = next_inv(&mut items, &c, *a, "USD");
                let p = next_pay(&mut payments, &c, *a, "USD", k, &format!("Payment for {i}"));
                truths.push(Truth::Exact {
                    payments: vec![p],
                    invoices: vec![i],
                });
            }
            CaseSpec::Split(amounts) => {
                let invs: Vec<String> = amounts
                    .iter()
                    .map(|a| next_inv(&mut items, &c, *a, "USD"))
                    .collect();
                let total: i64 = amounts.iter().sum();
                let p = next_pay(
                    &mut payments,
                    &c,
                    total,
                    "USD",
                    k,
                    &format!("Remit: {}", invs.join(", ")),
                );
                truths.push(Truth::Exact {
                    payments: vec![p],
                    invoices: invs,
                });
            }
            CaseSpec::Installments(a, n) => {
                let i = next_inv(&mut items, &c, *a, "USD");
                let n = i64::from(*n);
                let part = a / n;
                let ps = (0..n)
                    .map(|j| {
                        let amount = if j + 1 == n { a - part * (n - 1) } else { part };
                        let day = k + u32::try_from(j).unwrap_or(0);
                        next_pay(
                            &mut payments,
                            &c,
                            amount,
                            "USD",
                            day,
                            &format!("{i} installment {}", j + 1),
                        )
                    })
                    .collect();
                truths.push(Truth::Exact {
                    payments: ps,
                    invoices: vec![i],
                });
            }
            CaseSpec::Partial(a, pct) => {
                let i = next_inv(&mut items, &c, *a, "USD");
                let amount = (a * i64::from(*pct) / 100).max(1);
                let p = next_pay(&mut payments, &c, amount, "USD", k, &format!("partial {i}"));
                truths.push(Truth::Partial {
                    payment: p,
                    invoice: i,
                });
            }
            CaseSpec::Over(a, extra) => {
                let i = next_inv(&mut items, &c, *a, "USD");
                let p = next_pay(&mut payments, &c, a + extra, "USD", k, &i);
                truths.push(Truth::Over {
                    payment: p,
                    invoice: i,
                });
            }
            CaseSpec::Duplicate(a, same_day) => {
                let i = next_inv(&mut items, &c, *a, "USD");
                let reference = format!("Invoice {i}");
                let first = next_pay(&mut payments, &c, *a, "USD", k, &reference);
                let day2 = if *same_day { k } else { k + 3 };
                let second = next_pay(&mut payments, &c, *a, "USD", day2, &reference);
                truths.push(Truth::Duplicate {
                    first,
                    second,
                    invoice: i,
                });
            }
            CaseSpec::Fx(eur, r) => {
                // One rate per case, on a date no other case uses: EUR-><cur>.
                let code = ["USD", "GBP", "CHF", "JPY"][(k % 4) as usize];
                let exp = if code == "JPY" { 0 } else { 2 };
                let day = 1 + k % 28;
                let r = *rate_of.entry((code, day)).or_insert(*r);
                let rate_text = format!("{}.{:04}", r / 10_000, r % 10_000);
                rates.push((code, day, rate_text));
                // The invoice is the converted amount, nudged by up to 1% (an FX difference).
                let converted = eur * r / 10_000 / if exp == 0 { 100 } else { 1 };
                let amount = (converted + converted / 150).max(1);
                let i = next_inv(&mut items, &c, amount, code);
                let p = next_pay(&mut payments, &c, *eur, "EUR", k, &format!("{i} fx"));
                truths.push(Truth::Fx {
                    payment: p,
                    invoice: i,
                });
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut dated = Vec::new();
    for (code, day, text) in rates {
        if seen.insert((code, day)) {
            dated.push(rate("EUR", code, &format!("2026-10-{day:02}"), &text));
        }
    }
    World {
        inputs: Inputs {
            payments,
            open_items: items,
            settlements: Vec::new(),
            rates: dated,
        },
        truths,
    }
}

fn by_payment_id(r: &Reconciliation) -> BTreeMap<String, usize> {
    r.inputs
        .payments
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.to_string(), i))
        .collect()
}

fn by_number(r: &Reconciliation) -> BTreeMap<String, usize> {
    r.inputs
        .open_items
        .iter()
        .enumerate()
        .map(|(i, p)| (p.number.to_string(), i))
        .collect()
}

const PAYMENT_CATEGORIES: &[Category] = &[
    Category::Matched,
    Category::PartialWithinTolerance,
    Category::PartialBeyondTolerance,
    Category::OverPayment,
    Category::DuplicatePayment,
    Category::CurrencyMismatch,
    Category::FxDifference,
    Category::UnmatchedPayment,
    Category::Timing,
    Category::Returned,
];

const ITEM_CATEGORIES: &[Category] = &[
    Category::Matched,
    Category::PartialWithinTolerance,
    Category::PartialBeyondTolerance,
    Category::FxDifference,
    Category::UnmatchedInvoice,
    Category::Timing,
];

/// The invariants that hold for any input.
fn check_invariants(r: &Reconciliation) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.payments.len(), r.inputs.payments.len());
    prop_assert_eq!(r.items.len(), r.inputs.open_items.len());
    prop_assert_eq!(r.settlements.len(), r.inputs.settlements.len());
    for o in &r.payments {
        prop_assert!(
            PAYMENT_CATEGORIES.contains(&o.category),
            "payment category {:?}",
            o.category
        );
    }
    for o in &r.items {
        prop_assert!(
            ITEM_CATEGORIES.contains(&o.category),
            "item category {:?}",
            o.category
        );
    }
    // Applications are grouped per payment, each payment's group exactly once.
    let mut seen = BTreeSet::new();
    let mut prev = None;
    for a in &r.applications {
        if prev != Some(a.payment) {
            prop_assert!(
                seen.insert(a.payment),
                "payment {} applied in two places",
                a.payment
            );
            prev = Some(a.payment);
        }
    }
    let mut item_applied = vec![0i64; r.items.len()];
    for (p, (pay, o)) in r.inputs.payments.iter().zip(&r.payments).enumerate() {
        let apps = r.applications_of(u32::try_from(p).unwrap_or(0));
        let total: i64 = apps.iter().map(|a| a.payment_amount_minor).sum();
        let amount = pay.amount.amount_minor();
        prop_assert!(
            total <= amount,
            "payment {} applied {} > {}",
            pay.id,
            total,
            amount
        );
        prop_assert!(
            apps.iter()
                .all(|a| a.payment == u32::try_from(p).unwrap_or(0))
        );
        prop_assert_eq!(
            o.applied_minor + o.unapplied_minor,
            if apps.is_empty() { 0 } else { amount }
        );
        prop_assert_eq!(total, o.applied_minor);
        let applied_kinds = matches!(
            o.category,
            Category::Matched
                | Category::PartialWithinTolerance
                | Category::PartialBeyondTolerance
                | Category::OverPayment
                | Category::FxDifference
        );
        prop_assert_eq!(
            applied_kinds,
            !apps.is_empty(),
            "payment {} {:?}",
            pay.id,
            o.category
        );
        for a in apps {
            item_applied[a.item as usize] += a.item_amount_minor;
            prop_assert!(a.item_amount_minor >= 0);
        }
    }
    for ((it, o), applied) in r.inputs.open_items.iter().zip(&r.items).zip(item_applied) {
        prop_assert_eq!(o.applied_minor, applied);
        prop_assert!(o.residual_minor >= 0, "item {} over-applied", it.id);
        prop_assert_eq!(o.residual_minor + o.applied_minor, it.open.amount_minor());
    }
    Ok(())
}

fn check_truth(r: &Reconciliation, truths: &[Truth]) -> Result<(), TestCaseError> {
    let pids = by_payment_id(r);
    let nums = by_number(r);
    let pcat = |id: &str| r.payments[pids[id]].category;
    let icat = |n: &str| r.items[nums[n]].category;
    let targets = |id: &str| -> BTreeSet<String> {
        r.applications_of(u32::try_from(pids[id]).unwrap_or(0))
            .iter()
            .map(|a| r.inputs.open_items[a.item as usize].number.to_string())
            .collect()
    };
    for t in truths {
        match t {
            Truth::Exact { payments, invoices } => {
                let want: BTreeSet<String> = invoices.iter().cloned().collect();
                for p in payments {
                    prop_assert_eq!(pcat(p), Category::Matched, "{:?}", t);
                    let got = targets(p);
                    prop_assert!(
                        got.is_subset(&want) && !got.is_empty(),
                        "{:?} applied to {:?}",
                        t,
                        got
                    );
                }
                for i in invoices {
                    prop_assert_eq!(icat(i), Category::Matched, "{:?}", t);
                }
            }
            Truth::Partial { payment, invoice } => {
                let c = pcat(payment);
                prop_assert!(
                    matches!(
                        c,
                        Category::PartialBeyondTolerance | Category::PartialWithinTolerance
                    ),
                    "{:?}: {:?}",
                    t,
                    c
                );
                prop_assert_eq!(icat(invoice), c);
                prop_assert_eq!(targets(payment), BTreeSet::from([invoice.clone()]));
            }
            Truth::Over { payment, invoice } => {
                prop_assert_eq!(pcat(payment), Category::OverPayment, "{:?}", t);
                prop_assert_eq!(icat(invoice), Category::Matched);
                prop_assert_eq!(targets(payment), BTreeSet::from([invoice.clone()]));
            }
            Truth::Duplicate {
                first,
                second,
                invoice,
            } => {
                let cats = [pcat(first), pcat(second)];
                prop_assert!(
                    cats == [Category::Matched, Category::DuplicatePayment]
                        || cats == [Category::DuplicatePayment, Category::Matched],
                    "{:?}: {:?}",
                    t,
                    cats
                );
                prop_assert_eq!(icat(invoice), Category::Matched);
            }
            Truth::Fx { payment, invoice } => {
                let c = pcat(payment);
                prop_assert!(
                    matches!(c, Category::FxDifference | Category::Matched),
                    "{:?}: {:?}",
                    t,
                    c
                );
                prop_assert_eq!(icat(invoice), c);
                prop_assert_eq!(targets(payment), BTreeSet::from([invoice.clone()]));
            }
        }
    }
    Ok(())
}

/// A deterministic shuffle driven by `seed`.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from((seed >> 33) % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

fn shuffled(inputs: &Inputs, seed: u64) -> Inputs {
    let mut s = inputs.clone();
    shuffle(&mut s.payments, seed);
    shuffle(&mut s.open_items, seed ^ 0x9e37);
    shuffle(&mut s.settlements, seed ^ 0x7f4a);
    shuffle(&mut s.rates, seed ^ 0x1234);
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn ground_truth_cases(specs in prop::collection::vec((case_spec(), 0u8..8), 1..40), seed in any::<u64>()) {
        let world = build(&specs);
        let cfg = MatchConfig::default();
        let r = reconcile(world.inputs.clone(), &cfg).expect("reconcile");
        check_invariants(&r)?;
        check_truth(&r, &world.truths)?;
        let again = reconcile(shuffled(&world.inputs, seed), &cfg).expect("reconcile");
        prop_assert!(again == r, "results differ after shuffling the inputs");
    }

    /// Random, collision-heavy inputs: few customers, few amounts, references naming random
    /// documents and payments, every source, two currencies, settlements and a cut-off.
    #[test]
    fn invariants_on_noise(
        pays in prop::collection::vec(
            (0u8..4, 1i64..8, 0u8..3, 0u32..40, 0u8..12, 0u8..4, 0u8..4, any::<bool>()),
            0..60,
        ),
        invs in prop::collection::vec((0u8..4, 1i64..8, 0u8..3, 0u32..40, any::<bool>()), 0..60),
        seed in any::<u64>(),
        with_cutoff in any::<bool>(),
    ) {
        let codes = ["USD", "EUR", "JPY"];
        let sources = [
            PaymentSource::GatewayCapture,
            PaymentSource::AchSettlement,
            PaymentSource::AchReturn,
            PaymentSource::SageReceipt,
        ];
        let open_items: Vec<OpenItem> = invs
            .iter()
            .enumerate()
            .map(|(n, &(c, a, cur, d, cm))| {
                let date = format!("2026-10-{:02}", 1 + d % 28);
                let number = format!("N{n}");
                let customer = format!("C{c}");
                if cm {
                    credit_memo(&number, &customer, a * 500, codes[cur as usize], &date)
                } else {
                    inv(&number, &customer, a * 500, codes[cur as usize], &date)
                }
            })
            .collect();
        let payments: Vec<Payment> = pays
            .iter()
            .enumerate()
            .map(|(n, &(c, a, cur, d, r1, r2, src, batch))| {
                let reference = match r1 % 4 {
                    0 => String::new(),
                    1 => format!("N{} N{}", r2 * 3 + r1, r1),
                    2 => format!("return of P{}", r2 * 5 + r1),
                    _ => format!("n{r1}"),
                };
                let p = pay(
                    &format!("P{n}"),
                    &format!("C{c}"),
                    a * 500,
                    codes[cur as usize],
                    &format!("2026-10-{:02}", 1 + d % 28),
                    &reference,
                );
                let b = format!("B{}", r2 % 3);
                with_source(p, sources[src as usize], batch.then_some(b.as_str()))
            })
            .collect();
        let mut inputs = Inputs { payments, open_items, settlements: Vec::new(), rates: Vec::new() };
        inputs.rates = vec![rate("EUR", "USD", "2026-10-01", "1.1"), rate("USD", "JPY", "2026-10-10", "150")];
        inputs.settlements = vec![
            settlement("D0", "B0", "2026-10-20", 5_000, 100, "USD"),
            settlement("D1", "B1", "2026-10-20", 0, 0, "USD"),
        ];
        let cfg = MatchConfig {
            period_end: with_cutoff.then(|| day("2026-10-20")),
            ..MatchConfig::default()
        };
        let r = reconcile(inputs.clone(), &cfg).expect("reconcile");
        check_invariants(&r)?;
        let again = reconcile(shuffled(&inputs, seed), &cfg).expect("reconcile");
        prop_assert!(again == r, "results differ after shuffling the inputs");
    }
}
