//! The deterministic sandbox processor: a [`Processor`] held in memory that answers by fixed
//! triggers, so tests, demos and benchmarks reach every outcome (declines, the timeout after
//! the charge went through, ACH returns) without a network or a processor account.
//!
//! Card and amount triggers, checked in this order; the first match decides:
//!
//! | Input                               | Answer                                                 |
//! |-------------------------------------|--------------------------------------------------------|
//! | amount ≤ 0                          | declined `processing_error`                            |
//! | card 4000000000000408               | `Unknown`, yet recorded as approved (see below)        |
//! | card 4000000000000002               | declined `card_declined`                               |
//! | card 4000000000009995               | declined `insufficient_funds`                          |
//! | card 4000000000000069               | declined `expired_card`                                |
//! | card 4000000000000127               | declined `incorrect_cvc`                               |
//! | card 4000000000000119               | declined `processing_error`                            |
//! | CVV 999                             | declined `incorrect_cvc`                               |
//! | bank account with `capture = false` | declined `processing_error`                            |
//! | amount's minor units end in 51      | declined: card `card_declined`, bank `invalid_account` |
//! | any other card                      | approved                                               |
//! | any other bank account              | approved, pending until settled                        |
//!
//! 4000000000000408 models the dangerous timeout: the charge happens at the processor but the
//! answer is lost, so the call returns `Outcome::Unknown` while [`Processor::lookup`] of the
//! same reference finds it approved. A caller that treated the timeout as a failure and
//! charged again would charge twice.
//!
//! ACH has no real-time authorization: the receiving bank sees a debit only in the next file,
//! so submission is always "approved" (nothing but the format was checked) and the debit stays
//! pending. [`SandboxProcessor::settle_all`] plays the next days: every pending debit settles,
//! and those whose account number ends as below are then returned, the way real returns arrive
//! after the money looked collected:
//!
//! | Account ends in | Return | Description (NACHA)                                               |
//! |-----------------|--------|-------------------------------------------------------------------|
//! | 0001            | R01    | Insufficient funds                                                |
//! | 0002            | R02    | Account closed                                                    |
//! | 0003            | R03    | No account / unable to locate                                     |
//! | 0004            | R04    | Invalid account number                                            |
//! | 0005            | R05    | Unauthorized debit to consumer account using corporate SEC code   |
//! | 0007            | R07    | Authorization revoked by customer                                 |
//! | 0009            | R09    | Uncollected funds                                                 |
//! | 0010            | R10    | Customer advises not authorized                                   |
//! | 0020            | R20    | Non-transaction account                                           |
//! | 0029            | R29    | Corporate customer advises not authorized                         |
//! | anything else   | —      | settles, no return                                                |
//!
//! Capture and void apply to uncaptured card authorizations only; refunds to captured cards and
//! settled debits, in total at most what was captured. A reference seen before gets its first
//! answer again (the same request) or a decline (a different one), never a second transaction.
//!
//! Held: last four digits, brand and amounts; never a card number, CVV or account number
//! (PCI DSS 3.3, 3.4). State lives as long as the value: after a restart every earlier
//! reference looks up as `NotFound`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::card::CardBrand;
use crate::processor::{
    AchStatus, AuthorizeRequest, BoxFuture, DeclineCode, Instrument, LookupResult, Outcome,
    Processor,
};

/// The card whose authorization takes effect but whose answer is lost.
const TIMEOUT_CARD: &str = "4000000000000408";

/// Stripe's decline test cards (gateway.md §4.2), so the numbers testers know behave as usual.
const DECLINE_CARDS: [(&str, DeclineCode); 5] = [
    ("4000000000000002", DeclineCode::CardDeclined),
    ("4000000000009995", DeclineCode::InsufficientFunds),
    ("4000000000000069", DeclineCode::ExpiredCard),
    ("4000000000000127", DeclineCode::IncorrectCvc),
    ("4000000000000119", DeclineCode::ProcessingError),
];

const DECLINE_CVV: &str = "999";

/// Amounts whose last two minor-unit digits are this decline, so any test card can.
const DECLINE_AMOUNT_CENTS: i64 = 51;

const TRANSACTION_PREFIX: &str = "sbx_";
const REFUND_PREFIX: &str = "sbx_rf_";

/// A NACHA return scheduled for accounts whose number ends in `suffix`.
#[derive(Debug)]
struct AchReturn {
    suffix: &'static str,
    r_code: &'static str,
    description: &'static str,
}

const ACH_RETURNS: [AchReturn; 10] = [
    ach_return("0001", "R01", "Insufficient funds"),
    ach_return("0002", "R02", "Account closed"),
    ach_return("0003", "R03", "No account / unable to locate"),
    ach_return("0004", "R04", "Invalid account number"),
    ach_return(
        "0005",
        "R05",
        "Unauthorized debit to consumer account using corporate SEC code",
    ),
    ach_return("0007", "R07", "Authorization revoked by customer"),
    ach_return("0009", "R09", "Uncollected funds"),
    ach_return("0010", "R10", "Customer advises not authorized"),
    ach_return("0020", "R20", "Non-transaction account"),
    ach_return("0029", "R29", "Corporate customer advises not authorized"),
];

/// The NACHA return (code, description) the sandboxes schedule for an account number ending
/// in `last4`; the Authorize.Net simulator uses the same triggers.
pub(crate) fn scheduled_return(last4: &str) -> Option<(&'static str, &'static str)> {
    ACH_RETURNS
        .iter()
        .find(|ret| ret.suffix == last4)
        .map(|ret| (ret.r_code, ret.description))
}

const fn ach_return(
    suffix: &'static str,
    r_code: &'static str,
    description: &'static str,
) -> AchReturn {
    AchReturn {
        suffix,
        r_code,
        description,
    }
}

/// What happened to a pending ACH debit when the sandbox settled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AchEvent {
    /// The debit settled; the money counts as collected (a return may still follow).
    Settled { processor_ref: String },
    /// The receiving bank sent the settled debit back: the collection is reversed.
    Returned {
        processor_ref: String,
        r_code: &'static str,
        description: &'static str,
    },
}

/// What the sandbox holds for one transaction: no secrets, only masked data and amounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxTransaction {
    /// Our reference from the authorization request.
    pub reference: String,
    /// Brand (or `ach`) and last four, e.g. `visa ****1111`.
    pub instrument: String,
    /// `authorized`, `captured`, `voided` (cards); `pending`, `settled`, `returned` (ACH).
    pub status: &'static str,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
}

/// The deterministic sandbox processor; see the module docs for its triggers.
#[derive(Debug, Default)]
pub struct SandboxProcessor {
    state: Mutex<State>,
    latency: Duration,
    /// When set, [`Processor::ach_status`] plays the bank's clock: a debit settles once it is
    /// this old, and a scheduled return arrives after twice this. Unset: only `settle_*` move.
    ach_settle_after: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    last_id: u64,
    /// Ordered so that settling walks debits in submission order (ids are zero-padded).
    transactions: BTreeMap<String, Transaction>,
    /// Every authorization and refund by our reference, with its first answer.
    requests: HashMap<String, Request>,
}

#[derive(Debug)]
struct Transaction {
    reference: String,
    method: Method,
    authorized_minor: i64,
    captured_minor: i64,
    refunded_minor: i64,
}

#[derive(Debug)]
enum Method {
    Card {
        brand: CardBrand,
        last4: String,
        state: CardState,
    },
    Ach {
        last4: String,
        state: AchState,
        /// Decided at submission so the account number need not be kept.
        scheduled_return: Option<&'static AchReturn>,
        submitted: std::time::Instant,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CardState {
    Authorized,
    Captured,
    Voided,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AchState {
    Pending,
    Settled,
    Returned,
}

#[derive(Debug)]
struct Request {
    kind: RequestKind,
    answer: Answer,
}

/// What a request asked, to tell a replay from a reused reference.
#[derive(Debug, PartialEq, Eq)]
enum RequestKind {
    Authorize {
        amount_minor: i64,
        capture: bool,
    },
    Refund {
        processor_ref: String,
        amount_minor: i64,
    },
}

/// A recorded answer: the processor always knows what it did, so never `Unknown`.
#[derive(Clone, Debug)]
enum Answer {
    Approved { processor_ref: String },
    Declined { code: DeclineCode, message: String },
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Outcome {
        match answer {
            Answer::Approved { processor_ref } => Outcome::Approved { processor_ref },
            Answer::Declined { code, message } => Outcome::Declined { code, message },
        }
    }
}

/// The transaction an approved authorization creates, and whether its answer is lost.
#[derive(Debug)]
struct Approval {
    method: Method,
    captured: bool,
    times_out: bool,
}

impl SandboxProcessor {
    pub fn new() -> SandboxProcessor {
        SandboxProcessor::default()
    }

    /// Sleeps `latency` in every processor call, to make benchmarks feel a real network.
    pub fn with_latency(mut self, latency: Duration) -> SandboxProcessor {
        self.latency = latency;
        self
    }

    /// Lets debits settle (and scheduled returns arrive) by age, as seen by `ach_status`:
    /// what `cashloop serve` uses, so a sandbox deployment shows whole ACH lifecycles.
    pub fn with_ach_settle_after(mut self, after: Duration) -> SandboxProcessor {
        self.ach_settle_after = Some(after);
        self
    }

    /// Settles every pending ACH debit: a `Settled` event for each, in submission order, then
    /// a `Returned` event for each whose account triggers a return (returns follow settlement).
    pub fn settle_all(&self) -> Vec<AchEvent> {
        let mut state = self.lock();
        let mut events = Vec::new();
        let mut returns = Vec::new();
        for (processor_ref, transaction) in &mut state.transactions {
            if let Some((settled, returned)) = transaction.settle(processor_ref) {
                events.push(settled);
                returns.extend(returned);
            }
        }
        events.extend(returns);
        events
    }

    /// Settles one pending ACH debit: `[Settled]`, or `[Settled, Returned]` when its account
    /// triggers a return; empty when `processor_ref` is not a pending debit.
    pub fn settle_and_return(&self, processor_ref: &str) -> Vec<AchEvent> {
        let mut state = self.lock();
        let Some(transaction) = state.transactions.get_mut(processor_ref) else {
            return Vec::new();
        };
        match transaction.settle(processor_ref) {
            Some((settled, returned)) => std::iter::once(settled).chain(returned).collect(),
            None => Vec::new(),
        }
    }

    /// What the sandbox holds for `processor_ref` (masked), for tests and demos.
    pub fn transaction(&self, processor_ref: &str) -> Option<SandboxTransaction> {
        let state = self.lock();
        state
            .transactions
            .get(processor_ref)
            .map(Transaction::snapshot)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is applied after its checks pass, so a panic elsewhere while the lock
        // was held cannot have left a half-made change: the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn pause(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn authorize_now(&self, req: &AuthorizeRequest<'_>) -> Outcome {
        let kind = RequestKind::Authorize {
            amount_minor: req.amount_minor,
            capture: req.capture,
        };
        let mut state = self.lock();
        if let Some(replayed) = state.replay(req.reference, &kind) {
            return replayed;
        }
        let (answer, times_out) = match decide(req) {
            Err((code, message)) => (Answer::Declined { code, message }, false),
            Ok(approval) => {
                let processor_ref = state.next_ref(TRANSACTION_PREFIX);
                let captured_minor = if approval.captured {
                    req.amount_minor
                } else {
                    0
                };
                state.transactions.insert(
                    processor_ref.clone(),
                    Transaction {
                        reference: req.reference.to_owned(),
                        method: approval.method,
                        authorized_minor: req.amount_minor,
                        captured_minor,
                        refunded_minor: 0,
                    },
                );
                (Answer::Approved { processor_ref }, approval.times_out)
            }
        };
        state.record(req.reference, kind, answer.clone());
        if times_out {
            return Outcome::Unknown {
                detail: "sandbox: simulated timeout; the request may have taken effect".to_owned(),
            };
        }
        answer.into()
    }

    fn capture_now(&self, processor_ref: &str, amount_minor: i64) -> Outcome {
        let mut state = self.lock();
        let Some(transaction) = state.transactions.get_mut(processor_ref) else {
            return unknown_ref(processor_ref);
        };
        let Method::Card { state: card, .. } = &mut transaction.method else {
            return refused("capture does not apply to ACH debits: they are submitted captured");
        };
        match *card {
            CardState::Captured => refused(format!("{processor_ref} is already captured")),
            CardState::Voided => refused(format!("{processor_ref} was voided")),
            CardState::Authorized if amount_minor <= 0 => {
                refused("capture amount must be greater than zero")
            }
            CardState::Authorized if amount_minor > transaction.authorized_minor => {
                refused(format!(
                    "capture of {amount_minor} is more than the {} authorized",
                    transaction.authorized_minor
                ))
            }
            CardState::Authorized => {
                // One capture per authorization: a partial one releases the remainder.
                *card = CardState::Captured;
                transaction.captured_minor = amount_minor;
                Outcome::Approved {
                    processor_ref: processor_ref.to_owned(),
                }
            }
        }
    }

    fn void_now(&self, processor_ref: &str) -> Outcome {
        let mut state = self.lock();
        let Some(transaction) = state.transactions.get_mut(processor_ref) else {
            return unknown_ref(processor_ref);
        };
        let Method::Card { state: card, .. } = &mut transaction.method else {
            return refused("ACH debits cannot be voided in the sandbox: refund once settled");
        };
        match *card {
            CardState::Authorized => {
                *card = CardState::Voided;
                Outcome::Approved {
                    processor_ref: processor_ref.to_owned(),
                }
            }
            CardState::Captured => refused(format!(
                "{processor_ref} is already captured: refund it instead"
            )),
            CardState::Voided => refused(format!("{processor_ref} is already voided")),
        }
    }

    fn refund_now(&self, processor_ref: &str, reference: &str, amount_minor: i64) -> Outcome {
        let kind = RequestKind::Refund {
            processor_ref: processor_ref.to_owned(),
            amount_minor,
        };
        let mut state = self.lock();
        if let Some(replayed) = state.replay(reference, &kind) {
            return replayed;
        }
        let checked = match state.transactions.get_mut(processor_ref) {
            Some(transaction) => transaction.refund(amount_minor),
            None => Err(format!("no transaction {processor_ref}")),
        };
        let answer = match checked {
            Ok(()) => Answer::Approved {
                processor_ref: state.next_ref(REFUND_PREFIX),
            },
            Err(message) => Answer::Declined {
                code: DeclineCode::ProcessingError,
                message,
            },
        };
        state.record(reference, kind, answer.clone());
        answer.into()
    }

    fn ach_status_now(&self, processor_ref: &str) -> AchStatus {
        let mut state = self.lock();
        let Some(transaction) = state.transactions.get_mut(processor_ref) else {
            return AchStatus::Unknown {
                detail: format!("no transaction {processor_ref}"),
            };
        };
        let Method::Ach {
            state: ach,
            scheduled_return,
            submitted,
            ..
        } = &mut transaction.method
        else {
            return AchStatus::Unknown {
                detail: format!("{processor_ref} is not an ACH debit"),
            };
        };
        if let Some(after) = self.ach_settle_after {
            let age = submitted.elapsed();
            if *ach == AchState::Pending && age >= after {
                *ach = AchState::Settled;
            } else if *ach == AchState::Settled && scheduled_return.is_some() && age >= after * 2 {
                *ach = AchState::Returned;
            }
        }
        match (*ach, scheduled_return) {
            (AchState::Pending, _) => AchStatus::Pending,
            (AchState::Settled, _) => AchStatus::Settled,
            (AchState::Returned, Some(ret)) => AchStatus::Returned {
                r_code: ret.r_code.to_owned(),
                description: ret.description.to_owned(),
            },
            (AchState::Returned, None) => AchStatus::Unknown {
                detail: "returned without a return code".into(),
            },
        }
    }

    fn lookup_now(&self, reference: &str) -> LookupResult {
        let state = self.lock();
        let Some(request) = state.requests.get(reference) else {
            return LookupResult::NotFound;
        };
        match &request.answer {
            Answer::Declined { code, message } => LookupResult::Declined {
                code: *code,
                message: message.clone(),
            },
            Answer::Approved { processor_ref } => {
                // A refund moves money by itself; an authorization is captured if it was
                // captured since (a voided one reports `captured: false`).
                let captured = match request.kind {
                    RequestKind::Refund { .. } => true,
                    RequestKind::Authorize { .. } => state
                        .transactions
                        .get(processor_ref)
                        .is_some_and(Transaction::is_captured),
                };
                LookupResult::Approved {
                    processor_ref: processor_ref.clone(),
                    captured,
                }
            }
        }
    }
}

impl Processor for SandboxProcessor {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn authorize<'a>(&'a self, req: &'a AuthorizeRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.pause().await;
            self.authorize_now(req)
        })
    }

    fn capture<'a>(&'a self, processor_ref: &'a str, amount_minor: i64) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.pause().await;
            self.capture_now(processor_ref, amount_minor)
        })
    }

    fn void<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.pause().await;
            self.void_now(processor_ref)
        })
    }

    fn refund<'a>(
        &'a self,
        processor_ref: &'a str,
        reference: &'a str,
        amount_minor: i64,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.pause().await;
            self.refund_now(processor_ref, reference, amount_minor)
        })
    }

    fn lookup<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, LookupResult> {
        Box::pin(async move {
            self.pause().await;
            self.lookup_now(reference)
        })
    }

    fn ach_status<'a>(&'a self, processor_ref: &'a str) -> BoxFuture<'a, AchStatus> {
        Box::pin(async move {
            self.pause().await;
            self.ach_status_now(processor_ref)
        })
    }
}

impl State {
    fn next_ref(&mut self, prefix: &str) -> String {
        self.last_id += 1;
        format!("{prefix}{:012}", self.last_id)
    }

    /// The answer for a reference already used: the first answer if the request is the same
    /// (a retry), a decline if not (the reference names another request).
    fn replay(&self, reference: &str, kind: &RequestKind) -> Option<Outcome> {
        let request = self.requests.get(reference)?;
        if request.kind == *kind {
            return Some(request.answer.clone().into());
        }
        Some(refused(format!(
            "reference {reference} was already used for a different request"
        )))
    }

    fn record(&mut self, reference: &str, kind: RequestKind, answer: Answer) {
        self.requests
            .insert(reference.to_owned(), Request { kind, answer });
    }
}

impl Transaction {
    fn is_captured(&self) -> bool {
        match &self.method {
            Method::Card { state, .. } => *state == CardState::Captured,
            // ACH debits are sales: captured from submission.
            Method::Ach { .. } => true,
        }
    }

    /// Takes `amount_minor` off what is left to refund, or says why not.
    fn refund(&mut self, amount_minor: i64) -> Result<(), String> {
        match &self.method {
            Method::Card {
                state: CardState::Captured,
                ..
            }
            | Method::Ach {
                state: AchState::Settled,
                ..
            } => {}
            Method::Card {
                state: CardState::Authorized,
                ..
            } => return Err("the authorization is not captured: void it instead".to_owned()),
            Method::Card {
                state: CardState::Voided,
                ..
            } => return Err("the authorization was voided: nothing to refund".to_owned()),
            // Refunding before settlement could pay back money a return then takes back too.
            Method::Ach {
                state: AchState::Pending,
                ..
            } => return Err("the ACH debit has not settled yet: refund it once settled".to_owned()),
            Method::Ach {
                state: AchState::Returned,
                ..
            } => return Err("the ACH debit was returned: the money already went back".to_owned()),
        }
        if amount_minor <= 0 {
            return Err("refund amount must be greater than zero".to_owned());
        }
        let refundable = self.captured_minor - self.refunded_minor;
        if amount_minor > refundable {
            return Err(format!(
                "refund of {amount_minor} is more than the {refundable} left to refund"
            ));
        }
        self.refunded_minor += amount_minor;
        Ok(())
    }

    /// Settles a pending ACH debit: the `Settled` event and, if scheduled, the return.
    fn settle(&mut self, processor_ref: &str) -> Option<(AchEvent, Option<AchEvent>)> {
        let Method::Ach {
            state: ach @ AchState::Pending,
            scheduled_return,
            ..
        } = &mut self.method
        else {
            return None;
        };
        let settled = AchEvent::Settled {
            processor_ref: processor_ref.to_owned(),
        };
        *ach = AchState::Settled;
        let returned = scheduled_return.map(|ret| {
            *ach = AchState::Returned;
            AchEvent::Returned {
                processor_ref: processor_ref.to_owned(),
                r_code: ret.r_code,
                description: ret.description,
            }
        });
        Some((settled, returned))
    }

    fn snapshot(&self) -> SandboxTransaction {
        let (instrument, status) = match &self.method {
            Method::Card {
                brand,
                last4,
                state,
            } => (
                format!("{brand} ****{last4}"),
                match state {
                    CardState::Authorized => "authorized",
                    CardState::Captured => "captured",
                    CardState::Voided => "voided",
                },
            ),
            Method::Ach { last4, state, .. } => (
                format!("ach ****{last4}"),
                match state {
                    AchState::Pending => "pending",
                    AchState::Settled => "settled",
                    AchState::Returned => "returned",
                },
            ),
        };
        SandboxTransaction {
            reference: self.reference.clone(),
            instrument,
            status,
            authorized_minor: self.authorized_minor,
            captured_minor: self.captured_minor,
            refunded_minor: self.refunded_minor,
        }
    }
}

/// Applies the trigger table (module docs) to an authorization. Reads the card number and
/// CVV only to compare them with the triggers; neither is kept.
fn decide(req: &AuthorizeRequest<'_>) -> Result<Approval, (DeclineCode, String)> {
    if req.amount_minor <= 0 {
        return Err((
            DeclineCode::ProcessingError,
            "amount must be greater than zero".to_owned(),
        ));
    }
    let amount_trigger = req.amount_minor % 100 == DECLINE_AMOUNT_CENTS;
    match &req.instrument {
        Instrument::Card { number, cvv, .. } => {
            let digits = number.expose_digits();
            let last4 = number.last4();
            if let Some((_, code)) = DECLINE_CARDS.iter().find(|(card, _)| *card == digits) {
                return Err((
                    *code,
                    format!("sandbox test card ****{last4}: {}", code.as_str()),
                ));
            }
            // Card-number triggers come first: the timeout card is charged whatever the CVV
            // or amount, since being charged is its point.
            let times_out = digits == TIMEOUT_CARD;
            if !times_out && cvv.is_some_and(|cvv| cvv.expose() == DECLINE_CVV) {
                return Err((
                    DeclineCode::IncorrectCvc,
                    format!("sandbox test CVV {DECLINE_CVV}: incorrect_cvc"),
                ));
            }
            if !times_out && amount_trigger {
                return Err((
                    DeclineCode::CardDeclined,
                    "sandbox amount trigger (minor units ending in 51): card_declined".to_owned(),
                ));
            }
            Ok(Approval {
                method: Method::Card {
                    brand: number.brand(),
                    last4: last4.to_owned(),
                    state: if req.capture {
                        CardState::Captured
                    } else {
                        CardState::Authorized
                    },
                },
                captured: req.capture,
                times_out,
            })
        }
        Instrument::Bank { account, .. } => {
            if !req.capture {
                // There is no ACH authorization to hold; approving would promise a capture.
                return Err((
                    DeclineCode::ProcessingError,
                    "ACH debits cannot be authorized only: send capture = true".to_owned(),
                ));
            }
            if amount_trigger {
                return Err((
                    DeclineCode::InvalidAccount,
                    "sandbox amount trigger (minor units ending in 51): invalid_account".to_owned(),
                ));
            }
            let last4 = account.last4();
            Ok(Approval {
                method: Method::Ach {
                    last4: last4.to_owned(),
                    state: AchState::Pending,
                    scheduled_return: ACH_RETURNS.iter().find(|ret| ret.suffix == last4),
                    submitted: std::time::Instant::now(),
                },
                captured: true,
                times_out: false,
            })
        }
    }
}

fn refused(message: impl Into<String>) -> Outcome {
    Outcome::Declined {
        code: DeclineCode::ProcessingError,
        message: message.into(),
    }
}

fn unknown_ref(processor_ref: &str) -> Outcome {
    refused(format!("no transaction {processor_ref}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::bank::{AccountNumber, BankAccountType, RoutingNumber, SecCode};
    use crate::card::{Cvv, Expiry, Pan};

    /// What a call's answer is, without the free-text parts.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Expect {
        Approved,
        Declined(DeclineCode),
        Unknown,
    }

    use DeclineCode::{
        CardDeclined, ExpiredCard, IncorrectCvc, InsufficientFunds, InvalidAccount, ProcessingError,
    };
    use Expect::{Approved, Declined, Unknown};

    fn expect_of(outcome: &Outcome) -> Expect {
        match outcome {
            Outcome::Approved { .. } => Approved,
            Outcome::Declined { code, .. } => Declined(*code),
            Outcome::Unknown { .. } => Unknown,
        }
    }

    fn approved_ref(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Approved { processor_ref } => processor_ref.clone(),
            other => panic!("expected approved, got {other:?}"),
        }
    }

    fn pan(number: &str) -> Pan {
        Pan::parse(number).expect("test card is valid")
    }

    fn expiry() -> Expiry {
        Expiry::stored(12, 2099).expect("valid expiry")
    }

    async fn authorize_card(
        sandbox: &SandboxProcessor,
        reference: &str,
        number: &Pan,
        cvv: Option<&Cvv>,
        amount_minor: i64,
        capture: bool,
    ) -> Outcome {
        let req = AuthorizeRequest {
            reference,
            amount_minor,
            currency: "USD",
            capture,
            instrument: Instrument::Card {
                number,
                expiry: expiry(),
                cvv,
                holder_name: Some("Test Holder"),
                postal_code: Some("10001"),
            },
        };
        sandbox.authorize(&req).await
    }

    async fn debit(
        sandbox: &SandboxProcessor,
        reference: &str,
        account: &str,
        amount_minor: i64,
        capture: bool,
    ) -> Outcome {
        let routing = RoutingNumber::parse("110000000").expect("valid routing number");
        let account = AccountNumber::parse(account).expect("valid account number");
        let req = AuthorizeRequest {
            reference,
            amount_minor,
            currency: "USD",
            capture,
            instrument: Instrument::Bank {
                routing: &routing,
                account: &account,
                account_type: BankAccountType::Checking,
                holder_name: "Test Holder",
                sec_code: SecCode::Web,
            },
        };
        sandbox.authorize(&req).await
    }

    /// Card, CVV, amount → the answer; the lookup of the same reference must agree.
    const CARD_CASES: &[(&str, Option<&str>, i64, Expect)] = &[
        ("4111111111111111", Some("123"), 10_00, Approved),
        ("4242424242424242", None, 10_00, Approved),
        ("5555555555554444", Some("123"), 10_00, Approved),
        ("378282246310005", Some("1234"), 10_00, Approved),
        (
            "4000000000000002",
            Some("123"),
            10_00,
            Declined(CardDeclined),
        ),
        (
            "4000000000009995",
            Some("123"),
            10_00,
            Declined(InsufficientFunds),
        ),
        (
            "4000000000000069",
            Some("123"),
            10_00,
            Declined(ExpiredCard),
        ),
        (
            "4000000000000127",
            Some("123"),
            10_00,
            Declined(IncorrectCvc),
        ),
        (
            "4000000000000119",
            Some("123"),
            10_00,
            Declined(ProcessingError),
        ),
        ("4000000000000408", Some("123"), 10_00, Unknown),
        (
            "4111111111111111",
            Some("999"),
            10_00,
            Declined(IncorrectCvc),
        ),
        ("4111111111111111", None, 10_51, Declined(CardDeclined)),
        ("4111111111111111", None, 51, Declined(CardDeclined)),
        ("4111111111111111", None, 10_50, Approved),
        ("4111111111111111", None, 51_00, Approved),
        ("4111111111111111", None, 0, Declined(ProcessingError)),
        ("4111111111111111", None, -10_00, Declined(ProcessingError)),
        // Precedence: the card trigger beats the CVV and amount triggers.
        (
            "4000000000009995",
            Some("999"),
            10_51,
            Declined(InsufficientFunds),
        ),
        ("4000000000000408", Some("123"), 10_51, Unknown),
        ("4000000000000408", Some("999"), 10_00, Unknown),
    ];

    #[tokio::test]
    async fn card_triggers() {
        let sandbox = SandboxProcessor::new();
        for (i, &(number, cvv, amount_minor, expected)) in CARD_CASES.iter().enumerate() {
            let number = pan(number);
            let cvv = cvv.map(|cvv| Cvv::parse(cvv, number.brand()).expect("valid cvv"));
            let reference = format!("pay_{i}");
            for capture in [false, true] {
                let reference = format!("{reference}_{capture}");
                let outcome = authorize_card(
                    &sandbox,
                    &reference,
                    &number,
                    cvv.as_ref(),
                    amount_minor,
                    capture,
                )
                .await;
                let case = format!("case {i}: {number:?} {amount_minor} capture={capture}");
                assert_eq!(expect_of(&outcome), expected, "{case}: {outcome:?}");
                let found = sandbox.lookup(&reference).await;
                match (expected, found) {
                    (Approved | Unknown, LookupResult::Approved { captured, .. }) => {
                        assert_eq!(captured, capture, "{case}");
                    }
                    (Declined(code), LookupResult::Declined { code: found, .. }) => {
                        assert_eq!(found, code, "{case}");
                    }
                    (_, found) => panic!("{case}: lookup {found:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn timeout_card_is_charged_but_answers_unknown() {
        let sandbox = SandboxProcessor::new();
        let number = pan("4000000000000408");
        let outcome = authorize_card(&sandbox, "pay_timeout", &number, None, 25_00, true).await;
        assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");

        let LookupResult::Approved {
            processor_ref,
            captured: true,
        } = sandbox.lookup("pay_timeout").await
        else {
            panic!("the charge happened at the processor");
        };
        let held = sandbox.transaction(&processor_ref).expect("recorded");
        assert_eq!(held.reference, "pay_timeout");
        assert_eq!((held.status, held.captured_minor), ("captured", 25_00));

        // Retrying with the same reference finds the first charge instead of making another.
        let retried = authorize_card(&sandbox, "pay_timeout", &number, None, 25_00, true).await;
        assert_eq!(retried, Outcome::Approved { processor_ref });
        assert_eq!(sandbox.lock().transactions.len(), 1);
    }

    #[tokio::test]
    async fn authorize_capture_partially_then_refund() {
        let sandbox = SandboxProcessor::new();
        let number = pan("4111111111111111");
        let auth = authorize_card(&sandbox, "pay_1", &number, None, 10_000, false).await;
        let txn = approved_ref(&auth);
        assert!(txn.starts_with("sbx_"), "{txn}");
        assert_eq!(
            sandbox.lookup("pay_1").await,
            LookupResult::Approved {
                processor_ref: txn.clone(),
                captured: false
            }
        );
        // Refunding an uncaptured authorization is refused: nothing was collected.
        let early = sandbox.refund(&txn, "re_early", 10_00).await;
        assert_eq!(expect_of(&early), Declined(ProcessingError));

        for amount_minor in [10_001, 0, -1] {
            let too_much = sandbox.capture(&txn, amount_minor).await;
            assert_eq!(
                expect_of(&too_much),
                Declined(ProcessingError),
                "{amount_minor}"
            );
        }
        let captured = sandbox.capture(&txn, 60_00).await;
        assert_eq!(
            captured,
            Outcome::Approved {
                processor_ref: txn.clone()
            }
        );
        assert_eq!(
            sandbox.lookup("pay_1").await,
            LookupResult::Approved {
                processor_ref: txn.clone(),
                captured: true
            }
        );
        // One capture per authorization: the 40.00 remainder was released.
        let again = sandbox.capture(&txn, 10_00).await;
        assert_eq!(expect_of(&again), Declined(ProcessingError));

        let first = sandbox.refund(&txn, "re_1", 40_00).await;
        let refund_ref = approved_ref(&first);
        assert!(
            refund_ref.starts_with("sbx_rf_") && refund_ref != txn,
            "{refund_ref}"
        );
        // 20.00 left: a second refund of 30.00 is refused.
        let beyond = sandbox.refund(&txn, "re_2", 30_00).await;
        assert_eq!(expect_of(&beyond), Declined(ProcessingError));
        // The same refund again is the same refund, not a second one.
        assert_eq!(sandbox.refund(&txn, "re_1", 40_00).await, first);
        // The same reference for a different refund is refused.
        let reused = sandbox.refund(&txn, "re_1", 5_00).await;
        assert_eq!(expect_of(&reused), Declined(ProcessingError));
        let rest = sandbox.refund(&txn, "re_3", 20_00).await;
        assert_eq!(expect_of(&rest), Approved);
        let nothing_left = sandbox.refund(&txn, "re_4", 1).await;
        assert_eq!(expect_of(&nothing_left), Declined(ProcessingError));

        let held = sandbox.transaction(&txn).expect("recorded");
        assert_eq!(
            held,
            SandboxTransaction {
                reference: "pay_1".to_owned(),
                instrument: "visa ****1111".to_owned(),
                status: "captured",
                authorized_minor: 10_000,
                captured_minor: 60_00,
                refunded_minor: 60_00,
            }
        );
        assert_eq!(
            sandbox.lookup("re_1").await,
            LookupResult::Approved {
                processor_ref: refund_ref,
                captured: true
            }
        );
        assert!(matches!(
            sandbox.lookup("re_2").await,
            LookupResult::Declined {
                code: ProcessingError,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn void_only_before_capture() {
        let sandbox = SandboxProcessor::new();
        let number = pan("4111111111111111");
        let sale =
            approved_ref(&authorize_card(&sandbox, "pay_sale", &number, None, 10_00, true).await);
        let void_after_capture = sandbox.void(&sale).await;
        assert_eq!(expect_of(&void_after_capture), Declined(ProcessingError));
        assert_eq!(
            sandbox.transaction(&sale).expect("recorded").status,
            "captured"
        );

        let auth =
            approved_ref(&authorize_card(&sandbox, "pay_auth", &number, None, 10_00, false).await);
        assert_eq!(
            sandbox.void(&auth).await,
            Outcome::Approved {
                processor_ref: auth.clone()
            }
        );
        assert_eq!(
            sandbox.lookup("pay_auth").await,
            LookupResult::Approved {
                processor_ref: auth.clone(),
                captured: false
            }
        );
        for outcome in [
            sandbox.void(&auth).await,
            sandbox.capture(&auth, 10_00).await,
            sandbox.refund(&auth, "re_voided", 10_00).await,
        ] {
            assert_eq!(
                expect_of(&outcome),
                Declined(ProcessingError),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_processor_refs_and_references() {
        let sandbox = SandboxProcessor::new();
        for outcome in [
            sandbox.capture("sbx_nope", 1_00).await,
            sandbox.void("sbx_nope").await,
            sandbox.refund("sbx_nope", "re_nope", 1_00).await,
        ] {
            assert_eq!(
                expect_of(&outcome),
                Declined(ProcessingError),
                "{outcome:?}"
            );
        }
        assert_eq!(
            sandbox.lookup("pay_never_sent").await,
            LookupResult::NotFound
        );
        assert_eq!(sandbox.transaction("sbx_nope"), None);
        assert!(sandbox.settle_and_return("sbx_nope").is_empty());
    }

    #[tokio::test]
    async fn reference_reused_for_a_different_authorization_is_refused() {
        let sandbox = SandboxProcessor::new();
        let number = pan("4111111111111111");
        let first = authorize_card(&sandbox, "pay_1", &number, None, 10_00, true).await;
        let other = authorize_card(&sandbox, "pay_1", &number, None, 20_00, true).await;
        assert_eq!(expect_of(&other), Declined(ProcessingError));
        assert_eq!(
            authorize_card(&sandbox, "pay_1", &number, None, 10_00, true).await,
            first
        );
        assert_eq!(sandbox.lock().transactions.len(), 1);
    }

    /// Account suffix → the R-code and description the return must carry.
    const ACH_CASES: &[(&str, &str, &str)] = &[
        ("0001", "R01", "Insufficient funds"),
        ("0002", "R02", "Account closed"),
        ("0003", "R03", "No account / unable to locate"),
        ("0004", "R04", "Invalid account number"),
        (
            "0005",
            "R05",
            "Unauthorized debit to consumer account using corporate SEC code",
        ),
        ("0007", "R07", "Authorization revoked by customer"),
        ("0009", "R09", "Uncollected funds"),
        ("0010", "R10", "Customer advises not authorized"),
        ("0020", "R20", "Non-transaction account"),
        ("0029", "R29", "Corporate customer advises not authorized"),
    ];

    #[tokio::test]
    async fn ach_returns_by_account_suffix() {
        for &(suffix, r_code, description) in ACH_CASES {
            let sandbox = SandboxProcessor::new();
            let reference = format!("ach_{suffix}");
            let outcome = debit(&sandbox, &reference, &format!("98765{suffix}"), 50_00, true).await;
            let txn = approved_ref(&outcome);
            let held = sandbox.transaction(&txn).expect("recorded");
            assert_eq!(
                (held.status, held.instrument.as_str()),
                ("pending", &*format!("ach ****{suffix}"))
            );
            assert_eq!(
                sandbox.lookup(&reference).await,
                LookupResult::Approved {
                    processor_ref: txn.clone(),
                    captured: true
                }
            );
            for refused in [
                sandbox.capture(&txn, 50_00).await,
                sandbox.void(&txn).await,
                sandbox.refund(&txn, "re_pending", 50_00).await,
            ] {
                assert_eq!(expect_of(&refused), Declined(ProcessingError), "{suffix}");
            }
            assert_eq!(
                sandbox.settle_all(),
                [
                    AchEvent::Settled {
                        processor_ref: txn.clone()
                    },
                    AchEvent::Returned {
                        processor_ref: txn.clone(),
                        r_code,
                        description
                    },
                ],
                "{suffix}"
            );
            assert_eq!(
                sandbox.transaction(&txn).expect("recorded").status,
                "returned"
            );
            assert!(sandbox.settle_all().is_empty(), "settles once");
            let after_return = sandbox.refund(&txn, "re_returned", 50_00).await;
            assert_eq!(
                expect_of(&after_return),
                Declined(ProcessingError),
                "{suffix}"
            );
        }
    }

    #[tokio::test]
    async fn ach_batch_settles_first_and_returns_after() {
        let sandbox = SandboxProcessor::new();
        let ok = approved_ref(&debit(&sandbox, "ach_ok", "000123456789", 30_00, true).await);
        let r01 = approved_ref(&debit(&sandbox, "ach_r01", "123450001", 20_00, true).await);
        let ok_too = approved_ref(&debit(&sandbox, "ach_ok2", "00006", 10_00, true).await);
        let settled = |processor_ref: &String| AchEvent::Settled {
            processor_ref: processor_ref.clone(),
        };
        assert_eq!(
            sandbox.settle_all(),
            [
                settled(&ok),
                settled(&r01),
                settled(&ok_too),
                AchEvent::Returned {
                    processor_ref: r01.clone(),
                    r_code: "R01",
                    description: "Insufficient funds"
                },
            ]
        );
        // A settled debit can be refunded, up to what was collected.
        let refund = sandbox.refund(&ok, "re_ach", 30_00).await;
        assert_eq!(expect_of(&refund), Approved);
        let beyond = sandbox.refund(&ok, "re_ach_2", 1).await;
        assert_eq!(expect_of(&beyond), Declined(ProcessingError));
        assert_eq!(
            sandbox.transaction(&ok).expect("recorded").status,
            "settled"
        );
    }

    #[tokio::test]
    async fn ach_settle_one() {
        let sandbox = SandboxProcessor::new();
        let r29 = approved_ref(&debit(&sandbox, "ach_r29", "55550029", 20_00, true).await);
        let ok = approved_ref(&debit(&sandbox, "ach_ok", "55551234", 20_00, true).await);
        assert_eq!(
            sandbox.settle_and_return(&ok),
            [AchEvent::Settled {
                processor_ref: ok.clone()
            }]
        );
        assert!(sandbox.settle_and_return(&ok).is_empty(), "settles once");
        assert_eq!(sandbox.settle_and_return(&r29).len(), 2);
        assert!(sandbox.settle_all().is_empty());
        // A card transaction never settles as ACH.
        let number = pan("4111111111111111");
        let card =
            approved_ref(&authorize_card(&sandbox, "pay_card", &number, None, 10_00, true).await);
        assert!(sandbox.settle_and_return(&card).is_empty());
    }

    #[tokio::test]
    async fn ach_declines() {
        let sandbox = SandboxProcessor::new();
        let triggered = debit(&sandbox, "ach_51", "000123456789", 10_51, true).await;
        assert_eq!(expect_of(&triggered), Declined(InvalidAccount));
        assert!(matches!(
            sandbox.lookup("ach_51").await,
            LookupResult::Declined {
                code: InvalidAccount,
                ..
            }
        ));
        let auth_only = debit(&sandbox, "ach_auth", "000123456789", 10_00, false).await;
        assert_eq!(expect_of(&auth_only), Declined(ProcessingError));
        assert!(sandbox.settle_all().is_empty());
    }

    #[tokio::test]
    async fn never_holds_card_or_account_numbers() {
        let sandbox = SandboxProcessor::new();
        let cards = ["4111111111111111", "4000000000000408", "4000000000000002"];
        for (i, card) in cards.into_iter().enumerate() {
            let number = pan(card);
            let cvv = Cvv::parse("987", number.brand()).expect("valid cvv");
            authorize_card(
                &sandbox,
                &format!("pay_{i}"),
                &number,
                Some(&cvv),
                10_00,
                false,
            )
            .await;
        }
        debit(&sandbox, "ach_1", "998877660001", 10_00, true).await;
        let declined = authorize_card(
            &sandbox,
            "pay_d",
            &pan("4000000000000002"),
            None,
            1_00,
            true,
        )
        .await;

        let shown = format!("{sandbox:?} {declined:?} {:?}", sandbox.settle_all());
        for secret in cards.into_iter().chain(["998877660001", "987"]) {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[tokio::test]
    async fn behind_dyn_processor_with_latency() {
        let latency = Duration::from_millis(20);
        let sandbox: Arc<dyn Processor> = Arc::new(SandboxProcessor::new().with_latency(latency));
        assert_eq!(sandbox.name(), "sandbox");
        let started = Instant::now();
        assert_eq!(sandbox.lookup("nothing").await, LookupResult::NotFound);
        assert!(started.elapsed() >= latency);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_authorizations_get_distinct_refs() {
        let sandbox = Arc::new(SandboxProcessor::new());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let sandbox = Arc::clone(&sandbox);
                tokio::spawn(async move {
                    let number = pan("4242424242424242");
                    let outcome =
                        authorize_card(&sandbox, &format!("pay_{i}"), &number, None, 1_00, true)
                            .await;
                    approved_ref(&outcome)
                })
            })
            .collect();
        let mut refs = Vec::new();
        for task in tasks {
            refs.push(task.await.expect("task ran"));
        }
        refs.sort();
        refs.dedup();
        assert_eq!(refs.len(), 64);
    }
}
