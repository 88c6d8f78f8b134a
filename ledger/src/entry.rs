//! Accounts, journal entries and postings, and the invariants that make an entry valid:
//! two or more postings, every amount positive, debits equal credits per currency.
//! The same balance check runs on the way in (before write) and on the way out (after read).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::error::{ErrorCode, Rejection};
use crate::money::{Currency, Money};
use crate::types::{
    AccountCode, AccountId, AccountType, CustomerId, Direction, EntityCode, EntryId,
    IdempotencyKey, SourceName, Text,
};

/// Most postings one entry may carry (a bound on memory and transaction size).
pub const MAX_POSTINGS_PER_ENTRY: usize = 1000;

/// A new account for the chart of accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub entity: EntityCode,
    pub code: AccountCode,
    pub name: Text,
    pub account_type: AccountType,
    pub normal_balance: Direction,
    pub currency: Currency,
    /// Postings to this account must name a customer (an AR control account, say).
    pub customer_subledger: bool,
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub entity: EntityCode,
    pub code: AccountCode,
    pub name: String,
    pub account_type: AccountType,
    pub normal_balance: Direction,
    pub currency: Currency,
    pub customer_subledger: bool,
    pub created_at: DateTime<Utc>,
}

/// One side of a new entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPosting {
    pub account: AccountCode,
    pub direction: Direction,
    /// Always positive; the direction carries the sign.
    pub amount: Money,
    pub customer_id: Option<CustomerId>,
    /// The sub-ledger document this posting belongs to (an invoice number), for open items.
    pub document_ref: Option<Text>,
    pub memo: Option<Text>,
}

/// A journal entry that has passed every check that needs no database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    idempotency_key: IdempotencyKey,
    entity: EntityCode,
    effective_date: NaiveDate,
    source: SourceName,
    external_ref: Option<Text>,
    memo: Option<Text>,
    reverses: Option<EntryId>,
    postings: Vec<NewPosting>,
}

/// The header fields of a [`NewEntry`], before validation.
#[derive(Clone, Debug)]
pub struct EntryHeader {
    pub idempotency_key: IdempotencyKey,
    pub entity: EntityCode,
    pub effective_date: NaiveDate,
    pub source: SourceName,
    pub external_ref: Option<Text>,
    pub memo: Option<Text>,
}

impl NewEntry {
    /// Validates the postings: count, positive amounts, balance per currency.
    pub fn new(header: EntryHeader, postings: Vec<NewPosting>) -> Result<NewEntry, Rejection> {
        Self::build(header, None, postings)
    }

    fn build(
        header: EntryHeader,
        reverses: Option<EntryId>,
        postings: Vec<NewPosting>,
    ) -> Result<NewEntry, Rejection> {
        if postings.len() < 2 {
            return Err(Rejection::new(
                ErrorCode::TooFewPostings,
                Some("postings".to_owned()),
                format!(
                    "postings: an entry needs at least 2 postings, this one has {}",
                    postings.len()
                ),
            ));
        }
        if postings.len() > MAX_POSTINGS_PER_ENTRY {
            return Err(Rejection::new(
                ErrorCode::TooManyPostings,
                Some("postings".to_owned()),
                format!(
                    "postings: at most {MAX_POSTINGS_PER_ENTRY} postings per entry, this one has {}",
                    postings.len()
                ),
            ));
        }
        for (i, p) in postings.iter().enumerate() {
            if !p.amount.is_positive() {
                return Err(Rejection::new(
                    ErrorCode::NonPositiveAmount,
                    Some(format!("postings[{i}].amount")),
                    format!(
                        "postings[{i}].amount: must be greater than zero (got {}); the direction says debit or credit",
                        p.amount
                    ),
                ));
            }
        }
        check_balanced(postings.iter().map(|p| (p.direction, p.amount))).map_err(|imbalance| {
            Rejection::new(
                ErrorCode::UnbalancedEntry,
                Some("postings".to_owned()),
                format!("postings: the entry does not balance: {imbalance}"),
            )
        })?;
        Ok(NewEntry {
            idempotency_key: header.idempotency_key,
            entity: header.entity,
            effective_date: header.effective_date,
            source: header.source,
            external_ref: header.external_ref,
            memo: header.memo,
            reverses,
            postings,
        })
    }

    /// The entry that undoes `original`: same accounts and amounts, directions swapped.
    pub fn reversal_of(
        original: &JournalEntry,
        idempotency_key: IdempotencyKey,
        effective_date: NaiveDate,
        memo: Option<Text>,
    ) -> Result<NewEntry, Rejection> {
        let postings = original
            .postings
            .iter()
            .map(|p| NewPosting {
                account: p.account_code.clone(),
                direction: p.direction.opposite(),
                amount: p.amount,
                customer_id: p.customer_id.clone(),
                document_ref: p.document_ref.clone(),
                memo: p.memo.clone(),
            })
            .collect();
        let memo = match memo {
            Some(m) => Some(m),
            None => Text::parse(&format!("Reversal of entry {}", original.id), "memo").ok(),
        };
        Self::build(
            EntryHeader {
                idempotency_key,
                entity: original.entity.clone(),
                effective_date,
                source: original.source.clone(),
                external_ref: original.external_ref.clone(),
                memo,
            },
            Some(original.id),
            postings,
        )
    }

    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.idempotency_key
    }
    pub fn entity(&self) -> &EntityCode {
        &self.entity
    }
    pub fn effective_date(&self) -> NaiveDate {
        self.effective_date
    }
    pub fn source(&self) -> &SourceName {
        &self.source
    }
    pub fn external_ref(&self) -> Option<&Text> {
        self.external_ref.as_ref()
    }
    pub fn memo(&self) -> Option<&Text> {
        self.memo.as_ref()
    }
    pub fn reverses(&self) -> Option<EntryId> {
        self.reverses
    }
    pub fn postings(&self) -> &[NewPosting] {
        &self.postings
    }

    /// SHA-256 over everything the caller sent (not the key itself, ids or times): two
    /// requests with one idempotency key are "the same" exactly when these hashes agree.
    pub fn request_hash(&self) -> [u8; 32] {
        let mut enc = crate::canonical::Encoder::new(b"CLR1");
        enc.str(self.entity.as_str());
        enc.date(self.effective_date);
        enc.str(self.source.as_str());
        enc.opt_str(self.external_ref.as_ref().map(Text::as_str));
        enc.opt_str(self.memo.as_ref().map(Text::as_str));
        enc.opt_i64(self.reverses.map(|e| e.0));
        enc.u64(self.postings.len() as u64);
        for p in &self.postings {
            enc.str(p.account.as_str());
            enc.byte(p.direction.as_char() as u8);
            enc.i64(p.amount.amount_minor());
            enc.str(p.amount.currency().code());
            enc.opt_str(p.customer_id.as_ref().map(CustomerId::as_str));
            enc.opt_str(p.document_ref.as_ref().map(Text::as_str));
            enc.opt_str(p.memo.as_ref().map(Text::as_str));
        }
        enc.sha256()
    }
}

/// Checks that debits equal credits in every currency; on failure says by how much.
pub fn check_balanced(
    postings: impl IntoIterator<Item = (Direction, Money)>,
) -> Result<(), String> {
    // i128 so that no sum of i64 amounts can overflow while checking.
    let mut net: BTreeMap<Currency, i128> = BTreeMap::new();
    for (direction, amount) in postings {
        let signed = i128::from(amount.amount_minor());
        *net.entry(amount.currency()).or_default() += match direction {
            Direction::Debit => signed,
            Direction::Credit => -signed,
        };
    }
    let off: Vec<String> = net
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(c, n)| {
            let side = if *n > 0 {
                "debits exceed credits"
            } else {
                "credits exceed debits"
            };
            let amount = i64::try_from(n.unsigned_abs())
                .map(|m| Money::from_minor(m, *c).to_string())
                .unwrap_or_else(|_| format!("{} minor units of {c}", n.unsigned_abs()));
            format!("{c} {side} by {amount}")
        })
        .collect();
    if off.is_empty() {
        Ok(())
    } else {
        Err(off.join("; "))
    }
}

/// A posting as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Posting {
    pub line: u32,
    pub account_id: AccountId,
    pub account_code: AccountCode,
    pub direction: Direction,
    #[serde(serialize_with = "ser_money_amount")]
    pub amount: Money,
    pub customer_id: Option<CustomerId>,
    pub document_ref: Option<Text>,
    pub memo: Option<Text>,
}

fn ser_money_amount<S: serde::Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Money", 3)?;
    st.serialize_field("amount", &m.format_amount())?;
    st.serialize_field("amount_minor", &m.amount_minor())?;
    st.serialize_field("currency", m.currency().code())?;
    st.end()
}

/// A journal entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub id: EntryId,
    pub entity: EntityCode,
    pub idempotency_key: IdempotencyKey,
    pub effective_date: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub source: SourceName,
    pub external_ref: Option<Text>,
    pub memo: Option<Text>,
    pub reverses_entry_id: Option<EntryId>,
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    /// The after-read invariant: a stored entry must still balance and have ≥ 2 postings.
    pub fn check(&self) -> Result<(), String> {
        if self.postings.len() < 2 {
            return Err(format!(
                "entry {} has {} postings",
                self.id,
                self.postings.len()
            ));
        }
        check_balanced(self.postings.iter().map(|p| (p.direction, p.amount)))
            .map_err(|e| format!("entry {} does not balance: {e}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("USD").unwrap())
    }
    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("EUR").unwrap())
    }

    fn check(postings: &[(Direction, Money)], expected: Result<(), &str>) {
        let got = check_balanced(postings.iter().copied());
        match expected {
            Ok(()) => assert_eq!(got, Ok(()), "{postings:?}"),
            Err(want) => assert_eq!(got.unwrap_err(), want, "{postings:?}"),
        }
    }

    #[test]
    fn balance_per_currency() {
        use Direction::{Credit as C, Debit as D};
        check(&[(D, usd(100)), (C, usd(100))], Ok(()));
        check(&[(D, usd(100)), (C, usd(60)), (C, usd(40))], Ok(()));
        check(
            &[(D, usd(100)), (C, usd(100)), (D, eur(5)), (C, eur(5))],
            Ok(()),
        );
        check(
            &[(D, usd(100)), (C, usd(99))],
            Err("USD debits exceed credits by 0.01 USD"),
        );
        check(
            &[(D, usd(100)), (C, eur(100))],
            Err("EUR credits exceed debits by 1.00 EUR; USD debits exceed credits by 1.00 USD"),
        );
        // Sums beyond i64 do not overflow the check.
        check(
            &[
                (D, usd(i64::MAX)),
                (D, usd(i64::MAX)),
                (C, usd(i64::MAX)),
                (C, usd(i64::MAX)),
            ],
            Ok(()),
        );
    }
}
