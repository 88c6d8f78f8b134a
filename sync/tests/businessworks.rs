//! The BusinessWorks agent executor against the import simulator, read through the real SQLite
//! ODBC driver (unixODBC + `libsqliteodbc`, driver `SQLite3`).

use std::time::Duration;

use serde_json::{Value, json};
use sync::agent_contract::{InvoicesResult, ItemsResult, kind};
use sync::agent_queue::{Command, Outcome};
use sync::businessworks::{BwExecutor, BwNames, BwState, ImportFolder, Reader, Simulator};

struct Bw {
    _dir: tempfile::TempDir,
    sim: Simulator,
    exec: BwExecutor,
}

async fn setup(names: BwNames) -> Bw {
    let dir = tempfile::tempdir().unwrap();
    let import = ImportFolder::new(dir.path().join("import"));
    let sim = Simulator::create(&dir.path().join("bw.db"), names.clone(), import.clone())
        .await
        .unwrap();
    let state = BwState::open(&dir.path().join("agent-state.db"))
        .await
        .unwrap();
    let mut exec = BwExecutor::new(Reader::new(sim.source(), names), state, import);
    // Tests run the import themselves: look for the log once.
    exec.log_wait = Duration::ZERO;
    Bw {
        _dir: dir,
        sim,
        exec,
    }
}

fn cmd(kind: &str, key: &str, payload: Value) -> Command {
    Command {
        id: 1,
        kind: kind.to_owned(),
        payload,
        idempotency_key: key.to_owned(),
        deliveries: 1,
    }
}

fn customer(no: &str, sf: &str, name: &str) -> Value {
    json!({
        "salesforce_id": sf, "ar_division_no": "00", "customer_no": no, "customer_name": name,
        "city": "Austin", "state": "TX", "email_address": "ap@acme.example"
    })
}

fn order(sf: &str, customer_no: &str, item: &str) -> Value {
    json!({
        "salesforce_id": sf, "ar_division_no": "00", "customer_no": customer_no,
        "customer_po_no": "PO-7", "order_date": "20261126",
        "lines": [{"item_code": item, "quantity": "2", "unit_price_minor": 1050}]
    })
}

fn done(o: Option<Outcome>) -> Value {
    match o {
        Some(Outcome::Done(v)) => v,
        other => panic!("expected a result, got {other:?}"),
    }
}

fn failed(o: Option<Outcome>) -> String {
    match o {
        Some(Outcome::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Executes a write: the first execution writes the file and finds no log (left for a retry),
/// the import runs, the re-delivery reads the log.
async fn write_through_import(bw: &Bw, c: &Command) -> Option<Outcome> {
    assert_eq!(
        bw.exec.execute(c).await,
        None,
        "no log before the import ran"
    );
    bw.sim.run_import().await.unwrap();
    bw.exec.execute(c).await
}

async fn customer_and_item(bw: &Bw) {
    bw.sim
        .add_item("WIDGET", "Widget", 1050, "S")
        .await
        .unwrap();
    let c = cmd(
        kind::UPSERT_CUSTOMER,
        "cust-acme",
        customer("ACME", "001A", "Acme"),
    );
    done(write_through_import(bw, &c).await);
}

async fn read_invoices(bw: &Bw, key: &str, max_rows: u32) -> InvoicesResult {
    let c = cmd(
        kind::READ_CHANGED_INVOICES,
        key,
        json!({"since": null, "max_rows": max_rows}),
    );
    serde_json::from_value(done(bw.exec.execute(&c).await)).unwrap()
}

async fn read_items(bw: &Bw, key: &str, max_rows: u32) -> ItemsResult {
    let c = cmd(kind::READ_ITEMS, key, json!({"max_rows": max_rows}));
    serde_json::from_value(done(bw.exec.execute(&c).await)).unwrap()
}

#[tokio::test]
async fn customer_import_is_accepted_and_read_back() {
    let bw = setup(BwNames::default()).await;
    let c = cmd(
        kind::UPSERT_CUSTOMER,
        "k1",
        customer("ACME", "001A", "Acme"),
    );
    assert_eq!(bw.exec.execute(&c).await, None);
    // The file waits in the import folder, written whole (no temporary file left).
    let waiting: Vec<_> = std::fs::read_dir(&bw.exec.import.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].starts_with("CUST_") && waiting[0].ends_with(".csv"));
    let text = std::fs::read_to_string(bw.exec.import.dir.join(&waiting[0])).unwrap();
    assert_eq!(
        text,
        "\"ACME\",\"Acme\",\"\",\"Austin\",\"TX\",\"\",\"\",\"\",\"ap@acme.example\",\"001A\"\r\n"
    );

    let processed = bw.sim.run_import().await.unwrap();
    assert_eq!(processed.len(), 1);
    assert!(processed[0].entries[0].accepted);
    let r = done(bw.exec.execute(&c).await);
    assert_eq!(r["action"], "created");
    assert_eq!(r["customer_no"], "ACME");
    assert_eq!(r["document_no"], "00-ACME");

    // Read back over ODBC by number and by the Salesforce-id field.
    let by_no = bw
        .exec
        .reader
        .customer_by_no("ACME")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_no.name, "Acme");
    assert_eq!(by_no.salesforce_id, "001A");
    let by_sf = bw
        .exec
        .reader
        .customer_by_salesforce_id("001A")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_sf.customer_no, "ACME");
    assert!(
        bw.exec
            .reader
            .customer_by_no("NOPE")
            .await
            .unwrap()
            .is_none()
    );

    // A re-delivery is answered from the record; a later upsert updates.
    assert_eq!(done(bw.exec.execute(&c).await), r);
    let c2 = cmd(
        kind::UPSERT_CUSTOMER,
        "k2",
        customer("ACME", "001A", "Acme Corp"),
    );
    assert_eq!(
        done(write_through_import(&bw, &c2).await)["action"],
        "updated"
    );
    let after = bw
        .exec
        .reader
        .customer_by_no("ACME")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.name, "Acme Corp");
    // A field the update does not send keeps its BusinessWorks value.
    sqlx::query("UPDATE ARCustomer SET Phone = '512-555-0100'")
        .execute(bw.sim.pool())
        .await
        .unwrap();
    let mut payload = customer("ACME", "001A", "Acme Corp.");
    payload["city"] = json!("Dallas");
    let c5 = cmd(kind::UPSERT_CUSTOMER, "k5", payload);
    done(write_through_import(&bw, &c5).await);
    let after = bw
        .exec
        .reader
        .customer_by_no("ACME")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            after.name.as_str(),
            after.city.as_str(),
            after.phone.as_str()
        ),
        ("Acme Corp.", "Dallas", "512-555-0100")
    );

    // Another Salesforce account may not take the customer over, nor one account two numbers.
    let c3 = cmd(kind::UPSERT_CUSTOMER, "k3", customer("ACME", "001B", "X"));
    let e = failed(bw.exec.execute(&c3).await);
    assert!(e.contains("belongs to Salesforce record 001A"), "{e}");
    let c4 = cmd(kind::UPSERT_CUSTOMER, "k4", customer("ACME2", "001A", "X"));
    let e = failed(bw.exec.execute(&c4).await);
    assert!(e.contains("already customer ACME"), "{e}");
}

#[tokio::test]
async fn an_order_import_is_accepted_and_a_second_one_for_the_opportunity_is_found() {
    let bw = setup(BwNames::default()).await;
    customer_and_item(&bw).await;
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "WIDGET"),
    );
    let r = done(write_through_import(&bw, &c).await);
    assert_eq!(r["action"], "created");
    assert_eq!(r["sales_order_no"], "000001");
    assert_eq!(r["document_no"], "000001");
    assert_eq!(
        bw.exec
            .reader
            .order_by_salesforce_id("006A")
            .await
            .unwrap()
            .as_deref(),
        Some("000001")
    );
    // The same Opportunity under another key: found over ODBC, nothing written.
    let c2 = cmd(
        kind::CREATE_SALES_ORDER,
        "o2",
        order("006A", "ACME", "WIDGET"),
    );
    let r2 = done(bw.exec.execute(&c2).await);
    assert_eq!(r2["action"], "found");
    assert_eq!(r2["sales_order_no"], "000001");
    assert!(bw.sim.run_import().await.unwrap().is_empty());
    // The next order takes the next number.
    let c3 = cmd(
        kind::CREATE_SALES_ORDER,
        "o3",
        order("006B", "ACME", "WIDGET"),
    );
    assert_eq!(
        done(write_through_import(&bw, &c3).await)["sales_order_no"],
        "000002"
    );
    assert_eq!(bw.sim.order_count().await.unwrap(), 2);
}

#[tokio::test]
async fn a_rejected_record_s_log_text_is_the_command_s_failure() {
    let bw = setup(BwNames::default()).await;
    customer_and_item(&bw).await;
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "NOPE"),
    );
    let e = failed(write_through_import(&bw, &c).await);
    assert!(e.contains("Item NOPE does not exist"), "{e}");
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o2",
        order("006B", "GHOST", "WIDGET"),
    );
    let e = failed(write_through_import(&bw, &c).await);
    assert!(e.contains("Customer GHOST does not exist"), "{e}");
    let long = "x".repeat(31);
    let c = cmd(kind::UPSERT_CUSTOMER, "c1", customer("LONG", "001L", &long));
    let e = failed(write_through_import(&bw, &c).await);
    assert!(
        e.contains("Customer name") && e.contains("longer than 30"),
        "{e}"
    );
    // A number taken meanwhile (someone keyed that order in BusinessWorks while ours waited):
    // the import rejects it as a duplicate, and the agent takes the next number.
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o3",
        order("006C", "ACME", "WIDGET"),
    );
    assert_eq!(bw.exec.execute(&c).await, None);
    let no = bw
        .exec
        .state
        .get("o3")
        .await
        .unwrap()
        .unwrap()
        .document_no
        .unwrap();
    sqlx::query(
        "INSERT INTO OEOrder (OrderNo, CustomerNo, OrderDate) VALUES (?1, 'ACME', '2026-11-26')",
    )
    .bind(&no)
    .execute(bw.sim.pool())
    .await
    .unwrap();
    let log = bw.sim.run_import().await.unwrap();
    assert!(
        log[0].entries[0]
            .message
            .contains(&format!("Duplicate order number {no}")),
        "{log:?}"
    );
    assert_eq!(bw.exec.execute(&c).await, None);
    bw.sim.run_import().await.unwrap();
    let r = done(bw.exec.execute(&c).await);
    assert_eq!(r["action"], "created");
    assert_ne!(r["sales_order_no"], no.as_str());
    assert_eq!(
        bw.exec.reader.order_by_salesforce_id("006C").await.unwrap(),
        r["sales_order_no"].as_str().map(str::to_owned)
    );
    // Payments are not applied in BusinessWorks.
    let c = cmd(kind::IMPORT_CASH_RECEIPTS, "r1", json!({"receipts": []}));
    assert!(failed(bw.exec.execute(&c).await).contains("does not apply payments"));
}

#[tokio::test]
async fn a_redelivered_create_imports_nothing_twice() {
    let bw = setup(BwNames::default()).await;
    customer_and_item(&bw).await;
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "WIDGET"),
    );
    // First delivery: number taken, recorded pending, file written; no log yet.
    assert_eq!(bw.exec.execute(&c).await, None);
    let rec = bw.exec.state.get("o1").await.unwrap().unwrap();
    assert_eq!(rec.status, "pending");
    assert_eq!(rec.document_no.as_deref(), Some("000001"));
    // Re-deliveries before the import: no second file, no second number.
    let mut again = c.clone();
    again.deliveries = 2;
    assert_eq!(bw.exec.execute(&again).await, None);
    assert_eq!(bw.exec.execute(&again).await, None);
    let files = std::fs::read_dir(&bw.exec.import.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(files, 1);
    assert_eq!(bw.sim.run_import().await.unwrap().len(), 1);
    let r = done(bw.exec.execute(&again).await);
    assert_eq!(r["action"], "created");
    assert_eq!(r["sales_order_no"], "000001");
    again.deliveries = 3;
    assert_eq!(done(bw.exec.execute(&again).await), r);
    assert!(bw.sim.run_import().await.unwrap().is_empty());
    assert_eq!(bw.sim.order_count().await.unwrap(), 1);

    // A file lost before the import (pending record, no file, no log): written again under
    // the same number, imported once.
    let c2 = cmd(
        kind::CREATE_SALES_ORDER,
        "o2",
        order("006B", "ACME", "WIDGET"),
    );
    assert_eq!(bw.exec.execute(&c2).await, None);
    for e in std::fs::read_dir(&bw.exec.import.dir).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    assert_eq!(bw.exec.execute(&c2).await, None);
    bw.sim.run_import().await.unwrap();
    let r2 = done(bw.exec.execute(&c2).await);
    assert_eq!(r2["sales_order_no"], "000002");
    assert_eq!(bw.sim.order_count().await.unwrap(), 2);
}

#[tokio::test]
async fn row_hash_reads_report_new_and_changed_rows_once_and_page() {
    let bw = setup(BwNames::default()).await;
    customer_and_item(&bw).await;
    for (key, sf) in [("o1", "006A"), ("o2", "006B")] {
        let c = cmd(kind::CREATE_SALES_ORDER, key, order(sf, "ACME", "WIDGET"));
        done(write_through_import(&bw, &c).await);
    }
    let inv1 = bw.sim.invoice_order("000001", 173, 500).await.unwrap();
    let inv2 = bw.sim.invoice_order("000002", 0, 0).await.unwrap();

    let first = read_invoices(&bw, "r1", 10).await;
    assert_eq!(first.invoices.len(), 2);
    assert!(!first.more);
    assert_eq!(first.next, None);
    let a = &first.invoices[0];
    assert_eq!(a.invoice_no, inv1);
    assert_eq!(a.customer_no, "ACME");
    assert_eq!(a.ar_division_no, "00");
    assert_eq!(a.sales_order_no.as_deref(), Some("000001"));
    assert_eq!(a.salesforce_id.as_deref(), Some("006A"));
    assert_eq!(a.customer_po_no, "PO-7");
    assert_eq!(a.lines.len(), 1);
    assert_eq!(a.lines[0].item_code, "WIDGET");
    assert_eq!(a.lines[0].description, "Widget");
    assert_eq!(a.lines[0].quantity, "2");
    assert_eq!(a.lines[0].unit_price_minor, 1050);
    assert_eq!(a.lines[0].extension_minor, 2100);
    assert_eq!(
        (a.sales_minor, a.sales_tax_minor, a.freight_minor),
        (2100, 173, 500)
    );
    assert_eq!(a.total_minor, 2773);
    assert_eq!(a.balance_minor, 2773);

    // The same command delivered again answers the same rows; a new read sees nothing.
    assert_eq!(read_invoices(&bw, "r1", 10).await, first);
    assert!(read_invoices(&bw, "r2", 10).await.invoices.is_empty());

    // A receipt keyed in BusinessWorks: that invoice comes back once, with its new balance.
    assert_eq!(bw.sim.apply_payment(&inv1, 773).await.unwrap(), 2000);
    // A read whose result is never recorded (a crash before the local transaction) loses
    // nothing: the next command reports the row again.
    let known = bw.exec.state.hashes("invoice").await.unwrap();
    let unrecorded = bw.exec.reader.changed_invoices(&known, 10).await.unwrap();
    assert_eq!(unrecorded.rows.len(), 1);
    let changed = read_invoices(&bw, "r3", 10).await;
    assert_eq!(changed.invoices.len(), 1);
    assert_eq!(changed.invoices[0].invoice_no, inv1);
    assert_eq!(changed.invoices[0].balance_minor, 2000);
    assert!(read_invoices(&bw, "r4", 10).await.invoices.is_empty());
    bw.sim.apply_payment(&inv2, 2100).await.unwrap();
    let paid = read_invoices(&bw, "r5", 10).await;
    assert_eq!(paid.invoices.len(), 1);
    assert_eq!(paid.invoices[0].balance_minor, 0);

    // Paging with max_rows.
    bw.sim.add_item("GADGET", "Gadget", 99, "S").await.unwrap();
    bw.sim.add_item("ZED", "Zed", 5, "N").await.unwrap();
    let p1 = read_items(&bw, "i1", 2).await;
    assert_eq!(
        p1.items
            .iter()
            .map(|i| i.item_code.as_str())
            .collect::<Vec<_>>(),
        ["GADGET", "WIDGET"]
    );
    assert!(p1.more);
    let p2 = read_items(&bw, "i2", 2).await;
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.items[0].item_code, "ZED");
    assert_eq!(p2.items[0].unit_price_minor, 5);
    assert_eq!(p2.items[0].item_type, "N");
    assert!(!p2.more);
    assert!(read_items(&bw, "i3", 2).await.items.is_empty());
    bw.sim.add_item("GADGET", "Gadget", 120, "S").await.unwrap();
    let p4 = read_items(&bw, "i4", 2).await;
    assert_eq!(p4.items.len(), 1);
    assert_eq!(p4.items[0].unit_price_minor, 120);
}

#[tokio::test]
async fn bad_amounts_fail_naming_table_key_and_column() {
    let bw = setup(BwNames::default()).await;
    customer_and_item(&bw).await;
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "WIDGET"),
    );
    done(write_through_import(&bw, &c).await);
    let inv = bw.sim.invoice_order("000001", 0, 0).await.unwrap();
    sqlx::query("UPDATE ARInvoice SET Balance = '12.345'")
        .execute(bw.sim.pool())
        .await
        .unwrap();
    let r = cmd(kind::READ_CHANGED_INVOICES, "r1", json!({"max_rows": 5}));
    let e = failed(bw.exec.execute(&r).await);
    assert!(
        e.contains("ARInvoice") && e.contains(&inv) && e.contains("column Balance"),
        "{e}"
    );
    sqlx::query("UPDATE ICItem SET UnitPrice = 'ten'")
        .execute(bw.sim.pool())
        .await
        .unwrap();
    let r = cmd(kind::READ_ITEMS, "r2", json!({"max_rows": 5}));
    let e = failed(bw.exec.execute(&r).await);
    assert!(
        e.contains("ICItem WIDGET") && e.contains("column UnitPrice"),
        "{e}"
    );
}

#[tokio::test]
async fn configured_names_rename_tables_and_columns() {
    let names: BwNames = toml::from_str(
        r#"
[customer]
table = "ARCust"
customer_no = "CustNum"
salesforce_id = "UserField1"
[order]
table = "OEHeader"
salesforce_id = "UserDefined2"
[order_line]
table = "OEDetail"
[invoice]
table = "ARInvHeader"
balance = "AmountDue"
[invoice_line]
table = "ARInvDetail"
extension = "ExtPrice"
[item]
table = "ICInventory"
unit_price = "Price1"
"#,
    )
    .unwrap();
    let bw = setup(names).await;
    customer_and_item(&bw).await;
    let cols: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('ARCust')")
        .fetch_all(bw.sim.pool())
        .await
        .unwrap();
    assert!(cols.iter().any(|c| c.0 == "UserField1"));
    assert_eq!(
        bw.exec
            .reader
            .customer_by_salesforce_id("001A")
            .await
            .unwrap()
            .unwrap()
            .customer_no,
        "ACME"
    );
    let c = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "WIDGET"),
    );
    done(write_through_import(&bw, &c).await);
    let inv = bw.sim.invoice_order("000001", 0, 0).await.unwrap();
    bw.sim.apply_payment(&inv, 100).await.unwrap();
    let r = read_invoices(&bw, "r1", 10).await;
    assert_eq!(r.invoices.len(), 1);
    assert_eq!(r.invoices[0].balance_minor, 2000);
    assert_eq!(r.invoices[0].salesforce_id.as_deref(), Some("006A"));
    assert_eq!(r.invoices[0].lines[0].extension_minor, 2100);
    assert_eq!(
        read_items(&bw, "i1", 10).await.items[0].unit_price_minor,
        1050
    );
    // The default names are not there: a read with them fails with the driver's text.
    let defaults = Reader::new(bw.sim.source(), BwNames::default());
    let e = defaults.customer_by_no("ACME").await.unwrap_err();
    assert!(e.to_string().contains("ARCustomer"), "{e}");
}

#[tokio::test]
async fn with_the_polling_simulator_one_execution_waits_for_the_log() {
    let mut bw = setup(BwNames::default()).await;
    bw.exec.log_wait = Duration::from_secs(10);
    let poller = bw.sim.spawn_polling(Duration::from_millis(50));
    bw.sim
        .add_item("WIDGET", "Widget", 1050, "S")
        .await
        .unwrap();
    let c = cmd(
        kind::UPSERT_CUSTOMER,
        "k1",
        customer("ACME", "001A", "Acme"),
    );
    assert_eq!(done(bw.exec.execute(&c).await)["action"], "created");
    let o = cmd(
        kind::CREATE_SALES_ORDER,
        "o1",
        order("006A", "ACME", "WIDGET"),
    );
    assert_eq!(done(bw.exec.execute(&o).await)["sales_order_no"], "000001");
    poller.abort();
    let processed = std::fs::read_dir(bw.exec.import.processed_dir())
        .unwrap()
        .count();
    assert_eq!(processed, 2);
}
