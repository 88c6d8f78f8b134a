//! The BusinessWorks table and column names cashloop uses, from configuration.
//!
//! BusinessWorks' AR/OE/IC table names are not public (`protocols.md` §5): the defaults are the
//! names in [`crate::objects`] (BusinessWorks column) and the public File Formats conventions
//! (PascalCase, module prefix AR/OE/IC); an installation names its real tables and columns in
//! the agent's `--bw-config` TOML file (unknown keys are refused, so a typo is not silently
//! ignored). Every name is checked to be a plain SQL identifier before it is put in a query.

use serde::{Deserialize, Serialize};

use crate::objects::{Object, SageLine};

fn default_table(o: Object) -> String {
    SageLine::BusinessWorks
        .name(o)
        .unwrap_or_default()
        .to_owned()
}

/// Customers (A/R).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerNames {
    pub table: String,
    pub customer_no: String,
    pub name: String,
    pub address1: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country: String,
    pub phone: String,
    pub email: String,
    /// The field that carries the Salesforce Account id (a user-defined field).
    pub salesforce_id: String,
}

impl Default for CustomerNames {
    fn default() -> Self {
        CustomerNames {
            table: default_table(Object::Customer),
            customer_no: "CustomerNo".into(),
            name: "CustomerName".into(),
            address1: "Address1".into(),
            city: "City".into(),
            state: "State".into(),
            zip_code: "ZipCode".into(),
            country: "Country".into(),
            phone: "Phone".into(),
            email: "Email".into(),
            salesforce_id: "SalesforceId".into(),
        }
    }
}

/// Order headers (O/E).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderNames {
    pub table: String,
    pub order_no: String,
    pub customer_no: String,
    pub order_date: String,
    pub customer_po: String,
    /// The field that carries the Salesforce Opportunity id.
    pub salesforce_id: String,
}

impl Default for OrderNames {
    fn default() -> Self {
        OrderNames {
            table: default_table(Object::Order),
            order_no: "OrderNo".into(),
            customer_no: "CustomerNo".into(),
            order_date: "OrderDate".into(),
            customer_po: "CustomerPO".into(),
            salesforce_id: "SalesforceId".into(),
        }
    }
}

/// Order lines (O/E).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderLineNames {
    pub table: String,
    pub order_no: String,
    pub line_no: String,
    pub item_code: String,
    pub quantity: String,
    pub unit_price: String,
}

impl Default for OrderLineNames {
    fn default() -> Self {
        OrderLineNames {
            table: format!("{}Line", default_table(Object::Order)),
            order_no: "OrderNo".into(),
            line_no: "LineNo".into(),
            item_code: "ItemCode".into(),
            quantity: "Quantity".into(),
            unit_price: "UnitPrice".into(),
        }
    }
}

/// Invoice headers with their open balance (A/R).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvoiceNames {
    pub table: String,
    pub invoice_no: String,
    pub invoice_date: String,
    pub customer_no: String,
    /// The order it invoiced (empty or NULL when none).
    pub order_no: String,
    pub customer_po: String,
    pub sales_amount: String,
    pub tax_amount: String,
    pub freight_amount: String,
    pub total_amount: String,
    /// What is still owed.
    pub balance: String,
}

impl Default for InvoiceNames {
    fn default() -> Self {
        InvoiceNames {
            table: default_table(Object::Invoice),
            invoice_no: "InvoiceNo".into(),
            invoice_date: "InvoiceDate".into(),
            customer_no: "CustomerNo".into(),
            order_no: "OrderNo".into(),
            customer_po: "CustomerPO".into(),
            sales_amount: "SalesAmount".into(),
            tax_amount: "TaxAmount".into(),
            freight_amount: "FreightAmount".into(),
            total_amount: "TotalAmount".into(),
            balance: "Balance".into(),
        }
    }
}

/// Invoice lines (A/R).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvoiceLineNames {
    pub table: String,
    pub invoice_no: String,
    pub line_no: String,
    pub item_code: String,
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub extension: String,
}

impl Default for InvoiceLineNames {
    fn default() -> Self {
        InvoiceLineNames {
            table: format!("{}Line", default_table(Object::Invoice)),
            invoice_no: "InvoiceNo".into(),
            line_no: "LineNo".into(),
            item_code: "ItemCode".into(),
            description: "Description".into(),
            quantity: "Quantity".into(),
            unit_price: "UnitPrice".into(),
            extension: "Extension".into(),
        }
    }
}

/// Items (I/C).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItemNames {
    pub table: String,
    pub item_code: String,
    pub description: String,
    pub unit_price: String,
    pub item_type: String,
}

impl Default for ItemNames {
    fn default() -> Self {
        ItemNames {
            table: default_table(Object::Item),
            item_code: "ItemCode".into(),
            description: "Description".into(),
            unit_price: "UnitPrice".into(),
            item_type: "ItemType".into(),
        }
    }
}

/// Every name cashloop uses in BusinessWorks (the `--bw-config` file, as TOML tables
/// `[customer]`, `[order]`, `[order_line]`, `[invoice]`, `[invoice_line]`, `[item]`; a table or
/// key left out keeps its default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BwNames {
    pub customer: CustomerNames,
    pub order: OrderNames,
    pub order_line: OrderLineNames,
    pub invoice: InvoiceNames,
    pub invoice_line: InvoiceLineNames,
    pub item: ItemNames,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "BusinessWorks name {key} = {value:?} is not a plain SQL identifier (letters, digits, _; 1–64 characters, not starting with a digit)"
)]
pub struct NameError {
    pub key: String,
    pub value: String,
}

fn check(key: &str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl BwNames {
    /// Checks every name is a plain identifier (they are put into SQL text, quoted).
    pub fn validate(&self) -> Result<(), NameError> {
        // Through the serialized form, so a field added later is checked too.
        let v = serde_json::to_value(self).unwrap_or_default();
        if let Some(tables) = v.as_object() {
            for (t, cols) in tables {
                for (k, name) in cols.as_object().into_iter().flatten() {
                    check(&format!("{t}.{k}"), name.as_str().unwrap_or_default())?;
                }
            }
        }
        Ok(())
    }
}

/// `name` quoted as an SQL identifier (validated names hold no quote).
pub fn q(name: &str) -> String {
    format!("\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_objects_table_and_toml_overrides_refuse_unknown_keys() {
        let d = BwNames::default();
        assert_eq!(d.customer.table, "ARCustomer");
        assert_eq!(d.order.table, "OEOrder");
        assert_eq!(d.order_line.table, "OEOrderLine");
        assert_eq!(d.invoice.table, "ARInvoice");
        assert_eq!(d.item.table, "ICItem");
        d.validate().unwrap();

        let n: BwNames = toml::from_str(
            "[customer]\ntable = \"ARCust\"\nsalesforce_id = \"UserField1\"\n[item]\nunit_price = \"Price1\"\n",
        )
        .unwrap();
        assert_eq!(n.customer.table, "ARCust");
        assert_eq!(n.customer.salesforce_id, "UserField1");
        assert_eq!(n.customer.customer_no, "CustomerNo");
        assert_eq!(n.item.unit_price, "Price1");
        assert_eq!(n.invoice, InvoiceNames::default());

        let err = toml::from_str::<BwNames>("[customer]\ntabel = \"X\"\n").unwrap_err();
        assert!(err.to_string().contains("tabel"), "{err}");
        let err = toml::from_str::<BwNames>("[vendor]\ntable = \"X\"\n").unwrap_err();
        assert!(err.to_string().contains("vendor"), "{err}");

        let mut bad = BwNames::default();
        bad.invoice.balance = "Balance\"; DROP TABLE x".into();
        let err = bad.validate().unwrap_err();
        assert_eq!(err.key, "invoice.balance");
    }
}
