//! The Intacct client against the simulator, over HTTP on loopback, and the response parser
//! against intacct-sdk-php fixtures.

use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sync::intacct::simulator::{Fault, Simulator, SimulatorConfig};
use sync::intacct::{
    Compare, Condition, Element, Function, IntacctClient, IntacctConfig, IntacctError, InvoiceLine,
    NewInvoice, Options, Query, Response, ResultStatus, Secret, UserAuth, parse_response,
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
