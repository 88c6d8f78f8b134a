//! The BusinessWorks agent executor: the agent command contract on BusinessWorks (reads over
//! ODBC, writes as import files read back through the import's log).
//!
//! Exactly once for writes: before a file is written the agent records, under the command's
//! idempotency key, the document number and the file name (`pending`); a re-delivery finds
//! that record and reads the file's log instead of writing a second file. An order also
//! carries the Salesforce id in its configured field, and the agent looks for an order carrying
//! it over ODBC before any create. No log yet means the import has not run: the command is
//! left for a retry (its lease runs out and it comes back). A rejection whose number has
//! meanwhile been used by another order (someone keyed one in BusinessWorks) makes the agent
//! take the next number and import again; any other rejection is the command's failure, with
//! the log's text.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::import::{CustomerRecord, ImportFolder, OrderLineRecord, OrderRecord, file_name};
use super::reads::{DIVISION, INVOICE_OBJECT, ITEM_OBJECT, ReadError, Reader};
use super::state::{BwState, Record};
use crate::agent_contract::{
    CreateSalesOrder, CustomerResult, InvoicesResult, ItemsResult, ReadChanges, SalesOrderResult,
    UpsertCustomer, kind,
};
use crate::agent_exec::ExecError;
use crate::agent_queue::{Command, Outcome};

/// What `import_cash_receipts` answers on BusinessWorks.
pub const NO_CASH_RECEIPTS: &str = "cashloop does not apply payments in BusinessWorks: no public \
     cash-receipt import format is known; key the receipt in BusinessWorks, and the invoice's \
     balance change is read back by read_changed_invoices";

/// Runs commands against BusinessWorks.
#[derive(Clone, Debug)]
pub struct BwExecutor {
    pub reader: Reader,
    pub state: BwState,
    pub import: ImportFolder,
    /// How long one execution waits for the import's log before leaving the command for a
    /// retry (zero: look once).
    pub log_wait: Duration,
    /// Order numbers are zero-padded to at least this many digits.
    pub order_no_width: usize,
}

impl From<ReadError> for ExecError {
    fn from(e: ReadError) -> Self {
        if e.retryable() {
            ExecError::Retry(e.to_string())
        } else {
            ExecError::Fail(e.to_string())
        }
    }
}

/// How the wait for an import's log ended.
enum Imported {
    Accepted,
    /// The file is neither waiting nor processed and there is no log: it was lost.
    Lost,
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl crate::agent_exec::CommandExecutor for BwExecutor {
    async fn execute(&self, cmd: &Command) -> Option<Outcome> {
        BwExecutor::execute(self, cmd).await
    }
}

impl BwExecutor {
    pub fn new(reader: Reader, state: BwState, import: ImportFolder) -> BwExecutor {
        BwExecutor {
            reader,
            state,
            import,
            log_wait: Duration::from_secs(10),
            order_no_width: 6,
        }
    }

    /// Executes `cmd`: `Some(outcome)` to report, `None` to leave it for a retry.
    pub async fn execute(&self, cmd: &Command) -> Option<Outcome> {
        crate::agent_exec::outcome(cmd, self.run(cmd).await)
    }

    async fn run(&self, cmd: &Command) -> Result<Value, ExecError> {
        let key = cmd.idempotency_key.as_str();
        let record = self.state.get(key).await?;
        if let Some(Record {
            status,
            result: Some(result),
            ..
        }) = &record
            && status == "done"
        {
            tracing::info!(command = cmd.id, "answered from the idempotency record");
            return Ok(result.clone());
        }
        let pending = record.filter(|r| r.status == "pending");
        let bad = |e: serde_json::Error| ExecError::Fail(format!("{} payload: {e}", cmd.kind));
        let payload = cmd.payload.clone();
        match cmd.kind.as_str() {
            kind::READ_CHANGED_INVOICES => {
                let p: ReadChanges = serde_json::from_value(payload).map_err(bad)?;
                let known = self.state.hashes(INVOICE_OBJECT).await?;
                let c = self.reader.changed_invoices(&known, p.max_rows).await?;
                let result = to_value(&InvoicesResult {
                    invoices: c.rows,
                    next: None,
                    more: c.more,
                });
                self.state
                    .finish(key, &cmd.kind, None, &result, &c.hashes)
                    .await?;
                Ok(result)
            }
            kind::READ_ITEMS => {
                let p: ReadChanges = serde_json::from_value(payload).map_err(bad)?;
                let known = self.state.hashes(ITEM_OBJECT).await?;
                let c = self.reader.changed_items(&known, p.max_rows).await?;
                let result = to_value(&ItemsResult {
                    items: c.rows,
                    next: None,
                    more: c.more,
                });
                self.state
                    .finish(key, &cmd.kind, None, &result, &c.hashes)
                    .await?;
                Ok(result)
            }
            kind::UPSERT_CUSTOMER => {
                let p: UpsertCustomer = serde_json::from_value(payload).map_err(bad)?;
                let result = self.upsert_customer(key, p, pending).await?;
                self.done(key, &cmd.kind, result).await
            }
            kind::CREATE_SALES_ORDER => {
                let p: CreateSalesOrder = serde_json::from_value(payload).map_err(bad)?;
                let result = self.create_sales_order(key, p, pending).await?;
                self.done(key, &cmd.kind, result).await
            }
            kind::IMPORT_CASH_RECEIPTS => Err(ExecError::Fail(NO_CASH_RECEIPTS.into())),
            kind::READ_CASH_RECEIPTS => Err(ExecError::Fail(
                "cashloop does not read cash receipts from BusinessWorks: payments show as invoice \
                 balance changes (read_changed_invoices)"
                    .into(),
            )),
            other => Err(ExecError::Fail(format!(
                "{other} is not a command the BusinessWorks agent knows"
            ))),
        }
    }

    async fn done(&self, key: &str, kind: &str, result: Value) -> Result<Value, ExecError> {
        self.state
            .finish(key, kind, result["document_no"].as_str(), &result, &[])
            .await?;
        Ok(result)
    }

    /// Waits up to `log_wait` for the log of `file` and reads `doc`'s entry in it.
    async fn await_import(&self, file: &str, doc: &str) -> Result<Imported, ExecError> {
        let started = Instant::now();
        loop {
            let entry =
                self.import.log_entry(file, doc).await.map_err(|e| {
                    ExecError::Retry(format!("reading the import log of {file}: {e}"))
                })?;
            match entry {
                Some(e) if e.accepted => return Ok(Imported::Accepted),
                Some(e) => {
                    return Err(ExecError::Fail(format!(
                        "BusinessWorks import of {file} rejected {doc}: {}",
                        e.message
                    )));
                }
                None if !self.import.file_present(file) => return Ok(Imported::Lost),
                None if started.elapsed() >= self.log_wait => {
                    return Err(ExecError::Retry(format!(
                        "BusinessWorks has not imported {file} yet (no log)"
                    )));
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn write_file(&self, file: &str, content: &str) -> Result<(), ExecError> {
        self.import
            .write(file, content)
            .await
            .map_err(|e| ExecError::Retry(format!("writing import file {file}: {e}")))
    }

    async fn upsert_customer(
        &self,
        key: &str,
        p: UpsertCustomer,
        pending: Option<Record>,
    ) -> Result<Value, ExecError> {
        if p.customer_no.trim().is_empty() {
            return Err(ExecError::Fail("a customer needs a customer number".into()));
        }
        let mut rec = CustomerRecord {
            customer_no: p.customer_no.clone(),
            name: p.customer_name,
            address1: p.address_line1,
            city: p.city,
            state: p.state,
            zip_code: p.zip_code,
            country: p.country_code,
            phone: p.telephone_no,
            email: p.email_address,
            salesforce_id: p.salesforce_id.clone(),
        };
        let (file, action, content) = match pending.and_then(|r| r.result) {
            // An earlier delivery wrote the file: read its result, never write a second one.
            Some(detail) => (
                detail["file"].as_str().unwrap_or_default().to_owned(),
                detail["action"].as_str().unwrap_or("created").to_owned(),
                // The content written then (it merged the BusinessWorks values of that time).
                match detail["content"].as_str() {
                    Some(c) => c.to_owned(),
                    None => rec.to_file().map_err(ExecError::Fail)?,
                },
            ),
            None => {
                let existing = self.reader.customer_by_no(&p.customer_no).await?;
                if let Some(c) = &existing
                    && !c.salesforce_id.is_empty()
                    && c.salesforce_id != p.salesforce_id
                {
                    return Err(ExecError::Fail(format!(
                        "customer {} belongs to Salesforce record {}, not {}",
                        c.customer_no, c.salesforce_id, p.salesforce_id
                    )));
                }
                if let Some(other) = self
                    .reader
                    .customer_by_salesforce_id(&p.salesforce_id)
                    .await?
                    && other.customer_no != p.customer_no
                {
                    return Err(ExecError::Fail(format!(
                        "Salesforce record {} is already customer {} in BusinessWorks, not {}",
                        p.salesforce_id, other.customer_no, p.customer_no
                    )));
                }
                if let Some(e) = existing.clone() {
                    // An update: a field we do not send keeps its BusinessWorks value rather
                    // than being blanked by the import.
                    for (ours, theirs) in [
                        (&mut rec.address1, e.address1),
                        (&mut rec.city, e.city),
                        (&mut rec.state, e.state),
                        (&mut rec.zip_code, e.zip_code),
                        (&mut rec.country, e.country),
                        (&mut rec.phone, e.phone),
                        (&mut rec.email, e.email),
                    ] {
                        if ours.is_empty() {
                            *ours = theirs;
                        }
                    }
                }
                let content = rec.to_file().map_err(ExecError::Fail)?;
                let action = if existing.is_some() {
                    "updated"
                } else {
                    "created"
                };
                let file = file_name("CUST", key);
                self.state
                    .put_pending(
                        key,
                        kind::UPSERT_CUSTOMER,
                        &p.customer_no,
                        &json!({"file": file, "action": action, "content": content}),
                    )
                    .await?;
                self.write_file(&file, &content).await?;
                (file, action.to_owned(), content)
            }
        };
        if let Imported::Lost = self.await_import(&file, &p.customer_no).await? {
            // A customer import is an upsert by number: writing it again is harmless.
            self.write_file(&file, &content).await?;
            if let Imported::Lost = self.await_import(&file, &p.customer_no).await? {
                return Err(ExecError::Retry(format!("{file} vanished without a log")));
            }
        }
        Ok(to_value(&CustomerResult {
            action,
            ar_division_no: DIVISION.to_owned(),
            customer_no: p.customer_no.clone(),
            document_no: format!("{DIVISION}-{}", p.customer_no),
        }))
    }

    async fn create_sales_order(
        &self,
        key: &str,
        p: CreateSalesOrder,
        pending: Option<Record>,
    ) -> Result<Value, ExecError> {
        super::import::file_date(&p.order_date).map_err(ExecError::Fail)?;
        if p.lines.is_empty() {
            return Err(ExecError::Fail("a sales order needs lines".into()));
        }
        let mut lines = Vec::with_capacity(p.lines.len());
        for l in &p.lines {
            let qty = Decimal::from_str(&l.quantity).map_err(|_| {
                ExecError::Fail(format!("quantity {:?} is not a number", l.quantity))
            })?;
            if qty <= Decimal::ZERO {
                return Err(ExecError::Fail("quantities must be positive".into()));
            }
            if l.unit_price_minor < 0 {
                return Err(ExecError::Fail("unit prices must not be negative".into()));
            }
            lines.push(OrderLineRecord {
                item_code: l.item_code.clone(),
                quantity: qty.normalize().to_string(),
                unit_price: Decimal::new(l.unit_price_minor, 2).to_string(),
            });
        }
        let pending_no = pending.as_ref().and_then(|r| r.document_no.clone());
        // Ours already, whoever imported it: never a second order for one Opportunity.
        if let Some(no) = self.reader.order_by_salesforce_id(&p.salesforce_id).await? {
            let action = if pending_no.as_deref() == Some(no.as_str()) {
                "created"
            } else {
                "found"
            };
            return Ok(to_value(&SalesOrderResult {
                sales_order_no: no.clone(),
                document_no: no,
                action: action.into(),
            }));
        }
        let mut order = OrderRecord {
            order_no: String::new(),
            customer_no: p.customer_no,
            order_date: p.order_date,
            customer_po: p.customer_po_no,
            salesforce_id: p.salesforce_id,
            lines,
        };
        let mut file = pending
            .as_ref()
            .and_then(|r| r.result.as_ref())
            .and_then(|d| d["file"].as_str())
            .map_or_else(|| file_name("ORDER", key), str::to_owned);
        match pending_no {
            Some(no) => order.order_no = no,
            None => {
                self.take_number_and_write(key, &mut order, &mut file, false)
                    .await?
            }
        }
        let mut rewritten = false;
        for _ in 0..5 {
            match self.await_import(&file, &order.order_no).await {
                Ok(Imported::Accepted) => {
                    return Ok(to_value(&SalesOrderResult {
                        sales_order_no: order.order_no.clone(),
                        document_no: order.order_no,
                        action: "created".into(),
                    }));
                }
                // Not in BusinessWorks (checked above by the Salesforce id), file gone, no log:
                // write it again under the same number, once.
                Ok(Imported::Lost) if !rewritten => {
                    rewritten = true;
                    let content = order.to_file().map_err(ExecError::Fail)?;
                    self.write_file(&file, &content).await?;
                }
                Ok(Imported::Lost) => {
                    return Err(ExecError::Retry(format!("{file} vanished without a log")));
                }
                // Rejected because someone took the number meanwhile (an order keyed in
                // BusinessWorks): take another number and import again.
                Err(ExecError::Fail(why)) => {
                    let taken = self.reader.order_numbers().await?;
                    if !taken.iter().any(|n| n.trim() == order.order_no) {
                        return Err(ExecError::Fail(why));
                    }
                    tracing::info!(order_no = %order.order_no, "order number taken meanwhile; taking another");
                    self.take_number_and_write(key, &mut order, &mut file, true)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ExecError::Fail(
            "no free order number after 5 attempts".into(),
        ))
    }

    /// Takes the next order number for `order`, records it (and the file name) as pending,
    /// then writes the file. `again`: an earlier number was refused, so the file is named after
    /// the number too (the earlier file's log stays as it is).
    async fn take_number_and_write(
        &self,
        key: &str,
        order: &mut OrderRecord,
        file: &mut String,
        again: bool,
    ) -> Result<(), ExecError> {
        order.order_no = self.next_order_no().await?;
        if again {
            *file = file_name("ORDER", &format!("{key}#{}", order.order_no));
        }
        // Recorded before the file is written: a re-delivery reads this file's log.
        self.state
            .put_pending(
                key,
                kind::CREATE_SALES_ORDER,
                &order.order_no,
                &json!({"file": file}),
            )
            .await?;
        let content = order.to_file().map_err(ExecError::Fail)?;
        self.write_file(file, &content).await
    }

    /// The next free order number: above every number in BusinessWorks and every number this
    /// agent has taken and not yet seen imported.
    async fn next_order_no(&self) -> Result<String, ExecError> {
        let mut used: HashSet<String> = self.reader.order_numbers().await?.into_iter().collect();
        used.extend(
            self.state
                .pending_documents(kind::CREATE_SALES_ORDER)
                .await?,
        );
        let mut max: u64 = 0;
        let mut width = self.order_no_width;
        for n in &used {
            if let Ok(v) = n.trim().parse::<u64>() {
                max = max.max(v);
                width = width.max(n.trim().len());
            }
        }
        let next = max
            .checked_add(1)
            .ok_or_else(|| ExecError::Fail("order numbers are exhausted".into()))?;
        Ok(format!("{next:0width$}"))
    }
}
