//! Quote to cash against the Salesforce and Intacct simulators over their sockets, on SQLite
//! and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL: Closed Won → customer, items, invoice →
//! write-back and ledger; a gateway payment → AR payment; a cheque in Intacct → ledger.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use db::{Db, both_backends};
use ledger::{AccountCode, EntityCode, Ledger, LedgerOptions};
use rust_decimal::Decimal;
use serde_json::json;
use sync::flows::{PullObject, SalesforceSync};
use sync::intacct::client::{Secret, UserAuth};
use sync::intacct::simulator::{Simulator as IaSim, SimulatorConfig as IaSimConfig};
use sync::intacct::{Element, IntacctClient, IntacctConfig, InvoiceLine, NewInvoice};
use sync::jobs::{JobError, Jobs};
use sync::q2c::{Document, EntityRule, EntitySettings, Q2c, Q2cConfig};
use sync::salesforce::Record;
use sync::salesforce::simulator::Simulator as SfSim;
use sync::xref::Xref;

struct World {
    sf: SfSim,
    ia: IaSim,
    sync: SalesforceSync,
    q2c: Q2c,
    ledger: Ledger,
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

fn code(s: &str) -> AccountCode {
    AccountCode::parse(s, "code").unwrap()
}

async fn world(db: Db) -> World {
    world_with(db, Document::ArInvoice).await
}

async fn world_with(db: Db, document: Document) -> World {
    world_full(db, document, Vec::new()).await
}

async fn world_full(
    db: Db,
    document: Document,
    mappings: Vec<sync::mapping::ObjectMapping>,
) -> World {
    let (sf, sync) = support::salesforce(
        &db,
        vec![PullObject {
            name: "Opportunity".into(),
            fields: vec!["Name".into(), "StageName".into(), "IsWon".into()],
        }],
    )
    .await;
    let ia = IaSim::start(IaSimConfig::default()).await;
    let ledger = Ledger::new(db.clone(), LedgerOptions::for_db(&db));
    let mut accounts = HashMap::new();
    for (cur, entity) in [("USD", "US"), ("EUR", "UK"), ("JPY", "US")] {
        let (currency, books) = support::ar_books(&ledger, entity, cur, &format!("-{cur}")).await;
        accounts.insert(currency, books);
    }
    let mut entities = BTreeMap::new();
    entities.insert(
        "US".to_owned(),
        EntitySettings {
            client: intacct_client(&ia, "US"),
            tax_rate_percent: "8.25".parse().unwrap(),
        },
    );
    entities.insert(
        "UK".to_owned(),
        EntitySettings {
            client: intacct_client(&ia, "UK"),
            tax_rate_percent: "20".parse().unwrap(),
        },
    );
    let config = Q2cConfig {
        document,
        entity_rule: EntityRule {
            field: "BillingCountry".into(),
            map: [
                ("Germany".to_owned(), "UK".to_owned()),
                ("United Kingdom".to_owned(), "UK".to_owned()),
            ]
            .into_iter()
            .collect(),
            default: "US".into(),
        },
        revenue_gl: "4000".into(),
        tax_gl: "2200".into(),
        bank_account: "BOA".into(),
        invoice_prefix: "SF-".into(),
        exchange_rate_type: "Intacct Daily Rate".into(),
        due_days: 30,
        default_currency: "USD".into(),
        ledger: accounts,
        mappings,
    };
    let q2c = Q2c::new(
        db.clone(),
        Jobs::new(db.clone()),
        sync.clone(),
        entities,
        ledger.clone(),
        config,
    );
    World {
        sf,
        ia,
        sync,
        q2c,
        ledger,
        db,
    }
}

struct Deal {
    account: String,
    opportunity: String,
}

impl World {
    /// An account, two products and a Closed Won opportunity with lines.
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
                    .with("BillingCountry", country)
                    .with("CurrencyIsoCode", currency)],
            )
            .unwrap()
            .remove(0);
        let domain = account
            .split_whitespace()
            .next()
            .unwrap_or("x")
            .to_ascii_lowercase();
        self.sf
            .insert_as_user(
                "Contact",
                &[
                    Record::new("Contact")
                        .with("FirstName", "Ada")
                        .with("LastName", "Lovelace")
                        .with("Email", format!("ada@{domain}.example"))
                        .with("AccountId", acc.as_str()),
                    Record::new("Contact")
                        .with("FirstName", "Bob")
                        .with("LastName", "Payer")
                        .with("Email", format!("billing@{domain}.example"))
                        .with("AccountId", acc.as_str()),
                ],
            )
            .unwrap();
        let book = self
            .sf
            .insert_as_user(
                "Pricebook2",
                &[Record::new("Pricebook2")
                    .with("Name", "Standard")
                    .with("IsActive", true)],
            )
            .unwrap()
            .remove(0);
        // Not Closed Won yet: lines first, then the stage change (as a person would).
        let opp = self
            .sf
            .insert_as_user(
                "Opportunity",
                &[Record::new("Opportunity")
                    .with("Name", format!("{account} deal"))
                    .with("StageName", "Negotiation/Review")
                    .with("CloseDate", "2026-11-20")
                    .with("AccountId", acc.as_str())
                    .with("Pricebook2Id", book.as_str())
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

    fn opp_field(&self, id: &str, field: &str) -> Option<String> {
        self.sf
            .record("Opportunity", id)
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
}

both_backends!(closed_won_usd_and_eur_in_two_entities, |t| async move {
    let w = world(t.db.clone()).await;
    // Acme already exists in Intacct, entered by hand: linked, not duplicated.
    w.ia.insert(
        "CUSTOMER",
        vec![
            Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", "C-ACME")
                .with_leaf("NAME", "Acme Corp"),
        ],
    );
    let usd = w.deal(
        "Acme Corp",
        "United States",
        "USD",
        &[
            ("Widget", "WID-1", "2", "1000.00"),
            ("Support", "SUP-1", "1", "499.99/10"),
        ],
    );
    let eur = w.deal(
        "Bergmann GmbH",
        "Germany",
        "EUR",
        &[("Widget EU", "WID-EU", "3", "250.00")],
    );

    let a = w.q2c.closed_won(&usd.opportunity).await.unwrap().unwrap();
    assert_eq!(
        (a.entity.as_str(), a.customer_id.as_str(), a.created),
        ("US", "C-ACME", true)
    );
    let b = w.q2c.closed_won(&eur.opportunity).await.unwrap().unwrap();
    assert_eq!((b.entity.as_str(), b.created), ("UK", true));
    assert_eq!(
        w.ia.records("CUSTOMER").len(),
        2,
        "Acme linked, Bergmann created"
    );
    // Contacts with roles: the accounts-payable address is bill-to, the other ship-to; the
    // customer found in Intacct keeps its own roles.
    assert_eq!(w.ia.records("CONTACT").len(), 4);
    let customers = w.ia.records("CUSTOMER");
    let bergmann = customers
        .iter()
        .find(|c| c.text_at("NAME") == Some("Bergmann GmbH"))
        .unwrap();
    let id = bergmann.text_at("CUSTOMERID").unwrap();
    assert_eq!(
        bergmann.text_at("BILLTO/CONTACTNAME"),
        Some(format!("Bob Payer ({id})").as_str())
    );
    assert_eq!(
        bergmann.text_at("SHIPTO/CONTACTNAME"),
        Some(format!("Ada Lovelace ({id})").as_str())
    );
    assert_eq!(
        bergmann.text_at("DISPLAYCONTACT/EMAIL1"),
        Some("billing@bergmann.example")
    );
    let acme = customers
        .iter()
        .find(|c| c.text_at("CUSTOMERID") == Some("C-ACME"))
        .unwrap();
    assert!(acme.text_at("BILLTO/CONTACTNAME").is_none());
    assert_eq!(w.ia.records("ITEM").len(), 3);

    // USD: 2 × 1000.00 + 499.99 less 10% (449.991 → 449.99) = 2449.99; tax 8.25% = 202.12.
    let invoices = w.ia.records("ARINVOICE");
    assert_eq!(invoices.len(), 2);
    let inv_usd = invoices
        .iter()
        .find(|r| r.text_at("CUSTOMERID") == Some("C-ACME"))
        .unwrap();
    assert_eq!(inv_usd.text_at("RECORDID"), Some(a.invoice_no.as_str()));
    assert_eq!(inv_usd.text_at("CURRENCY"), Some("USD"));
    let total: Decimal = inv_usd.text_at("TOTALENTERED").unwrap().parse().unwrap();
    assert_eq!(total, "2652.11".parse::<Decimal>().unwrap());
    assert_eq!(
        inv_usd.find("ARINVOICEITEMS").unwrap().children.len(),
        3,
        "two lines and tax"
    );
    let inv_eur = invoices
        .iter()
        .find(|r| r.text_at("CURRENCY") == Some("EUR"))
        .unwrap();
    assert_eq!(inv_eur.text_at("MEGAENTITYID"), Some("UK"));

    // The ledger: Dr AR / Cr revenue and tax, per currency, in the entity's books.
    assert_eq!(w.balance("US", "1200-USD").await, 265_211);
    assert_eq!(w.balance("US", "4000-USD").await, 244_999);
    assert_eq!(w.balance("US", "2200-USD").await, 20_212);
    // EUR: 750.00 + 20% = 900.00.
    assert_eq!(w.balance("UK", "1200-EUR").await, 90_000);
    assert_eq!(w.balance("UK", "2200-EUR").await, 15_000);

    // Written back once the push runs.
    w.sync.push("Opportunity", None).await.unwrap();
    assert_eq!(
        w.opp_field(&usd.opportunity, "Sage_Invoice_Number__c")
            .as_deref(),
        Some(a.invoice_no.as_str())
    );
    assert_eq!(
        w.opp_field(&usd.opportunity, "Balance_Due__c").as_deref(),
        Some("2652.11")
    );
    assert_eq!(
        w.opp_field(&usd.opportunity, "Payment_Status__c")
            .as_deref(),
        Some("Unpaid")
    );
    assert_eq!(
        w.opp_field(&eur.opportunity, "Balance_Due__c").as_deref(),
        Some("900")
    );

    // A replay changes nothing anywhere.
    let again = w.q2c.closed_won(&usd.opportunity).await.unwrap().unwrap();
    assert!(!again.created);
    assert_eq!(again.invoice_key, a.invoice_key);
    assert_eq!(w.ia.records("ARINVOICE").len(), 2);
    assert_eq!(w.balance("US", "1200-USD").await, 265_211);

    // A gateway payment of 1000.00 → an AR payment applied to the invoice → Salesforce.
    let pay = json!({"payment_id": "pay_test_1", "opportunity_id": usd.opportunity, "account_id": usd.account,
        "method_kind": "card", "status": "captured", "currency": "USD", "amount_minor": 100_000,
        "captured_minor": 100_000, "refunded_minor": 0});
    w.q2c.payment(&pay).await.unwrap();
    w.q2c.payment(&pay).await.unwrap();
    let payments = w.ia.records("ARPYMT");
    assert_eq!(payments.len(), 1, "a replay applies nothing twice");
    assert_eq!(payments[0].text_at("DOCNUMBER"), Some("pay_test_1"));
    w.sync.push("Opportunity", None).await.unwrap();
    w.sync.push("Cashloop_Payment__c", None).await.unwrap();
    assert_eq!(
        w.opp_field(&usd.opportunity, "Balance_Due__c").as_deref(),
        Some("1652.11")
    );
    assert_eq!(
        w.opp_field(&usd.opportunity, "Payment_Status__c")
            .as_deref(),
        Some("Partially Paid")
    );
    assert_eq!(
        w.sf.find("Cashloop_Payment__c", "Gateway_Payment_Id__c", "pay_test_1")
            .len(),
        1
    );
    // A refund is not undone in Intacct by cashloop: it waits in review for a person.
    let mut refund = pay.clone();
    refund["kind"] = json!("refund");
    refund["status"] = json!("partially_refunded");
    refund["refunded_minor"] = json!(20_000);
    w.q2c.payment(&refund).await.unwrap();
    assert_eq!(w.ia.records("ARPYMT").len(), 1);
    let review = sync::review::Review::new(w.db.clone())
        .open_items(10)
        .await
        .unwrap();
    assert!(
        review
            .iter()
            .any(|r| r.detail["reason"] == "payment_reversed" && r.record_key == usd.opportunity),
        "{review:?}"
    );

    // A cheque recorded in Intacct for the EUR invoice → the ledger and Salesforce.
    w.q2c.pull("UK").await.unwrap();
    let cheque = Element::new("ARPYMT")
        .with_leaf("FINANCIALENTITY", "BOA")
        .with_leaf("PAYMENTMETHOD", "Printed Check")
        .with_leaf("CUSTOMERID", inv_eur.text_at("CUSTOMERID").unwrap())
        .with_leaf("DOCNUMBER", "CHK-1042")
        .with_leaf("RECEIPTDATE", "11/25/2026")
        .with_leaf("CURRENCY", "EUR")
        .with(
            Element::new("ARPYMTDETAILS").with(
                Element::new("ARPYMTDETAIL")
                    .with_leaf("RECORDKEY", &b.invoice_key)
                    .with_leaf("TRX_PAYMENTAMOUNT", "900.00"),
            ),
        );
    intacct_client(&w.ia, "UK")
        .create("cheque-1042", vec![cheque])
        .await
        .unwrap();
    let pulled = w.q2c.pull("UK").await.unwrap();
    assert_eq!(pulled.receipts, 1);
    assert_eq!(w.balance("UK", "1200-EUR").await, 0);
    assert_eq!(w.balance("UK", "1010-EUR").await, 90_000);
    w.sync.push("Opportunity", None).await.unwrap();
    assert_eq!(
        w.opp_field(&eur.opportunity, "Payment_Status__c")
            .as_deref(),
        Some("Paid")
    );
    // Pulled again: nothing new reaches the ledger; our own receipt was never counted.
    assert_eq!(w.q2c.pull("UK").await.unwrap().receipts, 0);
    assert_eq!(w.q2c.pull("US").await.unwrap().receipts, 0);
    assert_eq!(w.balance("US", "1010-USD").await, 0);

    // Every journal entry balanced and the chain holds.
    assert!(w.ledger.verify(&|_| {}).await.unwrap().ok());
    let _ = &w.db;
});

both_backends!(
    a_crash_between_create_and_link_makes_no_duplicate,
    |t| async move {
        let w = world(t.db.clone()).await;
        let deal = w.deal(
            "Initech",
            "United States",
            "USD",
            &[("TPS report", "TPS", "1", "100.00")],
        );
        let first = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        // As if the worker died right after Intacct created the invoice: forget the link.
        match &w.db {
            Db::Postgres(p) => sqlx::query("DELETE FROM sync_xref WHERE object = 'Opportunity'")
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
            Db::Sqlite(s) => sqlx::query("DELETE FROM sync_xref WHERE object = 'Opportunity'")
                .execute(&s.pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        let again = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert!(!again.created, "found by its invoice number");
        assert_eq!(again.invoice_key, first.invoice_key);
        assert_eq!(w.ia.records("ARINVOICE").len(), 1);
        assert_eq!(w.ia.function_count("create_invoice"), 1);
        let link = Xref::new(w.db.clone())
            .by_salesforce("Opportunity", &deal.opportunity, "intacct")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.sage_id, first.invoice_key);
        assert_eq!(w.balance("US", "1200-USD").await, 10_825);
    }
);

both_backends!(
    bad_input_is_a_permanent_error_naming_the_field,
    |t| async move {
        let w = world(t.db.clone()).await;
        let deal = w.deal(
            "Umbrella",
            "United States",
            "USD",
            &[("Thing", "TH-1", "1", "10.00/150")],
        );
        let err = w.q2c.closed_won(&deal.opportunity).await.unwrap_err();
        match err {
            JobError::Permanent(m) => assert!(m.contains("Discount"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(w.ia.records("ARINVOICE").is_empty(), "nothing half-created");
        // Intacct's own words reach the error: a currency the company does not have.
        let yen = w.deal(
            "Tokyo KK",
            "Japan",
            "JPY",
            &[("Thing", "TH-2", "1", "1000")],
        );
        match w.q2c.closed_won(&yen.opportunity).await.unwrap_err() {
            JobError::Permanent(m) => assert!(m.contains("Invalid currency JPY"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(w.ia.records("ARINVOICE").is_empty());
        // Not Closed Won: nothing to do.
        let open =
            w.sf.insert_as_user(
                "Opportunity",
                &[Record::new("Opportunity")
                    .with("Name", "Open")
                    .with("StageName", "Prospecting")
                    .with("CloseDate", "2026-12-01")],
            )
            .unwrap()
            .remove(0);
        assert!(w.q2c.closed_won(&open).await.unwrap().is_none());
    }
);

both_backends!(
    an_invoice_entered_by_hand_with_our_number_is_linked,
    |t| async move {
        let w = world(t.db.clone()).await;
        let deal = w.deal(
            "Hooli",
            "United States",
            "USD",
            &[("Box", "BOX", "1", "50.00")],
        );
        // Someone keyed the invoice into Intacct with the number cashloop would use.
        let c = intacct_client(&w.ia, "US");
        c.create(
            "cust-hooli",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C-HOOLI")
                    .with_leaf("NAME", "Hooli")
                    .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", "Hooli")),
            ],
        )
        .await
        .unwrap();
        let key = c
            .create_invoice(
                "by-hand",
                &NewInvoice {
                    customer_id: "C-HOOLI".into(),
                    date_created: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
                    date_due: None,
                    term_name: None,
                    invoice_no: Some(format!("SF-{}", deal.opportunity)),
                    description: None,
                    currency: Some("USD".into()),
                    exch_rate_type: None,
                    lines: vec![InvoiceLine {
                        gl_account_no: "4000".into(),
                        amount: "60.00".parse().unwrap(),
                        memo: None,
                        location_id: None,
                        department_id: None,
                    }],
                },
            )
            .await
            .unwrap();
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert_eq!((r.invoice_key.as_str(), r.created), (key.as_str(), false));
        assert_eq!(w.ia.records("ARINVOICE").len(), 1);
        // Keyed in for 60.00 while the deal says 54.13 (50.00 + 8.25%): flagged for a person.
        let open = sync::review::Review::new(w.db.clone())
            .open_items(10)
            .await
            .unwrap();
        let flagged = open
            .iter()
            .find(|i| i.detail["reason"] == "amount_mismatch")
            .expect("an amount_mismatch review item");
        assert_eq!(flagged.detail["intacct_total"], "60.00");
        assert_eq!(flagged.detail["salesforce_total"], "54.13");
    }
);

both_backends!(
    order_entry_sales_invoices_with_items_discounts_and_tax,
    |t| async move {
        let w = world_with(
            t.db.clone(),
            Document::OrderEntry {
                definition: "Sales Invoice".into(),
            },
        )
        .await;
        // EUR in entity UK (base GBP): 3 × 250.00 + 1 × 199.99 less 15% (169.9915 → 169.99)
        // = 919.99; VAT 20% = 184.00 (183.998); total 1103.99.
        let deal = w.deal(
            "Bergmann GmbH",
            "Germany",
            "EUR",
            &[
                ("Widget EU", "WID-EU", "3", "250.00"),
                ("Setup", "SET-EU", "1", "199.99/15"),
            ],
        );
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert!(r.created);
        let docs = w.ia.records("SODOCUMENT");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text_at("DOCPARID"), Some("Sales Invoice"));
        assert_eq!(docs[0].text_at("PRRECORDKEY"), Some(r.invoice_key.as_str()));
        let inv = &w.ia.records("ARINVOICE")[0];
        assert_eq!(inv.text_at("RECORDID"), Some(r.invoice_no.as_str()));
        assert_eq!(inv.text_at("CURRENCY"), Some("EUR"));
        let trx: Decimal = inv.text_at("TRX_TOTALENTERED").unwrap().parse().unwrap();
        assert_eq!(trx, "1103.99".parse::<Decimal>().unwrap());
        assert_eq!(
            inv.text_at("BASECURR"),
            Some("GBP"),
            "base amounts in the entity's currency"
        );
        // Items: the two products and the tax item, each once.
        let items: Vec<String> =
            w.ia.records("ITEM")
                .iter()
                .filter_map(|i| i.text_at("ITEMID").map(str::to_owned))
                .collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(w.balance("UK", "1200-EUR").await, 110_399);
        assert_eq!(w.balance("UK", "2200-EUR").await, 18_400);
        // A crash after the create, before the link: found by number, not made twice.
        match &w.db {
            Db::Postgres(p) => sqlx::query("DELETE FROM sync_xref WHERE object = 'Opportunity'")
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
            Db::Sqlite(s) => sqlx::query("DELETE FROM sync_xref WHERE object = 'Opportunity'")
                .execute(&s.pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        let again = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert_eq!(
            (again.created, again.invoice_key.as_str()),
            (false, r.invoice_key.as_str())
        );
        assert_eq!(w.ia.records("SODOCUMENT").len(), 1);
        assert_eq!(w.ia.function_count("create_sotransaction"), 1);
        assert_eq!(w.balance("UK", "1200-EUR").await, 110_399);
        w.sync.push("Opportunity", None).await.unwrap();
        assert_eq!(
            w.opp_field(&deal.opportunity, "Balance_Due__c").as_deref(),
            Some("1103.99")
        );
    }
);

both_backends!(
    same_named_customers_are_told_apart_by_postcode,
    |t| async move {
        let w = world(t.db.clone()).await;
        let customer = |id: &str, zip: &str| {
            Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", id)
                .with_leaf("NAME", "Initech")
                .with(
                    Element::new("DISPLAYCONTACT")
                        .with_leaf("PRINTAS", "Initech")
                        .with(Element::new("MAILADDRESS").with_leaf("ZIP", zip)),
                )
        };
        w.ia.insert(
            "CUSTOMER",
            vec![customer("C-NY", "10001"), customer("C-SF", "94105")],
        );
        let deal = w.deal(
            "Initech",
            "United States",
            "USD",
            &[("Box", "BOX", "1", "10.00")],
        );
        w.sf.update_as_user(
            "Account",
            &deal.account,
            &Record::new("Account").with("BillingPostalCode", "94105"),
        )
        .unwrap();
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert_eq!(r.customer_id, "C-SF");
        assert_eq!(w.ia.records("CUSTOMER").len(), 2, "linked, not duplicated");
        // Without a postcode to tell them apart: review, and nothing created.
        let other = w.deal(
            "Initech",
            "United States",
            "USD",
            &[("Box", "BOX", "1", "10.00")],
        );
        match w.q2c.closed_won(&other.opportunity).await.unwrap_err() {
            JobError::Permanent(m) => assert!(m.contains("review item"), "{m}"),
            e => panic!("{e:?}"),
        }
        assert_eq!(w.ia.records("CUSTOMER").len(), 2);
        assert_eq!(w.ia.records("ARINVOICE").len(), 1);
    }
);

both_backends!(
    the_account_mapping_shapes_customers_and_keeps_them_current,
    |t| async move {
        let mapping: sync::mapping::ObjectMapping = serde_json::from_value(json!({
            "salesforce": "Account", "sage": "CUSTOMER",
            "fields": [
                {"salesforce": "Industry", "sage": "CUSTTYPE", "owner": "salesforce",
                 "transform": {"kind": "lookup", "table": {"Banking": "FIN"}, "default": "OTHER"}},
                {"salesforce": "Phone", "sage": "DISPLAYCONTACT/PHONE1", "owner": "salesforce"}
            ]
        }))
        .unwrap();
        let w = world_full(t.db.clone(), Document::ArInvoice, vec![mapping]).await;
        let deal = w.deal(
            "Gringotts",
            "United Kingdom",
            "EUR",
            &[("Vault", "VLT", "1", "100.00")],
        );
        w.sf.update_as_user(
            "Account",
            &deal.account,
            &Record::new("Account")
                .with("Industry", "Banking")
                .with("Phone", "+44 20 7946 0000"),
        )
        .unwrap();
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        let c =
            w.ia.records("CUSTOMER")
                .into_iter()
                .find(|c| c.text_at("CUSTOMERID") == Some(r.customer_id.as_str()))
                .unwrap();
        assert_eq!(c.text_at("CUSTTYPE"), Some("FIN"));
        assert_eq!(c.text_at("DISPLAYCONTACT/PHONE1"), Some("+44 20 7946 0000"));
        // The Sage customer id goes back to the Account.
        w.sync.push("Account", None).await.unwrap();
        let acc = w.sf.record("Account", &deal.account).unwrap();
        assert_eq!(
            acc.get_str("Sage_Customer_Id__c"),
            Some(r.customer_id.as_str())
        );
        // A later change in Salesforce reaches the linked customer; the same values do not
        // call Intacct again.
        w.sf.update_as_user(
            "Account",
            &deal.account,
            &Record::new("Account").with("Industry", "Retail"),
        )
        .unwrap();
        assert!(w.q2c.account_changed(&deal.account).await.unwrap());
        assert!(!w.q2c.account_changed(&deal.account).await.unwrap());
        let c =
            w.ia.records("CUSTOMER")
                .into_iter()
                .find(|c| c.text_at("CUSTOMERID") == Some(r.customer_id.as_str()))
                .unwrap();
        assert_eq!(c.text_at("CUSTTYPE"), Some("OTHER"));
        assert_eq!(
            c.text_at("DISPLAYCONTACT/PHONE1"),
            Some("+44 20 7946 0000"),
            "untouched"
        );
        // An account with no customer is not pushed to Intacct.
        let prospect =
            w.sf.insert_as_user(
                "Account",
                &[Record::new("Account").with("Name", "Prospect Ltd")],
            )
            .unwrap()
            .remove(0);
        assert!(!w.q2c.account_changed(&prospect).await.unwrap());
    }
);

both_backends!(
    a_credit_granted_in_salesforce_becomes_a_credit_memo,
    |t| async move {
        let w = world(t.db.clone()).await;
        let deal = w.deal(
            "Wayne Enterprises",
            "United States",
            "USD",
            &[("Cape", "CAPE", "2", "500.00")],
        );
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        // 1000.00 + 8.25% = 1082.50 receivable.
        assert_eq!(w.balance("US", "1200-USD").await, 108_250);
        let memo =
            w.sf.insert_as_user(
                "Cashloop_Credit_Memo__c",
                &[Record::new("Cashloop_Credit_Memo__c")
                    .with("Name", "Late delivery")
                    .with("Opportunity__c", deal.opportunity.as_str())
                    .with("Amount__c", "100.00".parse::<Decimal>().unwrap())
                    .with("Reason__c", "Late delivery")],
            )
            .unwrap()
            .remove(0);
        let no = w.q2c.credit_memo(&memo).await.unwrap().unwrap();
        assert_eq!(no, format!("CM{memo}"));
        // Resent before the write-back landed: found by its number, nothing twice.
        assert_eq!(w.q2c.credit_memo(&memo).await.unwrap(), Some(no.clone()));
        let adjustments = w.ia.records("ARADJUSTMENT");
        assert_eq!(adjustments.len(), 1);
        let total: Decimal = adjustments[0]
            .text_at("TRX_TOTALENTERED")
            .or(adjustments[0].text_at("TOTALENTERED"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(total, "-100".parse::<Decimal>().unwrap());
        let inv =
            w.ia.records("ARINVOICE")
                .into_iter()
                .find(|i| i.text_at("RECORDNO") == Some(r.invoice_key.as_str()))
                .unwrap();
        let due: Decimal = inv.text_at("TRX_TOTALDUE").unwrap().parse().unwrap();
        assert_eq!(due, "982.50".parse::<Decimal>().unwrap());
        assert_eq!(w.balance("US", "1200-USD").await, 98_250);
        assert_eq!(w.balance("US", "4000-USD").await, 90_000);
        w.sync.push("Cashloop_Credit_Memo__c", None).await.unwrap();
        w.sync.push("Opportunity", None).await.unwrap();
        let m = w.sf.record("Cashloop_Credit_Memo__c", &memo).unwrap();
        assert_eq!(m.get_str("Sage_Adjustment_Id__c"), Some(no.as_str()));
        assert_eq!(m.get_str("Status__c"), Some("Applied"));
        assert_eq!(
            w.opp_field(&deal.opportunity, "Balance_Due__c").as_deref(),
            Some("982.5")
        );
        // Done: a replay does nothing; the Intacct pull does not post our own memo again.
        assert_eq!(w.q2c.credit_memo(&memo).await.unwrap(), None);
        assert_eq!(w.q2c.pull("US").await.unwrap().credit_memos, 0);
        assert_eq!(w.balance("US", "1200-USD").await, 98_250);
        // More than the balance due: refused, naming the field, nothing written.
        let too_much =
            w.sf.insert_as_user(
                "Cashloop_Credit_Memo__c",
                &[Record::new("Cashloop_Credit_Memo__c")
                    .with("Opportunity__c", deal.opportunity.as_str())
                    .with("Amount__c", "5000.00".parse::<Decimal>().unwrap())],
            )
            .unwrap()
            .remove(0);
        match w.q2c.credit_memo(&too_much).await.unwrap_err() {
            JobError::Permanent(m) => {
                assert!(m.contains("Amount__c") && m.contains("balance due"), "{m}")
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(w.ia.records("ARADJUSTMENT").len(), 1);
    }
);

both_backends!(
    a_sales_order_is_invoiced_when_intacct_converts_it,
    |t| async move {
        let w = world_with(
            t.db.clone(),
            Document::OrderEntry {
                definition: "Sales Order".into(),
            },
        )
        .await;
        let deal = w.deal(
            "Stark Industries",
            "United States",
            "USD",
            &[("Armor", "ARM-1", "2", "1000.00")],
        );
        let r = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        let order = r.order_id.clone().expect("an order");
        assert!(r.invoice_key.is_empty());
        assert_eq!(w.ia.records("SODOCUMENT").len(), 1);
        assert!(
            w.ia.records("ARINVOICE").is_empty(),
            "no receivable before the invoice"
        );
        assert_eq!(w.balance("US", "1200-USD").await, 0);
        w.sync.push("Opportunity", None).await.unwrap();
        assert_eq!(
            w.opp_field(&deal.opportunity, "Sage_Order_Number__c")
                .as_deref(),
            Some(order.as_str())
        );
        assert_eq!(
            w.opp_field(&deal.opportunity, "Sage_Invoice_Status__c")
                .as_deref(),
            Some("Ordered")
        );
        // Replayed: still one order.
        let again = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        assert_eq!(again.order_id.as_deref(), Some(order.as_str()));
        assert_eq!(w.ia.function_count("create_sotransaction"), 1);

        // Intacct converts the order into a Sales Invoice (2 × 1000.00 + 8.25% tax line).
        let customer = w.ia.records("CUSTOMER")[0]
            .text_at("CUSTOMERID")
            .unwrap()
            .to_owned();
        let client = intacct_client(&w.ia, "US");
        client
            .create_sotransaction(
                "convert-1",
                &sync::intacct::NewSalesTransaction {
                    transaction_type: "Sales Invoice".into(),
                    date_created: chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
                    created_from: Some(order.clone()),
                    customer_id: customer,
                    document_no: None,
                    reference_no: None,
                    term_name: None,
                    date_due: None,
                    message: None,
                    currency: sync::intacct::LegacyCurrency {
                        base_currency: None,
                        currency: Some("USD".into()),
                        exch_rate_date: None,
                        exchange: None,
                    },
                    state: None,
                    lines: vec![
                        sync::intacct::SalesTransactionLine {
                            item_id: "ARM-1".into(),
                            quantity: "2".parse().unwrap(),
                            unit: None,
                            price: Some("1000.00".parse().unwrap()),
                            location_id: None,
                            department_id: None,
                            memo: None,
                        },
                        sync::intacct::SalesTransactionLine {
                            item_id: "CASHLOOP-TAX".into(),
                            quantity: "1".parse().unwrap(),
                            unit: None,
                            price: Some("165.00".parse().unwrap()),
                            location_id: None,
                            department_id: None,
                            memo: None,
                        },
                    ],
                },
            )
            .await
            .unwrap();
        let pulled = w.q2c.pull("US").await.unwrap();
        assert_eq!(pulled.invoices, 1);
        let inv = &w.ia.records("ARINVOICE")[0];
        let link = Xref::new(w.db.clone())
            .by_salesforce("Opportunity", &deal.opportunity, "intacct")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Some(link.sage_id.as_str()), inv.text_at("RECORDNO"));
        assert_eq!(w.balance("US", "1200-USD").await, 216_500);
        w.sync.push("Opportunity", None).await.unwrap();
        assert_eq!(
            w.opp_field(&deal.opportunity, "Sage_Invoice_Number__c")
                .as_deref(),
            inv.text_at("RECORDID")
        );
        assert_eq!(
            w.opp_field(&deal.opportunity, "Balance_Due__c").as_deref(),
            Some("2165")
        );
        // Pulled again: nothing posted twice.
        w.q2c.pull("US").await.unwrap();
        assert_eq!(w.balance("US", "1200-USD").await, 216_500);
    }
);

both_backends!(
    a_reconciliation_applies_matched_receipts_once,
    |t| async move {
        use sync::q2c::{ApplyLine, ApplyReceipt};
        let w = world(t.db.clone()).await;
        let deal = w.deal(
            "Initech",
            "United States",
            "USD",
            &[("TPS report", "TPS", "1", "100.00")],
        );
        let created = w.q2c.closed_won(&deal.opportunity).await.unwrap().unwrap();
        let invoice = w.ia.records("ARINVOICE").into_iter().next().unwrap();
        let customer = invoice.text_at("CUSTOMERID").unwrap().to_owned();
        let receipt =
            |id: &str, from_gateway: bool, document: &str, amount_minor: i64| ApplyReceipt {
                run_id: 7,
                payment_id: id.to_owned(),
                entity: "US".into(),
                customer: customer.clone(),
                currency: "USD".into(),
                date: chrono::NaiveDate::from_ymd_opt(2026, 10, 7).unwrap(),
                method: "ach".into(),
                from_gateway,
                lines: vec![ApplyLine {
                    document: document.to_owned(),
                    amount_minor,
                }],
            };
        w.q2c.pull("US").await.unwrap();
        // More than the invoice owes, or an invoice Intacct does not have: refused, nothing made.
        let err = w
            .q2c
            .apply_receipt(&receipt("BANK-1", false, &created.invoice_no, 20_000))
            .await
            .unwrap_err();
        assert!(
            matches!(err, JobError::Permanent(ref m) if m.contains("owes 108.25")),
            "{err:?}"
        );
        let err = w
            .q2c
            .apply_receipt(&receipt("BANK-1", false, "INV-NOPE", 100))
            .await
            .unwrap_err();
        assert!(
            matches!(err, JobError::Permanent(ref m) if m.contains("INV-NOPE")),
            "{err:?}"
        );
        assert!(w.ia.records("ARPYMT").is_empty());

        // A bank receipt matched by the run: applied once, however often the job runs.
        let bank = receipt("BANK-1", false, &created.invoice_no, 6_000);
        w.q2c.apply_receipt(&bank).await.unwrap();
        w.q2c.apply_receipt(&bank).await.unwrap();
        let pymts = w.ia.records("ARPYMT");
        assert_eq!(pymts.len(), 1);
        assert_eq!(pymts[0].text_at("DOCNUMBER"), Some("BANK-1"));
        assert_eq!(pymts[0].text_at("RECEIPTDATE"), Some("10/07/2026"));
        // The pull books it like any receipt entered in Intacct: Dr cash / Cr AR.
        assert_eq!(w.q2c.pull("US").await.unwrap().receipts, 1);
        assert_eq!(w.balance("US", "1010-USD").await, 6_000);
        assert_eq!(w.balance("US", "1200-USD").await, 4_825);

        // A gateway payment the run matched: applied, but the ledger already has that money.
        w.q2c
            .apply_receipt(&receipt("pay_gw_9", true, &created.invoice_no, 4_825))
            .await
            .unwrap();
        assert_eq!(w.ia.records("ARPYMT").len(), 2);
        assert_eq!(w.q2c.pull("US").await.unwrap().receipts, 0);
        assert_eq!(w.balance("US", "1200-USD").await, 4_825);
        let inv = w.ia.records("ARINVOICE").into_iter().next().unwrap();
        assert_eq!(inv.text_at("TOTALDUE"), Some("0.00"), "{inv:?}");
    }
);
