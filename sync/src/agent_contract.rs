//! The typed command contract between the server's agent-backed loop and `cashloop agent`, one
//! for every on-premise Sage line (Sage 100, BusinessWorks): the server speaks these payloads
//! and reads these results whatever the line, so the flow does not change with the line; each
//! agent executor maps them to its line (eBusiness Web Services, Visual Integrator files and
//! ODBC for Sage 100; import files and ODBC for BusinessWorks).
//!
//! Amounts are integer minor units of the installation's currency (Sage 100 and BusinessWorks
//! keep 2 decimal places); quantities are decimal strings; dates are `YYYYMMDD`. A customer is
//! the pair (`ar_division_no`, `customer_no`); a line without divisions (BusinessWorks) uses
//! `"00"`. Reads are incremental: `since` is the opaque cursor the previous result returned as
//! `next` (`None` on the first read); `more` says another page is waiting.

use serde::{Deserialize, Serialize};

/// Command kinds (`agent_commands.kind`).
pub mod kind {
    pub const UPSERT_CUSTOMER: &str = "upsert_customer";
    pub const CREATE_SALES_ORDER: &str = "create_sales_order";
    pub const READ_CHANGED_INVOICES: &str = "read_changed_invoices";
    pub const READ_CASH_RECEIPTS: &str = "read_cash_receipts";
    pub const READ_ITEMS: &str = "read_items";
    pub const IMPORT_CASH_RECEIPTS: &str = "import_cash_receipts";
}

// ---- payloads -------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertCustomer {
    /// The Salesforce Account id (written to the customer's Salesforce-id UDF / field).
    pub salesforce_id: String,
    pub ar_division_no: String,
    pub customer_no: String,
    pub customer_name: String,
    #[serde(default)]
    pub address_line1: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub zip_code: String,
    #[serde(default)]
    pub country_code: String,
    #[serde(default)]
    pub telephone_no: String,
    #[serde(default)]
    pub email_address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub item_code: String,
    /// A decimal string (`"2"`, `"1.5"`), positive.
    pub quantity: String,
    /// Integer minor units, not negative.
    pub unit_price_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSalesOrder {
    /// The Salesforce Opportunity id (written to the order's Salesforce-id UDF / field; an
    /// agent looks for an order carrying it before creating one).
    pub salesforce_id: String,
    pub ar_division_no: String,
    pub customer_no: String,
    #[serde(default)]
    pub customer_po_no: String,
    /// `YYYYMMDD`.
    pub order_date: String,
    pub lines: Vec<OrderLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CashReceipt {
    /// Our payment id (also the receipt's comment, so a person can trace it).
    pub salesforce_id: String,
    pub ar_division_no: String,
    pub customer_no: String,
    /// `YYYYMMDD`.
    pub deposit_date: String,
    /// The payment reference (our payment id); unique per receipt.
    pub check_no: String,
    pub amount_minor: i64,
    /// The invoice it pays; empty = on account.
    #[serde(default)]
    pub invoice_no: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportCashReceipts {
    pub receipts: Vec<CashReceipt>,
}

/// Payload of the three `read_*` kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadChanges {
    #[serde(default)]
    pub since: Option<String>,
    /// The most records one result holds (an agent may return fewer).
    pub max_rows: u32,
}

// ---- results --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerResult {
    /// `created`, `updated`.
    pub action: String,
    pub ar_division_no: String,
    pub customer_no: String,
    /// `{division}-{customer}`.
    pub document_no: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SalesOrderResult {
    pub sales_order_no: String,
    /// The same number (the agent's idempotency record keys on it).
    pub document_no: String,
    /// `created`, `found` (an earlier delivery had created it).
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportReceiptsResult {
    /// The import file written.
    pub file: String,
    pub document_no: String,
    pub receipts: u64,
    pub total_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub item_code: String,
    #[serde(default)]
    pub description: String,
    /// Decimal string.
    pub quantity: String,
    pub unit_price_minor: i64,
    /// The line's extended amount as Sage computed it.
    pub extension_minor: i64,
}

/// A posted invoice with its current open balance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub invoice_no: String,
    /// `YYYYMMDD`.
    pub invoice_date: String,
    pub ar_division_no: String,
    pub customer_no: String,
    /// The sales order it invoiced, when it came from one.
    #[serde(default)]
    pub sales_order_no: Option<String>,
    /// The Opportunity id from the order's Salesforce-id UDF, when Sage carried it over.
    #[serde(default)]
    pub salesforce_id: Option<String>,
    #[serde(default)]
    pub customer_po_no: String,
    pub lines: Vec<InvoiceLine>,
    /// Sum of the lines (taxable + non-taxable sales).
    pub sales_minor: i64,
    pub sales_tax_minor: i64,
    pub freight_minor: i64,
    /// `sales + tax + freight`.
    pub total_minor: i64,
    /// Still owed (the open-invoice balance; 0 once paid in full).
    pub balance_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvoicesResult {
    pub invoices: Vec<Invoice>,
    pub next: Option<String>,
    pub more: bool,
}

/// A cash receipt posted in Sage (typed in by a person, or imported from our file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostedReceipt {
    pub deposit_no: String,
    pub ar_division_no: String,
    pub customer_no: String,
    pub check_no: String,
    /// `YYYYMMDD`.
    pub deposit_date: String,
    pub amount_minor: i64,
    #[serde(default)]
    pub invoice_no: Option<String>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptsResult {
    pub receipts: Vec<PostedReceipt>,
    pub next: Option<String>,
    pub more: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item_code: String,
    #[serde(default)]
    pub description: String,
    pub unit_price_minor: i64,
    #[serde(default)]
    pub item_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemsResult {
    pub items: Vec<Item>,
    pub next: Option<String>,
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_refuse_unknown_fields_and_results_round_trip() {
        let bad = serde_json::json!({"since": null, "max_rows": 5, "extra": 1});
        assert!(serde_json::from_value::<ReadChanges>(bad).is_err());
        let r = InvoicesResult {
            invoices: vec![],
            next: Some("20261126|120000|0100001".into()),
            more: false,
        };
        let back: InvoicesResult =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
