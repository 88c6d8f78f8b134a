//! The Sage 100 loop end to end: a real server with `[sync.sage100]` and `[[agents]]`, the
//! Salesforce simulator sending its signed Closed Won event, the REAL agent
//! (`sync::sage100::agent::run`) executing the commands against the eBusiness Web Services
//! simulator, on SQLite and PostgreSQL. (Invoice reads need the agent's ODBC reader: that leg
//! is added with it.)

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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = AgentOptions {
        server: base.to_owned(),
        name: "s100".into(),
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
        let dir = tempfile::tempdir().unwrap();
        let (secret, _) = sync_secrets(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sf = SfSim::start(SfSimConfig {
            event_webhook_url: Some(format!("{base}/v1/events/salesforce")),
            event_secret_hex: secret.clone(),
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
            "\n[[agents]]\nname = \"s100\"\nkey_sha256 = \"{hash}\"\n\
         [sync]\nidle_poll_ms = 20\n\
         [sync.salesforce]\nevent_secret = {{ file = {:?} }}\nlogin_url = {:?}\n\
         auth = {{ kind = \"client_credentials\", client_id = {:?}, client_secret = {{ file = {:?} }} }}\n\
         poll_interval_s = 3600\nintegration_user_id = {:?}\n\
         [sync.sage100]\nagent = \"s100\"\nar_division_no = \"01\"\npoll_interval_s = 3600\n\
         [sync.sage100.ledger.USD]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n",
            dir.path().join("event-secret.hex").display().to_string(),
            sf.base_url(),
            sf.config().client_id,
            dir.path().join("sf-client-secret").display().to_string(),
            sf.config().api_user_id,
        );
        let toml = format!("{}{section}", config_toml(&t.url));
        let app = App::spawn_on(config_with(&t.url, |_| toml.clone()), listener).await;
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
                odbc: None,
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
