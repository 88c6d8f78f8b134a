//! The Sage 100 agent against a real server and the eBusiness Web Services simulator, over
//! sockets: commands queued on the server (SQLite and PostgreSQL), polled by the agent,
//! executed through SOAP and reported back; faults, a server restart while the agent holds a
//! command, the idempotency record answering a re-delivered command, and reads over ODBC from
//! the simulator's File Layout database through the SQLite ODBC driver.

use std::time::Duration;

use sha2::Digest;
use sync::agent_contract::InvoicesResult;
use sync::agent_queue::{self, Command, Outcome};
use sync::odbc::Source;
use sync::sage100::agent::{AgentOptions, Executor, StateStore};
use sync::sage100::simulator::{InvoiceOrder, Simulator};
use sync::sage100::soap::Client;

use super::*;

const AGENT_KEY: &str = "agent-key-7f3c1e9a2b8d4f6071e5c3a9";
const WS_USER: &str = "ws";
const WS_PASSWORD: &str = "ws-Pa55word";

fn agent_config(db_url: &str, lease_ms: u64) -> Config {
    let hash = hex::encode(sha2::Sha256::digest(AGENT_KEY.as_bytes()));
    config_with(db_url, |toml| {
        format!(
            "{toml}\n[[agents]]\nname = \"s100\"\nkey_sha256 = \"{hash}\"\nlease_ms = {lease_ms}\n"
        )
    })
}

async fn executor(sim: &Simulator, state: &std::path::Path) -> Executor {
    Executor {
        client: Client::new(&sim.url(), WS_USER, WS_PASSWORD, "ABC"),
        state: StateStore::open(state).await.unwrap(),
        sf_udf: "UDF_SF_ID".into(),
        vi_folder: None,
        odbc: None,
    }
}

/// Runs the agent until the returned sender is dropped or fired.
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

/// Queues a command for the `s100` agent and waits until it is finished: its id and state.
async fn enqueued(
    db: &db::Db,
    kind: &str,
    payload: &Value,
    key: &str,
) -> (i64, agent_queue::CommandState) {
    let id = agent_queue::enqueue(db, "s100", kind, payload, key)
        .await
        .unwrap();
    (id, finished(db, id).await)
}

async fn finished(db: &db::Db, id: i64) -> agent_queue::CommandState {
    for _ in 0..600 {
        let s = agent_queue::get(db, id).await.unwrap().unwrap();
        if s.status == "done" || s.status == "failed" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("command {id} did not finish");
}

fn customer(sf: &str, no: &str, name: &str) -> Value {
    json!({"salesforce_id": sf, "ar_division_no": "01", "customer_no": no,
           "customer_name": name, "city": "Irvine", "state": "CA"})
}

fn order(sf: &str, no: &str, item: &str) -> Value {
    json!({"salesforce_id": sf, "ar_division_no": "01", "customer_no": no,
           "customer_po_no": "PO-1", "order_date": "20261126",
           "lines": [{"item_code": item, "quantity": "2", "unit_price_minor": 1250}]})
}

db::both_backends!(customer_and_order_through_the_queue, |t| async move {
    let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
    let app = App::spawn_config(agent_config(&t.url, 60_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &app.base,
        executor(&sim, &dir.path().join("agent.db")).await,
    );

    let db = &t.db;
    let (_, s) = enqueued(
        db,
        "upsert_customer",
        &customer("001A", "ACME", "Acme Corp"),
        "cust-001A",
    )
    .await;
    assert_eq!(s.status, "done", "{s:?}");
    assert_eq!(s.result.as_ref().unwrap()["action"], "created");
    let (_, s) = enqueued(
        db,
        "create_sales_order",
        &order("006A", "ACME", "WIDGET"),
        "so-006A",
    )
    .await;
    assert_eq!(s.status, "done", "{s:?}");
    assert_eq!(s.result.as_ref().unwrap()["sales_order_no"], "0000001");

    // The same customer again is an update, checked against the UDF.
    let again = agent_queue::enqueue(
        db,
        "s100",
        "upsert_customer",
        &customer("001A", "ACME", "Acme Corporation"),
        "cust-001A-2",
    )
    .await
    .unwrap();
    assert_eq!(
        finished(db, again).await.result.unwrap()["action"],
        "updated"
    );
    // Another Salesforce account may not take the (division, number) pair.
    let (_, s) = enqueued(
        db,
        "upsert_customer",
        &customer("001B", "ACME", "Other"),
        "cust-001B",
    )
    .await;
    assert_eq!(s.status, "failed");
    assert!(
        s.error
            .unwrap()
            .contains("belongs to Salesforce record 001A")
    );

    // SOAP faults reach the command's error with their code and text.
    let (_, s) = enqueued(
        db,
        "create_sales_order",
        &order("006B", "ACME", "NOPE"),
        "so-006B",
    )
    .await;
    assert_eq!(s.status, "failed");
    let e = s.error.unwrap();
    assert!(
        e.contains("CI_NOF") && e.contains("Item NOPE is not on file."),
        "{e}"
    );
    let long = agent_queue::enqueue(
        db,
        "s100",
        "upsert_customer",
        &customer("001C", "LONG", "A name far longer than thirty characters"),
        "cust-001C",
    )
    .await
    .unwrap();
    let e = finished(db, long).await.error.unwrap();
    assert!(
        e.contains("CI_CharLength") && e.contains("CustomerName is too long"),
        "{e}"
    );

    let orders = sim.sales_orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].udf("UDF_SF_ID"), Some("006A"));
    assert_eq!(orders[0].lines[0].unit_price, "12.50");
    assert_eq!(orders[0].lines[0].quantity_ordered, "2");
    let customers = sim.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].customer_name, "Acme Corporation");
    assert_eq!(customers[0].udf("UDF_SF_ID"), Some("001A"));

    // The agent key opens only the agent routes; an API key does not open them.
    let (status, _, _) = app
        .call("POST", "/agent/v1/poll", Some(ADMIN_KEY), None, Some("{}"))
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = app
        .call("GET", "/v1/ledger/accounts", Some(AGENT_KEY), None, None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;
});

db::both_backends!(
    changed_invoices_are_read_over_odbc_through_the_queue,
    |t| async move {
        let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
        let app = App::spawn_config(agent_config(&t.url, 60_000)).await;
        let dir = tempfile::tempdir().unwrap();
        let mut ex = executor(&sim, &dir.path().join("agent.db")).await;
        ex.odbc = Some(Source::new(sim.odbc_connection_string()));
        let _agent = start_agent(&app.base, ex);
        let db = &t.db;
        let c = agent_queue::enqueue(
            db,
            "s100",
            "upsert_customer",
            &customer("001A", "ACME", "Acme Corp"),
            "cust-001A",
        )
        .await
        .unwrap();
        assert_eq!(finished(db, c).await.status, "done");
        let (_, s) = enqueued(
            db,
            "create_sales_order",
            &order("006A", "ACME", "WIDGET"),
            "so-006A",
        )
        .await;
        let so_no = s.result.unwrap()["sales_order_no"]
            .as_str()
            .unwrap()
            .to_owned();
        // Someone invoices the order in Sage (Sales Order Invoice Data Entry + journal update).
        let inv = sim
            .invoice_order(&InvoiceOrder {
                sales_order_no: so_no.clone(),
                invoice_date: Some("20261127".into()),
                sales_tax_minor: 200,
                freight_minor: 0,
            })
            .unwrap();

        let read = |key: &'static str, since: Option<String>| async move {
            let (_, s) = enqueued(
                db,
                "read_changed_invoices",
                &json!({"since": since, "max_rows": 50}),
                key,
            )
            .await;
            assert_eq!(s.status, "done", "{s:?}");
            serde_json::from_value::<InvoicesResult>(s.result.unwrap()).unwrap()
        };
        let r = read("read-1", None).await;
        assert_eq!(r.invoices.len(), 1, "{r:?}");
        let i = &r.invoices[0];
        assert_eq!(i.invoice_no, inv);
        assert_eq!(i.invoice_date, "20261127");
        assert_eq!(i.sales_order_no.as_deref(), Some(so_no.as_str()));
        assert_eq!(i.salesforce_id.as_deref(), Some("006A"));
        assert_eq!(i.lines.len(), 1);
        assert_eq!(i.lines[0].extension_minor, 2500);
        assert_eq!(
            (i.sales_minor, i.sales_tax_minor, i.total_minor),
            (2500, 200, 2700)
        );
        assert_eq!(i.balance_minor, 2700);
        assert!(!r.more);
        // From the cursor: nothing new.
        let again = read("read-2", r.next.clone()).await;
        assert!(again.invoices.is_empty(), "{again:?}");
        app.stop().await;
    }
);

db::both_backends!(
    server_restart_while_the_agent_holds_a_command,
    |t| async move {
        let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
        // A short lease: it runs out while the server is down.
        let app = App::spawn_config(agent_config(&t.url, 1_000)).await;
        let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let _agent = start_agent(
            &app.base,
            executor(&sim, &dir.path().join("agent.db")).await,
        );
        let db = &t.db;
        let c = agent_queue::enqueue(
            db,
            "s100",
            "upsert_customer",
            &customer("001A", "ACME", "Acme"),
            "c1",
        )
        .await
        .unwrap();
        finished(db, c).await;

        sim.set_create_delay(Duration::from_millis(1_500));
        let so = agent_queue::enqueue(
            db,
            "s100",
            "create_sales_order",
            &order("006A", "ACME", "WIDGET"),
            "so-1",
        )
        .await
        .unwrap();
        // The agent has it in hand (leased, Sage still working): the server goes away.
        for _ in 0..200 {
            if agent_queue::get(db, so).await.unwrap().unwrap().status == "leased" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            agent_queue::get(db, so).await.unwrap().unwrap().status,
            "leased"
        );
        app.stop().await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let app = App::spawn_on(agent_config(&t.url, 1_000), listener).await;

        let s = finished(db, so).await;
        assert_eq!(s.status, "done", "{s:?}");
        assert_eq!(s.deliveries, 1);
        assert_eq!(sim.sales_orders().len(), 1, "exactly one sales order");
        let creates = sim
            .calls()
            .iter()
            .filter(|c| *c == "CreateSalesOrder")
            .count();
        assert_eq!(creates, 1);
        app.stop().await;
    }
);

db::both_backends!(
    the_idempotency_record_answers_a_redelivery,
    |t| async move {
        let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("agent.db");
        let ex = executor(&sim, &state).await;
        let cmd = |id, kind: &str, payload: Value, key: &str| Command {
            id,
            kind: kind.into(),
            payload,
            idempotency_key: key.into(),
            deliveries: 1,
        };
        let first = ex
            .execute(&cmd(
                1,
                "upsert_customer",
                customer("001A", "ACME", "Acme"),
                "c1",
            ))
            .await;
        assert!(matches!(first, Some(Outcome::Done(_))), "{first:?}");
        // The agent did the work, then its result was lost (the server forgot it, or it crashed).
        let done = ex
            .execute(&cmd(
                2,
                "create_sales_order",
                order("006A", "ACME", "WIDGET"),
                "so-1",
            ))
            .await;
        let Some(Outcome::Done(result)) = done else {
            panic!("{done:?}")
        };
        let calls_before = sim.calls().len();

        // The server hands the same command out again: the record answers, Sage is not called.
        let app = App::spawn_config(agent_config(&t.url, 60_000)).await;
        let id = agent_queue::enqueue(
            &t.db,
            "s100",
            "create_sales_order",
            &order("006A", "ACME", "WIDGET"),
            "so-1",
        )
        .await
        .unwrap();
        let _agent = start_agent(&app.base, executor(&sim, &state).await);
        let s = finished(&t.db, id).await;
        assert_eq!(s.status, "done");
        assert_eq!(s.result.unwrap(), result);
        assert_eq!(sim.calls().len(), calls_before, "Sage not called again");
        assert_eq!(sim.sales_orders().len(), 1);

        // A number taken but not confirmed (a crash between GetNextSalesOrderNo and the answer):
        // the order is looked up, found by its UDF, and not created again.
        let fresh = tempfile::tempdir().unwrap();
        let ex2 = executor(&sim, &fresh.path().join("agent.db")).await;
        let no = result["sales_order_no"].as_str().unwrap().to_owned();
        ex2.state_record_pending("so-1", &no).await;
        let again = ex2
            .execute(&cmd(
                3,
                "create_sales_order",
                order("006A", "ACME", "WIDGET"),
                "so-1",
            ))
            .await;
        let Some(Outcome::Done(r)) = again else {
            panic!("{again:?}")
        };
        assert_eq!(r["action"], "found");
        assert_eq!(r["sales_order_no"], no.as_str());
        assert_eq!(sim.sales_orders().len(), 1);
        app.stop().await;
    }
);

/// Test access to the record's pending state.
trait PendingRecord {
    async fn state_record_pending(&self, key: &str, no: &str);
}

impl PendingRecord for Executor {
    async fn state_record_pending(&self, key: &str, no: &str) {
        self.state
            .put_pending(key, "create_sales_order", no)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_receipts_become_a_visual_integrator_file() {
    let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
    let dir = tempfile::tempdir().unwrap();
    let vi = dir.path().join("vi");
    std::fs::create_dir(&vi).unwrap();
    let mut ex = executor(&sim, &dir.path().join("agent.db")).await;
    ex.vi_folder = Some(sync::sage100::agent::ViFolder(vi.clone()));
    let cmd = Command {
        id: 1,
        kind: "import_cash_receipts".into(),
        payload: json!({"receipts": [
            {"salesforce_id": "a0P1", "ar_division_no": "01", "customer_no": "ACME",
             "deposit_date": "20261126", "check_no": "pay_123", "amount_minor": 1766640,
             "invoice_no": "0100042"},
            {"salesforce_id": "a0P2", "ar_division_no": "01", "customer_no": "ACME",
             "deposit_date": "20261126", "check_no": "pay,124", "amount_minor": 5}
        ]}),
        idempotency_key: "receipts-1".into(),
        deliveries: 1,
    };
    let Some(Outcome::Done(r)) = ex.execute(&cmd).await else {
        panic!("not done")
    };
    assert_eq!(r["receipts"], 2);
    assert_eq!(r["total_minor"], 1766645);
    let file = vi.join(r["file"].as_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        "20261126,01,ACME,pay_123,17666.40,0100042,17666.40,a0P1\r\n\
         20261126,01,ACME,\"pay,124\",0.05,,0.05,a0P2\r\n"
    );
    // Delivered again: answered from the record, the file is not written a second time.
    std::fs::remove_file(&file).unwrap();
    let Some(Outcome::Done(again)) = ex.execute(&cmd).await else {
        panic!("not done")
    };
    assert_eq!(again, r);
    assert!(!file.exists());
    // Without a folder the command fails with the reason.
    ex.vi_folder = None;
    let other = Command {
        idempotency_key: "receipts-2".into(),
        ..cmd
    };
    let Some(Outcome::Failed(e)) = ex.execute(&other).await else {
        panic!("not failed")
    };
    assert!(e.contains("Visual Integrator"), "{e}");
}

/// `cashloop agent` as a process: its arguments, key and password files, and the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_subcommand_runs_the_loop() {
    let t = testing::sqlite().await;
    let sim = Simulator::start(WS_USER, WS_PASSWORD, "ABC", &["WIDGET"]).await;
    let app = App::spawn_config(agent_config(&t.url, 60_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent.key");
    std::fs::write(&key_file, format!("{AGENT_KEY}\n")).unwrap();
    let pw_file = dir.path().join("ws.password");
    std::fs::write(&pw_file, WS_PASSWORD).unwrap();
    let state = dir.path().join("state.db");
    let odbc_file = dir.path().join("sage.odbc");
    std::fs::write(&odbc_file, sim.odbc_connection_string()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args([
            "agent",
            "--server",
            &app.base,
            "--name",
            "s100",
            "--key-file",
        ])
        .arg(&key_file)
        .arg("--state")
        .arg(&state)
        .args([
            "--sage-url",
            &sim.url(),
            "--sage-user",
            WS_USER,
            "--sage-password-file",
        ])
        .arg(&pw_file)
        .arg("--odbc-file")
        .arg(&odbc_file)
        .args(["--company", "ABC", "--wait-ms", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let id = agent_queue::enqueue(
        &t.db,
        "s100",
        "upsert_customer",
        &customer("001A", "ACME", "Acme"),
        "c1",
    )
    .await
    .unwrap();
    let s = finished(&t.db, id).await;
    assert_eq!(s.status, "done", "{s:?}");
    assert_eq!(sim.customers().len(), 1);
    // The reads go through the data source in --odbc-file.
    let id = agent_queue::enqueue(
        &t.db,
        "s100",
        "read_items",
        &json!({"since": null, "max_rows": 10}),
        "items-1",
    )
    .await
    .unwrap();
    let s = finished(&t.db, id).await;
    assert_eq!(s.status, "done", "{s:?}");
    assert_eq!(s.result.unwrap()["items"][0]["item_code"], "WIDGET");
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains(AGENT_KEY) && !log.contains(WS_PASSWORD),
        "a secret in the log: {log}"
    );
    app.stop().await;
}
