//! Payments: the state machine ([`crate::payment`]) driven against a [`Processor`], with every
//! state change, its history event and its ledger entry committed in ONE transaction.
//!
//! Order of work for each operation: read the payment, ask the processor, then apply the
//! answer atomically (optimistic version check on the row). A new payment is inserted as
//! `unknown` *before* the processor is called, under our own reference (the payment id), so a
//! crash or a timeout in between leaves a row that [`Payments::resolve`] settles by asking the
//! processor — never by guessing.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use db::{Db, DbTx};
use ledger::{
    AccountCode, Currency, CustomerId, Direction, EntityCode, EntryHeader, IdempotencyKey, Ledger,
    Money, NewEntry, NewPosting, SourceName, Text,
};
use serde::Serialize;

use crate::card::Cvv;
use crate::payment::{Event, MethodKind, Posting, Refused, ReturnAction, State, Status};
use crate::processor::{AchStatus, AuthorizeRequest, Instrument, LookupResult, Outcome, Processor};
use crate::vault::{Revealed, Vault, VaultError};

/// How long a payment must have been `unknown` before the background resolver asks the
/// processor about it (a create in flight is `unknown` for the length of its processor call).
pub const UNKNOWN_GRACE_S: i64 = 30;
/// How long a claim on a payment lasts if its holder never finishes (it crashed).
pub const CLAIM_LEASE_S: i64 = 60;

/// NACHA's longest return window (unauthorized consumer debits): settled debits are polled
/// for returns until they are this old.
pub const ACH_RETURN_WINDOW_DAYS: i64 = 60;

/// A verified notification from a processor (its signature was checked by the caller).
#[derive(Debug)]
pub struct ProcessorEvent<'a> {
    pub processor: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The processor's transaction id, when the event names one.
    pub processor_ref: Option<&'a str>,
    /// Our payment id, when the processor's record of the transaction carries it.
    pub payment_id: Option<&'a str>,
    pub event_at: DateTime<Utc>,
}

/// The ledger accounts a currency's payments post to.
#[derive(Clone, Debug)]
pub struct PostingAccounts {
    pub entity: EntityCode,
    /// Money at the processor, not yet paid out (asset).
    pub clearing: AccountCode,
    /// Accounts receivable (asset; usually a customer sub-ledger account).
    pub receivable: AccountCode,
}

/// The most payments one [`Payments::search`] returns.
pub const SEARCH_LIMIT_MAX: i64 = 500;

/// A payment to take.
#[derive(Debug)]
pub struct NewPayment {
    pub token: String,
    pub amount: Money,
    pub capture: bool,
    /// Used for this authorization only; never stored.
    pub cvv: Option<Cvv>,
    pub opportunity_id: Option<String>,
    /// The customer (Salesforce Account / Sage customer) whose receivable is reduced.
    pub account_id: Option<CustomerId>,
    pub invoice_refs: Vec<String>,
    pub metadata: serde_json::Value,
}

/// A payment as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payment {
    pub id: String,
    pub token: String,
    pub method_kind: &'static str,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: &'static str,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub processor: String,
    pub processor_ref: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub opportunity_id: Option<String>,
    pub account_id: Option<String>,
    pub invoice_refs: Vec<String>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    version: i64,
    #[serde(skip)]
    state: State,
    #[serde(skip)]
    entity: String,
}

impl Payment {
    /// Bumped by every change (the optimistic-lock counter).
    pub fn version(&self) -> i64 {
        self.version
    }
}

/// Why a payment operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{field}: {message}")]
    Invalid {
        code: &'static str,
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The processor said no to a capture, void or refund; the payment is unchanged.
    #[error("the processor refused: {message}")]
    ProcessorRefused { code: &'static str, message: String },
    #[error("there is no payment {0}")]
    NotFound(String),
    #[error("payment {0} was changed by another request; read it again and retry")]
    Conflict(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("payment storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("payment data is corrupt: {0}")]
    Corrupt(String),
}

impl From<db::DbError> for PaymentError {
    fn from(e: db::DbError) -> Self {
        PaymentError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = PaymentError> = std::result::Result<T, E>;

use db::sqlite_ts as ts;

/// The payment service.
#[derive(Clone, Debug)]
pub struct Payments {
    db: Db,
    ledger: Ledger,
    vault: Vault,
    processor: Arc<dyn Processor>,
    accounts: Arc<HashMap<Currency, PostingAccounts>>,
    outbox: Option<crate::webhooks::Outbox>,
    observer: Option<Arc<dyn PaymentObserver>>,
}

/// Told of every payment change that moves money (a posting), inside the transaction that
/// records it: a follower (the sync engine) queues its own work atomically with the change, so
/// a crash can neither lose the follow-up nor run it for a change that rolled back.
pub trait PaymentObserver: Send + Sync + std::fmt::Debug {
    fn changed<'a>(
        &'a self,
        tx: &'a mut DbTx,
        payment: &'a Payment,
        kind: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;
}

const COLUMNS: &str = "id, token, method_kind, amount_minor, currency, status, authorized_minor, captured_minor, refunded_minor, capture_requested, representments, processor, processor_ref, failure_code, failure_message, entity, opportunity_id, account_id, invoice_refs, metadata, version, created_at, updated_at";

impl Payments {
    pub fn new(
        db: Db,
        ledger: Ledger,
        vault: Vault,
        processor: Arc<dyn Processor>,
        accounts: HashMap<Currency, PostingAccounts>,
    ) -> Payments {
        Payments {
            db,
            ledger,
            vault,
            processor,
            accounts: Arc::new(accounts),
            outbox: None,
            observer: None,
        }
    }

    /// Tells `observer` of every change that posts to the ledger (collected, refunded,
    /// returned), in the same transaction.
    pub fn with_observer(mut self, observer: Arc<dyn PaymentObserver>) -> Payments {
        self.observer = Some(observer);
        self
    }

    /// Announces every payment change to the outbox's subscribers (`payment.updated`),
    /// queued in the same transaction as the change.
    pub fn with_outbox(mut self, outbox: crate::webhooks::Outbox) -> Payments {
        self.outbox = Some(outbox);
        self
    }

    fn now(&self) -> DateTime<Utc> {
        self.ledger.clock().now()
    }

    /// Takes a payment: authorize (and capture, when asked) with the processor.
    /// A decline is not an error: the payment comes back `failed` with its failure code.
    pub async fn create(&self, req: NewPayment, actor: &str) -> Result<Payment> {
        let currency = req.amount.currency();
        let accounts = self
            .accounts
            .get(&currency)
            .ok_or_else(|| PaymentError::Invalid {
                code: "unsupported_currency",
                field: "currency",
                message: format!("no ledger accounts are configured for {currency}"),
            })?;
        let receivable = self
            .ledger
            .account(&accounts.entity, &accounts.receivable)
            .await?;
        if receivable.customer_subledger && req.account_id.is_none() {
            return Err(PaymentError::Invalid {
                code: "missing_field",
                field: "account_id",
                message: "is required: the payment reduces this customer's receivable".into(),
            });
        }
        let method = self.vault.get(&req.token).await?;
        if method.status != "active" {
            return Err(PaymentError::Invalid {
                code: "payment_method_unusable",
                field: "payment_method",
                message: format!(
                    "this payment method is {}{}",
                    method.status,
                    method
                        .status_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            });
        }
        let kind = if method.kind == "card" {
            MethodKind::Card
        } else {
            MethodKind::BankAccount
        };
        let state = State::new(kind, req.amount.amount_minor(), req.capture)?;
        let id = crate::crypto::new_token("pay_").map_err(VaultError::from)?;
        let at = self.now();
        let mut p = Payment {
            id: id.clone(),
            token: req.token.clone(),
            method_kind: if kind == MethodKind::Card {
                "card"
            } else {
                "bank_account"
            },
            amount: req.amount.format_amount(),
            amount_minor: req.amount.amount_minor(),
            currency: currency.code().to_owned(),
            status: Status::Unknown.as_str(),
            authorized_minor: 0,
            captured_minor: 0,
            refunded_minor: 0,
            processor: self.processor.name().to_owned(),
            processor_ref: None,
            failure_code: None,
            failure_message: None,
            opportunity_id: req.opportunity_id.clone(),
            account_id: req.account_id.as_ref().map(|a| a.as_str().to_owned()),
            invoice_refs: req.invoice_refs.clone(),
            metadata: req.metadata.clone(),
            created_at: at,
            updated_at: at,
            version: 1,
            state,
            entity: accounts.entity.to_string(),
        };
        // Recorded before the processor is called: a crash in between leaves an `unknown`
        // payment that `resolve` settles by lookup.
        self.insert(&p).await?;
        let secret = self
            .vault
            .reveal(&req.token, &format!("authorize {id}"), actor)
            .await?;
        let instrument = match &secret {
            Revealed::Card {
                number,
                expiry,
                holder_name,
                postal_code,
            } => Instrument::Card {
                number,
                expiry: *expiry,
                cvv: req.cvv.as_ref(),
                holder_name: holder_name.as_deref(),
                postal_code: postal_code.as_deref(),
            },
            Revealed::BankAccount {
                routing,
                account,
                account_type,
                holder_name,
                sec_code,
            } => Instrument::Bank {
                routing,
                account,
                account_type: *account_type,
                holder_name,
                sec_code: *sec_code,
            },
        };
        let outcome = self
            .processor
            .authorize(&AuthorizeRequest {
                reference: &id,
                amount_minor: p.amount_minor,
                currency: currency.code(),
                capture: p.state.capture_requested,
                instrument,
            })
            .await;
        drop(secret);
        let (event, processor_ref, failure) = match outcome {
            Outcome::Approved { processor_ref } => (Event::Approved, Some(processor_ref), None),
            Outcome::Declined { code, message } => (
                Event::Declined,
                None,
                Some((code.as_str().to_owned(), message)),
            ),
            Outcome::Unknown { detail } => (
                Event::TimedOut,
                None,
                Some(("processor_timeout".to_owned(), detail)),
            ),
        };
        if let Some(r) = processor_ref {
            p.processor_ref = Some(r);
        }
        if let Some((code, message)) = failure {
            p.failure_code = Some(code);
            p.failure_message = Some(message);
        }
        match self.apply(p, &event, "authorize").await {
            // Someone resolved it meanwhile (a `get` on another request asked the processor):
            // the stored state is the processor's answer.
            Err(PaymentError::Conflict(_)) => self.load(&id).await,
            other => other,
        }
    }

    /// Reads a payment; an `unknown` one is resolved first (asking the processor).
    pub async fn get(&self, id: &str) -> Result<Payment> {
        let p = self.load(id).await?;
        if p.state.status == Status::Unknown {
            return self.resolve(id).await;
        }
        Ok(p)
    }

    /// Settles an `unknown` payment by asking the processor what happened to our reference.
    pub async fn resolve(&self, id: &str) -> Result<Payment> {
        let mut p = self.load(id).await?;
        if p.state.status != Status::Unknown {
            return Ok(p);
        }
        let event = match self.processor.lookup(id).await {
            LookupResult::Approved {
                processor_ref,
                captured,
            } => {
                p.processor_ref = Some(processor_ref);
                p.failure_code = None;
                p.failure_message = None;
                Event::Resolved {
                    approved: true,
                    captured,
                }
            }
            LookupResult::Declined { code, message } => {
                p.failure_code = Some(code.as_str().to_owned());
                p.failure_message = Some(message);
                Event::Resolved {
                    approved: false,
                    captured: false,
                }
            }
            LookupResult::NotFound => {
                p.failure_code = Some("processor_never_received".into());
                p.failure_message = Some("the processor has no record of this payment".into());
                Event::Resolved {
                    approved: false,
                    captured: false,
                }
            }
            // Still unknown: leave it so, for the next attempt.
            LookupResult::Unknown { .. } => return Ok(p),
        };
        self.apply(p, &event, "resolve").await
    }

    /// Resolves up to `limit` `unknown` payments (oldest first); returns how many left `unknown`.
    /// Run in the background by the server; safe from several processes at once (the version
    /// check lets one of two concurrent resolutions win, the other is a no-op).
    pub async fn resolve_unknown(&self, limit: i64) -> Result<u64> {
        // Only payments left unknown for a while: a payment is `unknown` for a moment during
        // every create, and resolving it then would race the request that is creating it.
        let before = self.now() - chrono::Duration::seconds(UNKNOWN_GRACE_S);
        let ids: Vec<String> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(
                "SELECT id FROM gateway_payments WHERE status = 'unknown' AND updated_at < $1 ORDER BY created_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?,
            Db::Sqlite(s) => sqlx::query_scalar(
                "SELECT id FROM gateway_payments WHERE status = 'unknown' AND updated_at < ? ORDER BY created_at LIMIT ?",
            )
            .bind(ts(before))
            .bind(limit)
            .fetch_all(&s.pool)
            .await?,
        };
        let mut resolved = 0;
        for id in ids {
            match self.resolve(&id).await {
                Ok(p) if p.status != "unknown" => resolved += 1,
                Ok(_) | Err(PaymentError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(payment = %id, error = %e, "could not resolve an unknown payment")
                }
            }
        }
        Ok(resolved)
    }

    /// Runs [`Payments::resolve_unknown`] every `interval` until `stop` turns true.
    /// Also polls ACH debits ([`Payments::poll_ach`]) not asked about within `ach_every`.
    pub async fn run_resolver(
        self,
        interval: std::time::Duration,
        ach_every: chrono::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            match self.resolve_unknown(100).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resolved = n, "unknown payments resolved"),
                Err(e) => tracing::warn!(error = %e, "payment resolver failed; will retry"),
            }
            match self.poll_ach(ach_every, 100).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(changed = n, "ACH debits settled or returned"),
                Err(e) => tracing::warn!(error = %e, "ACH status poll failed; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Asks the processor about ACH debits not checked within `every`: pending ones until they
    /// settle, settled ones until [`ACH_RETURN_WINDOW_DAYS`] have passed, and applies what it
    /// reports (settlement, or a return with its ledger reversal). Returns how many changed.
    /// Safe from several processes: the version check lets one application win.
    pub async fn poll_ach(&self, every: chrono::Duration, limit: i64) -> Result<u64> {
        let now = self.now();
        let checked_before = now - every;
        let oldest = now - chrono::Duration::days(ACH_RETURN_WINDOW_DAYS);
        let due: Vec<(String, String)> = match &self.db {
            Db::Postgres(p) => sqlx::query_as(
                "SELECT id, processor_ref FROM gateway_payments WHERE method_kind = 'bank_account' AND status IN ('pending', 'settled') \
                 AND processor_ref IS NOT NULL AND (ach_checked_at IS NULL OR ach_checked_at < $1) AND created_at > $2 \
                 ORDER BY ach_checked_at NULLS FIRST, created_at LIMIT $3",
            )
            .bind(checked_before)
            .bind(oldest)
            .bind(limit)
            .fetch_all(p)
            .await?,
            Db::Sqlite(s) => sqlx::query_as(
                "SELECT id, processor_ref FROM gateway_payments WHERE method_kind = 'bank_account' AND status IN ('pending', 'settled') \
                 AND processor_ref IS NOT NULL AND (ach_checked_at IS NULL OR ach_checked_at < ?) AND created_at > ? \
                 ORDER BY ach_checked_at IS NOT NULL, ach_checked_at, created_at LIMIT ?",
            )
            .bind(ts(checked_before))
            .bind(ts(oldest))
            .bind(limit)
            .fetch_all(&s.pool)
            .await?,
        };
        let mut changed = 0;
        for (id, processor_ref) in due {
            // Claim the check: of several servers polling at once, one asks the processor.
            let claimed = match &self.db {
                Db::Postgres(p) => sqlx::query(
                    "UPDATE gateway_payments SET ach_checked_at = $1 WHERE id = $2 AND (ach_checked_at IS NULL OR ach_checked_at < $3)",
                )
                .bind(now)
                .bind(&id)
                .bind(checked_before)
                .execute(p)
                .await?
                .rows_affected(),
                Db::Sqlite(s) => sqlx::query(
                    "UPDATE gateway_payments SET ach_checked_at = ? WHERE id = ? AND (ach_checked_at IS NULL OR ach_checked_at < ?)",
                )
                .bind(ts(now))
                .bind(&id)
                .bind(ts(checked_before))
                .execute(&s.pool)
                .await?
                .rows_affected(),
            };
            if claimed == 0 {
                continue;
            }
            let status = self.processor.ach_status(&processor_ref).await;
            let current = self.load(&id).await?;
            let r_code = match status {
                AchStatus::Pending => continue,
                AchStatus::Settled if current.state.status == Status::Pending => None,
                AchStatus::Settled => continue,
                AchStatus::Returned { r_code, .. } => Some(r_code),
                AchStatus::Unknown { detail } => {
                    tracing::warn!(payment = %id, %detail, "ACH status unknown; will ask again");
                    continue;
                }
            };
            match self
                .ach_event(&processor_ref, r_code.as_deref(), "processor")
                .await
            {
                Ok(_) => changed += 1,
                Err(PaymentError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(payment = %id, error = %e, "could not apply an ACH status")
                }
            }
        }
        Ok(changed)
    }

    /// Acts on a verified processor notification once: a payment it names that is still
    /// `unknown` is resolved (asking the processor, never trusting the notification's body);
    /// anything else is recorded. `Ok(None)`: this event was handled before (a redelivery or a
    /// replay) and nothing was done.
    pub async fn processor_event(&self, ev: &ProcessorEvent<'_>) -> Result<Option<String>> {
        let seen: Option<i64> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(
                "SELECT 1::BIGINT FROM gateway_processor_events WHERE processor = $1 AND event_id = $2",
            )
            .bind(ev.processor)
            .bind(ev.event_id)
            .fetch_optional(p)
            .await?,
            Db::Sqlite(s) => sqlx::query_scalar(
                "SELECT 1 FROM gateway_processor_events WHERE processor = ? AND event_id = ?",
            )
            .bind(ev.processor)
            .bind(ev.event_id)
            .fetch_optional(&s.pool)
            .await?,
        };
        if seen.is_some() {
            return Ok(None);
        }
        let id = match (ev.payment_id, ev.processor_ref) {
            (Some(id), _) => Some(id.to_owned()),
            (None, Some(r)) => match self.id_by_processor_ref(r).await {
                Ok(id) => Some(id),
                Err(PaymentError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
            (None, None) => None,
        };
        let outcome = match &id {
            None => "no matching payment".to_owned(),
            Some(id) => match self.load(id).await {
                Ok(p) if p.state.status == Status::Unknown => match self.resolve(id).await {
                    Ok(p) => format!("resolved: {}", p.status),
                    Err(PaymentError::Conflict(_)) => "resolved concurrently".to_owned(),
                    Err(e) => return Err(e),
                },
                Ok(p) => format!("payment already {}", p.status),
                Err(PaymentError::NotFound(_)) => "no matching payment".to_owned(),
                Err(e) => return Err(e),
            },
        };
        let now = self.now();
        match &self.db {
            Db::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO gateway_processor_events (processor, event_id, event_type, processor_ref, payment_id, outcome, event_at, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(ev.processor)
                .bind(ev.event_id)
                .bind(ev.event_type)
                .bind(ev.processor_ref)
                .bind(id.as_deref())
                .bind(&outcome)
                .bind(ev.event_at)
                .bind(now)
                .execute(p)
                .await?;
            }
            Db::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO gateway_processor_events (processor, event_id, event_type, processor_ref, payment_id, outcome, event_at, received_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(ev.processor)
                .bind(ev.event_id)
                .bind(ev.event_type)
                .bind(ev.processor_ref)
                .bind(id.as_deref())
                .bind(&outcome)
                .bind(ts(ev.event_at))
                .bind(ts(now))
                .execute(&s.pool)
                .await?;
            }
        }
        Ok(Some(outcome))
    }

    /// Captures `amount_minor` (default: all authorized) of an authorization.
    pub async fn capture(&self, id: &str, amount_minor: Option<i64>) -> Result<Payment> {
        let p = self.load(id).await?;
        let amount = amount_minor.unwrap_or(p.state.authorized_minor);
        let event = Event::Capture {
            amount_minor: amount,
        };
        p.state.apply(&event)?; // refuse before calling the processor
        let p = self.claim(p).await?;
        let r = p.processor_ref.clone().unwrap_or_default();
        self.processor_claimed(&p, self.processor.capture(&r, amount).await)
            .await?;
        self.apply(p, &event, "capture").await
    }

    pub async fn void(&self, id: &str) -> Result<Payment> {
        let p = self.load(id).await?;
        p.state.apply(&Event::Void)?;
        let p = self.claim(p).await?;
        let r = p.processor_ref.clone().unwrap_or_default();
        self.processor_claimed(&p, self.processor.void(&r).await)
            .await?;
        self.apply(p, &Event::Void, "void").await
    }

    /// Refunds `amount_minor` (default: all that is left); refunds add up to at most the
    /// captured amount.
    pub async fn refund(&self, id: &str, amount_minor: Option<i64>) -> Result<Payment> {
        let p = self.load(id).await?;
        let amount = amount_minor.unwrap_or(p.state.captured_minor - p.state.refunded_minor);
        let event = Event::Refund {
            amount_minor: amount,
        };
        p.state.apply(&event)?;
        let p = self.claim(p).await?;
        let r = p.processor_ref.clone().unwrap_or_default();
        let reference = format!("{id}:refund:{}", p.version);
        self.processor_claimed(&p, self.processor.refund(&r, &reference, amount).await)
            .await?;
        self.apply(p, &event, "refund").await
    }

    /// An ACH settlement or return reported by the processor for `processor_ref`.
    pub async fn ach_event(
        &self,
        processor_ref: &str,
        r_code: Option<&str>,
        actor: &str,
    ) -> Result<Payment> {
        let id = self.id_by_processor_ref(processor_ref).await?;
        let mut p = self.load(&id).await?;
        let token = p.token.clone();
        if let Some(code) = r_code {
            // The return code decides what may follow (re-presentment after R01 / R09 only).
            p.failure_code = Some(code.to_owned());
            p.failure_message = Some(format!("ACH return {code}"));
        }
        let event = match r_code {
            None => Event::AchSettled,
            Some(c) => Event::AchReturned {
                r_code: c.to_owned(),
            },
        };
        let (p, action) = self.apply_with(p, &event, "ach").await?;
        match action {
            Some(ReturnAction::DisableMethod) => {
                self.vault
                    .set_status(&token, "disabled", r_code.unwrap_or(""), actor)
                    .await?;
            }
            Some(ReturnAction::BlockUnauthorized) => {
                self.vault
                    .set_status(&token, "blocked", r_code.unwrap_or(""), actor)
                    .await?;
            }
            _ => {}
        }
        Ok(p)
    }

    /// Presents a returned ACH debit again — allowed after R01 / R09 only, at most twice
    /// (NACHA). A new debit goes to the processor; the collection is posted again.
    pub async fn represent(&self, id: &str, actor: &str) -> Result<Payment> {
        let p = self.load(id).await?;
        let code = p.failure_code.clone().unwrap_or_default();
        match crate::payment::return_action(&code, p.state.representments) {
            ReturnAction::MayRepresent { .. } if p.state.status == Status::Returned => {}
            _ => {
                return Err(PaymentError::Refused(Refused {
                    code: "invalid_state",
                    message: format!(
                        "a {} payment{} cannot be presented again (only R01 / R09 returns, at most {} times)",
                        p.status,
                        if code.is_empty() {
                            String::new()
                        } else {
                            format!(" returned {code}")
                        },
                        crate::payment::MAX_REPRESENTMENTS
                    ),
                }));
            }
        }
        let method = self.vault.get(&p.token).await?;
        if method.status != "active" {
            return Err(PaymentError::Invalid {
                code: "payment_method_unusable",
                field: "payment_method",
                message: format!("this payment method is {}", method.status),
            });
        }
        let mut p = self.claim(p).await?;
        let reference = format!("{id}:represent:{}", p.state.representments + 1);
        let secret = self
            .vault
            .reveal(&p.token, &format!("represent {id}"), actor)
            .await?;
        let Revealed::BankAccount {
            routing,
            account,
            account_type,
            holder_name,
            sec_code,
        } = &secret
        else {
            return Err(PaymentError::Corrupt(format!(
                "payment {id} is not a bank debit"
            )));
        };
        let outcome = self
            .processor
            .authorize(&AuthorizeRequest {
                reference: &reference,
                amount_minor: p.state.captured_minor - p.state.refunded_minor,
                currency: &p.currency,
                capture: true,
                instrument: Instrument::Bank {
                    routing,
                    account,
                    account_type: *account_type,
                    holder_name,
                    sec_code: *sec_code,
                },
            })
            .await;
        drop(secret);
        match outcome {
            Outcome::Approved { processor_ref } => {
                p.processor_ref = Some(processor_ref);
                p.failure_code = None;
                p.failure_message = None;
            }
            other => {
                self.processor_claimed(&p, other).await?;
            }
        }
        self.apply(p, &Event::Represented, "represent").await
    }

    /// Payments of one Salesforce Opportunity, newest first.
    pub async fn by_opportunity(&self, opportunity_id: &str) -> Result<Vec<Payment>> {
        let sql = |mark: &str| {
            format!(
                "SELECT {COLUMNS} FROM gateway_payments WHERE opportunity_id = {mark} ORDER BY created_at DESC, id"
            )
        };
        let mut out = Vec::new();
        match &self.db {
            Db::Postgres(pool) => {
                for r in sqlx::query(sqlx::AssertSqlSafe(sql("$1")))
                    .bind(opportunity_id)
                    .fetch_all(pool)
                    .await?
                {
                    out.push(from_pg(&r)?);
                }
            }
            Db::Sqlite(s) => {
                for r in sqlx::query(sqlx::AssertSqlSafe(sql("?")))
                    .bind(opportunity_id)
                    .fetch_all(&s.pool)
                    .await?
                {
                    out.push(from_sqlite(&r)?);
                }
            }
        }
        Ok(out)
    }

    /// Payments matching every given filter (Opportunity id, status, amount in minor units),
    /// newest first, at most `limit` (capped at [`SEARCH_LIMIT_MAX`]).
    pub async fn search(
        &self,
        opportunity_id: Option<&str>,
        status: Option<&str>,
        amount_minor: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Payment>> {
        let limit = limit.clamp(1, SEARCH_LIMIT_MAX);
        let sql = |m: [&str; 4]| {
            format!(
                "SELECT {COLUMNS} FROM gateway_payments WHERE ({a} IS NULL OR opportunity_id = {a}) \
                 AND ({b} IS NULL OR status = {b}) AND ({c} IS NULL OR amount_minor = {c}) \
                 ORDER BY created_at DESC, id LIMIT {d}",
                a = m[0],
                b = m[1],
                c = m[2],
                d = m[3]
            )
        };
        let mut out = Vec::new();
        match &self.db {
            Db::Postgres(pool) => {
                for r in sqlx::query(sqlx::AssertSqlSafe(sql([
                    "$1::TEXT",
                    "$2::TEXT",
                    "$3::BIGINT",
                    "$4",
                ])))
                .bind(opportunity_id)
                .bind(status)
                .bind(amount_minor)
                .bind(limit)
                .fetch_all(pool)
                .await?
                {
                    out.push(from_pg(&r)?);
                }
            }
            Db::Sqlite(s) => {
                for r in sqlx::query(sqlx::AssertSqlSafe(sql(["?1", "?2", "?3", "?4"])))
                    .bind(opportunity_id)
                    .bind(status)
                    .bind(amount_minor)
                    .bind(limit)
                    .fetch_all(&s.pool)
                    .await?
                {
                    out.push(from_sqlite(&r)?);
                }
            }
        }
        Ok(out)
    }

    /// Takes the payment for one operation before the processor is called: a lease on the row
    /// (`claimed_until`), so of two concurrent captures (or refunds) only one reaches the
    /// processor and the other gets `Conflict`. The lease ends when the operation is applied
    /// or released, or after [`CLAIM_LEASE_S`] if this process died meanwhile.
    async fn claim(&self, mut p: Payment) -> Result<Payment> {
        let now = self.now();
        let until = now + chrono::Duration::seconds(CLAIM_LEASE_S);
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "UPDATE gateway_payments SET version = version + 1, claimed_until = $3
                 WHERE id = $1 AND version = $2 AND (claimed_until IS NULL OR claimed_until < $4)",
            )
            .bind(&p.id)
            .bind(p.version)
            .bind(until)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Db::Sqlite(s) => sqlx::query(
                "UPDATE gateway_payments SET version = version + 1, claimed_until = ?3
                 WHERE id = ?1 AND version = ?2 AND (claimed_until IS NULL OR claimed_until < ?4)",
            )
            .bind(&p.id)
            .bind(p.version)
            .bind(ts(until))
            .bind(ts(now))
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        if n == 0 {
            return Err(PaymentError::Conflict(p.id.clone()));
        }
        p.version += 1;
        Ok(p)
    }

    /// Gives a claim back when the processor refused (nothing changed).
    async fn release(&self, p: &Payment) -> Result<()> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query("UPDATE gateway_payments SET claimed_until = NULL WHERE id = $1 AND version = $2")
                    .bind(&p.id)
                    .bind(p.version)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(s) => {
                sqlx::query(
                    "UPDATE gateway_payments SET claimed_until = NULL WHERE id = ? AND version = ?",
                )
                .bind(&p.id)
                .bind(p.version)
                .execute(&s.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Maps a processor answer for a claimed payment; a refusal releases the claim.
    async fn processor_claimed(&self, p: &Payment, o: Outcome) -> Result<()> {
        if let Err(e) = self.processor_ok(o) {
            self.release(p).await?;
            return Err(e);
        }
        Ok(())
    }

    fn processor_ok(&self, o: Outcome) -> Result<()> {
        match o {
            Outcome::Approved { .. } => Ok(()),
            Outcome::Declined { code, message } => Err(PaymentError::ProcessorRefused {
                code: code.as_str(),
                message,
            }),
            Outcome::Unknown { detail } => Err(PaymentError::ProcessorRefused {
                code: "processor_timeout",
                message: format!(
                    "the processor did not answer ({detail}); retry with the same Idempotency-Key"
                ),
            }),
        }
    }

    async fn apply(&self, p: Payment, event: &Event, kind: &str) -> Result<Payment> {
        Ok(self.apply_with(p, event, kind).await?.0)
    }

    /// Applies `event`: new state, history event and ledger entries, in one transaction.
    async fn apply_with(
        &self,
        mut p: Payment,
        event: &Event,
        kind: &str,
    ) -> Result<(Payment, Option<ReturnAction>)> {
        let t = p.state.apply(event)?;
        let at = self.now();
        let old_version = p.version;
        p.state = t.state;
        p.status = t.state.status.as_str();
        p.authorized_minor = t.state.authorized_minor;
        p.captured_minor = t.state.captured_minor;
        p.refunded_minor = t.state.refunded_minor;
        p.version += 1;
        p.updated_at = at;
        let mut tx = self.db.begin().await?;
        let updated = self.update_in(&mut tx, &p, old_version).await?;
        if updated == 0 {
            tx.rollback().await?;
            return Err(PaymentError::Conflict(p.id.clone()));
        }
        let mut entry_id = None;
        for (i, posting) in t.postings.iter().enumerate() {
            let entry = self.entry(&p, posting, i, at)?;
            let out = self.ledger.post_in_tx(&mut tx, entry).await?;
            entry_id = Some(out.entry.id.0);
        }
        let amount = t.postings.first().map(|x| match x {
            Posting::Collected { amount_minor }
            | Posting::Refunded { amount_minor }
            | Posting::Returned { amount_minor, .. } => *amount_minor,
        });
        self.event_in(&mut tx, &p, kind, amount, entry_id, at)
            .await?;
        if let Some(observer) = &self.observer
            && !t.postings.is_empty()
        {
            observer.changed(&mut tx, &p, kind).await?;
        }
        if let Some(outbox) = &self.outbox {
            let payload =
                serde_json::to_value(&p).map_err(|e| PaymentError::Corrupt(e.to_string()))?;
            let event_id = format!("{}:v{}", p.id, p.version);
            outbox
                .enqueue_in(&mut tx, "payment.updated", &event_id, &payload, at)
                .await?;
        }
        tx.commit().await?;
        Ok((p, t.return_action))
    }

    /// The ledger entry for one posting of a transition; its key makes a replay harmless.
    fn entry(
        &self,
        p: &Payment,
        posting: &Posting,
        i: usize,
        at: DateTime<Utc>,
    ) -> Result<NewEntry> {
        let currency =
            Currency::parse(&p.currency).map_err(|e| PaymentError::Corrupt(e.to_string()))?;
        let accounts = self
            .accounts
            .get(&currency)
            .ok_or_else(|| PaymentError::Corrupt(format!("no accounts for {currency}")))?;
        let (amount, collected, memo) = match posting {
            Posting::Collected { amount_minor } => {
                (*amount_minor, true, format!("Payment {} collected", p.id))
            }
            Posting::Refunded { amount_minor } => {
                (*amount_minor, false, format!("Payment {} refunded", p.id))
            }
            Posting::Returned {
                amount_minor,
                r_code,
            } => (
                *amount_minor,
                false,
                format!("Payment {} returned {r_code}", p.id),
            ),
        };
        let money = Money::from_minor(amount, currency);
        let customer = p
            .account_id
            .as_deref()
            .map(|a| CustomerId::parse(a, "account_id"))
            .transpose()
            .map_err(|r| PaymentError::Corrupt(r.message))?;
        let doc = p
            .invoice_refs
            .first()
            .map(|d| Text::parse(d, "invoice_refs"))
            .transpose()
            .map_err(|r| PaymentError::Corrupt(r.message))?;
        let leg = |account: &AccountCode, direction| NewPosting {
            account: account.clone(),
            direction,
            amount: money,
            customer_id: None,
            document_ref: None,
            memo: None,
        };
        let (clearing_dir, ar_dir) = if collected {
            (Direction::Debit, Direction::Credit)
        } else {
            (Direction::Credit, Direction::Debit)
        };
        let mut ar = leg(&accounts.receivable, ar_dir);
        ar.customer_id = customer;
        ar.document_ref = doc;
        let bad = |r: ledger::Rejection| PaymentError::Corrupt(r.message);
        NewEntry::new(
            EntryHeader {
                idempotency_key: IdempotencyKey::parse(
                    &format!("{}:v{}:{i}", p.id, p.version),
                    "key",
                )
                .map_err(bad)?,
                entity: accounts.entity.clone(),
                effective_date: at.date_naive(),
                source: SourceName::parse("gateway", "source").map_err(bad)?,
                external_ref: p
                    .processor_ref
                    .as_deref()
                    .map(|r| Text::parse(r, "external_ref"))
                    .transpose()
                    .map_err(bad)?,
                memo: Some(Text::parse(&memo, "memo").map_err(bad)?),
            },
            vec![leg(&accounts.clearing, clearing_dir), ar],
        )
        .map_err(bad)
    }

    async fn insert(&self, p: &Payment) -> Result<()> {
        let refs = serde_json::to_string(&p.invoice_refs)
            .map_err(|e| PaymentError::Corrupt(e.to_string()))?;
        let meta = p.metadata.to_string();
        let mut tx = self.db.begin().await?;
        match &mut tx {
            DbTx::Postgres(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO gateway_payments ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$22)"
                )))
                .bind(&p.id).bind(&p.token).bind(p.method_kind).bind(p.amount_minor).bind(&p.currency).bind(p.status)
                .bind(p.authorized_minor).bind(p.captured_minor).bind(p.refunded_minor)
                .bind(i64::from(p.state.capture_requested)).bind(i64::from(p.state.representments))
                .bind(&p.processor).bind(&p.processor_ref).bind(&p.failure_code).bind(&p.failure_message)
                .bind(&p.entity).bind(&p.opportunity_id).bind(&p.account_id).bind(&refs).bind(&meta)
                .bind(p.version).bind(p.created_at)
                .execute(&mut **t)
                .await?;
            }
            DbTx::Sqlite(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO gateway_payments ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?22)"
                )))
                .bind(&p.id).bind(&p.token).bind(p.method_kind).bind(p.amount_minor).bind(&p.currency).bind(p.status)
                .bind(p.authorized_minor).bind(p.captured_minor).bind(p.refunded_minor)
                .bind(i64::from(p.state.capture_requested)).bind(i64::from(p.state.representments))
                .bind(&p.processor).bind(&p.processor_ref).bind(&p.failure_code).bind(&p.failure_message)
                .bind(&p.entity).bind(&p.opportunity_id).bind(&p.account_id).bind(&refs).bind(&meta)
                .bind(p.version).bind(ts(p.created_at))
                .execute(&mut **t)
                .await?;
            }
        }
        self.event_in(&mut tx, p, "created", None, None, p.created_at)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_in(&self, tx: &mut DbTx, p: &Payment, old_version: i64) -> Result<u64> {
        Ok(match tx {
            DbTx::Postgres(t) => sqlx::query(
                "UPDATE gateway_payments SET status = $1, authorized_minor = $2, captured_minor = $3, refunded_minor = $4,
                    processor_ref = $5, failure_code = $6, failure_message = $7, version = $8, updated_at = $9,
                    claimed_until = NULL
                 WHERE id = $10 AND version = $11",
            )
            .bind(p.status).bind(p.authorized_minor).bind(p.captured_minor).bind(p.refunded_minor)
            .bind(&p.processor_ref).bind(&p.failure_code).bind(&p.failure_message).bind(p.version).bind(p.updated_at)
            .bind(&p.id).bind(old_version)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            DbTx::Sqlite(t) => sqlx::query(
                "UPDATE gateway_payments SET status = ?1, authorized_minor = ?2, captured_minor = ?3, refunded_minor = ?4,
                    processor_ref = ?5, failure_code = ?6, failure_message = ?7, version = ?8, updated_at = ?9,
                    claimed_until = NULL
                 WHERE id = ?10 AND version = ?11",
            )
            .bind(p.status).bind(p.authorized_minor).bind(p.captured_minor).bind(p.refunded_minor)
            .bind(&p.processor_ref).bind(&p.failure_code).bind(&p.failure_message).bind(p.version).bind(ts(p.updated_at))
            .bind(&p.id).bind(old_version)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        })
    }

    async fn event_in(
        &self,
        tx: &mut DbTx,
        p: &Payment,
        kind: &str,
        amount: Option<i64>,
        entry: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let detail = p.failure_code.as_deref();
        match tx {
            DbTx::Postgres(t) => {
                sqlx::query("INSERT INTO gateway_payment_events (payment_id, seq, kind, amount_minor, status, processor_ref, detail, ledger_entry_id, at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)")
                    .bind(&p.id).bind(p.version).bind(kind).bind(amount).bind(p.status).bind(&p.processor_ref).bind(detail).bind(entry).bind(at)
                    .execute(&mut **t)
                    .await?;
            }
            DbTx::Sqlite(t) => {
                sqlx::query("INSERT INTO gateway_payment_events (payment_id, seq, kind, amount_minor, status, processor_ref, detail, ledger_entry_id, at) VALUES (?,?,?,?,?,?,?,?,?)")
                    .bind(&p.id).bind(p.version).bind(kind).bind(amount).bind(p.status).bind(&p.processor_ref).bind(detail).bind(entry).bind(ts(at))
                    .execute(&mut **t)
                    .await?;
            }
        }
        Ok(())
    }

    async fn id_by_processor_ref(&self, r: &str) -> Result<String> {
        let id: Option<String> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT id FROM gateway_payments WHERE processor_ref = $1")
                    .bind(r)
                    .fetch_optional(p)
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_scalar("SELECT id FROM gateway_payments WHERE processor_ref = ?")
                    .bind(r)
                    .fetch_optional(&s.pool)
                    .await?
            }
        };
        id.ok_or_else(|| PaymentError::NotFound(r.to_owned()))
    }

    async fn load(&self, id: &str) -> Result<Payment> {
        let sql = |mark: &str| format!("SELECT {COLUMNS} FROM gateway_payments WHERE id = {mark}");
        match &self.db {
            Db::Postgres(pool) => {
                let r = sqlx::query(sqlx::AssertSqlSafe(sql("$1")))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                from_pg(&r.ok_or_else(|| PaymentError::NotFound(id.to_owned()))?)
            }
            Db::Sqlite(s) => {
                let r = sqlx::query(sqlx::AssertSqlSafe(sql("?")))
                    .bind(id)
                    .fetch_optional(&s.pool)
                    .await?;
                from_sqlite(&r.ok_or_else(|| PaymentError::NotFound(id.to_owned()))?)
            }
        }
    }
}

macro_rules! decode_payment {
    ($r:expr, $created:expr, $updated:expr) => {{
        use sqlx::Row;
        let r = $r;
        let kind: String = r.try_get(2)?;
        let status_s: String = r.try_get(5)?;
        let status = Status::parse(&status_s)
            .ok_or_else(|| PaymentError::Corrupt(format!("bad status {status_s}")))?;
        let method = if kind == "card" {
            MethodKind::Card
        } else {
            MethodKind::BankAccount
        };
        let refs: String = r.try_get(18)?;
        let meta: String = r.try_get(19)?;
        let amount_minor: i64 = r.try_get(3)?;
        let currency: String = r.try_get(4)?;
        let cur = Currency::parse(&currency).map_err(|e| PaymentError::Corrupt(e.to_string()))?;
        let state = State {
            status,
            method,
            amount_minor,
            authorized_minor: r.try_get(6)?,
            captured_minor: r.try_get(7)?,
            refunded_minor: r.try_get(8)?,
            capture_requested: r.try_get::<i64, _>(9)? != 0,
            representments: u32::try_from(r.try_get::<i64, _>(10)?).unwrap_or(0),
        };
        state.check().map_err(PaymentError::Corrupt)?;
        Ok(Payment {
            id: r.try_get(0)?,
            token: r.try_get(1)?,
            method_kind: if method == MethodKind::Card {
                "card"
            } else {
                "bank_account"
            },
            amount: Money::from_minor(amount_minor, cur).format_amount(),
            amount_minor,
            currency,
            status: status.as_str(),
            authorized_minor: state.authorized_minor,
            captured_minor: state.captured_minor,
            refunded_minor: state.refunded_minor,
            processor: r.try_get(11)?,
            processor_ref: r.try_get(12)?,
            failure_code: r.try_get(13)?,
            failure_message: r.try_get(14)?,
            entity: r.try_get(15)?,
            opportunity_id: r.try_get(16)?,
            account_id: r.try_get(17)?,
            invoice_refs: serde_json::from_str(&refs)
                .map_err(|e| PaymentError::Corrupt(e.to_string()))?,
            metadata: serde_json::from_str(&meta)
                .map_err(|e| PaymentError::Corrupt(e.to_string()))?,
            version: r.try_get(20)?,
            created_at: $created,
            updated_at: $updated,
            state,
        })
    }};
}

fn from_pg(r: &sqlx::postgres::PgRow) -> Result<Payment> {
    use sqlx::Row;
    let created: DateTime<Utc> = r.try_get(21)?;
    let updated: DateTime<Utc> = r.try_get(22)?;
    decode_payment!(r, created, updated)
}

fn from_sqlite(r: &sqlx::sqlite::SqliteRow) -> Result<Payment> {
    use sqlx::Row;
    let parse = |s: String| {
        DateTime::parse_from_rfc3339(&s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| PaymentError::Corrupt(e.to_string()))
    };
    let created = parse(r.try_get(21)?)?;
    let updated = parse(r.try_get(22)?)?;
    decode_payment!(r, created, updated)
}
