//! Field mappings between a Salesforce object and a Sage object, from configuration: which
//! side owns each field (its system of record — changes flow only from the owner), and how a
//! value is transformed on the way (constant, lookup table, concatenation, date format, number
//! scale, currency conversion). Pure: no I/O, so every rule is testable on its own.
//!
//! ```toml
//! [[sync.mappings]]
//! salesforce = "Account"
//! sage = "CUSTOMER"
//! fields = [
//!   { salesforce = "Name", sage = "NAME", owner = "salesforce" },
//!   { salesforce = "Industry", sage = "CUSTTYPE", owner = "salesforce",
//!     transform = { kind = "lookup", table = { Banking = "FIN", Retail = "RET" }, default = "OTHER" } },
//!   { sage = "STATUS", owner = "salesforce", transform = { kind = "constant", value = "active" } },
//!   { salesforce = "Sage_Balance__c", sage = "TOTALDUE", owner = "sage",
//!     transform = { kind = "number", scale = 2 } },
//! ]
//! ```
//!
//! Echo suppression lives here too: [`changes`] keeps only the fields whose value differs from
//! what was last synced, so a write that changes nothing is skipped, and [`is_echo`] tells a
//! change the integration user made (our own write coming back) from a person's.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which system's value wins for a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Salesforce,
    Sage,
}

/// How a value changes on the way from its owner to the other side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// The source value as it is.
    Copy,
    /// Always this value (no source field).
    Constant { value: Value },
    /// The source value looked up in `table`; `default` when absent (an error without one).
    Lookup {
        table: BTreeMap<String, String>,
        default: Option<String>,
    },
    /// Several source fields joined with `separator`; empty ones are left out.
    Concat {
        fields: Vec<String>,
        #[serde(default = "space")]
        separator: String,
    },
    /// A date (or date-time) reformatted: chrono `strftime` patterns.
    Date { from: String, to: String },
    /// A decimal number rounded half away from zero to `scale` places, as text.
    Number { scale: u32 },
    /// An amount converted into `to` at the rate for the record's currency (taken from the
    /// field `currency_field` of the source record), rounded to `scale` places.
    Currency {
        currency_field: String,
        to: String,
        #[serde(default = "two")]
        scale: u32,
    },
}

fn space() -> String {
    " ".into()
}

fn two() -> u32 {
    2
}

/// One field rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The Salesforce field (source when Salesforce owns it, target otherwise).
    pub salesforce: Option<String>,
    /// The Sage field.
    pub sage: Option<String>,
    pub owner: Owner,
    #[serde(default = "copy")]
    pub transform: Transform,
}

fn copy() -> Transform {
    Transform::Copy
}

/// The mapping of one object pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectMapping {
    pub salesforce: String,
    pub sage: String,
    pub fields: Vec<FieldRule>,
}

/// Why a mapping configuration or a record does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct MappingError {
    /// Where: `fields[2].transform` in a configuration, or the field name for a record.
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> MappingError {
    MappingError {
        path: path.into(),
        message: message.into(),
    }
}

/// Exchange rates for [`Transform::Currency`]: units of `to` per one unit of `from`.
pub trait Rates {
    fn rate(&self, from: &str, to: &str) -> Option<Decimal>;
}

impl Rates for BTreeMap<(String, String), Decimal> {
    fn rate(&self, from: &str, to: &str) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        self.get(&(from.to_owned(), to.to_owned())).copied()
    }
}

/// A field name as Salesforce and Sage spell them: letters, digits, underscores (custom
/// Salesforce fields end in `__c`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 80
}

impl ObjectMapping {
    /// Checks a configured mapping; errors name the rule (`fields[2].sage`).
    pub fn check(&self) -> Result<(), MappingError> {
        if !valid_name(&self.salesforce) {
            return Err(err("salesforce", "is not an object name"));
        }
        if !valid_name(&self.sage) {
            return Err(err("sage", "is not an object name"));
        }
        let mut targets = std::collections::BTreeSet::new();
        for (i, r) in self.fields.iter().enumerate() {
            let at = |f: &str| format!("fields[{i}].{f}");
            for (side, name) in [("salesforce", &r.salesforce), ("sage", &r.sage)] {
                if let Some(n) = name
                    && !valid_name(n)
                {
                    return Err(err(at(side), format!("{n:?} is not a field name")));
                }
            }
            let (source, target) = r.ends();
            let Some(target) = target else {
                return Err(err(
                    at(match r.owner {
                        Owner::Salesforce => "sage",
                        Owner::Sage => "salesforce",
                    }),
                    "the field written on the other side is required",
                ));
            };
            if !targets.insert((r.owner, target.to_owned())) {
                return Err(err(at("sage"), format!("{target} is written twice")));
            }
            let needs_source = !matches!(
                r.transform,
                Transform::Constant { .. } | Transform::Concat { .. }
            );
            if needs_source && source.is_none() {
                return Err(err(
                    at(match r.owner {
                        Owner::Salesforce => "salesforce",
                        Owner::Sage => "sage",
                    }),
                    "the owner's field is required for this transform",
                ));
            }
            match &r.transform {
                Transform::Concat { fields, .. }
                    if fields.is_empty() || fields.iter().any(|f| !valid_name(f)) =>
                {
                    return Err(err(at("transform.fields"), "list one or more field names"));
                }
                Transform::Date { from, to } => {
                    for (k, f) in [("from", from), ("to", to)] {
                        if f.is_empty()
                            || chrono::format::StrftimeItems::new(f)
                                .any(|i| matches!(i, chrono::format::Item::Error))
                        {
                            return Err(err(at(&format!("transform.{k}")), "is not a date format"));
                        }
                    }
                }
                Transform::Number { scale } | Transform::Currency { scale, .. } if *scale > 10 => {
                    return Err(err(at("transform.scale"), "must be 0 to 10"));
                }
                Transform::Currency {
                    currency_field, to, ..
                } => {
                    if !valid_name(currency_field) {
                        return Err(err(at("transform.currency_field"), "is not a field name"));
                    }
                    if to.len() != 3 || !to.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(err(at("transform.to"), "must be an ISO 4217 code"));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The Sage fields Salesforce owns, computed from a Salesforce record.
    pub fn to_sage(
        &self,
        record: &Map<String, Value>,
        rates: &dyn Rates,
    ) -> Result<Map<String, Value>, MappingError> {
        self.apply(Owner::Salesforce, record, rates)
    }

    /// The Salesforce fields Sage owns, computed from a Sage record.
    pub fn to_salesforce(
        &self,
        record: &Map<String, Value>,
        rates: &dyn Rates,
    ) -> Result<Map<String, Value>, MappingError> {
        self.apply(Owner::Sage, record, rates)
    }

    fn apply(
        &self,
        owner: Owner,
        record: &Map<String, Value>,
        rates: &dyn Rates,
    ) -> Result<Map<String, Value>, MappingError> {
        let mut out = Map::new();
        for r in self.fields.iter().filter(|r| r.owner == owner) {
            let (source, target) = r.ends();
            let Some(target) = target else { continue };
            let value = source.and_then(|s| record.get(s)).unwrap_or(&Value::Null);
            let v = r
                .transform
                .apply(value, record, rates)
                .map_err(|m| err(source.unwrap_or(target), m))?;
            out.insert(target.to_owned(), v);
        }
        Ok(out)
    }
}

impl FieldRule {
    /// (source, target) field names in the direction the owner's changes flow.
    fn ends(&self) -> (Option<&str>, Option<&str>) {
        match self.owner {
            Owner::Salesforce => (self.salesforce.as_deref(), self.sage.as_deref()),
            Owner::Sage => (self.sage.as_deref(), self.salesforce.as_deref()),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn decimal(v: &Value) -> Result<Option<Decimal>, String> {
    match text(v) {
        None => Ok(None),
        Some(t) if t.trim().is_empty() => Ok(None),
        // Numbers arrive as JSON text, never through f64.
        Some(t) => t
            .trim()
            .parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(t.trim()))
            .map(Some)
            .map_err(|_| format!("{t:?} is not a number")),
    }
}

/// `d` rounded half away from zero and written with exactly `scale` decimals.
fn fixed(d: Decimal, scale: u32) -> String {
    let mut r = d.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(scale);
    r.to_string()
}

impl Transform {
    fn apply(
        &self,
        value: &Value,
        record: &Map<String, Value>,
        rates: &dyn Rates,
    ) -> Result<Value, String> {
        Ok(match self {
            Transform::Copy => value.clone(),
            Transform::Constant { value } => value.clone(),
            Transform::Lookup { table, default } => match text(value) {
                None => Value::Null,
                Some(k) => match table.get(&k).or(default.as_ref()) {
                    Some(v) => Value::String(v.clone()),
                    None => return Err(format!("{k:?} is not in the lookup table")),
                },
            },
            Transform::Concat { fields, separator } => {
                let parts: Vec<String> = fields
                    .iter()
                    .filter_map(|f| record.get(f).and_then(text))
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if parts.is_empty() {
                    Value::Null
                } else {
                    Value::String(parts.join(separator))
                }
            }
            Transform::Date { from, to } => match text(value) {
                None => Value::Null,
                Some(t) => {
                    let out = NaiveDateTime::parse_from_str(&t, from)
                        .map(|d| d.format(to).to_string())
                        .or_else(|_| {
                            NaiveDate::parse_from_str(&t, from).map(|d| d.format(to).to_string())
                        })
                        .map_err(|_| format!("{t:?} does not match the date format {from:?}"))?;
                    Value::String(out)
                }
            },
            Transform::Number { scale } => match decimal(value)? {
                None => Value::Null,
                Some(d) => Value::String(fixed(d, *scale)),
            },
            Transform::Currency {
                currency_field,
                to,
                scale,
            } => match decimal(value)? {
                None => Value::Null,
                Some(amount) => {
                    let from = record
                        .get(currency_field)
                        .and_then(text)
                        .ok_or_else(|| format!("the currency field {currency_field} is empty"))?;
                    let rate = rates
                        .rate(&from, to)
                        .ok_or_else(|| format!("no exchange rate from {from} to {to}"))?;
                    let converted = amount
                        .checked_mul(rate)
                        .ok_or_else(|| "the converted amount overflows".to_owned())?;
                    Value::String(fixed(converted, *scale))
                }
            },
        })
    }
}

/// The fields of `next` whose values differ from `last` (what was last synced): an empty
/// result means the write would change nothing and is skipped.
pub fn changes(next: &Map<String, Value>, last: Option<&Map<String, Value>>) -> Map<String, Value> {
    next.iter()
        .filter(|(k, v)| last.and_then(|l| l.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether a change was made by the integration user (our own write echoed back).
pub fn is_echo(last_modified_by: Option<&str>, integration_user_id: &str) -> bool {
    // Salesforce ids compare on their first 15 characters (the 18-character form adds a suffix).
    last_modified_by.is_some_and(|u| {
        u.get(..15).unwrap_or(u) == integration_user_id.get(..15).unwrap_or(integration_user_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> ObjectMapping {
        let toml = r#"
salesforce = "Account"
sage = "CUSTOMER"
fields = [
  { salesforce = "Name", sage = "NAME", owner = "salesforce" },
  { salesforce = "Industry", sage = "CUSTTYPE", owner = "salesforce", transform = { kind = "lookup", table = { Banking = "FIN", Retail = "RET" }, default = "OTHER" } },
  { sage = "STATUS", owner = "salesforce", transform = { kind = "constant", value = "active" } },
  { sage = "DISPLAYNAME", owner = "salesforce", transform = { kind = "concat", fields = ["Name", "BillingCity"], separator = " - " } },
  { salesforce = "Customer_Since__c", sage = "CUSTSINCE", owner = "salesforce", transform = { kind = "date", from = "%Y-%m-%d", to = "%m/%d/%Y" } },
  { salesforce = "Credit_Limit__c", sage = "CREDITLIMIT", owner = "salesforce", transform = { kind = "currency", currency_field = "CurrencyIsoCode", to = "USD" } },
  { salesforce = "Sage_Balance__c", sage = "TOTALDUE", owner = "sage", transform = { kind = "number", scale = 2 } },
  { salesforce = "Sage_Customer_Id__c", sage = "CUSTOMERID", owner = "sage" },
]
"#;
        let m: ObjectMapping = toml_like(toml);
        m.check().unwrap();
        m
    }

    /// The tests parse JSON written like the TOML the configuration holds.
    fn toml_like(toml: &str) -> ObjectMapping {
        let value: toml::Value = toml::from_str(toml).unwrap();
        serde_json::from_value(serde_json::to_value(value).unwrap()).unwrap()
    }

    fn rates() -> BTreeMap<(String, String), Decimal> {
        [(
            ("EUR".to_owned(), "USD".to_owned()),
            "1.0825".parse().unwrap(),
        )]
        .into()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn salesforce_owned_fields_flow_to_sage_transformed() {
        let m = mapping();
        let sf = obj(json!({
            "Name": "Acme", "Industry": "Banking", "BillingCity": "Oslo",
            "Customer_Since__c": "2024-02-29", "Credit_Limit__c": 1000.005,
            "CurrencyIsoCode": "EUR", "Sage_Balance__c": "1.00"
        }));
        let out = m.to_sage(&sf, &rates()).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "NAME": "Acme", "CUSTTYPE": "FIN", "STATUS": "active",
                "DISPLAYNAME": "Acme - Oslo", "CUSTSINCE": "02/29/2024",
                // 1000.005 × 1.0825 = 1082.5054125 → 1082.51 (half away from zero)
                "CREDITLIMIT": "1082.51"
            })
        );
        let other = obj(
            json!({"Name": "Beta", "Industry": "Mining", "CurrencyIsoCode": "USD", "Credit_Limit__c": "10"}),
        );
        let out = m.to_sage(&other, &rates()).unwrap();
        assert_eq!(out["CUSTTYPE"], "OTHER");
        assert_eq!(out["DISPLAYNAME"], "Beta", "empty parts are left out");
        assert_eq!(out["CUSTSINCE"], Value::Null);
        assert_eq!(out["CREDITLIMIT"], "10.00");
    }

    #[test]
    fn sage_owned_fields_flow_back_to_salesforce() {
        let out = mapping()
            .to_salesforce(
                &obj(json!({"TOTALDUE": "1234.565", "CUSTOMERID": "C-100", "NAME": "ignored"})),
                &rates(),
            )
            .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"Sage_Balance__c": "1234.57", "Sage_Customer_Id__c": "C-100"})
        );
    }

    #[test]
    fn bad_records_name_the_field() {
        let m = mapping();
        let e = m
            .to_sage(&obj(json!({"Name": "A", "Customer_Since__c": "29.02.2024", "CurrencyIsoCode": "USD"})), &rates())
            .unwrap_err();
        assert_eq!(e.path, "Customer_Since__c");
        let e = m
            .to_sage(
                &obj(json!({"Name": "A", "Credit_Limit__c": "5", "CurrencyIsoCode": "JPY"})),
                &rates(),
            )
            .unwrap_err();
        assert!(e.message.contains("no exchange rate from JPY"), "{e}");
        let e = m
            .to_sage(
                &obj(json!({"Name": "A", "Credit_Limit__c": "lots", "CurrencyIsoCode": "USD"})),
                &rates(),
            )
            .unwrap_err();
        assert!(e.message.contains("not a number"), "{e}");
    }

    #[test]
    fn bad_configuration_names_the_rule() {
        let check = |fields: &str| {
            toml_like(&format!(
                "salesforce = \"Account\"\nsage = \"CUSTOMER\"\nfields = [{fields}]"
            ))
            .check()
            .map_err(|e| e.path)
        };
        assert_eq!(
            check(r#"{ salesforce = "Name", owner = "salesforce" }"#),
            Err("fields[0].sage".into())
        );
        assert_eq!(
            check(r#"{ sage = "NAME", owner = "salesforce" }"#),
            Err("fields[0].salesforce".into())
        );
        assert_eq!(
            check(
                r#"{ salesforce = "Name", sage = "NAME", owner = "salesforce" }, { salesforce = "Nick", sage = "NAME", owner = "salesforce" }"#
            ),
            Err("fields[1].sage".into())
        );
        assert_eq!(
            check(r#"{ salesforce = "Bad Name", sage = "NAME", owner = "salesforce" }"#),
            Err("fields[0].salesforce".into())
        );
        assert_eq!(
            check(
                r#"{ salesforce = "D", sage = "D", owner = "salesforce", transform = { kind = "date", from = "%Q", to = "%Y" } }"#
            ),
            Err("fields[0].transform.from".into())
        );
        assert_eq!(
            check(
                r#"{ salesforce = "A", sage = "A", owner = "salesforce", transform = { kind = "currency", currency_field = "C", to = "usd" } }"#
            ),
            Err("fields[0].transform.to".into())
        );
        assert_eq!(
            check(
                r#"{ salesforce = "Name", sage = "NAME", owner = "salesforce" }, { salesforce = "Name", sage = "NAME", owner = "sage" }"#
            ),
            Ok(())
        );
    }

    #[test]
    fn unchanged_writes_and_echoes_are_skipped() {
        let next = obj(json!({"NAME": "Acme", "STATUS": "active"}));
        assert_eq!(changes(&next, Some(&next)).len(), 0);
        let last = obj(json!({"NAME": "Acme Inc", "STATUS": "active"}));
        assert_eq!(
            Value::Object(changes(&next, Some(&last))),
            json!({"NAME": "Acme"})
        );
        assert_eq!(changes(&next, None).len(), 2);
        assert!(is_echo(Some("0055e000001AbCdAAK"), "0055e000001AbCd"));
        assert!(!is_echo(Some("0055e000009ZzZzAAK"), "0055e000001AbCd"));
        assert!(!is_echo(None, "0055e000001AbCd"));
    }
}
