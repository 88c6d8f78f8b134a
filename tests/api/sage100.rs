//! The on-premise lines end to end: a real server with `[sync.sage100]` or
//! `[sync.businessworks]` and `[[agents]]`, the Salesforce simulator sending its signed Closed
//! Won event, the REAL agent (`sync::sage100::agent::run`) executing the commands — against the
//! eBusiness Web Services simulator and, for reads, through the real SQLite ODBC driver over the
//! simulator's File Layout database (Sage 100); as import files and ODBC reads (BusinessWorks)
//! — on SQLite and PostgreSQL.

use std::time::Duration;

use sha2::Digest;
use sync::sage100::agent::{AgentOptions, Executor, StateStore};
use sync::sage100::simulator::Simulator;
use sync::sage100::soap::Client;
use sync::salesforce::Record;
use sync::salesforce::simulator::{Simulator as SfSim, SimulatorConfig as SfSimConfig};

use super::*;

const AGENT_KEY: &str = "agent-key-5a1d9c3e7b2f4a6081d3e5c7";
const WS_USER: &str = "ws";
const WS_PASSWORD: &str = "ws-Pa55word";

fn start_agent(base: &str, executor: Executor) -> tokio::sync::oneshot::Sender<()> {
    start_agent_as("s100", base, executor)
}

fn start_agent_as(
    name: &str,
    base: &str,
    executor: impl sync::agent_exec::CommandExecutor + Send + Sync + 'static,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = AgentOptions {
        server: base.to_owned(),
        name: name.into(),
        key: AGENT_KEY.into(),
        wait_ms: 500,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    };
    tokio::spawn(sync::sage100::agent::run(opts, executor, async move {
        let _ = stopped.await;
    }));
    stop
}

fn text_field(sf: &SfSim, object: &str, id: &str, field: &str) -> Option<String> {
    sf.record(object, id)
        .and_then(|r| r.get(field).cloned())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// An Account and an Opportunity with one product line, then Closed Won (the event fires).
fn closed_won(sf: &SfSim, account: &str, product_code: &str) -> (String, String) {
    let acc = sf
        .insert_as_user("Account", &[Record::new("Account").with("Name", account)])
        .unwrap()
        .remove(0);
    let opp = sf
        .insert_as_user(
            "Opportunity",
            &[Record::new("Opportunity")
                .with("Name", format!("{account} deal"))
                .with("StageName", "Prospecting")
                .with("CloseDate", "2026-11-20")
                .with("AccountId", acc.as_str())],
        )
        .unwrap()
        .remove(0);
    let product = sf
        .insert_as_user(
            "Product2",
            &[Record::new("Product2")
                .with("Name", product_code)
                .with("ProductCode", product_code)
                .with("IsActive", true)],
        )
        .unwrap()
        .remove(0);
    sf.insert_as_user(
        "OpportunityLineItem",
        &[Record::new("OpportunityLineItem")
            .with("OpportunityId", opp.as_str())
            .with("Product2Id", product.as_str())
            .with("Quantity", rust_decimal::Decimal::new(2, 0))
            .with("UnitPrice", rust_decimal::Decimal::new(1250, 2))],
    )
    .unwrap();
    sf.update_as_user(
        "Opportunity",
        &opp,
        &Record::new("Opportunity").with("StageName", "Closed Won"),
    )
    .unwrap();
    (acc, opp)
}

both!(
    closed_won_reaches_sage_100_through_the_agent,
    |t| async move {
        let OnPrem { app, sf, dir } = on_prem(&t, "sage100", "s100").await;
        let sage = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
        let _agent = start_agent(
            &app.base,
            Executor {
                client: Client::new(&sage.url(), WS_USER, WS_PASSWORD, "ABC"),
                state: StateStore::open(&dir.path().join("agent.db"))
                    .await
                    .unwrap(),
                sf_udf: "UDF_SF_ID".into(),
                vi_folder: None,
                odbc: Some(sync::odbc::Source::new(sage.odbc_connection_string())),
            },
        );

        // Closed Won in Salesforce → customer and sales order in Sage 100 → numbers back.
        let (acc, opp) = closed_won(&sf, "Acme Corp", "WIDGET");
        let mut order_no = None;
        for _ in 0..400 {
            order_no = text_field(&sf, "Opportunity", &opp, "Sage_Order_Number__c");
            if order_no.is_some()
                && text_field(&sf, "Account", &acc, "Sage_Customer_Id__c").is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let customers = sage.customers();
        assert_eq!(customers.len(), 1, "{customers:?}");
        assert_eq!(
            (
                customers[0].ar_division_no.as_str(),
                customers[0].customer_no.as_str()
            ),
            ("01", "ACMECORP")
        );
        assert_eq!(customers[0].udf("UDF_SF_ID"), Some(acc.as_str()));
        let orders = sage.sales_orders();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].udf("UDF_SF_ID"), Some(opp.as_str()));
        assert_eq!(orders[0].customer_no, "ACMECORP");
        assert_eq!(
            (
                orders[0].lines[0].item_code.as_str(),
                orders[0].lines[0].unit_price.as_str()
            ),
            ("WIDGET", "12.50")
        );
        assert_eq!(order_no.as_deref(), Some(orders[0].sales_order_no.as_str()));
        assert_eq!(
            text_field(&sf, "Account", &acc, "Sage_Customer_Id__c").as_deref(),
            Some("ACMECORP")
        );

        // An item Sage 100 does not know: the agent's fault text reaches the error queue.
        let (_, bad) = closed_won(&sf, "Globex", "NOPE");
        let mut dead = None;
        for _ in 0..400 {
            let (_, list, _) = app
                .call(
                    "GET",
                    "/v1/sync/jobs?status=dead",
                    Some(ADMIN_KEY),
                    None,
                    None,
                )
                .await;
            dead = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| {
                    j["kind"] == "sage100.agent_result"
                        && j["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("CI_NOF"))
                })
                .cloned();
            if dead.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dead = dead.expect("the failed order in the error queue");
        let text = dead["last_error"].as_str().unwrap();
        assert!(text.contains("Item NOPE is not on file."), "{text}");
        // The operator's view of the agent's commands: the failed order with Sage's text.
        let (status, failed, _) = app
            .call(
                "GET",
                "/v1/agents/commands?agent=s100&status=failed",
                Some(AUDITOR_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{failed}");
        let failed = failed["data"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0]["kind"], "create_sales_order");
        assert!(
            failed[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("CI_NOF")),
            "{failed:?}"
        );
        assert!(failed[0].get("payload").is_none());
        let (_, done, _) = app
            .call(
                "GET",
                "/v1/agents/commands?status=done",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert!(
            done["data"].as_array().unwrap().len() >= 3,
            "two customers and an order: {done}"
        );
        let (status, _, _) = app
            .call(
                "GET",
                "/v1/agents/commands?status=lost",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(sage.sales_orders().len(), 1);
        assert!(text_field(&sf, "Opportunity", &bad, "Sage_Order_Number__c").is_none());

        // A person retries it: the order command is issued again (a new key), and fails again
        // with Sage's text while the item is still unknown.
        let orders_sql = "SELECT COUNT(*) FROM agent_commands WHERE kind = 'create_sales_order'";
        assert_eq!(db_count(&t, orders_sql).await.0, 2);
        let (status, _, _) = app
            .call(
                "POST",
                &format!("/v1/sync/jobs/{}/retry", dead["id"]),
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200);
        // The retried job succeeds (it re-issued the command); the new command's job is dead.
        let dead_sql = "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'sage100.agent_result' AND last_error LIKE '%CI_NOF%'";
        let mut n = 0;
        for _ in 0..400 {
            n = db_count(&t, dead_sql).await.0;
            if n == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            n,
            2,
            "the re-issued command failed in its own job: {}\n{}",
            db::testing::table_text(&t.db, "sync_jobs", "id").await,
            db::testing::table_text(&t.db, "agent_commands", "id").await
        );
        assert_eq!(db_count(&t, orders_sql).await.0, 3);
        let (_, list, _) = app
            .call(
                "GET",
                "/v1/sync/jobs?status=dead",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        let still: Vec<&Value> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| {
                j["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("CI_NOF"))
            })
            .collect();
        assert_eq!(still.len(), 1);
        assert_ne!(still[0]["id"], dead["id"]);

        // The agent re-sends a result already recorded (it crashed before seeing the answer, and
        // the server had lost the job): the job is queued again, and running it makes nothing new.
        let first_sql = "SELECT MIN(id) FROM agent_commands WHERE kind = 'upsert_customer'";
        let customer_cmd = db_count(&t, first_sql).await.0;
        let key = format!("sage100.agent_result:{customer_cmd}");
        match &t.db {
            db::Db::Postgres(p) => {
                sqlx::query("DELETE FROM sync_jobs WHERE dedupe_key = $1")
                    .bind(&key)
                    .execute(p)
                    .await
                    .unwrap();
            }
            db::Db::Sqlite(s) => {
                sqlx::query("DELETE FROM sync_jobs WHERE dedupe_key = ?1")
                    .bind(&key)
                    .execute(&s.pool)
                    .await
                    .unwrap();
            }
        }
        let resend =
            json!({"status": "done", "result": {"action": "created", "ar_division_no": "01",
        "customer_no": "ACMECORP", "document_no": "01-ACMECORP"}})
            .to_string();
        let (status, body, _) = app
            .call(
                "POST",
                &format!("/agent/v1/results/{customer_cmd}"),
                Some(AGENT_KEY),
                None,
                Some(&resend),
            )
            .await;
        assert_eq!((status, &body["recorded"]), (200, &json!(false)), "{body}");
        let job_sql = "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'sage100.agent_result' AND status = 'succeeded'";
        let before = db_count(&t, job_sql).await.0;
        let commands = db_count(&t, "SELECT COUNT(*) FROM agent_commands").await.0;
        for _ in 0..400 {
            if db_count(&t, job_sql).await.0 > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            db_count(&t, job_sql).await.0,
            before + 1,
            "the healed job ran"
        );
        assert_eq!(
            db_count(&t, "SELECT COUNT(*) FROM agent_commands").await.0,
            commands,
            "nothing queued twice"
        );
        assert_eq!(sage.sales_orders().len(), 1);
        assert_eq!(sage.customers().len(), 2);
        app.stop().await;
    }
);

/// A server with `[[agents]]` and `[sync.{line}]` (ledger accounts on the test chart plus tax
/// and cash), polled only on request, and the Salesforce simulator posting to it.
struct OnPrem {
    app: App,
    sf: SfSim,
    dir: tempfile::TempDir,
}

async fn on_prem(t: &TestDb, line: &str, agent: &str) -> OnPrem {
    add_chart(&t.url);
    let out = cli(
        &t.url,
        &[
            "ledger",
            "account",
            "add",
            "--code",
            "2200",
            "--name",
            "Sales tax",
            "--type",
            "liability",
            "--currency",
            "USD",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = sync_secrets(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sf = SfSim::start(SfSimConfig {
        event_webhook_url: Some(format!("{base}/v1/events/salesforce")),
        event_secret_hex: secret,
        ..SfSimConfig::default()
    })
    .await;
    std::fs::write(
        dir.path().join("sf-client-secret"),
        &sf.config().client_secret,
    )
    .unwrap();
    let hash = hex::encode(sha2::Sha256::digest(AGENT_KEY.as_bytes()));
    let section = format!(
        "\n[[agents]]\nname = \"{agent}\"\nkey_sha256 = \"{hash}\"\n\
         [sync]\nidle_poll_ms = 20\n\
         [sync.salesforce]\nevent_secret = {{ file = {:?} }}\nlogin_url = {:?}\n\
         auth = {{ kind = \"client_credentials\", client_id = {:?}, client_secret = {{ file = {:?} }} }}\n\
         poll_interval_s = 3600\nintegration_user_id = {:?}\n\
         [sync.{line}]\nagent = \"{agent}\"\n{division}poll_interval_s = 3600\n\
         [sync.{line}.ledger.USD]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1000\"\n",
        dir.path().join("event-secret.hex").display().to_string(),
        sf.base_url(),
        sf.config().client_id,
        dir.path().join("sf-client-secret").display().to_string(),
        sf.config().api_user_id,
        // BusinessWorks has no divisions: its default ("00").
        division = if line == "sage100" {
            "ar_division_no = \"01\"\n"
        } else {
            ""
        },
    );
    let toml = format!("{}{section}", config_toml(&t.url));
    let app = App::spawn_on(config_with(&t.url, |_| toml.clone()), listener).await;
    OnPrem { app, sf, dir }
}

impl OnPrem {
    /// A Salesforce field as text (decimals normalised).
    fn field(&self, object: &str, id: &str, field: &str) -> Option<String> {
        self.sf.record(object, id).and_then(|r| {
            r.get(field).and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_decimal().map(|d| d.normalize().to_string()))
            })
        })
    }

    /// Waits (≤ 20 s) until `field` of the record is `want` (any value when `None`).
    async fn wait_field(&self, object: &str, id: &str, field: &str, want: Option<&str>) -> String {
        for _ in 0..400 {
            match (self.field(object, id, field), want) {
                (Some(v), None) => return v,
                (Some(v), Some(w)) if v == w => return v,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!(
            "{object} {id} {field} is {:?}, not {want:?}",
            self.field(object, id, field)
        );
    }

    /// `POST /v1/sync/{line}/pull`: 202.
    async fn pull(&self, line: &str) {
        let (s, body, _) = self
            .app
            .call(
                "POST",
                &format!("/v1/sync/{line}/pull"),
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(body["jobs"][0]["line"], line, "{body}");
    }

    /// A ledger account's balance (`"32.06 USD"`).
    async fn balance(&self, account: &str) -> String {
        let (_, b, _) = self
            .app
            .call(
                "GET",
                &format!("/v1/ledger/accounts/MAIN/{account}/balance"),
                Some(AUDITOR_KEY),
                None,
                None,
            )
            .await;
        b["balance"].as_str().unwrap_or_default().to_owned()
    }

    /// A card payment of `amount` on the Opportunity, through the gateway.
    async fn pay(&self, acc: &str, opp: &str, amount: &str) -> String {
        let (s, token, _) = self
            .app
            .call(
                "POST",
                "/v1/tokens",
                Some(PAYMENTS_KEY),
                None,
                Some(r#"{"type":"card","card":{"number":"4111111111111111","exp_month":12,"exp_year":2030,"name":"Ada Lovelace"}}"#),
            )
            .await;
        assert_eq!(s, 201, "{token}");
        let body = json!({"amount": amount, "currency": "USD", "payment_method": token["token"],
            "capture": true, "opportunity_id": opp, "account_id": acc})
        .to_string();
        let (s, pay, _) = self
            .app
            .call(
                "POST",
                "/v1/payments",
                Some(PAYMENTS_KEY),
                None,
                Some(&body),
            )
            .await;
        assert_eq!(
            (s, pay["status"].as_str()),
            (201, Some("captured")),
            "{pay}"
        );
        pay["id"].as_str().unwrap().to_owned()
    }

    /// The dead job whose error contains `text` (waits ≤ 20 s).
    async fn dead_job(&self, text: &str) -> Value {
        for _ in 0..400 {
            let (_, list, _) = self
                .app
                .call(
                    "GET",
                    "/v1/sync/jobs?status=dead",
                    Some(ADMIN_KEY),
                    None,
                    None,
                )
                .await;
            if let Some(j) = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["last_error"].as_str().is_some_and(|e| e.contains(text)))
            {
                return j.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no dead job with {text:?}");
    }
}

const INVOICE_ENTRIES: &str =
    "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE '%:invoice:%'";

both!(
    the_sage_100_loop_runs_to_payment_through_the_agent,
    |t| async move {
        let env = on_prem(&t, "sage100", "s100").await;
        let sage = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
        let vi = env.dir.path().join("vi");
        std::fs::create_dir_all(&vi).unwrap();
        sage.set_vi_folder(&vi);
        let state = env.dir.path().join("agent.db");
        let executor = || async {
            Executor {
                client: Client::new(&sage.url(), WS_USER, WS_PASSWORD, "ABC"),
                state: StateStore::open(&state).await.unwrap(),
                sf_udf: "UDF_SF_ID".into(),
                vi_folder: Some(sync::sage100::agent::ViFolder(vi.clone())),
                odbc: Some(sync::odbc::Source::new(sage.odbc_connection_string())),
            }
        };
        let agent = start_agent(&env.app.base, executor().await);

        // Closed Won → customer and order (2 × 12.50) in Sage 100.
        let (acc, opp) = closed_won(&env.sf, "Acme Corp", "WIDGET");
        let order = env
            .wait_field("Opportunity", &opp, "Sage_Order_Number__c", None)
            .await;
        // Sage invoices it (8.25 % tax 2.06, freight 5.00); the agent reads it over ODBC.
        let invoice = sage
            .invoice_order(&sync::sage100::simulator::InvoiceOrder {
                sales_order_no: order.clone(),
                sales_tax_minor: 206,
                freight_minor: 500,
                ..Default::default()
            })
            .unwrap();
        env.pull("sage100").await;
        env.wait_field(
            "Opportunity",
            &opp,
            "Sage_Invoice_Number__c",
            Some(&invoice),
        )
        .await;
        env.wait_field("Opportunity", &opp, "Balance_Due__c", Some("32.06"))
            .await;
        assert_eq!(
            env.field("Opportunity", &opp, "Payment_Status__c")
                .as_deref(),
            Some("Unpaid")
        );
        assert_eq!(env.balance("1200").await, "32.06 USD");
        assert_eq!(env.balance("2200").await, "2.06 USD");
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1);

        // The agent crashes and comes back on its idempotency record; reading again posts
        // nothing twice and makes nothing in Sage.
        let _ = agent.send(());
        let agent = start_agent(&env.app.base, executor().await);
        env.pull("sage100").await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1);
        assert_eq!(env.balance("1200").await, "32.06 USD");
        assert_eq!((sage.customers().len(), sage.sales_orders().len()), (1, 1));

        // A cheque of 10.00 keyed into Sage 100 by a person: the next read books it Dr cash /
        // Cr AR once, and brings the lower balance back.
        sage.key_cash_receipt(&sync::sage100::simulator::KeyedReceipt {
            ar_division_no: "01".into(),
            customer_no: "ACMECORP".into(),
            check_no: "CHK1001".into(),
            deposit_date: "20261125".into(),
            amount_minor: 1000,
            invoice_no: invoice.clone(),
            comment: String::new(),
        })
        .unwrap();
        env.pull("sage100").await;
        env.wait_field("Opportunity", &opp, "Balance_Due__c", Some("22.06"))
            .await;
        for _ in 0..400 {
            if env.balance("1000").await == "10.00 USD" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(env.balance("1000").await, "10.00 USD");
        assert_eq!(env.balance("1200").await, "22.06 USD");
        assert_eq!(
            env.field("Opportunity", &opp, "Payment_Status__c")
                .as_deref(),
            Some("Partially Paid")
        );

        // The customer pays the rest by card: a Visual Integrator cash receipt against the
        // invoice, which Sage's VI job posts; the next read brings the zero balance back.
        let payment = env.pay(&acc, &opp, "22.06").await;
        let mut posted = Vec::new();
        for _ in 0..400 {
            posted.extend(sage.run_visual_integrator().unwrap());
            if !posted.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(posted.len(), 1, "{posted:?}");
        assert_eq!(
            (posted[0].posted, &posted[0].rejected),
            (1, &None),
            "{posted:?}"
        );
        let receipt = std::fs::read_to_string(vi.join("processed").join(&posted[0].file)).unwrap();
        assert!(
            receipt.contains(&invoice) && receipt.contains("22.06") && receipt.contains(&payment),
            "{receipt}"
        );
        assert!(!receipt.contains("4111"), "no card data in Sage");
        env.pull("sage100").await;
        env.wait_field("Opportunity", &opp, "Payment_Status__c", Some("Paid"))
            .await;
        assert_eq!(
            env.field("Opportunity", &opp, "Balance_Due__c").as_deref(),
            Some("0")
        );
        // The gateway booked the card money at capture (not again from Sage's receipts); AR is
        // settled, the invoice and the cheque posted once.
        assert_eq!(env.balance("1200").await, "0.00 USD");
        assert_eq!(env.balance("1000").await, "10.00 USD");
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1);
        assert_eq!(
            db_count(
                &t,
                "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'sage100:receipt:%'"
            )
            .await
            .0,
            1
        );
        let _ = agent.send(());
        env.app.stop().await;
    }
);

both!(
    the_businessworks_loop_runs_through_the_agent,
    |t| async move {
        use sync::businessworks::{BwExecutor, BwNames, BwState, ImportFolder, Reader};
        let env = on_prem(&t, "businessworks", "bw").await;
        let import = ImportFolder::new(env.dir.path().join("import"));
        let sim = sync::businessworks::simulator::Simulator::create(
            &env.dir.path().join("bw.db"),
            BwNames::default(),
            import.clone(),
        )
        .await
        .unwrap();
        sim.add_item("WIDGET", "Widget", 1250, "S").await.unwrap();
        // BusinessWorks' import utility runs on its own schedule.
        let importer = sim.spawn_polling(Duration::from_millis(50));
        let state = env.dir.path().join("agent.db");
        let executor = || async {
            BwExecutor::new(
                Reader::new(sim.source(), BwNames::default()),
                BwState::open(&state).await.unwrap(),
                import.clone(),
            )
        };
        let agent = start_agent_as("bw", &env.app.base, executor().await);

        // Closed Won → customer and order imported into BusinessWorks.
        let (acc, opp) = closed_won(&env.sf, "Acme Corp", "WIDGET");
        let order = env
            .wait_field("Opportunity", &opp, "Sage_Order_Number__c", None)
            .await;
        assert_eq!(
            env.wait_field("Account", &acc, "Sage_Customer_Id__c", None)
                .await,
            "ACMECORP"
        );
        let customers = sim.customers().await.unwrap();
        assert_eq!(customers.len(), 1, "{customers:?}");
        assert_eq!(sim.order_count().await.unwrap(), 1);

        // BusinessWorks invoices it (tax 2.06, freight 5.00); the agent finds it by row hash.
        let invoice = sim.invoice_order(&order, 206, 500).await.unwrap();
        env.pull("businessworks").await;
        env.wait_field(
            "Opportunity",
            &opp,
            "Sage_Invoice_Number__c",
            Some(&invoice),
        )
        .await;
        env.wait_field("Opportunity", &opp, "Balance_Due__c", Some("32.06"))
            .await;
        assert_eq!(env.balance("1200").await, "32.06 USD");
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1);

        // The agent crashes and comes back on its local record (row hashes included): another
        // read imports and posts nothing twice.
        let _ = agent.send(());
        let agent = start_agent_as("bw", &env.app.base, executor().await);
        env.pull("businessworks").await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1);
        assert_eq!(sim.order_count().await.unwrap(), 1);
        assert_eq!(sim.customers().await.unwrap().len(), 1);

        // A card payment: BusinessWorks takes no payments from cashloop, so it waits in review
        // for a person, who keys it in BusinessWorks; the next read brings the balance back.
        env.pay(&acc, &opp, "32.06").await;
        let review = sync::review::Review::new(t.db.clone());
        let mut items = Vec::new();
        for _ in 0..400 {
            items = review.open_items(10).await.unwrap();
            if !items.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].record_key, opp);
        assert!(
            items[0].detail.to_string().contains("BusinessWorks"),
            "{:?}",
            items[0].detail
        );
        assert_eq!(sim.apply_payment(&invoice, 3206).await.unwrap(), 0);
        env.pull("businessworks").await;
        env.wait_field("Opportunity", &opp, "Payment_Status__c", Some("Paid"))
            .await;
        assert_eq!(db_count(&t, INVOICE_ENTRIES).await.0, 1, "posted once");

        // An item BusinessWorks does not know: the import's rejection reaches the error queue
        // with its text, and nothing is imported.
        let (_, bad) = closed_won(&env.sf, "Globex", "NOPE");
        let dead = env.dead_job("NOPE").await;
        assert_eq!(dead["kind"], "businessworks.agent_result", "{dead}");
        assert_eq!(sim.order_count().await.unwrap(), 1);
        assert!(
            env.field("Opportunity", &bad, "Sage_Order_Number__c")
                .is_none()
        );
        importer.abort();
        let _ = agent.send(());
        env.app.stop().await;
    }
);
