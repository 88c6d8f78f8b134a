//! The reconciliation inputs: payments, AR open items, processor settlement batches and FX
//! rates. Every type is built by parsing, so a value that exists is valid: amounts are
//! integer minor units of a known currency ([`ledger::Money`]), payment and open amounts are
//! positive, a settlement's net is its gross less its fees, identifiers are non-empty,
//! bounded and free of control characters.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use ledger::{Currency, FxRate, Money};
use serde::Serialize;

/// Why a value could not become a model type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains a control character")]
    ControlCharacter,
    #[error("has leading or trailing whitespace")]
    Whitespace,
    #[error("must be greater than zero (got {0})")]
    NotPositive(Money),
    #[error("must not be negative (got {0})")]
    Negative(Money),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("net {net} is not gross {gross} less fees {fees}")]
    NetMismatch {
        gross: Money,
        fees: Money,
        net: Money,
    },
    #[error("unknown {what} \"{value}\": expected one of {expected}")]
    UnknownVariant {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn check_code(value: &str, max: usize) -> Result<(), ModelError> {
    if value.is_empty() {
        return Err(ModelError::Empty);
    }
    if value.len() > max {
        return Err(ModelError::TooLong { max });
    }
    if value.trim() != value {
        return Err(ModelError::Whitespace);
    }
    if value.chars().any(char::is_control) {
        return Err(ModelError::ControlCharacter);
    }
    Ok(())
}

/// Declares an identifier newtype: non-empty, at most `max` bytes, no surrounding
/// whitespace, no control characters. `$inner` is `Box<str>` for unique ids and `Arc<str>`
/// for values repeated across many rows (entities, customers), which the importer interns.
macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name($inner);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(value: &str) -> Result<Self, ModelError> {
                check_code(value, Self::MAX_LEN)?;
                Ok(Self(<$inner>::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

code_type!(
    /// A payment's id in its source (gateway payment id, ACH trace, Sage RECORDNO).
    PaymentId, Box<str>, max = 64
);
code_type!(
    /// An open item's id in Sage (RECORDNO or key).
    OpenItemId, Box<str>, max = 64
);
code_type!(
    /// A document number as customers quote it in remittance text ("INV-000123").
    DocumentNumber, Box<str>, max = 64
);
code_type!(
    /// The bank deposit a processor settlement arrived as.
    DepositId, Box<str>, max = 64
);
code_type!(
    /// The processor's settlement batch id, carried by captures and by the deposit.
    BatchId, Box<str>, max = 64
);
code_type!(
    /// Sage Intacct entity (location) code.
    EntityCode, Arc<str>, max = 64
);
code_type!(
    /// Customer id shared by Salesforce and Sage.
    CustomerId, Arc<str>, max = 64
);

impl EntityCode {
    /// Shares an already-parsed code's storage (used by the importer's interner).
    pub(crate) fn from_shared(value: Arc<str>) -> Self {
        Self(value)
    }
}

impl CustomerId {
    /// Shares an already-parsed id's storage (used by the importer's interner).
    pub(crate) fn from_shared(value: Arc<str>) -> Self {
        Self(value)
    }
}

/// Free remittance text / payment reference: may be empty, at most 1,024 bytes; line breaks
/// and tabs become spaces, other control characters are refused; surrounding whitespace is
/// trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Reference(Box<str>);

impl Reference {
    pub const MAX_LEN: usize = 1024;

    pub fn parse(value: &str) -> Result<Self, ModelError> {
        if value.len() > Self::MAX_LEN {
            return Err(ModelError::TooLong { max: Self::MAX_LEN });
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ModelError::ControlCharacter);
        }
        let trimmed = value.trim();
        if trimmed.contains(['\n', '\r', '\t']) {
            Ok(Self(trimmed.replace(['\n', '\r', '\t'], " ").into()))
        } else {
            Ok(Self(trimmed.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A strictly positive amount of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct PositiveMoney(Money);

impl PositiveMoney {
    pub fn new(money: Money) -> Result<Self, ModelError> {
        if money.is_positive() {
            Ok(Self(money))
        } else {
            Err(ModelError::NotPositive(money))
        }
    }

    pub fn money(&self) -> Money {
        self.0
    }

    pub fn amount_minor(&self) -> i64 {
        self.0.amount_minor()
    }

    pub fn currency(&self) -> Currency {
        self.0.currency()
    }
}

impl From<PositiveMoney> for String {
    fn from(m: PositiveMoney) -> String {
        m.0.to_string()
    }
}

macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident, what = $what:expr, { $($(#[$vdoc:meta])* $variant:ident = $text:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Result<Self, ModelError> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ModelError::UnknownVariant {
                        what: $what,
                        value: value.chars().take(64).collect(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

name_enum!(
    /// Where a payment record comes from.
    PaymentSource, what = "payment source", {
        /// A card capture by the gateway (settles in a processor batch).
        GatewayCapture = "gateway_capture",
        /// An ACH debit that settled.
        AchSettlement = "ach_settlement",
        /// An ACH return: money going back out. Its reference names the returned payment.
        AchReturn = "ach_return",
        /// A receipt recorded directly in Sage Intacct (check, wire, lockbox).
        SageReceipt = "sage_receipt",
    }
);

name_enum!(
    /// The kind of an AR open item.
    OpenItemKind, what = "open item kind", {
        Invoice = "invoice",
        /// A credit the customer holds against invoices.
        CreditMemo = "credit_memo",
    }
);

/// Money received (or, for an ACH return, sent back) for a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub entity: EntityCode,
    pub customer: CustomerId,
    /// Amount and currency; positive for every source (an ACH return's direction is its source).
    pub amount: PositiveMoney,
    pub date: NaiveDate,
    /// Payment reference / remittance text, searched for document numbers.
    pub reference: Reference,
    pub source: PaymentSource,
    /// The processor's settlement batch, for captures and ACH items.
    pub batch: Option<BatchId>,
}

/// An AR open item (invoice or credit memo) with its open amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenItem {
    pub id: OpenItemId,
    pub number: DocumentNumber,
    pub kind: OpenItemKind,
    pub entity: EntityCode,
    pub customer: CustomerId,
    /// Amount still open, in the item's currency.
    pub open: PositiveMoney,
    pub date: NaiveDate,
    pub due_date: NaiveDate,
}

/// A processor payout: the captures of one batch, less fees, deposited as one amount.
/// Built only by [`SettlementBatch::new`], which checks `net = gross - fees` in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementBatch {
    deposit: DepositId,
    batch: BatchId,
    date: NaiveDate,
    gross: Money,
    fees: Money,
    net: Money,
}

impl SettlementBatch {
    pub fn new(
        deposit: DepositId,
        batch: BatchId,
        date: NaiveDate,
        gross: Money,
        fees: Money,
        net: Money,
    ) -> Result<Self, ModelError> {
        for other in [fees, net] {
            if other.currency() != gross.currency() {
                return Err(ModelError::CurrencyMismatch(
                    gross.currency(),
                    other.currency(),
                ));
            }
        }
        if gross.is_negative() {
            return Err(ModelError::Negative(gross));
        }
        if fees.is_negative() {
            return Err(ModelError::Negative(fees));
        }
        if gross.checked_sub(fees) != Ok(net) {
            return Err(ModelError::NetMismatch { gross, fees, net });
        }
        Ok(Self {
            deposit,
            batch,
            date,
            gross,
            fees,
            net,
        })
    }

    pub fn deposit(&self) -> &DepositId {
        &self.deposit
    }
    pub fn batch(&self) -> &BatchId {
        &self.batch
    }
    pub fn date(&self) -> NaiveDate {
        self.date
    }
    pub fn currency(&self) -> Currency {
        self.gross.currency()
    }
    pub fn gross(&self) -> Money {
        self.gross
    }
    pub fn fees(&self) -> Money {
        self.fees
    }
    pub fn net(&self) -> Money {
        self.net
    }
}

/// An exchange rate valid from a date (1 `from` = `rate` `to`, exact decimal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatedRate {
    pub date: NaiveDate,
    pub rate: FxRate,
}

/// Everything one run reconciles. Order does not matter: the engine sorts by natural keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    pub payments: Vec<Payment>,
    pub open_items: Vec<OpenItem>,
    pub settlements: Vec<SettlementBatch>,
    pub rates: Vec<DatedRate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reject_bad_text() {
        assert_eq!(CustomerId::parse(""), Err(ModelError::Empty));
        assert_eq!(CustomerId::parse(" C1"), Err(ModelError::Whitespace));
        assert_eq!(
            CustomerId::parse("C\u{7}1"),
            Err(ModelError::ControlCharacter)
        );
        assert_eq!(
            PaymentId::parse(&"x".repeat(65)),
            Err(ModelError::TooLong { max: 64 })
        );
        assert_eq!(
            CustomerId::parse("C-1").map(|c| c.to_string()),
            Ok("C-1".into())
        );
    }

    #[test]
    fn settlement_net_must_be_gross_less_fees() {
        let usd = Currency::parse("USD").expect("usd");
        let m = |v| Money::from_minor(v, usd);
        let date = NaiveDate::from_ymd_opt(2026, 10, 1).expect("date");
        let dep = || DepositId::parse("D1").expect("id");
        let b = || BatchId::parse("B1").expect("id");
        assert!(SettlementBatch::new(dep(), b(), date, m(1000), m(30), m(970)).is_ok());
        assert!(matches!(
            SettlementBatch::new(dep(), b(), date, m(1000), m(30), m(971)),
            Err(ModelError::NetMismatch { .. })
        ));
        assert!(matches!(
            SettlementBatch::new(dep(), b(), date, m(1000), m(-1), m(1001)),
            Err(ModelError::Negative(_))
        ));
    }

    #[test]
    fn positive_money() {
        let usd = Currency::parse("USD").expect("usd");
        assert!(PositiveMoney::new(Money::from_minor(0, usd)).is_err());
        assert!(PositiveMoney::new(Money::from_minor(-5, usd)).is_err());
        assert_eq!(
            PositiveMoney::new(Money::from_minor(5, usd)).map(|m| m.amount_minor()),
            Ok(5)
        );
    }

    #[test]
    fn enums_round_trip() {
        for s in PaymentSource::ALL {
            assert_eq!(PaymentSource::parse(s.as_str()), Ok(*s));
        }
        assert!(PaymentSource::parse("cash").is_err());
    }
}
