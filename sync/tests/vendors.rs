//! Vendors and AP bills against the Salesforce and Intacct simulators over their sockets, on
//! SQLite and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL: VENDOR → vendor Account, APBILL →
//! `Cashloop_AP_Bill__c` with its vendor lookup and exact amounts; a vendor Account made in
//! Salesforce → one VENDOR, also across a crash between create and link.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use db::{Db, both_backends};
use rust_decimal::Decimal;
use std::time::Duration;
use sync::flows::changed_kind;
use sync::flows::{PullObject, SalesforceSync};
use sync::intacct::client::{Secret, UserAuth};
use sync::intacct::simulator::{Simulator as IaSim, SimulatorConfig as IaSimConfig};
use sync::intacct::{Element, IntacctClient, IntacctConfig, InvoiceLine, LegacyCurrency, NewBill};
use sync::jobs::{JobError, Jobs, NewJob, Registry, WorkerOptions, run_worker};
use sync::salesforce::simulator::{Simulator as SfSim, SimulatorConfig as SfSimConfig};
use sync::salesforce::{ClientConfig, Credentials, Record, SalesforceClient, Value};
use sync::vendors::{
    PULL, VENDOR_XREF_OBJECT, Vendors, VendorsConfig, account_changed_handler, bill_key,
    vendor_id_for,
};
use sync::xref::Xref;

struct World {
    sf: SfSim,
    ia: IaSim,
    sync: SalesforceSync,
    vendors: Vendors,
    db: Db,
}

fn intacct_client(sim: &IaSim, entity: &str) -> Arc<IntacctClient> {
    let c = sim.config();
    let (user, pass) = c.users[0].clone();
    let mut cfg = IntacctConfig::new(
        &c.sender_id,
        Secret::new(&c.sender_password),
        &c.company_id,
        UserAuth::Login {
            user_id: user,
            password: Secret::new(pass),
        },
    );
    cfg.endpoint_url = sim.endpoint_url();
    cfg.entity = Some(entity.to_owned());
    Arc::new(IntacctClient::new(cfg).unwrap())
}

async fn world(db: Db) -> World {
    let sf = SfSim::start(SfSimConfig::default()).await;
    let creds = Credentials::client_credentials(&sf.config().client_id, &sf.config().client_secret);
    let client = SalesforceClient::new(ClientConfig::new(sf.base_url()), creds).unwrap();
    let sync = SalesforceSync::new(
        db.clone(),
        client,
        vec![PullObject {
            name: "Account".into(),
            fields: vec!["Name".into(), "Type".into()],
        }],
        Some(sf.config().api_user_id.clone()),
    );
    let ia = IaSim::start(IaSimConfig::default()).await;
    let mut entities = BTreeMap::new();
    for e in ["US", "UK"] {
        entities.insert(e.to_owned(), intacct_client(&ia, e));
    }
    let vendors = Vendors::new(
        db.clone(),
        Jobs::new(db.clone()),
        sync.clone(),
        entities,
        VendorsConfig {
            vendor_entity: "US".into(),
            ..VendorsConfig::default()
        },
    );
    World {
        sf,
        ia,
        sync,
        vendors,
        db,
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A field's value as text (decimals normalized), `None` when null or absent.
fn field(r: &Record, name: &str) -> Option<String> {
    match r.get(name)? {
        Value::Null => None,
        v => v
            .as_decimal()
            .filter(|_| !matches!(v, Value::Text(_)))
            .map(|d| d.normalize().to_string())
            .or_else(|| v.as_str().map(str::to_owned)),
    }
}

impl World {
    fn client(&self, entity: &str) -> Arc<IntacctClient> {
        intacct_client(&self.ia, entity)
    }

    async fn soql(&self, q: &str) -> Vec<Record> {
        self.sync.client().query_collect(q).await.unwrap()
    }

    async fn bills(&self) -> Vec<Record> {
        self.soql(
            "SELECT Id, Name, Vendor__c, Sage_Bill_Key__c, Bill_Number__c, Bill_Date__c, Due_Date__c, \
             Amount__c, Amount_Due__c, Currency__c, Status__c, Entity__c FROM Cashloop_AP_Bill__c",
        )
        .await
    }

    async fn bill(&self, key: &str) -> Record {
        self.bills()
            .await
            .into_iter()
            .find(|b| b.get_str("Sage_Bill_Key__c") == Some(key))
            .unwrap_or_else(|| panic!("no bill {key}"))
    }

    async fn push_all(&self) -> (u64, u64) {
        let a = self.sync.push("Account", None).await.unwrap();
        let b = self.sync.push("Cashloop_AP_Bill__c", None).await.unwrap();
        (a.sent, b.sent)
    }

    async fn forget_vendor_links(&self) {
        let sql = "DELETE FROM sync_xref WHERE object = 'Account:VENDOR'";
        assert_eq!(VENDOR_XREF_OBJECT, "Account:VENDOR");
        match &self.db {
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
            Db::Sqlite(s) => sqlx::query(sql)
                .execute(&s.pool)
                .await
                .unwrap()
                .rows_affected(),
        };
    }
}

fn vendor(id: &str, name: &str) -> Element {
    Element::new("VENDOR")
        .with_leaf("VENDORID", id)
        .with_leaf("NAME", name)
        .with(
            Element::new("DISPLAYCONTACT")
                .with_leaf("PRINTAS", name)
                .with_leaf("PHONE1", "+1 415 555 0100")
                .with_leaf("EMAIL1", "ap@acme-supplies.example")
                .with(
                    Element::new("MAILADDRESS")
                        .with_leaf("ADDRESS1", "1 Market St")
                        .with_leaf("CITY", "San Francisco")
                        .with_leaf("ZIP", "94105")
                        .with_leaf("COUNTRY", "United States"),
                ),
        )
}

fn line(gl: &str, amount: &str) -> InvoiceLine {
    InvoiceLine {
        gl_account_no: gl.into(),
        amount: dec(amount),
        memo: None,
        location_id: None,
        department_id: None,
    }
}

both_backends!(vendors_and_bills_reach_salesforce_once, |t| async move {
    let w = world(t.db.clone()).await;
    let us = w.client("US");
    us.create("v-acme", vec![vendor("V-ACME", "Acme Supplies")])
        .await
        .unwrap();
    // A vendor with no contact details: only what Intacct has is written.
    us.create(
        "v-bare",
        vec![
            Element::new("VENDOR")
                .with_leaf("VENDORID", "V-BARE")
                .with_leaf("NAME", "Bare Vendor")
                .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", "Bare Vendor")),
        ],
    )
    .await
    .unwrap();
    let legacy = us
        .create_bill(
            "bill-1",
            &NewBill {
                vendor_id: "V-ACME".into(),
                date_created: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                date_due: NaiveDate::from_ymd_opt(2026, 12, 2),
                term_name: None,
                bill_no: Some("INV-7781".into()),
                po_number: None,
                description: Some("Widgets".into()),
                currency: LegacyCurrency {
                    base_currency: None,
                    currency: None,
                    exch_rate_date: None,
                    exchange: None,
                },
                lines: vec![line("6000", "1000.10"), line("6100", "234.56")],
            },
        )
        .await
        .unwrap();
    // A EUR bill in the UK entity (base GBP): the amounts stay in euros, to the cent.
    let uk = w.client("UK");
    let eur = uk
        .create(
            "bill-2",
            vec![
                Element::new("APBILL")
                    .with_leaf("VENDORID", "V-BARE")
                    .with_leaf("RECORDID", "B-0002")
                    .with_leaf("WHENCREATED", "11/03/2026")
                    .with_leaf("WHENDUE", "12/03/2026")
                    .with_leaf("CURRENCY", "EUR")
                    .with(
                        Element::new("APBILLITEMS")
                            .with(
                                Element::new("APBILLITEM")
                                    .with_leaf("ACCOUNTNO", "6000")
                                    .with_leaf("TRX_AMOUNT", "0.10"),
                            )
                            .with(
                                Element::new("APBILLITEM")
                                    .with_leaf("ACCOUNTNO", "6000")
                                    .with_leaf("TRX_AMOUNT", "0.20"),
                            ),
                    ),
            ],
        )
        .await
        .unwrap();
    let eur_no = eur[0].text_at("RECORDNO").unwrap().to_owned();

    let r = w.vendors.pull("US").await.unwrap();
    assert_eq!((r.vendors, r.linked, r.bills), (2, 2, 1), "{r:?}");
    // The UK pull: the vendors belong to US (MEGAENTITYID), the EUR bill to UK.
    let r = w.vendors.pull("UK").await.unwrap();
    assert_eq!((r.vendors, r.bills), (0, 1), "{r:?}");
    w.push_all().await;

    let accounts = w
        .soql("SELECT Id, Name, Type, Phone, Vendor_Email__c, BillingStreet, BillingCity, BillingPostalCode, BillingCountry, Sage_Vendor_Id__c FROM Account")
        .await;
    assert_eq!(accounts.len(), 2);
    let acme = accounts
        .iter()
        .find(|a| a.get_str("Sage_Vendor_Id__c") == Some("V-ACME"))
        .unwrap();
    assert_eq!(acme.get_str("Name"), Some("Acme Supplies"));
    assert_eq!(acme.get_str("Type"), Some("Vendor"));
    assert_eq!(acme.get_str("Phone"), Some("+1 415 555 0100"));
    assert_eq!(
        acme.get_str("Vendor_Email__c"),
        Some("ap@acme-supplies.example")
    );
    assert_eq!(acme.get_str("BillingStreet"), Some("1 Market St"));
    assert_eq!(acme.get_str("BillingCity"), Some("San Francisco"));
    assert_eq!(acme.get_str("BillingPostalCode"), Some("94105"));
    let bare = accounts
        .iter()
        .find(|a| a.get_str("Sage_Vendor_Id__c") == Some("V-BARE"))
        .unwrap();
    assert_eq!(field(bare, "Phone"), None);
    assert_eq!(bare.get_str("Type"), Some("Vendor"));

    let bill = w.bill(&bill_key("US", &legacy)).await;
    assert_eq!(bill.get_str("Vendor__c"), acme.id());
    assert_eq!(bill.get_str("Bill_Number__c"), Some("INV-7781"));
    assert_eq!(bill.get_str("Name"), Some("Acme Supplies INV-7781"));
    assert_eq!(field(&bill, "Bill_Date__c").as_deref(), Some("2026-11-02"));
    assert_eq!(field(&bill, "Due_Date__c").as_deref(), Some("2026-12-02"));
    assert_eq!(
        bill.get("Amount__c").unwrap().as_decimal(),
        Some(dec("1234.66"))
    );
    assert_eq!(
        bill.get("Amount_Due__c").unwrap().as_decimal(),
        Some(dec("1234.66"))
    );
    assert_eq!(bill.get_str("Currency__c"), Some("USD"));
    assert_eq!(bill.get_str("Status__c"), Some("Posted"));
    assert_eq!(bill.get_str("Entity__c"), Some("US"));

    let bill = w.bill(&bill_key("UK", &eur_no)).await;
    assert_eq!(bill.get_str("Vendor__c"), bare.id());
    assert_eq!(bill.get_str("Currency__c"), Some("EUR"));
    // 0.10 + 0.20 is exactly 0.30 (never 0.30000000000000004).
    assert_eq!(
        bill.get("Amount__c").unwrap().as_decimal(),
        Some(dec("0.30"))
    );
    assert_eq!(bill.get_str("Entity__c"), Some("UK"));

    // A re-pull changes nothing: nothing new to push, no record added.
    for e in ["US", "UK"] {
        let r = w.vendors.pull(e).await.unwrap();
        assert_eq!((r.vendors, r.linked), (0, 0), "{e}: {r:?}");
    }
    assert_eq!(w.push_all().await, (0, 0));
    assert_eq!(w.sf.count("Account"), 2);
    assert_eq!(w.bills().await.len(), 2);
    // Even from scratch (cursors and links forgotten), nothing is duplicated.
    w.forget_vendor_links().await;
    let sql = "DELETE FROM sync_cursors";
    match &w.db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
        Db::Sqlite(s) => sqlx::query(sql)
            .execute(&s.pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    w.vendors.pull("US").await.unwrap();
    w.push_all().await;
    assert_eq!(w.sf.count("Account"), 2);
    assert_eq!(w.bills().await.len(), 2);
});

both_backends!(a_bill_paid_in_intacct_updates_salesforce, |t| async move {
    let w = world(t.db.clone()).await;
    let us = w.client("US");
    us.create("v-acme", vec![vendor("V-ACME", "Acme Supplies")])
        .await
        .unwrap();
    let no = us
        .create_bill(
            "bill-1",
            &NewBill {
                vendor_id: "V-ACME".into(),
                date_created: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                date_due: None,
                term_name: None,
                bill_no: Some("INV-1".into()),
                po_number: None,
                description: None,
                currency: LegacyCurrency {
                    base_currency: None,
                    currency: None,
                    exch_rate_date: None,
                    exchange: None,
                },
                lines: vec![line("6000", "500.00")],
            },
        )
        .await
        .unwrap();
    w.vendors.pull("US").await.unwrap();
    w.push_all().await;
    let key = bill_key("US", &no);
    assert_eq!(field(&w.bill(&key).await, "Due_Date__c"), None);
    assert_eq!(
        w.bill(&key)
            .await
            .get("Amount_Due__c")
            .unwrap()
            .as_decimal(),
        Some(dec("500"))
    );
    // Part paid, then paid in full, in Intacct.
    us.update(
        "pay-1",
        vec![
            Element::new("APBILL")
                .with_leaf("RECORDNO", &no)
                .with_leaf("STATE", "Partially Paid")
                .with_leaf("TRX_TOTALPAID", "199.99")
                .with_leaf("TRX_TOTALDUE", "300.01"),
        ],
    )
    .await
    .unwrap();
    w.vendors.pull("US").await.unwrap();
    assert_eq!(w.push_all().await, (0, 1));
    let bill = w.bill(&key).await;
    assert_eq!(bill.get_str("Status__c"), Some("Partially Paid"));
    assert_eq!(
        bill.get("Amount_Due__c").unwrap().as_decimal(),
        Some(dec("300.01"))
    );
    assert_eq!(
        bill.get("Amount__c").unwrap().as_decimal(),
        Some(dec("500"))
    );
    us.update(
        "pay-2",
        vec![
            Element::new("APBILL")
                .with_leaf("RECORDNO", &no)
                .with_leaf("STATE", "Paid")
                .with_leaf("TRX_TOTALPAID", "500.00")
                .with_leaf("TRX_TOTALDUE", "0.00"),
        ],
    )
    .await
    .unwrap();
    w.vendors.pull("US").await.unwrap();
    w.push_all().await;
    let bill = w.bill(&key).await;
    assert_eq!(bill.get_str("Status__c"), Some("Paid"));
    assert_eq!(
        bill.get("Amount_Due__c").unwrap().as_decimal(),
        Some(Decimal::ZERO)
    );
    assert_eq!(w.bills().await.len(), 1);
});

both_backends!(
    a_bill_waits_for_its_vendor_with_a_retryable_error,
    |t| async move {
        let w = world(t.db.clone()).await;
        let us = w.client("US");
        // Salesforce refuses this vendor's Account (Name longer than 255): its bill waits.
        let long = "L".repeat(300);
        us.create("v-long", vec![vendor("V-LONG", &long)])
            .await
            .unwrap();
        let no = us
            .create(
                "bill-1",
                vec![
                    Element::new("APBILL").with_leaf("VENDORID", "V-LONG").with(
                        Element::new("APBILLITEMS").with(
                            Element::new("APBILLITEM")
                                .with_leaf("ACCOUNTNO", "6000")
                                .with_leaf("TRX_AMOUNT", "10.00"),
                        ),
                    ),
                ],
            )
            .await
            .unwrap()[0]
            .text_at("RECORDNO")
            .unwrap()
            .to_owned();
        match w.vendors.pull("US").await.unwrap_err() {
            JobError::Retryable(m) => {
                assert!(
                    m.contains("V-LONG") && m.contains("not in Salesforce"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(w.bills().await.is_empty());
        // Renamed in Intacct: the vendor arrives, then its bill.
        us.update("rename", vec![vendor("V-LONG", "Long Name Ltd")])
            .await
            .unwrap();
        w.vendors.pull("US").await.unwrap();
        w.push_all().await;
        let bill = w.bill(&bill_key("US", &no)).await;
        let account = w
            .soql("SELECT Id FROM Account WHERE Sage_Vendor_Id__c = 'V-LONG'")
            .await;
        assert_eq!(bill.get_str("Vendor__c"), account[0].id());
    }
);

both_backends!(
    a_vendor_account_from_salesforce_becomes_one_vendor,
    |t| async move {
        let w = world(t.db.clone()).await;
        let id =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", "Globex Parts")
                    .with("Type", "Vendor")
                    .with("Phone", "+44 20 7946 0000")
                    .with("BillingCity", "London")],
            )
            .unwrap()
            .remove(0);
        let customer =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", "Just A Customer")
                    .with("Type", "Customer")],
            )
            .unwrap()
            .remove(0);
        assert!(!w.vendors.vendor_changed(&customer).await.unwrap());
        assert!(w.vendors.vendor_changed(&id).await.unwrap());
        let vendors = w.ia.records("VENDOR");
        assert_eq!(vendors.len(), 1);
        let v = &vendors[0];
        let vendor_id = vendor_id_for(&id);
        assert_eq!(vendor_id.len(), 20);
        assert_eq!(v.text_at("VENDORID"), Some(vendor_id.as_str()));
        assert_eq!(v.text_at("NAME"), Some("Globex Parts"));
        assert_eq!(v.text_at("DISPLAYCONTACT/PRINTAS"), Some("Globex Parts"));
        assert_eq!(v.text_at("DISPLAYCONTACT/PHONE1"), Some("+44 20 7946 0000"));
        assert_eq!(v.text_at("DISPLAYCONTACT/MAILADDRESS/CITY"), Some("London"));
        // The VENDORID goes back to the Account.
        w.push_all().await;
        assert_eq!(
            w.sf.record("Account", &id)
                .unwrap()
                .get_str("Sage_Vendor_Id__c"),
            Some(vendor_id.as_str())
        );
        // Nothing changed: nothing written.
        assert!(!w.vendors.vendor_changed(&id).await.unwrap());
        assert_eq!(w.ia.function_count("create"), 1);
        assert_eq!(w.ia.function_count("update"), 0);

        // A change in Salesforce reaches the linked vendor.
        w.sf.update_as_user(
            "Account",
            &id,
            &Record::new("Account").with("Phone", "+44 20 7946 9999"),
        )
        .unwrap();
        assert!(w.vendors.vendor_changed(&id).await.unwrap());
        let v = &w.ia.records("VENDOR")[0];
        assert_eq!(v.text_at("DISPLAYCONTACT/PHONE1"), Some("+44 20 7946 9999"));
        assert_eq!(v.text_at("DISPLAYCONTACT/PRINTAS"), Some("Globex Parts"));
        assert_eq!(w.ia.function_count("update"), 1);

        // The vendor comes back in the pull: the same Account, no second one, no write.
        let before = w.sf.count("Account");
        let r = w.vendors.pull("US").await.unwrap();
        assert_eq!(r.vendors, 0, "{r:?}");
        w.push_all().await;
        assert_eq!(w.sf.count("Account"), before);
        assert!(!w.vendors.vendor_changed(&id).await.unwrap());

        // A crash between create and link: the retry finds the VENDOR, creates nothing.
        let second =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", "Initrode Metals")
                    .with("Type", "Vendor")],
            )
            .unwrap()
            .remove(0);
        assert!(w.vendors.vendor_changed(&second).await.unwrap());
        assert_eq!(w.ia.function_count("create"), 2);
        w.forget_vendor_links().await;
        assert!(w.vendors.vendor_changed(&second).await.unwrap());
        assert!(w.vendors.vendor_changed(&id).await.unwrap());
        assert_eq!(w.ia.function_count("create"), 2);
        assert_eq!(w.ia.records("VENDOR").len(), 2);
        let link = Xref::new(w.db.clone())
            .by_salesforce(VENDOR_XREF_OBJECT, &second, "intacct")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.sage_id, vendor_id_for(&second));
        // Relinked with Intacct's values, which are the Account's: no update either.
        assert_eq!(w.ia.function_count("update"), 1);
    }
);

both_backends!(
    intacct_errors_reach_the_error_in_intacct_words,
    |t| async move {
        let w = world(t.db.clone()).await;
        let id =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", "Vanishing Vendor")
                    .with("Type", "Vendor")],
            )
            .unwrap()
            .remove(0);
        assert!(w.vendors.vendor_changed(&id).await.unwrap());
        // Deleted in Intacct behind cashloop's back, then changed in Salesforce.
        let no = w.ia.records("VENDOR")[0]
            .text_at("RECORDNO")
            .unwrap()
            .to_owned();
        w.client("US")
            .delete("del-1", "VENDOR", &[no.as_str()])
            .await
            .unwrap();
        w.sf.update_as_user(
            "Account",
            &id,
            &Record::new("Account").with("Phone", "555-0199"),
        )
        .unwrap();
        match w.vendors.vendor_changed(&id).await.unwrap_err() {
            JobError::Permanent(m) => {
                assert!(m.contains("Cannot update non-existing VENDOR"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // An entity that is not configured is named.
        match w.vendors.pull("DE").await.unwrap_err() {
            JobError::Permanent(m) => assert!(m.contains("\"DE\""), "{m}"),
            other => panic!("{other:?}"),
        }
    }
);

both_backends!(
    the_worker_runs_pulls_pushes_and_account_changes,
    |t| async move {
        let w = world(t.db.clone()).await;
        let us = w.client("US");
        us.create("v-acme", vec![vendor("V-ACME", "Acme Supplies")])
            .await
            .unwrap();
        us.create_bill(
            "bill-1",
            &NewBill {
                vendor_id: "V-ACME".into(),
                date_created: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                date_due: None,
                term_name: None,
                bill_no: Some("INV-9".into()),
                po_number: None,
                description: None,
                currency: LegacyCurrency::default(),
                lines: vec![line("6000", "42.42")],
            },
        )
        .await
        .unwrap();
        let jobs = Jobs::new(w.db.clone());
        let vendors = Arc::new(w.vendors);
        let registry =
            Vendors::register_shared(vendors.clone(), w.sync.clone().register(Registry::new()))
                .register(
                    &changed_kind("Account"),
                    account_changed_handler(None, vendors.clone()),
                );
        assert!(registry.kinds().contains(&PULL.to_owned()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(run_worker(
            jobs.clone(),
            registry,
            WorkerOptions {
                name: "test".into(),
                concurrency: 2,
                lease: Duration::from_secs(30),
                idle_poll: Duration::from_millis(20),
            },
            stop_rx,
        ));
        vendors.queue_pulls(7).await.unwrap();
        vendors.queue_pulls(7).await.unwrap();
        let account =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", "Globex Parts")
                    .with("Type", "Vendor")],
            )
            .unwrap()
            .remove(0);
        jobs.enqueue(NewJob::new(
            &changed_kind("Account"),
            serde_json::json!({"id": account}),
        ))
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bills = w
                .sync
                .client()
                .query_collect("SELECT Id, Amount__c FROM Cashloop_AP_Bill__c")
                .await
                .unwrap();
            let written =
                w.sf.record("Account", &account)
                    .and_then(|a| a.get_str("Sage_Vendor_Id__c").map(str::to_owned));
            if bills.len() == 1 && written.is_some() && w.ia.records("VENDOR").len() == 2 {
                assert_eq!(
                    bills[0].get("Amount__c").unwrap().as_decimal(),
                    Some(dec("42.42"))
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        worker.await.unwrap();
        let status = jobs.status().await.unwrap();
        assert_eq!(status.by_status.get("dead"), None, "{status:?}");
        // One pull per entity and slot: the second queue_pulls added nothing.
        let pulls = jobs
            .list(None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.kind == PULL)
            .count();
        assert_eq!(pulls, 2);
    }
);
