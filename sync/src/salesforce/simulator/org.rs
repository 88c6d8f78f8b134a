//! The simulated org's data: records per object with Salesforce's system fields, and the
//! write rules Salesforce applies (unknown and read-only fields, required fields, lengths,
//! types, lookups, unique external ids, validation rules, upsert matching).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::schema::{FieldType, ObjectDef, Schema};
use crate::salesforce::soql::{format_datetime, parse_date, parse_datetime};
use crate::salesforce::wire::{ApiError, Attributes, Record, Value, id18, parse_decimal};

/// A rule that refuses a write with `FIELD_CUSTOM_VALIDATION_EXCEPTION`: the field, when set,
/// must not be below `min`.
#[derive(Clone, Debug)]
pub struct ValidationRule {
    pub object: String,
    pub field: String,
    pub min: Decimal,
    pub message: String,
}

/// An Opportunity that moved to Closed Won during a write.
#[derive(Clone, Debug)]
pub struct ClosedWon {
    pub record_id: String,
    pub stage: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Stored {
    pub fields: BTreeMap<String, Value>,
}

impl Stored {
    pub fn deleted(&self) -> bool {
        self.fields.get("IsDeleted") == Some(&Value::Bool(true))
    }
}

/// How an upsert matched.
#[derive(Debug)]
pub enum Upsert {
    Created(String),
    Updated(String),
    Multiple(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct Org {
    pub schema: Schema,
    pub rules: Vec<ValidationRule>,
    pub api_version: String,
    /// object → id → record
    pub records: BTreeMap<String, BTreeMap<String, Stored>>,
    /// (object, field, lower-case value) → id, for unique fields.
    unique: HashMap<(String, String, String), String>,
    counter: u64,
    last_ts: DateTime<Utc>,
    pub closed_won: Vec<ClosedWon>,
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Org {
    pub fn new(schema: Schema, rules: Vec<ValidationRule>, api_version: &str) -> Org {
        Org {
            schema,
            rules,
            api_version: api_version.to_owned(),
            records: BTreeMap::new(),
            unique: HashMap::new(),
            counter: 0,
            last_ts: DateTime::<Utc>::MIN_UTC,
            closed_won: Vec::new(),
        }
    }

    /// A new 18-character id with the object's key prefix.
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let mut n = self.counter;
        let mut tail = [b'0'; 9];
        for slot in tail.iter_mut().rev() {
            *slot = BASE62[(n % 62) as usize];
            n /= 62;
        }
        let id15 = format!("{prefix}5g0{}", String::from_utf8_lossy(&tail));
        id18(&id15)
    }

    /// Now, never earlier than the last timestamp handed out (ms precision).
    pub fn now(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        if now > self.last_ts {
            self.last_ts = now;
        }
        self.last_ts
    }

    fn object(&self, name: &str) -> Result<ObjectDef, ApiError> {
        self.schema
            .object(name)
            .cloned()
            .ok_or_else(|| ApiError::new("NOT_FOUND", "The requested resource does not exist"))
    }

    pub fn find(&self, id: &str) -> Option<(&str, &Stored)> {
        let object = self.schema.object_of_id(id)?;
        let id = self.canonical_id(&object.name, id)?;
        let stored = self.records.get(&object.name)?.get(&id)?;
        Some((object.name.as_str(), stored))
    }

    /// 15- or 18-character id → the stored 18-character id.
    fn canonical_id(&self, object: &str, id: &str) -> Option<String> {
        let map = self.records.get(object)?;
        if id.len() == 18 {
            if map.contains_key(id) {
                return Some(id.to_owned());
            }
            return map.keys().find(|k| k.eq_ignore_ascii_case(id)).cloned();
        }
        if id.len() == 15 {
            return Some(id18(id)).filter(|k| map.contains_key(k));
        }
        None
    }

    /// A record as the API returns it: `attributes`, then `fields` (all when empty).
    pub fn render(&self, object: &str, id: &str, fields: &[String]) -> Option<Record> {
        let stored = self.records.get(object)?.get(id)?;
        let mut r = Record {
            attributes: Some(Attributes {
                object: object.to_owned(),
                url: Some(format!(
                    "/services/data/v{}/sobjects/{object}/{id}",
                    self.api_version
                )),
                reference_id: None,
            }),
            fields: BTreeMap::new(),
        };
        if fields.is_empty() {
            let def = self.schema.object(object)?;
            for name in def.fields.keys() {
                r.fields.insert(
                    name.clone(),
                    stored.fields.get(name).cloned().unwrap_or(Value::Null),
                );
            }
        } else {
            for f in fields {
                r.fields.insert(
                    f.clone(),
                    stored.fields.get(f).cloned().unwrap_or(Value::Null),
                );
            }
        }
        Some(r)
    }

    /// Checks and converts input fields; `creating` picks createable vs updateable.
    fn coerce(
        &self,
        def: &ObjectDef,
        input: &BTreeMap<String, Value>,
        creating: bool,
    ) -> Result<BTreeMap<String, Value>, ApiError> {
        let mut out = BTreeMap::new();
        for (name, value) in input {
            if name == "attributes" {
                continue;
            }
            let Some(f) = def.field(name) else {
                return Err(ApiError::new(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {}", def.name),
                )
                .with_fields(&[name]));
            };
            if name == "Id" || name.eq_ignore_ascii_case("id") {
                continue; // collections carry the Id in the body; it is not written
            }
            if (creating && !f.createable) || (!creating && !f.updateable) {
                return Err(ApiError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                        f.name
                    ),
                )
                .with_fields(&[&f.name]));
            }
            let bad = |what: &str| {
                ApiError::new(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD",
                    format!("{}: value not of required type: {what}", f.name),
                )
                .with_fields(&[&f.name])
            };
            let v = match (value, &f.field_type) {
                (Value::Null, _) => Value::Null,
                (Value::Bool(b), FieldType::Boolean) => Value::Bool(*b),
                (Value::Number(d), t) if t.is_number() => Value::Number(*d),
                (Value::Text(s), t) if t.is_number() => {
                    Value::Number(parse_decimal(s).ok_or_else(|| bad(s))?)
                }
                (Value::Text(s), FieldType::Boolean) => match s.as_str() {
                    "true" | "1" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    _ => return Err(bad(s)),
                },
                (Value::Text(s), FieldType::Date) => {
                    parse_date(s).ok_or_else(|| bad(s))?;
                    Value::Text(s.clone())
                }
                (Value::Text(s), FieldType::DateTime) => {
                    Value::Text(format_datetime(parse_datetime(s).ok_or_else(|| bad(s))?))
                }
                (Value::Text(s), t) if t.is_text() => {
                    let max = t.max_length() as usize;
                    if s.chars().count() > max {
                        return Err(ApiError::new(
                            "STRING_TOO_LONG",
                            format!("{}: data value too large: {s} (max length={max})", f.name),
                        )
                        .with_fields(&[&f.name]));
                    }
                    if let FieldType::Reference(target) = t
                        && *target != "User"
                    {
                        let ok = self
                            .find(s)
                            .is_some_and(|(o, r)| o == *target && !r.deleted());
                        if !ok {
                            return Err(ApiError::new(
                                "INVALID_CROSS_REFERENCE_KEY",
                                "invalid cross reference id",
                            )
                            .with_fields(&[&f.name]));
                        }
                    }
                    Value::Text(s.clone())
                }
                (other, _) => return Err(bad(&format!("{other:?}"))),
            };
            out.insert(f.name.clone(), v);
        }
        Ok(out)
    }

    fn check_rules(
        &self,
        def: &ObjectDef,
        fields: &BTreeMap<String, Value>,
    ) -> Result<(), ApiError> {
        for rule in self.rules.iter().filter(|r| r.object == def.name) {
            if let Some(Value::Number(d)) = fields.get(&rule.field)
                && *d < rule.min
            {
                return Err(ApiError::new(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    rule.message.clone(),
                )
                .with_fields(&[&rule.field]));
            }
        }
        Ok(())
    }

    fn check_unique(
        &self,
        def: &ObjectDef,
        fields: &BTreeMap<String, Value>,
        own_id: Option<&str>,
    ) -> Result<(), ApiError> {
        for f in def.fields.values().filter(|f| f.unique) {
            if let Some(Value::Text(v)) = fields.get(&f.name)
                && let Some(other) =
                    self.unique
                        .get(&(def.name.clone(), f.name.clone(), v.to_lowercase()))
                && Some(other.as_str()) != own_id
            {
                return Err(ApiError::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {other}",
                        f.name
                    ),
                )
                .with_fields(&[&f.name]));
            }
        }
        Ok(())
    }

    fn index(&mut self, def: &ObjectDef, id: &str, fields: &BTreeMap<String, Value>, add: bool) {
        for f in def.fields.values().filter(|f| f.unique) {
            if let Some(Value::Text(v)) = fields.get(&f.name) {
                let key = (def.name.clone(), f.name.clone(), v.to_lowercase());
                if add {
                    self.unique.insert(key, id.to_owned());
                } else {
                    self.unique.remove(&key);
                }
            }
        }
    }

    fn derive(def: &ObjectDef, fields: &mut BTreeMap<String, Value>) {
        if def.name == "Opportunity"
            && let Some(stage) = fields.get("StageName").and_then(Value::as_str)
        {
            let (closed, won) = match stage {
                "Closed Won" => (true, true),
                "Closed Lost" => (true, false),
                _ => (false, false),
            };
            fields.insert("IsClosed".into(), Value::Bool(closed));
            fields.insert("IsWon".into(), Value::Bool(won));
        }
    }

    /// Inserts a record as `user`.
    pub fn create(
        &mut self,
        object: &str,
        input: &BTreeMap<String, Value>,
        user: &str,
    ) -> Result<String, ApiError> {
        let def = self.object(object)?;
        let mut fields = self.coerce(&def, input, true)?;
        let missing: Vec<&str> = def
            .fields
            .values()
            .filter(|f| f.required && fields.get(&f.name).is_none_or(Value::is_null))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            )
            .with_fields(&missing));
        }
        self.check_unique(&def, &fields, None)?;
        self.check_rules(&def, &fields)?;
        let id = self.new_id(def.key_prefix);
        let now = format_datetime(self.now());
        fields.insert("Id".into(), Value::text(&id));
        fields.insert("IsDeleted".into(), Value::Bool(false));
        for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            fields.insert(f.into(), Value::text(&now));
        }
        for f in ["CreatedById", "LastModifiedById"] {
            fields.insert(f.into(), Value::text(user));
        }
        if def.name == "Order" {
            fields.insert(
                "OrderNumber".into(),
                Value::text(format!("{:08}", self.counter)),
            );
        }
        Self::derive(&def, &mut fields);
        self.index(&def, &id, &fields, true);
        self.note_stage(&def, &id, None, &fields);
        self.records
            .entry(def.name.clone())
            .or_default()
            .insert(id.clone(), Stored { fields });
        Ok(id)
    }

    fn note_stage(
        &mut self,
        def: &ObjectDef,
        id: &str,
        before: Option<&str>,
        after: &BTreeMap<String, Value>,
    ) {
        if def.name != "Opportunity" {
            return;
        }
        let stage = after.get("StageName").and_then(Value::as_str);
        if stage == Some("Closed Won") && before != Some("Closed Won") {
            let at = self.last_ts;
            self.closed_won.push(ClosedWon {
                record_id: id.to_owned(),
                stage: "Closed Won".into(),
                at,
            });
        }
    }

    /// Updates a record as `user`. Unknown id: `NOT_FOUND`; deleted: `ENTITY_IS_DELETED`.
    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        input: &BTreeMap<String, Value>,
        user: &str,
    ) -> Result<String, ApiError> {
        let def = self.object(object)?;
        let not_found = || {
            ApiError::new(
                "NOT_FOUND",
                format!("Provided external ID field does not exist or is not accessible: {id}"),
            )
        };
        let id = self.canonical_id(&def.name, id).ok_or_else(not_found)?;
        let current = self
            .records
            .get(&def.name)
            .and_then(|m| m.get(&id))
            .ok_or_else(not_found)?;
        if current.deleted() {
            return Err(ApiError::new("ENTITY_IS_DELETED", "entity is deleted"));
        }
        let before = current.fields.clone();
        let changes = self.coerce(&def, input, false)?;
        let mut fields = before.clone();
        for (k, v) in changes {
            fields.insert(k, v);
        }
        let nulled: Vec<&str> = def
            .fields
            .values()
            .filter(|f| f.required && fields.get(&f.name).is_none_or(Value::is_null))
            .map(|f| f.name.as_str())
            .collect();
        if !nulled.is_empty() {
            return Err(ApiError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", nulled.join(", ")),
            )
            .with_fields(&nulled));
        }
        self.check_unique(&def, &fields, Some(&id))?;
        self.check_rules(&def, &fields)?;
        let now = format_datetime(self.now());
        fields.insert("LastModifiedDate".into(), Value::text(&now));
        fields.insert("SystemModstamp".into(), Value::text(&now));
        fields.insert("LastModifiedById".into(), Value::text(user));
        Self::derive(&def, &mut fields);
        self.index(&def, &id, &before, false);
        self.index(&def, &id, &fields, true);
        let old_stage = before
            .get("StageName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.note_stage(&def, &id, old_stage.as_deref(), &fields);
        if let Some(m) = self.records.get_mut(&def.name) {
            m.insert(id.clone(), Stored { fields });
        }
        Ok(id)
    }

    /// Marks a record deleted (it stays visible to `queryAll`).
    pub fn delete(&mut self, object: &str, id: &str, user: &str) -> Result<(), ApiError> {
        let def = self.object(object)?;
        let id = self
            .canonical_id(&def.name, id)
            .ok_or_else(|| ApiError::new("NOT_FOUND", "The requested resource does not exist"))?;
        let now = format_datetime(self.now());
        let fields = {
            let r = self
                .records
                .get_mut(&def.name)
                .and_then(|m| m.get_mut(&id))
                .ok_or_else(|| {
                    ApiError::new("NOT_FOUND", "The requested resource does not exist")
                })?;
            if r.deleted() {
                return Err(ApiError::new("ENTITY_IS_DELETED", "entity is deleted"));
            }
            r.fields.insert("IsDeleted".into(), Value::Bool(true));
            r.fields.insert("SystemModstamp".into(), Value::text(&now));
            r.fields
                .insert("LastModifiedById".into(), Value::text(user));
            r.fields.clone()
        };
        self.index(&def, &id, &fields, false);
        Ok(())
    }

    /// Ids of live records whose `field` equals `value` (case-insensitively).
    pub fn matching(&self, object: &str, field: &str, value: &str) -> Vec<String> {
        let lower = value.to_lowercase();
        self.records
            .get(object)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| !r.deleted())
                    .filter(|(_, r)| {
                        r.fields
                            .get(field)
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.to_lowercase() == lower)
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Upsert by external id (or `Id`).
    pub fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        input: &BTreeMap<String, Value>,
        user: &str,
    ) -> Result<Upsert, ApiError> {
        let def = self.object(object)?;
        let Some(f) = def.field(field).filter(|f| f.external_id || f.name == "Id") else {
            return Err(ApiError::new(
                "NOT_FOUND",
                format!("Provided external ID field does not exist or is not accessible: {field}"),
            ));
        };
        let field = f.name.clone();
        let matches = if field == "Id" {
            self.canonical_id(&def.name, value).into_iter().collect()
        } else if f.unique {
            self.unique
                .get(&(def.name.clone(), field.clone(), value.to_lowercase()))
                .cloned()
                .into_iter()
                .collect()
        } else {
            self.matching(&def.name, &field, value)
        };
        let mut input = input.clone();
        input.retain(|k, _| !k.eq_ignore_ascii_case(&field));
        match matches.as_slice() {
            [] => {
                if field != "Id" {
                    input.insert(field, Value::text(value));
                }
                Ok(Upsert::Created(self.create(&def.name, &input, user)?))
            }
            [id] => Ok(Upsert::Updated(self.update(&def.name, id, &input, user)?)),
            _ => Ok(Upsert::Multiple(matches)),
        }
    }
}
