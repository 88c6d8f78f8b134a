//! Sage 100 reads over ODBC, through the real SQLite ODBC driver (`Driver=SQLite3`) on the
//! simulator's File Layout database: what the SOAP side creates and the simulator's invoicing,
//! Visual Integrator run and hand-keyed receipts do, the agent's `read_*` commands see.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use sync::agent_contract::{InvoicesResult, ItemsResult, ReceiptsResult};
use sync::agent_queue::{Command, Outcome};
use sync::odbc::Source;
use sync::sage100::agent::{Executor, StateStore, ViFolder};
use sync::sage100::simulator::{InvoiceOrder, KeyedReceipt, SimItem, Simulator};
use sync::sage100::soap::Client;

const USER: &str = "ws";
const PASSWORD: &str = "ws-Pa55word";

struct Rig {
    sim: Simulator,
    ex: Executor,
    dir: tempfile::TempDir,
    next_id: AtomicI64,
}

async fn rig() -> Rig {
    let sim = Simulator::start(USER, PASSWORD, "ABC", &["WIDGET", "GADGET"]).await;
    let dir = tempfile::tempdir().unwrap();
    let vi = dir.path().join("vi");
    std::fs::create_dir(&vi).unwrap();
    sim.set_vi_folder(&vi);
    let ex = Executor {
        client: Client::new(&sim.url(), USER, PASSWORD, "ABC"),
        state: StateStore::open(&dir.path().join("agent.db"))
            .await
            .unwrap(),
        sf_udf: "UDF_SF_ID".into(),
        vi_folder: Some(ViFolder(vi)),
        odbc: Some(Source::new(sim.odbc_connection_string())),
    };
    clock(&sim, "10:00:00");
    Rig {
        sim,
        ex,
        dir,
        next_id: AtomicI64::new(1),
    }
}

/// Sage's clock for the next changes: 15 Jan 2027, after anything the simulator stamped from
/// the real clock when it started.
fn clock(sim: &Simulator, hms: &str) {
    sim.set_clock(Some(
        chrono::NaiveDateTime::parse_from_str(&format!("20270115 {hms}"), "%Y%m%d %H:%M:%S")
            .unwrap(),
    ));
}

impl Rig {
    async fn exec(&self, kind: &str, payload: Value) -> Option<Outcome> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.ex
            .execute(&Command {
                id,
                kind: kind.into(),
                payload,
                idempotency_key: format!("{kind}-{id}"),
                deliveries: 1,
            })
            .await
    }

    async fn done(&self, kind: &str, payload: Value) -> Value {
        match self.exec(kind, payload).await {
            Some(Outcome::Done(v)) => v,
            other => panic!("{kind}: {other:?}"),
        }
    }

    async fn failed(&self, kind: &str, payload: Value) -> String {
        match self.exec(kind, payload).await {
            Some(Outcome::Failed(e)) => e,
            other => panic!("{kind}: {other:?}"),
        }
    }

    async fn invoices(&self, since: &Option<String>, max_rows: u32) -> InvoicesResult {
        let v = self
            .done(
                "read_changed_invoices",
                json!({"since": since, "max_rows": max_rows}),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    async fn receipts(&self, since: &Option<String>) -> ReceiptsResult {
        let v = self
            .done(
                "read_cash_receipts",
                json!({"since": since, "max_rows": 100}),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    async fn customer(&self, sf: &str, no: &str) {
        self.done(
            "upsert_customer",
            json!({"salesforce_id": sf, "ar_division_no": "01", "customer_no": no,
                   "customer_name": format!("Customer {no}")}),
        )
        .await;
    }

    /// A sales order through SOAP; returns its number.
    async fn order(&self, sf: &str, no: &str, lines: Value) -> String {
        let r = self
            .done(
                "create_sales_order",
                json!({"salesforce_id": sf, "ar_division_no": "01", "customer_no": no,
                       "customer_po_no": format!("PO-{sf}"), "order_date": "20261126",
                       "lines": lines}),
            )
            .await;
        r["sales_order_no"].as_str().unwrap().to_owned()
    }

    fn invoice(&self, so: &str, tax: i64, freight: i64) -> String {
        self.sim
            .invoice_order(&InvoiceOrder {
                sales_order_no: so.into(),
                invoice_date: Some("20261126".into()),
                sales_tax_minor: tax,
                freight_minor: freight,
            })
            .unwrap()
    }

    fn sage_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.sim.database_path()).unwrap()
    }
}

fn widgets(qty: &str) -> Value {
    json!([{"item_code": "WIDGET", "quantity": qty, "unit_price_minor": 1250}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_read_back_with_lines_totals_and_the_order_link() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let so = r
        .order(
            "006A",
            "ACME",
            json!([
                {"item_code": "WIDGET", "quantity": "2", "unit_price_minor": 1250},
                {"item_code": "GADGET", "quantity": "1.5", "unit_price_minor": 333}
            ]),
        )
        .await;
    let so2 = r.order("006B", "ACME", widgets("1")).await;
    // Nothing invoiced yet: nothing to read.
    let first = r.invoices(&None, 10).await;
    assert!(first.invoices.is_empty() && first.next.is_none() && !first.more);

    clock(&r.sim, "14:30:30");
    let inv = r.invoice(&so, 150, 500);
    clock(&r.sim, "14:31:00");
    let inv2 = r.invoice(&so2, 0, 0);
    let page = r.invoices(&None, 10).await;
    assert_eq!(page.invoices.len(), 2, "{page:?}");
    assert!(!page.more);
    let a = &page.invoices[0];
    assert_eq!(a.invoice_no, inv);
    assert_eq!(a.invoice_date, "20261126");
    assert_eq!(
        (a.ar_division_no.as_str(), a.customer_no.as_str()),
        ("01", "ACME")
    );
    assert_eq!(a.sales_order_no.as_deref(), Some(so.as_str()));
    assert_eq!(a.salesforce_id.as_deref(), Some("006A"));
    assert_eq!(a.customer_po_no, "PO-006A");
    assert_eq!(a.lines.len(), 2);
    assert_eq!(a.lines[0].item_code, "WIDGET");
    assert_eq!(a.lines[0].quantity, "2");
    assert_eq!(a.lines[0].unit_price_minor, 1250);
    assert_eq!(a.lines[0].extension_minor, 2500);
    // 1.5 × 3.33 = 4.995: Sage rounds the extension to 5.00.
    assert_eq!(a.lines[1].quantity, "1.5");
    assert_eq!(a.lines[1].unit_price_minor, 333);
    assert_eq!(a.lines[1].extension_minor, 500);
    assert_eq!(a.lines[1].description, "GADGET");
    assert_eq!(
        (
            a.sales_minor,
            a.sales_tax_minor,
            a.freight_minor,
            a.total_minor,
            a.balance_minor
        ),
        (3000, 150, 500, 3650, 3650)
    );
    let b = &page.invoices[1];
    assert_eq!(b.invoice_no, inv2);
    assert_eq!(b.salesforce_id.as_deref(), Some("006B"));
    assert_eq!(
        (b.total_minor, b.balance_minor, b.sales_tax_minor),
        (1250, 1250, 0)
    );

    // The cursor: a second read returns nothing new, and keeps the cursor.
    let again = r.invoices(&page.next, 10).await;
    assert!(again.invoices.is_empty(), "{again:?}");
    assert_eq!(again.next, page.next);
    assert!(!again.more);

    // The same command delivered again is answered from the record, not read again.
    let cmd = Command {
        id: 999,
        kind: "read_changed_invoices".into(),
        payload: json!({"since": null, "max_rows": 10}),
        idempotency_key: "read-once".into(),
        deliveries: 1,
    };
    let Some(Outcome::Done(once)) = r.ex.execute(&cmd).await else {
        panic!()
    };
    clock(&r.sim, "15:00:00");
    let so3 = r.order("006C", "ACME", widgets("3")).await;
    r.invoice(&so3, 0, 0);
    let Some(Outcome::Done(twice)) = r.ex.execute(&cmd).await else {
        panic!()
    };
    assert_eq!(once, twice);
    drop(r.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_break_inside_equal_timestamps_without_losing_rows() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let mut orders = Vec::new();
    for i in 0..5 {
        orders.push(r.order(&format!("006{i}"), "ACME", widgets("1")).await);
    }
    // Before 10:00, TimeUpdated is "9.xxxxx": as text it would sort after "14.…".
    clock(&r.sim, "09:15:00");
    let early = r.invoice(&orders[0], 0, 0);
    // Three invoices in the same instant.
    clock(&r.sim, "14:30:30");
    let mut same = Vec::new();
    for so in &orders[1..4] {
        same.push(r.invoice(so, 0, 0));
    }
    clock(&r.sim, "16:00:00");
    let late = r.invoice(&orders[4], 0, 0);

    let mut seen = Vec::new();
    let mut since = None;
    let mut pages = 0;
    loop {
        let p = r.invoices(&since, 2).await;
        pages += 1;
        assert!(p.invoices.len() <= 2);
        seen.extend(p.invoices.iter().map(|i| i.invoice_no.clone()));
        since = p.next;
        if !p.more {
            break;
        }
    }
    let mut want = vec![early];
    want.extend(same);
    want.push(late);
    assert_eq!(
        seen, want,
        "in (DateUpdated, TimeUpdated as a number, key) order"
    );
    assert_eq!(pages, 3);
    let after = r.invoices(&since, 2).await;
    assert!(after.invoices.is_empty());

    // Another invoice in the same instant as the last page's rows comes on the next read.
    clock(&r.sim, "16:00:00");
    let so = r.order("006Z", "ACME", widgets("1")).await;
    let same_instant = r.invoice(&so, 0, 0);
    let p = r.invoices(&since, 2).await;
    let got: Vec<_> = p.invoices.iter().map(|i| i.invoice_no.clone()).collect();
    assert_eq!(got, [same_instant]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visual_integrator_posts_a_good_file_and_rejects_a_bad_one() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let so = r.order("006A", "ACME", widgets("4")).await;
    clock(&r.sim, "11:00:00");
    let inv = r.invoice(&so, 0, 0);
    let before = r.invoices(&None, 10).await;
    assert_eq!(before.invoices[0].balance_minor, 5000);

    // The agent writes the import file; VI posts it.
    let receipt = |check: &str, amount: i64, invoice: &str| {
        json!({"salesforce_id": format!("a0P{check}"), "ar_division_no": "01",
               "customer_no": "ACME", "deposit_date": "20261126", "check_no": check,
               "amount_minor": amount, "invoice_no": invoice})
    };
    let file = r
        .done(
            "import_cash_receipts",
            json!({"receipts": [receipt("pay_1", 2000, &inv), receipt("pay_2", 700, "")]}),
        )
        .await;
    let name = file["file"].as_str().unwrap().to_owned();
    clock(&r.sim, "12:00:00");
    let runs = r.sim.run_visual_integrator().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].file, name);
    assert_eq!(runs[0].posted, 2);
    assert!(runs[0].rejected.is_none());
    let vi = r.dir.path().join("vi");
    assert!(!vi.join(&name).exists());
    assert!(vi.join("processed").join(&name).exists());
    let log = std::fs::read_to_string(vi.join("processed").join(format!("{name}.log"))).unwrap();
    assert!(
        log.contains("2 records posted") && log.contains("27.00"),
        "{log}"
    );

    // The invoice reads back as changed, with its new balance.
    let after = r.invoices(&before.next, 10).await;
    assert_eq!(after.invoices.len(), 1, "{after:?}");
    assert_eq!(after.invoices[0].invoice_no, inv);
    assert_eq!(after.invoices[0].balance_minor, 3000);
    assert_eq!(after.invoices[0].total_minor, 5000);
    let rec = r.receipts(&None).await;
    assert_eq!(rec.receipts.len(), 2);
    let on_invoice = rec.receipts.iter().find(|x| x.check_no == "pay_1").unwrap();
    assert_eq!(on_invoice.amount_minor, 2000);
    assert_eq!(on_invoice.invoice_no.as_deref(), Some(inv.as_str()));
    assert_eq!(on_invoice.comment, "a0Ppay_1");
    assert_eq!(on_invoice.deposit_date, "20261126");
    let on_account = rec.receipts.iter().find(|x| x.check_no == "pay_2").unwrap();
    assert_eq!(on_account.invoice_no, None);

    // Bad files: nothing posted, moved to rejected/ with the record and the reason.
    let bad = [
        (
            "pay_3",
            receipt("pay_3", 100, "0999999"),
            "record 2: unknown invoice 0999999 for customer 01-ACME",
        ),
        (
            "pay_5",
            // The first record took 1.00 of the 30.00 left.
            receipt("pay_5", 2901, &inv),
            "record 2: amount 29.01 over the balance 29.00",
        ),
        (
            "pay_6",
            // A 36-character payment id does not fit Sage 100's CheckNo.
            receipt("pay_0123456789abcdef0123456789abcdef", 100, &inv),
            "record 2: CheckNo \"pay_0123456789abcdef0123456789abcdef\" is longer than 10 characters",
        ),
    ];
    for (check, second, reason) in bad {
        let f = r
            .done(
                "import_cash_receipts",
                json!({"receipts": [receipt(&format!("{check}a"), 100, &inv), second]}),
            )
            .await;
        let name = f["file"].as_str().unwrap().to_owned();
        let runs = r.sim.run_visual_integrator().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].posted, 0);
        let why = runs[0].rejected.clone().unwrap();
        assert!(why.contains(reason), "{why}");
        assert!(vi.join("rejected").join(&name).exists());
        let log = std::fs::read_to_string(vi.join("rejected").join(format!("{name}.log"))).unwrap();
        assert!(log.contains(reason), "{log}");
    }
    // An unknown customer, written by hand into the folder.
    std::fs::write(
        vi.join("AR_CashReceipts_hand.csv"),
        "20261126,01,NOBODY,chk9,1.00,,1.00,x\r\n",
    )
    .unwrap();
    let runs = r.sim.run_visual_integrator().unwrap();
    assert!(
        runs[0]
            .rejected
            .as_deref()
            .unwrap()
            .contains("record 1: unknown customer 01-NOBODY")
    );
    // Nothing of the bad files was posted: same receipts, same balance.
    assert_eq!(r.receipts(&None).await.receipts.len(), 2);
    let now = r.invoices(&None, 10).await;
    assert_eq!(now.invoices[0].balance_minor, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_keyed_receipt_is_read_and_pays_the_invoice() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let so = r.order("006A", "ACME", widgets("2")).await;
    let inv = r.invoice(&so, 0, 0);
    let inv_read = r.invoices(&None, 10).await;
    let rec0 = r.receipts(&None).await;
    assert!(rec0.receipts.is_empty());

    clock(&r.sim, "13:00:00");
    let keyed = KeyedReceipt {
        ar_division_no: "01".into(),
        customer_no: "ACME".into(),
        check_no: "1042".into(),
        deposit_date: "20261126".into(),
        amount_minor: 2500,
        invoice_no: inv.clone(),
        comment: "check by post".into(),
    };
    let deposit = r.sim.key_cash_receipt(&keyed).unwrap();
    let rec = r.receipts(&rec0.next).await;
    assert_eq!(rec.receipts.len(), 1);
    let x = &rec.receipts[0];
    assert_eq!(x.deposit_no, deposit);
    assert_eq!(x.check_no, "1042");
    assert_eq!(x.amount_minor, 2500);
    assert_eq!(x.invoice_no.as_deref(), Some(inv.as_str()));
    assert_eq!(x.comment, "check by post");
    assert!(r.receipts(&rec.next).await.receipts.is_empty());
    // Paid in full: the invoice comes back with balance 0.
    let paid = r.invoices(&inv_read.next, 10).await;
    assert_eq!(paid.invoices.len(), 1);
    assert_eq!(paid.invoices[0].balance_minor, 0);
    // More than the balance is refused at entry, as Sage does.
    let e = r
        .sim
        .key_cash_receipt(&KeyedReceipt {
            check_no: "1043".into(),
            amount_minor: 1,
            ..keyed
        })
        .unwrap_err();
    assert!(e.to_string().contains("over the balance"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_read_with_prices_and_paging() {
    let r = rig().await;
    clock(&r.sim, "10:30:00");
    r.sim
        .put_item(&SimItem {
            item_code: "WIDGET".into(),
            description: "Widget, blue".into(),
            unit_price_minor: 1250,
            item_type: None,
        })
        .unwrap();
    r.sim
        .put_item(&SimItem {
            item_code: "NEW1".into(),
            description: "New".into(),
            unit_price_minor: 5,
            item_type: Some("3".into()),
        })
        .unwrap();
    let v = r
        .done("read_items", json!({"since": null, "max_rows": 2}))
        .await;
    let p: ItemsResult = serde_json::from_value(v).unwrap();
    // GADGET is as the simulator started; NEW1 and WIDGET changed at 10:30 (key order).
    let codes: Vec<_> = p.items.iter().map(|i| i.item_code.as_str()).collect();
    assert_eq!(codes, ["GADGET", "NEW1"]);
    assert!(p.more);
    assert_eq!(p.items[1].unit_price_minor, 5);
    assert_eq!(p.items[1].item_type, "3");
    let v = r
        .done("read_items", json!({"since": p.next, "max_rows": 2}))
        .await;
    let p2: ItemsResult = serde_json::from_value(v).unwrap();
    assert!(!p2.more);
    assert_eq!(p2.items.len(), 1);
    let w = &p2.items[0];
    assert_eq!(
        (
            w.item_code.as_str(),
            w.description.as_str(),
            w.unit_price_minor,
            w.item_type.as_str()
        ),
        ("WIDGET", "Widget, blue", 1250, "1")
    );
    let v = r
        .done("read_items", json!({"since": p2.next, "max_rows": 2}))
        .await;
    let p3: ItemsResult = serde_json::from_value(v).unwrap();
    assert!(p3.items.is_empty() && !p3.more && p3.next == p2.next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_and_configuration_fail_transient_errors_retry() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let so = r.order("006A", "ACME", widgets("1")).await;
    let inv = r.invoice(&so, 0, 0);

    // Three decimal places in the database: the read fails naming table, key and column.
    r.sage_db()
        .execute("UPDATE AR_OpenInvoice SET Balance = '12.345'", [])
        .unwrap();
    let e = r
        .failed(
            "read_changed_invoices",
            json!({"since": null, "max_rows": 5}),
        )
        .await;
    assert!(
        e.contains("AR_OpenInvoice")
            && e.contains(&format!("01-ACME-{inv}-IN"))
            && e.contains("Balance")
            && e.contains("more than 2 decimal places"),
        "{e}"
    );
    r.sage_db()
        .execute(
            "UPDATE CI_Item SET StandardUnitPrice = 'n/a' WHERE ItemCode = 'GADGET'",
            [],
        )
        .unwrap();
    let e = r
        .failed("read_items", json!({"since": null, "max_rows": 5}))
        .await;
    assert!(
        e.contains("CI_Item GADGET: StandardUnitPrice \"n/a\" is not a number"),
        "{e}"
    );
    // A cursor this agent did not write.
    let e = r
        .failed("read_cash_receipts", json!({"since": "x", "max_rows": 5}))
        .await;
    assert!(e.contains("cursor"), "{e}");

    // A missing column is configuration: failed, not retried.
    let mut ex = r.ex.clone();
    ex.sf_udf = "UDF_NOT_THERE".into();
    let cmd = |key: &str, kind: &str| Command {
        id: 77,
        kind: kind.into(),
        payload: json!({"since": null, "max_rows": 5}),
        idempotency_key: key.into(),
        deliveries: 1,
    };
    let out = ex.execute(&cmd("k1", "read_changed_invoices")).await;
    let Some(Outcome::Failed(e)) = out else {
        panic!("{out:?}")
    };
    assert!(e.contains("UDF_NOT_THERE"), "{e}");

    // A data source that cannot be reached: left for a retry.
    ex.odbc = Some(Source::new(
        "Driver=SQLite3;Database=/nonexistent-dir/none/sage.db;",
    ));
    assert_eq!(ex.execute(&cmd("k2", "read_items")).await, None);
    // Without a data source: failed, saying so.
    ex.odbc = None;
    let out = ex.execute(&cmd("k3", "read_cash_receipts")).await;
    let Some(Outcome::Failed(e)) = out else {
        panic!("{out:?}")
    };
    assert!(e.contains("--odbc-file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_endpoints_drive_the_same_books() {
    let r = rig().await;
    r.customer("001A", "ACME").await;
    let so = r.order("006A", "ACME", widgets("2")).await;
    let http = reqwest::Client::new();
    let base = r.sim.base_url();
    let resp = http
        .post(format!("{base}/sim/invoice"))
        .json(&json!({"sales_order_no": so, "freight_minor": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let inv: Value = resp.json().await.unwrap();
    let inv = inv["invoice_no"].as_str().unwrap().to_owned();
    // Invoiced once only.
    let resp = http
        .post(format!("{base}/sim/invoice"))
        .json(&json!({"sales_order_no": so}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = http
        .post(format!("{base}/sim/cash_receipts"))
        .json(
            &json!({"ar_division_no": "01", "customer_no": "ACME", "check_no": "77",
                      "deposit_date": "20261126", "amount_minor": 800, "invoice_no": inv}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(format!("{base}/sim/items"))
        .json(&json!({"item_code": "NEW", "unit_price_minor": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(format!("{base}/sim/vi/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let runs: Value = resp.json().await.unwrap();
    assert_eq!(runs["files"], json!([]));

    let p = r.invoices(&None, 10).await;
    assert_eq!(p.invoices[0].freight_minor, 300);
    assert_eq!(p.invoices[0].total_minor, 2800);
    assert_eq!(p.invoices[0].balance_minor, 2000);
    assert_eq!(r.receipts(&None).await.receipts[0].check_no, "77");
}
