//! A BusinessWorks-shaped database for tests and the simulator: SQLite tables with the
//! configured names and the columns cashloop reads.
//!
//! Not the real layout (that comes from a Zen DDF dump, `SELECT * FROM X$File` / `X$Field`):
//! only the columns cashloop uses. Amounts and quantities are TEXT so the SQLite ODBC driver
//! hands back exactly what was stored (Zen's DECIMAL/CURRENCY render as decimal text too);
//! dates are TEXT `YYYY-MM-DD`, as the Zen driver renders DATE.

use super::names::{BwNames, q};

/// Field widths the simulator's import enforces (BusinessWorks' own are in its File Formats
/// document; these are the simulator's, close to common A/R widths).
pub mod width {
    pub const CUSTOMER_NO: usize = 10;
    pub const NAME: usize = 30;
    pub const ADDRESS: usize = 30;
    pub const CITY: usize = 20;
    pub const STATE: usize = 15;
    pub const ZIP: usize = 10;
    pub const COUNTRY: usize = 3;
    pub const PHONE: usize = 20;
    pub const EMAIL: usize = 60;
    pub const SALESFORCE_ID: usize = 18;
    pub const ORDER_NO: usize = 8;
    pub const CUSTOMER_PO: usize = 20;
    pub const ITEM_CODE: usize = 15;
}

/// The CREATE TABLE statements for `n` (SQLite).
pub fn create_tables(n: &BwNames) -> Vec<String> {
    let c = &n.customer;
    let o = &n.order;
    let ol = &n.order_line;
    let i = &n.invoice;
    let il = &n.invoice_line;
    let it = &n.item;
    vec![
        format!(
            "CREATE TABLE {} ({} TEXT PRIMARY KEY, {} TEXT NOT NULL, {} TEXT, {} TEXT, {} TEXT, {} TEXT, {} TEXT, {} TEXT, {} TEXT, {} TEXT)",
            q(&c.table),
            q(&c.customer_no),
            q(&c.name),
            q(&c.address1),
            q(&c.city),
            q(&c.state),
            q(&c.zip_code),
            q(&c.country),
            q(&c.phone),
            q(&c.email),
            q(&c.salesforce_id)
        ),
        format!(
            "CREATE TABLE {} ({} TEXT PRIMARY KEY, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT, {} TEXT)",
            q(&o.table),
            q(&o.order_no),
            q(&o.customer_no),
            q(&o.order_date),
            q(&o.customer_po),
            q(&o.salesforce_id)
        ),
        format!(
            "CREATE TABLE {} ({} TEXT NOT NULL, {} INTEGER NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL, PRIMARY KEY ({}, {}))",
            q(&ol.table),
            q(&ol.order_no),
            q(&ol.line_no),
            q(&ol.item_code),
            q(&ol.quantity),
            q(&ol.unit_price),
            q(&ol.order_no),
            q(&ol.line_no)
        ),
        format!(
            "CREATE TABLE {} ({} TEXT PRIMARY KEY, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT, {} TEXT, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL)",
            q(&i.table),
            q(&i.invoice_no),
            q(&i.invoice_date),
            q(&i.customer_no),
            q(&i.order_no),
            q(&i.customer_po),
            q(&i.sales_amount),
            q(&i.tax_amount),
            q(&i.freight_amount),
            q(&i.total_amount),
            q(&i.balance)
        ),
        format!(
            "CREATE TABLE {} ({} TEXT NOT NULL, {} INTEGER NOT NULL, {} TEXT NOT NULL, {} TEXT, {} TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL, PRIMARY KEY ({}, {}))",
            q(&il.table),
            q(&il.invoice_no),
            q(&il.line_no),
            q(&il.item_code),
            q(&il.description),
            q(&il.quantity),
            q(&il.unit_price),
            q(&il.extension),
            q(&il.invoice_no),
            q(&il.line_no)
        ),
        format!(
            "CREATE TABLE {} ({} TEXT PRIMARY KEY, {} TEXT, {} TEXT NOT NULL, {} TEXT)",
            q(&it.table),
            q(&it.item_code),
            q(&it.description),
            q(&it.unit_price),
            q(&it.item_type)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_use_the_configured_names() {
        let mut n = BwNames::default();
        n.item.table = "ICInventory".into();
        let s = create_tables(&n);
        assert_eq!(s.len(), 6);
        assert!(s[0].starts_with("CREATE TABLE \"ARCustomer\" (\"CustomerNo\" TEXT PRIMARY KEY"));
        assert!(s[5].starts_with("CREATE TABLE \"ICInventory\""));
    }
}
