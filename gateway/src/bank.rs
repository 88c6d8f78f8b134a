//! Bank-account (ACH / eCheck) data as types: ABA-checked routing numbers, account numbers
//! that mask and zeroize themselves, account types, and the NACHA SEC codes each type may use.
//!
//! Routing numbers identify a bank and are public; account numbers are vaulted like PANs, so
//! they leave [`AccountNumber`] only through [`AccountNumber::expose_digits`] and errors never
//! echo them.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::ZeroizeOnDrop;

/// ABA routing transit numbers are always exactly this long.
pub const ROUTING_NUMBER_DIGITS: usize = 9;
/// Shortest account number we accept.
pub const ACCOUNT_NUMBER_DIGITS_MIN: usize = 4;
/// NACHA's DFI account number field and Authorize.Net's `accountNumber` hold at most 17.
pub const ACCOUNT_NUMBER_DIGITS_MAX: usize = 17;

/// Why bank-account input was rejected. Messages never contain the account number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BankError {
    #[error("routing number must be exactly {} digits", ROUTING_NUMBER_DIGITS)]
    RoutingNumberFormat,
    #[error("routing number check digit does not match (ABA checksum)")]
    RoutingNumberChecksum,
    #[error("account number may contain only digits")]
    AccountNumberNotDigits,
    #[error(
        "account number must have {} to {} digits",
        ACCOUNT_NUMBER_DIGITS_MIN,
        ACCOUNT_NUMBER_DIGITS_MAX
    )]
    AccountNumberLength,
    #[error(
        "SEC code {sec} is not allowed for a {account_type} account; allowed: {}",
        .account_type.allowed_sec_codes_text()
    )]
    SecCodeNotAllowed {
        account_type: BankAccountType,
        sec: SecCode,
    },
}

impl BankError {
    /// Machine-readable error code for the API's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::RoutingNumberFormat | BankError::RoutingNumberChecksum => {
                "invalid_routing_number"
            }
            BankError::AccountNumberNotDigits | BankError::AccountNumberLength => {
                "invalid_account_number"
            }
            BankError::SecCodeNotAllowed { .. } => "sec_code_not_allowed",
        }
    }

    /// The request field at fault, for the API's `error.field`.
    pub fn field(&self) -> &'static str {
        match self {
            BankError::RoutingNumberFormat | BankError::RoutingNumberChecksum => {
                "bank_account.routing_number"
            }
            BankError::AccountNumberNotDigits | BankError::AccountNumberLength => {
                "bank_account.account_number"
            }
            BankError::SecCodeNotAllowed { .. } => "bank_account.sec_code",
        }
    }
}

/// ABA check: `3(d1+d4+d7) + 7(d2+d5+d8) + (d3+d6+d9) ≡ 0 (mod 10)` over exactly nine digits.
/// Catches every single-digit error and most transpositions.
pub fn aba_checksum_valid(digits: &str) -> bool {
    if digits.len() != ROUTING_NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    const WEIGHTS: [u32; 3] = [3, 7, 1];
    let sum: u32 = digits
        .bytes()
        .zip(WEIGHTS.iter().cycle())
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    sum.is_multiple_of(10)
}

/// A nine-digit ABA routing transit number with a correct check digit. Public data, so it
/// derives `Debug` and serializes as its digits; deserializing runs the same checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoutingNumber(String);

impl RoutingNumber {
    /// Exactly nine ASCII digits, no separators or whitespace: a routing number is copied, not
    /// typed in groups, and silently fixing one risks routing money to another bank.
    pub fn parse(input: &str) -> Result<RoutingNumber, BankError> {
        if input.len() != ROUTING_NUMBER_DIGITS || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BankError::RoutingNumberFormat);
        }
        if !aba_checksum_valid(input) {
            return Err(BankError::RoutingNumberChecksum);
        }
        Ok(RoutingNumber(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoutingNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoutingNumber {
    type Error = BankError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        RoutingNumber::parse(&value)
    }
}

impl From<RoutingNumber> for String {
    fn from(value: RoutingNumber) -> String {
        value.0
    }
}

/// A bank account number: 4–17 ASCII digits, leading zeros kept (they are significant).
///
/// No derived `Debug`, no `Serialize`, no `PartialEq`: the digits are reachable only through
/// [`AccountNumber::expose_digits`]; every other view shows the last four.
#[derive(Clone, ZeroizeOnDrop)]
pub struct AccountNumber {
    digits: String,
}

impl AccountNumber {
    /// Digits only, nothing stripped: the input is validated before it is copied, so no
    /// intermediate buffer with the digits is ever left behind.
    pub fn parse(input: &str) -> Result<AccountNumber, BankError> {
        if !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BankError::AccountNumberNotDigits);
        }
        if !(ACCOUNT_NUMBER_DIGITS_MIN..=ACCOUNT_NUMBER_DIGITS_MAX).contains(&input.len()) {
            return Err(BankError::AccountNumberLength);
        }
        Ok(AccountNumber {
            digits: input.to_owned(),
        })
    }

    /// Last four digits; what receipts and refunds (`XXXX` + last four) may carry.
    pub fn last4(&self) -> &str {
        &self.digits[self.digits.len() - 4..]
    }

    /// `****` and the last four, e.g. `****6789`. A fixed four stars so the mask does not
    /// reveal the length.
    pub fn masked(&self) -> String {
        format!("****{}", self.last4())
    }

    /// The full account number. Only for the vault's encryption and the processor request:
    /// never log, display, or store the result in clear.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }
}

impl fmt::Debug for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountNumber({})", self.masked())
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Kind of bank account; decides which SEC codes may be used. Connectors map these to their
/// own spelling (Authorize.Net: `checking | savings | businessChecking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankAccountType {
    Checking,
    Savings,
    BusinessChecking,
}

impl BankAccountType {
    pub const ALL: [BankAccountType; 3] = [
        BankAccountType::Checking,
        BankAccountType::Savings,
        BankAccountType::BusinessChecking,
    ];

    /// Stable snake_case name, the same as the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            BankAccountType::Checking => "checking",
            BankAccountType::Savings => "savings",
            BankAccountType::BusinessChecking => "business_checking",
        }
    }

    pub fn is_business(self) -> bool {
        matches!(self, BankAccountType::BusinessChecking)
    }

    /// SEC codes NACHA permits for this kind of account: CCD is corporate-only, PPD, WEB and
    /// TEL are consumer-only.
    pub fn allowed_sec_codes(self) -> &'static [SecCode] {
        if self.is_business() {
            &[SecCode::Ccd]
        } else {
            &[SecCode::Ppd, SecCode::Web, SecCode::Tel]
        }
    }

    fn allowed_sec_codes_text(self) -> &'static str {
        if self.is_business() {
            "CCD"
        } else {
            "PPD, WEB, TEL"
        }
    }
}

impl fmt::Display for BankAccountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// NACHA Standard Entry Class code: how the debit was authorized. The converted-check codes
/// (ARC, BOC) need a check number and are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SecCode {
    /// Prearranged payment and deposit: consumer, written standing authorization.
    Ppd,
    /// Corporate credit or debit: business accounts.
    Ccd,
    /// Internet-initiated consumer debit.
    Web,
    /// Telephone-initiated consumer debit.
    Tel,
}

impl SecCode {
    pub const ALL: [SecCode; 4] = [SecCode::Ppd, SecCode::Ccd, SecCode::Web, SecCode::Tel];

    /// Upper-case code as sent to processors (Authorize.Net `echeckType`), same as serde.
    pub fn as_str(self) -> &'static str {
        match self {
            SecCode::Ppd => "PPD",
            SecCode::Ccd => "CCD",
            SecCode::Web => "WEB",
            SecCode::Tel => "TEL",
        }
    }
}

impl fmt::Display for SecCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejects a SEC code the account type may not use; a consumer debit under CCD comes back as
/// an R05 return, a business debit under a consumer code breaks the originator agreement.
pub fn check_sec_code(account_type: BankAccountType, sec: SecCode) -> Result<(), BankError> {
    if account_type.allowed_sec_codes().contains(&sec) {
        Ok(())
    } else {
        Err(BankError::SecCodeNotAllowed { account_type, sec })
    }
}

/// SEC code to use when the request names none: CCD for business accounts, WEB for consumer
/// accounts because our payments are authorized online.
pub fn default_sec_code(account_type: BankAccountType) -> SecCode {
    if account_type.is_business() {
        SecCode::Ccd
    } else {
        SecCode::Web
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer, StringDeserializer};

    use BankAccountType::{BusinessChecking, Checking, Savings};
    use SecCode::{Ccd, Ppd, Tel, Web};

    fn check(input: &str, expected: Result<(), BankError>) {
        let got = RoutingNumber::parse(input).map(|rn| assert_eq!(rn.as_str(), input));
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn routing_numbers() {
        check("021000021", Ok(()));
        check("111000025", Ok(()));
        check("011000015", Ok(()));
        check("110000000", Ok(()));
        check("122105278", Ok(()));
        check("123456789", Err(BankError::RoutingNumberChecksum));
        check("021000022", Err(BankError::RoutingNumberChecksum));
        check("012000021", Err(BankError::RoutingNumberChecksum));
        check("02100002", Err(BankError::RoutingNumberFormat));
        check("0210000210", Err(BankError::RoutingNumberFormat));
        check("02100002a", Err(BankError::RoutingNumberFormat));
        check("021-000-021", Err(BankError::RoutingNumberFormat));
        check(" 021000021", Err(BankError::RoutingNumberFormat));
        check("", Err(BankError::RoutingNumberFormat));
        check("０２１０００２１", Err(BankError::RoutingNumberFormat));
    }

    #[test]
    fn routing_number_views_and_serde() {
        let rn = RoutingNumber::parse("021000021").expect("valid");
        assert_eq!(rn.to_string(), "021000021");
        assert_eq!(format!("{rn:?}"), "RoutingNumber(\"021000021\")");
        assert_eq!(String::from(rn.clone()), "021000021");
        let de: StringDeserializer<ValueError> = "021000021".to_owned().into_deserializer();
        assert_eq!(RoutingNumber::deserialize(de), Ok(rn));
        let de: StringDeserializer<ValueError> = "123456789".to_owned().into_deserializer();
        assert!(RoutingNumber::deserialize(de).is_err());
    }

    fn check_account(input: &str, expected: Result<&str, BankError>) {
        let got = AccountNumber::parse(input).map(|acct| {
            assert_eq!(acct.expose_digits(), input);
            acct.to_string()
        });
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn account_numbers() {
        check_account("000123456789", Ok("****6789"));
        check_account("123120006", Ok("****0006"));
        check_account("1234", Ok("****1234"));
        check_account("12345678901234567", Ok("****4567"));
        check_account("123", Err(BankError::AccountNumberLength));
        check_account("", Err(BankError::AccountNumberLength));
        check_account("123456789012345678", Err(BankError::AccountNumberLength));
        check_account("1234-5678", Err(BankError::AccountNumberNotDigits));
        check_account("1234 5678", Err(BankError::AccountNumberNotDigits));
        check_account("12345678x", Err(BankError::AccountNumberNotDigits));
    }

    #[test]
    fn account_number_zeroizes_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<AccountNumber>();
    }

    #[test]
    fn account_number_masking() {
        let acct = AccountNumber::parse("000123456789").expect("valid");
        assert_eq!(acct.last4(), "6789");
        assert_eq!(acct.masked(), "****6789");
        assert_eq!(acct.to_string(), "****6789");
        assert_eq!(format!("{acct:?}"), "AccountNumber(****6789)");
        assert_eq!(format!("{acct:#?}"), "AccountNumber(****6789)");
    }

    fn check_sec(account_type: BankAccountType, sec: SecCode, allowed: bool) {
        let expected = if allowed {
            Ok(())
        } else {
            Err(BankError::SecCodeNotAllowed { account_type, sec })
        };
        assert_eq!(
            check_sec_code(account_type, sec),
            expected,
            "{account_type} {sec}"
        );
    }

    #[test]
    fn sec_code_matrix() {
        check_sec(Checking, Ppd, true);
        check_sec(Checking, Ccd, false);
        check_sec(Checking, Web, true);
        check_sec(Checking, Tel, true);
        check_sec(Savings, Ppd, true);
        check_sec(Savings, Ccd, false);
        check_sec(Savings, Web, true);
        check_sec(Savings, Tel, true);
        check_sec(BusinessChecking, Ppd, false);
        check_sec(BusinessChecking, Ccd, true);
        check_sec(BusinessChecking, Web, false);
        check_sec(BusinessChecking, Tel, false);
    }

    #[test]
    fn default_sec_codes() {
        assert_eq!(default_sec_code(Checking), Web);
        assert_eq!(default_sec_code(Savings), Web);
        assert_eq!(default_sec_code(BusinessChecking), Ccd);
        for account_type in BankAccountType::ALL {
            assert_eq!(
                check_sec_code(account_type, default_sec_code(account_type)),
                Ok(())
            );
        }
        assert!(BusinessChecking.is_business());
        assert!(!Checking.is_business() && !Savings.is_business());
    }

    #[test]
    fn names_match_serde() {
        for account_type in BankAccountType::ALL {
            let de: StrDeserializer<'_, ValueError> = account_type.as_str().into_deserializer();
            assert_eq!(BankAccountType::deserialize(de), Ok(account_type));
            assert_eq!(account_type.to_string(), account_type.as_str());
        }
        assert_eq!(BusinessChecking.as_str(), "business_checking");
        for sec in SecCode::ALL {
            let de: StrDeserializer<'_, ValueError> = sec.as_str().into_deserializer();
            assert_eq!(SecCode::deserialize(de), Ok(sec));
            assert_eq!(sec.to_string(), sec.as_str());
        }
        let de: StrDeserializer<'_, ValueError> = "ppd".into_deserializer();
        assert!(SecCode::deserialize(de).is_err());
    }

    fn check_error(err: BankError, code: &str, field: &str) {
        assert_eq!((err.code(), err.field()), (code, field), "{err:?}");
    }

    #[test]
    fn error_codes_and_fields() {
        let routing = "bank_account.routing_number";
        let account = "bank_account.account_number";
        check_error(
            BankError::RoutingNumberFormat,
            "invalid_routing_number",
            routing,
        );
        check_error(
            BankError::RoutingNumberChecksum,
            "invalid_routing_number",
            routing,
        );
        check_error(
            BankError::AccountNumberNotDigits,
            "invalid_account_number",
            account,
        );
        check_error(
            BankError::AccountNumberLength,
            "invalid_account_number",
            account,
        );
        check_error(
            BankError::SecCodeNotAllowed {
                account_type: Savings,
                sec: Ccd,
            },
            "sec_code_not_allowed",
            "bank_account.sec_code",
        );
        assert_eq!(
            BankError::SecCodeNotAllowed {
                account_type: BusinessChecking,
                sec: Web,
            }
            .to_string(),
            "SEC code WEB is not allowed for a business_checking account; allowed: CCD"
        );
    }

    #[test]
    fn error_messages_never_contain_account_digits() {
        let account = "000123456789";
        let mut errors: Vec<BankError> = [
            format!("{account}x"),
            format!("{account}000000"),
            account[..3].to_owned(),
            format!("{}-{}", &account[..6], &account[6..]),
        ]
        .iter()
        .map(|input| AccountNumber::parse(input).expect_err("must be rejected"))
        .collect();
        // Someone pasting the account number into the routing field.
        errors.push(RoutingNumber::parse(account).expect_err("not a routing number"));
        errors.push(RoutingNumber::parse(&account[..9]).expect_err("bad checksum"));
        for account_type in BankAccountType::ALL {
            for sec in SecCode::ALL {
                errors.extend(check_sec_code(account_type, sec).err());
            }
        }
        for err in &errors {
            for shown in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
                for window in account.as_bytes().windows(5) {
                    let window = std::str::from_utf8(window).expect("ascii");
                    assert!(!shown.contains(window), "{shown} contains {window}");
                }
                assert!(
                    !shown
                        .chars()
                        .any(|c| c.is_ascii_digit() && !"4917".contains(c)),
                    "only the limits 4, 9 and 17 may appear: {shown}"
                );
            }
        }
    }

    fn with_aba_check_digit(payload: &str) -> String {
        (b'0'..=b'9')
            .map(|d| format!("{payload}{}", char::from(d)))
            .find(|candidate| aba_checksum_valid(candidate))
            .expect("weight 1 on the last digit makes exactly one fit")
    }

    proptest! {
        #[test]
        fn aba_check_digit_passes_and_any_single_digit_change_fails(payload in "[0-9]{8}") {
            let number = with_aba_check_digit(&payload);
            prop_assert!(RoutingNumber::parse(&number).is_ok());
            let bytes = number.as_bytes();
            for (i, &original) in bytes.iter().enumerate() {
                for d in b'0'..=b'9' {
                    if d == original {
                        continue;
                    }
                    let mut changed = bytes.to_vec();
                    changed[i] = d;
                    let changed = String::from_utf8(changed).expect("ascii");
                    prop_assert!(!aba_checksum_valid(&changed), "{} -> {}", number, changed);
                }
            }
        }

        #[test]
        fn account_number_views_show_only_last_four(digits in "[0-9]{4,17}") {
            let acct = AccountNumber::parse(&digits).expect("valid");
            let expected_mask = format!("****{}", &digits[digits.len() - 4..]);
            for shown in [acct.to_string(), format!("{acct:?}"), acct.masked()] {
                prop_assert_eq!(shown.bytes().filter(u8::is_ascii_digit).count(), 4);
                prop_assert!(shown.contains(&expected_mask), "{}", shown);
            }
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,40}") {
            let _ = RoutingNumber::parse(&input);
            let _ = AccountNumber::parse(&input);
        }
    }
}
