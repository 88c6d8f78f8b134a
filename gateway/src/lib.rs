//! Payment gateway: vault, payment methods, payments and refunds, processors, webhooks.
//!
//! Built so far (issue 3, in progress): the validation types for cards and bank accounts
//! ([`card`], [`bank`]), the vault's envelope cryptography ([`crypto`]) and the vault itself
//! ([`vault`]): tokenize, reveal (audited), fingerprint duplicates, online key rotation.
//! Payments, processors and webhooks come next. This crate depends on `ledger` and must not
//! know Salesforce or Sage object shapes.

pub mod bank;
pub mod card;
pub mod crypto;
pub mod idempotency;
pub mod input;
pub mod payment;
pub mod processor;
pub mod sandbox;
pub mod service;
pub mod vault;
