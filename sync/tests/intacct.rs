//! The Intacct client against the simulator, over HTTP on loopback, and the response parser
//! against intacct-sdk-php fixtures.

use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sync::intacct::simulator::{Fault, Simulator, SimulatorConfig};
use sync::intacct::{
    ArPaymentItem, Compare, Condition, Element, Exchange, Function, IntacctClient, IntacctConfig,
    IntacctError, InvoiceLine, LegacyCurrency, NewArAdjustment, NewArPayment, NewBill, NewInvoice,
    NewSalesTransaction, Options, PaymentDeposit, Query, Response, ResultStatus,
    SalesTransactionLine, Secret, UserAuth, parse_response,
};

async fn sim() -> Simulator {
    Simulator::start(SimulatorConfig::default()).await
}

fn config(sim: &Simulator) -> IntacctConfig {
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
    cfg.timeout_ms = 10_000;
    cfg
}

fn client(sim: &Simulator) -> IntacctClient {
    IntacctClient::new(config(sim)).unwrap()
}

fn customer(id: &str, name: &str) -> Element {
    Element::new("CUSTOMER")
        .with_leaf("CUSTOMERID", id)
        .with_leaf("NAME", name)
        .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", name))
}

fn function_error(err: &IntacctError) -> (&str, &[sync::intacct::ErrorDetail]) {
    match err {
        IntacctError::Function { status, errors, .. } => (status.as_str(), errors.as_slice()),
        other => panic!("expected a function error, got {other:?}"),
    }
}

#[tokio::test]
async fn get_api_session_then_calls_go_to_the_returned_endpoint() {
    let sim = sim().await;
    let c = client(&sim);
    assert_eq!(c.session_endpoint().await, None);
    let created = c
        .create("cust-C1-create", vec![customer("C1", "Acme & Sons <EU>")])
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert!(created[0].is("customer"));
    assert_eq!(created[0].text_at("CUSTOMERID"), Some("C1"));
    c.read_by_query_all("CUSTOMER", &[], "", 100).await.unwrap();
    assert_eq!(c.session_endpoint().await, Some(sim.session_endpoint_url()));
    assert_ne!(sim.session_endpoint_url(), sim.endpoint_url());
    let by_path = sim.requests_by_path();
    assert_eq!(by_path.get("/ia/xml/xmlgw.phtml"), Some(&1), "{by_path:?}");
    assert_eq!(
        by_path.get("/na1/ia/xml/xmlgw.phtml"),
        Some(&2),
        "{by_path:?}"
    );
    assert_eq!(sim.function_count("getAPISession"), 1);
    assert_eq!(c.logins(), 1);
    // Escaping survives the round trip.
    let stored = sim.records("CUSTOMER");
    assert_eq!(stored[0].text_at("NAME"), Some("Acme & Sons <EU>"));
}

#[tokio::test]
async fn wrong_sender_and_user_credentials_are_typed_errors_with_verbatim_text() {
    let sim = sim().await;
    let mut cfg = config(&sim);
    cfg.sender_password = Secret::new("wrong");
    let err = IntacctClient::new(cfg)
        .unwrap()
        .read("CUSTOMER", &["1"], &[])
        .await
        .unwrap_err();
    let IntacctError::Control { errors } = &err else {
        panic!("expected a control failure, got {err:?}");
    };
    assert_eq!(errors[0].errorno, "XL03000006");
    assert_eq!(
        errors[0].description2,
        "Incorrect Intacct XML Partner ID or password."
    );
    assert!(!err.retryable());
    assert!(!format!("{err:?}").contains("wrong"));

    let mut cfg = config(&sim);
    cfg.auth = UserAuth::Login {
        user_id: "ws_user".into(),
        password: Secret::new("bad-user-pass"),
    };
    assert!(!format!("{cfg:?}").contains("bad-user-pass"));
    assert!(!format!("{cfg:?}").contains(&sim.config().sender_password));
    let err = IntacctClient::new(cfg)
        .unwrap()
        .read("CUSTOMER", &["1"], &[])
        .await
        .unwrap_err();
    let IntacctError::Authentication { errors } = &err else {
        panic!("expected an authentication failure, got {err:?}");
    };
    assert_eq!(errors[0].errorno, "XL03000006");
    assert_eq!(errors[0].description2, "Sign-in information is incorrect");
    assert!(!err.retryable());

    // An entity that does not exist is refused at sign-in too.
    let mut cfg = config(&sim);
    cfg.entity = Some("NOPE".into());
    let err = IntacctClient::new(cfg)
        .unwrap()
        .read("CUSTOMER", &["1"], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, IntacctError::Authentication { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn entity_session_stamps_records() {
    let sim = sim().await;
    let mut cfg = config(&sim);
    cfg.entity = Some("UK".into());
    let c = IntacctClient::new(cfg).unwrap();
    c.create("c-uk", vec![customer("UK1", "Brit Ltd")])
        .await
        .unwrap();
    assert_eq!(
        sim.records("CUSTOMER")[0].text_at("MEGAENTITYID"),
        Some("UK")
    );
}

#[tokio::test]
async fn duplicate_customer_id_and_other_write_errors() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("c1-a", vec![customer("C1", "One")]).await.unwrap();
    let err = c
        .create("c1-b", vec![customer("C1", "One again")])
        .await
        .unwrap_err();
    let (status, errors) = function_error(&err);
    assert_eq!(status, "failure");
    assert_eq!(errors[0].errorno, "BL34000061");
    assert_eq!(errors[0].description, "");
    assert_eq!(
        errors[0].description2,
        "Another Customer with the given value(s) C1  already exists"
    );
    assert_eq!(errors[0].correction, "Use a unique value instead.");
    assert_eq!(errors[1].errorno, "BL01001973");
    assert_eq!(errors[1].description2, "Could not create customer record!");
    assert!(!err.retryable());

    let no_name = Element::new("CUSTOMER").with_leaf("CUSTOMERID", "C2");
    let err = c.create("c2", vec![no_name]).await.unwrap_err();
    assert!(
        function_error(&err).1[0].description2.contains("NAME"),
        "{err}"
    );

    let err = c
        .create("x1", vec![Element::new("WIDGET").with_leaf("ID", "1")])
        .await
        .unwrap_err();
    assert!(
        function_error(&err).1[0].description2.contains("WIDGET"),
        "{err}"
    );

    // Update by natural key, then of a record that does not exist.
    let updated = c
        .update(
            "c1-upd",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C1")
                    .with_leaf("NAME", "One Renamed"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        updated[0].text_at("RECORDNO"),
        sim.records("CUSTOMER")[0].text_at("RECORDNO")
    );
    assert_eq!(
        sim.records("CUSTOMER")[0].text_at("NAME"),
        Some("One Renamed")
    );
    let err = c
        .update(
            "c9-upd",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C9")
                    .with_leaf("NAME", "x"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Cannot update non-existing CUSTOMER with CUSTOMERID=C9."
    );

    // Delete by RECORDNO.
    let no = updated[0].text_at("RECORDNO").unwrap().to_owned();
    c.delete("c1-del", "CUSTOMER", &[&no]).await.unwrap();
    assert!(sim.records("CUSTOMER").is_empty());
    assert!(c.delete("c1-del-again", "CUSTOMER", &[&no]).await.is_err());
}

#[tokio::test]
async fn read_by_query_and_read_more_over_2500_customers() {
    let sim = sim().await;
    sim.insert(
        "CUSTOMER",
        (0..2_500)
            .map(|i| customer(&format!("C{i:05}"), &format!("Customer {i}")))
            .collect(),
    );
    let c = client(&sim);
    let mut pager = c.read_by_query("CUSTOMER", &["RECORDNO", "CUSTOMERID", "NAME"], "", 1_000);
    let before = sim.requests();
    let first = pager.next_page().await.unwrap().unwrap();
    let logins = sim.requests() - before;
    assert_eq!(logins, 2, "one getAPISession and the readByQuery");
    let mut all = first;
    let mut sizes = vec![all.len()];
    while let Some(page) = pager.next_page().await.unwrap() {
        sizes.push(page.len());
        all.extend(page);
    }
    assert_eq!(sizes, vec![1_000, 1_000, 500]);
    assert_eq!(
        sim.requests() - before,
        4,
        "getAPISession + exactly 3 data requests"
    );
    assert_eq!(sim.function_count("readByQuery"), 1);
    assert_eq!(sim.function_count("readMore"), 2);
    assert_eq!(all.len(), 2_500);
    assert!(
        all.iter()
            .all(|r| r.is("customer") && r.children.len() == 3)
    );
    let ids: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|r| r.text_at("CUSTOMERID").unwrap())
        .collect();
    assert_eq!(ids.len(), 2_500);

    // A filtered query.
    let one = c
        .read_by_query_all("CUSTOMER", &[], "CUSTOMERID = 'C00042'", 1_000)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].text_at("NAME"), Some("Customer 42"));

    // Page sizes outside 1..=1000 are refused before sending.
    let err = c
        .read_by_query("CUSTOMER", &[], "", 1_001)
        .next_page()
        .await
        .unwrap_err();
    assert!(matches!(err, IntacctError::Invalid(_)));
}

#[tokio::test]
async fn expired_result_id_is_intacct_read_more_failure() {
    let sim = sim().await;
    sim.insert(
        "CUSTOMER",
        (0..5).map(|i| customer(&format!("C{i}"), "n")).collect(),
    );
    let c = client(&sim);
    let mut pager = c.read_by_query("CUSTOMER", &[], "", 2);
    assert_eq!(pager.next_page().await.unwrap().unwrap().len(), 2);
    sim.expire_result_ids();
    let err = pager.next_page().await.unwrap_err();
    let (status, errors) = function_error(&err);
    assert_eq!(status, "failure");
    assert_eq!(errors[0].errorno, "readMore failed");
    assert!(
        errors[0]
            .description2
            .starts_with("Attempt to readMore with an invalid or expired resultId: "),
        "{err}"
    );
    let err = c
        .execute_one(Function::read_more("rm", "no-such-id"), Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Attempt to readMore with an invalid or expired resultId: no-such-id"
    );
}

#[tokio::test]
async fn query_with_equality_filter_and_offset_paging() {
    let sim = sim().await;
    sim.insert(
        "CUSTOMER",
        (0..25)
            .map(|i| {
                customer(&format!("C{i:02}"), "n")
                    .with_leaf("STATUS", if i % 5 == 0 { "inactive" } else { "active" })
            })
            .collect(),
    );
    let c = client(&sim);
    let mut q = Query {
        object: "CUSTOMER".into(),
        fields: vec!["CUSTOMERID".into(), "STATUS".into()],
        filters: vec![Condition::eq("STATUS", "active")],
        order_by: vec![("CUSTOMERID".into(), false)],
        pagesize: Some(8),
        offset: 0,
    };
    let mut seen = Vec::new();
    loop {
        let page = c.query(&q).await.unwrap();
        assert_eq!(page.totalcount, 20);
        assert_eq!(page.offset, q.offset);
        seen.extend(page.records.iter().map(|r| {
            assert!(r.is("CUSTOMER"));
            r.text_at("CUSTOMERID").unwrap().to_owned()
        }));
        if page.numremaining == 0 {
            break;
        }
        q.offset += page.records.len() as u64;
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[0], "C24");
    assert!(seen.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(sim.function_count("query"), 3);

    // Two equality filters (an `and`).
    q.filters.push(Condition::eq("CUSTOMERID", "C07"));
    q.offset = 0;
    let page = c.query(&q).await.unwrap();
    assert_eq!(page.records.len(), 1);
}

#[tokio::test]
async fn several_functions_fail_alone_without_a_transaction() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("seed", vec![customer("DUP", "Dup")])
        .await
        .unwrap();
    let fns = [
        Function::create("a", vec![customer("A1", "A")]),
        Function::create("b", vec![customer("DUP", "Dup again")]),
        Function::create("c", vec![customer("C1", "C")]),
        Function::read_by_query("d", "CUSTOMER", &["CUSTOMERID"], "", 100),
    ];
    let before = sim.requests();
    let results = c.execute(&fns, Options::default()).await.unwrap();
    assert_eq!(sim.requests() - before, 1, "one request for four functions");
    let statuses: Vec<ResultStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            ResultStatus::Success,
            ResultStatus::Failure,
            ResultStatus::Success,
            ResultStatus::Success
        ]
    );
    assert_eq!(
        results
            .iter()
            .map(|r| r.controlid.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(results[1].errors[0].errorno, "BL34000061");
    assert_eq!(results[3].records().len(), 3);
    assert_eq!(sim.records("CUSTOMER").len(), 3);
}

#[tokio::test]
async fn a_transaction_is_rolled_back_when_one_function_fails() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("seed", vec![customer("DUP", "Dup")])
        .await
        .unwrap();
    let fns = [
        Function::create("a", vec![customer("A1", "A")]),
        Function::create("b", vec![customer("DUP", "Dup again")]),
        Function::create("c", vec![customer("C1", "C")]),
    ];
    let opts = Options {
        transaction: true,
        uniqueid: true,
    };
    let results = c.execute(&fns, opts).await.unwrap();
    let statuses: Vec<ResultStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            ResultStatus::Aborted,
            ResultStatus::Failure,
            ResultStatus::Aborted
        ]
    );
    assert_eq!(results[0].errors[0].errorno, "XL03000009");
    assert_eq!(
        results[0].errors[0].description2,
        "The entire transaction in this operation has been rolled back due to an error."
    );
    let last = results[1].errors.last().unwrap();
    assert_eq!(last.errorno, "XL03000009");
    assert_eq!(
        sim.records("CUSTOMER").len(),
        1,
        "nothing of the operation stays"
    );
    // Rolled back functions did not complete: the same controlids may run again.
    let fixed = [
        Function::create("a", vec![customer("A1", "A")]),
        Function::create("b", vec![customer("B1", "B")]),
        Function::create("c", vec![customer("C1", "C")]),
    ];
    let results = c.execute(&fixed, opts).await.unwrap();
    assert!(results.iter().all(|r| r.status == ResultStatus::Success));
    assert_eq!(sim.records("CUSTOMER").len(), 4);
}

#[tokio::test]
async fn create_invoice_then_read_it_back_and_pay_it() {
    let sim = sim().await;
    let c = client(&sim);
    c.create(
        "cust-C-000095",
        vec![customer("C-000095", "Example Customer")],
    )
    .await
    .unwrap();
    let inv = NewInvoice {
        customer_id: "C-000095".into(),
        date_created: NaiveDate::from_ymd_opt(2021, 2, 18).unwrap(),
        date_due: NaiveDate::from_ymd_opt(2021, 3, 5),
        term_name: Some("N15".into()),
        invoice_no: Some("103729".into()),
        description: Some("Opportunity 006xx".into()),
        currency: Some("USD".into()),
        exch_rate_type: Some("Intacct Daily Rate".into()),
        lines: vec![
            InvoiceLine {
                gl_account_no: "4000".into(),
                amount: "20000.09".parse().unwrap(),
                memo: Some("Subscription".into()),
                location_id: None,
                department_id: None,
            },
            InvoiceLine {
                gl_account_no: "4010".into(),
                amount: "399.00".parse().unwrap(),
                memo: Some("Setup".into()),
                location_id: None,
                department_id: None,
            },
        ],
    };
    let key = c.create_invoice("inv-006xx-create", &inv).await.unwrap();
    let got = c.read("ARINVOICE", &[&key], &[]).await.unwrap();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(r.is("ARINVOICE"));
    assert_eq!(r.text_at("RECORDNO"), Some(key.as_str()));
    assert_eq!(r.text_at("RECORDID"), Some("103729"));
    assert_eq!(r.text_at("CUSTOMERNAME"), Some("Example Customer"));
    assert_eq!(r.text_at("WHENCREATED"), Some("02/18/2021"));
    assert_eq!(r.text_at("WHENDUE"), Some("03/05/2021"));
    let total: Decimal = r.text_at("TOTALENTERED").unwrap().parse().unwrap();
    assert_eq!(total, "20399.09".parse::<Decimal>().unwrap());
    assert_eq!(r.find("ARINVOICEITEMS").unwrap().children.len(), 2);

    // readByQuery sees it too, under the lowercase element name.
    let rows = c
        .read_by_query_all(
            "ARINVOICE",
            &["RECORDNO", "TOTALDUE"],
            "CUSTOMERID = 'C-000095'",
            100,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].is("arinvoice"));

    // An unknown customer is refused.
    let mut bad = inv.clone();
    bad.customer_id = "NOPE".into();
    bad.invoice_no = None;
    let err = c.create_invoice("inv-bad", &bad).await.unwrap_err();
    assert!(function_error(&err).1[0].description2.contains("NOPE"));

    // A minimal ARPYMT applied to it.
    let pay = Element::new("ARPYMT")
        .with_leaf("FINANCIALENTITY", "BOA")
        .with_leaf("PAYMENTMETHOD", "EFT")
        .with_leaf("CUSTOMERID", "C-000095")
        .with_leaf("RECEIPTDATE", "03/01/2021")
        .with(
            Element::new("ARPYMTDETAILS").with(
                Element::new("ARPYMTDETAIL")
                    .with_leaf("RECORDKEY", &key)
                    .with_leaf("TRX_PAYMENTAMOUNT", "399.00"),
            ),
        );
    let paid = c.create("pay-006xx-1", vec![pay]).await.unwrap();
    assert!(paid[0].is("arpymt"));
    let r = &c
        .read("ARINVOICE", &[&key], &["TOTALDUE", "TOTALPAID", "STATE"])
        .await
        .unwrap()[0];
    assert_eq!(
        r.text_at("TOTALDUE").unwrap().parse::<Decimal>().unwrap(),
        "20000.09".parse::<Decimal>().unwrap()
    );
    assert_eq!(r.text_at("STATE"), Some("Partially Paid"));
}

#[tokio::test]
async fn repeated_controlid_with_uniqueid_is_refused() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("sf-001xx-create-1", vec![customer("C1", "One")])
        .await
        .unwrap();
    // The answer was "lost"; the engine resends the identical write.
    let err = c
        .create("sf-001xx-create-1", vec![customer("C1", "One")])
        .await
        .unwrap_err();
    let (status, errors) = function_error(&err);
    assert_eq!(status, "failure");
    assert_eq!(errors[0].errorno, sim.config().duplicate_controlid_errorno);
    assert!(errors[0].description2.contains("sf-001xx-create-1"));
    assert_eq!(sim.records("CUSTOMER").len(), 1);
    // A failed function did not complete: its controlid can be used again.
    c.create(
        "sf-002xx-create-1",
        vec![Element::new("CUSTOMER").with_leaf("CUSTOMERID", "C2")],
    )
    .await
    .unwrap_err();
    c.create("sf-002xx-create-1", vec![customer("C2", "Two")])
        .await
        .unwrap();
    // Without uniqueid the controlid is not checked.
    let r = c
        .execute(
            &[Function::read("sf-001xx-create-1", "CUSTOMER", &["1"], &[])],
            Options::default(),
        )
        .await
        .unwrap();
    assert_eq!(r[0].status, ResultStatus::Success);
}

#[tokio::test]
async fn expired_session_means_one_new_login() {
    let sim = sim().await;
    let c = client(&sim);
    c.read_by_query_all("CUSTOMER", &[], "", 10).await.unwrap();
    assert_eq!(c.logins(), 1);
    sim.expire_sessions();
    let before = sim.requests();
    c.read_by_query_all("CUSTOMER", &[], "", 10).await.unwrap();
    assert_eq!(c.logins(), 2);
    assert_eq!(
        sim.requests() - before,
        3,
        "refused call, getAPISession, resent call"
    );
    assert_eq!(sim.function_count("getAPISession"), 2);

    // A configured session cannot be renewed: the refusal is returned.
    let mut cfg = config(&sim);
    cfg.auth = UserAuth::Session {
        session_id: Secret::new("stale.."),
        endpoint: None,
    };
    let err = IntacctClient::new(cfg)
        .unwrap()
        .read("CUSTOMER", &["1"], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, IntacctError::Authentication { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn http_faults_are_classified() {
    let sim = sim().await;
    let c = client(&sim);
    c.read("CUSTOMER", &["1"], &[]).await.unwrap();
    sim.fail_next(1, Fault::Status(503));
    let err = c.read("CUSTOMER", &["1"], &[]).await.unwrap_err();
    assert!(
        matches!(err, IntacctError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.retryable());
    sim.fail_next(1, Fault::Status(524));
    let err = c.read("CUSTOMER", &["1"], &[]).await.unwrap_err();
    assert!(
        matches!(err, IntacctError::Http { status: 524, .. }),
        "{err:?}"
    );
    assert!(!err.retryable());
    sim.fail_next(1, Fault::RateLimit);
    let err = c.read("CUSTOMER", &["1"], &[]).await.unwrap_err();
    assert!(err.retryable() && err.is_rate_limited(), "{err:?}");
    assert!(err.has_errorno("GW-0010"));
    // And then it works again.
    c.read("CUSTOMER", &["1"], &[]).await.unwrap();
}

#[tokio::test]
async fn at_most_two_requests_in_flight_per_company() {
    let sim = sim().await;
    let c = Arc::new(client(&sim));
    c.read("CUSTOMER", &["1"], &[]).await.unwrap();
    sim.set_latency_ms(50);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.read("CURRENCY", &["1"], &[]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    assert_eq!(sim.max_in_flight(), 2);
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    assert_eq!(sim.function_count("read"), 11);
}

// ---- the response parser against intacct-sdk-php fixtures ----

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/intacct/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn fixture_get_api_session() {
    let Response::Operation {
        authentication,
        results,
    } = parse_response(&fixture("getapisession_success.xml")).unwrap()
    else {
        panic!("expected an operation");
    };
    assert_eq!(authentication.userid, "fakeuser");
    assert_eq!(authentication.sessiontimeout, "2015-10-23T20:58:27-07:00");
    assert_eq!(results[0].function, "getAPISession");
    assert_eq!(results[0].status, ResultStatus::Success);
    let api = results[0].data.as_ref().unwrap().child("api").unwrap();
    assert_eq!(api.text_at("sessionid"), Some("fAkESesSiOnId.."));
    assert_eq!(
        api.text_at("endpoint"),
        Some("https://api.intacct.com/ia/xml/xmlgw.phtml")
    );
}

#[test]
fn fixture_failures_at_each_level() {
    let Response::ControlFailure(errors) = parse_response(&fixture("control_failure.xml")).unwrap()
    else {
        panic!("expected a control failure");
    };
    assert_eq!(errors[0].errorno, "PL04000055");
    assert_eq!(
        errors[0].description2,
        "This company is a demo company and has expired."
    );

    let Response::AuthenticationFailure(errors) =
        parse_response(&fixture("authentication_failure.xml")).unwrap()
    else {
        panic!("expected an authentication failure");
    };
    assert_eq!(errors[0].errorno, "XL03000006");
    assert_eq!(errors[0].description2, "Sign-in information is incorrect");

    let Response::Operation { results, .. } =
        parse_response(&fixture("transaction_rolled_back.xml")).unwrap()
    else {
        panic!("expected an operation");
    };
    assert_eq!(results[0].status, ResultStatus::Aborted);
    assert_eq!(results[0].controlid, "func1UnitTest");
    assert_eq!(results[1].status, ResultStatus::Failure);
    assert_eq!(results[1].errors.len(), 2);
    assert_eq!(results[1].errors[0].errorno, "Get API Session Failed");
    assert_eq!(results[1].errors[1].errorno, "XL03000009");
}

#[test]
fn fixture_read_by_query_page() {
    let Response::Operation { results, .. } =
        parse_response(&fixture("read_by_query_class.xml")).unwrap()
    else {
        panic!("expected an operation");
    };
    let r = &results[0];
    assert_eq!(r.data_count("totalcount"), Some(2));
    assert_eq!(r.data_count("numremaining"), Some(1));
    assert_eq!(
        r.data.as_ref().unwrap().attr("resultid"),
        Some("myResultId")
    );
    assert_eq!(r.records().len(), 1);
    assert!(r.records()[0].is("CLASS"));
    assert_eq!(r.records()[0].text_at("classid"), Some("C1234"));
    assert_eq!(r.records()[0].text_at("DESCRIPTION"), Some(""));
}

#[test]
fn malformed_responses_are_errors() {
    assert!(parse_response("<html>502</html>").is_err());
    assert!(
        parse_response("<response><control><status>success</status></control></response>").is_err()
    );
}

// ---- requests against the SDK's request fixtures, element by element ----

#[track_caller]
fn check_request(built: &Element, fixture_name: &str) {
    let expected =
        sync::intacct::xml::parse(&fixture(&format!("requests/{fixture_name}"))).unwrap();
    assert_eq!(
        built,
        &expected,
        "\nbuilt:    {}\nexpected: {}",
        built.to_xml(),
        expected.to_xml()
    );
}

#[test]
fn functions_are_written_as_the_sdk_writes_them() {
    check_request(
        &Function::read_by_query("unittest", "CLASS", &[], "RECORDNO < 2", 1_000).to_element(),
        "read_by_query.xml",
    );
    check_request(
        &Function::read_more("unittest", "6465763031VyprCMCoHYQAAGr@aRsAAAAU4").to_element(),
        "read_more.xml",
    );
    check_request(
        &Function::read("unittest", "CLASS", &[], &[]).to_element(),
        "read.xml",
    );
    check_request(
        &Function::query(
            "unittest",
            &Query {
                object: "ARINVOICE".into(),
                fields: vec!["CUSTOMERID".into(), "RECORDNO".into()],
                order_by: vec![("TOTALDUE".into(), true), ("RECORDNO".into(), false)],
                ..Query::default()
            },
        )
        .to_element(),
        "query_order_by.xml",
    );
    check_request(
        &Function::query(
            "unittest",
            &Query {
                object: "ARINVOICE".into(),
                fields: vec!["CUSTOMERID".into(), "RECORDNO".into()],
                filters: vec![
                    Condition::new("RECORDNO", Compare::GreaterThanOrEqualTo, "1"),
                    Condition::new("RECORDNO", Compare::LessThanOrEqualTo, "100"),
                ],
                ..Query::default()
            },
        )
        .to_element(),
        "query_filter_and.xml",
    );
    check_request(
        &Function::create(
            "unittest",
            vec![
                Element::new("CONTACT")
                    .with_leaf("CONTACTNAME", "hello")
                    .with_leaf("PRINTAS", "world"),
            ],
        )
        .to_element(),
        "contact_create.xml",
    );
    let invoice = NewInvoice {
        customer_id: "CUSTOMER1".into(),
        date_created: NaiveDate::from_ymd_opt(2015, 6, 30).unwrap(),
        date_due: None,
        term_name: Some("N30".into()),
        invoice_no: None,
        description: None,
        currency: None,
        exch_rate_type: None,
        lines: vec![InvoiceLine {
            gl_account_no: String::new(),
            amount: "76343.43".parse().unwrap(),
            memo: None,
            location_id: None,
            department_id: None,
        }],
    };
    check_request(
        &Function::create_invoice("unittest", &invoice).to_element(),
        "create_invoice.xml",
    );
    check_request(
        &Function::get_api_session("unittest", Some("100")).to_element(),
        "get_api_session.xml",
    );
}

#[test]
fn envelope_and_login_are_written_as_the_sdk_writes_them() {
    use sync::intacct::client::{login_element, request_document};
    let doc = request_document(
        "testsenderid",
        &Secret::new("pass123!"),
        "unittest",
        Element::leaf("sessionid", "testsession.."),
        &[],
        Options::default(),
    );
    check_request(
        &sync::intacct::xml::parse(&doc).unwrap(),
        "request_block.xml",
    );
    let login = login_element(
        "testuser",
        "testcompany",
        &Secret::new("testpass"),
        Some("testentity"),
    );
    check_request(
        &Element::new("authentication").with(login),
        "login_with_entity.xml",
    );
}

#[tokio::test]
async fn gateway_401_unparsable_request_and_transport_errors() {
    let sim = sim().await;
    let c = client(&sim);
    sim.fail_next(1, Fault::GatewaySignIn);
    let err = c.read("CUSTOMER", &["1"], &[]).await.unwrap_err();
    let IntacctError::Http {
        status: 401,
        errors,
    } = &err
    else {
        panic!("expected HTTP 401, got {err:?}");
    };
    assert_eq!(errors[0].errorno, "XMLGW_JPP0002");
    assert_eq!(
        errors[0].description,
        "Sign-in information is incorrect. Please check your request."
    );
    assert!(!err.retryable());

    // A document that is not XML is a control failure.
    let body = gateway::http::client()
        .post(sim.endpoint_url())
        .body("<request><control>")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let Response::ControlFailure(errors) = parse_response(&body).unwrap() else {
        panic!("expected a control failure: {body}");
    };
    assert_eq!(errors[0].errorno, "XL03000003");

    // An unknown function fails alone.
    let r = c
        .execute(
            &[
                Function::new("x", Element::new("frobnicate")),
                Function::read("y", "CURRENCY", &["1"], &[]),
            ],
            Options::default(),
        )
        .await
        .unwrap();
    assert_eq!(r[0].status, ResultStatus::Failure);
    assert_eq!(r[1].status, ResultStatus::Success);

    // No server: a retryable transport error.
    let url = sim.endpoint_url();
    drop(sim);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut cfg = IntacctConfig::new(
        "s",
        Secret::new("p"),
        "c",
        UserAuth::Session {
            session_id: Secret::new("x"),
            endpoint: None,
        },
    );
    cfg.endpoint_url = url;
    cfg.timeout_ms = 2_000;
    let err = IntacctClient::new(cfg)
        .unwrap()
        .read("CUSTOMER", &["1"], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, IntacctError::Transport { .. }), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn change_capture_by_whenmodified_and_recordno() {
    let sim = sim().await;
    let c = client(&sim);
    sim.insert(
        "CUSTOMER",
        (0..6).map(|i| customer(&format!("C{i}"), "n")).collect(),
    );
    let all = c
        .read_by_query_all("CUSTOMER", &["RECORDNO", "WHENMODIFIED"], "", 100)
        .await
        .unwrap();
    let third: u64 = all[2].text_at("RECORDNO").unwrap().parse().unwrap();
    let after = c
        .read_by_query_all(
            "CUSTOMER",
            &["RECORDNO"],
            &format!("RECORDNO > {third}"),
            100,
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 3);
    let stamp = all
        .iter()
        .map(|r| r.text_at("WHENMODIFIED").unwrap().to_owned())
        .max()
        .unwrap();
    let q = |op: &str| format!("WHENMODIFIED {op} '{stamp}'");
    assert_eq!(
        c.read_by_query_all("CUSTOMER", &[], &q(">="), 100)
            .await
            .unwrap()
            .len(),
        6
    );
    assert!(
        c.read_by_query_all("CUSTOMER", &[], &q(">"), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let old = "WHENMODIFIED > '01/01/2000 00:00:00' AND STATUS != 'inactive'";
    assert_eq!(
        c.read_by_query_all("CUSTOMER", &[], old, 100)
            .await
            .unwrap()
            .len(),
        0,
        "no STATUS field: no match"
    );

    // The query function with comparison filters and numeric ordering.
    let page = c
        .query(&Query {
            object: "CUSTOMER".into(),
            fields: vec!["RECORDNO".into()],
            filters: vec![Condition::new(
                "RECORDNO",
                Compare::GreaterThan,
                third.to_string(),
            )],
            order_by: vec![("RECORDNO".into(), false)],
            ..Query::default()
        })
        .await
        .unwrap();
    let nos: Vec<u64> = page
        .records
        .iter()
        .map(|e| e.text_at("RECORDNO").unwrap().parse().unwrap())
        .collect();
    assert_eq!(nos, vec![third + 3, third + 2, third + 1]);
}

// ---- simulator scale: natural-key index and undo log ----

#[tokio::test]
async fn twenty_thousand_customers_in_batches_stay_fast_and_unique() {
    let sim = sim().await;
    let c = client(&sim);
    let opts = Options {
        transaction: false,
        uniqueid: true,
    };
    let started = std::time::Instant::now();
    // 40 requests × 10 functions × 50 customers.
    for req in 0..40 {
        let functions: Vec<Function> = (0..10)
            .map(|f| {
                let records = (0..50)
                    .map(|i| {
                        let n = req * 500 + f * 50 + i;
                        customer(&format!("C{n:05}"), &format!("Customer {n}"))
                    })
                    .collect();
                Function::create(format!("bulk-{req}-{f}"), records)
            })
            .collect();
        let results = c.execute(&functions, opts).await.unwrap();
        assert!(
            results.iter().all(|r| r.status == ResultStatus::Success),
            "{results:?}"
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(sim.records("CUSTOMER").len(), 20_000);
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "20,000 creates took {elapsed:?}"
    );
    // Duplicates are still refused, in a batch with a good record: only that function fails
    // and its good record is rolled back with it.
    let err = c
        .create(
            "bulk-dup",
            vec![customer("NEW1", "New"), customer("C12345", "Again")],
        )
        .await
        .unwrap_err();
    let (_, errors) = function_error(&err);
    assert_eq!(errors[0].errorno, "BL34000061");
    assert_eq!(
        errors[0].description2,
        "Another Customer with the given value(s) C12345  already exists"
    );
    assert_eq!(sim.records("CUSTOMER").len(), 20_000);
    // The rolled back key is free again, and the index finds a key by readByQuery.
    c.create("bulk-new1", vec![customer("NEW1", "New")])
        .await
        .unwrap();
    let rows = c
        .read_by_query_all(
            "CUSTOMER",
            &["RECORDNO", "NAME"],
            "CUSTOMERID = 'C19999'",
            100,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text_at("NAME"), Some("Customer 19999"));
    // Renaming a key moves it in the index: the old id is free, the new one taken.
    c.update(
        "bulk-rename",
        vec![
            Element::new("CUSTOMER")
                .with_leaf("RECORDNO", rows[0].text_at("RECORDNO").unwrap())
                .with_leaf("CUSTOMERID", "C19999-R"),
        ],
    )
    .await
    .unwrap();
    c.create("bulk-reuse", vec![customer("C19999", "Reused")])
        .await
        .unwrap();
    let err = c
        .create("bulk-dup-2", vec![customer("C19999-R", "Dup")])
        .await
        .unwrap_err();
    assert_eq!(function_error(&err).1[0].errorno, "BL34000061");
}

// ---- legacy transaction requests against the SDK's fixtures ----

/// Compares a built function with a fixture's text (copied verbatim from intacct-sdk-php
/// `test/Intacct/Functions/…`, named at each constant).
#[track_caller]
fn check_request_text(built: &Element, fixture_xml: &str) {
    let expected = sync::intacct::xml::parse(fixture_xml).unwrap();
    assert_eq!(
        built,
        &expected,
        "\nbuilt:    {}\nexpected: {}",
        built.to_xml(),
        expected.to_xml()
    );
}

/// `OrderEntry/OrderEntryTransactionCreateTest/testDefaultParams.xml`.
const SOTRANSACTION_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<function controlid="unittest">
    <create_sotransaction>
        <transactiontype>Sales Order</transactiontype>
        <datecreated>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </datecreated>
        <customerid>2530</customerid>
        <sotransitems>
            <sotransitem>
                <itemid>02354032</itemid>
                <quantity>1200</quantity>
            </sotransitem>
        </sotransitems>
    </create_sotransaction>
</function>"#;

/// `AccountsReceivable/ArPaymentCreateTest/testDefaultParams.xml`.
const ARPAYMENT_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<function controlid="unittest">
    <create_arpayment>
        <customerid>C0020</customerid>
        <paymentamount>1922.12</paymentamount>
        <batchkey>123</batchkey>
        <datereceived>
            <year>2016</year>
            <month>06</month>
            <day>30</day>
        </datereceived>
        <paymentmethod>Printed Check</paymentmethod>
    </create_arpayment>
</function>"#;

/// `AccountsReceivable/ArPaymentItemTest/testDefaultParams.xml`.
const ARPAYMENTITEM_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<arpaymentitem>
    <invoicekey>1234</invoicekey>
    <amount>1023.45</amount>
</arpaymentitem>"#;

/// `AccountsReceivable/ArAdjustmentCreateTest/testDefaultParams.xml`.
const ARADJUSTMENT_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<function controlid="unittest">
    <create_aradjustment>
        <customerid>CUSTOMER1</customerid>
        <datecreated>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </datecreated>
        <aradjustmentitems>
            <lineitem>
                <glaccountno/>
                <amount>76343.43</amount>
            </lineitem>
        </aradjustmentitems>
    </create_aradjustment>
</function>"#;

/// `AccountsReceivable/ArAdjustmentCreateTest/testParamOverrides.xml`.
const ARADJUSTMENT_OVERRIDES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<function controlid="unittest">
    <create_aradjustment>
        <customerid>CUSTOMER1</customerid>
        <datecreated>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </datecreated>
        <dateposted>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </dateposted>
        <batchkey>20323</batchkey>
        <adjustmentno>234235</adjustmentno>
        <action>Submit</action>
        <invoiceno>234</invoiceno>
        <description>Some description</description>
        <externalid>20394</externalid>
        <basecurr>USD</basecurr>
        <currency>USD</currency>
        <exchratedate>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </exchratedate>
        <exchratetype>Intacct Daily Rate</exchratetype>
        <nogl>false</nogl>
        <aradjustmentitems>
            <lineitem>
                <glaccountno></glaccountno>
                <amount>76343.43</amount>
            </lineitem>
        </aradjustmentitems>
    </create_aradjustment>
</function>"#;

/// `AccountsPayable/BillCreateTest/testDefaultParams.xml`.
const BILL_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<function controlid="unittest">
    <create_bill>
        <vendorid>VENDOR1</vendorid>
        <datecreated>
            <year>2015</year>
            <month>06</month>
            <day>30</day>
        </datecreated>
        <termname>N30</termname>
        <billitems>
            <lineitem>
                <glaccountno/>
                <amount>76343.43</amount>
            </lineitem>
        </billitems>
    </create_bill>
</function>"#;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn gl_line(account: &str, amount: &str) -> InvoiceLine {
    InvoiceLine {
        gl_account_no: account.into(),
        amount: dec(amount),
        memo: None,
        location_id: None,
        department_id: None,
    }
}

fn so_line(item: &str, quantity: &str, price: Option<&str>) -> SalesTransactionLine {
    SalesTransactionLine {
        item_id: item.into(),
        quantity: dec(quantity),
        unit: None,
        price: price.map(dec),
        location_id: None,
        department_id: None,
        memo: None,
    }
}

fn sales_tx(
    definition: &str,
    customer: &str,
    lines: Vec<SalesTransactionLine>,
) -> NewSalesTransaction {
    NewSalesTransaction {
        transaction_type: definition.into(),
        date_created: d(2024, 3, 1),
        created_from: None,
        customer_id: customer.into(),
        document_no: None,
        reference_no: None,
        term_name: None,
        date_due: None,
        message: None,
        currency: LegacyCurrency::default(),
        state: None,
        lines,
    }
}

fn ar_payment(customer: &str, amount: &str, items: &[(&str, &str)]) -> NewArPayment {
    NewArPayment {
        customer_id: customer.into(),
        payment_amount: dec(amount),
        batch_key: None,
        translated_amount: None,
        deposit: None,
        ref_id: None,
        overpay_location_id: None,
        overpay_department_id: None,
        date_received: d(2024, 3, 15),
        payment_method: "EFT".into(),
        currency: LegacyCurrency::default(),
        cc_type: None,
        auth_code: None,
        items: items
            .iter()
            .map(|(k, a)| ArPaymentItem {
                invoice_key: (*k).into(),
                amount: dec(a),
            })
            .collect(),
    }
}

fn adjustment(customer: &str, lines: Vec<InvoiceLine>) -> NewArAdjustment {
    NewArAdjustment {
        customer_id: customer.into(),
        date_created: d(2024, 3, 20),
        date_posted: None,
        batch_key: None,
        adjustment_no: None,
        action: None,
        invoice_no: None,
        description: None,
        external_id: None,
        currency: LegacyCurrency::default(),
        no_gl: None,
        lines,
    }
}

fn invoice(customer: &str, number: Option<&str>, amounts: &[&str]) -> NewInvoice {
    NewInvoice {
        customer_id: customer.into(),
        date_created: d(2024, 3, 1),
        date_due: None,
        term_name: None,
        invoice_no: number.map(str::to_owned),
        description: None,
        currency: None,
        exch_rate_type: None,
        lines: amounts.iter().map(|a| gl_line("4000", a)).collect(),
    }
}

fn item(id: &str, name: &str, price: &str) -> Element {
    Element::new("ITEM")
        .with_leaf("ITEMID", id)
        .with_leaf("NAME", name)
        .with_leaf("ITEMTYPE", "Non-Inventory")
        .with_leaf("BASEPRICE", price)
}

/// Amount field of a record as a decimal.
#[track_caller]
fn amount(r: &Element, f: &str) -> Decimal {
    r.text_at(f)
        .unwrap_or_else(|| panic!("no {f} in {}", r.to_xml()))
        .parse()
        .unwrap()
}

/// A legacy create's two-error answer: the rule, then "Could not create {label} record!".
#[track_caller]
fn check_could_not(err: &IntacctError, errorno: &str, description2: &str, label: &str) {
    let (status, errors) = function_error(err);
    assert_eq!(status, "failure");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].errorno, errorno);
    assert_eq!(errors[0].description2, description2);
    assert_eq!(errors[1].errorno, "BL01001973");
    assert_eq!(
        errors[1].description2,
        format!("Could not create {label} record!")
    );
    assert!(!err.retryable());
}

#[test]
fn legacy_transactions_are_written_as_the_sdk_writes_them() {
    let tx = NewSalesTransaction {
        date_created: d(2015, 6, 30),
        ..sales_tx(
            "Sales Order",
            "2530",
            vec![so_line("02354032", "1200", None)],
        )
    };
    check_request_text(
        &Function::create_sotransaction("unittest", &tx).to_element(),
        SOTRANSACTION_DEFAULT,
    );

    let p = NewArPayment {
        batch_key: Some("123".into()),
        date_received: d(2016, 6, 30),
        payment_method: "Printed Check".into(),
        ..ar_payment("C0020", "1922.12", &[])
    };
    check_request_text(
        &Function::create_arpayment("unittest", &p).to_element(),
        ARPAYMENT_DEFAULT,
    );
    check_request_text(
        &ArPaymentItem {
            invoice_key: "1234".into(),
            amount: dec("1023.45"),
        }
        .to_element(),
        ARPAYMENTITEM_DEFAULT,
    );
    // With every optional field, the order is ArPaymentCreate's.
    let full = NewArPayment {
        translated_amount: Some(dec("1900.00")),
        deposit: Some(PaymentDeposit::BankAccount("BOA".into())),
        ref_id: Some("CHK-1".into()),
        overpay_location_id: Some("100".into()),
        overpay_department_id: Some("D1".into()),
        currency: LegacyCurrency {
            base_currency: Some("USD".into()),
            currency: Some("USD".into()),
            exch_rate_date: Some(d(2016, 6, 30)),
            exchange: Some(Exchange::Rate(dec("1.0"))),
        },
        cc_type: Some("VI".into()),
        auth_code: Some("A1".into()),
        ..ar_payment("C0020", "1922.12", &[("1234", "1023.45")])
    };
    let names: Vec<String> = Function::create_arpayment("u", &full)
        .body
        .children
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "customerid",
            "paymentamount",
            "translatedamount",
            "bankaccountid",
            "refid",
            "overpaylocid",
            "overpaydeptid",
            "datereceived",
            "paymentmethod",
            "basecurr",
            "currency",
            "exchratedate",
            "exchrate",
            "cctype",
            "authcode",
            "arpaymentitem"
        ]
    );

    let a = NewArAdjustment {
        date_created: d(2015, 6, 30),
        ..adjustment("CUSTOMER1", vec![gl_line("", "76343.43")])
    };
    check_request_text(
        &Function::create_aradjustment("unittest", &a).to_element(),
        ARADJUSTMENT_DEFAULT,
    );
    let a = NewArAdjustment {
        date_posted: Some(d(2015, 6, 30)),
        batch_key: Some("20323".into()),
        adjustment_no: Some("234235".into()),
        action: Some("Submit".into()),
        invoice_no: Some("234".into()),
        description: Some("Some description".into()),
        external_id: Some("20394".into()),
        currency: LegacyCurrency {
            base_currency: Some("USD".into()),
            currency: Some("USD".into()),
            exch_rate_date: Some(d(2015, 6, 30)),
            exchange: Some(Exchange::RateType("Intacct Daily Rate".into())),
        },
        no_gl: Some(false),
        ..a
    };
    check_request_text(
        &Function::create_aradjustment("unittest", &a).to_element(),
        ARADJUSTMENT_OVERRIDES,
    );

    let bill = NewBill {
        vendor_id: "VENDOR1".into(),
        date_created: d(2015, 6, 30),
        date_due: None,
        term_name: Some("N30".into()),
        bill_no: None,
        po_number: None,
        description: None,
        currency: LegacyCurrency::default(),
        lines: vec![gl_line("", "76343.43")],
    };
    check_request_text(
        &Function::create_bill("unittest", &bill).to_element(),
        BILL_DEFAULT,
    );
}

// ---- Order Entry ----

async fn seed_sales(c: &IntacctClient) {
    c.create(
        "seed-cust",
        vec![customer("C1", "Acme"), customer("C2", "Globex")],
    )
    .await
    .unwrap();
    c.create(
        "seed-items",
        vec![item("I1", "Widget", "10.00"), item("I2", "Gadget", "2.50")],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn sales_orders_are_numbered_readable_and_validated() {
    let sim = sim().await;
    let c = client(&sim);
    seed_sales(&c).await;
    let mut tx = sales_tx(
        "Sales Order",
        "C1",
        vec![so_line("I1", "3", None), so_line("I2", "2", Some("4.25"))],
    );
    tx.reference_no = Some("PO-778".into());
    let key = c.create_sotransaction("so-1", &tx).await.unwrap();
    assert_eq!(key, "Sales Order-SO-00001");
    let key2 = c.create_sotransaction("so-2", &tx).await.unwrap();
    assert_eq!(key2, "Sales Order-SO-00002");

    let rows = c
        .read_by_query_all("SODOCUMENT", &[], &format!("DOCID = '{key}'"), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(r.is("sodocument"));
    assert_eq!(r.text_at("DOCNO"), Some("SO-00001"));
    assert_eq!(r.text_at("DOCPARID"), Some("Sales Order"));
    assert_eq!(r.text_at("CUSTVENDID"), Some("C1"));
    assert_eq!(r.text_at("STATE"), Some("Pending"));
    assert_eq!(r.text_at("PONUMBER"), Some("PO-778"));
    assert_eq!(r.text_at("CURRENCY"), Some("USD"));
    assert_eq!(r.text_at("BASECURR"), Some("USD"));
    assert_eq!(r.text_at("PRRECORDKEY"), Some(""));
    assert_eq!(amount(r, "TRX_TOTAL"), dec("38.50"));
    assert_eq!(amount(r, "TOTAL"), dec("38.50"));
    let lines: Vec<&Element> = r
        .find("SODOCUMENTENTRIES")
        .unwrap()
        .children
        .iter()
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].text_at("LINE_NO"), Some("0"));
    assert_eq!(
        amount(lines[0], "TRX_PRICE"),
        dec("10.00"),
        "the item's price"
    );
    assert_eq!(amount(lines[1], "TRX_VALUE"), dec("8.50"));
    assert!(r.text_at("WHENMODIFIED").is_some());
    // read and query see it too; no Sales Order posts to AR.
    let no = r.text_at("RECORDNO").unwrap();
    let read = c.read("SODOCUMENT", &[no], &["DOCID"]).await.unwrap();
    assert_eq!(read[0].text_at("DOCID"), Some(key.as_str()));
    let page = c
        .query(&Query {
            object: "SODOCUMENT".into(),
            fields: vec!["DOCID".into()],
            filters: vec![Condition::eq("CUSTVENDID", "C1")],
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(page.totalcount, 2);
    assert!(sim.records("ARINVOICE").is_empty());

    // An explicit number; the same number again in the same definition is a duplicate, in
    // another definition it is not.
    tx.document_no = Some("SO-00077".into());
    assert_eq!(
        c.create_sotransaction("so-77", &tx).await.unwrap(),
        "Sales Order-SO-00077"
    );
    let err = c
        .create_sotransaction("so-77-again", &tx)
        .await
        .unwrap_err();
    check_could_not(
        &err,
        "BL34000061",
        "Another document with the given value(s) Sales Order-SO-00077  already exists",
        "Document",
    );
    assert_eq!(
        function_error(&err).1[0].correction,
        "Use a unique value instead."
    );
    let mut quote = tx.clone();
    quote.transaction_type = "Sales Quote".into();
    assert_eq!(
        c.create_sotransaction("sq-77", &quote).await.unwrap(),
        "Sales Quote-SO-00077"
    );

    // Validation.
    let cases: Vec<(NewSalesTransaction, &str)> = vec![
        (
            sales_tx("Sales Order", "NOPE", vec![so_line("I1", "1", None)]),
            "Invalid Customer NOPE specified.",
        ),
        (
            sales_tx("Sales Order", "C1", vec![so_line("NOITEM", "1", None)]),
            "Line 1: Invalid Item NOITEM specified.",
        ),
        (
            sales_tx("Sales Order", "C1", vec![]),
            "A transaction needs at least one line item",
        ),
        (
            sales_tx(
                "Sales Order",
                "C1",
                vec![so_line("I1", "1", None), so_line("I2", "0", None)],
            ),
            "Line 2: Invalid quantity 0",
        ),
        (
            sales_tx("Sales Order", "C1", vec![so_line("I1", "1", Some("-1"))]),
            "Line 1: Invalid price -1",
        ),
        (
            NewSalesTransaction {
                currency: LegacyCurrency {
                    currency: Some("XYZ".into()),
                    ..LegacyCurrency::default()
                },
                ..sales_tx("Sales Order", "C1", vec![so_line("I1", "1", None)])
            },
            "Invalid currency XYZ",
        ),
        (
            sales_tx("Purchase Order", "C1", vec![so_line("I1", "1", None)]),
            "Invalid transaction definition Purchase Order",
        ),
    ];
    for (i, (bad, text)) in cases.iter().enumerate() {
        let err = c
            .create_sotransaction(&format!("so-bad-{i}"), bad)
            .await
            .unwrap_err();
        check_could_not(&err, "BL01001973", text, "Document");
    }
    assert_eq!(sim.records("SODOCUMENT").len(), 4);
    // Failed creates did not use up numbers.
    tx.document_no = None;
    assert_eq!(
        c.create_sotransaction("so-3", &tx).await.unwrap(),
        "Sales Order-SO-00003"
    );
}

#[tokio::test]
async fn a_sales_invoice_posts_a_linked_ar_invoice_once() {
    let sim = sim().await;
    let c = client(&sim);
    seed_sales(&c).await;
    let tx = sales_tx(
        "Sales Invoice",
        "C2",
        vec![so_line("I1", "2", None), so_line("I2", "1", Some("5"))],
    );
    let key = c.create_sotransaction("si-1", &tx).await.unwrap();
    assert_eq!(key, "Sales Invoice-INV-00001");
    // The same controlid again (uniqueid=true): refused, nothing created twice.
    let err = c.create_sotransaction("si-1", &tx).await.unwrap_err();
    assert_eq!(
        function_error(&err).1[0].errorno,
        sim.config().duplicate_controlid_errorno
    );
    assert_eq!(sim.records("SODOCUMENT").len(), 1);
    assert_eq!(sim.records("ARINVOICE").len(), 1);

    let doc = &c
        .read_by_query_all("SODOCUMENT", &[], &format!("DOCID = '{key}'"), 10)
        .await
        .unwrap()[0];
    let prkey = doc.text_at("PRRECORDKEY").unwrap();
    assert!(!prkey.is_empty());
    let inv = &c.read("ARINVOICE", &[prkey], &[]).await.unwrap()[0];
    assert_eq!(inv.text_at("RECORDID"), Some("INV-00001"));
    assert_eq!(inv.text_at("MODULEKEY"), Some("8.SO"));
    assert_eq!(inv.text_at("CUSTOMERID"), Some("C2"));
    assert_eq!(inv.text_at("STATE"), Some("Posted"));
    assert_eq!(amount(inv, "TRX_TOTALENTERED"), dec("25.00"));
    assert_eq!(amount(inv, "TOTALDUE"), dec("25.00"));
    assert_eq!(inv.find("ARINVOICEITEMS").unwrap().children.len(), 2);

    // Paid in full through create_arpayment: Paid, and the change is visible by WHENMODIFIED.
    let stamp = inv.text_at("WHENMODIFIED").unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    c.create_arpayment("si-1-pay", &ar_payment("C2", "25.00", &[(prkey, "25.00")]))
        .await
        .unwrap();
    let changed = c
        .read_by_query_all(
            "ARINVOICE",
            &["RECORDNO", "STATE", "TOTALDUE", "TRX_TOTALPAID", "WHENPAID"],
            &format!("WHENMODIFIED > '{stamp}'"),
            100,
        )
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].text_at("STATE"), Some("Paid"));
    assert_eq!(amount(&changed[0], "TOTALDUE"), Decimal::ZERO);
    assert_eq!(amount(&changed[0], "TRX_TOTALPAID"), dec("25.00"));
    assert_eq!(changed[0].text_at("WHENPAID"), Some("03/15/2024"));
}

// ---- currencies ----

#[tokio::test]
async fn a_eur_invoice_in_entity_uk_has_gbp_base_amounts() {
    let sim = sim().await;
    let mut cfg = config(&sim);
    cfg.entity = Some("UK".into());
    let c = IntacctClient::new(cfg).unwrap();
    c.create("uk-cust", vec![customer("EU1", "Euro GmbH")])
        .await
        .unwrap();
    let mut inv = invoice("EU1", Some("UK-1"), &["1000.00", "234.56"]);
    inv.currency = Some("EUR".into());
    inv.exch_rate_type = Some("Intacct Daily Rate".into());
    let key = c.create_invoice("uk-inv-1", &inv).await.unwrap();
    let r = &c.read("ARINVOICE", &[&key], &[]).await.unwrap()[0];
    assert_eq!(r.text_at("CURRENCY"), Some("EUR"));
    assert_eq!(r.text_at("BASECURR"), Some("GBP"));
    assert_eq!(r.text_at("EXCH_RATE_TYPE_ID"), Some("Intacct Daily Rate"));
    assert_eq!(r.text_at("EXCH_RATE_DATE"), Some("03/01/2024"));
    assert_eq!(amount(r, "EXCHANGE_RATE"), dec("0.85"));
    assert_eq!(amount(r, "TRX_TOTALENTERED"), dec("1234.56"));
    assert_eq!(amount(r, "TRX_TOTALDUE"), dec("1234.56"));
    // 1234.56 × 0.85 = 1049.376 → 1049.38 (cents, half away from zero).
    assert_eq!(r.text_at("TOTALENTERED"), Some("1049.38"));
    assert_eq!(r.text_at("TOTALDUE"), Some("1049.38"));
    assert_eq!(amount(r, "TOTALPAID"), Decimal::ZERO);

    // A partial payment in EUR moves TRX_ amounts; base follows at the invoice's rate.
    let mut pay = ar_payment("EU1", "234.56", &[(&key, "234.56")]);
    pay.currency.currency = Some("EUR".into());
    pay.ref_id = Some("SEPA-1".into());
    let pkey = c.create_arpayment("uk-pay-1", &pay).await.unwrap();
    let r = &c.read("ARINVOICE", &[&key], &[]).await.unwrap()[0];
    assert_eq!(r.text_at("STATE"), Some("Partially Paid"));
    assert_eq!(amount(r, "TRX_TOTALPAID"), dec("234.56"));
    assert_eq!(amount(r, "TRX_TOTALDUE"), dec("1000.00"));
    assert_eq!(r.text_at("TOTALPAID"), Some("199.38"));
    assert_eq!(r.text_at("TOTALDUE"), Some("850.00"));
    let p = &c.read("ARPYMT", &[&pkey], &[]).await.unwrap()[0];
    assert_eq!(p.text_at("CURRENCY"), Some("EUR"));
    assert_eq!(p.text_at("BASECURR"), Some("GBP"));
    assert_eq!(p.text_at("TOTALENTERED"), Some("199.38"));

    // A payment in the base currency against the EUR invoice is refused.
    let err = c
        .create_arpayment(
            "uk-pay-gbp",
            &ar_payment("EU1", "10.00", &[(&key, "10.00")]),
        )
        .await
        .unwrap_err();
    check_could_not(
        &err,
        "BL01001973",
        &format!("The payment currency GBP does not match the currency EUR of invoice {key}"),
        "Payment",
    );

    // The rest in EUR: Paid, no base residue.
    let mut rest = ar_payment("EU1", "1000.00", &[(&key, "1000.00")]);
    rest.currency.currency = Some("EUR".into());
    c.create_arpayment("uk-pay-2", &rest).await.unwrap();
    let r = &c.read("ARINVOICE", &[&key], &[]).await.unwrap()[0];
    assert_eq!(r.text_at("STATE"), Some("Paid"));
    assert_eq!(r.text_at("TOTALPAID"), Some("1049.38"));
    assert_eq!(amount(r, "TOTALDUE"), Decimal::ZERO);

    // The table can change; an explicit exchrate wins over it.
    sim.set_rate("EUR", "GBP", dec("0.9"));
    let mut inv2 = invoice("EU1", Some("UK-2"), &["100.00"]);
    inv2.currency = Some("EUR".into());
    let k2 = c.create_invoice("uk-inv-2", &inv2).await.unwrap();
    let r = &c
        .read("ARINVOICE", &[&k2], &["TOTALENTERED"])
        .await
        .unwrap()[0];
    assert_eq!(r.text_at("TOTALENTERED"), Some("90.00"));
    let adj = NewArAdjustment {
        currency: LegacyCurrency {
            currency: Some("EUR".into()),
            exchange: Some(Exchange::Rate(dec("0.8"))),
            ..LegacyCurrency::default()
        },
        ..adjustment("EU1", vec![gl_line("4000", "50.00")])
    };
    let ak = c.create_aradjustment("uk-adj", &adj).await.unwrap();
    let a = &c.read("ARADJUSTMENT", &[&ak], &[]).await.unwrap()[0];
    assert_eq!(a.text_at("TOTALENTERED"), Some("40.00"));
    assert_eq!(a.text_at("TRX_TOTALENTERED"), Some("50.00"));
    assert_eq!(a.text_at("EXCH_RATE_TYPE_ID"), Some(""));
    // A rate type the simulator does not know.
    let mut inv3 = invoice("EU1", Some("UK-3"), &["1.00"]);
    inv3.currency = Some("EUR".into());
    inv3.exch_rate_type = Some("Corporate Rate".into());
    let err = c.create_invoice("uk-inv-3", &inv3).await.unwrap_err();
    check_could_not(
        &err,
        "BL01001973",
        "Invalid exchange rate type Corporate Rate",
        "Invoice",
    );

    // At the top level (USD base) a USD invoice keeps equal TRX_ and base amounts.
    let top = client(&sim);
    let k = top
        .create_invoice("us-inv", &invoice("EU1", None, &["10.10"]))
        .await
        .unwrap();
    let r = &top.read("ARINVOICE", &[&k], &[]).await.unwrap()[0];
    assert_eq!(r.text_at("BASECURR"), Some("USD"));
    assert_eq!(r.text_at("CURRENCY"), Some("USD"));
    assert_eq!(r.text_at("TRX_TOTALENTERED"), r.text_at("TOTALENTERED"));
    assert_eq!(amount(r, "EXCHANGE_RATE"), Decimal::ONE);
}

// ---- payments ----

#[tokio::test]
async fn create_arpayment_applies_items_and_enforces_the_rules() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("p-cust", vec![customer("C1", "One"), customer("C2", "Two")])
        .await
        .unwrap();
    let k1 = c
        .create_invoice("p-inv-1", &invoice("C1", Some("A-1"), &["100.00"]))
        .await
        .unwrap();
    let k2 = c
        .create_invoice("p-inv-2", &invoice("C1", Some("A-2"), &["50.00"]))
        .await
        .unwrap();
    let other = c
        .create_invoice("p-inv-3", &invoice("C2", Some("B-1"), &["70.00"]))
        .await
        .unwrap();

    let mut p = ar_payment("C1", "130.00", &[(&k1, "100.00"), (&k2, "20.00")]);
    p.ref_id = Some("CHK-1001".into());
    p.deposit = Some(PaymentDeposit::BankAccount("BOA".into()));
    let key = c.create_arpayment("p-1", &p).await.unwrap();
    let pay = &c.read("ARPYMT", &[&key], &[]).await.unwrap()[0];
    assert_eq!(pay.text_at("DOCNUMBER"), Some("CHK-1001"));
    assert_eq!(pay.text_at("PAYMENTMETHOD"), Some("EFT"));
    assert_eq!(pay.text_at("RECEIPTDATE"), Some("03/15/2024"));
    assert_eq!(pay.text_at("FINANCIALENTITY"), Some("BOA"));
    assert_eq!(pay.text_at("CURRENCY"), Some("USD"));
    assert_eq!(amount(pay, "TRX_TOTALENTERED"), dec("130.00"));
    assert_eq!(amount(pay, "TRX_TOTALPAID"), dec("120.00"));
    assert_eq!(pay.find("ARPYMTDETAILS").unwrap().children.len(), 2);
    let states: Vec<Option<String>> = c
        .read("ARINVOICE", &[&k1, &k2], &["STATE"])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text_at("STATE").map(str::to_owned))
        .collect();
    assert_eq!(
        states,
        [Some("Paid".to_owned()), Some("Partially Paid".to_owned())]
    );

    let cases: Vec<(NewArPayment, String)> = vec![
        (
            ar_payment("NOPE", "1.00", &[]),
            "Invalid Customer NOPE specified.".into(),
        ),
        (
            ar_payment("C1", "10.00", &[(&other, "10.00")]),
            format!("Invoice {other} belongs to customer C2, not to C1"),
        ),
        (
            ar_payment("C1", "40.00", &[(&k2, "30.01")]),
            "Payment amount 30.01 exceeds the amount due 30.00".into(),
        ),
        (
            ar_payment("C1", "100.00", &[(&k1, "0.01")]),
            "Payment amount 0.01 exceeds the amount due 0.00".into(),
        ),
        (
            ar_payment("C1", "10.00", &[(&k2, "10.00"), (&k2, "0.50")]),
            "The payment items total 10.50 exceeds the payment amount 10.00".into(),
        ),
        (
            NewArPayment {
                currency: LegacyCurrency {
                    currency: Some("EUR".into()),
                    ..LegacyCurrency::default()
                },
                ..ar_payment("C1", "5.00", &[(&k2, "5.00")])
            },
            format!("The payment currency EUR does not match the currency USD of invoice {k2}"),
        ),
    ];
    for (i, (bad, text)) in cases.iter().enumerate() {
        let err = c
            .create_arpayment(&format!("p-bad-{i}"), bad)
            .await
            .unwrap_err();
        check_could_not(&err, "BL01001973", text, "Payment");
    }
    // Nothing of the failed payments stayed.
    assert_eq!(sim.records("ARPYMT").len(), 1);
    let r = &c.read("ARINVOICE", &[&k2], &[]).await.unwrap()[0];
    assert_eq!(amount(r, "TRX_TOTALDUE"), dec("30.00"));

    // The generic ARPYMT create shares the rules.
    let generic = |cust: &str, inv: &str, amt: &str| {
        Element::new("ARPYMT")
            .with_leaf("FINANCIALENTITY", "BOA")
            .with_leaf("PAYMENTMETHOD", "Cash")
            .with_leaf("CUSTOMERID", cust)
            .with_leaf("RECEIPTDATE", "03/16/2024")
            .with(
                Element::new("ARPYMTDETAILS").with(
                    Element::new("ARPYMTDETAIL")
                        .with_leaf("RECORDKEY", inv)
                        .with_leaf("TRX_PAYMENTAMOUNT", amt),
                ),
            )
    };
    let err = c
        .create("g-bad-1", vec![generic("C1", &other, "1.00")])
        .await
        .unwrap_err();
    let (_, errors) = function_error(&err);
    assert_eq!(
        errors[0].description2,
        format!("Invoice {other} belongs to customer C2, not to C1")
    );
    assert_eq!(
        errors[1].description2,
        "Could not create ar payment record!"
    );
    let err = c
        .create("g-bad-2", vec![generic("C1", &k2, "30.01")])
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Payment amount 30.01 exceeds the amount due 30.00"
    );
    let err = c
        .create("g-bad-3", vec![generic("NOPE", &k2, "1.00")])
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Invalid Customer NOPE specified."
    );
    let created = c
        .create("g-ok", vec![generic("C1", &k2, "30.00")])
        .await
        .unwrap();
    let gp = &c
        .read("ARPYMT", &[created[0].text_at("RECORDNO").unwrap()], &[])
        .await
        .unwrap()[0];
    assert_eq!(amount(gp, "TRX_TOTALPAID"), dec("30.00"));
    let r = &c.read("ARINVOICE", &[&k2], &["STATE"]).await.unwrap()[0];
    assert_eq!(r.text_at("STATE"), Some("Paid"));

    // A repeated controlid pays nothing twice.
    c.create_invoice("p-inv-4", &invoice("C2", Some("B-2"), &["10.00"]))
        .await
        .unwrap();
    let p = ar_payment("C2", "5.00", &[(&other, "5.00")]);
    c.create_arpayment("p-once", &p).await.unwrap();
    c.create_arpayment("p-once", &p).await.unwrap_err();
    let r = &c.read("ARINVOICE", &[&other], &[]).await.unwrap()[0];
    assert_eq!(amount(r, "TRX_TOTALPAID"), dec("5.00"));
}

// ---- adjustments ----

#[tokio::test]
async fn credit_memos_reduce_the_invoice_they_name() {
    let sim = sim().await;
    let c = client(&sim);
    c.create("a-cust", vec![customer("C1", "One"), customer("C2", "Two")])
        .await
        .unwrap();
    let k = c
        .create_invoice("a-inv", &invoice("C1", Some("INV-A"), &["500.00"]))
        .await
        .unwrap();
    c.create_invoice("a-inv-2", &invoice("C2", Some("INV-B"), &["80.00"]))
        .await
        .unwrap();
    let before = c.read("ARINVOICE", &[&k], &[]).await.unwrap()[0]
        .text_at("WHENMODIFIED")
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    let cm = NewArAdjustment {
        adjustment_no: Some("CM-1".into()),
        invoice_no: Some("INV-A".into()),
        description: Some("Returned goods".into()),
        ..adjustment(
            "C1",
            vec![gl_line("4000", "-150.00"), gl_line("4010", "-50.00")],
        )
    };
    let key = c.create_aradjustment("cm-1", &cm).await.unwrap();
    let a = &c.read("ARADJUSTMENT", &[&key], &[]).await.unwrap()[0];
    assert_eq!(a.text_at("RECORDID"), Some("CM-1"));
    assert_eq!(a.text_at("ADJUSTMENTTYPE"), Some("Credit Memo"));
    assert_eq!(amount(a, "TRX_TOTALENTERED"), dec("-200.00"));
    assert_eq!(a.find("ARADJUSTMENTITEMS").unwrap().children.len(), 2);
    let inv = &c.read("ARINVOICE", &[&k], &[]).await.unwrap()[0];
    assert_eq!(amount(inv, "TRX_TOTALDUE"), dec("300.00"));
    assert_eq!(amount(inv, "TOTALDUE"), dec("300.00"));
    assert_eq!(inv.text_at("STATE"), Some("Partially Paid"));
    let changed = c
        .read_by_query_all(
            "ARINVOICE",
            &["RECORDID"],
            &format!("WHENMODIFIED > '{before}'"),
            10,
        )
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].text_at("RECORDID"), Some("INV-A"));

    // Readable by readByQuery on its number.
    let rows = c
        .read_by_query_all("ARADJUSTMENT", &[], "RECORDID = 'CM-1'", 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);

    let err = c.create_aradjustment("cm-1-dup", &cm).await.unwrap_err();
    check_could_not(
        &err,
        "BL34000061",
        "Another Adjustment with the given value(s) CM-1  already exists",
        "Adjustment",
    );
    // More credit than is due: refused, the invoice unchanged.
    let too_much = NewArAdjustment {
        adjustment_no: Some("CM-2".into()),
        invoice_no: Some("INV-A".into()),
        ..adjustment("C1", vec![gl_line("4000", "-300.01")])
    };
    let err = c.create_aradjustment("cm-2", &too_much).await.unwrap_err();
    check_could_not(
        &err,
        "BL01001973",
        "Credit amount 300.01 exceeds the amount due 300.00",
        "Adjustment",
    );
    let wrong_customer = NewArAdjustment {
        invoice_no: Some("INV-B".into()),
        ..adjustment("C1", vec![gl_line("4000", "-1.00")])
    };
    let err = c
        .create_aradjustment("cm-3", &wrong_customer)
        .await
        .unwrap_err();
    check_could_not(
        &err,
        "BL01001973",
        "Invoice INV-B belongs to customer C2, not to C1",
        "Adjustment",
    );
    for (i, (bad, text)) in [
        (
            adjustment("NOPE", vec![gl_line("4000", "1")]),
            "Invalid Customer NOPE specified.",
        ),
        (
            adjustment("C1", vec![]),
            "An adjustment needs at least one line item",
        ),
        (
            adjustment("C1", vec![gl_line("", "1")]),
            "Line 1: glaccountno is required",
        ),
    ]
    .iter()
    .enumerate()
    {
        let err = c
            .create_aradjustment(&format!("adj-bad-{i}"), bad)
            .await
            .unwrap_err();
        check_could_not(&err, "BL01001973", text, "Adjustment");
    }
    assert_eq!(
        amount(
            &c.read("ARINVOICE", &[&k], &[]).await.unwrap()[0],
            "TRX_TOTALDUE"
        ),
        dec("300.00")
    );
    // The rest as a credit: Paid. A debit memo leaves the invoice alone.
    let rest = NewArAdjustment {
        invoice_no: Some("INV-A".into()),
        ..adjustment("C1", vec![gl_line("4000", "-300.00")])
    };
    c.create_aradjustment("cm-4", &rest).await.unwrap();
    let debit = NewArAdjustment {
        invoice_no: Some("INV-A".into()),
        ..adjustment("C1", vec![gl_line("4000", "25.00")])
    };
    let dk = c.create_aradjustment("dm-1", &debit).await.unwrap();
    let inv = &c.read("ARINVOICE", &[&k], &[]).await.unwrap()[0];
    assert_eq!(inv.text_at("STATE"), Some("Paid"));
    assert_eq!(amount(inv, "TOTALDUE"), Decimal::ZERO);
    let dm = &c.read("ARADJUSTMENT", &[&dk], &[]).await.unwrap()[0];
    assert_eq!(dm.text_at("ADJUSTMENTTYPE"), Some("Debit Memo"));
    assert_eq!(dm.text_at("RECORDID"), Some(dk.as_str()));
}

// ---- AP ----

#[tokio::test]
async fn vendors_and_bills() {
    let sim = sim().await;
    let c = client(&sim);
    let vendor = |id: &str, name: &str| {
        Element::new("VENDOR")
            .with_leaf("VENDORID", id)
            .with_leaf("NAME", name)
            .with(Element::new("DISPLAYCONTACT").with_leaf("PRINTAS", name))
    };
    let created = c
        .create("v-1", vec![vendor("V1", "Supplies Inc")])
        .await
        .unwrap();
    assert!(created[0].is("vendor"));
    assert_eq!(created[0].text_at("VENDORID"), Some("V1"));
    let err = c
        .create("v-dup", vec![vendor("V1", "Again")])
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Another Vendor with the given value(s) V1  already exists"
    );
    let err = c
        .create(
            "v-bad",
            vec![
                Element::new("VENDOR")
                    .with_leaf("VENDORID", "V2")
                    .with_leaf("NAME", "N"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Required field DISPLAYCONTACT.PRINTAS is missing"
    );

    let bill = |vendor: &str| {
        Element::new("APBILL")
            .with_leaf("VENDORID", vendor)
            .with_leaf("RECORDID", "BILL-1")
            .with_leaf("WHENCREATED", "03/01/2024")
            .with(
                Element::new("APBILLITEMS")
                    .with(
                        Element::new("APBILLITEM")
                            .with_leaf("ACCOUNTNO", "6000")
                            .with_leaf("TRX_AMOUNT", "120.00"),
                    )
                    .with(
                        Element::new("APBILLITEM")
                            .with_leaf("ACCOUNTNO", "6010")
                            .with_leaf("TRX_AMOUNT", "30.50"),
                    ),
            )
    };
    let err = c.create("b-bad", vec![bill("NOPE")]).await.unwrap_err();
    assert_eq!(
        function_error(&err).1[0].description2,
        "Invalid Vendor NOPE specified."
    );
    c.create("b-1", vec![bill("V1")]).await.unwrap();
    let rows = c
        .read_by_query_all("APBILL", &[], "VENDORID = 'V1'", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].is("apbill"));
    assert_eq!(amount(&rows[0], "TRX_TOTALENTERED"), dec("150.50"));
    assert_eq!(amount(&rows[0], "TOTALDUE"), dec("150.50"));
    assert_eq!(rows[0].text_at("VENDORNAME"), Some("Supplies Inc"));

    // Legacy create_bill.
    let nb = NewBill {
        vendor_id: "V1".into(),
        date_created: d(2024, 3, 2),
        date_due: Some(d(2024, 4, 1)),
        term_name: Some("N30".into()),
        bill_no: Some("BILL-2".into()),
        po_number: None,
        description: None,
        currency: LegacyCurrency::default(),
        lines: vec![gl_line("6000", "99.99")],
    };
    let key = c.create_bill("b-2", &nb).await.unwrap();
    let r = &c.read("APBILL", &[&key], &[]).await.unwrap()[0];
    assert_eq!(r.text_at("RECORDID"), Some("BILL-2"));
    assert_eq!(amount(r, "TOTALENTERED"), dec("99.99"));
    let err = c.create_bill("b-2-dup", &nb).await.unwrap_err();
    check_could_not(
        &err,
        "BL34000061",
        "Another Bill with the given value(s) BILL-2  already exists",
        "Bill",
    );
}

#[tokio::test]
async fn a_rolled_back_transaction_undoes_documents_invoices_and_numbers() {
    let sim = sim().await;
    let c = client(&sim);
    seed_sales(&c).await;
    let good = sales_tx("Sales Invoice", "C1", vec![so_line("I1", "1", None)]);
    let bad = sales_tx("Sales Invoice", "NOPE", vec![so_line("I1", "1", None)]);
    let opts = Options {
        transaction: true,
        uniqueid: true,
    };
    let results = c
        .execute(
            &[
                Function::create_sotransaction("t-good", &good),
                Function::create_sotransaction("t-bad", &bad),
            ],
            opts,
        )
        .await
        .unwrap();
    assert_eq!(results[0].status, ResultStatus::Aborted);
    assert_eq!(results[1].status, ResultStatus::Failure);
    assert_eq!(results[1].errors.last().unwrap().errorno, "XL03000009");
    assert!(sim.records("SODOCUMENT").is_empty());
    assert!(sim.records("ARINVOICE").is_empty());
    // The number and the controlid are free again.
    let key = c.create_sotransaction("t-good", &good).await.unwrap();
    assert_eq!(key, "Sales Invoice-INV-00001");
    assert_eq!(sim.records("ARINVOICE").len(), 1);
}

#[tokio::test]
async fn read_by_query_pages_2500_invoices_and_recovers_from_an_expired_result_id() {
    let sim = sim().await;
    let c = client(&sim);
    sim.insert(
        "ARINVOICE",
        (0..2_500)
            .map(|i| {
                Element::new("ARINVOICE")
                    .with_leaf("RECORDID", format!("INV-{i:05}"))
                    .with_leaf("CUSTOMERID", "C-1")
                    .with_leaf("TOTALDUE", "10.00")
            })
            .collect(),
    );
    let all = c
        .read_by_query_all("ARINVOICE", &["RECORDNO", "RECORDID"], "", 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 2_500);
    assert_eq!(
        sim.function_count("readMore"),
        2,
        "pages of 1000, 1000, 500"
    );

    // The cursor expires after the first page: the read starts over, nothing twice.
    sim.expire_result_ids_after(1);
    let again = c
        .read_by_query_all("ARINVOICE", &["RECORDID"], "", 1000)
        .await
        .unwrap();
    let ids: std::collections::BTreeSet<&str> =
        again.iter().filter_map(|r| r.text_at("RECORDID")).collect();
    assert_eq!((again.len(), ids.len()), (2_500, 2_500));
    assert_eq!(sim.function_count("readByQuery"), 3, "one restart");
}
