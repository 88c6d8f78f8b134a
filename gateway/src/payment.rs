//! The payment state machine, as a pure function: a state and an event in, the next state
//! and the ledger postings it requires out. No I/O here — the service applies the result and
//! its postings in one database transaction.
//!
//! ```text
//! card:  authorize ─┬─ approved, capture=false ─▶ requires_capture ─┬─ capture(≤ authorized) ─▶ captured
//!                   ├─ approved, capture=true ──▶ captured           └─ void ─▶ voided
//!                   ├─ declined ─▶ failed
//!                   └─ timeout ──▶ unknown ── lookup ─▶ requires_capture | captured | failed
//!        captured ── refund(s), total ≤ captured ─▶ partially_refunded ─▶ refunded
//! ACH:   debit ─▶ pending ─▶ settled          (refunds as above, once settled)
//!        pending | settled ── return R-code ─▶ returned   (the posting is reversed)
//! ```
//! NACHA: R01/R09 may be re-presented at most twice; R02/R03/R04/R20 disable the bank
//! account's token; R05/R07/R10/R29 block it as unauthorized.

use serde::Serialize;

/// Re-presentments allowed after an R01 / R09 return.
pub const MAX_REPRESENTMENTS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    RequiresCapture,
    Captured,
    PartiallyRefunded,
    Refunded,
    Voided,
    Failed,
    Unknown,
    Pending,
    Settled,
    Returned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::RequiresCapture => "requires_capture",
            Status::Captured => "captured",
            Status::PartiallyRefunded => "partially_refunded",
            Status::Refunded => "refunded",
            Status::Voided => "voided",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
            Status::Pending => "pending",
            Status::Settled => "settled",
            Status::Returned => "returned",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::RequiresCapture,
            Status::Captured,
            Status::PartiallyRefunded,
            Status::Refunded,
            Status::Voided,
            Status::Failed,
            Status::Unknown,
            Status::Pending,
            Status::Settled,
            Status::Returned,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Card,
    BankAccount,
}

/// Amounts and status of one payment. Invariant (checked by [`State::check`]):
/// `refunded ≤ captured ≤ authorized ≤ amount`, all ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct State {
    pub status: Status,
    pub method: MethodKind,
    pub amount_minor: i64,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    /// Whether the attempt asked for capture in the same call (needed to resolve `unknown`).
    pub capture_requested: bool,
    /// ACH re-presentments used so far.
    pub representments: u32,
}

/// Something that happened to the payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The processor approved the first attempt.
    Approved,
    /// The processor refused the first attempt.
    Declined,
    /// The first attempt's outcome is not known (timeout).
    TimedOut,
    /// A lookup resolved an `unknown` attempt.
    Resolved {
        approved: bool,
        captured: bool,
    },
    Capture {
        amount_minor: i64,
    },
    Void,
    Refund {
        amount_minor: i64,
    },
    AchSettled,
    AchReturned {
        r_code: String,
    },
    /// A returned debit presented again (allowed by the caller only after R01 / R09).
    Represented,
}

/// What the ledger must record with a transition (posted in the same transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posting {
    /// Money collected: Dr processor clearing / Cr AR.
    Collected { amount_minor: i64 },
    /// Money given back: Dr AR / Cr processor clearing.
    Refunded { amount_minor: i64 },
    /// A bank return: the collection reversed (Dr AR / Cr clearing), with the R-code.
    Returned { amount_minor: i64, r_code: String },
}

/// What a return does to the bank account's token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnAction {
    /// R01 / R09: may be presented again (`remaining` more times).
    MayRepresent { remaining: u32 },
    /// R02 / R03 / R04 / R20: the account cannot be debited; disable the token.
    DisableMethod,
    /// R05 / R07 / R10 / R29: the customer says the debit was not authorized; block the token.
    BlockUnauthorized,
    /// Any other code: no automatic action.
    None,
}

/// The NACHA handling of an R-code, given how many re-presentments were used.
pub fn return_action(r_code: &str, representments: u32) -> ReturnAction {
    match r_code {
        "R01" | "R09" if representments < MAX_REPRESENTMENTS => ReturnAction::MayRepresent {
            remaining: MAX_REPRESENTMENTS - representments,
        },
        "R01" | "R09" => ReturnAction::None,
        "R02" | "R03" | "R04" | "R20" => ReturnAction::DisableMethod,
        "R05" | "R07" | "R10" | "R29" => ReturnAction::BlockUnauthorized,
        _ => ReturnAction::None,
    }
}

/// A transition the state machine refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The next state and the postings it requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub postings: Vec<Posting>,
    pub return_action: Option<ReturnAction>,
}

impl State {
    /// A payment about to be sent to the processor (its status until the answer comes back
    /// is irrelevant: the first event decides it).
    pub fn new(method: MethodKind, amount_minor: i64, capture: bool) -> Result<State, Refused> {
        if amount_minor <= 0 {
            return Err(refuse(
                "non_positive_amount",
                "amount: must be greater than zero",
            ));
        }
        Ok(State {
            status: Status::Unknown,
            method,
            amount_minor,
            authorized_minor: 0,
            captured_minor: 0,
            refunded_minor: 0,
            // ACH has no authorization: a debit is always "captured" when submitted.
            capture_requested: capture || method == MethodKind::BankAccount,
            representments: 0,
        })
    }

    /// The amount invariant; a state that breaks it is a bug, not a user error.
    pub fn check(&self) -> Result<(), String> {
        let ok = 0 <= self.refunded_minor
            && self.refunded_minor <= self.captured_minor
            && self.captured_minor <= self.authorized_minor
            && self.authorized_minor <= self.amount_minor;
        if ok {
            Ok(())
        } else {
            Err(format!("payment amounts out of order: {self:?}"))
        }
    }

    fn approved(mut self, captured: bool) -> Transition {
        self.authorized_minor = self.amount_minor;
        let mut postings = Vec::new();
        if captured {
            self.captured_minor = self.amount_minor;
            postings.push(Posting::Collected {
                amount_minor: self.amount_minor,
            });
        }
        self.status = match (self.method, captured) {
            (MethodKind::BankAccount, _) => Status::Pending,
            (MethodKind::Card, true) => Status::Captured,
            (MethodKind::Card, false) => Status::RequiresCapture,
        };
        Transition {
            state: self,
            postings,
            return_action: None,
        }
    }

    /// Applies `event`; refuses what the current state does not allow.
    pub fn apply(&self, event: &Event) -> Result<Transition, Refused> {
        let mut s = *self;
        let plain = |s: State| Transition {
            state: s,
            postings: Vec::new(),
            return_action: None,
        };
        let t = match (self.status, event) {
            // The first answer, or the resolution of an unknown one.
            (Status::Unknown, Event::Approved) => s.approved(s.capture_requested),
            (Status::Unknown, Event::Declined) => {
                s.status = Status::Failed;
                plain(s)
            }
            (Status::Unknown, Event::TimedOut) => plain(s),
            (
                Status::Unknown,
                Event::Resolved {
                    approved: true,
                    captured,
                },
            ) => s.approved(*captured),
            (
                Status::Unknown,
                Event::Resolved {
                    approved: false, ..
                },
            ) => {
                s.status = Status::Failed;
                plain(s)
            }
            (Status::RequiresCapture, Event::Capture { amount_minor }) => {
                let a = *amount_minor;
                if a <= 0 {
                    return Err(refuse(
                        "non_positive_amount",
                        "amount: must be greater than zero",
                    ));
                }
                if a > s.authorized_minor {
                    return Err(refuse(
                        "amount_exceeds_authorized",
                        format!(
                            "amount: {a} is more than the {} authorized",
                            s.authorized_minor
                        ),
                    ));
                }
                s.captured_minor = a;
                // The uncaptured remainder is released at the processor.
                s.authorized_minor = a;
                s.status = Status::Captured;
                Transition {
                    state: s,
                    postings: vec![Posting::Collected { amount_minor: a }],
                    return_action: None,
                }
            }
            (Status::RequiresCapture, Event::Void) => {
                s.status = Status::Voided;
                plain(s)
            }
            (
                Status::Captured | Status::PartiallyRefunded | Status::Settled,
                Event::Refund { amount_minor },
            ) => {
                let a = *amount_minor;
                if a <= 0 {
                    return Err(refuse(
                        "non_positive_amount",
                        "amount: must be greater than zero",
                    ));
                }
                let left = s.captured_minor - s.refunded_minor;
                if a > left {
                    return Err(refuse(
                        "refund_exceeds_captured",
                        format!("amount: {a} is more than the {left} left to refund"),
                    ));
                }
                s.refunded_minor += a;
                s.status = if s.refunded_minor == s.captured_minor {
                    Status::Refunded
                } else {
                    Status::PartiallyRefunded
                };
                Transition {
                    state: s,
                    postings: vec![Posting::Refunded { amount_minor: a }],
                    return_action: None,
                }
            }
            (Status::Pending, Event::AchSettled) => {
                s.status = Status::Settled;
                plain(s)
            }
            (
                Status::Pending | Status::Settled | Status::PartiallyRefunded,
                Event::AchReturned { r_code },
            ) if s.method == MethodKind::BankAccount => {
                // What was collected and not already refunded goes back.
                let reversed = s.captured_minor - s.refunded_minor;
                let action = return_action(r_code, s.representments);
                s.status = Status::Returned;
                Transition {
                    state: s,
                    postings: if reversed > 0 {
                        vec![Posting::Returned {
                            amount_minor: reversed,
                            r_code: r_code.clone(),
                        }]
                    } else {
                        Vec::new()
                    },
                    return_action: Some(action),
                }
            }
            (Status::Returned, Event::Represented) if s.method == MethodKind::BankAccount => {
                if s.representments >= MAX_REPRESENTMENTS {
                    return Err(refuse(
                        "representments_exhausted",
                        format!(
                            "a debit may be presented again at most {MAX_REPRESENTMENTS} times"
                        ),
                    ));
                }
                s.representments += 1;
                s.status = Status::Pending;
                Transition {
                    state: s,
                    postings: vec![Posting::Collected {
                        amount_minor: s.captured_minor - s.refunded_minor,
                    }],
                    return_action: None,
                }
            }
            (status, event) => {
                return Err(refuse(
                    "invalid_state",
                    format!(
                        "a {} payment cannot take {}",
                        status.as_str(),
                        event_name(event)
                    ),
                ));
            }
        };
        t.state
            .check()
            .map_err(|m| refuse("internal_invariant", m))?;
        Ok(t)
    }
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Approved => "an approval",
        Event::Declined => "a decline",
        Event::TimedOut => "a timeout",
        Event::Resolved { .. } => "a lookup result",
        Event::Capture { .. } => "a capture",
        Event::Void => "a void",
        Event::Refund { .. } => "a refund",
        Event::AchSettled => "a settlement",
        Event::AchReturned { .. } => "a return",
        Event::Represented => "a re-presentment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn card(amount: i64, capture: bool) -> State {
        State::new(MethodKind::Card, amount, capture).unwrap()
    }

    /// Applies `events` in order; returns the final status and all postings, or the first refusal code.
    fn run(start: State, events: &[Event]) -> Result<(Status, Vec<Posting>), &'static str> {
        let mut s = start;
        let mut postings = Vec::new();
        for e in events {
            let t = s.apply(e).map_err(|r| r.code)?;
            postings.extend(t.postings);
            s = t.state;
        }
        Ok((s.status, postings))
    }

    use Event::*;
    use Posting::*;

    #[test]
    #[rustfmt::skip]
    fn card_flows() {
        let c = |a| Collected { amount_minor: a };
        let r = |a| Refunded { amount_minor: a };
        assert_eq!(run(card(1000, true), &[Approved]), Ok((Status::Captured, vec![c(1000)])));
        assert_eq!(run(card(1000, false), &[Approved]), Ok((Status::RequiresCapture, vec![])));
        assert_eq!(run(card(1000, false), &[Approved, Capture { amount_minor: 600 }]), Ok((Status::Captured, vec![c(600)])));
        assert_eq!(run(card(1000, false), &[Approved, Capture { amount_minor: 1001 }]), Err("amount_exceeds_authorized"));
        assert_eq!(run(card(1000, false), &[Approved, Void]), Ok((Status::Voided, vec![])));
        assert_eq!(run(card(1000, false), &[Approved, Void, Capture { amount_minor: 1 }]), Err("invalid_state"));
        assert_eq!(run(card(1000, true), &[Approved, Void]), Err("invalid_state"));
        assert_eq!(run(card(1000, true), &[Approved, Refund { amount_minor: 300 }, Refund { amount_minor: 700 }]), Ok((Status::Refunded, vec![c(1000), r(300), r(700)])));
        assert_eq!(run(card(1000, true), &[Approved, Refund { amount_minor: 300 }]), Ok((Status::PartiallyRefunded, vec![c(1000), r(300)])));
        assert_eq!(run(card(1000, true), &[Approved, Refund { amount_minor: 300 }, Refund { amount_minor: 701 }]), Err("refund_exceeds_captured"));
        assert_eq!(run(card(1000, false), &[Approved, Capture { amount_minor: 600 }, Refund { amount_minor: 601 }]), Err("refund_exceeds_captured"));
        assert_eq!(run(card(1000, true), &[Approved, Refund { amount_minor: 0 }]), Err("non_positive_amount"));
        assert_eq!(run(card(1000, true), &[Declined]), Ok((Status::Failed, vec![])));
        assert_eq!(run(card(1000, true), &[Declined, Refund { amount_minor: 1 }]), Err("invalid_state"));
        assert_eq!(run(card(1000, true), &[TimedOut]), Ok((Status::Unknown, vec![])));
        assert_eq!(run(card(1000, true), &[TimedOut, Resolved { approved: true, captured: true }]), Ok((Status::Captured, vec![c(1000)])));
        assert_eq!(run(card(1000, false), &[TimedOut, Resolved { approved: true, captured: false }]), Ok((Status::RequiresCapture, vec![])));
        assert_eq!(run(card(1000, true), &[TimedOut, Resolved { approved: false, captured: false }]), Ok((Status::Failed, vec![])));
        assert_eq!(run(card(1000, true), &[TimedOut, Capture { amount_minor: 1 }]), Err("invalid_state"));
        assert!(State::new(MethodKind::Card, 0, true).is_err());
    }

    #[test]
    #[rustfmt::skip]
    fn ach_flows_and_returns() {
        let ach = State::new(MethodKind::BankAccount, 5000, false).unwrap();
        let ret = |a, code: &str| Returned { amount_minor: a, r_code: code.into() };
        assert_eq!(run(ach, &[Approved]), Ok((Status::Pending, vec![Collected { amount_minor: 5000 }])));
        assert_eq!(run(ach, &[Approved, AchSettled]).map(|r| r.0), Ok(Status::Settled));
        assert_eq!(run(ach, &[Approved, AchSettled, AchReturned { r_code: "R01".into() }]).map(|r| r.1), Ok(vec![Collected { amount_minor: 5000 }, ret(5000, "R01")]));
        assert_eq!(run(ach, &[Approved, AchReturned { r_code: "R02".into() }]).map(|r| r.0), Ok(Status::Returned));
        assert_eq!(run(ach, &[Approved, AchSettled, Refund { amount_minor: 1000 }, AchReturned { r_code: "R10".into() }]).map(|r| r.1.last().cloned()), Ok(Some(ret(4000, "R10"))));
        assert_eq!(run(ach, &[Approved, AchSettled, AchReturned { r_code: "R01".into() }, AchReturned { r_code: "R01".into() }]), Err("invalid_state"));
        assert_eq!(run(card(100, true), &[Approved, AchReturned { r_code: "R01".into() }]), Err("invalid_state"));
        let r01 = || AchReturned { r_code: "R01".into() };
        assert_eq!(run(ach, &[Approved, r01(), Represented]), Ok((Status::Pending, vec![Collected { amount_minor: 5000 }, ret(5000, "R01"), Collected { amount_minor: 5000 }])));
        assert_eq!(run(ach, &[Approved, r01(), Represented, r01(), Represented, r01(), Represented]), Err("representments_exhausted"));
        assert_eq!(run(ach, &[Approved, Represented]), Err("invalid_state"));
        assert_eq!(run(card(100, true), &[Approved, Represented]), Err("invalid_state"));
    }

    #[test]
    #[rustfmt::skip]
    fn nacha_return_actions() {
        let check = |code: &str, used: u32, want: ReturnAction| assert_eq!(return_action(code, used), want, "{code} after {used}");
        check("R01", 0, ReturnAction::MayRepresent { remaining: 2 });
        check("R09", 1, ReturnAction::MayRepresent { remaining: 1 });
        check("R01", 2, ReturnAction::None);
        for c in ["R02", "R03", "R04", "R20"] { check(c, 0, ReturnAction::DisableMethod); }
        for c in ["R05", "R07", "R10", "R29"] { check(c, 0, ReturnAction::BlockUnauthorized); }
        check("R99", 0, ReturnAction::None);
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Approved),
            Just(Declined),
            Just(TimedOut),
            any::<(bool, bool)>().prop_map(|(approved, captured)| Resolved { approved, captured }),
            (-10i64..2000).prop_map(|a| Capture { amount_minor: a }),
            Just(Void),
            (-10i64..2000).prop_map(|a| Refund { amount_minor: a }),
            Just(AchSettled),
            prop::sample::select(vec!["R01", "R02", "R07", "R29"])
                .prop_map(|c| AchReturned { r_code: c.into() }),
        ]
    }

    proptest! {
        /// Whatever happens, amounts stay ordered and the ledger nets to what is held:
        /// collected − refunded − returned = captured − refunded (0 once returned).
        #[test]
        fn random_event_sequences_keep_the_books_straight(
            bank in any::<bool>(), capture in any::<bool>(), amount in 1i64..2000,
            events in prop::collection::vec(event(), 0..12),
        ) {
            let method = if bank { MethodKind::BankAccount } else { MethodKind::Card };
            let mut s = State::new(method, amount, capture).unwrap();
            let mut net = 0i64;
            for e in &events {
                if let Ok(t) = s.apply(e) {
                    for p in &t.postings {
                        match p {
                            Collected { amount_minor } => net += amount_minor,
                            Refunded { amount_minor } | Returned { amount_minor, .. } => net -= amount_minor,
                        }
                        prop_assert!(net >= 0, "never more given back than collected");
                    }
                    s = t.state;
                    prop_assert!(s.check().is_ok());
                }
            }
            let held = if s.status == Status::Returned { 0 } else { s.captured_minor - s.refunded_minor };
            prop_assert_eq!(net, held);
        }
    }
}
