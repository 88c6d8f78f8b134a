//! Salesforce's JSON shapes, shared by the client and the simulator: field values that keep
//! numbers exact (never `f64`), records with `attributes`, query pages, save results, error
//! items, OAuth token answers, describe results, Bulk API 2.0 job info, and the
//! `Sforce-Limit-Info` header.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One field value as Salesforce sends it. Numbers are kept as exact decimals (`Amount`,
/// `UnitPrice`, …): a JSON number is parsed from its literal text, never through `f64`.
/// Dates and datetimes arrive as strings (`2026-11-01T00:00:00.000+0000`) and stay `Text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Decimal),
    Text(String),
    /// A parent lookup (`Account.Name`) or anything else nested, as a record.
    Record(Box<Record>),
    /// Anything else (arrays, relationship subqueries), as raw JSON text.
    Json(String),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::Number(d) => Some(*d),
            Value::Text(s) => parse_decimal(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn from_raw(raw: &RawValue) -> Result<Value, serde_json::Error> {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'n') => Ok(Value::Null),
            Some(b't') => Ok(Value::Bool(true)),
            Some(b'f') => Ok(Value::Bool(false)),
            Some(b'"') => Ok(Value::Text(serde_json::from_str(text)?)),
            Some(b'{') => Ok(Value::Record(Box::new(serde_json::from_str(text)?))),
            Some(b'[') => Ok(Value::Json(text.to_owned())),
            Some(_) => parse_decimal(text)
                .map(Value::Number)
                .ok_or_else(|| serde_json::Error::custom(format!("number out of range: {text}"))),
            None => Err(serde_json::Error::custom("empty value")),
        }
    }
}

/// A decimal from a JSON number literal, including the `1.0E7` form Salesforce uses for large
/// doubles.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    text.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(text).ok())
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<Decimal> for Value {
    fn from(d: Decimal) -> Value {
        Value::Number(d)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Number(Decimal::from(n))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(d) => RawValue::from_string(d.normalize().to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
            Value::Text(t) => s.serialize_str(t),
            Value::Record(r) => r.serialize(s),
            Value::Json(j) => RawValue::from_string(j.clone())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
        }
    }
}

/// `attributes` of a record: its sObject type and, for stored records, its URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Attributes {
    #[serde(rename = "type")]
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bulk / composite reference ids (`referenceId`), kept if present.
    #[serde(
        default,
        rename = "referenceId",
        skip_serializing_if = "Option::is_none"
    )]
    pub reference_id: Option<String>,
}

/// A record: `attributes` plus its fields in name order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub attributes: Option<Attributes>,
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    pub fn new(object: &str) -> Record {
        Record {
            attributes: Some(Attributes {
                object: object.to_owned(),
                ..Attributes::default()
            }),
            fields: BTreeMap::new(),
        }
    }

    /// Sets a field (builder style).
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Record {
        self.fields.insert(field.to_owned(), value.into());
        self
    }

    pub fn set(&mut self, field: &str, value: impl Into<Value>) {
        self.fields.insert(field.to_owned(), value.into());
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }

    pub fn get_decimal(&self, field: &str) -> Option<Decimal> {
        self.get(field).and_then(Value::as_decimal)
    }

    /// `Id` (or `id`), if present.
    pub fn id(&self) -> Option<&str> {
        self.get_str("Id").or_else(|| self.get_str("id"))
    }

    pub fn object(&self) -> Option<&str> {
        self.attributes.as_ref().map(|a| a.object.as_str())
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len() + 1))?;
        if let Some(a) = &self.attributes {
            map.serialize_entry("attributes", a)?;
        }
        for (k, v) in &self.fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        let raw: BTreeMap<String, Box<RawValue>> = BTreeMap::deserialize(d)?;
        let mut record = Record::default();
        for (k, v) in raw {
            if k == "attributes" {
                record.attributes = Some(serde_json::from_str(v.get()).map_err(D::Error::custom)?);
            } else {
                let value = Value::from_raw(&v).map_err(D::Error::custom)?;
                record.fields.insert(k, value);
            }
        }
        Ok(record)
    }
}

/// One page of a SOQL query (`/query`, `/queryAll`, `nextRecordsUrl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryPage {
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    pub done: bool,
    #[serde(
        rename = "nextRecordsUrl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_records_url: Option<String>,
    pub records: Vec<Record>,
}

/// One item of Salesforce's REST error array `[{"message","errorCode","fields"}]`. In
/// sObject Collections results the code is called `statusCode`; both spellings are read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(rename = "errorCode", alias = "statusCode")]
    pub error_code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            error_code: code.to_owned(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn with_fields(mut self, fields: &[&str]) -> ApiError {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_code, self.message)?;
        if !self.fields.is_empty() {
            write!(f, " [{}]", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// A per-record error inside a save result: same as [`ApiError`] but serialized with
/// `statusCode`, as sObject Collections and single-record saves do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    #[serde(rename = "statusCode", alias = "errorCode")]
    pub status_code: String,
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

impl From<ApiError> for RecordError {
    fn from(e: ApiError) -> RecordError {
        RecordError {
            status_code: e.error_code,
            message: e.message,
            fields: e.fields,
        }
    }
}

/// A save result: single create (201), upsert (201/200) and each item of a collection call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<RecordError>,
    /// Upserts only: whether the record was inserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Body of `POST /composite/sobjects` and `PATCH /composite/sobjects[/{Obj}/{Field}]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectionRequest {
    #[serde(rename = "allOrNone", default)]
    pub all_or_none: bool,
    pub records: Vec<Record>,
}

/// The token endpoint's success answer. `instance_url` is where the API lives.
#[derive(Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub instance_url: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("instance_url", &self.instance_url)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's error answer (`{"error":"invalid_grant","error_description":…}`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}

/// `GET /sobjects/{Obj}/describe`, the parts a mapping needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Describe {
    pub name: String,
    pub label: String,
    pub custom: bool,
    #[serde(rename = "keyPrefix")]
    pub key_prefix: String,
    pub createable: bool,
    pub updateable: bool,
    pub deletable: bool,
    pub queryable: bool,
    pub fields: Vec<DescribeField>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DescribeField {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: String,
    pub length: u32,
    pub createable: bool,
    pub updateable: bool,
    pub custom: bool,
    #[serde(rename = "externalId")]
    pub external_id: bool,
    pub unique: bool,
    pub nillable: bool,
    #[serde(rename = "idLookup")]
    pub id_lookup: bool,
    #[serde(rename = "referenceTo", default)]
    pub reference_to: Vec<String>,
}

/// Bulk API 2.0 job info (ingest and query), the fields either side uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    pub id: String,
    pub operation: String,
    #[serde(default)]
    pub object: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_modstamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_ending: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_records_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_records_failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `Sforce-Limit-Info: api-usage=N/M` (other parts such as `; api-bursts=1/750` or
/// `per-app-api-usage=…` are ignored). `None` when there is no `api-usage` part.
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split([';', ',']).find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        if key.trim() != "api-usage" {
            return None;
        }
        let (used, max) = value.trim().split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

/// An id in its 18-character form (15-character ids are case-sensitive; stores and Sage
/// keys are not).
pub fn canonical_id(id: &str) -> String {
    if id.len() == 15 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        id18(id)
    } else {
        id.to_owned()
    }
}

/// The 18-character, case-insensitive form of a 15-character Salesforce id: three suffix
/// characters, each encoding which of five characters are upper-case.
pub fn id18(id15: &str) -> String {
    const MAP: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(18);
    out.push_str(id15);
    for chunk in bytes.chunks(5).take(3) {
        let mut bits = 0usize;
        for (i, b) in chunk.iter().enumerate() {
            if b.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        out.push(char::from(MAP[bits]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_exact() {
        let r: Record =
            serde_json::from_str(r#"{"attributes":{"type":"Opportunity"},"Amount":1234567890.12,"Big":1.0E7,"N":null,"B":true,"S":"x"}"#)
                .unwrap();
        assert_eq!(
            r.get_decimal("Amount").unwrap().to_string(),
            "1234567890.12"
        );
        assert_eq!(r.get_decimal("Big").unwrap(), Decimal::from(10_000_000));
        assert_eq!(r.get("N"), Some(&Value::Null));
        assert_eq!(r.object(), Some("Opportunity"));
        let back = serde_json::to_string(&r).unwrap();
        assert!(back.contains(r#""Amount":1234567890.12"#), "{back}");
    }

    #[test]
    fn limit_info() {
        let check =
            |h: &str, want: Option<(u64, u64)>| assert_eq!(parse_limit_info(h), want, "{h}");
        check("api-usage=18/5000", Some((18, 5000)));
        check(
            "api-usage=10018/100000; api-bursts=1/750",
            Some((10018, 100000)),
        );
        check(
            "per-app-api-usage=17/250(appName=sample-connected-app)",
            None,
        );
        check(
            "per-app-api-usage=17/250(appName=x), api-usage=3/15000",
            Some((3, 15000)),
        );
        check("garbage", None);
    }

    #[test]
    fn id18_suffix() {
        // Known pair from Salesforce documentation examples.
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
    }
}
