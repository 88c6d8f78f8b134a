//! What the quote-to-cash loop tests share: a Salesforce simulator with a sync over it, and an
//! entity's receivables chart.
#![allow(dead_code)]

use db::Db;
use ledger::{AccountCode, AccountType, Currency, Direction, EntityCode, Ledger, NewAccount, Text};
use sync::flows::{PullObject, SalesforceSync};
use sync::q2c::LedgerAccounts;
use sync::salesforce::simulator::{Simulator as SfSim, SimulatorConfig as SfSimConfig};
use sync::salesforce::{ClientConfig, Credentials, SalesforceClient};

/// The Salesforce simulator and a sync on `db` that pulls `pull`, as the integration user.
pub async fn salesforce(db: &Db, pull: Vec<PullObject>) -> (SfSim, SalesforceSync) {
    let sf = SfSim::start(SfSimConfig::default()).await;
    let creds = Credentials::client_credentials(&sf.config().client_id, &sf.config().client_secret);
    let client = SalesforceClient::new(ClientConfig::new(sf.base_url()), creds).unwrap();
    let sync = SalesforceSync::new(
        db.clone(),
        client,
        pull,
        Some(sf.config().api_user_id.clone()),
    );
    (sf, sync)
}

/// `entity`'s books in `currency`: receivables 1200 (with a customer sub-ledger), revenue
/// 4000, sales tax 2200, undeposited funds 1010, each code followed by `suffix`.
pub async fn ar_books(
    ledger: &Ledger,
    entity: &str,
    currency: &str,
    suffix: &str,
) -> (Currency, LedgerAccounts) {
    let cur = Currency::parse(currency).unwrap();
    let e = EntityCode::parse(entity, "entity").unwrap();
    let code = |c: &str| AccountCode::parse(&format!("{c}{suffix}"), "code").unwrap();
    for (c, name, t, dir, sub) in [
        (
            "1200",
            "Receivables",
            AccountType::Asset,
            Direction::Debit,
            true,
        ),
        (
            "4000",
            "Revenue",
            AccountType::Revenue,
            Direction::Credit,
            false,
        ),
        (
            "2200",
            "Sales tax",
            AccountType::Liability,
            Direction::Credit,
            false,
        ),
        (
            "1010",
            "Undeposited funds",
            AccountType::Asset,
            Direction::Debit,
            false,
        ),
    ] {
        ledger
            .create_account(
                NewAccount {
                    entity: e.clone(),
                    code: code(c),
                    name: Text::parse(name, "name").unwrap(),
                    account_type: t,
                    normal_balance: dir,
                    currency: cur,
                    customer_subledger: sub,
                },
                "test",
            )
            .await
            .unwrap();
    }
    (
        cur,
        LedgerAccounts {
            entity: e,
            receivable: code("1200"),
            revenue: code("4000"),
            tax: code("2200"),
            cash: code("1010"),
        },
    )
}
