//! Reconciliation: matching payments to AR open items and captures to processor deposits,
//! with every input item classified into exactly one exception category.
//!
//! This crate is the pure, in-memory engine: [`import`] parses the CSV inputs
//! (all-or-nothing, with a line-numbered error report), [`model`] holds the input types,
//! and [`matching::reconcile`] runs the passes and returns a [`Reconciliation`]. It does no
//! I/O beyond reading the files it is given: storage-backed runs, reports, approvals and
//! applying payments in Sage are built on top of it.

mod hash;
pub mod import;
pub mod matching;
pub mod model;

pub use import::{ImportError, InputFiles, InvalidInput, Kind, LineError, read_inputs};
pub use matching::{
    Adjustment, Application, Category, CategoryTotal, Confidence, FxApplied, ItemIdx, ItemOutcome,
    MatchConfig, PaymentIdx, PaymentOutcome, ReconcileError, Reconciliation, Rule,
    SettlementOutcome, SubsetLimits, Suggestion, Summary, Tolerance, reconcile,
    reconcile_with_progress,
};
pub use model::{
    BatchId, CustomerId, DatedRate, DepositId, DocumentNumber, EntityCode, Inputs, ModelError,
    OpenItem, OpenItemId, OpenItemKind, Payment, PaymentId, PaymentSource, PositiveMoney,
    Reference, SettlementBatch,
};
