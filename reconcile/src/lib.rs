//! Reconciliation: matching payments to AR open items and captures to processor deposits,
//! with every input item classified into exactly one exception category.
//!
//! The engine is pure and in memory: [`import`] parses the CSV inputs (all-or-nothing, with a
//! line-numbered error report), [`model`] holds the input types, and [`matching::reconcile`]
//! runs the passes and returns a [`Reconciliation`]. [`store`] keeps imported inputs, runs
//! (with their high-water marks, a per-period lease and their results), reports and
//! approvals in the database; the binary queues the Sage side of applications.

mod hash;
pub mod import;
pub mod matching;
pub mod model;
pub mod store;

pub use import::{ImportError, InputFiles, InvalidInput, Kind, LineError, read_inputs};
pub use matching::{
    Adjustment, Application, Category, CategoryTotal, Confidence, FxApplied, ItemIdx, ItemOutcome,
    MatchConfig, PaymentIdx, PaymentOutcome, Phase, ReconcileError, Reconciliation, Rule,
    SettlementOutcome, SubsetLimits, Suggestion, Summary, Tolerance, reconcile,
    reconcile_with_progress,
};
pub use model::{
    BatchId, CustomerId, DatedRate, DepositId, DocumentNumber, EntityCode, Inputs, ModelError,
    OpenItem, OpenItemId, OpenItemKind, Payment, PaymentId, PaymentSource, PositiveMoney,
    Reference, SettlementBatch,
};
