//! Reconciliation: matching payments to AR invoices, month-end runs, exception reports.
//!
//! Not built yet (issue 6). It reads what sync stored; it never calls an outside system directly.
