//! Sage Intacct XML Web Services (DTD 3.0): the client ([`IntacctClient`]), the response
//! envelope ([`wire`]), the XML toolkit ([`xml`]), typed errors ([`IntacctError`]) and a
//! protocol-faithful simulator ([`simulator`]) the tests drive the client against.
//!
//! What is there (issue 5, core): `getAPISession` and the session endpoint, many functions
//! per request with results at the control / authentication / function levels,
//! `readByQuery` + `readMore`, `query` with comparison filters (under `and`) and offset paging, `read`,
//! generic `create` / `update` / `delete`, legacy `create_invoice`, idempotent writes by
//! function `controlid` with `uniqueid=true`, and a per-company concurrency limit.

pub mod client;
pub mod customers;
pub mod error;
pub mod load;
pub mod simulator;
pub mod wire;
pub mod xml;

pub use client::{
    ArPaymentItem, Compare, Condition, DEFAULT_ENDPOINT, Exchange, Function, IntacctClient,
    IntacctConfig, InvoiceLine, LegacyCurrency, NewArAdjustment, NewArPayment, NewBill, NewInvoice,
    NewSalesTransaction, Options, PaymentDeposit, Query, QueryPage, ReadByQueryPager,
    SalesTransactionLine, Secret, UserAuth,
};
pub use error::IntacctError;
pub use wire::{ErrorDetail, FunctionResult, Response, ResultStatus, parse_response};
pub use xml::Element;
