//! The Sage X3 client against the simulator, over HTTP on loopback, on both surfaces:
//! the REST web API and the SOAP web services.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value as Json, json};
use sync::x3::simulator::{Fault, Simulator, SimulatorConfig};
use sync::x3::{
    AccountFacts, Address, Customer, Filter, InvoiceStatus, Item, ObjectName, Op, OrderLine,
    Payment, PaymentAllocation, Route, RouteRule, RouteWhen, SalesOrder, Secret, SoapSettings,
    Transport, X3Auth, X3Client, X3Config, X3Error, X3Query, X3Record, X3Routing,
};

const USER: &str = "admin";
const PASSWORD: &str = "x3-pass-0123";

async fn sim() -> Simulator {
    Simulator::start(SimulatorConfig::default()).await
}

fn basic() -> X3Auth {
    X3Auth::Basic {
        user: USER.into(),
        password: Secret::new(PASSWORD),
    }
}

fn config(sim: &Simulator, folder: &str, soap: bool) -> X3Config {
    let transport = if soap {
        Transport::Soap(SoapSettings::new(folder))
    } else {
        Transport::Rest
    };
    let mut cfg = X3Config::new(sim.base_url(), folder, basic(), transport);
    cfg.timeout_ms = 10_000;
    cfg
}

fn client(sim: &Simulator, soap: bool) -> X3Client {
    X3Client::new(config(sim, "SEED", soap)).unwrap()
}

fn customer(name: &str, country: &str, sf_id: &str) -> Customer {
    Customer {
        code: String::new(),
        name: name.into(),
        name2: None,
        category: Some("STD".into()),
        country: country.into(),
        currency: "EUR".into(),
        address: None,
        sf_id: Some(sf_id.into()),
    }
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn order(customer: &str, sales_site: &str, shipping_site: &str, sf_id: &str) -> SalesOrder {
    SalesOrder {
        number: String::new(),
        sales_site: sales_site.into(),
        order_type: "SON".into(),
        customer: customer.into(),
        customer_ref: sf_id.into(),
        order_date: date(),
        shipping_site: shipping_site.into(),
        currency: "EUR".into(),
        lines: vec![
            OrderLine {
                item: "BMS001".into(),
                quantity: Decimal::new(2, 0),
                gross_price_minor: 1_999,
            },
            OrderLine {
                item: "BMS002".into(),
                quantity: Decimal::new(15, 1),
                gross_price_minor: 1_000,
            },
        ],
        total_excl_tax_minor: None,
    }
}

async fn seed_items(c: &X3Client) {
    for (code, desc) in [
        ("BMS001", "Brake master cylinder"),
        ("BMS002", "Brake pads"),
    ] {
        let item = c
            .create_item(&Item {
                code: code.into(),
                description: desc.into(),
                category: Some("BMS".into()),
                stock_unit: Some("UN".into()),
            })
            .await
            .unwrap();
        assert_eq!(item.code, code);
    }
}

fn payment(customer: &str, invoice: &str, amount_minor: i64, reference: &str) -> Payment {
    Payment {
        number: String::new(),
        payment_type: "REC".into(),
        customer: customer.into(),
        site: "FR011".into(),
        date: date(),
        currency: "EUR".into(),
        amount_minor,
        bank: "BQ1".into(),
        reference: reference.into(),
        allocations: vec![PaymentAllocation {
            invoice: invoice.into(),
            amount_minor,
        }],
    }
}

/// The control endpoint: invoices an order, answers (status, body).
async fn invoice_via_control(sim: &Simulator, folder: &str, sohnum: &str) -> (u16, Json) {
    let resp = gateway::http::client()
        .post(format!(
            "{}/sim/{folder}/SORDER/{sohnum}/invoice",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn business_texts(err: &X3Error) -> Vec<String> {
    match err {
        X3Error::Business { messages, .. } => messages
            .iter()
            .filter(|m| m.kind == 3)
            .map(|m| m.text.clone())
            .collect(),
        other => panic!("expected a business error, got {other:?}"),
    }
}

// ----- customers -----

#[tokio::test]
async fn rest_customers_create_read_and_query_across_pages() {
    let sim = sim().await;
    let c = client(&sim, false);
    let mut first = customer("Acme & Sons <EU>", "FR", "001Qz00000A0001");
    first.name2 = Some("Europe".into());
    first.address = Some(Address {
        code: String::new(),
        lines: vec!["1 rue de la Paix".into(), "Bât. B".into()],
        postal_code: "75002".into(),
        city: "Paris".into(),
        country: "FR".into(),
    });
    let created = c.create_customer(&first).await.unwrap();
    assert_eq!(created.code, "C00001", "X3 numbers an empty BPCNUM");
    assert_eq!(created.sf_id.as_deref(), Some("001Qz00000A0001"));
    for i in 2..=45 {
        let country = if i % 3 == 0 { "GB" } else { "FR" };
        c.create_customer(&customer(
            &format!("Customer {i}"),
            country,
            &format!("001SF{i:04}"),
        ))
        .await
        .unwrap();
    }
    assert_eq!(sim.operation_count("$create"), 45);

    // $details: the whole record, address lines and the second name included.
    let read = c.read_customer("C00001").await.unwrap();
    assert_eq!(read.name, "Acme & Sons <EU>");
    assert_eq!(read.name2.as_deref(), Some("Europe"));
    let addr = read.address.unwrap();
    assert_eq!(addr.code, "MAIN");
    assert_eq!(addr.lines, vec!["1 rue de la Paix", "Bât. B"]);
    assert_eq!((addr.city.as_str(), addr.country.as_str()), ("Paris", "FR"));

    // X3's default page (20): 45 rows in 3 pages, following $links.$next.
    let all = c.query_customers(&X3Query::default()).await.unwrap();
    assert_eq!(all.len(), 45);
    assert_eq!(sim.operation_count("$query"), 3);
    let codes: Vec<&str> = all.iter().map(|c| c.code.as_str()).collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(codes, sorted, "key order, no row twice");

    // where + orderBy desc over pages of 4: 15 GB customers, 4 pages.
    let q = X3Query {
        filters: vec![Filter::eq("CRY", "GB")],
        order_by: vec![("BPCNUM".into(), false)],
        page_size: Some(4),
    };
    let gb = c.query_customers(&q).await.unwrap();
    assert_eq!(gb.len(), 15);
    assert_eq!(sim.operation_count("$query"), 3 + 4);
    assert!(gb.iter().all(|c| c.country == "GB"));
    assert_eq!(gb[0].code, "C00045");
    assert_eq!(gb[14].code, "C00003");
    assert!(gb.windows(2).all(|w| w[0].code > w[1].code));

    // `gt` on the key, and the Salesforce id lookup through the custom field.
    let after = X3Query::filter(vec![Filter::new("BPCNUM", Op::Gt, "C00040")]);
    assert_eq!(c.query_customers(&after).await.unwrap().len(), 5);
    let found = c
        .find_customer_by_sf_id("001SF0007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.code, "C00007");
    assert!(c.find_customer_by_sf_id("001NOPE").await.unwrap().is_none());

    // The generic create answers the key and the Location of the new record.
    let created = c
        .create(
            &c.objects().item,
            &X3Record::new()
                .with("ITMREF", "IT 1")
                .with("ITMDES1", "Spaced key"),
        )
        .await
        .unwrap();
    assert_eq!(created.key, "IT 1");
    let location = created.location.unwrap();
    assert_eq!(
        location,
        format!(
            "{}/api1/x3/erp/SEED/ITMMASTER('IT%201')?representation=ITMMASTER.%24details",
            sim.base_url()
        )
    );
    assert_eq!(c.read_item("IT 1").await.unwrap().description, "Spaced key");

    // A page by hand: the next link carries key=gt.<last key>.
    let page = c
        .query_page(&c.objects().customer, &X3Query::default(), None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 20);
    let next = page.next.unwrap();
    assert!(next.starts_with(sim.base_url()), "{next}");
    assert!(next.contains("key=gt.C00020"), "{next}");
}

#[tokio::test]
async fn soap_customers_save_read_query_and_list_size() {
    let sim = sim().await;
    let c = client(&sim, true);
    let mut first = customer("O'Brien <Ltd>", "GB", "001Qz00000B0001");
    first.code = "GB0001".into();
    first.currency = "GBP".into();
    first.address = Some(Address {
        code: "HQ".into(),
        lines: vec!["10 Downing St".into()],
        postal_code: "SW1A 2AA".into(),
        city: "London".into(),
        country: "GB".into(),
    });
    let created = c.create_customer(&first).await.unwrap();
    assert_eq!(created.code, "GB0001");
    for i in 2..=25 {
        let country = if i % 5 == 0 { "GB" } else { "FR" };
        c.create_customer(&customer(
            &format!("Soap {i}"),
            country,
            &format!("001SOAP{i:03}"),
        ))
        .await
        .unwrap();
    }
    assert_eq!(sim.operation_count("soap:save"), 25);
    assert_eq!(sim.operation_count("$create"), 0, "SOAP only");

    let read = c.read_customer("GB0001").await.unwrap();
    assert_eq!(read.name, "O'Brien <Ltd>");
    assert_eq!(read.currency, "GBP");
    assert_eq!(read.address.unwrap().lines, vec!["10 Downing St"]);
    // The record X3 stored is the one sent (escaping survived both XML layers).
    let stored = sim.records("SEED", "BPCUSTOMER");
    assert_eq!(stored.len(), 25);
    let gb0001 = stored
        .iter()
        .find(|r| r.text("BPCNUM") == "GB0001")
        .unwrap();
    assert_eq!(gb0001.list("BPRNAM"), ["O'Brien <Ltd>".to_owned()]);
    assert_eq!(gb0001.text("YSFID"), "001Qz00000B0001");
    assert_eq!(gb0001.lines("BPAC_1")[0]["POSCOD"], "SW1A 2AA");

    let all = c.query_customers(&X3Query::default()).await.unwrap();
    assert_eq!(all.len(), 25);
    let gb = c
        .query_customers(&X3Query::filter(vec![Filter::eq("CRY", "GB")]))
        .await
        .unwrap();
    assert_eq!(gb.len(), 6, "GB0001 and every fifth");
    let found = c
        .find_customer_by_sf_id("001SOAP010")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.name, "Soap 10");

    // SOAP query has no paging: a list as long as listSize is refused, not cut silently.
    let mut cfg = config(&sim, "SEED", true);
    cfg.soap_list_size = 10;
    let small = X3Client::new(cfg).unwrap();
    let err = small
        .query_customers(&X3Query::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, X3Error::Truncated { limit: 10, .. }),
        "{err:?}"
    );
    assert_eq!(
        small
            .query_customers(&X3Query::filter(vec![Filter::eq("CRY", "GB")]))
            .await
            .unwrap()
            .len(),
        6
    );
    // Only equalities travel as objectKeys.
    let err = c
        .query_customers(&X3Query::filter(vec![Filter::new("BPCNUM", Op::Gt, "C1")]))
        .await
        .unwrap_err();
    assert!(matches!(err, X3Error::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn customer_partial_update_on_both_transports() {
    let sim = sim().await;
    for soap in [false, true] {
        let c = client(&sim, soap);
        let created = c
            .create_customer(&customer("Before", "FR", &format!("001UPD{soap}")))
            .await
            .unwrap();
        let changes = X3Record::new()
            .with_list("BPRNAM", vec!["After".into()])
            .with("BCGCOD", "VIP");
        let updated = c.update_customer(&created.code, &changes).await.unwrap();
        assert_eq!(updated.name, "After");
        assert_eq!(updated.category.as_deref(), Some("VIP"));
        let read = c.read_customer(&created.code).await.unwrap();
        assert_eq!(read.name, "After");
        assert_eq!(read.sf_id, created.sf_id, "untouched fields stay");
        // The key cannot change.
        let err = c
            .update_customer(&created.code, &X3Record::new().with("BPCNUM", "OTHER"))
            .await
            .unwrap_err();
        assert_eq!(
            business_texts(&err),
            vec!["BPCNUM : The key cannot be modified"]
        );
    }
    assert_eq!(sim.operation_count("$edit"), 2);
    assert_eq!(sim.operation_count("soap:modify"), 2);
}

// ----- order → invoice → payment -----

async fn order_to_cash(sim: &Simulator, soap: bool) {
    let c = client(sim, soap);
    seed_items(&c).await;
    let bpc = c
        .create_customer(&customer("Order Co", "FR", "001ORD"))
        .await
        .unwrap();
    let created = c
        .create_order(&order(&bpc.code, "FR011", "FR012", "006Qz000000001"))
        .await
        .unwrap();
    assert_eq!(created.number, "SOFR011000001");
    // 2 × 19.99 + 1.5 × 10.00
    assert_eq!(created.total_excl_tax_minor, Some(5_498));
    let read = c.read_order(&created.number).await.unwrap();
    assert_eq!(read.customer, bpc.code);
    assert_eq!(read.customer_ref, "006Qz000000001");
    assert_eq!(
        (read.sales_site.as_str(), read.shipping_site.as_str()),
        ("FR011", "FR012")
    );
    assert_eq!(read.order_date, date());
    assert_eq!(read.lines.len(), 2);
    assert_eq!(read.lines[1].quantity, Decimal::new(15, 1));
    assert_eq!(read.lines[1].gross_price_minor, 1_000);
    assert!(
        c.invoices_for_order(&created.number)
            .await
            .unwrap()
            .is_empty()
    );

    // The simulator's control endpoint invoices the order.
    let (status, body) = invoice_via_control(sim, "SEED", &created.number).await;
    assert_eq!(status, 201, "{body}");
    let number = body["NUM"].as_str().unwrap().to_owned();
    let invoices = c.invoices_for_order(&created.number).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].number, number);
    let inv = c.read_invoice(&number).await.unwrap();
    assert_eq!(inv.customer, bpc.code);
    assert_eq!(inv.origin_order.as_deref(), Some(created.number.as_str()));
    assert_eq!(inv.currency, "EUR");
    assert_eq!(inv.amount_excl_tax_minor, 5_498);
    // 20 % of 54.98 = 10.996 → 11.00
    assert_eq!(inv.amount_incl_tax_minor, 6_598);
    assert_eq!((inv.open_minor, inv.status), (6_598, InvoiceStatus::Open));
    let (again, body) = invoice_via_control(sim, "SEED", &created.number).await;
    assert_eq!(again, 409, "{body}");

    // A partial payment lowers the open amount; the rest settles it.
    let paid = c
        .create_payment(&payment(&bpc.code, &number, 3_000, "pi_1"))
        .await
        .unwrap();
    assert!(paid.number.starts_with("PAY"), "{}", paid.number);
    assert_eq!(paid.amount_minor, 3_000);
    assert_eq!(paid.allocations[0].invoice, number);
    let inv = c.read_invoice(&number).await.unwrap();
    assert_eq!(
        (inv.paid_minor, inv.open_minor, inv.status),
        (3_000, 3_598, InvoiceStatus::PartlyPaid)
    );
    // More than is open: refused with X3's text, nothing applied.
    let err = c
        .create_payment(&payment(&bpc.code, &number, 4_000, "pi_2"))
        .await
        .unwrap_err();
    assert!(err.mentions("open amount 35.98"), "{err}");
    assert!(!err.retryable());
    assert_eq!(c.read_invoice(&number).await.unwrap().open_minor, 3_598);
    c.create_payment(&payment(&bpc.code, &number, 3_598, "pi_3"))
        .await
        .unwrap();
    let inv = c.read_invoice(&number).await.unwrap();
    assert_eq!((inv.open_minor, inv.status), (0, InvoiceStatus::Paid));
    let p = c.read_payment(&paid.number).await.unwrap();
    assert_eq!(
        (p.reference.as_str(), p.customer.as_str()),
        ("pi_1", bpc.code.as_str())
    );
    assert_eq!(sim.records("SEED", "PAYMENTH").len(), 2);
}

#[tokio::test]
async fn rest_order_invoice_and_payment() {
    let sim = sim().await;
    order_to_cash(&sim, false).await;
    assert!(sim.operation_count("$create") >= 6);
    assert_eq!(sim.operation_count("soap:save"), 0);
}

#[tokio::test]
async fn soap_order_invoice_and_payment() {
    let sim = sim().await;
    order_to_cash(&sim, true).await;
    assert!(sim.operation_count("soap:save") >= 6);
    assert_eq!(sim.operation_count("$create"), 0);
}

// ----- routing -----

#[tokio::test]
async fn routing_picks_folder_and_sites() {
    let sim = sim().await;
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
    for (country, sf_id) in [("GB", "001UK"), ("FR", "001FR")] {
        let route = routing.route(AccountFacts {
            billing_country: Some(country),
            currency: Some("EUR"),
        });
        let c = X3Client::new(config(&sim, &route.folder, country == "GB")).unwrap();
        seed_items(&c).await;
        let bpc = c
            .create_customer(&customer(sf_id, country, sf_id))
            .await
            .unwrap();
        let o = c
            .create_order(&order(
                &bpc.code,
                &route.sales_site,
                &route.shipping_site,
                sf_id,
            ))
            .await
            .unwrap();
        assert_eq!(o.sales_site, route.sales_site);
    }
    let uk = sim.records("UKLIVE", "SORDER");
    let seed = sim.records("SEED", "SORDER");
    assert_eq!(uk.len(), 1);
    assert_eq!(seed.len(), 1);
    assert_eq!(
        (
            uk[0].text("SALFCY"),
            uk[0].text("STOFCY"),
            uk[0].text("CUSORDREF")
        ),
        ("GB011", "GB012", "001UK")
    );
    assert_eq!(
        (
            seed[0].text("SALFCY"),
            seed[0].text("STOFCY"),
            seed[0].text("CUSORDREF")
        ),
        ("FR011", "FR012", "001FR")
    );
    // Folders are separate: each numbers its own customers, and neither sees the other's.
    assert_eq!(
        sim.records("UKLIVE", "BPCUSTOMER")[0].text("YSFID"),
        "001UK"
    );
    let seed_client = client(&sim, false);
    assert!(
        seed_client
            .find_customer_by_sf_id("001UK")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(routing.folders(), vec!["SEED", "UKLIVE"]);
}

// ----- stock -----

#[tokio::test]
async fn stock_reads_and_soap_run() {
    let sim = sim().await;
    sim.add_stock("SEED", "FR012", "BMS001", "A", Decimal::new(125, 1));
    sim.add_stock("SEED", "FR012", "BMS001", "Q", Decimal::new(3, 0));
    sim.add_stock("SEED", "FR011", "BMS001", "A", Decimal::new(7, 0));
    for soap in [false, true] {
        let c = client(&sim, soap);
        let lines = c.read_stock("BMS001", "FR012").await.unwrap();
        assert_eq!(lines.len(), 2);
        let total: Decimal = lines.iter().map(|l| l.quantity).sum();
        assert_eq!(total, Decimal::new(155, 1));
        assert!(
            lines
                .iter()
                .all(|l| l.site == "FR012" && l.item == "BMS001")
        );
    }
    let c = client(&sim, true);
    let out = c
        .run(
            "YSTKAVL",
            &X3Record::new()
                .with("ITMREF", "BMS001")
                .with("STOFCY", "FR012"),
        )
        .await
        .unwrap();
    assert_eq!(out.text("QTYSTU"), "12.5", "available (STA A) only");
    let err = c.run("NOSUCH", &X3Record::new()).await.unwrap_err();
    assert_eq!(business_texts(&err), vec!["Web service NOSUCH not found"]);
}

// ----- errors -----

#[tokio::test]
async fn business_errors_carry_x3_text_on_both_transports() {
    let sim = sim().await;
    for soap in [false, true] {
        let c = client(&sim, soap);
        let err = c
            .create_order(&order("NOPE", "FR011", "FR012", "006X"))
            .await
            .unwrap_err();
        assert_eq!(
            business_texts(&err),
            vec!["BPCORD : Customer NOPE does not exist"]
        );
        assert!(!err.retryable());
        assert!(
            err.to_string().contains("Customer NOPE does not exist"),
            "{err}"
        );
        let mut dup = customer("Dup", "FR", "001DUP");
        dup.code = format!("DUP{soap}");
        c.create_customer(&dup).await.unwrap();
        let err = c.create_customer(&dup).await.unwrap_err();
        assert_eq!(
            business_texts(&err),
            vec![format!(
                "BPCNUM : Customer DUP{soap} : Record already exists"
            )]
        );
        let mut bad_cur = customer("Yen", "JP", "001YEN");
        bad_cur.currency = "CHF".into();
        let err = c.create_customer(&bad_cur).await.unwrap_err();
        assert!(err.mentions("Currency CHF does not exist"), "{err}");
    }
    assert!(sim.records("SEED", "SORDER").is_empty());
}

#[tokio::test]
async fn unknown_property_class_and_record() {
    let sim = sim().await;
    let c = client(&sim, false);
    c.create_customer(&customer("A", "FR", "001A"))
        .await
        .unwrap();
    // Unknown property in where: X3 answers 500 — permanent, X3 said why.
    let err = c
        .query_customers(&X3Query::filter(vec![Filter::eq("NOPE", "x")]))
        .await
        .unwrap_err();
    match &err {
        X3Error::Http {
            status: 500,
            x3_diagnoses: true,
            ..
        } => {}
        other => panic!("expected a 500 with diagnoses, got {other:?}"),
    }
    assert!(!err.retryable());
    assert!(err.mentions("Property 'NOPE' does not exist"), "{err}");
    // Unknown property in orderBy: the same.
    let q = X3Query {
        order_by: vec![("NOPE".into(), true)],
        ..X3Query::default()
    };
    assert_eq!(c.query_customers(&q).await.unwrap_err().status(), Some(500));
    // Unknown class: 404.
    let bogus = ObjectName::new("BPCUSTOMERX", "BPCUSTOMERX", "X");
    let err = c.query(&bogus, &X3Query::default()).await.unwrap_err();
    assert!(matches!(err, X3Error::NotFound { .. }), "{err:?}");
    assert!(err.mentions("Class BPCUSTOMERX not found"));
    assert!(!err.retryable());
    // Unknown folder (endpoint): 404.
    let other = X3Client::new(config(&sim, "NOFOLDER", false)).unwrap();
    let err = other.read_customer("C00001").await.unwrap_err();
    assert!(err.mentions("Endpoint NOFOLDER not found"), "{err:?}");
    assert_eq!(err.status(), Some(404));
    // Unknown record: 404 on REST, a type-3 message on SOAP.
    let err = c.read_customer("NOPE").await.unwrap_err();
    assert!(matches!(err, X3Error::NotFound { .. }), "{err:?}");
    let err = client(&sim, true).read_customer("NOPE").await.unwrap_err();
    assert_eq!(
        business_texts(&err),
        vec!["BPCUSTOMER NOPE : Record does not exist"]
    );
    // Unknown field in a create: refused (400) with X3's text.
    let err = c
        .create(
            &c.objects().customer,
            &X3Record::new()
                .with("BPRNAM", "x")
                .with("CUR", "EUR")
                .with("CRY", "FR")
                .with("ZZZ", "1"),
        )
        .await
        .unwrap_err();
    assert!(err.mentions("ZZZ : Property unknown"), "{err}");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retryable() {
    let sim = sim().await;
    for soap in [false, true] {
        let c = client(&sim, soap);
        for (fault, status) in [
            (Fault::Status(503), 503),
            (Fault::Status(502), 502),
            (Fault::Status(500), 500),
            (Fault::RateLimit, 429),
        ] {
            sim.fail_next(1, fault);
            let err = c.read_item("BMS001").await.unwrap_err();
            assert_eq!(err.status(), Some(status), "{err:?}");
            assert!(err.retryable(), "{status} must be retryable: {err:?}");
            assert_eq!(err.is_rate_limited(), status == 429);
        }
        if soap {
            // A SOAP Server fault is the pool failing: retryable like a 5xx.
            sim.fail_next(1, Fault::SoapServer);
            let err = c.read_item("BMS001").await.unwrap_err();
            assert_eq!(err.status(), Some(500));
            assert!(err.mentions("soapenv:Server"), "{err:?}");
            assert!(err.retryable(), "{err:?}");
        }
        // The fault queue is drained: the next call reaches X3 (and finds nothing).
        let err = c.read_item("BMS001").await.unwrap_err();
        assert!(!err.retryable(), "{err:?}");
    }
    // A timeout is retryable too.
    let mut cfg = config(&sim, "SEED", false);
    cfg.timeout_ms = 100;
    let slow = X3Client::new(cfg).unwrap();
    sim.set_latency_ms(1_000);
    let err = slow.read_item("BMS001").await.unwrap_err();
    assert!(
        matches!(err, X3Error::Timeout { timeout_ms: 100 }),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[tokio::test]
async fn bad_credentials_are_401_and_bearer_tokens_work() {
    let sim = sim().await;
    for soap in [false, true] {
        let mut cfg = config(&sim, "SEED", soap);
        cfg.auth = X3Auth::Basic {
            user: USER.into(),
            password: Secret::new("wrong-password-987"),
        };
        let c = X3Client::new(cfg).unwrap();
        let err = c.read_customer("C00001").await.unwrap_err();
        assert!(matches!(err, X3Error::Unauthorized), "{err:?}");
        assert!(!err.retryable());
        assert!(!format!("{err} {err:?} {c:?}").contains("wrong-password-987"));

        let mut cfg = config(&sim, "SEED", soap);
        cfg.auth = X3Auth::Bearer {
            token: Secret::new("not-a-token"),
        };
        let err = X3Client::new(cfg)
            .unwrap()
            .read_customer("C1")
            .await
            .unwrap_err();
        assert!(matches!(err, X3Error::Unauthorized), "{err:?}");

        let mut cfg = config(&sim, "SEED", soap);
        cfg.auth = X3Auth::Bearer {
            token: Secret::new("x3-token-4567"),
        };
        let c = X3Client::new(cfg).unwrap();
        let created = c
            .create_customer(&customer("Token", "FR", &format!("001TOK{soap}")))
            .await
            .unwrap();
        assert_eq!(c.read_customer(&created.code).await.unwrap().name, "Token");
    }
    assert_eq!(
        sim.records("SEED", "BPCUSTOMER").len(),
        2,
        "refused calls wrote nothing"
    );
}

// ----- the wire itself -----

#[tokio::test]
async fn rest_wire_shapes() {
    let sim = sim().await;
    let http = gateway::http::client();
    let base = format!("{}/api1/x3/erp/SEED/BPCUSTOMER", sim.base_url());
    let resp = http
        .post(format!("{base}?representation=BPCUSTOMER.$create"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"BPCNUM": "W1", "BPRNAM": ["Wire"], "CRY": "FR", "CUR": "EUR", "YSFID": "001W"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("{base}('W1')?representation=BPCUSTOMER.%24details")
    );
    let created: Json = resp.json().await.unwrap();
    assert_eq!(created["BPCNUM"], "W1");
    assert!(created["$uuid"].as_str().unwrap().len() == 36);
    assert!(created["$etag"].is_string());
    let details: Json = http
        .get(&location)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["BPRNAM"], json!(["Wire"]));
    assert_eq!(details["$key"], "W1");

    for i in 0..120 {
        sim.insert(
            "SEED",
            "BPCUSTOMER",
            X3Record::new()
                .with("BPCNUM", format!("Z{i:03}"))
                .with_list("BPRNAM", vec![format!("Seed {i}")]),
        );
    }
    // The server caps count; the feed carries $itemsPerPage, $resources and $links.$next.
    let feed: Json = http
        .get(format!("{base}?representation=BPCUSTOMER.$query&count=500"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(feed["$itemsPerPage"], 100);
    assert_eq!(feed["$resources"].as_array().unwrap().len(), 100);
    let next = feed["$links"]["$next"]["$url"].as_str().unwrap();
    assert!(next.contains("key=gt.Z098"), "{next}");
    assert_eq!(feed["$links"]["$next"]["$method"], "GET");
    let last: Json = http
        .get(next)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["$resources"].as_array().unwrap().len(), 21);
    assert!(last["$links"].get("$next").is_none(), "last page: no $next");
    // No match: 200 with an empty $resources.
    let none = http
        .get(format!(
            "{base}?representation=BPCUSTOMER.$query&where=BPCNUM%20eq%20'NONE'"
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 200);
    let none: Json = none.json().await.unwrap();
    assert_eq!(none["$resources"], json!([]));
    // Unauthenticated: 401 with a challenge.
    let anon = http
        .get(format!("{base}?representation=BPCUSTOMER.$query"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    assert!(anon.headers().contains_key("www-authenticate"));
    // A $diagnoses body with $severity error on a 500.
    let bad = http
        .get(format!(
            "{base}?representation=BPCUSTOMER.$query&where=NOPE%20eq%201"
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 500);
    let bad: Json = bad.json().await.unwrap();
    assert_eq!(bad["$diagnoses"][0]["$severity"], "error");
}

#[tokio::test]
async fn soap_wire_shapes() {
    let sim = sim().await;
    let envelope = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:wss="http://www.adonix.com/WSS">
<soapenv:Body><wss:save>
<callContext><codeLang>ENG</codeLang><poolAlias>SEED</poolAlias><poolId/><requestConfig>adxwss.optreturn=XML</requestConfig></callContext>
<publicName>SOH</publicName>
<objectXml><![CDATA[<PARAM><GRP ID="SOH0_1"><FLD NAME="SALFCY">FR011</FLD><FLD NAME="BPCORD">NOPE</FLD></GRP></PARAM>]]></objectXml>
</wss:save></soapenv:Body></soapenv:Envelope>"#;
    let http = gateway::http::client();
    let url = format!(
        "{}/soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC",
        sim.base_url()
    );
    let resp = http
        .post(&url)
        .basic_auth(USER, Some(PASSWORD))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "business failures are HTTP 200"
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("<wss:saveResponse"), "{text}");
    assert!(
        text.contains("<status xsi:type=\"xsd:int\">0</status>"),
        "{text}"
    );
    assert!(
        text.contains("<type xsi:type=\"xsd:string\">3</type>"),
        "{text}"
    );
    assert!(
        text.contains("BPCORD : Customer NOPE does not exist"),
        "{text}"
    );
    // Not an envelope: a SOAP Fault with HTTP 500.
    let resp = http
        .post(&url)
        .basic_auth(USER, Some(PASSWORD))
        .body("<nope/>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("<faultcode>soapenv:Client</faultcode>")
    );
    // An unknown pool alias.
    let mut cfg = config(&sim, "SEED", true);
    cfg.transport = Transport::Soap(SoapSettings::new("NOPOOL"));
    let err = X3Client::new(cfg)
        .unwrap()
        .read_customer("C1")
        .await
        .unwrap_err();
    assert_eq!(business_texts(&err), vec!["Pool NOPOOL not found"]);
}

// ----- X3's documented feed (protocols.md §3.2, DOC EXCERPT of V7DEV integration-guide_ws-query) -----

/// The documented query feed, verbatim.
const DOC_QUERY_FEED: &str = r#"{"$itemsPerPage": 20,
 "$resources": [{ "BPCNUM": "0113", "BPCNAM": "ACME Inc." }, { "BPCNUM": "0120", "BPCNAM": "ACME Ltd." }],
 "$links": {"$next": {"$url": "http://myhost:8124/api1/x3/erp/MYENDPOINT/BPCUSTOMER?representation=BPCUSTOMER.$query&key=gt.0197",
                      "$type": "application/json", "$method": "GET"},
            "$last": {"$url": "http://myhost:8124/api1/x3/erp/MYENDPOINT/BPCUSTOMER?representation=BPCUSTOMER.$query&key=lt",
                      "$type": "application/json", "$method": "GET"}}}"#;

/// Serves the documented feed at `/api1/x3/erp/MYENDPOINT/BPCUSTOMER`, its `$next` host
/// rewritten to this server when `rewrite`; the page after `key=gt.0197` is the last.
async fn doc_server(rewrite: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::{RawQuery, State};
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let feed = if rewrite {
        DOC_QUERY_FEED.replace("http://myhost:8124", &base)
    } else {
        DOC_QUERY_FEED.to_owned()
    };
    let app = axum::Router::new()
        .route(
            "/api1/x3/erp/MYENDPOINT/BPCUSTOMER",
            axum::routing::get(
                |State((feed, seen)): State<(String, Arc<Mutex<Vec<String>>>)>,
                 RawQuery(q): RawQuery| async move {
                    let q = q.unwrap_or_default();
                    seen.lock().unwrap().push(q.clone());
                    let body = if q.contains("key=gt.0197") {
                        r#"{"$itemsPerPage": 20, "$resources": [{"$uuid": "6bc5644d-0000-0000-0000-000000000000", "$etag": "2015-08-18T08:14:25Z", "BPCNUM": "0198", "BPCNAM": "ACME GmbH"}], "$links": {}}"#.to_owned()
                    } else {
                        feed
                    };
                    ([("content-type", "application/json")], body)
                },
            ),
        )
        .with_state((feed, seen.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

#[tokio::test]
async fn follows_the_documented_feed_and_only_on_its_own_origin() {
    let (base, seen) = doc_server(true).await;
    let c = X3Client::new(X3Config::new(&base, "MYENDPOINT", basic(), Transport::Rest)).unwrap();
    let rows = c
        .query(&c.objects().customer, &X3Query::default())
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.text("BPCNAM")).collect();
    assert_eq!(names, vec!["ACME Inc.", "ACME Ltd.", "ACME GmbH"]);
    assert_eq!(rows[2].text("BPCNUM"), "0198");
    assert!(!rows[2].fields.contains_key("$uuid"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], "representation=BPCUSTOMER.%24query");
    assert!(seen[1].ends_with("&key=gt.0197"), "{seen:?}");

    // Verbatim, $next points at another host: the client will not send credentials there.
    let (base, seen) = doc_server(false).await;
    let c = X3Client::new(X3Config::new(&base, "MYENDPOINT", basic(), Transport::Rest)).unwrap();
    let err = c
        .query(&c.objects().customer, &X3Query::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, X3Error::MalformedResponse { detail, .. } if detail.contains("http://myhost:8124")),
        "{err:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A server answering every request with this status and SOAP body.
async fn canned_soap_server(status: u16, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "text/xml; charset=utf-8")],
                body,
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test]
async fn soap_faults_client_permanent_server_retryable() {
    for (code, retryable) in [("soapenv:Client", false), ("soapenv:Server", true)] {
        let base = canned_soap_server(
            500,
            sync::x3::soap::fault_envelope(code, "Unmarshalling error"),
        )
        .await;
        let cfg = X3Config::new(
            &base,
            "SEED",
            basic(),
            Transport::Soap(SoapSettings::new("SEED")),
        );
        let err = X3Client::new(cfg)
            .unwrap()
            .read_customer("C1")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert!(err.mentions("Unmarshalling error"), "{err:?}");
        assert_eq!(err.retryable(), retryable, "{code}: {err:?}");
    }
}
