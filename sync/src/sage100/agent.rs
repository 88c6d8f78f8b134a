//! The on-premise agent: dials out to the server, leases commands (`/agent/v1/poll`),
//! executes them against Sage 100 and posts the outcome (`/agent/v1/results/{id}`).
//!
//! Exactly once: the agent keeps a local SQLite record per idempotency key. Before a create
//! it looks there: a finished command is answered from the record (a re-delivery after a lost
//! result or a server restart); a sales order whose number was taken but whose creation is not
//! confirmed is looked up in Sage (`GetSalesOrder`) before anything is created, and the order
//! carries the Salesforce id in a UDF so the lookup can tell it is ours. The server is
//! reached with capped exponential backoff while it is down; a result is re-sent until the
//! server has it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::reads::{self, ReadError};
use super::soap::{Client, Customer, Sage100Error, SalesOrder, SalesOrderLine};
use crate::agent_contract::{
    CreateSalesOrder, CustomerResult, ImportCashReceipts, ImportReceiptsResult, ReadChanges,
    SalesOrderResult, UpsertCustomer, kind,
};
use crate::agent_exec::ExecError;
use crate::agent_queue::{Command, Outcome};
use crate::odbc::Source;

/// The local idempotency record (`--state FILE`).
#[derive(Clone, Debug)]
pub struct StateStore {
    pool: SqlitePool,
}

/// One record: `pending` (a document number taken, creation not confirmed) or `done`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub status: String,
    pub document_no: Option<String>,
    pub result: Option<Value>,
}

impl StateStore {
    pub async fn open(path: &Path) -> Result<StateStore, sqlx::Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS agent_records (
                idempotency_key TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
                document_no TEXT,
                result TEXT,
                updated_ms INTEGER NOT NULL
            ) STRICT",
        )
        .execute(&pool)
        .await?;
        Ok(StateStore { pool })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>, sqlx::Error> {
        let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, document_no, result FROM agent_records WHERE idempotency_key = ?1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(status, document_no, result)| Record {
            status,
            document_no,
            result: result.and_then(|r| serde_json::from_str(&r).ok()),
        }))
    }

    /// Records that `document_no` was taken for `key` and its creation is not confirmed.
    pub async fn put_pending(
        &self,
        key: &str,
        kind: &str,
        document_no: &str,
    ) -> Result<(), sqlx::Error> {
        self.put(key, kind, "pending", Some(document_no), None)
            .await
    }

    async fn put(
        &self,
        key: &str,
        kind: &str,
        status: &str,
        document_no: Option<&str>,
        result: Option<&Value>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        put_record(&mut tx, key, kind, status, document_no, result).await?;
        tx.commit().await
    }

    /// The record's database, for a line that keeps more beside it (BusinessWorks' row hashes,
    /// written in the same transaction as a result).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Writes `key`'s record (`pending` with the document number taken, or `done` with the
/// result) inside `tx`.
pub(crate) async fn put_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: &str,
    kind: &str,
    status: &str,
    document_no: Option<&str>,
    result: Option<&Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_records (idempotency_key, kind, status, document_no, result, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (idempotency_key) DO UPDATE SET status = excluded.status,
           document_no = excluded.document_no, result = excluded.result, updated_ms = excluded.updated_ms",
    )
    .bind(key)
    .bind(kind)
    .bind(status)
    .bind(document_no)
    .bind(result.map(Value::to_string))
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where cash receipts go: a Visual Integrator import folder.
///
/// Layout (one CSV file per command, no header; a VI job `AR_CashReceipts` import with these
/// fixed columns): `DepositDate` (YYYYMMDD), `ARDivisionNo`, `CustomerNo`, `CheckNo` (the
/// payment reference), `PostingAmt` (decimal, 2 places), `InvoiceNo` (empty: on account),
/// `AmountPosted` (decimal, 2 places), `Comment` (the Salesforce id). The file is written
/// under a temporary name and renamed, so VI never reads half a file.
#[derive(Clone, Debug)]
pub struct ViFolder(pub std::path::PathBuf);

/// Runs commands against Sage 100.
#[derive(Clone, Debug)]
pub struct Executor {
    pub client: Client,
    pub state: StateStore,
    /// The UDF holding the Salesforce id on customers and sales orders (`UDF_SF_ID`).
    pub sf_udf: String,
    pub vi_folder: Option<ViFolder>,
    /// The ODBC data source the `read_*` commands query (`--odbc-file`); without it they fail.
    pub odbc: Option<Source>,
}

/// Minor units (2 decimal places) as a Sage 100 decimal string.
fn money(minor: i64) -> String {
    Decimal::new(minor, 2).to_string()
}

fn yyyymmdd(s: &str) -> Result<(), String> {
    chrono::NaiveDate::parse_from_str(s, "%Y%m%d")
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not a YYYYMMDD date"))
}

impl From<Sage100Error> for ExecError {
    fn from(e: Sage100Error) -> Self {
        match e {
            Sage100Error::Transport(_) => ExecError::Retry(e.to_string()),
            e => ExecError::Fail(e.to_string()),
        }
    }
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

/// A contract result as the command's JSON result.
fn to_value(r: impl serde::Serialize) -> Result<Value, ExecError> {
    serde_json::to_value(r).map_err(|e| ExecError::Fail(format!("result: {e}")))
}

impl Executor {
    /// Executes `cmd`: `Some(outcome)` to report, `None` when it must be retried later (Sage or
    /// the local record unreachable: the lease runs out and the command comes back).
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
        let bad = |e: serde_json::Error| ExecError::Fail(format!("{} payload: {e}", cmd.kind));
        let result = match cmd.kind.as_str() {
            kind::UPSERT_CUSTOMER => {
                self.upsert_customer(serde_json::from_value(cmd.payload.clone()).map_err(bad)?)
                    .await?
            }
            kind::CREATE_SALES_ORDER => {
                let pending_no = record.and_then(|r| r.document_no);
                self.create_sales_order(
                    key,
                    serde_json::from_value(cmd.payload.clone()).map_err(bad)?,
                    pending_no,
                )
                .await?
            }
            kind::IMPORT_CASH_RECEIPTS => {
                self.import_cash_receipts(
                    key,
                    serde_json::from_value(cmd.payload.clone()).map_err(bad)?,
                )
                .await?
            }
            k @ (kind::READ_CHANGED_INVOICES | kind::READ_CASH_RECEIPTS | kind::READ_ITEMS) => {
                let req: ReadChanges = serde_json::from_value(cmd.payload.clone()).map_err(bad)?;
                let Some(src) = &self.odbc else {
                    return Err(ExecError::Fail(format!(
                        "{k} needs the ODBC reader: this agent has no --odbc-file"
                    )));
                };
                match k {
                    kind::READ_CHANGED_INVOICES => {
                        to_value(reads::changed_invoices(src, &self.sf_udf, &req).await?)?
                    }
                    kind::READ_CASH_RECEIPTS => to_value(reads::cash_receipts(src, &req).await?)?,
                    _ => to_value(reads::items(src, &req).await?)?,
                }
            }
            other => {
                return Err(ExecError::Fail(format!("unknown command kind {other}")));
            }
        };
        self.state
            .put(
                key,
                &cmd.kind,
                "done",
                result["document_no"].as_str(),
                Some(&result),
            )
            .await?;
        Ok(result)
    }

    async fn upsert_customer(&self, p: UpsertCustomer) -> Result<Value, ExecError> {
        let mut c = Customer {
            ar_division_no: p.ar_division_no,
            customer_no: p.customer_no,
            customer_name: p.customer_name,
            address_line1: p.address_line1,
            city: p.city,
            state: p.state,
            zip_code: p.zip_code,
            country_code: p.country_code,
            telephone_no: p.telephone_no,
            email_address: p.email_address,
            udfs: vec![(self.sf_udf.clone(), p.salesforce_id.clone())],
        };
        let existing = match self
            .client
            .get_customer(&c.ar_division_no, &c.customer_no)
            .await
        {
            Ok(e) => Some(e),
            Err(e) if e.fault_code() == Some("CI_NoKey") => None,
            Err(e) => return Err(e.into()),
        };
        let action = match existing {
            None => match self.client.create_customer(&c).await {
                Ok(()) => "created",
                // Created meanwhile (by us on an earlier delivery, or by someone): check owner.
                Err(e) if e.fault_code() == Some("WS_AlreadyExists") => {
                    let now = self
                        .client
                        .get_customer(&c.ar_division_no, &c.customer_no)
                        .await?;
                    self.check_owner(&now, &p.salesforce_id)?;
                    self.client.update_customer(&c).await?;
                    "updated"
                }
                Err(e) => return Err(e.into()),
            },
            Some(e) => {
                self.check_owner(&e, &p.salesforce_id)?;
                // Merge: the fields we do not send keep their Sage values.
                for (k, v) in &e.udfs {
                    if !k.eq_ignore_ascii_case(&self.sf_udf) {
                        c.udfs.push((k.clone(), v.clone()));
                    }
                }
                self.client.update_customer(&c).await?;
                "updated"
            }
        };
        to_value(CustomerResult {
            action: action.into(),
            document_no: format!("{}-{}", c.ar_division_no, c.customer_no),
            ar_division_no: c.ar_division_no,
            customer_no: c.customer_no,
        })
    }

    fn check_owner(&self, c: &Customer, salesforce_id: &str) -> Result<(), ExecError> {
        match c.udf(&self.sf_udf) {
            Some(owner) if !owner.is_empty() && owner != salesforce_id => {
                Err(ExecError::Fail(format!(
                    "customer {}-{} belongs to Salesforce record {owner}, not {salesforce_id}",
                    c.ar_division_no, c.customer_no
                )))
            }
            _ => Ok(()),
        }
    }

    async fn create_sales_order(
        &self,
        key: &str,
        p: CreateSalesOrder,
        pending_no: Option<String>,
    ) -> Result<Value, ExecError> {
        yyyymmdd(&p.order_date).map_err(ExecError::Fail)?;
        if p.lines.is_empty() {
            return Err(ExecError::Fail("a sales order needs lines".into()));
        }
        let mut lines = Vec::new();
        for l in &p.lines {
            let q = Decimal::from_str(&l.quantity).map_err(|_| {
                ExecError::Fail(format!("quantity {:?} is not a number", l.quantity))
            })?;
            if q <= Decimal::ZERO {
                return Err(ExecError::Fail("quantities must be positive".into()));
            }
            if l.unit_price_minor < 0 {
                return Err(ExecError::Fail("unit prices must not be negative".into()));
            }
            lines.push(SalesOrderLine {
                item_code: l.item_code.clone(),
                quantity_ordered: q.normalize().to_string(),
                unit_price: money(l.unit_price_minor),
            });
        }
        let mut so = SalesOrder {
            sales_order_no: String::new(),
            ar_division_no: p.ar_division_no,
            customer_no: p.customer_no,
            customer_po_no: p.customer_po_no,
            order_date: p.order_date,
            lines,
            udfs: vec![(self.sf_udf.clone(), p.salesforce_id.clone())],
        };
        // A number taken on an earlier delivery: is the order already in Sage?
        if let Some(no) = pending_no {
            match self.client.get_sales_order(&no).await {
                Ok(existing) if existing.udf(&self.sf_udf) == Some(p.salesforce_id.as_str()) => {
                    return to_value(SalesOrderResult {
                        sales_order_no: no.clone(),
                        document_no: no,
                        action: "found".into(),
                    });
                }
                Ok(_) => {}
                Err(e) if e.fault_code() == Some("CI_NoKey") => {
                    so.sales_order_no = no;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for _ in 0..5 {
            if so.sales_order_no.is_empty() {
                so.sales_order_no = self.client.get_next_sales_order_no().await?;
                // Recorded before the create: a crash in between is resolved by the lookup above.
                self.state
                    .put(
                        key,
                        "create_sales_order",
                        "pending",
                        Some(&so.sales_order_no),
                        None,
                    )
                    .await?;
            }
            match self.client.create_sales_order(&so).await {
                Ok(()) => {
                    return to_value(SalesOrderResult {
                        sales_order_no: so.sales_order_no.clone(),
                        document_no: so.sales_order_no,
                        action: "created".into(),
                    });
                }
                Err(e) if e.fault_code() == Some("WS_AlreadyExists") => {
                    so.sales_order_no.clear();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecError::Fail(
            "no free sales order number after 5 attempts".into(),
        ))
    }

    async fn import_cash_receipts(
        &self,
        key: &str,
        p: ImportCashReceipts,
    ) -> Result<Value, ExecError> {
        let Some(ViFolder(dir)) = &self.vi_folder else {
            return Err(ExecError::Fail(
                "no Visual Integrator folder configured (--vi-folder)".into(),
            ));
        };
        let mut out = String::new();
        let mut total: i64 = 0;
        for r in &p.receipts {
            yyyymmdd(&r.deposit_date).map_err(ExecError::Fail)?;
            if r.amount_minor <= 0 {
                return Err(ExecError::Fail("receipt amounts must be positive".into()));
            }
            total = total
                .checked_add(r.amount_minor)
                .ok_or_else(|| ExecError::Fail("receipt total overflows".into()))?;
            let fields = [
                r.deposit_date.as_str(),
                &r.ar_division_no,
                &r.customer_no,
                &r.check_no,
                &money(r.amount_minor),
                &r.invoice_no,
                &money(r.amount_minor),
                &r.salesforce_id,
            ];
            let line: Vec<String> = fields
                .iter()
                .map(|f| {
                    if f.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", f.replace('"', "\"\""))
                    } else {
                        (*f).to_owned()
                    }
                })
                .collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        use sha2::Digest;
        let name = format!(
            "AR_CashReceipts_{}.csv",
            &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..16]
        );
        let tmp = dir.join(format!(".{name}.tmp"));
        tokio::fs::write(&tmp, out.as_bytes())
            .await
            .map_err(|e| ExecError::Retry(format!("writing {}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, dir.join(&name))
            .await
            .map_err(|e| ExecError::Retry(format!("renaming {}: {e}", tmp.display())))?;
        to_value(ImportReceiptsResult {
            file: name.clone(),
            document_no: name,
            receipts: u64::try_from(p.receipts.len()).unwrap_or(u64::MAX),
            total_minor: total,
        })
    }
}

/// How `cashloop agent` reaches the server.
#[derive(Clone)]
pub struct AgentOptions {
    /// The server's base URL (`https://cashloop.example.com`).
    pub server: String,
    pub name: String,
    /// The agent key (never logged).
    pub key: String,
    /// How long one poll waits for a command.
    pub wait_ms: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AgentOptions")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("wait_ms", &self.wait_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct PollAnswer {
    command: Option<Command>,
}

impl crate::agent_exec::CommandExecutor for Executor {
    async fn execute(&self, cmd: &Command) -> Option<Outcome> {
        Executor::execute(self, cmd).await
    }
}

/// Polls, executes and reports until `shutdown` resolves.
pub async fn run(
    opts: AgentOptions,
    executor: impl crate::agent_exec::CommandExecutor,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let http = gateway::http::client_builder()
        .timeout(Duration::from_millis(opts.wait_ms + 15_000))
        .build()
        .unwrap_or_else(|_| gateway::http::client());
    let base = opts.server.trim_end_matches('/').to_owned();
    let mut backoff = opts.backoff_min;
    tracing::info!(server = %base, agent = %opts.name, "agent started");
    loop {
        let polled = tokio::select! {
            _ = &mut shutdown => return,
            r = poll_once(&http, &base, &opts) => r,
        };
        let cmd = match polled {
            Ok(Some(c)) => c,
            Ok(None) => {
                backoff = opts.backoff_min;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "server unreachable");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(opts.backoff_max);
                continue;
            }
        };
        backoff = opts.backoff_min;
        tracing::info!(command = cmd.id, kind = %cmd.kind, deliveries = cmd.deliveries, "executing");
        let Some(outcome) = executor.execute(&cmd).await else {
            continue;
        };
        // Report until the server has it (it may restart meanwhile).
        let mut report_backoff = opts.backoff_min;
        loop {
            match report(&http, &base, &opts, cmd.id, &outcome).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(command = cmd.id, error = %e, "result not delivered; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(report_backoff) => {}
                    }
                    report_backoff = (report_backoff * 2).min(opts.backoff_max);
                }
            }
        }
    }
}

async fn poll_once(
    http: &reqwest::Client,
    base: &str,
    opts: &AgentOptions,
) -> Result<Option<Command>, String> {
    let resp = http
        .post(format!("{base}/agent/v1/poll"))
        .bearer_auth(&opts.key)
        .json(&json!({ "wait_ms": opts.wait_ms }))
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        return Err(format!("poll answered HTTP {}", resp.status()));
    }
    let a: PollAnswer = resp.json().await.map_err(|e| e.without_url().to_string())?;
    Ok(a.command)
}

async fn report(
    http: &reqwest::Client,
    base: &str,
    opts: &AgentOptions,
    id: i64,
    outcome: &Outcome,
) -> Result<(), String> {
    let body = match outcome {
        Outcome::Done(v) => json!({"status": "done", "result": v}),
        Outcome::Failed(e) => json!({"status": "failed", "error": e}),
    };
    let resp = http
        .post(format!("{base}/agent/v1/results/{id}"))
        .bearer_auth(&opts.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        // Not ours (or gone): nothing more to do with it.
        s if s == reqwest::StatusCode::NOT_FOUND => {
            tracing::warn!(
                command = id,
                "server does not know the command; result dropped"
            );
            Ok(())
        }
        s => Err(format!("results answered HTTP {s}")),
    }
}
