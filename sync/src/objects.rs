//! Object-name translation: the objects the flows speak of, and what each Sage line calls them.
//!
//! One table per line, so a flow asks for [`Object::Invoice`] and a connector names it
//! `ARINVOICE`, `AR_InvoiceHistoryHeader`, `SINVOICE` or the configured BusinessWorks table.
//! Sage 100 names are its File Layout (ODBC) tables; BusinessWorks names are defaults to be
//! overridden from configuration (its AR/OE/IC table names are not public, see
//! `protocols.md` §5) and follow its PascalCase module-prefix convention.

use std::fmt;

/// Our objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    Customer,
    Contact,
    Order,
    Invoice,
    Item,
    Payment,
    Credit,
    Vendor,
    Bill,
}

impl Object {
    pub const ALL: [Object; 9] = [
        Object::Customer,
        Object::Contact,
        Object::Order,
        Object::Invoice,
        Object::Item,
        Object::Payment,
        Object::Credit,
        Object::Vendor,
        Object::Bill,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Object::Customer => "customer",
            Object::Contact => "contact",
            Object::Order => "order",
            Object::Invoice => "invoice",
            Object::Item => "item",
            Object::Payment => "payment",
            Object::Credit => "credit",
            Object::Vendor => "vendor",
            Object::Bill => "bill",
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The Sage lines cashloop speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SageLine {
    Intacct,
    Sage100,
    X3,
    BusinessWorks,
}

impl SageLine {
    /// The line's name for `object`; `None` where the line has no such object.
    pub const fn name(self, object: Object) -> Option<&'static str> {
        use Object::*;
        match self {
            // XML Web Services objects (generic or legacy functions write them).
            SageLine::Intacct => Some(match object {
                Customer => "CUSTOMER",
                Contact => "CONTACT",
                Order => "SODOCUMENT",
                Invoice => "ARINVOICE",
                Item => "ITEM",
                Payment => "ARPYMT",
                Credit => "ARADJUSTMENT",
                Vendor => "VENDOR",
                Bill => "APBILL",
            }),
            // File Layout tables, as the ProvideX ODBC driver exposes them.
            SageLine::Sage100 => match object {
                Customer => Some("AR_Customer"),
                Contact => Some("AR_CustomerContact"),
                Order => Some("SO_SalesOrderHeader"),
                Invoice => Some("AR_InvoiceHistoryHeader"),
                Item => Some("CI_Item"),
                Payment => Some("AR_CashReceiptsHistory"),
                Credit => Some("AR_InvoiceHistoryHeader"),
                Vendor => Some("AP_Vendor"),
                Bill => Some("AP_OpenInvoice"),
            },
            // Web API classes (the representation is usually the same name).
            SageLine::X3 => match object {
                Customer => Some("BPCUSTOMER"),
                Contact => Some("CONTACT"),
                Order => Some("SORDER"),
                Invoice => Some("SINVOICE"),
                Item => Some("ITMMASTER"),
                Payment => Some("PAYMENTH"),
                Credit => Some("SINVOICE"),
                Vendor => Some("BPSUPPLIER"),
                Bill => Some("PINVOICE"),
            },
            // Defaults only: configuration names the real tables.
            SageLine::BusinessWorks => match object {
                Customer => Some("ARCustomer"),
                Contact => None,
                Order => Some("OEOrder"),
                Invoice => Some("ARInvoice"),
                Item => Some("ICItem"),
                Payment => Some("ARPayment"),
                Credit => None,
                Vendor => Some("APVendor"),
                Bill => Some("APInvoice"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_names_the_loop_objects() {
        // What the quote-to-cash loop needs on every line.
        for line in [
            SageLine::Intacct,
            SageLine::Sage100,
            SageLine::X3,
            SageLine::BusinessWorks,
        ] {
            for o in [
                Object::Customer,
                Object::Order,
                Object::Invoice,
                Object::Item,
                Object::Payment,
            ] {
                assert!(line.name(o).is_some(), "{line:?} has no name for {o}");
            }
        }
        assert_eq!(SageLine::Intacct.name(Object::Invoice), Some("ARINVOICE"));
        assert_eq!(
            SageLine::Sage100.name(Object::Customer),
            Some("AR_Customer")
        );
        assert_eq!(SageLine::X3.name(Object::Order), Some("SORDER"));
        assert_eq!(Object::ALL.len(), 9);
    }
}
