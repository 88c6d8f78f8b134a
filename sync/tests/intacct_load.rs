//! The historical load (`sync::intacct::load`) through the real client against the Intacct
//! simulator over loopback: exact counts, idempotent re-runs, resends after 502s, per-record
//! failures with Intacct's text, and no more than two requests in flight.

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use sync::intacct::load::{self, LoadConfig, LoadCustomer, LoadError, Progress, RecordKind};
use sync::intacct::simulator::{Fault, Simulator, SimulatorConfig};
use sync::intacct::{
    Element, IntacctClient, IntacctConfig, InvoiceLine, NewInvoice, Secret, UserAuth,
};

async fn sim(latency_ms: u64) -> Simulator {
    let sim = Simulator::start(SimulatorConfig::default()).await;
    sim.set_latency_ms(latency_ms);
    sim
}

fn client(sim: &Simulator) -> IntacctClient {
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
    IntacctClient::new(cfg).unwrap()
}

fn config(batch: usize) -> LoadConfig {
    LoadConfig {
        functions_per_request: batch,
        backoff_base_ms: 5,
        backoff_max_ms: 50,
        progress_every: 100,
        ..LoadConfig::default()
    }
}

fn customers(n: usize) -> Vec<LoadCustomer> {
    (0..n)
        .map(|i| LoadCustomer {
            customer_id: format!("C-{i:06}"),
            name: format!("Customer {i} & Sons"),
            email: Some(format!("ap{i}@example.com")),
            city: Some("Springfield".into()),
            country_code: Some("US".into()),
            ..LoadCustomer::default()
        })
        .collect()
}

fn invoice(no: usize, customer_id: &str) -> NewInvoice {
    let day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Days::new((no % 365) as u64);
    let minor = i64::try_from(no % 10_000).unwrap() * 137 + 99;
    NewInvoice {
        customer_id: customer_id.into(),
        date_created: day,
        date_due: Some(day + Days::new(30)),
        term_name: None,
        invoice_no: Some(format!("INV-{no:07}")),
        description: Some("Historical".into()),
        currency: Some(if no.is_multiple_of(10) { "EUR" } else { "USD" }.into()),
        exch_rate_type: None,
        lines: (0..1 + no % 3)
            .map(|l| InvoiceLine {
                gl_account_no: "4000".into(),
                amount: Decimal::new(minor + i64::try_from(l).unwrap(), 2),
                memo: Some(format!("line {l}")),
                location_id: None,
                department_id: None,
            })
            .collect(),
    }
}

fn invoices(n: usize, customers: &[LoadCustomer]) -> Vec<NewInvoice> {
    (0..n)
        .map(|i| invoice(i, &customers[(i * 7) % customers.len()].customer_id))
        .collect()
}

fn ignore(_: &Progress) {}

#[tokio::test]
async fn a_load_lands_exactly_once_and_a_rerun_finds_everything_present() {
    let sim = sim(5).await;
    let c = client(&sim);
    let custs = customers(1_000);
    let invs = invoices(1_000, &custs);
    let mut progress: Vec<(RecordKind, u64)> = Vec::new();
    let report = load::load(&c, &custs, &invs, &config(50), |p| {
        progress.push((p.kind, p.done));
    })
    .await
    .unwrap();
    assert_eq!(report.customers.created, 1_000, "{report:?}");
    assert_eq!(report.invoices.created, 1_000, "{report:?}");
    assert_eq!(report.already_present(), 0);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.requests, 40);
    assert_eq!(report.functions, 2_000);
    assert_eq!(report.retries, 0);
    assert_eq!(sim.records("CUSTOMER").len(), 1_000);
    assert_eq!(sim.records("ARINVOICE").len(), 1_000);
    assert_eq!(sim.function_count("create"), 1_000);
    assert_eq!(sim.function_count("create_invoice"), 1_000);
    assert_eq!(sim.max_in_flight(), 2, "two batches in flight, never more");
    // Progress every 100 records, then each phase's end; customers first.
    assert_eq!(progress.len(), 20, "{progress:?}");
    assert_eq!(progress[9], (RecordKind::Customer, 1_000));
    assert_eq!(progress[19], (RecordKind::Invoice, 1_000));
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1)
    );
    // Stored as sent: the invoice's total is its lines' sum, to the cent.
    let stored = sim.records("ARINVOICE");
    let inv = stored
        .iter()
        .find(|r| r.text_at("RECORDID") == Some("INV-0000005"))
        .unwrap();
    let expected: Decimal = invs[5].lines.iter().map(|l| l.amount).sum();
    assert_eq!(
        inv.text_at("TOTALENTERED"),
        Some(expected.to_string().as_str())
    );
    assert_eq!(
        inv.text_at("CUSTOMERID"),
        Some(invs[5].customer_id.as_str())
    );

    // Again: nothing is written, every record is already present.
    let again = load::load(&c, &custs, &invs, &config(50), ignore)
        .await
        .unwrap();
    assert_eq!(again.created(), 0, "{again:?}");
    assert_eq!(again.customers.already_present, 1_000);
    assert_eq!(again.invoices.already_present, 1_000);
    assert!(again.failed.is_empty());
    assert_eq!(sim.records("CUSTOMER").len(), 1_000);
    assert_eq!(sim.records("ARINVOICE").len(), 1_000);
    assert!(sim.max_in_flight() <= 2);
}

#[tokio::test]
async fn records_created_outside_the_load_count_as_already_present() {
    let sim = sim(0).await;
    let c = client(&sim);
    let custs = customers(30);
    // C-000003 exists already, created by someone else (another controlid, same CUSTOMERID).
    sim.insert(
        "CUSTOMER",
        vec![
            Element::new("CUSTOMER")
                .with_leaf("CUSTOMERID", "C-000003")
                .with_leaf("NAME", "Already there"),
        ],
    );
    let invs = invoices(10, &custs);
    let report = load::load(&c, &custs, &invs, &config(7), ignore)
        .await
        .unwrap();
    assert_eq!(report.customers.created, 29, "{report:?}");
    assert_eq!(report.customers.already_present, 1);
    assert_eq!(report.invoices.created, 10);
    assert!(report.failed.is_empty());
    assert_eq!(sim.records("CUSTOMER").len(), 30);
}

#[tokio::test]
async fn a_502_mid_load_is_resent_and_nothing_is_created_twice() {
    let sim = sim(3).await;
    let c = client(&sim);
    let custs = customers(500);
    let invs = invoices(500, &custs);
    let inject = async {
        // Login + a few batches, then two requests answer 502.
        while sim.requests() < 6 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        sim.fail_next(2, Fault::Status(502));
    };
    let cfg = config(25);
    let (report, ()) = tokio::join!(load::load(&c, &custs, &invs, &cfg, ignore), inject);
    let report = report.unwrap();
    assert_eq!(report.retries, 2, "{report:?}");
    assert_eq!(report.requests, 40 + 2);
    assert_eq!(
        report.customers.created + report.customers.already_present,
        500
    );
    assert_eq!(
        report.invoices.created + report.invoices.already_present,
        500
    );
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(sim.records("CUSTOMER").len(), 500);
    assert_eq!(sim.records("ARINVOICE").len(), 500);
    assert_eq!(
        sim.function_count("create"),
        500,
        "no customer function ran twice"
    );
    assert_eq!(sim.function_count("create_invoice"), 500);
    assert!(sim.max_in_flight() <= 2);
}

#[tokio::test]
async fn a_load_that_stops_on_failures_resumes_where_it_left_off() {
    let sim = sim(0).await;
    let c = client(&sim);
    let custs = customers(200);
    let invs = invoices(200, &custs);
    // A first partial load: half the customers.
    let first = load::load(&c, &custs[..100], &[], &config(20), ignore)
        .await
        .unwrap();
    assert_eq!(first.customers.created, 100);
    // Then Intacct keeps failing: one resend allowed, the load stops and says what it did.
    let cfg = LoadConfig {
        retries_max: 1,
        requests_in_flight: 1,
        ..config(20)
    };
    sim.fail_next(2, Fault::Status(503));
    let err = load::load(&c, &custs, &invs, &cfg, ignore)
        .await
        .unwrap_err();
    let LoadError::Request {
        kind,
        first_key,
        source,
        report,
    } = err
    else {
        panic!("expected a request error, got {err:?}");
    };
    assert_eq!(kind, RecordKind::Customer);
    assert_eq!(first_key, "C-000000");
    assert!(source.retryable(), "{source}");
    assert_eq!(report.requests, 2);
    // Resume: the first 100 are present, the rest are created, nothing twice.
    let resumed = load::load(&c, &custs, &invs, &config(20), ignore)
        .await
        .unwrap();
    assert_eq!(resumed.customers.already_present, 100, "{resumed:?}");
    assert_eq!(resumed.customers.created, 100);
    assert_eq!(resumed.invoices.created, 200);
    assert_eq!(sim.records("CUSTOMER").len(), 200);
    assert_eq!(sim.records("ARINVOICE").len(), 200);
}

#[tokio::test]
async fn an_invoice_for_an_unknown_customer_fails_alone_with_intacct_text() {
    let sim = sim(0).await;
    let c = client(&sim);
    let custs = customers(10);
    let mut invs = invoices(20, &custs);
    invs[7].customer_id = "NOPE-1".into();
    let report = load::load(&c, &custs, &invs, &config(8), ignore)
        .await
        .unwrap();
    assert_eq!(report.customers.created, 10);
    assert_eq!(report.invoices.created, 19, "{report:?}");
    assert_eq!(report.invoices.failed, 1);
    assert_eq!(report.failed.len(), 1);
    let f = &report.failed[0];
    assert_eq!(f.kind, RecordKind::Invoice);
    assert_eq!(f.key, "INV-0000007");
    assert_eq!(f.controlid, "load-inv-INV-0000007");
    assert!(
        f.message().contains("Invalid Customer NOPE-1 specified."),
        "{}",
        f.message()
    );
    assert_eq!(f.errors[0].errorno, "BL01001973");
    assert_eq!(sim.records("ARINVOICE").len(), 19);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let sim = sim(0).await;
    let c = client(&sim);
    let custs = customers(2);
    let mut invs = invoices(2, &custs);
    invs[1].invoice_no = None;
    let err = load::load(&c, &custs, &invs, &config(10), ignore)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
    let err = load::load(&c, &custs, &[], &config(0), ignore)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
    let long = vec![LoadCustomer {
        customer_id: "x".repeat(250),
        name: "Long".into(),
        ..LoadCustomer::default()
    }];
    let err = load::load(&c, &long, &[], &config(10), ignore)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
    assert_eq!(sim.requests(), 0);
}

#[tokio::test]
async fn a_rate_limit_and_a_524_are_resent_too() {
    let sim = sim(0).await;
    let c = client(&sim);
    let custs = customers(40);
    let invs = invoices(40, &custs);
    // The very first requests: the sign-in meets a 429 GW-0010, then a batch a 524 (it may
    // have run; resending is safe because every function is idempotent by controlid).
    sim.fail_next(1, Fault::RateLimit);
    sim.fail_next(1, Fault::Status(524));
    let report = load::load(&c, &custs, &invs, &config(10), ignore)
        .await
        .unwrap();
    assert_eq!(report.retries, 2, "{report:?}");
    assert_eq!(report.customers.created, 40);
    assert_eq!(report.invoices.created, 40);
    assert_eq!(sim.records("CUSTOMER").len(), 40);
    assert_eq!(sim.records("ARINVOICE").len(), 40);
}
