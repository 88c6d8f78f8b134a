//! Sage 100's File Layout as a SQLite database: the tables the loop reads over ODBC, with the
//! column names and value shapes the ProvideX ODBC driver exposes (strings; dates as `YYYYMMDD`
//! strings; amounts as decimals). The simulator keeps its books here, so what the SOAP side
//! writes, the ODBC reader sees through the real SQLite ODBC driver.
//!
//! Only the columns the loop uses plus the keys. Sources: table names from protocols.md §4.3
//! (and `sync::objects`); field names from protocols.md §4.1 (BOI field list, without the
//! ProvideX `$`) unless a comment says otherwise. Sage's audit columns: `DateUpdated` is a
//! `YYYYMMDD` string and `TimeUpdated` a string of fractional hours (`"14.50833"` = 14:30:30,
//! `"9.25000"` = 09:15:00), so ordering by it as text is wrong before 10:00: readers compare it
//! as a number.

/// The user-defined field holding the Salesforce id on customers, orders and invoices.
pub const SF_UDF: &str = "UDF_SF_ID";

/// The tables, created if missing.
pub const TABLES: &[&str] = &[
    // KPRIMARY ARDivisionNo+CustomerNo (protocols.md §4.1, File Layouts).
    "CREATE TABLE IF NOT EXISTS AR_Customer (
        ARDivisionNo TEXT NOT NULL,
        CustomerNo TEXT NOT NULL,
        CustomerName TEXT NOT NULL DEFAULT '',
        AddressLine1 TEXT NOT NULL DEFAULT '',
        City TEXT NOT NULL DEFAULT '',
        State TEXT NOT NULL DEFAULT '',
        ZipCode TEXT NOT NULL DEFAULT '',
        CountryCode TEXT NOT NULL DEFAULT '',
        TelephoneNo TEXT NOT NULL DEFAULT '',
        EmailAddress TEXT NOT NULL DEFAULT '',
        UDF_SF_ID TEXT NOT NULL DEFAULT '',
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (ARDivisionNo, CustomerNo)
    )",
    // OrderStatus: O = open; the simulator sets C when the order is invoiced (Sage moves a
    // completed order to SO history; kept here so GetSalesOrder still finds it).
    "CREATE TABLE IF NOT EXISTS SO_SalesOrderHeader (
        SalesOrderNo TEXT NOT NULL PRIMARY KEY,
        OrderDate TEXT NOT NULL,
        OrderStatus TEXT NOT NULL DEFAULT 'O',
        ARDivisionNo TEXT NOT NULL,
        CustomerNo TEXT NOT NULL,
        CustomerPONo TEXT NOT NULL DEFAULT '',
        UDF_SF_ID TEXT NOT NULL DEFAULT '',
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT ''
    )",
    // LineKey: Sage's detail key within an order (File Layouts, SO_SalesOrderDetail).
    "CREATE TABLE IF NOT EXISTS SO_SalesOrderDetail (
        SalesOrderNo TEXT NOT NULL,
        LineKey TEXT NOT NULL,
        ItemCode TEXT NOT NULL,
        ItemCodeDesc TEXT NOT NULL DEFAULT '',
        QuantityOrdered DECIMAL(16,6) NOT NULL,
        UnitPrice DECIMAL(16,4) NOT NULL,
        ExtensionAmt DECIMAL(14,2) NOT NULL,
        PRIMARY KEY (SalesOrderNo, LineKey)
    )",
    // KPRIMARY InvoiceNo+HeaderSeqNo (File Layouts, AR_InvoiceHistoryHeader): HeaderSeqNo
    // tells apart invoices re-using a number.
    "CREATE TABLE IF NOT EXISTS AR_InvoiceHistoryHeader (
        InvoiceNo TEXT NOT NULL,
        HeaderSeqNo TEXT NOT NULL,
        InvoiceType TEXT NOT NULL DEFAULT 'IN',
        InvoiceDate TEXT NOT NULL,
        ARDivisionNo TEXT NOT NULL,
        CustomerNo TEXT NOT NULL,
        SalesOrderNo TEXT NOT NULL DEFAULT '',
        CustomerPONo TEXT NOT NULL DEFAULT '',
        TaxableSalesAmt DECIMAL(14,2) NOT NULL DEFAULT 0,
        NonTaxableSalesAmt DECIMAL(14,2) NOT NULL DEFAULT 0,
        SalesTaxAmt DECIMAL(14,2) NOT NULL DEFAULT 0,
        FreightAmt DECIMAL(14,2) NOT NULL DEFAULT 0,
        UDF_SF_ID TEXT NOT NULL DEFAULT '',
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (InvoiceNo, HeaderSeqNo)
    )",
    // DetailSeqNo: the line's key within the invoice (File Layouts, AR_InvoiceHistoryDetail).
    "CREATE TABLE IF NOT EXISTS AR_InvoiceHistoryDetail (
        InvoiceNo TEXT NOT NULL,
        HeaderSeqNo TEXT NOT NULL,
        DetailSeqNo TEXT NOT NULL,
        ItemCode TEXT NOT NULL,
        ItemCodeDesc TEXT NOT NULL DEFAULT '',
        QuantityShipped DECIMAL(16,6) NOT NULL,
        UnitPrice DECIMAL(16,4) NOT NULL,
        ExtensionAmt DECIMAL(14,2) NOT NULL,
        PRIMARY KEY (InvoiceNo, HeaderSeqNo, DetailSeqNo)
    )",
    // KPRIMARY ARDivisionNo+CustomerNo+InvoiceNo+InvoiceType (File Layouts, AR_OpenInvoice).
    "CREATE TABLE IF NOT EXISTS AR_OpenInvoice (
        ARDivisionNo TEXT NOT NULL,
        CustomerNo TEXT NOT NULL,
        InvoiceNo TEXT NOT NULL,
        InvoiceType TEXT NOT NULL DEFAULT 'IN',
        InvoiceDate TEXT NOT NULL,
        Balance DECIMAL(14,2) NOT NULL,
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (ARDivisionNo, CustomerNo, InvoiceNo, InvoiceType)
    )",
    // One row per check applied to one invoice (empty InvoiceNo: on account). DepositDate and
    // Comment follow the Visual Integrator import layout the agent writes (`agent::ViFolder`);
    // verify against the File Layouts of the installed version.
    "CREATE TABLE IF NOT EXISTS AR_CashReceiptsHistory (
        DepositNo TEXT NOT NULL,
        ARDivisionNo TEXT NOT NULL,
        CustomerNo TEXT NOT NULL,
        CheckNo TEXT NOT NULL,
        InvoiceNo TEXT NOT NULL DEFAULT '',
        DepositDate TEXT NOT NULL,
        PostingAmt DECIMAL(14,2) NOT NULL,
        Comment TEXT NOT NULL DEFAULT '',
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (DepositNo, ARDivisionNo, CustomerNo, CheckNo, InvoiceNo)
    )",
    // ItemType: 1 = regular item (File Layouts, CI_Item).
    "CREATE TABLE IF NOT EXISTS CI_Item (
        ItemCode TEXT NOT NULL PRIMARY KEY,
        ItemCodeDesc TEXT NOT NULL DEFAULT '',
        ItemType TEXT NOT NULL DEFAULT '1',
        StandardUnitPrice DECIMAL(16,4) NOT NULL DEFAULT 0,
        DateUpdated TEXT NOT NULL DEFAULT '',
        TimeUpdated TEXT NOT NULL DEFAULT ''
    )",
];

/// `DateUpdated` and `TimeUpdated` as Sage writes them for `at` (the Sage server's local time):
/// `YYYYMMDD` and fractional hours with 5 decimal places, no leading zero (`"9.25000"`).
pub fn stamp(at: chrono::NaiveDateTime) -> (String, String) {
    use chrono::Timelike;
    let ms = i64::from(at.num_seconds_from_midnight()) * 1000
        + i64::from(at.nanosecond() / 1_000_000).min(999);
    let mut hours =
        (rust_decimal::Decimal::from(ms) / rust_decimal::Decimal::from(3_600_000)).round_dp(5);
    hours.rescale(5);
    (at.format("%Y%m%d").to_string(), hours.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_updated_is_fractional_hours() {
        let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d %H:%M:%S").unwrap();
        assert_eq!(
            stamp(at("20261126 14:30:30")),
            ("20261126".into(), "14.50833".into())
        );
        assert_eq!(stamp(at("20261126 09:15:00")).1, "9.25000");
        assert_eq!(stamp(at("20261126 00:00:00")).1, "0.00000");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for t in TABLES {
            conn.execute(t, []).unwrap();
        }
    }
}
