//! The agent-backed loop (Sage 100, BusinessWorks) against the Salesforce simulator, on SQLite
//! and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL. A scripted agent stands in for
//! `cashloop agent` here only: it leases the queued commands and finishes them with contract
//! results, and queues the result job as `POST /agent/v1/results/{id}` does.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use db::{Db, both_backends};
use ledger::{AccountCode, EntityCode, Ledger, LedgerOptions};
use rust_decimal::Decimal;
use serde_json::{Value as Json, json};
use sync::agent_contract::{
    CreateSalesOrder, CustomerResult, ImportCashReceipts, Invoice, InvoiceLine, InvoicesResult,
    ReadChanges, SalesOrderResult, UpsertCustomer,
};
use sync::agent_loop::{AgentLoop, AgentLoopConfig, ClosedWonStep, kinds, queue_result};
use sync::agent_queue::{self, Command, Outcome};
use sync::flows::SalesforceSync;
use sync::jobs::{Jobs, Registry};
use sync::objects::SageLine;
use sync::salesforce::Record;
use sync::salesforce::simulator::Simulator as SfSim;

struct World {
    sf: SfSim,
    sync: SalesforceSync,
    flow: Arc<AgentLoop>,
    ledger: Ledger,
    jobs: Jobs,
    db: Db,
    line: SageLine,
    agent: &'static str,
}

fn code(s: &str) -> AccountCode {
    AccountCode::parse(s, "code").unwrap()
}

async fn world(db: Db, line: SageLine) -> World {
    let (sf, sync) = support::salesforce(&db, vec![]).await;
    let ledger = Ledger::new(db.clone(), LedgerOptions::for_db(&db));
    let (usd, books) = support::ar_books(&ledger, "US", "USD", "").await;
    let accounts = HashMap::from([(usd, books)]);
    let agent = match line {
        SageLine::BusinessWorks => "bw",
        _ => "s100",
    };
    let jobs = Jobs::new(db.clone());
    let flow = AgentLoop::new(
        db.clone(),
        jobs.clone(),
        sync.clone(),
        ledger.clone(),
        AgentLoopConfig {
            line,
            agent: agent.into(),
            ar_division_no: "01".into(),
            currency: usd,
            ledger: accounts,
            max_rows: 50,
        },
    )
    .unwrap();
    World {
        sf,
        sync,
        flow: Arc::new(flow),
        ledger,
        jobs,
        db,
        line,
        agent,
    }
}

struct Deal {
    account: String,
    opportunity: String,
}

impl World {
    /// An account and a Closed Won opportunity with lines `(product code, qty, price)`.
    fn deal(&self, account: &str, lines: &[(&str, &str, &str)]) -> Deal {
        let acc = self
            .sf
            .insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", account)
                    .with("BillingStreet", "1 Main St")
                    .with("BillingCity", "Irvine")
                    .with("BillingState", "CA")
                    .with("BillingPostalCode", "92618")
                    .with("BillingCountry", "USA")],
            )
            .unwrap()
            .remove(0);
        self.opportunity(&acc, lines)
    }

    fn opportunity(&self, acc: &str, lines: &[(&str, &str, &str)]) -> Deal {
        let opp = self
            .sf
            .insert_as_user(
                "Opportunity",
                &[Record::new("Opportunity")
                    .with("Name", "deal")
                    .with("StageName", "Negotiation/Review")
                    .with("CloseDate", "2026-11-20")
                    .with("AccountId", acc)],
            )
            .unwrap()
            .remove(0);
        for (product_code, qty, price) in lines {
            let product = self
                .sf
                .insert_as_user(
                    "Product2",
                    &[Record::new("Product2")
                        .with("Name", *product_code)
                        .with("ProductCode", *product_code)
                        .with("IsActive", true)],
                )
                .unwrap()
                .remove(0);
            self.sf
                .insert_as_user(
                    "OpportunityLineItem",
                    &[Record::new("OpportunityLineItem")
                        .with("OpportunityId", opp.as_str())
                        .with("Product2Id", product.as_str())
                        .with("Quantity", qty.parse::<Decimal>().unwrap())
                        .with("UnitPrice", price.parse::<Decimal>().unwrap())],
                )
                .unwrap();
        }
        self.sf
            .update_as_user(
                "Opportunity",
                &opp,
                &Record::new("Opportunity").with("StageName", "Closed Won"),
            )
            .unwrap();
        Deal {
            account: acc.to_owned(),
            opportunity: opp,
        }
    }

    /// Runs every due job of the loop's kinds, as the worker would; answers (kind, error).
    async fn drain(&self) -> Vec<(String, Option<String>)> {
        let k = kinds(self.line).unwrap();
        let registry = AgentLoop::register_shared(self.flow.clone(), Registry::new());
        let names = registry.kinds();
        let kinds: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(kinds.contains(&k.agent_result));
        let mut ran = Vec::new();
        loop {
            let claimed = self
                .jobs
                .claim("test", &kinds, 10, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            if claimed.is_empty() {
                return ran;
            }
            for job in claimed {
                match self.flow.handle(&job).await {
                    Ok(()) => {
                        self.jobs.succeed(&job).await.unwrap();
                        ran.push((job.kind.clone(), None));
                    }
                    Err(e) => {
                        // Retryable errors are not expected here: fail them for good.
                        let e = match e {
                            sync::jobs::JobError::Retryable(m) => {
                                sync::jobs::JobError::Permanent(m)
                            }
                            p => p,
                        };
                        self.jobs.fail(&job, &e).await.unwrap();
                        ran.push((job.kind.clone(), Some(format!("{e:?}"))));
                    }
                }
            }
        }
    }

    /// The scripted agent: leases the next command, finishes it with `answer`'s outcome and
    /// queues the result job (what the agent API does). Answers the command.
    /// The agent's next command, answering cash receipt reads (queued beside every invoice
    /// read of a line that applies payments) with "nothing new" on the way: the tests of
    /// receipts lease them themselves.
    async fn lease(&self) -> Option<Command> {
        loop {
            let c = agent_queue::lease(&self.db, self.agent, 60_000)
                .await
                .unwrap()?;
            if c.kind != "read_cash_receipts" {
                return Some(c);
            }
            let empty = Outcome::Done(json!({"receipts": [], "next": null, "more": false}));
            agent_queue::finish(&self.db, self.agent, c.id, &empty)
                .await
                .unwrap();
            queue_result(&self.jobs, self.line, c.id).await.unwrap();
        }
    }

    async fn agent_step(&self, answer: impl FnOnce(&Command) -> Outcome) -> Command {
        let c = self.lease().await.expect("a command for the agent");
        let outcome = answer(&c);
        assert!(
            agent_queue::finish(&self.db, self.agent, c.id, &outcome)
                .await
                .unwrap()
        );
        queue_result(&self.jobs, self.line, c.id).await.unwrap();
        c
    }

    async fn nothing_for_the_agent(&self) {
        assert!(self.lease().await.is_none(), "no command expected");
    }

    async fn commands(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM agent_commands";
        match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.pool).await.unwrap(),
        }
    }

    async fn balance(&self, account: &str) -> i64 {
        self.ledger
            .balance(&EntityCode::parse("US", "e").unwrap(), &code(account), None)
            .await
            .unwrap()
            .balance
            .amount_minor()
    }

    fn field(&self, object: &str, id: &str, field: &str) -> Option<String> {
        self.sf
            .record(object, id)
            .and_then(|r| r.get(field).cloned())
            .and_then(|v| match v {
                sync::salesforce::Value::Null => None,
                other => Some(
                    other
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| other.as_decimal().map(|d| d.normalize().to_string()))
                        .unwrap_or_default(),
                ),
            })
    }

    /// Closed Won through the scripted agent: customer created, order `order_no` made.
    async fn ordered(&self, deal: &Deal, order_no: &str) -> (UpsertCustomer, CreateSalesOrder) {
        self.flow.queue_closed_won(&deal.opportunity).await.unwrap();
        self.drain().await;
        let mut customer = None;
        let c = self
            .agent_step(|c| {
                assert_eq!(c.kind, "upsert_customer");
                let p: UpsertCustomer = serde_json::from_value(c.payload.clone()).unwrap();
                let r = CustomerResult {
                    action: "created".into(),
                    ar_division_no: p.ar_division_no.clone(),
                    customer_no: p.customer_no.clone(),
                    document_no: format!("{}-{}", p.ar_division_no, p.customer_no),
                };
                customer = Some(p);
                Outcome::Done(json!(r))
            })
            .await;
        assert_eq!(c.kind, "upsert_customer");
        assert_eq!(
            self.drain().await,
            vec![(kinds(self.line).unwrap().agent_result.to_owned(), None)]
        );
        let order = self.answer_order(order_no).await;
        assert_eq!(self.drain().await.len(), 1);
        (customer.unwrap(), order)
    }

    async fn answer_order(&self, order_no: &str) -> CreateSalesOrder {
        let mut order = None;
        self.agent_step(|c| {
            assert_eq!(c.kind, "create_sales_order");
            order = Some(serde_json::from_value(c.payload.clone()).unwrap());
            Outcome::Done(json!(SalesOrderResult {
                sales_order_no: order_no.into(),
                document_no: order_no.into(),
                action: "created".into(),
            }))
        })
        .await;
        order.unwrap()
    }
}

fn invoice(
    no: &str,
    date: &str,
    order: Option<&str>,
    sales: i64,
    tax: i64,
    balance: i64,
) -> Invoice {
    Invoice {
        invoice_no: no.into(),
        invoice_date: date.into(),
        ar_division_no: "01".into(),
        customer_no: "ACMECORP".into(),
        sales_order_no: order.map(str::to_owned),
        salesforce_id: None,
        customer_po_no: String::new(),
        lines: vec![InvoiceLine {
            item_code: "WIDGET".into(),
            description: String::new(),
            quantity: "2".into(),
            unit_price_minor: sales / 2,
            extension_minor: sales,
        }],
        sales_minor: sales,
        sales_tax_minor: tax,
        freight_minor: 0,
        total_minor: sales + tax,
        balance_minor: balance,
    }
}

/// Closed Won → upsert_customer → create_sales_order → Salesforce; replays make nothing new.
async fn closed_won(db: Db) {
    let w = world(db, SageLine::Sage100).await;
    let deal = w.deal(
        "Acme Corp.",
        &[("WIDGET", "2", "12.50"), ("SUPPORT", "1", "99.99")],
    );
    let (customer, order) = w.ordered(&deal, "0000001").await;
    assert_eq!(
        (
            customer.salesforce_id.as_str(),
            customer.ar_division_no.as_str(),
            customer.customer_no.as_str()
        ),
        (deal.account.as_str(), "01", "ACMECORP")
    );
    assert_eq!(customer.customer_name, "Acme Corp.");
    assert_eq!(
        (customer.city.as_str(), customer.state.as_str()),
        ("Irvine", "CA")
    );
    assert_eq!(order.salesforce_id, deal.opportunity);
    assert_eq!(
        (order.customer_no.as_str(), order.order_date.as_str()),
        ("ACMECORP", "20261120")
    );
    let lines: Vec<(&str, &str, i64)> = order
        .lines
        .iter()
        .map(|l| {
            (
                l.item_code.as_str(),
                l.quantity.as_str(),
                l.unit_price_minor,
            )
        })
        .collect();
    assert_eq!(lines, vec![("WIDGET", "2", 1250), ("SUPPORT", "1", 9999)]);

    w.sync.push("Opportunity", None).await.unwrap();
    w.sync.push("Account", None).await.unwrap();
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Sage_Order_Number__c")
            .as_deref(),
        Some("0000001")
    );
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Sage_Invoice_Status__c")
            .as_deref(),
        Some("Ordered")
    );
    assert_eq!(
        w.field("Account", &deal.account, "Sage_Customer_Id__c")
            .as_deref(),
        Some("ACMECORP")
    );

    // Replays: the Closed Won job is queued once; run again it finds the order; the result
    // jobs are queued once per command and, run again, queue nothing.
    let before = w.commands().await;
    assert_eq!(
        w.flow.queue_closed_won(&deal.opportunity).await.unwrap(),
        None
    );
    assert_eq!(
        w.flow.closed_won(&deal.opportunity).await.unwrap(),
        Some(ClosedWonStep::Ordered {
            sales_order_no: "0000001".into()
        })
    );
    for id in 1..=before {
        assert_eq!(queue_result(&w.jobs, w.line, id).await.unwrap(), None);
        w.flow.agent_result(id, false).await.unwrap();
    }
    assert_eq!(w.commands().await, before);
    w.nothing_for_the_agent().await;

    // Another deal of the same Account: the customer is known, the order is queued at once.
    let second = w.opportunity(&deal.account, &[("WIDGET", "1", "12.50")]);
    match w.flow.closed_won(&second.opportunity).await.unwrap() {
        Some(ClosedWonStep::OrderQueued { .. }) => {}
        other => panic!("{other:?}"),
    }
    let o = w.answer_order("0000002").await;
    assert_eq!(o.customer_no, "ACMECORP");
    w.drain().await;
    w.nothing_for_the_agent().await;

    // Another Account of the same name gets a number of its own.
    let other = w.deal("ACME CORP", &[("WIDGET", "1", "12.50")]);
    w.flow.queue_closed_won(&other.opportunity).await.unwrap();
    w.drain().await;
    let c = w
        .agent_step(|_| Outcome::Failed("not answered in this test".into()))
        .await;
    let p: UpsertCustomer = serde_json::from_value(c.payload).unwrap();
    assert_eq!(p.customer_no, "ACMECORP2");
    // Its failure is in the error queue; the Account is fixed in Salesforce and the job
    // retried: the customer command is issued again, read again, with the same number.
    w.drain().await;
    let dead = w.jobs.list(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("upsert_customer failed: not answered in this test"))
    );
    w.sf.update_as_user(
        "Account",
        &other.account,
        &Record::new("Account").with("Name", "Acme Corporation West"),
    )
    .unwrap();
    w.jobs.retry(dead[0].id, "ops").await.unwrap();
    w.drain().await;
    let again = w
        .agent_step(|c| {
            let p: UpsertCustomer = serde_json::from_value(c.payload.clone()).unwrap();
            Outcome::Done(json!(CustomerResult {
                action: "created".into(),
                ar_division_no: p.ar_division_no,
                customer_no: p.customer_no.clone(),
                document_no: p.customer_no,
            }))
        })
        .await;
    assert_ne!(again.idempotency_key, c.idempotency_key);
    let p: UpsertCustomer = serde_json::from_value(again.payload).unwrap();
    assert_eq!(
        (p.customer_no.as_str(), p.customer_name.as_str()),
        ("ACMECORP2", "Acme Corporation West")
    );
    // … and the order follows.
    w.drain().await;
    let o = w.answer_order("0000003").await;
    assert_eq!(o.customer_no, "ACMECORP2");
    // Not Closed Won: nothing.
    let open =
        w.sf.insert_as_user(
            "Opportunity",
            &[Record::new("Opportunity")
                .with("Name", "open")
                .with("StageName", "Prospecting")
                .with("CloseDate", "2026-11-20")
                .with("AccountId", deal.account.as_str())],
        )
        .unwrap()
        .remove(0);
    assert_eq!(w.flow.closed_won(&open).await.unwrap(), None);
}

/// A failed command reaches the error queue with the agent's text; a retry re-issues it under
/// a new key, built again from Salesforce.
async fn failed_command(db: Db) {
    let w = world(db, SageLine::Sage100).await;
    let deal = w.deal("Globex", &[("NOPE", "1", "10.00")]);
    w.flow.queue_closed_won(&deal.opportunity).await.unwrap();
    w.drain().await;
    w.agent_step(|c| {
        let p: UpsertCustomer = serde_json::from_value(c.payload.clone()).unwrap();
        Outcome::Done(json!(CustomerResult {
            action: "created".into(),
            ar_division_no: p.ar_division_no,
            customer_no: p.customer_no.clone(),
            document_no: p.customer_no,
        }))
    })
    .await;
    w.drain().await;
    let failed = w
        .agent_step(|c| {
            assert_eq!(c.kind, "create_sales_order");
            Outcome::Failed("CI_NOF: Item NOPE is not on file.".into())
        })
        .await;
    let ran = w.drain().await;
    assert_eq!(ran.len(), 1);
    let dead = w.jobs.list(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let job = &dead[0];
    assert_eq!(job.kind, "sage100.agent_result");
    assert_eq!(job.last_error_kind.as_deref(), Some("permanent"));
    let text = job.last_error.clone().unwrap();
    assert!(text.contains("CI_NOF: Item NOPE is not on file."), "{text}");
    assert!(text.contains("create_sales_order"), "{text}");

    // A person retries: the command is issued again under a new key.
    w.jobs.retry(job.id, "ops").await.unwrap();
    assert_eq!(
        w.drain().await,
        vec![("sage100.agent_result".to_owned(), None)]
    );
    let again = w
        .agent_step(|c| {
            assert_eq!(c.kind, "create_sales_order");
            Outcome::Done(json!(SalesOrderResult {
                sales_order_no: "0000007".into(),
                document_no: "0000007".into(),
                action: "created".into(),
            }))
        })
        .await;
    assert_ne!(again.id, failed.id);
    assert_ne!(again.idempotency_key, failed.idempotency_key);
    assert!(again.idempotency_key.starts_with(&failed.idempotency_key));
    w.drain().await;
    // The retried job again (a replay) issues nothing more.
    w.flow.agent_result(failed.id, true).await.unwrap();
    w.nothing_for_the_agent().await;
    w.sync.push("Opportunity", None).await.unwrap();
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Sage_Order_Number__c")
            .as_deref(),
        Some("0000007")
    );

    // A failed invoice read: one error queue entry, no new read per tick until a person
    // retries it, and the retry reads from the same cursor again.
    w.flow.pull("t1").await.unwrap().unwrap();
    w.agent_step(|_| Outcome::Failed("ODBC: [unixODBC] data source not found".into()))
        .await;
    w.drain().await;
    assert_eq!(w.flow.pull("t2").await.unwrap(), None);
    w.nothing_for_the_agent().await;
    let dead = w.jobs.list(Some("dead"), 10).await.unwrap();
    let read_job = dead
        .iter()
        .find(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("data source not found"))
        })
        .expect("the failed read in the error queue");
    w.jobs.retry(read_job.id, "ops").await.unwrap();
    w.drain().await;
    w.agent_step(|c| {
        assert_eq!(c.kind, "read_changed_invoices");
        let p: ReadChanges = serde_json::from_value(c.payload.clone()).unwrap();
        assert_eq!(p.since, None);
        Outcome::Done(json!(InvoicesResult {
            invoices: vec![],
            next: Some("c9".into()),
            more: false
        }))
    })
    .await;
    w.drain().await;
    assert!(w.flow.pull("t3").await.unwrap().is_some());
}

/// Invoice reads: paging with `more`, the cursor, Opportunity fields, one ledger entry per
/// invoice even when read twice; then a payment allocated oldest first, the rest on account.
async fn invoices_and_payments(db: Db) {
    let w = world(db, SageLine::Sage100).await;
    let deal = w.deal("Acme Corp", &[("WIDGET", "2", "12.50")]);
    w.ordered(&deal, "0000001").await;

    assert_eq!(w.flow.queue_pull(1).await.unwrap(), ());
    w.drain().await;
    // One read in flight per line.
    assert_eq!(w.flow.pull("again").await.unwrap(), None);
    let first = w
        .agent_step(|c| {
            assert_eq!(c.kind, "read_changed_invoices");
            let p: ReadChanges = serde_json::from_value(c.payload.clone()).unwrap();
            assert_eq!(
                p,
                ReadChanges {
                    since: None,
                    max_rows: 50
                }
            );
            Outcome::Done(json!(InvoicesResult {
                invoices: vec![
                    invoice("0100001", "20261121", Some("0000001"), 2500, 200, 2700),
                    // Not ours: skipped.
                    invoice("0100002", "20261121", Some("0009999"), 1000, 0, 1000),
                ],
                next: Some("c1".into()),
                more: true,
            }))
        })
        .await;
    w.drain().await;
    assert_eq!(w.balance("1200").await, 2700);
    assert_eq!(w.balance("4000").await, 2500);
    assert_eq!(w.balance("2200").await, 200);
    // `more`: the next page is queued at once, from `next`.
    w.agent_step(|c| {
        let p: ReadChanges = serde_json::from_value(c.payload.clone()).unwrap();
        assert_eq!(p.since.as_deref(), Some("c1"));
        Outcome::Done(json!(InvoicesResult {
            invoices: vec![
                // Read again (partly paid since): posted once all the same.
                invoice("0100001", "20261121", Some("0000001"), 2500, 200, 700),
                invoice("0100003", "20261122", Some("0000001"), 1000, 0, 1000),
            ],
            next: Some("c2".into()),
            more: false,
        }))
    })
    .await;
    w.drain().await;
    w.nothing_for_the_agent().await;
    assert_eq!(w.balance("1200").await, 3700);
    // The first result handled again (a retry): nothing posted twice, the cursor stays.
    w.flow.agent_result(first.id, false).await.unwrap();
    assert_eq!(w.balance("1200").await, 3700);
    w.sync.push("Opportunity", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &deal.opportunity, f);
    assert_eq!(
        opp("Sage_Invoice_Number__c").as_deref(),
        Some("0100001, 0100003")
    );
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("17"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Partially Paid"));
    assert_eq!(
        opp("Sage_Invoice_Status__c").as_deref(),
        Some("Partly Paid")
    );
    let opp_id = deal.opportunity.clone();
    // The next pull starts at the stored cursor.
    w.flow.pull("tick2").await.unwrap().unwrap();
    w.agent_step(|c| {
        let p: ReadChanges = serde_json::from_value(c.payload.clone()).unwrap();
        assert_eq!(p.since.as_deref(), Some("c2"));
        // An invoice without its sales order number, found by the Opportunity id Sage kept.
        let mut by_sf = invoice("0100004", "20261123", None, 500, 0, 500);
        by_sf.salesforce_id = Some(opp_id.clone());
        Outcome::Done(json!(InvoicesResult {
            invoices: vec![by_sf],
            next: Some("c3".into()),
            more: false
        }))
    })
    .await;
    w.drain().await;
    assert_eq!(w.balance("1200").await, 4200);

    // A gateway payment of 20.00: oldest first — 7.00, 10.00, then 3.00 of the newest.
    let pay = json!({"payment_id": "pay_s100_1", "opportunity_id": deal.opportunity,
        "account_id": deal.account, "method_kind": "card", "status": "captured",
        "currency": "USD", "amount_minor": 2000, "captured_minor": 2000, "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    w.flow.payment(&pay).await.unwrap();
    let c = w.lease().await.unwrap();
    assert_eq!(c.kind, "import_cash_receipts");
    let p: ImportCashReceipts = serde_json::from_value(c.payload).unwrap();
    let got: Vec<(&str, i64)> = p
        .receipts
        .iter()
        .map(|r| (r.invoice_no.as_str(), r.amount_minor))
        .collect();
    assert_eq!(
        got,
        vec![("0100001", 700), ("0100003", 1000), ("0100004", 300)]
    );
    // One short check number (Sage 100's CheckNo holds 10) for the payment's receipts; the
    // payment id is their comment.
    assert!(p.receipts.iter().all(|r| r.customer_no == "ACMECORP"
        && r.ar_division_no == "01"
        && r.salesforce_id == "pay_s100_1"
        && r.check_no.len() == 10
        && r.check_no == p.receipts[0].check_no));
    w.nothing_for_the_agent().await;
    // A second payment before the next read: what is left of the newest, the rest on account.
    let mut second = pay.clone();
    second["payment_id"] = json!("pay_s100_2");
    second["amount_minor"] = json!(500);
    second["captured_minor"] = json!(500);
    w.flow.payment(&second).await.unwrap();
    let c = agent_queue::lease(&w.db, "s100", 60_000)
        .await
        .unwrap()
        .unwrap();
    let p: ImportCashReceipts = serde_json::from_value(c.payload).unwrap();
    let got: Vec<(&str, i64)> = p
        .receipts
        .iter()
        .map(|r| (r.invoice_no.as_str(), r.amount_minor))
        .collect();
    assert_eq!(got, vec![("0100004", 200), ("", 300)]);
    w.sync.push("Cashloop_Payment__c", None).await.unwrap();
    assert_eq!(
        w.sf.find("Cashloop_Payment__c", "Gateway_Payment_Id__c", "pay_s100_1")
            .len(),
        1
    );
    // A refund waits in review for a person.
    let mut refund = pay.clone();
    refund["kind"] = json!("refund");
    refund["status"] = json!("refunded");
    refund["refunded_minor"] = json!(2000);
    w.flow.payment(&refund).await.unwrap();
    let items = sync::review::Review::new(w.db.clone())
        .open_items(10)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].detail["reason"], "payment_reversed");
    w.nothing_for_the_agent().await;
}

/// BusinessWorks: the same commands; a payment goes to review, nothing is imported.
async fn businessworks(db: Db) {
    let w = world(db, SageLine::BusinessWorks).await;
    let deal = w.deal("Initech", &[("WIDGET", "1", "12.50")]);
    w.ordered(&deal, "BW-1").await;
    w.sync.push("Opportunity", None).await.unwrap();
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Sage_Order_Number__c")
            .as_deref(),
        Some("BW-1")
    );
    let pay = json!({"payment_id": "pay_bw_1", "opportunity_id": deal.opportunity,
        "status": "captured", "currency": "USD", "amount_minor": 1250,
        "captured_minor": 1250, "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    w.nothing_for_the_agent().await;
    let items = sync::review::Review::new(w.db.clone())
        .open_items(10)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].detail["reason"], "apply_in_sage");
    let note = items[0].detail["note"].as_str().unwrap();
    assert!(
        note.contains("apply this payment in Sage BusinessWorks"),
        "{note}"
    );
    assert_eq!(items[0].record_key, deal.opportunity);
    let _: &Json = &items[0].detail;
}

both_backends!(closed_won_through_the_agent, |t| closed_won(t.db.clone()));
both_backends!(failed_command_reaches_the_error_queue_and_retries, |t| {
    failed_command(t.db.clone())
});
both_backends!(invoice_reads_and_payment_allocation, |t| {
    invoices_and_payments(t.db.clone())
});
both_backends!(businessworks_payments_go_to_review, |t| businessworks(
    t.db.clone()
));

/// Sage 100 receipts: every pull also reads cash receipts; a failed receipts read holds its
/// own schedule (one error queue entry) while invoice reads go on; a keyed cheque of a linked
/// customer is booked Dr cash / Cr AR once, a receipt of an unknown customer is skipped.
async fn receipts(db: Db) {
    let w = world(db, SageLine::Sage100).await;
    let deal = w.deal("Acme Corp", &[("WIDGET", "2", "12.50")]);
    let (customer, _) = w.ordered(&deal, "0000001").await;
    let kinds = |c: &Command| c.kind.clone();
    let raw = || async { agent_queue::lease(&w.db, w.agent, 60_000).await.unwrap() };
    let empty_invoices = Outcome::Done(json!({"invoices": [], "next": null, "more": false}));

    w.flow.pull("r1").await.unwrap().unwrap();
    let inv = raw().await.unwrap();
    let rec = raw().await.unwrap();
    assert_eq!(
        (kinds(&inv).as_str(), kinds(&rec).as_str()),
        ("read_changed_invoices", "read_cash_receipts")
    );
    for (c, o) in [
        (&inv, empty_invoices.clone()),
        (
            &rec,
            Outcome::Failed("ODBC: AR_CashReceiptsHistory: no such table".into()),
        ),
    ] {
        agent_queue::finish(&w.db, w.agent, c.id, &o).await.unwrap();
        queue_result(&w.jobs, w.line, c.id).await.unwrap();
    }
    w.drain().await;
    // The next tick reads invoices again, but no receipts while the failure waits for a person.
    w.flow.pull("r2").await.unwrap().unwrap();
    let next = raw().await.unwrap();
    assert_eq!(next.kind, "read_changed_invoices");
    assert!(raw().await.is_none(), "no second receipts read");
    agent_queue::finish(&w.db, w.agent, next.id, &empty_invoices)
        .await
        .unwrap();
    queue_result(&w.jobs, w.line, next.id).await.unwrap();
    w.drain().await;
    let dead = w.jobs.list(Some("dead"), 10).await.unwrap();
    let failed = dead
        .iter()
        .find(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("no such table"))
        })
        .expect("the failed receipts read in the error queue");
    assert_eq!(dead.len(), 1, "{dead:?}");

    // A person fixes the data source and retries: the read is issued again.
    w.jobs.retry(failed.id, "ops").await.unwrap();
    w.drain().await;
    let again = raw().await.unwrap();
    assert_eq!(again.kind, "read_cash_receipts");
    let receipt = |customer_no: &str, check: &str, amount: i64| {
        json!({"deposit_no": "00042", "ar_division_no": "01", "customer_no": customer_no,
               "check_no": check, "deposit_date": "20261125", "amount_minor": amount,
               "invoice_no": "0100001"})
    };
    let result = Outcome::Done(json!({"receipts": [
            receipt(&customer.customer_no, "CHK77", 1500),
            receipt("STRANGER", "CHK78", 900),
        ], "next": "r9", "more": false}));
    agent_queue::finish(&w.db, w.agent, again.id, &result)
        .await
        .unwrap();
    queue_result(&w.jobs, w.line, again.id).await.unwrap();
    w.drain().await;
    assert_eq!(w.balance("1010").await, 1500, "the cheque, once");
    // The same result handled again (a replay) books nothing more.
    w.flow.agent_result(again.id, false).await.unwrap();
    assert_eq!(w.balance("1010").await, 1500);

    // A gateway payment's own receipt, read back after the VI import: not booked (the
    // gateway booked that money at capture).
    let pay = json!({"payment_id": "pay_s100_r", "opportunity_id": deal.opportunity,
        "account_id": deal.account, "method_kind": "card", "status": "captured",
        "currency": "USD", "amount_minor": 2500, "captured_minor": 2500, "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    let import = w.lease().await.unwrap();
    assert_eq!(import.kind, "import_cash_receipts");
    let check = import.payload["receipts"][0]["check_no"]
        .as_str()
        .unwrap()
        .to_owned();
    w.flow.pull("r3").await.unwrap().unwrap();
    let _invoices = raw().await.unwrap();
    let read = raw().await.unwrap();
    assert_eq!(read.kind, "read_cash_receipts");
    let ours = Outcome::Done(
        json!({"receipts": [receipt(&customer.customer_no, &check, 2500)],
        "next": "r10", "more": false}),
    );
    agent_queue::finish(&w.db, w.agent, read.id, &ours)
        .await
        .unwrap();
    w.flow.agent_result(read.id, false).await.unwrap();
    assert_eq!(
        w.balance("1010").await,
        1500,
        "our own receipt is not booked"
    );
    assert!(w.ledger.verify(&|_| {}).await.unwrap().ok());
}

both_backends!(sage_100_receipts_are_read_and_booked_once, |t| receipts(
    t.db.clone()
));
