//! `IntacctClient`: requests in Intacct's DTD 3.0 envelope over one POST endpoint.
//!
//! - **Sessions**: with user credentials, the first call runs `getAPISession` alone in its
//!   request and moves every later call to the `endpoint` it returns, authenticated by the
//!   `sessionid`. When Intacct refuses the session (expired, invalidated) the client logs in
//!   again once and resends; a second refusal is returned.
//! - **Batches**: [`IntacctClient::execute`] sends many functions in one request
//!   (`transaction="true|false"`) and returns one [`FunctionResult`] per function, in order.
//! - **Idempotency**: writes are sent with `uniqueid=true` and a caller-chosen function
//!   `controlid` (derive it from the Salesforce id and operation), so a resend after a lost
//!   answer is refused by Intacct instead of writing twice.
//! - **Concurrency**: at most [`IntacctConfig::max_concurrent`] requests in flight per client
//!   (one client per company; Intacct answers 429 `GW-0010` beyond its limit).
//! - The client does not retry on its own: errors say whether they are retryable
//!   ([`IntacctError::retryable`]), the job engine decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use tokio::sync::{Mutex, Semaphore};

use super::error::IntacctError;
use super::wire::{self, FunctionResult, Response, ResultStatus};
use super::xml::{self, Element};

/// The SDKs' default endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.intacct.com/ia/xml/xmlgw.phtml";
/// `readByQuery` page size limit.
pub const READ_BY_QUERY_PAGE_MAX: u32 = 1_000;
/// `query` page size limit.
pub const QUERY_PAGE_MAX: u32 = 2_000;
/// `read` takes at most this many keys.
pub const READ_KEYS_MAX: usize = 100;
/// Longest function `controlid` Intacct accepts.
pub const CONTROLID_MAX_CHARS: usize = 256;
/// Requests in flight per company, by default.
pub const DEFAULT_MAX_CONCURRENT: usize = 2;
/// The SDKs' request timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

/// A credential that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the user signs in.
#[derive(Clone, Debug)]
pub enum UserAuth {
    /// Web Services user: the client gets a session with `getAPISession`.
    Login { user_id: String, password: Secret },
    /// An existing session, used at `endpoint` (or the configured URL); not renewable.
    Session {
        session_id: Secret,
        endpoint: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct IntacctConfig {
    pub endpoint_url: String,
    pub sender_id: String,
    pub sender_password: Secret,
    pub company_id: String,
    pub auth: UserAuth,
    /// The entity (`locationid`); `None`: top level.
    pub entity: Option<String>,
    pub timeout_ms: u64,
    pub max_concurrent: usize,
}

impl IntacctConfig {
    pub fn new(
        sender_id: impl Into<String>,
        sender_password: Secret,
        company_id: impl Into<String>,
        auth: UserAuth,
    ) -> IntacctConfig {
        IntacctConfig {
            endpoint_url: DEFAULT_ENDPOINT.into(),
            sender_id: sender_id.into(),
            sender_password,
            company_id: company_id.into(),
            auth,
            entity: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

#[derive(Clone, Debug)]
struct Session {
    id: Secret,
    endpoint: String,
}

/// One `<function controlid="…">` and its body (`<readByQuery>…`, `<create>…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub controlid: String,
    pub body: Element,
}

/// A `query` comparison operator (the element name Intacct uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    EqualTo,
    NotEqualTo,
    LessThan,
    LessThanOrEqualTo,
    GreaterThan,
    GreaterThanOrEqualTo,
}

impl Compare {
    pub fn element_name(self) -> &'static str {
        match self {
            Compare::EqualTo => "equalto",
            Compare::NotEqualTo => "notequalto",
            Compare::LessThan => "lessthan",
            Compare::LessThanOrEqualTo => "lessthanorequalto",
            Compare::GreaterThan => "greaterthan",
            Compare::GreaterThanOrEqualTo => "greaterthanorequalto",
        }
    }
}

/// `<op><field/><value/></op>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub field: String,
    pub op: Compare,
    pub value: String,
}

impl Condition {
    pub fn new(field: impl Into<String>, op: Compare, value: impl Into<String>) -> Condition {
        Condition {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    pub fn eq(field: impl Into<String>, value: impl Into<String>) -> Condition {
        Condition::new(field, Compare::EqualTo, value)
    }
}

/// A `query` with comparison filters (joined with `and`).
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub object: String,
    pub fields: Vec<String>,
    /// All must hold (`<filter><and>…</and></filter>`; a single one stands alone).
    pub filters: Vec<Condition>,
    /// `(field, ascending)`.
    pub order_by: Vec<(String, bool)>,
    /// `None`: Intacct's default (100).
    pub pagesize: Option<u32>,
    /// Rows to skip (0 is not sent).
    pub offset: u64,
}

/// A page of `query`.
#[derive(Clone, Debug)]
pub struct QueryPage {
    pub records: Vec<Element>,
    pub totalcount: u64,
    pub offset: u64,
    pub numremaining: u64,
}

/// A `create_invoice` (legacy, fixed element order; the only way to create an AR invoice).
#[derive(Clone, Debug)]
pub struct NewInvoice {
    pub customer_id: String,
    pub date_created: NaiveDate,
    pub date_due: Option<NaiveDate>,
    pub term_name: Option<String>,
    pub invoice_no: Option<String>,
    pub description: Option<String>,
    pub currency: Option<String>,
    pub exch_rate_type: Option<String>,
    pub lines: Vec<InvoiceLine>,
}

#[derive(Clone, Debug)]
pub struct InvoiceLine {
    pub gl_account_no: String,
    /// Exact decimal in the invoice currency.
    pub amount: Decimal,
    pub memo: Option<String>,
    pub location_id: Option<String>,
    pub department_id: Option<String>,
}

/// `exchratetype` **or** `exchrate` of a legacy function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// A rate type (`Intacct Daily Rate`).
    RateType(String),
    /// An explicit rate (transaction → base).
    Rate(Decimal),
}

/// The currency block every legacy transaction shares: `basecurr, currency,
/// exchratedate, exchratetype | exchrate` (in that order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyCurrency {
    pub base_currency: Option<String>,
    pub currency: Option<String>,
    pub exch_rate_date: Option<NaiveDate>,
    pub exchange: Option<Exchange>,
}

impl LegacyCurrency {
    fn write(&self, mut el: Element) -> Element {
        el = opt_leaf(el, "basecurr", self.base_currency.as_ref());
        el = opt_leaf(el, "currency", self.currency.as_ref());
        if let Some(d) = self.exch_rate_date {
            el = el.with(legacy_date("exchratedate", d));
        }
        match &self.exchange {
            Some(Exchange::RateType(t)) => el.with_leaf("exchratetype", t),
            Some(Exchange::Rate(r)) => el.with_leaf("exchrate", r.to_string()),
            None => el,
        }
    }
}

/// A `create_sotransaction` (legacy Order Entry; the only way to create an SODOCUMENT).
#[derive(Clone, Debug)]
pub struct NewSalesTransaction {
    /// The transaction definition: `Sales Order`, `Sales Invoice`, …
    pub transaction_type: String,
    pub date_created: NaiveDate,
    /// The DOCID this one converts (`Sales Order-SO-00029` → a Sales Invoice).
    pub created_from: Option<String>,
    pub customer_id: String,
    /// `None`: numbered by the definition's sequence.
    pub document_no: Option<String>,
    /// The customer's reference (PONUMBER).
    pub reference_no: Option<String>,
    pub term_name: Option<String>,
    pub date_due: Option<NaiveDate>,
    pub message: Option<String>,
    pub currency: LegacyCurrency,
    /// `Draft`, `Pending`, `Closed`; `None`: the definition's default.
    pub state: Option<String>,
    pub lines: Vec<SalesTransactionLine>,
}

/// A `sotransitem`. Discounts are not sent (the SDK fixtures show no discount element):
/// give the discounted `price`.
#[derive(Clone, Debug)]
pub struct SalesTransactionLine {
    pub item_id: String,
    pub quantity: Decimal,
    pub unit: Option<String>,
    /// `None`: the item's price.
    pub price: Option<Decimal>,
    pub location_id: Option<String>,
    pub department_id: Option<String>,
    pub memo: Option<String>,
}

/// Where a payment is deposited: `undepfundsacct` or `bankaccountid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentDeposit {
    UndepositedFunds(String),
    BankAccount(String),
}

/// A `create_arpayment` (legacy; element order of the SDK's `ArPaymentCreate`).
#[derive(Clone, Debug)]
pub struct NewArPayment {
    pub customer_id: String,
    /// In the payment currency.
    pub payment_amount: Decimal,
    pub batch_key: Option<String>,
    pub translated_amount: Option<Decimal>,
    pub deposit: Option<PaymentDeposit>,
    /// Check number / gateway transaction id (DOCNUMBER).
    pub ref_id: Option<String>,
    pub overpay_location_id: Option<String>,
    pub overpay_department_id: Option<String>,
    pub date_received: NaiveDate,
    /// `Printed Check`, `Cash`, `EFT`, `Credit Card`, …
    pub payment_method: String,
    pub currency: LegacyCurrency,
    pub cc_type: Option<String>,
    pub auth_code: Option<String>,
    pub items: Vec<ArPaymentItem>,
}

/// An `arpaymentitem`: an amount applied to an invoice (by its RECORDNO).
#[derive(Clone, Debug)]
pub struct ArPaymentItem {
    pub invoice_key: String,
    pub amount: Decimal,
}

impl ArPaymentItem {
    pub fn to_element(&self) -> Element {
        Element::new("arpaymentitem")
            .with_leaf("invoicekey", &self.invoice_key)
            .with_leaf("amount", self.amount.to_string())
    }
}

/// A `create_aradjustment` (legacy): lines summing positive make a debit memo, negative a
/// credit memo.
#[derive(Clone, Debug)]
pub struct NewArAdjustment {
    pub customer_id: String,
    pub date_created: NaiveDate,
    pub date_posted: Option<NaiveDate>,
    pub batch_key: Option<String>,
    pub adjustment_no: Option<String>,
    pub action: Option<String>,
    /// The invoice number (RECORDID) a credit memo applies to.
    pub invoice_no: Option<String>,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub currency: LegacyCurrency,
    pub no_gl: Option<bool>,
    pub lines: Vec<InvoiceLine>,
}

/// A `create_bill` (legacy AP bill).
#[derive(Clone, Debug)]
pub struct NewBill {
    pub vendor_id: String,
    pub date_created: NaiveDate,
    pub date_due: Option<NaiveDate>,
    pub term_name: Option<String>,
    pub bill_no: Option<String>,
    pub po_number: Option<String>,
    pub description: Option<String>,
    pub currency: LegacyCurrency,
    pub lines: Vec<InvoiceLine>,
}

fn gl_line_items(container: &str, lines: &[InvoiceLine]) -> Element {
    let mut items = Element::new(container);
    for l in lines {
        let mut li = Element::new("lineitem")
            .with_leaf("glaccountno", &l.gl_account_no)
            .with_leaf("amount", l.amount.to_string());
        li = opt_leaf(li, "memo", l.memo.as_ref());
        li = opt_leaf(li, "locationid", l.location_id.as_ref());
        li = opt_leaf(li, "departmentid", l.department_id.as_ref());
        items = items.with(li);
    }
    items
}

fn legacy_date(name: &str, d: NaiveDate) -> Element {
    Element::new(name)
        .with_leaf("year", d.year().to_string())
        .with_leaf("month", format!("{:02}", d.month()))
        .with_leaf("day", format!("{:02}", d.day()))
}

fn opt_leaf(el: Element, name: &str, v: Option<&String>) -> Element {
    match v {
        Some(v) => el.with_leaf(name, v),
        None => el,
    }
}

impl Function {
    pub fn new(controlid: impl Into<String>, body: Element) -> Function {
        Function {
            controlid: controlid.into(),
            body,
        }
    }

    /// `<function controlid="…">body</function>`.
    pub fn to_element(&self) -> Element {
        Element::new("function")
            .with_attr("controlid", &self.controlid)
            .with(self.body.clone())
    }

    /// `readByQuery` (`fields` empty: `*`; `query` empty: all records).
    pub fn read_by_query(
        controlid: impl Into<String>,
        object: &str,
        fields: &[&str],
        query: &str,
        pagesize: u32,
    ) -> Function {
        let fields = if fields.is_empty() {
            "*".to_owned()
        } else {
            fields.join(",")
        };
        Function::new(
            controlid,
            Element::new("readByQuery")
                .with_leaf("object", object)
                .with_leaf("query", query)
                .with_leaf("fields", fields)
                .with_leaf("pagesize", pagesize.to_string())
                .with_leaf("returnFormat", "xml"),
        )
    }

    pub fn read_more(controlid: impl Into<String>, result_id: &str) -> Function {
        Function::new(
            controlid,
            Element::new("readMore").with_leaf("resultId", result_id),
        )
    }

    /// `query`, elements in the SDK's order: select, object, filter, orderby, pagesize, offset.
    pub fn query(controlid: impl Into<String>, q: &Query) -> Function {
        let mut select = Element::new("select");
        for f in &q.fields {
            select = select.with_leaf("field", f);
        }
        let mut body = Element::new("query")
            .with(select)
            .with_leaf("object", &q.object);
        let equal: Vec<Element> = q
            .filters
            .iter()
            .map(|c| {
                Element::new(c.op.element_name())
                    .with_leaf("field", &c.field)
                    .with_leaf("value", &c.value)
            })
            .collect();
        match equal.len() {
            0 => {}
            1 => body = body.with(Element::new("filter").with(equal[0].clone())),
            _ => {
                let mut and = Element::new("and");
                and.children = equal;
                body = body.with(Element::new("filter").with(and));
            }
        }
        if !q.order_by.is_empty() {
            let mut orderby = Element::new("orderby");
            for (f, asc) in &q.order_by {
                let dir = if *asc { "ascending" } else { "descending" };
                orderby = orderby.with(
                    Element::new("order")
                        .with_leaf("field", f)
                        .with(Element::new(dir)),
                );
            }
            body = body.with(orderby);
        }
        if let Some(n) = q.pagesize {
            body = body.with_leaf("pagesize", n.to_string());
        }
        if q.offset > 0 {
            body = body.with_leaf("offset", q.offset.to_string());
        }
        Function::new(controlid, body)
    }

    /// `read` by RECORDNOs (`fields` empty: `*`).
    pub fn read(
        controlid: impl Into<String>,
        object: &str,
        keys: &[&str],
        fields: &[&str],
    ) -> Function {
        let fields = if fields.is_empty() {
            "*".to_owned()
        } else {
            fields.join(",")
        };
        Function::new(
            controlid,
            Element::new("read")
                .with_leaf("object", object)
                .with_leaf("keys", keys.join(","))
                .with_leaf("fields", fields)
                .with_leaf("returnFormat", "xml"),
        )
    }

    /// Generic `create` of records named by their object (`<CUSTOMER>…</CUSTOMER>`).
    pub fn create(controlid: impl Into<String>, records: Vec<Element>) -> Function {
        let mut body = Element::new("create");
        body.children = records;
        Function::new(controlid, body)
    }

    /// Generic `update`: each record carries its key (`RECORDNO` or the natural id).
    pub fn update(controlid: impl Into<String>, records: Vec<Element>) -> Function {
        let mut body = Element::new("update");
        body.children = records;
        Function::new(controlid, body)
    }

    pub fn delete(controlid: impl Into<String>, object: &str, keys: &[&str]) -> Function {
        Function::new(
            controlid,
            Element::new("delete")
                .with_leaf("object", object)
                .with_leaf("keys", keys.join(",")),
        )
    }

    pub fn create_invoice(controlid: impl Into<String>, inv: &NewInvoice) -> Function {
        let mut el = Element::new("create_invoice")
            .with_leaf("customerid", &inv.customer_id)
            .with(legacy_date("datecreated", inv.date_created));
        if let Some(d) = inv.date_due {
            el = el.with(legacy_date("datedue", d));
        }
        el = opt_leaf(el, "termname", inv.term_name.as_ref());
        el = opt_leaf(el, "invoiceno", inv.invoice_no.as_ref());
        el = opt_leaf(el, "description", inv.description.as_ref());
        el = opt_leaf(el, "currency", inv.currency.as_ref());
        el = opt_leaf(el, "exchratetype", inv.exch_rate_type.as_ref());
        let mut items = Element::new("invoiceitems");
        for l in &inv.lines {
            let mut li = Element::new("lineitem")
                .with_leaf("glaccountno", &l.gl_account_no)
                .with_leaf("amount", l.amount.to_string());
            li = opt_leaf(li, "memo", l.memo.as_ref());
            li = opt_leaf(li, "locationid", l.location_id.as_ref());
            li = opt_leaf(li, "departmentid", l.department_id.as_ref());
            items = items.with(li);
        }
        Function::new(controlid, el.with(items))
    }

    /// `create_sotransaction`, elements in the SDK's order (transactiontype, datecreated,
    /// customerid, documentno, referenceno, termname, datedue, message, basecurr, currency,
    /// exchratedate, exchratetype|exchrate, state, sotransitems).
    pub fn create_sotransaction(
        controlid: impl Into<String>,
        tx: &NewSalesTransaction,
    ) -> Function {
        let mut el = Element::new("create_sotransaction")
            .with_leaf("transactiontype", &tx.transaction_type)
            .with(legacy_date("datecreated", tx.date_created));
        el = opt_leaf(el, "createdfrom", tx.created_from.as_ref());
        el = el.with_leaf("customerid", &tx.customer_id);
        el = opt_leaf(el, "documentno", tx.document_no.as_ref());
        el = opt_leaf(el, "referenceno", tx.reference_no.as_ref());
        el = opt_leaf(el, "termname", tx.term_name.as_ref());
        if let Some(d) = tx.date_due {
            el = el.with(legacy_date("datedue", d));
        }
        el = opt_leaf(el, "message", tx.message.as_ref());
        el = tx.currency.write(el);
        el = opt_leaf(el, "state", tx.state.as_ref());
        let mut items = Element::new("sotransitems");
        for l in &tx.lines {
            let mut li = Element::new("sotransitem")
                .with_leaf("itemid", &l.item_id)
                .with_leaf("quantity", l.quantity.to_string());
            li = opt_leaf(li, "unit", l.unit.as_ref());
            if let Some(p) = l.price {
                li = li.with_leaf("price", p.to_string());
            }
            li = opt_leaf(li, "locationid", l.location_id.as_ref());
            li = opt_leaf(li, "departmentid", l.department_id.as_ref());
            li = opt_leaf(li, "memo", l.memo.as_ref());
            items = items.with(li);
        }
        Function::new(controlid, el.with(items))
    }

    /// `create_arpayment`, elements in `ArPaymentCreate`'s order.
    pub fn create_arpayment(controlid: impl Into<String>, p: &NewArPayment) -> Function {
        let mut el = Element::new("create_arpayment")
            .with_leaf("customerid", &p.customer_id)
            .with_leaf("paymentamount", p.payment_amount.to_string());
        el = opt_leaf(el, "batchkey", p.batch_key.as_ref());
        if let Some(a) = p.translated_amount {
            el = el.with_leaf("translatedamount", a.to_string());
        }
        match &p.deposit {
            Some(PaymentDeposit::UndepositedFunds(a)) => el = el.with_leaf("undepfundsacct", a),
            Some(PaymentDeposit::BankAccount(a)) => el = el.with_leaf("bankaccountid", a),
            None => {}
        }
        el = opt_leaf(el, "refid", p.ref_id.as_ref());
        el = opt_leaf(el, "overpaylocid", p.overpay_location_id.as_ref());
        el = opt_leaf(el, "overpaydeptid", p.overpay_department_id.as_ref());
        el = el
            .with(legacy_date("datereceived", p.date_received))
            .with_leaf("paymentmethod", &p.payment_method);
        el = p.currency.write(el);
        el = opt_leaf(el, "cctype", p.cc_type.as_ref());
        el = opt_leaf(el, "authcode", p.auth_code.as_ref());
        for it in &p.items {
            el = el.with(it.to_element());
        }
        Function::new(controlid, el)
    }

    /// `create_aradjustment`, elements in `ArAdjustmentCreate`'s order.
    pub fn create_aradjustment(controlid: impl Into<String>, a: &NewArAdjustment) -> Function {
        let mut el = Element::new("create_aradjustment")
            .with_leaf("customerid", &a.customer_id)
            .with(legacy_date("datecreated", a.date_created));
        if let Some(d) = a.date_posted {
            el = el.with(legacy_date("dateposted", d));
        }
        el = opt_leaf(el, "batchkey", a.batch_key.as_ref());
        el = opt_leaf(el, "adjustmentno", a.adjustment_no.as_ref());
        el = opt_leaf(el, "action", a.action.as_ref());
        el = opt_leaf(el, "invoiceno", a.invoice_no.as_ref());
        el = opt_leaf(el, "description", a.description.as_ref());
        el = opt_leaf(el, "externalid", a.external_id.as_ref());
        el = a.currency.write(el);
        if let Some(n) = a.no_gl {
            el = el.with_leaf("nogl", n.to_string());
        }
        Function::new(
            controlid,
            el.with(gl_line_items("aradjustmentitems", &a.lines)),
        )
    }

    /// `create_bill`, elements in `BillCreate`'s order (the subset [`NewBill`] carries).
    pub fn create_bill(controlid: impl Into<String>, b: &NewBill) -> Function {
        let mut el = Element::new("create_bill")
            .with_leaf("vendorid", &b.vendor_id)
            .with(legacy_date("datecreated", b.date_created));
        if let Some(d) = b.date_due {
            el = el.with(legacy_date("datedue", d));
        }
        el = opt_leaf(el, "termname", b.term_name.as_ref());
        el = opt_leaf(el, "billno", b.bill_no.as_ref());
        el = opt_leaf(el, "ponumber", b.po_number.as_ref());
        el = opt_leaf(el, "description", b.description.as_ref());
        el = b.currency.write(el);
        Function::new(controlid, el.with(gl_line_items("billitems", &b.lines)))
    }

    pub fn get_api_session(controlid: impl Into<String>, entity: Option<&str>) -> Function {
        let mut body = Element::new("getAPISession");
        if let Some(e) = entity {
            body = body.with_leaf("locationid", e);
        }
        Function::new(controlid, body)
    }
}

/// A random id (request and read controlids).
pub fn random_controlid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS random source");
    hex::encode(b)
}

pub struct IntacctClient {
    config: IntacctConfig,
    http: reqwest::Client,
    session: Mutex<Option<Session>>,
    permits: Arc<Semaphore>,
    requests_sent: AtomicU64,
    logins: AtomicU64,
}

impl std::fmt::Debug for IntacctClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntacctClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Options of one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `operation transaction="true"`: all functions commit or none.
    pub transaction: bool,
    /// `control uniqueid=true`: a function controlid seen before is refused.
    pub uniqueid: bool,
}

impl IntacctClient {
    pub fn new(config: IntacctConfig) -> Result<IntacctClient, IntacctError> {
        if config.max_concurrent == 0 {
            return Err(IntacctError::Invalid("max_concurrent must be ≥ 1".into()));
        }
        let http = gateway::http::client_builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| IntacctError::Transport {
                message: e.to_string(),
            })?;
        let session = match &config.auth {
            UserAuth::Session {
                session_id,
                endpoint,
            } => Some(Session {
                id: session_id.clone(),
                endpoint: endpoint
                    .clone()
                    .unwrap_or_else(|| config.endpoint_url.clone()),
            }),
            UserAuth::Login { .. } => None,
        };
        Ok(IntacctClient {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            http,
            session: Mutex::new(session),
            requests_sent: AtomicU64::new(0),
            logins: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &IntacctConfig {
        &self.config
    }

    /// HTTP requests sent so far (logins included).
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Ordering::Relaxed)
    }

    /// `getAPISession` calls made so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The endpoint the current session talks to (`None` before the first login).
    pub async fn session_endpoint(&self) -> Option<String> {
        self.session
            .lock()
            .await
            .as_ref()
            .map(|s| s.endpoint.clone())
    }

    fn envelope(&self, auth: Element, functions: &[Function], opts: Options) -> String {
        request_document(
            &self.config.sender_id,
            &self.config.sender_password,
            &random_controlid(),
            auth,
            functions,
            opts,
        )
    }

    /// One POST, under a concurrency permit; HTTP errors and unparsable bodies as errors.
    async fn post(&self, url: &str, body: String) -> Result<Response, IntacctError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| IntacctError::Invalid(e.to_string()))?;
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| IntacctError::Transport {
                message: e.without_url().to_string(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| IntacctError::Transport {
            message: e.without_url().to_string(),
        })?;
        if status >= 400 {
            let errors = match wire::parse_response(&text) {
                Ok(Response::ControlFailure(errors))
                | Ok(Response::AuthenticationFailure(errors)) => errors,
                _ => Vec::new(),
            };
            return Err(IntacctError::Http { status, errors });
        }
        match wire::parse_response(&text) {
            Ok(Response::ControlFailure(errors)) => Err(IntacctError::Control { errors }),
            Ok(r) => Ok(r),
            Err(detail) => Err(IntacctError::MalformedResponse { status, detail }),
        }
    }

    async fn login(&self) -> Result<Session, IntacctError> {
        let UserAuth::Login { user_id, password } = &self.config.auth else {
            return Err(IntacctError::Invalid(
                "the configured session was refused and there are no user credentials".into(),
            ));
        };
        let login = login_element(
            user_id,
            &self.config.company_id,
            password,
            self.config.entity.as_deref(),
        );
        let f = Function::get_api_session(random_controlid(), self.config.entity.as_deref());
        let body = self.envelope(login, &[f], Options::default());
        self.logins.fetch_add(1, Ordering::Relaxed);
        let results = match self.post(&self.config.endpoint_url, body).await? {
            Response::AuthenticationFailure(errors) => {
                return Err(IntacctError::Authentication { errors });
            }
            Response::Operation { results, .. } => results,
            other => {
                return Err(IntacctError::MalformedResponse {
                    status: 200,
                    detail: format!("unexpected answer to getAPISession: {other:?}"),
                });
            }
        };
        let r = single(results)?;
        let api = r.data.as_ref().and_then(|d| d.child("api"));
        let id = api.and_then(|a| a.text_at("sessionid")).unwrap_or_default();
        let endpoint = api.and_then(|a| a.text_at("endpoint")).unwrap_or_default();
        if id.is_empty() {
            return Err(IntacctError::MalformedResponse {
                status: 200,
                detail: "getAPISession answered without a sessionid".into(),
            });
        }
        Ok(Session {
            id: Secret::new(id),
            endpoint: if endpoint.is_empty() {
                self.config.endpoint_url.clone()
            } else {
                endpoint.to_owned()
            },
        })
    }

    async fn current_session(&self, refused: Option<&Secret>) -> Result<Session, IntacctError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && Some(&s.id) != refused
        {
            return Ok(s.clone());
        }
        *guard = None;
        let s = self.login().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Sends the functions in one request and returns their results in order. A function's
    /// failure is in its result, not an `Err`: see [`IntacctClient::execute_one`].
    pub async fn execute(
        &self,
        functions: &[Function],
        opts: Options,
    ) -> Result<Vec<FunctionResult>, IntacctError> {
        if functions.is_empty() {
            return Err(IntacctError::Invalid("no functions to send".into()));
        }
        for f in functions {
            let n = f.controlid.chars().count();
            if n == 0 || n > CONTROLID_MAX_CHARS {
                return Err(IntacctError::Invalid(format!(
                    "function controlid must be 1..={CONTROLID_MAX_CHARS} characters, got {n}"
                )));
            }
        }
        let mut refused: Option<Secret> = None;
        loop {
            let session = self.current_session(refused.as_ref()).await?;
            let auth = Element::leaf("sessionid", session.id.expose());
            let body = self.envelope(auth, functions, opts);
            match self.post(&session.endpoint, body).await? {
                Response::Operation { results, .. } => {
                    if results.len() != functions.len() {
                        return Err(IntacctError::MalformedResponse {
                            status: 200,
                            detail: format!(
                                "{} functions sent, {} results received",
                                functions.len(),
                                results.len()
                            ),
                        });
                    }
                    return Ok(results);
                }
                Response::AuthenticationFailure(errors) => {
                    let renewable = matches!(self.config.auth, UserAuth::Login { .. });
                    if !renewable || refused.is_some() {
                        return Err(IntacctError::Authentication { errors });
                    }
                    tracing::info!("intacct session refused; signing in again");
                    refused = Some(session.id);
                }
                other => {
                    return Err(IntacctError::MalformedResponse {
                        status: 200,
                        detail: format!("unexpected answer: {other:?}"),
                    });
                }
            }
        }
    }

    /// One function; a `failure` / `aborted` result becomes [`IntacctError::Function`].
    pub async fn execute_one(
        &self,
        function: Function,
        opts: Options,
    ) -> Result<FunctionResult, IntacctError> {
        single(self.execute(&[function], opts).await?)
    }

    /// `readByQuery` then `readMore` by `resultId`, page by page.
    pub fn read_by_query(
        &self,
        object: &str,
        fields: &[&str],
        query: &str,
        pagesize: u32,
    ) -> ReadByQueryPager<'_> {
        ReadByQueryPager {
            client: self,
            object: object.to_owned(),
            fields: fields.iter().map(|s| (*s).to_owned()).collect(),
            query: query.to_owned(),
            pagesize,
            result_id: None,
            done: false,
        }
    }

    /// All records of a `readByQuery`. A resultId that expires mid-read (Intacct keeps a
    /// cursor for a limited time) restarts the read from the first page, up to 3 times: the
    /// records read so far are dropped, so nothing is returned twice.
    pub async fn read_by_query_all(
        &self,
        object: &str,
        fields: &[&str],
        query: &str,
        pagesize: u32,
    ) -> Result<Vec<Element>, IntacctError> {
        let mut restarts = 0;
        'read: loop {
            let mut pager = self.read_by_query(object, fields, query, pagesize);
            let mut all = Vec::new();
            loop {
                match pager.next_page().await {
                    Ok(Some(page)) => all.extend(page),
                    Ok(None) => return Ok(all),
                    Err(e) if e.is_expired_result_id() && restarts < 3 => {
                        restarts += 1;
                        tracing::info!(
                            object,
                            restarts,
                            "intacct resultId expired mid-read; reading again"
                        );
                        continue 'read;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// One `query` page (offset paging; each offset is a new query, not a snapshot).
    pub async fn query(&self, q: &Query) -> Result<QueryPage, IntacctError> {
        if q.pagesize.is_some_and(|n| n == 0 || n > QUERY_PAGE_MAX) {
            return Err(IntacctError::Invalid(format!(
                "query pagesize must be 1..={QUERY_PAGE_MAX}"
            )));
        }
        let r = self
            .execute_one(Function::query(random_controlid(), q), Options::default())
            .await?;
        Ok(QueryPage {
            totalcount: r.data_count("totalcount").unwrap_or(0),
            offset: r.data_count("offset").unwrap_or(q.offset),
            numremaining: r.data_count("numremaining").unwrap_or(0),
            records: r.records().to_vec(),
        })
    }

    /// `read` by RECORDNOs (≤ 100).
    pub async fn read(
        &self,
        object: &str,
        keys: &[&str],
        fields: &[&str],
    ) -> Result<Vec<Element>, IntacctError> {
        if keys.is_empty() || keys.len() > READ_KEYS_MAX {
            return Err(IntacctError::Invalid(format!(
                "read takes 1..={READ_KEYS_MAX} keys, got {}",
                keys.len()
            )));
        }
        let r = self
            .execute_one(
                Function::read(random_controlid(), object, keys, fields),
                Options::default(),
            )
            .await?;
        Ok(r.records().to_vec())
    }

    /// Generic `create` (idempotent by `controlid`); returns the written records
    /// (`<customer><RECORDNO>…</RECORDNO><CUSTOMERID>…</CUSTOMERID></customer>`).
    pub async fn create(
        &self,
        controlid: &str,
        records: Vec<Element>,
    ) -> Result<Vec<Element>, IntacctError> {
        let r = self
            .execute_one(Function::create(controlid, records), write_options())
            .await?;
        Ok(r.records().to_vec())
    }

    /// Generic `update` (idempotent by `controlid`).
    pub async fn update(
        &self,
        controlid: &str,
        records: Vec<Element>,
    ) -> Result<Vec<Element>, IntacctError> {
        let r = self
            .execute_one(Function::update(controlid, records), write_options())
            .await?;
        Ok(r.records().to_vec())
    }

    /// Generic `delete` by RECORDNOs (idempotent by `controlid`).
    pub async fn delete(
        &self,
        controlid: &str,
        object: &str,
        keys: &[&str],
    ) -> Result<(), IntacctError> {
        self.execute_one(Function::delete(controlid, object, keys), write_options())
            .await?;
        Ok(())
    }

    /// Legacy `create_invoice` (idempotent by `controlid`); returns the invoice's `<key>`
    /// (its RECORDNO).
    pub async fn create_invoice(
        &self,
        controlid: &str,
        invoice: &NewInvoice,
    ) -> Result<String, IntacctError> {
        self.legacy_key(Function::create_invoice(controlid, invoice))
            .await
    }

    /// A legacy create's `<key>` (idempotent by `controlid`).
    async fn legacy_key(&self, f: Function) -> Result<String, IntacctError> {
        let name = f.body.name.clone();
        let r = self.execute_one(f, write_options()).await?;
        r.key.ok_or_else(|| IntacctError::MalformedResponse {
            status: 200,
            detail: format!("{name} answered without a <key>"),
        })
    }

    /// Legacy `create_sotransaction`; returns the document id (`Sales Order-SO-00029`).
    pub async fn create_sotransaction(
        &self,
        controlid: &str,
        tx: &NewSalesTransaction,
    ) -> Result<String, IntacctError> {
        self.legacy_key(Function::create_sotransaction(controlid, tx))
            .await
    }

    /// Legacy `create_arpayment`; returns the payment's key (its RECORDNO).
    pub async fn create_arpayment(
        &self,
        controlid: &str,
        payment: &NewArPayment,
    ) -> Result<String, IntacctError> {
        self.legacy_key(Function::create_arpayment(controlid, payment))
            .await
    }

    /// Legacy `create_aradjustment`; returns the adjustment's key (its RECORDNO).
    pub async fn create_aradjustment(
        &self,
        controlid: &str,
        adjustment: &NewArAdjustment,
    ) -> Result<String, IntacctError> {
        self.legacy_key(Function::create_aradjustment(controlid, adjustment))
            .await
    }

    /// Legacy `create_bill`; returns the bill's key (its RECORDNO).
    pub async fn create_bill(
        &self,
        controlid: &str,
        bill: &NewBill,
    ) -> Result<String, IntacctError> {
        self.legacy_key(Function::create_bill(controlid, bill))
            .await
    }
}

/// The request document (DTD 3.0), element order as the SDK writes it (protocols.md §1.2).
pub fn request_document(
    sender_id: &str,
    sender_password: &Secret,
    request_controlid: &str,
    auth: Element,
    functions: &[Function],
    opts: Options,
) -> String {
    let control = Element::new("control")
        .with_leaf("senderid", sender_id)
        .with_leaf("password", sender_password.expose())
        .with_leaf("controlid", request_controlid)
        .with_leaf("uniqueid", opts.uniqueid.to_string())
        .with_leaf("dtdversion", "3.0")
        .with_leaf("includewhitespace", "false");
    let mut content = Element::new("content");
    content.children = functions.iter().map(Function::to_element).collect();
    let operation = Element::new("operation")
        .with_attr("transaction", opts.transaction.to_string())
        .with(Element::new("authentication").with(auth))
        .with(content);
    xml::document(&Element::new("request").with(control).with(operation))
}

/// `<login>` (inside `<authentication>`); `entity` `None`: no `<locationid>`.
pub fn login_element(
    user_id: &str,
    company_id: &str,
    password: &Secret,
    entity: Option<&str>,
) -> Element {
    let login = Element::new("login")
        .with_leaf("userid", user_id)
        .with_leaf("companyid", company_id)
        .with_leaf("password", password.expose());
    match entity {
        Some(e) => login.with_leaf("locationid", e),
        None => login,
    }
}

fn write_options() -> Options {
    Options {
        transaction: false,
        uniqueid: true,
    }
}

fn single(results: Vec<FunctionResult>) -> Result<FunctionResult, IntacctError> {
    let mut it = results.into_iter();
    let r = it.next().ok_or_else(|| IntacctError::MalformedResponse {
        status: 200,
        detail: "no result".into(),
    })?;
    match r.status {
        ResultStatus::Success => Ok(r),
        ResultStatus::Failure | ResultStatus::Aborted => Err(IntacctError::Function {
            status: if r.status == ResultStatus::Failure {
                "failure".into()
            } else {
                "aborted".into()
            },
            function: r.function,
            controlid: r.controlid,
            errors: r.errors,
        }),
    }
}

/// Pages of a `readByQuery`: the first call sends `readByQuery`, later ones `readMore` with
/// the `resultId`, until `numremaining` is 0.
#[derive(Debug)]
pub struct ReadByQueryPager<'a> {
    client: &'a IntacctClient,
    object: String,
    fields: Vec<String>,
    query: String,
    pagesize: u32,
    result_id: Option<String>,
    done: bool,
}

impl ReadByQueryPager<'_> {
    pub async fn next_page(&mut self) -> Result<Option<Vec<Element>>, IntacctError> {
        if self.done {
            return Ok(None);
        }
        let f = match &self.result_id {
            None => {
                if self.pagesize == 0 || self.pagesize > READ_BY_QUERY_PAGE_MAX {
                    return Err(IntacctError::Invalid(format!(
                        "readByQuery pagesize must be 1..={READ_BY_QUERY_PAGE_MAX}"
                    )));
                }
                let fields: Vec<&str> = self.fields.iter().map(String::as_str).collect();
                Function::read_by_query(
                    random_controlid(),
                    &self.object,
                    &fields,
                    &self.query,
                    self.pagesize,
                )
            }
            Some(id) => Function::read_more(random_controlid(), id),
        };
        let r = self.client.execute_one(f, Options::default()).await?;
        let remaining = r.data_count("numremaining").unwrap_or(0);
        let id = r
            .data
            .as_ref()
            .and_then(|d| d.attr("resultId"))
            .unwrap_or_default();
        if remaining == 0 || id.is_empty() {
            self.done = true;
        } else {
            self.result_id = Some(id.to_owned());
        }
        Ok(Some(r.records().to_vec()))
    }
}

impl IntacctClient {
    /// The same company and user signed in to another entity (`None`: top level). It shares
    /// this client's connection pool and request limit: Intacct limits concurrency per
    /// company, not per entity.
    pub fn for_entity(&self, entity: Option<&str>) -> IntacctClient {
        let mut config = self.config.clone();
        config.entity = entity.map(str::to_owned);
        IntacctClient {
            config,
            http: self.http.clone(),
            session: Mutex::new(None),
            permits: self.permits.clone(),
            requests_sent: AtomicU64::new(0),
            logins: AtomicU64::new(0),
        }
    }
}
