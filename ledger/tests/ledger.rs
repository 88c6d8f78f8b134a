//! Storage tests of the ledger, each run on SQLite and (when CASHLOOP_TEST_POSTGRES_URL is
//! set) on PostgreSQL through `db::both_backends!`.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use db::testing::TestDb;
use db::{Db, both_backends};
use ledger::export::{ExportFormat, writer_for};
use ledger::{
    AccountCode, AccountType, CustomerId, Direction, EntityCode, EntryHeader, EntryId, ErrorCode,
    ExportRequest, FixedClock, IdempotencyKey, Ledger, LedgerError, LedgerOptions, Money,
    NewAccount, NewEntry, NewPosting, Period, SourceName, Text, WriterConfig,
};

fn entity() -> EntityCode {
    EntityCode::parse("MAIN", "entity").unwrap()
}

fn code(s: &str) -> AccountCode {
    AccountCode::parse(s, "code").unwrap()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn usd(s: &str) -> Money {
    Money::parse(&format!("{s} USD")).unwrap()
}

fn open(t: &TestDb) -> Ledger {
    let clock = Arc::new(FixedClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap(),
    ));
    Ledger::new(
        t.db.clone(),
        LedgerOptions {
            writer: WriterConfig::for_backend(t.db.backend()),
            clock,
        },
    )
}

/// A small chart: cash, AR (customer sub-ledger), revenue, tax, a EUR cash account.
async fn chart(l: &Ledger) {
    for (c, name, ty, cur, sub) in [
        ("1000", "Cash", AccountType::Asset, "USD", false),
        (
            "1200",
            "Accounts receivable",
            AccountType::Asset,
            "USD",
            true,
        ),
        (
            "2100",
            "Sales tax payable",
            AccountType::Liability,
            "USD",
            false,
        ),
        ("4000", "Revenue", AccountType::Revenue, "USD", false),
        ("1010", "Cash EUR", AccountType::Asset, "EUR", false),
        ("4010", "Revenue EUR", AccountType::Revenue, "EUR", false),
    ] {
        l.create_account(
            NewAccount {
                entity: entity(),
                code: code(c),
                name: Text::parse(name, "name").unwrap(),
                account_type: ty,
                normal_balance: ty.default_normal_balance(),
                currency: ledger::Currency::parse(cur).unwrap(),
                customer_subledger: sub,
            },
            "test",
        )
        .await
        .unwrap();
    }
}

fn posting(account: &str, direction: Direction, amount: Money) -> NewPosting {
    NewPosting {
        account: code(account),
        direction,
        amount,
        customer_id: None,
        document_ref: None,
        memo: None,
    }
}

fn ar(direction: Direction, amount: Money, customer: &str, doc: &str) -> NewPosting {
    NewPosting {
        customer_id: Some(CustomerId::parse(customer, "c").unwrap()),
        document_ref: Some(Text::parse(doc, "d").unwrap()),
        ..posting("1200", direction, amount)
    }
}

fn entry(key: &str, date: &str, postings: Vec<NewPosting>) -> NewEntry {
    NewEntry::new(
        EntryHeader {
            idempotency_key: IdempotencyKey::parse(key, "k").unwrap(),
            entity: entity(),
            effective_date: day(date),
            source: SourceName::parse("test", "s").unwrap(),
            external_ref: None,
            memo: None,
        },
        postings,
    )
    .unwrap()
}

/// Invoice: Dr AR (customer, doc) / Cr Revenue.
fn invoice(key: &str, date: &str, amount: &str, customer: &str, doc: &str) -> NewEntry {
    entry(
        key,
        date,
        vec![
            ar(Direction::Debit, usd(amount), customer, doc),
            posting("4000", Direction::Credit, usd(amount)),
        ],
    )
}

/// Payment: Dr Cash / Cr AR (customer, doc).
fn payment(key: &str, date: &str, amount: &str, customer: &str, doc: &str) -> NewEntry {
    entry(
        key,
        date,
        vec![
            posting("1000", Direction::Debit, usd(amount)),
            ar(Direction::Credit, usd(amount), customer, doc),
        ],
    )
}

/// Every ledger table as text, to prove a rejected request wrote nothing.
async fn dump(db: &Db) -> String {
    const TABLES: &[(&str, &str)] = &[
        ("ledger_accounts", "id"),
        ("ledger_entries", "id"),
        ("ledger_postings", "entry_id, line"),
        ("ledger_balances", "account_id, day"),
        ("ledger_unsealed", "entry_id"),
        ("ledger_chain", "seq"),
        ("ledger_periods", "entity, period"),
    ];
    let mut out = String::new();
    for (table, order) in TABLES {
        let text = db::testing::table_text(db, table, order).await;
        out.push_str(&format!("== {table}\n{text}\n"));
    }
    out
}

fn code_of(err: LedgerError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a rejection, got {err}"))
}

both_backends!(posts_and_reads_back, |t| async move {
    let l = open(&t);
    chart(&l).await;
    let out = l
        .post(invoice("inv-1", "2026-10-05", "100.00", "ACME", "INV-1"))
        .await
        .unwrap();
    assert!(!out.replayed);
    let read = l.entry(out.entry.id).await.unwrap();
    assert_eq!(read, out.entry, "what was returned is what was stored");
    let bal = l.balance(&entity(), &code("1200"), None).await.unwrap();
    assert_eq!(bal.balance, usd("100.00"));
    let rev = l.balance(&entity(), &code("4000"), None).await.unwrap();
    assert_eq!(
        rev.balance,
        usd("100.00"),
        "revenue is credit-normal: positive"
    );
    // As of a date before the entry, nothing.
    let before = l
        .balance(&entity(), &code("1200"), Some(day("2026-10-04")))
        .await
        .unwrap();
    assert_eq!(before.balance, usd("0.00"));
    let tb = l.trial_balance(Some(&entity()), None).await.unwrap();
    let usd_c = ledger::Currency::parse("USD").unwrap();
    assert_eq!(tb.totals[&usd_c], (10000, 10000));
});

both_backends!(idempotency_replays_and_conflicts, |t| async move {
    let l = open(&t);
    chart(&l).await;
    let first = l
        .post(invoice("k", "2026-10-05", "10.00", "ACME", "INV-1"))
        .await
        .unwrap();
    let again = l
        .post(invoice("k", "2026-10-05", "10.00", "ACME", "INV-1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry, first.entry);
    let before = dump(&t.db).await;
    let err = l
        .post(invoice("k", "2026-10-05", "10.01", "ACME", "INV-1"))
        .await
        .unwrap_err();
    assert_eq!(code_of(err), ErrorCode::IdempotencyKeyReused);
    assert_eq!(
        dump(&t.db).await,
        before,
        "a conflicting replay writes nothing"
    );
    // Duplicates inside one batch: the first writes, the second replays, the third conflicts.
    let res = l
        .post_batch(vec![
            invoice("b", "2026-10-06", "1.00", "ACME", "INV-2"),
            invoice("b", "2026-10-06", "1.00", "ACME", "INV-2"),
            invoice("b", "2026-10-06", "2.00", "ACME", "INV-2"),
        ])
        .await
        .unwrap();
    let a = res[0].as_ref().unwrap();
    let b = res[1].as_ref().unwrap();
    assert!(!a.replayed && b.replayed && a.entry.id == b.entry.id);
    assert_eq!(
        res[2].as_ref().unwrap_err().code(),
        Some(ErrorCode::IdempotencyKeyReused)
    );
});

both_backends!(rejections_write_nothing, |t| async move {
    let l = open(&t);
    chart(&l).await;
    l.post(invoice("ok", "2026-10-05", "10.00", "ACME", "INV-1"))
        .await
        .unwrap();
    let before = dump(&t.db).await;
    let cases: Vec<(NewEntry, ErrorCode)> = vec![
        (
            entry(
                "u1",
                "2026-10-05",
                vec![
                    posting("9999", Direction::Debit, usd("1.00")),
                    posting("4000", Direction::Credit, usd("1.00")),
                ],
            ),
            ErrorCode::UnknownAccount,
        ),
        (
            entry(
                "u2",
                "2026-10-05",
                vec![
                    posting("1010", Direction::Debit, usd("1.00")),
                    posting("4000", Direction::Credit, usd("1.00")),
                ],
            ),
            ErrorCode::CurrencyMismatch,
        ),
        (
            entry(
                "u3",
                "2026-10-05",
                vec![
                    posting("1200", Direction::Debit, usd("1.00")),
                    posting("4000", Direction::Credit, usd("1.00")),
                ],
            ),
            ErrorCode::CustomerRequired,
        ),
    ];
    for (e, want) in cases {
        let err = l.post(e).await.unwrap_err();
        let r = err.rejection().unwrap();
        assert_eq!(r.code, want, "{}", r.message);
        assert!(
            r.field.as_deref().is_some_and(|f| r.message.contains(f)),
            "message names the field: {}",
            r.message
        );
    }
    // Closed period.
    l.close_period(&entity(), Period::parse("2026-09", "p").unwrap(), "test")
        .await
        .unwrap();
    let before_closed = dump(&t.db).await;
    let err = l
        .post(invoice("late", "2026-09-30", "5.00", "ACME", "INV-9"))
        .await
        .unwrap_err();
    assert_eq!(code_of(err), ErrorCode::PeriodClosed);
    assert_eq!(dump(&t.db).await, before_closed);
    assert_ne!(before, before_closed, "closing a period is recorded");
    // Reopened, the same entry goes in.
    l.reopen_period(&entity(), Period::parse("2026-09", "p").unwrap(), "test")
        .await
        .unwrap();
    l.post(invoice("late", "2026-09-30", "5.00", "ACME", "INV-9"))
        .await
        .unwrap();
});

both_backends!(reversal_undoes_and_happens_once, |t| async move {
    let l = open(&t);
    chart(&l).await;
    let orig = l
        .post(invoice("inv", "2026-10-05", "42.00", "ACME", "INV-1"))
        .await
        .unwrap();
    let key = IdempotencyKey::parse("rev-inv", "k").unwrap();
    let rev = l
        .reverse(orig.entry.id, key.clone(), Some(day("2026-10-06")), None)
        .await
        .unwrap();
    assert_eq!(rev.entry.reverses_entry_id, Some(orig.entry.id));
    assert_eq!(
        l.balance(&entity(), &code("1200"), None)
            .await
            .unwrap()
            .balance,
        usd("0.00")
    );
    assert_eq!(
        l.balance(&entity(), &code("1200"), Some(day("2026-10-05")))
            .await
            .unwrap()
            .balance,
        usd("42.00")
    );
    let replay = l
        .reverse(orig.entry.id, key, Some(day("2026-10-06")), None)
        .await
        .unwrap();
    assert!(replay.replayed);
    let err = l
        .reverse(
            orig.entry.id,
            IdempotencyKey::parse("rev-2", "k").unwrap(),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(err), ErrorCode::AlreadyReversed);
    let err = l
        .reverse(
            EntryId(999_999),
            IdempotencyKey::parse("rev-3", "k").unwrap(),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(err), ErrorCode::EntryNotFound);
});

both_backends!(journal_rows_are_append_only, |t| async move {
    let l = open(&t);
    chart(&l).await;
    l.post(invoice("inv", "2026-10-05", "1.00", "ACME", "INV-1"))
        .await
        .unwrap();
    l.seal().await.unwrap();
    for sql in [
        "UPDATE ledger_postings SET amount_minor = 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_entries SET memo = 'x'",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_chain",
    ] {
        let res = match &t.db {
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::Sqlite(s) => sqlx::query(sql).execute(&s.pool).await.map(|_| ()),
        };
        let err = res.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
});

/// Changes a posting amount behind the ledger's back (as a DBA could, triggers off).
async fn tamper(db: &Db, entry_id: i64) {
    match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE ledger_postings SET amount_minor = amount_minor + 1 WHERE entry_id = $1 AND line = 1")
                .bind(entry_id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        Db::Sqlite(s) => {
            sqlx::query("DROP TRIGGER ledger_postings_no_update")
                .execute(&s.pool)
                .await
                .unwrap();
            sqlx::query("UPDATE ledger_postings SET amount_minor = amount_minor + 1 WHERE entry_id = ? AND line = 1")
                .bind(entry_id)
                .execute(&s.pool)
                .await
                .unwrap();
        }
    }
}

both_backends!(verify_names_the_tampered_entry, |t| async move {
    let l = open(&t);
    chart(&l).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let e = l
            .post(invoice(
                &format!("inv-{i}"),
                "2026-10-05",
                "3.00",
                "ACME",
                &format!("INV-{i}"),
            ))
            .await
            .unwrap();
        ids.push(e.entry.id.0);
    }
    assert_eq!(l.seal().await.unwrap(), 20);
    let ok = l.verify(&|_| {}).await.unwrap();
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(
        (ok.entries, ok.sealed, ok.unsealed, ok.chain_head_seq),
        (20, 20, 0, Some(20))
    );
    tamper(&t.db, ids[7]).await;
    let bad = l.verify(&|_| {}).await.unwrap();
    assert!(!bad.ok());
    let first = bad.first_break.clone().unwrap();
    assert_eq!(first.entry_id, Some(ids[7]), "{bad:?}");
    assert_eq!(first.seq, Some(8));
    assert!(
        first.reason.contains("hash mismatch") || first.reason.contains("balance"),
        "{first:?}"
    );
    // The tampered entry also no longer balances, and the balance table disagrees.
    assert!(bad.problems >= 3, "{bad:?}");
});

both_backends!(open_items_per_customer, |t| async move {
    let l = open(&t);
    chart(&l).await;
    l.post(invoice("i1", "2026-10-01", "100.00", "ACME", "INV-1"))
        .await
        .unwrap();
    l.post(invoice("i2", "2026-10-02", "50.00", "ACME", "INV-2"))
        .await
        .unwrap();
    l.post(invoice("i3", "2026-10-02", "70.00", "GLOBEX", "INV-3"))
        .await
        .unwrap();
    l.post(payment("p1", "2026-10-10", "100.00", "ACME", "INV-1"))
        .await
        .unwrap();
    l.post(payment("p2", "2026-10-11", "20.00", "ACME", "INV-2"))
        .await
        .unwrap();
    let acme = CustomerId::parse("ACME", "c").unwrap();
    let items = l.open_items(&acme, None).await.unwrap();
    let got: Vec<(Option<String>, String)> = items
        .iter()
        .map(|i| (i.document_ref.clone(), i.open.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![(Some("INV-2".to_owned()), "30.00 USD".to_owned())]
    );
    let earlier = l.open_items(&acme, Some(day("2026-10-05"))).await.unwrap();
    assert_eq!(earlier.len(), 2);
});

both_backends!(concurrent_writers_on_hot_accounts, |t| async move {
    let l = open(&t);
    chart(&l).await;
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let l = l.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let e = entry(
                    &format!("t{task}-{i}"),
                    "2026-10-15",
                    vec![
                        posting("1000", Direction::Debit, usd("1.25")),
                        posting("4000", Direction::Credit, usd("1.25")),
                    ],
                );
                l.post(e).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let n = i64::try_from(TASKS * PER_TASK).unwrap();
    let cash = l.balance(&entity(), &code("1000"), None).await.unwrap();
    assert_eq!(cash.debit_minor, n * 125, "no lost update");
    l.seal().await.unwrap();
    let report = l.verify(&|_| {}).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, u64::try_from(n).unwrap());
});

both_backends!(csv_export_has_a_trailer, |t| async move {
    let l = open(&t);
    chart(&l).await;
    for i in 0..5 {
        l.post(invoice(
            &format!("inv-{i}"),
            "2026-10-05",
            "10.00",
            "ACME",
            &format!("INV-{i}"),
        ))
        .await
        .unwrap();
    }
    l.post(invoice("nov", "2026-11-01", "99.00", "ACME", "INV-NOV"))
        .await
        .unwrap();
    l.seal().await.unwrap();
    let req = ExportRequest {
        format: ExportFormat::Csv,
        from: day("2026-10-01"),
        to: day("2026-10-31"),
        entity: None,
        currency: None,
    };
    let meta = l.export_meta(&req).await.unwrap();
    assert_eq!((meta.entry_count, meta.posting_count), (5, 10));
    let buf = SharedBuf::default();
    let mut w = writer_for(ExportFormat::Csv, buf.clone());
    let summary = l.export(&req, &meta, w.as_mut(), &|_| {}).await.unwrap();
    drop(w);
    assert_eq!(summary.postings, 10);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 10 + 1,
        "header, one row per posting, one trailer per currency:\n{text}"
    );
    let trailer = lines.last().unwrap();
    assert!(trailer.starts_with("trailer"), "{trailer}");
    assert!(
        trailer.contains("50.00"),
        "total debits in the trailer: {trailer}"
    );
    let head = meta.chain_head.unwrap();
    assert!(
        trailer.contains(&hex::encode(head.1)),
        "chain head in the trailer: {trailer}"
    );
});

/// A cloneable in-memory writer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- property tests, on both backends ----

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

/// Runs an async block from inside a (synchronous) proptest case.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A balanced entry: per currency, debit legs whose total is split into credit legs.
fn valid_entry(key: String) -> impl Strategy<Value = NewEntry> {
    let legs = |debit: &'static str, credit: &'static str, cur: &'static str| {
        (prop::collection::vec(1i64..1_000_000, 1..4), 1usize..4).prop_map(
            move |(debits, n_credit)| {
                let c = ledger::Currency::parse(cur).unwrap();
                let total: i64 = debits.iter().sum();
                let mut out: Vec<NewPosting> = debits
                    .iter()
                    .map(|d| posting(debit, Direction::Debit, Money::from_minor(*d, c)))
                    .collect();
                // Split the total into n_credit positive parts.
                let n = i64::try_from(n_credit).unwrap().min(total);
                let base = total / n;
                for i in 0..n {
                    let amount = if i == n - 1 {
                        total - base * (n - 1)
                    } else {
                        base
                    };
                    out.push(posting(
                        credit,
                        Direction::Credit,
                        Money::from_minor(amount, c),
                    ));
                }
                out
            },
        )
    };
    (
        legs("1000", "4000", "USD"),
        prop::option::of(legs("1010", "4010", "EUR")),
        1u32..=28,
        1u32..=12,
        any::<bool>(),
    )
        .prop_map(move |(usd_legs, eur_legs, d, m, shuffle)| {
            let mut postings = usd_legs;
            postings.extend(eur_legs.unwrap_or_default());
            if shuffle {
                postings.reverse();
            }
            entry(&key, &format!("2026-{m:02}-{d:02}"), postings)
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    UnknownAccount,
    CurrencyMismatch,
    CustomerMissing,
    ClosedPeriod,
    ReusedKey,
}

/// Applies `m` to a valid entry, giving one the ledger must refuse.
fn mutate(e: &NewEntry, m: &Mutation, used_key: &str) -> NewEntry {
    let mut postings = e.postings().to_vec();
    let mut key = e.idempotency_key().as_str().to_owned();
    let mut date = e.effective_date();
    match m {
        Mutation::UnknownAccount => postings[0].account = code("9999"),
        Mutation::CurrencyMismatch => {
            // A USD leg re-pointed at a EUR account: still balanced, wrong currency.
            let i = postings
                .iter()
                .position(|p| p.amount.currency().code() == "USD")
                .unwrap();
            postings[i].account = code(if postings[i].direction == Direction::Debit {
                "1010"
            } else {
                "4010"
            });
        }
        Mutation::CustomerMissing => {
            let i = postings
                .iter()
                .position(|p| {
                    p.direction == Direction::Debit && p.amount.currency().code() == "USD"
                })
                .unwrap();
            postings[i].account = code("1200");
            postings[i].customer_id = None;
        }
        Mutation::ClosedPeriod => date = day("2025-12-15"),
        Mutation::ReusedKey => {
            key = used_key.to_owned();
            date = day("2026-06-30");
        }
    }
    entry(&key, &date.to_string(), postings)
}

fn expected_code(m: &Mutation) -> ErrorCode {
    match m {
        Mutation::UnknownAccount => ErrorCode::UnknownAccount,
        Mutation::CurrencyMismatch => ErrorCode::CurrencyMismatch,
        Mutation::CustomerMissing => ErrorCode::CustomerRequired,
        Mutation::ClosedPeriod => ErrorCode::PeriodClosed,
        Mutation::ReusedKey => ErrorCode::IdempotencyKeyReused,
    }
}

both_backends!(
    prop_valid_entries_keep_the_trial_balance_at_zero,
    |t| async move {
        let l = open(&t);
        chart(&l).await;
        let n = std::sync::atomic::AtomicU32::new(0);
        let mut runner = TestRunner::new(PropConfig::with_cases(48));
        runner
            .run(
                &(0u32..1_000_000).prop_flat_map(|k| valid_entry(format!("p{k}"))),
                |e| {
                    let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = format!("{}-{i}", e.idempotency_key());
                    let e = entry(&key, &e.effective_date().to_string(), e.postings().to_vec());
                    let posted =
                        block(l.post(e)).map_err(|err| TestCaseError::fail(err.to_string()))?;
                    prop_assert_eq!(block(l.entry(posted.entry.id)).unwrap(), posted.entry);
                    let tb = block(l.trial_balance(None, None)).unwrap();
                    for (c, (d, cr)) in &tb.totals {
                        prop_assert_eq!(d, cr, "currency {}", c);
                    }
                    Ok(())
                },
            )
            .unwrap();
        l.seal().await.unwrap();
        let report = l.verify(&|_| {}).await.unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.entries, u64::from(n.into_inner()));
    }
);

both_backends!(prop_invalid_entries_change_nothing, |t| async move {
    let l = open(&t);
    chart(&l).await;
    l.close_period(&entity(), Period::parse("2025-12", "p").unwrap(), "test")
        .await
        .unwrap();
    let used = l
        .post(invoice("used-key", "2026-06-30", "1.00", "ACME", "INV-1"))
        .await
        .unwrap();
    let used_key = used.entry.idempotency_key.as_str().to_owned();
    let before = dump(&t.db).await;
    let mutation = prop_oneof![
        Just(Mutation::UnknownAccount),
        Just(Mutation::CurrencyMismatch),
        Just(Mutation::CustomerMissing),
        Just(Mutation::ClosedPeriod),
        Just(Mutation::ReusedKey),
    ];
    let mut runner = TestRunner::new(PropConfig::with_cases(40));
    runner
        .run(
            &(
                (0u32..1_000_000).prop_flat_map(|k| valid_entry(format!("bad{k}"))),
                mutation,
            ),
            |(e, m)| {
                let bad = mutate(&e, &m, &used_key);
                let err = block(l.post(bad)).expect_err("must be refused");
                prop_assert_eq!(err.code(), Some(expected_code(&m)), "{}", err);
                prop_assert_eq!(block(dump(&t.db)), before.clone());
                Ok(())
            },
        )
        .unwrap();
    // And entries that cannot even be built: unbalanced, zero, single-legged.
    let hdr = || EntryHeader {
        idempotency_key: IdempotencyKey::parse("never", "k").unwrap(),
        entity: entity(),
        effective_date: day("2026-06-30"),
        source: SourceName::parse("test", "s").unwrap(),
        external_ref: None,
        memo: None,
    };
    for (postings, want) in [
        (
            vec![
                posting("1000", Direction::Debit, usd("1.00")),
                posting("4000", Direction::Credit, usd("0.99")),
            ],
            ErrorCode::UnbalancedEntry,
        ),
        (
            vec![
                posting("1000", Direction::Debit, usd("0.00")),
                posting("4000", Direction::Credit, usd("0.00")),
            ],
            ErrorCode::NonPositiveAmount,
        ),
        (
            vec![posting("1000", Direction::Debit, usd("1.00"))],
            ErrorCode::TooFewPostings,
        ),
    ] {
        assert_eq!(NewEntry::new(hdr(), postings).unwrap_err().code, want);
    }
    assert_eq!(dump(&t.db).await, before);
});

both_backends!(
    post_in_tx_commits_and_rolls_back_with_the_caller,
    |t| async move {
        let l = open(&t);
        chart(&l).await;
        let before = dump(&t.db).await;
        // Rolled back: nothing remains, not even the sealing-queue row or the balance.
        let mut tx = t.db.begin().await.unwrap();
        let out = l
            .post_in_tx(
                &mut tx,
                invoice("tx-1", "2026-10-05", "7.00", "ACME", "INV-7"),
            )
            .await
            .unwrap();
        assert!(!out.replayed);
        // Inside the transaction, a replay sees the uncommitted entry.
        let again = l
            .post_in_tx(
                &mut tx,
                invoice("tx-1", "2026-10-05", "7.00", "ACME", "INV-7"),
            )
            .await
            .unwrap();
        assert!(again.replayed && again.entry == out.entry);
        tx.rollback().await.unwrap();
        assert_eq!(dump(&t.db).await, before);
        // Committed: there, balanced, sealable, verifiable.
        let mut tx = t.db.begin().await.unwrap();
        let out = l
            .post_in_tx(
                &mut tx,
                invoice("tx-2", "2026-10-05", "7.00", "ACME", "INV-7"),
            )
            .await
            .unwrap();
        let err = l
            .post_in_tx(
                &mut tx,
                entry(
                    "tx-3",
                    "2026-10-05",
                    vec![
                        posting("9999", Direction::Debit, usd("1.00")),
                        posting("4000", Direction::Credit, usd("1.00")),
                    ],
                ),
            )
            .await
            .unwrap_err();
        assert_eq!(
            code_of(err),
            ErrorCode::UnknownAccount,
            "rejected before touching the transaction"
        );
        tx.commit().await.unwrap();
        assert_eq!(l.entry(out.entry.id).await.unwrap(), out.entry);
        assert_eq!(
            l.balance(&entity(), &code("1200"), None)
                .await
                .unwrap()
                .balance,
            usd("7.00")
        );
        l.seal().await.unwrap();
        assert!(l.verify(&|_| {}).await.unwrap().ok());
    }
);
