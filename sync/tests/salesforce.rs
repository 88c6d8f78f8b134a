//! The Salesforce client against the simulator, over HTTP on loopback.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sync::salesforce::bulk::{BulkOperation, CsvTable};
use sync::salesforce::simulator::{Simulator, SimulatorConfig};
use sync::salesforce::soql::{datetime_literal, parse_datetime};
use sync::salesforce::{
    ClientConfig, Credentials, LimitPolicy, Record, SalesforceClient, SalesforceError, Value,
};

const PRIVATE_KEY: &str = include_str!("fixtures/salesforce_jwt_test_key.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/salesforce_jwt_test_pub.pem");

fn sim_config() -> SimulatorConfig {
    SimulatorConfig {
        jwt_public_key_pem: Some(PUBLIC_KEY.into()),
        ..SimulatorConfig::default()
    }
}

async fn sim() -> Simulator {
    Simulator::start(sim_config()).await
}

fn client_config(sim: &Simulator) -> ClientConfig {
    let mut c = ClientConfig::new(sim.base_url());
    c.bulk_poll_interval_ms = 10;
    c.bulk_timeout_ms = 10_000;
    c
}

fn jwt_client(sim: &Simulator) -> SalesforceClient {
    let creds = Credentials::jwt_bearer(
        &sim.config().consumer_key,
        &sim.config().username,
        PRIVATE_KEY,
    )
    .unwrap();
    SalesforceClient::new(client_config(sim), creds).unwrap()
}

fn cc_client(sim: &Simulator) -> SalesforceClient {
    let creds =
        Credentials::client_credentials(&sim.config().client_id, &sim.config().client_secret);
    SalesforceClient::new(client_config(sim), creds).unwrap()
}

fn account(name: &str) -> Record {
    Record::new("Account").with("Name", name)
}

fn calls(client: &SalesforceClient, kind: &str) -> u64 {
    client.stats().by_kind.get(kind).copied().unwrap_or(0)
}

#[tokio::test]
async fn jwt_bearer_and_client_credentials_log_in() {
    let sim = sim().await;
    for client in [jwt_client(&sim), cc_client(&sim)] {
        client.login().await.unwrap();
        let page = client.query("SELECT Id FROM Account").await.unwrap();
        assert_eq!(page.total_size, 0);
        assert!(page.done);
        assert_eq!(client.stats().logins, 1);
    }

    let bad_secret = SalesforceClient::new(
        client_config(&sim),
        Credentials::client_credentials(&sim.config().client_id, "wrong-secret-value"),
    )
    .unwrap();
    let e = bad_secret.login().await.unwrap_err();
    assert!(
        matches!(&e, SalesforceError::OAuth { error, .. } if error == "invalid_client"),
        "{e}"
    );
    assert!(!e.retryable());

    let bad_iss = SalesforceClient::new(
        client_config(&sim),
        Credentials::jwt_bearer("someone-else", &sim.config().username, PRIVATE_KEY).unwrap(),
    )
    .unwrap();
    let e = bad_iss.login().await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_client_id"), "{e}");

    let bad_user = SalesforceClient::new(
        client_config(&sim),
        Credentials::jwt_bearer(
            &sim.config().consumer_key,
            "nobody@example.com",
            PRIVATE_KEY,
        )
        .unwrap(),
    )
    .unwrap();
    let e = bad_user.login().await.unwrap_err();
    assert!(
        matches!(&e, SalesforceError::OAuth { error, description, .. }
        if error == "invalid_grant" && description.contains("approved")),
        "{e}"
    );

    // A simulator without the public key refuses every assertion (the signature is checked).
    let other = Simulator::start(SimulatorConfig::default()).await;
    let e = jwt_client(&other).login().await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"));
}

#[tokio::test]
async fn expired_session_is_refreshed_once_and_the_run_completes() {
    let sim = sim().await;
    let records: Vec<Record> = (0..4_500).map(|i| account(&format!("A{i:05}"))).collect();
    sim.insert_as_user("Account", &records).unwrap();
    let client = jwt_client(&sim);
    let mut pager = client.query_pages("SELECT Id, Name FROM Account ORDER BY Name");
    let mut seen = 0;
    let mut pages = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        seen += page.len();
        pages += 1;
        if pages == 1 {
            sim.expire_sessions();
        }
    }
    assert_eq!(seen, 4_500);
    assert_eq!(pages, 3);
    assert_eq!(client.stats().logins, 2, "one login, one refresh");
    assert_eq!(sim.calls_to("POST /oauth2/token"), 2);
    // 3 pages + the one call refused with 401.
    assert_eq!(calls(&client, "query"), 4);
}

#[tokio::test]
async fn incremental_pull_of_10000_accounts_takes_5_query_calls() {
    let sim = sim().await;
    let old = sim
        .insert_as_user(
            "Account",
            &(0..10)
                .map(|i| account(&format!("old{i}")))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let cursor = parse_datetime(
        sim.record("Account", &old[9])
            .unwrap()
            .get_str("SystemModstamp")
            .unwrap(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh: Vec<Record> = (0..10_000)
        .map(|i| {
            account(&format!("Customer {i:05}")).with("Sage_Customer_Id__c", format!("C-{i:05}"))
        })
        .collect();
    sim.insert_as_user("Account", &fresh).unwrap();

    let client = jwt_client(&sim);
    client.login().await.unwrap();
    let soql = format!(
        "SELECT Id, Name, SystemModstamp, LastModifiedById FROM Account WHERE SystemModstamp > {} ORDER BY SystemModstamp, Id",
        datetime_literal(cursor)
    );
    let mut pager = client.query_pages(&soql);
    let mut all = Vec::new();
    let mut page_sizes = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        page_sizes.push(page.len());
        all.extend(page);
    }
    assert_eq!(page_sizes, [2_000; 5]);
    assert_eq!(calls(&client, "query"), 5);
    assert_eq!(sim.calls_to("GET /query"), 1);
    assert_eq!(sim.calls_to("GET /query/{locator}"), 4);
    let ids: BTreeSet<&str> = all.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    assert!(old.iter().all(|id| !ids.contains(id.as_str())));
    // Ordered by (SystemModstamp, Id): a cursor can resume after the last one.
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|r| {
            let ts = parse_datetime(r.get_str("SystemModstamp").unwrap()).unwrap();
            (datetime_literal(ts), r.id().unwrap().to_owned())
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]));
    // Changes by a person, not the integration user (echo suppression can tell).
    assert!(
        all.iter()
            .all(|r| r.get_str("LastModifiedById") == Some(sim.config().other_user_id.as_str()))
    );
    assert_eq!(all[0].object(), Some("Account"));
    assert_eq!(all[0].id().unwrap().len(), 18);
    assert!(all[0].id().unwrap().starts_with("001"));
}

#[tokio::test]
async fn upsert_of_1000_records_takes_5_collection_calls() {
    let sim = sim().await;
    let client = cc_client(&sim);
    let records: Vec<Record> = (0..1_000)
        .map(|i| account(&format!("Customer {i}")).with("Sage_Customer_Id__c", format!("C-{i:04}")))
        .collect();
    let results = client
        .upsert_many("Account", "Sage_Customer_Id__c", &records)
        .await
        .unwrap();
    assert_eq!(results.len(), 1_000);
    assert!(results.iter().all(|r| r.success && r.created == Some(true)));
    assert_eq!(calls(&client, "collections"), 5);
    assert_eq!(
        sim.calls_to("PATCH /composite/sobjects/{object}/{field}"),
        5
    );
    assert_eq!(sim.count("Account"), 1_000);

    // Again: the same records are matched and updated, not duplicated.
    let again = client
        .upsert_many("Account", "Sage_Customer_Id__c", &records)
        .await
        .unwrap();
    assert!(again.iter().all(|r| r.success && r.created == Some(false)));
    assert_eq!(calls(&client, "collections"), 10);
    assert_eq!(sim.count("Account"), 1_000);
    for (a, b) in results.iter().zip(&again) {
        assert_eq!(a.id, b.id);
    }
    // API calls per record: (5 collection calls + 1 login) / 1000 records, first run.
}

#[tokio::test]
async fn single_record_crud_upsert_and_describe() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    let id = client
        .create(
            "Account",
            &account("Acme, Inc.").with("Sage_Customer_Id__c", "C-1"),
        )
        .await
        .unwrap();
    assert!(id.starts_with("001") && id.len() == 18);
    client
        .update("Account", &id, &Record::default().with("Phone", "555-0100"))
        .await
        .unwrap();
    let got = client
        .get("Account", &id, &["Name", "Phone"])
        .await
        .unwrap();
    assert_eq!(got.get_str("Phone"), Some("555-0100"));
    assert_eq!(got.get_str("Name"), Some("Acme, Inc."));

    let up = client
        .upsert(
            "Account",
            "Sage_Customer_Id__c",
            "C-1",
            &account("Acme Renamed"),
        )
        .await
        .unwrap();
    assert_eq!((up.id.as_deref(), up.created), (Some(id.as_str()), false));
    let up = client
        .upsert("Account", "Sage_Customer_Id__c", "C 2/x", &account("Beta"))
        .await
        .unwrap();
    assert!(up.created);
    assert_eq!(sim.find("Account", "Sage_Customer_Id__c", "C 2/x").len(), 1);

    let opp = client
        .create(
            "Opportunity",
            &Record::new("Opportunity")
                .with("Name", "Deal")
                .with("StageName", "Prospecting")
                .with("CloseDate", "2026-12-31")
                .with("AccountId", id.as_str())
                .with("Amount", Decimal::new(123_456_789_012, 2)),
        )
        .await
        .unwrap();
    let got = client.get("Opportunity", &opp, &["Amount"]).await.unwrap();
    assert_eq!(
        got.get_decimal("Amount"),
        Some(Decimal::new(123_456_789_012, 2))
    );

    client.delete("Account", &up.id.unwrap()).await.unwrap();
    let live = client.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(live.total_size, 1);
    let all = client
        .query_all("SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true")
        .await
        .unwrap();
    assert_eq!(all.total_size, 1);
    assert_eq!(all.records[0].get("IsDeleted"), Some(&Value::Bool(true)));

    let d = client.describe("Account").await.unwrap();
    let ext = d
        .fields
        .iter()
        .find(|f| f.name == "Sage_Customer_Id__c")
        .unwrap();
    assert!(ext.external_id && ext.custom && ext.createable && ext.updateable);
    let name = d.fields.iter().find(|f| f.name == "Name").unwrap();
    assert!(!name.nillable && !name.custom);
    assert_eq!(d.key_prefix, "001");
    let pay = client.describe("Cashloop_Payment__c").await.unwrap();
    assert!(pay.custom);
    assert!(
        pay.fields
            .iter()
            .any(|f| f.name == "Gateway_Payment_Id__c" && f.external_id && f.unique)
    );
    for object in [
        "Contact",
        "OpportunityLineItem",
        "Product2",
        "Pricebook2",
        "PricebookEntry",
        "Order",
    ] {
        client.describe(object).await.unwrap();
    }
    let e = client.describe("Nope__c").await.unwrap_err();
    assert!(matches!(e, SalesforceError::Api { status: 404, .. }), "{e}");

    let e = client
        .upsert("Account", "Name", "x", &account("x"))
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn multiple_matches_is_an_error_with_the_candidates() {
    let sim = sim().await;
    let ids = sim
        .insert_as_user(
            "Account",
            &[
                account("One").with("Legacy_Customer_Code__c", "L-1"),
                account("Two").with("Legacy_Customer_Code__c", "l-1"),
            ],
        )
        .unwrap();
    let client = jwt_client(&sim);
    let e = client
        .upsert(
            "Account",
            "Legacy_Customer_Code__c",
            "L-1",
            &account("Three"),
        )
        .await
        .unwrap_err();
    match &e {
        SalesforceError::MultipleMatches {
            ids: got,
            object,
            field,
            value,
        } => {
            assert_eq!(
                got.iter().collect::<BTreeSet<_>>(),
                ids.iter().collect::<BTreeSet<_>>()
            );
            assert_eq!(
                (object.as_str(), field.as_str(), value.as_str()),
                ("Account", "Legacy_Customer_Code__c", "L-1")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.retryable());
    assert_eq!(sim.count("Account"), 2);
    for id in &ids {
        assert_ne!(
            sim.record("Account", id).unwrap().get_str("Name"),
            Some("Three")
        );
    }
    // In a collection the same case is a per-record DUPLICATE_EXTERNAL_ID.
    let r = client
        .upsert_many(
            "Account",
            "Legacy_Customer_Code__c",
            &[account("Three").with("Legacy_Customer_Code__c", "L-1")],
        )
        .await
        .unwrap();
    assert_eq!(r[0].errors[0].status_code, "DUPLICATE_EXTERNAL_ID");
}

#[tokio::test]
async fn per_record_errors_are_kept_in_order() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    let records = vec![
        account("A").with("Sage_Customer_Id__c", "C-A"),
        Record::new("Account").with("Phone", "1"),
        account("C"),
        account("D").with("Sage_Customer_Id__c", "c-a"),
        account("E").with("No_Such_Field__c", "x"),
        Record::new("Opportunity")
            .with("Name", "Neg")
            .with("StageName", "Prospecting")
            .with("CloseDate", "2026-12-31")
            .with("Amount", Decimal::new(-1, 0)),
        account(&"x".repeat(256)),
    ];
    let results = client.create_many(&records).await.unwrap();
    let codes: Vec<&str> = results
        .iter()
        .map(|r| {
            r.errors
                .first()
                .map(|e| e.status_code.as_str())
                .unwrap_or("ok")
        })
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "REQUIRED_FIELD_MISSING",
            "ok",
            "DUPLICATE_VALUE",
            "INVALID_FIELD",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "STRING_TOO_LONG",
        ]
    );
    assert_eq!(results[1].errors[0].fields, ["Name"]);
    assert!(
        results[3].errors[0]
            .message
            .contains(results[0].id.as_deref().unwrap())
    );
    assert_eq!(sim.count("Account"), 2);

    // Updates: one good, one unknown id.
    let upd = client
        .update_many(&[
            Record::new("Account")
                .with("Id", results[0].id.clone().unwrap())
                .with("Phone", "2"),
            Record::new("Account")
                .with("Id", "001000000000000AAA")
                .with("Phone", "3"),
        ])
        .await
        .unwrap();
    assert!(upd[0].success);
    assert!(!upd[1].success);
}

#[tokio::test]
async fn query_errors_are_parsed_and_permanent() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    let e = client
        .query("SELECT Id, Foo FROM Account")
        .await
        .unwrap_err();
    match &e {
        SalesforceError::Api {
            status: 400,
            errors,
        } => {
            assert_eq!(errors[0].error_code, "INVALID_FIELD");
            assert!(
                errors[0]
                    .message
                    .contains("No such column 'Foo' on entity 'Account'")
            );
            assert!(errors[0].message.contains("ERROR at Row:1:Column:12"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.retryable());
    let e = client
        .query("SELECT Id FROM Account WHERE Name = 'a' AND")
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some("MALFORMED_QUERY"));
    assert!(!e.retryable());
}

#[tokio::test]
async fn a_503_burst_gives_retryable_errors_then_recovers() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    client.login().await.unwrap();
    sim.fail_next(&[503, 503, 500]);
    for want in [503, 503, 500] {
        let e = client.query("SELECT Id FROM Account").await.unwrap_err();
        assert!(
            matches!(&e, SalesforceError::Api { status, .. } if *status == want),
            "{e}"
        );
        assert!(e.retryable(), "{e}");
    }
    let e503 = SalesforceError::Api {
        status: 503,
        errors: vec![],
    };
    assert!(e503.retryable());
    client.query("SELECT Id FROM Account").await.unwrap();

    // Nobody listening: a transport error, retryable.
    let dead = SalesforceClient::new(
        ClientConfig::new("http://127.0.0.1:9"),
        Credentials::client_credentials("a", "b"),
    )
    .unwrap();
    let e = dead.login().await.unwrap_err();
    assert!(
        matches!(e, SalesforceError::Transport { .. }) && e.retryable(),
        "{e}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_its_own_error() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    client.login().await.unwrap();
    sim.malformed_once();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(
        matches!(&e, SalesforceError::MalformedResponse { status: 200, endpoint, .. } if endpoint.ends_with("/query")),
        "{e}"
    );
    client.query("SELECT Id FROM Account").await.unwrap();
}

#[tokio::test]
async fn limit_info_is_read_and_the_client_slows_down_near_the_limit() {
    let sim = sim().await;
    sim.set_daily_limit(1_000);
    let mut config = client_config(&sim);
    config.limits = LimitPolicy {
        slow_above_permille: 800,
        max_delay_ms: 400,
        reserve_permille: 950,
    };
    let client = SalesforceClient::new(
        config,
        Credentials::client_credentials(&sim.config().client_id, &sim.config().client_secret),
    )
    .unwrap();
    client.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(client.api_usage(), Some((1, 1_000)));
    assert_eq!(client.stats().throttled_ms, 0);

    sim.set_api_usage(899);
    client.query("SELECT Id FROM Account").await.unwrap(); // learns 900/1000
    assert_eq!(client.api_usage(), Some((900, 1_000)));
    let started = Instant::now();
    client.query("SELECT Id FROM Account").await.unwrap();
    // 400 ms × (900 − 800) / (1000 − 800) = 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().throttled_ms, 200);

    // Within the reserve: refused without a call.
    sim.set_api_usage(955);
    client.query("SELECT Id FROM Account").await.unwrap();
    let before = sim.api_usage().0;
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(
        matches!(
            e,
            SalesforceError::LimitReserve {
                used: 956,
                max: 1_000
            }
        ),
        "{e}"
    );
    assert_eq!(sim.api_usage().0, before);

    // Past the daily limit Salesforce answers 403 REQUEST_LIMIT_EXCEEDED.
    let unlimited = cc_client(&sim);
    sim.set_api_usage(1_000);
    let e = unlimited.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(
        matches!(&e, SalesforceError::Api { status: 403, .. }),
        "{e}"
    );
    assert_eq!(e.error_code(), Some("REQUEST_LIMIT_EXCEEDED"));
    assert!(e.retryable());
}

#[tokio::test]
async fn bulk_ingest_with_failures_and_a_query_job_paged_by_locator() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    let tricky = "Line one, with a comma\nand \"quotes\" on line two";
    let mut table = CsvTable {
        columns: vec![
            "Name".into(),
            "Sage_Customer_Id__c".into(),
            "Description".into(),
        ],
        rows: Vec::new(),
    };
    for i in 0..5_000 {
        let name = if i % 2_000 == 7 {
            String::new()
        } else {
            format!("Bulk {i}")
        };
        table
            .rows
            .push(vec![name, format!("B-{i:05}"), format!("{tricky} #{i}")]);
    }
    let outcome = client
        .bulk_ingest("Account", BulkOperation::Insert, None, &table)
        .await
        .unwrap();
    assert_eq!(outcome.job.state, "JobComplete");
    assert_eq!(outcome.successful.len(), 4_997);
    assert_eq!(outcome.failed.len(), 3);
    assert!(
        outcome
            .successful
            .iter()
            .all(|s| s.created && s.id.starts_with("001"))
    );
    for f in &outcome.failed {
        assert!(
            f.error.starts_with("REQUIRED_FIELD_MISSING:"),
            "{}",
            f.error
        );
        assert_eq!(f.id, None);
    }
    let failed_keys: BTreeSet<&str> = outcome
        .failed
        .iter()
        .map(|f| f.fields["Sage_Customer_Id__c"].as_str())
        .collect();
    assert_eq!(
        failed_keys,
        BTreeSet::from(["B-00007", "B-02007", "B-04007"])
    );
    let first = &outcome.successful[0];
    let stored = sim.record("Account", &first.id).unwrap();
    assert_eq!(
        stored.get_str("Description"),
        Some(format!("{tricky} #0").as_str())
    );
    assert_eq!(sim.count("Account"), 4_997);

    // Upsert through Bulk: existing keys are updated, not duplicated.
    let up = CsvTable {
        columns: vec!["Sage_Customer_Id__c".into(), "Phone".into()],
        rows: vec![
            vec!["B-00000".into(), "555".into()],
            vec!["B-99999".into(), "556".into()],
        ],
    };
    let out = client
        .bulk_ingest(
            "Account",
            BulkOperation::Upsert,
            Some("Sage_Customer_Id__c"),
            &up,
        )
        .await
        .unwrap();
    assert_eq!(out.failed.len(), 1, "the new one has no Name");
    assert_eq!(out.successful.len(), 1);
    assert!(!out.successful[0].created);

    let q = client
        .bulk_query(
            "SELECT Id, Name, Description FROM Account ORDER BY Name",
            false,
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(q.pages, 3);
    assert_eq!(q.table.rows.len(), 4_997);
    assert_eq!(q.table.columns, ["Id", "Name", "Description"]);
    let maps = q.table.maps();
    let row = maps.iter().find(|m| m["Name"] == "Bulk 0").unwrap();
    assert_eq!(row["Description"], format!("{tricky} #0"));
    assert!(sim.calls_to("GET /jobs/query/{id}/results") == 3);
}

#[tokio::test]
async fn closed_won_sends_a_signed_event() {
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let sig = headers
                    .get("X-Cashloop-Signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((sig, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = Simulator::start(SimulatorConfig {
        event_webhook_url: Some(format!("http://{addr}/events")),
        ..sim_config()
    })
    .await;
    let client = jwt_client(&sim);
    let opp = client
        .create(
            "Opportunity",
            &Record::new("Opportunity")
                .with("Name", "Deal")
                .with("StageName", "Prospecting")
                .with("CloseDate", "2026-12-31"),
        )
        .await
        .unwrap();
    assert!(sim.events_sent().is_empty());
    client
        .update(
            "Opportunity",
            &opp,
            &Record::default().with("StageName", "Closed Won"),
        )
        .await
        .unwrap();
    // Saving it again as Closed Won is no new event.
    client
        .update(
            "Opportunity",
            &opp,
            &Record::default().with("Description", "x"),
        )
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().unwrap().is_empty() || sim.events_sent()[0].status.is_none() {
        assert!(Instant::now() < deadline, "no event received");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (sig, body) = &got[0];
    let key = gateway::crypto::FingerprintKey::from_hex(1, &sim.config().event_secret_hex).unwrap();
    assert!(gateway::webhooks::verify(
        &key,
        sig,
        body.as_bytes(),
        chrono::Utc::now().timestamp(),
        300
    ));
    assert!(!gateway::webhooks::verify(
        &key,
        sig,
        b"{}",
        chrono::Utc::now().timestamp(),
        300
    ));
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["object"], "Opportunity");
    assert_eq!(json["record_id"], opp.as_str());
    assert_eq!(json["stage"], "Closed Won");
    assert!(json["event_id"].as_str().unwrap().starts_with("evt_"));
    assert!(parse_datetime(json["occurred_at"].as_str().unwrap()).is_some());
    let sent = sim.events_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, Some(200));
    let rec = sim.record("Opportunity", &opp).unwrap();
    assert_eq!(rec.get("IsWon"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn no_secret_in_errors_or_debug() {
    let sim = sim().await;
    let jwt = jwt_client(&sim);
    let cc = cc_client(&sim);
    jwt.login().await.unwrap();
    cc.login().await.unwrap();
    let key_line = PRIVATE_KEY.lines().nth(1).unwrap();
    let secret = sim.config().client_secret.clone();
    let mut texts = vec![format!("{jwt:?}"), format!("{cc:?}")];
    for client in [&jwt, &cc] {
        texts.push(format!(
            "{:?}",
            client.query("SELECT Nope FROM Account").await.unwrap_err()
        ));
        sim.fail_next(&[503]);
        let e = client.query("SELECT Id FROM Account").await.unwrap_err();
        texts.push(format!("{e:?} {e}"));
    }
    let bad = SalesforceClient::new(
        client_config(&sim),
        Credentials::client_credentials(&sim.config().client_id, "a-wrong-secret-123"),
    )
    .unwrap();
    let e = bad.login().await.unwrap_err();
    texts.push(format!("{e:?} {e} {bad:?}"));
    texts.push(format!(
        "{:?}",
        Credentials::jwt_bearer("k", "u", PRIVATE_KEY).unwrap()
    ));
    for t in &texts {
        assert!(!t.contains(key_line), "{t}");
        assert!(!t.contains(&secret), "{t}");
        assert!(!t.contains("a-wrong-secret-123"), "{t}");
        assert!(
            !t.contains("00D5g000004SimAA!"),
            "an access token leaked: {t}"
        );
    }
}

#[tokio::test]
async fn latency_hook_and_all_or_none_rollback() {
    let sim = sim().await;
    let client = jwt_client(&sim);
    client.login().await.unwrap();
    sim.set_latency_ms(20);
    let started = Instant::now();
    client.query("SELECT Id FROM Account").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    sim.set_latency_ms(0);

    // allOrNone=true (sent raw: the client always sends false): one bad record rolls back all.
    let token_client = gateway::http::client();
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        sim.config().client_id,
        sim.config().client_secret
    );
    let token: serde_json::Value = token_client
        .post(format!("{}/services/oauth2/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = serde_json::json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Account"}, "Name": "Good"},
        {"attributes": {"type": "Account"}},
    ]});
    let resp = token_client
        .post(format!(
            "{}/services/data/v62.0/composite/sobjects",
            sim.base_url()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().contains_key("Sforce-Limit-Info"));
    let results: Vec<sync::salesforce::SaveResult> = resp.json().await.unwrap();
    assert_eq!(
        results[0].errors[0].status_code,
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(results[1].errors[0].status_code, "REQUIRED_FIELD_MISSING");
    assert_eq!(sim.count("Account"), 0);

    // More than 200 records in one call is refused as a whole.
    let many: Vec<serde_json::Value> = (0..201)
        .map(|i| serde_json::json!({"attributes": {"type": "Account"}, "Name": format!("N{i}")}))
        .collect();
    let resp = token_client
        .post(format!(
            "{}/services/data/v62.0/composite/sobjects",
            sim.base_url()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(serde_json::json!({"allOrNone": false, "records": many}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let errs: Vec<sync::salesforce::ApiError> = resp.json().await.unwrap();
    assert_eq!(errs[0].error_code, "EXCEEDED_ID_LIMIT");
}
