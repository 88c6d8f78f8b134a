//! Quote to cash on Sage X3 against the Salesforce and X3 simulators over their sockets, for
//! the REST and the SOAP transport, on SQLite and (with CASHLOOP_TEST_POSTGRES_URL)
//! PostgreSQL: Closed Won → customer and order in X3 → invoice (simulator control endpoint) →
//! pull → Salesforce and the ledger → gateway payment applied → paid.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use db::{Db, both_backends};
use ledger::{AccountCode, EntityCode, Ledger, LedgerOptions};
use rust_decimal::Decimal;
use serde_json::{Value as Json, json};
use sync::flows::{PullObject, SalesforceSync};
use sync::jobs::{JobError, Jobs, NewJob};
use sync::salesforce::Record;
use sync::salesforce::simulator::Simulator as SfSim;
use sync::x3::simulator::{Fault, Simulator as X3Sim, SimulatorConfig as X3SimConfig};
use sync::x3::{
    Route, RouteRule, RouteWhen, Secret, SoapSettings, Transport, X3Auth, X3Client, X3Config,
    X3Record, X3Routing,
};
use sync::x3_loop::{CLOSED_WON, X3Loop, X3LoopConfig};
use sync::xref::Xref;

struct World {
    sf: SfSim,
    x3: X3Sim,
    sync: SalesforceSync,
    flow: X3Loop,
    ledger: Ledger,
    jobs: Jobs,
    db: Db,
}

fn code(s: &str) -> AccountCode {
    AccountCode::parse(s, "code").unwrap()
}

fn x3_client(sim: &X3Sim, folder: &str, soap: bool) -> Arc<X3Client> {
    let (user, password) = sim.config().users[0].clone();
    let transport = if soap {
        Transport::Soap(SoapSettings::new(folder))
    } else {
        Transport::Rest
    };
    let mut cfg = X3Config::new(
        sim.base_url(),
        folder,
        X3Auth::Basic {
            user,
            password: Secret::new(password),
        },
        transport,
    );
    cfg.timeout_ms = 10_000;
    Arc::new(X3Client::new(cfg).unwrap())
}

async fn world(db: Db, soap: bool) -> World {
    let (sf, sync) = support::salesforce(
        &db,
        vec![PullObject {
            name: "Opportunity".into(),
            fields: vec!["Name".into(), "StageName".into(), "IsWon".into()],
        }],
    )
    .await;
    let x3 = X3Sim::start(X3SimConfig::default()).await;
    // X3's item master: the products Salesforce sells, in both folders.
    for folder in ["SEED", "UKLIVE"] {
        for (item, name) in [("WID-1", "Widget"), ("SUP-1", "Support")] {
            x3.insert(
                folder,
                "ITMMASTER",
                X3Record::new()
                    .with("ITMREF", item)
                    .with("ITMDES1", name)
                    .with("STU", "UN"),
            );
        }
    }
    let ledger = Ledger::new(db.clone(), LedgerOptions::for_db(&db));
    let mut accounts = HashMap::new();
    // CHF has books here but no currency in X3's folders (the error test).
    for (cur, entity) in [("EUR", "FR"), ("GBP", "UK"), ("CHF", "CH")] {
        let (currency, books) = support::ar_books(&ledger, entity, cur, &format!("-{cur}")).await;
        accounts.insert(currency, books);
    }
    let routing = X3Routing::new(
        vec![RouteRule {
            when: RouteWhen {
                billing_countries: vec!["GB".into(), "IE".into()],
                currencies: vec![],
            },
            route: Route::new("UKLIVE", "GB011", "GB012"),
        }],
        Route::new("SEED", "FR011", "FR012"),
    )
    .unwrap();
    let folders: BTreeMap<String, Arc<X3Client>> = routing
        .folders()
        .into_iter()
        .map(|f| (f.to_owned(), x3_client(&x3, f, soap)))
        .collect();
    let jobs = Jobs::new(db.clone());
    let flow = X3Loop::new(
        db.clone(),
        jobs.clone(),
        sync.clone(),
        folders,
        ledger.clone(),
        X3LoopConfig {
            routing,
            order_type: "SON".into(),
            payment_type: "REC".into(),
            bank: "BNK01".into(),
            customer_category: Some("STD".into()),
            amount_item: None,
            default_currency: "EUR".into(),
            ledger: accounts,
        },
    );
    World {
        sf,
        x3,
        sync,
        flow,
        ledger,
        jobs,
        db,
    }
}

struct Deal {
    account: String,
    opportunity: String,
}

impl World {
    /// An account and a Closed Won opportunity with lines `(name, code, qty, price[/discount])`.
    fn deal(
        &self,
        account: &str,
        country: &str,
        currency: &str,
        lines: &[(&str, &str, &str, &str)],
    ) -> Deal {
        let acc = self
            .sf
            .insert_as_user(
                "Account",
                &[Record::new("Account")
                    .with("Name", account)
                    .with("BillingStreet", "1 Rue de la Paix")
                    .with("BillingCity", "Paris")
                    .with("BillingPostalCode", "75002")
                    .with("BillingCountry", country)
                    .with("CurrencyIsoCode", currency)],
            )
            .unwrap()
            .remove(0);
        let opp = self
            .sf
            .insert_as_user(
                "Opportunity",
                &[Record::new("Opportunity")
                    .with("Name", format!("{account} deal"))
                    .with("StageName", "Negotiation/Review")
                    .with("CloseDate", "2026-11-20")
                    .with("AccountId", acc.as_str())
                    .with("CurrencyIsoCode", currency)],
            )
            .unwrap()
            .remove(0);
        for (name, product_code, qty, price_discount) in lines {
            let (price, discount) = price_discount
                .split_once('/')
                .unwrap_or((price_discount, "0"));
            let product = self
                .sf
                .insert_as_user(
                    "Product2",
                    &[Record::new("Product2")
                        .with("Name", *name)
                        .with("ProductCode", *product_code)
                        .with("IsActive", true)],
                )
                .unwrap()
                .remove(0);
            let mut line = Record::new("OpportunityLineItem")
                .with("OpportunityId", opp.as_str())
                .with("Product2Id", product.as_str())
                .with("Quantity", qty.parse::<Decimal>().unwrap())
                .with("UnitPrice", price.parse::<Decimal>().unwrap());
            if discount != "0" {
                line = line.with("Discount", discount.parse::<Decimal>().unwrap());
            }
            self.sf
                .insert_as_user("OpportunityLineItem", &[line])
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
            account: acc,
            opportunity: opp,
        }
    }

    async fn balance(&self, entity: &str, account: &str) -> i64 {
        self.ledger
            .balance(
                &EntityCode::parse(entity, "e").unwrap(),
                &code(account),
                None,
            )
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

    /// Invoices an order through the simulator's control endpoint (as X3 would after
    /// delivery); answers the invoice number.
    async fn invoice(&self, folder: &str, order: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/sim/{folder}/SORDER/{order}/invoice",
                self.x3.base_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let body: Json = resp.json().await.unwrap();
        body["NUM"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{body}"))
    }

    async fn forget(&self, object: &str) {
        // `$1` is understood by both backends.
        let sql = "DELETE FROM sync_xref WHERE object = $1";
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(sql)
                .bind(object)
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
            Db::Sqlite(s) => sqlx::query(sql)
                .bind(object)
                .execute(&s.pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert!(n > 0, "a link to forget");
    }
}

/// The whole loop in one folder: order, invoice, ledger, payment, paid.
async fn full_loop(db: Db, soap: bool) {
    let w = world(db, soap).await;
    let deal = w.deal(
        "Dupont SA",
        "FR",
        "EUR",
        &[
            ("Widget", "WID-1", "2", "1000.00"),
            ("Support", "SUP-1", "1", "499.99/10"),
        ],
    );
    let made = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    assert!(made.created);
    assert_eq!(made.route, Route::new("SEED", "FR011", "FR012"));

    // The customer: Salesforce id in the custom field, address from the billing address.
    let customers = w.x3.records("SEED", "BPCUSTOMER");
    assert_eq!(customers.len(), 1);
    let c = &customers[0];
    assert_eq!(c.text("BPCNUM"), made.customer);
    assert_eq!(c.text("YSFID"), deal.account);
    assert_eq!(c.text("CUR"), "EUR");
    assert_eq!(c.text("CRY"), "FR");
    assert_eq!(c.lines("BPAC_1")[0]["POSCOD"], "75002");
    // The order: sites from the route, CUSORDREF = the Opportunity, one line per product.
    let orders = w.x3.records("SEED", "SORDER");
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(o.text("SOHNUM"), made.order);
    assert_eq!(
        (o.text("SALFCY"), o.text("STOFCY"), o.text("CUSORDREF")),
        ("FR011", "FR012", deal.opportunity.as_str())
    );
    assert_eq!(o.text("BPCORD"), made.customer);
    let lines = o.lines("SOH4_1");
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["ITMREF"].as_str(), lines[0]["QTY"].as_str()),
        ("WID-1", "2")
    );
    // 499.99 less 10% = 449.991 → 449.99 per unit.
    let prices: Vec<Decimal> = lines.iter().map(|l| l["GROPRI"].parse().unwrap()).collect();
    assert_eq!(
        prices,
        vec![Decimal::new(100_000, 2), Decimal::new(44_999, 2)]
    );
    assert_eq!(o.text("ORDNOT"), "2449.99");

    // Numbers back to Salesforce.
    w.sync.push("Opportunity", None).await.unwrap();
    w.sync.push("Account", None).await.unwrap();
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Sage_Order_Number__c"),
        Some(made.order.clone())
    );
    assert_eq!(
        w.field("Account", &deal.account, "Sage_Customer_Id__c"),
        Some(made.customer.clone())
    );

    // A replay makes nothing new.
    let again = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    assert!(!again.created);
    assert_eq!(again.order, made.order);
    assert_eq!(w.x3.records("SEED", "SORDER").len(), 1);
    assert_eq!(w.x3.records("SEED", "BPCUSTOMER").len(), 1);

    // Not invoiced yet: the pull finds nothing to post.
    let nothing = w.flow.pull("SEED").await.unwrap();
    assert_eq!(
        (nothing.orders, nothing.invoices, nothing.posted),
        (1, 0, 0)
    );

    // X3 invoices the order; the pull posts it once and updates the Opportunity.
    let invoice = w.invoice("SEED", &made.order).await;
    let pulled = w.flow.pull("SEED").await.unwrap();
    assert_eq!((pulled.invoices, pulled.posted), (1, 1));
    // 2449.99 + 20% tax (489.998 → 490.00) = 2939.99.
    assert_eq!(w.balance("FR", "1200-EUR").await, 293_999);
    assert_eq!(w.balance("FR", "4000-EUR").await, 244_999);
    assert_eq!(w.balance("FR", "2200-EUR").await, 49_000);
    let again = w.flow.pull("SEED").await.unwrap();
    assert_eq!((again.invoices, again.posted), (1, 0), "posted once");
    assert_eq!(w.balance("FR", "1200-EUR").await, 293_999);
    assert_eq!(w.flow.pull("UKLIVE").await.unwrap().orders, 0);
    w.sync.push("Opportunity", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &deal.opportunity, f);
    assert_eq!(opp("Sage_Invoice_Number__c"), Some(invoice.clone()));
    assert_eq!(opp("Sage_Invoice_Status__c").as_deref(), Some("Open"));
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("2939.99"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Unpaid"));

    // A gateway payment of the whole amount → a receipt applied to the invoice, once.
    let pay = json!({"payment_id": "pay_x3_1", "opportunity_id": deal.opportunity,
        "account_id": deal.account, "method_kind": "card", "status": "captured",
        "currency": "EUR", "amount_minor": 293_999, "captured_minor": 293_999,
        "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    w.flow.payment(&pay).await.unwrap();
    let payments = w.x3.records("SEED", "PAYMENTH");
    assert_eq!(payments.len(), 1, "a replay applies nothing twice");
    let p = &payments[0];
    assert_eq!(
        (
            p.text("REF"),
            p.text("BPR"),
            p.text("FCY"),
            p.text("AMTCUR")
        ),
        ("pay_x3_1", made.customer.as_str(), "FR011", "2939.99")
    );
    assert_eq!(p.lines("PAYD_1")[0]["VCRNUM"], invoice);
    w.sync.push("Opportunity", None).await.unwrap();
    w.sync.push("Cashloop_Payment__c", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &deal.opportunity, f);
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("0"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Paid"));
    assert_eq!(opp("Sage_Invoice_Status__c").as_deref(), Some("Paid"));
    assert_eq!(
        w.sf.find("Cashloop_Payment__c", "Gateway_Payment_Id__c", "pay_x3_1")
            .len(),
        1
    );
    // A paid order is not read again.
    assert_eq!(w.flow.pull("SEED").await.unwrap().orders, 0);

    // A refund is not undone in X3 by cashloop: it waits in review for a person.
    let mut refund = pay.clone();
    refund["kind"] = json!("refund");
    refund["status"] = json!("partially_refunded");
    refund["refunded_minor"] = json!(10_000);
    w.flow.payment(&refund).await.unwrap();
    assert_eq!(w.x3.records("SEED", "PAYMENTH").len(), 1);
    let review = sync::review::Review::new(w.db.clone())
        .open_items(10)
        .await
        .unwrap();
    assert!(
        review.iter().any(|r| r.kind == "other"
            && r.detail["reason"] == "payment_reversed"
            && r.record_key == deal.opportunity),
        "{review:?}"
    );
    assert!(w.ledger.verify(&|_| {}).await.unwrap().ok());
}

both_backends!(the_whole_loop_over_rest, |t| full_loop(t.db.clone(), false));
both_backends!(the_whole_loop_over_soap, |t| full_loop(t.db.clone(), true));

/// The worker dies between "made in X3" and "linked": the replay finds the customer by the
/// Salesforce id and the order by CUSORDREF, and makes nothing twice.
async fn crash_replay(db: Db, soap: bool) {
    let w = world(db, soap).await;
    let deal = w.deal(
        "Initech",
        "FR",
        "EUR",
        &[("Widget", "WID-1", "1", "100.00")],
    );
    let first = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    assert!(first.created);
    w.forget("Opportunity").await;
    w.forget("Account").await;
    let creates = |w: &World| {
        if soap {
            w.x3.operation_count("soap:save")
        } else {
            w.x3.operation_count("$create")
        }
    };
    let before = creates(&w);
    let again = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    assert!(!again.created, "found by CUSORDREF");
    assert_eq!(
        (again.customer.as_str(), again.order.as_str()),
        (first.customer.as_str(), first.order.as_str())
    );
    assert_eq!(creates(&w), before, "nothing created on the replay");
    assert_eq!(w.x3.records("SEED", "SORDER").len(), 1);
    assert_eq!(w.x3.records("SEED", "BPCUSTOMER").len(), 1);
    let xref = Xref::new(w.db.clone());
    let link = xref
        .by_salesforce("Opportunity", &deal.opportunity, "x3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (link.sage_entity.as_str(), link.sage_id.as_str()),
        ("SEED", first.order.as_str())
    );
    let account = xref
        .by_salesforce("Account", &deal.account, "x3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.sage_id, first.customer);
    // The relinked order is pulled like any other.
    w.invoice("SEED", &first.order).await;
    assert_eq!(w.flow.pull("SEED").await.unwrap().posted, 1);
    // 100.00 + 20%.
    assert_eq!(w.balance("FR", "1200-EUR").await, 12_000);
}

both_backends!(a_crash_between_create_and_link_rest, |t| crash_replay(
    t.db.clone(),
    false
));
both_backends!(a_crash_between_create_and_link_soap, |t| crash_replay(
    t.db.clone(),
    true
));

/// A British account goes to the UKLIVE folder with its sites, its customer there only.
async fn second_folder(db: Db, soap: bool) {
    let w = world(db, soap).await;
    let fr = w.deal(
        "Dupont SA",
        "France",
        "EUR",
        &[("Widget", "WID-1", "1", "10.00")],
    );
    let gb = w.deal(
        "Bloggs Ltd",
        "United Kingdom",
        "GBP",
        &[("Support", "SUP-1", "3", "250.00")],
    );
    let a = w.flow.closed_won(&fr.opportunity).await.unwrap().unwrap();
    let b = w.flow.closed_won(&gb.opportunity).await.unwrap().unwrap();
    assert_eq!(a.route.folder, "SEED");
    assert_eq!(b.route, Route::new("UKLIVE", "GB011", "GB012"));
    assert_eq!(w.x3.records("SEED", "BPCUSTOMER").len(), 1);
    let uk_customers = w.x3.records("UKLIVE", "BPCUSTOMER");
    assert_eq!(uk_customers.len(), 1);
    assert_eq!(uk_customers[0].text("YSFID"), gb.account);
    assert_eq!(uk_customers[0].text("CRY"), "GB");
    let uk_orders = w.x3.records("UKLIVE", "SORDER");
    assert_eq!(uk_orders.len(), 1);
    assert_eq!(
        (
            uk_orders[0].text("SALFCY"),
            uk_orders[0].text("STOFCY"),
            uk_orders[0].text("CUR")
        ),
        ("GB011", "GB012", "GBP")
    );
    let link = Xref::new(w.db.clone())
        .by_salesforce("Account", &gb.account, "x3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.sage_entity, "UKLIVE");
    // Invoiced in UKLIVE: that folder's pull posts it, in the GBP books.
    w.invoice("UKLIVE", &b.order).await;
    assert_eq!(w.flow.pull("SEED").await.unwrap().posted, 0);
    assert_eq!(w.flow.pull("UKLIVE").await.unwrap().posted, 1);
    // 750.00 + 20% = 900.00.
    assert_eq!(w.balance("UK", "1200-GBP").await, 90_000);
    assert_eq!(w.balance("UK", "2200-GBP").await, 15_000);
    assert_eq!(w.balance("FR", "1200-EUR").await, 0);
    // A part payment in pounds: applied in UKLIVE, partly paid.
    let pay = json!({"payment_id": "pay_gb_1", "opportunity_id": gb.opportunity,
        "status": "captured", "currency": "GBP", "amount_minor": 40_000,
        "captured_minor": 40_000, "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    assert_eq!(w.x3.records("UKLIVE", "PAYMENTH").len(), 1);
    assert!(w.x3.records("SEED", "PAYMENTH").is_empty());
    w.sync.push("Opportunity", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &gb.opportunity, f);
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("500"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Partially Paid"));
}

both_backends!(a_second_folder_with_its_sites_rest, |t| second_folder(
    t.db.clone(),
    false
));
both_backends!(a_second_folder_with_its_sites_soap, |t| second_folder(
    t.db.clone(),
    true
));

/// X3's refusals reach the error queue with X3's own text; a 503 is retried.
async fn x3_errors(db: Db, soap: bool) {
    let w = world(db, soap).await;
    // An item X3 does not have: the worker's job goes dead with X3's message.
    let deal = w.deal("Acme", "FR", "EUR", &[("Gizmo", "GIZ-9", "1", "10.00")]);
    w.jobs
        .enqueue(NewJob::new(
            CLOSED_WON,
            json!({"opportunity_id": deal.opportunity}),
        ))
        .await
        .unwrap();
    let job = w
        .jobs
        .claim("test", &[CLOSED_WON], 1, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    let err = w.flow.handle(&job).await.unwrap_err();
    match &err {
        JobError::Permanent(m) => assert!(m.contains("Product GIZ-9 does not exist"), "{m}"),
        other => panic!("{other:?}"),
    }
    w.jobs.fail(&job, &err).await.unwrap();
    let dead = w.jobs.list(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Product GIZ-9 does not exist")),
        "{dead:?}"
    );
    assert!(w.x3.records("SEED", "SORDER").is_empty(), "no order made");

    // A currency the folder does not have: refused on the customer, X3's text kept.
    let chf = w.deal(
        "Zurich AG",
        "CH",
        "CHF",
        &[("Widget", "WID-1", "1", "10.00")],
    );
    match w.flow.closed_won(&chf.opportunity).await.unwrap_err() {
        JobError::Permanent(m) => assert!(m.contains("Currency CHF does not exist"), "{m}"),
        other => panic!("{other:?}"),
    }

    // X3 (or its proxy) in trouble: retryable, and the retry completes.
    let ok = w.deal("Globex", "FR", "EUR", &[("Widget", "WID-1", "1", "10.00")]);
    w.x3.fail_next(1, Fault::Status(503));
    match w.flow.closed_won(&ok.opportunity).await.unwrap_err() {
        JobError::Retryable(_) => {}
        other => panic!("{other:?}"),
    }
    w.x3.fail_next(1, Fault::RateLimit);
    assert!(matches!(
        w.flow.closed_won(&ok.opportunity).await.unwrap_err(),
        JobError::Retryable(_)
    ));
    let globex = w.flow.closed_won(&ok.opportunity).await.unwrap().unwrap();
    assert!(globex.created);
    assert_eq!(w.x3.records("SEED", "SORDER").len(), 1);

    // One order the pull cannot post (a document with negative amounts, keyed in X3) does not
    // hold up the others: they are posted, and the pull's error names the order with the
    // reason.
    let other = w.deal(
        "Initrode",
        "FR",
        "EUR",
        &[("Widget", "WID-1", "2", "50.00")],
    );
    let initrode = w
        .flow
        .closed_won(&other.opportunity)
        .await
        .unwrap()
        .unwrap();
    w.x3.insert(
        "SEED",
        "SINVOICE",
        X3Record::new()
            .with("NUM", "CRN0001")
            .with("SIVTYP", "CRN")
            .with("SALFCY", "FR011")
            .with("BPCINV", globex.customer.as_str())
            .with("BPCORD", globex.customer.as_str())
            .with("INVDAT", "20261125")
            .with("CUR", "EUR")
            .with("SOHNUM", globex.order.as_str())
            .with("AMTNOT", "-10.00")
            .with("AMTATI", "-12.00")
            .with("PAYCUR", "0"),
    );
    w.invoice("SEED", &initrode.order).await;
    match w.flow.pull("SEED").await.unwrap_err() {
        JobError::Permanent(m) => {
            assert!(
                m.contains(&globex.order) && m.contains("not a document the loop posts"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Initrode: 100.00 + 20%, posted all the same.
    assert_eq!(w.balance("FR", "1200-EUR").await, 12_000);
}

both_backends!(x3_errors_reach_the_error_queue_rest, |t| x3_errors(
    t.db.clone(),
    false
));
both_backends!(x3_errors_reach_the_error_queue_soap, |t| x3_errors(
    t.db.clone(),
    true
));

/// A credit note keyed in X3 against the invoice: posted the other way round once, it lowers
/// the balance due; a cheque keyed in X3 is booked once; the gateway payment of what is left
/// goes to the invoice (not booked again), and the order then counts as paid.
async fn credit_note(db: Db, soap: bool) {
    let w = world(db, soap).await;
    let deal = w.deal(
        "Credité SARL",
        "FR",
        "EUR",
        &[("Widget", "WID-1", "1", "1000.00")],
    );
    let made = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    let invoice = w.invoice("SEED", &made.order).await;
    w.flow.pull("SEED").await.unwrap();
    assert_eq!(w.balance("FR", "1200-EUR").await, 120_000);

    // Too much credit is X3's refusal (the control endpoint answers 409 with its text).
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/sim/SEED/SINVOICE/{invoice}/credit",
            w.x3.base_url()
        ))
        .json(&json!({"amount": "1000.01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    // 200.00 credited before tax (+20%): 240.00 off what is owed.
    let crn =
        w.x3.credit_invoice("SEED", &invoice, Decimal::new(20_000, 2))
            .unwrap();
    assert_eq!(
        (
            crn.text("INVTYP"),
            crn.text("SIHORINUM"),
            crn.text("AMTATI")
        ),
        ("2", invoice.as_str(), "240.00")
    );
    let pulled = w.flow.pull("SEED").await.unwrap();
    assert_eq!((pulled.invoices, pulled.posted), (2, 1));
    assert_eq!(w.flow.pull("SEED").await.unwrap().posted, 0, "posted once");
    assert_eq!(w.balance("FR", "1200-EUR").await, 96_000);
    assert_eq!(w.balance("FR", "4000-EUR").await, 80_000);
    assert_eq!(w.balance("FR", "2200-EUR").await, 16_000);
    w.sync.push("Opportunity", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &deal.opportunity, f);
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("960"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Unpaid"));
    // Documents in date order, then by number (same day here: CRN… before INV…).
    assert_eq!(
        opp("Sage_Invoice_Number__c"),
        Some(format!("{}, {invoice}", crn.text("NUM")))
    );

    // A cheque of 160.00 keyed in X3 by a person: booked Dr cash / Cr AR once by the pull.
    let x3 = x3_client(&w.x3, "SEED", soap);
    x3.create_payment(&sync::x3::Payment {
        number: String::new(),
        payment_type: "REC".into(),
        customer: made.customer.clone(),
        site: "FR011".into(),
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        currency: "EUR".into(),
        amount_minor: 16_000,
        bank: "BNK01".into(),
        reference: "CHQ-0042".into(),
        allocations: vec![sync::x3::PaymentAllocation {
            invoice: invoice.clone(),
            amount_minor: 16_000,
        }],
    })
    .await
    .unwrap();
    w.flow.pull("SEED").await.unwrap();
    w.flow.pull("SEED").await.unwrap();
    assert_eq!(w.balance("FR", "1200-EUR").await, 80_000);
    assert_eq!(w.balance("FR", "1010-EUR").await, 16_000, "booked once");
    w.sync.push("Opportunity", None).await.unwrap();
    assert_eq!(
        w.field("Opportunity", &deal.opportunity, "Balance_Due__c")
            .as_deref(),
        Some("800")
    );

    // The customer pays the 800.00 left: allocated to the invoice, never to the credit note;
    // the gateway booked that money, so the pull books nothing for this receipt.
    let pay = json!({"payment_id": "pay_x3_crn", "opportunity_id": deal.opportunity,
        "account_id": deal.account, "method_kind": "card", "status": "captured",
        "currency": "EUR", "amount_minor": 80_000, "captured_minor": 80_000,
        "refunded_minor": 0});
    w.flow.payment(&pay).await.unwrap();
    let payments = w.x3.records("SEED", "PAYMENTH");
    assert_eq!(payments.len(), 2);
    let ours = payments
        .iter()
        .find(|p| p.text("REF") == "pay_x3_crn")
        .unwrap();
    let lines = ours.lines("PAYD_1");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["VCRNUM"].as_str(), lines[0]["AMTLIN"].as_str()),
        (invoice.as_str(), "800.00")
    );
    w.flow.pull("SEED").await.unwrap();
    w.sync.push("Opportunity", None).await.unwrap();
    let opp = |f: &str| w.field("Opportunity", &deal.opportunity, f);
    assert_eq!(opp("Balance_Due__c").as_deref(), Some("0"));
    assert_eq!(opp("Payment_Status__c").as_deref(), Some("Paid"));
    assert_eq!(w.balance("FR", "1010-EUR").await, 16_000, "only the cheque");
    assert!(w.ledger.verify(&|_| {}).await.unwrap().ok());
}

both_backends!(a_credit_note_lowers_the_balance_rest, |t| credit_note(
    t.db.clone(),
    false
));
both_backends!(a_credit_note_lowers_the_balance_soap, |t| credit_note(
    t.db.clone(),
    true
));

/// An Account renamed and moved in Salesforce: the linked BPCUSTOMER follows (name and
/// address, X3's other fields untouched), once; an Account without a customer is left alone.
async fn account_changes(db: Db, soap: bool) {
    let w = world(db, soap).await;
    let deal = w.deal(
        "Before SA",
        "FR",
        "EUR",
        &[("Widget", "WID-1", "1", "10.00")],
    );
    let made = w.flow.closed_won(&deal.opportunity).await.unwrap().unwrap();
    // Nothing changed since the customer was made: nothing sent.
    assert!(!w.flow.account_changed(&deal.account).await.unwrap());

    w.sf.update_as_user(
        "Account",
        &deal.account,
        &Record::new("Account")
            .with("Name", "After SA")
            .with("BillingStreet", "8 Quai Branly\nBât. B")
            .with("BillingCity", "Lyon")
            .with("BillingPostalCode", "69002"),
    )
    .unwrap();
    // Through the job kind the Salesforce pull queues.
    w.jobs
        .enqueue(NewJob::new(
            &sync::flows::changed_kind("Account"),
            json!({"id": deal.account}),
        ))
        .await
        .unwrap();
    let kind = sync::flows::changed_kind("Account");
    let job = w
        .jobs
        .claim(
            "test",
            &[kind.as_str()],
            1,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        .remove(0);
    w.flow.handle(&job).await.unwrap();
    let c =
        w.x3.records("SEED", "BPCUSTOMER")
            .into_iter()
            .find(|c| c.text("BPCNUM") == made.customer)
            .unwrap();
    assert_eq!(c.list("BPRNAM")[0], "After SA");
    let a = &c.lines("BPAC_1")[0];
    assert_eq!(
        (
            a["ADDLIG1"].as_str(),
            a["ADDLIG2"].as_str(),
            a["CTY"].as_str(),
            a["POSCOD"].as_str()
        ),
        ("8 Quai Branly", "Bât. B", "Lyon", "69002")
    );
    assert_eq!(c.text("YSFID"), deal.account, "X3's other fields stay");
    assert_eq!(c.text("CUR"), "EUR");
    // Sent once.
    assert!(!w.flow.account_changed(&deal.account).await.unwrap());

    // An Account with no X3 customer waits for its first Closed Won deal.
    let other = w.deal(
        "Prospect SAS",
        "FR",
        "EUR",
        &[("Widget", "WID-1", "1", "10.00")],
    );
    assert!(!w.flow.account_changed(&other.account).await.unwrap());
    assert_eq!(w.x3.records("SEED", "BPCUSTOMER").len(), 1);
}

both_backends!(account_changes_reach_x3_rest, |t| account_changes(
    t.db.clone(),
    false
));
both_backends!(account_changes_reach_x3_soap, |t| account_changes(
    t.db.clone(),
    true
));
