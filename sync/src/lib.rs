//! Sync engine: connectors to Salesforce and the Sage lines, mappings, flows, durable job queue, ID cross-reference.
//!
//! Not built yet (issues 4, 5, 8). It must never hold card data.

pub mod salesforce;
