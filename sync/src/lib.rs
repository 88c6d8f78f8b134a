//! Sync engine: connectors to Salesforce and the Sage lines, mappings, flows, durable job queue,
//! ID cross-reference. It must never hold card data.
//!
//! Built so far (issue 4, in progress): the durable job queue and its worker ([`jobs`]),
//! change-capture cursors ([`cursor`]), the ID cross-reference ([`xref`]), the review queue
//! with the conflict rule ([`review`]), Salesforce Outbound Messages ([`outbound`]), field
//! mappings with system-of-record rules, transforms and echo suppression ([`mapping`]), the
//! Salesforce REST / Bulk 2.0 client with its protocol-faithful simulator ([`salesforce`]), and
//! the Salesforce pull / push flows on the job queue ([`flows`]). Issue 5 (in progress): the Sage
//! Intacct XML Web Services client core and its simulator ([`intacct`]), not yet wired to flows.
//! Issue 8: the Sage X3 REST / SOAP client, routing and simulator ([`x3`]) and the quote-to-cash
//! loop on X3 ([`x3_loop`]); the BusinessWorks agent executor (ODBC reads with row-hash change
//! detection, writes as import files) and its import simulator ([`businessworks`]).

pub mod agent_contract;
pub mod agent_exec;
pub mod agent_loop;
pub mod agent_queue;
pub mod businessworks;
pub mod cursor;
mod deals;
pub mod flows;
pub mod intacct;
pub mod jobs;
pub mod mapping;
pub mod objects;
pub mod odbc;
pub mod outbound;
pub mod q2c;
pub mod review;
pub mod sage100;
pub mod salesforce;
pub mod vendors;
pub mod x3;
pub mod x3_loop;
pub mod xref;
