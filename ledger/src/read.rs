//! Read models: account balances as of a date, the trial balance, AR open items per customer.
//! Balances come from the per-day balance table (maintained in the posting transaction),
//! so a balance costs one indexed range sum, not a scan of the journal.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::entry::Account;
use crate::error::{LedgerError, Result};
use crate::money::{Currency, Money};
use crate::store::Sums;
use crate::types::Direction;

/// The balance of one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountBalance {
    pub account: Account,
    pub as_of: Option<NaiveDate>,
    pub debit_minor: i64,
    pub credit_minor: i64,
    /// Debits minus credits for debit-normal accounts, credits minus debits otherwise:
    /// positive when the balance sits on the account's normal side.
    #[serde(serialize_with = "ser_money")]
    pub balance: Money,
}

pub(crate) fn ser_money<S: serde::Serializer>(
    m: &Money,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&m.to_string())
}

impl AccountBalance {
    pub(crate) fn new(account: Account, as_of: Option<NaiveDate>, sums: Sums) -> Result<Self> {
        let net = match account.normal_balance {
            Direction::Debit => sums.debit_minor.checked_sub(sums.credit_minor),
            Direction::Credit => sums.credit_minor.checked_sub(sums.debit_minor),
        }
        .ok_or_else(|| {
            LedgerError::Corrupt(format!("balance of account {} overflows", account.code))
        })?;
        Ok(AccountBalance {
            balance: Money::from_minor(net, account.currency),
            debit_minor: sums.debit_minor,
            credit_minor: sums.credit_minor,
            account,
            as_of,
        })
    }
}

/// One line of the trial balance: the net balance on its debit or credit side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceRow {
    pub account: Account,
    /// Net debit balance (0 if the account is in credit).
    pub debit_minor: i64,
    /// Net credit balance (0 if the account is in debit).
    pub credit_minor: i64,
}

/// The trial balance: per currency, total debits equal total credits — asserted on read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalance {
    pub as_of: Option<NaiveDate>,
    pub entity: Option<String>,
    pub rows: Vec<TrialBalanceRow>,
    /// Per currency: (total debits, total credits), in minor units.
    pub totals: BTreeMap<Currency, (i128, i128)>,
}

impl TrialBalance {
    pub(crate) fn build(
        as_of: Option<NaiveDate>,
        entity: Option<String>,
        accounts: Vec<(Account, Sums)>,
    ) -> Result<TrialBalance> {
        let mut rows = Vec::with_capacity(accounts.len());
        let mut totals: BTreeMap<Currency, (i128, i128)> = BTreeMap::new();
        for (account, sums) in accounts {
            let net = i128::from(sums.debit_minor) - i128::from(sums.credit_minor);
            let (debit, credit) = if net >= 0 { (net, 0) } else { (0, -net) };
            let t = totals.entry(account.currency).or_default();
            t.0 += debit;
            t.1 += credit;
            rows.push(TrialBalanceRow {
                debit_minor: i64::try_from(debit).map_err(|_| overflow(&account))?,
                credit_minor: i64::try_from(credit).map_err(|_| overflow(&account))?,
                account,
            });
        }
        for (c, (d, cr)) in &totals {
            if d != cr {
                return Err(LedgerError::Corrupt(format!(
                    "trial balance does not balance in {c}: debits {d}, credits {cr} (minor units)"
                )));
            }
        }
        Ok(TrialBalance {
            as_of,
            entity,
            rows,
            totals,
        })
    }
}

fn overflow(a: &Account) -> LedgerError {
    LedgerError::Corrupt(format!("balance of account {} overflows", a.code))
}

/// An open AR document of one customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenItem {
    pub account_code: String,
    pub document_ref: Option<String>,
    pub currency: Currency,
    /// Debits to the customer (invoiced), credits (paid or credited), and what is left.
    pub debit_minor: i64,
    pub credit_minor: i64,
    #[serde(serialize_with = "ser_money")]
    pub open: Money,
    pub first_date: NaiveDate,
    pub last_date: NaiveDate,
}
