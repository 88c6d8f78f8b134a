//! Quote to cash with an on-premise Sage line (Sage 100, BusinessWorks): the same flows as
//! [`crate::q2c`] and [`crate::x3_loop`], but the server never calls Sage. It queues typed
//! commands ([`crate::agent_contract`]) for the line's agent ([`crate::agent_queue`]); the
//! agent executes them on the customer's network and posts the outcome, which
//! `POST /agent/v1/results/{id}` turns into a `{line}.agent_result` job ([`queue_result`]) that
//! continues the flow. One loop, parameterised by the line ([`SageLine`]) and what the line can
//! do ([`Capabilities`]).
//!
//! - **Closed Won** (`{line}.closed_won`, also from `salesforce.event` and pulled Opportunity
//!   changes): the Opportunity, its Account and lines are read from Salesforce and checked; the
//!   customer is the cross-reference's (Account → division, CustomerNo), else derived
//!   (`AccountNumber`, else the name: uppercase alphanumerics, ≤ 20 characters, made unique by
//!   reserving it in the cross-reference) → `upsert_customer`. Its result links the Account,
//!   writes `Sage_Customer_Id__c` and queues `create_sales_order` (keyed by the Opportunity id:
//!   a replay queues nothing new); the order's result links the Opportunity and writes
//!   `Sage_Order_Number__c`.
//! - **Pull** (`{line}.pull`, on a schedule): one `read_changed_invoices` in flight per line,
//!   from the stored cursor. Its result: each invoice of a linked order → the Opportunity's
//!   invoice number, status, balance and payment status; Dr AR / Cr revenue (Cr tax) once per
//!   invoice in the ledger; the cursor moves to `next`; `more` queues the next page at once.
//!   Invoices of orders we did not make are skipped.
//! - **Gateway payment** (`{line}.payment`): Sage 100 → `import_cash_receipts` (one per
//!   payment id) allocated to the Opportunity's open invoices oldest first (balances as the
//!   last reads left them), the rest on account; BusinessWorks → a review item (payments are
//!   applied in BusinessWorks by a person). Refunds and returns → review.
//!
//! Failures: an agent's `failed` outcome makes its result job fail permanently with the
//! agent's text (a SOAP fault `CI_NOF: …`), so the error queue shows it. An operator's retry of
//! that job re-issues the command under a new idempotency key (the old one is finished
//! forever); a re-issued `create_sales_order` or `upsert_customer` is built again from
//! Salesforce, so a fixed ProductCode or Account name is picked up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use db::Db;
use ledger::{Currency, Direction, Ledger};
use serde_json::{Map, Value as Json, json};

use crate::agent_contract::{
    self as contract, CashReceipt, CreateSalesOrder, CustomerResult, ImportCashReceipts,
    InvoicesResult, ReadChanges, ReceiptsResult, SalesOrderResult, UpsertCustomer, kind as cmd,
};
use crate::agent_queue;
use crate::cursor::{Cursors, Position};
use crate::flows::SalesforceSync;
use crate::jobs::{BoxFuture, Handler, Job, JobError, Jobs, NewJob, Registry};
use crate::objects::SageLine;
use crate::q2c::{LedgerAccounts, ar_entry, ledger_error, sf_error, sf_id, storage, to_minor};
use crate::review::Review;
use crate::salesforce::Record;
use crate::xref::{Link, Linked, Xref};

/// Cross-reference objects: an Account is a customer, an Opportunity its sales order.
const ACCOUNT: &str = "Account";
const OPPORTUNITY: &str = "Opportunity";
/// Cross-reference object: a gateway payment → the check number of its cash receipts.
const PAYMENT: &str = "Payment";
/// The cursor's object in `sync_cursors` (system = the line).
const INVOICES: &str = "invoices";
/// The cursor's object for cash receipts (lines that apply payments).
const RECEIPTS: &str = "receipts";
/// Separates an idempotency key's root from a re-issue's suffix.
const REISSUE: char = '~';

/// The job kinds of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds {
    pub closed_won: &'static str,
    pub pull: &'static str,
    pub payment: &'static str,
    pub agent_result: &'static str,
}

/// What a line can do through cashloop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Gateway payments become `import_cash_receipts`; without it they go to review.
    pub apply_payments: bool,
    /// The longest customer number the line keeps (Sage 100's `CustomerNo` 20; BusinessWorks'
    /// A/R customer number 10): a derived number is cut to it, since Sage refuses, not cuts.
    pub customer_no_max: usize,
}

/// The agent-backed lines.
pub const LINES: [SageLine; 2] = [SageLine::Sage100, SageLine::BusinessWorks];

/// `sage_system` of the cross-reference, the cursor's system and the prefix of job kinds and
/// command keys. `None` for a line that is not agent-backed.
pub const fn system(line: SageLine) -> Option<&'static str> {
    match line {
        SageLine::Sage100 => Some("sage100"),
        SageLine::BusinessWorks => Some("businessworks"),
        SageLine::Intacct | SageLine::X3 => None,
    }
}

/// The job kinds of an agent-backed line.
pub const fn kinds(line: SageLine) -> Option<Kinds> {
    match line {
        SageLine::Sage100 => Some(Kinds {
            closed_won: "sage100.closed_won",
            pull: "sage100.pull",
            payment: "sage100.payment",
            agent_result: "sage100.agent_result",
        }),
        SageLine::BusinessWorks => Some(Kinds {
            closed_won: "businessworks.closed_won",
            pull: "businessworks.pull",
            payment: "businessworks.payment",
            agent_result: "businessworks.agent_result",
        }),
        SageLine::Intacct | SageLine::X3 => None,
    }
}

pub const fn capabilities(line: SageLine) -> Capabilities {
    match line {
        SageLine::BusinessWorks => Capabilities {
            apply_payments: false,
            customer_no_max: crate::businessworks::layout::width::CUSTOMER_NO,
        },
        _ => Capabilities {
            apply_payments: true,
            customer_no_max: 20,
        },
    }
}

fn line_name(line: SageLine) -> &'static str {
    match line {
        SageLine::Sage100 => "Sage 100",
        SageLine::BusinessWorks => "Sage BusinessWorks",
        SageLine::Intacct => "Sage Intacct",
        SageLine::X3 => "Sage X3",
    }
}

/// How the loop works for one installation.
#[derive(Clone, Debug)]
pub struct AgentLoopConfig {
    pub line: SageLine,
    /// The `[[agents]]` name commands are addressed to.
    pub agent: String,
    /// `ARDivisionNo` of customers made (BusinessWorks: `"00"`).
    pub ar_division_no: String,
    /// The installation's currency: Sage 100 and BusinessWorks keep one.
    pub currency: Currency,
    /// Ledger accounts per currency (the installation's currency must be there).
    pub ledger: HashMap<Currency, LedgerAccounts>,
    /// `max_rows` of each read.
    pub max_rows: u32,
}

/// Queues the `{line}.agent_result` job of a finished command, once per command (the agent
/// API calls it after every result, also a re-sent one, so a crash between recording the
/// result and queueing the job heals when the agent sends it again).
pub async fn queue_result(
    jobs: &Jobs,
    line: SageLine,
    command_id: i64,
) -> crate::jobs::Result<Option<i64>> {
    let Some(k) = kinds(line) else {
        return Ok(None);
    };
    jobs.enqueue(
        NewJob::new(k.agent_result, json!({"command_id": command_id}))
            .dedupe(format!("{}:{command_id}", k.agent_result)),
    )
    .await
}

/// Queues the line's payment job for every gateway payment change on an Opportunity, in the
/// payment's own transaction (the Intacct loop's observer with this line's kind).
pub fn payment_jobs(line: SageLine) -> Option<crate::q2c::PaymentJobs> {
    kinds(line).map(|k| crate::q2c::PaymentJobs::of_kind(k.payment))
}

/// What a Closed Won run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClosedWonStep {
    /// The customer command was queued (the order follows its result).
    CustomerQueued { command_id: i64 },
    /// The customer was known: the order command was queued.
    OrderQueued { command_id: i64 },
    /// The Opportunity has its order already.
    Ordered { sales_order_no: String },
}

/// A command as the loop reads it back (with what `agent_queue::get` leaves out).
#[derive(Clone, Debug)]
struct StoredCommand {
    id: i64,
    agent: String,
    kind: String,
    payload: Json,
    key: String,
    status: String,
    result: Option<Json>,
    error: Option<String>,
    created_ms: i64,
}

/// The invoice facts the loop keeps on the order's link (`last_values.invoices`): what the
/// payment allocation and the Opportunity's fields are computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    number: String,
    date: String,
    total: i64,
    balance: i64,
}

fn known_invoices(link: &Link) -> Vec<Known> {
    let mut out: Vec<Known> = link
        .last_values
        .as_ref()
        .and_then(|v| v.get("invoices"))
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(number, v)| Known {
                    number: number.clone(),
                    date: v
                        .get("date")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    total: v.get("total").and_then(Json::as_i64).unwrap_or(0),
                    balance: v.get("balance").and_then(Json::as_i64).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    // Oldest first: the allocation order.
    out.sort_by(|a, b| (&a.date, &a.number).cmp(&(&b.date, &b.number)));
    out
}

fn link_value<'a>(link: &'a Link, field: &str) -> Option<&'a str> {
    link.last_values
        .as_ref()
        .and_then(|v| v.get(field))
        .and_then(Json::as_str)
}

fn payment_status(invoices: &[Known]) -> &'static str {
    if invoices.iter().all(|i| i.balance <= 0) {
        "Paid"
    } else if invoices.iter().all(|i| i.balance >= i.total) {
        "Unpaid"
    } else {
        "Partially Paid"
    }
}

fn invoice_status(invoices: &[Known]) -> &'static str {
    match payment_status(invoices) {
        "Paid" => "Paid",
        "Unpaid" => "Open",
        _ => "Partly Paid",
    }
}

fn amount_text(minor: i64, currency: Currency) -> String {
    crate::q2c::from_minor(minor, currency).to_string()
}

/// A customer number from free text: uppercase ASCII alphanumerics, at most `max`.
pub fn customer_no_from(text: &str, max: usize) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(max)
        .collect()
}

/// The `n`th candidate (n ≥ 2) when `base` is taken: the base cut to leave room for `n`
/// within `max`.
fn numbered(base: &str, n: u32, max: usize) -> String {
    let suffix = n.to_string();
    let keep = max.saturating_sub(suffix.len());
    format!("{}{suffix}", base.chars().take(keep).collect::<String>())
}

/// The check number of a gateway payment's cash receipts: `CL` and 8 hex digits of the
/// payment id's SHA-256 (Sage 100's CheckNo holds 10 characters; the payment id is in the
/// receipt's comment for people).
fn check_no_for(payment_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(payment_id.as_bytes());
    format!("CL{}", hex::encode_upper(&h[..4]))
}

/// The root of an idempotency key (without re-issue suffixes).
fn key_root(key: &str) -> &str {
    key.split(REISSUE).next().unwrap_or(key)
}

fn yyyymmdd(date: NaiveDate) -> String {
    date.format("%Y%m%d").to_string()
}

fn parse_yyyymmdd(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d").ok()
}

/// `upsert_customer` for an Account: its name and billing address, cut to Sage 100's field
/// lengths (a longer value is refused by Sage, not cut there).
fn customer_payload(
    account_id: &str,
    account: &Record,
    name: &str,
    ar_division_no: String,
    customer_no: String,
) -> UpsertCustomer {
    let text = |f: &str| {
        account
            .get_str(f)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    UpsertCustomer {
        salesforce_id: account_id.to_owned(),
        ar_division_no,
        customer_no,
        customer_name: name.chars().take(30).collect(),
        address_line1: text("BillingStreet")
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(30)
            .collect(),
        city: text("BillingCity").chars().take(20).collect(),
        state: text("BillingState").chars().take(2).collect(),
        zip_code: text("BillingPostalCode").chars().take(10).collect(),
        country_code: text("BillingCountry")
            .chars()
            .filter(char::is_ascii_alphabetic)
            .take(3)
            .collect::<String>()
            .to_ascii_uppercase(),
        telephone_no: text("Phone").chars().take(17).collect(),
        email_address: String::new(),
    }
}

/// The flows between Salesforce, an agent-backed Sage line and the ledger.
pub struct AgentLoop {
    db: Db,
    jobs: Jobs,
    xref: Xref,
    review: Review,
    cursors: Cursors,
    salesforce: SalesforceSync,
    ledger: Ledger,
    config: AgentLoopConfig,
    system: &'static str,
    kinds: Kinds,
}

impl std::fmt::Debug for AgentLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLoop")
            .field("line", &self.config.line)
            .field("agent", &self.config.agent)
            .finish_non_exhaustive()
    }
}

impl AgentLoop {
    /// `None` when `config.line` is not an agent-backed line.
    pub fn new(
        db: Db,
        jobs: Jobs,
        salesforce: SalesforceSync,
        ledger: Ledger,
        config: AgentLoopConfig,
    ) -> Option<AgentLoop> {
        Some(AgentLoop {
            system: system(config.line)?,
            kinds: kinds(config.line)?,
            xref: Xref::new(db.clone()),
            review: Review::new(db.clone()),
            cursors: Cursors::new(db.clone()),
            db,
            jobs,
            salesforce,
            ledger,
            config,
        })
    }

    pub fn config(&self) -> &AgentLoopConfig {
        &self.config
    }

    pub fn kinds(&self) -> Kinds {
        self.kinds
    }

    /// Handlers of the line's kinds, Salesforce events and pulled Opportunity changes.
    /// Register one Sage line's loop only: they answer the same Salesforce events.
    pub fn register_shared(me: Arc<AgentLoop>, registry: Registry) -> Registry {
        let k = me.kinds;
        registry
            .register(k.closed_won, Arc::new(AgentHandler(me.clone())))
            .register(k.pull, Arc::new(AgentHandler(me.clone())))
            .register(k.payment, Arc::new(AgentHandler(me.clone())))
            .register(k.agent_result, Arc::new(AgentHandler(me.clone())))
            .register("salesforce.event", Arc::new(AgentHandler(me.clone())))
            .register(
                &crate::flows::changed_kind("Opportunity"),
                Arc::new(AgentHandler(me)),
            )
    }

    /// Runs one job of the loop's kinds.
    pub async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let k = self.kinds;
        match job.kind.as_str() {
            kind if kind == k.closed_won => self
                .closed_won(job.text("opportunity_id")?)
                .await
                .map(|_| ()),
            kind if kind == k.pull => self.pull(&format!("job{}", job.id)).await.map(|_| ()),
            kind if kind == k.payment => self.payment(&job.payload).await,
            kind if kind == k.agent_result => {
                let id = job
                    .payload
                    .get("command_id")
                    .and_then(Json::as_i64)
                    .ok_or_else(|| JobError::Permanent("command_id is missing".into()))?;
                // A dead job brought back by a person: a failed command is issued again.
                let retried = self.failed_before(job.id).await?;
                self.agent_result(id, retried).await
            }
            "salesforce.event" => match crate::deals::closed_won_event(&job.payload)? {
                Some(id) => self.queue_closed_won(id).await.map(|_| ()),
                None => Ok(()),
            },
            kind if kind == crate::flows::changed_kind("Opportunity") => {
                let id = job.text("id")?;
                if crate::deals::won_unlinked(&self.db, &self.xref, self.system, id).await? {
                    self.queue_closed_won(id).await?;
                }
                Ok(())
            }
            other => Err(JobError::Permanent(format!(
                "the {} loop does not handle {other}",
                line_name(self.config.line)
            ))),
        }
    }

    /// Queues Closed Won for an Opportunity (once per Opportunity).
    pub async fn queue_closed_won(&self, opportunity_id: &str) -> Result<Option<i64>, JobError> {
        let k = self.kinds.closed_won;
        self.jobs
            .enqueue(
                NewJob::new(k, json!({"opportunity_id": opportunity_id}))
                    .dedupe(format!("{k}:{opportunity_id}")),
            )
            .await
            .map_err(storage)
    }

    /// Queues the line's pull for the schedule's tick `slot`.
    pub async fn queue_pull(&self, slot: i64) -> Result<(), JobError> {
        self.jobs
            .enqueue_tick(self.kinds.pull, "line", [self.system], slot)
            .await
            .map_err(storage)
    }

    /// Queues pulls every `interval` until `stop` turns true.
    pub async fn run_schedule(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::jobs::run_on_ticks(interval, stop, |slot| {
            let me = self.clone();
            async move {
                if let Err(e) = me.queue_pull(slot).await {
                    tracing::warn!(error = ?e, line = me.system, "queueing the agent pull failed");
                }
            }
        })
        .await
    }

    fn accounts(&self) -> Result<&LedgerAccounts, JobError> {
        let c = self.config.currency;
        self.config.ledger.get(&c).ok_or_else(|| {
            JobError::Permanent(format!(
                "currency: no ledger accounts for {c} under [sync.{}.ledger.{c}]",
                self.system
            ))
        })
    }

    async fn enqueue_command(
        &self,
        kind: &str,
        payload: &Json,
        key: &str,
    ) -> Result<i64, JobError> {
        agent_queue::enqueue(&self.db, &self.config.agent, kind, payload, key)
            .await
            .map_err(storage)
    }

    async fn sf_one(&self, soql: &str, what: &str) -> Result<Record, JobError> {
        let rows = self
            .salesforce
            .client()
            .query_collect(soql)
            .await
            .map_err(|e| sf_error(&e))?;
        rows.into_iter()
            .next()
            .ok_or_else(|| JobError::Permanent(format!("{what} was not found in Salesforce")))
    }

    async fn write_back(
        &self,
        object: &str,
        id: &str,
        fields: Map<String, Json>,
    ) -> Result<(), JobError> {
        crate::q2c::write_back_now(&self.salesforce, &self.jobs, object, id, fields).await
    }

    async fn link(
        &self,
        object: &str,
        salesforce_id: &str,
        division: &str,
        sage_id: &str,
        last_values: Option<Json>,
    ) -> Result<Linked, JobError> {
        self.xref
            .link(&Link {
                object: object.into(),
                salesforce_id: salesforce_id.into(),
                sage_system: self.system.into(),
                sage_entity: division.into(),
                sage_id: sage_id.into(),
                last_values,
            })
            .await
            .map_err(storage)
    }

    /// The Opportunity, checked: (Opportunity, AccountId, CloseDate).
    async fn won_opportunity(
        &self,
        opp_id: &str,
    ) -> Result<Option<(Record, String, NaiveDate)>, JobError> {
        let opp = self
            .sf_one(
                &format!(
                    "SELECT Id, Name, StageName, IsWon, CloseDate, AccountId, Amount, CurrencyIsoCode \
                     FROM Opportunity WHERE Id = '{opp_id}'"
                ),
                &format!("Opportunity {opp_id}"),
            )
            .await?;
        let won = opp.get("IsWon").and_then(|v| v.as_bool()).unwrap_or(false)
            || opp.get_str("StageName") == Some("Closed Won");
        if !won {
            return Ok(None);
        }
        if let Some(c) = opp.get_str("CurrencyIsoCode")
            && !c.is_empty()
            && c != self.config.currency.code()
        {
            return Err(JobError::Permanent(format!(
                "Opportunity {opp_id} is in {c}; {} here keeps {} only",
                line_name(self.config.line),
                self.config.currency
            )));
        }
        let account_id = opp
            .get_str("AccountId")
            .ok_or_else(|| JobError::Permanent(format!("Opportunity {opp_id}: AccountId is empty")))
            .and_then(|a| sf_id(a, "AccountId"))?;
        let close_date = opp
            .get_str("CloseDate")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                JobError::Permanent(format!("Opportunity {opp_id}: CloseDate is not a date"))
            })?;
        Ok(Some((opp, account_id, close_date)))
    }

    /// The whole Closed Won step for one Opportunity; see the module docs. `None` when the
    /// Opportunity is not won.
    pub async fn closed_won(
        &self,
        opportunity_id: &str,
    ) -> Result<Option<ClosedWonStep>, JobError> {
        let opp_id = sf_id(opportunity_id, "opportunity_id")?;
        if let Some(l) = self
            .xref
            .by_salesforce(OPPORTUNITY, &opp_id, self.system)
            .await
            .map_err(storage)?
        {
            return Ok(Some(ClosedWonStep::Ordered {
                sales_order_no: l.sage_id,
            }));
        }
        let Some((_, account_id, close_date)) = self.won_opportunity(&opp_id).await? else {
            tracing::info!(opportunity = %opp_id, line = self.system, "not Closed Won: no order");
            return Ok(None);
        };
        // Refused now, before anything is made in Sage: the invoice will need them.
        self.accounts()?;
        let lines = self.order_lines(&opp_id).await?;

        let known = self
            .xref
            .by_salesforce(ACCOUNT, &account_id, self.system)
            .await
            .map_err(storage)?;
        if let Some(l) = &known
            && l.last_values.as_ref().and_then(|v| v.get("confirmed")) == Some(&json!(true))
        {
            let command_id = self
                .queue_order(&opp_id, &l.sage_entity, &l.sage_id, close_date, lines, None)
                .await?;
            return Ok(Some(ClosedWonStep::OrderQueued { command_id }));
        }
        let (account, name) = self.read_account(&account_id).await?;
        let (division, customer_no) = match known {
            // Reserved by an earlier run whose customer is not confirmed yet: the same number.
            Some(l) => (l.sage_entity, l.sage_id),
            None => {
                self.reserve_customer_no(&account_id, &account, &name)
                    .await?
            }
        };
        let payload = customer_payload(&account_id, &account, &name, division, customer_no);
        // Per Opportunity: the result continues this Opportunity's order (the key says which).
        let key = format!(
            "{}:{}:{account_id}:{opp_id}",
            self.system,
            cmd::UPSERT_CUSTOMER
        );
        let command_id = self
            .enqueue_command(cmd::UPSERT_CUSTOMER, &json!(payload), &key)
            .await?;
        tracing::info!(opportunity = %opp_id, account = %account_id, command = command_id, line = self.system, "customer queued for the agent");
        Ok(Some(ClosedWonStep::CustomerQueued { command_id }))
    }

    /// The Account and its (non-empty) name.
    async fn read_account(&self, account_id: &str) -> Result<(Record, String), JobError> {
        let account = self
            .sf_one(
                &format!(
                    "SELECT Id, Name, AccountNumber, BillingStreet, BillingCity, BillingState, \
                     BillingPostalCode, BillingCountry, Phone FROM Account WHERE Id = '{account_id}'"
                ),
                &format!("Account {account_id}"),
            )
            .await?;
        let name = account
            .get_str("Name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| JobError::Permanent(format!("Account {account_id}: Name is empty")))?
            .to_owned();
        Ok((account, name))
    }

    /// A customer number for a new Account, reserved in the cross-reference (unconfirmed
    /// until the agent's result), so two Accounts never get the same one.
    async fn reserve_customer_no(
        &self,
        account_id: &str,
        account: &Record,
        name: &str,
    ) -> Result<(String, String), JobError> {
        let division = self.config.ar_division_no.clone();
        let max = capabilities(self.config.line).customer_no_max;
        let base = account
            .get_str("AccountNumber")
            .map(|n| customer_no_from(n, max))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| customer_no_from(name, max));
        if base.is_empty() {
            return Err(JobError::Permanent(format!(
                "Account {account_id}: neither AccountNumber nor Name has letters or digits for a customer number"
            )));
        }
        for n in 1..=99u32 {
            let candidate = if n == 1 {
                base.clone()
            } else {
                numbered(&base, n, max)
            };
            match self
                .link(
                    ACCOUNT,
                    account_id,
                    &division,
                    &candidate,
                    Some(json!({"confirmed": false})),
                )
                .await?
            {
                Linked::Created | Linked::Existing => return Ok((division, candidate)),
                // Raced with another run for this Account: its reservation stands.
                Linked::Conflict(other) if other.salesforce_id == account_id => {
                    return Ok((other.sage_entity, other.sage_id));
                }
                Linked::Conflict(_) => continue,
            }
        }
        Err(JobError::Permanent(format!(
            "Account {account_id}: no free customer number from {base:?} (99 tried)"
        )))
    }

    /// Queues `create_sales_order` for the Opportunity (keyed by its id; `reissue` adds the
    /// suffix of a re-issued command).
    async fn queue_order(
        &self,
        opp_id: &str,
        division: &str,
        customer_no: &str,
        close_date: NaiveDate,
        lines: Vec<contract::OrderLine>,
        reissue: Option<&str>,
    ) -> Result<i64, JobError> {
        let payload = CreateSalesOrder {
            salesforce_id: opp_id.to_owned(),
            ar_division_no: division.to_owned(),
            customer_no: customer_no.to_owned(),
            customer_po_no: String::new(),
            order_date: yyyymmdd(close_date),
            lines,
        };
        let mut key = format!("{}:{}:{opp_id}", self.system, cmd::CREATE_SALES_ORDER);
        if let Some(s) = reissue {
            key.push_str(s);
        }
        let id = self
            .enqueue_command(cmd::CREATE_SALES_ORDER, &json!(payload), &key)
            .await?;
        tracing::info!(opportunity = %opp_id, command = id, line = self.system, "sales order queued for the agent");
        Ok(id)
    }

    /// The order for an Opportunity whose customer is known, read again from Salesforce.
    async fn order_for(
        &self,
        opp_id: &str,
        division: &str,
        customer_no: &str,
        reissue: Option<&str>,
    ) -> Result<Option<i64>, JobError> {
        let Some((_, _, close_date)) = self.won_opportunity(opp_id).await? else {
            tracing::info!(opportunity = %opp_id, "no longer Closed Won: no order");
            return Ok(None);
        };
        let lines = self.order_lines(opp_id).await?;
        self.queue_order(opp_id, division, customer_no, close_date, lines, reissue)
            .await
            .map(Some)
    }

    /// One order line per OpportunityLineItem: item code = Product2.ProductCode, quantity,
    /// unit price less the discount in minor units.
    async fn order_lines(&self, opp_id: &str) -> Result<Vec<contract::OrderLine>, JobError> {
        let currency = self.config.currency;
        let mut lines = Vec::new();
        for l in crate::deals::deal_lines(&self.salesforce, opp_id).await? {
            let code = l.product_code().ok_or_else(|| {
                JobError::Permanent(format!(
                    "{}: the product has no ProductCode (the item code)",
                    l.field("Product2Id")
                ))
            })?;
            lines.push(contract::OrderLine {
                item_code: code.to_owned(),
                quantity: l.quantity.normalize().to_string(),
                unit_price_minor: to_minor(l.net_unit_price, currency, &l.field("UnitPrice"))?,
            });
        }
        if lines.is_empty() {
            return Err(JobError::Permanent(format!(
                "Opportunity {opp_id}: no line items to order"
            )));
        }
        Ok(lines)
    }

    async fn command(&self, id: i64) -> Result<StoredCommand, JobError> {
        // `agent_queue::get` leaves out the payload and key, which the continuation needs.
        const SQL: &str = "SELECT id, agent, kind, payload, idempotency_key, status, result, error, created_ms \
             FROM agent_commands WHERE id = $1";
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
        );
        let row: Option<Row> = db::on_pool!(&self.db, |c| sqlx::query_as(SQL)
            .bind(id)
            .fetch_optional(c)
            .await)
        .map_err(storage)?;
        let r = row.ok_or_else(|| JobError::Permanent(format!("there is no command {id}")))?;
        let parse = |t: &str, what: &str| {
            serde_json::from_str::<Json>(t)
                .map_err(|e| JobError::Permanent(format!("command {id} {what}: {e}")))
        };
        Ok(StoredCommand {
            id: r.0,
            agent: r.1,
            kind: r.2,
            payload: parse(&r.3, "payload")?,
            key: r.4,
            status: r.5,
            result: r.6.as_deref().map(|t| parse(t, "result")).transpose()?,
            error: r.7,
            created_ms: r.8,
        })
    }

    /// Whether the last `kind` read failed and its result job is not settled yet (dead, or
    /// about to run): one error queue entry, not one per schedule tick, while the agent
    /// cannot read. Retrying the job re-issues the read; resolving it lets the schedule go on.
    async fn read_waits_for_a_person(&self, kind: &str) -> Result<bool, JobError> {
        const LAST: &str = "SELECT id, status FROM agent_commands WHERE agent = $1 AND kind = $2 \
             ORDER BY id DESC LIMIT 1";
        const JOB: &str = "SELECT status FROM sync_jobs WHERE dedupe_key = $1";
        let last: Option<(i64, String)> = db::on_pool!(&self.db, |c| sqlx::query_as(LAST)
            .bind(&self.config.agent)
            .bind(kind)
            .fetch_optional(c)
            .await)
        .map_err(storage)?;
        let Some((id, status)) = last else {
            return Ok(false);
        };
        if status != "failed" {
            return Ok(false);
        }
        let key = format!("{}:{id}", self.kinds.agent_result);
        let job: Option<String> = db::on_pool!(&self.db, |c| sqlx::query_scalar(JOB)
            .bind(&key)
            .fetch_optional(c)
            .await)
        .map_err(storage)?;
        // No job (pruned, or not queued yet): not held up, so reads never stop for good.
        Ok(matches!(
            job.as_deref(),
            Some("dead" | "pending" | "running")
        ))
    }

    /// Whether job `job_id` went to the error queue before (an attempt failed permanently):
    /// running again, a person retried it. The attempt history is kept whatever happens
    /// later, so a retryable hiccup during the retry does not hide it.
    async fn failed_before(&self, job_id: i64) -> Result<bool, JobError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM sync_job_attempts WHERE job_id = $1 AND outcome = 'permanent'";
        let n: i64 = db::on_pool!(&self.db, |c| sqlx::query_scalar(SQL)
            .bind(job_id)
            .fetch_one(c)
            .await)
        .map_err(storage)?;
        Ok(n > 0)
    }

    /// Whether a `kind` command of this line's agent is waiting or being executed.
    async fn in_flight(&self, kind: &str) -> Result<bool, JobError> {
        const SQL: &str = "SELECT COUNT(*) FROM agent_commands WHERE agent = $1 AND kind = $2 \
             AND status IN ('pending', 'leased')";
        let n: i64 = db::on_pool!(&self.db, |c| sqlx::query_scalar(SQL)
            .bind(&self.config.agent)
            .bind(kind)
            .fetch_one(c)
            .await)
        .map_err(storage)?;
        Ok(n > 0)
    }

    /// Continues the flow with a finished command's outcome; `retried` when a person brought
    /// the job back from the error queue (a failed command is then issued again).
    pub async fn agent_result(&self, command_id: i64, retried: bool) -> Result<(), JobError> {
        let c = self.command(command_id).await?;
        if c.agent != self.config.agent {
            return Err(JobError::Permanent(format!(
                "command {command_id} is agent {:?}'s, not this line's ({:?})",
                c.agent, self.config.agent
            )));
        }
        match c.status.as_str() {
            "done" => {}
            "failed" if retried => return self.reissue(&c).await,
            "failed" => {
                let text = c.error.as_deref().unwrap_or("no error text");
                return Err(JobError::Permanent(format!(
                    "{} agent: {} failed: {text}",
                    line_name(self.config.line),
                    c.kind
                )));
            }
            other => {
                return Err(JobError::Retryable(format!(
                    "command {command_id} is {other}, not finished"
                )));
            }
        }
        let result = c.result.clone().unwrap_or(Json::Null);
        let bad = |e: serde_json::Error| {
            JobError::Permanent(format!("command {command_id} ({}) result: {e}", c.kind))
        };
        let bad_payload = |e: serde_json::Error| {
            JobError::Permanent(format!("command {command_id} ({}) payload: {e}", c.kind))
        };
        match c.kind.as_str() {
            cmd::UPSERT_CUSTOMER => {
                let r: CustomerResult = serde_json::from_value(result).map_err(bad)?;
                let p: UpsertCustomer =
                    serde_json::from_value(c.payload.clone()).map_err(bad_payload)?;
                self.customer_done(&c, &p, &r).await
            }
            cmd::CREATE_SALES_ORDER => {
                let r: SalesOrderResult = serde_json::from_value(result).map_err(bad)?;
                let p: CreateSalesOrder =
                    serde_json::from_value(c.payload.clone()).map_err(bad_payload)?;
                self.order_done(&p, &r).await
            }
            cmd::READ_CHANGED_INVOICES => {
                let r: InvoicesResult = serde_json::from_value(result).map_err(bad)?;
                self.invoices_read(&c, &r).await
            }
            cmd::READ_CASH_RECEIPTS => {
                let r: ReceiptsResult = serde_json::from_value(result).map_err(bad)?;
                self.receipts_read(&c, &r).await
            }
            other => {
                // Receipts imported (the balances come back with the next invoice read), or a
                // read this loop does not issue.
                tracing::info!(
                    command = command_id,
                    kind = other,
                    line = self.system,
                    "agent command done"
                );
                Ok(())
            }
        }
    }

    /// A failed command again, under a new key (the old one is finished forever): one
    /// re-issue per failed command, so a replayed retry queues nothing more.
    async fn reissue(&self, c: &StoredCommand) -> Result<(), JobError> {
        let suffix = format!("{REISSUE}{}", c.id);
        let key = format!("{}{suffix}", key_root(&c.key));
        let id = if c.kind == cmd::CREATE_SALES_ORDER {
            // Built again from Salesforce: the fix may have been made there.
            let p: CreateSalesOrder = serde_json::from_value(c.payload.clone())
                .map_err(|e| JobError::Permanent(format!("command {} payload: {e}", c.id)))?;
            match self
                .order_for(
                    &p.salesforce_id,
                    &p.ar_division_no,
                    &p.customer_no,
                    Some(&key[key_root(&c.key).len()..]),
                )
                .await?
            {
                Some(id) => id,
                None => return Ok(()),
            }
        } else if c.kind == cmd::UPSERT_CUSTOMER {
            // The Account read again (a name or address fixed there), the same number.
            let p: UpsertCustomer = serde_json::from_value(c.payload.clone())
                .map_err(|e| JobError::Permanent(format!("command {} payload: {e}", c.id)))?;
            let (account, name) = self.read_account(&p.salesforce_id).await?;
            let again = customer_payload(
                &p.salesforce_id,
                &account,
                &name,
                p.ar_division_no,
                p.customer_no,
            );
            self.enqueue_command(&c.kind, &json!(again), &key).await?
        } else {
            self.enqueue_command(&c.kind, &c.payload, &key).await?
        };
        tracing::info!(failed = c.id, command = id, kind = %c.kind, line = self.system, "failed agent command issued again");
        Ok(())
    }

    async fn customer_done(
        &self,
        c: &StoredCommand,
        p: &UpsertCustomer,
        r: &CustomerResult,
    ) -> Result<(), JobError> {
        let account_id = sf_id(&p.salesforce_id, "salesforce_id")?;
        let confirmed = json!({"confirmed": true});
        match self
            .link(
                ACCOUNT,
                &account_id,
                &r.ar_division_no,
                &r.customer_no,
                Some(confirmed.clone()),
            )
            .await?
        {
            Linked::Created | Linked::Existing => {}
            Linked::Conflict(other) => {
                return Err(JobError::Permanent(format!(
                    "the cross-reference links Account {account_id} / customer {}-{} elsewhere ({} ⇄ {}-{})",
                    r.ar_division_no,
                    r.customer_no,
                    other.salesforce_id,
                    other.sage_entity,
                    other.sage_id
                )));
            }
        }
        self.xref
            .set_last_values(ACCOUNT, &account_id, self.system, &confirmed)
            .await
            .map_err(storage)?;
        let mut ids = Map::new();
        ids.insert("Sage_Customer_Id__c".into(), json!(r.customer_no));
        self.write_back("Account", &account_id, ids).await?;
        // The key names the Opportunity waiting for this customer.
        let opp_id = key_root(&c.key)
            .rsplit(':')
            .next()
            .filter(|_| key_root(&c.key).starts_with(&format!("{}:", self.system)))
            .ok_or_else(|| JobError::Permanent(format!("command {}: key {:?}", c.id, c.key)))?;
        let opp_id = sf_id(opp_id, "key")?;
        if self
            .xref
            .by_salesforce(OPPORTUNITY, &opp_id, self.system)
            .await
            .map_err(storage)?
            .is_some()
        {
            return Ok(());
        }
        self.order_for(&opp_id, &r.ar_division_no, &r.customer_no, None)
            .await
            .map(|_| ())
    }

    async fn order_done(&self, p: &CreateSalesOrder, r: &SalesOrderResult) -> Result<(), JobError> {
        let opp_id = sf_id(&p.salesforce_id, "salesforce_id")?;
        let account_id = self
            .xref
            .by_sage(self.system, ACCOUNT, &p.ar_division_no, &p.customer_no)
            .await
            .map_err(storage)?
            .map(|l| l.salesforce_id);
        match self
            .link(
                OPPORTUNITY,
                &opp_id,
                &p.ar_division_no,
                &r.sales_order_no,
                Some(json!({"account_id": account_id, "customer_no": p.customer_no})),
            )
            .await?
        {
            Linked::Created | Linked::Existing => {}
            Linked::Conflict(other) => {
                return Err(JobError::Permanent(format!(
                    "the cross-reference links Opportunity {opp_id} / sales order {} elsewhere ({} ⇄ {})",
                    r.sales_order_no, other.salesforce_id, other.sage_id
                )));
            }
        }
        let mut fields = Map::new();
        fields.insert("Sage_Order_Number__c".into(), json!(r.sales_order_no));
        if r.action == "created" {
            fields.insert("Sage_Invoice_Status__c".into(), json!("Ordered"));
        }
        self.write_back("Opportunity", &opp_id, fields).await?;
        tracing::info!(opportunity = %opp_id, order = %r.sales_order_no, action = %r.action, line = self.system, "Closed Won ordered");
        Ok(())
    }

    /// Queues the next invoice read, unless one is in flight. `tag` makes the key unique
    /// per pull job (the cursor alone would repeat when nothing changed). Answers the
    /// command id, `None` when one was in flight.
    pub async fn pull(&self, tag: &str) -> Result<Option<i64>, JobError> {
        if self
            .read_waits_for_a_person(cmd::READ_CHANGED_INVOICES)
            .await?
        {
            tracing::info!(
                line = self.system,
                "the last invoice read failed and is in the error queue: none queued until it is retried or resolved"
            );
            return Ok(None);
        }
        if self.in_flight(cmd::READ_CHANGED_INVOICES).await? {
            tracing::info!(
                line = self.system,
                "an invoice read is in flight: none queued"
            );
            return Ok(None);
        }
        let since = self
            .cursors
            .get(self.system, INVOICES)
            .await
            .map_err(storage)?
            .map(|p| p.last_id);
        let id = self.queue_read(since, tag).await?;
        // Receipts entered in Sage by hand (a cheque), on lines whose receipts we can read.
        if capabilities(self.config.line).apply_payments
            && !self.in_flight(cmd::READ_CASH_RECEIPTS).await?
            && !self
                .read_waits_for_a_person(cmd::READ_CASH_RECEIPTS)
                .await?
        {
            let since = self
                .cursors
                .get(self.system, RECEIPTS)
                .await
                .map_err(storage)?
                .map(|p| p.last_id);
            self.queue_receipts_read(since, tag).await?;
        }
        Ok(Some(id))
    }

    async fn queue_receipts_read(&self, since: Option<String>, tag: &str) -> Result<i64, JobError> {
        let key = format!(
            "{}:{}:{}:{tag}",
            self.system,
            cmd::READ_CASH_RECEIPTS,
            since.as_deref().unwrap_or("start")
        );
        let payload = ReadChanges {
            since,
            max_rows: self.config.max_rows,
        };
        self.enqueue_command(cmd::READ_CASH_RECEIPTS, &json!(payload), &key)
            .await
    }

    /// A cash receipts read: each receipt of a linked customer that is not one cashloop
    /// imported for a gateway payment (its check number is linked to the payment; the gateway
    /// booked that money at capture) is booked
    /// Dr cash / Cr AR once; the invoice balances it lowered come back with the invoice reads.
    async fn receipts_read(&self, c: &StoredCommand, r: &ReceiptsResult) -> Result<(), JobError> {
        let currency = self.config.currency;
        let accounts = self.accounts()?.clone();
        let mut booked = 0u64;
        for rec in &r.receipts {
            let ours = self
                .xref
                .by_sage(self.system, PAYMENT, &rec.ar_division_no, &rec.check_no)
                .await
                .map_err(storage)?
                .is_some();
            if rec.amount_minor <= 0
                || ours
                || crate::q2c::is_gateway_payment(&self.db, &rec.check_no).await?
            {
                continue;
            }
            let Some(customer) = self
                .xref
                .by_sage(self.system, ACCOUNT, &rec.ar_division_no, &rec.customer_no)
                .await
                .map_err(storage)?
            else {
                tracing::info!(customer = %rec.customer_no, deposit = %rec.deposit_no, line = self.system, "receipt of a customer cashloop does not know: skipped");
                continue;
            };
            let date = parse_yyyymmdd(&rec.deposit_date).ok_or_else(|| {
                JobError::Permanent(format!(
                    "receipt {} of deposit {}: DepositDate {:?} is not a date",
                    rec.check_no, rec.deposit_no, rec.deposit_date
                ))
            })?;
            let entry = ar_entry(
                &accounts.entity,
                currency,
                &format!(
                    "{}:receipt:{}:{}:{}:{}",
                    self.system, rec.ar_division_no, rec.deposit_no, rec.customer_no, rec.check_no
                ),
                date,
                rec.invoice_no.as_deref().filter(|i| !i.is_empty()),
                &format!(
                    "Receipt {} (deposit {}) entered in {} for customer {}-{}",
                    rec.check_no,
                    rec.deposit_no,
                    line_name(self.config.line),
                    rec.ar_division_no,
                    rec.customer_no
                ),
                &[
                    (
                        &accounts.cash,
                        Direction::Debit,
                        rec.amount_minor,
                        None,
                        None,
                    ),
                    (
                        &accounts.receivable,
                        Direction::Credit,
                        rec.amount_minor,
                        Some(&customer.salesforce_id),
                        rec.invoice_no.as_deref().filter(|i| !i.is_empty()),
                    ),
                ],
            )?;
            if !self
                .ledger
                .post(entry)
                .await
                .map_err(ledger_error)?
                .replayed
            {
                booked += 1;
            }
        }
        tracing::info!(
            line = self.system,
            receipts = r.receipts.len(),
            booked,
            "cash receipts read"
        );
        if let Some(next) = &r.next {
            let at = Utc
                .timestamp_millis_opt(c.created_ms)
                .single()
                .unwrap_or_else(Utc::now);
            self.cursors
                .advance(
                    self.system,
                    RECEIPTS,
                    &Position {
                        modified_at: at,
                        last_id: next.clone(),
                    },
                )
                .await
                .map_err(storage)?;
        }
        if r.more {
            self.queue_receipts_read(r.next.clone(), &format!("after{}", c.id))
                .await?;
        }
        Ok(())
    }

    async fn queue_read(&self, since: Option<String>, tag: &str) -> Result<i64, JobError> {
        let key = format!(
            "{}:{}:{}:{tag}",
            self.system,
            cmd::READ_CHANGED_INVOICES,
            since.as_deref().unwrap_or("start")
        );
        let payload = ReadChanges {
            since,
            max_rows: self.config.max_rows,
        };
        self.enqueue_command(cmd::READ_CHANGED_INVOICES, &json!(payload), &key)
            .await
    }

    /// An invoice read's result; see the module docs. An invoice that cannot be handled (a
    /// credit memo, amounts that do not add up) does not hold up the others nor the cursor:
    /// the job fails at the end naming it, and its retry handles this result again
    /// (idempotent).
    async fn invoices_read(&self, c: &StoredCommand, r: &InvoicesResult) -> Result<(), JobError> {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut failed: Vec<String> = Vec::new();
        for inv in &r.invoices {
            let Some(link) = self.invoice_link(inv).await? else {
                tracing::info!(invoice = %inv.invoice_no, order = ?inv.sales_order_no, line = self.system, "invoice of no linked Opportunity: skipped");
                continue;
            };
            match self.post_invoice(&link, inv).await {
                Ok(_) => {}
                Err(JobError::Permanent(m)) => {
                    tracing::warn!(invoice = %inv.invoice_no, error = %m, "invoice not posted");
                    failed.push(format!("invoice {}: {m}", inv.invoice_no));
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.remember(&link, inv, c.id).await?;
            touched.insert(link.salesforce_id.clone());
        }
        for opp_id in &touched {
            self.invoices_to_salesforce(opp_id).await?;
        }
        if let Some(next) = &r.next {
            let at = Utc
                .timestamp_millis_opt(c.created_ms)
                .single()
                .unwrap_or_else(Utc::now);
            // Keyed by the command's creation, so a later retry of an older result never
            // moves the cursor back.
            self.cursors
                .advance(
                    self.system,
                    INVOICES,
                    &Position {
                        modified_at: at,
                        last_id: next.clone(),
                    },
                )
                .await
                .map_err(storage)?;
        }
        if r.more {
            self.queue_read(r.next.clone(), &format!("after{}", c.id))
                .await?;
        }
        if !failed.is_empty() {
            let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
            return Err(JobError::Permanent(format!(
                "{} of {} invoices not posted: {}",
                failed.len(),
                r.invoices.len(),
                shown.join("; ")
            )));
        }
        Ok(())
    }

    /// The Opportunity link of an invoice: by its sales order, else by the Salesforce id Sage
    /// carried over.
    async fn invoice_link(&self, inv: &contract::Invoice) -> Result<Option<Link>, JobError> {
        if let Some(so) = inv.sales_order_no.as_deref().filter(|s| !s.is_empty())
            && let Some(l) = self
                .xref
                .by_sage(self.system, OPPORTUNITY, &inv.ar_division_no, so)
                .await
                .map_err(storage)?
        {
            return Ok(Some(l));
        }
        let Some(sf) = inv
            .salesforce_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| sf_id(s, "salesforce_id").ok())
        else {
            return Ok(None);
        };
        self.xref
            .by_salesforce(OPPORTUNITY, &sf, self.system)
            .await
            .map_err(storage)
    }

    /// Dr AR (total) / Cr revenue (sales and freight) / Cr tax, once per line and invoice.
    /// True when posted now.
    async fn post_invoice(&self, link: &Link, inv: &contract::Invoice) -> Result<bool, JobError> {
        let currency = self.config.currency;
        let accounts = self.accounts()?.clone();
        let revenue = inv.sales_minor.checked_add(inv.freight_minor);
        if inv.sales_minor <= 0
            || inv.sales_tax_minor < 0
            || inv.freight_minor < 0
            || revenue.and_then(|r| r.checked_add(inv.sales_tax_minor)) != Some(inv.total_minor)
        {
            return Err(JobError::Permanent(format!(
                "amounts sales {} + tax {} + freight {} / total {} are not an invoice the loop posts (credit memos are not handled)",
                inv.sales_minor, inv.sales_tax_minor, inv.freight_minor, inv.total_minor
            )));
        }
        let revenue = revenue.unwrap_or_default();
        let date = parse_yyyymmdd(&inv.invoice_date).ok_or_else(|| {
            JobError::Permanent(format!("InvoiceDate {:?} is not a date", inv.invoice_date))
        })?;
        let account_id = link_value(link, "account_id").unwrap_or(&link.salesforce_id);
        let mut legs = vec![
            (
                &accounts.receivable,
                Direction::Debit,
                inv.total_minor,
                Some(account_id),
                Some(inv.invoice_no.as_str()),
            ),
            (&accounts.revenue, Direction::Credit, revenue, None, None),
        ];
        if inv.sales_tax_minor > 0 {
            legs.push((
                &accounts.tax,
                Direction::Credit,
                inv.sales_tax_minor,
                None,
                None,
            ));
        }
        let entry = ar_entry(
            &accounts.entity,
            currency,
            &format!(
                "{}:invoice:{}:{}",
                self.system, inv.ar_division_no, inv.invoice_no
            ),
            date,
            Some(&inv.invoice_no),
            &format!(
                "{} invoice {} (order {}) for Opportunity {}",
                line_name(self.config.line),
                inv.invoice_no,
                link.sage_id,
                link.salesforce_id
            ),
            &legs,
        )?;
        let replayed = self
            .ledger
            .post(entry)
            .await
            .map_err(ledger_error)?
            .replayed;
        Ok(!replayed)
    }

    /// Keeps the invoice's date, total and open balance on the order's link, unless a later
    /// read (`read`: its command id; ids grow) left a newer balance there already.
    async fn remember(
        &self,
        link: &Link,
        inv: &contract::Invoice,
        read: i64,
    ) -> Result<(), JobError> {
        // Read again: an earlier invoice of this result may have changed it.
        let link = self
            .xref
            .by_salesforce(OPPORTUNITY, &link.salesforce_id, self.system)
            .await
            .map_err(storage)?
            .unwrap_or_else(|| link.clone());
        let mut values = link
            .last_values
            .as_ref()
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let invoices = values
            .entry("invoices")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| JobError::Permanent("the order link's invoices are corrupt".into()))?;
        let newer = invoices
            .get(&inv.invoice_no)
            .and_then(|v| v.get("read"))
            .and_then(Json::as_i64)
            .is_some_and(|stored| stored > read);
        if newer {
            return Ok(());
        }
        invoices.insert(
            inv.invoice_no.clone(),
            json!({"date": inv.invoice_date, "total": inv.total_minor, "balance": inv.balance_minor,
                   "read": read}),
        );
        self.xref
            .set_last_values(
                OPPORTUNITY,
                &link.salesforce_id,
                self.system,
                &Json::Object(values),
            )
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// Invoice numbers, status, open balance and payment status to the Opportunity.
    async fn invoices_to_salesforce(&self, opp_id: &str) -> Result<(), JobError> {
        let Some(link) = self
            .xref
            .by_salesforce(OPPORTUNITY, opp_id, self.system)
            .await
            .map_err(storage)?
        else {
            return Ok(());
        };
        let invoices = known_invoices(&link);
        if invoices.is_empty() {
            return Ok(());
        }
        let open: i64 = invoices.iter().map(|i| i.balance.max(0)).sum();
        let numbers = invoices
            .iter()
            .map(|i| i.number.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut fields = Map::new();
        fields.insert("Sage_Order_Number__c".into(), json!(link.sage_id));
        fields.insert("Sage_Invoice_Number__c".into(), json!(numbers));
        fields.insert(
            "Sage_Invoice_Status__c".into(),
            json!(invoice_status(&invoices)),
        );
        fields.insert(
            "Balance_Due__c".into(),
            json!(amount_text(open, self.config.currency)),
        );
        fields.insert("Payment_Status__c".into(), json!(payment_status(&invoices)));
        self.write_back("Opportunity", opp_id, fields).await
    }

    /// Lowers the kept balances by what a payment's receipts apply (once per payment), so a
    /// second payment before the next read is not allocated to the same open amount; the
    /// next read's balances replace these.
    async fn applied(
        &self,
        opp_id: &str,
        payment_id: &str,
        receipts: &[CashReceipt],
    ) -> Result<(), JobError> {
        let Some(link) = self
            .xref
            .by_salesforce(OPPORTUNITY, opp_id, self.system)
            .await
            .map_err(storage)?
        else {
            return Ok(());
        };
        let mut values = link
            .last_values
            .as_ref()
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let payments = values.entry("payments").or_insert_with(|| json!([]));
        if payments
            .as_array()
            .is_some_and(|p| p.iter().any(|v| v.as_str() == Some(payment_id)))
        {
            return Ok(());
        }
        if let Some(p) = payments.as_array_mut() {
            p.push(json!(payment_id));
        }
        if let Some(invoices) = values.get_mut("invoices").and_then(Json::as_object_mut) {
            for r in receipts.iter().filter(|r| !r.invoice_no.is_empty()) {
                if let Some(inv) = invoices.get_mut(&r.invoice_no)
                    && let Some(balance) = inv.get("balance").and_then(Json::as_i64)
                {
                    inv["balance"] = json!(balance.saturating_sub(r.amount_minor).max(0));
                }
            }
        }
        self.xref
            .set_last_values(OPPORTUNITY, opp_id, self.system, &Json::Object(values))
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// A gateway payment's follow-up; see the module docs. `payload` is what
    /// [`payment_jobs`] queued.
    pub async fn payment(&self, payload: &Json) -> Result<(), JobError> {
        let s = |f: &str| payload.get(f).and_then(Json::as_str);
        let n = |f: &str| payload.get(f).and_then(Json::as_i64).unwrap_or(0);
        let payment_id = s("payment_id")
            .ok_or_else(|| JobError::Permanent("payment_id is missing".into()))?
            .to_owned();
        let Some(opp_id) = s("opportunity_id") else {
            return Ok(());
        };
        let opp_id = sf_id(opp_id, "opportunity_id")?;
        let currency = Currency::parse(s("currency").unwrap_or_default())
            .map_err(|e| JobError::Permanent(format!("currency: {e}")))?;
        let status = s("status").unwrap_or("unknown").to_owned();
        let kind = s("kind").unwrap_or_default();
        let collected_minor = n("captured_minor") - n("refunded_minor");
        let review = |reason: &str, note: &str| {
            json!({"reason": reason, "sage_system": self.system, "payment_id": payment_id,
                   "status": status, "currency": currency.code(),
                   "amount": amount_text(n("amount_minor"), currency),
                   "refunded": amount_text(n("refunded_minor"), currency), "note": note})
        };
        if !capabilities(self.config.line).apply_payments {
            // A person records it in BusinessWorks; once per payment change (the job's own
            // dedupe key), so a replay of this job can open it again only if it failed.
            self.review
                .open(
                    "other",
                    "Opportunity",
                    &opp_id,
                    &review(
                        "apply_in_sage",
                        &format!(
                            "apply this payment in {}: cashloop does not apply payments there",
                            line_name(self.config.line)
                        ),
                    ),
                )
                .await
                .map_err(storage)?;
            return Ok(());
        }
        let link = self
            .xref
            .by_salesforce(OPPORTUNITY, &opp_id, self.system)
            .await
            .map_err(storage)?
            .ok_or_else(|| {
                JobError::Retryable(format!(
                    "Opportunity {opp_id} has no {} order yet (Closed Won not processed)",
                    line_name(self.config.line)
                ))
            })?;
        if currency != self.config.currency {
            self.review
                .open(
                    "other",
                    "Opportunity",
                    &opp_id,
                    &review(
                        "currency_mismatch",
                        &format!(
                            "{} keeps {} only",
                            line_name(self.config.line),
                            self.config.currency
                        ),
                    ),
                )
                .await
                .map_err(storage)?;
            return Err(JobError::Permanent(format!(
                "payment {payment_id} is in {currency} but {} keeps {}; sent to review",
                line_name(self.config.line),
                self.config.currency
            )));
        }
        if kind == "refund" || status == "returned" || (kind == "ach" && n("refunded_minor") > 0) {
            self.review
                .open(
                    "other",
                    "Opportunity",
                    &opp_id,
                    &review(
                        "payment_reversed",
                        &format!(
                            "reverse the cash receipt in {} (a person chooses how)",
                            line_name(self.config.line)
                        ),
                    ),
                )
                .await
                .map_err(storage)?;
        }
        if collected_minor > 0 {
            let customer_no = link_value(&link, "customer_no")
                .ok_or_else(|| {
                    JobError::Permanent(format!(
                        "the order link of Opportunity {opp_id} has no customer number"
                    ))
                })?
                .to_owned();
            let today = yyyymmdd(Utc::now().date_naive());
            // Sage 100's CheckNo holds 10 characters: a short reference, linked to the payment
            // so the receipts read knows the receipt as ours (the gateway booked its money).
            let check_no = check_no_for(&payment_id);
            match self
                .link(PAYMENT, &payment_id, &link.sage_entity, &check_no, None)
                .await?
            {
                Linked::Created | Linked::Existing => {}
                Linked::Conflict(other) => {
                    return Err(JobError::Permanent(format!(
                        "check number {check_no} of payment {payment_id} is already payment {}'s",
                        other.salesforce_id
                    )));
                }
            }
            let receipt = |amount: i64, invoice: &str| CashReceipt {
                salesforce_id: payment_id.clone(),
                ar_division_no: link.sage_entity.clone(),
                customer_no: customer_no.clone(),
                deposit_date: today.clone(),
                check_no: check_no.clone(),
                amount_minor: amount,
                invoice_no: invoice.to_owned(),
            };
            let mut left = collected_minor;
            let mut receipts = Vec::new();
            for inv in known_invoices(&link).iter().filter(|i| i.balance > 0) {
                if left == 0 {
                    break;
                }
                let amount = left.min(inv.balance);
                receipts.push(receipt(amount, &inv.number));
                left -= amount;
            }
            if left > 0 {
                // Nothing (more) open that we know of: on account, applied in Sage later.
                receipts.push(receipt(left, ""));
            }
            let key = format!("{}:{}:{payment_id}", self.system, cmd::IMPORT_CASH_RECEIPTS);
            let payload = json!(ImportCashReceipts {
                receipts: receipts.clone()
            });
            let id = self
                .enqueue_command(cmd::IMPORT_CASH_RECEIPTS, &payload, &key)
                .await?;
            self.applied(&opp_id, &payment_id, &receipts).await?;
            tracing::info!(payment = %payment_id, command = id, line = self.system, "cash receipts queued for the agent");
        }
        crate::q2c::queue_payment_record(
            &self.salesforce,
            &payment_id,
            &opp_id,
            n("amount_minor"),
            currency,
            &status,
        )
        .await
    }
}

struct AgentHandler(Arc<AgentLoop>);
impl Handler for AgentHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.0.handle(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_numbers_and_kinds() {
        assert_eq!(check_no_for("pay_abc").len(), 10);
        assert!(check_no_for("pay_abc").starts_with("CL"));
        assert_ne!(check_no_for("pay_abc"), check_no_for("pay_abd"));
        assert_eq!(customer_no_from("Acme Corp., Inc.", 20), "ACMECORPINC");
        assert_eq!(
            customer_no_from("A very long company name indeed", 20),
            "AVERYLONGCOMPANYNAME"
        );
        assert_eq!(
            customer_no_from("A very long company name indeed", 10),
            "AVERYLONGC"
        );
        assert_eq!(
            numbered("AVERYLONGCOMPANYNAME", 12, 20),
            "AVERYLONGCOMPANYNA12"
        );
        assert_eq!(numbered("AVERYLONGC", 2, 10), "AVERYLONG2");
        assert_eq!(numbered("ACME", 2, 20), "ACME2");
        assert_eq!(
            key_root("sage100:create_sales_order:006~12~15"),
            "sage100:create_sales_order:006"
        );
        assert_eq!(
            kinds(SageLine::Sage100).map(|k| k.payment),
            Some("sage100.payment")
        );
        assert_eq!(
            kinds(SageLine::BusinessWorks).map(|k| k.agent_result),
            Some("businessworks.agent_result")
        );
        assert!(kinds(SageLine::X3).is_none());
        assert!(!capabilities(SageLine::BusinessWorks).apply_payments);
        assert!(capabilities(SageLine::Sage100).apply_payments);
    }
}
