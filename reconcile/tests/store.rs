//! Storage-backed runs on both backends: all-or-nothing imports, snapshots, runs with
//! high-water marks, identical reruns and backends, the period lease, approvals.

use std::collections::BTreeMap;

use db::testing::{self, TestDb};
use ledger::{
    AccountCode, AccountType, Currency, Direction, EntityCode, Ledger, LedgerOptions, NewAccount,
    Text,
};
use reconcile::store::{AdjustmentAccounts, RunReport, RunRequest, Store, StoreError};
use reconcile::{Kind, MatchConfig};

const PAYMENTS: &str = "id,entity,customer,currency,amount,date,reference,source,batch_id
P1,US,C1,USD,100.00,2026-10-05,INV-1,sage_receipt,
P2,US,C2,USD,49.50,2026-10-07,remittance INV-2,ach_settlement,
P3,US,C3,USD,300.00,2026-10-09,INV-3,gateway_capture,
P4,US,C1,USD,10.00,2026-11-02,,sage_receipt,
P5,UK,C9,GBP,80.00,2026-10-12,INV-9,sage_receipt,
P0,US,C1,USD,5.00,2026-09-20,,sage_receipt,
";

const INVOICES: &str = "id,number,kind,entity,customer,currency,amount_open,date,due_date
I1,INV-1,invoice,US,C1,USD,100.00,2026-09-01,2026-10-01
I2,INV-2,invoice,US,C2,USD,50.00,2026-09-02,2026-10-02
I3,INV-3,invoice,US,C3,USD,250.00,2026-09-03,2026-10-03
I4,INV-4,invoice,US,C4,USD,75.00,2026-09-04,2026-10-04
I9,INV-9,invoice,UK,C9,GBP,80.00,2026-09-05,2026-10-05
";

async fn both() -> Vec<TestDb> {
    let mut v = vec![testing::sqlite().await];
    v.extend(testing::postgres().await);
    v
}

fn request(period: &str) -> RunRequest {
    RunRequest {
        period: period.to_owned(),
        entity: None,
        dry_run: false,
        actor: "test".into(),
        config: MatchConfig::default(),
        lease_ms: 30_000,
    }
}

async fn loaded(t: &TestDb) -> Store {
    let store = Store::new(t.db.clone());
    store
        .import(
            Kind::Payments,
            PAYMENTS.as_bytes(),
            "file:p.csv",
            false,
            "test",
        )
        .await
        .expect("payments");
    store
        .import(
            Kind::Invoices,
            INVOICES.as_bytes(),
            "file:i.csv",
            true,
            "test",
        )
        .await
        .expect("invoices");
    store
}

fn category(r: &RunReport, kind: &str, key: &str) -> String {
    r.results
        .iter()
        .find(|x| x.kind == kind && x.item_key == key)
        .unwrap_or_else(|| panic!("{kind} {key} is not in the report"))
        .category
        .clone()
}

#[tokio::test]
async fn import_is_all_or_nothing_and_idempotent() {
    for t in both().await {
        let store = Store::new(t.db.clone());
        let bad = "id,entity,customer,currency,amount,date,reference,source,batch_id
P1,US,C1,USD,100.00,2026-10-05,INV-1,sage_receipt,
P2,US,C2,USD,12.345,2026-10-07,,sage_receipt,
P3,US,C3,XXX,1.00,2026-13-01,,sage_receipt,
";
        match store
            .import(
                Kind::Payments,
                bad.as_bytes(),
                "file:bad.csv",
                false,
                "test",
            )
            .await
        {
            Err(StoreError::Invalid(i)) => {
                let lines: Vec<u64> = i.errors.iter().map(|e| e.line).collect();
                assert_eq!(lines, vec![3, 4, 4], "{i}");
                assert!(i.to_string().contains("column amount"), "{i}");
                assert!(i.to_string().contains("column currency"), "{i}");
            }
            other => panic!("expected the file refused, got {other:?}"),
        }
        assert_eq!(store.high_water().await.unwrap(), 0, "nothing was written");
        let missing = "id,entity,customer,currency,amount,date\nP1,US,C1,USD,1.00,2026-10-01\n";
        assert!(matches!(
            store
                .import(Kind::Payments, missing.as_bytes(), "f", false, "test")
                .await,
            Err(StoreError::Invalid(_))
        ));

        let first = store
            .import(
                Kind::Payments,
                PAYMENTS.as_bytes(),
                "file:p.csv",
                false,
                "test",
            )
            .await
            .unwrap();
        assert_eq!((first.rows, first.added, first.unchanged), (6, 6, 0));
        let again = store
            .import(
                Kind::Payments,
                PAYMENTS.as_bytes(),
                "file:p.csv",
                false,
                "test",
            )
            .await
            .unwrap();
        assert_eq!((again.added, again.changed, again.unchanged), (0, 0, 6));
        assert_eq!(
            again.high_water, first.high_water,
            "a re-import adds no row"
        );
        // Column order and padding do not matter; a changed amount is a new version.
        let reordered = "amount , id,entity,customer,currency,date,reference,source,batch_id
  101.00,P1,US,C1,USD,2026-10-05,INV-1,sage_receipt,
";
        let changed = store
            .import(Kind::Payments, reordered.as_bytes(), "f", false, "test")
            .await
            .unwrap();
        assert_eq!((changed.added, changed.changed), (0, 1));
        let inputs = store
            .load(changed.high_water, None, chrono::NaiveDate::MIN)
            .await
            .unwrap();
        assert_eq!(inputs.payments.len(), 6);
        let p1 = inputs
            .payments
            .iter()
            .find(|p| p.id.as_str() == "P1")
            .unwrap();
        assert_eq!(p1.amount.amount_minor(), 10_100);
        // At the earlier high-water mark the earlier version is read.
        let before = store
            .load(first.high_water, None, chrono::NaiveDate::MIN)
            .await
            .unwrap();
        let p1 = before
            .payments
            .iter()
            .find(|p| p.id.as_str() == "P1")
            .unwrap();
        assert_eq!(p1.amount.amount_minor(), 10_000);
    }
}

#[tokio::test]
async fn an_ar_snapshot_closes_items_it_no_longer_lists() {
    for t in both().await {
        let store = loaded(&t).await;
        let later = "id,number,kind,entity,customer,currency,amount_open,date,due_date
I2,INV-2,invoice,US,C2,USD,50.00,2026-09-02,2026-10-02
I5,INV-5,invoice,US,C5,USD,20.00,2026-10-20,2026-11-20
";
        let r = store
            .import(Kind::Invoices, later.as_bytes(), "f", true, "test")
            .await
            .unwrap();
        assert_eq!((r.added, r.unchanged, r.closed), (1, 1, 4));
        let inputs = store
            .load(r.high_water, None, chrono::NaiveDate::MIN)
            .await
            .unwrap();
        let ids: Vec<&str> = inputs.open_items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["I2", "I5"]);
        // Without --snapshot a file only adds.
        let r = store
            .import(Kind::Invoices, INVOICES.as_bytes(), "f", false, "test")
            .await
            .unwrap();
        assert_eq!((r.added, r.closed), (4, 0));
    }
}

#[tokio::test]
async fn a_run_is_stored_and_a_rerun_is_identical() {
    let mut digests = Vec::new();
    let mut bodies = Vec::new();
    for t in both().await {
        let store = loaded(&t).await;
        let run = store.run(&request("2026-10"), |_| {}).await.unwrap();
        let id = run.run.id.expect("stored");
        assert_eq!(category(&run, "payment", "P1"), "matched");
        assert_eq!(category(&run, "payment", "P2"), "partial_within_tolerance");
        assert_eq!(category(&run, "payment", "P3"), "over_payment");
        assert_eq!(category(&run, "payment", "P4"), "timing");
        assert_eq!(category(&run, "item", "I4"), "unmatched_invoice");
        assert!(
            !run.results.iter().any(|r| r.item_key == "P0"),
            "a payment dated before the period is not an input"
        );
        let kinds: Vec<&str> = run.adjustments.iter().map(|a| a.kind.as_str()).collect();
        assert!(
            kinds.contains(&"write_off") && kinds.contains(&"unapplied_cash"),
            "{kinds:?}"
        );
        // Every input in exactly one category: totals add up to the rows.
        let total: u64 = run
            .totals
            .values()
            .flat_map(|c| c.values())
            .map(|t| t.count)
            .sum();
        assert_eq!(total as usize, run.results.len());

        // Stored as computed.
        let stored = store.report(id).await.unwrap();
        assert_eq!(stored, run);
        // A rerun on the same inputs: a new run, the same results and digest.
        let rerun = store.run(&request("2026-10"), |_| {}).await.unwrap();
        assert_ne!(rerun.run.id, run.run.id);
        assert_eq!(rerun.run.digest, run.run.digest);
        assert_eq!(rerun.results, run.results);
        // New input: a different digest, and the earlier run still reads as it was.
        store
            .import(
                Kind::Payments,
                b"id,entity,customer,currency,amount,date,reference,source,batch_id\nP6,US,C4,USD,75.00,2026-10-30,INV-4,sage_receipt,\n",
                "f",
                false,
                "test",
            )
            .await
            .unwrap();
        let third = store.run(&request("2026-10"), |_| {}).await.unwrap();
        assert_ne!(third.run.digest, run.run.digest);
        assert_eq!(category(&third, "item", "I4"), "matched");
        assert_eq!(store.report(id).await.unwrap(), run);
        // A dry run stores nothing.
        let before = store.runs(100).await.unwrap().len();
        let mut dry = request("2026-10");
        dry.dry_run = true;
        let d = store.run(&dry, |_| {}).await.unwrap();
        assert_eq!(d.run.id, None);
        assert_eq!(d.run.digest, third.run.digest);
        assert_eq!(store.runs(100).await.unwrap().len(), before);
        assert!(matches!(
            store.report(9_999).await,
            Err(StoreError::RunNotFound(9_999))
        ));

        digests.push(run.run.digest.clone());
        let mut body = run.clone();
        body.run.started_at_ms = 0;
        body.run.finished_at_ms = 0;
        body.run.id = None;
        bodies.push(serde_json::to_string(&body).unwrap());
    }
    // SQLite and PostgreSQL give the same results.
    digests.dedup();
    assert_eq!(digests.len(), 1, "{digests:?}");
    bodies.dedup();
    assert_eq!(bodies.len(), 1);
}

#[tokio::test]
async fn an_entity_run_sees_only_that_entity() {
    for t in both().await {
        let store = loaded(&t).await;
        let mut req = request("2026-10");
        req.entity = Some("UK".into());
        let r = store.run(&req, |_| {}).await.unwrap();
        let keys: Vec<&str> = r.results.iter().map(|x| x.item_key.as_str()).collect();
        assert_eq!(keys, vec!["P5", "I9"]);
        assert_eq!(category(&r, "payment", "P5"), "matched");
        assert_eq!(r.run.entity, "UK");
    }
}

#[tokio::test]
async fn the_period_lease_keeps_a_second_run_out() {
    for t in both().await {
        let store = loaded(&t).await;
        // Another process holds October.
        store
            .acquire_lease("2026-10|", "other-host:1", 60_000)
            .await
            .unwrap();
        match store.run(&request("2026-10"), |_| {}).await {
            Err(StoreError::Busy { holder, .. }) => assert_eq!(holder, "other-host:1"),
            other => panic!("expected Busy, got {other:?}"),
        }
        // Other periods and entities are not held.
        store.run(&request("2026-09"), |_| {}).await.unwrap();
        let mut uk = request("2026-10");
        uk.entity = Some("UK".into());
        store.run(&uk, |_| {}).await.unwrap();
        // Released → runs; a lease that expired (a crashed holder) is taken over.
        store
            .release_lease("2026-10|", "other-host:1")
            .await
            .unwrap();
        store.run(&request("2026-10"), |_| {}).await.unwrap();
        store
            .acquire_lease("2026-10|", "crashed:1", 1)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store.run(&request("2026-10"), |_| {}).await.unwrap();
        // Two runs at once through two connections: one wins, the other is told.
        let s2 = Store::new(t.db.clone());
        let (a, b) = tokio::join!(
            store.acquire_lease("2026-12|", "a", 60_000),
            s2.acquire_lease("2026-12|", "b", 60_000)
        );
        assert!(a.is_ok() != b.is_ok(), "exactly one holder: {a:?} {b:?}");
    }
}

#[tokio::test]
async fn approving_posts_each_adjustment_once() {
    for t in both().await {
        let store = loaded(&t).await;
        let ledger = Ledger::new(t.db.clone(), LedgerOptions::for_db(&t.db));
        let usd = Currency::parse("USD").unwrap();
        let entity = EntityCode::parse("MAIN", "entity").unwrap();
        let code = |c: &str| AccountCode::parse(c, "code").unwrap();
        for (c, ty, dir, sub) in [
            ("1200", AccountType::Asset, Direction::Debit, true),
            ("6100", AccountType::Expense, Direction::Debit, false),
            ("7100", AccountType::Revenue, Direction::Credit, false),
            ("2300", AccountType::Liability, Direction::Credit, false),
        ] {
            ledger
                .create_account(
                    NewAccount {
                        entity: entity.clone(),
                        code: code(c),
                        name: Text::parse(c, "name").unwrap(),
                        account_type: ty,
                        normal_balance: dir,
                        currency: usd,
                        customer_subledger: sub,
                    },
                    "test",
                )
                .await
                .unwrap();
        }
        let accounts = BTreeMap::from([(
            usd,
            AdjustmentAccounts {
                entity: entity.clone(),
                receivable: code("1200"),
                write_off: code("6100"),
                fx_gain_loss: code("7100"),
                unapplied_cash: code("2300"),
            },
        )]);
        let run = store.run(&request("2026-10"), |_| {}).await.unwrap();
        let id = run.run.id.unwrap();
        let write_off = run
            .adjustments
            .iter()
            .find(|a| a.kind == "write_off")
            .unwrap();
        assert_eq!(write_off.amount_minor, 50);
        assert!(matches!(
            store.approve(&ledger, id, Some(&[99]), &accounts, "test").await,
            Err(StoreError::Rejected(m)) if m.contains("99")
        ));
        let one = store
            .approve(
                &ledger,
                id,
                Some(&[write_off.ord]),
                &accounts,
                "finance@example.com",
            )
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        let rest = store
            .approve(&ledger, id, None, &accounts, "test")
            .await
            .unwrap();
        assert_eq!(rest.len(), run.adjustments.len() - 1);
        assert!(
            store
                .approve(&ledger, id, None, &accounts, "test")
                .await
                .unwrap()
                .is_empty()
        );
        let report = store.report(id).await.unwrap();
        assert!(
            report
                .adjustments
                .iter()
                .all(|a| a.status == "approved" && a.ledger_entry_id.is_some())
        );
        let bal = |c: &str| {
            let ledger = ledger.clone();
            let entity = entity.clone();
            let c = code(c);
            async move { ledger.balance(&entity, &c, None).await.unwrap() }
        };
        assert_eq!(bal("6100").await.balance.amount_minor(), 50);
        assert_eq!(bal("2300").await.balance.amount_minor(), 5_000);
        // AR: Cr 0.50 written off, Dr 50.00 moved to unapplied cash.
        assert_eq!(bal("1200").await.balance.amount_minor(), 5_000 - 50);
        let tb = ledger.trial_balance(Some(&entity), None).await.unwrap();
        for (cur, (dr, cr)) in &tb.totals {
            assert_eq!(dr, cr, "{cur} does not balance");
        }
    }
}
