//! The matching engine: payments against AR open items, captures against processor
//! settlements, every input item classified into exactly one [`Category`].
//!
//! Passes, cheapest and most certain first; each pass runs over all payments (in date, id
//! order) before the next starts, so a high-confidence match always claims its items first:
//!
//! 0. **Cut-off** — payments and items dated after `period_end` are `Timing` and take no part.
//!    **ACH returns** are paired with the settlement they name (both `Returned`); a return
//!    that names nothing is an unmatched payment, never applied. **Duplicates**: a payment
//!    with the same entity, customer, amount, date and non-empty reference as an earlier one.
//! 1. **Exact reference** — tokens of the reference text looked up in an index of document
//!    numbers (same entity and customer). Same currency: applied oldest-first (a payment
//!    naming invoices that earlier payments already closed is a duplicate); other currency:
//!    deferred to pass 5.
//! 2. **Exact amount** — an open invoice of the same (entity, customer, currency) whose open
//!    amount equals the payment, oldest first (hash index on (customer key, amount)).
//! 3. **Oldest-first allocation** over the customer's open invoices, accepted only when it
//!    lands exactly, short by no more than the tolerance on the last invoice, or pays every
//!    open invoice (over-payment: the excess is unapplied cash).
//! 4. **Subset search** — bounded in candidates, subset size and steps (deterministic, not
//!    wall-clock): an exact many-to-one combination is recorded as a [`Suggestion`], never
//!    applied.
//! 5. **Cross-currency** — referenced items in another currency, then an amount match after
//!    conversion, at the rate of the payment date (latest rate on or before it, within
//!    `fx_max_rate_age_days`); the FX difference is computed in minor units with
//!    `fx_rounding`. No rate: `CurrencyMismatch`.
//!
//! Settlements: captures (and ACH items) carrying a processor batch id are summed per batch
//! and compared with the deposit's gross; the deposit's net is gross less fees by
//! construction ([`SettlementBatch::new`]).
//!
//! Every candidate lookup goes through a hash index or a contiguous per-customer range of the
//! sorted open items; nothing scans all payments against all items. All work is bounded by
//! the limits in [`MatchConfig`]. The inputs are sorted by natural keys with unique ids as the
//! last tie-break, so the same inputs in any order give identical results.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{Days, NaiveDate};
use ledger::{Currency, FxRate, Money, Rounding};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::hash::{FxHashMap, map_with_capacity};
use crate::model::{Inputs, OpenItem, OpenItemKind, Payment, PaymentSource, SettlementBatch};

/// Index of a payment in [`Reconciliation::inputs`]`.payments` (sorted by date, id).
pub type PaymentIdx = u32;
/// Index of an open item in [`Reconciliation::inputs`]`.open_items` (sorted by entity,
/// customer, currency, due date, date, number, id).
pub type ItemIdx = u32;

const NONE: u32 = u32::MAX;

/// Customers (keys) with at most this many open items are searched by scanning their range
/// instead of through the (key, amount) index.
const SMALL_KEY_RANGE: usize = 32;

/// How far a residual may be from zero and still count as settled: within `absolute_minor`
/// minor units of the item's currency, or within `percent_bp` basis points (1/100 of a
/// percent) of the base amount, whichever is larger. Integer math only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tolerance {
    pub absolute_minor: i64,
    pub percent_bp: u32,
}

impl Tolerance {
    pub const ZERO: Tolerance = Tolerance {
        absolute_minor: 0,
        percent_bp: 0,
    };

    /// Whether a gap of `gap_minor` (either sign) on `base_minor` is within tolerance.
    pub fn allows(&self, gap_minor: i64, base_minor: i64) -> bool {
        let gap = i128::from(gap_minor).abs();
        gap <= i128::from(self.absolute_minor)
            || gap * 10_000 <= i128::from(self.percent_bp) * i128::from(base_minor).abs()
    }
}

/// Bounds of the many-to-one subset search (pass 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SubsetLimits {
    /// Open items considered per payment (oldest first).
    pub max_candidates: usize,
    /// Most items in one suggested combination.
    pub max_items: usize,
    /// Search steps per payment; a step budget keeps the result deterministic.
    pub max_steps: u32,
}

/// Matching configuration; every limit has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchConfig {
    /// Short payment write-off tolerance (partial within vs beyond tolerance).
    pub tolerance: Tolerance,
    /// A converted payment within this of the items it pays closes them with an FX
    /// difference instead of leaving a residual.
    pub fx_tolerance: Tolerance,
    pub fx_rounding: Rounding,
    /// A rate older than this (before the payment date) is not used.
    pub fx_max_rate_age_days: u32,
    /// Last day of the period; later payments and items are `Timing`.
    pub period_end: Option<NaiveDate>,
    pub subset: SubsetLimits,
    /// Open invoices one oldest-first allocation may walk.
    pub waterfall_max_items: usize,
    /// Items one payment's reference may name.
    pub max_reference_hits: usize,
    /// Items with the same amount examined by the exact-amount pass.
    pub max_amount_candidates: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            tolerance: Tolerance {
                absolute_minor: 100,
                percent_bp: 50,
            },
            fx_tolerance: Tolerance {
                absolute_minor: 0,
                percent_bp: 200,
            },
            fx_rounding: Rounding::HalfEven,
            fx_max_rate_age_days: 7,
            period_end: None,
            subset: SubsetLimits {
                max_candidates: 24,
                max_items: 4,
                max_steps: 20_000,
            },
            waterfall_max_items: 1_000,
            max_reference_hits: 64,
            max_amount_candidates: 64,
        }
    }
}

/// The rule that produced a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An ACH return paired with the settlement it names.
    AchReturn,
    /// Same entity, customer, amount, date and reference as an earlier payment.
    DuplicateKey,
    /// Names only invoices that earlier payments in this run already closed.
    DuplicateReference,
    ExactReference,
    ExactAmount,
    OldestFirst,
    SubsetSum,
    FxReference,
    FxAmount,
    SettlementBatch,
}

impl Rule {
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::AchReturn => "ach_return",
            Rule::DuplicateKey => "duplicate_key",
            Rule::DuplicateReference => "duplicate_reference",
            Rule::ExactReference => "exact_reference",
            Rule::ExactAmount => "exact_amount",
            Rule::OldestFirst => "oldest_first",
            Rule::SubsetSum => "subset_sum",
            Rule::FxReference => "fx_reference",
            Rule::FxAmount => "fx_amount",
            Rule::SettlementBatch => "settlement_batch",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How sure a rule is, in percent (0–100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Confidence(u8);

impl Confidence {
    pub const fn percent(self) -> u8 {
        self.0
    }
    const fn of(p: u8) -> Confidence {
        Confidence(if p > 100 { 100 } else { p })
    }
}

/// The one class every input item ends in (issue 6 §3, the exception taxonomy of
/// ledger_recon.md §2.10), plus three documented extensions: `Returned` (an ACH settlement
/// and its return), `UnmatchedSettlement` and `SettlementDifference` (for deposits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Matched,
    PartialWithinTolerance,
    PartialBeyondTolerance,
    OverPayment,
    DuplicatePayment,
    CurrencyMismatch,
    FxDifference,
    UnmatchedPayment,
    UnmatchedInvoice,
    Timing,
    Returned,
    UnmatchedSettlement,
    SettlementDifference,
}

impl Category {
    pub const ALL: [Category; 13] = [
        Category::Matched,
        Category::PartialWithinTolerance,
        Category::PartialBeyondTolerance,
        Category::OverPayment,
        Category::DuplicatePayment,
        Category::CurrencyMismatch,
        Category::FxDifference,
        Category::UnmatchedPayment,
        Category::UnmatchedInvoice,
        Category::Timing,
        Category::Returned,
        Category::UnmatchedSettlement,
        Category::SettlementDifference,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::PartialWithinTolerance => "partial_within_tolerance",
            Category::PartialBeyondTolerance => "partial_beyond_tolerance",
            Category::OverPayment => "over_payment",
            Category::DuplicatePayment => "duplicate_payment",
            Category::CurrencyMismatch => "currency_mismatch",
            Category::FxDifference => "fx_difference",
            Category::UnmatchedPayment => "unmatched_payment",
            Category::UnmatchedInvoice => "unmatched_invoice",
            Category::Timing => "timing",
            Category::Returned => "returned",
            Category::UnmatchedSettlement => "unmatched_settlement",
            Category::SettlementDifference => "settlement_difference",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The rate a cross-currency application used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FxApplied {
    /// 1 unit of the payment currency = `rate` units of the item currency.
    pub rate: Decimal,
    /// The date the rate is quoted for.
    pub rate_date: NaiveDate,
}

/// A (proposed) application of part of a payment to an open item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Application {
    pub payment: PaymentIdx,
    pub item: ItemIdx,
    pub rule: Rule,
    pub confidence: Confidence,
    /// In the payment's currency. Negative for a credit memo consumed alongside invoices.
    pub payment_amount_minor: i64,
    /// In the item's currency (equal to the above unless `fx` is set).
    pub item_amount_minor: i64,
    pub fx: Option<FxApplied>,
}

/// A many-to-one combination offered for review (never applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub payment: PaymentIdx,
    pub items: Vec<ItemIdx>,
    pub sum_minor: i64,
    pub rule: Rule,
    pub confidence: Confidence,
}

/// What happened to one payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentOutcome {
    pub category: Category,
    pub rule: Option<Rule>,
    pub confidence: Confidence,
    /// Applied to items, in the payment currency (≤ the payment amount).
    pub applied_minor: i64,
    /// Left as unapplied cash (over-payment), in the payment currency.
    pub unapplied_minor: i64,
    /// FX gain (positive) or loss in the item currency, for a cross-currency payment.
    pub fx_difference_minor: i64,
    /// The earlier payment this duplicates, or the partner of an ACH return pair.
    pub related: Option<PaymentIdx>,
    /// This payment's applications: `applications[first_application..][..application_count]`.
    pub first_application: u32,
    pub application_count: u32,
}

/// What happened to one open item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemOutcome {
    pub category: Category,
    /// Applied in the item's currency.
    pub applied_minor: i64,
    /// Still open after the run (before any proposed write-off).
    pub residual_minor: i64,
    /// FX gain (positive) or loss booked when this item was closed cross-currency.
    pub fx_difference_minor: i64,
}

/// What happened to one settlement batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementOutcome {
    pub category: Category,
    /// Payments carrying this batch id (returns count negative), in payment order.
    pub captures: Vec<PaymentIdx>,
    /// Σ captures in the settlement currency (captures in another currency are left out).
    pub captured_minor: i64,
    /// `captured - gross`; zero when matched.
    pub difference_minor: i64,
}

/// Adjusting entries a run proposes; the approval step (later) posts them to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Adjustment {
    /// Write off a residual within tolerance.
    WriteOff {
        item: ItemIdx,
        amount_minor: i64,
        currency: Currency,
    },
    /// Book an FX gain (positive) or loss (negative), in the item currency, on closing
    /// `item` from `payment`.
    FxGainLoss {
        payment: PaymentIdx,
        item: ItemIdx,
        amount_minor: i64,
        currency: Currency,
    },
    /// Keep an over-payment as unapplied cash (a Sage advance), in the payment currency.
    UnappliedCash {
        payment: PaymentIdx,
        amount_minor: i64,
        currency: Currency,
    },
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("duplicate {kind} id \"{id}\"")]
    DuplicateId { kind: &'static str, id: String },
}

/// Count and per-currency amount of one category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CategoryTotal {
    pub count: u64,
    /// Σ input amounts by currency code, in minor units.
    pub amount_minor: BTreeMap<&'static str, i128>,
}

/// Totals per category for each input kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub payments: BTreeMap<Category, CategoryTotal>,
    pub items: BTreeMap<Category, CategoryTotal>,
    pub settlements: BTreeMap<Category, CategoryTotal>,
    pub applications: u64,
    pub suggestions: u64,
    pub adjustments: u64,
}

/// The result of a run. `payments[i]` is the outcome of `inputs.payments[i]`, and so on; the
/// inputs are kept in their canonical (sorted) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    pub inputs: Inputs,
    pub payments: Vec<PaymentOutcome>,
    pub items: Vec<ItemOutcome>,
    pub settlements: Vec<SettlementOutcome>,
    pub applications: Vec<Application>,
    pub suggestions: Vec<Suggestion>,
    /// Captures whose batch has no settlement yet, in payment order.
    pub in_transit: Vec<PaymentIdx>,
    pub adjustments: Vec<Adjustment>,
}

impl Reconciliation {
    /// The applications of payment `p`.
    pub fn applications_of(&self, p: PaymentIdx) -> &[Application] {
        let o = &self.payments[p as usize];
        let start = o.first_application as usize;
        &self.applications[start..start + o.application_count as usize]
    }

    /// Totals per category.
    pub fn summary(&self) -> Summary {
        fn add(map: &mut BTreeMap<Category, CategoryTotal>, c: Category, m: Money) {
            let t = map.entry(c).or_default();
            t.count += 1;
            *t.amount_minor.entry(m.currency().code()).or_default() += i128::from(m.amount_minor());
        }
        let mut s = Summary::default();
        for (p, o) in self.inputs.payments.iter().zip(&self.payments) {
            add(&mut s.payments, o.category, p.amount.money());
        }
        for (i, o) in self.inputs.open_items.iter().zip(&self.items) {
            add(&mut s.items, o.category, i.open.money());
        }
        for (b, o) in self.inputs.settlements.iter().zip(&self.settlements) {
            add(&mut s.settlements, o.category, b.gross());
        }
        s.applications = self.applications.len() as u64;
        s.suggestions = self.suggestions.len() as u64;
        s.adjustments = self.adjustments.len() as u64;
        s
    }
}

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PState {
    Open,
    Timing,
    Returned(PaymentIdx),
    /// An ACH return that names no settlement: reported, never applied.
    OrphanReturn,
    Duplicate(PaymentIdx, Rule),
    CurrencyMismatch,
    Applied {
        rule: Rule,
        confidence: Confidence,
        unapplied: i64,
        fx_diff: i64,
    },
}

/// Splits remittance text into upper-cased tokens of letters, digits, `-`, `_`, `/`, `.`
/// (trimmed of those separators at either end), at least three characters long.
fn for_each_token(text: &str, buf: &mut String, mut f: impl FnMut(&str)) {
    let is_tok = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '.');
    for raw in text.split(|c: char| !is_tok(c)) {
        let tok = raw.trim_matches(|c: char| matches!(c, '-' | '_' | '/' | '.'));
        if tok.len() < 3 {
            continue;
        }
        if tok.bytes().any(|b| b.is_ascii_lowercase()) || !tok.is_ascii() {
            buf.clear();
            buf.extend(tok.chars().flat_map(char::to_uppercase));
            f(buf);
        } else {
            f(tok);
        }
    }
}

/// A 64-bit hash of `value` for the compact indexes (hits are always confirmed).
fn text_hash<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::BuildHasher;
    crate::hash::FxBuild::default().hash_one(value)
}

fn upper(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_lowercase()) || !s.is_ascii() {
        Cow::Owned(s.chars().flat_map(char::to_uppercase).collect())
    } else {
        Cow::Borrowed(s)
    }
}

type CustKey<'a> = (&'a str, &'a str);

/// Phase-1 output of the reference pass for a range of payments.
struct ReferenceScan {
    /// Duplicate key per payment of the range (0 when not a candidate).
    keys: Vec<u64>,
    /// (payment, item) pairs in payment order.
    hits: Vec<(PaymentIdx, ItemIdx)>,
}

struct Engine<'a> {
    cfg: &'a MatchConfig,
    pays: &'a [Payment],
    items: &'a [OpenItem],
    /// Current open amount per item (item currency).
    open: Vec<i64>,
    applied: Vec<i64>,
    fx_closed: Vec<bool>,
    item_fx_diff: Vec<i64>,
    eligible: Vec<bool>,
    last_payer: Vec<PaymentIdx>,
    state: Vec<PState>,
    apps: Vec<Application>,
    pay_apps: Vec<(u32, u32)>,
    pay_key: Vec<u32>,
    pay_cust: Vec<u32>,
    item_key: Vec<u32>,
    key_cust: Vec<u32>,
    key_currency: Vec<Currency>,
    key_range: Vec<(u32, u32)>,
    key_cursor: Vec<u32>,
    /// Per customer, its range of keys.
    cust_keys: Vec<(u32, u32)>,
    /// Hash of the upper-cased document number → first item; the chain holds every item
    /// with that hash (lookups compare the number itself).
    numbers: FxHashMap<u64, ItemIdx>,
    /// Whether every document number has a digit (then tokens without one are not looked up).
    numbers_have_digits: bool,
    next_same_number: Vec<ItemIdx>,
    amounts: FxHashMap<(u32, i64), ItemIdx>,
    next_same_amount: Vec<ItemIdx>,
    rates: FxHashMap<(Currency, Currency), Vec<(NaiveDate, usize)>>,
    rate_rows: &'a [crate::model::DatedRate],
    suggestions: Vec<Suggestion>,
    deferred_fx: Vec<(PaymentIdx, Vec<ItemIdx>)>,
}

/// The steps of a run, reported to the progress callback of [`reconcile_with_progress`] as
/// each one finishes (in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Inputs sorted into canonical order, ids checked unique.
    Sort,
    /// Per-customer ranges, document-number and amount indexes built.
    Index,
    /// Cut-off, ACH return pairing and duplicate detection.
    Screen,
    ReferencePass,
    ExactAmountPass,
    OldestFirstPass,
    SubsetPass,
    FxPass,
    /// Categories, settlements and proposed adjustments.
    Classify,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Sort => "sort",
            Phase::Index => "index",
            Phase::Screen => "screen",
            Phase::ReferencePass => "reference_pass",
            Phase::ExactAmountPass => "exact_amount_pass",
            Phase::OldestFirstPass => "oldest_first_pass",
            Phase::SubsetPass => "subset_pass",
            Phase::FxPass => "fx_pass",
            Phase::Classify => "classify",
        }
    }
}

/// Runs every pass over `inputs` and classifies every item.
pub fn reconcile(inputs: Inputs, config: &MatchConfig) -> Result<Reconciliation, ReconcileError> {
    reconcile_with_progress(inputs, config, &mut |_| {})
}

/// [`reconcile`], calling `progress` as each [`Phase`] finishes (for progress display and
/// timing; it cannot change the result).
pub fn reconcile_with_progress(
    mut inputs: Inputs,
    config: &MatchConfig,
    progress: &mut dyn FnMut(Phase),
) -> Result<Reconciliation, ReconcileError> {
    canonicalize(&mut inputs)?;
    progress(Phase::Sort);
    let (payments, items, applications, suggestions) = {
        let mut e = Engine::new(&inputs, config);
        progress(Phase::Index);
        e.cut_off();
        e.pair_returns();
        progress(Phase::Screen);
        e.pass_reference();
        progress(Phase::ReferencePass);
        e.pass_exact_amount();
        progress(Phase::ExactAmountPass);
        e.pass_oldest_first();
        progress(Phase::OldestFirstPass);
        e.pass_subset();
        progress(Phase::SubsetPass);
        e.pass_fx();
        progress(Phase::FxPass);
        let payments = e.payment_outcomes();
        let items = e.item_outcomes();
        (payments, items, e.apps, e.suggestions)
    };
    let (settlements, in_transit) = match_settlements(&inputs);
    let adjustments = adjustments(&inputs, &payments, &items, &applications);
    progress(Phase::Classify);
    Ok(Reconciliation {
        inputs,
        payments,
        items,
        settlements,
        applications,
        suggestions,
        in_transit,
        adjustments,
    })
}

/// The first 16 bytes of `s`, big-endian, zero-padded: comparing these compares the strings
/// lexicographically up to 16 bytes (identifiers hold no NUL), without touching the heap.
fn prefix(s: &str) -> u128 {
    let b = s.as_bytes();
    let mut word = [0u8; 16];
    let n = b.len().min(16);
    word[..n].copy_from_slice(&b[..n]);
    u128::from_be_bytes(word)
}

/// Reorders `v` in place so that `new[j] = old[order[j]]` (`order` is a permutation of its
/// indices), by following cycles with swaps: no second copy of the rows.
fn permute<T>(v: &mut [T], order: &[u32]) {
    let mut done = vec![false; v.len()];
    for i in 0..v.len() {
        if done[i] {
            continue;
        }
        let mut j = i;
        loop {
            done[j] = true;
            let k = order[j] as usize;
            if k == i {
                break;
            }
            v.swap(j, k);
            j = k;
        }
    }
}

/// Sorts every input by its natural key (unique ids last) and rejects duplicate ids.
///
/// Payments: (date, id). Open items: (entity, customer, currency, due date, date, number,
/// id). The sorts run on compact keys (dates and 16-byte string prefixes) and fall back to
/// the full strings only when those tie, so a million rows sort without chasing pointers.
fn canonicalize(inputs: &mut Inputs) -> Result<(), ReconcileError> {
    /// Ids sorted by (16-byte prefix, full id): equal neighbours are duplicates. Integer
    /// compares almost always decide, so this beats hashing a million strings.
    fn unique<'s>(
        ids: impl Iterator<Item = &'s str>,
        n: usize,
        kind: &'static str,
    ) -> Result<(), ReconcileError> {
        let mut keys: Vec<(u128, &str)> = Vec::with_capacity(n);
        keys.extend(ids.map(|id| (prefix(id), id)));
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        match keys
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
        {
            Some(w) => Err(ReconcileError::DuplicateId {
                kind,
                id: w[0].1.to_owned(),
            }),
            None => Ok(()),
        }
    }
    let pays = &inputs.payments;
    unique(pays.iter().map(|p| p.id.as_str()), pays.len(), "payment")?;
    let items = &inputs.open_items;
    unique(
        items.iter().map(|i| i.id.as_str()),
        items.len(),
        "open item",
    )?;
    unique(
        inputs.settlements.iter().map(|s| s.batch().as_str()),
        inputs.settlements.len(),
        "settlement batch",
    )?;

    let mut keys: Vec<(NaiveDate, u128, u32)> = pays
        .iter()
        .enumerate()
        .map(|(i, p)| (p.date, prefix(p.id.as_str()), idx(i)))
        .collect();
    keys.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| pays[a.2 as usize].id.cmp(&pays[b.2 as usize].id))
    });
    let order: Vec<u32> = keys.iter().map(|k| k.2).collect();
    drop(keys);
    permute(&mut inputs.payments, &order);

    type ItemKey = (u128, u128, [u8; 3], NaiveDate, NaiveDate, u128, u32);
    let mut keys: Vec<ItemKey> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let code = it.open.currency().code().as_bytes();
            (
                prefix(it.entity.as_str()),
                prefix(it.customer.as_str()),
                [code[0], code[1], code[2]],
                it.due_date,
                it.date,
                prefix(it.number.as_str()),
                idx(i),
            )
        })
        .collect();
    let full = |a: &OpenItem, b: &OpenItem| {
        (a.entity.as_str(), a.customer.as_str())
            .cmp(&(b.entity.as_str(), b.customer.as_str()))
            .then_with(|| a.number.cmp(&b.number))
            .then_with(|| a.id.cmp(&b.id))
    };
    keys.sort_unstable_by(|a, b| {
        (a.0, a.1, a.2, a.3, a.4, a.5)
            .cmp(&(b.0, b.1, b.2, b.3, b.4, b.5))
            .then_with(|| full(&items[a.6 as usize], &items[b.6 as usize]))
    });
    // Prefix ties on entity or customer can order longer strings out of place relative to
    // (due date, date): restore the exact order within runs of equal prefixes.
    let mut order: Vec<u32> = keys.iter().map(|k| k.6).collect();
    let mut start = 0;
    while start < keys.len() {
        let mut end = start + 1;
        while end < keys.len() && (keys[end].0, keys[end].1) == (keys[start].0, keys[start].1) {
            end += 1;
        }
        if end - start > 1 {
            let long = order[start..end].iter().any(|&i| {
                let it = &items[i as usize];
                it.entity.as_str().len() > 16 || it.customer.as_str().len() > 16
            });
            if long {
                order[start..end].sort_unstable_by(|&a, &b| {
                    let (x, y) = (&items[a as usize], &items[b as usize]);
                    (
                        x.entity.as_str(),
                        x.customer.as_str(),
                        x.open.currency().code(),
                    )
                        .cmp(&(
                            y.entity.as_str(),
                            y.customer.as_str(),
                            y.open.currency().code(),
                        ))
                        .then_with(|| (x.due_date, x.date).cmp(&(y.due_date, y.date)))
                        .then_with(|| x.number.cmp(&y.number))
                        .then_with(|| x.id.cmp(&y.id))
                });
            }
        }
        start = end;
    }
    drop(keys);
    permute(&mut inputs.open_items, &order);

    inputs
        .settlements
        .sort_unstable_by(|a, b| a.batch().cmp(b.batch()));
    inputs.rates.sort_unstable_by(|a, b| {
        (a.rate.from().code(), a.rate.to().code(), a.date).cmp(&(
            b.rate.from().code(),
            b.rate.to().code(),
            b.date,
        ))
    });
    if let Some(w) = inputs.rates.windows(2).find(|w| {
        (w[0].rate.from(), w[0].rate.to(), w[0].date)
            == (w[1].rate.from(), w[1].rate.to(), w[1].date)
    }) {
        return Err(ReconcileError::DuplicateId {
            kind: "rate",
            id: format!("{}/{} {}", w[0].rate.from(), w[0].rate.to(), w[0].date),
        });
    }
    Ok(())
}

fn idx(i: usize) -> u32 {
    // Inputs beyond u32::MAX - 1 rows are far outside the supported range (1M rows is the
    // benchmark); saturating keeps NONE distinct in practice.
    u32::try_from(i).unwrap_or(NONE - 1)
}

impl<'a> Engine<'a> {
    fn new(inputs: &'a Inputs, cfg: &'a MatchConfig) -> Engine<'a> {
        let pays = &inputs.payments[..];
        let items = &inputs.open_items[..];
        let n_items = items.len();
        let eligible: Vec<bool> = items
            .iter()
            .map(|i| cfg.period_end.is_none_or(|end| i.date <= end))
            .collect();
        // Per-(entity, customer, currency) contiguous ranges of the sorted items ("keys"); the
        // keys of one (entity, customer) are consecutive too ("customers").
        let mut key_range: Vec<(u32, u32)> = Vec::new();
        let mut key_cust: Vec<u32> = Vec::new();
        let mut key_currency: Vec<Currency> = Vec::new();
        let mut item_key: Vec<u32> = Vec::with_capacity(n_items);
        let mut cust_of: FxHashMap<CustKey<'a>, u32> = map_with_capacity(n_items / 4 + 1);
        let mut cust_keys: Vec<(u32, u32)> = Vec::new();
        let mut start = 0usize;
        while start < n_items {
            let it = &items[start];
            let cust: CustKey<'a> = (it.entity.as_str(), it.customer.as_str());
            let cur = it.open.currency();
            let mut end = start + 1;
            while end < n_items
                && items[end].open.currency() == cur
                && (items[end].entity.as_str(), items[end].customer.as_str()) == cust
            {
                end += 1;
            }
            let k = idx(key_range.len());
            let c = match cust_of.get(&cust) {
                Some(&c) => c,
                None => {
                    let c = idx(cust_keys.len());
                    cust_of.insert(cust, c);
                    cust_keys.push((k, k));
                    c
                }
            };
            cust_keys[c as usize].1 = k + 1;
            key_range.push((idx(start), idx(end)));
            key_cust.push(c);
            key_currency.push(cur);
            item_key.resize(end, k);
            start = end;
        }
        let key_cursor = key_range.iter().map(|r| r.0).collect();
        let mut pay_cust = Vec::with_capacity(pays.len());
        let mut pay_key = Vec::with_capacity(pays.len());
        for p in pays {
            let c = cust_of
                .get(&(p.entity.as_str(), p.customer.as_str()))
                .copied()
                .unwrap_or(NONE);
            let k = if c == NONE {
                NONE
            } else {
                let (a, b) = cust_keys[c as usize];
                (a..b)
                    .find(|&k| key_currency[k as usize] == p.amount.currency())
                    .unwrap_or(NONE)
            };
            pay_cust.push(c);
            pay_key.push(k);
        }
        // Document numbers (upper-cased) and (key, amount) indexes with chains through
        // equal entries, in item order (oldest first within a key).
        let mut numbers: FxHashMap<u64, ItemIdx> = map_with_capacity(n_items);
        let mut numbers_have_digits = true;
        let mut next_same_number = vec![NONE; n_items];
        // Customers with few open items are scanned in place (one or two cache lines of
        // `open`); only larger ranges get an (amount → items) index.
        let small_range = SMALL_KEY_RANGE.min(cfg.max_amount_candidates);
        let mut amounts: FxHashMap<(u32, i64), ItemIdx> = map_with_capacity(
            key_range
                .iter()
                .filter(|(s, e)| (e - s) as usize > small_range)
                .map(|(s, e)| (e - s) as usize)
                .sum(),
        );
        let mut next_same_amount = vec![NONE; n_items];
        for (k, &(s, e)) in key_range.iter().enumerate().rev() {
            for i in (s..e).rev() {
                let iu = i as usize;
                if !eligible[iu] {
                    continue;
                }
                let it = &items[iu];
                let number = upper(it.number.as_str());
                numbers_have_digits &= number.bytes().any(|b| b.is_ascii_digit());
                if let Some(prev) = numbers.insert(text_hash(&number), i) {
                    next_same_number[iu] = prev;
                }
                if it.kind == OpenItemKind::Invoice
                    && (e - s) as usize > small_range
                    && let Some(prev) = amounts.insert((idx(k), it.open.amount_minor()), i)
                {
                    next_same_amount[iu] = prev;
                }
            }
        }
        let mut rates: FxHashMap<(Currency, Currency), Vec<(NaiveDate, usize)>> =
            map_with_capacity(16);
        for (i, r) in inputs.rates.iter().enumerate() {
            rates
                .entry((r.rate.from(), r.rate.to()))
                .or_default()
                .push((r.date, i));
        }
        Engine {
            cfg,
            pays,
            items,
            open: items.iter().map(|i| i.open.amount_minor()).collect(),
            applied: vec![0; n_items],
            fx_closed: vec![false; n_items],
            item_fx_diff: vec![0; n_items],
            eligible,
            last_payer: vec![NONE; n_items],
            state: vec![PState::Open; pays.len()],
            apps: Vec::with_capacity(pays.len()),
            pay_apps: vec![(0, 0); pays.len()],
            pay_key,
            pay_cust,
            item_key,
            key_cust,
            key_currency,
            key_range,
            key_cursor,
            cust_keys,
            numbers,
            numbers_have_digits,
            next_same_number,
            amounts,
            next_same_amount,
            rates,
            rate_rows: &inputs.rates,
            suggestions: Vec::new(),
            deferred_fx: Vec::new(),
        }
    }

    fn is_open_invoice(&self, i: usize) -> bool {
        self.eligible[i] && self.open[i] > 0 && self.items[i].kind == OpenItemKind::Invoice
    }

    /// Payments that can still be applied: open and not a return.
    fn candidate(&self, p: usize) -> bool {
        self.state[p] == PState::Open && self.pays[p].source != PaymentSource::AchReturn
    }

    fn cut_off(&mut self) {
        if let Some(end) = self.cfg.period_end {
            for (p, pay) in self.pays.iter().enumerate() {
                if pay.date > end {
                    self.state[p] = PState::Timing;
                }
            }
        }
    }

    /// Pairs each ACH return with the ACH settlement whose id its reference names (same
    /// customer, currency and amount); unpaired returns are orphans.
    fn pair_returns(&mut self) {
        if !self
            .pays
            .iter()
            .any(|p| p.source == PaymentSource::AchReturn)
        {
            return;
        }
        let mut by_id: FxHashMap<&'a str, PaymentIdx> = map_with_capacity(0);
        for (p, pay) in self.pays.iter().enumerate() {
            if pay.source == PaymentSource::AchSettlement {
                by_id.insert(pay.id.as_str(), idx(p));
            }
        }
        for p in 0..self.pays.len() {
            let pay = &self.pays[p];
            if pay.source != PaymentSource::AchReturn || self.state[p] != PState::Open {
                continue;
            }
            // Payment ids are case-sensitive: look up the raw words of the reference.
            let found = pay
                .reference
                .as_str()
                .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '#'))
                .filter_map(|w| by_id.get(w.trim_end_matches('.')).copied())
                .find(|&o| {
                    let orig = &self.pays[o as usize];
                    self.state[o as usize] == PState::Open
                        && orig.entity == pay.entity
                        && orig.customer == pay.customer
                        && orig.amount == pay.amount
                });
            match found {
                Some(o) => {
                    self.state[p] = PState::Returned(o);
                    self.state[o as usize] = PState::Returned(idx(p));
                }
                None => self.state[p] = PState::OrphanReturn,
            }
        }
    }

    fn record(
        &mut self,
        p: usize,
        item: usize,
        (payment_amount_minor, item_amount_minor): (i64, i64),
        rule: Rule,
        confidence: Confidence,
        fx: Option<FxApplied>,
    ) {
        self.open[item] -= item_amount_minor;
        self.applied[item] += item_amount_minor;
        self.last_payer[item] = idx(p);
        if self.pay_apps[p].1 == 0 {
            self.pay_apps[p].0 = idx(self.apps.len());
        }
        self.pay_apps[p].1 += 1;
        self.apps.push(Application {
            payment: idx(p),
            item: idx(item),
            rule,
            confidence,
            payment_amount_minor,
            item_amount_minor,
            fx,
        });
    }

    /// Applies payment `p` over `items` (same currency, oldest first): a waterfall, or
    /// invoices and credit memos together when they net exactly to the payment.
    fn apply_same_currency(&mut self, p: usize, items: &[ItemIdx], rule: Rule, exact_conf: u8) {
        let amount = self.pays[p].amount.amount_minor();
        let (mut inv_total, mut cm_total, mut has_cm) = (0i128, 0i128, false);
        for &i in items {
            let i = i as usize;
            if self.open[i] <= 0 {
                continue;
            }
            match self.items[i].kind {
                OpenItemKind::Invoice => inv_total += i128::from(self.open[i]),
                OpenItemKind::CreditMemo => {
                    has_cm = true;
                    cm_total += i128::from(self.open[i]);
                }
            }
        }
        let conf = Confidence::of(exact_conf);
        if has_cm && inv_total - cm_total == i128::from(amount) {
            for &i in items {
                let i = i as usize;
                let o = self.open[i];
                if o <= 0 {
                    continue;
                }
                let signed = match self.items[i].kind {
                    OpenItemKind::Invoice => o,
                    OpenItemKind::CreditMemo => -o,
                };
                self.record(p, i, (signed, o), rule, conf, None);
            }
            self.state[p] = PState::Applied {
                rule,
                confidence: conf,
                unapplied: 0,
                fx_diff: 0,
            };
            return;
        }
        let conf = if inv_total == i128::from(amount) {
            conf
        } else {
            Confidence::of(exact_conf.saturating_sub(10))
        };
        let mut rem = amount;
        for &i in items {
            let i = i as usize;
            if rem == 0 {
                break;
            }
            if self.items[i].kind != OpenItemKind::Invoice || self.open[i] <= 0 {
                continue;
            }
            let take = rem.min(self.open[i]);
            rem -= take;
            self.record(p, i, (take, take), rule, conf, None);
        }
        self.state[p] = PState::Applied {
            rule,
            confidence: conf,
            unapplied: rem,
            fx_diff: 0,
        };
    }

    /// Duplicate keys and referenced items (same customer, sorted, deduplicated) of the
    /// payments in `range` that can still be applied. Reads only.
    fn reference_hits(&self, range: std::ops::Range<usize>) -> ReferenceScan {
        let mut out = ReferenceScan {
            keys: Vec::with_capacity(range.len()),
            hits: Vec::new(),
        };
        let mut buf = String::new();
        let mut hits: Vec<ItemIdx> = Vec::new();
        let max = self.cfg.max_reference_hits;
        let (numbers, next) = (&self.numbers, &self.next_same_number);
        let (item_key, key_cust, items) = (&self.item_key, &self.key_cust, self.items);
        let need_digit = self.numbers_have_digits;
        for p in range {
            let pay = &self.pays[p];
            if !self.candidate(p) || pay.reference.as_str().is_empty() {
                out.keys.push(0);
                continue;
            }
            out.keys.push(text_hash(&(
                pay.entity.as_str(),
                pay.customer.as_str(),
                pay.amount.money(),
                pay.date,
                pay.reference.as_str(),
            )));
            let cust = self.pay_cust[p];
            if cust == NONE {
                continue;
            }
            hits.clear();
            for_each_token(pay.reference.as_str(), &mut buf, |tok| {
                if need_digit && !tok.bytes().any(|b| b.is_ascii_digit()) {
                    return;
                }
                let mut i = numbers.get(&text_hash(tok)).copied().unwrap_or(NONE);
                while i != NONE && hits.len() < max {
                    if key_cust[item_key[i as usize] as usize] == cust
                        && upper(items[i as usize].number.as_str()) == tok
                    {
                        hits.push(i);
                    }
                    i = next[i as usize];
                }
            });
            hits.sort_unstable();
            hits.dedup();
            out.hits.extend(hits.iter().map(|&i| (idx(p), i)));
        }
        out
    }

    /// Pass 1: document numbers found in the reference text.
    ///
    /// Duplicates by key are caught here too, before a payment's reference is used: same
    /// entity, customer, amount, date and reference as an earlier payment (in payment order).
    fn pass_reference(&mut self) {
        // Phase 1 (read-only, both cores): each payment's duplicate key and referenced items.
        let n = self.pays.len();
        let mid = n / 2;
        let (mut scan, right) = std::thread::scope(|s| {
            let this = &*self;
            let right = s.spawn(move || this.reference_hits(mid..n));
            let left = this.reference_hits(0..mid);
            (left, right.join())
        });
        let right = right.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        scan.keys.extend(right.keys);
        scan.hits.extend(right.hits);
        // Phase 2 (in payment order): duplicates first, then apply.
        // Keyed by a hash of (entity, customer, amount, date, reference); a hit is confirmed
        // against the earlier payment's fields (a hash collision is then no duplicate).
        let mut first: FxHashMap<u64, PaymentIdx> = map_with_capacity(n);
        let same_key = |a: &Payment, b: &Payment| {
            a.amount == b.amount
                && a.date == b.date
                && a.reference == b.reference
                && a.customer == b.customer
                && a.entity == b.entity
        };
        let mut cursor = 0usize;
        let mut hits: Vec<ItemIdx> = Vec::new();
        for p in 0..n {
            hits.clear();
            while cursor < scan.hits.len() && scan.hits[cursor].0 as usize == p {
                hits.push(scan.hits[cursor].1);
                cursor += 1;
            }
            if !self.candidate(p) || self.pays[p].reference.as_str().is_empty() {
                continue;
            }
            let pay: &'a Payment = &self.pays[p];
            let key = scan.keys[p];
            match first.get(&key) {
                Some(&f) if same_key(&self.pays[f as usize], pay) => {
                    self.state[p] = PState::Duplicate(f, Rule::DuplicateKey);
                    continue;
                }
                Some(_) => {}
                None => {
                    first.insert(key, idx(p));
                }
            }
            if hits.is_empty() {
                continue;
            }
            let cur = pay.amount.currency();
            let same: Vec<ItemIdx> = hits
                .iter()
                .copied()
                .filter(|&i| self.items[i as usize].open.currency() == cur)
                .collect();
            if same.is_empty() {
                self.deferred_fx.push((idx(p), hits.clone()));
                continue;
            }
            let any_open = same.iter().any(|&i| self.open[i as usize] > 0);
            let invoices_closed = same
                .iter()
                .filter(|&&i| self.items[i as usize].kind == OpenItemKind::Invoice)
                .all(|&i| self.open[i as usize] == 0 && self.last_payer[i as usize] != NONE);
            let has_invoice = same
                .iter()
                .any(|&i| self.items[i as usize].kind == OpenItemKind::Invoice);
            if has_invoice && invoices_closed {
                let first = same
                    .iter()
                    .find(|&&i| self.items[i as usize].kind == OpenItemKind::Invoice)
                    .map_or(NONE, |&i| self.last_payer[i as usize]);
                self.state[p] = PState::Duplicate(first, Rule::DuplicateReference);
                continue;
            }
            if !any_open || !has_invoice {
                continue;
            }
            self.apply_same_currency(p, &same, Rule::ExactReference, 100);
        }
    }

    /// Pass 2: an open invoice of the same customer and currency with exactly this amount.
    fn pass_exact_amount(&mut self) {
        for p in 0..self.pays.len() {
            let k = self.pay_key[p];
            if k == NONE || !self.candidate(p) {
                continue;
            }
            let amount = self.pays[p].amount.amount_minor();
            let (s, e) = self.key_range[k as usize];
            let (mut chosen, mut others, mut steps) = (NONE, 0u32, 0usize);
            if (e - s) as usize <= SMALL_KEY_RANGE.min(self.cfg.max_amount_candidates) {
                // Same candidates, in the same order, as the index would give.
                for i in s..e {
                    let iu = i as usize;
                    let it = &self.items[iu];
                    if !self.eligible[iu]
                        || it.kind != OpenItemKind::Invoice
                        || it.open.amount_minor() != amount
                    {
                        continue;
                    }
                    if self.open[iu] == amount {
                        if chosen == NONE {
                            chosen = i;
                        } else {
                            others += 1;
                            break;
                        }
                    }
                }
            }
            let mut i = if chosen == NONE
                && others == 0
                && (e - s) as usize > SMALL_KEY_RANGE.min(self.cfg.max_amount_candidates)
            {
                self.amounts.get(&(k, amount)).copied().unwrap_or(NONE)
            } else {
                NONE
            };
            while i != NONE && steps < self.cfg.max_amount_candidates {
                steps += 1;
                if self.open[i as usize] == amount {
                    if chosen == NONE {
                        chosen = i;
                    } else {
                        others += 1;
                        break;
                    }
                }
                i = self.next_same_amount[i as usize];
            }
            if chosen != NONE {
                let conf = Confidence::of(if others == 0 { 90 } else { 75 });
                self.record(
                    p,
                    chosen as usize,
                    (amount, amount),
                    Rule::ExactAmount,
                    conf,
                    None,
                );
                self.state[p] = PState::Applied {
                    rule: Rule::ExactAmount,
                    confidence: conf,
                    unapplied: 0,
                    fx_diff: 0,
                };
            }
        }
    }

    /// The first item of key `k` that may still be open (skips the closed prefix).
    fn cursor(&mut self, k: usize) -> usize {
        let end = self.key_range[k].1 as usize;
        let mut c = self.key_cursor[k] as usize;
        while c < end && !self.is_open_invoice(c) {
            c += 1;
        }
        self.key_cursor[k] = idx(c);
        c
    }

    /// Pass 3: oldest-first allocation, accepted when exact, within tolerance, or paying
    /// every open invoice of the customer (over-payment).
    fn pass_oldest_first(&mut self) {
        let mut plan: Vec<(usize, i64)> = Vec::new();
        for p in 0..self.pays.len() {
            let k = self.pay_key[p];
            if k == NONE || !self.candidate(p) {
                continue;
            }
            let amount = self.pays[p].amount.amount_minor();
            let start = self.cursor(k as usize);
            let end = self.key_range[k as usize].1 as usize;
            plan.clear();
            let (mut rem, mut scanned, mut accepted, mut conf) = (amount, 0usize, false, 0u8);
            let mut exhausted = true;
            for i in start..end {
                if !self.is_open_invoice(i) {
                    continue;
                }
                scanned += 1;
                if scanned > self.cfg.waterfall_max_items {
                    exhausted = false;
                    break;
                }
                let o = self.open[i];
                if o <= rem {
                    plan.push((i, o));
                    rem -= o;
                    if rem == 0 {
                        accepted = true;
                        conf = 80;
                        exhausted = false;
                        break;
                    }
                } else {
                    exhausted = false;
                    if self.cfg.tolerance.allows(o - rem, o) {
                        plan.push((i, rem));
                        rem = 0;
                        accepted = true;
                        conf = 70;
                    }
                    break;
                }
            }
            if !accepted && exhausted && !plan.is_empty() {
                accepted = true;
                conf = 60;
            }
            if !accepted {
                continue;
            }
            let c = Confidence::of(conf);
            for &(i, take) in &plan {
                self.record(p, i, (take, take), Rule::OldestFirst, c, None);
            }
            self.state[p] = PState::Applied {
                rule: Rule::OldestFirst,
                confidence: c,
                unapplied: rem,
                fx_diff: 0,
            };
        }
    }

    /// Pass 4: bounded subset search; suggestions only.
    fn pass_subset(&mut self) {
        let lim = self.cfg.subset;
        if lim.max_items < 2 || lim.max_candidates < 2 {
            return;
        }
        let mut cands: Vec<(usize, i64)> = Vec::new();
        let mut chosen: Vec<usize> = Vec::new();
        for p in 0..self.pays.len() {
            let k = self.pay_key[p];
            if k == NONE || !self.candidate(p) {
                continue;
            }
            let amount = self.pays[p].amount.amount_minor();
            let start = self.cursor(k as usize);
            let end = self.key_range[k as usize].1 as usize;
            cands.clear();
            for i in start..end {
                if cands.len() >= lim.max_candidates {
                    break;
                }
                if self.is_open_invoice(i) && self.open[i] < amount {
                    cands.push((i, self.open[i]));
                }
            }
            if cands.len() < 2 {
                continue;
            }
            chosen.clear();
            let mut steps = 0u32;
            if subset_dfs(&cands, 0, amount, lim, &mut chosen, &mut steps) && chosen.len() >= 2 {
                self.suggestions.push(Suggestion {
                    payment: idx(p),
                    items: chosen.iter().map(|&j| idx(cands[j].0)).collect(),
                    sum_minor: amount,
                    rule: Rule::SubsetSum,
                    confidence: Confidence::of(50),
                });
            }
        }
    }

    /// The rate from `from` to `to` for `date`: the latest quoted on or before it within the
    /// age limit, directly or as the inverse of the opposite pair.
    fn rate_for(
        &self,
        from: Currency,
        to: Currency,
        date: NaiveDate,
    ) -> Option<(FxRate, NaiveDate)> {
        let oldest = date
            .checked_sub_days(Days::new(u64::from(self.cfg.fx_max_rate_age_days)))
            .unwrap_or(NaiveDate::MIN);
        let find = |pair: (Currency, Currency)| -> Option<(usize, NaiveDate)> {
            let v = self.rates.get(&pair)?;
            let n = v.partition_point(|(d, _)| *d <= date);
            let (d, i) = *v.get(n.checked_sub(1)?)?;
            (d >= oldest).then_some((i, d))
        };
        if let Some((i, d)) = find((from, to)) {
            return Some((self.rate_rows[i].rate.clone(), d));
        }
        let (i, d) = find((to, from))?;
        let inv = self.rate_rows[i]
            .rate
            .inverse(ledger::money::MAX_RATE_SCALE)
            .ok()?;
        Some((inv, d))
    }

    /// Converts an item-currency amount back to the payment currency.
    fn back(&self, back: &FxRate, item_minor: i64) -> i64 {
        Money::from_minor(item_minor, back.from())
            .convert(back, self.cfg.fx_rounding)
            .map_or(i64::MAX, |m| m.amount_minor())
    }

    /// Applies payment `p` cross-currency over `items` (one currency, oldest first).
    /// Returns false (nothing applied) if the conversion fails.
    fn apply_fx(
        &mut self,
        p: usize,
        items: &[ItemIdx],
        rate: &FxRate,
        rate_date: NaiveDate,
        rule: Rule,
        conf: u8,
    ) -> bool {
        let pay = self.pays[p].amount.money();
        let Ok(converted) = pay.convert(rate, self.cfg.fx_rounding) else {
            return false;
        };
        let Ok(back) = rate.inverse(ledger::money::MAX_RATE_SCALE) else {
            return false;
        };
        let open: Vec<usize> = items
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| self.is_open_invoice(i))
            .collect();
        if open.is_empty() {
            return false;
        }
        let c = converted.amount_minor();
        let total128: i128 = open.iter().map(|&i| i128::from(self.open[i])).sum();
        let total = i64::try_from(total128).unwrap_or(i64::MAX);
        let diff = i64::try_from(i128::from(c) - total128).unwrap_or(i64::MIN);
        let fx = FxApplied {
            rate: rate.rate(),
            rate_date,
        };
        let confidence = Confidence::of(conf);
        let amount = pay.amount_minor();
        let (mut item_cum, mut pay_cum) = (0i64, 0i64);
        if self.cfg.fx_tolerance.allows(diff, total) {
            for (n, &i) in open.iter().enumerate() {
                let o = self.open[i];
                item_cum += o;
                let next = if n + 1 == open.len() {
                    amount
                } else {
                    self.back(&back, item_cum).min(amount)
                };
                self.record(
                    p,
                    i,
                    (next - pay_cum, o),
                    rule,
                    confidence,
                    Some(fx.clone()),
                );
                pay_cum = next;
                self.fx_closed[i] = true;
            }
            if let Some(&last) = open.last() {
                self.item_fx_diff[last] = diff;
            }
            self.state[p] = PState::Applied {
                rule,
                confidence,
                unapplied: 0,
                fx_diff: diff,
            };
            return true;
        }
        let mut rem = c;
        for &i in &open {
            if rem == 0 {
                break;
            }
            let take = rem.min(self.open[i]);
            rem -= take;
            item_cum += take;
            let next = if rem == 0 {
                amount
            } else {
                self.back(&back, item_cum).min(amount)
            };
            self.record(
                p,
                i,
                (next - pay_cum, take),
                rule,
                confidence,
                Some(fx.clone()),
            );
            pay_cum = next;
        }
        self.state[p] = PState::Applied {
            rule,
            confidence,
            unapplied: amount - pay_cum,
            fx_diff: 0,
        };
        true
    }

    /// Pass 5: cross-currency, by reference and then by converted amount.
    fn pass_fx(&mut self) {
        let deferred = std::mem::take(&mut self.deferred_fx);
        for (p, hits) in &deferred {
            let p = *p as usize;
            if !self.candidate(p) {
                continue;
            }
            let pay = &self.pays[p];
            let Some(target) = hits
                .first()
                .map(|&i| self.items[i as usize].open.currency())
            else {
                continue;
            };
            let same: Vec<ItemIdx> = hits
                .iter()
                .copied()
                .filter(|&i| self.items[i as usize].open.currency() == target)
                .collect();
            match self.rate_for(pay.amount.currency(), target, pay.date) {
                None => self.state[p] = PState::CurrencyMismatch,
                Some((rate, d)) => {
                    self.apply_fx(p, &same, &rate, d, Rule::FxReference, 90);
                }
            }
        }
        let mut deferred_set = vec![false; self.pays.len()];
        for (p, _) in &deferred {
            deferred_set[*p as usize] = true;
        }
        for (p, &deferred) in deferred_set.iter().enumerate() {
            if deferred || !self.candidate(p) {
                continue;
            }
            let pay = &self.pays[p];
            let cur = pay.amount.currency();
            let cust = self.pay_cust[p];
            if cust == NONE {
                continue;
            }
            let (first_key, end_key) = self.cust_keys[cust as usize];
            let keys = first_key..end_key;
            let has_same = self.pay_key[p] != NONE;
            let mut other_currency = false;
            let mut any_rate = false;
            for k in keys {
                let e = self.key_range[k as usize].1;
                let target = self.key_currency[k as usize];
                if target == cur {
                    continue;
                }
                other_currency = true;
                let Some((rate, d)) = self.rate_for(cur, target, pay.date) else {
                    continue;
                };
                any_rate = true;
                let Ok(conv) = pay.amount.money().convert(&rate, self.cfg.fx_rounding) else {
                    continue;
                };
                let c = conv.amount_minor();
                let start = self.cursor(k as usize);
                let found = (start..e as usize)
                    .filter(|&i| self.is_open_invoice(i))
                    .take(self.cfg.waterfall_max_items)
                    .find(|&i| self.cfg.fx_tolerance.allows(c - self.open[i], self.open[i]));
                if let Some(i) = found
                    && self.apply_fx(p, &[idx(i)], &rate, d, Rule::FxAmount, 70)
                {
                    break;
                }
            }
            if other_currency && !any_rate && !has_same {
                self.state[p] = PState::CurrencyMismatch;
            }
        }
    }

    fn item_residual_category(&self, i: usize) -> Category {
        let o = self.open[i];
        if !self.eligible[i] {
            Category::Timing
        } else if self.fx_closed[i] {
            if self.item_fx_diff[i] != 0 {
                Category::FxDifference
            } else {
                Category::Matched
            }
        } else if self.applied[i] == 0 {
            Category::UnmatchedInvoice
        } else if o == 0 {
            Category::Matched
        } else if self
            .cfg
            .tolerance
            .allows(o, self.items[i].open.amount_minor())
        {
            Category::PartialWithinTolerance
        } else {
            Category::PartialBeyondTolerance
        }
    }

    fn payment_outcomes(&self) -> Vec<PaymentOutcome> {
        (0..self.pays.len())
            .map(|p| {
                let (first, count) = self.pay_apps[p];
                let mut o = PaymentOutcome {
                    category: Category::UnmatchedPayment,
                    rule: None,
                    confidence: Confidence(0),
                    applied_minor: 0,
                    unapplied_minor: 0,
                    fx_difference_minor: 0,
                    related: None,
                    first_application: first,
                    application_count: count,
                };
                match self.state[p] {
                    PState::Open | PState::OrphanReturn => {}
                    PState::Timing => o.category = Category::Timing,
                    PState::Returned(other) => {
                        o.category = Category::Returned;
                        o.rule = Some(Rule::AchReturn);
                        o.confidence = Confidence(95);
                        o.related = Some(other);
                    }
                    PState::Duplicate(of, rule) => {
                        o.category = Category::DuplicatePayment;
                        o.rule = Some(rule);
                        o.confidence = Confidence(if rule == Rule::DuplicateKey { 90 } else { 80 });
                        o.related = (of != NONE).then_some(of);
                    }
                    PState::CurrencyMismatch => o.category = Category::CurrencyMismatch,
                    PState::Applied {
                        rule,
                        confidence,
                        unapplied,
                        fx_diff,
                    } => {
                        o.rule = Some(rule);
                        o.confidence = confidence;
                        o.unapplied_minor = unapplied;
                        o.applied_minor = self.pays[p].amount.amount_minor() - unapplied;
                        o.fx_difference_minor = fx_diff;
                        o.category = if unapplied > 0 {
                            Category::OverPayment
                        } else if fx_diff != 0 {
                            Category::FxDifference
                        } else {
                            let apps = &self.apps[first as usize..(first + count) as usize];
                            let mut c = Category::Matched;
                            for a in apps {
                                match self.item_residual_category(a.item as usize) {
                                    Category::PartialBeyondTolerance => {
                                        c = Category::PartialBeyondTolerance;
                                    }
                                    Category::PartialWithinTolerance if c == Category::Matched => {
                                        c = Category::PartialWithinTolerance;
                                    }
                                    _ => {}
                                }
                            }
                            c
                        };
                    }
                }
                o
            })
            .collect()
    }

    fn item_outcomes(&self) -> Vec<ItemOutcome> {
        (0..self.items.len())
            .map(|i| ItemOutcome {
                category: self.item_residual_category(i),
                applied_minor: self.applied[i],
                residual_minor: self.open[i],
                fx_difference_minor: self.item_fx_diff[i],
            })
            .collect()
    }
}

/// Depth-first search for a combination of `cands` (oldest first) summing exactly to
/// `target`, at most `lim.max_items` long, within `lim.max_steps` steps.
fn subset_dfs(
    cands: &[(usize, i64)],
    start: usize,
    target: i64,
    lim: SubsetLimits,
    chosen: &mut Vec<usize>,
    steps: &mut u32,
) -> bool {
    for j in start..cands.len() {
        *steps += 1;
        if *steps > lim.max_steps {
            return false;
        }
        let a = cands[j].1;
        if a > target {
            continue;
        }
        chosen.push(j);
        if a == target {
            return true;
        }
        if chosen.len() < lim.max_items && subset_dfs(cands, j + 1, target - a, lim, chosen, steps)
        {
            return true;
        }
        chosen.pop();
    }
    false
}

/// Captures per processor batch against the deposits.
fn match_settlements(inputs: &Inputs) -> (Vec<SettlementOutcome>, Vec<PaymentIdx>) {
    let settlements: &[SettlementBatch] = &inputs.settlements;
    let mut by_batch: FxHashMap<&str, usize> = map_with_capacity(settlements.len());
    for (i, s) in settlements.iter().enumerate() {
        by_batch.insert(s.batch().as_str(), i);
    }
    let mut out: Vec<SettlementOutcome> = settlements
        .iter()
        .map(|_| SettlementOutcome {
            category: Category::UnmatchedSettlement,
            captures: Vec::new(),
            captured_minor: 0,
            difference_minor: 0,
        })
        .collect();
    let mut sums = vec![(0i128, false); settlements.len()];
    let mut in_transit = Vec::new();
    for (p, pay) in inputs.payments.iter().enumerate() {
        let Some(batch) = &pay.batch else { continue };
        let sign: i128 = match pay.source {
            PaymentSource::GatewayCapture | PaymentSource::AchSettlement => 1,
            PaymentSource::AchReturn => -1,
            PaymentSource::SageReceipt => continue,
        };
        match by_batch.get(batch.as_str()) {
            Some(&s) => {
                out[s].captures.push(idx(p));
                if pay.amount.currency() == settlements[s].currency() {
                    sums[s].0 += sign * i128::from(pay.amount.amount_minor());
                } else {
                    sums[s].1 = true;
                }
            }
            None => in_transit.push(idx(p)),
        }
    }
    for ((o, s), (sum, foreign)) in out.iter_mut().zip(settlements).zip(sums) {
        if o.captures.is_empty() {
            continue;
        }
        let sum = i64::try_from(sum).unwrap_or(i64::MAX);
        o.captured_minor = sum;
        o.difference_minor = sum.saturating_sub(s.gross().amount_minor());
        o.category = if o.difference_minor == 0 && !foreign {
            Category::Matched
        } else {
            Category::SettlementDifference
        };
    }
    (out, in_transit)
}

fn adjustments(
    inputs: &Inputs,
    payments: &[PaymentOutcome],
    items: &[ItemOutcome],
    apps: &[Application],
) -> Vec<Adjustment> {
    let mut out = Vec::new();
    for (i, (it, o)) in inputs.open_items.iter().zip(items).enumerate() {
        if o.category == Category::PartialWithinTolerance {
            out.push(Adjustment::WriteOff {
                item: idx(i),
                amount_minor: o.residual_minor,
                currency: it.open.currency(),
            });
        }
    }
    for (p, (pay, o)) in inputs.payments.iter().zip(payments).enumerate() {
        if o.fx_difference_minor != 0 {
            let first = o.first_application as usize;
            if let Some(last) = apps[first..first + o.application_count as usize].last() {
                out.push(Adjustment::FxGainLoss {
                    payment: idx(p),
                    item: last.item,
                    amount_minor: o.fx_difference_minor,
                    currency: inputs.open_items[last.item as usize].open.currency(),
                });
            }
        }
        if o.category == Category::OverPayment {
            out.push(Adjustment::UnappliedCash {
                payment: idx(p),
                amount_minor: o.unapplied_minor,
                currency: pay.amount.currency(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_absolute_or_percent() {
        let t = Tolerance {
            absolute_minor: 100,
            percent_bp: 50,
        };
        assert!(t.allows(100, 1));
        assert!(t.allows(-100, 1));
        assert!(!t.allows(101, 1000));
        // 0.5% of 100,000 = 500.
        assert!(t.allows(500, 100_000));
        assert!(!t.allows(501, 100_000));
        assert!(Tolerance::ZERO.allows(0, 5));
        assert!(!Tolerance::ZERO.allows(1, 5));
    }

    #[test]
    fn tokens() {
        let mut buf = String::new();
        let mut got = Vec::new();
        for_each_token("Pay inv-0012, INV-0013. #INV/7; ok x", &mut buf, |t| {
            got.push(t.to_owned())
        });
        assert_eq!(got, ["PAY", "INV-0012", "INV-0013", "INV/7"]);
    }

    #[test]
    fn subset_finds_exact_combination() {
        let lim = SubsetLimits {
            max_candidates: 10,
            max_items: 3,
            max_steps: 1000,
        };
        let cands = [(0, 500), (1, 300), (2, 250), (3, 200)];
        let mut chosen = Vec::new();
        let mut steps = 0;
        assert!(subset_dfs(&cands, 0, 750, lim, &mut chosen, &mut steps));
        assert_eq!(chosen, [0, 2]);
        chosen.clear();
        steps = 0;
        assert!(!subset_dfs(&cands, 0, 1_300, lim, &mut chosen, &mut steps));
    }
}
