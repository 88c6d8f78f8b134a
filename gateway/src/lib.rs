//! Payment gateway: vault, payment methods, payments and refunds, processors, webhooks.
//!
//! Validation types for cards and bank accounts ([`card`], [`bank`]); the vault's envelope
//! cryptography ([`crypto`]) and the vault ([`vault`]: tokenize, audited reveal, fingerprints,
//! online key rotation); request parsing ([`input`]) and `Idempotency-Key` records
//! ([`idempotency`]); the payment state machine ([`payment`]), the processor boundary
//! ([`processor`]) with the deterministic [`sandbox`] and the Authorize.Net connector and its
//! simulator ([`authnet`]); the payments service ([`service`]) that applies processor answers
//! and their ledger postings in one transaction; outbound webhooks ([`webhooks`]) and every
//! outbound HTTP client ([`http`]). This crate depends on `ledger` and must not know Salesforce
//! or Sage object shapes.

pub mod authnet;
pub mod bank;
pub mod card;
pub mod crypto;
pub mod http;
pub mod idempotency;
pub mod input;
pub mod payment;
pub mod processor;
pub mod sandbox;
pub mod service;
pub mod vault;
pub mod webhooks;
