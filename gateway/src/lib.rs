//! Payment gateway: vault, payment methods, payments and refunds, processors, webhooks.
//!
//! Not built yet (issue 3). It will depend on `ledger` and must not know Salesforce or Sage object shapes.
