//! Salesforce: the REST connector ([`SalesforceClient`]: OAuth JWT bearer and client
//! credentials, SOQL with paging, sObject CRUD and upsert by external id, sObject
//! Collections, describe, Bulk API 2.0, custom notifications, `Sforce-Limit-Info`), and a protocol-faithful
//! [`simulator`] of a Salesforce org that the connector is tested against over HTTP.
//!
//! Money never passes through `f64`: JSON numbers are read from their literal text into
//! exact decimals ([`wire::Value::Number`]). Secrets never appear in `Debug`, errors or logs.

pub mod auth;
pub mod bulk;
pub mod client;
pub mod error;
pub mod notifications;
pub mod simulator;
pub mod soql;
pub mod wire;

pub use auth::Credentials;
pub use client::{
    COLLECTION_MAX_RECORDS, CallStats, ClientConfig, LimitPolicy, QueryPager, SalesforceClient,
    Upserted,
};
pub use error::SalesforceError;
pub use notifications::CustomNotification;
pub use wire::{ApiError, Record, SaveResult, Value};
