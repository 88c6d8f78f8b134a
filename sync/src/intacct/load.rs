//! A historical bulk load into Sage Intacct: customers, then AR invoices, many functions per
//! request and a few requests in flight.
//!
//! - **Order**: every customer batch completes before the first invoice batch is sent (an
//!   invoice names its customer, and Intacct refuses an unknown one).
//! - **Batches**: up to [`LoadConfig::functions_per_request`] functions per request
//!   (`transaction="false"`, so each function succeeds or fails alone), up to
//!   [`LoadConfig::requests_in_flight`] requests at once (the client's own semaphore caps it too).
//! - **Idempotent and resumable**: function controlids are derived from the record's natural
//!   key (`load-cust-<CUSTOMERID>`, `load-inv-<invoice no>`) and sent with `uniqueid=true`.
//!   Running a load again, or resending a batch whose answer was lost, writes nothing twice:
//!   a function refused because its controlid already ran, or because the CUSTOMERID / invoice
//!   number already exists (`BL34000061`), counts as `already_present`.
//! - **Retries**: a whole request that failed retryably (transport, HTTP 5xx including 524 —
//!   safe here because every function is idempotent — and 429 `GW-0010`) is resent unchanged
//!   up to [`LoadConfig::retries_max`] times with capped exponential backoff. A request that
//!   still fails, or fails for good (sign-in refused), stops the load: batches already in
//!   flight finish, nothing new is sent, and [`LoadError::Request`] carries the report so far.
//!   Run the load again to resume.
//! - **Per-record failures** are collected with the record's key and Intacct's own errors
//!   (`description2`, `correction`); the rest of the batch still counts.
//! - **Progress**: a callback and a `tracing` event every [`LoadConfig::progress_every`]
//!   records. Logs carry counts, record keys and Intacct's error text, never credentials.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;

use super::client::{CONTROLID_MAX_CHARS, Function, IntacctClient, NewInvoice, Options};
use super::error::IntacctError;
use super::wire::{ErrorDetail, FunctionResult, ResultStatus};
use super::xml::Element;

/// Functions per request, by default (the common recommendation; protocols.md §1.9).
pub const DEFAULT_FUNCTIONS_PER_REQUEST: usize = 100;
/// The most functions the loader puts in one request.
pub const FUNCTIONS_PER_REQUEST_MAX: usize = 1_000;
/// Resends of one failed request, by default.
pub const DEFAULT_RETRIES_MAX: u32 = 5;
/// First backoff before a resend; doubled each time up to [`DEFAULT_BACKOFF_MAX_MS`].
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 250;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;
/// Records between progress reports, by default.
pub const DEFAULT_PROGRESS_EVERY: u64 = 10_000;
/// The simulator's (and our guess of Intacct's) errorno for a repeated function controlid
/// with `uniqueid=true`; the real one is not in public sources (protocols.md §1.9).
pub const DUPLICATE_CONTROLID_ERRORNO: &str = "XL03000004";
/// "Another Customer / Invoice with the given value(s) … already exists".
pub const DUPLICATE_KEY_ERRORNO: &str = "BL34000061";
/// Controlid prefixes.
pub const CUSTOMER_CONTROLID_PREFIX: &str = "load-cust-";
pub const INVOICE_CONTROLID_PREFIX: &str = "load-inv-";

/// How a load runs.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// 1..=[`FUNCTIONS_PER_REQUEST_MAX`].
    pub functions_per_request: usize,
    /// Requests in flight at once (≥ 1); the client's `max_concurrent` caps it as well.
    pub requests_in_flight: usize,
    /// Resends of one request after a retryable failure.
    pub retries_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Records between progress reports (0: only at the end of each phase).
    pub progress_every: u64,
    /// Errornos meaning "this function controlid already ran" (configurable until verified
    /// against a sandbox).
    pub duplicate_controlid_errornos: Vec<String>,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            functions_per_request: DEFAULT_FUNCTIONS_PER_REQUEST,
            requests_in_flight: super::client::DEFAULT_MAX_CONCURRENT,
            retries_max: DEFAULT_RETRIES_MAX,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            progress_every: DEFAULT_PROGRESS_EVERY,
            duplicate_controlid_errornos: vec![DUPLICATE_CONTROLID_ERRORNO.into()],
        }
    }
}

/// A customer to load (generic `create` of `CUSTOMER`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadCustomer {
    /// `CUSTOMERID`: the natural key, and the controlid's suffix.
    pub customer_id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
    /// ISO country code (`US`, `DE`).
    pub country_code: Option<String>,
    pub term_name: Option<String>,
    /// Default currency (`USD`, `EUR`).
    pub currency: Option<String>,
}

impl LoadCustomer {
    /// The `<CUSTOMER>` record (`DISPLAYCONTACT/PRINTAS` is the name).
    pub fn to_element(&self) -> Element {
        let mut contact = Element::new("DISPLAYCONTACT")
            .with_leaf("PRINTAS", &self.name)
            .with_leaf("COMPANYNAME", &self.name);
        if let Some(v) = &self.phone {
            contact = contact.with_leaf("PHONE1", v);
        }
        if let Some(v) = &self.email {
            contact = contact.with_leaf("EMAIL1", v);
        }
        if self.city.is_some() || self.country_code.is_some() {
            let mut addr = Element::new("MAILADDRESS");
            if let Some(v) = &self.city {
                addr = addr.with_leaf("CITY", v);
            }
            if let Some(v) = &self.country_code {
                addr = addr.with_leaf("ISOCOUNTRYCODE", v);
            }
            contact = contact.with(addr);
        }
        let mut el = Element::new("CUSTOMER")
            .with_leaf("CUSTOMERID", &self.customer_id)
            .with_leaf("NAME", &self.name)
            .with(contact)
            .with_leaf("STATUS", "active");
        if let Some(v) = &self.term_name {
            el = el.with_leaf("TERMNAME", v);
        }
        if let Some(v) = &self.currency {
            el = el.with_leaf("CURRENCY", v);
        }
        el
    }

    /// `load-cust-<CUSTOMERID>`.
    pub fn controlid(&self) -> String {
        format!("{CUSTOMER_CONTROLID_PREFIX}{}", self.customer_id)
    }
}

/// `load-inv-<invoice no>` (`None` without an invoice number).
pub fn invoice_controlid(invoice: &NewInvoice) -> Option<String> {
    invoice
        .invoice_no
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|n| format!("{INVOICE_CONTROLID_PREFIX}{n}"))
}

/// Which phase a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Customer,
    Invoice,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Customer => "customer",
            RecordKind::Invoice => "invoice",
        }
    }
}

/// A record Intacct refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadFailure {
    pub kind: RecordKind,
    /// CUSTOMERID or invoice number.
    pub key: String,
    pub controlid: String,
    /// Intacct's errors as sent (`description2`, `correction`).
    pub errors: Vec<ErrorDetail>,
}

impl LoadFailure {
    /// Intacct's own words: the `description2`s (or `description`s), then the corrections.
    pub fn message(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for e in &self.errors {
            let text = if e.description2.is_empty() {
                &e.description
            } else {
                &e.description2
            };
            if !text.is_empty() {
                parts.push(text);
            }
            if !e.correction.is_empty() {
                parts.push(&e.correction);
            }
        }
        parts.join(" ")
    }
}

/// Counts of one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub created: u64,
    pub already_present: u64,
    pub failed: u64,
}

impl PhaseCounts {
    pub fn done(&self) -> u64 {
        self.created + self.already_present + self.failed
    }
}

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub customers: PhaseCounts,
    pub invoices: PhaseCounts,
    /// Every refused record, in the order answers arrived.
    pub failed: Vec<LoadFailure>,
    /// HTTP requests the loader sent, resends included (the client's login is not).
    pub requests: u64,
    /// Functions sent, resends included.
    pub functions: u64,
    /// Resends after a retryable request failure.
    pub retries: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn created(&self) -> u64 {
        self.customers.created + self.invoices.created
    }
    pub fn already_present(&self) -> u64 {
        self.customers.already_present + self.invoices.already_present
    }
}

/// A progress report, every [`LoadConfig::progress_every`] records and at each phase's end.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub kind: RecordKind,
    /// Records of this phase answered so far.
    pub done: u64,
    pub total: u64,
    pub counts: PhaseCounts,
    /// Since the load started.
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad input or configuration; nothing was sent.
    #[error("invalid load: {0}")]
    Invalid(String),
    /// A request failed for good (or after every retry); the load stopped after the batches
    /// in flight. `report` holds what was done; running the load again resumes it.
    #[error("intacct load stopped at a {kind} batch (first key {first_key}): {source}", kind = .kind.as_str())]
    Request {
        kind: RecordKind,
        first_key: String,
        #[source]
        source: Box<IntacctError>,
        report: Box<LoadReport>,
    },
}

/// Loads `customers`, then `invoices` (each must carry its invoice number), into the company
/// `client` talks to. Calls `on_progress` every `config.progress_every` records.
pub async fn load(
    client: &IntacctClient,
    customers: &[LoadCustomer],
    invoices: &[NewInvoice],
    config: &LoadConfig,
    mut on_progress: impl FnMut(&Progress),
) -> Result<LoadReport, LoadError> {
    validate(customers, invoices, config)?;
    let started = Instant::now();
    let mut report = LoadReport::default();
    let customer_items: Vec<Item<'_>> = customers.iter().map(Item::Customer).collect();
    let invoice_items: Vec<Item<'_>> = invoices.iter().map(Item::Invoice).collect();
    for (kind, items) in [
        (RecordKind::Customer, customer_items),
        (RecordKind::Invoice, invoice_items),
    ] {
        run_phase(
            client,
            kind,
            &items,
            config,
            started,
            &mut report,
            &mut on_progress,
        )
        .await?;
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        customers_created = report.customers.created,
        customers_already_present = report.customers.already_present,
        customers_failed = report.customers.failed,
        invoices_created = report.invoices.created,
        invoices_already_present = report.invoices.already_present,
        invoices_failed = report.invoices.failed,
        requests = report.requests,
        retries = report.retries,
        elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "intacct load finished"
    );
    Ok(report)
}

fn validate(
    customers: &[LoadCustomer],
    invoices: &[NewInvoice],
    config: &LoadConfig,
) -> Result<(), LoadError> {
    if !(1..=FUNCTIONS_PER_REQUEST_MAX).contains(&config.functions_per_request) {
        return Err(LoadError::Invalid(format!(
            "functions_per_request must be 1..={FUNCTIONS_PER_REQUEST_MAX}, got {}",
            config.functions_per_request
        )));
    }
    if config.requests_in_flight == 0 {
        return Err(LoadError::Invalid("requests_in_flight must be ≥ 1".into()));
    }
    let check_id = |what: &str, controlid: &str| {
        let n = controlid.chars().count();
        if n > CONTROLID_MAX_CHARS {
            return Err(LoadError::Invalid(format!(
                "{what} makes a controlid of {n} characters (max {CONTROLID_MAX_CHARS})"
            )));
        }
        Ok(())
    };
    for (i, c) in customers.iter().enumerate() {
        if c.customer_id.is_empty() {
            return Err(LoadError::Invalid(format!(
                "customer #{i} has no CUSTOMERID"
            )));
        }
        check_id(&format!("customer #{i}"), &c.controlid())?;
    }
    for (i, inv) in invoices.iter().enumerate() {
        let Some(controlid) = invoice_controlid(inv) else {
            return Err(LoadError::Invalid(format!(
                "invoice #{i} has no invoice number (the load's idempotency key)"
            )));
        };
        check_id(&format!("invoice #{i}"), &controlid)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Item<'a> {
    Customer(&'a LoadCustomer),
    Invoice(&'a NewInvoice),
}

impl Item<'_> {
    fn key(&self) -> &str {
        match self {
            Item::Customer(c) => &c.customer_id,
            Item::Invoice(i) => i.invoice_no.as_deref().unwrap_or_default(),
        }
    }

    fn function(&self) -> Function {
        match self {
            Item::Customer(c) => Function::create(c.controlid(), vec![c.to_element()]),
            Item::Invoice(i) => {
                Function::create_invoice(invoice_controlid(i).unwrap_or_default(), i)
            }
        }
    }
}

/// What became of one batch.
struct BatchOutcome {
    first_key: String,
    /// The results, with the keys of their records, or the request's final error.
    results: Result<Vec<(String, FunctionResult)>, IntacctError>,
    requests: u64,
    functions: u64,
}

enum Outcome {
    Created,
    AlreadyPresent,
    Failed(Vec<ErrorDetail>),
}

fn classify(r: FunctionResult, config: &LoadConfig) -> Outcome {
    match r.status {
        ResultStatus::Success => Outcome::Created,
        ResultStatus::Failure | ResultStatus::Aborted => {
            let present = r.errors.iter().any(|e| {
                e.errorno == DUPLICATE_KEY_ERRORNO
                    || config.duplicate_controlid_errornos.contains(&e.errorno)
            });
            if present && r.status == ResultStatus::Failure {
                Outcome::AlreadyPresent
            } else {
                Outcome::Failed(r.errors)
            }
        }
    }
}

/// A request failure worth resending: the client's retryable ones, plus 524 (the request may
/// have run; resending is safe because every function is idempotent by controlid).
fn resendable(e: &IntacctError) -> bool {
    e.retryable()
        || matches!(
            e,
            IntacctError::Http {
                status: super::error::HTTP_CDN_TIMEOUT,
                ..
            }
        )
}

fn backoff(config: &LoadConfig, attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
    Duration::from_millis(
        config
            .backoff_base_ms
            .saturating_mul(factor)
            .min(config.backoff_max_ms),
    )
}

async fn send_batch(
    client: &IntacctClient,
    kind: RecordKind,
    batch: &[Item<'_>],
    config: &LoadConfig,
) -> BatchOutcome {
    let functions: Vec<Function> = batch.iter().map(Item::function).collect();
    let first_key = batch
        .first()
        .map(|i| i.key().to_owned())
        .unwrap_or_default();
    let opts = Options {
        transaction: false,
        uniqueid: true,
    };
    let mut requests = 0;
    let mut attempt = 0;
    let results = loop {
        requests += 1;
        match client.execute(&functions, opts).await {
            Ok(results) => break Ok(results),
            Err(e) if resendable(&e) && attempt < config.retries_max => {
                let wait = backoff(config, attempt);
                attempt += 1;
                tracing::warn!(
                    kind = kind.as_str(),
                    first_key = %first_key,
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error = %e,
                    "intacct load batch failed; resending"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => break Err(e),
        }
    };
    let functions_sent = requests * functions.len() as u64;
    BatchOutcome {
        results: results.map(|rs| batch.iter().map(|i| i.key().to_owned()).zip(rs).collect()),
        first_key,
        requests,
        functions: functions_sent,
    }
}

async fn run_phase(
    client: &IntacctClient,
    kind: RecordKind,
    items: &[Item<'_>],
    config: &LoadConfig,
    started: Instant,
    report: &mut LoadReport,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<(), LoadError> {
    let total = items.len() as u64;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    let mut outcomes = stream::iter(items.chunks(config.functions_per_request))
        .map(|batch| async move {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            Some(send_batch(client, kind, batch, config).await)
        })
        .buffer_unordered(config.requests_in_flight);
    let mut counts = PhaseCounts::default();
    let mut fatal: Option<(String, IntacctError)> = None;
    let mut next_progress = config.progress_every;
    while let Some(outcome) = outcomes.next().await {
        let Some(outcome) = outcome else { continue };
        report.requests += outcome.requests;
        report.retries += outcome.requests.saturating_sub(1);
        report.functions += outcome.functions;
        let results = match outcome.results {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(
                    kind = kind.as_str(),
                    first_key = %outcome.first_key,
                    error = %e,
                    "intacct load batch failed for good; stopping after the batches in flight"
                );
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if fatal.is_none() {
                    fatal = Some((outcome.first_key, e));
                }
                continue;
            }
        };
        for (key, r) in results {
            let controlid = r.controlid.clone();
            match classify(r, config) {
                Outcome::Created => counts.created += 1,
                Outcome::AlreadyPresent => counts.already_present += 1,
                Outcome::Failed(errors) => {
                    counts.failed += 1;
                    let failure = LoadFailure {
                        kind,
                        key,
                        controlid,
                        errors,
                    };
                    tracing::warn!(
                        kind = kind.as_str(),
                        key = %failure.key,
                        error = %failure.message(),
                        "intacct refused a record"
                    );
                    report.failed.push(failure);
                }
            }
        }
        let done = counts.done();
        if config.progress_every > 0 && done >= next_progress && done < total {
            while next_progress <= done {
                next_progress += config.progress_every;
            }
            emit(kind, done, total, counts, started, on_progress);
        }
    }
    match kind {
        RecordKind::Customer => report.customers = counts,
        RecordKind::Invoice => report.invoices = counts,
    }
    if let Some((first_key, source)) = fatal {
        report.elapsed = started.elapsed();
        return Err(LoadError::Request {
            kind,
            first_key,
            source: Box::new(source),
            report: Box::new(std::mem::take(report)),
        });
    }
    emit(kind, counts.done(), total, counts, started, on_progress);
    Ok(())
}

fn emit(
    kind: RecordKind,
    done: u64,
    total: u64,
    counts: PhaseCounts,
    started: Instant,
    on_progress: &mut impl FnMut(&Progress),
) {
    let p = Progress {
        kind,
        done,
        total,
        counts,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        kind = kind.as_str(),
        done,
        total,
        created = counts.created,
        already_present = counts.already_present,
        failed = counts.failed,
        "intacct load progress"
    );
    on_progress(&p);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: ResultStatus, errornos: &[&str]) -> FunctionResult {
        FunctionResult {
            status,
            function: "create".into(),
            controlid: "load-cust-C1".into(),
            data: None,
            key: None,
            errors: errornos
                .iter()
                .map(|n| ErrorDetail::new(n, "", "text", ""))
                .collect(),
        }
    }

    fn check(status: ResultStatus, errornos: &[&str], expected: &str) {
        let got = match classify(result(status, errornos), &LoadConfig::default()) {
            Outcome::Created => "created",
            Outcome::AlreadyPresent => "already_present",
            Outcome::Failed(_) => "failed",
        };
        assert_eq!(got, expected, "{status:?} {errornos:?}");
    }

    #[test]
    fn outcomes() {
        check(ResultStatus::Success, &[], "created");
        check(
            ResultStatus::Failure,
            &[DUPLICATE_CONTROLID_ERRORNO],
            "already_present",
        );
        check(
            ResultStatus::Failure,
            &[DUPLICATE_KEY_ERRORNO, "BL01001973"],
            "already_present",
        );
        check(ResultStatus::Failure, &["BL01001973"], "failed");
        check(ResultStatus::Failure, &[], "failed");
        check(ResultStatus::Aborted, &[DUPLICATE_KEY_ERRORNO], "failed");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = LoadConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..LoadConfig::default()
        };
        let ms: Vec<u128> = (0..6).map(|a| backoff(&c, a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff(&c, 99).as_millis(), 1_000);
    }

    #[test]
    fn controlids_are_deterministic() {
        let c = LoadCustomer {
            customer_id: "C-1".into(),
            name: "Acme".into(),
            ..LoadCustomer::default()
        };
        assert_eq!(c.controlid(), "load-cust-C-1");
        let el = c.to_element();
        assert_eq!(el.text_at("DISPLAYCONTACT/PRINTAS"), Some("Acme"));
    }

    #[test]
    fn failure_message_is_intacct_text() {
        let f = LoadFailure {
            kind: RecordKind::Invoice,
            key: "INV-1".into(),
            controlid: "load-inv-INV-1".into(),
            errors: vec![
                ErrorDetail::new("BL01001973", "", "Invalid Customer X specified.", ""),
                ErrorDetail::new("BL01001973", "", "Could not create Invoice record!", ""),
            ],
        };
        assert_eq!(
            f.message(),
            "Invalid Customer X specified. Could not create Invoice record!"
        );
    }
}
