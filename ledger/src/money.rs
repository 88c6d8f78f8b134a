//! Money primitives for the ledger: ISO 4217 currencies with a defined minor
//! unit, exact integer amounts in minor units, exact decimal parsing and
//! formatting, FX rates and named rounding modes.
//!
//! Amounts are `i64` minor units and never floating point; every operation
//! that can overflow or mix currencies returns a [`MoneyError`] instead of
//! panicking or silently wrapping.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest amount/code text echoed back inside an error, so a hostile input
/// cannot blow up logs or API responses.
const MAX_ECHO_CHARS: usize = 64;

/// Longest amount string accepted at all. `i64` minor units need at most 21
/// characters; the slack allows some leading zeros.
const MAX_AMOUNT_LEN: usize = 64;

/// Most fractional digits an [`FxRate`] may carry.
pub const MAX_RATE_SCALE: u32 = 12;

/// Errors produced by money parsing and arithmetic.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum MoneyError {
    #[error(
        "unknown currency code \"{0}\": expected a 3-letter uppercase ISO 4217 code such as \"USD\""
    )]
    UnknownCurrency(String),
    #[error("currency {0} has no defined minor unit and cannot be used for amounts")]
    NoMinorUnit(String),
    #[error("invalid amount \"{input}\": {reason}")]
    InvalidAmount { input: String, reason: &'static str },
    #[error("{}", scale_message(.input, .currency, *.max_scale))]
    ScaleTooLarge {
        input: String,
        currency: &'static str,
        max_scale: u32,
    },
    #[error("amount is outside the supported range (64-bit minor units)")]
    Overflow,
    #[error("currency mismatch: {left} and {right} cannot be combined")]
    CurrencyMismatch {
        left: &'static str,
        right: &'static str,
    },
    #[error("invalid exchange rate: {0}")]
    InvalidRate(String),
}

impl MoneyError {
    /// Stable machine-readable code for API responses and logs.
    pub fn code(&self) -> &'static str {
        match self {
            // To a client an unusable code is as good as an unknown one; the
            // message still tells the two apart.
            Self::UnknownCurrency(_) | Self::NoMinorUnit(_) => "unknown_currency",
            Self::InvalidAmount { .. } => "invalid_amount",
            Self::ScaleTooLarge { .. } => "invalid_amount_scale",
            Self::Overflow => "amount_overflow",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
            Self::InvalidRate(_) => "invalid_rate",
        }
    }
}

fn scale_message(input: &str, currency: &str, max_scale: u32) -> String {
    let places = input.split_once('.').map_or(0, |(_, frac)| frac.len());
    let noun = if places == 1 { "place" } else { "places" };
    if max_scale == 0 {
        format!("amount \"{input}\" has {places} decimal {noun} but {currency} has no minor unit")
    } else {
        format!(
            "amount \"{input}\" has {places} decimal {noun} but {currency} allows at most {max_scale}"
        )
    }
}

/// Copy of `s` safe to embed in an error message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------

/// ISO 4217 currency that has a defined minor unit (exponent).
///
/// Ordered by code. Serialized as the code string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an ISO 4217 alphabetic code. Only exactly three ASCII uppercase
    /// letters are accepted, and the currency must have a minor unit
    /// (metals, SDR, test and "no currency" codes are rejected).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        // iso_currency is already case-sensitive, but checking the shape
        // here keeps the accepted grammar explicit and independent of it.
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(MoneyError::UnknownCurrency(clip(code)));
        }
        let iso = iso_currency::Currency::from_code(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))?;
        Self::from_iso(iso).ok_or_else(|| MoneyError::NoMinorUnit(code.to_owned()))
    }

    /// The only constructor: enforces the "has a minor unit" invariant.
    fn from_iso(iso: iso_currency::Currency) -> Option<Currency> {
        iso.exponent().map(|_| Currency(iso))
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Number of fractional digits: JPY 0, USD 2, BHD 3, CLF 4.
    pub fn exponent(&self) -> u32 {
        // `from_iso` guarantees `Some`; the fallback is unreachable.
        self.0.exponent().map_or(0, u32::from)
    }

    /// Every ISO currency with a minor unit, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        static ALL: OnceLock<Vec<Currency>> = OnceLock::new();
        ALL.get_or_init(|| {
            // iso_currency only offers iteration behind its optional
            // `iterator` feature; numeric codes are unique and all < 1000,
            // so scanning them enumerates every variant.
            let mut all: Vec<Currency> = (0..1000u16)
                .filter_map(iso_currency::Currency::from_numeric)
                .filter_map(Currency::from_iso)
                .collect();
            all.sort();
            all
        })
        .iter()
        .copied()
    }

    /// Ten to the power of the exponent, i.e. minor units per major unit.
    fn minor_per_major(&self) -> i64 {
        // Exponents in ISO 4217 are at most 4, far below i64's 18.
        10i64.pow(self.exponent())
    }
}

impl PartialOrd for Currency {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Currency {
    fn cmp(&self, other: &Self) -> Ordering {
        // The underlying enum orders by declaration; the contract is by code.
        self.code().cmp(other.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = Currency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code such as \"USD\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Currency, E> {
                Currency::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CodeVisitor)
    }
}

// ---------------------------------------------------------------------------
// Decimal text grammar shared by amounts and rates
// ---------------------------------------------------------------------------

/// `-?digits(.digits)?`, split into its pieces. Digits are ASCII only.
struct DecimalText<'a> {
    negative: bool,
    int: &'a str,
    frac: Option<&'a str>,
}

fn split_decimal(s: &str) -> Result<DecimalText<'_>, &'static str> {
    if s.is_empty() {
        return Err("value is empty");
    }
    if s.len() > MAX_AMOUNT_LEN {
        return Err("value is too long");
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (body, None),
    };
    // Classify the first bad character so the message says what to fix.
    if let Some(bad) = int
        .chars()
        .chain(frac.unwrap_or("").chars())
        .find(|c| !c.is_ascii_digit())
    {
        return Err(match bad {
            '+' if s.starts_with('+') => "a leading '+' is not allowed",
            '+' | '-' => "only a single leading '-' sign is allowed",
            c if c.is_whitespace() => "whitespace is not allowed",
            'e' | 'E' => "exponent notation is not allowed",
            ',' | '_' | '\'' => "thousands separators are not allowed",
            '.' => "more than one decimal point",
            _ => "only digits, one '.' and a leading '-' are allowed",
        });
    }
    if int.is_empty() {
        return Err("expected at least one digit before the decimal point");
    }
    if frac == Some("") {
        return Err("a decimal point must be followed by at least one digit");
    }
    Ok(DecimalText {
        negative,
        int,
        frac,
    })
}

/// Accumulates ASCII digits into an i128; `None` on overflow.
fn digits_value(digits: &str) -> Option<i128> {
    digits.bytes().try_fold(0i128, |acc, b| {
        acc.checked_mul(10)?.checked_add(i128::from(b - b'0'))
    })
}

/// `n / d` rounded to an integer with `mode`. `d` must be positive.
///
/// Done on exact integers rather than via `Decimal` multiplication, which
/// silently rounds products wider than 96 bits and would double-round.
fn div_round(n: i128, d: i128, mode: Rounding) -> i128 {
    let q = n / d;
    let r = n % d;
    if r == 0 {
        return q;
    }
    // Direction away from zero for the true (non-integer) quotient.
    let away = if n < 0 { q - 1 } else { q + 1 };
    let r_abs = r.abs();
    // Compare the remainder with half the divisor without computing 2*r.
    let vs_half = r_abs.cmp(&(d - r_abs));
    match mode {
        Rounding::TowardZero => q,
        Rounding::AwayFromZero => away,
        Rounding::Floor => {
            if n < 0 {
                away
            } else {
                q
            }
        }
        Rounding::Ceiling => {
            if n > 0 {
                away
            } else {
                q
            }
        }
        Rounding::HalfUp => match vs_half {
            Ordering::Less => q,
            Ordering::Equal | Ordering::Greater => away,
        },
        Rounding::HalfDown => match vs_half {
            Ordering::Less | Ordering::Equal => q,
            Ordering::Greater => away,
        },
        Rounding::HalfEven => match vs_half {
            Ordering::Less => q,
            Ordering::Equal if q % 2 == 0 => q,
            Ordering::Equal | Ordering::Greater => away,
        },
    }
}

fn pow10_i128(exp: u32) -> Result<i128, MoneyError> {
    10i128.checked_pow(exp).ok_or(MoneyError::Overflow)
}

// ---------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------

/// An exact amount: integer minor units of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    pub const fn from_minor(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money::from_minor(0, currency)
    }

    pub const fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// Exact decimal string to money: `-?digits(.digits)?` with at most the
    /// currency's exponent of fractional digits.
    ///
    /// More fractional digits than the exponent are rejected even when they
    /// are zeros ("10.000" USD): the rule is exact scale, so nothing upstream
    /// can hand us a value with hidden precision.
    pub fn parse_decimal(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let text = split_decimal(amount).map_err(|reason| MoneyError::InvalidAmount {
            input: clip(amount),
            reason,
        })?;
        let exponent = currency.exponent();
        let frac = text.frac.unwrap_or("");
        let frac_len = u32::try_from(frac.len()).unwrap_or(u32::MAX);
        if frac_len > exponent {
            return Err(MoneyError::ScaleTooLarge {
                input: amount.to_owned(),
                currency: currency.code(),
                max_scale: exponent,
            });
        }
        // Parsing int and fraction as one digit run gives the value scaled by
        // 10^frac_len; pad the rest of the way to minor units.
        let magnitude = digits_value(text.int)
            .and_then(|int| {
                let scaled = int.checked_mul(10i128.checked_pow(frac_len)?)?;
                scaled.checked_add(digits_value(frac)?)
            })
            .and_then(|v| v.checked_mul(10i128.checked_pow(exponent - frac_len)?))
            .ok_or(MoneyError::Overflow)?;
        let signed = if text.negative { -magnitude } else { magnitude };
        let amount_minor = i64::try_from(signed).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::from_minor(amount_minor, currency))
    }

    /// Parses `"<amount> <CODE>"`, e.g. `"10.00 USD"` (exactly one space).
    pub fn parse(s: &str) -> Result<Money, MoneyError> {
        let Some((amount, code)) = s.split_once(' ') else {
            return Err(MoneyError::InvalidAmount {
                input: clip(s),
                reason: "expected an amount and a currency code separated by one space, e.g. \"10.00 USD\"",
            });
        };
        let currency = Currency::parse(code)?;
        Money::parse_decimal(amount, currency)
    }

    /// The amount with exactly `exponent` fractional digits: "10.00",
    /// "-0.05", "100" (JPY), "1.000" (BHD). Inverse of [`Money::parse_decimal`].
    pub fn format_amount(&self) -> String {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        // unsigned_abs so i64::MIN formats instead of overflowing.
        let abs = self.amount_minor.unsigned_abs();
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return format!("{sign}{abs}");
        }
        let per_major = self.currency.minor_per_major().unsigned_abs();
        let width = usize::try_from(exponent).unwrap_or(0);
        format!(
            "{sign}{}.{:0width$}",
            abs / per_major,
            abs % per_major,
            width = width
        )
    }

    /// Exact decimal value in major units (scale = exponent).
    pub fn to_decimal(&self) -> Decimal {
        // i64 fits the 96-bit mantissa and exponents are <= 4, so exact.
        Decimal::new(self.amount_minor, self.currency.exponent())
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency.code(),
                right: other.currency.code(),
            })
        }
    }

    fn with_amount(self, amount: Option<i64>) -> Result<Money, MoneyError> {
        amount
            .map(|a| Money::from_minor(a, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.with_amount(self.amount_minor.checked_add(other.amount_minor))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.with_amount(self.amount_minor.checked_sub(other.amount_minor))
    }

    /// Fails only for `i64::MIN` minor units, which has no positive twin.
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        self.with_amount(self.amount_minor.checked_neg())
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        self.with_amount(self.amount_minor.checked_mul(factor))
    }

    pub const fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }

    pub const fn is_positive(&self) -> bool {
        self.amount_minor > 0
    }

    pub const fn is_negative(&self) -> bool {
        self.amount_minor < 0
    }

    /// FX conversion: `self * rate`, rounded once to the target currency's
    /// exponent with `rounding`. `rate.from()` must be this currency.
    ///
    /// The product is computed exactly in i128 (minor units times the rate
    /// mantissa). If that product overflows i128 the converted amount would
    /// exceed i64 anyway, since at most 10^16 is divided back out.
    pub fn convert(self, rate: &FxRate, rounding: Rounding) -> Result<Money, MoneyError> {
        if rate.from != self.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency.code(),
                right: rate.from.code(),
            });
        }
        let target = rate.to;
        let product = i128::from(self.amount_minor)
            .checked_mul(rate.rate.mantissa())
            .ok_or(MoneyError::Overflow)?;
        // product is in units of 10^-(rate scale + source exponent); target
        // minor units are 10^-(target exponent).
        let source_scale = rate.rate.scale() + self.currency.exponent();
        let target_scale = target.exponent();
        let minor = if source_scale >= target_scale {
            div_round(product, pow10_i128(source_scale - target_scale)?, rounding)
        } else {
            product
                .checked_mul(pow10_i128(target_scale - source_scale)?)
                .ok_or(MoneyError::Overflow)?
        };
        let amount_minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::from_minor(amount_minor, target))
    }

    /// Splits into `n` parts that sum exactly to `self`. Largest remainder:
    /// the first |remainder| parts carry one extra minor unit (of the
    /// amount's sign), so parts differ by at most one minor unit.
    pub fn allocate_even(self, n: u32) -> Result<Vec<Money>, MoneyError> {
        if n == 0 {
            return Err(MoneyError::InvalidAmount {
                input: self.to_string(),
                reason: "cannot allocate into zero parts",
            });
        }
        let parts = i64::from(n);
        // n >= 1, so neither division can overflow (only / -1 can).
        let base = self.amount_minor / parts;
        let remainder = self.amount_minor % parts;
        let extra = remainder.signum();
        let with_extra = remainder.unsigned_abs();
        Ok((0..u64::from(n))
            .map(|i| {
                // base + extra stays in range: |base| * n + |remainder| = |amount|.
                let amount = if i < with_extra { base + extra } else { base };
                Money::from_minor(amount, self.currency)
            })
            .collect())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.format_amount(), self.currency)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

// ---------------------------------------------------------------------------
// FxRate
// ---------------------------------------------------------------------------

/// Exchange rate: 1 unit of `from` = `rate` units of `to`.
///
/// Invariants: `rate > 0`, at most [`MAX_RATE_SCALE`] fractional digits, and
/// a same-currency rate is exactly 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxRate {
    from: Currency,
    to: Currency,
    rate: Decimal,
}

impl FxRate {
    pub fn new(from: Currency, to: Currency, rate: Decimal) -> Result<FxRate, MoneyError> {
        let invalid = |why: &str| MoneyError::InvalidRate(format!("{from}->{to} {rate}: {why}"));
        if rate <= Decimal::ZERO {
            return Err(invalid("rate must be greater than zero"));
        }
        if from == to && rate != Decimal::ONE {
            return Err(invalid("a rate between the same currency must be 1"));
        }
        // Trailing zeros (e.g. from a NUMERIC(_, 18) column) are not precision.
        let rate = if rate.scale() > MAX_RATE_SCALE {
            rate.normalize()
        } else {
            rate
        };
        if rate.scale() > MAX_RATE_SCALE {
            return Err(invalid("rate has more than 12 decimal places"));
        }
        Ok(FxRate { from, to, rate })
    }

    /// Parses an exact decimal string (`digits(.digits)?`, no exponent
    /// notation, separators or whitespace).
    pub fn parse(from: Currency, to: Currency, rate: &str) -> Result<FxRate, MoneyError> {
        let invalid =
            |why: &str| MoneyError::InvalidRate(format!("{from}->{to} \"{}\": {why}", clip(rate)));
        let text = split_decimal(rate).map_err(invalid)?;
        if text.negative {
            return Err(invalid("rate must be greater than zero"));
        }
        // Grammar already checked; from_str_exact only builds the value and
        // refuses (instead of rounding) anything beyond 96 bits / scale 28.
        let value = Decimal::from_str_exact(rate)
            .map_err(|_| invalid("rate has too many digits to represent exactly"))?;
        FxRate::new(from, to, value)
    }

    pub fn from(&self) -> Currency {
        self.from
    }

    pub fn to(&self) -> Currency {
        self.to
    }

    pub fn rate(&self) -> Decimal {
        self.rate
    }

    /// The reverse rate `1 / rate`, rounded half-even to `scale` fractional
    /// digits (at most [`MAX_RATE_SCALE`]).
    pub fn inverse(&self, scale: u32) -> Result<FxRate, MoneyError> {
        let invalid = |why: String| {
            MoneyError::InvalidRate(format!(
                "inverse of {}->{} {}: {why}",
                self.from, self.to, self.rate
            ))
        };
        if scale > MAX_RATE_SCALE {
            return Err(invalid(format!(
                "scale {scale} exceeds the maximum of {MAX_RATE_SCALE}"
            )));
        }
        // 1 / (m / 10^s) rounded to `scale` digits = round(10^(s+scale) / m),
        // done exactly on integers (10^24 and the 96-bit mantissa fit i128).
        let numerator = pow10_i128(self.rate.scale() + scale)?;
        let inverse = div_round(numerator, self.rate.mantissa(), Rounding::HalfEven);
        if inverse == 0 {
            return Err(invalid(format!("rounds to zero at {scale} decimal places")));
        }
        let value = Decimal::try_from_i128_with_scale(inverse, scale)
            .map_err(|_| invalid("result is not representable".to_owned()))?;
        FxRate::new(self.to, self.from, value)
    }
}

// ---------------------------------------------------------------------------
// Rounding
// ---------------------------------------------------------------------------

/// Named rounding modes; [`FromStr`]/[`Display`](fmt::Display) use the
/// snake_case names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// "half_even": midpoints go to the even neighbour (banker's rounding).
    HalfEven,
    /// "half_up": midpoints go away from zero.
    HalfUp,
    /// "half_down": midpoints go toward zero.
    HalfDown,
    /// "toward_zero": truncate.
    TowardZero,
    /// "away_from_zero": any remainder goes away from zero.
    AwayFromZero,
    /// "floor": toward negative infinity.
    Floor,
    /// "ceiling": toward positive infinity.
    Ceiling,
}

impl Rounding {
    /// Every mode, for validation messages and exhaustive tests.
    pub const ALL: [Rounding; 7] = [
        Rounding::HalfEven,
        Rounding::HalfUp,
        Rounding::HalfDown,
        Rounding::TowardZero,
        Rounding::AwayFromZero,
        Rounding::Floor,
        Rounding::Ceiling,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rounding::HalfEven => "half_even",
            Rounding::HalfUp => "half_up",
            Rounding::HalfDown => "half_down",
            Rounding::TowardZero => "toward_zero",
            Rounding::AwayFromZero => "away_from_zero",
            Rounding::Floor => "floor",
            Rounding::Ceiling => "ceiling",
        }
    }

    /// The equivalent `rust_decimal` strategy, for rounding `Decimal`s the
    /// same way this module rounds money.
    pub const fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfDown => RoundingStrategy::MidpointTowardZero,
            Rounding::TowardZero => RoundingStrategy::ToZero,
            Rounding::AwayFromZero => RoundingStrategy::AwayFromZero,
            Rounding::Floor => RoundingStrategy::ToNegativeInfinity,
            Rounding::Ceiling => RoundingStrategy::ToPositiveInfinity,
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rounding mode name that is not one of [`Rounding::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error(
    "unknown rounding mode \"{0}\": expected one of half_even, half_up, half_down, toward_zero, away_from_zero, floor, ceiling"
)]
pub struct ParseRoundingError(pub String);

impl FromStr for Rounding {
    type Err = ParseRoundingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rounding::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseRoundingError(clip(s)))
    }
}

impl Serialize for Rounding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Rounding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;

        impl serde::de::Visitor<'_> for ModeVisitor {
            type Value = Rounding;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rounding mode name such as \"half_even\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Rounding, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(ModeVisitor)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).expect("test currency code")
    }

    /// `Ok(text)` or `Err(error code)`, so tables stay one line per case.
    type Expect = Result<&'static str, &'static str>;

    fn show<T>(r: Result<T, MoneyError>, f: impl Fn(T) -> String) -> Result<String, &'static str> {
        r.map(f).map_err(|e| e.code())
    }

    // --- Currency ----------------------------------------------------------

    fn check_currency(input: &str, expected: Result<u32, &str>) {
        let got = Currency::parse(input)
            .map(|c| c.exponent())
            .map_err(|e| e.code());
        assert_eq!(got, expected, "Currency::parse({input:?})");
        if let Ok(c) = Currency::parse(input) {
            assert_eq!(c.code(), input);
            assert_eq!(c.to_string(), input);
            assert_eq!(input.parse::<Currency>(), Ok(c));
        }
    }

    #[test]
    fn currency_parse_table() {
        check_currency("USD", Ok(2));
        check_currency("EUR", Ok(2));
        check_currency("GBP", Ok(2));
        check_currency("INR", Ok(2));
        check_currency("JPY", Ok(0));
        check_currency("KRW", Ok(0));
        check_currency("BHD", Ok(3));
        check_currency("KWD", Ok(3));
        check_currency("TND", Ok(3));
        check_currency("CLF", Ok(4));
        check_currency("UYW", Ok(4));
        check_currency("usd", Err("unknown_currency"));
        check_currency("Usd", Err("unknown_currency"));
        check_currency("US", Err("unknown_currency"));
        check_currency("USDD", Err("unknown_currency"));
        check_currency(" USD", Err("unknown_currency"));
        check_currency("USD ", Err("unknown_currency"));
        check_currency("", Err("unknown_currency"));
        check_currency("AAA", Err("unknown_currency"));
        check_currency("ZZZ", Err("unknown_currency"));
        check_currency("ÜSD", Err("unknown_currency"));
        check_currency("XAU", Err("unknown_currency"));
        check_currency("XXX", Err("unknown_currency"));
        check_currency("XDR", Err("unknown_currency"));
    }

    #[test]
    fn currencies_without_minor_unit_are_distinguished() {
        for code in [
            "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA",
            "XXX",
        ] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::NoMinorUnit(code.to_owned()))
            );
        }
        assert_eq!(
            Currency::parse("QQQ"),
            Err(MoneyError::UnknownCurrency("QQQ".to_owned()))
        );
    }

    #[test]
    fn all_is_complete_sorted_and_parseable() {
        let all: Vec<Currency> = Currency::all().collect();
        // Brute force over every 3-letter code, independent of numeric codes.
        let mut brute = Vec::new();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let bytes = [a, b, c];
                    let code = std::str::from_utf8(&bytes).expect("ascii");
                    if let Ok(cur) = Currency::parse(code) {
                        brute.push(cur);
                    }
                }
            }
        }
        assert_eq!(all, brute);
        assert_eq!(all.len(), 170);
        assert!(all.windows(2).all(|w| w[0].code() < w[1].code()));
        assert!(all.iter().all(|c| c.exponent() <= 4));
    }

    #[test]
    fn currency_orders_by_code_and_serdes_as_code() {
        let mut v = [cur("USD"), cur("AED"), cur("JPY"), cur("EUR")];
        v.sort();
        let codes: Vec<&str> = v.iter().map(|c| c.code()).collect();
        assert_eq!(codes, ["AED", "EUR", "JPY", "USD"]);

        assert_eq!(serde_json::to_string(&cur("USD")).expect("ser"), "\"USD\"");
        let back: Currency = serde_json::from_str("\"BHD\"").expect("de");
        assert_eq!(back, cur("BHD"));
        for bad in ["\"usd\"", "\"XAU\"", "\"\"", "12", "null"] {
            assert!(serde_json::from_str::<Currency>(bad).is_err(), "{bad}");
        }
    }

    // --- parse_decimal / format_amount -------------------------------------

    fn check_parse(input: &str, code: &str, expected: Result<i64, &str>) {
        let got = Money::parse_decimal(input, cur(code))
            .map(|m| m.amount_minor())
            .map_err(|e| e.code());
        assert_eq!(got, expected, "parse_decimal({input:?}, {code})");
    }

    #[test]
    fn parse_decimal_table() {
        // USD, exponent 2
        check_parse("10.00", "USD", Ok(1000));
        check_parse("10.0", "USD", Ok(1000));
        check_parse("10", "USD", Ok(1000));
        check_parse("0.05", "USD", Ok(5));
        check_parse("-0.05", "USD", Ok(-5));
        check_parse("-10", "USD", Ok(-1000));
        check_parse("0", "USD", Ok(0));
        check_parse("-0", "USD", Ok(0));
        check_parse("-0.00", "USD", Ok(0));
        check_parse("007.50", "USD", Ok(750));
        check_parse("92233720368547758.07", "USD", Ok(i64::MAX));
        check_parse("-92233720368547758.08", "USD", Ok(i64::MIN));
        check_parse("92233720368547758.08", "USD", Err("amount_overflow"));
        check_parse("-92233720368547758.09", "USD", Err("amount_overflow"));
        check_parse("92233720368547759", "USD", Err("amount_overflow"));
        check_parse("99999999999999999999999", "JPY", Err("amount_overflow"));
        check_parse("10.001", "USD", Err("invalid_amount_scale"));
        check_parse("10.000", "USD", Err("invalid_amount_scale"));
        check_parse("0.000000", "USD", Err("invalid_amount_scale"));
        check_parse("", "USD", Err("invalid_amount"));
        check_parse("-", "USD", Err("invalid_amount"));
        check_parse("+10.00", "USD", Err("invalid_amount"));
        check_parse("--1", "USD", Err("invalid_amount"));
        check_parse("1-", "USD", Err("invalid_amount"));
        check_parse("10.", "USD", Err("invalid_amount"));
        check_parse(".50", "USD", Err("invalid_amount"));
        check_parse("-.50", "USD", Err("invalid_amount"));
        check_parse(".", "USD", Err("invalid_amount"));
        check_parse("1.2.3", "USD", Err("invalid_amount"));
        check_parse(" 10.00", "USD", Err("invalid_amount"));
        check_parse("10.00 ", "USD", Err("invalid_amount"));
        check_parse("10 000.00", "USD", Err("invalid_amount"));
        check_parse("1,000.00", "USD", Err("invalid_amount"));
        check_parse("1_000", "USD", Err("invalid_amount"));
        check_parse("1e3", "USD", Err("invalid_amount"));
        check_parse("1E3", "USD", Err("invalid_amount"));
        check_parse("1.5e2", "USD", Err("invalid_amount"));
        check_parse("0x10", "USD", Err("invalid_amount"));
        check_parse("NaN", "USD", Err("invalid_amount"));
        check_parse("inf", "USD", Err("invalid_amount"));
        check_parse("١٢", "USD", Err("invalid_amount"));
        check_parse("−5", "USD", Err("invalid_amount"));
        check_parse("10,50", "EUR", Err("invalid_amount"));
        // scale is checked only after the grammar
        check_parse("1.001x", "USD", Err("invalid_amount"));
        // JPY, exponent 0
        check_parse("100", "JPY", Ok(100));
        check_parse("-100", "JPY", Ok(-100));
        check_parse("9223372036854775807", "JPY", Ok(i64::MAX));
        check_parse("-9223372036854775808", "JPY", Ok(i64::MIN));
        check_parse("9223372036854775808", "JPY", Err("amount_overflow"));
        check_parse("100.", "JPY", Err("invalid_amount"));
        check_parse("1.5", "JPY", Err("invalid_amount_scale"));
        check_parse("100.0", "JPY", Err("invalid_amount_scale"));
        // BHD, exponent 3
        check_parse("1.000", "BHD", Ok(1000));
        check_parse("1.5", "BHD", Ok(1500));
        check_parse("0.001", "BHD", Ok(1));
        check_parse("-12.345", "BHD", Ok(-12345));
        check_parse("1.0000", "BHD", Err("invalid_amount_scale"));
        // CLF, exponent 4
        check_parse("1.2345", "CLF", Ok(12345));
        check_parse("1.23456", "CLF", Err("invalid_amount_scale"));
    }

    #[test]
    fn over_long_input_is_rejected_and_clipped() {
        let long = "1".repeat(10_000);
        let err = Money::parse_decimal(&long, cur("USD")).expect_err("too long");
        match err {
            MoneyError::InvalidAmount { input, .. } => assert!(input.chars().count() <= 65),
            other => panic!("unexpected {other:?}"),
        }
        let err = Currency::parse(&"Q".repeat(10_000)).expect_err("bad code");
        assert!(err.to_string().len() < 200);
    }

    fn check_format(minor: i64, code: &str, expected: &str) {
        let m = Money::from_minor(minor, cur(code));
        assert_eq!(m.format_amount(), expected, "format({minor}, {code})");
        assert_eq!(
            Money::parse_decimal(expected, cur(code)),
            Ok(m),
            "round trip {expected}"
        );
    }

    #[test]
    fn format_amount_table() {
        check_format(1000, "USD", "10.00");
        check_format(5, "USD", "0.05");
        check_format(-5, "USD", "-0.05");
        check_format(-100, "USD", "-1.00");
        check_format(0, "USD", "0.00");
        check_format(1, "USD", "0.01");
        check_format(i64::MAX, "USD", "92233720368547758.07");
        check_format(i64::MIN, "USD", "-92233720368547758.08");
        check_format(100, "JPY", "100");
        check_format(-100, "JPY", "-100");
        check_format(0, "JPY", "0");
        check_format(i64::MIN, "JPY", "-9223372036854775808");
        check_format(1000, "BHD", "1.000");
        check_format(-1, "BHD", "-0.001");
        check_format(12345, "CLF", "1.2345");
        check_format(-1, "CLF", "-0.0001");
    }

    fn check_money_parse(input: &str, expected: Expect) {
        let got = show(Money::parse(input), |m| m.to_string());
        assert_eq!(got, expected.map(str::to_owned), "Money::parse({input:?})");
        if let Ok(text) = expected {
            assert_eq!(
                input.parse::<Money>().map(|m| m.to_string()),
                Ok(text.to_owned())
            );
        }
    }

    #[test]
    fn money_parse_table() {
        check_money_parse("10.00 USD", Ok("10.00 USD"));
        check_money_parse("10 USD", Ok("10.00 USD"));
        check_money_parse("-0.05 USD", Ok("-0.05 USD"));
        check_money_parse("100 JPY", Ok("100 JPY"));
        check_money_parse("1.5 BHD", Ok("1.500 BHD"));
        check_money_parse("10.00USD", Err("invalid_amount"));
        check_money_parse("10.00", Err("invalid_amount"));
        check_money_parse("", Err("invalid_amount"));
        check_money_parse("10.00  USD", Err("unknown_currency"));
        check_money_parse("10.00 usd", Err("unknown_currency"));
        check_money_parse("10.00 USD ", Err("unknown_currency"));
        check_money_parse("USD 10.00", Err("unknown_currency"));
        check_money_parse("10.00 XAU", Err("unknown_currency"));
        check_money_parse("10.001 USD", Err("invalid_amount_scale"));
        check_money_parse("1.5 JPY", Err("invalid_amount_scale"));
        check_money_parse("1e3 USD", Err("invalid_amount"));
    }

    #[test]
    fn error_messages_are_human_readable() {
        let usd = cur("USD");
        let msg = |r: Result<Money, MoneyError>| r.expect_err("error").to_string();
        assert_eq!(
            msg(Money::parse_decimal("10.001", usd)),
            "amount \"10.001\" has 3 decimal places but USD allows at most 2"
        );
        assert_eq!(
            msg(Money::parse_decimal("1.5", cur("JPY"))),
            "amount \"1.5\" has 1 decimal place but JPY has no minor unit"
        );
        assert_eq!(
            msg(Money::parse_decimal("1e3", usd)),
            "invalid amount \"1e3\": exponent notation is not allowed"
        );
        assert_eq!(
            msg(Money::parse_decimal("1,000", usd)),
            "invalid amount \"1,000\": thousands separators are not allowed"
        );
        assert_eq!(
            msg(Money::parse_decimal("+1", usd)),
            "invalid amount \"+1\": a leading '+' is not allowed"
        );
        assert_eq!(
            msg(Money::from_minor(1, usd).checked_add(Money::from_minor(1, cur("EUR")))),
            "currency mismatch: USD and EUR cannot be combined"
        );
        assert_eq!(
            Currency::parse("XAU").expect_err("no minor").to_string(),
            "currency XAU has no defined minor unit and cannot be used for amounts"
        );
        assert_eq!(
            Currency::parse("usd").expect_err("lower").to_string(),
            "unknown currency code \"usd\": expected a 3-letter uppercase ISO 4217 code such as \"USD\""
        );
    }

    #[test]
    fn error_codes() {
        let cases = [
            (MoneyError::UnknownCurrency("x".into()), "unknown_currency"),
            (MoneyError::NoMinorUnit("XAU".into()), "unknown_currency"),
            (
                MoneyError::InvalidAmount {
                    input: "x".into(),
                    reason: "r",
                },
                "invalid_amount",
            ),
            (
                MoneyError::ScaleTooLarge {
                    input: "1.001".into(),
                    currency: "USD",
                    max_scale: 2,
                },
                "invalid_amount_scale",
            ),
            (MoneyError::Overflow, "amount_overflow"),
            (
                MoneyError::CurrencyMismatch {
                    left: "USD",
                    right: "EUR",
                },
                "currency_mismatch",
            ),
            (MoneyError::InvalidRate("x".into()), "invalid_rate"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    // --- arithmetic ----------------------------------------------------------

    fn check_arith(result: Result<Money, MoneyError>, expected: Expect) {
        assert_eq!(show(result, |m| m.to_string()), expected.map(str::to_owned));
    }

    #[test]
    fn arithmetic_table() {
        let usd = |m| Money::from_minor(m, cur("USD"));
        let eur = |m| Money::from_minor(m, cur("EUR"));
        check_arith(usd(150).checked_add(usd(250)), Ok("4.00 USD"));
        check_arith(usd(150).checked_sub(usd(250)), Ok("-1.00 USD"));
        check_arith(usd(150).checked_neg(), Ok("-1.50 USD"));
        check_arith(usd(-150).checked_mul(-3), Ok("4.50 USD"));
        check_arith(usd(1).checked_add(eur(1)), Err("currency_mismatch"));
        check_arith(usd(1).checked_sub(eur(1)), Err("currency_mismatch"));
        check_arith(usd(i64::MAX).checked_add(usd(1)), Err("amount_overflow"));
        check_arith(usd(i64::MIN).checked_sub(usd(1)), Err("amount_overflow"));
        check_arith(usd(i64::MIN).checked_neg(), Err("amount_overflow"));
        check_arith(usd(i64::MAX).checked_neg(), Ok("-92233720368547758.07 USD"));
        check_arith(usd(i64::MAX).checked_mul(2), Err("amount_overflow"));
        check_arith(usd(i64::MIN).checked_mul(-1), Err("amount_overflow"));
        let min = "-92233720368547758.08 USD";
        check_arith(usd(i64::MIN).checked_mul(1), Ok(min));
        check_arith(usd(5).checked_mul(0), Ok("0.00 USD"));

        let z = Money::zero(cur("JPY"));
        assert!(z.is_zero() && !z.is_positive() && !z.is_negative());
        assert!(usd(1).is_positive() && usd(-1).is_negative());
        assert_eq!(usd(-12345).to_decimal().to_string(), "-123.45");
        assert_eq!(
            Money::from_minor(7, cur("JPY")).to_decimal().to_string(),
            "7"
        );
        assert_eq!(
            Money::from_minor(7, cur("BHD")).to_decimal().to_string(),
            "0.007"
        );
    }

    fn check_allocate(amount: &str, n: u32, expected: Result<&[&str], &str>) {
        let money = Money::parse(amount).expect("test amount");
        let got = money
            .allocate_even(n)
            .map(|parts| parts.iter().map(Money::format_amount).collect::<Vec<_>>())
            .map_err(|e| e.code());
        let expected = expected.map(|p| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(got, expected, "allocate_even({amount}, {n})");
    }

    #[test]
    fn allocate_even_table() {
        check_allocate("10.00 USD", 3, Ok(&["3.34", "3.33", "3.33"]));
        check_allocate("10.01 USD", 3, Ok(&["3.34", "3.34", "3.33"]));
        check_allocate("-10.00 USD", 3, Ok(&["-3.34", "-3.33", "-3.33"]));
        check_allocate("0.01 USD", 3, Ok(&["0.01", "0.00", "0.00"]));
        check_allocate("0.00 USD", 2, Ok(&["0.00", "0.00"]));
        check_allocate("100 JPY", 1, Ok(&["100"]));
        check_allocate("9 JPY", 7, Ok(&["2", "2", "1", "1", "1", "1", "1"]));
        check_allocate("10.00 USD", 0, Err("invalid_amount"));
    }

    // --- FX rates --------------------------------------------------------------

    fn check_rate(from: &str, to: &str, rate: &str, expected: Expect) {
        let got = show(FxRate::parse(cur(from), cur(to), rate), |r| {
            r.rate().to_string()
        });
        assert_eq!(
            got,
            expected.map(str::to_owned),
            "FxRate::parse({from}, {to}, {rate:?})"
        );
    }

    #[test]
    fn rate_parse_table() {
        check_rate("USD", "INR", "82.42135", Ok("82.42135"));
        check_rate("USD", "EUR", "0.9", Ok("0.9"));
        check_rate("USD", "EUR", "0.000000000001", Ok("0.000000000001"));
        check_rate("USD", "EUR", "1.0000000000000", Ok("1")); // trailing zeros past 12 dp normalize
        check_rate("USD", "USD", "1", Ok("1"));
        check_rate("USD", "USD", "1.00", Ok("1.00"));
        check_rate("USD", "JPY", "151", Ok("151"));
        check_rate("USD", "EUR", "0.0000000000001", Err("invalid_rate"));
        check_rate("USD", "EUR", "0", Err("invalid_rate"));
        check_rate("USD", "EUR", "0.000", Err("invalid_rate"));
        check_rate("USD", "EUR", "-0.9", Err("invalid_rate"));
        check_rate("USD", "EUR", "+0.9", Err("invalid_rate"));
        check_rate("USD", "USD", "1.01", Err("invalid_rate"));
        check_rate("USD", "EUR", "9e-1", Err("invalid_rate"));
        check_rate("USD", "EUR", "0.9 ", Err("invalid_rate"));
        check_rate("USD", "EUR", "1_000", Err("invalid_rate"));
        check_rate("USD", "EUR", "", Err("invalid_rate"));
        check_rate("USD", "EUR", ".9", Err("invalid_rate"));
        check_rate("USD", "EUR", "1.", Err("invalid_rate"));
        check_rate("USD", "EUR", "9".repeat(29).as_str(), Err("invalid_rate"));
    }

    #[test]
    fn rate_new_validates() {
        let (usd, eur) = (cur("USD"), cur("EUR"));
        assert!(FxRate::new(usd, eur, Decimal::new(9, 1)).is_ok());
        assert!(FxRate::new(usd, eur, Decimal::ZERO).is_err());
        assert!(FxRate::new(usd, eur, Decimal::new(-9, 1)).is_err());
        assert!(FxRate::new(usd, eur, Decimal::new(1, 13)).is_err());
        assert!(FxRate::new(usd, usd, Decimal::new(2, 0)).is_err());
        let r = FxRate::new(usd, eur, Decimal::new(900_000_000_000_000, 15)).expect("normalizes");
        assert_eq!(r.rate().to_string(), "0.9");
        assert_eq!((r.from(), r.to()), (usd, eur));
        let err = FxRate::new(usd, eur, Decimal::ZERO).expect_err("zero");
        assert_eq!(
            err.to_string(),
            "invalid exchange rate: USD->EUR 0: rate must be greater than zero"
        );
    }

    fn check_inverse(rate: &str, scale: u32, expected: Expect) {
        let fx = FxRate::parse(cur("USD"), cur("EUR"), rate).expect("test rate");
        let got = show(fx.inverse(scale), |inv| {
            assert_eq!((inv.from(), inv.to()), (cur("EUR"), cur("USD")));
            inv.rate().to_string()
        });
        assert_eq!(got, expected.map(str::to_owned), "inverse({rate}, {scale})");
    }

    #[test]
    fn inverse_table() {
        check_inverse("2", 2, Ok("0.50"));
        check_inverse("3", 6, Ok("0.333333"));
        check_inverse("1.5", 6, Ok("0.666667"));
        check_inverse("82.42135", 12, Ok("0.012132778704"));
        check_inverse("0.000000000001", 0, Ok("1000000000000"));
        check_inverse("8", 2, Ok("0.12")); // 0.125 -> even
        check_inverse("1.6", 1, Ok("0.6")); // 0.625 -> 0.6
        check_inverse("4", 0, Err("invalid_rate")); // 0.25 rounds to 0
        check_inverse("3", 13, Err("invalid_rate"));
    }

    // --- conversion ------------------------------------------------------------

    /// `spec` is `"<amount> <FROM> -> <TO> @ <rate> <mode>"`.
    fn check_convert(spec: &str, expected: Expect) {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let [amount, from, "->", to, "@", rate, mode] = words[..] else {
            panic!("bad convert spec {spec:?}");
        };
        let money = Money::parse_decimal(amount, cur(from)).expect("test amount");
        let fx = FxRate::parse(cur(from), cur(to), rate).expect("test rate");
        let mode: Rounding = mode.parse().expect("test mode");
        let got = show(money.convert(&fx, mode), |m| m.to_string());
        assert_eq!(got, expected.map(str::to_owned), "convert {spec}");
    }

    // Kept as an aligned table; rustfmt would split every case over four lines.
    #[rustfmt::skip]
    #[test]
    fn convert_table() {
        // 8242.135: odd neighbour below, so half_even goes up.
        check_convert("100.00 USD -> INR @ 82.42135 half_even",         Ok("8242.14 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 half_up",           Ok("8242.14 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 half_down",         Ok("8242.13 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 toward_zero",       Ok("8242.13 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 away_from_zero",    Ok("8242.14 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 floor",             Ok("8242.13 INR"));
        check_convert("100.00 USD -> INR @ 82.42135 ceiling",           Ok("8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 half_even",        Ok("-8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 half_up",          Ok("-8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 half_down",        Ok("-8242.13 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 toward_zero",      Ok("-8242.13 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 away_from_zero",   Ok("-8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 floor",            Ok("-8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.42135 ceiling",          Ok("-8242.13 INR"));
        // 8242.125: even neighbour below, so half_even stays.
        check_convert("100.00 USD -> INR @ 82.42125 half_even",         Ok("8242.12 INR"));
        check_convert("100.00 USD -> INR @ 82.42125 half_up",           Ok("8242.13 INR"));
        check_convert("100.00 USD -> INR @ 82.42125 half_down",         Ok("8242.12 INR"));
        check_convert("-100.00 USD -> INR @ 82.42125 half_even",        Ok("-8242.12 INR"));
        check_convert("-100.00 USD -> INR @ 82.42125 half_up",          Ok("-8242.13 INR"));
        check_convert("-100.00 USD -> INR @ 82.42125 half_down",        Ok("-8242.12 INR"));
        // Just off the midpoint: 8242.1351 / 8242.1349.
        check_convert("100.00 USD -> INR @ 82.421351 half_down",        Ok("8242.14 INR"));
        check_convert("100.00 USD -> INR @ 82.421349 half_up",          Ok("8242.13 INR"));
        check_convert("100.00 USD -> INR @ 82.421349 ceiling",          Ok("8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.421349 floor",           Ok("-8242.14 INR"));
        check_convert("-100.00 USD -> INR @ 82.421351 ceiling",         Ok("-8242.13 INR"));
        // To JPY (exponent 0): midpoints 1512.5 and 1513.5.
        check_convert("10.00 USD -> JPY @ 151.25 half_even",            Ok("1512 JPY"));
        check_convert("10.00 USD -> JPY @ 151.35 half_even",            Ok("1514 JPY"));
        check_convert("10.00 USD -> JPY @ 151.25 half_up",              Ok("1513 JPY"));
        check_convert("10.00 USD -> JPY @ 151.25 half_down",            Ok("1512 JPY"));
        check_convert("-10.00 USD -> JPY @ 151.25 half_even",           Ok("-1512 JPY"));
        check_convert("-10.00 USD -> JPY @ 151.25 floor",               Ok("-1513 JPY"));
        check_convert("-10.00 USD -> JPY @ 151.25 ceiling",             Ok("-1512 JPY"));
        // From JPY, and widening to more decimals (no rounding needed).
        check_convert("1000 JPY -> USD @ 0.0066 half_even",             Ok("6.60 USD"));
        check_convert("1 JPY -> BHD @ 1 half_even",                     Ok("1.000 BHD"));
        check_convert("1.00 USD -> BHD @ 0.376 half_even",              Ok("0.376 BHD"));
        check_convert("1.00 USD -> CLF @ 0.0283 half_even",             Ok("0.0283 CLF"));
        // Sub-minor results.
        check_convert("0.01 USD -> EUR @ 0.4 half_even",                Ok("0.00 EUR"));
        check_convert("0.01 USD -> EUR @ 0.4 away_from_zero",           Ok("0.01 EUR"));
        check_convert("-0.01 USD -> EUR @ 0.4 away_from_zero",          Ok("-0.01 EUR"));
        check_convert("-0.01 USD -> EUR @ 0.4 floor",                   Ok("-0.01 EUR"));
        check_convert("-0.01 USD -> EUR @ 0.4 ceiling",                 Ok("0.00 EUR"));
        // Same currency at rate 1 is the identity, even at i64::MIN.
        check_convert("-92233720368547758.08 USD -> USD @ 1 floor",     Ok("-92233720368547758.08 USD"));
        // Overflow is an error, never a wrap or panic.
        check_convert("92233720368547758.07 USD -> EUR @ 1.000000000001 floor", Err("amount_overflow"));
        check_convert("92233720368547758.07 USD -> JPY @ 1000000 floor", Err("amount_overflow"));
        check_convert("9223372036854775807 JPY -> BHD @ 1 floor",       Err("amount_overflow"));
        // Largest Decimal mantissa (2^96 - 1) as a rate.
        let huge = "@ 79228162514264337.593543950335 floor";
        check_convert(&format!("1 JPY -> USD {huge}"),    Ok("79228162514264337.59 USD"));
        check_convert(&format!("0.01 USD -> EUR {huge}"), Ok("792281625142643.37 EUR"));
        check_convert(&format!("2 JPY -> USD {huge}"),    Err("amount_overflow"));
        check_convert(&format!("-9223372036854775808 JPY -> USD {huge}"), Err("amount_overflow"));
        // Product wider than 96 bits with an in-range result: still exact
        // (a Decimal multiply would have rounded here first).
        let max_usd = "92233720368547758.07 USD -> EUR @ 0.999999999999";
        check_convert(&format!("{max_usd} toward_zero"),                Ok("92233720368455524.34 EUR"));
        check_convert(&format!("{max_usd} ceiling"),                    Ok("92233720368455524.35 EUR"));
    }

    #[test]
    fn convert_rejects_wrong_source_currency() {
        let fx = FxRate::parse(cur("EUR"), cur("USD"), "1.1").expect("rate");
        let err = Money::from_minor(100, cur("GBP"))
            .convert(&fx, Rounding::HalfEven)
            .expect_err("mismatch");
        assert_eq!(
            err,
            MoneyError::CurrencyMismatch {
                left: "GBP",
                right: "EUR"
            }
        );
    }

    // --- rounding names ----------------------------------------------------------

    #[test]
    fn rounding_names_round_trip() {
        for mode in Rounding::ALL {
            assert_eq!(mode.to_string().parse::<Rounding>(), Ok(mode));
            let json = serde_json::to_string(&mode).expect("ser");
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<Rounding>(&json).expect("de"), mode);
        }
        for bad in ["HalfEven", "half-even", "", "banker", "HALF_UP"] {
            assert!(bad.parse::<Rounding>().is_err(), "{bad}");
        }
    }

    // --- properties ----------------------------------------------------------------

    fn currencies() -> Vec<Currency> {
        Currency::all().collect()
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        proptest::sample::select(currencies())
    }

    fn any_mode() -> impl Strategy<Value = Rounding> {
        proptest::sample::select(Rounding::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn format_parse_round_trip_every_currency(minor in any::<i64>()) {
            for c in Currency::all() {
                let m = Money::from_minor(minor, c);
                let text = m.format_amount();
                prop_assert_eq!(Money::parse_decimal(&text, c), Ok(m));
                prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
                prop_assert_eq!(m.to_decimal().to_string(), text);
            }
        }

        #[test]
        fn add_sub_are_inverse(a in any::<i64>(), b in any::<i64>(), c in any_currency()) {
            let (ma, mb) = (Money::from_minor(a, c), Money::from_minor(b, c));
            match ma.checked_add(mb) {
                Ok(sum) => {
                    prop_assert_eq!(sum.checked_sub(mb), Ok(ma));
                    prop_assert_eq!(sum.checked_sub(ma), Ok(mb));
                }
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    prop_assert!(a.checked_add(b).is_none());
                }
            }
        }

        #[test]
        fn overflow_is_an_error_not_a_panic(
            a in prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()],
            b in prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(-1i64), any::<i64>()],
            c in any_currency(),
        ) {
            let (ma, mb) = (Money::from_minor(a, c), Money::from_minor(b, c));
            prop_assert_eq!(ma.checked_add(mb).is_ok(), a.checked_add(b).is_some());
            prop_assert_eq!(ma.checked_sub(mb).is_ok(), a.checked_sub(b).is_some());
            prop_assert_eq!(ma.checked_mul(b).is_ok(), a.checked_mul(b).is_some());
            prop_assert_eq!(ma.checked_neg().is_ok(), a.checked_neg().is_some());
        }

        #[test]
        fn allocate_even_sums_exactly(
            minor in any::<i64>(),
            n in 1u32..200,
            c in any_currency(),
        ) {
            let m = Money::from_minor(minor, c);
            let parts = m.allocate_even(n).expect("n >= 1");
            prop_assert_eq!(parts.len(), n as usize);
            let sum: i128 = parts.iter().map(|p| i128::from(p.amount_minor())).sum();
            prop_assert_eq!(sum, i128::from(minor));
            let max = parts.iter().map(Money::amount_minor).max().expect("non-empty");
            let min = parts.iter().map(Money::amount_minor).min().expect("non-empty");
            prop_assert!(max - min <= 1);
            prop_assert!(parts.iter().all(|p| p.currency() == c));
        }

        #[test]
        fn convert_identity_rate(
            minor in any::<i64>(),
            c in any_currency(),
            mode in any_mode(),
        ) {
            let fx = FxRate::new(c, c, Decimal::ONE).expect("unit rate");
            let m = Money::from_minor(minor, c);
            prop_assert_eq!(m.convert(&fx, mode), Ok(m));
        }

        /// The integer rounding agrees with rust_decimal's strategies.
        #[test]
        fn div_round_matches_rust_decimal(
            n in -(1i128 << 90)..(1i128 << 90),
            k in 1u32..=12,
            mode in any_mode(),
        ) {
            let expected = Decimal::from_i128_with_scale(n, k)
                .round_dp_with_strategy(0, mode.strategy())
                .mantissa();
            prop_assert_eq!(div_round(n, 10i128.pow(k), mode), expected);
        }

        #[test]
        fn div_round_midpoints_match_rust_decimal(
            q in -1_000_000i128..1_000_000,
            k in 1u32..=12,
            mode in any_mode(),
        ) {
            let half = 5 * 10i128.pow(k - 1);
            let n = q * 10i128.pow(k) + if q < 0 { -half } else { half };
            let expected = Decimal::from_i128_with_scale(n, k)
                .round_dp_with_strategy(0, mode.strategy())
                .mantissa();
            prop_assert_eq!(div_round(n, 10i128.pow(k), mode), expected);
        }

        /// Where the Decimal product is exact, convert equals Decimal rounding.
        #[test]
        fn convert_matches_decimal_when_exact(
            minor in -(1i64 << 40)..(1i64 << 40),
            mantissa in 1i64..(1i64 << 40),
            scale in 0u32..=12,
            from in any_currency(),
            to in any_currency(),
            mode in any_mode(),
        ) {
            prop_assume!(from != to);
            let fx = FxRate::new(from, to, Decimal::new(mantissa, scale)).expect("valid rate");
            let m = Money::from_minor(minor, from);
            let exact = m.to_decimal() * fx.rate();
            let rounded = exact.round_dp_with_strategy(to.exponent(), mode.strategy());
            // round_dp keeps a smaller scale as is; pad to the exponent.
            let pad = 10i128.pow(to.exponent() - rounded.scale());
            let expected_minor = rounded.mantissa() * pad;
            match m.convert(&fx, mode) {
                Ok(got) => {
                    prop_assert_eq!(i128::from(got.amount_minor()), expected_minor);
                    prop_assert_eq!(got.currency(), to);
                }
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    prop_assert!(i64::try_from(expected_minor).is_err());
                }
            }
        }

        #[test]
        fn parse_decimal_never_panics(s in "[-+0-9.eE, ]{0,30}", c in any_currency()) {
            if let Ok(m) = Money::parse_decimal(&s, c) {
                // Anything accepted re-parses from its canonical form.
                prop_assert_eq!(Money::parse_decimal(&m.format_amount(), c), Ok(m));
            }
        }

        #[test]
        fn convert_never_panics(
            minor in any::<i64>(),
            mantissa in any::<i64>().prop_filter("positive", |m| *m > 0),
            scale in 0u32..=12,
            from in any_currency(),
            to in any_currency(),
            mode in any_mode(),
        ) {
            prop_assume!(from != to);
            let fx = FxRate::new(from, to, Decimal::new(mantissa, scale)).expect("valid rate");
            match Money::from_minor(minor, from).convert(&fx, mode) {
                Ok(m) => prop_assert_eq!(m.currency(), to),
                Err(e) => prop_assert_eq!(e, MoneyError::Overflow),
            }
        }
    }
}
