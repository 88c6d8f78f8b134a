//! Sage X3: the client ([`X3Client`]) for the REST web API and the SOAP web services
//! (`CAdxWebServiceXmlCC`), selectable per installation; transport-neutral records
//! ([`X3Record`]) with their JSON and `<PARAM>` forms; typed objects ([`types`]); typed
//! errors ([`X3Error`]); multi-folder routing ([`X3Routing`]); and a protocol-faithful
//! simulator serving both surfaces over a real socket ([`simulator`]).
//!
//! What is there (issue 8, part 1): query with key paging, read, create (201 +
//! `Location`), update, SOAP `save` / `read` / `query` / `modify` / `run`; BPCUSTOMER
//! (Salesforce id in a configured custom field), SORDER with lines, SINVOICE with its open
//! amount, ITMMASTER, STOCK (read), PAYMENTH applied to invoices. The quote-to-cash loop on
//! top is [`crate::x3_loop`].

pub mod client;
pub mod error;
pub mod record;
pub mod routing;
pub mod schema;
pub mod simulator;
pub mod soap;
pub mod types;

pub use client::{
    Created, DEFAULT_SF_ID_FIELD, Filter, Op, Page, Secret, SoapSettings, Transport, X3Auth,
    X3Client, X3Config, X3Query, where_expression,
};
pub use error::{X3Error, X3Message};
pub use record::{Line, X3Record};
pub use routing::{AccountFacts, Route, RouteRule, RouteWhen, RoutingError, X3Routing};
pub use schema::{ObjectName, ObjectNames};
pub use types::{
    Address, Customer, InvoiceStatus, Item, OrderLine, Payment, PaymentAllocation, SalesInvoice,
    SalesOrder, StockLine,
};
