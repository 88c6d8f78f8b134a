//! Small domain types that carry their own validity: ids, codes, keys, directions, periods.
//! A value of one of these types that exists is valid; parsing is the only way in.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Rejection};

/// Database id of a journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub i64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Database id of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

/// Declares a string newtype with a length limit and a character rule.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max_len = $max:expr, what = $what:expr, allowed = $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            /// Parses `value`; `field` names it in the error.
            pub fn parse(value: &str, field: &str) -> Result<Self, Rejection> {
                let allowed: fn(char) -> bool = $allowed;
                if value.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        Some(field.to_owned()),
                        format!("{field}: {} must not be empty", $what),
                    ));
                }
                if value.chars().count() > Self::MAX_LEN {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        Some(field.to_owned()),
                        format!("{field}: {} is longer than {} characters", $what, Self::MAX_LEN),
                    ));
                }
                if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        Some(field.to_owned()),
                        format!("{field}: {} contains the character {bad:?}, which is not allowed", $what),
                    ));
                }
                Ok($name(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // pad, not write_str: honours width in tables.
                f.pad(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s, stringify!($name)).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn is_code_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
}

fn is_printable(c: char) -> bool {
    !c.is_control()
}

text_type!(
    /// A legal entity / company / Sage entity (LOCATIONID) that owns accounts and entries.
    EntityCode, max_len = 32, what = "entity code", allowed = is_code_char
);
text_type!(
    /// An account code in the chart of accounts, unique within its entity (e.g. `1200`, `AR-USD`).
    AccountCode, max_len = 64, what = "account code", allowed = is_code_char
);
text_type!(
    /// The caller's idempotency key: a replay with the same key returns the first result.
    IdempotencyKey, max_len = 255, what = "idempotency key", allowed = |c: char| c.is_ascii_graphic()
);
text_type!(
    /// Customer key of the AR sub-ledger (a Salesforce Account id or a Sage CUSTOMERID).
    CustomerId, max_len = 64, what = "customer id", allowed = |c: char| c.is_ascii_graphic()
);
text_type!(
    /// Where an entry came from: `gateway`, `sage-ar`, `manual`, `fx`…
    SourceName, max_len = 64, what = "source", allowed = is_code_char
);
text_type!(
    /// Free text with a length limit (memos, names, references).
    Text, max_len = 1024, what = "text", allowed = is_printable
);

/// Debit or credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    /// The one-letter form stored in the database and hashed into the chain.
    pub fn as_char(self) -> char {
        match self {
            Direction::Debit => 'D',
            Direction::Credit => 'C',
        }
    }

    pub fn from_db(s: &str) -> Option<Direction> {
        match s {
            "D" => Some(Direction::Debit),
            "C" => Some(Direction::Credit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "debit" | "D" | "Dr" | "DR" => Some(Direction::Debit),
            "credit" | "C" | "Cr" | "CR" => Some(Direction::Credit),
            _ => None,
        }
    }

    pub fn opposite(self) -> Direction {
        match self {
            Direction::Debit => Direction::Credit,
            Direction::Credit => Direction::Debit,
        }
    }
}

/// The five account classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    Asset,
    Liability,
    Equity,
    Revenue,
    Expense,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Asset => "asset",
            AccountType::Liability => "liability",
            AccountType::Equity => "equity",
            AccountType::Revenue => "revenue",
            AccountType::Expense => "expense",
        }
    }

    pub fn parse(s: &str) -> Option<AccountType> {
        Some(match s {
            "asset" => AccountType::Asset,
            "liability" => AccountType::Liability,
            "equity" => AccountType::Equity,
            "revenue" | "income" => AccountType::Revenue,
            "expense" => AccountType::Expense,
            _ => return None,
        })
    }

    /// The usual normal balance; contra accounts override it.
    pub fn default_normal_balance(self) -> Direction {
        match self {
            AccountType::Asset | AccountType::Expense => Direction::Debit,
            AccountType::Liability | AccountType::Equity | AccountType::Revenue => {
                Direction::Credit
            }
        }
    }
}

/// An accounting month, `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    pub fn parse(s: &str, field: &str) -> Result<Period, Rejection> {
        let bad = || {
            Rejection::new(
                ErrorCode::InvalidPeriod,
                Some(field.to_owned()),
                format!("{field}: {s:?} is not a period; use YYYY-MM, e.g. 2026-10"),
            )
        };
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1900..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    pub fn of(date: NaiveDate) -> Period {
        Period {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    pub fn last_day(self) -> NaiveDate {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.pred_opt())
            .unwrap_or(NaiveDate::MAX)
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_period(input: &str, expected: Option<(&str, &str, &str)>) {
        match (Period::parse(input, "period"), expected) {
            (Ok(p), Some((shown, first, last))) => {
                assert_eq!(p.to_string(), shown);
                assert_eq!(p.first_day().to_string(), first);
                assert_eq!(p.last_day().to_string(), last);
            }
            (Err(e), None) => assert_eq!(e.code, ErrorCode::InvalidPeriod),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn periods() {
        check_period("2026-10", Some(("2026-10", "2026-10-01", "2026-10-31")));
        check_period("2024-02", Some(("2024-02", "2024-02-01", "2024-02-29")));
        check_period("2026-12", Some(("2026-12", "2026-12-01", "2026-12-31")));
        check_period("2026-13", None);
        check_period("2026-1", None);
        check_period("26-10", None);
        check_period("2026/10", None);
        check_period("", None);
    }

    #[test]
    fn text_types_reject_bad_input_with_the_field_name() {
        let e = AccountCode::parse("40 00", "postings[0].account").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("postings[0].account"));
        assert!(e.message.contains("postings[0].account"), "{}", e.message);
        assert!(AccountCode::parse("", "a").is_err());
        assert!(AccountCode::parse(&"9".repeat(65), "a").is_err());
        assert!(AccountCode::parse("1200-AR.USD", "a").is_ok());
        assert!(IdempotencyKey::parse("key with space", "k").is_err());
        assert!(Text::parse("line\nbreak", "memo").is_err());
    }
}
