//! The simulated org's metadata: objects, their key prefixes and fields (types, createable /
//! updateable, required, external id, unique), the defaults cashloop relies on, and custom
//! fields added by configuration.

use std::collections::BTreeMap;

use crate::salesforce::wire::{Describe, DescribeField};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    Id,
    String(u32),
    TextArea,
    Picklist,
    Email,
    Phone,
    Url,
    Reference(&'static str),
    Boolean,
    Currency,
    Double,
    Percent,
    Int,
    Date,
    DateTime,
}

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String(_) => "string",
            FieldType::TextArea => "textarea",
            FieldType::Picklist => "picklist",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Reference(_) => "reference",
            FieldType::Boolean => "boolean",
            FieldType::Currency => "currency",
            FieldType::Double => "double",
            FieldType::Percent => "percent",
            FieldType::Int => "int",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(
            self,
            FieldType::Id
                | FieldType::String(_)
                | FieldType::TextArea
                | FieldType::Picklist
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Reference(_)
        )
    }

    pub fn is_number(&self) -> bool {
        matches!(
            self,
            FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::Int
        )
    }

    pub fn max_length(&self) -> u32 {
        match self {
            FieldType::String(n) => *n,
            FieldType::TextArea => 32_768,
            FieldType::Id | FieldType::Reference(_) => 18,
            FieldType::Picklist | FieldType::Url | FieldType::Email => 255,
            FieldType::Phone => 40,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FieldDef {
    pub name: String,
    pub field_type: FieldType,
    pub createable: bool,
    pub updateable: bool,
    /// Must have a value on create (not nillable, no default).
    pub required: bool,
    pub external_id: bool,
    pub unique: bool,
    pub custom: bool,
}

impl FieldDef {
    fn new(name: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            name: name.to_owned(),
            field_type,
            createable: true,
            updateable: true,
            required: false,
            external_id: false,
            unique: false,
            custom: name.ends_with("__c"),
        }
    }

    fn system(name: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            createable: false,
            updateable: false,
            ..FieldDef::new(name, field_type)
        }
    }
}

/// A custom field declared in [`SimulatorConfig`](super::SimulatorConfig).
#[derive(Clone, Debug)]
pub struct CustomField {
    pub object: String,
    /// Must end in `__c`.
    pub name: String,
    pub field_type: FieldType,
    pub external_id: bool,
    pub unique: bool,
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct ObjectDef {
    pub name: String,
    pub key_prefix: &'static str,
    pub custom: bool,
    pub fields: BTreeMap<String, FieldDef>,
    /// Lower-case field name → canonical name (SOQL and JSON field names are
    /// case-insensitive).
    lower: BTreeMap<String, String>,
}

impl ObjectDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.get(name).or_else(|| {
            self.lower
                .get(&name.to_ascii_lowercase())
                .and_then(|c| self.fields.get(c))
        })
    }

    fn add(&mut self, f: FieldDef) {
        self.lower
            .insert(f.name.to_ascii_lowercase(), f.name.clone());
        self.fields.insert(f.name.clone(), f);
    }

    pub fn describe(&self) -> Describe {
        Describe {
            name: self.name.clone(),
            label: self.name.trim_end_matches("__c").replace('_', " "),
            custom: self.custom,
            key_prefix: self.key_prefix.to_owned(),
            createable: true,
            updateable: true,
            deletable: true,
            queryable: true,
            fields: self
                .fields
                .values()
                .map(|f| DescribeField {
                    name: f.name.clone(),
                    label: f.name.trim_end_matches("__c").replace('_', " "),
                    field_type: f.field_type.name().to_owned(),
                    length: f.field_type.max_length(),
                    createable: f.createable,
                    updateable: f.updateable,
                    custom: f.custom,
                    external_id: f.external_id,
                    unique: f.unique,
                    nillable: !f.required && f.name != "Id",
                    id_lookup: f.name == "Id" || f.external_id,
                    reference_to: match f.field_type {
                        FieldType::Reference(t) => vec![t.to_owned()],
                        _ => Vec::new(),
                    },
                })
                .collect(),
        }
    }
}

/// Every object of the simulated org.
#[derive(Clone, Debug)]
pub struct Schema {
    objects: BTreeMap<String, ObjectDef>,
    lower: BTreeMap<String, String>,
}

impl Schema {
    pub fn object(&self, name: &str) -> Option<&ObjectDef> {
        self.objects.get(name).or_else(|| {
            self.lower
                .get(&name.to_ascii_lowercase())
                .and_then(|c| self.objects.get(c))
        })
    }

    /// The object an id belongs to, by its key prefix.
    pub fn object_of_id(&self, id: &str) -> Option<&ObjectDef> {
        let prefix = id.get(..3)?;
        self.objects.values().find(|o| o.key_prefix == prefix)
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values()
    }

    /// Adds a custom field; refuses names without `__c` and unknown objects.
    pub fn add_custom(&mut self, c: &CustomField) -> Result<(), String> {
        if !c.name.ends_with("__c") {
            return Err(format!("custom field {} must end in __c", c.name));
        }
        let object = self
            .objects
            .get_mut(&c.object)
            .ok_or_else(|| format!("unknown object {}", c.object))?;
        let mut f = FieldDef::new(&c.name, c.field_type.clone());
        f.external_id = c.external_id;
        f.unique = c.unique;
        f.required = c.required;
        object.add(f);
        Ok(())
    }

    /// The org cashloop integrates with: standard objects for the order-to-cash loop, the
    /// Sage custom fields, and `Cashloop_Payment__c`.
    pub fn default_org() -> Schema {
        use FieldType::*;
        let mut schema = Schema {
            objects: BTreeMap::new(),
            lower: BTreeMap::new(),
        };
        let mut object = |name: &str, prefix: &'static str, fields: Vec<FieldDef>| {
            let mut o = ObjectDef {
                name: name.to_owned(),
                key_prefix: prefix,
                custom: name.ends_with("__c"),
                fields: BTreeMap::new(),
                lower: BTreeMap::new(),
            };
            for f in [
                FieldDef::system("Id", Id),
                FieldDef::system("IsDeleted", Boolean),
                FieldDef::system("CreatedDate", DateTime),
                FieldDef::system("CreatedById", Reference("User")),
                FieldDef::system("LastModifiedDate", DateTime),
                FieldDef::system("LastModifiedById", Reference("User")),
                FieldDef::system("SystemModstamp", DateTime),
            ] {
                o.add(f);
            }
            for f in fields {
                o.add(f);
            }
            schema
                .lower
                .insert(name.to_ascii_lowercase(), name.to_owned());
            schema.objects.insert(name.to_owned(), o);
        };
        let f = FieldDef::new;
        let req = |name: &str, t: FieldType| FieldDef {
            required: true,
            ..FieldDef::new(name, t)
        };
        let ext = |name: &str, unique: bool| FieldDef {
            external_id: true,
            unique,
            ..FieldDef::new(name, String(80))
        };
        let ro = FieldDef::system;
        object(
            "Account",
            "001",
            vec![
                req("Name", String(255)),
                f("AccountNumber", String(40)),
                f("Type", Picklist),
                f("Industry", Picklist),
                f("BillingStreet", TextArea),
                f("BillingCity", String(40)),
                f("BillingState", String(80)),
                f("BillingPostalCode", String(20)),
                f("BillingCountry", String(80)),
                f("Phone", Phone),
                f("Website", Url),
                f("Description", TextArea),
                f("ParentId", Reference("Account")),
                f("OwnerId", Reference("User")),
                f("CurrencyIsoCode", Picklist),
                ext("Sage_Customer_Id__c", true),
                // Not unique: two accounts can carry one legacy code (upsert answers 300).
                ext("Legacy_Customer_Code__c", false),
                // The optional vendors module: Accounts with Type = Vendor.
                ext("Sage_Vendor_Id__c", true),
                f("Vendor_Email__c", Email),
            ],
        );
        object(
            "Contact",
            "003",
            vec![
                req("LastName", String(80)),
                f("FirstName", String(40)),
                f("AccountId", Reference("Account")),
                f("Email", Email),
                f("Phone", Phone),
                f("Title", String(128)),
                f("MailingStreet", TextArea),
                f("MailingCity", String(40)),
                f("MailingPostalCode", String(20)),
                f("MailingCountry", String(80)),
            ],
        );
        object(
            "Opportunity",
            "006",
            vec![
                req("Name", String(120)),
                req("StageName", Picklist),
                req("CloseDate", Date),
                f("AccountId", Reference("Account")),
                f("Amount", Currency),
                f("Probability", Percent),
                f("Pricebook2Id", Reference("Pricebook2")),
                f("Description", TextArea),
                f("CurrencyIsoCode", Picklist),
                ro("IsClosed", Boolean),
                ro("IsWon", Boolean),
                ext("Sage_Invoice_Number__c", true),
                f("Sage_Order_Number__c", String(80)),
                f("Sage_Invoice_Status__c", Picklist),
                f("Balance_Due__c", Currency),
                f("Payment_Status__c", Picklist),
            ],
        );
        object(
            "OpportunityLineItem",
            "00k",
            vec![
                req("OpportunityId", Reference("Opportunity")),
                f("PricebookEntryId", Reference("PricebookEntry")),
                f("Product2Id", Reference("Product2")),
                req("Quantity", Double),
                f("UnitPrice", Currency),
                f("TotalPrice", Currency),
                f("Discount", Percent),
                f("ServiceDate", Date),
                f("Description", String(255)),
            ],
        );
        object(
            "Product2",
            "01t",
            vec![
                req("Name", String(255)),
                f("ProductCode", String(255)),
                f("Family", Picklist),
                f("IsActive", Boolean),
                f("Description", TextArea),
                f("StockKeepingUnit", String(180)),
                f("QuantityUnitOfMeasure", Picklist),
                ext("ExternalId", false),
            ],
        );
        object(
            "Pricebook2",
            "01s",
            vec![
                req("Name", String(255)),
                f("IsActive", Boolean),
                ro("IsStandard", Boolean),
                f("Description", String(255)),
            ],
        );
        object(
            "PricebookEntry",
            "01u",
            vec![
                req("Pricebook2Id", Reference("Pricebook2")),
                req("Product2Id", Reference("Product2")),
                req("UnitPrice", Currency),
                f("IsActive", Boolean),
                f("UseStandardPrice", Boolean),
                f("CurrencyIsoCode", Picklist),
            ],
        );
        object(
            "Order",
            "801",
            vec![
                req("AccountId", Reference("Account")),
                req("EffectiveDate", Date),
                req("Status", Picklist),
                f("OpportunityId", Reference("Opportunity")),
                f("Pricebook2Id", Reference("Pricebook2")),
                f("Description", TextArea),
                f("CurrencyIsoCode", Picklist),
                ro("OrderNumber", String(30)),
                ro("TotalAmount", Currency),
            ],
        );
        object(
            "Cashloop_Payment__c",
            "a0X",
            vec![
                f("Name", String(80)),
                req("Opportunity__c", Reference("Opportunity")),
                req("Amount__c", Currency),
                f("Currency__c", String(3)),
                f("Status__c", Picklist),
                f("Processed_At__c", DateTime),
                ext("Gateway_Payment_Id__c", true),
            ],
        );
        // The optional vendors module: Intacct AP bills, upserted by entity and RECORDNO.
        object(
            "Cashloop_AP_Bill__c",
            "a0Y",
            vec![
                f("Name", String(80)),
                f("Vendor__c", Reference("Account")),
                ext("Sage_Bill_Key__c", true),
                f("Bill_Number__c", String(80)),
                f("Bill_Date__c", Date),
                f("Due_Date__c", Date),
                f("Amount__c", Currency),
                f("Amount_Due__c", Currency),
                f("Currency__c", String(3)),
                f("Status__c", Picklist),
                f("Entity__c", String(40)),
            ],
        );
        object(
            "Cashloop_Credit_Memo__c",
            "a0Z",
            vec![
                f("Name", String(80)),
                req("Opportunity__c", Reference("Opportunity")),
                req("Amount__c", Currency),
                f("Reason__c", String(255)),
                ext("Sage_Adjustment_Id__c", true),
                f("Status__c", Picklist),
            ],
        );
        schema
    }
}
