//! Card data as types: a [`Pan`] that exists is a Luhn-valid card number of a brand we accept
//! with a length that brand issues, an [`Expiry`] is not past, a [`Cvv`] has the brand's length.
//!
//! PCI DSS 3.3–3.5: raw digits leave these types only through the `expose_*` accessors, which
//! exist for the vault's encryption and the processor request. `Debug` and `Display` show at
//! most the BIN and last four, errors never echo the input, and digits are zeroized on drop.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// Fewest digits a card number may have (ISO/IEC 7812); no brand we accept issues this few.
pub const PAN_DIGITS_MIN: usize = 12;
/// Most digits a card number may have (ISO/IEC 7812).
pub const PAN_DIGITS_MAX: usize = 19;
/// An expiry further ahead than this is a typo, not a card.
pub const EXPIRY_AHEAD_MAX_YEARS: i64 = 20;

/// Card brands we accept; anything else is rejected at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
}

impl CardBrand {
    pub const ALL: [CardBrand; 6] = [
        CardBrand::Visa,
        CardBrand::Mastercard,
        CardBrand::Amex,
        CardBrand::Discover,
        CardBrand::Jcb,
        CardBrand::Diners,
    ];

    /// Stable lower-case name, the same as the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "visa",
            CardBrand::Mastercard => "mastercard",
            CardBrand::Amex => "amex",
            CardBrand::Discover => "discover",
            CardBrand::Jcb => "jcb",
            CardBrand::Diners => "diners",
        }
    }

    /// Whether this brand issues card numbers of `len` digits.
    pub fn allows_len(self, len: usize) -> bool {
        match self {
            CardBrand::Visa => matches!(len, 13 | 16 | 19),
            CardBrand::Mastercard => len == 16,
            CardBrand::Amex => len == 15,
            CardBrand::Discover | CardBrand::Jcb => (16..=19).contains(&len),
            CardBrand::Diners => (14..=19).contains(&len),
        }
    }

    /// Digits in the card security code: Amex prints a 4-digit CID, the others a 3-digit CVV.
    pub fn cvv_len(self) -> usize {
        match self {
            CardBrand::Amex => 4,
            _ => 3,
        }
    }
}

impl fmt::Display for CardBrand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why card input was rejected. Messages never contain the card number or the CVV: they go
/// back to the client and into logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CardError {
    #[error("card number may contain only digits, spaces and dashes")]
    NotDigits,
    #[error(
        "card number must have {} to {} digits",
        PAN_DIGITS_MIN,
        PAN_DIGITS_MAX
    )]
    WrongLength,
    #[error("card number failed the Luhn check: a digit is probably mistyped")]
    LuhnFailed,
    #[error("card brand is not supported")]
    UnknownBrand,
    #[error("{brand} card numbers cannot have {len} digits")]
    LengthNotValidForBrand { brand: CardBrand, len: usize },
    #[error("expiry month must be 1 to 12")]
    BadMonth,
    #[error("expiry year must have two or four digits")]
    BadYear,
    #[error("expiry must be written MM/YY or MM/YYYY")]
    ExpiryFormat,
    #[error("card has expired")]
    Expired,
    #[error("expiry is more than {} years ahead", EXPIRY_AHEAD_MAX_YEARS)]
    TooFarAhead,
    #[error("security code must be {expected_len} digits for this card")]
    BadCvv { expected_len: usize },
}

impl CardError {
    /// Machine-readable error code for the API's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            CardError::NotDigits
            | CardError::WrongLength
            | CardError::LengthNotValidForBrand { .. } => "invalid_card_number",
            CardError::LuhnFailed => "luhn_check_failed",
            CardError::UnknownBrand => "unsupported_card_brand",
            CardError::BadMonth
            | CardError::BadYear
            | CardError::ExpiryFormat
            | CardError::TooFarAhead => "invalid_expiry",
            CardError::Expired => "card_expired",
            CardError::BadCvv { .. } => "invalid_cvv",
        }
    }

    /// The request field at fault, for the API's `error.field`.
    pub fn field(&self) -> &'static str {
        match self {
            CardError::NotDigits
            | CardError::WrongLength
            | CardError::LuhnFailed
            | CardError::UnknownBrand
            | CardError::LengthNotValidForBrand { .. } => "card.number",
            // A malformed "MM/YY" string is reported against the month, where it starts.
            CardError::BadMonth | CardError::ExpiryFormat => "card.exp_month",
            // Expiry is judged as a whole; the year is the coarser half, so it takes the blame.
            CardError::BadYear | CardError::Expired | CardError::TooFarAhead => "card.exp_year",
            CardError::BadCvv { .. } => "card.cvv",
        }
    }
}

/// Luhn (ISO/IEC 7812-1 Annex B) check over an all-digit string, check digit last.
/// Empty or non-digit input is not valid.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum_mod10 = digits.bytes().rev().enumerate().fold(0u32, |acc, (i, b)| {
        let d = u32::from(b - b'0');
        let d = if i % 2 == 1 {
            let doubled = d * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            d
        };
        // Reduce as we go so arbitrarily long input cannot overflow.
        (acc + d) % 10
    });
    sum_mod10 == 0
}

/// One IIN/BIN range: the first `prefix_len` digits, read as a number, fall in `low..=high`.
struct BinRange {
    prefix_len: usize,
    low: u32,
    high: u32,
    brand: CardBrand,
}

const fn bin(prefix_len: usize, low: u32, high: u32, brand: CardBrand) -> BinRange {
    BinRange {
        prefix_len,
        low,
        high,
        brand,
    }
}

/// Ranges do not overlap (a test checks every 6-digit BIN), so the first match is the only one.
const BIN_RANGES: &[BinRange] = &[
    bin(1, 4, 4, CardBrand::Visa),
    bin(2, 51, 55, CardBrand::Mastercard),
    bin(4, 2221, 2720, CardBrand::Mastercard),
    bin(2, 34, 34, CardBrand::Amex),
    bin(2, 37, 37, CardBrand::Amex),
    bin(4, 6011, 6011, CardBrand::Discover),
    bin(6, 622126, 622925, CardBrand::Discover),
    bin(3, 644, 649, CardBrand::Discover),
    bin(2, 65, 65, CardBrand::Discover),
    bin(4, 3528, 3589, CardBrand::Jcb),
    // Legacy JCB ranges; Authorize.Net's sandbox JCB card 3088000000000017 lives here.
    bin(4, 3088, 3094, CardBrand::Jcb),
    bin(4, 3096, 3102, CardBrand::Jcb),
    bin(4, 3112, 3120, CardBrand::Jcb),
    bin(4, 3158, 3159, CardBrand::Jcb),
    bin(4, 3337, 3349, CardBrand::Jcb),
    bin(3, 300, 305, CardBrand::Diners),
    bin(4, 3095, 3095, CardBrand::Diners),
    bin(2, 36, 36, CardBrand::Diners),
    bin(2, 38, 39, CardBrand::Diners),
];

/// Brand of a card number by its leading digits, or `None` for a brand we do not accept.
/// Length is not checked here; [`Pan::parse`] does that.
pub fn brand_of(digits: &str) -> Option<CardBrand> {
    BIN_RANGES.iter().find_map(|range| {
        let prefix = digits.get(..range.prefix_len)?;
        let value: u32 = prefix.bytes().try_fold(0u32, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })?;
        (range.low..=range.high)
            .contains(&value)
            .then_some(range.brand)
    })
}

/// A primary account number that passed every check: 12–19 digits, Luhn-valid, a brand we
/// accept, a length that brand issues. Holds only digits (separators stripped).
///
/// Deliberately no `Serialize`, no derived `Debug`, no `PartialEq`: the only ways to the digits
/// are the masked forms and [`Pan::expose_digits`].
#[derive(Clone, ZeroizeOnDrop)]
pub struct Pan {
    digits: String,
    #[zeroize(skip)]
    brand: CardBrand,
}

impl Pan {
    /// Parses user input; spaces and dashes between digits are accepted and dropped.
    pub fn parse(input: &str) -> Result<Pan, CardError> {
        // Fixed capacity so pushing never reallocates (a reallocation would free an unzeroized
        // copy), and `Zeroizing` wipes the buffer on every early return.
        let mut digits = Zeroizing::new(String::with_capacity(PAN_DIGITS_MAX));
        let mut count = 0usize;
        for c in input.chars() {
            match c {
                '0'..='9' => {
                    count += 1;
                    if count <= PAN_DIGITS_MAX {
                        digits.push(c);
                    }
                }
                ' ' | '-' => {}
                _ => return Err(CardError::NotDigits),
            }
        }
        if !(PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&count) {
            return Err(CardError::WrongLength);
        }
        // Luhn first: a mistyped digit is the commonest error and deserves the precise message.
        if !luhn_valid(&digits) {
            return Err(CardError::LuhnFailed);
        }
        let brand = brand_of(&digits).ok_or(CardError::UnknownBrand)?;
        if !brand.allows_len(count) {
            return Err(CardError::LengthNotValidForBrand { brand, len: count });
        }
        // `take` moves the heap buffer out without copying it; the empty husk is dropped.
        Ok(Pan {
            digits: std::mem::take(&mut *digits),
            brand,
        })
    }

    pub fn brand(&self) -> CardBrand {
        self.brand
    }

    /// Last four digits; safe to show and store (PCI DSS 3.4.1).
    pub fn last4(&self) -> &str {
        &self.digits[self.digits.len() - 4..]
    }

    /// First six digits (the BIN); safe to show and store (PCI DSS 3.4.1).
    pub fn bin6(&self) -> &str {
        &self.digits[..6]
    }

    /// BIN and last four with `*` between, e.g. `411111******1111`.
    pub fn masked(&self) -> String {
        mask_pan(&self.digits)
    }

    /// The full card number. Only for the vault's encryption and the processor request:
    /// never log, display, or store the result in clear.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks an all-digit string of 12–19 digits: BIN + last four from 13 digits up, only the
/// last four below that (first 6 + last 4 of 12 would leave just two digits hidden).
fn mask_pan(digits: &str) -> String {
    let len = digits.len();
    let tail = len.min(4);
    let head = if len >= 13 { 6 } else { 0 };
    let mut out = String::with_capacity(len);
    out.push_str(&digits[..head]);
    out.extend(std::iter::repeat_n('*', len - head - tail));
    out.push_str(&digits[len - tail..]);
    out
}

/// Card expiry month. Valid through the last day of `month`; not secret on its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expiry {
    month: u32,
    year: i32,
}

impl Expiry {
    /// `year` may be two digits (meaning 20YY) or four. `today` is the caller's date so that
    /// tests and the service share one injectable clock.
    pub fn parse(month: u32, year: i32, today: NaiveDate) -> Result<Expiry, CardError> {
        if !(1..=12).contains(&month) {
            return Err(CardError::BadMonth);
        }
        let year = match year {
            0..=99 => 2000 + year,
            1000..=9999 => year,
            _ => return Err(CardError::BadYear),
        };
        let expiry = Expiry { month, year };
        let months_ahead = expiry.month_index() - month_index_of(today);
        if months_ahead < 0 {
            return Err(CardError::Expired);
        }
        if months_ahead > EXPIRY_AHEAD_MAX_YEARS * 12 {
            return Err(CardError::TooFarAhead);
        }
        Ok(expiry)
    }

    /// An expiry read back from the vault: checked for shape only, since a card stored last
    /// year may have expired since (the processor, not the vault, refuses it then).
    pub fn stored(month: u32, year: i32) -> Result<Expiry, CardError> {
        if !(1..=12).contains(&month) {
            return Err(CardError::BadMonth);
        }
        if !(2000..=9999).contains(&year) {
            return Err(CardError::BadYear);
        }
        Ok(Expiry { month, year })
    }

    /// Parses `MM/YY` or `MM/YYYY` (surrounding whitespace ignored), then as [`Expiry::parse`].
    pub fn parse_str(input: &str, today: NaiveDate) -> Result<Expiry, CardError> {
        let (mm, yy) = input
            .trim()
            .split_once('/')
            .ok_or(CardError::ExpiryFormat)?;
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if mm.len() != 2 || !all_digits(mm) {
            return Err(CardError::BadMonth);
        }
        if !matches!(yy.len(), 2 | 4) || !all_digits(yy) {
            return Err(CardError::BadYear);
        }
        let month = mm.parse().map_err(|_| CardError::BadMonth)?;
        let year = yy.parse().map_err(|_| CardError::BadYear)?;
        Expiry::parse(month, year, today)
    }

    pub fn month(&self) -> u32 {
        self.month
    }

    /// Four-digit year.
    pub fn year(&self) -> i32 {
        self.year
    }

    /// Whether the card is past its expiry on `today` (a stored card ages after parsing).
    pub fn is_expired_on(&self, today: NaiveDate) -> bool {
        self.month_index() < month_index_of(today)
    }

    fn month_index(&self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }
}

fn month_index_of(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:04}", self.month, self.year)
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expiry({self})")
    }
}

/// Card security code (CVV2/CVC2/CID). Used for one authorization and never stored (PCI DSS
/// 3.3.1.2), so it has no `Display` and no `Serialize`, and is zeroized on drop.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Cvv {
    digits: String,
}

impl Cvv {
    /// Exactly [`CardBrand::cvv_len`] ASCII digits, nothing else.
    pub fn parse(input: &str, brand: CardBrand) -> Result<Cvv, CardError> {
        let expected_len = brand.cvv_len();
        if input.len() != expected_len || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::BadCvv { expected_len });
        }
        Ok(Cvv {
            digits: input.to_owned(),
        })
    }

    /// The code itself. For the processor call only: never log, display or store it.
    pub fn expose(&self) -> &str {
        &self.digits
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer};

    use CardBrand::{Amex, Diners, Discover, Jcb, Mastercard, Visa};

    fn check(input: &str, expected: Result<CardBrand, CardError>) {
        let got = Pan::parse(input).map(|pan| pan.brand());
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn reference_test_cards() {
        // gateway.md §4.2
        check("4111111111111111", Ok(Visa));
        check("4242424242424242", Ok(Visa));
        check("4012888888881881", Ok(Visa));
        check("4007000000027", Ok(Visa));
        check("4012888818888", Ok(Visa));
        check("5555555555554444", Ok(Mastercard));
        check("5105105105105100", Ok(Mastercard));
        check("5424000000000015", Ok(Mastercard));
        check("2223000010309703", Ok(Mastercard));
        check("2223000048400011", Ok(Mastercard));
        check("2222420000001113", Ok(Mastercard));
        check("378282246310005", Ok(Amex));
        check("371449635398431", Ok(Amex));
        check("370000000000002", Ok(Amex));
        check("6011111111111117", Ok(Discover));
        check("6011000990139424", Ok(Discover));
        check("6011000000000012", Ok(Discover));
        check("3566002020360505", Ok(Jcb));
        check("3530111333300000", Ok(Jcb));
        check("3088000000000017", Ok(Jcb));
        check("30569309025904", Ok(Diners));
        check("38520000023237", Ok(Diners));
        check("38000000000006", Ok(Diners));
        // Stripe decline cards are well-formed; the decline happens at the processor.
        check("4000000000000002", Ok(Visa));
        check("4000000000009995", Ok(Visa));
        check("4000000000009987", Ok(Visa));
        check("4000000000009979", Ok(Visa));
        check("4000000000000069", Ok(Visa));
        check("4000000000000127", Ok(Visa));
        check("4000000000000119", Ok(Visa));
        check("4000000000000259", Ok(Visa));
        check("4000000000003220", Ok(Visa));
        check("4242424242424241", Err(CardError::LuhnFailed));
    }

    #[test]
    fn authorize_net_sandbox_cards() {
        check("4007000000027", Ok(Visa));
        check("4012888818888", Ok(Visa));
        check("4111111111111111", Ok(Visa));
        check("5424000000000015", Ok(Mastercard));
        check("2223000010309703", Ok(Mastercard));
        check("2223000010309711", Ok(Mastercard));
        check("370000000000002", Ok(Amex));
        check("6011000000000012", Ok(Discover));
        check("3088000000000017", Ok(Jcb));
        check("38000000000006", Ok(Diners));
    }

    #[test]
    fn bin_range_edges() {
        // All Luhn-valid, so only the prefix decides.
        check("2221000000000009", Ok(Mastercard));
        check("2720999999999996", Ok(Mastercard));
        check("2220999999999991", Err(CardError::UnknownBrand));
        check("2721000000000004", Err(CardError::UnknownBrand));
        check("5100000000000008", Ok(Mastercard));
        check("5599999999999997", Ok(Mastercard));
        check("5000000000000009", Err(CardError::UnknownBrand));
        check("5600000000000003", Err(CardError::UnknownBrand));
        check("6221260000000000", Ok(Discover));
        check("6229259999999992", Ok(Discover));
        check("6221259999999990", Err(CardError::UnknownBrand));
        check("6229260000000002", Err(CardError::UnknownBrand));
        check("6440000000000005", Ok(Discover));
        check("6499999999999996", Ok(Discover));
        check("6439999999999999", Err(CardError::UnknownBrand));
        check("6500000000000002", Ok(Discover));
        check("6011000000000004", Ok(Discover));
        check("3528000000000007", Ok(Jcb));
        check("3589999999999994", Ok(Jcb));
        check("3527999999999999", Err(CardError::UnknownBrand));
        check("3590000000000000", Err(CardError::UnknownBrand));
        check("3094000000000001", Ok(Jcb));
        check("3096000000000009", Ok(Jcb));
        check("3087000000000000", Err(CardError::UnknownBrand));
        check("30000000000004", Ok(Diners));
        check("30599999999993", Ok(Diners));
        check("30600000000001", Err(CardError::UnknownBrand));
        check("30950000000000", Ok(Diners));
        check("36000000000008", Ok(Diners));
        check("39000000000005", Ok(Diners));
        check("9012345678901238", Err(CardError::UnknownBrand));
    }

    #[test]
    fn lengths() {
        check("4111111111111111110", Ok(Visa));
        check("6011000000000000001", Ok(Discover));
        check("6440000000000000002", Ok(Discover));
        check("6221260000000000001", Ok(Discover));
        check("3528000000000000007", Ok(Jcb));
        check("3000000000000000007", Ok(Diners));
        check("3600000000000008", Ok(Diners));
        let wrong = |brand, len| Err(CardError::LengthNotValidForBrand { brand, len });
        check("411111111117", wrong(Visa, 12));
        check("41111111111114", wrong(Visa, 14));
        check("411111111111111118", wrong(Visa, 18));
        check("51051051051051", wrong(Mastercard, 14));
        check("5300000000000000009", wrong(Mastercard, 19));
        check("3400000000000000", wrong(Amex, 16));
        check("37000000000007", wrong(Amex, 14));
        check("352800000000007", wrong(Jcb, 15));
        check("41111111112", Err(CardError::WrongLength));
        check("41111111111111111115", Err(CardError::WrongLength));
        check("4111111111111111111112", Err(CardError::WrongLength));
        check("", Err(CardError::WrongLength));
    }

    #[test]
    fn input_forms() {
        check("4111 1111 1111 1111", Ok(Visa));
        check("4111-1111-1111-1111", Ok(Visa));
        check(" 3782-822463-10005 ", Ok(Amex));
        check("4111111111111111a", Err(CardError::NotDigits));
        check("411l111111111111", Err(CardError::NotDigits));
        check("4111.1111.1111.1111", Err(CardError::NotDigits));
        check("4111\t1111111111111", Err(CardError::NotDigits));
        // Full-width digits are not ASCII digits.
        check(
            "４１１１１１１１１１１１１１１１",
            Err(CardError::NotDigits),
        );
        check("---- ----", Err(CardError::WrongLength));
        let pan = Pan::parse("4111 1111-1111 1111").expect("valid");
        assert_eq!(pan.expose_digits(), "4111111111111111");
    }

    #[test]
    fn secrets_zeroize_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<Pan>();
        assert_zeroize_on_drop::<Cvv>();
    }

    #[test]
    fn accessors() {
        let pan = Pan::parse("378282246310005").expect("valid");
        assert_eq!(pan.brand(), Amex);
        assert_eq!(pan.bin6(), "378282");
        assert_eq!(pan.last4(), "0005");
        assert_eq!(pan.expose_digits(), "378282246310005");
    }

    fn check_mask(input: &str, expected: &str) {
        assert_eq!(mask_pan(input), expected, "input {input:?}");
    }

    #[test]
    fn masking() {
        check_mask("4111111111111111", "411111******1111");
        check_mask("378282246310005", "378282*****0005");
        check_mask("30569309025904", "305693****5904");
        check_mask("4007000000027", "400700***0027");
        check_mask("411111111117", "********1117");
        check_mask("4111111111111111110", "411111*********1110");

        let pan = Pan::parse("4111111111111111").expect("valid");
        assert_eq!(pan.masked(), "411111******1111");
        assert_eq!(pan.to_string(), "411111******1111");
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        assert_eq!(format!("{pan:#?}"), "Pan(411111******1111)");
        // A containing struct's derived Debug goes through ours.
        #[derive(Debug)]
        #[allow(dead_code)] // only read through Debug
        struct Request {
            pan: Pan,
            cvv: Cvv,
        }
        let request = Request {
            pan,
            cvv: Cvv::parse("123", Visa).expect("valid"),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("4111111111111111"), "{shown}");
        assert!(shown.contains("Cvv(***)"), "{shown}");
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, 15).expect("valid date")
    }

    fn check_expiry(month: u32, year: i32, expected: Result<&str, CardError>) {
        let got = Expiry::parse(month, year, today()).map(|e| e.to_string());
        assert_eq!(got, expected.map(str::to_owned), "{month}/{year}");
    }

    #[test]
    fn expiry() {
        check_expiry(5, 2026, Ok("05/2026"));
        check_expiry(4, 2026, Err(CardError::Expired));
        check_expiry(12, 2025, Err(CardError::Expired));
        check_expiry(6, 2026, Ok("06/2026"));
        check_expiry(1, 2027, Ok("01/2027"));
        check_expiry(5, 26, Ok("05/2026"));
        check_expiry(4, 26, Err(CardError::Expired));
        check_expiry(12, 30, Ok("12/2030"));
        check_expiry(1, 0, Err(CardError::Expired));
        check_expiry(13, 2027, Err(CardError::BadMonth));
        check_expiry(0, 2027, Err(CardError::BadMonth));
        check_expiry(5, 2046, Ok("05/2046"));
        check_expiry(6, 2046, Err(CardError::TooFarAhead));
        check_expiry(1, 2047, Err(CardError::TooFarAhead));
        check_expiry(5, 1999, Err(CardError::Expired));
        check_expiry(5, 100, Err(CardError::BadYear));
        check_expiry(5, 999, Err(CardError::BadYear));
        check_expiry(5, -1, Err(CardError::BadYear));
        check_expiry(5, 10000, Err(CardError::BadYear));
    }

    #[test]
    fn expiry_is_valid_through_last_day_of_month() {
        let last_day = NaiveDate::from_ymd_opt(2026, 5, 31).expect("valid date");
        let next_day = NaiveDate::from_ymd_opt(2026, 6, 1).expect("valid date");
        let expiry = Expiry::parse(5, 2026, last_day).expect("valid on last day");
        assert!(!expiry.is_expired_on(last_day));
        assert!(expiry.is_expired_on(next_day));
        assert_eq!(Expiry::parse(5, 2026, next_day), Err(CardError::Expired));
        assert_eq!(expiry.month(), 5);
        assert_eq!(expiry.year(), 2026);
        assert_eq!(format!("{expiry:?}"), "Expiry(05/2026)");
    }

    fn check_expiry_str(input: &str, expected: Result<&str, CardError>) {
        let got = Expiry::parse_str(input, today()).map(|e| e.to_string());
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn expiry_str() {
        check_expiry_str("05/26", Ok("05/2026"));
        check_expiry_str("05/2026", Ok("05/2026"));
        check_expiry_str(" 12/30 ", Ok("12/2030"));
        check_expiry_str("04/26", Err(CardError::Expired));
        check_expiry_str("13/27", Err(CardError::BadMonth));
        check_expiry_str("00/27", Err(CardError::BadMonth));
        check_expiry_str("5/27", Err(CardError::BadMonth));
        check_expiry_str("ab/27", Err(CardError::BadMonth));
        check_expiry_str("05/027", Err(CardError::BadYear));
        check_expiry_str("05/2o27", Err(CardError::BadYear));
        check_expiry_str("05/+7", Err(CardError::BadYear));
        check_expiry_str("05/", Err(CardError::BadYear));
        check_expiry_str("0527", Err(CardError::ExpiryFormat));
        check_expiry_str("", Err(CardError::ExpiryFormat));
        check_expiry_str("05/50", Err(CardError::TooFarAhead));
    }

    fn check_cvv(input: &str, brand: CardBrand, expected: Result<(), CardError>) {
        let got = Cvv::parse(input, brand).map(|cvv| assert_eq!(cvv.expose(), input));
        assert_eq!(got, expected, "input {input:?} for {brand}");
    }

    #[test]
    fn cvv() {
        check_cvv("123", Visa, Ok(()));
        check_cvv("000", Mastercard, Ok(()));
        check_cvv("1234", Amex, Ok(()));
        check_cvv("1234", Visa, Err(CardError::BadCvv { expected_len: 3 }));
        check_cvv("123", Amex, Err(CardError::BadCvv { expected_len: 4 }));
        check_cvv("12", Discover, Err(CardError::BadCvv { expected_len: 3 }));
        check_cvv("12a", Jcb, Err(CardError::BadCvv { expected_len: 3 }));
        check_cvv(" 123", Diners, Err(CardError::BadCvv { expected_len: 3 }));
        check_cvv("", Visa, Err(CardError::BadCvv { expected_len: 3 }));
        let cvv = Cvv::parse("987", Visa).expect("valid");
        assert_eq!(format!("{cvv:?}"), "Cvv(***)");
        assert_eq!(format!("{cvv:#?}"), "Cvv(***)");
    }

    fn check_error(err: CardError, code: &str, field: &str) {
        assert_eq!((err.code(), err.field()), (code, field), "{err:?}");
    }

    /// Every variant; the match without a wildcard breaks the build when one is added.
    fn all_errors() -> Vec<CardError> {
        let all = vec![
            CardError::NotDigits,
            CardError::WrongLength,
            CardError::LuhnFailed,
            CardError::UnknownBrand,
            CardError::LengthNotValidForBrand {
                brand: Visa,
                len: 14,
            },
            CardError::BadMonth,
            CardError::BadYear,
            CardError::ExpiryFormat,
            CardError::Expired,
            CardError::TooFarAhead,
            CardError::BadCvv { expected_len: 4 },
        ];
        for err in &all {
            match err {
                CardError::NotDigits
                | CardError::WrongLength
                | CardError::LuhnFailed
                | CardError::UnknownBrand
                | CardError::LengthNotValidForBrand { .. }
                | CardError::BadMonth
                | CardError::BadYear
                | CardError::ExpiryFormat
                | CardError::Expired
                | CardError::TooFarAhead
                | CardError::BadCvv { .. } => {}
            }
        }
        all
    }

    #[test]
    fn error_codes_and_fields() {
        check_error(CardError::NotDigits, "invalid_card_number", "card.number");
        check_error(CardError::WrongLength, "invalid_card_number", "card.number");
        check_error(CardError::LuhnFailed, "luhn_check_failed", "card.number");
        check_error(
            CardError::UnknownBrand,
            "unsupported_card_brand",
            "card.number",
        );
        check_error(
            CardError::LengthNotValidForBrand {
                brand: Amex,
                len: 16,
            },
            "invalid_card_number",
            "card.number",
        );
        check_error(CardError::BadMonth, "invalid_expiry", "card.exp_month");
        check_error(CardError::ExpiryFormat, "invalid_expiry", "card.exp_month");
        check_error(CardError::BadYear, "invalid_expiry", "card.exp_year");
        check_error(CardError::TooFarAhead, "invalid_expiry", "card.exp_year");
        check_error(CardError::Expired, "card_expired", "card.exp_year");
        check_error(
            CardError::BadCvv { expected_len: 3 },
            "invalid_cvv",
            "card.cvv",
        );
    }

    fn longest_digit_run(s: &str) -> usize {
        s.split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn error_messages_never_contain_card_digits() {
        let pan = "4012888888881881";
        let cvv = "9876";
        let mut errors = all_errors();
        let bad_pans = [
            "4012888888881882".to_owned(),  // Luhn
            format!("{pan}x"),              // not digits
            format!("{pan}0000"),           // too long
            pan[..11].to_owned(),           // too short
            "40128888888818888".to_owned(), // wrong length for Visa (17)
            "9012888888881880".to_owned(),  // unknown brand
        ];
        let expected = [
            CardError::LuhnFailed,
            CardError::NotDigits,
            CardError::WrongLength,
            CardError::WrongLength,
            CardError::LengthNotValidForBrand {
                brand: Visa,
                len: 17,
            },
            CardError::UnknownBrand,
        ];
        for (input, expected) in bad_pans.iter().zip(expected) {
            let err = Pan::parse(input).expect_err("must be rejected");
            assert_eq!(err, expected, "input {input:?}");
            errors.push(err);
        }
        for (input, brand) in [(cvv, Visa), ("987", Amex), ("98a", Visa), ("98765", Amex)] {
            errors.push(Cvv::parse(input, brand).expect_err("must be rejected"));
        }
        errors.push(Expiry::parse_str("98/76", today()).expect_err("bad month"));
        errors.push(Expiry::parse_str(pan, today()).expect_err("not an expiry"));
        for err in &errors {
            for shown in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
                assert!(!shown.contains(pan), "{shown}");
                assert!(!shown.contains(cvv) && !shown.contains("987"), "{shown}");
                for window in pan.as_bytes().windows(5) {
                    let window = std::str::from_utf8(window).expect("ascii");
                    assert!(!shown.contains(window), "{shown} contains {window}");
                }
                // Only small numbers (lengths, limits) may appear at all.
                assert!(longest_digit_run(&shown) <= 2, "{shown}");
            }
        }
    }

    #[test]
    fn brand_names_match_serde() {
        for brand in CardBrand::ALL {
            let de: StrDeserializer<'_, ValueError> = brand.as_str().into_deserializer();
            assert_eq!(CardBrand::deserialize(de), Ok(brand));
            assert_eq!(brand.to_string(), brand.as_str());
        }
        let de: StrDeserializer<'_, ValueError> = "Visa".into_deserializer();
        assert!(CardBrand::deserialize(de).is_err());
    }

    #[test]
    fn bin_ranges_do_not_overlap() {
        for bin6 in 100_000u32..1_000_000 {
            let digits = bin6.to_string();
            let matches = BIN_RANGES
                .iter()
                .filter(|r| {
                    let prefix: u32 = digits[..r.prefix_len].parse().expect("digits");
                    (r.low..=r.high).contains(&prefix)
                })
                .count();
            assert!(matches <= 1, "BIN {digits} matches {matches} ranges");
        }
    }

    fn with_check_digit(payload: &str) -> String {
        (b'0'..=b'9')
            .map(|d| format!("{payload}{}", char::from(d)))
            .find(|candidate| luhn_valid(candidate))
            .expect("exactly one check digit fits")
    }

    proptest! {
        #[test]
        fn luhn_check_digit_passes_and_any_single_digit_change_fails(
            payload in "[0-9]{11,19}",
        ) {
            let number = with_check_digit(&payload);
            prop_assert!(luhn_valid(&number));
            let bytes = number.as_bytes();
            for (i, &original) in bytes.iter().enumerate() {
                for d in b'0'..=b'9' {
                    if d == original {
                        continue;
                    }
                    let mut changed = bytes.to_vec();
                    changed[i] = d;
                    let changed = String::from_utf8(changed).expect("ascii");
                    prop_assert!(!luhn_valid(&changed), "{} -> {}", number, changed);
                }
            }
        }

        #[test]
        fn mask_never_shows_more_than_ten_digits(digits in "[0-9]{12,19}") {
            let masked = mask_pan(&digits);
            prop_assert_eq!(masked.len(), digits.len());
            let shown = masked.bytes().filter(u8::is_ascii_digit).count();
            prop_assert!(shown <= 10, "{}", masked);
            prop_assert!(longest_digit_run(&masked) <= 6, "{}", masked);
            for window in digits.as_bytes().windows(11) {
                let window = std::str::from_utf8(window).expect("ascii");
                prop_assert!(!masked.contains(window));
            }
        }

        #[test]
        fn pan_formatting_never_shows_more_than_ten_digits(
            // One prefix per brand, at lengths that brand issues.
            (prefix, len) in prop_oneof![
                Just(("4", 13)), Just(("4", 16)), Just(("4", 19)), Just(("2221", 16)),
                Just(("34", 15)), Just(("6011", 17)), Just(("3528", 18)), Just(("36", 14)),
            ],
            body in "[0-9]{18}",
        ) {
            let payload = format!("{prefix}{body}");
            let number = with_check_digit(&payload[..len - 1]);
            let pan = Pan::parse(&number).expect("valid");
            for shown in [pan.to_string(), format!("{pan:?}"), pan.masked()] {
                prop_assert!(shown.bytes().filter(u8::is_ascii_digit).count() <= 10, "{}", shown);
                prop_assert!(longest_digit_run(&shown) <= 6, "{}", shown);
                prop_assert!(!shown.contains(&number), "{}", shown);
            }
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,40}") {
            let _ = Pan::parse(&input);
            let _ = Expiry::parse_str(&input, today());
            let _ = Cvv::parse(&input, Amex);
        }
    }
}
