//! The JSON body of `POST /v1/tokens`, parsed into a [`NewPaymentMethod`] with errors that
//! name the field. Unknown fields are refused; a CVV is refused here (it is accepted only in
//! an authorization request, and never stored).
//!
//! ```json
//! {"type": "card", "card": {"number": "4111 1111 1111 1111", "exp_month": 12, "exp_year": 2030,
//!                           "name": "Ada Lovelace", "postal_code": "46282"}}
//! {"type": "bank_account", "bank_account": {"routing_number": "110000000",
//!   "account_number": "000123456789", "account_type": "checking",
//!   "holder_name": "Grace Hopper", "sec_code": "WEB"}}
//! ```

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::bank::{AccountNumber, BankAccountType, RoutingNumber, SecCode, default_sec_code};
use crate::card::{Expiry, Pan};
use crate::vault::{NewBankAccount, NewCard, NewPaymentMethod};

/// A refused request body: a stable code and the field at fault. Never holds the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

fn err(code: &'static str, field: &str, message: impl Into<String>) -> InputError {
    InputError {
        code,
        field: field.to_owned(),
        message: message.into(),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, InputError> {
    v.as_object()
        .ok_or_else(|| err("invalid_field", field, "must be a JSON object"))
}

fn known(obj: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), InputError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) if k == "cvv" || k == "cvc" => Err(err(
            "cvv_not_accepted",
            &format!("{prefix}{k}"),
            "a CVV is accepted only in an authorization request, never stored with a token",
        )),
        Some(k) => Err(err(
            "unknown_field",
            &format!("{prefix}{k}"),
            format!("unknown field (expected one of: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<Option<&'a str>, InputError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(
            "invalid_field",
            &format!("{prefix}{name}"),
            "must be a string",
        )),
    }
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<&'a str, InputError> {
    string(obj, name, prefix)?
        .ok_or_else(|| err("missing_field", &format!("{prefix}{name}"), "is required"))
}

fn integer(obj: &Map<String, Value>, name: &str, prefix: &str) -> Result<i64, InputError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(err(
            "missing_field",
            &format!("{prefix}{name}"),
            "is required",
        )),
        Some(v) => v.as_i64().ok_or_else(|| {
            err(
                "invalid_field",
                &format!("{prefix}{name}"),
                "must be an integer",
            )
        }),
    }
}

/// Parses a `POST /v1/tokens` body; `today` decides whether a card has expired.
pub fn parse_token_request(bytes: &[u8], today: NaiveDate) -> Result<NewPaymentMethod, InputError> {
    // serde_json's error names a position, never the content: safe with a card number inside.
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        err(
            "malformed_json",
            "",
            format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        )
    })?;
    let top = object(&v, "")?;
    known(top, &["type", "card", "bank_account"], "")?;
    match required(top, "type", "")? {
        "card" => {
            let c = object(
                top.get("card")
                    .ok_or_else(|| err("missing_field", "card", "is required"))?,
                "card",
            )?;
            known(
                c,
                &["number", "exp_month", "exp_year", "name", "postal_code"],
                "card.",
            )?;
            let number = Pan::parse(required(c, "number", "card.")?)
                .map_err(|e| err(e.code(), e.field(), e.to_string()))?;
            let month = integer(c, "exp_month", "card.")?;
            let year = integer(c, "exp_year", "card.")?;
            let expiry = Expiry::parse(
                u32::try_from(month)
                    .map_err(|_| err("invalid_expiry", "card.exp_month", "must be 1 to 12"))?,
                i32::try_from(year)
                    .map_err(|_| err("invalid_expiry", "card.exp_year", "is not a year"))?,
                today,
            )
            .map_err(|e| err(e.code(), e.field(), e.to_string()))?;
            Ok(NewPaymentMethod::Card(NewCard {
                number,
                expiry,
                holder_name: string(c, "name", "card.")?.map(str::to_owned),
                postal_code: string(c, "postal_code", "card.")?.map(str::to_owned),
            }))
        }
        "bank_account" => {
            let p = "bank_account.";
            let b = object(
                top.get("bank_account")
                    .ok_or_else(|| err("missing_field", "bank_account", "is required"))?,
                "bank_account",
            )?;
            known(
                b,
                &[
                    "routing_number",
                    "account_number",
                    "account_type",
                    "holder_name",
                    "sec_code",
                ],
                p,
            )?;
            let routing = RoutingNumber::parse(required(b, "routing_number", p)?)
                .map_err(|e| err(e.code(), e.field(), e.to_string()))?;
            let account = AccountNumber::parse(required(b, "account_number", p)?)
                .map_err(|e| err(e.code(), e.field(), e.to_string()))?;
            let account_type = match required(b, "account_type", p)? {
                "checking" => BankAccountType::Checking,
                "savings" => BankAccountType::Savings,
                "business_checking" => BankAccountType::BusinessChecking,
                _ => {
                    return Err(err(
                        "invalid_field",
                        "bank_account.account_type",
                        "must be checking, savings or business_checking",
                    ));
                }
            };
            let sec_code = match string(b, "sec_code", p)? {
                None => default_sec_code(account_type),
                Some("PPD") => SecCode::Ppd,
                Some("CCD") => SecCode::Ccd,
                Some("WEB") => SecCode::Web,
                Some("TEL") => SecCode::Tel,
                Some(_) => {
                    return Err(err(
                        "invalid_field",
                        "bank_account.sec_code",
                        "must be PPD, CCD, WEB or TEL",
                    ));
                }
            };
            crate::bank::check_sec_code(account_type, sec_code)
                .map_err(|e| err(e.code(), e.field(), e.to_string()))?;
            Ok(NewPaymentMethod::BankAccount(NewBankAccount {
                routing,
                account,
                account_type,
                holder_name: required(b, "holder_name", p)?.to_owned(),
                sec_code,
            }))
        }
        _ => Err(err(
            "invalid_field",
            "type",
            "must be \"card\" or \"bank_account\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn check(body: &str, expected: Result<&str, (&str, &str)>) {
        let got = parse_token_request(body.as_bytes(), today());
        match (got, expected) {
            (Ok(NewPaymentMethod::Card(_)), Ok("card"))
            | (Ok(NewPaymentMethod::BankAccount(_)), Ok("bank")) => {}
            (Err(e), Err((code, field))) => {
                assert_eq!((e.code, e.field.as_str()), (code, field), "{body}");
                for secret in [
                    "4111111111111111",
                    "4111 1111 1111 1111",
                    "000123456789",
                    "123",
                ] {
                    if body.contains(secret) && secret.len() > 3 {
                        assert!(!e.to_string().contains(secret), "error leaks input: {e}");
                    }
                }
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    #[rustfmt::skip]
    fn token_requests() {
        check(r#"{"type":"card","card":{"number":"4111 1111 1111 1111","exp_month":12,"exp_year":2030}}"#, Ok("card"));
        check(r#"{"type":"card","card":{"number":"4111111111111112","exp_month":12,"exp_year":2030}}"#, Err(("luhn_check_failed", "card.number")));
        check(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":10,"exp_year":2026}}"#, Err(("card_expired", "card.exp_year")));
        check(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":13,"exp_year":2030}}"#, Err(("invalid_expiry", "card.exp_month")));
        check(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":12,"exp_year":2030,"cvv":"123"}}"#, Err(("cvv_not_accepted", "card.cvv")));
        check(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":12}}"#, Err(("missing_field", "card.exp_year")));
        check(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":12,"exp_year":2030},"x":1}"#, Err(("unknown_field", "x")));
        check(r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"000123456789","account_type":"checking","holder_name":"G"}}"#, Ok("bank"));
        check(r#"{"type":"bank_account","bank_account":{"routing_number":"123456789","account_number":"000123456789","account_type":"checking","holder_name":"G"}}"#, Err(("invalid_routing_number", "bank_account.routing_number")));
        check(r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"12","account_type":"checking","holder_name":"G"}}"#, Err(("invalid_account_number", "bank_account.account_number")));
        check(r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"000123456789","account_type":"checking","holder_name":"G","sec_code":"CCD"}}"#, Err(("sec_code_not_allowed", "bank_account.sec_code")));
        check(r#"{"type":"wallet"}"#, Err(("invalid_field", "type")));
        check(r#"{"type":"card","card":{"number":"4111111111111111""#, Err(("malformed_json", "")));
    }
}
