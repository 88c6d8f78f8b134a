//! The processor boundary: what the payment state machine asks of a card / ACH processor,
//! and what it can answer. Every connector (the deterministic sandbox, Authorize.Net, …)
//! implements [`Processor`]; nothing above this trait knows a processor's wire format.
//!
//! A call can end three ways: approved, declined (a definite "no"), or unknown — the request
//! may or may not have reached the processor (a timeout, a dropped connection). Unknown is
//! never guessed: the payment is parked as `unknown` and resolved later by [`Processor::lookup`]
//! with the same `reference`, which is why every request carries our own idempotent reference.

use std::future::Future;
use std::pin::Pin;

use crate::bank::{AccountNumber, BankAccountType, RoutingNumber, SecCode};
use crate::card::{Cvv, Expiry, Pan};

/// A boxed future, so processors can sit behind `dyn Processor`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The payment method as the processor needs it (revealed from the vault for this call only).
#[derive(Debug)]
pub enum Instrument<'a> {
    Card {
        number: &'a Pan,
        expiry: Expiry,
        /// Present only on the authorization that collected it; never stored.
        cvv: Option<&'a Cvv>,
        holder_name: Option<&'a str>,
        postal_code: Option<&'a str>,
    },
    Bank {
        routing: &'a RoutingNumber,
        account: &'a AccountNumber,
        account_type: BankAccountType,
        holder_name: &'a str,
        sec_code: SecCode,
    },
}

/// An authorization (optionally with capture) or an ACH debit.
#[derive(Debug)]
pub struct AuthorizeRequest<'a> {
    /// Our reference for this attempt: unique, sent to the processor, used by `lookup`.
    pub reference: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    /// Capture in the same call (a sale) rather than authorize only. Always true for ACH.
    pub capture: bool,
    pub instrument: Instrument<'a>,
}

/// Why a processor said no, in our stable codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCode {
    CardDeclined,
    InsufficientFunds,
    ExpiredCard,
    IncorrectCvc,
    ProcessingError,
    InvalidAccount,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::ExpiredCard => "expired_card",
            DeclineCode::IncorrectCvc => "incorrect_cvc",
            DeclineCode::ProcessingError => "processing_error",
            DeclineCode::InvalidAccount => "invalid_account",
        }
    }
}

/// The answer to a processor call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; `processor_ref` names the processor's transaction.
    Approved { processor_ref: String },
    /// A definite refusal; nothing happened at the processor.
    Declined { code: DeclineCode, message: String },
    /// The call may or may not have taken effect (timeout, connection lost).
    Unknown { detail: String },
}

/// What `lookup` finds for one of our references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupResult {
    /// The processor holds the transaction, authorized (and captured if `captured`).
    Approved {
        processor_ref: String,
        captured: bool,
    },
    Declined {
        code: DeclineCode,
        message: String,
    },
    /// The processor never saw it: safe to treat as failed (and to retry with a new reference).
    NotFound,
    /// Still cannot tell (the processor is unreachable).
    Unknown {
        detail: String,
    },
}

/// Where a submitted ACH debit stands at the processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AchStatus {
    /// Submitted, not yet settled.
    Pending,
    /// Settled: the money counts as collected (a return may still follow, for up to 60 days).
    Settled,
    /// The receiving bank sent it back with a NACHA return code.
    Returned { r_code: String, description: String },
    /// Cannot tell now (the processor is unreachable, or answered a state we do not map).
    Unknown { detail: String },
}

/// A card / ACH processor.
pub trait Processor: Send + Sync + std::fmt::Debug {
    /// A short name stored with every payment (`sandbox`, `authorize_net`).
    fn name(&self) -> &'static str;
    fn authorize<'a>(&'a self, req: &'a AuthorizeRequest<'a>) -> BoxFuture<'a, Outcome>;
    /// Captures `amount_minor` (≤ the authorized amount) of an authorization.
    fn capture<'a>(&'a self, processor_ref: &'a str, amount_minor: i64) -> BoxFuture<'a, Outcome>;
    fn void<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, Outcome>;
    /// Refunds `amount_minor` of a captured transaction; `reference` is our refund's id.
    fn refund<'a>(
        &'a self,
        processor_ref: &'a str,
        reference: &'a str,
        amount_minor: i64,
    ) -> BoxFuture<'a, Outcome>;
    /// What happened to the request we sent with `reference`.
    fn lookup<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, LookupResult>;
    /// Where the ACH debit `processor_ref` stands (polled until its return window closes).
    fn ach_status<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, AchStatus>;
}
