//! The Authorize.Net connector against the simulator, over a real socket: every operation,
//! the declines, the timeout after the charge, eCheck settlement and returns, the wire quirks;
//! then the payments service end to end through it, on both backends.

use std::sync::Arc;

use gateway::authnet::simulator::{DECLINE_ZIP, HANG_ZIP, Simulator, SimulatorConfig};
use gateway::authnet::{AuthorizeNet, AuthorizeNetConfig, reference_code};
use gateway::bank::{AccountNumber, BankAccountType, RoutingNumber, SecCode};
use gateway::card::{Cvv, Expiry, Pan};
use gateway::processor::{
    AchStatus, AuthorizeRequest, DeclineCode, Instrument, LookupResult, Outcome, Processor,
};
use zeroize::Zeroizing;

use super::*;

async fn sim() -> Simulator {
    Simulator::start(SimulatorConfig {
        hang_ms: 3_000,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap()
}

fn connector(sim: &Simulator, timeout_ms: u64) -> AuthorizeNet {
    AuthorizeNet::new(AuthorizeNetConfig {
        endpoint: sim.endpoint(),
        api_login_id: sim.config().api_login_id.clone(),
        transaction_key: Zeroizing::new(sim.config().transaction_key.clone()),
        timeout_ms,
        lookup_days: 2,
    })
    .unwrap()
}

async fn card_auth(
    anet: &AuthorizeNet,
    reference: &str,
    pan: &str,
    zip: &str,
    cvv: Option<&str>,
    amount_minor: i64,
    capture: bool,
) -> Outcome {
    let number = Pan::parse(pan).unwrap();
    let cvv = cvv.map(|c| Cvv::parse(c, number.brand()).unwrap());
    anet.authorize(&AuthorizeRequest {
        reference,
        amount_minor,
        currency: "USD",
        capture,
        instrument: Instrument::Card {
            number: &number,
            expiry: Expiry::stored(12, 2030).unwrap(),
            cvv: cvv.as_ref(),
            holder_name: Some("Ada King Lovelace"),
            postal_code: Some(zip),
        },
    })
    .await
}

async fn echeck(anet: &AuthorizeNet, reference: &str, account: &str, amount_minor: i64) -> Outcome {
    let routing = RoutingNumber::parse("110000000").unwrap();
    let account = AccountNumber::parse(account).unwrap();
    anet.authorize(&AuthorizeRequest {
        reference,
        amount_minor,
        currency: "USD",
        capture: true,
        instrument: Instrument::Bank {
            routing: &routing,
            account: &account,
            account_type: BankAccountType::Checking,
            holder_name: "Grace Brewster Murray Hopper",
            sec_code: SecCode::Web,
        },
    })
    .await
}

fn trans_id(o: &Outcome) -> String {
    match o {
        Outcome::Approved { processor_ref } => processor_ref.clone(),
        other => panic!("expected approval, got {other:?}"),
    }
}

fn declined(o: &Outcome) -> (DeclineCode, String) {
    match o {
        Outcome::Declined { code, message } => (*code, message.clone()),
        other => panic!("expected a decline, got {other:?}"),
    }
}

#[tokio::test]
async fn sale_authorize_capture_void_and_refund_over_the_wire() {
    let sim = sim().await;
    let anet = connector(&sim, 5_000);
    // Sale: captured, pending settlement; the simulator holds only the masked number and our
    // 20-character reference code as the invoice number.
    let sale =
        trans_id(&card_auth(&anet, "pay_sale", PAN, "10001", Some("123"), 10_000, true).await);
    let t = sim.transaction(&sale).unwrap();
    assert_eq!(
        (t.status, t.settle_minor, t.account_number.as_str()),
        ("capturedPendingSettlement", 10_000, "XXXX1111")
    );
    assert_eq!(
        t.invoice_number.as_deref(),
        Some(reference_code("pay_sale").as_str())
    );

    // Authorize only, then a partial capture; more than authorized is reason 47.
    let auth = trans_id(&card_auth(&anet, "pay_auth", PAN_2, "10001", None, 80_00, false).await);
    assert_eq!(
        sim.transaction(&auth).unwrap().status,
        "authorizedPendingCapture"
    );
    let (code, message) = declined(&anet.capture(&auth, 80_01).await);
    assert_eq!(code, DeclineCode::ProcessingError);
    assert!(message.contains("reason 47"), "{message}");
    trans_id(&anet.capture(&auth, 50_00).await);
    let t = sim.transaction(&auth).unwrap();
    assert_eq!(
        (t.status, t.settle_minor),
        ("capturedPendingSettlement", 50_00)
    );
    let (_, message) = declined(&anet.capture(&auth, 10_00).await);
    assert!(message.contains("already been captured"), "{message}");

    // Void an authorization.
    let to_void = trans_id(&card_auth(&anet, "pay_void", PAN, "10001", None, 20_00, false).await);
    trans_id(&anet.void(&to_void).await);
    assert_eq!(sim.transaction(&to_void).unwrap().status, "voided");
    let (_, message) = declined(&anet.capture(&to_void, 20_00).await);
    assert!(message.contains("voided"), "{message}");

    // Before settlement: a partial refund is impossible (Authorize.Net's reason 54), a full
    // one goes out as a void.
    let (_, message) = declined(&anet.refund(&sale, "pay_sale:refund:1", 10_00).await);
    assert!(message.contains("not settled"), "{message}");
    let quick = trans_id(&card_auth(&anet, "pay_quick", PAN, "10001", None, 15_00, true).await);
    trans_id(&anet.refund(&quick, "pay_quick:refund:1", 15_00).await);
    assert_eq!(sim.transaction(&quick).unwrap().status, "voided");

    // After settlement: partial refunds, never above what settled (reason 55).
    sim.settle();
    assert_eq!(
        sim.transaction(&sale).unwrap().status,
        "settledSuccessfully"
    );
    let refund = trans_id(&anet.refund(&sale, "pay_sale:refund:1", 30_00).await);
    let r = sim.transaction(&refund).unwrap();
    assert_eq!(
        (r.transaction_type, r.status, r.settle_minor),
        ("refundTransaction", "refundPendingSettlement", 30_00)
    );
    trans_id(&anet.refund(&sale, "pay_sale:refund:2", 70_00).await);
    let (_, message) = declined(&anet.refund(&sale, "pay_sale:refund:3", 1).await);
    assert!(message.contains("reason 55"), "{message}");
    assert_eq!(sim.transaction(&sale).unwrap().refunded_minor, 10_000);
}

#[tokio::test]
async fn declines_map_to_our_codes() {
    let sim = sim().await;
    let anet = connector(&sim, 5_000);
    let (code, message) =
        declined(&card_auth(&anet, "d1", PAN, DECLINE_ZIP, None, 10_00, true).await);
    assert_eq!(code, DeclineCode::CardDeclined);
    assert!(message.contains("declined"), "{message}");
    let (code, _) = declined(&card_auth(&anet, "d2", PAN, "10001", Some("901"), 10_00, true).await);
    assert_eq!(code, DeclineCode::IncorrectCvc);
    // A stored card that has since expired.
    let number = Pan::parse(PAN).unwrap();
    let expired = anet
        .authorize(&AuthorizeRequest {
            reference: "d3",
            amount_minor: 10_00,
            currency: "USD",
            capture: true,
            instrument: Instrument::Card {
                number: &number,
                expiry: Expiry::stored(1, 2024).unwrap(),
                cvv: None,
                holder_name: None,
                postal_code: None,
            },
        })
        .await;
    assert_eq!(declined(&expired).0, DeclineCode::ExpiredCard);
    // A currency Authorize.Net does not settle in never leaves.
    let calls = sim.api_calls();
    let jpy = anet
        .authorize(&AuthorizeRequest {
            reference: "d4",
            amount_minor: 1000,
            currency: "JPY",
            capture: true,
            instrument: Instrument::Card {
                number: &number,
                expiry: Expiry::stored(12, 2030).unwrap(),
                cvv: None,
                holder_name: None,
                postal_code: None,
            },
        })
        .await;
    assert_eq!(declined(&jpy).0, DeclineCode::ProcessingError);
    assert_eq!(sim.api_calls(), calls);
    // Wrong credentials: E00007, a definite refusal.
    let wrong = AuthorizeNet::new(AuthorizeNetConfig {
        endpoint: sim.endpoint(),
        api_login_id: "someone".into(),
        transaction_key: Zeroizing::new("else".into()),
        timeout_ms: 5_000,
        lookup_days: 2,
    })
    .unwrap();
    let (code, message) = declined(&card_auth(&wrong, "d5", PAN, "10001", None, 10_00, true).await);
    assert_eq!(code, DeclineCode::ProcessingError);
    assert!(message.contains("E00007"), "{message}");
    assert!(sim.transactions().is_empty(), "nothing was charged");
}

#[tokio::test]
async fn a_timeout_after_the_charge_is_unknown_then_found_by_lookup() {
    let sim = sim().await;
    let anet = connector(&sim, 300);
    let o = card_auth(&anet, "pay_lost", PAN, HANG_ZIP, None, 42_00, true).await;
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
    // The charge happened: lookup by our reference finds it, captured.
    let found = anet.lookup("pay_lost").await;
    let LookupResult::Approved {
        processor_ref,
        captured: true,
    } = found
    else {
        panic!("expected approved and captured, got {found:?}");
    };
    assert_eq!(sim.transaction(&processor_ref).unwrap().settle_minor, 42_00);
    // A reference the processor never saw.
    assert_eq!(anet.lookup("pay_never_sent").await, LookupResult::NotFound);
    // Retrying the same request within two minutes is Authorize.Net's duplicate (reason 11):
    // we report it as unknown, to be looked up, never as a second charge or a failure.
    let anet_patient = connector(&sim, 10_000);
    let retry = card_auth(&anet_patient, "pay_lost", PAN, "10001", None, 42_00, true).await;
    assert!(
        matches!(retry, Outcome::Approved { .. }),
        "a different zip is not a duplicate: {retry:?}"
    );
    let again = card_auth(&anet_patient, "pay_lost", PAN, "10001", None, 42_00, true).await;
    assert!(matches!(again, Outcome::Unknown { .. }), "{again:?}");
    // After settlement the lookup searches settled batches.
    sim.settle();
    assert!(matches!(
        anet.lookup("pay_lost").await,
        LookupResult::Approved { captured: true, .. }
    ));
    // An unreachable processor is unknown, not "not found".
    drop(sim);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(matches!(
        anet.lookup("pay_lost").await,
        LookupResult::Unknown { .. }
    ));
}

#[tokio::test]
async fn echecks_settle_and_return_with_nacha_codes() {
    let sim = sim().await;
    let anet = connector(&sim, 5_000);
    let good = trans_id(&echeck(&anet, "ach_ok", "000123456789", 90_00).await);
    let r01 = trans_id(&echeck(&anet, "ach_r01", "000123450001", 25_00).await);
    assert_eq!(sim.transaction(&r01).unwrap().account_number, "XXXX0001");
    assert_eq!(anet.ach_status(&good).await, AchStatus::Pending);
    sim.settle();
    assert_eq!(anet.ach_status(&good).await, AchStatus::Settled);
    assert_eq!(anet.ach_status(&r01).await, AchStatus::Settled);
    // Returns arrive after the settling batch.
    sim.settle();
    assert_eq!(anet.ach_status(&good).await, AchStatus::Settled);
    assert_eq!(
        anet.ach_status(&r01).await,
        AchStatus::Returned {
            r_code: "R01".into(),
            description: "Insufficient funds".into()
        }
    );
    // A bad routing number never reaches a bank: reason 9.
    let routing = RoutingNumber::parse("110000000").unwrap();
    let account = AccountNumber::parse("000123456789").unwrap();
    let business_web = anet
        .authorize(&AuthorizeRequest {
            reference: "ach_bad_sec",
            amount_minor: 10_00,
            currency: "USD",
            capture: true,
            instrument: Instrument::Bank {
                routing: &routing,
                account: &account,
                account_type: BankAccountType::BusinessChecking,
                holder_name: "Acme Corp",
                sec_code: SecCode::Ccd,
            },
        })
        .await;
    trans_id(&business_web);
    // A refund of a settled eCheck goes back with the masked account.
    let refund = trans_id(&anet.refund(&good, "ach_ok:refund:1", 10_00).await);
    assert_eq!(sim.transaction(&refund).unwrap().account_number, "XXXX6789");
}

/// Raw requests: the simulator is as strict as Authorize.Net about shapes, and answers with a
/// byte-order mark that a naive client would choke on.
#[tokio::test]
async fn the_wire_is_authorize_nets() {
    let sim = sim().await;
    let http = gateway::http::client();
    let post = |body: String| {
        let http = http.clone();
        let url = sim.endpoint();
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "API errors are HTTP 200");
            r.bytes().await.unwrap()
        }
    };
    let auth = format!(
        r#""merchantAuthentication":{{"name":"{}","transactionKey":"{}"}}"#,
        sim.config().api_login_id,
        sim.config().transaction_key
    );
    let ok = post(format!(r#"{{"authenticateTestRequest":{{{auth}}}}}"#)).await;
    assert!(
        ok.starts_with("\u{feff}".as_bytes()),
        "answers start with a BOM"
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&ok).is_err(),
        "which plain JSON parsers refuse"
    );
    let text = std::str::from_utf8(&ok[3..]).unwrap();
    assert!(text.contains(r#""resultCode":"Ok""#), "{text}");
    // Elements out of schema order: E00003.
    let out_of_order = post(format!(
        r#"{{"createTransactionRequest":{{{auth},"transactionRequest":{{"amount":"5.00","transactionType":"authCaptureTransaction"}}}}}}"#
    ))
    .await;
    let text = String::from_utf8_lossy(&out_of_order);
    assert!(
        text.contains("E00003") && text.contains("invalid child element 'transactionType'"),
        "{text}"
    );
    // Bad credentials: E00007.
    let bad = post(r#"{"authenticateTestRequest":{"merchantAuthentication":{"name":"x","transactionKey":"y"}}}"#.into()).await;
    assert!(String::from_utf8_lossy(&bad).contains("E00007"));
    // Amounts as JSON numbers work as well as strings, and never pass through floats.
    let number_amount = post(format!(
        r#"{{"createTransactionRequest":{{{auth},"refId":"1","transactionRequest":{{"transactionType":"authOnlyTransaction","amount":1018.88,"payment":{{"creditCard":{{"cardNumber":"4111111111111111","expirationDate":"2030-12"}}}}}}}}}}"#
    ))
    .await;
    let text = String::from_utf8_lossy(&number_amount);
    assert!(
        text.contains(r#""responseCode":"1""#) && text.contains("XXXX1111"),
        "{text}"
    );
    assert!(
        !text.contains("4111111111111111"),
        "answers never echo the card number"
    );
    let id = sim.transactions()[0].trans_id.clone();
    assert_eq!(sim.transaction(&id).unwrap().auth_minor, 101_888);
}

// ---- payments through Authorize.Net, on both backends ----

both_backends!(payments_through_authorize_net, |t| async move {
    let sim = sim().await;
    let anet = Arc::new(connector(&sim, 300));
    let (payments, vault, ledger) = parts(&t, anet.clone()).await;
    let zip = |pan: &str, zip: &str| {
        NewPaymentMethod::Card(NewCard {
            number: Pan::parse(pan).unwrap(),
            expiry: Expiry::parse(12, 2030, today()).unwrap(),
            holder_name: Some("Ada Lovelace".into()),
            postal_code: Some(zip.into()),
        })
    };
    let ok = vault
        .tokenize(zip(PAN, "10001"), "test")
        .await
        .unwrap()
        .token;
    // Authorize, partial capture; settle; two refunds.
    let p = payments
        .create(pay(&ok, "100.00", false), "test")
        .await
        .unwrap();
    assert_eq!(
        (p.status, p.processor.as_str()),
        ("requires_capture", "authorize_net")
    );
    let p = payments.capture(&p.id, Some(60_00)).await.unwrap();
    assert_eq!((p.status, p.captured_minor), ("captured", 60_00));
    assert_eq!(clearing_of(&ledger).await, 60_00);
    let early = payments.refund(&p.id, Some(10_00)).await.unwrap_err();
    assert!(early.to_string().contains("not settled"), "{early}");
    assert_eq!(
        clearing_of(&ledger).await,
        60_00,
        "a refused refund posts nothing"
    );
    sim.settle();
    payments.refund(&p.id, Some(10_00)).await.unwrap();
    let p = payments.refund(&p.id, None).await.unwrap();
    assert_eq!((p.status, p.refunded_minor), ("refunded", 60_00));
    assert_eq!(clearing_of(&ledger).await, 0);
    // A decline is a failed payment, nothing posted.
    let bad = vault
        .tokenize(zip(PAN_2, DECLINE_ZIP), "test")
        .await
        .unwrap()
        .token;
    let p = payments
        .create(pay(&bad, "5.00", true), "test")
        .await
        .unwrap();
    assert_eq!(
        (p.status, p.failure_code.as_deref()),
        ("failed", Some("card_declined"))
    );
    // The timeout after the charge: unknown, then resolved from Authorize.Net's reports.
    let slow = vault
        .tokenize(zip("4012888888881881", HANG_ZIP), "test")
        .await
        .unwrap()
        .token;
    let p = payments
        .create(pay(&slow, "42.00", true), "test")
        .await
        .unwrap();
    assert_eq!(p.status, "unknown");
    assert_eq!(
        clearing_of(&ledger).await,
        0,
        "nothing posted while unknown"
    );
    let p = payments.get(&p.id).await.unwrap();
    assert_eq!((p.status, p.captured_minor), ("captured", 42_00));
    assert_eq!(clearing_of(&ledger).await, 42_00);
    // eCheck: pending, settled by the poll, then an R01 return reverses the posting.
    let r01 = vault
        .tokenize(
            NewPaymentMethod::BankAccount(NewBankAccount {
                routing: RoutingNumber::parse("110000000").unwrap(),
                account: AccountNumber::parse("000123450001").unwrap(),
                account_type: BankAccountType::Checking,
                holder_name: "Grace Hopper".into(),
                sec_code: SecCode::Web,
            }),
            "test",
        )
        .await
        .unwrap()
        .token;
    let p = payments
        .create(pay(&r01, "25.00", true), "test")
        .await
        .unwrap();
    assert_eq!(p.status, "pending");
    assert_eq!(clearing_of(&ledger).await, 67_00);
    let every = chrono::Duration::zero();
    assert_eq!(
        payments.poll_ach(every, 100).await.unwrap(),
        0,
        "nothing settled yet"
    );
    sim.settle();
    assert_eq!(payments.poll_ach(every, 100).await.unwrap(), 1);
    assert_eq!(payments.get(&p.id).await.unwrap().status, "settled");
    sim.settle();
    assert_eq!(payments.poll_ach(every, 100).await.unwrap(), 1);
    let p = payments.get(&p.id).await.unwrap();
    assert_eq!(
        (p.status, p.failure_code.as_deref()),
        ("returned", Some("R01"))
    );
    assert_eq!(
        clearing_of(&ledger).await,
        42_00,
        "the return reversed its posting"
    );
    assert_eq!(
        payments.poll_ach(every, 100).await.unwrap(),
        0,
        "a returned debit is not polled"
    );
    // R01 may be presented again: a new debit at Authorize.Net, posted again.
    let p = payments.represent(&p.id, "test").await.unwrap();
    assert_eq!(p.status, "pending");
    assert_eq!(clearing_of(&ledger).await, 67_00);
    assert_eq!(
        sim.transactions()
            .iter()
            .filter(|t| t.account_number == "XXXX0001")
            .count(),
        2
    );
    // Nothing secret reached the database outside the vault's ciphertext.
    let all = everything(&t.db).await;
    for secret in [PAN, PAN_2, "4012888888881881", "000123450001"] {
        assert!(!all.contains(secret), "{secret} found in the database");
    }
});
