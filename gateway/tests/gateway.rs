//! Storage tests of the gateway (vault, idempotency keys, payments), on SQLite and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL.

use std::sync::Arc;

use chrono::NaiveDate;
use db::testing::TestDb;
use db::{Db, both_backends};
use gateway::bank::{AccountNumber, BankAccountType, RoutingNumber, SecCode};
use gateway::card::{Expiry, Pan};
use gateway::crypto::{FingerprintKey, Kek, KeyRing, generate_key_hex};
use gateway::vault::{NewBankAccount, NewCard, NewPaymentMethod, Revealed, Vault, VaultKeys};

const PAN: &str = "4111111111111111";
const PAN_2: &str = "5424000000000015";
const ACCOUNT: &str = "000123456789";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn kek(version: u32) -> (Kek, String) {
    let hex = generate_key_hex().unwrap().to_string();
    (Kek::from_hex(version, &hex).unwrap(), hex)
}

fn keys(ring: KeyRing, fp_hex: &str) -> Arc<VaultKeys> {
    Arc::new(VaultKeys {
        ring,
        fingerprint: FingerprintKey::from_hex(1, fp_hex).unwrap(),
    })
}

fn card(pan: &str) -> NewPaymentMethod {
    NewPaymentMethod::Card(NewCard {
        number: Pan::parse(pan).unwrap(),
        expiry: Expiry::parse(12, 2030, today()).unwrap(),
        holder_name: Some("Ada Lovelace".into()),
        postal_code: Some("46282".into()),
    })
}

fn bank() -> NewPaymentMethod {
    NewPaymentMethod::BankAccount(NewBankAccount {
        routing: RoutingNumber::parse("110000000").unwrap(),
        account: AccountNumber::parse(ACCOUNT).unwrap(),
        account_type: BankAccountType::Checking,
        holder_name: "Grace Hopper".into(),
        sec_code: SecCode::Web,
    })
}

/// Every column of every table, as text, so a test can search it for secrets.
async fn everything(db: &Db) -> String {
    let mut out = String::new();
    for t in db::testing::tables(db).await {
        out.push_str(&db::testing::table_text(db, &t, "1").await);
        out.push('\n');
    }
    out
}

async fn vault_for(t: &TestDb) -> (Vault, String) {
    let (k1, _) = kek(1);
    let fp = generate_key_hex().unwrap().to_string();
    (Vault::new(t.db.clone(), keys(KeyRing::new(k1), &fp)), fp)
}

both_backends!(tokenize_and_reveal_round_trip, |t| async move {
    let (vault, _) = vault_for(&t).await;
    let c = vault.tokenize(card(PAN), "test").await.unwrap();
    assert!(
        c.token.starts_with("pm_") && c.token.len() >= 3 + 26,
        "{}",
        c.token
    );
    assert!(!c.token.contains("1111"), "tokens carry no PAN digits");
    assert_eq!(
        (
            c.brand.as_deref(),
            c.last4.as_str(),
            c.exp_month,
            c.exp_year
        ),
        (Some("visa"), "1111", Some(12), Some(2030))
    );
    let b = vault.tokenize(bank(), "test").await.unwrap();
    assert_eq!(
        (
            b.last4.as_str(),
            b.account_type.as_deref(),
            b.sec_code.as_deref()
        ),
        ("6789", Some("checking"), Some("WEB"))
    );
    match vault.reveal(&c.token, "authorize", "test").await.unwrap() {
        Revealed::Card {
            number,
            expiry,
            holder_name,
            postal_code,
        } => {
            assert_eq!(number.expose_digits(), PAN);
            assert_eq!((expiry.month(), expiry.year()), (12, 2030));
            assert_eq!(
                (holder_name.as_deref(), postal_code.as_deref()),
                (Some("Ada Lovelace"), Some("46282"))
            );
        }
        other => panic!("{other:?}"),
    }
    match vault.reveal(&b.token, "debit", "test").await.unwrap() {
        Revealed::BankAccount {
            routing,
            account,
            account_type,
            holder_name,
            sec_code,
        } => {
            assert_eq!(
                (routing.as_str(), account.expose_digits()),
                ("110000000", ACCOUNT)
            );
            assert_eq!(
                (account_type, holder_name.as_str(), sec_code),
                (BankAccountType::Checking, "Grace Hopper", SecCode::Web)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(vault.get(&c.token).await.unwrap(), c);
    let missing = vault.reveal("pm_nope", "x", "test").await.unwrap_err();
    assert_eq!(missing.code(), Some("payment_method_not_found"));
});

both_backends!(same_card_same_fingerprint, |t| async move {
    let (vault, _) = vault_for(&t).await;
    let a = vault.tokenize(card(PAN), "test").await.unwrap();
    let b = vault
        .tokenize(
            card(
                &PAN.chars()
                    .collect::<Vec<_>>()
                    .chunks(4)
                    .map(|c| c.iter().collect::<String>())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "test",
        )
        .await
        .unwrap();
    let c = vault.tokenize(card(PAN_2), "test").await.unwrap();
    assert_ne!(a.token, b.token);
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "the same card, spaced differently"
    );
    assert_ne!(a.fingerprint, c.fingerprint);
    assert_eq!(
        vault.same_as(&a.token).await.unwrap(),
        vec![b.token.clone()]
    );
});

both_backends!(no_secret_outside_the_ciphertext, |t| async move {
    let (vault, fp_hex) = vault_for(&t).await;
    vault.tokenize(card(PAN), "test").await.unwrap();
    vault.tokenize(card(PAN_2), "test").await.unwrap();
    vault.tokenize(bank(), "test").await.unwrap();
    let tok = vault.tokenize(card(PAN), "test").await.unwrap().token;
    vault.reveal(&tok, "authorize", "test").await.unwrap();
    let all = everything(&t.db).await;
    assert!(
        all.contains("vault.reveal"),
        "the audit log records reveals"
    );
    for secret in [PAN, PAN_2, ACCOUNT, &PAN[..12], &fp_hex] {
        assert!(
            !all.contains(secret),
            "{secret} found in the database outside the ciphertext"
        );
        // SQLite shows BLOBs in hex: also look for the digits' hex form.
        assert!(
            !all.to_ascii_uppercase()
                .contains(&hex::encode_upper(secret)),
            "{secret} found as hex"
        );
    }
});

both_backends!(rotation_rewraps_while_rows_stay_readable, |t| async move {
    let (k1, k1_hex) = kek(1);
    let fp = generate_key_hex().unwrap().to_string();
    let v1 = Vault::new(t.db.clone(), keys(KeyRing::new(k1), &fp));
    let mut tokens = Vec::new();
    for _ in 0..7 {
        tokens.push(v1.tokenize(card(PAN), "test").await.unwrap().token);
    }
    tokens.push(v1.tokenize(bank(), "test").await.unwrap().token);
    // Step 1: servers load key 2 as current, key 1 as previous; old rows stay readable.
    let (k2, k2_hex) = kek(2);
    let both = Vault::new(
        t.db.clone(),
        keys(
            KeyRing::new(k2)
                .with_previous(Kek::from_hex(1, &k1_hex).unwrap())
                .unwrap(),
            &fp,
        ),
    );
    assert!(both.reveal(&tokens[0], "check", "test").await.is_ok());
    let fresh = both.tokenize(card(PAN_2), "test").await.unwrap().token;
    // Step 2: rotate; step 3: key 1 can be retired.
    let report = both.rotate("test", &|_| {}).await.unwrap();
    assert_eq!((report.rewrapped, report.current_version), (8, 2));
    assert_eq!(
        both.rotate("test", &|_| {}).await.unwrap().rewrapped,
        0,
        "idempotent"
    );
    let only_k2 = Vault::new(
        t.db.clone(),
        keys(KeyRing::new(Kek::from_hex(2, &k2_hex).unwrap()), &fp),
    );
    for tok in tokens.iter().chain([&fresh]) {
        assert!(
            only_k2.reveal(tok, "check", "test").await.is_ok(),
            "{tok} unreadable after rotation"
        );
    }
    // The retired key alone opens nothing any more.
    let only_k1 = Vault::new(
        t.db.clone(),
        keys(KeyRing::new(Kek::from_hex(1, &k1_hex).unwrap()), &fp),
    );
    assert!(only_k1.reveal(&tokens[0], "check", "test").await.is_err());
});

both_backends!(swapped_ciphertext_does_not_decrypt, |t| async move {
    let (vault, _) = vault_for(&t).await;
    let a = vault.tokenize(card(PAN), "test").await.unwrap().token;
    let b = vault.tokenize(card(PAN_2), "test").await.unwrap().token;
    // Copy b's sealed parts onto a's row, as an attacker with database access could.
    let sql_pg = "UPDATE vault_payment_methods AS x SET wrapped_dek = y.wrapped_dek, dek_nonce = y.dek_nonce, nonce = y.nonce, ciphertext = y.ciphertext, kek_version = y.kek_version FROM vault_payment_methods y WHERE x.token = $1 AND y.token = $2";
    let sql_sqlite = "UPDATE vault_payment_methods SET (wrapped_dek, dek_nonce, nonce, ciphertext, kek_version) = (SELECT wrapped_dek, dek_nonce, nonce, ciphertext, kek_version FROM vault_payment_methods WHERE token = ?2) WHERE token = ?1";
    match &t.db {
        Db::Postgres(p) => sqlx::query(sql_pg)
            .bind(&a)
            .bind(&b)
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(s) => sqlx::query(sql_sqlite)
            .bind(&a)
            .bind(&b)
            .execute(&s.pool)
            .await
            .map(|_| ()),
    }
    .unwrap();
    let err = vault.reveal(&a, "authorize", "test").await.unwrap_err();
    assert!(err.to_string().contains("cryptography"), "{err}");
    assert!(vault.reveal(&b, "authorize", "test").await.is_ok());
});

both_backends!(idempotency_key_claims, |t| async move {
    use gateway::idempotency::{Claim, claim, finish, release};
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let db = &t.db;
    assert_eq!(
        claim(db, "p", "k", "POST /x", &a).await.unwrap(),
        Claim::New
    );
    assert_eq!(
        claim(db, "p", "k", "POST /x", &a).await.unwrap(),
        Claim::InProgress,
        "a duplicate in flight"
    );
    assert_eq!(
        claim(db, "p", "k", "POST /x", &b).await.unwrap(),
        Claim::Mismatch
    );
    assert_eq!(
        claim(db, "p", "k", "POST /y", &a).await.unwrap(),
        Claim::Mismatch,
        "same key, other route"
    );
    assert_eq!(
        claim(db, "other", "k", "POST /x", &a).await.unwrap(),
        Claim::New,
        "keys are per principal"
    );
    finish(db, "p", "k", 201, "{\"ok\":true}").await.unwrap();
    assert_eq!(
        claim(db, "p", "k", "POST /x", &a).await.unwrap(),
        Claim::Replay {
            status: 201,
            body: "{\"ok\":true}".into()
        }
    );
    // A released key (server error) runs again on retry; a finished one is never released.
    release(db, "other", "k").await.unwrap();
    assert_eq!(
        claim(db, "other", "k", "POST /x", &a).await.unwrap(),
        Claim::New
    );
    release(db, "p", "k").await.unwrap();
    assert!(matches!(
        claim(db, "p", "k", "POST /x", &a).await.unwrap(),
        Claim::Replay { .. }
    ));
});

// ---- payments ----

use gateway::sandbox::{AchEvent, SandboxProcessor};
use gateway::service::{NewPayment, Payments, PostingAccounts};
use ledger::{
    AccountCode, AccountType, Currency, CustomerId, Direction, EntityCode, Ledger, LedgerOptions,
    Money, NewAccount, Text, WriterConfig,
};

struct Shop {
    payments: Payments,
    vault: Vault,
    ledger: Ledger,
    sandbox: Arc<SandboxProcessor>,
}

async fn shop(t: &TestDb) -> Shop {
    let sandbox = Arc::new(SandboxProcessor::new());
    let (payments, vault, ledger) = parts(t, sandbox.clone()).await;
    Shop {
        payments,
        vault,
        ledger,
        sandbox,
    }
}

/// A ledger with clearing (1100) and receivable (1200) accounts, a vault, and payments
/// through `processor`.
async fn parts(
    t: &TestDb,
    processor: Arc<dyn gateway::processor::Processor>,
) -> (Payments, Vault, Ledger) {
    let ledger = Ledger::new(
        t.db.clone(),
        LedgerOptions {
            writer: WriterConfig::for_backend(t.db.backend()),
            clock: Arc::new(ledger::SystemClock),
        },
    );
    let entity = EntityCode::parse("MAIN", "e").unwrap();
    for (code, name, sub) in [
        ("1100", "Processor clearing", false),
        ("1200", "Accounts receivable", true),
    ] {
        ledger
            .create_account(
                NewAccount {
                    entity: entity.clone(),
                    code: AccountCode::parse(code, "c").unwrap(),
                    name: Text::parse(name, "n").unwrap(),
                    account_type: AccountType::Asset,
                    normal_balance: Direction::Debit,
                    currency: Currency::parse("USD").unwrap(),
                    customer_subledger: sub,
                },
                "test",
            )
            .await
            .unwrap();
    }
    let (vault, _) = vault_for(t).await;
    let mut accounts = std::collections::HashMap::new();
    accounts.insert(
        Currency::parse("USD").unwrap(),
        PostingAccounts {
            entity,
            clearing: AccountCode::parse("1100", "c").unwrap(),
            receivable: AccountCode::parse("1200", "c").unwrap(),
        },
    );
    let payments = Payments::new(
        t.db.clone(),
        ledger.clone(),
        vault.clone(),
        processor,
        accounts,
    );
    (payments, vault, ledger)
}

fn pay(token: &str, amount: &str, capture: bool) -> NewPayment {
    NewPayment {
        token: token.to_owned(),
        amount: Money::parse(&format!("{amount} USD")).unwrap(),
        capture,
        cvv: None,
        opportunity_id: Some("006OPP".into()),
        account_id: Some(CustomerId::parse("001ACME", "a").unwrap()),
        invoice_refs: vec!["INV-1".into()],
        metadata: serde_json::json!({"source": "test"}),
    }
}

async fn clearing(s: &Shop) -> i64 {
    clearing_of(&s.ledger).await
}

async fn clearing_of(ledger: &Ledger) -> i64 {
    let e = EntityCode::parse("MAIN", "e").unwrap();
    ledger
        .balance(&e, &AccountCode::parse("1100", "c").unwrap(), None)
        .await
        .unwrap()
        .balance
        .amount_minor()
}

both_backends!(card_payments_post_to_the_ledger, |t| async move {
    let s = shop(&t).await;
    let tok = s.vault.tokenize(card(PAN), "test").await.unwrap().token;
    // Sale.
    let sale = s
        .payments
        .create(pay(&tok, "100.00", true), "test")
        .await
        .unwrap();
    assert_eq!((sale.status, sale.captured_minor), ("captured", 10000));
    assert_eq!(clearing(&s).await, 10000);
    // Authorize, partial capture, two refunds, one too many.
    let auth = s
        .payments
        .create(pay(&tok, "50.00", false), "test")
        .await
        .unwrap();
    assert_eq!(auth.status, "requires_capture");
    assert_eq!(clearing(&s).await, 10000, "an authorization moves no money");
    let cap = s.payments.capture(&auth.id, Some(4000)).await.unwrap();
    assert_eq!((cap.status, cap.captured_minor), ("captured", 4000));
    let r1 = s.payments.refund(&auth.id, Some(1500)).await.unwrap();
    assert_eq!((r1.status, r1.refunded_minor), ("partially_refunded", 1500));
    let too_much = s.payments.refund(&auth.id, Some(2501)).await.unwrap_err();
    assert!(
        too_much.to_string().contains("left to refund"),
        "{too_much}"
    );
    let r2 = s.payments.refund(&auth.id, None).await.unwrap();
    assert_eq!((r2.status, r2.refunded_minor), ("refunded", 4000));
    assert_eq!(clearing(&s).await, 10000);
    // Void.
    let v = s
        .payments
        .create(pay(&tok, "7.00", false), "test")
        .await
        .unwrap();
    assert_eq!(s.payments.void(&v.id).await.unwrap().status, "voided");
    assert!(
        s.payments.capture(&v.id, None).await.is_err(),
        "no capture after a void"
    );
    assert_eq!(s.payments.by_opportunity("006OPP").await.unwrap().len(), 3);
    // The receivable of the customer went down by what was kept.
    let items = s
        .ledger
        .open_items(&CustomerId::parse("001ACME", "a").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        items.iter().map(|i| i.open.amount_minor()).sum::<i64>(),
        -10000
    );
    s.ledger.seal().await.unwrap();
    assert!(s.ledger.verify(&|_| {}).await.unwrap().ok());
});

both_backends!(declines_and_timeouts, |t| async move {
    let s = shop(&t).await;
    for (number, code) in [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ] {
        let tok = s.vault.tokenize(card(number), "test").await.unwrap().token;
        let p = s
            .payments
            .create(pay(&tok, "10.00", true), "test")
            .await
            .unwrap();
        assert_eq!(
            (p.status, p.failure_code.as_deref()),
            ("failed", Some(code)),
            "{number}"
        );
    }
    assert_eq!(clearing(&s).await, 0, "a decline posts nothing");
    // A timeout after the charge happened: unknown, then resolved by lookup — never guessed.
    let tok = s
        .vault
        .tokenize(card("4000000000000408"), "test")
        .await
        .unwrap()
        .token;
    let p = s
        .payments
        .create(pay(&tok, "25.00", true), "test")
        .await
        .unwrap();
    assert_eq!(p.status, "unknown");
    assert_eq!(clearing(&s).await, 0);
    // The background resolver leaves fresh `unknown` payments to the request that is
    // creating them; `get` resolves on read.
    assert_eq!(s.payments.resolve_unknown(10).await.unwrap(), 0);
    // A second one, left unknown for a minute, is the resolver's.
    let q = s
        .payments
        .create(pay(&tok, "5.00", true), "test")
        .await
        .unwrap();
    assert_eq!(q.status, "unknown");
    let minute_ago = chrono::Utc::now() - chrono::Duration::seconds(60);
    match &t.db {
        Db::Postgres(pool) => {
            sqlx::query("UPDATE gateway_payments SET updated_at = $1 WHERE id = $2")
                .bind(minute_ago)
                .bind(&q.id)
                .execute(pool)
                .await
                .map(|_| ())
        }
        Db::Sqlite(sq) => sqlx::query("UPDATE gateway_payments SET updated_at = ? WHERE id = ?")
            .bind(minute_ago.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .bind(&q.id)
            .execute(&sq.pool)
            .await
            .map(|_| ()),
    }
    .unwrap();
    assert_eq!(s.payments.resolve_unknown(10).await.unwrap(), 1);
    assert_eq!(s.payments.get(&q.id).await.unwrap().status, "captured");
    let resolved = s.payments.get(&p.id).await.unwrap();
    assert_eq!(
        (resolved.status, resolved.captured_minor),
        ("captured", 2500)
    );
    assert_eq!(s.payments.get(&p.id).await.unwrap().status, "captured");
    assert_eq!(clearing(&s).await, 3000, "each posted exactly once");
});

both_backends!(ach_returns_reverse_and_disable, |t| async move {
    let s = shop(&t).await;
    let bank_with = |suffix: &str| {
        NewPaymentMethod::BankAccount(NewBankAccount {
            routing: RoutingNumber::parse("110000000").unwrap(),
            account: AccountNumber::parse(&format!("0001234{suffix}")).unwrap(),
            account_type: BankAccountType::Checking,
            holder_name: "Grace Hopper".into(),
            sec_code: SecCode::Web,
        })
    };
    let ok = s
        .vault
        .tokenize(bank_with("5555"), "test")
        .await
        .unwrap()
        .token;
    let r01 = s
        .vault
        .tokenize(bank_with("0001"), "test")
        .await
        .unwrap()
        .token;
    let r02 = s
        .vault
        .tokenize(bank_with("0002"), "test")
        .await
        .unwrap()
        .token;
    let mut ids = Vec::new();
    for tok in [&ok, &r01, &r02] {
        let p = s
            .payments
            .create(pay(tok, "30.00", true), "test")
            .await
            .unwrap();
        assert_eq!(p.status, "pending");
        ids.push(p.id);
    }
    assert_eq!(clearing(&s).await, 9000, "ACH debits post when submitted");
    for ev in s.sandbox.settle_all() {
        match ev {
            AchEvent::Settled { processor_ref } => s
                .payments
                .ach_event(&processor_ref, None, "test")
                .await
                .unwrap(),
            AchEvent::Returned {
                processor_ref,
                r_code,
                ..
            } => s
                .payments
                .ach_event(&processor_ref, Some(r_code), "test")
                .await
                .unwrap(),
        };
    }
    let statuses: Vec<&str> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(s.payments.get(id).await.unwrap().status);
        }
        v
    };
    assert_eq!(statuses, vec!["settled", "returned", "returned"]);
    assert_eq!(clearing(&s).await, 3000, "each return reversed its posting");
    // R02 disables the account; R01 may be presented again.
    assert_eq!(s.vault.get(&r02).await.unwrap().status, "disabled");
    assert_eq!(s.vault.get(&r01).await.unwrap().status, "active");
    let refused = s
        .payments
        .create(pay(&r02, "1.00", true), "test")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("disabled"), "{refused}");
    s.ledger.seal().await.unwrap();
    assert!(s.ledger.verify(&|_| {}).await.unwrap().ok());
    let all = everything(&t.db).await;
    assert!(!all.contains("00012340001") && !all.contains(PAN));
});

both_backends!(
    concurrent_captures_reach_the_processor_once,
    |t| async move {
        let s = shop(&t).await;
        let tok = s.vault.tokenize(card(PAN), "test").await.unwrap().token;
        for round in 0..5 {
            let auth = s
                .payments
                .create(pay(&tok, "20.00", false), "test")
                .await
                .unwrap();
            let (a, b) = tokio::join!(
                s.payments.capture(&auth.id, None),
                s.payments.capture(&auth.id, None)
            );
            assert_eq!(
                u8::from(a.is_ok()) + u8::from(b.is_ok()),
                1,
                "round {round}: {a:?} / {b:?}"
            );
            let loser = if a.is_ok() { b } else { a };
            let msg = loser.unwrap_err().to_string();
            assert!(
                msg.contains("changed by another request") || msg.contains("cannot take"),
                "{msg}"
            );
            let p = s.payments.get(&auth.id).await.unwrap();
            assert_eq!((p.status, p.captured_minor), ("captured", 2000));
            let sbx = s
                .sandbox
                .transaction(p.processor_ref.as_deref().unwrap())
                .unwrap();
            assert_eq!(sbx.captured_minor, 2000, "the processor captured once");
        }
        assert_eq!(clearing(&s).await, 5 * 2000);
    }
);

both_backends!(rotation_while_payments_are_in_flight, |t| async move {
    // Tokens written under key 1; then the service runs with key 2 current and key 1 previous
    // while `rotate` re-wraps the rows under it, and payments keep revealing tokens.
    let (k1, k1_hex) = kek(1);
    let fp = generate_key_hex().unwrap().to_string();
    let old = Vault::new(t.db.clone(), keys(KeyRing::new(k1), &fp));
    let mut tokens = Vec::new();
    for _ in 0..60 {
        tokens.push(old.tokenize(card(PAN), "test").await.unwrap().token);
    }
    let (k2, k2_hex) = kek(2);
    let both = Vault::new(
        t.db.clone(),
        keys(
            KeyRing::new(k2)
                .with_previous(Kek::from_hex(1, &k1_hex).unwrap())
                .unwrap(),
            &fp,
        ),
    );
    let s = shop(&t).await;
    let payments = Payments::new(
        t.db.clone(),
        s.ledger.clone(),
        both.clone(),
        s.sandbox.clone(),
        {
            let mut m = std::collections::HashMap::new();
            m.insert(
                Currency::parse("USD").unwrap(),
                PostingAccounts {
                    entity: EntityCode::parse("MAIN", "e").unwrap(),
                    clearing: AccountCode::parse("1100", "c").unwrap(),
                    receivable: AccountCode::parse("1200", "c").unwrap(),
                },
            );
            m
        },
    );
    let mut load = Vec::new();
    for chunk in tokens.chunks(15) {
        let (payments, chunk) = (payments.clone(), chunk.to_vec());
        load.push(tokio::spawn(async move {
            for tok in chunk {
                let p = payments
                    .create(pay(&tok, "1.00", true), "test")
                    .await
                    .unwrap();
                assert_eq!(p.status, "captured");
            }
        }));
    }
    let report = both.rotate("test", &|_| {}).await.unwrap();
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(report.current_version, 2);
    let only_k2 = Vault::new(
        t.db.clone(),
        keys(KeyRing::new(Kek::from_hex(2, &k2_hex).unwrap()), &fp),
    );
    for tok in &tokens {
        assert!(
            only_k2.reveal(tok, "check", "test").await.is_ok(),
            "{tok} not re-wrapped"
        );
    }
    assert_eq!(clearing(&s).await, 60 * 100);
});

// ---- outbound webhooks ----

/// A tiny HTTP receiver on 127.0.0.1:0 that records requests and answers with `status`.
async fn receiver(status: u16) -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = &text[..end];
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let sig = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .starts_with("cashloop-signature:")
                                        .then(|| l[19..].trim().to_owned())
                                })
                                .unwrap_or_default();
                            let body =
                                String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                            store.lock().unwrap().push((sig, body));
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

both_backends!(webhooks_are_signed_delivered_and_retried, |t| async move {
    use gateway::webhooks::{MAX_ATTEMPTS, Outbox, Subscriber, verify};
    let (ok_url, ok_got) = receiver(200).await;
    let (bad_url, bad_got) = receiver(500).await;
    let secret_hex = generate_key_hex().unwrap().to_string();
    let secret = Arc::new(FingerprintKey::from_hex(1, &secret_hex).unwrap());
    let outbox = Outbox::new(
        t.db.clone(),
        vec![
            Subscriber {
                name: "salesforce".into(),
                url: ok_url,
                secret: secret.clone(),
            },
            Subscriber {
                name: "broken".into(),
                url: bad_url,
                secret: secret.clone(),
            },
        ],
    )
    .unwrap();
    let mut s = shop(&t).await;
    s.payments = s.payments.clone().with_outbox(outbox.clone());
    let tok = s.vault.tokenize(card(PAN), "test").await.unwrap().token;
    let sale = s
        .payments
        .create(pay(&tok, "9.99", true), "test")
        .await
        .unwrap();
    // A rolled-back change announces nothing: a refused refund leaves no event behind.
    assert!(s.payments.refund(&sale.id, Some(100_000)).await.is_err());
    let now = chrono::Utc::now();
    let (delivered, failed) = outbox.deliver_due(now).await.unwrap();
    assert_eq!((delivered, failed), (1, 1));
    let got = ok_got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (sig, body) = &got[0];
    assert!(
        verify(&secret, sig, body.as_bytes(), now.timestamp(), 300),
        "signature verifies: {sig}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (
            v["type"].as_str(),
            v["data"]["id"].as_str(),
            v["data"]["status"].as_str()
        ),
        (
            Some("payment.updated"),
            Some(sale.id.as_str()),
            Some("captured")
        )
    );
    assert!(!body.contains(PAN));
    // The broken subscriber is retried with backoff, then given up on.
    assert_eq!(
        outbox.deliver_due(now).await.unwrap(),
        (0, 0),
        "not due again yet"
    );
    let mut later = now;
    for _ in 1..MAX_ATTEMPTS {
        later += chrono::Duration::hours(2);
        assert_eq!(outbox.deliver_due(later).await.unwrap(), (0, 1));
    }
    later += chrono::Duration::hours(2);
    assert_eq!(
        outbox.deliver_due(later).await.unwrap(),
        (0, 0),
        "failed for good"
    );
    assert_eq!(
        bad_got.lock().unwrap().len(),
        usize::try_from(MAX_ATTEMPTS).unwrap()
    );
    let failed = outbox.deliveries(Some("failed"), 10).await.unwrap();
    assert_eq!(
        (
            failed.len(),
            failed[0].subscriber.as_str(),
            failed[0].attempts,
            failed[0].last_status
        ),
        (1, "broken", MAX_ATTEMPTS, Some(500))
    );
    assert_eq!(
        outbox
            .deliveries(Some("delivered"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
});

#[path = "support/authnet.rs"]
mod authnet;
