//! The JSON form of a journal entry (what `cashloop ledger post --file` and the HTTP API
//! accept), parsed into a [`NewEntry`] with an error that names the exact field at fault.
//!
//! ```json
//! {
//!   "idempotency_key": "inv-1001",
//!   "entity": "MAIN",
//!   "effective_date": "2026-10-31",
//!   "source": "manual",
//!   "external_ref": "INV-1001",
//!   "memo": "Invoice 1001",
//!   "postings": [
//!     {"account": "1200", "direction": "debit", "amount": "100.00", "currency": "USD",
//!      "customer_id": "ACME", "document_ref": "INV-1001"},
//!     {"account": "4000", "direction": "credit", "amount_minor": 10000, "currency": "USD"}
//!   ]
//! }
//! ```
//! Amounts are decimal strings with at most the currency's number of decimals, or integer
//! minor units in `amount_minor` — never JSON floats.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::entry::{EntryHeader, NewEntry, NewPosting};
use crate::error::{ErrorCode, Rejection};
use crate::money::{Currency, Money};
use crate::types::{
    AccountCode, CustomerId, Direction, EntityCode, IdempotencyKey, SourceName, Text,
};

/// Values used when the JSON leaves a field out.
#[derive(Clone, Debug)]
pub struct InputDefaults {
    pub entity: EntityCode,
    pub source: SourceName,
    /// An idempotency key from outside the body (the HTTP `Idempotency-Key` header).
    pub idempotency_key: Option<IdempotencyKey>,
}

const ENTRY_FIELDS: &[&str] = &[
    "idempotency_key",
    "entity",
    "effective_date",
    "source",
    "external_ref",
    "memo",
    "postings",
];
const POSTING_FIELDS: &[&str] = &[
    "account",
    "direction",
    "amount",
    "amount_minor",
    "currency",
    "customer_id",
    "document_ref",
    "memo",
];

/// Parses JSON bytes into a validated entry.
pub fn parse_entry_json(bytes: &[u8], defaults: &InputDefaults) -> Result<NewEntry, Rejection> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Rejection::new(
            ErrorCode::MalformedJson,
            None,
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    parse_entry_value(&value, defaults, "")
}

/// Parses an already-decoded JSON value; `prefix` is prepended to field paths (`entries[3].`).
pub fn parse_entry_value(
    value: &Value,
    defaults: &InputDefaults,
    prefix: &str,
) -> Result<NewEntry, Rejection> {
    let obj = value.as_object().ok_or_else(|| {
        Rejection::new(
            ErrorCode::MalformedJson,
            None,
            format!("{}an entry must be a JSON object", show(prefix)),
        )
    })?;
    let f = |name: &str| format!("{prefix}{name}");
    reject_unknown(obj, ENTRY_FIELDS, prefix)?;

    let idempotency_key = match opt_str(obj, "idempotency_key", prefix)? {
        Some(k) => {
            let key = IdempotencyKey::parse(k, &f("idempotency_key"))?;
            if let Some(h) = &defaults.idempotency_key
                && h != &key
            {
                return Err(Rejection::new(
                    ErrorCode::InvalidField,
                    Some(f("idempotency_key")),
                    format!(
                        "{}: differs from the Idempotency-Key header",
                        f("idempotency_key")
                    ),
                ));
            }
            key
        }
        None => defaults
            .idempotency_key
            .clone()
            .ok_or_else(|| missing(&f("idempotency_key")))?,
    };
    let entity = match opt_str(obj, "entity", prefix)? {
        Some(e) => EntityCode::parse(e, &f("entity"))?,
        None => defaults.entity.clone(),
    };
    let date_s =
        opt_str(obj, "effective_date", prefix)?.ok_or_else(|| missing(&f("effective_date")))?;
    let effective_date = parse_date(date_s, &f("effective_date"))?;
    let source = match opt_str(obj, "source", prefix)? {
        Some(s) => SourceName::parse(s, &f("source"))?,
        None => defaults.source.clone(),
    };
    let external_ref = opt_text(obj, "external_ref", prefix)?;
    let memo = opt_text(obj, "memo", prefix)?;
    let postings_v = obj.get("postings").ok_or_else(|| missing(&f("postings")))?;
    let postings_a = postings_v.as_array().ok_or_else(|| {
        Rejection::new(
            ErrorCode::InvalidField,
            Some(f("postings")),
            format!("{}: must be an array of postings", f("postings")),
        )
    })?;
    if postings_a.len() > crate::entry::MAX_POSTINGS_PER_ENTRY {
        return Err(Rejection::new(
            ErrorCode::TooManyPostings,
            Some(f("postings")),
            format!(
                "{}: at most {} postings per entry",
                f("postings"),
                crate::entry::MAX_POSTINGS_PER_ENTRY
            ),
        ));
    }
    let mut postings = Vec::with_capacity(postings_a.len());
    for (i, p) in postings_a.iter().enumerate() {
        postings.push(
            parse_posting(p, &format!("{prefix}postings[{i}].")).map_err(|mut r| {
                // Keep field paths relative to the whole document.
                r.field = r.field.or_else(|| Some(format!("{prefix}postings[{i}]")));
                r
            })?,
        );
    }
    NewEntry::new(
        EntryHeader {
            idempotency_key,
            entity,
            effective_date,
            source,
            external_ref,
            memo,
        },
        postings,
    )
    .map_err(|mut r| {
        if !prefix.is_empty() {
            r.field = r.field.map(|f| format!("{prefix}{f}"));
            r.message = format!("{prefix}{}", r.message);
        }
        r
    })
}

fn parse_posting(v: &Value, prefix: &str) -> Result<NewPosting, Rejection> {
    let f = |name: &str| format!("{prefix}{name}");
    let obj = v.as_object().ok_or_else(|| {
        Rejection::new(
            ErrorCode::InvalidField,
            Some(prefix.trim_end_matches('.').to_owned()),
            format!(
                "{}: a posting must be a JSON object",
                prefix.trim_end_matches('.')
            ),
        )
    })?;
    reject_unknown(obj, POSTING_FIELDS, prefix)?;
    let account = AccountCode::parse(
        opt_str(obj, "account", prefix)?.ok_or_else(|| missing(&f("account")))?,
        &f("account"),
    )?;
    let dir_s = opt_str(obj, "direction", prefix)?.ok_or_else(|| missing(&f("direction")))?;
    let direction = match dir_s {
        "debit" => Direction::Debit,
        "credit" => Direction::Credit,
        other => {
            return Err(Rejection::new(
                ErrorCode::InvalidField,
                Some(f("direction")),
                format!(
                    "{}: must be \"debit\" or \"credit\", got {other:?}",
                    f("direction")
                ),
            ));
        }
    };
    let cur_s = opt_str(obj, "currency", prefix)?.ok_or_else(|| missing(&f("currency")))?;
    let currency = Currency::parse(cur_s).map_err(|e| Rejection::money(&e, &f("currency")))?;
    let amount = match (obj.get("amount"), obj.get("amount_minor")) {
        (Some(_), Some(_)) => {
            return Err(Rejection::new(
                ErrorCode::InvalidField,
                Some(f("amount")),
                format!(
                    "{}: give either amount or amount_minor, not both",
                    f("amount")
                ),
            ));
        }
        (None, None) => return Err(missing(&f("amount"))),
        (Some(Value::String(s)), None) => {
            Money::parse_decimal(s, currency).map_err(|e| Rejection::money(&e, &f("amount")))?
        }
        (Some(_), None) => {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                Some(f("amount")),
                format!(
                    "{}: must be a decimal string such as \"100.00\" (JSON numbers are floating point); or use amount_minor",
                    f("amount")
                ),
            ));
        }
        (None, Some(v)) => match v.as_i64() {
            Some(m) => Money::from_minor(m, currency),
            None => {
                return Err(Rejection::new(
                    ErrorCode::InvalidAmount,
                    Some(f("amount_minor")),
                    format!(
                        "{}: must be an integer number of minor units",
                        f("amount_minor")
                    ),
                ));
            }
        },
    };
    let customer_id = match opt_str(obj, "customer_id", prefix)? {
        Some(c) => Some(CustomerId::parse(c, &f("customer_id"))?),
        None => None,
    };
    Ok(NewPosting {
        account,
        direction,
        amount,
        customer_id,
        document_ref: opt_text(obj, "document_ref", prefix)?,
        memo: opt_text(obj, "memo", prefix)?,
    })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str, field: &str) -> Result<NaiveDate, Rejection> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| {
            Rejection::new(
                ErrorCode::InvalidField,
                Some(field.to_owned()),
                format!("{field}: {s:?} is not a date; use YYYY-MM-DD"),
            )
        })
}

fn show(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{}: ", prefix.trim_end_matches('.'))
    }
}

fn missing(field: &str) -> Rejection {
    Rejection::new(
        ErrorCode::MissingField,
        Some(field.to_owned()),
        format!("{field}: is required"),
    )
}

fn reject_unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), Rejection> {
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Rejection::new(
            ErrorCode::InvalidField,
            Some(format!("{prefix}{k}")),
            format!(
                "{prefix}{k}: unknown field (expected one of: {})",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<Option<&'a str>, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::new(
            ErrorCode::InvalidField,
            Some(format!("{prefix}{name}")),
            format!("{prefix}{name}: must be a string"),
        )),
    }
}

fn opt_text(obj: &Map<String, Value>, name: &str, prefix: &str) -> Result<Option<Text>, Rejection> {
    opt_str(obj, name, prefix)?
        .map(|s| Text::parse(s, &format!("{prefix}{name}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> InputDefaults {
        InputDefaults {
            entity: EntityCode::parse("MAIN", "entity").unwrap(),
            source: SourceName::parse("manual", "source").unwrap(),
            idempotency_key: None,
        }
    }

    const GOOD: &str = r#"{"idempotency_key":"k1","effective_date":"2026-10-31","postings":[
        {"account":"1200","direction":"debit","amount":"100.00","currency":"USD","customer_id":"ACME","document_ref":"INV-1"},
        {"account":"4000","direction":"credit","amount_minor":10000,"currency":"USD"}]}"#;

    /// Replaces `from` with `to` in GOOD and checks the resulting error code and field.
    fn check(from: &str, to: &str, code: ErrorCode, field: Option<&str>) {
        let json = GOOD.replacen(from, to, 1);
        assert_ne!(json, GOOD, "pattern {from:?} not found");
        let err = parse_entry_json(json.as_bytes(), &defaults()).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (code, field),
            "{json}\n{}",
            err.message
        );
        if let Some(f) = field {
            assert!(
                err.message.contains(f),
                "message must name the field: {}",
                err.message
            );
        }
    }

    #[test]
    fn good_entry_parses() {
        let e = parse_entry_json(GOOD.as_bytes(), &defaults()).unwrap();
        assert_eq!(e.postings().len(), 2);
        assert_eq!(e.entity().as_str(), "MAIN");
        assert_eq!(e.postings()[1].amount.amount_minor(), 10000);
    }

    #[test]
    #[rustfmt::skip]
    fn bad_entries_name_their_field() {
        use ErrorCode::*;
        check(r#""amount":"100.00""#, r#""amount":"100.001""#, InvalidAmountScale, Some("postings[0].amount"));
        check(r#""amount":"100.00""#, r#""amount":100.0"#, InvalidAmount, Some("postings[0].amount"));
        check(r#""amount":"100.00""#, r#""amount":"-100.00""#, NonPositiveAmount, Some("postings[0].amount"));
        check(r#""amount":"100.00""#, r#""amount":"0.00""#, NonPositiveAmount, Some("postings[0].amount"));
        check(r#""amount":"100.00""#, r#""amount":"99.00""#, UnbalancedEntry, Some("postings"));
        check(r#""currency":"USD"}]"#, r#""currency":"XYZ"}]"#, UnknownCurrency, Some("postings[1].currency"));
        check(r#""direction":"debit""#, r#""direction":"up""#, InvalidField, Some("postings[0].direction"));
        check(r#""effective_date":"2026-10-31""#, r#""effective_date":"31/10/2026""#, InvalidField, Some("effective_date"));
        check(r#""idempotency_key":"k1","#, "", MissingField, Some("idempotency_key"));
        check(r#""account":"4000","#, "", MissingField, Some("postings[1].account"));
        check(r#""account":"4000","#, r#""acount":"4000","#, InvalidField, Some("postings[1].acount"));
        check(r#""postings":["#, r#""postings":[{"account":"1","direction":"debit","amount":"1.00","currency":"USD"}],"x":["#, InvalidField, Some("x"));
        check("{", "[", MalformedJson, None);
    }

    #[test]
    fn too_few_postings() {
        let json = r#"{"idempotency_key":"k","effective_date":"2026-10-31","postings":[
            {"account":"1","direction":"debit","amount":"1.00","currency":"USD"}]}"#;
        let err = parse_entry_json(json.as_bytes(), &defaults()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooFewPostings);
    }
}
