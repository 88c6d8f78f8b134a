//! Quote to cash with Sage X3: the same loop as [`crate::q2c`] (Intacct), through the X3
//! client's typed operations only ([`X3Client`]), on REST or SOAP as the installation chose.
//!
//! - **Closed Won** (`x3.closed_won`, also from `salesforce.event` and pulled Opportunity
//!   changes when X3 is the installation's Sage line): the Opportunity, its Account and lines
//!   are read from Salesforce; the account is routed ([`X3Routing`]: billing country and
//!   currency → folder, SALFCY, STOFCY); the BPCUSTOMER is ensured (cross-reference, then the
//!   Salesforce id in the configured custom field, then a create with name and address); the
//!   SORDER is created with one line per OpportunityLineItem (ITMREF = Product2.ProductCode,
//!   QTY, GROPRI = net unit price) and CUSORDREF = the Opportunity id, so an order made before
//!   a crash is found by that reference instead of made twice; the order number goes to the
//!   Opportunity (`Sage_Order_Number__c`), the customer number to the Account.
//! - **Pull** (`x3.pull`, per folder, on a schedule): the SINVOICEs of every linked order not
//!   yet paid (`invoices_for_order`) → invoice number, status, open amount and payment status
//!   to the Opportunity; Dr AR / Cr revenue (Cr tax) in the ledger once per invoice.
//! - **Gateway payment** (`x3.payment`, queued by [`payment_jobs`] in the payment's own
//!   transaction): a PAYMENTH with `REF` = our payment id (looked up first, so never twice),
//!   allocated to the order's open invoices oldest first; the balance back to Salesforce.
//!   Refunds and returns go to review: X3 cancels a receipt by a reversal a person chooses.
//!
//! Errors: X3 business refusals (type-3 messages) are permanent, with X3's own text (the
//! error queue shows it); transport failures, 5xx without X3 diagnoses and 429 are retryable
//! ([`X3Error::retryable`]).
//!
//!   Receipts entered in X3 by hand for a linked order's customer are booked Dr cash / Cr AR
//!   once each; the loop's own receipts (REF = a gateway payment id) are not, since the
//!   gateway booked that money at capture.
//! - **Account changes** (pulled `Account` changes): a linked BPCUSTOMER's name and billing
//!   address, partially updated when they differ from what was last sent.
//!
//! Items are X3's master data: the loop never creates an ITMMASTER; an unknown ProductCode is
//! refused by X3 and reaches the error queue. Intacct and X3 in one installation are out of
//! scope: the binary wires one Sage line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use db::Db;
use ledger::{Currency, Direction, Ledger};
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json, json};

use crate::flows::SalesforceSync;
use crate::jobs::{BoxFuture, Handler, Job, JobError, Jobs, NewJob, Registry};
use crate::q2c::{LedgerAccounts, ar_entry, ledger_error, sf_error, sf_id, storage, to_minor};
use crate::review::Review;
use crate::salesforce::Record;
use crate::x3::types::{ADDRESS_TABLE, format_minor};
use crate::x3::{
    AccountFacts, Address, Customer, InvoiceStatus, OrderLine, Payment, PaymentAllocation, Route,
    SalesInvoice, SalesOrder, X3Client, X3Error, X3Record, X3Routing,
};
use crate::xref::{Link, Linked, Xref};

pub const CLOSED_WON: &str = "x3.closed_won";
pub const PULL: &str = "x3.pull";
pub const PAYMENT: &str = "x3.payment";
/// `sage_system` of the cross-reference.
pub const SAGE_SYSTEM: &str = "x3";

/// Cross-reference objects: an Account is a customer, an Opportunity its sales order.
const ACCOUNT: &str = "Account";
const OPPORTUNITY: &str = "Opportunity";

/// How the loop writes to X3.
#[derive(Clone, Debug)]
pub struct X3LoopConfig {
    pub routing: X3Routing,
    /// `SOHTYP` of the orders made (`SON`).
    pub order_type: String,
    /// `PAYTYP` of receipts (the payment transaction type).
    pub payment_type: String,
    /// `BAN`: the bank account gateway receipts are deposited to.
    pub bank: String,
    /// `BCGCOD` of customers created (none: X3's default).
    pub customer_category: Option<String>,
    /// An ITMREF for a deal without products (its Amount as one line); none: refused.
    pub amount_item: Option<String>,
    pub default_currency: String,
    /// Ledger accounts per currency; a currency without them is a permanent error.
    pub ledger: HashMap<Currency, LedgerAccounts>,
}

/// The flows between Salesforce, X3 and the ledger.
pub struct X3Loop {
    db: Db,
    jobs: Jobs,
    xref: Xref,
    review: Review,
    salesforce: SalesforceSync,
    /// One client per folder the routing can reach.
    folders: BTreeMap<String, Arc<X3Client>>,
    ledger: Ledger,
    config: X3LoopConfig,
}

impl std::fmt::Debug for X3Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X3Loop")
            .field("folders", &self.folders.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a Closed Won run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X3ClosedWon {
    pub route: Route,
    /// BPCNUM.
    pub customer: String,
    /// SOHNUM.
    pub order: String,
    /// False when the order was found (linked before, or made by a run that crashed).
    pub created: bool,
}

/// What a pull found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X3PullReport {
    /// Linked orders looked at.
    pub orders: u64,
    /// Invoices seen.
    pub invoices: u64,
    /// Invoices posted to the ledger now (first seen).
    pub posted: u64,
}

/// X3's answer as a job error: its text kept, retryable as [`X3Error::retryable`] says.
pub fn x3_error(e: &X3Error) -> JobError {
    if e.retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn amount_text(minor: i64, currency: &str) -> Result<String, JobError> {
    format_minor(minor, currency).map_err(|e| x3_error(&e))
}

/// ISO country code for X3's `CRY` from a Salesforce billing country (codes pass through).
fn country_code(country: &str) -> String {
    let c = country.trim();
    const NAMES: &[(&str, &str)] = &[
        ("united states", "US"),
        ("usa", "US"),
        ("united kingdom", "GB"),
        ("great britain", "GB"),
        ("france", "FR"),
        ("germany", "DE"),
        ("spain", "ES"),
        ("italy", "IT"),
        ("ireland", "IE"),
        ("belgium", "BE"),
        ("netherlands", "NL"),
        ("switzerland", "CH"),
        ("canada", "CA"),
        ("japan", "JP"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(c))
        .map_or_else(|| c.to_ascii_uppercase(), |(_, code)| (*code).to_owned())
}

/// Salesforce's `Payment_Status__c` for the documents of one order: its invoices' payments,
/// with credit notes counted against what is owed (an order credited in full is settled).
fn payment_status(docs: &[SalesInvoice]) -> &'static str {
    let owed: i64 = docs.iter().map(SalesInvoice::signed_open_minor).sum();
    let invoices = || docs.iter().filter(|d| !d.credit_note);
    if owed <= 0 || invoices().all(|i| i.status == InvoiceStatus::Paid) {
        "Paid"
    } else if invoices().all(|i| i.status == InvoiceStatus::Open) {
        "Unpaid"
    } else {
        "Partially Paid"
    }
}

fn invoice_status(docs: &[SalesInvoice]) -> &'static str {
    match payment_status(docs) {
        "Paid" => "Paid",
        "Unpaid" => "Open",
        _ => "Partly Paid",
    }
}

/// The BPCUSTOMER fields Salesforce owns: the name (`BPRNAM`, at most 35 characters) and the
/// billing address (`BPAC_1`, code `MAIN`).
fn customer_fields(account: &Record, name: &str) -> (String, Address) {
    let text = |f: &str| {
        account
            .get_str(f)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let address = Address {
        code: String::new(),
        lines: text("BillingStreet")
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
        postal_code: text("BillingPostalCode").unwrap_or_default(),
        city: text("BillingCity").unwrap_or_default(),
        country: account
            .get_str("BillingCountry")
            .map(country_code)
            .unwrap_or_default(),
    };
    (name.trim().chars().take(35).collect(), address)
}

/// [`customer_fields`] as kept on the Account's link (`last_values`).
fn customer_snapshot(name: &str, a: &Address) -> Json {
    json!({"name": name, "lines": a.lines, "postal_code": a.postal_code, "city": a.city,
           "country": a.country})
}

/// What the order link remembers (its `last_values`).
fn link_value<'a>(link: &'a Link, field: &str) -> Option<&'a str> {
    link.last_values
        .as_ref()
        .and_then(|v| v.get(field))
        .and_then(Json::as_str)
}

impl X3Loop {
    pub fn new(
        db: Db,
        jobs: Jobs,
        salesforce: SalesforceSync,
        folders: BTreeMap<String, Arc<X3Client>>,
        ledger: Ledger,
        config: X3LoopConfig,
    ) -> X3Loop {
        X3Loop {
            xref: Xref::new(db.clone()),
            review: Review::new(db.clone()),
            db,
            jobs,
            salesforce,
            folders,
            ledger,
            config,
        }
    }

    pub fn config(&self) -> &X3LoopConfig {
        &self.config
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Handlers: Closed Won (also from `salesforce.event` and pulled Opportunity changes),
    /// gateway payments and pulls. Register this *or* [`crate::q2c::Q2c`], not both: they
    /// answer the same Salesforce events.
    pub fn register_shared(me: Arc<X3Loop>, registry: Registry) -> Registry {
        registry
            .register(CLOSED_WON, Arc::new(X3Handler(me.clone())))
            .register("salesforce.event", Arc::new(X3Handler(me.clone())))
            .register(
                &crate::flows::changed_kind("Opportunity"),
                Arc::new(X3Handler(me.clone())),
            )
            .register(
                &crate::flows::changed_kind("Account"),
                Arc::new(X3Handler(me.clone())),
            )
            .register(PAYMENT, Arc::new(X3Handler(me.clone())))
            .register(PULL, Arc::new(X3Handler(me)))
    }

    /// Runs one job of the loop's kinds (what the worker's handlers call).
    pub async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.kind.as_str() {
            CLOSED_WON => self
                .closed_won(job.text("opportunity_id")?)
                .await
                .map(|_| ()),
            PAYMENT => self.payment(&job.payload).await,
            PULL => self.pull(job.text("folder")?).await.map(|_| ()),
            "salesforce.event" => match crate::deals::closed_won_event(&job.payload)? {
                Some(id) => self.closed_won(id).await.map(|_| ()),
                None => Ok(()),
            },
            kind if kind == crate::flows::changed_kind("Opportunity") => {
                let id = job.text("id")?;
                if crate::deals::won_unlinked(&self.db, &self.xref, SAGE_SYSTEM, id).await? {
                    self.queue_closed_won(id).await?;
                }
                Ok(())
            }
            kind if kind == crate::flows::changed_kind("Account") => {
                let Some(id) = job.changed_id()? else {
                    return Ok(());
                };
                self.account_changed(id).await.map(|_| ())
            }
            other => Err(JobError::Permanent(format!(
                "the X3 loop does not handle {other}"
            ))),
        }
    }

    fn client(&self, folder: &str) -> Result<&Arc<X3Client>, JobError> {
        self.folders.get(folder).ok_or_else(|| {
            JobError::Permanent(format!(
                "X3 folder {folder:?} has no client (not in [sync.x3] routing)"
            ))
        })
    }

    fn accounts(&self, currency: Currency) -> Result<&LedgerAccounts, JobError> {
        self.config.ledger.get(&currency).ok_or_else(|| {
            JobError::Permanent(format!(
                "currency: no ledger accounts for {currency} under [sync.x3.ledger.{currency}]"
            ))
        })
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

    /// Queues Closed Won for an Opportunity (one order per Opportunity).
    pub async fn queue_closed_won(&self, opportunity_id: &str) -> Result<Option<i64>, JobError> {
        self.jobs
            .enqueue(
                NewJob::new(CLOSED_WON, json!({"opportunity_id": opportunity_id}))
                    .dedupe(format!("{CLOSED_WON}:{opportunity_id}")),
            )
            .await
            .map_err(storage)
    }

    /// Queues a pull of every folder, deduplicated per `slot`.
    pub async fn queue_pulls(&self, slot: i64) -> Result<(), JobError> {
        self.jobs
            .enqueue_tick(
                PULL,
                "folder",
                self.folders.keys().map(String::as_str),
                slot,
            )
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
                if let Err(e) = me.queue_pulls(slot).await {
                    tracing::warn!(error = ?e, "queueing X3 pulls failed");
                }
            }
        })
        .await
    }

    /// Fields to a Salesforce record (by Id), pushed now rather than at the next schedule.
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
        folder: &str,
        sage_id: &str,
        last_values: Option<Json>,
    ) -> Result<(), JobError> {
        let link = Link {
            object: object.into(),
            salesforce_id: salesforce_id.into(),
            sage_system: SAGE_SYSTEM.into(),
            sage_entity: folder.into(),
            sage_id: sage_id.into(),
            last_values,
        };
        match self.xref.link(&link).await.map_err(storage)? {
            Linked::Created | Linked::Existing => Ok(()),
            Linked::Conflict(other) => Err(JobError::Permanent(format!(
                "the cross-reference links {object} {salesforce_id} / X3 {folder} {sage_id} elsewhere ({} ⇄ {} in {})",
                other.salesforce_id, other.sage_id, other.sage_entity
            ))),
        }
    }

    /// A pulled Account change: the linked BPCUSTOMER's name and billing address, when they
    /// differ from what was last sent (a partial update; X3's other fields are untouched).
    /// Accounts without a customer wait for their first Closed Won deal. True when X3 was
    /// updated.
    pub async fn account_changed(&self, account_id: &str) -> Result<bool, JobError> {
        let account_id = sf_id(account_id, "Account.Id")?;
        let Some(link) = self
            .xref
            .by_salesforce(ACCOUNT, &account_id, SAGE_SYSTEM)
            .await
            .map_err(storage)?
        else {
            return Ok(false);
        };
        let account = self
            .sf_one(
                &format!(
                    "SELECT Id, Name, BillingStreet, BillingCity, BillingPostalCode, BillingCountry \
                     FROM Account WHERE Id = '{account_id}'"
                ),
                &format!("Account {account_id}"),
            )
            .await?;
        let name = account
            .get_str("Name")
            .unwrap_or_default()
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(JobError::Permanent(format!(
                "Account {account_id}: Name is empty"
            )));
        }
        let (name, address) = customer_fields(&account, &name);
        let next = customer_snapshot(&name, &address);
        if link.last_values.as_ref() == Some(&next) {
            return Ok(false);
        }
        let client = self.client(&link.sage_entity)?.clone();
        let with_address = Customer {
            address: Some(address),
            ..Customer::default()
        }
        .to_record("");
        let mut changes = X3Record::new().with_list("BPRNAM", vec![name]);
        for line in with_address.lines(ADDRESS_TABLE) {
            changes = changes.with_line(ADDRESS_TABLE, line.clone());
        }
        client
            .update_customer(&link.sage_id, &changes)
            .await
            .map_err(|e| x3_error(&e))?;
        self.xref
            .set_last_values(ACCOUNT, &account_id, SAGE_SYSTEM, &next)
            .await
            .map_err(storage)?;
        tracing::info!(account = %account_id, customer = %link.sage_id, "X3 customer updated");
        Ok(true)
    }

    /// The whole Closed Won step for one Opportunity; see the module docs. `None` when the
    /// Opportunity is not won.
    pub async fn closed_won(&self, opportunity_id: &str) -> Result<Option<X3ClosedWon>, JobError> {
        let opp_id = sf_id(opportunity_id, "opportunity_id")?;
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
            tracing::info!(opportunity = %opp_id, "not Closed Won: no X3 order");
            return Ok(None);
        }
        let account_id = opp
            .get_str("AccountId")
            .ok_or_else(|| JobError::Permanent(format!("Opportunity {opp_id}: AccountId is empty")))
            .and_then(|a| sf_id(a, "AccountId"))?;
        let account = self
            .sf_one(
                &format!(
                    "SELECT Id, Name, BillingStreet, BillingCity, BillingPostalCode, BillingCountry, CurrencyIsoCode \
                     FROM Account WHERE Id = '{account_id}'"
                ),
                &format!("Account {account_id}"),
            )
            .await?;
        let name = account
            .get_str("Name")
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| JobError::Permanent(format!("Account {account_id}: Name is empty")))?
            .to_owned();
        let currency_code = opp
            .get_str("CurrencyIsoCode")
            .or(account.get_str("CurrencyIsoCode"))
            .unwrap_or(&self.config.default_currency)
            .to_owned();
        let currency = Currency::parse(&currency_code).map_err(|e| {
            JobError::Permanent(format!("Opportunity {opp_id}: CurrencyIsoCode: {e}"))
        })?;
        let close_date = opp
            .get_str("CloseDate")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                JobError::Permanent(format!("Opportunity {opp_id}: CloseDate is not a date"))
            })?;
        let billing_country = account.get_str("BillingCountry").map(country_code);
        let route = self
            .config
            .routing
            .route(AccountFacts {
                billing_country: billing_country.as_deref(),
                currency: Some(currency.code()),
            })
            .clone();
        let client = self.client(&route.folder)?.clone();
        // The invoice will need ledger accounts: refused now, before anything is made in X3.
        self.accounts(currency)?;

        // The lines, checked before anything is written to X3.
        let lines = self.order_lines(&opp, &opp_id, currency).await?;

        // 1. The customer: cross-reference, the Salesforce id on BPCUSTOMER, else created.
        let customer = match self
            .xref
            .by_salesforce(ACCOUNT, &account_id, SAGE_SYSTEM)
            .await
            .map_err(storage)?
        {
            Some(l) if l.sage_entity == route.folder => l.sage_id,
            Some(l) => {
                return Err(JobError::Permanent(format!(
                    "Account {account_id} is customer {} in X3 folder {}, but routes to folder {}",
                    l.sage_id, l.sage_entity, route.folder
                )));
            }
            None => {
                let code = match client
                    .find_customer_by_sf_id(&account_id)
                    .await
                    .map_err(|e| x3_error(&e))?
                {
                    Some(c) => c.code,
                    None => {
                        let (name, address) = customer_fields(&account, &name);
                        let made = client
                            .create_customer(&Customer {
                                code: String::new(),
                                name,
                                name2: None,
                                category: self.config.customer_category.clone(),
                                country: address.country.clone(),
                                currency: currency.code().to_owned(),
                                address: Some(address),
                                sf_id: Some(account_id.clone()),
                            })
                            .await
                            .map_err(|e| x3_error(&e))?;
                        tracing::info!(account = %account_id, folder = %route.folder, customer = %made.code, "X3 customer created");
                        made.code
                    }
                };
                // What Salesforce owns of the customer now: a later Account change is sent
                // to X3 only when it differs from this.
                let (name, address) = customer_fields(&account, &name);
                self.link(
                    ACCOUNT,
                    &account_id,
                    &route.folder,
                    &code,
                    Some(customer_snapshot(&name, &address)),
                )
                .await?;
                code
            }
        };
        let mut ids = Map::new();
        ids.insert("Sage_Customer_Id__c".into(), json!(customer));
        self.salesforce
            .queue_push("Account", "Id", &account_id, &ids)
            .await
            .map_err(storage)?;

        // 2. The order: cross-reference, then CUSORDREF = the Opportunity id, else created.
        let mut created = false;
        let order = match self
            .xref
            .by_salesforce(OPPORTUNITY, &opp_id, SAGE_SYSTEM)
            .await
            .map_err(storage)?
        {
            Some(l) => l.sage_id,
            None => {
                let found = client
                    .find_orders_by_customer_ref(&customer, &opp_id)
                    .await
                    .map_err(|e| x3_error(&e))?;
                let number = match found.into_iter().next() {
                    Some(o) => o.number,
                    None => {
                        let made = client
                            .create_order(&SalesOrder {
                                number: String::new(),
                                sales_site: route.sales_site.clone(),
                                order_type: self.config.order_type.clone(),
                                customer: customer.clone(),
                                customer_ref: opp_id.clone(),
                                order_date: close_date,
                                shipping_site: route.shipping_site.clone(),
                                currency: currency.code().to_owned(),
                                lines,
                                total_excl_tax_minor: None,
                            })
                            .await
                            .map_err(|e| x3_error(&e))?;
                        created = true;
                        made.number
                    }
                };
                self.link(
                    OPPORTUNITY,
                    &opp_id,
                    &route.folder,
                    &number,
                    Some(json!({"account_id": account_id, "customer": customer, "currency": currency.code()})),
                )
                .await?;
                number
            }
        };

        // 3. Back to Salesforce.
        let mut fields = Map::new();
        fields.insert("Sage_Order_Number__c".into(), json!(order));
        if created {
            fields.insert("Sage_Invoice_Status__c".into(), json!("Ordered"));
        }
        self.write_back("Opportunity", &opp_id, fields).await?;
        tracing::info!(opportunity = %opp_id, folder = %route.folder, order = %order, created, "Closed Won ordered in X3");
        Ok(Some(X3ClosedWon {
            route,
            customer,
            order,
            created,
        }))
    }

    /// One SORDER line per OpportunityLineItem: ITMREF = Product2.ProductCode, QTY, GROPRI =
    /// the unit price less the discount, rounded to the currency's minor unit.
    async fn order_lines(
        &self,
        opp: &Record,
        opp_id: &str,
        currency: Currency,
    ) -> Result<Vec<OrderLine>, JobError> {
        let mut lines = Vec::new();
        for l in crate::deals::deal_lines(&self.salesforce, opp_id).await? {
            let code = l.product_code().ok_or_else(|| {
                JobError::Permanent(format!(
                    "{}: the product has no ProductCode (the X3 ITMREF)",
                    l.field("Product2Id")
                ))
            })?;
            lines.push(OrderLine {
                item: code.to_owned(),
                quantity: l.quantity,
                gross_price_minor: to_minor(l.net_unit_price, currency, &l.field("UnitPrice"))?,
            });
        }
        if lines.is_empty() {
            let amount = opp.get_decimal("Amount").filter(|a| *a > Decimal::ZERO);
            match (&self.config.amount_item, amount) {
                (Some(item), Some(amount)) => lines.push(OrderLine {
                    item: item.clone(),
                    quantity: Decimal::ONE,
                    gross_price_minor: to_minor(amount, currency, "Opportunity.Amount")?,
                }),
                _ => {
                    return Err(JobError::Permanent(format!(
                        "Opportunity {opp_id}: no line items (and no [sync.x3] amount_item with a positive Amount) to order"
                    )));
                }
            }
        }
        Ok(lines)
    }

    /// The invoices of every linked, not yet paid order of one folder: Salesforce updated,
    /// each invoice and credit note posted to the ledger once. An order that cannot be handled
    /// (a permanent error: a document with negative amounts, a currency without ledger accounts) does not hold up the others:
    /// they are all handled, then the pull fails naming the orders and X3's or our text, so the
    /// error queue shows it. A retryable error stops the pull (the retry starts over; every
    /// step is idempotent).
    pub async fn pull(&self, folder: &str) -> Result<X3PullReport, JobError> {
        let client = self.client(folder)?.clone();
        let mut report = X3PullReport::default();
        let mut failed: Vec<String> = Vec::new();
        let mut after = String::new();
        loop {
            let links = self
                .xref
                .list(SAGE_SYSTEM, OPPORTUNITY, &after, 500)
                .await
                .map_err(storage)?;
            let Some(last) = links.last() else { break };
            after = last.salesforce_id.clone();
            for link in links.iter().filter(|l| l.sage_entity == folder) {
                if link_value(link, "status") == Some("Paid") {
                    continue;
                }
                report.orders += 1;
                match self.order_invoices(&client, link).await {
                    Ok((seen, posted)) => {
                        report.invoices += seen;
                        report.posted += posted;
                    }
                    Err(JobError::Permanent(m)) => {
                        tracing::warn!(folder, order = %link.sage_id, error = %m, "X3 order not pulled");
                        failed.push(format!("order {}: {m}", link.sage_id));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !failed.is_empty() {
            let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
            return Err(JobError::Permanent(format!(
                "X3 folder {folder}: {} of {} orders not pulled: {}",
                failed.len(),
                report.orders,
                shown.join("; ")
            )));
        }
        Ok(report)
    }

    /// One linked order's invoices: the ledger (once per invoice), then Salesforce. Answers
    /// (invoices seen, invoices posted now).
    async fn order_invoices(&self, client: &X3Client, link: &Link) -> Result<(u64, u64), JobError> {
        let mut invoices = client
            .invoices_for_order(&link.sage_id)
            .await
            .map_err(|e| x3_error(&e))?;
        if invoices.is_empty() {
            return Ok((0, 0));
        }
        invoices.sort_by(|a, b| (a.date, &a.number).cmp(&(b.date, &b.number)));
        let account_id = link_value(link, "account_id").unwrap_or(&link.salesforce_id);
        let mut posted = 0;
        for inv in &invoices {
            if self.post_invoice(link, account_id, inv).await? {
                posted += 1;
            }
        }
        self.invoices_to_salesforce(link, &invoices).await?;
        self.hand_keyed_receipts(client, link, account_id, &invoices[0].customer)
            .await?;
        Ok((invoices.len() as u64, posted))
    }

    /// Receipts entered in X3 by hand for the order's customer (not the ones the loop made
    /// for gateway payments, whose money the gateway booked at capture): Dr cash / Cr AR once
    /// per receipt (`x3:receipt:FOLDER:NUM`), so the ledger's receivable follows X3's.
    async fn hand_keyed_receipts(
        &self,
        client: &X3Client,
        link: &Link,
        account_id: &str,
        customer: &str,
    ) -> Result<(), JobError> {
        let receipts = client
            .payments_of_customer(customer)
            .await
            .map_err(|e| x3_error(&e))?;
        for r in receipts {
            let key = format!("x3:receipt:{}:{}", link.sage_entity, r.number);
            let booked = self
                .ledger
                .entry_by_key(
                    &ledger::IdempotencyKey::parse(&key, "idempotency_key")
                        .map_err(|r| JobError::Permanent(format!("ledger: {}", r.message)))?,
                )
                .await
                .map_err(ledger_error)?
                .is_some();
            if booked
                || r.amount_minor <= 0
                || crate::q2c::is_gateway_payment(&self.db, &r.reference).await?
            {
                continue;
            }
            let currency = Currency::parse(&r.currency)
                .map_err(|e| JobError::Permanent(format!("PAYMENTH {}: CUR: {e}", r.number)))?;
            let accounts = self.accounts(currency)?.clone();
            let entry = ar_entry(
                &accounts.entity,
                currency,
                &key,
                r.date,
                Some(&r.reference)
                    .filter(|s| !s.is_empty())
                    .map(String::as_str),
                &format!(
                    "Receipt {} entered in X3 (customer {customer}, folder {})",
                    r.number, link.sage_entity
                ),
                &[
                    (&accounts.cash, Direction::Debit, r.amount_minor, None, None),
                    (
                        &accounts.receivable,
                        Direction::Credit,
                        r.amount_minor,
                        Some(account_id),
                        None,
                    ),
                ],
            )?;
            self.ledger.post(entry).await.map_err(ledger_error)?;
            tracing::info!(folder = %link.sage_entity, receipt = %r.number, "X3 receipt booked");
        }
        Ok(())
    }

    /// Dr AR / Cr revenue (Cr tax), idempotent per folder and invoice number. True when the
    /// ledger did not have it yet.
    async fn post_invoice(
        &self,
        link: &Link,
        account_id: &str,
        inv: &SalesInvoice,
    ) -> Result<bool, JobError> {
        let currency = Currency::parse(&inv.currency)
            .map_err(|e| JobError::Permanent(format!("SINVOICE {}: CUR: {e}", inv.number)))?;
        let accounts = self.accounts(currency)?.clone();
        let tax = inv.amount_incl_tax_minor - inv.amount_excl_tax_minor;
        if inv.amount_excl_tax_minor <= 0 || tax < 0 {
            return Err(JobError::Permanent(format!(
                "SINVOICE {}: amounts AMTNOT {} / AMTATI {} are not a document the loop posts (an invoice or credit note of category INVTYP 1–4 with positive amounts)",
                inv.number, inv.amount_excl_tax_minor, inv.amount_incl_tax_minor
            )));
        }
        // An invoice is Dr AR / Cr revenue (Cr tax); a credit note the reverse.
        let (ar_side, other_side, kind) = if inv.credit_note {
            (Direction::Credit, Direction::Debit, "credit")
        } else {
            (Direction::Debit, Direction::Credit, "invoice")
        };
        let mut legs = vec![
            (
                &accounts.receivable,
                ar_side,
                inv.amount_incl_tax_minor,
                Some(account_id),
                Some(inv.number.as_str()),
            ),
            (
                &accounts.revenue,
                other_side,
                inv.amount_excl_tax_minor,
                None,
                None,
            ),
        ];
        if tax > 0 {
            legs.push((&accounts.tax, other_side, tax, None, None));
        }
        let entry = ar_entry(
            &accounts.entity,
            currency,
            &format!("x3:{kind}:{}:{}", link.sage_entity, inv.number),
            inv.date.unwrap_or_else(|| Utc::now().date_naive()),
            Some(&inv.number),
            &format!(
                "X3 {} {} (order {}) for Opportunity {}",
                if inv.credit_note {
                    "credit note"
                } else {
                    "invoice"
                },
                inv.number,
                link.sage_id,
                link.salesforce_id
            ),
            &legs,
        )?;
        let before = self
            .ledger
            .post(entry)
            .await
            .map_err(ledger_error)?
            .replayed;
        Ok(!before)
    }

    /// Invoice numbers, status, open amount and payment status to the Opportunity; the
    /// status kept on the link (a paid order is not read again by the pull).
    async fn invoices_to_salesforce(
        &self,
        link: &Link,
        invoices: &[SalesInvoice],
    ) -> Result<(), JobError> {
        let currency = invoices
            .first()
            .map(|i| i.currency.clone())
            .unwrap_or_default();
        let open: i64 = invoices.iter().map(SalesInvoice::signed_open_minor).sum();
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
            json!(invoice_status(invoices)),
        );
        fields.insert(
            "Balance_Due__c".into(),
            json!(amount_text(open, &currency)?),
        );
        fields.insert("Payment_Status__c".into(), json!(payment_status(invoices)));
        self.write_back("Opportunity", &link.salesforce_id, fields)
            .await?;
        let mut values = link
            .last_values
            .as_ref()
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        values.insert("status".into(), json!(payment_status(invoices)));
        values.insert("invoices".into(), json!(numbers));
        self.xref
            .set_last_values(
                OPPORTUNITY,
                &link.salesforce_id,
                SAGE_SYSTEM,
                &Json::Object(values),
            )
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
        let collected_minor = n("captured_minor") - n("refunded_minor");
        let link = self
            .xref
            .by_salesforce(OPPORTUNITY, &opp_id, SAGE_SYSTEM)
            .await
            .map_err(storage)?
            .ok_or_else(|| {
                JobError::Retryable(format!(
                    "Opportunity {opp_id} has no X3 order yet (Closed Won not processed)"
                ))
            })?;
        let client = self.client(&link.sage_entity)?.clone();
        let mut invoices = client
            .invoices_for_order(&link.sage_id)
            .await
            .map_err(|e| x3_error(&e))?;
        if invoices.is_empty() {
            // Paid before X3 invoiced the order: tried again later (backoff), until it is.
            return Err(JobError::Retryable(format!(
                "order {} of Opportunity {opp_id} is not invoiced in X3 yet",
                link.sage_id
            )));
        }
        invoices.sort_by(|a, b| (a.date, &a.number).cmp(&(b.date, &b.number)));
        if let Some(other) = invoices.iter().find(|i| i.currency != currency.code()) {
            self.review
                .open(
                    "other",
                    "Opportunity",
                    &opp_id,
                    &json!({"reason": "currency_mismatch", "sage_system": SAGE_SYSTEM, "payment_id": payment_id,
                            "payment_currency": currency.code(), "invoice_currency": other.currency}),
                )
                .await
                .map_err(storage)?;
            return Err(JobError::Permanent(format!(
                "payment {payment_id} is in {currency} but X3 invoice {} is in {}; sent to review",
                other.number, other.currency
            )));
        }
        let kind = s("kind").unwrap_or_default();
        if kind == "refund" || status == "returned" || (kind == "ach" && n("refunded_minor") > 0) {
            self.review
                .open(
                    "other",
                    "Opportunity",
                    &opp_id,
                    &json!({"reason": "payment_reversed", "sage_system": SAGE_SYSTEM, "payment_id": payment_id,
                            "status": status, "refunded": amount_text(n("refunded_minor"), currency.code())?,
                            "currency": currency.code(), "order": link.sage_id,
                            "note": "cancel or reverse the receipt in X3 (a person chooses the reversal)"}),
                )
                .await
                .map_err(storage)?;
        }
        if collected_minor > 0 {
            let existing = client
                .find_payments_by_ref(&payment_id)
                .await
                .map_err(|e| x3_error(&e))?;
            if existing.is_empty() {
                let mut left = collected_minor;
                let mut allocations = Vec::new();
                for inv in invoices
                    .iter()
                    .filter(|i| !i.credit_note && i.open_minor > 0)
                {
                    if left == 0 {
                        break;
                    }
                    let amount = left.min(inv.open_minor);
                    allocations.push(PaymentAllocation {
                        invoice: inv.number.clone(),
                        amount_minor: amount,
                    });
                    left -= amount;
                }
                let applied: i64 = allocations.iter().map(|a| a.amount_minor).sum();
                if applied > 0 {
                    let first = &invoices[0];
                    client
                        .create_payment(&Payment {
                            number: String::new(),
                            payment_type: self.config.payment_type.clone(),
                            customer: first.customer.clone(),
                            site: first.sales_site.clone(),
                            date: Utc::now().date_naive(),
                            currency: currency.code().to_owned(),
                            amount_minor: applied,
                            bank: self.config.bank.clone(),
                            reference: payment_id.clone(),
                            allocations,
                        })
                        .await
                        .map_err(|e| x3_error(&e))?;
                }
                if left > 0 {
                    self.review
                        .open(
                            "other",
                            "Opportunity",
                            &opp_id,
                            &json!({"reason": "over_payment", "sage_system": SAGE_SYSTEM, "payment_id": payment_id,
                                    "unapplied": amount_text(left, currency.code())?, "currency": currency.code()}),
                        )
                        .await
                        .map_err(storage)?;
                }
            }
        }
        // The balance back to Salesforce, from what X3 now holds.
        let mut invoices = client
            .invoices_for_order(&link.sage_id)
            .await
            .map_err(|e| x3_error(&e))?;
        invoices.sort_by(|a, b| (a.date, &a.number).cmp(&(b.date, &b.number)));
        self.invoices_to_salesforce(&link, &invoices).await?;
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

struct X3Handler(Arc<X3Loop>);
impl Handler for X3Handler {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.0.handle(job))
    }
}

/// Queues `x3.payment` for every gateway payment change on an Opportunity, in the payment's
/// own transaction: the Intacct loop's observer with this line's job kind.
pub fn payment_jobs() -> crate::q2c::PaymentJobs {
    crate::q2c::PaymentJobs::of_kind(PAYMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_and_countries() {
        // The client's default classes are the object-name table's.
        use crate::objects::{Object, SageLine};
        let x3 = |o| SageLine::X3.name(o).unwrap_or("?");
        let defaults = crate::x3::ObjectNames::default();
        assert_eq!(x3(Object::Customer), defaults.customer.class);
        assert_eq!(x3(Object::Order), defaults.order.class);
        assert_eq!(x3(Object::Invoice), defaults.invoice.class);
        assert_eq!(x3(Object::Item), defaults.item.class);
        assert_eq!(x3(Object::Payment), defaults.payment.class);
        assert_eq!(country_code("United Kingdom"), "GB");
        assert_eq!(country_code(" fr "), "FR");
    }
}
